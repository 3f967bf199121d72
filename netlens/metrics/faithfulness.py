"""Faithfulness: does the model's score follow the pixels that the explanation ranks highest?

- :func:`deletion` and :func:`insertion` (Petsiuk et al., "RISE", BMVC 2018): remove (or insert)
  the most relevant pixels first, in ``steps`` equal steps, and follow the target probability; a
  faithful map makes the deletion curve fall fast (low AUC) and the insertion curve rise fast
  (high AUC).
- :func:`pixel_flipping` (Bach et al. 2015; Samek et al. 2017): the deletion curve of the raw
  target score with a chosen baseline, summarized by the AOPC (area over the curve).
- :func:`road` (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
  Methods", ICML 2022): remove a fraction of pixels and fill them by noisy linear imputation
  (:func:`noisy_linear_imputation`), so that the shape of the hole does not leak the ranking.
- :func:`average_drop` and :func:`increase_in_confidence` (Chattopadhay et al., "Grad-CAM++",
  WACV 2018): the target probability on the image weighted by the normalized map.

Every curve evaluates ``points x B`` perturbed images in chunks under a memory budget
(``batch_size=`` or ``max_memory=``), with a progress bar when it takes long; the result does not
depend on the chunking. Pixels are ranked by the map of :func:`~netlens.metrics.saliency_map`
(ties in the order of the flattened image); a pixel is removed in all channels at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, Literal, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from .._runtime import auto_batch_size, chunks, guarded, model_output, prepare, progress_bar
from ..attribution import baseline_image
from ..flat_model import FlatModel
from ..targets import Target, TargetLike
from ._maps import Reduce, bind_single, check_attr, saliency_map, target_score

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11+; the annotations are never evaluated

__all__ = [
    "Curve", "auc", "deletion", "insertion", "pixel_flipping", "road", "noisy_linear_imputation",
    "average_drop", "increase_in_confidence", "confidence_scores",
]

Score = Literal["softmax", "logit", "accuracy"]


@dataclasses.dataclass(frozen=True)
class Curve:
    """A perturbation curve: the target score of every image after each step.

    Attributes:
        fractions: ``(S,)`` float64, the fraction of pixels changed at each point (from 0).
        scores: ``(B, S)``, the score of each image at each point.
    """

    fractions: torch.Tensor
    scores: torch.Tensor

    @property
    def auc(self) -> torch.Tensor:
        """``(B,)`` area under each image's curve over ``fractions`` (trapezoid rule)."""
        return auc(self.fractions, self.scores)

    @property
    def aopc(self) -> torch.Tensor:
        """``(B,)`` area over the perturbation curve: the mean drop ``scores[0] - scores[k]``
        over the points (Samek et al. 2017)."""
        return (self.scores[:, :1] - self.scores).mean(1)

    @property
    def mean(self) -> torch.Tensor:
        """``(S,)`` the curve averaged over the images."""
        return self.scores.mean(0)


