"""The type check run as part of the suite: mypy over netlens/ with the repository's mypy.ini."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "mypy.ini"
# The repository's own incremental cache (ignored by git, shared with `.venv/bin/mypy`): a cold
# run (CI) analyses torch and numpy too, later runs only what changed.
CACHE = ROOT / ".mypy_cache"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (pip install -r requirements-dev.txt, or python3 tasks.py test)")


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m mypy --config-file mypy.ini ARGS`` from the repository root."""
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(CONFIG), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)


def _report(result: subprocess.CompletedProcess[str]) -> str:
    return f"mypy exited with {result.returncode}:\n{result.stdout}{result.stderr}"


# The package check, started in the background when the tests are collected (tests/conftest.py):
# a cold run takes about 40 s of one core, which then overlaps the torch tests.
BACKGROUND = {"mypy": lambda *_: {"args": [sys.executable, "-m", "mypy", "--config-file",
                                          str(CONFIG), "--cache-dir", str(CACHE)], "cwd": ROOT}}


@pytest.mark.slow
def test_package_type_checks(background):
    done = background("mypy")  # the files of mypy.ini: netlens/
    result = _mypy("--cache-dir", str(CACHE)) if done is None else subprocess.CompletedProcess(
        "mypy", done[0], done[1], "")
    assert result.returncode == 0, _report(result)
    # There netlens/interpret.py is shadowed by its stub, netlens/interpret.pyi: check it too.
    result = _mypy("--cache-dir", str(CACHE), "netlens/interpret.py")
    assert result.returncode == 0, _report(result)


def test_type_check_reports_errors(tmp_path):
    """The same configuration fails on a type error (and reports unused ignores)."""
    bad = tmp_path / "typo_module.py"
    bad.write_text("def half(n: int) -> str:\n"
                   "    return n // 2\n"
                   "\n"
                   "\n"
                   "count: int = 1  # type: ignore[assignment]\n")
    result = _mypy("--no-incremental", str(bad))
    assert result.returncode == 1, _report(result)
    assert "typo_module.py:2: error: Incompatible return value type" in result.stdout, \
        _report(result)
    assert "typo_module.py:5: error: Unused \"type: ignore\" comment" in result.stdout, \
        _report(result)
