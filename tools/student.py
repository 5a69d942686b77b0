"""Write the student edition of the book: the same book without the solutions.

    python tools/student.py [OUT]      # default: _build/student  (``make student`` also builds it)

The edition is a complete Jupyter Book in ``OUT`` (``_config.yml``, ``_toc.yml``, ``book/``) in which

- every ``{solution}`` block is removed from the text (colon or backtick fences, nested blocks such as a
  ``{prf:proof}`` inside a solution included; gated ``{solution-start}`` ... ``{solution-end}`` solutions
  are removed with every cell between them);
- every code cell tagged ``solution`` (see the book's convention: it defines the student's function and
  ends with ``gencore.exercises.check("<name>", fn, strict=True)``) becomes a stub: the same imports and
  function signature, a ``# your code here`` body that raises ``NotImplementedError``, and the same
  checker call without ``strict`` (so that running the stub prints a failing verdict instead of raising).
  The stub is tagged ``exercise``, shows its source, and has no outputs.

Everything else (text, exercises, figures, outputs of the other cells) is kept as it is. Chapters that
``_toc.yml`` lists but that do not exist (yet) are left out of the edition's table of contents, so that
the edition builds while chapters are being written. ``tests/test_student_edition.py`` checks that the
edition holds no solution code, that it builds, and that its checker cells fail on the stubs.
"""
from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
DEFAULT_OUT = ROOT / "_build" / "student"
SOLUTION_TAG = "solution"
STUB_TAG = "exercise"
STUB_BODY = ("    # your code here", "    raise NotImplementedError")
TITLE_SUFFIX = " (student edition)"

# An opening fence: indentation, 3+ colons or backticks, {directive}, the rest of the line.
_OPEN = re.compile(r"^[ \t]*(?P<fence>:{3,}|`{3,})\{(?P<name>[A-Za-z0-9:_-]+)\}")
SOLUTION_DIRECTIVES = {"solution"}
GATED_START, GATED_END = "solution-start", "solution-end"


# --------------------------------------------------------------------------- markdown
def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened with ``fence`` (same character, at least as long, nothing else)."""
    s = line.strip()
    return len(s) >= len(fence) and set(s) == {fence[0]}


def _block_end(lines: list[str], start: int) -> int:
    """Index of the line that closes the block opened at ``lines[start]`` (len(lines) if unclosed)."""
    fence = _OPEN.match(lines[start]).group("fence")
    depth = 0
    for i in range(start + 1, len(lines)):
        m = _OPEN.match(lines[i])
        if m and m.group("fence")[0] == fence[0] and len(m.group("fence")) >= len(fence):
            depth += 1        # a nested block with an equally long fence (allowed for backticks)
        elif _closes(lines[i], fence):
            if depth == 0:
                return i
            depth -= 1
    return len(lines)


def strip_solutions(text: str) -> str:
    """``text`` (MyST markdown) without its ``{solution}`` blocks; other blocks are kept verbatim."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if m and m.group("name") in SOLUTION_DIRECTIVES:
            i = _block_end(lines, i) + 1
            continue
        out.append(lines[i])
        i += 1
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n") + ("\n" if text.endswith("\n") else "")


def _gated(text: str, name: str) -> list[tuple[int, int]]:
    """(start, end) line spans of the ``{name}`` blocks in ``text``."""
    lines = text.split("\n")
    spans = []
    for i, line in enumerate(lines):
        m = _OPEN.match(line)
        if m and m.group("name") == name:
            spans.append((i, _block_end(lines, i)))
    return spans


def _drop_gated(cells: list) -> list:
    """Remove gated solutions: from a ``{solution-start}`` block to the end of its ``{solution-end}``
    block, across cells (the code cells in between are the solution)."""
    kept, inside = [], False
    for cell in cells:
        if cell.cell_type != "markdown":
            if not inside:
                kept.append(cell)
            continue
        lines, out, i = cell.source.split("\n"), [], 0
        while i < len(lines):
            m = _OPEN.match(lines[i])
            if not inside and m and m.group("name") == GATED_START:
                inside = True
                i = _block_end(lines, i) + 1
                continue
            if inside:
                if m and m.group("name") == GATED_END:
                    inside = False
                    i = _block_end(lines, i) + 1
                    continue
                i += 1
                continue
            out.append(lines[i])
            i += 1
        cell.source = "\n".join(out)
        kept.append(cell)
    if inside:
        raise ValueError("a {solution-start} block has no {solution-end}")
    return kept


# --------------------------------------------------------------------------- code
def _is_check_call(node: ast.AST) -> bool:
    """``gencore.exercises.check(...)``, ``exercises.check(...)`` or ``E.check(...)`` on a name bound to it."""
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    if isinstance(f, ast.Attribute) and f.attr == "check":
        v = f.value
        return (isinstance(v, ast.Attribute) and v.attr == "exercises") or (
            isinstance(v, ast.Name) and v.id in {"exercises", "E", "ex"})
    return False


