"""Class activation maps: one pipeline, one small weight function per variant.

Every CAM records one layer's output ``A`` (and, for gradient variants, the gradient ``G`` of the
target score with respect to it), views both as ``[B, C, h, w]`` maps through the layer's
:class:`~netlens.adapter.Layout` (ViT tokens become the patch grid without the class token,
Swin's channels-last maps become channels-first), and combines them as

    cam = relu(sum_c w_c * A_c)          then bilinear upsampling to the input size.

A variant only says how to get ``w``: :func:`cam_driver` gives it a :class:`CamContext` (the
model, the input, the layer and its layout, ``A``, ``G`` when it needs gradients, the bound
target, and ways to score masked inputs or a replaced layer output) and it returns a ``(B, C)``
tensor of channel weights, or a ``(B, C, h, w)`` tensor of per-position contributions that the
pipeline sums over channels (HiResCAM, LayerCAM, EigenCAM). With K targets per image (``TopK``,
a list of targets) ``G`` and the weights gain a K axis after the batch, and the maps are
``(B, K, 1, H, W)``, from one forward pass. Gradients are taken with respect to the layer's
output only; no parameter gradient is ever computed, and the caller's model is left as it was.

Results are raw: never min-max normalized (normalization is a view, in :mod:`netlens.plot`).
They do not depend on ``batch_size`` (the images, and Score-CAM's masked inputs, of each pass
are the same, with targets fixed from the clean images): equal up to the kernels' round-off at
different pass sizes (at most a few 1e-16 relative in float64).

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> gradcam(m, torch.rand(2, 3, 64, 64), target=[1, 2]).shape
    torch.Size([2, 1, 64, 64])
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .._runtime import (
    as_flat,
    auto_batch_size,
    bind,
    chunks,
    first_tensor,
    grad,
    guarded,
    model_output,
    pass_layout,
    prepare,
    progress_bar,
    scores_of,
)
from .._util import NetlensWarning, user_stacklevel
from ..adapter import Layout, LayoutLike
from ..flat_model import FlatModel, layouts
from ..targets import Target, TargetLike, as_target
from .gradients import guided_backprop

__all__ = [
    "gradcam", "hirescam", "gradcam_pp", "xgradcam", "layercam", "eigencam", "scorecam",
    "guided_gradcam", "cam_driver", "CamContext", "CamVariant", "Interpolate", "Fuse", "Layers",
    "AUGMENTATIONS",
]


Interpolate = Union[bool, Literal["bilinear", "nearest", "none"]]
"""How a CAM reaches the input's size: True or ``"bilinear"``; False or ``"nearest"`` (each
cell of the layer's grid a block of pixels, Netlens 1.x's ``interpolate=False``); ``"none"``:
the map at the layer's own resolution ``(h, w)``."""

Layers = Union[str, Sequence[str], None]
"""The CAM layer(s): a name, a glob matched against the layer names (``"layer4.*"``: every
map-shaped layer call whose name matches), a list of names and globs, or None (the default)."""

Fuse = Literal["mean", "max", "product"]
"""How the maps of several layers, each upsampled to the input, become one."""

AUGMENTATIONS: tuple[tuple[bool, float], ...] = tuple(
    (flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1))
"""``aug_smooth``'s test-time augmentations, pytorch-grad-cam's default (ttach's
``HorizontalFlip()`` times ``Multiply([0.9, 1, 1.1])``): ``(flip, factor)`` pairs, the input
``x * factor``, mirrored left-right when ``flip``; in this order."""


