#!/usr/bin/env python3
"""netlens's two set-up-and-run commands, for a fresh machine that has only Python 3.

    python3 tasks.py demo [-o DIR]     # sets everything up, runs the demo
    python3 tasks.py test [PYTEST ARGS] # sets everything up, runs the whole test suite

Each creates a virtual environment in ``.venv`` (or ``$NETLENS_VENV``) on first use, installs
``requirements-dev.txt`` and netlens itself (editable) into it, and reinstalls only when those
files change. Nothing outside the repository is touched.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("NETLENS_VENV", ROOT / ".venv"))
REQUIREMENTS = ROOT / "requirements-dev.txt"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def _say(message: str) -> None:
    print(f"[tasks] {message}", flush=True)


def _run(*cmd: str | os.PathLike) -> None:
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT)


def ensure_env() -> None:
    """Creates the venv and installs what is missing (skipped when nothing changed)."""
    if sys.version_info < (3, 9):
        sys.exit(f"netlens needs Python >= 3.9, this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        _say(f"creating a virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True, clear=VENV.exists()).create(VENV)
    stamp = VENV / ".netlens-installed"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + (ROOT / "setup.py").read_bytes())
    want = digest.hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want:
        return
    _say("installing requirements-dev.txt (torch and torchvision take about a minute)")
    _run(PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", REQUIREMENTS)
    _run(PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
         "--no-build-isolation", "-e", ROOT)
    stamp.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    task, rest = argv[0], argv[1:]
    ensure_env()
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    if task == "setup":
        return 0
    if task == "demo":
        cmd = [str(PYTHON), "-m", "netlens", "demo", *rest]  # = `netlens demo`
    else:
        cmd = [str(PYTHON), "-m", "pytest", *rest]
    _say(" ".join(cmd[2:] if cmd[1] == "-m" else cmd))
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
