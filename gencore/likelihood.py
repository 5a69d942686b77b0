r"""Maximum likelihood for the multivariate Gaussian (chapter "Generative models and
maximum likelihood").

.. math::
    \log \mathcal N(x; \mu, \Sigma) = -\tfrac12 (x-\mu)^\top \Sigma^{-1} (x-\mu)
        - \tfrac12 \log\det \Sigma - \tfrac{D}{2} \log 2\pi

and the maximum-likelihood estimate from ``x_1..x_N`` is
:math:`\hat\mu = \frac1N\sum_n x_n`, :math:`\hat\Sigma = \frac1N \sum_n (x_n-\hat\mu)(x_n-\hat\mu)^\top`
(divide by ``N``, not ``N - 1``).
"""
from __future__ import annotations

import math

import torch


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Log-density of ``N(mean, cov)`` at the rows of ``x``.

    Parameters
    ----------
    x : Tensor ``(N, D)``
    mean : Tensor ``(D,)``
    cov : Tensor ``(D, D)``, symmetric positive definite

    Returns
    -------
    Tensor ``(N,)``; computed through a Cholesky factor (no explicit inverse).
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
    d = x.shape[1]
    if mean.shape != (d,) or cov.shape != (d, d):
        raise ValueError(f"mean must be ({d},) and cov ({d}, {d}); got {tuple(mean.shape)} and {tuple(cov.shape)}")
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise ValueError("cov must be symmetric positive definite")
    diff = (x - mean).unsqueeze(-1)
    sol = torch.linalg.solve_triangular(chol, diff, upper=False).squeeze(-1)
    maha = (sol**2).sum(-1)
    logdet = 2 * torch.log(torch.diagonal(chol)).sum()
    return -0.5 * (maha + logdet + d * math.log(2 * math.pi))


def gaussian_mle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form maximum-likelihood mean and covariance of the rows of ``x`` ``(N, D)``.

    Needs ``N > D`` for a non-singular covariance. Returns ``(mean (D,), cov (D, D))``.
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
    n, d = x.shape
    if n <= d:
        raise ValueError(f"need more samples than dimensions for a covariance: N={n}, D={d}")
    mean = x.mean(0)
    xc = x - mean
    return mean, xc.T @ xc / n
