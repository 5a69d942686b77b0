"""gencore.likelihood: Gaussian log-density, maximum likelihood, sampling, generative classifier.

Every value is checked against an independent computation (torch.distributions, scipy.stats,
numpy, scipy quadrature and optimisation). The labelled results of the chapter
"Generative models and maximum likelihood" are named in the comments of their tests.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, optimize, stats

from gencore.data import GaussianMixture1D, mixture_1d
from gencore.likelihood import (
    cholesky_from_unconstrained,
    gaussian_class_log_posterior,
    gaussian_log_prob,
    gaussian_mle,
    gaussian_sample,
)
from gencore.train import fit, make_step


@pytest.fixture
def one_thread():
    """Run a tiny optimisation single-threaded: on a shared 2-core machine, intra-op threads of
    operations on a few hundred numbers cost far more in synchronisation than they gain."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_spd(d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=dtype)
    return a @ a.T + 0.5 * torch.eye(d, dtype=dtype)


# --------------------------------------------------------------------------- gaussian_log_prob
@pytest.mark.parametrize("d", [1, 2, 5])
def test_gaussian_log_prob_matches_torch_distributions_and_scipy(d):
    g = torch.Generator().manual_seed(d)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    cov = random_spd(d, seed=10 + d)
    x = 3 * torch.randn(50, d, generator=g, dtype=torch.float64)
    ours = gaussian_log_prob(x, mean, cov)
    assert ours.shape == (50,)
    ref_torch = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)
    ref_scipy = stats.multivariate_normal(mean.numpy(), cov.numpy()).logpdf(x.numpy()).reshape(-1)
    torch.testing.assert_close(ours, ref_torch, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.numpy(), ref_scipy, rtol=1e-10, atol=1e-10)


def test_gaussian_log_prob_has_the_right_constant_in_high_dimension():
    # standard normal at the origin: -D/2 log(2 pi), the constant that a wrong implementation gets
    # wrong by (D^2 - D)/2 log 2pi when it mixes up the determinant of 2 pi Sigma
    d = 20
    value = gaussian_log_prob(torch.zeros(1, d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64),
                              torch.eye(d, dtype=torch.float64))
    assert value.item() == pytest.approx(-d / 2 * math.log(2 * math.pi), rel=1e-14)


def test_gaussian_log_prob_follows_dtype_and_is_differentiable():
    cov = random_spd(3, seed=0).float()
    mean = torch.zeros(3, requires_grad=True)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    out = gaussian_log_prob(x, mean, cov)
    assert out.dtype == torch.float32
    out.sum().backward()
    # d/dmu sum_n log N(x_n; mu, Sigma) = Sigma^{-1} sum_n (x_n - mu)
    expected = torch.linalg.solve(cov.double(), x.double().sum(0))   # at mu = 0
    torch.testing.assert_close(mean.grad.double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "x, mean, cov, match",
    [
        (torch.zeros(3), torch.zeros(3), torch.eye(3), r"x must have shape \(N, D\)"),
        (torch.zeros(4, 3), torch.zeros(2), torch.eye(3), r"mean must be \(3,\)"),
        (torch.zeros(4, 3), torch.zeros(3), torch.eye(2), r"cov \(3, 3\)"),
        (torch.zeros(4, 2), torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
        (torch.zeros(4, 2), torch.zeros(2), -torch.eye(2), "positive definite"),
    ],
)
def test_gaussian_log_prob_rejects_bad_input(x, mean, cov, match):
    with pytest.raises(ValueError, match=match):
        gaussian_log_prob(x, mean, cov)


# --------------------------------------------------------------------------- gaussian_mle
@pytest.mark.parametrize("n, d", [(5, 1), (40, 3), (500, 6)])
def test_gaussian_mle_matches_numpy_biased_covariance(n, d):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n), dtype=torch.float64) * 2 + 1
    mean, cov = gaussian_mle(x)
    assert mean.shape == (d,) and cov.shape == (d, d)
    np.testing.assert_allclose(mean.numpy(), x.numpy().mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(x.numpy().T, bias=True).reshape(d, d), rtol=1e-10, atol=1e-12)


