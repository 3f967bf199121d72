"""Type stub of netlens.interpret, generated from netlens.attribution.METHODS by
``python -c "import netlens.interpret as i; i.write_stub()"``; do not edit (the tests check that
it is current)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from .adapter import LayoutLike
from .attribution.cam import Fuse, Interpolate, Layers
from .attribution.extremal import Areas, ExtremalVariant
from .attribution.gradients import IGMethod, SmoothVariant
from .attribution.noise_tunnel import TunnelVariant
from .attribution.occlusion import OcclusionScore, Size2
from .attribution.path_methods import Padding
from .attribution.xrai import SegmentsArg, XraiAttribution
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

    def noise_tunnel(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        method: str | Callable[..., torch.Tensor] = 'saliency',
        n: int = 50,
        sigma: float = 0.15,
        variant: TunnelVariant = 'mean',
        options: Mapping[str, Any] | None = None,
        noise: torch.Tensor | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...

    def blur_ig(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        steps: int = 100,
        max_sigma: float = 50.0,
        padding: Padding = 'constant',
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor: ...

    def guided_ig(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        steps: int = 200,
        baseline: object = None,
        fraction: float = 0.25,
        max_dist: float = 0.02,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor: ...

    def gradcam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
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
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor: ...

    def xgradcam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor: ...

    def layercam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor: ...

    def hirescam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor: ...

    def scorecam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        baseline: float | torch.Tensor = 0.0,
    ) -> torch.Tensor: ...

    def eigencam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor: ...

    def gradcam_elementwise(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor: ...

    def eigengradcam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor: ...

    def cam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor: ...

    def ablationcam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor: ...

    def sscam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        layout: LayoutLike | None = None,
        n: int = 35,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        sigma: float = 2.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...

    def iscam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        layout: LayoutLike | None = None,
        n: int = 10,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor: ...

    def smoothgradcam_pp(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        progress: bool | None = None,
        layout: LayoutLike | None = None,
        n: int = 4,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        sigma: float = 0.15,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...

    def kpcacam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        kernel: str = 'sigmoid',
        gamma: float | None = None,
    ) -> torch.Tensor: ...

    def shapleycam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor: ...

    def finercam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        alpha: float = 1.0,
        comparisons: Sequence[int] = (1, 2, 3),
    ) -> torch.Tensor: ...

    def fullgrad(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        normalize: bool = False,
        batch_size: int | None = None,
        per_channel: bool = False,
    ) -> torch.Tensor: ...

    def randomcam(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        layer: Layers = None,
        interpolate: Interpolate = True,
        relu: bool = True,
        normalize: bool = False,
        batch_size: int | None = None,
        layout: LayoutLike | None = None,
        generator: torch.Generator | None = None,
        fuse: Fuse = 'mean',
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
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

    def extremal_perturbation(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        areas: Areas = 0.1,
        steps: int = 800,
        variant: ExtremalVariant = 'preserve',
        stride: int | None = None,
        sigma: float | None = None,
        max_blur: float | None = None,
        levels: int = 8,
        jitter: bool = True,
        learning_rate: float | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> torch.Tensor: ...

    def xrai(
        self,
        x: torch.Tensor,
        target: TargetLike = None,
        *,
        attribution: XraiAttribution = 'integrated_gradients',
        options: Mapping[str, Any] | None = None,
        segments: SegmentsArg = None,
        min_pixels: int = 50,
        dilation: int = 5,
        output: Literal['gains', 'ranks'] = 'gains',
        progress: bool | None = None,
    ) -> torch.Tensor: ...

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
