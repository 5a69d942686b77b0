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

__all__ = ["time_features", "TimeConditioned", "GaussianSkip"]


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


class GaussianSkip(nn.Module):
    r"""A noise predictor that is exact for the Gaussian fit of the data, plus a learned correction.

    .. math:: \varepsilon_\theta(x_t, t) = \sqrt{1 - \bar\alpha_t}\,\big(\bar\alpha_t \Sigma + (1 - \bar\alpha_t) I\big)^{-1}
              (x_t - \sqrt{\bar\alpha_t}\,\mu) + f_\theta(x_t, t),

    where :math:`\mu, \Sigma` are the mean and covariance of ``data`` ``(N, D)``. The first term is the optimal
    noise predictor :math:`\mathbb E[\varepsilon \mid x_t]` when the data are :math:`\mathcal N(\mu, \Sigma)`
    (chapter "Denoising diffusion", {prf:ref} ``prop-ddpm-eps-score``); with ``rank = r`` the covariance keeps its
    top ``r`` principal directions and replaces the others by their mean variance (cost :math:`O(D r)` per row).
    The last linear layer of ``net`` (a :class:`TimeConditioned` network ``f(x, t)``) starts at zero, so the
    untrained model samples the Gaussian fit: a skip connection in the spirit of the preconditioning of
    Karras et al. (2022). ``schedule`` is a :class:`gencore.diffusion.schedules.NoiseSchedule`.
    """

    def __init__(self, net: nn.Module, data: torch.Tensor, schedule, *, rank: int = 64):
        super().__init__()
        if not (isinstance(data, torch.Tensor) and data.ndim == 2 and data.shape[0] > 1):
            raise ValueError(f"data must be a tensor (N, D) with N > 1, got {getattr(data, 'shape', type(data).__name__)}")
        d = data.shape[1]
        positive_int(rank, "rank")
        if rank > d:
            raise ValueError(f"rank must be at most the dimension D = {d}, got {rank}")
        x = data.detach().double()
        lam, vecs = torch.linalg.eigh(torch.cov(x.T).reshape(d, d))
        lam, vecs = lam.flip(0).clamp_min(0), vecs.flip(1)
        rest = float(lam[rank:].mean()) if rank < d else 0.0
        self.net, self.schedule, self.rank = net, schedule, rank
        dtype = data.dtype if data.is_floating_point() else torch.float32
        self.register_buffer("mean", x.mean(0).to(dtype))
        self.register_buffer("components", vecs[:, :rank].contiguous().to(dtype))
        self.register_buffer("variances", lam[:rank].to(dtype))
        self.register_buffer("rest_variance", torch.tensor(rest, dtype=dtype))
        last = [m for m in net.modules() if isinstance(m, nn.Linear)]
        if not last:
            raise ValueError("net must contain a linear layer (its last one is initialised at zero)")
        nn.init.zeros_(last[-1].weight)
        if last[-1].bias is not None:
            nn.init.zeros_(last[-1].bias)

    def gaussian_eps(self, x: torch.Tensor, t) -> torch.Tensor:
        """The first term alone: the exact noise predictor of the (low-rank) Gaussian fit."""
        ab = self.schedule.alpha_bar_at(t, x)
        diff = x - ab.sqrt() * self.mean
        iso = 1 / (ab * self.rest_variance + 1 - ab)
        proj = diff @ self.components
        low = proj * (1 / (ab * self.variances + 1 - ab) - iso)
        return (1 - ab).sqrt() * (iso * diff + low @ self.components.T)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.gaussian_eps(x, t) + self.net(x, t)
