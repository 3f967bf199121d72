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
#     edit: Visual-Generation_with_OptVis.py, not this notebook
#     generated_from: Visual-Generation_with_OptVis.py
#     regenerate: python3 tasks.py notebooks
# ---

# %% [markdown]
# > `nbs/examples/Visual-Generation_with_OptVis.py` is the source of this notebook (jupytext percent
# > format); `Visual-Generation_with_OptVis.ipynb` is generated from it by
# > `python3 tasks.py notebooks`. Edit the `.py`, not the `.ipynb`.

# %% [markdown]
# # Feature visualization with `OptVis`
#
# `nl.OptVis` is the engine under `NetDreamer`, and the place to go when you want to
# choose what is optimized and how. One run has four parts:
#
# 1. a **parameterization** of the image (`ImageParam`, `RawParam`): the tensors the
#    optimizer changes and the function that turns them into a `[0, 1]` image;
# 2. **transforms**: small random shifts, zooms and rotations applied at every step,
#    so that only patterns that survive them can grow;
# 3. an **objective**: a differentiable *score to maximize*, read from the model's
#    layers by name (`objectives.channel`, `neuron`, `class_logit`, ...);
# 4. an **optimizer** (Adam by default) that climbs the objective.
#
# `OptVis(model, objective, param=None, transforms=None, optimizer=None, ...)` builds
# the run; `.vis(thresholds=(256,), callback=None, progress=None)` executes it and
# returns one image batch per threshold. The forward pass stops right after the
# deepest layer the objective reads, and the model is left exactly as it was.
#
# Sizes and step counts are small here so the notebook runs in seconds on a CPU; for a
# final picture use 128-224 pixels and 256 steps or more.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision
from IPython.display import display

import netlens as nl
from netlens import objectives
from netlens.data import SHAPES_CLASSES
from netlens.optvis import ImageParam, RawParam


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
# The small ResNet that ships with netlens, trained on the synthetic shapes of
# `nl.data.make_shapes` (circle, square, triangle, plus). It takes raw `[0, 1]` pixels;
# `OptVis` finds that out by itself (`nl.optvis.model_normalization`), and applies
# ImageNet's normalization to torchvision models.

# %%
model = nl.zoo.shapes_model()      # ships with netlens: no download
print(nl.FlatModel(model).layer_names)

# %% [markdown]
# ## Class visualization: `objectives.class_logit`
#
# `class_logit(c)` is the model's output for class `c` (the logit, before the
# softmax). It needs the whole forward pass. `size` and `generator` build the default
# parameterization, `ImageParam(size, fft=True, decorrelate=True)`.

# %%
class_images = []
for c, name in enumerate(SHAPES_CLASSES):
    vis = nl.OptVis(model, objectives.class_logit(c), size=64, generator=seed(c))
    class_images.append(vis.vis((48,), progress=False)[-1])
    print(f"{name:>8s}: logit {vis.history[0]:6.2f} -> {vis.history[-1]:6.2f};",
          "the model predicts %s (p = %.3f)" % predict(model, class_images[-1])[0])
nl.plot.grid(torch.cat(class_images), list(SHAPES_CLASSES), mean=None, std=None,
             panel_size=2)

# %% [markdown]
# `vis.history` holds the objective's value at every step. It is measured on the
# randomly transformed image the step used, so it is a little noisy; `vis.value()`
# gives the value on the current image itself.
#
# ## Channel visualization: `objectives.channel`
#
# `channel(layer, c)` is the mean activation of channel `c` of a layer over all
# positions. Layers are named as `nl.FlatModel(model).layer_names` lists them. We look
# at two channels of `layer3`: the one the classifier weighs most for "circle", and
# channel 24.

# %%
circle = int(model.fc.weight[SHAPES_CLASSES.index("circle")].argmax())
a, b = circle, 24
images = {}
for c in (a, b):
    vis = nl.OptVis(model, objectives.channel("layer3", c), size=64, generator=seed(0))
    images[f"channel {c}"] = vis.vis((64,), progress=False)[-1]
    print(f"channel {c}: {vis.history[0]:.2f} -> {vis.value():.2f}")
