"""Complexity of an explanation: how many pixels does it need?

- :func:`complexity` (Bhatt et al., "Evaluating and Aggregating Feature-based Model
  Explanations", IJCAI 2020): the Shannon entropy of the absolute map normalized to sum to one.
  Lower is simpler; a uniform map of ``N`` pixels scores ``log N``, a one-pixel map 0.
- :func:`effective_complexity` (Nguyen & Martinez, "On Quantitative Aspects of Model
  Interpretability", 2020): the number of pixels whose absolute value, relative to the map's
  largest, exceeds ``eps``. Lower is simpler.

:func:`~netlens.metrics.sparseness` (the Gini index) is the third complexity metric; it lives in
:mod:`~netlens.metrics.robustness`. Each takes an attribution ``(B, C, H, W)`` or a map
``(B, 1, H, W)``, read as one map per image by :func:`~netlens.metrics.saliency_map`, and
returns ``(B,)`` float64.
"""

from __future__ import annotations

import torch

from ._maps import Reduce, check_attr, saliency_map

__all__ = ["complexity", "effective_complexity"]


def complexity(attr: torch.Tensor, *, reduce: Reduce = "auto") -> torch.Tensor:
    """The entropy ``-sum p log p`` of ``p = |m| / sum |m|`` per map ``m`` (natural log).

    Args:
        attr: ``(B, C, H, W)`` attributions or ``(B, 1, H, W)`` maps.
        reduce: how ``attr`` becomes one map (:func:`~netlens.metrics.saliency_map`).

    Returns:
        ``(B,)`` float64 in ``[0, log(H * W)]``; an all-zero map scores 0.

    Raises:
        ValueError: ``attr`` not ``(B, C, H, W)``, or NaN in it.

    Example:
        >>> round(complexity(torch.ones(1, 1, 2, 2)).item(), 4)  # log 4
        1.3863
    """
    check_attr(attr)
    a = saliency_map(attr, reduce).flatten(1).double().abs()
    total = a.sum(1, keepdim=True)
    p = a / torch.where(total > 0, total, torch.ones_like(total))
    return -torch.special.xlogy(p, p).sum(1)


def effective_complexity(attr: torch.Tensor, *, eps: float = 1e-5,
                         reduce: Reduce = "auto") -> torch.Tensor:
    """The count of pixels with ``|m| / max |m| > eps`` per map ``m``.

    Args:
        attr: ``(B, C, H, W)`` attributions or ``(B, 1, H, W)`` maps.
        eps: the threshold on the map scaled to a largest absolute value of 1.
        reduce: how ``attr`` becomes one map (:func:`~netlens.metrics.saliency_map`).

    Returns:
        ``(B,)`` float64 counts in ``[0, H * W]``; an all-zero map counts 0.

    Raises:
        ValueError: ``attr`` not ``(B, C, H, W)``, NaN in it, or a negative ``eps``.

    Example:
        >>> effective_complexity(torch.tensor([[[[0.0, 1e-7, 0.5, 1.0]]]])).tolist()
        [2.0]
    """
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0 (a threshold on the map scaled to max 1), got {eps!r}")
    check_attr(attr)
    a = saliency_map(attr, reduce).flatten(1).double().abs()
    top = a.amax(1, keepdim=True)
    scaled = a / torch.where(top > 0, top, torch.ones_like(top))
    return (scaled > eps).sum(1).double()
