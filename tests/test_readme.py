"""The README's Python examples run as written (on random-init models: no download)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_examples():
    assert len(_blocks()) >= 3


@pytest.mark.slow
def test_the_readme_examples_run_in_order():
    namespace: dict = {}
    for i, block in enumerate(_blocks()):
        try:
            exec(compile(block, f"README.md block {i}", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message is the point
            raise AssertionError(f"README.md python block {i} failed: {e!r}\n{block}") from e
    assert namespace["dream"].shape == namespace["photo"].shape
    assert namespace["inverted"].shape == namespace["photo"].shape
    assert len(namespace["images"]) == 2
    assert namespace["out"].shape == namespace["content"].shape
