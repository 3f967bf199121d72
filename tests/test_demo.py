from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from netlens.demo import run

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_the_picture(tmp_path):
    path, accuracy = run(tmp_path / "out", n=4, seed=7)
    assert path.exists() and accuracy >= 0.75
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 100


def test_demo_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "netlens.demo", "-o", str(tmp_path), "-n", "2"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and (tmp_path / "shapes_demo.png").exists()
