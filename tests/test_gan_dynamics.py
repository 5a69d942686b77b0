"""Direction of gradient play on the bilinear game min_x max_y xy (gencore.gan_dynamics)."""
import math

import numpy as np
import pytest
import torch

from gencore.gan_dynamics import BILINEAR_DYNAMICS, bilinear_trajectory, distance_to_equilibrium


def _dist(method, lr=0.1, steps=300):
    return distance_to_equilibrium(bilinear_trajectory(method, 1.0, 0.5, lr=lr, steps=steps)).numpy()


def test_simultaneous_spirals_out_at_rate_sqrt_one_plus_lr2():  # prop-gan-bilinear-dynamics
    for lr in (0.05, 0.1, 0.5):
        d = _dist("simultaneous", lr)
        np.testing.assert_allclose(d[1:] / d[:-1], math.sqrt(1 + lr**2), rtol=1e-12)
        assert np.all(np.diff(d) > 0)


def test_alternating_cycles_on_an_ellipse():  # prop-gan-bilinear-dynamics
    lr = 0.3
    t = bilinear_trajectory("alternating", 1.0, 0.5, lr=lr, steps=2000).numpy()
    energy = t[:, 0] ** 2 + t[:, 1] ** 2 - lr * t[:, 0] * t[:, 1]
    np.testing.assert_allclose(energy, energy[0], rtol=1e-10)
    d = np.linalg.norm(t, axis=1)
    assert d.max() < 2 * d[0] and d.min() > 0.5 * d[0]  # bounded away from 0 and from infinity
    # it returns close to its start: a cycle, not convergence (period 2*pi/arccos(1 - lr^2/2))
    period = 2 * math.pi / math.acos(1 - lr**2 / 2)
    assert np.linalg.norm(t[int(round(period))] - t[0]) < 0.1


@pytest.mark.parametrize("method", ["extragradient", "optimistic"])
def test_extragradient_and_optimistic_converge(method):  # prop-gan-bilinear-dynamics
    d = _dist(method, 0.1, 2000)
    assert d[-1] < 1e-3 * d[0]
    # monotone up to a small transient: every 50-step block ends closer than it started
    assert np.all(d[50::50] < d[:-50:50])


def test_extragradient_contraction_factor():  # prop-gan-bilinear-dynamics
    lr = 0.2
    d = _dist("extragradient", lr, 50)
    np.testing.assert_allclose(d[1:] / d[:-1], math.sqrt(1 - lr**2 + lr**4), rtol=1e-12)


def test_trajectory_shape_and_bad_input():
    for m in BILINEAR_DYNAMICS:
        assert bilinear_trajectory(m, steps=7).shape == (8, 2)
    with pytest.raises(ValueError, match="unknown method"):
        bilinear_trajectory("adam")
    with pytest.raises(ValueError, match="lr must be > 0"):
        bilinear_trajectory("alternating", lr=0.0)
    with pytest.raises(ValueError, match=r"trajectory must have shape \(T, 2\)"):
        distance_to_equilibrium(torch.zeros(3))
