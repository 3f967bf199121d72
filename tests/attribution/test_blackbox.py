"""Black-box perturbation methods (feature ablation and permutation, Shapley value sampling,
LIME, KernelSHAP, RISE): against Captum 0.9.0 given the same masks, permutations and samples,
against hand computations and known answers on linear models, and their contracts."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netlens as nl
from netlens._util import NetlensWarning
from netlens.attribution.perturbation import (
    feature_ablation,
    feature_permutation,
    shapley_sampling,
)
from netlens.attribution.rise import rise
from netlens.attribution.surrogate import kernel_shap, kernel_shap_samples, lime
from netlens.segments import grid

from helpers import SmallCNN, assert_untouched, model_state, small_cnn

# The small CNN of the Captum checks (as in test_occlusion.py): a max-pooled head, so the
# score is not linear in the regions.
CNN = {"inplace": False, "padding": (1, 0), "pool": "max"}


def images(batch: int, h: int = 13, w: int = 11, dtype: torch.dtype = torch.float64,
           seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=g).to(dtype)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Linear(nn.Module):
    """f(x)_k = sum(w_k * x) + c_k: class 0 uses w, class 1 uses -w."""

    def __init__(self, w: torch.Tensor, c: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.stack([w, -w]))
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kchw->bk", x, self.w) + self.c


def linear(c: int = 3, h: int = 8, w: int = 8, bias: float = 0.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(c, h, w, generator=g, dtype=torch.float64)
    x = torch.randn(2, c, h, w, generator=g, dtype=torch.float64)
    return Linear(weight, bias).eval(), x


def region_shapley(model: Linear, x: torch.Tensor, mask: torch.Tensor, base: float,
                   ) -> torch.Tensor:
    """The exact Shapley values of a linear model's class 0, per region: sum w (x - b)."""
    u = (model.w[0] * (x - base)).detach()  # (B, C, H, W)
    regions = int(mask.max()) + 1
    onehot = F.one_hot(mask.expand_as(u).flatten(1), regions).to(u.dtype)  # (B, N, S)
    return torch.einsum("bn,bns->bs", u.flatten(1), onehot)


def paint_back(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.stack([v[mask[0, 0]] for v in values])[:, None]


# -- feature ablation and permutation --------------------------------------------------------
@pytest.mark.parametrize("kind", ["grid", "per-image", "per-channel"])
def test_feature_ablation_equals_captum(kind):
    from captum.attr import FeatureAblation

    model, x, t = small_cnn(**CNN), images(3), [1, 3, 0]
    g = gen(5)
    if kind == "grid":
        mask = grid(x, (3, 2))
    elif kind == "per-image":
        mask = torch.randint(0, 5, (3, 1, 13, 11), generator=g)
    else:
        mask = torch.randint(0, 7, (1, 3, 13, 11), generator=g)
    base = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64).view(1, 3, 1, 1)
    theirs = FeatureAblation(model).attribute(x, target=t, feature_mask=mask, baselines=base,
                                              perturbations_per_eval=4)
    ours = feature_ablation(model, x, t, mask=mask, baseline=base, batch_size=5)
    assert ours.shape == (3, mask.shape[1], 13, 11) and ours.dtype == torch.float64
    assert (ours.expand_as(theirs) - theirs).abs().max() < 1e-10


def test_black_box_passes_run_channels_last_only_where_a_convolution_reads_the_input():
    from netlens._runtime import pass_layout

    cnn, x = small_cnn(**CNN), images(3)
    fm = nl.FlatModel(cnn)
    two = x[:2]
    assert pass_layout(fm, two) is two  # a pass of 1 or 2 images is faster contiguous
    fast = pass_layout(fm, x)
    assert fast.is_contiguous(memory_format=torch.channels_last) and torch.equal(fast, x)
    assert x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    assert all(p.is_contiguous() for p in cnn.parameters())  # the weights are not touched
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 13 * 11, 4)).double().eval()
    assert pass_layout(nl.FlatModel(flat), x) is x
    # the channels-last passes (3 images each) score as the contiguous ones (1 each)
    torch.testing.assert_close(feature_ablation(cnn, x, 1, mask=2, batch_size=3),
                               feature_ablation(cnn, x, 1, mask=2, batch_size=1))

    class Views(nn.Module):  # reads its input with .view, which a channels-last copy refuses
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3 * 13 * 11, 4).double()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.view(x.shape[0], -1))

    views = Views().eval()
    torch.testing.assert_close(feature_ablation(views, x, 1, mask=2),
                               feature_ablation(views, x.clone(), 1, mask=2, batch_size=1))


