"""Excitation backprop: the marginal winning probability (MWP) of every unit, passed top-down.

Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016 (IJCV 2018). A
probability mass of 1 starts at the target unit and is split, layer by layer, among the units
that excite it: through a linear or convolution layer ``y_i = Σ_j w_ij a_j``

    P(a_j) = Σ_i  a_j w⁺_ij / (Σ_j' a_j' w⁺_ij') · P(y_i),        w⁺ = max(w, 0),

(biases ignored). The pass is a modified backward pass in which the "gradient" is the MWP itself;
every call of the forward pass gets its rule at the level of torch functions, so module calls,
reused modules and functional calls (``F.relu``, ``F.avg_pool2d``, ``torch.cat``, ``out +=
identity``) are all seen:

* **conv / linear** (``F.conv1d/2d/3d``, ``F.linear``): the rule above, on the positive parts
  ``a⁺`` of the inputs (after a ReLU ``a⁺ = a``; at the first layer, negative pixel values of a
  standardized image count as no excitation).
* **average pooling, adaptive average pooling, ``mean``, ``sum``**: the same rule with the
  pooling's (positive) weights: each input gets its share ``a_j / Σ_window a``.
* **max pooling**: all of a window's mass to its winner (the plain gradient).
* **``+`` of two activations** (ResNet's residual ``out += identity``): a sum node with weights
  1: each addend gets the share ``x_k⁺ / Σ_k' x_k'⁺`` of its positive part (a negative addend is
  inhibitory and gets none); adding a constant (a bias) passes the mass on unchanged.
* **ReLU, ReLU6 and other element-wise activations, BatchNorm** (as in TorchRay), and the
  gating product of a squeeze-excitation block (``x * gate``, the gate computed from ``x``):
  the unit's mass passes to its input unchanged; the gate acts as a weight, its branch gets
  none.
* **concatenation, views, reshapes, flatten, indexing, dropout, padding**: routing, the plain
  gradient.

Every rule conserves the mass (a unit whose excitatory inputs are all zero passes none on), so
the MWP of the input sums to 1 per image. Anything else that carries the mass (a product of two
activations, a softmax, a layer norm, attention) is a ``ValueError`` naming the layer or
function: the paper defines no rule for it.

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> p = excitation_backprop(m, torch.rand(2, 3, 64, 64), target=[1, 2])
    >>> p.shape, [round(float(s), 6) for s in p.sum((1, 2, 3))]
    (torch.Size([2, 1, 64, 64]), [1.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .._runtime import (
    auto_batch_size,
    bind_part,
    chunks,
    grad,
    guarded,
    model_output,
    prepare,
    scores_of,
)
from ..flat_model import FlatModel
from ..targets import TargetLike, as_target

__all__ = ["excitation_backprop"]

_LINEAR = {"conv1d", "conv2d", "conv3d", "linear"}
_PROPORTIONAL = {"avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
                 "adaptive_avg_pool2d", "adaptive_avg_pool3d", "mean", "sum"}
_ADD = {"add", "add_", "__add__", "__radd__", "__iadd__"}
_MUL = {"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply"}
_PASS = {"batch_norm", "relu6", "hardtanh", "hardtanh_", "hardswish", "hardsigmoid", "silu",
         "sigmoid", "gelu", "elu", "leaky_relu", "tanh", "softplus", "mish"}
# The plain gradient is the rule: routing (views, concatenation, indexing), a max pool's winner,
# a ReLU (it passes the mass of every active unit; an inactive one has none).
_ROUTE = {"relu", "relu_", "max_pool1d", "max_pool2d", "max_pool3d", "_max_pool1d",
          "_max_pool2d", "_max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
          "max_pool3d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d",
          "adaptive_max_pool3d", "adaptive_max_pool2d_with_indices", "_adaptive_max_pool2d",
          "cat", "concat", "concatenate", "stack", "view", "view_as", "reshape", "reshape_as",
          "flatten", "unflatten", "permute", "transpose", "t", "contiguous", "squeeze",
          "unsqueeze", "__getitem__", "split", "chunk", "unbind", "narrow", "clone", "to",
          "float", "double", "type", "dropout", "dropout1d", "dropout2d", "dropout3d",
          "feature_alpha_dropout", "alpha_dropout", "pad", "identity", "detach"}
_MODULES: tuple[type, ...] = (
    nn.Linear, nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.batchnorm._BatchNorm,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.dropout._DropoutNd, nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.SiLU, nn.Sigmoid, nn.GELU, nn.ELU, nn.LeakyReLU, nn.Tanh, nn.Softplus, nn.Mish,
    nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _carries(a: Any) -> bool:
    """Whether an argument is (or holds) an activation: a tensor in the graph, not a weight."""
    if isinstance(a, torch.Tensor):
        return a.requires_grad and not isinstance(a, nn.Parameter)
    if isinstance(a, (list, tuple)):
        return any(_carries(b) for b in a)
    return False


def _share(f: Callable[..., torch.Tensor], xs: list[torch.Tensor],
           p: torch.Tensor) -> list[torch.Tensor]:
    """``x_k ⊙ J_kᵀ (p / f(xs))`` for a function ``f`` linear with non-negative coefficients:
    each input's share of the mass ``p`` of the outputs (none from an output with ``f = 0``)."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(True) for x in xs]
        z = f(*leaves)
        nonzero = z != 0
        s = torch.where(nonzero, p / torch.where(nonzero, z, torch.ones_like(z)),
                        torch.zeros_like(z))
        grads = torch.autograd.grad(z, leaves, s, allow_unused=True)
    return [x * g if g is not None else torch.zeros_like(x) for x, g in zip(xs, grads)]


