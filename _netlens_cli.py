"""The ``netlens`` console script (``setup.py``'s entry point): :func:`netlens.cli.main` behind
a guard for Ctrl-C while netlens and torch are still being imported (about a second), where
Python would print a traceback. Outside the ``netlens`` package on purpose: importing anything
inside it first imports ``netlens/__init__.py``, and with it torch. (``python -m netlens``
imports the package before any of its code runs, so there a Ctrl-C in that first second still
shows Python's traceback.)"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from netlens.cli import main as run
    except KeyboardInterrupt:
        print("netlens: error: interrupted; no files written", file=sys.stderr)
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
