"""Backward rules as values: change how gradients flow through the calls a selector picks.

A :class:`Rule` sees one layer call (its module, inputs and output: :class:`~netlens.adapter.Call`)
during the forward pass and returns a replacement output whose backward pass implements the rule
(or None to leave the call alone). :func:`applied` applies rules to the calls that selectors
pick, module calls and functional calls alike, through the one interception of
:meth:`FlatModel.intercept`, inside a context manager that always removes them, also when the
body raised (zennit's idea, on netlens's call names)::

    with nl.rules.applied(model, {nl.rules.RELUS: nl.rules.Guided()}):
        out = model(x)      # backward through every ReLU call is now guided backprop

A selector is one of

- a call name (``"layer1.0.relu:1"``) or a glob over call names and module names
  (``"features.*"``, ``"*relu*"``);
- an ``nn.Module`` subclass (every call of a module of that type);
- a ReLU-family torch function (``F.relu``, ``torch.relu``, ``F.relu6``: every ReLU call of that
  kind, module or functional; only ReLU-family functional calls are traced);
- :data:`RELUS` (every ReLU-family call) or any predicate ``CallRecord -> bool``.

Each call gets the rule of the first selector that picks it.

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> x = torch.rand(1, 3, 64, 64, requires_grad=True)
    >>> with applied(m, {RELUS: Guided()}) as n:
    ...     m(x)[0, 3].backward()
    >>> n, bool((x.grad != 0).any())
    (17, True)
"""

from __future__ import annotations

import contextlib
import fnmatch
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, Union

import torch
from torch import nn

from ._util import NetlensWarning, user_stacklevel
from .adapter import _RELU_FUNCTIONS, Call, CallRecord, first_tensor
from .flat_model import FlatModel
from .hooks import HookDict, TensorHook

__all__ = ["Rule", "Guided", "Deconv", "Redirected", "RELUS", "Selector", "applied", "select",
           "LRPRule", "Epsilon", "Norm", "ZPlus", "AlphaBeta", "Gamma", "ZBox", "Flat", "WSquare",
           "Pass"]

Selector = Union[str, type, Callable[..., Any]]


def RELUS(record: CallRecord) -> bool:  # noqa: N802 (a constant-like selector)
    """Selector of every ReLU-family call (ReLU, ReLU6; module, in-place, reused or functional)."""
    return record.activation is not None


class Rule:
    """A backward rule for the calls it is applied to.

    Attributes:
        inputs: what the rule needs of a call's inputs: ``"live"`` (as the call left them) or
            ``"copy"`` (copies taken before the call, for rules that read the input of an
            in-place call).
    """

    inputs: Literal["live", "copy"] = "live"

    def apply(self, call: Call, hooks: HookDict) -> Any:
        """The replacement output of ``call`` (or None to keep it). Tensor hooks added to
        ``hooks`` are removed when the rules are."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _clamp_negative(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp(min=0)


class Guided(Rule):
    """Guided backpropagation's ReLU (Springenberg et al., "Striving for Simplicity", 2015):
    ``grad_in = relu(grad_out) * 1[x > 0]``: only positive gradients pass back."""

    def apply(self, call: Call, hooks: HookDict) -> Any:
        t = first_tensor(call.output)
        if t is not None and t.requires_grad:
            hooks.add(TensorHook(t, _clamp_negative))
        return None


class _PassPositive(torch.autograd.Function):
    """Forward: the ReLU's output; backward: ``relu(grad)`` to the ReLU's input, unmasked."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.clamp(min=0), None


class Deconv(Rule):
    """DeconvNet's ReLU (Zeiler & Fergus, ECCV 2014): ``grad_in = relu(grad_out)``, whatever
    the sign of the forward input."""

    inputs = "copy"

    def apply(self, call: Call, hooks: HookDict) -> Any:
        x = call.inputs[0] if call.inputs else None
        y = first_tensor(call.output)
        if not isinstance(x, torch.Tensor) or y is None or not x.requires_grad:
            return None
        return _PassPositive.apply(x, y.detach())


