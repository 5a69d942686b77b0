"""Shared training recipes and the evaluation table of chapter "Evaluating generative models".

Each recipe is the one its chapter uses (same module, architecture, optimiser and loss), with
the step budget as a parameter, so that the evaluation chapter can train every model itself and
no table depends on another notebook having run:

========== ===================================================== ==========================
kind       recipe (chapter)                                      likelihood bound
========== ===================================================== ==========================
VAE        ``gencore.vae.VAE(784, 50, (200, 200))``, Bernoulli,   IWAE, nats (binarised x)
           dynamic binarisation, Adam 1e-3, batch 100 (ch. 3)
CVAE       ``VAE(784, 2, (200,), cond_dim=10)``, same loss (ch. 3) IWAE of log p(x | y)
DCGAN      ``gencore.gan.DCGANGenerator(64, width)`` + discriminator, none
           non-saturating loss, Adam (G 2e-3 quick / 2e-4, D 2e-4),
           beta1 = 0.5, batch 64 (ch. 8)
WGAN-GP    MLP 16-256-784 generator, MLP critic 784-128-128-1,   none
           ``gencore.wgan.WGANConfig.gp(lr=1e-3)``, batch 5 x 64
           (ch. 10)
WAE-MMD    ``gencore.wae.WAE(784, 8, (256,))``, IMQ MMD, lambda 10, none
           Adam 1e-3, batch 100 (ch. 11)
========== ===================================================== ==========================

Every model is trained with :func:`gencore.train.fit`. The quick step budgets
(:func:`default_steps`: VAE and CVAE 200, DCGAN and WGAN-GP 100, WAE 200) are smaller than the
chapters' own quick budgets, so that 5 models x 3 seeds fit in about a minute of one CPU core;
the full budgets are the chapters' full ones. Chapters 3, 8, 10 and 11 build the same models
inline today; they can call :func:`train_model` instead. :func:`evaluate` scores samples against
real test images in the feature space of :mod:`gencore.classifier` (FID, KID, precision,
recall), and :func:`leaderboard` averages over seeds.

Later chapters join the same table: a module listed in :data:`PROVIDER_MODULES` calls
:func:`register_recipe` (for example the DDPM of chapter "Denoising diffusion"), after which
:func:`train_model` and :func:`score_seed` accept its kind; :func:`kinds` lists them all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("VAE", "CVAE", "DCGAN", "WGAN-GP", "WAE-MMD")
"""The five built-in recipes (chapter "Evaluating generative models" trains all of them)."""

# Modules of later chapters that register recipes (imported on first use of :func:`kinds`).
PROVIDER_MODULES = ("gencore.diffusion.ddpm", "gencore.diffusion.flow_matching")


@dataclass(frozen=True)
class Recipe:
    """A registered training recipe: ``train(x_train, y_train, *, seed, steps, progress, generator)``
    returns a :class:`TrainedModel`; ``quick_steps`` / ``full_steps`` are its step budgets."""

    kind: str
    train: Callable[..., "TrainedModel"]
    quick_steps: int
    full_steps: int
    description: str = ""


_RECIPES: dict[str, Recipe] = {}
_providers_loaded = False


def register_recipe(kind: str, train: Callable[..., "TrainedModel"], *, quick_steps: int, full_steps: int,
                    description: str = "") -> Recipe:
    """Add a model of a later chapter to the leaderboard (same data, features and metrics).

    ``train(x_train, y_train, *, seed, steps, progress, generator)`` must train with
    :func:`gencore.train.fit` on ``x_train``'s device and return a :class:`TrainedModel` whose
    sampler gives flat images ``(n, 784)`` in [0, 1]. Registering a built-in kind is an error;
    registering the same kind again replaces it (a module re-imported in a notebook).
    """
    from gencore._validate import positive_int

    if not isinstance(kind, str) or not kind or kind in KINDS:
        raise ValueError(f"kind must be a new non-empty name (not one of {', '.join(KINDS)}), got {kind!r}")
    if not callable(train):
        raise TypeError(f"train must be callable, got {type(train).__name__}")
    recipe = Recipe(kind, train, positive_int(quick_steps, "quick_steps"), positive_int(full_steps, "full_steps"),
                    description)
    _RECIPES[kind] = recipe
    return recipe


def _load_providers() -> None:
    global _providers_loaded
    if not _providers_loaded:
        _providers_loaded = True
        import importlib

        for name in PROVIDER_MODULES:
            importlib.import_module(name)


def kinds() -> tuple[str, ...]:
    """Every kind :func:`train_model` accepts: :data:`KINDS`, then the registered recipes."""
    _load_providers()
    return KINDS + tuple(_RECIPES)


@dataclass
class TrainedModel:
    """A trained generator: ``sample(n, seed)`` gives images ``(n, 784)`` in [0, 1]."""

    kind: str
    module: nn.Module
    sampler: Callable[[int, torch.Generator], torch.Tensor]
    nll_fn: Callable[[torch.Tensor, torch.Tensor], float] | None = None

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        dev = next(self.module.parameters()).device
        self.module.eval()
        return self.sampler(n, torch.Generator(device=dev).manual_seed(seed)).clamp(0, 1)

    def nll(self, x_binary: torch.Tensor, labels: torch.Tensor, k: int = 100) -> float | None:
        """IWAE estimate of the test NLL (nats per image) on binarised images; ``None`` without a likelihood."""
        return None if self.nll_fn is None else self.nll_fn(x_binary, labels, k)


def _check_kind(kind: str) -> None:
    if kind not in kinds():
        raise ValueError(f"unknown model kind {kind!r}; valid choices: {', '.join(kinds())}")


def default_steps(kind: str) -> int:
    """Quick-scale step budget of each recipe (``gencore.by_scale`` picks the full one)."""
    from gencore.config import by_scale

    _check_kind(kind)
    if kind in _RECIPES:
        return by_scale(quick=_RECIPES[kind].quick_steps, full=_RECIPES[kind].full_steps)
    quick = {"VAE": 200, "CVAE": 200, "DCGAN": 100, "WGAN-GP": 100, "WAE-MMD": 200}[kind]
    full = {"VAE": 150_000, "CVAE": 30_000, "DCGAN": 5000, "WGAN-GP": 5000, "WAE-MMD": 8000}[kind]
    return by_scale(quick=quick, full=full)


def train_model(kind: str, x_train: torch.Tensor, y_train: torch.Tensor | None = None, *, seed: int = 0,
                steps: int | None = None, progress: bool = False) -> TrainedModel:
    """Train one model of ``kind`` (see :data:`KINDS`) on images ``x_train`` ``(N, 784)`` in [0, 1].

    ``y_train`` (labels 0-9) is needed by the conditional VAE only. Seeds the initialisation,
    the minibatch order and the noise with ``seed``; trains on ``x_train``'s device.
    """
    from gencore import gan, wae, wgan
    from gencore.config import by_scale, seed_everything
    from gencore.data import binarize_dynamic
    from gencore.nets import mlp
    from gencore.train import fit, make_step
    from gencore.vae import VAE, evaluate_bounds

    _check_kind(kind)
    if not isinstance(x_train, torch.Tensor) or x_train.ndim != 2 or x_train.shape[1] != 784:
        raise ValueError(f"x_train must be a tensor of flat 28x28 images (N, 784), got "
                         f"{getattr(x_train, 'shape', type(x_train).__name__)}")
    steps = default_steps(kind) if steps is None else steps
    dev = x_train.device
    seed_everything(seed)
    noise = torch.Generator(device=dev).manual_seed(seed + 1000)
    opts = dict(steps=steps, seed=seed, progress=progress, desc=kind, log_every=10)
    if kind in _RECIPES:
        return _RECIPES[kind].train(x_train, y_train, seed=seed, steps=steps, progress=progress, generator=noise)

    if kind in ("VAE", "CVAE"):
        cond = kind == "CVAE"
        if cond and y_train is None:
            raise ValueError("the conditional VAE needs y_train (labels 0-9)")
        model = (VAE(784, 2, hidden=(200,), cond_dim=10) if cond else VAE(784, 50, hidden=(200, 200))).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        if cond:
            onehot = F.one_hot(y_train.to(dev), 10).float()
            fit(make_step(lambda b: -model.elbo(binarize_dynamic(b[0], generator=noise), cond=b[1]).mean(), opt),
                (x_train, onehot), batch_size=100, **opts)
        else:
            fit(make_step(lambda b: -model.elbo(binarize_dynamic(b, generator=noise)).mean(), opt),
                x_train, batch_size=100, **opts)

        def sampler(n, g, model=model, cond=cond):
            c = F.one_hot(torch.arange(n, device=dev) % 10, 10).float() if cond else None
            return model.sample(n, cond=c, generator=g)

        def nll_fn(xb, labels, k, model=model, cond=cond):
            c = F.one_hot(labels.to(xb.device), 10).float() if cond else None
            return evaluate_bounds(model.eval(), xb, k=k, batch_size=100, seed=7, cond=c).nll

        return TrainedModel(kind, model, sampler, nll_fn)

    if kind == "DCGAN":
        latent, width = 64, by_scale(quick=16, full=64)
        g_net, d_net = gan.DCGANGenerator(latent, width=width).to(dev), gan.DCGANDiscriminator(width=width).to(dev)
        lr_g = by_scale(quick=2e-3, full=2e-4)
        step = gan.make_gan_step(g_net, d_net, gan.adam_for_gan(g_net, lr_g), gan.adam_for_gan(d_net, 2e-4),
                                 latent_dim=latent, k=1)
        fit(step, x_train, batch_size=64, **opts)
        return TrainedModel(kind, g_net, lambda n, g: g_net(torch.randn(n, latent, generator=g, device=dev))
                            .reshape(n, 784))

    if kind == "WGAN-GP":
        g_net = mlp([16, 256, 784], out_activation="sigmoid").to(dev)
        critic = mlp([784, 128, 128, 1]).to(dev)
        step = wgan.wgan_step(g_net, critic, 16, wgan.WGANConfig.gp(lr=1e-3), generator=noise)
        fit(step, x_train, batch_size=5 * 64, **opts)
        return TrainedModel(kind, g_net, lambda n, g: g_net(torch.randn(n, 16, generator=g, device=dev)))

    model = wae.WAE(784, 8, hidden=(256,)).to(dev)
    step = wae.wae_step(model, torch.optim.Adam(model.parameters(), lr=1e-3), penalty="mmd", lam=10.0,
                        generator=noise)
    fit(step, x_train, batch_size=100, **opts)
    return TrainedModel(kind, model, lambda n, g: model.sample(n, generator=g))


@dataclass(frozen=True)
class Scores:
    """Metrics of one sample set against the real test images (one feature space)."""

    fid: float
    kid: float
    precision: float
    recall: float
    nll: float | None = None


def evaluate(fake_images: torch.Tensor, real_features: torch.Tensor, classifier: nn.Module, *,
             nll: float | None = None, kid_subset: int = 500, kid_subsets: int = 20, k: int = 3) -> Scores:
    """FID, KID (mean over ``kid_subsets`` subsets of ``kid_subset`` rows), precision and recall (``k``-NN)
    of ``fake_images`` ``(n, 784)`` against ``real_features`` ``(N, 128)``, in the classifier's feature space."""
    from gencore import metrics
    from gencore.classifier import features

    ff = features(fake_images, classifier)
    pr = metrics.precision_recall(real_features, ff, k=k)
    return Scores(fid=metrics.fid(real_features, ff),
                  kid=metrics.kid(real_features, ff, n_subsets=kid_subsets, subset_size=kid_subset).mean,
                  precision=pr.precision, recall=pr.recall, nll=nll)


