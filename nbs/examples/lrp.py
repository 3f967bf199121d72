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
#     edit: lrp.py, not this notebook
#     generated_from: lrp.py
#     regenerate: python3 tasks.py notebooks
# ---

# %% [markdown]
# > `nbs/examples/lrp.py` is the source of this notebook (jupytext percent format);
# > `lrp.ipynb` is generated from it by `python3 tasks.py notebooks`. Edit the `.py`, not the
# > `.ipynb`.

# %% [markdown]
# # Relevance propagation: LRP, DeepLift, DeepLiftSHAP, excitation backprop
#
# A gradient says how *sensitive* the score is to each pixel. The methods of this notebook
# answer another question: *how much of the score does each pixel account for?* They start
# from the target's score at the output and share it out, layer by layer, down to the input,
# each layer dividing what it received among its inputs by a **rule**. What reaches the input
# is a signed map with the input's shape `(B, 3, H, W)`: positive relevance is evidence for the
# class, negative relevance evidence against it.
#
# - **LRP** (layer-wise relevance propagation; Bach et al. 2015, Montavon et al. 2019) picks a
#   rule per layer; a *composite* is a choice of rules per layer type.
# - **DeepLift** (Shrikumar et al. 2017) shares out the *difference* of the score from a
#   reference input; **DeepLiftSHAP** averages it over several references.
# - **Excitation backprop** (Zhang et al. 2016) shares out a probability: the map is where a
#   "winning" top-down signal ends up, non-negative and summing to 1.
#
# All of them cost one forward and one backward pass, like a gradient (DeepLift's pass runs
# the image and its reference together, DeepLiftSHAP's the image and each of its references).
# Each is a function of `nl.attribution` (and a method of `nl.NetLens`) taking
# `(model, x, target, **options)`; the model is never changed.

# %%
# %matplotlib inline
import copy
import time

import torch
import torchvision
from IPython.display import display
from torch import nn

import netlens as nl
from netlens.data import SHAPES_CLASSES

torch.manual_seed(0)

# %% [markdown]
# ## The shapes model
#
# `nl.zoo.shapes_model()` is the small ResNet that ships with netlens, trained on the
# synthetic shapes of `nl.data.make_shapes`: one object (circle, square, triangle or plus) per
# 64×64 image, an elongated ellipse as a distractor, and the object's mask, so we can see
# whether a map points at the object. It takes raw `[0, 1]` pixels, so the plots get
# `mean=None, std=None`. The images come from a seed the model was never trained on.

# %%
model = nl.zoo.shapes_model()
batch = nl.data.make_shapes(4, seed=2027)
x, y, masks = batch.images, batch.labels, batch.masks
with torch.no_grad():
    logits = model(x)
score = logits.gather(1, y[:, None])[:, 0]          # the target logit of each image
print("true:", [SHAPES_CLASSES[int(t)] for t in y])
print("pred:", [SHAPES_CLASSES[int(p)] for p in logits.argmax(1)])
print("target logit:", [round(float(s), 3) for s in score])

# %% [markdown]
# ## LRP composites
#
# A composite gives every layer type its rule (netlens uses zennit's names and meanings):
#
# - `epsilon_plus`: the **z+** rule in the convolutions (only positive contributions
#   `a_j w_jk > 0` share the relevance), **epsilon** in the linear layers (contributions in
#   proportion, with a small stabilizer `epsilon` in the denominator).
# - `epsilon_plus_flat`: the same, but the first layer gets the **flat** rule, which spreads
#   its relevance uniformly over each unit's receptive field, whatever the pixel values.
# - `epsilon_gamma_box`: the **z-box** rule in the first convolution, which accounts for the
#   input's bounded range `[low, high]` (here raw pixels: `low=0.0, high=1.0`), **gamma** in
#   the other convolutions (positive contributions boosted by a factor `1 + gamma`, so
#   negative ones still count a little), epsilon in the linear layers.
# - `epsilon_alpha2_beta1`: **alpha-beta** with alpha=2, beta=1 in the convolutions: positive
#   contributions get twice the relevance, negative ones minus once, so the map keeps
#   evidence against the class; epsilon in the linear layers.
# - `epsilon_alpha2_beta1_flat`: the same with the flat rule in the first layer.
#
# Every composite also passes relevance through ReLUs and max pooling unchanged, shares it
# in proportion through average pooling and residual additions, and merges each batch norm
# into the convolution before it (on the fly, into new tensors: the model is untouched).
#
# **Reading the maps.** `signed=True` draws the channels' sum with a diverging colormap
# centred at zero: red is relevance *for* the target class, blue *against* it, white none.
# Each panel has its own scale (`scale="panel"`, the default), so compare the *patterns*
# between composites; the next section compares the sums.

