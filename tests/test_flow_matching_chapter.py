"""Chapter "Flow matching and the SDE/ODE view" (book/17_flow_matching) against independent computations.

scipy's ODE solver, distributions, matrix exponential and quadrature (Gauss-Hermite, Gauss-Legendre,
``integrate.quad``), Gaussian conditioning written out in numpy, finite differences of the continuity
equation and a density histogram check gencore.diffusion.flow_matching; every key check is also fed a
plausible wrong answer that it must reject.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss
from scipy import integrate, linalg, stats

import gencore
from gencore import exercises as E
from gencore import leaderboard
from gencore.data import toy_2d
from gencore.diffusion import flow_matching as fm
from gencore.diffusion import score as sm
from gencore.ot import energy_distance, ot_cost


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _path_moments(t, m, s):
    """Per coordinate, for z = x1 - x0 and x_t = (1 - t) x0 + t x1 with x0 ~ N(0, 1), x1 ~ N(m, s^2)."""
    return dict(mean_z=m, mean_x=t * m, var_z=1 + s ** 2, cov=t * s ** 2 - (1 - t), var_x=(1 - t) ** 2 + t ** 2 * s ** 2)


def _velocity_numpy(x, t, m, s):
    """E[z | x_t = x] by the Gaussian conditioning formula, written independently of gencore."""
    k = _path_moments(t, m, s)
    return k["mean_z"] + k["cov"] / k["var_x"] * (x - k["mean_x"])


# ------------------------------------------------------------------ the probability-flow ODE
def test_pf_ode_paths_match_scipy_and_velocities_solve_the_continuity_equation():  # thm-fm-pf-ode
    """The PF-ODE of a variance-exploding SDE on Gaussian data: gencore's integrator against scipy's
    solve_ivp and the closed form; the PF velocity (and the straight path's marginal velocity) satisfy
    the continuity equation by finite differences of scipy's normal density; a wrong velocity does not."""
    m, s, sig2 = 0.7, 0.4, 3.0
    def v_np(t, x):
        return 0.5 * sig2 * (x - m) / (s ** 2 + sig2 * t)
    x0 = np.array([-1.0, 0.2, 0.7, 1.5])
    sol = integrate.solve_ivp(v_np, (0, 1), x0, rtol=1e-11, atol=1e-12).y[:, -1]
    np.testing.assert_allclose(sol, m + (x0 - m) * math.sqrt((s ** 2 + sig2) / s ** 2), rtol=1e-8)
    v_t = lambda x, t: 0.5 * sig2 * (x - m) / (s ** 2 + sig2 * t[:, None])  # noqa: E731
    got = fm.ode_sample(v_t, torch.tensor(x0, dtype=torch.float64)[:, None], 400, method="midpoint")[:, 0]
    np.testing.assert_allclose(got.numpy(), sol, atol=1e-5)
    euler = fm.ode_sample(v_t, torch.tensor(x0, dtype=torch.float64)[:, None], 400)[:, 0]
    assert 1e-3 < np.abs(euler.numpy() - sol).max() < 0.1             # first order: worse, still close

    def residual(density, velocity, t, x, h=1e-5):
        # d/dt p + d/dx (p v), central differences
        dp_dt = (density(t + h, x) - density(t - h, x)) / (2 * h)
        flux = lambda y: density(t, y) * velocity(t, y)  # noqa: E731
        return dp_dt + (flux(x + h) - flux(x - h)) / (2 * h)

    xs = np.linspace(-3, 4, 29)
    p_ve = lambda t, x: stats.norm.pdf(x, m, math.sqrt(s ** 2 + sig2 * t))  # noqa: E731
    for t in (0.1, 0.5, 0.9):
        assert np.abs(residual(p_ve, v_np, t, xs)).max() < 1e-6
        assert np.abs(residual(p_ve, lambda t, x: 2 * v_np(t, x), t, xs)).max() > 1e-2   # not 1/2 g^2
    # the straight path: gencore's marginal velocity generates p_t = N(t m, (1-t)^2 + t^2 s^2)
    p_st = lambda t, x: stats.norm.pdf(x, t * m, math.sqrt((1 - t) ** 2 + t ** 2 * s ** 2))  # noqa: E731
    u_gc = lambda t, x: fm.gaussian_path_velocity(  # noqa: E731
        torch.tensor(x, dtype=torch.float64)[:, None], t, torch.tensor([m], dtype=torch.float64), s)[:, 0].numpy()
    for t in (0.1, 0.5, 0.9):
        assert np.abs(residual(p_st, u_gc, t, xs)).max() < 1e-6
        assert np.abs(residual(p_st, lambda t, x: m - x, t, xs)).max() > 1e-2


def test_velocity_from_score_is_the_conditional_mean_of_the_direction():  # prop-fm-velocity-score
    """Gaussian data: numpy's conditioning formula; a 1-D mixture: E[x1 - x0 | x_t] by scipy quadrature."""
    m, s = np.array([2.0, -1.0]), 0.5
    x = 2 * torch.randn(300, 2, generator=_gen(0), dtype=torch.float64)
    t = torch.rand(300, generator=_gen(1), dtype=torch.float64).clamp_min(1e-3)
    want = _velocity_numpy(x.numpy(), t.numpy()[:, None], m, s)
    mt = torch.tensor(m)
    np.testing.assert_allclose(fm.gaussian_path_velocity(x, t, mt, s).numpy(), want, rtol=1e-10, atol=1e-10)
    from_score = fm.velocity_from_score(fm.gaussian_path_score(x, t, mt, s), x, t)
    np.testing.assert_allclose(from_score.numpy(), want, rtol=1e-9, atol=1e-9)
    # the score of p_t is the gradient of log N(t m, var_t) (autograd of torch.distributions)
    xr = x.clone().requires_grad_(True)
    var = ((1 - t) ** 2 + t ** 2 * s ** 2)[:, None]
    logp = torch.distributions.Normal(t[:, None] * mt, var.sqrt()).log_prob(xr).sum()
    torch.testing.assert_close(fm.gaussian_path_score(x, t, mt, s), torch.autograd.grad(logp, xr)[0])

    w, mu, sd = np.array([0.3, 0.7]), np.array([-1.5, 1.0]), np.array([0.4, 0.6])
    q = lambda y: (w * stats.norm.pdf(y, mu[:, None] if np.ndim(y) else mu, sd[:, None] if np.ndim(y) else sd)).sum()  # noqa: E731
    for tv in (0.2, 0.5, 0.8):
        for xv in (-1.2, 0.1, 1.3):
            kern = lambda x1: q(x1) * stats.norm.pdf(xv, tv * x1, 1 - tv)  # noqa: E731
            num = integrate.quad(lambda x1: (x1 - (xv - tv * x1) / (1 - tv)) * kern(x1), -8, 8, limit=200)[0]
            den = integrate.quad(kern, -8, 8, limit=200)[0]
            stds_t = [math.hypot(tv * a, 1 - tv) for a in sd]
            xt = torch.tensor([[xv]], dtype=torch.float64)
            score = sm.mixture_score(xt, w.tolist(), [[tv * a] for a in mu], stds_t)
            got = float(fm.velocity_from_score(score, xt, torch.tensor([tv], dtype=torch.float64)))
            assert abs(got - num / den) < 1e-7
            wrong = float(fm.velocity_from_score(sm.mixture_score(xt, w.tolist(), [[a] for a in mu], list(sd)), xt,
                                                 torch.tensor([tv], dtype=torch.float64)))
            assert abs(wrong - num / den) > 1e-3       # the data's own score is not the path's


# ------------------------------------------------------------------ continuous normalizing flows
def test_cnf_log_prob_matches_scipy_for_a_linear_flow_and_a_histogram_for_a_tanh_flow():  # thm-fm-instantaneous-cov
    """Linear v = A x: x_1 = expm(A) x_0 ~ N(0, e^A e^A^T), scipy's density. A tanh CNF: the density of
    cnf_log_prob integrated over histogram bins against 50,000 samples of flow_sample."""
    A = np.array([[-0.3, 1.0], [-0.8, 0.4]])
    eA = linalg.expm(A)
    x1 = 1.5 * torch.randn(200, 2, generator=_gen(2), dtype=torch.float64)
    want = stats.multivariate_normal(np.zeros(2), eA @ eA.T).logpdf(x1.numpy())
    At = torch.tensor(A)
    got = fm.cnf_log_prob(lambda x, t: x @ At.T, x1, 200).numpy()
    np.testing.assert_allclose(got, want, atol=5e-5)
    # dropping the trace term is wrong by tr A = 0.1
    lp_no_trace = stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(x1.numpy() @ linalg.expm(-A).T)
    assert np.abs(lp_no_trace - want).min() > 0.09

    gencore.seed_everything(3)
    net = fm.velocity_mlp(2, 16, 2, activation="tanh").double().requires_grad_(False)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)                                   # a visibly non-Gaussian flow
    n = 50_000
    samples = fm.flow_sample(net, (n, 2), 40, generator=_gen(4), dtype=torch.float64, method="midpoint")
    edges = np.linspace(-3, 3, 13)
    hist = np.histogram2d(samples[:, 0].numpy(), samples[:, 1].numpy(), bins=[edges, edges])[0] / n
    sub = (np.arange(2) + 0.5) / 2 * 0.5                  # 2 x 2 midpoints in each bin of side 0.5
    pts = np.array([(a + u, b + v) for a in edges[:-1] for b in edges[:-1] for u in sub for v in sub])
    dens = fm.cnf_log_prob(net, torch.tensor(pts), 40).exp().numpy()
    pred = dens.reshape(12, 12, 4).mean(-1) * 0.25
    se = np.sqrt(pred * (1 - pred) / n)
    assert np.abs(hist - pred).max() < 5 * se.max() + 2e-4
    assert np.abs(hist - pred).max() > 0 and pred.sum() > 0.9
    base_only = stats.multivariate_normal(np.zeros(2), np.eye(2)).pdf(pts).reshape(12, 12, 4).mean(-1) * 0.25
    assert np.abs(hist - base_only).max() > 20 * se.max()   # the base density is not the flow's


