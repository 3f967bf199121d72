#!/usr/bin/env python3
"""netlens's two set-up-and-run commands, for a fresh machine that has only Python 3.

    python3 tasks.py demo [-o DIR]     # sets everything up, runs the demo
    python3 tasks.py test [PYTEST ARGS] # sets everything up, runs the whole test suite
    python3 tasks.py notebooks         # writes nbs/examples/*.ipynb from their .py sources
    python3 tasks.py docs [--serve]    # builds the documentation site (strict) into site/

Each creates a virtual environment in ``.venv`` (or ``$NETLENS_VENV``) on first use, installs
``requirements-dev.txt``, the test-only anchors of ``requirements-anchors.txt`` (without their
dependencies) and netlens itself (editable) into it, and reinstalls only when those files
change. Nothing outside the repository is touched.
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
ANCHORS = ROOT / "requirements-anchors.txt"  # test-only anchors installed without their deps
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
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + ANCHORS.read_bytes()
                            + (ROOT / "setup.py").read_bytes())
    want = digest.hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want:
        return
    _say("installing requirements-dev.txt (torch and torchvision take about a minute)")
    # --no-compile: byte-compiling all of torch at install time costs more than compiling the
    # modules a run imports
    _run(PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-compile",
         "-r", REQUIREMENTS)
    _run(PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-compile",
         "--no-deps", "--ignore-requires-python", "-r", ANCHORS)
    _run(PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
         "--no-build-isolation", "-e", ROOT)
    stamp.write_text(want)


def write_notebooks(folder: Path = ROOT / "nbs" / "examples") -> int:
    """Writes each ``<name>.ipynb`` in ``folder`` from its jupytext source ``<name>.py``.

    The notebooks get no outputs and fixed cell ids, so the same sources always give the same
    bytes; nothing is executed. Runs in the venv, which has jupytext (``python3 tasks.py
    notebooks``). Returns 1, naming them, if some notebooks have no ``.py`` source.
    """
    import jupytext  # installed in the venv by requirements-dev.txt

    for source in sorted(folder.glob("*.py")):
        nb = jupytext.read(source)
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"cell-{i:02d}"
        text = jupytext.writes(nb, "ipynb").rstrip("\n") + "\n"
        target = source.with_suffix(".ipynb")
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            with open(target, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            _say(f"wrote {target.relative_to(ROOT) if ROOT in target.parents else target}")
    orphans = sorted(p.name for p in folder.glob("*.ipynb") if not p.with_suffix(".py").exists())
    if orphans:
        _say(f"no .py source for {', '.join(orphans)}: create it with `jupytext --set-formats "
             f"ipynb,py:percent NOTEBOOK.ipynb` (see CONTRIBUTING.md)")
        return 1
    return 0


# task -> the command it runs in the venv, given the arguments after the task's name
COMMANDS = {
    "demo": lambda rest: [str(PYTHON), "-m", "netlens", "demo", *rest],  # = `netlens demo`
    "test": lambda rest: [str(PYTHON), "-m", "pytest", *rest],
    "notebooks": lambda rest: [str(PYTHON), "-c",
                               "import sys, tasks; sys.exit(tasks.write_notebooks())", *rest],
    # the documentation site (mkdocs.yml, docs/): a strict build into site/; --serve: live preview
    "docs": lambda rest: [str(PYTHON), "-m", "mkdocs",
                          *(["serve", *(r for r in rest if r != "--serve")] if "--serve" in rest
                            else ["build", "--strict", *rest])],
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("setup", *COMMANDS):
        print(__doc__)
        return 2
    task, rest = argv[0], argv[1:]
    ensure_env()
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    if task == "setup":
        return 0
    cmd = COMMANDS[task](rest)
    _say(" ".join(cmd[2:] if cmd[1] == "-m" else cmd))
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
