"""Continuity, consistency and the relative stabilities (input, output, representation): by hand
on a linear model and against Quantus 0.6.0 on the shapes model, with the same explanations and
the same noise (injected through ``perturbations=`` here and replayed to Quantus through its
``perturb_func``). Where Quantus is wrong, the test shows the hand computation instead."""

from __future__ import annotations

import copy
import functools
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import netlens as nl
from netlens._util import NetlensWarning
from netlens.metrics.robustness import (
    consistency,
    continuity,
    relative_input_stability,
    relative_output_stability,
    relative_representation_stability,
)

from helpers import linear_model, quantus_explain

quantus = pytest.importorskip("quantus")

RELATIVE = {"input": relative_input_stability, "output": relative_output_stability,
            "representation": relative_representation_stability}


@pytest.fixture(scope="module")
def shapes():
    torch.manual_seed(0)
    model = nl.zoo.shapes_model()
    batch = nl.data.make_shapes(3, seed=21, size=32)
    return model, batch.images, batch.labels


def replay(noise: torch.Tensor):
    """A Quantus ``perturb_func`` adding ``noise[k]`` ``(n, B, C, H, W)`` at its ``k``-th call
    (on the whole batch: Quantus run with batch_size=B)."""
    calls = [0]

    def f(arr, indices, **kwargs):
        d = noise[calls[0]]
        calls[0] += 1
        return (torch.as_tensor(arr) + d.reshape(arr.shape[0], -1)).numpy()
    return f


def run_quantus(metric, model, x, y, **call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), channel_first=True,
                     device="cpu", batch_size=len(x), **call)
    return torch.tensor(np.asarray(out, dtype=np.float64))


def shifted(x: torch.Tensor, s: int, fill: torch.Tensor) -> torch.Tensor:
    """x moved right by s columns (left for s < 0), uncovered columns = fill per image."""
    out = fill.view(-1, 1, 1, 1).expand_as(x).clone()
    w = x.shape[3]
    if s >= 0:
        out[..., s:] = x[..., :w - s] if s < w else out[..., s:]
    else:
        out[..., :w + s] = x[..., -s:]
    return out


# -- by hand --------------------------------------------------------------------------------

def test_relative_stabilities_by_hand():
    """input x gradient of the bias-free f = W x is E = w_t * x, so E(x + d) - E(x) = w_t * d:
    RIS = ||d / x|| / ||d / x|| = 1, ROS = ||d / x|| / ||W d||, RRS at the flattened input is
    RIS and at the logits ||d / x|| / ||W d / W x||."""
    g = torch.Generator().manual_seed(0)
    w = (torch.rand(3, 1, 3, 3, generator=g) + 0.5).double()  # linear_model's are float32
    model = linear_model(w)
    x = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64) + 0.1
    d = 0.01 * torch.randn(4, *x.shape, generator=g, dtype=torch.float64)
    rel_x = (d / x).flatten(2).norm(dim=2)  # (4, B)
    logits_change = torch.einsum("kbn,cn->kbc", d.flatten(2), w.flatten(1)).norm(dim=2)
    logits = x.flatten(1) @ w.flatten(1).T
    rel_logits = (torch.einsum("kbn,cn->kbc", d.flatten(2), w.flatten(1)) / logits).norm(dim=2)
    kw = {"perturbations": d, "same_prediction": False}
    ris = relative_input_stability(model, x, 0, "input_x_gradient", **kw)
    assert torch.allclose(ris, torch.ones(2, dtype=torch.float64), atol=1e-12)
    ros = relative_output_stability(model, x, 0, "input_x_gradient", **kw)
    assert torch.allclose(ros, (rel_x / logits_change).amax(0), rtol=1e-10)
    rrs_in = relative_representation_stability(model, x, 0, "input_x_gradient", layer="0", **kw)
    assert torch.allclose(rrs_in, ris, atol=1e-12)
    rrs = relative_representation_stability(model, x, 0, "input_x_gradient", layer="1", **kw)
    assert torch.allclose(rrs, (rel_x / rel_logits).amax(0), rtol=1e-10)
    # an exact zero of E(x) (a black pixel) counts as eps, in the explanation and in the input
    x0 = x.clone()
    x0[0, 0, 1, 1] = 0
    eps = 1e-3
    wx, wd = w[0] * x0, w[0] * d
    num = (wd / torch.where(wx == 0, eps, wx)).flatten(2).norm(dim=2)
    den = (d / torch.where(x0 == 0, eps, x0)).flatten(2).norm(dim=2)
    ris0 = relative_input_stability(model, x0, 0, "input_x_gradient", eps=eps, **kw)
    assert torch.allclose(ris0, (num / den).amax(0), rtol=1e-10)
    assert abs(ris0[0] - 1) > 1e-3 and abs(ris0[1] - 1) < 1e-12


