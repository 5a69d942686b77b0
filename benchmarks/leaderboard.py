"""The book's whole leaderboard: every registered recipe, the same data, features and metrics.

    python benchmarks/leaderboard.py [--seeds 0 1 2] [--kinds VAE DDPM ...] [--out PATH]

Chapter "Evaluating generative models" trains the five built-in recipes of
:mod:`gencore.leaderboard` (VAE, CVAE, DCGAN, WGAN-GP, WAE-MMD) inside its notebook. Later chapters
register their own models with :func:`gencore.leaderboard.register_recipe` (the DDPM of chapter
"Denoising diffusion", the flow-matching model of chapter "Flow matching"); this script trains
**every** kind of :func:`gencore.leaderboard.kinds` with each seed, through the same
:func:`gencore.leaderboard.score_seed` the evaluation chapter calls, and scores 1,000 samples per model
against the real test digits in the feature space of the book's digit classifier
(:mod:`gencore.classifier`): FID, KID, precision, recall, and the IWAE NLL where a model has one. Two
reference rows bracket the table: real training digits (the floor) and an untrained DCGAN generator.

The scale follows ``GENCORE_SCALE`` (quick on a CPU: each recipe's quick step budget on the 5,000-image
MNIST subset; full on a GPU). Writes ``benchmarks/results/leaderboard_<device>.json``, which
``python tools/results_tables.py render`` puts on the appendix page "Performance".
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

import gencore
from gencore import classifier, leaderboard
from gencore.data import binarize_static, load_mnist
from gencore.gan import DCGANGenerator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", default=None, help="default: every registered kind")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    device = gencore.device()
    kinds = tuple(args.kinds) if args.kinds else leaderboard.kinds()
    x_train, y_train = load_mnist(split="train", device=device)
    x_test, y_test = load_mnist(split="test", device=device)
    net = classifier.load(device=device)
    feat_test = classifier.features(x_test, net)
    x_test_bin = binarize_static(x_test[:500], seed=1)

    floor = leaderboard.evaluate(x_train[:1000], feat_test, net)
    results: dict[int, dict[str, leaderboard.Scores]] = {}
    seconds: dict[str, float] = {k: 0.0 for k in kinds}
    for seed in args.seeds:
        results[seed] = {}
        for kind in kinds:
            start = time.perf_counter()
            r = leaderboard.score_seed(seed, x_train, y_train, feat_test, net, x_test_binary=x_test_bin,
                                       y_test=y_test[:500], n_samples=1000, k_iwae=50, kinds=(kind,))
            seconds[kind] += time.perf_counter() - start
            results[seed][kind] = r.scores[kind]
        gencore.seed_everything(seed)
        untrained = DCGANGenerator(64, width=16).to(device).eval()
        with torch.no_grad():
            z = torch.randn(1000, 64, generator=torch.Generator(device=device).manual_seed(seed), device=device)
            results[seed]["untrained DCGAN"] = leaderboard.evaluate(untrained(z).reshape(-1, 784), feat_test, net)

    rows = leaderboard.rows_from(results)
    print(f"scale {gencore.scale()}, device {device}, seeds {args.seeds}; mean ± sd over seeds")
    print(leaderboard.format_table([leaderboard.Row("real (floor)", (0,), (floor,)), *rows]))

    tag = "cuda" if device.type == "cuda" else "cpu"
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"leaderboard_{tag}.json"
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"{platform.machine()}, {os.cpu_count()} cores",
        "scale": gencore.scale(),
        "seeds": list(args.seeds),
        "n_train": len(x_train),
        "floor": asdict(floor),
        "rows": {r.kind: {"steps": None if r.kind == "untrained DCGAN" else leaderboard.default_steps(r.kind),
                          "seconds_per_seed": None if r.kind not in seconds else seconds[r.kind] / len(args.seeds),
                          "scores": [asdict(s) for s in r.scores]} for r in rows},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
