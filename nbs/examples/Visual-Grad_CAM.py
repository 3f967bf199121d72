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
#     edit: Visual-Grad_CAM.py, not this notebook
#     generated_from: Visual-Grad_CAM.py
#     regenerate: python3 tasks.py notebooks
# ---

# %% [markdown]
# > `nbs/examples/Visual-Grad_CAM.py` is the source of this notebook (jupytext percent format);
# > `Visual-Grad_CAM.ipynb` is generated from it by `python3 tasks.py notebooks`. Edit the `.py`,
# > not the `.ipynb`.

# %% [markdown]
# # Class activation maps: Grad-CAM and its relatives
#
# A class activation map (CAM) looks at one layer of the network, usually the last one
# that still has a spatial layout, and asks which of its positions support the target
# class. It weighs each channel of that layer's activation `A` and adds the channels
# up: `map = relu(Σ_c w_c A_c)`. The methods differ only in how they choose the
# weights. The result is a coarse map, `(B, 1, H, W)` after upsampling to the input
# size, that says *where* rather than *which pixels*.
#
# This notebook compares the CAM methods of netlens on the shapes model that ships
# with netlens (where the object's mask is the right answer) and on a torchvision
# ResNet-18.

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
# ### Grad-CAM
#
# Grad-CAM (Selvaraju et al., 2017) weighs each channel by the average gradient of the
# target score over that channel's positions: channels whose increase would raise the
# score count positively. With `layer=None` netlens takes the last layer with a spatial
# output, here `layer3` (16×16 cells for a 64×64 image). `nl.plot.show` blends each map
# over its image.

# %%
print("default layer:", lens.fm.last_spatial_layer())
cam = lens.gradcam(x, y)                  # (B, 1, H, W), upsampled to the input
titles = [SHAPES_CLASSES[int(t)] for t in y]
nl.plot.show(x, cam, titles=titles, mean=None, std=None, ncols=4)

# %% [markdown]
# `nl.plot.show_maps` draws the comparisons below: one row per image, with the image, its
# ground-truth mask, then one panel per map, each scaled to `[0, 1]` by `nl.plot.normalize_map`
# (or, with `blend=True`, blended over the image by `nl.plot.overlay`). The object's outline is
# drawn over every map in cyan.

# %% [markdown]
# `interpolate="none"` returns the map at the layer's own resolution, before the
# bilinear upsampling; it shows how coarse the evidence really is. An earlier layer
# (`layer=` takes any name of `lens.fm.layer_names`) has smaller receptive fields and
# more local, less class-specific features: its map follows edges and colours more
# than objects.

# %%
raw_cam = lens.gradcam(x, y, interpolate="none")
print("layer3 map:", tuple(raw_cam.shape[-2:]), "→ upsampled:", tuple(cam.shape[-2:]))
nl.plot.show_maps(x, {"layer3, 16×16": raw_cam, "upsampled": cam}, mean=None, std=None)

# %%
by_layer = {name: lens.gradcam(x, y, layer=name) for name in ("layer3", "layer2",
                                                              "layer1")}
nl.plot.show_maps(x, by_layer, masks, mean=None, std=None)

# %% [markdown]
# ### The variants
#
# All of them share Grad-CAM's recipe and change the weights:
#
# - **HiResCAM** (Draelos & Carin, 2020) does not average the gradient over positions:
#   it multiplies gradient and activation position by position, so a position counts
#   only where the gradient itself is large there.
# - **Grad-CAM++** (Chattopadhay et al., 2018) averages only the positive gradients,
#   each with its own coefficient derived from higher-order terms, which helps when
#   several objects of the class are present.
# - **XGrad-CAM** (Fu et al., 2020) averages the gradient over positions weighted by
#   the activation there (`Σ A·G / Σ A`) instead of uniformly.
# - **LayerCAM** (Jiang et al., 2021) multiplies activations by the positive part of the
#   gradient position by position; it gives usable maps on earlier layers too.
# - **Eigen-CAM** (Muhammad & Yeasin, 2020) uses no gradient and no target: it projects
#   the activations on their first principal component. It shows the dominant
#   structure of the layer, the same map whatever class you ask about.
# - **Score-CAM** (Wang et al., 2020) uses no gradient either: each channel, upsampled
#   and scaled to `[0, 1]`, masks the input, and the channel's weight comes from how
#   much of the target score the masked image keeps. It costs one forward pass per
#   channel (64 here, 512 for a ResNet-18's last layer).
# - **Guided Grad-CAM** multiplies Grad-CAM by guided backpropagation: pixel-sharp
#   detail inside the region that Grad-CAM selects. It returns `(B, 3, H, W)`.

# %%
cams = {
    "Grad-CAM": cam,
    "HiResCAM": lens.hirescam(x, y),
    "Grad-CAM++": lens.gradcam_pp(x, y),
    "XGrad-CAM": lens.xgradcam(x, y),
    "LayerCAM": lens.layercam(x, y),
    "Eigen-CAM": lens.eigencam(x, y),
    "Score-CAM": lens.scorecam(x, y),
    "Guided Grad-CAM": lens.guided_gradcam(x, y),
}
nl.plot.show_maps(x, cams, masks, mean=None, std=None)


# %% [markdown]
# Most variants agree closely on this model. Score-CAM stands out on the dark circle in
# the last row, where it lights up the background: its masks multiply the input, so
# the hidden part turns black, and an image that keeps only the background still shows
# a black circle on a light ground, which scores as a circle. Occlusion with a black
# baseline has the same weakness (see the occlusion notebook).
#
# Because the shapes come with masks, we can measure instead of eyeballing: the share of
# each map's mass (absolute values) that lies on the object, and on the distractor
# ellipse. The object covers only 3.5-8% of an image, so a map that ignores it would
# put a few percent there; the distractor has exactly the object's pixel count.

# %%
def share(attr, region):
    mass = attr.abs().sum(dim=1, keepdim=True)
    return ((mass * region).sum(dim=(1, 2, 3)) / mass.sum(dim=(1, 2, 3))).mean()

print(f"{'method':>16s}  on object  on distractor")
for name, attr in cams.items():
    print(f"{name:>16s}  {share(attr, masks):9.0%}  "
          f"{share(attr, batch.distractor_masks):13.0%}")

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
# At 128 px, ResNet-18's last spatial layer `layer4` is only 4×4 cells, so the default
# map is very coarse; `layer3` (8×8) and `layer2` (16×16) are finer. We compare the
# variants at `layer3`, which also halves Score-CAM's cost (256 channels instead of
# 512). With random weights there is nothing to find in the photo; look instead at how
# differently the methods weigh the same activations.

# %%
photo = nl.image.normalize(nl.data.example_photo(128)[0])
print("default layer:", resnet_lens.fm.last_spatial_layer())
layers = {name: resnet_lens.gradcam(photo, TARGET, layer=name)
          for name in ("layer4", "layer3", "layer2")}
nl.plot.show_maps(photo, layers, blend=True)

# %%
variants = ("gradcam", "hirescam", "gradcam_pp", "xgradcam", "layercam", "eigencam",
            "scorecam", "guided_gradcam")
photo_cams = {name: resnet_lens.attribute(name, photo, TARGET, layer="layer3")
              for name in variants}
nl.plot.show_maps(photo, photo_cams, blend=True)

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
        name: net_lens.attribute(name, photo, target)
        for name in ("gradcam", "hirescam", "gradcam_pp", "layercam", "eigencam",
                     "guided_gradcam")
    }, blend=True)
    display(fig)
