"""gencore: reference implementations for *Deep Generative Models, checked*.

The package holds every piece of code that more than one chapter of the book needs.
Chapters import from here; nothing is copied between notebooks.

Top-level helpers
-----------------
``device()``            the best available torch device (CUDA, then MPS, then CPU).
``seed_everything()``   seeds Python, NumPy and torch.
``scale()``             ``"quick"`` (CPU default) or ``"full"`` (GPU default); env ``GENCORE_SCALE``.
``by_scale()``          pick a value (dataset size, step count) for the current scale.
``check_close()``       assert a numerical claim within a tolerance and print one stable line.
``check_that()``        assert a boolean claim and print one stable line.
``check_over_seeds()``  assert a claim about training for several seeds; prints the spread.

Submodules (``gencore.metrics``, ``gencore.ot``, ...) load on first attribute access
(PEP 562), so ``import gencore`` followed by ``gencore.metrics.fid(...)`` works, as with
``torch`` and ``scipy``.
"""
import importlib as _importlib

from gencore.checks import ClaimError, SeedCheck, check_close, check_over_seeds, check_that, max_error
from gencore.config import by_scale, device, scale, seed_everything

_SUBMODULES = frozenset({
    "checks", "config", "data", "divergences", "exercises", "gan", "gan_dynamics", "gumbel",
    "likelihood", "metrics", "nets", "ot", "plot", "train", "vae", "wae", "wgan",
    "autoregressive", "flows", "diffusion", "classifier", "distributed", "leaderboard",
    "flow_vae", "flow_gan", "avb", "multimodal", "vrnn", "pixelvae",
})

__all__ = [
    "ClaimError",
    "SeedCheck",
    "by_scale",
    "check_close",
    "check_over_seeds",
    "check_that",
    "device",
    "max_error",
    "scale",
    "seed_everything",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _SUBMODULES:
        try:
            module = _importlib.import_module(f"gencore.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gencore.{name}":
                raise AttributeError(f"module 'gencore' has no attribute {name!r}") from None
            raise
        globals()[name] = module
        return module
    raise AttributeError(f"module 'gencore' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {m for m in _SUBMODULES if _importlib.util.find_spec(f"gencore.{m}")})
