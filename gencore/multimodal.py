r"""Multimodal VAE with a product-of-experts posterior (Wu and Goodman, 2018).

Chapter "Combining models", section "Multimodal VAE" ({prf:ref} ``prop-poe-gaussians``).

Two views :math:`x_1, x_2` (here the top and bottom halves of a digit) share one latent ``z``:
:math:`p(x_1, x_2, z) = p(z)\, p(x_1 \mid z)\, p(x_2 \mid z)`. The true posterior factorises as
:math:`p(z \mid x_1, x_2) \propto p(z) \prod_v p(z \mid x_v) / p(z)`, which suggests the
product-of-experts encoder

.. math::
    q(z \mid x_S) \propto p(z) \prod_{v \in S} \tilde q(z \mid x_v),

one Gaussian expert per *observed* view: a missing view simply drops out of the product. The
product of Gaussians is Gaussian (:func:`product_of_experts`), so the ELBO keeps its closed-form
KL. Training sums the ELBO of both views and the ELBO of each view alone (the paper's
sub-sampling), so that each single-view posterior is trained for cross-generation.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gencore.nets import mlp
from gencore.vae import kl_normal, log_bernoulli, reparameterize

__all__ = ["product_of_experts", "halves", "MultimodalVAE", "cross_reconstruction_error", "marginal_bce"]


def product_of_experts(mu: torch.Tensor, logvar: torch.Tensor, *, prior: bool = False,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The normalised product of Gaussian experts :math:`\prod_i \mathcal N(\mu_i, \diag \sigma_i^2)`.

    .. math::
        \prod_{i=1}^E \mathcal N(z; \mu_i, \sigma_i^2) \propto \mathcal N(z; \mu, \sigma^2),
        \qquad \frac{1}{\sigma^2} = \sum_i \frac{1}{\sigma_i^2}, \qquad
        \mu = \sigma^2 \sum_i \frac{\mu_i}{\sigma_i^2}

    per coordinate: precisions add and the mean is the precision-weighted mean
    ({prf:ref} ``prop-poe-gaussians``).

    Parameters
    ----------
    mu, logvar : Tensor ``(E, ..., d)``
        The experts, stacked on the first axis.
    prior : bool
        Include the standard-normal expert :math:`\mathcal N(0, I)` (the prior of the MVAE).
    mask : Tensor ``(E, ...)`` of 0/1, optional
        Which experts are present (per example); an absent expert contributes nothing.

    Returns
    -------
    (mu, logvar) : Tensors ``(..., d)``. Finite for log-variances in [-30, 30].
    """
    for name, t in (("mu", mu), ("logvar", logvar)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor")
    if mu.shape != logvar.shape or mu.ndim < 2:
        raise ValueError(f"mu and logvar must have the same shape (E, ..., d), got {tuple(mu.shape)} and "
                         f"{tuple(logvar.shape)}")
    precision = torch.exp(-logvar)
    if mask is not None:
        if mask.shape != mu.shape[:-1]:
            raise ValueError(f"mask must have shape {tuple(mu.shape[:-1])}, got {tuple(mask.shape)}")
        precision = precision * mask.to(precision.dtype).unsqueeze(-1)
    total = precision.sum(0)
    weighted = (precision * mu).sum(0)
    if prior:
        total = total + 1.0  # the N(0, I) expert: precision 1, mean 0
    if bool((total <= 0).any()):
        raise ValueError("no expert present for some example: give prior=True or present at least one expert")
    return weighted / total, -torch.log(total)


def halves(x: torch.Tensor, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Split flat ``side x side`` images ``(B, side**2)`` into top and bottom halves, each ``(B, side**2 / 2)``."""
    if x.ndim != 2 or x.shape[1] != side * side or side % 2:
        raise ValueError(f"x must be flat {side}x{side} images (B, {side * side}) with an even side, got {tuple(x.shape)}")
    h = side * side // 2
    return x[:, :h], x[:, h:]


class MultimodalVAE(nn.Module):
    """A two-view VAE with Bernoulli decoders and a product-of-experts posterior.

    Parameters
    ----------
    dims : (int, int)
        Sizes of the two views.
    z_dim, hidden : int
    """

    def __init__(self, dims: tuple[int, int] = (32, 32), z_dim: int = 8, hidden: int = 64):
        super().__init__()
        if len(dims) != 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise ValueError(f"dims must be two positive integers, got {dims!r}")
        self.dims, self.z_dim = tuple(dims), z_dim
        self.encoders = nn.ModuleList([mlp([d, hidden, 2 * z_dim], activation="relu") for d in dims])
        self.decoders = nn.ModuleList([mlp([z_dim, hidden, d], activation="relu") for d in dims])

    def posterior(self, x1: torch.Tensor | None = None,
                  x2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`q(z \mid x_S) \propto p(z)\prod_{v \in S} \tilde q(z \mid x_v)` for the views given (one or both)."""
        views = [(i, x) for i, x in enumerate((x1, x2)) if x is not None]
        if not views:
            raise ValueError("give at least one view (x1 or x2)")
        for i, x in views:
            if x.ndim != 2 or x.shape[1] != self.dims[i]:
                raise ValueError(f"view {i + 1} must have shape (B, {self.dims[i]}), got {tuple(x.shape)}")
        outs = [self.encoders[i](x).chunk(2, dim=-1) for i, x in views]
        mu = torch.stack([o[0] for o in outs])
        logvar = torch.stack([o[1] for o in outs])
        return product_of_experts(mu, logvar, prior=True)

    def _elbo(self, xs: dict[int, torch.Tensor], generator, beta: float,
              targets: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        mu, logvar = self.posterior(xs.get(0), xs.get(1))
        z = reparameterize(mu, logvar, generator)
        rec = sum(log_bernoulli(x, self.decoders[i](z)) for i, x in (targets or xs).items())
        return rec - beta * kl_normal(mu, logvar)

    def elbo_terms(self, x1: torch.Tensor, x2: torch.Tensor, *, beta: float = 1.0, cross: bool = False,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        r"""The three ELBOs of MVAE training, each ``(B,)`` in nats: ``"joint"`` (both views),
        ``"view1"`` and ``"view2"`` (one view each, posterior from that view alone).

        The training loss is minus their sum. ``beta`` weights the KL terms (a :math:`\beta`-ELBO,
        :func:`gencore.vae.beta_elbo`); Wu and Goodman anneal it from 0 to 1 at the start of training.
        With ``cross=True`` the single-view terms reconstruct *both* views from the one-view posterior:
        :math:`\mathbb E_{q(z \mid x_v)}[\log p(x_1 \mid z) + \log p(x_2 \mid z)] - \mathrm{KL}(q(z \mid x_v) \,\|\, p(z))`,
        still a lower bound on :math:`\log p(x_1, x_2)` (any distribution over ``z`` gives one), which
        trains cross-generation directly.
        """
        beta = float(beta)
        if not (beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"beta must be a non-negative number, got {beta!r}")
        return {"joint": self._elbo({0: x1, 1: x2}, generator, beta),
                "view1": self._elbo({0: x1}, generator, beta, {0: x1, 1: x2} if cross else None),
                "view2": self._elbo({1: x2}, generator, beta, {0: x1, 1: x2} if cross else None)}

    @torch.no_grad()
    def cross_generate(self, x1: torch.Tensor | None = None, x2: torch.Tensor | None = None) -> torch.Tensor:
        """Pixel probabilities of the *missing* view, decoded from the posterior mean of the given one."""
        if (x1 is None) == (x2 is None):
            raise ValueError("give exactly one view: cross-generation predicts the other")
        mu, _ = self.posterior(x1, x2)
        return torch.sigmoid(self.decoders[1 if x2 is None else 0](mu))


@torch.no_grad()
def cross_reconstruction_error(model: MultimodalVAE, x1: torch.Tensor, x2: torch.Tensor) -> float:
    r"""Mean binary cross-entropy (nats per image) of view 2 predicted from view 1 alone:
    :math:`-\frac1N\sum_n \log p(x_{2,n} \mid \mu(x_{1,n}))`."""
    logits = model.decoders[1](model.posterior(x1, None)[0])
    return float(-log_bernoulli(x2, logits).mean())


@torch.no_grad()
def marginal_bce(x_train: torch.Tensor, x_test: torch.Tensor, eps: float = 1e-3) -> float:
    r"""The control that ignores the other view: BCE of ``x_test`` under independent pixels with the
    training set's mean, :math:`\hat p_j = \bar x_j` (clamped to [eps, 1 - eps]), nats per image."""
    p = x_train.mean(0).clamp(eps, 1 - eps)
    return float(-(x_test * torch.log(p) + (1 - x_test) * torch.log1p(-p)).sum(-1).mean())


# --------------------------------------------------------------------------- the coding exercise
def _poe_cases() -> list[tuple]:
    cases = []
    for seed, (e, b, d) in enumerate([(2, 5, 3), (3, 4, 2), (1, 3, 4)]):
        g = torch.Generator().manual_seed(300 + seed)
        cases.append((torch.randn(e, b, d, generator=g, dtype=torch.float64),
                      torch.randn(e, b, d, generator=g, dtype=torch.float64)))
    return cases


def _register_exercise() -> None:
    from gencore.exercises import EXERCISES, Exercise, Mistake, register

    if "product_of_experts" in EXERCISES:
        return
    register(Exercise(
        name="product_of_experts", chapter="14_combining_models",
        signature="f(mu, logvar) -> (mu, logvar): the Gaussian product of the E experts stacked on axis 0",
        reference=lambda mu, lv: product_of_experts(mu, lv), cases=_poe_cases,
        shape_hint="the experts are stacked on the first axis: combine over axis 0, keep (B, d)",
        mistakes=(
            Mistake("the mean of a product of Gaussians is precision-weighted, not the plain average of the means",
                    lambda mu, lv: (mu.mean(0), -torch.log(torch.exp(-lv).sum(0)))),
            Mistake("precisions (1 / sigma^2) add, not variances",
                    lambda mu, lv: ((torch.exp(-lv) * mu).sum(0) / torch.exp(-lv).sum(0), torch.log(torch.exp(lv).sum(0)))),
            Mistake("log-variances do not add: the product's precision is the sum of the precisions",
                    lambda mu, lv: ((torch.exp(-lv) * mu).sum(0) / torch.exp(-lv).sum(0), lv.sum(0))),
            Mistake("return the log-variance -log(sum of precisions), not the variance",
                    lambda mu, lv: ((torch.exp(-lv) * mu).sum(0) / torch.exp(-lv).sum(0), 1 / torch.exp(-lv).sum(0))),
            Mistake("weight each mean by its precision exp(-logvar), not by its variance exp(logvar)",
                    lambda mu, lv: ((torch.exp(lv) * mu).sum(0) / torch.exp(lv).sum(0), -torch.log(torch.exp(-lv).sum(0)))),
        )))


_register_exercise()
