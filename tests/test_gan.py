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


# --------------------------------------------------------------------------- behaviour of the step factories
class _ConstantGenerator(torch.nn.Module):
    """G(z) = b for every z: the generator's update is the update of b."""

    def __init__(self, value: float):
        super().__init__()
        self.b = torch.nn.Parameter(torch.tensor([value], dtype=torch.float64))

    def forward(self, z):
        return self.b.expand(len(z), 1) + 0 * z[:, :1]


class _LinearLogit(torch.nn.Module):
    """A fixed logistic discriminator: logit l(x) = a x + c."""

    def __init__(self, a: float, c: float):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.c = torch.nn.Parameter(torch.tensor(c, dtype=torch.float64))

    def forward(self, x):
        return self.a * x[:, 0] + self.c


@pytest.mark.parametrize("x0", [-8.0, -2.0, 0.0, 1.5])
def test_gan_step_kind_gives_the_closed_form_generator_gradient(x0):  # prop-gan-saturation
    """One step of make_gan_step with SGD (lr 1) moves G's output by minus the autograd gradient of the
    closed-form loss, log(1 - sigma(l)) (minimax) or -log sigma(l) (non-saturating), at the known logit."""
    a, c = 1.3, 0.4
    for kind in ("minimax", "non_saturating"):
        g, d = _ConstantGenerator(x0), _LinearLogit(a, c)
        opt_g = torch.optim.SGD(g.parameters(), lr=1.0)
        opt_d = torch.optim.SGD(d.parameters(), lr=0.0)  # the discriminator stays fixed
        step = gan.make_gan_step(g, d, opt_g, opt_d, latent_dim=1, kind=kind)
        step(torch.zeros(16, 1, dtype=torch.float64))
        # independent: the naive formulas in float64, differentiated by autograd
        x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
        dx = 1 / (1 + torch.exp(-(a * x + c)))
        naive = torch.log(1 - dx) if kind == "minimax" else -torch.log(dx)
        grad, = torch.autograd.grad(naive, x)
        moved = float(g.b.detach()) - x0
        assert moved == pytest.approx(-float(grad), rel=1e-9, abs=1e-15)
        assert moved > 0  # both losses push G(z) toward larger D (a > 0): the same direction
        d_val = float(dx.detach())
        expected = a * (d_val if kind == "minimax" else 1 - d_val)  # |dL/dx| = D a, resp. (1 - D) a
        assert abs(moved) == pytest.approx(expected, rel=1e-9)
    # where D(G(z)) is tiny the minimax step vanishes, the non-saturating one does not
    if x0 == -8.0:
        assert expected > 1.0


def test_gan_step_discriminator_update_descends_its_loss():
    """k discriminator updates with a small SGD step lower -V on the batch they saw."""
    torch.manual_seed(0)
    g, d = gan.mlp_generator(2, 2, hidden=(8,)), gan.MLPDiscriminator(2, hidden=(8,))
    step = gan.make_gan_step(g, d, torch.optim.SGD(g.parameters(), lr=0.0), torch.optim.SGD(d.parameters(), lr=1e-2),
                             latent_dim=2, k=1)
    real = torch.randn(64, 2) + 3.0
    torch.manual_seed(1)
    fake = g(torch.randn(64, 2)).detach()
    before = float(gan.discriminator_loss(d(real), d(fake)).detach())
    torch.manual_seed(1)  # the step draws the same noise
    step(real)
    after = float(gan.discriminator_loss(d(real), d(fake)).detach())
    assert after < before


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _restore(module, values):
    with torch.no_grad():
        for p, v in zip(module.parameters(), values):
            p.copy_(v)


