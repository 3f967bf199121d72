"""Gradient attributions: saliency, input × gradient, guided backprop, SmoothGrad, integrated
gradients, and the input gradient of one channel of one layer.

All are exact on every architecture: guided backprop changes the backward rule of *every*
ReLU-family call the adapter finds (modules, in-place, reused, functional ``F.relu``), where
other libraries only see ``nn.ReLU`` modules and silently fall back to plain gradients.

Methods that multiply passes (SmoothGrad samples, IG steps) evaluate ``count × B`` points in
sample-major order, point ``(k, b)`` being sample (or step) ``k`` of image ``b``, split into
passes of ``batch_size`` points. Noise is drawn and gradients are accumulated per sample ``k``
in increasing order, and targets (the predicted class too) are fixed once from the clean images,
so the result does not depend on the chunking: equal up to the round-off of the model's kernels
at different pass sizes, which is exact in float64 (tests/attribution/test_chunking.py) and
about 1e-7 relative in float32, where it can flip a ReLU whose input is that close to zero (on
SmoothGrad's noisy points up to 1e-3 relative, as for plain autograd at two batch sizes). A
model in training mode is explained in eval mode, so BatchNorm never mixes the images of a pass.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator
from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import nn

from .. import rules
from .._runtime import (
    along_path,
    auto_batch_size,
    bind,
    bind_part,
    check_count,
    check_generator,
    check_real,
    chunks,
    grad,
    guarded,
    model_output,
    prepare,
    scores_of,
    user_stacklevel,
    with_k,
)
from .._util import NetlensWarning
from ..flat_model import FlatModel
from ..targets import Channel, Target, TargetLike, as_target

__all__ = [
    "saliency", "input_x_gradient", "guided_backprop", "smooth_grad", "integrated_gradients",
    "layer_channel_gradient", "NetlensWarning", "baseline_image",
]

IGMethod = Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
                   "riemann_middle"]
SmoothVariant = Literal["mean", "squared", "vargrad"]

# Standard deviation of the "blur" IG baseline, as a fraction of the image's larger side.
BLUR_SIGMA = 0.1


@contextlib.contextmanager
def relu_rule(fm: FlatModel, rule: rules.Rule | None = None) -> Iterator[int]:
    """Inside the block, every ReLU-family call has the backward ``rule`` (default
    :class:`netlens.rules.Guided`: only positive gradients pass). Yields the number of ReLU
    calls changed; warns once if the model has none."""
    rule = rules.Guided() if rule is None else rule
    if not fm.relu_names:
        what = "guided backprop" if isinstance(rule, rules.Guided) else type(rule).__name__
        warnings.warn(
            f"{type(fm.model).__name__} has no ReLU-family call (ReLU or ReLU6, module or "
            f"functional), so no {type(rule).__name__} rule applies: {what} equals the plain "
            "gradient", NetlensWarning, stacklevel=user_stacklevel())
        yield 0
        return
    with rules.applied(fm, {rules.RELUS: rule}) as n:
        yield n



def _input_gradients(
    fm: FlatModel, x: torch.Tensor, target: TargetLike, *, guided: bool = False,
    rule: rules.Rule | None = None, batch_size: int | None = None,
) -> tuple[torch.Tensor, Target]:
    """d score / d x for every image (``(B, K, ...)`` for K targets), and the bound target,
    over chunks of the batch; ``guided`` or a ``rule`` changes every ReLU call's backward."""
    fm.ensure_traced(x)
    if batch_size is None:
        batch_size = auto_batch_size(fm, x)
    t = as_target(target, x.shape[0])
    grads, bound = [], []
    changed = guided or rule is not None
    with guarded(fm), (relu_rule(fm, rule) if changed else contextlib.nullcontext()):
        for part in chunks(x.shape[0], batch_size):
            xi = x[part].detach().requires_grad_(True)
            out = model_output(fm, xi, t)
            ti = bind_part(t, part, out)
            grads.append(grad(scores_of(ti, out), xi, k=t.k, allow_unused=True))
            bound.append(ti)
    return torch.cat(grads), type(bound[0]).cat(bound)


