"""Robustness and complexity of an explanation.

- :func:`max_sensitivity` (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations",
  NeurIPS 2019): the largest relative change of the explanation under small uniform input noise.
  Lower is better.
- :func:`sparseness` (Chalasani et al., "Concise Explanations of Neural Networks using
  Adversarial Training", ICML 2020): the Gini index of the absolute map. Higher is sparser.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._runtime import auto_batch_size, guarded, prepare
from .._util import progress_bar
from ..targets import TargetLike
from ._maps import (
    Method,
    Reduce,
    bind_single,
    call_method,
    check_attr,
    method_target,
    model_for,
    resolve_method,
    saliency_map,
)

__all__ = ["max_sensitivity", "sparseness"]


def max_sensitivity(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency", *,
    n: int = 8, radius: float = 0.02, options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None, progress: bool | None = None,
) -> torch.Tensor:
    """``max_k ||E(x + d_k) - E(x)|| / ||E(x)||`` per image, over ``n`` noise draws ``d_k``.

    Each ``d_k`` is uniform in ``[-r, r]`` per pixel, ``r = radius`` times the image's value
    range. The target is resolved once on ``x`` and kept for the noisy copies, so only the
    explanation can move. The explanation is recomputed ``n`` times, each on the whole batch.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: class per image; None: the predicted class.
        method: a name of :data:`~netlens.attribution.METHODS` (or ``"random"``, ``"centre"``),
            or a function ``f(model, x, target, **options)``.
        n: noise draws.
        radius: the noise's half-width as a fraction of each image's value range.
        options: keyword options of the method.
        generator: the noise's source (a fresh seed when None); also given to the method.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64; 0.0 for an explainer that ignores its input.

    Raises:
        ValueError: ``n < 1``, a negative radius, an unknown method, a bad input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> max_sensitivity(lin, torch.rand(2, 1, 2, 2), 0, "saliency", n=2).tolist()
        [0.0, 0.0]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1 (noise draws), got {n!r}")
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    _, fn = resolve_method(method)
    fm, x = prepare(model, x)
    with guarded(fm), torch.no_grad():
        targets = method_target(bind_single(fm, x, target, auto_batch_size(fm, x, backward=False)))
    gen = generator
    if gen is None:
        gen = torch.Generator(device=x.device)
        gen.seed()
    opts = dict(options or {})
    net = model_for(fn, fm, model)
    base = call_method(fn, net, x, targets, opts, generator, progress).detach()
    check_attr(base, x, name="the explanation")
    norm = base.flatten(1).double().norm(dim=1)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    worst = torch.zeros_like(norm)
    with progress_bar(n, progress, "max-sensitivity") as bar:
        for _ in range(n):
            u = torch.rand(x.shape, generator=gen, dtype=x.dtype, device=gen.device).to(x.device)
            noisy = x + (2 * u - 1) * radius * span
            moved = call_method(fn, net, noisy, targets, opts, generator, progress).detach()
            change = (moved - base).flatten(1).double().norm(dim=1)
            worst = torch.maximum(worst, change / torch.where(norm > 0, norm,
                                                              torch.ones_like(norm)))
            bar.update()
    return worst


def sparseness(attr: torch.Tensor, *, reduce: Reduce = "auto") -> torch.Tensor:
    """The Gini index of each absolute map: 0 for a uniform map, near 1 when all the relevance
    sits on one pixel (Chalasani et al. 2020; the definition of Hurley & Rickard 2009).

    Returns:
        ``(B,)`` float64 in ``[0, 1)``; an all-zero map scores 0.

    Raises:
        ValueError: ``attr`` not ``(B, C, H, W)``.

    Example:
        >>> sparseness(torch.tensor([[[[0.0, 0.0, 0.0, 1.0]]]])).tolist()
        [0.75]
    """
    check_attr(attr)
    a = saliency_map(attr, reduce).flatten(1).double().abs().sort(dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=a.dtype, device=a.device)
    total = a.sum(1)
    gini = ((2 * i - n - 1) * a).sum(1) / (n * torch.where(total > 0, total,
                                                            torch.ones_like(total)))
    return torch.where(total > 0, gini, torch.zeros_like(gini))
