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
#     edit: Visual-Generation.py, not this notebook
#     generated_from: Visual-Generation.py
#     regenerate: python3 tasks.py notebooks
# ---

# %% [markdown]
# > `nbs/examples/Visual-Generation.py` is the source of this notebook (jupytext percent format);
# > `Visual-Generation.ipynb` is generated from it by `python3 tasks.py notebooks`. Edit the `.py`,
# > not the `.ipynb`.

# %% [markdown]
# # Generating images from a model: `NetDreamer`
#
# Attribution methods explain a decision about an image you already have. The
# techniques here go the other way: they *make* an image by gradient ascent on the
# pixels, to ask the network what it responds to. `nl.NetDreamer(model)` bundles four
# of them:
#
# - `channel_visualization(layer, c)`: the picture that drives one channel of a layer
#   as high as possible;
# - `class_visualization(c)`: the picture that drives one class score up;
# - `deep_dream(image, layer, channel=None)`: start from your image and exaggerate
#   whatever a layer (or one channel) already sees in it;
# - `inverted_image(image, layer)`: start from noise and look for a picture whose
#   features at a layer are those of your image: what the layer keeps, and what it
#   throws away.
#
# Images go in and come out as `(B, 3, H, W)` tensors with values in `[0, 1]`. The
# model's own input normalization (ImageNet's mean and std for torchvision models,
# none for the shapes model) is applied inside, so never pass normalized images.
# Every method takes a `generator` for its randomness and `progress=False` to hide the
# progress bar. The sizes and step counts are kept small so the notebook runs in
# seconds on a CPU; for a final picture use 128-224 pixels and 256 steps or more.
#
# `NetDreamer` is a thin layer over `nl.OptVis`; the companion notebook
# `Visual-Generation_with_OptVis.ipynb` shows the machinery underneath.

# %%
# %matplotlib inline
import torch
import torchvision
from IPython.display import display

import netlens as nl
from netlens.data import SHAPES_CLASSES


def seed(n):
    """A fresh, seeded random generator: the start image and the random transforms of a run
    are drawn from it, so the same seed gives the same picture. The global RNG is not used."""
    return torch.Generator().manual_seed(n)


def predict(model, images):
    """The shapes model's (class name, probability) for each image of a batch."""
    with torch.no_grad():
        p = model(images).softmax(1)
    return [(SHAPES_CLASSES[int(k)], float(v)) for v, k in zip(*p.max(1))]


# %% [markdown]
# ## The shapes model
#
# `nl.zoo.shapes_model()` is the small ResNet that ships with netlens, trained on the
# synthetic shapes of `nl.data.make_shapes`: one circle, square, triangle or plus per
# image, plus an elongated ellipse that carries no information about the class. Its
# layers have PyTorch's names: `layer1` ... `layer3` are its residual stages and `fc`
# the classifier.

# %%
model = nl.zoo.shapes_model()      # ships with netlens: no download
print(nl.FlatModel(model).layer_names)

# %%
dreamer = nl.NetDreamer(model)   # the model itself is never changed

# %% [markdown]
# ## Channel visualization
#
# Which channels should we look at? The classifier reads `layer3` through a global
# average and one linear layer, so the channel with the largest weight for a class is
# that class's strongest witness. Below, one image per class for that channel. The
# optimization starts from faint random noise built in Fourier space and applies small
# random shifts, zooms and rotations at every step, so only patterns that survive
# those changes grow: the picture shows a *texture* of what the channel likes, repeated
# wherever it fits.

# %%
class_channels = model.fc.weight.argmax(1).tolist()   # one layer3 channel per class
channel_images = torch.cat([
    dreamer.channel_visualization("layer3", c, size=64, steps=64, generator=seed(c),
                                  progress=False)
    for c in class_channels
])
titles = [f"layer3 ch {c}\n({name})"
          for c, name in zip(class_channels, SHAPES_CLASSES)]
nl.plot.grid(channel_images, titles, mean=None, std=None, panel_size=2)

