"""Chapter "Score matching and Langevin dynamics" (book/15_score_matching) against independent computations.

Quadrature (scipy.integrate.quad, Gauss–Hermite), scipy's distributions and Kolmogorov–Smirnov test,
closed-form Gaussian recursions, and autograd of torch.distributions check gencore.diffusion.score;
every key check of the chapter is also fed a plausible wrong answer that it must reject.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate, stats

import gencore
from gencore import exercises as E
from gencore.diffusion import score as sm
from gencore.diffusion.nets import TimeConditioned
from gencore.nets import mlp

# a 1-D mixture (scipy side: numpy; gencore side: torch)
W1, MU1, S1 = np.array([0.4, 0.6]), np.array([-1.0, 1.2]), np.array([0.5, 0.6])
M1 = [[m] for m in MU1]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _pdf(x, stds=S1):
    return sum(w * stats.norm.pdf(x, m, s) for w, m, s in zip(W1, MU1, stds))


def _score_np(x, stds=S1):
    """d/dx log p for the 1-D mixture, from scipy's pdfs (independent of gencore's formula)."""
    num = sum(w * stats.norm.pdf(x, m, s) * (m - x) / s ** 2 for w, m, s in zip(W1, MU1, stds))
    return num / _pdf(x, stds)


def _quad(f, lo=-12.0, hi=12.0):
    return integrate.quad(f, lo, hi, limit=400, epsabs=1e-11, epsrel=1e-11)[0]


# models of the score with their derivatives, as (torch callable, numpy value, numpy derivative)
MODELS = {
    "zero": (lambda v: torch.zeros_like(v), lambda x: 0 * x, lambda x: 0 * x),
    "-x": (lambda v: -v, lambda x: -x, lambda x: -1 + 0 * x),
    "affine": (lambda v: -2.0 * v + 0.5, lambda x: -2 * x + 0.5, lambda x: -2 + 0 * x),
    "tanh": (lambda v: 3 * torch.tanh(v), lambda x: 3 * np.tanh(x), lambda x: 3 / np.cosh(x) ** 2),
    "sin - x": (lambda v: torch.sin(2 * v) - v, lambda x: np.sin(2 * x) - x, lambda x: 2 * np.cos(2 * x) - 1),
}


# ------------------------------------------------------------------ the score
def test_scores_match_autograd_and_a_numerical_convolution():  # def-score-function
    # Gaussian: the gencore score is the gradient of torch.distributions' log-density
    m = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    a = torch.randn(3, 3, generator=_gen(0), dtype=torch.float64)
    cov = a @ a.T + 0.3 * torch.eye(3, dtype=torch.float64)
    x = torch.randn(50, 3, generator=_gen(1), dtype=torch.float64).requires_grad_(True)
    (g,) = torch.autograd.grad(torch.distributions.MultivariateNormal(m, cov).log_prob(x).sum(), x)
    torch.testing.assert_close(sm.gaussian_score(x.detach(), m, cov), g)
    # the noised mixture's score: log of the convolution integral, differentiated by finite differences
    sigma, xs, h = 0.7, np.linspace(-3, 3, 13), 1e-4
    def log_q(v):
        return math.log(_quad(lambda y: _pdf(y) * stats.norm.pdf(v, y, sigma)))
    fd = np.array([(log_q(v + h) - log_q(v - h)) / (2 * h) for v in xs])
    got = sm.noised_mixture_score(torch.tensor(xs)[:, None], W1, M1, S1, sigma)[:, 0].numpy()
    np.testing.assert_allclose(got, fd, atol=1e-6)
    # one level per row equals one call per level
    sig = torch.tensor([0.1, 0.7, 0.7, 2.0] * 3 + [0.1], dtype=torch.float64)
    rows = sm.noised_mixture_score(torch.tensor(xs)[:, None], W1, M1, S1, sig)
    for i, s in enumerate(sig.tolist()):
        torch.testing.assert_close(rows[i], sm.noised_mixture_score(torch.tensor(xs[i:i + 1])[:, None], W1, M1, S1, s)[0])
    # the sampler draws the mixture
    draw = sm.mixture_sample(200_000, W1, M1, S1, generator=_gen(2), dtype=torch.float64)
    assert abs(float(draw.mean()) - float(W1 @ MU1)) < 0.01
    assert abs(float((draw > 0).double().mean()) - (1 - float(W1 @ stats.norm.cdf(0, MU1, S1)))) < 0.005


# ------------------------------------------------------------------ implicit score matching
def test_implicit_score_matching_differs_from_explicit_by_the_fisher_information():  # thm-score-implicit
    fisher = _quad(lambda x: _pdf(x) * _score_np(x) ** 2)
    x = sm.mixture_sample(400_000, W1, M1, S1, generator=_gen(3), dtype=torch.float64)
    exact = lambda v: sm.mixture_score(v, W1, M1, S1)
    for name, (s_t, s_np, ds_np) in MODELS.items():
        esm_q = _quad(lambda v: _pdf(v) * (s_np(v) - _score_np(v)) ** 2)
        ism_q = _quad(lambda v: _pdf(v) * (s_np(v) ** 2 + 2 * ds_np(v)))
        assert abs(esm_q - ism_q - fisher) < 1e-7, name                  # the theorem, by quadrature
        assert abs(float(sm.esm_loss(s_t, x, exact)) - esm_q) < 0.05 * max(1.0, esm_q), name
        assert abs(float(sm.ism_loss(s_t, x).detach()) - ism_q) < 0.05 * max(1.0, abs(ism_q)), name
    # a wrong implicit objective (trace without the factor 2) does not differ by a constant
    wrong = [_quad(lambda v: _pdf(v) * ((s(v) - _score_np(v)) ** 2 - s(v) ** 2 - ds(v))) for _, s, ds in MODELS.values()]
    assert max(wrong) - min(wrong) > 1.0


def test_ism_trace_is_exact_and_sliced_score_matching_estimates_it():  # thm-score-implicit
    a = torch.randn(3, 3, generator=_gen(4), dtype=torch.float64)
    b = torch.randn(3, generator=_gen(5), dtype=torch.float64)
    x = torch.randn(1000, 3, generator=_gen(6), dtype=torch.float64)
    model = lambda v: v @ a.T + b                                # Jacobian a, trace tr(a)
    direct = float(((x @ a.T + b) ** 2).sum(-1).mean() + 2 * torch.trace(a))
    assert abs(float(sm.ism_loss(model, x).detach()) - direct) < 1e-10
    ssm = float(sm.ssm_loss(model, x, n_projections=64, generator=_gen(7)).detach())
    assert abs(ssm - direct) < 0.1 * (1 + abs(direct))
    # the loss is differentiable in the model's parameters (it can be trained)
    net = mlp([3, 16, 3], activation="tanh").double()
    sm.ism_loss(net, x).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# ------------------------------------------------------------------ denoising score matching
def _dsm_by_gauss_hermite(s_np, sigma, n=80):
    """E ||sigma s(x + sigma eps) + eps||^2 for the 1-D mixture, by Gauss-Hermite in (z, eps)."""
    z, wz = hermegauss(n)
    wz = wz / wz.sum()
    total = 0.0
    for w, m, s in zip(W1, MU1, S1):
        xt = m + s * z[:, None] + sigma * z[None, :]
        total += w * (wz[:, None] * wz[None, :] * (sigma * s_np(xt) + z[None, :]) ** 2).sum()
    return total


def test_dsm_differs_from_explicit_matching_of_the_noised_density_by_a_constant():  # thm-score-dsm
    sigma = 0.5
    noised = np.sqrt(S1 ** 2 + sigma ** 2)
    q, score_q = (lambda v: _pdf(v, noised)), (lambda v: _score_np(v, noised))
    c_sigma = 1 - sigma ** 2 * _quad(lambda v: q(v) * score_q(v) ** 2)
    x = sm.mixture_sample(400_000, W1, M1, S1, generator=_gen(8), dtype=torch.float64)
    gaps, wrong = [], []
    for name, (s_t, s_np, _) in MODELS.items():
        dsm = _dsm_by_gauss_hermite(s_np, sigma)
        esm_q = sigma ** 2 * _quad(lambda v: q(v) * (s_np(v) - score_q(v)) ** 2)
        gaps.append(dsm - esm_q)
        wrong.append(dsm - sigma ** 2 * _quad(lambda v: q(v) * (s_np(v) - _score_np(v)) ** 2))
        assert abs(float(sm.dsm_loss(s_t, x, sigma, generator=_gen(9))) - dsm) < 0.01 * max(1.0, dsm), name
    np.testing.assert_allclose(gaps, c_sigma, atol=1e-6)        # the same constant for every model
    assert c_sigma > 0
    assert max(wrong) - min(wrong) > 0.1                         # the clean score is not the target
    # the minimiser: in the family of mixture scores noised at level tau, DSM is smallest at tau = sigma
    taus = np.linspace(0.0, 1.0, 101)
    vals = [_dsm_by_gauss_hermite(lambda v, t=t: _score_np(v, np.sqrt(S1 ** 2 + t ** 2)), sigma) for t in taus]
    assert abs(taus[int(np.argmin(vals))] - sigma) <= 0.01
    assert abs(min(vals) - c_sigma) < 1e-6


def test_noise_conditional_loss_averages_the_levels_and_is_minimised_by_the_noised_scores():  # thm-score-dsm
    sigmas = [1.0, 0.5, 0.2]
    x = sm.mixture_sample(300_000, W1, M1, S1, generator=_gen(10), dtype=torch.float64)
    exact = lambda v, s: sm.noised_mixture_score(v, W1, M1, S1, s)
    c = [1 - s ** 2 * _quad(lambda v, s=s: _pdf(v, np.sqrt(S1 ** 2 + s ** 2)) * _score_np(v, np.sqrt(S1 ** 2 + s ** 2)) ** 2)
         for s in sigmas]
    best = float(sm.noise_conditional_dsm_loss(exact, x, sigmas, generator=_gen(11)))
    assert abs(best - np.mean(c)) < 0.01
    for k in (0.8, 1.2):
        assert float(sm.noise_conditional_dsm_loss(lambda v, s: k * exact(v, s), x, sigmas, generator=_gen(11))) > best + 0.005


# ------------------------------------------------------------------ Langevin dynamics
def _ks(samples, weights=W1):
    cdf = lambda v: sum(w * stats.norm.cdf(v, m, s) for w, m, s in zip(weights, MU1, S1))
    return stats.kstest(samples.reshape(-1).numpy(), cdf).statistic


def test_the_mixture_is_stationary_and_langevin_chains_reach_it():  # prop-score-langevin-stationary
    # Fokker-Planck: -(p s / 2)' + p'' / 2 = 0 at p, with gencore's score and finite differences of scipy's pdf
    xs, h = np.linspace(-3, 3, 61), 1e-3
    def flux(v):  # p s / 2 - p' / 2
        s = sm.mixture_score(torch.tensor(v, dtype=torch.float64)[:, None], W1, M1, S1)[:, 0].numpy()
        return 0.5 * _pdf(v) * s - 0.5 * (_pdf(v + h) - _pdf(v - h)) / (2 * h)
    assert np.abs(flux(xs)).max() < 1e-6                       # zero probability flux: stationary
    # the chapter's experiment, judged by scipy's KS test
    score = lambda v: sm.mixture_score(v, W1, M1, S1)
    for seed in (0, 1, 2):
        x0 = 3 * torch.randn(10_000, 1, generator=_gen(seed), dtype=torch.float64)
        chains = sm.langevin(score, x0, 0.03, 600, generator=_gen(100 + seed))
        assert _ks(chains) <= 0.025
        assert _ks(x0) > 0.1                                   # the starting points fail the criterion
        assert _ks(chains, weights=[0.55, 0.45]) > 0.025       # and so does a mixture with other weights


def test_unadjusted_langevin_variance_on_a_gaussian():  # prop-score-ula-gaussian
    v = 2.0
    for delta in (0.1, 1.0, 4.0):
        predicted = v / (1 - delta / (4 * v))
        u = 0.0                                                 # the exact variance recursion u <- a^2 u + delta
        for _ in range(2000):
            u = (1 - delta / (2 * v)) ** 2 * u + delta
        assert abs(u - predicted) < 1e-9
        x0 = math.sqrt(v) * torch.randn(100_000, 1, generator=_gen(12), dtype=torch.float64)
        chains = sm.langevin(lambda x: -x / v, x0, delta, 200, generator=_gen(13))
        assert abs(float(chains.var()) - predicted) < 0.02 * predicted
        assert abs(float(chains.mean())) < 0.02
    # delta >= 4v diverges
    chains = sm.langevin(lambda x: -x / v, torch.zeros(1000, 1, dtype=torch.float64), 9.0, 100, generator=_gen(14))
    assert float(chains.var()) > 1e6


def test_annealing_recovers_the_weights_of_separated_modes_and_plain_langevin_does_not():
    w2, m2, s2 = [0.2, 0.8], [[-5.0, -5.0], [5.0, 5.0]], [1.0, 1.0]
    sigmas = sm.geometric_sigmas(10.0, 0.1, 10)
    def error(seed, annealed):
        x0 = 16 * torch.rand(4000, 2, generator=_gen(seed)) - 8
        if annealed:
            x = sm.annealed_langevin(lambda v, s: sm.noised_mixture_score(v, w2, m2, s2, s), x0, sigmas, 100,
                                     eps=0.005, generator=_gen(200 + seed))
        else:
            x = sm.langevin(lambda v: sm.mixture_score(v, w2, m2, s2), x0, 0.1, 1000, generator=_gen(200 + seed))
        return abs(float((x.sum(1) > 0).double().mean()) - 0.8)
    gencore.check_over_seeds("annealed", lambda s: error(s, True), at_most=0.03)
    with pytest.raises(gencore.ClaimError, match="held for 0/3 seeds"):
        gencore.check_over_seeds("plain Langevin passes the annealed criterion", lambda s: error(s, False), at_most=0.03)


# ------------------------------------------------------------------ a trained network
def test_field_error_rejects_an_untrained_network_and_training_lowers_it():
    from gencore.data import toy_2d, toy_2d_modes
    from gencore.train import fit, make_step
    spec = toy_2d_modes("ring8")
    k = len(spec.centers)
    w, m, s = [1 / k] * k, spec.centers, [spec.std] * k
    sigmas = sm.geometric_sigmas(3.0, 0.3, 4)
    def as_score(net):
        def score(x, sigma):
            sig = torch.as_tensor(sigma, dtype=x.dtype)
            return net(x, torch.log(sig)) / (sig[:, None] if sig.ndim == 1 else sig)
        return score
    def mean_error(net, seed):
        errs = []
        for lvl in sigmas:
            x = toy_2d("ring8", 2000, seed=50 + seed) + lvl * torch.randn(2000, 2, generator=_gen(60 + seed))
            errs.append(sm.score_relative_error(lambda v: as_score(net)(v, lvl), x,
                                                lambda v: sm.noised_mixture_score(v, w, m, s, lvl)))
        return float(np.mean(errs))
    def untrained(seed):
        gencore.seed_everything(seed)
        return mean_error(TimeConditioned(mlp([3, 64, 64, 2], activation="gelu")), seed)
    # the chapter's criterion (at most 0.15) rejects the untrained network on every seed
    with pytest.raises(gencore.ClaimError, match="held for 0/3 seeds"):
        gencore.check_over_seeds("untrained passes", untrained, at_most=0.15)
    # the exact score passes it with error 0
    x = toy_2d("ring8", 500, seed=1) + 0.3 * torch.randn(500, 2, generator=_gen(1))
    exact = lambda v: sm.noised_mixture_score(v, w, m, s, 0.3)
    assert sm.score_relative_error(exact, x, exact) == 0.0
    # a short training run through fit lowers the error well below the untrained level
    gencore.seed_everything(0)
    net = TimeConditioned(mlp([3, 64, 64, 2], activation="gelu"))
    before = mean_error(net, 0)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    noise = _gen(70)
    fit(make_step(lambda b: sm.noise_conditional_dsm_loss(as_score(net), b, sigmas, generator=noise), opt),
        toy_2d("ring8", 4000, seed=0), steps=400, batch_size=256, progress=False)
    assert mean_error(net, 0) < 0.5 * before


# ------------------------------------------------------------------ samplers, inputs, exercises
def test_samplers_follow_the_input_dtype_and_are_reproducible():
    x0 = torch.zeros(5, 2, dtype=torch.float64)
    score = lambda v: -v
    a = sm.langevin(score, x0, 0.1, 10, generator=_gen(0))
    b = sm.langevin(score, x0, 0.1, 10, generator=_gen(0))
    assert a.dtype == torch.float64 and torch.equal(a, b)
    c = sm.annealed_langevin(lambda v, s: -v / (1 + s ** 2), x0.float(), [1.0, 0.5], 5, generator=_gen(0))
    assert c.dtype == torch.float32 and c.shape == (5, 2)
    levels = sm.geometric_sigmas(10.0, 0.1, 5)
    assert levels[0] == 10.0 and abs(levels[-1] - 0.1) < 1e-12
    np.testing.assert_allclose(np.diff(np.log(levels)), math.log(0.01) / 4)


def test_bad_input_raises_clear_errors():
    x = torch.zeros(4, 2)
    score = lambda v: -v
    with pytest.raises(ValueError, match="sigma must be a finite number > 0, got 0"):
        sm.dsm_loss(score, x, 0.0)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        sm.dsm_loss(score, x, -1.0)
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        sm.langevin(score, x, 0.1, 0)
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
        sm.langevin(score, x, 0.0, 5)
    with pytest.raises(ValueError, match="steps_per_level must be a positive integer"):
        sm.annealed_langevin(lambda v, s: -v, x, [1.0, 0.5], 0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sm.annealed_langevin(lambda v, s: -v, x, [0.5, 1.0], 3)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        sm.annealed_langevin(lambda v, s: -v, x, [1.0, 0.5], 3, eps=0.0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\)"):
        sm.ism_loss(score, torch.zeros(4))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        sm.esm_loss(score, torch.zeros(4, 2, dtype=torch.long), score)
    with pytest.raises(ValueError, match=r"score_fn must return a tensor of the input's shape \(4, 2\)"):
        sm.dsm_loss(lambda v: v[:, :1], x, 0.5)
    with pytest.raises(ValueError, match="true_score_fn must return"):
        sm.esm_loss(score, x, lambda v: v.sum(1))
    with pytest.raises(ValueError, match="n_projections must be a positive integer"):
        sm.ssm_loss(score, x, 0)
    with pytest.raises(ValueError, match=r"means must have shape \(K, 2\)"):
        sm.mixture_score(x, [0.5, 0.5], [[0.0], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="sigmas must hold at least one"):
        sm.noise_conditional_dsm_loss(lambda v, s: v, x, [])
    with pytest.raises(ValueError, match="every sigma in sigmas must be a finite number > 0"):
        sm.noise_conditional_dsm_loss(lambda v, s: v, x, [1.0, 0.0])
    with pytest.raises(ValueError, match="sigma_max must be > sigma_min"):
        sm.geometric_sigmas(0.1, 1.0, 3)
    with pytest.raises(ValueError, match="cov must be symmetric positive definite"):
        sm.gaussian_score(x, torch.zeros(2), -torch.eye(2))
    with pytest.raises(ValueError, match="x and x_noisy must be tensors of the same shape"):
        sm.dsm_target(x, torch.zeros(3, 2), 0.5)
    with pytest.raises(ValueError, match="sigma must be > 0, a number or a tensor"):
        sm.noised_mixture_score(x, [1.0], [[0.0, 0.0]], [1.0], torch.zeros(4))


@pytest.mark.parametrize("name", ["gaussian_score", "dsm_target"])
def test_coding_exercises_accept_the_reference_and_name_each_mistake(name):
    ex = E.EXERCISES[name]
    # the reference passing and every mistake's hint: tests/test_exercises.py, for every registered exercise
    ref = ex.reference
    assert "wrong sign" in E.check(name, lambda *a: -ref(*a)).message
    assert E.check(name, lambda *a: ref(*a)[..., None]).message.startswith("wrong shape")
    with pytest.raises(gencore.ClaimError):
        E.check(name, lambda *a: 2 * ref(*a), strict=True)
    # the solutions written in the chapter pass
    solutions = {"gaussian_score": lambda x, m, c: -torch.linalg.solve(c, (x - m).T).T,
                 "dsm_target": lambda x, xn, s: -(xn - x) / s ** 2}
    assert E.check(name, solutions[name]).passed
