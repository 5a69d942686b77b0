"""Seconds per MNIST epoch of DCGAN (data on the device, trained through gencore.train.fit).

    python benchmarks/dcgan_epoch.py              # full epoch on the device found (GPU if any)
    python benchmarks/dcgan_epoch.py --n 512      # a small CPU smoke run on 512 images

Prints one line per timed epoch and the median. The first (warm-up) epoch is not timed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import gencore
from gencore import gan
from gencore.data import load_mnist
from gencore.train import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="number of training images (default: all)")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--latent", type=int, default=100)
    args = ap.parse_args()

    dev = gencore.device()
    gencore.seed_everything(0)
    x, _ = load_mnist(split="train", n=args.n, device=dev)
    G = gan.DCGANGenerator(args.latent, width=args.width).to(dev)
    D = gan.DCGANDiscriminator(width=args.width).to(dev)
    step = gan.make_gan_step(G, D, gan.adam_for_gan(G), gan.adam_for_gan(D), latent_dim=args.latent, k=1)
    steps = max(1, len(x) // args.batch_size)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for epoch in range(args.epochs + 1):
        sync()
        t0 = time.perf_counter()
        fit(step, x, steps=steps, batch_size=args.batch_size, seed=epoch, progress=False, log_every=steps)
        sync()
        dt = time.perf_counter() - t0
        if epoch > 0:
            times.append(dt)
            print(f"epoch {epoch}: {dt:.2f} s ({len(x)} images, batch {args.batch_size}, width {args.width})")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    print(f"DCGAN on MNIST, {name}: median {statistics.median(times):.2f} s per epoch of {len(x)} images")


if __name__ == "__main__":
    main()
