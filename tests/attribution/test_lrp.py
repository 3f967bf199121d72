"""Layer-wise relevance propagation: equal to zennit 1.0.0 (same composite and canonizers) on
torchvision VGG16-bn and ResNet-18/50 with randomized batch norms and biases; equal to a
relevance-space oracle written here from each rule's definition; conservation on the families
zennit has no canonizer for; targets, batching, errors and the untouched model."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

import netlens as nl
from netlens.attribution.lrp import COMPOSITES, lrp

from helpers import assert_untouched, model_state

F64 = torch.float64


def randomized(model: nn.Module, seed: int = 5) -> nn.Module:
    """``model`` with random batch-norm statistics and affine parameters and random biases
    (torchvision starts them at 0 and 1, where a wrong merge or bias rule would not show)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def zennit_lrp(model: nn.Module, x: torch.Tensor, classes: list[int], composite: str,
               **kw: float) -> torch.Tensor:
    """zennit's relevance on a deep copy (zennit hooks and canonizes the model it is given),
    with the output relevance ``onehot * output`` (netlens starts from the score itself)."""
    zc = pytest.importorskip("zennit.composites")
    from zennit.attribution import Gradient
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    canonizer = VGGCanonizer() if isinstance(model, torchvision.models.VGG) else ResNetCanonizer()
    cls = {"epsilon_plus": zc.EpsilonPlus, "epsilon_gamma_box": zc.EpsilonGammaBox,
           "epsilon_alpha2_beta1": zc.EpsilonAlpha2Beta1, "epsilon_plus_flat": zc.EpsilonPlusFlat,
           "epsilon_alpha2_beta1_flat": zc.EpsilonAlpha2Beta1Flat}[composite]
    with Gradient(copy.deepcopy(model), cls(canonizers=[canonizer], **kw)) as attributor:
        _, rel = attributor(x.clone().requires_grad_(True),
                            lambda out: torch.eye(out.shape[1], dtype=out.dtype)[classes] * out)
    return rel.detach()


def check_equals_zennit(model: nn.Module, composite: str, size: int = 64) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=F64)
    kw = {"low": -3.0, "high": 3.0} if composite == "epsilon_gamma_box" else {}
    before = model_state(model)
    ours = lrp(model, x, [3, 7], composite=composite, **kw)
    assert_untouched(model, before)
    theirs = zennit_lrp(model, x, [3, 7], composite, **kw)
    err = float((ours - theirs).abs().max() / theirs.abs().max())
    assert err < 1e-4, err  # measured: ~1e-12 on every composite


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return randomized(torchvision.models.resnet18()).double().eval()


@pytest.mark.parametrize("composite", [
    "epsilon_plus", pytest.param("epsilon_gamma_box", marks=pytest.mark.slow),
    pytest.param("epsilon_alpha2_beta1", marks=pytest.mark.slow)])
def test_equals_zennit_on_resnet18(resnet18, composite):
    check_equals_zennit(resnet18, composite)


@pytest.mark.slow
@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_alpha2_beta1_flat"])
def test_flat_composites_equal_zennit_on_resnet18(resnet18, composite):
    check_equals_zennit(resnet18, composite)


@pytest.fixture(scope="module")
def vgg16_bn() -> nn.Module:
    """Built once for the five composites (its 138M float64 weights take seconds to draw)."""
    torch.manual_seed(0)
    return randomized(torchvision.models.vgg16_bn()).double().eval()


@pytest.mark.slow
@pytest.mark.parametrize("composite", COMPOSITES)
def test_equals_zennit_on_vgg16_bn(vgg16_bn, composite):
    check_equals_zennit(vgg16_bn, composite, size=32)


@pytest.mark.slow
def test_equals_zennit_on_resnet50():
    torch.manual_seed(0)
    model = randomized(torchvision.models.resnet50()).double().eval()
    for composite in ("epsilon_plus", "epsilon_gamma_box"):
        check_equals_zennit(model, composite, size=32)


# -- an oracle in relevance space, from each rule's definition ---------------------------------
def _stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)


