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

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._runtime import (
    auto_batch_size,
    bind,
    check_count,
    check_generator,
    check_real,
    chunks,
    first_tensor,
    grad,
    guarded,
    model_output,
    prepare,
    progress_bar,
    scores_of,
)
from ..adapter import LayoutLike
from ..flat_model import FlatModel
from ..targets import Target, TargetLike, as_target
from ..targets import _class_scores as class_scores
from .cam import (
    CamContext,
    Fuse,
    Interpolate,
    Layers,
    _FromAG,
    _FromContext,
    _safe_divide,
    _spatial_layer,
    _with_first,
    cam_driver,
)

__all__ = [
    "gradcam_elementwise", "eigengradcam", "randomcam", "class_activation_map", "ablationcam",
    "sscam", "iscam", "smoothgradcam_pp", "kpcacam", "shapleycam", "finercam", "fullgrad",
]


def _run(
    model: nn.Module, x: torch.Tensor, target: TargetLike, variant: _FromAG | _FromContext, *,
    layer: Layers, interpolate: Interpolate, relu: bool, batch_size: int | None,
    layout: LayoutLike | None, progress: bool | None = None, normalize: bool = False,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
) -> torch.Tensor:
    return cam_driver(model, x, target, variant, layer=layer, interpolate=interpolate,
                      relu=relu, normalize=normalize, batch_size=batch_size, progress=progress,
                      layout=layout, fuse=fuse, aug_smooth=aug_smooth,
                      eigen_smooth=eigen_smooth)[0]


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
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
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
        fuse: how several layers' maps are fused (see :func:`~netlens.attribution.cam.gradcam`).
        aug_smooth: average over test-time augmentations (see
            :func:`~netlens.attribution.cam.gradcam`).
        eigen_smooth: the principal component of the contributions instead of their sum
            (see :func:`~netlens.attribution.cam.gradcam`).

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
                normalize=normalize, batch_size=batch_size, layout=layout,
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)


def eigengradcam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
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
        fuse: how several layers' maps are fused (see :func:`~netlens.attribution.cam.gradcam`).
        aug_smooth: average over test-time augmentations (see
            :func:`~netlens.attribution.cam.gradcam`).
        eigen_smooth: the principal component of the contributions instead of their sum
            (see :func:`~netlens.attribution.cam.gradcam`).

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
                normalize=normalize, batch_size=batch_size, layout=layout,
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)


# -- random baseline -------------------------------------------------------------------------
def randomcam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None, generator: torch.Generator | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
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
        fuse: how several layers' maps are fused (see :func:`~netlens.attribution.cam.gradcam`).
        aug_smooth: average over test-time augmentations (see
            :func:`~netlens.attribution.cam.gradcam`).
        eigen_smooth: the principal component of the contributions instead of their sum
            (see :func:`~netlens.attribution.cam.gradcam`).
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
                normalize=normalize, batch_size=batch_size, layout=layout,
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)


# -- CAM (Zhou et al.) -----------------------------------------------------------------------
class _Head(NamedTuple):
    name: str
    module: nn.Linear


def _linear_head(fm: FlatModel, layer: str) -> _Head:
    """The last ``nn.Linear`` called after ``layer``: the candidate classifier."""
    after = fm.layer_info(layer).order
    modules = fm.modules_by_name()
    calls = [c for c in fm.layers if not c.functional and c.order > after
             and isinstance(modules.get(c.module_name), nn.Linear)]
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
    modules = fm.modules_by_name()
    linear = [c for c in fm.layers
              if not c.functional and isinstance(modules.get(c.module_name), nn.Linear)]
    if not linear:
        return _spatial_layer(fm, None)  # the weights then say what is missing
    start = max(c.order for c in linear)
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d)
    before = [c for c in fm.layers if c.layout.is_spatial and c.end_order < start
              and c.shape is not None and len(c.shape) == 4
              and not (not c.functional and isinstance(modules.get(c.module_name), pools))]
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
    out = ctx.output  # the model's output from the pass that read the layer
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
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
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
        fuse: how several layers' maps are fused (see :func:`~netlens.attribution.cam.gradcam`).
        aug_smooth: average over test-time augmentations (see
            :func:`~netlens.attribution.cam.gradcam`).
        eigen_smooth: the principal component of the contributions instead of their sum
            (see :func:`~netlens.attribution.cam.gradcam`).

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
                    normalize=normalize, batch_size=batch_size, layout=layout,
                    fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)


