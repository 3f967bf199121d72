"""The layout of the test suite, checked statically (``ast`` and ``tokenize``; no test module is
imported): test modules share code only through ``helpers.py`` and ``conftest.py``, every public
module of the package has a test file that mirrors it, tests cite only documents in the
repository (CONTRIBUTING.md's test catalogue), and tests cache models in fixtures, not in
module-level dicts or lists.

Each checker is a function of source text or paths, so each test also shows it flagging a tiny
in-memory example.
"""

from __future__ import annotations

import ast
import io
import posixpath
import re
import tokenize
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _test_sources() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


# -- (a) no test module imports another test module or conftest ----------------------------------
def _is_test_module(dotted: str) -> bool:
    return any(part == "conftest" or part.startswith("test_") for part in dotted.split("."))


def imports_of_test_modules(source: str) -> list[str]:
    """The imports of ``source`` that name a test module (``test_*``) or ``conftest``: plain and
    relative imports, ``from <package> import test_x``, and ``importlib.import_module`` /
    ``__import__`` with a constant name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _is_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if _is_test_module(module):
                found.append(module)
            found += [f"{module}.{a.name}" for a in node.names if _is_test_module(a.name)]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if (name in ("import_module", "__import__") and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and _is_test_module(node.args[0].value)):
                found.append(node.args[0].value)
    return found


def test_no_test_module_imports_another_or_conftest():
    bad = {_rel(p): hits for p in _test_sources()
           if (hits := imports_of_test_modules(p.read_text(encoding="utf-8")))}
    assert not bad, f"shared code goes to tests/helpers.py, fixtures to conftest.py: {bad}"


def test_the_import_checker_flags_imports_of_test_modules():
    for source in ("from test_cam import SmallCNN", "import conftest",
                   "from attribution.test_cam import images", "from . import test_cam",
                   "from .conftest import untouched", "import tests.test_cli as cli",
                   "import importlib\nimportlib.import_module('test_data')"):
        assert imports_of_test_modules(source), source
    assert imports_of_test_modules("from helpers import tiny_vit\nimport testing\n"
                               "from pytest import approx\nfrom netlens import attribution") == []


# -- (b) every public module of the package has a mirroring test file ----------------------------
# Public modules tested in files that are not named after them, and where.
TESTED_ELSEWHERE = {
    # the black-box methods share one test file
    "netlens/attribution/perturbation.py": "tests/attribution/test_blackbox.py",
    "netlens/attribution/rise.py": "tests/attribution/test_blackbox.py",
    "netlens/attribution/surrogate.py": "tests/attribution/test_blackbox.py",
    "netlens/attribution/shap.py": "tests/attribution/test_gradient_shap.py",
    "netlens/metrics/faithfulness_more.py": "tests/metrics/test_faithfulness_quantus.py",
    # the files written by the demo, the gallery and the command line
    "netlens/export.py": "tests/test_demo.py, tests/test_cli.py",
    # MethodSpec: the generated contract tests check every spec against its function
    "netlens/attribution/registry.py": "tests/attribution/test_contracts.py",
    # the metrics on toy models with known answers, and on segmentation targets
    "netlens/metrics/compare.py": "tests/metrics/test_metrics.py, tests/metrics/test_targets.py",
    "netlens/metrics/faithfulness.py": "tests/metrics/test_metrics.py",
    "netlens/metrics/localization.py": "tests/metrics/test_metrics.py, "
                                       "tests/attribution/test_localization.py",
    "netlens/metrics/robustness.py": "tests/metrics/test_metrics.py",
    # LBFGS and ProjectedAdam, through OptVis and style transfer
    "netlens/optvis/optim.py": "tests/optvis/test_render.py, tests/test_style_transfer.py",
}


def unmirrored(package_files: Iterable[str], test_files: Iterable[str],
               allowed: Iterable[str] = ()) -> list[str]:
    """The public modules (``<pkg>/<x>.py`` and ``<pkg>/<sub>/<x>.py`` of a subpackage, names
    not starting with ``_``) without ``tests/test_<x>.py`` or ``tests/<sub>/test_<x>.py``.
    Paths are relative and use ``/``."""
    files = set(package_files)
    tests, allowed = set(test_files), set(allowed)
    missing = []
    for path in sorted(files):
        parts = path.split("/")
        name = parts[-1]
        if not name.endswith(".py") or name.startswith("_") or path in allowed:
            continue
        if len(parts) == 2:
            mirror = f"tests/test_{name}"
        elif len(parts) == 3 and f"{parts[0]}/{parts[1]}/__init__.py" in files:
            mirror = f"tests/{parts[1]}/test_{name}"
        else:
            continue  # not a module of the package or of one of its subpackages
        if mirror not in tests:
            missing.append(f"{path} (no {mirror})")
    return missing


def test_every_public_module_has_a_mirroring_test_file():
    package = [_rel(p) for p in (ROOT / "netlens").rglob("*.py")]
    tests = [_rel(p) for p in _test_sources()]
    assert not unmirrored(package, tests, TESTED_ELSEWHERE), (
        "add the test file, or list the module in TESTED_ELSEWHERE with where it is tested")
    # an entry that is gone, or that has a mirror now, is not reported without its allowance
    stale = [m for m in TESTED_ELSEWHERE
             if not unmirrored(package, tests, set(TESTED_ELSEWHERE) - {m})]
    assert not stale, f"TESTED_ELSEWHERE lists modules that are gone or mirrored: {stale}"
    for where in TESTED_ELSEWHERE.values():
        for test_file in where.split(", "):
            assert (ROOT / test_file).is_file(), test_file


def test_the_mirror_checker_flags_a_module_without_a_test_file():
    package = ["pkg/__init__.py", "pkg/__main__.py", "pkg/_util.py", "pkg/alpha.py",
               "pkg/sub/__init__.py", "pkg/sub/beta.py", "pkg/sub/_gamma.py", "pkg/data/x.py"]
    tests = ["tests/test_alpha.py", "tests/test_beta.py"]  # beta's test is not in tests/sub
    assert unmirrored(package, tests) == ["pkg/sub/beta.py (no tests/sub/test_beta.py)"]
    assert unmirrored(package, tests, {"pkg/sub/beta.py"}) == []
    assert unmirrored(package, [*tests, "tests/sub/test_beta.py"]) == []
    assert unmirrored(package, []) == ["pkg/alpha.py (no tests/test_alpha.py)",
                                       "pkg/sub/beta.py (no tests/sub/test_beta.py)"]


# -- (c) tests cite only documents of the repository ---------------------------------------------
_MD = re.compile(r"(?<![\w./-])((?:\.\.?/)*[\w-][\w./-]*\.md)\b")
_URL = re.compile(r"\w+://\S+?\.md\b")  # a document elsewhere, wherever its copy is
_DOCUMENT = re.compile(r"(?<![\w./-])((?:\.\.?/)*(?:[\w.-]+/)*[A-Z][A-Z0-9_-]*\.md)\b")


def _prose_and_strings(source: str) -> tuple[list[str], list[str]]:
    """The comments and docstrings of ``source``, and its other string literals."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)
                  and isinstance(node.body[0].value.value, str)}
    prose, strings = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            (prose if id(node) in docstrings else strings).append(node.value)
    prose += [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type == tokenize.COMMENT]
    return prose, strings


