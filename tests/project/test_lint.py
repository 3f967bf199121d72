"""The code style checks run as part of the suite (CONTRIBUTING.md, code style)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_is_clean():
    if shutil.which("ruff") is None and subprocess.run(
            [sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode != 0:
        pytest.skip("ruff is not installed (pip install ruff, or use python3 tasks.py test)")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "netlens", "tests",
                             "benchmarks", "nbs", "docs", "tasks.py", "setup.py",
                             "_netlens_cli.py"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_api_is_explicit():
    import netlens

    assert netlens.__all__, "netlens/__init__.py must set __all__"
    for name in netlens.__all__:
        assert getattr(netlens, name) is not None, name
