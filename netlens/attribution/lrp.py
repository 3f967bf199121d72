"""Layer-wise relevance propagation (LRP): the target score redistributed layer by layer down to
the input pixels, each layer sharing its relevance among its inputs by a rule.

Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise
Relevance Propagation", PLoS ONE 2015; Montavon et al., "Layer-Wise Relevance Propagation: An
Overview", 2019. The rules are :mod:`netlens.rules` values (:class:`~netlens.rules.Epsilon`,
:class:`~netlens.rules.ZPlus`, :class:`~netlens.rules.Gamma`, ...), applied in the
"gradient x input" form (zennit's idea): each rule replaces a layer call's output with an equal
tensor whose backward gives the rule's relevance ratio, and the input relevance is
``x * grad``. A composite picks a rule per layer type, with zennit's meaning of its names.

Canonization is done here, on the fly, and never changes the model: a batch norm that reads the
output of a convolution or linear layer is merged into it (the layer's rule uses the merged
weights, new tensors; the batch norm call then passes relevance through); residual additions
and concatenations conserve relevance by themselves in this form (an addition shares it in
proportion to its summands, as zennit's ResNet canonizer's ``Norm`` rule on the sum does);
functional, in-place and reused ReLUs, max pooling and flatten are the plain gradient;
average pooling gets :class:`~netlens.rules.Norm`; other activations, unmerged normalizations
(batch, layer, group norm) and squeeze-excitation gates get :class:`~netlens.rules.Pass`.

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> lrp(m, torch.rand(2, 3, 32, 32), target=[1, 2]).shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from .. import rules as R
from .._runtime import (
    auto_batch_size,
    bind_part,
    check_real,
    chunks,
    grad,
    guarded,
    model_output,
    prepare,
    scores_of,
)
from ..adapter import Call, CallRecord, first_tensor
from ..flat_model import FlatModel
from ..hooks import HookDict
from ..targets import TargetLike, as_target

__all__ = ["lrp", "COMPOSITES"]

COMPOSITES = ("epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1",
              "epsilon_alpha2_beta1_flat")
"""The composites :func:`lrp` knows (zennit's names and meanings)."""

_CONVS = (nn.modules.conv._ConvNd,)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
              nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
# Activations other than ReLU (whose gradient already passes relevance unchanged): zennit's
# ``Activation`` types, each with the Pass rule.
_ACTIVATIONS = (nn.ELU, nn.Hardshrink, nn.Hardsigmoid, nn.Hardtanh, nn.Hardswish, nn.LeakyReLU,
                nn.LogSigmoid, nn.PReLU, nn.RReLU, nn.SELU, nn.CELU, nn.GELU, nn.Sigmoid,
                nn.SiLU, nn.Mish, nn.Softplus, nn.Softshrink, nn.Softsign, nn.Tanh,
                nn.Tanhshrink, nn.Threshold)
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
          nn.LocalResponseNorm)
# Modules with parameters of their own whose plain gradient x input is what LRP does there:
# ConvNeXt's block scales its branch by a parameter (relevance passes through the product).
_SCALING_BLOCKS = frozenset({"CNBlock"})


def _torchvision_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """torchvision's frozen batch norm and squeeze-excitation gate, if torchvision is here."""
    try:
        from torchvision.ops.misc import FrozenBatchNorm2d, SqueezeExcitation
    except ImportError:  # pragma: no cover (torchvision is a dependency of the zoo)
        return (), ()
    return (FrozenBatchNorm2d,), (SqueezeExcitation,)


class _MergeOrPass(R.Pass):
    """A batch norm's default: merged into the linear layer whose output it reads (that
    layer's rule, with the merged weights, carries the relevance), else Pass."""


class _AfterSum(R.Norm):
    """A ReLU module's default: the plain gradient, but with Norm's stabilizer on a ReLU that
    reads an addition (a residual sum), as zennit's ResNet canonizer's ``Norm`` on the sum."""