# -- perturbation variants -------------------------------------------------------------------
def _ablation_weights(ctx: CamContext) -> torch.Tensor:
    """``(y - y_c) / y`` with ``y_c`` the score when channel ``c`` of the layer is zeroed; the
    ``B * C`` ablated passes run ``batch_size`` at a time, through the layer view."""
    acts, x = ctx.activations, ctx.x
    batch, channels = acts.shape[:2]
    if ctx.output is not None:  # the clean scores, from the pass that read the layer
        with torch.no_grad():
            base = scores_of(ctx.target, ctx.output)
    else:
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
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    progress: bool | None = None, layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
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
        fuse: how several layers' maps are fused (see :func:`~netlens.attribution.cam.gradcam`).
        aug_smooth: average over test-time augmentations (see
            :func:`~netlens.attribution.cam.gradcam`).
        eigen_smooth: the principal component of the contributions instead of their sum
            (see :func:`~netlens.attribution.cam.gradcam`).

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
                layout=layout,
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth, progress=progress)


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
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    progress: bool | None = None, layout: LayoutLike | None = None, n: int = 35,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
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
        fuse: how several layers' maps are fused (see :func:`~netlens.attribution.cam.gradcam`).
        aug_smooth: average over test-time augmentations (see
            :func:`~netlens.attribution.cam.gradcam`).
        eigen_smooth: the principal component of the contributions instead of their sum
            (see :func:`~netlens.attribution.cam.gradcam`).
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
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth,
                progress=progress)


def iscam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    progress: bool | None = None, layout: LayoutLike | None = None, n: int = 10,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
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
        fuse: how several layers' maps are fused (see :func:`~netlens.attribution.cam.gradcam`).
        aug_smooth: average over test-time augmentations (see
            :func:`~netlens.attribution.cam.gradcam`).
        eigen_smooth: the principal component of the contributions instead of their sum
            (see :func:`~netlens.attribution.cam.gradcam`).
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
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth,
                progress=progress)


# -- Smooth Grad-CAM++ -----------------------------------------------------------------------
def smoothgradcam_pp(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    progress: bool | None = None, layout: LayoutLike | None = None, n: int = 4,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
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
        fuse: how several layers' maps are fused (see :func:`~netlens.attribution.cam.gradcam`).
        aug_smooth: average over test-time augmentations (see
            :func:`~netlens.attribution.cam.gradcam`).
        eigen_smooth: the principal component of the contributions instead of their sum
            (see :func:`~netlens.attribution.cam.gradcam`).
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
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth,
                progress=progress)


# -- kernel PCA, Shapley and Finer CAMs --------------------------------------------------------
_KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


def _kpca_contributions(acts: torch.Tensor, kernel: str, gamma: float | None) -> torch.Tensor:
    """The projection of each image's positions (rows: positions, columns: channels, centred
    per channel) on the first kernel principal component, as scikit-learn's
    ``KernelPCA(n_components=1, kernel=kernel, gamma=gamma).fit_transform`` computes it: the
    centred kernel matrix's top eigenvector scaled by the root of its eigenvalue, its sign
    making its largest-magnitude entry positive (``svd_flip``); ``(B, 1, h, w)``."""
    b, c, h, w = acts.shape
    rows = acts.flatten(2).transpose(1, 2)
    rows = rows - rows.mean(dim=1, keepdim=True)
    g = 1.0 / c if gamma is None else gamma  # scikit-learn's default: 1 / n_features
    dot = rows @ rows.transpose(1, 2)
    if kernel == "sigmoid":
        k = torch.tanh(g * dot + 1.0)
    elif kernel == "rbf":
        sq = dot.diagonal(dim1=1, dim2=2)
        k = torch.exp(-g * (sq[:, :, None] + sq[:, None, :] - 2 * dot).clamp(min=0))
    elif kernel == "poly":
        k = (g * dot + 1.0) ** 3
    elif kernel == "linear":
        k = dot
    else:  # cosine
        norm = rows.norm(dim=2)
        k = _safe_divide(dot, norm[:, :, None] * norm[:, None, :])
    k = (k - k.mean(dim=1, keepdim=True) - k.mean(dim=2, keepdim=True)
         + k.mean(dim=(1, 2), keepdim=True))
    values, vectors = torch.linalg.eigh((k + k.transpose(1, 2)) / 2)
    v = vectors[:, :, -1]
    peak = v.gather(1, v.abs().argmax(dim=1, keepdim=True))
    v = torch.where(peak < 0, -v, v)
    return (v * values[:, -1:].clamp(min=0).sqrt()).view(b, 1, h, w)


