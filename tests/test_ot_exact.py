"""Exact optimal transport (gencore.ot.exact) against POT, SciPy and closed forms.

Chapter "Optimal transport and Wasserstein distances".
"""
import numpy as np
import ot
import pytest
import scipy.linalg
import scipy.optimize
import scipy.spatial.distance
import scipy.stats
import torch

from gencore.ot import (gaussian_w2, kantorovich_dual, kantorovich_rubinstein_dual, ot_cost, ot_plan,
                        wasserstein_1d)


def random_problem(seed, n, m, d=2):
    rng = np.random.default_rng(seed)
    a = rng.random(n) + 0.1
    b = rng.random(m) + 0.1
    a, b = a / a.sum(), b / b.sum()
    x, y = rng.normal(size=(n, d)), rng.normal(size=(m, d)) + 0.5
    return a, b, ot.dist(x, y, metric="euclidean")


@pytest.mark.parametrize("seed,n,m", [(0, 5, 7), (1, 20, 20), (2, 40, 25), (3, 60, 80)])
def test_ot_cost_matches_pot_emd2(seed, n, m):  # def-ot-kantorovich
    a, b, C = random_problem(seed, n, m)
    np.testing.assert_allclose(ot_cost(a, b, C), ot.emd2(a, b, C), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ot_plan_satisfies_marginals_and_attains_cost(seed):
    a, b, C = random_problem(seed, 30, 45)
    P = ot_plan(a, b, C)
    assert P.shape == (30, 45)
    assert P.min() >= 0
    np.testing.assert_allclose(P.sum(1), a, atol=1e-9)
    np.testing.assert_allclose(P.sum(0), b, atol=1e-9)
    np.testing.assert_allclose((P * C).sum(), ot.emd2(a, b, C), rtol=1e-7)


def test_plan_between_identical_histograms_at_zero_cost_is_diagonal():
    rng = np.random.default_rng(4)
    a = rng.random(12)
    a /= a.sum()
    x = np.sort(rng.normal(size=12))
    C = np.abs(x[:, None] - x[None, :])         # zero on the diagonal, > 0 off it
    P = ot_plan(a, a, C)
    np.testing.assert_allclose(P, np.diag(a), atol=1e-10)
    assert ot_cost(a, a, C) == pytest.approx(0.0, abs=1e-12)


def test_torch_inputs_give_tensors_of_the_same_dtype():
    a, b, C = random_problem(5, 10, 8)
    Ct = torch.tensor(C, dtype=torch.float32)
    P = ot_plan(torch.tensor(a), torch.tensor(b), Ct)
    c = ot_cost(torch.tensor(a), torch.tensor(b), Ct)
    assert isinstance(P, torch.Tensor) and P.dtype == torch.float32 and P.shape == (10, 8)
    assert isinstance(c, torch.Tensor) and c.ndim == 0 and c.dtype == torch.float32
    assert float(c) == pytest.approx(ot.emd2(a, b, C), rel=1e-5)
    assert isinstance(ot_cost(a, b, C), float)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_primal_lp_equals_dual_lp(seed):  # thm-ot-duality
    a, b, C = random_problem(seed, 25, 30)
    dual = kantorovich_dual(a, b, C)
    assert dual.value == pytest.approx(ot_cost(a, b, C), rel=1e-7)
    # dual feasibility f_i + g_j <= C_ij, and complementary slackness on the support of the plan
    assert (dual.f[:, None] + dual.g[None, :] <= C + 1e-9).all()
    P = ot_plan(a, b, C)
    slack = C - dual.f[:, None] - dual.g[None, :]
    assert (P * slack).sum() == pytest.approx(0.0, abs=1e-9)


def test_kantorovich_rubinstein_dual_on_a_1d_grid_equals_w1():  # thm-ot-kr-duality
    rng = np.random.default_rng(6)
    x = np.linspace(-2, 2, 41)
    a, b = rng.random(41), rng.random(41)
    a, b = a / a.sum(), b / b.sum()
    kr = kantorovich_rubinstein_dual(a, b, x)
    # independent closed form in 1-D: W1 = integral |F_a - F_b|
    w1_cdf = np.sum(np.abs(np.cumsum(a) - np.cumsum(b))[:-1] * np.diff(x))
    assert kr.value == pytest.approx(w1_cdf, rel=1e-7)
    assert kr.value == pytest.approx(ot_cost(a, b, np.abs(x[:, None] - x[None, :])), rel=1e-7)
    assert np.all(np.abs(np.diff(kr.critic)) <= np.diff(x) + 1e-9)   # 1-Lipschitz


def test_kantorovich_rubinstein_dual_on_a_2d_grid_equals_w1():  # thm-ot-kr-duality
    rng = np.random.default_rng(7)
    g = np.linspace(0, 1, 7)
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    a, b = rng.random(49), rng.random(49)
    a, b = a / a.sum(), b / b.sum()
    kr = kantorovich_rubinstein_dual(torch.tensor(a), torch.tensor(b), torch.tensor(pts))
    D = ot.dist(pts, pts, metric="euclidean")
    assert float(kr.value) == pytest.approx(ot.emd2(a, b, D), rel=1e-7)
    f = kr.critic.numpy()
    assert (f[:, None] - f[None, :] <= D + 1e-9).all()


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("n,m", [(30, 30), (25, 40)])
def test_wasserstein_1d_matches_the_lp(p, n, m):  # prop-ot-1d-quantile
    rng = np.random.default_rng(10 * p + n)
    x, y = rng.normal(size=n), rng.standard_t(3, size=m) + 0.7
    lp = ot_cost(None, None, np.abs(x[:, None] - y[None, :]) ** p) ** (1 / p)
    assert wasserstein_1d(x, y, p=p) == pytest.approx(lp, rel=1e-9)


def test_wasserstein_1d_with_weights_matches_the_lp_and_scipy():  # prop-ot-1d-quantile
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=20), rng.normal(size=33) + 1
    wx, wy = rng.random(20), rng.random(33)
    lp = ot_cost(wx / wx.sum(), wy / wy.sum(), np.abs(x[:, None] - y[None, :]))
    assert wasserstein_1d(x, y, 1, wx, wy) == pytest.approx(lp, rel=1e-9)
    assert wasserstein_1d(x, y, 1, wx, wy) == pytest.approx(scipy.stats.wasserstein_distance(x, y, wx, wy), rel=1e-9)
    lp2 = ot_cost(wx / wx.sum(), wy / wy.sum(), (x[:, None] - y[None, :]) ** 2) ** 0.5
    assert wasserstein_1d(x, y, 2, wx, wy) == pytest.approx(lp2, rel=1e-9)


