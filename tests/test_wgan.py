"""Tests of gencore.wgan: WGAN losses, clipping, WGAN-GP, step factories."""
import math

import numpy as np
import ot
import pytest
import scipy.optimize
import scipy.stats
import torch
from torch import nn

from gencore.nets import mlp
from gencore.ot import kantorovich_rubinstein_dual
from gencore.ot.sample import energy_distance
from gencore.train import fit
from gencore.wgan import (WGANConfig, clip_weights, critic_loss, critic_step, distance_step, generator_loss,
                          gp_critic_1d, make_optimizer, w1_estimate, wgan_step)


def test_losses_match_hand_computed_forms():
    real = torch.tensor([1.0, 2.0, 4.0])
    fake = torch.tensor([[0.5], [-1.0]])  # (m, 1) is accepted
    assert w1_estimate(real, fake).item() == pytest.approx(7 / 3 - (-0.25))
    assert critic_loss(real, fake).item() == pytest.approx(-0.25 - 7 / 3)
    assert generator_loss(fake).item() == pytest.approx(0.25)


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"critic_real must have shape \(n,\) or \(n, 1\)"):
        w1_estimate(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(TypeError, match="critic_fake must be a torch.Tensor"):
        generator_loss([1.0, 2.0])


def test_optimal_critic_has_unit_slope_along_transported_pairs():  # prop-wgan-unit-gradient
    # independent of gencore.ot: POT for the plan, scipy's linprog for the Kantorovich-Rubinstein dual
    rng = np.random.default_rng(0)
    n = 12
    x, y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + [1.5, 0.0]
    pts = np.concatenate([x, y])
    D = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    mass = np.concatenate([np.full(n, 1 / n), np.full(n, -1 / n)])
    rows = [(i, j) for i in range(2 * n) for j in range(2 * n) if i != j]
    A = np.zeros((len(rows), 2 * n))
    for r, (i, j) in enumerate(rows):
        A[r, i], A[r, j] = 1.0, -1.0
    res = scipy.optimize.linprog(-mass, A_ub=A, b_ub=[D[i, j] for i, j in rows],
                                 bounds=[(0, 0)] + [(None, None)] * (2 * n - 1), method="highs")
    f = res.x
    C = D[:n, n:]
    plan = ot.emd(np.full(n, 1 / n), np.full(n, 1 / n), C)
    assert -res.fun == pytest.approx(ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), C), rel=1e-8)
    i, j = np.nonzero(plan > 1e-12)
    np.testing.assert_allclose(f[i] - f[n + j], C[i, j], rtol=1e-7, atol=1e-9)
    # prop-wgan-unit-gradient: the library's dual LP gives a critic with the same property
    a = torch.cat([torch.full((n,), 1 / n), torch.zeros(n)]).double()
    dual = kantorovich_rubinstein_dual(a, a.flip(0), torch.tensor(pts))
    assert float(dual.value) == pytest.approx(-res.fun, rel=1e-7)
    crit = dual.critic.numpy()
    np.testing.assert_allclose(crit[i] - crit[n + j], C[i, j], rtol=1e-6, atol=1e-8)


def test_clipped_critic_is_lipschitz_with_the_frobenius_bound():  # prop-wgan-clip-lipschitz
    torch.manual_seed(0)
    widths = [3, 32, 16, 1]
    net = mlp(widths)
    for p in net.parameters():
        nn.init.uniform_(p, -1, 1)
    clip_weights(net, 0.05)
    assert all(bool((p.abs() <= 0.05).all()) for p in net.parameters())
    bound = math.prod(0.05 * math.sqrt(a * b) for a, b in zip(widths[:-1], widths[1:]))
    x = (5 * torch.randn(3000, 3)).requires_grad_(True)
    g = torch.autograd.grad(net(x).sum(), x)[0].norm(dim=1)
    assert g.max().item() <= bound
    # with all weights at +c the bound on each layer's Frobenius norm is attained
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.fill_(0.05)
    assert torch.linalg.matrix_norm(lin.weight, 2).item() == pytest.approx(0.05 * math.sqrt(12), rel=1e-6)
    with pytest.raises(ValueError, match="c must be > 0"):
        clip_weights(net, 0.0)