# %%
COMPOSITES = ("epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box",
              "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat")
RANGE = {"low": 0.0, "high": 1.0}            # the raw pixels' range, for the z-box rule
relevance = {}
for composite in COMPOSITES:
    options = RANGE if composite == "epsilon_gamma_box" else {}
    relevance[composite] = nl.attribution.lrp(model, x, y, composite=composite, **options)
print(relevance["epsilon_plus"].shape)
nl.plot.show_maps(x, {name.replace("epsilon_", "ε_"): r for name, r in relevance.items()},
                  masks, titles=[SHAPES_CLASSES[int(t)] for t in y], mean=None, std=None,
                  signed=True)

# %% [markdown]
# What the pictures show on this model:
#
# - The objects are mostly *darker* than the light, textured background. z+ in the first
#   layer multiplies by the pixel value, so `epsilon_plus` puts its relevance on the bright
#   pixels around a dark object, an outline, and leaves a black object almost empty.
# - The flat rule (`_flat`) does not look at the pixel values in the first layer: it fills
#   the object, with a halo of the receptive fields around it.
# - The z-box rule (`epsilon_gamma_box`) accounts for how far each pixel could go in either
#   direction, so dark pixels count too; gamma keeps the relevance on the strongest paths,
#   and the map concentrates on the object's edges, with little on the background or the
#   distractor.
# - Alpha-beta keeps some blue, negative evidence (here a few pixels inside and next to the
#   objects), and its maps are the noisiest.
# - The faint grid pattern comes from the strided convolutions, which cover some pixels
#   more often than others.
#
# ## Your own rules
#
# `rules={selector: rule}` overrides the composite for the layers a selector picks: a layer
# name or a glob of names (`FlatModel(model).layer_names` lists them), an `nn.Module` type, or
# a predicate on the call. The first selector that picks a layer wins, the composite covers
# the rest. The rules are values of `nl.rules`: `Epsilon`, `ZPlus`, `Gamma`, `AlphaBeta`,
# `ZBox`, `Flat`, `WSquare`, `Norm` and `Pass` (relevance passed on unchanged, for a layer
# whose output has its input's shape). Three examples:
#
# - **LRP-0** (epsilon with a vanishing stabilizer everywhere) is known to equal
#   input × gradient on a ReLU network (Ancona et al. 2018): a check that the propagation is
#   right, and the reason why composites use other rules: the map is as noisy as the
#   gradient.
# - **Flat, gamma 0.5, epsilon 0.1**: the flat rule in the first convolution `conv1`, a
#   stronger gamma in the other convolutions and a larger stabilizer in the classifier.
# - **Pass on the batch norms**: a rule given to a batch norm keeps it from being merged into
#   its convolution; `Pass` then carries the relevance through it unchanged.

# %%
print(nl.FlatModel(model).layer_names[:10], "...")
tiny = nl.rules.Epsilon(1e-9)
lrp0 = nl.attribution.lrp(model, x, y, rules={nn.Conv2d: tiny, nn.Linear: tiny})
ixg = nl.attribution.input_x_gradient(model, x, y)
print(f"LRP-0 vs input x gradient: largest difference {float((lrp0 - ixg).abs().max()):.1e}, "
      f"largest value {float(ixg.abs().max()):.2f}")
