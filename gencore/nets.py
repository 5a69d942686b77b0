"""Small network builders shared across chapters."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}


def mlp(sizes: Sequence[int], *, activation: str = "relu", out_activation: str | None = None) -> nn.Sequential:
    """A multilayer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    ``activation`` follows every hidden layer; ``out_activation`` (optional) the last.
    Choices: relu, leaky_relu (slope 0.2), tanh, elu, gelu, sigmoid, softplus.

    >>> mlp([2, 64, 1]).__class__.__name__
    'Sequential'
    """
    sizes = list(sizes)
    if len(sizes) < 2 or any((not isinstance(s, int)) or s <= 0 for s in sizes):
        raise ValueError(f"sizes must list at least two positive integers, got {sizes!r}")
    for name, value in (("activation", activation), ("out_activation", out_activation)):
        if value is not None and value not in ACTIVATIONS:
            raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        last = i == len(sizes) - 2
        if not last:
            layers.append(ACTIVATIONS[activation]())
        elif out_activation is not None:
            layers.append(ACTIVATIONS[out_activation]())
    return nn.Sequential(*layers)


class EnsembleLinear(torch.nn.Module):
    r"""``K`` independent linear layers applied at once: ``(K, N, d_in) -> (K, N, d_out)``.

    .. math:: y_k = x_k W_k + b_k, \qquad k = 1..K

    Initialised like :class:`torch.nn.Linear` (uniform in :math:`\pm 1/\sqrt{d_{in}}`). It lets a
    chapter train one critic (or generator) per divergence in a single :func:`gencore.train.fit`
    call: Adam is elementwise, so the ``K`` members train exactly as ``K`` separate runs would.
    """

    def __init__(self, k: int, d_in: int, d_out: int):
        super().__init__()
        for label, n in (("k", k), ("d_in", d_in), ("d_out", d_out)):
            if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                raise ValueError(f"{label} must be a positive integer, got {n!r}")
        bound = 1.0 / math.sqrt(d_in)
        self.weight = torch.nn.Parameter(torch.empty(k, d_in, d_out).uniform_(-bound, bound))
        self.bias = torch.nn.Parameter(torch.empty(k, 1, d_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[0] != self.weight.shape[0] or x.shape[2] != self.weight.shape[1]:
            raise ValueError(f"x must have shape (K={self.weight.shape[0]}, N, {self.weight.shape[1]}), "
                             f"got {tuple(x.shape)}")
        return torch.baddbmm(self.bias, x, self.weight)


def ensemble_mlp(k: int, sizes: list[int], *, activation: str = "relu") -> torch.nn.Sequential:
    """``K`` independent MLPs ``sizes[0] -> ... -> sizes[-1]`` as one module on ``(K, N, d)`` inputs.

    ``activation`` (a key of :data:`ACTIVATIONS`) follows every hidden layer. Used by the
    f-divergence chapters to train one critic per divergence in a single ``fit`` call.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid choices: {', '.join(ACTIVATIONS)}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least two layer widths, got {sizes!r}")
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(EnsembleLinear(k, a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return torch.nn.Sequential(*layers)
