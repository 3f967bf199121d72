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
#     edit: neural_style_transfer.py, not this notebook
#     generated_from: neural_style_transfer.py
#     regenerate: python3 tasks.py notebooks
# ---

# %% [markdown]
# > `nbs/examples/neural_style_transfer.py` is the source of this notebook (jupytext percent
# > format); `neural_style_transfer.ipynb` is generated from it by `python3 tasks.py notebooks`.
# > Edit the `.py`, not the `.ipynb`.

# %% [markdown]
# # Neural style transfer
#
# Gatys, Ecker and Bethge ("Image Style Transfer Using Convolutional Neural Networks",
# CVPR 2016) paint a photo in the manner of another picture by optimizing the pixels of an
# image so that
#
# - its features at a deep layer of a CNN match the photo's (the *content* loss), and
# - the correlations between feature channels (Gram matrices) at several layers match
#   those of the style picture (the *style* loss), whatever the positions.
#
# netlens splits this into three pieces:
#
# - `StyleTransferModule(model, content, content_layers, style, style_layers)` holds the
#   model and the targets, computed once: the content features and the Gram matrices of
#   one or several style images (any sizes, mixed with weights);
# - `StyleTransferObjective` (from `module.objective(...)`) is the score that
#   `netlens.OptVis` maximizes: minus the weighted sum of the losses;
# - `generate_style_transfer(module, ...)` runs the optimization (L-BFGS or Adam, on the
#   pixels or on a Fourier parameterization) and returns the image.
#
# Images are `(B, 3, H, W)` tensors with values in `[0, 1]`; the model's normalization
# is applied inside. Layers are named as `nl.FlatModel(model).layer_names` names them, so
# any backbone works (VGG by default, ResNet, GoogLeNet, ...).

# %%
# %matplotlib inline
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision

import netlens as nl
from netlens.style_transfer import (
    LossReporter,
    StyleTransferModule,
    default_layers,
    generate_style_transfer,
)

# %% [markdown]
# ## The network
#
# Style transfer needs a network whose features describe images well: Gatys et al. used
# an ImageNet-trained VGG19. No weights can be downloaded where this notebook is tested,
# so by default it uses a VGG16 with its (seeded) random initialization, at 64 pixels.
# A random network still gives a recognizable transfer of colours and strokes (its
# features are random filters, which already capture local texture statistics), but not
# the painterly results of a trained one. With internet access, set `PRETRAINED = True`
# to download torchvision's VGG19 weights (about 550 MB, once, into torch's cache) and
# run every cell again at 256 pixels: expect minutes on a CPU, seconds on a GPU.
#
# The losses of a trained network are much larger than those of a random one, so the
# style weight changes with it. On a GPU, add `.to("cuda")` to the model and to the
# images.

# %%
PRETRAINED = False

if PRETRAINED:
    arch = torchvision.models.vgg19(weights="DEFAULT").features.eval()
    SIZE, STEPS, STYLE_WEIGHT = 256, 300, 1e6
else:
    torch.manual_seed(0)
    arch = torchvision.models.vgg16().features.eval()   # random init: nothing downloaded
    SIZE, STEPS, STYLE_WEIGHT = 64, 50, 1e5

# %% [markdown]
# ## The content image
#
# Grace Hopper, from matplotlib's sample data (public domain): `nl.data.example_photo(size)`
# returns her as a raw `[0, 1]` tensor `(1, 3, size, size)`, not normalized, and a description
# of the picture. If the file is missing, a drawn image stands in.

# %%
content, about = nl.data.example_photo(SIZE)
print(about)
content.shape


# %% [markdown]
# ## Style images, drawn by code
#
# Three procedural pictures, each seeded: wavy colour stripes, a mosaic of coloured tiles
# with dark grout (the tiles are the cells of random points: each pixel takes the colour
# of its nearest point), and a composition of circles, lines and triangles in the manner
# of Kandinsky, drawn with matplotlib. They need not have the content's size.

