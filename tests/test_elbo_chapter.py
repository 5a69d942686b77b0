"""Checks of the chapter "Deriving the ELBO" (book/02_elbo.ipynb) that need an independent computation:
the gradient variance of the ELBO estimators (closed forms on the orthogonal linear-Gaussian model),
the path-derivative estimator of Roeder et al. (2017), and float32 stability of ``kl_normal``.
Each key check of the chapter is also fed a wrong answer and must fail."""
import math

import pytest
import torch
from torch import distributions as D

from gencore import ClaimError, check_close, check_over_seeds, check_that
from gencore.vae import (LinearGaussian, entropy_normal, kl_normal, log_normal_diag, log_standard_normal)

FORMS = ("kl", "entropy", "joint", "path")


def per_sample_gradients(lg, x, mu, logvar, form, n, seed):
    """Per-sample gradients of a one-sample ELBO estimate w.r.t. (mu, logvar), (n, B, 2d)."""
    mu_n = mu.expand(n, *mu.shape).clone().requires_grad_(True)
    lv_n = logvar.expand(n, *logvar.shape).clone().requires_grad_(True)
    eps = torch.randn(mu_n.shape, generator=torch.Generator().manual_seed(seed), dtype=mu.dtype)
    z = mu_n + (0.5 * lv_n).exp() * eps
    ll = lg.log_likelihood(x, z)
    if form == "kl":
        value = ll - kl_normal(mu_n, lv_n)
    elif form == "entropy":
        value = ll + log_standard_normal(z) + entropy_normal(lv_n)
    elif form == "joint":
        value = ll + log_standard_normal(z) - log_normal_diag(z, mu_n, lv_n)
    else:
        value = ll + log_standard_normal(z) - log_normal_diag(z, mu_n.detach(), lv_n.detach())
    g_mu, g_lv = torch.autograd.grad(value.sum(), (mu_n, lv_n))
    return value.detach(), torch.cat([g_mu, g_lv], -1)


def closed_form_gradient_variance(lg, x, mu, logvar, form):
    r"""Per-coordinate variances of the per-sample gradient, in closed form, when W has orthogonal
    columns (A = W^T W / sigma^2 diagonal). With s = exp(logvar / 2), a = W^T (x - b - W mu) / sigma^2
    and the gradient of log p(x | z) equal to a - A s eps:

    - kl:            d/dmu = a - mu - A s eps;           d/dlogvar_j = 1/2 s_j a_j eps_j - 1/2 A_jj s_j^2 eps_j^2 + c
    - joint/entropy: d/dmu = a - mu - (A + 1) s eps;     d/dlogvar_j = 1/2 s_j (a_j - mu_j) eps_j - 1/2 (A_jj + 1) s_j^2 eps_j^2 + 1/2
    - path:          d/dmu = a - mu + (1/s - (A + 1) s) eps; d/dlogvar_j = 1/2 s_j (a_j - mu_j) eps_j + 1/2 (1 - (A_jj + 1) s_j^2) eps_j^2

    and Var(c1 eps + c2 eps^2) = c1^2 + 2 c2^2 for eps ~ N(0, 1)."""
    W, b, s2 = lg.W, lg.b, lg.noise_var
    A = torch.diagonal(W.T @ W) / s2
    s = (0.5 * logvar).exp()
    a = (x - b - mu @ W.T) @ W / s2
    if form == "kl":
        v_mu = (A * s) ** 2
        v_lv = (0.5 * s * a) ** 2 + 2 * (0.5 * A * s**2) ** 2
    elif form in ("joint", "entropy"):
        v_mu = ((A + 1) * s) ** 2
        v_lv = (0.5 * s * (a - mu)) ** 2 + 2 * (0.5 * (A + 1) * s**2) ** 2
    else:
        v_mu = (1 / s - (A + 1) * s) ** 2
        v_lv = (0.5 * s * (a - mu)) ** 2 + 2 * (0.5 * (1 - (A + 1) * s**2)) ** 2
    return torch.cat([v_mu, v_lv], -1)


def _setup(seed):
    lg = LinearGaussian.random(5, 2, noise_var=0.5, orthogonal=True, seed=10 + seed)
    x = lg.sample(3, generator=torch.Generator().manual_seed(seed))
    mu, logvar = lg.encode(x)
    return lg, x, mu, logvar


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shift", [0.0, 0.4, 2.0])
def test_gradient_variances_match_the_closed_form(form, shift):  # prop-elbo-forms
    lg, x, mu, logvar = _setup(0)
    _, grad = per_sample_gradients(lg, x, mu + shift, logvar, form, 200_000, seed=7)
    empirical = grad.var(0)
    expected = closed_form_gradient_variance(lg, x, mu + shift, logvar, form)
    torch.testing.assert_close(empirical, expected, rtol=0.03, atol=1e-12)
    # and the gradient is unbiased: every estimator has the same mean (the exact ELBO's gradient)
    mu_e = (mu + shift).clone().requires_grad_(True)
    lv_e = logvar.clone().requires_grad_(True)
    exact = torch.autograd.grad(lg.exact_elbo(x, mu_e, lv_e).sum(), (mu_e, lv_e))
    se = grad.std(0) / math.sqrt(len(grad)) + 1e-12
    assert ((grad.mean(0) - torch.cat(exact, -1)).abs() < 5 * se + 1e-9).all()


