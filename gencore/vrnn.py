r"""The variational RNN (Chung et al., 2015) and a small switching-sine sequence data set.

Chapter "Combining models", section "Variational RNN".

At every step :math:`t` a latent :math:`z_t` has a prior that depends on the past through the
RNN state :math:`h_{t-1}`:

.. math::
    p(z_t \mid h_{t-1}) = \mathcal N(\mu_{0,t}, \diag \sigma_{0,t}^2), \qquad
    p(x_t \mid z_t, h_{t-1}) = \mathcal N(m_t, \diag s_t^2),

    q(z_t \mid x_t, h_{t-1}) = \mathcal N(\mu_t, \diag \sigma_t^2), \qquad
    h_t = \mathrm{GRU}([\varphi_x(x_t), \varphi_z(z_t)], h_{t-1}),

and the ELBO of a sequence is a sum over time,

.. math::
    \mathcal L(x_{1:T}) = \sum_{t=1}^T \mathbb E_q\big[\log p(x_t \mid z_t, h_{t-1})
    - \mathrm{KL}\big(q(z_t \mid x_t, h_{t-1}) \,\|\, p(z_t \mid h_{t-1})\big)\big].
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gencore.nets import mlp
from gencore.vae import kl_normal, log_normal_diag, reparameterize

__all__ = ["switching_sine", "VRNN", "iid_gaussian_log_likelihood"]


def switching_sine(n: int, length: int = 24, *, switch_prob: float = 0.1, freqs: tuple[float, float] = (0.25, 0.8),
                   noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Sequences of a noisy sine whose frequency switches between two values (a 2-state Markov chain).

    .. math::
        s_t \in \{0, 1\},\ P(s_t \ne s_{t-1}) = p_{\rm switch}; \qquad
        \phi_t = \phi_{t-1} + \omega_{s_t}; \qquad x_t = \sin \phi_t + \eta\, \varepsilon_t,

    with :math:`\phi_0 \sim \mathcal U[0, 2\pi)`, :math:`s_1` uniform and
    :math:`\varepsilon_t \sim \mathcal N(0, 1)`.

    Returns
    -------
    x : Tensor ``(n, length, 1)``, float32; states : Tensor ``(n, length)``, int64.
    """
    for name, v in (("n", n), ("length", length)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not 0 <= switch_prob <= 1:
        raise ValueError(f"switch_prob must be a probability in [0, 1], got {switch_prob!r}")
    if not noise > 0:
        raise ValueError(f"noise must be positive, got {noise!r}")
    g = torch.Generator().manual_seed(seed)
    states = torch.empty(n, length, dtype=torch.long)
    s = torch.randint(2, (n,), generator=g)
    phase = 2 * math.pi * torch.rand(n, generator=g)
    omega = torch.tensor(freqs)
    xs = []
    for t in range(length):
        flip = torch.rand(n, generator=g) < switch_prob
        s = torch.where(flip, 1 - s, s) if t > 0 else s
        states[:, t] = s
        phase = phase + omega[s]
        xs.append(torch.sin(phase) + noise * torch.randn(n, generator=g))
    return torch.stack(xs, 1).unsqueeze(-1), states


class VRNN(nn.Module):
    """A small variational RNN with Gaussian observations.

    Parameters
    ----------
    x_dim, z_dim : int
    hidden : int
        GRU state size.
    features : int
        Width of the feature extractors :math:`\\varphi_x, \\varphi_z` and of every hidden layer.
    """

    def __init__(self, x_dim: int = 1, z_dim: int = 2, hidden: int = 32, features: int = 32):
        super().__init__()
        self.x_dim, self.z_dim, self.hidden = x_dim, z_dim, hidden
        self.phi_x = mlp([x_dim, features], activation="relu", out_activation="relu")
        self.phi_z = mlp([z_dim, features], activation="relu", out_activation="relu")
        self.prior = mlp([hidden, features, 2 * z_dim], activation="relu")
        self.encoder = mlp([features + hidden, features, 2 * z_dim], activation="relu")
        self.decoder = mlp([features + hidden, features, 2 * x_dim], activation="relu")
        self.rnn = nn.GRUCell(2 * features, hidden)

    def elbo(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """The ELBO of each sequence ``x`` ``(B, T, x_dim)``, nats, ``(B,)`` (a sum over the ``T`` steps)."""
        if x.ndim != 3 or x.shape[-1] != self.x_dim:
            raise ValueError(f"x must have shape (batch, time, {self.x_dim}), got {tuple(x.shape)}")
        h = x.new_zeros(len(x), self.hidden)
        total = x.new_zeros(len(x))
        for t in range(x.shape[1]):
            fx = self.phi_x(x[:, t])
            mu0, lv0 = self.prior(h).chunk(2, -1)
            mu, lv = self.encoder(torch.cat([fx, h], -1)).chunk(2, -1)
            z = reparameterize(mu, lv, generator)
            fz = self.phi_z(z)
            m, s = self.decoder(torch.cat([fz, h], -1)).chunk(2, -1)
            total = total + log_normal_diag(x[:, t], m, s) - kl_normal(mu, lv, mu0, lv0)
            h = self.rnn(torch.cat([fx, fz], -1), h)
        return total

    @torch.no_grad()
    def sample(self, n: int, length: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` sequences ``(n, length, x_dim)`` from the generative model (decoder means plus their noise)."""
        p = next(self.parameters())
        h = torch.zeros(n, self.hidden, device=p.device, dtype=p.dtype)
        out = []
        for _ in range(length):
            mu0, lv0 = self.prior(h).chunk(2, -1)
            z = reparameterize(mu0, lv0, generator)
            fz = self.phi_z(z)
            m, s = self.decoder(torch.cat([fz, h], -1)).chunk(2, -1)
            x = reparameterize(m, s, generator)
            out.append(x)
            h = self.rnn(torch.cat([self.phi_x(x), fz], -1), h)
        return torch.stack(out, 1)


def iid_gaussian_log_likelihood(x_train: torch.Tensor, x_test: torch.Tensor) -> float:
    r"""The control without memory: exact mean log-likelihood per time step of ``x_test`` under the
    maximum-likelihood Gaussian :math:`\mathcal N(\bar x, \hat\sigma^2)` fitted to every value of ``x_train``
    (each step independent of the past), nats."""
    v = x_train.reshape(-1, x_train.shape[-1])
    mean, var = v.mean(0), v.var(0, unbiased=False)
    return float(log_normal_diag(x_test, mean, var.log()).mean())