def test_feature_ablation_of_a_linear_model_is_the_region_sum():
    model, x = linear(bias=0.5)
    mask = grid(x, 4)
    out = feature_ablation(model, x, 0, mask=mask, baseline=0.25)
    expected = paint_back(region_shapley(model, x, mask, 0.25), mask)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_feature_ablation_batch_and_chunk_invariance():
    model, x, t = small_cnn(**CNN), images(4), [0, 3, 1, 2]
    ref = feature_ablation(model, x, t, mask=3, batch_size=1000)
    for bs in (1, 7):
        torch.testing.assert_close(feature_ablation(model, x, t, mask=3, batch_size=bs), ref,
                                   rtol=1e-12, atol=1e-14)
    single = torch.cat([feature_ablation(model, x[i:i + 1], t[i], mask=3) for i in range(4)])
    torch.testing.assert_close(single, ref, rtol=1e-12, atol=1e-14)


def test_feature_permutation_equals_captum_given_the_permutation():
    from captum.attr import FeaturePermutation

    model, x, t = small_cnn(**CNN), images(3), [1, 3, 0]
    mask, perm = grid(x, (3, 2)), torch.tensor([2, 0, 1])

    def permute(inputs, feature_mask):
        m = feature_mask.to(inputs.dtype)
        return inputs[perm] * m + inputs * (1 - m)

    theirs = FeaturePermutation(model, perm_func=permute).attribute(x, target=t,
                                                                     feature_mask=mask)
    ours = feature_permutation(model, x, t, mask=mask, permutation=perm, batch_size=4)
    assert (ours.expand_as(theirs) - theirs).abs().max() < 1e-10


def test_feature_permutation_per_region_by_hand():
    model, x = linear(h=4, w=4)
    mask = grid(x, 2)  # 4 regions, a permutation of the 2 images each: swap or keep
    perms = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]])
    out = feature_permutation(model, x, 0, mask=mask, permutation=perms)
    u = model.w[0].detach()
    for s in range(4):
        inside = (mask[0, 0] == s)
        for b in range(2):
            swapped = x[b].clone()
            swapped[:, inside] = x[perms[s, b]][:, inside]
            drop = (u * (x[b] - swapped)).sum()
            torch.testing.assert_close(out[b, 0][inside], drop.expand(int(inside.sum())))
    # random permutations: seeded, never the identity (so a 2-image batch is always swapped)
    a = feature_permutation(model, x, 0, mask=mask, generator=gen(3))
    torch.testing.assert_close(a, feature_permutation(model, x, 0, mask=mask, generator=gen(3)))
    torch.testing.assert_close(a, feature_permutation(model, x, 0, mask=mask,
                                                      permutation=torch.tensor([1, 0])))


def test_feature_permutation_needs_a_batch():
    model, x = linear()
    with pytest.raises(ValueError, match="at least 2 images"):
        feature_permutation(model, x[:1], 0)
    with pytest.raises(ValueError, match="permutation must be"):
        feature_permutation(model, x, 0, permutation=torch.tensor([0, 0]))


