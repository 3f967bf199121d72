from __future__ import annotations

import contextlib

import pytest
import torch
import torchvision
from torch import nn

import netlens as nl
from netlens import FlatModel
from netlens.adapter import CallTracer, Layout, as_layout, preserved_state, relu_calls, trace

from helpers import tiny_vit

# Issue #2: exact ReLU-family call counts, random init, one forward pass.
RELU_COUNTS = [
    ("resnet18", {}, 64, 17, 0),
    ("resnext50_32x4d", {}, 32, 49, 0),
    ("densenet121", {}, 32, 121, 1),
    ("googlenet", {"aux_logits": False, "init_weights": False}, 32, 57, 57),
    ("inception_v3", {"aux_logits": False, "init_weights": False}, 75, 94, 94),
    ("mobilenet_v2", {}, 32, 35, 0),
    ("shufflenet_v2_x0_5", {}, 32, 37, 0),
    pytest.param("vit_b_16", {}, 224, 0, 0, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("builder, kwargs, size, expected, functional", RELU_COUNTS)
def test_relu_call_counts(builder, kwargs, size, expected, functional):
    torch.manual_seed(0)
    model = getattr(torchvision.models, builder)(**kwargs).eval()
    calls = relu_calls(model, torch.zeros(1, 3, size, size))
    assert len(calls) == expected
    assert sum(c.functional for c in calls) == functional
    assert len({c.name for c in calls}) == expected  # every call has its own name
    if builder == "mobilenet_v2":
        assert {c.activation for c in calls} == {"relu6"}


def test_relu_calls_of_every_kind(every_relu_net):
    calls = relu_calls(every_relu_net, torch.zeros(1, 3, 8, 8, dtype=torch.float64))
    assert [(c.name, c.functional, c.inplace) for c in calls] == [
        ("relu1", False, False), ("relu_inplace", False, True), ("shared", False, True),
        ("shared:1", False, True), ("relu()", True, False), ("relu():1", True, False)]


def test_resnet_reused_relu_is_named_per_call():
    calls = relu_calls(torchvision.models.resnet18().eval(), torch.zeros(1, 3, 32, 32))
    names = [c.name for c in calls]
    assert names[:3] == ["relu", "layer1.0.relu", "layer1.0.relu:1"]
    assert all(c.inplace and not c.functional for c in calls)


def test_functional_relu_variants_are_found():
    class Net(nn.Module):
        def forward(self, x):
            x = torch.nn.functional.relu6(x)
            y = x.relu()
            y.relu_()
            torch.relu_(y)
            z = torch.nn.functional.hardtanh(y, 0.0, 6.0)  # ReLU6 in disguise
            return torch.nn.functional.hardtanh(z)  # not a ReLU: [-1, 1]

    calls = relu_calls(Net(), torch.zeros(1, 1, 2, 2))
    assert [(c.name, c.activation, c.inplace) for c in calls] == [
        ("relu6()", "relu6", False), ("relu()", "relu", False), ("relu():1", "relu", True),
        ("relu():2", "relu", True), ("relu6():1", "relu6", False)]


def test_trace_leaves_training_model_rng_and_buffers_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.ReLU())
    model.train()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    rng = torch.random.get_rng_state()
    calls = trace(model, x)
    assert [c.name for c in calls] == ["0", "1", "2", "3"]
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())
    assert model.training


def test_vit_token_layers_become_maps():
    vit = tiny_vit(hidden_dim=16, mlp_dim=32, head_std=None, dtype=torch.float32)
    x = torch.randn(2, 3, 32, 32)
    calls = {c.name: c for c in trace(vit, x)}
    layout = calls["encoder.layers.encoder_layer_1"].layout
    assert layout == Layout("tokens", extra=1, stride=(8, 8))
    assert calls["conv_proj"].layout.kind == "nchw" and calls["heads"].layout.kind == "vector"
    seen = {}
    with CallTracer(vit, lambda r, o: seen.setdefault(r.name, o)):
        vit(x)
    tokens = seen["encoder.layers.encoder_layer_1"]
    grid = layout.to_map(tokens, (32, 32))
    assert grid.shape == (2, 16, 4, 4)
    # token 1 + (i * 4 + j) is the patch in row i, column j
    assert torch.equal(grid[:, :, 2, 3], tokens[:, 1 + 2 * 4 + 3])


def test_swin_channels_last_layers_become_maps():
    torch.manual_seed(0)
    swin = torchvision.models.swin_t().eval()
    calls = {c.name: c for c in trace(swin, torch.zeros(1, 3, 64, 64))}
    assert calls["features.0.0"].layout.kind == "nchw"  # the patch-embedding conv
    assert calls["features.7"].layout.kind == "nhwc" and calls["features.7"].shape == (1, 2, 2, 768)
    assert calls["norm"].layout.kind == "nhwc"
    assert calls["permute"].layout.kind == "nchw" and calls["flatten"].layout.kind == "vector"
    t = torch.arange(24.0).reshape(1, 2, 3, 4)
    assert torch.equal(Layout("nhwc").to_map(t), t.permute(0, 3, 1, 2))


def test_convnext_block_internals_are_channels_last():
    model = torchvision.models.convnext_tiny().eval()
    calls = {c.name: c for c in trace(model, torch.zeros(1, 3, 32, 32))}
    assert calls["features.1.0.block.0"].layout.kind == "nchw"
    assert calls["features.1.0.block.2"].layout.kind == "nhwc"
    assert calls["features.1.0"].layout.kind == "nchw"


