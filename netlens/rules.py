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

__all__ = ["Rule", "Guided", "Deconv", "Redirected", "RELUS", "Selector", "applied", "select"]

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
    modules = dict(fm.model.named_modules())
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
    modules = dict(fm.model.named_modules())
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
