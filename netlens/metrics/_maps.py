"""What every metric shares: turning attributions into maps, checking them against the input and
the masks, rank statistics, SSIM, the reference maps and resolving a method by name.

An attribution is ``(B, C, H, W)`` (an input attribution) or ``(B, 1, H, W)`` (a CAM, occlusion);
a metric reads it as one *map* per image, ``(B, 1, H, W)``, through ``reduce``:

- ``"auto"``: ``|attr|`` summed over channels when ``C > 1``, the map as it is when ``C == 1``;
- ``"abs_sum"``: ``|attr|`` summed over channels (also for one channel: its absolute value);
- ``"sum"``: the signed sum over channels.

``"auto"`` cannot tell a grayscale input attribution (one channel, signed) from a CAM: pass
``reduce="abs_sum"`` for those.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._runtime import bind, guarded, user_stacklevel
from .._util import NetlensWarning
from ..attribution import METHODS, MethodSpec
from ..flat_model import FlatModel
from ..targets import Class, Target, TargetLike, flat_scores

__all__ = [
    "Reduce", "saliency_map", "check_attr", "check_masks", "boxes_to_masks", "ranks",
    "spearman", "ssim", "random_map", "centre_map", "REFERENCE_MAPS", "resolve_method",
    "method_reduce", "model_for", "Method", "bind_single", "target_score", "method_target",
]

Reduce = Literal["auto", "abs_sum", "sum"]
Method = Union[str, Callable[..., torch.Tensor]]


def check_attr(attr: object, x: torch.Tensor | None = None, *, name: str = "attr") -> torch.Tensor:
    """Checks that ``attr`` is a finite float ``(B, C, H, W)`` tensor that fits ``x``.

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: wrong rank, NaN, or a batch, size or channel count that does not match ``x``.
    """
    if not isinstance(attr, torch.Tensor) or not attr.is_floating_point():
        got = attr.dtype if isinstance(attr, torch.Tensor) else type(attr).__name__
        raise TypeError(f"{name} must be a floating-point tensor (B, C, H, W), got {got}")
    if attr.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W) or (B, 1, H, W), got "
                         f"{tuple(attr.shape)}; add the missing dimensions with unsqueeze")
    if not bool(torch.isfinite(attr).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if x is not None:
        b, c, h, w = x.shape
        if attr.shape[0] != b or attr.shape[2:] != x.shape[2:] or attr.shape[1] not in (1, c):
            raise ValueError(
                f"{name} of shape {tuple(attr.shape)} does not match the input of shape "
                f"{tuple(x.shape)}: expected ({b}, {c} or 1, {h}, {w}); compute CAMs with "
                "interpolate=True, or upsample the map to the input size")
    return attr


def saliency_map(attr: torch.Tensor, reduce: Reduce = "auto") -> torch.Tensor:
    """One map per image, ``(B, 1, H, W)``, from an attribution (see the module docstring).

    Example:
        >>> saliency_map(torch.tensor([[[[1.0]], [[-2.0]]]])).item()
        3.0
    """
    check_attr(attr)
    if reduce == "auto":
        reduce = "abs_sum" if attr.shape[1] > 1 else "sum"
    if reduce == "abs_sum":
        return attr.detach().abs().sum(1, keepdim=True)
    if reduce == "sum":
        return attr.detach().sum(1, keepdim=True)
    raise ValueError(f"reduce must be 'auto', 'abs_sum' or 'sum', got {reduce!r}")


def check_masks(masks: object, attr: torch.Tensor) -> torch.Tensor:
    """The ground-truth masks as a bool ``(B, 1, H, W)`` tensor on ``attr``'s device.

    Accepts ``(B, 1, H, W)`` or ``(B, H, W)``, bool or 0/1 numbers.

    Raises:
        ValueError: a shape that does not match ``attr``, values other than 0/1, or an empty
            mask (where the object is, is then unknown).
    """
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a tensor (B, 1, H, W) of bools, got "
                        f"{type(masks).__name__}; turn boxes into masks with boxes_to_masks")
    if masks.dim() == 3:
        masks = masks[:, None]
    b, _, h, w = attr.shape
    if masks.shape != (b, 1, h, w):
        raise ValueError(f"masks of shape {tuple(masks.shape)} do not match the attribution "
                         f"{tuple(attr.shape)}: expected ({b}, 1, {h}, {w}) or ({b}, {h}, {w})")
    if masks.dtype != torch.bool:
        if not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError("masks must be bool or 0/1 values; threshold soft masks first")
        masks = masks != 0
    empty = (~masks.flatten(1).any(1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"the masks of images {empty[:10]} are empty; localization needs at "
                         "least one object pixel per image (drop those images)")
    return masks.to(attr.device)


def boxes_to_masks(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bounding boxes ``(B, 4)`` as ``(x0, y0, x1, y1)`` pixel corners (``x1``, ``y1``
    exclusive) to bool masks ``(B, 1, H, W)``.

    Example:
        >>> boxes_to_masks(torch.tensor([[1, 0, 3, 2]]), (2, 4)).int()[0, 0].tolist()
        [[0, 1, 1, 0], [0, 1, 1, 0]]
    """
    boxes = torch.as_tensor(boxes)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (B, 4) as (x0, y0, x1, y1), got "
                         f"{tuple(boxes.shape)}")
    h, w = size
    ys = torch.arange(h, device=boxes.device).view(1, h, 1)
    xs = torch.arange(w, device=boxes.device).view(1, 1, w)
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return ((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1))[:, None]


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks along dim 1 of a ``(B, N)`` tensor, ties given their average rank (float64)."""
    b, n = values.shape
    s, order = values.sort(dim=1, stable=True)
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    group = (new.cumsum(1) - 1) + torch.arange(b, device=values.device)[:, None] * n
    pos = torch.arange(n, dtype=torch.float64, device=values.device).expand(b, n).flatten()
    first = torch.full((b * n,), math.inf, dtype=torch.float64, device=values.device)
    first = first.scatter_reduce(0, group.flatten(), pos, "amin")
    last = torch.full_like(first, -math.inf).scatter_reduce(0, group.flatten(), pos, "amax")
    mean_rank = ((first + last) / 2)[group]
    return torch.empty_like(mean_rank).scatter_(1, order, mean_rank)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per image of two ``(B, ...)`` maps, ``(B,)`` float64.

    Ties get average ranks (a CAM's zeros do not count as agreement). Where a map is constant
    the correlation is undefined: 1.0 if both maps are equal, else 0.0.
    """
    fa, fb = a.detach().flatten(1), b.detach().flatten(1)
    ra, rb = ranks(fa), ranks(fb)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = ra.norm(dim=1) * rb.norm(dim=1)
    corr = (ra * rb).sum(1) / torch.where(den > 0, den, torch.ones_like(den))
    same = (fa == fb).all(1).to(corr.dtype)
    return torch.where(den > 0, corr, same)


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    t = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity per image of two ``(B, 1, H, W)`` maps (Wang et al. 2004),
    with a Gaussian window and no padding, ``(B,)``. Scale the maps to ``[0, data_range]``
    first (:func:`normalized`); maps smaller than the window use a window of their size."""
    a, b = a.detach().double(), b.detach().double()
    size = min(window, a.shape[-1], a.shape[-2])
    size -= 1 - size % 2  # odd
    g = _gaussian_window(size, sigma, a)

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, g.view(1, 1, -1, 1))
        return F.conv2d(t, g.view(1, 1, 1, -1))

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1)
                                                     * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def normalized(m: torch.Tensor) -> torch.Tensor:
    """Each map min-max scaled to ``[0, 1]`` (a constant map becomes zeros)."""
    flat = m.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = hi - lo
    return ((flat - lo) / torch.where(span > 0, span, torch.ones_like(span))).view_as(m)


# -- reference maps: what an explanation must beat ------------------------------------------

def random_map(model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform random map ``(B, 1, H, W)``: the chance level of every metric (the model and
    the target are ignored)."""
    gen = generator
    if gen is None:
        gen = torch.Generator(device=x.device)
        gen.seed()
    return torch.rand((x.shape[0], 1, *x.shape[2:]), generator=gen, dtype=x.dtype,
                      device=gen.device).to(x.device)


