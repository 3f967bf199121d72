"""Localization: does the explanation point at the object, when its mask (or box) is known?

- :func:`pointing_game` (Zhang et al., "Top-down Neural Attention by Excitation Backprop",
  ECCV 2016): the map's maximum lies in the object (optionally within ``tolerance`` pixels).
- :func:`relevance_mass` (Arras et al., "CLEVR-XAI", Information Fusion 2022): the share of the
  map's positive relevance that falls inside the object.
- :func:`relevance_rank` (Arras et al. 2022): of the ``K`` highest-ranked pixels, ``K`` being the
  object's pixel count, the share inside the object.
- :func:`top_k_intersection` (Theiner et al., "Interpretable Semantic Photo Geolocation", WACV
  2022): of the ``k`` highest-ranked pixels (a fixed ``k``), the share inside the object.
- :func:`attribution_localisation` (Kohlbrenner et al., "Towards Best Practice in Explaining
  Neural Network Decisions with LRP", IJCNN 2020): the share of the absolute map inside the
  object, optionally weighted by the object's area fraction.
- :func:`auc` (Fawcett, "An introduction to ROC analysis", 2006): the area under the ROC curve of
  the map as a score of "pixel in the object".
- :func:`focus` (Arias-Duart et al., "Focus! Rating XAI Methods and Finding Biases", FUZZ-IEEE
  2022): on a :func:`mosaic` of four images, the share of the positive relevance that lies on
  the quadrants of the target class.

Each takes an attribution ``(B, C, H, W)`` or a map ``(B, 1, H, W)`` (read through
:func:`~netlens.metrics.saliency_map`), masks ``(B, 1, H, W)`` or ``(B, H, W)`` (bool or 0/1; see
:func:`~netlens.metrics.boxes_to_masks` for boxes) and returns one value per image, ``(B,)``
float64, 1.0 being perfect. A uniform random map scores about the object's area fraction on
relevance mass and rank, and about that fraction on the pointing game too.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ._maps import Reduce, check_attr, check_masks, ranks, saliency_map

__all__ = ["pointing_game", "relevance_mass", "relevance_rank", "top_k_intersection",
           "attribution_localisation", "auc", "focus", "mosaic"]


def _prepare(attr: torch.Tensor, masks: torch.Tensor,
             reduce: Reduce) -> tuple[torch.Tensor, torch.Tensor]:
    check_attr(attr)
    m = saliency_map(attr, reduce).double()
    return m.flatten(1), check_masks(masks, m).flatten(1)


def pointing_game(attr: torch.Tensor, masks: torch.Tensor, *, tolerance: int = 0,
                  ties: Literal["first", "share"] = "first",
                  reduce: Reduce = "auto") -> torch.Tensor:
    """1.0 per image whose map has its maximum inside the object, else 0.0.

    Args:
        attr: ``(B, C, H, W)`` attributions or ``(B, 1, H, W)`` maps.
        masks: the objects, ``(B, 1, H, W)`` or ``(B, H, W)``.
        tolerance: also count a maximum within this many pixels (Chebyshev distance) of the
            object as a hit (Zhang et al. used 15 pixels at 224).
        ties: what a map with several maximal pixels scores. ``"first"`` (Zhang et al.,
            TorchRay, Quantus): the first of them in row-major order decides. ``"share"``: the
            share of them inside the object, the hit rate expected when the tie is broken at
            random. A map that is flat on a region (XRAI, an extremal mask, a map painted per
            superpixel) scores by its region's top-left pixel under ``"first"``, which lies
            outside a small object more often than not; both rules agree on a map with one
            maximum.
        reduce: how ``attr`` becomes one map (:func:`~netlens.metrics.saliency_map`).

    Returns:
        ``(B,)`` float64: 0.0 and 1.0 under ``ties="first"``, in ``[0, 1]`` under ``"share"``.

    Raises:
        ValueError: masks whose shape does not match ``attr``, an empty mask, a negative
            ``tolerance``, an unknown ``ties``.

    Example:
        >>> m = torch.zeros(1, 1, 3, 3); m[0, 0, 1, 1] = 1
        >>> pointing_game(m, m.bool()).tolist()
        [1.0]
        >>> flat = torch.ones(1, 1, 2, 2)  # four tied maxima, one of them in the object
        >>> obj = torch.tensor([[[[False, False], [False, True]]]])
        >>> pointing_game(flat, obj).tolist(), pointing_game(flat, obj, ties="share").tolist()
        ([0.0], [0.25])
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be an int >= 0 (pixels), got {tolerance!r}")
    if ties not in ("first", "share"):
        raise ValueError(f"ties must be 'first' (the first maximum in row-major order decides) "
                         f"or 'share' (the share of tied maxima inside the object), got {ties!r}")
    flat, inside = _prepare(attr, masks, reduce)
    if tolerance:
        h, w = attr.shape[2:]
        grown = F.max_pool2d(inside.view(-1, 1, h, w).double(), 2 * tolerance + 1, stride=1,
                             padding=tolerance)
        inside = grown.flatten(1) > 0
    if ties == "share":
        top = flat == flat.max(1, keepdim=True).values
        return (top & inside).sum(1).double() / top.sum(1).double()
    return inside.gather(1, flat.argmax(1, keepdim=True))[:, 0].double()


