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
#     edit: Visual-Gradient_backprop.py, not this notebook
#     generated_from: Visual-Gradient_backprop.py
#     regenerate: python3 tasks.py notebooks
# ---

# %% [markdown]
# > `nbs/examples/Visual-Gradient_backprop.py` is the source of this notebook (jupytext percent
# > format); `Visual-Gradient_backprop.ipynb` is generated from it by `python3 tasks.py notebooks`.
# > Edit the `.py`, not the `.ipynb`.

# %% [markdown]
# # Gradient attributions: saliency, guided backprop, SmoothGrad, integrated gradients
#
# A gradient attribution asks: *if this pixel changed a little, how much would the
# score of the target class change?* The answer is a map with the input's shape
# `(B, 3, H, W)`. This notebook runs every gradient method of netlens on two models,
# the small shapes model that ships with netlens (where the right answer is known) and
# a torchvision ResNet-18, and shows how to read each picture.
#
# Every method is a method of `nl.NetLens` and also a plain function in
# `nl.attribution` with the same arguments: `(model, x, target, **options)`. Results
# are raw tensors; only the plotting functions scale them for display.

# %%
# %matplotlib inline
import numpy as np
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
# ### Saliency
#
# The plain gradient of the target logit with respect to the input pixels (Simonyan et
# al., 2014). It is signed and has one value per colour channel; for display,
# `normalize_map` takes the largest absolute value over the channels and clips the top
# 1% so that a few extreme pixels do not wash out the rest. Bright means "the score is
# sensitive here".
#
# Sensitivity is not the same as evidence. For the circle in the last row, the gradient
# is largest on the distractor ellipse, a shape not far from a circle: changing those
# pixels would change the circle score, even though the model's decision rests on the
# circle (the Grad-CAM and occlusion notebooks show it). The ground-truth mask makes
# such a mismatch visible.

# %%
saliency = lens.saliency(x, y)     # target: the true class of each image
print(saliency.shape, saliency.dtype)
nl.plot.show_maps(x, {"saliency": saliency}, masks, mean=None, std=None)

# %% [markdown]
# ### Input × gradient
#
# The gradient multiplied by the input itself (Shrikumar et al., 2016): a first-order
# estimate of each pixel's contribution to the score, rather than of its sensitivity.
# Black pixels get zero whatever their gradient and dark ones are damped, so the same
# sensitivity shows less on a dark background than on a light one: a reminder that
# the map depends on where "zero" is.
#
# ### Guided backpropagation
#
# The gradient, except that at every ReLU only positive gradients are passed back
# (Springenberg et al., 2015). The result is sharper and cleaner, because it keeps
# only the paths that *increase* activations, but it is known to behave like an edge
# detector of the image rather than an explanation of the class. netlens applies the
# rule to every ReLU call, including functional `F.relu` calls and a ReLU module that
# is reused, as in this ResNet-style model.

# %%
maps = {
    "saliency": saliency,
    "input × grad": lens.input_x_gradient(x, y),
    "guided backprop": lens.guided_backprop(x, y),
}
nl.plot.show_maps(x, maps, masks, mean=None, std=None)

# %% [markdown]
# ### Positive and negative saliency
#
# A gradient has a sign: positive where brightening a pixel raises the score, negative
# where it lowers it. `nl.plot.positive_negative_saliency` splits an attribution into
# the two parts, each scaled to `[0, 1]` per image and kept in colour, the way the
# original netlens showed them. Here the two parts of the guided-backprop map and of
# the plain gradient: guided backprop is mostly positive by construction, the plain
# gradient is not.

# %%
panels, titles = [], []
for name in ("saliency", "guided backprop"):
    pos, neg = nl.plot.positive_negative_saliency(maps[name])
    for i in range(2):
        panels += [x[i], pos[i], neg[i]]
        titles += [SHAPES_CLASSES[int(y[i])], f"{name} +", f"{name} −"]
nl.plot.grid(panels, titles, ncols=6, mean=None, std=None, panel_size=1.7)


# %% [markdown]
# ### SmoothGrad and its variants
#
# Gradients of ReLU networks jump from pixel to pixel. SmoothGrad (Smilkov et al.,
# 2017) averages the gradient over `n` copies of the image with Gaussian noise of
# standard deviation `sigma` times the image's value range. Variants:
#
# - `variant="mean"`: the average gradient (signed);
# - `variant="squared"`: the average *squared* gradient (SmoothGrad²), all positive,
#   which sharpens the strongest regions;
# - `variant="vargrad"`: the variance of the gradients over the noise;
# - `guided=True`: average guided-backprop gradients instead of plain ones.
#
# The noise comes from a `torch.Generator`, so a seeded generator makes the result
# reproducible; the global random state is never used. A small `n` is enough to see
# the effect; use 25-50 for final pictures.

# %%
def noise(seed=0):
    return torch.Generator().manual_seed(seed)

smooth = {
    "mean": lens.smooth_grad(x, y, n=12, sigma=0.15, generator=noise()),
    "squared": lens.smooth_grad(x, y, n=12, variant="squared", generator=noise()),
    "vargrad": lens.smooth_grad(x, y, n=12, variant="vargrad", generator=noise()),
    "guided": lens.smooth_grad(x, y, n=12, guided=True, generator=noise()),
}
nl.plot.show_maps(x, {"saliency": saliency, **smooth}, masks, mean=None, std=None)