def centre_map(model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
               sigma: float = 0.25) -> torch.Tensor:
    """A Gaussian bump at the image centre, ``(B, 1, H, W)``, std ``sigma`` times each side:
    the 'objects are near the middle' prior that an explanation must beat."""
    h, w = x.shape[2:]
    ys = (torch.arange(h, dtype=x.dtype, device=x.device) - (h - 1) / 2) / (sigma * h)
    xs = (torch.arange(w, dtype=x.dtype, device=x.device) - (w - 1) / 2) / (sigma * w)
    bump = torch.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))
    return bump.expand(x.shape[0], 1, h, w).clone()


REFERENCE_MAPS: dict[str, Callable[..., torch.Tensor]] = {"random": random_map,
                                                          "centre": centre_map}


def bind_single(fm: FlatModel, x: torch.Tensor, target: TargetLike, batch_size: int,
                score: str = "logit") -> Target:
    """The metric's target bound to the clean images: one target per image (a metric scores one
    explanation per image; loop over several targets), checked to fit ``score``."""
    t = bind(fm, x, target, batch_size)
    if t.k is not None:
        raise ValueError(f"a metric scores one target per image, got {type(t).__name__} with "
                         f"{t.k} per image; evaluate each target separately (e.g. "
                         "for t in TopK(k).bind(out).targets)")
    if score == "accuracy" and not isinstance(t, Class):
        raise ValueError(f"score='accuracy' needs a class target, got {type(t).__name__}; use "
                         "score='logit' (the target's own score)")
    if score == "softmax" and not isinstance(t, Class):
        warnings.warn(f"a {type(t).__name__} target has no class probability, so the metric "
                      "follows the target's own score instead of a softmax", NetlensWarning,
                      stacklevel=user_stacklevel())
    return t


