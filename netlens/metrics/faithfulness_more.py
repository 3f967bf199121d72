"""More faithfulness metrics, at the breadth of Quantus (Hedström et al., JMLR 2023).

- :func:`faithfulness_correlation` (Bhatt et al., IJCAI 2020) and :func:`sensitivity_n`
  (Ancona et al., ICLR 2018): Pearson correlation, over random subsets of features, between the
  attribution summed over the subset and the score drop when the subset is removed.
- :func:`faithfulness_estimate` (Alvarez-Melis & Jaakkola, NeurIPS 2018): the same correlation
  over the chunks of features in the order of the map, each removed alone.
- :func:`monotonicity` (Arya et al. 2019): inserting the features onto the baseline from the
  least relevant up, does the score only rise?
- :func:`monotonicity_correlation` (Nguyen & Martinez 2020): Spearman correlation between a
  chunk's attribution and the (relative) variance of the score when it is randomized.
- :func:`region_perturbation` (Samek et al., IEEE TNNLS 2017) and :func:`selectivity` (Montavon
  et al. 2018): square patches removed cumulatively by their summed attribution (pixel flipping
  in patches).
- :func:`irof` (Rieger & Hansen 2020): superpixels removed cumulatively by mean attribution.
- :func:`infidelity` (Yeh et al., NeurIPS 2019): the expected squared error of the linear
  prediction ``<attr, I>`` of the score change under perturbations ``I`` (Captum's formula).
- :func:`sufficiency` (Dasgupta et al., ICML 2022): how often images with similar explanations
  share the prediction.

Features. A *feature* is a pixel (all channels at once, ranked by the map of
:func:`~netlens.metrics.saliency_map` through ``reduce``), or with ``per_channel=True`` one
channel of one pixel (the attribution broadcast to the input's shape and used as it is, signed):
the features of Quantus, which flattens ``C x H x W``. Orders are stable (ties in the order of
the flattened features). Every perturbed image of a metric is evaluated in chunks under the memory
budget (``batch_size=`` or ``max_memory=``), on the images' device; the result does not depend on
the chunking, and every random draw is made up front from ``generator`` in the documented order
(or passed in: ``subsets=``, ``fills=``, ``perturbations=``).

Baselines. ``baseline`` is what a removed feature becomes: a number, a tensor broadcastable to
``x``, ``"black"`` / ``"white"`` (each image's minimum / maximum over all its values, Quantus's
meaning), ``"mean"`` (each image's channel means), ``"blur"`` or ``"uniform"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from .._runtime import auto_batch_size, chunks, guarded, model_output, prepare, progress_bar
from ..targets import Class, Target, TargetLike
from ._maps import Reduce, bind_single, check_attr, ranks, saliency_map, target_score
from .faithfulness import Curve, Score, _perturbation_baseline

__all__ = [
    "faithfulness_correlation", "sensitivity_n", "faithfulness_estimate", "monotonicity",
    "monotonicity_correlation", "region_perturbation", "selectivity", "irof", "infidelity",
    "sufficiency", "pearson",
]

# -- shared machinery -------------------------------------------------------------------------

class _Setup:
    """The validated model, input, target, chunk size and features of one metric call."""

    def __init__(self, model: nn.Module, x: torch.Tensor, attr: torch.Tensor,
                 target: TargetLike, score: str, reduce: Reduce, per_channel: bool,
                 batch_size: int | None, max_memory: int | None) -> None:
        if score not in ("softmax", "logit", "accuracy"):
            raise ValueError(f"score must be 'softmax', 'logit' or 'accuracy', got {score!r}")
        self.fm, self.x = prepare(model, x)
        check_attr(attr, self.x)
        x = self.x
        if per_channel:
            a = attr.detach().to(x.device).expand_as(x)
            self.unit: tuple[int, ...] = tuple(x.shape[1:])
        else:
            a = saliency_map(attr, reduce).to(x.device)
            self.unit = (1, *x.shape[2:])
        self.flat = a.reshape(x.shape[0], -1).to(x.dtype)
        self.fm.ensure_traced(x)
        if batch_size is None:
            batch_size = auto_batch_size(self.fm, x, backward=False, max_memory=max_memory)
        self.batch_size = batch_size
        self.score = score
        with guarded(self.fm):
            self.targets: Target = bind_single(self.fm, x, target, batch_size, score)

    @property
    def n(self) -> int:
        """The number of features per image."""
        return self.flat.shape[1]

    def mask(self, features: torch.Tensor) -> torch.Tensor:
        """``(n, N)`` bool feature masks as masks broadcastable to images ``(n, C, H, W)``."""
        return features.view(-1, *self.unit)

    def scores(self, points: int, image_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               progress: bool | None, desc: str) -> torch.Tensor:
        """``(B, points)``: the target score of ``image_at(b, j)`` (tensors of image and point
        indices of one chunk), evaluated point-major in chunks of ``batch_size``."""
        batch, x = self.x.shape[0], self.x
        out = x.new_empty(points * batch)
        with guarded(self.fm), torch.no_grad(), progress_bar(points * batch, progress,
                                                             desc) as bar:
            for part in chunks(points * batch, self.batch_size):
                index = torch.arange(part.start, part.stop, device=x.device)
                j, b = index // batch, index % batch
                tb = self.targets.take(b)
                out[part] = target_score(tb, model_output(self.fm, image_at(b, j), tb),
                                         self.score)
                bar.update(part.stop - part.start)
        return out.view(points, batch).T

    def clean(self, progress: bool | None = False) -> torch.Tensor:
        """``(B,)`` the target score of the unchanged images."""
        return self.scores(1, lambda b, j: self.x[b], progress, "clean")[:, 0]


def _baseline(baseline: object, x: torch.Tensor, generator: torch.Generator | None,
              ) -> torch.Tensor:
    if isinstance(baseline, str) and baseline in ("black", "white"):
        flat = x.flatten(1)
        value = flat.amin(1) if baseline == "black" else flat.amax(1)
        return value.view(-1, 1, 1, 1).expand_as(x)
    return _perturbation_baseline(baseline, x, generator)


def _check_int(value: object, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the rows of two ``(B, n)`` tensors, ``(B,)`` (nan where a row is
    constant, as scipy).

    Example:
        >>> pearson(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 4.0, 7.0]])).shape
        torch.Size([1])
    """
    a, b = a.double(), b.double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def _spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return pearson(ranks(a.double()), ranks(b.double()))


