"""The website, as a reader sees it: build it, open every page in headless Chromium.

Builds the book with ``-W -n --keep-going`` (a broken reference, citation or link fails), serves
it on the loopback interface and opens every page of the table of contents, once at 1280 px
(desktop) and once at 390 px (a phone). Each page is inspected once; each test below then checks
one property of every page and lists *all* its violations in one assertion message:

- the page loads: math rendered by the locally served MathJax with no TeX error (``mjx-merror``),
  figures present and loaded, no request leaving the machine, no JavaScript error;
- no raw TeX in the rendered text (``\\frac``, ``$$``, ``\\begin{``, ``\\(`` ... outside MathJax
  output and code), e.g. from a math line starting with ``+``/``-`` that became a list item;
- no broken table (a row with fewer cells than the header, or a Markdown table left as text);
- every display equation fits its column at 1280 px and at 390 px (the CSS lets a wider one
  scroll, but a reader must scroll: break it with ``aligned``);
- no cell output text cut off by the column (``check passed`` lines wrap);
- no output area that only shows a bare number or an object repr (``0.123``, ``tensor(...)``,
  ``<Axes: ...>``, ``(..., None)``): end such cells with ``;`` or assign;
- every image in a cell output sits in a figure with a caption (cell metadata
  ``mystnb.figure.caption``);
- the exercise/solution dropdowns open on click;
- on a phone, the menu button opens the navigation and the "on this page" button opens the
  secondary sidebar; on a desktop there is one search box and no empty header bar.

A screenshot of each page's first screen at 1280 px is saved to ``_build/screenshots/``.

Needs Chromium (Debian's ``chromium``; ``make test`` installs it when run as root, and says how
to install it otherwise). A missing browser is a failure, not a skip; set
``GENCORE_SKIP_WEBSITE=1`` to skip these tests deliberately. ``CHROMIUM=/path`` picks a browser;
``GENCORE_SITE_HTML=_build/html`` inspects an existing build instead of building one.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = ROOT / "_build" / "screenshots"
DESKTOP, PHONE = {"width": 1280, "height": 800}, {"width": 390, "height": 844}
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _pages() -> dict[str, int]:
    """Every page of the table of contents -> the minimum number of figures it must show."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    return {f"{f}.html": (1 if (ROOT / f"{f}.ipynb").exists() else 0) for f in files}


PAGES = _pages()


def _source(page: str) -> str:
    """The Markdown of a page: a .md file, or a notebook's markdown cells and Markdown outputs."""
    stem = ROOT / page.removesuffix(".html")
    if stem.with_suffix(".ipynb").exists():
        import nbformat

        nb = nbformat.read(stem.with_suffix(".ipynb"), as_version=4)
        parts = []
        for c in nb.cells:
            if c.cell_type == "markdown":
                parts.append(c.source)
            for out in c.get("outputs", []):
                md = out.get("data", {}).get("text/markdown")
                if md:
                    parts.append(md if isinstance(md, str) else "".join(md))
        return "\n\n".join(parts)
    return stem.with_suffix(".md").read_text()


def _cells(line: str) -> int:
    """Number of cells the GFM table parser sees in a row (every unescaped ``|`` splits)."""
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return len(re.split(r"(?<!\\)\|", line))


def _table_problems(page: str) -> list[str]:
    """Rows of the page's Markdown tables that do not have the header's number of cells.

    The renderer hides both faults: a short row is padded with empty cells, and the cells of a
    long row beyond the header's (a ``|`` inside math, say) are silently dropped."""
    from markdown_it import MarkdownIt

    text = _source(page)
    lines = text.splitlines()
    problems = []
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    for i, tok in enumerate(tokens):
        if tok.type != "table_open":
            continue
        head = None
        for j in range(i + 1, len(tokens)):
            t = tokens[j]
            if t.type == "table_close":
                break
            if t.type != "tr_open":
                continue
            row = lines[t.map[0]]
            k, n_cells, n_written = j + 1, 0, 0
            while tokens[k].type != "tr_close":
                n_cells += tokens[k].type in ("td_open", "th_open")
                n_written += tokens[k].type == "inline" and tokens[k - 1].type in ("td_open", "th_open")
                k += 1
            if head is None:
                head = n_cells
                continue
            n_raw = _cells(row)
            if n_raw != head or n_written < n_cells:
                problems.append(f"row with {n_raw} cells under a {head}-cell header "
                                f"(a `|` in math? use \\lvert/\\rvert): {row.strip()[:110]}")
    return problems

