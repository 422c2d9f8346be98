"""The built website in a real browser, with the network cut.

Headless Chromium (Debian's ``chromium``; never a downloaded browser) opens every page of the
table of contents from a local HTTP server on 127.0.0.1; every request to any other host is
aborted and fails the test. On each page: no console error, no failed request, no LaTeX left
unrendered (MathJax, served by the site itself, typeset every formula), every image loaded
with alt text, no ipywidgets output (a dead control), and every interactive figure changes
when each of its controls moves. A full-page screenshot of each page goes to
``_build/screenshots/`` for review, and a few pages are also checked at a phone's width.

The site is built first (``jupyter-book build . -W -n --keep-going``). Without a built site
or without chromium these tests skip, so a reader who only runs the tests is not blocked;
CI sets ``D2L_REQUIRE_SITE=1``, which turns those skips into failures. To test a partial
build (``jupyter-book build . --toc T --path-output P``), set ``D2L_SITE_DIR=P/_build/html``
and ``D2L_SITE_TOC=T``.
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
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("D2L_SITE_DIR", ROOT / "_build" / "html"))
SCREENSHOTS = SITE.parent / "screenshots"
CHROMIUM = os.environ.get("D2L_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
REQUIRED = os.environ.get("D2L_REQUIRE_SITE", "") not in ("", "0")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 60_000  # generous: CI runs this beside the notebooks on two cores


def toc_pages() -> list[str]:
    """Every page of ``_toc.yml``, as its path in the source tree without a suffix."""
    toc_file = Path(os.environ.get("D2L_SITE_TOC", ROOT / "_toc.yml"))  # --toc of a partial build
    toc = yaml.safe_load(toc_file.read_text(encoding="utf-8"))
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return pages


# Sphinx's own pages come with every build.
PAGES = toc_pages() + ["search", "genindex"]
# At a phone's width: the front page, the first chapter with an interactive figure (if any),
# and the glossary, whose table is the widest thing in the book.
PHONE_PAGES = [PAGES[0]] + [p for p in PAGES if (ROOT / f"{p}.ipynb").is_file()
                            and "interactive(" in (ROOT / f"{p}.ipynb").read_text()][:1] + [
    "chapters/99_back/glossary"]


def unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (D2L_REQUIRE_SITE is set, as in CI)")
    pytest.skip(reason)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def server():
    if not (SITE / "index.html").is_file():
        unavailable(f"no built website at {SITE}: run `jupyter-book build . -W -n --keep-going`")
    handler = functools.partial(QuietHandler, directory=str(SITE))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # a free port
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        unavailable(f"no chromium at {CHROMIUM}: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: pip install -r requirements.txt")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS,
                                              headless=True)
        yield chromium
        chromium.close()


class Visit:
    """One page opened in a fresh browser context with the network cut; records problems."""

    def __init__(self, browser, server: str, page: str, viewport: dict):
        if not (SITE / f"{page}.html").is_file():
            unavailable(f"{page} is in _toc.yml but was not built (see the build's log)")
        self.problems: list[str] = []
        self.offsite: list[str] = []
        self.context = browser.new_context(viewport=viewport, service_workers="block")
        self.context.route("**/*", functools.partial(self._route, urlsplit(server).netloc))
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)
        self.page.goto(f"{server}/{page}.html", wait_until="load")
        # MathJax typesets after the page has loaded: wait for it, where the page loads it.
        self.page.evaluate("""async () => {
            if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
                await MathJax.startup.promise;
            }
            await document.fonts.ready;
            await Promise.all([...document.images].map(img => img.complete ? null :
                new Promise(done => { img.onload = img.onerror = done; })));
        }""")

    def _route(self, own_host: str, route):
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https") and url.netloc != own_host:
            self.offsite.append(route.request.url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    def _console(self, message):
        if message.type == "error":
            self.problems.append(f"console error: {message.text}")

    def _failed(self, request):
        if request.url not in self.offsite:
            self.problems.append(f"failed request: {request.url} ({request.failure})")

    def _response(self, response):
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def close(self):
        self.context.close()


def screenshot(visit: Visit, page: str, suffix: str = "") -> Path:
    path = SCREENSHOTS / (page.replace("/", "__") + suffix + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    visit.page.screenshot(path=str(path), full_page=True)
    return path


# Text outside code blocks and typeset maths, where unrendered LaTeX would show.
READ_TEXT = """() => {
    const body = document.querySelector("main") || document.body;
    const copy = body.cloneNode(true);
    copy.querySelectorAll("pre, code, script, style, textarea, mjx-container, .highlight")
        .forEach(node => node.remove());
    return copy.textContent;
}"""
RAW_LATEX = re.compile(r"\\\(|\\\[|\\begin\{|\$\$|(?<![\w$])\$[^\s$](?:[^$\n]{0,200}?[^\s$\\])?\$")

CHECK_MATH_AND_IMAGES = """() => ({
    math: document.querySelectorAll("span.math, div.math").length,
    typeset: [...document.querySelectorAll("span.math, div.math")]
        .filter(node => node.querySelector("mjx-container")).length,
    broken: [...document.images].filter(img => !img.complete || img.naturalWidth === 0)
        .map(img => img.currentSrc.slice(0, 100) || img.outerHTML.slice(0, 100)),
    no_alt: [...document.querySelectorAll("main img")]
        .filter(img => !(img.getAttribute("alt") || "").trim()
                       || /\\.(png|jpe?g|svg|gif)$/.test(img.getAttribute("alt")))
        .map(img => (img.getAttribute("src") || "").slice(0, 100)),
    widgets: document.querySelectorAll(
        'script[type^="application/vnd.jupyter.widget"], .jupyter-widgets, .widget-area').length,
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    code_overflow: [...document.querySelectorAll("main div.cell_input pre, main div.highlight pre")]
        .filter(pre => !pre.closest(".cell_output") && pre.scrollWidth > pre.clientWidth + 1)
        .map(pre => pre.textContent.split("\\n")
            .reduce((a, b) => (b.length > a.length ? b : a), "").slice(0, 70)),
})"""


@pytest.mark.parametrize("page", PAGES)
def test_page_works_offline(browser, server, page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    visit = Visit(browser, server, page, DESKTOP)
    try:
        state = visit.page.evaluate(CHECK_MATH_AND_IMAGES)
        text = visit.page.evaluate(READ_TEXT)
        interactive_problems = move_every_control(visit, page)
        screenshot(visit, page)
    finally:
        visit.close()
    problems = list(visit.problems)
    problems += [f"request to the network (cut): {url}" for url in visit.offsite]
    if state["typeset"] < state["math"]:
        problems.append(f"{state['math'] - state['typeset']} of {state['math']} formulas "
                        "were not typeset by MathJax")
    problems += [f"unrendered LaTeX: {m.group(0)!r}" for m in RAW_LATEX.finditer(text)][:5]
    problems += [f"image did not load: {src}" for src in state["broken"]]
    problems += [f"image without alt text: {src}" for src in state["no_alt"]]
    if state["widgets"]:
        problems.append(f"{state['widgets']} ipywidgets outputs: dead controls on a static page")
    problems += [f"code scrolls sideways at {DESKTOP['width']} px (longest line: {line!r}...)"
                 for line in state["code_overflow"]]
    problems += interactive_problems
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


def move_every_control(visit: Visit, page: str) -> list[str]:
    """Move each control of each interactive figure as a reader would (arrow keys on a
    slider, a choice in a drop-down); the figure's image must change and load. Screenshots
    of each figure before and after go beside the page's."""
    problems = []
    figures = visit.page.locator(".d2l-interactive")
    for f in range(figures.count()):
        figure = figures.nth(f)
        image = figure.locator("img").first
        controls = figure.locator("[data-name]")
        shot = SCREENSHOTS / f"{page.replace('/', '__')}-interactive-{f + 1}"
        figure.scroll_into_view_if_needed()
        figure.screenshot(path=f"{shot}-before.png")
        if controls.count() == 0:
            problems.append(f"interactive figure {f + 1} has no controls")
        for c in range(controls.count()):
            control = controls.nth(c)
            name = control.get_attribute("data-name")
            before = image.get_attribute("src")
            if control.evaluate("node => node.tagName") == "SELECT":
                options = control.locator("option")
                current = control.input_value()
                values = [options.nth(i).get_attribute("value") for i in range(options.count())]
                control.select_option(next((v for v in values if v != current), current))
            else:
                at_end = control.evaluate("node => Number(node.value) >= Number(node.max)")
                control.focus()
                control.press("ArrowLeft" if at_end else "ArrowRight")
            after = image.get_attribute("src")
            loaded = image.evaluate("img => img.complete && img.naturalWidth > 0")
            if after == before:
                problems.append(f"interactive figure {f + 1}: moving {name!r} did not change it")
            elif not loaded:
                problems.append(f"interactive figure {f + 1}: the frame for {name!r} is broken")
        figure.screenshot(path=f"{shot}-after.png")
    return problems


