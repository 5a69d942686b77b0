"""Tests of gencore.vae against independent computations (closed forms, torch.distributions,
scikit-learn's probabilistic PCA, seeded Monte Carlo, enumeration)."""
import math

import numpy as np
import pytest
import torch
from torch import distributions as D

from gencore.train import fit, make_step
from gencore.vae import (
    VAE,
    CategoricalVAE,
    LinearGaussian,
    elbo,
    evaluate_bounds,
    iwae_bound,
    kl_mvn,
    kl_normal,
    log_bernoulli,
    log_normal_diag,
    reparameterize,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def exact_model():
    """A linear-Gaussian model with a full (non-diagonal) posterior covariance, and data from it."""
    model = LinearGaussian.random(6, 3, noise_var=0.4, orthogonal=False, seed=1)
    return model, model.sample(8, generator=gen(2))


@pytest.fixture
def ppca_model():
    """Orthogonal columns: the exact posterior is diagonal."""
    model = LinearGaussian.random(6, 3, noise_var=0.4, orthogonal=True, seed=3)
    return model, model.sample(8, generator=gen(4))


# ------------------------------------------------------------------ the exact model
def test_linear_gaussian_evidence_and_posterior_match_joint_gaussian(exact_model):  # prop-elbo-linear-gaussian
    """Evidence and posterior from the joint Gaussian of (z, x) by Schur complements."""
    model, x = exact_model
    W, b, s2 = model.W, model.b, model.noise_var
    d, Dx = model.z_dim, model.x_dim
    cov_xx = W @ W.T + s2 * torch.eye(Dx, dtype=x.dtype)
    ref = D.MultivariateNormal(b, covariance_matrix=cov_xx).log_prob(x)
    torch.testing.assert_close(model.log_evidence(x), ref)
    # p(z|x) from conditioning the joint: mean = W^T cov_xx^{-1} (x - b), cov = I - W^T cov_xx^{-1} W
    gain = W.T @ torch.linalg.inv(cov_xx)
    mean, cov = model.posterior(x)
    torch.testing.assert_close(mean, (x - b) @ gain.T)
    torch.testing.assert_close(cov, torch.eye(d, dtype=x.dtype) - gain @ W)


def test_ppca_fit_matches_sklearn_log_likelihood():  # prop-elbo-linear-gaussian
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    x = load_digits().data[:400] / 16.0
    n = len(x)
    pca = PCA(n_components=5).fit(x)  # sklearn divides the covariance by n - 1
    model = LinearGaussian.fit_ppca(torch.as_tensor(x), 5)
    assert model.noise_var * n / (n - 1) == pytest.approx(pca.noise_variance_, rel=1e-6)
    # sklearn's PPCA log-likelihood of its own parameters, through our evidence
    W = torch.as_tensor(pca.components_.T * np.sqrt(pca.explained_variance_ - pca.noise_variance_))
    sk_model = LinearGaussian(W, torch.as_tensor(pca.mean_), pca.noise_variance_)
    xt = torch.as_tensor(x)
    assert float(sk_model.log_evidence(xt).mean()) == pytest.approx(pca.score(x), rel=1e-8)
    # our fit is the maximum-likelihood one: at least as good as sklearn's (n - 1) version
    assert float(model.log_evidence(xt).mean()) >= pca.score(x)


def test_elbo_gap_equals_kl_to_exact_posterior(exact_model):  # thm-elbo-decomposition
    model, x = exact_model
    g = gen(5)
    for _ in range(5):
        mu = torch.randn(len(x), model.z_dim, generator=g, dtype=x.dtype)
        logvar = torch.randn(len(x), model.z_dim, generator=g, dtype=x.dtype)
        log_px = model.log_evidence(x)
        bound = model.exact_elbo(x, mu, logvar)
        assert (bound <= log_px + 1e-9).all()
        torch.testing.assert_close(log_px - bound, model.kl_to_posterior(x, mu, logvar))


def test_exact_elbo_matches_monte_carlo(exact_model):  # thm-elbo-decomposition
    model, x = exact_model
    mu, logvar = torch.zeros(len(x), 3, dtype=x.dtype), torch.full((len(x), 3), -0.5, dtype=x.dtype)
    z = reparameterize(mu, logvar, gen(6), n_samples=20_000)  # independent of gencore.vae.elbo
    single = model.log_likelihood(x, z) - 0.5 * (z**2).sum(-1) - D.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    single = single - 1.5 * math.log(2 * math.pi)
    se = single.std(0) / math.sqrt(len(single))
    assert ((single.mean(0) - model.exact_elbo(x, mu, logvar)).abs() < 5 * se).all()


def test_gap_is_zero_at_exact_posterior(ppca_model):  # thm-elbo-decomposition
    model, x = ppca_model
    mean, cov = model.posterior(x)
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-12)
    mu, logvar = model.encode(x)
    torch.testing.assert_close(model.exact_elbo(x, mu, logvar), model.log_evidence(x))
    # the joint form has zero variance at the exact posterior: every sample gives log p(x)
    torch.testing.assert_close(elbo(model, x, 3, form="joint", generator=gen(7)), model.log_evidence(x))


