"""Tests of gencore.gan against independent computations (scipy quadrature, hand-written formulas)."""
import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from gencore import gan
from gencore.data import GaussianMixture1D
from gencore.train import fit


def _norm_pdf(m, s):
    return lambda x: stats.norm.pdf(x, m, s)


def test_optimal_discriminator_matches_density_ratio():  # thm-gan-optimal-d
    x = np.linspace(-4, 4, 101)
    p, q = stats.norm.pdf(x, 0, 1), stats.norm.pdf(x, 1, 0.5)
    d = gan.optimal_discriminator(torch.tensor(p), torch.tensor(q)).numpy()
    np.testing.assert_allclose(d, p / (p + q), rtol=1e-12)
    # D* maximises the pointwise objective a log D + b log(1 - D): compare with a brute-force grid
    grid = np.linspace(1e-4, 1 - 1e-4, 20001)
    for a, b in [(0.3, 0.7), (2.0, 0.5), (1.0, 1.0)]:
        best = grid[np.argmax(a * np.log(grid) + b * np.log1p(-grid))]
        assert abs(float(gan.optimal_discriminator([a], [b])[0]) - best) < 1e-3


def test_optimal_discriminator_is_half_when_densities_agree():  # thm-gan-optimal-d
    p = torch.rand(50, dtype=torch.float64) + 0.1
    assert torch.equal(gan.optimal_discriminator(p, p.clone()), torch.full_like(p, 0.5))
    assert float(gan.optimal_discriminator([0.0], [0.0])[0]) == 0.5


@pytest.mark.parametrize("m,s", [(0.0, 1.0), (0.5, 1.0), (2.0, 0.7), (-1.0, 2.0), (4.0, 0.5)])
def test_virtual_criterion_equals_two_jsd_minus_log4(m, s):  # thm-gan-global-optimum
    pd, pg = _norm_pdf(0.0, 1.0), _norm_pdf(m, s)

    def integrand(x):
        a, b = pd(x), pg(x)
        mid = 0.5 * (a + b)
        return 0.5 * (a * np.log(a / mid) if a > 0 else 0.0) + 0.5 * (b * np.log(b / mid) if b > 0 else 0.0)

    jsd = integrate.quad(integrand, -15, 15, points=[0.0, m], limit=200)[0]
    x = torch.linspace(-15, 15, 30001, dtype=torch.float64)
    p, q = torch.tensor(pd(x.numpy())), torch.tensor(pg(x.numpy()))
    c = float(gan.gan_value_on_grid(p, q, x))
    assert c == pytest.approx(-math.log(4) + 2 * jsd, abs=1e-6)
    assert float(gan.jensen_shannon_on_grid(p, q, x)) == pytest.approx(jsd, abs=1e-6)
    assert c >= -math.log(4) - 1e-9


def test_value_is_minus_log4_at_equality_and_any_discriminator_is_worse():  # thm-gan-global-optimum
    mix = GaussianMixture1D([0.3, 0.7], [-2.0, 1.5], [0.5, 1.0])
    x = torch.linspace(-10, 10, 20001, dtype=torch.float64)
    p = mix.pdf(x)
    assert float(gan.gan_value_on_grid(p, p, x)) == pytest.approx(-math.log(4), abs=1e-8)
    q = GaussianMixture1D([1.0], [0.0], [1.5]).pdf(x)
    d_other = torch.sigmoid(0.3 * x)
    assert float(gan.gan_value_on_grid(p, q, x, d_other)) < float(gan.gan_value_on_grid(p, q, x))