# -- Shapley value sampling ------------------------------------------------------------------
def test_shapley_with_every_order_equals_captum_shapley_values():
    from captum.attr import ShapleyValues

    model, x, t = small_cnn(**CNN), images(2), [1, 3]
    mask = grid(x, 2)
    orders = torch.tensor(list(itertools.permutations(range(4))))
    theirs = ShapleyValues(model).attribute(x, target=t, feature_mask=mask, baselines=0.3)
    ours = shapley_sampling(model, x, t, segments=mask, baseline=0.3, permutations=orders,
                            batch_size=7)
    scale = theirs.abs().max()
    assert ((ours.expand_as(theirs) - theirs).abs().max() / scale) < 1e-6  # Captum sums in fp32
    # efficiency: the values sum to f(x) - f(baseline)
    with torch.no_grad():
        gap = (model(x) - model(torch.full_like(x, 0.3)))[[0, 1], t]
    sums = torch.stack([ours[b, 0].flatten().unique().sum() for b in range(2)])
    torch.testing.assert_close(sums, gap, rtol=1e-10, atol=1e-12)


def test_shapley_sampling_equals_captum_given_the_orders():
    from captum.attr import ShapleyValueSampling

    model, x, t = small_cnn(**CNN), images(2), [1, 3]
    mask, g = grid(x, (3, 2)), gen(2)
    orders = torch.stack([torch.randperm(6, generator=g) for _ in range(5)])
    svs = ShapleyValueSampling(model)
    svs.permutation_generator = lambda features, samples: iter(orders.tolist())
    theirs = svs.attribute(x, target=t, feature_mask=mask, baselines=0.3, n_samples=5)
    ours = shapley_sampling(model, x, t, segments=mask, baseline=0.3, permutations=orders)
    assert ((ours.expand_as(theirs) - theirs).abs().max() / theirs.abs().max()) < 1e-6


def test_shapley_sampling_is_exact_on_a_linear_model_and_converges_on_a_cnn():
    model, x = linear(bias=1.0)
    mask = grid(x, 3)
    out = shapley_sampling(model, x, 0, segments=mask, baseline=-0.5, n_permutations=1,
                           generator=gen())
    expected = paint_back(region_shapley(model, x, mask, -0.5), mask)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # a CNN with 5 regions: exact values from all 120 orders; error shrinks with more orders
    cnn, xi = small_cnn(**CNN), images(1)
    mask = torch.arange(5).repeat_interleave(3)[:13].view(13, 1).expand(13, 11)[None, None]
    exact = shapley_sampling(cnn, xi, 2, segments=mask, permutations=torch.tensor(
        list(itertools.permutations(range(5)))))

    def error(n: int) -> float:
        runs = [shapley_sampling(cnn, xi, 2, segments=mask, n_permutations=n,
                                 generator=gen(seed)) for seed in range(4)]
        return float(torch.stack([(r - exact).pow(2).mean() for r in runs]).mean().sqrt())

    few, many = error(3), error(60)
    assert many < few / 2.5, (few, many)  # Monte Carlo: sqrt(20) ~ 4.5 in expectation


# -- LIME and KernelSHAP ---------------------------------------------------------------------
def feed(rows: torch.Tensor):
    """A Captum ``perturb_func`` yielding the given 0/1 samples, one per call."""
    def perturb(inputs, **kwargs):
        for r in rows:
            yield r[None].long()
    return perturb


@pytest.mark.slow  # importing sklearn (Captum's linear models) takes seconds
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_lime_equals_captum_given_the_samples(alpha):
    from captum._utils.models.linear_model import SkLearnLinearRegression, SkLearnRidge
    from captum.attr import Lime

    model, x, t = small_cnn(**CNN), images(2), [1, 3]
    mask = grid(x, (3, 2))
    z = torch.bernoulli(torch.full((40, 6), 0.5), generator=gen(4))
    fit = SkLearnRidge(alpha=alpha) if alpha else SkLearnLinearRegression()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum: "multiple inputs ... time consuming"
        theirs = Lime(model, interpretable_model=fit, perturb_func=feed(z)).attribute(
            x, target=t, feature_mask=mask, baselines=0.2, n_samples=40)
    ours, coef = lime(model, x, t, segments=mask, baseline=0.2, samples=z, alpha=alpha,
                      return_coefficients=True, batch_size=7)
    assert coef.shape == (2, 6) and ours.shape == (2, 1, 13, 11)
    # Captum computes the kernel and fits in float32
    assert ((ours.expand_as(theirs) - theirs).abs().max() / theirs.abs().max()) < 1e-5


