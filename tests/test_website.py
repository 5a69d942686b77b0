"""The website, as a reader sees it: build it, open pages in headless Chromium.

Builds the book with ``-W -n --keep-going`` (a broken reference, citation or link fails), serves
it on the loopback interface, and opens every page of the table of contents. Checks that: math
is rendered by the locally served MathJax with no TeX error (an undefined macro or a typo shows
as an ``mjx-merror`` node), no raw ``\\(`` is left, each chapter's figures are present and load,
no request leaves the machine, and the page raises no JavaScript error.

Needs Debian's ``chromium`` (``.ci/run`` installs it). Without it the test is skipped, except in
CI (``CI=true``), where a missing browser is a failure.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _pages() -> dict[str, int]:
    """Every page of the table of contents -> the minimum number of figures it must show."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    return {f"{f}.html": (1 if (ROOT / f"{f}.ipynb").exists() else 0) for f in files}


PAGES = _pages()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs the Debian package)")
        pytest.skip("chromium is not installed")
    out = tmp_path_factory.mktemp("site")
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    html = out / "_build" / "html"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_build_is_warning_free_and_serves_mathjax_locally(site):
    html, _ = site
    assert (html / "_static" / "mathjax" / "tex-chtml-full.js").exists()
    page = (html / "book" / "intro.html").read_text()
    assert "cdn.jsdelivr" not in page and "mathjax/tex-chtml-full.js" in page


@pytest.mark.parametrize("page, min_figures", PAGES.items())
def test_page_renders_math_and_figures_without_errors(site, page, min_figures):
    from playwright.sync_api import sync_playwright

    _, base = site
    errors, external = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            tab = browser.new_page()

            def route(r):
                if r.request.url.startswith(base) or r.request.url.startswith("data:"):
                    return r.continue_()
                external.append(r.request.url)
                return r.abort()

            tab.route("**/*", route)
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.goto(f"{base}/{page}", wait_until="load")
            has_mathjax = tab.locator("script[src*='mathjax/tex-chtml-full.js']").count() > 0
            if has_mathjax:  # Sphinx loads MathJax only on pages with math
                tab.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                      timeout=30000)
                tab.evaluate("() => MathJax.startup.promise")
            n_math = tab.locator("mjx-container").count()
            n_tex_errors = tab.locator("mjx-merror").count()
            body = tab.locator("article").inner_text()
            n_figures = tab.locator("article img").count()
            broken = tab.evaluate("() => Array.from(document.querySelectorAll('article img'))"
                                  ".filter(i => !(i.complete && i.naturalWidth > 0)).length")
        finally:
            browser.close()
    if page != "book/bibliography.html":
        assert has_mathjax and n_math > 0, "no rendered math on the page"
    assert n_tex_errors == 0, f"{n_tex_errors} TeX errors rendered by MathJax"
    assert "\\(" not in body and "$$" not in body, "raw TeX left on the page"
    assert n_figures >= min_figures and broken == 0
    assert external == [], f"the page requested external resources: {external[:5]}"
    assert errors == [], f"JavaScript errors: {errors[:5]}"