class _ToRatio(torch.autograd.Function):
    """The model's input ``x``, made from a zero ``probe``: the gradient reaching ``x`` (a
    relevance ratio) comes to the probe times ``x``, so the probe's gradient is relevance."""

    @staticmethod
    def forward(ctx: Any, probe: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        (x,) = ctx.saved_tensors
        return g * x, None


def _origin(t: torch.Tensor) -> Any:
    """The autograd node that made ``t``, seen through the copy of a call's inputs."""
    fn = t.grad_fn
    if fn is not None and type(fn).__name__ == "CloneBackward0" and fn.next_functions:
        fn = fn.next_functions[0][0]
    return fn


def _replace(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    return new


class _Propagation:
    """The interception callback: each planned call's output replaced by its rule's node, a
    batch norm merged into the linear call whose output it reads."""

    def __init__(self, plan: dict[str, R.Rule], hooks: HookDict) -> None:
        self.plan, self.hooks = plan, hooks
        self.start(None, None)

    def start(self, x: torch.Tensor | None, probe: torch.Tensor | None) -> None:
        """A new forward pass, of the model input ``x`` made from ``probe``."""
        self.input_fn = None if x is None else x.grad_fn
        self.probe = probe
        self.pending: dict[int, tuple[Any, torch.Tensor, Any, R.LRPRule, list[bool]]] = {}

    def _probe(self, a: torch.Tensor) -> torch.Tensor | None:
        return self.probe if self.input_fn is not None and _origin(a) is self.input_fn else None

    def __call__(self, call: Call) -> Any:
        rule = self.plan[call.name]
        if not isinstance(rule, R.LRPRule):
            return rule.apply(call, self.hooks)
        a = call.inputs[0] if call.inputs else None
        out = first_tensor(call.output)
        if not isinstance(a, torch.Tensor) or out is None or not out.requires_grad:
            return None
        if isinstance(rule, _AfterSum):
            fn = out.grad_fn
            source = fn.next_functions[0][0] if fn is not None and fn.next_functions else None
            if type(source).__name__ != "AddBackward0":
                return None
            return _replace(call.output, rule.node(a, out, None, None))
        if isinstance(rule, _MergeOrPass) and call.module is not None:
            entry = self.pending.get(id(_origin(a)))
            merged = entry[2].merged(call.module) if entry is not None else None
            if entry is not None and merged is not None:
                _, a0, _, linear_rule, switch = entry
                switch[0] = False  # the linear call's own epsilon scaling steps aside
                new = linear_rule.node(a0, out, merged, self._probe(a0), name=call.name)
                return _replace(call.output, new)
        affine = R._Affine.of(call.module)
        switch = [True]
        new = rule.node(a, out, affine, self._probe(a), name=call.name, switch=switch)
        if affine is not None and new.grad_fn is not None:
            self.pending[id(new.grad_fn)] = (new.grad_fn, a, affine, rule, switch)
        return _replace(call.output, new)


def _bounds(value: object, name: str, x: torch.Tensor) -> float | torch.Tensor:
    """``low``/``high`` of the z-box rule, checked: a float or a tensor broadcastable to one
    input ``(1, C, H, W)``."""
    if isinstance(value, torch.Tensor):
        one = (1, *x.shape[1:])
        try:
            ok = torch.broadcast_shapes(value.shape, one) == one
        except RuntimeError:
            ok = False
        if not ok or not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite and broadcastable to one input {one} (e.g. "
                             f"per channel (1, {x.shape[1]}, 1, 1)), got shape "
                             f"{tuple(value.shape)}")
        return value.detach().to(x.dtype)
    return check_real(value, name)


def _plan(fm: FlatModel, composite: str, rules: Any, epsilon: float, gamma: float,
          low: object, high: object, x: torch.Tensor) -> dict[str, R.Rule]:
    """The rule of every call that gets one: ``rules=`` first, then the composite's."""
    if composite not in COMPOSITES:
        raise ValueError(f"unknown composite {composite!r}; one of "
                         f"{', '.join(map(repr, COMPOSITES))}")
    plan: dict[str, R.Rule] = {}
    if rules is not None:
        if not isinstance(rules, Mapping) and not isinstance(rules, (list, tuple)):
            raise TypeError(f"rules= takes {{selector: rule}} or (selector, rule) pairs, got "
                            f"{type(rules).__name__}")
        pairs = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
        for selector, rule in pairs:
            if not isinstance(rule, R.Rule):
                raise TypeError(f"rules= values must be netlens.rules.Rule values (e.g. "
                                f"nl.rules.Epsilon()), got {type(rule).__name__} for {selector!r}")
            names = R.select(fm, selector)
            if not names and isinstance(selector, str):  # a type may well have no layer here
                raise ValueError(f"the rules= selector {selector!r} picks no layer call of "
                                 f"{type(fm.model).__name__}; see FlatModel(model).layer_names")
            for n in names:
                plan.setdefault(n, rule)
    linear: R.Rule = R.Epsilon(epsilon)
    conv: R.Rule = {"epsilon_plus": R.ZPlus(), "epsilon_plus_flat": R.ZPlus(),
                    "epsilon_gamma_box": R.Gamma(gamma),
                    "epsilon_alpha2_beta1": R.AlphaBeta(2, 1),
                    "epsilon_alpha2_beta1_flat": R.AlphaBeta(2, 1)}[composite]
    first: tuple[tuple[type, ...], R.Rule] | None = None
    if composite == "epsilon_gamma_box":
        if low is None or high is None:
            raise ValueError("the 'epsilon_gamma_box' composite needs low= and high=, the "
                             "lowest and highest input values (e.g. low=0.0, high=1.0 for raw "
                             "pixels; per channel tensors (1, C, 1, 1) for normalized images)")
        first = (_CONVS, R.ZBox(_bounds(low, "low", x), _bounds(high, "high", x)))
    elif composite.endswith("_flat"):
        first = ((*_CONVS, nn.Linear), R.Flat())
    frozen_bn, gates = _torchvision_types()
    batch_norms = (nn.modules.batchnorm._BatchNorm, *frozen_bn)
    modules = fm.modules_by_name()
    merge_or_pass, passing, norm, after_sum = _MergeOrPass(), R.Pass(), R.Norm(), _AfterSum()
    for record in fm.layers:
        module = None if record.functional else modules.get(record.module_name)
        rule = None
        if first is not None and isinstance(module, first[0]):
            rule, first = first[1], None  # the first such call of the pass
        elif isinstance(module, _CONVS):
            rule = conv
        elif isinstance(module, nn.Linear):
            rule = linear
        elif isinstance(module, batch_norms):
            rule = merge_or_pass
        elif isinstance(module, _AVG_POOLS):
            rule = norm
        elif type(module) is nn.ReLU:
            rule = after_sum
        elif isinstance(module, (*_ACTIVATIONS, *_NORMS, *gates)) or (
                record.functional and record.activation == "relu6"):
            rule = passing
        if rule is not None:
            plan.setdefault(record.name, rule)
    _check_covered(fm, plan, modules)
    return plan


def _check_covered(fm: FlatModel, plan: dict[str, R.Rule], modules: dict[str, nn.Module]) -> None:
    """Raises for a layer with parameters of its own that no rule covers (its gradient is no
    relevance rule: attention, an unknown custom layer)."""
    ruled = {fm.layer_info(n).module_name for n in plan}

    def covered(record: CallRecord) -> bool:
        parts = record.module_name.split(".")
        return any(".".join(parts[:i]) in ruled for i in range(1, len(parts)))

    for record in fm.layers:
        module = None if record.functional else modules.get(record.module_name)
        if module is None or record.name in plan or type(module).__name__ in _SCALING_BLOCKS:
            continue
        if next(module.parameters(recurse=False), None) is not None and not covered(record):
            raise ValueError(
                f"lrp has no rule for layer {record.name!r} ({type(module).__name__}); give it "
                f"one with rules={{{record.name!r}: rule}}: nl.rules.Epsilon() for a linear "
                "map, nl.rules.Pass() to pass relevance through an elementwise layer")


def _uses_copies(fm: FlatModel, plan: dict[str, R.Rule]) -> bool:
    """Whether a rule that reads its call's input is on an in-place call (which overwrites
    the input: the interception then copies the inputs of the planned calls)."""
    modules = fm.modules_by_name()
    for name, rule in plan.items():
        if rule.inputs != "copy":
            continue
        record = fm.layer_info(name)
        module = None if record.functional else modules.get(record.module_name)
        if record.inplace or getattr(module, "inplace", False) is True:
            return True
    return False


def lrp(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    composite: str = "epsilon_plus", rules: Any = None, epsilon: float = 1e-6,
    gamma: float = 0.25, low: float | torch.Tensor | None = None,
    high: float | torch.Tensor | None = None, batch_size: int | None = None,
) -> torch.Tensor:
    """Layer-wise relevance propagation: the target's score shared out layer by layer, by each
    layer's rule, down to the input.

    The relevance at the output is ``output * d score / d output`` (the score itself for a
    logit, a masked sum, a channel), so with conserving rules and bias-free layers the input
    relevance sums to the score; biases and stabilizers absorb their shares. One forward and
    one backward pass per chunk of images; the model is never changed.

    Composites (zennit's meaning of each name): ``"epsilon_plus"``: z+ for convolutions,
    epsilon for linear layers; ``"epsilon_gamma_box"``: z-box (``low``, ``high``) for the first
    convolution, gamma for the others, epsilon for linear layers; ``"epsilon_alpha2_beta1"``:
    alpha=2, beta=1 for convolutions, epsilon for linear layers; the ``"_flat"`` variants give
    the first convolution or linear layer the flat rule. All of them: Norm for average
    pooling, Pass for activations other than ReLU (ReLUs pass relevance by their gradient),
    normalizations and squeeze-excitation gates; batch norms after a linear layer are merged
    into it.

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: what to explain (:mod:`netlens.targets`); None: the predicted class.
        composite: the rules per layer type, one of :data:`COMPOSITES`.
        rules: ``{selector: rule}`` (or ``(selector, rule)`` pairs) overriding the
            composite for the calls a selector picks (a call name or glob, an ``nn.Module``
            type, a predicate; see :mod:`netlens.rules`), e.g.
            ``{"features.0": nl.rules.Flat(), nn.Linear: nl.rules.Epsilon(0.1)}``; a rule
            given to a batch norm keeps it from being merged.
        epsilon: the stabilizer of the epsilon rule of linear layers.
        gamma: the gamma rule's parameter (``"epsilon_gamma_box"``).
        low: the lowest input value, for the z-box rule (a float or a tensor broadcastable to
            ``(1, C, H, W)``); required by ``"epsilon_gamma_box"``.
        high: the highest input value, likewise.
        batch_size: images per pass; default from the memory budget.

    Returns:
        ``(B, C, H, W)`` relevance (``(B, K, C, H, W)`` for K targets per image), ``x``'s
        dtype and device.

    Raises:
        ValueError: an unknown composite, a selector that picks no layer, missing or malformed
            z-box bounds, a layer with parameters that no rule covers (attention, a custom
            layer: give it one with ``rules={name: rule}``); bad input or target.
        TypeError: a rules= value that is not a rule, an affine rule on a layer that is not a
            convolution or linear layer.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.vgg11().eval()
        >>> r = lrp(m, torch.rand(1, 3, 32, 32), 3, composite="epsilon_gamma_box",
        ...         low=0.0, high=1.0)
        >>> r.shape
        torch.Size([1, 3, 32, 32])
    """
    fm, x = prepare(model, x)
    for value, name in ((epsilon, "epsilon"), (gamma, "gamma")):
        check_real(value, name, minimum=0.0)
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, numbers.Integral)):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    fm.ensure_traced(x)
    plan = _plan(fm, composite, rules, float(epsilon), float(gamma), low, high, x)
    if batch_size is None:  # the rules keep each layer's input and output besides autograd's
        batch_size = max(1, auto_batch_size(fm, x) // 2)
    t = as_target(target, x.shape[0])
    mode: Literal["live", "copy"] = "copy" if _uses_copies(fm, plan) else "live"
    relevance = []
    with guarded(fm), HookDict() as hooks:
        propagation = _Propagation(plan, hooks)
        with fm.intercept(list(plan), propagation, inputs=mode):
            for part in chunks(x.shape[0], batch_size):
                probe = torch.zeros_like(x[part]).requires_grad_(True)
                xin = _ToRatio.apply(probe, x[part])
                propagation.start(xin, probe)
                try:
                    out = model_output(fm, xin, t)
                    ti = bind_part(t, part, out)
                    relevance.append(grad(scores_of(ti, out), probe, k=t.k, allow_unused=True))
                finally:
                    propagation.start(None, None)
    return torch.cat(relevance)
