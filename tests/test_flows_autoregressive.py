"""gencore.autoregressive and gencore.flows: causality by autograd, log-dets by full Jacobians."""
from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from gencore import autoregressive as ar
from gencore import flows


def _perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Random weights everywhere (flows start at the identity; a test of the identity proves little)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


# ------------------------------------------------------------------ causal masks (autograd)
@pytest.mark.parametrize("order", [None, [3, 0, 4, 1, 2]])
def test_made_output_i_depends_only_on_earlier_inputs(order):
    torch.manual_seed(0)
    made = _perturb(ar.MADE(5, hidden=(16, 16), order=order).double())
    x = torch.rand(1, 5, dtype=torch.float64)
    J = jacobian(lambda v: made(v), x)[0, :, 0, :]          # J[i, j] = d logit_i / d x_j
    perm = list(range(5)) if order is None else order
    pos = {v: k for k, v in enumerate(perm)}
    allowed = torch.tensor([[pos[j] < pos[i] for j in range(5)] for i in range(5)])
    assert (J[~allowed] == 0).all(), "an output sees an input that is not before it"
    assert (J[allowed] != 0).float().mean() > 0.9, "the mask also cut allowed connections"


def test_made_log_prob_is_a_normalised_distribution_over_binary_vectors():
    torch.manual_seed(1)
    made = _perturb(ar.MADE(4, hidden=(12,)).double(), seed=1, scale=1.0)
    grid = torch.tensor([[(k >> i) & 1 for i in range(4)] for k in range(16)], dtype=torch.float64)
    total = torch.logsumexp(made.log_prob(grid), 0)
    assert abs(float(total.detach())) < 1e-10, "the chain rule must sum to one over all 2^d vectors"
    s = made.float().sample(2000, generator=torch.Generator().manual_seed(0))
    emp = torch.tensor([(s == row.float()).all(1).float().mean().item() for row in grid])
    assert (emp - made.log_prob(grid.float()).exp()).abs().max() < 0.04  # samples follow log_prob


@pytest.mark.parametrize("n_layers", [0, 3])
def test_pixelcnn_is_causal_in_raster_order_and_has_a_blind_spot(n_layers):
    torch.manual_seed(0)
    net = _perturb(ar.PixelCNN(channels=8, n_layers=n_layers).double(), scale=0.5)
    H = W = 15
    x = torch.rand(1, 1, H, W, dtype=torch.float64)
    r, c = 10, 4
    x.requires_grad_(True)
    net(x)[0, 0, r, c].backward()
    g = x.grad[0, 0]
    raster = torch.arange(H * W).view(H, W)
    future = raster >= raster[r, c]
    assert (g[future] == 0).all(), "output (10, 4) sees itself or a later pixel"
    past = ~future
    seen = g != 0
    assert seen[past].any()
    assert seen[r, c - 1] and seen[r - 1, c + 3]      # the 7x7 type-A layer's reach
    if n_layers == 3:
        # the plain stack's blind spot: the row just above is seen only up to c + 3, although
        # pixels further up and further right, (r - 4, c + 6), are seen through the stack
        assert seen[r - 4, c + 6] and not seen[r - 1, c + 4:].any()


def test_pixelcnn_rejects_wrong_image_shapes():
    net = ar.PixelCNN(channels=4, n_layers=1)
    for bad in (torch.zeros(2, 28, 28), torch.zeros(2, 3, 8, 8), torch.zeros(784)):
        with pytest.raises(ValueError, match=r"x must be binary images of shape \(batch, 1, height, width\)"):
            net(bad)
    with pytest.raises(ValueError, match="mask_type must be 'A' or 'B'"):
        ar.MaskedConv2d("C", 1, 1, 3)
    with pytest.raises(ValueError, match="odd positive integer"):
        ar.MaskedConv2d("A", 1, 1, 4)
    with pytest.raises(ValueError, match="permutation"):
        ar.MADE(3, order=[0, 0, 1])


