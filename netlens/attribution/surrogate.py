"""Surrogate models: LIME and KernelSHAP, a weighted linear model of the target score over
which regions of the image are kept.

Each sample is a 0/1 vector over the ``S`` regions (:mod:`netlens.segments`): kept regions show
the image, the others the baseline. The model scores every sample's image (in chunks under the
memory budget), and a weighted least-squares fit with an intercept, solved in torch on the
input's device (float64), gives one coefficient per region, painted back onto its pixels.
The samples are the same for every image and drawn from ``generator`` in a fixed order, or
given (``samples=``), so the result does not depend on ``batch_size`` and an image explained
alone gets the map it gets in a batch.

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> g = torch.Generator().manual_seed(0)
    >>> kernel_shap(m, torch.rand(1, 3, 32, 32), n=16, segments=3, generator=g).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import nn

from .._runtime import check_count, check_generator, check_real, guarded, prepare, progress_bar
from ..segments import SegmentsLike, as_segments, paint
from ..targets import TargetLike, as_target
from .perturbation import as_baseline, bind_scores, pass_size, per_image, score_perturbations

__all__ = ["lime", "kernel_shap", "fit_linear", "kernel_shap_samples"]

# KernelSHAP's weight of the all-on and all-off samples, which the Shapley kernel weighs
# infinitely (they pin the intercept and the sum of the values); Captum's and shap's choice.
ENDPOINT_WEIGHT = 1e6


def _fit_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def fit_linear(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float = 0.0,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted least squares with an intercept, batched: ``argmin sum_i w_i (y_i - c - z_i.b)^2
    + alpha |b|^2`` (the intercept not penalized), the minimum-norm solution where the samples
    do not determine it (sklearn's ``LinearRegression`` / ``Ridge`` with ``sample_weight``).

    Args:
        z: ``(B or 1, n, S)`` samples.
        y: ``(B, n, T)`` targets (T outputs share the samples).
        w: ``(B or 1, n)`` positive weights.
        alpha: the ridge penalty (0: plain least squares).

    Returns:
        ``(coefficients (B, S, T), intercepts (B, T))``, in ``y``'s dtype.
    """
    dtype = _fit_dtype(y.device)
    z, yy, w = z.to(dtype), y.to(dtype), w.to(dtype)
    share = w / w.sum(1, keepdim=True)
    zm = (share[..., None] * z).sum(1, keepdim=True)  # (B|1, 1, S)
    ym = (share[..., None] * yy).sum(1, keepdim=True)  # (B, 1, T)
    root = w.sqrt()[..., None]
    zc, yc = (z - zm) * root, (yy - ym) * root
    if alpha > 0:
        gram = zc.transpose(1, 2) @ zc
        eye = torch.eye(z.shape[2], dtype=dtype, device=z.device)
        coef = torch.linalg.solve(gram + alpha * eye, zc.transpose(1, 2) @ yc)
    else:
        coef = torch.linalg.pinv(zc) @ yc
    coef = coef.expand(yy.shape[0], *coef.shape[1:])
    intercept = (ym - zm @ coef)[:, 0]
    return coef.to(y.dtype), intercept.to(y.dtype)


