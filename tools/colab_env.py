"""A Colab-like environment for the chapters' install cell (issue #15).

    python tools/colab_env.py [--keep DIR] [NB ...]   # default chapters: CHAPTERS below

1. builds a fresh virtual environment pre-loaded with Colab's versions of what the book uses
   (:data:`COLAB_PINS`; needs the package index);
2. runs the chapters' Colab cell in it (``tools/nbtools.py``'s :func:`colab_cell_source`, with
   ``google.colab`` faked and the git URL replaced by a copy of this checkout), as on Colab;
3. checks that no pre-loaded distribution changed version (the install may only add);
4. executes chapters there at quick scale through nbclient, with a kernel running that venv's
   Python and the installed gencore (not this checkout's), and reports any error.

``tests/test_colab_env.py`` (marker ``colab``, deselected by default) runs the same steps.
Where this differs from Colab: the Python is the one running this script (3.11 here; Colab has
3.12) and torch is 2.13.0, the CPU build on this machine's disk (Colab has 2.9 with CUDA, which
PyPI serves only as a CUDA build of several GB). torchvision is not pre-loaded: PyPI's build
does not import beside the disk's CPU torch, and the quick scale does not use it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import nbtools  # noqa: E402

# What Colab has: the versions issue #15 names, plus the neighbours the chapters touch (scipy,
# tqdm, the kernel). The pyproject ranges must admit all of them (tests/test_colab_env.py).
COLAB_PYTHON = "3.12"
COLAB_VERSIONS = {
    "torch": "2.9.0",
    "numpy": "2.0.2",
    "scipy": "1.16.3",
    "pandas": "2.2.2",
    "scikit-learn": "1.6.1",
    "matplotlib": "3.10.0",
    "tqdm": "4.67.1",
    "ipywidgets": "7.7.1",
    "numba": "0.60.0",
    "ipykernel": "6.17.1",
    "ipython": "7.34.0",
}
# What the Colab-like venv pre-loads: the same, but torch 2.13.0, the CPU build on this machine's
# disk (see the module docstring), with the Python running this script.
COLAB_PINS = {**COLAB_VERSIONS, "torch": "2.13.0"}
# must keep their versions (issue #15); every other pre-loaded distribution is compared too
KEPT = ("torch", "numpy", "pandas", "scikit-learn", "matplotlib", "ipywidgets")
# a chapter with MNIST (03), one with widgets (09, cheap), one with both widgets and MNIST (04)
CHAPTERS = ("book/03_training_vaes.ipynb", "book/09_optimal_transport.ipynb",
            "book/04_discrete_latents.ipynb")
# what the package needs to build and install from a copy of the checkout
PACKAGE_FILES = ("pyproject.toml", "README.md", "gencore")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class IndexUnreachable(RuntimeError):
    """The package index (or the local wheels) could not be reached: the check cannot run here."""


def _run(cmd: list[str], *, timeout: float, env: dict | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def _tail(proc: subprocess.CompletedProcess, n: int = 15) -> str:
    return "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-n:])


def probe_index(python: str = sys.executable, timeout: float = 90) -> None:
    """Raise :class:`IndexUnreachable` unless pip can fetch a pinned wheel that is not on disk."""
    with tempfile.TemporaryDirectory() as d:
        try:
            proc = _run([python, "-m", "pip", "download", "-q", "--no-deps", "-d", d,
                         f"ipywidgets=={COLAB_PINS['ipywidgets']}"], timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise IndexUnreachable(f"pip download timed out after {timeout:.0f} s") from exc
        if proc.returncode != 0:
            raise IndexUnreachable(f"pip download ipywidgets=={COLAB_PINS['ipywidgets']} failed:\n{_tail(proc)}")


def base_python() -> str:
    """The interpreter to build the venv from: the base of the one running (not a venv's shim)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def create_venv(path: Path, pins: dict[str, str] = COLAB_PINS, *, timeout: float = 900) -> Path:
    """A fresh venv at ``path`` with ``pins`` installed; returns its Python."""
    proc = _run([base_python(), "-m", "venv", str(path)], timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m venv failed:\n{_tail(proc)}")
    python = path / "bin" / "python"
    proc = _run([str(python), "-m", "pip", "install", "-q", *(f"{k}=={v}" for k, v in pins.items())],
                timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"pre-loading the Colab versions failed:\n{_tail(proc)}")
    return python


def installed(python: Path) -> dict[str, str]:
    """Every distribution in that environment: normalised name -> version."""
    proc = _run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"], timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"pip list failed:\n{_tail(proc)}")
    return {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(proc.stdout)}


def changed(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple[str, str | None]]:
    """Distributions of ``before`` whose version differs (or that vanished) in ``after``."""
    return {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}


def copy_package(dest: Path, root: Path = ROOT) -> Path:
    """Copy what ``pip install`` needs of the checkout to ``dest`` (the build then writes there,
    not into the work tree); returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PACKAGE_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def local_requirement(package_dir: Path) -> str:
    """The Colab cell's requirement with the git URL replaced by a local directory."""
    return f"gencore[{nbtools.COLAB_EXTRAS}] @ {package_dir.resolve().as_uri()}"


def run_colab_cell(python: Path | str, requirement: str, cwd: Path, *,
                   timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the generated Colab cell in ``python`` as on Colab (``google.colab`` imported), in
    ``cwd``: not this checkout, whose ``gencore/`` folder would make the cell skip the install."""
    prelude = "import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
    return _run([str(python), "-c", prelude + nbtools.colab_cell_source(requirement)],
                timeout=timeout, cwd=cwd)


def kernel_env(python: Path) -> dict[str, str]:
    """The chapters' environment: as nbval runs them (quick, CPU, one thread), with nothing of
    this checkout on the path, so that ``import gencore`` finds the installed package."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHONHASHSEED="0", OMP_NUM_THREADS="1", GENCORE_SCALE="quick", CUDA_VISIBLE_DEVICES="",
               PYDEVD_DISABLE_FILE_VALIDATION="1",  # ipykernel 6.17's debugger notice
               PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def execute_chapter(python: Path, notebook: Path, workdir: Path, *, timeout: float = 900) -> dict:
    """Execute a copy of ``notebook`` in ``workdir`` on a kernel of ``python``.

    Returns ``{"chapter", "seconds", "error", "widgets", "gencore"}``: ``error`` is None or the
    first failing cell's error, ``widgets`` the number of widget outputs, ``gencore`` the file
    that ``import gencore`` loaded in the kernel (must lie inside the venv).
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    spec_dir = workdir / "kernels" / "colab-like"
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab-like", "language": "python", "env": kernel_env(python)}))
    ksm = KernelSpecManager(kernel_dirs=[str(workdir / "kernels")])
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import gencore\nprint('GENCORE_FILE', gencore.__file__)"))
    km = AsyncKernelManager(kernel_name="colab-like", kernel_spec_manager=ksm)
    client = NotebookClient(nb, km=km, timeout=timeout, kernel_name="colab-like", allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})
    t0, error = time.perf_counter(), None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = str(exc)[-3000:]
    seconds = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    widgets = sum(WIDGET_MIME in o.get("data", {}) for o in outputs)
    found = [o.get("text", "") for o in outputs if "GENCORE_FILE" in o.get("text", "")]
    gencore_file = found[0].split("GENCORE_FILE", 1)[1].strip() if found else None
    return {"chapter": notebook.stem, "seconds": round(seconds, 1), "error": error,
            "widgets": widgets, "gencore": gencore_file}


def check(workdir: Path, chapters: list[Path], *, log=print) -> dict:
    """Steps 1-4 of the module docstring in ``workdir``; returns what was measured.

    Raises :class:`IndexUnreachable` when the index cannot be reached; the caller decides whether
    a moved version or a failed chapter is an error (the result lists them).
    """
    times = {}
    t0 = time.perf_counter()
    probe_index()
    python = create_venv(workdir / "venv")
    times["venv_seconds"] = round(time.perf_counter() - t0, 1)
    log(f"Colab-like venv ({sys.version.split()[0]}) in {times['venv_seconds']} s")
    before = installed(python)
    requirement = local_requirement(copy_package(workdir / "checkout"))
    t0 = time.perf_counter()
    cell = run_colab_cell(python, requirement, cwd=workdir)
    times["install_seconds"] = round(time.perf_counter() - t0, 1)
    after = installed(python)
    added = sorted(set(after) - set(before))
    log(f"Colab cell: exit {cell.returncode} in {times['install_seconds']} s; added {', '.join(added)}")
    result = {"python": sys.version.split()[0], "pins": dict(COLAB_PINS), "before": before,
              "after": after, "added": added, "changed": changed(before, after),
              "cell_returncode": cell.returncode, "cell_output": (cell.stdout + cell.stderr)[-4000:],
              "chapters": [], **times, "venv_python": str(python)}
    if cell.returncode != 0:
        return result
    for nb in chapters:
        run = execute_chapter(python, nb, workdir / "run" / nb.stem)
        log(f"{run['chapter']}: {'ok' if run['error'] is None else 'ERROR'} in {run['seconds']} s, "
            f"{run['widgets']} widget output(s), gencore from {run['gencore']}")
        result["chapters"].append(run)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help=f"chapters to run (default: {' '.join(CHAPTERS)})")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    chapters = [Path(p).resolve() for p in (args.notebooks or [ROOT / c for c in CHAPTERS])]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="colab-like-") as tmp:
        workdir = args.keep or Path(tmp)
        try:
            result = check(workdir, chapters)
        except IndexUnreachable as exc:
            print(f"cannot build the Colab-like venv: package index unreachable ({exc})")
            return 2
    problems = [f"{k} {a} -> {b}" for k, (a, b) in result["changed"].items()]
    problems += [f"{c['chapter']}: {c['error']}" for c in result["chapters"] if c["error"]]
    if result["cell_returncode"] != 0:
        problems.append("Colab cell failed:\n" + result["cell_output"])
    print(f"total {time.perf_counter() - t0:.0f} s; " + ("OK" if not problems else "PROBLEMS:\n" + "\n".join(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
