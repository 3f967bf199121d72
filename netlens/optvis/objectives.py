"""Objectives for feature visualization: small values that compose with ``+ - * /``.

An :class:`Objective` is a *score to maximize*: :class:`~netlens.optvis.OptVis` climbs it.
Activation objectives (:func:`channel`, :func:`neuron`, :func:`layer`, :func:`class_logit`,
:func:`direction`) grow with the activation; :func:`diversity` grows as the images of a batch
differ. Priors on the image (:func:`total_variation`, :func:`l1`, :func:`l2`, :func:`alpha_norm`)
measure a quantity that grows with noise, so they are *subtracted*::

    obj = channel("layer3", 5) - 0.5 * total_variation()

Each objective names the layers it reads by their :class:`~netlens.FlatModel` names
(``"layer3"``, ``"features.28"``, ``"layer1.0.relu:1"``, ViT ``"encoder.layers.encoder_layer_5"``);
token and channels-last layers are seen as ``[B, C, h, w]`` maps through the adapter. With
``batch=i`` an objective reads only image ``i`` of the batch, so one run can give every image its
own objective (``sum(channel(layer, c, batch=c) for c in range(4))``).

Values are means over the batch images they read and over positions, so an objective's scale
does not depend on the batch size or the image size.

An objective is evaluated on a :class:`Context` inside the optimization loop, or on images
``(B, C, H, W)`` in ``[0, 1]`` directly: ``obj(image, model=model)`` (or
``obj.evaluate(model, image)``) gives the value :class:`~netlens.optvis.OptVis` maximizes at that
image (its model normalization, no transforms), a scalar tensor differentiable w.r.t. ``image``.
Image priors read no model, so ``total_variation()(image)`` works without one.

Example:
    >>> import torchvision
    >>> model = torchvision.models.resnet18().eval()
    >>> image = torch.rand(1, 3, 64, 64)
    >>> obj = channel("layer2", 7) - 0.1 * total_variation()
    >>> obj(image, model=model).shape
    torch.Size([])
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Union, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from typing import TypeGuard  # Python 3.10+; the annotations are never evaluated

    from ..adapter import LayoutLike

__all__ = [
    "Objective",
    "Context",
    "channel",
    "neuron",
    "layer",
    "class_logit",
    "direction",
    "diversity",
    "match",
    "total_variation",
    "l1",
    "l2",
    "alpha_norm",
    "as_objective",
]

Batch = Union[int, Iterable[int], None]


class Context:
    """What an objective reads during one optimization step.

    Attributes:
        image: the parameterized images ``(B, C, H, W)`` in ``[0, 1]``, before the transforms.
        output: the model's output (only when an objective needs it; else None).
    """

    def __init__(self, image: torch.Tensor, activations: Mapping[str, torch.Tensor],
                 output: Any = None) -> None:
        self.image, self.output, self._activations = image, output, activations

    def __getitem__(self, name: str) -> torch.Tensor:
        """The layer's output as a ``[B, C, h, w]`` map (``[B, D]`` as ``[B, D, 1, 1]``)."""
        return self._activations[name]


