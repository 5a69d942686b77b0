"""Chapter "Autoregressive models: MADE and PixelCNN" (book/01b_autoregressive) against independent computations.

torch.distributions on the flattened joint table, brute-force enumeration of binary vectors, pure-Python
sums of kernel offsets, explicit perturbation of future pixels and scipy's Bernoulli log-pmf check
gencore.autoregressive; each key check is also fed a wrong model (a type-B first layer, ``>=`` in the
output layer, an untrained network) that it must reject.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

import gencore
from gencore import autoregressive as ar
from gencore import exercises as E
from gencore.checks import ClaimError
from gencore.data import load_digits
from gencore.metrics import bits_per_dim
from gencore.train import fit, make_step


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _perturb(module, seed=0, scale=0.5):
    g = _gen(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


# ------------------------------------------------------------------ chain rule
def test_chain_rule_in_every_order_equals_the_joint():  # thm-ar-chain-rule
    """The chain-rule product, for all 24 orders of 4 variables, is the joint's log-pmf (torch.distributions)."""
    shape = (2, 3, 2, 3)
    logits = torch.randn(shape, generator=_gen(0), dtype=torch.float64)
    log_joint = logits - torch.logsumexp(logits.reshape(-1), 0)
    cat = torch.distributions.Categorical(logits=logits.reshape(-1))
    flat = cat.sample((300,))
    x = torch.stack(torch.unravel_index(flat, shape), 1)
    expected = cat.log_prob(flat)
    for order in itertools.permutations(range(4)):
        torch.testing.assert_close(ar.chain_rule_log_prob(log_joint, x, order), expected, rtol=0, atol=1e-12)
    # a wrong factorisation (dropping the conditioning of the last factor) is not the joint
    wrong = ar.chain_rule_log_prob(log_joint.logsumexp(3), x[:, :3]) + ar.chain_rule_log_prob(
        log_joint.logsumexp((0, 1, 2)), x[:, 3:])
    assert (wrong - expected).abs().max() > 0.05


def test_chain_rule_rejects_bad_inputs():
    lj = torch.full((2, 2), math.log(0.25), dtype=torch.float64)
    x = torch.tensor([[0, 1]])
    with pytest.raises(ValueError, match="permutation"):
        ar.chain_rule_log_prob(lj, x, [0, 0])
    with pytest.raises(ValueError, match="normalised"):
        ar.chain_rule_log_prob(lj + 1, x)
    with pytest.raises(ValueError, match=r"integer tensor of shape \(batch, 2\)"):
        ar.chain_rule_log_prob(lj, x.double())
    with pytest.raises(ValueError, match="must lie in"):
        ar.chain_rule_log_prob(lj, torch.tensor([[0, 2]]))


# ------------------------------------------------------------------ MADE
@pytest.mark.parametrize("d, hidden, order", [(4, (6,), None), (6, (10, 7), [5, 2, 0, 4, 1, 3]), (3, (4, 4, 4), [2, 1, 0])])
def test_made_connectivity_by_perturbation_and_normalisation(d, hidden, order):
    """def-ar-made-degrees and prop-ar-made-autoregressive: changing an input that does not come before
    output i leaves logit i unchanged exactly; the conditionals sum to 1 over all 2^d binary vectors."""
    torch.manual_seed(0)
    made = _perturb(ar.MADE(d, hidden=hidden, order=order).double(), scale=1.0)
    perm = list(range(d)) if order is None else order
    pos = {v: k for k, v in enumerate(perm)}
    x = torch.randn(50, d, generator=_gen(1), dtype=torch.float64)
    base = made(x).detach()
    for j in range(d):
        x2 = x.clone()
        x2[:, j] += torch.randn(50, generator=_gen(2 + j), dtype=torch.float64)
        changed = (made(x2).detach() - base).abs().max(0).values
        for i in range(d):
            if pos[j] >= pos[i]:
                assert changed[i] == 0, f"output {i} sees input {j}"
    grid = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)
    assert abs(float(made.log_prob(grid).detach().exp().sum()) - 1) < 1e-12