# Everything measured on a page in one pass (document order; `SKIP` = MathJax output and code).
INSPECT_JS = r"""() => {
  const article = document.querySelector('article') || document.body;
  const SKIP = 'mjx-container, pre, code, script, style, .highlight, .cell_input, .MathJax_Preview';
  const short = (s, n = 90) => { s = s.replace(/\s+/g, ' ').trim(); return s.length > n ? s.slice(0, n) + '…' : s; };
  const where = el => { const h = []; let e = el;
    while (e && e !== article) { if (e.id) { h.push('#' + e.id); break; } e = e.parentElement; }
    return h.join(''); };

  // 1. raw TeX in text nodes outside MathJax output and code.
  const tex = /\\(?:[A-Za-z]{2,}|[()\[\]{}])|\$\$|\$\\|\$[^\s$][^$\n]{0,60}?\$/g;
  const rawTex = [];
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest(SKIP)) continue;
    const text = n.textContent;
    for (const m of text.matchAll(tex)) {
      const a = Math.max(0, m.index - 40);
      rawTex.push(`${JSON.stringify(m[0])} in "${short(text.slice(a, m.index + m[0].length + 40))}"` +
                  (where(n.parentElement) ? ` (${where(n.parentElement)})` : ''));
      if (rawTex.length > 60) break;
    }
  }

  // 2. tables: a row with fewer cells than the header; a Markdown table left as a paragraph.
  const tables = [];
  const width = tr => Array.from(tr.children).reduce((s, c) => s + (c.colSpan || 1), 0);
  article.querySelectorAll('table').forEach((t, ti) => {
    const rows = Array.from(t.querySelectorAll('tr'));
    if (!rows.length) return;
    const head = width(rows[0]);
    rows.slice(1).forEach((tr, ri) => {
      const w = width(tr);
      if (w < head) {
        tables.push(`table ${ti + 1} row ${ri + 1}: ${w} of ${head} cells ("${short(tr.textContent, 60)}")`);
      }
    });
  });
  article.querySelectorAll('p').forEach(p => {
    if (p.closest(SKIP)) return;
    const t = p.textContent.trim();
    if (t.startsWith('|') && (t.match(/\|/g) || []).length >= 3)
      tables.push(`a Markdown table rendered as text: "${short(t, 80)}"`);
  });

  // 3. output areas that only show a bare number or an object repr.
  const bare = [];
  const BARE = [/^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/, /^(np\.)?(float|int|bool)\d*\(.*\)$/s,
                /^(tensor|array|Parameter)\(.*\)$/s, /^<[A-Za-z_][\w.]*[ :>].*>$/s,
                /^\(.*,\s*None\)$/s, /^\[<matplotlib.*>\]$/s, /^Text\(.*\)$/s, /^None$/,
                /^\(?<Figure size .*>\)?$/s];
  article.querySelectorAll('.cell_output .output').forEach(o => {
    const t = o.textContent.trim();
    if (t && BARE.some(r => r.test(t))) bare.push(`"${short(t, 60)}"` +
        (where(o) ? ` (${where(o)})` : ''));
  });

  // 4. images in cell outputs without a captioned figure.
  const uncaptioned = [];
  article.querySelectorAll('.cell_output img').forEach(img => {
    const fig = img.closest('figure');
    const cap = fig && fig.querySelector('figcaption');
    if (!cap || cap.textContent.trim() === '') {
      const cell = img.closest('.cell');
      const prev = cell ? cell.querySelector('.cell_input') : null;
      uncaptioned.push(`image after "${short(prev ? prev.textContent : '', 70)}"`);
    }
  });

  return {
    n_math: document.querySelectorAll('mjx-container').length,
    n_tex_errors: document.querySelectorAll('mjx-merror').length,
    tex_errors: Array.from(document.querySelectorAll('mjx-merror')).slice(0, 10)
                     .map(e => short(e.getAttribute('data-mjx-error') || e.textContent, 80)),
    n_figures: article.querySelectorAll('img').length,
    broken_images: Array.from(article.querySelectorAll('img'))
                        .filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    raw_tex: rawTex, tables: tables, bare: bare, uncaptioned: uncaptioned,
    cut_outputs: Array.from(article.querySelectorAll('.cell_output pre'))
                      .filter(p => p.scrollWidth > p.clientWidth + 1)
                      .map(p => `"${short(p.textContent, 70)}" (${p.scrollWidth} px > ${p.clientWidth} px)`),
    search_boxes: Array.from(document.querySelectorAll('.search-button-field, form.bd-search'))
                       .filter(e => e.offsetParent !== null && e.getBoundingClientRect().width > 0).length,
    header_height: Math.round(Array.from(document.querySelectorAll('header.bd-header, .bd-header'))
                       .reduce((h, e) => Math.max(h, e.getBoundingClientRect().height), 0)),
  };
}"""

