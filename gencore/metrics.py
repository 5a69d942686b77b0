"""Sample-quality and likelihood metrics: chapter "Evaluating generative models".

Mode coverage on toy mixtures (ring of 8, 5x5 grid; Metz et al. 2017, Srivastava et al. 2017):
a sample is *high quality* when it lies within ``n_std`` standard deviations of its nearest
mode, and a mode is *covered* when at least ``min_count`` high-quality samples are nearest to it.

Feature-space metrics (features: the 128 penultimate activations of
:mod:`gencore.classifier`, the book's stand-in for Inception v3):

- :func:`frechet_distance`, :func:`fid`: the **squared** Fréchet (2-Wasserstein) distance between
  Gaussians fitted to the features (means, covariances with ddof = 1), Heusel et al. 2017;
- :func:`inception_score`: :math:`\\exp \\E_x \\KL(f(y|x) \\| p_f(y))`, natural logarithm, over
  ``splits`` parts (mean ± std, ddof = 0 as in Salimans et al. 2016's code);
- :func:`kid`: unbiased MMD² with the cubic polynomial kernel, Bińkowski et al. 2018;
- :func:`precision_recall`: k-NN manifolds, Kynkäänniemi et al. 2019.

Likelihood: :func:`bits_per_dim`, :func:`parzen_log_likelihood` (and why not to trust it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gencore._validate import as_float_tensor


# --------------------------------------------------------------------------- toy data: modes
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


@dataclass(frozen=True)
class ModeCoverage:
    """What :func:`mode_coverage` measured on a toy mixture."""

    covered: int                      # modes with >= min_count high-quality samples
    n_modes: int
    high_quality: float               # fraction of samples within n_std * std of a mode
    counts: tuple[int, ...]           # high-quality samples nearest to each mode
    kl_to_uniform: float              # KL(mode histogram of high-quality samples || uniform), nats


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor, std: float, *, n_std: float = 3.0,
                  min_count: int = 1) -> ModeCoverage:
    r"""Modes covered, high-quality fraction and the balance of the modes, in one record.

    Built on :func:`modes_covered` and :func:`high_quality_fraction`. ``kl_to_uniform`` is
    :math:`\sum_k \hat p_k \log(K \hat p_k)` for the histogram :math:`\hat p` of high-quality
    samples over the :math:`K` modes (0 for perfectly balanced modes, :math:`\log K` when one
    mode takes everything; ``inf`` when no sample is of high quality). Chapter "Evaluating
    generative models" (mode collapse) and chapter "GANs in practice".
    """
    covered = modes_covered(samples, centers, std, n_std=n_std, min_count=min_count)
    hq = high_quality_fraction(samples, centers, std, n_std=n_std)
    dist, idx = _nearest(samples, centers)
    counts = torch.bincount(idx[dist <= n_std * std], minlength=len(centers)).cpu()
    total = int(counts.sum())
    if total == 0:
        kl = math.inf
    else:
        p = counts.double() / total
        kl = float(torch.special.xlogy(p, p * len(centers)).sum())
    return ModeCoverage(covered, len(centers), hq, tuple(int(c) for c in counts), kl)


# --------------------------------------------------------------------------- likelihood
def bits_per_dim(nll_nats: Any, num_dims: int) -> Any:
    r"""Negative log-likelihood per image in nats -> bits per dimension.

    .. math:: \mathrm{bpd} = \frac{\mathrm{NLL}_{\text{nats}}}{D \log 2}

    For a density on pixels rescaled to [0, 1] from 256 levels, first add :math:`D \log 256`
    to the NLL (the change of variables from :math:`[0, 256)^D`), so that bits/dim compares
    with the discrete models' numbers (Theis et al. 2016). Returns the type it was given
    (float, array or tensor).
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, (int, np.integer)) or num_dims <= 0:
        raise ValueError(f"num_dims must be a positive integer (pixels x channels), got {num_dims!r}")
    return nll_nats / (int(num_dims) * math.log(2.0))