def test_pixelcnn_sample_and_bits_per_dim():
    torch.manual_seed(0)
    net = ar.PixelCNN(channels=4, n_layers=1)
    s = net.sample(3, 5, 4, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, 1, 5, 4) and set(s.unique().tolist()) <= {0.0, 1.0}
    bpd = net.bits_per_dim(s)
    torch.testing.assert_close(bpd, -net.log_prob(s) / (20 * math.log(2)))


# ------------------------------------------------------------------ flows: log-det, inverse
def _layers(d=4):
    torch.manual_seed(0)
    return {
        "coupling": flows.AffineCoupling([1, 0, 1, 0], hidden=(16,)),
        "maf": flows.MAF(d, hidden=(16,)),
        "maf_order": flows.MAF(d, hidden=(16,), order=[2, 0, 3, 1]),
        "iaf": flows.IAF(d, hidden=(16,)),
        "planar": flows.PlanarFlow(d, init_scale=0.8),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_log_det_matches_autograd_full_jacobian(name):
    layer = _perturb(_layers()[name].double(), seed=3)
    x = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, log_det = layer(x)
    for i in range(len(x)):
        J = jacobian(lambda v: layer(v[None])[0][0], x[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(J).logabsdet, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(_layers()))
def test_inverse_recovers_the_input(name):
    layer = _perturb(_layers()[name].double(), seed=4)
    x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y, _ = layer(x)
    torch.testing.assert_close(layer.inverse(y), x, rtol=1e-9, atol=1e-9)


def test_realnvp_log_det_and_inverse_through_the_chain():
    flow = _perturb(flows.RealNVP(4, n_layers=3, hidden=(16,)).double(), seed=5)
    x = torch.randn(5, 4, dtype=torch.float64)
    _, log_det = flow(x)
    for i in range(5):
        J = jacobian(lambda v: flow(v[None])[0][0], x[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(J).logabsdet, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(flow.inverse(flow(x)[0]), x, rtol=1e-9, atol=1e-9)


def test_identity_flow_nll_equals_the_base_density():
    # fresh couplings and MAF layers start at the identity: log p(x) is the standard normal's
    x = torch.randn(20, 4, dtype=torch.float64)
    base = torch.distributions.MultivariateNormal(torch.zeros(4, dtype=torch.float64),
                                                  torch.eye(4, dtype=torch.float64)).log_prob(x)
    for flow in (flows.RealNVP(4, n_layers=2).double(), flows.Flow([flows.MAF(4)]).double()):
        torch.testing.assert_close(flow.log_prob(x), base, rtol=1e-12, atol=1e-12)


def test_flow_density_integrates_to_one_in_2d():
    flow = _perturb(flows.RealNVP(2, n_layers=3, hidden=(16,)).double(), seed=6, scale=0.2)
    t = torch.linspace(-8, 8, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    grid = torch.stack([xx.flatten(), yy.flatten()], 1)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum() * (t[1] - t[0]) ** 2
    assert abs(float(mass) - 1) < 2e-3


def test_non_invertible_configurations_are_rejected():
    with pytest.raises(ValueError, match="both 0s and 1s"):
        flows.AffineCoupling([1, 1, 1])
    with pytest.raises(ValueError, match="both 0s and 1s"):
        flows.AffineCoupling([0, 0])
    p = flows.PlanarFlow(3, enforce_invertible=False)
    with torch.no_grad():
        p.w.copy_(torch.tensor([1.0, 0.0, 0.0]))
        p.u.copy_(torch.tensor([-2.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="not invertible: w.u = -2 <= -1"):
        p.inverse(torch.zeros(2, 3))
    q = flows.PlanarFlow(3)  # the same parameters, constrained: invertible
    with torch.no_grad():
        q.w.copy_(p.w)
        q.u.copy_(p.u)
    assert float((q.w @ q.u_hat()).detach()) > -1
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
        q(torch.zeros(3))
    with pytest.raises(ValueError, match="d must be an integer >= 2"):
        flows.RealNVP(1)