def test_gaussian_mle_maximises_the_likelihood_against_perturbations():  # prop-gm-gaussian-mle
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) @ random_spd(3, 2)
    mean, cov = gaussian_mle(x)
    best = gaussian_log_prob(x, mean, cov).sum()
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        dm = 0.05 * torch.randn(3, generator=g, dtype=torch.float64)
        a = 0.05 * torch.randn(3, 3, generator=g, dtype=torch.float64)
        assert gaussian_log_prob(x, mean + dm, cov + a @ a.T).sum() < best
        assert gaussian_log_prob(x, mean, cov * 1.05).sum() < best
        assert gaussian_log_prob(x, mean, cov * 0.95).sum() < best
    # the unbiased (N - 1) covariance is *not* the maximiser
    assert gaussian_log_prob(x, mean, cov * 200 / 199).sum() < best


def test_gradient_descent_through_fit_reaches_the_closed_form_mle(one_thread):  # prop-gm-gaussian-mle
    g = torch.Generator().manual_seed(0)
    mix = torch.eye(4, dtype=torch.float64) + 0.5 * torch.tril(torch.randn(4, 4, generator=g, dtype=torch.float64))
    x = torch.randn(300, 4, generator=g, dtype=torch.float64) @ mix.T + torch.tensor(
        [1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    mean_cf, cov_cf = gaussian_mle(x)
    mean = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    raw = torch.zeros(4, 4, dtype=torch.float64, requires_grad=True)
    steps = 400
    opt = torch.optim.Adam([mean, raw], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def nll(batch):
        chol = cholesky_from_unconstrained(raw)
        return -gaussian_log_prob(batch, mean, chol @ chol.T).mean()

    inner = make_step(nll, opt)

    def step(batch):
        out = inner(batch)
        sched.step()
        return out

    fit(step, x, steps=steps, batch_size=len(x), progress=False, log_every=100)
    chol = cholesky_from_unconstrained(raw.detach())
    torch.testing.assert_close(mean.detach(), mean_cf, rtol=0, atol=1e-6)
    torch.testing.assert_close(chol @ chol.T, cov_cf, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.zeros(5), r"x must have shape \(N, D\)"),
        (torch.zeros(3, 3), "more samples than dimensions.*N=3, D=3"),
        (torch.zeros(2, 5), "more samples than dimensions.*N=2, D=5"),
    ],
)
def test_gaussian_mle_rejects_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        gaussian_mle(x)


# --------------------------------------------------------------------------- Cholesky parameterisation, sampling
def test_cholesky_from_unconstrained_gives_a_valid_factor():
    raw = torch.randn(5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    chol = cholesky_from_unconstrained(raw)
    assert torch.equal(chol, torch.tril(chol))
    torch.testing.assert_close(torch.diagonal(chol), torch.exp(torch.diagonal(raw)))
    torch.testing.assert_close(torch.tril(chol, -1), torch.tril(raw, -1))
    # it is the Cholesky factor of the covariance it defines
    torch.testing.assert_close(torch.linalg.cholesky(chol @ chol.T), chol)
    torch.testing.assert_close(cholesky_from_unconstrained(torch.zeros(3, 3)), torch.eye(3))
    with pytest.raises(ValueError, match="raw must be a square matrix"):
        cholesky_from_unconstrained(torch.zeros(2, 3))


def test_gaussian_sample_has_the_requested_mean_and_covariance():
    mean = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    cov = random_spd(3, seed=4)
    n = 40_000
    x = gaussian_sample(mean, cov, n, generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, 3) and x.dtype == torch.float64
    sd = cov.diagonal().sqrt()
    # 5 standard errors for the mean; sd of a covariance entry <= sqrt(S_ii S_jj (1 + rho^2) / n)
    assert ((x.mean(0) - mean).abs() < 5 * sd / math.sqrt(n)).all()
    se_cov = torch.sqrt(2 * torch.outer(sd**2, sd**2) / n)
    assert ((torch.cov(x.T) - cov).abs() < 5 * se_cov).all()
    same = gaussian_sample(mean, cov, n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, same)


@pytest.mark.parametrize(
    "n, mean, cov, match",
    [
        (0, torch.zeros(2), torch.eye(2), "n must be a positive integer"),
        (5, torch.zeros(2, 1), torch.eye(2), r"mean must be \(D,\)"),
        (5, torch.zeros(2), torch.eye(3), r"mean must be \(D,\)"),
        (5, torch.zeros(2), torch.zeros(2, 2), "positive definite"),
    ],
)
def test_gaussian_sample_rejects_bad_input(n, mean, cov, match):
    with pytest.raises(ValueError, match=match):
        gaussian_sample(mean, cov, n)


# --------------------------------------------------------------------------- generative classifier
def test_class_posterior_matches_bayes_rule_with_scipy_densities():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 2, generator=g, dtype=torch.float64) * 2
    covs = torch.stack([random_spd(2, seed=s) for s in range(3)])
    priors = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    x = torch.randn(30, 2, generator=g, dtype=torch.float64) * 3
    ours = gaussian_class_log_posterior(x, means, covs, priors.log()).exp()
    joint = np.stack([priors[k].item() * stats.multivariate_normal(means[k].numpy(), covs[k].numpy()).pdf(x.numpy())
                      for k in range(3)], axis=1)
    np.testing.assert_allclose(ours.numpy(), joint / joint.sum(1, keepdims=True), rtol=1e-9, atol=1e-12)


def test_shared_covariance_posterior_is_a_logistic_regression():  # prop-gm-shared-cov-logistic
    mu0 = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    mu1 = torch.tensor([1.5, -0.5], dtype=torch.float64)
    cov = random_spd(2, seed=7)
    pi1 = 0.3
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    post = gaussian_class_log_posterior(x, torch.stack([mu0, mu1]), cov,
                                        torch.tensor([math.log(1 - pi1), math.log(pi1)], dtype=torch.float64))
    prec = torch.linalg.inv(cov)
    w = prec @ (mu1 - mu0)
    b = -0.5 * mu1 @ prec @ mu1 + 0.5 * mu0 @ prec @ mu0 + math.log(pi1 / (1 - pi1))
    torch.testing.assert_close(post[:, 1].exp(), torch.sigmoid(x @ w + b), rtol=1e-10, atol=1e-12)
    # and the log-odds, computed from scipy densities, are affine in x: second differences vanish
    def log_odds(p):
        return (math.log(pi1) + stats.multivariate_normal(mu1.numpy(), cov.numpy()).logpdf(p)
                - math.log(1 - pi1) - stats.multivariate_normal(mu0.numpy(), cov.numpy()).logpdf(p))
    a, c = np.array([0.3, -1.2]), np.array([2.0, 0.7])
    assert log_odds(a) + log_odds(c) == pytest.approx(2 * log_odds((a + c) / 2), abs=1e-9)


def test_class_posterior_is_stable_far_from_the_data_and_rejects_bad_input():
    means = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[1e4, 0.0], [-1e4, 0.0]], dtype=torch.float64)
    post = gaussian_class_log_posterior(x, means, torch.eye(2, dtype=torch.float64),
                                        torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64)))
    assert torch.isfinite(post).all()
    assert post[0, 1].exp().item() == pytest.approx(1.0) and post[1, 0].exp().item() == pytest.approx(1.0)
    eye = torch.eye(2, dtype=torch.float64)
    lp = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"means must have shape \(K, 2\)"):
        gaussian_class_log_posterior(x, torch.zeros(2, 3, dtype=torch.float64), eye, lp)
    with pytest.raises(ValueError, match="covs must have shape"):
        gaussian_class_log_posterior(x, means, torch.eye(3, dtype=torch.float64), lp)
    with pytest.raises(ValueError, match="log_priors must have shape"):
        gaussian_class_log_posterior(x, means, eye, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\)"):
        gaussian_class_log_posterior(x[0], means, eye, lp)


