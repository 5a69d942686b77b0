r"""Dynamics of gradient play on the bilinear game :math:`\min_x \max_y\, f(x, y) = x y`.

The unique equilibrium is :math:`(0, 0)`; the gradient field is
:math:`(\partial_x f, \partial_y f) = (y, x)`. Four update rules, each returning a trajectory
``(steps + 1, 2)`` of ``(x, y)`` (chapter "GANs in practice", prop-gan-bilinear-dynamics):

``simultaneous``   :math:`x' = x - \eta y,\; y' = y + \eta x` (each step multiplies the distance
                   to the equilibrium by :math:`\sqrt{1 + \eta^2} > 1`: it spirals out);
``alternating``    :math:`x' = x - \eta y,\; y' = y + \eta x'` (area preserving: it cycles);
``extragradient``  a look-ahead step, then the update with the look-ahead gradient (factor
                   :math:`\sqrt{1 - \eta^2 + \eta^4} < 1` for :math:`0 < \eta < 1`: it converges);
``optimistic``     :math:`x_{t+1} = x_t - 2\eta y_t + \eta y_{t-1}` and likewise for y
                   (Daskalakis et al. 2017; converges for small :math:`\eta`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

State = tuple[float, float]


def _simultaneous(x, y, lr, prev):
    return x - lr * y, y + lr * x


def _alternating(x, y, lr, prev):
    x_new = x - lr * y
    return x_new, y + lr * x_new


def _extragradient(x, y, lr, prev):
    x_half, y_half = x - lr * y, y + lr * x
    return x - lr * y_half, y + lr * x_half


def _optimistic(x, y, lr, prev):
    px, py = prev
    return x - 2 * lr * y + lr * py, y + 2 * lr * x - lr * px


BILINEAR_DYNAMICS: dict[str, Callable] = {
    "simultaneous": _simultaneous,
    "alternating": _alternating,
    "extragradient": _extragradient,
    "optimistic": _optimistic,
}


def bilinear_trajectory(method: str, x0: float = 1.0, y0: float = 1.0, *, lr: float = 0.1,
                        steps: int = 200) -> torch.Tensor:
    """Iterates ``(x_t, y_t)``, ``t = 0..steps``, of ``method`` on :math:`\\min_x\\max_y xy`.

    Returns a float64 tensor of shape ``(steps + 1, 2)``. ``optimistic`` starts with
    ``(x_{-1}, y_{-1}) = (x_0, y_0)``.
    """
    if method not in BILINEAR_DYNAMICS:
        raise ValueError(f"unknown method {method!r}; valid choices: {', '.join(BILINEAR_DYNAMICS)}")
    if not (isinstance(steps, int) and steps > 0):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    update = BILINEAR_DYNAMICS[method]
    traj = [(float(x0), float(y0))]
    prev = traj[0]
    for _ in range(steps):
        x, y = traj[-1]
        traj.append(update(x, y, lr, prev))
        prev = (x, y)
    return torch.tensor(traj, dtype=torch.float64)


def distance_to_equilibrium(trajectory: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of each iterate ``(T, 2)`` to the equilibrium ``(0, 0)``: shape ``(T,)``."""
    if trajectory.ndim != 2 or trajectory.shape[1] != 2:
        raise ValueError(f"trajectory must have shape (T, 2), got {tuple(trajectory.shape)}")
    return trajectory.norm(dim=1)
