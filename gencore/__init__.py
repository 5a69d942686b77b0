"""gencore: reference implementations for *Deep Generative Models, checked*.

The package holds every piece of code that more than one chapter of the book needs.
Chapters import from here; nothing is copied between notebooks.

Top-level helpers
-----------------
``device()``          the best available torch device (CUDA, then MPS, then CPU).
``seed_everything()`` seeds Python, NumPy and torch.
``scale()``           ``"quick"`` (CPU default) or ``"full"`` (GPU default); env ``GENCORE_SCALE``.
``by_scale()``        pick a value (dataset size, step count) for the current scale.
``check_close()``     assert a numerical claim within a tolerance and print one stable line.
``check_that()``      assert a boolean claim and print one stable line.
"""
from gencore.config import by_scale, device, scale, seed_everything
from gencore.checks import ClaimError, check_close, check_that

__all__ = [
    "ClaimError",
    "by_scale",
    "check_close",
    "check_that",
    "device",
    "scale",
    "seed_everything",
]
__version__ = "0.1.0"
