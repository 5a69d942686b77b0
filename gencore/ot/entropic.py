r"""Entropic optimal transport solved by Sinkhorn's algorithm in the log domain, batched.

See chapter "Optimal transport and Wasserstein distances" ({prf:ref} ``prop-ot-sinkhorn-limit``).

.. math::
    \mathrm{OT}_\varepsilon(a, b; C) = \min_{P \in U(a,b)} \langle P, C\rangle
        + \varepsilon\, \KL(P \,\|\, a b^\top),

whose solution is :math:`P_{ij} = \exp\big((f_i + g_j - C_{ij})/\varepsilon\big)` for dual
potentials :math:`f, g`. Sinkhorn's iterations alternate

.. math::
    f_i \leftarrow \varepsilon \log a_i - \varepsilon \log\sum_j e^{(g_j - C_{ij})/\varepsilon},
    \qquad
    g_j \leftarrow \varepsilon \log b_j - \varepsilon \log\sum_i e^{(f_i - C_{ij})/\varepsilon}.

Implementation: the *stabilised* log-domain scheme (Schmitzer 2019; Peyré & Cuturi 2019, §4.4).
The potentials are kept in the log domain; between two "absorptions" the iterations run as
cheap matrix-vector scalings ``u = a / (K v)``, ``v = b / (K^T u)`` with the absorbed kernel
:math:`K_{ij} = e^{(f_i + g_j - C_{ij})/\varepsilon}`, whose entries stay of order one. When a
scaling leaves a safe range (or over- or underflows), it is absorbed into ``f, g`` and a full
log-sum-exp iteration is made (and the scalings are then checked every iteration for a while),
so small ε is as safe as the plain log-domain algorithm and ordinary ε costs two matrix-vector
products per iteration.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from gencore._validate import as_float_tensor

__all__ = ["SinkhornConvergenceWarning", "SinkhornResult", "sinkhorn"]


class SinkhornConvergenceWarning(UserWarning):
    """:func:`sinkhorn` reached ``max_iter`` with a marginal error above ``tol`` (as POT warns).

    The returned plan is then not a coupling of ``a`` and ``b`` to the requested accuracy: run
    more iterations (``max_iter``) or use a larger ``eps`` (the number of iterations needed grows
    roughly like ``max(C) / eps``). Silence it with ``warnings.filterwarnings("ignore",
    category=SinkhornConvergenceWarning)`` or run a fixed number of iterations with ``tol=0``.
    """


@dataclass(frozen=True)
class SinkhornResult:
    """What :func:`sinkhorn` returns (batch shape ``...`` of the inputs).

    Attributes
    ----------
    plan : Tensor ``(..., n, m)``
        The entropic optimal coupling :math:`P^\\varepsilon`.
    cost : Tensor ``(...)``
        Its transport cost :math:`\\langle P^\\varepsilon, C\\rangle` (no entropy term; what
        POT's ``ot.sinkhorn2`` returns). Tends to the exact OT cost as ε → 0.
    regularized_cost : Tensor ``(...)``
        :math:`\\langle P^\\varepsilon, C\\rangle + \\varepsilon \\KL(P^\\varepsilon \\| a b^\\top)`.
    f, g : Tensor ``(..., n)``, ``(..., m)``
        Dual potentials, :math:`P_{ij} = e^{(f_i + g_j - C_{ij})/\\varepsilon}`.
    marginal_error : Tensor ``(...)``
        :math:`\\|P\\mathbf 1 - a\\|_1` at exit (the column marginals hold exactly).
    n_iter : int
        Sinkhorn iterations made (one iteration updates both ``f`` and ``g``).
    converged : bool
        Whether ``marginal_error < tol`` for every batch entry.
    """

    plan: torch.Tensor
    cost: torch.Tensor
    regularized_cost: torch.Tensor
    f: torch.Tensor
    g: torch.Tensor
    marginal_error: torch.Tensor
    n_iter: int
    converged: bool


def _tensor(x: Any, name: str, like: torch.Tensor | None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = as_float_tensor(x, name)            # float64; any NumPy layout (negative strides included)
    if like is not None:
        return x.to(like.device, like.dtype)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _validate(a, b, cost, eps):
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    C = _tensor(cost, "cost", None)
    if C.ndim < 2:
        raise ValueError(f"cost must have shape (..., n, m), got {tuple(C.shape)}")
    n, m = C.shape[-2:]
    a = torch.full((n,), 1.0 / n, dtype=C.dtype, device=C.device) if a is None else _tensor(a, "a", C)
    b = torch.full((m,), 1.0 / m, dtype=C.dtype, device=C.device) if b is None else _tensor(b, "b", C)
    if a.ndim < 1 or b.ndim < 1 or a.shape[-1] != n or b.shape[-1] != m:
        raise ValueError(f"cost must have shape (..., len(a), len(b)); got a {tuple(a.shape)}, b {tuple(b.shape)}, "
                         f"cost {tuple(C.shape)}")
    try:
        batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1], C.shape[:-2])
    except RuntimeError as exc:
        raise ValueError(f"batch shapes of a {tuple(a.shape)}, b {tuple(b.shape)} and cost {tuple(C.shape)} "
                         "do not broadcast") from exc
    for w, name in ((a, "a"), (b, "b")):
        if not torch.isfinite(w).all():
            raise ValueError(f"{name} must be finite")
        if (w < 0).any():
            raise ValueError(f"{name} must be non-negative (weights of a measure)")
    if not torch.isfinite(C).all():
        raise ValueError("cost must be finite")
    sa, sb = a.sum(-1), b.sum(-1)
    rtol = 1e-5 if C.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-8
    if (sa <= 0).any():
        raise ValueError("a must have positive total mass")
    if ((sa - sb).abs() > rtol * torch.maximum(sa, sb)).any():
        raise ValueError("a and b must have the same total mass (sum(a) == sum(b)), "
                         f"got {sa.flatten()[:3].tolist()} and {sb.flatten()[:3].tolist()}")
    a = a.expand(*batch, n)
    b = b.expand(*batch, m)
    return a, b, C, batch


def _mv(K: torch.Tensor, v: torch.Tensor) -> torch.Tensor:          # K v
    return (K @ v.unsqueeze(-1)).squeeze(-1) if K.ndim > 2 or v.ndim > 1 else K @ v


def _mtv(K: torch.Tensor, u: torch.Tensor) -> torch.Tensor:         # K^T u
    return (u.unsqueeze(-2) @ K).squeeze(-2) if K.ndim > 2 or u.ndim > 1 else u @ K


def _logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """log-sum-exp along ``dim``; terms below e^-700 of the largest are rounded up to e^-700 instead
    of becoming subnormal numbers (relative change < 1e-300; subnormals slow CPUs down ~100x)."""
    m = x.amax(dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    return torch.log(torch.exp((x - m).clamp_min(-700.0)).sum(dim)) + m.squeeze(dim)


def sinkhorn(a: Any, b: Any, cost: Any, eps: float, *, max_iter: int = 1000, tol: float = 1e-9,
             check_every: int = 10) -> SinkhornResult:
    r"""Entropic optimal transport between histograms ``a`` and ``b`` (Sinkhorn, log domain).

    .. math::
        P^\varepsilon = \argmin_{P \in U(a,b)} \langle P, C\rangle + \varepsilon \KL(P\,\|\,a b^\top)

    Parameters
    ----------
    a : Tensor ``(..., n)`` or None
        Non-negative source weights (None: uniform ``1/n``).
    b : Tensor ``(..., m)`` or None
        Non-negative target weights with the same total mass (None: uniform).
    cost : Tensor ``(..., n, m)``
        Cost matrix; the leading axes of ``a``, ``b`` and ``cost`` broadcast (a batch of problems).
        Its device and dtype are used throughout (CPU or CUDA; float32 or float64).
        NumPy inputs are converted to float64 tensors.
    eps : float > 0
        Entropic regularisation, in the units of the cost.
    max_iter : int
        Maximum number of iterations.
    tol : float
        Stop when :math:`\|P\mathbf 1 - a\|_1 < \text{tol}` for every problem of the batch
        (checked every ``check_every`` iterations). ``tol=0`` runs exactly ``max_iter`` iterations
        (and never warns).
    check_every : int
        Iterations between two checks of the marginal error.

    Returns
    -------
    SinkhornResult
        ``plan``, ``cost`` (:math:`\langle P, C\rangle`), ``regularized_cost``, potentials
        ``f``, ``g``, ``marginal_error``, ``n_iter``, ``converged``.

    Warns
    -----
    SinkhornConvergenceWarning
        When ``tol > 0`` and ``max_iter`` iterations leave a marginal error ``>= tol`` (the
        message gives ε, the error reached and the tolerance). ``converged`` is then False.

    Examples
    --------
    >>> import torch
    >>> x = torch.linspace(0, 1, 5, dtype=torch.float64)
    >>> C = (x[:, None] - x[None, :]) ** 2
    >>> r = sinkhorn(None, None, C, eps=1e-3)
    >>> bool(torch.allclose(r.plan, torch.eye(5, dtype=torch.float64) / 5, atol=1e-6))
    True
    """
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if not (isinstance(check_every, int) and check_every >= 1):
        raise ValueError(f"check_every must be a positive integer, got {check_every!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    a, b, C, batch = _validate(a, b, cost, eps)
    Cs = C / eps                                   # (..., n, m), shared by the batch if C is
    log_a, log_b = a.log(), b.log()                # -inf where a weight is 0
    F = torch.zeros_like(a)                        # f / eps
    G = torch.zeros_like(b)                        # g / eps
    finfo = torch.finfo(C.dtype)
    big, tiny = finfo.max ** 0.25, finfo.tiny

    def log_step(F, G):
        F = log_a - _logsumexp(G.unsqueeze(-2) - Cs, dim=-1)
        G = log_b - _logsumexp(F.unsqueeze(-1) - Cs, dim=-2)
        return F, G

    def unstable(u, v):
        return not bool(torch.isfinite(u).all() & torch.isfinite(v).all()
                        & (u.amax() < big) & (v.amax() < big)
                        & (torch.where(a > 0, u, 1.0).amin() > 1 / big)
                        & (torch.where(b > 0, v, 1.0).amin() > 1 / big))

    it, stride, done = 0, check_every, False
    while it < max_iter and not done:
        F, G = log_step(F, G)                      # a full log-domain iteration (always safe)
        it += 1
        K = torch.exp(F.unsqueeze(-1) + G.unsqueeze(-2) - Cs)   # absorbed kernel, entries O(1)
        K = torch.where(K < tiny, 0.0, K)          # flush subnormals: they make CPU arithmetic ~100x slower
        u, v = torch.ones_like(a), torch.ones_like(b)
        if it % check_every == 0 or it == max_iter:
            err = (torch.exp(F + torch.log(K.sum(-1))) - a).abs().sum(-1)
            done = float(err.max()) < tol
        u_ok, v_ok, it_ok, start = u, v, it, it
        while it < max_iter and not done:
            u = a / _mv(K, v).clamp_min(tiny)
            v = b / _mtv(K, u).clamp_min(tiny)
            it += 1
            if it % stride == 0 or it == max_iter:
                if unstable(u, v):                 # roll back to the last safe scalings, absorb them,
                    u, v, it = u_ok, v_ok, it_ok   # and check every iteration for a while
                    stride = 1
                    break
                u_ok, v_ok, it_ok = u, v, it
                if stride == 1 and it - start >= 5 * check_every:
                    stride = check_every
                if it % check_every == 0 or it == max_iter:
                    err = (u * _mv(K, v) - a).abs().sum(-1)
                    done = float(err.max()) < tol
        F = F + torch.log(u)
        G = G + torch.log(v)
    P = torch.exp(F.unsqueeze(-1) + G.unsqueeze(-2) - Cs)
    err = (P.sum(-1) - a).abs().sum(-1)
    transport = (P * C).sum((-2, -1))
    # <P, C> + eps KL(P | a b^T) without another pass over P: log P_ij = F_i + G_j - C_ij / eps, so
    # eps KL = eps (sum_i r_i (F_i - log a_i) + sum_j c_j (G_j - log b_j)) - <P, C>, r, c the marginals of P
    rows, cols = P.sum(-1), P.sum(-2)
    regularized = eps * (torch.where(a > 0, rows * (F - log_a), 0.0).sum(-1)
                         + torch.where(b > 0, cols * (G - log_b), 0.0).sum(-1))
    converged = bool((err < tol).all()) if tol > 0 else False
    if tol > 0 and not converged and it >= max_iter:
        warnings.warn(
            f"sinkhorn did not converge: after max_iter={max_iter} iterations with eps={eps:g} the marginal "
            f"error ||P 1 - a||_1 is {float(err.max()):.3g} (tol={tol:g}); increase max_iter or use a larger eps",
            SinkhornConvergenceWarning, stacklevel=2)
    return SinkhornResult(plan=P, cost=transport, regularized_cost=regularized, f=eps * F, g=eps * G,
                          marginal_error=err, n_iter=it, converged=converged)
