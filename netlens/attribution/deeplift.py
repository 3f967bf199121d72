"""DeepLift (the rescale rule) and DeepLiftShap: multipliers of the difference from a baseline.

Shrikumar et al., "Learning Important Features Through Propagating Activation Differences",
ICML 2017; DeepLiftShap is Lundberg & Lee's mean over a distribution of baselines ("A Unified
Approach to Interpreting Model Predictions", NeurIPS 2017), as Captum's ``DeepLiftShap``.

Each image is explained against its baseline in two passes over the same calls: the baseline's
forward pass (no gradients) records the input of every call that has a rule, then the image's
pass replaces each such call's output by a tensor of the same value whose backward pass carries
the DeepLift multiplier (``y.detach() + m * (z - z.detach())``: exactly the output forward,
``m`` backward). The rules, applied through :func:`netlens.rules.applied` to every call the
adapter sees:

* **Elementwise nonlinearities** (every ReLU-family call: modules, in place, reused,
  functional ``F.relu``; and the modules Sigmoid, Tanh, SiLU, GELU, Hardswish, Hardsigmoid,
  ELU, CELU, SELU, LeakyReLU, PReLU, Softplus, Mish, Softsign, Hardtanh): the rescale rule
  ``m = (f(z) - f(z0)) / (z - z0)``, and per element the gradient ``f'(z)`` where
  ``|z - z0|`` is below round-off.
* **Max pooling** (``nn.MaxPool2d``, ``nn.AdaptiveMaxPool2d``): each output's difference
  ``Δo = o - o0`` goes to one input of its window, the image's argmax when ``Δo >= 0`` and the
  baseline's otherwise (Captum's rule), with multiplier ``Δo / Δz`` in ``[0, 1]``;
  overlapping windows add their multipliers (the backward of a gather is a scatter-add).
* **Squeeze-and-excitation** (torchvision's ``SqueezeExcitation``, MobileNet v3, EfficientNet,
  RegNet Y): the product ``s * u`` by the exact two-point rule
  ``Δ(s u) = (s + s0)/2 Δu + (u + u0)/2 Δs``.

With these, ``Σ attributions = f(x) - f(baseline)`` (summation-to-delta) holds to round-off on
networks built of linear layers (convolutions, BatchNorm in eval mode, pooling by averages,
additions, concatenations) and those calls. Other nonlinear operations pass the plain gradient
(Captum's behaviour) and the gap shows in ``return_delta``; a model with a known such module
(LayerNorm, attention, softmax modules, ...) gets a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import nn

from .. import rules
from .._runtime import (
    NetlensWarning,
    auto_batch_size,
    bind,
    bind_part,
    chunks,
    grad,
    guarded,
    model_output,
    prepare,
    scores_of,
    user_stacklevel,
    with_k,
)
from ..adapter import Call, first_tensor
from ..flat_model import FlatModel
from ..hooks import HookDict
from ..targets import Target, TargetLike, as_target
from .gradients import baseline_image

__all__ = ["deeplift", "deeplift_shap"]

Fn = Callable[[torch.Tensor], torch.Tensor]


def _elementwise(module: nn.Module) -> Fn | None:
    """The function an elementwise activation module computes (written without ReLU-family
    calls, which the call tracer would count), or None."""
    m: Any = module
    table: dict[type, Callable[[], Fn]] = {
        nn.ReLU: lambda: lambda z: z.clamp(min=0),
        nn.ReLU6: lambda: lambda z: z.clamp(0, 6),
        nn.Hardtanh: lambda: lambda z: z.clamp(m.min_val, m.max_val),
        nn.Sigmoid: lambda: torch.sigmoid,
        nn.Tanh: lambda: torch.tanh,
        nn.SiLU: lambda: F.silu,
        nn.GELU: lambda: lambda z: F.gelu(z, approximate=m.approximate),
        nn.Hardswish: lambda: F.hardswish,
        nn.Hardsigmoid: lambda: F.hardsigmoid,
        nn.ELU: lambda: lambda z: F.elu(z, m.alpha),
        nn.CELU: lambda: lambda z: F.celu(z, m.alpha),
        nn.SELU: lambda: F.selu,
        nn.LeakyReLU: lambda: lambda z: F.leaky_relu(z, m.negative_slope),
        nn.PReLU: lambda: lambda z: F.prelu(z, m.weight.detach()),
        nn.Softplus: lambda: lambda z: F.softplus(z, m.beta, m.threshold),
        nn.Mish: lambda: F.mish,
        nn.Softsign: lambda: F.softsign,
    }
    make = table.get(type(module))
    return None if make is None else make()


# Nonlinear modules without a rule: summation-to-delta does not hold through them.
_UNRULED = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.MultiheadAttention,
            nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.MaxPool1d, nn.MaxPool3d,
            nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool3d, nn.InstanceNorm1d, nn.InstanceNorm2d,
            nn.InstanceNorm3d)


def _is_se(module: nn.Module | None) -> bool:
    """torchvision's squeeze-and-excitation block: ``scale_activation(...)(u) * u``."""
    gate = getattr(module, "scale_activation", None)
    return (type(module).__name__ == "SqueezeExcitation" and isinstance(gate, nn.Module)
            and _elementwise(gate) is not None)