custom = {
    "LRP-0": lrp0,
    "flat, γ 0.5, ε 0.1": nl.attribution.lrp(model, x, y, rules={
        "conv1": nl.rules.Flat(), nn.Conv2d: nl.rules.Gamma(0.5),
        nn.Linear: nl.rules.Epsilon(0.1)}),
    "ε_plus, BN: Pass": nl.attribution.lrp(model, x, y,
                                           rules={nn.BatchNorm2d: nl.rules.Pass()}),
    "ε_plus": relevance["epsilon_plus"],
}
nl.plot.show_maps(x, custom, masks, mean=None, std=None, signed=True)

# %% [markdown]
# ## Conservation: where does the score go?
#
# LRP's bookkeeping: the relevance at the output is the target logit, and a conserving rule
# hands on exactly what it receives, so the input relevance should sum to the logit. Biases
# break that: a unit's bias is one of its "inputs" and keeps its share of the relevance, and
# this model has many biases (every batch norm merged into its convolution brings one, and the
# classifier has its own). The gap `logit - Σ relevance` is what the biases absorbed.

# %%
print(f"{'':>31s}" + "".join(f"{SHAPES_CLASSES[int(t)]:>9s}" for t in y))
print(f"{'target logit':>31s}" + "".join(f"{float(s):9.3f}" for s in score))
for name, r in relevance.items():
    total = r.sum(dim=(1, 2, 3))
    absorbed = float((1 - total / score).mean())
    print(f"{'Σ relevance, ' + name[8:]:>31s}" + "".join(f"{float(v):9.3f}" for v in total)
          + f"   biases: {absorbed:.0%}")

# %% [markdown]
# About half of the logit stays in the biases here (40 to 57% on average, depending on the
# composite): the input relevance shows what the *pixels* account for, not the whole score.
# To check that the propagation itself loses nothing, take a **bias-free copy** of the model:
# a deep copy (the model itself is never touched) whose batch norms have zero shift (running
# mean and bias set to 0) and whose classifier has no bias. Its logits are different, but
# now every unit's output is the sum of its input contributions, and the relevance must add
# up to the logit exactly, up to the stabilizers (`1e-6` per layer) and float32 round-off.

# %%
unbiased = copy.deepcopy(model)
with torch.no_grad():
    for module in unbiased.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.zero_()
            module.bias.zero_()
    unbiased.fc.bias.zero_()
    unbiased_score = unbiased(x).gather(1, y[:, None])[:, 0]
print("bias-free logit:", [round(float(s), 3) for s in unbiased_score])
for composite in COMPOSITES:
    options = RANGE if composite == "epsilon_gamma_box" else {}
    r = nl.attribution.lrp(unbiased, x, y, composite=composite, **options)
    gap = (r.sum(dim=(1, 2, 3)) - unbiased_score).abs().max()
    print(f"{composite:>26s}: largest |Σ relevance - logit| = {float(gap):.1e}")

# %% [markdown]
# With `epsilon_gamma_box` (z-box, gamma and epsilon rules) the sum matches to about `1e-5`.
# z+ and alpha-beta are not strictly conserving even without biases: z+ drops the relevance
# of a unit that has no positive input contribution (a unit that feeds a residual addition
# can carry relevance even then), and alpha-beta hands on `alpha - beta = 1` times what it
# receives only where a unit has both positive and negative contributions. The leaks are
# small: about `1e-3` (z+) and `3e-2` (alpha-beta) on logits of up to 3.4.
#
# ## DeepLift: the difference from a reference
#
# DeepLift (rescale rule) explains `f(x) - f(b)`, the score's difference from a reference
# input `b`, and its attributions add up to it exactly (*summation to delta*), biases
# included: the biases are the same for `x` and `b` and cancel. `return_delta=True` returns
# the gap `Σ attr - (f(x) - f(b))` per image. The reference matters as much as integrated
# gradients' baseline: black (`"zeros"`, the default) is far from these light images; the
# image's mean colour `(B, 3, 1, 1)` or a blurred copy (`"blur"`) ask "compared with an image
# without the object's details".

