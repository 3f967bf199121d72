"""Completeness, non-sensitivity and input invariance: by hand on linear models and against
Quantus 0.6.0 on the shapes model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import netlens as nl
from netlens.metrics.axiomatic import (
    completeness,
    input_invariance,
    non_sensitivity,
    shifted_model,
)

from helpers import linear_model

quantus = pytest.importorskip("quantus")


@pytest.fixture(scope="module")
def shapes():
    torch.manual_seed(0)
    model = nl.zoo.shapes_model()
    batch = nl.data.make_shapes(2, seed=8, size=24)
    return model, batch.images, batch.labels


def run_quantus(metric, model, x, y, a, **call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a,
                     channel_first=True, device="cpu", **call)
    return torch.tensor(np.asarray(out, dtype=np.float64))


def explain(method):
    def f(model, inputs, targets, **kwargs):
        model = model.get_model() if hasattr(model, "get_model") else model
        a = method(model, torch.as_tensor(inputs), torch.as_tensor(targets).long())
        return a.detach().float().numpy()
    return f


# -- completeness ---------------------------------------------------------------------------

def test_completeness_by_hand():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64)
    model = linear_model(w)
    x = torch.rand(3, 1, 3, 3, generator=g, dtype=torch.float64)
    w = model[1].weight.detach().view(2, 1, 3, 3)
    exact = w[0] * x  # input x gradient of a bias-free linear model: sum = f(x) - f(0)
    assert completeness(model, x, exact, 0).abs().max() < 1e-12
    assert torch.allclose(completeness(model, x, 2 * exact, 0), exact.flatten(1).sum(1))
    # against a baseline of 0.5: f(x) - f(0.5) = <w, x - 0.5>
    ig = nl.attribution.integrated_gradients(model, x, 0, baseline=0.5)
    assert completeness(model, x, ig, 0, baseline=0.5).abs().max() < 1e-10
    assert completeness(model, x, exact, 0, batch_size=1).abs().max() < 1e-12


def test_completeness_equals_quantus(shapes):
    """Quantus returns ``sum(a) == f(x) - f(baseline)`` as a bool, an exact float equality
    that is False for any real attribution (and for its default, normalized maps); its
    ``output_func`` sees ``f(x) - f(baseline)``: ours is the same gap minus sum(a)."""
    model, x, y = shapes
    a = nl.attribution.integrated_gradients(model, x, y, steps=16).detach().float()
    seen = []

    def record(delta):
        seen.append(np.asarray(delta, dtype=np.float64))
        return delta

    metric = quantus.Completeness(normalise=False, perturb_baseline=0.0, output_func=record,
                                  disable_warnings=True)
    exact = run_quantus(metric, model, x, y, a.numpy())
    ours = completeness(model, x, a, y)
    delta = torch.tensor(np.concatenate(seen))
    assert torch.allclose(ours, a.flatten(1).double().sum(1) - delta, atol=1e-4)
    assert exact.tolist() == (ours == 0).double().tolist()
    assert ours.abs().max() < 0.1 * delta.abs().max()  # IG with 16 steps is nearly complete


# -- non-sensitivity ------------------------------------------------------------------------

def test_non_sensitivity_by_hand():
    # class 0 reads pixels 0 and 3 only
    w = torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    model = linear_model(w.view(2, 1, 2, 2))
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    right = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]], dtype=torch.float64)
    wrong = torch.tensor([[[[0.0, 1.0], [0.0, 2.0]]]], dtype=torch.float64)  # 0 and 1 wrong
    dense = torch.ones(1, 1, 2, 2, dtype=torch.float64)  # 1 and 2 wrong
    kw = dict(score="logit")
    assert non_sensitivity(model, x, right, 0, **kw).tolist() == [0.0]
    assert non_sensitivity(model, x, wrong, 0, **kw).tolist() == [2.0]
    assert non_sensitivity(model, x, dense, 0, **kw).tolist() == [2.0]
    # groups of 2 (pixels 0,1 and 2,3): the score moves for both groups, so the zero
    # attributions of pixels 1 and 2 both count
    assert non_sensitivity(model, x, right, 0, features_in_step=2, **kw).tolist() == [2.0]
    assert non_sensitivity(model, x, right, 0, batch_size=1, **kw).tolist() == [0.0]
    with pytest.raises(ValueError, match="features_in_step"):
        non_sensitivity(model, x, right, 0, features_in_step=0)


@pytest.mark.slow
def test_non_sensitivity_equals_quantus():
    """Quantus counts (unchanged score) XOR (zero attribution) per feature; it only runs with
    features_in_step=1 (else its per-step and per-feature arrays do not broadcast). Quantus
    runs one forward pass per feature (3 * H * W), so this compares on a small conv net at
    8 x 8 (192 features); on the 24-px shapes model it agrees too but takes minutes."""
    g = torch.Generator().manual_seed(3)
    model = conv_model(1)
    x = torch.rand(2, 3, 8, 8, generator=g)
    model(x)
    y = torch.tensor([0, 2])
    a = nl.attribution.saliency(model, x, y).detach().float()
    a = torch.where(a.abs() < a.abs().quantile(0.4), torch.zeros_like(a), a)  # some zeros
    for score, softmax in (("softmax", True), ("logit", False)):
        metric = quantus.NonSensitivity(eps=1e-5, perturb_baseline=0.0, disable_warnings=True)
        theirs = run_quantus(metric, model, x, y, a.numpy(), softmax=softmax)
        ours = non_sensitivity(model, x, a, y, score=score)
        # float32 scores depend on a pass's batch composition; a feature whose score change
        # sits at eps may flip: allow one of 192
        assert (ours - theirs).abs().max() <= 1, (score, ours, theirs)
        assert ours.min() > 0


# -- input invariance -----------------------------------------------------------------------

def conv_model(padding: int) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=padding), nn.ReLU(), nn.Flatten(),
                         nn.LazyLinear(3)).eval()


def test_shifted_model_computes_the_same_function(shapes, untouched):
    model, x, _ = shapes
    for net in (model, conv_model(1)):
        net(x)
        with untouched(net):
            twin = shifted_model(net, -1.0).eval()
            assert torch.allclose(twin(x - 1.0), net(x), atol=1e-5)
    lin = nn.Linear(4, 2)
    assert torch.allclose(shifted_model(lin, 2.0)(torch.ones(1, 4) + 2), lin(torch.ones(1, 4)),
                          atol=1e-6)
    with pytest.raises(ValueError, match="no"):
        shifted_model(nn.ReLU(), 1.0)


def test_input_invariance_by_hand():
    """Linear model: saliency is w everywhere (invariant); input x gradient is w * x, which
    moves by w * shift."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(9, 2)).double().eval()
    x = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64)
    assert input_invariance(model, x, 0, "saliency").tolist() == [1.0, 1.0]
    assert input_invariance(model, x, 0, "input_x_gradient").tolist() == [0.0, 0.0]
    # a tolerance above |w * shift| accepts it
    big = float(model[1].weight.detach().abs().max()) + 1e-3
    assert input_invariance(model, x, 0, "input_x_gradient", atol=big).tolist() == [1.0, 1.0]


