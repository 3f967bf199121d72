"""Ground truth: on the shipped shapes model, explanations point at the object (issue #3).

500 fresh images (a seed never used in training). Pointing game: the arg-max of the map lies in
the object mask. Relevance mass: the share of the map's positive mass inside the mask. A uniform
random map scores about the mask's area fraction on relevance mass; every method must beat it.
"""

from __future__ import annotations

import pytest
import torch

from netlens.attribution import CAM_METHODS, METHODS
from netlens.data import make_shapes
from netlens.zoo import shapes_model

N_IMAGES = 500
OPTIONS = {  # fewer passes than the defaults keep the test at seconds per method
    "smooth_grad": {"n": 8, "generator": torch.Generator().manual_seed(0), "progress": False},
    "integrated_gradients": {"steps": 16, "progress": False},
    "occlusion": {"window": 16, "stride": 8, "progress": False},
    "scorecam": {"progress": False},
}


@pytest.fixture(scope="module")
def shapes():
    batch = make_shapes(N_IMAGES, seed=123_457)
    return shapes_model(), batch


def saliency_map(attr: torch.Tensor, method: str) -> torch.Tensor:
    """(B, H, W) non-negative map: |attr| summed over channels for input attributions."""
    if method in CAM_METHODS or method == "occlusion":
        return attr[:, 0].clamp(min=0)
    return attr.abs().sum(1)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> float:
    flat = maps.flatten(1)
    hit = masks.flatten(1).gather(1, flat.argmax(1, keepdim=True))
    return hit.float().mean().item()


def relevance_mass(maps: torch.Tensor, masks: torch.Tensor) -> float:
    total = maps.flatten(1).sum(1).clamp(min=1e-12)
    inside = (maps * masks).flatten(1).sum(1)
    return (inside / total).mean().item()


def test_metrics_on_oracle_and_random_maps(shapes):
    _, batch = shapes
    masks = batch.masks[:, 0]
    assert pointing_game(masks.float() + 1e-3 * torch.rand(masks.shape), masks) == 1.0
    assert pointing_game((~masks).float(), masks) == 0.0
    area = masks.float().mean().item()
    random = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
    assert abs(relevance_mass(random, masks) - area) < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_method_localizes_the_object(shapes, method):
    model, batch = shapes
    masks = batch.masks[:, 0]
    attr = METHODS[method](model, batch.images, batch.labels, **OPTIONS.get(method, {}))
    maps = saliency_map(attr, method)
    mass, area = relevance_mass(maps, masks), masks.float().mean().item()
    pointing = pointing_game(maps, masks)
    print(f"{method}: pointing {pointing:.3f}, relevance mass {mass:.3f} (area {area:.3f})")
    assert mass > 1.5 * area, f"{method} does not beat a random map on relevance mass"
    if method == "gradcam":
        assert pointing >= 0.90
