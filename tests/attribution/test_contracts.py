"""Contract tests generated from the method registry × random-init architectures
(CONTRIBUTING.md tests C10, C11, C13): shapes, dtypes, finiteness, batch invariance, and a
model left exactly as it was, also after errors."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
import torchvision
from torch import nn

import netlens as nl
from netlens.attribution import CAM_METHODS, METHODS
from netlens.attribution.registry import Family, OutputKind

from helpers import assert_untouched, model_state, tiny_vit

ARCHS = {
    "resnet18": lambda: torchvision.models.resnet18(),
    "googlenet": lambda: torchvision.models.googlenet(aux_logits=False, init_weights=False),
    "densenet121": lambda: torchvision.models.densenet121(),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(),
    "vit": tiny_vit,
}


@pytest.fixture(scope="module")
def arch():
    """``arch(name)``: the architecture, seeded, in float64 (exact batch invariance), built once
    for this module; the tests that share it check that they leave it as it was."""
    built: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in built:
            torch.manual_seed(0)
            built[name] = ARCHS[name]().double().eval()
        return built[name]

    return get


# The methods of multiplied passes (spec.progress: samples, masks, windows, steps) are held to
# the contract on resnet18, mobilenet_v3_small and the ViT; on GoogLeNet and DenseNet121 (about
# 1,000 channels at the last layer: a Score-CAM-like method makes B x 1,000 passes) they cost
# 5-30 s a case, and their functional ReLUs and concatenations are covered by the single-pass
# methods of every family and by the methods' own tests.
HEAVY_ARCHS = {"googlenet", "densenet121"}
CASES = [pytest.param(m, a, id=f"{m}-{a}") for a in ARCHS for m in METHODS
         if not (METHODS[m].progress and a in HEAVY_ARCHS)]
# the architectures whose classifier is not a global-average-pool + one linear layer (an MLP
# head, a class token), where a method with MethodSpec.linear_head is refused
NO_LINEAR_HEAD = {"mobilenet_v3_small", "vit"}


def test_registry_generates_cases():
    heavy = sum(1 for s in METHODS.values() if s.progress) * len(HEAVY_ARCHS)
    assert len(METHODS) >= 14 and len(CASES) == len(METHODS) * len(ARCHS) - heavy > 0
    assert set(CAM_METHODS) <= set(METHODS)
    assert CAM_METHODS == {n for n, s in METHODS.items() if s.family == "cam" and s.output == "map"}


def test_every_spec_describes_its_function():
    """The metadata is checked against the function: a spec cannot claim an option it lacks."""
    import inspect

    for name, spec in METHODS.items():
        params = inspect.signature(spec.fn).parameters
        assert list(params)[:3] == ["model", "x", "target"], name
        assert spec.layer == ("layer" in params) and spec.progress == ("progress" in params)
        assert not spec.stochastic or "generator" in params
        assert set(spec.cheap) <= set(params) and spec.paper and spec.summary, name
        assert spec.output in get_args(OutputKind) and spec.family in get_args(Family), name
    with pytest.raises(ValueError, match="layer=True but the function does not take layer="):
        nl.attribution.MethodSpec("bad", METHODS["saliency"].fn, "input", "gradient", "p", "s",
                                  layer=True)


def call(method: str, model, x, target, **extra):
    spec = METHODS[method]
    options = dict(spec.cheap, **extra)
    if spec.stochastic:
        options["generator"] = torch.Generator().manual_seed(0)
    return spec(model, x, target, **options)


@pytest.mark.slow
@pytest.mark.parametrize("method, name", CASES)
def test_method_contract(method, name, arch):
    model = arch(name)
    before = model_state(model)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64)
    spec = METHODS[method]
    if name == "vit" and not spec.attention:  # refused, naming the layer it has no rule for
        with pytest.raises(ValueError, match=r"'encoder[\w.]*'"):
            call(method, model, x, [1, 2])
        assert_untouched(model, before)
        return
    if name in NO_LINEAR_HEAD and spec.linear_head:  # refused: the head is not pool + linear
        with pytest.raises(ValueError, match="global-average-pool"):
            call(method, model, x, [1, 2])
        assert_untouched(model, before)
        return
    out = call(method, model, x, [1, 2])
    channels = 1 if spec.output == "map" else 3
    assert out.shape == (2, channels, 32, 32) and out.dtype == x.dtype
    assert not out.requires_grad and out.grad_fn is None  # a value, not a graph
    assert torch.isfinite(out).all()
    if spec.family != "cam":  # a CAM may be all zero
        assert out.abs().sum() > 0
    if not spec.stochastic:
        single = call(method, model, x[1:], [2])
        scale = out[1:].abs().max().clamp(min=1e-12)
        assert ((single - out[1:]).abs().max() / scale) < 1e-8
    with pytest.raises(ValueError, match="out of range"):
        call(method, model, x, 10**6)
    assert_untouched(model, before)


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)
        self.armed = False

    def forward(self, x):
        x = self.relu(self.conv(x))
        if self.armed:
            raise RuntimeError("layer failure")
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("method", list(METHODS))
def test_no_side_effects_in_both_modes_and_after_errors(method):
    torch.manual_seed(0)
    model = Exploding()
    x = torch.rand(2, 3, 16, 16)
    x.grad = torch.ones_like(x)
    opts: dict = {}  # the cheap options of the spec fit a 16-pixel image
    for mode in ("train", "eval"):
        getattr(model, mode)()
        before = model_state(model)
        out = call(method, model, x, 1, **opts)
        assert torch.isfinite(out).all()
        with pytest.raises(ValueError):
            call(method, model, x, 10**6, **opts)
        fm = nl.FlatModel(model)
        fm.layer_names
        model.armed = True
        with pytest.raises(RuntimeError, match="layer failure"):
            call(method, fm, x, 1, **opts)
        model.armed = False
        assert_untouched(model, before)
    assert torch.equal(x.grad, torch.ones_like(x))
    with torch.no_grad():
        out = call(method, model, x, 1, **opts)
    assert torch.isfinite(out).all()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        call(method, model, x, 1, **opts)


@pytest.mark.parametrize("method", list(METHODS))
def test_dtype_and_bad_input(method):
    torch.manual_seed(0)
    model = Exploding().double().eval()
    opts: dict = {}  # the cheap options of the spec fit a 16-pixel image
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    assert call(method, model, x, 0, **opts).dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        call(method, model, x[0], 0, **opts)
    with pytest.raises(ValueError, match="3-channel"):
        call(method, model, x[:, :1], 0, **opts)
    with pytest.raises(ValueError, match="NaN"):
        call(method, model, torch.full_like(x, float("nan")), 0, **opts)
    with pytest.raises(ValueError, match="targets for a batch"):
        call(method, model, x.expand(2, -1, -1, -1), [0, 1, 2], **opts)
