"""Every metric takes any target: curves follow the target's own score, probability metrics say
when a target has no probability, several targets per image are refused with the fix."""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

import netlens as nl
from netlens import metrics as M
from netlens.targets import Segmentation, Similarity, TopK

from helpers import assert_untouched, model_state


class _Seg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        return collections.OrderedDict(out=self.conv2(self.relu(self.conv1(x))))


@pytest.fixture
def seg():
    torch.manual_seed(0)
    return _Seg().double().eval()


def test_deletion_follows_the_targets_own_score(seg):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = Segmentation([1, 2], mask=torch.ones(8, 8, dtype=torch.bool))
    attr = nl.attribution.saliency(seg, x, target)
    curve = M.deletion(seg, x, attr, target, steps=4, score="logit", baseline=0.0)
    with torch.no_grad():
        bound = target.bind(seg(x))
        start, end = bound(seg(x)), bound(seg(torch.zeros_like(x)))
    torch.testing.assert_close(curve.scores[:, 0], start)
    torch.testing.assert_close(curve.scores[:, -1], end)
    with pytest.warns(nl.attribution.NetlensWarning, match="no class probability"):
        soft = M.deletion(seg, x, attr, target, steps=4, score="softmax", baseline=0.0)
    torch.testing.assert_close(soft.scores, curve.scores)
    with pytest.raises(ValueError, match="score='accuracy' needs a class target"):
        M.deletion(seg, x, attr, target, steps=4, score="accuracy")


def test_compare_sanity_and_robustness_take_any_target(seg):
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = Segmentation([1, 3])
    before = model_state(seg)
    masks = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    masks[:, :, 2:5, 2:5] = True
    table = M.compare(seg, x, target, methods=["saliency", "gradcam", "random"],
                      metrics=["deletion", "pointing_game", "sparseness"], masks=masks,
                      metric_options={"deletion": {"score": "logit", "steps": 4}},
                      progress=False, generator=torch.Generator().manual_seed(0))
    assert [r["method"] for r in table] == ["saliency", "gradcam", "random"]
    assert all(0 <= r["pointing_game"] <= 1 for r in table)
    worst = M.max_sensitivity(seg, x, target, "saliency", n=2, radius=0.01,
                              generator=torch.Generator().manual_seed(0))
    assert worst.shape == (2,) and bool(torch.isfinite(worst).all())
    result = M.model_randomization(seg, x, target, methods=["saliency"])
    assert len(result.layers) >= 2
    assert_untouched(seg, before)


def test_the_robustness_and_randomization_metrics_take_a_segmentation_target(seg):
    """Continuity, the relative stabilities, smooth and efficient MPRT explain a segmentation
    score as they do a class; random logit and consistency, defined on classes, say so."""
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    target = Segmentation([1, 3, 2])
    before = model_state(seg)
    gen = torch.Generator().manual_seed(0)
    values = {
        "continuity": M.continuity(seg, x, target, "saliency", steps=4),
        "relative_input_stability": M.relative_input_stability(
            seg, x, target, "saliency", n=2, generator=gen, same_prediction=False),
        "relative_output_stability": M.relative_output_stability(
            seg, x, target, "saliency", n=2, generator=gen, same_prediction=False),
        "relative_representation_stability": M.relative_representation_stability(
            seg, x, target, "saliency", layer="conv1", n=2, generator=gen,
            same_prediction=False),
        "smooth_mprt": M.smooth_mprt(seg, x, target, "saliency", n=2, generator=gen),
        "efficient_mprt": M.efficient_mprt(seg, x, target, "saliency", generator=gen),
    }
    for name, v in values.items():
        assert v.shape == (3,) and bool(torch.isfinite(v).all()), name
    attr = nl.attribution.saliency(seg, x, target)
    with pytest.raises(ValueError, match="class"):
        M.random_logit(seg, x, target, "saliency", generator=gen)
    with pytest.raises(ValueError, match="class"):
        M.consistency(seg, x, attr, target)
    twin = _Seg().double().eval()  # a dict output: data randomization compares its shapes
    result = M.data_randomization(seg, twin, x, target, methods=["saliency"])
    assert result.spearman_abs["saliency"].shape == (3,)
    assert_untouched(seg, before)


def test_metrics_refuse_several_targets_per_image_with_the_fix(seg):
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    attr = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    flat = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(5)).double().eval()
    flat(x)
    with pytest.raises(ValueError, match="one target per image.*TopK with 2"):
        M.deletion(flat, x, attr, TopK(2), steps=2)


def test_embedding_metrics_with_similarity():
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten()).double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    target = Similarity(enc(x).detach()[0])
    attr = nl.attribution.integrated_gradients(enc, x, target, steps=8)
    curve = M.insertion(enc, x, attr, target, steps=4, score="logit")
    with torch.no_grad():
        assert curve.scores[0, -1] == pytest.approx(1.0)  # image 0 fully inserted is itself