def kpcacam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
    kernel: str = "sigmoid", gamma: float | None = None,
) -> torch.Tensor:
    """KPCA-CAM: the layer's activations projected on their first kernel principal component.

    Karmani et al., "KPCA-CAM: Visual Explainability of Deep Computer Vision Models using
    Kernel PCA", IEEE MMSP 2024 (pytorch-grad-cam's ``KPCA_CAM``): Eigen-CAM with a kernel.
    The positions' activation vectors, centred per channel, are embedded by the kernel; the
    map is each position's coordinate on the first principal component of the centred kernel
    matrix (scikit-learn's ``KernelPCA``, computed here in torch: its default kernel, gamma and
    sign: the component's largest-magnitude entry positive). Gradient-free, class-agnostic.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: any target of :mod:`netlens.targets` (validated; sets the K axis).
        layer: the layer name; None takes the last spatial layer.
        interpolate: upsample the map bilinearly to ``(H, W)``.
        relu: keep only positive values.
        normalize: min-max scale each map to ``[0, 1]``.
        batch_size: images per pass; default from the memory budget.
        layout: how to view ``layer``'s output as a map.
        fuse: how several layers' maps are fused (see :func:`~netlens.attribution.cam.gradcam`).
        aug_smooth: average over test-time augmentations (see
            :func:`~netlens.attribution.cam.gradcam`).
        eigen_smooth: accepted for uniformity; the map is already one component.
        kernel: ``"sigmoid"`` (``tanh(gamma <a, b> + 1)``, the default, as pytorch-grad-cam's),
            ``"rbf"``, ``"poly"`` (degree 3, ``coef0 = 1``), ``"linear"`` or ``"cosine"``.
        gamma: the kernel's scale; None: ``1 / C`` (scikit-learn's default).

    Returns:
        ``(B, [K,] 1, H, W)``, ``x``'s dtype and device; raw values.

    Raises:
        ValueError: as :func:`gradcam_elementwise`; an unknown kernel, a non-positive gamma.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> kpcacam(m, torch.rand(1, 3, 64, 64), layer="layer3").shape
        torch.Size([1, 1, 64, 64])
    """
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(map(repr, _KERNELS))}, got "
                         f"{kernel!r}")
    g = None if gamma is None else check_real(gamma, "gamma", minimum=0.0)
    if g == 0:
        raise ValueError("gamma must be positive (None: 1 / channels), got 0")

    def weights(acts: torch.Tensor, _: torch.Tensor | None) -> torch.Tensor:
        return _kpca_contributions(acts, kernel, g)

    return _run(model, x, target, _FromAG(weights, gradients=False), layer=layer,
                interpolate=interpolate, relu=relu, normalize=normalize,
                batch_size=batch_size, layout=layout, fuse=fuse, aug_smooth=aug_smooth,
                eigen_smooth=eigen_smooth)


def _shapley_weights(ctx: CamContext) -> torch.Tensor:
    g, hvp = ctx.gradient_and_hvp()
    return (g - 0.5 * hvp).mean(dim=(-2, -1))


def shapleycam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
) -> torch.Tensor:
    """ShapleyCAM: Grad-CAM with the gradient corrected by the Hessian-vector product.

    Cai et al., "CAMs as Shapley Value-based Explainers", The Visual Computer 2025
    (pytorch-grad-cam's ``ShapleyCAM``): the second-order Taylor estimate of each channel's
    Shapley value gives ``w_c = mean_ab(G - H A / 2)_c``, with ``G = dy/dA`` and ``H A`` the
    product of the Hessian of the score w.r.t. the layer's output with ``A`` (second
    derivatives of the layers after it; zero where those are piecewise linear in ``A``, e.g.
    ReLU layers, max pools and a linear head, where ShapleyCAM is Grad-CAM).

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: any target of :mod:`netlens.targets`.
        layer: the layer name; None takes the last spatial layer.
        interpolate: upsample the map bilinearly to ``(H, W)``.
        relu: keep only positive evidence.
        normalize: min-max scale each map to ``[0, 1]``.
        batch_size: images per forward/backward pass; default from the memory budget.
        layout: how to view ``layer``'s output as a map.
        fuse: how several layers' maps are fused (see :func:`~netlens.attribution.cam.gradcam`).
        aug_smooth: average over test-time augmentations (see
            :func:`~netlens.attribution.cam.gradcam`).
        eigen_smooth: the principal component of the contributions instead of their sum
            (see :func:`~netlens.attribution.cam.gradcam`).

    Returns:
        ``(B, [K,] 1, H, W)``, ``x``'s dtype and device; raw values.

    Raises:
        ValueError: as :func:`gradcam_elementwise`.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> shapleycam(m, torch.rand(1, 3, 64, 64), 3).shape
        torch.Size([1, 1, 64, 64])
    """
    return _run(model, x, target, _FromContext(_shapley_weights, gradients=False),
                layer=layer, interpolate=interpolate, relu=relu, normalize=normalize,
                batch_size=batch_size, layout=layout, fuse=fuse, aug_smooth=aug_smooth,
                eigen_smooth=eigen_smooth)