@dataclass(frozen=True)
class Row:
    """One leaderboard row: every seed's :class:`Scores` with means and sample std (ddof = 1)."""

    kind: str
    seeds: tuple[int, ...]
    scores: tuple[Scores, ...] = field(repr=False)

    def values(self, metric: str) -> np.ndarray:
        v = [getattr(s, metric) for s in self.scores]
        return np.array([math.nan if x is None else x for x in v], dtype=float)

    def mean(self, metric: str) -> float:
        return float(np.mean(self.values(metric)))

    def std(self, metric: str) -> float:
        v = self.values(metric)
        return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def format_table(rows: list[Row], metrics_: tuple[str, ...] = ("fid", "kid", "precision", "recall", "nll")) -> str:
    """A plain-text table: ``mean ± std`` over seeds for each metric (``-`` where there is none)."""
    names = {"fid": "FID", "kid": "KID", "nll": "NLL (nats)"}
    width = 19
    lines = [f"{'model (seeds)':22s}" + "".join(f"{names.get(m, m):>{width}s}" for m in metrics_)]
    for r in rows:
        cells = []
        for m in metrics_:
            v = r.values(m)
            if np.isnan(v).all():
                cells.append(f"{'-':>{width}s}")
                continue
            fmt = ".3f" if m in ("precision", "recall") else ".1f"
            cells.append(f"{format(r.mean(m), fmt) + ' ± ' + format(r.std(m), fmt):>{width}s}")
        lines.append(f"{r.kind + f' ({len(r.seeds)})':22s}" + "".join(cells))
    return "\n".join(lines)