def test_logistic_regression_trained_by_fit_reaches_the_convex_optimum(one_thread):
    # the discriminative model of the chapter; independent optimum from scipy's BFGS
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    t = (torch.rand(200, generator=g, dtype=torch.float64) < torch.sigmoid(x @ torch.tensor(
        [2.0, -1.0], dtype=torch.float64) + 0.5)).double()

    def objective(theta):
        logits = x.numpy() @ theta[:2] + theta[2]
        return float(np.mean(np.logaddexp(0, logits) - t.numpy() * logits))

    ref = optimize.minimize(objective, np.zeros(3), method="BFGS", options=dict(gtol=1e-10)).x
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 500)
    inner = make_step(lambda batch: F.binary_cross_entropy_with_logits(batch[0] @ w + b, batch[1]), opt)

    def step(batch):
        out = inner(batch)
        sched.step()
        return out

    fit(step, (x, t), steps=500, batch_size=200, progress=False, log_every=100)
    np.testing.assert_allclose(np.r_[w.detach().numpy(), b.item()], ref, atol=1e-4)


# --------------------------------------------------------------------------- maximum likelihood and KL
def _log_normal(x: float, mu: float = 0.0, sigma: float = 1.0) -> float:
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def _quad_expect(p: GaussianMixture1D, f) -> float:
    """E_p[f(x, p(x))] by adaptive quadrature, with the mixture density written out in plain Python."""
    comps = list(zip(p.weights.tolist(), p.means.tolist(), p.stds.tolist()))

    def dens(x):
        return sum(w * math.exp(_log_normal(x, m, s)) for w, m, s in comps)

    def integrand(x):
        d = dens(x)
        return d * f(x, d) if d > 0 else 0.0

    return integrate.quad(integrand, -np.inf, np.inf, limit=200)[0]


