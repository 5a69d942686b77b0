"""Wasserstein GANs and generators trained on sample distances.

Chapter "WGAN and its relatives" ({prf:ref} ``prop-wgan-clip-lipschitz``, ``prop-wgan-gp-critic-1d``,
``cor-wgan-gp-scaled``).

- :func:`critic_loss`, :func:`generator_loss`, :func:`w1_estimate`: the WGAN objective
  :math:`\\max_{\\|f\\|_L\\le 1} \\E_P f - \\E_Q f` (Arjovsky et al. 2017), written as losses
  to minimise.
- :func:`clip_weights`: the original Lipschitz constraint (weight clipping).
- :class:`WGANConfig`: the hyper-parameters; :meth:`WGANConfig.gp` gives Gulrajani et al.
  (2017) (lambda = 10, n_critic = 5, Adam(1e-4, betas=(0, 0.9))), :meth:`WGANConfig.clip`
  Arjovsky et al. (2017) (c = 0.01, n_critic = 5, RMSProp(5e-5)).
- :func:`critic_step`: one critic update on a (real, fake) pair.
- :func:`wgan_step`: a step function for :func:`gencore.train.fit` doing ``n_critic`` critic
  updates and one generator update.
- :func:`distance_step`: a step function training a generator directly on a sample distance
  (energy distance, MMD, sliced Wasserstein) with no critic.
- :func:`gp_critic_1d`: the best gradient-penalised critic between two 1-D samples, in closed
  form (its slope, the density of the interpolates, and its estimate of :math:`W_1`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from typing import NamedTuple

import torch
from torch import nn

from gencore.ot.sample import gradient_penalty

__all__ = [
    "WGANConfig",
    "clip_weights",
    "critic_loss",
    "critic_step",
    "distance_step",
    "generator_loss",
    "GPCritic1D",
    "gp_critic_1d",
    "make_optimizer",
    "w1_estimate",
    "wgan_step",
]


def _scores(name: str, s: torch.Tensor) -> torch.Tensor:
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(s).__name__}")
    if s.dim() == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.dim() != 1 or s.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n,) or (n, 1) with n >= 1, got {tuple(s.shape)}")
    return s


def w1_estimate(critic_real: torch.Tensor, critic_fake: torch.Tensor) -> torch.Tensor:
    r"""The critic's estimate of :math:`W_1`: :math:`\frac1n\sum f(x_i) - \frac1m\sum f(\tilde x_j)`.

    By Kantorovich-Rubinstein duality it is <= W_1 between the two empirical measures when
    ``f`` is 1-Lipschitz. ``critic_real`` (n,) or (n, 1), ``critic_fake`` (m,) or (m, 1).
    """
    return _scores("critic_real", critic_real).mean() - _scores("critic_fake", critic_fake).mean()


def critic_loss(critic_real: torch.Tensor, critic_fake: torch.Tensor) -> torch.Tensor:
    r"""Critic loss to minimise: :math:`\E_Q f - \E_P f = -\,` :func:`w1_estimate` (no penalty)."""
    return -w1_estimate(critic_real, critic_fake)


def generator_loss(critic_fake: torch.Tensor) -> torch.Tensor:
    r"""Generator loss to minimise: :math:`-\E_{z} f(G(z))` (the only term of the estimate that
    depends on the generator)."""
    return -_scores("critic_fake", critic_fake).mean()


@torch.no_grad()
def clip_weights(module: nn.Module, c: float = 0.01) -> None:
    """Clamp every parameter of ``module`` to ``[-c, c]`` in place (Arjovsky et al. 2017).

    The critic is then K-Lipschitz for some K that depends on ``c`` and the architecture, so
    it estimates :math:`K\\cdot W_1`, not :math:`W_1`.
    """
    if not c > 0:
        raise ValueError(f"c must be > 0, got {c!r}")
    for p in module.parameters():
        p.clamp_(-c, c)


@dataclass(frozen=True)
class WGANConfig:
    """Hyper-parameters of a WGAN.

    ``penalty``: ``"gp"`` (gradient penalty, weight ``lam``) or ``"clip"`` (clip to ``c``).
    ``optimizer``: ``"adam"`` (lr, betas) or ``"rmsprop"`` (lr).
    """

    penalty: str = "gp"
    n_critic: int = 5
    lam: float = 10.0
    c: float = 0.01
    optimizer: str = "adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)

    def __post_init__(self):
        if self.penalty not in ("gp", "clip"):
            raise ValueError(f"penalty must be 'gp' or 'clip', got {self.penalty!r}")
        if isinstance(self.n_critic, bool) or not isinstance(self.n_critic, int) or self.n_critic < 1:
            raise ValueError(f"n_critic must be a positive integer, got {self.n_critic!r}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam!r}")
        if not self.c > 0:
            raise ValueError(f"c must be > 0, got {self.c!r}")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    @classmethod
    def gp(cls, **kw) -> "WGANConfig":
        """WGAN-GP defaults of Gulrajani et al. (2017): lam=10, n_critic=5, Adam(1e-4, (0, 0.9))."""
        return cls(**{"penalty": "gp", "n_critic": 5, "lam": 10.0, "optimizer": "adam", "lr": 1e-4,
                      "betas": (0.0, 0.9), **kw})

    @classmethod
    def clip(cls, **kw) -> "WGANConfig":
        """WGAN defaults of Arjovsky et al. (2017): c=0.01, n_critic=5, RMSProp(5e-5)."""
        return cls(**{"penalty": "clip", "n_critic": 5, "c": 0.01, "optimizer": "rmsprop", "lr": 5e-5, **kw})


def make_optimizer(params, config: WGANConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``config`` for ``params``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=config.betas)
    return torch.optim.RMSprop(params, lr=config.lr)


def critic_step(critic: nn.Module, optimizer: torch.optim.Optimizer, config: WGANConfig,
                generator: torch.Generator | None = None) -> Callable[[torch.Tensor, torch.Tensor], dict]:
    r"""One critic update on ``(real, fake)``; returns ``{"w1": estimate, "gp": penalty}``.

    Loss (``penalty="gp"``): :math:`\E_Q f - \E_P f + \lambda\,\E(\|\nabla f(\hat x)\|-1)^2`;
    (``"clip"``): :math:`\E_Q f - \E_P f`, then :func:`clip_weights`. ``generator`` seeds the
    interpolation weights of the penalty (on the device of the data).
    """

    def update(real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        fake = fake.detach()
        w1 = w1_estimate(critic(real), critic(fake))
        loss = -w1
        gp = torch.zeros((), device=real.device, dtype=real.dtype)
        if config.penalty == "gp" and config.lam > 0:
            gp = gradient_penalty(critic, real, fake, generator=generator)
            loss = loss + config.lam * gp
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if config.penalty == "clip":
            clip_weights(critic, config.c)
        return {"w1": w1.detach(), "gp": gp.detach()}

    return update


def _sample_noise(n: int, z_dim: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(n, z_dim, generator=generator, device=like.device, dtype=like.dtype)


def wgan_step(gen: nn.Module, critic: nn.Module, z_dim: int, config: WGANConfig = WGANConfig(),
              generator: torch.Generator | None = None):
    r"""Step function for :func:`gencore.train.fit`: ``n_critic`` critic updates, one generator update.

    The minibatch that ``fit`` passes is split into ``n_critic`` equal chunks, one per critic
    update (so call ``fit`` with ``batch_size = n_critic * m``); each critic update sees ``m``
    fresh real points, as in Algorithm 1 of both papers. The generator update uses ``m`` new
    noise vectors. Logs ``w1`` (mean critic estimate over the critic updates), ``gp`` and
    ``g_loss``. The optimisers (from ``config``) are exposed as ``step.opt_g``, ``step.opt_c``.
    """
    if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim <= 0:
        raise ValueError(f"z_dim must be a positive integer, got {z_dim!r}")
    opt_g = make_optimizer(gen.parameters(), config)
    opt_c = make_optimizer(critic.parameters(), config)
    update_critic = critic_step(critic, opt_c, config, generator)

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(batch, torch.Tensor) or batch.shape[0] < config.n_critic:
            raise ValueError(f"the batch must be a tensor with at least n_critic={config.n_critic} rows")
        chunks = batch.chunk(config.n_critic)
        w1s, gps = [], []
        for real in chunks:
            with torch.no_grad():
                fake = gen(_sample_noise(real.shape[0], z_dim, real, generator))
            logs = update_critic(real, fake)
            w1s.append(logs["w1"])
            gps.append(logs["gp"])
        m = chunks[0].shape[0]
        for p in critic.parameters():
            p.requires_grad_(False)
        g_loss = generator_loss(critic(gen(_sample_noise(m, z_dim, batch, generator))))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        for p in critic.parameters():
            p.requires_grad_(True)
        return {"w1": torch.stack(w1s).mean(), "gp": torch.stack(gps).mean(), "g_loss": g_loss.detach()}

    step.opt_g, step.opt_c = opt_g, opt_c
    return step


def distance_step(gen: nn.Module, distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z_dim: int,
                  optimizer: torch.optim.Optimizer, generator: torch.Generator | None = None):
    r"""Step function for :func:`gencore.train.fit` minimising ``distance(real, G(z))`` over G.

    No critic: the distance (e.g. :func:`gencore.ot.energy_distance`, :func:`gencore.ot.mmd2`)
    is estimated from the minibatch and as many generated points. Logs ``{"distance": ...}``.
    """
    if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim <= 0:
        raise ValueError(f"z_dim must be a positive integer, got {z_dim!r}")

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        fake = gen(_sample_noise(batch.shape[0], z_dim, batch, generator))
        loss = distance(batch, fake)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"distance": loss.detach()}

    return step


class GPCritic1D(NamedTuple):
    r"""The best gradient-penalised critic between two 1-D samples (see :func:`gp_critic_1d`).

    ``knots`` (K+1,) are the sorted distinct sample points; on the interval ``[knots[k], knots[k+1])``
    the CDF gap ``cdf_gap[k]`` :math:`= F_Q - F_P`, the interpolate density ``density[k]``
    :math:`= \rho` and the optimal slope ``slope[k]`` :math:`= f'` are constant (all (K,)).
    ``estimate`` is :math:`\E_P f - \E_Q f` of that critic, ``w1`` the exact :math:`W_1`.
    """

    knots: torch.Tensor
    cdf_gap: torch.Tensor
    density: torch.Tensor
    slope: torch.Tensor
    estimate: torch.Tensor
    w1: torch.Tensor


def _samples_1d(name: str, v) -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.dim() == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.dim() != 1 or v.shape[0] == 0:
        raise ValueError(f"{name} must be a 1-D sample of shape (n,) or (n, 1) with n >= 1, got {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name} must hold finite values")
    return v.to(torch.float64)


def gp_critic_1d(x: torch.Tensor, y: torch.Tensor, lam: float = 10.0, pairing: str = "all") -> GPCritic1D:
    r"""Best critic for the WGAN-GP objective between two 1-D samples, in closed form.

    With :math:`P` the empirical measure of ``x`` (CDF :math:`F_P`), :math:`Q` that of ``y``
    (:math:`F_Q`) and :math:`
ho` the density of the interpolates
    :math:`\hat x = \epsilon X + (1-\epsilon) Y`, :math:`\epsilon\sim U[0, 1]`, :math:`X\sim P`,
    :math:`Y\sim Q` independent, the penalised objective

    .. math::
        J(f) = \E_P f - \E_Q f - \lambda\,\E_