class _Redirect(torch.autograd.Function):
    """Adds zero to a ReLU's output; its backward sends to the ReLU's input ``x`` the gradient
    that would raise ``x`` where ``x <= 0``, for the images whose ReLU gradient is all zero."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.zeros_like(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor | None:
        (x,) = ctx.saved_tensors
        flows = ((grad != 0) & (x > 0)).flatten(1).any(1)
        if bool(flows.all()):
            return None  # the usual case: the ReLU's own gradient flows for every image
        flows = flows.view(-1, *[1] * (x.dim() - 1))
        return torch.where(~flows & (x <= 0) & (grad < 0), grad, torch.zeros_like(grad))


class Redirected(Rule):
    """Lucid's redirected ReLU: for an image whose gradient through the ReLU is all zero, the
    gradient that would raise the ReLU's negative inputs passes back, which wakes a dead
    channel up (used by :class:`~netlens.OptVis` for its first steps)."""

    inputs = "copy"

    def apply(self, call: Call, hooks: HookDict) -> Any:
        x = call.inputs[0] if call.inputs else None
        if not isinstance(x, torch.Tensor) or not x.requires_grad:
            return None
        out = first_tensor(call.output)
        if out is None:
            return None
        return out + _Redirect.apply(x)


def _matcher(selector: Selector, modules: dict[str, nn.Module]) -> Callable[[CallRecord], bool]:
    if isinstance(selector, str):
        def by_name(r: CallRecord) -> bool:
            return r.name == selector or fnmatch.fnmatchcase(r.name, selector) or (
                bool(r.module_name) and not r.functional
                and fnmatch.fnmatchcase(r.module_name, selector))
        return by_name
    if isinstance(selector, type):
        if not issubclass(selector, nn.Module):
            raise TypeError(f"a type selector must be an nn.Module subclass, got {selector!r}")

        def by_type(r: CallRecord) -> bool:
            return not r.functional and isinstance(modules.get(r.module_name), selector)
        return by_type
    if selector in _RELU_FUNCTIONS:
        kind = _RELU_FUNCTIONS[selector][0]
        kind = "relu6" if kind == "hardtanh" else kind

        def by_function(r: CallRecord) -> bool:
            return r.activation == kind
        return by_function
    if callable(selector):
        return selector  # a predicate over call records
    raise TypeError(f"a selector must be a call name or glob, an nn.Module subclass, a ReLU "
                    f"function or a predicate CallRecord -> bool; got {type(selector).__name__}")


def select(model: nn.Module, selector: Selector) -> list[str]:
    """The names of the calls that ``selector`` picks, in execution order."""
    fm = model if isinstance(model, FlatModel) else FlatModel(model)
    modules = fm.modules_by_name()
    match = _matcher(selector, modules)
    return [r.name for r in fm.layers if match(r)]


RuleMap = Union[Mapping[Any, Rule], Sequence[tuple[Any, Rule]]]


@contextlib.contextmanager
def applied(model: nn.Module, rules: RuleMap, *, warn_empty: bool = True) -> Iterator[int]:
    """Applies ``rules`` to the calls their selectors pick, for every forward pass in the block.

    Args:
        model: the model (or its :class:`~netlens.FlatModel`, whose layers are reused).
        rules: ``{selector: rule}`` or a sequence of ``(selector, rule)`` pairs; each call gets
            the rule of the first selector that picks it.
        warn_empty: warn once when no call is picked (the rules would change nothing).

    Yields:
        The number of calls that get a rule.

    Raises:
        TypeError: a selector or rule of the wrong type.
    """
    fm = model if isinstance(model, FlatModel) else FlatModel(model)
    pairs = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
    for _, rule in pairs:
        if not isinstance(rule, Rule):
            raise TypeError(f"rules must be netlens.rules.Rule values, got "
                            f"{type(rule).__name__}")
    modules = fm.modules_by_name()
    matchers = [(_matcher(s, modules), r) for s, r in pairs]
    chosen: dict[str, Rule] = {}
    for record in fm.layers:
        for match, rule in matchers:
            if match(record):
                chosen[record.name] = rule
                break
    if not chosen:
        if warn_empty:
            names = ", ".join(repr(s) if isinstance(s, str) else getattr(s, "__name__", str(s))
                              for s, _ in pairs)
            warnings.warn(f"no call of {type(fm.model).__name__} matches the selectors "
                          f"{names}, so the rules change nothing", NetlensWarning,
                          stacklevel=user_stacklevel())
        yield 0
        return
    mode: Literal["live", "copy"] = "copy" if any(
        r.inputs == "copy" for r in chosen.values()) else "live"
    with HookDict() as hooks:
        def dispatch(call: Call) -> Any:
            return chosen[call.name].apply(call, hooks)

        with fm.intercept(list(chosen), dispatch, inputs=mode):
            yield len(chosen)



# -- layer-wise relevance propagation ----------------------------------------------------------
# The LRP rules work in the "gradient x input" form (zennit's idea): the gradient that flows
# back to a tensor a is its relevance divided by a, so that a * grad(a) is a's relevance. A rule
# replaces a layer call's output with a tensor equal to it whose backward turns the gradient g
# at the output (relevance R = z * g for the output z) into the gradient at the input that the
# rule's relevance R_in prescribes. Additions, concatenations, max pooling, reshapes and ReLUs
# then conserve relevance by themselves (an addition shares it in proportion to the summands).


def _stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``z`` moved away from zero by ``eps`` in its sign's direction (+eps at zero)."""
    return z + torch.where(z >= 0, eps, -eps)


