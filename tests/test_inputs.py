"""Inputs across every method of the registry (issue 13): numpy class targets are ints, strings
and empty lists are refused with the fix, outputs that are not ``(B, classes)`` are explained as
meant or refused, an input dtype that is not the model's, outputs that are not finite, and
``torch.compile``d models."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import netlens as nl
from netlens import metrics as M
from netlens import targets as T
from netlens.attribution import METHODS

from helpers import small_cnn

NAMES = list(METHODS)


def call(name: str, model: nn.Module, x: torch.Tensor, target: object) -> torch.Tensor:
    """The method with its cheap options and a fixed seed (so that two calls can be equal)."""
    spec = METHODS[name]
    options = dict(spec.cheap)
    if spec.stochastic:
        options["generator"] = torch.Generator().manual_seed(0)
    return spec(model, x, target, **options)


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    return small_cnn(4)


def _x(dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, 16, 16, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# -- 1. numpy class targets ---------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_numpy_targets_equal_ints(name, cnn):
    x = _x()
    ints = call(name, cnn, x, [1, 2])
    for form in (np.array([1, 2]), np.array([1, 2], dtype=np.int32), [np.int64(1), np.int64(2)]):
        assert torch.equal(call(name, cnn, x, form), ints), (name, form)
    one = call(name, cnn, x, 3)
    for form in (np.int64(3), np.array(3), np.array([3])):
        assert torch.equal(call(name, cnn, x, form), one), (name, form)


def test_metrics_take_numpy_targets(cnn):
    x = _x(seed=1)
    labels = np.array([1, 3])
    attr = nl.attribution.saliency(cnn, x, [1, 3])
    for metric in (M.deletion, M.insertion, M.pixel_flipping):
        want, got = (metric(cnn, x, attr, t, steps=4, baseline=0.0) for t in ([1, 3], labels))
        assert torch.equal(got.scores, want.scores), metric.__name__
    for metric in (M.average_drop, M.increase_in_confidence):
        assert torch.equal(metric(cnn, x, attr, labels), metric(cnn, x, attr, [1, 3]))
    assert torch.equal(M.confidence_scores(cnn, x, attr, labels[1])[0],
                       M.confidence_scores(cnn, x, attr, 3)[0])
    sens = [M.max_sensitivity(cnn, x, t, "saliency", n=2,
                              generator=torch.Generator().manual_seed(0))
            for t in ([1, 3], labels)]
    assert torch.equal(*sens)
    tables = [M.compare(cnn, x, t, methods=["saliency"], metrics=["deletion"], progress=False)
              for t in ([1, 3], labels)]
    assert tables[0][0]["deletion"] == tables[1][0]["deletion"]


# -- 2. strings and empty lists ---------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_string_and_empty_targets_are_refused(name, cnn):
    x = _x()
    with pytest.raises(TypeError, match=r"target 'cat' is a string.*labels.index\('cat'\)"):
        call(name, cnn, x, "cat")
    with pytest.raises(ValueError, match="the target list is empty"):
        call(name, cnn, x, [])


# -- 3. and 4. outputs that are not (B, classes) ------------------------------------------------
class _Head(nn.Module):
    """``small_cnn``'s layers, with an output of another shape: ``"vector"`` one score per image
    ``(B,)``, ``"column"`` the same as ``(B, 1)``, ``"scalar"`` one number for the batch,
    ``"dense"`` a ``(B, K, H, W)`` map, ``"tokens"`` ``(B, N, K)``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.net = small_cnn(1 if kind in ("vector", "column", "scalar") else 4)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind in ("dense", "tokens"):
            y = self.net.conv2(self.net.act1(self.net.conv1(x)))[:, :4]  # (B, 4, 8, 8)
            return y if self.kind == "dense" else y.flatten(2).transpose(1, 2)
        out = self.net(x)
        return {"vector": out[:, 0], "column": out, "scalar": out.sum()}[self.kind]