def _gen(generator: torch.Generator | None) -> torch.Generator:
    if generator is not None:
        return generator
    gen = torch.Generator()
    gen.seed()
    return gen


# -- random subsets: faithfulness correlation, sensitivity-n ---------------------------------

def _subset_correlation(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike, *, runs: int,
    size: int, baseline: object, subsets: torch.Tensor | None, score: Score, reduce: Reduce,
    per_channel: bool, batch_size: int | None, max_memory: int | None, progress: bool | None,
    generator: torch.Generator | None, desc: str,
) -> torch.Tensor:
    s = _Setup(model, x, attr, target, score, reduce, per_channel, batch_size, max_memory)
    x, batch, n = s.x, s.x.shape[0], s.n
    if subsets is None:
        runs, size = _check_int(runs, "runs", 2), _check_int(size, "subset size")
        if size > n:
            raise ValueError(f"the subset size {size} exceeds the {n} features of an image")
        gen = _gen(generator)
        subsets = torch.stack([torch.rand((runs, n), generator=gen, device=gen.device)
                               .topk(size, dim=1).indices for _ in range(batch)])
    subsets = torch.as_tensor(subsets).to(x.device).long()
    if subsets.dim() != 3 or subsets.shape[0] != batch or subsets.shape[1] < 2:
        raise ValueError(f"subsets must be (B={batch}, runs >= 2, size) feature indices, got "
                         f"{tuple(subsets.shape)}")
    if bool((subsets < 0).any()) or bool((subsets >= n).any()):
        raise ValueError(f"subsets must index the {n} features of an image")
    base = _baseline(baseline, x, generator)
    runs = subsets.shape[1]
    member = torch.zeros(batch, runs, n, dtype=torch.bool, device=x.device)
    member.scatter_(2, subsets, True)

    def image_at(b: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return torch.where(s.mask(member[b, j]), base[b], x[b])

    y = s.clean()
    drops = y[:, None] - s.scores(runs, image_at, progress, desc)
    sums = s.flat.gather(1, subsets.flatten(1)).view(batch, runs, -1).sum(2)
    return pearson(sums, drops)


def faithfulness_correlation(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    runs: int = 100, subset_size: int = 224, baseline: float | str | torch.Tensor = "black",
    subsets: torch.Tensor | None = None, score: Score = "logit", reduce: Reduce = "auto",
    per_channel: bool = False, batch_size: int | None = None, max_memory: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Faithfulness correlation (Bhatt et al., "Evaluating and Aggregating Feature-based Model
    Explanations", IJCAI 2020): the Pearson correlation, over ``runs`` random subsets of
    ``subset_size`` features, between the attribution summed over the subset and the drop of
    the target score when the subset is set to ``baseline``. Higher is better (in [-1, 1]).

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        attr: their attributions ``(B, C, H, W)`` or maps ``(B, 1, H, W)``, at ``x``'s size.
        target: as for the attribution methods (:mod:`netlens.targets`); None: the predicted
            class.
        runs: the number of random subsets per image.
        subset_size: the features per subset.
        baseline: what a removed feature becomes (see the module docstring).
        subsets: ``(B, runs, size)`` feature indices (flat, as ``attr``'s map or, with
            ``per_channel``, as ``x[b]``), instead of the random draw. The draw: for each image
            in order, the places of the ``subset_size`` largest values of each row of
            ``torch.rand((runs, N), generator=generator)`` (``.topk(subset_size).indices``;
            then a ``"uniform"`` baseline, from the same generator).
        score: ``"logit"`` (the raw target score), ``"softmax"`` or ``"accuracy"``.
        reduce: how ``attr`` becomes one map per image (:func:`~netlens.metrics.saliency_map`).
        per_channel: the features are the ``C x H x W`` values of ``x`` (Quantus's), not pixels.
        batch_size: perturbed images per forward pass; default from ``max_memory``.
        max_memory: working-memory budget in bytes; default the attribution methods' budget.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        generator: the source of the subsets (and of a ``"uniform"`` baseline).

    Returns:
        ``(B,)`` float64 correlations (nan where the drops or the sums are constant).

    Raises:
        ValueError: a subset larger than the image, fewer than 2 runs, malformed ``subsets``,
            an ``attr`` that does not match ``x``, a bad target, baseline or score.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2, bias=False))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> a = lin[1].weight[0].detach().view(1, 1, 4, 4) * x
        >>> r = faithfulness_correlation(lin, x, a, 0, runs=8, subset_size=4, baseline=0.0,
        ...                              reduce="sum", generator=torch.Generator().manual_seed(0))
        >>> [round(v, 4) for v in r.tolist()]
        [1.0, 1.0]
    """
    return _subset_correlation(model, x, attr, target, runs=runs, size=subset_size,
                               baseline=baseline, subsets=subsets, score=score, reduce=reduce,
                               per_channel=per_channel, batch_size=batch_size,
                               max_memory=max_memory, progress=progress, generator=generator,
                               desc="faithfulness correlation")


def sensitivity_n(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    n: int, runs: int = 100, baseline: float | str | torch.Tensor = "black",
    subsets: torch.Tensor | None = None, score: Score = "logit", reduce: Reduce = "auto",
    per_channel: bool = False, batch_size: int | None = None, max_memory: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sensitivity-n (Ancona et al., "Towards better understanding of gradient-based attribution
    methods for Deep Neural Networks", ICLR 2018): for subsets of ``n`` features drawn at random,
    the Pearson correlation between the attribution summed over the subset and the score drop
    when it is removed, per image. An attribution is "sensitive-n" when it is 1; evaluate
    several ``n`` to draw the paper's curves.

    This is :func:`faithfulness_correlation` with subsets of size ``n`` (same arguments, draw
    order, result and errors); Quantus's ``SensitivityN`` computes something else (see the
    tests).
    """
    return _subset_correlation(model, x, attr, target, runs=runs, size=n, baseline=baseline,
                               subsets=subsets, score=score, reduce=reduce,
                               per_channel=per_channel, batch_size=batch_size,
                               max_memory=max_memory, progress=progress, generator=generator,
                               desc="sensitivity-n")


# -- ordered chunks: faithfulness estimate, monotonicity --------------------------------------

def _chunk_of(s: _Setup, features_in_step: int, descending: bool) -> tuple[torch.Tensor, int]:
    """``(B, N)`` the chunk of each feature in the order of the map, and the chunk count."""
    step = _check_int(features_in_step, "features_in_step")
    order = s.flat.argsort(dim=1, descending=descending, stable=True)
    positions = torch.arange(s.n, device=s.flat.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return rank // step, -(-s.n // step)


def _chunk_sums(s: _Setup, chunk: torch.Tensor, points: int) -> torch.Tensor:
    return s.flat.new_zeros(s.flat.shape[0], points).scatter_add_(1, chunk, s.flat)


def faithfulness_estimate(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    features_in_step: int = 1, baseline: float | str | torch.Tensor = "black",
    score: Score = "logit", reduce: Reduce = "auto", per_channel: bool = False,
    batch_size: int | None = None, max_memory: int | None = None, progress: bool | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Faithfulness estimate (Alvarez-Melis & Jaakkola, "Towards Robust Interpretability with
    Self-Explaining Neural Networks", NeurIPS 2018): the features are cut, in the order of the
    map (most relevant first), into chunks of ``features_in_step``; each chunk alone is set to
    ``baseline``; the result is the Pearson correlation between the chunks' summed attributions
    and the drops of the target score. Higher is better. ``ceil(N / features_in_step)`` forward
    passes per image.

    Same arguments as :func:`faithfulness_correlation` (``generator``: a ``"uniform"``
    baseline's source).

    Returns:
        ``(B,)`` float64 correlations.

    Raises:
        ValueError: ``features_in_step < 1`` and the errors of :func:`faithfulness_correlation`.
    """
    s = _Setup(model, x, attr, target, score, reduce, per_channel, batch_size, max_memory)
    chunk, points = _chunk_of(s, features_in_step, True)
    base = _baseline(baseline, s.x, generator)

    def image_at(b: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return torch.where(s.mask(chunk[b] == j[:, None]), base[b], s.x[b])

    drops = s.clean()[:, None] - s.scores(points, image_at, progress, "faithfulness estimate")
    return pearson(_chunk_sums(s, chunk, points), drops)


def monotonicity(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    features_in_step: int = 1, baseline: float | str | torch.Tensor = "black",
    score: Score = "softmax", reduce: Reduce = "auto", per_channel: bool = False,
    batch_size: int | None = None, max_memory: int | None = None, progress: bool | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Monotonicity (Arya et al., "One Explanation Does Not Fit All", 2019): starting from the
    ``baseline`` image, the features of ``x`` are put back in chunks of ``features_in_step``,
    least relevant first; 1.0 where the target score never falls from one chunk to the next,
    else 0.0. Higher is better. ``ceil(N / features_in_step)`` forward passes per image.

    Same arguments as :func:`faithfulness_estimate` (``score`` by default ``"softmax"``, as
    Quantus). Quantus 0.6.0's ``Monotonicity`` never inserts ``x``'s values (it writes the
    baseline into the baseline image), so it returns 1 for every map.

    Returns:
        ``(B,)`` float64 values 0.0 or 1.0.
    """
    s = _Setup(model, x, attr, target, score, reduce, per_channel, batch_size, max_memory)
    chunk, points = _chunk_of(s, features_in_step, False)
    base = _baseline(baseline, s.x, generator)

    def image_at(b: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return torch.where(s.mask(chunk[b] <= j[:, None]), s.x[b], base[b])

    curve = s.scores(points, image_at, progress, "monotonicity")
    return (curve.diff(dim=1) >= 0).all(1).double()


def monotonicity_correlation(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    samples: int = 100, features_in_step: int = 1, fills: torch.Tensor | None = None,
    fill_range: tuple[float, float] = (0.0, 1.0), eps: float = 1e-5, score: Score = "softmax",
    reduce: Reduce = "auto", per_channel: bool = False, batch_size: int | None = None,
    max_memory: int | None = None, progress: bool | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Monotonicity correlation (Nguyen & Martinez, "On quantitative aspects of model
    interpretability", 2020): the features are cut, least relevant first, into chunks of
    ``features_in_step``; each chunk is set ``samples`` times to a random value; the result is
    the Spearman correlation between the chunks' summed attributions and the mean squared change
    of the target score, divided by the squared clean score (where that is at least ``eps``).
    Higher is better. ``samples x ceil(N / features_in_step)`` forward passes per image.

    Args:
        samples: random values per chunk.
        fills: ``(chunks, samples, B)`` the value written into each chunk (all its features) at
            each sample, instead of the draw ``lo + (hi - lo) * torch.rand((chunks, samples,
            B), generator=generator)`` with ``(lo, hi) = fill_range``.
        fill_range: the range of the drawn values.
        eps: clean scores below this in magnitude are not divided by.

    Other arguments as :func:`faithfulness_estimate` (``score`` by default ``"softmax"``, as
    Quantus).

    Returns:
        ``(B,)`` float64 rank correlations (ties get average ranks).

    Raises:
        ValueError: ``samples`` or ``features_in_step`` < 1, ``fills`` of the wrong shape, and
            the errors of :func:`faithfulness_correlation`.
    """
    s = _Setup(model, x, attr, target, score, reduce, per_channel, batch_size, max_memory)
    chunk, points = _chunk_of(s, features_in_step, False)
    batch = s.x.shape[0]
    if fills is None:
        k = _check_int(samples, "samples")
        gen = _gen(generator)
        lo, hi = fill_range
        fills = lo + (hi - lo) * torch.rand((points, k, batch), generator=gen,
                                            dtype=torch.float64, device=gen.device)
    fills = torch.as_tensor(fills).to(s.x)
    if fills.dim() != 3 or fills.shape[0] != points or fills.shape[2] != batch:
        raise ValueError(f"fills must have shape (chunks={points}, samples, B={batch}), got "
                         f"{tuple(fills.shape)}")
    k = fills.shape[1]

    def image_at(b: torch.Tensor, jk: torch.Tensor) -> torch.Tensor:
        j = jk // k
        value = fills[j, jk % k, b].view(-1, 1, 1, 1)
        return torch.where(s.mask(chunk[b] == j[:, None]), value, s.x[b])

    y = s.clean()
    perturbed = s.scores(points * k, image_at, progress, "monotonicity correlation")
    scale = torch.where(y.abs() >= eps, 1 / y.abs().clamp(min=eps), torch.ones_like(y)) ** 2
    variance = ((perturbed.view(batch, points, k) - y[:, None, None]) ** 2).mean(2)
    return _spearman(_chunk_sums(s, chunk, points), variance * scale[:, None])


# -- patches and superpixels ------------------------------------------------------------------

def _patches(x: torch.Tensor, size: int) -> tuple[torch.Tensor, int]:
    """``(H, W)`` patch number of each pixel and the patch count: a grid of ``size`` squares
    centred as Quantus pads the image (``floor`` of the padding before, ``ceil`` after)."""
    h, w = x.shape[2:]
    rows, cols = -(-h // size), -(-w // size)
    top, left = (rows * size - h) // 2, (cols * size - w) // 2
    r = (torch.arange(h, device=x.device) + top) // size
    c = (torch.arange(w, device=x.device) + left) // size
    return r[:, None] * cols + c[None, :], rows * cols


def _region_curve(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike, *,
    patch_size: int, order: str, regions: int | None, baseline: object, score: Score,
    reduce: Reduce, batch_size: int | None, max_memory: int | None, progress: bool | None,
    generator: torch.Generator | None, desc: str,
) -> Curve:
    if order not in ("morf", "lerf", "random"):
        raise ValueError(f"order must be 'morf', 'lerf' or 'random', got {order!r}")
    size = _check_int(patch_size, "patch_size")
    s = _Setup(model, x, attr, target, score, reduce, False, batch_size, max_memory)
    x, batch = s.x, s.x.shape[0]
    patch, count = _patches(x, size)
    sums = s.flat.new_zeros(batch, count).scatter_add_(
        1, patch.flatten().expand(batch, -1), s.flat)
    if order == "random":
        gen = _gen(generator)
        rank_order = torch.rand((batch, count), generator=gen, device=gen.device).argsort(1)
        rank_order = rank_order.to(x.device)
    else:
        rank_order = sums.argsort(dim=1, descending=order == "morf", stable=True)
    rank = torch.empty_like(rank_order).scatter_(
        1, rank_order, torch.arange(count, device=x.device).expand(batch, -1))
    steps = count if regions is None else min(_check_int(regions, "regions"), count)
    base = _baseline(baseline, x, generator)
    pixel_rank = rank[:, patch.flatten()]  # (B, H*W)

    def image_at(b: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return torch.where(s.mask(pixel_rank[b] < j[:, None]), base[b], x[b])

    scores = s.scores(steps + 1, image_at, progress, desc)
    fractions = torch.arange(steps + 1, dtype=torch.float64, device=x.device) / count
    return Curve(fractions, scores)


def region_perturbation(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    patch_size: int = 8, order: Literal["morf", "lerf", "random"] = "morf",
    regions: int | None = 100, baseline: float | str | torch.Tensor = "black",
    score: Score = "softmax", reduce: Reduce = "auto", batch_size: int | None = None,
    max_memory: int | None = None, progress: bool | None = None,
    generator: torch.Generator | None = None,
) -> Curve:
    """Region perturbation (Samek et al., "Evaluating the visualization of what a Deep Neural
    Network has learned", IEEE TNNLS 2017): pixel flipping in ``patch_size`` squares, the
    patches ranked by their summed map and set to ``baseline`` cumulatively. With ``"morf"``
    (most relevant first) a faithful map makes the score fall fast: high :attr:`Curve.aopc`
    (the paper's AOPC, the mean drop over the points from 0 to ``regions``); ``"lerf"`` the
    other way; ``"random"`` draws each image's order from ``generator``
    (``torch.rand((B, patches), generator=generator).argsort(1)``).

    The patches tile the image as Quantus's padded grid: ``ceil(H / p) x ceil(W / p)`` squares,
    the grid centred (``floor`` of the excess before, ``ceil`` after), edge patches smaller.

    Args:
        patch_size: the side of the squares in pixels.
        order: ``"morf"``, ``"lerf"`` or ``"random"``.
        regions: the number of patches removed (at most all); None: all.

    Other arguments as :func:`faithfulness_correlation` (patches always cover all channels;
    ``score`` by default ``"softmax"``, as Quantus).

    Returns:
        A :class:`~netlens.metrics.Curve` with ``fractions`` (the fraction of patches removed)
        and ``scores`` ``(B, regions + 1)``, the first column the clean score.

    Raises:
        ValueError: a bad ``patch_size``, ``order`` or ``regions``, and the errors of
            :func:`faithfulness_correlation`.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> c = region_perturbation(lin, torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), 0,
        ...                         patch_size=2)
        >>> c.scores.shape
        torch.Size([1, 5])
    """
    return _region_curve(model, x, attr, target, patch_size=patch_size, order=order,
                         regions=regions, baseline=baseline, score=score, reduce=reduce,
                         batch_size=batch_size, max_memory=max_memory, progress=progress,
                         generator=generator, desc="region perturbation")


def selectivity(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    patch_size: int = 8, baseline: float | str | torch.Tensor = "black", score: Score = "softmax",
    reduce: Reduce = "auto", batch_size: int | None = None, max_memory: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
) -> Curve:
    """Selectivity (Montavon et al., "Methods for interpreting and understanding deep neural
    networks", DSP 2018): every patch removed, most relevant first, as
    :func:`region_perturbation` with ``order="morf"`` and ``regions=None``; a faithful map makes
    the score fall fast: low :attr:`Curve.auc`.

    Same arguments, result and errors as :func:`region_perturbation`.
    """
    return _region_curve(model, x, attr, target, patch_size=patch_size, order="morf",
                         regions=None, baseline=baseline, score=score, reduce=reduce,
                         batch_size=batch_size, max_memory=max_memory, progress=progress,
                         generator=generator, desc="selectivity")


def irof(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    segments: torch.Tensor | None = None, n_segments: int = 100,
    baseline: float | str | torch.Tensor = "mean", normalize: bool = True,
    score: Score = "softmax", reduce: Reduce = "auto", batch_size: int | None = None,
    max_memory: int | None = None, progress: bool | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """IROF, Iterative Removal Of Features (Rieger & Hansen, "IROF: a low resource evaluation
    metric for explanation methods", 2020): the superpixels of each image are set to
    ``baseline`` cumulatively, highest mean attribution first, and the target score divided by
    the clean score is followed; the result is the area over that curve. Higher is better.

    With ``normalize=True`` (default) the curve runs over the fraction of superpixels removed,
    from 0 (value 1) to 1, and the area over it is ``1 - AUC``, comparable between images with
    different numbers of superpixels. ``normalize=False`` gives Quantus's number: ``S - sum`` of
    the trapezoids over the ``S`` points after each removal, at spacing 1.

    Args:
        segments: ``(B or 1, 1, H, W)`` int regions; default :func:`netlens.segments.slic`
            with ``n_segments`` (scikit-image's defaults otherwise, as Quantus).
        n_segments: the approximate superpixel count of the default segmentation.
        baseline: see the module docstring; default each image's channel means.
        normalize: see above.

    Other arguments as :func:`faithfulness_correlation` (``score`` by default ``"softmax"``, as
    Quantus).

    Returns:
        ``(B,)`` float64 areas over the curves.

    Raises:
        ImportError: no ``segments`` and scikit-image is not installed.
        ValueError: ``segments`` of the wrong shape, and the errors of
            :func:`faithfulness_correlation`.
    """
    s = _Setup(model, x, attr, target, score, reduce, False, batch_size, max_memory)
    x, batch = s.x, s.x.shape[0]
    if segments is None:
        from ..segments import slic

        segments = slic(x, n_segments=n_segments)
    segments = torch.as_tensor(segments).to(x.device)
    if (segments.dim() != 4 or segments.shape[1] != 1 or segments.shape[0] not in (1, batch)
            or segments.shape[2:] != x.shape[2:] or segments.is_floating_point()):
        raise ValueError(f"segments must be an int tensor (B or 1, 1, {x.shape[2]}, "
                         f"{x.shape[3]}), got {segments.dtype} {tuple(segments.shape)}")
    labels = torch.stack([torch.unique(seg.flatten(), return_inverse=True)[1]
                          for seg in segments.expand(batch, -1, -1, -1)])  # (B, H*W)
    counts = labels.amax(1) + 1
    top = int(counts.max())
    area = torch.zeros(batch, top, dtype=s.flat.dtype, device=x.device)
    area.scatter_add_(1, labels, torch.ones_like(s.flat))
    means = s.flat.new_zeros(batch, top).scatter_add_(1, labels, s.flat) / area.clamp(min=1)
    means = torch.where(area > 0, means, torch.full_like(means, -math.inf))
    order = means.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(top, device=x.device)
                                            .expand(batch, -1))
    pixel_rank = rank.gather(1, labels)
    base = _baseline(baseline, x, generator)

    def image_at(b: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return torch.where(s.mask(pixel_rank[b] <= j[:, None]), base[b], x[b])

    y = s.clean()
    curve = s.scores(top, image_at, progress, "IROF") / y[:, None]  # after 1..top removals
    valid = torch.arange(top, device=x.device)[None] < counts[:, None]
    curve = torch.where(valid, curve, torch.zeros_like(curve)).double()
    trapz = curve.sum(1) - curve[:, 0] / 2 - curve.gather(1, (counts - 1)[:, None])[:, 0] / 2
    n = counts.double()
    if not normalize:
        return n - trapz
    # the curve with its start (1 at fraction 0), spacing 1 / S
    return 1 - (trapz + (1 + curve[:, 0]) / 2) / n


# -- infidelity, sufficiency ------------------------------------------------------------------

def infidelity(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    samples: int = 10, noise: float = 0.1, perturbations: torch.Tensor | None = None,
    normalize: bool = False, score: Score = "logit", batch_size: int | None = None,
    max_memory: int | None = None, progress: bool | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Infidelity (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations", NeurIPS
    2019): ``E_I[(<attr, I> - (f(x) - f(x - I)))^2]`` over perturbations ``I``, the error of the
    attribution as a linear model of the score change. Lower is better. Captum's
    ``captum.metrics.infidelity`` formula, ``normalize`` included (the attribution sums scaled
    by the least-squares factor ``beta = E[<attr, I> d] / E[<attr, I>^2]`` first).

    The attribution is used as it is (signed, per input value; a ``(B, 1, H, W)`` map is
    broadcast over the channels).

    Args:
        samples: the number of perturbations per image.
        noise: the std of the default Gaussian perturbations.
        perturbations: ``(samples, B, C, H, W)`` the perturbations ``I`` (the perturbed image
            is ``x - I``), instead of the draw ``noise * torch.randn((samples, B, C, H, W),
            generator=generator)``.
        normalize: scale the attribution sums by ``beta`` first (Captum's ``normalize``).

    Other arguments as :func:`faithfulness_correlation`.

    Returns:
        ``(B,)`` infidelities, in the images' dtype.

    Raises:
        ValueError: ``samples < 1``, ``perturbations`` of the wrong shape, and the errors of
            :func:`faithfulness_correlation`.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
        >>> x = torch.rand(1, 1, 2, 2)
        >>> true = lin[1].weight[0].detach().view(1, 1, 2, 2).expand_as(x)  # the gradient
        >>> infidelity(lin, x, true, 0, generator=torch.Generator().manual_seed(0)).item() < 1e-10
        True
    """
    s = _Setup(model, x, attr, target, score, "sum", True, batch_size, max_memory)
    x = s.x
    if perturbations is None:
        k = _check_int(samples, "samples")
        gen = _gen(generator)
        perturbations = noise * torch.randn((k, *x.shape), generator=gen, dtype=x.dtype,
                                            device=gen.device)
    p = torch.as_tensor(perturbations).to(x)
    if p.dim() != 5 or p.shape[1:] != x.shape:
        raise ValueError(f"perturbations must have shape (samples, {', '.join(map(str, x.shape))})"
                         f", got {tuple(p.shape)}")
    k = p.shape[0]

    def image_at(b: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return x[b] - p[j, b]

    drops = s.clean()[:, None] - s.scores(k, image_at, progress, "infidelity")
    sums = (p.flatten(2) * s.flat[None]).sum(2).T  # (B, samples)
    if normalize:
        beta = (sums * drops).mean(1, keepdim=True) / (sums * sums).mean(1, keepdim=True)
        sums = beta * sums
    return ((sums - drops) ** 2).mean(1)


def sufficiency(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    threshold: float = 0.6, reduce: Reduce = "abs_sum", per_channel: bool = False,
    batch_size: int | None = None, max_memory: int | None = None,
) -> torch.Tensor:
    """Sufficiency (Dasgupta et al., "Framework for Evaluating Faithfulness of Local
    Explanations", ICML 2022): for each image, the fraction of the *other* images of the batch
    whose explanation is close to its own that get the same label. Higher is better.

    Two explanations are close when their standardized Euclidean distance (each feature divided
    by its variance over the batch, ``ddof=1``; constant features left out), divided by the
    largest distance in the batch, is at most ``threshold`` (as Quantus).

    Args:
        target: the labels compared: None, the predicted classes (the paper's); else a class
            target (:mod:`netlens.targets`), its classes.
        threshold: the closeness threshold on the normalized distance, in [0, 1].
        reduce: how the features compared are read (default ``|attr|`` summed over channels).
        per_channel: compare every channel value instead of pixels.
        batch_size: as :func:`faithfulness_correlation` (for the predictions).
        max_memory: as :func:`faithfulness_correlation`.

    Returns:
        ``(B,)`` float64 fractions; 0.0 for an image with no close neighbour.

    Raises:
        ValueError: a batch of fewer than 2 images, a target that is not a class, and the
            errors of :func:`faithfulness_correlation`.
    """
    if x.shape[0] < 2:
        raise ValueError("sufficiency compares the explanations of a batch: pass at least 2 "
                         "images")
    s = _Setup(model, x, attr, target, "logit", reduce, per_channel, batch_size, max_memory)
    if not isinstance(s.targets, Class) or s.targets.classes is None:
        raise ValueError(f"sufficiency compares class labels; got a {type(s.targets).__name__} "
                         "target: pass None (the predictions) or classes")
    labels = s.targets.classes.to(s.x.device).expand(s.x.shape[0])
    a = s.flat.double()
    var = a.var(0)
    keep = var > 0
    z = a[:, keep] / var[keep].sqrt()
    dist = torch.cdist(z, z)
    peak = dist.max()
    dist = dist / peak if peak > 0 else dist
    close = (dist <= threshold) & ~torch.eye(len(a), dtype=torch.bool, device=a.device)
    same = labels[None] == labels[:, None]
    count = close.sum(1)
    agree = (close & same).sum(1).double()
    return torch.where(count > 0, agree / count.clamp(min=1), torch.zeros_like(agree))

