"""Checked claims: how a sentence in the book becomes an assertion.

A chapter states a result, computes it, and calls :func:`check_close` or
:func:`check_that`. The call raises :class:`ClaimError` (so the notebook, and nbval, fail)
when the claim does not hold, and otherwise prints a single line that does not depend on
the machine, e.g.::

    check passed: D* matches p/(p+q) (max error < 0.02)

That printed line is what nbval compares; the tolerance, not the measured value, is printed.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


class ClaimError(AssertionError):
    """A claim made in the text does not hold numerically."""


def _as_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numeric (number, array or tensor), got {type(x).__name__}") from exc


def check_close(claim: str, value: Any, target: Any, tol: float, *, relative: bool = False) -> float:
    """Assert that ``value`` equals ``target`` within ``tol`` and print one stable line.

    Parameters
    ----------
    claim : str
        What the text claims, in words (``"D* matches p/(p+q)"``).
    value, target : float, array or tensor
        Broadcastable numbers; the maximum absolute (or relative) error is tested.
        Infinite entries must match exactly (same sign).
    tol : float
        Tolerance, > 0.
    relative : bool
        Use ``|value - target| / max(|target|, 1e-12)`` instead of the absolute error.

    Returns
    -------
    float
        The maximum error, for chapters that want to show it (avoid printing it raw: it
        varies across CPUs in the last digits).
    """
    if not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    v, t = _as_array(value, "value"), _as_array(target, "target")
    try:
        v, t = np.broadcast_arrays(v, t)
    except ValueError as exc:
        raise ValueError(f"value shape {v.shape} and target shape {t.shape} do not broadcast") from exc
    if np.isnan(v).any():
        raise ClaimError(f"claim failed: {claim}: value contains NaN")
    inf_v, inf_t = np.isinf(v), np.isinf(t)
    if (inf_v != inf_t).any() or (v[inf_v] != t[inf_t]).any():
        raise ClaimError(f"claim failed: {claim}: infinite entries of value and target differ")
    finite = ~inf_v
    err = np.abs(v[finite] - t[finite])
    if relative:
        err = err / np.maximum(np.abs(t[finite]), 1e-12)
    max_err = float(err.max()) if err.size else 0.0
    kind = "relative error" if relative else "error"
    if not max_err < tol:
        raise ClaimError(f"claim failed: {claim}: max {kind} {max_err:.3g} is not < {tol:g}")
    print(f"check passed: {claim} (max {kind} < {tol:g})")
    return max_err


def check_that(claim: str, condition: Any, detail: str = "") -> None:
    """Assert a boolean claim (an inequality, a monotonicity) and print one stable line.

    ``condition`` may be a bool, a 0-d tensor/array, or an array whose entries must all be
    true. ``detail`` is added to the error message only (it may hold measured numbers).
    """
    if isinstance(condition, torch.Tensor):
        ok = bool(condition.all().item())
    else:
        ok = bool(np.all(np.asarray(condition)))
    if not ok:
        raise ClaimError(f"claim failed: {claim}" + (f" ({detail})" if detail else ""))
    print(f"check passed: {claim}")