# Display equations wider than the column they sit in; the TeX source identifies each one.
WIDE_EQUATIONS_JS = r"""() => {
  const items = (window.MathJax && MathJax.startup && MathJax.startup.document)
      ? Array.from(MathJax.startup.document.math) : [];
  const source = el => { const it = items.find(i => i.typesetRoot === el); return it ? it.math : ''; };
  const out = [];
  document.querySelectorAll('article mjx-container[display="true"]').forEach(el => {
    const math = el.querySelector('mjx-math');
    if (!math) return;
    const need = math.getBoundingClientRect().width;
    const have = Math.min(el.clientWidth, el.parentElement.clientWidth);
    if (need > have + 1) {
      const tex = source(el).replace(/\s+/g, ' ').trim();
      out.push(`${Math.round(need)} px > ${Math.round(have)} px: ` +
               (tex.length > 100 ? tex.slice(0, 100) + '…' : tex));
    }
  });
  return out;
}"""

# A sidebar counts as open when it is visible and lies on the screen.
ON_SCREEN_JS = """sel => { const e = document.querySelector(sel); if (!e) return false;
  const r = e.getBoundingClientRect(), cs = getComputedStyle(e);
  return cs.visibility !== 'hidden' && cs.display !== 'none' && r.width > 100 && r.height > 100 &&
         r.left >= -1 && r.right <= window.innerWidth + 1; }"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102 - no access log in the test output
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the book into a temporary folder, serve it; yields (html dir, base URL, build)."""
    if CHROMIUM is None:
        if os.environ.get("GENCORE_SKIP_WEBSITE"):
            pytest.skip("GENCORE_SKIP_WEBSITE is set")
        pytest.fail("Chromium is not installed: the website tests need it. Install it with "
                    "`sudo apt-get install chromium` (Debian/Ubuntu; `make test` does this when "
                    "run as root), or point CHROMIUM=/path/to/chromium at one. "
                    "Set GENCORE_SKIP_WEBSITE=1 to skip these tests deliberately.")
    if os.environ.get("GENCORE_SITE_HTML"):  # inspect an existing build (faster when iterating)
        html, proc = Path(os.environ["GENCORE_SITE_HTML"]), None
    else:
        out = tmp_path_factory.mktemp("site")
        jb = Path(sys.executable).with_name("jupyter-book")
        proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "-W", "-n",
                               "--keep-going"], capture_output=True, text=True, timeout=900)
        html = out / "_build" / "html"
    assert (html / "book" / "intro.html").exists(), \
        f"book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}" if proc else "no site"
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}", proc
    server.shutdown()


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield b
        b.close()


def _new_tab(browser, base, viewport, errors, external):
    ctx = browser.new_context(viewport=viewport)
    tab = ctx.new_page()

    def route(r):
        if r.request.url.startswith(base) or r.request.url.startswith("data:"):
            return r.continue_()
        external.append(r.request.url)
        return r.abort()

    tab.route("**/*", route)
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return ctx, tab


def _wait_for_mathjax(tab) -> bool:
    if tab.locator("script[src*='mathjax/tex-chtml-full.js']").count() == 0:
        return False  # Sphinx loads MathJax only on pages with math
    tab.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                          timeout=30000)
    tab.evaluate("() => MathJax.startup.promise")
    return True


DROPDOWNS = "article .dropdown.admonition, article details.dropdown, article .toggle.admonition"