def test_search_finds_a_chapter_offline(browser, server):
    visit = Visit(browser, server, "search", DESKTOP)
    try:
        visit.page.goto(f"{server}/search.html?q=gradient", wait_until="load")
        visit.page.wait_for_selector("#search-results li")  # the index is the site's own
        found = visit.page.locator("#search-results li").count()
    finally:
        visit.close()
    assert found > 0 and not visit.problems and not visit.offsite, visit.problems


@pytest.mark.parametrize("page", [p for p in PHONE_PAGES if p in PAGES])
def test_page_fits_a_phone(browser, server, page):
    visit = Visit(browser, server, page, PHONE)
    try:
        state = visit.page.evaluate(CHECK_MATH_AND_IMAGES)
        too_wide = visit.page.evaluate("""() => [...document.querySelectorAll(
                "main img, .d2l-interactive")].filter(n => n.getBoundingClientRect().right
                > window.innerWidth + 1).map(n => (n.getAttribute("src") || n.className)
                .slice(0, 80))""")
        screenshot(visit, page, "-phone")
        figures = visit.page.locator(".d2l-interactive")
        if figures.count():
            figures.first.scroll_into_view_if_needed()
            figures.first.screenshot(path=str(SCREENSHOTS / (page.replace("/", "__")
                                                              + "-phone-interactive-1.png")))
    finally:
        visit.close()
    assert state["overflow"] <= 1, \
        f"{page} is {state['overflow']} px wider than a {PHONE['width']} px screen"
    assert not too_wide, f"wider than a phone's screen: {too_wide}"
    assert not visit.problems and not visit.offsite, visit.problems + visit.offsite


