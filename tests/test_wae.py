"""Tests of gencore.wae and of the WAE results, checked with LPs independent of gencore.ot."""
import numpy as np
import ot
import pytest
import scipy.optimize
import torch

from gencore.nets import mlp
from gencore.ot import ot_cost
from gencore.ot.sample import imq_kernel, mmd2, sliced_wasserstein
from gencore.train import fit
from gencore.wae import PENALTIES, WAE, aae_step, latent_penalty, prior_moment_w2, wae_gan_step, wae_step


def _coupling_lp(a, b, C):
    """min <P, C> over couplings of a and b, with scipy's HiGHS (independent of gencore.ot and POT)."""
    n, m = C.shape
    A = np.zeros((n + m, n * m))
    for i in range(n):
        A[i, i * m:(i + 1) * m] = 1
    for j in range(m):
        A[n + j, j::m] = 1
    res = scipy.optimize.linprog(C.ravel(), A_eq=A, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs")
    return res.fun


def _toy(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5, 2))
    a = rng.uniform(0.2, 1, size=5)
    a /= a.sum()
    z = np.linspace(-1.5, 1.5, 5)
    p_z = rng.uniform(0.2, 1, size=5)
    p_z /= p_z.sum()
    G = np.stack([np.abs(z), z**2 - 1], 1)  # G(-z) = G(z): not injective
    return x, a, z, p_z, G


def test_primal_form_with_deterministic_decoder_equals_transport_cost():  # thm-wae-primal
    for seed in range(3):
        x, a, z, p_z, G = _toy(seed)
        y, inv = np.unique(G.round(12), axis=0, return_inverse=True)
        p_g = np.bincount(inv.ravel(), weights=p_z, minlength=len(y))
        w_c = ot.emd2(a, p_g, ot.dist(x, y))  # POT, squared Euclidean cost
        primal = _coupling_lp(a, p_z, ot.dist(x, G))
        assert len(y) < len(z)
        assert primal == pytest.approx(w_c, rel=1e-8, abs=1e-10)
        # thm-wae-primal: the library's LP (used in the chapter) gives the same value
        assert float(ot_cost(torch.tensor(a), torch.tensor(p_z), torch.tensor(ot.dist(x, G)))) == pytest.approx(
            w_c, rel=1e-7, abs=1e-10)


def test_stochastic_decoder_gives_an_upper_bound_that_can_be_strict():  # thm-wae-stochastic-bound
    x, a, z, p_z, G = _toy(1)
    y = np.unique(G.round(12), axis=0)
    rng = np.random.default_rng(5)
    gaps = []
    for _ in range(5):
        kernel = rng.uniform(size=(len(z), len(y))) ** 3
        kernel /= kernel.sum(1, keepdims=True)
        C = ot.dist(x, y)
        w_c = ot.emd2(a, p_z @ kernel, C)
        bound = _coupling_lp(a, p_z, C @ kernel.T)
        assert w_c <= bound + 1e-10
        # thm-wae-stochastic-bound: the library's LP agrees on both sides
        assert float(ot_cost(torch.tensor(a), torch.tensor(p_z @ kernel), torch.tensor(C))) == pytest.approx(
            w_c, rel=1e-7, abs=1e-10)
        gaps.append(bound - w_c)
    assert max(gaps) > 1e-3


def test_penalised_objective_increases_to_the_transport_cost():  # prop-wae-penalised
    x, a, z, p_z, G = _toy(2)
    C = ot.dist(x, G)
    w_c = _coupling_lp(a, p_z, C)
    K = imq_kernel(torch.tensor(z)[:, None], torch.tensor(z)[:, None]).numpy()
    n, m = C.shape

    def solve(lam):
        # variables: the coupling pi >= 0 with row sums a; objective <pi, C> + lam (q - p)^T K (q - p)
        def f(v):
            pi = v.reshape(n, m)
            d = pi.sum(0) - p_z
            return (pi * C).sum() + lam * d @ K @ d

        def grad(v):
            pi = v.reshape(n, m)
            d = pi.sum(0) - p_z
            return (C + 2 * lam * (K @ d)[None, :]).ravel()

        cons = {"type": "eq", "fun": lambda v: v.reshape(n, m).sum(1) - a,
                "jac": lambda v: np.kron(np.eye(n), np.ones(m))}
        v0 = np.outer(a, np.full(m, 1 / m)).ravel()
        res = scipy.optimize.minimize(f, v0, jac=grad, constraints=[cons], bounds=[(0, None)] * (n * m),
                                      method="SLSQP", options={"ftol": 1e-12, "maxiter": 1000})
        return res.fun

    values = [solve(lam) for lam in (0.1, 1.0, 10.0, 1000.0)]
    assert all(v <= w_c + 1e-7 for v in values)
    assert all(b >= a_ - 1e-7 for a_, b in zip(values, values[1:]))
    assert values[0] < w_c - 1e-2  # the relaxation is not trivially tight
    assert values[-1] == pytest.approx(w_c, rel=1e-3)