@pytest.mark.parametrize("name", ["bimodal", "asymmetric", "trimodal"])
def test_expected_log_likelihood_is_minus_entropy_minus_kl(name):  # prop-gm-mle-kl
    p = mixture_1d(name)
    entropy = -_quad_expect(p, lambda x, d: math.log(d))
    thetas = [(0.0, 1.0), (1.0, 0.5), (-1.0, 3.0)]
    for mu, sigma in thetas:
        kl = _quad_expect(p, lambda x, d: math.log(d) - _log_normal(x, mu, sigma))
        ell = _quad_expect(p, lambda x, d: _log_normal(x, mu, sigma))
        assert kl > 0
        assert ell == pytest.approx(-entropy - kl, abs=1e-7)
    # the entropy term is the same for every theta, so the two objectives rank thetas alike
    kls = [_quad_expect(p, lambda x, d: math.log(d) - _log_normal(x, mu, s))
           for mu, s in thetas]
    ells = [_quad_expect(p, lambda x, d: _log_normal(x, mu, s)) for mu, s in thetas]
    assert np.argmin(kls) == np.argmax(ells)


def test_entropy_of_a_single_gaussian_by_quadrature_is_the_closed_form():  # def-gm-kl
    p = GaussianMixture1D([1.0], [0.3], [1.7])
    entropy = -_quad_expect(p, lambda x, d: math.log(d))
    assert entropy == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 1.7**2), abs=1e-8)
    # KL(N(0.3, 1.7^2) || N(0, 1)) in closed form
    kl = _quad_expect(p, lambda x, d: math.log(d) - _log_normal(x))
    assert kl == pytest.approx(math.log(1 / 1.7) + (1.7**2 + 0.3**2) / 2 - 0.5, abs=1e-8)


def test_kl_closest_gaussian_matches_the_mixture_moments():  # cor-gm-moment-matching
    p = mixture_1d("asymmetric")

    def kl(theta):
        mu, sigma = theta[0], math.exp(theta[1])
        return _quad_expect(p, lambda x, d: math.log(d) - _log_normal(x, mu, sigma))

    best = optimize.minimize(kl, x0=[0.0, 0.0], method="Nelder-Mead", options=dict(xatol=1e-7, fatol=1e-11))
    assert best.x[0] == pytest.approx(p.mean, abs=1e-4)
    assert math.exp(best.x[1]) == pytest.approx(math.sqrt(p.variance), abs=1e-4)
    # the sample MLE converges to the same point (5 standard errors)
    n = 20_000
    x = p.sample(n, seed=0).double()[:, None]
    mean, var = gaussian_mle(x)
    assert abs(mean.item() - p.mean) < 5 * math.sqrt(p.variance / n)
    fourth = _quad_expect(p, lambda y, d: (y - p.mean) ** 4)
    assert abs(var.item() - p.variance) < 5 * math.sqrt((fourth - p.variance**2) / n)