def _ratio(relevance: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``relevance / a``, zero where ``a`` is zero (no gradient can carry relevance there)."""
    nonzero = a != 0
    return torch.where(nonzero, relevance / torch.where(nonzero, a, 1), 0)


class _Affine:
    """The affine operation of a Conv/ConvTranspose/Linear call, applicable to other weights
    (the rule's modified ones) and other inputs; its weight and bias are detached tensors or
    new ones (a merged batch norm), never the module's parameters themselves."""

    def __init__(self, module: nn.Module, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> None:
        self.module, self.weight, self.bias = module, weight, bias

    @staticmethod
    def of(module: nn.Module | None) -> _Affine | None:
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            bias = module.bias.detach() if module.bias is not None else None
            return _Affine(module, module.weight.detach(), bias)
        return None

    def __call__(self, a: torch.Tensor, weight: torch.Tensor,
                 bias: torch.Tensor | None) -> torch.Tensor:
        m = self.module
        if isinstance(m, nn.Linear):
            return torch.nn.functional.linear(a, weight, bias)
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            fn = (torch.nn.functional.conv_transpose1d, torch.nn.functional.conv_transpose2d,
                  torch.nn.functional.conv_transpose3d)[weight.dim() - 3]
            return fn(a, weight, bias, m.stride, m.padding,  # type: ignore[arg-type]
                      m.output_padding, m.groups, m.dilation)
        return m._conv_forward(a, weight, bias)  # type: ignore[operator]

    def merged(self, bn: nn.Module) -> _Affine | None:
        """This operation followed by the eval-mode batch norm ``bn``, as one (new tensors);
        None where they cannot merge (batch statistics, a transposed convolution)."""
        mean, var = getattr(bn, "running_mean", None), getattr(bn, "running_var", None)
        transposed = isinstance(self.module, nn.modules.conv._ConvTransposeNd)
        if not isinstance(mean, torch.Tensor) or not isinstance(var, torch.Tensor) or transposed:
            return None
        gain, offset = getattr(bn, "weight", None), getattr(bn, "bias", None)
        with torch.no_grad():
            scale = (var + float(bn.eps)).rsqrt()  # type: ignore[arg-type]
            if isinstance(gain, torch.Tensor):
                scale = gain * scale
            shift = -mean * scale
            if isinstance(offset, torch.Tensor):
                shift = shift + offset
            bias = shift if self.bias is None else self.bias * scale + shift
            weight = self.weight * scale.view(-1, *[1] * (self.weight.dim() - 1))
        return _Affine(self.module, weight.detach(), bias.detach())


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def _vjp(pieces: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """For ``(leaf, output, output gradient)`` triples, the gradient of each distinct leaf, in
    the order of their first appearance."""
    leaves = list({id(p[0]): p[0] for p in pieces}.values())
    grads = torch.autograd.grad([p[1] for p in pieces], leaves, [p[2] for p in pieces],
                                allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]


def _pos(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(min=0)


def _neg(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.clamp(max=0)


# one sign-split output: (weight for a+, bias, weight for a-, factor, output mask or None)
_Split = tuple[torch.Tensor, Union[torch.Tensor, None], torch.Tensor, float,
               Union[torch.Tensor, None]]


def _split(a: torch.Tensor, affine: _Affine, negative: bool, r: torch.Tensor, eps: float,
           specs: Sequence[_Split]) -> torch.Tensor:
    """The gradient for ``a`` of sign-split terms: each spec is the output ``o = f(a+; w+, b) +
    f(a-; w-, 0)``, which receives ``factor * mask * r / stabilized(o)``. One forward and one
    backward operation per piece; the ``a-`` pieces only where ``a`` has negative entries
    (never after a ReLU)."""
    ap = _leaf(a.clamp(min=0))
    an = _leaf(a.clamp(max=0)) if negative else None
    pieces = []
    for wp, b, wn, factor, mask in specs:
        group = [(ap, affine(ap, wp, b))]
        if an is not None:
            group.append((an, affine(an, wn, None)))
        den = sum(o.detach() for _, o in group)
        rel = r if mask is None else torch.where(mask, r, 0)
        s = rel / _stabilize(den, eps)  # type: ignore[arg-type]
        pieces += [(leaf, o, s if factor == 1 else factor * s) for leaf, o in group]
    grads = _vjp(pieces)
    return grads[0] if an is None else torch.where(a > 0, grads[0], grads[1])


class _Relevance(torch.autograd.Function):
    """Forward: the layer's output (a copy); backward: the rule's gradient for the input ``a``,
    or with a ``probe`` (the rule reads the model's input) the input relevance, to the probe."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, out: torch.Tensor, probe: torch.Tensor | None,
                rule: LRPRule, affine: _Affine | None) -> torch.Tensor:
        ctx.save_for_backward(a, out)
        ctx.rule, ctx.affine, ctx.probe = rule, affine, probe is not None
        ctx.negative = bool((a < 0).any())
        return out.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        a, z = ctx.saved_tensors
        with torch.enable_grad():
            grad_a, rel = ctx.rule._backward(a, z, z * g, ctx.affine, ctx.negative)
        if ctx.probe:
            return None, None, (a * grad_a if rel is None else rel), None, None
        return (_ratio(rel, a) if grad_a is None else grad_a), None, None, None, None


class _Scale(torch.autograd.Function):
    """Forward: ``z`` (a copy); backward: ``g * z / stabilized(z)`` into ``z``'s own graph
    (the epsilon rule through the layer's real backward), or ``g`` once ``switch[0]`` is off
    (the layer was merged with the batch norm after it, whose output carries the rule)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, eps: float, switch: list[bool]) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.eps, ctx.switch = eps, switch
        return z.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        if not ctx.switch[0]:
            return g, None, None
        (z,) = ctx.saved_tensors
        return g * (z / _stabilize(z, ctx.eps)), None, None


class LRPRule(Rule):
    """A layer-wise relevance propagation rule, the base of :class:`Epsilon`, :class:`ZPlus`,
    :class:`Gamma`, ...: with LRP rules on every layer (:func:`applied`), ``x * grad`` is the
    relevance the rules propagate to ``x``; :func:`netlens.attribution.lrp` adds canonization
    (batch norms merged into their layers) and composites.

    Attributes:
        stabilizer: added to each denominator with its sign, against division by zero.
    """

    affine = True  # whether the rule needs a Conv/ConvTranspose/Linear layer
    inputs: Literal["live", "copy"] = "live"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = float(stabilizer)

    def apply(self, call: Call, hooks: HookDict) -> Any:
        a = call.inputs[0] if call.inputs else None
        out = first_tensor(call.output)
        if not isinstance(a, torch.Tensor) or out is None or not out.requires_grad:
            return None
        return self.node(a, out, _Affine.of(call.module), None, name=call.name)

    def node(self, a: torch.Tensor, out: torch.Tensor, affine: _Affine | None,
             probe: torch.Tensor | None, *, name: str = "", switch: list[bool] | None = None,
             ) -> torch.Tensor:
        """The replacement of a call's output ``out`` (input ``a``, affine operation
        ``affine``); with a ``probe``, the input relevance goes to the probe; ``switch``: the
        epsilon rule's off switch (for a batch norm merge)."""
        if self.affine and affine is None:
            raise TypeError(f"the {type(self).__name__} rule needs a Conv or Linear layer, but "
                            f"{name!r} is not one; give it Epsilon() or Pass()")
        return _Relevance.apply(a, out.detach(), probe, self, affine)

    def _backward(self, a: torch.Tensor, z: torch.Tensor, r: torch.Tensor,
                  affine: Any, negative: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(gradient for a, None)`` or ``(None, relevance of a)`` from the relevance ``r``
        of the output ``z``; ``negative``: whether ``a`` has negative entries."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.stabilizer:g})"


class Epsilon(LRPRule):
    """LRP-epsilon (Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier
    Decisions by Layer-Wise Relevance Propagation", PLoS ONE 2015):
    ``R_in = a * J^T (R / (z + eps sign z))`` for any layer (through its own backward, so a
    bias absorbs its share).

    Args:
        epsilon: the stabilizer ``eps`` (0: LRP-0).
    """

    affine = False

    def __init__(self, epsilon: float = 1e-6) -> None:
        super().__init__(epsilon)

    def node(self, a: torch.Tensor, out: torch.Tensor, affine: _Affine | None,
             probe: torch.Tensor | None, *, name: str = "", switch: list[bool] | None = None,
             ) -> torch.Tensor:
        return _Scale.apply(out, self.stabilizer, [True] if switch is None else switch)


class Norm(Epsilon):
    """LRP's rule for parameter-free linear layers such as average pooling (zennit's
    ``Norm``): each input gets relevance in proportion to its contribution,
    ``R_in = a * J^T (R / stabilized(z))``."""

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer)


class ZPlus(LRPRule):
    """LRP-z+ (Montavon et al., "Explaining nonlinear classification decisions with deep
    Taylor decomposition", Pattern Recognition 2017), as alpha=1, beta=0: only positive
    contributions (``a+ w+``, ``a- w-`` and a positive bias) share the relevance."""

    def _backward(self, a: torch.Tensor, z: torch.Tensor, r: torch.Tensor,
                  affine: Any, negative: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        w = affine.weight
        spec = (w.clamp(min=0), _pos(affine.bias), w.clamp(max=0), 1.0, None)
        return _split(a, affine, negative, r, self.stabilizer, [spec]), None


class AlphaBeta(LRPRule):
    """LRP-alpha-beta (Bach et al. 2015): positive contributions share ``alpha`` times the
    relevance, negative ones ``-beta`` times it (``alpha - beta = 1``).

    Raises:
        ValueError: negative parameters or ``alpha - beta != 1``.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> None:
        if alpha < 0 or beta < 0 or alpha - beta != 1:
            raise ValueError(f"AlphaBeta needs alpha, beta >= 0 with alpha - beta = 1 (relevance "
                             f"is conserved), got alpha={alpha}, beta={beta}")
        super().__init__(stabilizer)
        self.alpha, self.beta = float(alpha), float(beta)

    def _backward(self, a: torch.Tensor, z: torch.Tensor, r: torch.Tensor,
                  affine: Any, negative: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        w, b = affine.weight, affine.bias
        wp, wn = w.clamp(min=0), w.clamp(max=0)
        specs = [(wp, _pos(b), wn, self.alpha, None), (wn, _neg(b), wp, -self.beta, None)]
        return _split(a, affine, negative, r, self.stabilizer, specs), None

    def __repr__(self) -> str:
        return f"AlphaBeta({self.alpha:g}, {self.beta:g})"


class Gamma(LRPRule):
    """Generalized LRP-gamma (Montavon et al., "Layer-Wise Relevance Propagation: An
    Overview", 2019; Andéol et al. 2021): weights ``w + gamma w+`` favour the positive
    contributions to a positive output (``w + gamma w-`` the negative ones to a negative one).
    """

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer)
        self.gamma = float(gamma)

    def _backward(self, a: torch.Tensor, z: torch.Tensor, r: torch.Tensor,
                  affine: Any, negative: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        w, b, gm = affine.weight, affine.bias, self.gamma
        up, down = w + gm * w.clamp(min=0), w + gm * w.clamp(max=0)
        bup = None if b is None else b + gm * b.clamp(min=0)
        bdown = None if b is None else b + gm * b.clamp(max=0)
        specs = [(up, bup, down, 1.0, z > 0), (down, bdown, up, 1.0, z < 0)]
        return _split(a, affine, negative, r, self.stabilizer, specs), None

    def __repr__(self) -> str:
        return f"Gamma({self.gamma:g})"


class ZBox(LRPRule):
    """LRP-z^B for inputs in a box (Montavon et al. 2017), for the first layer:
    ``R_in = a W^T s - low W+^T s - high W-^T s``, ``s = R / (z - f(low; W+) - f(high; W-))``.

    Args:
        low: the lowest input value: a float, or a tensor broadcastable to one input
            ``(1, C, H, W)`` (per channel: ``(1, C, 1, 1)``).
        high: the highest input value, as ``low``.
    """

    def __init__(self, low: float | torch.Tensor, high: float | torch.Tensor,
                 stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer)
        self.low, self.high = low, high

    def _backward(self, a: torch.Tensor, z: torch.Tensor, r: torch.Tensor,
                  affine: Any, negative: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        w, b = affine.weight, affine.bias
        low, high = (torch.as_tensor(v, dtype=a.dtype, device=a.device).expand_as(a)
                     for v in (self.low, self.high))
        la, ll, lh = _leaf(a), _leaf(low), _leaf(high)
        oa = affine(la, w, b)
        ol, oh = affine(ll, w.clamp(min=0), _pos(b)), affine(lh, w.clamp(max=0), _neg(b))
        s = r / _stabilize((oa - ol - oh).detach(), self.stabilizer)
        ga, gl, gh = _vjp([(la, oa, s), (ll, ol, s), (lh, oh, s)])
        # detached: the relevance is a value, not part of a graph to differentiate again
        return None, (a * ga - low * gl - high * gh).detach()

    def __repr__(self) -> str:
        return "ZBox(low, high)"


class Flat(LRPRule):
    """LRP-flat (Lapuschkin et al., "Unmasking Clever Hans predictors", Nature Communications
    2019), for the first layer: each output's relevance spread evenly over its receptive field
    (unit weights and inputs)."""

    def _weights(self, affine: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        return torch.ones_like(affine.weight), None

    def _backward(self, a: torch.Tensor, z: torch.Tensor, r: torch.Tensor,
                  affine: Any, negative: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        w, b = self._weights(affine)
        ones = _leaf(torch.ones_like(a))
        o = affine(ones, w, b)
        s = r / _stabilize(o.detach(), self.stabilizer)
        return None, _vjp([(ones, o, s)])[0]


class WSquare(Flat):
    """LRP-w^2 (Montavon et al. 2017), for an unbounded first layer: relevance shared in
    proportion to the squared weights whatever the input (the bias squared too, as zennit's
    ``WSquare``)."""

    def _weights(self, affine: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        return affine.weight ** 2, None if affine.bias is None else affine.bias ** 2


class Pass(LRPRule):
    """Relevance passes unchanged (``R_in = R_out``) through an elementwise layer: an
    activation, an unmerged normalization, a gate (a squeeze-excitation block's scale taken as
    constant). The layer's output must have its input's shape."""

    affine = False
    inputs: Literal["live", "copy"] = "copy"  # an in-place activation overwrites its input

    def __init__(self) -> None:
        super().__init__(0.0)

    def node(self, a: torch.Tensor, out: torch.Tensor, affine: _Affine | None,
             probe: torch.Tensor | None, *, name: str = "", switch: list[bool] | None = None,
             ) -> torch.Tensor:
        if a.shape != out.shape:
            raise ValueError(f"the Pass rule needs a layer whose output has its input's shape; "
                             f"{name!r} maps {tuple(a.shape)} to {tuple(out.shape)}")
        return super().node(a, out, affine, probe, name=name)

    def _backward(self, a: torch.Tensor, z: torch.Tensor, r: torch.Tensor,
                  affine: Any, negative: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return None, r

    def __repr__(self) -> str:
        return "Pass()"
