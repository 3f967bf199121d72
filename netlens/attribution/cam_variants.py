"""More class activation maps, each one variant of :func:`~netlens.attribution.cam.cam_driver`.

Gradient variants (:func:`gradcam_elementwise`, :func:`eigengradcam`,
:func:`smoothgradcam_pp`), the classifier-weight CAM of Zhou et al. (:func:`cam`), a random
baseline (:func:`randomcam`), and perturbation variants that score masked inputs
(:func:`sscam`, :func:`iscam`) or a layer output with one channel removed
(:func:`ablationcam`, through the driver's writable layer view: the model's modules are never
swapped). Results are raw maps as in :mod:`netlens.attribution.cam`: never normalized, ReLU and
bilinear upsampling as options, a K axis with K targets per image.

Stochastic variants draw from their ``generator=`` only, in a documented order, so a result is
reproduced by the same generator and does not depend on ``batch_size``.

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> class_activation_map(m, torch.rand(2, 3, 64, 64), target=[1, 2]).shape
    torch.Size([2, 1, 64, 64])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._runtime import (
    check_count,
    check_generator,
    check_real,
    chunks,
    grad,
    guarded,
    model_output,
    prepare,
    progress_bar,
    scores_of,
)
from ..adapter import LayoutLike
from ..flat_model import FlatModel
from ..targets import TargetLike
from .cam import (
    CamContext,
    Interpolate,
    _FromAG,
    _FromContext,
    _safe_divide,
    _spatial_layer,
    cam_driver,
)

__all__ = [
    "gradcam_elementwise", "eigengradcam", "randomcam", "class_activation_map", "ablationcam",
    "sscam", "iscam", "smoothgradcam_pp",
]


def _run(
    model: nn.Module, x: torch.Tensor, target: TargetLike, variant: _FromAG | _FromContext, *,
    layer: str | None, interpolate: Interpolate, relu: bool, batch_size: int | None,
    layout: LayoutLike | None, progress: bool | None = None, normalize: bool = False,
) -> torch.Tensor:
    return cam_driver(model, x, target, variant, layer=layer, interpolate=interpolate,
                      relu=relu, normalize=normalize, batch_size=batch_size, progress=progress,
                      layout=layout)[0]


# -- gradient variants -----------------------------------------------------------------------
def _elementwise_weights(acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    assert grads is not None
    return (grads * acts).clamp(min=0)


def _principal(m: torch.Tensor) -> torch.Tensor:
    """Per-channel contributions of the projection of ``m`` (``(..., C, h, w)``), centred per
    channel, on its first principal direction ``v`` over channels, the sign chosen so that
    ``sum_c v_c >= 0`` (SVD leaves it arbitrary)."""
    centred = m - m.mean(dim=(-2, -1), keepdim=True)
    matrix = centred.flatten(-2).transpose(-1, -2)  # (..., h*w, C)
    _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    v = vh[..., 0, :]
    v = torch.where(v.sum(dim=-1, keepdim=True) < 0, -v, v)
    return v[..., None, None] * centred


def _eigengrad_weights(acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    assert grads is not None
    return _principal(grads * acts)


def gradcam_elementwise(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: str | None = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
) -> torch.Tensor:
    """Element-wise Grad-CAM: ``relu(sum_c relu(dy/dA_c * A_c))``, positive products only.

    pytorch-grad-cam's ``GradCAMElementWise`` (Gildenblat et al., "PyTorch library for CAM
    methods", 2021): like HiResCAM, but each position's gradient-activation product is clipped
    at zero before the channels are summed.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64, on the model's device.
        target: any target of :mod:`netlens.targets` (class per image, None for the
            predicted class, several per image for a K axis).
        layer: the layer name; None takes the last spatial layer (for a ViT, the input of its
            last attention).
        interpolate: upsample the map bilinearly (``align_corners=False``) to ``(H, W)``.
        relu: keep only positive evidence.
        batch_size: images per forward/backward pass; default from the memory budget.
        layout: how to view ``layer``'s output as a ``[B, C, h, w]`` map (see
            :func:`~netlens.attribution.cam.gradcam`).

    Returns:
        ``(B, 1, H, W)`` (``(B, K, 1, H, W)`` for K targets; ``(h, w)`` maps with
        ``interpolate="none"``), ``x``'s dtype and device; raw values, not normalized.

    Raises:
        ValueError: an unknown layer, a layer without a spatial output, an out-of-range
            target, a bad input.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> gradcam_elementwise(m, torch.rand(1, 3, 64, 64), interpolate="none").shape
        torch.Size([1, 1, 2, 2])
    """
    return _run(model, x, target, _FromAG(_elementwise_weights), layer=layer,
                interpolate=interpolate, relu=relu,
                normalize=normalize, batch_size=batch_size, layout=layout)


def eigengradcam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: str | None = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
) -> torch.Tensor:
    """Eigen-Grad-CAM: the first principal component of the gradient-activation products.

    pytorch-grad-cam's ``EigenGradCAM``: Eigen-CAM (Muhammad & Yeasin, IJCNN 2020) applied to
    ``dy/dA * A`` instead of ``A``, so that it is class-discriminative. The products are
    centred per channel and projected on their first right singular vector ``v``, whose sign
    is chosen so that ``sum_c v_c >= 0`` (the map then correlates positively with the
    centred HiResCAM map).

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: any target of :mod:`netlens.targets`.
        layer: the layer name; None takes the last spatial layer.
        interpolate: upsample the map bilinearly to ``(H, W)``.
        relu: keep only positive values.
        batch_size: images per pass; default from the memory budget.
        layout: how to view ``layer``'s output as a map.

    Returns:
        ``(B, [K,] 1, H, W)``, ``x``'s dtype and device; raw values.

    Raises:
        ValueError: as :func:`gradcam_elementwise`.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> eigengradcam(m, torch.rand(1, 3, 64, 64), 3).shape
        torch.Size([1, 1, 64, 64])
    """
    return _run(model, x, target, _FromAG(_eigengrad_weights), layer=layer,
                interpolate=interpolate, relu=relu,
                normalize=normalize, batch_size=batch_size, layout=layout)


# -- random baseline -------------------------------------------------------------------------
def randomcam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: str | None = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random CAM: the layer's channels weighted by uniform random weights in ``[-1, 1)``.

    pytorch-grad-cam's ``RandomCAM``, the baseline of CAM metrics: a map built from the same
    activations as the other CAMs, but with weights that know nothing of the target. The
    weights are one draw ``2 * torch.rand((B, [K,] C), generator=generator) - 1`` (``x``'s
    dtype and device). Gradient-free; ``target`` is validated and sets the K axis.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: any target of :mod:`netlens.targets`.
        layer: the layer name; None takes the last spatial layer.
        interpolate: upsample the map bilinearly to ``(H, W)``.
        relu: keep only positive values.
        batch_size: images per pass; default from the memory budget.
        layout: how to view ``layer``'s output as a map.
        generator: the source of the weights; default a fresh, nondeterministically seeded
            one. The global random state is never used.

    Returns:
        ``(B, [K,] 1, H, W)``, ``x``'s dtype and device; raw values.

    Raises:
        ValueError: as :func:`gradcam_elementwise`; a generator on another device.
        TypeError: a generator that is not a ``torch.Generator``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> g = torch.Generator().manual_seed(0)
        >>> randomcam(m, torch.rand(1, 3, 64, 64), generator=g).shape
        torch.Size([1, 1, 64, 64])
    """
    gen = check_generator(generator, x)

    def weights(ctx: CamContext) -> torch.Tensor:
        b, c = ctx.activations.shape[:2]
        shape = (b, c) if ctx.k is None else (b, ctx.k, c)
        u = torch.rand(shape, generator=gen, dtype=ctx.x.dtype, device=ctx.x.device)
        return 2 * u - 1

    return _run(model, x, target, _FromContext(weights, gradients=False), layer=layer,
                interpolate=interpolate, relu=relu,
                normalize=normalize, batch_size=batch_size, layout=layout)