def test_infogan_step_raises_the_information_bound_and_trains_q():  # prop-gan-info-bound
    """The generator/Q update of make_infogan_step increases L_I (at the same noise and code) and
    lowers generator_loss - L_I; a Q head absent from opt_g would not move."""
    torch.manual_seed(0)
    noise_dim, k = 3, 4
    g = gan.mlp_generator(noise_dim + k, 2, hidden=(16,))
    d = gan.MLPDiscriminator(2, hidden=(16,))
    q = torch.nn.Linear(d.out_features, k)
    opt_g = torch.optim.SGD([*g.parameters(), *q.parameters()], lr=1e-2)
    step = gan.make_infogan_step(g, d, q, opt_g, torch.optim.SGD(d.parameters(), lr=0.0), noise_dim=noise_dim,
                                 n_categories=k)
    real = torch.randn(128, 2)

    def objective(seed):
        torch.manual_seed(seed)  # replay the step's draws: code + noise for D, then code + noise for G
        gan.categorical_code(128, k)
        torch.randn(128, noise_dim)
        idx, onehot = gan.categorical_code(128, k)
        h = d.features(g(torch.cat([torch.randn(128, noise_dim), onehot], 1)))
        bound = gan.info_lower_bound(q(h), idx)
        return float((gan.generator_loss(d.head(h).squeeze(-1)) - bound).detach()), float(bound.detach())

    q_before = _params(q)
    total0, bound0 = objective(5)
    torch.manual_seed(5)
    logs = step(real)
    total1, bound1 = objective(5)
    assert float(logs["info_bound"]) == pytest.approx(bound0, rel=1e-6)
    assert total1 < total0 and bound1 > bound0
    assert any(not torch.equal(a, b) for a, b in zip(q_before, q.parameters()))
    # training for a few hundred steps makes the code recoverable: L_I close to log K
    opt_g = torch.optim.Adam([*g.parameters(), *q.parameters()], lr=1e-2)
    step = gan.make_infogan_step(g, d, q, opt_g, torch.optim.Adam(d.parameters(), lr=1e-3), noise_dim=noise_dim,
                                 n_categories=k)
    hist = fit(step, torch.randn(2000, 2), steps=300, batch_size=128, progress=False)
    assert hist.last("info_bound", 20) > 0.9 * math.log(k)
    # the same steps with info_weight = 0 leave Q untrained: L_I stays near 0
    torch.manual_seed(0)
    g0, d0 = gan.mlp_generator(noise_dim + k, 2, hidden=(16,)), gan.MLPDiscriminator(2, hidden=(16,))
    q0 = torch.nn.Linear(d0.out_features, k)
    step0 = gan.make_infogan_step(g0, d0, q0, torch.optim.Adam([*g0.parameters(), *q0.parameters()], lr=1e-2),
                                  torch.optim.Adam(d0.parameters(), lr=1e-3), noise_dim=noise_dim, n_categories=k,
                                  info_weight=0.0)
    hist0 = fit(step0, torch.randn(2000, 2), steps=300, batch_size=128, progress=False)
    assert hist0.last("info_bound", 20) < 0.5 * math.log(k)


def test_semi_supervised_step_descends_both_losses_and_learns_from_few_labels():  # prop-gan-k-plus-one
    torch.manual_seed(0)
    centers = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    y_all = torch.randint(3, (600,))
    x_all = centers[y_all] + 0.4 * torch.randn(600, 2)
    x_lab, y_lab = x_all[:6], y_all[:6]
    d = gan.MLPDiscriminator(2, hidden=(16,), n_outputs=3)
    g = gan.mlp_generator(2, 2, hidden=(16,))
    opt_d, opt_g = torch.optim.SGD(d.parameters(), lr=1e-2), torch.optim.SGD(g.parameters(), lr=1e-2)
    step = gan.make_semi_supervised_step(g, d, opt_g, opt_d, x_lab, y_lab, latent_dim=2)
    real = x_all[6:134]
    torch.manual_seed(3)
    fake = g(torch.randn(128, 2)).detach()
    z_g = torch.randn(128, 2)

    def d_loss():
        losses = gan.semi_supervised_losses(d(x_lab), y_lab, d(real), d(fake))
        return float((losses["supervised"] + losses["unsupervised"]).detach())

    def fm_loss():  # feature matching, the generator's loss, at the step's second noise draw
        return float((d.features(real).mean(0) - d.features(g(z_g)).mean(0)).pow(2).sum().detach())

    before_d = d_loss()
    g_before = _params(g)
    torch.manual_seed(3)
    step(real)
    assert d_loss() < before_d
    g_after = _params(g)
    _restore(g, g_before)
    fm_old = fm_loss()
    _restore(g, g_after)
    assert fm_loss() < fm_old
    # 2 labels per class plus unlabelled data: the K-class head classifies held-out points
    opt_d, opt_g = torch.optim.Adam(d.parameters(), lr=1e-2), torch.optim.Adam(g.parameters(), lr=1e-3)
    step = gan.make_semi_supervised_step(g, d, opt_g, opt_d, x_lab, y_lab, latent_dim=2)
    fit(step, x_all[6:400], steps=200, batch_size=64, progress=False)
    with torch.no_grad():
        acc = float((d(x_all[400:]).argmax(1) == y_all[400:]).float().mean())
    assert acc > 0.9


