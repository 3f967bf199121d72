"""XRAI: regions of several over-segmentations, ranked by the density of an attribution and
merged greedily, each pixel valued by the gain of the region that first covered it.

Kapishnikov, Bolukbasi, Viégas & Terry, "XRAI: Better Attributions Through Regions", ICCV 2019
(PAIR's ``saliency.core.XRAI``). An input attribution (integrated gradients by default, from
black and white baselines averaged; any registered method, function or precomputed tensor) is
reduced to one value per pixel by its maximum over channels. Starting from nothing, XRAI adds
at each step the candidate region with the largest mean attribution over its pixels not yet
covered (its *gain*); candidates adding fewer than ``min_pixels`` new pixels are dropped. Every
pixel takes the gain of the step that covered it; pixels no candidate covers take the mean
attribution over them. The candidates are the regions of Felzenszwalb segmentations at six
scales (50 to 1200), each dilated by a disk of 5 pixels, or the regions of the segmentations
given.

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> xrai(m, torch.rand(1, 3, 32, 32), 3, options={"steps": 4}).shape  # doctest: +SKIP
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import segments as seg
from .._runtime import check_count, guarded, prepare
from ..targets import TargetLike

__all__ = ["xrai", "xrai_regions"]

XraiAttribution = Union[str, Callable[..., torch.Tensor], torch.Tensor]
SegmentsArg = Union[torch.Tensor, Sequence[torch.Tensor], None]

# PAIR's Felzenszwalb scales, smoothing and minimum segment size, and its dilation radius
_SCALES, _SIGMA, _MIN_SIZE = (50, 100, 150, 250, 500, 1200), 0.8, 150


def _dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Boolean masks ``(M, H, W)`` dilated by a disk of ``radius`` pixels."""
    if radius == 0 or masks.shape[0] == 0:
        return masks
    r = torch.arange(-radius, radius + 1, device=masks.device)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2).to(torch.float32)
    out = F.conv2d(masks[:, None].to(torch.float32), disk[None, None], padding=radius)
    return out[:, 0] > 0.5


def _candidates(x: torch.Tensor, segments: SegmentsArg, dilation: int) -> list[torch.Tensor]:
    """Per image, the candidate regions as boolean masks ``(M, H, W)``."""
    if segments is None:
        segs = [seg.felzenszwalb(x, scale=s, sigma=_SIGMA, min_size=_MIN_SIZE) for s in _SCALES]
    else:
        segs = [segments] if isinstance(segments, torch.Tensor) else list(segments)
        if not segs:
            raise ValueError("segments must hold at least one segmentation")
        dilation = 0  # the caller's regions as given (PAIR dilates only its own)
    out = []
    for b in range(x.shape[0]):
        masks = []
        for s in segs:
            labels, count = seg.as_segments(s, x, "segments")
            if labels.shape[1] != 1:
                raise ValueError(f"each segmentation must be (B or 1, 1, H, W): one region map "
                                 f"per image, got {tuple(labels.shape)}")
            lab = labels[b if labels.shape[0] > 1 else 0, 0]
            masks.append(lab[None] == torch.unique(lab)[:, None, None])
        out.append(_dilate(torch.cat(masks), dilation))
    return out


def xrai_regions(attr: torch.Tensor, masks: torch.Tensor, min_pixels: int = 50,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """XRAI's greedy merge for one map: the per-pixel gains and ranks.

    Args:
        attr: ``(H, W)`` attribution.
        masks: ``(M, H, W)`` boolean candidate regions.
        min_pixels: candidates adding fewer new pixels are dropped.

    Returns:
        ``(gains, ranks)``, both ``(H, W)``: each pixel's gain (the mean attribution of the
        new pixels of the region that covered it) and the rank of that region by gain (1 the
        highest; the uncovered rest ranks last), as PAIR's ``attr_map`` and integer
        ``attr_ranks``.

    Example:
        >>> a = torch.tensor([[1.0, 0.0, 3.0]])
        >>> m = torch.tensor([[[True, True, False]], [[False, False, True]]])
        >>> xrai_regions(a, m, min_pixels=1)[0]
        tensor([[0.5000, 0.5000, 3.0000]])
    """
    flat = masks.flatten(1).to(attr.dtype)  # (M, P)
    values = attr.flatten()
    counts = flat.sum(1)  # new pixels each candidate would add
    sums = flat @ values  # their attribution
    alive = torch.ones(masks.shape[0], dtype=torch.bool, device=attr.device)
    covered = torch.zeros_like(values, dtype=torch.bool)
    gains = torch.full_like(values, float("-inf"))
    steps: list[tuple[torch.Tensor, float]] = []
    while True:
        alive &= counts >= min_pixels
        if not bool(alive.any()):
            break
        density = torch.where(alive & (counts > 0), sums / counts.clamp(min=1), float("-inf"))
        best = int(density.argmax())  # the first of equal gains, as PAIR's scan
        if density[best] == float("-inf"):
            break  # (min_pixels=0) only candidates that add nothing are left
        new = masks[best].flatten() & ~covered
        gain = float(density[best])
        gains[new] = gain
        steps.append((new, gain))
        covered |= new
        alive[best] = False
        counts = counts - flat[:, new].sum(1)
        sums = sums - flat[:, new] @ values[new]
    rest = ~covered
    if bool(rest.any()):
        gains[rest] = values[rest].mean()
    ranks = torch.zeros(values.shape, dtype=torch.long, device=attr.device)
    order = sorted(range(len(steps)), key=lambda i: -steps[i][1])  # stable: ties keep order
    for rank, i in enumerate(order):
        ranks[steps[i][0]] = rank + 1
    if bool(rest.any()):
        ranks[rest] = len(steps) + 1
    return gains.view(attr.shape), ranks.view(attr.shape)


def _base_attribution(model: nn.Module, x: torch.Tensor, target: TargetLike,
                      attribution: XraiAttribution, options: Mapping[str, Any] | None,
                      progress: bool | None) -> torch.Tensor:
    if isinstance(attribution, torch.Tensor):
        a = attribution.detach().to(dtype=x.dtype, device=x.device)
        if a.dim() not in (4, 5) or a.shape[0] != x.shape[0] or a.shape[-2:] != x.shape[2:]:
            raise ValueError(f"a precomputed attribution must be (B, [K,] C or 1, H, W) for the "
                             f"input {tuple(x.shape)}, got {tuple(attribution.shape)}")
        return a
    if isinstance(attribution, str):
        from . import METHODS  # the registry lists this module: import it when called

        if attribution not in METHODS or attribution == "xrai":
            raise ValueError(f"attribution must be a registered method (not 'xrai'), a function "
                             f"or a tensor, got {attribution!r}")
        name, fn = attribution, METHODS[attribution].fn
    elif callable(attribution):
        name, fn = getattr(attribution, "__name__", "attribution"), attribution
    else:
        raise TypeError(f"attribution must be a method name, a function or a tensor, got "
                        f"{type(attribution).__name__}")
    opts = dict(options or {})
    if "progress" in inspect.signature(fn).parameters:
        opts.setdefault("progress", progress)
    if name == "integrated_gradients" and "baseline" not in opts:
        # PAIR's default: IG from a black and a white image (each image's extremes), averaged
        lo = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
        hi = x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)
        return (fn(model, x, target, baseline=lo, **opts)
                + fn(model, x, target, baseline=hi, **opts)) / 2
    return fn(model, x, target, **opts)


