"""``NetDreamer``: images generated from a model, all on :class:`~netlens.optvis.OptVis`.

- :meth:`NetDreamer.channel_visualization` and :meth:`NetDreamer.class_visualization`: what a
  channel or a class responds to most, from a random 1/f image (Olah et al., 2017).
- :meth:`NetDreamer.deep_dream`: amplify what a layer (or one channel) sees in a user's image,
  over several octaves (Mordvintsev et al., "Inceptionism", 2015).
- :meth:`NetDreamer.inverted_image`: an image whose features at a layer match a given image's,
  with total-variation and alpha-norm priors (Mahendran and Vedaldi, 2015).

Images go in and come out as ``(B, 3, H, W)`` tensors in ``[0, 1]``, *not* normalized: the
model's normalization (:func:`~netlens.optvis.render.model_normalization`) is applied inside.
An image must have the model's channel count (a grayscale image for a colour model is refused,
with the fix), and every method needs gradients, so none runs under ``torch.inference_mode()``.

Example:
    >>> import torchvision
    >>> dreamer = NetDreamer(torchvision.models.resnet18().eval())
    >>> g = torch.Generator().manual_seed(0)
    >>> dreamer.deep_dream(torch.rand(1, 3, 64, 80), "layer2", steps=2, octaves=2,
    ...                    generator=g, progress=False).shape
    torch.Size([1, 3, 64, 80])
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._runtime import check_count as _check_int
from ._runtime import check_unit_image
from ._util import NetlensWarning, user_stacklevel
from .adapter import LayoutLike, as_layout
from .flat_model import FlatModel, UnknownLayerError, input_channels
from .optvis import objectives as obj
from .optvis.param import ImageParam, RawParam
from .optvis.render import (
    OptVis,
    check_channels,
    check_grad_mode,
    model_device,
    model_normalization,
    normalize_input,
)
from .optvis.transforms import jitter

__all__ = ["NetDreamer"]


class _NormalizedAscent(torch.optim.Optimizer):
    """The deep dream step: ``p -= lr * grad / mean(|grad|)`` per image, which makes the step
    size independent of the layer's scale (Mordvintsev et al., 2015)."""

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                scale = g.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
                p.sub_(group["lr"] * g / scale)
                p.clamp_(0, 1)
        return loss


