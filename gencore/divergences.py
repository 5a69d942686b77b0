r"""f-divergences, their Fenchel conjugates and the f-GAN objective: one registry.

An f-divergence between distributions :math:`P` and :math:`Q` with densities :math:`p, q` is

.. math::
    D_f(P \,\|\, Q) = \int q(x)\, f\!\left(\frac{p(x)}{q(x)}\right) \dd x ,

with :math:`f` convex and lower-semicontinuous on :math:`u \ge 0` (``+inf`` for :math:`u < 0`).
Its variational (Fenchel) lower bound, the f-GAN objective, is

.. math::
    D_f(P \,\|\, Q) \;\ge\; \sup_T \; \E_P[T(x)] - \E_Q[f^*(T(x))],
    \qquad f^*(t) = \sup_{u \ge 0}\, \{ u t - f(u) \},

tight at :math:`T^* = f'(p/q)`. A critic outputs a raw value :math:`v \in \R` and
:math:`T = g_f(v)` maps it into :math:`\operatorname{dom} f^*`.

Every divergence is one frozen :class:`Divergence` record in a registry (the pattern of
``torch.distributions.kl``): :func:`get`, :func:`available`, :func:`register`. The table in
the chapter "f-divergences and their variational representation" is generated from these
records, so text and code cannot disagree; ``tests/test_divergences.py`` loops over every
record. Conventions that differ from Nowozin et al. (2016), Tables 1-2, are stated on the
record (``note``) and pinned by tests:

- ``js`` is the Jensen-Shannon divergence itself, :math:`f(u) = \frac12[u\log u - (u+1)\log\frac{u+1}2]`;
  the generator printed in the paper lacks the factor 1/2 and gives :math:`2\,\JS`.
- ``f`` lives on :math:`u \ge 0`, so the conjugates of Pearson :math:`\chi^2` and total
  variation are clipped below (at :math:`t=-2` and :math:`t=-1/2`); the paper's
  :math:`t^2/4 + t` and :math:`t` are conjugates of ``f`` extended to the whole real line.

Public functions: :func:`f_divergence` (discrete distributions or densities on a grid),
:func:`variational_bound` (stable, from raw critic outputs), :func:`make_fgan_step`
(critic and generator updates for :func:`gencore.train.fit`, for one divergence or for ``K``
divergences side by side with :func:`ensemble_mlp`), :func:`best_gaussian` (the direct
quadrature minimiser over Gaussians, global over the start set :func:`gaussian_fit_starts`),
:func:`critic_bound_on_grid` and :func:`bound_shortfall` (a critic's bound by quadrature, and the
share of the divergence it misses) and :func:`table` (the registry as a Markdown table).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from gencore._validate import as_float_tensor
from gencore.nets import EnsembleLinear, ensemble_mlp  # re-exported: the chapters use D.ensemble_mlp

Fn = Callable[[torch.Tensor], torch.Tensor]
LOG2 = math.log(2.0)

__all__ = [
    "Divergence",
    "EnsembleLinear",
    "available",
    "best_gaussian",
    "bound_shortfall",
    "critic_bound_on_grid",
    "ensemble_mlp",
    "f_divergence",
    "gaussian_fit_starts",
    "get",
    "make_fgan_step",
    "register",
    "table",
    "variational_bound",
]


@dataclass(frozen=True)
class Divergence:
    """One f-divergence: generator, conjugate, critic activation and optimal critic.

    Attributes
    ----------
    name : str
        Registry key (``"kl"``, ``"js"``, ...).
    title : str
        Name in words (``"forward KL"``).
    f : callable
        Generator :math:`f(u)`, elementwise; ``+inf`` for ``u < 0``.
    conjugate : callable
        :math:`f^*(t) = \\sup_{u \\ge 0} ut - f(u)`, elementwise; ``+inf`` outside ``domain``.
    domain : (float, float)
        Endpoints of :math:`\\operatorname{dom} f^*`; open unless ``domain_closed``.
    domain_closed : bool
        Whether the upper endpoint belongs to the domain (total variation).
    activation : callable
        Output activation :math:`g_f: \\R \\to \\operatorname{dom} f^*`.
    activation_inverse : callable
        :math:`g_f^{-1}`, to turn a critic value :math:`T` into a raw output :math:`v`.
    conjugate_of_activation : callable
        :math:`f^*(g_f(v))` computed stably from the raw output :math:`v`.
    optimal_critic : callable
        :math:`T^*(r) = f'(r)` for the density ratio :math:`r = p/q` (a subgradient for TV).
    f_prime_one : float
        :math:`f'(1)`, the critic value where :math:`P = Q`.
    slope_at_infinity : float
        :math:`\\lim_{u\\to\\infty} f(u)/u`, the weight of mass of ``P`` where ``q = 0``.
    large_ratio_term : callable, optional
        ``(p, log_u) -> q f(p/q)`` for ratios too large to represent (``q`` subnormal); needed
        when ``slope_at_infinity`` is infinite. Default: ``p * slope_at_infinity``.
    f_at_one : float
        :math:`f(1)`: 0, except :math:`-\\log 4` for ``gan``.
    tex : dict of str
        LaTeX for the table: keys ``divergence``, ``f``, ``conjugate``, ``domain``,
        ``activation``, ``critic``.
    note : str
        Where this record departs from Nowozin et al. (2016), if anywhere.
    """

    name: str
    title: str
    f: Fn
    conjugate: Fn
    domain: tuple[float, float]
    activation: Fn
    activation_inverse: Fn
    conjugate_of_activation: Fn
    optimal_critic: Fn
    f_prime_one: float
    slope_at_infinity: float
    tex: Mapping[str, str]
    domain_closed: bool = False
    f_at_one: float = 0.0
    note: str = ""
    large_ratio_term: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        lo, hi = self.domain
        if not lo < hi:
            raise ValueError(f"domain must be (lo, hi) with lo < hi, got {self.domain!r}")
        missing = {"divergence", "f", "conjugate", "domain", "activation", "critic"} - set(self.tex)
        if missing:
            raise ValueError(f"tex is missing keys: {', '.join(sorted(missing))}")

    def large_ratio(self, p: torch.Tensor, log_u: torch.Tensor) -> torch.Tensor:
        r""":math:`q f(p/q) = p\,f(u)/u` for a huge ratio :math:`u = p/q`, from ``p`` and ``log u``.

        ``large_ratio_term`` when the record has one, else :math:`p \lim_{u\to\infty} f(u)/u`
        (which needs a finite ``slope_at_infinity``).
        """
        if self.large_ratio_term is not None:
            return self.large_ratio_term(p, log_u)
        if not math.isfinite(self.slope_at_infinity):
            raise NotImplementedError(f"{self.name}: f(u)/u is unbounded; the record needs a large_ratio_term")
        return p * self.slope_at_infinity

    def in_domain(self, t: torch.Tensor) -> torch.Tensor:
        """Boolean mask: ``t`` lies in :math:`\\operatorname{dom} f^*`."""
        lo, hi = self.domain
        upper = t <= hi if self.domain_closed else t < hi
        return (t > lo) & upper


_REGISTRY: dict[str, Divergence] = {}


def register(div: Divergence) -> Divergence:
    """Add a record to the registry (one line per new divergence); names must be new."""
    if not isinstance(div, Divergence):
        raise TypeError(f"div must be a Divergence, got {type(div).__name__}")
    if div.name in _REGISTRY:
        raise ValueError(f"a divergence named {div.name!r} is already registered")
    _REGISTRY[div.name] = div
    return div


def available() -> tuple[str, ...]:
    """Names of the registered divergences, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Divergence:
    """The record called ``name`` (a record passes through); an unknown name raises ``ValueError``
    listing the valid ones."""
    if isinstance(name, Divergence):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown divergence {name!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


# --------------------------------------------------------------------------- helpers
def _on_half_line(formula: Fn) -> Fn:
    """Extend a generator defined for u >= 0 by +inf on u < 0 (no NaN, no bad gradient)."""

    def f(u: torch.Tensor) -> torch.Tensor:
        u = torch.as_tensor(u)
        ok = u >= 0
        val = formula(torch.where(ok, u, torch.ones_like(u)))
        return torch.where(ok, val, torch.full_like(val, math.inf))

    return f


def _on_domain(formula: Fn, lo: float, hi: float, closed: bool = False, safe: float | None = None) -> Fn:
    """A conjugate that is ``formula`` on (lo, hi) (or (lo, hi]) and +inf elsewhere."""
    safe = (hi - 1.0 if math.isfinite(hi) else 0.0) if safe is None else safe

    def conj(t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t)
        ok = (t > lo) & ((t <= hi) if closed else (t < hi))
        val = formula(torch.where(ok, t, torch.full_like(t, safe)))
        return torch.where(ok, val, torch.full_like(val, math.inf))

    return conj


def _log_lambertw_exp(s: torch.Tensor, iters: int = 40) -> torch.Tensor:
    r"""``y = log W_0(e^s)``: the root of :math:`e^y + y = s`, stable for any real ``s``.

    Newton's method on the convex increasing map :math:`y \mapsto e^y + y`, started right
    of the root (``y0 = s`` for ``s < 1``, ``log s`` otherwise), converges monotonically.
    The iterations run without autograd; a final Newton step with autograd gives the exact
    derivative :math:`dy/ds = 1/(1 + e^y)` at the root.
    """
    with torch.no_grad():
        y = torch.where(s < 1, s, torch.log(torch.clamp(s, min=1.0)))
        for _ in range(iters):
            y = y - (torch.exp(y) + y - s) / (torch.exp(y) + 1)
    return y - (torch.exp(y) + y - s) / (torch.exp(y).detach() + 1)


def _jeffrey_conjugate(t: torch.Tensor) -> torch.Tensor:
    # f*(t) = W + 1/W + t - 2 with W = W_0(e^{1-t}); with y = log W and e^y = 1 - t - y this is
    # e^{-y} - y - 1, free of the cancellation between W and t for very negative t.
    y = _log_lambertw_exp(1 - t)
    return torch.exp(-y) - y - 1


def _pearson_conjugate(t: torch.Tensor) -> torch.Tensor:
    # sup_{u >= 0} ut - (u-1)^2: at u = 1 + t/2 when t >= -2, at the boundary u = 0 (value -1) below
    return torch.where(t >= -2, t**2 / 4 + t, torch.full_like(t, -1.0))


def _logit_of_exp(a: torch.Tensor) -> torch.Tensor:
    """``v`` with ``logsigmoid(v) = a`` (a < 0): ``v = a - log(1 - e^a)``."""
    return a - torch.log(-torch.expm1(a))


# --------------------------------------------------------------------------- the records
register(Divergence(
    name="kl", title="forward KL",
    f=_on_half_line(lambda u: torch.xlogy(u, u)),
    conjugate=lambda t: torch.exp(torch.as_tensor(t) - 1),
    domain=(-math.inf, math.inf),
    activation=lambda v: v,
    activation_inverse=lambda t: t,
    conjugate_of_activation=lambda v: torch.exp(v - 1),
    optimal_critic=lambda r: 1 + torch.log(r),
    f_prime_one=1.0, slope_at_infinity=math.inf,
    large_ratio_term=lambda p, log_u: p * log_u,  # q u log u = p log u
    tex=dict(divergence=r"\int p \log\frac{p}{q}", f=r"u\log u", conjugate=r"e^{t-1}",
             domain=r"\R", activation=r"v", critic=r"1+\log r"),
))

register(Divergence(
    name="reverse_kl", title="reverse KL",
    f=_on_half_line(lambda u: -torch.log(u)),
    conjugate=_on_domain(lambda t: -1 - torch.log(-t), -math.inf, 0.0),
    domain=(-math.inf, 0.0),
    activation=lambda v: -torch.exp(-v),
    activation_inverse=lambda t: -torch.log(-t),
    conjugate_of_activation=lambda v: v - 1,
    optimal_critic=lambda r: -1 / r,
    f_prime_one=-1.0, slope_at_infinity=0.0,
    tex=dict(divergence=r"\int q \log\frac{q}{p}", f=r"-\log u", conjugate=r"-1-\log(-t)",
             domain=r"t<0", activation=r"-e^{-v}", critic=r"-1/r"),
))

register(Divergence(
    name="js", title="Jensen-Shannon",
    f=_on_half_line(lambda u: 0.5 * (torch.xlogy(u, u) - torch.xlogy(u + 1, (u + 1) / 2))),
    conjugate=_on_domain(lambda t: -0.5 * torch.log(2 - torch.exp(2 * t)), -math.inf, LOG2 / 2),
    domain=(-math.inf, LOG2 / 2),
    activation=lambda v: 0.5 * (LOG2 + F.logsigmoid(v)),
    activation_inverse=lambda t: _logit_of_exp(2 * t - LOG2),
    conjugate_of_activation=lambda v: 0.5 * (F.softplus(v) - LOG2),
    optimal_critic=lambda r: 0.5 * (LOG2 - torch.log1p(1 / r)),
    f_prime_one=0.0, slope_at_infinity=LOG2 / 2,
    tex=dict(divergence=r"\tfrac12\int p\log\frac{2p}{p+q} + q\log\frac{2q}{p+q}",
             f=r"\tfrac12\left[u\log u-(u+1)\log\tfrac{u+1}{2}\right]",
             conjugate=r"-\tfrac12\log\left(2-e^{2t}\right)", domain=r"t<\tfrac12\log 2",
             activation=r"\tfrac12\left(\log 2-\log(1+e^{-v})\right)",
             critic=r"\tfrac12\log\frac{2r}{1+r}"),
    note=("Nowozin et al. (2016) print f(u) = u log u - (u+1) log((u+1)/2) next to JS with the factor 1/2; "
          "that f gives 2 JS. Here f carries the 1/2, so D_js = JS and f*(t) = -log(2 - e^{2t})/2."),
))

register(Divergence(
    name="gan", title="GAN",
    f=_on_half_line(lambda u: torch.xlogy(u, u) - torch.xlogy(u + 1, u + 1)),
    conjugate=_on_domain(lambda t: -torch.log(-torch.expm1(t)), -math.inf, 0.0),
    domain=(-math.inf, 0.0),
    activation=F.logsigmoid,
    activation_inverse=_logit_of_exp,
    conjugate_of_activation=F.softplus,
    optimal_critic=lambda r: -torch.log1p(1 / r),
    f_prime_one=-LOG2, slope_at_infinity=0.0, f_at_one=-2 * LOG2,
    tex=dict(divergence=r"\int p\log\frac{2p}{p+q} + q\log\frac{2q}{p+q} - \log 4",
             f=r"u\log u-(u+1)\log(u+1)", conjugate=r"-\log\left(1-e^{t}\right)", domain=r"t<0",
             activation=r"-\log(1+e^{-v})", critic=r"\log\frac{r}{1+r}"),
    note="f(1) = -log 4, so D_gan = 2 JS - log 4 can be negative; it is not a divergence in the strict sense.",
))

register(Divergence(
    name="pearson", title="Pearson chi2",
    f=_on_half_line(lambda u: (u - 1) ** 2),
    conjugate=lambda t: _pearson_conjugate(torch.as_tensor(t)),
    domain=(-math.inf, math.inf),
    activation=lambda v: v,
    activation_inverse=lambda t: t,
    conjugate_of_activation=lambda v: _pearson_conjugate(v),
    optimal_critic=lambda r: 2 * (r - 1),
    f_prime_one=0.0, slope_at_infinity=math.inf,
    large_ratio_term=lambda p, log_u: torch.exp(torch.log(p) + log_u),  # q (u-1)^2 = p^2/q (1 + O(1/u))
    tex=dict(divergence=r"\int \frac{(p-q)^2}{q}", f=r"(u-1)^2",
             conjugate=r"\tfrac14 t^2+t \;(t\ge -2),\; -1 \;(t<-2)", domain=r"\R",
             activation=r"v", critic=r"2(r-1)"),
    note=("Nowozin et al. (2016) give f*(t) = t^2/4 + t, the conjugate of (u-1)^2 on the whole real line; "
          "for u >= 0 the supremum sits at u = 0 when t < -2, so f*(t) = -1 there."),
))

register(Divergence(
    name="neyman", title="Neyman chi2",
    f=_on_half_line(lambda u: (1 - u) ** 2 / u),
    conjugate=_on_domain(lambda t: 2 - 2 * torch.sqrt(1 - t), -math.inf, 1.0),
    domain=(-math.inf, 1.0),
    activation=lambda v: -torch.expm1(-v),
    activation_inverse=lambda t: -torch.log1p(-t),
    conjugate_of_activation=lambda v: 2 - 2 * torch.exp(-v / 2),
    optimal_critic=lambda r: 1 - r ** -2,
    f_prime_one=0.0, slope_at_infinity=1.0,
    tex=dict(divergence=r"\int \frac{(p-q)^2}{p}", f=r"\frac{(1-u)^2}{u}", conjugate=r"2-2\sqrt{1-t}",
             domain=r"t<1", activation=r"1-e^{-v}", critic=r"1-1/r^2"),
))

register(Divergence(
    name="hellinger", title="squared Hellinger",
    f=_on_half_line(lambda u: (torch.sqrt(u) - 1) ** 2),
    conjugate=_on_domain(lambda t: t / (1 - t), -math.inf, 1.0),
    domain=(-math.inf, 1.0),
    activation=lambda v: -torch.expm1(-v),
    activation_inverse=lambda t: -torch.log1p(-t),
    conjugate_of_activation=torch.expm1,
    optimal_critic=lambda r: 1 - r ** -0.5,
    f_prime_one=0.0, slope_at_infinity=1.0,
    large_ratio_term=lambda p, log_u: p * torch.expm1(-log_u / 2) ** 2,  # (sqrt p - sqrt q)^2 exactly
    tex=dict(divergence=r"\int \left(\sqrt p-\sqrt q\right)^2", f=r"\left(\sqrt u-1\right)^2",
             conjugate=r"\frac{t}{1-t}", domain=r"t<1", activation=r"1-e^{-v}", critic=r"1-1/\sqrt r"),
))

register(Divergence(
    name="tv", title="total variation",
    f=_on_half_line(lambda u: 0.5 * torch.abs(u - 1)),
    conjugate=_on_domain(lambda t: torch.clamp(t, min=-0.5), -math.inf, 0.5, closed=True),
    domain=(-math.inf, 0.5), domain_closed=True,
    activation=lambda v: 0.5 * torch.tanh(v),
    activation_inverse=lambda t: torch.atanh(2 * t),
    conjugate_of_activation=lambda v: 0.5 * torch.tanh(v),
    optimal_critic=lambda r: 0.5 * torch.sign(r - 1),
    f_prime_one=0.0, slope_at_infinity=0.5,
    tex=dict(divergence=r"\tfrac12\int \lvert p-q\rvert", f=r"\tfrac12\lvert u-1\rvert",
             conjugate=r"\max(t,-\tfrac12)", domain=r"t\le\tfrac12",
             activation=r"\tfrac12\tanh v", critic=r"\tfrac12\operatorname{sign}(r-1)"),
    note=("Nowozin et al. (2016) give f*(t) = t on |t| <= 1/2, the conjugate of |u-1|/2 on the whole real line; "
          "for u >= 0 it is max(t, -1/2) on t <= 1/2. Both agree on the range (-1/2, 1/2) of the activation. "
          "f is not differentiable at 1: f'(1) = 0 is the symmetric subgradient."),
))

register(Divergence(
    name="jeffrey", title="Jeffrey",
    f=_on_half_line(lambda u: (u - 1) * torch.log(u)),
    conjugate=_jeffrey_conjugate,
    domain=(-math.inf, math.inf),
    activation=lambda v: v,
    activation_inverse=lambda t: t,
    conjugate_of_activation=_jeffrey_conjugate,
    optimal_critic=lambda r: 1 + torch.log(r) - 1 / r,
    f_prime_one=0.0, slope_at_infinity=math.inf,
    large_ratio_term=lambda p, log_u: p * log_u,  # q (u-1) log u = p log u (1 + O(1/u))
    tex=dict(divergence=r"\int (p-q)\log\frac{p}{q}", f=r"(u-1)\log u",
             conjugate=r"W(e^{1-t})+\frac{1}{W(e^{1-t})}+t-2", domain=r"\R", activation=r"v",
             critic=r"1+\log r-1/r"),
    note="f* has no elementary closed form: W is the Lambert W function (principal branch), computed by Newton.",
))


# --------------------------------------------------------------------------- divergences
def _as_prob_tensor(x: Any, name: str) -> torch.Tensor:
    x = as_float_tensor(x, name, "probabilities")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one entry along its last axis, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite")
    if (x < 0).any():
        raise ValueError(f"{name} must be non-negative (probabilities or densities), got a minimum of {float(x.min()):.3g}")
    return x


def f_divergence(name: str, p: Any, q: Any, *, dx: float | None = None, atol: float | None = None) -> torch.Tensor:
    r"""Exact :math:`D_f(P\|Q)` of discrete distributions, or of densities on a uniform grid.

    .. math::
        D_f(P\|Q) = \sum_i q_i\, f(p_i / q_i) \quad\text{(times } \Delta x \text{ for densities)},

    with the conventions :math:`0 f(0/0) = 0` and :math:`0 f(p/0) = p \lim_{u\to\infty} f(u)/u`
    (``+inf`` for KL, Pearson, Jeffrey). See chapter "f-divergences and their variational
    representation", {prf:ref}`def-fdiv-divergence`.

    Parameters
    ----------
    name : str
        A registered divergence (:func:`available`).
    p, q : Tensor or array, shape ``(..., K)``
        Probabilities (``dx=None``; each row sums to 1) or density values on a grid of spacing
        ``dx`` (each row integrates to 1 by the Riemann sum). Same shape; non-negative.
    dx : float, optional
        Grid spacing for densities.
    atol : float, optional
        Allowed normalisation error: default ``1e-6`` (discrete) or ``1e-3`` (grid).

    Returns
    -------
    Tensor, shape ``(...)``, in the dtype of ``p`` and ``q``.

    Examples
    --------
    >>> f_divergence("tv", [0.5, 0.5], [1.0, 0.0])
    tensor(0.5000, dtype=torch.float64)
    """
    div = get(name)
    p, q = _as_prob_tensor(p, "p"), _as_prob_tensor(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    if dx is not None and not (isinstance(dx, (int, float)) and dx > 0 and math.isfinite(dx)):
        raise ValueError(f"dx must be a positive finite grid spacing, got {dx!r}")
    dtype = torch.promote_types(p.dtype, q.dtype)
    p, q = p.to(dtype), q.to(dtype)
    w = 1.0 if dx is None else float(dx)
    atol = (1e-6 if dx is None else 1e-3) if atol is None else atol
    for label, x in (("p", p), ("q", q)):
        total = x.sum(-1) * w
        if ((total - 1).abs() > atol).any():
            what = "sum" if dx is None else "integrate (sum times dx)"
            raise ValueError(f"{label} must {what} to 1 within {atol:g}; got totals from "
                             f"{float(total.min()):.6g} to {float(total.max()):.6g}")
    pos = q > 0
    ratio = torch.where(pos, p / torch.where(pos, q, torch.ones_like(q)), torch.ones_like(q))
    # A ratio beyond max_float**(1/4) (q subnormal, or tiny next to p) overflows, or f(ratio) does
    # ((u-1)^2, or inf - inf = NaN in u log u - ...): there q f(p/q) = p f(u)/u is evaluated from
    # log u = log p - log q by the record's large_ratio, with a relative error of order log(u)/u,
    # below rounding (1e-75 in float64, 5e-9 in float32).
    huge = pos & ~(ratio <= torch.finfo(dtype).max ** 0.25)
    safe_ratio = torch.where(huge, torch.ones_like(ratio), ratio)
    inner = torch.where(pos & ~huge, q * div.f(safe_ratio), torch.zeros_like(q))
    if bool(huge.any()):
        tiny = torch.finfo(dtype).tiny
        log_u = torch.log(torch.where(huge, p, torch.ones_like(p))) - torch.log(torch.where(huge, q, torch.full_like(q, tiny)))
        inner = torch.where(huge, div.large_ratio(torch.where(huge, p, torch.ones_like(p)), log_u), inner)
    slope = torch.as_tensor(div.slope_at_infinity, dtype=dtype, device=p.device)
    only_p = (~pos) & (p > 0)
    outer = torch.where(only_p, p * slope, torch.zeros_like(p))
    return (inner + outer).sum(-1) * w


def _check_critic_output(v: Any, name: str) -> torch.Tensor:
    if not isinstance(v, torch.Tensor) or not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of raw critic outputs")
    if v.numel() == 0:
        raise ValueError(f"{name} is empty")
    return v


def variational_bound(name: str, v_p: torch.Tensor, v_q: torch.Tensor) -> torch.Tensor:
    r"""The f-GAN objective from raw critic outputs, computed stably.

    .. math::
        F = \frac1{N}\sum_{i} g_f(v_i^P) - \frac1{M}\sum_j f^*\!\big(g_f(v_j^Q)\big)
        \;\le\; D_f(P\|Q),

    where ``v_p`` are the critic's raw outputs on samples of :math:`P` and ``v_q`` on samples
    of :math:`Q`. :math:`f^* \circ g_f` is evaluated as one stable expression (softplus /
    logsigmoid for ``gan`` and ``js``), so the value is finite wherever the mathematics is;
    only conjugates that truly diverge (``kl``: :math:`e^{v-1}`, ``jeffrey``) overflow.
    See {prf:ref}`thm-fdiv-variational-bound`.

    Parameters
    ----------
    name : str
        A registered divergence.
    v_p, v_q : Tensor, any shapes (averaged over all entries)

    Returns
    -------
    Tensor, scalar, differentiable in ``v_p`` and ``v_q``.
    """
    div = get(name)
    v_p, v_q = _check_critic_output(v_p, "v_p"), _check_critic_output(v_q, "v_q")
    return div.activation(v_p).mean() - div.conjugate_of_activation(v_q).mean()


def make_fgan_step(
    names: str | tuple[str, ...] | list[str],
    generator: torch.nn.Module,
    critic: torch.nn.Module,
    generator_optimizer: torch.optim.Optimizer,
    critic_optimizer: torch.optim.Optimizer,
    *,
    noise: Callable[[int], torch.Tensor],
    critic_steps: int = 1,
    clip_grad_norm: float | None = None,
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    r"""Step function for :func:`gencore.train.fit`: f-GAN saddle-point updates.

    On a minibatch ``x`` of data (:math:`P`), ``critic_steps`` ascent steps of the critic on
    :math:`F(\theta, \omega) = \E_P[g_f(V_\omega)] - \E_{Q_\theta}[f^*(g_f(V_\omega))]`, then one
    descent step of the generator on the same :math:`F` (only its second term depends on
    :math:`\theta`). See chapter "f-GAN: variational divergence minimisation",
    {prf:ref}`prop-fgan-saddle`.

    Parameters
    ----------
    names : str or sequence of K str
        One registered divergence; or ``K`` distinct names to train ``K`` independent
        (generator, critic) pairs at once, member ``k`` under ``names[k]`` (see
        :func:`ensemble_mlp`).
    generator, critic : nn.Module
        One name: ``generator(noise(n))`` has the shape of ``x`` ``(N, d)`` and ``critic`` maps
        ``(N, d)`` to raw outputs :math:`v` of shape ``(N,)`` or ``(N, 1)``.
        ``K`` names: ``generator(noise(n))`` is ``(K, N, d)``, ``critic`` maps ``(K, N, d)`` to
        ``(K, N)`` or ``(K, N, 1)``; the data batch is shared by the ``K`` members.
    generator_optimizer, critic_optimizer : torch.optim.Optimizer
    noise : callable
        ``noise(n)`` returns the latent draws on the training device.
    critic_steps : int
        Critic updates per generator update (>= 1).
    clip_grad_norm : float, optional
        Clip the gradient norm of each network (of each member, with ``K`` names) before its update. Divergences whose conjugate
        is unbounded (KL: :math:`e^{t-1}`) give unbounded critic values and gradients while
        :math:`Q` misses part of :math:`P`; clipping bounds the size of each update.

    Returns
    -------
    callable
        ``step(x) -> dict``: ``"bound"`` (one name) or ``"bound/<name>"`` for each member: the
        critic's bound on :math:`D_f(P\|Q_\theta)` before the generator update.
    """
    single = isinstance(names, str)
    names = (names,) if single else tuple(names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"names must be one name or distinct names, got {names!r}")
    for name in names:
        get(name)
    if isinstance(critic_steps, bool) or not isinstance(critic_steps, int) or critic_steps < 1:
        raise ValueError(f"critic_steps must be a positive integer, got {critic_steps!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"clip_grad_norm must be > 0 or None, got {clip_grad_norm!r}")
    k = len(names)

    def clip(params: list[torch.Tensor]) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if single:
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
            return
        if any(g.ndim == 0 or g.shape[0] != k for g in grads):
            raise ValueError(f"with {k} names, every parameter must have a leading dimension of size {k} "
                             "(one slice per member) to clip each member's gradient separately")
        norms = torch.stack([g.reshape(k, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        scale = torch.clamp(clip_grad_norm / (norms + 1e-6), max=1.0)
        for g in grads:
            g.mul_(scale.reshape(k, *([1] * (g.ndim - 1))))

    def update(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm is not None:  # per member, so the K members stay independent runs
            clip([p for group in optimizer.param_groups for p in group["params"]])
        optimizer.step()

    def outputs(x: torch.Tensor) -> torch.Tensor:
        v = critic(x)
        if single:
            return v.reshape(1, -1)
        if v.shape[0] != k:
            raise ValueError(f"critic must return K={k} rows of outputs, got shape {tuple(v.shape)}")
        return v.reshape(k, -1)

    def step(x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(x, torch.Tensor):
            raise TypeError("the f-GAN step expects a data tensor as its batch")
        n = len(x)
        real = x if single else x.unsqueeze(0).expand(k, *x.shape)
        for _ in range(critic_steps):
            with torch.no_grad():
                fake = generator(noise(n))
            v_p, v_q = outputs(real), outputs(fake)
            bounds = torch.stack([variational_bound(nm, v_p[i], v_q[i]) for i, nm in enumerate(names)])
            update(-bounds.sum(), critic_optimizer)
        v_q = outputs(generator(noise(n)))
        g_losses = torch.stack([-get(nm).conjugate_of_activation(v_q[i]).mean() for i, nm in enumerate(names)])
        update(g_losses.sum(), generator_optimizer)
        if single:
            return {"bound": bounds[0].detach(), "generator_loss": g_losses[0].detach()}
        return {f"bound/{nm}": bounds[i].detach() for i, nm in enumerate(names)}

    return step


def _gaussian_grid_densities(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, dx: float) -> torch.Tensor:
    """Rows of N(mu_k, sigma_k^2) on the grid ``x``, each renormalised by its Riemann sum."""
    log_q = -0.5 * ((x[None, :] - mu[:, None]) / sigma[:, None]) ** 2 - torch.log(sigma)[:, None]
    q = torch.exp(log_q - log_q.max(1, keepdim=True).values)
    return q / (q.sum(1, keepdim=True) * dx)


def gaussian_fit_starts(mean: float, std: float, sigma_bounds: tuple[float, float] = (0.05, 10.0)
                        ) -> list[tuple[float, float]]:
    r"""The deterministic start set of :func:`best_gaussian`: 11 means times 9 widths.

    .. math::
        \mu_j = m + s\,\tfrac{j}{5}\cdot 2.5, \quad j = -5, \dots, 5, \qquad
        \sigma_k = s \cdot 2^{k/2 - 3}, \quad k = 0, \dots, 8,

    with :math:`m, s` the mean and standard deviation of :math:`P`: means from :math:`m - 2.5 s`
    to :math:`m + 2.5 s`, widths from :math:`s/8` to :math:`2 s` (clipped to ``sigma_bounds``).
    """
    lo, hi = sigma_bounds
    return [(mean + std * 2.5 * j / 5, min(max(std * 2.0 ** (k / 2 - 3), lo), hi))
            for j in range(-5, 6) for k in range(9)]


def best_gaussian(
    name: str,
    pdf: Callable[[torch.Tensor], torch.Tensor],
    *,
    grid: torch.Tensor,
    starts: Any = None,
    n_local: int = 4,
    sigma_bounds: tuple[float, float] = (0.05, 10.0),
) -> tuple[float, float, float]:
    r"""The Gaussian :math:`Q = \N(\mu, \sigma^2)` that minimises :math:`D_f(P\|Q)`, globally, by quadrature.

    .. math::
        (\mu^\star, \sigma^\star) = \argmin_{\mu, \sigma}\; \sum_i q_{\mu,\sigma}(x_i)\,
        f\!\left(\frac{p(x_i)}{q_{\mu,\sigma}(x_i)}\right) \Delta x

    on a uniform ``grid``. The objective can have several basins (a bimodal :math:`P` has one
    per mode and one that covers both), so a single local search is not enough. The search is
    global over a deterministic start set: the objective is evaluated at every start
    (:func:`gaussian_fit_starts`, 99 points around the mean and width of :math:`P`), and
    Nelder-Mead (``scipy.optimize``, over :math:`(\mu, \log\sigma)`) runs from the ``n_local``
    best of them; the best local minimum is returned. The reference answer of the
    mode-covering experiment of chapter "f-divergences and their variational representation"
    and of the Gaussian-fit experiment of chapter "f-GAN: variational divergence minimisation".

    Parameters
    ----------
    name : str
        A registered divergence.
    pdf : callable
        Density of :math:`P` on a float64 tensor of grid points.
    grid : Tensor ``(K,)``
        Uniform grid wide enough to hold :math:`P` and every candidate :math:`Q`.
    starts : sequence of (float, float), optional
        Candidate :math:`(\mu, \sigma)` starts; default :func:`gaussian_fit_starts`. A single
        start gives a plain local search (it can stop in a local minimum).
    n_local : int
        Number of best starts refined by Nelder-Mead (>= 1).
    sigma_bounds : (float, float)
        Search range of :math:`\sigma`; :math:`\mu` is searched within the grid.

    Returns
    -------
    (mu, sigma, divergence) : floats
    """
    from scipy import optimize

    get(name)
    x = torch.as_tensor(grid, dtype=torch.float64).flatten()
    if x.numel() < 3:
        raise ValueError(f"grid must hold at least 3 points, got {x.numel()}")
    steps = x[1:] - x[:-1]
    dx = float(steps.mean())
    if dx <= 0 or float((steps - dx).abs().max()) > 1e-6 * max(1.0, abs(dx)):
        raise ValueError("grid must be increasing and uniformly spaced")
    lo_s, hi_s = sigma_bounds
    if not 0 < lo_s < hi_s:
        raise ValueError(f"sigma_bounds must satisfy 0 < lo < hi, got {sigma_bounds!r}")
    if isinstance(n_local, bool) or not isinstance(n_local, int) or n_local < 1:
        raise ValueError(f"n_local must be a positive integer, got {n_local!r}")
    p = torch.as_tensor(pdf(x), dtype=torch.float64)
    p = p / (p.sum() * dx)
    if starts is None:
        mean = float((x * p).sum() * dx)
        std = math.sqrt(max(float(((x - mean) ** 2 * p).sum() * dx), 1e-12))
        starts = gaussian_fit_starts(mean, std, sigma_bounds)
    starts = [(float(m), float(s)) for m, s in starts]
    if not starts or any(not (s > 0 and math.isfinite(m)) for m, s in starts):
        raise ValueError("starts must be a non-empty sequence of (mu, sigma) with sigma > 0")
    mu0 = torch.tensor([m for m, _ in starts], dtype=torch.float64)
    sigma0 = torch.tensor([min(max(s, lo_s), hi_s) for _, s in starts], dtype=torch.float64)
    q0 = _gaussian_grid_densities(x, mu0, sigma0, dx)
    values = f_divergence(name, p.expand_as(q0), q0, dx=dx, atol=1e-2)
    order = torch.argsort(torch.nan_to_num(values, nan=math.inf), stable=True)[:n_local].tolist()

    def objective(theta) -> float:
        q = _gaussian_grid_densities(x, torch.tensor([float(theta[0])], dtype=torch.float64),
                                     torch.tensor([math.exp(float(theta[1]))], dtype=torch.float64), dx)
        return float(f_divergence(name, p, q[0], dx=dx, atol=1e-2))

    bounds = [(float(x[0]), float(x[-1])), (math.log(lo_s), math.log(hi_s))]
    best = None
    for i in order:
        res = optimize.minimize(objective, [float(mu0[i]), math.log(float(sigma0[i]))], method="Nelder-Mead",
                                bounds=bounds, options=dict(xatol=1e-6, fatol=1e-10, maxiter=2000))
        if best is None or res.fun < best.fun:
            best = res
    return float(best.x[0]), math.exp(float(best.x[1])), float(best.fun)


def critic_bound_on_grid(name: str, v: torch.Tensor, p: torch.Tensor, q: torch.Tensor, dx: float) -> torch.Tensor:
    r"""The variational bound of a critic by quadrature, without sampling noise.

    .. math::
        F(T) = \sum_i \big[p(x_i)\, g_f(v_i) - q(x_i)\, f^*(g_f(v_i))\big]\,\Delta x
        \;\le\; D_f(P\|Q),

    with :math:`v_i` the critic's raw output at the grid point :math:`x_i` (chapter
    "f-divergences and their variational representation", {prf:ref}`thm-fdiv-variational-bound`).
    ``v``, ``p``, ``q`` have shape ``(..., K)``; returns shape ``(...)``.
    """
    div = get(name)
    v = _check_critic_output(v, "v")
    return (p * div.activation(v) - q * div.conjugate_of_activation(v)).sum(-1) * dx


def bound_shortfall(name: str, bound: Any, exact: Any) -> torch.Tensor:
    r"""Fraction of the divergence that a critic's bound misses.

    .. math::
        s = \frac{D_f(P\|Q) - F(T)}{D_f(P\|Q) - f(1)} ,

    0 at the optimal critic :math:`T^*` and 1 for the best *constant* critic (whose bound is
    :math:`\sup_c\, c - f^*(c) = f^{**}(1) = f(1)`), for every divergence alike, so a check
    ``s <= 0.1`` fails for a critic that learned nothing, whatever the size of :math:`D_f`.
    """
    div = get(name)
    bound, exact = torch.as_tensor(bound, dtype=torch.float64), torch.as_tensor(exact, dtype=torch.float64)
    return (exact - bound) / (exact - div.f_at_one)


def table(names: tuple[str, ...] | None = None) -> str:
    r"""The registry as a Markdown table (LaTeX cells): :math:`D_f`, f, f*, dom f*, g_f, f'(1), T*.

    The chapter displays this string, so the printed table is the registered code. No cell holds
    a raw ``|`` (it would split the row): bars are ``\lvert``/``\rvert`` and ``\Vert``.
    """
    rows = ["| name | $D_f(P\\Vert Q)$ | $f(u)$ | $f^*(t)$ | $\\operatorname{dom} f^*$ | $g_f(v)$ | $f'(1)$ | $T^*(r)$ |",
            "|---|---|---|---|---|---|---|---|"]
    for key in names or available():
        d = get(key)
        fp1 = {0.0: "0", 1.0: "1", -1.0: "-1", -LOG2: r"-\log 2"}.get(d.f_prime_one, f"{d.f_prime_one:.4g}")
        t = d.tex
        rows.append(f"| {d.title} | ${t['divergence']}$ | ${t['f']}$ | ${t['conjugate']}$ | ${t['domain']}$ | "
                    f"${t['activation']}$ | ${fp1}$ | ${t['critic']}$ |")
    return "\n".join(rows)