@pytest.mark.slow  # importing sklearn
def test_kernel_shap_equals_captum_given_the_samples():
    from captum.attr import KernelShap

    model, x, t = small_cnn(**CNN), images(2), [1, 3]
    mask = grid(x, (3, 2))
    z = kernel_shap_samples(60, 6, gen(3))
    ks = KernelShap(model)
    ks.perturb_func = feed(z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = ks.attribute(x, target=t, feature_mask=mask, baselines=0.2, n_samples=60)
    ours = kernel_shap(model, x, t, segments=mask, baseline=0.2, samples=z)
    assert ((ours.expand_as(theirs) - theirs).abs().max() / theirs.abs().max()) < 1e-5


def test_kernel_shap_samples_follow_the_shapley_kernel():
    z = kernel_shap_samples(40000, 6, gen(0))
    assert torch.equal(z[0], torch.ones(6)) and torch.equal(z[1], torch.zeros(6))
    sizes = z[2:].sum(1)
    assert sizes.min() >= 1 and sizes.max() <= 5
    k = torch.arange(1, 6, dtype=torch.float64)
    expected = (5 / (k * (6 - k))) / (5 / (k * (6 - k))).sum()
    observed = torch.stack([(sizes == i).double().mean() for i in range(1, 6)])
    torch.testing.assert_close(observed, expected, atol=0.01, rtol=0)
    # within a size, every region is equally likely to be on
    torch.testing.assert_close(z[2:][sizes == 2].mean(0), torch.full((6,), 2 / 6), atol=0.02,
                               rtol=0)


def test_kernel_shap_recovers_exact_shapley_values_of_a_linear_model():
    model, x = linear(bias=0.7)
    mask = grid(x, (3, 4))
    out, values = kernel_shap(model, x, 0, segments=mask, baseline=0.1, n=100,
                              generator=gen(1), return_coefficients=True)
    exact = region_shapley(model, x, mask, 0.1)
    assert (values - exact).abs().max() < 1e-4
    torch.testing.assert_close(out, paint_back(exact, mask), atol=1e-4, rtol=0)
    # LIME's weighted fit is exact on a linear model too, whatever the kernel
    lin = lime(model, x, 0, segments=mask, baseline=0.1, n=100, generator=gen(1))
    torch.testing.assert_close(lin, paint_back(exact, mask), atol=1e-6, rtol=0)


def test_surrogates_are_seeded_and_batch_invariant():
    model, x, t = small_cnn(**CNN), images(3), [1, 3, 0]
    for method in (lime, kernel_shap):
        a = method(model, x, t, n=30, segments=3, generator=gen(2), batch_size=4)
        b = method(model, x, t, n=30, segments=3, generator=gen(2), batch_size=90)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        alone = method(model, x[2:], t[2], n=30, segments=3, generator=gen(2))
        torch.testing.assert_close(alone, a[2:], rtol=1e-9, atol=1e-12)
        assert not torch.allclose(a, method(model, x, t, n=30, segments=3, generator=gen(3)))


def test_images_with_different_regions_are_fitted_on_their_own_regions():
    """Per-image superpixels numbered jointly (image 0: regions 0-5, image 1: regions 0-3, as
    SLIC gives): no image is fitted with columns of regions it lacks. KernelSHAP recovers each
    image's exact Shapley values; each image's map and coefficients (0 at the missing regions)
    equal those of the image explained alone; given samples are read at each image's columns."""
    model, x = linear(bias=0.7)
    mask = torch.stack([grid(x[:1], (2, 3))[0], grid(x[:1], (2, 2))[0]])  # 6 and 4 regions
    exact = region_shapley(model, x, mask, 0.1)  # (2, 6): image 1's regions 4, 5 are 0
    assert exact[1, 4:].abs().max() == 0
    for method in (kernel_shap, lime):
        out, values = method(model, x, 0, segments=mask, baseline=0.1, n=60, generator=gen(1),
                             return_coefficients=True)
        if method is kernel_shap:
            assert (values - exact).abs().max() < 1e-4, method
            painted = torch.stack([v[m[0]] for v, m in zip(exact, mask)])[:, None]
            torch.testing.assert_close(out, painted, atol=1e-4, rtol=0)
        assert values[1, 4:].abs().max() == 0
        for i in range(2):
            alone, v = method(model, x[i:i + 1], 0, segments=mask[i:i + 1], baseline=0.1, n=60,
                              generator=gen(1), return_coefficients=True)
            torch.testing.assert_close(out[i:i + 1], alone, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(values[i, :v.shape[1]], v[0], rtol=1e-9, atol=1e-12)
    z = kernel_shap_samples(40, 6, gen(5))
    _, values = kernel_shap(model, x, 0, segments=mask, baseline=0.1, samples=z,
                            return_coefficients=True)
    _, alone = kernel_shap(model, x[1:], 0, segments=mask[1:], baseline=0.1, samples=z[:, :4],
                           return_coefficients=True)
    torch.testing.assert_close(values[1, :4], alone[0], rtol=1e-9, atol=1e-12)


# -- RISE ------------------------------------------------------------------------------------
def rise_expectation(model: Linear, x: torch.Tensor, cells: int, p: float) -> torch.Tensor:
    """E[RISE] of class 0 of ``c + sum w x`` for one image, from the paper's definition.

    A mask is M = sum_j g_j a_j with g_j ~ Bernoulli(p) the grid cells and a_j the bilinear
    upsampling of cell j cropped at the shift; E[M(u) M(v) | shift] = p^2 + p (1 - p) a(u).a(v)
    (the a_j(u) sum to 1), so E[sum_i f(x M_i) M_i(u)] / (n p) = c + p sum_v s_v
    + (1 - p) sum_v E_shift[a(u).a(v)] s_v with s = sum_channels w x."""
    _, _, h, w = x.shape
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)
    eye = torch.eye(cells * cells, dtype=x.dtype).view(-1, 1, cells, cells)
    big = F.interpolate(eye, size=((cells + 1) * ch, (cells + 1) * cw), mode="bilinear",
                        align_corners=False)[:, 0]
    kernel = sum(big[:, i:i + h, j:j + w].flatten(1).T @ big[:, i:i + h, j:j + w].flatten(1)
                 for i in range(ch) for j in range(cw)) / (ch * cw)
    s = (model.w[0] * x[0]).sum(0).flatten().detach()
    return (model.c + p * s.sum() + (1 - p) * kernel @ s).view(1, 1, h, w)


def test_rise_converges_to_its_expectation_on_a_linear_model():
    model, x = linear(c=2, h=6, w=6, bias=0.7)
    x = x[:1]
    expected = rise_expectation(model, x, 2, 0.3)
    errors = []
    for n in (500, 50000):
        out = rise(model, x, 0, n=n, cells=2, p=0.3, generator=gen(1))
        errors.append(float((out - expected).abs().max()))
    scale = float(expected.abs().max())
    assert errors[1] < 0.01 * scale and errors[1] < errors[0] / 4, (errors, scale)


def test_rise_is_seeded_and_chunk_invariant():
    model, x, t = small_cnn(**CNN), images(3), [1, 3, 0]
    a = rise(model, x, t, n=50, cells=3, generator=gen(7), batch_size=1)
    b = rise(model, x, t, n=50, cells=3, generator=gen(7), batch_size=64)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    alone = rise(model, x[1:2], t[1], n=50, cells=3, generator=gen(7))
    torch.testing.assert_close(alone, a[1:2], rtol=1e-6, atol=1e-9)
    assert not torch.allclose(a, rise(model, x, t, n=50, cells=3, generator=gen(8)))
    model32, x32 = small_cnn(dtype=torch.float32, **CNN), x.float()
    a32 = rise(model32, x32, t, n=50, cells=3, generator=gen(7), batch_size=1)
    b32 = rise(model32, x32, t, n=50, cells=3, generator=gen(7), batch_size=64)
    assert a32.dtype == torch.float32
    assert ((a32 - b32).abs().max() / a32.abs().max()) < 1e-6


def test_rise_one_cell_is_the_score():
    """cells=1: every mask is constant (its cell, kept or not), so the map is
    f(x) * (masks kept) / (n p) everywhere: a hand computation from the masks' count."""
    model, x = linear(c=1, h=4, w=5, bias=0.0)
    out = rise(model, x, 0, n=64, cells=1, p=0.5, generator=gen(3))
    kept = (torch.rand(64, 1, 1, 1, generator=gen(3), dtype=torch.float64) < 0.5).sum()
    with torch.no_grad():
        score = model(x)[:, 0]
    expected = (score * kept / 32).view(2, 1, 1, 1).expand(2, 1, 4, 5)
    torch.testing.assert_close(out, expected)


# -- contracts -------------------------------------------------------------------------------
METHODS = {  # every method of this file, with cheap options (a deliberate list: the oracle)
    "feature_ablation": (feature_ablation, {"mask": 3}),
    "feature_permutation": (feature_permutation, {"mask": 3, "generator": None}),
    "shapley_sampling": (shapley_sampling, {"segments": 2, "n_permutations": 2,
                                            "generator": None}),
    "lime": (lime, {"segments": 3, "n": 12, "generator": None}),
    "kernel_shap": (kernel_shap, {"segments": 3, "n": 12, "generator": None}),
    "rise": (rise, {"n": 12, "cells": 3, "generator": None}),
}


def run(name: str, model, x, target, **extra):
    fn, options = METHODS[name]
    options = dict(options, **extra)
    if "generator" in options and options["generator"] is None:
        options["generator"] = gen(0)
    return fn(model, x, target, **options)


class Flaky(SmallCNN):
    """Runs twice (tracing and the clean pass), then raises inside its forward."""

    def __init__(self) -> None:
        super().__init__(**CNN)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 2:
            self.conv1(x)
            raise RuntimeError("a layer failed")
        return super().forward(x)


@pytest.mark.parametrize("name", list(METHODS))
def test_contracts(name, untouched):
    model = small_cnn(**CNN)
    x = images(2)
    x.grad = torch.ones_like(x)
    before = model_state(model, rng=True)  # also the global random state: draws use generator=
    out = run(name, model, x, [0, 1])
    assert_untouched(model, before)
    fn, options = METHODS[name]
    if "generator" in options:  # None: a fresh nondeterministic generator, not the global one
        fn(model, x, [0, 1], **dict(options, generator=None))
        assert_untouched(model, before)
    assert out.shape == (2, 1, 13, 11) and out.dtype == torch.float64
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    with untouched(model), pytest.raises(ValueError, match="out of range"):
        run(name, model, x, 10**6)
    with torch.no_grad():
        torch.testing.assert_close(run(name, model, x, [0, 1]), out)
    torch.testing.assert_close(run(name, nl.FlatModel(model), x, [0, 1]), out)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        run(name, model, x, [0, 1])
    model.train()
    with untouched(model), pytest.warns(NetlensWarning, match="training mode"):
        torch.testing.assert_close(run(name, model, x, [0, 1]), out)
    assert torch.equal(x.grad, torch.ones_like(x))
    flaky = Flaky().double().eval()
    with untouched(flaky), pytest.raises(RuntimeError, match="a layer failed"):
        run(name, flaky, x, [0, 1])


@pytest.mark.parametrize("name", list(METHODS))
def test_top_k_targets_give_a_k_axis(name):
    model, x = small_cnn(**CNN), images(2)
    out = run(name, model, x, nl.targets.TopK(2))
    assert out.shape == (2, 2, 1, 13, 11)
    with torch.no_grad():
        top = model(x).topk(2, dim=1).indices
    for k in range(2):
        torch.testing.assert_close(out[:, k], run(name, model, x, top[:, k]))


@pytest.mark.parametrize("name", list(METHODS))
def test_segmentation_target_on_a_dense_model(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 3, 3, padding=1)).double().eval()
    x = images(2, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:6, 1:5] = True
    out = run(name, model, x, nl.targets.Segmentation(1, mask))

    def score(out: torch.Tensor) -> torch.Tensor:  # the target's definition, by hand
        return (out[:, 1] * mask).flatten(1).sum(1)

    torch.testing.assert_close(out, run(name, model, x, score))
    assert out.shape == (2, 1, 8, 8) and out.abs().sum() > 0


