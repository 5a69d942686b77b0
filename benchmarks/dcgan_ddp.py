"""DCGAN on MNIST on several processes: DistributedDataParallel under torchrun, through gencore.train.fit.

One process per GPU (NCCL), or per CPU core for a smoke run (gloo)::

    torchrun --nproc_per_node=4 benchmarks/dcgan_ddp.py --epochs 5            # 4 GPUs
    torchrun --nproc_per_node=2 benchmarks/dcgan_ddp.py --images 256 --width 8 --steps 3   # CPU smoke run

``--batch-size`` is the global batch: each rank trains on its shard of every minibatch and DDP
averages the gradients, so the run follows the single-process run on the same global batch
(see :mod:`gencore.distributed`). Rank 0 prints the images/s of the whole group and the final losses.
"""
from __future__ import annotations

import argparse
import time

import torch

from gencore import distributed as gdist
from gencore import gan
from gencore.data import load_mnist
from gencore.train import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="number of training images (default: all)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="step budget (default: --epochs epochs)")
    ap.add_argument("--batch-size", type=int, default=512, help="global batch over all ranks")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--latent", type=int, default=100)
    args = ap.parse_args()

    dev = gdist.setup()
    torch.manual_seed(0)  # same initialisation everywhere (DDP broadcasts rank 0's anyway)
    x, _ = load_mnist(split="train", n=args.images, device=dev)
    G = gdist.wrap(gan.DCGANGenerator(args.latent, width=args.width).to(dev))
    D = gdist.wrap(gan.DCGANDiscriminator(width=args.width).to(dev))
    step = gan.make_gan_step(G, D, gan.adam_for_gan(G), gan.adam_for_gan(D), latent_dim=args.latent, k=1)
    steps = args.steps or max(1, args.epochs * len(x) // args.batch_size)

    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    hist = fit(step, x, steps=steps, batch_size=args.batch_size, seed=0, log_every=max(1, steps // 10),
               desc="DCGAN (DDP)")
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if gdist.is_main_process():
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        logs = ", ".join(f"{k} {hist.last(k):.3f}" for k in hist.keys())
        print(f"{gdist.world_size()} process(es) on {name}: {steps * args.batch_size / dt:.0f} images/s "
              f"({steps} steps of {args.batch_size}); last losses: {logs}")
    gdist.cleanup()


if __name__ == "__main__":
    main()
