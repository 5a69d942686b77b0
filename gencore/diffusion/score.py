r"""Score matching and Langevin dynamics (Hyvärinen 2005; Vincent 2011; Song & Ermon 2019).

Chapter "Score matching and Langevin dynamics" (``book/15_score_matching``). The *score* of a
density is :math:`\nabla_x \log p(x)`; it does not depend on the normalising constant. With
:math:`s` a model of it, the objectives of the chapter (written without Hyvärinen's factor
:math:`\tfrac12`, which changes no minimiser) are

.. math::

    J_{\mathrm{ESM}}(s) &= \mathbb E_p\,\|s(x) - \nabla \log p(x)\|^2, \\
    J_{\mathrm{ISM}}(s) &= \mathbb E_p\,[\|s(x)\|^2 + 2 \operatorname{tr} \nabla_x s(x)]
        = J_{\mathrm{ESM}}(s) - \mathbb E_p \|\nabla \log p\|^2, \\
    \sigma^2 J_{\mathrm{DSM}}(s) &= \mathbb E\,\|\sigma s(x + \sigma\varepsilon) + \varepsilon\|^2,

computed by :func:`esm_loss` (it needs the true score: for checks only), :func:`ism_loss` and
:func:`ssm_loss` (sliced), :func:`dsm_loss` and :func:`noise_conditional_dsm_loss`.

- Implicit score matching (``thm-score-implicit``): integration by parts removes the unknown score.
- Denoising score matching (``thm-score-dsm``): :math:`\sigma^2 J_{\mathrm{DSM}}` equals the explicit
  objective :math:`\sigma^2 \mathbb E\,\|s(\tilde x) - \nabla \log q_\sigma(\tilde x)\|^2` of the noised
  density :math:`q_\sigma = p * \mathcal N(0, \sigma^2 I)` plus a constant, so both have the same minimiser.
- Langevin dynamics :math:`x \leftarrow x + \tfrac{\delta}{2} \nabla \log p(x) + \sqrt{\delta}\, z`
  (:func:`langevin`) samples :math:`p` as :math:`\delta \to 0` and the number of steps grows, but mixes
  slowly between separated modes; annealing over noise levels :math:`\sigma_1 > \dots > \sigma_L`
  (:func:`annealed_langevin`, :func:`geometric_sigmas`) fixes that.
- Exact scores for checks: Gaussians (:func:`gaussian_score`), Gaussian mixtures (:func:`mixture_score`,
  :func:`mixture_log_prob`, :func:`mixture_sample`) and mixtures convolved with noise
  (:func:`noised_mixture_score`); :func:`score_relative_error` compares a learned field with one of them.

The coding exercises ``gaussian_score`` and ``dsm_target`` are registered at the bottom.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from gencore._validate import positive_int

__all__ = ["dsm_loss", "dsm_target", "noise_conditional_dsm_loss", "esm_loss", "ism_loss", "ssm_loss",
           "langevin", "annealed_langevin", "geometric_sigmas", "gaussian_score",
           "score_relative_error", "mixture_sample", "mixture_log_prob", "mixture_score", "noised_mixture_score"]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- argument checks
def _check_sigma(sigma, name: str = "sigma") -> float:
    if isinstance(sigma, torch.Tensor) and sigma.numel() == 1:
        sigma = float(sigma)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"{name} must be a finite number > 0, got {sigma!r}")
    return float(sigma)


def _check_x(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape (N, D), got "
                        f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N, D >= 1, got {tuple(x.shape)}")
    return x


def _checked_score(out, x: torch.Tensor, what: str = "score_fn") -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{what} must return a tensor of the input's shape {tuple(x.shape)}, got {shape}")
    return out


# --------------------------------------------------------------------------- objectives
def dsm_loss(score_fn: ScoreFn, x: torch.Tensor, sigma: float, *,
             generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Denoising score matching at one noise level, weighted by :math:`\sigma^2` (Vincent 2011).

    .. math:: \sigma^2 J_{\mathrm{DSM}}(s) = \mathbb E_{x, \varepsilon}\,
              \|\sigma\, s(x + \sigma \varepsilon) + \varepsilon\|^2, \qquad \varepsilon \sim \mathcal N(0, I)

    Its minimiser is the score of the noised data :math:`q_\sigma = p * \mathcal N(0, \sigma^2 I)`
    (chapter "Score matching", ``thm-score-dsm``).

    Parameters
    ----------
    score_fn : callable
        ``(N, D) -> (N, D)``, the model of :math:`\nabla \log q_\sigma`.
    x : Tensor ``(N, D)``
        Clean data.
    sigma : float
        Noise level, > 0.
    generator : torch.Generator, optional
        Source of the noise :math:`\varepsilon` (on ``x``'s device).

    Returns
    -------
    Tensor, scalar: the Monte-Carlo mean over the ``N`` rows (one noise draw each).
    """
    sigma = _check_sigma(sigma)
    x = _check_x(x)
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    s = _checked_score(score_fn(x + sigma * eps), x)
    return (sigma * s + eps).pow(2).flatten(1).sum(-1).mean()