class _Node:
    """One intercepted call: its forward value and its MWP rule."""

    def __init__(self, kind: str, run: Callable[..., torch.Tensor],
                 positive: Callable[..., torch.Tensor] | None = None,
                 dual: Callable[..., torch.Tensor] | None = None, passes: int = 0) -> None:
        self.kind, self.run, self.positive, self.dual = kind, run, positive, dual
        self.passes = passes  # a pass node: the input that gets the mass
        self.contrast = False  # the dual unit's mass is subtracted here (the classifier)
        self.inputs: list[torch.Tensor] = []  # a share node's positive parts of its inputs
        self.count = 0

    def backward(self, p: torch.Tensor) -> list[torch.Tensor | None]:
        if self.kind == "pass":
            return [p if k == self.passes else None for k in range(self.count)]
        assert self.positive is not None
        shares = _share(self.positive, self.inputs, p)
        if self.contrast and self.dual is not None:
            shares = [a - b for a, b in zip(shares, _share(self.dual, self.inputs, p))]
        return list(shares)


class _Apply(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, node: _Node, *xs: torch.Tensor) -> torch.Tensor:
        ctx.node = node
        node.count = len(xs)
        if node.kind == "share":  # fresh tensors: a later in-place call cannot change them
            node.inputs = [x.detach().clamp(min=0) for x in xs]
        return node.run(*xs)

    @staticmethod
    def backward(ctx: Any, p: torch.Tensor) -> Any:
        return (None, *ctx.node.backward(p))


def _derived(t: torch.Tensor, source: torch.Tensor, limit: int = 256) -> bool:
    """Whether ``t`` is computed from ``source`` (a walk up ``t``'s autograd graph, bounded)."""
    target, frontier, seen = source.grad_fn, [t.grad_fn], 0
    while frontier and seen < limit and target is not None:
        node = frontier.pop()
        seen += 1
        if node is target:
            return True
        if node is not None:
            frontier.extend(n for n, _ in node.next_functions if n is not None)
    return False