nl.plot.grid(torch.cat(list(images.values())), list(images), mean=None, std=None,
             panel_size=2)

# %% [markdown]
# ## One unit: `objectives.neuron`
#
# `neuron(layer, c, y, x)` is channel `c` at one position `(y, x)` of the layer's map
# (by default the centre). A unit only sees its receptive field, so only that part of
# the image changes; the rest stays the grey of the start image. `layer3`'s map is a
# quarter of the input size, 16x16 here.

# %%
neurons = {
    f"neuron({a}), centre": objectives.neuron("layer3", a),
    f"neuron({a}, y=3, x=3)": objectives.neuron("layer3", a, 3, 3),
}
neuron_images = [nl.OptVis(model, o, size=64, generator=seed(0)).vis(
    (48,), progress=False)[-1] for o in neurons.values()]
nl.plot.grid(torch.cat([images[f"channel {a}"], *neuron_images]),
             [f"channel {a}", *neurons], mean=None, std=None, panel_size=2)

# %% [markdown]
# ## Composing objectives
#
# Objectives are small values that combine with `+`, `-`, and multiplication or
# division by a number; the result prints as a formula. Two uses:
#
# - **several goals at once**: `channel(a) + channel(b)` looks for an image that
#   excites both channels;
# - **priors on the image**: `total_variation()` measures how much neighbouring pixels
#   differ. Because an objective is maximized, a penalty is *subtracted*, with a weight
#   that sets its strength. Weights are relative to the other terms: a channel's mean
#   activation here is about 10, the total variation of an image about 0.1, so a weight
#   of `1e-3` changes nothing visible, and 10 smooths the picture.

# %%
both = objectives.channel("layer3", a) + objectives.channel("layer3", b)
smooth = {w: objectives.channel("layer3", a) - w * objectives.total_variation()
          for w in (1e-3, 10.0)}
print(both)
print(smooth[10.0])
combined = {"a + b": both, **{f"a - {w:g} * TV": o for w, o in smooth.items()}}
combined_images = [nl.OptVis(model, o, size=64, generator=seed(0)).vis(
    (64,), progress=False)[-1] for o in combined.values()]
nl.plot.grid(torch.cat([images[f"channel {a}"], images[f"channel {b}"],
                        *combined_images]),
             [f"a = channel {a}", f"b = channel {b}", *combined], ncols=5,
             mean=None, std=None, panel_size=2)


# %% [markdown]
# ## A batch of different images: `objectives.diversity`
#
# `ImageParam(size, batch=4)` optimizes four images at once, each from its own random
# start. For a single channel they tend to come out as variations on one theme.
# `diversity(layer)` measures how different the images' *styles* are at a layer (minus
# the average similarity of their Gram matrices, so it grows as they differ, up to 0).
# Like every objective it is maximized, so it is **added**, with a weight.
#
# The weight needs care. The channel term is a mean over the batch, so if diversity
# is weighted too much, the cheapest way to be "different" is for some images to give
# up on the channel and go blank. We print each image's channel activation (about 2.4
# on the random start) and the diversity term to check. Here diversity is measured at
# the earlier `layer1`, whose textures vary more. With `w = 5` all four images excite
# the channel as much as without diversity while their styles differ more; with
# `w = 15` two of the four give up (back near 3): the weight is too high for this
# model, which is the failure to look for.

# %%
def channel_means(images, layer, c):
    fm = nl.FlatModel(model)
    with torch.no_grad(), fm.record(layer) as rec:
        fm(images)
    return rec.activations[layer][:, c].mean(dim=(1, 2))

