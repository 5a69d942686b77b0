"""Render measured results (JSON) into the book's pages, between generated-block markers.

    python tools/results_tables.py record   # copy _build/timings/nbval.json (written by the last
                                            # nbval run) to benchmarks/results/chapter_times_cpu.json
    python tools/results_tables.py render   # rewrite the generated blocks of book/course.md and
                                            # book/performance.md from benchmarks/results/*.json
    python tools/results_tables.py check    # exit 1 when a page's blocks differ from the JSON

A page holds ``<!-- begin generated: NAME -->`` ... ``<!-- end generated: NAME -->``; only the
text between the markers is rewritten. ``tests/test_results_tables.py`` runs ``check``, so a page
never shows numbers that the committed JSON does not hold.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGES = {"course": ROOT / "book" / "course.md", "performance": ROOT / "book" / "performance.md"}
BLOCK = re.compile(r"(<!-- begin generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)", re.S)


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _chapter_titles() -> dict[str, str]:
    titles = {}
    # chapters in reading order (_toc.yml), e.g. 01b_autoregressive right after 01
    toc = re.findall(r"file:\s*book/(\S+)", (ROOT / "_toc.yml").read_text())
    notebooks = [ROOT / "book" / f"{stem}.ipynb" for stem in toc]
    for nb in [p for p in notebooks if p.exists()]:
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                m = re.search(r"^# (.+)$", "".join(cell["source"]), re.M)
                if m:
                    titles[nb.stem] = m.group(1).strip()
                    break
    return titles


def chapter_times() -> str:
    rec = _load("chapter_times_cpu.json")
    gpu = _load("chapter_times_gpu.json")
    titles = _chapter_titles()
    if rec is None:
        return "*No measured chapter times yet: run `make test`, then `python tools/results_tables.py record`.*\n"
    lines = [f"Measured on {rec['date']} ({rec['machine']}, scale `{rec['scale']}`, "
             f"one thread per chapter, two chapters at a time), by the nbval run of `make test`.", "",
             "| chapter | seconds on the 2-core CPU (quick scale, wall time) | seconds on a GPU (full scale) |", "|---|---|---|"]
    for stem, title in titles.items():
        cpu = rec["chapters"].get(stem, {}).get("seconds")
        g = (gpu or {}).get("chapters", {}).get(stem, {}).get("seconds")
        lines.append(f"| {title} | {'not measured' if cpu is None else f'{cpu:.0f}'} | "
                     f"{'not measured yet' if g is None else f'{g:.0f}'} |")
    lines.append(f"| **all chapters** | **{rec['total_seconds']:.0f}** | |")
    return "\n".join(lines) + "\n"


def benchmarks() -> str:
    out = []
    vae = {tag: _load(f"vae_vs_dataloader_{tag}.json") for tag in ("cpu", "cuda")}
    out += ["**VAE epoch** (`python benchmarks/vae_vs_dataloader.py`): the 784-200-200-50 MLP VAE, "
            "gencore's `fit()` against the PyTorch-examples `DataLoader` loop, same epochs.", "",
            "| device | images | baseline s/epoch (batch 128) | gencore s/epoch (batch) | speed-up | "
            "test ELBO baseline / gencore |", "|---|---|---|---|---|---|"]
    for tag, r in vae.items():
        if r is None:
            out.append(f"| {tag} | not measured yet | | | | |")
            continue
        b, g = r["baseline"], r["gencore"]
        out.append(f"| {r['device']} | {r['images']} | {b['seconds_per_epoch']:.3f} | "
                   f"{g['seconds_per_epoch']:.3f} ({g['batch']}) | {r['speedup']:.2f}× | "
                   f"{b['test_elbo']:.2f} / {g['test_elbo']:.2f} |")
    fid = _load("fid.json")
    out += ["", "**FID** (`python benchmarks/fid_vs_scipy.py`): `gencore.metrics.fid` against the scipy "
            "`sqrtm` reference (float64) on the same features, in the same run.", ""]
    if fid is None:
        out.append("*Not measured yet.*")
    else:
        device = fid.get("gpu") or f"{fid.get('cpu', 'cpu')} ({fid.get('torch_threads', '?')} thread)"
        out += [f"{fid['n']:,} × {fid['d']} features, best of {fid['repeats']}, on {device}, {fid['date']}; "
                f"the two values agree to a relative {fid['max_relative_difference']:.1e}.", "",
                "| implementation | seconds | time / reference | FID |", "|---|---|---|---|"]
        for name, sec in fid["seconds"].items():
            out.append(f"| {name} | {sec:.4f} | {fid['ratio_to_reference'][name]:.2f} | {fid['fid'][name]:.6f} |")
        if not fid.get("gpu"):
            out += ["", "*The GPU figure is not measured yet: no GPU was available to the session that ran it.*"]
    return "\n".join(out).rstrip() + "\n"


def leaderboard_table() -> str:
    """Every registered recipe of ``gencore.leaderboard`` on one table (``benchmarks/leaderboard.py``)."""
    out = []
    for tag in ("cpu", "cuda"):
        rec = _load(f"leaderboard_{tag}.json")
        if rec is None:
            out += [f"*{tag.upper()}: not measured yet"
                    + (" (no GPU was available to the sessions that wrote this page)." if tag == "cuda" else ".")
                    + "*", ""]
            continue
        seeds = ", ".join(str(s) for s in rec["seeds"])
        out += [f"**{rec['device']}**, scale `{rec['scale']}`, {rec['n_train']:,} training images, seeds {seeds} "
                f"({rec['date']}); mean ± sd over seeds (ddof = 1), 1,000 samples per model against the test "
                "digits in the classifier's feature space; lower FID/KID is better.", "",
                "| model | steps | FID | KID | precision | recall | NLL (nats, IWAE k = 50) | seconds per seed |",
                "|---|---|---|---|---|---|---|---|"]
        f = rec["floor"]
        out.append(f"| real digits (floor) | | {f['fid']:.1f} | {f['kid']:.1f} | {f['precision']:.3f} | "
                   f"{f['recall']:.3f} | | |")
        for kind, row in rec["rows"].items():
            cells = []
            for m, fmt in (("fid", ".1f"), ("kid", ".1f"), ("precision", ".3f"), ("recall", ".3f"), ("nll", ".1f")):
                v = [s[m] for s in row["scores"] if s[m] is not None]
                if not v:
                    cells.append("")
                    continue
                mean = sum(v) / len(v)
                sd = (sum((x - mean) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
                cells.append(f"{format(mean, fmt)} ± {format(sd, fmt)}")
            sec = row.get("seconds_per_seed")
            out.append(f"| {kind} | {row['steps'] or ''} | " + " | ".join(cells)
                       + f" | {'' if sec is None else f'{sec:.0f}'} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


GENERATORS = {"chapter-times": chapter_times, "benchmarks": benchmarks, "leaderboard": leaderboard_table}


def rendered(text: str) -> str:
    def sub(m):
        fn = GENERATORS.get(m.group("name"))
        if fn is None:
            raise KeyError(f"unknown generated block {m.group('name')!r}; known: {', '.join(GENERATORS)}")
        return m.group(1) + fn() + m.group(4)
    return BLOCK.sub(sub, text)


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else ""
    if cmd == "record":
        src = ROOT / "_build" / "timings" / "nbval.json"
        if not src.exists():
            print("no _build/timings/nbval.json: run `make test` (or `make nbval`) first")
            return 1
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, RESULTS / "chapter_times_cpu.json")
        print("recorded benchmarks/results/chapter_times_cpu.json")
        return main(["render"])
    if cmd in ("render", "check"):
        stale = []
        for name, page in PAGES.items():
            if not page.exists():
                continue
            text = page.read_text()
            new = rendered(text)
            if new != text:
                stale.append(page.name)
                if cmd == "render":
                    page.write_text(new)
        if cmd == "check" and stale:
            print(f"generated blocks out of date in {', '.join(stale)}: run `python tools/results_tables.py render`")
            return 1
        print("rendered" if cmd == "render" else "up to date")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
