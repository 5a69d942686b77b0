"""Sample-based distances between distributions and critic regularisers.

Chapters "WGAN and its relatives" and "Wasserstein and adversarial autoencoders".

- :func:`mmd2`: squared maximum mean discrepancy (unbiased U-statistic or biased V-statistic)
  with a kernel from :data:`KERNELS` (``"imq"`` as in WAE, ``"rbf"``).
- :func:`energy_distance`: the energy (Cramér) distance of Székely and Rizzo.
- :func:`sliced_wasserstein`: Monte Carlo sliced p-Wasserstein distance.
- :func:`gradient_penalty`: the WGAN-GP penalty on random interpolates.

Every function follows the device and dtype of its inputs and is differentiable, so each
can serve as a generator loss. Samples holding inf or NaN raise a ValueError naming the
argument (a loss that silently stays finite would hide a generator that outputs NaN).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "KERNELS",
    "Kernel",
    "energy_distance",
    "gradient_penalty",
    "imq_kernel",
    "mmd2",
    "rbf_kernel",
    "sliced_wasserstein",
]

DEFAULT_SCALES: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def _check_samples(x: torch.Tensor, y: torch.Tensor, min_rows: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape (n, d), got shape {tuple(t.shape)}")
        if t.shape[0] < min_rows:
            raise ValueError(f"{name} needs at least {min_rows} rows, got {t.shape[0]}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension d, got {x.shape[1]} and {y.shape[1]}")
    for name, t in (("x", x), ("y", y)):
        # Used as generator losses: a NaN or inf sample must not be hidden (the energy distance
        # used to count non-finite distances as 0, and the IMQ kernel maps an infinite distance
        # to 0, both giving a finite loss). One device sync per call.
        bad = ~torch.isfinite(t.detach())
        if bool(bad.any()):
            rows = int(bad.any(1).sum())
            raise ValueError(f"{name} must be finite: {rows} of its {t.shape[0]} rows hold inf or NaN "
                             f"(first at row {int(bad.any(1).nonzero()[0, 0])})")
    return x, y


def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(n, m)``, clamped at 0 (no negative round-off)."""
    d = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return d.clamp_min(0.0)


def imq_kernel(x: torch.Tensor, y: torch.Tensor, sigma2: float = 1.0,
               scales: Sequence[float] = DEFAULT_SCALES) -> torch.Tensor:
    r"""Inverse multiquadratic kernel summed over scales, as in WAE (Tolstikhin et al. 2017).

    .. math::
        k(x, y) = \sum_{s} \frac{C_s}{C_s + \|x - y\|^2}, \qquad C_s = 2\, d\, \sigma^2 s,

    with ``d`` the dimension (``d_z`` for latent codes) and :math:`\sigma^2` the variance of
    each coordinate of the prior. Returns the Gram matrix ``(n, m)``.
    """
    if sigma2 <= 0:
        raise ValueError(f"sigma2 must be > 0, got {sigma2!r}")
    if len(scales) == 0 or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
    d2 = _sq_dists(x, y)
    c0 = 2.0 * x.shape[1] * sigma2
    return sum(c0 * s / (c0 * s + d2) for s in scales)


def rbf_kernel(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (1.0,)) -> torch.Tensor:
    r"""Gaussian (RBF) kernel summed over bandwidths: :math:`\sum_h \exp(-\|x-y\|^2 / (2h^2))`."""
    if len(bandwidths) == 0 or any(h <= 0 for h in bandwidths):
        raise ValueError(f"bandwidths must be a non-empty sequence of positive numbers, got {bandwidths!r}")
    d2 = _sq_dists(x, y)
    return sum(torch.exp(-d2 / (2.0 * h * h)) for h in bandwidths)


@dataclass(frozen=True)
class Kernel:
    """One row of the kernel registry: a name, the Gram-matrix function, a description."""

    name: str
    gram: Callable[..., torch.Tensor]
    description: str


KERNELS: dict[str, Kernel] = {
    "imq": Kernel("imq", imq_kernel, "inverse multiquadratic C/(C+|x-y|^2), C = 2 d sigma^2 s, summed over s"),
    "rbf": Kernel("rbf", rbf_kernel, "Gaussian exp(-|x-y|^2 / (2 h^2)), summed over bandwidths h"),
}


def mmd2(x: torch.Tensor, y: torch.Tensor, kernel: str | Callable[..., torch.Tensor] = "imq",
         unbiased: bool = True, **kernel_kwargs) -> torch.Tensor:
    r"""Squared maximum mean discrepancy between the samples ``x ~ P`` and ``y ~ Q``.

    Unbiased U-statistic (Gretton et al. 2012, Lemma 6):

    .. math::
        \widehat{\MMD}^2_u = \frac{1}{n(n-1)}\sum_{i\neq j} k(x_i,x_j)
          + \frac{1}{m(m-1)}\sum_{i\neq j} k(y_i,y_j) - \frac{2}{nm}\sum_{i,j} k(x_i,y_j),

    whose expectation is exactly :math:`\MMD^2(P,Q)` (so it can be negative). The biased
    V-statistic keeps the diagonal terms and divides by :math:`n^2`, :math:`m^2`; it is >= 0.

    Parameters
    ----------
    x : tensor (n, d)
    y : tensor (m, d)
    kernel : str or callable
        A key of :data:`KERNELS` (``"imq"``, ``"rbf"``) or ``gram(x, y, **kernel_kwargs) -> (n, m)``.
    unbiased : bool
        U-statistic (needs n, m >= 2) or V-statistic.
    **kernel_kwargs
        Passed to the kernel (``sigma2``, ``scales`` for IMQ; ``bandwidths`` for RBF).

    Returns
    -------
    tensor ()
        See chapter "WGAN and its relatives", {prf:ref} ``prop-wgan-mmd-unbiased`` (unbiasedness,
        MMD as a generator loss) and chapter "Wasserstein and adversarial autoencoders" (WAE-MMD).
    """
    x, y = _check_samples(x, y, min_rows=2 if unbiased else 1)
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)} or a callable, got {kernel!r}")
        gram = KERNELS[kernel].gram
    elif callable(kernel):
        gram = kernel
    else:
        raise TypeError(f"kernel must be a str or a callable, got {type(kernel).__name__}")
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = gram(x, x, **kernel_kwargs), gram(y, y, **kernel_kwargs), gram(x, y, **kernel_kwargs)
    if unbiased:
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        sxx, syy = kxx.mean(), kyy.mean()
    return sxx + syy - 2.0 * kxy.mean()


