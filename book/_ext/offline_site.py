"""Make the website work offline and load cleanly.

1. Serve MathJax 3 from the built site instead of a CDN.

The MathJax files come from the PyPI package ``django-static-mathjax`` (installed with the
book's requirements). At the end of an HTML build the parts that ``tex-chtml-full.js``
loads (fonts, menu, accessibility) are copied to ``_build/html/_static/mathjax``; the
``mathjax_path`` in ``_config.yml`` points there. The site then renders math offline.

2. Drop duplicate ``<script>`` tags. sphinx-thebe 0.3 adds its inline configuration
(``const THEBE_JS_URL = ...``) once per read phase, and a second ``const`` declaration is a
JavaScript error on every page.

3. Add ``static/website.css``: cell output text wraps at the column width, and a display
equation wider than the column scrolls sideways instead of being cut off, and a click anywhere
on a solution dropdown's title (its link to the exercise included) opens the solution.
"""
from __future__ import annotations

import shutil
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
PARTS = ("tex-chtml-full.js", "output", "ui", "a11y", "input", "adaptors")


def _mathjax_es5() -> Path:
    import mathjax  # the module of django-static-mathjax

    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def _copy(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    src, dst = _mathjax_es5(), Path(app.outdir) / "_static" / "mathjax"
    for part in PARTS:
        s, d = src / part, dst / part
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        else:
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)


def _check(app) -> None:
    if not (_mathjax_es5() / "tex-chtml-full.js").exists():
        raise RuntimeError("MathJax files not found: install the book requirements (django-static-mathjax)")


def _dedupe_inline_scripts(app, exception) -> None:
    """Remove a repeated, identical inline ``<script>...</script>`` line from each page."""
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
        seen, kept = set(), []
        for line in lines:
            text = line.strip()
            if text.startswith("<script>") and text.endswith("</script>"):
                if text in seen:
                    continue
                seen.add(text)
            kept.append(line)
        if len(kept) != len(lines):
            page.write_text("".join(kept), encoding="utf-8")


def _add_static(app, config) -> None:
    config.html_static_path = [*config.html_static_path, str(STATIC)]


def setup(app):
    app.connect("config-inited", _add_static)
    app.add_css_file("website.css")
    app.connect("builder-inited", _check)
    app.connect("build-finished", _copy)
    app.connect("build-finished", _dedupe_inline_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
