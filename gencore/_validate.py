"""Argument checks shared by gencore modules (private).

One conversion for every public function that accepts "a tensor or an array": NumPy arrays of
any memory layout (negative strides such as ``m[::-1]``, non-contiguous slices, Fortran order),
nested lists and scalars become float64 tensors; anything else is a TypeError that names the
argument.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_float_tensor(x: Any, name: str, what: str = "numbers") -> torch.Tensor:
    """``x`` as a floating-point tensor (float64 when converted), or a TypeError naming ``name``.

    Tensors are returned as they are (integer and boolean tensors cast to float64), on their
    device. Everything else goes through ``np.asarray(x, dtype=float64)`` and is copied to a
    contiguous array only when its strides are not ones torch accepts (``torch.as_tensor``
    rejects negative strides, e.g. a reversed view ``m[::-1]``; that used to surface as a
    misleading "must be a tensor or array" TypeError).
    """
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.double()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a tensor or array of {what}, got {type(x).__name__}") from exc
    if any(s < 0 for s in arr.strides) or not arr.flags.writeable:
        arr = np.array(arr)                 # a copy torch can share (no negative strides, writable)
    return torch.from_numpy(arr)


def positive_int(n: Any, name: str) -> int:
    """``n`` if it is a positive integer (not a bool), else a ValueError naming ``name``."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return n