batches = {}
diversity = nl.OptVis(model, objectives.diversity("layer1"), generator=seed(0))
for w in (0.0, 5.0, 15.0):
    objective = objectives.channel("layer3", a) + w * objectives.diversity("layer1")
    param = ImageParam(64, batch=4, generator=seed(1))
    vis = nl.OptVis(model, objective, param, generator=seed(0))
    batches[w] = vis.vis((64,), progress=False)[-1]
    means = channel_means(batches[w], "layer3", a)
    print(f"w = {w:4g}: channel {a} per image {np.round(means.tolist(), 1)}, "
          f"diversity {diversity.value(batches[w]):.2f}")
nl.plot.grid(torch.cat(list(batches.values())),
             [f"w = {w:g}" for w in batches for _ in range(4)], ncols=4,
             mean=None, std=None, panel_size=1.8)

# %% [markdown]
# ## One objective per image: `batch=i`
#
# Every activation objective takes `batch=i` to read only image `i` of the batch. A
# sum of such objectives gives each image its own goal, and one run of a batch is
# cheaper than separate runs: here the four class channels of the classifier in one
# go. Each channel is high in its own image only.

# %%
class_channels = model.fc.weight.argmax(1).tolist()
per_image = sum(objectives.channel("layer3", c, batch=i)
                for i, c in enumerate(class_channels))
print(per_image)
vis = nl.OptVis(model, per_image, ImageParam(64, batch=4, generator=seed(2)),
                generator=seed(0))
per_image_images = vis.vis((64,), progress=False)[-1]
for i, c in enumerate(class_channels):
    means = channel_means(per_image_images, "layer3", c)
    print(f"image {i}: channel {c} = {means[i]:.1f}, "
          f"in the other images {np.round(means[torch.arange(4) != i].tolist(), 1)}")
nl.plot.grid(per_image_images,
             [f"ch {c} ({name})" for c, name in zip(class_channels, SHAPES_CLASSES)],
             mean=None, std=None, panel_size=2)

# %% [markdown]
# ## Watching the optimization: thresholds
#
# `vis(thresholds=(...))` takes a picture at each of the given step counts and returns
# them all, in one run: here after 4, 8, 16, 32 and 64 steps. The first steps find the
# layout, the later ones sharpen and saturate it.

# %%
vis = nl.OptVis(model, objectives.channel("layer3", a), size=64, generator=seed(0))
thresholds = (4, 8, 16, 32, 64)
progress_images = vis.vis(thresholds, progress=False)
nl.plot.grid(torch.cat(progress_images), [f"step {s}" for s in thresholds], ncols=5,
             mean=None, std=None, panel_size=1.8)


# %% [markdown]
# ## Callbacks
#
# `callback=` is called after every step: either a function `f(vis, step, value)` or an
# `nl.optvis.Callback` subclass with `on_begin`, `on_step` and `on_end`. It can log,
# plot, save pictures, or stop the run early by raising `KeyboardInterrupt` (the
# images so far are returned, with a warning). This one records the value of each
# step, and every 8 steps also `vis.value()`, the objective on the untransformed
# image, which is higher than what the randomly shifted, zoomed and rotated copies
# score.

# %%
class Recorder(nl.optvis.Callback):
    def on_begin(self, vis):
        self.steps, self.values, self.clean = [], [], []

    def on_step(self, vis, step, value):
        self.steps.append(step)
        self.values.append(value)
        if step % 8 == 0:
            self.clean.append((step, vis.value()))

recorder = Recorder()
objective = objectives.channel("layer3", a) - 1.0 * objectives.total_variation()
vis = nl.OptVis(model, objective, size=64, generator=seed(0))
vis.vis((64,), callback=recorder, progress=False)

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(recorder.steps, recorder.values, label="each step (transformed image)")
ax.plot(*zip(*recorder.clean), "o", label="vis.value() (the image itself)")
ax.set(xlabel="step", ylabel="objective", title=str(objective))
ax.legend()
plt.show()

