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
#     edit: occlusion.py, not this notebook
#     generated_from: occlusion.py
#     regenerate: python3 tasks.py notebooks
# ---

# %% [markdown]
# > `nbs/examples/occlusion.py` is the source of this notebook (jupytext percent format);
# > `occlusion.ipynb` is generated from it by `python3 tasks.py notebooks`. Edit the `.py`, not the
# > `.ipynb`.

# %% [markdown]
# # Occlusion
#
# Occlusion (Zeiler & Fergus, 2014) needs no gradient at all: slide a window over the
# image, replace what it covers by a baseline value, and record how much the target
# score drops. Each pixel gets the average drop of the windows that cover it, so the
# map `(B, 1, H, W)` reads directly as "hiding this region costs this much score";
# negative values mean that hiding the region *helps* the class.
#
# It is slow (one forward pass per window position) and coarse (nothing finer than
# the stride), but it tests the model's actual behaviour, which makes it a good
# reference for the faster methods. Three settings matter: `window` (what size of
# evidence can be hidden), `stride` (the resolution of the map) and `baseline` (what
# "hidden" looks like).

# %%
# %matplotlib inline
import torch
import torchvision
from IPython.display import display

import netlens as nl
from netlens.data import SHAPES_CLASSES

# %% [markdown]
# ## Model 1: the embedded shapes model
#
# `nl.zoo.shapes_model()` is a small ResNet that ships with netlens, trained on the synthetic
# shapes dataset of `nl.data.make_shapes`: one object (circle, square, triangle or plus) per
# image, and an elongated ellipse as a distractor that has nothing to do with the class. Every
# image comes with the object's mask, so we know where the evidence *is*, and can see whether
# an explanation points at it. The model takes raw `[0, 1]` pixels: no normalization, so every
# plotting call below passes `mean=None, std=None`.
#
# The images come from a fixed seed that the model was never trained on.

# %%
model = nl.zoo.shapes_model()          # no download: the weights ship with netlens
lens = nl.NetLens(model)               # the model itself is never changed
batch = nl.data.make_shapes(4, seed=2027)
x, y, masks = batch.images, batch.labels, batch.masks
with torch.no_grad():
    pred = model(x).argmax(1)
print("true:", [SHAPES_CLASSES[int(t)] for t in y])
print("pred:", [SHAPES_CLASSES[int(p)] for p in pred])

# %% [markdown]
# `nl.plot.show_maps` draws the comparisons below: one row per image, with the image, its
# ground-truth mask, then one panel per map, each scaled to `[0, 1]` by `nl.plot.normalize_map`
# (or, with `blend=True`, blended over the image by `nl.plot.overlay`). The object's outline is
# drawn over every map in cyan.

# %% [markdown]
# ### Window, stride and baseline
#
# Three settings, named window/stride and baseline, changing one thing at a time. The
# baseline matters: black (`baseline=0.0`) on a light background does not remove
# information, it *adds* a dark square, a shape this model knows well, and the map gets
# confusing. A tensor baseline, here each image's mean colour `(B, 3, 1, 1)`, makes
# "hidden" mean "like the rest of the image". Then the window: 16 pixels hide a whole
# object (objects are about 12-20 pixels across), 8 pixels hide part of one; with stride 4
# the map is finer, at the price of 225 windows per image instead of 49.
#
# The figure shows the positive part of each map (`clamp(min=0)`): the regions whose
# hiding lowers the score.

# %%
mean_colour = x.mean(dim=(2, 3), keepdim=True)        # (B, 3, 1, 1)
settings = {
    "16/8, black": dict(window=16, stride=8, baseline=0.0),
    "16/8, mean colour": dict(window=16, stride=8, baseline=mean_colour),
    "8/4, mean colour": dict(window=8, stride=4, baseline=mean_colour),
}
occluded = {name: lens.occlusion(x, y, **options) for name, options in settings.items()}
print(occluded["8/4, mean colour"].shape)
nl.plot.show_maps(x, {name: attr.clamp(min=0) for name, attr in occluded.items()}, masks,
                  mean=None, std=None)

# %% [markdown]
# Occlusion maps are signed. `nl.plot.normalize_map` with `reduce="sum"` keeps the sign
# (min-max scaled, so zero is not black but somewhere in between), and
# `nl.plot.positive_negative_saliency` separates the regions whose hiding hurts the
# class from those whose hiding helps it: hiding the distractor can *raise* the score,
# as if it competed with the object.

# %%
attr = occluded["8/4, mean colour"]
pos, neg = nl.plot.positive_negative_saliency(attr)
panels, titles = [], []
for i in range(len(x)):
    signed = nl.plot.normalize_map(attr[i], reduce="sum", clip=None)
    panels += [x[i], signed[0, 0].numpy(), pos[i, 0], neg[i, 0]]
    titles += [SHAPES_CLASSES[int(y[i])], "signed", "hiding hurts", "hiding helps"]
nl.plot.grid(panels, titles, ncols=4, mean=None, std=None, cmap="inferno",
             panel_size=1.7)

# %% [markdown]
# ### A non-square image, two objects, two targets
#
# Occlusion (like every netlens method) takes any image size. Here two shapes images of
# different classes are put side by side into one 64×128 image, and hidden with
# 16-pixel windows, stride 8 (7×15 windows). The target decides the answer: asked about
# one class, the map should point at that object, and at the other one for the other
# class.

