"""Tests of the chapter "Combining models" (book/14_combining_models.ipynb) and its modules
gencore.vae (beta-ELBO, free bits, two views), gencore.pixelvae, gencore.avb, gencore.multimodal
and gencore.vrnn, against independent computations (torch.distributions, scipy, enumeration),
and of the chapter's criteria fed a wrong answer."""
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.stats
import torch
from torch import distributions as D

import gencore
from gencore import ClaimError, check_over_seeds
from gencore.avb import Critic, GaussianEncoder, ImplicitEncoder, ProductToy, avb_step, gaussian_step, grid_tv
from gencore.exercises import EXERCISES, check
from gencore.gan import optimal_discriminator
from gencore.multimodal import (MultimodalVAE, cross_reconstruction_error, halves, marginal_bce,
                                product_of_experts)
from gencore.pixelvae import PixelVAE, reconstruction_gain
from gencore.train import fit, make_step
from gencore.vae import (VAE, active_units, beta_elbo, elbo, expected_elbo_discrete, joint_kl_discrete,
                         kl_free_bits, kl_normal, kl_normal_per_dim)
from gencore.vrnn import VRNN, iid_gaussian_log_likelihood, switching_sine


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def binary_digits(n=64, seed=0):
    return (torch.rand(n, 64, generator=gen(seed)) > 0.6).float()


