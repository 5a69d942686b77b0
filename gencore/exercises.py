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
=====================  =====================================================  ========================
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Verdict", "Mistake", "Exercise", "EXERCISES", "register", "check", "available"]


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


def register(ex: Exercise) -> Exercise:
    """Add an exercise to the registry (a name may be registered once)."""
    if ex.name in EXERCISES:
        raise ValueError(f"exercise {ex.name!r} is already registered")
    EXERCISES[ex.name] = ex
    return ex


def available() -> tuple[str, ...]:
    """Names of the registered exercises."""
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