class Objective:
    """A differentiable score of one optimization step, to maximize.

    Args:
        fn: ``Context -> scalar tensor``.
        name: how it prints, e.g. ``"channel('layer3', 5)"``.
        layers: the layer names ``fn`` reads.
        needs_output: whether ``fn`` reads the model's final output (the full forward pass).
    """

    __slots__ = ("fn", "name", "layers", "needs_output")

    def __init__(self, fn: Callable[[Context], torch.Tensor], name: str = "objective", *,
                 layers: Iterable[str] = (), needs_output: bool = False) -> None:
        self.fn, self.name = fn, name
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(layers))
        self.needs_output = bool(needs_output)

    def __call__(self, ctx: Context | torch.Tensor, model: nn.Module | None = None, *,
                 mean: Any = None, std: Any = None) -> torch.Tensor:
        """The objective's value on a :class:`Context`, or on images with ``model``.

        Args:
            ctx: a :class:`Context` (inside the optimization loop), or images
                ``(B, C, H, W)`` in ``[0, 1]``.
            model: with images: the model whose layers or output the objective reads (see
                :meth:`evaluate`); not needed by image priors, which read only the image.
            mean: with images, the model's input normalization (see :meth:`evaluate`).
            std: with images, the standard deviation of that normalization.

        Returns:
            A scalar tensor.

        Raises:
            TypeError: images without ``model`` for an objective that reads a layer or the
                model's output (the message says how to evaluate it), or ``model`` with a
                :class:`Context`.
        """
        if isinstance(ctx, Context):
            if model is not None or mean is not None or std is not None:
                raise TypeError("model=, mean= and std= apply to images only; a Context already "
                                "holds the activations")
            return self.fn(ctx)
        if model is None:
            _check_image(ctx)
            if self.layers or self.needs_output:
                reads = (f"layer(s) {list(self.layers)}" if self.layers
                         else "the model's output")
                raise TypeError(f"the objective {self.name} reads {reads}, so it needs a model to "
                                "be evaluated on an image: call obj(image, model=model) or "
                                "obj.evaluate(model, image)")
            return _scalar(self.fn(Context(ctx, {})), self)
        return self.evaluate(model, ctx, mean=mean, std=std)

    def evaluate(self, model: nn.Module, image: torch.Tensor, *, mean: Any = None,
                 std: Any = None, layouts: Mapping[str, LayoutLike] | None = None
                 ) -> torch.Tensor:
        """The value :class:`~netlens.optvis.OptVis` maximizes at ``image``: the model's input
        normalization, one forward pass (stopped after the deepest layer read), no transforms.

        It equals ``OptVis(model, obj, ...).value(image)`` and OptVis's first step on ``image``
        with ``transforms=()``; unlike :meth:`~netlens.optvis.OptVis.value` it is a tensor,
        differentiable w.r.t. ``image`` (never w.r.t. the model's weights). The model is left
        as it was (evaluated in eval mode). Pass a :class:`~netlens.FlatModel` to reuse its
        trace across calls.

        Args:
            model: any ``nn.Module`` or :class:`~netlens.FlatModel`.
            image: ``(B, C, H, W)`` in ``[0, 1]``, the batch the objective expects.
            mean: the model's input normalization, as :class:`~netlens.optvis.OptVis`'s
                (default :func:`~netlens.optvis.render.model_normalization`; ``mean=0.0,
                std=1.0`` for none).
            std: the standard deviation of that normalization, as ``mean``.
            layouts: layer name -> how to view its output, as OptVis's ``layouts=``.

        Returns:
            A scalar tensor.

        Raises:
            TypeError: ``image`` is not a float tensor or ``model`` not an ``nn.Module``.
            ValueError: an image that is not ``(B, C, H, W)`` or does not fit the model, or
                an objective that cannot read its layer (channel out of range, ...).
            UnknownLayerError: the model has no layer of that name.

        Example:
            >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
            >>> x = torch.rand(2, 3, 8, 8)
            >>> value = channel("1", 2).evaluate(model, x, mean=0.0, std=1.0)
            >>> torch.allclose(value, model(x)[:, 2].mean())
            True
        """
        from contextlib import nullcontext

        from ..adapter import model_lock, preserved_state
        from .render import OptVis  # render imports this module

        _check_image(image)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module or a FlatModel, got "
                            f"{type(model).__name__}")
        vis = OptVis(model, self, _Fixed(image), transforms=(), mean=mean, std=std,
                     redirect_steps=0, layouts=layouts)
        fm = vis.fm
        with model_lock(fm.model), preserved_state(fm.model, eval=True):
            for p in fm.model.parameters():  # the graph reaches the image only
                p.requires_grad_(False)
            with fm.intercept(vis._layers, vis._keep) if vis._layers else nullcontext():
                return vis._evaluate(image, image)

    def __repr__(self) -> str:
        return self.name

    # -- the algebra ----------------------------------------------------------------------
    def _join(self, other: Objective, op: Callable[[Any, Any], Any], sym: str) -> Objective:
        a, b = self, other
        return Objective(lambda ctx: op(a(ctx), b(ctx)), f"{a.name} {sym} {_paren(b.name)}",
                         layers=a.layers + b.layers,
                         needs_output=a.needs_output or b.needs_output)

    def _scaled(self, factor: float, name: str) -> Objective:
        a = self
        return Objective(lambda ctx: a(ctx) * factor, name, layers=a.layers,
                         needs_output=a.needs_output)

    def __add__(self, other: object) -> Objective:
        if _is_scalar(other):
            if other == 0:  # so that sum(objectives) works
                return self
            c, a = float(other), self
            return Objective(lambda ctx: a(ctx) + c, f"{a.name} + {c:g}", layers=a.layers,
                             needs_output=a.needs_output)
        return self._join(_check(other, "+"), lambda u, v: u + v, "+")

    __radd__ = __add__

    def __sub__(self, other: object) -> Objective:
        if _is_scalar(other):
            return self + (-float(other))
        return self._join(_check(other, "-"), lambda u, v: u - v, "-")

    def __rsub__(self, other: object) -> Objective:
        return (-self) + other

    def __neg__(self) -> Objective:
        return self._scaled(-1.0, f"-{_paren(self.name)}")

    def __mul__(self, other: object) -> Objective:
        if not _is_scalar(other):
            raise TypeError(f"an objective can be multiplied by a number only, not by "
                            f"{type(other).__name__}")
        return self._scaled(float(other), f"{float(other):g} * {_paren(self.name)}")

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> Objective:
        if not _is_scalar(other) or float(other) == 0:
            raise TypeError(f"an objective can be divided by a non-zero number only, got "
                            f"{other!r}")
        return self._scaled(1.0 / float(other), f"{_paren(self.name)} / {float(other):g}")


