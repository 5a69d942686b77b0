r"""Variational autoencoders: the ELBO, its importance-weighted bound, and the models.

Chapters "Deriving the ELBO" ({prf:ref} ``thm-elbo-decomposition``, ``prop-elbo-forms``,
``prop-elbo-kl-normal``), "Training VAEs" (``prop-vae-pathwise``, ``thm-vae-iwae``) and
"Discrete latents: Gumbel-softmax".

For a latent-variable model :math:`p(x, z) = p(x \mid z)\, p(z)` with
:math:`p(z) = \mathcal N(0, I)` and an encoder :math:`q(z \mid x) = \mathcal N(\mu, \diag e^{s})`,

.. math::
    \log p(x) = \mathcal L(x) + \mathrm{KL}(q(z \mid x) \,\|\, p(z \mid x)),
    \qquad
    \mathcal L(x) = \mathbb E_q[\log p(x, z) - \log q(z \mid x)].

A *model* here is any object with

- ``encode(x[, cond]) -> (mu, logvar)``, each ``(B, d)``;
- ``log_likelihood(x, z[, cond]) -> (S, B)`` for ``z`` of shape ``(S, B, d)``;

and the standard normal prior. :class:`VAE` and the exact :class:`LinearGaussian` model are
such objects; :func:`elbo` and :func:`iwae_bound` work on both. Library functions follow the
device and dtype of their inputs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gencore.gumbel import gumbel_max_sample, gumbel_softmax, kl_categorical_uniform
from gencore.likelihood import gaussian_log_prob
from gencore.nets import mlp

__all__ = [
    "kl_normal", "kl_mvn", "reparameterize", "log_normal_diag", "log_bernoulli", "log_standard_normal",
    "entropy_normal", "elbo", "iwae_bound", "evaluate_bounds", "Bounds", "VAE", "CategoricalVAE",
    "LinearGaussian", "gumbel_softmax", "ELBO_FORMS", "LIKELIHOODS", "ARCHS",
    "kl_normal_per_dim", "kl_free_bits", "beta_elbo", "active_units",
    "expected_elbo_discrete", "joint_kl_discrete",
]

LOG_2PI = math.log(2 * math.pi)
ELBO_FORMS = ("kl", "joint", "entropy")
LIKELIHOODS = ("bernoulli", "gaussian")
ARCHS = ("mlp", "conv")


# --------------------------------------------------------------------------- checks
def _check_tensor(x: Any, name: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {type(x).__name__}")


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _check_positive_int(k: Any, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {k!r}")
    return k


# --------------------------------------------------------------------------- Gaussians
def kl_normal(mu_q: torch.Tensor, logvar_q: torch.Tensor,
              mu_p: torch.Tensor | None = None, logvar_p: torch.Tensor | None = None) -> torch.Tensor:
    r"""KL divergence between diagonal Gaussians, summed over the last dimension.

    .. math::
        \mathrm{KL}(\mathcal N(\mu_q, \diag \sigma_q^2) \,\|\, \mathcal N(\mu_p, \diag \sigma_p^2))
        = \frac12 \sum_j \Big( \log\frac{\sigma_{p,j}^2}{\sigma_{q,j}^2}
          + \frac{\sigma_{q,j}^2 + (\mu_{q,j} - \mu_{p,j})^2}{\sigma_{p,j}^2} - 1 \Big)

    With ``mu_p`` and ``logvar_p`` omitted, :math:`p = \mathcal N(0, I)`:
    :math:`\tfrac12 \sum_j (\mu_j^2 + \sigma_j^2 - \log \sigma_j^2 - 1)`.
    See chapter "Deriving the ELBO", {prf:ref} ``prop-elbo-kl-normal``.

    Parameters
    ----------
    mu_q, logvar_q : Tensor ``(..., d)``
        Mean and log-variance of ``q``.
    mu_p, logvar_p : Tensor ``(..., d)``, optional
        Mean and log-variance of ``p`` (both or neither); defaults 0 and 0.

    Returns
    -------
    Tensor ``(...)``, in nats. Finite for log-variances in [-30, 30].
    """
    _check_tensor(mu_q, "mu_q")
    _check_tensor(logvar_q, "logvar_q")
    _check_same_shape(mu_q, logvar_q, "mu_q", "logvar_q")
    if (mu_p is None) != (logvar_p is None):
        raise ValueError("give both mu_p and logvar_p, or neither (for p = N(0, I))")
    if mu_p is None:
        return 0.5 * (mu_q.pow(2) + _expm1_minus_identity(logvar_q)).sum(-1)
    _check_tensor(mu_p, "mu_p")
    _check_tensor(logvar_p, "logvar_p")
    _check_same_shape(mu_p, logvar_p, "mu_p", "logvar_p")
    try:
        torch.broadcast_shapes(mu_q.shape, mu_p.shape)
    except RuntimeError as exc:
        raise ValueError(f"q of shape {tuple(mu_q.shape)} and p of shape {tuple(mu_p.shape)} do not broadcast") from exc
    # e^d - 1 - d with d = log(sq^2 / sp^2), accurate near q = p; the mean term as a square of
    # (mu_q - mu_p) / sigma_p, which stays finite in float32 for log-variances far below -88
    mean_term = ((mu_q - mu_p) * (-0.5 * logvar_p).exp()).pow(2)
    return 0.5 * (_expm1_minus_identity(logvar_q - logvar_p) + mean_term).sum(-1)


def _expm1_minus_identity(d: torch.Tensor) -> torch.Tensor:
    """:math:`e^d - 1 - d` without cancellation: a Taylor series for small ``|d|``."""
    small = d.abs() < 1e-2
    series = d * d * (0.5 + d * (1.0 / 6.0 + d / 24.0))
    return torch.where(small, series, torch.expm1(d) - d)


def kl_mvn(mu_q: torch.Tensor, cov_q: torch.Tensor, mu_p: torch.Tensor, cov_p: torch.Tensor) -> torch.Tensor:
    r"""KL divergence between full-covariance Gaussians.

    .. math::
        \mathrm{KL}(\mathcal N(m_q, S_q) \,\|\, \mathcal N(m_p, S_p)) = \frac12 \Big(
        \tr(S_p^{-1} S_q) + (m_p - m_q)^\top S_p^{-1} (m_p - m_q) - d
        + \log\det S_p - \log\det S_q \Big)

    Parameters
    ----------
    mu_q, mu_p : Tensor ``(..., d)``
    cov_q, cov_p : Tensor ``(..., d, d)``, symmetric positive definite (broadcast against the means).

    Returns
    -------
    Tensor ``(...)`` in nats (the batch shape of the means).
    """
    for name, t in (("mu_q", mu_q), ("cov_q", cov_q), ("mu_p", mu_p), ("cov_p", cov_p)):
        _check_tensor(t, name)
    d = mu_q.shape[-1]
    for name, cov in (("cov_q", cov_q), ("cov_p", cov_p)):
        if cov.ndim < 2 or cov.shape[-2:] != (d, d):
            raise ValueError(f"{name} must have shape (..., {d}, {d}), got {tuple(cov.shape)}")
    if mu_p.shape[-1] != d:
        raise ValueError(f"mu_p must have last dimension {d}, got {tuple(mu_p.shape)}")
    chol_q, info_q = torch.linalg.cholesky_ex(cov_q)
    chol_p, info_p = torch.linalg.cholesky_ex(cov_p)
    if bool((info_q != 0).any()):
        raise ValueError("cov_q must be symmetric positive definite (all variances > 0)")
    if bool((info_p != 0).any()):
        raise ValueError("cov_p must be symmetric positive definite (all variances > 0)")
    a = torch.linalg.solve_triangular(chol_p, chol_q, upper=False)  # L_p^{-1} L_q
    trace = a.pow(2).sum((-2, -1))
    diff = (mu_p - mu_q).unsqueeze(-1)
    chol_p_b = chol_p.expand(*diff.shape[:-2], d, d) if chol_p.ndim < diff.ndim else chol_p
    maha = torch.linalg.solve_triangular(chol_p_b, diff, upper=False).pow(2).sum((-2, -1))
    logdet = lambda c: 2 * torch.log(torch.diagonal(c, dim1=-2, dim2=-1)).sum(-1)  # noqa: E731
    return 0.5 * (trace + maha - d + logdet(chol_p) - logdet(chol_q))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                   *, n_samples: int | None = None) -> torch.Tensor:
    r"""The reparameterised sample :math:`z = \mu + e^{s/2} \odot \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`.

    Parameters
    ----------
    mu, logvar : Tensor ``(..., d)``
    generator : torch.Generator, optional
        On ``mu.device``.
    n_samples : int, optional
        When given, return ``(n_samples, ..., d)`` independent samples.

    Returns
    -------
    Tensor of ``mu``'s shape (or ``(n_samples, *mu.shape)``), differentiable in ``mu`` and ``logvar``.
    """
    _check_tensor(mu, "mu")
    _check_tensor(logvar, "logvar")
    _check_same_shape(mu, logvar, "mu", "logvar")
    shape = mu.shape if n_samples is None else (_check_positive_int(n_samples, "n_samples"), *mu.shape)
    eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * eps


def log_normal_diag(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor | float) -> torch.Tensor:
    r""":math:`\log \mathcal N(x; \mu, \diag e^{s})` summed over the last dimension (broadcasting)."""
    logvar = torch.as_tensor(logvar, device=mu.device, dtype=mu.dtype)
    return -0.5 * (LOG_2PI + logvar + (x - mu).pow(2) * (-logvar).exp()).sum(-1)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \mathcal N(z; 0, I)` summed over the last dimension."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_j x_j \log \sigma(\ell_j) + (1 - x_j) \log(1 - \sigma(\ell_j)) = \sum_j x_j \ell_j - \mathrm{softplus}(\ell_j)`.

    Stable for any logits; ``x`` may be in [0, 1] (then it is the negative binary cross-entropy).
    """
    return (x * logits - F.softplus(logits)).sum(-1)


