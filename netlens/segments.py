"""Segmentations of images into regions, the features of the black-box perturbation methods
(feature ablation, LIME, KernelSHAP, Shapley value sampling).

A segmentation is an integer tensor ``(B or 1, 1 or C, H, W)`` (Captum's ``feature_mask``): the
pixels with one value form one region; a leading 1 shares the regions between the images of the
batch, a channel axis of 1 shares them between the channels. :func:`grid` always works;
:func:`slic`, :func:`quickshift` and :func:`felzenszwalb` run scikit-image's superpixel
algorithms (an optional dependency: ``pip install scikit-image``, or the extra
``netlens[segments]``). :func:`as_segments` checks a segmentation against a batch and numbers
its regions ``0..S-1``; :func:`paint` writes one value per region back onto its pixels.

Example:
    >>> grid(torch.zeros(1, 3, 4, 6), cells=2)[0, 0]
    tensor([[0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [2, 2, 2, 3, 3, 3],
            [2, 2, 2, 3, 3, 3]])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, Union

import torch

__all__ = ["grid", "slic", "quickshift", "felzenszwalb", "as_segments", "paint", "SegmentsLike"]

Cells = Union[int, tuple[int, int]]
SegmentsLike = Union[torch.Tensor, int, None]


def _cells(cells: Cells, height: int, width: int) -> tuple[int, int]:
    pair = (cells, cells) if isinstance(cells, int) else cells
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in pair)):
        raise ValueError(f"cells must be an int or a pair (rows, cols) of ints, got {cells!r}")
    if min(pair) < 1:
        raise ValueError(f"cells must be positive, got {cells!r}")
    if pair[0] > height or pair[1] > width:
        raise ValueError(f"cells {tuple(pair)} exceed the image size ({height}, {width}): "
                         "choose at most one cell per pixel")
    return int(pair[0]), int(pair[1])


def grid(x: torch.Tensor, cells: Cells = 7) -> torch.Tensor:
    """A grid of ``rows x cols`` rectangular regions over ``x``'s images, numbered row by row.

    Args:
        x: images ``(B, C, H, W)`` (only the size and device are read).
        cells: the number of cells per side, an int or ``(rows, cols)``; cell ``i`` of ``n``
            along a side of ``L`` pixels holds pixels ``[floor(i L / n), floor((i + 1) L / n))``.

    Returns:
        ``(1, 1, H, W)`` int64 region numbers ``0..rows * cols - 1``, on ``x``'s device.

    Raises:
        ValueError: ``x`` is not ``(B, C, H, W)``; malformed cells or more cells than pixels.

    Example:
        >>> grid(torch.zeros(1, 1, 2, 3), cells=(1, 3))
        tensor([[[[0, 1, 2],
                  [0, 1, 2]]]])
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("grid needs images (B, C, H, W)")
    height, width = int(x.shape[2]), int(x.shape[3])
    rows, cols = _cells(cells, height, width)
    r = torch.arange(height, device=x.device) * rows // height
    c = torch.arange(width, device=x.device) * cols // width
    return (r[:, None] * cols + c[None, :])[None, None]


def _skimage(function: str) -> ModuleType:
    try:
        return importlib.import_module("skimage.segmentation")
    except ImportError as e:
        raise ImportError(f"netlens.segments.{function} needs scikit-image, which is not "
                          "installed: pip install scikit-image (or the optional extra: pip "
                          "install 'netlens[segments]'); netlens.segments.grid needs nothing"
                          ) from e


