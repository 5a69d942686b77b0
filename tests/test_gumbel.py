"""Tests of gencore.gumbel: exact categorical sampling (chi-square), temperature limits,
straight-through gradients, the categorical KL."""
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import distributions as D

from gencore.gumbel import gumbel_max_sample, gumbel_noise, gumbel_softmax, kl_categorical_uniform, tau_schedule
from gencore.vae import gumbel_softmax as reexported


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


PROBS = torch.tensor([0.05, 0.1, 0.15, 0.3, 0.4], dtype=torch.float64)


def test_gumbel_max_is_exactly_categorical_chi_square():  # prop-gumbel-max
    n = 50_000
    logits = PROBS.log() + 1.7  # any shift: softmax is invariant
    idx = gumbel_max_sample(logits.expand(n, 5), generator=gen(1))
    counts = np.bincount(idx.numpy(), minlength=5)
    assert stats.chisquare(counts, n * PROBS.numpy()).pvalue > 1e-3
    # the test has power: the same counts reject slightly wrong probabilities
    wrong = torch.tensor([0.07, 0.1, 0.15, 0.3, 0.38], dtype=torch.float64)
    assert stats.chisquare(counts, n * wrong.numpy()).pvalue < 1e-6


def test_gumbel_noise_is_standard_gumbel_and_finite():
    g = gumbel_noise((100_000,), generator=gen(2), dtype=torch.float64)
    assert torch.isfinite(g).all()
    assert stats.kstest(g.numpy(), stats.gumbel_r.cdf).pvalue > 1e-3


def test_gumbel_softmax_limits_in_tau():  # prop-gumbel-limits
    logits = PROBS.log().expand(2000, 5)
    cold = gumbel_softmax(logits, 0.01, generator=gen(3))
    hard = gumbel_max_sample(logits, generator=gen(3))  # same noise
    assert torch.equal(cold.argmax(-1), hard)
    assert float((cold.max(-1).values > 0.99).double().mean()) > 0.95
    hot = gumbel_softmax(logits, 1e4, generator=gen(4))
    torch.testing.assert_close(hot, torch.full_like(hot, 0.2), atol=1e-3, rtol=0)
    # mean distance to the uniform vector decreases and distance to one-hot increases with tau
    taus = [0.1, 0.5, 1.0, 5.0]
    d_uniform = [float((gumbel_softmax(logits, t, generator=gen(5)) - 0.2).abs().sum(-1).mean()) for t in taus]
    assert all(a > b for a, b in zip(d_uniform, d_uniform[1:]))


def test_gumbel_softmax_on_simplex_and_straight_through():  # prop-gumbel-limits
    logits = torch.randn(7, 3, 4, generator=gen(6), dtype=torch.float64, requires_grad=True)
    y = gumbel_softmax(logits, 0.7, generator=gen(7))
    torch.testing.assert_close(y.sum(-1), torch.ones(7, 3, dtype=torch.float64))
    assert (y >= 0).all()
    yh = gumbel_softmax(logits, 0.7, hard=True, generator=gen(7))
    assert set(yh.detach().unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(yh.detach().sum(-1), torch.ones(7, 3, dtype=torch.float64))
    assert torch.equal(yh.detach().argmax(-1), y.detach().argmax(-1))
    w = torch.randn(4, dtype=torch.float64, generator=gen(8))
    (g_soft,) = torch.autograd.grad((y * w).sum(), logits)
    (g_hard,) = torch.autograd.grad((yh * w).sum(), logits)
    torch.testing.assert_close(g_hard, g_soft)  # straight-through: gradient of the relaxed sample


def test_gumbel_softmax_finite_for_extreme_logits_and_reexported():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-50.0, -50.0, -50.0]])
    for tau in (0.01, 1.0, 100.0):
        assert torch.isfinite(gumbel_softmax(logits, tau, generator=gen(9))).all()
    assert reexported is gumbel_softmax


def test_kl_categorical_uniform_matches_torch_distributions():
    logits = torch.randn(6, 30, 10, generator=gen(10), dtype=torch.float64)
    ref = D.kl_divergence(D.Categorical(logits=logits), D.Categorical(logits=torch.zeros_like(logits))).sum(-1)
    torch.testing.assert_close(kl_categorical_uniform(logits), ref)


def test_tau_schedule():
    assert tau_schedule(0, 1e-3) == 1.0
    assert tau_schedule(100, 1e-3) == pytest.approx(math.exp(-0.1))
    assert tau_schedule(10**6, 1e-3) == 0.5


@pytest.mark.parametrize("tau", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_tau_raises(tau):
    with pytest.raises(ValueError, match="tau must be a positive finite temperature"):
        gumbel_softmax(torch.zeros(2, 3), tau)


def test_bad_logits_raise():
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        gumbel_softmax(torch.zeros(2, 3, dtype=torch.int64), 1.0)
    with pytest.raises(ValueError, match="rate must be >= 0"):
        tau_schedule(1, -1.0)


@pytest.mark.cuda
def test_gumbel_follows_cuda_device(cuda_device):
    logits = torch.zeros(4, 3, device=cuda_device)
    g = torch.Generator(device=cuda_device).manual_seed(0)
    assert gumbel_softmax(logits, 0.5, hard=True, generator=g).device.type == "cuda"
    assert gumbel_max_sample(logits, generator=g).device.type == "cuda"
