r"""DDPM: the ε-prediction loss, its ELBO, and two samplers (ancestral DDPM, deterministic DDIM).

A network ``eps_model(x_t, t)`` (``t`` an integer tensor ``(B,)`` in 1..T) predicts the noise in
:math:`x_t = \sqrt{\bar\alpha_t} x_0 + \sqrt{1-\bar\alpha_t}\,\varepsilon`. The simplified loss of
Ho et al. (2020) is :math:`\mathbb E_{t, x_0, \varepsilon} \|\varepsilon - \varepsilon_\theta(x_t, t)\|^2`;
the ELBO's KL terms are the same quantity with a weight per t (:func:`kl_weight`). The noise
predictor is a scaled score: :math:`\nabla_{x_t} \log q(x_t) = -\mathbb E[\varepsilon \mid x_t] / \sqrt{1 - \bar\alpha_t}`.
Chapter "Denoising diffusion" (``book/16_diffusion.ipynb``) derives every formula of this module;
:func:`gaussian_elbo` computes each ELBO term in closed form for Gaussian data, where the bound
can be compared with :math:`\log p(x_0)`. Classifier-free guidance (Ho & Salimans 2022) is
:func:`guided_eps`. :class:`MixtureEps` is the exact noise predictor of a labelled Gaussian mixture (the
chapter's 2-D toy), and :func:`reverse_marginal` the exact :math:`p_\theta(x_0)` of a linear-Gaussian chain.
The leaderboard recipe ``"DDPM"`` (:func:`digits_model`, :func:`train_digits`: the exact noise predictor of
the data's Gaussian fit plus an MLP residual, :class:`gencore.diffusion.nets.GaussianSkip`, sampled with
DDIM) is registered at the bottom, with the chapter's coding exercise.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from gencore._validate import positive_int

from gencore.diffusion.schedules import NoiseSchedule

__all__ = ["eps_loss", "predict_x0", "eps_to_score", "ddpm_sample", "ddim_sample", "reverse_variance",
           "reverse_mean", "kl_weight", "GaussianReverse", "gaussian_reverse_model", "ELBOTerms",
           "gaussian_elbo", "guided_eps", "posterior_mean_var", "reverse_marginal", "MixtureEps", "digits_model"]

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_schedule(schedule) -> None:
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule (linear_schedule, cosine_schedule), "
                        f"got {type(schedule).__name__}")


def eps_loss(eps_model, x0: torch.Tensor, schedule: NoiseSchedule, *,
             generator: torch.Generator | None = None, y: torch.Tensor | None = None,
             p_uncond: float = 0.0, n_classes: int | None = None) -> torch.Tensor:
    r"""The simplified DDPM loss on a batch: t uniform on 1..T, one ε per row; a scalar.

    .. math:: L_\text{simple} = \mathbb E_{t, x_0, \varepsilon}\,
              \big\|\varepsilon - \varepsilon_\theta(\sqrt{\bar\alpha_t} x_0 + \sqrt{1-\bar\alpha_t}\varepsilon, t)\big\|^2

    summed over the coordinates of a row and averaged over the batch. With labels ``y`` the model is
    called as ``eps_model(x_t, t, y)``, and each label is replaced by the "no label" token
    ``n_classes`` with probability ``p_uncond`` (classifier-free guidance trains one network for both).
    """
    _check_schedule(schedule)
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must lie in [0, 1), got {p_uncond!r}")
    t = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    xt = schedule.q_sample(x0, t, noise)
    if y is None:
        if p_uncond:
            raise ValueError("p_uncond needs labels y")
        pred = eps_model(xt, t)
    else:
        if p_uncond:
            if n_classes is None:
                raise ValueError("n_classes (the 'no label' token) is needed when p_uncond > 0")
            drop = torch.rand(y.shape, generator=generator, device=y.device) < p_uncond
            y = torch.where(drop, torch.full_like(y, n_classes), y)
        pred = eps_model(xt, t, y)
    return (pred - noise).pow(2).flatten(1).sum(-1).mean()


def predict_x0(xt: torch.Tensor, t, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """:math:`\\hat x_0 = (x_t - \\sqrt{1 - \\bar\\alpha_t}\\, \\hat\\varepsilon) / \\sqrt{\\bar\\alpha_t}`."""
    ab = schedule.alpha_bar_at(t, xt)
    return (xt - (1 - ab).sqrt() * eps) / ab.sqrt()


def eps_to_score(eps: torch.Tensor, t, schedule: NoiseSchedule) -> torch.Tensor:
    """The score of :math:`q(x_t)` from the optimal noise predictor: :math:`-\\varepsilon / \\sqrt{1 - \\bar\\alpha_t}`.

    Chapter "Denoising diffusion", {prf:ref} ``prop-ddpm-eps-score``.
    """
    return -eps / (1 - schedule.alpha_bar_at(t, eps)).sqrt()


# --------------------------------------------------------------------------- the reverse model and the ELBO
def reverse_variance(schedule: NoiseSchedule, kind: str = "beta") -> torch.Tensor:
    r"""The fixed variances :math:`\sigma_t^2` ``(T,)`` of :math:`p_\theta(x_{t-1} \mid x_t)`.

    ``"beta"``: :math:`\sigma_t^2 = \beta_t`; ``"posterior"``: :math:`\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t`
    for t >= 2 and :math:`\beta_1` at t = 1 (where :math:`\tilde\beta_1 = 0`). Ho et al. (2020) found both similar.
    """
    _check_schedule(schedule)
    if kind == "beta":
        return schedule.betas.clone()
    if kind == "posterior":
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bar[:-1]])
        var = (1 - ab_prev) / (1 - schedule.alpha_bar) * schedule.betas
        var[0] = schedule.betas[0]
        return var
    raise ValueError(f"kind must be 'beta' or 'posterior', got {kind!r}")


def reverse_mean(xt: torch.Tensor, t, eps: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    r""":math:`\mu_\theta(x_t, t) = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\hat\varepsilon\big)`:
    the posterior mean :math:`\tilde\mu_t(x_t, \hat x_0)` with :math:`x_0` predicted from ``eps``."""
    beta = schedule._at(schedule.betas, t, xt)
    ab = schedule.alpha_bar_at(t, xt)
    return (xt - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt()


def kl_weight(schedule: NoiseSchedule, variance: str | torch.Tensor = "beta") -> torch.Tensor:
    r"""The weights ``(T,)`` of the ELBO's KL terms in ε-space:
    :math:`\mathrm{KL}_t = w_t \|\varepsilon - \varepsilon_\theta\|^2 + C_t`,

    .. math:: w_t = \frac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1 - \bar\alpha_t)}.

    ``variance`` is ``"beta"``, ``"posterior"`` or a tensor of :math:`\sigma_t^2` ``(T,)``.
    Chapter "Denoising diffusion", {prf:ref} ``prop-ddpm-eps-kl``; the simplified loss sets :math:`w_t = 1`.
    """
    var = reverse_variance(schedule, variance) if isinstance(variance, str) else torch.as_tensor(
        variance, dtype=torch.float64)
    if var.shape != (schedule.T,) or not bool((var > 0).all()):
        raise ValueError(f"variance must hold T = {schedule.T} positive values, got shape {tuple(var.shape)}")
    return schedule.betas ** 2 / (2 * var * schedule.alphas * (1 - schedule.alpha_bar))


@dataclass(frozen=True)
class GaussianReverse:
    r"""A linear-Gaussian reverse chain: :math:`p(x_{t-1} \mid x_t) = \mathcal N(c_t x_t + d_t, \sigma_t^2)`
    (index ``t - 1`` of each ``(T,)`` tensor) and :math:`p(x_T) = \mathcal N(m_T, v_T)`."""

    coef: torch.Tensor
    offset: torch.Tensor
    var: torch.Tensor
    prior_mean: float
    prior_var: float


def gaussian_reverse_model(schedule: NoiseSchedule, data_mean: float, data_var: float, *,
                           reverse: str = "exact") -> GaussianReverse:
    r"""The optimal reverse model for 1-D Gaussian data :math:`\mathcal N(m, v)` (float64, on the CPU).

    Every :math:`q(x_t) = \mathcal N(\sqrt{\bar\alpha_t} m, V_t)` with :math:`V_t = \bar\alpha_t v + 1 - \bar\alpha_t`
    (:math:`V_0 = v`), and the true reverse conditional is Gaussian:

    .. math:: q(x_{t-1} \mid x_t) = \mathcal N\Big(\sqrt{\bar\alpha_{t-1}} m + c_t (x_t - \sqrt{\bar\alpha_t} m),\
              \frac{V_{t-1}\beta_t}{V_t}\Big), \qquad c_t = \frac{\sqrt{\alpha_t}\,V_{t-1}}{V_t}.

    Its mean is :func:`reverse_mean` with the optimal :math:`\varepsilon^*(x_t) = \mathbb E[\varepsilon \mid x_t]`.
    ``reverse="exact"`` keeps the true variances and :math:`p(x_T) = q(x_T)` (then :math:`p_\theta = q` and the
    ELBO is tight); ``"beta"`` / ``"posterior"`` use DDPM's fixed :func:`reverse_variance` and
    :math:`p(x_T) = \mathcal N(0, 1)`, the model of Ho et al. (2020) with the best possible mean.
    """
    _check_schedule(schedule)
    if not (data_var > 0 and math.isfinite(data_var) and math.isfinite(data_mean)):
        raise ValueError(f"data_var must be > 0 and data_mean finite, got {data_mean!r}, {data_var!r}")
    ab = schedule.alpha_bar
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    V = ab * data_var + 1 - ab
    V_prev = ab_prev * data_var + 1 - ab_prev
    coef = schedule.alphas.sqrt() * V_prev / V
    offset = ab_prev.sqrt() * data_mean - coef * ab.sqrt() * data_mean
    if reverse == "exact":
        var = V_prev * schedule.betas / V
        return GaussianReverse(coef, offset, var, math.sqrt(float(ab[-1])) * data_mean, float(V[-1]))
    return GaussianReverse(coef, offset, reverse_variance(schedule, reverse), 0.0, 1.0)


@dataclass(frozen=True)
class ELBOTerms:
    r"""The terms of :math:`\log p(x_0) \ge \mathcal L = L_0 - \sum_{t=2}^T L_{t-1} - L_T`, per data point.

    ``reconstruction`` is :math:`L_0 = \mathbb E_q \log p(x_0 \mid x_1)`, ``kl_steps[t - 2]`` is
    :math:`L_{t-1} = \mathbb E_q\, \mathrm{KL}(q(x_{t-1} \mid x_t, x_0) \,\|\, p(x_{t-1} \mid x_t))`
    for t = 2..T, ``prior_kl`` is :math:`L_T = \mathrm{KL}(q(x_T \mid x_0) \,\|\, p(x_T))`; all in nats.
    """

    reconstruction: torch.Tensor
    kl_steps: torch.Tensor
    prior_kl: torch.Tensor

    @property
    def elbo(self) -> torch.Tensor:
        return self.reconstruction - self.kl_steps.sum(0) - self.prior_kl


def gaussian_elbo(x0, schedule: NoiseSchedule, model: GaussianReverse) -> ELBOTerms:
    r"""Every term of the diffusion ELBO in closed form for a linear-Gaussian reverse ``model``.

    With :math:`q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t} x_0, 1 - \bar\alpha_t)` the mean gap
    :math:`\tilde\mu_t(x_t, x_0) - (c_t x_t + d_t)` is linear in :math:`x_t`, so the expected KL
    (:func:`gencore.vae.kl_normal`) is the KL at its mean plus :math:`\mathrm{Var}/(2\sigma_t^2)`.
    ``x0`` is a tensor of 1-D data points (any shape); the terms have its shape. Chapter
    "Denoising diffusion", {prf:ref} ``prop-ddpm-elbo``.
    """
    from gencore.vae import kl_normal

    _check_schedule(schedule)
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    ab = schedule.alpha_bar
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    beta, alpha = schedule.betas, schedule.alphas
    x = x0[None]                                                         # (1, ...) against (T, 1, ...)
    shape = (-1,) + (1,) * x0.ndim
    col = lambda v: v.reshape(shape)                                     # noqa: E731
    # L_0: E log N(x0; c_1 x_1 + d_1, s_1^2), x_1 ~ N(sqrt(ab_1) x0, 1 - ab_1)
    c1, d1, s1 = model.coef[0], model.offset[0], model.var[0]
    gap_mean = x0 - c1 * ab[0].sqrt() * x0 - d1
    recon = -0.5 * torch.log(2 * math.pi * s1) - (gap_mean ** 2 + c1 ** 2 * (1 - ab[0])) / (2 * s1)
    # L_{t-1}, t = 2..T: posterior N(A x0 + B x_t, beta~) against N(c x_t + d, s^2)
    A = (ab_prev.sqrt() * beta / (1 - ab))[1:]
    B = (alpha.sqrt() * (1 - ab_prev) / (1 - ab))[1:]
    post_var = ((1 - ab_prev) / (1 - ab) * beta)[1:]
    c, d, s2 = model.coef[1:], model.offset[1:], model.var[1:]
    mean_gap = col(A) * x + col(B - c) * col(ab[1:].sqrt()) * x - col(d)
    extra = col((B - c) ** 2 * (1 - ab[1:]) / (2 * s2))
    kls = kl_normal(mean_gap.unsqueeze(-1), col(post_var.log()).expand_as(mean_gap).unsqueeze(-1),
                    torch.zeros_like(mean_gap).unsqueeze(-1),
                    col(s2.log()).expand_as(mean_gap).unsqueeze(-1)) + extra
    # L_T
    mT = ab[-1].sqrt() * x0
    prior = kl_normal(mT.unsqueeze(-1), torch.full_like(mT, math.log(1 - float(ab[-1]))).unsqueeze(-1),
                      torch.full_like(mT, model.prior_mean).unsqueeze(-1),
                      torch.full_like(mT, math.log(model.prior_var)).unsqueeze(-1))
    return ELBOTerms(recon, kls, prior)


def posterior_mean_var(x0: torch.Tensor, xt: torch.Tensor, alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor,
                       beta_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Mean and variance of :math:`q(x_{t-1} \mid x_t, x_0)` from scalars or broadcastable tensors.

    .. math:: \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t} x_0 +
              \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t, \qquad
              \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t,

    with :math:`\alpha_t = 1 - \beta_t`. The reference of the chapter's coding exercise; the schedule's own
    :meth:`NoiseSchedule.posterior` computes the same from integer time steps ({prf:ref} ``prop-ddpm-posterior``).
    """
    alpha_t = 1 - beta_t
    mean = alpha_bar_prev.sqrt() * beta_t / (1 - alpha_bar_t) * x0 + alpha_t.sqrt() * (1 - alpha_bar_prev) / (
        1 - alpha_bar_t) * xt
    var = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
    return mean, var.expand_as(mean)


