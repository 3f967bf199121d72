"""FlatModel on the smallest member of every torchvision classification family (random init)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from netlens import FlatModel

from helpers import ZOO, ZooEntry, assert_untouched, model_state, zoo_params


@pytest.fixture(scope="module", params=zoo_params())
def zoo(request: pytest.FixtureRequest) -> tuple[ZooEntry, nn.Module]:
    """``(entry, model)`` of each zoo family. Module scope: pytest runs this module's tests of
    one family together on one model and releases it before the next family is built (one model
    alive at a time); each test checks that it leaves the model as it was."""
    return request.param, request.param.build()


def mid_layer(fm: FlatModel) -> str:
    """A module layer half-way through the forward pass, with a spatial output."""
    spatial = [c.name for c in fm.layers if c.layout.is_spatial and not c.functional]
    return spatial[len(spatial) // 2]


def hand_recorded(model: nn.Module, fm: FlatModel, name: str, x: torch.Tensor) -> tuple[Any, ...]:
    """The oracle: a plain forward hook on the module, counting its calls."""
    info = fm.layer_info(name)
    module = dict(model.named_modules())[info.module_name]
    seen: dict[str, torch.Tensor] = {}
    calls = []

    def hook(m, args, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        if len(calls) == info.index:
            seen["value"] = out.detach().clone()
            out.register_hook(lambda g: seen.__setitem__("grad", g))
        calls.append(1)

    handle = module.register_forward_hook(hook)
    try:
        out = model(x)
        grad_x, = torch.autograd.grad(out[:, 0].sum(), x)
    finally:
        handle.remove()
    return out, seen["value"], seen["grad"], grad_x


def test_zoo_is_complete():
    families = {e.family for e in ZOO}
    assert len(ZOO) == 21 and len(families) == 21
    assert {"GoogLeNet", "Inception v3", "ViT", "Swin", "Swin v2", "MaxViT"} <= families


def test_flat_model_on_zoo(zoo):
    entry, model = zoo
    before = model_state(model)
    x = entry.input(2, requires_grad=True)
    fm = FlatModel(model)
    out = fm(x)
    assert torch.equal(out, model(x)), "FlatModel's output differs from the model's"
    assert len(fm.layer_names) > 5 and len(set(fm.layer_names)) == len(fm.layer_names)
    name = mid_layer(fm)
    with fm.record(name, gradients=True) as rec:
        out = fm(x)
        grad_x, = torch.autograd.grad(out[:, 0].sum(), x)
    ref_out, value, grad, ref_grad_x = hand_recorded(model, fm, name, x)
    assert torch.equal(out, ref_out)
    assert torch.equal(rec.activations[name], value), name
    assert torch.equal(rec.gradients[name], grad), name
    assert torch.equal(grad_x, ref_grad_x)
    assert_untouched(model, before)


def test_model_restored_after_errors_in_forward_and_backward(zoo):
    entry, model = zoo
    before = model_state(model)
    x = entry.input(1, requires_grad=True)
    fm = FlatModel(model, example_input=x.detach())
    name = mid_layer(fm)
    module = dict(model.named_modules())[fm.layer_info(name).module_name]

    def explode(*args):
        raise RuntimeError("injected forward failure")

    handle = module.register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="injected forward"):
            with fm.record(name, gradients=True):
                fm(x)
        with pytest.raises(RuntimeError, match="injected forward"):
            fm(x, until=fm.layer_names[-1])
    finally:
        handle.remove()
    assert_untouched(model, before)

    def arm(m, args, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        out.register_hook(lambda g: (_ for _ in ()).throw(RuntimeError("injected backward")))

    handle = module.register_forward_hook(arm)
    try:
        with pytest.raises(RuntimeError, match="injected backward"):
            with fm.record(name, gradients=True):
                torch.autograd.grad(fm(x)[:, 0].sum(), x)
    finally:
        handle.remove()
    assert_untouched(model, before)
