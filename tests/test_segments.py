"""Segmentations (netlens.segments): the grid by hand, the checks and renumbering of masks,
painting values back, and the scikit-image wrappers' message where it is not installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from netlens import segments
from netlens.segments import as_segments, grid, paint

HAS_SKIMAGE = importlib.util.find_spec("skimage") is not None


def test_grid_by_hand():
    x = torch.zeros(2, 3, 5, 7)
    g = grid(x, (2, 3))
    assert g.shape == (1, 1, 5, 7) and g.dtype == torch.int64
    # rows: floor(i * 2 / 5) -> 0, 0, 0, 1, 1; cols: floor(j * 3 / 7) -> 0, 0, 0, 1, 1, 2, 2
    rows = torch.tensor([0, 0, 0, 1, 1])
    cols = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    assert torch.equal(g[0, 0], rows[:, None] * 3 + cols[None, :])
    square = grid(torch.zeros(1, 1, 224, 224))  # the default: 7 x 7 cells of 32 pixels
    assert torch.equal(square[0, 0].flatten().bincount(), torch.full((49,), 32 * 32))
    assert grid(x, 1).unique().tolist() == [0]


@pytest.mark.parametrize("cells, match", [(0, "positive"), ((2, -1), "positive"),
                                          ((1, 2, 3), "pair"), (2.5, "pair"), (6, "exceed")])
def test_grid_rejects_bad_cells(cells, match):
    with pytest.raises(ValueError, match=match):
        grid(torch.zeros(1, 3, 5, 7), cells)


def test_as_segments_renumbers_and_checks():
    x = torch.zeros(2, 3, 2, 3)
    mask = torch.tensor([[[[5, 5, 9], [2, 9, 2]]]])
    labels, count = as_segments(mask, x)
    assert count == 3 and torch.equal(labels, torch.tensor([[[[1, 1, 2], [0, 2, 0]]]]))
    labels, count = as_segments(2, torch.zeros(1, 1, 4, 4))
    assert count == 4 and torch.equal(labels, grid(torch.zeros(1, 1, 4, 4), 2))
    assert as_segments(None, torch.zeros(1, 1, 14, 14))[1] == 49
    with pytest.raises(TypeError, match="integer tensor"):
        as_segments(mask.float(), x)
    with pytest.raises(TypeError, match="integer tensor"):
        as_segments(mask.bool(), x)
    with pytest.raises(ValueError, match=r"shape \(1, 1, 2, 2\)"):
        as_segments(mask[..., :2], x)
    with pytest.raises(ValueError, match="shape"):
        as_segments(mask.expand(3, 1, 2, 3), x)  # 3 masks for 2 images
    with pytest.raises(ValueError, match="negative"):
        as_segments(-mask, x)


def test_paint_by_hand():
    labels = torch.tensor([[[[0, 1], [2, 1]]]])
    values = torch.tensor([[10.0, 20.0, 30.0], [1.0, 2.0, 3.0]])
    out = paint(values, labels)
    assert torch.equal(out, torch.tensor([[[[10.0, 20.0], [30.0, 20.0]]],
                                          [[[1.0, 2.0], [3.0, 2.0]]]]))
    k = paint(torch.stack([values, -values], 1), labels)  # (B, K, S) -> (B, K, 1, H, W)
    assert k.shape == (2, 2, 1, 2, 2) and torch.equal(k[:, 1], -out)


@pytest.mark.skipif(HAS_SKIMAGE, reason="scikit-image is installed")
@pytest.mark.parametrize("name", ["slic", "quickshift", "felzenszwalb"])
def test_superpixels_without_scikit_image_say_how_to_install_it(name):
    with pytest.raises(ImportError, match=rf"segments\.{name} needs scikit-image.*pip install "
                                          r"scikit-image.*netlens\[segments\]"):
        getattr(segments, name)(torch.rand(1, 3, 16, 16))


@pytest.mark.skipif(not HAS_SKIMAGE, reason="scikit-image is not installed")
@pytest.mark.parametrize("name", ["slic", "quickshift", "felzenszwalb"])
def test_superpixels_label_every_pixel(name):
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    labels = getattr(segments, name)(x)
    assert labels.shape == (2, 1, 24, 24) and labels.dtype == torch.int64
    for image in labels:
        ids = image.unique()
        assert torch.equal(ids, torch.arange(ids.numel()))  # numbered 0..S-1
