"""Chapter "Normalizing flows": gencore.flows, gencore.flow_vae, gencore.flow_gan checked independently.

Log-determinants against autograd's full Jacobian, densities against quadrature and
torch.distributions, pass counts by hooks, training claims against an untrained control.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

import gencore
from gencore import ClaimError, check_over_seeds, exercises, flow_gan, flow_vae, flows
from gencore.data import load_digits, toy_2d
from gencore.train import fit, make_step
from gencore.vae import elbo as vae_elbo


def _perturb(module, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _layers(d=3):
    """Every flow layer of the chapter as (name, forward, inverse), random weights, float64."""
    torch.manual_seed(0)
    out = []
    for name, layer in [("coupling", flows.AffineCoupling([1, 0, 1][:d], hidden=(8,))),
                        ("maf", flows.MAF(d, hidden=(8,))), ("iaf", flows.IAF(d, hidden=(8,))),
                        ("planar", flows.PlanarFlow(d))]:
        layer = _perturb(layer.double(), seed=len(out))
        out.append((name, layer, layer.inverse))
    ciaf = _perturb(flow_vae.ContextIAF(d, 4, hidden=(8,), reverse=True).double(), seed=9)
    h = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out.append(("context_iaf", lambda z: ciaf(z, h.expand(len(z), 4)), lambda y: ciaf.inverse(y, h.expand(len(y), 4))))
    return out


@pytest.mark.parametrize("k", range(5))
def test_every_layer_log_det_matches_the_autograd_jacobian(k):  # thm-flow-change-of-variables
    name, fwd, _ = _layers()[k]
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    _, log_det = fwd(x)
    for i in range(len(x)):
        J = jacobian(lambda v: fwd(v[None])[0][0], x[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(J)[1], atol=1e-10, rtol=0)


@pytest.mark.parametrize("k", range(5))
def test_every_layer_is_inverted_to_float_tolerance(k):
    name, fwd, inv = _layers()[k]
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + k))
    torch.testing.assert_close(inv(fwd(x)[0]), x, atol=1e-9, rtol=0)


def test_triangular_jacobians_of_coupling_maf_and_iaf():  # prop-flow-triangular
    """Coupling: block triangular (kept coordinates copy); MAF/IAF: triangular in the MADE order."""
    for (name, fwd, _), order in zip(_layers()[:3], ([0, 2, 1], [0, 1, 2], [0, 1, 2])):
        x = torch.randn(3, dtype=torch.float64)
        J = jacobian(lambda v: fwd(v[None])[0][0], x)[order][:, order]     # kept coordinates first
        assert torch.equal(torch.triu(J, 1), torch.zeros_like(J)), name
        assert (torch.tril(J, -1) != 0).any(), name                          # and not merely diagonal
        torch.testing.assert_close(torch.diagonal(J).abs().log().sum(), fwd(x[None])[1][0])
    coupling = _perturb(flows.AffineCoupling([1, 0, 1], hidden=(8,)).double())
    x = torch.randn(4, 3, dtype=torch.float64)
    s, _ = coupling._st(x * coupling.mask)
    torch.testing.assert_close(coupling(x)[1], s.sum(-1))                  # log|det| = sum of s over changed coords


@pytest.mark.parametrize("seed", [0, 2, 3])   # (seed 1 puts 0.2% of its mass beyond the grid's +-12)
def test_change_of_variables_density_integrates_to_one_by_quadrature(seed):  # thm-flow-change-of-variables
    torch.manual_seed(seed)
    flow = _perturb(flows.RealNVP(2, n_layers=2, hidden=(8,)).double(), seed=seed, scale=0.3)
    g = torch.linspace(-12, 12, 801, dtype=torch.float64)
    pts = torch.cartesian_prod(g, g)
    with torch.no_grad():
        mass = flow.log_prob(pts).exp().sum() * (g[1] - g[0]) ** 2
    assert abs(float(mass) - 1) < 2e-3


def test_flow_of_identity_layers_has_the_base_density():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    base = torch.distributions.MultivariateNormal(torch.zeros(4), torch.eye(4))
    for flow in (flows.RealNVP(4, n_layers=3), flows.Flow([flows.MAF(4), flows.MAF(4)])):  # fresh = identity
        torch.testing.assert_close(flow.log_prob(x), base.log_prob(x))
        torch.testing.assert_close(flow(x)[0], x)


def _count_made_calls(layer, fn, x):
    calls = []
    h = layer.made.register_forward_hook(lambda *a: calls.append(1))
    try:
        fn(x)
    finally:
        h.remove()
    return len(calls)


def test_maf_density_is_one_pass_and_sampling_d_passes_iaf_the_reverse():  # prop-maf-iaf-passes
    d = 6
    x = torch.randn(5, d)
    maf, iaf = _perturb(flows.MAF(d, hidden=(12,))), _perturb(flows.IAF(d, hidden=(12,)))
    assert _count_made_calls(maf, maf.forward, x) == 1        # log p(x): data -> noise
    assert _count_made_calls(maf, maf.inverse, x) == d        # sampling: noise -> data
    assert _count_made_calls(iaf, iaf.forward, x) == 1        # sampling
    assert _count_made_calls(iaf, iaf.inverse, x) == d        # density of an outside point


def test_planar_invertibility_condition():  # prop-planar-invertible
    torch.manual_seed(0)
    # w.u_hat > -1 for any u, w
    for _ in range(50):
        u, w = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
        assert float(w @ flow_vae.planar_u_hat(u, w)) > -1
    # w.u < -1 unconstrained: in 1-D, f(x) = x + u tanh(w x) decreases near 0, so it is not injective
    layer = flows.PlanarFlow(1, enforce_invertible=False)
    with torch.no_grad():
        layer.u.fill_(-2.0)
        layer.w.fill_(1.0)
    xs = torch.linspace(-3, 3, 601)[:, None]
    y, log_det = layer(xs)
    assert (y[1:, 0] - y[:-1, 0] < 0).any() and (y[1:, 0] - y[:-1, 0] > 0).any()   # not monotone
    assert bool(torch.isfinite(log_det).all())
    with pytest.raises(ValueError, match=r"not invertible: w.u = -2 <= -1"):
        layer.inverse(y)
    layer.enforce_invertible = True                   # reparameterised: now monotone and invertible
    y, _ = layer(xs)
    assert (y[1:, 0] - y[:-1, 0] > 0).all()
    torch.testing.assert_close(layer.inverse(y), xs, atol=1e-5, rtol=0)


def test_planar_transform_matches_planar_flow_with_the_same_parameters():
    layer = _perturb(flows.PlanarFlow(3).double(), seed=4, scale=1.0)
    z = torch.randn(7, 3, dtype=torch.float64)
    rep = lambda t: t.detach().expand(7, *t.shape)                      # noqa: E731
    y, ld = flow_vae.planar_transform(z, rep(layer.u), rep(layer.w), layer.b.detach().expand(7))
    y2, ld2 = layer(z)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(ld, ld2)


def test_flow_elbo_with_identity_flow_is_the_gaussian_elbo():  # prop-flow-elbo
    x = (torch.rand(20, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    for kind in ("planar", "iaf"):
        model = flow_vae.FlowVAE(16, 3, (32,), flow=kind, n_flows=0)
        a = flow_vae.flow_elbo(model, x, 4, generator=torch.Generator().manual_seed(1))
        b = vae_elbo(model.vae, x, 4, form="joint", generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(a, b)


def test_flow_posterior_density_integrates_to_one_in_one_dimension():  # prop-flow-elbo
    """q_K(z_K | x) from the change of variables, integrated over the image grid z_K = f(z_0) (no log-det used)."""
    torch.manual_seed(0)
    model = _perturb(flow_vae.FlowVAE(5, 1, (8,), flow="planar", n_flows=3).double(), seed=2, scale=1.0)
    x = torch.tensor([[1.0, 0, 1, 1, 0]], dtype=torch.float64)
    mu, logvar = model.encode(x)
    z0 = (mu + torch.linspace(-9, 9, 20001, dtype=torch.float64)[:, None] * (0.5 * logvar).exp())[:, None, :]
    zk, log_det = model.push(z0.reshape(1, -1, 1), x.expand(z0.shape[0], 5))
    zk, log_det = zk[0, :, 0], log_det[0]
    log_q = gencore.vae.log_normal_diag(z0[:, 0], mu, logvar) - log_det
    assert (zk[1:] > zk[:-1]).all()                                     # invertible in 1-D: increasing
    mass = torch.trapezoid(log_q.exp(), zk)
    assert abs(float(mass.detach()) - 1) < 1e-4


def test_iwae_bound_is_at_least_the_elbo_with_a_flow_posterior():
    x = (torch.rand(30, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    model = _perturb(flow_vae.FlowVAE(16, 3, (32,), flow="iaf", n_flows=2), seed=1, scale=0.2)
    b = flow_vae.evaluate_flow_bounds(model, x, k=200, batch_size=30)
    assert b.iwae > b.elbo


# --------------------------------------------------------------------------- training claims and controls
def _moons_nll(seed: int, steps: int) -> float:
    gencore.seed_everything(seed)
    flow = flows.RealNVP(2, n_layers=4, hidden=(32,))
    if steps:
        fit(make_step(lambda b: -flow.log_prob(b).mean(), torch.optim.Adam(flow.parameters(), lr=3e-3)),
            toy_2d("moons", 1000, seed=seed), steps=steps, batch_size=256, seed=seed, progress=False)
    with torch.no_grad():
        return float(-flow.log_prob(toy_2d("moons", 1000, seed=100 + seed)).mean())


def test_trained_flow_beats_the_gaussian_on_moons_and_the_untrained_control_fails():
    claim = "the trained flow's test NLL on two moons is below 3.1 nats"
    check_over_seeds(claim, lambda s: _moons_nll(s, 150), seeds=(0, 1, 2), at_most=3.1)
    with pytest.raises(ClaimError):
        check_over_seeds(claim, lambda s: _moons_nll(s, 0), seeds=(0, 1, 2), at_most=3.1)


def _vae_gaps(seed: int):
    """The chapter's experiment for one seed: gaps (IWAE-100 - ELBO) of a Gaussian VAE, of an IAF VAE, and
    of the control, the trained Gaussian VAE followed by IAF layers that were never trained."""
    x = (load_digits()[0] > 0.5).float()
    train, test = x[:1500], x[1500:]
    out = {}
    for kind in ("Gaussian", "iaf"):
        gencore.seed_everything(seed)
        noise = torch.Generator().manual_seed(seed)
        if kind == "Gaussian":
            model = gencore.vae.VAE(64, 8, (128,))
            loss = lambda b: -model.elbo(b, generator=noise).mean()                   # noqa: E731
        else:
            model = flow_vae.FlowVAE(64, 8, (128,), flow="iaf", n_flows=2)
            loss = lambda b: -flow_vae.flow_elbo(model, b, generator=noise).mean()    # noqa: E731
        fit(make_step(loss, torch.optim.Adam(model.parameters(), lr=3e-3)), train, steps=200, batch_size=200,
            seed=seed, progress=False)
        if kind == "Gaussian":
            wrapped = flow_vae.FlowVAE(64, 8, (128,), n_flows=0)
            wrapped.vae.load_state_dict(model.state_dict())
            gencore.seed_everything(seed)
            control = flow_vae.FlowVAE(64, 8, (128,), flow="iaf", n_flows=2)
            control.vae.load_state_dict(model.state_dict())
            b = flow_vae.evaluate_flow_bounds(control, test, k=100, batch_size=300)
            out["control"] = b.iwae - b.elbo
            model = wrapped
        b = flow_vae.evaluate_flow_bounds(model, test, k=100, batch_size=300)
        out[kind] = b.iwae - b.elbo
    return out


def test_iaf_posterior_shrinks_the_gap_and_the_untrained_flow_control_fails():  # prop-flow-elbo
    gaps = {s: _vae_gaps(s) for s in (0, 1, 2)}
    claim = "the IAF posterior's bound gap is smaller than the Gaussian's"
    check_over_seeds(claim, lambda s: gaps[s]["Gaussian"] - gaps[s]["iaf"], at_least=0.0)
    with pytest.raises(ClaimError):
        check_over_seeds(claim, lambda s: gaps[s]["Gaussian"] - gaps[s]["control"], at_least=0.0)


# --------------------------------------------------------------------------- Flow-GAN pieces
class _Uniform(torch.nn.Module):
    def log_prob(self, x):
        return torch.zeros(len(x))


def test_dequantised_bits_per_dim_of_a_uniform_density_is_log2_17():
    levels = torch.randint(0, 17, (10, 64), generator=torch.Generator().manual_seed(0)).float()
    assert math.isclose(flow_gan.dequantised_bits_per_dim(_Uniform(), levels), math.log2(17), rel_tol=1e-9)


def test_flow_gan_modes_update_the_flow_and_log_what_they_use():  # def-flow-gan
    levels = torch.randint(0, 17, (64, 64), generator=torch.Generator().manual_seed(0)).float()
    for mode, keys in (("mle", {"nll"}), ("adversarial", {"d_loss", "g_loss"}),
                       ("hybrid", {"d_loss", "g_loss", "nll"})):
        gencore.seed_everything(0)
        flow = flows.RealNVP(64, n_layers=2, hidden=(16,))
        disc = None if mode == "mle" else gencore.gan.MLPDiscriminator(64, (16,))
        step = flow_gan.flow_gan_step(flow, disc, flow_gan.FlowGANConfig(mode),
                                      generator=torch.Generator().manual_seed(0))
        before = [p.detach().clone() for p in flow.parameters()]
        h = fit(lambda b: step(flow_gan.dequantise(b)), levels, steps=3, batch_size=32, progress=False)
        assert set(h.keys()) == keys
        assert any(not torch.equal(a, b) for a, b in zip(before, flow.parameters()))


def test_digits_in_the_mnist_frame_are_recognised_by_the_book_classifier():
    x, y = load_digits()
    acc = gencore.classifier.accuracy(gencore.classifier.load(), flow_gan.digits_to_mnist_frame(x[:500]), y[:500])
    assert acc > 0.75


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="mode must be one of mle, adversarial, hybrid"):
        flow_gan.FlowGANConfig("wgan")
    with pytest.raises(ValueError, match="lam must be >= 0"):
        flow_gan.FlowGANConfig("hybrid", lam=-1.0)
    with pytest.raises(ValueError, match="needs a discriminator"):
        flow_gan.flow_gan_step(flows.RealNVP(4), None, flow_gan.FlowGANConfig("hybrid"))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 64\)"):
        flow_gan.digits_to_mnist_frame(torch.zeros(3, 784))
    with pytest.raises(ValueError, match="levels must be a tensor of integers in 0..16"):
        flow_gan.dequantise(torch.full((2, 64), 17.0))
    with pytest.raises(ValueError, match="unknown flow 'radial'"):
        flow_vae.FlowVAE(4, 2, flow="radial")
    with pytest.raises(ValueError, match="n_flows must be a non-negative integer"):
        flow_vae.FlowVAE(4, 2, n_flows=-1)
    with pytest.raises(ValueError, match="planar_transform expects"):
        flow_vae.planar_transform(torch.zeros(3, 2), torch.zeros(2), torch.zeros(2), torch.zeros(()))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        flow_vae.flow_iwae_bound(flow_vae.FlowVAE(4, 2, (8,)), torch.zeros(2, 4), 0)


# --------------------------------------------------------------------------- the coding exercise
def test_planar_log_det_exercise_reference_passes_and_each_mistake_fails_with_its_hint():
    ex = exercises.EXERCISES["planar_log_det"] if "planar_log_det" in exercises.available() else None
    assert ex is not None
    assert exercises.check("planar_log_det", flow_vae.planar_log_det).passed
    for m in ex.mistakes:
        v = exercises.check("planar_log_det", m.wrong)
        assert not v.passed and v.message == m.hint, m.hint


def test_planar_log_det_exercise_catches_the_missing_abs():
    def no_abs(z, u, w, b):
        return torch.log(1 + (1 - torch.tanh(z @ w + b) ** 2) * (u @ w))
    v = exercises.check("planar_log_det", no_abs)
    assert not v.passed and "NaN" in v.message
    v = exercises.check("planar_log_det", lambda *a: -flow_vae.planar_log_det(*a))   # the inverse map's sign
    assert not v.passed and v.message.startswith("wrong sign")


def test_planar_log_det_reference_matches_autograd():
    for z, u, w, b in flow_vae._planar_cases():
        f = lambda v: v + u * torch.tanh(v @ w + b)                      # noqa: E731
        for i in range(len(z)):
            J = jacobian(f, z[i])
            torch.testing.assert_close(flow_vae.planar_log_det(z[i:i + 1], u, w, b)[0], torch.linalg.slogdet(J)[1])
