"""Small helpers shared by every technique: progress bars, warnings that point at the user."""

from __future__ import annotations

import sys
import time
from types import FrameType
from typing import Any

__all__ = ["NetlensWarning", "progress_bar", "user_stacklevel"]


class NetlensWarning(UserWarning):
    """A real hazard in how a method applies to a model (shown once per place)."""


def progress_bar(total: int, progress: bool | None, desc: str) -> Any:
    """A tqdm bar that appears only when the work takes more than 2 s (``progress=None``),
    always (True) or never (False: tqdm is not even imported). Where standard error is not a
    terminal and not a notebook (a log file, CI), plain lines instead: one at each quarter."""
    if progress is False:
        return _NoBar()
    delay = 0.0 if progress else 2.0
    if not _interactive():
        return _PlainBar(total, desc, delay)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, delay=delay, leave=False)


def _interactive() -> bool:
    """Whether a redrawn bar shows as one line: a terminal, or a Jupyter kernel (a widget)."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


class _PlainBar:
    """``desc: n/total (p%), s seconds`` on standard error at each quarter of the work done,
    once it has taken ``delay`` seconds: no carriage returns or escape codes for a log."""

    def __init__(self, total: int, desc: str, delay: float) -> None:
        self.total, self.desc, self.delay = max(int(total), 1), desc, delay
        self.n, self.quarter = 0, 0
        self.start = time.perf_counter()

    def __enter__(self) -> _PlainBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        self.n += n
        quarter = min(4, 4 * self.n // self.total)
        elapsed = time.perf_counter() - self.start
        if quarter > self.quarter and elapsed >= self.delay:
            self.quarter = quarter
            print(f"{self.desc}: {self.n}/{self.total} ({100 * self.n // self.total}%), "
                  f"{elapsed:.0f} s", file=sys.stderr, flush=True)


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
