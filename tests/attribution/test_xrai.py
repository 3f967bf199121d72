"""XRAI: hand computations on a tiny attribution with given segments, PAIR's greedy merge as a
numpy oracle on random regions, the default IG attribution (black and white baselines), the
default Felzenszwalb candidates, targets and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import netlens as nl
from netlens.attribution import integrated_gradients
from netlens.attribution.xrai import xrai, xrai_regions

from helpers import assert_untouched, model_state, small_cnn

ATTR = torch.tensor([[4.0, 4.0, 0.0, 0.0],
                     [4.0, 4.0, 0.0, 0.0],
                     [1.5, 1.5, 2.0, 2.0],
                     [1.5, 1.5, 2.0, 2.0]], dtype=torch.float64)
HALVES = torch.tensor([[0, 0, 1, 1]] * 4)[None, None]  # A0 left, A1 right
QUADRANT = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])[None, None]


@pytest.fixture(scope="module")
def model():
    return small_cnn()


def tiny(model, **kwargs):
    """XRAI of the precomputed ATTR (3 channels whose maximum is ATTR) on a 4 x 4 image."""
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    attr = torch.stack([ATTR - 1, ATTR, ATTR - 5])[None]
    return xrai(model, x, 0, attribution=attr, **kwargs)[0, 0]


def test_hand_computation(model):
    # candidates: A0 (8 px, mean 2.75), A1 (8 px, 1.0), B0 = top-left (4 px, 4.0), B1 (12 px)
    # step 1 B0: 4; step 2 the bottom-left pixels: A0 adds them at 1.5, A1 adds the right at
    # 1.0, B1 both at 14 / 12; step 3 A1 and B1 both add the right half at 1.0: A1 (first)
    gains = tiny(model, segments=[HALVES, QUADRANT], min_pixels=1)
    want = torch.tensor([[4, 4, 1, 1], [4, 4, 1, 1], [1.5, 1.5, 1, 1], [1.5, 1.5, 1, 1]],
                        dtype=torch.float64)
    assert torch.equal(gains, want)
    ranks = tiny(model, segments=[HALVES, QUADRANT], min_pixels=1, output="ranks")
    assert torch.equal(ranks, torch.tensor([[1, 1, 3, 3], [1, 1, 3, 3], [2, 2, 3, 3],
                                            [2, 2, 3, 3]], dtype=torch.float64))


def test_hand_computation_min_pixels_and_uncovered_rest(model):
    # B0 adds 4 < 5 pixels: dropped; A0 (2.75) then A1 (1.0, first of the tie with B1)
    gains = tiny(model, segments=[HALVES, QUADRANT], min_pixels=5)
    assert torch.equal(gains, torch.tensor([[2.75, 2.75, 1, 1]] * 4, dtype=torch.float64))
    # the quadrant segmentation alone: B1 (14 / 12), then the uncovered quadrant: its mean, 4
    gains = tiny(model, segments=QUADRANT, min_pixels=5)
    want = torch.full((4, 4), 14 / 12, dtype=torch.float64)
    want[:2, :2] = 4.0
    assert torch.allclose(gains, want, rtol=1e-15, atol=0)
    ranks = tiny(model, segments=QUADRANT, min_pixels=5, output="ranks")
    assert torch.equal(ranks, (want == 4.0).double() + 1)


def _pair_xrai(attr, masks, min_pixel_diff):
    """PAIR's ``_xrai`` greedy loop (area threshold 1.0) in numpy: an oracle."""
    out = np.full(attr.shape, -np.inf)
    current = np.zeros(attr.shape, dtype=bool)
    remaining = dict(enumerate(masks))
    trace = []
    while True:
        best_gain, best_key, drop = -np.inf, None, []
        for key, mask in remaining.items():
            diff = mask & ~current
            if diff.sum() < min_pixel_diff:
                drop.append(key)
                continue
            gain = attr[diff].mean() if diff.any() else -np.inf
            if gain > best_gain:
                best_gain, best_key = gain, key
        for key in drop:
            del remaining[key]
        if not remaining:
            break
        diff = remaining[best_key] & ~current
        trace.append((diff, best_gain))
        current |= remaining[best_key]
        out[diff] = best_gain
        del remaining[best_key]
    rest = out == -np.inf
    if rest.any():
        out[rest] = attr[rest].mean()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_pairs_greedy_merge_on_random_regions(seed):
    g = torch.Generator().manual_seed(seed)
    attr = torch.randn(12, 14, generator=g, dtype=torch.float64)
    segs = [torch.randint(0, n, (12, 14), generator=g) for n in (3, 6, 12)]
    masks = torch.cat([s[None] == torch.arange(int(s.max()) + 1)[:, None, None] for s in segs])
    masks = masks[masks.flatten(1).any(1)]
    gains, _ = xrai_regions(attr, masks, min_pixels=4)
    want = _pair_xrai(attr.numpy(), list(masks.numpy()), 4)
    assert np.allclose(gains.numpy(), want, rtol=1e-12, atol=1e-14)


def test_default_attribution_is_ig_from_black_and_white(model):
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(3),
                   dtype=torch.float64)
    cells = nl.segments.grid(x, 3)
    ours = xrai(model, x, [1, 2], options={"steps": 4}, segments=[cells, nl.segments.grid(x, 2)],
                min_pixels=1)
    lo = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
    hi = x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)
    ig = (integrated_gradients(model, x, [1, 2], steps=4, baseline=lo)
          + integrated_gradients(model, x, [1, 2], steps=4, baseline=hi)) / 2
    want = xrai(model, x, [1, 2], attribution=ig, segments=[cells, nl.segments.grid(x, 2)],
                min_pixels=1)
    assert torch.equal(ours, want)
    other = xrai(model, x, [1, 2], attribution="saliency",
                 segments=[cells, nl.segments.grid(x, 2)], min_pixels=1)
    assert other.shape == (2, 1, 12, 12)


def test_default_segments_targets_and_model_untouched(model):
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(4),
                   dtype=torch.float64)
    before = model_state(model)
    with torch.no_grad():
        out = xrai(model, x, nl.targets.TopK(2), attribution="saliency", min_pixels=10)
    assert out.shape == (2, 2, 1, 24, 24) and torch.isfinite(out).all()
    assert_untouched(model, before)
    ranks = xrai(model, x, 1, attribution="saliency", min_pixels=10, output="ranks")
    assert ranks.min() == 1 and torch.equal(ranks, ranks.round())


@pytest.mark.parametrize("kwargs, error, match", [
    ({"attribution": "nope"}, ValueError, "registered method"),
    ({"attribution": torch.zeros(1, 3, 5, 5)}, ValueError, "precomputed attribution"),
    ({"segments": torch.zeros(1, 1, 3, 3, dtype=torch.long)}, ValueError, "segments has shape"),
    ({"segments": torch.zeros(1, 1, 4, 4)}, TypeError, "integer tensor"),
    ({"min_pixels": -1}, ValueError, "min_pixels must be an int >= 0"),
    ({"output": "map"}, ValueError, "output must be"),
])
def test_bad_options(model, kwargs, error, match):
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    opts = {"segments": HALVES, "attribution": torch.zeros(2, 3, 4, 4), **kwargs}
    with pytest.raises(error, match=match):
        xrai(model, x, 0, **opts)


def test_target_out_of_range(model):
    with pytest.raises(ValueError, match="out of range"):
        xrai(model, torch.rand(1, 3, 8, 8, dtype=torch.float64), 10**6, options={"steps": 2},
             segments=HALVES.repeat(1, 1, 2, 2))
