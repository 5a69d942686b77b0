"""gencore.diffusion against closed forms: Gaussian data make every quantity exact."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm

from gencore import diffusion as dif

M, S = 1.5, 0.5  # 1-D Gaussian data N(M, S^2)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def exact_eps_model(schedule):
    """The optimal noise predictor E[eps | x_t] for data N(M, S^2): linear in x_t."""
    def eps(x, t):
        ab = schedule.alpha_bar_at(t, x)
        return (1 - ab).sqrt() * (x - ab.sqrt() * M) / (ab * S ** 2 + 1 - ab)
    return eps


# ------------------------------------------------------------------ schedules and q
def test_closed_form_marginal_matches_the_simulated_chain():
    sch = dif.linear_schedule(50, 1e-3, 0.2)
    g = _gen()
    x = M + S * torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    for t in range(1, 51):  # one step at a time: x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z
        x = (1 - sch.betas[t - 1]).sqrt() * x + sch.betas[t - 1].sqrt() * torch.randn(x.shape, generator=g, dtype=x.dtype)
        if t in (1, 10, 50):
            ab = float(sch.alpha_bar[t - 1])
            assert abs(float(x.mean()) - math.sqrt(ab) * M) < 0.01
            assert abs(float(x.var()) - (ab * S ** 2 + 1 - ab)) < 0.01


def test_posterior_matches_bayes_rule_for_gaussians():
    sch = dif.cosine_schedule(100)
    x0 = torch.tensor([[0.3], [-1.2]], dtype=torch.float64)
    xt = torch.tensor([[1.0], [0.4]], dtype=torch.float64)
    for t in (2, 37, 100):
        mean, var = sch.posterior(x0, xt, torch.tensor([t, t]))
        ab_prev, beta = float(sch.alpha_bar[t - 2]), float(sch.betas[t - 1])
        prec = 1 / (1 - ab_prev) + (1 - beta) / beta    # prior of x_{t-1} given x0, times likelihood of x_t
        m = (math.sqrt(ab_prev) * x0 / (1 - ab_prev) + math.sqrt(1 - beta) * xt / beta) / prec
        torch.testing.assert_close(mean, m, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(var.expand_as(mean), torch.full_like(mean, 1 / prec), rtol=1e-10, atol=1e-14)


def test_schedules_reject_bad_input():
    with pytest.raises(ValueError, match="strictly decreasing"):
        dif.NoiseSchedule.from_alpha_bar([0.9, 0.95, 0.5])
    with pytest.raises(ValueError, match=r"betas must lie in \(0, 1\)"):
        dif.NoiseSchedule([0.1, 0.0])
    sch = dif.linear_schedule(10)
    with pytest.raises(ValueError, match=r"t must lie in \[1, T\] = \[1, 10\]"):
        sch.q_sample(torch.zeros(2, 1), torch.tensor([0, 3]), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="integer time steps"):
        sch.q_sample(torch.zeros(1, 1), torch.tensor([2.5]), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        dif.ddim_sample(lambda x, t: x, (2, 1), sch, 0)
    with pytest.raises(ValueError, match="steps must be at most T"):
        dif.ddim_sample(lambda x, t: x, (2, 1), sch, 11)
    cos = dif.cosine_schedule(1000)
    assert bool((cos.alpha_bar[1:] < cos.alpha_bar[:-1]).all()) and float(cos.alpha_bar[-1]) < 1e-4


# ------------------------------------------------------------------ eps, score, samplers
def test_optimal_noise_predictor_is_a_scaled_score():
    sch = dif.linear_schedule(100, 1e-4, 0.05)
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    for t in (1, 50, 100):
        tt = torch.full((7,), t)
        ab = float(sch.alpha_bar[t - 1])
        exact_score = -(x - math.sqrt(ab) * M) / (ab * S ** 2 + 1 - ab)
        torch.testing.assert_close(dif.eps_to_score(exact_eps_model(sch)(x, tt), tt, sch), exact_score)


def test_eps_loss_is_smallest_at_the_optimal_predictor():
    sch = dif.linear_schedule(100, 1e-4, 0.05)
    x0 = M + S * torch.randn(50_000, 1, generator=_gen(1), dtype=torch.float64)
    best = exact_eps_model(sch)
    losses = {k: float(dif.eps_loss(lambda x, t: k * best(x, t), x0, sch, generator=_gen(2))) for k in (0.0, 0.9, 1.0, 1.1)}
    assert losses[1.0] < min(losses[0.9], losses[1.1]) < losses[0.0]


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_with_the_exact_model_reproduce_the_data_distribution(sampler):
    sch = dif.linear_schedule(200, 1e-4, 0.08)
    model = exact_eps_model(sch)
    if sampler == "ddpm":
        x = dif.ddpm_sample(model, (40_000, 1), sch, generator=_gen(3), dtype=torch.float64)
    else:
        x = dif.ddim_sample(model, (40_000, 1), sch, 200, generator=_gen(3), dtype=torch.float64)
    assert abs(float(x.mean()) - M) < 0.02 and abs(float(x.std()) - S) < 0.02
    # and a wrong model does not: an untrained (zero) predictor leaves the noise's scale
    y = dif.ddim_sample(lambda v, t: torch.zeros_like(v), (20_000, 1), sch, 50, generator=_gen(3), dtype=torch.float64)
    assert abs(float(y.mean()) - M) > 1.0


def test_ddim_error_shrinks_with_the_number_of_steps():
    sch = dif.linear_schedule(200, 1e-4, 0.08)
    model = exact_eps_model(sch)
    err = [abs(float(dif.ddim_sample(model, (40_000, 1), sch, k, generator=_gen(3), dtype=torch.float64).std()) - S)
           for k in (5, 20, 200)]
    assert err[0] > err[1] > err[2]


def test_ddim_with_eta_zero_is_deterministic_and_eta_one_is_not():
    sch = dif.linear_schedule(100, 1e-4, 0.05)
    model = exact_eps_model(sch)
    a = dif.ddim_sample(model, (5, 1), sch, 10, generator=_gen(4), dtype=torch.float64)
    z = torch.randn((5, 1), generator=_gen(4), dtype=torch.float64)
    b = dif.ddim_sample(model, (5, 1), sch, 10, generator=_gen(4), dtype=torch.float64, eta=1.0)
    assert a.shape == b.shape == z.shape and not torch.allclose(a, b)


# ------------------------------------------------------------------ score matching, Langevin
def test_dsm_minimiser_is_the_score_of_the_noised_data_and_differs_from_esm_by_a_constant():
    sigma = 0.4
    x = S * torch.randn(400_000, 1, generator=_gen(5), dtype=torch.float64)   # data N(0, S^2)
    a_grid = torch.linspace(-6, -1, 26, dtype=torch.float64)
    dsm = torch.stack([dif.dsm_loss(lambda v: a * v, x, sigma, generator=_gen(6)) for a in a_grid])
    a_star = -1 / (S ** 2 + sigma ** 2)                     # the score of N(0, S^2 + sigma^2)
    # DSM is quadratic in a: its minimiser from a fitted parabola
    c2, c1, _ = np.polyfit(a_grid.numpy(), dsm.numpy(), 2)
    assert abs(-c1 / (2 * c2) - a_star) < 0.02 * abs(a_star)
    # explicit score matching sigma^2 E|a x~ - score(x~)|^2, in closed form for x~ ~ N(0, S^2 + sigma^2)
    esm = sigma ** 2 * (a_grid - a_star) ** 2 * (S ** 2 + sigma ** 2)
    gap = dsm - esm
    assert float(gap.max() - gap.min()) < 0.01 * float(dsm.mean())


def test_mixture_score_is_the_gradient_of_the_mixture_log_density():
    w, m, s = [0.3, 0.7], [[-2.0, 0.0], [1.5, 1.0]], [0.5, 0.8]
    x = torch.randn(20, 2, generator=_gen(7), dtype=torch.float64).requires_grad_(True)
    lp = dif.mixture_log_prob(x, w, m, s)
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.tensor(w, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(
            torch.tensor(m, dtype=torch.float64), torch.tensor(s, dtype=torch.float64)[:, None].expand(2, 2)), 1))
    torch.testing.assert_close(lp, ref.log_prob(x))
    (grad,) = torch.autograd.grad(lp.sum(), x)
    torch.testing.assert_close(dif.mixture_score(x.detach(), w, m, s), grad)
    with pytest.raises(ValueError, match="sum to 1"):
        dif.mixture_score(x.detach(), [0.5, 0.6], m, s)


def test_langevin_reaches_the_exact_stationary_law_of_its_discretisation():
    mu, var, delta = 1.0, 0.49, 0.05
    x = torch.full((100_000, 1), -4.0, dtype=torch.float64)
    out = dif.langevin(lambda v: -(v - mu) / var, x, delta, 600, generator=_gen(8))
    rho = 1 - delta / (2 * var)                              # x' = rho x + (1-rho) mu + sqrt(delta) z
    assert abs(float(out.mean()) - mu) < 0.01
    assert abs(float(out.var()) - delta / (1 - rho ** 2)) < 0.01
    with pytest.raises(ValueError, match="strictly decreasing"):
        dif.annealed_langevin(lambda v, s: v, x, [0.1, 1.0], 5)


def test_plain_langevin_misses_a_mode_that_annealing_finds():
    w, m, s = [0.5, 0.5], [[-4.0], [4.0]], [0.3, 0.3]
    x = torch.full((4000, 1), -4.0, dtype=torch.float64)        # every chain starts in the left mode
    plain = dif.langevin(lambda v: dif.mixture_score(v, w, m, s), x, 0.01, 500, generator=_gen(9))
    sigmas = np.geomspace(5.0, 0.3, 8).tolist()
    # the score of the data convolved with N(0, sig^2): the same mixture with std sqrt(0.3^2 + sig^2)
    noised = lambda v, sig: dif.mixture_score(v, w, m, [math.sqrt(0.09 + sig ** 2)] * 2)
    ann = dif.annealed_langevin(noised, x, sigmas, 100, eps=0.01, generator=_gen(9))
    assert float((plain > 0).double().mean()) < 0.01
    assert abs(float((ann > 0).double().mean()) - 0.5) < 0.1


# ------------------------------------------------------------------ flow matching, CNFs
def test_gaussian_path_velocity_is_the_conditional_expectation():
    g = _gen(10)
    m, s = torch.tensor([2.0]), 0.5
    x0 = torch.randn(400_000, 1, generator=g, dtype=torch.float64)
    x1 = m + s * torch.randn(400_000, 1, generator=g, dtype=torch.float64)
    for t in (0.2, 0.7):
        xt = (1 - t) * x0 + t * x1
        target = (x1 - x0)[:, 0].numpy()
        slope, intercept = np.polyfit(xt[:, 0].numpy(), target, 1)   # E[x1 - x0 | x_t] is linear here
        u = dif.gaussian_path_velocity(torch.tensor([[0.0], [1.0]], dtype=torch.float64), torch.tensor([t, t]), m, s)
        assert abs(intercept - float(u[0])) < 0.01 and abs(slope - float(u[1] - u[0])) < 0.01


def test_cfm_and_marginal_objectives_have_the_same_gradient():
    g = _gen(11)
    m, s = torch.tensor([2.0], dtype=torch.float64), 0.5
    x0 = torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    x1 = m + s * torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    t = torch.rand(200_000, generator=g, dtype=torch.float64)
    theta = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)
    v = lambda x, tt: theta[0] + theta[1] * x + theta[2] * tt[:, None]
    (g_cfm,) = torch.autograd.grad(dif.cfm_loss(v, x0, x1, t=t), theta)
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    marginal = (v(xt, t) - dif.gaussian_path_velocity(xt, t, m, s)).pow(2).sum(-1).mean()
    (g_marg,) = torch.autograd.grad(marginal, theta)
    torch.testing.assert_close(g_cfm, g_marg, rtol=0.02, atol=0.01)


def test_ode_with_the_exact_velocity_transports_noise_to_data():
    m, s = torch.tensor([2.0], dtype=torch.float64), 0.5
    x0 = torch.randn(50_000, 1, generator=_gen(12), dtype=torch.float64)
    x1 = dif.ode_sample(lambda x, t: dif.gaussian_path_velocity(x, t, m, s), x0, 100, method="midpoint")
    assert abs(float(x1.mean()) - 2.0) < 0.01 and abs(float(x1.std()) - s) < 0.01


def test_cnf_log_prob_matches_the_exact_linear_flow():
    A = torch.tensor([[0.3, -0.5], [0.2, -0.1]], dtype=torch.float64)
    v = lambda x, t: x @ A.T                                    # x(1) = expm(A) x(0)
    x1 = torch.randn(10, 2, generator=_gen(13), dtype=torch.float64)
    x0 = x1 @ torch.tensor(expm(-A.numpy())).T
    exact = -0.5 * (x0.pow(2).sum(-1) + 2 * math.log(2 * math.pi)) - float(torch.trace(A))
    torch.testing.assert_close(dif.cnf_log_prob(v, x1, 200), exact, rtol=1e-6, atol=1e-6)


def test_ot_pairing_is_the_minimum_cost_matching():
    x0 = torch.randn(6, 2, generator=_gen(14), dtype=torch.float64)
    x1 = torch.randn(6, 2, generator=_gen(15), dtype=torch.float64)
    paired = dif.ot_pairing(x0, x1)
    best = min(float((x0 - x1[list(p)]).pow(2).sum()) for p in itertools.permutations(range(6)))
    assert abs(float((x0 - paired).pow(2).sum()) - best) < 1e-12
    with pytest.raises(ValueError, match="same shape"):
        dif.ot_pairing(x0, x1[:3])


def test_package_exports_every_submodule_name_once():
    """``gencore.diffusion`` re-exports each submodule's ``__all__``: no name twice, each one the submodule's object."""
    import gencore.diffusion as diffusion
    from gencore.diffusion import ddpm, flow_matching, nets, schedules, score
    assert len(diffusion.__all__) == len(set(diffusion.__all__))
    for module in (schedules, ddpm, score, flow_matching, nets):
        for name in module.__all__:
            assert getattr(diffusion, name) is getattr(module, name), name
