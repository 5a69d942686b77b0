"""Entropic OT (gencore.ot.sinkhorn) against POT and the exact LP.

Chapter "Optimal transport and Wasserstein distances".
"""
import warnings

import numpy as np
import ot
import pytest
import scipy.special
import torch

from gencore import ClaimError, check_close
from gencore.ot import SinkhornConvergenceWarning, ot_cost, sinkhorn


def random_problem(seed, n, m):
    rng = np.random.default_rng(seed)
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    a, b = a / a.sum(), b / b.sum()
    x, y = rng.random((n, 2)), rng.random((m, 2))
    return a, b, ot.dist(x, y)          # squared Euclidean, in [0, 2]


@pytest.mark.parametrize("eps", [0.5, 0.05, 0.01])
def test_sinkhorn_matches_pot(eps):
    a, b, C = random_problem(0, 30, 40)
    r = sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), eps, max_iter=20_000, tol=1e-12)
    assert r.converged
    P_pot = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", numItermax=20_000, stopThr=1e-13)
    np.testing.assert_allclose(r.plan.numpy(), P_pot, atol=1e-9)
    assert float(r.cost) == pytest.approx(float((P_pot * C).sum()), rel=1e-7)


def entropic_objective(P, a, b, C, eps):
    """<P, C> + eps KL(P | a b^T), computed from P alone."""
    return (P * C).sum() + eps * scipy.special.rel_entr(P, np.outer(a, b)).sum()


def worst_descent(P, a, b, C, eps, seed=0, n_cycles=300):
    """min over random 2x2 cycles D = e_ij - e_il - e_kj + e_kl on entries >= max(P) / 1000 (zero row
    and column sums, so P + tD stays in U(a, b)) and t = +-(smallest entry) / 2 of J(P + tD) - J(P),
    J = <P, C> + eps KL(P | a b^T) computed from P alone (in a form that keeps the digits of a small
    change): > 0 when P is the minimiser, found without Sinkhorn."""
    rng = np.random.default_rng(seed)
    sign = np.array([1.0, -1.0, -1.0, 1.0])
    changes = []
    while len(changes) < 2 * n_cycles:
        i, k = rng.choice(P.shape[0], 2, replace=False)
        j, l = rng.choice(P.shape[1], 2, replace=False)
        rows, cols = np.array([i, i, k, k]), np.array([j, l, j, l])
        p, c, ab = P[rows, cols], C[rows, cols], a[rows] * b[cols]
        if p.min() < 1e-3 * P.max():
            continue
        for d in (0.5 * p.min() * sign, -0.5 * p.min() * sign):
            changes.append((d * (c + eps * np.log(p / ab))).sum() + eps * ((p + d) * np.log1p(d / p)).sum())
    return min(changes)


def gibbs_residual(P, C, eps):
    """Recover log u, log v from the plan alone (least squares on log P + C / eps = log u_i + log v_j)
    and return max |P - diag(u) K diag(v)| / max P: independent of the solver's potentials f, g."""
    L = np.log(P) + C / eps
    log_u = L.mean(1) - L.mean() / 2
    log_v = L.mean(0) - L.mean() / 2
    return np.abs(P - np.exp(log_u[:, None] + log_v[None, :] - C / eps)).max() / P.max()


def test_sinkhorn_plan_is_the_minimiser_and_has_the_gibbs_form():  # prop-ot-sinkhorn-gibbs
    # def-ot-entropic, the objective <P, C> + eps KL(P | a b^T), evaluated from P alone below
    a, b, C = random_problem(1, 20, 25)
    eps = 0.05
    r = sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), eps, tol=1e-12, max_iter=10_000)
    P = r.plan.numpy()
    np.testing.assert_allclose(P.sum(1), a, atol=1e-11)
    np.testing.assert_allclose(P.sum(0), b, atol=1e-11)
    # optimality checked from the objective itself (no Sinkhorn): every feasible move increases it
    assert worst_descent(P, a, b, C, eps) > 0
    # the Gibbs form with u, v recovered from the plan, not read off r.f, r.g
    assert gibbs_residual(P, C, eps) < 1e-10
    # POT's plan (an independent implementation) is the same Gibbs matrix
    P_pot = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", numItermax=20_000, stopThr=1e-13)
    assert gibbs_residual(P_pot, C, eps) < 1e-9
    np.testing.assert_allclose(P, P_pot, atol=1e-10)
    kl = scipy.special.rel_entr(P, np.outer(a, b)).sum()
    assert float(r.regularized_cost) == pytest.approx((P * C).sum() + eps * kl, rel=1e-10)


