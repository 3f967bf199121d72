"""Black-box perturbation methods over regions: feature ablation, feature permutation and
Shapley value sampling, and the scoring of perturbed images that they, LIME, KernelSHAP and
RISE share.

The regions are an integer segmentation (:mod:`netlens.segments`: a grid by default, or
superpixels, or any ``(B or 1, 1 or C, H, W)`` mask as Captum's ``feature_mask``). Each method
builds perturbed copies of the images, scores them in chunks under the memory budget
(``score_perturbations``; the target is bound once on the clean images and each chunk
takes the targets of its images) and writes one value per region back onto its pixels. The
perturbed images never depend on ``batch_size``, so neither does the result (exact in float64).

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> feature_ablation(m, torch.rand(1, 3, 32, 32), mask=4).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .._runtime import (
    auto_batch_size,
    bind_part,
    check_count,
    check_generator,
    chunks,
    guarded,
    model_output,
    pass_layout,
    prepare,
    progress_bar,
    scores_of,
)
from ..flat_model import FlatModel
from ..segments import SegmentsLike, as_segments, paint
from ..targets import Target, TargetLike, as_target

__all__ = ["feature_ablation", "feature_permutation", "shapley_sampling", "bind_scores",
           "score_perturbations", "as_baseline", "pass_size", "per_image"]

Builder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def as_baseline(baseline: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``baseline`` (a float or a tensor broadcastable to ``x``) as a 4-D tensor of ``x``'s
    dtype and device that broadcasts to ``x``: ``(1 or B, 1 or C, 1 or H, 1 or W)``, so a
    constant baseline is never copied per perturbed image (index it with ``per_image``)."""
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        torch.broadcast_shapes(b.shape, x.shape)
        if b.dim() > 4 or torch.broadcast_shapes(b.shape, x.shape) != x.shape:
            raise RuntimeError
    except RuntimeError as e:
        raise ValueError(f"baseline of shape {tuple(b.shape)} does not broadcast to the "
                         f"input's shape {tuple(x.shape)}") from e
    return b.view(*([1] * (4 - b.dim())), *b.shape)


