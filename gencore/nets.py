"""Small network builders shared across chapters."""
from __future__ import annotations

from collections.abc import Sequence

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