def test_input_invariance_on_shapes(shapes, untouched):
    """The shapes model's first convolution has no bias and pads, so Quantus (which writes
    ``2 b - w * m`` into the existing bias, read at one position) fails on it; ours absorbs the
    shift exactly (a bias that varies near the border) in a copy."""
    model, x, y = shapes
    with untouched(model):
        assert input_invariance(model, x, y, "saliency").tolist() == [1.0, 1.0]
        assert input_invariance(model, x, y, "input_x_gradient").tolist() == [0.0, 0.0]
    metric = quantus.InputInvariance(disable_warnings=True)
    a = nl.attribution.saliency(model, x, y).detach().float().numpy()
    with pytest.raises(TypeError):
        run_quantus(metric, model, x, y, a, explain_func=explain(nl.attribution.saliency))


def test_input_invariance_equals_quantus(shapes):
    """Without padding and with a bias, Quantus's shifted model is nearly exact too."""
    _, x, y = shapes
    model = conv_model(0)
    model(x)
    y = y % 3
    for name in ("saliency", "input_x_gradient"):
        method = getattr(nl.attribution, name)
        a = method(model, x, y).detach().float().numpy()
        theirs = run_quantus(quantus.InputInvariance(disable_warnings=True), model, x, y, a,
                             explain_func=explain(method))
        ours = input_invariance(model, x, y, name)
        if name == "input_x_gradient":
            assert ours.tolist() == theirs.tolist() == [0.0, 0.0]
        else:
            # ours is exact (the shifted copy's saliency equals the model's bit for bit);
            # Quantus writes 2 b - min(unique(conv(m) + b)) into the bias in float32, an error
            # of ~1e-7 that can flip a ReLU: it may fail an image, never pass one we fail
            assert ours.tolist() == [1.0, 1.0] and (theirs <= ours).all(), (ours, theirs)
