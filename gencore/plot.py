"""Figures in one consistent style: sample grids, 2-D scatter and density plots, curves.

Every function draws on a given matplotlib ``ax`` (or a new one) and returns the ``ax``.
Axis labels are lower case; colours come from one palette (:data:`COLORS`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch

COLORS = {"data": "#1f77b4", "model": "#d62728", "critic": "#2ca02c", "other": "#9467bd"}

STYLE = {
    "figure.figsize": (6.0, 4.0),
    "figure.dpi": 120,
    "savefig.dpi": 120,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.frameon": False,
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the book's matplotlib style (done on import of :mod:`gencore.plot`)."""
    mpl.rcParams.update(STYLE)


use_style()


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x)


def _ax(ax):
    return ax if ax is not None else plt.subplots()[1]


def image_grid(images, *, nrow: int = 10, image_shape: tuple[int, int] | None = None,
               ax=None, title: str | None = None, cmap: str = "gray", pad: int = 1):
    """Show images in a grid.

    ``images``: ``(N, D)`` flat (square images inferred), ``(N, H, W)`` or ``(N, 1, H, W)``;
    values in [0, 1] are shown as-is, others are min-max scaled.
    """
    x = _np(images).astype(np.float32)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"images must have one channel, got shape {x.shape}")
        x = x[:, 0]
    elif x.ndim == 2:
        if image_shape is None:
            side = int(round(math.sqrt(x.shape[1])))
            if side * side != x.shape[1]:
                raise ValueError(f"cannot infer a square image from {x.shape[1]} pixels; pass image_shape")
            image_shape = (side, side)
        x = x.reshape(len(x), *image_shape)
    elif x.ndim != 3:
        raise ValueError(f"images must have shape (N, D), (N, H, W) or (N, 1, H, W), got {x.shape}")
    if x.min() < 0 or x.max() > 1:
        x = (x - x.min()) / max(x.max() - x.min(), 1e-12)
    n, h, w = x.shape
    ncol = min(nrow, n)
    rows = math.ceil(n / ncol)
    canvas = np.ones((rows * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = x[i]
    ax = _ax(ax)
    ax.imshow(canvas, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def scatter_2d(x, *, ax=None, label: str | None = None, color: str | None = None, s: float = 3,
               alpha: float = 0.5, lim: float | None = None, title: str | None = None):
    """Scatter plot of 2-D points ``(N, 2)``."""
    x = _np(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (N, 2), got {x.shape}")
    ax = _ax(ax)
    ax.scatter(x[:, 0], x[:, 1], s=s, alpha=alpha, label=label, color=color, linewidths=0)
    ax.set_aspect("equal")
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    if label:
        ax.legend(markerscale=4)
    return ax


def density_2d(log_prob: Callable[[torch.Tensor], torch.Tensor], *, lim: float = 4.5, n: int = 200,
               ax=None, title: str | None = None, cmap: str = "viridis"):
    """Image of ``exp(log_prob)`` on an ``n x n`` grid over ``[-lim, lim]^2``.

    ``log_prob`` maps a float32 tensor ``(n*n, 2)`` to ``(n*n,)``.
    """
    g = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        z = _np(log_prob(pts)).reshape(n, n)
    ax = _ax(ax)
    ax.imshow(np.exp(z - z.max()), origin="lower", extent=(-lim, lim, -lim, lim), cmap=cmap)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title)
    return ax


def training_curves(history, *, keys: Sequence[str] | None = None, ax=None, smooth: int = 1,
                    logy: bool = False, title: str | None = None):
    """Plot logged losses of a :class:`gencore.train.History` against the step.

    ``smooth`` > 1 applies a running mean over that many logged points.
    """
    ax = _ax(ax)
    steps = np.asarray(history.steps)
    for k in keys or history.keys():
        y = history[k]
        if smooth > 1 and len(y) >= smooth:
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
            st = steps[smooth - 1:]
        else:
            st = steps
        ax.plot(st, y, label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def subplots(ncols: int = 1, nrows: int = 1, *, width: float = 3.2, height: float = 3.0, **kw):
    """``plt.subplots`` with panel sizes in the book's style; returns ``(fig, axes)``."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