def test_same_prediction_leaves_out_the_draws_that_change_the_class():
    """Agarwal et al. maximise over the x' that keep the prediction. Quantus 0.6 marks a changed
    draw nan and then takes np.max, so one such draw makes the whole image nan (its bug); ours
    is the maximum over the other draws, nan only when every draw changes the class."""
    w = torch.zeros(2, 1, 1, 2)
    w[0, 0, 0, 0], w[1, 0, 0, 1] = 1.0, 1.0  # class 0 reads pixel 0, class 1 pixel 1
    x = torch.tensor([[[[0.6, 0.5]]], [[[0.9, 0.1]]]])
    # draw 0 moves image 0 to class 1 (0.6 - 0.2 < 0.5 + 0.1); draw 1 keeps both
    d = torch.tensor([[[[-0.2, 0.1]]], [[[0.01, 0.02]]]])
    d = torch.stack([d, torch.tensor([[[[0.01, -0.01]]], [[[-0.02, 0.01]]]])])
    model = linear_model(w.double()).float()
    e = w[0] * x  # input x gradient of class 0
    # the by-hand objective of each draw: ||(E - E') / E|| / ||(x - x') / x||, E' = w_0 * (x + d)
    def rel(a, b):  # an exact zero of a counts as 1e-6
        return ((a - b) / torch.where(a == 0, 1e-6, a)).flatten(1).norm(dim=1)

    ratios = torch.stack([rel(e.double(), (w[0] * (x + d[k])).double())
                          / rel(x.double(), (x + d[k]).double()) for k in range(2)])
    ours = relative_input_stability(model, x, 0, "input_x_gradient", perturbations=d)
    assert torch.allclose(ours, torch.stack([ratios[1, 0], ratios[:, 1].max()]), rtol=1e-5)
    every = relative_input_stability(model, x, 0, "input_x_gradient", perturbations=d,
                                     same_prediction=False)
    assert torch.allclose(every, ratios.amax(0), rtol=1e-5)
    lost = relative_input_stability(model, x[:1], 0, "input_x_gradient", perturbations=d[:1, :1])
    assert math.isnan(lost.item())
    metric = quantus.RelativeInputStability(nr_samples=2, perturb_func=replay(d),
                                            disable_warnings=True)
    theirs = run_quantus(metric, model, x, torch.zeros(2, dtype=torch.long),
                         a_batch=e.numpy(),
                         explain_func=quantus_explain(nl.attribution.input_x_gradient))
    assert math.isnan(theirs[0]) and torch.allclose(theirs[1], ours[1], rtol=1e-5)


def test_continuity_by_hand():
    """input x gradient of f = <w, x>: ||E(x) - E(x_s)||_1 = ||w * (x - x_s)||_1, over
    Quantus's shifts -W + k * ((2W + 1) // steps), k = 1 .. steps (the zero shift left out)."""
    g = torch.Generator().manual_seed(1)
    w = (torch.rand(2, 2, 3, 5, generator=g) - 0.5).double()
    model = linear_model(w)
    x = torch.rand(2, 2, 3, 5, generator=g, dtype=torch.float64)
    low = x.flatten(1).amin(1)

    def oracle(shifts, fill, e_of=lambda t: w[0] * t):
        ratios = []
        for s in shifts:
            xs = shifted(x, s, fill)
            ratios.append((e_of(x) - e_of(xs)).flatten(1).abs().sum(1)
                          / (x - xs).flatten(1).norm(dim=1))
        return torch.stack(ratios).amax(0)

    # W = 5, steps = 4: dx = 11 // 4 = 2, shifts -3, -1, 1, 3
    ours = continuity(model, x, 0, "input_x_gradient", steps=4, absolute=False, normalize=False)
    assert torch.allclose(ours, oracle([-3, -1, 1, 3], low), rtol=1e-12)
    # steps = 5: shifts -3, -1, 1, 3, 5 (5 = W: every column is the baseline)
    ours = continuity(model, x, 0, "input_x_gradient", steps=5, absolute=False, normalize=False,
                      baseline=0.25)
    assert torch.allclose(ours, oracle([-3, -1, 1, 3, 5], torch.full((2,), 0.25)), rtol=1e-12)
    # Quantus's defaults: each explanation divided by its largest |value|, then absolute
    def scaled(t):
        e = w[0] * t
        return (e / e.flatten(1).abs().amax(1).view(-1, 1, 1, 1)).abs()
    ours = continuity(model, x, 0, "input_x_gradient", shifts=[2, -4], baseline="white")
    assert torch.allclose(ours, oracle([2, -4], x.flatten(1).amax(1), scaled), rtol=1e-12)
    # vertically: the same as horizontally on the transposed images and weights
    wt = w.transpose(2, 3).contiguous()
    down = continuity(model, x, 0, "input_x_gradient", shifts=[1, -2], direction="y",
                      absolute=False, normalize=False)
    across = continuity(linear_model(wt), x.transpose(2, 3).contiguous(), 0,
                        "input_x_gradient", shifts=[1, -2], absolute=False, normalize=False)
    assert torch.allclose(down, across, rtol=1e-12)
    # saliency of a linear model does not move
    assert continuity(model, x, 0, steps=4).abs().max() < 1e-12