def test_sliced_wasserstein_is_below_w2_for_every_direction_set():  # prop-wae-sw-lower-bound
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g, dtype=torch.float64) * 0.5 + 1.0
    y = torch.randn(60, 4, generator=g, dtype=torch.float64)
    w2 = np.sqrt(ot.emd2(np.full(60, 1 / 60), np.full(60, 1 / 60), ot.dist(x.numpy(), y.numpy())))
    for _ in range(20):
        assert sliced_wasserstein(x, y, n_projections=3, p=2, generator=g).item() <= w2 + 1e-12
    # along the direction of the mean shift, the 1-D distance is close to W2 (the bound is nearly tight)
    shift_dir = torch.ones(4, 1, dtype=torch.float64) / 2
    one_d = np.sqrt(np.mean((np.sort((x @ shift_dir).numpy()[:, 0]) - np.sort((y @ shift_dir).numpy()[:, 0])) ** 2))
    assert one_d <= w2 and one_d > 0.7 * w2


def test_wae_model_shapes_and_reconstruction_cost():
    torch.manual_seed(0)
    model = WAE(10, 3, hidden=(8,))
    x = torch.rand(4, 10)
    z = model.encode(x)
    assert z.shape == (4, 3)
    torch.testing.assert_close(model.encode(x), z)  # deterministic encoder
    torch.testing.assert_close(model.reconstruction_cost(x), ((x - model.decode(z)) ** 2).sum(1))
    stoch = WAE(10, 3, hidden=(8,), stochastic=True)
    g = torch.Generator().manual_seed(0)
    assert not torch.allclose(stoch.encode(x, g), stoch.encode(x, g))
    s = model.sample(5, generator=g)
    assert s.shape == (5, 10) and bool(((s >= 0) & (s <= 1)).all())
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(B, 10\)"):
        model.encode(torch.zeros(4, 9))
    with pytest.raises(ValueError, match="z_dim must be a positive integer"):
        WAE(10, 0)