# %%
mean_colour = x.mean(dim=(2, 3), keepdim=True)
deeplift = {}
for name, baseline in (("zeros", "zeros"), ("mean colour", mean_colour), ("blur", "blur")):
    attr, delta = nl.attribution.deeplift(model, x, y, baseline=baseline, return_delta=True)
    deeplift[f"DeepLift, {name}"] = attr
    print(f"{name:>12s}: Σ attr {[round(float(v), 3) for v in attr.sum(dim=(1, 2, 3))]}, "
          f"largest |delta| {float(delta.abs().max()):.1e}")

# %% [markdown]
# ## DeepLiftSHAP: several references
#
# DeepLiftSHAP (Lundberg & Lee 2017) averages DeepLift over a distribution of references,
# which makes it an approximation of Shapley values. `baselines=` takes a list (one reference
# per image each: `"zeros"`, `"blur"`, a number, a tensor) or a tensor `(N, C, H, W)` shared by
# every image. The attributions sum to `f(x) - mean_j f(b_j)`, which we check by hand.

# %%
references = ["zeros", "blur", mean_colour]
shap = nl.attribution.deeplift_shap(model, x, y, baselines=references)
with torch.no_grad():
    reference_scores = torch.stack([
        model(nl.attribution.baseline_image(b, x)).gather(1, y[:, None])[:, 0]
        for b in references])
expected = score - reference_scores.mean(0)
print("Σ attr:           ", [round(float(v), 3) for v in shap.sum(dim=(1, 2, 3))])
print("f(x) - mean f(b): ", [round(float(v), 3) for v in expected])

# %% [markdown]
# ## Excitation backprop: a probability
#
# Excitation backprop passes down a *probability* instead of a score: a mass of 1 starts on
# the target class's unit, and each unit hands its mass to the inputs that excite it
# (positive weight times activation), in proportion. The map `(B, 1, H, W)` (channels summed)
# is non-negative and sums to 1 per image, up to the mass of units that no input excites.
# `contrastive=True` subtracts the map of a "dual" class whose classifier weights are negated,
# which cancels what all classes share; it sums to 0.

# %%
excitation = nl.attribution.excitation_backprop(model, x, y)
contrastive = nl.attribution.excitation_backprop(model, x, y, contrastive=True)
print(excitation.shape, "smallest value:", float(excitation.min()))
print("Σ map:            ", [round(float(v), 4) for v in excitation.sum(dim=(1, 2, 3))])
print("Σ contrastive map:", [round(float(v), 4) for v in contrastive.sum(dim=(1, 2, 3))])

# %% [markdown]
# All of them side by side, signed. `scale="column"` gives each method one colour scale
# across the four images (its colorbar shows it), so a row with weaker evidence looks weaker.
# Mind that the units differ: logit for LRP and DeepLift, probability for excitation
# backprop.

# %%
nl.plot.show_maps(x, {
    "LRP ε_γ_box": relevance["epsilon_gamma_box"],
    "DeepLift, mean": deeplift["DeepLift, mean colour"],
    "DeepLiftSHAP": shap,
    "excitation": excitation,
    "contrastive exc.": contrastive,
}, masks, mean=None, std=None, signed=True, scale="column", colorbar=True)

# %% [markdown]
# How often does each map have its maximum on the object (pointing game), and which share of
# its positive relevance lies on it (relevance mass)? On four images this is an anecdote, not
# a benchmark (the evaluation notebook runs the metrics on more images), but it puts a number
# on what the pictures show: z+ on dark objects misses, z-box finds them.

# %%
for name, r in {**relevance, **deeplift, "DeepLiftSHAP": shap, "excitation": excitation,
                "contrastive excitation": contrastive}.items():
    hits = nl.metrics.pointing_game(r, masks).mean()
    mass = nl.metrics.relevance_mass(r, masks).mean()
    print(f"{name:>26s}: pointing game {float(hits):.2f}, relevance mass {float(mass):.2f}")

# %% [markdown]
# `nl.plot.explain(kind="cam")` is the quick look at a one-channel map such as excitation
# backprop's: the heat map, the heat map over the image, and the map in grayscale.

