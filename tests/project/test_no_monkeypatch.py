"""netlens must not change ``torch.Tensor``, nor pull in pyimgy's monkey-patching module.

pyimgy.optional.torch replaces ``Tensor.tile`` and swaps ``Tensor.transpose``/``Tensor.repeat``
during conversions; this checks it in a fresh interpreter, where nothing else has run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

_SCRIPT = textwrap.dedent(
    """
    import sys

    import torch

    def snapshot():
        out = {}
        for name in dir(torch.Tensor):
            try:
                out[name] = getattr(torch.Tensor, name)
            except Exception as exc:  # an attribute that cannot be read is recorded as such
                out[name] = ("<unreadable>", type(exc).__name__)
        return out

    def same(a, b):
        if a is b:
            return True
        try:
            return bool(a == b)
        except Exception:
            return False

    before = snapshot()

    import numpy as np

    import netlens
    import netlens.image
    import netlens.plot

    x = netlens.image.load(np.zeros((8, 8, 3), dtype=np.uint8), size=4)
    netlens.image.to_pil(x)
    netlens.plot.overlay(x, torch.rand(1, 2, 2))

    after = snapshot()
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(n for n in set(before) & set(after) if not same(before[n], after[n]))
    lines = [f"added: {n} = {after[n]!r}" for n in added]
    lines += [f"removed: {n}" for n in removed]
    lines += [f"changed: {n}: {before[n]!r} -> {after[n]!r}" for n in changed]
    if "pyimgy.optional.torch" in sys.modules:
        lines.append("imported: pyimgy.optional.torch")
    if lines:
        print("torch.Tensor was modified:")
        print("\\n".join(lines))
        sys.exit(1)
    print("ok")
    """
)


def test_importing_and_using_netlens_leaves_tensor_untouched():
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip().endswith("ok")