@pytest.mark.parametrize("beta", [0.2, 0.5, 0.9])
def test_adagan_component_minimises_every_f_divergence_of_the_mixture(beta):  # prop-gan-adagan-reweighting
    """Q* = (lambda p - (1 - beta) g)_+ / beta against a numerical minimisation (scipy SLSQP) of
    D_f((1 - beta) g + beta Q || p) over the simplex, for several strictly convex f."""
    from scipy.optimize import minimize

    from gencore.divergences import f_divergence

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7))
    g = np.array([0.45, 0.3, 0.2, 0.05, 0.0, 0.0, 0.0])  # the mixture misses three points
    q_star = gan.adagan_optimal_component(torch.tensor(p), torch.tensor(g), beta).numpy()
    assert q_star.sum() == pytest.approx(1.0, abs=1e-12) and (q_star >= 0).all()
    # independent lambda*: bisection on sum_i (lam p_i - (1 - beta) g_i)_+ = beta
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.clip(mid * p - (1 - beta) * g, 0, None).sum() < beta else (lo, mid)
    np.testing.assert_allclose(q_star, np.clip(lo * p - (1 - beta) * g, 0, None) / beta, atol=1e-9)
    for name in ("kl", "reverse_kl", "js", "hellinger", "pearson"):
        def objective(q):
            mix = (1 - beta) * g + beta * np.clip(q, 0, None)
            return float(f_divergence(name, torch.tensor(mix / mix.sum()), torch.tensor(p)))
        best = min((minimize(objective, x0, method="SLSQP", bounds=[(0, 1)] * 7,
                             constraints=[{"type": "eq", "fun": lambda q: q.sum() - 1}],
                             options={"ftol": 1e-14, "maxiter": 500})
                    for x0 in (np.full(7, 1 / 7), p, rng.dirichlet(np.ones(7)))), key=lambda r: r.fun)
        assert objective(q_star) <= best.fun + 1e-7, name
        np.testing.assert_allclose(np.clip(best.x, 0, None), q_star, atol=2e-3, err_msg=name)
        # a wrong answer is worse: the data itself and the uniform distribution
        assert objective(q_star) < objective(p) - 1e-4 and objective(q_star) < objective(np.full(7, 1 / 7)) - 1e-4


def test_adagan_component_is_the_weights_for_the_empirical_distribution():  # prop-gan-adagan-reweighting
    g = torch.tensor([0.4, 0.3, 0.2, 0.1, 0.0, 0.0], dtype=torch.float64)
    p = torch.full((6,), 1 / 6, dtype=torch.float64)
    for beta in (0.25, 0.5, 1.0):
        np.testing.assert_allclose(gan.adagan_optimal_component(p, g, beta).numpy(),
                                   gan.adagan_weights(6 * g, beta).numpy(), atol=1e-12)
    # beta_t = 1/t gives the uniform mixture of T components
    alphas = [1.0]
    for t in range(2, 6):
        alphas = gan.mixture_weights_after_round(alphas, 1 / t)
    np.testing.assert_allclose(alphas, np.full(5, 1 / 5), rtol=1e-12)
    with pytest.raises(ValueError, match="p_mix must be a non-empty 1-D probability vector"):
        gan.adagan_optimal_component(p, torch.ones(6, dtype=torch.float64), 0.5)


