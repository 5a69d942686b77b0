"""gencore._validate.as_float_tensor: every NumPy memory layout is accepted by the public functions.

A reversed view ``m[::-1]`` has negative strides, which ``torch.as_tensor`` rejects; the five
functions below used to turn that into a misleading "must be a tensor or array" TypeError.
Each is compared on the reversed view and on a contiguous copy of it (independent of layout).
"""
import numpy as np
import pytest
import scipy.stats
import torch

from gencore._validate import as_float_tensor
from gencore.divergences import f_divergence
from gencore.gan import optimal_discriminator
from gencore.ot import gaussian_w2, sinkhorn, wasserstein_1d


def layouts(m):
    """The same numbers with negative strides, a transposed (Fortran) view, a strided slice."""
    return {"reversed": m[::-1], "fortran": np.asfortranarray(m), "strided": np.repeat(m, 2, axis=0)[::2]}


def test_as_float_tensor_accepts_negative_strides_and_keeps_values():
    m = np.arange(12.0).reshape(3, 4)
    for name, view in layouts(m).items():
        t = as_float_tensor(view, "m")
        assert t.dtype == torch.float64, name
        np.testing.assert_array_equal(t.numpy(), np.ascontiguousarray(view), err_msg=name)
    t = as_float_tensor(m[::-1, ::-1], "m")
    np.testing.assert_array_equal(t.numpy(), m[::-1, ::-1])
    # read-only arrays (np.broadcast_to) are copied, not shared with a warning
    np.testing.assert_array_equal(as_float_tensor(np.broadcast_to(m[0], (2, 4)), "m").numpy(), np.tile(m[0], (2, 1)))
    assert as_float_tensor([1, 2], "x").dtype == torch.float64
    assert as_float_tensor(torch.tensor([1, 2]), "x").dtype == torch.float64


def test_as_float_tensor_still_names_the_argument_for_non_numbers():
    with pytest.raises(TypeError, match="p_data must be a tensor or array of numbers, got str"):
        as_float_tensor("abc", "p_data")
    with pytest.raises(TypeError, match="x must be a tensor or array"):
        as_float_tensor(object(), "x")


def test_wasserstein_1d_accepts_reversed_views():  # prop-ot-1d-quantile
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(size=30) + 1
    wx = rng.random(40)
    got = wasserstein_1d(x[::-1], y[::-1], 1, wx[::-1], None)
    # independent: SciPy's CDF integral (the order of the samples does not matter)
    assert got == pytest.approx(scipy.stats.wasserstein_distance(x, y, wx, None), rel=1e-10)


def test_gaussian_w2_accepts_reversed_views():  # prop-ot-gaussian-w2
    m1, m2 = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    S1, S2 = np.array([[2.0, 0.3], [0.3, 1.0]]), np.array([[1.0, -0.2], [-0.2, 0.5]])
    want = gaussian_w2(m1[::-1].copy(), S1[::-1, ::-1].copy(), m2[::-1].copy(), S2[::-1, ::-1].copy())
    got = gaussian_w2(m1[::-1], S1[::-1, ::-1], m2[::-1], S2[::-1, ::-1])
    assert got == pytest.approx(want, rel=1e-12)
    # commuting diagonal case, closed form: W2^2 = |dm|^2 + sum (sqrt s1 - sqrt s2)^2
    d1, d2 = np.array([4.0, 1.0]), np.array([1.0, 9.0])
    closed = np.sqrt(np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2))
    assert gaussian_w2(m1[::-1], np.diag(d1)[::-1, ::-1], m2[::-1], np.diag(d2)[::-1, ::-1]) == pytest.approx(closed)


def test_sinkhorn_accepts_reversed_views():
    rng = np.random.default_rng(1)
    a, b = rng.random(6) + 0.1, rng.random(7) + 0.1
    a, b = a / a.sum(), b / b.sum()
    C = rng.random((6, 7))
    got = sinkhorn(a[::-1], b[::-1], C[::-1, ::-1], 0.1, tol=1e-12, max_iter=5000)
    want = sinkhorn(torch.tensor(a[::-1].copy()), torch.tensor(b[::-1].copy()),
                    torch.tensor(C[::-1, ::-1].copy()), 0.1, tol=1e-12, max_iter=5000)
    torch.testing.assert_close(got.plan, want.plan, atol=1e-14, rtol=0)
    np.testing.assert_allclose(got.plan.sum(1).numpy(), a[::-1], atol=1e-11)


def test_f_divergence_accepts_reversed_views():  # def-fdiv-divergence
    p = np.array([0.1, 0.2, 0.3, 0.4])
    q = np.array([0.25, 0.25, 0.4, 0.1])
    got = float(f_divergence("kl", p[::-1], q[::-1]))
    assert got == pytest.approx(float(scipy.stats.entropy(p, q)), rel=1e-12)   # independent: SciPy


def test_optimal_discriminator_accepts_reversed_views():  # thm-gan-optimal-d
    p = np.array([0.0, 0.5, 1.0, 2.0])
    q = np.array([0.0, 1.5, 1.0, 0.5])
    got = optimal_discriminator(p[::-1], q[::-1]).numpy()
    np.testing.assert_allclose(got, np.array([0.8, 0.5, 0.25, 0.5]), rtol=1e-12)
