"""The student edition (``tools/student.py``, ``make student``): no solutions, it builds, its checkers fail.

- The edition holds no solution: no ``{solution}`` directive in any page or chapter, no cell tagged
  ``solution``, and none of the code of the book's solution cells (checked against the original
  notebooks, line by line, so the check does not rely on the tool's own parser).
- Nothing else is lost: every exercise is still there, and every solution cell became one stub that
  keeps the function's signature and calls the same checker.
- The edition builds with ``jupyter-book build -W -n --keep-going`` (the whole edition: about 16 s of
  wall time on the 2-core machine, so no subset is needed).
- Each stub cell, executed on its own, prints a failing verdict ("not implemented yet") and raises
  nothing: the student sees the checker fail, not a crash.

Every test is parametrised over the chapters found in ``book/``, so new chapters are covered when they
arrive.
"""
from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import nbtools  # noqa: E402
import student  # noqa: E402

CHAPTERS = nbtools.chapters()
SOLUTION_DIRECTIVE = re.compile(r"\{solution(?:-start|-end)?\}")
EXERCISE_LABEL = re.compile(r"[:`]{3,}\{exercise(?:-start)?\}[^\n]*\n\s*:label:\s*(\S+)")


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    return student.write_edition(tmp_path_factory.mktemp("student") / "edition", quiet=True)


def _nb(path: Path) -> dict:
    return json.loads(path.read_text())


def _solution_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "solution" in c["metadata"].get("tags", [])]


def _stub_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "exercise" in c["metadata"].get("tags", [])]


def _src(cell: dict) -> str:
    return "".join(cell["source"])


