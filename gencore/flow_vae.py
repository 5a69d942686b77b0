r"""VAEs whose posterior is a normalizing flow: planar (Rezende & Mohamed 2015) and IAF (Kingma et al. 2016).

A draw :math:`z_0 = \mu + \sigma \odot \varepsilon` of the Gaussian encoder is pushed through
:math:`K` invertible maps whose parameters depend on :math:`x` (amortised),
:math:`z_K = f_K \circ \dots \circ f_1(z_0)`. By the change of variables
(chapter "Normalizing flows", {prf:ref} ``thm-flow-change-of-variables``)

.. math::
    \log q_K(z_K \mid x) = \log \mathcal N(z_0; \mu, \diag \sigma^2)
    - \sum_{k=1}^K \log|\det \partial f_k / \partial z_{k-1}|,

so the ELBO :math:`\mathbb E_q[\log p(x \mid z_K) + \log p(z_K) - \log q_K(z_K \mid x)]` stays a
Monte-Carlo average of tractable terms ({prf:ref} ``prop-flow-elbo``). :class:`FlowVAE` reuses the
encoder, decoder and likelihood of :class:`gencore.vae.VAE`; with zero flow layers (or flow layers at
the identity) :func:`flow_elbo` is :func:`gencore.vae.elbo`.

=================  ==================================================================
``planar``         :func:`planar_transform`, parameters ``(u, w, b)`` per example and layer
``iaf``            :class:`ContextIAF`, MADE on ``z`` plus a context vector ``h(x)``
=================  ==================================================================
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gencore.autoregressive import MADE
from gencore.nets import mlp
from gencore.vae import VAE, Bounds, log_normal_diag, log_standard_normal, reparameterize

__all__ = ["planar_u_hat", "planar_transform", "planar_log_det", "ContextIAF", "FlowVAE", "flow_elbo",
           "flow_iwae_bound", "evaluate_flow_bounds", "FLOW_KINDS"]

FLOW_KINDS = ("planar", "iaf")


def planar_u_hat(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    r""":math:`\hat u = u + (m(w^\top u) - w^\top u)\, w / \|w\|^2`, :math:`m(a) = -1 + \log(1 + e^a)`.

    Then :math:`w^\top \hat u = m(w^\top u) > -1`, the planar map's invertibility condition
    (Rezende & Mohamed 2015, appendix A). Batched over leading dimensions: ``u, w`` ``(..., d)``.
    """
    wu = (w * u).sum(-1, keepdim=True)
    return u + (F.softplus(wu) - 1 - wu) * w / (w * w).sum(-1, keepdim=True).clamp_min(1e-12)


def planar_log_det(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r""":math:`\log|1 + u^\top \psi(z)|`, :math:`\psi(z) = (1 - \tanh^2(w^\top z + b))\, w`, per row ``(B,)``.

    ``z`` ``(B, d)``; ``u, w`` ``(d,)`` or ``(B, d)``; ``b`` scalar or ``(B,)``. ``u`` is used as
    given (pass :func:`planar_u_hat` of it for the invertible map). The matrix determinant lemma
    gives :math:`\det(I + u\, \psi^\top) = 1 + u^\top \psi`.
    """
    a = (z * w).sum(-1) + b
    return torch.log((1 + (1 - torch.tanh(a) ** 2) * (u * w).sum(-1)).abs())


def planar_transform(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    r"""Planar map :math:`f(z) = z + \hat u \tanh(w^\top z + b)` with per-row parameters.

    ``z, u, w`` ``(B, d)``, ``b`` ``(B,)``. Returns ``(f(z), log|det J|)`` with ``u`` replaced by
    :func:`planar_u_hat` (always invertible).
    """
    if z.ndim != 2 or u.shape != z.shape or w.shape != z.shape or b.shape != z.shape[:1]:
        raise ValueError(f"planar_transform expects z, u, w of shape (B, d) and b of shape (B,), got "
                         f"z {tuple(z.shape)}, u {tuple(u.shape)}, w {tuple(w.shape)}, b {tuple(b.shape)}")
    u = planar_u_hat(u, w)
    a = (z * w).sum(-1) + b
    return z + torch.tanh(a)[:, None] * u, planar_log_det(z, u, w, b)


class ContextIAF(nn.Module):
    r"""IAF step with a context (Kingma et al. 2016, eq. 10-11):

    .. math::
        [m, s] = \mathrm{MADE}(z, h), \quad \sigma = \mathrm{sigmoid}(s + b_f), \quad
        z' = \sigma \odot z + (1 - \sigma) \odot m, \quad \log|\det J| = \textstyle\sum_i \log \sigma_i.

    The context ``h`` enters the first hidden layer through an unmasked linear map, so the Jacobian
    in ``z`` stays triangular. ``forward(z, h) -> (z', log_det)``.
    """

    def __init__(self, d: int, context_dim: int, hidden: Sequence[int] = (64,), *, reverse: bool = False,
                 forget_bias: float = 2.0):
        super().__init__()
        if not hidden:
            raise ValueError("hidden must hold at least one width (the context enters the first hidden layer)")
        order = list(range(d))[::-1] if reverse else None
        self.d, self.forget_bias = d, forget_bias
        self.made = MADE(d, hidden, order=order, n_params=2)
        self.context = nn.Linear(context_dim, hidden[0])

    def forward(self, z: torch.Tensor, h: torch.Tensor):
        net = self.made.net
        out = net[2:](torch.relu(net[0](z) + self.context(h))).view(-1, 2, self.d)
        m, s = out[:, 0], out[:, 1] + self.forget_bias
        sig = torch.sigmoid(s)
        return sig * z + (1 - sig) * m, F.logsigmoid(s).sum(-1)

    def _ms(self, z: torch.Tensor, h: torch.Tensor):
        net = self.made.net
        out = net[2:](torch.relu(net[0](z) + self.context(h))).view(-1, 2, self.d)
        return out[:, 0], torch.sigmoid(out[:, 1] + self.forget_bias)

    def inverse(self, y: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``z`` with ``forward(z, h)[0] == y``: ``d`` sequential passes, one coordinate each."""
        z = torch.zeros_like(y)
        for i in self.made.order.tolist():
            m, sig = self._ms(z, h)
            z = z.clone()
            z[:, i] = (y[:, i] - (1 - sig[:, i]) * m[:, i]) / sig[:, i]
        return z


class FlowVAE(nn.Module):
    r"""A :class:`gencore.vae.VAE` whose Gaussian posterior is refined by ``n_flows`` amortised flow layers.

    Parameters
    ----------
    x_dim, z_dim : int
    hidden : sequence of int
        Widths of the VAE's MLPs (as :class:`gencore.vae.VAE`); the flow's context net uses ``hidden[0]``.
    flow : {"planar", "iaf"}
    n_flows : int
        Number of flow layers :math:`K \ge 0` (0 gives the plain VAE).
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (200,), flow: str = "planar",
                 n_flows: int = 4, *, iaf_hidden: Sequence[int] = (64,), activation: str = "tanh"):
        super().__init__()
        if flow not in FLOW_KINDS:
            raise ValueError(f"unknown flow {flow!r}; valid choices: {', '.join(FLOW_KINDS)}")
        if isinstance(n_flows, bool) or not isinstance(n_flows, int) or n_flows < 0:
            raise ValueError(f"n_flows must be a non-negative integer, got {n_flows!r}")
        self.vae = VAE(x_dim, z_dim, hidden, activation=activation)
        self.x_dim, self.z_dim, self.flow, self.n_flows = x_dim, z_dim, flow, n_flows
        width = tuple(hidden)[0]
        if flow == "planar":
            # per example and layer: u (d), w (d), b (1); u's head starts at zero: small first steps along w
            self.params = mlp([x_dim, width, n_flows * (2 * z_dim + 1)], activation=activation) if n_flows else None
            if n_flows:
                last = self.params[-1]
                with torch.no_grad():
                    w = last.weight.view(n_flows, 2 * z_dim + 1, -1)
                    w[:, :z_dim].zero_()
                    bias = last.bias.view(n_flows, 2 * z_dim + 1)
                    bias[:, :z_dim].zero_()
            self.layers = nn.ModuleList()
        else:
            self.params = mlp([x_dim, width, width], activation=activation) if n_flows else None
            self.layers = nn.ModuleList([ContextIAF(z_dim, width, iaf_hidden, reverse=bool(k % 2))
                                         for k in range(n_flows)])

    def encode(self, x: torch.Tensor):
        """``(mu, logvar)`` of the Gaussian :math:`q_0(z_0 \\mid x)`."""
        return self.vae.encode(x)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.vae.log_likelihood(x, z)

    def push(self, z0: torch.Tensor, x: torch.Tensor):
        """``z0`` ``(S, B, d)`` through the flow conditioned on ``x`` ``(B, x_dim)``: ``(z_K, sum log|det|)``."""
        s, b, d = z0.shape
        z = z0.reshape(s * b, d)
        total = torch.zeros(s * b, dtype=z.dtype, device=z.device)
        if self.n_flows == 0:
            return z0, total.view(s, b)
        ctx = self.params(x).repeat(s, 1)                # rows ordered as z0.reshape(s * b, d)
        for k in range(self.n_flows):
            if self.flow == "planar":
                p = ctx.view(s * b, self.n_flows, 2 * d + 1)[:, k]
                z, ld = planar_transform(z, p[:, :d], p[:, d:2 * d], p[:, 2 * d])
            else:
                z, ld = self.layers[k](z, ctx)
            total = total + ld
        return z.view(s, b, d), total.view(s, b)

    def log_weights(self, x: torch.Tensor, n_samples: int, generator: torch.Generator | None = None):
        r""":math:`\log p(x, z_K) - \log q_K(z_K \mid x)` for ``n_samples`` draws: ``(S, B)``."""
        mu, logvar = self.encode(x)
        z0 = reparameterize(mu, logvar, generator, n_samples=n_samples)
        zk, log_det = self.push(z0, x)
        log_q = log_normal_diag(z0, mu, logvar) - log_det
        return self.log_likelihood(x, zk) + log_standard_normal(zk) - log_q

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.vae.sample(n, generator=generator)


def _positive(k, name):
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    return k


def flow_elbo(model: FlowVAE, x: torch.Tensor, n_samples: int = 1, *,
              generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Per-example ELBO ``(B,)`` with the flow posterior (every term by Monte Carlo), in nats."""
    return model.log_weights(x, _positive(n_samples, "n_samples"), generator).mean(0)


def flow_iwae_bound(model: FlowVAE, x: torch.Tensor, k: int, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Per-example ``k``-sample importance-weighted bound ``(B,)`` with the flow posterior."""
    return torch.logsumexp(model.log_weights(x, _positive(k, "k"), generator), 0) - math.log(k)


@torch.no_grad()
def evaluate_flow_bounds(model: FlowVAE, x: torch.Tensor, *, k: int, batch_size: int = 200,
                         seed: int = 0) -> Bounds:
    """Mean ELBO and ``k``-sample IWAE bound over ``x``, both from the same ``k`` draws per example.

    The ELBO is the average of the ``k`` log-weights (an unbiased estimate with ``k`` times less
    variance than :func:`gencore.vae.evaluate_bounds`' single draw), the IWAE bound their
    log-mean-exp, so the gap ``iwae - elbo`` is measured on common draws. A plain
    :class:`gencore.vae.VAE` is evaluated the same way as ``FlowVAE(..., n_flows=0)`` with its weights.
    """
    k = _positive(k, "k")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    e = i = 0.0
    for s in range(0, len(x), batch_size):
        log_w = model.log_weights(x[s:s + batch_size], k, gen)
        e += float(log_w.mean(0).sum())
        i += float((torch.logsumexp(log_w, 0) - math.log(k)).sum())
    return Bounds(elbo=e / len(x), iwae=i / len(x), k=k)


# --------------------------------------------------------------------------- exercise
def _planar_cases() -> list[tuple]:
    """Three cases; in the last, u is unconstrained (w.u < -1), so 1 + u.psi(z) < 0 on some rows."""
    cases = []
    for seed, (n, d, scale, shift) in enumerate([(5, 2, 1.0, 0.0), (4, 3, 2.0, 0.3), (6, 4, 1.0, 1.5)]):
        g = torch.Generator().manual_seed(1300 + seed)
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        w = scale * torch.randn(d, generator=g, dtype=torch.float64)
        u = torch.randn(d, generator=g, dtype=torch.float64) - shift * w / (w @ w)
        u = u if shift > 1 else planar_u_hat(u, w)
        b = 0.3 * torch.randn((), generator=g, dtype=torch.float64)
        cases.append((z, u, w, b))
    return cases


def _pl(z, w, b):
    return z @ w + b


def _register() -> None:
    from gencore.exercises import Exercise, Mistake, register

    register(Exercise(
        name="planar_log_det", chapter="13_flows",
        signature="f(z (B, d), u (d,), w (d,), b scalar) -> Tensor (B,): log|det d/dz [z + u tanh(w.z + b)]|",
        reference=planar_log_det, cases=_planar_cases,
        shape_hint="one log-determinant per row of z: shape (B,)",
        mistakes=(
            Mistake("the determinant is 1 + u.psi(z) (matrix determinant lemma): the 1 + is missing",
                    lambda z, u, w, b: torch.log(((1 - torch.tanh(_pl(z, w, b)) ** 2) * (u @ w)).abs())),
            Mistake("psi(z) = tanh'(w.z + b) w with tanh' = 1 - tanh^2, not tanh",
                    lambda z, u, w, b: torch.log((1 + torch.tanh(_pl(z, w, b)) * (u @ w)).abs())),
            Mistake("u.psi(z) is a dot product over the d coordinates; you multiplied elementwise and summed "
                    "the logs over the wrong axis",
                    lambda z, u, w, b: torch.log((1 + (1 - torch.tanh(_pl(z, w, b)) ** 2)[:, None] * (u * w)).abs())
                    .sum(-1)),
            Mistake("the bias b goes inside the tanh: psi(z) = (1 - tanh^2(w.z + b)) w",
                    lambda z, u, w, b: torch.log((1 + (1 - torch.tanh(z @ w) ** 2) * (u @ w)).abs())),
        ),
        error_hint="a = z @ w + b has shape (B,); u @ w is a scalar"))


_register()