def test_made_masks_follow_the_degree_rule_and_the_wrong_rule_leaks():  # prop-ar-made-autoregressive
    d = 5
    made = ar.MADE(d, hidden=(8, 8), order=[3, 0, 4, 1, 2])
    pos = torch.empty(d, dtype=torch.long)
    pos[torch.tensor([3, 0, 4, 1, 2])] = torch.arange(1, d + 1)
    degrees = ar.made_degrees(d, (8, 8), pos)
    masks = [m.mask for m in made.net if isinstance(m, ar.MaskedLinear)]
    # the rule of the definition, written with numpy loops
    for layer, (m_in, m_out) in enumerate(zip(degrees[:-1], degrees[1:])):
        expect = np.array([[float(a >= b) for b in m_in.tolist()] for a in m_out.tolist()])
        np.testing.assert_array_equal(masks[layer].numpy(), expect)
    expect_out = np.array([[float(p > b) for b in degrees[-1].tolist()] for p in pos.tolist()])
    np.testing.assert_array_equal(masks[-1].numpy(), expect_out)
    paths = masks[2] @ masks[1] @ masks[0]
    allowed = pos[:, None] > pos[None, :]
    assert (paths[~allowed] == 0).all() and (paths[allowed] > 0).all()
    # with >= in the output layer, some output reaches its own input
    leaky = ar.made_mask(degrees[-1], pos) @ masks[1] @ masks[0]
    assert (leaky.diagonal() > 0).any()


# ------------------------------------------------------------------ masked convolutions
@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_masked_conv_masks_match_the_definition(k):  # def-ar-masked-conv
    a = k // 2
    for kind in ("A", "B"):
        mask = ar.MaskedConv2d(kind, 2, 3, k).mask
        expect = np.array([[float(u < 0 or (u == 0 and (v < 0 if kind == "A" else v <= 0)))
                            for v in range(-a, a + 1)] for u in range(-a, a + 1)])
        for o in range(3):
            for i in range(2):
                np.testing.assert_array_equal(mask[o, i].numpy(), expect)


@pytest.mark.parametrize("n_layers", [0, 2])
def test_pixelcnn_logits_ignore_current_and_future_pixels(n_layers):  # prop-ar-pixelcnn-causal
    """Flip every pixel at or after i (raster order): logit i does not move. A type-B first layer fails."""
    torch.manual_seed(0)
    net = _perturb(ar.PixelCNN(channels=6, n_layers=n_layers).double(), seed=1)
    leaky = _perturb(ar.PixelCNN(channels=6, n_layers=n_layers).double(), seed=1)
    leaky.net[0] = _perturb(ar.MaskedConv2d("B", 1, 6, 7).double(), seed=2)
    h, w = 6, 5
    x = (torch.rand(4, 1, h, w, generator=_gen(3)) < 0.4).double()
    base, base_leaky = net(x).detach(), leaky(x).detach()
    leaked = False
    for i in range(h * w):
        x2 = x.clone().view(4, -1)
        x2[:, i:] = 1 - x2[:, i:]
        x2 = x2.view(4, 1, h, w)
        r, c = divmod(i, w)
        assert (net(x2).detach()[:, 0, r, c] == base[:, 0, r, c]).all(), f"logit {i} sees a pixel >= {i}"
        leaked |= bool((leaky(x2).detach()[:, 0, r, c] != base_leaky[:, 0, r, c]).any())
    assert leaked, "the control with a type-B first layer should see its own pixel"


def _reachable_offsets(n_layers):
    """All (du, dv) that a chain of taps reaches, by enumerating sums of taps (pure Python)."""
    a_taps = [(u, v) for u in range(-3, 4) for v in range(-3, 4) if u < 0 or (u == 0 and v < 0)]
    b_taps = [(u, v) for u in range(-1, 2) for v in range(-1, 2) if u < 0 or (u == 0 and v <= 0)]
    reach = set(a_taps)
    for _ in range(n_layers):
        reach = {(u + p, v + q) for (u, v) in reach for (p, q) in b_taps}
    return reach