def relevance_mass(attr: torch.Tensor, masks: torch.Tensor, *,
                   reduce: Reduce = "auto") -> torch.Tensor:
    """The share of each map's positive relevance that lies inside the object.

    ``sum(R+ in mask) / sum(R+)``; a map with no positive relevance scores 0.0.

    Returns:
        ``(B,)`` float64 in ``[0, 1]``.

    Raises:
        ValueError: as :func:`pointing_game`.

    Example:
        >>> m = torch.tensor([[[[3.0, 1.0]]]])
        >>> relevance_mass(m, torch.tensor([[[[True, False]]]])).tolist()
        [0.75]
    """
    flat, inside = _prepare(attr, masks, reduce)
    positive = flat.clamp(min=0)
    total = positive.sum(1)
    mass = (positive * inside).sum(1)
    return torch.where(total > 0, mass / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.zeros_like(total))


def relevance_rank(attr: torch.Tensor, masks: torch.Tensor, *,
                   reduce: Reduce = "auto") -> torch.Tensor:
    """Relevance rank accuracy: of the ``K`` highest pixels of each map (``K`` = the object's
    pixel count), the share inside the object.

    Returns:
        ``(B,)`` float64 in ``[0, 1]``. Ties at the K-th value are broken by position.

    Raises:
        ValueError: as :func:`pointing_game`.

    Example:
        >>> m = torch.tensor([[[[3.0, 1.0, 2.0]]]])
        >>> relevance_rank(m, torch.tensor([[[[True, True, False]]]])).tolist()
        [0.5]
    """
    flat, inside = _prepare(attr, masks, reduce)
    sizes = inside.sum(1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    top = rank < sizes[:, None]
    return (top & inside).sum(1).double() / sizes.double()


def top_k_intersection(attr: torch.Tensor, masks: torch.Tensor, *, k: int = 1000,
                       concept_influence: bool = False, reduce: Reduce = "auto") -> torch.Tensor:
    """Of the ``k`` highest pixels of each map, the share inside the object.

    Args:
        attr: ``(B, C, H, W)`` attributions or ``(B, 1, H, W)`` maps.
        masks: the objects, ``(B, 1, H, W)`` or ``(B, H, W)``.
        k: how many top pixels, ``1 <= k <= H * W``.
        concept_influence: divide by the object's area fraction (``* H * W / |mask|``), so that
            a map no better than chance scores about 1.
        reduce: how ``attr`` becomes one map (:func:`~netlens.metrics.saliency_map`).

    Returns:
        ``(B,)`` float64 in ``[0, 1]`` (without ``concept_influence``). Ties at the ``k``-th
        value are broken by position.

    Raises:
        ValueError: as :func:`pointing_game`, or ``k`` out of ``[1, H * W]``.

    Example:
        >>> m = torch.tensor([[[[3.0, 1.0, 2.0, 0.0]]]])
        >>> top_k_intersection(m, torch.tensor([[[[True, True, False, False]]]]), k=2).tolist()
        [0.5]
    """
    flat, inside = _prepare(attr, masks, reduce)
    n = flat.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in [1, {n}] (the pixels of a map), got {k!r}")
    top = flat.argsort(dim=1, descending=True, stable=True)[:, :k]
    share = inside.gather(1, top).double().mean(1)
    if concept_influence:
        share = share * n / inside.sum(1).double()
    return share


def attribution_localisation(attr: torch.Tensor, masks: torch.Tensor, *, weighted: bool = False,
                             positive: bool = False, reduce: Reduce = "auto") -> torch.Tensor:
    """The share of each absolute map inside the object: ``sum(|m| in mask) / sum(|m|)``.

    Args:
        attr: ``(B, C, H, W)`` attributions or ``(B, 1, H, W)`` maps.
        masks: the objects, ``(B, 1, H, W)`` or ``(B, H, W)``.
        weighted: multiply by the object's area fraction ``|mask| / (H * W)`` (Kohlbrenner et
            al.'s weighted variant, which favours large objects less).
        positive: count only the positive part of the map instead of its absolute value.
        reduce: how ``attr`` becomes one map (:func:`~netlens.metrics.saliency_map`).

    Returns:
        ``(B,)`` float64 in ``[0, 1]``; a map of zeros scores 0.0.

    Raises:
        ValueError: as :func:`pointing_game`.

    Example:
        >>> m = torch.tensor([[[[3.0, -1.0]]]])
        >>> attribution_localisation(m, torch.tensor([[[[True, False]]]])).tolist()
        [0.75]
    """
    flat, inside = _prepare(attr, masks, reduce)
    a = flat.clamp(min=0) if positive else flat.abs()
    total = a.sum(1)
    share = (a * inside).sum(1) / torch.where(total > 0, total, torch.ones_like(total))
    if weighted:
        share = share * inside.sum(1).double() / flat.shape[1]
    return share


def auc(attr: torch.Tensor, masks: torch.Tensor, *, reduce: Reduce = "auto") -> torch.Tensor:
    """The ROC AUC of each map as a detector of the object's pixels: the chance that a random
    object pixel scores above a random background pixel (ties count one half).

    Returns:
        ``(B,)`` float64 in ``[0, 1]``, 0.5 for chance; nan for a mask that covers the image
        (no background pixel to compare with).

    Raises:
        ValueError: as :func:`pointing_game`.

    Example:
        >>> m = torch.tensor([[[[3.0, 1.0, 2.0, 1.0]]]])
        >>> auc(m, torch.tensor([[[[True, False, False, True]]]])).tolist()
        [0.625]
    """
    flat, inside = _prepare(attr, masks, reduce)
    r = ranks(flat) + 1  # 1-based average ranks
    pos = inside.sum(1).double()
    neg = flat.shape[1] - pos
    u = (r * inside).sum(1) - pos * (pos + 1) / 2
    return u / (pos * neg)


def mosaic(tiles: torch.Tensor) -> torch.Tensor:
    """Four images per mosaic, ``(B, 4, C, H, W)``, tiled 2 x 2 in row-major order (top-left,
    top-right, bottom-left, bottom-right) into ``(B, C, 2H, 2W)``, for :func:`focus`.

    Example:
        >>> mosaic(torch.arange(4.0).view(1, 4, 1, 1, 1))[0, 0].tolist()
        [[0.0, 1.0], [2.0, 3.0]]
    """
    if not isinstance(tiles, torch.Tensor) or tiles.dim() != 5 or tiles.shape[1] != 4:
        got = tuple(tiles.shape) if isinstance(tiles, torch.Tensor) else type(tiles).__name__
        raise ValueError(f"tiles must have shape (B, 4, C, H, W): four images per mosaic, got "
                         f"{got}")
    top = torch.cat([tiles[:, 0], tiles[:, 1]], dim=-1)
    bottom = torch.cat([tiles[:, 2], tiles[:, 3]], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def focus(attr: torch.Tensor, quadrants: torch.Tensor, *, reduce: Reduce = "auto") -> torch.Tensor:
    """The share of each mosaic's positive relevance on the quadrants that show the target class.

    Explain a :func:`mosaic` of four images, some of the target class, for that class: a
    faithful explanation puts its relevance on those images only.

    Args:
        attr: ``(B, C, 2H, 2W)`` attributions or ``(B, 1, 2H, 2W)`` maps of the mosaics.
        quadrants: ``(B, 4)`` bools (or 0/1), which tiles are of the target class, in
            :func:`mosaic`'s order (top-left, top-right, bottom-left, bottom-right). With an odd
            side the middle row / column belongs to the bottom / right tiles.
        reduce: how ``attr`` becomes one map (:func:`~netlens.metrics.saliency_map`).

    Returns:
        ``(B,)`` float64 in ``[0, 1]``; a map with no positive relevance scores 0.0.

    Raises:
        ValueError: ``quadrants`` not ``(B, 4)`` of 0/1, or no target tile in a mosaic.

    Example:
        >>> m = torch.tensor([[[[3.0, 1.0], [0.0, -2.0]]]])
        >>> focus(m, torch.tensor([[True, False, False, True]])).tolist()
        [0.75]
    """
    check_attr(attr)
    m = saliency_map(attr, reduce).double()
    q = torch.as_tensor(quadrants).to(m.device)
    if q.shape != (m.shape[0], 4) or not bool(((q == 0) | (q == 1)).all()):
        raise ValueError(f"quadrants must be (B, 4) = ({m.shape[0]}, 4) bools, which tiles of "
                         f"each mosaic show the target class, got {tuple(q.shape)}")
    q = q != 0
    if not bool(q.any(1).all()):
        raise ValueError("a mosaic has no tile of the target class; focus needs at least one")
    h, w = m.shape[2] // 2, m.shape[3] // 2
    weights = torch.zeros_like(m)
    corners = [(slice(None, h), slice(None, w)), (slice(None, h), slice(w, None)),
               (slice(h, None), slice(None, w)), (slice(h, None), slice(w, None))]
    for i, (rows, cols) in enumerate(corners):
        weights[:, 0, rows, cols] = q[:, i, None, None].double()
    positive = m.clamp(min=0).flatten(1)
    total = positive.sum(1)
    on = (positive * weights.flatten(1)).sum(1)
    return on / torch.where(total > 0, total, torch.ones_like(total))
