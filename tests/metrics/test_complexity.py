"""Complexity metrics: by hand on toy maps and against Quantus 0.6.0 on the shapes model."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import netlens as nl
from netlens import metrics as M
from netlens.metrics.complexity import complexity, effective_complexity

quantus = pytest.importorskip("quantus")


@pytest.fixture(scope="module")
def shapes():
    """Three shapes images, their labels and saliency / Grad-CAM maps ``(B, 1, H, W)``."""
    torch.manual_seed(0)
    model = nl.zoo.shapes_model()
    batch = nl.data.make_shapes(3, seed=11)
    x, y = batch.images, batch.labels
    sal = M.saliency_map(nl.attribution.saliency(model, x, y))
    cam = nl.attribution.gradcam(model, x, y)
    return model, x, y, {"saliency": sal.float(), "gradcam": cam.float()}


def per_image_max():
    return dict(normalise_func=quantus.normalise_func.normalise_by_max,
                normalise_func_kwargs={"normalise_axes": (1, 2, 3)})


def run_quantus(metric, model, x, y, a, **call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(),
                     channel_first=True, device="cpu", **call)
    return torch.tensor(np.asarray(out, dtype=np.float64))


def test_complexity_by_hand():
    maps = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, -5.0], [0.0, 0.0, 0.0, 0.0],
                         [1.0, 1.0, 2.0, 0.0]]).view(4, 1, 2, 2)
    p = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    expected = [math.log(4), 0.0, 0.0, float(-(p * p.log()).sum())]
    assert complexity(maps).tolist() == pytest.approx(expected, abs=1e-12)
    # a scale and a sign do not change the entropy; channels are summed as |attr|
    assert torch.allclose(complexity(-3 * maps), complexity(maps))
    three = maps.expand(4, 3, 2, 2)
    assert torch.allclose(complexity(three), complexity(maps))


def test_effective_complexity_by_hand():
    maps = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, -5.0], [0.0, 0.0, 0.0, 0.0],
                         [1e-6, 0.5, -4e-5, 2.0]]).view(4, 1, 2, 2)
    assert effective_complexity(maps).tolist() == [4.0, 1.0, 0.0, 3.0]
    assert effective_complexity(maps, eps=0.3).tolist() == [4.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="eps"):
        effective_complexity(maps, eps=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        complexity(torch.full((1, 1, 2, 2), float("nan")))


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_complexity_equals_quantus(shapes, method):
    model, x, y, maps = shapes
    a = maps[method]
    ours = complexity(a)
    theirs = run_quantus(quantus.Complexity(disable_warnings=True), model, x, y, a)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-4), (ours, theirs)


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_effective_complexity_equals_quantus(shapes, method):
    model, x, y, maps = shapes
    a = maps[method]
    for eps in (1e-5, 0.05, 0.3):
        ours = effective_complexity(a, eps=eps)
        metric = quantus.EffectiveComplexity(eps=eps, disable_warnings=True, **per_image_max())
        theirs = run_quantus(metric, model, x, y, a)
        assert torch.equal(ours, theirs), (eps, ours, theirs)
    # Quantus's default scales every map by the largest value of the whole batch, so one
    # image's count depends on the others; on a single image the two agree.
    single = run_quantus(quantus.EffectiveComplexity(eps=0.05, disable_warnings=True), model,
                         x[:1], y[:1], a[:1])
    assert single.tolist() == effective_complexity(a[:1], eps=0.05).tolist()