@dataclasses.dataclass
class CamContext:
    """What a CAM variant sees.

    Attributes:
        fm: the model.
        x: the input ``(B, C, H, W)``.
        layer: the CAM layer's name; ``layout`` how its output is viewed as a map.
        activations: ``A``, the layer's output as ``(B, C, h, w)`` maps.
        gradients: ``G``, the gradient of each target's score w.r.t. ``A``: ``(B, C, h, w)``, or
            ``(B, K, C, h, w)`` for K targets; None for gradient-free variants.
        target: the target, bound to the clean output (``target.k`` is K or None).
        batch_size: images per pass; progress: the progress-bar setting.
        output: the model's output for ``x`` from the pass that read ``A`` (detached; None
            when it is not a tensor).
    """

    fm: FlatModel
    x: torch.Tensor
    layer: str
    layout: Layout
    activations: torch.Tensor
    gradients: torch.Tensor | None
    target: Target
    batch_size: int
    progress: bool | None = None
    output: torch.Tensor | None = None

    @property
    def k(self) -> int | None:
        return self.target.k

    @property
    def A(self) -> torch.Tensor:  # noqa: N802 (the papers' name)
        """The activations broadcast to the gradients' shape (a K axis when there is one)."""
        return self.activations if self.k is None else self.activations.unsqueeze(1)

    def scores(self, images: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The bound target's scores of ``inputs`` (``(n, C, H, W)``), each scored for the image
        ``images[i]`` of the batch: ``(n,)`` or ``(n, K)``; no gradients."""
        t = self.target.take(images)
        with torch.no_grad():
            return scores_of(t, model_output(self.fm, inputs, t))

    def layer_maps(self, images: torch.Tensor, inputs: torch.Tensor,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The CAM layer's maps and gradient maps for other inputs (``(n, C, H, W)``: noisy or
        transformed copies of the images ``images`` of the batch), each scored with the target
        bound to its clean image: ``A`` ``(n, C, h, w)`` and ``G`` ``(n, [K,] C, h, w)``; one
        pass (the caller chunks by ``batch_size``)."""
        a, g, _ = _layer_pass(self.fm, self.layer, inputs, self.target.take(images),
                              gradients=True, bind=False)
        assert g is not None
        return a, g

    def gradient_and_hvp(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``G`` and the Hessian-vector product ``H A`` of each target's score w.r.t. the CAM
        layer's output (``d(G . A)/dA`` with ``A`` held fixed: second derivatives of the
        layers after it only), both ``(B, [K,] C, h, w)`` maps; ``batch_size`` images a pass,
        targets bound to the clean images."""
        gs, hs = [], []
        for part in chunks(int(self.x.shape[0]), self.batch_size):
            g, h = _hvp_pass(self.fm, self.layer, self.x[part], self.target.take(part))
            gs.append(g)
            hs.append(h)
        return torch.cat(gs), torch.cat(hs)

    def scores_with_layer(self, images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """The target's scores when the CAM layer's output of the images ``images`` is replaced
        by ``maps`` (``(n, C, h, w)``, written back in the layer's own layout: token and
        channels-last layers included): ``(n,)`` or ``(n, K)``; no gradients."""
        def replace(_: str, output: Any) -> Any:
            t = first_tensor(output)
            assert t is not None  # the layer's output holds the activations it was read from
            return _with_first(output, self.layout.from_map(maps.to(t.dtype), t))

        with self.fm.intercept(self.layer, replace):
            return self.scores(images, self.x[images])


class CamVariant(Protocol):
    """The override point of a CAM: ``weights(context) -> (B, [K,] C)`` channel weights or
    ``(B, [K,] C, h, w)`` contributions; ``gradients`` says whether it needs ``G``."""

    @property
    def gradients(self) -> bool: ...

    def __call__(self, ctx: CamContext) -> torch.Tensor: ...


@dataclasses.dataclass(frozen=True)
class _FromAG:
    """A variant whose weights are a function of ``(A, G)`` only."""

    fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    gradients: bool = True

    def __call__(self, ctx: CamContext) -> torch.Tensor:
        return self.fn(ctx.A if self.gradients else ctx.activations, ctx.gradients)


@dataclasses.dataclass(frozen=True)
class _FromContext:
    """A variant whose weights are a function of the whole :class:`CamContext`."""

    fn: Callable[[CamContext], torch.Tensor]
    gradients: bool = True

    def __call__(self, ctx: CamContext) -> torch.Tensor:
        return self.fn(ctx)


# -- the shared pipeline -------------------------------------------------------------------------
# Module classes that mix tokens by attention: timm's Attention, EvaAttention, ClassAttn,
# TalkingHeadAttn, XCA, GPSA / MHSA (ConViT), torch's MultiheadAttention, HF's ViTAttention, ...
_ATTENTION = re.compile(r"attn|attention|mhsa|gpsa|^xca$", re.IGNORECASE)


def _default_layer(fm: FlatModel) -> str:
    """``fm.last_spatial_layer()``, except for class-token transformers (ViT).

    After a ViT's last attention, patch tokens never reach the class token, so the gradient of
    every later token layer is zero on the patches and GradCAM would be blank. There the default
    is the last token layer completed before the last attention starts (``...encoder_layer_N.ln_1``
    for torchvision, the layer pytorch-grad-cam recommends for ViTs).
    """
    name = fm.last_spatial_layer()
    layout = fm.layout(name)
    if layout.kind != "tokens" or layout.extra == 0:
        return name
    attention = [c for c in fm.layers if not c.functional and _ATTENTION.search(c.type_name)]
    # the innermost: a block class named for its attention (XCiT's ClassAttentionBlock) holds one
    attention = [c for c in attention if not any(
        o.module_name.startswith(c.module_name + ".") for o in attention)]
    if not attention:
        return name
    last = max(attention, key=lambda c: c.order)
    # A call that started before the attention and is not one of its containers has completed.
    before = [c for c in fm.layers if not c.functional and c.order < last.order
              and c.layout.kind == "tokens" and c.module_name
              and not last.module_name.startswith(c.module_name + ".")]
    return max(before, key=lambda c: c.end_order).name if before else name


def _spatial_layer(fm: FlatModel, layer: str | None) -> str:
    """The CAM layer: resolved, and checked to have a map-shaped output."""
    if layer is None:
        return _default_layer(fm)
    name = fm.resolve_layer(layer)
    info, layout = fm.layer_info(name), fm.layout(name)
    if not layout.is_spatial:
        shape = tuple(info.shape) if info.shape is not None else None
        raise ValueError(
            f"layer {name!r} has no spatial output (shape {shape}, layout {layout.kind!r}), "
            f"so it has no class activation map; choose a layer whose output is a map, e.g. "
            f"the default {_default_layer(fm)!r}, or say how to view it as one with layout= "
            "(a netlens.Layout, or a function output -> [B, C, h, w])")
    return name


def _with_first(output: Any, t: torch.Tensor) -> object:
    """``output`` with its first tensor replaced by ``t``."""
    if isinstance(output, torch.Tensor):
        return t
    items = list(output)
    i = next(k for k, item in enumerate(items) if isinstance(item, torch.Tensor))
    items[i] = t
    if hasattr(output, "_fields"):  # a namedtuple
        return type(output)(*items)
    return type(output)(items) if isinstance(output, tuple) else items


def _layer_maps(
    fm: FlatModel, x: torch.Tensor, target: TargetLike, name: str, *, gradients: bool,
    batch_size: int, outputs: list[Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, Target]:
    """The layer's output maps ``A`` (B, C, h, w), the gradient maps ``G`` of the target scores
    w.r.t. that output (``(B, [K,] C, h, w)``, or None), and the bound target, over chunks;
    the model's (detached) outputs of the chunks are appended to ``outputs`` if given."""
    t = as_target(target, x.shape[0])
    acts, grads, bound = [], [], []
    with guarded(fm):
        for part in chunks(x.shape[0], batch_size):
            a, g, ti = _layer_pass(fm, name, x[part], t.take(part), gradients=gradients,
                                   bind=True, outputs=outputs)
            acts.append(a)
            if g is not None:
                grads.append(g)
            bound.append(ti)
    return (torch.cat(acts), (torch.cat(grads) if gradients else None),
            type(bound[0]).cat(bound))


def _layer_pass(
    fm: FlatModel, name: str, x: torch.Tensor, t: Target, *, gradients: bool, bind: bool,
    outputs: list[Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, Target]:
    """One pass of the images ``x``: the layer's maps ``A``, the gradient maps ``G`` of the
    scores of ``t`` (the target of these images; bound here to their output with ``bind``,
    else already bound, e.g. to the clean images of noisy copies), and the bound target."""
    layout, hw = fm.layout(name), (int(x.shape[2]), int(x.shape[3]))
    box: list[torch.Tensor] = []

    def grab(_: str, output: object) -> object:
        a = first_tensor(output)
        if a is None:
            raise ValueError(f"layer {name!r} returned no tensor")
        # the pass may run channels-last (pass_layout); the maps are contiguous
        if not gradients:  # a copy: later in-place ops must not change it
            box.append(a.detach().clone(memory_format=torch.contiguous_format))
            return None
        # The forward runs without autograd up to here: nothing before the layer is
        # differentiated, so no graph is recorded for it. From here on it is recorded,
        # starting from a leaf; the model continues on a copy, so that later in-place
        # ops (ResNet's `out += x`, in-place ReLUs) cannot change the leaf.
        torch.set_grad_enabled(True)
        leaf = a.detach().contiguous().requires_grad_(True)
        box.append(leaf)
        return _with_first(output, leaf.clone())

    with fm.intercept(name, grab), torch.no_grad():  # grab turns autograd back on
        out = model_output(fm, pass_layout(fm, x), t)
    if not box:
        hint = (f" (the target reads layer {t.layer!r}, which runs before it; choose an "
                "earlier CAM layer)" if t.layer is not None else "")
        raise ValueError(f"the forward pass did not reach layer {name!r}{hint}")
    ti = t.bind(out) if bind else t
    if outputs is not None:
        outputs.append(out.detach() if isinstance(out, torch.Tensor) else out)
    a = box[0]
    images = int(x.shape[0])
    if a.shape[0] != images:
        raise ValueError(
            f"layer {name!r} returned {a.shape[0]} maps (shape {tuple(a.shape)}) for "
            f"{images} image(s): its first axis is not the batch (e.g. the RoI features "
            "of a detector), so it has no per-image activation map; choose a layer of "
            "the backbone with layer=")
    g_map = None
    if gradients:
        with torch.enable_grad():
            scores = scores_of(ti, out)
        if not _reaches(scores, a):
            raise ValueError(
                f"the target's score does not depend on layer {name!r} (the layer is not "
                "on the path from the input to the explained output, e.g. an auxiliary "
                "head or a detector's proposal network), so its gradient CAM would be "
                "blank; choose a layer the explained output depends on with layer= (see "
                "FlatModel(model).layer_names)")
        g = grad(scores, a, k=t.k, allow_unused=True)
        lead = g.shape[:2] if t.k is not None else g.shape[:1]
        g = layout.to_map(g.detach().flatten(0, len(lead) - 1), hw)
        g_map = g.reshape(*lead, *g.shape[1:])
    return layout.to_map(a.detach(), hw), g_map, ti


def _hvp_pass(fm: FlatModel, name: str, x: torch.Tensor, t: Target,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass: the gradient maps ``G`` of the (bound) target's scores w.r.t. the layer's
    output and the Hessian-vector products ``d(G . A)/dA``, ``(n, [K,] C, h, w)`` each."""
    layout, hw = fm.layout(name), (int(x.shape[2]), int(x.shape[3]))
    box: list[torch.Tensor] = []

    def grab(_: str, output: object) -> object:
        a = first_tensor(output)
        assert a is not None  # the driver's layer pass read this layer already
        torch.set_grad_enabled(True)  # as in _layer_pass: a graph from the layer on only
        leaf = a.detach().contiguous().requires_grad_(True)
        box.append(leaf)
        return _with_first(output, leaf.clone())

    # PyTorch's fused attention kernels have no double backward: the math kernel has
    with fm.intercept(name, grab), torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        out = model_output(fm, x, t)
    a = box[0]
    with torch.enable_grad():
        scores = scores_of(t, out)
        columns = [scores] if t.k is None else list(scores.unbind(1))
        gs, hs = [], []
        for j, s in enumerate(columns):
            last = j == len(columns) - 1
            if not s.requires_grad:
                g = torch.zeros_like(a)
            else:
                g, = torch.autograd.grad(s.sum(), a, create_graph=True, allow_unused=True)
                g = torch.zeros_like(a) if g is None else g
            h = None
            if g.requires_grad:  # else the layers after A are linear in it: H A = 0
                try:
                    h, = torch.autograd.grad(g, a, grad_outputs=a.detach(),
                                             retain_graph=not last, allow_unused=True)
                except RuntimeError as e:  # a layer without a second derivative in torch
                    if "not implemented" not in str(e):
                        raise
                    h = _hvp_by_difference(fm, name, x, t, j, a.detach())
            gs.append(g.detach())
            hs.append(torch.zeros_like(a) if h is None else h.detach())

    def maps(ts: list[torch.Tensor]) -> torch.Tensor:
        m = torch.stack([layout.to_map(v, hw) for v in ts], 1)
        return m[:, 0] if t.k is None else m

    return maps(gs), maps(hs)


def _hvp_by_difference(fm: FlatModel, name: str, x: torch.Tensor, t: Target, column: int,
                       a: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``H A`` as the central difference of the gradient along ``A``,
    ``(G((1 + eps) A) - G((1 - eps) A)) / (2 eps)``, for models with a layer whose second
    derivative torch does not implement (MobileNet v3's Hardsigmoid): two more passes."""
    grads = []
    for scale in (1 + eps, 1 - eps):
        box: list[torch.Tensor] = []

        def scaled(_: str, output: object, scale: float = scale) -> object:
            torch.set_grad_enabled(True)
            leaf = a.clone().requires_grad_(True)
            box.append(leaf)
            return _with_first(output, leaf * scale)

        with fm.intercept(name, scaled), torch.no_grad():
            out = model_output(fm, x, t)
        with torch.enable_grad():
            scores = scores_of(t, out)
            s = scores if t.k is None else scores[:, column]
            g, = torch.autograd.grad(s.sum(), box[0], allow_unused=True)
        grads.append(torch.zeros_like(a) if g is None else g / scale)
    return (grads[0] - grads[1]) / (2 * eps)


def _warn_if_blank(grads: torch.Tensor, name: str) -> None:
    """Warns when the gradient maps of some images are all zero (their gradient CAM is blank)."""
    blank = int((~grads.flatten(1).any(1)).sum())
    if blank:
        warnings.warn(
            f"the target's gradient w.r.t. layer {name!r} is zero everywhere for {blank} of "
            f"{grads.shape[0]} image(s), so their gradient-based CAM is blank (all zeros). "
            "Typical causes: a transformer layer after the last attention, where the patch "
            "tokens no longer reach a class-token output (use the last block's first norm, "
            "e.g. 'blocks.11.norm1'); a zero-initialized head (torchvision's ViT before "
            "training); a dead ReLU path. Choose another layer= or a gradient-free CAM "
            "(scorecam, eigencam)", NetlensWarning, stacklevel=user_stacklevel())


def _reaches(t: torch.Tensor, leaf: torch.Tensor) -> bool:
    """Whether the leaf tensor ``leaf`` is in the autograd graph of ``t`` (a walk of the graph,
    no backward pass)."""
    if t.grad_fn is None:
        return t is leaf
    seen = set()  # the nodes themselves (kept alive, so that no id is reused)
    stack = [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if getattr(node, "variable", None) is leaf:
            return True
        stack.extend(n for n, _ in node.next_functions if n is not None)
    return False


def _combine(
    acts: torch.Tensor, weights: torch.Tensor, size: tuple[int, int], *, relu: bool,
    interpolate: Interpolate, k: int | None, normalize: bool = False,
    eigen_smooth: bool = False,
) -> torch.Tensor:
    """cam = sum_c w_c A_c (or of the given contributions; with ``eigen_smooth`` their first
    principal component instead of their sum), ReLU, upsampling (bilinear, nearest or none),
    min-max scaling to [0, 1] per map with ``normalize``."""
    a = acts if k is None else acts.unsqueeze(1)
    contributions = weights[..., None, None] * a if weights.dim() == a.dim() - 2 else weights
    if k is not None and contributions.dim() == acts.dim():  # class-agnostic (Eigen-CAM)
        contributions = contributions.unsqueeze(1).expand(-1, k, *contributions.shape[1:])
    if eigen_smooth:
        contributions = _principal_contributions(contributions)
    cam = contributions.sum(-3, keepdim=True)
    if relu:
        cam = cam.clamp(min=0)
    cam = _resize(cam, size, _interpolation(interpolate))
    return _minmax(cam) if normalize else cam


def _resize(cam: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``(..., 1, h, w)`` maps resized to ``size`` (``mode`` "bilinear", "nearest", "none")."""
    if mode == "none":
        return cam
    lead = cam.shape[:-3]
    flat = cam.reshape(-1, *cam.shape[-3:])
    flat = (F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
            if mode == "bilinear" else F.interpolate(flat, size=size, mode="nearest"))
    return flat.reshape(*lead, *flat.shape[1:])


def _minmax(cam: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1] (a constant map becomes 0)."""
    lo = cam.amin(dim=(-2, -1), keepdim=True)
    span = cam.amax(dim=(-2, -1), keepdim=True) - lo
    return (cam - lo) / torch.where(span > 0, span, torch.ones_like(span))


def _interpolation(value: object) -> str:
    if value is True or value == "bilinear":
        return "bilinear"
    if value is False or value == "nearest":
        return "nearest"
    if value == "none":
        return "none"
    raise ValueError(f"interpolate must be True ('bilinear'), False ('nearest') or 'none' (the "
                     f"layer's resolution), got {value!r}")


_FUSE = ("mean", "max", "product")


def _check_options(fuse: object, aug_smooth: object, eigen_smooth: object) -> None:
    if fuse not in _FUSE:
        raise ValueError(f"fuse must be one of {', '.join(map(repr, _FUSE))}, got {fuse!r}")
    for name, value in (("aug_smooth", aug_smooth), ("eigen_smooth", eigen_smooth)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")


def _is_glob(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def _cam_layers(fm: FlatModel, layer: Layers) -> list[str]:
    """The CAM layers, resolved and checked to have map outputs: one for None or a name; for
    a glob, every map-shaped layer call whose name matches (in execution order); for a list,
    each of its names and globs, without repeats."""
    if layer is None:
        return [_spatial_layer(fm, None)]
    items = [layer] if isinstance(layer, str) else list(layer)
    if not items or not all(isinstance(item, str) for item in items):
        raise TypeError(f"layer must be a name, a glob or a non-empty list of them, got "
                        f"{layer!r}")
    names: list[str] = []
    for item in items:
        if not _is_glob(item):
            found = [_spatial_layer(fm, item)]
        else:
            found = [n for n in fm.layer_names if fnmatch.fnmatchcase(n, item)
                     and fm.layout(n).is_spatial]
            if not found:
                spatial = [n for n in fm.layer_names if fm.layout(n).is_spatial]
                raise ValueError(
                    f"layer pattern {item!r} matches no layer with a map output; patterns "
                    f"are matched against FlatModel(model).layer_names, e.g. "
                    f"{', '.join(map(repr, spatial[-3:]))}")
        names.extend(n for n in found if n not in names)
    return names


def cam_driver(
    model: nn.Module, x: torch.Tensor, target: TargetLike, variant: CamVariant, *,
    layer: Layers = None, interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False,
    batch_size: int | None = None, progress: bool | None = None,
    layout: LayoutLike | None = None, fuse: Fuse = "mean", aug_smooth: bool = False,
    eigen_smooth: bool = False,
) -> tuple[torch.Tensor, Target]:
    """The one pipeline every CAM runs: layer, ``A`` (and ``G``), ``variant``'s weights, sum
    over channels, ReLU, upsampling. Returns the maps (``(B, 1, H, W)``, or ``(B, K, 1, H, W)``)
    and the bound target.

    A new CAM is one ``variant``: a callable ``CamContext -> weights`` with a ``gradients``
    attribute (see :class:`CamVariant`). The options every CAM takes live here:

    * several layers (``layer=`` a list or a glob): each layer's map is computed on its own
      (one pass, or one run of the variant, per layer) and upsampled to the input, then the
      maps are fused with ``fuse``: ``"mean"`` (the default: linear, so a fused HiResCAM stays
      a sum of per-layer contributions, and pytorch-grad-cam's aggregation of several
      ``target_layers``; the multi-layer LayerCAM of detector tool-kits), ``"max"`` (the
      element-wise maximum, LayerCAM's own fusion of shallow and deep layers) or
      ``"product"`` (only where every layer agrees). With ``normalize`` each layer's map is
      scaled to [0, 1] before the fusion (so layers of different magnitudes count alike, as in
      pytorch-grad-cam) and the fused map again after it;
    * ``aug_smooth``: the mean of the maps of the :data:`AUGMENTATIONS` of the input (each
      map of a mirrored input mirrored back; ``normalize``: each scaled before the mean, and
      the mean again), the target bound once on the clean input;
    * ``eigen_smooth``: each map is the first principal component of the channels'
      contributions ``w_c A_c`` (pytorch-grad-cam's ``get_2d_projection``: centred per channel
      over positions) instead of their sum, its sign chosen as :func:`eigencam`'s.
    """
    fm, x = prepare(model, x)
    _interpolation(interpolate)  # an unknown mode fails before any pass
    _check_options(fuse, aug_smooth, eigen_smooth)
    with guarded(fm):  # one block: the model's lock is held for the whole call
        fm.ensure_traced(x)
        if isinstance(layer, str) and not _is_glob(layer) or layer is None:
            given = fm.given_layouts(layer, layout)
        else:
            if layout is None:
                given = layouts({})
            else:
                given = layouts({name: layout for name in _cam_layers(fm, layer)})
        with given:
            return _cam_in_layout(fm, x, target, variant, layer=layer, interpolate=interpolate,
                                  relu=relu, normalize=normalize, batch_size=batch_size,
                                  progress=progress, fuse=fuse, aug_smooth=aug_smooth,
                                  eigen_smooth=eigen_smooth)


def _cam_in_layout(  # cam_driver's body, with the given layout in place
    fm: FlatModel, x: torch.Tensor, target: TargetLike, variant: CamVariant, *,
    layer: Layers, interpolate: Interpolate, relu: bool, batch_size: int | None,
    normalize: bool = False, progress: bool | None, fuse: Fuse = "mean",
    aug_smooth: bool = False, eigen_smooth: bool = False,
) -> tuple[torch.Tensor, Target]:
    names = _cam_layers(fm, layer)
    needs = bool(getattr(variant, "gradients", True))
    if batch_size is None:
        batch_size = auto_batch_size(fm, x, backward=needs)
    size = (int(x.shape[2]), int(x.shape[3]))
    several = len(names) > 1
    t: TargetLike = target
    bound: Target | None = None
    if aug_smooth:
        bound = bind(fm, x, target, batch_size)
        t = bound
    views = AUGMENTATIONS if aug_smooth else ((False, 1.0),)
    maps = []
    for flip, factor in views:
        xv = x * factor if factor != 1.0 else x
        xv = xv.flip(-1) if flip else xv
        layer_maps = []
        for name in names:
            cam, ti = _one_layer(fm, xv, t, variant, name, needs=needs, size=size, relu=relu,
                                 interpolate=interpolate, batch_size=batch_size,
                                 progress=progress, normalize=normalize,
                                 eigen_smooth=eigen_smooth)
            bound = ti if bound is None else bound
            layer_maps.append(cam)
        cam = layer_maps[0] if not several else _fuse(layer_maps, fuse, names)
        if several and normalize:
            cam = _minmax(cam)
        maps.append(cam.flip(-1) if flip else cam)
    cam = maps[0] if len(maps) == 1 else torch.stack(maps).mean(0)
    if len(maps) > 1 and normalize:
        cam = _minmax(cam)
    assert bound is not None
    return cam, bound


def _fuse(maps: list[torch.Tensor], fuse: Fuse, names: list[str]) -> torch.Tensor:
    grids = sorted({tuple(m.shape[-2:]) for m in maps})
    if len(grids) > 1:
        raise ValueError(f"interpolate='none' keeps each layer's resolution, but the layers "
                         f"{names} have maps of sizes {grids}, which cannot be fused; "
                         "upsample them (interpolate=True) or choose layers of one size")
    stacked = torch.stack(maps)
    if fuse == "mean":
        return stacked.mean(0)
    if fuse == "max":
        return stacked.amax(0)
    return stacked.prod(0)


def _one_layer(
    fm: FlatModel, x: torch.Tensor, target: TargetLike, variant: CamVariant, name: str, *,
    needs: bool, size: tuple[int, int], relu: bool, interpolate: Interpolate, batch_size: int,
    progress: bool | None, normalize: bool, eigen_smooth: bool,
) -> tuple[torch.Tensor, Target]:
    """One layer's map of the images ``x`` (and the target bound to them)."""
    outs: list[Any] = []
    acts, grads, t = _layer_maps(fm, x, target, name, gradients=needs, batch_size=batch_size,
                                 outputs=outs)
    if grads is not None:
        _warn_if_blank(grads, name)
    output = (torch.cat(outs) if outs and all(isinstance(o, torch.Tensor) for o in outs)
              else None)
    ctx = CamContext(fm, x, name, fm.layout(name), acts, grads, t, batch_size, progress,
                     output)
    weights = variant(ctx)
    cam = _combine(acts, weights, size, relu=relu, normalize=normalize,
                   interpolate=interpolate, k=t.k, eigen_smooth=eigen_smooth)
    return cam, t


def _cam(
    model: nn.Module, x: torch.Tensor, target: TargetLike,
    weights_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], *,
    layer: Layers = None, interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False,
    batch_size: int | None = None, gradients: bool = True, layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
) -> tuple[torch.Tensor, Target]:
    return cam_driver(model, x, target, _FromAG(weights_fn, gradients), layer=layer,
                      interpolate=interpolate, relu=relu,
                      normalize=normalize, batch_size=batch_size, layout=layout, fuse=fuse,
                      aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)


# -- weights of each variant -----------------------------------------------------------------
def _safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, and 0 where den is 0 (where the closed forms are 0 / 0)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)), 0.0)


def _gradcam_weights(acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    assert grads is not None
    return grads.mean(dim=(-2, -1))


def _hirescam_weights(acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    assert grads is not None
    return grads * acts


def _gradcam_pp_weights(acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    # Chattopadhyay et al. eq. 19 with the score exponentiated, as in the authors' code and
    # pytorch-grad-cam: alpha = g^2 / (2 g^2 + sum_ab A_ab g^3), and 0 where that is 0 / 0.
    # (pytorch-grad-cam adds 1e-6 to the denominator, which matters when |g| ~ 1e-3.)
    assert grads is not None
    g2 = grads.pow(2)
    total = acts.sum(dim=(-2, -1), keepdim=True)
    alpha = _safe_divide(g2, 2 * g2 + total * g2 * grads)
    return (grads.clamp(min=0) * alpha).sum(dim=(-2, -1))


def _xgradcam_weights(acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    # Fu et al.: w_c = sum_ab (A_ab / sum A) dy/dA_ab; a channel with sum A = 0 gets weight 0.
    assert grads is not None
    total = acts.sum(dim=(-2, -1))
    return _safe_divide((grads * acts).sum(dim=(-2, -1)), total)


def _layercam_weights(acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    assert grads is not None
    return grads.clamp(min=0) * acts


def _principal_contributions(m: torch.Tensor) -> torch.Tensor:
    """The per-channel contributions ``v_c * centred_c`` of the projection of ``m``
    (``(..., C, h, w)``, centred per channel over positions) on its first principal direction
    ``v`` over channels. SVD leaves v's sign arbitrary: we choose sum_c v_c >= 0, which is the
    sign that makes the map correlate positively with the channel-mean. Where that sum is
    round-off (LayerNorm'ed tokens have zero channel mean, so v is orthogonal to it), the sign
    that makes the projection's largest magnitude positive decides instead."""
    centred = m - m.mean(dim=(-2, -1), keepdim=True)
    matrix = centred.flatten(-2).transpose(-1, -2)  # (..., h*w, C)
    _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    v = vh[..., 0, :]
    total = v.sum(dim=-1, keepdim=True)
    p = torch.einsum("...nc,...c->...n", matrix, v)
    peak = p.gather(-1, p.abs().argmax(dim=-1, keepdim=True))
    tiny = total.abs() <= 1e-4 * v.shape[-1] ** 0.5  # |sum v| <= 1e-4 of its largest value
    v = torch.where(torch.where(tiny, peak, total) < 0, -v, v)
    return v[..., None, None] * centred


def _eigencam_weights(acts: torch.Tensor, grads: torch.Tensor | None) -> torch.Tensor:
    # Project the centred activations (positions x channels) onto their first principal
    # direction, the sign as _principal_contributions chooses it.
    return _principal_contributions(acts)


# -- public variants -------------------------------------------------------------------------
def gradcam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
) -> torch.Tensor:
    """Grad-CAM: channels weighted by the spatial mean of the target score's gradient.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017: ``relu(sum_c mean_ab(dy/dA_c,ab) A_c)``.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64, on the model's device.
        target: class per image: int, sequence/tensor of B ints, None (the predicted class) or a
            callable ``output -> (B,)``.
        layer: the layer name (see ``FlatModel.layer_names``); None takes the last spatial
            layer (for a ViT, the input of its last attention, whose patch tokens still matter).
            A glob (``"layer4.*"``, every map-shaped layer call whose name matches) or a list
            of names and globs: each layer's map, upsampled to the input, fused by ``fuse``.
        interpolate: how the map reaches ``(H, W)``: True or ``"bilinear"``
            (``align_corners=False``); False or ``"nearest"``: nearest neighbours, each cell of
            the layer's grid a block of pixels (Netlens 1.x's ``interpolate=False``);
            ``"none"``: the map at the layer's resolution ``(h, w)``.
        relu: keep only positive evidence, as in the paper.
        normalize: min-max scale each map to ``[0, 1]`` (after the ReLU and the resizing; a
            constant map becomes 0), as Netlens 1.x returned it.
        batch_size: images per forward/backward pass; default from the memory budget.
        layout: how to view ``layer``'s output as a ``[B, C, h, w]`` map, where netlens reads
            it wrong or cannot: a :class:`~netlens.Layout` (``Layout("tokens", extra=1)`` for
            a ViT block), a kind's name (``"nhwc"``) or a function ``output -> [B, C, h, w]``
            (pytorch-grad-cam's ``reshape_transform``). None: the layout read off the forward
            pass (``FlatModel(model).layout(layer)``). With several layers, the layout of
            each.
        fuse: how the maps of several layers become one: ``"mean"`` (the default: linear,
            pytorch-grad-cam's aggregation of several target layers and the multi-layer
            LayerCAM of detector tool-kits), ``"max"`` (LayerCAM's element-wise maximum) or
            ``"product"``. With ``normalize``, each layer's map is scaled to [0, 1] first.
        aug_smooth: average the maps of pytorch-grad-cam's six test-time augmentations
            (:data:`AUGMENTATIONS`: the input times 0.9, 1 and 1.1, each also mirrored, the
            map of a mirrored input mirrored back), the target fixed on the clean input
            (for targets that a left-right mirror leaves meaningful, e.g. classes).
        eigen_smooth: each map is the first principal component of the channels'
            contributions ``w_c A_c`` instead of their sum (pytorch-grad-cam's
            ``eigen_smooth``), with :func:`eigencam`'s sign.

    Returns:
        ``(B, 1, H, W)`` (or ``(B, 1, h, w)`` with ``interpolate="none"``), ``x``'s dtype and
        device; raw values unless ``normalize``.

    Raises:
        ValueError: an unknown layer (with close matches), a layer without a spatial output,
            a glob that matches no map-shaped layer, an out-of-range target, a bad input, an
            unknown ``interpolate`` or ``fuse``; layers of different sizes with
            ``interpolate="none"``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> gradcam(m, torch.rand(1, 3, 64, 64), layer="layer3", interpolate="none").shape
        torch.Size([1, 1, 4, 4])
    """
    return _cam(model, x, target, _gradcam_weights, layer=layer, interpolate=interpolate,
                relu=relu, normalize=normalize, batch_size=batch_size, layout=layout,
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)[0]


def hirescam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
) -> torch.Tensor:
    """HiResCAM: ``relu(sum_c dy/dA_c * A_c)``, the gradient times the activation per position.

    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations", 2020.
    Args, returns and raises as :func:`gradcam`.
    """
    return _cam(model, x, target, _hirescam_weights, layer=layer, interpolate=interpolate,
                relu=relu, normalize=normalize, batch_size=batch_size, layout=layout,
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)[0]


def gradcam_pp(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
) -> torch.Tensor:
    """Grad-CAM++: positive gradients weighted by the closed-form ``alpha`` of eq. 19.

    Chattopadhyay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
    Networks", WACV 2018: ``w_c = sum_ab alpha_c,ab relu(g_c,ab)`` with
    ``alpha = g^2 / (2 g^2 + sum_ab A_c,ab g^3)`` (the exponential-score form; 0 where 0/0).
    Args, returns and raises as :func:`gradcam`.
    """
    return _cam(model, x, target, _gradcam_pp_weights, layer=layer, interpolate=interpolate,
                relu=relu, normalize=normalize, batch_size=batch_size, layout=layout,
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)[0]


def xgradcam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
) -> torch.Tensor:
    """XGrad-CAM: ``w_c = sum_ab (A_c,ab / sum A_c) dy/dA_c,ab``.

    Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs",
    BMVC 2020. Args, returns and raises as :func:`gradcam`.
    """
    return _cam(model, x, target, _xgradcam_weights, layer=layer, interpolate=interpolate,
                relu=relu, normalize=normalize, batch_size=batch_size, layout=layout,
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)[0]


def layercam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
) -> torch.Tensor:
    """LayerCAM: ``relu(sum_c relu(dy/dA_c) * A_c)``, positive gradients per position.

    Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
    IEEE TIP 2021. Args, returns and raises as :func:`gradcam`.
    """
    return _cam(model, x, target, _layercam_weights, layer=layer, interpolate=interpolate,
                relu=relu, normalize=normalize, batch_size=batch_size, layout=layout,
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)[0]


def eigencam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
) -> torch.Tensor:
    """Eigen-CAM: the layer's activations projected on their first principal component.

    Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN
    2020. Gradient-free and class-agnostic: ``target`` is validated but does not change the map.
    Activations are centred per channel (as in pytorch-grad-cam); the component's sign is
    chosen so that the map correlates positively with the channel-mean activation.
    Args, returns and raises as :func:`gradcam`.
    """
    return _cam(model, x, target, _eigencam_weights, layer=layer, interpolate=interpolate,
                relu=relu,
                normalize=normalize, batch_size=batch_size, gradients=False, layout=layout,
                fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)[0]


def _scorecam_weights(ctx: CamContext, baseline: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over channels of the target score of ``x`` masked by each channel's upsampled,
    min-max normalized activation (``x * mask``, or ``x * mask + baseline * (1 - mask)``); the
    ``B * C`` masked passes run ``batch_size`` at a time (with K targets, each pass scores all
    K)."""
    x, acts = ctx.x, ctx.activations
    batch, channels = acts.shape[:2]
    size = (int(x.shape[2]), int(x.shape[3]))
    shape = (batch * channels,) if ctx.k is None else (batch * channels, ctx.k)
    scores = x.new_empty(shape)
    with torch.no_grad(), progress_bar(batch * channels, ctx.progress, "ScoreCAM") as bar:
        for part in chunks(batch * channels, ctx.batch_size):
            index = torch.arange(part.start, part.stop, device=x.device)
            image, channel = index // channels, index % channels
            up = F.interpolate(acts[image, channel][:, None], size=size, mode="bilinear",
                               align_corners=False)
            low = up.amin(dim=(2, 3), keepdim=True)
            mask = _safe_divide(up - low, up.amax(dim=(2, 3), keepdim=True) - low)
            masked = x[image] * mask
            if baseline is not None:
                masked = masked + baseline[image] * (1 - mask)
            scores[part] = ctx.scores(image, masked)
            bar.update(part.stop - part.start)
    if ctx.k is None:
        return torch.softmax(scores.view(batch, channels), dim=1)
    return torch.softmax(scores.view(batch, channels, ctx.k).transpose(1, 2), dim=2)


def _scorecam_variant(x: torch.Tensor, baseline: float | torch.Tensor) -> CamVariant:
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool) and baseline == 0:
        return _FromContext(_scorecam_weights, gradients=False)  # x * mask, as in the paper
    try:
        base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    except RuntimeError as e:
        raise ValueError(f"baseline of shape {tuple(torch.as_tensor(baseline).shape)} does not "
                         f"broadcast to the input's shape {tuple(x.shape)}") from e
    return _FromContext(lambda ctx: _scorecam_weights(ctx, base), gradients=False)


def scorecam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: Layers = None,
    interpolate: Interpolate = True, relu: bool = True,
    normalize: bool = False, batch_size: int | None = None,
    progress: bool | None = None, layout: LayoutLike | None = None,
    fuse: Fuse = "mean", aug_smooth: bool = False, eigen_smooth: bool = False,
    baseline: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Score-CAM: channels weighted by how much each one, used as a mask, keeps the target score.

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR workshops 2020. Each channel's activation, upsampled bilinearly to the
    input size and min-max normalized to [0, 1] (a constant channel gives an all-zero mask),
    multiplies the input; the weights are the softmax over channels of the target scores of
    those masked inputs (pytorch-grad-cam's convention). Gradient-free.

    Args:
        batch_size: masked images per forward pass (also images per pass when recording the
            layer); default from the memory budget. The result does not depend on it.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.
        baseline: what the masked-out pixels become: the paper's ``x * mask`` for 0.0 (the
            default: zero in the model's input space, which for a normalized input is the
            dataset's mean colour, for raw [0, 1] pixels black), else ``x * mask + baseline *
            (1 - mask)`` with a float or a tensor broadcastable to ``x`` (a blurred copy of
            ``x``: masked regions keep their colours but lose their detail, so a channel that
            covers the background no longer scores by leaving a dark, object-like image).

    Other arguments, returns and raises as :func:`gradcam`.
    """
    fm, x = prepare(model, x)
    return cam_driver(fm, x, target, _scorecam_variant(x, baseline), layer=layer,
                      interpolate=interpolate, relu=relu,
                      normalize=normalize, batch_size=batch_size,
                      progress=progress, layout=layout,
                      fuse=fuse, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)[0]


def guided_gradcam(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, layer: str | None = None,
    batch_size: int | None = None, layout: LayoutLike | None = None,
) -> torch.Tensor:
    """Guided Grad-CAM: guided backpropagation times the Grad-CAM map upsampled to the input.

    Selvaraju et al. 2017, section 3.1. The Grad-CAM map has ReLU and bilinear upsampling
    (Captum's ``GuidedGradCam(...).attribute(x, t, interpolate_mode="bilinear")``).

    Returns:
        ``(B, C, H, W)``, ``x``'s dtype and device.

    Other arguments and raises as :func:`gradcam`.
    """
    fm = as_flat(model)
    with guarded(fm):  # one call: both passes under the model's lock
        cam, t = _cam(fm, x, target, _gradcam_weights, layer=layer, batch_size=batch_size,
                      layout=layout)
        return guided_backprop(fm, x, t, batch_size=batch_size) * cam
