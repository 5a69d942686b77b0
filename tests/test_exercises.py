"""gencore.exercises: every reference passes, every typical mistake fails with its own hint."""
from __future__ import annotations

import math
import sys
import textwrap

import numpy as np
import pytest
import scipy.linalg
import torch

import gencore
from gencore import exercises as E
from gencore.vae import kl_normal

ALL = E.available()
WITH_MISTAKES = [(n, i) for n in ALL for i in range(len(E.EXERCISES[n].mistakes))]


def test_the_registry_covers_the_chapters_exercises():
    assert {"gaussian_log_prob", "kl_normal", "optimal_discriminator", "sinkhorn_step", "conjugate_kl",
            "conjugate_js", "conjugate_gan", "iwae_estimate", "gumbel_softmax_sample", "fgan_objective_gan",
            "info_lower_bound", "gradient_penalty", "mmd2_imq", "frechet_gaussians"} <= set(ALL)
    # every chapter 01-12 has at least one checker of its own
    chapters = {E.EXERCISES[n].chapter[:2] for n in ALL}
    assert {f"{i:02d}" for i in range(1, 13)} <= chapters, sorted(chapters)


@pytest.mark.parametrize("name", ALL)
def test_reference_solution_passes(name, capsys):
    v = E.check(name, E.EXERCISES[name].reference)
    assert v.passed and bool(v)
    assert capsys.readouterr().out.startswith(f"✓ {name}: correct on all")


@pytest.mark.parametrize("name, i", WITH_MISTAKES)
def test_each_typical_mistake_fails_with_its_hint(name, i):
    m = E.EXERCISES[name].mistakes[i]
    v = E.check(name, m.wrong)
    assert not v.passed
    assert v.message == m.hint or "NaN or inf" in v.message, v.message


@pytest.mark.parametrize("name", ALL)
def test_generic_mistakes_are_named(name):
    ref = E.EXERCISES[name].reference

    def negated(*args):
        out = ref(*args)
        return tuple(-o for o in out) if isinstance(out, tuple) else -out

    def stub(*args):
        raise NotImplementedError

    def broken(*args):  # an extra axis on the (first) result
        out = ref(*args)
        return (out[0][None], *out[1:]) if isinstance(out, tuple) else out[..., None]

    assert "wrong sign" in E.check(name, negated).message
    assert E.check(name, stub).message.startswith("not implemented yet")
    assert E.check(name, broken).message.startswith("wrong shape")
    with pytest.raises(gencore.ClaimError, match=f"exercise {name} failed"):
        E.check(name, stub, strict=True)


def test_handwritten_student_answers_get_specific_hints():
    # a KL without the 1/2, written as a student would
    def kl_no_half(mq, lq, mp, lp):
        return (lp - lq + (lq.exp() + (mq - mp) ** 2) / lp.exp() - 1).sum(-1)
    assert "factor 2" in E.check("kl_normal", kl_no_half).message

    # the reviewer's favourite: a Gaussian log-density with the constant -(D^2/2) log 2 pi
    def logp_wrong_constant(x, m, lv):
        d = x.shape[-1]
        return -0.5 * (((x - m) ** 2) / lv.exp() + lv).sum(-1) - 0.5 * d * d * math.log(2 * math.pi)
    assert "not -d^2/2 log(2 pi)" in E.check("gaussian_log_prob", logp_wrong_constant).message

    # Sinkhorn with K instead of K^T: a shape error, explained
    msg = E.check("sinkhorn_step", lambda u, v, K, a, b: (a / (K @ v), b / (K @ (a / (K @ v))))).message
    assert "needs K.T" in msg
    # an answer that is just wrong gets the measured error, not a made-up diagnosis
    msg = E.check("optimal_discriminator", lambda p, q: p / (p + 2 * q)).message
    assert msg.startswith("wrong values (max error")
    # a constant offset is measured
    assert "off by a constant: your result is the expected one +1" in E.check(
        "kl_normal", lambda *a: kl_normal(*a) + 1.0).message


def test_nan_and_non_tensor_results_are_explained():
    assert "NaN or inf" in E.check("kl_normal", lambda mq, *a: mq.sum(-1) * float("nan")).message
    assert "expected a tensor" in E.check("kl_normal", lambda *a: "0.3").message


def test_check_rejects_unknown_names_and_non_functions():
    with pytest.raises(KeyError, match="unknown exercise 'kl'; available: "):
        E.check("kl", kl_normal)
    with pytest.raises(TypeError, match="fn must be a function"):
        E.check("kl_normal", 3)
    with pytest.raises(ValueError, match="already registered"):
        E.register(E.EXERCISES["kl_normal"])


