"""The chapters' Colab install cell and the dependency ranges it installs (issue #15).

Offline and fast (the default run):
- the cell does nothing and prints nothing off Colab;
- on Colab, a failed pip (a fake command, and the real pip on a missing path) raises ONE error
  that says what happened and what to do, with pip's last lines; "Run all" stops at that cell;
- a successful pip prints nothing; an importable gencore is not installed again;
- pyproject's ranges admit Colab's versions (and exclude the mlxtend releases that would replace
  Colab's numpy/pandas/scikit-learn), and the lock file lies inside them.

Marked ``colab`` (deselected by default; ``pytest -m colab tests/test_colab_env.py``, minutes, needs
the package index to build the venv): a fresh Colab-like venv, the cell's pip command against this
checkout, no pre-loaded version moved, three chapters (MNIST, widgets) executed without an error.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import colab_env  # noqa: E402
import nbtools  # noqa: E402

# As on Colab before the cell runs: google.colab imported, gencore not importable (the project's
# venv has it installed in editable mode; ``sys.modules[name] = None`` hides it from find_spec).
ON_COLAB = ("import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"
            "sys.modules['gencore'] = None\n")


def fake_pip(tmp_path: Path, *, status: int, lines: int = 30) -> tuple[Path, Path]:
    """A stand-in for ``python -m pip``: prints ``lines`` numbered lines, records its argv and
    GIT_TERMINAL_PROMPT, and exits with ``status``."""
    record = tmp_path / "called.json"
    script = tmp_path / "fake-python"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'git_prompt': os.environ.get('GIT_TERMINAL_PROMPT')}}, "
        f"open({str(record)!r}, 'w'))\n"
        f"for i in range({lines}):\n"
        "    print(f'pip line {i}', file=sys.stderr if i % 2 else sys.stdout)\n"
        f"sys.exit({status})\n")
    script.chmod(0o755)
    return script, record


def run_cell(tmp_path: Path, *, prelude: str = ON_COLAB, python: Path | None = None,
             requirement: str | None = None) -> subprocess.CompletedProcess:
    """Run the generated cell in a fresh interpreter, ``sys.executable`` replaced by ``python``."""
    swap = f"sys.executable = {str(python)!r}\n" if python else ""
    code = prelude + "import sys\n" + swap + nbtools.colab_cell_source(requirement)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)


def test_cell_does_nothing_and_prints_nothing_off_colab(monkeypatch, capsys):
    assert "google.colab" not in sys.modules
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command off Colab"))
    namespace: dict = {}
    exec(nbtools.colab_cell_source(), namespace)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert sorted(k for k in namespace if not k.startswith("__")) == ["sys"]


def test_cell_installs_the_configured_repository_with_extras():
    src = nbtools.colab_cell_source()
    requirement = f"gencore[book] @ git+{nbtools.repository_url()}"
    assert nbtools.colab_requirement() == requirement
    assert json.dumps(requirement) in src
    assert nbtools.colab_cell_source("gencore[book] @ file:///x") != src  # the test hook changes only that
    assert nbtools.colab_cell_source("gencore[book] @ file:///x").replace(
        json.dumps("gencore[book] @ file:///x"), json.dumps(requirement)) == src


def test_failed_pip_raises_one_error_that_says_what_to_do(tmp_path):
    python, record = fake_pip(tmp_path, status=1, lines=30)
    proc = run_cell(tmp_path, python=python)
    assert proc.returncode == 1 and proc.stdout == ""
    called = json.loads(record.read_text())
    assert called["argv"] == ["-m", "pip", "install", "-q", nbtools.colab_requirement()]
    assert called["git_prompt"] == "0"  # a missing repository must not wait for a password
    err = proc.stderr
    assert err.count("Traceback") == 1 and err.count("Error:") == 1, err
    message = err.split("RuntimeError: ", 1)[1]
    assert message.startswith("Installing gencore failed, so the cells below cannot run.")
    assert f"pip install {nbtools.colab_requirement()!r} (exit status 1)" in message
    assert "set repository.url in the book's\n  _config.yml" in message
    assert "python tools/nbtools.py sync-colab" in message
    assert "!pip install -q '/content/FOLDER[book]'" in message
    tail = message.split("The last lines pip printed:\n", 1)[1].strip().splitlines()
    assert len(tail) == 10 and "pip line 29" in tail and "pip line 19" not in tail


def test_real_pip_failure_is_reported_with_pips_own_words(tmp_path):
    missing = tmp_path / "no-such-checkout"
    proc = run_cell(tmp_path, requirement=colab_env.local_requirement(missing))
    assert proc.returncode == 1
    assert proc.stderr.count("Traceback") == 1
    assert "Installing gencore failed" in proc.stderr
    assert str(missing) in proc.stderr.split("The last lines pip printed:", 1)[1]  # pip's own message


def test_successful_pip_prints_nothing(tmp_path):
    python, record = fake_pip(tmp_path, status=0, lines=5)
    proc = run_cell(tmp_path, python=python)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert json.loads(record.read_text())["argv"][-1] == nbtools.colab_requirement()


def test_importable_gencore_is_not_installed_again(tmp_path):
    python, record = fake_pip(tmp_path, status=1)
    # google.colab faked, gencore importable (the project's venv): no pip at all, hence no error
    prelude = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"
    proc = run_cell(tmp_path, prelude=prelude, python=python)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert not record.exists()


def test_run_all_stops_at_a_failed_install(tmp_path):
    """In a real kernel: the error is the cell's only output and no later cell runs."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    python, _ = fake_pip(tmp_path, status=1)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(ON_COLAB + f"sys.executable = {str(python)!r}"),
        nbformat.v4.new_code_cell(nbtools.colab_cell_source()),
        nbformat.v4.new_code_cell("import gencore\nprint('after')"),
    ])
    with pytest.raises(CellExecutionError):
        NotebookClient(nb, timeout=120, kernel_name=nbtools.KERNEL,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert [(e.ename, e.evalue.splitlines()[0]) for e in errors] == [
        ("RuntimeError", "Installing gencore failed, so the cells below cannot run.")]
    assert nb.cells[1].outputs == errors
    assert nb.cells[2].execution_count is None and nb.cells[2].outputs == []


# --- dependency ranges ---------------------------------------------------------------------------

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(*extras: str) -> dict[str, Requirement]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        reqs += PYPROJECT["project"]["optional-dependencies"][extra]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def test_ranges_admit_every_version_colab_has():
    reqs = _requirements("book", "full")
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(colab_env.COLAB_PYTHON)
    for name, version in colab_env.COLAB_VERSIONS.items():
        if name in reqs:
            assert reqs[name].specifier.contains(version), f"{reqs[name]} rejects Colab's {name} {version}"
    assert {"torch", "numpy", "scikit-learn", "matplotlib", "ipywidgets"} <= set(reqs) & set(colab_env.COLAB_VERSIONS)


def test_mlxtend_range_excludes_the_releases_that_replace_colabs_stack():
    # mlxtend 0.24.0 and 0.25.0 require numpy>=2.3.5, pandas>=2.3.3, scikit-learn>=1.8 (their
    # metadata); 0.23.4 requires numpy>=1.16.2, pandas>=0.24.2, scikit-learn>=1.3.1
    spec = _requirements()["mlxtend"].specifier
    assert spec.contains("0.23.4") and spec.contains("0.22.0")
    assert not spec.contains("0.24.0") and not spec.contains("0.25.0")


def test_lock_lies_inside_the_ranges():
    reqs = _requirements(*PYPROJECT["project"]["optional-dependencies"])
    lock = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            lock[name.strip().lower().replace("_", "-")] = version.strip()
    checked = [n for n in reqs if n.replace("_", "-") in lock]
    assert len(checked) >= 15, checked
    bad = {n: (str(reqs[n].specifier), lock[n.replace("_", "-")]) for n in checked
           if not reqs[n].specifier.contains(lock[n.replace("_", "-")], prereleases=True)}
    assert bad == {}, f"requirements-lock.txt pins outside pyproject.toml's ranges: {bad}"


# --- the real thing: a Colab-like venv -----------------------------------------------------------

@pytest.mark.colab
def test_colab_like_venv_keeps_its_versions_and_runs_chapters(tmp_path):
    t0 = time.perf_counter()
    chapters = [ROOT / c for c in colab_env.CHAPTERS]
    try:
        result = colab_env.check(tmp_path, chapters)
    except colab_env.IndexUnreachable as exc:
        pytest.skip(f"cannot build the Colab-like venv, the package index is unreachable: {exc}")
    print(f"Colab-like check: {time.perf_counter() - t0:.0f} s wall "
          f"(venv {result['venv_seconds']} s, install {result['install_seconds']} s, chapters "
          + ", ".join(f"{c['chapter']} {c['seconds']} s" for c in result["chapters"]) + ")")
    assert result["cell_returncode"] == 0, result["cell_output"]
    for name in colab_env.KEPT:  # torch's disk build is "2.13.0+cpu", which "==2.13.0" admits
        assert result["after"][name] == result["before"][name]
        assert SpecifierSet(f"=={colab_env.COLAB_PINS[name]}").contains(result["after"][name])
    assert result["changed"] == {}, f"the install changed what Colab had: {result['changed']}"
    assert {"gencore", "mlxtend", "pot"} <= set(result["added"])
    assert Version(result["after"]["mlxtend"]) < Version("0.24")
    venv = Path(result["venv_python"]).parent.parent
    assert [c["chapter"] for c in result["chapters"]] == [p.stem for p in chapters]
    for run in result["chapters"]:
        assert run["error"] is None, f"{run['chapter']} failed in the Colab-like venv:\n{run['error']}"
        assert run["gencore"] and Path(run["gencore"]).is_relative_to(venv), run["gencore"]
    widgets = {c["chapter"]: c["widgets"] for c in result["chapters"]}
    assert widgets["09_optimal_transport"] >= 1 and widgets["04_discrete_latents"] >= 1, widgets


def test_a_moved_or_removed_version_is_reported():
    before = {"numpy": "2.0.2", "pandas": "2.2.2", "numba": "0.60.0"}
    after = {"numpy": "2.5.5", "pandas": "2.2.2", "mlxtend": "0.25.0"}  # what mlxtend 0.25 did
    assert colab_env.changed(before, after) == {"numpy": ("2.0.2", "2.5.5"), "numba": ("0.60.0", None)}
    assert colab_env.changed(before, {**before, "gencore": "0.1.0"}) == {}  # adding is fine
