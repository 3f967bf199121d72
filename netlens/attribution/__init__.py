"""Attribution methods: pure functions ``f(model, x, target, *, options) -> Tensor``."""

from __future__ import annotations

from ._core import AttributionMethod, Target, resolve_target
from .gradients import NetlensWarning, guided_backprop, input_x_gradient, saliency

__all__ = [
    "AttributionMethod", "Target", "resolve_target", "NetlensWarning", "saliency",
    "input_x_gradient", "guided_backprop",
]