@pytest.mark.parametrize("form", ["kl", "joint", "entropy"])
def test_three_elbo_forms_agree(exact_model, form):  # prop-elbo-forms
    model, x = exact_model
    mu, logvar = model.encode(x)
    mu = mu + 0.3
    exact = model.exact_elbo(x, mu, logvar)
    n = 20_000
    g = gen(8)
    est = elbo(model, x, n, q=(mu, logvar), form=form, generator=g)
    # Monte-Carlo standard error from a separate batch of single-sample estimates
    single = torch.stack([elbo(model, x, 1, q=(mu, logvar), form=form, generator=g) for _ in range(200)])
    se = single.std(0) / math.sqrt(n)
    assert ((est - exact).abs() <= 6 * se + 1e-9).all()


# ------------------------------------------------------------------ Gaussian KL
def test_kl_normal_matches_torch_distributions():  # prop-elbo-kl-normal
    g = gen(9)
    mq, lq, mp, lp = (torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(4))
    ref = D.kl_divergence(D.Normal(mq, (0.5 * lq).exp()), D.Normal(mp, (0.5 * lp).exp())).sum(-1)
    torch.testing.assert_close(kl_normal(mq, lq, mp, lp), ref)
    ref0 = D.kl_divergence(D.Normal(mq, (0.5 * lq).exp()), D.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_normal(mq, lq), ref0)


def test_kl_normal_matches_monte_carlo():  # prop-elbo-kl-normal
    mq = torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64)
    lq = torch.tensor([-0.5, 0.2, 0.0], dtype=torch.float64)
    mp = torch.tensor([0.0, -0.5, 1.0], dtype=torch.float64)
    lp = torch.tensor([0.1, 0.4, -0.3], dtype=torch.float64)
    z = reparameterize(mq, lq, gen(10), n_samples=200_000)
    terms = log_normal_diag(z, mq, lq) - log_normal_diag(z, mp, lp)
    se = float(terms.std() / math.sqrt(len(terms)))
    assert abs(float(terms.mean()) - float(kl_normal(mq, lq, mp, lp))) < 5 * se


def test_kl_normal_is_zero_iff_equal_and_nonnegative():  # prop-elbo-kl-normal
    g = gen(11)
    mu, lv = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    assert torch.allclose(kl_normal(mu, lv, mu, lv), torch.zeros(10))
    assert (kl_normal(mu, lv) >= 0).all()


def test_kl_mvn_matches_torch_distributions():
    g = gen(12)
    A, B = torch.randn(3, 3, generator=g, dtype=torch.float64), torch.randn(3, 3, generator=g, dtype=torch.float64)
    Sq, Sp = A @ A.T + 0.5 * torch.eye(3, dtype=torch.float64), B @ B.T + 0.5 * torch.eye(3, dtype=torch.float64)
    mq, mp = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(3, dtype=torch.float64, generator=g)
    ref = D.kl_divergence(D.MultivariateNormal(mq, Sq), D.MultivariateNormal(mp, Sp))
    torch.testing.assert_close(kl_mvn(mq, Sq, mp, Sp), ref)


