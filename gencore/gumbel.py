r"""The Gumbel-max trick and its Gumbel-softmax (Concrete) relaxation.

See chapter "Discrete latents: Gumbel-softmax" ({prf:ref} ``prop-gumbel-max``,
``prop-gumbel-limits``).

Gumbel-max: with :math:`g_k = -\log(-\log u_k)`, :math:`u_k \sim U(0, 1)` i.i.d.,

.. math:: \arg\max_k (\ell_k + g_k) \sim \mathrm{Cat}(\mathrm{softmax}(\ell)).

Gumbel-softmax with temperature :math:`\tau > 0` replaces the arg max by a softmax:

.. math:: y_k = \frac{\exp((\ell_k + g_k)/\tau)}{\sum_j \exp((\ell_j + g_j)/\tau)}.

Every function follows the device and dtype of ``logits``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gumbel_noise", "gumbel_max_sample", "gumbel_softmax", "tau_schedule", "kl_categorical_uniform"]


def _check_logits(logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point tensor of shape (..., K)")
    if logits.ndim == 0 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape (..., K) with K >= 1, got {tuple(logits.shape)}")


def gumbel_noise(shape: torch.Size | tuple[int, ...], *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Standard Gumbel noise :math:`g = -\log(-\log u)`, :math:`u \sim U(0,1)`, finite everywhere.

    ``u`` is clamped to ``[tiny, 1 - eps]`` of ``dtype`` so that ``g`` is never infinite.
    """
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    info = torch.finfo(dtype)
    u = u.clamp(info.tiny, 1.0 - info.eps)
    return -torch.log(-torch.log(u))


def gumbel_max_sample(logits: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Exact categorical samples by the Gumbel-max trick: :math:`\arg\max_k(\ell_k + g_k)`.

    Parameters
    ----------
    logits : Tensor ``(..., K)``, unnormalised log-probabilities.

    Returns
    -------
    Tensor ``(...,)`` of int64 class indices.
    """
    _check_logits(logits)
    g = gumbel_noise(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    return torch.argmax(logits + g, dim=-1)


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool = False, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    r"""A Gumbel-softmax (Concrete) sample, optionally straight-through.

    .. math:: y = \mathrm{softmax}((\ell + g) / \tau)

    Parameters
    ----------
    logits : Tensor ``(..., K)``
    tau : float
        Temperature, > 0. As :math:`\tau \to 0` the sample tends to the one-hot Gumbel-max
        sample; as :math:`\tau \to \infty` it tends to the uniform vector :math:`1/K`.
    hard : bool
        Straight-through: the forward value is the one-hot vector of :math:`\arg\max_k y_k`
        (an exact categorical sample), the gradient is that of the relaxed ``y``.
    generator : torch.Generator, optional
        On ``logits.device``.

    Returns
    -------
    Tensor ``(..., K)``: rows on the probability simplex (one-hot rows when ``hard``).
    """
    _check_logits(logits)
    if isinstance(tau, torch.Tensor):
        tau = float(tau)
    if not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau must be a positive finite temperature, got {tau!r}")
    g = gumbel_noise(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    y = F.softmax((logits + g) / tau, dim=-1)
    if not hard:
        return y
    one_hot = F.one_hot(y.argmax(-1), logits.shape[-1]).to(y.dtype)
    return one_hot - y.detach() + y


def tau_schedule(step: int, rate: float, tau_min: float = 0.5) -> float:
    r"""Annealed temperature :math:`\tau_t = \max(\tau_{\min}, \exp(-r t))` (Jang et al., 2016)."""
    if rate < 0 or tau_min <= 0:
        raise ValueError(f"rate must be >= 0 and tau_min > 0, got rate={rate!r}, tau_min={tau_min!r}")
    return max(tau_min, math.exp(-rate * step))


def kl_categorical_uniform(logits: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{KL}(\mathrm{Cat}(\mathrm{softmax}\,\ell) \,\|\, \mathrm{Uniform}(K))
    = \sum_k q_k \log q_k + \log K`, summed over all but the last dimension of each row.

    Parameters
    ----------
    logits : Tensor ``(B, ..., K)``: ``B`` rows of independent categorical variables.

    Returns
    -------
    Tensor ``(B,)``, in nats, >= 0.
    """
    _check_logits(logits)
    logq = F.log_softmax(logits, dim=-1)
    kl = (logq.exp() * logq).sum(-1) + math.log(logits.shape[-1])
    return kl.reshape(kl.shape[0], -1).sum(-1) if kl.ndim > 1 else kl