def test_wasserstein_1d_is_batched_over_leading_axes():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 50, generator=g, dtype=torch.float64), torch.randn(4, 60, generator=g, dtype=torch.float64)
    w = wasserstein_1d(x, y, p=2)
    assert w.shape == (4,)
    for k in range(4):
        assert float(w[k]) == pytest.approx(wasserstein_1d(x[k].numpy(), y[k].numpy(), p=2), rel=1e-12)


def test_w1_between_shifted_samples_is_the_shift():
    rng = np.random.default_rng(12)
    x = rng.normal(size=500)
    assert wasserstein_1d(x, x + 0.37) == pytest.approx(0.37, rel=1e-12)


def test_gaussian_w2_matches_pot_bures_wasserstein():  # prop-ot-gaussian-w2
    rng = np.random.default_rng(13)
    for d in (1, 3, 5):
        A1, A2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
        S1, S2 = A1 @ A1.T + 0.1 * np.eye(d), A2 @ A2.T + 0.1 * np.eye(d)
        m1, m2 = rng.normal(size=d), rng.normal(size=d)
        ref = ot.gaussian.bures_wasserstein_distance(m1, m2, S1, S2)
        assert gaussian_w2(m1, S1, m2, S2) == pytest.approx(float(ref), rel=1e-8)


def test_gaussian_w2_in_1d_matches_samples_through_quantiles():  # prop-ot-gaussian-w2
    rng = np.random.default_rng(14)
    m1, s1, m2, s2 = 0.3, 1.5, -1.0, 0.6
    x, y = m1 + s1 * rng.normal(size=200_000), m2 + s2 * rng.normal(size=200_000)
    closed = gaussian_w2(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]]))
    assert closed == pytest.approx(np.hypot(m1 - m2, s1 - s2), rel=1e-12)
    assert wasserstein_1d(x, y, p=2) == pytest.approx(closed, abs=0.02)


def test_gaussian_w2_in_2d_matches_the_optimal_map_and_the_lp_on_samples():  # prop-ot-gaussian-w2
    rng = np.random.default_rng(15)
    m1, m2 = np.array([0.0, 0.0]), np.array([1.0, -0.5])
    S1 = np.array([[1.0, 0.6], [0.6, 1.0]])
    S2 = np.array([[0.5, -0.2], [-0.2, 1.5]])
    w2 = gaussian_w2(m1, S1, m2, S2)
    # Monte Carlo with the linear optimal map T(x) = m2 + A (x - m1)
    r1 = scipy.linalg.sqrtm(S1).real
    r1i = np.linalg.inv(r1)
    A = r1i @ scipy.linalg.sqrtm(r1 @ S2 @ r1).real @ r1i
    x = rng.multivariate_normal(m1, S1, size=200_000)
    tx = m2 + (x - m1) @ A.T
    np.testing.assert_allclose(np.cov(tx.T), S2, atol=0.03)             # T pushes N1 onto N2
    assert np.sqrt(((x - tx) ** 2).sum(1).mean()) == pytest.approx(w2, abs=0.01)
    # exact OT between samples (a consistent, slightly biased estimate)
    xs, ys = rng.multivariate_normal(m1, S1, size=300), rng.multivariate_normal(m2, S2, size=300)
    assert ot_cost(None, None, ot.dist(xs, ys)) ** 0.5 == pytest.approx(w2, abs=0.15)