# %% [markdown]
# ### Integrated gradients
#
# Integrated gradients (Sundararajan et al., 2017) add up the gradient along a straight
# path from a *baseline* image `b` to the input `x`, and multiply by `x - b`. The
# result has a bookkeeping property, *completeness*: the attributions sum to the score
# difference `f(x) - f(b)`. With `return_delta=True` netlens also returns the error of
# that sum, which tells you whether `steps` was enough.
#
# The baseline is the "absence of signal" each pixel is compared with, and it shapes
# the picture: `"zeros"` (black, the default), `"blur"` (a blurred copy of the image:
# only edges and details count) or `"uniform"` (noise within the image's range, drawn
# from `generator`). A number or a tensor works too.
#
# Integrated gradients are *signed*: a negative value is a pixel whose change from the
# baseline lowers the score. `signed=True` keeps the sign (channels summed, a diverging
# colormap centred at zero: red raises the score, blue lowers it) and `scale="shared"` puts
# the three baselines on one colour scale, so their magnitudes compare; `colorbar=True`
# prints that scale.

# %%
integrated = {}
for baseline in ("zeros", "blur", "uniform"):
    attr, delta = lens.integrated_gradients(
        x, y, steps=32, baseline=baseline, return_delta=True, generator=noise())
    integrated[f"IG, {baseline}"] = attr
    total = attr.sum(dim=(1, 2, 3))
    print(f"{baseline:>8s}: sum of attributions {np.round(total.tolist(), 2)}, "
          f"completeness error {np.round(delta.tolist(), 3)}")
nl.plot.show_maps(x, integrated, masks, mean=None, std=None, signed=True, scale="shared",
                  colorbar=True)

# %% [markdown]
# The completeness error shrinks as the number of steps grows, though not smoothly: a
# ReLU network is piecewise linear, so the integrand has kinks that the quadrature
# rule (Gauss-Legendre by default) can straddle. If the error is a sizeable fraction of
# the sum, take more steps.

# %%
for steps in (4, 8, 16, 32):
    _, delta = lens.integrated_gradients(x, y, steps=steps, return_delta=True)
    print(f"steps={steps:3d}: largest |error| {delta.abs().max():.4f}")

# %% [markdown]
# ### The gradient of one channel of one layer
#
# `layer_channel_gradient` differentiates the mean activation of one channel of a
# hidden layer instead of a class score: which pixels would make that channel fire
# more? Layers are named as in PyTorch (`lens.fm.layer_names` lists them). Here, for
# each class, the channel of the last layer `layer3` that the classifier weighs most
# heavily for that class, one column per class, the same channels for every image.
#
# Such a channel need not be specific to its class: a channel can support "circle"
# because it detects round edges, and then it reacts to the ellipses as well. Reading
# a hidden channel takes more than one picture; the feature-visualization notebooks
# show what pattern excites a channel most.

# %%
print(lens.fm.layer_names[:8], "...")
channel_maps = {}
for k, name in enumerate(SHAPES_CLASSES):
    channel = int(model.fc.weight[k].argmax())
    channel_maps[f"{name}: ch {channel}"] = lens.layer_channel_gradient(
        x, "layer3", channel)
nl.plot.show_maps(x, channel_maps, masks, titles=[SHAPES_CLASSES[int(t)] for t in y],
                  mean=None, std=None)

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
# All gradient methods on the photo, in one figure. With random weights the plain
# gradients are close to noise (with the grid pattern of the strided convolutions).
# The two methods that multiply by the input, input × gradient and integrated
# gradients, still show the portrait: that structure comes from the image, not from
# anything the network knows, so a recognisable picture alone proves nothing.

# %%
raw, _ = nl.data.example_photo(128)     # (1, 3, 128, 128) in [0, 1]
photo = nl.image.normalize(raw)          # ImageNet mean and std
photo_maps = {
    "saliency": resnet_lens.saliency(photo, TARGET),
    "input × grad": resnet_lens.input_x_gradient(photo, TARGET),
    "guided backprop": resnet_lens.guided_backprop(photo, TARGET),
    "SmoothGrad": resnet_lens.smooth_grad(photo, TARGET, n=6, generator=noise()),
    "IG, blur": resnet_lens.integrated_gradients(photo, TARGET, steps=10,
                                                 baseline="blur"),
    "layer2 ch 5": resnet_lens.layer_channel_gradient(photo, "layer2", 5),
}
nl.plot.show_maps(photo, photo_maps)

# %% [markdown]
# `nl.plot.show` is the quick look: each image beside its attribution blended over it.

# %%
nl.plot.show(photo, photo_maps["guided backprop"], titles="guided backprop")

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
        "saliency": net_lens.saliency(photo, target),
        "guided backprop": net_lens.guided_backprop(photo, target),
        "SmoothGrad": net_lens.smooth_grad(photo, target, n=25, generator=noise()),
        "IG, blur": net_lens.integrated_gradients(photo, target, baseline="blur"),
    })
    display(fig)