# --------------------------------------------------------------------------- the non-saturating gradient
def test_generator_gradients_at_the_optimal_discriminator():  # prop-gan-ns-gradient
    """Finite differences, with D_0 = D*(theta_0) held fixed, of the two generator losses against those of
    2 JS and KL(p_theta||p_data) - 2 JS, every integral by scipy quadrature."""
    mix = GaussianMixture1D([0.5, 0.5], [-2.0, 2.0], [0.6, 0.6])
    pd = lambda x: 0.5 * stats.norm.pdf(x, -2, 0.6) + 0.5 * stats.norm.pdf(x, 2, 0.6)  # noqa: E731
    mu0, s0 = 0.5, 1.2
    d0 = lambda x: pd(x) / (pd(x) + stats.norm.pdf(x, mu0, s0))  # noqa: E731
    quad = lambda f: integrate.quad(f, -12, 12, points=[-2.0, 0.0, 2.0], limit=400, epsabs=1e-13)[0]  # noqa: E731

    def losses(mu, s):
        q = lambda x: stats.norm.pdf(x, mu, s)  # noqa: E731
        return quad(lambda x: q(x) * np.log1p(-d0(x))), quad(lambda x: -q(x) * np.log(d0(x)))

    def js(mu, s):
        q = lambda x: stats.norm.pdf(x, mu, s)  # noqa: E731
        m = lambda x: 0.5 * (pd(x) + q(x))  # noqa: E731
        return quad(lambda x: 0.5 * pd(x) * np.log(pd(x) / m(x)) + 0.5 * q(x) * np.log(q(x) / m(x)))

    def rkl(mu, s):
        return quad(lambda x: stats.norm.pdf(x, mu, s) * (stats.norm.logpdf(x, mu, s) - np.log(pd(x))))

    h = 1e-4
    for i in (0, 1):
        e = np.array([h * (i == 0), h * (i == 1)])
        fd = lambda f: (f(mu0 + e[0], s0 + e[1]) - f(mu0 - e[0], s0 - e[1])) / (2 * h)  # noqa: E731
        g_mm = fd(lambda a, b: losses(a, b)[0])
        g_ns = fd(lambda a, b: losses(a, b)[1])
        assert g_mm == pytest.approx(2 * fd(js), abs=1e-6)
        assert g_ns == pytest.approx(fd(rkl) - 2 * fd(js), abs=1e-6)
    # gencore's JSD on a grid agrees with the quadrature used above
    x = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    q = GaussianMixture1D([1.0], [mu0], [s0]).pdf(x)
    assert float(gan.jensen_shannon_on_grid(mix.pdf(x), q, x)) == pytest.approx(js(mu0, s0), abs=1e-7)


def test_jensen_shannon_on_grid_broadcasts_over_a_family():
    x = torch.linspace(-10, 10, 4001, dtype=torch.float64)
    p = GaussianMixture1D([1.0], [0.0], [1.0]).pdf(x)
    family = torch.stack([GaussianMixture1D([1.0], [m], [1.0]).pdf(x) for m in (0.0, 1.0, 3.0)])
    batch = gan.jensen_shannon_on_grid(p, family, x)
    assert batch.shape == (3,)
    for row, value in zip(family, batch):
        assert float(value) == pytest.approx(float(gan.jensen_shannon_on_grid(p, row, x)), abs=1e-14)
    with pytest.raises(ValueError, match="last dimension"):
        gan.jensen_shannon_on_grid(p, family[:, :10], x)


def test_binned_js_matches_scipy_on_the_histograms():
    from scipy.spatial.distance import jensenshannon

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5000, generator=g), 0.5 + torch.randn(4000, generator=g)
    ha = np.histogram(a.clamp(-3, 3).numpy(), bins=30, range=(-3, 3))[0]
    hb = np.histogram(b.clamp(-3, 3).numpy(), bins=30, range=(-3, 3))[0]
    expected = jensenshannon(ha / ha.sum(), hb / hb.sum()) ** 2  # scipy returns the square root (nats)
    assert float(gan.binned_js(a, b, lo=-3, hi=3, bins=30)) == pytest.approx(expected, rel=1e-6)
    rows = gan.binned_js(torch.stack([a[:4000], b]), b, lo=-3, hi=3, bins=30)
    assert rows.shape == (2,) and float(rows[1]) == pytest.approx(0.0, abs=1e-15)


