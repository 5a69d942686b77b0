r"""Exact optimal transport: the Kantorovich linear program, its duals, and closed forms.

See chapter "Optimal transport and Wasserstein distances" ({prf:ref} ``thm-ot-kr-duality``,
``prop-ot-1d-quantile``, ``prop-ot-gaussian-w2``).

For histograms :math:`a \in \R_+^n`, :math:`b \in \R_+^m` of equal mass and a cost matrix
:math:`C \in \R^{n\times m}`, the Kantorovich problem is the linear program

.. math::
    \mathrm{OT}(a, b; C) = \min_{P \in U(a,b)} \langle P, C\rangle, \qquad
    U(a, b) = \{P \ge 0 : P \mathbf 1_m = a,\ P^\top \mathbf 1_n = b\}.

With :math:`C_{ij} = \|x_i - y_j\|^p`, :math:`W_p = \mathrm{OT}^{1/p}`.

Functions accept NumPy arrays or torch tensors; results follow the input (a tensor on the
input's device and dtype when any input is a tensor, NumPy / ``float`` otherwise). The LPs are
solved on the CPU with SciPy's HiGHS (dual simplex, no presolve, tolerances 1e-10 on rescaled
data: robust to masses spanning many orders of magnitude); they are meant for problems up to a
few hundred points.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse
import torch

from gencore._validate import as_float_tensor

__all__ = [
    "KantorovichDual",
    "LipschitzDual",
    "gaussian_w2",
    "kantorovich_dual",
    "kantorovich_rubinstein_dual",
    "ot_cost",
    "ot_plan",
    "wasserstein_1d",
]

Array = Any  # np.ndarray | torch.Tensor


# --------------------------------------------------------------------------- validation
def _reference_tensor(*xs: Array) -> torch.Tensor | None:
    """The first torch tensor among the inputs (its device/dtype decide the output), or None."""
    for x in xs:
        if isinstance(x, torch.Tensor):
            return x
    return None


def _np64(x: Array, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array or tensor, got {type(x).__name__}") from exc


def _out(x: np.ndarray | float, ref: torch.Tensor | None):
    """Return ``x`` as a tensor like ``ref`` (device, floating dtype), or as NumPy/float."""
    if ref is None:
        return float(x) if np.ndim(x) == 0 else x
    dtype = ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=ref.device)


def _check_histogram(w: np.ndarray, name: str, size: int | None = None) -> None:
    if w.ndim != 1:
        raise ValueError(f"{name} must be a 1-D histogram, got shape {w.shape}")
    if size is not None and w.shape[0] != size:
        raise ValueError(f"{name} must have {size} entries, got {w.shape[0]}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} must be finite")
    if np.any(w < 0):
        raise ValueError(f"{name} must be non-negative (weights of a measure), got min {w.min():.3g}")


def _validate_ot_inputs(a: Array, b: Array, cost: Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    C = _np64(cost, "cost")
    if C.ndim != 2:
        raise ValueError(f"cost must be a matrix of shape (n, m), got shape {C.shape}")
    n, m = C.shape
    a_ = np.full(n, 1.0 / n) if a is None else _np64(a, "a")
    b_ = np.full(m, 1.0 / m) if b is None else _np64(b, "b")
    if a_.ndim != 1 or b_.ndim != 1:
        raise ValueError(f"a and b must be 1-D histograms, got shapes {a_.shape} and {b_.shape}")
    if a_.shape[0] != n or b_.shape[0] != m:
        raise ValueError(
            f"cost must have shape (len(a), len(b)) = ({a_.shape[0]}, {b_.shape[0]}), got {C.shape}")
    _check_histogram(a_, "a")
    _check_histogram(b_, "b")
    if not np.all(np.isfinite(C)):
        raise ValueError("cost must be finite")
    sa, sb = a_.sum(), b_.sum()
    if sa <= 0:
        raise ValueError("a must have positive total mass")
    if abs(sa - sb) > 1e-6 * max(sa, sb):
        raise ValueError(f"a and b must have the same total mass, got sum(a)={sa:.6g} and sum(b)={sb:.6g}")
    return a_, b_, C


def _marginal_matrix(n: int, m: int) -> scipy.sparse.csr_matrix:
    """The (n + m, n m) matrix A with A vec(P) = (P 1_m, P^T 1_n) (row-major vec)."""
    rows = scipy.sparse.kron(scipy.sparse.eye(n), np.ones((1, m)))
    cols = scipy.sparse.kron(np.ones((1, n)), scipy.sparse.eye(m))
    return scipy.sparse.vstack([rows, cols]).tocsr()


# HiGHS options. Its default tolerances are absolute (1e-7) and its presolve drops rows it judges
# negligible; on histograms whose masses span many orders of magnitude (discretised Gaussians:
# half the masses below 1e-7) that made feasible problems "infeasible" and costs off by 1e-6
# relative. So: no presolve, the tightest tolerances HiGHS accepts, and the LP solved on rescaled
# data (masses with mean entry one, costs with largest entry one; see `_scales`).
_HIGHS_OPTIONS = dict(presolve=False, primal_feasibility_tolerance=1e-10, dual_feasibility_tolerance=1e-10)
_METHODS = ("highs-ds", "highs-ipm")        # dual simplex (a vertex: a sparse plan); interior point as fallback


def _linprog(c, **kw) -> scipy.optimize.OptimizeResult:
    """``scipy.optimize.linprog`` with the robust options above; one retry with another method."""
    messages = []
    for method in _METHODS:
        res = scipy.optimize.linprog(c, method=method, options=_HIGHS_OPTIONS, **kw)
        if res.status == 0:
            return res
        messages.append(f"{method}: {res.message}")
    raise RuntimeError("linear program failed: " + "; ".join(messages))


def _scales(a: np.ndarray, b: np.ndarray, C: np.ndarray) -> tuple[float, float]:
    """Factors ``s`` (masses) and ``c`` (costs) with which the LP is solved on ``s a, s b, C / c``.

    ``s = (n + m) / (2 sum(a))`` makes the mean mass entry about one, so that HiGHS's absolute
    feasibility tolerance is a relative one (1e-10 of a typical mass, 1e-10 / (n + m) of the total);
    ``c = max |C|`` does the same for the dual tolerance. The plan is ``P / s``, potentials ``c f``.
    """
    s = (a.size + b.size) / (2.0 * a.sum())
    c = float(np.abs(C).max())
    return s, (c if c > 0 else 1.0)


# --------------------------------------------------------------------------- primal
def _solve_primal(a: np.ndarray, b: np.ndarray, C: np.ndarray, clip: bool = True) -> np.ndarray:
    """The LP's optimal plan. HiGHS returns entries >= -1e-10 (its tolerance, in rescaled units);
    ``clip`` sets those round-off negatives to 0 (``clip=False`` gives the raw solution, for tests)."""
    n, m = C.shape
    s, c = _scales(a, b, C)
    res = _linprog((C / c).ravel(), A_eq=_marginal_matrix(n, m), b_eq=s * np.concatenate([a, b]),
                   bounds=(0, None))
    P = res.x.reshape(n, m) / s
    return np.clip(P, 0.0, None) if clip else P


def ot_plan(a: Array | None, b: Array | None, cost: Array):
    r"""Optimal coupling of the Kantorovich problem, solved exactly as a linear program.

    .. math::
        P^\star \in \argmin_{P \ge 0,\ P\mathbf 1 = a,\ P^\top \mathbf 1 = b} \langle P, C\rangle

    Parameters
    ----------
    a : array or tensor ``(n,)``, non-negative, or None for uniform ``1/n``
    b : array or tensor ``(m,)``, non-negative, same total mass as ``a``; None for uniform
    cost : array or tensor ``(n, m)``, finite

    Returns
    -------
    plan : ``(n, m)``, a tensor on the input's device when any input is a tensor, else NumPy.
        The LP solution with round-off negatives (HiGHS's tolerance: 1e-10 of a typical mass)
        set to 0, so ``plan >= 0`` holds by construction; marginals hold to about 1e-11 (absolute).

    Examples
    --------
    >>> import numpy as np
    >>> ot_plan([0.5, 0.5], [0.5, 0.5], np.array([[0.0, 1.0], [1.0, 0.0]]))
    array([[0.5, 0. ],
           [0. , 0.5]])
    """
    a_, b_, C = _validate_ot_inputs(a, b, cost)
    return _out(_solve_primal(a_, b_, C), _reference_tensor(cost, a, b))


def ot_cost(a: Array | None, b: Array | None, cost: Array):
    r"""Exact optimal transport cost :math:`\min_{P\in U(a,b)}\langle P, C\rangle` (an LP).

    With ``cost = |x_i - y_j|**p`` this is :math:`W_p^p`. Same arguments as :func:`ot_plan`.

    Returns
    -------
    float, or a 0-d tensor on the input's device when any input is a tensor.
    """
    a_, b_, C = _validate_ot_inputs(a, b, cost)
    P = _solve_primal(a_, b_, C)
    return _out(float((P * C).sum()), _reference_tensor(cost, a, b))


# --------------------------------------------------------------------------- duals
@dataclass(frozen=True)
class KantorovichDual:
    """Solution of the Kantorovich dual LP: potentials ``f (n,)``, ``g (m,)`` and its value."""

    f: Array
    g: Array
    value: Any


def kantorovich_dual(a: Array | None, b: Array | None, cost: Array) -> KantorovichDual:
    r"""Solve the dual linear program of discrete optimal transport.

    .. math::
        \max_{f\in\R^n,\ g\in\R^m} \langle a, f\rangle + \langle b, g\rangle
        \quad\text{s.t.}\quad f_i + g_j \le C_{ij}\ \ \forall i, j.

    Strong duality says the value equals :func:`ot_cost`; the LP is solved on its own (not
    read off the primal solver's multipliers), so comparing the two is a real check.

    Returns
    -------
    KantorovichDual
        ``f (n,)``, ``g (m,)`` and ``value`` (float or 0-d tensor, following the input).
    """
    a_, b_, C = _validate_ot_inputs(a, b, cost)
    n, m = C.shape
    s, c = _scales(a_, b_, C)
    res = _linprog(-s * np.concatenate([a_, b_]), A_ub=_marginal_matrix(n, m).T.tocsr(), b_ub=(C / c).ravel(),
                   bounds=(None, None))
    ref = _reference_tensor(cost, a, b)
    f, g = c * res.x[:n], c * res.x[n:]
    return KantorovichDual(f=_out(f, ref), g=_out(g, ref), value=_out(float(a_ @ f + b_ @ g), ref))


@dataclass(frozen=True)
class LipschitzDual:
    """Solution of the Kantorovich–Rubinstein dual on a grid: the critic values ``(n,)`` and W1."""

    critic: Array
    value: Any


def kantorovich_rubinstein_dual(a: Array, b: Array, points: Array) -> LipschitzDual:
    r"""W1 by Kantorovich–Rubinstein duality, as an LP over 1-Lipschitz functions on a grid.

    For two histograms ``a``, ``b`` on the same support points :math:`x_1..x_n`,

    .. math::
        W_1(a, b) = \max_{f \in \R^n} \sum_i f_i (a_i - b_i)
        \quad\text{s.t.}\quad f_i - f_j \le \|x_i - x_j\|_2\ \ \forall i \ne j,

    i.e. the maximum over functions that are 1-Lipschitz on the points (the constant is fixed
    by ``f_1 = 0``). It has :math:`n(n-1)` constraints: keep ``n`` to a few hundred.

    Parameters
    ----------
    a, b : ``(n,)`` non-negative, equal mass
    points : ``(n,)`` or ``(n, d)`` support points

    Returns
    -------
    LipschitzDual
        ``critic (n,)`` (the optimal f on the points) and ``value`` (W1).
    """
    x = _np64(points, "points")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"points must have shape (n,) or (n, d), got {x.shape}")
    n = x.shape[0]
    D = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    a_, b_, _ = _validate_ot_inputs(a, b, D)
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    k = np.arange(len(i))
    A = scipy.sparse.csr_matrix(
        (np.concatenate([np.ones(len(k)), -np.ones(len(k))]), (np.concatenate([k, k]), np.concatenate([i, j]))),
        shape=(len(k), n))
    bounds = [(0.0, 0.0)] + [(None, None)] * (n - 1)
    s, c = _scales(a_, b_, D)
    res = _linprog(-s * (a_ - b_), A_ub=A, b_ub=D[i, j] / c, bounds=bounds)
    ref = _reference_tensor(a, b, points)
    critic = c * res.x
    return LipschitzDual(critic=_out(critic, ref), value=_out(float((a_ - b_) @ critic), ref))


# --------------------------------------------------------------------------- closed forms
def _as_tensor(x: Array, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else as_float_tensor(x, name, "numbers")   # any NumPy layout
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if like is not None:
        t = t.to(like.device, like.dtype)
    return t


def _quantile_weights(w: Array | None, x: torch.Tensor, name: str) -> torch.Tensor:
    n = x.shape[-1]
    if w is None:
        return torch.full((n,), 1.0 / n, dtype=x.dtype, device=x.device)
    wt = _as_tensor(w, name, like=x)
    if wt.ndim != 1 or wt.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) like the last axis of the samples, got {tuple(wt.shape)}")
    if not torch.isfinite(wt).all() or (wt < 0).any() or wt.sum() <= 0:
        raise ValueError(f"{name} must be finite, non-negative, with positive sum")
    return wt / wt.sum()


def wasserstein_1d(x: Array, y: Array, p: float = 1, x_weights: Array | None = None,
                   y_weights: Array | None = None):
    r"""Wasserstein-p distance between two 1-D empirical measures through quantile functions.

    .. math::
        W_p(\mu, \nu)^p = \int_0^1 |F_\mu^{-1}(t) - F_\nu^{-1}(t)|^p \dd t,

    which for equal sample sizes and uniform weights is :math:`\frac1n\sum_k |x_{(k)} - y_{(k)}|^p`
    (match sorted samples). See {prf:ref} ``prop-ot-1d-quantile``.

    Parameters
    ----------
    x : ``(..., n)`` samples (leading axes are batch axes, e.g. projections)
    y : ``(..., m)`` samples, batch axes broadcastable with those of ``x``
    p : float >= 1
    x_weights, y_weights : optional ``(n,)`` / ``(m,)`` non-negative weights (normalised here);
        uniform when omitted.

    Returns
    -------
    :math:`W_p` with the batch shape: a tensor like ``x`` when an input is a tensor, else float/NumPy.
    """
    if not (isinstance(p, (int, float)) and p >= 1):
        raise ValueError(f"p must be a number >= 1, got {p!r}")
    ref = _reference_tensor(x, y, x_weights, y_weights)
    xt = _as_tensor(x, "x", like=ref if ref is not None and ref.is_floating_point() else None)
    yt = _as_tensor(y, "y", like=xt)
    if xt.ndim == 0 or yt.ndim == 0 or xt.shape[-1] == 0 or yt.shape[-1] == 0:
        raise ValueError(f"x and y must hold at least one sample on their last axis, got shapes "
                         f"{tuple(xt.shape)} and {tuple(yt.shape)}")
    xs, ix = torch.sort(xt, dim=-1)
    ys, iy = torch.sort(yt, dim=-1)
    if x_weights is None and y_weights is None and xt.shape[-1] == yt.shape[-1]:
        wpp = (xs - ys).abs().pow(p).mean(-1)
    else:
        wx = _quantile_weights(x_weights, xt, "x_weights")[ix]
        wy = _quantile_weights(y_weights, yt, "y_weights")[iy]
        cx, cy = wx.cumsum(-1), wy.cumsum(-1)
        batch = torch.broadcast_shapes(cx.shape[:-1], cy.shape[:-1])
        cx, cy = cx.expand(*batch, -1), cy.expand(*batch, -1)
        xs, ys = xs.expand(*batch, -1).contiguous(), ys.expand(*batch, -1).contiguous()
        t, _ = torch.sort(torch.cat([cx, cy], dim=-1), dim=-1)
        dt = torch.diff(t, dim=-1, prepend=torch.zeros_like(t[..., :1]))
        qx = torch.gather(xs, -1, torch.searchsorted(cx.contiguous(), t).clamp_max(xs.shape[-1] - 1))
        qy = torch.gather(ys, -1, torch.searchsorted(cy.contiguous(), t).clamp_max(ys.shape[-1] - 1))
        wpp = (dt * (qx - qy).abs().pow(p)).sum(-1)
    w = wpp.pow(1.0 / p)
    if ref is None:
        w = w.numpy()
        return float(w) if w.ndim == 0 else w
    return w


def _sqrtm_psd(S: torch.Tensor) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(S)
    return (evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)) @ evecs.transpose(-1, -2)


def gaussian_w2(mu1: Array, cov1: Array, mu2: Array, cov2: Array):
    r"""Closed-form W2 between Gaussians :math:`\N(\mu_1, \Sigma_1)` and :math:`\N(\mu_2, \Sigma_2)`.

    .. math::
        W_2^2 = \|\mu_1 - \mu_2\|^2
            + \tr\big(\Sigma_1 + \Sigma_2 - 2 (\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})^{1/2}\big)

    See {prf:ref} ``prop-ot-gaussian-w2``. (The same expression is the Fréchet distance.)

    Parameters
    ----------
    mu1, mu2 : ``(..., d)``
    cov1, cov2 : ``(..., d, d)`` symmetric positive semi-definite

    Returns
    -------
    :math:`W_2` (not squared), batch shape; a tensor like ``mu1`` when an input is a tensor.
    """
    ref = _reference_tensor(mu1, cov1, mu2, cov2)
    m1 = _as_tensor(mu1, "mu1", like=ref if ref is not None and ref.is_floating_point() else None)
    m2, S1, S2 = (_as_tensor(v, n, like=m1) for v, n in ((mu2, "mu2"), (cov1, "cov1"), (cov2, "cov2")))
    d = m1.shape[-1] if m1.ndim else 0
    if m1.ndim == 0 or m2.shape[-1] != d or S1.shape[-2:] != (d, d) or S2.shape[-2:] != (d, d):
        raise ValueError(f"expected mu of shape (..., d) and cov of shape (..., d, d); got mu1 {tuple(m1.shape)}, "
                         f"mu2 {tuple(m2.shape)}, cov1 {tuple(S1.shape)}, cov2 {tuple(S2.shape)}")
    for S, name in ((S1, "cov1"), (S2, "cov2")):
        if not torch.allclose(S, S.transpose(-1, -2), rtol=1e-5, atol=1e-8):
            raise ValueError(f"{name} must be symmetric")
    r1 = _sqrtm_psd(S1)
    M = r1 @ S2 @ r1
    cross = torch.linalg.eigvalsh((M + M.transpose(-1, -2)) / 2).clamp_min(0).sqrt().sum(-1)
    tr = torch.diagonal(S1, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(S2, dim1=-2, dim2=-1).sum(-1)
    w2sq = ((m1 - m2) ** 2).sum(-1) + tr - 2 * cross
    w = w2sq.clamp_min(0).sqrt()
    if ref is None:
        w = w.numpy()
        return float(w) if w.ndim == 0 else w
    return w
