"""Top-k intersection, attribution localisation, AUC and focus: by hand on toy maps and
against Quantus 0.6.0 on the shapes model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import netlens as nl
from netlens import metrics as M
from netlens.metrics.localization import (
    attribution_localisation,
    auc,
    focus,
    mosaic,
    top_k_intersection,
)

quantus = pytest.importorskip("quantus")


@pytest.fixture(scope="module")
def shapes():
    """Three shapes images, labels, masks and saliency / Grad-CAM maps ``(B, 1, H, W)``."""
    torch.manual_seed(0)
    model = nl.zoo.shapes_model()
    batch = nl.data.make_shapes(3, seed=5)
    x, y = batch.images, batch.labels
    sal = M.saliency_map(nl.attribution.saliency(model, x, y)).float()
    cam = nl.attribution.gradcam(model, x, y).float()
    return model, x, y, batch.masks, {"saliency": sal, "gradcam": cam}


def run_quantus(metric, model, x, y, a, s=None, **call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(),
                     s_batch=None if s is None else s.numpy().astype(np.float32),
                     channel_first=True, device="cpu", **call)
    return torch.tensor(np.asarray(out, dtype=np.float64))


MAP = torch.tensor([[4.0, -3.0, 2.0], [1.0, 0.0, -5.0]]).view(1, 1, 2, 3)
MASK = torch.tensor([[True, True, False], [False, False, True]]).view(1, 1, 2, 3)


def test_by_hand():
    # top-k of the signed map: 4, 2, 1, 0, -3, -5; inside: 4 (yes), 2 (no), 1 (no) ...
    assert top_k_intersection(MAP, MASK, k=1).item() == 1.0
    assert top_k_intersection(MAP, MASK, k=3).item() == pytest.approx(1 / 3)
    assert top_k_intersection(MAP, MASK, k=6).item() == pytest.approx(0.5)
    assert top_k_intersection(MAP, MASK, k=3, concept_influence=True).item() == pytest.approx(
        (1 / 3) * 6 / 3)
    # |m| = 4 3 2 / 1 0 5: inside 4 + 3 + 5 = 12 of 15; positive part: 4 of 7
    assert attribution_localisation(MAP, MASK).item() == pytest.approx(12 / 15)
    assert attribution_localisation(MAP, MASK, positive=True).item() == pytest.approx(4 / 7)
    assert attribution_localisation(MAP, MASK, weighted=True).item() == pytest.approx(
        12 / 15 * 3 / 6)
    # AUC: object {4, -3, -5} vs background {2, 1, 0}: pairs won 3 of 9
    assert auc(MAP, MASK).item() == pytest.approx(3 / 9)
    assert auc(MASK.double(), MASK).item() == 1.0 and auc(-MASK.double(), MASK).item() == 0.0
    assert torch.isnan(auc(MAP, torch.ones_like(MASK))).all()
    with pytest.raises(ValueError, match="k must be"):
        top_k_intersection(MAP, MASK, k=7)
    with pytest.raises(ValueError, match="masks of shape"):
        auc(MAP, MASK[..., :2])


def test_focus_by_hand():
    tiles = torch.arange(4.0).view(1, 4, 1, 1, 1).expand(2, 4, 1, 2, 2)
    m = mosaic(tiles)
    assert m.shape == (2, 1, 4, 4) and m[0, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert m[0, 0, 3].tolist() == [2.0, 2.0, 3.0, 3.0]
    q = torch.tensor([[False, True, False, True], [True, False, False, False]])
    # relevance 0, 1, 2, 3 per tile (4 pixels each): total 24; tiles 1 + 3: 16; tile 0: 0
    assert focus(m, q).tolist() == pytest.approx([16 / 24, 0.0])
    # positive part only: tiles 2 and 3 keep 0.5 and 1.5 per pixel, tile 3 is a target
    assert focus(m - 1.5, q).tolist() == pytest.approx([1.5 / 2.0, 0.0])
    with pytest.raises(ValueError, match="quadrants"):
        focus(m, q[:, :3])
    with pytest.raises(ValueError, match="no tile"):
        focus(m, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="B, 4, C, H, W"):
        mosaic(tiles[:, :3])


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_top_k_intersection_equals_quantus(shapes, method):
    model, x, y, masks, maps = shapes
    a = maps[method]
    flat = a.flatten(1).sort(dim=1, descending=True).values
    for k in (20, 150, 1000):
        # ties at the k-th value are ordered differently (Quantus uses an unstable sort)
        if method == "gradcam" and bool((flat[:, k - 1] == flat[:, k]).any()):
            continue
        for ci in (False, True):
            ours = top_k_intersection(a, masks, k=k, concept_influence=ci)
            metric = quantus.TopKIntersection(k=k, concept_influence=ci, disable_warnings=True)
            theirs = run_quantus(metric, model, x, y, a, masks)
            assert torch.allclose(ours, theirs, rtol=0, atol=1e-4), (k, ci, ours, theirs)


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_attribution_localisation_equals_quantus(shapes, method):
    model, x, y, masks, maps = shapes
    a = maps[method]
    for positive in (False, True):
        ours = attribution_localisation(a, masks, positive=positive)
        metric = quantus.AttributionLocalisation(positive_attributions=positive,
                                                 disable_warnings=True)
        theirs = run_quantus(metric, model, x, y, a, masks)
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-4), (ours, theirs)
    # weighted: Quantus divides the object's area by x_batch[2:].size (the images from the third
    # on, all channels) instead of one image's H * W; ours is the object's area fraction
    metric = quantus.AttributionLocalisation(weighted=True, disable_warnings=True)
    theirs = run_quantus(metric, model, x, y, a, masks)
    area = masks.flatten(1).sum(1).double()
    unweighted = attribution_localisation(a, masks)
    assert torch.allclose(theirs, unweighted * area / x[2:].numel(), atol=1e-6)
    ours = attribution_localisation(a, masks, weighted=True)
    assert torch.allclose(ours, unweighted * area / (64 * 64))


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_auc_equals_quantus(shapes, method):
    model, x, y, masks, maps = shapes
    a = maps[method]
    ours = auc(a, masks)
    theirs = run_quantus(quantus.AUC(disable_warnings=True), model, x, y, a, masks)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-4), (ours, theirs)
    assert (ours > 0.5).any()


def test_focus_equals_quantus():
    torch.manual_seed(0)
    model = nl.zoo.shapes_model()
    batch = nl.data.make_shapes(8, seed=3)
    x, y = batch.images, batch.labels
    order = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [1, 3, 5, 0]])
    mosaics = mosaic(x[order])
    target = y[order[:, 0]]  # the first tile's class; others may share it
    quadrants = y[order] == target[:, None]
    for fn in (nl.attribution.saliency, nl.attribution.gradcam):
        a = M.saliency_map(fn(model, mosaics, target)).float()
        ours = focus(a, quadrants)
        metric = quantus.Focus(disable_warnings=True)
        theirs = run_quantus(metric, model, mosaics, target, a,
                             custom_batch=[q.tolist() for q in quadrants])
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-4), (ours, theirs)