# %% [markdown]
# ## Parameterizations
#
# How the image is represented changes what gradient ascent finds, even with the same
# objective, model and steps:
#
# - `ImageParam(size)` (the default) optimizes a Fourier spectrum scaled so that low
#   frequencies move faster (`fft=True`), and mixes the colour channels the way
#   natural images correlate them (`decorrelate=True`). The picture builds up from
#   coarse to fine and its colours stay plausible.
# - `fft=False` optimizes each pixel's value (through a sigmoid) independently;
#   `decorrelate=False` treats red, green and blue independently.
# - `RawParam(image)` optimizes the pixels themselves, starting from any image you
#   give it, here a flat grey with a little noise.
#
# The curves (from `vis.history`) show that the three `ImageParam` variants raise the
# channel about equally fast, so the difference is in *what* they find. Optimized pixel
# by pixel, the image settles into a bland stripe pattern that scores as well as the
# others and tells us little; raw pixels climb slower and end noisy and saturated.
# The Fourier parameterization builds up the picture from coarse to fine, and
# decorrelated colours keep it from drifting to one hue.

# %%
grey = (0.5 + 0.02 * torch.randn(1, 3, 64, 64, generator=seed(5))).clamp(0, 1)
params = {
    "fft + decorrelate": ImageParam(64, generator=seed(1)),
    "fft only": ImageParam(64, decorrelate=False, generator=seed(1)),
    "pixels": ImageParam(64, fft=False, decorrelate=False, generator=seed(1)),
    "RawParam(grey)": RawParam(grey),
}
param_images, curves = [], {}
for name, param in params.items():
    vis = nl.OptVis(model, objectives.channel("layer3", a), param, generator=seed(0))
    param_images.append(vis.vis((64,), progress=False)[-1])
    curves[name] = vis.history
display(nl.plot.grid(torch.cat(param_images), list(params), mean=None, std=None,
                     panel_size=2))

fig, ax = plt.subplots(figsize=(5, 3))
for name, history in curves.items():
    ax.plot(range(1, len(history) + 1), history, label=name)
ax.set(xlabel="step", ylabel=f"channel {a}")
ax.legend(fontsize="small")
plt.show()

# %% [markdown]
# ## A torchvision model
#
# Nothing above is specific to the shapes model. On a torchvision ResNet-18, layers
# are named as in PyTorch (`layer3`, `layer4.1.conv2`, ...), and ImageNet's input
# normalization is applied inside the loop. With random weights (nothing can be
# downloaded where this notebook is tested) a channel responds to nothing in
# particular, so its picture is an unstructured, cloudy texture, and some channels
# barely move; with trained weights the same code shows learned features (next
# section).

# %%
torch.manual_seed(0)
resnet = torchvision.models.resnet18().eval()   # random init: nothing is downloaded

# %%
resnet_images = []
for c in (0, 7):
    vis = nl.OptVis(resnet, objectives.channel("layer3", c), size=64,
                    generator=seed(0))
    resnet_images.append(vis.vis((32,), progress=False)[-1])
    print(f"resnet18 layer3 channel {c}: {vis.history[0]:.3f} -> {vis.value():.3f}")
nl.plot.grid(torch.cat(resnet_images), ["layer3 ch 0", "layer3 ch 7"], mean=None,
             std=None, panel_size=2)

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
    runs = {
        "inception4a ch 97": objectives.channel("inception4a", 97),
        "inception4c ch 12, neuron": objectives.neuron("inception4c", 12),
        "bell pepper (945)": objectives.class_logit(945)
                             - 0.5 * objectives.total_variation(),
    }
    pictures = [nl.OptVis(net, o, size=224, generator=seed(0)).vis((256,))[-1]
                for o in runs.values()]
    # the diversity weight depends on the model and layers: check that every image
    # still excites the channel (see the diversity section above)
    varied = objectives.channel("inception4a", 97) \
        + 10 * objectives.diversity("inception3b")
    diverse = nl.OptVis(net, varied, ImageParam(224, batch=4, generator=seed(1)),
                        generator=seed(0)).vis((256,))[-1]
    display(nl.plot.grid(torch.cat(pictures), list(runs), mean=None, std=None,
                         panel_size=3))
    display(nl.plot.grid(diverse, mean=None, std=None, panel_size=3))
