r"""Adversarial variational Bayes (Mescheder et al., 2017) on a 2-D toy with a known posterior.

Chapter "Combining models", section "AVB" ({prf:ref} ``prop-avb-optimal-critic``).

AVB replaces the Gaussian encoder by an *implicit* one, :math:`z = g_\phi(x, \varepsilon)` with
:math:`\varepsilon \sim \mathcal N(0, I)`, whose density :math:`q_\phi(z \mid x)` is unknown. The ELBO
needs :math:`\log q_\phi(z \mid x) - \log p(z)`; a critic :math:`T_\psi(x, z)` trained by logistic
regression to tell :math:`(x, z \sim q_\phi(z \mid x))` from :math:`(x, z \sim p(z))` has the optimum

.. math::
    T^*(x, z) = \log q_\phi(z \mid x) - \log p(z),

so the encoder maximises :math:`\mathbb E_{q_\phi}[\log p(x \mid z) - T_\psi(x, z)]`.

The toy model: :math:`z \sim \mathcal N(0, I_2)`, :math:`x \mid z \sim \mathcal N(z_1 z_2, \sigma^2)`.
Its posterior lies along the hyperbola :math:`z_1 z_2 = x`: two banana-shaped modes in
opposite quadrants, which no Gaussian can match. :meth:`ProductToy.posterior_grid` computes it
exactly on a grid, and :func:`grid_tv` scores any sampler against it.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gencore.nets import mlp
from gencore.vae import kl_normal, log_standard_normal, reparameterize

__all__ = ["ProductToy", "ImplicitEncoder", "GaussianEncoder", "Critic", "avb_step", "gaussian_step", "grid_tv"]

LOG_2PI = math.log(2 * math.pi)


class ProductToy:
    r"""The model :math:`p(z) = \mathcal N(0, I_2)`, :math:`p(x \mid z) = \mathcal N(x; z_1 z_2, \sigma^2)`.

    Parameters
    ----------
    sigma : float
        Observation noise, > 0.
    """

    def __init__(self, sigma: float = 0.3):
        sigma = float(sigma)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        self.sigma = sigma

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(x \\mid z)` for ``x`` ``(B, 1)`` and ``z`` ``(..., B, 2)``: ``(..., B)``."""
        if z.shape[-1] != 2 or x.shape[-1] != 1:
            raise ValueError(f"x must be (B, 1) and z (..., B, 2), got {tuple(x.shape)} and {tuple(z.shape)}")
        mean = z[..., 0] * z[..., 1]
        return -0.5 * (LOG_2PI + 2 * math.log(self.sigma) + (x[..., 0] - mean).pow(2) / self.sigma ** 2)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` observations ``(n, 1)`` from the model."""
        z = torch.randn(n, 2, generator=generator)
        return (z[:, :1] * z[:, 1:]) + self.sigma * torch.randn(n, 1, generator=generator)

    def posterior_grid(self, x: float, *, lim: float = 3.0, n: int = 30) -> torch.Tensor:
        r"""The exact posterior :math:`p(z \mid x)` as the probabilities of the cells of an ``n x n`` grid on
        :math:`[-\mathrm{lim}, \mathrm{lim}]^2` (midpoint rule on a 4x finer grid, normalised): ``(n, n)``,
        indexed ``[i, j]`` for :math:`z_1` in cell ``i`` and :math:`z_2` in cell ``j``. Float64."""
        fine = 4 * n
        edges = torch.linspace(-lim, lim, fine + 1, dtype=torch.float64)
        c = 0.5 * (edges[1:] + edges[:-1])
        z = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
        xs = torch.full((len(z), 1), float(x), dtype=torch.float64)
        logp = self.log_likelihood(xs, z) + log_standard_normal(z)
        p = torch.softmax(logp, 0).reshape(fine, fine)
        return p.reshape(n, 4, n, 4).sum((1, 3))


def grid_tv(samples: torch.Tensor, probs: torch.Tensor, *, lim: float = 3.0) -> float:
    r"""Total-variation distance between samples (as a histogram) and grid probabilities.

    .. math::
        \mathrm{TV} = \tfrac12 \Big(\sum_{\text{cells}} \lvert \hat q_c - p_c \rvert + \hat q_{\text{outside}}\Big),

    with :math:`\hat q_c` the fraction of ``samples`` in cell ``c`` of the grid of
    :meth:`ProductToy.posterior_grid` and :math:`\hat q_{\text{outside}}` the fraction outside it.
    In [0, 1]; a finite sample from ``probs`` itself scores above 0 (the histogram's noise floor).

    Parameters
    ----------
    samples : Tensor ``(N, 2)``
    probs : Tensor ``(n, n)``, summing to 1 (up to the mass outside the grid).
    """
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(f"samples must have shape (N, 2), got {tuple(samples.shape)}")
    n = probs.shape[0]
    if probs.shape != (n, n):
        raise ValueError(f"probs must be a square grid (n, n), got {tuple(probs.shape)}")
    s = samples.detach().to("cpu", torch.float64)
    idx = torch.floor((s + lim) / (2 * lim) * n).long()
    inside = ((idx >= 0) & (idx < n)).all(1)
    flat = idx[inside, 0] * n + idx[inside, 1]
    hist = torch.bincount(flat, minlength=n * n).double() / len(s)
    p = probs.detach().to("cpu", torch.float64).reshape(-1)
    return float(0.5 * ((hist - p).abs().sum() + (1.0 - inside.double().mean())))


class ImplicitEncoder(nn.Module):
    """:math:`z = g_\\phi(x, \\varepsilon)`, :math:`\\varepsilon \\sim \\mathcal N(0, I_k)`: an MLP with noise inputs."""

    def __init__(self, x_dim: int = 1, z_dim: int = 2, noise_dim: int = 4, hidden: int = 64):
        super().__init__()
        self.noise_dim = noise_dim
        self.net = mlp([x_dim + noise_dim, hidden, hidden, z_dim], activation="relu")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(len(x), self.noise_dim, generator=generator, device=x.device, dtype=x.dtype)
        return self.net(torch.cat([x, eps], -1))


class GaussianEncoder(nn.Module):
    """An amortised diagonal Gaussian :math:`q(z \\mid x)` for a :class:`ProductToy` (the baseline)."""

    def __init__(self, toy: ProductToy, x_dim: int = 1, z_dim: int = 2, hidden: int = 64):
        super().__init__()
        self.toy = toy
        self.net = mlp([x_dim, hidden, 2 * z_dim], activation="relu")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x).chunk(2, -1)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.toy.log_likelihood(x, z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, logvar = self.encode(x)
        return reparameterize(mu, logvar, generator)


class Critic(nn.Module):
    """:math:`T_\\psi(x, z)`, an MLP on the concatenation; its optimum is :math:`\\log q(z \\mid x) - \\log p(z)`."""

    def __init__(self, x_dim: int = 1, z_dim: int = 2, hidden: int = 64):
        super().__init__()
        self.net = mlp([x_dim + z_dim, hidden, hidden, 1], activation="relu")

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, z], -1)).squeeze(-1)


def avb_step(toy: ProductToy, encoder: ImplicitEncoder, critic: Critic, opt_encoder: torch.optim.Optimizer,
             opt_critic: torch.optim.Optimizer, *, generator: torch.Generator | None = None,
             critic_steps: int = 1) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    r"""A :func:`gencore.train.fit` step of AVB: ``critic_steps`` logistic-regression updates of the critic,

    .. math::
        \max_\psi\ \mathbb E_{x}\Big[\mathbb E_{q_\phi(z \mid x)} \log \sigma(T_\psi(x, z))
        + \mathbb E_{p(z)} \log\big(1 - \sigma(T_\psi(x, z))\big)\Big],

    then one update of the encoder on :math:`\mathbb E_{x, \varepsilon}[\log p(x \mid g_\phi(x, \varepsilon))
    - T_\psi(x, g_\phi(x, \varepsilon))]` (the ELBO with the critic in place of the log-density ratio).
    Logs ``"elbo"`` (the critic's estimate) and ``"critic"`` (its logistic loss).
    """

    def step(x: torch.Tensor) -> dict[str, torch.Tensor]:
        for _ in range(critic_steps):
            with torch.no_grad():
                zq = encoder(x, generator)
            zp = torch.randn(zq.shape, generator=generator, device=x.device, dtype=x.dtype)
            loss_c = F.softplus(-critic(x, zq)).mean() + F.softplus(critic(x, zp)).mean()
            opt_critic.zero_grad(set_to_none=True)
            loss_c.backward()
            opt_critic.step()
        z = encoder(x, generator)
        est = (toy.log_likelihood(x, z) - critic(x, z)).mean()
        opt_encoder.zero_grad(set_to_none=True)
        (-est).backward()
        opt_encoder.step()
        return {"elbo": est.detach(), "critic": loss_c.detach()}

    return step


def gaussian_step(encoder: GaussianEncoder, opt: torch.optim.Optimizer, *,
                  generator: torch.Generator | None = None) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    r"""A :func:`gencore.train.fit` step of the Gaussian baseline: ascend the ELBO with the KL in closed form,
    :math:`\mathbb E_q[\log p(x \mid z)] - \mathrm{KL}(q(z \mid x) \,\|\, \mathcal N(0, I))`."""

    def step(x: torch.Tensor) -> dict[str, torch.Tensor]:
        mu, logvar = encoder.encode(x)
        z = reparameterize(mu, logvar, generator)
        elbo = (encoder.toy.log_likelihood(x, z) - kl_normal(mu, logvar)).mean()
        opt.zero_grad(set_to_none=True)
        (-elbo).backward()
        opt.step()
        return {"elbo": elbo.detach()}

    return step
