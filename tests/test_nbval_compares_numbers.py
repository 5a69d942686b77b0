"""nbval compares the numbers a chapter prints, at 3 significant figures (issue: overwriting a
stored result with another number must fail the notebook run).

`tests/nbval_sanitize.cfg` keeps the sign, the exponent and the first three significant digits of
every printed decimal number and masks the rest (their last digits vary across CPUs). These
tests check the rules directly, and then run nbval itself on a small executed notebook whose
stored outputs were edited: an edit beyond the third significant figure passes, any edit within
it (a different value, a flipped sign) fails.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"


def _patterns() -> list[tuple[str, str]]:
    # parsed exactly as nbval parses it (a regex line directly followed by its replace line)
    return re.findall(r"^regex: (.*)$\n^replace: (.*)$", SANITIZE.read_text(), flags=re.MULTILINE)


def sanitize(text: str) -> str:
    for regex, replace in _patterns():
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize("printed, stored, same", [
    ("0.0063", "0.0063", True),
    ("0.0063", "9.9999", False),        # the reviewer's overwrite
    ("0.01", "-123.45", False),         # the other one
    ("0.0063", "-0.0063", False),       # a sign flip
    ("0.006312", "0.006318", True),     # beyond three significant figures
    ("0.006312", "0.006412", False),    # within them
    ("146.3245", "146.9", True),        # >= 100: decimals masked
    ("146.3245", "147.3245", False),
    ("25.5001", "25.4999", False),      # a real cross-CPU difference at a rounding boundary...
    ("25.5001", "25.5499", True),       # ...but the last digits alone never matter
    ("3.14159e-05", "3.14987e-05", True),
    ("3.14159e-05", "3.14159e-06", False),  # exponents are kept
    ("loss 1.2345 at step 100", "loss 1.2399 at step 100", True),
    ("loss 1.2345 at step 100", "loss 1.2345 at step 200", False),  # integers are compared
])
def test_sanitize_keeps_three_significant_figures_and_signs(printed, stored, same):
    assert (sanitize(printed) == sanitize(stored)) is same, (sanitize(printed), sanitize(stored))


def _executed_cell(source: str, printed: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed + "\n")]
    return cell


def test_nbval_fails_when_a_stored_number_is_edited(tmp_path):
    cells = {
        "unchanged": ("0.0063", "0.0063"),
        "beyond_three_figures": ("0.006312", "0.006318"),
        "overwritten": ("0.0063", "9.9999"),
        "sign_flipped": ("0.0063", "-0.0063"),
        "second_digit": ("146.3245", "156.3245"),
    }
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, (name, (printed, stored)) in enumerate(cells.items(), start=1):
        cell = _executed_cell(f"# {name}\nprint('{printed}')", stored)
        cell.execution_count = i
        nb.cells.append(cell)
    path = tmp_path / "edited.ipynb"
    nbformat.write(nb, path)
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q", "-rA", str(path),
         "--nbval", "--nbval-sanitize-with", str(SANITIZE), "--rootdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    out = proc.stdout + proc.stderr
    verdict = {}
    for n in range(len(cells)):
        m = re.search(rf"^(PASSED|FAILED) \S*::Cell {n}\b", out, flags=re.MULTILINE)
        assert m, f"no verdict for cell {n}:\n{out[-3000:]}"
        verdict[list(cells)[n]] = m.group(1)
    assert verdict == {"unchanged": "PASSED", "beyond_three_figures": "PASSED", "overwritten": "FAILED",
                       "sign_flipped": "FAILED", "second_digit": "FAILED"}, out[-3000:]
