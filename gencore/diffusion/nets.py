r"""Time-conditioned networks for score models, noise predictors and velocity fields.

Every model of the diffusion part is a function of a point and a time (or noise level):
:math:`s_\theta(x, \sigma)`, :math:`\varepsilon_\theta(x_t, t)`, :math:`v_\theta(x, t)`. The
wrapper :class:`TimeConditioned` turns any network of ``d + n_features`` inputs (for example
``gencore.nets.mlp``) into such a function by appending sinusoidal features of the time,
and optionally a learned class embedding with a "no class" token for classifier-free guidance
(Ho & Salimans 2022). Chapters "Score matching", "Denoising diffusion" and "Flow matching".
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gencore._validate import positive_int

__all__ = ["time_features", "TimeConditioned"]


def time_features(t: torch.Tensor, n_features: int, *, max_period: float = 1000.0) -> torch.Tensor:
    r"""Sinusoidal features of ``t`` ``(B,)``: :math:`[t, \sin(\omega_k t), \cos(\omega_k t)]_k`, shape ``(B, n_features)``.

    The frequencies are :math:`\omega_k = \exp(-k \log(P) / K)` with ``P = max_period``; the
    first feature is ``t`` itself, so ``n_features = 1`` appends the raw time. Follows ``t``'s device.
    """
    positive_int(n_features, "n_features")
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"t must be a scalar or a 1-D tensor of times (B,), got shape {tuple(t.shape)}")
    t = t.float()
    k = (n_features - 1) // 2
    feats = [t[:, None]]
    if k:
        freq = torch.exp(-math.log(max_period) * torch.arange(k, device=t.device, dtype=t.dtype) / k)
        arg = t[:, None] * freq[None] * max_period / 10
        feats += [torch.sin(arg), torch.cos(arg)]
    out = torch.cat(feats, dim=1)
    if out.shape[1] < n_features:                       # even n_features: pad with one zero column
        out = torch.cat([out, out.new_zeros(len(t), n_features - out.shape[1])], dim=1)
    return out


class TimeConditioned(nn.Module):
    r"""``f(x, t[, y]) = net([x, time_features(t / t_scale), embed(y)])``.

    Parameters
    ----------
    net : nn.Module
        Takes ``(B, d + n_features + class_dim)`` and returns the output (same shape as ``x`` for
        scores, noise predictions and velocities).
    n_features : int
        Number of time features (1 = the raw time).
    t_scale : float
        Times are divided by it first (``T`` for integer DDPM steps, 1 for t in [0, 1]).
    n_classes, class_dim : int
        With ``n_classes > 0`` a label ``y`` in ``0..n_classes-1`` (or ``n_classes`` = "no label",
        the token classifier-free guidance trains with) is embedded in ``class_dim`` dimensions.
    """

    def __init__(self, net: nn.Module, *, n_features: int = 1, t_scale: float = 1.0,
                 n_classes: int = 0, class_dim: int = 0):
        super().__init__()
        self.net, self.n_features, self.t_scale = net, positive_int(n_features, "n_features"), float(t_scale)
        if t_scale <= 0:
            raise ValueError(f"t_scale must be > 0, got {t_scale}")
        if n_classes < 0 or (n_classes > 0) != (class_dim > 0):
            raise ValueError(f"n_classes and class_dim must both be > 0 or both 0, got {n_classes}, {class_dim}")
        self.n_classes = n_classes
        self.embed = nn.Embedding(n_classes + 1, class_dim) if n_classes else None

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},) to match x, got {tuple(t.shape)}")
        parts = [x.flatten(1), time_features(t / self.t_scale, self.n_features).to(x.dtype)]
        if self.embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.n_classes, device=x.device, dtype=torch.long)
            if y.shape != (x.shape[0],) or y.min() < 0 or y.max() > self.n_classes:
                raise ValueError(f"y must hold {x.shape[0]} labels in 0..{self.n_classes} "
                                 f"({self.n_classes} = no label), got shape {tuple(y.shape)}")
            parts.append(self.embed(y))
        elif y is not None:
            raise ValueError("y was given but the network has no class embedding (n_classes = 0)")
        return self.net(torch.cat(parts, dim=1)).reshape(x.shape)