def test_pages_load_nothing_from_other_hosts():
    """Static check of the HTML: no script, style sheet or font comes from another host."""
    if not (SITE / "index.html").is_file():
        unavailable(f"no built website at {SITE}")
    pattern = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"((?:https?:)?//"
                         r"[^\"]+)\"[^>]*>", re.I)
    offenders = []
    for path in sorted(SITE.rglob("*.html")):
        for match in pattern.finditer(path.read_text(encoding="utf-8", errors="replace")):
            tag = match.group(0)
            if tag.lower().startswith("<link") and not re.search(
                    r"rel=\"(stylesheet|preload|icon|modulepreload)\"", tag):
                continue  # a plain link (rel="canonical" etc.) loads nothing
            offenders.append(f"{path.relative_to(SITE)}: {match.group(1)}")
    assert not offenders, "pages load assets from the network:\n" + "\n".join(offenders[:20])


def test_chapter_figures_reach_their_pages():
    """Every chapter that plots shows its figures on its page. (A kernel that inherits a
    non-inline backend, such as MPLBACKEND=Agg, runs happily and drops every figure.)"""
    if not (SITE / "index.html").is_file():
        unavailable(f"no built website at {SITE}")
    plots = re.compile(r"plt\.|plot_lines\(|plot_history\(|show_images\(|\.imshow\(")
    missing = []
    for page in PAGES:
        notebook = ROOT / f"{page}.ipynb"
        if not notebook.is_file() or not plots.search(notebook.read_text(encoding="utf-8")):
            continue
        html = (SITE / f"{page}.html").read_text(encoding="utf-8", errors="replace")
        if not re.search(r'<img[^>]*src="[^"]*_images/', html):
            missing.append(page)
    assert not missing, f"pages whose figures are missing: {missing}"


# --- The build side, without a browser: what d2l_utils._book.sphinx_ext does for the site ---------

def test_a_built_page_serves_mathjax_itself(tmp_path):
    """A Sphinx build with the book's extension points MathJax at the site's own copy and
    copies it there; no CDN address and no widget or thebe script appears."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "conf.py").write_text("extensions = ['d2l_utils._book.sphinx_ext']\n")
    (source / "index.rst").write_text("Maths\n=====\n\nInline :math:`x^2`.\n\n"
                                      ".. math:: e^{i\\pi}\n")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-n", "-q", "-b", "html",
                             str(source), str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert 'src="_static/mathjax/tex-mml-chtml.js' in page
    assert "cdn." not in page and "unpkg" not in page and "require.js" not in page
    static = tmp_path / "out" / "_static"
    assert (static / "mathjax" / "tex-mml-chtml.js").is_file()
    assert (static / "mathjax" / "input" / "tex" / "extensions" / "boldsymbol.js").is_file()
    assert list((static / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert (static / "d2l.css").is_file() and "d2l.css" in page


@pytest.mark.parametrize(("line", "safe"), [
    ("a weight of shape (out, in, *kernel).", "a weight of shape (out, in, \\*kernel)."),
    ("e = exp(-|x|).", "e = exp(-\\|x\\|)."),
    ("the batch's *mean* loss", "the batch's *mean* loss"),
    ("    **controls: name -> values", "    **controls: name -> values"),
    ("``R = max_i ||x_i||`` and ``(N, H*W)``", "``R = max_i ||x_i||`` and ``(N, H*W)``"),
])
def test_plain_text_docstrings_are_escaped_for_the_api_page(line, safe):
    from d2l_utils._book.sphinx_api import plain_text_safe

    assert plain_text_safe(line) == safe


def test_api_page_lists_the_core_then_the_chapters_modules():
    from d2l_utils._book.export import is_generated
    from d2l_utils._book.sphinx_api import API_CORE_MODULES, api_modules

    modules = api_modules()
    assert modules[:len(API_CORE_MODULES)] == list(API_CORE_MODULES)
    package = ROOT / "d2l_utils"
    generated = {p.stem for p in package.glob("*.py") if is_generated(p)}
    assert set(modules[len(API_CORE_MODULES):]) == generated