# -- CAM (Zhou et al.) -----------------------------------------------------------------------
class _Head(NamedTuple):
    name: str
    module: nn.Linear


def _linear_head(fm: FlatModel, layer: str) -> _Head:
    """The last ``nn.Linear`` called after ``layer``: the candidate classifier."""
    after = fm.layer_info(layer).order
    calls = [c for c in fm.layers if not c.functional and c.order > after
             and isinstance(fm[c.name], nn.Linear)]
    if not calls:
        raise ValueError(
            f"cam needs a global-average-pool + nn.Linear classifier after the CAM layer, but "
            f"no nn.Linear is called after layer {layer!r}; use gradcam, which needs no "
            "particular head (for a global-pool + linear head it is cam divided by h * w)")
    last = max(calls, key=lambda c: c.order)
    module = fm[last.name]
    assert isinstance(module, nn.Linear)
    return _Head(last.name, module)


def _cam_layer(fm: FlatModel) -> str:
    """The default layer of :func:`class_activation_map`: the last layer with a map output to
    complete before the classifier starts (ResNet's ``layer4``, DenseNet's final functional
    ReLU), the global pool itself left out; a one-position map counts (a small input)."""
    linear = [c for c in fm.layers if not c.functional and isinstance(fm[c.name], nn.Linear)]
    if not linear:
        return _spatial_layer(fm, None)  # the weights then say what is missing
    start = max(c.order for c in linear)
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d)
    before = [c for c in fm.layers if c.layout.is_spatial and c.end_order < start
              and c.shape is not None and len(c.shape) == 4
              and not (not c.functional and isinstance(fm[c.name], pools))]
    if not before:
        return _spatial_layer(fm, None)
    return max(before, key=lambda c: c.end_order).name