def test_losses_match_hand_computed_values():
    lr = torch.tensor([2.0, -1.0, 0.5])
    lf = torch.tensor([-3.0, 0.0, 1.0])
    d = lambda t: 1 / (1 + np.exp(-t.numpy().astype(np.float64)))  # noqa: E731
    expected_d = -(np.log(d(lr)).mean() + np.log(1 - d(lf)).mean())
    assert float(gan.discriminator_loss(lr, lf)) == pytest.approx(expected_d, rel=1e-6)
    assert float(gan.generator_loss(lf, "non_saturating")) == pytest.approx(-np.log(d(lf)).mean(), rel=1e-6)
    assert float(gan.generator_loss(lf, "minimax")) == pytest.approx(np.log(1 - d(lf)).mean(), rel=1e-6)
    # gan_value on probabilities is minus the discriminator loss
    v = gan.gan_value(torch.tensor(d(lr)), torch.tensor(d(lf)))
    assert float(v) == pytest.approx(-expected_d, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_losses_finite_at_extreme_logits(dtype):
    big = torch.tensor([1e4, -1e4, 0.0], dtype=dtype, requires_grad=True)
    for loss in (gan.discriminator_loss(big, big), gan.generator_loss(big, "minimax"),
                 gan.generator_loss(big, "non_saturating")):
        g, = torch.autograd.grad(loss, big)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
    # exact asymptotics: softplus(1e4) = 1e4
    assert float(gan.generator_loss(torch.tensor([-1e4], dtype=dtype))) == pytest.approx(1e4)


def test_saturation_gradients():  # prop-gan-saturation
    logit = torch.tensor([-10.0, -5.0, 0.0], dtype=torch.float64, requires_grad=True)
    d = torch.sigmoid(logit).detach()
    g_mm, = torch.autograd.grad(gan.generator_loss(logit, "minimax") * 3, logit)
    g_ns, = torch.autograd.grad(gan.generator_loss(logit, "non_saturating") * 3, logit)
    np.testing.assert_allclose(g_mm.abs().numpy(), d.numpy(), rtol=1e-10)
    np.testing.assert_allclose(g_ns.abs().numpy(), (1 - d).numpy(), rtol=1e-10)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="logits_real and logits_fake must have the same shape"):
        gan.discriminator_loss(torch.zeros(4), torch.zeros(5))
    with pytest.raises(ValueError, match="d_real must hold probabilities"):
        gan.gan_value(torch.tensor([0.5, 1.2]), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="d_fake must hold probabilities"):
        gan.gan_value(torch.tensor([0.5]), torch.tensor([-0.1]))
    with pytest.raises(ValueError, match="p_data and p_model must be density values"):
        gan.optimal_discriminator([-1.0], [1.0])
    with pytest.raises(ValueError, match="same shape"):
        gan.optimal_discriminator([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="unknown generator loss kind"):
        gan.generator_loss(torch.zeros(3), "hinge")
    with pytest.raises(ValueError, match="discriminator must hold probabilities"):
        gan.gan_value_on_grid([1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.5, 2.0])
    with pytest.raises(ValueError, match="k .* must be a positive integer"):
        gan.make_gan_step(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), None, None, latent_dim=1, k=0)
    with pytest.raises(ValueError, match="beta must be in"):
        gan.adagan_weights(torch.ones(3), 0.0)


def test_networks_shapes_and_range():
    g, d = gan.DCGANGenerator(8, width=4), gan.DCGANDiscriminator(width=4)
    x = g(torch.randn(5, 8))
    assert x.shape == (5, 784) and x.min() >= 0 and x.max() <= 1
    assert d(x).shape == (5,) and d.features(x).shape == (5, d.out_features)
    md = gan.MLPDiscriminator(64, (16,), n_outputs=10)
    assert md(torch.rand(3, 64)).shape == (3, 10)


def test_gan_step_learns_a_1d_gaussian_through_fit():  # the k-step procedure (Algorithm 1)
    torch.manual_seed(0)
    data = (3.0 + 0.5 * torch.randn(2000, 1))
    g = gan.mlp_generator(1, 1, hidden=(16,))
    d = gan.MLPDiscriminator(1, hidden=(16,))
    step = gan.make_gan_step(g, d, gan.adam_for_gan(g, 3e-3), gan.adam_for_gan(d, 3e-3), latent_dim=1, k=2)
    calls = []
    d.register_forward_hook(lambda *a: calls.append(1))
    hist = fit(step, data, steps=400, batch_size=2 * 64, progress=False)
    assert len(hist["d_loss"]) == 400
    assert len(calls) == 400 * (2 * 2 + 1)  # k=2 updates x (real + fake) + 1 generator pass
    x = gan.sample_generator(g, 4000, 1, seed=1)
    assert abs(float(x.mean()) - 3.0) < 0.3