def test_gradient_penalty_critic_overestimates_w1_by_w1_squared_over_2_lambda():  # cor-wgan-gp-scaled
    # Q = P shifted by delta: W1 = delta, the optimal critic is linear, f*(x) = -x.
    # A linear critic trained with the penalty converges to slope -(1 + delta / (2 lambda)).
    delta, lam = 2.0, 1.0
    g = torch.Generator().manual_seed(0)
    p = torch.randn(200, 1, generator=g, dtype=torch.float64)
    q = p + delta
    critic = nn.Linear(1, 1).double()
    config = WGANConfig.gp(lam=lam)
    # plain gradient ascent converges exactly (the penalty of a linear critic does not depend on eps)
    update = critic_step(critic, torch.optim.SGD(critic.parameters(), lr=0.1), config, generator=g)
    for _ in range(300):
        logs = update(p, q)
    assert critic.weight.item() == pytest.approx(-(1 + delta / (2 * lam)), rel=1e-6)
    assert logs["w1"].item() == pytest.approx(delta + delta**2 / (2 * lam), rel=1e-6)


def test_config_defaults_are_the_papers_and_validate():
    gp = WGANConfig.gp()
    assert (gp.penalty, gp.lam, gp.n_critic, gp.optimizer, gp.lr, gp.betas) == ("gp", 10.0, 5, "adam", 1e-4, (0.0, 0.9))
    clip = WGANConfig.clip()
    assert (clip.penalty, clip.c, clip.n_critic, clip.optimizer, clip.lr) == ("clip", 0.01, 5, "rmsprop", 5e-5)
    opt = make_optimizer(nn.Linear(2, 1).parameters(), gp)
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.0, 0.9)
    with pytest.raises(ValueError, match="penalty must be 'gp' or 'clip'"):
        WGANConfig(penalty="spectral")
    with pytest.raises(ValueError, match="n_critic must be a positive integer"):
        WGANConfig(n_critic=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        WGANConfig(lr=0.0)


def test_wgan_step_does_n_critic_updates_then_one_generator_update():
    torch.manual_seed(0)
    gen, critic = mlp([2, 8, 2]), mlp([2, 8, 1])
    config = WGANConfig.gp(n_critic=3, lr=1e-3)
    step = wgan_step(gen, critic, 2, config, generator=torch.Generator().manual_seed(0))
    calls = {"c": 0, "g": 0}
    step.opt_c.register_step_post_hook(lambda *a: calls.__setitem__("c", calls["c"] + 1))
    step.opt_g.register_step_post_hook(lambda *a: calls.__setitem__("g", calls["g"] + 1))
    data = torch.randn(300, 2)
    history = fit(step, data, steps=4, batch_size=3 * 16, progress=False)
    assert calls == {"c": 12, "g": 4}
    assert history.keys() == ["w1", "gp", "g_loss"]
    assert all(p.grad is None or p.requires_grad for p in critic.parameters())


def test_wgan_step_with_clipping_keeps_weights_in_range():
    torch.manual_seed(0)
    gen, critic = mlp([2, 8, 2]), mlp([2, 8, 1])
    step = wgan_step(gen, critic, 2, WGANConfig.clip(lr=1e-2))
    fit(step, torch.randn(100, 2) * 3, steps=5, batch_size=50, progress=False)
    assert max(p.abs().max().item() for p in critic.parameters()) <= 0.01
    with pytest.raises(ValueError, match="z_dim must be a positive integer"):
        wgan_step(gen, critic, 0)
    with pytest.raises(ValueError, match="at least n_critic"):
        step(torch.zeros(2, 2))


def test_distance_step_reduces_the_energy_distance():
    torch.manual_seed(0)
    gen = nn.Linear(1, 1)
    data = 3.0 + 0.5 * torch.randn(1000, 1, generator=torch.Generator().manual_seed(1))
    step = distance_step(gen, energy_distance, 1, torch.optim.Adam(gen.parameters(), lr=5e-2),
                         generator=torch.Generator().manual_seed(2))
    history = fit(step, data, steps=300, batch_size=200, progress=False)
    assert history.last("distance", 20) < 0.1 * history["distance"][:5].mean()
    assert gen.bias.item() == pytest.approx(3.0, abs=0.2)
    assert abs(gen.weight.item()) == pytest.approx(0.5, abs=0.15)


@pytest.mark.cuda
def test_wgan_step_runs_on_cuda(cuda_device):
    gen, critic = mlp([2, 8, 2]).to(cuda_device), mlp([2, 8, 1]).to(cuda_device)
    step = wgan_step(gen, critic, 2, WGANConfig.gp(), generator=torch.Generator(device=cuda_device).manual_seed(0))
    history = fit(step, torch.randn(100, 2, device=cuda_device), steps=2, batch_size=50, progress=False)
    assert np.isfinite(history["w1"]).all()


def _interpolate_density_mc(x, y, pairing, n=400_000, seed=0):
    """Monte Carlo histogram density of eps x + (1 - eps) y (independent of gencore)."""
    rng = np.random.default_rng(seed)
    if pairing == "all":
        i, j = rng.integers(len(x), size=n), rng.integers(len(y), size=n)
    else:
        i = j = rng.integers(len(x), size=n)
    eps = rng.uniform(size=n)
    return eps * x[i] + (1 - eps) * y[j]


@pytest.mark.parametrize("pairing", ["all", "matched"])
def test_gp_critic_1d_density_matches_monte_carlo_interpolates(pairing):  # prop-wgan-gp-critic-1d
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=7), rng.normal(1.0, 0.5, size=7)
    r = gp_critic_1d(torch.tensor(x), torch.tensor(y), lam=10.0, pairing=pairing)
    knots, dens = r.knots.numpy(), r.density.numpy()
    samples = _interpolate_density_mc(x, y, pairing)
    counts, _ = np.histogram(samples, bins=knots)
    mc = counts / (len(samples) * np.diff(knots))
    big = np.diff(knots) > 0.05  # intervals wide enough for a stable histogram
    np.testing.assert_allclose(mc[big], dens[big], rtol=0.05, atol=0.01)
    assert (dens * np.diff(knots)).sum() == pytest.approx(1.0, abs=1e-12)