def test_parallel_lines_w1_is_theta_and_js_is_log2():  # prop-ot-parallel-lines
    z = np.linspace(0, 1, 30)
    for theta in (0.5, -0.2, 1.3):
        p0 = np.stack([np.zeros(30), z], 1)
        pt = np.stack([np.full(30, theta), z], 1)
        assert ot_cost(None, None, ot.dist(p0, pt, metric="euclidean")) == pytest.approx(abs(theta), rel=1e-9)
    # on a common support (the union of both lines) the histograms are disjoint
    hist0 = np.concatenate([np.full(30, 1 / 30), np.zeros(30)])
    hist1 = hist0[::-1]
    js = scipy.spatial.distance.jensenshannon(hist0, hist1) ** 2       # natural log
    assert js == pytest.approx(np.log(2), rel=1e-12)
    assert 0.5 * np.abs(hist0 - hist1).sum() == pytest.approx(1.0)
    assert np.isinf(scipy.stats.entropy(hist0, hist1))                 # KL = +inf


def test_bad_inputs_raise_clear_errors():
    a, b, C = random_problem(0, 4, 5)
    for fn in (ot_cost, ot_plan, kantorovich_dual):
        with pytest.raises(ValueError, match="same total mass"):
            fn(a, 2 * b, C)
        with pytest.raises(ValueError, match="non-negative"):
            fn(np.array([1.2, -0.2, 0.0, 0.0]), b, C)
        with pytest.raises(ValueError, match=r"cost must have shape \(len\(a\), len\(b\)\)"):
            fn(a, b, C.T)
    with pytest.raises(ValueError, match="p must be"):
        wasserstein_1d([0.0, 1.0], [1.0, 2.0], p=0.5)
    with pytest.raises(ValueError, match="x_weights"):
        wasserstein_1d([0.0, 1.0], [1.0, 2.0], x_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="mu1"):
        gaussian_w2(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="cov1 must be symmetric"):
        gaussian_w2(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2))


@pytest.mark.parametrize("seed", [0, 1])
def test_uniform_equal_size_plan_is_a_permutation_and_solves_the_assignment(seed):  # prop-ot-birkhoff
    rng = np.random.default_rng(20 + seed)
    n = 20
    C = ot.dist(rng.normal(size=(n, 2)), rng.normal(size=(n, 2)))
    P = ot_plan(None, None, C)
    rows, cols = scipy.optimize.linear_sum_assignment(C)        # Hungarian algorithm
    np.testing.assert_allclose(n * P, np.eye(n)[cols], atol=1e-8)
    assert ot_cost(None, None, C) == pytest.approx(C[rows, cols].mean(), rel=1e-10)


def discretised_gaussians(seed):
    """Two discretised Gaussians on 40-100 point grids: many masses far below 1e-7 (down to 1e-300)."""
    rng = np.random.default_rng(seed)
    n, m = rng.integers(40, 101, size=2)
    x, y = np.linspace(-5, 5, n), np.linspace(-5, 5, m)
    a = np.exp(-0.5 * ((x - rng.uniform(-2, 2)) / rng.uniform(0.3, 1.5)) ** 2)
    b = np.exp(-0.5 * ((y - rng.uniform(-2, 2)) / rng.uniform(0.3, 1.5)) ** 2)
    return a / a.sum(), b / b.sum(), x, y


