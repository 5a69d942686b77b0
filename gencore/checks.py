"""Checked claims: how a sentence in the book becomes an assertion.

A chapter states a result, computes it, and calls :func:`check_close` or
:func:`check_that`. The call raises :class:`ClaimError` (so the notebook, and nbval, fail)
when the claim does not hold, and otherwise prints a single line that does not depend on
the machine, e.g.::

    check passed: D* matches p/(p+q) (max error < 0.02)

That printed line is what nbval compares; the tolerance, not the measured value, is printed.

A claim that *training* does something is a claim about a distribution over seeds, not about
one run: :func:`check_over_seeds` runs the experiment for several seeds, requires the claim
in all of them (or in a stated fraction) and prints the worst case and the spread.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

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


def check_close(claim: str, value: Any, target: Any, tol: float, *, relative: bool = False) -> None:
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
    None
        Nothing, so that a cell ending in a check shows only the check's line. Use
        :func:`max_error` to obtain the measured error.
    """
    if not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    max_err = max_error(value, target, relative=relative, claim=claim)
    kind = "relative error" if relative else "error"
    if not max_err < tol:
        raise ClaimError(f"claim failed: {claim}: max {kind} {max_err:.3g} is not < {tol:g}")
    print(f"check passed: {claim} (max {kind} < {tol:g})")


def max_error(value: Any, target: Any, *, relative: bool = False, claim: str = "max_error") -> float:
    """The maximum absolute (or relative) error between ``value`` and ``target``.

    NaN in ``value`` and infinite entries that differ from ``target`` raise
    :class:`ClaimError` (naming ``claim``); matching infinities count as zero error.
    """
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
    return float(err.max()) if err.size else 0.0


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


@dataclass(frozen=True)
class SeedCheck:
    """What :func:`check_over_seeds` measured: one value and one verdict per seed."""

    claim: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    passed: tuple[bool, ...]

    @property
    def fraction(self) -> float:
        """Fraction of seeds for which the claim held."""
        return sum(self.passed) / len(self.passed)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (ddof = 1; 0 for a single seed)."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    def __repr__(self) -> str:  # short and stable: a cell may end with a SeedCheck
        return (f"SeedCheck({self.claim!r}: {sum(self.passed)}/{len(self.passed)} seeds, "
                f"mean {self.mean:.3g} ± {self.std:.2g})")


def check_over_seeds(
    claim: str,
    fn: Callable[[int], Any],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    at_most: float | None = None,
    at_least: float | None = None,
    min_fraction: float = 1.0,
) -> SeedCheck:
    """Check a claim about training over several seeds and print one line with the spread.

    ``fn(seed)`` runs the whole experiment for one seed (seeding it itself, e.g. with
    :func:`gencore.seed_everything`) and returns either a number or a bool. For a number the
    claim for that seed is ``value <= at_most`` and/or ``value >= at_least``; for a bool it is
    the bool itself. The check passes when the claim holds for at least ``min_fraction`` of
    the seeds (all of them by default) and raises :class:`ClaimError` otherwise, listing every
    seed's value, so that a single lucky seed cannot carry a claim.

    Parameters
    ----------
    claim : str
        The sentence of the text, e.g. ``"the trained GAN's JSD to the data is below 0.1"``.
    fn : callable
        ``fn(seed) -> float | bool``.
    seeds : sequence of int
        At least one seed; the book uses at least 3 in quick mode.
    at_most, at_least : float, optional
        Thresholds for numeric values; at least one is required when ``fn`` returns numbers.
    min_fraction : float
        Fraction of seeds, in (0, 1], for which the claim must hold.

    Returns
    -------
    SeedCheck
        Seeds, values, per-seed verdicts, with ``fraction``, ``mean`` and ``std``.

    Examples
    --------
    >>> r = check_over_seeds("x is small", lambda s: 0.1 * s, seeds=[0, 1, 2], at_most=0.5)
    check passed: x is small (3/3 seeds: 0, 1, 2; worst 0.2, mean 0.1 ± 0.1; needs <= 0.5)
    """
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed, got an empty sequence")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    if not (isinstance(min_fraction, (int, float)) and 0 < min_fraction <= 1):
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction!r}")
    for name, bound in (("at_most", at_most), ("at_least", at_least)):
        if bound is not None and not (isinstance(bound, (int, float)) and math.isfinite(bound)):
            raise ValueError(f"{name} must be a finite number or None, got {bound!r}")
    values, passed = [], []
    boolean = None
    for seed in seeds:
        out = fn(seed)
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu()
            out = bool(out.item()) if out.dtype == torch.bool else float(out.item())
        is_bool = isinstance(out, (bool, np.bool_))
        if boolean is None:
            boolean = is_bool
        elif boolean != is_bool:
            raise TypeError("fn must return the same kind (bool or number) for every seed")
        if is_bool:
            if at_most is not None or at_least is not None:
                raise ValueError("at_most/at_least apply to numeric results; fn returned a bool")
            values.append(float(out))
            passed.append(bool(out))
            continue
        try:
            v = float(out)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"fn(seed) must return a number or a bool, got {type(out).__name__}") from exc
        if at_most is None and at_least is None:
            raise ValueError("give at_most and/or at_least when fn returns numbers")
        ok = math.isfinite(v) and (at_most is None or v <= at_most) and (at_least is None or v >= at_least)
        values.append(v)
        passed.append(ok)
    report = SeedCheck(claim, seeds, tuple(values), tuple(passed))
    n_ok, n = sum(passed), len(passed)
    seed_list = ", ".join(map(str, seeds))
    if boolean:
        summary = f"{n_ok}/{n} seeds: {seed_list}"
    else:
        if at_most is not None and at_least is not None:
            worst = max(values, key=lambda v: max(v - at_most, at_least - v))
            need = f"needs in [{at_least:g}, {at_most:g}]"
        elif at_most is not None:
            worst, need = max(values), f"needs <= {at_most:g}"
        else:
            worst, need = min(values), f"needs >= {at_least:g}"
        summary = (f"{n_ok}/{n} seeds: {seed_list}; worst {worst:.3g}, "
                   f"mean {report.mean:.3g} ± {report.std:.2g}; {need}")
    required = math.ceil(min_fraction * n - 1e-9)
    if n_ok < required:
        per_seed = ", ".join(f"seed {s}: {v:.4g}{'' if ok else ' (fails)'}"
                             for s, v, ok in zip(seeds, values, passed))
        raise ClaimError(f"claim failed: {claim}: held for {n_ok}/{n} seeds, needs {required} ({per_seed})")
    print(f"check passed: {claim} ({summary})")
    return report