# %%
def stripes(size, seed=0):
    """Wavy diagonal stripes whose three channels cycle out of phase."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size),
                            indexing="ij")
    phase = 2 * math.pi * (7 * (xx + 0.6 * yy) + 0.13 * torch.sin(2 * math.pi * 2 * yy))
    offsets = torch.rand(3, generator=g) * 2 * math.pi
    return torch.stack([0.5 + 0.5 * torch.cos(phase + o) for o in offsets])[None]


def mosaic(size, tiles=40, seed=0):
    """Tiles around random points, coloured from a small palette, with dark grout."""
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(tiles, 2, generator=g)
    palette = torch.tensor([[0.85, 0.2, 0.15], [0.95, 0.75, 0.2], [0.15, 0.35, 0.7],
                            [0.1, 0.55, 0.45], [0.9, 0.9, 0.85]])
    shade = 0.8 + 0.2 * torch.rand(tiles, 1, generator=g)
    colours = palette[torch.randint(len(palette), (tiles,), generator=g)] * shade
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size),
                            indexing="ij")
    nearest = torch.cdist(torch.stack([yy, xx], -1).reshape(-1, 2), points).topk(
        2, largest=False)
    image = colours[nearest.indices[:, 0]]
    image[nearest.values[:, 1] - nearest.values[:, 0] < 0.012] = 0.12   # grout
    return image.reshape(size, size, 3).permute(2, 0, 1)[None]


def kandinsky(size, seed=0):
    """Concentric circles, lines and triangles on a cream ground, drawn by matplotlib."""
    rng = np.random.default_rng(seed)
    colours = ["#d62828", "#003049", "#f77f00", "#fcbf49", "#2a9d8f", "#6a4c93", "#111111"]
    fig = plt.figure(figsize=(2, 2), dpi=size / 2, facecolor=(0.96, 0.92, 0.82))
    ax = fig.add_axes([0, 0, 1, 1], xlim=(0, 1), ylim=(0, 1))
    ax.axis("off")
    for _ in range(6):
        x, y, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.2)
        for k, c in enumerate(rng.choice(colours, 3, replace=False)):
            ax.add_patch(plt.Circle((x, y), r * (1 - 0.3 * k), color=c, zorder=2 + k))
    for _ in range(9):
        x0, y0, x1, y1 = rng.uniform(0, 1, 4)
        ax.plot([x0, x1], [y0, y1], color=rng.choice(colours), lw=rng.uniform(1, 4))
    for _ in range(3):
        ax.add_patch(plt.Polygon(rng.uniform(0, 1, (3, 2)), color=rng.choice(colours),
                                 alpha=0.8))
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return nl.image.load(rgba, size=size, mean=None, std=None)


style_size = SIZE * 3 // 2
styles = {"stripes": stripes(style_size), "mosaic": mosaic(style_size),
          "kandinsky": kandinsky(style_size)}
nl.plot.grid([content, *styles.values()], ["content", *styles], mean=None, std=None,
             panel_size=2.2)

# %% [markdown]
# ## The module: layers and targets
#
# `default_layers` finds Gatys et al.'s layers in any VGG: content `conv4_2`, style
# `conv1_1` to `conv5_1`, each read after its ReLU, as torchvision's `features` indices.
# The module computes the content features and the style Gram matrices once; the
# forward pass of every step stops after the deepest layer a loss reads (`features.25`
# here, so the rest of the network is never run).
#
# The Gram matrix of a `(B, C, H, W)` feature map is `(B, C, C)`: each pair of channels'
# mean product over positions, divided by `C`. It forgets *where* things are and keeps
# which features occur together: texture, not layout.

# %%
print(default_layers(arch))
module = StyleTransferModule(arch, content, style_target=styles["stripes"])
print(module)
print("losses of the content image itself:",
      {k: f"{float(v):.3g}" for k, v in module.losses(content).items()})
print("Gram matrices of the style targets:",
      {name: tuple(t.shape) for name, t in module.style_targets.items()})

# %% [markdown]
# ## L-BFGS or Adam
#
# Both start from the content image. One step is one forward and backward pass with
# either optimizer, so their curves can be compared step for step. L-BFGS models the
# curvature of the loss from the last gradients and usually gets much further in the
# same number of steps; netlens's L-BFGS needs no line search (a trust region on the
# pixel change keeps it stable, whatever the scale of the losses) and keeps the pixels
# in `[0, 1]`. `LossReporter` records the losses at every step.

# %%
runs, reports = {}, {}
for optimizer in ("lbfgs", "adam"):
    reports[optimizer] = LossReporter()
    runs[optimizer] = generate_style_transfer(
        module, num_steps=STEPS, style_weight=STYLE_WEIGHT, tv_weight=1e-2,
        optimizer=optimizer, callback=reports[optimizer], progress=False)

nl.plot.grid([content, styles["stripes"], runs["lbfgs"], runs["adam"]],
             ["content", "style", "L-BFGS", "Adam"], mean=None, std=None, panel_size=2.2)

# %%
fig, ax = plt.subplots(figsize=(5, 3))
for optimizer, report in reports.items():
    ax.semilogy(report.history["step"], report.history["total"], label=optimizer)
ax.set(xlabel="step (one forward + backward)", ylabel="total loss",
       title="content + style + tv, weighted")
ax.legend()
plt.show()

# %% [markdown]
# ## Pixels or a Fourier parameterization
#
# `param="fft"` optimizes the image's spectrum, scaled so that low frequencies move
# first, with colours decorrelated as in natural images (the parameterization of feature
# visualization, `netlens.optvis.ImageParam`). Started from the content image, it
# reproduces it at step 0 (to about 1e-4). It changes the character of the strokes rather
# than the speed: which looks better depends on the network and the style. Pixels that
# start at exactly 0 or 1 sit where its sigmoid is flat and move slowly.

# %%
start = generate_style_transfer(module, num_steps=0, param="fft")
error = float((start - content).abs().max())
print(f"step 0 differs from the content image by {error:.1e}")
runs["fft"] = generate_style_transfer(module, num_steps=STEPS, style_weight=STYLE_WEIGHT,
                                      tv_weight=1e-2, optimizer="adam", param="fft",
                                      progress=False)
nl.plot.grid([runs["adam"], runs["fft"]], ["Adam, pixels", "Adam, Fourier"],
             mean=None, std=None, panel_size=2.2)

# %% [markdown]
# ## Mixing two styles
#
# `style_target` takes a list of images of any sizes and `style_weights` one
# non-negative weight per image: the style targets are the weighted mean of their Gram
# matrices. From the mosaic alone to the Kandinsky alone:

# %%
mixed, titles = [], []
for w in (1.0, 0.5, 0.0):
    two = StyleTransferModule(arch, content, style_target=[styles["mosaic"],
                                                           styles["kandinsky"]],
                              style_weights=[w, 1 - w])
    mixed.append(generate_style_transfer(two, num_steps=STEPS, style_weight=STYLE_WEIGHT,
                                         tv_weight=1e-2, progress=False))
    titles.append(f"mosaic {w:.1f}\nkandinsky {1 - w:.1f}")
nl.plot.grid([styles["mosaic"], *mixed, styles["kandinsky"]],
             ["mosaic", *titles, "kandinsky"], ncols=5, mean=None, std=None,
             panel_size=2.2)

# %% [markdown]
# ## Where the loss goes
#
# The terms of the L-BFGS run, weighted as in the objective: the style loss falls by
# orders of magnitude while the content loss, zero at the start, rises to the price the
# weights set. Raise `style_weight` for more style, `tv_weight` for smoother images, or
# start from noise (`input_img=torch.rand_like(content)`) for a new picture each seed.

# %%
history = reports["lbfgs"].history
fig, ax = plt.subplots(figsize=(5, 3))
ax.semilogy(history["step"], [STYLE_WEIGHT * v for v in history["style"]],
            label="style x weight")
ax.semilogy(history["step"][1:], history["content"][1:], label="content")
ax.semilogy(history["step"], [1e-2 * v for v in history["tv"]], label="tv x weight")
ax.set(xlabel="step", ylabel="loss")
ax.legend()
plt.show()

# %% [markdown]
# ## Other backbones
#
# Any model works by its layer names, for example a ResNet:
#
# ```python
# resnet = torchvision.models.resnet50(weights="DEFAULT").eval()
# module = StyleTransferModule(resnet, content, "layer3", style,
#                              ["relu", "layer1", "layer2", "layer3"])
# ```
#
# A name the model lacks raises an error that lists the closest names; the model itself
# is never changed (no loss modules inserted, no hooks left behind).
