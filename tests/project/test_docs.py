"""The documentation site (``mkdocs.yml``, ``docs/``): it builds strictly, every registry method
has its page, and the built site works in a browser (search, navigation).

The site is built once per module (``mkdocs build --strict`` into a temporary folder, the
notebooks not executed; about 20-30 s on 2 cores). Without mkdocs, mkdocstrings or
mkdocs-jupyter the tests skip; without Playwright or Chromium only the browser test does.
"""

from __future__ import annotations

import functools
import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "nbs" / "examples").glob("*.ipynb"))
MISSING = [m for m in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "material",
                       "mkdocs_jupyter") if importlib.util.find_spec(m.split(".")[0]) is None
           or importlib.util.find_spec(m) is None]
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and Path(p).exists()),
                None)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"the documentation tools are not installed "
                       f"({', '.join(MISSING)}): pip install -r requirements-dev.txt"),
]


def _env() -> dict[str, str]:
    return dict(os.environ, NO_MKDOCS_2_WARNING="1", NETLENS_DOCS_EXECUTE="",
                PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                           if p))


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(config), "-d", str(site)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def hooks():
    """``docs/hooks.py``, the page generator, imported as a module."""
    spec = importlib.util.spec_from_file_location("netlens_docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build_args(site: Path) -> list[str]:
    return [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
            "-d", str(site)]


# The whole site's build, started in the background when the tests are collected
# (tests/conftest.py): about 20 s of one core, which then overlaps the torch tests.
BACKGROUND = {} if MISSING else {
    "docs": lambda factory, _: (lambda out: {"args": _build_args(out), "cwd": ROOT,
                                             "env": _env(), "out": out})(factory.mktemp("site"))}


@pytest.fixture(scope="module")
def site(tmp_path_factory, background) -> Path:
    """The whole site, built once with ``--strict`` (any warning fails the build)."""
    done = background("docs")
    if done is None:
        out = tmp_path_factory.mktemp("site")
        start = time.perf_counter()
        result = mkdocs_build(ROOT / "mkdocs.yml", out)
        print(f"\n[docs] mkdocs build --strict: {time.perf_counter() - start:.1f} s")
        status, log = result.returncode, result.stdout + result.stderr
    else:
        status, log, spec = done
        out = spec["out"]
    assert status == 0, f"mkdocs build --strict failed:\n{log[-6000:]}"
    assert "WARNING" not in log, log[-6000:]
    return out


def page(site: Path, path: str) -> str:
    file = site / path / "index.html"
    assert file.is_file(), f"{path} has no page in the site"
    return file.read_text(encoding="utf-8")


def text_of(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


# ---------------------------------------------------------------- pages


def test_every_registry_method_has_its_page(site):
    from netlens.attribution import METHODS

    index = page(site, "methods")
    for name, spec in METHODS.items():
        markup = page(site, f"methods/{name}")
        text = text_of(markup)
        assert f"{name}" in text_of(re.search(r"<h1[^>]*>(.*?)</h1>", markup, re.S)[1])
        assert spec.paper in text, f"{name}: the paper is not on its page"
        assert spec.summary in text or spec.summary[:1].upper() + spec.summary[1:] in text
        for option in spec.parameters:
            assert f"<code>{option}</code>" in markup, f"{name}: option {option} is not listed"
        # the function's docstring, rendered by mkdocstrings under its own identifier
        ident = f"{spec.fn.__module__}.{spec.fn.__qualname__}"
        assert f'id="{ident}"' in markup, f"{name}: no docstring block for {ident}"
        first_line = spec.fn.__doc__.strip().splitlines()[0].split("``")[0].strip()
        assert first_line[:30] in text, f"{name}: its docstring is not on its page"
        assert f'href="../{name}/"' in index or f'href="{name}/"' in index


def test_a_method_added_to_the_registry_gets_a_page(hooks):
    from netlens.attribution import METHODS, MethodSpec

    def fresh_method(model, x, target=None, *, window: int = 8, power: float = 2.0):
        """A made-up method.

        Args:
            model: the model.
            x: images.
            target: what to explain.
            window: the side of the window.
            power: the exponent of the score.
        """

    spec = MethodSpec("fresh_method", fresh_method, "map", "perturbation",
                      'Doe & Roe, "A Fresh Method", NeurIPS 2031', "a made-up map",
                      cheap={"window": 4})
    specs = [*METHODS.values(), spec]
    pages = hooks.method_pages(specs)
    assert set(pages) == {"methods/index.md", *(f"methods/{s.name}.md" for s in specs)}
    markdown = pages["methods/fresh_method.md"]
    assert markdown.startswith("# fresh_method\n")
    assert spec.paper in markdown
    assert "| `window` | `8` | `int` | the side of the window. |" in markdown
    assert "| `power` | `2.0` | `float` | the exponent of the score. |" in markdown
    assert f"::: {fresh_method.__module__}.{fresh_method.__qualname__}" in markdown
    assert "[`fresh_method`](fresh_method.md)" in pages["methods/index.md"]
    families = {title: entries for entry in hooks.methods_nav(specs)
                for title, entries in entry.items()}
    assert {"fresh_method": "methods/fresh_method.md"} in families["Perturbation"]


def test_notebook_execution_is_opt_in(hooks, monkeypatch):
    from mkdocs.config import load_config

    for value, expected in (("", False), ("1", True)):
        monkeypatch.setenv("NETLENS_DOCS_EXECUTE", value)
        config = hooks.on_config(load_config(str(ROOT / "mkdocs.yml")))
        assert config.plugins["mkdocs-jupyter"].config["execute"] is expected
        titles = [next(iter(entry)) for entry in config["nav"]]
        methods = config["nav"][titles.index("Methods")]["Methods"]
        assert {"Overview": "methods/index.md"} in methods


def test_readme_and_contributing_pages(site):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sections = [line[3:].strip() for line in readme.splitlines() if line.startswith("## ")]
    assert sections
    home = page(site, ".")
    for title in sections:
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        assert html.escape(title, quote=False) in page(site, f"guide/{slug}")
        assert f'href="guide/{slug}/"' in home, f"README section {title!r} is not in the nav"
    # every picture of the README is on a page and resolves to a file of the site
    pictures = re.findall(r"!\[[^\]]*\]\((images/[^)]+)\)", readme)
    assert pictures
    shown = set()
    for file in (site / "guide").glob("*/index.html"):
        for src in re.findall(r'<img[^>]+src="([^"]+)"', file.read_text(encoding="utf-8")):
            target = (file.parent / src).resolve()
            assert target.is_file(), f"{file}: broken image {src}"
            shown.add(target.relative_to(site.resolve()).as_posix())
    assert set(pictures) <= shown, f"pictures not shown: {set(pictures) - shown}"
    contributing = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    first = next(line[3:].strip() for line in contributing.splitlines()
                 if line.startswith("## "))
    assert html.escape(first, quote=False) in page(site, "contributing")


def test_notebooks_are_rendered_and_in_the_nav(site):
    assert len(NOTEBOOKS) >= 7
    home = page(site, ".")
    for nb in NOTEBOOKS:
        markup = page(site, f"examples/{nb.stem}")
        assert "jupyter-wrapper" in markup or "jp-Notebook" in markup, nb.name
        assert f'href="examples/{nb.stem}/"' in home, f"{nb.name} is not in the nav"


def test_api_reference_covers_the_public_surface(site):
    import netlens

    markup = page(site, "api/netlens")
    for name in netlens.__all__:
        assert f"<code>{name}</code>" in markup, f"netlens.{name} is not in the API index"
    flat = page(site, "api/flat_model")
    assert 'id="netlens.flat_model.FlatModel"' in flat
    # Sphinx roles in docstrings became links (docs/griffe_netlens.py)
    assert ":class:" not in text_of(flat) and 'href="../adapter/' in flat


# ---------------------------------------------------------------- strict mode


TINY_CONFIG = """\
site_name: tiny
docs_dir: docs
strict: true
plugins:
  - mkdocstrings:
      handlers:
        python:
          paths: [{paths}]
          options:
            docstring_style: google
            extensions: ["{extension}:SphinxRoles"]
"""


@pytest.mark.parametrize("case", ["good", "broken_markdown_ref", "broken_docstring_role"])
def test_strict_mode_fails_on_a_broken_reference(tmp_path, case):
    package = tmp_path / "tinypkg"
    package.mkdir()
    role = ":func:`no_such_function`" if case == "broken_docstring_role" else ":func:`helper`"
    (package / "__init__.py").write_text(
        f'"""A tiny package; see {role}."""\n\n\ndef helper():\n    """Helps."""\n')
    (tmp_path / "docs").mkdir()
    ref = "[x][netlens.nope]" if case == "broken_markdown_ref" else "[helper][tinypkg.helper]"
    (tmp_path / "docs" / "index.md").write_text(f"# Tiny\n\n{ref}\n\n::: tinypkg\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(TINY_CONFIG.format(paths=tmp_path.as_posix(),
                                         extension=(ROOT / "docs" / "griffe_netlens.py")
                                         .as_posix()))
    result = mkdocs_build(config, tmp_path / "site")
    log = result.stdout + result.stderr
    if case == "good":
        assert result.returncode == 0, log[-3000:]
        assert 'href="#tinypkg.helper"' in (tmp_path / "site" / "index.html").read_text()
    else:
        assert result.returncode != 0, f"{case}: the strict build passed:\n{log[-3000:]}"
        expected = "netlens.nope" if case == "broken_markdown_ref" else "no_such_function"
        assert expected in log and "strict mode" in log, log[-3000:]


# ---------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def served(site):
    """The built site over http on 127.0.0.1 (search needs http, not file://)."""
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,),
                                     {"log_message": lambda *args: None}), directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_search_and_navigation_in_chromium(served, tmp_path):
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright (Python) is not installed: pip install playwright")
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from netlens.attribution import METHODS

    start = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.goto(f"{served}/")
            tab.wait_for_load_state("networkidle")  # the search worker has its index
            tab.click("label.md-search__icon, .md-search__input")  # opens the search box
            # typed before the search worker has its index, a query is lost: wait for it
            tab.wait_for_function("() => { const m = document.querySelector("
                                  "'.md-search-result__meta'); return m && m.textContent.trim() "
                                  "&& !/Initializing/i.test(m.textContent) }", timeout=30_000)
            tab.locator("input.md-search__input").press_sequentially("integrated", delay=20)
            hit = tab.locator(".md-search-result__list a[href*='methods/integrated_gradients']")
            try:
                hit.first.wait_for(timeout=30_000)
            except Exception as error:
                tab.screenshot(path=str(tmp_path / "search.png"))
                results = tab.locator(".md-search-result").inner_html()[:2000]
                raise AssertionError(f"no search result for the method page (screenshot "
                                     f"{tmp_path / 'search.png'}); results: {results}") from error
            hit.first.click()
            tab.wait_for_url(re.compile(r"methods/integrated_gradients/"), timeout=30_000)
            assert "integrated_gradients" in tab.locator("article h1").first.inner_text()
            assert "integrated_gradients" in tab.title()

            tab.goto(f"{served}/methods/saliency/")
            assert tab.locator("article h1").first.inner_text().strip(" ¶\n") == "saliency"
            links = tab.locator("nav.md-nav--primary a.md-nav__link").evaluate_all(
                "links => links.map(a => [a.textContent.trim(), a.getAttribute('href')])")
            for name in METHODS:  # the current page's own link is "./"
                assert any(text == name and (href.rstrip("/").endswith(name) or href == "./")
                           for text, href in links), \
                    f"the navigation of a method page does not list {name}: {links}"
            gradient_family = [n for n, s in METHODS.items() if s.family == "gradient"]
            for name in gradient_family:  # the active family's methods are visible
                link = tab.locator("nav.md-nav--primary a.md-nav__link",
                                   has_text=re.compile(rf"^\s*{name}\s*$"))
                assert any(link.nth(i).is_visible() for i in range(link.count())), name
            assert not errors, errors
        finally:
            browser.close()
    print(f"\n[docs] browser test: {time.perf_counter() - start:.1f} s")


def test_docs_task_is_documented():
    source = (ROOT / "tasks.py").read_text(encoding="utf-8")
    assert "docs" in source and "mkdocs" in source
    assert "site/" in (ROOT / ".gitignore").read_text().splitlines()
