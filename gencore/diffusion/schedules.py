r"""Noise schedules and the forward (noising) process of denoising diffusion (Ho et al. 2020).

With :math:`\beta_1, \dots, \beta_T \in (0, 1)`, :math:`\alpha_t = 1 - \beta_t` and
:math:`\bar\alpha_t = \prod_{s \le t} \alpha_s`,

.. math::
    q(x_t \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_t}\, x_0,\ (1 - \bar\alpha_t) I\big),

    q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I), \quad
    \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1 - \bar\alpha_t} x_0
                + \frac{\sqrt{\alpha_t}\,(1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t} x_t, \quad
    \tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t} \beta_t,

with :math:`\bar\alpha_0 = 1`. Time steps are integers :math:`t \in \{1, \dots, T\}`.
"""
from __future__ import annotations

import math

import torch

__all__ = ["NoiseSchedule", "linear_schedule", "cosine_schedule"]


class NoiseSchedule:
    """A validated schedule: ``betas`` ``(T,)`` in (0, 1), so that ᾱ is strictly decreasing.

    Tensors are float64 on the CPU; every method moves what it returns to its input's device
    and dtype.
    """

    def __init__(self, betas):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten().cpu()
        if betas.numel() < 1:
            raise ValueError("betas must hold at least one step")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie in (0, 1): then alpha_bar is strictly decreasing from 1 towards 0")
        self.betas = betas
        self.alphas = 1 - betas
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        self.T = len(betas)

    @classmethod
    def from_alpha_bar(cls, alpha_bar) -> "NoiseSchedule":
        """The schedule with the given ᾱ_1..ᾱ_T (strictly decreasing, in (0, 1))."""
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64).flatten()
        if not bool(((ab > 0) & (ab < 1)).all()):
            raise ValueError("alpha_bar must lie in (0, 1)")
        prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
        if not bool((ab < prev).all()):
            raise ValueError("alpha_bar must be strictly decreasing in t (each step adds noise)")
        return cls(1 - ab / prev)

    def _t(self, t) -> torch.Tensor:
        t = torch.as_tensor(t)
        if t.is_floating_point():
            if not bool((t == t.round()).all()):
                raise ValueError("t must hold integer time steps in [1, T]")
            t = t.long()
        if not bool(((t >= 1) & (t <= self.T)).all()):
            raise ValueError(f"t must lie in [1, T] = [1, {self.T}], got values in "
                             f"[{int(t.min())}, {int(t.max())}]")
        return t.cpu()

    def _at(self, values: torch.Tensor, t, like: torch.Tensor) -> torch.Tensor:
        """values[t - 1] shaped to broadcast against ``like`` (batch first)."""
        v = values[self._t(t) - 1].to(like.device, like.dtype)
        return v.reshape(v.shape + (1,) * (like.ndim - v.ndim))

    def alpha_bar_at(self, t, like: torch.Tensor) -> torch.Tensor:
        return self._at(self.alpha_bar, t, like)

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """:math:`x_t = \\sqrt{\\bar\\alpha_t} x_0 + \\sqrt{1 - \\bar\\alpha_t}\\, \\varepsilon`."""
        ab = self.alpha_bar_at(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t):
        """Mean and variance of :math:`q(x_{t-1} \\mid x_t, x_0)` (variance broadcastable)."""
        t = self._t(t)
        ab = self.alpha_bar_at(t, x0)
        ab_prev = self._at(torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar])[:-1].clone(), t, x0)
        beta = self._at(self.betas, t, x0)
        alpha = 1 - beta
        mean = ab_prev.sqrt() * beta / (1 - ab) * x0 + alpha.sqrt() * (1 - ab_prev) / (1 - ab) * xt
        return mean, (1 - ab_prev) / (1 - ab) * beta


def linear_schedule(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> NoiseSchedule:
    """β linear from ``beta_1`` to ``beta_T`` (Ho et al. 2020: 1e-4 to 0.02 over T = 1000)."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive integer, got {T!r}")
    return NoiseSchedule(torch.linspace(beta_1, beta_T, T, dtype=torch.float64))


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """ᾱ(t) = f(t)/f(0), f(t) = cos²(π/2 · (t/T + s)/(1 + s)) (Nichol & Dhariwal 2021), β ≤ max_beta."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive integer, got {T!r}")
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    betas = (1 - ab[1:] / ab[:-1]).clamp(max=max_beta).clamp_min(1e-12)
    return NoiseSchedule(betas)