@dataclasses.dataclass(frozen=True)
class _Finer(Target):
    """Finer-CAM's score: ``sum_j p_j (s - alpha y_j) / (sum_j p_j + 1e-9)`` over the
    comparison classes ``j`` of each image (and target), ``s`` the inner target's score, ``y``
    the logits and ``p`` their softmax (not detached, as in pytorch-grad-cam). Unbound,
    ``others`` is None; :meth:`bind` fixes the classes of the similarity ``ranks`` from the
    clean logits."""

    inner: Target
    others: torch.Tensor | None  # (B, M) or (B, K, M) class indices, once bound
    alpha: float
    k: int | None = None
    ranks: tuple[int, ...] = (1, 2, 3)
    asked: tuple[int, ...] = (1, 2, 3)

    def bind(self, output: Any) -> Target:
        inner = self.inner.bind(output)  # the target's own checks and messages first
        try:
            logits = class_scores(output, "finercam").detach()
        except (TypeError, ValueError) as e:
            raise ValueError(f"finercam needs a classifier with (B, N) logits ({e}); use "
                             "gradcam with a target of its output") from None
        ranks = [r for r in self.ranks if r < logits.shape[1]]
        if not ranks:
            raise ValueError(f"comparisons must hold ranks below the number of classes "
                             f"({logits.shape[1]}), got {list(self.asked)!r}")
        with torch.no_grad():
            s = inner(output)
            lead = logits if self.k is None else logits[:, None].expand(-1, self.k, -1)
            order = (lead - s[..., None]).abs().argsort(dim=-1, stable=True)
        return dataclasses.replace(self, inner=inner, others=order[..., ranks])

    def score(self, output: Any) -> torch.Tensor:
        if self.others is None:  # scored before binding: bound to this output
            return self.bind(output).score(output)
        s = self.inner(output)
        output = class_scores(output, "finercam")
        p = torch.softmax(output, dim=-1)
        if self.k is None:
            y, q, s = output.gather(1, self.others), p.gather(1, self.others), s[:, None]
        else:
            n = (output.shape[0], self.k, output.shape[1])
            y = output[:, None].expand(n).gather(2, self.others)
            q = p[:, None].expand(n).gather(2, self.others)
            s = s[..., None]
        return (q * (s - self.alpha * y)).sum(-1) / (q.sum(-1) + 1e-9)

    def take(self, index: slice | torch.Tensor) -> Target:
        if self.others is None:
            return dataclasses.replace(self, inner=self.inner.take(index))
        i = index.to(self.others.device) if isinstance(index, torch.Tensor) else index
        return dataclasses.replace(self, inner=self.inner.take(index), others=self.others[i])

    @staticmethod
    def cat(parts: Sequence[Target]) -> Target:
        first = parts[0]
        assert isinstance(first, _Finer)
        inner = type(first.inner).cat([p.inner for p in parts])  # type: ignore[attr-defined]
        if first.others is None:
            return dataclasses.replace(first, inner=inner)
        others = torch.cat([p.others for p in parts])  # type: ignore[attr-defined]
        return dataclasses.replace(first, inner=inner, others=others)


