r"""Score matching and Langevin dynamics (Hyvärinen 2005; Vincent 2011; Song & Ermon 2019).

- Denoising score matching: for :math:`\tilde x = x + \sigma \varepsilon`,
  :math:`\mathbb E\,\|s(\tilde x) + \varepsilon / \sigma\|^2` has the same minimiser as the explicit
  objective :math:`\mathbb E\,\|s(\tilde x) - \nabla \log q_\sigma(\tilde x)\|^2` (they differ by a
  constant), where :math:`q_\sigma` is the data convolved with :math:`\mathcal N(0, \sigma^2 I)`.
- Langevin dynamics :math:`x \leftarrow x + \tfrac{\delta}{2} \nabla \log p(x) + \sqrt{\delta}\, z`
  samples :math:`p` as :math:`\delta \to 0` and the number of steps grows, but mixes slowly between
  separated modes; annealing over noise levels :math:`\sigma_1 > \dots > \sigma_L` fixes that.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from gencore._validate import positive_int

__all__ = ["dsm_loss", "langevin", "annealed_langevin", "mixture_log_prob", "mixture_score"]




def dsm_loss(score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, sigma: float, *,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising score matching at one noise level, weighted by σ²: ``mean ‖σ s(x̃) + ε‖²``."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (sigma * score_fn(x + sigma * eps) + eps).pow(2).flatten(1).sum(-1).mean()


@torch.no_grad()
def langevin(score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, step_size: float, n_steps: int, *,
             generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Unadjusted Langevin dynamics from ``x`` (the chains' starting points), ``n_steps`` steps."""
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    positive_int(n_steps, "n_steps")
    for _ in tqdm(range(n_steps), desc="Langevin", disable=not progress, leave=False):
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + 0.5 * step_size * score_fn(x) + step_size ** 0.5 * z
    return x


@torch.no_grad()
def annealed_langevin(score_fn: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor,
                      sigmas: Sequence[float], steps_per_level: int, eps: float = 2e-5, *,
                      generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """Annealed Langevin (Song & Ermon 2019): step δ_i = eps σ_i² / σ_L² at level σ_i, large to small."""
    sigmas = [float(s) for s in sigmas]
    if not sigmas or any(s <= 0 for s in sigmas) or any(a <= b for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"sigmas must be positive and strictly decreasing, got {sigmas}")
    for s in tqdm(sigmas, desc="annealed Langevin", disable=not progress, leave=False):
        x = langevin(lambda v: score_fn(v, s), x, eps * s ** 2 / sigmas[-1] ** 2, steps_per_level, generator=generator)
    return x


def _mixture_args(x, weights, means, stds):
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    m = torch.as_tensor(means, dtype=x.dtype, device=x.device)
    s = torch.as_tensor(stds, dtype=x.dtype, device=x.device)
    if m.ndim != 2 or m.shape[1] != x.shape[-1]:
        raise ValueError(f"means must have shape (K, {x.shape[-1]}), got {tuple(m.shape)}")
    if w.shape != (m.shape[0],) or s.shape != (m.shape[0],):
        raise ValueError("weights and stds must have one entry per component (K,)")
    if not bool((s > 0).all()):
        raise ValueError("stds must be > 0")
    if not bool((w >= 0).all()) or abs(float(w.sum()) - 1) > 1e-6:
        raise ValueError("weights must be non-negative and sum to 1")
    return w, m, s


def mixture_log_prob(x: torch.Tensor, weights, means, stds) -> torch.Tensor:
    """Log-density of :math:`\\sum_k w_k \\mathcal N(m_k, s_k^2 I)` at ``x`` ``(N, d)``."""
    w, m, s = _mixture_args(x, weights, means, stds)
    d = x.shape[-1]
    sq = (x[:, None, :] - m[None]).pow(2).sum(-1)
    comp = -0.5 * sq / s ** 2 - d * torch.log(s) - 0.5 * d * torch.log(torch.tensor(2 * torch.pi, dtype=x.dtype))
    return torch.logsumexp(torch.log(w) + comp, dim=1)


def mixture_score(x: torch.Tensor, weights, means, stds) -> torch.Tensor:
    """Exact score :math:`\\nabla_x \\log p(x) = \\sum_k r_k(x)\\,(m_k - x)/s_k^2` (responsibilities r)."""
    w, m, s = _mixture_args(x, weights, means, stds)
    d = x.shape[-1]
    sq = (x[:, None, :] - m[None]).pow(2).sum(-1)
    r = torch.softmax(torch.log(w) - 0.5 * sq / s ** 2 - d * torch.log(s), dim=1)
    return (r[..., None] * (m[None] - x[:, None, :]) / (s ** 2)[None, :, None]).sum(1)