def document_references(source: str) -> list[str]:
    """The ``.md`` documents ``source`` refers to: any ``*.md`` path in its comments and
    docstrings; in other string literals (file names a test writes, CSS classes), only document
    names written in capitals, like ``README.md``, and addresses of ``.md`` files."""
    prose, strings = _prose_and_strings(source)
    return ([m for text in prose for m in _MD.findall(text) + _URL.findall(text)]
            + [m for text in strings for m in _DOCUMENT.findall(text) + _URL.findall(text)])


def missing_documents(source: str, path: str, documents: Iterable[str]) -> list[str]:
    """The references of ``source`` (a file at ``path``) to no document of ``documents`` (the
    repository's ``.md`` files, relative paths): a reference is a path from the repository root
    or from the file's folder, or the tail of a document's path (``README.md``,
    ``results/style-cpu.md``); nothing outside the repository (``../`` above its root, or an
    address)."""
    documents = set(documents)
    missing = []
    for ref in document_references(source):
        here = posixpath.normpath(posixpath.join(posixpath.dirname(path), ref))
        rooted = posixpath.normpath(ref)
        found = "://" not in ref and here in documents or (not rooted.startswith("..") and any(
            d == rooted or d.endswith("/" + rooted) for d in documents))
        if not found:
            missing.append(ref)
    return missing


