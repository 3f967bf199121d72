"""The method registry's entries: what each attribution method *is*, read by everything that
lists methods (``NetLens``, :mod:`netlens.metrics`, the command line, the demo, the gallery,
the generated contract tests).

A :class:`MethodSpec` is callable like the function it describes, so ``METHODS[name](model, x,
target, **options)`` runs the method. Adding a method is one module (its function) plus one
:class:`MethodSpec` in :data:`netlens.attribution.METHODS`.

Example:
    >>> from netlens.attribution import METHODS
    >>> spec = METHODS["gradcam"]
    >>> spec.output, spec.family, spec.layer, spec.gradients
    ('map', 'cam', True, True)
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, Protocol

import torch
from torch import nn

from ..targets import TargetLike

__all__ = ["AttributionMethod", "MethodSpec", "Family", "OutputKind"]

OutputKind = Literal["input", "map"]
Family = Literal["gradient", "cam", "perturbation", "rule", "transformer"]


class AttributionMethod(Protocol):
    """The signature every attribution method follows."""

    def __call__(self, model: nn.Module, x: torch.Tensor, target: TargetLike = None,
                 **options: Any) -> torch.Tensor: ...


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One attribution method and what it is.

    Attributes:
        name: the registry name (``"gradcam"``).
        fn: the pure function ``fn(model, x, target, **options) -> Tensor``.
        output: ``"input"``: an input attribution ``(B, C, H, W)``; ``"map"``: one map per image
            ``(B, 1, H, W)`` (CAMs, occlusion). With K targets per image both gain a K axis.
        family: ``"gradient"``, ``"cam"``, ``"perturbation"``, ``"rule"`` or ``"transformer"``.
        layer: whether it reads a layer of the model (takes ``layer=`` and ``layout=``).
        rules: whether it changes backward rules of the model's calls (guided backprop), so
            it needs the model's modules (not a TorchScript archive).
        gradients: whether it needs gradients of the model.
        stochastic: whether its result is random by default (it then takes ``generator=``;
            a method may take one for optional random baselines without being stochastic).
        progress: whether it takes ``progress=`` (long, multiplied passes).
        attention: whether it is defined on transformer layers (LayerNorm, attention); a
            method with ``attention=False`` (a rule method whose rules cover convolutional
            networks) raises a ``ValueError`` naming the first layer it has no rule for.
        linear_head: whether it needs a global-average-pool + linear classifier after its
            layer (the original CAM); on other heads it raises a ``ValueError`` that says so.
        classifier: whether it needs a classifier: ``(B, N)`` logits with ``N > 1`` and a
            class target of them (it compares classes, or reads the classifier's weights);
            on other models and targets it raises a ``ValueError`` that says so.
        cheap: options that make it fast enough for demos and tests (few steps, samples or
            windows), e.g. ``{"n": 4}``.
        paper: the reference: authors, title, venue and year.
        summary: one line for tables and ``--help``.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    output: OutputKind
    family: Family
    paper: str
    summary: str
    layer: bool = False
    rules: bool = False
    gradients: bool = True
    stochastic: bool = False
    progress: bool = False
    attention: bool = True
    linear_head: bool = False
    classifier: bool = False
    cheap: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        params = self.parameters
        if self.stochastic and "generator" not in params:
            raise ValueError(f"{self.name}: stochastic methods take generator=")
        for flag, option in (("layer", "layer"), ("layer", "layout"), ("progress", "progress")):
            if getattr(self, flag) != (option in params):
                raise ValueError(f"{self.name}: {flag}={getattr(self, flag)} but the function "
                                 f"{'does not take' if getattr(self, flag) else 'takes'} "
                                 f"{option}=")
        unknown = set(self.cheap) - set(params)
        if unknown:
            raise ValueError(f"{self.name}: cheap options {sorted(unknown)} are not options of "
                             "the function")
        object.__setattr__(self, "cheap", MappingProxyType(dict(self.cheap)))

    @property
    def restricted(self) -> bool:
        """Whether the method is defined on some models and targets only (``attention=False``,
        ``linear_head`` or ``classifier``), refusing the others with a ``ValueError``."""
        return not self.attention or self.linear_head or self.classifier

    def __call__(self, model: nn.Module, x: torch.Tensor, target: TargetLike = None,
                 **options: Any) -> torch.Tensor:
        return self.fn(model, x, target, **options)

    @property
    def parameters(self) -> Mapping[str, inspect.Parameter]:
        """The function's keyword options (everything after ``target``)."""
        params = inspect.signature(self.fn).parameters
        return MappingProxyType({k: p for k, p in params.items()
                                 if k not in ("model", "x", "target")})

    @property
    def signature(self) -> inspect.Signature:
        """The function's signature without ``model`` (the signature of ``NetLens.<name>``)."""
        sig = inspect.signature(self.fn)
        return sig.replace(parameters=[p for k, p in sig.parameters.items() if k != "model"])

    def options_for(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``given`` that this method takes."""
        return {k: v for k, v in given.items() if k in self.parameters}

    @property
    def __doc__(self) -> str | None:  # type: ignore[override]
        return self.fn.__doc__
