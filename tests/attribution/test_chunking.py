"""Chunk invariance (CONTRIBUTING.md test B9; issue 13): every method with a ``batch_size``
option gives the same result whatever the chunking, on torchvision's resnet18 (1000 classes,
random init, BatchNorm), for the predicted class (``target=None``, fixed once from the clean
images), per-image targets, and SmoothGrad's seeded noise.

The guarantee, in the methods' docstrings: every pass computes the same points (images, path
points, noisy copies, masks, windows) with the same target, whatever ``batch_size``, so results
are equal up to the floating-point round-off of the model's kernels at different pass sizes. In
float64 that is exact (measured: bitwise for the gradient methods, at most 3.4e-16 relative for
the CAMs); in float32 the kernels' round-off is about 1e-7 relative, which can flip a ReLU
whose input is that close to zero: measured on this model at 48 px, batch_size 1 vs default,
saliency and IG 7.4e-7, occlusion 2.2e-6, and SmoothGrad 1.4e-3 (plain autograd of the same
noisy points at 1 vs 16 images per pass differs by 2.0e-3 itself).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from netlens._zoo_nets import ShapesNet
from netlens.attribution import METHODS

CHUNKED = [name for name, spec in METHODS.items() if "batch_size" in spec.parameters]
# Methods of multiplied passes (a pass per channel, mask, sample or segment) run on a narrow
# ResNet (the shapes model's architecture, random init, 1000 classes, BatchNorm: the same
# chunking code paths) so that their dozens of passes per image stay cheap.
COSTLY = {name for name in CHUNKED if METHODS[name].progress}
# In training mode: the first chunked method of each family, and those of multiplied passes.
TRAINED = [n for n in CHUNKED if METHODS[n].progress
           or n == next(m for m in CHUNKED if METHODS[m].family == METHODS[n].family)]


@pytest.fixture(scope="module")
def resnet():
    """resnet18 with its 1000 classes, seeded, in float64, built once for this module."""
    torch.manual_seed(0)
    return torchvision.models.resnet18().double().eval()


@pytest.fixture(scope="module")
def narrow():
    """A narrow ResNet (conv1, layer1-3 of one BasicBlock each, 8-16 channels, BatchNorm,
    global pool, 1000 classes), seeded, in float64."""
    torch.manual_seed(0)
    return ShapesNet(num_classes=1000, widths=(8, 8, 16, 16)).double().eval()


def run(method: str, model, x, target, batch_size):
    spec = METHODS[method]
    options = dict(spec.cheap, batch_size=batch_size)
    if spec.layer:  # few channels: few score-CAM passes (CAM needs the layer its head reads)
        last = "layer4" if hasattr(model, "layer4") else "layer3"
        options["layer"] = last if spec.linear_head else "layer1"
    if "generator" in spec.parameters:  # the noise (or a random baseline) seeded the same
        options["generator"] = torch.Generator().manual_seed(0)
    if spec.progress:
        options["progress"] = False
    return spec(model, x, target, **options)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-300))


def test_every_chunked_method_is_listed():
    assert len(CHUNKED) >= 10 and {"integrated_gradients", "smooth_grad", "occlusion",
                                   "scorecam"} <= set(CHUNKED)


@pytest.mark.slow
@pytest.mark.parametrize("target", [None, [3, 999]], ids=["predicted", "per-image"])
@pytest.mark.parametrize("method", CHUNKED)
def test_results_do_not_depend_on_the_chunking(method, target, resnet, narrow):
    resnet = narrow if method in COSTLY else resnet
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    default = run(method, resnet, x, target, None)
    assert default.abs().sum() > 0 or METHODS[method].family == "cam"
    for batch_size in (1, 3):
        assert relative(run(method, resnet, x, target, batch_size), default) <= 1e-12, batch_size


@pytest.mark.slow
@pytest.mark.parametrize("method", TRAINED)
def test_a_model_in_training_mode_is_explained_alike_in_any_chunking(method):
    """BatchNorm in training mode would normalize each pass by its own statistics (measured
    before the fix: 4.0 relative between batch_size 1 and 7 for integrated gradients): the
    model is explained in eval mode, whatever the chunking."""
    torch.manual_seed(0)
    model = (ShapesNet(num_classes=10, widths=(8, 8, 16, 16)) if method in COSTLY
             else torchvision.models.resnet18(num_classes=10)).double().train()
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the model is in training mode")
        trained = run(method, model, x, None, 1)
    assert model.training  # left as it was
    assert relative(trained, run(method, model.eval(), x, None, None)) <= 1e-12
