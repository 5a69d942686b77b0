"""Tests of gencore.ot.sample: MMD, energy distance, sliced Wasserstein, gradient penalty."""
import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from gencore.ot.sample import KERNELS, energy_distance, gradient_penalty, imq_kernel, mmd2, sliced_wasserstein


def _naive_mmd2(x, y, k, unbiased):
    """Double loop over pairs, in NumPy: the textbook definition."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if (i != j or not unbiased))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if (i != j or not unbiased))
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    if unbiased:
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)
    return sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)


@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd2_imq_matches_double_loop(unbiased):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64) + 0.5
    sigma2, scales = 1.5, (0.5, 1.0, 2.0)

    def k(a, b):
        c0 = 2 * 3 * sigma2
        return sum(c0 * s / (c0 * s + np.sum((a - b) ** 2)) for s in scales)

    got = mmd2(x, y, "imq", unbiased=unbiased, sigma2=sigma2, scales=scales)
    np.testing.assert_allclose(got.item(), _naive_mmd2(x, y, k, unbiased), rtol=1e-10, atol=1e-12)


def test_mmd2_rbf_matches_double_loop():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.randn(8, 2, generator=g, dtype=torch.float64)

    def k(a, b):
        return sum(np.exp(-np.sum((a - b) ** 2) / (2 * h * h)) for h in (0.5, 2.0))

    got = mmd2(x, y, "rbf", bandwidths=(0.5, 2.0))
    np.testing.assert_allclose(got.item(), _naive_mmd2(x, y, k, True), rtol=1e-10, atol=1e-12)


def test_imq_kernel_constant_is_2_dz_sigma2():
    x = torch.zeros(1, 4, dtype=torch.float64)
    y = torch.ones(1, 4, dtype=torch.float64)  # |x - y|^2 = 4
    c = 2 * 4 * 2.0
    np.testing.assert_allclose(imq_kernel(x, y, sigma2=2.0, scales=(1.0,)).item(), c / (c + 4.0))


def test_mmd2_unbiased_has_mean_zero_when_p_equals_q():  # prop-wgan-mmd-unbiased
    n_seeds, n = 300, 16
    vals_u, vals_b = [], []
    for s in range(n_seeds):
        g = torch.Generator().manual_seed(s)
        x, y = torch.randn(n, 2, generator=g, dtype=torch.float64), torch.randn(n, 2, generator=g, dtype=torch.float64)
        vals_u.append(mmd2(x, y, "imq").item())
        vals_b.append(mmd2(x, y, "imq", unbiased=False).item())
    vals_u, vals_b = np.array(vals_u), np.array(vals_b)
    se = vals_u.std(ddof=1) / math.sqrt(n_seeds)
    assert abs(vals_u.mean()) < 4 * se
    # the biased V-statistic is positive on average: the test above has the power to see a bias
    assert vals_b.mean() > 10 * vals_b.std(ddof=1) / math.sqrt(n_seeds)


def test_mmd2_positive_when_p_differs_from_q():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + torch.tensor([1.0, 0.0])
    same = torch.randn(200, 2, generator=g)
    assert mmd2(x, y).item() > 0.3  # population value about 0.48 with the default IMQ scales
    assert mmd2(x, y).item() > 4 * abs(mmd2(x, same).item())


def test_kernel_registry_rows_are_symmetric_and_positive():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    for name, row in KERNELS.items():
        K = row.gram(x, x)
        np.testing.assert_allclose(K.numpy(), K.numpy().T, err_msg=name)
        assert np.linalg.eigvalsh(K.numpy()).min() > -1e-10, name


def test_energy_distance_matches_scipy_in_1d():  # prop-wgan-energy-cramer (scipy integrates the CDFs)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 1, generator=g, dtype=torch.float64), 0.7 + 2 * torch.randn(40, 1, generator=g, dtype=torch.float64)
    # convention: scipy returns sqrt(2 E|X-Y| - E|X-X'| - E|Y-Y'|); we return the square
    np.testing.assert_allclose(math.sqrt(energy_distance(x, y).item()),
                               scipy.stats.energy_distance(x[:, 0].numpy(), y[:, 0].numpy()), rtol=1e-10)


def test_energy_distance_matches_double_loop_in_2d_and_is_nonnegative():
    for s in range(5):
        g = torch.Generator().manual_seed(s)
        x, y = torch.randn(9, 2, generator=g, dtype=torch.float64), torch.randn(7, 2, generator=g, dtype=torch.float64)
        xn, yn = x.numpy(), y.numpy()

        def mean_dist(a, b):
            return np.mean([np.linalg.norm(u - v) for u in a for v in b])

        want = 2 * mean_dist(xn, yn) - mean_dist(xn, xn) - mean_dist(yn, yn)
        got = energy_distance(x, y).item()
        # 1e-8: squared distances come from |x|^2 + |y|^2 - 2<x, y> (fast, one matmul) then a sqrt
        np.testing.assert_allclose(got, want, rtol=1e-8)
        assert got >= 0
    assert energy_distance(x, x).item() == pytest.approx(0.0, abs=1e-12)


def test_energy_distance_gradient_is_finite_with_duplicate_points():
    x = torch.zeros(4, 2, requires_grad=True)
    energy_distance(x, torch.ones(3, 2)).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("p", [1, 2])
def test_sliced_wasserstein_in_1d_is_exact_w_p(p):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 1, generator=g, dtype=torch.float64), torch.rand(100, 1, generator=g, dtype=torch.float64)
    xs, ys = np.sort(x[:, 0].numpy()), np.sort(y[:, 0].numpy())
    want = np.mean(np.abs(xs - ys) ** p) ** (1 / p)
    if p == 1:
        np.testing.assert_allclose(want, scipy.stats.wasserstein_distance(xs, ys), rtol=1e-10)
    got = sliced_wasserstein(x, y, n_projections=3, p=p, generator=g)
    np.testing.assert_allclose(got.item(), want, rtol=1e-10)


def test_sliced_wasserstein_of_shifted_gaussians():
    # x ~ N(0, I_d), y ~ N(m, I_d): theta_# P and theta_# Q differ by the shift <theta, m>, so
    # SW_2^2 = E_theta <theta, m>^2 = |m|^2 / d.
    d, m = 3, torch.tensor([2.0, -1.0, 1.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, d, generator=g, dtype=torch.float64)
    y = torch.randn(4000, d, generator=g, dtype=torch.float64) + m
    got = sliced_wasserstein(x, y, n_projections=2000, p=2, generator=g).item()
    assert got == pytest.approx(m.norm().item() / math.sqrt(d), rel=0.04)


def test_gradient_penalty_vanishes_for_unit_norm_linear_critic():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(5, 1).double()
    with torch.no_grad():
        w = torch.randn(1, 5, generator=g, dtype=torch.float64)
        lin.weight.copy_(w / w.norm())
    real, fake = torch.randn(32, 5, generator=g, dtype=torch.float64), torch.randn(32, 5, generator=g, dtype=torch.float64)
    assert gradient_penalty(lin, real, fake, generator=g).item() == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        lin.weight.mul_(3.0)  # gradient norm 3: penalty (3 - 1)^2 = 4
    assert gradient_penalty(lin, real, fake, generator=g).item() == pytest.approx(4.0, rel=1e-10)


def test_gradient_penalty_matches_hand_computation_and_is_differentiable():
    # f(x) = |x|^2 / 2 has gradient x: penalty = mean (|x_hat| - 1)^2 with the same interpolates
    real = torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 0.0]], dtype=torch.float64)
    fake = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]], dtype=torch.float64)
    a = torch.ones((), dtype=torch.float64, requires_grad=True)

    def critic(x):
        return a * 0.5 * (x * x).sum(1)

    gp = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3))
    eps = torch.rand(3, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x_hat = eps * real + (1 - eps) * fake
    want = ((x_hat.norm(dim=1) - 1) ** 2).mean()
    np.testing.assert_allclose(gp.item(), want.item(), rtol=1e-12)
    gp.backward()  # d/da mean (a|x| - 1)^2 = mean 2 (a|x| - 1)|x|
    want_grad = (2 * (x_hat.norm(dim=1) - 1) * x_hat.norm(dim=1)).mean()
    np.testing.assert_allclose(a.grad.item(), want_grad.item(), rtol=1e-12)


def test_bad_inputs_raise_clear_errors():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="same dimension"):
        mmd2(x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="kernel must be one of"):
        mmd2(x, x, kernel="laplace")
    with pytest.raises(ValueError, match="at least 2 rows"):
        mmd2(torch.zeros(1, 2), x)
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\)"):
        energy_distance(torch.zeros(4), x)
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        energy_distance(x, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="sigma2 must be > 0"):
        mmd2(x, x, sigma2=0.0)
    with pytest.raises(ValueError, match="same number of rows"):
        sliced_wasserstein(x, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="n_projections must be a positive integer"):
        sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(ValueError, match="p must be >= 1"):
        sliced_wasserstein(x, x, p=0.5)
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(lambda t: t.sum(1), x, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="one value per row"):
        gradient_penalty(lambda t: t.sum(), x, x)


@pytest.mark.cuda
def test_sample_distances_follow_cuda_inputs(cuda_device):
    x = torch.randn(16, 2, device=cuda_device)
    y = torch.randn(16, 2, device=cuda_device)
    g = torch.Generator(device=cuda_device).manual_seed(0)
    for v in (mmd2(x, y), energy_distance(x, y), sliced_wasserstein(x, y, 8, generator=g),
              gradient_penalty(nn.Linear(2, 1).to(cuda_device), x, y, generator=g)):
        assert v.device.type == "cuda"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_samples_raise_instead_of_giving_a_finite_loss(bad):
    # energy_distance used to count non-finite distances as 0 and the IMQ kernel maps an infinite
    # distance to 0: a generator emitting NaN or inf got a finite loss. Now a ValueError names it.
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 2, generator=g), torch.randn(6, 2, generator=g)
    y_bad = y.clone()
    y_bad[3, 1] = bad
    for fn in (energy_distance, mmd2, lambda u, v: mmd2(u, v, "rbf"), lambda u, v: mmd2(u, v, unbiased=False)):
        with pytest.raises(ValueError, match=r"y must be finite: 1 of its 6 rows hold inf or NaN \(first at row 3\)"):
            fn(x, y_bad)
        with pytest.raises(ValueError, match="x must be finite"):
            fn(y_bad, x)
    with pytest.raises(ValueError, match="y must be finite"):
        sliced_wasserstein(x[:6], y_bad, n_projections=4, generator=g)


def test_non_finite_check_keeps_gradients_of_finite_samples():
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 2, dtype=torch.float64)
    for v in (energy_distance(x, y), mmd2(x, y), sliced_wasserstein(x[:4], y, 3)):
        (gx,) = torch.autograd.grad(v, x)
        assert torch.isfinite(gx).all()
