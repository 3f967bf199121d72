"""Ground truth: on the shipped shapes model, explanations point at the object (CONTRIBUTING.md
tests D14, D15, F18; issues #3, #6).

200 fresh images (a seed never used in training). Pointing game: the arg-max of the map lies in
the object mask. Relevance mass: the share of the map's positive mass inside the mask. Both come
from :mod:`netlens.metrics`. A uniform random map scores about the mask's area fraction on
relevance mass; every method must beat it, and Grad-CAM and integrated gradients must also beat a
centre-biased map, on localization and (IG) on deletion.
"""

from __future__ import annotations

import pytest
import torch

from netlens import metrics as M
from netlens.attribution import METHODS
from netlens.data import make_shapes
from netlens.metrics._maps import method_reduce
from netlens.zoo import shapes_model

N_IMAGES = 200
# Fewer passes than the defaults keep the test at seconds per method: SmoothGrad's samples,
# integrated gradients' steps, occlusion's windows (each method gets the options it takes).
PASSES = {"n": 8, "steps": 16, "window": 16, "stride": 8}


# the methods' own cuts (samples, permutations, steps), and the methods that make hundreds of
# passes per image, run on the first FEW images
OPTIONS = {"rise": {"n": 500}, "lime": {"n": 64, "segments": 4},
           "kernel_shap": {"n": 64, "segments": 4},
           "shapley_sampling": {"n_permutations": 2, "segments": 4}, "sscam": {"n": 2},
           "iscam": {"n": 2}, "smoothgradcam_pp": {"n": 4}, "extremal_perturbation": {"steps": 64},
           "xrai": {"options": {"steps": 8}}}
FEW = 48
COSTLY = {"ablationcam", "sscam", "iscam", "rise", "lime", "kernel_shap", "shapley_sampling",
          "feature_ablation", "extremal_perturbation", "xrai", "guided_ig"}


def options(method: str) -> dict:
    """``PASSES`` for the method, no progress bar, a seeded generator if it is stochastic."""
    spec = METHODS[method]
    opts = {**spec.options_for(PASSES), **OPTIONS.get(method, {})}
    if spec.progress:
        opts["progress"] = False
    if spec.stochastic:
        opts["generator"] = torch.Generator().manual_seed(0)
    return opts


@pytest.fixture(scope="module")
def shapes():
    batch = make_shapes(N_IMAGES, seed=123_457)
    return shapes_model(), batch


@pytest.fixture(scope="module")
def attributions(shapes):
    """method -> its attributions of the 200 images, computed once for this module's tests."""
    model, batch = shapes
    cache: dict[str, torch.Tensor] = {}

    def get(method: str) -> torch.Tensor:
        if method not in cache:
            if method == "random":
                cache[method] = M.random_map(model, batch.images,
                                             generator=torch.Generator().manual_seed(0))
            elif method == "centre":
                cache[method] = M.centre_map(model, batch.images)
            else:
                n = FEW if method in COSTLY else N_IMAGES
                cache[method] = METHODS[method](model, batch.images[:n], batch.labels[:n],
                                                **options(method))
        return cache[method]

    return get


