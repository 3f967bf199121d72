"""DeconvNet: equal to Captum's Deconvolution where Captum sees every ReLU (modules), and to the
hand-written oracle on every ReLU kind (functional and reused included), where Captum does not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

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
