"""RISE: the target score of randomly masked images, averaged over the masks.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
BMVC 2018. Each of ``n`` masks is a ``rows x cols`` grid of cells kept with probability ``p``,
upsampled bilinearly to ``(rows + 1) x (cols + 1)`` cells of ``ceil(H / rows) x ceil(W / cols)``
pixels and cropped to the image at a random shift of less than one cell; the masked image is
``x * mask``, and the saliency ``sum_i f(x * M_i)[t] * M_i / (n p)`` (the paper's Monte Carlo
estimate of ``E[f(x * M) M(pixel)] / E[M(pixel)]``, with ``E[M(pixel)] = p``).

The masks are the same for every image of the batch and drawn from ``generator`` in a fixed
order (all grids, then all shifts), so the result does not depend on ``batch_size``, and an
image explained alone gets the map it gets in a batch. Only the low-resolution grids of all
masks exist at once; full-size masks are made per forward pass.

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> g = torch.Generator().manual_seed(0)
    >>> rise(m, torch.rand(1, 3, 32, 32), n=8, generator=g).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from .._runtime import (
    check_count,
    check_generator,
    check_real,
    chunks,
    guarded,
    model_output,
    pass_layout,
    prepare,
    progress_bar,
    scores_of,
)
from ..targets import TargetLike
from .perturbation import bind_scores, pass_size

__all__ = ["rise"]

Cells = Union[int, tuple[int, int]]


def _grid(cells: Cells, height: int, width: int) -> tuple[int, int]:
    pair = (cells, cells) if isinstance(cells, int) else cells
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in pair)
            or min(pair) < 1):
        raise ValueError(f"cells must be a positive int or a pair (rows, cols) of them, got "
                         f"{cells!r}")
    if pair[0] > height or pair[1] > width:
        raise ValueError(f"cells {tuple(pair)} exceed the image size ({height}, {width})")
    return int(pair[0]), int(pair[1])


def rise(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    n: int = 4000, cells: Cells = 7, p: float = 0.5, batch_size: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RISE saliency: the mean target score of randomly masked copies of the image, each
    pixel weighted by how much of it the mask kept.

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64; masking multiplies them (0 is black for
            raw pixels, the mean colour for normalized ones).
        target: anything :func:`netlens.targets.as_target` accepts (None: the predicted class).
        n: the number of masks (the paper's 4000 for 224 px ImageNet models); an image costs
            ``n`` forward passes.
        cells: the masks' grid of cells, an int or ``(rows, cols)`` (the paper's 7).
        p: the probability of keeping a cell, in (0, 1).
        batch_size: masked images per forward pass (default from the memory budget); the
            result does not depend on it (up to float round-off of the sum).
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        generator: the masks' generator (never the global random state); the same seed gives
            the same masks and the same map.

    Returns:
        ``(B, 1, H, W)`` (``(B, K, 1, H, W)`` for K targets), ``x``'s dtype and device:
        ``sum_i f(x * M_i)[t] * M_i / (n p)``.

    Raises:
        ValueError: ``n < 1``, ``p`` outside (0, 1), malformed ``cells`` or more cells than
            pixels, a bad input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> g = torch.Generator().manual_seed(0)
        >>> rise(lin, torch.rand(2, 1, 4, 4), 1, n=16, cells=2, generator=g).shape
        torch.Size([2, 1, 4, 4])
    """
    fm, x = prepare(model, x)
    n = check_count(n, "n")
    p = check_real(p, "p", what=" in (0, 1)")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p is the probability of keeping a cell and must be in (0, 1), got "
                         f"{p!r}")
    batch, _, height, width = x.shape
    rows, cols = _grid(cells, height, width)
    g = check_generator(generator, x)
    cell_h, cell_w = math.ceil(height / rows), math.ceil(width / cols)
    grids = (torch.rand(n, 1, rows, cols, generator=g, device=x.device) < p).to(x.dtype)
    shift_h = torch.randint(0, cell_h, (n,), generator=g, device=x.device)
    shift_w = torch.randint(0, cell_w, (n,), generator=g, device=x.device)
    up = ((rows + 1) * cell_h, (cols + 1) * cell_w)
    pix_h = torch.arange(height, device=x.device)
    pix_w = torch.arange(width, device=x.device)

    def masks(first: int, stop: int) -> torch.Tensor:
        """The full-size masks ``first..stop - 1``: ``(m, H, W)``."""
        big = F.interpolate(grids[first:stop], size=up, mode="bilinear", align_corners=False)
        r = (shift_h[first:stop, None] + pix_h)[:, :, None]
        c = (shift_w[first:stop, None] + pix_w)[:, None, :]
        return big[torch.arange(stop - first, device=x.device)[:, None, None], 0, r, c]

    bs = pass_size(fm, x, batch_size)
    total = batch * n
    with guarded(fm), torch.no_grad(), progress_bar(total, progress, "rise") as bar:
        t, _ = bind_scores(fm, x, target, bs)
        saliency = x.new_zeros((batch, *(() if t.k is None else (t.k,)), height * width))
        # Mask-major order: a pass holds consecutive masks, each made once for its images,
        # and its scores are added to the maps at once (no mask outlives its pass).
        for part in chunks(total, bs):
            index = torch.arange(part.start, part.stop, device=x.device)
            mask, image = index // batch, index % batch
            first = part.start // batch
            made = masks(first, (part.stop - 1) // batch + 1)[mask - first]  # (m, H, W)
            ti = t.take(image)
            scores = scores_of(ti, model_output(fm, pass_layout(fm, x[image] * made[:, None]), ti))
            flat = made.flatten(1)
            saliency.index_add_(0, image, flat[:, None] * scores[..., None] if t.k is not None
                                else flat * scores[:, None])
            bar.update(part.stop - part.start)
    saliency = saliency.view(*saliency.shape[:-1], height, width) / (n * p)
    return saliency[:, None] if t.k is None else saliency[:, :, None]
