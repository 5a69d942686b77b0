r"""Maximum likelihood for the multivariate Gaussian (chapter "Generative models and
maximum likelihood", book/01_generative_models.ipynb).

.. math::
    \log \mathcal N(x; \mu, \Sigma) = -\tfrac12 (x-\mu)^\top \Sigma^{-1} (x-\mu)
        - \tfrac12 \log\det \Sigma - \tfrac{D}{2} \log 2\pi

and the maximum-likelihood estimate from ``x_1..x_N`` is
:math:`\hat\mu = \frac1N\sum_n x_n`, :math:`\hat\Sigma = \frac1N \sum_n (x_n-\hat\mu)(x_n-\hat\mu)^\top`
(divide by ``N``, not ``N - 1``); see {prf:ref} ``prop-gm-gaussian-mle``.

Also here: :func:`cholesky_from_unconstrained` (the parameterisation used to fit a covariance
by gradient descent), :func:`gaussian_sample` (sampling from a fit),
:func:`gaussian_class_log_posterior` (a generative classifier through Bayes' rule), and for
held-out likelihoods :func:`kde_log_prob` (a density whose capacity grows as its bandwidth
shrinks) and :func:`bits_per_dim` (nats per example to bits per dimension).
"""
from __future__ import annotations

import math

import torch


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    r"""Log-density of ``N(mean, cov)`` at the rows of ``x``.

    .. math::
        \log \mathcal N(x; \mu, \Sigma) = -\tfrac12 (x-\mu)^\top \Sigma^{-1} (x-\mu)
            - \tfrac12 \log\det \Sigma - \tfrac{D}{2} \log 2\pi

    See chapter "Generative models and maximum likelihood", section on the multivariate Gaussian.

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
    r"""Closed-form maximum-likelihood mean and covariance of the rows of ``x`` ``(N, D)``.

    .. math::
        \hat\mu = \frac1N \sum_n x_n, \qquad
        \hat\Sigma = \frac1N \sum_n (x_n - \hat\mu)(x_n - \hat\mu)^\top

    (the biased covariance, ``np.cov(x.T, bias=True)``). See chapter "Generative models and
    maximum likelihood", {prf:ref} ``prop-gm-gaussian-mle``.

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


def cholesky_from_unconstrained(raw: torch.Tensor) -> torch.Tensor:
    r"""Map an unconstrained square matrix to a Cholesky factor (lower triangular, positive diagonal).

    .. math::
        L = \operatorname{tril}(R, -1) + \operatorname{diag}(\exp(\operatorname{diag} R)),
        \qquad \Sigma = L L^\top \succ 0

    Every real ``R`` gives a valid covariance, so gradient descent on ``R`` never leaves the
    set of positive-definite matrices; ``R = 0`` gives ``Sigma = I``. Used to fit a Gaussian by
    gradient descent in chapter "Generative models and maximum likelihood".

    Parameters
    ----------
    raw : Tensor ``(D, D)`` (only its lower triangle is used)

    Returns
    -------
    Tensor ``(D, D)``, same device and dtype as ``raw``.
    """
    if raw.ndim != 2 or raw.shape[0] != raw.shape[1]:
        raise ValueError(f"raw must be a square matrix (D, D), got {tuple(raw.shape)}")
    return torch.tril(raw, -1) + torch.diag_embed(torch.exp(torch.diagonal(raw)))