@pytest.mark.parametrize("logvar", [-30.0, -10.0, 0.0, 10.0, 30.0])
def test_numerics_finite_for_extreme_logvar(logvar):
    mu = torch.zeros(3, 4)
    lv = torch.full((3, 4), logvar)
    assert torch.isfinite(kl_normal(mu, lv)).all()
    assert torch.isfinite(kl_normal(mu, lv, mu + 1, -lv)).all()
    z = reparameterize(mu, lv, gen(0))
    assert torch.isfinite(z).all()
    assert torch.isfinite(log_normal_diag(z, mu, lv)).all()
    model = VAE(4, 4, hidden=(8,))
    x = torch.ones(3, 4)
    for form in ("kl", "joint", "entropy"):
        assert torch.isfinite(elbo(model, x, 2, q=(mu, lv), form=form, generator=gen(1))).all()
    assert torch.isfinite(iwae_bound(model, x, 4, q=(mu, lv), generator=gen(1))).all()


def test_reparameterize_moments_and_gradient():
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    lv = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    z = reparameterize(mu, lv, gen(13), n_samples=100_000)
    torch.testing.assert_close(z.mean(0), mu.detach(), atol=0.02, rtol=0)
    torch.testing.assert_close(z.var(0), lv.detach().exp(), atol=0.03, rtol=0)
    z.mean(0).sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(2, dtype=torch.float64))


def test_log_likelihoods_match_torch_distributions():  # prop-vae-gaussian-mse
    g = gen(14)
    x, m = torch.rand(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    ref = D.Normal(m, math.exp(0.5 * -1.3)).log_prob(x).sum(-1)
    torch.testing.assert_close(log_normal_diag(x, m, -1.3), ref)
    # -log N(x; m, s2 I) = |x - m|^2 / (2 s2) + D/2 log(2 pi s2): MSE up to scale and constant
    s2 = math.exp(-1.3)
    mse_form = ((x - m) ** 2).sum(-1) / (2 * s2) + 7 / 2 * math.log(2 * math.pi * s2)
    torch.testing.assert_close(-log_normal_diag(x, m, -1.3), mse_form)
    xb = torch.bernoulli(torch.full((5, 7), 0.4, dtype=torch.float64), generator=g)
    torch.testing.assert_close(log_bernoulli(xb, m), D.Bernoulli(logits=m).log_prob(xb).sum(-1))
    assert torch.isfinite(log_bernoulli(xb, 1e4 * m)).all()


# ------------------------------------------------------------------ gradient estimators
def test_pathwise_and_score_function_gradients_are_unbiased():  # prop-vae-pathwise
    """d/dmu E_{N(mu, s^2)}[z^2] = 2 mu: both estimators, different variances."""
    mu0, s = 0.7, 0.8
    g = gen(15)
    eps = torch.randn(200_000, generator=g, dtype=torch.float64)
    z = mu0 + s * eps
    pathwise = 2 * z                      # f'(z) dz/dmu
    score = z**2 * (z - mu0) / s**2       # f(z) d/dmu log q(z)
    for est in (pathwise, score):
        se = float(est.std() / math.sqrt(len(est)))
        assert abs(float(est.mean()) - 2 * mu0) < 5 * se
    assert float(pathwise.var()) < float(score.var())


def test_minibatch_estimator_is_unbiased(exact_model):  # prop-vae-minibatch
    model, _ = exact_model
    x = model.sample(40, generator=gen(16))
    mu, logvar = model.encode(x)
    full = float(model.exact_elbo(x, mu, logvar).sum())
    g = gen(17)
    n, m = len(x), 5
    ests = []
    for _ in range(4000):
        idx = torch.randperm(n, generator=g)[:m]
        ests.append(n / m * float(elbo(model, x[idx], 1, q=(mu[idx], logvar[idx]), generator=g).sum()))
    ests = np.array(ests)
    assert abs(ests.mean() - full) < 5 * ests.std() / math.sqrt(len(ests))


def test_doubly_stochastic_variance_formula_and_l1_optimal(exact_model):  # prop-vae-minibatch
    """Var = N^2/M (sigma2_data + sigma2_mc/L) for indices drawn with replacement; L = 1 best at fixed M*L."""
    model, _ = exact_model
    x = model.sample(30, generator=gen(25))
    mu, logvar = model.encode(x)
    q = (mu + 0.5, logvar + 0.5)
    exact = model.exact_elbo(x, *q)                              # per-point ELBO (the mean of one-sample estimates)
    one = elbo(model, x, 4000, q=q, form="kl", generator=gen(26))  # sanity: matches the exact ELBO
    torch.testing.assert_close(one, exact, atol=0.2, rtol=0)
    z = reparameterize(*q, gen(27), n_samples=4000)
    single = model.log_likelihood(x, z) - kl_normal(*q)          # (4000, N) one-sample estimates
    var_data, var_mc = float(exact.var(unbiased=False)), float(single.var(0).mean())
    n = len(x)
    g = gen(28)
    measured = {}
    for m, l in ((10, 1), (2, 5)):
        idx = torch.randint(n, (4000, m), generator=g)
        pick = torch.randint(4000, (4000, m, l), generator=g)
        est = n / m * single[pick, idx[..., None]].mean(-1).sum(-1)
        measured[(m, l)] = float(est.var())
        predicted = n**2 / m * (var_data + var_mc / l)
        assert measured[(m, l)] == pytest.approx(predicted, rel=0.15)
        assert float(est.mean()) == pytest.approx(float(exact.sum()), abs=5 * math.sqrt(predicted / 4000))
    assert measured[(10, 1)] < measured[(2, 5)]


# ------------------------------------------------------------------ IWAE
def test_iwae_monotone_in_k_and_approaches_log_evidence(exact_model):  # thm-vae-iwae
    model, x = exact_model
    mu, logvar = model.encode(x)
    q = (mu + 0.3, logvar + 0.2)  # a deliberately imperfect q
    log_px = model.log_evidence(x).mean()
    g = gen(18)
    means = []
    for k in (1, 4, 16, 64, 256):
        means.append(float(torch.stack([iwae_bound(model, x, k, q=q, generator=g) for _ in range(200)]).mean()))
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert means[-1] <= float(log_px) + 0.01
    assert float(log_px) - means[-1] < 0.2 * (float(log_px) - means[0])
    torch.testing.assert_close(torch.tensor(means[0], dtype=x.dtype), model.exact_elbo(x, *q).mean(), atol=0.05, rtol=0)


def test_iwae_with_one_sample_is_the_elbo_and_exact_at_posterior(ppca_model):  # thm-vae-iwae
    model, x = ppca_model
    q = model.encode(x)
    q = (q[0] - 0.2, q[1])
    torch.testing.assert_close(iwae_bound(model, x, 1, q=q, generator=gen(19)),
                               elbo(model, x, 1, q=q, form="joint", generator=gen(19)))
    torch.testing.assert_close(iwae_bound(model, x, 7, generator=gen(20)), model.log_evidence(x))
    torch.testing.assert_close(iwae_bound(model, x, 10, generator=gen(21), chunk_size=3), model.log_evidence(x))
    g = gen(21)
    chunked = torch.stack([iwae_bound(model, x, 10, q=q, generator=g, chunk_size=3) for _ in range(400)])
    whole = torch.stack([iwae_bound(model, x, 10, q=q, generator=g) for _ in range(400)])
    se = (chunked.var(0) / 400 + whole.var(0) / 400).sqrt()
    assert ((chunked.mean(0) - whole.mean(0)).abs() < 5 * se).all()


# ------------------------------------------------------------------ models
@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_vae_shapes(arch, likelihood):
    model = VAE(784, 5, hidden=(32,), likelihood=likelihood, arch=arch)
    x = torch.rand(3, 784)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 5)
    assert model.decode(torch.zeros(2, 3, 5)).shape == (2, 3, 784)
    assert model.elbo(x, n_samples=2).shape == (3,)
    assert model.iwae_bound(x, 4).shape == (3,)
    s = model.sample(6, generator=gen(0))
    assert s.shape == (6, 784)
    if likelihood == "bernoulli":
        assert (s >= 0).all() and (s <= 1).all()