# ------------------------------------------------------------------ conditional flow matching
def _quadrature_losses(theta, m, s, target):
    """L_CFM and the regression loss on `target` for v = th0 + th1 x + th2 t + th3 t x in 1-D, by
    Gauss-Hermite (x0, x1) x Gauss-Legendre (t): exact in x for this polynomial model."""
    z, wz = hermegauss(20)
    wz = wz / wz.sum()
    tl, wt = leggauss(60)
    tl, wt = (tl + 1) / 2, wt / 2
    X0, X1, T = np.meshgrid(z, m + s * z, tl, indexing="ij")
    W = (wz[:, None, None] * wz[None, :, None] * wt[None, None, :]).ravel()
    x0, x1, t = (torch.tensor(a.ravel()) for a in (X0, X1, T))
    xt = (1 - t) * x0 + t * x1
    v = theta[0] + theta[1] * xt + theta[2] * t + theta[3] * t * xt
    w = torch.tensor(W)
    l_cfm = (w * (v - (x1 - x0)) ** 2).sum()
    l_fm = (w * (v - target(xt, t)) ** 2).sum()
    return l_cfm, l_fm


def test_cfm_and_fm_differ_by_the_conditional_variance_and_have_equal_gradients():  # thm-fm-cfm-gradient
    """Quadrature: L_CFM - L_FM equals C = int (Var z - Cov^2 / Var x_t) dt (scipy.quad) for every theta,
    with equal gradients; a wrong target breaks both. gencore's cfm_loss agrees with the quadrature (MC)."""
    m, s = 1.5, 0.6
    mt = torch.tensor([m], dtype=torch.float64)
    u_gc = lambda xt, t: fm.gaussian_path_velocity(xt[:, None], t, mt, s)[:, 0]  # noqa: E731
    u_bad = lambda xt, t: fm.gaussian_path_velocity(xt[:, None], t, 0 * mt, s)[:, 0]  # noqa: E731
    def cond_var(t):
        k = _path_moments(t, m, s)
        return k["var_z"] - k["cov"] ** 2 / k["var_x"]
    C = integrate.quad(cond_var, 0, 1, epsabs=1e-13, epsrel=1e-13)[0]
    rng = np.random.default_rng(0)
    diffs_bad = []
    for _ in range(4):
        theta = torch.tensor(rng.normal(size=4), requires_grad=True)
        l_cfm, l_fm = _quadrature_losses(theta, m, s, u_gc)
        assert abs(float((l_cfm - l_fm).detach()) - C) < 1e-9
        g1, = torch.autograd.grad(l_cfm, theta, retain_graph=True)
        g2, = torch.autograd.grad(l_fm, theta)
        torch.testing.assert_close(g1, g2, atol=1e-9, rtol=1e-9)
        l_cfm, l_bad = _quadrature_losses(theta, m, s, u_bad)
        diffs_bad.append(float((l_cfm - l_bad).detach()))
        g3, = torch.autograd.grad(l_bad, theta)
        assert (g3 - g1).norm() > 0.1
    assert max(diffs_bad) - min(diffs_bad) > 0.1
    # gencore's Monte-Carlo cfm_loss estimates the quadrature value
    theta = torch.tensor([0.3, -0.5, 1.0, 0.8], dtype=torch.float64)
    v = lambda x, t: theta[0] + theta[1] * x + theta[2] * t[:, None] + theta[3] * t[:, None] * x  # noqa: E731
    n = 400_000
    x0 = torch.randn(n, 1, generator=_gen(5), dtype=torch.float64)
    x1 = m + s * torch.randn(n, 1, generator=_gen(6), dtype=torch.float64)
    mc = float(fm.cfm_loss(v, x0, x1, generator=_gen(7)))
    quad = float(_quadrature_losses(theta, m, s, u_gc)[0].detach())
    assert abs(mc - quad) < 0.02 * quad