# %%
nl.plot.explain(x[:2], excitation[:2], kind="cam", cmap="inferno", mean=None, std=None,
                titles=[SHAPES_CLASSES[int(t)] for t in y[:2]])

# %% [markdown]
# ## A torchvision ResNet-18 (random weights)
#
# The same calls work on torchvision models: netlens merges their batch norms and handles
# the residual additions and the reused ReLU modules of the blocks. No weights can be
# downloaded where these notebooks are tested, so this ResNet-18 keeps its seeded random
# initialization: its maps show what the architecture and the image produce, not what a
# trained network knows. The input is the example photo (Grace Hopper, public domain) at
# 112 px, normalized with ImageNet's mean and std, so the z-box bounds are the normalized
# images of black and white, one value per channel `(1, 3, 1, 1)`. The target is the class
# the random network predicts, so that its logit is positive and the relevance mostly red.

# %%
torch.manual_seed(0)
resnet = torchvision.models.resnet18().eval()      # random init: nothing is downloaded
photo = nl.image.normalize(nl.data.example_photo(112)[0])
low = nl.image.normalize(torch.zeros(1, 3, 1, 1))   # black, normalized per channel
high = nl.image.normalize(torch.ones(1, 3, 1, 1))   # white
with torch.no_grad():
    photo_logits = resnet(photo)[0]
TARGET = int(photo_logits.argmax())
photo_score = float(photo_logits[TARGET])
print(f"predicted class {TARGET} ({nl.data.imagenet_classes()[TARGET]})")
start = time.perf_counter()
photo_maps = {
    "ε_plus": nl.attribution.lrp(resnet, photo, TARGET),
    "ε_γ_box": nl.attribution.lrp(resnet, photo, TARGET, composite="epsilon_gamma_box",
                                  low=low, high=high),
    "ε_α2_β1_flat": nl.attribution.lrp(resnet, photo, TARGET,
                                       composite="epsilon_alpha2_beta1_flat"),
    "DeepLift, blur": nl.attribution.deeplift(resnet, photo, TARGET, baseline="blur"),
    "excitation": nl.attribution.excitation_backprop(resnet, photo, TARGET),
}
print(f"five maps in {time.perf_counter() - start:.1f} s; target logit {photo_score:.3f}")
for name, r in photo_maps.items():
    print(f"{name:>16s}: Σ = {float(r.sum()):8.3f}")
nl.plot.show_maps(photo, photo_maps, signed=True)

# %% [markdown]
# The three LRP composites give the same sum, a little below the logit. That is what a fresh
# initialization predicts: torchvision's batch norms start as the identity (zero mean, unit
# variance, no shift), so the merged convolutions have no bias, z+, gamma, alpha-beta and
# z-box lose nothing on them, and only the classifier's bias keeps a share. DeepLift's sum is
# `f(x) - f(blur)`, and excitation backprop's mass is below 1: some of it reaches units that
# no positive input excites, and stops there.

# %% [markdown]
# ## With pretrained weights
#
# With internet access, the same code explains a trained ImageNet model. Set
# `PRETRAINED = True` to download VGG-16's weights (about 530 MB, once, into torch's cache):
# LRP's composites were designed on such plain convolutional networks. It is off by default
# so that the notebook runs anywhere, tests included.

# %%
PRETRAINED = False   # True downloads torchvision's VGG-16 ImageNet weights

if PRETRAINED:
    net = torchvision.models.vgg16(weights="DEFAULT").eval()
    image = nl.image.normalize(nl.data.example_photo(224)[0])
    with torch.no_grad():
        target = int(net(image).argmax(1))
    print(nl.data.imagenet_classes()[target])
    fig = nl.plot.show_maps(image, {
        "ε_plus_flat": nl.attribution.lrp(net, image, target, composite="epsilon_plus_flat"),
        "ε_γ_box": nl.attribution.lrp(net, image, target, composite="epsilon_gamma_box",
                                      low=low, high=high),
        "ε_α2_β1": nl.attribution.lrp(net, image, target, composite="epsilon_alpha2_beta1"),
    }, signed=True)
    display(fig)