def _substitute(args: tuple, positions: list[int]) -> Callable[..., tuple]:
    def build(*xs: torch.Tensor) -> tuple:
        out = list(args)
        for i, x in zip(positions, xs):
            out[i] = x
        return tuple(out)
    return build


class _Excitation(TorchFunctionMode):
    """Gives every call of the forward pass its MWP rule (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.last_linear: _Node | None = None

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if not torch.is_grad_enabled() or not (_carries(args) or _carries(list(kwargs.values()))):
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if "input" in kwargs and not args:
            args = (kwargs.pop("input"),)
        if name in _LINEAR:
            return self._linear(func, args, kwargs)
        if name in _PROPORTIONAL and _carries(args[:1]) and not _carries(args[1:]):
            def pool(x: torch.Tensor) -> torch.Tensor:
                return func(x, *args[1:], **kwargs)
            return _Apply.apply(_Node("share", pool, pool), args[0])
        if name in _ADD or name in _MUL:
            return self._binary(func, name, args, kwargs)
        if name in _PASS and _carries(args[:1]) and not _carries(args[1:]):
            def run(x: torch.Tensor) -> torch.Tensor:
                return func(x, *args[1:], **kwargs)
            return _Apply.apply(_Node("pass", run), args[0])
        out = func(*args, **kwargs)
        if name in _ROUTE or not _carries(out if isinstance(out, (list, tuple)) else [out]):
            return out
        raise ValueError(
            f"excitation backprop has no rule for torch function {name or func!r} (called on an "
            "activation of the forward pass); it handles convolutions, linear layers, pooling, "
            "BatchNorm, element-wise activations, additions, concatenations and reshapes; "
            "explain a model made of those, or a layer before the unsupported part")

    def _linear(self, func: Any, args: tuple, kwargs: dict) -> torch.Tensor:
        x, weight, rest = args[0], args[1] if len(args) > 1 else kwargs.pop("weight"), args[3:]
        bias = args[2] if len(args) > 2 else kwargs.pop("bias", None)
        w = weight.detach()

        def run(a: torch.Tensor) -> torch.Tensor:
            return func(a, weight, bias, *rest, **kwargs)

        def positive(a: torch.Tensor) -> torch.Tensor:  # weights clamped when needed, not kept
            return func(a, w.clamp(min=0), None, *rest, **kwargs)

        def dual(a: torch.Tensor) -> torch.Tensor:
            return func(a, (-w).clamp(min=0), None, *rest, **kwargs)

        node = _Node("share", run, positive, dual)
        self.last_linear = node
        return _Apply.apply(node, x)

    def _binary(self, func: Any, name: str, args: tuple, kwargs: dict) -> torch.Tensor:
        if len(args) < 2 and "other" in kwargs:
            args = (*args, kwargs.pop("other"))
        if len(args) != 2 or kwargs.get("alpha", 1) != 1 or set(kwargs) - {"alpha"}:
            raise ValueError(f"excitation backprop has no rule for {name} with arguments "
                             f"{len(args)} positional, {sorted(kwargs)} keyword")
        inplace = name.endswith("_") and not name.startswith("__") or name.startswith("__i")
        plain = torch.add if name in _ADD else torch.mul
        live = [i for i, a in enumerate(args) if _carries(a)]
        build = _substitute(args, live)

        def run(*xs: torch.Tensor) -> torch.Tensor:
            return plain(*build(*xs))

        if len(live) == 2 and name in _ADD:
            node = _Node("share", run, run)
        elif len(live) == 1:  # a constant term or factor: a bias, or a fixed weight
            node = _Node("pass", run)
        else:  # x * gate, the gate computed from x (squeeze-excitation): the gate is a weight
            a, b = args
            if _derived(b, a):
                node = _Node("pass", run, passes=0)
            elif _derived(a, b):
                node = _Node("pass", run, passes=1)
            else:
                raise ValueError(
                    "excitation backprop has no rule for the element-wise product of two "
                    f"activations of shapes {tuple(a.shape)} and {tuple(b.shape)} (only for a "
                    "gate computed from the other factor, as in squeeze-excitation)")
        out = _Apply.apply(node, *[args[i] for i in live])
        if inplace:
            return args[0].copy_(out)
        return out


def _check_modules(fm: FlatModel) -> None:
    modules = fm.modules_by_name()
    for record in fm.layers:
        module = modules.get(record.module_name)
        if record.functional or module is None:
            continue
        kind = type(module)
        if not kind.__module__.startswith("torch.nn") or isinstance(module, _MODULES):
            continue
        if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
            continue
        raise ValueError(f"excitation backprop has no rule for layer {record.name!r} "
                         f"({kind.__name__}); it handles convolutions, linear layers, pooling, "
                         "BatchNorm, element-wise activations, additions, concatenations and "
                         "reshapes")


def excitation_backprop(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, contrastive: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Excitation backprop: the marginal winning probability of every input pixel.

    Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016 (IJCV 2018).
    The top-down signal is the gradient of the target's score with respect to the model's
    output (for a class, a one-hot vector: a mass of 1 on the class's unit); it is passed down
    with the rules of :mod:`netlens.attribution.excitation` and read at the input, summed over
    the colour channels. Without ``contrastive`` the map is non-negative (for a non-negative
    signal) and sums to 1 per image, up to the mass of units that no positive input excites.

    **Contrastive MWP** (``contrastive=True``): the MWP of the target minus the MWP of its
    *dual* unit, whose weights in the classifier (the last linear or convolution call of the
    forward pass) are negated. The paper and TorchRay take the difference at an intermediate
    ``contrast_layer`` and pass it on down; every rule below the classifier is linear in the
    mass, so the difference taken at any layer gives this same input map, and there is no such
    option. The map sums to 0 per image (both distributions sum to 1); it is returned signed
    (TorchRay keeps the positive part: ``.clamp(min=0)``).

    Args:
        model: a CNN ``nn.Module`` (convolutions, linear layers, pooling, BatchNorm, ReLU-family
            and other element-wise activations, additions, concatenations), or its
            :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: what to explain (:mod:`netlens.targets`); None: the predicted class.
        contrastive: the contrastive MWP (the target against its dual unit).
        batch_size: images per pass; default from the memory budget.

    Returns:
        ``(B, 1, H, W)`` (``(B, K, 1, H, W)`` for K targets per image), ``x``'s dtype and
        device: the input's MWP, summed over channels.

    Raises:
        ValueError: a layer or function without an MWP rule (named), bad input or target.
        TypeError: bad input or target types.
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> c = excitation_backprop(m, torch.rand(1, 3, 32, 32), 3, contrastive=True)
        >>> c.shape, abs(float(c.sum())) < 1e-4
        (torch.Size([1, 1, 32, 32]), True)
    """
    fm, x = prepare(model, x)
    if not isinstance(contrastive, bool):
        raise TypeError(f"contrastive must be True or False, got {contrastive!r}")
    fm.ensure_traced(x)
    _check_modules(fm)
    if batch_size is None:
        batch_size = auto_batch_size(fm, x)
    t = as_target(target, x.shape[0])
    maps = []
    with guarded(fm):
        for part in chunks(x.shape[0], batch_size):
            xi = x[part].detach().requires_grad_(True)
            mode = _Excitation()
            with mode:
                out = model_output(fm, xi, t)
            if contrastive:
                if mode.last_linear is None:
                    raise ValueError("contrastive excitation backprop needs a classifier (a "
                                     "linear or convolution layer) before the target's output")
                mode.last_linear.contrast = True
            ti = bind_part(t, part, out)
            p = grad(scores_of(ti, out), xi, k=t.k, allow_unused=True)
            maps.append(p.sum(dim=-3, keepdim=True))
    return torch.cat(maps)
