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
