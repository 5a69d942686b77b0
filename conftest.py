"""Root pytest configuration: records how long each chapter takes under nbval.

When notebooks run under ``--nbval`` (``make test``, ``make nbval``), the seconds of every chapter
(kernel start plus all its cells, wall time on one worker) are written at the end of the session
to ``_build/timings/nbval.json``, with the machine, the scale and the pass/fail count, so that the
course page and ``benchmarks/results/`` can show measured runtimes rather than guesses. Under
pytest-xdist only the controller writes (it sees every worker's reports).
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TIMINGS = ROOT / "_build" / "timings" / "nbval.json"

_seconds: dict[str, float] = defaultdict(float)
_outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))


def _chapter(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    return Path(path).stem if path.endswith(".ipynb") else None


def pytest_runtest_logreport(report):
    chapter = _chapter(report.nodeid)
    if chapter is None:
        return
    _seconds[chapter] += report.duration
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _outcomes[chapter][report.outcome] += 1


def pytest_sessionfinish(session, exitstatus):
    if hasattr(session.config, "workerinput") or not _seconds:
        return
    record = {
        "what": "wall seconds per chapter under nbval (kernel start + every cell), one worker each",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
        "scale": os.environ.get("GENCORE_SCALE", "default"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "chapters": {c: {"seconds": round(s, 1), "cells": dict(_outcomes[c])} for c, s in sorted(_seconds.items())},
        "total_seconds": round(sum(_seconds.values()), 1),
    }
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps(record, indent=2) + "\n")
