"""Feature visualization, Lucid-style: parameterizations, transforms, objectives, rendering.

:mod:`~netlens.optvis.param` builds the image being optimized (:class:`ImageParam`, Fourier and
colour-decorrelated; :class:`RawParam`, plain pixels); :mod:`~netlens.optvis.transforms` holds the
random jitter, scale and rotation that make the result robust (:func:`standard_transforms`);
:mod:`~netlens.optvis.objectives` the scores to maximize (``channel``, ``class_logit``, ...,
composable with ``+ - * /``); :class:`OptVis` (:mod:`~netlens.optvis.render`) runs the loop.
"""

from __future__ import annotations

from . import objectives, optim, param, render, transforms
from .objectives import Objective
from .optim import LBFGS, ProjectedAdam
from .param import ImageParam, Param, RawParam
from .render import Callback, OptVis, model_normalization
from .transforms import (
    Transform,
    affine,
    compose,
    jitter,
    pad,
    random_crop,
    random_rotate,
    random_scale,
    shear,
    standard_transforms,
    thumbnail,
    translate,
)

__all__ = [
    "objectives", "optim", "param", "render", "transforms", "LBFGS", "ProjectedAdam",
    "Objective", "OptVis", "Callback",
    "model_normalization",
    "Param", "ImageParam", "RawParam",
    "Transform", "pad", "jitter", "random_scale", "random_rotate", "compose",
    "standard_transforms", "translate", "shear", "affine", "random_crop", "thumbnail",
]