def test_gaussian_chain_rule_reproduces_the_joint_log_density():
    # the autoregressive factorisation of the chapter: sum of conditional log-densities = joint
    cov = random_spd(4, seed=9)
    mean = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    total = torch.zeros(10, dtype=torch.float64)
    for i in range(4):
        if i == 0:
            m, v = mean[0].expand(10), cov[0, 0]
        else:
            gain = torch.linalg.solve(cov[:i, :i], cov[:i, i])
            m = mean[i] + (x[:, :i] - mean[:i]) @ gain
            v = cov[i, i] - cov[i, :i] @ gain
        total += torch.tensor(stats.norm.logpdf(x[:, i].numpy(), m.numpy(), math.sqrt(v.item())))
    torch.testing.assert_close(total, gaussian_log_prob(x, mean, cov), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
def test_likelihood_functions_follow_a_cuda_device(cuda_device):
    cov = random_spd(3, seed=1)
    mean = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    on_gpu = gaussian_log_prob(x.to(cuda_device), mean.to(cuda_device), cov.to(cuda_device))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), gaussian_log_prob(x, mean, cov))
    m, c = gaussian_mle(x.to(cuda_device))
    assert m.device.type == "cuda" and c.device.type == "cuda"
    s = gaussian_sample(mean.to(cuda_device), cov.to(cuda_device), 5,
                        generator=torch.Generator(device=cuda_device).manual_seed(0))
    assert s.device.type == "cuda" and s.shape == (5, 3)
    post = gaussian_class_log_posterior(x.to(cuda_device), torch.stack([mean, -mean]).to(cuda_device),
                                        cov.to(cuda_device), torch.log(torch.tensor([0.5, 0.5])).to(cuda_device,
                                                                                                     torch.float64))
    assert post.device.type == "cuda"


def _reverse_kl_to(p: GaussianMixture1D):
    """theta = (mu, log sigma) -> KL(N(mu, sigma^2) || p) by quadrature against the Gaussian."""
    comps = list(zip(p.weights.tolist(), p.means.tolist(), p.stds.tolist()))

    def log_p(x):
        return math.log(sum(w * math.exp(_log_normal(x, m, s)) for w, m, s in comps) + 1e-300)

    def reverse_kl(theta):
        mu, sigma = theta[0], math.exp(theta[1])
        f = lambda x: math.exp(_log_normal(x, mu, sigma)) * (_log_normal(x, mu, sigma) - log_p(x))
        return integrate.quad(f, mu - 12 * sigma, mu + 12 * sigma, limit=200)[0]

    return reverse_kl


def test_reverse_kl_gaussian_fit_is_mode_seeking():
    # the claims of exercise ex-gm-3 on the bimodal mixture 0.5 N(-2, 0.6^2) + 0.5 N(2, 0.6^2):
    # minimising KL(q || p_data) over Gaussians q locks onto one mode (mu ~ +-2, sigma ~ 0.6,
    # KL ~ log 2), whereas the forward-KL fit (cor-gm-moment-matching) is mu = 0, sigma = sqrt(4.36)
    p = mixture_1d("bimodal")
    reverse_kl = _reverse_kl_to(p)
    options = dict(xatol=1e-6, fatol=1e-10)
    for start, mode in ((-1.0, -2.0), (1.5, 2.0)):
        best = optimize.minimize(reverse_kl, x0=[start, 0.0], method="Nelder-Mead", options=options)
        assert abs(best.x[0] - mode) < 0.02 and abs(math.exp(best.x[1]) - 0.6) < 0.02
        assert best.fun == pytest.approx(math.log(2), abs=0.01)
    # the symmetric Gaussian is far worse in reverse KL, although it is the forward-KL optimum's centre
    assert reverse_kl([0.0, math.log(1.79)]) > 1.1
    assert p.mean == pytest.approx(0.0) and math.sqrt(p.variance) == pytest.approx(math.sqrt(4.36))

    # with overlapping modes (the asymmetric mixture) the reverse fit is narrower than the
    # forward fit and pulled towards the heavier mode at 1.5
    q = mixture_1d("asymmetric")
    best = optimize.minimize(_reverse_kl_to(q), x0=[0.0, 0.0], method="Nelder-Mead", options=options)
    assert best.x[0] > q.mean + 0.2 and math.exp(best.x[1]) < math.sqrt(q.variance) - 0.2


# --------------------------------------------------------------------------- held-out likelihood
from sklearn.neighbors import KernelDensity  # noqa: E402

