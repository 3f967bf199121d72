"""Every example notebook in ``nbs/examples/`` matches its source and runs top to bottom.

Each notebook ``<name>.ipynb`` is generated from its jupytext percent-format source ``<name>.py``
by ``python3 tasks.py notebooks`` (``tasks.write_notebooks``); the sync tests fail when a pair
differs and name the command that fixes it.

Each notebook is executed by nbclient in a fresh kernel that runs *this* interpreter
(``helpers.execute_notebook``), so it sees the same environment as the tests whatever kernelspecs
the machine has installed. The kernel works in a temporary folder (nothing is written into the
repository), with ``MPLBACKEND=Agg`` and the repository root on ``PYTHONPATH``. The selected
notebooks run one after the other in the background job ``notebooks``, started when the tests are
collected (``tests/conftest.py``), their kernels on one thread each: a notebook spends most of
its time importing torch and in small tensor operations, which leave the second core idle, and
the rest of the suite uses it meanwhile. The tests read the job's results at the end of the run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from helpers import execute_notebook, notebook_pictures

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "nbs" / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
SOURCES = sorted(EXAMPLES.glob("*.py"))
FIX = "python3 tasks.py notebooks"
ATTRIBUTION_NOTEBOOKS = ("Visual-Gradient_backprop.ipynb", "Visual-Grad_CAM.ipynb",
                         "occlusion.ipynb")
CELL_TIMEOUT_S = 300


def _notebook_job(factory: pytest.TempPathFactory, items: list[pytest.Item]) -> dict | None:
    """The background job that runs the selected notebooks (``helpers.run_notebooks``)."""
    paths = [str(item.callspec.params["path"]) for item in items
             if getattr(item, "originalname", "") == "test_notebook_runs"]
    if not paths:
        return None
    out = factory.mktemp("notebooks")
    tests = str(ROOT / "tests")
    env = dict(os.environ, OMP_NUM_THREADS="1",  # one core for the kernel, one for the suite
               PYTHONPATH=os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p))
    return {"args": [sys.executable, "-c",
                     "import sys, helpers; sys.exit(helpers.run_notebooks(*sys.argv[1:]))",
                     str(out), *paths], "cwd": ROOT, "env": env, "out": out}


BACKGROUND = {"notebooks": _notebook_job}


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def _out_of_sync(folder: Path) -> list[str]:
    """One message per problem: a source without its notebook or the reverse, or a notebook
    whose cells (types and sources) differ from what jupytext makes of its source."""
    problems = []
    for source in sorted(folder.glob("*.py")):
        notebook = source.with_suffix(".ipynb")
        if not notebook.exists():
            problems.append(f"{source.name} has no {notebook.name}: run `{FIX}`")
            continue
        want, have = _cells(jupytext.read(source)), _cells(nbformat.read(notebook, as_version=4))
        if want != have:
            k = next((i for i, (w, h) in enumerate(zip(want, have)) if w != h),
                     min(len(want), len(have)))
            problems.append(
                f"{notebook.name} is out of sync with its source {source.name} (cell {k} differs; "
                f"{len(want)} cells in the source, {len(have)} in the notebook): edit "
                f"{source.name}, then run `{FIX}`")
    for notebook in sorted(folder.glob("*.ipynb")):
        if not notebook.with_suffix(".py").exists():
            problems.append(
                f"{notebook.name} has no source {notebook.stem}.py: create it with `jupytext "
                f"--set-formats ipynb,py:percent {notebook.name}`, then run `{FIX}`")
    return problems


def _tasks():
    """``tasks.py`` as a module (it is a script in the repository root, not a package)."""
    spec = importlib.util.spec_from_file_location("netlens_tasks", ROOT / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_match_their_sources():
    assert SOURCES, f"no notebook sources in {EXAMPLES}"
    problems = _out_of_sync(EXAMPLES)
    assert not problems, "\n".join(problems)


def test_sync_check_reports_a_pair_that_differs(tmp_path: Path):
    for path in (EXAMPLES / "evaluation.py", EXAMPLES / "evaluation.ipynb"):
        shutil.copy(path, tmp_path / path.name)
    assert _out_of_sync(tmp_path) == []
    source = tmp_path / "evaluation.py"
    text = source.read_text(encoding="utf-8")
    source.write_text(text.replace("torch.manual_seed(0)", "torch.manual_seed(1)", 1),
                      encoding="utf-8")
    [problem] = _out_of_sync(tmp_path)
    assert "evaluation.ipynb is out of sync with its source evaluation.py" in problem
    assert FIX in problem
    source.write_text(text + "\n# %%\nprint('one more cell')\n", encoding="utf-8")
    [problem] = _out_of_sync(tmp_path)
    assert "evaluation.ipynb" in problem and FIX in problem
    (tmp_path / "evaluation.ipynb").unlink()
    assert _out_of_sync(tmp_path) == [f"evaluation.py has no evaluation.ipynb: run `{FIX}`"]
    source.rename(tmp_path / "other.py")
    shutil.copy(EXAMPLES / "evaluation.ipynb", tmp_path / "evaluation.ipynb")
    problems = _out_of_sync(tmp_path)
    assert len(problems) == 2 and "evaluation.ipynb has no source evaluation.py" in problems[1]


def test_task_writes_the_stored_notebooks_byte_for_byte(tmp_path: Path):
    for source in SOURCES:
        shutil.copy(source, tmp_path / source.name)
    tasks = _tasks()
    assert tasks.write_notebooks(tmp_path) == 0
    first = {p.name: p.read_bytes() for p in tmp_path.glob("*.ipynb")}
    assert tasks.write_notebooks(tmp_path) == 0  # deterministic: the same bytes again
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.ipynb")} == first
    stale = [name for name, data in first.items() if (EXAMPLES / name).read_bytes() != data]
    assert not stale, f"{stale} differ from what `{FIX}` writes: run it"
    (tmp_path / "orphan.ipynb").write_bytes(first["evaluation.ipynb"])
    assert tasks.write_notebooks(tmp_path) == 1  # a notebook without a source is an error


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_says_it_is_generated(source: Path):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown", f"{source.name}: the first cell must be the note"
    for words in (f"{source.name}`", f"{source.stem}.ipynb", f"`{FIX}`", "Edit the `.py`"):
        assert words in first.source, f"{source.name}: the first cell's note lacks {words!r}"
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert nb.metadata["netlens"]["generated_from"] == source.name
    assert nb.metadata["netlens"]["regenerate"] == FIX


def test_example_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks in {EXAMPLES}"
    names = {p.name for p in NOTEBOOKS}
    missing = [n for n in ATTRIBUTION_NOTEBOOKS if n not in names]
    assert not missing, f"missing example notebooks: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, background):
    done = background("notebooks")
    if done is None:  # not started (the test was called some other way): run it here
        nb, failure = execute_notebook(path, tmp_path, cell_timeout_s=CELL_TIMEOUT_S)
        pictures = notebook_pictures(nb)
    else:
        status, log, spec = done
        result = spec["out"] / f"{path.stem}.json"
        assert status == 0 and result.exists(), f"the notebook job failed ({status}):\n{log}"
        report = json.loads(result.read_text(encoding="utf-8"))
        failure, pictures = report["failure"], report["pictures"]
    if failure is not None:
        pytest.fail(f"{path.name}: a cell failed\n{failure}", pytrace=False)
    if path.name in ATTRIBUTION_NOTEBOOKS:  # they exist to show pictures
        assert pictures >= 3, f"{path.name} displayed {pictures} pictures"
