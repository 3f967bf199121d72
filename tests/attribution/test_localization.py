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


# CAMs (and FullGrad, a CAM of every layer's bias gradients) are checked on 500 images against
# their measured figures (test_cam_variants_localize_on_500_images); the black-box and path
# methods on 200 (test_black_box_methods_localize_on_200_images), with the options below
# (samples, steps, superpixels: what keeps each at seconds); the others by the generic test.
CAMS = [name for name, spec in METHODS.items() if spec.family == "cam"] + ["fullgrad"]
BLACK_BOX = ["rise", "feature_ablation", "lime", "kernel_shap", "shapley_sampling", "occlusion",
             "blur_ig", "guided_ig", "noise_tunnel", "xrai", "extremal_perturbation"]
GENERIC = [name for name in METHODS if name not in CAMS and name not in BLACK_BOX]
OPTIONS = {"sscam": {"n": 1}, "iscam": {"n": 2}, "smoothgradcam_pp": {"n": 4},
           "rise": {"n": 64, "cells": 4}, "lime": {"n": 64}, "kernel_shap": {"n": 64},
           "shapley_sampling": {"n_permutations": 1}, "occlusion": {"window": 16, "stride": 8},
           "blur_ig": {"steps": 8}, "guided_ig": {"steps": 8}, "noise_tunnel": {"n": 4},
           "xrai": {"options": {"steps": 4}},
           # 100 steps (of the paper's 800, the learning rate scaled to keep its path length)
           # with the paper's 20-pixel blur: the default blur, scaled to the image (5.7 px at
           # 64 px), leaves these objects recognizable, so the masks get no signal (measured on
           # 32 images: mass 0.004 at the default blur, 0.254 at 20 px; 0.192 after 50 steps)
           # (stride=None: the default mask cells, 2 px here, not occlusion's PASSES stride)
           "extremal_perturbation": {"steps": 100, "areas": 0.1, "max_blur": 20.0,
                                     "stride": None}}
