r"""Normalizing flows: invertible layers with a tractable log-determinant.

For an invertible, differentiable :math:`f` and :math:`z = f(x)` with base density :math:`p_Z`,

.. math:: \log p_X(x) = \log p_Z(f(x)) + \log \left|\det \frac{\partial f}{\partial x}\right|.

Every layer here maps ``forward(x) -> (y, log_det)`` with ``log_det`` :math:`= \log|\det \partial y / \partial x|`
per row, and ``inverse(y) -> x``. Which direction is cheap differs, and decides where each flow is used:

=====================  ===================================  ==============================  ==========
layer                  forward ``x -> y``                   inverse                         use
=====================  ===================================  ==============================  ==========
:class:`AffineCoupling` one pass                            one pass                        RealNVP
:class:`MAF`           one pass (density direction)         d passes (sequential)           densities
:class:`IAF`           one pass (sampling direction)        d passes (sequential)           posteriors
:class:`PlanarFlow`    one pass                             a 1-D root find                 posteriors
=====================  ===================================  ==============================  ==========

:class:`Flow` chains layers on a standard normal base: ``log_prob(x)`` runs them forward (data to
noise), ``sample(n)`` runs them inverse. The chapter "Normalizing flows" checks every ``log_det``
against autograd's full Jacobian and every inverse to float tolerance.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gencore.autoregressive import MADE
from gencore.nets import mlp

__all__ = ["AffineCoupling", "RealNVP", "MAF", "IAF", "PlanarFlow", "Flow", "standard_normal_log_prob"]

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """:math:`\\log \\mathcal N(z; 0, I)` summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)


def _check_x(x: torch.Tensor, d: int, what: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != d:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} must have shape (batch, {d}), got {shape}")