def test_conditional_vae_needs_cond():
    model = VAE(10, 2, hidden=(8,), cond_dim=3)
    x, c = torch.rand(4, 10), torch.eye(3)[[0, 1, 2, 0]]
    assert model.elbo(x, cond=c).shape == (4,)
    assert model.sample(4, cond=c).shape == (4, 10)
    with pytest.raises(ValueError, match="cond must be"):
        model.elbo(x)
    with pytest.raises(ValueError, match="unconditional"):
        VAE(10, 2, hidden=(8,)).elbo(x, cond=c)


def test_vae_training_improves_elbo_and_iwae_above_elbo():
    torch.manual_seed(0)
    g = gen(22)
    protos = (torch.rand(4, 20, generator=g) < 0.5).float()  # four noisy prototypes: the latent matters
    x = protos[torch.randint(4, (256,), generator=g)]
    x = (x + (torch.rand(256, 20, generator=g) < 0.05).float()) % 2
    model = VAE(20, 2, hidden=(16,))
    before = evaluate_bounds(model, x, k=20)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    fit(make_step(lambda b: -model.elbo(b).mean(), opt), x, steps=150, batch_size=64, progress=False)
    after = evaluate_bounds(model, x, k=20)
    assert after.elbo > before.elbo + 1.0
    assert after.iwae >= after.elbo
    assert after.nll == -after.iwae


