"""``NetLens``: one object, every attribution method, for one model.

A thin facade: each method calls the pure function of the same name in
:mod:`netlens.attribution` with the lens's :class:`~netlens.FlatModel`, so the layers are found
once and the functions stay usable on their own.

Example:
    >>> import torch, torchvision
    >>> lens = NetLens(torchvision.models.resnet18().eval())
    >>> x = torch.rand(2, 3, 64, 64)
    >>> lens.saliency(x, [3, 7]).shape, lens.gradcam(x, 3).shape
    (torch.Size([2, 3, 64, 64]), torch.Size([2, 1, 64, 64]))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import attribution as A
from .attribution import Target
from .flat_model import FlatModel

__all__ = ["NetLens"]


class NetLens:
    """Attributions for one model.

    Args:
        model: any classifier ``nn.Module`` (or a :class:`~netlens.FlatModel`). It is never
            changed: not its mode, flags, hooks or parameters.
        example_input: optional input used once to find the layers (otherwise the first call's
            input is used).
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor | None = None) -> None:
        self.fm = model if isinstance(model, FlatModel) else FlatModel(model, example_input)

    @property
    def model(self) -> nn.Module:
        return self.fm.model

    def attribute(self, method: str, x: torch.Tensor, target: Target = None,
                  **options: Any) -> torch.Tensor:
        """Runs the method registered as ``method`` in :data:`netlens.attribution.METHODS`."""
        if method not in A.METHODS:
            import difflib

            close = difflib.get_close_matches(method, list(A.METHODS), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"unknown attribution method {method!r}{hint} (available: "
                             f"{', '.join(A.METHODS)})")
        return A.METHODS[method](self.fm, x, target, **options)

    # -- gradients ---------------------------------------------------------------------------
    def saliency(self, x: torch.Tensor, target: Target = None, **options: Any) -> torch.Tensor:
        """Vanilla gradient ``(B, C, H, W)``; see :func:`netlens.attribution.saliency`."""
        return A.saliency(self.fm, x, target, **options)

    def input_x_gradient(self, x: torch.Tensor, target: Target = None,
                         **options: Any) -> torch.Tensor:
        """Input × gradient ``(B, C, H, W)``."""
        return A.input_x_gradient(self.fm, x, target, **options)

    def guided_backprop(self, x: torch.Tensor, target: Target = None,
                        **options: Any) -> torch.Tensor:
        """Guided backpropagation ``(B, C, H, W)``, exact on every ReLU call."""
        return A.guided_backprop(self.fm, x, target, **options)

    def smooth_grad(self, x: torch.Tensor, target: Target = None, **options: Any) -> torch.Tensor:
        """SmoothGrad ``(B, C, H, W)``: ``n=50, sigma=0.15, guided=False, variant="mean"``."""
        return A.smooth_grad(self.fm, x, target, **options)

    def integrated_gradients(self, x: torch.Tensor, target: Target = None,
                             **options: Any) -> Any:
        """Integrated gradients ``(B, C, H, W)``: ``steps=50, baseline=None``; with
        ``return_delta=True`` also the completeness error ``(B,)``."""
        return A.integrated_gradients(self.fm, x, target, **options)

    def layer_channel_gradient(self, x: torch.Tensor, layer: str, channel: int,
                               **options: Any) -> torch.Tensor:
        """Input gradient of one channel of one layer ``(B, C, H, W)``."""
        return A.layer_channel_gradient(self.fm, x, layer=layer, channel=channel, **options)

    # -- CAMs and occlusion ------------------------------------------------------------------
    def gradcam(self, x: torch.Tensor, target: Target = None, **options: Any) -> torch.Tensor:
        """Grad-CAM ``(B, 1, H, W)``: ``layer=None`` (the last spatial layer),
        ``interpolate=True``."""
        return A.gradcam(self.fm, x, target, **options)

    def guided_gradcam(self, x: torch.Tensor, target: Target = None,
                       **options: Any) -> torch.Tensor:
        """Guided Grad-CAM ``(B, C, H, W)``."""
        return A.guided_gradcam(self.fm, x, target, **options)

    def gradcam_pp(self, x: torch.Tensor, target: Target = None, **options: Any) -> torch.Tensor:
        """Grad-CAM++ ``(B, 1, H, W)``."""
        return A.gradcam_pp(self.fm, x, target, **options)

    def xgradcam(self, x: torch.Tensor, target: Target = None, **options: Any) -> torch.Tensor:
        """XGrad-CAM ``(B, 1, H, W)``."""
        return A.xgradcam(self.fm, x, target, **options)

    def layercam(self, x: torch.Tensor, target: Target = None, **options: Any) -> torch.Tensor:
        """LayerCAM ``(B, 1, H, W)``."""
        return A.layercam(self.fm, x, target, **options)

    def hirescam(self, x: torch.Tensor, target: Target = None, **options: Any) -> torch.Tensor:
        """HiResCAM ``(B, 1, H, W)``."""
        return A.hirescam(self.fm, x, target, **options)

    def scorecam(self, x: torch.Tensor, target: Target = None, **options: Any) -> torch.Tensor:
        """Score-CAM ``(B, 1, H, W)`` (gradient-free)."""
        return A.scorecam(self.fm, x, target, **options)

    def eigencam(self, x: torch.Tensor, target: Target = None, **options: Any) -> torch.Tensor:
        """Eigen-CAM ``(B, 1, H, W)`` (gradient-free; the target is not used)."""
        return A.eigencam(self.fm, x, target, **options)

    def occlusion(self, x: torch.Tensor, target: Target = None, **options: Any) -> torch.Tensor:
        """Occlusion ``(B, 1, H, W)``: drop of the target score, ``window=32, stride=16,
        baseline=0.0``."""
        return A.occlusion(self.fm, x, target, **options)

    def __repr__(self) -> str:
        return f"NetLens({type(self.model).__name__})"