def _forward_scores(fm: FlatModel, x: torch.Tensor, target: Target,
                    batch_size: int) -> torch.Tensor:
    """The bound target's scores of ``x`` without gradients, in chunks: ``(B,)`` or ``(B, K)``."""
    with torch.no_grad():
        return torch.cat([scores_of(target.take(p), model_output(fm, x[p], target))
                          for p in chunks(x.shape[0], batch_size)])


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def saliency(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, abs: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The vanilla gradient of the target score with respect to the input.

    Simonyan et al., "Deep Inside Convolutional Networks", 2014.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64, on the model's device.
        target: what to explain (:mod:`netlens.targets`): a class per image (int, sequence or
            tensor of B ints, None for the predicted class), any target such as
            ``Segmentation(c)``, ``Detection(boxes)``, ``Similarity(ref)``, ``Channel(layer,
            c)``, or several per image (``TopK(k)``, a list of targets).
        abs: return the absolute value of the gradient.
        batch_size: images per pass; default from the memory budget.

    Returns:
        ``(B, C, H, W)`` tensor, ``x``'s dtype and device: ``d score_i / d x[i]``; with K
        targets per image ``(B, K, C, H, W)`` (one forward pass, one batched backward call).

    Raises:
        ValueError, TypeError: bad input or target (see :func:`~netlens._runtime.prepare`).
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> saliency(m, torch.rand(2, 3, 64, 64), target=[1, 2]).shape
        torch.Size([2, 3, 64, 64])
    """
    fm, x = prepare(model, x)
    g, _ = _input_gradients(fm, x, target, batch_size=batch_size)
    return g.abs() if abs else g


def input_x_gradient(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, guided: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Input × gradient (Shrikumar et al., 2016): ``x * d score / d x``.

    Args and returns as :func:`saliency`; ``guided=True`` multiplies the input by the
    guided-backprop gradient (:func:`guided_backprop`) instead.
    """
    fm, x = prepare(model, x)
    g, t = _input_gradients(fm, x, target, guided=guided, batch_size=batch_size)
    return with_k(x, t.k) * g


def guided_backprop(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, batch_size: int | None = None,
) -> torch.Tensor:
    """Guided backpropagation: the gradient with only positive gradients passed back through
    every ReLU-family call (Springenberg et al., "Striving for Simplicity", 2015).

    Every ReLU *call* is changed: ``nn.ReLU`` modules (in place or not), a module called several
    times, and functional ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` (GoogLeNet, Inception v3,
    DenseNet). A model with no ReLU call gets the plain gradient and one warning.

    Args and returns as :func:`saliency`.
    """
    fm, x = prepare(model, x)
    fm.ensure_traced(x)
    g, _ = _input_gradients(fm, x, target, guided=True, batch_size=batch_size)
    return g


def smooth_grad(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, n: int = 50,
    sigma: float = 0.15, guided: bool = False, variant: SmoothVariant = "mean",
    batch_size: int | None = None, progress: bool | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SmoothGrad: the gradient averaged over noisy copies of the input.

    Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017; the ``"squared"``
    variant is SmoothGrad² and ``"vargrad"`` the variance of the gradients (Adebayo et al.,
    "Local Explanation Methods for Deep Neural Networks Lack Sensitivity to Parameter Values",
    2018; Hooker et al., 2019).

    The noise of sample ``k`` (``k = 0 .. n-1``, in that order) is one draw
    ``torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)`` scaled per
    image by ``sigma * (x[b].max() - x[b].min())``. Targets are resolved once, on the clean
    input, and kept for every noisy copy.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: as in :func:`saliency`; ``None`` is the predicted class of the clean image.
        n: noisy samples per image.
        sigma: noise standard deviation as a fraction of each image's value range (>= 0).
        guided: average guided-backprop gradients (:func:`guided_backprop`) instead.
        variant: ``"mean"`` (mean gradient), ``"squared"`` (mean squared gradient) or
            ``"vargrad"`` (population variance of the gradients).
        batch_size: points per pass; default: as many images as fit the memory budget.
        progress: show a progress bar: None (when slow), True or False.
        generator: the source of the noise; default a fresh, nondeterministically seeded one.
            The global random state is never used.

    Returns:
        ``(B, C, H, W)`` tensor with ``x``'s dtype and device.

    Raises:
        ValueError, TypeError: bad input, target or option.
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> g = torch.Generator().manual_seed(0)
        >>> smooth_grad(m, torch.rand(1, 3, 32, 32), 3, n=4, generator=g).shape
        torch.Size([1, 3, 32, 32])
    """
    fm, x = prepare(model, x)
    n = check_count(n, "n")
    sigma = check_real(sigma, "sigma", minimum=0, what=" (a fraction of the image's value range)")
    if variant not in ("mean", "squared", "vargrad"):
        raise ValueError(f"variant must be 'mean', 'squared' or 'vargrad', got {variant!r}")
    generator = check_generator(generator, x)
    fm.ensure_traced(x)
    batch_size = auto_batch_size(fm, x) if batch_size is None else batch_size
    scale = float(sigma) * _per_image(x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
    noise: list = [-1, None]  # (k, noise of sample k): one sample's noise in memory, not n

    def point(k: int, rows: slice) -> torch.Tensor:
        while noise[0] < k:  # k never decreases, so samples are drawn in order
            noise[1] = torch.randn(x.shape, generator=generator, dtype=x.dtype,
                                   device=x.device) * scale
            noise[0] += 1
        return x[rows] + noise[1][rows]

    with guarded(fm):
        t = bind(fm, x, target, batch_size)  # once, on the clean images
        shape = x.shape if t.k is None else (x.shape[0], t.k, *x.shape[1:])
        total, spread = x.new_zeros(shape), x.new_zeros(shape)

        def add(k: int, rows: slice, g: torch.Tensor) -> None:
            if variant == "mean":
                total[rows] += g
            elif variant == "squared":
                total[rows] += g * g
            else:  # Welford's update: the variance without cancellation
                delta = g - total[rows]
                total[rows] += delta / (k + 1)
                spread[rows] += delta * (g - total[rows])

        with relu_rule(fm) if guided else contextlib.nullcontext():
            along_path(fm, x, t, n, point, add, batch_size=batch_size,
                        progress=progress, desc="SmoothGrad")
    return spread / n if variant == "vargrad" else total / n


def _quadrature(method: str, steps: int) -> tuple[list[float], list[float]]:
    """Points ``alpha_k`` in [0, 1] and weights ``w_k`` of Captum's integration rules.

    Gauss–Legendre: the Legendre nodes and weights mapped from [-1, 1] to [0, 1]. Riemann rules
    use ``steps`` points with weight ``1/steps`` each: left ``k/n``, right ``(k+1)/n``, middle
    ``(k+1/2)/n``; trapezoid puts the points at ``k/(n-1)`` and halves the two end weights, so
    that its weights sum to ``1 - 1/n`` (Captum's convention, kept for agreement).
    """
    import numpy as np

    rules = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
             "riemann_middle")
    if method not in rules:
        raise ValueError(f"method must be one of {', '.join(map(repr, rules))}; got {method!r}")
    steps = check_count(steps, "steps", 1 if method == "gausslegendre" else 2)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (0.5 * (1 + nodes)).tolist(), (0.5 * weights).tolist()
    first, last = {"riemann_trapezoid": (0.0, 1.0), "riemann_left": (0.0, 1 - 1 / steps),
                   "riemann_right": (1 / steps, 1.0),
                   "riemann_middle": (0.5 / steps, 1 - 0.5 / steps)}[method]
    w = [1 / steps] * steps
    if method == "riemann_trapezoid":
        w[0] = w[-1] = 0.5 / steps
    return np.linspace(first, last, steps).tolist(), w


def _blur(x: torch.Tensor) -> torch.Tensor:
    """``x`` blurred by a Gaussian of std ``BLUR_SIGMA * max(H, W)`` pixels (replicate edges)."""
    sigma = BLUR_SIGMA * max(x.shape[2], x.shape[3])
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    c = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def baseline_image(baseline: object, x: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The reference images of an integrated-gradients path or of a perturbation metric.

    Args:
        baseline: None or ``"zeros"``, ``"blur"`` (a Gaussian blur of ``x``, sigma a tenth of
            the larger side), ``"uniform"`` (noise within each image's value range), a number,
            or a tensor that broadcasts to ``x``.
        x: images ``(B, C, H, W)``.
        generator: the noise of ``"uniform"``.

    Returns:
        A tensor of ``x``'s shape, dtype and device.

    Raises:
        ValueError, TypeError: an unknown name, a non-finite value, a shape that does not
            broadcast.
    """
    if baseline is None or (isinstance(baseline, str) and baseline == "zeros"):
        return torch.zeros_like(x)
    if isinstance(baseline, str):
        if baseline == "blur":
            return _blur(x)
        if baseline == "uniform":
            lo, hi = _per_image(x.amin(dim=(1, 2, 3))), _per_image(x.amax(dim=(1, 2, 3)))
            u = torch.rand(x.shape, generator=check_generator(generator, x), dtype=x.dtype,
                           device=x.device)
            return lo + (hi - lo) * u
        raise ValueError(f"baseline must be None, 'zeros', 'blur', 'uniform', a number or a "
                         f"tensor; got {baseline!r}")
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        if not math.isfinite(baseline):
            raise ValueError(f"the baseline must be finite, got {baseline!r}")
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(f"baseline must be None, a string, a number or a tensor, got "
                        f"{type(baseline).__name__}")
    b = baseline.detach().to(dtype=x.dtype, device=x.device)
    try:
        b = b.broadcast_to(x.shape)
    except RuntimeError:
        raise ValueError(f"a baseline of shape {tuple(baseline.shape)} does not broadcast to the "
                         f"input's shape {tuple(x.shape)}") from None
    if not bool(torch.isfinite(b).all()):
        raise ValueError("the baseline contains NaN or infinite values")
    return b


@overload
def integrated_gradients(
    model: nn.Module, x: torch.Tensor, target: TargetLike = ..., *, steps: int = ...,
    baseline: object = ..., method: IGMethod = ..., guided: bool = ...,
    return_delta: Literal[False] = ...,
    batch_size: int | None = ..., progress: bool | None = ...,
    generator: torch.Generator | None = ...,
) -> torch.Tensor: ...


@overload
def integrated_gradients(
    model: nn.Module, x: torch.Tensor, target: TargetLike = ..., *, steps: int = ...,
    baseline: object = ..., method: IGMethod = ..., guided: bool = ...,
    return_delta: Literal[True],
    batch_size: int | None = ..., progress: bool | None = ...,
    generator: torch.Generator | None = ...,
) -> tuple[torch.Tensor, torch.Tensor]: ...


def integrated_gradients(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, steps: int = 50,
    baseline: object = None, method: IGMethod = "gausslegendre", guided: bool = False,
    return_delta: bool = False, batch_size: int | None = None, progress: bool | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients: ``(x - b) ⊙ Σ_k w_k ∇f(b + α_k (x - b))``.

    Sundararajan et al., "Axiomatic Attribution for Deep Networks", 2017. The points ``α_k`` and
    weights ``w_k`` follow Captum's rules exactly (see ``method``), so the two agree.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: as in :func:`saliency`; ``None`` is the predicted class of ``x`` (resolved once).
        steps: points on the path (>= 2 for the Riemann rules).
        baseline: ``None`` or ``"zeros"`` (black), a number (a constant image), a tensor that
            broadcasts to ``x``, ``"blur"`` (``x`` blurred by a Gaussian of standard deviation
            ``BLUR_SIGMA * max(H, W)`` = a tenth of the larger side, in pixels) or
            ``"uniform"`` (uniform noise in ``[x[b].min(), x[b].max()]`` per image, from
            ``generator``).
        method: ``"gausslegendre"`` (Captum's default), ``"riemann_trapezoid"``,
            ``"riemann_left"``, ``"riemann_right"`` or ``"riemann_middle"``. Captum's
            trapezoid weights sum to ``1 - 1/steps``, so its completeness gap is about
            ``(f(x) - f(b)) / steps``.
        guided: integrate guided-backprop gradients (every ReLU call passes only positive
            gradients, :func:`guided_backprop`) instead of plain ones: Netlens 1.x's guided
            integrated gradients. Completeness no longer holds then (``return_delta`` says by
            how much).
        return_delta: also return the completeness gap ``Σ attr - (f(x) - f(b))`` per image.
        batch_size: points per pass; default: as many images as fit the memory budget.
        progress: show a progress bar: None (when slow), True or False.
        generator: the source of the ``"uniform"`` baseline; unused otherwise.

    Returns:
        ``(B, C, H, W)`` tensor with ``x``'s dtype and device; with ``return_delta=True`` also
        the ``(B,)`` delta.

    Raises:
        ValueError, TypeError: bad input, target, baseline, method or steps.
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> attr, delta = integrated_gradients(m, torch.rand(1, 3, 32, 32), 3, steps=8,
        ...                                    return_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([1, 3, 32, 32]), torch.Size([1]))
    """
    fm, x = prepare(model, x)
    alphas, weights = _quadrature(method, steps)
    base = baseline_image(baseline, x, generator)
    fm.ensure_traced(x)
    batch_size = auto_batch_size(fm, x) if batch_size is None else batch_size
    diff = x - base
    alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device)
    weight = torch.tensor(weights, dtype=x.dtype, device=x.device)

    def point(k: int, rows: slice) -> torch.Tensor:
        return base[rows] + alpha[k] * diff[rows]

    with guarded(fm):
        t = bind(fm, x, target, batch_size)  # once, on the clean images
        total = x.new_zeros(x.shape if t.k is None else (x.shape[0], t.k, *x.shape[1:]))

        def add(k: int, rows: slice, g: torch.Tensor) -> None:
            total[rows] += weight[k] * g

        with relu_rule(fm) if guided else contextlib.nullcontext():
            along_path(fm, x, t, len(alphas), point, add, batch_size=batch_size,
                        progress=progress, desc="Integrated gradients")
        attr = with_k(diff, t.k) * total
        if not return_delta:
            return attr
        gain = _forward_scores(fm, x, t, batch_size) - _forward_scores(fm, base, t, batch_size)
    return attr, attr.flatten(attr.dim() - 3).sum(-1) - gain


def layer_channel_gradient(
    model: nn.Module, x: torch.Tensor, *, layer: str, channel: int,
    reduce: Literal["mean", "sum"] = "mean", guided: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The input gradient of one channel of one layer: ``d reduce(A[channel]) / d x``.

    The layer's output is viewed as a ``(B, C, h, w)`` map (token and channels-last layers
    included, see :class:`~netlens.adapter.Layout`) and the channel's mean (or sum) over
    positions is differentiated. The forward pass stops right after the layer. This is the
    original netlens feature gradient (cf. Erhan et al., "Visualizing Higher-Layer Features of
    a Deep Network", 2009; Simonyan et al., 2014).

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        layer: a layer name of ``FlatModel(model).layer_names``.
        channel: the channel index, ``0 <= channel < C`` of that layer.
        reduce: ``"mean"`` or ``"sum"`` over the channel's positions.
        guided: the guided-backprop gradient (only positive gradients through every ReLU
            call below the layer), Netlens 1.x's guided feature gradient.
        batch_size: images per pass; default from the memory budget.

    Returns:
        ``(B, C, H, W)`` tensor with ``x``'s dtype and device.

    Raises:
        UnknownLayerError: a name that is not a layer (a ``ValueError``, with close matches).
        ValueError: a channel out of range (the message gives the layer's channel count), a bad
            ``reduce``, or a bad input.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> layer_channel_gradient(m, torch.rand(1, 3, 32, 32), layer="layer2", channel=5).shape
        torch.Size([1, 3, 32, 32])
    """
    fm, x = prepare(model, x)
    fm.ensure_traced(x)
    name = fm.resolve_layer(layer)
    target = Channel(name, channel, reduce)
    g, _ = _input_gradients(fm, x, target, guided=guided, batch_size=batch_size)
    return g
