"""Every example notebook in ``nbs/examples/`` runs top to bottom.

Each notebook is executed by nbclient in a fresh kernel that runs *this* interpreter
(``sys.executable -m ipykernel_launcher``), so it sees the same environment as the tests whatever
kernelspecs the machine has installed. The kernel works in a temporary folder (nothing is written
into the repository), with ``MPLBACKEND=Agg`` and the repository root on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "nbs" / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
ATTRIBUTION_NOTEBOOKS = ("Visual-Gradient_backprop.ipynb", "Visual-Grad_CAM.ipynb",
                         "occlusion.ipynb")
CELL_TIMEOUT_S = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks


class _ThisPythonKernels(KernelSpecManager):
    """Every kernel name resolves to an IPython kernel on ``sys.executable``."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            name=kernel_name, display_name=f"Python ({sys.executable})", language="python",
        )


def _kernel_env(workdir: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    # IPYTHONDIR: the kernel's IPython profile lives in the temporary folder, not in $HOME
    return dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=path,
                IPYTHONDIR=str(workdir / ".ipython"))


def _execute(path: Path, workdir: Path) -> nbformat.NotebookNode:
    """Runs the notebook in ``workdir``; a failing cell fails the test with its traceback."""
    nb = nbformat.read(path, as_version=4)
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_ThisPythonKernels(),
                            connection_file=str(workdir / "kernel.json"))
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     allow_errors=False,
                                     resources={"metadata": {"path": str(workdir)}})
    failure = None
    try:
        client.execute(cwd=str(workdir), env=_kernel_env(workdir))
    except CellExecutionError as error:  # its message holds the cell's source and traceback
        failure = _ANSI.sub("", str(error))
    if failure is not None:  # failed outside the except block: no chained traceback
        pytest.fail(f"{path.name}: a cell failed\n{failure}", pytrace=False)
    return nb


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
def test_notebook_runs(path: Path, tmp_path: Path):
    nb = _execute(path, tmp_path)
    if path.name in ATTRIBUTION_NOTEBOOKS:  # they exist to show pictures
        pictures = sum("image/png" in out.get("data", {})
                       for cell in nb.cells if cell.cell_type == "code"
                       for out in cell.get("outputs", []))
        assert pictures >= 3, f"{path.name} displayed {pictures} pictures"