def _cam_weights(ctx: CamContext) -> torch.Tensor:
    """The classifier's weights of the target: for a class, its row ``W_c`` of the linear head;
    for any other target of the logits, the chain rule ``(ds/dlogits) W``. Checks that the
    model's output is ``W mean_ab(A) + b``."""
    head = _linear_head(ctx.fm, ctx.layer)
    w, b = head.module.weight, head.module.bias
    acts = ctx.activations
    if ctx.target.layer is not None:
        raise ValueError(f"cam explains the model's output through its classifier, but the "
                         f"target reads layer {ctx.target.layer!r}; use gradcam for it")
    if w.shape[1] != acts.shape[1]:
        raise ValueError(
            f"cam needs a global-average-pool + linear head on layer {ctx.layer!r}, but the "
            f"last linear layer {head.name!r} takes {w.shape[1]} features and the layer has "
            f"{acts.shape[1]} channels (e.g. VGG's flatten + MLP classifier); choose the layer "
            "that feeds the global pool with layer=, or use gradcam")
    with torch.no_grad():
        logits = F.linear(acts.mean(dim=(-2, -1)).to(w.dtype), w, b)
        outs = [model_output(ctx.fm, ctx.x[part], ctx.target)
                for part in chunks(ctx.x.shape[0], ctx.batch_size)]
    out = torch.cat(outs) if all(isinstance(o, torch.Tensor) for o in outs) else None
    scale = float(out.abs().max()) if out is not None and out.numel() else 0.0
    if (out is None or out.shape != logits.shape
            or not torch.allclose(logits, out, rtol=1e-4, atol=1e-5 * (1 + scale))):
        raise ValueError(
            f"cam needs a global-average-pool + linear head: the model's output should be "
            f"{head.name}(mean over positions of layer {ctx.layer!r}), but it is not (another "
            "layer, an activation or a max pool between them, or a head that reads a class "
            "token); choose the layer that feeds the global average pool with layer=, or use "
            "gradcam")
    leaf = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = scores_of(ctx.target, leaf)
    dlogits = grad(scores, leaf, k=ctx.k, allow_unused=True)  # one-hot rows for classes
    return (dlogits @ w.detach()).to(acts.dtype)