# --------------------------------------------------------------------------- seed ensembles
def test_seed_ensemble_members_are_independent_networks():
    torch.manual_seed(0)
    ens = gan.SeedEnsemble(3, [2, 8, 1], activation="leaky_relu", logits=True)
    x = torch.randn(12, 2)
    out = ens(x)
    assert out.shape == (12,)
    # member j only sees rows 4j..4j+3: changing another member's rows does not change its output
    x2 = x.clone()
    x2[4:] += 10.0
    torch.testing.assert_close(ens(x2)[:4], out[:4])
    # gradients of one member's loss reach only that member's slice of the weights
    ens(x)[:4].sum().backward()
    w_grad = ens.net[0].weight.grad
    assert w_grad[0].abs().sum() > 0 and w_grad[1:].abs().sum() == 0
    stacked = gan.SeedEnsemble(3, [2, 8, 2], stacked=True)
    y = stacked(torch.randn(5, 6))
    assert y.shape == (5, 3, 2) and stacked.members(y).shape == (3, 5, 2)
    with pytest.raises(ValueError, match="divisible by k=3"):
        ens(torch.randn(10, 2))
    with pytest.raises(ValueError, match="stacked=True"):
        stacked(torch.randn(5, 4))
    d = gan.SeedEnsembleDiscriminator(3, 4, (8,), n_outputs=5)
    assert d(torch.rand(6, 4)).shape == (6, 5) and d.features(torch.rand(6, 4)).shape == (6, 8)


def test_seed_ensemble_trains_like_separate_runs():
    """With plain SGD the K members of one fit call follow exactly the K runs a loop would do (Adam adds
    only its eps): member 1 of the ensemble equals a network trained alone on the same rows."""
    torch.manual_seed(0)
    ens = gan.SeedEnsemble(2, [1, 4, 1])
    single = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        single[0].weight.copy_(ens.net[0].weight[1].T); single[0].bias.copy_(ens.net[0].bias[1, 0])
        single[2].weight.copy_(ens.net[2].weight[1].T); single[2].bias.copy_(ens.net[2].bias[1, 0])
    opt_e, opt_s = torch.optim.SGD(ens.parameters(), lr=0.1), torch.optim.SGD(single.parameters(), lr=0.1)
    for _ in range(20):
        x = torch.randn(16, 1)
        y = 2 * x
        loss_e = 2 * ((ens(x) - y) ** 2).mean()   # x 2 = K: undo the mean over members
        opt_e.zero_grad(); loss_e.backward(); opt_e.step()
        loss_s = ((single(x[8:]) - y[8:]) ** 2).mean()
        opt_s.zero_grad(); loss_s.backward(); opt_s.step()
    torch.testing.assert_close(ens.net[2].weight[1].T, single[2].weight, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- the chapters' criteria fail for an untrained model
def test_mode_coverage_separates_untrained_collapsed_and_covering():
    from gencore.data import toy_2d, toy_2d_modes

    spec = toy_2d_modes("ring8")
    torch.manual_seed(0)
    untrained = gan.mlp_generator(2, 2, hidden=(64, 64))
    x_untrained = gan.sample_generator(untrained, 10_000, 2, seed=1)
    cov = gan.CollapseCheck.of(x_untrained, spec.centers, spec.std, min_count=50)
    assert cov.failed and not cov.collapsed
    assert not cov.covers(7, 0.3)  # ch08's ring check
    assert not cov.covers(8, 0.2)  # ch08's AdaGAN check
    data = toy_2d("ring8", 10_000, seed=0)
    assert gan.CollapseCheck.of(data, spec.centers, spec.std, min_count=50).covers(8, 0.9)
    # a generator with good samples on two modes only: collapsed, not failed
    two = spec.centers[torch.randint(2, (5000,))].float() + spec.std * torch.randn(5000, 2)
    two_cov = gan.CollapseCheck.of(two, spec.centers, spec.std, min_count=25)
    assert two_cov.collapsed and not two_cov.failed and two_cov.modes == 2


def test_one_d_gan_checks_fail_for_an_untrained_generator():
    """ch07's criteria (binned JSD <= 0.08 nats; 40-60% of the samples left of 0) reject untrained generators."""
    from gencore.data import mixture_1d

    mix = mixture_1d("bimodal")
    fresh = mix.sample(20_000, seed=12).double()
    for seed in range(3):
        torch.manual_seed(seed)
        g = gan.SeedEnsemble(5, [2, 64, 64, 1])
        samples = g.members(gan.sample_generator(g, 5 * 20_000, 2, seed=11).double()).squeeze(-1)
        js = gan.binned_js(samples, fresh, lo=-4.5, hi=4.5)
        assert (js > 0.08).all()
    # a generator that learned one mode fails the balance check but has a JSD near that of N(2, 0.6^2)
    one_mode = 2.0 + 0.6 * torch.randn(20_000, dtype=torch.float64)
    assert float((one_mode < 0).double().mean()) < 0.4
    assert float(gan.binned_js(one_mode, fresh, lo=-4.5, hi=4.5)) > 0.2