def test_path_derivative_is_zero_at_the_posterior_and_the_chapter_check_fails_for_the_joint_form():
    # the chapter's claim; the same criterion fed the joint estimator (a plausible wrong answer) fails
    def variance(form, seed):
        lg, x, mu, logvar = _setup(seed)
        return float(per_sample_gradients(lg, x, mu, logvar, form, 2000, seed=seed)[1].var(0).sum(-1).mean())
    check_over_seeds("path derivative: zero gradient variance", lambda s: variance("path", s), at_most=1e-20)
    with pytest.raises(ClaimError):
        check_over_seeds("path derivative: zero gradient variance", lambda s: variance("joint", s), at_most=1e-20)
    # and away from the posterior (shift 0.4) the path derivative is no longer exactly zero
    lg, x, mu, logvar = _setup(0)
    assert float(per_sample_gradients(lg, x, mu + 0.4, logvar, "path", 2000, 0)[1].var(0).sum()) > 0.1


def test_joint_and_entropy_forms_have_identical_gradients_but_different_values():
    lg, x, mu, logvar = _setup(1)
    v_j, g_j = per_sample_gradients(lg, x, mu + 0.4, logvar - 0.3, "joint", 500, 3)
    v_e, g_e = per_sample_gradients(lg, x, mu + 0.4, logvar - 0.3, "entropy", 500, 3)
    torch.testing.assert_close(g_j, g_e, rtol=1e-10, atol=1e-10)
    assert (v_j.std(0) - v_e.std(0)).abs().max() > 0.05


def test_kl_form_ratio_check_fails_when_forms_are_swapped():
    shifts = (0.0, 0.4, 2.0)
    var = {(s, sh, f): float(closed_form_gradient_variance(*_setup(s)[:2], _setup(s)[2] + sh, _setup(s)[3], f).sum(-1).mean())
           for s in (0, 1, 2) for sh in shifts for f in ("kl", "joint")}
    check_over_seeds("kl <= 0.8 joint", lambda s: max(var[s, sh, "kl"] / var[s, sh, "joint"] for sh in shifts), at_most=0.8)
    with pytest.raises(ClaimError):
        check_over_seeds("kl <= 0.8 joint", lambda s: max(var[s, sh, "joint"] / var[s, sh, "kl"] for sh in shifts),
                         at_most=0.8)


# --------------------------------------------------------------------------- float32 stability of kl_normal
def kl_naive(mu_q, logvar_q, mu_p, logvar_p):
    var_q, var_p = logvar_q.exp(), logvar_p.exp()
    return 0.5 * (torch.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1).sum(-1)


CASES = torch.tensor([[0.0, 100.0, 0.5, 99.0], [0.0, 95.0, 0.0, 97.0], [1.0, 89.0, 0.0, 91.0], [0.0, 60.0, 3.0, 62.0]])


def _reference():
    a = [CASES[:, k:k + 1].double() for k in range(4)]
    return D.kl_divergence(D.Normal(a[0], (0.5 * a[1]).exp()), D.Normal(a[2], (0.5 * a[3]).exp())).sum(-1)


def test_kl_normal_is_accurate_in_float32_where_variances_overflow():  # prop-elbo-kl-normal
    ref = _reference()
    args = [CASES[:, k:k + 1].float() for k in range(4)]
    out = kl_normal(*args)
    assert out.dtype == torch.float32
    check_close("float32 kl_normal vs float64 torch.distributions", out, ref, tol=1e-6, relative=True)
    # the closed form by hand for the first case: 1/2 (-1 + e^1 - 1) + 0.25 e^-99 / 2
    assert ref[0].item() == pytest.approx(0.5 * (math.e - 2), rel=1e-12)
    # the chapter's check fails for the naive formula (NaN), and for a float32 formula off by 1e-3
    with pytest.raises(ClaimError):
        check_close("float32 kl_normal vs float64 torch.distributions", kl_naive(*args), ref, tol=1e-6, relative=True)
    with pytest.raises(ClaimError):
        check_close("float32 kl_normal vs float64 torch.distributions", out * (1 + 1e-3), ref, tol=1e-6, relative=True)
    naive = kl_naive(*args)
    check_that("naive NaN above 88.7", torch.isnan(naive[:3]))
    torch.testing.assert_close(naive[3].double(), ref[3], rtol=1e-6, atol=0)


