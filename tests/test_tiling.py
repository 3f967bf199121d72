"""Tiling: positions, tiles and their reassembly by hand computation; the matplotlib drawing
(object-oriented figures, so no display backend is involved)."""

from __future__ import annotations

import pytest
import torch

from netlens.tiling import draw_tile_box, show_image_with_tiles, tile_positions, tiles, untile


def test_positions_by_hand():
    assert tile_positions(5, 7, 2) == [(0, 0), (0, 2), (0, 4), (2, 0), (2, 2), (2, 4)]
    # rectangular tiles and steps: rows 0, 1 (3 + 3 > 5 stops), columns 0, 3 (h, w order)
    assert tile_positions(5, 7, (3, 2), (1, 3)) == [(0, 0), (0, 3), (1, 0), (1, 3), (2, 0),
                                                    (2, 3)]
    # cover: a last row and column flush with the edges
    assert tile_positions(5, 7, 2, cover=True) == [(t, c) for t in (0, 2, 3)
                                                    for c in (0, 2, 4, 5)]
    assert tile_positions(4, 6, 2, cover=True) == tile_positions(4, 6, 2)  # nothing left over
    assert tile_positions(3, 3, 3) == [(0, 0)]


def test_tiles_are_the_slices_at_their_positions():
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    stack, positions = tiles(x, (4, 5), 3)
    assert positions == tile_positions(9, 11, (4, 5), 3)
    assert stack.shape == (len(positions), 2, 3, 4, 5)
    for tile, (top, left) in zip(stack, positions):
        assert torch.equal(tile, x[..., top:top + 4, left:left + 5])
    two_d, _ = tiles(x[0, 0], 3)
    assert two_d.shape == (9, 3, 3) and torch.equal(two_d[4], x[0, 0, 3:6, 3:6])


def test_tiling_then_untiling_returns_the_input():
    x = torch.rand(1, 3, 10, 13, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    touching, pos = tiles(x, (5, 4), cover=True)  # the last column overlaps the one before
    assert torch.allclose(untile(touching, pos, (10, 13)), x, atol=1e-15, rtol=0)
    exact, pos = tiles(x[..., :10, :12], (5, 4))  # no overlap: each pixel once, exactly
    assert torch.equal(untile(exact, pos, (10, 12)), x[..., :10, :12])
    overlapping, pos = tiles(x, 4, 2, cover=True)
    assert torch.allclose(untile(overlapping, pos, (10, 13)), x, atol=1e-15, rtol=0)
    # without cover the remainder is dropped: those pixels are the fill
    dropped, pos = tiles(x, 4)
    back = untile(dropped, pos, (10, 13), fill=-1.0)
    assert torch.equal(back[..., :8, :12], x[..., :8, :12])
    assert bool((back[..., 8:, :] == -1).all()) and bool((back[..., :, 12:] == -1).all())


def test_untile_averages_overlapping_results():
    maps = torch.stack([torch.full((2, 2), 1.0), torch.full((2, 2), 4.0),
                        torch.full((2, 2), 10.0)])
    out = untile(maps, [(0, 0), (0, 1), (1, 1)], (3, 3), fill=float("nan"))
    expected = torch.tensor([[1.0, 2.5, 4.0],
                             [1.0, 5.0, 7.0],  # (1, 1) is in all three: (1 + 4 + 10) / 3
                             [float("nan"), 10.0, 10.0]])
    assert torch.allclose(out, expected, equal_nan=True)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="does not fit"):
        tile_positions(4, 4, 5)
    with pytest.raises(ValueError, match="step must be an int >= 1"):
        tile_positions(4, 4, 2, 0)
    with pytest.raises(ValueError, match="pair"):
        tiles(torch.ones(4, 4), (1, 2, 3))
    with pytest.raises(TypeError, match="torch.as_tensor"):
        tiles([[1.0]], 1)
    with pytest.raises(ValueError, match="one position per tile"):
        untile(torch.ones(2, 1, 2, 2), [(0, 0)], 4)
    with pytest.raises(ValueError, match="does not fit"):
        untile(torch.ones(1, 1, 2, 2), [(3, 0)], 4)


def test_drawing_the_tiles():
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    ax = Figure().add_subplot()
    box = draw_tile_box(ax, (2, 5), (3, 4), color="g", with_marker=True)
    assert isinstance(box, Rectangle) and box.get_xy() == (4.5, 1.5)
    assert (box.get_width(), box.get_height()) == (4, 3) and len(ax.patches) == 2
    image = torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(0))
    positions = tile_positions(12, 16, 4, cover=True)
    ax = show_image_with_tiles(image, 4, positions)
    assert len(ax.patches) == len(positions) == 12 and ax.get_title() == "12 tiles"
    colors = [p.get_edgecolor()[:3] for p in ax.patches]
    assert colors[0] == (0.0, 0.0, 1.0) and set(colors[1:]) == {(1.0, 0.0, 0.0)}
    shown = ax.images[0].get_array()
    assert shown.shape == (12, 16, 3)
    assert torch.allclose(torch.as_tensor(shown), image.permute(1, 2, 0))
    assert show_image_with_tiles(image.permute(1, 2, 0).numpy(), 4, positions[:1],
                                 ax=Figure().add_subplot()).images[0].get_array().shape == \
        (12, 16, 3)
