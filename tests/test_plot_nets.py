"""gencore.plot and gencore.nets."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gencore import data, nets, plot  # noqa: E402
from gencore.train import History  # noqa: E402


def test_image_grid_lays_out_images_in_rows():
    imgs = torch.zeros(12, 784)
    imgs[5] = 1.0  # row 0, column 5 of a 10-wide grid
    ax = plot.image_grid(imgs, nrow=10)
    canvas = ax.get_images()[0].get_array()
    assert canvas.shape == (2 * 29 + 1, 10 * 29 + 1)
    assert canvas[1:29, 1 + 5 * 29:1 + 5 * 29 + 28].min() == 1.0
    assert canvas[1:29, 1:29].max() == 0.0
    plt.close("all")


def test_image_grid_rejects_non_square_flat_images():
    with pytest.raises(ValueError, match="cannot infer a square image"):
        plot.image_grid(torch.zeros(2, 10))


def test_scatter_density_and_curves_draw():
    x = data.toy_2d("ring8", 100)
    ax = plot.scatter_2d(x, label="data", lim=3)
    assert ax.get_xlabel() == "$x_1$" and ax.get_xlim() == (-3, 3)
    m = data.mixture_1d()
    ax = plot.density_2d(lambda p: m.log_prob(p[:, 0]) + m.log_prob(p[:, 1]), n=20)
    img = ax.get_images()[0].get_array()
    assert img.shape == (20, 20) and np.isclose(img.max(), 1.0)
    h = History()
    for t in range(1, 11):
        h.append(t, {"loss": 1.0 / t})
    ax = plot.training_curves(h, smooth=3, logy=True)
    assert ax.get_xlabel() == "step" and len(ax.lines[0].get_xdata()) == 8
    plt.close("all")


def test_mlp_layers_and_activations():
    net = nets.mlp([2, 16, 16, 1], activation="tanh", out_activation="sigmoid")
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "Tanh", "Linear", "Tanh", "Linear", "Sigmoid"]
    y = net(torch.randn(5, 2))
    assert y.shape == (5, 1) and ((y > 0) & (y < 1)).all()


def test_mlp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown activation 'swish'; valid choices: relu"):
        nets.mlp([2, 1], activation="swish")
    with pytest.raises(ValueError, match="at least two positive integers"):
        nets.mlp([2])