def kernel_shap_samples(n: int, count: int, generator: torch.Generator,
                        device: torch.device | None = None) -> torch.Tensor:
    """KernelSHAP's ``(n, S)`` 0/1 samples: all regions on, all off, then samples with ``k``
    regions on, ``k`` drawn with probability proportional to ``(S - 1) / (k (S - k))`` (the
    Shapley kernel times the ``C(S, k)`` subsets of that size) and the subset uniformly, so
    that every sample but the two endpoints has the same weight (Lundberg & Lee, 2017)."""
    ends = torch.stack([torch.ones(count, device=device), torch.zeros(count, device=device)])
    if n <= 2 or count == 1:
        return ends.repeat((n + 1) // 2, 1)[:n]
    k = torch.arange(1, count, dtype=torch.float64, device=device)
    sizes = torch.multinomial((count - 1) / (k * (count - k)), n - 2, replacement=True,
                              generator=generator) + 1
    order = torch.rand(n - 2, count, generator=generator, device=device).argsort(1)
    inside = order.argsort(1) < sizes[:, None]  # a uniform subset of each size
    return torch.cat([ends, inside.to(ends.dtype)])


def _check_samples(samples: torch.Tensor, n: int | None, count: int, batch: int,
                   device: torch.device) -> torch.Tensor:
    s = torch.as_tensor(samples, device=device)
    if s.dim() == 2:
        s = s[None]
    if s.dim() != 3 or s.shape[0] not in (1, batch) or s.shape[2] != count or s.shape[1] < 1:
        raise ValueError(f"samples must be (n, {count}) (or ({batch}, n, {count})) 0/1 values, "
                         f"one column per region, got {tuple(torch.as_tensor(samples).shape)}")
    if not bool(((s == 0) | (s == 1)).all()):
        raise ValueError("samples must hold only 0 and 1 (region off / on)")
    if n is not None and n != s.shape[1]:
        raise ValueError(f"n={n} but samples has {s.shape[1]} rows; give one of them")
    return s.float()


def _surrogate(model: nn.Module, x: torch.Tensor, target: TargetLike, *, n: int | None,
               segments: SegmentsLike, baseline: float | torch.Tensor, kernel: str,
               kernel_width: float, alpha: float, batch_size: int | None,
               progress: bool | None, generator: torch.Generator | None,
               samples: torch.Tensor | None, name: str,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The fitted coefficients ``(B, [K,] S)`` and the painted map of LIME or KernelSHAP."""
    fm, x = prepare(model, x)
    if n is not None:
        n = check_count(n, "n")
    labels, count = as_segments(segments, x, "segments")
    base = as_baseline(baseline, x)
    batch = x.shape[0]
    if labels.shape[0] > 1:
        present = torch.zeros(batch, count, dtype=torch.bool, device=x.device)
        present.scatter_(1, labels.flatten(1), True)
        if not bool(present.all()):  # images with different regions: no phantom columns
            return _by_region_count(
                fm, x, target, present, labels, base, n=n, kernel=kernel,
                kernel_width=kernel_width, alpha=alpha, batch_size=batch_size,
                progress=progress, generator=check_generator(generator, x), samples=samples,
                name=name)
    if samples is not None:
        z = _check_samples(samples, n, count, batch, x.device)
    else:
        g = check_generator(generator, x)
        draws = 1000 if n is None else n
        if kernel == "shap":
            z = kernel_shap_samples(draws, count, g, x.device)[None]
        else:
            z = torch.bernoulli(torch.full((1, draws, count), 0.5, device=x.device),
                                generator=g)
    draws = z.shape[1]
    keep = z.bool()
    regions = labels.expand(batch, *labels.shape[1:])
    cosine = x.new_empty(batch * draws) if kernel == "exp" else None

    def build(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, sample = index // draws, index % draws
        rows = keep[image if keep.shape[0] > 1 else torch.zeros_like(image), sample]
        on = rows.gather(1, regions[image].flatten(1)).view(-1, *regions.shape[1:])
        images = torch.where(on, x[image], per_image(base, image))
        if cosine is not None:
            cosine[index] = F.cosine_similarity(x[image].flatten(1), images.flatten(1), dim=1)
        return images, image

    bs = pass_size(fm, x, batch_size)
    with guarded(fm), torch.no_grad(), progress_bar(batch * draws, progress, name) as bar:
        t, _ = bind_scores(fm, x, target, bs)
        scores = score_perturbations(fm, t, batch * draws, build, bs, bar, x.device)
    y = scores.view(batch, draws, -1)
    if cosine is not None:  # LIME: an exponential kernel on the cosine distance to x
        distance = 1 - cosine.view(batch, draws).to(_fit_dtype(x.device))
        w = torch.exp(-distance ** 2 / (2 * kernel_width ** 2))
    else:
        ends = (z.sum(2) == 0) | (z.sum(2) == count)
        w = torch.where(ends, ENDPOINT_WEIGHT, 1.0).to(_fit_dtype(x.device))
    coef, _ = fit_linear(z, y, w, alpha)  # (B, S, T)
    values = coef[..., 0] if t.k is None else coef.transpose(1, 2)
    return values, paint(values, labels)


def _by_region_count(
    fm: nn.Module, x: torch.Tensor, target: TargetLike, present: torch.Tensor,
    labels: torch.Tensor, base: torch.Tensor, *, n: int | None, kernel: str,
    kernel_width: float, alpha: float, batch_size: int | None, progress: bool | None,
    generator: torch.Generator, samples: torch.Tensor | None, name: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_surrogate` for a batch whose images hold different regions (superpixels of each
    image, numbered jointly): a column of a region that an image lacks would be fitted to noise
    (LIME) or change the Shapley kernel's size (KernelSHAP). Each image's regions are numbered
    ``0..S_b - 1`` in the joint order, and the images with the same ``S_b`` are fitted
    together on samples drawn from the generator's state at the call, so each image gets the
    map it gets alone. Given ``samples`` ``(n, S)`` are read at each image's own columns. The
    coefficients come back in the joint numbering, 0 for an image's missing regions."""
    batch, count = present.shape
    t = as_target(target, batch)
    start = generator.get_state()
    counts = present.sum(1)
    values: torch.Tensor | None = None
    attr: torch.Tensor | None = None
    given = None if samples is None else _check_samples(samples, n, count, batch, x.device)
    for c in sorted(set(counts.tolist())):
        idx = (counts == c).nonzero()[:, 0]
        rank = present[idx].long().cumsum(1) - 1  # an image's own number of each region
        local = rank.gather(1, labels[idx].flatten(1)).view(-1, *labels.shape[1:])
        sub = None
        if given is not None:
            rows = given.expand(batch, -1, -1)[idx]  # (m, n, S) -> (m, n, c)
            sub = torch.stack([r[:, present[i]] for r, i in zip(rows, idx.tolist())])
        generator.set_state(start)
        v, a = _surrogate(fm, x[idx], t.take(idx), n=n, segments=local,
                          baseline=per_image(base, idx), kernel=kernel,
                          kernel_width=kernel_width, alpha=alpha, batch_size=batch_size,
                          progress=progress, generator=generator, samples=sub, name=name)
        if values is None:
            values = v.new_zeros(batch, *v.shape[1:-1], count)
            attr = a.new_zeros(batch, *a.shape[1:])
        assert attr is not None
        columns = present[idx]  # (m, S): where each image's c values go
        full = v.new_zeros(len(idx), *v.shape[1:-1], count)
        full[columns.view(len(idx), *([1] * (v.dim() - 2)), count).expand_as(full)] = \
            v.reshape(-1)
        values[idx] = full
        attr[idx] = a
    assert values is not None and attr is not None
    return values, attr


@overload
def lime(model: nn.Module, x: torch.Tensor, target: TargetLike = ..., *, n: int | None = ...,
         kernel_width: float = ..., segments: SegmentsLike = ...,
         baseline: float | torch.Tensor = ..., alpha: float = ...,
         return_coefficients: Literal[False] = ..., batch_size: int | None = ...,
         progress: bool | None = ..., generator: torch.Generator | None = ...,
         samples: torch.Tensor | None = ...) -> torch.Tensor: ...


@overload
def lime(model: nn.Module, x: torch.Tensor, target: TargetLike = ..., *, n: int | None = ...,
         kernel_width: float = ..., segments: SegmentsLike = ...,
         baseline: float | torch.Tensor = ..., alpha: float = ...,
         return_coefficients: Literal[True], batch_size: int | None = ...,
         progress: bool | None = ..., generator: torch.Generator | None = ...,
         samples: torch.Tensor | None = ...) -> tuple[torch.Tensor, torch.Tensor]: ...


def lime(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, n: int | None = None,
    kernel_width: float = 1.0, segments: SegmentsLike = None,
    baseline: float | torch.Tensor = 0.0, alpha: float = 0.0, return_coefficients: bool = False,
    batch_size: int | None = None, progress: bool | None = None,
    generator: torch.Generator | None = None, samples: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LIME: a local linear model of the target score over which regions are kept.

    Ribeiro, Singh & Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any
    Classifier", KDD 2016. Each region is kept with probability 1/2; a sample weighs
    ``exp(-d^2 / (2 kernel_width^2))`` with ``d`` the cosine distance between the image and
    its perturbed copy (Captum's ``Lime`` kernel); the fit is weighted least squares with an
    intercept (``alpha > 0``: ridge; Captum's default is an sklearn Lasso, LIME's a ridge).

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: anything :func:`netlens.targets.as_target` accepts (None: the predicted class).
        n: the number of samples (None: 1000, or the rows of ``samples``); an image costs
            ``n`` forward passes.
        kernel_width: the width of the similarity kernel on the cosine distance.
        segments: the regions, an int tensor ``(B or 1, 1 or C, H, W)``, an int (a grid of that
            many cells per side) or None (a 7 x 7 grid); :mod:`netlens.segments` makes
            superpixels.
        baseline: a region's "off" value: a float or a tensor broadcastable to ``x``.
        alpha: the ridge penalty of the coefficients (0: least squares).
        return_coefficients: also return the ``(B, [K,] S)`` coefficients.
        batch_size: perturbed images per forward pass; the result does not depend on it.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        generator: the samples' generator (never the global random state).
        samples: ``(n, S)`` (or ``(B, n, S)``) 0/1 samples to use instead of random ones,
            column ``s`` the ``s``-th smallest region number.

    Returns:
        ``(B, Cm, H, W)`` (``(B, K, Cm, H, W)`` for K targets), ``x``'s dtype: each region's
        coefficient on its pixels; with ``return_coefficients=True`` also the coefficients.

    Raises:
        ValueError: ``n < 1``, bad ``samples``, a non-positive ``kernel_width``, a negative
            ``alpha``, a bad segmentation, baseline, input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> g = torch.Generator().manual_seed(0)
        >>> lime(lin, torch.rand(1, 1, 4, 4), 1, n=32, segments=2, generator=g).shape
        torch.Size([1, 1, 4, 4])
    """
    width = check_real(kernel_width, "kernel_width")
    if width <= 0:
        raise ValueError(f"kernel_width must be positive, got {kernel_width!r}")
    values, attr = _surrogate(
        model, x, target, n=n, segments=segments, baseline=baseline, kernel="exp",
        kernel_width=width, alpha=check_real(alpha, "alpha", minimum=0.0),
        batch_size=batch_size, progress=progress, generator=generator, samples=samples,
        name="lime")
    return (attr, values) if return_coefficients else attr


@overload
def kernel_shap(model: nn.Module, x: torch.Tensor, target: TargetLike = ..., *,
                n: int | None = ..., segments: SegmentsLike = ...,
                baseline: float | torch.Tensor = ...,
                return_coefficients: Literal[False] = ..., batch_size: int | None = ...,
                progress: bool | None = ..., generator: torch.Generator | None = ...,
                samples: torch.Tensor | None = ...) -> torch.Tensor: ...


@overload
def kernel_shap(model: nn.Module, x: torch.Tensor, target: TargetLike = ..., *,
                n: int | None = ..., segments: SegmentsLike = ...,
                baseline: float | torch.Tensor = ...,
                return_coefficients: Literal[True], batch_size: int | None = ...,
                progress: bool | None = ..., generator: torch.Generator | None = ...,
                samples: torch.Tensor | None = ...) -> tuple[torch.Tensor, torch.Tensor]: ...


def kernel_shap(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, n: int | None = None,
    segments: SegmentsLike = None, baseline: float | torch.Tensor = 0.0,
    return_coefficients: bool = False, batch_size: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
    samples: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """KernelSHAP: Shapley values of the regions from a weighted linear fit.

    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017. The
    samples follow the Shapley kernel (``kernel_shap_samples``: all on, all off, then
    subsets drawn by size), so each weighs 1, the two endpoints ``1e6`` (they pin the intercept
    to ``f(baseline)`` and the values' sum to ``f(x) - f(baseline)``), as Captum's
    ``KernelShap`` does; the fit is least squares with an intercept. On a model linear in the
    regions the coefficients are its exact Shapley values.

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: anything :func:`netlens.targets.as_target` accepts (None: the predicted class).
        n: the number of samples (None: 1000, or the rows of ``samples``).
        segments: the regions, as ``lime``'s.
        baseline: a region's "off" value: a float or a tensor broadcastable to ``x``.
        return_coefficients: also return the ``(B, [K,] S)`` Shapley values.
        batch_size: perturbed images per forward pass; the result does not depend on it.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        generator: the samples' generator (never the global random state).
        samples: ``(n, S)`` (or ``(B, n, S)``) 0/1 samples to use instead of random ones;
            rows with all regions on or off weigh ``1e6``, the others 1.

    Returns:
        ``(B, Cm, H, W)`` (``(B, K, Cm, H, W)`` for K targets): each region's Shapley value
        on its pixels; with ``return_coefficients=True`` also the values.

    Raises:
        ValueError: ``n < 1``, bad ``samples``, a bad segmentation, baseline, input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> g = torch.Generator().manual_seed(0)
        >>> kernel_shap(lin, torch.rand(1, 1, 4, 4), 1, n=32, segments=2, generator=g).shape
        torch.Size([1, 1, 4, 4])
    """
    values, attr = _surrogate(
        model, x, target, n=n, segments=segments, baseline=baseline, kernel="shap",
        kernel_width=1.0, alpha=0.0, batch_size=batch_size, progress=progress,
        generator=generator, samples=samples, name="kernel shap")
    return (attr, values) if return_coefficients else attr