# %%
pair = nl.data.make_shapes(8, seed=31)
left, right = 0, int((pair.labels != pair.labels[0]).nonzero()[0])
# side by side along the width: one (1, 3, 64, 128) image
wide = torch.cat([pair.images[left], pair.images[right]], dim=-1)[None]
wide_mask = torch.cat([pair.masks[left], pair.masks[right]], dim=-1)[None]
with torch.no_grad():
    probs = model(wide).softmax(1)[0]
print(wide.shape, {name: round(float(p), 3) for name, p in zip(SHAPES_CLASSES, probs)})

targets = [int(pair.labels[left]), int(pair.labels[right])]
wide_maps = {f"target: {SHAPES_CLASSES[t]}":
             lens.occlusion(wide, t, window=16, stride=8) for t in targets}
nl.plot.show_maps(wide, {name: attr.clamp(min=0) for name, attr in wide_maps.items()},
                  wide_mask, blend=True, mean=None, std=None, panel_size=3.0)

# %% [markdown]
# ### Occlusion next to Grad-CAM
#
# Grad-CAM needs one forward and one backward pass; occlusion with an 8-pixel window
# and stride 4 needs 225 forward passes per image, but it measures what the model
# actually does without the hidden pixels. Where the two agree, that is some
# reassurance about the cheap map on this model. The share of each map's positive
# mass on the object puts a number on it; Grad-CAM's map is upsampled from 16×16
# cells, so some of its mass spills around the object even when its peak is inside.

# %%
compare = {
    "occlusion 8/4": occluded["8/4, mean colour"].clamp(min=0),
    "Grad-CAM": lens.gradcam(x, y),
    "Score-CAM": lens.scorecam(x, y),
}
nl.plot.show_maps(x, compare, masks, blend=True, mean=None, std=None)

# %%
for name, attr in compare.items():
    mass = attr.clamp(min=0)   # CAMs are >= 0 already
    on_object = (mass * masks).sum(dim=(1, 2, 3)) / mass.sum(dim=(1, 2, 3))
    print(f"{name:>14s}: {on_object.mean():.0%} of the positive mass on the object")

# %% [markdown]
# ## Model 2: a torchvision ResNet-18 (random weights)
#
# The same calls work on any torchvision-style classifier. No weights can be downloaded where
# these notebooks are tested, so this ResNet-18 keeps its random initialization (seeded):
# its maps show what the *architecture and the image* produce, not what a trained network
# learned, which is itself worth seeing (Adebayo et al., "Sanity Checks for Saliency Maps",
# 2018): a method whose map looks just as convincing for random weights is telling you about
# the image, not about the model. The last section shows the pretrained path.
#
# The photo is Grace Hopper from matplotlib's sample data (public domain); if that file is
# missing, a drawn stand-in is used. ImageNet models take normalized input:
# `nl.image.normalize` applies ImageNet's mean and std, and the plotting functions undo it by
# default. Target 652 is ImageNet's "military uniform", the class trained ImageNet
# models usually give this photo.

# %%
torch.manual_seed(0)
resnet = torchvision.models.resnet18().eval()    # random init: nothing is downloaded
resnet_lens = nl.NetLens(resnet)
TARGET = 652                                     # "military uniform"
print(nl.data.imagenet_classes()[TARGET])

# %% [markdown]
# A portrait-format input, 150×128 (height × width, the photo's own aspect ratio), with
# ImageNet normalization. A 32-pixel window with stride 16 costs 9×7 = 63 forward
# passes, a 64-pixel window with stride 32 only 4×3 = 12, for a much coarser map.
# `baseline=0.0` on a normalized image is ImageNet's mean colour, not black. Again,
# with random weights the maps say nothing about uniforms; compare where they agree
# with Grad-CAM.

# %%
photo = nl.image.normalize(nl.data.example_photo((150, 128))[0])
photo_maps = {
    "occlusion 32/16": resnet_lens.occlusion(photo, TARGET, window=32, stride=16),
    "occlusion 64/32": resnet_lens.occlusion(photo, TARGET, window=64, stride=32),
    "Grad-CAM layer3": resnet_lens.gradcam(photo, TARGET, layer="layer3"),
}
print(photo.shape, photo_maps["occlusion 32/16"].shape)
positive = {name: attr.clamp(min=0) for name, attr in photo_maps.items()}
nl.plot.show_maps(photo, positive, blend=True)

# %% [markdown]
# ## With pretrained weights
#
# With internet access, the same code explains a trained ImageNet model. Set
# `PRETRAINED = True` to download ResNet-50's weights (about 100 MB, once, into torch's cache)
# and run the cell. It is off by default so that the notebook runs anywhere, tests included.

# %%
PRETRAINED = False   # True downloads torchvision's ResNet-50 ImageNet weights

if PRETRAINED:
    net = torchvision.models.resnet50(weights="DEFAULT").eval()
    net_lens = nl.NetLens(net)
    photo = nl.image.normalize(nl.data.example_photo(224)[0])
    labels = nl.data.imagenet_classes()
    with torch.no_grad():
        top = net(photo).softmax(1).topk(3)
    for p, c in zip(top.values[0], top.indices[0]):
        print(f"{labels[int(c)]:>20s}  {float(p):.2f}")
    target = int(top.indices[0, 0])
    fig = nl.plot.show_maps(photo, {
        "occlusion 32/16": net_lens.occlusion(photo, target, window=32,
                                              stride=16).clamp(min=0),
        "occlusion 64/32": net_lens.occlusion(photo, target, window=64,
                                              stride=32).clamp(min=0),
        "Grad-CAM": net_lens.gradcam(photo, target),
    }, blend=True)
    display(fig)
