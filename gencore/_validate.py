"""Argument checks shared by gencore modules (private)."""
from __future__ import annotations

from typing import Any

import torch


def as_float_tensor(x: Any, name: str, what: str = "numbers") -> torch.Tensor:
    """``x`` as a floating-point tensor (float64 when converted), or a TypeError naming ``name``."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be a tensor or array of {what}, got {type(x).__name__}") from exc
    if not x.is_floating_point():
        x = x.double()
    return x
