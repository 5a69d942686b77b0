r"""Autoregressive models: the chain rule made into networks (MADE, PixelCNN).

Any density factorises in any order :math:`\pi` of the coordinates,

.. math::
    p(x) = \prod_{i=1}^{d} p\big(x_{\pi(i)} \mid x_{\pi(1)}, \dots, x_{\pi(i-1)}\big),

and an autoregressive network outputs the parameters of every conditional in one pass, provided
output :math:`i` depends only on the inputs that come before it. Masks enforce that:

- :class:`MaskedLinear` / :class:`MADE` (Germain et al. 2015): each hidden unit gets a degree
  :math:`m \in \{1, \dots, d-1\}`; a weight from a unit of degree :math:`m` to one of degree
  :math:`m'` is kept when :math:`m' \ge m` (hidden layers) or :math:`m' > m` (output layer).
- :class:`MaskedConv2d` / :class:`PixelCNN` (van den Oord et al. 2016): in raster order a pixel
  sees the rows above and the pixels to its left; mask type ``"A"`` (first layer) also hides the
  centre pixel, type ``"B"`` (later layers) keeps it. A plain stack of such convolutions has a
  *blind spot* above and to the right of each pixel (the gated PixelCNN fixes it).

Both models here are for binary data (Bernoulli conditionals): ``log_prob(x)`` sums the
conditionals' log-likelihoods, and ``sample`` draws coordinate by coordinate, one network pass each.
See the chapter "Autoregressive models".
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskedLinear", "MADE", "MaskedConv2d", "PixelCNN", "made_degrees"]


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask of shape ``(out, in)``."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        mask = torch.as_tensor(mask, dtype=self.weight.dtype)
        if mask.shape != (out_features, in_features):
            raise ValueError(f"mask must have shape ({out_features}, {in_features}), got {tuple(mask.shape)}")
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask entries must be 0 or 1")
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_degrees(d: int, hidden: Sequence[int], order: torch.Tensor) -> list[torch.Tensor]:
    """Degrees of the input, hidden and output units of MADE (deterministic, cyclic assignment).

    ``order[i]`` is the position (1..d) of input ``i`` in the chain rule. Hidden degrees cycle
    through 1..d-1 (for d = 1 they are 0, so that no input reaches a hidden unit).
    """
    degrees = [order.clone()]
    for h in hidden:
        degrees.append(torch.arange(h) % max(d - 1, 1) + 1 if d > 1 else torch.zeros(h, dtype=torch.long))
    return degrees


class MADE(nn.Module):
    r"""Masked autoencoder for distribution estimation (Germain et al. 2015), Bernoulli outputs.

    ``forward(x)`` returns logits ``(B, d)`` with :math:`\text{logit}_i` a function of the inputs
    that precede input :math:`i` in ``order`` only; ``n_params > 1`` returns ``(B, n_params, d)``
    (e.g. a mean and a log-scale per coordinate, as :class:`gencore.flows.MAF` uses).

    Parameters
    ----------
    d : int
        Number of coordinates.
    hidden : sequence of int
        Hidden widths (each at least ``d - 1`` keeps every conditional expressive).
    order : sequence of int, optional
        A permutation of ``0..d-1`` giving the chain-rule order (default: natural order).
    n_params : int
        Outputs per coordinate.
    """

    def __init__(self, d: int, hidden: Sequence[int] = (128,), *, order: Sequence[int] | None = None,
                 n_params: int = 1):
        super().__init__()
        self.d = _positive_int(d, "d")
        self.n_params = _positive_int(n_params, "n_params")
        hidden = tuple(_positive_int(h, "hidden width") for h in hidden)
        perm = torch.arange(d) if order is None else torch.as_tensor(list(order), dtype=torch.long)
        if sorted(perm.tolist()) != list(range(d)):
            raise ValueError(f"order must be a permutation of 0..{d - 1}, got {perm.tolist()}")
        position = torch.empty(d, dtype=torch.long)
        position[perm] = torch.arange(1, d + 1)  # input perm[k] comes k-th
        self.register_buffer("order", perm)
        degrees = made_degrees(d, hidden, position)
        layers: list[nn.Module] = []
        for m_in, m_out in zip(degrees[:-1], degrees[1:]):
            layers += [MaskedLinear(len(m_in), len(m_out), (m_out[:, None] >= m_in[None, :]).float()), nn.ReLU()]
        out_mask = (position[:, None] > degrees[-1][None, :]).float().repeat(n_params, 1)
        layers.append(MaskedLinear(len(degrees[-1]), d * n_params, out_mask))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ValueError(f"x must have shape (batch, {self.d}), got {tuple(x.shape)}")
        out = self.net(x)
        return out if self.n_params == 1 else out.view(-1, self.n_params, self.d)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\sum_i \\log p(x_i \\mid x_{<i})` for binary ``x`` ``(B, d)``, in nats."""
        if self.n_params != 1:
            raise ValueError("log_prob needs n_params = 1 (Bernoulli logits)")
        return -F.binary_cross_entropy_with_logits(self(x), x, reduction="none").sum(-1)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` binary samples, one coordinate at a time in ``order`` (``d`` network passes)."""
        dev = self.order.device
        x = torch.zeros(_positive_int(n, "n"), self.d, device=dev)
        for i in self.order.tolist():
            p = torch.sigmoid(self(x)[:, i])
            x[:, i] = torch.bernoulli(p, generator=generator)
        return x


class MaskedConv2d(nn.Conv2d):
    """A 2-D convolution that sees only the pixels before the centre in raster order.

    ``mask_type="A"`` hides the centre pixel too (first layer: output i must not see input i);
    ``"B"`` keeps it (later layers, whose centre already carries only the past).
    """

    def __init__(self, mask_type: str, in_channels: int, out_channels: int, kernel_size: int, **kwargs):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, **kwargs)
        k = kernel_size
        mask = torch.ones(k, k)
        mask[k // 2, k // 2 + (mask_type == "B"):] = 0
        mask[k // 2 + 1:, :] = 0
        self.mask_type = mask_type
        self.register_buffer("mask", mask[None, None].expand_as(self.weight).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PixelCNN(nn.Module):
    r"""A small PixelCNN for binary images ``(B, 1, H, W)``: one type-A layer, then type-B layers.

    .. math:: \log p(x) = \sum_{r, c} \log \mathrm{Bern}\big(x_{rc} \mid \sigma(\ell_{rc}(x_{<(r,c)}))\big)

    Parameters
    ----------
    channels : int
        Width of the hidden feature maps.
    n_layers : int
        Number of type-B layers after the first (type-A, 7x7) layer; they use ``kernel_size``.
    kernel_size : int
        Odd kernel size of the type-B layers.
    """

    def __init__(self, channels: int = 32, n_layers: int = 4, kernel_size: int = 3):
        super().__init__()
        _positive_int(channels, "channels")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 0:
            raise ValueError(f"n_layers must be a non-negative integer, got {n_layers!r}")
        layers: list[nn.Module] = [MaskedConv2d("A", 1, channels, 7), nn.ReLU()]
        for _ in range(n_layers):
            layers += [MaskedConv2d("B", channels, channels, kernel_size), nn.ReLU()]
        layers.append(MaskedConv2d("B", channels, 1, 1))
        self.net = nn.Sequential(*layers)

    @staticmethod
    def _check(x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be binary images of shape (batch, 1, height, width), got {shape}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 1, H, W)``; logit at (r, c) depends on pixels before (r, c) only."""
        self._check(x)
        return self.net(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-likelihood of binary images ``(B, 1, H, W)`` in nats, one value per image."""
        return -F.binary_cross_entropy_with_logits(self(x), x, reduction="none").flatten(1).sum(-1)

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood in bits per pixel."""
        return -self.log_prob(x) / (math.log(2) * x[0].numel())

    @torch.no_grad()
    def sample(self, n: int, height: int, width: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images drawn pixel by pixel in raster order (``height * width`` network passes)."""
        dev = next(self.parameters()).device
        x = torch.zeros(_positive_int(n, "n"), 1, _positive_int(height, "height"), _positive_int(width, "width"), device=dev)
        for r in range(height):
            for c in range(width):
                p = torch.sigmoid(self(x)[:, 0, r, c])
                x[:, 0, r, c] = torch.bernoulli(p, generator=generator)
        return x
