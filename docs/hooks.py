"""MkDocs hook that generates the pages that must not drift from their sources.

Registered under ``hooks:`` in ``mkdocs.yml``. At build time it

- splits ``README.md`` into pages (its intro is the home page, each ``## `` section a page under
  ``guide/``) and turns ``CONTRIBUTING.md`` into ``contributing.md``, rewriting relative links and
  images so that they resolve in the site (``images/`` is copied into the site);
- imports netlens and writes one page per method of the registry
  (``netlens.attribution.METHODS``): ``methods/<name>.md`` with its summary, paper, flags and
  options, the function's docstring through mkdocstrings, and ``methods/index.md``, a table
  grouped by family;
- writes the API reference pages (``api/<module>.md``, one ``::: module`` each);
- adds ``nbs/examples/*.ipynb`` (rendered by mkdocs-jupyter, not executed unless
  ``NETLENS_DOCS_EXECUTE=1``);
- expands the placeholders of ``mkdocs.yml``'s ``nav`` (``README.md``, ``methods/``,
  ``nbs/examples/``, ``api/``) into those pages.

Nothing is written into the repository: every page is a virtual ``File`` of this build.
"""

from __future__ import annotations

import inspect
import os
import posixpath
import re
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "nbs" / "examples"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}

FAMILY_TITLES = {
    "gradient": "Gradients",
    "cam": "Class activation maps",
    "perturbation": "Perturbation",
    "rule": "Backward rules",
    "transformer": "Transformers",
}
OUTPUT_TEXT = {
    "input": "an input attribution `(B, C, H, W)`",
    "map": "one map per image `(B, 1, H, W)`",
}

# The API reference: (module, page, title). Every public module of netlens/__init__.py plus the
# ones its exports live in; netlens and netlens.attribution get generated extras (see below).
API_MODULES = [
    ("netlens", "api/netlens.md", "netlens"),
    ("netlens.interpret", "api/interpret.md", "netlens.interpret (NetLens)"),
    ("netlens.attribution", "api/attribution.md", "netlens.attribution"),
    ("netlens.attribution.registry", "api/registry.md", "netlens.attribution.registry"),
    ("netlens.targets", "api/targets.md", "netlens.targets"),
    ("netlens.rules", "api/rules.md", "netlens.rules"),
    ("netlens.metrics", "api/metrics.md", "netlens.metrics"),
    ("netlens.optvis", "api/optvis.md", "netlens.optvis"),
    ("netlens.optvis.objectives", "api/objectives.md", "netlens.optvis.objectives"),
    ("netlens.generate", "api/generate.md", "netlens.generate (NetDreamer)"),
    ("netlens.style_transfer", "api/style_transfer.md", "netlens.style_transfer"),
    ("netlens.flat_model", "api/flat_model.md", "netlens.flat_model (FlatModel)"),
    ("netlens.hooks", "api/hooks.md", "netlens.hooks"),
    ("netlens.adapter", "api/adapter.md", "netlens.adapter"),
    ("netlens.image", "api/image.md", "netlens.image"),
    ("netlens.plot", "api/plot.md", "netlens.plot"),
    ("netlens.data", "api/data.md", "netlens.data"),
    ("netlens.zoo", "api/zoo.md", "netlens.zoo"),
    ("netlens.export", "api/export.md", "netlens.export"),
    ("netlens.tiling", "api/tiling.md", "netlens.tiling"),
    ("netlens.segments", "api/segments.md", "netlens.segments"),
]