def test_verdict_repr_is_what_the_student_sees():
    v = E.Verdict("kl_normal", False, "wrong sign")
    assert repr(v) == "✗ kl_normal: wrong sign" and not v
    assert torch.is_tensor(E.EXERCISES["kl_normal"].cases()[0][0])


# --------------------------------------------------------------------------- modules that register records
def test_provider_modules_are_the_chapters_modules():
    assert E.PROVIDER_MODULES == (
        "gencore.autoregressive", "gencore.flows", "gencore.flow_vae", "gencore.flow_gan", "gencore.vae",
        "gencore.avb", "gencore.multimodal", "gencore.vrnn", "gencore.pixelvae", "gencore.diffusion.score",
        "gencore.diffusion.ddpm", "gencore.diffusion.flow_matching")


@pytest.fixture
def fresh_providers(monkeypatch, tmp_path):
    """A registry whose provider list is under the test's control (restored afterwards)."""
    monkeypatch.setattr(E, "_providers_loaded", False)
    monkeypatch.setattr(E, "EXERCISES", dict(E.EXERCISES))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("_tmp_provider")]:
        del sys.modules[name]


def test_check_imports_the_provider_modules_on_demand(fresh_providers, monkeypatch, capsys):
    (fresh_providers / "_tmp_provider_ok.py").write_text(textwrap.dedent("""
        import torch
        from gencore.exercises import Exercise, Mistake, register
        register(Exercise(name="tmp_double", chapter="99_tmp", signature="f(x) -> 2 x",
                          reference=lambda x: 2 * x, cases=lambda: [(torch.arange(3.0),)],
                          mistakes=(Mistake("double, not square", lambda x: x ** 2),)))
    """))
    monkeypatch.setattr(E, "PROVIDER_MODULES", ("gencore.no_such_module", "_tmp_provider_ok",
                                                "gencore.no_such_package.inner"))
    assert "tmp_double" not in E.EXERCISES and "_tmp_provider_ok" not in sys.modules
    v = E.check("tmp_double", lambda x: x + x)       # imported on first use; missing modules skipped
    assert v.passed and "_tmp_provider_ok" in sys.modules
    assert E.check("tmp_double", lambda x: x ** 2).message == "double, not square"
    assert "tmp_double" in E.available()


def test_a_missing_dependency_inside_a_provider_is_not_hidden(fresh_providers, monkeypatch):
    (fresh_providers / "_tmp_provider_broken.py").write_text("import _no_such_dependency_xyz\n")
    monkeypatch.setattr(E, "PROVIDER_MODULES", ("_tmp_provider_broken",))
    with pytest.raises(ModuleNotFoundError, match="_no_such_dependency_xyz"):
        E.available()


def test_available_lists_the_records_of_the_existing_provider_modules():
    import importlib.util
    names = set(E.available())
    for module in E.PROVIDER_MODULES:
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            assert module in sys.modules, f"{module} exists but was not imported by available()"
    assert {"product_of_experts"} <= names or importlib.util.find_spec("gencore.multimodal") is None


# --------------------------------------------------------------------------- the references are the book's
def test_iwae_reference_is_the_log_mean_of_the_weights():  # thm-vae-iwae
    lw = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) - 3
    ref = E.EXERCISES["iwae_estimate"].reference(lw)
    np.testing.assert_allclose(ref.numpy(), np.log(np.exp(lw.numpy()).mean(0)), rtol=1e-12)
    # k = 1 is the ELBO, and by Jensen the estimate is at least the mean log-weight
    torch.testing.assert_close(E.EXERCISES["iwae_estimate"].reference(lw[:1]), lw[0])
    assert bool((ref >= lw.mean(0)).all())


