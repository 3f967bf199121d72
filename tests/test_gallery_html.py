"""The demo's ``index.html`` in a real browser: headless Chromium loads every picture offline.

Chromium is the one system dependency of the suite (``.ci/run`` installs Debian's ``chromium``);
where it is missing, these tests skip and say so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSER = next((b for b in ("chromium", "chromium-browser") if shutil.which(b)), None)

pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="headless Chromium is not installed (Debian: apt-get install "
                            "chromium); the gallery page cannot be checked in a browser")


def loaded(page: Path, profile: Path) -> tuple[int, int]:
    """Opens ``page`` in headless Chromium; returns (images loaded, images) as counted by the
    page's own script on ``load``."""
    cmd = [BROWSER, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
           f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom",
           page.resolve().as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r'<body[^>]*data-loaded="(\d+)/(\d+)"', result.stdout)
    assert match, f"the page's load script did not run; body: {result.stdout[:300]!r}"
    return int(match[1]), int(match[2])


@pytest.fixture(scope="module")
def out(demo_run):
    return demo_run["out"]


@pytest.mark.slow
def test_every_image_of_the_gallery_loads_in_a_browser(out, tmp_path):
    n_img = len(re.findall(r"<img ", (out / "index.html").read_text(encoding="utf-8")))
    assert loaded(out / "index.html", tmp_path / "profile") == (n_img, n_img)
    # the check can fail: the same page, moved away from one of its pictures
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "style" / "output.png").unlink()
    assert loaded(copy / "index.html", tmp_path / "profile2") == (n_img - 1, n_img)
