"""Attribution methods: pure functions ``f(model, x, target, *, options) -> Tensor``.

Each takes an ``nn.Module`` or a :class:`~netlens.FlatModel`, a batch ``(B, C, H, W)`` and a
target (:mod:`netlens.targets`: a class index, one per image, None for the predicted class, a
segmentation, detection, similarity, regression or channel target, or several per image), and
returns a raw tensor on ``x``'s device: ``(B, C, H, W)`` for input attributions, ``(B, 1, H, W)``
for CAMs and occlusion (with K targets per image, a K axis after the batch).

:data:`METHODS` is the read-only registry of :class:`~netlens.attribution.registry.MethodSpec`
entries (the function and what it is) that feeds ``NetLens``, the metrics, the command line,
the demo, the gallery and the generated contract tests. A new method is one module plus one
entry here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TypedDict

import torch

from .._util import NetlensWarning
from ..targets import Class, TargetLike, as_target
from .cam import (
    AUGMENTATIONS,
    CamContext,
    Fuse,
    Layers,
    cam_driver,
    eigencam,
    gradcam,
    gradcam_pp,
    guided_gradcam,
    hirescam,
    layercam,
    scorecam,
    xgradcam,
)
from .cam_variants import (
    ablationcam,
    class_activation_map,
    eigengradcam,
    finercam,
    fullgrad,
    gradcam_elementwise,
    iscam,
    kpcacam,
    randomcam,
    shapleycam,
    smoothgradcam_pp,
    sscam,
)
from .deconvnet import deconvnet
from .deeplift import deeplift, deeplift_shap
from .excitation import excitation_backprop
from .extremal import extremal_perturbation
from .factorization import Factorization, deep_feature_factorization
from .gradients import (
    baseline_image,
    guided_backprop,
    input_x_gradient,
    integrated_gradients,
    layer_channel_gradient,
    saliency,
    smooth_grad,
)
from .lrp import lrp
from .noise_tunnel import noise_tunnel
from .occlusion import occlusion
from .path_methods import blur_ig, guided_ig
from .perturbation import feature_ablation, feature_permutation, shapley_sampling
from .registry import AttributionMethod, Family, MethodSpec, OutputKind
from .rise import rise
from .shap import gradient_shap
from .surrogate import kernel_shap, lime
from .xrai import xrai

Target = TargetLike
"""What ``target=`` accepts (see :mod:`netlens.targets`)."""

_SELVARAJU = ("Selvaraju et al., \"Grad-CAM: Visual Explanations from Deep Networks via "
              "Gradient-based Localization\", ICCV 2017")


class _SpecFields(TypedDict):
    """The :class:`MethodSpec` fields that all CAMs share."""

    output: OutputKind
    family: Family
    layer: bool


_CAM: _SpecFields = {"output": "map", "family": "cam", "layer": True}

_SPECS = [
    MethodSpec("saliency", saliency, "input", "gradient",
               "Simonyan et al., \"Deep Inside Convolutional Networks\", ICLR workshop 2014",
               "the gradient of the target score w.r.t. the input"),
    MethodSpec("input_x_gradient", input_x_gradient, "input", "gradient",
               "Shrikumar et al., \"Not Just a Black Box\", arXiv 2016",
               "input times its gradient"),
    MethodSpec("guided_backprop", guided_backprop, "input", "gradient",
               "Springenberg et al., \"Striving for Simplicity: The All Convolutional Net\", "
               "ICLR workshop 2015",
               "the gradient with only positive gradients through every ReLU", rules=True),
    MethodSpec("deconvnet", deconvnet, "input", "gradient",
               "Zeiler & Fergus, \"Visualizing and Understanding Convolutional Networks\", "
               "ECCV 2014",
               "the gradient with relu(gradient) through every ReLU, unmasked", rules=True),
    MethodSpec("smooth_grad", smooth_grad, "input", "gradient",
               "Smilkov et al., \"SmoothGrad: removing noise by adding noise\", arXiv 2017",
               "the gradient averaged over noisy copies of the input", stochastic=True,
               progress=True, cheap={"n": 4}),
    MethodSpec("integrated_gradients", integrated_gradients, "input", "gradient",
               "Sundararajan et al., \"Axiomatic Attribution for Deep Networks\", ICML 2017",
               "the gradient integrated along the path from a baseline",
               progress=True, cheap={"steps": 8}),
    MethodSpec("noise_tunnel", noise_tunnel, "input", "gradient",
               "Smilkov et al., \"SmoothGrad: removing noise by adding noise\", arXiv 2017 "
               "(Captum's NoiseTunnel; VarGrad: Adebayo et al., ICLR workshop 2018)",
               "any method averaged over noisy copies of the input (mean, squared or variance)",
               stochastic=True, progress=True, cheap={"n": 2}),
    MethodSpec("blur_ig", blur_ig, "input", "gradient",
               "Xu, Venugopalan & Sundararajan, \"Attribution in Scale and Space\", CVPR 2020",
               "the gradient integrated along a path of decreasing Gaussian blur",
               progress=True, cheap={"steps": 4}),
    MethodSpec("guided_ig", guided_ig, "input", "gradient",
               "Kapishnikov et al., \"Guided Integrated Gradients: an Adaptive Path Method for "
               "Removing Noise\", CVPR 2021",
               "integrated gradients along a path that moves the lowest-gradient features first",
               progress=True, cheap={"steps": 4}),
    MethodSpec("gradcam", gradcam, paper=_SELVARAJU,
               summary="channels weighted by the mean gradient", **_CAM),
    MethodSpec("guided_gradcam", guided_gradcam, "input", "cam", _SELVARAJU,
               "guided backprop times the Grad-CAM map", layer=True, rules=True),
    MethodSpec("gradcam_pp", gradcam_pp,
               paper="Chattopadhyay et al., \"Grad-CAM++: Improved Visual Explanations for Deep "
                     "Convolutional Networks\", WACV 2018",
               summary="positive gradients weighted by closed-form alphas", **_CAM),
    MethodSpec("xgradcam", xgradcam,
               paper="Fu et al., \"Axiom-based Grad-CAM\", BMVC 2020",
               summary="gradients weighted by normalized activations", **_CAM),
    MethodSpec("layercam", layercam,
               paper="Jiang et al., \"LayerCAM: Exploring Hierarchical Class Activation Maps "
                     "for Localization\", IEEE TIP 2021",
               summary="positive gradients times activations per position", **_CAM),
    MethodSpec("hirescam", hirescam,
               paper="Draelos & Carin, \"Use HiResCAM instead of Grad-CAM for faithful "
                     "explanations\", arXiv 2020",
               summary="gradients times activations per position", **_CAM),
    MethodSpec("scorecam", scorecam,
               paper="Wang et al., \"Score-CAM: Score-Weighted Visual Explanations for "
                     "Convolutional Neural Networks\", CVPR workshops 2020",
               summary="channels weighted by the score of the image they mask",
               gradients=False, progress=True, **_CAM),
    MethodSpec("eigencam", eigencam,
               paper="Muhammad & Yeasin, \"Eigen-CAM: Class Activation Map using Principal "
                     "Components\", IJCNN 2020",
               summary="the first principal component of the activations (class-agnostic)",
               gradients=False, **_CAM),
    MethodSpec("gradcam_elementwise", gradcam_elementwise,
               paper="Gildenblat et al., \"PyTorch library for CAM methods\" (pytorch-grad-cam), "
                     "2021",
               summary="positive gradient-activation products per position", **_CAM),
    MethodSpec("eigengradcam", eigengradcam,
               paper="Muhammad & Yeasin, \"Eigen-CAM\", IJCNN 2020 (the gradient form of "
                     "pytorch-grad-cam)",
               summary="the first principal component of gradients times activations", **_CAM),
    MethodSpec("cam", class_activation_map,
               paper="Zhou et al., \"Learning Deep Features for Discriminative Localization\", "
                     "CVPR 2016",
               summary="channels weighted by the classifier's weights of the class",
               gradients=False, linear_head=True, classifier=True, **_CAM),
    MethodSpec("ablationcam", ablationcam,
               paper="Desai & Ramaswamy, \"Ablation-CAM: Visual Explanation for Deep "
                     "Convolutional Network via Gradient-free Localization\", WACV 2020",
               summary="channels weighted by the score drop when each is zeroed",
               gradients=False, progress=True, **_CAM),
    MethodSpec("sscam", sscam,
               paper="Wang et al., \"SS-CAM: Smoothed Score-CAM for Sharper Visual Feature "
                     "Localization\", arXiv 2020",
               summary="Score-CAM averaged over noisy masks", gradients=False, stochastic=True,
               progress=True, cheap={"n": 1}, **_CAM),
    MethodSpec("iscam", iscam,
               paper="Naidu et al., \"IS-CAM: Integrated Score-CAM for axiomatic-based "
                     "explanations\", arXiv 2020",
               summary="Score-CAM integrated over scaled masks", gradients=False,
               progress=True, cheap={"n": 1}, **_CAM),
    MethodSpec("smoothgradcam_pp", smoothgradcam_pp,
               paper="Omeiza et al., \"Smooth Grad-CAM++: An Enhanced Inference Level "
                     "Visualization Technique for Deep Convolutional Neural Network Models\", "
                     "arXiv 2019",
               summary="Grad-CAM++ with gradients averaged over noisy inputs", stochastic=True,
               progress=True, cheap={"n": 2}, **_CAM),
    MethodSpec("kpcacam", kpcacam,
               paper="Karmani et al., \"KPCA-CAM: Visual Explainability of Deep Computer Vision "
                     "Models using Kernel PCA\", IEEE MMSP 2024",
               summary="the first kernel principal component of the activations "
                       "(class-agnostic)", gradients=False, **_CAM),
    MethodSpec("shapleycam", shapleycam,
               paper="Cai et al., \"CAMs as Shapley Value-based Explainers\", The Visual "
                     "Computer 2025",
               summary="Grad-CAM with the gradient corrected by the Hessian-vector product",
               **_CAM),
    MethodSpec("finercam", finercam,
               paper="Zhang et al., \"Finer-CAM: Spotting the Difference Reveals Finer Details "
                     "for Visual Explanation\", CVPR 2025",
               summary="Grad-CAM of the target against its most similar classes",
               classifier=True, **_CAM),
    MethodSpec("fullgrad", fullgrad, "map", "gradient",
               "Srinivas & Fleuret, \"Full-Gradient Representation for Neural Network "
               "Visualization\", NeurIPS 2019",
               "input-gradient plus the bias-gradients of every convolution and batch norm"),
    MethodSpec("randomcam", randomcam,
               paper="Gildenblat et al., pytorch-grad-cam, 2021 (a baseline for the metrics)",
               summary="channels weighted by uniform random weights (a baseline)",
               gradients=False, stochastic=True, **_CAM),
    MethodSpec("lrp", lrp, "input", "rule",
               "Bach et al., \"On Pixel-Wise Explanations for Non-Linear Classifier Decisions "
               "by Layer-Wise Relevance Propagation\", PLoS ONE 2015",
               "the target score redistributed layer by layer to the pixels by LRP rules",
               rules=True, attention=False),
    MethodSpec("deeplift", deeplift, "input", "rule",
               "Shrikumar et al., \"Learning Important Features Through Propagating Activation "
               "Differences\", ICML 2017",
               "differences from a baseline propagated by the rescale rule (sums to f(x) - f(b))",
               rules=True),
    MethodSpec("deeplift_shap", deeplift_shap, "input", "rule",
               "Lundberg & Lee, \"A Unified Approach to Interpreting Model Predictions\", "
               "NeurIPS 2017",
               "DeepLift averaged over a distribution of baselines", rules=True),
    MethodSpec("gradient_shap", gradient_shap, "input", "gradient",
               "Lundberg & Lee, \"A Unified Approach to Interpreting Model Predictions\", "
               "NeurIPS 2017",
               "expected gradients: (x - b) times the gradient at random points between "
               "baselines and the input", stochastic=True, progress=True, cheap={"n": 4}),
    MethodSpec("excitation_backprop", excitation_backprop, "map", "rule",
               "Zhang et al., \"Top-down Neural Attention by Excitation Backprop\", ECCV 2016 "
               "(IJCV 2018)",
               "the marginal winning probability of each pixel, passed down through positive "
               "weights", rules=True, attention=False),
    MethodSpec("occlusion", occlusion, "map", "perturbation",
               "Zeiler & Fergus, \"Visualizing and Understanding Convolutional Networks\", "
               "ECCV 2014", "the drop of the target score when a window is set to the baseline (0)",
               gradients=False, progress=True, cheap={"window": 16, "stride": 8}),
    MethodSpec("extremal_perturbation", extremal_perturbation, "map", "perturbation",
               "Fong, Patrick & Vedaldi, \"Understanding Deep Networks via Extremal "
               "Perturbations and Smooth Masks\", ICCV 2019",
               "the smooth mask of a given area that best keeps the score when the rest is "
               "blurred", progress=True, cheap={"steps": 4}),
    MethodSpec("xrai", xrai, "map", "perturbation",
               "Kapishnikov et al., \"XRAI: Better Attributions Through Regions\", ICCV 2019",
               "regions of over-segmentations ranked by attribution density and merged greedily",
               progress=True, cheap={"options": {"steps": 4}}),
    MethodSpec("feature_ablation", feature_ablation, "map", "perturbation",
               "Zeiler & Fergus, \"Visualizing and Understanding Convolutional Networks\", "
               "ECCV 2014 (regions set to a baseline; Captum's FeatureAblation)",
               "the drop of the target score when each region (grid cell or superpixel) is set "
               "to a baseline", gradients=False, progress=True, cheap={"mask": 4}),
    MethodSpec("rise", rise, "map", "perturbation",
               "Petsiuk, Das & Saenko, \"RISE: Randomized Input Sampling for Explanation of "
               "Black-box Models\", BMVC 2018",
               "the score-weighted mean of random smooth masks", gradients=False,
               stochastic=True, progress=True, cheap={"n": 16, "cells": 3}),
    MethodSpec("lime", lime, "map", "perturbation",
               "Ribeiro, Singh & Guestrin, \"'Why Should I Trust You?': Explaining the "
               "Predictions of Any Classifier\", KDD 2016",
               "a weighted linear surrogate of the score over which regions are kept",
               gradients=False, stochastic=True, progress=True, cheap={"segments": 3, "n": 16}),
    MethodSpec("kernel_shap", kernel_shap, "map", "perturbation",
               "Lundberg & Lee, \"A Unified Approach to Interpreting Model Predictions\", "
               "NeurIPS 2017",
               "Shapley values of regions from a Shapley-kernel weighted linear fit",
               gradients=False, stochastic=True, progress=True, cheap={"segments": 3, "n": 16}),
    MethodSpec("shapley_sampling", shapley_sampling, "map", "perturbation",
               "Strumbelj & Kononenko, \"Explaining prediction models and individual "
               "predictions with feature contributions\", KAIS 2014",
               "Shapley values of regions averaged over random orders", gradients=False,
               stochastic=True, progress=True, cheap={"segments": 3, "n_permutations": 2}),
]

METHODS: Mapping[str, MethodSpec] = MappingProxyType({s.name: s for s in _SPECS})
"""Every attribution method, by name: a :class:`MethodSpec`, callable as the method."""

CAM_METHODS: frozenset[str] = frozenset(
    s.name for s in _SPECS if s.family == "cam" and s.output == "map")
"""The names of the methods whose result is a class activation map (derived from the specs)."""


def resolve_target(target: TargetLike, output: torch.Tensor) -> torch.Tensor:
    """A class target (int, B ints, None, a function returning class indices) as the ``(B,)``
    int64 class indices for ``output`` (the netlens 1.x helper; see :mod:`netlens.targets`).

    Raises:
        TypeError: a target that is not a class target.
        ValueError: a class out of range, or a number of targets that is not B.
    """
    bound = as_target(target).bind(output)
    if not isinstance(bound, Class):
        raise TypeError(f"{type(bound).__name__} is not a class target; resolve_target only "
                        "turns class targets into indices")
    assert bound.classes is not None
    return bound.classes


__all__ = [
    "AttributionMethod", "MethodSpec", "Target", "resolve_target", "NetlensWarning", "METHODS",
    "CAM_METHODS", "saliency", "input_x_gradient", "guided_backprop", "deconvnet", "smooth_grad",
    "integrated_gradients", "layer_channel_gradient", "gradcam", "guided_gradcam", "gradcam_pp",
    "xgradcam", "layercam", "hirescam", "scorecam", "eigencam", "gradcam_elementwise",
    "eigengradcam", "class_activation_map", "ablationcam", "sscam", "iscam", "smoothgradcam_pp",
    "randomcam", "kpcacam", "shapleycam", "finercam", "fullgrad",
    "lrp", "deeplift", "deeplift_shap", "gradient_shap", "excitation_backprop", "occlusion",
    "feature_ablation", "feature_permutation", "rise", "lime", "kernel_shap", "shapley_sampling",
    "noise_tunnel", "blur_ig", "guided_ig", "extremal_perturbation", "xrai",
    "cam_driver", "deep_feature_factorization", "Factorization",
    "CamContext", "baseline_image", "AUGMENTATIONS", "Fuse", "Layers",
]
