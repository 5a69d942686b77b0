r"""Flow matching and continuous normalizing flows (Lipman et al. 2023; Liu et al. 2023; Tong et al. 2024).

Conditional flow matching regresses a velocity field on straight-line paths
:math:`x_t = (1 - t)\, x_0 + t\, x_1` between a noise sample :math:`x_0` and a data sample :math:`x_1`:

.. math:: \mathcal L_{\text{CFM}}(\theta) = \mathbb E_{t, (x_0, x_1)} \|v_\theta(x_t, t) - (x_1 - x_0)\|^2,

whose gradient equals that of the marginal objective :math:`\mathbb E\|v_\theta(x_t, t) - u_t(x_t)\|^2`
with :math:`u_t(x) = \mathbb E[x_1 - x_0 \mid x_t = x]`. The pairs may be independent or coupled by
optimal transport within a minibatch (straighter paths, fewer ODE steps). A CNF's log-density
follows the instantaneous change of variables :math:`\tfrac{d}{dt}\log p(x_t) = -\operatorname{tr}\, \partial v / \partial x`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from gencore._validate import positive_int

__all__ = ["cfm_loss", "ot_pairing", "ode_sample", "cnf_log_prob", "gaussian_path_velocity"]

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]




def cfm_loss(v_fn: Velocity, x0: torch.Tensor, x1: torch.Tensor, *, t: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Conditional flow matching on straight paths; ``t`` uniform on [0, 1] unless given; a scalar."""
    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    if t is None:
        t = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
    elif bool(((t < 0) | (t > 1)).any()):
        raise ValueError("t must lie in [0, 1]")
    tt = t.reshape(-1, *([1] * (x0.ndim - 1)))
    xt = (1 - tt) * x0 + tt * x1
    return (v_fn(xt, t) - (x1 - x0)).pow(2).flatten(1).sum(-1).mean()


def ot_pairing(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """``x1`` reordered so that ``(x0[i], x1[i])`` is the exact squared-Euclidean OT matching of the batch."""
    from scipy.optimize import linear_sum_assignment

    if x0.shape != x1.shape:
        raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    cost = torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()).pow(2).cpu().numpy()
    _, cols = linear_sum_assignment(cost)
    return x1[torch.as_tensor(cols, device=x1.device)]


@torch.no_grad()
def ode_sample(v_fn: Velocity, x0: torch.Tensor, steps: int, *, method: str = "euler",
               progress: bool = False) -> torch.Tensor:
    """Integrate :math:`dx/dt = v(x, t)` from t = 0 to 1 in ``steps`` steps (``euler`` or ``midpoint``)."""
    positive_int(steps, "steps")
    if method not in ("euler", "midpoint"):
        raise ValueError(f"method must be 'euler' or 'midpoint', got {method!r}")
    x, h = x0, 1.0 / steps
    for k in tqdm(range(steps), desc="ODE sampling", disable=not progress, leave=False):
        t = torch.full((x.shape[0],), k * h, device=x.device, dtype=x.dtype)
        if method == "euler":
            x = x + h * v_fn(x, t)
        else:
            x = x + h * v_fn(x + 0.5 * h * v_fn(x, t), t + 0.5 * h)
    return x


def cnf_log_prob(v_fn: Velocity, x1: torch.Tensor, steps: int, *,
                 base_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    r"""Log-density of data ``x1`` under the CNF ``x0 ~ base, dx/dt = v``: integrate backwards.

    .. math:: \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \operatorname{tr} \frac{\partial v}{\partial x}(x_t, t)\, dt,

    with the exact trace by autograd (one backward pass per dimension: for small ``d``) and the
    midpoint rule in time. ``base_log_prob`` defaults to the standard normal.
    """
    positive_int(steps, "steps")
    if x1.ndim != 2:
        raise ValueError(f"x1 must have shape (batch, d), got {tuple(x1.shape)}")

    def v_and_div(x, t):
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = v_fn(x, t)
            div = sum(torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1]))
        return v.detach(), div.detach()

    x, h = x1, 1.0 / steps
    integral = torch.zeros(x1.shape[0], dtype=x1.dtype, device=x1.device)
    for k in range(steps, 0, -1):
        t = torch.full((x.shape[0],), k * h, device=x.device, dtype=x.dtype)
        v, _ = v_and_div(x, t)
        xm = x - 0.5 * h * v
        vm, div_m = v_and_div(xm, t - 0.5 * h)
        x = x - h * vm
        integral = integral + h * div_m
    if base_log_prob is None:
        base = -0.5 * (x.pow(2).sum(-1) + x.shape[1] * torch.log(torch.tensor(2 * torch.pi, dtype=x.dtype)))
    else:
        base = base_log_prob(x)
    return base - integral


def gaussian_path_velocity(x: torch.Tensor, t: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    r"""The marginal velocity :math:`u_t(x) = \mathbb E[x_1 - x_0 \mid x_t = x]` for independent
    :math:`x_0 \sim \mathcal N(0, I)`, :math:`x_1 \sim \mathcal N(m, s^2 I)` on straight paths:

    .. math:: u_t(x) = m + \frac{t s^2 - (1 - t)}{(1 - t)^2 + t^2 s^2}\,(x - t m).
    """
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    tt = t.reshape(-1, *([1] * (x.ndim - 1)))
    var = (1 - tt) ** 2 + tt ** 2 * std ** 2
    return mean + (tt * std ** 2 - (1 - tt)) / var * (x - tt * mean)
