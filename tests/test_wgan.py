"""Tests of gencore.wgan: WGAN losses, clipping, WGAN-GP, step factories."""
import math

import numpy as np
import ot
import pytest
import scipy.optimize
import torch
from torch import nn

from gencore.nets import mlp
from gencore.ot.sample import energy_distance
from gencore.train import fit
from gencore.wgan import (WGANConfig, clip_weights, critic_loss, critic_step, distance_step, generator_loss,
                          make_optimizer, w1_estimate, wgan_step)


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


def test_gradient_penalty_critic_overestimates_w1_by_w1_squared_over_2_lambda():  # prop-wgan-gp-bias
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