@pytest.mark.parametrize("n_layers", [0, 1, 3, 5])
def test_blind_spot_matches_enumerated_offsets_and_autograd(n_layers):  # prop-ar-blind-spot
    H = W = 17
    r0, c0 = 12, 6
    torch.manual_seed(0)
    net = _perturb(ar.PixelCNN(channels=6, n_layers=n_layers).double(), seed=4)
    offsets = _reachable_offsets(n_layers)
    expect = torch.zeros(H, W, dtype=torch.bool)
    for u, v in offsets:
        if 0 <= r0 + u < H and 0 <= c0 + v < W:
            expect[r0 + u, c0 + v] = True
    field = ar.receptive_field(net, H, W, r0, c0)
    assert torch.equal(field, expect)
    x = torch.rand(1, 1, H, W, generator=_gen(5), dtype=torch.float64).requires_grad_(True)
    net(x)[0, 0, r0, c0].backward()
    assert torch.equal(x.grad[0, 0] != 0, expect)
    for k in range(1, n_layers + 4):            # the bound of the proposition, and that it is attained
        right = max(v for u, v in offsets if u == -k)
        assert right == min(k - 1, n_layers) + 3
    assert not any(v > -u + 2 for u, v in offsets if u < 0)     # the wedge j > k + 2 is never seen


# ------------------------------------------------------------------ baseline, sampling, bad inputs
def test_independent_bernoulli_is_the_ml_fit_and_matches_scipy():
    x = (torch.rand(200, 6, generator=_gen(6)) < torch.tensor([0.1, 0.5, 0.9, 0.3, 0.0, 1.0])).float()
    model = ar.IndependentBernoulli.fit(x)
    p = np.clip(x.numpy().mean(0), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(model.probs.numpy(), p, rtol=1e-6)
    lp = stats.bernoulli.logpmf(x.numpy(), p).sum(1)
    np.testing.assert_allclose(model.log_prob(x).numpy(), lp, rtol=1e-5)
    # the ML fit: moving any unclipped probability lowers the training log-likelihood
    for i in range(4):
        for eps in (-0.02, 0.02):
            q = p.copy()
            q[i] += eps
            assert stats.bernoulli.logpmf(x.numpy(), q).sum() < lp.sum()
    s = model.sample(5000, generator=_gen(7))
    assert (s.mean(0) - model.probs).abs().max() < 0.03


def test_pixelcnn_samples_follow_its_log_prob_on_2x2_images():
    torch.manual_seed(0)
    net = _perturb(ar.PixelCNN(channels=4, n_layers=1), seed=8)
    grid = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4))).view(16, 1, 2, 2)
    probs = net.log_prob(grid).detach().exp()
    assert abs(float(probs.sum()) - 1) < 1e-5
    s = net.sample(4000, 2, 2, generator=_gen(9))
    again = net.sample(4000, 2, 2, generator=_gen(9), progress=True)
    assert torch.equal(s, again), "a seeded generator must reproduce the samples"
    emp = torch.stack([(s.view(-1, 4) == g.view(4)).all(1).float().mean() for g in grid])
    assert (emp - probs).abs().max() < 0.03


def test_bad_inputs_raise_clear_value_errors():
    net = ar.PixelCNN(channels=4, n_layers=1)
    for bad in (torch.zeros(3, 8, 8), torch.zeros(2, 2, 8, 8), torch.zeros(64)):
        with pytest.raises(ValueError, match=r"x must be binary images of shape \(batch, 1, height, width\)"):
            net.log_prob(bad)
    with pytest.raises(ValueError, match="binary values"):
        net.log_prob(torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="binary values"):
        ar.MADE(4).log_prob(torch.full((2, 4), 0.3))
    with pytest.raises(ValueError, match="mask_type must be 'A' or 'B'"):
        ar.MaskedConv2d("a", 1, 1, 3)
    with pytest.raises(ValueError, match="odd positive integer"):
        ar.MaskedConv2d("B", 1, 1, 2)
    with pytest.raises(ValueError, match=r"must lie in the 8x8 image"):
        ar.receptive_field(net, 8, 8, 8, 0)
    with pytest.raises(ValueError, match="net must be a PixelCNN"):
        ar.receptive_field(ar.MADE(4), 8, 8, 0, 0)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 4\)"):
        ar.IndependentBernoulli.fit(torch.zeros(10, 4)).log_prob(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="1-D tensors of degrees"):
        ar.made_mask(torch.ones(2, 2), torch.ones(3))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        net.sample(0, 4, 4)