def as_objective(obj: Objective | Callable[[Context], torch.Tensor]) -> Objective:
    """An :class:`Objective` as is; a plain ``Context -> scalar`` function wrapped in one (it
    reads no layer, so the forward pass runs to the end)."""
    if isinstance(obj, Objective):
        return obj
    if callable(obj):
        return Objective(obj, getattr(obj, "__name__", "objective"), needs_output=True)
    raise TypeError(f"expected an Objective (e.g. netlens.optvis.objectives.channel(layer, c)), "
                    f"got {type(obj).__name__}")


# -- activation objectives -----------------------------------------------------------------
def channel(layer_name: str, c: int, *, batch: Batch = None) -> Objective:
    """Mean activation of channel ``c`` of a layer (Olah et al., "Feature Visualization", 2017)."""
    c = _index(c, "channel")

    def fn(ctx: Context) -> torch.Tensor:
        a = _rows(ctx[layer_name], batch)
        _check_channel(a, c, layer_name)
        return a[:, c].mean()

    return Objective(fn, f"channel({layer_name!r}, {c}{_bname(batch)})", layers=[layer_name])


def neuron(layer_name: str, c: int, y: int | None = None, x: int | None = None, *,
           batch: Batch = None) -> Objective:
    """Activation of channel ``c`` at one position ``(y, x)`` of the map (default: the centre).
    On a ``[B, D]`` layer the unit is ``c`` and there is no position."""
    c = _index(c, "channel")
    y = None if y is None else _index(y, "y")
    x = None if x is None else _index(x, "x")

    def fn(ctx: Context) -> torch.Tensor:
        a = _rows(ctx[layer_name], batch)
        _check_channel(a, c, layer_name)
        h, w = a.shape[2:]
        i, j = h // 2 if y is None else y, w // 2 if x is None else x
        if i >= h or j >= w:
            raise ValueError(f"neuron position (y={i}, x={j}) is outside layer {layer_name!r}'s "
                             f"{h}x{w} map for this image size; choose y < {h} and x < {w}")
        return a[:, c, i, j].mean()

    pos = "" if y is None and x is None else f", {y}, {x}"
    return Objective(fn, f"neuron({layer_name!r}, {c}{pos}{_bname(batch)})", layers=[layer_name])


def layer(layer_name: str, *, squared: bool = False, batch: Batch = None) -> Objective:
    """Mean activation of a whole layer; ``squared=True`` gives the mean of squares, the deep
    dream objective (Mordvintsev et al., "Inceptionism", 2015), which amplifies whatever the layer
    already sees, positive or negative."""

    def fn(ctx: Context) -> torch.Tensor:
        a = _rows(ctx[layer_name], batch)
        return (a * a).mean() if squared else a.mean()

    sq = ", squared=True" if squared else ""
    return Objective(fn, f"layer({layer_name!r}{sq}{_bname(batch)})", layers=[layer_name])