# --------------------------------------------------------------------------- beta-VAE
def test_beta_elbo_at_one_is_the_plain_elbo():
    # prop-beta-vae-one (the beta = 1 sweep point) equals the plain VAE objective
    torch.manual_seed(0)
    model = VAE(64, 4, (32,))
    x = binary_digits()
    got = beta_elbo(model, x, 1.0, generator=gen(3))
    torch.testing.assert_close(got, elbo(model, x, generator=gen(3)), rtol=0, atol=0)
    # independently: the same draws, torch.distributions for the likelihood and the KL
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=gen(3))
    rec = D.Bernoulli(logits=model.decode(z)).log_prob(x).sum(-1)
    kl = D.kl_divergence(D.Normal(mu, (0.5 * logvar).exp()), D.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(got, rec - kl, rtol=1e-5, atol=1e-4)
    for beta in (0.5, 2.0, 4.0):
        torch.testing.assert_close(beta_elbo(model, x, beta, generator=gen(3)), rec - beta * kl, rtol=1e-5, atol=1e-4)


def test_beta_elbo_orders_around_the_elbo():
    # prop-beta-vae-one (beta >= 1 below the ELBO, beta <= 1 above
    torch.manual_seed(1)
    model = VAE(64, 4, (32,))
    x = binary_digits(seed=1)
    plain = elbo(model, x, generator=gen(5))
    assert bool((beta_elbo(model, x, 3.0, generator=gen(5)) <= plain + 1e-6).all())
    assert bool((beta_elbo(model, x, 0.3, generator=gen(5)) >= plain - 1e-6).all())


def test_beta_elbo_rejects_bad_beta_and_free_bits():
    model = VAE(64, 4, (32,))
    with pytest.raises(ValueError, match="beta"):
        beta_elbo(model, binary_digits(), -1.0)
    with pytest.raises(ValueError, match="free_bits"):
        kl_free_bits(torch.zeros(3, 2), torch.zeros(3, 2), -0.1)


def test_kl_free_bits_matches_the_clamped_batch_mean():
    mu = torch.tensor([[0.1, 2.0], [-0.1, 1.0], [0.0, 1.5]], requires_grad=True)
    logvar = torch.zeros(3, 2)
    per_dim = D.kl_divergence(D.Normal(mu, 1.0), D.Normal(0.0, 1.0)).mean(0)
    got = kl_free_bits(mu, logvar, 0.5)
    torch.testing.assert_close(got, per_dim.clamp_min(0.5).sum())
    torch.testing.assert_close(kl_free_bits(mu, logvar, 0.0), kl_normal(mu, logvar).mean())
    torch.testing.assert_close(kl_normal_per_dim(mu, logvar).sum(-1), kl_normal(mu, logvar))
    got.backward()
    assert torch.all(mu.grad[:, 0] == 0)  # coordinate 0 is below its free bits: no gradient
    assert torch.all(mu.grad[:, 1] != 0)


def test_active_units_counts_coordinates_whose_mean_varies():
    g = gen(2)
    mu = torch.cat([torch.randn(200, 3, generator=g), 0.01 * torch.randn(200, 2, generator=g)], 1)
    assert active_units(mu) == 3
    assert active_units(mu, threshold=10.0) == 0
    with pytest.raises(ValueError, match="mu"):
        active_units(torch.zeros(1, 3))


def test_beta_sweep_criterion_fails_for_a_wrong_sweep():
    # the chapter's criterion: rate, distortion and active units all ordered; the same model at both ends fails
    same = (3.0, 16.0, 8)
    with pytest.raises(ClaimError):
        check_over_seeds("beta trades rate for distortion", lambda s: same[0] > same[0] and same[1] < same[1],
                         seeds=(0, 1, 2))


# --------------------------------------------------------------------------- two views
def _random_model(seed):
    g = gen(seed)
    def simplex(*shape):
        return torch.softmax(1.5 * torch.randn(*shape, generator=g, dtype=torch.float64), -1)
    return simplex(5), simplex(3), simplex(3, 5), simplex(5, 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_expected_elbo_is_minus_joint_kl_minus_data_entropy(seed):
    # prop-elbo-joint-matching, by enumeration with numpy and scipy.stats.entropy
    p_data, p_z, p_x_z, q_z_x = _random_model(seed)
    P, Z, PX, Q = (t.numpy() for t in (p_data, p_z, p_x_z, q_z_x))
    elbo_np = sum(P[x] * Q[x, z] * (np.log(Z[z] * PX[z, x]) - np.log(Q[x, z])) for x in range(5) for z in range(3))
    q_joint = (P[:, None] * Q).ravel()
    p_joint = (Z[:, None] * PX).T.ravel()
    joint_np = scipy.stats.entropy(q_joint, p_joint)
    assert float(expected_elbo_discrete(p_data, p_z, p_x_z, q_z_x)) == pytest.approx(elbo_np, abs=1e-12)
    assert float(joint_kl_discrete(p_data, p_z, p_x_z, q_z_x)) == pytest.approx(joint_np, abs=1e-12)
    assert elbo_np == pytest.approx(-joint_np - scipy.stats.entropy(P), abs=1e-12)
    p_x = Z @ PX
    post = (Z[:, None] * PX).T / p_x[:, None]
    split = scipy.stats.entropy(P, p_x) + sum(P[x] * scipy.stats.entropy(Q[x], post[x]) for x in range(5))
    assert joint_np == pytest.approx(split, abs=1e-12)


def test_two_views_reject_non_distributions():
    p_data, p_z, p_x_z, q_z_x = _random_model(0)
    with pytest.raises(ValueError, match="q_z_given_x"):
        expected_elbo_discrete(p_data, p_z, p_x_z, 2 * q_z_x)
    with pytest.raises(ValueError, match="shapes"):
        joint_kl_discrete(p_data, p_z, p_x_z, q_z_x.T.contiguous().softmax(-1))


# --------------------------------------------------------------------------- PixelVAE
def test_pixelvae_decoder_is_causal_in_x():
    torch.manual_seed(0)
    model = PixelVAE(8, 4, 32, "pixelcnn", channels=8, n_layers=2)
    x = binary_digits(1).requires_grad_(True)
    z = torch.randn(1, 4)
    for i in (0, 9, 27, 63):
        (grad,) = torch.autograd.grad(model.logits(x, z)[0, i], x)
        assert torch.all(grad[0, i:] == 0), f"logit {i} depends on pixels at or after {i}"


def test_pixelvae_likelihood_is_a_normalised_bernoulli_product():
    torch.manual_seed(1)
    model = PixelVAE(8, 4, 32, "pixelcnn", channels=8, n_layers=1)
    x = binary_digits(5)
    z = torch.randn(3, 5, 4, generator=gen(1))
    ll = model.log_likelihood(x, z)
    assert ll.shape == (3, 5)
    ref = D.Bernoulli(logits=model.logits(x, z[1])).log_prob(x).sum(-1)
    torch.testing.assert_close(ll[1], ref)
    # PixelVAE plugs into the bounds of gencore.vae
    assert beta_elbo(model, x, 1.0, free_bits=0.5).shape == (5,)


def test_pixelvae_rejects_bad_shapes():
    model = PixelVAE(8, 4, 32)
    with pytest.raises(ValueError, match="flat binary images"):
        model.encode(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="decoder"):
        PixelVAE(8, 4, 32, "lstm")


def test_reconstruction_gain_is_zero_for_a_decoder_that_ignores_z():
    # the chapter's criterion fails for a collapsed model: with z cut out of the decoder G = 0 exactly
    torch.manual_seed(2)
    model = PixelVAE(8, 4, 32, "pixelcnn", channels=8, n_layers=1)
    with torch.no_grad():
        model.z_map.weight.zero_()
    gain = reconstruction_gain(model, binary_digits(32))
    assert gain == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ClaimError):
        check_over_seeds("free bits: gain ratio", lambda s: gain / 1.0, seeds=(0, 1, 2), at_least=1.2)


def test_free_bits_keep_the_kl_up_over_seeds():
    # a small version of the chapter's experiment: free bits hold the rate near lambda * d
    x = (gencore.data.load_digits()[0] > 0.5).float()[:600]

    def kl_after_training(seed):
        gencore.seed_everything(seed)
        model = PixelVAE(8, 4, 32, "pixelcnn", channels=8, n_layers=1)
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        g = gen(seed)
        fit(make_step(lambda b: -beta_elbo(model, b, free_bits=0.5, generator=g).mean(), opt), x,
            steps=40, batch_size=64, seed=seed, progress=False)
        with torch.no_grad():
            return float(kl_normal(*model.encode(x)).mean())

    check_over_seeds("free bits keep the KL above 1.2 nats", kl_after_training, seeds=(0, 1, 2), at_least=1.2)


# --------------------------------------------------------------------------- AVB
def test_optimal_critic_is_the_log_density_ratio():
    # prop-avb-optimal-critic (pointwise maximiser of a log s(t) + b log(1 - s(t)), by scipy
    rng = np.random.default_rng(0)
    for a, b in rng.uniform(0.05, 3.0, size=(6, 2)):
        res = scipy.optimize.minimize_scalar(lambda t: -(a * -np.logaddexp(0, -t) + b * -np.logaddexp(0, t)),
                                             bounds=(-20, 20), method="bounded", options={"xatol": 1e-10})
        d_star = optimal_discriminator(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
        assert float(torch.logit(d_star)) == pytest.approx(math.log(a / b), abs=1e-9)
        assert res.x == pytest.approx(math.log(a / b), abs=1e-5)


def test_toy_posterior_grid_matches_quadrature():
    toy = ProductToy(0.6)
    grid = toy.posterior_grid(1.0, n=30)
    assert float(grid.sum()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(grid, grid.flip(0).flip(1))  # p(z | x) = p(-z | x)
    def density(z2, z1):
        return math.exp(-0.5 * (z1 * z2 - 1.0) ** 2 / 0.36 - 0.5 * (z1 ** 2 + z2 ** 2))
    total, _ = scipy.integrate.dblquad(density, -3, 3, -3, 3)
    cell, _ = scipy.integrate.dblquad(density, 0.8, 1.0, 0.8, 1.0)  # cell (19, 19) is [0.8, 1.0]^2
    assert float(grid[19, 19]) == pytest.approx(cell / total, rel=2e-3)


def test_grid_tv_scores_exact_samples_low_and_one_mode_high():
    toy = ProductToy(0.6)
    p = toy.posterior_grid(1.0)
    g = gen(0)
    idx = torch.multinomial(p.reshape(-1), 50000, replacement=True, generator=g)
    exact = (torch.stack([idx // 30, idx % 30], 1).double() + 0.5) * 0.2 - 3.0
    assert grid_tv(exact, p) < 0.05
    one_mode = exact[exact[:, 0] > 0]
    assert grid_tv(one_mode, p) > 0.45
    assert grid_tv(exact + 10.0, p) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="samples"):
        grid_tv(torch.zeros(5, 3), p)


def test_avb_criterion_fails_for_an_untrained_encoder():
    toy = ProductToy(0.6)
    x = torch.tensor([[1.0]]).expand(5000, 1)
    p = toy.posterior_grid(1.0)

    def ratio(seed):
        torch.manual_seed(seed)
        untrained = ImplicitEncoder()
        with torch.no_grad():
            return grid_tv(untrained(x, gen(seed)), p) / grid_tv(ImplicitEncoder()(x, gen(seed + 10)), p)

    with pytest.raises(ClaimError):
        check_over_seeds("AVB beats an untrained encoder", ratio, seeds=(0, 1, 2), at_most=0.9)


def test_avb_and_gaussian_steps_improve_their_objectives():
    toy = ProductToy(0.6)
    data = torch.tensor([[1.0], [-1.0]]).repeat(128, 1)
    torch.manual_seed(0)
    enc, critic = ImplicitEncoder(), Critic()
    h = fit(avb_step(toy, enc, critic, torch.optim.Adam(enc.parameters(), 2e-3),
                     torch.optim.Adam(critic.parameters(), 4e-3), generator=gen(0)),
            data, steps=150, batch_size=128, progress=False)
    assert h["critic"][-20:].mean() < 2 * math.log(2) + 0.05  # the critic beats chance (2 log 2 = 1.386)
    ge = GaussianEncoder(toy)
    hg = fit(gaussian_step(ge, torch.optim.Adam(ge.parameters(), 2e-3), generator=gen(1)),
             data, steps=150, batch_size=128, progress=False)
    assert hg["elbo"][-20:].mean() > hg["elbo"][:20].mean()


# --------------------------------------------------------------------------- multimodal
def test_product_of_gaussian_experts_matches_quadrature():
    # prop-poe-gaussians (the normalised product of densities (scipy quadrature) is the formula's Gaussian
    mus = torch.tensor([[-1.0], [0.5], [2.0]], dtype=torch.float64)
    logvars = torch.tensor([[0.3], [-0.7], [1.2]], dtype=torch.float64)
    mu, logvar = product_of_experts(mus, logvars)
    sds = np.exp(0.5 * logvars[:, 0].numpy())
    def prod(z):
        return float(np.prod(scipy.stats.norm.pdf(z, mus[:, 0].numpy(), sds)))
    norm, _ = scipy.integrate.quad(prod, -20, 20)
    mean, _ = scipy.integrate.quad(lambda z: z * prod(z) / norm, -20, 20)
    var, _ = scipy.integrate.quad(lambda z: (z - mean) ** 2 * prod(z) / norm, -20, 20)
    assert float(mu) == pytest.approx(mean, abs=1e-8)
    assert float(logvar.exp()) == pytest.approx(var, abs=1e-8)


def test_product_of_experts_prior_and_mask():
    g = gen(4)
    mu, logvar = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    with_prior = product_of_experts(torch.cat([mu, torch.zeros(1, 5, 3)]), torch.cat([logvar, torch.zeros(1, 5, 3)]))
    for a, b in zip(product_of_experts(mu, logvar, prior=True), with_prior):
        torch.testing.assert_close(a, b)
    mask = torch.tensor([[1.0] * 5, [0.0] * 5])
    for a, b in zip(product_of_experts(mu, logvar, mask=mask), (mu[0], logvar[0])):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="no expert"):
        product_of_experts(mu, logvar, mask=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="same shape"):
        product_of_experts(mu, logvar[..., :2])


def test_poe_exercise_reference_passes_and_mistakes_fail():
    ex = EXERCISES["product_of_experts"]
    assert check("product_of_experts", lambda m, lv: product_of_experts(m, lv)).passed
    assert len(ex.mistakes) >= 3
    # the reference passing and every mistake's hint: tests/test_exercises.py, for every registered exercise


def test_mvae_single_view_posterior_is_prior_times_expert():
    torch.manual_seed(0)
    model = MultimodalVAE((32, 32), 4, 16)
    top, bottom = halves(binary_digits(6))
    mu1, lv1 = model.encoders[0](top).chunk(2, -1)
    for a, b in zip(model.posterior(top), product_of_experts(mu1[None], lv1[None], prior=True)):
        torch.testing.assert_close(a, b)
    terms = model.elbo_terms(top, bottom, generator=gen(0))
    assert set(terms) == {"joint", "view1", "view2"} and all(t.shape == (6,) for t in terms.values())
    with pytest.raises(ValueError, match="exactly one view"):
        model.cross_generate(top, bottom)
    with pytest.raises(ValueError, match="flat 8x8"):
        halves(torch.zeros(3, 63))


def test_cross_generation_criterion_fails_for_an_untrained_model():
    x = (gencore.data.load_digits()[0] > 0.5).float()
    top, bottom = halves(x)
    base = marginal_bce(bottom[:1500], bottom[1500:])

    def ratio(seed):
        torch.manual_seed(seed)
        return cross_reconstruction_error(MultimodalVAE((32, 32), 8, 64), top[1500:], bottom[1500:]) / base

    with pytest.raises(ClaimError):
        check_over_seeds("cross-generation beats the marginal control", ratio, seeds=(0, 1, 2), at_most=0.95)


# --------------------------------------------------------------------------- VRNN
def test_switching_sine_follows_its_definition():
    x, states = switching_sine(400, 30, switch_prob=0.2, noise=0.1, seed=1)
    assert x.shape == (400, 30, 1) and states.shape == (400, 30)
    switch_rate = float((states[:, 1:] != states[:, :-1]).double().mean())
    assert switch_rate == pytest.approx(0.2, abs=0.02)
    assert float(x.abs().max()) < 1.0 + 6 * 0.1
    with pytest.raises(ValueError, match="length"):
        switching_sine(3, 0)


def test_iid_control_matches_scipy():
    x, _ = switching_sine(50, 10, seed=2)
    v = x.reshape(-1).double().numpy()
    ref = scipy.stats.norm.logpdf(v, v.mean(), v.std()).mean()
    assert iid_gaussian_log_likelihood(x, x) == pytest.approx(ref, abs=1e-4)


def test_vrnn_elbo_of_one_step_is_a_vae_elbo():
    torch.manual_seed(0)
    model = VRNN(1, 2, 8, 8)
    x = torch.randn(5, 1, 1, generator=gen(0))
    got = model.elbo(x, generator=gen(1))
    h = torch.zeros(5, 8)
    fx = model.phi_x(x[:, 0])
    mu0, lv0 = model.prior(h).chunk(2, -1)
    mu, lv = model.encoder(torch.cat([fx, h], -1)).chunk(2, -1)
    z = mu + (0.5 * lv).exp() * torch.randn(mu.shape, generator=gen(1))
    m, s = model.decoder(torch.cat([model.phi_z(z), h], -1)).chunk(2, -1)
    ref = D.Normal(m, (0.5 * s).exp()).log_prob(x[:, 0]).sum(-1) - D.kl_divergence(
        D.Normal(mu, (0.5 * lv).exp()), D.Normal(mu0, (0.5 * lv0).exp())).sum(-1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="batch, time"):
        model.elbo(torch.zeros(5, 3))


def test_vrnn_criterion_fails_for_an_untrained_model():
    x, _ = switching_sine(96, 12, seed=0)
    control = iid_gaussian_log_likelihood(x[:64], x[64:])

    def advantage(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return float(VRNN(1, 2, 32, 32).elbo(x[64:], generator=gen(seed)).mean()) / 12 - control

    with pytest.raises(ClaimError):
        check_over_seeds("VRNN beats the memoryless control", advantage, seeds=(0, 1, 2), at_least=0.3)
