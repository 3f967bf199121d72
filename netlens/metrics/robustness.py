"""Robustness and complexity of an explanation.

- :func:`max_sensitivity` (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations",
  NeurIPS 2019): the largest relative change of the explanation under small uniform input noise.
  Lower is better.
- :func:`avg_sensitivity` (Yeh et al. 2019): the same relative change, averaged over the draws.
- :func:`local_lipschitz_estimate` (Alvarez-Melis & Jaakkola, "On the Robustness of
  Interpretability Methods", 2018): the largest ``||E(x') - E(x)|| / ||x' - x||`` over Gaussian
  neighbours ``x'``. Lower is better.
- :func:`sparseness` (Chalasani et al., "Concise Explanations of Neural Networks using
  Adversarial Training", ICML 2020): the Gini index of the absolute map. Higher is sparser.
"""

from __future__ import annotations

from collections.abc import Iterator
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

__all__ = ["max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate", "sparseness"]


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


def _check_draws(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1 (noise draws), got {n!r}")
    return n


def _scale_max(e: torch.Tensor) -> torch.Tensor:
    top = e.flatten(1).abs().amax(1).view(-1, *([1] * (e.dim() - 1)))
    return e / torch.where(top > 0, top, torch.ones_like(top))


def _re_explain(
    model: nn.Module, x: torch.Tensor, target: TargetLike, method: Method, n: int,
    draw: str, scale: float, perturbations: torch.Tensor | None,
    options: dict[str, Any] | None, generator: torch.Generator | None, progress: bool | None,
    desc: str, normalize: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yields ``(x, E(x), x_k, E(x_k))`` per draw ``k`` (float64 explanations), ``x_k = x + d_k``.

    ``d_k`` is ``perturbations[k]`` when given, else drawn from ``generator`` in the order
    ``k = 0 .. n-1``, one tensor of ``x``'s shape per draw: ``"uniform"`` in
    ``[-scale, scale]`` times each image's value range, ``"normal"`` with std ``scale`` times
    it. The target is bound once on ``x``."""
    _, fn = resolve_method(method)
    fm, x = prepare(model, x)
    if perturbations is not None:
        if not isinstance(perturbations, torch.Tensor) or perturbations.shape[1:] != x.shape:
            got = (tuple(perturbations.shape) if isinstance(perturbations, torch.Tensor)
                   else type(perturbations).__name__)
            raise ValueError(f"perturbations must be a tensor (n, *x.shape) = (n, "
                             f"{', '.join(map(str, x.shape))}) of additive noise, got {got}")
        if not bool(torch.isfinite(perturbations).all()):
            raise ValueError("perturbations contain NaN or infinite values")
        n = perturbations.shape[0]
    with guarded(fm), torch.no_grad():
        targets = method_target(bind_single(fm, x, target, auto_batch_size(fm, x, backward=False)))
    gen = generator
    if gen is None and perturbations is None:
        gen = torch.Generator(device=x.device)
        gen.seed()
    opts = dict(options or {})
    net = model_for(fn, fm, model)
    base = call_method(fn, net, x, targets, opts, generator, progress).detach()
    check_attr(base, x, name="the explanation")
    base = base.double()
    if normalize:
        base = _scale_max(base)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    with progress_bar(n, progress, desc) as bar:
        for k in range(n):
            if perturbations is not None:
                d = perturbations[k].to(device=x.device, dtype=x.dtype)
            else:
                assert gen is not None
                if draw == "uniform":
                    u = torch.rand(x.shape, generator=gen, dtype=x.dtype, device=gen.device)
                    d = (2 * u.to(x.device) - 1) * scale * span
                else:
                    g = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=gen.device)
                    d = g.to(x.device) * scale * span
            noisy = x + d
            moved = call_method(fn, net, noisy, targets, opts, generator, progress).detach()
            moved = moved.double()
            if normalize:
                moved = _scale_max(moved)
            yield x, base, noisy, moved
            bar.update()


def avg_sensitivity(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency", *,
    n: int = 8, radius: float = 0.02, perturbations: torch.Tensor | None = None,
    options: dict[str, Any] | None = None, generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """``mean_k ||E(x + d_k) - E(x)|| / ||E(x)||`` per image, over ``n`` noise draws ``d_k``.

    :func:`max_sensitivity`'s average: the same uniform noise in ``[-r, r]`` per pixel,
    ``r = radius`` times the image's value range, the target resolved once on ``x``.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: class per image; None: the predicted class.
        method: a name of :data:`~netlens.attribution.METHODS` (or ``"random"``, ``"centre"``),
            or a function ``f(model, x, target, **options)``.
        n: noise draws.
        radius: the noise's half-width as a fraction of each image's value range.
        perturbations: ``(n, B, C, H, W)`` additive noise to use instead of drawing it (then
            ``n`` and ``radius`` are ignored), e.g. to reproduce another library's draws.
        options: keyword options of the method.
        generator: the noise's source (a fresh seed when None): draw ``k`` is one
            ``torch.rand(x.shape)`` for ``k = 0 .. n-1``; also given to the method.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64; 0.0 for an explainer that ignores its input.

    Raises:
        ValueError: ``n < 1``, a negative radius, perturbations of the wrong shape, an unknown
            method, a bad input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> avg_sensitivity(lin, torch.rand(2, 1, 2, 2), 0, "saliency", n=2).tolist()
        [0.0, 0.0]
    """
    n = _check_draws(n)
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    total: torch.Tensor | None = None
    count = 0
    for _, base, _, moved in _re_explain(model, x, target, method, n, "uniform", radius,
                                         perturbations, options, generator, progress,
                                         "avg-sensitivity"):
        norm = base.flatten(1).norm(dim=1)
        change = (moved - base).flatten(1).norm(dim=1)
        ratio = change / torch.where(norm > 0, norm, torch.ones_like(norm))
        total = ratio if total is None else total + ratio
        count += 1
    assert total is not None
    return total / count


def local_lipschitz_estimate(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency", *,
    n: int = 8, sigma: float = 0.1, normalize: bool = False,
    perturbations: torch.Tensor | None = None, options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None, progress: bool | None = None,
) -> torch.Tensor:
    """``max_k ||E(x + d_k) - E(x)|| / ||d_k||`` per image, over ``n`` Gaussian draws ``d_k``.

    Alvarez-Melis & Jaakkola's local Lipschitz estimate of the explanation, as a function of the
    input, sampled around ``x`` (both norms Euclidean, over all pixels and channels).

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: class per image; None: the predicted class.
        method: a name of :data:`~netlens.attribution.METHODS`, or a function
            ``f(model, x, target, **options)``.
        n: noise draws.
        sigma: the noise's standard deviation as a fraction of each image's value range.
        normalize: divide each explanation by its largest absolute value first (Quantus's
            default), so that the estimate does not grow with the explanation's scale.
        perturbations: ``(n, B, C, H, W)`` additive noise to use instead of drawing it (then
            ``n`` and ``sigma`` are ignored).
        options: keyword options of the method.
        generator: the noise's source (a fresh seed when None): draw ``k`` is one
            ``torch.randn(x.shape)`` for ``k = 0 .. n-1``; also given to the method.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64; 0.0 for an explainer that ignores its input.

    Raises:
        ValueError: ``n < 1``, ``sigma <= 0``, perturbations of the wrong shape or with a zero
            draw, an unknown method, a bad input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> local_lipschitz_estimate(lin, torch.rand(2, 1, 2, 2), 0, "saliency", n=2).tolist()
        [0.0, 0.0]
    """
    n = _check_draws(n)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    worst: torch.Tensor | None = None
    for xs, base, noisy, moved in _re_explain(model, x, target, method, n, "normal", sigma,
                                              perturbations, options, generator, progress,
                                              "local Lipschitz", normalize):
        step = (noisy - xs).flatten(1).double().norm(dim=1)
        if not bool((step > 0).all()):
            raise ValueError("a perturbation leaves an image unchanged (||d_k|| = 0); the "
                             "Lipschitz ratio is undefined: use noise that moves every image")
        ratio = (moved - base).flatten(1).norm(dim=1) / step
        worst = ratio if worst is None else torch.maximum(worst, ratio)
    assert worst is not None
    return worst
