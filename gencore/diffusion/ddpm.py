r"""DDPM: the ε-prediction loss and two samplers (ancestral DDPM, deterministic DDIM).

A network ``eps_model(x_t, t)`` (``t`` an integer tensor ``(B,)`` in 1..T) predicts the noise in
:math:`x_t = \sqrt{\bar\alpha_t} x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon`. The simplified loss of
Ho et al. (2020) is :math:`\mathbb E_{t, x_0, \varepsilon} \|\varepsilon - \varepsilon_\theta(x_t, t)\|^2`;
the ELBO's KL terms are the same quantity with a weight per t. The noise predictor is a scaled
score: :math:`\nabla_{x_t} \log q(x_t) = -\mathbb E[\varepsilon \mid x_t] / \sqrt{1 - \bar\alpha_t}`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from gencore._validate import positive_int

from gencore.diffusion.schedules import NoiseSchedule

__all__ = ["eps_loss", "predict_x0", "eps_to_score", "ddpm_sample", "ddim_sample"]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]




def eps_loss(eps_model: EpsModel, x0: torch.Tensor, schedule: NoiseSchedule, *,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The simplified DDPM loss on a batch: t uniform on 1..T, one ε per row; a scalar."""
    t = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    xt = schedule.q_sample(x0, t, noise)
    return (eps_model(xt, t) - noise).pow(2).flatten(1).sum(-1).mean()


def predict_x0(xt: torch.Tensor, t, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """:math:`\\hat x_0 = (x_t - \\sqrt{1 - \\bar\\alpha_t}\\, \\hat\\varepsilon) / \\sqrt{\\bar\\alpha_t}`."""
    ab = schedule.alpha_bar_at(t, xt)
    return (xt - (1 - ab).sqrt() * eps) / ab.sqrt()


def eps_to_score(eps: torch.Tensor, t, schedule: NoiseSchedule) -> torch.Tensor:
    """The score of :math:`q(x_t)` from the optimal noise predictor: :math:`-\\varepsilon / \\sqrt{1 - \\bar\\alpha_t}`."""
    return -eps / (1 - schedule.alpha_bar_at(t, eps)).sqrt()


@torch.no_grad()
def ddpm_sample(eps_model: EpsModel, shape, schedule: NoiseSchedule, *, generator: torch.Generator | None = None,
                device=None, dtype=torch.float32, sigma: str = "beta", progress: bool = False) -> torch.Tensor:
    r"""Ancestral sampling :math:`x_T \sim \mathcal N(0, I) \to x_0`, T network calls.

    .. math:: x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\hat\varepsilon\Big) + \sigma_t z,

    with :math:`\sigma_t^2 = \beta_t` (``sigma="beta"``) or :math:`\tilde\beta_t` (``"posterior"``), and no noise at t = 1.
    """
    if sigma not in ("beta", "posterior"):
        raise ValueError(f"sigma must be 'beta' or 'posterior', got {sigma!r}")
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    for t in tqdm(range(schedule.T, 0, -1), desc="DDPM sampling", disable=not progress, leave=False):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = eps_model(x, tt)
        beta, ab = schedule.betas[t - 1].item(), schedule.alpha_bar[t - 1].item()
        x = (x - beta / (1 - ab) ** 0.5 * eps) / (1 - beta) ** 0.5
        if t > 1:
            ab_prev = schedule.alpha_bar[t - 2].item()
            var = beta if sigma == "beta" else (1 - ab_prev) / (1 - ab) * beta
            x = x + var ** 0.5 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x


@torch.no_grad()
def ddim_sample(eps_model: EpsModel, shape, schedule: NoiseSchedule, steps: int, *, eta: float = 0.0,
                generator: torch.Generator | None = None, device=None, dtype=torch.float32,
                progress: bool = False) -> torch.Tensor:
    r"""DDIM (Song et al. 2021) on ``steps`` evenly spaced time steps; ``eta = 0`` is deterministic.

    .. math::
        x_{s} = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1 - \bar\alpha_s - \sigma^2}\,\hat\varepsilon + \sigma z, \quad
        \sigma = \eta \sqrt{\tfrac{1-\bar\alpha_s}{1-\bar\alpha_t}\big(1 - \tfrac{\bar\alpha_t}{\bar\alpha_s}\big)}.
    """
    positive_int(steps, "steps")
    if steps > schedule.T:
        raise ValueError(f"steps must be at most T = {schedule.T}, got {steps}")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    ts = torch.linspace(schedule.T, 1, steps).round().long().unique_consecutive().tolist()
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    for i, t in enumerate(tqdm(ts, desc="DDIM sampling", disable=not progress, leave=False)):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = eps_model(x, tt)
        ab = schedule.alpha_bar[t - 1].item()
        x0 = (x - (1 - ab) ** 0.5 * eps) / ab ** 0.5
        ab_s = schedule.alpha_bar[ts[i + 1] - 1].item() if i + 1 < len(ts) else 1.0
        sig = eta * ((1 - ab_s) / (1 - ab) * (1 - ab / ab_s)) ** 0.5 if i + 1 < len(ts) else 0.0
        x = ab_s ** 0.5 * x0 + max(1 - ab_s - sig ** 2, 0.0) ** 0.5 * eps
        if sig > 0:
            x = x + sig * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x
