"""Type stub of netlens.interpret, generated from netlens.attribution.METHODS by
``python -c "import netlens.interpret as i; i.write_stub()"``; do not edit (the tests check that
it is current)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from .adapter import LayoutLike
from .attribution.cam import Interpolate
from .attribution.gradients import IGMethod, SmoothVariant
from .attribution.occlusion import OcclusionScore, Size2
from .flat_model import FlatModel
from .segments import Cells, SegmentsLike
from .targets import TargetLike

__all__ = ["NetLens"]


class NetLens:
    fm: FlatModel
    def __init__(self, model: nn.Module, example_input: torch.Tensor | None = None) -> None: ...
    @property
    def model(self) -> nn.Module: ...
    def attribute(self, method: str, x: torch.Tensor, target: TargetLike = None,
                  **options: Any) -> torch.Tensor: ...
    def layer_channel_gradient(self, x: torch.Tensor, layer: str, channel: int,
                               reduce: Literal["mean", "sum"] = "mean", guided: bool = False,
                               batch_size: int | None = None) -> torch.Tensor: ...

    def saliency(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        abs: bool = False,
        batch_size: int | None = None,
    ) -> torch.Tensor: ...

    def input_x_gradient(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        guided: bool = False,
        batch_size: int | None = None,
    ) -> torch.Tensor: ...

    def guided_backprop(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        batch_size: int | None = None,
    ) -> torch.Tensor: ...

    def deconvnet(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        batch_size: int | None = None,
    ) -> torch.Tensor: ...

    def smooth_grad(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        n: int = 50,
        sigma: float = 0.15,
        guided: bool = False,
        variant: SmoothVariant = 'mean',
        batch_size: int | None = None,
        progress: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...

    def integrated_gradients(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        steps: int = 50,
        baseline: object = None,
        method: IGMethod = 'gausslegendre',
        guided: bool = False,
        return_delta: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...

    def gradcam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor: ...

    def guided_gradcam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor: ...

    def gradcam_pp(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor: ...

    def xgradcam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor: ...

    def layercam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor: ...

    def hirescam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor: ...

    def scorecam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        layout: LayoutLike | None = None,
        baseline: float | torch.Tensor = 0.0,
    ) -> torch.Tensor: ...

    def eigencam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor: ...

    def gradcam_elementwise(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor: ...

    def eigengradcam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor: ...

    def cam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor: ...

    def ablationcam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        layout: LayoutLike | None = None,
    ) -> torch.Tensor: ...

    def sscam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        layout: LayoutLike | None = None,
        n: int = 35,
        sigma: float = 2.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...

    def iscam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        layout: LayoutLike | None = None,
        n: int = 10,
    ) -> torch.Tensor: ...

    def smoothgradcam_pp(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        layout: LayoutLike | None = None,
        n: int = 4,
        sigma: float = 0.15,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...

    def randomcam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: str | None = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...

    def lrp(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        composite: str = 'epsilon_plus',
        rules: Any = None,
        epsilon: float = 1e-06,
        gamma: float = 0.25,
        low: float | torch.Tensor | None = None,
        high: float | torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor: ...

    def deeplift(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        baseline: object = None,
        return_delta: bool = False,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...

    def deeplift_shap(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        baselines: object = None,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...

    def gradient_shap(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        baselines: object = None,
        n: int = 50,
        stdev: float = 0.0,
        batch_size: int | None = None,
        progress: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...

    def excitation_backprop(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        contrastive: bool = False,
        batch_size: int | None = None,
    ) -> torch.Tensor: ...

    def occlusion(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        window: Size2 | None = None,
        stride: Size2 | None = None,
        baseline: float | torch.Tensor = 0.0,
        score: OcclusionScore = 'drop',
        return_classes: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...

    def feature_ablation(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        mask: SegmentsLike = None,
        baseline: float | torch.Tensor = 0.0,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor: ...

    def rise(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        n: int = 4000,
        cells: Cells = 7,
        p: float = 0.5,
        batch_size: int | None = None,
        progress: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...

    def lime(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        n: int | None = None,
        kernel_width: float = 1.0,
        segments: SegmentsLike = None,
        baseline: float | torch.Tensor = 0.0,
        alpha: float = 0.0,
        return_coefficients: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        generator: torch.Generator | None = None,
        samples: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...

    def kernel_shap(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        n: int | None = None,
        segments: SegmentsLike = None,
        baseline: float | torch.Tensor = 0.0,
        return_coefficients: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        generator: torch.Generator | None = None,
        samples: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...

    def shapley_sampling(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        n_permutations: int = 25,
        segments: SegmentsLike = None,
        baseline: float | torch.Tensor = 0.0,
        permutations: torch.Tensor | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...
