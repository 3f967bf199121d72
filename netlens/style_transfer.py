"""Neural style transfer on any model, on :class:`~netlens.optvis.OptVis`.

An image is optimized so that its features at some layers match a *content* image's and their
Gram matrices at other layers match those of one or several *style* images (Gatys, Ecker and
Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016).
:class:`StyleTransferModule` holds the model and the targets (computed once),
:class:`StyleTransferObjective` is the optvis objective (minus the weighted loss),
:class:`LossReporter` records the losses, and :func:`generate_style_transfer` runs it all.
Images are ``(B, 3, H, W)`` tensors in ``[0, 1]``; the model's normalization is applied inside,
and the forward pass stops after the deepest layer that a loss reads.

Example:
    >>> import torchvision
    >>> vgg = torchvision.models.vgg16().features.eval()
    >>> content, style = torch.rand(1, 3, 48, 64), torch.rand(1, 3, 40, 40)
    >>> module = StyleTransferModule(vgg, content, style_target=style)
    >>> module.content_layers, module.style_layers
    (('20',), ('1', '6', '11', '18', '25'))
    >>> out = generate_style_transfer(module, num_steps=2, progress=False)
    >>> out.shape
    torch.Size([1, 3, 48, 64])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypedDict, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adapter import preserved_state
from .flat_model import FlatModel
from .optvis.objectives import Context, Objective
from .optvis.optim import LBFGS, ProjectedAdam
from .optvis.param import ImageParam, RawParam
from .optvis.render import (
    Callback,
    OptVis,
    check_channels,
    check_grad_mode,
    model_normalization,
    normalize_input,
)

__all__ = ["gram_matrix", "default_layers", "StyleTransferModule", "StyleTransferObjective",
           "LossReporter", "generate_style_transfer"]

Layers = Union[str, Sequence[str], None]
_RANGE_TOL = 1e-4


class _Placement(TypedDict):
    """Where the images go: ``x.to(**placement)``."""

    device: torch.device
    dtype: torch.dtype


def _tensor_sum(terms: Iterable[Tensor]) -> Tensor:
    """``sum(terms)`` of at least one tensor (so never the builtin's start, 0)."""
    total = sum(terms)
    if not isinstance(total, Tensor):
        raise TypeError(f"the style-transfer loss terms must be tensors, got {type(total).__name__}"
                        "; a loss_func must return a tensor (e.g. F.mse_loss(prediction, target))")
    return total


def gram_matrix(features: Tensor) -> Tensor:
    """The Gram matrix of each image's feature maps: ``G[b] = F[b] F[b]ᵀ / (C · H · W)``.

    ``F[b]`` is image ``b``'s features flattened to ``(C, H·W)``, so ``G`` holds the channels'
    mean products over positions, divided by ``C``: ``H·W`` makes style images of any size
    comparable, ``C`` keeps wide layers from dominating the sum of losses (Gatys et al., 2016,
    eq. 3, up to the constant).

    Args:
        features: ``(B, C, H, W)``.

    Returns:
        ``(B, C, C)``, exactly symmetric, positive semi-definite, in ``features``' dtype.

    Example:
        >>> gram_matrix(torch.ones(2, 3, 4, 5)).shape
        torch.Size([2, 3, 3])
    """
    if not isinstance(features, Tensor) or features.dim() != 4:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"gram_matrix needs features of shape (B, C, H, W), got {shape}")
    b, c, h, w = features.shape
    return _Gram.apply(features.reshape(b, c, h * w), c * h * w)


class _Gram(torch.autograd.Function):
    """``f fᵀ / n``, exactly symmetric, whose backward is one matrix product,
    ``(dG + dGᵀ) f / n``, where autograd would take two (one per operand): the Gram matrices are
    the most expensive part of the losses."""

    @staticmethod
    def forward(ctx: Any, f: Tensor, n: int) -> Tensor:
        ctx.save_for_backward(f)
        ctx.n = n
        g = torch.bmm(f, f.transpose(1, 2))
        return (g + g.transpose(1, 2)) * (0.5 / n)  # exactly symmetric, whatever the BLAS

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (f,) = ctx.saved_tensors
        return torch.bmm((grad + grad.transpose(1, 2)) / ctx.n, f), None  # scale the C x C


