"""Device choice, seeding and the quick/full scale setting.

Library functions never call :func:`device`: they follow the device of their inputs.
Only a chapter's training code (through :func:`gencore.train.fit`'s data) picks a device.
"""
from __future__ import annotations

import os
import random
from typing import TypeVar

import numpy as np
import torch

SCALES = ("quick", "full")
SCALE_ENV = "GENCORE_SCALE"
T = TypeVar("T")


def device() -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (all devices).

    Returns a CPU :class:`torch.Generator` seeded with ``seed`` for code that prefers an
    explicit generator. ``PYTHONHASHSEED`` cannot be changed from inside a running
    interpreter; the test command sets it to 0.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def scale() -> str:
    """Return the run scale: ``"quick"`` or ``"full"``.

    ``quick`` is for a 2-core CPU: small data, few steps, each chapter in about a minute.
    ``full`` trains at the size the literature reports and is meant for a GPU. The default
    is ``full`` when CUDA is available and ``quick`` otherwise; the environment variable
    ``GENCORE_SCALE`` overrides it.
    """
    value = os.environ.get(SCALE_ENV)
    if value is None or value == "":
        return "full" if torch.cuda.is_available() else "quick"
    value = value.strip().lower()
    if value not in SCALES:
        raise ValueError(
            f"{SCALE_ENV} must be one of {', '.join(SCALES)}; got {os.environ[SCALE_ENV]!r}"
        )
    return value


def by_scale(quick: T, full: T) -> T:
    """Return ``quick`` or ``full`` according to :func:`scale`.

    Examples
    --------
    >>> import os; os.environ["GENCORE_SCALE"] = "quick"
    >>> by_scale(quick=500, full=50_000)
    500
    """
    return quick if scale() == "quick" else full