def guided_eps(model, y: torch.Tensor, scale: float, n_classes: int | None = None) -> EpsModel:
    r"""Classifier-free guidance (Ho & Salimans 2022): the noise predictor

    .. math:: \tilde\varepsilon(x_t, t, y) = (1 + w)\,\varepsilon_\theta(x_t, t, y) - w\,\varepsilon_\theta(x_t, t, \varnothing),

    i.e. the score of :math:`p(x_t \mid y)^{1+w} / p(x_t)^{w}`, for a model ``model(x, t, y)`` trained with
    label dropout (``y = n_classes`` is "no label"; read from ``model.n_classes`` when omitted).
    ``w = 0`` is the conditional model; returns ``f(x, t)`` for :func:`ddpm_sample` / :func:`ddim_sample`.
    """
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    n_classes = getattr(model, "n_classes", None) if n_classes is None else n_classes
    if not n_classes:
        raise ValueError("the model has no class embedding: pass n_classes, or use TimeConditioned(n_classes=...)")

    def eps(x, t):
        yy = y.to(x.device)
        if yy.shape != (x.shape[0],):
            raise ValueError(f"y must hold one label per sample ({x.shape[0]},), got shape {tuple(yy.shape)}")
        cond = model(x, t, yy)
        if scale == 0:
            return cond
        return (1 + scale) * cond - scale * model(x, t, torch.full_like(yy, n_classes))

    return eps