# %% [markdown]
# These are textures, not drawings of a whole shape: a channel of `layer3` sees a
# patch of about a third of the image and responds to local evidence, so the
# optimized image repeats that evidence wherever it fits. The square and triangle
# channels fill only part of the frame: they were silent on the random start image,
# where a ReLU passes no gradient at all. For the first steps netlens lets a little
# gradient through such ReLUs so that the optimization can get going (`OptVis`'s
# `redirect_steps`), and from there the pattern spreads.
#
# ## Class visualization
#
# The same, for the score (logit) of each class. The model is asked to classify each
# result; if the image is a faithful "prototype" of the class, it wins by a wide margin.

# %%
class_images = torch.cat([
    dreamer.class_visualization(c, size=64, steps=64, generator=seed(c),
                                progress=False)
    for c in range(len(SHAPES_CLASSES))
])
predictions = predict(model, class_images)
for target, (name, p) in zip(SHAPES_CLASSES, predictions):
    print(f"optimized for {target:>8s}: the model says {name} (p = {p:.3f})")
nl.plot.grid(class_images, [f"class {name}" for name in SHAPES_CLASSES],
             mean=None, std=None, panel_size=2)

# %% [markdown]
# The prediction is right for every class with near certainty, though no image looks
# like a clean drawing of the shape: the model has to be confident, not the viewer.
# Class images are a tool to find what a model relies on, for instance a background
# texture that correlates with the class in the training data.
#
# ## Deep dream
#
# Deep dream starts from a real image instead of noise, and raises the *squared*
# activation of a whole layer: whatever the layer already responds to, positively or
# negatively, is amplified. It works coarse to fine: the image is first shrunk
# (`octaves` scales, each `octave_scale` times smaller than the next), dreamed for
# `steps` steps, and the detail it gained is carried up to the next scale. Each step
# moves the pixels by about `lr` in the direction of the gradient, after a random shift
# of up to `jitter_px` pixels.

# %%
shapes = nl.data.make_shapes(3, size=64, seed=2027)   # the model's training size
dreamed = dreamer.deep_dream(shapes.images, "layer2", octaves=3, steps=10,
                             generator=seed(0), progress=False)
nl.plot.grid(torch.cat([shapes.images, dreamed]),
             [SHAPES_CLASSES[int(k)] for k in shapes.labels] + ["dream, layer2"] * 3,
             ncols=3, mean=None, std=None, panel_size=2)

# %% [markdown]
# ### Dreaming one channel
#
# With `channel=c` deep dream raises one channel's mean activation instead. Here we take
# the "plus" channel found above and dream it into the same three images, and ask the
# model before and after. If the prediction moves to "plus", the channel does not
# merely correlate with that class: raising it is enough to change the decision.

# %%
plus_channel = class_channels[SHAPES_CLASSES.index("plus")]
dreamed_plus = dreamer.deep_dream(shapes.images, "layer3", plus_channel, octaves=3,
                                  steps=15, generator=seed(0), progress=False)
before, after = predict(model, shapes.images), predict(model, dreamed_plus)
for (a, pa), (b, pb) in zip(before, after):
    print(f"before: {a:>8s} ({pa:.2f})   after: {b:>8s} ({pb:.2f})")
nl.plot.grid(torch.cat([shapes.images, dreamed_plus]),
             [f"before: {a}" for a, _ in before] + [f"after: {b}" for b, _ in after],
             ncols=3, mean=None, std=None, panel_size=2)

# %% [markdown]
# ### On a photo, with a torchvision model
#
# The same call works on any torchvision-style classifier. No weights can be downloaded
# where this notebook is tested, so this ResNet-18 keeps its (seeded) random
# initialization; the last section shows the pretrained path. The photo is Grace
# Hopper from matplotlib's sample data (public domain): `nl.data.example_photo(size)`
# returns her as a raw `[0, 1]` tensor, not normalized, and a description; if the file is
# missing, a drawn image stands in.
#
# A random network has learned nothing to amplify, and it shows: dreaming saturates the
# colours and sprinkles pixel-scale noise over the whole photo, much the same at every
# layer. Compare with the pretrained cell at the end, where a trained network paints
# the patterns it has learned into the picture instead.

# %%
torch.manual_seed(0)
resnet = torchvision.models.resnet18().eval()   # random init: nothing is downloaded