SUPERPIXELS = {"feature_ablation": "mask", "lime": "segments", "kernel_shap": "segments",
               "shapley_sampling": "segments"}  # SLIC, 16 superpixels per image


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
                cache[method] = METHODS[method](model, batch.images, batch.labels,
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
@pytest.mark.parametrize("method", GENERIC)
def test_method_localizes_the_object(shapes, attributions, method):
    model, batch = shapes
    attr, reduce = attributions(method), method_reduce(method)
    masks = batch.masks
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
    assert mass > 1.5 * area, f"{method} does not beat a random map on relevance mass"


# measured (pointing, relevance mass) on the 500 images of seed 123_458 (objects' area 0.058;
# a uniform random map: 0.054, 0.058), with the options above
CAM_FIGURES = {
    "gradcam": (0.972, 0.316), "guided_gradcam": (0.888, 0.508), "gradcam_pp": (0.970, 0.267),
    "xgradcam": (0.972, 0.316), "layercam": (0.964, 0.270), "hirescam": (0.972, 0.316),
    "scorecam": (0.774, 0.215), "eigencam": (0.958, 0.454), "gradcam_elementwise": (0.964, 0.270),
    "eigengradcam": (0.960, 0.447), "cam": (0.972, 0.316), "ablationcam": (0.944, 0.281),
    "sscam": (0.560, 0.171), "iscam": (0.758, 0.195), "smoothgradcam_pp": (0.970, 0.267),
    "kpcacam": (0.870, 0.321), "shapleycam": (0.972, 0.316), "finercam": (0.938, 0.318),
    "fullgrad": (0.434, 0.112), "randomcam": (0.338, 0.137)}


@pytest.fixture(scope="module")
def shapes_500():
    batch = make_shapes(500, seed=123_458)
    return shapes_model(), batch


@pytest.mark.slow
@pytest.mark.parametrize("method", CAMS)
def test_cam_variants_localize_on_500_images(shapes_500, method):
    """Each CAM's pointing game and relevance mass on 500 fresh images, at least its measured
    figures less 0.05; the random CAM (random channel weights of the same activations) loses to
    every other CAM by 0.1 or more on both."""
    model, batch = shapes_500
    attr = METHODS[method](model, batch.images, batch.labels, **options(method))
    reduce = method_reduce(method)
    got = (M.pointing_game(attr, batch.masks, reduce=reduce).mean().item(),
           M.relevance_mass(attr, batch.masks, reduce=reduce).mean().item())
    print(f"{method}: pointing {got[0]:.3f}, relevance mass {got[1]:.3f}")
    pointing, mass = CAM_FIGURES[method]
    assert got[0] > pointing - 0.05 and got[1] > mass - 0.05, (method, got)
    assert method in CAM_FIGURES and set(CAM_FIGURES) == set(CAMS)
    floor = CAM_FIGURES["randomcam"]
    if method == "randomcam":
        assert got[0] < floor[0] + 0.05 and got[1] < floor[1] + 0.05, got
        return
    if method == "fullgrad":  # named on purpose: FullGrad sums every layer's bias gradients
        # (input-resolution terms included), which spread its mass: above the random map
        # (0.058) by 2x, below the random CAM's, whose maps are made of the object-centred
        # layer3 activations
        assert got[1] > 1.5 * batch.masks.float().mean().item() and got[0] > floor[0] + 0.05
        return
    assert got[0] > floor[0] + 0.1 and got[1] > floor[1] + 0.02, (method, got)


# measured (pointing, relevance mass) on the 200 images of seed 123_457 (objects' area 0.057;
# a uniform random map: 0.105, 0.057); extremal perturbation on the first 32 (random map:
# 0.094, 0.060; its 100 steps are 100 forward and backward passes per image). The pointing game
# counts tied maxima by their share in the object (ties="share"): the superpixel methods, XRAI
# and occlusion paint flat regions, whose first pixel in row-major order is their top-left
# corner (XRAI: 0.0 of 200 by the first maximum, 0.379 by the share)
BLACK_BOX_FIGURES = {
    "rise": (0.525, 0.166), "feature_ablation": (0.500, 0.379), "lime": (0.499, 0.423),
    "kernel_shap": (0.505, 0.416), "shapley_sampling": (0.499, 0.405),
    "occlusion": (0.477, 0.204), "blur_ig": (0.380, 0.277), "guided_ig": (0.405, 0.282),
    "noise_tunnel": (0.565, 0.185), "xrai": (0.379, 0.196),
    "extremal_perturbation": (0.312, 0.254)}
EXTREMAL_IMAGES = 32


@pytest.mark.slow
@pytest.mark.parametrize("method", BLACK_BOX)
def test_black_box_methods_localize_on_200_images(shapes, method):
    """Each black-box or path method beats a random map on pointing game and relevance mass,
    and reaches its measured figures less 0.05. The surrogate and Shapley methods work on SLIC
    superpixels (16 per image): on a grid of 16 x 16-pixel cells, larger than the objects,
    LIME and KernelSHAP with 64 samples score 0.064 (a random map's mass)."""
    from netlens.segments import slic

    model, batch = shapes
    n = EXTREMAL_IMAGES if method == "extremal_perturbation" else N_IMAGES
    images, labels, masks = batch.images[:n], batch.labels[:n], batch.masks[:n]
    opts = options(method)
    if method in SUPERPIXELS:
        opts[SUPERPIXELS[method]] = slic(images, n_segments=16)
    attr, reduce = METHODS[method](model, images, labels, **opts), method_reduce(method)
    random = M.random_map(model, images, generator=torch.Generator().manual_seed(0))
    floor = (M.pointing_game(random, masks, ties="share").mean().item(),
             M.relevance_mass(random, masks).mean().item())
    got = (M.pointing_game(attr, masks, ties="share", reduce=reduce).mean().item(),
           M.relevance_mass(attr, masks, reduce=reduce).mean().item())
    print(f"{method}: pointing {got[0]:.3f}, relevance mass {got[1]:.3f}, random {floor}")
    pointing, mass = BLACK_BOX_FIGURES[method]
    assert got[0] > pointing - 0.05 and got[1] > mass - 0.05, (method, got)
    assert got[0] > floor[0] + 0.1 and got[1] > 1.5 * floor[1], (method, got, floor)


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