from gencore import ClaimError, check_close, check_over_seeds  # noqa: E402
from gencore.likelihood import bits_per_dim, kde_log_prob  # noqa: E402


@pytest.mark.parametrize("d, h", [(1, 0.3), (3, 0.7), (10, 0.22)])
def test_kde_log_prob_matches_scikit_learn(d, h):
    g = torch.Generator().manual_seed(d)
    centres = torch.randn(80, d, generator=g, dtype=torch.float64)
    x = 2 * torch.randn(40, d, generator=g, dtype=torch.float64)
    ref = KernelDensity(kernel="gaussian", bandwidth=h).fit(centres.numpy()).score_samples(x.numpy())
    np.testing.assert_allclose(kde_log_prob(x, centres, h).numpy(), ref, rtol=1e-10, atol=1e-10)


def test_kde_with_one_centre_is_a_gaussian_and_integrates_to_one():
    c = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(kde_log_prob(x, c, 0.8), gaussian_log_prob(x, c[0], 0.64 * torch.eye(2, dtype=torch.float64)))
    centres = torch.tensor([[-1.0], [0.3], [2.0]], dtype=torch.float64)
    total = integrate.quad(lambda t: math.exp(kde_log_prob(torch.tensor([[t]], dtype=torch.float64), centres, 0.4).item()),
                           -np.inf, np.inf)[0]
    assert total == pytest.approx(1.0, abs=1e-8)


def test_kde_follows_dtype_and_rejects_bad_input():
    x = torch.zeros(3, 2)
    assert kde_log_prob(x, torch.ones(4, 2), 0.5).dtype == torch.float32
    with pytest.raises(ValueError, match="bandwidth must be a positive"):
        kde_log_prob(x, x, 0.0)
    with pytest.raises(ValueError, match="same D"):
        kde_log_prob(x, torch.zeros(3, 3), 0.5)
    with pytest.raises(ValueError, match="at least one point"):
        kde_log_prob(x, torch.zeros(0, 2), 0.5)


def test_bits_per_dim_converts_nats():
    assert bits_per_dim(10 * math.log(2), 10) == pytest.approx(1.0)
    torch.testing.assert_close(bits_per_dim(torch.tensor([math.log(2) * 64]), 64), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        bits_per_dim(1.0, 0)


def _held_out_curves(seed, *, evaluate_on_train=False):
    """The chapter's held-out experiment (ch01, "Held-out likelihood and overfitting"), with the
    held-out scores computed independently by scikit-learn's KernelDensity."""
    from gencore.data import load_digits
    pixels = load_digits()[0].double()
    perm = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:1200], perm[1200:]
    centre = pixels[tr].mean(0)
    _, _, v = torch.linalg.svd(pixels[tr] - centre, full_matrices=False)
    x_tr = ((pixels[tr] - centre) @ v[:10].T).numpy()
    x_te = x_tr if evaluate_on_train else ((pixels[te] - centre) @ v[:10].T).numpy()
    hs = np.logspace(math.log10(2.0), math.log10(0.05), 16)
    train = np.array([-KernelDensity(bandwidth=h).fit(x_tr).score_samples(x_tr).mean() for h in hs])
    test = np.array([-KernelDensity(bandwidth=h).fit(x_tr).score_samples(x_te).mean() for h in hs])
    return train, test


def test_held_out_kde_curve_overfits_and_the_check_fails_on_training_data(one_thread):
    curves = {s: _held_out_curves(s) for s in (0, 1, 2)}
    check_over_seeds("train NLL falls", lambda s: bool((np.diff(curves[s][0]) < 0).all()))
    check_over_seeds("held-out NLL rises at the smallest bandwidth",
                     lambda s: curves[s][1][-1] - curves[s][1].min(), at_least=10.0)
    # wrong answer: "held-out" scores computed on the training points never rise
    wrong = {s: _held_out_curves(s, evaluate_on_train=True) for s in (0, 1, 2)}
    with pytest.raises(ClaimError):
        check_over_seeds("held-out NLL rises at the smallest bandwidth",
                         lambda s: wrong[s][1][-1] - wrong[s][1].min(), at_least=10.0)


