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
