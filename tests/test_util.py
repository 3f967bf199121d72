"""netlens._util: progress bars that suit where they are shown."""

from __future__ import annotations

import io
import sys

from netlens import _util


def test_progress_off_a_terminal_is_plain_lines_at_each_quarter(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file: not a terminal
    with _util.progress_bar(8, True, "occlusion") as bar:
        for _ in range(8):
            bar.update()
    text = sys.stderr.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "occlusion: 2/8 (25%)", "occlusion: 4/8 (50%)", "occlusion: 6/8 (75%)",
        "occlusion: 8/8 (100%)"]
    assert all(line.endswith(" s") for line in lines)


def test_a_quick_run_prints_nothing_off_a_terminal(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with _util.progress_bar(4, None, "ScoreCAM") as bar:  # None: only after 2 s
        bar.update(4)
    assert sys.stderr.getvalue() == ""
    assert isinstance(_util.progress_bar(4, False, "x"), _util._NoBar)


def test_a_terminal_or_a_notebook_gets_the_tqdm_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", Terminal())
    from tqdm import tqdm

    bar = _util.progress_bar(4, True, "x")
    assert isinstance(bar, tqdm)  # tqdm.auto's class (tqdm_asyncio off a notebook)
    bar.close()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # inside a Jupyter kernel
    assert not isinstance(_util.progress_bar(4, True, "x"), _util._PlainBar)