def per_image(t: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The rows ``image`` of a ``(B, ...)`` tensor, or the tensor itself when its batch axis is
    1 (shared by all images: broadcast, not copied)."""
    return t if t.shape[0] == 1 else t[image]


def pass_size(fm: FlatModel, x: torch.Tensor, batch_size: int | None) -> int:
    """``batch_size`` checked, or the memory budget's images per forward pass."""
    if batch_size is not None:
        return check_count(batch_size, "batch_size")
    return auto_batch_size(fm, x, backward=False)


def bind_scores(fm: FlatModel, x: torch.Tensor, target: TargetLike, batch_size: int,
                ) -> tuple[Target, torch.Tensor]:
    """``target`` bound to the clean images ``x`` (in chunks) and their scores ``(B, [K])``;
    call it under ``torch.no_grad()`` inside ``guarded``."""
    t = as_target(target, x.shape[0])
    bound, refs = [], []
    for part in chunks(x.shape[0], batch_size):
        out = model_output(fm, pass_layout(fm, x[part]), t)
        bound.append(bind_part(t, part, out))
        refs.append(scores_of(bound[-1], out))
    return type(bound[0]).cat(bound), torch.cat(refs)


def score_perturbations(fm: FlatModel, t: Target, total: int, build: Builder,
                        batch_size: int, bar: object, device: torch.device) -> torch.Tensor:
    """The scores ``(total, [K])`` of ``total`` perturbed images, ``batch_size`` per pass.

    Args:
        fm: the model.
        t: the target bound to the clean images.
        total: how many perturbed images.
        build: ``build(index)`` with ``index`` a chunk of ``arange(total)`` returns the
            perturbed images ``(m, C, H, W)`` and the clean image each comes from ``(m,)``.
        batch_size: perturbed images per forward pass.
        bar: the progress bar, updated after each pass.
        device: the device of the indices passed to ``build`` (the input's).
    """
    parts = []
    for part in chunks(total, batch_size):
        index = torch.arange(part.start, part.stop, device=device)
        images, owner = build(index)
        ti = t.take(owner)
        parts.append(scores_of(ti, model_output(fm, pass_layout(fm, images), ti)))
        bar.update(part.stop - part.start)  # type: ignore[attr-defined]
    return torch.cat(parts)


def _values(scores: torch.Tensor, batch: int, k: int | None) -> torch.Tensor:
    """``(B * S, [K])`` image-major scores as ``(B, [K,] S)``."""
    values = scores.view(batch, -1, *scores.shape[1:])
    return values if k is None else values.transpose(1, 2)


def feature_ablation(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    mask: SegmentsLike = None, baseline: float | torch.Tensor = 0.0,
    batch_size: int | None = None, progress: bool | None = None,
) -> torch.Tensor:
    """The drop in the target score when each region is set to the baseline.

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: anything :func:`netlens.targets.as_target` accepts (None: the predicted class).
        mask: the regions, an int tensor ``(B or 1, 1 or C, H, W)`` (Captum's
            ``feature_mask``; each distinct value one region), an int ``n`` (an ``n x n``
            :func:`netlens.segments.grid`) or None (a 7 x 7 grid).
        baseline: what replaces an ablated region: a float or a tensor broadcastable to ``x``.
        batch_size: perturbed images per forward pass (default from the memory budget); the
            result does not depend on it.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B, Cm, H, W)`` (``Cm`` the mask's channels; ``(B, K, Cm, H, W)`` for K targets),
        ``x``'s dtype and device: on each region's pixels ``f(x)[t] - f(x with the region set
        to the baseline)[t]``. Equal to Captum's ``FeatureAblation`` with the same mask.

    Raises:
        TypeError, ValueError: a mask that is not an int tensor of the right shape, a baseline
            that does not broadcast, a bad input, target or ``batch_size``.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> feature_ablation(lin, torch.rand(2, 1, 4, 4), 1, mask=2).shape
        torch.Size([2, 1, 4, 4])
    """
    fm, x = prepare(model, x)
    labels, count = as_segments(mask, x, "mask")
    base = as_baseline(baseline, x)
    bs = pass_size(fm, x, batch_size)
    batch = x.shape[0]
    regions = labels.expand(batch, *labels.shape[1:])

    def build(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, region = index // count, index % count
        off = regions[image] == region.view(-1, 1, 1, 1)
        return torch.where(off, per_image(base, image), x[image]), image

    with guarded(fm), torch.no_grad(), \
            progress_bar(batch * count, progress, "feature ablation") as bar:
        t, reference = bind_scores(fm, x, target, bs)
        scores = score_perturbations(fm, t, batch * count, build, bs, bar, x.device)
    drops = reference.repeat_interleave(count, 0) - scores
    return paint(_values(drops, batch, t.k), labels)


def _permutations(permutation: torch.Tensor | None, count: int, batch: int,
                  generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``(S, B)`` permutations of the batch, one per region: the given ones, or random ones
    that are not the identity (drawn region by region)."""
    if permutation is None:
        perms, identity = [], torch.arange(batch, device=device)
        for _ in range(count):
            p = torch.randperm(batch, generator=generator, device=device)
            while torch.equal(p, identity):
                p = torch.randperm(batch, generator=generator, device=device)
            perms.append(p)
        return torch.stack(perms)
    p = torch.as_tensor(permutation, device=device)
    if p.dim() == 1:
        p = p.expand(count, -1)
    if p.dim() != 2 or p.shape != (count, batch) or p.is_floating_point() or not torch.equal(
            p.sort(1).values, torch.arange(batch, device=device).expand(count, -1)):
        raise ValueError(f"permutation must be a permutation of range({batch}) (shape "
                         f"({batch},)) or one per region ({count}, {batch}), got "
                         f"{tuple(p.shape)} {p.dtype}")
    return p.long()


def feature_permutation(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    mask: SegmentsLike = None, permutation: torch.Tensor | None = None,
    batch_size: int | None = None, progress: bool | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The drop in the target score when each region's values are shuffled across the batch
    (permutation feature importance; Captum's ``FeaturePermutation``).

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, ``B >= 2``.
        target: anything :func:`netlens.targets.as_target` accepts (None: the predicted class).
        mask: the regions, as ``feature_ablation``'s.
        permutation: how image ``b``'s region takes image ``permutation[b]``'s values: a
            permutation of ``range(B)`` for every region, or ``(S, B)`` one per region. None:
            a random permutation per region (never the identity), drawn from ``generator``.
        batch_size: perturbed images per forward pass; the result does not depend on it.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        generator: the random permutations' generator (never the global random state).

    Returns:
        ``(B, Cm, H, W)`` (``(B, K, Cm, H, W)`` for K targets): on each region's pixels
        ``f(x)[t] - f(x with the region's values from image permutation[b])[t]``.

    Raises:
        ValueError: a batch of one image (nothing to permute), a bad ``permutation`` or mask.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> feature_permutation(lin, torch.rand(3, 1, 4, 4), 1, mask=2).shape
        torch.Size([3, 1, 4, 4])
    """
    fm, x = prepare(model, x)
    batch = x.shape[0]
    if batch < 2:
        raise ValueError("feature_permutation shuffles regions across the batch: give at least "
                         "2 images (or use feature_ablation for a single image)")
    labels, count = as_segments(mask, x, "mask")
    perm = _permutations(permutation, count, batch, check_generator(generator, x), x.device)
    bs = pass_size(fm, x, batch_size)
    regions = labels.expand(batch, *labels.shape[1:])

    def build(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, region = index // count, index % count
        inside = regions[image] == region.view(-1, 1, 1, 1)
        return torch.where(inside, x[perm[region, image]], x[image]), image

    with guarded(fm), torch.no_grad(), \
            progress_bar(batch * count, progress, "feature permutation") as bar:
        t, reference = bind_scores(fm, x, target, bs)
        scores = score_perturbations(fm, t, batch * count, build, bs, bar, x.device)
    drops = reference.repeat_interleave(count, 0) - scores
    return paint(_values(drops, batch, t.k), labels)


def _orders(permutations: torch.Tensor | None, n: int, count: int,
            generator: torch.Generator, device: torch.device) -> torch.Tensor:
    if permutations is None:
        return torch.stack([torch.randperm(count, generator=generator, device=device)
                            for _ in range(n)])
    p = torch.as_tensor(permutations, device=device)
    if p.dim() != 2 or p.shape[1] != count or p.shape[0] < 1 or p.is_floating_point() or \
            not torch.equal(p.sort(1).values, torch.arange(count, device=device).expand_as(p)):
        raise ValueError(f"permutations must be (n, {count}) orders of the {count} regions "
                         f"(each row a permutation of range({count})), got {tuple(p.shape)}")
    return p.long()


def shapley_sampling(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    n_permutations: int = 25, segments: SegmentsLike = None,
    baseline: float | torch.Tensor = 0.0, permutations: torch.Tensor | None = None,
    batch_size: int | None = None, progress: bool | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Shapley values of the regions, estimated over random orders of the regions.

    Štrumbelj & Kononenko, "Explaining prediction models and individual predictions with
    feature contributions", KAIS 2014 (Castro et al. 2009's permutation sampling). For each
    order, the regions are switched from the baseline to the image one after another; a
    region's value is the mean of the score's change when it is switched on. The same orders
    serve every image; the fully switched-on image is ``x`` itself, whose score is known, so an
    image costs ``1 + n_permutations * (S - 1)`` passes.

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: anything :func:`netlens.targets.as_target` accepts (None: the predicted class).
        n_permutations: how many random orders (ignored when ``permutations`` is given).
        segments: the regions, as ``feature_ablation``'s ``mask`` (None: a 7 x 7 grid).
        baseline: a region's "off" value: a float or a tensor broadcastable to ``x``.
        permutations: ``(n, S)`` orders of the regions to use instead of random ones (all
            ``S!`` of them give the exact Shapley values).
        batch_size: perturbed images per forward pass; the result does not depend on it.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        generator: the orders' generator (never the global random state).

    Returns:
        ``(B, Cm, H, W)`` (``(B, K, Cm, H, W)`` for K targets): each region's estimated
        Shapley value on its pixels; they sum to ``f(x)[t] - f(baseline)[t]`` per image.

    Raises:
        ValueError: ``n_permutations < 1``, malformed ``permutations``, a bad mask, baseline,
            input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> g = torch.Generator().manual_seed(0)
        >>> shapley_sampling(lin, torch.rand(1, 1, 4, 4), 1, segments=2, generator=g).shape
        torch.Size([1, 1, 4, 4])
    """
    fm, x = prepare(model, x)
    n = check_count(n_permutations, "n_permutations")
    labels, count = as_segments(segments, x, "segments")
    base = as_baseline(baseline, x)
    orders = _orders(permutations, n, count, check_generator(generator, x), x.device)
    n = orders.shape[0]
    rank = orders.argsort(1)  # rank[p, s]: the step at which order p switches region s on
    bs = pass_size(fm, x, batch_size)
    batch, steps = x.shape[0], count - 1
    regions = labels.expand(batch, *labels.shape[1:])
    inner = batch * n * steps  # then one all-off image per image

    def build(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = index < inner
        image = torch.where(first, index // max(n * steps, 1), index - inner)
        rest = index % max(n * steps, 1)
        order = torch.where(first, rest // max(steps, 1), 0)
        on = torch.where(first, rest % max(steps, 1) + 1, 0)  # regions switched on
        keep = rank[order[:, None], regions[image].flatten(1)] < on[:, None]
        keep = keep.view(-1, *regions.shape[1:])
        return torch.where(keep, x[image], per_image(base, image)), image

    with guarded(fm), torch.no_grad(), \
            progress_bar(inner + batch, progress, "shapley sampling") as bar:
        t, reference = bind_scores(fm, x, target, bs)
        scores = score_perturbations(fm, t, inner + batch, build, bs, bar, x.device)
    tail = scores.shape[1:]
    path = torch.cat([scores[inner:].view(batch, 1, 1, *tail).expand(batch, n, 1, *tail),
                      scores[:inner].view(batch, n, steps, *tail),
                      reference.view(batch, 1, 1, *tail).expand(batch, n, 1, *tail)], 2)
    gains = path[:, :, 1:] - path[:, :, :-1]  # (B, n, S, [K]): the gain of step j
    index = rank.view(1, n, count, *([1] * len(tail))).expand(batch, n, count, *tail)
    values = gains.gather(2, index).mean(1)  # (B, S, [K]) per region
    return paint(values if t.k is None else values.transpose(1, 2), labels)