class AffineCoupling(nn.Module):
    r"""RealNVP affine coupling (Dinh et al. 2017): the masked part conditions the rest.

    .. math::
        y = m \odot x + (1 - m) \odot \big(x \odot e^{s(m \odot x)} + t(m \odot x)\big),
        \qquad \log|\det J| = \textstyle\sum_j (1 - m_j)\, s_j(m \odot x).

    ``s = scale * tanh(.)`` keeps the log-scale bounded. The last layer starts at zero, so a
    fresh coupling is the identity.
    """

    def __init__(self, mask: Sequence[float] | torch.Tensor, hidden: Sequence[int] = (64, 64), scale: float = 2.0):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32).flatten()
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask entries must be 0 or 1")
        if mask.all() or not mask.any():
            raise ValueError("mask must hold both 0s and 1s: with all ones the layer is the identity, "
                             "with all zeros s and t see nothing")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self.d = len(mask)
        self.register_buffer("mask", mask)
        self.net = mlp([self.d, *hidden, 2 * self.d], activation="relu")
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.scale = scale

    def _st(self, xm: torch.Tensor):
        s, t = self.net(xm).chunk(2, dim=-1)
        s = self.scale * torch.tanh(s / self.scale) * (1 - self.mask)
        return s, t * (1 - self.mask)

    def forward(self, x: torch.Tensor):
        _check_x(x, self.d)
        xm = x * self.mask
        s, t = self._st(xm)
        return xm + (1 - self.mask) * (x * s.exp() + t), s.sum(-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        _check_x(y, self.d, "y")
        ym = y * self.mask
        s, t = self._st(ym)
        return ym + (1 - self.mask) * (y - t) * torch.exp(-s)


class MAF(nn.Module):
    r"""Masked autoregressive flow layer (Papamakarios et al. 2017), density direction.

    .. math::
        y_i = (x_i - \mu_i(x_{<i}))\, e^{-\alpha_i(x_{<i})}, \qquad \log|\det J| = -\textstyle\sum_i \alpha_i.

    ``forward`` (data to noise) is one MADE pass; ``inverse`` needs ``d`` passes.
    """

    def __init__(self, d: int, hidden: Sequence[int] = (64,), order: Sequence[int] | None = None):
        super().__init__()
        self.d = d
        self.made = MADE(d, hidden, order=order, n_params=2)
        nn.init.zeros_(self.made.net[-1].weight)
        nn.init.zeros_(self.made.net[-1].bias)

    def _params(self, x):
        out = self.made(x)
        return out[:, 0], 2.0 * torch.tanh(out[:, 1] / 2.0)

    def forward(self, x: torch.Tensor):
        _check_x(x, self.d)
        mu, alpha = self._params(x)
        return (x - mu) * torch.exp(-alpha), -alpha.sum(-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        _check_x(y, self.d, "y")
        x = torch.zeros_like(y)
        for i in self.made.order.tolist():
            mu, alpha = self._params(x)
            x = x.clone()
            x[:, i] = y[:, i] * torch.exp(alpha[:, i]) + mu[:, i]
        return x


class IAF(nn.Module):
    r"""Inverse autoregressive flow layer (Kingma et al. 2016), sampling direction.

    .. math::
        y_i = x_i\, \sigma_i(x_{<i}) + (1 - \sigma_i(x_{<i}))\, m_i(x_{<i}), \quad
        \sigma_i = \mathrm{sigmoid}(s_i + b), \quad \log|\det J| = \textstyle\sum_i \log \sigma_i,

    the numerically stable update of the IAF paper (``b`` = ``forget_bias`` pushes σ towards 1 at
    the start). ``forward`` (noise to sample, e.g. a posterior :math:`z_0 \to z_T`) is one pass.
    """

    def __init__(self, d: int, hidden: Sequence[int] = (64,), order: Sequence[int] | None = None,
                 forget_bias: float = 2.0):
        super().__init__()
        self.d = d
        self.made = MADE(d, hidden, order=order, n_params=2)
        self.forget_bias = forget_bias

    def _params(self, x):
        out = self.made(x)
        return out[:, 0], out[:, 1] + self.forget_bias

    def forward(self, x: torch.Tensor):
        _check_x(x, self.d)
        m, s = self._params(x)
        sig = torch.sigmoid(s)
        return sig * x + (1 - sig) * m, F.logsigmoid(s).sum(-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        _check_x(y, self.d, "y")
        x = torch.zeros_like(y)
        for i in self.made.order.tolist():
            m, s = self._params(x)
            sig = torch.sigmoid(s[:, i])
            x = x.clone()
            x[:, i] = (y[:, i] - (1 - sig) * m[:, i]) / sig
        return x


class PlanarFlow(nn.Module):
    r"""Planar flow (Rezende & Mohamed 2015): :math:`y = x + \hat u\, \tanh(w^\top x + b)`.

    .. math:: \log|\det J| = \log\big|1 + \hat u^\top w\, (1 - \tanh^2(w^\top x + b))\big|

    With ``enforce_invertible=True`` (default) ``u`` is replaced by
    :math:`\hat u = u + (m(w^\top u) - w^\top u)\, w / \|w\|^2`, :math:`m(a) = -1 + \log(1 + e^a)`,
    so that :math:`w^\top \hat u > -1` and the map is invertible. ``inverse`` solves the scalar
    equation for :math:`a = w^\top x` by bisection (it is strictly increasing), then
    :math:`x = y - \hat u \tanh(a + b)`.
    """

    def __init__(self, d: int, *, enforce_invertible: bool = True, init_scale: float = 0.1):
        super().__init__()
        self.d = d
        g = torch.Generator().manual_seed(0)
        self.u = nn.Parameter(init_scale * torch.randn(d, generator=g))
        self.w = nn.Parameter(init_scale * torch.randn(d, generator=g))
        self.b = nn.Parameter(torch.zeros(()))
        self.enforce_invertible = enforce_invertible

    def u_hat(self) -> torch.Tensor:
        if not self.enforce_invertible:
            return self.u
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / (self.w @ self.w).clamp_min(1e-12)

    def forward(self, x: torch.Tensor):
        _check_x(x, self.d)
        u = self.u_hat()
        a = x @ self.w + self.b
        h = torch.tanh(a)
        det = 1 + (u @ self.w) * (1 - h.pow(2))
        return x + h[:, None] * u, torch.log(det.abs())

    def inverse(self, y: torch.Tensor, *, iters: int = 100) -> torch.Tensor:
        _check_x(y, self.d, "y")
        u = self.u_hat()
        wu = float((self.w @ u).detach())
        if wu <= -1:
            raise ValueError(f"this planar flow is not invertible: w.u = {wu:.3g} <= -1 "
                             "(construct it with enforce_invertible=True)")
        # w.y = a + w.u tanh(a + b) with a = w.x: strictly increasing in a, root by bisection
        target = y @ self.w
        lo, hi = target - abs(wu) - 1.0, target + abs(wu) + 1.0
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            too_big = mid + wu * torch.tanh(mid + self.b) > target
            hi, lo = torch.where(too_big, mid, hi), torch.where(too_big, lo, mid)
        a = 0.5 * (lo + hi)
        return y - torch.tanh(a + self.b)[:, None] * u


class Flow(nn.Module):
    """Layers chained on a standard normal base: ``log_prob`` (forward), ``sample`` (inverse)."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        if not layers:
            raise ValueError("layers must hold at least one flow layer")
        self.layers = nn.ModuleList(layers)
        self.d = layers[0].d

    def forward(self, x: torch.Tensor):
        log_det = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for layer in self.layers:
            x, ld = layer(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p_Z(f(x)) + \\log|\\det \\partial f / \\partial x|` per row, in nats."""
        z, log_det = self(x)
        return standard_normal_log_prob(z) + log_det

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        p = next(self.parameters())
        z = torch.randn(n, self.d, generator=generator, device=p.device, dtype=p.dtype)
        return self.inverse(z)


class RealNVP(Flow):
    """RealNVP: ``n_layers`` affine couplings with alternating checkerboard masks (Dinh et al. 2017)."""

    def __init__(self, d: int, n_layers: int = 4, hidden: Sequence[int] = (64, 64)):
        if isinstance(d, bool) or not isinstance(d, int) or d < 2:
            raise ValueError(f"d must be an integer >= 2 (a coupling needs two groups), got {d!r}")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
        base = (torch.arange(d) % 2).float()
        super().__init__([AffineCoupling(base if k % 2 == 0 else 1 - base, hidden) for k in range(n_layers)])
