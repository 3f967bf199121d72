"""nl.rules: backward rules as values, applied to the calls selectors pick (module and
functional), always removed; each rule against a hand-written oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netlens as nl
from netlens import rules

from helpers import DeconvRelu, GuidedRelu, ReluOracle, assert_untouched, input_grad, model_state


@pytest.mark.parametrize("rule, oracle", [(rules.Guided(), GuidedRelu),
                                          (rules.Deconv(), DeconvRelu)])
def test_rule_on_every_relu_kind_equals_the_oracle(every_relu_net, rule, oracle):
    """Every ReLU call (module, in-place, reused, F.relu, torch.relu) gets the rule."""
    x = torch.randn(3, 3, 12, 12, dtype=torch.float64)
    ref = ReluOracle(oracle).double().eval()
    ref.load_state_dict(every_relu_net.state_dict())
    before = model_state(every_relu_net)
    with rules.applied(every_relu_net, {rules.RELUS: rule}) as n:
        got = input_grad(every_relu_net, x)
    assert n == 6
    torch.testing.assert_close(got, input_grad(ref, x), rtol=0, atol=1e-12)
    assert not torch.allclose(got, input_grad(every_relu_net, x))  # the rule changed something
    assert_untouched(every_relu_net, before)


def test_selectors_by_name_glob_type_function_and_predicate(every_relu_net):
    fm = nl.FlatModel(every_relu_net)
    fm(torch.rand(1, 3, 8, 8, dtype=torch.float64))
    assert rules.select(fm, "shared:1") == ["shared:1"]
    assert rules.select(fm, "shared*") == ["shared", "shared:1"]
    assert rules.select(fm, nn.ReLU) == ["relu1", "relu_inplace", "shared", "shared:1"]
    assert rules.select(fm, F.relu) == [n for n in fm.relu_names]
    assert rules.select(fm, rules.RELUS) == fm.relu_names
    assert rules.select(fm, lambda r: r.type_name == "Linear") == ["fc"]
    assert [n for n in rules.select(fm, "*relu()*")] == ["relu()", "relu():1"]
    with pytest.raises(TypeError, match="nn.Module subclass"):
        rules.select(fm, int)


def test_first_matching_selector_wins_and_rules_are_removed_after_errors(every_relu_net):
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    plain = input_grad(every_relu_net, x)
    before = model_state(every_relu_net)
    with rules.applied(every_relu_net, [("relu1", rules.Deconv()), (rules.RELUS, rules.Guided())]):
        mixed = input_grad(every_relu_net, x)
    with rules.applied(every_relu_net, {rules.RELUS: rules.Guided()}):
        guided = input_grad(every_relu_net, x)
    assert not torch.equal(mixed, guided)
    with pytest.raises(RuntimeError, match="inside"):
        with rules.applied(every_relu_net, {rules.RELUS: rules.Guided()}):
            raise RuntimeError("inside")
    assert_untouched(every_relu_net, before)
    torch.testing.assert_close(input_grad(every_relu_net, x), plain, rtol=0, atol=0)


def test_a_rule_sees_inputs_output_and_module(every_relu_net):
    seen = []

    class Spy(rules.Rule):
        inputs = "copy"

        def apply(self, call, hooks):
            seen.append((call.name, call.module, call.inputs[0].clone(), call.output.clone()))
            return None

    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    with rules.applied(every_relu_net, {"relu_inplace": Spy(), "relu()": Spy()}):
        every_relu_net(x)
    (name, module, before, after), (fname, fmodule, finput, _) = seen
    assert name == "relu_inplace" and module is every_relu_net.relu_inplace
    assert (before < 0).any() and torch.equal(after, before.clamp(min=0))  # copied before the call
    assert fname == "relu()" and fmodule is None and (finput < 0).any()


def test_bad_rules_and_empty_selections():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    with pytest.raises(TypeError, match="Rule values"):
        with rules.applied(model, {rules.RELUS: "guided"}):
            pass
    with pytest.warns(nl.attribution.NetlensWarning, match="change nothing"):
        with rules.applied(model, {rules.RELUS: rules.Guided()}) as n:
            assert n == 0


def test_guided_backprop_is_the_guided_rule(every_relu_net):
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    with rules.applied(every_relu_net, {rules.RELUS: rules.Guided()}):
        want = input_grad(every_relu_net, x, 1)
    got = nl.attribution.guided_backprop(every_relu_net, x, 1)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


class _FunctionalNet(nn.Module):
    """ReLUs as functional calls only: OptVis's redirected ReLU used to miss these."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


def test_redirected_relu_covers_functional_relus():
    """With every pre-activation negative, the plain gradient is zero; the redirected rule
    sends the raising gradient to the ReLU's input."""
    torch.manual_seed(0)
    net = _FunctionalNet().double()
    with torch.no_grad():
        net.conv1.bias.fill_(-100.0)  # the ReLU is dead everywhere
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)

    def grad():
        g, = torch.autograd.grad(net(x)[:, 0].mean(), x)
        return g

    assert grad().abs().sum() == 0
    with rules.applied(net, {rules.RELUS: rules.Redirected()}) as n:
        redirected = grad()
    assert n == 1 and redirected.abs().sum() > 0