def test_ot_pairing_has_the_cost_of_the_exact_ot_plan_and_straightens_the_conditional_paths():
    x0 = torch.randn(12, 2, generator=_gen(8), dtype=torch.float64)
    x1 = torch.randn(12, 2, generator=_gen(9), dtype=torch.float64) + 1.0
    paired = fm.ot_pairing(x0, x1)
    assert sorted(paired[:, 0].tolist()) == sorted(x1[:, 0].tolist())          # a permutation of x1
    cost = torch.cdist(x0, x1).pow(2)
    lp = float(ot_cost(None, None, cost.numpy()))
    assert abs(float((paired - x0).pow(2).sum(1).mean()) - lp) < 1e-9
    assert float((x1 - x0).pow(2).sum(1).mean()) > lp + 1e-3                   # the identity pairing is not optimal


def test_straightness_of_a_line_is_zero_and_of_a_quarter_circle_is_pi2_over_4_minus_2():
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    a, b = torch.randn(5, 3, generator=_gen(10), dtype=torch.float64), torch.randn(5, 3, generator=_gen(11), dtype=torch.float64)
    line = a + t[:, None, None] * (b - a)
    assert float(fm.straightness(line)) < 1e-20
    arc = torch.stack([torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)], -1)[:, None, :]
    assert abs(float(fm.straightness(arc)) - (math.pi ** 2 / 4 - 2)) < 1e-5
    slow_start = a + (t ** 2)[:, None, None] * (b - a)                         # straight, not constant speed
    assert float(fm.straightness(slow_start)) > 0.1


