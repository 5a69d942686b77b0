"""Benchmark: gencore.metrics.fid (torch, eigenvalues) vs the scipy reference FID (float64 sqrtm).

    python benchmarks/fid_vs_scipy.py [--n 10000] [--d 128] [--repeats 5] [--out benchmarks/results/fid.json]

Fairness:
- the same process, the same float64 feature matrices (two sets of ``n`` x ``d`` ReLU features,
  ``relu(z @ A)`` with a random ``A``, so that covariances are full rank but ill-conditioned, as
  real network features are);
- the whole pipeline from features to the number: the reference computes ``np.mean`` and
  ``np.cov`` (ddof = 1) and then ``gencore.metrics.frechet_distance_reference`` (``scipy.linalg.sqrtm``
  of ``sigma1 @ sigma2``, the eps retry and the imaginary-part check, as in pytorch-fid);
  gencore runs ``metrics.fid`` (torch means and covariances, two ``eigh``), float64 on the CPU
  and, when CUDA is available, on the GPU (data already on the GPU; synchronised before the
  clock stops);
- each is run once to warm up, then all are run in turn ``--repeats`` times (interleaved, so a
  change in load hits them alike); the best time of each is reported, with the two FID values.

Prints a table and writes ``--out`` (JSON with the device names, sizes, thread count and times).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gencore.metrics import fid, frechet_distance_reference


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def reference_fid(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance_reference(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fid.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    mix = rng.normal(size=(args.d, args.d)) / np.sqrt(args.d)
    a = np.maximum(rng.normal(size=(args.n, args.d)) @ mix, 0)
    b = np.maximum((rng.normal(size=(args.n, args.d)) + 0.1) @ mix, 0)
    fns = {"scipy reference (CPU, float64)": lambda: reference_fid(a, b)}
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    fns["gencore.metrics.fid (CPU, float64)"] = lambda: fid(ta, tb)
    gpu_name = None
    if torch.cuda.is_available():
        ga, gb = ta.cuda(), tb.cuda()
        gpu_name = torch.cuda.get_device_name(0)

        def on_gpu():
            v = fid(ga, gb)                      # returns a float: already synchronised
            torch.cuda.synchronize()
            return v

        fns[f"gencore.metrics.fid (CUDA, float64, {gpu_name})"] = on_gpu

    out = {name: fn() for name, fn in fns.items()}       # warm-up
    best = {name: float("inf") for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)

    ref_name = next(iter(fns))
    print(f"FID on {args.n:,} x {args.d} features, best of {args.repeats}; CPU {cpu_name()}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'implementation':58s} {'seconds':>9s} {'ratio':>7s} {'FID':>14s}")
    for name in fns:
        print(f"{name:58s} {best[name]:9.4f} {best[name] / best[ref_name]:7.3f} {out[name]:14.6f}")
    rel = max(abs(out[n] - out[ref_name]) / abs(out[ref_name]) for n in fns)
    print(f"largest relative difference from the reference: {rel:.2e}")

    record = {
        "n": args.n, "d": args.d, "repeats": args.repeats,
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "gpu": gpu_name, "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__, "numpy": np.__version__,
        "seconds": best, "fid": out, "ratio_to_reference": {n: best[n] / best[ref_name] for n in fns},
        "max_relative_difference": rel,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