class NetDreamer:
    """Deep dream, feature inversion, channel and class visualization for one model.

    Args:
        model: any ``nn.Module`` (in eval mode) or :class:`~netlens.FlatModel`; never changed.
        mean: the model's input normalization (default: what
            :func:`~netlens.optvis.render.model_normalization` finds).
        std: the standard deviation of that normalization, as ``mean``.
    """

    def __init__(self, model: nn.Module, *, mean: Any = None, std: Any = None) -> None:
        self.fm = model if isinstance(model, FlatModel) else FlatModel(model)
        self._stats = {"mean": mean, "std": std}

    def _optvis(self, objective: obj.Objective, param: nn.Module, **options: Any) -> OptVis:
        return OptVis(self.fm, objective, param, **self._stats, **options)

    def _start(self, size: int | tuple[int, int], batch: int,
               generator: torch.Generator) -> ImageParam:
        """The 1/f start image of the visualizations, with the model's channels."""
        c = input_channels(self.fm.model) or 3
        return ImageParam(size, batch=batch, channels=c, decorrelate=c == 3, generator=generator,
                          device=model_device(self.fm.model))

    def _image(self, image: object) -> torch.Tensor:
        x = check_unit_image(image, batch=False)
        check_channels(int(x.shape[1]), self.fm.model, "the image")
        return x

    def channel_visualization(
        self, layer: str, channel: int, *, size: int | tuple[int, int] = 128, steps: int = 256,
        batch: int = 1, lr: float = 0.05, transforms: Any = None, progress: bool | None = None,
        generator: torch.Generator | None = None, layout: LayoutLike | None = None,
    ) -> torch.Tensor:
        """The image that most excites ``channel`` of ``layer``: ``(batch, 3, H, W)`` in [0, 1].

        ``layout``: how to view the layer's output as a map where netlens reads it wrong (see
        :func:`netlens.layouts`); the other methods that take a layer take it too."""
        check_grad_mode("channel_visualization")
        g = _generator(generator, self.fm)
        param = self._start(size, batch, g)
        vis = self._optvis(obj.channel(layer, channel), param, transforms=transforms, lr=lr,
                           generator=g, layouts=_given(layer, layout))
        return vis.vis((steps,), progress=progress)[-1]

    def class_visualization(
        self, c: int, *, size: int | tuple[int, int] = 128, steps: int = 256, batch: int = 1,
        lr: float = 0.05, transforms: Any = None, progress: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The image that most raises the logit of class ``c``: ``(batch, 3, H, W)`` in [0, 1]."""
        check_grad_mode("class_visualization")
        g = _generator(generator, self.fm)
        param = self._start(size, batch, g)
        vis = self._optvis(obj.class_logit(c), param, transforms=transforms, lr=lr, generator=g)
        return vis.vis((steps,), progress=progress)[-1]

    def deep_dream(
        self, image: torch.Tensor, layer: str, channel: int | None = None, *, octaves: int = 4,
        octave_scale: float = 1.4, steps: int = 10, lr: float = 0.01, jitter_px: int = 8,
        progress: bool | None = None, generator: torch.Generator | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor:
        """Deep dream: amplify what ``layer`` (or one ``channel`` of it) sees in ``image``.

        From the smallest octave (the image scaled by ``1 / octave_scale ** (octaves - 1)``) to
        the full size, ``steps`` normalized gradient-ascent steps with random jitter raise the
        mean square of the layer's activation (the mean of the channel with ``channel=``); the
        detail added at one octave is carried, upsampled, to the next.

        Args:
            image: ``(B, 3, H, W)`` in ``[0, 1]``, any size.
            layer: a :class:`~netlens.FlatModel` layer name.
            channel: one channel of the layer, or None for the whole layer.
            octaves: number of scales (1: the full size only).
            octave_scale: size ratio between consecutive octaves (> 1).
            steps: gradient steps per octave (0 returns the image unchanged).
            lr: step size, in units of the mean absolute gradient (pixels move by about ``lr``).
            jitter_px: random translation before each step (0 for none).

        Returns:
            ``(B, 3, H, W)`` in ``[0, 1]``, with ``image``'s dtype and device. A Ctrl-C
            (``KeyboardInterrupt``) stops the whole run, as it stops :meth:`OptVis.vis
            <netlens.optvis.OptVis.vis>`: no further step or octave runs, and the dream so far
            (the detail of the octaves done, at the full size) is returned with a warning.

        Raises:
            ValueError: an image without the model's channel count (repeat a grayscale one with
                ``x.expand(-1, 3, -1, -1)``), out of [0, 1], or a bad option.
            RuntimeError: under ``torch.inference_mode()``.
        """
        check_grad_mode("deep_dream")
        x = self._image(image)
        _check_int(octaves, "octaves", 1)
        _check_int(steps, "steps", 0)
        if not isinstance(octave_scale, numbers.Real) or not octave_scale > 1:
            raise ValueError(f"octave_scale must be a number > 1, got {octave_scale!r}")
        objective = obj.layer(layer, squared=True) if channel is None else obj.channel(layer,
                                                                                      channel)
        if steps == 0:
            return x.clone()
        g = _generator(generator, self.fm)
        h, w = x.shape[-2:]
        sizes = [(max(8, round(h / octave_scale ** k)), max(8, round(w / octave_scale ** k)))
                 for k in reversed(range(octaves))]
        detail = torch.zeros_like(_resize(x, sizes[0]))
        out = x
        transforms = [jitter(jitter_px)] if jitter_px > 0 else []
        for i, size in enumerate(sizes):
            base = _resize(x, size)
            start = (base + _resize(detail, size)).clamp(0, 1)
            param = RawParam(start)
            try:
                vis = self._optvis(objective, param, transforms=transforms, generator=g,
                                   optimizer=lambda p: _NormalizedAscent(p, lr), lr=lr,
                                   layouts=_given(layer, layout))
                vis._warn_interrupt = False  # one warning below, for the whole run
                out = vis.vis((steps,), progress=progress)[-1]
                interrupted = vis.interrupted
            except KeyboardInterrupt:  # before the octave's first step (finding the layers)
                out, interrupted = start, True
            except UnknownLayerError:
                raise
            except (RuntimeError, AssertionError, ValueError) as error:
                if tuple(size) == (h, w):
                    raise
                # timm's ViTs assert their input size; LeViT's attention biases fix it too
                raise ValueError(
                    f"the model failed on the {size[0]}x{size[1]} image of octave {i + 1} of "
                    f"{len(sizes)} (the image is {h}x{w}; each octave is {octave_scale}x "
                    f"smaller than the next): it seems to take only one input size. Pass "
                    f"octaves=1 (with an image of the size it takes); the model said: "
                    f"{type(error).__name__}: {error}") from error
            detail = out - base
            if interrupted:
                warnings.warn(f"interrupted at octave {i + 1} of {len(sizes)}: returning the dream "
                              "so far", NetlensWarning, stacklevel=user_stacklevel())
                out = (x + _resize(detail, (h, w))).clamp(0, 1) if i < len(sizes) - 1 else out
                break
        return out.to(x.dtype)

    def inverted_image(
        self, image: torch.Tensor, layer: str, *, steps: int = 256, lr: float = 0.05,
        tv_weight: float = 0.5, alpha_weight: float = 0.05, transforms: Any = (),
        progress: bool | None = None, generator: torch.Generator | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor:
        """An image whose features at ``layer`` match ``image``'s, from a random start, with
        total-variation and alpha-norm priors (Mahendran and Vedaldi, 2015).

        Returns:
            ``(B, 3, H, W)`` in ``[0, 1]``, the size of ``image``.

        Raises:
            ValueError: an image without the model's channel count, or out of [0, 1].
            RuntimeError: under ``torch.inference_mode()``.
        """
        check_grad_mode("inverted_image")
        x = self._image(image)
        g = _generator(generator, self.fm)
        target = self.features(x, layer, layout=layout)
        param = ImageParam((x.shape[-2], x.shape[-1]), batch=x.shape[0], generator=g,
                           device=x.device, dtype=x.dtype)
        objective = (obj.match(layer, target) - tv_weight * obj.total_variation()
                     - alpha_weight * obj.alpha_norm())
        vis = self._optvis(objective, param, transforms=transforms, lr=lr, generator=g,
                           layouts=_given(layer, layout))
        return vis.vis((steps,), progress=progress)[-1]

    def features(self, image: torch.Tensor, layer: str, *,
                 layout: LayoutLike | None = None) -> torch.Tensor:
        """The layer's output for ``image`` (in [0, 1]) as a detached ``[B, C, h, w]`` map."""
        x = self._image(image)
        name = self.fm.resolve_layer(layer)
        mean, std = model_normalization(self.fm)
        mean = mean if self._stats["mean"] is None else self._stats["mean"]
        std = std if self._stats["std"] is None else self._stats["std"]
        x_in = normalize_input(x, mean, std)
        self.fm.ensure_traced(x_in)  # the layers at this size (before the recording's hooks)
        with torch.no_grad(), self.fm.record(name) as rec:
            self.fm(x_in, until=name)
        view = as_layout(layout) if layout is not None else self.fm.layout(name)
        return view.to_map(rec.activations[name], (x.shape[-2], x.shape[-1]))


def _given(layer: str, layout: LayoutLike | None) -> dict[str, LayoutLike] | None:
    return None if layout is None else {layer: layout}


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=size[0] < x.shape[-2])


def _generator(generator: torch.Generator | None, fm: FlatModel) -> torch.Generator:
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    return generator