def test_optimality_and_gibbs_checks_fail_for_wrong_plans():  # prop-ot-sinkhorn-gibbs
    a, b, C = random_problem(1, 20, 25)
    eps = 0.05
    # a Gibbs-form coupling for another eps is feasible but not the minimiser
    other = sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), 0.2, tol=1e-12, max_iter=10_000).plan.numpy()
    assert worst_descent(other, a, b, C, eps) < 0
    # the independent coupling a b^T is feasible, not the minimiser, and not of Gibbs form for this C
    ab = np.outer(a, b)
    assert worst_descent(ab, a, b, C, eps) < 0
    assert gibbs_residual(ab * np.random.default_rng(0).uniform(0.5, 1.5, ab.shape), C, eps) > 1e-3


def test_large_eps_check_is_relative_to_the_scale_and_fails_for_the_zero_matrix():
    # chapter 09: "large eps: the plan tends to a b^T" compared relative to max(a b^T); with the
    # absolute tolerance 2e-3 it had before (max(a b^T) = 1.3e-3) the zero matrix passed.
    grid = np.linspace(-3, 3, 80)
    wa = np.exp(-0.5 * ((grid + 1.5) / 0.45) ** 2) + 0.7 * np.exp(-0.5 * ((grid - 0.8) / 0.35) ** 2)
    wb = np.exp(-0.5 * ((grid - 0.3) / 1.0) ** 2)
    a, b = wa / wa.sum(), wb / wb.sum()
    C = (grid[:, None] - grid[None, :]) ** 2
    ab = np.outer(a, b)
    scale = ab.max()
    errs = [np.abs(sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), eps, tol=1e-9, max_iter=20_000)
                   .plan.numpy() - ab).max() / scale for eps in (1.0, 10.0, 100.0)]
    assert errs[0] > errs[1] > errs[2]                   # about 1 / eps: 0.77, 0.13, 0.013
    P = sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), 100.0, tol=1e-9, max_iter=20_000).plan.numpy()
    check_close("large eps: P / max(ab^T) is close to ab^T / max(ab^T)", P / scale, ab / scale, tol=0.02)
    for wrong in (np.zeros_like(ab), np.full_like(ab, 1 / ab.size)):
        with pytest.raises(ClaimError):
            check_close("large eps: P / max(ab^T) is close to ab^T / max(ab^T)", wrong / scale, ab / scale, tol=0.02)
    assert check_close("the old absolute check", np.zeros_like(ab), ab, tol=2e-3) is None   # passed: useless


def test_sinkhorn_warns_when_it_stops_at_max_iter_without_converging():
    a, b, C = random_problem(0, 30, 40)
    with pytest.warns(SinkhornConvergenceWarning, match=r"eps=0\.001.*marginal error.*increase max_iter or use a larger eps"):
        r = sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), 1e-3, max_iter=20, tol=1e-9)
    assert not r.converged and r.n_iter == 20
    assert float(r.marginal_error) > 1e-9
    # the message quotes the marginal error reached
    with pytest.warns(SinkhornConvergenceWarning) as record:
        sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), 1e-3, max_iter=20, tol=1e-9)
    assert f"{float(r.marginal_error):.3g}" in str(record[0].message)
    # no warning when it converges, nor with tol=0 (a fixed number of iterations, as in the benchmark)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), 0.5, max_iter=5000, tol=1e-9).converged
        sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), 1e-3, max_iter=20, tol=0)


def test_sinkhorn_cost_tends_to_the_exact_cost_as_eps_goes_to_zero():  # prop-ot-sinkhorn-limit
    a, b, C = random_problem(2, 25, 25)
    exact = ot_cost(a, b, C)
    gaps = []
    for eps in (0.1, 0.03, 0.01, 0.003, 0.001):
        r = sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), eps, max_iter=50_000, tol=1e-10)
        gaps.append(abs(float(r.cost) - exact))
        # the regularised value is above the exact cost and within eps * log(n m) of it
        assert exact - 1e-9 <= float(r.regularized_cost) <= exact + eps * np.log(25 * 25) + 1e-9
    assert all(g2 < g1 for g1, g2 in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-3 * exact + 1e-6


@pytest.mark.parametrize("eps", [1e-2, 1e-3, 1e-5])
@pytest.mark.parametrize("n_iter", [7, 300])
def test_sinkhorn_iterates_equal_pot_log_domain_iterates_even_for_tiny_eps(eps, n_iter):
    # The stabilised scheme makes the same iterates as plain log-domain Sinkhorn. POT updates
    # g before f, gencore f before g: gencore on the transposed problem is POT's sequence.
    a, b, C = random_problem(3, 30, 30)
    r = sinkhorn(torch.tensor(b), torch.tensor(a), torch.tensor(C.T), eps, max_iter=n_iter, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # POT warns that it has not converged
        P_pot = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", numItermax=n_iter, stopThr=0)
    assert r.n_iter == n_iter
    assert torch.isfinite(r.plan).all() and torch.isfinite(r.f).all() and torch.isfinite(r.g).all()
    np.testing.assert_allclose(r.plan.numpy().T, P_pot, atol=1e-12)


def test_identical_histograms_with_small_eps_give_the_diagonal_plan():
    x = torch.linspace(0, 1, 6, dtype=torch.float64)
    a = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.2, 0.1], dtype=torch.float64)
    r = sinkhorn(a, a, (x[:, None] - x[None, :]).abs(), 1e-3, tol=1e-12)
    torch.testing.assert_close(r.plan, torch.diag(a), atol=1e-12, rtol=0)