def class_activation_map(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: str | None = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
) -> torch.Tensor:
    """CAM: the layer's channels weighted by the classifier's weights of the target class.

    Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016:
    ``sum_k w_k^c A_k`` for a model whose head is a global average pool and one linear layer
    ``W`` (ResNet, DenseNet, GoogLeNet, MobileNet v2). The head is found automatically: the
    last ``nn.Linear`` after the layer, checked numerically (the model's output must equal
    ``W mean_ab(A) + b``). For a class target the weights are the row ``W_c``; for any other
    target of the logits (several classes, a weighted sum) they follow by the chain rule,
    ``(ds/dlogits) W``. Needs no gradient of the model.

    Args:
        model: a classifier with a global-average-pool + linear head, or its
            :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: a target of the model's output (a class per image, None for the predicted
            class, several per image for a K axis); not a layer's channel.
        layer: the layer that feeds the global pool; None takes the last map-shaped layer to
            complete before the classifier (ResNet's ``layer4``, DenseNet's final ReLU).
        interpolate: upsample the map bilinearly to ``(H, W)``.
        relu: keep only positive evidence (torchcam's CAM has none: ``relu=False``).
        batch_size: images per pass; default from the memory budget.
        layout: how to view ``layer``'s output as a map.

    Returns:
        ``(B, [K,] 1, H, W)``, ``x``'s dtype and device; raw values.

    Raises:
        ValueError: a model without a global-average-pool + linear head after the layer (the
            message says what is missing), a target that reads a layer, and as
            :func:`gradcam_elementwise`.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> class_activation_map(m, torch.rand(1, 3, 64, 64), 7, interpolate="none").shape
        torch.Size([1, 1, 2, 2])
    """
    fm, x = prepare(model, x)
    with guarded(fm):
        if layer is None:
            fm.ensure_traced(x)
            layer = _cam_layer(fm)
        return _run(fm, x, target, _FromContext(_cam_weights, gradients=False), layer=layer,
                    interpolate=interpolate, relu=relu,
                    normalize=normalize, batch_size=batch_size, layout=layout)


# -- perturbation variants -------------------------------------------------------------------
def _ablation_weights(ctx: CamContext) -> torch.Tensor:
    """``(y - y_c) / y`` with ``y_c`` the score when channel ``c`` of the layer is zeroed; the
    ``B * C`` ablated passes run ``batch_size`` at a time, through the layer view."""
    acts, x = ctx.activations, ctx.x
    batch, channels = acts.shape[:2]
    base = ctx.scores(torch.arange(batch, device=x.device), x)
    shape = (batch * channels,) if ctx.k is None else (batch * channels, ctx.k)
    ablated = x.new_empty(shape)
    with progress_bar(batch * channels, ctx.progress, "AblationCAM") as bar:
        for part in chunks(batch * channels, ctx.batch_size):
            index = torch.arange(part.start, part.stop, device=x.device)
            image, channel = index // channels, index % channels
            maps = acts[image].clone()
            maps[torch.arange(len(index), device=x.device), channel] = 0
            ablated[part] = ctx.scores_with_layer(image, maps)
            bar.update(part.stop - part.start)
    if ctx.k is None:
        ablated_bc = ablated.view(batch, channels)
        return _safe_divide(base[:, None] - ablated_bc, base[:, None].expand_as(ablated_bc))
    ablated_bkc = ablated.view(batch, channels, ctx.k).transpose(1, 2)
    return _safe_divide(base[..., None] - ablated_bkc, base[..., None].expand_as(ablated_bkc))


def ablationcam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: str | None = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    progress: bool | None = None, layout: LayoutLike | None = None,
) -> torch.Tensor:
    """Ablation-CAM: channels weighted by the relative drop of the score when each is zeroed.

    Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
    Gradient-free Localization", WACV 2020: ``w_c = (y - y_c) / y``, with ``y_c`` the target
    score when channel ``c`` of the layer's output is set to zero (0 where ``y = 0``).
    Gradient-free; ``B * C`` forward passes. The ablated output is written back through the
    layer's view (tokens and channels-last layers included) inside the call; the model's
    modules are never replaced, also when a pass raises.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: any target of :mod:`netlens.targets`.
        layer: the layer name; None takes the last spatial layer.
        interpolate: upsample the map bilinearly to ``(H, W)``.
        relu: keep only positive evidence.
        batch_size: ablated passes per forward pass (also images per pass when recording the
            layer); default from the memory budget. The result does not depend on it.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        layout: how to view ``layer``'s output as a map.

    Returns:
        ``(B, [K,] 1, H, W)``, ``x``'s dtype and device; raw values.

    Raises:
        ValueError: as :func:`gradcam_elementwise`.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> ablationcam(m, torch.rand(1, 3, 64, 64), 3, layer="layer1").shape
        torch.Size([1, 1, 64, 64])
    """
    return _run(model, x, target, _FromContext(_ablation_weights, gradients=False),
                layer=layer, interpolate=interpolate, relu=relu,
                normalize=normalize, batch_size=batch_size,
                layout=layout, progress=progress)


