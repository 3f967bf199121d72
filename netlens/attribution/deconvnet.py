"""DeconvNet: the gradient with every ReLU's backward replaced by a ReLU of the gradient.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014, in the
gradient form of Springenberg et al. 2015: through every ReLU-family call the backward pass is
``grad_in = relu(grad_out)``, whatever the sign of the forward input (guided backprop also masks
by ``x > 0``). Like :func:`~netlens.attribution.guided_backprop` it changes *every* ReLU call
(modules, in-place, reused, functional), through the rule :class:`netlens.rules.Deconv`.

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> deconvnet(m, torch.rand(2, 3, 32, 32), target=[1, 2]).shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import torch
from torch import nn

from .. import rules
from .._runtime import prepare
from ..targets import TargetLike
from .gradients import _input_gradients

__all__ = ["deconvnet"]


def deconvnet(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    batch_size: int | None = None,
) -> torch.Tensor:
    """DeconvNet attribution: only positive gradients pass back through every ReLU call,
    unmasked by the forward pass.

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: what to explain (:mod:`netlens.targets`); None: the predicted class.
        batch_size: images per pass; default from the memory budget.

    Returns:
        ``(B, C, H, W)`` (``(B, K, C, H, W)`` for K targets per image), ``x``'s dtype and device.

    Raises:
        ValueError, TypeError: bad input or target.
    """
    fm, x = prepare(model, x)
    g, _ = _input_gradients(fm, x, target, rule=rules.Deconv(), batch_size=batch_size)
    return g