def test_segmentation_target_by_hand_for_feature_ablation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Tanh()).double().eval()
    x = images(1, 6, 6)
    regions = grid(x, 2)
    out = feature_ablation(model, x, nl.targets.Segmentation(0, torch.ones(6, 6)), mask=regions)
    with torch.no_grad():
        full = model(x)[:, 0].sum()
        for s in range(4):
            inside = regions[0, 0] == s
            drop = full - model(torch.where(inside, 0.0, x))[:, 0].sum()
            torch.testing.assert_close(out[0, 0][inside], drop.expand(int(inside.sum())))


@pytest.mark.parametrize("name, kwargs, match", [
    ("rise", {"n": 0}, "n must be"), ("rise", {"p": 0.0}, r"p .*\(0, 1\)"),
    ("rise", {"p": 1.0}, r"\(0, 1\)"), ("rise", {"p": float("nan")}, "p must be"),
    ("rise", {"cells": 0}, "cells"), ("rise", {"cells": 20}, "exceed"),
    ("lime", {"n": 0}, "n must be"), ("lime", {"kernel_width": 0.0}, "kernel_width"),
    ("lime", {"alpha": -1.0}, "alpha"),
    ("kernel_shap", {"n": -3}, "n must be"),
    ("kernel_shap", {"samples": torch.ones(5, 4)}, r"samples must be \(n, 9\)"),
    ("kernel_shap", {"samples": torch.full((5, 9), 0.5)}, "only 0 and 1"),
    ("kernel_shap", {"samples": torch.ones(5, 9), "n": 4}, "n=4 but samples"),
    ("shapley_sampling", {"n_permutations": 0}, "n_permutations must be"),
    ("shapley_sampling", {"permutations": torch.zeros(2, 4, dtype=torch.long)},
     "permutations must be"),
    ("feature_ablation", {"mask": torch.zeros(1, 1, 5, 5, dtype=torch.long)},
     r"mask has shape \(1, 1, 5, 5\).*\(2 or 1, 3 or 1, 13, 11\)"),
    ("feature_ablation", {"mask": torch.zeros(1, 2, 13, 11, dtype=torch.long)}, "mask has"),
    ("feature_ablation", {"mask": -torch.ones(1, 1, 13, 11, dtype=torch.long)}, "negative"),
    ("feature_ablation", {"baseline": torch.zeros(2, 1, 1)}, "baseline"),
    ("feature_ablation", {"batch_size": 0}, "batch_size"),
])
def test_bad_options_get_clear_errors(name, kwargs, match, untouched):
    model = small_cnn(**CNN)
    with untouched(model), pytest.raises(ValueError, match=match):
        run(name, model, images(2), 0, **kwargs)


def test_a_float_mask_is_a_type_error():
    model = small_cnn(**CNN)
    with pytest.raises(TypeError, match="integer tensor"):
        feature_ablation(model, images(2), 0, mask=torch.zeros(1, 1, 13, 11))


@pytest.mark.parametrize("name", list(METHODS))
def test_progress_is_shown(name, capsys):
    run(name, small_cnn(**CNN), images(2), 0, progress=True)
    assert capsys.readouterr().err.strip()
    run(name, small_cnn(**CNN), images(2), 0, progress=False)
    assert not capsys.readouterr().err.strip()