@pytest.mark.parametrize("name", NAMES)
def test_one_score_per_image_is_explained(name):
    """A ``(B,)`` output is one score per image: ``target=None`` (and class 0, and
    ``Regression()``) explain it, exactly as the same model's ``(B, 1)`` output."""
    x = _x(seed=2)
    if METHODS[name].classifier:  # one score has no classes to compare, or no linear head
        for kind in ("column", "vector"):
            try:
                call(name, _Head(kind), x, None)
            except ValueError as e:
                assert re.search("use gradcam|ranks below the number of classes", str(e))
        return
    want = call(name, _Head("column"), x, None)
    for target in (None, 0, T.Regression()):
        assert torch.equal(call(name, _Head("vector"), x, target), want), (name, target)
    with pytest.raises(ValueError, match=r"target 1 is out of range.*1 output"):
        call(name, _Head("vector"), x, 1)


def test_one_score_per_image_saliency_is_its_gradient():
    x = _x(seed=3).requires_grad_(True)
    model = _Head("vector")
    want, = torch.autograd.grad(model(x).sum(), x)
    torch.testing.assert_close(nl.attribution.saliency(model, x.detach()), want, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_outputs_without_classes_are_refused(name):
    x = _x()
    with pytest.raises(ValueError, match=r"shape \(\).*one score per image"):
        call(name, _Head("scalar"), x, None)
    for target in (1, None, [1, 2]):
        # (the shape of one image's output where explicit classes are checked on one image)
        with pytest.raises(ValueError, match=r"shape \([12], 4, 8, 8\).*Segmentation\(c\)"):
            call(name, _Head("dense"), x, target)
        with pytest.raises(ValueError, match=r"shape \([12], 64, 4\).*Score\("):
            call(name, _Head("tokens"), x, target)


# -- 5. the input's dtype and the model's ------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_input_dtype_must_be_the_models(name):
    model = small_cnn(4, dtype=torch.float32)
    for dtype, fix in [(torch.float16, "x.float()"), (torch.bfloat16, "x.float()"),
                       (torch.float64, "x.float()")]:
        with pytest.raises(TypeError, match=rf"the input is {dtype} but the model's parameters "
                                            rf"are torch.float32.*{re.escape(fix)}"):
            call(name, model, _x(dtype), None)
    with pytest.raises(TypeError, match=r"model.float\(\)"):
        call(name, small_cnn(4), _x(torch.float32), None)
    assert call(name, model, _x(torch.float32), None).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # casts per operation: not refused
        assert bool(call(name, model, _x(torch.bfloat16), None).isfinite().all())
    assert call(name, small_cnn(4), _x(torch.float64), None).dtype == torch.float64


# -- 6. outputs that are not finite ------------------------------------------------------------
class _Blowup(nn.Module):
    """``small_cnn`` whose logits overflow to infinity for every input (finite inputs too)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn(4, dtype=torch.float32)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 1e38 * 1e38


@pytest.mark.parametrize("name", NAMES)
def test_outputs_that_are_not_finite_raise(name):
    x = _x(torch.float32)
    model = small_cnn(4, dtype=torch.float32)
    huge = x * 3e38  # finite, but the first convolution's sums overflow
    assert bool(huge.isfinite().all()) and not bool(model(huge).isfinite().any())
    for net, inputs in [(model, huge), (_Blowup(), x)]:
        for target in (None, [1, 2]):
            with pytest.raises(ValueError, match=r"model's output.*not finite \(inf/nan\)"):
                call(name, net, inputs, target)


# -- 7. compiled models ------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_a_compiled_model_is_explained_through_its_module(name, cnn):
    x = _x(seed=4)
    compiled = torch.compile(cnn)  # lazy: nothing is compiled unless it runs
    assert compiled._orig_mod is cnn
    with pytest.warns(nl.attribution.NetlensWarning, match=r"torch.compile.*_orig_mod"):
        got = call(name, compiled, x, [1, 2])
    assert torch.equal(got, call(name, cnn, x, [1, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nl.FlatModel(cnn)