def test_sinkhorn_handles_zero_weights():
    a, b, C = random_problem(4, 10, 12)
    a[3] = 0.0
    a /= a.sum()
    r = sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(C), 0.05, tol=1e-12, max_iter=10_000)
    assert torch.isfinite(r.plan).all() and float(r.plan[3].sum()) == 0.0
    with np.errstate(divide="ignore"):          # POT takes log(0) = -inf, as gencore does
        P_pot = ot.sinkhorn(a, b, C, 0.05, method="sinkhorn_log", numItermax=10_000, stopThr=1e-13)
    np.testing.assert_allclose(r.plan.numpy(), P_pot, atol=1e-9)


def test_sinkhorn_is_batched():
    problems = [random_problem(s, 15, 20) for s in range(3)]
    A = torch.tensor(np.stack([p[0] for p in problems]))
    B = torch.tensor(np.stack([p[1] for p in problems]))
    C = torch.tensor(np.stack([p[2] for p in problems]))
    r = sinkhorn(A, B, C, 0.05, tol=1e-12, max_iter=10_000)
    assert r.plan.shape == (3, 15, 20) and r.cost.shape == (3,)
    for k in range(3):
        rk = sinkhorn(A[k], B[k], C[k], 0.05, tol=1e-12, max_iter=10_000)
        torch.testing.assert_close(r.plan[k], rk.plan, atol=1e-10, rtol=0)
    # one cost matrix shared by a batch of marginals
    rs = sinkhorn(A, B, C[0], 0.05, tol=1e-12, max_iter=10_000)
    torch.testing.assert_close(rs.plan[0], r.plan[0], atol=1e-10, rtol=0)


def test_sinkhorn_follows_float32_and_uniform_default():
    a, b, C = random_problem(5, 20, 20)
    Ct = torch.tensor(C, dtype=torch.float32)
    r = sinkhorn(None, None, Ct, 0.02, tol=1e-6)
    assert r.plan.dtype == torch.float32 and r.cost.dtype == torch.float32
    assert float(r.cost) == pytest.approx(ot.sinkhorn2(np.full(20, 0.05), np.full(20, 0.05), C, 0.02), rel=1e-4)


@pytest.mark.cuda
def test_sinkhorn_runs_batched_on_cuda(cuda_device):
    problems = [random_problem(s, 50, 60) for s in range(4)]
    A, B, C = (torch.tensor(np.stack([p[i] for p in problems])) for i in range(3))
    r = sinkhorn(A.to(cuda_device), B.to(cuda_device), C.to(cuda_device), 0.01, tol=1e-10, max_iter=10_000)
    assert r.plan.device.type == "cuda"
    ref = sinkhorn(A, B, C, 0.01, tol=1e-10, max_iter=10_000)
    torch.testing.assert_close(r.plan.cpu(), ref.plan, atol=1e-9, rtol=0)


def test_bad_inputs_raise_clear_errors():
    a, b, C = (torch.tensor(v) for v in random_problem(0, 4, 5))
    for eps in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="eps must be a positive"):
            sinkhorn(a, b, C, eps)
    with pytest.raises(ValueError, match="same total mass"):
        sinkhorn(a, 2 * b, C, 0.1)
    with pytest.raises(ValueError, match="non-negative"):
        sinkhorn(torch.tensor([1.2, -0.2, 0.0, 0.0], dtype=torch.float64), b, C, 0.1)
    with pytest.raises(ValueError, match=r"cost must have shape \(\.\.\., len\(a\), len\(b\)\)"):
        sinkhorn(a, b, C.T, 0.1)
    with pytest.raises(ValueError, match="max_iter"):
        sinkhorn(a, b, C, 0.1, max_iter=0)