def check_calls(source: str) -> list[ast.Call]:
    """The auto-checker calls (``gencore.exercises.check(...)``) in a code cell."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n for n in ast.walk(tree) if _is_check_call(n)]


def checked_names(source: str) -> list[str]:
    """The exercise names (first argument, a string literal) that a cell checks."""
    return [c.args[0].value for c in check_calls(source)
            if c.args and isinstance(c.args[0], ast.Constant) and isinstance(c.args[0].value, str)]


def _signature(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The decorator and ``def`` lines of ``fn`` (its body dropped)."""
    bare = type(fn)(name=fn.name, args=fn.args, body=[ast.Pass()], decorator_list=fn.decorator_list,
                    returns=fn.returns, type_comment=None, **({"type_params": fn.type_params}
                                                              if hasattr(fn, "type_params") else {}))
    lines = ast.unparse(ast.fix_missing_locations(bare)).split("\n")
    return lines[:-1]                                   # drop the "    pass" line


def stub_source(source: str) -> str:
    """The student's stub for a solution cell: imports, signatures with a ``# your code here`` body,
    and the checker call without ``strict``.

    Raises ``ValueError`` when the cell does not call the checker, or checks a function that the cell
    does not define with ``def`` (a lambda or a name defined elsewhere would leave the solution in
    the stub or the stub undefined).
    """
    tree = ast.parse(source)
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    calls = [n for n in ast.walk(tree) if _is_check_call(n)]
    if not calls:
        raise ValueError("a solution cell must call gencore.exercises.check(name, fn)")
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(ast.get_source_segment(source, node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if out and out[-1] != "":
                out.append("")
            out += _signature(node) + list(STUB_BODY) + [""]
        elif isinstance(node, (ast.Expr, ast.Assign, ast.AnnAssign)) and _is_check_call(node.value):
            call = node.value
            if len(call.args) < 2 or not (isinstance(call.args[1], ast.Name) and call.args[1].id in defined):
                raise ValueError("the checked function must be defined with def in the same cell: "
                                 + ast.get_source_segment(source, call))
            segment = ast.get_source_segment(source, node)
            out.append(re.sub(r",\s*strict\s*=\s*[^,)]+", "", segment))
    return "\n".join(out).strip("\n")


# --------------------------------------------------------------------------- notebooks and the book
def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with solutions removed and solution cells turned into stubs."""
    nb = nbformat.reads(nbformat.writes(nb), as_version=4)          # a deep copy
    nb.cells = _drop_gated(nb.cells)
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = strip_solutions(cell.source)
            if not cell.source.strip():
                continue
        elif cell.cell_type == "code" and SOLUTION_TAG in cell.metadata.get("tags", []):
            cell.source = stub_source(cell.source)
            cell.outputs, cell.execution_count = [], None
            tags = [t for t in cell.metadata.get("tags", []) if t not in (SOLUTION_TAG, "hide-input", "hide-cell")]
            cell.metadata["tags"] = tags + [STUB_TAG]
            cell.metadata.pop("execution", None)
        cells.append(cell)
    nb.cells = cells
    return nb


def _toc_entries(toc: dict) -> list[dict]:
    return [ch for part in toc.get("parts", []) for ch in part.get("chapters", [])]


def student_toc(toc: dict, book_root: Path = ROOT) -> tuple[dict, list[str]]:
    """The table of contents without entries whose file does not exist; returns (toc, dropped files)."""
    def exists(f: str) -> bool:
        return any((book_root / f"{f}{ext}").exists() for ext in ("", ".md", ".ipynb"))
    dropped = []
    parts = []
    for part in toc.get("parts", []):
        chapters = []
        for ch in part.get("chapters", []):
            if exists(ch["file"]):
                chapters.append(ch)
            else:
                dropped.append(ch["file"])
        if chapters:
            parts.append({**part, "chapters": chapters})
    return {**toc, "parts": parts}, dropped


def write_edition(out: Path = DEFAULT_OUT, *, source: Path = ROOT, quiet: bool = False) -> Path:
    """Write the student edition of the book at ``source`` into ``out`` (replaced if it exists)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = yaml.safe_load((source / "_config.yml").read_text())
    config["title"] = str(config.get("title", "")) + TITLE_SUFFIX
    (out / "_config.yml").write_text("# Student edition, written by tools/student.py: do not edit.\n"
                                     + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    toc, dropped = student_toc(yaml.safe_load((source / "_toc.yml").read_text()), source)
    (out / "_toc.yml").write_text("# Student edition, written by tools/student.py: do not edit.\n"
                                  + yaml.safe_dump(toc, sort_keys=False, allow_unicode=True))
    shutil.copytree(source / "book", out / "book",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__", "_build"))
    for md in (out / "book").glob("*.md"):
        md.write_text(strip_solutions(md.read_text()))
    n_stubs = 0
    for path in sorted((source / "book").glob("*.ipynb")):
        nb = student_notebook(nbformat.read(path, as_version=4))
        n_stubs += sum(STUB_TAG in c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code")
        nbformat.write(nb, out / "book" / path.name)
    if not quiet:
        rel = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
        print(f"student edition written to {rel}: {n_stubs} exercise stubs")
        for f in dropped:
            print(f"  left out of its table of contents (no such file yet): {f}")
    return out


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    write_edition(Path(argv[0]).resolve() if argv else DEFAULT_OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