def test_gp_critic_1d_maximises_the_penalised_objective():  # prop-wgan-gp-critic-1d
    # maximise J(u) = sum_k L_k (u_k D_k - lam rho_k (|u_k| - 1)^2) over all slopes with scipy,
    # D_k from numpy's empirical CDFs; the closed form must give the same slopes and estimate
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=6), rng.normal(0.8, 0.7, size=5)
    lam = 0.7
    r = gp_critic_1d(torch.tensor(x), torch.tensor(y), lam=lam)
    knots = np.unique(np.concatenate([x, y]))
    L, left = np.diff(knots), knots[:-1]
    D = (np.searchsorted(np.sort(y), left, side="right") / len(y)
         - np.searchsorted(np.sort(x), left, side="right") / len(x))
    rho = r.density.numpy()

    def negJ(u):
        return -(L * (u * D - lam * rho * (np.abs(u) - 1) ** 2)).sum()

    best = min((scipy.optimize.minimize(negJ, u0, method="Powell", options={"xtol": 1e-10, "ftol": 1e-14})
                for u0 in (np.ones(len(L)), -np.ones(len(L)), np.sign(D) + 0.0)), key=lambda res: res.fun)
    np.testing.assert_allclose(r.cdf_gap.numpy(), D, atol=1e-12)
    assert -negJ(r.slope.numpy()) >= -best.fun - 1e-9
    np.testing.assert_allclose(r.slope.numpy()[D != 0], best.x[D != 0], atol=1e-4)
    w1 = scipy.stats.wasserstein_distance(x, y)
    assert r.w1.item() == pytest.approx(w1, rel=1e-12)
    assert r.estimate.item() == pytest.approx((L * best.x * D).sum(), abs=1e-4)
    # Cauchy-Schwarz: at least the scaled-critic value W1 + W1^2 / (2 lam), strictly here
    assert r.estimate.item() > w1 + w1 ** 2 / (2 * lam) + 1e-3