def finercam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
    alpha: float = 1.0, comparisons: Sequence[int] = (1, 2, 3),
) -> torch.Tensor:
    """Finer-CAM: Grad-CAM of the target against the classes the model finds most similar.

    Zhang et al., "Finer-CAM: Spotting the Difference Reveals Finer Details for Visual
    Explanation", CVPR 2025 (pytorch-grad-cam's ``FinerCAM`` with its ``GradCAM`` base): the
    classes are ranked by how close their logits are to the target's score on the clean image
    (``|y_j - s|``; rank 0 is the target's own class for a class target), those of the ranks
    ``comparisons`` are compared with it, and Grad-CAM explains
    ``sum_j p_j (s - alpha y_j) / (sum_j p_j + 1e-9)`` with ``p`` the softmax of the logits.
    The comparison classes are fixed from the clean images (also for ``aug_smooth``).

    Args:
        model: a classifier with ``(B, N)`` logits, or its :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: any target of the model's output (a class per image, None for the predicted
            class, several per image for a K axis); not a layer's channel.
        layer: the layer name; None takes the last spatial layer.
        interpolate: upsample the map bilinearly to ``(H, W)``.
        relu: keep only positive evidence.
        normalize: min-max scale each map to ``[0, 1]``.
        batch_size: images per forward/backward pass; default from the memory budget.
        layout: how to view ``layer``'s output as a map.
        fuse: how several layers' maps are fused (see :func:`~netlens.attribution.cam.gradcam`).
        aug_smooth: average over test-time augmentations (see
            :func:`~netlens.attribution.cam.gradcam`).
        eigen_smooth: the principal component of the contributions instead of their sum
            (see :func:`~netlens.attribution.cam.gradcam`).
        alpha: the strength of the comparison (0: Grad-CAM of the target alone).
        comparisons: the similarity ranks of the compared classes (ranks past ``N - 1`` are
            dropped, as in pytorch-grad-cam).

    Returns:
        ``(B, [K,] 1, H, W)``, ``x``'s dtype and device; raw values.

    Raises:
        ValueError: as :func:`gradcam_elementwise`; an output that is not ``(B, N)`` logits,
            a target that reads a layer, no valid comparison rank.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> finercam(m, torch.rand(1, 3, 64, 64), 3).shape
        torch.Size([1, 1, 64, 64])
    """
    a = check_real(alpha, "alpha")
    ranks = [check_count(r, "each comparison rank", minimum=0) for r in comparisons]
    fm, x = prepare(model, x)
    inner = as_target(target, x.shape[0])
    if inner.layer is not None:
        raise ValueError(f"finercam compares classes of the model's output, but the target "
                         f"reads layer {inner.layer!r}; use gradcam for it")
    # The comparison classes are fixed when the target is bound to the clean output: in the
    # CAM's own forward pass (one forward and one backward, as pytorch-grad-cam's).
    finer = _Finer(inner, None, a, inner.k, tuple(ranks), tuple(comparisons))
    return _run(fm, x, finer, _FromAG(_finer_gradcam), layer=layer,
                interpolate=interpolate, relu=relu, normalize=normalize,
                batch_size=batch_size, layout=layout, fuse=fuse, aug_smooth=aug_smooth,
                eigen_smooth=eigen_smooth)