def auc(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under ``y`` (``(S,)`` or ``(B, S)``) over ``x`` (``(S,)``), per row.

    Raises:
        ValueError: fewer than two points, or ``x`` and ``y`` of different lengths.

    Example:
        >>> auc(torch.tensor([0.0, 0.5, 1.0]), torch.tensor([1.0, 1.0, 0.0])).item()
        0.75
    """
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.dim() != 1 or x.numel() < 2:
        raise ValueError(f"a curve needs at least 2 points to have an area, got x of shape "
                         f"{tuple(x.shape)}; use steps >= 1")
    if y.shape[-1] != x.numel():
        raise ValueError(f"y has {y.shape[-1]} points but x has {x.numel()}")
    return torch.trapezoid(y, x.to(y.dtype), dim=-1)


def _check_steps(steps: object) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1 (a curve with no steps has no area), got "
                         f"{steps!r}")
    return steps


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    values = [float(f) for f in fractions]
    if not values or any(not 0.0 < f <= 1.0 for f in values) or values != sorted(set(values)):
        raise ValueError(f"fractions must be increasing values in (0, 1], got {fractions!r}")
    return values


def _setup(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike, score: str,
           reduce: Reduce, batch_size: int | None, max_memory: int | None,
           ) -> tuple[FlatModel, torch.Tensor, torch.Tensor, Target, int]:
    """Validates, and returns the model, ``x``, the flat map, the targets and the chunk size."""
    if score not in ("softmax", "logit", "accuracy"):
        raise ValueError(f"score must be 'softmax', 'logit' or 'accuracy', got {score!r}")
    fm, x = prepare(model, x)
    check_attr(attr, x)
    flat = saliency_map(attr, reduce).flatten(1).to(x.device)
    fm.ensure_traced(x)
    if batch_size is None:
        batch_size = auto_batch_size(fm, x, backward=False, max_memory=max_memory)
    with guarded(fm):
        targets = bind_single(fm, x, target, batch_size, score)
    return fm, x, flat, targets, batch_size


def _order_ranks(flat: torch.Tensor, descending: bool) -> torch.Tensor:
    """``(B, N)`` position of each pixel in the order of change (0 = changed first)."""
    order = flat.argsort(dim=1, descending=descending, stable=True)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _run_curve(
    fm: FlatModel, x: torch.Tensor, position: torch.Tensor, counts: list[int],
    image_at: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    targets: Target, score: Score, batch_size: int, progress: bool | None, desc: str,
) -> torch.Tensor:
    """``(B, S)`` scores: point ``(k, b)`` is ``image_at(b, changed, k)`` where ``changed``
    ``(n, 1, H, W)`` marks the first ``counts[k]`` pixels of image ``b``'s order."""
    batch, points = x.shape[0], len(counts)
    counts_t = torch.tensor(counts, device=x.device)
    scores = x.new_empty(points * batch)
    shape = (-1, 1, *x.shape[2:])
    with guarded(fm), torch.no_grad(), progress_bar(points * batch, progress, desc) as bar:
        for part in chunks(points * batch, batch_size):
            index = torch.arange(part.start, part.stop, device=x.device)
            k, b = index // batch, index % batch
            changed = (position[b] < counts_t[k, None]).view(shape)
            tb = targets.take(b)
            scores[part] = target_score(tb, model_output(fm, image_at(b, changed, k), tb), score)
            bar.update(part.stop - part.start)
    return scores.view(points, batch).T


def _steps_curve(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike, *, steps: int,
    baseline: object, insert: bool, score: Score, reduce: Reduce, batch_size: int | None,
    max_memory: int | None, progress: bool | None, generator: torch.Generator | None,
    desc: str,
) -> Curve:
    steps = _check_steps(steps)
    fm, x, flat, targets, batch_size = _setup(model, x, attr, target, score, reduce, batch_size,
                                              max_memory)
    base = _perturbation_baseline(baseline, x, generator)
    start, end = (base, x) if insert else (x, base)
    n = flat.shape[1]
    counts = [round(k * n / steps) for k in range(steps + 1)]

    def image_at(b: torch.Tensor, changed: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return torch.where(changed, end[b], start[b])

    scores = _run_curve(fm, x, _order_ranks(flat, True), counts, image_at, targets, score,
                        batch_size, progress, desc)
    fractions = torch.tensor(counts, dtype=torch.float64) / n
    return Curve(fractions.to(x.device), scores)


def _perturbation_baseline(baseline: object, x: torch.Tensor,
                           generator: torch.Generator | None) -> torch.Tensor:
    """The image that replaces removed pixels: a number, a tensor broadcastable to ``x``,
    ``"blur"`` (a Gaussian blur of ``x``), ``"mean"`` (each image's channel means) or
    ``"uniform"`` (noise in each image's value range, from ``generator``)."""
    if isinstance(baseline, str) and baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    return baseline_image(baseline, x, generator).expand_as(x)


def deletion(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    steps: int = 16, baseline: float | str | torch.Tensor = 0.0, score: Score = "softmax",
    reduce: Reduce = "auto", batch_size: int | None = None, max_memory: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
) -> Curve:
    """The deletion curve: the target score as the most relevant pixels are replaced first.

    Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of Black-box Models",
    BMVC 2018. Lower :attr:`Curve.auc` is better.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        attr: their attributions ``(B, C, H, W)`` or maps ``(B, 1, H, W)``, at ``x``'s size.
        target: as for the attribution methods (:mod:`netlens.targets`); None: the predicted
            class. ``score="softmax"`` needs a class target; other targets are scored by their
            own score (with a warning).
        steps: the curve has ``steps + 1`` points, from 0 to all pixels replaced.
        baseline: what replaces a pixel: a number, a tensor broadcastable to ``x``, ``"blur"``,
            ``"mean"`` or ``"uniform"``.
        score: ``"softmax"`` (the target probability), ``"logit"`` or ``"accuracy"``.
        reduce: how ``attr`` becomes one map per image (:func:`~netlens.metrics.saliency_map`).
        batch_size: perturbed images per forward pass; default from ``max_memory``.
        max_memory: working-memory budget in bytes; default the attribution methods' budget.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        generator: the source of the ``"uniform"`` baseline.

    Returns:
        A :class:`Curve` with ``fractions`` ``(steps + 1,)`` and ``scores`` ``(B, steps + 1)``.

    Raises:
        ValueError: ``steps < 1``, an ``attr`` whose shape does not match ``x``, a bad input,
            target, baseline or score.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> deletion(lin, torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2), 0, steps=4).auc.shape
        torch.Size([1])
    """
    return _steps_curve(model, x, attr, target, steps=steps, baseline=baseline, insert=False,
                        score=score, reduce=reduce, batch_size=batch_size, max_memory=max_memory,
                        progress=progress, generator=generator, desc="deletion")


def insertion(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    steps: int = 16, baseline: float | str | torch.Tensor = "blur", score: Score = "softmax",
    reduce: Reduce = "auto", batch_size: int | None = None, max_memory: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
) -> Curve:
    """The insertion curve: starting from ``baseline`` (RISE: a blurred copy of the image), the
    most relevant pixels of ``x`` are put back first. Higher :attr:`Curve.auc` is better.

    Same arguments, result and errors as :func:`deletion`.
    """
    return _steps_curve(model, x, attr, target, steps=steps, baseline=baseline, insert=True,
                        score=score, reduce=reduce, batch_size=batch_size, max_memory=max_memory,
                        progress=progress, generator=generator, desc="insertion")


def pixel_flipping(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    steps: int = 16, baseline: float | str | torch.Tensor = "mean", score: Score = "logit",
    reduce: Reduce = "auto", batch_size: int | None = None, max_memory: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
) -> Curve:
    """Pixel flipping: the most relevant pixels first are set to ``baseline`` (default each
    image's channel means) and the raw target score is followed; :attr:`Curve.aopc` (the mean
    drop) summarizes it, higher is better. Bach et al., PLOS ONE 2015; Samek et al., IEEE TNNLS
    2017.

    Same arguments, result and errors as :func:`deletion`.
    """
    return _steps_curve(model, x, attr, target, steps=steps, baseline=baseline, insert=False,
                        score=score, reduce=reduce, batch_size=batch_size, max_memory=max_memory,
                        progress=progress, generator=generator, desc="pixel flipping")


# -- ROAD -----------------------------------------------------------------------------------

# Neighbour weights of the linear imputation (ROAD): 1/6 for the 4 direct neighbours, 1/12 for
# the diagonal ones, i.e. 2 : 1.
_NEIGHBOURS = torch.tensor([[1.0, 2.0, 1.0], [2.0, 0.0, 2.0], [1.0, 2.0, 1.0]])


def noisy_linear_imputation(
    x: torch.Tensor, removed: torch.Tensor, *, noise: float = 0.01,
    generator: torch.Generator | None = None, tol: float = 1e-6, max_iter: int = 500,
) -> torch.Tensor:
    """Fills the removed pixels of ``x`` with the weighted mean of their 8 neighbours (direct
    ones twice the weight of diagonal ones), solved jointly for all removed pixels, plus
    Gaussian noise of std ``noise``: the imputation of ROAD (Rong et al. 2022).

    The linear system (a graph Laplacian over the removed pixels, symmetric positive definite
    when each hole touches a kept pixel) is solved by conjugate gradients on every image and
    channel at once. An image with every pixel removed is filled with its own mean.

    Args:
        x: images ``(B, C, H, W)``.
        removed: bool ``(B, 1, H, W)``, the pixels to fill (all channels).
        noise: std of the Gaussian noise added to the filled pixels.
        generator: the noise's source (a fresh seed when None).
        tol: stop when every residual norm is below ``tol`` times its right-hand side's.
        max_iter: at most this many conjugate-gradient iterations.

    Returns:
        ``(B, C, H, W)``: ``x`` where kept, the imputation where removed.

    Example:
        >>> x = torch.arange(9.0).view(1, 1, 3, 3)
        >>> hole = torch.zeros(1, 1, 3, 3, dtype=torch.bool); hole[0, 0, 1, 1] = True
        >>> round(noisy_linear_imputation(x, hole, noise=0.0)[0, 0, 1, 1].item(), 4)
        4.0
    """
    if removed.shape != (x.shape[0], 1, *x.shape[2:]) or removed.dtype != torch.bool:
        raise ValueError(f"removed must be a bool tensor of shape ({x.shape[0]}, 1, "
                         f"{x.shape[2]}, {x.shape[3]}), got {removed.dtype} "
                         f"{tuple(removed.shape)}")
    filled = _linear_imputation(x, removed, tol=tol, max_iter=max_iter)
    if noise > 0:
        filled = torch.where(removed, filled + noise * _randn(x, generator), filled)
    return filled


def _randn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    gen = generator
    if gen is None:
        gen = torch.Generator(device=x.device)
        gen.seed()
    return torch.randn(x.shape, generator=gen, dtype=x.dtype, device=gen.device).to(x.device)


def _linear_imputation(x: torch.Tensor, removed: torch.Tensor, *, tol: float = 1e-6,
                       max_iter: int = 500) -> torch.Tensor:
    kept = (~removed).to(x.dtype)
    gone = removed.to(x.dtype).expand_as(x)
    c = x.shape[1]
    kernel = _NEIGHBOURS.to(device=x.device, dtype=x.dtype).view(1, 1, 3, 3).expand(c, 1, 3, 3)

    def neighbours(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, padding=1, groups=c)

    degree = neighbours(torch.ones_like(x))
    count = kept.sum((2, 3), keepdim=True)
    fill = torch.where(count > 0, (x * kept).sum((2, 3), keepdim=True) / count.clamp(min=1),
                       x.mean((2, 3), keepdim=True))
    # On the removed pixels: degree * v - neighbours(v) = neighbours(kept pixels of x). A tiny
    # pull towards the mean of the kept pixels keeps the system definite where a hole touches
    # no kept pixel (an image with every pixel removed) and changes nothing measurable elsewhere.
    eps = 1e-6

    def apply(v: torch.Tensor) -> torch.Tensor:
        return gone * ((degree + eps) * v - neighbours(v))

    rhs = gone * (neighbours(x * kept) + eps * fill)
    v = gone * fill
    r = rhs - apply(v)
    p = r.clone()
    rs = (r * r).sum((2, 3), keepdim=True)
    stop = (tol ** 2) * (rhs * rhs).sum((2, 3), keepdim=True)
    for _ in range(max_iter):
        if bool((rs <= stop).all()):
            break
        ap = apply(p)
        pap = (p * ap).sum((2, 3), keepdim=True)
        alpha = rs / torch.where(pap > 0, pap, torch.ones_like(pap))
        v = v + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum((2, 3), keepdim=True)
        p = r + rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)) * p
        rs = rs_new
    return torch.where(gone > 0, v, x)