def gaussian_sample(mean: torch.Tensor, cov: torch.Tensor, n: int, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Draw ``n`` samples from ``N(mean, cov)`` by reparameterisation.

    .. math:: x = \mu + L z, \qquad z \sim \mathcal N(0, I), \quad \Sigma = L L^\top

    Parameters
    ----------
    mean : Tensor ``(D,)``
    cov : Tensor ``(D, D)``, symmetric positive definite
    n : int, > 0
    generator : torch.Generator, optional
        On the device of ``mean``; for reproducible draws.

    Returns
    -------
    Tensor ``(n, D)`` on ``mean``'s device, in its dtype. See chapter "Generative models and
    maximum likelihood", section "Sampling from the fit".
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"mean must be (D,) and cov (D, D); got {tuple(mean.shape)} and {tuple(cov.shape)}")
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise ValueError("cov must be symmetric positive definite")
    z = torch.randn(n, mean.shape[0], generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + z @ chol.T


def gaussian_class_log_posterior(x: torch.Tensor, means: torch.Tensor, covs: torch.Tensor,
                                 log_priors: torch.Tensor) -> torch.Tensor:
    r"""Log-posterior of a Gaussian generative classifier, by Bayes' rule.

    .. math::
        \log p(y = k \mid x) = \log \pi_k + \log \mathcal N(x; \mu_k, \Sigma_k)
            - \operatorname{logsumexp}_j \big(\log \pi_j + \log \mathcal N(x; \mu_j, \Sigma_j)\big)

    With one covariance shared by all classes the log-odds are linear in ``x`` (logistic
    regression); see chapter "Generative models and maximum likelihood",
    {prf:ref} ``prop-gm-shared-cov-logistic``.

    Parameters
    ----------
    x : Tensor ``(N, D)``
    means : Tensor ``(K, D)``
    covs : Tensor ``(K, D, D)`` (one per class) or ``(D, D)`` (shared)
    log_priors : Tensor ``(K,)``, log class probabilities (should sum to one after ``exp``)

    Returns
    -------
    Tensor ``(N, K)``; each row's ``exp`` sums to 1.
    """
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got {tuple(x.shape)}")
    d = x.shape[1]
    if means.ndim != 2 or means.shape[1] != d:
        raise ValueError(f"means must have shape (K, {d}), got {tuple(means.shape)}")
    k = means.shape[0]
    if covs.shape == (d, d):
        covs = covs.expand(k, d, d)
    if covs.shape != (k, d, d):
        raise ValueError(f"covs must have shape ({k}, {d}, {d}) or ({d}, {d}), got {tuple(covs.shape)}")
    if log_priors.shape != (k,):
        raise ValueError(f"log_priors must have shape ({k},), got {tuple(log_priors.shape)}")
    joint = torch.stack([gaussian_log_prob(x, means[j], covs[j]) for j in range(k)], dim=1) + log_priors
    return joint - torch.logsumexp(joint, dim=1, keepdim=True)


def kde_log_prob(x: torch.Tensor, centres: torch.Tensor, bandwidth: float) -> torch.Tensor:
    r"""Log-density of the isotropic Gaussian kernel density estimate at the rows of ``x``.

    .. math::
        \log \hat p_h(x) = \log \frac1N \sum_{n=1}^N \mathcal N(x; c_n, h^2 I_D)
        = \operatorname{logsumexp}_n \Big(-\frac{\lVert x - c_n\rVert^2}{2h^2}\Big)
          - \log N - D \log h - \tfrac{D}{2} \log 2\pi

    A mixture of ``N`` Gaussians, one on each training point, whose capacity grows as the
    bandwidth ``h`` shrinks: on its own centres the log-likelihood tends to ``+inf`` as
    ``h -> 0`` while on held-out points it tends to ``-inf`` (chapter "Generative models and
    maximum likelihood", section "Held-out likelihood and overfitting"). Same value as
    scikit-learn's ``KernelDensity(kernel="gaussian", bandwidth=h).score_samples``.

    Parameters
    ----------
    x : Tensor ``(M, D)``
        Points at which to evaluate.
    centres : Tensor ``(N, D)``
        The training points (kernel centres).
    bandwidth : float
        ``h > 0``.

    Returns
    -------
    Tensor ``(M,)`` in nats, on ``x``'s device and in its dtype.
    """
    if x.ndim != 2 or centres.ndim != 2 or x.shape[1] != centres.shape[1]:
        raise ValueError(f"x must be (M, D) and centres (N, D) with the same D; got {tuple(x.shape)} "
                         f"and {tuple(centres.shape)}")
    if len(centres) == 0:
        raise ValueError("centres must hold at least one point")
    h = float(bandwidth)
    if not (h > 0 and math.isfinite(h)):
        raise ValueError(f"bandwidth must be a positive finite number, got {bandwidth!r}")
    d = x.shape[1]
    sq = torch.cdist(x, centres.to(x)).pow(2)
    return (torch.logsumexp(-0.5 * sq / h**2, dim=1) - math.log(len(centres))
            - d * math.log(h) - 0.5 * d * math.log(2 * math.pi))


def bits_per_dim(nll_nats: float | torch.Tensor, dim: int) -> float | torch.Tensor:
    r"""Convert a negative log-likelihood per example from nats to bits per dimension.

    .. math:: \text{bits/dim} = \frac{\mathrm{NLL}_{\text{nats}}}{D \log 2}

    For a continuous density this can be negative (a density can exceed 1); it is comparable
    across models of the *same* data only. See chapter "Generative models and maximum
    likelihood", section "Held-out likelihood and overfitting".

    Parameters
    ----------
    nll_nats : float or Tensor
        Mean negative log-likelihood per example, in nats.
    dim : int
        ``D >= 1``, the number of dimensions of one example.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return nll_nats / (dim * math.log(2))