def class_logit(c: int, *, batch: Batch = None) -> Objective:
    """The model output (logit) of class ``c``: class visualization (Simonyan et al., 2014)."""
    c = _index(c, "class")

    def fn(ctx: Context) -> torch.Tensor:
        out = ctx.output
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise ValueError("class_logit needs a model whose output is a (B, classes) tensor")
        if c >= out.shape[1]:
            raise ValueError(f"class {c} is out of range: the model has {out.shape[1]} classes")
        return _rows(out, batch)[:, c].mean()

    return Objective(fn, f"class_logit({c}{_bname(batch)})", needs_output=True)


def direction(layer_name: str, vector: torch.Tensor, *, batch: Batch = None) -> Objective:
    """The activation projected on a direction of the layer's channel space, averaged over
    positions (a "neuron combination"; Olah et al., 2017). ``vector`` has one entry per channel."""
    if not isinstance(vector, torch.Tensor) or vector.dim() != 1:
        raise TypeError("direction needs a 1-D tensor with one entry per channel of the layer")
    v = vector.detach().clone()

    def fn(ctx: Context) -> torch.Tensor:
        a = _rows(ctx[layer_name], batch)
        if a.shape[1] != v.numel():
            raise ValueError(f"the direction has {v.numel()} entries but layer {layer_name!r} "
                             f"has {a.shape[1]} channels")
        return torch.einsum("bchw,c->bhw", a, v.to(a)).mean()

    return Objective(fn, f"direction({layer_name!r}, <{v.numel()}>{_bname(batch)})",
                     layers=[layer_name])


def diversity(layer_name: str) -> Objective:
    """How much the images of a batch differ in style: minus the mean cosine similarity between
    the channel covariance matrices (centred Gram matrices) of their activations at
    ``layer_name`` (after Olah et al., 2017, who use plain Gram matrices). Add it with a weight to
    a batch objective: ``channel(l, c) + w * diversity(l)``; 0 for one image.

    Centring makes the measure see texture rather than the overall activation level, which ReLU
    layers share (plain Gram matrices of ReLU outputs are all nearly parallel). An image whose
    activations are all zero counts as similar to every other, so blanking an image does not pay.
    """

    def fn(ctx: Context) -> torch.Tensor:
        a = ctx[layer_name]
        b = a.shape[0]
        if b < 2:
            return a.new_zeros(())
        f = a.flatten(2)
        f = f - f.mean(dim=2, keepdim=True)
        gram = (f @ f.transpose(1, 2)).flatten(1) / f.shape[2]
        sq = (gram * gram).sum(1)
        eps = 1e-4 * sq.detach().mean() + 1e-30  # a zero matrix is "similar", not "different"
        norms = sq.sqrt()
        sim = (gram @ gram.T + eps) / (norms[:, None] * norms[None, :] + eps)
        return -(sim.sum() - sim.diagonal().sum()) / (b * (b - 1))

    return Objective(fn, f"diversity({layer_name!r})", layers=[layer_name])


def match(layer_name: str, target: torch.Tensor) -> Objective:
    """Minus the squared distance between the layer's activation and ``target`` (same shape, as
    ``[B, C, h, w]``), relative to ``target``'s squared norm: feature inversion (Mahendran and
    Vedaldi, "Understanding Deep Image Representations by Inverting Them", 2015). 0 at a perfect
    match."""
    t = target.detach().clone()
    norm = float(t.pow(2).sum().clamp_min(1e-12))

    def fn(ctx: Context) -> torch.Tensor:
        a = ctx[layer_name]
        if a.shape != t.shape:
            raise ValueError(f"layer {layer_name!r} gives {tuple(a.shape)} for this image but the "
                             f"target features have shape {tuple(t.shape)}; use the same image "
                             "size and batch")
        return -(a - t.to(a)).pow(2).sum() / norm

    return Objective(fn, f"match({layer_name!r})", layers=[layer_name])


