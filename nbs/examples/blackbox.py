# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: language_info,netlens
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   language_info:
#     name: python
#   netlens:
#     edit: blackbox.py, not this notebook
#     generated_from: blackbox.py
#     regenerate: python3 tasks.py notebooks
# ---

# %% [markdown]
# > `nbs/examples/blackbox.py` is the source of this notebook (jupytext percent format);
# > `blackbox.ipynb` is generated from it by `python3 tasks.py notebooks`. Edit the `.py`, not the
# > `.ipynb`.

# %% [markdown]
# # Black-box and path attributions: occlusion, ablation, RISE, LIME, SHAP, extremal, XRAI
#
# The methods of this notebook never look inside the model: they change the input, run the
# model forward and watch the target's score. No gradient, no hook, no rule per layer, so they
# work on any model, even one that is not differentiable, and what they measure is the model's
# actual behaviour. The price is the number of forward passes, from a few dozen to thousands
# per image, where a gradient method needs one backward pass.
#
# - `occlusion` (Zeiler & Fergus 2014): a window slides over the image and is set to a
#   baseline; a pixel gets the mean score drop of the windows over it.
# - `feature_ablation`: each region in turn is set to the baseline; it gets the score drop.
# - `rise` (Petsiuk et al. 2018): random masks over a coarse grid keep part of the image; a
#   pixel gets the mean score of the masks, weighted by how much of it each mask kept.
# - `lime` (Ribeiro et al. 2016): random subsets of the regions are kept; a region gets its
#   coefficient in a local linear model of the score.
# - `kernel_shap` (Lundberg & Lee 2017): subsets drawn by the Shapley kernel; a weighted
#   linear fit gives each region's Shapley value.
# - `shapley_sampling` (Štrumbelj & Kononenko 2014): the regions are switched on one after
#   another in random orders; a region gets the mean change of the score when it comes on.
#
# The region methods take `mask=`/`segments=`: a grid (`nl.segments.grid`) or superpixels
# (`nl.segments.slic`, ...). Each is a function of `nl.attribution` (and a method of
# `nl.NetLens`) with the arguments `(model, x, target, **options)`; the stochastic ones take a
# `torch.Generator`, never the global random state.

# %%
# %matplotlib inline
import time

import torch
from torch import nn

import netlens as nl
from netlens.data import SHAPES_CLASSES

torch.manual_seed(0)

# %% [markdown]
# ## The shapes model, and a counter of forward passes
#
# `nl.zoo.shapes_model()` is the small ResNet that ships with netlens, trained on the
# synthetic shapes of `nl.data.make_shapes`: one object (circle, square, triangle or plus) per
# 64×64 image, an elongated ellipse as a distractor, and the object's mask, so we know where
# the evidence is. It takes raw `[0, 1]` pixels (`mean=None, std=None` in the plots). We take
# 32 images from a seed the model was never trained on: the methods run on all of them and
# the localization scores at the end average over them; the pictures show the first four.
#
# To count what each method costs, the model is wrapped in a module that counts the images it
# is run on: every forward pass of a method goes through it.