def method_target(target: Target) -> Any:
    """What a metric passes to the explanation methods: the class indices of a class target
    (the form every method, a user's included, has always taken), else the bound target."""
    return target.classes if isinstance(target, Class) else target


def target_score(target: Target, output: Any, score: str) -> torch.Tensor:
    """``(B,)`` scores of a bound target: ``"logit"`` its own score; for class targets
    ``"softmax"`` the class probability and ``"accuracy"`` 1.0 where the class is the arg-max
    (other targets: their own score)."""
    if not isinstance(target, Class) or score == "logit":
        return target(output)
    assert target.classes is not None
    out = flat_scores(output)
    classes = target.classes.to(out.device)
    if classes.numel() == 1 and out.shape[0] > 1:
        classes = classes.expand(out.shape[0])
    if score == "softmax":
        return out.softmax(-1).gather(1, classes[:, None])[:, 0]
    return (out.argmax(-1) == classes).to(out.dtype)


def resolve_method(method: Method) -> tuple[str, Callable[..., torch.Tensor]]:
    """``(name, function)`` for a method name of ``METHODS`` or :data:`REFERENCE_MAPS`, or a
    callable ``f(model, x, target, **options)``."""
    if callable(method):
        return getattr(method, "__name__", type(method).__name__), method
    if isinstance(method, str):
        if method in METHODS:
            return method, METHODS[method]
        if method in REFERENCE_MAPS:
            return method, REFERENCE_MAPS[method]
    known = ", ".join([*METHODS, *REFERENCE_MAPS])
    raise ValueError(f"unknown attribution method {method!r}; choose one of {known}, or pass a "
                     "function f(model, x, target, **options)")


def model_for(fn: Callable[..., torch.Tensor], fm: nn.Module, model: nn.Module) -> nn.Module:
    """The flat model for netlens's own methods (traced once), the caller's model for theirs."""
    builtin = any(fn is f for f in (*METHODS.values(), *REFERENCE_MAPS.values()))
    return fm if builtin else model


def method_reduce(name: str) -> Reduce:
    """How :func:`~netlens.metrics.compare` reads a method's result: maps (CAMs, occlusion, the
    reference maps) as signed maps, input attributions as ``|attr|`` summed over channels (the
    method's ``output`` kind in the registry)."""
    if name in REFERENCE_MAPS or (name in METHODS and METHODS[name].output == "map"):
        return "sum"
    return "abs_sum"


def call_method(fn: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor,
                target: Any, options: dict[str, Any], generator: torch.Generator | None,
                progress: bool | None) -> torch.Tensor:
    """Runs a method, giving it ``generator`` and ``progress`` when it takes them and the
    caller did not set them; a user's function runs under :func:`~netlens._runtime.guarded`
    too (eval mode, the model left as it was), as netlens's own methods do."""
    options = dict(options)
    try:
        params = fn.parameters if isinstance(fn, MethodSpec) else inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "generator" in params and generator is not None:
        options.setdefault("generator", generator)
    if "progress" in params and progress is False:
        options.setdefault("progress", False)
    with guarded(model):
        return fn(model, x, target, **options)