def _body_lines(source: str) -> set[str]:
    """The lines of the bodies of the functions a solution cell defines (what the student must write)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out = set()
    for fn in (n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        first = fn.body[0].lineno
        out |= {ln.strip() for ln in lines[first - 1:fn.end_lineno] if ln.strip() and not ln.strip().startswith("#")}
    return out


def _signatures(source: str) -> dict[str, str]:
    tree = ast.parse(source)
    return {n.name: ast.unparse(n.args) for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_edition_has_a_config_a_toc_and_every_page(edition):
    assert (edition / "_config.yml").exists() and (edition / "_toc.yml").exists()
    assert "student edition" in (edition / "_config.yml").read_text()
    for path in CHAPTERS:
        assert (edition / "book" / path.name).exists(), path.name
    for page in (ROOT / "book").glob("*.md"):
        assert (edition / "book" / page.name).exists(), page.name
    assert (edition / "book" / "references.bib").read_text() == (ROOT / "book" / "references.bib").read_text()


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_edition_contains_no_solution(edition, path):
    original, ed = _nb(path), _nb(edition / "book" / path.name)
    markdown = "\n".join(_src(c) for c in ed["cells"] if c["cell_type"] == "markdown")
    assert not SOLUTION_DIRECTIVE.search(markdown), "a {solution} directive is left in the text"
    assert not _solution_cells(ed), "a cell tagged 'solution' is left"
    ed_code = "\n".join(_src(c) for c in ed["cells"] if c["cell_type"] == "code")
    # lines that also occur outside the solution cells of the original are not solution code
    elsewhere = {ln.strip() for c in original["cells"] if c not in _solution_cells(original)
                 for ln in _src(c).splitlines()}
    for cell in _solution_cells(original):
        assert _src(cell) not in ed_code
        leaked = sorted(ln for ln in _body_lines(_src(cell)) - elsewhere if ln in {x.strip() for x in ed_code.splitlines()})
        assert not leaked, f"solution code in the student edition: {leaked}"
    for cell in _stub_cells(ed):
        assert cell["outputs"] == [] and cell["execution_count"] is None, "a stub kept the solution's output"


def test_edition_of_the_pages_has_no_solution(edition):
    for page in (edition / "book").glob("*.md"):
        assert not SOLUTION_DIRECTIVE.search(page.read_text()), page.name


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_edition_keeps_every_exercise_and_stubs_every_solution_cell(edition, path):
    original, ed = _nb(path), _nb(edition / "book" / path.name)
    text = lambda nb: "\n".join(_src(c) for c in nb["cells"] if c["cell_type"] == "markdown")  # noqa: E731
    assert EXERCISE_LABEL.findall(text(ed)) == EXERCISE_LABEL.findall(text(original))
    solutions, stubs = _solution_cells(original), _stub_cells(ed)
    assert [c["id"] for c in stubs] == [c["id"] for c in solutions]
    for sol, stub in zip(solutions, stubs):
        assert _signatures(_src(stub)) == _signatures(_src(sol)), "the stub must keep the function signatures"
        assert "# your code here" in _src(stub)
        assert student.checked_names(_src(stub)) == student.checked_names(_src(sol))
        assert "strict" not in _src(stub)
    n_code = lambda nb: sum(c["cell_type"] == "code" for c in nb["cells"])  # noqa: E731
    assert n_code(ed) == n_code(original), "only solution cells change; no code cell is dropped"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_checker_cells_fail_on_the_stubs(edition, path):
    stubs = _stub_cells(_nb(edition / "book" / path.name))
    if not stubs:
        pytest.skip(f"{path.stem} has no coding exercise (tests/test_notebooks.py reports it)")
    import gencore
    from gencore.exercises import Verdict
    for cell in stubs:
        namespace: dict = {"__name__": "__main__"}
        exec("import gencore\nimport torch\nimport math", namespace)   # what every chapter has imported
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(_src(cell), f"<{path.stem} stub>", "exec"), namespace)   # must not raise
        verdict = namespace.get("verdict")
        assert isinstance(verdict, Verdict) and not verdict.passed, out.getvalue()
        (name,) = student.checked_names(_src(cell))
        assert out.getvalue().startswith(f"✗ {name}: not implemented yet"), out.getvalue()
    assert gencore.exercises.EXERCISES  # the checks ran against the registry


def test_stub_source_keeps_imports_signature_and_check():
    src = ('import math\n\n\ndef my_f(x, *, scale: float = 2.0) -> float:\n    """Doc."""\n'
           '    def helper(y):\n        return y + 1\n    return helper(x) * math.pi\n\n\n'
           'other = 3\nverdict = gencore.exercises.check("kl_normal", my_f, strict=True)\n')
    stub = student.stub_source(src)
    assert stub == ('import math\n\ndef my_f(x, *, scale: float=2.0) -> float:\n    # your code here\n'
                    '    raise NotImplementedError\n\nverdict = gencore.exercises.check("kl_normal", my_f)')
    with pytest.raises(ValueError, match="must call gencore.exercises.check"):
        student.stub_source("def f(x):\n    return x\n")
    with pytest.raises(ValueError, match="defined with def in the same cell"):
        student.stub_source('f = lambda x: x\ngencore.exercises.check("kl_normal", f)\n')


def test_strip_solutions_handles_nested_and_backtick_blocks():
    md = ("Intro.\n\n:::{exercise}\n:label: ex-a\nDo it.\n:::\n\n"
          "::::{solution} ex-a\n:class: dropdown\n:::{prf:proof}\nSecret 1.\n:::\nSecret 2.\n::::\n\n"
          "````{solution} ex-b\n```python\nsecret3()\n```\n````\n\n"
          ":::{solution} ex-c\n:class: dropdown\nSecret 4.\n:::\nAfter.\n")
    out = student.strip_solutions(md)
    assert "Secret" not in out and "secret3" not in out and "{solution" not in out
    assert ":::{exercise}\n:label: ex-a\nDo it.\n:::" in out and out.startswith("Intro.") and out.endswith("After.\n")


def test_gated_solutions_are_removed_with_their_cells():
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("Before.\n\n:::{solution-start} ex-a\n:class: dropdown\n:::\nSecret text."),
        nbformat.v4.new_code_cell("secret_code()"),
        nbformat.v4.new_markdown_cell(":::{solution-end}\n:::\n\nAfter."),
    ])
    out = student.student_notebook(nb)
    assert [c.cell_type for c in out.cells] == ["markdown", "markdown"]
    assert out.cells[0].source.strip() == "Before." and out.cells[1].source.strip() == "After."


def test_toc_leaves_out_missing_files(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.md").write_text("# A\n")
    toc = {"format": "jb-book", "root": "book/a",
           "parts": [{"caption": "One", "chapters": [{"file": "book/a"}, {"file": "book/missing"}]},
                     {"caption": "Two", "chapters": [{"file": "book/gone"}]}]}
    new, dropped = student.student_toc(toc, tmp_path)
    assert new["parts"] == [{"caption": "One", "chapters": [{"file": "book/a"}]}]
    assert dropped == ["book/missing", "book/gone"]


def test_student_edition_builds_without_warnings(edition):
    """The whole edition, as ``make student`` builds it: -W -n --keep-going, zero warnings."""
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(edition), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    warnings = [ln for ln in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines() if "WARNING" in ln or "ERROR" in ln]
    assert proc.returncode == 0 and not warnings, "student edition build failed:\n" + "\n".join(
        warnings or [log[-3000:]])
    html = edition / "_build" / "html" / "book"
    for path in CHAPTERS:
        page = html / f"{path.stem}.html"
        if page.exists():                                   # chapters listed in _toc.yml
            assert "your code here" in page.read_text() or not _stub_cells(_nb(edition / "book" / path.name))