# -- image priors (subtract them) ----------------------------------------------------------
def total_variation(beta: float = 1.0) -> Objective:
    """Mean total variation ``((dx² + dy²) ** (beta / 2))`` of the image, a prior against high
    frequencies (Mahendran and Vedaldi, 2015). Subtract it; it is a per-pixel mean (about 0.1
    for a noisy image), so its weight should be comparable to the objective's scale (e.g. 0.1-1
    for a channel mean of a few units)."""
    beta = _positive(beta, "beta")

    def fn(ctx: Context) -> torch.Tensor:
        im = ctx.image
        dx = im[..., :-1, 1:] - im[..., :-1, :-1]
        dy = im[..., 1:, :-1] - im[..., :-1, :-1]
        return (dx * dx + dy * dy + 1e-8).pow(beta / 2).mean()

    return Objective(fn, f"total_variation({beta:g})")


def alpha_norm(alpha: float = 6.0, centre: float = 0.5) -> Objective:
    """Mean ``|image - centre| ** alpha``, which keeps pixel values in a natural range
    (Mahendran and Vedaldi, 2015). Subtract it with a small weight."""
    alpha = _positive(alpha, "alpha")
    return Objective(lambda ctx: (ctx.image - centre).abs().pow(alpha).mean(),
                     f"alpha_norm({alpha:g})")


def l1(centre: float = 0.5) -> Objective:
    """Mean ``|image - centre|``; subtract it to keep the image near grey."""
    return Objective(lambda ctx: (ctx.image - centre).abs().mean(), f"l1({centre:g})")


def l2(centre: float = 0.5) -> Objective:
    """Root mean square of ``image - centre``; subtract it to keep the image near grey."""
    return Objective(lambda ctx: (ctx.image - centre).pow(2).mean().add(1e-12).sqrt(),
                     f"l2({centre:g})")


# -- helpers -------------------------------------------------------------------------------
class _Fixed(nn.Module):
    """A parameterization that is the given image (for :meth:`Objective.evaluate`)."""

    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.image = image

    def forward(self) -> torch.Tensor:
        return self.image


def _check_image(x: object) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"an objective is evaluated on a Context or on float images "
                        f"(B, C, H, W) in [0, 1], got {kind}")
    if x.dim() != 4:
        raise ValueError(f"an objective is evaluated on images (B, C, H, W), got shape "
                         f"{tuple(x.shape)}; add the batch axis with x[None]")


def _scalar(value: object, obj: Objective) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise TypeError(f"the objective {obj!r} must return a scalar tensor")
    return value.reshape(())


def _is_scalar(v: object) -> TypeGuard[numbers.Real | torch.Tensor]:
    if isinstance(v, torch.Tensor):
        return v.dim() == 0 and not v.requires_grad
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check(other: object, sym: str) -> Objective:
    if not isinstance(other, Objective):
        raise TypeError(f"cannot combine an objective with {type(other).__name__} by {sym!r}; "
                        "use objectives and numbers")
    return other


def _paren(name: str) -> str:
    return f"({name})" if any(s in name for s in (" + ", " - ")) else name


def _index(v: object, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise ValueError(f"the {what} index must be an int >= 0, got {v!r}")
    return int(v)


def _positive(v: object, what: str) -> float:
    # cast: the stub of numbers.Real declares only < and <=; every Real compares like a float
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not cast(float, v) > 0:
        raise ValueError(f"{what} must be a number > 0, got {v!r}")
    return float(v)


def _check_channel(a: torch.Tensor, c: int, layer_name: str) -> None:
    if c >= a.shape[1]:
        raise ValueError(f"channel {c} is out of range: layer {layer_name!r} has {a.shape[1]} "
                         f"channels (0 to {a.shape[1] - 1})")


def _rows(a: torch.Tensor, batch: Batch) -> torch.Tensor:
    if batch is None:
        return a
    # int is a numbers.Integral at run time; naming it lets the type checker narrow `batch`
    items: list[object] = [batch] if isinstance(batch, (int, numbers.Integral)) else list(batch)
    if not items or any(isinstance(i, bool) or not isinstance(i, numbers.Integral)
                        for i in items):
        raise ValueError(f"batch must be an image index or a list of them, got {batch!r}")
    idx = cast("list[int]", items)  # every item is an Integral (checked above)
    if max(idx) >= a.shape[0] or min(idx) < -a.shape[0]:
        raise ValueError(f"batch={batch!r} is out of range for a batch of {a.shape[0]} images")
    return a[idx]


def _bname(batch: Batch) -> str:
    return "" if batch is None else f", batch={batch!r}"