_Masked = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``masked_input(sample, image, channel, masks) -> inputs``: the inputs to score."""


def _upsampled_masks(ctx: CamContext, index: torch.Tensor) -> torch.Tensor:
    """The min-max normalized, upsampled channel maps of the (image, channel) pairs ``index``
    (flat ``image * C + channel``): ``(n, 1, H, W)``, all zero for a constant channel."""
    acts, x = ctx.activations, ctx.x
    channels = acts.shape[1]
    up = F.interpolate(acts[index // channels, index % channels][:, None],
                       size=(int(x.shape[2]), int(x.shape[3])), mode="bilinear",
                       align_corners=False)
    low = up.amin(dim=(2, 3), keepdim=True)
    return _safe_divide(up - low, up.amax(dim=(2, 3), keepdim=True) - low)


def _mask_scores(ctx: CamContext, n: int, name: str, masked_input: _Masked) -> torch.Tensor:
    """The softmax over channels of the mean over ``n`` samples of the target scores of
    ``masked_input(sample, image, channel, mask)``; ``B * C * n`` passes in chunks."""
    acts, x = ctx.activations, ctx.x
    batch, channels = acts.shape[:2]
    total = batch * channels
    shape = (total,) if ctx.k is None else (total, ctx.k)
    sums = x.new_zeros(shape)
    with torch.no_grad(), progress_bar(total * n, ctx.progress, name) as bar:
        for part in chunks(total * n, ctx.batch_size):
            flat = torch.arange(part.start, part.stop, device=x.device)
            sample, pair = flat // total, flat % total
            image, channel = pair // channels, pair % channels
            masks = _upsampled_masks(ctx, pair)
            scores = ctx.scores(image, masked_input(sample, image, channel, masks))
            sums.index_add_(0, pair, scores)
            bar.update(part.stop - part.start)
    mean = sums / n
    if ctx.k is None:
        return torch.softmax(mean.view(batch, channels), dim=1)
    return torch.softmax(mean.view(batch, channels, ctx.k).transpose(1, 2), dim=2)


def _mask_noise(seeds: torch.Tensor, size: tuple[int, int], *, sigma: float,
               dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """SS-CAM's noise of the masks whose seeds are ``seeds`` (``(n,)`` int64):
    ``sigma * torch.randn(size, generator=torch.Generator(device).manual_seed(seed))`` each,
    ``(n, 1, *size)``. One generator per mask makes the draws independent of the chunking."""
    out = []
    for seed in seeds.tolist():
        gen = torch.Generator(device=device).manual_seed(int(seed))
        out.append(torch.randn(size, generator=gen, dtype=dtype, device=device))
    return sigma * torch.stack(out)[:, None]


def sscam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: str | None = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    progress: bool | None = None, layout: LayoutLike | None = None, n: int = 35,
    sigma: float = 2.0, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SS-CAM: Score-CAM whose channel scores are averaged over noisy copies of each mask.

    Wang et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature Localization", arXiv
    2020 (torchcam's ``SSCAM``): ``w = softmax_c(mean_i y(x * (M_c + delta_i)))`` with ``M_c``
    the channel's activation upsampled bilinearly to the input size and min-max normalized to
    [0, 1] (as in :func:`~netlens.attribution.cam.scorecam`), and ``delta_i`` Gaussian noise
    of standard deviation ``sigma`` at the input resolution. Gradient-free; ``B * C * n``
    forward passes.

    The noise is drawn in this order: ``seeds = torch.randint(0, 2**62, (n, B, C),
    generator=generator)``, then for sample ``i``, image ``b`` and channel ``c`` one draw
    ``torch.randn((H, W), generator=torch.Generator().manual_seed(seeds[i, b, c]))`` times
    ``sigma``, so the result does not depend on ``batch_size``.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: any target of :mod:`netlens.targets`.
        layer: the layer name; None takes the last spatial layer.
        interpolate: upsample the map bilinearly to ``(H, W)``.
        relu: keep only positive evidence.
        batch_size: masked images per forward pass; default from the memory budget.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        layout: how to view ``layer``'s output as a map.
        n: noisy samples per mask (torchcam's ``num_samples``).
        sigma: the noise's standard deviation, in mask units (torchcam's ``std``).
        generator: the source of the noise; default a fresh, nondeterministically seeded one.

    Returns:
        ``(B, [K,] 1, H, W)``, ``x``'s dtype and device; raw values.

    Raises:
        ValueError: as :func:`gradcam_elementwise`; ``n < 1`` or a negative ``sigma``.
        TypeError: a generator that is not a ``torch.Generator``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> g = torch.Generator().manual_seed(0)
        >>> sscam(m, torch.rand(1, 3, 64, 64), 3, layer="layer1", n=1,
        ...       generator=g).shape
        torch.Size([1, 1, 64, 64])
    """
    samples = check_count(n, "n")
    std = check_real(sigma, "sigma", minimum=0.0)
    gen = check_generator(generator, x)

    def weights(ctx: CamContext) -> torch.Tensor:
        batch, channels = ctx.activations.shape[:2]
        seeds = torch.randint(0, 2**62, (samples * batch * channels,), generator=gen,
                              device=ctx.x.device)
        size = (int(ctx.x.shape[2]), int(ctx.x.shape[3]))

        def masked(sample: torch.Tensor, image: torch.Tensor, channel: torch.Tensor,
                   masks: torch.Tensor) -> torch.Tensor:
            flat = (sample * batch + image) * channels + channel
            noise = _mask_noise(seeds[flat], size, sigma=std, dtype=ctx.x.dtype,
                               device=ctx.x.device)
            return ctx.x[image] * (masks + noise)

        return _mask_scores(ctx, samples, "SS-CAM", masked)

    return _run(model, x, target, _FromContext(weights, gradients=False), layer=layer,
                interpolate=interpolate, relu=relu,
                normalize=normalize, batch_size=batch_size, layout=layout,
                progress=progress)