_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)((?:\s+\"[^\"]*\")?)\)")
_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")


# ---------------------------------------------------------------- Markdown sources -> pages


def slugify(title: str) -> str:
    """``"Targets: explain any model output"`` -> ``"targets-explain-any-model-output"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return slug or "section"


def _outside_code(lines: Iterable[str]):
    """Yields ``(line, in_code)``: whether each line is inside a fenced code block."""
    fence = None
    for line in lines:
        m = _FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
                yield line, True
                continue
            if m.group(1) == fence:
                fence = None
                yield line, True
                continue
        yield line, fence is not None


def rewrite_links(text: str, source: str, page: str, published: Mapping[str, str]) -> str:
    """Rewrites the relative links of ``text`` (written in the repository file ``source``) for
    the site page ``page``.

    ``published`` maps repository paths to the site paths they have in this site (images,
    README, CONTRIBUTING); a link to one of them becomes a relative link from ``page``; a link
    to any other repository file (not in the site) keeps its text only. Links inside code
    (fenced blocks, code spans) and absolute URLs are left alone.
    """
    source_dir = posixpath.dirname(source)
    page_dir = posixpath.dirname(page)

    def fix(match: re.Match) -> str:
        label, target, title = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target, flags=re.I):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(source_dir, path)) if path else source
        if repo_path in published:
            new = posixpath.relpath(published[repo_path], page_dir or ".")
            return f"{label}({new}{'#' + anchor if anchor else ''}{title})"
        if label.startswith("!"):  # an image that the site does not have: leave it to strict
            return match.group(0)
        return label[1:-1]

    def fix_line(line: str) -> str:
        out, last = [], 0
        for span in _CODE_SPAN.finditer(line):
            out.append(_LINK.sub(fix, line[last:span.start()]))
            out.append(span.group(0))
            last = span.end()
        out.append(_LINK.sub(fix, line[last:]))
        return "".join(out)

    return "\n".join(line if code else fix_line(line)
                     for line, code in _outside_code(text.splitlines())) + "\n"


def split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The intro of a Markdown file (up to its first ``## ``) and its ``## `` sections as
    ``(title, body)``, headings inside fenced code ignored."""
    intro: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for line, code in _outside_code(text.splitlines()):
        if not code and line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            intro.append(line)
    return "\n".join(intro).strip() + "\n", [(t, "\n".join(b).strip() + "\n") for t, b in sections]


def _promote_headings(body: str) -> str:
    """``### x`` -> ``## x`` outside code: a section's subsections under its page's title."""
    return "\n".join(line[1:] if not code and line.startswith("###") else line
                     for line, code in _outside_code(body.splitlines())) + "\n"


def readme_pages(readme: str) -> list[tuple[str, str, str]]:
    """The pages made from the README: ``(site path, title, Markdown)``, the intro first."""
    intro, sections = split_sections(readme)
    pages = [("index.md", "Home", intro)]
    for title, body in sections:
        pages.append((f"guide/{slugify(title)}.md", title,
                      f"# {title}\n\n{_promote_headings(body)}"))
    return pages


# ---------------------------------------------------------------- the method registry -> pages


def _args_section(doc: str | None) -> dict[str, str]:
    """``name -> description`` from a Google-style ``Args:`` section."""
    found: dict[str, str] = {}
    if not doc:
        return found
    lines = textwrap.dedent("\n".join(doc.splitlines()[1:])).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return found
    indent, name = None, None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        m = re.match(r"\s*\*{0,2}(\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
        if depth == indent and m:
            name = m.group(1)
            found[name] = m.group(2).strip()
        elif name is not None:
            found[name] += " " + line.strip()
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(param: inspect.Parameter) -> str:
    if param.default is inspect.Parameter.empty:
        return "required"
    return f"`{_cell(repr(param.default))}`"


def _annotation(param: inspect.Parameter) -> str:
    ann = param.annotation
    if ann is inspect.Parameter.empty:
        return ""
    text = ann if isinstance(ann, str) else inspect.formatannotation(ann)
    return f"`{_cell(text)}`"


def identifier(fn: Any) -> str:
    """The mkdocstrings identifier of a function: ``netlens.attribution.gradients.saliency``."""
    return f"{fn.__module__}.{fn.__qualname__}"


def method_page(spec: Any) -> str:
    """The Markdown page of one registry method (a ``MethodSpec`` or anything with its fields)."""
    yes = {True: "yes", False: "no"}
    params = spec.parameters
    described = _args_section(getattr(spec.fn, "__doc__", None))
    cheap = ", ".join(f"`{k}={v!r}`" for k, v in spec.cheap.items()) or "none"
    example = ", ".join(f"{k}={v!r}" for k, v in spec.cheap.items())
    call = f"x, target{', ' + example if example else ''}"
    lines = [
        f"# {spec.name}",
        "",
        f"**{spec.summary[:1].upper() + spec.summary[1:]}.**",
        "",
        f"**Paper:** {spec.paper}",
        "",
        "| property | value |",
        "|---|---|",
        f"| family | [{FAMILY_TITLES.get(spec.family, spec.family)}](index.md#{spec.family}) "
        f"(`{spec.family}`) |",
        f"| output | `{spec.output}`: {OUTPUT_TEXT.get(spec.output, spec.output)} |",
        f"| reads a layer (`layer=`) | {yes[bool(spec.layer)]} |",
        f"| changes backward rules | {yes[bool(spec.rules)]} |",
        f"| needs gradients | {yes[bool(spec.gradients)]} |",
        f"| stochastic (`generator=`) | {yes[bool(spec.stochastic)]} |",
        f"| progress bar (`progress=`) | {yes[bool(spec.progress)]} |",
        f"| cheap options (demos, tests) | {cheap} |",
        "",
        "## Usage",
        "",
        "```python",
        "import netlens as nl",
        f"maps = nl.NetLens(model).{spec.name}({call})",
        f"maps = nl.attribution.METHODS[{spec.name!r}](model, {call})",
        "```",
        "",
        "```bash",
        f"netlens attribute photo.jpg --method {spec.name} -o out",
        "```",
        "",
        "## Options",
        "",
    ]
    if params:
        lines += ["| option | default | type | description |", "|---|---|---|---|"]
        for name, param in params.items():
            lines.append(f"| `{name}` | {_default(param)} | {_annotation(param)} | "
                         f"{_cell(described.get(name, ''))} |")
    else:
        lines.append("No options.")
    lines += [
        "",
        "## Reference",
        "",
        f"::: {identifier(spec.fn)}",
        "    options:",
        "      heading_level: 3",
        "      show_root_heading: true",
        "      show_root_full_path: false",
        "",
    ]
    return "\n".join(lines)


def methods_index(specs: Iterable[Any]) -> str:
    """The table of every method, grouped by family."""
    by_family: dict[str, list[Any]] = {}
    for spec in specs:
        by_family.setdefault(spec.family, []).append(spec)
    lines = [
        "# Attribution methods",
        "",
        "Every method of the registry `netlens.attribution.METHODS` (generated from it: a method "
        "added there gets its page here). Each is a pure function "
        "`f(model, x, target, **options)`, also a method of "
        "[`NetLens`][netlens.interpret.NetLens] and a `--method` of `netlens attribute`.",
        "",
    ]
    for family, group in by_family.items():
        lines += [f"## {FAMILY_TITLES.get(family, family)} {{#{family}}}", "",
                  "| method | summary | output | paper |", "|---|---|---|---|"]
        for spec in group:
            lines.append(f"| [`{spec.name}`]({spec.name}.md) | {_cell(spec.summary)} | "
                         f"`{spec.output}` | {_cell(spec.paper)} |")
        lines.append("")
    return "\n".join(lines)


def methods_nav(specs: Iterable[Any]) -> list:
    """The nav entries of the methods: the index, then one section per family."""
    by_family: dict[str, list[Any]] = {}
    for spec in specs:
        by_family.setdefault(spec.family, []).append(spec)
    nav: list = [{"Overview": "methods/index.md"}]
    for family, group in by_family.items():
        nav.append({FAMILY_TITLES.get(family, family):
                    [{s.name: f"methods/{s.name}.md"} for s in group]})
    return nav


def method_pages(specs: Iterable[Any]) -> dict[str, str]:
    """``site path -> Markdown`` for the methods index and one page per method."""
    specs = list(specs)
    pages = {"methods/index.md": methods_index(specs)}
    pages.update({f"methods/{s.name}.md": method_page(s) for s in specs})
    return pages


# ---------------------------------------------------------------- API reference pages


def api_page(module: str, title: str) -> str:
    """The reference page of one module (``netlens`` and ``netlens.attribution`` get more)."""
    import importlib

    mod = importlib.import_module(module)
    head = f"# {title}\n\n"
    if module == "netlens":
        rows = []
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.ismodule(obj):
                page = next((p for m, p, _ in API_MODULES if m == obj.__name__), None)
                link = (f"[`{obj.__name__}`]({posixpath.relpath(page, 'api')})" if page
                        else f"`{obj.__name__}`")
            elif hasattr(obj, "__qualname__") and hasattr(obj, "__module__"):
                link = f"[`{identifier(obj)}`][{identifier(obj)}]"
            else:
                link = f"`{obj!r}`"
            rows.append(f"| `{name}` | {link} |")
        return (head + "::: netlens\n    options:\n      members: false\n      "
                "show_root_heading: false\n\n## Exports\n\n`netlens.__all__`, each documented "
                "where it is defined:\n\n| name | documented at |\n|---|---|\n"
                + "\n".join(rows) + "\n")
    if module == "netlens.attribution":
        specs = mod.METHODS
        members = [n for n in mod.__all__ if n not in specs]
        rows = [f"| [`{s.name}`](../methods/{s.name}.md) | {_cell(s.summary)} |"
                for s in specs.values()]
        return (head + "::: netlens.attribution\n    options:\n      show_root_heading: false\n"
                "      members:\n" + "".join(f"        - {n}\n" for n in members)
                + "\n## Methods\n\nEach method has its page (options, paper, docstring):\n\n"
                "| method | summary |\n|---|---|\n" + "\n".join(rows) + "\n")
    return head + f"::: {module}\n    options:\n      show_root_heading: false\n"


# ---------------------------------------------------------------- MkDocs events

_STATE: dict[str, Any] = {}


def _specs() -> list[Any]:
    from netlens.attribution import METHODS

    return list(METHODS.values())


def _expand_nav(nav: list, expansions: Mapping[str, list]) -> list:
    out = []
    for item in nav:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, str) and value in expansions:
                out.append({title: expansions[value]})
            elif isinstance(value, list):
                out.append({title: _expand_nav(value, expansions)})
            else:
                out.append(item)
        else:
            out.append(item)
    return out


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Generates the pages' Markdown and expands the nav placeholders."""
    readme = readme_pages((ROOT / "README.md").read_text(encoding="utf-8"))
    published = {"README.md": "index.md", "CONTRIBUTING.md": "contributing.md"}
    published.update({p.relative_to(ROOT).as_posix(): p.relative_to(ROOT).as_posix()
                      for p in sorted((ROOT / "images").rglob("*"))
                      if p.suffix.lower() in IMAGE_SUFFIXES})
    pages: dict[str, str] = {}
    for path, _, text in readme:
        pages[path] = rewrite_links(text, "README.md", path, published)
    pages["contributing.md"] = rewrite_links(
        (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"), "CONTRIBUTING.md",
        "contributing.md", published)
    specs = _specs()
    pages.update(method_pages(specs))
    for module, path, title in API_MODULES:
        pages[path] = api_page(module, title)
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    _STATE.update(pages=pages, published=published, notebooks=notebooks)

    config["nav"] = _expand_nav(config["nav"], {
        "README.md": [{title: path} for path, title, _ in readme[1:]],
        "methods/": methods_nav(specs),
        "nbs/examples/": [{nb.stem.replace("_", " "): f"{NOTEBOOKS.name}/{nb.name}"}
                          for nb in notebooks],
        "api/": [{title.split(" ")[0]: path} for _, path, title in API_MODULES],
    })

    execute = os.environ.get("NETLENS_DOCS_EXECUTE", "").lower() in ("1", "true", "yes")
    jupyter = config["plugins"].get("mkdocs-jupyter")
    if jupyter is not None and execute:
        jupyter.config["execute"] = True
        jupyter.config["allow_errors"] = False
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, which must see the notebooks
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Adds the generated pages, the images and the notebooks to this build."""
    for path, text in _STATE["pages"].items():
        files.append(File.generated(config, path, content=text))
    for repo_path, site_path in _STATE["published"].items():
        if Path(repo_path).suffix.lower() in IMAGE_SUFFIXES:
            files.append(File.generated(config, site_path, abs_src_path=str(ROOT / repo_path)))
    for nb in _STATE["notebooks"]:
        # a real File (not File.generated): mkdocs-jupyter's wrapper reads src_dir
        files.append(File(f"{NOTEBOOKS.name}/{nb.name}", str(NOTEBOOKS.parent),
                          config["site_dir"], config["use_directory_urls"]))
    return files
