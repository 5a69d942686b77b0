r"""Auto-checkers for the coding exercises: pass or fail, with a specific hint on failure.

A student writes a function and hands it to :func:`check`::

    def my_kl(mu_q, logvar_q, mu_p, logvar_p):
        ...
    gencore.exercises.check("kl_normal", my_kl)
    # ✗ kl_normal: off by a factor 2 — the Gaussian KL has a 1/2 in front of the sum

The checker calls the function on a few fixed, seeded test cases, compares it with the book's
reference (the ``gencore`` function the chapter derives) and, when they differ, tries each
*typical mistake* of that exercise (a wrong sign, a missing constant, the reversed KL, a mean
where a sum belongs, ...) to name what went wrong. Generic diagnoses (wrong shape, sign,
constant offset, constant factor) apply to every exercise.

Exercises are records in one registry (:data:`EXERCISES`, :func:`register`); every record's
reference passes and every listed mistake fails with its own hint (``tests/test_exercises.py``).

=====================  =====================================================  ========================
name                   the student's function                                 chapter
=====================  =====================================================  ========================
``gaussian_log_prob``  ``f(x, mean, logvar) -> (B,)``: log N(x; mean, diag)   generative models & MLE
``kl_normal``          ``f(mu_q, logvar_q, mu_p, logvar_p) -> (B,)``          deriving the ELBO
``conjugate_<name>``   ``f(t) -> f*(t)`` for each f-divergence of the registry f-divergences
``optimal_discriminator`` ``f(p, q) -> D*`` on a grid of densities            GANs
``sinkhorn_step``      ``f(u, v, K, a, b) -> (u_new, v_new)``                 optimal transport
``iwae_estimate``      ``f(log_w (K, B)) -> (B,)``: log (1/K) sum_k w_k       training VAEs
``gumbel_softmax_sample`` ``f(logits, u, tau) -> y``: softmax((l + g) / tau)  discrete latents
``fgan_objective_gan`` ``f(v_p, v_q) -> F``: the f-GAN bound of the GAN row   f-GAN
``info_lower_bound``   ``f(q_logits (N, K), code (N,)) -> L_I``               GANs in practice
``gradient_penalty``   ``f(critic, real, fake, eps) -> GP``                   WGAN
``mmd2_imq``           ``f(x, y, c) -> unbiased MMD^2``, IMQ kernel            WAE and AAE
``frechet_gaussians``  ``f(mu1, sigma1, mu2, sigma2) -> FID``                 evaluation
=====================  =====================================================  ========================

Chapters that bring their own module register their exercises at the bottom of it (for example
``product_of_experts`` in :mod:`gencore.multimodal`). :func:`check` and :func:`available` import
the modules of :data:`PROVIDER_MODULES` on first use, so every record is there whichever chapter
the student opened first; a module that does not exist (yet) is skipped.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Verdict", "Mistake", "Exercise", "EXERCISES", "PROVIDER_MODULES", "register", "check", "available"]


@dataclass(frozen=True)
class Verdict:
    """The result of :func:`check`: ``passed``, and the message shown to the student."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"{'✓' if self.passed else '✗'} {self.name}: {self.message}"


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer: ``wrong(*case)`` computes it, ``hint`` says what it is."""

    hint: str
    wrong: Callable[..., Any]


@dataclass(frozen=True)
class Exercise:
    """One coding exercise: the reference, the test cases, the typical mistakes."""

    name: str
    chapter: str
    signature: str
    reference: Callable[..., Any]
    cases: Callable[[], list[tuple]]
    mistakes: tuple[Mistake, ...] = ()
    shape_hint: str = ""
    error_hint: str = ""
    rtol: float = 1e-5
    atol: float = 1e-6


EXERCISES: dict[str, Exercise] = {}

# Modules that register their own exercise records at their bottom (imported on first use of
# check() / available(); a module that does not exist yet is skipped).
PROVIDER_MODULES: tuple[str, ...] = (
    "gencore.autoregressive", "gencore.flows", "gencore.flow_vae", "gencore.flow_gan", "gencore.vae",
    "gencore.avb", "gencore.multimodal", "gencore.vrnn", "gencore.pixelvae", "gencore.diffusion.score",
    "gencore.diffusion.ddpm", "gencore.diffusion.flow_matching",
)
_providers_loaded = False


def _load_providers() -> None:
    """Import every module of :data:`PROVIDER_MODULES` once, so that their records are registered.

    A ``ModuleNotFoundError`` for the provider itself (or a package above it) means the module does
    not exist yet and is skipped; any other error, including a missing dependency *inside* a
    provider, propagates.
    """
    global _providers_loaded
    if _providers_loaded:
        return
    for module in PROVIDER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise
    _providers_loaded = True


def register(ex: Exercise) -> Exercise:
    """Add an exercise to the registry (a name may be registered once)."""
    if ex.name in EXERCISES:
        raise ValueError(f"exercise {ex.name!r} is already registered")
    EXERCISES[ex.name] = ex
    return ex


def available() -> tuple[str, ...]:
    """Names of the registered exercises (after importing the :data:`PROVIDER_MODULES`)."""
    _load_providers()
    return tuple(sorted(EXERCISES))


# --------------------------------------------------------------------------- the engine
def _as_tensors(out: Any) -> tuple[torch.Tensor, ...]:
    items = out if isinstance(out, (tuple, list)) else (out,)
    res = []
    for o in items:
        if isinstance(o, torch.Tensor):
            res.append(o.detach().to(torch.float64))
        elif isinstance(o, (int, float)):
            res.append(torch.tensor(float(o), dtype=torch.float64))
        else:
            try:
                res.append(torch.as_tensor(o, dtype=torch.float64))
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"returned {type(o).__name__}, expected a tensor") from None
    return tuple(res)


def _close(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], rtol: float, atol: float) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and bool(torch.isfinite(x).all()) and torch.allclose(x, y, rtol=rtol, atol=atol)
        for x, y in zip(a, b))


def _constant(values: list[torch.Tensor], atol: float) -> float | None:
    flat = torch.cat([v.reshape(-1) for v in values])
    if flat.numel() == 0 or not bool(torch.isfinite(flat).all()):
        return None
    c = float(flat.mean())
    return c if float((flat - c).abs().max()) <= atol * 10 + 1e-9 * abs(c) else None


def _generic(outs: list[tuple], refs: list[tuple], ex: Exercise) -> str | None:
    if all(_close(o, tuple(-r for r in rf), ex.rtol, ex.atol) for o, rf in zip(outs, refs)):
        return "wrong sign: your result is the negative of the expected one"
    diffs = [o[i] - r[i] for o, r in zip(outs, refs) for i in range(len(r))]
    offset = _constant(diffs, ex.atol)
    if offset is not None and abs(offset) > ex.atol:
        return f"off by a constant: your result is the expected one {offset:+.4g}"
    ratios = [o[i] / r[i] for o, r in zip(outs, refs) for i in range(len(r)) if bool((r[i].abs() > 1e-8).all())]
    factor = _constant(ratios, 1e-6) if ratios else None
    if factor is not None and not math.isclose(factor, 1.0, rel_tol=1e-6):
        return f"off by a constant factor: your result is {factor:.4g} times the expected one"
    return None


def check(name: str, fn: Callable[..., Any], *, strict: bool = False) -> Verdict:
    """Check a student's function against exercise ``name`` and print the verdict.

    Parameters
    ----------
    name : str
        A registered exercise (see :func:`available`).
    fn : callable
        The student's function, with the exercise's signature.
    strict : bool
        Raise :class:`gencore.ClaimError` on failure (the book's own solution cells use this,
        so that a regression fails the notebook); otherwise just return the verdict.

    Returns
    -------
    Verdict
        ``bool(verdict)`` is whether it passed; ``verdict.message`` holds the hint.
    """
    if name not in EXERCISES:
        _load_providers()
    if name not in EXERCISES:
        raise KeyError(f"unknown exercise {name!r}; available: {', '.join(available())}")
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    ex = EXERCISES[name]
    verdict = _judge(ex, fn)
    print(repr(verdict))
    if strict and not verdict.passed:
        from gencore.checks import ClaimError
        raise ClaimError(f"exercise {name} failed: {verdict.message}")
    return verdict


def _judge(ex: Exercise, fn: Callable[..., Any]) -> Verdict:
    cases = ex.cases()
    outs, refs = [], []
    for k, case in enumerate(cases):
        ref = _as_tensors(ex.reference(*case))
        try:
            out = _as_tensors(fn(*[c.clone() if isinstance(c, torch.Tensor) else c for c in case]))
        except NotImplementedError:
            return Verdict(ex.name, False, "not implemented yet: replace the stub's body with your code")
        except TypeError as exc:
            if "returned" in str(exc):
                return Verdict(ex.name, False, f"{exc} (signature: {ex.signature})")
            return Verdict(ex.name, False, f"your function raised TypeError: {exc} (signature: {ex.signature})")
        except Exception as exc:  # noqa: BLE001 - the student's code may raise anything
            extra = f"; {ex.error_hint}" if ex.error_hint else ""
            return Verdict(ex.name, False, f"your function raised {type(exc).__name__}: {exc}{extra}")
        if len(out) != len(ref):
            return Verdict(ex.name, False, f"returned {len(out)} value(s), expected {len(ref)} ({ex.signature})")
        for o, r in zip(out, ref):
            if o.shape != r.shape:
                extra = f"; {ex.shape_hint}" if ex.shape_hint else ""
                return Verdict(ex.name, False, f"wrong shape: expected {tuple(r.shape)}, got {tuple(o.shape)}{extra}")
            if not bool(torch.isfinite(o).all()) and bool(torch.isfinite(r).all()):
                return Verdict(ex.name, False, f"your result has NaN or inf entries (test case {k + 1}); "
                                                "use log-sum-exp / softplus forms for extreme inputs")
        outs.append(out)
        refs.append(ref)
    if all(_close(o, r, ex.rtol, ex.atol) for o, r in zip(outs, refs)):
        return Verdict(ex.name, True, f"correct on all {len(cases)} test cases")
    for m in ex.mistakes:
        wrong = [_as_tensors(m.wrong(*case)) for case in cases]
        if all(_close(o, w, ex.rtol, ex.atol) for o, w in zip(outs, wrong)):
            return Verdict(ex.name, False, m.hint)
    hint = _generic(outs, refs, ex)
    if hint:
        return Verdict(ex.name, False, hint)
    worst = max(float((o[i] - r[i]).abs().max()) for o, r in zip(outs, refs) for i in range(len(r)))
    return Verdict(ex.name, False, f"wrong values (max error {worst:.3g}); compare your formula with the chapter's")


# --------------------------------------------------------------------------- the exercises
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _gaussian_cases() -> list[tuple]:
    cases = []
    for seed, (b, d) in enumerate([(5, 3), (4, 1), (3, 6)]):
        g = _gen(100 + seed)
        cases.append((torch.randn(b, d, generator=g, dtype=torch.float64),
                      torch.randn(b, d, generator=g, dtype=torch.float64),
                      torch.randn(b, d, generator=g, dtype=torch.float64)))
    return cases


def _ref_gaussian_log_prob(x, mean, logvar):
    from gencore.vae import log_normal_diag
    return log_normal_diag(x, mean, logvar)


register(Exercise(
    name="gaussian_log_prob", chapter="01_generative_models",
    signature="f(x, mean, logvar) -> Tensor (B,): sum over the last dimension",
    reference=_ref_gaussian_log_prob, cases=_gaussian_cases,
    shape_hint="sum the per-dimension log-densities over the last dimension",
    mistakes=(
        Mistake("the normalising constant is -d/2 log(2 pi), once per dimension, not -d^2/2 log(2 pi)",
                lambda x, m, lv: _ref_gaussian_log_prob(x, m, lv) - 0.5 * (x.shape[-1] ** 2 - x.shape[-1]) * math.log(2 * math.pi)),
        Mistake("the normalising constant -1/2 log(2 pi) per dimension is missing",
                lambda x, m, lv: _ref_gaussian_log_prob(x, m, lv) + 0.5 * x.shape[-1] * math.log(2 * math.pi)),
        Mistake("logvar is log sigma^2: the variance is exp(logvar), not exp(logvar)^2",
                lambda x, m, lv: _ref_gaussian_log_prob(x, m, 2 * lv)),
        Mistake("the -1/2 log sigma^2 term is missing (the density must integrate to 1 for every sigma)",
                lambda x, m, lv: _ref_gaussian_log_prob(x, m, lv) + 0.5 * lv.sum(-1)),
        Mistake("you averaged over dimensions: the log-density of independent coordinates is a sum",
                lambda x, m, lv: _ref_gaussian_log_prob(x, m, lv) / x.shape[-1]),
    )))


def _kl_cases() -> list[tuple]:
    cases = []
    for seed, (b, d) in enumerate([(6, 4), (3, 1), (2, 7)]):
        g = _gen(200 + seed)
        cases.append(tuple(torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(4)))
    return cases


def _ref_kl(mq, lq, mp, lp):
    from gencore.vae import kl_normal
    return kl_normal(mq, lq, mp, lp)


register(Exercise(
    name="kl_normal", chapter="02_elbo",
    signature="f(mu_q, logvar_q, mu_p, logvar_p) -> Tensor (B,): KL(q || p) summed over the last dimension",
    reference=_ref_kl, cases=_kl_cases,
    shape_hint="the KL of a diagonal Gaussian is a sum over the latent dimensions (last axis)",
    mistakes=(
        Mistake("you computed KL(p || q); the ELBO needs KL(q || p), the expectation under q",
                lambda mq, lq, mp, lp: _ref_kl(mp, lp, mq, lq)),
        Mistake("off by a factor 2: the Gaussian KL has a 1/2 in front of the sum",
                lambda mq, lq, mp, lp: 2 * _ref_kl(mq, lq, mp, lp)),
        Mistake("each dimension's term has a -1 (so that KL(q || q) = 0)",
                lambda mq, lq, mp, lp: _ref_kl(mq, lq, mp, lp) + 0.5 * mq.shape[-1]),
        Mistake("logvar is log sigma^2: sigma^2 = exp(logvar), not exp(2 logvar)",
                lambda mq, lq, mp, lp: _ref_kl(mq, 2 * lq, mp, 2 * lp)),
        Mistake("you averaged over the latent dimensions; the KL of independent coordinates is a sum",
                lambda mq, lq, mp, lp: _ref_kl(mq, lq, mp, lp) / mq.shape[-1]),
    )))


def _conjugate_exercise(name: str) -> Exercise:
    from gencore import divergences as D

    div = D.get(name)
    lo, hi = div.domain

    def cases():
        a = max(lo + 0.05, -3.0) if math.isfinite(lo) else -3.0
        b = min(hi - 0.05, 3.0) if math.isfinite(hi) else 3.0
        return [(torch.linspace(a, b, 11, dtype=torch.float64),),
                (torch.linspace(a, b, 4, dtype=torch.float64)[1:3],)]

    return Exercise(
        name=f"conjugate_{name}", chapter="05_f_divergences",
        signature=f"f(t) -> f*(t), the Fenchel conjugate of f for {name!r}, elementwise on t in its domain",
        reference=lambda t: div.conjugate(t), cases=cases,
        shape_hint="f* acts elementwise: return a tensor of the same shape as t",
        mistakes=(
            Mistake("you returned f(t), not its conjugate f*(t) = sup_u (u t - f(u))",
                    lambda t: div.f(t.clamp_min(1e-12))),
            Mistake("f*(t) = sup_u (u t - f(u)): a plus/minus was swapped (you computed -f*(-t))",
                    lambda t: -div.conjugate(-t)),
        ))


def _register_conjugates() -> None:
    from gencore import divergences as D
    for n in D.available():
        try:
            ex = _conjugate_exercise(n)
            torch.isfinite(ex.reference(ex.cases()[0][0])).all()
        except Exception:  # noqa: BLE001 - a registry row without a usable conjugate gets no exercise
            continue
        register(ex)


_register_conjugates()


def _dstar_cases() -> list[tuple]:
    x = torch.linspace(-4, 4, 41, dtype=torch.float64)
    def normal(m, s):
        return torch.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    p1 = 0.5 * normal(-2, 0.6) + 0.5 * normal(2, 0.6)
    return [(p1, normal(0, 1.5)), (normal(1, 1), normal(-1, 2))]


def _ref_dstar(p, q):
    from gencore.gan import optimal_discriminator
    return optimal_discriminator(p, q)


register(Exercise(
    name="optimal_discriminator", chapter="07_gans",
    signature="f(p_data, p_g) -> D*(x) on the same grid (densities as tensors)",
    reference=_ref_dstar, cases=_dstar_cases,
    mistakes=(
        Mistake("D* is the probability that x is real: p_data goes in the numerator, D* = p_data / (p_data + p_g)",
                lambda p, q: q / (p + q)),
        Mistake("p_data / p_g is the density ratio, not a probability: normalise by p_data + p_g",
                lambda p, q: p / q),
        Mistake("you returned log D*; the discriminator outputs a probability in (0, 1)",
                lambda p, q: torch.log(p / (p + q))),
        Mistake("1/2 is D* only where p_g = p_data; in general D* = p_data / (p_data + p_g)",
                lambda p, q: torch.full_like(p, 0.5)),
    )))


def _sinkhorn_cases() -> list[tuple]:
    cases = []
    for seed, (n, m) in enumerate([(4, 5), (6, 3)]):
        g = _gen(300 + seed)
        a = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
        b = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
        a, b = a / a.sum(), b / b.sum()
        x, y = torch.rand(n, 1, generator=g, dtype=torch.float64), torch.rand(m, 1, generator=g, dtype=torch.float64)
        K = torch.exp(-((x - y.T) ** 2) / 0.1)
        u = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
        v = torch.rand(m, generator=g, dtype=torch.float64) + 0.5
        cases.append((u, v, K, a, b))
    return cases


def _ref_sinkhorn_step(u, v, K, a, b):
    u_new = a / (K @ v)
    return u_new, b / (K.T @ u_new)


register(Exercise(
    name="sinkhorn_step", chapter="09_optimal_transport",
    signature="f(u, v, K, a, b) -> (u_new, v_new): one Sinkhorn iteration, u first, then v",
    reference=_ref_sinkhorn_step, cases=_sinkhorn_cases,
    shape_hint="u has the shape of a (n,), v the shape of b (m,)",
    mistakes=(
        Mistake("update v with the NEW u: v_new = b / (K^T u_new) (with the old u the row marginals drift)",
                lambda u, v, K, a, b: (a / (K @ v), b / (K.T @ u))),
        Mistake("Sinkhorn divides the target marginal by the current one: u = a / (K v), not a * (K v)",
                lambda u, v, K, a, b: (a * (K @ v), b * (K.T @ (a * (K @ v))))),
    ),
    error_hint="in diag(u) K diag(v) the row sums are u * (K v) and the column sums v * (K^T u): "
               "the v update needs K.T"))


# ---- training VAEs: the importance-weighted estimate from log-weights
def _iwae_cases() -> list[tuple]:
    cases = []
    for seed, (k, b, loc, scale) in enumerate([(5, 3, -2.0, 1.0), (1, 4, 0.5, 2.0), (7, 2, -1000.0, 3.0)]):
        g = _gen(600 + seed)
        cases.append((loc + scale * torch.randn(k, b, generator=g, dtype=torch.float64),))
    return cases


def _ref_iwae_estimate(log_w):
    # what gencore.vae.iwae_bound computes from the log-weights of its k samples (dim 0)
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


register(Exercise(
    name="iwae_estimate", chapter="03_training_vaes",
    signature="f(log_w) -> Tensor (B,): log (1/K) sum_k exp(log_w[k]), log_w of shape (K, B) (samples first)",
    reference=_ref_iwae_estimate, cases=_iwae_cases,
    shape_hint="the K importance samples are on the first axis: reduce over dim 0 and keep one value per example",
    mistakes=(
        Mistake("you averaged the log-weights: that is the K-sample ELBO estimate; the IWAE bound averages the "
                "weights inside the log, log (1/K) sum_k w_k",
                lambda lw: lw.mean(0)),
        Mistake("the 1/K is missing: log (1/K) sum_k w_k = logsumexp(log_w) - log K",
                lambda lw: torch.logsumexp(lw, dim=0)),
        Mistake("you took the largest log-weight; the bound averages all K weights (log-sum-exp, then - log K)",
                lambda lw: lw.max(0).values),
    ),
    error_hint="work with log-weights throughout: torch.logsumexp(log_w, dim=0) - math.log(K)"))


# ---- discrete latents: a Gumbel-softmax sample from uniform noise
def _gumbel_cases() -> list[tuple]:
    cases = []
    for seed, (b, k, tau, scale) in enumerate([(4, 5, 0.5, 1.0), (3, 3, 2.0, 2.0), (2, 6, 0.3, 400.0)]):
        g = _gen(700 + seed)
        logits = scale * torch.randn(b, k, generator=g, dtype=torch.float64)
        u = torch.rand(b, k, generator=g, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
        cases.append((logits, u, tau))
    return cases


def _gumbel_from_uniform(u):
    return -torch.log(-torch.log(u))


def _ref_gumbel_softmax(logits, u, tau):
    # gencore.gumbel.gumbel_softmax with the noise g = gumbel_noise(...) = -log(-log u) given
    return torch.softmax((logits + _gumbel_from_uniform(u)) / tau, dim=-1)


register(Exercise(
    name="gumbel_softmax_sample", chapter="04_discrete_latents",
    signature="f(logits (B, K), u (B, K) uniform in (0, 1), tau: float) -> Tensor (B, K): softmax((logits + g) / tau)",
    reference=_ref_gumbel_softmax, cases=_gumbel_cases,
    shape_hint="one relaxed one-hot vector per row: keep the shape (B, K) of the logits",
    mistakes=(
        Mistake("turn the uniforms into Gumbel noise first: g = -log(-log u)",
                lambda l, u, t: torch.softmax((l + u) / t, dim=-1)),
        Mistake("the Gumbel noise is g = -log(-log u), with a minus in front: you used log(-log u)",
                lambda l, u, t: torch.softmax((l - _gumbel_from_uniform(u)) / t, dim=-1)),
        Mistake("g = -log(-log u) takes two logs; -log u alone is exponential noise, not Gumbel",
                lambda l, u, t: torch.softmax((l - torch.log(u)) / t, dim=-1)),
        Mistake("divide the logits AND the noise by tau: y = softmax((logits + g) / tau)",
                lambda l, u, t: torch.softmax(l / t + _gumbel_from_uniform(u), dim=-1)),
        Mistake("divide by the temperature tau, do not multiply",
                lambda l, u, t: torch.softmax((l + _gumbel_from_uniform(u)) * t, dim=-1)),
        Mistake("the temperature is missing: y = softmax((logits + g) / tau)",
                lambda l, u, t: torch.softmax(l + _gumbel_from_uniform(u), dim=-1)),
        Mistake("normalise over the K categories (the last axis), not over the batch",
                lambda l, u, t: torch.softmax((l + _gumbel_from_uniform(u)) / t, dim=0)),
        Mistake("that is the Gumbel-max sample (a one-hot argmax); the relaxation replaces the argmax by a softmax",
                lambda l, u, t: torch.nn.functional.one_hot((l + _gumbel_from_uniform(u)).argmax(-1),
                                                            l.shape[-1]).to(l.dtype)),
    ),
    error_hint="use torch.softmax(..., dim=-1), which subtracts the maximum before exponentiating"))


# ---- f-GAN: the bound of the GAN row from raw critic outputs, computed stably
def _fgan_cases() -> list[tuple]:
    cases = []
    for seed, (n, m, loc, scale) in enumerate([(6, 4, 0.3, 1.0), (3, 5, -1.0, 3.0), (4, 4, 0.0, 900.0)]):
        g = _gen(800 + seed)
        cases.append((loc + scale * torch.randn(n, generator=g, dtype=torch.float64),
                      loc + scale * torch.randn(m, generator=g, dtype=torch.float64)))
    return cases


def _ref_fgan_gan(v_p, v_q):
    from gencore import divergences as D
    return D.variational_bound("gan", v_p, v_q)


def _logsig(v):
    return torch.nn.functional.logsigmoid(v)


def _softplus(v):
    return torch.nn.functional.softplus(v)


register(Exercise(
    name="fgan_objective_gan", chapter="06_f_gan",
    signature="f(v_p (N,), v_q (M,)) -> scalar: mean g_f(v_p) - mean f*(g_f(v_q)) for the GAN row",
    reference=_ref_fgan_gan, cases=_fgan_cases,
    shape_hint="the objective is one number: average each term over its samples",
    mistakes=(
        Mistake("the second term needs the conjugate: f*(g_f(v)) = -log(1 - sigmoid(v)) = softplus(v), not g_f(v)",
                lambda vp, vq: _logsig(vp).mean() - _logsig(vq).mean()),
        Mistake("the first term is g_f(v) = log sigmoid(v) = -softplus(-v), not the raw output v",
                lambda vp, vq: vp.mean() - _softplus(vq).mean()),
        Mistake("F = E_P[g_f(v)] MINUS E_Q[f*(g_f(v))]: the conjugate term enters with a minus",
                lambda vp, vq: _logsig(vp).mean() + _softplus(vq).mean()),
        Mistake("P and Q are swapped: the critic's outputs on the data samples v_p go into the first term",
                lambda vp, vq: _logsig(vq).mean() - _softplus(vp).mean()),
        Mistake("the conjugate of the GAN generator is f*(t) = -log(1 - e^t), so f*(g_f(v)) = softplus(v), "
                "not softplus(-v)",
                lambda vp, vq: _logsig(vp).mean() - _softplus(-vq).mean()),
    ),
    error_hint="write both terms with torch.nn.functional.logsigmoid / softplus"))


# ---- GANs in practice: InfoGAN's variational lower bound on I(c; G(z, c))
def _info_cases() -> list[tuple]:
    cases = []
    for seed, (n, k, scale) in enumerate([(6, 4, 1.0), (5, 10, 3.0), (4, 3, 800.0)]):
        g = _gen(900 + seed)
        cases.append((scale * torch.randn(n, k, generator=g, dtype=torch.float64),
                      torch.randint(k, (n,), generator=g)))
    return cases


def _ref_info(q_logits, code):
    from gencore.gan import info_lower_bound
    return info_lower_bound(q_logits, code)


def _picked_log_q(q_logits, code):
    return torch.log_softmax(q_logits, dim=1).gather(1, code[:, None]).squeeze(1)


register(Exercise(
    name="info_lower_bound", chapter="08_gans_in_practice",
    signature="f(q_logits (N, K), code (N,) int) -> scalar: mean log Q(code | x) + H(c), uniform K-way code",
    reference=_ref_info, cases=_info_cases,
    shape_hint="L_I is one number: average log Q(c | x) over the N samples",
    mistakes=(
        Mistake("the entropy H(c) = log K of the uniform code is missing",
                lambda q, c: _picked_log_q(q, c).mean()),
        Mistake("normalise Q: log Q(c | x) = logit_c - logsumexp(logits), not the raw logit",
                lambda q, c: q.gather(1, c[:, None]).squeeze(1).mean() + math.log(q.shape[1])),
        Mistake("average log Q(c | x), not the probability Q(c | x)",
                lambda q, c: _picked_log_q(q, c).exp().mean() + math.log(q.shape[1])),
        Mistake("average over the N samples; you summed",
                lambda q, c: _picked_log_q(q, c).sum() + math.log(q.shape[1])),
        Mistake("for a uniform K-way code H(c) = log K, not log 2 (or 1 bit)",
                lambda q, c: _picked_log_q(q, c).mean() + math.log(2)),
    ),
    error_hint="torch.log_softmax(q_logits, dim=1) is finite for any logits; pick the column of each code"))


# ---- WGAN: the gradient penalty at given interpolation weights
def _gp_critic(seed: int, d: int):
    g = _gen(seed)
    w1 = torch.randn(d, 8, generator=g, dtype=torch.float64)
    b1 = torch.randn(8, generator=g, dtype=torch.float64)
    w2 = torch.randn(8, generator=g, dtype=torch.float64) / 2

    def critic(x):
        return torch.tanh(x @ w1 + b1) @ w2
    return critic


def _gp_cases() -> list[tuple]:
    cases = []
    for seed, (n, d) in enumerate([(6, 2), (4, 3), (5, 1)]):
        g = _gen(1000 + seed)
        real = torch.randn(n, d, generator=g, dtype=torch.float64) + 1.0
        fake = torch.randn(n, d, generator=g, dtype=torch.float64) - 1.0
        eps = torch.rand(n, 1, generator=g, dtype=torch.float64)
        cases.append((_gp_critic(1100 + seed, d), real, fake, eps))
    return cases


def _grad_at(critic, x):
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x)
    return grad


def _ref_gp(critic, real, fake, eps):
    # gencore.ot.gradient_penalty draws eps itself; this is the same formula at a given eps
    grad = _grad_at(critic, eps * real + (1 - eps) * fake)
    return ((grad.norm(dim=1) - 1.0) ** 2).mean()


def _gp_wrong_norm(critic, real, fake, eps, how):
    grad = _grad_at(critic, eps * real + (1 - eps) * fake)
    norm = grad.norm(dim=1)
    return {"squared_norm": (norm ** 2).mean(),
            "batch_norm": (grad.norm() - 1.0) ** 2,
            "one_sided": ((norm - 1.0).clamp_min(0) ** 2).mean(),
            "no_square": (norm - 1.0).mean(),
            "sq_norm_minus_one": ((norm ** 2 - 1.0) ** 2).mean(),
            "sum": ((norm - 1.0) ** 2).sum()}[how]


register(Exercise(
    name="gradient_penalty", chapter="10_wgan",
    signature="f(critic, real (n, d), fake (n, d), eps (n, 1)) -> scalar: mean over x_hat = eps real + (1 - eps) fake "
              "of (||grad critic(x_hat)|| - 1)^2",
    reference=_ref_gp, cases=_gp_cases,
    shape_hint="the penalty is one number: average (||grad|| - 1)^2 over the n interpolates",
    mistakes=(
        Mistake("evaluate the gradient at the interpolates eps * real + (1 - eps) * fake, not at the real points",
                lambda c, r, f, e: ((_grad_at(c, r).norm(dim=1) - 1.0) ** 2).mean()),
        Mistake("penalise the distance of the norm to 1, (||grad|| - 1)^2, not ||grad||^2",
                lambda c, r, f, e: _gp_wrong_norm(c, r, f, e, "squared_norm")),
        Mistake("the norm is per interpolate (over each row, dim=1), not over the whole batch",
                lambda c, r, f, e: _gp_wrong_norm(c, r, f, e, "batch_norm")),
        Mistake("WGAN-GP's penalty is two-sided: (||grad|| - 1)^2 also penalises norms below 1",
                lambda c, r, f, e: _gp_wrong_norm(c, r, f, e, "one_sided")),
        Mistake("square the difference: (||grad|| - 1)^2",
                lambda c, r, f, e: _gp_wrong_norm(c, r, f, e, "no_square")),
        Mistake("use the norm ||grad||, not the squared norm, inside (||grad|| - 1)^2",
                lambda c, r, f, e: _gp_wrong_norm(c, r, f, e, "sq_norm_minus_one")),
        Mistake("average over the interpolates; you summed",
                lambda c, r, f, e: _gp_wrong_norm(c, r, f, e, "sum")),
    ),
    error_hint="make x_hat a leaf with x_hat.requires_grad_(True), then "
               "torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)"))


# ---- WAE: the unbiased MMD^2 estimate with an inverse multiquadratic kernel
def _mmd_cases() -> list[tuple]:
    cases = []
    for seed, (n, m, d, c) in enumerate([(5, 7, 2, 4.0), (6, 6, 3, 1.5), (4, 3, 1, 0.5)]):
        g = _gen(1200 + seed)
        cases.append((torch.randn(n, d, generator=g, dtype=torch.float64),
                      0.5 + 1.3 * torch.randn(m, d, generator=g, dtype=torch.float64), c))
    return cases


def _imq(a, b, c):
    return c / (c + torch.cdist(a, b) ** 2)


def _ref_mmd(x, y, c):
    from gencore.ot import mmd2
    return mmd2(x, y, kernel=lambda a, b: _imq(a, b, c), unbiased=True)


def _mmd_parts(x, y, c, kernel=_imq):
    kxx, kyy, kxy = kernel(x, x, c), kernel(y, y, c), kernel(x, y, c)
    n, m = len(x), len(y)
    off_xx, off_yy = kxx.sum() - kxx.diagonal().sum(), kyy.sum() - kyy.diagonal().sum()
    return kxx, kyy, kxy, n, m, off_xx, off_yy


def _mmd_wrong(x, y, c, how):
    kxx, kyy, kxy, n, m, off_xx, off_yy = _mmd_parts(x, y, c)
    if how == "v_statistic":
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    if how == "divide_n2":
        return off_xx / n ** 2 + off_yy / m ** 2 - 2 * kxy.mean()
    if how == "cross_no_2":
        return off_xx / (n * (n - 1)) + off_yy / (m * (m - 1)) - kxy.mean()
    if how == "cross_diagonal":
        k = min(n, m)
        return off_xx / (n * (n - 1)) + off_yy / (m * (m - 1)) - 2 * (kxy.sum() - kxy.diagonal().sum()) / (n * m - k)
    if how == "distance":
        kxx, kyy, kxy, n, m, off_xx, off_yy = _mmd_parts(x, y, c, lambda a, b, c: c / (c + torch.cdist(a, b)))
        return off_xx / (n * (n - 1)) + off_yy / (m * (m - 1)) - 2 * kxy.mean()
    raise ValueError(how)


register(Exercise(
    name="mmd2_imq", chapter="11_wae_aae",
    signature="f(x (n, d), y (m, d), c: float) -> scalar: the unbiased MMD^2 estimate with k(a, b) = c / (c + ||a - b||^2)",
    reference=_ref_mmd, cases=_mmd_cases,
    shape_hint="MMD^2 is one number",
    mistakes=(
        Mistake("that is the biased V-statistic: drop the diagonal terms k(x_i, x_i), k(y_j, y_j) and divide by "
                "n(n - 1) and m(m - 1)",
                lambda x, y, c: _mmd_wrong(x, y, c, "v_statistic")),
        Mistake("after dropping the diagonal there are n(n - 1) pairs i != j: divide by n(n - 1), not n^2",
                lambda x, y, c: _mmd_wrong(x, y, c, "divide_n2")),
        Mistake("the cross term is -2 E k(x, y): the factor 2 is missing",
                lambda x, y, c: _mmd_wrong(x, y, c, "cross_no_2")),
        Mistake("keep every pair (x_i, y_j) of the cross term, i = j included: x_i and y_i are independent",
                lambda x, y, c: _mmd_wrong(x, y, c, "cross_diagonal")),
        Mistake("the inverse multiquadratic kernel uses the squared distance: c / (c + ||a - b||^2)",
                lambda x, y, c: _mmd_wrong(x, y, c, "distance")),
    ),
    error_hint="torch.cdist(x, y) ** 2 gives the (n, m) matrix of squared distances"))


# ---- evaluation: the Fréchet distance between two Gaussians (FID of fitted features)
def _spd(g: torch.Generator, d: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.2 * torch.eye(d, dtype=torch.float64)


def _fid_cases() -> list[tuple]:
    cases = []
    for seed, d in enumerate([3, 2, 5]):
        g = _gen(1300 + seed)
        cases.append((torch.randn(d, generator=g, dtype=torch.float64), _spd(g, d),
                      torch.randn(d, generator=g, dtype=torch.float64), _spd(g, d)))
    return cases


def _ref_fid(m1, s1, m2, s2):
    from gencore.metrics import frechet_distance
    return torch.tensor(frechet_distance(m1, s1, m2, s2), dtype=torch.float64)


def _trace_sqrt(s1, s2):
    evals, evecs = torch.linalg.eigh(s1)
    root = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    return torch.linalg.eigvalsh(root @ s2 @ root).clamp_min(0).sqrt().sum()


def _fid_wrong(m1, s1, m2, s2, how):
    mean_term = ((m1 - m2) ** 2).sum()
    tr = torch.trace(s1) + torch.trace(s2)
    ts = _trace_sqrt(s1, s2)
    return {"sqrt_of_trace": mean_term + tr - 2 * torch.trace(s1 @ s2).sqrt(),
            "diagonal": mean_term + tr - 2 * (torch.diagonal(s1) * torch.diagonal(s2)).sqrt().sum(),
            "no_2": mean_term + tr - ts,
            "norm_not_squared": mean_term.sqrt() + tr - 2 * ts,
            "no_mean": tr - 2 * ts,
            "w2": (mean_term + tr - 2 * ts).clamp_min(0).sqrt()}[how]


register(Exercise(
    name="frechet_gaussians", chapter="12_evaluation",
    signature="f(mu1 (d,), sigma1 (d, d), mu2 (d,), sigma2 (d, d)) -> scalar: "
              "||mu1 - mu2||^2 + tr sigma1 + tr sigma2 - 2 tr (sigma1 sigma2)^(1/2)",
    reference=_ref_fid, cases=_fid_cases,
    shape_hint="the Fréchet distance is one number",
    mistakes=(
        Mistake("tr (sigma1 sigma2)^(1/2) is the trace of a matrix square root, not the square root of the trace",
                lambda *a: _fid_wrong(*a, "sqrt_of_trace")),
        Mistake("using only the diagonals is the formula for diagonal covariances; these covariances are full: "
                "take the eigenvalues of sigma1^(1/2) sigma2 sigma1^(1/2)",
                lambda *a: _fid_wrong(*a, "diagonal")),
        Mistake("the cross term is -2 tr (sigma1 sigma2)^(1/2): the factor 2 is missing",
                lambda *a: _fid_wrong(*a, "no_2")),
        Mistake("the mean term is the squared distance ||mu1 - mu2||^2",
                lambda *a: _fid_wrong(*a, "norm_not_squared")),
        Mistake("the mean term ||mu1 - mu2||^2 is missing",
                lambda *a: _fid_wrong(*a, "no_mean")),
        Mistake("FID is the squared distance W_2^2; you returned its square root W_2",
                lambda *a: _fid_wrong(*a, "w2")),
    ),
    error_hint="sigma1 sigma2 is not symmetric; use sigma1^(1/2) sigma2 sigma1^(1/2) and torch.linalg.eigvalsh"))
