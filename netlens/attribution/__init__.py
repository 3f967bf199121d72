"""Attribution methods: pure functions ``f(model, x, target, *, options) -> Tensor``.

Each takes an ``nn.Module`` or a :class:`~netlens.FlatModel`, a batch ``(B, C, H, W)`` and a
target (int, one per image, None for the predicted class, or a callable), and returns a raw
tensor on ``x``'s device: ``(B, C, H, W)`` for input attributions, ``(B, 1, H, W)`` for CAMs and
occlusion. :data:`METHODS` is the read-only registry that feeds ``NetLens``, the command line
and the generated contract tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ._core import AttributionMethod, Target, resolve_target
from .cam import (
    eigencam,
    gradcam,
    gradcam_pp,
    guided_gradcam,
    hirescam,
    layercam,
    scorecam,
    xgradcam,
)
from .gradients import (
    NetlensWarning,
    guided_backprop,
    input_x_gradient,
    integrated_gradients,
    layer_channel_gradient,
    saliency,
    smooth_grad,
)
from .occlusion import occlusion

METHODS: Mapping[str, AttributionMethod] = MappingProxyType({
    "saliency": saliency,
    "input_x_gradient": input_x_gradient,
    "guided_backprop": guided_backprop,
    "smooth_grad": smooth_grad,
    "integrated_gradients": integrated_gradients,
    "gradcam": gradcam,
    "guided_gradcam": guided_gradcam,
    "gradcam_pp": gradcam_pp,
    "xgradcam": xgradcam,
    "layercam": layercam,
    "hirescam": hirescam,
    "scorecam": scorecam,
    "eigencam": eigencam,
    "occlusion": occlusion,
})
"""Every attribution method with the common signature, by name."""

CAM_METHODS: frozenset[str] = frozenset(
    {"gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "scorecam", "eigencam"})
"""Methods whose result is a class activation map ``(B, 1, H, W)``."""

__all__ = [
    "AttributionMethod", "Target", "resolve_target", "NetlensWarning", "METHODS", "CAM_METHODS",
    "saliency", "input_x_gradient", "guided_backprop", "smooth_grad", "integrated_gradients",
    "layer_channel_gradient", "gradcam", "guided_gradcam", "gradcam_pp", "xgradcam", "layercam",
    "hirescam", "scorecam", "eigencam", "occlusion",
]
