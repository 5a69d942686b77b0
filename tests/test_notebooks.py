"""Policies every chapter notebook obeys (checked without executing them; nbval executes them).

- The first code cell is the canonical Colab cell generated from ``_config.yml``.
- The table of contents and the chapter files agree.
- Every code cell was executed, stored no error, and no machine path leaks into an output.
- Only widget cells are hidden from nbval, and only from output comparison (``nbval-ignore-output``):
  a cell counts as a widget cell when its code calls ``interact``/``interactive`` or builds an
  ``ipywidgets`` object (read from the code's syntax tree, not from its words); ``nbval-skip``
  and ``NBVAL_*`` comments are never allowed.
- Every chapter picks the GPU when there is one (``gencore.device()``).
- Every chapter has learning objectives, at least four exercises with solutions, and a summary
  with citations.
- Every theorem, proposition, lemma, corollary and definition (colon or backtick fence) has a
  label, and every label is named (in a comment, the name or the docstring) inside a test
  function of ``tests/`` that calls ``gencore``.
- Every chapter has at least one coding exercise with an auto-checker: a code cell tagged
  ``solution``, right after the markdown cell with its ``{solution}`` directive, that defines the
  student's function with ``def`` and ends with ``gencore.exercises.check("<name>", fn, strict=True)``
  for a registered exercise. Every code cell that calls the checker is tagged ``solution`` (the
  student edition, ``tools/student.py``, replaces exactly those cells by stubs).
"""
from __future__ import annotations

import ast
import functools
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import nbtools  # noqa: E402
import student  # noqa: E402

CHAPTERS = nbtools.chapters()
RESULT_KINDS = "theorem|proposition|lemma|corollary|definition"
# a result block opened by a colon fence (:::{prf:theorem}) or a backtick fence (```{prf:theorem}),
# followed by its option lines (:label: ..., :class: ...)
RESULT_BLOCK = re.compile(r"(?:^|\n)[ \t]*(?::{3,}|`{3,})\{prf:(" + RESULT_KINDS + r")\}[^\n]*\n((?:[ \t]*:[a-z-]+:[^\n]*\n)*)")
LABEL_OPTION = re.compile(r":label:\s*(\S+)")
WIDGET_CALLS = {"interact", "interactive", "interact_manual", "interactive_output"}
ALLOWED_NBVAL_TAGS = {"nbval-ignore-output"}


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


def creates_widget(source: str) -> bool:
    """Whether a code cell creates a widget: it calls ``interact``/``interactive`` (also as a
    decorator) or builds an object of ``ipywidgets`` (``widgets.FloatSlider(...)``, or a name
    imported from ipywidgets). Words in comments or strings do not count."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    from_ipywidgets, module_aliases = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ipywidgets":
            from_ipywidgets |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            module_aliases |= {a.asname or a.name for a in node.names if a.name.split(".")[0] == "ipywidgets"}
    module_aliases |= {"widgets", "ipywidgets"} & (from_ipywidgets | module_aliases | {"widgets"})
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and (f.id in WIDGET_CALLS or f.id in from_ipywidgets):
            return True
        if isinstance(f, ast.Attribute) and (f.attr in WIDGET_CALLS or (
                isinstance(f.value, ast.Name) and f.value.id in module_aliases)):
            return True
    decorators = [d for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for d in n.decorator_list]
    return any(isinstance(d, ast.Name) and d.id in WIDGET_CALLS for d in decorators)


def test_widget_detection_reads_code_not_words():
    assert creates_widget("from ipywidgets import interact\ninteract(f, s=(0, 1))")
    assert creates_widget("import ipywidgets as widgets\nw = widgets.FloatSlider(value=1.0)")
    assert creates_widget("@interact(s=(0.1, 2.0))\ndef show(s):\n    plot(s)")
    assert not creates_widget("# an interactive version of this figure is below\nplot(x)")
    assert not creates_widget('print("interactive ipywidgets widgets.FloatSlider")')
    assert not creates_widget("loss = train(model)  # interact with the optimiser")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_only_widget_cells_are_hidden_from_nbval(path):
    for cell in _nb(path)["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        tags = set(cell.get("metadata", {}).get("tags", []))
        nbval_tags = {t for t in tags if t.startswith("nbval")}
        assert nbval_tags <= ALLOWED_NBVAL_TAGS, f"forbidden nbval tag {sorted(nbval_tags)}:\n{src[:200]}"
        assert "NBVAL_" not in src, f"NBVAL_ comment in a cell (use a tag on widget cells only):\n{src[:200]}"
        if nbval_tags:
            assert creates_widget(src), f"non-widget cell hidden from nbval:\n{src[:200]}"


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


def result_blocks(markdown: str) -> list[tuple[str, str | None]]:
    """(kind, label or None) of every theorem/proposition/lemma/corollary/definition block."""
    out = []
    for kind, options in RESULT_BLOCK.findall(markdown):
        m = LABEL_OPTION.search(options)
        out.append((kind, m.group(1) if m else None))
    return out


def _labelled_results() -> list[tuple[str, str]]:
    return [(path.stem, label) for path in CHAPTERS
            for _, label in result_blocks(_markdown(_nb(path))) if label]


def gencore_names(tree: ast.Module) -> set[str]:
    """Names bound at module level to gencore or to something imported from it."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "gencore"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gencore":
            names |= {a.asname or a.name for a in node.names}
    return names


