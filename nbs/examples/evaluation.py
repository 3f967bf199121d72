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
#     edit: evaluation.py, not this notebook
#     generated_from: evaluation.py
#     regenerate: python3 tasks.py notebooks
# ---

# %% [markdown]
# > `nbs/examples/evaluation.py` is the source of this notebook (jupytext percent format);
# > `evaluation.ipynb` is generated from it by `python3 tasks.py notebooks`. Edit the `.py`, not the
# > `.ipynb`.

# %% [markdown]
# # Which explanation can I trust?
#
# An attribution map always *looks* like an explanation. `nl.metrics` measures whether it
# is one, on three questions:
#
# - **Faithfulness**: when the pixels the map ranks highest are removed, does the model's
#   score fall fast (deletion, low AUC)? When they are put back first, does it rise fast
#   (insertion, high AUC)?
# - **Localization**: when we know where the evidence is (an object mask), does the map
#   point there (pointing game) and put its mass there (relevance mass, rank accuracy)?
# - **Sanity** (Adebayo et al. 2018): when the model's weights are replaced by random ones,
#   does the explanation change? If not, it describes the image, not the model.
#
# We use the shapes model that ships with netlens: its images come with the object's
# mask, so localization has a ground truth. Two reference maps set the bar: a uniform
# `random` map and a `centre` bump (objects are often near the middle).

# %%
# %matplotlib inline
import torch
from IPython.display import Markdown, display

import netlens as nl
from netlens.attribution import METHODS

torch.manual_seed(0)
model = nl.zoo.shapes_model()
batch = nl.data.make_shapes(16, seed=4242)      # images the model never saw
x, y, masks = batch.images, batch.labels, batch.masks
print(x.shape, masks.shape, f"object area: {masks.float().mean():.3f} of the image")

# %% [markdown]
# ## The methods, every metric, one table
#
# `nl.metrics.compare` runs each method once (timing it and measuring its peak memory),
# then every metric on its maps. Input attributions are read as |attribution| summed over
# the colour channels; CAMs and occlusion as they are. Every single-pass method is here, and
# of the methods that multiply passes (samples, steps, masks) integrated gradients,
# SmoothGrad and occlusion, with fewer passes than their defaults to keep this notebook fast;
# the black-box methods are compared in the `blackbox` notebook. The curves use 6 steps.

# %%
options = {
    "integrated_gradients": {"steps": 16},
    "smooth_grad": {"n": 8},
    "occlusion": {"window": 16, "stride": 8},
}
table = nl.metrics.compare(
    model, x, y, masks=masks,
    methods=[*(name for name, spec in METHODS.items() if not spec.progress),
             *options, "random", "centre"],
    metrics=["deletion", "insertion", "pointing_game", "relevance_mass",
             "relevance_rank", "sparseness"],
    options=options,
    metric_options={"deletion": {"steps": 6}, "insertion": {"steps": 6}},
    generator=torch.Generator().manual_seed(0), progress=False)
display(Markdown(table.to_markdown()))

# %% [markdown]
# Arrows say which way is better. `seconds` is the attribution's own runtime on these 16
# images. On a GPU a `peak_mb` column adds its peak memory above the start (the CUDA
# allocator's figure); on a CPU there is no such figure, and the column is left out. The
# table is a list of records: `table[0]`, `table.to_dataframe()` with pandas, `str(table)`
# for Markdown.
#
# The perturbation curves behind the AUCs:

# %%
fig = nl.metrics.plot_curves(table)
fig

# %% [markdown]
# ## The metrics one by one
#
# Every metric is also a plain function that returns one value per image, so that it can
# be averaged, plotted or tested as you like. The same numbers for Grad-CAM by hand:

# %%
cam = nl.attribution.gradcam(model, x, y)
curve = nl.metrics.deletion(model, x, cam, y, steps=8, progress=False)
print("deletion AUC per image:", curve.auc.numpy().round(2))
print("pointing game:", nl.metrics.pointing_game(cam, masks).mean().item())
print("relevance mass:", round(nl.metrics.relevance_mass(cam, masks).mean().item(), 3))
print("average drop:", round(nl.metrics.average_drop(model, x, cam, y).mean().item(), 3))
road = nl.metrics.road(model, x, cam, y, fractions=(0.1, 0.3, 0.5),
                       generator=torch.Generator().manual_seed(0), progress=False)
print("ROAD (most relevant first) at 0/10/30/50%:", road.mean.numpy().round(3))

# %% [markdown]
# ## Sanity check: randomize the model, layer by layer
#
# `model_randomization` redraws the weights of a *copy* of the model from the top layer
# down (cascading) and compares each explanation with the trained model's. Vanilla
# gradients and Grad-CAM lose their similarity quickly; guided backprop stays similar
# while half of the network is random: it mostly reconstructs the image (Adebayo et al.,
# "Sanity Checks for Saliency Maps", 2018). The caller's model is untouched.

# %%
sanity = nl.metrics.model_randomization(
    model, x[:6], y[:6], methods=["saliency", "gradcam", "guided_backprop"],
    generator=torch.Generator().manual_seed(0), progress=False)
half = len(sanity.layers) // 2
for method, values in sanity.mean("spearman").items():
    print(f"{method:16s} signed Spearman with half the layers random: {values[half]:.2f}")
fig = nl.metrics.plot_randomization(sanity)
fig

