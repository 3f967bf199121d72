"""Occlusion: how much the target score drops when a window of the image is replaced.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014. A window
slides over the image (all channels at once); each pixel gets the mean drop
``f(x)[t] - f(x_occluded)[t]`` of the windows that cover it. Windows start at 0 and step by
``stride`` until the image is covered, the last one cut off at the border: exactly the windows
and the averaging of Captum's ``Occlusion`` with ``sliding_window_shapes=(C, h, w)``. The
occluded images are the same whatever ``batch_size``, and the target is fixed from the clean
images, so the result does not depend on the chunking (exact in float64; float32 round-off of
the model's kernels at different pass sizes, about 1e-6 relative).

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> occlusion(m, torch.rand(1, 3, 48, 64), window=16, stride=8).shape
    torch.Size([1, 1, 48, 64])
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, Union, overload

import torch
from torch import nn

from .._runtime import (
    auto_batch_size,
    bind_part,
    chunks,
    guarded,
    model_output,
    prepare,
    progress_bar,
    scores_of,
)
from .._util import NetlensWarning, user_stacklevel
from ..targets import Class, TargetLike, as_target

__all__ = ["occlusion", "default_window"]

Size2 = Union[int, tuple[int, int]]


def _pair(value: Size2, arg: str) -> tuple[int, int]:
    """An int or an (h, w) pair of positive ints, else a ValueError naming ``arg``."""
    pair = (value, value) if isinstance(value, int) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{arg} must be an int or a pair (h, w) of ints, got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{arg} must be positive, got {value!r}")
    return int(pair[0]), int(pair[1])


def _window_masks(size: int, window: int, stride: int, like: torch.Tensor) -> torch.Tensor:
    """(n, size) 0/1 masks of the windows along one axis: starts 0, stride, ..., the last one
    at or past ``size - window`` (then cut off), as Captum counts them."""
    count = math.ceil((size - window) / stride) + 1
    count = min(count, math.ceil(size / stride))  # with stride > window: no window past the end
    starts = torch.arange(count, device=like.device)[:, None] * stride
    pixels = torch.arange(size, device=like.device)[None, :]
    return ((pixels >= starts) & (pixels < starts + window)).to(like.dtype)


def default_window(height: int, width: int, window: Size2 | None = None,
                   stride: Size2 | None = None) -> tuple[Size2, Size2]:
    """Occlusion's window and stride for an image, where not given: the window a seventh of the
    shorter side (at least 2 pixels, at most the side), the stride half the window (at least 1).

    Example:
        >>> default_window(224, 224), default_window(28, 28), default_window(64, 64, 16)
        ((32, 16), (4, 2), (16, 8))
    """
    if window is None:
        window = min(max(2, min(height, width) // 7), height, width)
    if stride is None:
        wh, ww = _pair(window, "window")
        stride = max(1, min(wh, ww) // 2)
    return window, stride


OcclusionScore = Literal["drop", "probability"]


@overload
def occlusion(
    model: nn.Module, x: torch.Tensor, target: TargetLike = ..., *,
    window: Size2 | None = ..., stride: Size2 | None = ...,
    baseline: float | torch.Tensor = ..., score: OcclusionScore = ...,
    return_classes: Literal[False] = ..., batch_size: int | None = ...,
    progress: bool | None = ...,
) -> torch.Tensor: ...


@overload
def occlusion(
    model: nn.Module, x: torch.Tensor, target: TargetLike = ..., *,
    window: Size2 | None = ..., stride: Size2 | None = ...,
    baseline: float | torch.Tensor = ..., score: OcclusionScore = ...,
    return_classes: Literal[True], batch_size: int | None = ...,
    progress: bool | None = ...,
) -> tuple[torch.Tensor, torch.Tensor]: ...


def occlusion(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    window: Size2 | None = None, stride: Size2 | None = None,
    baseline: float | torch.Tensor = 0.0, score: OcclusionScore = "drop",
    return_classes: bool = False, batch_size: int | None = None, progress: bool | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The drop in the target score when each window is occluded, averaged per pixel.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64, any aspect ratio.
        target: class per image: int, sequence/tensor of B ints, None (the predicted class) or a
            callable ``output -> (B,)``.
        window: the occluding window, ``int`` or ``(h, w)``, at most the image size. None: a
            seventh of the image's shorter side, at least 2 pixels (32 on 224 px, 9 on 64,
            4 on 28-32); a window that covers the whole image warns (its map is constant).
        stride: the window's step, ``int`` or ``(h, w)``. None: half the window (at least 1).
            With ``stride > window`` some pixels are covered by no window; they get 0.
        baseline: what replaces the occluded pixels, in the model's input space: a float (0.0,
            the default, is black for raw [0, 1] pixels and the mean colour for inputs
            normalized with the dataset's mean; 0.5 is grey for raw pixels), or a tensor
            broadcastable to ``x`` (e.g.
            ``(1, C, 1, 1)`` channel means, or a blurred copy of ``x``).
        score: ``"drop"``: the drop of the target score (a logit for a class target);
            ``"probability"``: the target class's softmax probability *under* occlusion, not
            its drop (Netlens 1.x's occlusion heat map; class targets only): low where the
            window hides what the class needs.
        return_classes: also return the class the model predicts with each window occluded
            (Netlens 1.x's ``class_map``): ``(B, rows, cols)`` int64 over the window grid
            (window ``(i, j)`` starts at pixel ``(i * stride_h, j * stride_w)``); the model's
            output must be ``(B, classes)`` logits.
        batch_size: occluded images per forward pass (the ``B x windows`` passes are chunked);
            default from the memory budget. The result does not depend on it.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B, 1, H, W)``, ``x``'s dtype and device: per pixel, the mean of
        ``f(x)[t] - f(x with the window replaced by baseline)[t]`` (with
        ``score="probability"``: of ``softmax(f(x_occluded))[t]``) over the windows covering
        it; with ``return_classes=True`` also the ``(B, rows, cols)`` predicted classes.

    Raises:
        ValueError: a non-positive or malformed ``window``/``stride``, a window larger than the
            image, a baseline that does not broadcast to ``x``, a bad input or target, an
            unknown ``score``, ``score="probability"`` with a target that is not a class, or
            ``return_classes`` on a model whose output is not ``(B, classes)``.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> occlusion(lin, torch.rand(1, 1, 4, 4), 0, window=2, stride=2).shape
        torch.Size([1, 1, 4, 4])
    """
    fm, x = prepare(model, x)
    if score not in ("drop", "probability"):
        raise ValueError(f"score must be 'drop' or 'probability', got {score!r}")
    batch, _, height, width = x.shape
    window, stride = default_window(height, width, window, stride)
    (wh, ww), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    if wh > height or ww > width:
        raise ValueError(f"window {(wh, ww)} is larger than the image ({height}, {width}); "
                         "choose a smaller window")
    if wh == height and ww == width:
        warnings.warn(f"the occlusion window {(wh, ww)} covers the whole {height}x{width} "
                      "image, so every pixel gets the same value; choose a smaller window",
                      NetlensWarning, stacklevel=user_stacklevel())
    try:
        base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    except RuntimeError as e:
        raise ValueError(f"baseline of shape {tuple(torch.as_tensor(baseline).shape)} does not "
                         f"broadcast to the input's shape {tuple(x.shape)}") from e
    fm.ensure_traced(x)
    if batch_size is None:
        batch_size = auto_batch_size(fm, x, backward=False)
    rows, cols = _window_masks(height, wh, sh, x), _window_masks(width, ww, sw, x)
    windows = rows.shape[0] * cols.shape[0]
    total = batch * windows
    t = as_target(target, batch)
    with guarded(fm), torch.no_grad(), progress_bar(total, progress, "occlusion") as bar:
        bound, refs = [], []
        for part in chunks(batch, batch_size):
            out = model_output(fm, x[part], t)
            bound.append(bind_part(t, part, out))
            refs.append(scores_of(bound[-1], out))
        t, reference = type(bound[0]).cat(bound), torch.cat(refs)
        if score == "probability" and not isinstance(t, Class):
            raise ValueError(f"score='probability' reads the softmax of class logits; the "
                             f"target is {type(t).__name__}, use score='drop'")
        drops = x.new_empty((total, *reference.shape[1:]))
        classes = torch.empty(total, dtype=torch.int64, device=x.device)
        for part in chunks(total, batch_size):
            index = torch.arange(part.start, part.stop, device=x.device)
            image, win = index // windows, index % windows
            mask = (rows[win // cols.shape[0], :, None] * cols[win % cols.shape[0], None, :])
            mask = mask[:, None].bool()  # (n, 1, H, W): all channels at once
            occluded = torch.where(mask, base[image], x[image])
            ti = t.take(image)
            out = model_output(fm, occluded, ti)
            if return_classes:
                classes[part] = _predicted(out)
            if score == "probability":
                drops[part] = scores_of(ti, out.softmax(-1))
            else:
                drops[part] = reference[image] - scores_of(ti, out)
            bar.update(part.stop - part.start)
    # Each pixel: the sum of the drops of the windows covering it over their number.
    if t.k is None:
        drops = drops.view(batch, rows.shape[0], cols.shape[0])
        summed = torch.einsum("bij,ih,jw->bhw", drops, rows, cols)
    else:
        drops = drops.view(batch, rows.shape[0], cols.shape[0], t.k)
        summed = torch.einsum("bijk,ih,jw->bkhw", drops, rows, cols)
    count = torch.einsum("ih,jw->hw", rows, cols)
    covered = count > 0
    attr = torch.where(covered, summed / torch.where(covered, count, torch.ones_like(count)), 0.0)
    attr = attr[:, None] if t.k is None else attr[:, :, None]
    if return_classes:
        return attr, classes.view(batch, rows.shape[0], cols.shape[0])
    return attr


def _predicted(out: object) -> torch.Tensor:
    """The argmax class of ``(B, classes)`` logits, else a ValueError."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"return_classes=True needs (B, classes) logits; the model returned "
                         f"{shape}")
    return out.argmax(-1)