def test_metrics_on_oracle_and_random_maps(shapes):
    _, batch = shapes
    masks = batch.masks
    noisy_mask = masks.float() + 1e-3 * torch.rand(masks.shape)
    assert M.pointing_game(noisy_mask, masks).mean().item() == 1.0
    assert M.pointing_game((~masks).float(), masks).mean().item() == 0.0
    area = masks.float().mean().item()
    random = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
    assert abs(M.relevance_mass(random, masks).mean().item() - area) < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_method_localizes_the_object(shapes, attributions, method):
    model, batch = shapes
    attr, reduce = attributions(method), method_reduce(method)
    masks = batch.masks[:attr.shape[0]]
    mass = M.relevance_mass(attr, masks, reduce=reduce).mean().item()
    area = masks.float().mean().item()
    pointing = M.pointing_game(attr, masks, reduce=reduce).mean().item()
    print(f"{method}: pointing {pointing:.3f}, relevance mass {mass:.3f} (area {area:.3f})")
    if method == "deconvnet":  # named on purpose: a measured exception, explained below
        # DeconvNet ignores the forward ReLU masks, so its map reconstructs image edges more than
        # the class evidence (Nie et al., ICML 2018): on these 200 images its mass is 0.066 for
        # an area of 0.057, above a random map's but not by 1.5x.
        assert mass > area, "deconvnet does not beat a random map on relevance mass"
        return
    if method == "extremal_perturbation":  # named on purpose: cut to 64 of its 800 steps here
        # measured: mass 0.089 for an area of 0.058 on 48 images; the full run localizes in
        # tests/attribution/test_extremal.py (72% of the 5% mask in the evidence region)
        assert mass > area, "extremal perturbation does not beat a random map on relevance mass"
        return
    if method == "randomcam":  # named on purpose: the CAMs' random baseline must lose
        # random channel weights of non-negative activations still favour the objects a
        # little (measured: pointing 0.33, mass 0.14 on these 200 images), far below every CAM
        assert pointing < 0.5, "the random CAM points at the object like a real CAM"
        return
    assert mass > 1.5 * area, f"{method} does not beat a random map on relevance mass"
    if method == "gradcam":  # named on purpose: CONTRIBUTING.md test D14's pointing game
        assert pointing >= 0.90


@pytest.mark.slow
def test_gradcam_and_ig_beat_random_and_centre_maps(shapes, attributions):
    model, batch = shapes
    masks, scores = batch.masks, {}
    for method in ("gradcam", "integrated_gradients", "random", "centre"):
        attr, reduce = attributions(method), method_reduce(method)
        scores[method] = {
            "pointing": M.pointing_game(attr, masks, reduce=reduce).mean().item(),
            "mass": M.relevance_mass(attr, masks, reduce=reduce).mean().item()}
    print(scores)
    for method in ("gradcam", "integrated_gradients"):
        for reference in ("random", "centre"):
            for metric in ("pointing", "mass"):
                assert scores[method][metric] > scores[reference][metric] + 0.1, (
                    f"{method} does not beat the {reference} map on {metric}")


@pytest.mark.slow
def test_ig_deletes_faster_than_a_random_map(shapes, attributions):
    model, batch = shapes
    auc = {method: M.deletion(model, batch.images, attributions(method), batch.labels, steps=6,
                              reduce=method_reduce(method), progress=False).auc.mean().item()
           for method in ("integrated_gradients", "random")}
    print(auc)
    assert auc["integrated_gradients"] < auc["random"] - 0.03


@pytest.mark.slow
def test_lrp_and_excitation_backprop_beat_a_random_map_on_500_images():
    """The rule issue's ground truth: on 500 fresh images, LRP (epsilon-plus) and excitation
    backprop beat a random map on pointing game and relevance mass. Measured (seed 123_458):
    LRP pointing 0.526, mass 0.407; excitation backprop 0.632, 0.265; the random map 0.054,
    0.058 (the objects' area 0.058)."""
    batch = make_shapes(500, seed=123_458)
    model, masks = shapes_model(), batch.masks
    random = M.random_map(model, batch.images, generator=torch.Generator().manual_seed(0))
    floor = {"pointing": M.pointing_game(random, masks).mean().item(),
             "mass": M.relevance_mass(random, masks).mean().item()}
    assert floor["pointing"] < 0.1 and floor["mass"] < 0.1
    measured = {"lrp": (0.526, 0.407), "excitation_backprop": (0.632, 0.265)}
    for method, (pointing, mass) in measured.items():
        attr, reduce = METHODS[method](model, batch.images, batch.labels), method_reduce(method)
        got = (M.pointing_game(attr, masks, reduce=reduce).mean().item(),
               M.relevance_mass(attr, masks, reduce=reduce).mean().item())
        print(method, got)
        assert got[0] > pointing - 0.05 and got[1] > mass - 0.05, (method, got)
        assert got[0] > floor["pointing"] + 0.3 and got[1] > 3 * floor["mass"], (method, got)