@dataclass
class SeedResult:
    """Everything :func:`score_seed` trained and measured for one seed."""

    seed: int
    scores: dict[str, Scores]
    models: dict[str, TrainedModel] = field(repr=False)


def score_seed(seed: int, x_train: torch.Tensor, y_train: torch.Tensor, real_features: torch.Tensor,
               classifier: nn.Module, *, x_test_binary: torch.Tensor | None = None,
               y_test: torch.Tensor | None = None, n_samples: int = 1000, k_iwae: int = 50,
               kinds: tuple[str, ...] | None = None, steps: dict[str, int] | None = None) -> SeedResult:
    """Train every model of ``kinds`` with ``seed`` and score ``n_samples`` of its samples.

    The NLL column is the ``k_iwae``-sample IWAE estimate on ``x_test_binary`` (labels
    ``y_test`` for the conditional VAE) for the models that have a likelihood.
    """
    scores, models = {}, {}
    for kind in (KINDS if kinds is None else kinds):
        model = train_model(kind, x_train, y_train, seed=seed, steps=(steps or {}).get(kind))
        nll = None
        if x_test_binary is not None and model.nll_fn is not None:
            nll = model.nll(x_test_binary, y_test, k=k_iwae)
        scores[kind] = evaluate(model.sample(n_samples, seed=seed), real_features, classifier, nll=nll)
        models[kind] = model
    return SeedResult(seed, scores, models)


def rows_from(results: dict[int, dict[str, Scores]]) -> list[Row]:
    """Leaderboard rows from ``{seed: {kind: Scores}}`` (one row per kind, seeds in order)."""
    seeds = tuple(results)
    if not seeds:
        raise ValueError("results must hold at least one seed")
    kinds = list(results[seeds[0]])
    return [Row(kind, seeds, tuple(results[s][kind] for s in seeds)) for kind in kinds]
