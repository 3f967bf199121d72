"""``python -m netlens.gallery``: the README's figures, drawn from the demo's stages."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from netlens import gallery


@pytest.fixture(scope="module")
def results(demo_run):
    return demo_run["results"]


@pytest.mark.slow  # needs the reduced demo (about 8 s, once per session)
def test_every_figure_is_drawn_from_the_demo_stages(results, tmp_path):
    paths = gallery.render(results, tmp_path, dpi=40)
    expected = {name for name, (stage, _) in gallery.FIGURES.items() if stage in results}
    assert {p.name for p in paths} == expected
    assert {"attribution.png", "cams.png", "occlusion.png", "optvis.png", "deep_dream.png",
            "inversion.png", "style_transfer.png"} <= expected
    for path in paths:
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG" and min(image.size) >= 40, path
            assert np.unique(np.asarray(image.convert("L"))).size > 10, f"{path.name} is flat"


@pytest.mark.slow  # needs the reduced demo (about 8 s, once per session)
def test_attribution_figure_has_one_row_per_image_and_one_column_per_method(results):
    stage = results["attribution"]
    fig = gallery.attribution_figure(stage, ["saliency", "gradcam"])
    assert len(fig.axes) == len(stage.groups["input"]) * 4  # image, mask, two maps
    with pytest.raises(ValueError, match="no maps for"):
        gallery.attribution_figure(stage, ["no_such_method"])


@pytest.mark.slow  # needs the reduced demo (about 8 s, once per session)
def test_rendering_is_deterministic(results, tmp_path):
    first = gallery.render(results, tmp_path / "a", dpi=40, names=["style_transfer.png"])
    second = gallery.render(results, tmp_path / "b", dpi=40, names=["style_transfer.png"])
    assert first[0].read_bytes() == second[0].read_bytes()