@pytest.mark.parametrize("seed", range(24))
def test_lp_is_robust_to_masses_spanning_many_orders_of_magnitude(seed):  # def-ot-kantorovich thm-ot-duality
    # HiGHS with its defaults (presolve, absolute tolerances 1e-7) called 10-20 of these 24
    # feasible problems "infeasible" or missed the cost by up to 4e-6 relative.
    a, b, x, y = discretised_gaussians(seed)
    assert min(a.min(), b.min()) < 1e-8
    C = (x[:, None] - y[None, :]) ** 2
    ref = ot.emd2(a, b, C, numItermax=10**7)           # POT's network simplex, independent of HiGHS
    assert ot_cost(a, b, C) == pytest.approx(ref, rel=1e-9)
    dual = kantorovich_dual(a, b, C)
    assert dual.value == pytest.approx(ref, rel=1e-9)
    assert (dual.f[:, None] + dual.g[None, :] <= C + 1e-9).all()
    P = ot_plan(a, b, C)
    np.testing.assert_allclose(P.sum(1), a, rtol=0, atol=1e-11)
    np.testing.assert_allclose(P.sum(0), b, rtol=0, atol=1e-11)
    # the 1-D closed form (quantiles) is a third, independent value of W2^2
    assert wasserstein_1d(x, y, 2, a, b) ** 2 == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_raw_lp_plan_is_non_negative_before_clipping(seed):  # def-ot-kantorovich
    # ot_plan clips round-off negatives at 0, so "P >= 0" of its output holds by construction;
    # this checks the LP solver's own solution: negatives, if any, are below 1e-12.
    from gencore.ot.exact import _solve_primal
    a, b, x, y = discretised_gaussians(seed)
    raw = _solve_primal(a, b, (x[:, None] - y[None, :]) ** 2, clip=False)
    assert raw.min() >= -1e-12
    a2, b2, C2 = random_problem(seed, 30, 40)
    assert _solve_primal(a2, b2, C2, clip=False).min() >= -1e-12


def test_kantorovich_rubinstein_dual_with_tiny_masses_equals_w1():  # thm-ot-kr-duality
    x = np.linspace(-5, 5, 60)
    a = np.exp(-0.5 * ((x + 1) / 0.4) ** 2)
    b = np.exp(-0.5 * ((x - 1.5) / 0.6) ** 2)
    a, b = a / a.sum(), b / b.sum()
    kr = kantorovich_rubinstein_dual(a, b, x)
    assert kr.value == pytest.approx(ot.emd2(a, b, np.abs(x[:, None] - x[None, :])), rel=1e-9)


def test_reversed_views_are_accepted_by_the_lp():
    a, b, C = random_problem(8, 9, 11)
    assert ot_cost(a[::-1], b[::-1], C[::-1, ::-1]) == pytest.approx(ot.emd2(a, b, C), rel=1e-9)


def test_a_coupling_splits_mass_where_no_map_exists():
    # def-ot-monge def-ot-kantorovich (mu = delta_0 and nu = (delta_-1 + delta_1) / 2 admit no map
    # T with T#mu = nu (T#delta_0 = delta_T(0)); the only coupling sends half the mass each way)
    P = ot_plan([1.0], [0.5, 0.5], np.array([[1.0, 1.0]]))
    np.testing.assert_allclose(P, [[0.5, 0.5]], atol=1e-12)
    # Monge's value over maps (here permutations, brute force) is >= Kantorovich's, equal for uniform weights
    import itertools
    rng = np.random.default_rng(30)
    C = rng.random((5, 5))
    monge = min(C[np.arange(5), list(s)].mean() for s in itertools.permutations(range(5)))
    assert ot_cost(None, None, C) == pytest.approx(monge, rel=1e-10)


def test_wasserstein_distance_is_a_metric_on_random_histograms():
    # def-ot-wasserstein (W_p(delta_x, delta_y) = d(x, y); symmetric; zero iff equal; triangle inequality)
    assert ot_cost([1.0], [1.0], [[abs(0.3 - 2.0)]]) == pytest.approx(1.7, rel=1e-12)
    rng = np.random.default_rng(31)
    pts = rng.normal(size=(12, 2))
    D = scipy.spatial.distance.cdist(pts, pts)
    hists = [h / h.sum() for h in rng.random((4, 12))]
    for p in (1, 2):
        W = np.array([[ot_cost(h, k, D ** p) ** (1 / p) for k in hists] for h in hists])
        np.testing.assert_allclose(W, W.T, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.diag(W), 0.0, atol=1e-6)
        assert (W[~np.eye(4, dtype=bool)] > 1e-3).all()
        for i, j, k in itertools_product(range(4)):
            assert W[i, k] <= W[i, j] + W[j, k] + 1e-9


def itertools_product(r):
    import itertools
    return itertools.product(r, r, r)


def test_slackness_certificate_fails_for_a_feasible_plan_that_is_not_optimal():  # thm-ot-duality
    # chapter 09's optimality check: dual feasibility and <P, C - f - g> = 0. The independent coupling
    # a b^T and a one-step perturbation of the optimal plan are feasible but fail it.
    a, b, C = random_problem(9, 14, 18)
    dual = kantorovich_dual(a, b, C)
    slack = C - dual.f[:, None] - dual.g[None, :]
    P = ot_plan(a, b, C)
    assert (slack >= -1e-9).all()
    assert abs((P * slack).sum()) < 1e-9
    assert (np.outer(a, b) * slack).sum() > 1e-3
    # and the certificate's gap equals the excess cost over the optimum (weak duality is tight)
    Q = np.outer(a, b)
    assert (Q * slack).sum() == pytest.approx((Q * C).sum() - ot.emd2(a, b, C), rel=1e-8)
