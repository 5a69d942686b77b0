r"""Flow-GAN (Grover et al. 2018): one flow, three objectives.

A normalizing flow :math:`G_\theta` is both a generator (``flow.inverse(z)``, one pass for RealNVP)
and a density (``flow.log_prob(x)``), so the same network can be trained

- by maximum likelihood: :math:`\min_\theta -\mathbb E_{p_\text{data}} \log p_\theta(x)`;
- adversarially: the non-saturating GAN game of :mod:`gencore.gan` with a discriminator :math:`D`;
- hybrid: the adversarial generator loss :math:`+ \lambda` times the NLL per dimension.

Only the training objective changes, so test NLL (bits/dim) and a sample score (KID in the
features of :mod:`gencore.classifier`) of the three are directly comparable
(chapter "Normalizing flows").

The digits are scikit-learn's 8x8 ones, as 17 intensity levels dequantised to
:math:`x = (k + u) / 17`, :math:`u \sim U[0, 1)^{64}`. With that scaling
:math:`-\log P(k) \le -\mathbb E_u \log p(x) + 64 \log 17` (:func:`dequantised_bits_per_dim`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gencore import gan
from gencore.metrics import bits_per_dim

__all__ = ["MODES", "FlowGANConfig", "flow_gan_step", "dequantise", "dequantised_bits_per_dim",
           "digits_to_mnist_frame", "LEVELS"]

MODES = ("mle", "adversarial", "hybrid")
LEVELS = 17
"""Intensity levels of scikit-learn's digits (0..16)."""


@dataclass(frozen=True)
class FlowGANConfig:
    """How a flow is trained: ``mode`` in :data:`MODES`, ``lam`` weights the NLL per dimension (hybrid)."""

    mode: str = "mle"
    lam: float = 1.0
    lr: float = 1e-3
    lr_d: float = 2e-4

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.lam >= 0:
            raise ValueError(f"lam must be >= 0, got {self.lam!r}")
        if not (self.lr > 0 and self.lr_d > 0):
            raise ValueError(f"lr and lr_d must be > 0, got {self.lr!r} and {self.lr_d!r}")


def flow_gan_step(flow: nn.Module, discriminator: nn.Module | None, config: FlowGANConfig, *,
                  generator: torch.Generator | None = None):
    """Step function for :func:`gencore.train.fit`: one update of ``flow`` (and of ``discriminator``).

    Logs ``d_loss`` and ``g_loss`` in the adversarial and hybrid modes, and ``nll`` (nats per
    dimension of the batch) in the maximum-likelihood and hybrid modes, whose updates need it.
    ``generator`` seeds the latent draws.
    """
    opt_g = torch.optim.Adam(flow.parameters(), lr=config.lr)
    adversarial = config.mode != "mle"
    if adversarial and discriminator is None:
        raise ValueError(f"mode {config.mode!r} needs a discriminator")
    opt_d = gan.adam_for_gan(discriminator, config.lr_d) if adversarial else None

    def step(real: torch.Tensor) -> dict[str, torch.Tensor]:
        d = real.shape[1]
        logs = {}
        if adversarial:
            z = torch.randn(real.shape, generator=generator, device=real.device, dtype=real.dtype)
            fake = flow.inverse(z)
            d_loss = gan.discriminator_loss(discriminator(real), discriminator(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = gan.generator_loss(discriminator(fake))
            logs["d_loss"], logs["g_loss"] = d_loss.detach(), g_loss.detach()
        if config.mode == "adversarial":   # the NLL is not needed for the update: skip its cost
            loss = g_loss
        else:
            nll = -flow.log_prob(real).mean() / d
            logs["nll"] = nll.detach()
            loss = nll if config.mode == "mle" else g_loss + config.lam * nll
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        return logs

    return step


def dequantise(levels: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Integer levels ``0..16`` to :math:`(k + u) / 17` with uniform noise :math:`u`."""
    if not isinstance(levels, torch.Tensor) or levels.numel() and (levels.min() < 0 or levels.max() > LEVELS - 1):
        raise ValueError(f"levels must be a tensor of integers in 0..{LEVELS - 1}")
    u = torch.rand(levels.shape, generator=generator, device=levels.device, dtype=torch.float32)
    return (levels.float() + u) / LEVELS


@torch.no_grad()
def dequantised_bits_per_dim(flow: nn.Module, levels: torch.Tensor, *, n_noise: int = 4, seed: int = 0) -> float:
    r"""Upper bound on the test NLL of the discrete levels, in bits per dimension.

    .. math:: -\log P(k) \le \mathbb E_u[-\log p(\tfrac{k + u}{17})] + D \log 17,

    averaged over ``n_noise`` dequantisations; a uniform model scores :math:`\log_2 17 = 4.09`.
    """
    gen = torch.Generator(device=levels.device).manual_seed(seed)
    d = levels.shape[1]
    nll = torch.stack([-flow.log_prob(dequantise(levels, generator=gen)) for _ in range(n_noise)]).mean()
    return float(bits_per_dim(float(nll) + d * math.log(LEVELS), d))


def digits_to_mnist_frame(x: torch.Tensor) -> torch.Tensor:
    """8x8 digits ``(N, 64)`` in [0, 1] to 28x28 ``(N, 784)``: resized to a centred 20x20 box, as MNIST.

    Puts them in the input space of the book's classifier (:mod:`gencore.classifier`), which labels
    the real 8x8 digits so placed with about 84% accuracy; values are clamped to [0, 1].
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != 64:
        raise ValueError(f"x must have shape (N, 64) (8x8 digits), got {getattr(x, 'shape', type(x).__name__)}")
    img = F.interpolate(x.clamp(0, 1).reshape(-1, 1, 8, 8), size=(20, 20), mode="bilinear", align_corners=False)
    return F.pad(img, (4, 4, 4, 4)).reshape(-1, 784).clamp(0, 1)