# --------------------------------------------------------------------------- ch01 checks fail for wrong answers
def test_change_of_variables_needs_the_jacobian():  # eq-gm-change-of-variables
    with_j = integrate.quad(lambda t: stats.norm.pdf(np.arcsinh(t)) / np.sqrt(1 + t * t), -np.inf, np.inf)[0]
    without = integrate.quad(lambda t: stats.norm.pdf(np.arcsinh(t)), -np.inf, np.inf)[0]
    check_close("integrates to 1", with_j, 1.0, tol=1e-6)
    with pytest.raises(ClaimError):
        check_close("integrates to 1", without, 1.0, tol=1e-6)
    assert without == pytest.approx(math.exp(0.5), abs=1e-6)
    # 2-D affine map: the log |det| term is what makes it equal N(c, A A^T)
    A = torch.tensor([[2.0, 0.0], [1.5, 0.8]], dtype=torch.float64)
    c = torch.tensor([1.0, -1.0], dtype=torch.float64)
    x = gaussian_sample(c, A @ A.T, 50, generator=torch.Generator().manual_seed(0))
    z = torch.linalg.solve(A, (x - c).T).T
    base = torch.tensor(stats.multivariate_normal(np.zeros(2), np.eye(2)).logpdf(z.numpy()))
    target = gaussian_log_prob(x, c, A @ A.T)
    check_close("affine change of variables", base - torch.linalg.slogdet(A).logabsdet, target, tol=1e-10)
    with pytest.raises(ClaimError):
        check_close("affine change of variables", base, target, tol=1e-10)


def _mle_kl_identity_check(ell_of):
    """The chapter's check of prop-gm-mle-kl: KL by quadrature against -H - E[log p_theta]."""
    p = mixture_1d("asymmetric")
    entropy = -_quad_expect(p, lambda x, d: math.log(d))
    thetas = [(0.0, 1.0), (0.45, 1.83), (-2.0, 0.5), (1.5, 1.0), (3.0, 3.0)]
    kl = np.array([_quad_expect(p, lambda x, d: math.log(d) - _log_normal(x, mu, s)) for mu, s in thetas])
    ell = np.array([ell_of(mu, s, p.mean, p.variance) for mu, s in thetas])
    check_close("KL = -H - E[log p_theta]", kl, -entropy - ell, tol=1e-7)


def test_mle_kl_identity_check_fails_for_a_wrong_constant_or_variance():  # prop-gm-mle-kl
    right = lambda mu, s, m, v: -0.5 * math.log(2 * math.pi * s**2) - (v + (m - mu) ** 2) / (2 * s**2)
    _mle_kl_identity_check(right)
    for wrong in (lambda mu, s, m, v: -math.log(s) - (v + (m - mu) ** 2) / (2 * s**2),         # no log 2pi
                  lambda mu, s, m, v: -0.5 * math.log(2 * math.pi * s**2) - (m - mu) ** 2 / (2 * s**2),  # no variance
                  lambda mu, s, m, v: -0.5 * math.log(2 * math.pi * s**2) - (v * 1797 / 1796 + (m - mu) ** 2) / (2 * s**2)):
        with pytest.raises(ClaimError):
            _mle_kl_identity_check(wrong)


def test_grid_minimiser_check_fails_for_a_wrong_variance_term():  # cor-gm-moment-matching
    p = mixture_1d("asymmetric")
    mu_grid, sigma_grid = np.linspace(-2.0, 3.0, 101), np.linspace(0.5, 4.0, 71)
    MU, SIGMA = np.meshgrid(mu_grid, sigma_grid, indexing="xy")
    best = (p.mean, math.sqrt(p.variance))      # the optimiser's answer, checked by the test above

    def grid_argmin(var_term):
        ell = -0.5 * np.log(2 * np.pi * SIGMA**2) - (var_term + (p.mean - MU) ** 2) / (2 * SIGMA**2)
        i, j = np.unravel_index(np.argmax(ell), ell.shape)
        return [mu_grid[j], sigma_grid[i]]

    check_close("grid minimiser within one step", grid_argmin(p.variance), best, tol=0.05 + 1e-9)
    for wrong in (0.0, 2 * p.variance, p.variance / 2):
        with pytest.raises(ClaimError):
            check_close("grid minimiser within one step", grid_argmin(wrong), best, tol=0.05 + 1e-9)
