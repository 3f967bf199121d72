"""The README's Python examples run as written (on random-init models: no download)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[2] / "README.md"


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
    assert namespace["vit_cam"].shape == (1, 1, 224, 224) and namespace["vit_cam"].any()
    # a reshape function: the same map (float32 round-off of the other view's reshapes)
    torch.testing.assert_close(namespace["same"], namespace["vit_cam"])


def _cli_lines() -> list[list[str]]:
    """Every ``netlens ...`` command of the README's bash blocks, as argv (continuations
    joined, comments dropped)."""
    import shlex

    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "netlens":
                lines.append(argv[1:])
    return lines


def test_the_readme_commands_are_valid_cli_calls():
    """The README and the command line agree: every ``netlens`` command shown parses with the
    CLI's own parser (nothing is run: the examples name files and weights of the reader's)."""
    from netlens.cli import _parser

    lines = _cli_lines()
    assert {argv[0] for argv in lines} >= {"demo", "attribute", "layers", "visualize", "dream",
                                           "style", "eval"}
    parser = _parser()
    for argv in lines:
        args = parser.parse_args(argv)
        assert callable(args.run), argv