# %%
class Counted(nn.Module):
    """The model, counting the images it is run on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.model(x)


model = nl.zoo.shapes_model()
counted = Counted(model).eval()
batch = nl.data.make_shapes(32, seed=2027)
x, y, masks = batch.images, batch.labels, batch.masks
with torch.no_grad():
    accuracy = (model(x).argmax(1) == y).float().mean()
print(x.shape, f"accuracy {accuracy:.0%}, object area {masks.float().mean():.1%} of the image")
titles = [SHAPES_CLASSES[int(t)] for t in y[:4]]

# %% [markdown]
# ## Regions: a grid or superpixels
#
# `nl.segments.grid(x, 8)` cuts every image into 8×8 cells of 8 pixels, the same for all
# images: `(1, 1, H, W)`. `nl.segments.slic` follows the image instead: SLIC superpixels
# (Achanta et al. 2012) group neighbouring pixels of similar colour, so an object tends to be
# one or a few regions, `(B, 1, H, W)`, numbered per image. Superpixels need scikit-image,
# an optional dependency of netlens (`pip install scikit-image`); without it this notebook
# falls back to the grid. Below, each region is painted a random colour.

# %%
grid = nl.segments.grid(x, 8)
try:
    superpixels = nl.segments.slic(x, n_segments=40, compactness=10.0)
except ImportError as error:
    print(error)
    print("superpixels need scikit-image: pip install scikit-image; using the 8x8 grid")
    superpixels = grid.expand(len(x), -1, -1, -1)
counts = torch.tensor([len(s.unique()) for s in superpixels])
print(f"grid: {len(grid.unique())} regions; superpixels: {counts.float().mean():.1f} per image "
      f"({int(counts.min())} to {int(counts.max())})")
colours = torch.Generator().manual_seed(1)
nl.plot.show_maps(x[:4], {
    "grid 8×8": nl.segments.paint(torch.rand(4, 64, generator=colours), grid),
    "SLIC": nl.segments.paint(torch.rand(4, int(superpixels.max()) + 1, generator=colours),
                              superpixels[:4]),
}, masks[:4], titles=titles, mean=None, std=None, cmap="tab20", clip=None, outline=None)

# %% [markdown]
# ## What replaces a hidden region
#
# Hiding a region means setting it to a *baseline*, and the baseline is part of the question.
# These objects are mostly dark on a light background: black (`baseline=0.0`) does not remove
# an object, it paints a dark patch, a shape this model knows well. Each image's mean colour
# `(B, 3, 1, 1)` makes "hidden" mean "like the rest of the image", and it is what every
# method below uses. RISE has no baseline: it multiplies the image by its masks, which is
# black for raw pixels.
#
# ## Six methods, their cost and their maps
#
# The settings are small, to keep this notebook fast (the defaults in brackets):
#
# - occlusion: a 16-pixel window, stride 8: 7×7 = 49 windows;
# - feature ablation: each superpixel once;
# - RISE: 64 masks on a 7×7 grid (4000, the paper's number for ImageNet), scored by the
#   class probability as in the paper (`nl.targets.Class(y, score="softmax")`): a mean of
#   logits would shift the whole map by the masked images' mean logit;
# - LIME and KernelSHAP: 64 samples of the superpixels (1000);
# - Shapley sampling: 2 random orders of the superpixels (25).
#
# Each method runs on the 32 images; `seconds` is its runtime (`time.perf_counter`), `passes`
# the images the model was run on, per image, clean images included. The superpixel methods
# run one image at a time: in one call, the regions are numbered per image but every image
# gets as many as the image with the most, which costs passes for regions that an image does
# not have, and gives LIME and KernelSHAP coefficients for them.

# %%
mean_colour = x.mean(dim=(2, 3), keepdim=True)      # (B, 3, 1, 1)


def seed():
    return torch.Generator().manual_seed(0)


def run(method, n=len(x)):
    """``method(counted)``, and its cost: seconds, and images the model ran on per image."""
    counted.images = 0
    start = time.perf_counter()
    result = method(counted)
    return result, (time.perf_counter() - start, counted.images / n)


def each_image(method):
    """``method(model, i)`` on image ``i`` alone, for every image, concatenated."""
    return lambda m: torch.cat([method(m, slice(i, i + 1)) for i in range(len(x))])


A = nl.attribution
methods = {
    "occlusion": lambda m: A.occlusion(m, x, y, window=16, stride=8, baseline=mean_colour,
                                       progress=False),
    "feature_ablation": each_image(lambda m, i: A.feature_ablation(
        m, x[i], y[i], mask=superpixels[i], baseline=mean_colour[i], progress=False)),
    "rise": lambda m: A.rise(m, x, nl.targets.Class(y, score="softmax"), n=64, cells=7,
                             generator=seed(), progress=False),
    "lime": each_image(lambda m, i: A.lime(
        m, x[i], y[i], n=64, segments=superpixels[i], baseline=mean_colour[i],
        generator=seed(), progress=False)),
    "kernel_shap": each_image(lambda m, i: A.kernel_shap(
        m, x[i], y[i], n=64, segments=superpixels[i], baseline=mean_colour[i],
        generator=seed(), progress=False)),
    "shapley_sampling": each_image(lambda m, i: A.shapley_sampling(
        m, x[i], y[i], n_permutations=2, segments=superpixels[i], baseline=mean_colour[i],
        generator=seed(), progress=False)),
}
maps, cost = {}, {}
print(f"{'method':>17s} {'seconds':>8s} {'passes per image':>17s}")
for name, method in methods.items():
    maps[name], cost[name] = run(method)
    print(f"{name:>17s} {cost[name][0]:8.2f} {cost[name][1]:17.1f}")
print(maps["lime"].shape)

# %% [markdown]
# The counts are what each method's definition predicts: occlusion 49 windows + 1 clean image,
# feature ablation one pass per superpixel + 1 (about 31 per image), RISE one per mask + 1,
# LIME and KernelSHAP one per sample + 1, Shapley sampling `1 + orders × (S - 1)` + 1 for `S`
# superpixels (the fully switched-on image is `x` itself). The time per pass is not quite the
# same for all (feature ablation's batches, one per image and of varying size, are small),
# but to first order the cost of a black-box method is its number of forward passes.
#
# The maps, on the first four images. Five of them are signed (a negative value: hiding the
# region *raised* the score); `signed=True` shows red for evidence for the class, blue
# against. RISE's map is a mean probability, positive everywhere; what it says is where it is
# *higher*, so it is drawn minus its image's mean.

# %%
rise = maps["rise"][:4]
shown = {name: attr[:4] for name, attr in maps.items()}
shown["rise - mean"] = rise - rise.mean(dim=(2, 3), keepdim=True)
del shown["rise"]
nl.plot.show_maps(x[:4], shown, masks[:4], titles=titles, mean=None, std=None, signed=True)

# %% [markdown]
# How to read them:
#
# - **Occlusion** is coarse (nothing finer than the 8-pixel stride) and blurred by the
#   overlapping windows, but measures the score drop directly.
# - **Feature ablation** on superpixels follows the object's outline, since the object is one
#   or a few superpixels: hiding it is what costs the score. It inherits the segmentation's
#   mistakes: in the first image, SLIC merged a part of the square with the background.
# - **LIME, KernelSHAP and Shapley sampling** estimate each region's share of the score when
#   the others are on or off in varying combinations. Where one superpixel is the object
#   (the plus, the triangle) they agree with feature ablation; where the score depends on
#   several regions (the squares), 64 samples for about 30 regions leave LIME's and
#   KernelSHAP's fits noisy: they need a few hundred. KernelSHAP's and Shapley sampling's
#   values add up to `f(x) - f(baseline)`, LIME's coefficients need not.
# - **RISE** with 64 masks is noisy: each pixel's value is an average over the masks that
#   kept it, and 64 is far too few; it needs thousands. Its map is a probability, never
#   negative.
#
# ## Grid or superpixels?
#
# The same two region methods on the 8×8 grid, first four images only. The grid does not
# know where the object is: one object spreads over several cells, and each cell holds a
# part of the object and a part of the background. KernelSHAP has more regions to estimate
# (64 instead of about 30), with 128 samples. The grid is the same for every image, so these
# run on the four images at once.

# %%
regions = {}
for name, method in {
    "ablation, grid": lambda m: A.feature_ablation(m, x[:4], y[:4], mask=grid,
                                                   baseline=mean_colour[:4], progress=False),
    "KernelSHAP, grid": lambda m: A.kernel_shap(m, x[:4], y[:4], n=128, segments=grid,
                                                baseline=mean_colour[:4], generator=seed(),
                                                progress=False),
}.items():
    regions[name], (seconds, passes) = run(method, 4)
    print(f"{name:>17s}: {seconds:.2f} s, {passes:.0f} passes per image")
nl.plot.show_maps(x[:4], {
    "ablation, grid": regions["ablation, grid"],
    "ablation, SLIC": maps["feature_ablation"][:4],
    "KernelSHAP, grid": regions["KernelSHAP, grid"],
    "KernelSHAP, SLIC": maps["kernel_shap"][:4],
}, masks[:4], titles=titles, mean=None, std=None, signed=True)

# %% [markdown]
# KernelSHAP's values are Shapley values of the regions, so they add up to the score's drop
# from the all-hidden image, `f(x) - f(baseline)`, and so do Shapley sampling's: the check,
# on the 32 images.

# %%
with torch.no_grad():
    drop = (model(x) - model(mean_colour.expand_as(x))).gather(1, y[:, None])[:, 0]
for name in ("kernel_shap", "shapley_sampling"):
    # one value per region painted on its pixels: sum each region once
    values = torch.stack([torch.stack([attr[0][s[0] == r][0] for r in s.unique()]).sum()
                          for attr, s in zip(maps[name], superpixels)])
    print(f"{name:>17s}: largest |Σ values - (f(x) - f(baseline))| = "
          f"{float((values - drop).abs().max()):.1e} (drops up to {float(drop.abs().max()):.1f})")

# %% [markdown]
# ## Six more: permutation, extremal perturbation, Blur IG, Guided IG, XRAI, noise tunnel
#
# Six more methods of `nl.attribution`, on the same 32 images, with small settings again (the
# defaults in brackets):
#
# - `feature_permutation`: each region's pixels are shuffled *across the batch* (image `i`
#   gets region `r` of another image); a region gets the score drop. One pass per region, but
#   it needs a batch whose images differ: here the 8×8 grid, the same for every image.
# - `extremal_perturbation` (Fong et al. 2019): the smooth mask of a given area (here 10% of
#   the image) that keeps the most of the score when the rest is blurred, found by gradient
#   descent on the mask: 100 steps (800), each a forward and a backward pass, so it runs on
#   the first 8 images only; the blur goes up to a Gaussian of std 20 pixels (`max_blur`; the
#   default is sized for ImageNet images, and at 64 px it blurs too little to hide a shape).
# - `blur_ig` (Xu et al. 2020): integrated gradients along the path from the image blurred
#   away to the image itself, no baseline to choose: 32 steps (100).
# - `guided_ig` (Kapishnikov et al. 2021): integrated gradients along an adaptive path that
#   moves the pixels with the smallest gradient first: 32 steps (200).
# - `xrai` (Kapishnikov et al. 2019): regions (superpixels at several scales) ranked by how
#   much of an attribution map, integrated gradients by default, they hold per pixel, merged
#   greedily; each pixel gets the gain of the region it joined with.
# - `noise_tunnel`: any registered method averaged over noisy copies of the image
#   (`variant="mean"`, `"squared"` or `"vargrad"`); here saliency with 16 copies (50), which
#   is SmoothGrad.

# %%
more = {
    "feature_permutation": lambda m: A.feature_permutation(m, x, y, mask=grid,
                                                           generator=seed(), progress=False),
    "blur_ig": lambda m: A.blur_ig(m, x, y, steps=32, progress=False),
    "guided_ig": lambda m: A.guided_ig(m, x, y, steps=32, progress=False),
    "xrai": lambda m: A.xrai(m, x, y, options={"steps": 16}, progress=False),
    "noise_tunnel": lambda m: A.noise_tunnel(m, x, y, method="saliency", n=16, sigma=0.15,
                                             generator=seed(), progress=False),
}
print(f"{'method':>19s} {'seconds':>8s} {'passes per image':>17s}")
for name, method in more.items():
    maps[name], cost[name] = run(method)
    print(f"{name:>19s} {cost[name][0]:8.2f} {cost[name][1]:17.1f}")
extremal, (seconds, passes) = run(lambda m: A.extremal_perturbation(
    m, x[:8], y[:8], areas=0.1, steps=100, max_blur=20.0, progress=False), 8)
print(f"{'extremal (10%)':>19s} {seconds:8.2f} {passes:17.1f}  (8 images)")
print({name: tuple(maps[name].shape) for name in more}, tuple(extremal.shape))
nl.plot.show_maps(x[:4], {**{name: maps[name][:4] for name in more}, "extremal": extremal[:4]},
                  masks[:4], titles=titles, mean=None, std=None)
print("share of each image where the extremal mask is above 0.5, the area asked for 0.10: "
      f"{[round(float(a), 3) for a in (extremal > 0.5).float().mean(dim=(1, 2, 3))]}")
for name, attr in {"extremal (10%)": extremal,
                   "random map": nl.metrics.random_map(model, x[:8], generator=seed())}.items():
    hits = nl.metrics.pointing_game(attr, masks[:8], ties="share").mean()
    mass = nl.metrics.relevance_mass(attr, masks[:8]).mean()
    print(f"{name:>19s} on 8 images: pointing game {float(hits):.2f}, relevance mass "
          f"{float(mass):.2f}")

# %% [markdown]
# Their cost is again their passes: feature permutation one per grid cell + 1, Blur IG and
# Guided IG one forward and backward pass per step, XRAI the IG it ranks (16 steps, 2 images
# per step) plus the superpixels, the noise tunnel one saliency per noisy copy; extremal
# perturbation's 100 optimisation steps are the most expensive per image of this notebook.
# Blur IG, Guided IG and the noise tunnel return a map per colour channel, the others one.
# The localization table below scores them with the rest: feature permutation on the grid
# points at the object on 71% of the images, Blur IG on 62%, the noise tunnel (SmoothGrad) on
# 44%, all above the random map's 3%.
#
# XRAI's map is constant on each region, and its best region holds the object but is larger
# than it: its maxima are the whole region, of which 39% lie on the object, on average (the
# first maximum in row-major order, the region's top-left corner, would miss on every image).
# Extremal perturbation's mask keeps the object on 3 of the 8 images and puts a third of its
# mass on it, five times the random map's share.

# %% [markdown]
# `nl.plot.explain(kind="cam")` is the quick look at one map: the heat map, the heat map over
# the image and the map in grayscale, here feature ablation's positive part (what hiding
# costs).

# %%
nl.plot.explain(x[:2], maps["feature_ablation"][:2].clamp(min=0), kind="cam", cmap="inferno",
                mean=None, std=None, titles=titles[:2])

# %% [markdown]
# ## Which map points at the object?
#
# Two localization scores over the 32 images, against the object masks:
#
# - **pointing game** (`nl.metrics.pointing_game`): the share of images whose map has its
#   maximum on the object; a map with several equal maxima (a region or superpixel painted
#   with one value: XRAI, the superpixel methods, occlusion's windows) counts the share of
#   them on the object (`ties="share"`, the hit rate of a random tie-break), where the
#   default (`ties="first"`, Quantus's and TorchRay's rule) takes the first in row-major
#   order, the region's top-left corner, outside a small object more often than not;
# - **relevance mass** (`nl.metrics.relevance_mass`): the share of each map's positive
#   relevance that lies on the object, averaged.
#
# A uniform random map (`nl.metrics.random_map`) is the chance level: it scores about the
# object's share of the image (6% here). Grad-CAM, one forward and one backward pass, is the
# gradient reference.

# %%
maps["random map"] = nl.metrics.random_map(model, x, generator=seed())
maps["Grad-CAM (gradient)"] = A.gradcam(model, x, y)
cost["random map"], cost["Grad-CAM (gradient)"] = (0.0, 0.0), (0.0, 1.0)
print(f"{'':>19s} {'pointing game':>14s} {'relevance mass':>15s} {'passes':>7s}")
for name, attr in maps.items():
    hits = nl.metrics.pointing_game(attr, masks, ties="share").mean()
    mass = nl.metrics.relevance_mass(attr, masks).mean()
    print(f"{name:>19s} {float(hits):14.2f} {float(mass):15.2f} {cost[name][1]:7.0f}")

# %% [markdown]
# With a mean-colour baseline, the four region methods on superpixels find the object on 84
# to 90% of the images and put 60 to 74% of their positive relevance on it. Occlusion's
# 16-pixel windows point at the object less often (76%) and spread over the background
# around it. RISE with 64 masks points at it on 41% of the images, well above chance, but its
# map is positive everywhere, so its mass is spread over the whole image, at the level of the
# random map. Grad-CAM points at the object at least as often as the best of them, for one
# forward and one backward pass, but its coarse 16×16 map spreads its mass around the object. These
# scores come from 32 images of one synthetic test-bed: the evaluation notebook has more
# metrics (deletion, insertion, sanity checks), and `nl.metrics.compare` runs them all at
# once.
