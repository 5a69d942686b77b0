"""Sample-quality metrics shared by several chapters.

Mode coverage on mixtures of Gaussians (ring of 8, 5x5 grid), as used to measure mode
collapse (Metz et al. 2017; Srivastava et al. 2017, VEEGAN): a sample is *high quality*
when it lies within ``n_std`` standard deviations of its nearest mode, and a mode is
*covered* when at least ``min_count`` high-quality samples are nearest to it.
"""
from __future__ import annotations

import torch


def _nearest(samples: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if samples.ndim != 2 or centers.ndim != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(
            f"samples (N, d) and centers (K, d) must be 2-D with the same d; got {tuple(samples.shape)} "
            f"and {tuple(centers.shape)}"
        )
    if len(samples) == 0:
        raise ValueError("samples is empty")
    centers = centers.to(samples.device, samples.dtype)
    d = torch.cdist(samples, centers)
    dist, idx = d.min(dim=1)
    return dist, idx


def high_quality_fraction(samples: torch.Tensor, centers: torch.Tensor, std: float, *, n_std: float = 3.0) -> float:
    """Fraction of samples within ``n_std * std`` of their nearest mode centre."""
    if std <= 0 or n_std <= 0:
        raise ValueError(f"std and n_std must be > 0, got std={std!r}, n_std={n_std!r}")
    dist, _ = _nearest(samples, centers)
    return float((dist <= n_std * std).float().mean())


def modes_covered(samples: torch.Tensor, centers: torch.Tensor, std: float, *, n_std: float = 3.0,
                  min_count: int = 1) -> int:
    """Number of modes with at least ``min_count`` high-quality samples nearest to them."""
    if std <= 0 or n_std <= 0:
        raise ValueError(f"std and n_std must be > 0, got std={std!r}, n_std={n_std!r}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count!r}")
    dist, idx = _nearest(samples, centers)
    counts = torch.bincount(idx[dist <= n_std * std], minlength=len(centers))
    return int((counts >= min_count).sum())
