"""gencore's fit() against the PyTorch-examples training loop: MLP VAE 784-200-200-50 on MNIST.

Same model, same data, same number of epochs, in one run:

- **baseline**: the loop of the PyTorch VAE example: a ``DataLoader`` (batch 128, shuffled) over a
  ``TensorDataset`` on the host, a host-to-device copy per batch, ``loss.item()`` every step;
- **gencore**: :func:`gencore.train.fit` with the data resident on the device, batches drawn by
  indexing, losses read back once per epoch; optionally a larger batch with a scaled learning rate
  (``--gencore-batch 1024``: lr × batch / 128, the linear scaling rule).

Both are scored by the test ELBO (dynamic binarisation, 1 sample) after the same number of epochs.
Prints a table and writes ``benchmarks/results/vae_vs_dataloader_<device>.json``::

    python benchmarks/vae_vs_dataloader.py                       # full MNIST where available
    python benchmarks/vae_vs_dataloader.py --images 2000 --epochs 1   # a CPU smoke run
    python benchmarks/vae_vs_dataloader.py --gencore-batch 1024  # the GPU configuration
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import gencore
from gencore.data import binarize_dynamic, load_mnist
from gencore.train import fit, make_step
from gencore.vae import VAE

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _model(dev):
    torch.manual_seed(0)
    return VAE(784, 50, hidden=(200, 200), likelihood="bernoulli").to(dev)


@torch.no_grad()
def test_elbo(model, x_test, dev) -> float:
    g = torch.Generator(device=dev).manual_seed(123)
    return float(torch.cat([model.elbo(binarize_dynamic(b, generator=g)) for b in x_test.split(1000)]).mean())


def run_baseline(x_train_cpu, x_test, dev, epochs, lr):
    model = _model(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(x_train_cpu), batch_size=128, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    g = torch.Generator(device=dev).manual_seed(0)
    times = []
    for _ in range(epochs):
        _sync(dev)
        t0 = time.perf_counter()
        model.train()
        train_loss = 0.0
        for (batch,) in loader:
            batch = batch.to(dev)
            opt.zero_grad()
            loss = -model.elbo(binarize_dynamic(batch, generator=g)).mean()
            loss.backward()
            train_loss += loss.item()  # as in the example: one device sync per step
            opt.step()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return times, test_elbo(model, x_test, dev)


def run_gencore(x_train, x_test, dev, epochs, lr, batch):
    model = _model(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr * batch / 128)
    g = torch.Generator(device=dev).manual_seed(0)
    step = make_step(lambda b: -model.elbo(binarize_dynamic(b, generator=g)).mean(), opt)
    steps = max(1, len(x_train) // batch)
    times = []
    for epoch in range(epochs):
        _sync(dev)
        t0 = time.perf_counter()
        fit(step, x_train, steps=steps, batch_size=batch, seed=epoch, log_every=steps, progress=False)
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return times, test_elbo(model, x_test, dev)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="training images (default: all)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--gencore-batch", type=int, default=128)
    ap.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = ap.parse_args(argv)

    dev = gencore.device()
    x_train, _ = load_mnist(split="train", n=args.images, device="cpu")
    x_test, _ = load_mnist(split="test", device=dev)
    base_t, base_elbo = run_baseline(x_train, x_test, dev, args.epochs, args.lr)
    gc_t, gc_elbo = run_gencore(x_train.to(dev), x_test, dev, args.epochs, args.lr, args.gencore_batch)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    # the first epoch includes warm-up (CUDA kernel selection): the median of the rest where there is one
    med = lambda t: statistics.median(t[1:] if len(t) > 1 else t)
    row = {
        "device": name, "images": len(x_train), "test_images": len(x_test), "epochs": args.epochs,
        "baseline": {"batch": 128, "seconds_per_epoch": med(base_t), "test_elbo": base_elbo},
        "gencore": {"batch": args.gencore_batch, "seconds_per_epoch": med(gc_t), "test_elbo": gc_elbo},
        "speedup": med(base_t) / med(gc_t),
        "torch": torch.__version__, "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
    }
    print(f"| loop | batch | s / epoch | test ELBO (nats) |\n|---|---|---|---|\n"
          f"| DataLoader baseline | 128 | {row['baseline']['seconds_per_epoch']:.3f} | {base_elbo:.2f} |\n"
          f"| gencore fit() | {args.gencore_batch} | {row['gencore']['seconds_per_epoch']:.3f} | {gc_elbo:.2f} |\n"
          f"speed-up {row['speedup']:.2f}x on {name}, {len(x_train)} images, {args.epochs} epoch(s)")
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        tag = "cuda" if dev.type == "cuda" else "cpu"
        out = RESULTS / f"vae_vs_dataloader_{tag}.json"
        out.write_text(json.dumps(row, indent=2) + "\n")
        print(f"wrote {out.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