ho(|f'| - 1)^2
             = \int f'\,(F_Q - F_P) - \lambda\int 
ho\,(|f'| - 1)^2

    is maximised pointwise by :math:`f' = \operatorname{sign}(F_Q - F_P)\,
    ig(1 + |F_Q - F_P|/(2\lambda
ho)ig)`, whose estimate is

    .. math::
        \E_P f - \E_Q f = W_1(P, Q) + rac{1}{2\lambda}\int rac{(F_P - F_Q)^2}{
ho}
        \;\ge\; W_1 + rac{W_1^2}{2\lambda}.

    Both CDFs and :math:`
ho` (a mixture of the uniform densities on the segments between
    every pair :math:`x_i, y_j`) are piecewise constant between the sorted sample points, so
    the integrals are exact sums. Chapter "WGAN and its relatives",
    {prf:ref} ``prop-wgan-gp-critic-1d``.

    Parameters
    ----------
    x : tensor (n,) or (n, 1)
        Sample of :math:`P` (the "real" data).
    y : tensor (m,) or (m, 1)
        Sample of :math:`Q`.
    lam : float
        Penalty weight :math:`\lambda > 0`.
    pairing : {"all", "matched"}
        Which pairs the penalty interpolates between: ``"all"``, every :math:`(x_i, y_j)` with
        weight :math:`1/(nm)` (independent real and fake minibatches); ``"matched"``, only
        :math:`(x_i, y_i)` with weight :math:`1/n` (``n == m``; a critic trained on fixed
        full batches whose rows are permuted together, as :func:`gencore.train.fit` does).

    Returns
    -------
    GPCritic1D
        Knots, CDF gap, density, slope on each interval, the estimate and :math:`W_1`
        (float64, on the device of ``x``).

    Examples
    --------
    >>> r = gp_critic_1d(torch.tensor([0.0]), torch.tensor([1.0]), lam=10.0)
    >>> round(float(r.estimate), 6)   # W1 + W1^2 / (2 lambda) with W1 = 1
    1.05
    """
    x, y = _samples_1d("x", x), _samples_1d("y", y).to(x.device)
    if not (isinstance(lam, (int, float)) and not isinstance(lam, bool) and lam > 0):
        raise ValueError(f"lam must be a number > 0, got {lam!r}")
    if pairing not in ("all", "matched"):
        raise ValueError(f"pairing must be 'all' or 'matched', got {pairing!r}")
    if pairing == "matched" and len(x) != len(y):
        raise ValueError(f"pairing='matched' needs samples of equal size, got {len(x)} and {len(y)}")
    knots = torch.unique(torch.cat([x, y]))                      # sorted
    lengths = knots.diff()
    left = knots[:-1]
    cdf_p = torch.searchsorted(torch.sort(x).values, left, right=True).to(torch.float64) / len(x)
    cdf_q = torch.searchsorted(torch.sort(y).values, left, right=True).to(torch.float64) / len(y)
    gap = cdf_q - cdf_p
    # density of the interpolates: each pair with x_i != y_j adds (its weight) / |x_i - y_j|
    # on the intervals between them (a difference array over interval indices)
    if pairing == "all":
        lo = torch.minimum(x[:, None], y[None, :]).reshape(-1)
        hi = torch.maximum(x[:, None], y[None, :]).reshape(-1)
        n_pairs = len(x) * len(y)
    else:
        lo, hi, n_pairs = torch.minimum(x, y), torch.maximum(x, y), len(x)
    keep = hi > lo
    lo, hi = lo[keep], hi[keep]
    weight = 1.0 / ((hi - lo) * n_pairs)
    start = torch.searchsorted(knots, lo)
    stop = torch.searchsorted(knots, hi)
    acc = torch.zeros(len(knots) + 1, dtype=torch.float64, device=x.device)
    acc.index_add_(0, start, weight)
    acc.index_add_(0, stop, -weight)
    density = torch.cumsum(acc, 0)[: len(lengths)]
    active = gap != 0                                            # rho > 0 wherever the CDFs differ
    ratio = torch.where(active, gap.abs() / (2 * lam * torch.where(active, density, torch.ones_like(density))),
                        torch.zeros_like(gap))
    slope = torch.sign(gap) * (1 + ratio)
    w1 = (gap.abs() * lengths).sum()
    estimate = (slope * gap * lengths).sum()
    return GPCritic1D(knots, gap, density, slope, estimate, w1)