def test_info_lower_bound_is_log_k_for_a_perfect_q_and_below_otherwise():  # prop-gan-info-bound
    idx = torch.arange(10).repeat(5)
    perfect = 50.0 * torch.nn.functional.one_hot(idx, 10).float()
    assert float(gan.info_lower_bound(perfect, idx)) == pytest.approx(math.log(10), abs=1e-6)
    assert float(gan.info_lower_bound(torch.zeros(50, 10), idx)) == pytest.approx(0.0, abs=1e-6)
    q = torch.randn(50, 10, generator=torch.Generator().manual_seed(0))
    assert float(gan.info_lower_bound(q, idx)) < math.log(10)


def test_semi_supervised_real_logit_is_logsumexp():  # prop-gan-k-plus-one
    logits = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # K+1-class softmax with the fake logit fixed at 0: P(real) = 1 - softmax[..., K]
    full = torch.cat([logits, torch.zeros(6, 1, dtype=torch.float64)], 1).softmax(1)
    p_real = 1 - full[:, -1]
    np.testing.assert_allclose(torch.sigmoid(torch.logsumexp(logits, 1)).numpy(), p_real.numpy(), rtol=1e-12)
    losses = gan.semi_supervised_losses(logits, torch.tensor([0, 1, 2, 3, 0, 1]), logits, logits)
    expected = -(torch.log(p_real).mean() + torch.log(1 - p_real).mean())
    assert float(losses["unsupervised"]) == pytest.approx(float(expected), rel=1e-10)


def test_adagan_weights_solve_the_constrained_problem():
    h = torch.tensor([0.0, 0.2, 1.0, 3.0, 10.0], dtype=torch.float64)
    for beta in (0.2, 0.5, 1.0):
        w = gan.adagan_weights(h, beta)
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-12) and (w >= 0).all()
        # independent: find lambda by bisection on sum_i (lam - (1-beta) h_i)_+ = beta N
        lo, hi = 0.0, 100.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            s = np.clip(mid - (1 - beta) * h.numpy(), 0, None).sum()
            lo, hi = (mid, hi) if s < beta * len(h) else (lo, mid)
        np.testing.assert_allclose(w.numpy(), np.clip(lo - (1 - beta) * h.numpy(), 0, None) / (beta * 5), atol=1e-9)
        assert w[0] >= w[-1]  # poorly covered points (small ratio) get more weight
    np.testing.assert_allclose(gan.adagan_weights(torch.ones(7), 0.3).numpy(), np.full(7, 1 / 7))


def test_mixture_sampling_counts_follow_weights():
    g1 = torch.nn.Sequential(torch.nn.Linear(1, 1))
    g2 = torch.nn.Sequential(torch.nn.Linear(1, 1))
    for g, c in ((g1, -5.0), (g2, 5.0)):
        torch.nn.init.zeros_(g[0].weight)
        torch.nn.init.constant_(g[0].bias, c)
    x = gan.sample_mixture([g1, g2], [0.25, 0.75], 4000, 1, seed=0)
    assert x.shape == (4000, 1)
    assert abs(float((x > 0).double().mean()) - 0.75) < 0.03
    assert gan.mixture_weights_after_round([1.0], 0.5) == [0.5, 0.5]


def test_best_permutation_accuracy_helper():
    codes = np.array([0, 0, 1, 1, 2, 2])
    labels = np.array([2, 2, 0, 0, 1, 0])
    assert gan.accuracy_up_to_permutation(codes, labels, 3) == pytest.approx(5 / 6)
    brute = max(np.mean(np.array(perm)[codes] == labels) for perm in itertools.permutations(range(3)))
    assert gan.accuracy_up_to_permutation(codes, labels, 3) == pytest.approx(brute)


@pytest.mark.cuda
def test_losses_follow_cuda_device(cuda_device):
    lr = torch.randn(8, device=cuda_device)
    assert gan.discriminator_loss(lr, lr).device.type == "cuda"
    assert gan.optimal_discriminator(lr.abs(), lr.abs()).device.type == "cuda"