def _per_image(x: torch.Tensor, segment: Callable[[Any], Any]) -> torch.Tensor:
    """``segment`` (an ``(H, W, C)`` float64 array -> ``(H, W)`` labels) on each image,
    renumbered ``0..S-1`` per image, as ``(B, 1, H, W)`` int64 on ``x``'s device."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("superpixels need images (B, C, H, W)")
    images = x.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    labels = []
    for image in images:
        lab = torch.as_tensor(segment(image)).long()
        labels.append(torch.unique(lab, return_inverse=True)[1])
    return torch.stack(labels)[:, None].to(x.device)


def slic(x: torch.Tensor, *, n_segments: int = 50, compactness: float = 10.0,
         **options: Any) -> torch.Tensor:
    """SLIC superpixels (Achanta et al., TPAMI 2012) of each image, by scikit-image.

    Args:
        x: images ``(B, C, H, W)``, best raw pixels in [0, 1] (``compactness`` weighs colour
            distances on that scale).
        n_segments: about how many superpixels per image.
        compactness: colour against space: higher gives squarer superpixels.
        **options: further keywords of ``skimage.segmentation.slic``.

    Returns:
        ``(B, 1, H, W)`` int64 region numbers ``0..S_b-1`` per image, on ``x``'s device.

    Raises:
        ImportError: scikit-image is not installed (``pip install scikit-image``).

    Example:
        >>> slic(torch.rand(1, 3, 32, 32), n_segments=4).shape  # doctest: +SKIP
        torch.Size([1, 1, 32, 32])
    """
    seg = _skimage("slic")
    return _per_image(x, lambda im: seg.slic(im, n_segments=n_segments, compactness=compactness,
                                             channel_axis=-1, start_label=0, **options))


def quickshift(x: torch.Tensor, *, kernel_size: float = 4.0, max_dist: float = 10.0,
               ratio: float = 0.5, **options: Any) -> torch.Tensor:
    """Quickshift superpixels (Vedaldi & Soatto, ECCV 2008; LIME's image segmentation), by
    scikit-image.

    Args:
        x: RGB images ``(B, 3, H, W)`` in [0, 1] (quickshift works in the Lab colour space).
        kernel_size: the width of the Gaussian kernel of the density estimate.
        max_dist: the cut-off distance of the data: higher gives fewer, larger segments.
        ratio: colour against space, in [0, 1].
        **options: further keywords of ``skimage.segmentation.quickshift``.

    Returns:
        ``(B, 1, H, W)`` int64 region numbers ``0..S_b-1`` per image, on ``x``'s device.

    Raises:
        ImportError: scikit-image is not installed (``pip install scikit-image``).

    Example:
        >>> quickshift(torch.rand(1, 3, 32, 32)).shape  # doctest: +SKIP
        torch.Size([1, 1, 32, 32])
    """
    seg = _skimage("quickshift")
    return _per_image(x, lambda im: seg.quickshift(im, kernel_size=kernel_size,
                                                   max_dist=max_dist, ratio=ratio, **options))


def felzenszwalb(x: torch.Tensor, *, scale: float = 100.0, sigma: float = 0.5,
                 min_size: int = 50, **options: Any) -> torch.Tensor:
    """Felzenszwalb & Huttenlocher's graph-based segments (IJCV 2004) of each image, by
    scikit-image.

    Args:
        x: images ``(B, C, H, W)``.
        scale: higher gives larger segments.
        sigma: the width of the Gaussian smoothing before segmenting.
        min_size: the smallest segment, in pixels.
        **options: further keywords of ``skimage.segmentation.felzenszwalb``.

    Returns:
        ``(B, 1, H, W)`` int64 region numbers ``0..S_b-1`` per image, on ``x``'s device.

    Raises:
        ImportError: scikit-image is not installed (``pip install scikit-image``).

    Example:
        >>> felzenszwalb(torch.rand(1, 3, 32, 32)).shape  # doctest: +SKIP
        torch.Size([1, 1, 32, 32])
    """
    seg = _skimage("felzenszwalb")
    return _per_image(x, lambda im: seg.felzenszwalb(im, scale=scale, sigma=sigma,
                                                     min_size=min_size, channel_axis=-1,
                                                     **options))


def as_segments(segments: SegmentsLike, x: torch.Tensor, name: str = "segments",
                ) -> tuple[torch.Tensor, int]:
    """A segmentation checked against the images ``x``, its regions numbered ``0..S-1``.

    Args:
        segments: an int tensor ``(B or 1, 1 or C, H, W)``; an int ``n``: ``grid(x, n)``;
            None: ``grid(x)``.
        x: the images ``(B, C, H, W)``.
        name: the argument's name, for the errors.

    Returns:
        ``(labels, S)``: ``labels`` int64 on ``x``'s device, the mask's distinct values
        replaced by their rank (so region ``s`` is the ``s``-th smallest value), and ``S``.

    Raises:
        TypeError: not an integer tensor.
        ValueError: the wrong shape, or negative values.
    """
    if segments is None or (isinstance(segments, int) and not isinstance(segments, bool)):
        return as_segments(grid(x) if segments is None else grid(x, segments), x, name)
    if not isinstance(segments, torch.Tensor) or segments.is_floating_point() \
            or segments.is_complex() or segments.dtype == torch.bool:
        what = segments.dtype if isinstance(segments, torch.Tensor) else type(segments).__name__
        raise TypeError(f"{name} must be an integer tensor (B or 1, 1 or C, H, W) of region "
                        f"numbers (or an int: that many grid cells per side), got {what}")
    batch, channels, height, width = x.shape
    shape = tuple(segments.shape)
    if (len(shape) != 4 or shape[0] not in (1, batch) or shape[1] not in (1, channels)
            or shape[2:] != (height, width)):
        raise ValueError(f"{name} has shape {shape} but the input is {tuple(x.shape)}: give "
                         f"({batch} or 1, {channels} or 1, {height}, {width}) region numbers")
    if segments.numel() and int(segments.min()) < 0:
        raise ValueError(f"{name} holds negative region numbers; number regions from 0")
    ids, labels = torch.unique(segments.to(x.device), return_inverse=True)
    return labels.long(), int(ids.numel())


def paint(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One value per region written onto the region's pixels.

    Args:
        values: ``(B, S)``, or ``(B, K, S)`` for K targets.
        labels: ``(B or 1, Cm, H, W)`` region numbers ``0..S-1`` (from :func:`as_segments`).

    Returns:
        ``(B, Cm, H, W)``, or ``(B, K, Cm, H, W)``, ``values``' dtype.

    Example:
        >>> paint(torch.tensor([[1.0, 2.0]]), torch.tensor([[[[0, 1, 1]]]]))
        tensor([[[[1., 2., 2.]]]])
    """
    batch = values.shape[0]
    lab = labels.expand(batch, *labels.shape[1:]).reshape(batch, -1)
    if values.dim() == 2:
        return values.gather(1, lab).view(batch, *labels.shape[1:])
    k = values.shape[1]
    out = values.gather(2, lab[:, None].expand(batch, k, lab.shape[1]))
    return out.view(batch, k, *labels.shape[1:])