def test_consistency_by_hand():
    """Four maps, top_n_sign with top = 2: images 0, 1, 3 have their two largest |values| at
    features {0, 3} with signs (+, -); image 2 at {1, 2}. Labels 0, 0, 1, 1: image 0 shares its
    explanation with 1 (same label) and 3 (not): 1/2; image 1 likewise 1/2; image 2 with none:
    0; image 3 with 0 and 1, neither its label: 0."""
    maps = torch.tensor([[5.0, 1.0, 0.5, -4.0], [3.0, 0.0, 0.1, -9.0],
                         [0.1, 7.0, 8.0, 0.0], [2.0, -1.0, 0.5, -2.5]]).view(4, 1, 2, 2)
    model = linear_model(torch.rand(2, 1, 2, 2, dtype=torch.float64))
    x = torch.rand(4, 1, 2, 2, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    got = consistency(model, x, maps.double(), labels, top=2, reduce="sum")
    assert got.tolist() == [0.5, 0.5, 0.0, 0.0]
    # first_n_sign (Quantus's top_n_sign): the signs of features 0, 1: (+,+), (+,0), (+,+), (+,-)
    got = consistency(model, x, maps.double(), labels, discretize="first_n_sign", top=2,
                      reduce="sum")
    assert got.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert consistency(model, x, maps.double(), labels, discretize="sign",
                       reduce="sum").tolist() == [0.0] * 4
    # a function of the maps: total |relevance| above 3 (all are): the label agreement
    total = consistency(model, x, maps.double(), labels, reduce="sum",
                        discretize=lambda a: a.abs().sum(1, keepdim=True) > 3)
    assert total.tolist() == [1 / 3] * 4
    # the default labels are the predictions: f = <w, x> with w_1 = 2 w_0 > 0 predicts class 1
    w = torch.rand(1, 1, 2, 2, dtype=torch.float64) + 0.1
    pred = consistency(linear_model(torch.cat([w, 2 * w])), x, maps.double(), top=2,
                       reduce="sum")
    assert pred.tolist() == [1.0, 1.0, 0.0, 1.0]


# -- against Quantus 0.6.0 ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["input", "output", "representation"])
def test_relative_stability_equals_quantus(shapes, kind, untouched):
    model, x, y = shapes
    method = nl.attribution.saliency
    g = torch.Generator().manual_seed(3)
    noise = (torch.rand(3, *x.shape, generator=g) * 2 - 1) * 0.05
    extra = {"layer": "layer3.0"} if kind == "representation" else {}
    with untouched(model):
        ours = RELATIVE[kind](model, x, y, "saliency", perturbations=noise,
                              same_prediction=False, **extra)
    cls = {"input": quantus.RelativeInputStability, "output": quantus.RelativeOutputStability,
           "representation": quantus.RelativeRepresentationStability}[kind]
    qextra = {"layer_names": ["layer3.0"]} if kind == "representation" else {}
    metric = cls(nr_samples=3, perturb_func=replay(noise), disable_warnings=True,
                 return_nan_when_prediction_changes=False, **qextra)
    a = method(model, x, y).detach().numpy()
    theirs = run_quantus(metric, model, x, y, a_batch=a, explain_func=quantus_explain(method))
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), (ours, theirs)
    assert (ours > 0).all()


def test_continuity_equals_quantus(shapes, untouched):
    """steps = 8 on 32 px: shifts -24, -16, -8, 0, 8, 16, 24, 32 (Quantus's zero shift scores
    0 / 1e-9 = 0, ours leaves it out; 32 fills the whole image)."""
    model, x, y = shapes
    method = nl.attribution.saliency
    with untouched(model):
        ours = continuity(model, x, y, "saliency", steps=8)
    # Quantus divides by the largest value of the whole batch: per image, as ours
    metric = quantus.Continuity(nr_steps=8, disable_warnings=True,
                                normalise_func_kwargs={"normalise_axes": (1, 2, 3)})
    a = method(model, x, y).detach().numpy()
    theirs = run_quantus(metric, model, x, y, a_batch=a, explain_func=quantus_explain(method))
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), (ours, theirs)
    assert (ours > 0).all()


