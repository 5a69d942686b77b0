"""Policies every chapter notebook obeys (checked without executing them; nbval executes them).

- The first code cell is the canonical Colab cell generated from ``_config.yml``.
- The table of contents and the chapter files agree.
- Every code cell was executed, stored no error, and no machine path leaks into an output.
- Only widget cells are hidden from nbval.
- Every chapter picks the GPU when there is one (``gencore.device()``).
- Every chapter has learning objectives, at least four exercises with solutions, and a summary
  with citations.
- Every labelled theorem, proposition, lemma or corollary is named by a test in ``tests/``.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import nbtools  # noqa: E402

CHAPTERS = nbtools.chapters()
RESULT_LABEL = re.compile(r":::\{prf:(theorem|proposition|lemma|corollary)\}[^\n]*\n(?:\s*:[a-z]+:[^\n]*\n)*?\s*:label:\s*(\S+)")
WIDGET_CELL = re.compile(r"\binteract(ive)?\b|ipywidgets|widgets\.")


def _nb(path: Path) -> dict:
    return json.loads(path.read_text())


def _markdown(nb: dict) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [ch["file"] for ch in part["chapters"]]
    return files


def test_there_are_chapters():
    assert CHAPTERS, "no chapter notebooks found in book/"


def test_colab_cell_is_identical_in_every_chapter():
    assert nbtools.drifted() == [], "run `python tools/nbtools.py sync-colab`"
    src = nbtools.colab_cell_source()
    assert nbtools.repository_url() in src and 'if "google.colab" in sys.modules:' in src


def test_toc_lists_every_chapter_and_only_existing_files():
    listed = _toc_files()
    for f in listed:
        assert any((ROOT / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f"_toc.yml lists missing {f}"
    for path in CHAPTERS:
        assert f"book/{path.stem}" in listed, f"{path.name} is not in _toc.yml"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_executed_without_errors_or_machine_paths(path):
    nb = _nb(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert all(c["execution_count"] is not None for c in code), "unexecuted code cell (nbval would skip it)"
    counts = [c["execution_count"] for c in code]
    assert counts == sorted(counts), "cells were executed out of order"
    outputs = json.dumps([c.get("outputs", []) for c in code])
    assert '"output_type": "error"' not in outputs
    leak = re.search(r"(/(?:root|home|tmp|work)/[A-Za-z0-9_.-]+)", outputs)
    assert leak is None, f"machine path in outputs: {leak.group(1) if leak else ''}"
    assert path.stat().st_size < 3_000_000, "notebook over 3 MB: lower figure sizes"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_only_widget_cells_are_hidden_from_nbval(path):
    for cell in _nb(path)["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        tags = cell.get("metadata", {}).get("tags", [])
        hidden = any(t.startswith("nbval-") for t in tags) or "NBVAL_" in src
        if hidden:
            assert WIDGET_CELL.search(src), f"non-widget cell hidden from nbval:\n{src[:200]}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_picks_the_gpu_when_there_is_one(path):
    code = "\n".join("".join(c["source"]) for c in _nb(path)["cells"] if c["cell_type"] == "code")
    assert "gencore.device()" in code


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_objectives_exercises_solutions_and_cited_summary(path):
    md = _markdown(_nb(path))
    assert re.search(r"learning objectives", md, re.I), "no learning objectives"
    exercises = re.findall(r":::\{exercise\}[^\n]*\n\s*:label:\s*(\S+)", md)
    assert len(exercises) >= 4, f"{len(exercises)} exercises, need at least 4"
    for label in exercises:
        assert re.search(r":::\{solution\}\s*" + re.escape(label), md), f"exercise {label} has no solution"
    assert re.search(r"^#+ .*summary", md, re.I | re.M), "no summary section"
    assert "{cite" in md, "no citation"


def _labelled_results() -> list[tuple[str, str]]:
    found = []
    for path in CHAPTERS:
        for _, label in RESULT_LABEL.findall(_markdown(_nb(path))):
            found.append((path.stem, label))
    return found


def test_result_labels_are_unique():
    labels = [label for _, label in _labelled_results()]
    assert len(labels) == len(set(labels)), "duplicate result label"


@pytest.mark.parametrize("chapter, label", _labelled_results())
def test_every_labelled_result_is_named_by_a_test(chapter, label):
    here = Path(__file__).name
    text = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != here)
    assert re.search(r"#.*\b" + re.escape(label) + r"\b", text), (
        f"{label} ({chapter}) is not named in a comment of any test in tests/")