def test_kl_normal_is_finite_in_float32_for_tiny_variances():
    # the mean term is ((mu_q - mu_p) / sigma_p)^2: (mu_q - mu_p)^2 * exp(-logvar_p) was 0 * inf = NaN
    mu = torch.zeros(1, 1)
    out = kl_normal(mu, torch.full((1, 1), -100.0), mu, torch.full((1, 1), -99.0))
    assert torch.isfinite(out).all() and out.item() == pytest.approx(0.5 * (math.exp(-1) + 1 - 1) - 0.0, rel=1e-5)


def test_linear_gaussian_model_is_the_definition():  # def-elbo-linear-gaussian
    # p(z) = N(0, I_d), p(x | z) = N(W z + b, sigma^2 I_D), against torch.distributions
    lg = LinearGaussian.random(4, 2, noise_var=0.3, orthogonal=False, seed=5)
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
    ref = D.Independent(D.Normal(z @ lg.W.T + lg.b, math.sqrt(0.3)), 1).log_prob(x)
    torch.testing.assert_close(lg.log_likelihood(x, z), ref)
    torch.testing.assert_close(log_standard_normal(z), D.Independent(D.Normal(torch.zeros(2, dtype=torch.float64), 1.0), 1).log_prob(z))
    # ancestral samples have the marginal covariance W W^T + sigma^2 I (5 standard errors, entrywise)
    xs = lg.sample(100_000, generator=torch.Generator().manual_seed(1))
    cov = torch.cov(xs.T)
    target = lg.W @ lg.W.T + 0.3 * torch.eye(4, dtype=torch.float64)
    se = torch.sqrt((target**2 + torch.outer(target.diagonal(), target.diagonal())) / len(xs))
    assert ((cov - target).abs() < 5 * se).all()


def test_trained_vae_gradient_claims_and_an_untrained_vae_fails_the_training_check():
    """The trained-VAE checks of the chapter, for one seed; an untrained VAE fails the training claim."""
    import gencore
    from gencore.data import load_digits
    from gencore.train import fit, make_step
    from gencore.vae import VAE, elbo

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny networks: intra-op threads cost more than they gain
    digits = load_digits()[0].float()
    x = digits[:200]

    def study(steps):
        gencore.seed_everything(0)
        vae = VAE(64, 4, hidden=(64,), likelihood="bernoulli").float()
        with torch.no_grad():
            e0 = float(elbo(vae, x, 10, generator=torch.Generator().manual_seed(0)).mean())
        if steps:
            opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
            fit(make_step(lambda b: -elbo(vae, b).mean(), opt), digits, steps=steps, batch_size=128, seed=0,
                progress=False)
        with torch.no_grad():
            e1 = float(elbo(vae, x, 10, generator=torch.Generator().manual_seed(0)).mean())
            mu, logvar = vae.encode(x)
        var = {f: float(per_sample_gradients(vae, x, mu, logvar, f, 200, 1)[1].var(0).sum(-1).mean()) for f in FORMS}
        return e1 - e0, var

    try:
        gain, var = study(1500)
        gain0, var0 = study(0)
    finally:
        torch.set_num_threads(threads)
    check_over_seeds("training raises the ELBO by >= 10 nats", lambda s: gain, seeds=[0], at_least=10.0)
    assert var["kl"] <= 0.8 * var["joint"] and var["path"] <= 0.5 * var["kl"]
    torch.testing.assert_close(torch.tensor(var["joint"]), torch.tensor(var["entropy"]))
    with pytest.raises(ClaimError):
        check_over_seeds("training raises the ELBO by >= 10 nats", lambda s: gain0, seeds=[0], at_least=10.0)
    with pytest.raises(ClaimError):   # the path-derivative claim does not hold for an untrained encoder
        check_over_seeds("path <= 0.5 kl", lambda s: var0["path"] / var0["kl"], seeds=[0], at_most=0.5)


def test_kl_normal_keeps_its_relative_accuracy_near_q_equal_p():
    # KL(N(0, e^d) || N(0, 1)) = (e^d - 1 - d)/2 ~ d^2/4: the naive float32 formula returns 0 at d = 1e-4
    for d in (1e-4, 1e-3, 3e-2):
        lv = torch.full((1, 1), d)
        exact = 0.5 * (math.expm1(d) - d)
        assert kl_normal(torch.zeros(1, 1), lv).item() == pytest.approx(exact, rel=1e-5)
        assert kl_normal(torch.zeros(1, 1), lv, torch.zeros(1, 1), torch.zeros(1, 1)).item() == pytest.approx(exact, rel=1e-5)
    naive = 0.5 * (torch.tensor(1e-4).exp() - 1e-4 - 1.0)
    assert naive.item() == 0.0 or abs(naive.item() / (0.5 * (math.expm1(1e-4) - 1e-4)) - 1) > 0.1
