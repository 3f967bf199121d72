"""Localization: does the explanation point at the object, when its mask (or box) is known?

- :func:`pointing_game` (Zhang et al., "Top-down Neural Attention by Excitation Backprop",
  ECCV 2016): the map's maximum lies in the object (optionally within ``tolerance`` pixels).
- :func:`relevance_mass` (Arras et al., "CLEVR-XAI", Information Fusion 2022): the share of the
  map's positive relevance that falls inside the object.
- :func:`relevance_rank` (Arras et al. 2022): of the ``K`` highest-ranked pixels, ``K`` being the
  object's pixel count, the share inside the object.

Each takes an attribution ``(B, C, H, W)`` or a map ``(B, 1, H, W)`` (read through
:func:`~netlens.metrics.saliency_map`), masks ``(B, 1, H, W)`` or ``(B, H, W)`` (bool or 0/1; see
:func:`~netlens.metrics.boxes_to_masks` for boxes) and returns one value per image, ``(B,)``
float64, 1.0 being perfect. A uniform random map scores about the object's area fraction on
relevance mass and rank, and about that fraction on the pointing game too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._maps import Reduce, check_attr, check_masks, saliency_map

__all__ = ["pointing_game", "relevance_mass", "relevance_rank"]


def _prepare(attr: torch.Tensor, masks: torch.Tensor,
             reduce: Reduce) -> tuple[torch.Tensor, torch.Tensor]:
    check_attr(attr)
    m = saliency_map(attr, reduce).double()
    return m.flatten(1), check_masks(masks, m).flatten(1)


def pointing_game(attr: torch.Tensor, masks: torch.Tensor, *, tolerance: int = 0,
                  reduce: Reduce = "auto") -> torch.Tensor:
    """1.0 per image whose map has its maximum inside the object, else 0.0.

    Args:
        attr: ``(B, C, H, W)`` attributions or ``(B, 1, H, W)`` maps.
        masks: the objects, ``(B, 1, H, W)`` or ``(B, H, W)``.
        tolerance: also count a maximum within this many pixels (Chebyshev distance) of the
            object as a hit (Zhang et al. used 15 pixels at 224).
        reduce: how ``attr`` becomes one map (:func:`~netlens.metrics.saliency_map`).

    Returns:
        ``(B,)`` float64 of 0.0 and 1.0. With several maxima, the first in row-major order counts.

    Raises:
        ValueError: masks whose shape does not match ``attr``, an empty mask, a negative
            ``tolerance``.

    Example:
        >>> m = torch.zeros(1, 1, 3, 3); m[0, 0, 1, 1] = 1
        >>> pointing_game(m, m.bool()).tolist()
        [1.0]
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be an int >= 0 (pixels), got {tolerance!r}")
    flat, inside = _prepare(attr, masks, reduce)
    if tolerance:
        h, w = attr.shape[2:]
        grown = F.max_pool2d(inside.view(-1, 1, h, w).double(), 2 * tolerance + 1, stride=1,
                             padding=tolerance)
        inside = grown.flatten(1) > 0
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
