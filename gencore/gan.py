r"""Generative adversarial networks: the optimal discriminator, stable losses, networks, training steps.

The value function of Goodfellow et al. (2014),

.. math:: V(D, G) = \E_{x\sim\pdata}[\log D(x)] + \E_{z\sim p_z}[\log(1 - D(G(z)))],

is maximised by :func:`optimal_discriminator` :math:`D^* = \pdata/(\pdata + \pg)`, and at
:math:`D^*` it equals :math:`-\log 4 + 2\,\JS(\pdata\|\pg)` (chapter "GANs and the optimal
discriminator", thm-gan-optimal-d and thm-gan-global-optimum).

Losses take discriminator *logits* :math:`\ell` (:math:`D = \sigma(\ell)`) and use
``logsigmoid``/``softplus``, so they stay finite for :math:`|\ell|` up to ``1e4``.

Training goes through :func:`gencore.train.fit`; :func:`make_gan_step`,
:func:`make_infogan_step` and :func:`make_semi_supervised_step` build its step functions.
The practice chapter ("GANs in practice") also uses the InfoGAN, semi-supervised and AdaGAN
helpers below; the bilinear-game dynamics live in :mod:`gencore.gan_dynamics`.
:class:`SeedEnsemble` trains several seeds of a small GAN in one ``fit`` call, so that the
chapters check training claims over seeds; :class:`CollapseCheck` tells a collapsed generator
from one that never trained.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gencore._validate import as_float_tensor
from gencore.nets import mlp

GENERATOR_LOSSES = ("non_saturating", "minimax")


def _tensor(x: Any, name: str) -> torch.Tensor:
    return as_float_tensor(x, name)


def _same_shape(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{na} and {nb} must have the same shape (one entry per sample); "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


def _probabilities(p: torch.Tensor, name: str) -> None:
    if p.numel() and (torch.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise ValueError(f"{name} must hold probabilities in [0, 1]")


# --------------------------------------------------------------------------- the theory
def optimal_discriminator(p_data: Any, p_model: Any) -> torch.Tensor:
    r"""The optimal discriminator :math:`D^*(x) = \pdata(x) / (\pdata(x) + \pg(x))`.

    Parameters
    ----------
    p_data, p_model : tensor or array, same shape
        Density values :math:`\pdata(x)` and :math:`\pg(x)` (>= 0) at the same points.

    Returns
    -------
    Tensor of the same shape, in [0, 1]; ``1/2`` where both densities are 0 (there any
    value is optimal) and where they are equal. See chapter "GANs and the optimal
    discriminator", thm-gan-optimal-d.
    """
    p, q = _tensor(p_data, "p_data"), _tensor(p_model, "p_model")
    _same_shape(p, q, "p_data", "p_model")
    if p.numel() and (p.min() < 0 or q.min() < 0 or torch.isnan(p).any() or torch.isnan(q).any()):
        raise ValueError("p_data and p_model must be density values >= 0")
    total = p + q
    return torch.where(total > 0, p / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.full_like(total, 0.5))


def gan_value(d_real: Any, d_fake: Any) -> torch.Tensor:
    r"""Monte Carlo value :math:`\hat V = \frac1n\sum_i \log D(x_i) + \frac1m\sum_j \log(1 - D(G(z_j)))`.

    ``d_real`` (n,) and ``d_fake`` (m,) are discriminator *probabilities* in [0, 1]
    (``n`` and ``m`` may differ). ``log 0 = -inf`` is returned as such.
    """
    a, b = _tensor(d_real, "d_real"), _tensor(d_fake, "d_fake")
    _probabilities(a, "d_real")
    _probabilities(b, "d_fake")
    return torch.log(a).mean() + torch.log1p(-b).mean()


def _trapezoid(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.trapezoid(y, x)


def _xlogy(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.where(p > 0, p * torch.log(torch.where(p > 0, r, torch.ones_like(r))), torch.zeros_like(p))


def gan_value_on_grid(p_data: Any, p_model: Any, x: Any, discriminator: Any = None) -> torch.Tensor:
    r""":math:`V(D, G) = \int \pdata \log D + \pg \log(1 - D)\,dx` by the trapezoid rule on a 1-D grid.

    ``p_data``, ``p_model`` (and ``discriminator``, probabilities) are values on the grid
    ``x`` (shape ``(n,)``). With ``discriminator=None`` the optimal :math:`D^*` is used, which
    gives the virtual training criterion :math:`C(G) = -\log 4 + 2\JS(\pdata\|\pg)`
    (thm-gan-global-optimum).
    """
    p, q, xs = _tensor(p_data, "p_data"), _tensor(p_model, "p_model"), _tensor(x, "x")
    _same_shape(p, q, "p_data", "p_model")
    _same_shape(p, xs, "p_data", "x")
    if discriminator is None:  # D* = p/(p+q), 1 - D* = q/(p+q), without rounding 1 - D* to 0
        _ = optimal_discriminator(p, q)  # validates the densities
        total = (p + q).clamp_min(torch.finfo(p.dtype).tiny)
        return _trapezoid(_xlogy(p, p / total) + _xlogy(q, q / total), xs)
    d = _tensor(discriminator, "discriminator")
    _same_shape(p, d, "p_data", "discriminator")
    _probabilities(d, "discriminator")
    return _trapezoid(_xlogy(p, d) + _xlogy(q, 1 - d), xs)


def jensen_shannon_on_grid(p: Any, q: Any, x: Any) -> torch.Tensor:
    r""":math:`\JS(p\|q) = \tfrac12\KL(p\|m) + \tfrac12\KL(q\|m)`, :math:`m = (p+q)/2`, by the trapezoid rule (nats).

    ``p`` and ``q`` are density values on the grid ``x`` (shape ``(n,)``); either may carry
    leading batch dimensions, ``(..., n)``, which broadcast (one JSD per row: a whole family of
    generators against one data density at once).
    """
    p, q, xs = _tensor(p, "p"), _tensor(q, "q"), _tensor(x, "x")
    if xs.ndim != 1 or p.shape[-1:] != xs.shape or q.shape[-1:] != xs.shape:
        raise ValueError(f"p and q must have the grid's length {tuple(xs.shape)} in their last dimension; "
                         f"got {tuple(p.shape)} and {tuple(q.shape)}")
    p, q = torch.broadcast_tensors(p, q)
    m = 0.5 * (p + q)
    return 0.5 * _trapezoid(_xlogy(p, p / m.clamp_min(1e-300)) + _xlogy(q, q / m.clamp_min(1e-300)), xs)


def binned_js(samples: Any, reference: Any, *, lo: float, hi: float, bins: int = 60) -> torch.Tensor:
    r"""Jensen–Shannon divergence (nats) between histograms of two 1-D samples.

    Both samples are clamped to ``[lo, hi]`` and binned into ``bins`` equal bins; the JSD of
    the two normalised histograms is :func:`gencore.divergences.f_divergence` ``("js", ...)``.
    ``samples`` may be ``(K, N)``: one JSD per row (one per seed of a :class:`SeedEnsemble`).
    Used by chapter "GANs and the optimal discriminator" to score a trained 1-D generator.
    """
    from gencore.divergences import f_divergence

    a, b = _tensor(samples, "samples"), _tensor(reference, "reference").reshape(-1)
    if a.ndim not in (1, 2) or a.shape[-1] == 0 or len(b) == 0:
        raise ValueError(f"samples must be (N,) or (K, N) and reference (N,), non-empty; got {tuple(a.shape)}")
    if not (hi > lo and bins >= 2):
        raise ValueError(f"need hi > lo and bins >= 2, got lo={lo!r}, hi={hi!r}, bins={bins!r}")

    def hist(v: torch.Tensor) -> torch.Tensor:
        h = torch.histc(v.clamp(lo, hi), bins=bins, min=lo, max=hi).double()
        return h / h.sum()

    ref = hist(b)
    if a.ndim == 1:
        return f_divergence("js", hist(a), ref)
    return torch.stack([f_divergence("js", hist(row), ref) for row in a])


# --------------------------------------------------------------------------- stable losses
def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    r"""Discriminator loss :math:`-\hat V`, from logits:

    .. math:: \frac1n\sum_i \mathrm{softplus}(-\ell_i^{real}) + \frac1n\sum_j \mathrm{softplus}(\ell_j^{fake}),

    since :math:`-\log\sigma(\ell) = \mathrm{softplus}(-\ell)` and
    :math:`-\log(1 - \sigma(\ell)) = \mathrm{softplus}(\ell)`. Both inputs have the same shape
    ``(n,)`` (or ``(n, 1)``). Finite for logits up to ``+-1e4``.
    """
    _same_shape(logits_real, logits_fake, "logits_real", "logits_fake")
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def generator_loss(logits_fake: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    r"""Generator loss from the discriminator's logits on generated samples.

    ``"minimax"``: :math:`\frac1n\sum_j \log(1 - D(G(z_j))) = -\frac1n\sum_j\mathrm{softplus}(\ell_j)`
    (saturates: its gradient vanishes as :math:`D(G(z))\to0`).
    ``"non_saturating"``: :math:`-\frac1n\sum_j \log D(G(z_j)) = \frac1n\sum_j\mathrm{softplus}(-\ell_j)`.
    See chapter "GANs and the optimal discriminator", prop-gan-saturation; at the optimal
    discriminator the minimax gradient is that of :math:`2\JS` and the non-saturating one that
    of :math:`\KL(\pg\|\pdata) - 2\JS` (prop-gan-ns-gradient).
    """
    if kind not in GENERATOR_LOSSES:
        raise ValueError(f"unknown generator loss kind {kind!r}; valid choices: {', '.join(GENERATOR_LOSSES)}")
    if kind == "minimax":
        return -F.softplus(logits_fake).mean()
    return F.softplus(-logits_fake).mean()


# --------------------------------------------------------------------------- networks
class MLPDiscriminator(nn.Module):
    """MLP discriminator: ``features`` (LeakyReLU hidden layers) then a linear ``head``.

    ``forward(x)`` returns logits of shape ``(N,)`` when ``n_outputs == 1``, else ``(N, n_outputs)``
    (the K class logits of a semi-supervised discriminator).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (128, 128), n_outputs: int = 1):
        super().__init__()
        self.features = mlp([in_dim, *hidden], activation="leaky_relu", out_activation="leaky_relu")
        self.out_features = int(hidden[-1])
        self.head = nn.Linear(self.out_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def mlp_generator(latent_dim: int, out_dim: int, hidden: Sequence[int] = (128, 128),
                  out_activation: str | None = None) -> nn.Sequential:
    """MLP generator ``z (N, latent_dim) -> x (N, out_dim)``; ``out_activation="sigmoid"`` for images in [0, 1]."""
    return mlp([latent_dim, *hidden, out_dim], activation="relu", out_activation=out_activation)


class DCGANGenerator(nn.Module):
    """DCGAN generator for 28x28 images (Radford et al. 2015).

    ``z (N, latent_dim)`` -> linear -> ``(2w, 7, 7)`` -> BN, ReLU -> stride-2 transposed conv
    ``(w, 14, 14)`` -> BN, ReLU -> stride-2 transposed conv ``(1, 28, 28)`` -> sigmoid, returned
    flat ``(N, 784)`` in [0, 1].
    """

    def __init__(self, latent_dim: int, width: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        self.fc = nn.Sequential(nn.Linear(latent_dim, 2 * width * 49, bias=False),
                                nn.BatchNorm1d(2 * width * 49), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1), nn.Sigmoid())
        self.width = width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(len(z), 2 * self.width, 7, 7)
        return self.net(h).flatten(1)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator for 28x28 images: stride-2 convs, batch norm, LeakyReLU(0.2).

    ``x (N, 784)`` -> ``features (N, 2w*49)`` -> ``head`` logits ``(N,)`` (or ``(N, n_outputs)``).
    """

    def __init__(self, width: int = 64, n_outputs: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Unflatten(1, (1, 28, 28)),
            nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2), nn.Flatten())
        self.out_features = 2 * width * 49
        self.head = nn.Linear(self.out_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


class SeedEnsemble(nn.Module):
    r"""``K`` independent MLPs trained as one module, so that one :func:`gencore.train.fit` call
    runs ``K`` seeds of a small GAN at once.

    ``forward(x)`` takes ``(N, d_in)`` rows with ``N`` divisible by ``K``, gives rows
    ``[jN/K, (j+1)N/K)`` to member ``j`` and returns the members' outputs stacked back as
    ``(N, d_out)`` (``(N,)`` with ``logits=True``, for a discriminator). Every loss of
    :func:`make_gan_step` is then the mean of the ``K`` members' losses; a member's gradient is
    its own run's gradient divided by ``K``, which Adam's normalisation removes (up to its
    ``eps``), so the members train as ``K`` separate runs with their own initialisations, noise
    and minibatches would. Use :meth:`members` to split samples by member.

    With ``stacked=True`` every member sees *all* rows instead: the input is ``(N, K, d_in)``
    (member ``j`` reads ``x[:, j]``) or ``(N, K * d_in)`` (the same, flattened: pass
    ``latent_dim = K * d_in`` to :func:`make_gan_step` so each member gets its own noise), and
    the output is ``(N, K, d_out)`` (logits ``(N, K)``). Data of shape ``(N, K, d)`` then gives
    each member its own training set, e.g. one AdaGAN reweighting per seed.

    Parameters
    ----------
    k : int
        Number of members (seeds), >= 1.
    sizes : list of int
        Layer widths ``[d_in, ..., d_out]`` of each member.
    activation : str
        Hidden activation (``"relu"`` for a generator, ``"leaky_relu"`` for a discriminator).
    logits : bool
        A discriminator: ``d_out`` must be 1 and the output is returned as ``(N,)``.
    out_activation : str, optional
        An activation after the last layer (``"sigmoid"`` for images in [0, 1]).
    """

    def __init__(self, k: int, sizes: Sequence[int], activation: str = "relu", logits: bool = False,
                 out_activation: str | None = None, stacked: bool = False):
        super().__init__()
        from gencore.nets import ACTIVATIONS, ensemble_mlp

        if logits and list(sizes)[-1] != 1:
            raise ValueError(f"logits=True needs one output per member (sizes[-1] == 1), got sizes={list(sizes)}")
        self.k, self.sizes, self.logits, self.stacked = int(k), list(sizes), bool(logits), bool(stacked)
        self.net = ensemble_mlp(self.k, self.sizes, activation=activation)
        if out_activation is not None:
            if out_activation not in ACTIVATIONS:
                raise ValueError(f"unknown out_activation {out_activation!r}; valid choices: {', '.join(ACTIVATIONS)}")
            self.net.append(ACTIVATIONS[out_activation]())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stacked:
            d = self.sizes[0]
            if x.ndim == 2 and x.shape[1] == self.k * d:
                x = x.reshape(len(x), self.k, d)
            if x.ndim != 3 or x.shape[1:] != (self.k, d):
                raise ValueError(f"x must have shape (N, {self.k}, {d}) or (N, {self.k * d}) (stacked=True); "
                                 f"got {tuple(x.shape)}")
            out = self.net(x.transpose(0, 1)).transpose(0, 1)  # (N, K, d_out)
            return out.squeeze(-1) if self.logits else out
        if x.ndim != 2 or x.shape[1] != self.sizes[0] or len(x) % self.k:
            raise ValueError(f"x must have shape (N, {self.sizes[0]}) with N divisible by k={self.k}; "
                             f"got {tuple(x.shape)}")
        out = self.net(x.reshape(self.k, len(x) // self.k, x.shape[1])).reshape(len(x), -1)
        return out.squeeze(-1) if self.logits else out

    def members(self, x: torch.Tensor) -> torch.Tensor:
        """Split ``(N, ...)`` rows produced by (or for) this ensemble into ``(K, N/K, ...)``
        (with ``stacked=True``: ``(N, K, ...)`` into ``(K, N, ...)``)."""
        if self.stacked:
            if x.ndim < 2 or x.shape[1] != self.k:
                raise ValueError(f"x must have shape (N, {self.k}, ...) (stacked=True), got {tuple(x.shape)}")
            return x.transpose(0, 1)
        if len(x) % self.k:
            raise ValueError(f"the number of rows ({len(x)}) must be divisible by k={self.k}")
        return x.reshape(self.k, len(x) // self.k, *x.shape[1:])


class SeedEnsembleDiscriminator(nn.Module):
    """``K`` independent :class:`MLPDiscriminator` s as one module (see :class:`SeedEnsemble`).

    Has the same ``features`` (LeakyReLU hidden layers, ``(N, d) -> (N, hidden[-1])``) and
    ``head`` (logits ``(N,)``, or ``(N, n_outputs)``) as :class:`MLPDiscriminator`, so
    :func:`make_infogan_step` and :func:`make_semi_supervised_step` train ``K`` seeds at once.
    Rows ``[jN/K, (j+1)N/K)`` belong to member ``j``; to give every member the same labelled set
    in :func:`make_semi_supervised_step`, pass it repeated ``K`` times (``x.repeat(K, 1)``).
    """

    def __init__(self, k: int, in_dim: int, hidden: Sequence[int] = (128, 128), n_outputs: int = 1):
        super().__init__()
        self.k = int(k)
        self.features = SeedEnsemble(k, [in_dim, *hidden], activation="leaky_relu", out_activation="leaky_relu")
        self.out_features = int(hidden[-1])
        self.head = SeedEnsemble(k, [self.out_features, n_outputs], logits=n_outputs == 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def members(self, x: torch.Tensor) -> torch.Tensor:
        """Split ``(N, ...)`` rows into ``(K, N/K, ...)``, one block per member."""
        return self.head.members(x)


def adam_for_gan(module: nn.Module, lr: float = 2e-4, beta1: float = 0.5) -> torch.optim.Adam:
    """Adam with :math:`\\beta_1 = 0.5`, as recommended for DCGAN."""
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(beta1, 0.999))


# --------------------------------------------------------------------------- training steps
def make_gan_step(generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                  opt_d: torch.optim.Optimizer, *, latent_dim: int, k: int = 1,
                  kind: str = "non_saturating") -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    r"""Step function for :func:`gencore.train.fit`: Algorithm 1 of Goodfellow et al. (2014).

    Each call receives ``k * m`` real rows (call ``fit`` with ``batch_size=k * m``) and does
    ``k`` discriminator updates, each on ``m`` real rows and ``m`` fresh noise vectors, then one
    generator update on ``m`` noise vectors with :func:`generator_loss` of the given ``kind``.
    Noise :math:`z\sim\N(0, I)` is drawn on the batch's device. Returns ``{"d_loss", "g_loss"}``.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k (discriminator steps per generator step) must be a positive integer, got {k!r}")
    if kind not in GENERATOR_LOSSES:
        raise ValueError(f"unknown generator loss kind {kind!r}; valid choices: {', '.join(GENERATOR_LOSSES)}")

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(batch) < k:
            raise ValueError(f"batch has {len(batch)} rows, fewer than k={k}; use batch_size = k * m")
        for real in batch.chunk(k):
            with torch.no_grad():
                fake = generator(torch.randn(len(real), latent_dim, device=real.device))
            d_loss = discriminator_loss(discriminator(real), discriminator(fake))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        m = len(batch) // k
        g_loss = generator_loss(discriminator(generator(torch.randn(m, latent_dim, device=batch.device))), kind)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    return step


def sample_generator(generator: nn.Module, n: int, latent_dim: int, *, device: Any = None,
                     seed: int | None = None) -> torch.Tensor:
    """``n`` samples ``G(z)``, ``z ~ N(0, I)``, in eval mode and without gradients (seeded if ``seed``)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    dev = device if device is not None else next(generator.parameters()).device
    z = torch.randn(n, latent_dim, generator=gen).to(dev)
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        x = generator(z)
    generator.train(was_training)
    return x


# --------------------------------------------------------------------------- mode collapse
@dataclass(frozen=True)
class CollapseCheck:
    r"""Modes covered and high-quality fraction of a sample from a mixture of Gaussians.

    ``modes``: modes with at least ``min_count`` samples within ``n_std`` standard deviations
    (:func:`gencore.metrics.modes_covered`); ``quality``: the fraction of samples within
    ``n_std`` standard deviations of their nearest mode
    (:func:`gencore.metrics.high_quality_fraction`). Chapter "GANs in practice" separates three
    outcomes that a mode count alone confuses:

    - ``failed``: almost no sample is near any mode (``quality < 0.05``): the generator did not
      train; its low mode count is not collapse;
    - ``collapsed``: a trained generator that misses modes: ``quality >= 0.5`` and at most
      half of the modes covered;
    - :meth:`covers`: enough modes at enough quality.
    """

    modes: int
    n_modes: int
    quality: float

    @classmethod
    def of(cls, samples: torch.Tensor, centers: Any, std: float, *, min_count: int = 10,
           n_std: float = 3.0) -> "CollapseCheck":
        from gencore.metrics import high_quality_fraction, modes_covered

        centers = torch.as_tensor(centers)
        return cls(modes_covered(samples, centers, std, n_std=n_std, min_count=min_count), len(centers),
                   high_quality_fraction(samples, centers, std, n_std=n_std))

    @property
    def failed(self) -> bool:
        return self.quality < 0.05

    @property
    def collapsed(self) -> bool:
        return self.quality >= 0.5 and self.modes <= self.n_modes // 2

    def covers(self, min_modes: int, min_quality: float) -> bool:
        """At least ``min_modes`` modes covered and a high-quality fraction of at least ``min_quality``."""
        return self.modes >= min_modes and self.quality >= min_quality


# --------------------------------------------------------------------------- InfoGAN
def categorical_code(n: int, n_categories: int, *, device: Any = None,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``c ~ Cat(1/K, ..., 1/K)``: returns indices ``(n,)`` and one-hot codes ``(n, K)``."""
    idx = torch.randint(n_categories, (n,), generator=generator).to(device)
    return idx, F.one_hot(idx, n_categories).float()


def info_lower_bound(q_logits: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    r"""Variational lower bound on :math:`I(c; G(z, c))` for a uniform K-way code (Chen et al. 2016):

    .. math:: L_I = \E_{c, z}[\log Q(c \mid G(z, c))] + \H(c), \qquad \H(c) = \log K.

    ``q_logits`` (N, K) are the Q head's logits on ``G(z, c)``, ``code`` (N,) the indices.
    :math:`L_I \le \log K`, with equality when Q recovers c exactly (prop-gan-info-bound).
    """
    if q_logits.ndim != 2 or code.shape != (len(q_logits),):
        raise ValueError(f"q_logits must be (N, K) and code (N,); got {tuple(q_logits.shape)} and {tuple(code.shape)}")
    return -F.cross_entropy(q_logits, code) + math.log(q_logits.shape[1])


def accuracy_up_to_permutation(codes: Any, labels: Any, n_classes: int) -> float:
    """Accuracy of ``codes`` against ``labels`` (both ints in ``0..n_classes-1``) under the best
    one-to-one relabelling of the codes (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    c, y = np.asarray(codes).ravel(), np.asarray(labels).ravel()
    if c.shape != y.shape or c.size == 0:
        raise ValueError(f"codes and labels must be non-empty with the same length; got {c.shape} and {y.shape}")
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (c, y), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / c.size)


def make_infogan_step(generator: nn.Module, discriminator: nn.Module, q_head: nn.Module,
                      opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, *, noise_dim: int,
                      n_categories: int = 10, info_weight: float = 1.0) -> Callable:
    r"""InfoGAN step for :func:`gencore.train.fit`. ``generator`` takes ``[z, one_hot(c)]``;
    ``q_head`` maps ``discriminator.features(x)`` to K logits. ``opt_g`` must hold the generator's
    and ``q_head``'s parameters; both minimise ``generator_loss - info_weight * L_I``.
    Returns ``{"d_loss", "g_loss", "info_bound"}``.
    """

    def step(real: torch.Tensor) -> dict[str, torch.Tensor]:
        m, dev = len(real), real.device
        _, onehot = categorical_code(m, n_categories, device=dev)
        with torch.no_grad():
            fake = generator(torch.cat([torch.randn(m, noise_dim, device=dev), onehot], 1))
        d_loss = discriminator_loss(discriminator(real), discriminator(fake))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        idx, onehot = categorical_code(m, n_categories, device=dev)
        fake = generator(torch.cat([torch.randn(m, noise_dim, device=dev), onehot], 1))
        h = discriminator.features(fake)
        g_loss = generator_loss(discriminator.head(h).squeeze(-1))
        bound = info_lower_bound(q_head(h), idx)
        opt_g.zero_grad(set_to_none=True)
        (g_loss - info_weight * bound).backward()
        opt_g.step()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "info_bound": bound.detach()}

    return step


# --------------------------------------------------------------------------- semi-supervised GAN
def semi_supervised_losses(logits_labelled: torch.Tensor, labels: torch.Tensor,
                           logits_unlabelled: torch.Tensor, logits_fake: torch.Tensor) -> dict[str, torch.Tensor]:
    r"""Losses of a K+1-class discriminator (Salimans et al. 2016), from its K class logits.

    Fixing the logit of the "fake" class K+1 to 0, :math:`D(x) = Z(x)/(Z(x)+1)` with
    :math:`Z(x) = \sum_k e^{\ell_k(x)}`, i.e. the real/fake logit is :math:`\mathrm{logsumexp}_k\,\ell_k`
    (prop-gan-k-plus-one). Returns ``supervised`` (cross-entropy on the labelled rows) and
    ``unsupervised`` (:func:`discriminator_loss` on the real/fake logits).
    """
    if logits_labelled.ndim != 2 or labels.shape != (len(logits_labelled),):
        raise ValueError(f"logits_labelled must be (N, K) and labels (N,); got {tuple(logits_labelled.shape)} "
                         f"and {tuple(labels.shape)}")
    sup = F.cross_entropy(logits_labelled, labels)
    unsup = discriminator_loss(torch.logsumexp(logits_unlabelled, 1), torch.logsumexp(logits_fake, 1))
    return {"supervised": sup, "unsupervised": unsup}


def make_semi_supervised_step(generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                              opt_d: torch.optim.Optimizer, x_labelled: torch.Tensor, y_labelled: torch.Tensor,
                              *, latent_dim: int) -> Callable:
    """Semi-supervised GAN step for :func:`gencore.train.fit` on unlabelled batches.

    The discriminator (K outputs, :class:`MLPDiscriminator`) minimises supervised + unsupervised
    loss on all labelled rows and the batch; the generator uses feature matching:
    :math:`\\|\\bar f(x) - \\bar f(G(z))\\|^2` on ``discriminator.features`` (Salimans et al. 2016).
    """

    def step(real: torch.Tensor) -> dict[str, torch.Tensor]:
        m, dev = len(real), real.device
        with torch.no_grad():
            fake = generator(torch.randn(m, latent_dim, device=dev))
        losses = semi_supervised_losses(discriminator(x_labelled), y_labelled, discriminator(real),
                                        discriminator(fake))
        d_loss = losses["supervised"] + losses["unsupervised"]
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        f_real = discriminator.features(real).detach().mean(0)
        f_fake = discriminator.features(generator(torch.randn(m, latent_dim, device=dev))).mean(0)
        g_loss = (f_real - f_fake).pow(2).sum()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return {"supervised": losses["supervised"].detach(), "unsupervised": losses["unsupervised"].detach(),
                "g_loss": g_loss.detach()}

    return step


# --------------------------------------------------------------------------- AdaGAN boosting
def adagan_optimal_component(p_data: Any, p_mix: Any, beta: float) -> torch.Tensor:
    r"""The best next AdaGAN component on a finite set (prop-gan-adagan-reweighting).

    For masses :math:`p_i = \pdata(\{i\})` and :math:`g_i = P_{t-1}(\{i\})`, the minimiser over
    distributions :math:`Q` of :math:`D_f\big((1-\beta) P_{t-1} + \beta Q \,\|\, \pdata\big)`, for
    every strictly convex differentiable :math:`f`, is

    .. math:: Q^*_i = \frac1\beta\big(\lambda^* p_i - (1-\beta)\, g_i\big)_+ ,
              \qquad \textstyle\sum_i Q^*_i = 1

    (Tolstikhin et al. 2017). :math:`\lambda^*` is found exactly: on the points sorted by
    :math:`g_i/p_i` the sum is piecewise linear in :math:`\lambda`. With :math:`p_i = 1/N` (the
    empirical distribution of the data) :math:`Q^*` is :func:`adagan_weights` of
    :math:`h_i = N g_i`. ``p_data``, ``p_mix``: ``(n,)`` probabilities; ``0 < beta <= 1``.
    """
    p, g = _tensor(p_data, "p_data"), _tensor(p_mix, "p_mix")
    _same_shape(p, g, "p_data", "p_mix")
    for name, v in (("p_data", p), ("p_mix", g)):
        if v.ndim != 1 or len(v) == 0 or torch.isnan(v).any() or (v < 0).any() or abs(float(v.sum()) - 1) > 1e-6:
            raise ValueError(f"{name} must be a non-empty 1-D probability vector (>= 0, summing to 1)")
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta!r}")
    a = (1 - beta) * g
    ratio = torch.where(p > 0, a / torch.where(p > 0, p, torch.ones_like(p)), torch.full_like(p, math.inf))
    order = torch.argsort(ratio)
    lam = (beta + torch.cumsum(a[order], 0)) / torch.cumsum(p[order], 0).clamp_min(torch.finfo(p.dtype).tiny)
    j = int((lam > ratio[order]).nonzero().max())
    return torch.clamp(lam[j] * p - a, min=0) / beta


def adagan_weights(density_ratio: torch.Tensor, beta: float) -> torch.Tensor:
    r"""AdaGAN data weights (Tolstikhin et al. 2017; prop-gan-adagan-reweighting).

    With :math:`h_i = p_{mix}(x_i)/\pdata(x_i)` for the current mixture, the next component is
    trained on weights

    .. math:: w_i = \frac{1}{\beta N}\big(\lambda^* - (1 - \beta) h_i\big)_+ ,

    :math:`\lambda^*` chosen so that :math:`\sum_i w_i = 1`: points the mixture already covers
    well (large :math:`h_i`) get little weight. ``density_ratio`` (N,) >= 0, ``0 < beta <= 1``.
    """
    h = _tensor(density_ratio, "density_ratio")
    if h.ndim != 1 or len(h) == 0 or (h < 0).any() or torch.isnan(h).any():
        raise ValueError("density_ratio must be a non-empty 1-D tensor of values >= 0")
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta!r}")
    n = len(h)
    a = (1 - beta) * torch.sort(h).values  # ascending: the smallest h get weight first
    # sum_{i<=j} (lam - a_i) = beta * N; lam_j = (beta N + cumsum) / j must exceed a_j
    lam = (beta * n + torch.cumsum(a, 0)) / torch.arange(1, n + 1, device=h.device, dtype=h.dtype)
    j = int((lam > a).nonzero().max())
    return torch.clamp(lam[j] - (1 - beta) * h, min=0) / (beta * n)


def sample_mixture(generators: Sequence[nn.Module], weights: Sequence[float], n: int, latent_dim: int, *,
                   seed: int = 0, device: Any = None) -> torch.Tensor:
    """``n`` samples from the mixture :math:`\\sum_t \\alpha_t G_t`: multinomial counts, then each generator."""
    w = torch.as_tensor(list(weights), dtype=torch.float64)
    if len(w) != len(generators) or len(w) == 0 or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-6:
        raise ValueError("weights must be one non-negative number per generator, summing to 1")
    g = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(w, n, replacement=True, generator=g)
    counts = torch.bincount(comp, minlength=len(w)).tolist()
    parts = [sample_generator(gen, c, latent_dim, device=device, seed=seed + 1 + t)
             for t, (gen, c) in enumerate(zip(generators, counts)) if c > 0]
    return torch.cat(parts)


def mixture_weights_after_round(weights: Sequence[float], beta: float) -> list[float]:
    r"""Mixture update :math:`P_t = (1-\beta) P_{t-1} + \beta G_t`: old weights times ``1 - beta``, then ``beta``."""
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta!r}")
    return [float(a) * (1 - beta) for a in weights] + [float(beta)]