def parzen_log_likelihood(x: torch.Tensor, samples: torch.Tensor, sigma: float, *,
                          batch_size: int = 500) -> float:
    r"""Mean log-density of ``x`` under an isotropic Gaussian Parzen window on ``samples``.

    .. math::
        \hat p(x) = \frac 1N \sum_{i=1}^N \mathcal N(x; s_i, \sigma^2 I), \qquad
        \text{returns } \frac 1M \sum_{j=1}^M \log \hat p(x_j) \text{ (nats)}.

    The estimate of Goodfellow et al. (2014) and earlier papers. In high dimension it is far
    from the model's log-likelihood even for large N (Theis et al. 2016): see chapter
    "Evaluating generative models", {prf:ref} ``prop-eval-parzen-bias``.

    Parameters
    ----------
    x : tensor (M, d)
        Test points.
    samples : tensor (N, d)
        Model samples (the kernel centres), on ``x``'s device.
    sigma : float
        Window width (> 0), usually chosen on a validation set.
    """
    x, samples = as_float_tensor(x, "x"), as_float_tensor(samples, "samples")
    if x.ndim != 2 or samples.ndim != 2 or x.shape[1] != samples.shape[1]:
        raise ValueError(f"x (M, d) and samples (N, d) must be 2-D with the same d; got {tuple(x.shape)} "
                         f"and {tuple(samples.shape)}")
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    n, d = samples.shape
    x = x.double()
    samples = samples.to(x.device).double()
    const = math.log(n) + 0.5 * d * math.log(2 * math.pi * sigma**2)
    total = 0.0
    for i in range(0, len(x), batch_size):
        sq = torch.cdist(x[i:i + batch_size], samples) ** 2
        total += float((torch.logsumexp(-sq / (2 * sigma**2), dim=1) - const).sum())
    return total / len(x)


# --------------------------------------------------------------------------- feature statistics
def _features(x: Any, name: str) -> torch.Tensor:
    x = as_float_tensor(x, name, "features")
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of features (N, d), got shape {tuple(x.shape)}")
    # a finite sum means every entry is finite (NaN and inf propagate); much cheaper than isfinite(x).all()
    if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite features")
    return x


def _pair(a: Any, b: Any, na: str, nb: str) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _features(a, na), _features(b, nb)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{na} has {a.shape[1]} features per sample and {nb} has {b.shape[1]}: "
                         "both must come from the same feature extractor")
    return a, b.to(a.device)