# Click every folded dropdown but the first (that one gets a real mouse click) and report, for
# every dropdown, whether its content is now visible.
OPEN_DROPDOWNS_JS = r"""([sel, skipFirst]) => {
  const boxes = Array.from(document.querySelectorAll(sel));
  const label = b => ((b.id ? b.id + ' ' : '') + (b.firstElementChild ? b.firstElementChild.textContent : ''))
                      .replace(/\s+/g, ' ').trim().slice(0, 60);
  boxes.forEach((b, i) => { if (skipFirst && i === 0) return;
    const t = b.tagName === 'DETAILS' ? b.querySelector(':scope > summary')
                                      : b.querySelector(':scope > .admonition-title');
    if (t) t.click(); });
  return new Promise(ok => setTimeout(() => ok(boxes.map(b => {
    if (b.tagName === 'DETAILS') return b.open ? null : label(b);
    const body = Array.from(b.children).filter(c => !c.classList.contains('admonition-title'));
    const shown = body.some(c => c.offsetHeight > 0 && getComputedStyle(c).visibility !== 'hidden');
    return shown ? null : label(b); }).filter(x => x)), 300));
}"""


def _dropdowns(tab) -> tuple[int, list[str]]:
    """Open every folded dropdown (exercise solutions, togglebutton admonitions, ``<details>``):
    the first with a real mouse click, the others with a DOM click on the same title element.
    Returns the number of dropdowns and those whose content did not appear."""
    boxes = tab.locator(DROPDOWNS)
    n = boxes.count()
    if n == 0:
        return 0, []
    first = boxes.first
    if first.evaluate("e => e.tagName") == "DETAILS":
        first.locator(":scope > summary").click()
    else:
        first.locator(":scope > .admonition-title").click()
    closed = tab.evaluate(OPEN_DROPDOWNS_JS, [DROPDOWNS, True])
    return n, [f"dropdown {c!r} did not open on click" for c in closed]