# ------------------------------------------------------------------ training claim and its controls
@pytest.fixture(scope="module")
def digits():
    x, _ = load_digits()
    perm = torch.randperm(len(x), generator=_gen(0))
    xb = (x > 0.5).float()
    return xb[perm[300:]], xb[perm[:300]]


def test_trained_models_beat_the_independent_baseline_and_the_controls_fail(digits):
    """The chapter's claim at a smaller budget: held-out NLL <= independent - 0.05 bits/dim on 3 seeds,
    while the untrained networks and the independent baseline fail the same check."""
    x_train, x_test = digits
    base = ar.IndependentBernoulli.fit(x_train)
    threshold = float(bits_per_dim(-base.log_prob(x_test).mean(), 64)) - 0.05
    kinds = {"made": (lambda: ar.MADE(64, hidden=(128,)), lambda x: x, 300, 3e-3),
             "pixelcnn": (lambda: ar.PixelCNN(channels=16, n_layers=2), lambda x: x.view(-1, 1, 8, 8), 300, 5e-3)}

    def score(kind, seed, train=True):
        build, shape, steps, lr = kinds[kind]
        gencore.seed_everything(seed)
        model = build()
        if train:
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            fit(make_step(lambda b: -model.log_prob(b).mean(), opt), shape(x_train), steps=steps,
                batch_size=64, seed=seed, progress=False)
        with torch.no_grad():
            return float(bits_per_dim(-model.log_prob(shape(x_test)).mean(), 64))

    for kind in kinds:
        gencore.check_over_seeds(f"trained {kind}", lambda s: score(kind, s), (0, 1, 2), at_most=threshold)
        with pytest.raises(ClaimError):
            gencore.check_over_seeds(f"untrained {kind}", lambda s: score(kind, s, train=False), (0, 1, 2),
                                     at_most=threshold)
    with pytest.raises(ClaimError):
        gencore.check_over_seeds("independent baseline", lambda s: threshold + 0.05, (0, 1, 2), at_most=threshold)


# ------------------------------------------------------------------ coding exercises
@pytest.mark.parametrize("name", ["bits_per_dim", "made_mask"])
def test_coding_exercises_accept_the_reference_and_name_each_mistake(name):
    assert name in E.available()
    ex = E.EXERCISES[name]
    assert len(ex.mistakes) >= 3
    # the reference passing and every mistake's hint: tests/test_exercises.py, for every registered exercise
    with pytest.raises(ClaimError):
        E.check(name, ex.mistakes[0].wrong, strict=True)


def test_bits_per_dim_reference_is_negative_log2_per_dimension():
    lp = torch.tensor([-44.36, -10.0, -543.4], dtype=torch.float64)
    ref = E.EXERCISES["bits_per_dim"].reference(lp, 64)
    np.testing.assert_allclose(ref.numpy(), -lp.numpy() * np.log2(np.e) / 64, rtol=1e-12)
    solution = lambda log_prob, n_dims: -log_prob / (n_dims * math.log(2))          # the chapter's solution
    assert E.check("bits_per_dim", solution).passed
    mask_solution = lambda a, b, o: ((b[:, None] > a[None, :]) if o else (b[:, None] >= a[None, :])).double()
    assert E.check("made_mask", mask_solution).passed


def test_completion_keeps_the_prefix_and_draws_the_rest():
    torch.manual_seed(0)
    net = _perturb(ar.PixelCNN(channels=4, n_layers=1), seed=10)
    x = (torch.rand(8, 1, 4, 3, generator=_gen(11)) < 0.5).float()
    out = net.complete(x, 5, generator=_gen(12))
    assert torch.equal(out.view(8, -1)[:, :5], x.view(8, -1)[:, :5])
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(net.complete(x, 12), x)                       # nothing left to draw
    assert torch.equal(net.complete(torch.zeros(3, 1, 4, 3), 0, generator=_gen(13)),
                       net.sample(3, 4, 3, generator=_gen(13)))       # sample is completion from index 0
    for bad in (-1, 13, 2.0):
        with pytest.raises(ValueError, match="start must be an integer raster index"):
            net.complete(x, bad)