# %% [markdown]
# `cascading=False` randomizes one layer at a time instead (the independent variant), and
# `layers=[...]` restricts the test to some layers. Any model works: the layers are the
# modules with parameters, in the order the forward pass calls them.

# %% [markdown]
# ## At Quantus's breadth: faithfulness, robustness, complexity, randomization
#
# `compare` offers every metric of `nl.metrics.METRICS` (Quantus's six groups). A second
# table on five methods and the random map, with small settings (20 random subsets for
# faithfulness correlation, 4 noisy copies for the stability metrics, 8 shifts for
# continuity):
#
# - **faithfulness correlation** (Bhatt et al. 2020): the correlation, over random pixel
#   subsets, of the attribution they hold with the score drop when they are removed;
#   **monotonicity correlation** (Nguyen & Martínez 2020): the same along the ranking;
# - **max-sensitivity** (Yeh et al. 2019) and **relative input stability** (Agarwal et al.
#   2022): how much the map moves when the input moves a little (lower is better);
#   **continuity** (Montavon et al. 2018): the largest change of the map per change of the
#   input under horizontal shifts;
# - **complexity** (Bhatt et al. 2020): the entropy of the map (lower: a simpler map);
# - **random logit** (Sixt et al. 2020): the similarity of the map of the class to the map
#   of another class (lower: the map depends on the class); **efficient MPRT** (Hedström et
#   al. 2023): how much more complex the map gets when the whole model is randomized (higher
#   is better).

# %%
breadth = nl.metrics.compare(
    model, x, y, masks=masks,
    methods=["saliency", "input_x_gradient", "guided_backprop", "integrated_gradients",
             "gradcam", "random"],
    metrics=["faithfulness_correlation", "monotonicity_correlation", "max_sensitivity",
             "relative_input_stability", "continuity", "complexity", "random_logit",
             "efficient_mprt", "pointing_game", "relevance_mass"],
    options={"integrated_gradients": {"steps": 16}},
    metric_options={"faithfulness_correlation": {"runs": 20, "subset_size": 64},
                    "monotonicity_correlation": {"samples": 4, "features_in_step": 256},
                    "max_sensitivity": {"n": 4}, "relative_input_stability": {"n": 4},
                    "continuity": {"steps": 8}},
    generator=torch.Generator().manual_seed(0), progress=False)
display(Markdown(breadth.to_markdown()))

# %% [markdown]
# ## How far can the ranking be trusted?
#
# A table ranks the methods, but is the ranking the images' or the metric's noise?
# `nl.metrics.reliability` (Tomsett et al., "Sanity Checks for Saliency Metrics", AAAI 2020)
# reads the per-image scores the table keeps:
#
# - **inter-rater α**: Krippendorff's ordinal alpha of the methods' ranks, each image a rater
#   (1: every image ranks the methods alike, 0: chance);
# - **inter-method ρ**: the mean Spearman correlation over pairs of methods of their scores
#   across the images (does the metric rate the same images high whatever the method?);
# - the **Kendall τ** between two metrics' rankings of the methods, per image, averaged
#   (both turned so that higher is better): do they agree on which method is better?

# %%
agreement = nl.metrics.reliability(breadth)
display(Markdown(agreement.to_markdown()))
fig = nl.metrics.plot_reliability(agreement)
fig

# %% [markdown]
# Max-sensitivity ranks the methods nearly the same way on every image (alpha 0.93: Grad-CAM's
# coarse map hardly moves under noise, the random map moves most), random logit and efficient
# MPRT fairly so (0.69, 0.65); faithfulness correlation with 20 subsets is noise (0.03). Most
# pairs of metrics agree only weakly (tau 0.1 to 0.6, pointing game and relevance mass 0.60):
# which method "wins" depends on the metric asked, and with 16 images on some metrics not even
# on the method.

# %% [markdown]
# ## Data randomization: a model that learned nothing
#
# Adebayo et al.'s second test trains the same network on *random labels*: it can only
# memorize its training images, so an explanation of what a model learned must look
# different on it. netlens ships that twin of the shapes model
# (`nl.zoo.shapes_model_random_labels()`, trained by `netlens zoo train-random-labels`:
# 512 images with random labels, memorized) and `nl.metrics.data_randomization` compares the
# two models' maps image by image (Spearman of the absolute maps; near 1: the method shows
# the image, not the model).

# %%
twin = nl.zoo.shapes_model_random_labels()
print(f"accuracy on these images: trained {float((model(x).argmax(1) == y).float().mean()):.2f}"
      f", random labels {float((twin(x).argmax(1) == y).float().mean()):.2f}")
data = nl.metrics.data_randomization(
    model, twin, x, y, methods=["saliency", "guided_backprop", "integrated_gradients",
                                "gradcam"],
    options={"integrated_gradients": {"steps": 16}}, progress=False)
for method, value in data.mean("spearman_abs").items():
    print(f"{method:21s} Spearman |map| trained vs random labels: {value:.2f}")

# %% [markdown]
# Grad-CAM's maps of the two models share little (0.13): they follow what each model
# computes. The input-gradient methods keep about 0.55 to 0.65 of their rank order: their maps
# follow the image (its edges, the object's outline) as much as the model, Adebayo et al.'s
# finding on ImageNet and MNIST, here on a model netlens trains in about 1000 CPU-seconds.
