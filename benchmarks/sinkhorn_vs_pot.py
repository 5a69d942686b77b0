"""Benchmark: gencore.ot.sinkhorn vs POT's ot.sinkhorn2 on a 2,000 x 2,000 problem (CPU).

    python benchmarks/sinkhorn_vs_pot.py [--n 2000] [--eps 0.01] [--iters 500] [--repeats 3]

Fairness:
- the same CPU, the same process, the same float64 NumPy data (gencore gets it as float64
  tensors sharing the memory), the same histograms, cost matrix (squared Euclidean distances
  between uniform points of the unit square, so costs lie in [0, 2]) and the same eps;
- the same amount of work: both run exactly ``--iters`` iterations (POT: ``numItermax=iters,
  stopThr=0``; gencore: ``max_iter=iters, tol=0``); both check their marginal error every 10
  iterations (POT's default, gencore's ``check_every=10``). The eps is small enough that
  neither reaches a zero error, so neither stops early (the script asserts gencore's count);
- each is run once to warm up, then both are run in turn ``--repeats`` times (interleaved, so a
  change in the machine's load hits both alike); the best time of each is compared;
- POT uses its default ``method="sinkhorn"`` (plain scaling, the fastest POT method; its
  ``"sinkhorn_log"`` is slower still). gencore runs its stabilised log-domain scheme.
The script also prints the two costs so one sees they solve the same problem.

Prints the times and the ratio gencore / POT (< 1 means gencore is faster).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import ot
import torch

from gencore.ot import sinkhorn


def interleaved_best_times(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Warm each function up, then run them in turn ``repeats`` times (alternating, so a change
    in the load of the machine hits both alike); return the best time and last output of each."""
    out = {name: fn() for name, fn in fns.items()}
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--iters", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x, y = rng.random((args.n, 2)), rng.random((args.n, 2))
    a = rng.random(args.n) + 0.5
    a /= a.sum()
    b = np.full(args.n, 1.0 / args.n)
    C = ot.dist(x, y)                            # squared Euclidean, float64 (n, n)
    at, bt, Ct = (torch.from_numpy(v) for v in (a, b, C))

    best, out = interleaved_best_times({
        "pot": lambda: ot.sinkhorn2(a, b, C, args.eps, method="sinkhorn", numItermax=args.iters, stopThr=0.0),
        "gencore": lambda: sinkhorn(at, bt, Ct, args.eps, max_iter=args.iters, tol=0.0, check_every=10),
    }, args.repeats)
    t_pot, t_gen, cost_pot, res = best["pot"], best["gencore"], out["pot"], out["gencore"]
    assert res.n_iter == args.iters, res.n_iter

    print(f"problem: {args.n} x {args.n}, float64, eps={args.eps}, {args.iters} iterations each, "
          f"best of {args.repeats}; torch threads={torch.get_num_threads()}")
    print(f"POT ot.sinkhorn2      : {t_pot:8.3f} s   cost {float(cost_pot):.8f}")
    print(f"gencore.ot.sinkhorn   : {t_gen:8.3f} s   cost {float(res.cost):.8f}")
    print(f"ratio gencore / POT   : {t_gen / t_pot:.3f}")


if __name__ == "__main__":
    main()
