"""Tiles: cut an image into a grid of (possibly overlapping) crops and put them back.

The original Netlens's stand-alone tiling helpers, on tensors: :func:`tile_positions` lists the
top-left corners of the tiles, :func:`tiles` cuts them out (one stack, one slice each, exact),
:func:`untile` reassembles a stack of tiles, or per-tile results of the tiles' size (e.g.
attribution maps computed tile by tile), averaging where tiles overlap, and
:func:`draw_tile_box` / :func:`show_image_with_tiles` draw the grid with matplotlib.

Coordinates are netlens's ``(row, column)``: positions are ``(top, left)`` and sizes
``(h, w)``. (The original's ``get_tiles_positions(W, H, w, h)`` took widths first and returned
``(x, y)`` corners.) By default only full tiles are cut and the remainder at the bottom and
right is dropped, as in the original; ``cover=True`` adds a last row and column of tiles flush
with the edges, so every pixel is in some tile and ``untile(*tiles(x, ...), size)`` is ``x``.

Example:
    >>> x = torch.arange(24.0).reshape(1, 1, 4, 6)
    >>> t, pos = tiles(x, 2, cover=True)
    >>> t.shape, pos[:3]
    (torch.Size([6, 1, 1, 2, 2]), [(0, 0), (0, 2), (0, 4)])
    >>> torch.equal(untile(t, pos, (4, 6)), x)
    True
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:  # matplotlib is imported lazily: it costs about a second
    from matplotlib.axes import Axes
    from matplotlib.patches import Rectangle

__all__ = ["tile_positions", "tiles", "untile", "draw_tile_box", "show_image_with_tiles"]

Size = int | tuple[int, int]


def tile_positions(height: int, width: int, tile: Size, step: Size | None = None, *,
                   cover: bool = False) -> list[tuple[int, int]]:
    """The ``(top, left)`` corners of the tiles of an ``height x width`` image, row by row.

    Args:
        height: the image's height ``H``.
        width: the image's width ``W``.
        tile: the tile's ``(h, w)``, or one int for a square tile.
        step: the distance between neighbouring corners, ``(dy, dx)`` or one int; default the
            tile's size (tiles that touch); smaller steps overlap.
        cover: also place a last row and column of tiles flush with the bottom and right
            edges when the steps do not reach them, so that the tiles cover every pixel.

    Returns:
        The corners, rows first: ``top`` in ``0, dy, 2 dy, ...`` and, for each, ``left`` in
        ``0, dx, ...``, every tile inside the image.

    Raises:
        ValueError: sizes or steps that are not ints >= 1, a tile larger than the image.

    Example:
        >>> tile_positions(5, 7, 2)
        [(0, 0), (0, 2), (0, 4), (2, 0), (2, 2), (2, 4)]
    """
    h_img, w_img = _int(height, "height"), _int(width, "width")
    h, w = _pair(tile, "tile")
    dy, dx = (h, w) if step is None else _pair(step, "step")
    if h > h_img or w > w_img:
        raise ValueError(f"a {h}x{w} tile does not fit in a {h_img}x{w_img} image; use a "
                         "smaller tile")
    rows = _starts(h_img, h, dy, cover)
    cols = _starts(w_img, w, dx, cover)
    return [(top, left) for top in rows for left in cols]


def tiles(image: Tensor, tile: Size, step: Size | None = None, *,
          cover: bool = False) -> tuple[Tensor, list[tuple[int, int]]]:
    """Cuts ``image`` into tiles: ``(stack, positions)``.

    Args:
        image: a tensor whose last two axes are the height and width: ``(H, W)``,
            ``(C, H, W)`` or ``(B, C, H, W)``.
        tile: the tile's ``(h, w)``, or one int.
        step: the distance between corners, as :func:`tile_positions`'s.
        cover: also tile the remainder at the bottom and right edges (see
            :func:`tile_positions`).

    Returns:
        ``stack`` of shape ``(N, ..., h, w)``, where ``stack[i]`` is
        ``image[..., top:top + h, left:left + w]`` for ``positions[i] = (top, left)``, and the
        positions.

    Raises:
        TypeError: ``image`` is not a tensor.
        ValueError: an image with fewer than two axes, bad sizes (see :func:`tile_positions`).
    """
    _check_image(image)
    h, w = _pair(tile, "tile")
    positions = tile_positions(image.shape[-2], image.shape[-1], (h, w), step, cover=cover)
    stack = torch.stack([image[..., t:t + h, c:c + w] for t, c in positions])
    return stack, positions


def untile(tiles: Tensor, positions: Sequence[tuple[int, int]], size: Size, *,
           fill: float = 0.0) -> Tensor:
    """Puts tiles back into an image of ``size``: the inverse of :func:`tiles`.

    Where tiles overlap, the result is the mean of their values; pixels that no tile covers
    are ``fill``. The tiles may be any per-tile result of the tiles' size (attribution maps,
    processed crops), not only crops.

    Args:
        tiles: ``(N, ..., h, w)``, one tile per position.
        positions: the ``(top, left)`` corner of each tile.
        size: the image's ``(H, W)``, or one int.
        fill: the value of uncovered pixels.

    Returns:
        ``(..., H, W)`` in the tiles' dtype and device.

    Raises:
        TypeError: ``tiles`` is not a tensor.
        ValueError: a count of positions that is not the count of tiles, a tile that does not
            fit at its position.

    Example:
        >>> t = torch.tensor([[[1.0, 1.0]], [[3.0, 3.0]]])  # two 1x2 tiles, overlapping
        >>> untile(t, [(0, 0), (0, 1)], (1, 3))
        tensor([[1., 2., 3.]])
    """
    if not isinstance(tiles, Tensor) or tiles.dim() < 3:
        shape = tuple(tiles.shape) if isinstance(tiles, Tensor) else type(tiles).__name__
        raise TypeError(f"tiles must be a tensor (N, ..., h, w), got {shape}")
    h_img, w_img = _pair(size, "size")
    pos = [(int(t), int(c)) for t, c in positions]
    if len(pos) != tiles.shape[0]:
        raise ValueError(f"{tiles.shape[0]} tiles but {len(pos)} positions; give one position "
                         "per tile (as tiles() returns them)")
    h, w = tiles.shape[-2:]
    total = tiles.new_zeros(*tiles.shape[1:-2], h_img, w_img)
    count = tiles.new_zeros(h_img, w_img)
    for tile, (top, left) in zip(tiles, pos):
        if top < 0 or left < 0 or top + h > h_img or left + w > w_img:
            raise ValueError(f"a {h}x{w} tile at {(top, left)} does not fit in {h_img}x{w_img}")
        total[..., top:top + h, left:left + w] += tile
        count[top:top + h, left:left + w] += 1
    covered = count > 0
    return torch.where(covered, total / count.clamp_min(1), total.new_tensor(float(fill)))


def draw_tile_box(ax: Axes, position: tuple[int, int], size: Size, color: str = "r",
                  with_marker: bool = False) -> Rectangle:
    """Draws one tile's outline on a matplotlib ``Axes`` showing the image.

    Args:
        ax: the axes (with the image drawn by ``imshow``, pixel ``(0, 0)`` centred at 0).
        position: the tile's ``(top, left)``.
        size: the tile's ``(h, w)``, or one int.
        color: the outline's colour.
        with_marker: also fill a small square (a tenth of the tile, at least 1 pixel) at the
            tile's top-left corner, to tell overlapping tiles apart.

    Returns:
        The outline, a ``matplotlib.patches.Rectangle``.
    """
    from matplotlib.patches import Rectangle

    h, w = _pair(size, "size")
    top, left = position
    box = Rectangle((left - 0.5, top - 0.5), w, h, fill=False, edgecolor=color, linewidth=1.5)
    ax.add_patch(box)
    if with_marker:
        m = max(1.0, min(h, w) / 10)
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), m, m, color=color))
    return box


def show_image_with_tiles(image: Any, tile: Size, positions: Sequence[tuple[int, int]], *,
                          ax: Axes | None = None) -> Axes:
    """Shows an image with the outlines of its tiles: all in red, the first in blue.

    Args:
        image: ``(H, W)``, ``(C, H, W)`` (1 or 3 channels) or ``(1, C, H, W)`` in [0, 1], a
            tensor or an array (``H x W [x C]`` arrays too, as the original took).
        tile: the tiles' ``(h, w)``, or one int.
        positions: their corners, e.g. from :func:`tile_positions`.
        ax: the axes to draw on; default a new figure's (``ax.figure``).

    Returns:
        The axes, titled with the number of tiles (the original printed it).
    """
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(5, 5)).add_subplot()
    arr = torch.as_tensor(image).detach().float().cpu()
    if arr.dim() == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.dim() == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if arr.dim() == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    ax.imshow(arr.clamp(0, 1).numpy(), cmap="gray" if arr.dim() == 2 else None, vmin=0, vmax=1)
    for i, p in enumerate(positions):
        draw_tile_box(ax, p, tile, color="b" if i == 0 else "r")
    ax.set_title(f"{len(positions)} tiles")
    ax.set_axis_off()
    return ax


def _starts(n: int, size: int, step: int, cover: bool) -> list[int]:
    starts = list(range(0, n - size + 1, step))
    if cover and starts[-1] + size < n:
        starts.append(n - size)
    return starts


def _check_image(x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"tiles() takes a tensor (..., H, W), got {type(x).__name__}; convert "
                        "an array with torch.as_tensor")
    if x.dim() < 2:
        raise ValueError(f"tiles() takes a tensor (..., H, W), got shape {tuple(x.shape)}")


def _int(v: object, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return int(v)


def _pair(v: object, name: str) -> tuple[int, int]:
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return _int(v, name), _int(v, name)
    if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) != 2:
        raise ValueError(f"{name} must be an int >= 1 or a pair (h, w) of them, got {v!r}")
    return _int(v[0], name), _int(v[1], name)