def road(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    order: Literal["morf", "lerf"] = "morf", noise: float = 0.01, score: Score = "softmax",
    reduce: Reduce = "auto", batch_size: int | None = None, max_memory: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
) -> Curve:
    """ROAD, RemOve And Debias: the target score after a fraction of the pixels is removed and
    imputed by :func:`noisy_linear_imputation`. Rong et al., ICML 2022.

    With ``order="morf"`` (most relevant first) a faithful map gives a low curve (low AUC); with
    ``"lerf"`` (least relevant first) a high one. The curve starts with the unchanged image at
    fraction 0. ``generator`` draws the imputation noise. Other arguments as :func:`deletion`.

    Raises:
        ValueError: fractions that are not increasing in (0, 1], an unknown ``order``, and the
            errors of :func:`deletion`.
    """
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' (most relevant first) or 'lerf', got {order!r}")
    values = _check_fractions(fractions)
    fm, x, flat, targets, batch_size = _setup(model, x, attr, target, score, reduce, batch_size,
                                              max_memory)
    n = flat.shape[1]
    counts = [0] + [round(f * n) for f in values]
    # One noise image per input, drawn up front: the result does not depend on the chunking.
    jitter = noise * _randn(x, generator) if noise > 0 else torch.zeros_like(x)

    def image_at(b: torch.Tensor, changed: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        filled = _linear_imputation(x[b], changed)
        return torch.where(changed, filled + jitter[b], filled)

    scores = _run_curve(fm, x, _order_ranks(flat, order == "morf"), counts, image_at, targets,
                        score, batch_size, progress, f"ROAD ({order})")
    fractions_t = torch.tensor(counts, dtype=torch.float64, device=x.device) / n
    return Curve(fractions_t, scores)


# -- confidence ------------------------------------------------------------------------------

class _ConfidenceOptions(TypedDict, total=False):
    """The options of :func:`confidence_scores` that its two metrics pass on."""

    reduce: Reduce
    batch_size: int | None
    max_memory: int | None


def confidence_scores(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    reduce: Reduce = "auto", batch_size: int | None = None, max_memory: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Y, O)``, each ``(B,)``: the target probability on ``x`` and on ``x`` times its map
    (positive part, scaled to a maximum of 1), the two numbers of Grad-CAM++'s metrics."""
    fm, x, flat, targets, batch_size = _setup(model, x, attr, target, "softmax", reduce,
                                              batch_size, max_memory)
    m = flat.clamp(min=0)
    peak = m.amax(1, keepdim=True)
    m = (m / torch.where(peak > 0, peak, torch.ones_like(peak))).view(x.shape[0], 1,
                                                                       *x.shape[2:])
    ys, os = [], []
    with guarded(fm), torch.no_grad():
        for part in chunks(x.shape[0], batch_size):
            tp = targets.take(part)
            ys.append(target_score(tp, model_output(fm, x[part], tp), "softmax"))
            os.append(target_score(tp, model_output(fm, x[part] * m[part].to(x.dtype), tp),
                                   "softmax"))
    return torch.cat(ys), torch.cat(os)


def average_drop(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None,
                 **options: Unpack[_ConfidenceOptions]) -> torch.Tensor:
    """``(B,)`` relative drop in the target probability when the image is masked by its map,
    ``max(0, Y - O) / Y`` (Chattopadhay et al., WACV 2018; its mean x 100 is the paper's
    "average drop %"). Lower is better. Options as :func:`confidence_scores`.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> average_drop(lin, torch.rand(2, 1, 2, 2), torch.ones(2, 1, 2, 2), 0).tolist()
        [0.0, 0.0]
    """
    y, o = confidence_scores(model, x, attr, target, **options)
    return (y - o).clamp(min=0) / y.clamp(min=torch.finfo(y.dtype).tiny)


def increase_in_confidence(model: nn.Module, x: torch.Tensor, attr: torch.Tensor,
                           target: TargetLike = None, **options: Unpack[_ConfidenceOptions],
                           ) -> torch.Tensor:
    """``(B,)`` 1.0 where masking the image by its map *raises* the target probability, else 0.0
    (Chattopadhay et al. 2018; the mean x 100 is the paper's "% increase in confidence").
    Higher is better. Options as :func:`confidence_scores`."""
    y, o = confidence_scores(model, x, attr, target, **options)
    return (o > y).to(y.dtype)