# ------------------------------------------------------------------ experiments: couplings and control
def _toy(seed, coupling):
    gencore.seed_everything(seed)
    net = fm.velocity_mlp(2, 32, 2)
    if coupling is not None:
        fm.train_velocity(net, toy_2d("moons", 4000, seed=seed), steps=200, coupling=coupling, batch_size=128,
                          lr=5e-3, seed=seed, generator=_gen(100 + seed))
    x0 = torch.randn(500, 2, generator=_gen(200 + seed))
    with torch.no_grad():
        ed = float(energy_distance(fm.ode_sample(net, x0, 16), toy_2d("moons", 500, seed=50 + seed)))
        return ed, float(fm.straightness(fm.ode_trajectory(net, x0, 32)))


def test_ot_coupling_gives_straighter_paths_and_the_untrained_control_fails():
    runs = {(s, c): _toy(s, c) for s in (0, 1, 2) for c in ("independent", "ot", None)}
    gencore.check_over_seeds("OT paths are 5x straighter", lambda s: runs[s, "ot"][1] / runs[s, "independent"][1],
                             at_most=0.2)
    for c in ("independent", "ot"):
        gencore.check_over_seeds(f"{c}: energy distance below 0.06", lambda s: runs[s, c][0], at_most=0.06)
    with pytest.raises(gencore.ClaimError):
        gencore.check_over_seeds("untrained: energy distance below 0.06", lambda s: runs[s, None][0], at_most=0.06)