def iscam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: str | None = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    progress: bool | None = None, layout: LayoutLike | None = None, n: int = 10,
) -> torch.Tensor:
    """IS-CAM: Score-CAM whose channel scores are averaged along growing multiples of the mask.

    Naidu et al., "IS-CAM: Integrated Score-CAM for axiomatic-based explanations", arXiv 2020,
    as torchcam's ``ISCAM`` computes it: ``w = softmax_c(mean_i y(a_i x M_c))`` with ``M_c``
    the channel's upsampled, min-max normalized activation (as in
    :func:`~netlens.attribution.cam.scorecam`) and the cumulative coefficients
    ``a_i = sum_{j=1..i} j / n`` for ``i = 1 .. n``. Gradient-free; ``B * C * n`` passes.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: any target of :mod:`netlens.targets`.
        layer: the layer name; None takes the last spatial layer.
        interpolate: upsample the map bilinearly to ``(H, W)``.
        relu: keep only positive evidence.
        batch_size: masked images per forward pass; default from the memory budget.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        layout: how to view ``layer``'s output as a map.
        n: integration steps (torchcam's ``num_samples``).

    Returns:
        ``(B, [K,] 1, H, W)``, ``x``'s dtype and device; raw values.

    Raises:
        ValueError: as :func:`gradcam_elementwise`; ``n < 1``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> iscam(m, torch.rand(1, 3, 64, 64), 3, layer="layer1", n=1).shape
        torch.Size([1, 1, 64, 64])
    """
    steps = check_count(n, "n")

    def weights(ctx: CamContext) -> torch.Tensor:
        i = torch.arange(1, steps + 1, dtype=ctx.x.dtype, device=ctx.x.device)
        coeff = torch.cumsum(i / steps, 0)

        def masked(sample: torch.Tensor, image: torch.Tensor, channel: torch.Tensor,
                   masks: torch.Tensor) -> torch.Tensor:
            return ctx.x[image] * (coeff[sample][:, None, None, None] * masks)

        return _mask_scores(ctx, steps, "IS-CAM", masked)

    return _run(model, x, target, _FromContext(weights, gradients=False), layer=layer,
                interpolate=interpolate, relu=relu,
                normalize=normalize, batch_size=batch_size, layout=layout,
                progress=progress)