def test_categorical_vae_elbo_below_exact_evidence_by_enumeration():
    """Tiny categorical VAE: log p(x) and the ELBO by enumerating all codes."""
    torch.manual_seed(0)
    model = CategoricalVAE(6, n_latent=2, n_classes=3, hidden=(8,)).double()
    x = torch.bernoulli(torch.full((4, 6), 0.5, dtype=torch.float64), generator=gen(23))
    codes = torch.cartesian_prod(torch.arange(3), torch.arange(3))  # (9, 2)
    y = torch.nn.functional.one_hot(codes, 3).double()
    loglik = log_bernoulli(x[:, None, :], model.decode(y)[None])  # (4, 9)
    log_px = torch.logsumexp(loglik - math.log(9), dim=1)
    logq = torch.log_softmax(model.encode(x), -1)  # (4, 2, 3)
    logq_codes = logq[:, 0, codes[:, 0]] + logq[:, 1, codes[:, 1]]  # (4, 9)
    exact = (logq_codes.exp() * (loglik - logq_codes + math.log(1 / 9))).sum(1)
    est = model.elbo(x, n_samples=4000, generator=gen(24))
    torch.testing.assert_close(est, exact, atol=0.05, rtol=0)
    assert (exact <= log_px + 1e-9).all()
    assert model.relaxed_elbo(x, 0.5).shape == (4,)


@pytest.mark.cuda
def test_vae_follows_cuda_device(cuda_device):
    model = VAE(784, 8, hidden=(32,), arch="conv").to(cuda_device)
    x = torch.rand(5, 784, device=cuda_device)
    g = torch.Generator(device=cuda_device).manual_seed(0)
    assert model.elbo(x, generator=g).device.type == "cuda"
    assert model.sample(3, generator=g).device.type == "cuda"
    b = evaluate_bounds(model, x, k=10, batch_size=2)
    assert math.isfinite(b.iwae)
    assert kl_normal(x, x).device.type == "cuda"