@pytest.mark.parametrize("signed", [True, False])
def test_consistency_equals_quantus(signed):
    """Quantus's top_n_sign takes the signs of the first n values (our "first_n_sign"); with
    abs=True (its default) every sign is + and only the predictions are compared."""
    model = nl.zoo.shapes_model()
    batch = nl.data.make_shapes(8, seed=5, size=48)
    x = batch.images
    a = nl.attribution.saliency(model, x, batch.labels).detach()
    top = 2 if signed else 5
    metric = quantus.Consistency(
        discretise_func=functools.partial(quantus.functions.discretise_func.top_n_sign, n=top),
        abs=not signed, normalise=not signed, disable_warnings=True)
    theirs = run_quantus(metric, model, x, batch.labels, a_batch=a.numpy())
    ours = consistency(model, x, a if signed else a.abs(), discretize="first_n_sign", top=top,
                       per_channel=True)
    assert torch.allclose(ours, theirs, atol=1e-6), (ours, theirs)
    assert len(set(ours.tolist())) > 1


# -- batching, draws, errors ----------------------------------------------------------------

def test_chunking_and_generator(shapes):
    """The result does not depend on batch_size; draw k is one torch.rand(x.shape) mapped to
    [-r, r] times each image's value range (float64: the relative changes magnify rounding)."""
    model, x, y = shapes
    model, x = copy.deepcopy(model).double(), x.double()
    g = torch.Generator().manual_seed(4)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    noise = torch.stack([(2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1) * 0.02 * span
                         for _ in range(3)])
    # chunks of 2 of the 9 noisy images: draws 0; 0, 1; 1; 2 (after dropping 0 and 1); 2
    drawn = relative_output_stability(model, x, y, n=3, radius=0.02, same_prediction=False,
                                      generator=torch.Generator().manual_seed(4), batch_size=2)
    given = relative_output_stability(model, x, y, perturbations=noise, same_prediction=False,
                                      batch_size=6)
    assert torch.allclose(drawn, given, rtol=1e-9)
    one = continuity(model, x, y, "gradcam", shifts=[3, -5], batch_size=1)
    assert torch.allclose(one, continuity(model, x, y, "gradcam", shifts=[3, -5]), rtol=1e-9)


def test_bad_options(untouched):
    model = linear_model(torch.ones(2, 1, 4, 4, dtype=torch.float64))
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    attr = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    with untouched(model):
        for kwargs, match in [({"n": 0}, "n must be"), ({"radius": -1.0}, "radius"),
                              ({"eps": 0.0}, "eps must be > 0"),
                              ({"perturbations": torch.zeros(2, 1, 1, 4, 4)},
                               r"perturbations must be a tensor \(n, \*x.shape\)"),
                              ({"batch_size": 0}, "batch_size must be")]:
            with pytest.raises(ValueError, match=match):
                relative_input_stability(model, x, 0, **kwargs)
        with pytest.raises(ValueError, match="no layer named 'flaten'"):
            relative_representation_stability(model, x, 0, layer="flaten")
        for kwargs, match in [({"steps": 10}, r"at most 2 \* 4 \+ 1 = 9"),
                              ({"shifts": [1, 0]}, "nonzero"), ({"shifts": []}, "at least one"),
                              ({"direction": "z"}, "'x' .* or 'y'"),
                              ({"baseline": "grey"}, "'black', 'white' or a number")]:
            with pytest.raises(ValueError, match=match):
                continuity(model, x, 0, **kwargs)
        with pytest.raises(ValueError, match="at least 2 images"):
            consistency(model, x[:1], attr[:1])
        with pytest.raises(ValueError, match="discretize must be"):
            consistency(model, x, attr, discretize="rank")
        with pytest.raises(ValueError, match="top=17 is more than the 16"):
            consistency(model, x, attr, top=17)
        with pytest.raises(ValueError, match="compares class labels"):
            consistency(model, x, attr, nl.targets.Regression(0))
        with pytest.raises(ValueError, match="does not match the input"):
            consistency(model, x, attr[..., :2])


def test_model_untouched_after_an_error(untouched):
    """A method that fails in the middle of the perturbed passes leaves the model as it was,
    in training mode too."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(32, 2)).double().train()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    calls = [0]

    def failing(m, inputs, target):
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("boom")
        return nl.attribution.saliency(m, inputs, target)

    for fn in (relative_representation_stability, continuity):
        calls[0] = 0
        with untouched(model), pytest.warns(NetlensWarning, match="training mode"), \
                pytest.raises(RuntimeError, match="boom"):
            extra = {"layer": "2"} if fn is relative_representation_stability else {}
            fn(model, x, 0, failing, batch_size=1, **extra, **({} if extra else {"steps": 4}))