def _repository_documents() -> list[str]:
    return [_rel(p) for p in ROOT.rglob("*.md")
            if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def test_tests_cite_only_documents_in_the_repository():
    documents = _repository_documents()
    assert "CONTRIBUTING.md" in documents
    bad = {_rel(p): refs for p in _test_sources()
           if (refs := missing_documents(p.read_text(encoding="utf-8"), _rel(p), documents))}
    assert not bad, f"cite CONTRIBUTING.md's test catalogue instead: {bad}"


def test_the_document_checker_flags_documents_outside_the_repository():
    # The examples spell ".md" as "%md" (replaced below), so that this file cites none of them.
    documents = ["CONTRIBUTING.md", "README.md", "docs/about.md", "benchmarks/results/a.md"]
    source = '''"""Oracles (PLANS%md section 3; see ../elsewhere/CHECKS%md)."""
# the tolerances of HANDBOOK%md
def test_x():
    """As OLD_MANUAL%md says; CONTRIBUTING%md test A1, docs/about%md, results/a%md."""
    assert True, "see NOTES%md or https://example.org/docs/README%md"
    out = tmp_path / "metrics%md"  # a file the test writes: not a document
    css = "label%md-search__icon"
'''.replace("%md", ".md")
    assert missing_documents(source, "tests/test_x.py", documents) == [
        f"{stem}.md" for stem in ("PLANS", "../elsewhere/CHECKS", "OLD_MANUAL", "HANDBOOK", "NOTES",
                                  "https://example.org/docs/README")]
    relative = "# ../README%md is the root's\n".replace("%md", ".md")
    assert missing_documents(relative, "tests/test_x.py", documents) == []
    assert missing_documents(relative, "tests/sub/test_x.py", documents) == [
        relative.split()[1]]


# -- (d) no module-level mutable caches in tests -------------------------------------------------
_EMPTY_CALLS = {"dict", "list", "set", "OrderedDict", "defaultdict", "Counter", "deque"}


def _is_empty_container(value: ast.expr) -> bool:
    if isinstance(value, (ast.Dict, ast.List, ast.Set)):
        return not (value.keys if isinstance(value, ast.Dict) else value.elts)
    if isinstance(value, ast.Call) and not value.keywords:
        func = value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        return name in _EMPTY_CALLS and (not value.args or name == "defaultdict")
    return False


def module_caches(source: str) -> list[str]:
    """The module-level names of ``source`` bound to an empty dict, list or set (``{}``,
    ``[]``, ``dict()``, ``defaultdict(list)``, ...), and its module-level functions memoized
    with ``functools.cache`` / ``lru_cache``: state shared by every test of the session."""
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                pairs = [(target, node.value)]
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts))  # A, B = [], set()
                found += [ast.unparse(t) for t, v in pairs if _is_empty_container(v)]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                deco = deco.func if isinstance(deco, ast.Call) else deco
                name = deco.attr if isinstance(deco, ast.Attribute) else getattr(deco, "id", "")
                if name in ("cache", "lru_cache"):
                    found.append(f"{node.name} (@{name})")
    return found


def test_no_module_level_caches_in_tests():
    bad = {_rel(p): names for p in _test_sources()
           if (names := module_caches(p.read_text(encoding="utf-8")))}
    assert not bad, ("cache built models in a fixture (conftest.py when shared, the module "
                     f"when local), not at module level: {bad}")


def test_the_cache_checker_flags_module_level_caches():
    source = '''import collections
import functools
_BUILT: dict[str, object] = {}
_MODELS = dict()
SEEN, ORDER = [], set()
by_name = collections.defaultdict(list)
CASES = [1, 2]
NAMES = ("a", "b")
@functools.lru_cache(maxsize=None)
def build(name): ...
@functools.cache
def other(name): ...
def fixture():
    built = {}
    return built
'''
    assert module_caches(source) == ["_BUILT", "_MODELS", "SEEN", "ORDER", "by_name",
                                     "build (@lru_cache)", "other (@cache)"]