def _imq_mmd2_double_loop(z, zp, sigma2=1.0, scales=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)):
    """Unbiased IMQ MMD^2 summed over scales, written as explicit loops (independent of gencore.ot)."""
    z, zp = np.asarray(z, dtype=np.float64), np.asarray(zp, dtype=np.float64)
    n, m, d = len(z), len(zp), z.shape[1]
    total = 0.0
    for s in scales:
        C = 2 * d * sigma2 * s
        k = lambda a, b: C / (C + float(np.sum((a - b) ** 2)))  # noqa: E731
        kxx = sum(k(z[i], z[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        kyy = sum(k(zp[i], zp[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        kxy = sum(k(z[i], zp[j]) for i in range(n) for j in range(m)) / (n * m)
        total += kxx + kyy - 2 * kxy
    return total


def _sliced_w2_squared(z, zp, theta):
    """SW_2^2 along the given unit directions, by sorting with numpy."""
    pz, pp = np.sort(z @ theta, axis=0), np.sort(zp @ theta, axis=0)
    return float(np.mean((pz - pp) ** 2))


def test_latent_penalties_match_independent_computations():
    g = torch.Generator().manual_seed(0)
    z, zp = torch.randn(20, 8, generator=g, dtype=torch.float64) * 0.8 + 0.3, torch.randn(17, 8, generator=g,
                                                                                           dtype=torch.float64)
    assert latent_penalty(z, zp, "mmd").item() == pytest.approx(_imq_mmd2_double_loop(z.numpy(), zp.numpy()),
                                                                rel=1e-10)
    assert latent_penalty(z, zp, "mmd", sigma2=2.0, scales=(1.0,)).item() == pytest.approx(
        _imq_mmd2_double_loop(z.numpy(), zp.numpy(), sigma2=2.0, scales=(1.0,)), rel=1e-10)
    # SW: the same directions as the library draws (d x n_projections normal, normalised columns)
    zs, zps = z[:17], zp
    theta = torch.randn(8, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).numpy()
    sw = latent_penalty(zs, zps, "sw", generator=torch.Generator().manual_seed(3), n_projections=10)
    assert sw.item() == pytest.approx(_sliced_w2_squared(zs.numpy(), zps.numpy(), theta), rel=1e-10)
    assert set(PENALTIES) == {"mmd", "sw"}
    with pytest.raises(ValueError, match="kind must be one of"):
        latent_penalty(z, zp, "kl")
    with pytest.raises(ValueError, match="penalty must be one of"):
        wae_step(WAE(4, 2), torch.optim.SGD(WAE(4, 2).parameters(), lr=0.1), penalty="kl")


def _wae_objective(model, x, penalty, lam, seed, n_projections=50):
    # the objective the step minimises, with the prior draws (and directions) the step will draw
    g = torch.Generator().manual_seed(seed)
    z = model.encode(x, g)
    pen = latent_penalty(z, model.prior_sample(len(x), x, g), penalty, generator=g, n_projections=n_projections)
    return (model.reconstruction_cost(x, z).mean() + lam * pen).item(), pen.item()


@pytest.mark.parametrize("penalty", ["mmd", "sw"])
def test_one_wae_step_decreases_its_objective_on_the_batch(penalty):
    torch.manual_seed(0)
    x = torch.rand(64, 12, generator=torch.Generator().manual_seed(0))
    model = WAE(12, 2, hidden=(16,))
    with torch.no_grad():
        model.encoder[-1].bias.fill_(2.0)  # codes far from the prior: the penalty matters
    before, pen_before = _wae_objective(model, x, penalty, 10.0, seed=5)
    step = wae_step(model, torch.optim.SGD(model.parameters(), lr=1e-3), penalty=penalty, lam=10.0,
                    generator=torch.Generator().manual_seed(5))
    logs = step(x)
    assert logs["loss"].item() == pytest.approx(before, rel=1e-5)  # the step saw that objective
    after, pen_after = _wae_objective(model, x, penalty, 10.0, seed=5)
    assert after < before - 1e-4
    # the latent term alone: a step with lam large decreases the penalty
    model2 = WAE(12, 2, hidden=(16,))
    with torch.no_grad():
        model2.encoder[-1].bias.fill_(2.0)
    _, p0 = _wae_objective(model2, x, penalty, 1e3, seed=6)
    wae_step(model2, torch.optim.SGD(model2.parameters(), lr=1e-4), penalty=penalty, lam=1e3,
             generator=torch.Generator().manual_seed(6))(x)
    _, p1 = _wae_objective(model2, x, penalty, 1e3, seed=6)
    assert p1 < p0


def _disc_loss(disc, z_prior, z):
    from gencore.gan import discriminator_loss
    return discriminator_loss(disc(z_prior), disc(z)).item()


def _adv_term(disc, z):
    return torch.nn.functional.softplus(-disc(z)).mean().item()  # -log sigmoid(D(z))


@pytest.mark.parametrize("kind", ["wae-gan", "aae"])
def test_adversarial_steps_move_each_player_downhill(kind):
    torch.manual_seed(0)
    x = torch.rand(64, 12, generator=torch.Generator().manual_seed(0))
    model = WAE(12, 2, hidden=(16,), stochastic=(kind == "aae"))
    disc = mlp([2, 16, 1])
    # the codes the step will see: same generator seed, same draw order
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        if kind == "aae":
            model.reconstruction_cost(x, generator=g)  # phase 1 draws first
        z0 = model.encode(x, g)
        zp = model.prior_sample(len(x), x, g)
        d_before = _disc_loss(disc, zp, z0)
    opt_d = torch.optim.SGD(disc.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(9)
    if kind == "wae-gan":
        step = wae_gan_step(model, disc, torch.optim.SGD(model.parameters(), lr=1e-2), opt_d, lam=1.0, generator=gen)
    else:
        # reconstruction phase off (lr = 0) so that phase 2 sees exactly the codes z0
        step = aae_step(model, disc, torch.optim.SGD(model.parameters(), lr=0.0), opt_d,
                        torch.optim.SGD(model.encoder.parameters(), lr=1e-2), generator=gen)
    logs = step(x)
    assert logs["d_loss"].item() == pytest.approx(d_before, rel=1e-6)
    with torch.no_grad():
        assert _disc_loss(disc, zp, z0) < d_before  # the discriminator's step went downhill
        g2 = torch.Generator().manual_seed(9)
        if kind == "aae":
            model.reconstruction_cost(x, generator=g2)
        z1 = model.encode(x, g2)  # the same noise, the updated encoder
        # the encoder's adversarial term against the updated discriminator went down
        assert _adv_term(disc, z1) < logs["penalty"].item()
        assert logs["penalty"].item() == pytest.approx(_adv_term(disc, z0), rel=1e-6)


def test_aae_reconstruction_phase_decreases_the_reconstruction_cost():
    torch.manual_seed(0)
    x = torch.rand(64, 12, generator=torch.Generator().manual_seed(0))
    model, disc = WAE(12, 2, hidden=(16,), stochastic=True), mlp([2, 16, 1])
    with torch.no_grad():
        before = model.reconstruction_cost(x, generator=torch.Generator().manual_seed(4)).mean().item()
    step = aae_step(model, disc, torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(disc.parameters(), lr=0.0),
                    torch.optim.SGD(model.encoder.parameters(), lr=0.0), generator=torch.Generator().manual_seed(4))
    logs = step(x)
    assert logs["recon"].item() == pytest.approx(before, rel=1e-6)
    with torch.no_grad():
        after = model.reconstruction_cost(x, generator=torch.Generator().manual_seed(4)).mean().item()
    assert after < before


@pytest.mark.parametrize("penalty", ["mmd", "sw"])
def test_wae_step_pulls_codes_towards_the_prior(penalty):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 12, generator=g)
    model = WAE(12, 2, hidden=(16,))
    with torch.no_grad():  # start with codes far from N(0, I)
        model.encoder[-1].bias.fill_(3.0)
    before = mmd2(model.encode(x[:200]).detach(), torch.randn(200, 2, generator=g))
    step = wae_step(model, torch.optim.Adam(model.parameters(), lr=1e-2), penalty=penalty, lam=10.0, generator=g)
    history = fit(step, x, steps=150, batch_size=100, progress=False)
    after = mmd2(model.encode(x[:200]).detach(), torch.randn(200, 2, generator=g))
    assert history.keys() == ["loss", "recon", "penalty"]
    assert after < 0.2 * before


def test_adversarial_steps_update_the_right_parameters():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 12, generator=g)
    for kind in ("wae-gan", "aae"):
        model = WAE(12, 2, hidden=(16,), stochastic=(kind == "aae"))
        disc = mlp([2, 8, 1])
        dec0 = [p.clone() for p in model.decoder.parameters()]
        disc0 = [p.clone() for p in disc.parameters()]
        opt_d = torch.optim.SGD(disc.parameters(), lr=0.1)
        if kind == "wae-gan":
            step = wae_gan_step(model, disc, torch.optim.SGD(model.parameters(), lr=0.1), opt_d, lam=1.0, generator=g)
        else:
            # the reconstruction phase is switched off (lr = 0): only the adversarial phases move anything,
            # so the decoder must not change
            step = aae_step(model, disc, torch.optim.SGD(model.parameters(), lr=0.0), opt_d,
                            torch.optim.SGD(model.encoder.parameters(), lr=0.1), generator=g)
        logs = step(x)
        assert set(logs) == {"recon", "d_loss", "penalty"}
        assert any(not torch.equal(p, q) for p, q in zip(disc.parameters(), disc0))
        dec_changed = any(not torch.equal(p, q) for p, q in zip(model.decoder.parameters(), dec0))
        assert dec_changed == (kind == "wae-gan")
        assert all(p.requires_grad for p in disc.parameters())


@pytest.mark.cuda
def test_wae_steps_run_on_cuda(cuda_device):
    g = torch.Generator(device=cuda_device).manual_seed(0)
    x = torch.rand(64, 12, device=cuda_device)
    for penalty in ("mmd", "sw"):
        model = WAE(12, 2, hidden=(16,)).to(cuda_device)
        logs = wae_step(model, torch.optim.Adam(model.parameters()), penalty=penalty, generator=g)(x)
        assert logs["penalty"].device.type == "cuda"


def test_prior_moment_w2_matches_scipy_and_fails_for_wrong_codes():
    import scipy.linalg
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 4)) * 0.5
    z = rng.normal(size=(3000, 4)) @ A.T + np.array([0.5, -0.2, 0.0, 1.0])
    mu, S = z.mean(0), np.cov(z.T)
    ref = np.sqrt(mu @ mu + np.trace(S + np.eye(4) - 2 * np.real(scipy.linalg.sqrtm(S))))
    assert prior_moment_w2(torch.tensor(z)).item() == pytest.approx(ref, rel=1e-8)
    g = torch.Generator().manual_seed(0)
    good = prior_moment_w2(torch.randn(5000, 8, generator=g)).item()
    bad = prior_moment_w2(0.5 * torch.randn(5000, 8, generator=g) + 0.3).item()  # wrong scale and mean
    assert good < 0.1 < 1.0 < bad
    with pytest.raises(ValueError, match="more rows than columns"):
        prior_moment_w2(torch.zeros(3, 8))