def feature_statistics(features: Any, name: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(d,)`` and covariance ``(d, d)`` (ddof = 1) of ``features`` ``(N, d)``, float64.

    Raises ValueError when N <= d: the covariance then has rank at most N - 1 < d.
    """
    return _statistics(_features(features, name), name)


def _statistics(f: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    f = f.double()
    n, d = f.shape
    if n <= d:
        raise ValueError(f"{name} has {n} samples for {d} feature dimensions: a covariance needs more samples "
                         f"than dimensions (its rank is at most {n - 1}). Use at least {d + 1} samples "
                         "(FID papers use 10,000 or more), or use kid(), which needs no covariance and is unbiased")
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / (n - 1)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    r"""Squared Fréchet distance between :math:`\mathcal N(\mu_1, \Sigma_1)` and :math:`\mathcal N(\mu_2, \Sigma_2)`.

    .. math::
        d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
              - 2 \sum_i \sqrt{\lambda_i\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)}

    This is ``gencore.ot.gaussian_w2(...) ** 2`` (the squared 2-Wasserstein distance); FID reports
    it squared. The trace term :math:`\operatorname{tr}(\Sigma_1\Sigma_2)^{1/2}` is computed
    from the eigenvalues of the *symmetric* PSD matrix :math:`\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}`
    (two ``eigh`` calls, which run on the GPU), not with a general matrix square root as the
    reference code does (``scipy.linalg.sqrtm(sigma1 @ sigma2)``, see
    :func:`frechet_distance_reference`). Tiny negative eigenvalues from rounding are set to 0,
    so nearly singular covariances need no :math:`\varepsilon` retry. Chapter "Evaluating
    generative models", {prf:ref} ``prop-eval-fid-sqrt-trace``.

    Parameters
    ----------
    mu1, mu2 : (d,)
    sigma1, sigma2 : (d, d) symmetric positive semi-definite

    Returns
    -------
    float
        Computed in float64 on the device of ``mu1`` (a tensor's device, else the CPU).
    """
    m1 = as_float_tensor(mu1, "mu1").double()
    dev = m1.device
    m2, s1, s2 = (as_float_tensor(v, n).to(dev).double() for v, n in ((mu2, "mu2"), (sigma1, "sigma1"),
                                                                         (sigma2, "sigma2")))
    d = m1.shape[0] if m1.ndim == 1 else -1
    if m1.ndim != 1 or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"expected mu1, mu2 of shape (d,) and sigma1, sigma2 of shape (d, d) with the same d; got "
                         f"{tuple(m1.shape)}, {tuple(m2.shape)}, {tuple(s1.shape)}, {tuple(s2.shape)}")
    for s, name in ((s1, "sigma1"), (s2, "sigma2")):
        if not torch.isfinite(s).all():
            raise ValueError(f"{name} holds NaN or infinite entries")
        scale = float(s.abs().max()) or 1.0
        if float((s - s.T).abs().max()) > 1e-5 * scale:           # float32 round-off passes
            raise ValueError(f"{name} must be a symmetric covariance matrix")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    evals, evecs = torch.linalg.eigh(s1)
    root1 = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T                 # Sigma1^(1/2)
    m = root1 @ s2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    diff = m1 - m2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt)


def frechet_distance_reference(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, *, eps: float = 1e-6) -> float:
    """The reference FID computation (Heusel et al. 2017's code, as in ``pytorch-fid``): NumPy float64,
    ``scipy.linalg.sqrtm(sigma1 @ sigma2)``; when the root is not finite, ``eps`` is added to both
    diagonals and the root recomputed; an imaginary diagonal component above 1e-3 raises ValueError.
    scipy's "matrix is singular" warning is silenced (the retry handles that case).

    CPU only; used by the tests and ``benchmarks/fid_vs_scipy.py`` to check :func:`frechet_distance`.
    """
    import warnings

    from scipy import linalg

    mu1, mu2 = (np.atleast_1d(np.asarray(torch.as_tensor(v).cpu(), dtype=np.float64)) for v in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(torch.as_tensor(v).cpu(), dtype=np.float64)) for v in (sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError("mean vectors and covariances must have matching shapes")
    diff = mu1 - mu2
    with warnings.catch_warnings():            # "matrix is singular": handled below, as the reference does
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1.dot(s2))
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm(sigma1 @ sigma2)")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid(features_real: Any, features_fake: Any) -> float:
    r"""Fréchet Inception Distance between two feature sets ``(N, d)`` and ``(M, d)``.

    :func:`frechet_distance` of the Gaussians fitted by :func:`feature_statistics`
    (means; covariances with ddof = 1). The *squared* distance, in squared feature units.
    Biased upwards for finite samples (the bias falls roughly like 1/N); compare models only at
    the same N. Needs N, M > d; below that, use :func:`kid`. Chapter "Evaluating generative
    models", {prf:ref} ``prop-eval-fid-bias``.
    """
    fr, ff = _pair(features_real, features_fake, "features_real", "features_fake")
    mu1, s1 = _statistics(fr, "features_real")            # already validated by _pair
    mu2, s2 = _statistics(ff, "features_fake")
    return frechet_distance(mu1, s1, mu2, s2)


# --------------------------------------------------------------------------- Inception Score
@dataclass(frozen=True)
class ScoreSpread:
    """A score averaged over splits or subsets: ``mean``, ``std`` and every part's value."""

    mean: float
    std: float
    values: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.mean:.3g} ± {self.std:.2g}"


def inception_score(probs: Any, splits: int = 10) -> ScoreSpread:
    r"""Inception Score of class probabilities ``probs`` ``(N, K)`` (rows :math:`f(y \mid x_i)`).

    .. math::
        \mathrm{IS} = \exp\Big(\frac 1n \sum_i \KL\big(f(y \mid x_i) \,\big\|\, \hat p(y)\big)\Big),
        \qquad \hat p(y) = \frac 1n \sum_i f(y \mid x_i),

    with the natural logarithm, computed on each of ``splits`` consecutive parts of
    ``N // splits`` rows (the remainder is dropped, as in Salimans et al. 2016's code); returns
    the mean and the standard deviation (ddof = 0, as that code) over the parts.
    :math:`1 \le \mathrm{IS} \le K`; it equals :math:`\exp I(x; y)`. Chapter "Evaluating
    generative models", {prf:ref} ``prop-eval-is-bounds``.
    """
    p = as_float_tensor(probs, "probs", "probabilities").double()
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (N, K) with K >= 2 classes, got {tuple(p.shape)}")
    if not torch.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probs must hold probabilities in [0, 1] (apply softmax to logits first)")
    row = p.sum(1)
    worst = float((row - 1).abs().max())
    if worst > 1e-3:
        raise ValueError(f"each row of probs must sum to 1 (worst row sums to {float(row[(row - 1).abs().argmax()]):.4g}); "
                         "apply softmax to logits first")
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    n = len(p)
    if splits > n:
        raise ValueError(f"splits={splits} is larger than the number of samples ({n}): each split needs at least one")
    size = n // splits
    scores = []
    for k in range(splits):
        part = p[k * size:(k + 1) * size]
        marginal = part.mean(0, keepdim=True)
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)).sum(1)
        scores.append(math.exp(float(kl.mean())))
    return ScoreSpread(float(np.mean(scores)), float(np.std(scores)), tuple(scores))