# ------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors(exact_model):
    model, x = exact_model
    with pytest.raises(ValueError, match="mu_q and logvar_q must have the same shape"):
        kl_normal(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="both mu_p and logvar_p"):
        kl_normal(torch.zeros(3), torch.zeros(3), mu_p=torch.zeros(3))
    with pytest.raises(ValueError, match="do not broadcast"):
        kl_normal(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="noise_var must be a positive variance"):
        LinearGaussian(model.W, model.b, -0.1)
    with pytest.raises(ValueError, match="cov_q must be symmetric positive definite"):
        kl_mvn(torch.zeros(2), torch.diag(torch.tensor([1.0, -0.5])), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        iwae_bound(model, x, 0)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        elbo(model, x, 0)
    with pytest.raises(ValueError, match="unknown form"):
        elbo(model, x, form="bogus")
    with pytest.raises(ValueError, match="q's batch shape"):
        elbo(model, x, q=(torch.zeros(3, 3, dtype=x.dtype), torch.zeros(3, 3, dtype=x.dtype)))
    with pytest.raises(ValueError, match="x must have shape"):
        VAE(10, 2).elbo(torch.zeros(3, 11))
    with pytest.raises(ValueError, match="unknown likelihood"):
        VAE(10, 2, likelihood="poisson")
    with pytest.raises(ValueError, match="x_dim=784"):
        VAE(10, 2, arch="conv")
    with pytest.raises(TypeError, match="mu_q must be a floating-point tensor"):
        kl_normal([0.0], torch.zeros(1))


def _tiny_categorical(hard):
    torch.manual_seed(0)
    model = CategoricalVAE(6, n_latent=2, n_classes=3, hidden=(8,), hard=hard).double()
    x = torch.bernoulli(torch.full((4, 6), 0.5, dtype=torch.float64), generator=gen(23))
    return model, x


def _exact_discrete_elbo(model, x):
    """ELBO of the discrete model by enumerating all 9 codes (independent of CategoricalVAE.elbo)."""
    codes = torch.cartesian_prod(torch.arange(3), torch.arange(3))
    loglik = log_bernoulli(x[:, None, :], model.decode(torch.nn.functional.one_hot(codes, 3).double())[None])
    logq = torch.log_softmax(model.encode(x), -1)
    logq_codes = logq[:, 0, codes[:, 0]] + logq[:, 1, codes[:, 1]]
    return (logq_codes.exp() * (loglik - logq_codes + math.log(1 / 9))).sum(1)


@pytest.mark.parametrize("hard, tau", [(False, 0.02), (True, 0.7)])
def test_relaxed_elbo_tends_to_the_exact_discrete_elbo(hard, tau):
    # relaxed sample at tau -> 0, or straight-through at any tau: its mean is the discrete ELBO
    model, x = _tiny_categorical(hard)
    exact = _exact_discrete_elbo(model, x)
    with torch.no_grad():
        est = model.relaxed_elbo(x.repeat(4000, 1), tau, generator=gen(30)).reshape(4000, 4).mean(0)
    torch.testing.assert_close(est, exact, atol=0.05, rtol=0)


def test_relaxed_elbo_at_high_temperature_is_not_the_discrete_elbo():
    # the control: a warm relaxation feeds the decoder near-uniform vectors, a different objective
    model, x = _tiny_categorical(False)
    with torch.no_grad():
        model.decoder[-1].weight.mul_(20.0)  # a decoder that cares about its input
        exact = _exact_discrete_elbo(model, x)
        est = model.relaxed_elbo(x.repeat(4000, 1), 50.0, generator=gen(31)).reshape(4000, 4).mean(0)
    assert (est - exact).abs().max() > 0.2


def test_relaxed_elbo_kl_term_is_kl_categorical_uniform():
    from gencore.gumbel import gumbel_softmax, kl_categorical_uniform

    model, x = _tiny_categorical(False)
    with torch.no_grad():
        value = model.relaxed_elbo(x, 0.5, generator=gen(32))
        y = gumbel_softmax(model.encode(x), 0.5, generator=gen(32))   # the same noise
        rec = log_bernoulli(x, model.decode(y))
    torch.testing.assert_close(rec - value, kl_categorical_uniform(model.encode(x)))


def test_relaxed_elbo_gradient_step_raises_the_exact_elbo():
    # direction of the update: small ascent steps on the straight-through relaxed ELBO raise the exact ELBO
    model, x = _tiny_categorical(True)
    with torch.no_grad():
        before = float(_exact_discrete_elbo(model, x).mean())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for s in range(30):
        loss = -model.relaxed_elbo(x.repeat(256, 1), 0.5, generator=gen(40 + s)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(_exact_discrete_elbo(model, x).mean())
    assert after > before + 0.1


def test_pathwise_and_score_function_gradients_are_unbiased():
    # prop-vae-pathwise - both estimators average to d/dmu E_q[log p(x|z)] = W^T (x - W mu - b) / sigma^2
    lg = LinearGaussian.random(5, 2, noise_var=0.5, orthogonal=False, seed=1)
    x0 = lg.sample(1, generator=gen(0))
    mu0 = torch.tensor([[0.3, -0.4]], dtype=torch.float64)
    logvar0 = torch.tensor([[-0.5, 0.2]], dtype=torch.float64)
    exact = (lg.W.T @ (x0[0] - lg.W @ mu0[0] - lg.b)) / lg.noise_var
    eps = torch.randn(40_000, 2, generator=gen(1), dtype=torch.float64)
    mu = mu0.expand(40_000, 2).clone().requires_grad_(True)
    z = mu + (0.5 * logvar0).exp() * eps
    f = lg.log_likelihood(x0, z[:, None, :])[:, 0]  # (n,), as in the chapter's gradient_estimates
    (pathwise,) = torch.autograd.grad(f.sum(), mu)
    score = f.detach()[:, None] * (z.detach() - mu0) / logvar0.exp()
    for est in (pathwise, score):
        se = est.std(0) / math.sqrt(len(est))
        assert ((est.mean(0) - exact).abs() < 5 * se).all()
    wrong = score * 0.5  # a plausible bug (a missing factor) is caught by the same criterion
    assert ((wrong.mean(0) - exact).abs() > 5 * wrong.std(0) / math.sqrt(len(wrong))).any()
