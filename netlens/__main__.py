"""``python -m netlens ARGS`` runs the ``netlens`` command (see :mod:`netlens.cli`)."""

from __future__ import annotations

from netlens.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