def entropy_normal(logvar: torch.Tensor) -> torch.Tensor:
    r"""Entropy of :math:`\mathcal N(\mu, \diag e^{s})`: :math:`\tfrac12 \sum_j (1 + \log 2\pi + s_j)`."""
    return 0.5 * (1.0 + LOG_2PI + logvar).sum(-1)


# --------------------------------------------------------------------------- bounds
def _encode(model, x, q, cond):
    if q is not None:
        mu, logvar = q
    else:
        mu, logvar = model.encode(x) if cond is None else model.encode(x, cond)
    _check_tensor(mu, "mu")
    _check_same_shape(mu, logvar, "mu", "logvar")
    if mu.shape[:-1] != x.shape[:-1]:
        raise ValueError(f"q's batch shape {tuple(mu.shape[:-1])} does not match x's {tuple(x.shape[:-1])}")
    return mu, logvar


def _loglik(model, x, z, cond):
    return model.log_likelihood(x, z) if cond is None else model.log_likelihood(x, z, cond)


def elbo(model, x: torch.Tensor, n_samples: int = 1, *, q: tuple[torch.Tensor, torch.Tensor] | None = None,
         form: str = "kl", cond: torch.Tensor | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Monte-Carlo estimate of the evidence lower bound, per example, in nats.

    The three forms of {prf:ref} ``prop-elbo-forms`` (same value in expectation):

    - ``"joint"``: :math:`\frac1L \sum_l \log p(x, z_l) - \log q(z_l \mid x)`;
    - ``"entropy"``: :math:`\frac1L \sum_l \log p(x, z_l) + \H[q]` (entropy in closed form);
    - ``"kl"``: :math:`\frac1L \sum_l \log p(x \mid z_l) - \mathrm{KL}(q \,\|\, p(z))` (KL in closed form),

    with :math:`z_l = \mu + e^{s/2} \odot \varepsilon_l` (:func:`reparameterize`) and
    :math:`p(z) = \mathcal N(0, I)`.

    Parameters
    ----------
    model : object with ``encode`` and ``log_likelihood`` (see the module docstring).
    x : Tensor ``(B, D)``
    n_samples : int
        ``L`` >= 1.
    q : (mu, logvar), optional
        Use this Gaussian ``q`` (each ``(B, d)``) instead of ``model.encode(x)``.
    form : {"kl", "joint", "entropy"}
    cond : Tensor ``(B, C)``, optional
        Condition passed to a conditional model.
    generator : torch.Generator, optional

    Returns
    -------
    Tensor ``(B,)``, differentiable (pathwise gradient).
    """
    _check_tensor(x, "x")
    n_samples = _check_positive_int(n_samples, "n_samples")
    if form not in ELBO_FORMS:
        raise ValueError(f"unknown form {form!r}; valid choices: {', '.join(ELBO_FORMS)}")
    mu, logvar = _encode(model, x, q, cond)
    z = reparameterize(mu, logvar, generator, n_samples=n_samples)  # (L, B, d)
    loglik = _loglik(model, x, z, cond)  # (L, B)
    if form == "kl":
        return loglik.mean(0) - kl_normal(mu, logvar)
    log_joint = loglik + log_standard_normal(z)
    if form == "entropy":
        return log_joint.mean(0) + entropy_normal(logvar)
    return (log_joint - log_normal_diag(z, mu, logvar)).mean(0)


def iwae_bound(model, x: torch.Tensor, k: int, *, q: tuple[torch.Tensor, torch.Tensor] | None = None,
               cond: torch.Tensor | None = None, generator: torch.Generator | None = None,
               chunk_size: int | None = None) -> torch.Tensor:
    r"""Importance-weighted bound of Burda et al. (2015), per example, in nats.

    .. math::
        \mathcal L_k(x) = \mathbb E\Big[\log \frac1k \sum_{i=1}^k \frac{p(x, z_i)}{q(z_i \mid x)}\Big],
        \qquad z_i \sim q(z \mid x),

    with :math:`\mathcal L_1 = \mathcal L \le \mathcal L_k \le \mathcal L_{k+1} \le \log p(x)`
    and :math:`\mathcal L_k \to \log p(x)` ({prf:ref} ``thm-vae-iwae``). One draw of the
    ``k`` samples is returned (computed with log-sum-exp), so the result is a stochastic
    estimate of :math:`\mathcal L_k`; ``-iwae_bound(...)`` estimates the test NLL.

    Parameters
    ----------
    model, x, q, cond, generator : as in :func:`elbo`.
    k : int
        Number of importance samples, >= 1.
    chunk_size : int, optional
        Draw the samples in chunks of this many to bound memory (k = 5000 on a GPU).

    Returns
    -------
    Tensor ``(B,)``.
    """
    _check_tensor(x, "x")
    k = _check_positive_int(k, "k")
    chunk_size = k if chunk_size is None else _check_positive_int(chunk_size, "chunk_size")
    mu, logvar = _encode(model, x, q, cond)
    parts = []
    done = 0
    while done < k:
        s = min(chunk_size, k - done)
        z = reparameterize(mu, logvar, generator, n_samples=s)
        log_w = _loglik(model, x, z, cond) + log_standard_normal(z) - log_normal_diag(z, mu, logvar)
        parts.append(torch.logsumexp(log_w, dim=0))
        done += s
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(k)


@dataclass(frozen=True)
class Bounds:
    """Average bounds over a data set, in nats per example (``nll = -iwae``)."""

    elbo: float
    iwae: float
    k: int

    @property
    def nll(self) -> float:
        """IWAE estimate of the negative log-likelihood, nats."""
        return -self.iwae


@torch.no_grad()
def evaluate_bounds(model, x: torch.Tensor, *, k: int, batch_size: int = 100, seed: int = 0,
                    cond: torch.Tensor | None = None, chunk_size: int | None = None) -> Bounds:
    """Mean ELBO (one sample, KL in closed form) and mean ``k``-sample IWAE bound over ``x``.

    Evaluates in batches of ``batch_size`` rows with a seeded generator on ``x.device``.
    """
    k = _check_positive_int(k, "k")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    tot_elbo = tot_iwae = 0.0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        cb = None if cond is None else cond[i:i + batch_size]
        tot_elbo += float(elbo(model, xb, cond=cb, generator=gen).sum())
        tot_iwae += float(iwae_bound(model, xb, k, cond=cb, generator=gen, chunk_size=chunk_size).sum())
    return Bounds(elbo=tot_elbo / len(x), iwae=tot_iwae / len(x), k=k)


# --------------------------------------------------------------------------- beta-VAE, free bits
def kl_normal_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""Per-coordinate KL to the standard normal, :math:`\tfrac12(\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1)`.

    Returns a tensor of ``mu``'s shape ``(..., d)``; its sum over the last axis is :func:`kl_normal`.
    """
    _check_tensor(mu, "mu")
    _check_tensor(logvar, "logvar")
    _check_same_shape(mu, logvar, "mu", "logvar")
    return 0.5 * (mu.pow(2) + _expm1_minus_identity(logvar))


def kl_free_bits(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float) -> torch.Tensor:
    r"""The KL penalty with *free bits* (Kingma et al., 2016), a scalar in nats.

    .. math::
        \tilde{\mathrm{KL}} = \sum_{j=1}^d \max\Big(\lambda,\ \frac1B \sum_{b=1}^B
        \mathrm{KL}\big(q(z_j \mid x_b) \,\|\, \mathcal N(0, 1)\big)\Big).

    Each latent coordinate gets :math:`\lambda` nats (averaged over the minibatch) for free:
    below that the penalty is constant, so the optimiser has no reason to push the KL of that
    coordinate to zero. With :math:`\lambda = 0` it is the minibatch mean of :func:`kl_normal`.
    Chapter "Combining models", section "Information preference".

    Parameters
    ----------
    mu, logvar : Tensor ``(B, d)``
    free_bits : float
        :math:`\lambda \ge 0`, nats per latent coordinate.
    """
    free_bits = float(free_bits)
    if not (free_bits >= 0 and math.isfinite(free_bits)):
        raise ValueError(f"free_bits must be a non-negative number of nats, got {free_bits!r}")
    kl = kl_normal_per_dim(mu, logvar)
    if kl.ndim < 2:
        raise ValueError(f"mu must have shape (batch, d), got {tuple(mu.shape)}")
    return kl.reshape(-1, kl.shape[-1]).mean(0).clamp_min(free_bits).sum()


def beta_elbo(model, x: torch.Tensor, beta: float = 1.0, *, free_bits: float = 0.0, n_samples: int = 1,
              cond: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The :math:`\beta`-VAE objective (Higgins et al., 2017), per example, in nats.

    .. math::
        \mathcal L_\beta(x) = \mathbb E_{q(z \mid x)}[\log p(x \mid z)]
        - \beta\, \mathrm{KL}(q(z \mid x) \,\|\, p(z)),

    with the KL in closed form and the same reparameterised draws as :func:`elbo`; at
    :math:`\beta = 1` (and ``free_bits = 0``) it *is* :func:`elbo` with ``form="kl"``. With
    ``free_bits > 0`` the KL is replaced by :func:`kl_free_bits` (a minibatch quantity, the same
    for every row), so that the *mean* over the batch is the free-bits objective.
    Chapter "Combining models", {prf:ref} ``prop-beta-vae-one``.

    Parameters
    ----------
    model : object with ``encode`` and ``log_likelihood`` (see the module docstring).
    x : Tensor ``(B, D)`` (or ``(B, ...)`` for models that take images)
    beta : float
        Weight of the KL, > 0 (``beta = 0`` gives a plain autoencoder with noise, also allowed).
    free_bits : float
        Nats per latent coordinate, >= 0.
    n_samples, cond, generator : as in :func:`elbo`.

    Returns
    -------
    Tensor ``(B,)``, differentiable.
    """
    _check_tensor(x, "x")
    beta = float(beta)
    if not (beta >= 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a non-negative number, got {beta!r}")
    n_samples = _check_positive_int(n_samples, "n_samples")
    mu, logvar = model.encode(x) if cond is None else model.encode(x, cond)
    _check_same_shape(mu, logvar, "mu", "logvar")
    if mu.shape[0] != x.shape[0]:
        raise ValueError(f"q's batch size {mu.shape[0]} does not match x's {x.shape[0]}")
    z = reparameterize(mu, logvar, generator, n_samples=n_samples)
    rec = _loglik(model, x, z, cond).mean(0)
    if free_bits == 0:
        return rec - beta * kl_normal(mu, logvar)
    return rec - beta * kl_free_bits(mu, logvar, free_bits)


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    r"""Number of *active* latent units (Burda et al., 2015).

    Unit :math:`j` is active when :math:`\mathrm{Var}_{x}\big(\mathbb E_{q(z \mid x)}[z_j]\big) > \delta`
    (default :math:`\delta = 0.01`): its posterior mean moves with the input. An inactive unit
    has :math:`q(z_j \mid x) \approx p(z_j)` for every ``x`` and carries no information.

    Parameters
    ----------
    mu : Tensor ``(N, d)``
        Posterior means of ``N`` >= 2 inputs.
    threshold : float
    """
    _check_tensor(mu, "mu")
    if mu.ndim != 2 or mu.shape[0] < 2:
        raise ValueError(f"mu must have shape (N >= 2, d), got {tuple(mu.shape)}")
    return int((mu.double().var(0) > threshold).sum())


# --------------------------------------------------------------------------- two views (discrete)
def _check_stochastic(t: Any, name: str, dims: int) -> torch.Tensor:
    _check_tensor(t, name)
    if t.ndim != dims:
        raise ValueError(f"{name} must have {dims} dimension(s), got shape {tuple(t.shape)}")
    if bool((t < 0).any()) or not torch.allclose(t.sum(-1), torch.ones((), dtype=t.dtype), atol=1e-6):
        raise ValueError(f"{name} must hold probabilities that sum to 1 over its last axis")
    return t


def _xlogy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(a > 0, a * torch.log(torch.where(a > 0, b, torch.ones_like(b))), torch.zeros_like(a))


def expected_elbo_discrete(p_data: torch.Tensor, p_z: torch.Tensor, p_x_given_z: torch.Tensor,
                           q_z_given_x: torch.Tensor) -> torch.Tensor:
    r"""Exact :math:`\mathbb E_{p_{\rm data}(x)}[\mathcal L(x)]` of a model with finitely many ``x`` and ``z``.

    .. math::
        \mathbb E_{p_{\rm data}}\mathcal L = \sum_x p_{\rm data}(x) \sum_z q(z \mid x)
        \log \frac{p(z)\, p(x \mid z)}{q(z \mid x)}.

    Parameters
    ----------
    p_data : Tensor ``(K,)``; p_z : ``(M,)``; p_x_given_z : ``(M, K)`` (rows sum to 1);
    q_z_given_x : ``(K, M)`` (rows sum to 1). Use float64.
    """
    p_data, p_z = _check_stochastic(p_data, "p_data", 1), _check_stochastic(p_z, "p_z", 1)
    px_z = _check_stochastic(p_x_given_z, "p_x_given_z", 2)
    qz_x = _check_stochastic(q_z_given_x, "q_z_given_x", 2)
    if px_z.shape != (len(p_z), len(p_data)) or qz_x.shape != (len(p_data), len(p_z)):
        raise ValueError(f"shapes do not match: p_data {tuple(p_data.shape)}, p_z {tuple(p_z.shape)}, "
                         f"p_x_given_z {tuple(px_z.shape)} (want (M, K)), q_z_given_x {tuple(qz_x.shape)} (want (K, M))")
    log_joint = torch.log(p_z)[None, :] + torch.log(px_z.T)  # (K, M): log p(x, z)
    cross = torch.where(qz_x > 0, qz_x * log_joint.clamp_min(-1e300), torch.zeros_like(qz_x))
    per_x = cross.sum(-1) - _xlogy(qz_x, qz_x).sum(-1)
    return (p_data * per_x).sum()


def joint_kl_discrete(p_data: torch.Tensor, p_z: torch.Tensor, p_x_given_z: torch.Tensor,
                      q_z_given_x: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{KL}(q(x, z) \,\|\, p(x, z))` with :math:`q(x, z) = p_{\rm data}(x)\, q(z \mid x)`.

    The "second view" of the ELBO ({prf:ref} ``prop-elbo-joint-matching``):
    :math:`\mathbb E_{p_{\rm data}}\mathcal L = -\mathrm{KL}(q(x, z) \,\|\, p(x, z)) - \mathrm H(p_{\rm data})`.
    Same arguments as :func:`expected_elbo_discrete`.
    """
    expected_elbo_discrete(p_data, p_z, p_x_given_z, q_z_given_x)  # validates
    q_joint = p_data[:, None] * q_z_given_x  # (K, M)
    p_joint = (p_z[:, None] * p_x_given_z).T  # (K, M)
    return (_xlogy(q_joint, q_joint) - _xlogy(q_joint, p_joint)).sum()


# --------------------------------------------------------------------------- the exact model
class LinearGaussian:
    r"""The linear-Gaussian latent model (probabilistic PCA), with exact evidence and posterior.

    .. math::
        p(z) = \mathcal N(0, I_d), \quad p(x \mid z) = \mathcal N(Wz + b, \sigma^2 I_D),
        \quad p(x) = \mathcal N(b, WW^\top + \sigma^2 I_D),

    .. math::
        p(z \mid x) = \mathcal N\big(M^{-1} W^\top (x - b),\ \sigma^2 M^{-1}\big),
        \qquad M = W^\top W + \sigma^2 I_d.

    The posterior covariance is diagonal when the columns of ``W`` are orthogonal (the
    maximum-likelihood PPCA solution, :meth:`fit_ppca`); then ``encode`` returns the exact
    posterior and the ELBO gap is zero. See chapter "Deriving the ELBO".

    Parameters
    ----------
    W : Tensor ``(D, d)``
    b : Tensor ``(D,)``
    noise_var : float
        :math:`\sigma^2 > 0`.
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor, noise_var: float):
        _check_tensor(W, "W")
        _check_tensor(b, "b")
        if W.ndim != 2 or b.shape != (W.shape[0],):
            raise ValueError(f"W must be (D, d) and b (D,), got {tuple(W.shape)} and {tuple(b.shape)}")
        noise_var = float(noise_var)
        if not (noise_var > 0 and math.isfinite(noise_var)):
            raise ValueError(f"noise_var must be a positive variance, got {noise_var!r}")
        self.W, self.b, self.noise_var = W, b, noise_var
        self.x_dim, self.z_dim = W.shape

    @classmethod
    def random(cls, x_dim: int, z_dim: int, *, noise_var: float = 0.5, orthogonal: bool = True,
               seed: int = 0, dtype: torch.dtype = torch.float64) -> "LinearGaussian":
        """A random model; ``orthogonal=True`` makes the columns of ``W`` orthogonal (diagonal posterior)."""
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(x_dim, z_dim, generator=g, dtype=dtype)
        if orthogonal:
            Q, _ = torch.linalg.qr(W)
            W = Q * torch.linspace(2.0, 0.5, z_dim, dtype=dtype)
        b = 0.5 * torch.randn(x_dim, generator=g, dtype=dtype)
        return cls(W, b, noise_var)

    @classmethod
    def fit_ppca(cls, x: torch.Tensor, z_dim: int) -> "LinearGaussian":
        r"""Maximum-likelihood probabilistic PCA (Tipping and Bishop, 1999).

        :math:`b = \bar x`, :math:`\sigma^2 = \frac{1}{D-d}\sum_{j>d} \lambda_j`,
        :math:`W = U_d (\Lambda_d - \sigma^2 I)^{1/2}` from the eigen-decomposition of the
        sample covariance (divided by ``N``).
        """
        _check_tensor(x, "x")
        n, D = x.shape
        if not 1 <= z_dim < D:
            raise ValueError(f"z_dim must be in [1, {D - 1}], got {z_dim!r}")
        b = x.mean(0)
        cov = (x - b).T @ (x - b) / n
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0), evecs.flip(1)
        noise_var = float(evals[z_dim:].mean())
        W = evecs[:, :z_dim] * (evals[:z_dim] - noise_var).clamp_min(0).sqrt()
        return cls(W, b, noise_var)

    def _like(self, x: torch.Tensor):
        return self.W.to(x), self.b.to(x)

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p(x)`, ``(B,)``."""
        W, b = self._like(x)
        cov = W @ W.T + self.noise_var * torch.eye(self.x_dim, dtype=x.dtype, device=x.device)
        return gaussian_log_prob(x, b, cov)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior ``(mean (B, d), cov (d, d))``."""
        W, b = self._like(x)
        M = W.T @ W + self.noise_var * torch.eye(self.z_dim, dtype=x.dtype, device=x.device)
        mean = torch.linalg.solve(M, W.T @ (x - b).T).T
        return mean, self.noise_var * torch.linalg.inv(M)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior mean and the log of the diagonal of its covariance (exact iff diagonal)."""
        mean, cov = self.posterior(x)
        return mean, torch.diagonal(cov).log().expand_as(mean)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log \\mathcal N(x; Wz + b, \\sigma^2 I)` for ``z`` of shape ``(..., B, d)``."""
        W, b = self._like(x)
        return log_normal_diag(x, z @ W.T + b, math.log(self.noise_var))

    def exact_elbo(self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        r"""The ELBO of a diagonal Gaussian ``q`` in closed form (no sampling):

        .. math::
            \mathcal L = \log \mathcal N(x; W\mu + b, \sigma^2 I) - \frac{\tr(W \diag(e^{s}) W^\top)}{2\sigma^2}
            - \mathrm{KL}(q \,\|\, \mathcal N(0, I)).
        """
        W, _ = self._like(x)
        trace = (W.pow(2) * logvar.exp().unsqueeze(-2)).sum((-2, -1))
        return self.log_likelihood(x, mu) - trace / (2 * self.noise_var) - kl_normal(mu, logvar)

    def kl_to_posterior(self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """:math:`\\mathrm{KL}(q \\,\\|\\, p(z \\mid x))` for a diagonal Gaussian ``q``, ``(B,)``."""
        mean, cov = self.posterior(x)
        return kl_mvn(mu, torch.diag_embed(logvar.exp()), mean, cov)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws of ``x``, ``(n, D)``."""
        z = torch.randn(n, self.z_dim, generator=generator, dtype=self.W.dtype)
        eps = torch.randn(n, self.x_dim, generator=generator, dtype=self.W.dtype)
        return z @ self.W.T + self.b + math.sqrt(self.noise_var) * eps


# --------------------------------------------------------------------------- networks
class _ConvEncoder(nn.Module):
    """28x28 image -> feature vector of size 64*7*7."""

    def __init__(self, activation: str):
        super().__init__()
        act = nn.ReLU if activation == "relu" else nn.Tanh if activation == "tanh" else nn.ELU
        self.net = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), act(), nn.Conv2d(32, 64, 4, 2, 1), act(), nn.Flatten())

    def forward(self, x):
        return self.net(x.reshape(-1, 1, 28, 28))


class _ConvDecoder(nn.Module):
    """vector -> 28x28 image (flattened to 784)."""

    def __init__(self, in_dim: int, hidden: int, activation: str):
        super().__init__()
        act = nn.ReLU if activation == "relu" else nn.Tanh if activation == "tanh" else nn.ELU
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), act(), nn.Linear(hidden, 64 * 7 * 7), act())
        self.net = nn.Sequential(nn.ConvTranspose2d(64, 32, 4, 2, 1), act(), nn.ConvTranspose2d(32, 1, 4, 2, 1))

    def forward(self, h):
        return self.net(self.fc(h).reshape(-1, 64, 7, 7)).reshape(-1, 784)


def _apply_flat(net: nn.Module, h: torch.Tensor) -> torch.Tensor:
    lead = h.shape[:-1]
    out = net(h.reshape(-1, h.shape[-1]))
    return out.reshape(*lead, out.shape[-1])


def _with_cond(h: torch.Tensor, cond: torch.Tensor | None, cond_dim: int) -> torch.Tensor:
    if cond_dim == 0:
        if cond is not None:
            raise ValueError("this model is unconditional (cond_dim=0); do not pass cond")
        return h
    if cond is None or cond.shape[-1] != cond_dim:
        got = None if cond is None else tuple(cond.shape)
        raise ValueError(f"cond must be a tensor (..., {cond_dim}) for this conditional model, got {got}")
    return torch.cat([h, cond.to(h.dtype).expand(*h.shape[:-1], cond_dim)], dim=-1)


class VAE(nn.Module):
    r"""Variational autoencoder with a Gaussian encoder and a Bernoulli or Gaussian decoder.

    .. math::
        q_\phi(z \mid x) = \mathcal N(\mu_\phi(x), \diag e^{s_\phi(x)}), \quad p(z) = \mathcal N(0, I),
        \quad p_\theta(x \mid z) = \prod_j \Bern(\sigma(\ell_\theta(z)_j)) \ \text{or}\
        \mathcal N(m_\theta(z), e^{v} I).

    Parameters
    ----------
    x_dim, z_dim : int
    hidden : sequence of int
        Hidden widths of the MLP encoder (the decoder mirrors them); for ``arch="conv"``
        the last entry is the width of the fully connected layer.
    likelihood : {"bernoulli", "gaussian"}
    arch : {"mlp", "conv"}
        ``"conv"`` needs ``x_dim = 784`` (28x28 images).
    cond_dim : int
        Size of a condition (e.g. a one-hot label) fed to encoder and decoder: a conditional VAE.
    obs_logvar : float or None
        Gaussian decoder only: a fixed log-variance :math:`v` of every pixel, or ``None`` to learn one.
    activation : {"tanh", "relu", "elu"}
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200), likelihood: str = "bernoulli",
                 arch: str = "mlp", *, cond_dim: int = 0, obs_logvar: float | None = None,
                 activation: str = "tanh"):
        super().__init__()
        for name, v in (("x_dim", x_dim), ("z_dim", z_dim)):
            _check_positive_int(v, name)
        hidden = tuple(hidden)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden must list positive integers, got {hidden!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; valid choices: {', '.join(LIKELIHOODS)}")
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; valid choices: {', '.join(ARCHS)}")
        if arch == "conv" and x_dim != 784:
            raise ValueError(f"arch='conv' expects 28x28 images (x_dim=784), got x_dim={x_dim}")
        if activation not in ("tanh", "relu", "elu"):
            raise ValueError(f"unknown activation {activation!r}; valid choices: tanh, relu, elu")
        if isinstance(cond_dim, bool) or not isinstance(cond_dim, int) or cond_dim < 0:
            raise ValueError(f"cond_dim must be a non-negative integer, got {cond_dim!r}")
        self.x_dim, self.z_dim, self.hidden = x_dim, z_dim, hidden
        self.likelihood, self.arch, self.cond_dim = likelihood, arch, cond_dim
        if arch == "mlp":
            self.encoder = mlp([x_dim + cond_dim, *hidden, 2 * z_dim], activation=activation)
            self.decoder = mlp([z_dim + cond_dim, *hidden[::-1], x_dim], activation=activation)
        else:
            self.encoder_features = _ConvEncoder(activation)
            self.encoder = mlp([64 * 7 * 7 + cond_dim, hidden[-1], 2 * z_dim], activation=activation)
            self.decoder = _ConvDecoder(z_dim + cond_dim, hidden[-1], activation)
        if likelihood == "gaussian":
            if obs_logvar is None:
                self.obs_logvar = nn.Parameter(torch.zeros(()))
            else:
                self.register_buffer("obs_logvar", torch.tensor(float(obs_logvar)))
        elif obs_logvar is not None:
            raise ValueError("obs_logvar applies to likelihood='gaussian' only")

    def _check_x(self, x: torch.Tensor) -> None:
        _check_tensor(x, "x")
        if x.shape[-1] != self.x_dim:
            raise ValueError(f"x must have shape (..., {self.x_dim}), got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of :math:`q(z \\mid x)`, each ``(B, z_dim)``."""
        self._check_x(x)
        h = x if self.arch == "mlp" else self.encoder_features(x)
        out = _apply_flat(self.encoder, _with_cond(h, cond, self.cond_dim))
        mu, logvar = out.chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder output for ``z`` ``(..., z_dim)``: logits (Bernoulli) or means (Gaussian), ``(..., x_dim)``."""
        if z.shape[-1] != self.z_dim:
            raise ValueError(f"z must have shape (..., {self.z_dim}), got {tuple(z.shape)}")
        return _apply_flat(self.decoder, _with_cond(z, cond, self.cond_dim))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """:math:`\\log p(x \\mid z)` for ``z`` ``(S, B, z_dim)`` (or ``(B, z_dim)``): ``(S, B)`` (or ``(B,)``)."""
        out = self.decode(z, cond)
        if self.likelihood == "bernoulli":
            return log_bernoulli(x, out)
        return log_normal_diag(x, out, self.obs_logvar)

    def elbo(self, x: torch.Tensor, n_samples: int = 1, *, cond: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-example ELBO ``(B,)`` in nats (KL in closed form); see :func:`elbo`."""
        self._check_x(x)
        return elbo(self, x, n_samples, cond=cond, generator=generator)

    def iwae_bound(self, x: torch.Tensor, k: int, *, cond: torch.Tensor | None = None,
                   generator: torch.Generator | None = None, chunk_size: int | None = None) -> torch.Tensor:
        """Per-example ``k``-sample importance-weighted bound ``(B,)``; see :func:`iwae_bound`."""
        self._check_x(x)
        return iwae_bound(self, x, k, cond=cond, generator=generator, chunk_size=chunk_size)

    def mean(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder mean :math:`\\E[x \\mid z]`: probabilities (Bernoulli) or means (Gaussian)."""
        out = self.decode(z, cond)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    @torch.no_grad()
    def sample(self, n: int, *, cond: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder means of ``n`` prior draws :math:`z \\sim \\mathcal N(0, I)`: ``(n, x_dim)``."""
        n = _check_positive_int(n, "n")
        p = next(self.parameters())
        z = torch.randn(n, self.z_dim, generator=generator, device=p.device, dtype=p.dtype)
        return self.mean(z, cond)


class CategoricalVAE(nn.Module):
    r"""VAE with ``n_latent`` categorical latents of ``n_classes`` classes each and a uniform prior
    (Jang et al., 2016), Bernoulli decoder, trained through the Gumbel-softmax relaxation.

    Training objective (relaxed, temperature :math:`\tau`):
    :math:`\log p(x \mid y) - \mathrm{KL}(q(c \mid x) \,\|\, \mathrm{Uniform})`, with ``y`` a
    Gumbel-softmax sample. :meth:`elbo` evaluates the true ELBO of the discrete model with exact
    one-hot samples (Gumbel-max), comparable with a Gaussian VAE's.

    Parameters
    ----------
    x_dim : int
    n_latent, n_classes : int
        30 and 10 in the chapter.
    hidden : sequence of int
    hard : bool
        Straight-through samples during training.
    """

    def __init__(self, x_dim: int, n_latent: int = 30, n_classes: int = 10, hidden: Sequence[int] = (200, 200),
                 *, hard: bool = False, activation: str = "tanh"):
        super().__init__()
        for name, v in (("x_dim", x_dim), ("n_latent", n_latent), ("n_classes", n_classes)):
            _check_positive_int(v, name)
        hidden = tuple(hidden)
        self.x_dim, self.n_latent, self.n_classes, self.hard = x_dim, n_latent, n_classes, hard
        self.encoder = mlp([x_dim, *hidden, n_latent * n_classes], activation=activation)
        self.decoder = mlp([n_latent * n_classes, *hidden[::-1], x_dim], activation=activation)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of :math:`q(c \\mid x)`, ``(B, n_latent, n_classes)``."""
        if x.shape[-1] != self.x_dim:
            raise ValueError(f"x must have shape (..., {self.x_dim}), got {tuple(x.shape)}")
        return self.encoder(x).reshape(*x.shape[:-1], self.n_latent, self.n_classes)

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits for (relaxed) one-hot codes ``y`` ``(..., n_latent, n_classes)``."""
        return self.decoder(y.flatten(-2))

    def relaxed_elbo(self, x: torch.Tensor, tau: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training objective ``(B,)``: reconstruction through a Gumbel-softmax sample minus the categorical KL."""
        logits = self.encode(x)
        y = gumbel_softmax(logits, tau, hard=self.hard, generator=generator)
        return log_bernoulli(x, self.decode(y)) - kl_categorical_uniform(logits)

    def elbo(self, x: torch.Tensor, n_samples: int = 1, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """True ELBO of the discrete model ``(B,)``, nats: exact categorical samples, KL in closed form."""
        n_samples = _check_positive_int(n_samples, "n_samples")
        logits = self.encode(x)
        rec = 0.0
        for _ in range(n_samples):
            c = gumbel_max_sample(logits, generator=generator)
            rec = rec + log_bernoulli(x, self.decode(F.one_hot(c, self.n_classes).to(x.dtype)))
        return rec / n_samples - kl_categorical_uniform(logits)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoder probabilities for ``n`` codes drawn from the uniform prior, ``(n, x_dim)``."""
        p = next(self.parameters())
        c = torch.randint(self.n_classes, (n, self.n_latent), generator=generator, device=p.device)
        return torch.sigmoid(self.decode(F.one_hot(c, self.n_classes).to(p.dtype)))