# --------------------------------------------------------------------------- KID
def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef0: float = 1.0) -> torch.Tensor:
    r"""KID's kernel :math:`k(x, y) = (x^\top y / d + c)^{p}`, default :math:`p = 3, c = 1`: Gram ``(n, m)``."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef0: float = 1.0) -> torch.Tensor:
    r"""Unbiased MMD² (U-statistic) with :func:`polynomial_kernel`: ``gencore.ot.mmd2`` with that kernel.

    .. math::
        \frac{1}{n(n-1)}\sum_{i \ne j} k(x_i, x_j) + \frac{1}{m(m-1)}\sum_{i \ne j} k(y_i, y_j)
        - \frac{2}{nm} \sum_{i, j} k(x_i, y_j)
    """
    from gencore.ot import mmd2

    return mmd2(x, y, kernel=polynomial_kernel, unbiased=True, degree=degree, coef0=coef0)


def kid(features_real: Any, features_fake: Any, *, n_subsets: int = 100, subset_size: int = 1000,
        degree: int = 3, coef0: float = 1.0, seed: int = 0) -> ScoreSpread:
    r"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the cubic kernel.

    :func:`mmd2_unbiased` on ``n_subsets`` random subsets of ``min(subset_size, N, M)`` rows of each
    set (drawn without replacement within a subset, seeded by ``seed``); returns the mean and
    std (ddof = 1) over subsets. Each subset's estimate is unbiased, so the mean is ~0 when
    both sets come from the same distribution, at any N (unlike :func:`fid`); it can be negative.
    Chapter "Evaluating generative models", {prf:ref} ``prop-eval-kid-unbiased``.
    """
    fr, ff = _pair(features_real, features_fake, "features_real", "features_fake")
    for name, v in (("n_subsets", n_subsets), ("subset_size", subset_size), ("degree", degree)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    m = min(subset_size, len(fr), len(ff))
    if m < 2:
        raise ValueError(f"kid needs at least 2 samples in each set, got {len(fr)} and {len(ff)}")
    gen = torch.Generator().manual_seed(seed)
    fr, ff = fr.double(), ff.double()
    values = []
    for _ in range(n_subsets):
        i = torch.randperm(len(fr), generator=gen)[:m].to(fr.device)
        j = torch.randperm(len(ff), generator=gen)[:m].to(ff.device)
        values.append(float(mmd2_unbiased(fr[i], ff[j], degree, coef0)))
    return ScoreSpread(float(np.mean(values)), float(np.std(values, ddof=1)) if n_subsets > 1 else 0.0,
                       tuple(values))


# --------------------------------------------------------------------------- precision / recall
@dataclass(frozen=True)
class PrecisionRecall:
    """Improved precision (fake samples on the real manifold) and recall (real samples on the fake one)."""

    precision: float
    recall: float


def _knn_radii(x: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    out = []
    for i in range(0, len(x), batch_size):
        d = torch.cdist(x[i:i + batch_size], x)
        out.append(d.kthvalue(k + 1, dim=1).values)            # k + 1: the point itself is at distance 0
    return torch.cat(out)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, batch_size: int) -> float:
    inside = 0
    for i in range(0, len(points), batch_size):
        d = torch.cdist(points[i:i + batch_size], centres)
        inside += int((d <= radii[None, :]).any(1).sum())
    return inside / len(points)


def precision_recall(real_features: Any, fake_features: Any, k: int = 3, *, batch_size: int = 1000) -> PrecisionRecall:
    r"""Improved precision and recall of Kynkäänniemi et al. (2019) with k-NN manifolds.

    The real manifold is the union of balls :math:`B(x_i, r_k(x_i))` with :math:`r_k` the distance
    to the k-th nearest other real sample; likewise for the fake samples. Then

    .. math::
        \mathrm{precision} = \frac 1M \sum_j \mathbb 1[\tilde x_j \in \text{real manifold}], \qquad
        \mathrm{recall} = \frac 1N \sum_i \mathbb 1[x_i \in \text{fake manifold}].

    Precision measures quality (fakes look real), recall diversity (the reals are reproduced).
    Equal sets give (1, 1). Chapter "Evaluating generative models", {prf:ref} ``def-eval-pr``.
    """
    fr, ff = _pair(real_features, fake_features, "real_features", "fake_features")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if min(len(fr), len(ff)) <= k:
        raise ValueError(f"precision_recall needs more than k={k} samples in each set, got {len(fr)} and {len(ff)}")
    fr, ff = fr.double(), ff.double()
    r_real, r_fake = _knn_radii(fr, k, batch_size), _knn_radii(ff, k, batch_size)
    return PrecisionRecall(_coverage(ff, fr, r_real, batch_size), _coverage(fr, ff, r_fake, batch_size))


def load_classifier(device: Any = None):
    """The book's MNIST domain classifier (:func:`gencore.classifier.load`): the feature extractor."""
    from gencore.classifier import load

    return load(device=device)