def _sidebar_opens(tab, toggle: str, sidebar: str, required: bool, close: bool) -> str | None:
    """Click the visible ``toggle`` button; the ``sidebar`` must come on screen. With ``close``,
    close it again by clicking beside it (on the theme's overlay)."""
    buttons = [b for b in tab.locator(toggle).all() if b.is_visible()]
    if not buttons:
        return f"no visible {toggle} button at 390 px" if required else None
    if tab.evaluate(ON_SCREEN_JS, sidebar):
        return f"{sidebar} is already on screen at 390 px before {toggle} is clicked"
    buttons[0].click()
    try:
        tab.wait_for_function(ON_SCREEN_JS, arg=sidebar, timeout=3000)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError
        return f"clicking {toggle} at 390 px did not bring {sidebar} on screen"
    if not close:
        return None
    box = tab.locator(sidebar).bounding_box()
    x = PHONE["width"] - 10 if box["x"] < PHONE["width"] / 2 else 10
    tab.mouse.click(x, PHONE["height"] // 2)  # on the overlay beside the sidebar: closes it
    return None


@pytest.fixture(scope="module")
def inspected(site, browser):
    """page -> everything measured on it (each page is opened once, lazily)."""
    _, base, _ = site
    cache: dict[str, dict] = {}

    def get(page: str) -> dict:
        if page in cache:
            return cache[page]
        errors, external = [], []
        ctx, tab = _new_tab(browser, base, DESKTOP, errors, external)
        try:
            tab.goto(f"{base}/{page}", wait_until="load")
            r = {"has_mathjax": _wait_for_mathjax(tab)}
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            tab.screenshot(path=str(SCREENSHOTS / (Path(page).stem + ".png")))
            r.update(tab.evaluate(INSPECT_JS))
            r["wide_1280"] = tab.evaluate(WIDE_EQUATIONS_JS)
            r["n_dropdowns"], r["dropdowns"] = _dropdowns(tab)
            tab.set_viewport_size(PHONE)
            tab.wait_for_timeout(200)
            r["wide_390"] = tab.evaluate(WIDE_EQUATIONS_JS)
            tab.evaluate("() => window.scrollTo(0, 0)")
            r["mobile_nav"] = [m for m in (
                _sidebar_opens(tab, ".primary-toggle", ".bd-sidebar-primary", True, True),
                _sidebar_opens(tab, ".secondary-toggle", ".bd-sidebar-secondary", False, False),
            ) if m]
        finally:
            ctx.close()
        r["errors"], r["external"] = errors, external
        cache[page] = r
        return r

    return get


def _listing(title: str, items: list[str]) -> str:
    return f"{len(items)} {title}:\n  " + "\n  ".join(items)


def test_build_is_warning_free_and_serves_mathjax_locally(site):
    html, _, proc = site
    if proc is None:
        pytest.skip("GENCORE_SITE_HTML: the site was not built by this test")
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING" in line]
    assert proc.returncode == 0, _listing("build warnings/errors", warnings or [proc.stderr[-2000:]])
    assert (html / "_static" / "mathjax" / "tex-chtml-full.js").exists()
    assert (html / "_static" / "website.css").exists()
    page = (html / "book" / "intro.html").read_text()
    assert "cdn.jsdelivr" not in page and "mathjax/tex-chtml-full.js" in page


@pytest.mark.parametrize("page, min_figures", PAGES.items())
def test_page_renders_math_and_figures_without_errors(inspected, page, min_figures):
    r = inspected(page)
    if "$" in _source(page) or "{math}" in _source(page):
        assert r["has_mathjax"] and r["n_math"] > 0, "no rendered math on the page"
    assert r["n_tex_errors"] == 0, _listing("TeX errors rendered by MathJax", r["tex_errors"])
    assert r["n_figures"] >= min_figures, f"{r['n_figures']} figures, expected >= {min_figures}"
    assert r["broken_images"] == [], _listing("images that did not load", r["broken_images"])
    assert r["external"] == [], _listing("requests for external resources", r["external"][:10])
    assert r["errors"] == [], _listing("JavaScript errors", r["errors"][:10])
    assert (SCREENSHOTS / (Path(page).stem + ".png")).stat().st_size > 1000


@pytest.mark.parametrize("page", PAGES)
def test_no_raw_tex_in_rendered_text(inspected, page):
    assert inspected(page)["raw_tex"] == [], _listing("places with raw TeX", inspected(page)["raw_tex"])


@pytest.mark.parametrize("page", PAGES)
def test_tables_have_every_cell(inspected, page):
    broken = _table_problems(page) + inspected(page)["tables"]
    assert broken == [], _listing("broken table rows", broken)


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("page", PAGES)
def test_display_equations_fit_the_column(inspected, page, width):
    wide = inspected(page)[f"wide_{width}"]
    assert wide == [], _listing(f"display equations wider than the column at {width} px "
                                "(break them with aligned/split)", wide)


@pytest.mark.parametrize("page", PAGES)
def test_no_bare_value_outputs(inspected, page):
    bare = inspected(page)["bare"]
    assert bare == [], _listing("outputs showing only a bare value or repr "
                                "(end the cell with `;` or assign)", bare)


@pytest.mark.parametrize("page", PAGES)
def test_output_text_is_not_cut_off(inspected, page):
    cut = inspected(page)["cut_outputs"]
    assert cut == [], _listing("output blocks wider than the column at 1280 px (website.css "
                               "wraps them: is it loaded?)", cut)


@pytest.mark.parametrize("page", PAGES)
def test_figures_have_captions(inspected, page):
    missing = inspected(page)["uncaptioned"]
    assert missing == [], _listing("figures without a caption (set cell metadata "
                                   "mystnb.figure.caption)", missing)


@pytest.mark.parametrize("page", PAGES)
def test_exercise_dropdowns_open(inspected, page):
    r = inspected(page)
    if page.split("/")[-1][:2].isdigit():
        assert r["n_dropdowns"] > 0, "a chapter without a single folded solution dropdown"
    assert r["dropdowns"] == [], _listing("dropdowns that do not open", r["dropdowns"])


@pytest.mark.parametrize("page", PAGES)
def test_mobile_navigation_opens(inspected, page):
    assert inspected(page)["mobile_nav"] == [], _listing("mobile navigation failures",
                                                         inspected(page)["mobile_nav"])


@pytest.mark.parametrize("page", PAGES)
def test_desktop_header_has_one_search_box(inspected, page):
    """sphinx-book-theme 1.3 with pydata-sphinx-theme 0.17 added an empty 64 px header bar with a
    second search box above the page at 1280 px."""
    r = inspected(page)
    assert r["search_boxes"] <= 1, f"{r['search_boxes']} search boxes visible at 1280 px"
    assert r["header_height"] < 40, f"a {r['header_height']} px header bar at 1280 px"