def xrai(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    attribution: XraiAttribution = "integrated_gradients",
    options: Mapping[str, Any] | None = None,
    segments: SegmentsArg = None, min_pixels: int = 50, dilation: int = 5,
    output: Literal["gains", "ranks"] = "gains", progress: bool | None = None,
) -> torch.Tensor:
    """XRAI: regions ranked by attribution density and merged greedily (see the module doc).

    Kapishnikov et al., "XRAI: Better Attributions Through Regions", ICCV 2019.

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``; the default segmentation (Felzenszwalb, scikit-image)
            expects raw pixels.
        target: anything :func:`netlens.targets.as_target` accepts (None: the predicted class).
        attribution: the attribution that ranks the regions: a registered method's name
            (default ``"integrated_gradients"``, then from a black and a white baseline, each
            image's minimum and maximum, averaged, as PAIR's), a function ``f(model, x, target,
            **options)``, or a precomputed tensor ``(B, [K,] C or 1, H, W)``.
        options: keyword options of the attribution method (e.g. ``{"steps": 16}``).
        segments: the candidate regions: None (Felzenszwalb at scales 50, 100, 150, 250, 500,
            1200, sigma 0.8, min size 150, each region dilated by ``dilation``), or one or a
            sequence of integer segmentations ``(B or 1, 1, H, W)`` (:mod:`netlens.segments`),
            whose regions are all candidates, undilated.
        min_pixels: a candidate adding fewer new pixels is dropped (PAIR's 50).
        dilation: the radius in pixels of the disk dilating the default segments (PAIR's 5).
        output: ``"gains"`` (each pixel the gain of the region that covered it: higher is more
            important) or ``"ranks"`` (that region's rank by gain, 1 the most important, as a
            float; the uncovered rest ranks last).
        progress: passed to the attribution method when it takes it.

    Returns:
        ``(B, 1, H, W)`` (``(B, K, 1, H, W)`` for K targets), ``x``'s dtype and device.

    Raises:
        ValueError, TypeError: an unknown attribution, an attribution or segmentation of the
            wrong shape, a negative ``min_pixels`` or ``dilation``, a bad ``output``, input or
            target.
        ImportError: the default segments without scikit-image.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(48, 2)).eval()
        >>> cells = torch.arange(16).view(1, 1, 4, 4) // 8
        >>> xrai(lin, torch.rand(1, 3, 4, 4), 1, segments=cells, min_pixels=1).shape
        torch.Size([1, 1, 4, 4])
    """
    fm, x = prepare(model, x)
    min_pixels = check_count(min_pixels, "min_pixels", 0)
    dilation = check_count(dilation, "dilation", 0)
    if output not in ("gains", "ranks"):
        raise ValueError(f"output must be 'gains' or 'ranks', got {output!r}")
    masks = _candidates(x, segments, dilation)
    with guarded(fm):
        attr = _base_attribution(fm, x, target, attribution, options, progress)
    k_axis = attr.dim() == 5
    per_pixel = attr.amax(dim=-3)  # (B, [K,] H, W): PAIR's maximum over channels
    if not k_axis:
        per_pixel = per_pixel[:, None]
    out = torch.empty_like(per_pixel)
    for b in range(per_pixel.shape[0]):
        for j in range(per_pixel.shape[1]):
            gains, ranks = xrai_regions(per_pixel[b, j], masks[b], min_pixels)
            out[b, j] = gains if output == "gains" else ranks.to(out.dtype)
    return out[:, :, None] if k_axis else out
