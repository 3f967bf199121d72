"""Small helpers shared by every technique: progress bars, warnings that point at the user."""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

__all__ = ["NetlensWarning", "progress_bar", "user_stacklevel"]


class NetlensWarning(UserWarning):
    """A real hazard in how a method applies to a model (shown once per place)."""


def progress_bar(total: int, progress: bool | None, desc: str) -> Any:
    """A tqdm bar that appears only when the work takes more than 2 s (``progress=None``),
    always (True) or never (False: tqdm is not even imported)."""
    if progress is False:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, delay=0.0 if progress else 2.0, leave=False)


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` that points at the user's line: the first frame
    outside netlens (and outside ``contextlib``, which runs our context managers)."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in (
            "netlens", "contextlib"):
        frame, level = frame.f_back, level + 1
    return level
