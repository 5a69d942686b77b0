"""Wasserstein autoencoders (WAE-MMD, WAE-GAN, sliced-Wasserstein penalty) and adversarial autoencoders.

Chapter "Wasserstein and adversarial autoencoders" ({prf:ref} ``thm-wae-primal``,
``prop-wae-penalised``).

A WAE (Tolstikhin et al. 2017) minimises the penalised optimal-transport objective

.. math::
    D_{\\mathrm{WAE}}(P_X, P_G) = \\inf_{Q(Z|X)} \\E_{P_X}\\E_{Q(Z|X)}\\, c(X, G(Z))
    + \\lambda\\, \\mathcal D_Z(Q_Z, P_Z),

with :math:`c(x, y) = \\|x - y\\|^2`, a deterministic decoder :math:`G` and a latent divergence
:math:`\\mathcal D_Z` between the aggregate posterior :math:`Q_Z` and the prior
:math:`P_Z = \\mathcal N(0, I)`. :data:`PENALTIES` holds the sample-based choices of
:math:`\\mathcal D_Z` (MMD with the IMQ kernel, squared sliced Wasserstein); WAE-GAN uses a latent
discriminator instead (:func:`wae_gan_step`); the AAE of Makhzani et al. (2015) alternates a
reconstruction phase and an adversarial phase (:func:`aae_step`).

Every step factory returns ``step(batch) -> dict`` for :func:`gencore.train.fit`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gencore.gan import discriminator_loss, generator_loss
from gencore.nets import mlp
from gencore.ot.exact import gaussian_w2
from gencore.ot.sample import DEFAULT_SCALES, mmd2, sliced_wasserstein

__all__ = [
    "LatentPenalty",
    "PENALTIES",
    "WAE",
    "aae_step",
    "latent_penalty",
    "prior_moment_w2",
    "wae_gan_step",
    "wae_step",
]


class WAE(nn.Module):
    r"""Autoencoder with an MLP encoder, an MLP decoder with sigmoid output, and prior :math:`\mathcal N(0, I)`.

    Parameters
    ----------
    x_dim, z_dim : int
    hidden : sequence of int
        Hidden widths of the encoder; the decoder mirrors them.
    stochastic : bool
        ``False``: deterministic encoder :math:`z = e(x)` (WAE). ``True``: Gaussian encoder
        :math:`z = \mu(x) + e^{s(x)/2}\varepsilon` (the AAE's "Gaussian posterior").
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (256,), stochastic: bool = False):
        super().__init__()
        for name, v in (("x_dim", x_dim), ("z_dim", z_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        hidden = tuple(hidden)
        self.x_dim, self.z_dim, self.stochastic = x_dim, z_dim, bool(stochastic)
        self.encoder = mlp([x_dim, *hidden, z_dim * (2 if stochastic else 1)])
        self.decoder = mlp([z_dim, *hidden[::-1], x_dim], out_activation="sigmoid")

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Codes ``(B, z_dim)``: :math:`e(x)`, or one reparameterised draw of :math:`q(z|x)`."""
        if not isinstance(x, torch.Tensor) or x.shape[-1] != self.x_dim:
            raise ValueError(f"x must be a tensor of shape (B, {self.x_dim}), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        out = self.encoder(x)
        if not self.stochastic:
            return out
        mu, logvar = out.chunk(2, dim=-1)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder means in [0, 1], ``(B, x_dim)``."""
        return self.decoder(z)

    def reconstruction_cost(self, x: torch.Tensor, z: torch.Tensor | None = None,
                            generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Per-example cost :math:`c(x, G(z)) = \|x - G(z)\|^2` ``(B,)``, with ``z = encode(x)`` by default."""
        if z is None:
            z = self.encode(x, generator)
        return ((x - self.decode(z)) ** 2).sum(-1)

    def prior_sample(self, n: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws of :math:`P_Z = \\mathcal N(0, I)` on the device and dtype of ``like``."""
        return torch.randn(n, self.z_dim, generator=generator, device=like.device, dtype=like.dtype)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decoded prior draws ``(n, x_dim)``."""
        p = next(self.parameters())
        return self.decode(self.prior_sample(n, p, generator))


@dataclass(frozen=True)
class LatentPenalty:
    """One row of the penalty registry: ``fn(z, z_prior, generator) -> scalar``."""

    name: str
    fn: Callable[..., torch.Tensor]
    description: str


def _mmd_penalty(z, z_prior, generator=None, *, sigma2: float = 1.0, scales: Sequence[float] = DEFAULT_SCALES,
                 n_projections: int = 50):
    return mmd2(z, z_prior, "imq", unbiased=True, sigma2=sigma2, scales=scales)


def _sw_penalty(z, z_prior, generator=None, *, sigma2: float = 1.0, scales: Sequence[float] = DEFAULT_SCALES,
                n_projections: int = 50):
    return sliced_wasserstein(z, z_prior, n_projections=n_projections, p=2, generator=generator) ** 2


PENALTIES: dict[str, LatentPenalty] = {
    "mmd": LatentPenalty("mmd", _mmd_penalty, "unbiased MMD^2, IMQ kernel with C = 2 d_z sigma^2 s, summed over s"),
    "sw": LatentPenalty("sw", _sw_penalty, "squared sliced 2-Wasserstein distance, n_projections directions"),
}


def latent_penalty(z: torch.Tensor, z_prior: torch.Tensor, kind: str = "mmd", *, generator=None,
                   sigma2: float = 1.0, scales: Sequence[float] = DEFAULT_SCALES, n_projections: int = 50
                   ) -> torch.Tensor:
    r"""Sample estimate of :math:`\mathcal D_Z(Q_Z, P_Z)` from codes ``z`` and prior draws ``z_prior`` ``(B, d_z)``.

    ``kind="mmd"``: :func:`gencore.ot.mmd2` (unbiased) with the IMQ kernel, :math:`C = 2 d_z\sigma^2 s`
    over ``scales`` (Tolstikhin et al. 2017). ``kind="sw"``: :math:`SW_2^2` with ``n_projections``
    random directions drawn with ``generator`` (the sliced-Wasserstein autoencoder of Kolouri et al.).
    """
    if kind not in PENALTIES:
        raise ValueError(f"kind must be one of {sorted(PENALTIES)}, got {kind!r}")
    return PENALTIES[kind].fn(z, z_prior, generator, sigma2=sigma2, scales=scales, n_projections=n_projections)


def wae_step(model: WAE, optimizer: torch.optim.Optimizer, *, penalty: str = "mmd", lam: float = 10.0,
             generator: torch.Generator | None = None, **penalty_kwargs):
    r"""Step function: minimise :math:`\frac1B\sum_i \|x_i - G(e(x_i))\|^2 + \lambda\,\mathcal D_Z`.

    Logs ``loss``, ``recon`` (mean cost) and ``penalty`` (the sample :math:`\mathcal D_Z`).
    The cost is summed over pixels and not rescaled. The reference code of Tolstikhin et al.
    (``wae.py``, ``reconstruction_loss`` with ``cost='l2sq'``) multiplies it by 0.05, so its MNIST
    setting ``lambda = 10`` corresponds here to ``lam = 10 / 0.05 = 200`` (chapter "Wasserstein
    and adversarial autoencoders").
    """
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {sorted(PENALTIES)}, got {penalty!r}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        z = model.encode(batch, generator)
        recon = model.reconstruction_cost(batch, z).mean()
        pen = latent_penalty(z, model.prior_sample(len(batch), batch, generator), penalty, generator=generator,
                             **penalty_kwargs)
        loss = recon + lam * pen
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach(), "recon": recon.detach(), "penalty": pen.detach()}

    return step


def _discriminator_loss(discriminator: nn.Module, z_prior: torch.Tensor, z_codes: torch.Tensor) -> torch.Tensor:
    # the GAN logistic loss in latent space: prior draws are "real", codes are "fake"
    return discriminator_loss(discriminator(z_prior), discriminator(z_codes.detach()))


def wae_gan_step(model: WAE, discriminator: nn.Module, opt_ae: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                 *, lam: float = 1.0, generator: torch.Generator | None = None):
    r"""WAE-GAN step: one latent-discriminator update, then one autoencoder update.

    The discriminator :math:`D(z)` (a logit) separates :math:`P_Z` from :math:`Q_Z`; the
    autoencoder minimises :math:`\frac1B\sum\|x - G(e(x))\|^2 + \lambda\,\frac1B\sum -\log\sigma(D(e(x)))`.
    Logs ``recon``, ``d_loss`` and ``penalty`` (the encoder's adversarial term).
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        z = model.encode(batch, generator)
        d_loss = _discriminator_loss(discriminator, model.prior_sample(len(batch), batch, generator), z)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        recon = model.reconstruction_cost(batch, z).mean()
        for p in discriminator.parameters():
            p.requires_grad_(False)
        adv = generator_loss(discriminator(z), "non_saturating")
        for p in discriminator.parameters():
            p.requires_grad_(True)
        loss = recon + lam * adv
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        return {"recon": recon.detach(), "d_loss": d_loss.detach(), "penalty": adv.detach()}

    return step


def aae_step(model: WAE, discriminator: nn.Module, opt_recon: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
             opt_enc: torch.optim.Optimizer, *, generator: torch.Generator | None = None):
    r"""Adversarial autoencoder step (Makhzani et al. 2015): three phases on the same minibatch.

    1. reconstruction: encoder and decoder minimise :math:`\frac1B\sum\|x - G(z)\|^2`, :math:`z\sim q(z|x)`;
    2. regularisation, discriminator: :math:`-\log\sigma(D(z_p)) - \log(1-\sigma(D(z)))`, :math:`z_p\sim P_Z`;
    3. regularisation, encoder (the "generator" of the latent GAN): :math:`-\log\sigma(D(z))`.

    ``opt_recon`` holds encoder and decoder parameters, ``opt_enc`` the encoder's only.
    Logs ``recon``, ``d_loss`` and ``penalty`` (phase-3 loss).
    """

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        recon = model.reconstruction_cost(batch, generator=generator).mean()
        opt_recon.zero_grad(set_to_none=True)
        recon.backward()
        opt_recon.step()

        z = model.encode(batch, generator)
        d_loss = _discriminator_loss(discriminator, model.prior_sample(len(batch), batch, generator), z)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        for p in discriminator.parameters():
            p.requires_grad_(False)
        adv = generator_loss(discriminator(z), "non_saturating")
        for p in discriminator.parameters():
            p.requires_grad_(True)
        opt_enc.zero_grad(set_to_none=True)
        adv.backward()
        opt_enc.step()
        return {"recon": recon.detach(), "d_loss": d_loss.detach(), "penalty": adv.detach()}

    return step


def prior_moment_w2(z: torch.Tensor) -> torch.Tensor:
    r"""W2 between the Gaussian with the codes' mean and covariance and the prior :math:`\mathcal N(0, I)`.

    .. math::
        \Big(\|\hat\mu\|^2 + \operatorname{tr}\big(\hat\Sigma + I - 2\hat\Sigma^{1/2}\big)\Big)^{1/2},

    with :math:`\hat\mu`, :math:`\hat\Sigma` the sample mean and covariance of ``z`` ``(n, d)``, ``n > d``
    (the Fréchet distance of the first two moments). It is 0 when the aggregate posterior has the
    prior's moments, and no WAE penalty optimises it, so it compares models trained with different
    :math:`\mathcal D_Z` on an equal footing (chapter "Wasserstein and adversarial autoencoders").
    Computed in float64; returns a scalar tensor on the device of ``z``.
    """
    if not isinstance(z, torch.Tensor) or z.dim() != 2:
        raise ValueError(f"z must be a tensor of shape (n, d), got "
                         f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__}")
    n, d = z.shape
    if n <= d:
        raise ValueError(f"z needs more rows than columns to estimate a covariance, got shape {(n, d)}")
    z = z.detach().to(torch.float64)
    eye = torch.eye(d, dtype=torch.float64, device=z.device)
    return gaussian_w2(z.mean(0), torch.cov(z.T), torch.zeros(d, dtype=torch.float64, device=z.device), eye)
