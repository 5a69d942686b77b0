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
    # def-gumbel-softmax (y = softmax((logits + g) / tau) lies in the open simplex)
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


def _kl_monte_carlo(logits, n, seed):
    """E_q[log q(c) - log(1/K)] from n exact samples: the criterion of the chapter's KL check."""
    log_q = torch.log_softmax(logits, -1)
    c = gumbel_max_sample(log_q.expand(n, *log_q.shape), generator=gen(seed))
    return (log_q.expand(n, *log_q.shape).gather(-1, c[..., None])[..., 0] + math.log(logits.shape[-1])).sum(-1).mean(0)


def test_kl_categorical_uniform_matches_monte_carlo_and_a_wrong_kl_fails():
    logits = 2.0 * torch.randn(5, 30, 10, generator=gen(11), dtype=torch.float64)
    kl = kl_categorical_uniform(logits)
    mc = _kl_monte_carlo(logits, 20_000, seed=12)
    assert (mc - kl).abs().max() < 0.1  # the chapter's tolerance
    # plausible wrong answers fail the same criterion: no log K term, the reverse KL(uniform || q)
    log_q = torch.log_softmax(logits, -1)
    no_log_k = (log_q.exp() * log_q).sum((-1, -2))
    reverse = (-(log_q + math.log(10)).mean(-1)).sum(-1)
    for wrong in (no_log_k, reverse):
        assert ((mc - wrong).abs() > 0.1).all()


def test_kl_categorical_uniform_is_zero_exactly_at_uniform_logits():
    assert kl_categorical_uniform(torch.full((3, 30, 10), 1.7, dtype=torch.float64)).abs().max() < 1e-12
    logits = torch.zeros(3, 30, 10, dtype=torch.float64)
    logits[:, 0, 0] = 0.5  # one variable slightly off uniform
    assert (kl_categorical_uniform(logits) > 1e-3).all()
    # the old check "KL <= 30 log 10" cannot fail: it holds for arbitrary logits
    assert (kl_categorical_uniform(100 * torch.randn(4, 30, 10, generator=gen(13))) <= 30 * math.log(10) + 1e-4).all()
