"""Tests of gencore.wae and of the WAE results, checked with LPs independent of gencore.ot."""
import numpy as np
import ot
import pytest
import scipy.optimize
import torch

from gencore.nets import mlp
from gencore.ot.sample import imq_kernel, mmd2, sliced_wasserstein
from gencore.train import fit
from gencore.wae import PENALTIES, WAE, aae_step, latent_penalty, wae_gan_step, wae_step


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


def test_latent_penalties_match_the_library_distances():
    g = torch.Generator().manual_seed(0)
    z, zp = torch.randn(32, 8, generator=g), torch.randn(32, 8, generator=g)
    torch.testing.assert_close(latent_penalty(z, zp, "mmd"), mmd2(z, zp, "imq", sigma2=1.0))
    sw = latent_penalty(z, zp, "sw", generator=torch.Generator().manual_seed(3), n_projections=10)
    torch.testing.assert_close(sw, sliced_wasserstein(z, zp, 10, p=2, generator=torch.Generator().manual_seed(3)) ** 2)
    assert set(PENALTIES) == {"mmd", "sw"}
    with pytest.raises(ValueError, match="kind must be one of"):
        latent_penalty(z, zp, "kl")
    with pytest.raises(ValueError, match="penalty must be one of"):
        wae_step(WAE(4, 2), torch.optim.SGD(WAE(4, 2).parameters(), lr=0.1), penalty="kl")


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
