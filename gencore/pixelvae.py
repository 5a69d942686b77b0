r"""PixelVAE (Gulrajani et al., 2016), small: a VAE whose decoder is a PixelCNN conditioned on ``z``.

Chapter "Combining models", sections "Information preference" and "PixelVAE".

.. math::
    q_\phi(z \mid x) = \mathcal N(\mu_\phi(x), \diag e^{s_\phi(x)}), \qquad
    p_\theta(x \mid z) = \prod_{i} \mathrm{Bern}\big(x_i \mid \sigma(\ell_i(x_{<i}, z))\big),

with :math:`x_{<i}` the pixels before :math:`i` in raster order, seen through masked convolutions
(:class:`gencore.autoregressive.MaskedConv2d`), and ``z`` entering every location through a
learned map :math:`z \mapsto` a ``(channels, side, side)`` bias of the first layer. With
``decoder="factorised"`` the same encoder drives an MLP decoder whose pixels are independent
given ``z`` (a plain VAE): the control of the information-preference experiment.

A :class:`PixelVAE` has ``encode`` and ``log_likelihood``, so :func:`gencore.vae.elbo` and
:func:`gencore.vae.beta_elbo` (with free bits) apply to it unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gencore.autoregressive import MaskedConv2d
from gencore.nets import mlp

__all__ = ["PixelVAE", "DECODERS", "reconstruction_gain"]

DECODERS = ("pixelcnn", "factorised")


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


class PixelVAE(nn.Module):
    """A VAE on binary ``side x side`` images with a PixelCNN (or factorised) decoder.

    Parameters
    ----------
    side : int
        Image side (8 for scikit-learn's digits); inputs are flat ``(B, side * side)``.
    z_dim : int
    hidden : int
        Width of the MLP encoder (and of the factorised decoder).
    decoder : {"pixelcnn", "factorised"}
    channels, n_layers, kernel_size : int
        PixelCNN decoder: width, number of type-B layers after the type-A 5x5 layer, their kernel.
    """

    def __init__(self, side: int = 8, z_dim: int = 8, hidden: int = 128, decoder: str = "pixelcnn", *,
                 channels: int = 32, n_layers: int = 2, kernel_size: int = 3):
        super().__init__()
        self.side, self.z_dim = _positive_int(side, "side"), _positive_int(z_dim, "z_dim")
        _positive_int(hidden, "hidden")
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; valid choices: {', '.join(DECODERS)}")
        self.decoder_kind = decoder
        d = side * side
        self.encoder = mlp([d, hidden, 2 * z_dim], activation="relu")
        if decoder == "factorised":
            self.decoder = mlp([z_dim, hidden, d], activation="relu")
        else:
            _positive_int(channels, "channels")
            if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
                raise ValueError(f"n_layers must be a non-negative integer, got {n_layers!r}")
            self.first = MaskedConv2d("A", 1, channels, 5)
            self.z_map = nn.Linear(z_dim, channels * d)
            self.body = nn.Sequential(*[m for _ in range(n_layers)
                                        for m in (nn.ReLU(), MaskedConv2d("B", channels, channels, kernel_size))])
            self.out = MaskedConv2d("B", channels, 1, 1)
            self.channels = channels

    def _check_x(self, x: torch.Tensor) -> None:
        d = self.side * self.side
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.shape[-1] != d:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a float tensor of flat binary images (..., {d}), got {shape}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of :math:`q(z \\mid x)`, each ``(B, z_dim)``."""
        self._check_x(x)
        return self.encoder(x).chunk(2, dim=-1)

    def logits(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits ``(B, side * side)``; logit ``i`` depends on ``z`` and the pixels before ``i``."""
        self._check_x(x)
        if z.shape[-1] != self.z_dim or z.shape[:-1] != x.shape[:-1]:
            raise ValueError(f"z must have shape {(*x.shape[:-1], self.z_dim)}, got {tuple(z.shape)}")
        if self.decoder_kind == "factorised":
            return self.decoder(z)
        s = self.side
        img = x.reshape(-1, 1, s, s)
        h = self.first(img) + self.z_map(z.reshape(-1, self.z_dim)).reshape(-1, self.channels, s, s)
        return self.out(F.relu(self.body(h))).reshape(x.shape)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x \\mid z)` for ``x`` ``(B, D)`` and ``z`` ``(S, B, z_dim)`` or ``(B, z_dim)``."""
        self._check_x(x)
        xs = x.expand(*z.shape[:-1], x.shape[-1]) if z.ndim == 3 else x
        lead = xs.shape[:-1]
        flat_x, flat_z = xs.reshape(-1, xs.shape[-1]), z.reshape(-1, self.z_dim)
        logit = self.logits(flat_x, flat_z)
        return (flat_x * logit - F.softplus(logit)).sum(-1).reshape(lead)

    @torch.no_grad()
    def sample(self, n: int, *, z: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` binary images ``(n, side * side)``: ``z`` from the prior (or given), then pixel by pixel."""
        n = _positive_int(n, "n")
        p = next(self.parameters())
        if z is None:
            z = torch.randn(n, self.z_dim, generator=generator, device=p.device, dtype=p.dtype)
        d = self.side * self.side
        x = torch.zeros(n, d, device=p.device, dtype=p.dtype)
        if self.decoder_kind == "factorised":
            return torch.bernoulli(torch.sigmoid(self.logits(x, z)), generator=generator)
        for i in range(d):
            prob = torch.sigmoid(self.logits(x, z)[:, i])
            x[:, i] = torch.bernoulli(prob, generator=generator)
        return x


@torch.no_grad()
def reconstruction_gain(model, x: torch.Tensor) -> float:
    r"""How many nats per image the decoder gains from the *right* code, a measure of what ``z`` carries.

    .. math::
        G = \frac1N \sum_n \Big(\log p(x_n \mid \mu(x_n)) - \log p(x_n \mid \mu(x_{n+1}))\Big),

    with :math:`\mu(x)` the posterior mean and :math:`x_{n+1}` the next image (a cyclic shift, so
    no image keeps its own code). A decoder that ignores ``z`` (posterior collapse) has
    :math:`G = 0` exactly; a decoder that reads the image from ``z`` has a large :math:`G`.

    Parameters
    ----------
    model : object with ``encode`` and ``log_likelihood`` (:class:`PixelVAE`, :class:`gencore.vae.VAE`).
    x : Tensor ``(N, D)``, ``N >= 2``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or len(x) < 2:
        raise ValueError("x must be a tensor (N >= 2, D)")
    mu, _ = model.encode(x)
    right = model.log_likelihood(x, mu)
    wrong = model.log_likelihood(x, mu.roll(1, dims=0))
    return float((right - wrong).mean())
