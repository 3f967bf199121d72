"""DeconvNet: equal to Captum's Deconvolution where Captum sees every ReLU (modules), and to the
hand-written oracle on every ReLU kind (functional and reused included), where Captum does not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

import netlens as nl

from helpers import DeconvRelu, ReluOracle, assert_untouched, input_grad, model_state


def test_deconvnet_equals_the_oracle_on_every_relu_kind(every_relu_net):
    x = torch.randn(3, 3, 12, 12, dtype=torch.float64)
    ref = ReluOracle(DeconvRelu).double().eval()
    ref.load_state_dict(every_relu_net.state_dict())
    before = model_state(every_relu_net)
    got = nl.attribution.deconvnet(every_relu_net, x, 2, batch_size=2)
    torch.testing.assert_close(got, input_grad(ref, x), rtol=0, atol=1e-12)
    assert not torch.allclose(got, nl.attribution.guided_backprop(every_relu_net, x, 2))
    assert_untouched(every_relu_net, before)


def test_deconvnet_equals_captum_on_relu_modules():
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 36, 5),
                          ).double().eval()
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64)
    theirs = captum.Deconvolution(model).attribute(x.clone().requires_grad_(True),
                                                  target=[0, 1, 2, 3])
    ours = nl.attribution.deconvnet(model, x, [0, 1, 2, 3])
    torch.testing.assert_close(ours, theirs.detach(), rtol=0, atol=1e-12)


_RELUS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu,
                    torch.Tensor.relu_})


class DeconvReluMode(TorchFunctionMode):
    """The oracle's forward: every ReLU call (``nn.ReLU`` calls ``F.relu``; GoogLeNet, Inception
    v3 and DenseNet call ``F.relu`` themselves) computed by :class:`DeconvRelu`, a custom
    autograd function. An in-place call returns a new tensor instead, which is right for these
    models: they only use the returned value."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            return DeconvRelu.apply(args[0])
        return func(*args, **(kwargs or {}))


ORACLE_ARCHS = {
    "googlenet": (lambda: torchvision.models.googlenet(aux_logits=False, init_weights=False), 64),
    "inception_v3": (lambda: torchvision.models.inception_v3(aux_logits=False,
                                                             init_weights=False), 80),
    "densenet121": (lambda: torchvision.models.densenet121(), 64),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ORACLE_ARCHS))
def test_deconvnet_equals_an_independent_oracle_on_functional_relus(name):
    """Where Captum sees no ReLU module (functional ReLUs), DeconvNet equals a forward pass whose
    every ReLU call is the oracle's custom autograd function."""
    build, size = ORACLE_ARCHS[name]
    torch.manual_seed(0)
    model = build().double().eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64)
    assert any(c.functional for c in nl.FlatModel(model).layers if c.activation)
    before = model_state(model)
    got = nl.attribution.deconvnet(model, x, 7)
    xg = x.clone().requires_grad_(True)
    with DeconvReluMode():
        out = model(xg)
    want, = torch.autograd.grad(out[0, 7], xg, retain_graph=True)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    plain, = torch.autograd.grad(model(xg)[0, 7], xg)  # the oracle is not the plain gradient
    assert (want - plain).abs().max() > 1e-3 * want.abs().max()
    assert_untouched(model, before)