def default_layers(arch: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Gatys et al.'s layers for a VGG-like network: ``(content_layers, style_layers)``.

    Convolutions are numbered by block (a pooling layer ends one): content ``conv4_2``, style
    ``conv1_1 ... conv5_1``, each read after its ReLU as Gatys et al. read them (Caffe's ReLUs
    work in place). torchvision's VGG16 ``features``: ``"20"`` and ``"1", "6", "11", "18",
    "25"`` (``"features.20"``, ... on the classifier); VGG19: ``"22"`` and ``"1", "6", "11",
    "20", "29"``. Fewer blocks: one style layer per block, content in the fourth or last.

    Raises:
        ValueError: the network has no ``Conv2d``; name the layers yourself.
    """
    fm = arch if isinstance(arch, FlatModel) else FlatModel(arch)
    calls = [c for c in fm.layers if not c.functional]
    blocks: list[list[str]] = [[]]
    for i, c in enumerate(calls):
        if c.type_name == "Conv2d":
            nxt = calls[i + 1] if i + 1 < len(calls) else None
            if nxt is not None and nxt.activation is not None:  # read after its ReLU
                blocks[-1].append(nxt.name)
            else:
                blocks[-1].append(c.name)
        elif "Pool" in c.type_name and blocks[-1]:
            blocks.append([])
    blocks = [b for b in blocks if b]
    if not blocks:
        raise ValueError(f"{type(fm.model).__name__} has no Conv2d layer to take Gatys et al.'s "
                         "layers from; pass content_layers= and style_layers= by name (see "
                         "FlatModel(model).layer_names)")
    content = blocks[min(3, len(blocks) - 1)]
    return (content[min(1, len(content) - 1)],), tuple(b[0] for b in blocks[:5])


class StyleTransferModule:
    """The model, the layers and the targets of a style transfer.

    The content loss is the sum over content layers of ``loss_func(F(x), F(content))``, the
    style loss the sum over style layers of ``loss_func(T(F(x)), Σᵢ wᵢ T(F(styleᵢ)))``, with
    ``F`` the layer's features, ``T`` the ``style_transform``, ``wᵢ`` the style weights.

    Args:
        arch: any ``nn.Module`` (VGG ``features``, a whole classifier, a ResNet, ...) or a
            :class:`~netlens.FlatModel`, in eval mode; it is never changed.
        content_target: the content image ``(1 or B, C, H, W)`` (or ``(C, H, W)``) in [0, 1].
        content_layers: layer names (``FlatModel(arch).layer_names``); default
            :func:`default_layers`.
        style_layers: layer names, as ``content_layers``.
        style_target: a style image ``([1,] C, H, W)``, a batch of them, or a list of images
            of any sizes, in [0, 1].
        style_transform: ``features (B, C, h, w) -> statistics``; default :func:`gram_matrix`.
        loss_func: ``loss_func(prediction, target) -> scalar``; default mean squared error.
        style_weights: one weight >= 0 per style image, with a positive sum (normalized to 1);
            default equal weights.
        mean: the model's input normalization; default
            :func:`~netlens.optvis.render.model_normalization` (ImageNet's for torchvision).
        std: the standard deviation of that normalization, as ``mean``.

    Raises:
        UnknownLayerError: a layer name the model lacks (with the closest names).
        ValueError: images not (B, C, H, W) in [0, 1], channel counts that differ, bad weights.
    """

    def __init__(
        self, arch: nn.Module, content_target: Tensor, content_layers: Layers = None,
        style_target: Tensor | Sequence[Tensor] | None = None, style_layers: Layers = None,
        style_transform: Callable[[Tensor], Tensor] = gram_matrix,
        loss_func: Callable[[Tensor, Tensor], Tensor] = F.mse_loss, *,
        style_weights: Sequence[float] | None = None, mean: Any = None, std: Any = None,
    ) -> None:
        self.fm = arch if isinstance(arch, FlatModel) else FlatModel(arch)
        ref = next((p for p in self.fm.model.parameters() if p.is_floating_point()), None)
        self._to: _Placement = {"device": ref.device if ref is not None else torch.device("cpu"),
                                "dtype": ref.dtype if ref is not None else torch.float32}
        self.content_image = self._image(content_target, "content_target")
        if style_target is None:
            raise ValueError("give style_target=, one style image (1, C, H, W) or a list")
        styles = [self._image(s, "style_target") for s in (
            list(style_target) if isinstance(style_target, (list, tuple)) else [style_target])]
        styles = [s[i:i + 1] for s in styles for i in range(s.shape[0])]
        channels = {int(x.shape[1]) for x in [self.content_image, *styles]}
        if len(channels) > 1:
            raise ValueError(f"the content and style images have different channel counts "
                             f"{sorted(channels)}; give them all the model's channels (e.g. "
                             "x.expand(-1, 3, -1, -1) for a grayscale image)")
        check_channels(channels.pop(), self.fm.model, "the content image")
        self.style_weights = _normalized_weights(style_weights, len(styles))
        self.style_transform, self.loss_func = style_transform, loss_func
        d_mean, d_std = model_normalization(self.fm)
        self.mean, self.std = d_mean if mean is None else mean, d_std if std is None else std
        self.fm.ensure_traced(self.content_image)
        if content_layers is None or style_layers is None:
            d_content, d_style = default_layers(self.fm)
            content_layers = d_content if content_layers is None else content_layers
            style_layers = d_style if style_layers is None else style_layers
        self.content_layers = self._names(content_layers, "content_layers")
        self.style_layers = self._names(style_layers, "style_layers")
        with torch.no_grad():
            self.content_features = self.features(self.content_image, self.content_layers)
            stats = [{n: style_transform(f) for n, f in self.features(s, self.style_layers).items()}
                     for s in styles]
        for name in self.style_layers:
            if len({tuple(st[name].shape) for st in stats}) > 1:
                raise ValueError(f"style_transform gives statistics of different shapes at layer "
                                 f"{name!r} for the style images; to mix them, it must not depend "
                                 "on the image size (as gram_matrix does not)")
        self.style_targets = {n: _tensor_sum(w * st[n] for w, st in zip(self.style_weights, stats))
                              for n in self.style_layers}

    def objective(self, style_weight: float = 1e6, content_weight: float = 1.0,
                  tv_weight: float = 0.0) -> StyleTransferObjective:
        """The optvis objective: minus the weighted sum of the losses (see
        :class:`StyleTransferObjective`)."""
        return StyleTransferObjective(self, style_weight, content_weight, tv_weight)

    def losses(self, image: Tensor) -> dict[str, Tensor]:
        """The unweighted ``{"content", "style"}`` losses of ``image`` (1 or B, C, H, W) in
        [0, 1], scalar tensors differentiable w.r.t. ``image`` (not the model's weights)."""
        image = self._image(image, "image", detach=False)
        f = self.features(image, self.content_layers + self.style_layers)
        return {"content": self.content_loss(f.__getitem__),
                "style": self.style_loss(f.__getitem__)}

    def compute_losses(self, x: Tensor, style_weight: float = 1e6, content_weight: float = 1.0,
                       tv_weight: float = 0.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The weighted losses of ``x``: ``(total, style, content, tv)``, as the original
        Netlens's ``compute_losses``.

        ``style = style_weight · style loss``, ``content = content_weight · content loss``,
        ``tv = tv_weight · tv(x)`` and ``total = style + content + tv``, the loss that
        :func:`generate_style_transfer` minimizes (its objective is ``-total``). ``tv`` is the
        mean squared difference between neighbouring pixels (see
        :class:`StyleTransferObjective`). One forward pass, stopped after the deepest layer
        read; a zero weight skips its term (its layers are not read) and gives a zero tensor.

        Args:
            x: the image ``(1 or B, C, H, W)`` in [0, 1], of the content's size; the losses
                are differentiable w.r.t. it (not w.r.t. the model's weights).
            style_weight: the weight of the style loss, >= 0.
            content_weight: the weight of the content loss, >= 0.
            tv_weight: the weight of the total variation, >= 0.

        Returns:
            Four scalar tensors ``(total, style, content, tv)``.

        Raises:
            ValueError: an image not (B, C, H, W) in [0, 1] or of another size than the
                content's, negative weights, or all three weights 0.

        Example:
            >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
            >>> m = StyleTransferModule(net, torch.rand(1, 3, 16, 16), "1",
            ...                         torch.rand(1, 3, 16, 16), "1")
            >>> total, style, content, tv = m.compute_losses(torch.rand(1, 3, 16, 16))
            >>> bool(torch.allclose(total, style + content + tv))
            True
        """
        w = _weights(style_weight, content_weight, tv_weight)
        terms = self._terms(self._image(x, "x", detach=False), w)
        zero = next(iter(terms.values())).new_zeros(())
        style, content, tv = (w[k] * terms[k] if k in terms else zero
                              for k in ("style", "content", "tv"))
        return content + style + tv, style, content, tv  # the objective's order of the sum

    def _terms(self, image: Tensor, weights: dict[str, float]) -> dict[str, Tensor]:
        """The unweighted losses of positive weight, ``{"content", "style", "tv"}`` in order."""
        layers = (self.content_layers if weights.get("content") else ()) + (
            self.style_layers if weights.get("style") else ())
        terms: dict[str, Tensor] = {}
        if layers:
            f = self.features(image, layers)
            if weights.get("content"):
                terms["content"] = self.content_loss(f.__getitem__)
            if weights.get("style"):
                terms["style"] = self.style_loss(f.__getitem__)
        if weights.get("tv"):
            terms["tv"] = _total_variation(image)
        return terms

    def features(self, image: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """The ``[B, C, h, w]`` features of ``image`` in [0, 1] at ``layers``: one forward pass,
        normalized, stopped after the deepest of them; differentiable w.r.t. ``image``."""
        names = list(dict.fromkeys(self.fm.resolve_layer(n) for n in layers))
        stop = max(names, key=lambda n: self.fm.layer_info(n).end_order)
        with preserved_state(self.fm.model, buffers=True):
            for p in self.fm.model.parameters():  # no weight gradients, now or later
                p.requires_grad_(False)
            with self.fm.record(names, detach=False) as rec:
                self.fm(normalize_input(image, self.mean, self.std), until=stop)
        hw = (image.shape[-2], image.shape[-1])
        return {n: self.fm.layout(n).to_map(rec.activations[n], hw) for n in names}

    def content_loss(self, features: Callable[[str], Tensor]) -> Tensor:
        """Sum over content layers of ``loss_func(features(layer), content features)``."""
        total: Tensor | float = 0.0
        for name in self.content_layers:
            f, t = features(name), self.content_features[name]
            if f.shape[-2:] != t.shape[-2:] or t.shape[0] not in (1, f.shape[0]):
                h, w = self.content_image.shape[-2:]
                raise ValueError(
                    f"layer {name!r} gives {tuple(f.shape)} for this image but "
                    f"{tuple(t.shape)} for the content image; optimize an image of the "
                    f"content's size ({h}x{w}) and batch ({t.shape[0]}, or 1 for any batch)")
            total = total + self.loss_func(f, t.expand_as(f))
        assert isinstance(total, Tensor)  # content_layers is never empty
        return total

    def style_loss(self, features: Callable[[str], Tensor]) -> Tensor:
        """Sum over style layers of ``loss_func(style_transform(features(layer)), target)``."""
        total: Tensor | float = 0.0
        for name in self.style_layers:
            s = self.style_transform(features(name))
            total = total + self.loss_func(s, self.style_targets[name].expand_as(s))
        assert isinstance(total, Tensor)  # style_layers is never empty
        return total

    def __repr__(self) -> str:
        h, w = self.content_image.shape[-2:]
        return (f"StyleTransferModule({type(self.fm.model).__name__}, content {h}x{w} at "
                f"{list(self.content_layers)}, {len(self.style_weights)} style image(s) at "
                f"{list(self.style_layers)})")

    def _names(self, layers: Layers, what: str) -> tuple[str, ...]:
        names = [layers] if isinstance(layers, str) else list(layers or ())
        if not names:
            raise ValueError(f"{what} is empty; name at least one layer")
        return tuple(dict.fromkeys(self.fm.resolve_layer(n) for n in names))

    def _image(self, x: object, what: str, detach: bool = True) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"{what} must be a float tensor (B, C, H, W) in [0, 1], got {kind}; "
                            "load images with netlens.image.load(path, mean=None, std=None)")
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.numel() == 0:
            raise ValueError(f"{what} must have shape (B, C, H, W), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x.detach()).all()):
            raise ValueError(f"{what} holds NaN or infinite values")
        lo, hi = float(x.detach().min()), float(x.detach().max())
        if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise ValueError(f"{what} must hold pixels in [0, 1], got [{lo:.3g}, {hi:.3g}]; pass "
                             "raw images, not model-normalized ones (netlens.image.load(..., "
                             "mean=None, std=None), or netlens.image.denormalize)")
        if not detach:  # the caller differentiates w.r.t. x: no clamp, no copy
            return x.to(**self._to)
        return x.detach().clamp(0, 1).to(**self._to)


class StyleTransferObjective(Objective):
    """Minus ``style_weight · style + content_weight · content + tv_weight · tv``, to maximize.

    ``tv`` is the mean squared difference between neighbouring pixels, horizontal plus
    vertical: ``mean((x[..., :, 1:] - x[..., :, :-1])²) + mean((x[..., 1:, :] -
    x[..., :-1, :])²)``. The original Netlens used the anisotropic L1 total variation, the
    *sum* of the absolute neighbour differences; the mean of squares does not depend on the
    image size and is smooth at 0 (L-BFGS needs a smooth loss), so a ``tv_weight`` of the
    original corresponds to a very different value here. A zero weight drops its term: it is
    not computed, its layers are not read (a content-only objective stops the forward pass at
    the content layer) and it is not in :attr:`losses`.

    Called on an image, ``objective(image)`` gives the *total loss* (the weighted sum above,
    which the optimization lowers), as the original's objectives did, equal to
    ``module.compute_losses(image, ...)[0]``; called on a :class:`Context` inside
    :class:`~netlens.optvis.OptVis` it gives the score to maximize, minus that loss.

    Args:
        module: the :class:`StyleTransferModule`.
        style_weight: the weight of the style loss, >= 0.
        content_weight: the weight of the content loss, >= 0.
        tv_weight: the weight of the total variation, >= 0.

    Attributes:
        losses: the unweighted losses of the last evaluation, ``{"content", "style", "tv"}``
            (the terms of positive weight) and the weighted ``"total"``, as floats.

    Raises:
        TypeError: ``module`` is not a :class:`StyleTransferModule`.
        ValueError: negative weights, or all three 0.
    """

    def __init__(self, module: StyleTransferModule, style_weight: float = 1e6,
                 content_weight: float = 1.0, tv_weight: float = 0.0) -> None:
        if not isinstance(module, StyleTransferModule):
            raise TypeError(f"module must be a StyleTransferModule, got {type(module).__name__}")
        w = _weights(style_weight, content_weight, tv_weight)
        self.module, self.weights = module, {k: v for k, v in w.items() if v > 0}
        layers = (module.content_layers if w["content"] else ()) + (
            module.style_layers if w["style"] else ())
        super().__init__(self._score, f"style_transfer(style={w['style']:g}, "
                         f"content={w['content']:g}, tv={w['tv']:g})", layers=layers)
        self._last: dict[str, Tensor] = {}

    @property
    def losses(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._last.items()}

    def __call__(self, ctx: Context | Tensor, model: nn.Module | None = None, *,
                 mean: Any = None, std: Any = None) -> Tensor:
        """The score ``-total`` on a :class:`Context`; the total loss on an image.

        Args:
            ctx: a :class:`Context`, or an image ``(1 or B, C, H, W)`` in [0, 1] of the
                content's size.
            model: not needed (the module holds it); if given, it must be the module's model.
            mean: not accepted: the module's normalization applies (``module.mean``).
            std: not accepted, as ``mean``.

        Returns:
            A scalar tensor, differentiable w.r.t. the image.

        Raises:
            ValueError: another model, or ``mean=``/``std=`` with an image.
        """
        if isinstance(ctx, Context):
            return super().__call__(ctx, model, mean=mean, std=std)
        m = self.module
        if model is not None and model is not m.fm and model is not m.fm.model:
            raise ValueError("this objective evaluates its StyleTransferModule's model; call it "
                             "as objective(image), without model=")
        if mean is not None or std is not None:
            raise ValueError(f"the module's normalization applies (mean={m.mean!r}, "
                             f"std={m.std!r}); build the StyleTransferModule with mean=, std=")
        terms = m._terms(m._image(ctx, "image", detach=False), self.weights)
        return self._total(terms)

    def evaluate(self, model: nn.Module, image: Tensor, *, mean: Any = None, std: Any = None,
                 layouts: Any = None) -> Tensor:
        """The score :class:`~netlens.optvis.OptVis` maximizes at ``image``: minus the total
        loss, with the module's normalization unless ``mean``/``std`` are given (see
        :meth:`netlens.optvis.objectives.Objective.evaluate`)."""
        m = self.module
        return super().evaluate(model, image, mean=m.mean if mean is None else mean,
                                std=m.std if std is None else std, layouts=layouts)

    def _score(self, ctx: Context) -> Tensor:
        m, terms = self.module, {}
        if "content" in self.weights:
            terms["content"] = m.content_loss(ctx.__getitem__)
        if "style" in self.weights:
            terms["style"] = m.style_loss(ctx.__getitem__)
        if "tv" in self.weights:
            terms["tv"] = _total_variation(ctx.image)
        return -self._total(terms)

    def _total(self, terms: dict[str, Tensor]) -> Tensor:
        total = _tensor_sum(self.weights[k] * v for k, v in terms.items())  # >= 1 term
        self._last = {k: v.detach() for k, v in terms.items()}
        self._last["total"] = total.detach()
        return total


class LossReporter(Callback):
    """Records the losses of every step of a style-transfer run.

    Pass it as ``callback=``; after the run, ``history["step"]`` holds the steps and
    ``history["content"]``, ``["style"]``, ``["tv"]`` (the terms of positive weight) and
    ``["total"]`` the losses at each step, measured on the image at the start of that step.

    Args:
        objective: the :class:`StyleTransferObjective` to read; default the run's objective.
    """

    def __init__(self, objective: StyleTransferObjective | None = None) -> None:
        self.objective = objective
        self.history: dict[str, list[float]] = {"step": []}

    def on_begin(self, vis: OptVis) -> None:
        self.history = {"step": []}

    def on_step(self, vis: OptVis, step: int, value: float) -> None:
        obj = self.objective if self.objective is not None else vis.objective
        if not isinstance(obj, StyleTransferObjective):
            raise TypeError("LossReporter reads a StyleTransferObjective; pass it as "
                            "LossReporter(objective)")
        self.history["step"].append(step)
        for k, v in obj.losses.items():
            self.history.setdefault(k, []).append(v)


def generate_style_transfer(
    module: StyleTransferModule, input_img: Tensor | None = None,
    num_steps: int | Sequence[int] = 300, style_weight: float = 1e6, content_weight: float = 1.0,
    tv_weight: float = 0.0, *, optimizer: str | Callable[[list], torch.optim.Optimizer] = "lbfgs",
    param: str | nn.Module = "raw", lr: float | None = None, history_size: int = 50,
    progress: bool | None = True, callback: Callback | Callable | None = None,
    show: bool | ShowFunction = False, show_step: int | None = None,
) -> Any:
    """Optimizes an image to the content of one image and the style of others.

    One step is one forward and backward pass, with either optimizer; no random transforms.
    L-BFGS keeps its curvature memory from step to step and needs no line search: a trust
    region on the largest pixel change keeps it stable whatever the scale of the losses (see
    :class:`~netlens.optvis.optim.LBFGS`), and one more forward pass at the end checks that its
    last step did not raise the loss. With ``param="raw"`` the pixels are projected into [0, 1]
    after every step (a function ``optimizer`` gets a straight-through clamp instead).

    Args:
        module: the :class:`StyleTransferModule`.
        input_img: the start ``(1 or B, C, H, W)`` in [0, 1], of the content's size; default the
            content image.
        num_steps: steps (forward + backward passes); 0 returns the rendered start image. A
            sequence of increasing step counts (the original's tuple of thresholds, e.g.
            ``(50, 100, 300)``) runs to the last and returns one image per count.
        style_weight: see :class:`StyleTransferObjective`.
        content_weight: see :class:`StyleTransferObjective`.
        tv_weight: see :class:`StyleTransferObjective`.
        optimizer: ``"lbfgs"``, ``"adam"`` or a function ``params -> Optimizer``.
        param: ``"raw"`` (the pixels), ``"fft"`` (a Fourier, colour-decorrelated
            :class:`~netlens.optvis.param.ImageParam` started from ``input_img``) or your own.
        lr: default 1 for L-BFGS, 0.02 for Adam on pixels, 0.2 for Adam on ``"fft"``.
        history_size: the number of L-BFGS correction pairs kept.
        progress: show a progress bar (None: only when slow).
        callback: a :class:`~netlens.optvis.render.Callback` (e.g. :class:`LossReporter`) or
            a function ``f(vis, step, value)`` called after every step.
        show: show the picture at each of the ``num_steps`` counts (and every ``show_step``
            steps) while it runs, as the original's ``show=True``: ``True`` displays a
            matplotlib figure titled with the step and the losses in a Jupyter/IPython session;
            a function ``f(image, step, losses)`` receives the picture ``(B, C, H, W)``, the
            step and the step's unweighted losses (:attr:`StyleTransferObjective.losses`).
        show_step: also show every ``show_step`` steps (needs ``show``).

    Returns:
        The image ``(B, C, H, W)`` in [0, 1], detached, on the model's device; a list of them,
        one per count, when ``num_steps`` is a sequence.

    Raises:
        ValueError: an input image of another size or range, an unknown optimizer or param,
            negative weights, a non-finite loss (lower ``lr``), ``num_steps`` that are not
            increasing ints (> 0 in a sequence), ``show=True`` outside IPython, ``show_step``
            without ``show``.
        RuntimeError: under ``torch.inference_mode()``, which disables gradients.
    """
    check_grad_mode("style transfer")
    if not isinstance(module, StyleTransferModule):
        raise TypeError(f"module must be a StyleTransferModule, got {type(module).__name__}")
    steps = _steps(num_steps)
    shower = _shower(show, show_step)
    objective = module.objective(style_weight, content_weight, tv_weight)
    image = module.content_image if input_img is None else module._image(input_img, "input_img")
    if image.shape[-2:] != module.content_image.shape[-2:]:
        raise ValueError(f"input_img is {tuple(image.shape[-2:])} but the content image is "
                         f"{tuple(module.content_image.shape[-2:])}; start from an image of the "
                         "content's size (e.g. torch.rand_like(content))")
    box = None if isinstance(param, nn.Module) or param != "raw" or callable(optimizer) \
        else (0.0, 1.0)  # our optimizers keep the pixels in [0, 1] by projection
    if isinstance(param, nn.Module):
        p = param
    elif param == "raw":
        p = RawParam(image, clamp=box is None)
    elif param == "fft":
        p = ImageParam(image=image, fft=True, decorrelate=image.shape[1] == 3)
    else:
        raise ValueError(f"param must be 'raw', 'fft' or a parameterization, got {param!r}")
    if steps == [0]:
        with torch.no_grad():
            return p().detach().clone()
    made: list[torch.optim.Optimizer] = []

    def make(params: list) -> torch.optim.Optimizer:
        if optimizer == "lbfgs":
            made.append(LBFGS(params, rate, history_size, box))
        elif optimizer == "adam":
            made.append(ProjectedAdam(params, rate, box))
        elif callable(optimizer):  # checked below, before any step
            made.append(optimizer(params))
        return made[-1]

    if optimizer in ("lbfgs", "adam"):
        default = 1.0 if optimizer == "lbfgs" else 0.2 if param == "fft" else 0.02
        rate = default if lr is None else lr
    elif callable(optimizer):
        rate = math.nan if lr is None else lr
    else:
        raise ValueError(f"optimizer must be 'lbfgs', 'adam' or a function params -> Optimizer, "
                         f"got {optimizer!r}")
    vis = OptVis(module.fm, objective, p, transforms=(), optimizer=make, lr=rate,
                 mean=module.mean, std=module.std, redirect_steps=0)
    if shower is not None:
        callback = _Showing(callback, shower, objective, steps, show_step)
    images = vis.vis(steps, callback=callback, progress=progress)
    if isinstance(made[0], LBFGS) and made[0].undo_untried_step(-vis.value()):
        with torch.no_grad():
            images[-1] = p().detach().clone()
    return images if not isinstance(num_steps, numbers.Integral) else images[-1]


ShowFunction = Callable[[Tensor, int, "dict[str, float]"], Any]


def _steps(num_steps: object) -> list[int]:
    """``[n]`` for an int ``n >= 0``; the counts of a strictly increasing sequence of ints > 0."""
    if isinstance(num_steps, numbers.Integral) and not isinstance(num_steps, bool):
        if num_steps < 0:
            raise ValueError(f"num_steps must be an int >= 0, got {num_steps!r}")
        return [int(num_steps)]
    if isinstance(num_steps, (str, bytes, Tensor)) or not isinstance(num_steps, Sequence):
        raise ValueError(f"num_steps must be an int >= 0 or a sequence of step counts, e.g. "
                         f"(50, 100, 300), got {num_steps!r}")
    counts = list(num_steps)
    if not counts or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1
                         for n in counts):
        raise ValueError(f"num_steps as a sequence must hold ints > 0, e.g. (50, 100, 300), got "
                         f"{num_steps!r}")
    if any(b <= a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"num_steps must be strictly increasing, got {num_steps!r}")
    return [int(n) for n in counts]


def _shower(show: object, show_step: object) -> ShowFunction | None:
    if show_step is not None and (isinstance(show_step, bool) or
                                  not isinstance(show_step, numbers.Integral) or show_step < 1):
        raise ValueError(f"show_step must be an int >= 1, got {show_step!r}")
    if show is False or show is None:
        if show_step is not None:
            raise ValueError("show_step= says how often to show the picture; pass show=True "
                             "(in a notebook) or show=f(image, step, losses) as well")
        return None
    if show is True:
        if _ipython() is None:
            raise ValueError("show=True displays the pictures in a Jupyter/IPython session; "
                             "elsewhere pass show=f(image, step, losses) (e.g. to save them) or "
                             "use the images returned")
        return _display_picture
    if callable(show):
        return show
    raise TypeError(f"show must be True, False or a function f(image, step, losses), got "
                    f"{type(show).__name__}")


def _ipython() -> Any:
    """The running IPython shell, or None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _picture(image: Tensor, step: int, losses: dict[str, float]) -> Any:
    """A matplotlib figure of the pictures, titled with the step and the losses."""
    from matplotlib.figure import Figure

    n = image.shape[0]
    fig = Figure(figsize=(3.0 * n, 3.3))
    text = ", ".join(f"{k} {v:.3g}" for k, v in losses.items())
    for i, ax in enumerate(fig.subplots(1, n, squeeze=False)[0]):
        im = image[i].detach().float().clamp(0, 1).cpu()
        ax.imshow(im[0] if im.shape[0] == 1 else im.permute(1, 2, 0).numpy(),
                  cmap="gray" if im.shape[0] == 1 else None, vmin=0, vmax=1)
        ax.set_axis_off()
    fig.suptitle(f"step {step}: {text}" if text else f"step {step}", fontsize=9)
    return fig


def _display_picture(image: Tensor, step: int, losses: dict[str, float]) -> None:
    from IPython.display import display

    display(_picture(image, step, losses))


class _Showing(Callback):
    """Calls the user's callback, and shows the picture at the counts and every ``every`` steps."""

    def __init__(self, inner: Callback | Callable | None, show: ShowFunction,
                 objective: StyleTransferObjective, steps: list[int], every: int | None) -> None:
        if inner is not None and not callable(inner) and not isinstance(inner, Callback):
            raise TypeError(f"callback must be a Callback or a function, got "
                            f"{type(inner).__name__}")
        self.inner, self.show, self.objective = inner, show, objective
        self.steps, self.every = set(steps), every

    def on_begin(self, vis: OptVis) -> None:
        if isinstance(self.inner, Callback):
            self.inner.on_begin(vis)

    def on_step(self, vis: OptVis, step: int, value: float) -> None:
        if isinstance(self.inner, Callback):
            self.inner.on_step(vis, step, value)
        elif self.inner is not None:
            self.inner(vis, step, value)
        if step in self.steps or (self.every is not None and step % self.every == 0):
            with torch.no_grad():
                image = vis.param().detach().clone()
            self.show(image, step, self.objective.losses)

    def on_end(self, vis: OptVis, images: list[Tensor]) -> None:
        if isinstance(self.inner, Callback):
            self.inner.on_end(vis, images)


def _total_variation(image: Tensor) -> Tensor:
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


def _weights(style_weight: object, content_weight: object, tv_weight: object
             ) -> dict[str, float]:
    w = {"style": _weight(style_weight, "style_weight"),
         "content": _weight(content_weight, "content_weight"),
         "tv": _weight(tv_weight, "tv_weight")}
    if not any(w.values()):
        raise ValueError("style_weight, content_weight and tv_weight are all 0: nothing to "
                         "optimize")
    return w


def _weight(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _normalized_weights(weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0 / n,) * n
    w = [_weight(v, "each style weight") for v in weights]
    if len(w) != n:
        raise ValueError(f"style_weights has {len(w)} entries for {n} style image(s); give one "
                         "weight per style image")
    if not sum(w) > 0:
        raise ValueError(f"style_weights must have a positive sum, got {list(weights)!r}")
    return tuple(v / sum(w) for v in w)