def dsm_target(x: torch.Tensor, x_noisy: torch.Tensor, sigma: float) -> torch.Tensor:
    r"""The regression target of denoising score matching, the score of :math:`q_\sigma(\tilde x \mid x)`.

    .. math:: \nabla_{\tilde x} \log \mathcal N(\tilde x; x, \sigma^2 I) = -\frac{\tilde x - x}{\sigma^2}
              = -\frac{\varepsilon}{\sigma}

    Shapes ``(N, D)``; chapter "Score matching", ``thm-score-dsm``.
    """
    sigma = _check_sigma(sigma)
    if not isinstance(x, torch.Tensor) or not isinstance(x_noisy, torch.Tensor) or x.shape != x_noisy.shape:
        raise ValueError("x and x_noisy must be tensors of the same shape, got "
                         f"{getattr(x, 'shape', type(x).__name__)} and {getattr(x_noisy, 'shape', type(x_noisy).__name__)}")
    return -(x_noisy - x) / sigma ** 2


def noise_conditional_dsm_loss(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                               sigmas: Sequence[float], *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The noise-conditional score network objective of Song & Ermon (2019), weights :math:`\lambda(\sigma) = \sigma^2`.

    .. math:: \frac1L \sum_{i=1}^L \sigma_i^2 J_{\mathrm{DSM}}(s(\cdot, \sigma_i); \sigma_i)
              = \mathbb E_{i, x, \varepsilon}\,\|\sigma_i\, s(x + \sigma_i \varepsilon, \sigma_i) + \varepsilon\|^2

    Each row of ``x`` gets one level :math:`\sigma_i`, drawn uniformly from ``sigmas``.

    Parameters
    ----------
    score_fn : callable
        ``score_fn(x_noisy (N, D), sigma (N,)) -> (N, D)``.
    x : Tensor ``(N, D)``
    sigmas : sequence of float
        The noise levels, each > 0.
    generator : torch.Generator, optional
        Draws the levels and the noise (on ``x``'s device).
    """
    x = _check_x(x)
    levels = [_check_sigma(s, "every sigma in sigmas") for s in sigmas] if len(sigmas) else []
    if not levels:
        raise ValueError("sigmas must hold at least one noise level")
    table = torch.tensor(levels, device=x.device, dtype=x.dtype)
    idx = torch.randint(len(levels), (x.shape[0],), generator=generator, device=x.device)
    sig = table[idx]
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    s = _checked_score(score_fn(x + sig[:, None] * eps, sig), x)
    return (sig[:, None] * s + eps).pow(2).sum(-1).mean()


def esm_loss(score_fn: ScoreFn, x: torch.Tensor, true_score_fn: ScoreFn) -> torch.Tensor:
    r"""Explicit score matching (the Fisher divergence), estimated on samples ``x`` of :math:`p`.

    .. math:: J_{\mathrm{ESM}}(s) = \mathbb E_p\,\|s(x) - \nabla \log p(x)\|^2

    It needs the true score ``true_score_fn``, which is unknown in practice: the chapter uses it
    only to check :func:`ism_loss` and :func:`dsm_loss` (``thm-score-implicit``, ``thm-score-dsm``).
    """
    x = _check_x(x)
    s = _checked_score(score_fn(x), x)
    target = _checked_score(true_score_fn(x), x, "true_score_fn")
    return (s - target).pow(2).sum(-1).mean()


def _divergence_terms(score_fn: ScoreFn, x: torch.Tensor, vectors: torch.Tensor | None):
    """(s(x), tr ∇s(x) per row) with the exact trace (vectors None) or vᵀ ∇s v per row."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        s = _checked_score(score_fn(xr), x)
        if not s.requires_grad:             # s does not depend on x (a constant model): zero Jacobian
            return s, torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        if vectors is None:
            rows = [torch.autograd.grad(s[:, i].sum(), xr, create_graph=True, allow_unused=True)[0]
                    for i in range(x.shape[1])]
            tr = sum((r[:, i] if r is not None else torch.zeros_like(x[:, 0])) for i, r in enumerate(rows))
        else:
            tr = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
            for v in vectors:
                (g,) = torch.autograd.grad((s * v).sum(), xr, create_graph=True, allow_unused=True)
                if g is not None:
                    tr = tr + (g * v).sum(-1)
            tr = tr / len(vectors)
        return s, tr


def ism_loss(score_fn: ScoreFn, x: torch.Tensor) -> torch.Tensor:
    r"""Implicit score matching (Hyvärinen 2005), estimated on samples ``x`` of :math:`p`.

    .. math:: J_{\mathrm{ISM}}(s) = \mathbb E_p\big[\|s(x)\|^2 + 2 \operatorname{tr} \nabla_x s(x)\big]
              = J_{\mathrm{ESM}}(s) - \mathbb E_p \|\nabla \log p\|^2

    (chapter "Score matching", ``thm-score-implicit``). The trace of the Jacobian is exact, with one
    backward pass per dimension ``D`` (the graph is kept, so the loss can be trained). ``score_fn``
    must treat rows independently (no batch normalisation).
    """
    x = _check_x(x)
    s, tr = _divergence_terms(score_fn, x, None)
    return (s.pow(2).sum(-1) + 2 * tr).mean()


def ssm_loss(score_fn: ScoreFn, x: torch.Tensor, n_projections: int = 1, *,
             generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Sliced score matching (Song et al. 2019), the variance-reduced form.

    .. math:: J_{\mathrm{SSM}}(s) = \mathbb E_p\,\mathbb E_v\big[\|s(x)\|^2 + 2\, v^\top \nabla_x s(x)\, v\big],
              \qquad v \sim \mathcal N(0, I)

    Since :math:`\mathbb E[v v^\top] = I`, :math:`\mathbb E_v[v^\top A v] = \operatorname{tr} A`: the
    expectation equals :func:`ism_loss`, at the cost of ``n_projections`` backward passes instead of ``D``.
    """
    x = _check_x(x)
    n_projections = positive_int(n_projections, "n_projections")
    v = torch.randn((n_projections, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    s, quad = _divergence_terms(score_fn, x, v)
    return (s.pow(2).sum(-1) + 2 * quad).mean()


def score_relative_error(score_fn: ScoreFn, x: torch.Tensor, true_score_fn: ScoreFn) -> float:
    r"""Relative Fisher divergence :math:`\mathbb E\,\|s - \nabla \log p\|^2 / \mathbb E\,\|\nabla \log p\|^2` on samples ``x``.

    0 for the exact score, about 1 for a model that outputs (nearly) zero, such as an untrained
    network whose output is divided by :math:`\sigma`. Chapter "Score matching": how close a learned
    field is to the exact one. Computed without gradients; returns a float.
    """
    x = _check_x(x)
    with torch.no_grad():
        target = _checked_score(true_score_fn(x), x, "true_score_fn")
        err = (_checked_score(score_fn(x), x) - target).pow(2).sum(-1).mean()
        return float(err / target.pow(2).sum(-1).mean().clamp_min(torch.finfo(x.dtype).tiny))


# --------------------------------------------------------------------------- samplers
@torch.no_grad()
def langevin(score_fn: ScoreFn, x: torch.Tensor, step_size: float, n_steps: int, *,
             generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    r"""Unadjusted Langevin dynamics from ``x`` (the chains' starting points), ``n_steps`` steps.

    .. math:: x_{k+1} = x_k + \tfrac{\delta}{2} \nabla \log p(x_k) + \sqrt{\delta}\, z_k, \qquad z_k \sim \mathcal N(0, I)

    the Euler–Maruyama step of :math:`\mathrm d X = \tfrac12 \nabla \log p(X) \,\mathrm dt + \mathrm d W`,
    whose stationary density is :math:`p` (chapter "Score matching", ``prop-score-langevin-stationary``;
    the bias of a finite step: ``prop-score-ula-gaussian``).

    Parameters
    ----------
    score_fn : callable ``(N, D) -> (N, D)``
    x : Tensor ``(N, D)``
        One row per chain; the noise follows its device and dtype.
    step_size : float
        :math:`\delta > 0`.
    n_steps : int
        > 0.
    generator : torch.Generator, optional
    progress : bool
        Show a ``tqdm.auto`` bar.
    """
    step_size = _check_sigma(step_size, "step_size")
    positive_int(n_steps, "n_steps")
    x = _check_x(x)
    for _ in tqdm(range(n_steps), desc="Langevin", disable=not progress, leave=False):
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + 0.5 * step_size * _checked_score(score_fn(x), x) + step_size ** 0.5 * z
    return x


@torch.no_grad()
def annealed_langevin(score_fn: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor,
                      sigmas: Sequence[float], steps_per_level: int, eps: float = 2e-5, *,
                      generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    At each level :math:`\sigma_i` (large to small), ``steps_per_level`` steps of :func:`langevin` with
    the noise-conditional score :math:`s(\cdot, \sigma_i)` and step :math:`\delta_i = \epsilon\, \sigma_i^2 / \sigma_L^2`.

    Parameters
    ----------
    score_fn : callable
        ``score_fn(x (N, D), sigma: float) -> (N, D)``, a model of :math:`\nabla \log q_{\sigma}`.
    x : Tensor ``(N, D)``
        Starting points (Song & Ermon: uniform noise).
    sigmas : sequence of float
        Strictly decreasing, positive (:func:`geometric_sigmas`).
    steps_per_level : int
        > 0 (:math:`T` in the paper).
    eps : float
        :math:`\epsilon > 0`, the step at the smallest level.
    """
    sigmas = [float(s) for s in sigmas]
    if not sigmas or any(not s > 0 for s in sigmas) or any(a <= b for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"sigmas must be positive and strictly decreasing, got {sigmas}")
    eps = _check_sigma(eps, "eps")
    positive_int(steps_per_level, "steps_per_level")
    for s in tqdm(sigmas, desc="annealed Langevin", disable=not progress, leave=False):
        x = langevin(lambda v: score_fn(v, s), x, eps * s ** 2 / sigmas[-1] ** 2, steps_per_level, generator=generator)
    return x


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> list[float]:
    r"""``n_levels`` noise levels :math:`\sigma_1 = \sigma_{\max} > \dots > \sigma_L = \sigma_{\min}`, a geometric sequence."""
    hi, lo = _check_sigma(sigma_max, "sigma_max"), _check_sigma(sigma_min, "sigma_min")
    n = positive_int(n_levels, "n_levels")
    if n == 1:
        if hi != lo:
            raise ValueError("one level needs sigma_max == sigma_min")
        return [hi]
    if not hi > lo:
        raise ValueError(f"sigma_max must be > sigma_min, got {hi} and {lo}")
    return [hi * (lo / hi) ** (i / (n - 1)) for i in range(n)]


# --------------------------------------------------------------------------- exact scores
def gaussian_score(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    r"""Score of :math:`\mathcal N(m, \Sigma)`: :math:`\nabla_x \log \mathcal N(x; m, \Sigma) = -\Sigma^{-1}(x - m)`.

    ``x`` ``(N, D)``, ``mean`` ``(D,)``, ``cov`` ``(D, D)`` symmetric positive definite. Solved with a
    Cholesky factor (no explicit inverse). Chapter "Score matching", ``def-score-function``.
    """
    x = _check_x(x)
    mean, cov = torch.as_tensor(mean, dtype=x.dtype, device=x.device), torch.as_tensor(cov, dtype=x.dtype, device=x.device)
    d = x.shape[1]
    if mean.shape != (d,) or cov.shape != (d, d):
        raise ValueError(f"mean must have shape ({d},) and cov ({d}, {d}), got {tuple(mean.shape)} and {tuple(cov.shape)}")
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise ValueError("cov must be symmetric positive definite")
    return -torch.cholesky_solve((x - mean).T, chol).T


def _mixture_args(x, weights, means, stds):
    _check_x(x)
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


def mixture_sample(n: int, weights, means, stds, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    r"""``n`` draws ``(n, D)`` from :math:`\sum_k w_k \mathcal N(m_k, s_k^2 I)` (``means`` ``(K, D)``)."""
    n = positive_int(n, "n")
    w, m, s = _mixture_args(torch.empty(1, len(means[0]) if not isinstance(means, torch.Tensor) else means.shape[-1],
                                        dtype=dtype, device=device), weights, means, stds)
    k = torch.multinomial(w, n, replacement=True, generator=generator)
    return m[k] + s[k, None] * torch.randn(n, m.shape[1], generator=generator, dtype=dtype, device=device)


def _mixture_terms(x, weights, means, stds):
    """Differences m_k - x laid out (K, D, N) and the log-weights + log-densities (K, N).

    The (K, ..., N) layout keeps the reductions over K and D on the outer axes, several times
    faster on a CPU than reducing a trailing axis of size K = 2 (Langevin calls this every step)."""
    w, m, s = _mixture_args(x, weights, means, stds)
    d = x.shape[-1]
    diff = m[:, :, None] - x.T[None]                                   # (K, D, N)
    logits = (torch.log(w) - d * torch.log(s) - 0.5 * d * math.log(2 * math.pi))[:, None] \
        - 0.5 * diff.pow(2).sum(1) / (s ** 2)[:, None]                 # (K, N)
    return diff, logits, s


def mixture_log_prob(x: torch.Tensor, weights, means, stds) -> torch.Tensor:
    r"""Log-density of :math:`\sum_k w_k \mathcal N(m_k, s_k^2 I)` at ``x`` ``(N, D)``; returns ``(N,)``."""
    _, logits, _ = _mixture_terms(x, weights, means, stds)
    return torch.logsumexp(logits, dim=0)


def mixture_score(x: torch.Tensor, weights, means, stds) -> torch.Tensor:
    r"""Exact score :math:`\nabla_x \log p(x) = \sum_k r_k(x)\,(m_k - x)/s_k^2` (responsibilities :math:`r_k`).

    ``x`` ``(N, D)``, ``means`` ``(K, D)``, ``weights`` and ``stds`` ``(K,)``; returns ``(N, D)``.
    The responsibilities are a softmax, so the score stays finite far from every component.
    """
    diff, logits, s = _mixture_terms(x, weights, means, stds)
    r = torch.softmax(logits, dim=0) / (s ** 2)[:, None]              # (K, N)
    return (diff * r[:, None, :]).sum(0).T


def noised_mixture_score(x: torch.Tensor, weights, means, stds, sigma) -> torch.Tensor:
    r"""Score of the mixture convolved with :math:`\mathcal N(0, \sigma^2 I)`: stds become :math:`\sqrt{s_k^2 + \sigma^2}`.

    ``sigma`` is a number or a tensor ``(N,)`` (one level per row, as in
    :func:`noise_conditional_dsm_loss`). This is the exact minimiser of :func:`dsm_loss` for mixture data.
    """
    _check_x(x)
    s = torch.as_tensor(stds, dtype=x.dtype, device=x.device)
    if isinstance(sigma, torch.Tensor) and sigma.ndim == 1:
        if sigma.shape != (x.shape[0],) or not bool((sigma > 0).all()):
            raise ValueError(f"sigma must be > 0, a number or a tensor of shape ({x.shape[0]},)")
        sig = sigma.to(x)
        out = torch.empty_like(x)
        for level in torch.unique(sig):                       # one exact score per distinct level
            rows = sig == level
            out[rows] = mixture_score(x[rows], weights, means, (s ** 2 + level ** 2).sqrt())
        return out
    sigma = _check_sigma(sigma)
    return mixture_score(x, weights, means, (s ** 2 + sigma ** 2).sqrt())


# --------------------------------------------------------------------------- coding exercises
from gencore.exercises import Exercise, Mistake, register  # noqa: E402  (registry records at the bottom)


def _gaussian_score_cases() -> list[tuple]:
    cases = []
    for seed, (n, d) in enumerate([(5, 2), (4, 1), (3, 4)]):
        g = torch.Generator().manual_seed(400 + seed)
        a = torch.randn(d, d, generator=g, dtype=torch.float64)
        cov = a @ a.T + 0.5 * torch.eye(d, dtype=torch.float64)
        if d > 1:
            cov = cov + 0.3 * torch.ones(d, d, dtype=torch.float64)     # not diagonal: Σ⁻¹ ≠ 1/diag
        cases.append((torch.randn(n, d, generator=g, dtype=torch.float64),
                      torch.randn(d, generator=g, dtype=torch.float64), cov))
    return cases


register(Exercise(
    name="gaussian_score", chapter="15_score_matching",
    signature="f(x (N, D), mean (D,), cov (D, D)) -> Tensor (N, D): the score of N(mean, cov) at each row",
    reference=gaussian_score, cases=_gaussian_score_cases,
    shape_hint="the score is a gradient: one D-vector per row of x",
    mistakes=(
        Mistake("wrong sign: the score points towards the mean, -Σ⁻¹ (x - m), not Σ⁻¹ (x - m)",
                lambda x, m, c: -gaussian_score(x, m, c)),
        Mistake("multiply by the precision Σ⁻¹, not by the covariance Σ",
                lambda x, m, c: -(x - m) @ c),
        Mistake("Σ⁻¹ is not 1 / diag(Σ) unless Σ is diagonal: solve with the full matrix",
                lambda x, m, c: -(x - m) / torch.diagonal(c)),
        Mistake("the gradient of -½ (x-m)ᵀΣ⁻¹(x-m) has no ½ left: -Σ⁻¹(x - m)",
                lambda x, m, c: 0.5 * gaussian_score(x, m, c)),
    )))


def _dsm_target_cases() -> list[tuple]:
    cases = []
    for seed, (n, d, sigma) in enumerate([(6, 2, 0.5), (4, 3, 2.0), (3, 1, 0.1)]):
        g = torch.Generator().manual_seed(500 + seed)
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        cases.append((x, x + sigma * torch.randn(n, d, generator=g, dtype=torch.float64), sigma))
    return cases


register(Exercise(
    name="dsm_target", chapter="15_score_matching",
    signature="f(x (N, D), x_noisy (N, D), sigma: float) -> Tensor (N, D): the score of N(x_noisy; x, sigma² I) in x_noisy",
    reference=dsm_target, cases=_dsm_target_cases,
    mistakes=(
        Mistake("divide by the variance σ², not by σ: the target is -(x̃ - x)/σ² = -ε/σ",
                lambda x, xn, s: -(xn - x) / s),
        Mistake("wrong sign: the target points from the noisy point back to the clean one, -(x̃ - x)/σ², not +(x̃ - x)/σ²",
                lambda x, xn, s: (xn - x) / s ** 2),
        Mistake("you returned the noise ε = (x̃ - x)/σ; the score of the noise kernel is -ε/σ",
                lambda x, xn, s: (xn - x) / s),
    )))