# %%
photo, about = nl.data.example_photo(128)   # (1, 3, 128, 128) in [0, 1]
print(about)
resnet_dreamer = nl.NetDreamer(resnet)       # ImageNet normalization applied inside
photo_dreams = [resnet_dreamer.deep_dream(photo, layer, octaves=3, steps=10,
                                          generator=seed(0), progress=False)
                for layer in ("layer2", "layer3")]
nl.plot.grid(torch.cat([photo, *photo_dreams]),
             ["photo", "dream, layer2", "dream, layer3"],
             mean=None, std=None, panel_size=2.2)

# %% [markdown]
# ## Inverting features
#
# `inverted_image(image, layer)` starts from random noise and minimizes the distance
# between its features at `layer` and the features of `image`, with two priors that
# keep the picture natural (a penalty on total variation, against pixel noise, and one
# on extreme pixel values). What comes back is what the layer *remembers* about the
# image. The shapes model already forgets the exact colour of the object at `layer1`
# (a property its task never needed); at `layer3` the outline softens too, but the
# kind of shape and its position survive: that is what the classifier reads.

# %%
original = shapes.images[:2]
inverted = {layer: dreamer.inverted_image(original, layer, steps=96, generator=seed(1),
                                          progress=False)
            for layer in ("layer1", "layer3")}
panels, titles = [], []
for i in range(len(original)):
    panels += [original[i], inverted["layer1"][i], inverted["layer3"][i]]
    titles += ["original", "from layer1", "from layer3"]
nl.plot.grid(panels, titles, ncols=3, mean=None, std=None, panel_size=2)

# %% [markdown]
# On the photo and the random ResNet-18, `layer1` (after two downsamplings) still
# holds a recognisable portrait: random convolutions preserve information, and a
# feature inversion measures information, not meaning. Its two priors matter here:
# with the default `tv_weight=0.05` the result is grainy; a larger weight trades detail
# for smoothness. (Deeper layers of a *random* network give mostly noise at this
# budget.)

# %%
small_photo, _ = nl.data.example_photo(96)
photo_inverted = [resnet_dreamer.inverted_image(small_photo, "layer1", steps=96,
                                                tv_weight=w, generator=seed(1),
                                                progress=False)
                  for w in (0.05, 0.5)]
nl.plot.grid(torch.cat([small_photo, *photo_inverted]),
             ["photo", "layer1, tv_weight=0.05", "layer1, tv_weight=0.5"],
             mean=None, std=None, panel_size=2.2)

# %% [markdown]
# ## With pretrained weights
#
# Everything above runs on any classifier. With internet access, set `PRETRAINED = True` to
# download torchvision's GoogLeNet ImageNet weights (about 50 MB, once, into torch's cache) and
# run the cell: the same calls then show what a trained ImageNet network has learned. It is off
# by default so that the notebook runs anywhere, tests included; at 224 pixels and a few
# hundred steps it takes minutes on a CPU. On a GPU, move the model with `.to("cuda")`: the
# generated images are created on the model's device, and images you pass in (deep dream,
# inversion) must be moved there too.
#
# GoogLeNet's mixed layers are named `inception3a` ... `inception5b`; its ImageNet input
# normalization is applied for you. A few ImageNet class ids: 130 flamingo, 309 bee,
# 945 bell pepper.

# %%
PRETRAINED = False   # True downloads torchvision's GoogLeNet ImageNet weights

if PRETRAINED:
    net = torchvision.models.googlenet(weights="DEFAULT").eval()
    net_dreamer = nl.NetDreamer(net)
    big_photo, _ = nl.data.example_photo(224)
    pictures = {
        "dream, inception4c": net_dreamer.deep_dream(
            big_photo, "inception4c", octaves=4, steps=10, generator=seed(0)),
        "channel inception4a:97": net_dreamer.channel_visualization(
            "inception4a", 97, size=224, steps=256, generator=seed(0)),
        "class 130 (flamingo)": net_dreamer.class_visualization(
            130, size=224, steps=256, generator=seed(0)),
        "inverted, inception3b": net_dreamer.inverted_image(
            big_photo, "inception3b", steps=256, generator=seed(0)),
    }
    display(nl.plot.grid(torch.cat(list(pictures.values())), list(pictures),
                         mean=None, std=None, panel_size=3))