def test_scaled_critic_corollary_is_attained_between_two_point_masses():  # cor-wgan-gp-scaled
    # P = delta_0, Q = delta_d: F_Q - F_P = -1 on [0, d], rho = 1/d there, |D| / rho constant
    for d, lam in ((1.0, 10.0), (3.0, 0.5)):
        r = gp_critic_1d(torch.tensor([0.0]), torch.tensor([d]), lam=lam)
        assert r.estimate.item() == pytest.approx(d + d ** 2 / (2 * lam), rel=1e-12)
        assert r.slope.item() == pytest.approx(-(1 + d / (2 * lam)), rel=1e-12)


def test_trained_gp_critic_reaches_the_closed_form_and_not_the_scaled_value():  # prop-wgan-gp-critic-1d
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(64, 1, generator=g), 1.5 + 0.5 * torch.randn(64, 1, generator=g)
    lam = 2.0
    torch.manual_seed(0)
    critic = mlp([1, 64, 64, 1])
    config = WGANConfig.gp(lam=lam, lr=1e-3)
    update = critic_step(critic, make_optimizer(critic.parameters(), config), config,
                         generator=torch.Generator().manual_seed(0))
    for _ in range(1500):
        update(p, q)  # fixed rows: the penalty interpolates the matched pairs (p_i, q_i)
    with torch.no_grad():
        est = w1_estimate(critic(p), critic(q)).item()
    r = gp_critic_1d(p, q, lam=lam, pairing="matched")
    scaled = r.w1.item() + r.w1.item() ** 2 / (2 * lam)
    assert est == pytest.approx(r.estimate.item(), rel=0.01)
    assert abs(scaled - r.estimate.item()) > 0.03 * r.estimate.item()  # the old formula is told apart


def test_gp_critic_1d_rejects_bad_input():
    with pytest.raises(ValueError, match="lam must be a number > 0"):
        gp_critic_1d(torch.zeros(3), torch.ones(3), lam=0.0)
    with pytest.raises(ValueError, match="pairing must be 'all' or 'matched'"):
        gp_critic_1d(torch.zeros(3), torch.ones(3), pairing="random")
    with pytest.raises(ValueError, match="needs samples of equal size"):
        gp_critic_1d(torch.zeros(3), torch.ones(2), pairing="matched")
    with pytest.raises(ValueError, match=r"y must be a 1-D sample"):
        gp_critic_1d(torch.zeros(3), torch.ones(3, 2))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        gp_critic_1d([0.0], torch.ones(1))


def test_ring_checks_of_the_chapter_fail_for_untrained_generators():
    # ch10's ring criteria (>= 7 of 8 modes covered; MMD^2 to the data <= 0.6) reject untrained generators
    from gencore.data import toy_2d, toy_2d_modes
    from gencore.metrics import modes_covered
    from gencore.ot.sample import mmd2
    spec = toy_2d_modes("ring8")
    data = toy_2d("ring8", 1000, seed=123)
    assert modes_covered(toy_2d("ring8", 2000, seed=5), spec.centers, spec.std) == 8  # the data itself passes
    assert mmd2(toy_2d("ring8", 1000, seed=6), data, "rbf", bandwidths=(0.05, 0.2, 1.0)).item() < 0.6
    for seed in range(3):
        torch.manual_seed(seed)
        gen = mlp([2, 64, 64, 2])
        with torch.no_grad():
            s = gen(torch.randn(2000, 2, generator=torch.Generator().manual_seed(7)))
        assert modes_covered(s, spec.centers, spec.std) < 7
        assert mmd2(s[:1000], data, "rbf", bandwidths=(0.05, 0.2, 1.0)).item() > 3 * 0.6