def _small(dz: torch.Tensor, z: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """Where ``|z - z0|`` is too small to divide by: Captum's 1e-10, or round-off of the
    operands in lower precision."""
    tol = 64 * torch.finfo(dz.dtype).eps
    return dz.abs() <= 1e-10 + tol * (z.abs() + z0.abs())


def _derivative(f: Fn, z: torch.Tensor) -> torch.Tensor:
    """``f'(z)`` elementwise, by autograd on a detached copy."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        d, = torch.autograd.grad(f(zz).sum(), zz)
    return d


def _linear(value: torch.Tensor, slope: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``value`` forward (exactly), ``slope * dz`` backward."""
    return value.detach() + slope * (z - z.detach())


class _DeepLiftRules(rules.Rule):
    """The DeepLift rules of one call: records the baseline's inputs in the ``"record"`` phase,
    replaces the image's outputs in the ``"apply"`` phase."""

    inputs = "copy"  # the input of an in-place ReLU, before the call overwrote it

    def __init__(self, kinds: dict[str, tuple[str, Any]], scales: frozenset[str]) -> None:
        self.kinds, self.scales_wanted = kinds, scales
        self.phase: Literal["off", "record", "apply"] = "off"
        self.ref: dict[str, torch.Tensor] = {}
        self.scales: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def reset(self, phase: Literal["off", "record", "apply"]) -> None:
        self.phase = phase
        if phase != "apply":
            self.ref.clear()
            self.scales.clear()

    def apply(self, call: Call, hooks: HookDict) -> Any:
        z = call.inputs[0] if call.inputs else None
        y = first_tensor(call.output)
        if self.phase == "off" or not isinstance(z, torch.Tensor) or y is None:
            return None
        if self.phase == "record":
            self.ref[call.name] = z.detach()
            return None
        if call.name not in self.ref:
            raise RuntimeError(f"DeepLift: the call {call.name!r} ran for the image but not for "
                               "its baseline; the model's control flow must not depend on the "
                               "input values")
        z0 = self.ref.pop(call.name)
        kind, detail = self.kinds[call.name]
        if kind == "product":
            return self._product(call, z, z0, y, detail)
        if not z.requires_grad:
            return None
        if kind == "maxpool":
            return self._maxpool(z, z0, y, detail)
        f, lo, hi = detail
        zx = z.detach()
        dz = zx - z0
        small = _small(dz, zx, z0)
        yx = y.detach() if lo is not None else f(zx)  # a ReLU's output is f(z) exactly
        m = (yx - f(z0)) / torch.where(small, torch.ones_like(dz), dz)
        if bool(small.any()):
            slope = ((zx > lo) & (zx < hi)).to(dz.dtype) if lo is not None else \
                _derivative(f, zx)
            m = torch.where(small, slope, m)
        out = _linear(y, m, z)
        if call.name in self.scales_wanted:
            self.scales[call.name] = (out, f(z0))
        return out

    @staticmethod
    def _maxpool(z: torch.Tensor, z0: torch.Tensor, y: torch.Tensor,
                 pool: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> Any:
        zx = z.detach()
        o0, i0 = pool(z0)
        _, ix = pool(zx)
        do = y.detach() - o0
        pos = torch.where(do >= 0, ix, i0).flatten(2)  # the image's argmax, or the baseline's
        dz_at = (zx - z0).flatten(2).gather(2, pos).view_as(do)
        small = _small(dz_at, zx.flatten(2).gather(2, pos).view_as(do), o0)
        ratio = torch.where(small, torch.ones_like(do),
                            do / torch.where(small, torch.ones_like(do), dz_at))
        picked = z.flatten(2).gather(2, pos).view_as(do)
        return _linear(y, ratio, picked)

    def _product(self, call: Call, u: torch.Tensor, u0: torch.Tensor, y: torch.Tensor,
                 scale_name: str) -> Any:
        if scale_name not in self.scales:
            return None
        s, s0 = self.scales.pop(scale_name)
        if not (u.requires_grad or s.requires_grad):
            return None
        u_mid = (u.detach() + u0) / 2
        s_mid = (s.detach() + s0) / 2
        return y.detach() + s_mid * (u - u.detach()) + u_mid * (s - s.detach())


def _kinds(fm: FlatModel) -> tuple[dict[str, tuple[str, Any]], frozenset[str], list[str]]:
    """The rule of every call that has one, the SE scale calls, and nonlinear module types
    without a rule."""
    modules = fm.modules_by_name()
    kinds: dict[str, tuple[str, Any]] = {}
    scales: set[str] = set()
    unruled: list[str] = []
    for r in fm.layers:
        module = None if r.functional else modules.get(r.module_name)
        if r.activation is not None:
            hi = 6.0 if r.activation == "relu6" else math.inf
            kinds[r.name] = ("rescale", ((lambda z, h=hi: z.clamp(0, h)), 0.0, hi))
        elif module is not None and (f := _elementwise(module)) is not None:
            kinds[r.name] = ("rescale", (f, None, None))
        elif isinstance(module, nn.MaxPool2d):
            kinds[r.name] = ("maxpool", _pool(module))
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            kinds[r.name] = ("maxpool", lambda z, s=module.output_size: F.adaptive_max_pool2d(
                z, s, return_indices=True))
        elif _is_se(module):
            name = f"{r.module_name}.scale_activation" + (f":{r.index}" if r.index else "")
            kinds[r.name] = ("product", name)
            scales.add(name)
        elif isinstance(module, _UNRULED) and type(module).__name__ not in unruled:
            unruled.append(type(module).__name__)
    return kinds, frozenset(scales), unruled


def _pool(m: nn.MaxPool2d) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    def pool(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.max_pool2d(z, m.kernel_size, m.stride, m.padding, m.dilation,
                            ceil_mode=m.ceil_mode, return_indices=True)
    return pool


def _passes(
    fm: FlatModel, target: Target, total: int,
    points: Callable[[slice], tuple[torch.Tensor, torch.Tensor]],
    target_of: Callable[[slice, Any], Target], batch_size: int,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """DeepLift multipliers of ``total`` (image, baseline) points, ``batch_size`` per pass:
    yields ``(part, multipliers, f(image), f(baseline))`` of each pass, inside ``guarded``."""
    kinds, scales, unruled = _kinds(fm)
    if unruled:
        warnings.warn(f"DeepLift has no rule for {', '.join(unruled)} in "
                      f"{type(fm.model).__name__}: the plain gradient passes through them, so "
                      "the attributions need not sum to f(x) - f(baseline) (see "
                      "return_delta)", NetlensWarning, stacklevel=user_stacklevel())
    rule = _DeepLiftRules(kinds, scales)
    with rules.applied(fm, [(lambda r: r.name in kinds, rule)], warn_empty=False):
        for part in chunks(total, batch_size):
            xi, bi = points(part)
            try:
                rule.reset("record")
                with torch.no_grad():
                    out0 = model_output(fm, bi, target)
                rule.reset("apply")
                xi = xi.detach().requires_grad_(True)
                out = model_output(fm, xi, target)
                ti = target_of(part, out)
                s = scores_of(ti, out)
                g = grad(s, xi, k=ti.k, allow_unused=True)
                with torch.no_grad():
                    s0 = scores_of(ti, out0)
            finally:
                rule.reset("off")
            yield part, g, s.detach(), s0


def _batch_size(fm: FlatModel, x: torch.Tensor, batch_size: int | None) -> int:
    # two passes per point, and the baseline's recorded inputs and the multipliers besides
    # the usual graph: half the gradient budget
    return max(1, auto_batch_size(fm, x) // 2) if batch_size is None else batch_size


@overload
def deeplift(
    model: nn.Module, x: torch.Tensor, target: TargetLike = ..., *, baseline: object = ...,
    return_delta: Literal[False] = ..., batch_size: int | None = ...,
    generator: torch.Generator | None = ...,
) -> torch.Tensor: ...


@overload
def deeplift(
    model: nn.Module, x: torch.Tensor, target: TargetLike = ..., *, baseline: object = ...,
    return_delta: Literal[True], batch_size: int | None = ...,
    generator: torch.Generator | None = ...,
) -> tuple[torch.Tensor, torch.Tensor]: ...


def deeplift(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, baseline: object = None,
    return_delta: bool = False, batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """DeepLift with the rescale rule: ``(x - b) ⊙`` the DeepLift multipliers of the target
    score, whose sum is ``f(x) - f(b)`` (summation-to-delta).

    Shrikumar et al., "Learning Important Features Through Propagating Activation
    Differences", ICML 2017. The rules (rescale on every ReLU-family call and the elementwise
    activation modules, max pooling, squeeze-and-excitation products) are listed in
    :mod:`netlens.attribution.deeplift`. Equal to Captum's ``DeepLift`` where Captum's hooks
    see the model correctly; unlike it, also on ReLUs that are functional, reused or feed a max
    pool, on overlapping pooling windows, and with the gradient fallback taken per element.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: what to explain (:mod:`netlens.targets`); None: the predicted class.
        baseline: the reference, as in
            :func:`~netlens.attribution.integrated_gradients`: None or ``"zeros"``, a number,
            a tensor that broadcasts to ``x``, ``"blur"`` or ``"uniform"`` (from
            ``generator``).
        return_delta: also return the summation gap ``Σ attr - (f(x) - f(b))`` per image.
        batch_size: images per pass (each pass also runs their baselines); default from the
            memory budget.
        generator: the source of the ``"uniform"`` baseline; unused otherwise.

    Returns:
        ``(B, C, H, W)`` (``(B, K, C, H, W)`` for K targets per image), ``x``'s dtype and
        device; with ``return_delta=True`` also the ``(B,)`` (or ``(B, K)``) gap.

    Raises:
        ValueError, TypeError: bad input, target or baseline.
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> attr, delta = deeplift(m, torch.rand(2, 3, 32, 32), [1, 2], return_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-3)
        (torch.Size([2, 3, 32, 32]), True)
    """
    fm, x = prepare(model, x)
    base = baseline_image(baseline, x, generator)
    fm.ensure_traced(x)
    batch_size = _batch_size(fm, x, batch_size)
    t = as_target(target, x.shape[0])
    diff = x - base
    attrs, gaps = [], []
    with guarded(fm):
        for part, g, s, s0 in _passes(fm, t, x.shape[0], lambda p: (x[p], base[p]),
                                      lambda p, out: bind_part(t, p, out), batch_size):
            attr = with_k(diff[part], t.k) * g
            attrs.append(attr)
            gaps.append(attr.flatten(attr.dim() - 3).sum(-1) - (s - s0))
    attr = torch.cat(attrs)
    return (attr, torch.cat(gaps)) if return_delta else attr


def baseline_bank(baselines: object, x: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The baselines of each image as a ``(N, B, C, H, W)`` tensor (a view where shared).

    Args:
        baselines: a tensor ``(N, C, H, W)`` (a distribution shared by every image), a list of
            baselines as :func:`~netlens.attribution.baseline_image` takes them (``"zeros"``,
            ``"blur"``, ``"uniform"``, a number, a tensor broadcasting to ``x``: each gives one
            baseline per image), or None: ``["zeros", "blur"]``.
        x: the images ``(B, C, H, W)``.
        generator: the noise of ``"uniform"`` entries, drawn in list order.

    Raises:
        ValueError, TypeError: a wrong shape, an empty list, a non-finite value.
    """
    if baselines is None:
        baselines = ["zeros", "blur"]
    if isinstance(baselines, torch.Tensor):
        if baselines.dim() != 4 or tuple(baselines.shape[1:]) != tuple(x.shape[1:]) \
                or baselines.shape[0] < 1:
            raise ValueError(f"baselines must be a (N, C, H, W) tensor of the input's image "
                             f"shape {tuple(x.shape[1:])}, got {tuple(baselines.shape)}; for "
                             "one baseline per image pass a list, e.g. [b]")
        b = baselines.detach().to(dtype=x.dtype, device=x.device)
        if not bool(torch.isfinite(b).all()):
            raise ValueError("the baselines contain NaN or infinite values")
        return b.unsqueeze(1).expand(-1, x.shape[0], -1, -1, -1)
    if isinstance(baselines, (list, tuple)):
        if not baselines:
            raise ValueError("baselines is an empty list; give at least one baseline")
        return torch.stack([baseline_image(b, x, generator) for b in baselines])
    raise TypeError(f"baselines must be a (N, C, H, W) tensor, a list of baselines or None, "
                    f"got {type(baselines).__name__}")


def deeplift_shap(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, baselines: object = None,
    batch_size: int | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DeepLiftShap: DeepLift averaged over a distribution of baselines (:func:`deeplift`).

    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017 (with
    Shrikumar et al.'s DeepLift, ICML 2017), as Captum's ``DeepLiftShap``. The attributions of
    an image sum to ``f(x) - mean_j f(b_j)``.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: what to explain (:mod:`netlens.targets`); None: the predicted class of ``x``.
        baselines: a tensor ``(N, C, H, W)`` of baselines shared by every image (Captum's
            form), a list of per-image baselines as ``deeplift``'s ``baseline`` (``"zeros"``,
            ``"blur"``, ``"uniform"``, a number, a tensor), or None: ``["zeros", "blur"]``.
        batch_size: (image, baseline) pairs per pass; default from the memory budget.
        generator: the source of ``"uniform"`` baselines; unused otherwise.

    Returns:
        ``(B, C, H, W)`` (``(B, K, C, H, W)`` for K targets per image), ``x``'s dtype and device.

    Raises:
        ValueError, TypeError: bad input, target or baselines.
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> deeplift_shap(m, torch.rand(2, 3, 32, 32), [1, 2],
        ...               baselines=torch.rand(3, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """
    fm, x = prepare(model, x)
    bank = baseline_bank(baselines, x, generator)
    fm.ensure_traced(x)
    batch_size = _batch_size(fm, x, batch_size)
    count, batch = bank.shape[0], x.shape[0]
    pairs = torch.arange(count * batch, device=x.device)  # pair j * B + b: baseline-major
    images, which = pairs % batch, pairs // batch

    def points(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
        return x[images[part]], bank[which[part], images[part]]

    with guarded(fm):
        t = bind(fm, x, target, max(1, batch_size))  # once, on the clean images
        total = x.new_zeros(x.shape if t.k is None else (batch, t.k, *x.shape[1:]))
        for part, g, _, _ in _passes(fm, t, count * batch, points,
                                     lambda p, out: t.take(images[p]), batch_size):
            xi, bi = points(part)
            attr = with_k(xi - bi, t.k) * g
            for j in range(int(which[part][0]), int(which[part][-1]) + 1):  # in pair order
                sel = which[part] == j
                total.index_add_(0, images[part][sel], attr[sel])
    return total / count