def _with(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    new = copy.deepcopy(layer)
    new.weight = nn.Parameter(weight.detach().clone())
    new.bias = None if bias is None else nn.Parameter(bias.detach().clone())
    return new


def _vjp(layer: nn.Module, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.vjp(layer, a, s)[1]


def oracle_rule(rule: str, layer: nn.Module, a: torch.Tensor, r: torch.Tensor,
                eps: float = 1e-6) -> torch.Tensor:
    """The input relevance of one layer by the rule's textbook formula."""
    if rule in ("pass", "route"):  # ReLU: unchanged; max pool, flatten: routed by position
        return r if rule == "pass" else _vjp(layer, a, r)
    if rule in ("epsilon", "norm"):
        return a * _vjp(layer, a, r / _stab(layer(a), eps))
    w, b = layer.weight, layer.bias
    ap, an, wp, wn = a.clamp(min=0), a.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
    bp, bn = b.clamp(min=0), b.clamp(max=0)
    if rule == "zplus":
        lp, ln = _with(layer, wp, bp), _with(layer, wn, None)
        s = r / _stab(lp(ap) + ln(an), eps)
        return ap * _vjp(lp, ap, s) + an * _vjp(ln, an, s)
    if rule == "alphabeta":  # alpha = 2, beta = 1
        lp, ln, lpn, lnp = (_with(layer, wp, bp), _with(layer, wn, None), _with(layer, wn, bn),
                            _with(layer, wp, None))
        sp, sn = r / _stab(lp(ap) + ln(an), eps), r / _stab(lpn(ap) + lnp(an), eps)
        return (2 * (ap * _vjp(lp, ap, sp) + an * _vjp(ln, an, sp))
                - (ap * _vjp(lpn, ap, sn) + an * _vjp(lnp, an, sn)))
    if rule == "gamma":  # gamma = 0.25
        up, down = _with(layer, w + 0.25 * wp, b + 0.25 * bp), _with(layer, w + 0.25 * wn, None)
        up0, down_b = _with(layer, w + 0.25 * wp, None), _with(layer, w + 0.25 * wn, b + 0.25 * bn)
        z = layer(a)
        sp = torch.where(z > 0, r, 0) / _stab(up(ap) + down(an), eps)
        sn = torch.where(z < 0, r, 0) / _stab(down_b(ap) + up0(an), eps)
        return (ap * (_vjp(up, ap, sp) + _vjp(down_b, ap, sn))
                + an * (_vjp(down, an, sp) + _vjp(up0, an, sn)))
    if rule == "zbox":  # low = -2, high = 2
        lo, hi = torch.full_like(a, -2.0), torch.full_like(a, 2.0)
        lp, ln = _with(layer, wp, bp), _with(layer, wn, bn)
        s = r / _stab(layer(a) - lp(lo) - ln(hi), eps)
        return a * _vjp(layer, a, s) - lo * _vjp(lp, lo, s) - hi * _vjp(ln, hi, s)
    if rule in ("flat", "wsquare"):
        mod = (_with(layer, torch.ones_like(w), None) if rule == "flat"
               else _with(layer, w ** 2, b ** 2))
        ones = torch.ones_like(a)
        return _vjp(mod, ones, r / _stab(mod(ones), eps))
    raise AssertionError(rule)


NETLENS_RULES = {
    "epsilon": nl.rules.Epsilon(), "norm": nl.rules.Norm(), "zplus": nl.rules.ZPlus(),
    "alphabeta": nl.rules.AlphaBeta(2, 1), "gamma": nl.rules.Gamma(0.25),
    "zbox": nl.rules.ZBox(-2.0, 2.0), "flat": nl.rules.Flat(), "wsquare": nl.rules.WSquare(),
    "pass": nl.rules.Pass(),
}


def seq_cnn(bias: bool = True, seed: int = 0) -> nn.Sequential:
    """conv, in-place ReLU, max pool, conv, ReLU, average pool, flatten, linear (float64)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1, bias=bias), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(32, 5, bias=bias)).double().eval()


def oracle(model: nn.Sequential, x: torch.Tensor, c: list[int], names: dict[int, str],
           eps: float = 1e-6) -> tuple[torch.Tensor, float]:
    """Relevance of ``x`` with rule ``names[i]`` at layer i (routing elsewhere), and the
    relevance the biases of the epsilon layers absorb."""
    acts = [x]
    with torch.no_grad():
        for layer in model:
            acts.append(layer(acts[-1].clone()))
    out = acts[-1]
    r = torch.zeros_like(out)
    r[range(len(c)), c] = out[range(len(c)), c]
    absorbed = 0.0
    for i in reversed(range(len(model))):
        layer, a = model[i], acts[i]
        rule = names.get(i, "pass" if isinstance(layer, nn.ReLU) else "route")
        if rule == "epsilon" and getattr(layer, "bias", None) is not None:
            z = layer(a)
            shape = (1, -1) + (1,) * (z.dim() - 2)
            absorbed += float((layer.bias.view(shape) * r / _stab(z, eps)).sum())
        r = oracle_rule(rule, layer, a, r, eps).detach()
    return r, absorbed


@pytest.mark.parametrize("first, conv, last", [
    ("zbox", "gamma", "epsilon"), ("flat", "zplus", "epsilon"), ("wsquare", "alphabeta", "epsilon"),
    ("epsilon", "epsilon", "epsilon"), ("zplus", "zplus", "zplus"), ("gamma", "alphabeta", "gamma"),
])
def test_rules_equal_the_oracle(first, conv, last):
    model = seq_cnn()
    x = torch.randn(3, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(2))
    rules = {"0": NETLENS_RULES[first], "3": NETLENS_RULES[conv], "7": NETLENS_RULES[last]}
    before = model_state(model)
    ours = lrp(model, x, [0, 3, 4], rules=rules)
    assert_untouched(model, before)
    ref, _ = oracle(model, x, [0, 3, 4], {0: first, 3: conv, 5: "norm", 7: last})
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max()))


def test_standalone_rules_give_lrp_as_input_times_gradient():
    """The rules are values: applied with nl.rules.applied, x * grad is the relevance."""
    model = seq_cnn()
    x = torch.randn(2, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(3))
    xg = x.clone().requires_grad_(True)
    chosen = {nn.Conv2d: nl.rules.ZPlus(), nn.AdaptiveAvgPool2d: nl.rules.Norm(),
              nn.Linear: nl.rules.Epsilon()}
    with nl.rules.applied(model, chosen):
        out = model(xg)
        out[[0, 1], [1, 2]].sum().backward()
    torch.testing.assert_close(x * xg.grad, lrp(model, x, [1, 2]), rtol=1e-10, atol=1e-14)


def test_relevance_absorbed_by_biases_is_the_predicted_share():
    """Epsilon everywhere: the input relevance is the score less what the biases take, and
    exactly the score without biases (conservation)."""
    x = torch.randn(2, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(4))
    rules = {nn.Conv2d: nl.rules.Epsilon(1e-12), nn.Linear: nl.rules.Epsilon(1e-12),
             nn.AdaptiveAvgPool2d: nl.rules.Norm(1e-12)}
    for bias in (True, False):
        model = seq_cnn(bias=bias)
        r = lrp(model, x, [1, 2], rules=rules)
        score = model(x)[[0, 1], [1, 2]].sum()
        _, absorbed = oracle(model, x, [1, 2], {0: "epsilon", 3: "epsilon", 5: "norm",
                                                 7: "epsilon"}, eps=1e-12)
        assert (absorbed != 0) == bias
        assert abs(float(r.sum()) - float(score - absorbed)) < 1e-9 * float(score.abs())


# -- families without a zennit canonizer: conservation -----------------------------------------
def _bias_free(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "bias", None), nn.Parameter):
                m.bias.zero_()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
    return model


FAMILIES = [
    pytest.param("googlenet", {"aux_logits": False, "init_weights": False}, id="googlenet",
                 marks=pytest.mark.slow),
    pytest.param("densenet121", {}, id="densenet121"),
    pytest.param("mobilenet_v2", {}, id="mobilenet_v2", marks=pytest.mark.slow),
    pytest.param("efficientnet_b0", {}, id="efficientnet_b0", marks=pytest.mark.slow),
    pytest.param("regnet_y_400mf", {}, id="regnet_y_400mf", marks=pytest.mark.slow),
    pytest.param("convnext_tiny", {}, id="convnext_tiny", marks=pytest.mark.slow),
    pytest.param("mobilenet_v3_small", {}, id="mobilenet_v3_small"),
]
# epsilon (no stabilizer to speak of) on every linear layer, pooling and residual sum
EXACT = {nn.Conv2d: nl.rules.Epsilon(1e-30), nn.Linear: nl.rules.Epsilon(1e-30),
         nn.AdaptiveAvgPool2d: nl.rules.Norm(1e-30), nn.AvgPool2d: nl.rules.Norm(1e-30),
         nn.ReLU: nl.rules.Norm(1e-30)}


@pytest.mark.parametrize("builder, kwargs", FAMILIES)
def test_conservation_on_families_zennit_cannot_canonize(builder, kwargs):
    """Bias-free layers (batch norms then scale only and merge into their convolutions;
    DenseNet's pre-activation ones pass relevance), squeeze-excitation gates, SiLU, Hardswish,
    ReLU6, LayerNorm (Pass), concatenations and residual sums: the relevance sums to the
    score. With the default composite and biases the result is finite and not zero."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, builder)(**kwargs).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=F64, generator=torch.Generator().manual_seed(1))
    before = model_state(model)
    r = lrp(model, x, [1, 2])
    assert torch.isfinite(r).all() and r.abs().sum() > 0
    assert_untouched(model, before)
    _bias_free(model)
    r = lrp(model, x, [1, 2], rules=EXACT).sum((1, 2, 3))
    score = model(x)[[0, 1], [1, 2]]
    assert ((r - score).abs() / score.abs()).max() < 1e-3  # measured: ~1e-13


# -- targets, batching, the model's state ------------------------------------------------------
def test_k_targets_batching_no_grad_and_dtype(resnet18):
    x = torch.randn(3, 3, 32, 32, dtype=F64, generator=torch.Generator().manual_seed(6))
    top = resnet18(x).topk(2).indices
    kw = {"composite": "epsilon_alpha2_beta1"}
    both = lrp(resnet18, x, nl.targets.TopK(2), **kw)
    assert both.shape == (3, 2, 3, 32, 32) and both.dtype == F64
    for k in range(2):
        single = lrp(resnet18, x, top[:, k], **kw)
        torch.testing.assert_close(both[:, k], single, rtol=1e-10, atol=1e-14)
    chunked = lrp(resnet18, x, top[:, 0], batch_size=2, **kw)
    torch.testing.assert_close(chunked, both[:, 0], rtol=1e-10, atol=1e-14)
    with torch.no_grad():
        torch.testing.assert_close(lrp(resnet18, x, top[:, 0], **kw), both[:, 0])
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        lrp(resnet18, x, 0)


def test_segmentation_and_channel_targets_conserve():
    torch.manual_seed(0)
    fcn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                        nn.ReLU(), nn.Conv2d(8, 4, 1, bias=False)).double().eval()
    with torch.no_grad():
        fcn[1].running_var.uniform_(0.5, 1.5)
        fcn[1].weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 8, 8, dtype=F64, generator=torch.Generator().manual_seed(7))
    rules = {nn.Conv2d: nl.rules.Epsilon(1e-30)}
    target = nl.targets.Segmentation(1, mask=torch.rand(8, 8) > 0.5)
    r = lrp(fcn, x, target, rules=rules)
    score = target.bind(fcn(x))(fcn(x))
    torch.testing.assert_close(r.sum((1, 2, 3)), score, rtol=1e-10, atol=1e-14)
    channel = nl.targets.Channel("2", 5)
    r = lrp(fcn, x, channel, rules=rules)
    torch.testing.assert_close(r.sum((1, 2, 3)), fcn[:3](x)[:, 5].mean((1, 2)),
                               rtol=1e-10, atol=1e-14)


class Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        if self.armed:
            raise RuntimeError("layer failure")
        return self.fc(x.mean((2, 3)))


def test_model_untouched_in_both_modes_and_after_an_error():
    torch.manual_seed(0)
    model = Exploding()
    x = torch.rand(2, 3, 8, 8)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        before = model_state(model)
        with pytest.warns(nl.attribution.NetlensWarning) if mode == "train" else _nothing():
            assert torch.isfinite(lrp(model, x, 1)).all()
        model.armed = True
        with pytest.raises(RuntimeError, match="layer failure"):
            lrp(model, x, 1)
        model.armed = False
        assert_untouched(model, before)


class _nothing:  # noqa: N801 (a context manager used like pytest.warns)
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- errors ------------------------------------------------------------------------------------
class AttentionNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, stride=4)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv(x).flatten(2).transpose(1, 2)
        return self.fc(self.attn(t, t, t)[0].mean(1))


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((1, 3, 1, 1), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


def test_errors_name_the_problem_and_the_fix():
    x = torch.rand(1, 3, 8, 8)
    model = seq_cnn().float()
    with pytest.raises(ValueError, match="unknown composite 'zplus'.*'epsilon_plus'"):
        lrp(model, x, composite="zplus")
    with pytest.raises(ValueError, match="low= and high="):
        lrp(model, x, composite="epsilon_gamma_box")
    with pytest.raises(ValueError, match="broadcastable"):
        lrp(model, x, composite="epsilon_gamma_box", low=torch.zeros(2, 3, 8, 8), high=1.0)
    with pytest.raises(TypeError, match="Rule values"):
        lrp(model, x, rules={"0": "zplus"})
    with pytest.raises(ValueError, match="picks no layer call"):
        lrp(model, x, rules={"conv9": nl.rules.ZPlus()})
    with pytest.raises(TypeError, match="needs a Conv or Linear layer.*'5'"):
        lrp(model, x, rules={"5": nl.rules.ZPlus()})
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        nl.rules.AlphaBeta(2, 2)
    torch.manual_seed(0)
    attention = AttentionNet().eval()
    with pytest.raises(ValueError, match=r"'attn' \(MultiheadAttention\).*rules=\{'attn'"):
        lrp(attention, torch.rand(1, 3, 16, 16))
    custom = nn.Sequential(Custom(), nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2)).eval()
    with pytest.raises(ValueError, match=r"layer '0' \(Custom\)"):
        lrp(custom, x)
    r = lrp(custom, x, 1, rules={"0": nl.rules.Epsilon()})  # the fix the message names
    assert torch.isfinite(r).all()