def labels_named_in_tests(source: str) -> set[str]:
    """Labels named inside test functions that call gencore: in a comment within the function's
    lines (its ``def`` line included), its name or its docstring."""
    tree = ast.parse(source)
    lines = source.splitlines()
    imported = gencore_names(tree)
    found = set()
    for node in ast.walk(tree):
        if not (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test")):
            continue
        calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
        def root(f):
            while isinstance(f, (ast.Attribute, ast.Call, ast.Subscript)):
                f = f.func if isinstance(f, ast.Call) else f.value
            return f.id if isinstance(f, ast.Name) else None
        if not any(root(c.func) in imported for c in calls):
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        text = "\n".join(lines[first - 1:node.end_lineno])
        comments = " ".join(re.findall(r"#([^\n]*)", text))
        doc = ast.get_docstring(node) or ""
        found |= set(re.findall(r"[A-Za-z0-9_:-]+", comments + " " + doc + " " + node.name.replace("_", "-")))
    return found


def test_label_policy_counts_only_labels_inside_gencore_tests():
    src = (
        "import gencore\nfrom gencore.gan import optimal_discriminator\n"
        "# TODO someday: thm-outside\n"
        "def helper():  # thm-helper\n    return optimal_discriminator(1, 1)\n"
        "def test_no_gencore():  # thm-no-call\n    assert 1 + 1 == 2\n"
        "def test_real():  # thm-real\n    assert optimal_discriminator(1.0, 1.0) == 0.5\n"
        "def test_doc():\n    \"\"\"Checks prop-doc.\"\"\"\n    gencore.check_that('x', True)\n")
    found = labels_named_in_tests(src)
    assert {"thm-real", "prop-doc"} <= found
    assert not {"thm-outside", "thm-helper", "thm-no-call"} & found
    md = ("```{prf:theorem} Backtick\n:label: thm-backtick\n```\n\n"
          ":::{prf:definition} A definition\n:class: dropdown\n:label: def-x\n:::\n"
          "::::{prf:lemma} Unlabelled\n::::\n")
    assert result_blocks(md) == [("theorem", "thm-backtick"), ("definition", "def-x"), ("lemma", None)]


def test_result_labels_are_unique():
    labels = [label for _, label in _labelled_results()]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    assert not duplicates, f"duplicate result labels: {duplicates}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_result_block_has_a_label(path):
    missing = [kind for kind, label in result_blocks(_markdown(_nb(path))) if label is None]
    assert not missing, f"unlabelled {missing} in {path.name}"


@functools.lru_cache(maxsize=1)
def _all_tested_labels() -> frozenset[str]:
    here = Path(__file__).name
    found = set()
    for p in (ROOT / "tests").glob("test_*.py"):
        if p.name != here:
            found |= labels_named_in_tests(p.read_text())
    return frozenset(found)


@pytest.mark.parametrize("chapter, label", _labelled_results())
def test_every_labelled_result_is_named_by_a_test(chapter, label):
    assert label in _all_tested_labels(), (
        f"{label} ({chapter}) is not named inside a test function of tests/ that calls gencore")


# --------------------------------------------------------------------------- coding exercises
SOLUTION_TAG = "solution"
SOLUTION_DIRECTIVE = re.compile(r"^[ \t]*(?::{3,}|`{3,})\{solution\}", re.M)


def _code_cells(nb: dict) -> list[tuple[int, dict]]:
    return [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_a_coding_exercise_with_an_auto_checker(path):
    tagged = [c for _, c in _code_cells(_nb(path)) if SOLUTION_TAG in c.get("metadata", {}).get("tags", [])]
    assert tagged, (f"{path.name} has no coding exercise: add a code cell tagged 'solution' that defines the "
                    "function and ends with gencore.exercises.check(\"<name>\", fn, strict=True)")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_solution_cells_call_the_checker_and_only_they_do(path):
    from gencore.exercises import available
    nb = _nb(path)
    registered = set(available())
    for i, cell in _code_cells(nb):
        src = "".join(cell["source"])
        tagged = SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])
        calls = student.check_calls(src)
        if not tagged:
            assert not calls, f"a cell calls gencore.exercises.check but is not tagged 'solution' (the student " \
                              f"edition would show its solution):\n{src[:300]}"
            continue
        assert calls, f"a cell tagged 'solution' does not call gencore.exercises.check:\n{src[:300]}"
        names = student.checked_names(src)
        assert names and set(names) <= registered, f"unregistered exercise(s) {sorted(set(names) - registered)}"
        assert all(any(k.arg == "strict" and getattr(k.value, "value", None) is True for k in c.keywords)
                   for c in calls), "the book's solution cells check with strict=True (a regression fails nbval)"
        student.stub_source(src)            # raises unless the checked function is defined with def here
        prev = nb["cells"][i - 1] if i else None
        assert prev is not None and prev["cell_type"] == "markdown" and SOLUTION_DIRECTIVE.search(
            "".join(prev["source"])), "a solution cell comes right after the markdown cell with its {solution}"


def test_coding_exercise_policy_reads_code_not_words():
    assert student.checked_names('v = gencore.exercises.check("kl_normal", f, strict=True)') == ["kl_normal"]
    assert student.checked_names("from gencore import exercises\nexercises.check('a', f)") == ["a"]
    assert not student.check_calls('print("gencore.exercises.check(x)")  # gencore.exercises.check')