def _finer_gradcam(acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    assert grads is not None
    return grads.mean(dim=(-2, -1))


# -- FullGrad ----------------------------------------------------------------------------------
def _bias_of(module: object) -> torch.Tensor | None:
    """The bias a layer adds to its output: a convolution's ``bias``; for batch norm in eval
    mode, ``beta - mean * gamma / sqrt(var + eps)`` (as the authors' code); None for neither."""
    if isinstance(module, nn.Conv2d):
        return None if module.bias is None else module.bias.detach()
    if isinstance(module, nn.BatchNorm2d) and module.bias is not None:
        if module.running_mean is None or module.running_var is None:
            return module.bias.detach()
        scale = module.weight.detach() / torch.sqrt(module.running_var + module.eps)
        return module.bias.detach() - module.running_mean * scale
    return None


def _psi(m: torch.Tensor, size: tuple[int, int], per_channel: bool) -> torch.Tensor:
    """FullGrad's post-processing of ``(n, C, h, w)`` terms: absolute value, min-max scaling
    (per image over all channels, or per channel), bilinear resizing to ``size``, sum over
    channels: ``(n, 1, H, W)``. Resizing is linear and the same for every channel, so the
    channels are summed first and one map is resized instead of ``C`` (equal up to round-off;
    FullGrad of 500 images of the shapes model: 13.1 s -> 1.0 s)."""
    m = m.abs()
    dims = (-2, -1) if per_channel else (-3, -2, -1)
    m = m - m.amin(dim=dims, keepdim=True)
    m = (m / (m.amax(dim=dims, keepdim=True) + 1e-7)).sum(1, keepdim=True)
    if tuple(m.shape[-2:]) != size:
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return m


def fullgrad(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    normalize: bool = False, batch_size: int | None = None, per_channel: bool = False,
) -> torch.Tensor:
    """FullGrad: the input-gradient plus the bias-gradients of every convolution and batch norm.

    Srinivas & Fleuret, "Full-Gradient Representation for Neural Network Visualization",
    NeurIPS 2019: ``psi(|dy/dx * x|) + sum_l psi(|dy/dz_l * b_l|)`` over the layers ``l`` with a
    bias ``b_l`` on a map output ``z_l`` (``nn.Conv2d`` with a bias, ``nn.BatchNorm2d`` with its
    eval-mode bias ``beta - mean gamma / sqrt(var + eps)``; each call of a reused layer), where
    ``psi`` takes the absolute value, min-max scales it over the layer's channels and positions
    of each image (the authors' code; ``1e-7`` added to the range), upsamples it bilinearly
    (``align_corners=False``; the authors' code uses True) and sums its channels. Reads no one
    layer: every bias layer contributes. One forward/backward pass per image and target.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: any target of :mod:`netlens.targets`.
        normalize: min-max scale each map to ``[0, 1]`` (pytorch-grad-cam's final scaling).
        batch_size: images per forward/backward pass; default from the memory budget.
        per_channel: scale each channel of each term on its own (pytorch-grad-cam's
            ``FullGrad``), instead of each layer's channels together (the paper's).

    Returns:
        ``(B, [K,] 1, H, W)``, ``x``'s dtype and device; raw values unless ``normalize``.

    Raises:
        ValueError: an out-of-range target, a bad input.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> fullgrad(m, torch.rand(1, 3, 32, 32), 3).shape
        torch.Size([1, 1, 32, 32])
    """
    fm, x = prepare(model, x)
    if not isinstance(per_channel, bool):
        raise TypeError(f"per_channel must be True or False, got {per_channel!r}")
    size = (int(x.shape[2]), int(x.shape[3]))
    with guarded(fm):
        fm.ensure_traced(x)
        bs = batch_size if batch_size is not None else auto_batch_size(fm, x)
        modules = fm.modules_by_name()
        layers = {c.name: b for c in fm.layers if not c.functional
                  for b in [_bias_of(modules.get(c.module_name))] if b is not None}
        t = bind(fm, x, target, bs)
        maps = []
        for part in chunks(x.shape[0], bs):
            maps.append(_fullgrad_pass(fm, x[part], t.take(part), layers, size, per_channel))
        cam = torch.cat(maps)
    if normalize:
        lo = cam.amin(dim=(-2, -1), keepdim=True)
        span = cam.amax(dim=(-2, -1), keepdim=True) - lo
        cam = (cam - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return cam


def _fullgrad_pass(fm: FlatModel, x: torch.Tensor, t: Target, layers: dict[str, torch.Tensor],
                   size: tuple[int, int], per_channel: bool) -> torch.Tensor:
    outs: dict[str, torch.Tensor] = {}

    def keep(name: str, output: Any) -> Any:
        z = first_tensor(output)
        if z is None or z.dim() != 4:
            return None
        outs[name] = z  # the model continues on a copy: later in-place ops leave z alone
        return _with_first(output, z.clone())

    xi = x.clone().requires_grad_(True)
    with fm.intercept(list(layers), keep):
        scores = scores_of(t, model_output(fm, xi, t))
    names = [n for n in layers if n in outs]
    inputs = [xi, *(outs[n] for n in names)]
    columns = [scores] if t.k is None else list(scores.unbind(1))
    result = []
    for j, s in enumerate(columns):
        grads = torch.autograd.grad(s.sum(), inputs, retain_graph=j < len(columns) - 1,
                                    allow_unused=True)
        total = _psi(_zero_if_none(grads[0], xi) * x, size, per_channel)
        for name, g in zip(names, grads[1:]):
            z = outs[name]
            b = layers[name].to(z.dtype)[None, :, None, None]
            total = total + _psi(_zero_if_none(g, z) * b, size, per_channel)
        result.append(total.detach())
    return result[0] if t.k is None else torch.stack(result, 1)


def _zero_if_none(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g
