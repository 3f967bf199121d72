from __future__ import annotations

import pytest
import torch

import netlens as nl
from netlens.attribution import METHODS

from helpers import EveryReluNet


def test_netlens_methods_equal_the_pure_functions():
    torch.manual_seed(0)
    model = EveryReluNet().double().eval()
    lens = nl.NetLens(model)
    assert nl.NetLens(lens.fm).fm is lens.fm and lens.model is model
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    passes = {"n": 2, "steps": 4, "window": 4, "stride": 2}  # few passes fit 8-pixel images
    for name, fn in METHODS.items():
        opts = fn.options_for(passes)

        def seeded() -> dict:
            if not fn.stochastic:
                return opts
            return dict(opts, generator=torch.Generator().manual_seed(1))

        a, b = getattr(lens, name)(x, [0, 1], **seeded()), fn(model, x, [0, 1], **seeded())
        assert torch.equal(a, b), name
        assert torch.equal(lens.attribute(name, x, [0, 1], **seeded()), a), name
    grad = lens.layer_channel_gradient(x, "conv3", 2)
    assert grad.shape == x.shape


def test_unknown_method_suggests_names():
    lens = nl.NetLens(EveryReluNet())
    with pytest.raises(ValueError, match="did you mean 'gradcam'"):
        lens.attribute("gradcan", torch.rand(1, 3, 8, 8))


def test_netlens_methods_show_the_real_options():
    """help(), Jupyter and IDEs see each method's own signature and docstring, from the spec."""
    import inspect

    for name, spec in METHODS.items():
        method = getattr(nl.NetLens, name)
        params = list(inspect.signature(method).parameters)
        assert params[0] == "self" and params[1:] == ["x", "target", *spec.parameters], name
        assert method.__doc__ == spec.fn.__doc__, name
    assert "sigma" in inspect.signature(nl.NetLens.smooth_grad).parameters
    assert "window" in inspect.signature(nl.NetLens.occlusion).parameters


def test_type_stub_is_current():
    """interpret.pyi (for static type checkers) is regenerated from the registry."""
    from netlens import interpret

    assert interpret.STUB_PATH.read_text(encoding="utf-8") == interpret.stub(), (
        "netlens/interpret.pyi is stale: run python -c \"import netlens.interpret as i; "
        "i.write_stub()\"")
    for name in METHODS:
        assert f"    def {name}(\n" in interpret.stub()


# -- issue 13: a lens used at several input sizes ----------------------------------------------
def _small_swin() -> torch.nn.Module:
    """A seeded two-stage torchvision Swin (channels-last token maps) that takes any size that
    is a multiple of 8 px."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2],
        num_classes=5).double().eval()


@pytest.mark.parametrize("arch, sizes", [
    ("resnet18", (64, 7)), ("resnet18", (7, 64)), ("resnet18", (64, 32)),
    ("swin", (64, 8)), ("swin", (8, 64)),
])
def test_a_lens_follows_the_input_size(arch, sizes):
    """A lens first used at one size gives, at another, exactly the pure function's map: its
    layers (shapes, hence the default CAM layer: the last with more than one position) are
    found again at the new size, and a layer=-given CAM stays the same too."""
    import torchvision

    if arch == "resnet18":
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=5).double().eval()
    else:
        model = _small_swin()
    g = torch.Generator().manual_seed(0)
    lens, example = nl.NetLens(model), nl.NetLens(
        model, torch.rand(1, 3, sizes[0], sizes[0], dtype=torch.float64, generator=g))
    for size in sizes:
        x = torch.rand(2, 3, size, size, dtype=torch.float64, generator=g)
        want = nl.attribution.gradcam(model, x, [1, 2])
        same = torch.equal(lens.gradcam(x, [1, 2]), want)
        assert same, (arch, size)
        same = torch.equal(example.gradcam(x, [1, 2]), want)
        assert same, (arch, size, "example_input")
        assert lens.fm.traced_input_shape[1:] == x.shape[1:]