# -- Smooth Grad-CAM++ -----------------------------------------------------------------------
def smoothgradcam_pp(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: str | None = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    progress: bool | None = None, layout: LayoutLike | None = None, n: int = 4,
    sigma: float = 0.15, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Smooth Grad-CAM++: Grad-CAM++ with gradients averaged over noisy copies of the input.

    Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for
    Deep Convolutional Neural Network Models", arXiv 2019. With ``g_i`` the layer gradient at
    the noisy copy ``x + eps_i`` (the target fixed on the clean image) and means over the
    ``n`` copies, ``alpha = mean(g^2) / (2 mean(g^2) + sum_ab A_ab mean(g^3))`` (the
    exponential-score closed form of :func:`~netlens.attribution.cam.gradcam_pp`; 0 where
    0 / 0) and ``w_c = sum_ab alpha relu(mean(g))``, combined with the clean activations ``A``.
    (torchcam's ``SmoothGradCAMpp`` weighs ``relu`` of the last copy's gradient and combines
    the last copy's activations, and sums ``A g^3`` per position.)

    The noise of sample ``i`` (``i = 0 .. n-1``, in that order) is one draw
    ``torch.randn(x.shape, generator=generator)`` scaled per image by
    ``sigma * (x[b].max() - x[b].min())``, as in :func:`~netlens.attribution.smooth_grad`.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: any target of :mod:`netlens.targets`; fixed on the clean image.
        layer: the layer name; None takes the last spatial layer.
        interpolate: upsample the map bilinearly to ``(H, W)``.
        relu: keep only positive evidence.
        batch_size: noisy images per forward/backward pass; default from the memory budget.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        layout: how to view ``layer``'s output as a map.
        n: noisy copies per image.
        sigma: the noise's standard deviation as a fraction of each image's value range.
        generator: the source of the noise; default a fresh, nondeterministically seeded one.

    Returns:
        ``(B, [K,] 1, H, W)``, ``x``'s dtype and device; raw values.

    Raises:
        ValueError: as :func:`gradcam_elementwise`; ``n < 1`` or a negative ``sigma``.
        TypeError: a generator that is not a ``torch.Generator``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> g = torch.Generator().manual_seed(0)
        >>> smoothgradcam_pp(m, torch.rand(1, 3, 64, 64), 3, n=2, generator=g).shape
        torch.Size([1, 1, 64, 64])
    """
    samples = check_count(n, "n")
    std = check_real(sigma, "sigma", minimum=0.0)
    gen = check_generator(generator, x)

    def weights(ctx: CamContext) -> torch.Tensor:
        xs, batch = ctx.x, ctx.x.shape[0]
        span = (xs.flatten(1).amax(1) - xs.flatten(1).amin(1)).view(-1, 1, 1, 1)
        noise = [torch.randn(xs.shape, generator=gen, dtype=xs.dtype, device=xs.device)
                 * (std * span) for _ in range(samples)]
        assert ctx.gradients is not None
        g1 = torch.zeros_like(ctx.gradients)
        g2, g3 = torch.zeros_like(g1), torch.zeros_like(g1)
        with progress_bar(batch * samples, ctx.progress, "Smooth Grad-CAM++") as bar:
            for part in chunks(batch * samples, ctx.batch_size):
                flat = torch.arange(part.start, part.stop, device=xs.device)
                sample, image = flat // batch, flat % batch
                noisy = xs[image] + torch.stack([noise[s][b] for s, b in
                                                 zip(sample.tolist(), image.tolist())])
                _, g = ctx.layer_maps(image, noisy)
                g1.index_add_(0, image, g)
                g2.index_add_(0, image, g.pow(2))
                g3.index_add_(0, image, g.pow(3))
                bar.update(part.stop - part.start)
        g1, g2, g3 = g1 / samples, g2 / samples, g3 / samples
        total = ctx.A.sum(dim=(-2, -1), keepdim=True)
        alpha = _safe_divide(g2, 2 * g2 + total * g3)
        return (alpha * g1.clamp(min=0)).sum(dim=(-2, -1))

    return _run(model, x, target, _FromContext(weights, gradients=True), layer=layer,
                interpolate=interpolate, relu=relu,
                normalize=normalize, batch_size=batch_size, layout=layout,
                progress=progress)