def test_cfm_recipe_is_registered_seeded_and_learns_the_mean_digit():
    assert "CFM" in leaderboard.kinds()
    x = torch.rand(256, 784, generator=_gen(12)) ** 3                        # digit-like: mostly dark
    a = leaderboard.train_model("CFM", x, seed=0, steps=40)
    b = leaderboard.train_model("CFM", x, seed=0, steps=40)
    sa, sb = a.sample(64, seed=3), b.sample(64, seed=3)
    assert sa.shape == (64, 784) and 0 <= float(sa.min()) and float(sa.max()) <= 1
    torch.testing.assert_close(sa, sb)                                         # seeded end to end
    assert not torch.equal(sa, a.sample(64, seed=4))
    gencore.seed_everything(0)
    untrained = fm.velocity_mlp(784, 256, 2, n_features=16)
    su = ((fm.flow_sample(untrained, (64, 784), 10, generator=_gen(3)) + 1) / 2).clamp(0, 1)
    err = lambda smp: float((smp.mean(0) - x.mean(0)).norm())  # noqa: E731
    assert err(sa) < 0.5 * err(su)


# ------------------------------------------------------------------ samplers, bad input, exercise
def test_samplers_follow_the_generator_dtype_and_device():
    v = lambda x, t: -x + t[:, None]  # noqa: E731
    a = fm.flow_sample(v, (7, 3), 5, generator=_gen(1), dtype=torch.float64)
    b = fm.flow_sample(v, (7, 3), 5, generator=_gen(1), dtype=torch.float64)
    assert a.dtype == torch.float64 and a.device.type == "cpu" and torch.equal(a, b)
    assert not torch.equal(a, fm.flow_sample(v, (7, 3), 5, generator=_gen(2), dtype=torch.float64))
    x0 = torch.randn(7, 3, generator=_gen(1), dtype=torch.float64)
    torch.testing.assert_close(a, fm.ode_sample(v, x0, 5))
    traj = fm.ode_trajectory(v, x0, 5)
    assert traj.shape == (6, 7, 3)
    torch.testing.assert_close(traj[-1], a)


@pytest.mark.parametrize("call, words", [
    (lambda: fm.straight_path(torch.zeros(3, 2), torch.zeros(3, 2), torch.full((3,), 1.5)), "t must lie in [0, 1]"),
    (lambda: fm.cfm_loss(lambda x, t: x, torch.zeros(3, 2), torch.zeros(3, 2), t=-torch.ones(3)), "t must lie"),
    (lambda: fm.gaussian_path_velocity(torch.zeros(3, 2), 2.0, torch.zeros(2), 1.0), "t must lie"),
    (lambda: fm.velocity_from_score(torch.zeros(3, 2), torch.zeros(3, 2), 0.0), "(0, 1]"),
    (lambda: fm.ode_sample(lambda x, t: x, torch.zeros(3, 2), 0), "steps must be a positive integer"),
    (lambda: fm.flow_sample(lambda x, t: x, (3, 2), -1, generator=_gen(0)), "steps must be a positive integer"),
    (lambda: fm.cnf_log_prob(lambda x, t: x, torch.zeros(3, 2), 0), "steps must be a positive integer"),
    (lambda: fm.train_velocity(fm.velocity_mlp(2, 4, 1), torch.zeros(8, 2), steps=1, coupling="sinkhorn"), "coupling"),
    (lambda: fm.ode_sample(lambda x, t: x, torch.zeros(3, 2), 4, method="rk4"), "method"),
    (lambda: fm.gaussian_path_velocity(torch.zeros(3, 2), 0.5, torch.zeros(2), 0.0), "std"),
])
def test_bad_input_raises_a_value_error_naming_the_argument(call, words):
    with pytest.raises(ValueError, match=None) as info:
        call()
    assert words in str(info.value)


def test_cfm_target_exercise_accepts_the_reference_and_names_each_mistake():
    ex = E.EXERCISES["cfm_target"]
    assert len(ex.mistakes) >= 3
    # the reference passing and every mistake's hint: tests/test_exercises.py, for every registered exercise
    with pytest.raises(gencore.ClaimError):
        E.check("cfm_target", lambda x0, x1, t: (x0, x1), strict=True)
    # the solution written in the chapter passes
    def solution(x0, x1, t):
        tt = t[:, None]
        return (1 - tt) * x0 + tt * x1, x1 - x0
    assert E.check("cfm_target", solution, strict=True).passed