def test_layout_errors():
    with pytest.raises(ValueError, match="cannot be viewed"):
        Layout("other").to_map(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="token grid"):
        Layout("tokens", extra=1, stride=(8, 8)).to_map(torch.zeros(1, 1 + 7, 4), (32, 32))


def test_preserved_state_restores_everything_after_an_error():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(inplace=True)).eval()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    grad = model[0].weight.grad
    running_mean = model[1].running_mean.clone()
    with pytest.raises(RuntimeError):
        with preserved_state(model, buffers=True):
            model.train()
            model[2].inplace = False
            for p in model.parameters():
                p.requires_grad_(False)
                p.grad = None
            model(torch.randn(4, 1, 5, 5))  # updates the running statistics
            raise RuntimeError
    assert not model.training and not model[1].training and model[2].inplace
    assert all(p.requires_grad for p in model.parameters())
    assert model[0].weight.grad is grad
    assert torch.equal(model[1].running_mean, running_mean)


def test_preserved_state_eval_runs_the_block_in_eval_mode_and_restores_the_flags():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5)).train()
    model[2].eval()  # a mixed model: its flags come back one by one
    flags = [m.training for m in model.modules()]
    for fail in (False, True):
        with contextlib.suppress(RuntimeError), preserved_state(model, eval=True):
            assert not any(m.training for m in model.modules())
            if fail:
                raise RuntimeError
        assert [m.training for m in model.modules()] == flags


def test_model_lock_is_one_reentrant_lock_per_model_that_keeps_no_model_alive():
    import gc
    import weakref

    from netlens.adapter import model_lock

    a, b = nn.Linear(1, 1), nn.Linear(1, 1)
    assert model_lock(a) is model_lock(a) and model_lock(a) is not model_lock(b)
    with model_lock(a), model_lock(a):  # re-entrant
        pass
    ref = weakref.ref(a)
    del a
    gc.collect()
    assert ref() is None


def test_trace_finds_the_eval_mode_layers_of_a_training_model():
    class AuxNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm1d(4)  # training mode would refuse a batch of one
            self.aux = nn.Linear(4, 2)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.bn(self.conv(x).mean(dim=(2, 3)))
            return self.fc(h) + self.aux(h) if self.training else self.fc(h)

    model = AuxNet().train()
    assert [c.name for c in trace(model, torch.randn(1, 3, 8, 8))] == ["conv", "bn", "fc"]
    assert model.training and model.bn.training


def test_layout_of_user_input_forms_and_errors():
    assert as_layout("nhwc") == Layout("nhwc") and as_layout(Layout("vector")) == Layout("vector")
    custom = as_layout(lambda t: t.mean(1, keepdim=True))
    assert custom.kind == "custom" and custom.to_map(torch.ones(2, 3, 4, 5)).shape == (2, 1, 4, 5)
    with pytest.raises(ValueError, match="unknown layout 'nwhc'.*Layout"):
        as_layout("nwhc")
    with pytest.raises(ValueError, match="layout= takes"):
        as_layout(3)
    with pytest.raises(ValueError, match="must return \\[B, C, h, w\\].*returned \\(2, 3\\)"):
        as_layout(lambda t: t.flatten(1)[:, :3]).to_map(torch.ones(2, 3, 4, 5))
    with pytest.raises(ValueError, match="cannot write a map back"):
        custom.from_map(torch.ones(2, 1, 4, 5), torch.ones(2, 3, 4, 5))
    with pytest.raises(ValueError, match="'nchw' layout needs a 4-D output.*tokens"):
        Layout("nchw").to_map(torch.ones(2, 17, 8))
    with pytest.raises(ValueError, match="needs reshape="):
        Layout("custom")
    with pytest.raises(ValueError, match="unknown layout kind"):
        Layout("grid")  # type: ignore[arg-type]


def test_given_layouts_replace_the_read_ones_inside_the_block_only():
    vit = tiny_vit()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    fm = FlatModel(vit)
    fm.ensure_traced(x)
    read = fm.layout(layer)
    assert read == Layout("tokens", extra=1, stride=(8, 8))
    # pytorch-grad-cam's ViT reshape_transform, written by hand: the same map as the read layout
    def reshape(t):
        return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    with nl.layouts({layer: reshape}):
        assert fm.layout(layer).kind == "custom"
    assert fm.layout(layer) == read  # restored after the block
    want = nl.attribution.gradcam(vit, x, 1, layer=layer)
    for given in (reshape, Layout("tokens", extra=1)):
        torch.testing.assert_close(nl.attribution.gradcam(vit, x, 1, layer=layer, layout=given),
                                   want)
    # a layout that drops the patch grid is used as given: it changes the map
    rows = nl.attribution.gradcam(vit, x, 1, layer=layer, interpolate="none",
                                  layout=lambda t: t[:, 1:].transpose(1, 2)[..., None])
    assert rows.shape == (2, 1, 16, 1)
    assert fm.layout(layer) == read
    with pytest.raises(ValueError, match="pass layer= too"):
        nl.attribution.gradcam(vit, x, 1, layout=reshape)
    with pytest.raises(ValueError, match="no spatial output.*layout="):
        nl.attribution.gradcam(vit, x, 1, layer="heads.head")