def test_gumbel_softmax_reference_is_gencore_gumbel_softmax():  # def-gumbel-softmax
    from gencore.gumbel import gumbel_softmax
    logits = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = gumbel_softmax(logits, 0.7, generator=torch.Generator().manual_seed(3))
    u = torch.rand(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(E.EXERCISES["gumbel_softmax_sample"].reference(logits, u, 0.7), y)


def test_fgan_gan_reference_is_the_gan_value_function():  # prop-fgan-gan-special-case
    g = torch.Generator().manual_seed(4)
    vp, vq = torch.randn(7, dtype=torch.float64, generator=g), torch.randn(5, dtype=torch.float64, generator=g)
    value = torch.log(torch.sigmoid(vp)).mean() + torch.log(1 - torch.sigmoid(vq)).mean()
    torch.testing.assert_close(E.EXERCISES["fgan_objective_gan"].reference(vp, vq), value)


def test_info_reference_is_minus_cross_entropy_plus_log_k():  # prop-gan-info-bound
    q = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    c = torch.tensor([0, 4, 2, 2, 1, 3])
    probs = np.exp(q.numpy()) / np.exp(q.numpy()).sum(1, keepdims=True)
    expected = np.log(probs[np.arange(6), c.numpy()]).mean() + np.log(5)
    np.testing.assert_allclose(float(E.EXERCISES["info_lower_bound"].reference(q, c)), expected, rtol=1e-12)


def test_gradient_penalty_reference_is_gencore_gradient_penalty():
    from gencore.ot import gradient_penalty
    critic, real, fake, _ = E.EXERCISES["gradient_penalty"].cases()[0]
    gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(6))
    eps = torch.rand(len(real), 1, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(E.EXERCISES["gradient_penalty"].reference(critic, real, fake, eps), gp.detach())


def test_mmd_reference_is_the_u_statistic_by_loops():  # prop-wgan-mmd-unbiased
    x, y, c = E.EXERCISES["mmd2_imq"].cases()[0]
    x, y = x.numpy(), y.numpy()
    k = lambda a, b: c / (c + ((a - b) ** 2).sum())  # noqa: E731
    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    np.testing.assert_allclose(float(E.EXERCISES["mmd2_imq"].reference(*E.EXERCISES["mmd2_imq"].cases()[0])),
                               sxx + syy - 2 * sxy, rtol=1e-12)


def test_frechet_reference_matches_scipy_sqrtm():  # def-eval-fid
    for m1, s1, m2, s2 in E.EXERCISES["frechet_gaussians"].cases():
        a, b = s1.numpy(), s2.numpy()
        expected = ((m1 - m2).numpy() ** 2).sum() + np.trace(a) + np.trace(b) - 2 * np.trace(scipy.linalg.sqrtm(a @ b)).real
        np.testing.assert_allclose(float(E.EXERCISES["frechet_gaussians"].reference(m1, s1, m2, s2)), expected,
                                   rtol=1e-9)


def test_naive_formulas_are_told_to_use_stable_forms():
    """What students write first: exp then log, log of a sigmoid or softmax. The extreme test case
    of each record overflows them, and the verdict says so."""
    naive = {
        "iwae_estimate": lambda lw: torch.log(torch.exp(lw).mean(0)),
        "gumbel_softmax_sample": lambda l, u, t: (lambda a: a.exp() / a.exp().sum(-1, keepdim=True))(
            (l - torch.log(-torch.log(u))) / t),
        "fgan_objective_gan": lambda vp, vq: torch.log(torch.sigmoid(vp)).mean() + torch.log(1 - torch.sigmoid(vq)).mean(),
        "info_lower_bound": lambda q, c: torch.log(torch.softmax(q, 1)[torch.arange(len(c)), c]).mean() + math.log(q.shape[1]),
    }
    for name, fn in naive.items():
        assert "NaN or inf" in E.check(name, fn).message, name


def test_handwritten_answers_to_the_new_exercises():
    def gp_student(critic, real, fake, eps):   # the usual code, with create_graph for training
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
        return ((grad.norm(dim=1) - 1) ** 2).mean()
    assert E.check("gradient_penalty", gp_student).passed

    def gp_no_leaf(critic, real, fake, eps):   # forgot requires_grad: autograd raises, the hint says why
        x_hat = eps * real + (1 - eps) * fake
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat)
        return ((grad.norm(dim=1) - 1) ** 2).mean()
    assert "requires_grad_(True)" in E.check("gradient_penalty", gp_no_leaf).message

    def fid_student(m1, s1, m2, s2):            # scipy's matrix square root: correct
        root = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
        return float(((m1 - m2) ** 2).sum() + torch.trace(s1) + torch.trace(s2)) - 2 * float(np.trace(root))
    assert E.check("frechet_gaussians", fid_student).passed

    def mmd_student(x, y, c):
        k = lambda a, b: c / (c + torch.cdist(a, b) ** 2)  # noqa: E731
        n, m = len(x), len(y)
        kxx, kyy = k(x, x).fill_diagonal_(0), k(y, y).fill_diagonal_(0)
        return kxx.sum() / (n * (n - 1)) + kyy.sum() / (m * (m - 1)) - 2 * k(x, y).mean()
    assert E.check("mmd2_imq", mmd_student).passed
    assert "wrong shape" in E.check("iwae_estimate", lambda lw: torch.logsumexp(lw, 1) - math.log(lw.shape[1])).message