def _mean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # sqrt of a clamped square has an infinite gradient at 0; add nothing but mask the zeros
    d2 = _sq_dists(x, y)
    pos = d2 > 0
    d = torch.zeros_like(d2)
    d[pos] = d2[pos].sqrt()
    return d.mean()


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Energy distance (Székely and Rizzo), squared form, V-statistic.

    .. math::
        \mathcal{E}(P,Q) = 2\,\E\|X-Y\| - \E\|X-X'\| - \E\|Y-Y'\| \;\ge 0,

    with all expectations replaced by averages over all pairs (including ``i = j``), which
    keeps the estimate >= 0. In 1-D, :math:`\mathcal{E} = 2\int (F_P - F_Q)^2` is twice the
    squared Cramér distance of Bellemare et al. (2017), and
    ``scipy.stats.energy_distance(x, y) == sqrt(energy_distance(x, y))``.

    ``x`` (n, d), ``y`` (m, d). Returns a scalar tensor, differentiable (the gradient of
    ``|x - x'|`` at ``x = x'`` is taken as 0). See chapter "WGAN and its relatives",
    {prf:ref} ``prop-wgan-energy-cramer``.
    """
    x, y = _check_samples(x, y)
    return 2.0 * _mean_dist(x, y) - _mean_dist(x, x) - _mean_dist(y, y)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 50, p: float = 2,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Monte Carlo sliced p-Wasserstein distance between two samples of equal size.

    .. math::
        SW_p(P,Q) = \Big(\E_{\theta\sim\mathrm{Unif}(S^{d-1})} W_p^p(\theta_\# P, \theta_\# Q)\Big)^{1/p},

    each 1-D :math:`W_p^p` between projected samples computed exactly by sorting, and the
    expectation over directions by ``n_projections`` uniform directions (drawn with
    ``generator``, which must live on the device of ``x``). In 1-D the direction is :math:`\pm 1`
    and the result is the exact :math:`W_p` between the empirical measures.

    ``x`` (n, d), ``y`` (n, d). Returns a scalar tensor (differentiable in ``x`` and ``y``).
    It never exceeds :math:`W_p` (chapter "Wasserstein and adversarial autoencoders",
    {prf:ref} ``prop-wae-sw-lower-bound``).
    """
    x, y = _check_samples(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections <= 0:
        raise ValueError(f"n_projections must be a positive integer, got {n_projections!r}")
    if not p >= 1:
        raise ValueError(f"p must be >= 1, got {p!r}")
    d = x.shape[1]
    theta = torch.randn(d, n_projections, generator=generator, device=x.device, dtype=x.dtype)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ theta, dim=0)
    py, _ = torch.sort(y @ theta, dim=0)
    return ((px - py).abs().pow(p).mean()).pow(1.0 / p)


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    r"""WGAN-GP gradient penalty (Gulrajani et al. 2017).

    .. math::
        \mathrm{GP} = \E_{\hat x}\big(\|\nabla_{\hat x} f(\hat x)\|_2 - 1\big)^2,
        \qquad \hat x = \epsilon x + (1-\epsilon)\tilde x,\ \epsilon\sim U[0,1],

    one :math:`\epsilon` per row. ``real``, ``fake`` have the same shape ``(n, ...)``;
    ``critic`` maps ``(n, ...)`` to ``(n,)`` or ``(n, 1)``. The graph is kept
    (``create_graph=True``) so that the penalty trains the critic. Multiply by
    :math:`\lambda` (10 in the paper) yourself. See chapter "WGAN and its relatives",
    {prf:ref} ``prop-wgan-unit-gradient`` and ``prop-wgan-gp-critic-1d`` (with its corollary ``cor-wgan-gp-scaled``).
    """
    if not isinstance(real, torch.Tensor) or not isinstance(fake, torch.Tensor):
        raise TypeError("real and fake must be torch.Tensors")
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    if real.dim() < 1 or real.shape[0] == 0:
        raise ValueError(f"real must have a non-empty batch dimension, got shape {tuple(real.shape)}")
    n = real.shape[0]
    eps = torch.rand((n,) + (1,) * (real.dim() - 1), generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    if out.numel() != n:
        raise ValueError(f"critic must return one value per row ({n}), got shape {tuple(out.shape)}")
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.reshape(n, -1).norm(dim=1) - 1.0) ** 2).mean()