def reverse_marginal(model: GaussianReverse) -> tuple[float, float]:
    r"""Mean and variance of the model's :math:`p_\theta(x_0)` for a linear-Gaussian reverse chain.

    From :math:`p(x_T) = \mathcal N(m_T, v_T)`, each step :math:`x_{t-1} = c_t x_t + d_t + \sigma_t z` maps
    a Gaussian to a Gaussian: :math:`m \leftarrow c_t m + d_t`, :math:`v \leftarrow c_t^2 v + \sigma_t^2`.
    Then :math:`\log p_\theta(x_0)` is exact and bounds :func:`gaussian_elbo` from above.
    """
    m, v = float(model.prior_mean), float(model.prior_var)
    for c, d, s2 in zip(model.coef.flip(0).tolist(), model.offset.flip(0).tolist(), model.var.flip(0).tolist()):
        m, v = c * m + d, c * c * v + s2
    return m, v


class MixtureEps:
    r"""The exact noise predictor of a labelled Gaussian mixture :math:`\sum_k w_k \mathcal N(m_k, s_k^2 I)`.

    Under :math:`q(x_t \mid x_0)` the component :math:`k` becomes :math:`\mathcal N(\sqrt{\bar\alpha_t} m_k, v_{k,t} I)`,
    :math:`v_{k,t} = \bar\alpha_t s_k^2 + 1 - \bar\alpha_t`, and

    .. math:: \varepsilon^*(x_t, t) = \mathbb E[\varepsilon \mid x_t]
              = \sum_k r_k(x_t)\, \sqrt{1 - \bar\alpha_t}\, \frac{x_t - \sqrt{\bar\alpha_t} m_k}{v_{k,t}}
              = -\sqrt{1 - \bar\alpha_t}\, \nabla \log q_t(x_t),

    with the responsibilities :math:`r_k` of :math:`q_t`. Called as ``f(x, t)`` (unconditional) or
    ``f(x, t, y)`` with labels ``y`` in ``0..K-1`` (the component's own predictor; ``y = K`` is "no label"),
    so that :func:`guided_eps` applies to it unchanged (``n_classes = K``). Follows ``x``'s device and dtype.
    Chapter "Denoising diffusion", {prf:ref} ``prop-ddpm-eps-score``.
    """

    def __init__(self, weights, means, stds, schedule: NoiseSchedule):
        _check_schedule(schedule)
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        k = self.weights.shape[0] if self.weights.ndim == 1 else -1
        if self.means.ndim != 2 or self.means.shape[0] != k or self.stds.shape != (k,):
            raise ValueError("means must have shape (K, D) and weights, stds shape (K,)")
        if not bool((self.stds > 0).all()) or not bool((self.weights >= 0).all()) or \
                abs(float(self.weights.sum()) - 1) > 1e-6:
            raise ValueError("stds must be > 0 and weights non-negative, summing to 1")
        self.schedule, self.n_classes = schedule, k

    def __call__(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        ab = self.schedule.alpha_bar_at(t, x[:, :1])                          # (B, 1)
        m, s2 = self.means.to(x), self.stds.to(x) ** 2
        v = ab * s2[None] + 1 - ab                                            # (B, K)
        diff = x[:, None, :] - ab.sqrt()[:, :, None] * m[None]                # (B, K, D)
        eps_k = (1 - ab).sqrt()[:, :, None] * diff / v[:, :, None]            # (B, K, D)
        logits = self.weights.to(x).log()[None] - 0.5 * x.shape[1] * v.log() - 0.5 * diff.pow(2).sum(-1) / v
        r = torch.softmax(logits, dim=1)
        if y is not None:
            y = y.to(x.device)
            if y.shape != (x.shape[0],) or int(y.min()) < 0 or int(y.max()) > self.n_classes:
                raise ValueError(f"y must hold {x.shape[0]} labels in 0..{self.n_classes} "
                                 f"({self.n_classes} = no label), got shape {tuple(y.shape)}")
            onehot = torch.nn.functional.one_hot(y.clamp(max=self.n_classes - 1), self.n_classes).to(x)
            r = torch.where((y == self.n_classes)[:, None], r, onehot)
        return (r[:, :, None] * eps_k).sum(1)

    def sample(self, n: int, *, generator: torch.Generator | None = None, device=None,
               dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` data points ``(n, D)`` and their component labels ``(n,)``."""
        positive_int(n, "n")
        if device is None and generator is not None:
            device = generator.device
        y = torch.multinomial(self.weights.to(device), n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator, device=device, dtype=torch.float64)
        x = self.means.to(device)[y] + self.stds.to(device)[y, None] * noise
        return x.to(dtype), y

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The Bayes classifier of the clean mixture: :math:`\\arg\\max_k w_k \\mathcal N(x; m_k, s_k^2 I)`, ``(N,)``."""
        m, s2 = self.means.to(x), self.stds.to(x) ** 2
        logits = self.weights.to(x).log()[None] - 0.5 * x.shape[1] * s2.log()[None] \
            - 0.5 * (x[:, None, :] - m[None]).pow(2).sum(-1) / s2[None]
        return logits.argmax(1)


# --------------------------------------------------------------------------- samplers
@torch.no_grad()
def ddpm_sample(eps_model: EpsModel, shape, schedule: NoiseSchedule, *, generator: torch.Generator | None = None,
                device=None, dtype=torch.float32, sigma: str = "beta", progress: bool = False) -> torch.Tensor:
    r"""Ancestral sampling :math:`x_T \sim \mathcal N(0, I) \to x_0`, T network calls.

    .. math:: x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\hat\varepsilon\Big) + \sigma_t z,

    with :math:`\sigma_t^2 = \beta_t` (``sigma="beta"``) or :math:`\tilde\beta_t` (``"posterior"``), and no noise at t = 1.
    ``device`` defaults to the generator's; ``progress`` shows a ``tqdm.auto`` bar.
    """
    _check_schedule(schedule)
    if sigma not in ("beta", "posterior"):
        raise ValueError(f"sigma must be 'beta' or 'posterior', got {sigma!r}")
    if device is None and generator is not None:
        device = generator.device
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
                clip: tuple[float, float] | None = None, progress: bool = False) -> torch.Tensor:
    r"""DDIM (Song et al. 2021) on ``steps`` evenly spaced time steps; ``eta = 0`` is deterministic.

    .. math::
        x_{s} = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1 - \bar\alpha_s - \sigma^2}\,\hat\varepsilon + \sigma z, \quad
        \sigma = \eta \sqrt{\tfrac{1-\bar\alpha_s}{1-\bar\alpha_t}\big(1 - \tfrac{\bar\alpha_t}{\bar\alpha_s}\big)}.

    ``clip = (lo, hi)`` clamps each :math:`\hat x_0` to the data range (images), as Ho et al.'s code does;
    ``device`` defaults to the generator's; ``progress`` shows a ``tqdm.auto`` bar.
    """
    _check_schedule(schedule)
    positive_int(steps, "steps")
    if clip is not None and not (len(clip) == 2 and clip[0] < clip[1]):
        raise ValueError(f"clip must be a pair (lo, hi) with lo < hi, got {clip!r}")
    if steps > schedule.T:
        raise ValueError(f"steps must be at most T = {schedule.T}, got {steps}")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    if device is None and generator is not None:
        device = generator.device
    ts = torch.linspace(schedule.T, 1, steps).round().long().unique_consecutive().tolist()
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    for i, t in enumerate(tqdm(ts, desc="DDIM sampling", disable=not progress, leave=False)):
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = eps_model(x, tt)
        ab = schedule.alpha_bar[t - 1].item()
        x0 = (x - (1 - ab) ** 0.5 * eps) / ab ** 0.5
        if clip is not None:
            x0 = x0.clamp(*clip)
            eps = (x - ab ** 0.5 * x0) / (1 - ab) ** 0.5
        ab_s = schedule.alpha_bar[ts[i + 1] - 1].item() if i + 1 < len(ts) else 1.0
        sig = eta * ((1 - ab_s) / (1 - ab) * (1 - ab / ab_s)) ** 0.5 if i + 1 < len(ts) else 0.0
        x = ab_s ** 0.5 * x0 + max(1 - ab_s - sig ** 2, 0.0) ** 0.5 * eps
        if sig > 0:
            x = x + sig * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x


# --------------------------------------------------------------------------- leaderboard recipe "DDPM"
def digits_model(x_train: torch.Tensor, *, seed: int = 0, sample_steps: int | None = None, gaussian_skip: bool = True):
    r"""The untrained network and sampler of the leaderboard recipe ``"DDPM"`` (also its control).

    The noise predictor is :class:`gencore.diffusion.nets.GaussianSkip`: the exact noise predictor of the
    Gaussian fit (rank 64 + isotropic rest) of the digits scaled to [-1, 1], plus
    ``TimeConditioned(mlp([784 + 16, H, H, 784], activation="gelu"), n_features=16, t_scale=T)`` whose last layer
    starts at zero, H = 256 (quick) / 1024 (full); the linear schedule of Ho et al. (2020) (T = 1000,
    β from 1e-4 to 0.02). Untrained, it samples the Gaussian fit of the data. Samples by DDIM with
    ``sample_steps`` steps (20 quick / 100 full), clipping :math:`\hat x_0` to [-1, 1], mapped back to [0, 1].
    The network's initialisation is seeded with ``seed``; it lives on ``x_train``'s device.
    ``gaussian_skip=False`` gives the plain MLP noise predictor (default initialisation, no Gaussian term),
    the recipe before the skip was added: a control for what the skip contributes.
    """
    from gencore.config import by_scale, seed_everything
    from gencore.leaderboard import TrainedModel
    from gencore.nets import mlp

    from gencore.diffusion.nets import GaussianSkip, TimeConditioned
    from gencore.diffusion.schedules import linear_schedule

    if not isinstance(x_train, torch.Tensor) or x_train.ndim != 2 or x_train.shape[1] != 784:
        raise ValueError(f"x_train must be a tensor of flat 28x28 images (N, 784), got "
                         f"{getattr(x_train, 'shape', type(x_train).__name__)}")
    dev = x_train.device
    width = by_scale(quick=256, full=1024)
    sample_steps = by_scale(quick=20, full=100) if sample_steps is None else positive_int(sample_steps, "sample_steps")
    schedule = linear_schedule(1000)
    seed_everything(seed)
    inner = TimeConditioned(mlp([784 + 16, width, width, 784], activation="gelu"), n_features=16, t_scale=schedule.T)
    net = (GaussianSkip(inner, 2 * x_train.float() - 1, schedule, rank=64) if gaussian_skip else inner).to(dev)

    def sampler(n, g):
        x = ddim_sample(net, (n, 784), schedule, sample_steps, generator=g, device=dev, clip=(-1.0, 1.0))
        return ((x + 1) / 2).clamp(0, 1)

    model = TrainedModel("DDPM", net, sampler)
    model.schedule = schedule
    return model


def train_digits(x_train: torch.Tensor, y_train: torch.Tensor | None = None, *, seed: int = 0, steps: int,
                 progress: bool = False, generator: torch.Generator | None = None,
                 sample_steps: int | None = None):
    r"""The leaderboard recipe ``"DDPM"``: :func:`digits_model` trained with the simplified loss :func:`eps_loss`.

    Adam (lr 1e-3 quick / 2e-4 full), batch 128, :func:`gencore.train.fit` for ``steps`` steps.
    ``y_train`` is ignored (unconditional). Chapter "Denoising diffusion".
    """
    from gencore.config import by_scale
    from gencore.train import fit, make_step

    model = digits_model(x_train, seed=seed, sample_steps=sample_steps)
    net, schedule = model.module, model.schedule
    opt = torch.optim.Adam(net.parameters(), lr=by_scale(quick=1e-3, full=2e-4))
    fit(make_step(lambda b: eps_loss(net, 2 * b - 1, schedule, generator=generator), opt), x_train,
        batch_size=128, steps=steps, seed=seed, progress=progress, desc="DDPM", log_every=10)
    return model


def _register_recipe() -> None:
    from gencore import leaderboard

    leaderboard.register_recipe("DDPM", train_digits, quick_steps=300, full_steps=100_000,
                                description="Gaussian-fit skip + MLP noise predictor, linear schedule T = 1000, DDIM sampling "
                                            "(chapter 'Denoising diffusion')")


_register_recipe()


# --------------------------------------------------------------------------- coding exercise
def _posterior_cases() -> list[tuple]:
    cases = []
    for seed, (b, d) in enumerate([(5, 2), (3, 1), (4, 3)]):
        g = torch.Generator().manual_seed(300 + seed)
        ab_prev = 0.2 + 0.75 * torch.rand(b, 1, generator=g, dtype=torch.float64)
        beta = 0.01 + 0.3 * torch.rand(b, 1, generator=g, dtype=torch.float64)
        ab = ab_prev * (1 - beta)
        cases.append((torch.randn(b, d, generator=g, dtype=torch.float64),
                      torch.randn(b, d, generator=g, dtype=torch.float64), ab, ab_prev, beta))
    return cases


def _register_exercise() -> None:
    from gencore.exercises import EXERCISES, Exercise, Mistake, register

    if "ddpm_posterior" in EXERCISES:
        return
    ref = posterior_mean_var

    def with_var(mean_var, var):
        return mean_var[0], var.expand_as(mean_var[0])

    register(Exercise(
        name="ddpm_posterior", chapter="16_diffusion",
        signature="f(x0, xt, alpha_bar_t, alpha_bar_prev, beta_t) -> (mean, var): q(x_{t-1} | x_t, x_0), "
                  "var of the same shape as mean",
        reference=ref, cases=_posterior_cases,
        shape_hint="return the variance broadcast to the mean's shape (var.expand_as(mean))",
        mistakes=(
            Mistake("the variance of q(x_{t-1} | x_t, x_0) is (1 - abar_{t-1}) / (1 - abar_t) * beta_t, not beta_t "
                    "(beta_t is the forward step's variance)",
                    lambda x0, xt, ab, abp, b: with_var(ref(x0, xt, ab, abp, b), b)),
            Mistake("the coefficient of x_t is sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t): alpha_t needs a square root",
                    lambda x0, xt, ab, abp, b: (ref(x0, xt, ab, abp, b)[0] + ((1 - b) - (1 - b).sqrt())
                                                * (1 - abp) / (1 - ab) * xt, ref(x0, xt, ab, abp, b)[1])),
            Mistake("the coefficient of x_0 has sqrt(abar_{t-1}), not sqrt(abar_t)",
                    lambda x0, xt, ab, abp, b: (ref(x0, xt, ab, abp, b)[0] + (ab.sqrt() - abp.sqrt()) * b / (1 - ab)
                                                * x0, ref(x0, xt, ab, abp, b)[1])),
            Mistake("the coefficients of x_0 and x_t are swapped",
                    lambda x0, xt, ab, abp, b: ref(xt, x0, ab, abp, b)),
        )))


_register_exercise()
