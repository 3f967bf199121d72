"""Excitation backprop (Zhang et al., ECCV 2016): equal to the marginal winning probability
computed by hand with explicit matrices; a probability distribution at every layer
(conservation); the contrastive map equals the difference with the dual unit's map, computed on
a copy of the model with negated classifier weights; batching and chunk invariance, every target
kind, the model left as it was; torchvision architectures (CONTRIBUTING.md tests A, B9, C10)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import netlens as nl
from netlens.attribution.excitation import _Excitation, excitation_backprop

from helpers import assert_untouched, model_state

F64 = torch.float64


def conv_matrix(w: torch.Tensor, h: int, wd: int, pad: int) -> torch.Tensor:
    """The stride-1 convolution with weights ``w`` (O, C, k, k) and zero padding as a matrix
    ``(O*h*wd, C*h*wd)``, written out entry by entry (no F.conv2d)."""
    o_, c_, k, _ = w.shape
    m = torch.zeros(o_, h, wd, c_, h, wd, dtype=w.dtype)
    for i in range(h):
        for j in range(wd):
            for di in range(k):
                for dj in range(k):
                    ii, jj = i + di - pad, j + dj - pad
                    if 0 <= ii < h and 0 <= jj < wd:
                        m[:, i, j, :, ii, jj] = w[:, :, di, dj]
    return m.reshape(o_ * h * wd, c_ * h * wd)


def avgpool_matrix(c: int, h: int, wd: int, k: int) -> torch.Tensor:
    m = torch.zeros(c, h // k, wd // k, c, h, wd, dtype=F64)
    for ch in range(c):
        for i in range(h):
            for j in range(wd):
                m[ch, i // k, j // k, ch, i, j] = 1 / k ** 2
    return m.reshape(c * (h // k) * (wd // k), c * h * wd)


def mwp(m: torch.Tensor, a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The paper's rule through y = M a: P(a_j) = a_j Σ_i m⁺_ij P(y_i) / Σ_j' m⁺_ij' a_j'."""
    mp, a = m.clamp(min=0), a.clamp(min=0)
    z = mp @ a
    return a * (mp.T @ torch.where(z != 0, p / torch.where(z != 0, z, 1.0), 0.0))


class Toy(nn.Module):
    """conv -> relu -> avg pool -> linear -> relu -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(12, 6)
        self.fc2 = nn.Linear(6, 4)

    def forward(self, x):
        h = self.pool(F.relu(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


def toy_by_hand(net: Toy, x: torch.Tensor, c: int, contrastive: bool = False) -> torch.Tensor:
    cm = conv_matrix(net.conv.weight.detach(), 4, 4, 1)
    pm = avgpool_matrix(3, 4, 4, 2)
    w1, w2 = net.fc1.weight.detach(), net.fc2.weight.detach()
    maps = []
    for img in x:
        a0 = img.reshape(-1)
        a1 = (cm @ a0 + net.conv.bias.detach().repeat_interleave(16)).clamp(min=0)
        a2 = pm @ a1
        a3 = (w1 @ a2 + net.fc1.bias.detach()).clamp(min=0)
        top = torch.zeros(4, dtype=F64)
        top[c] = 1
        p3 = mwp(w2, a3, top)
        if contrastive:
            p3 = p3 - mwp(-w2, a3, top)
        p0 = mwp(cm, a0, mwp(pm, a1, mwp(w1, a2, p3)))
        maps.append(p0.reshape(2, 4, 4).sum(0, keepdim=True))
    return torch.stack(maps)


@pytest.fixture
def toy() -> Toy:
    torch.manual_seed(0)
    net = Toy().double().eval()
    with torch.no_grad():  # a mixed-sign first layer: some units inactive, some excited
        net.conv.bias.uniform_(-0.3, 0.3)
        net.fc1.bias.uniform_(-0.2, 0.2)
    return net


@pytest.mark.parametrize("contrastive", [False, True])
def test_equals_the_hand_computation_on_a_toy_network(toy, contrastive):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 2, 4, 4, generator=g, dtype=F64) - 0.2  # some negative pixels too
    got = excitation_backprop(toy, x, 1, contrastive=contrastive)
    torch.testing.assert_close(got, toy_by_hand(toy, x, 1, contrastive), rtol=0, atol=1e-10)
    assert got.abs().sum() > 0
    total = got.sum((1, 2, 3))
    torch.testing.assert_close(total, torch.full_like(total, 0.0 if contrastive else 1.0),
                               rtol=0, atol=1e-10)
    # class 2's weights are all negative: no unit excites it, no mass passes (the dual's does)
    assert bool((toy.fc2.weight[2] < 0).all())
    none = excitation_backprop(toy, x, 2, contrastive=contrastive)
    torch.testing.assert_close(none, toy_by_hand(toy, x, 2, contrastive), rtol=0, atol=1e-10)
    torch.testing.assert_close(none.sum((1, 2, 3)), torch.full_like(total, -1.0 if contrastive
                                                                    else 0.0), rtol=0, atol=1e-10)


class Branchy(nn.Module):
    """Functional and reused ReLUs, an in-place residual addition, a concatenation and a max
    pool: every call the paper's rules must see outside of modules."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv3 = nn.Conv2d(3, 2, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        a = F.relu(self.conv1(x))
        r = self.conv2(a)
        r += a                              # in-place residual addition
        b = self.relu(r)                    # the shared module, first call
        c = self.relu(self.conv3(b))        # second call
        h = F.max_pool2d(torch.cat([b, c], 1), 2)
        return self.fc(h.mean((2, 3)))


def test_residual_concat_and_every_relu_kind_by_hand():
    torch.manual_seed(0)
    net = Branchy().double().eval()
    with torch.no_grad():
        net.fc.weight[1, :4].abs_()  # class 1 excited by some units (a mass to pass down)
    x = torch.rand(2, 2, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
    got = excitation_backprop(net, x, 1)
    c1, c2, c3 = (conv_matrix(m.weight.detach(), 4, 4, 1) for m in (net.conv1, net.conv2,
                                                                     net.conv3))
    bias = {m: m.bias.detach().repeat_interleave(16) for m in (net.conv1, net.conv2, net.conv3)}
    maps = []
    for img in x:
        x0 = img.reshape(-1)
        a = (c1 @ x0 + bias[net.conv1]).clamp(min=0)
        r = c2 @ a + bias[net.conv2]
        b = (r + a).clamp(min=0)
        c = (c3 @ b + bias[net.conv3]).clamp(min=0)
        cat = torch.cat([b, c]).reshape(5, 4, 4)
        pooled, idx = F.max_pool2d(cat[None], 2, return_indices=True)
        h = pooled.reshape(5, 4)
        top = torch.zeros(3, dtype=F64)
        top[1] = 1
        mean = torch.kron(torch.eye(5, dtype=F64), torch.full((1, 4), 0.25, dtype=F64))
        p_h = mwp(mean, h.reshape(-1), mwp(net.fc.weight.detach(), h.mean(1), top))
        p_cat = torch.zeros(5, 16, dtype=F64)  # the max pool: all to each window's winner
        p_cat.scatter_(1, idx.reshape(5, 4), p_h.reshape(5, 4))
        p_b, p_c = p_cat[:3].reshape(-1), p_cat[3:].reshape(-1)
        p_b = (p_b + mwp(c3, b, p_c)) * (r + a > 0)  # the ReLU passes the active units' mass
        # r + a: each addend's share of its positive part
        rp, ap = r.clamp(min=0), a
        s = torch.where(rp + ap > 0, p_b / (rp + ap).clamp(min=1e-300), 0.0)
        p_r, p_a = rp * s, ap * s
        p_a = p_a + mwp(c2, a, p_r)
        maps.append(mwp(c1, x0, p_a).reshape(2, 4, 4).sum(0, keepdim=True))
    torch.testing.assert_close(got, torch.stack(maps), rtol=0, atol=1e-10)
    torch.testing.assert_close(got.sum((1, 2, 3)), torch.ones(2, dtype=F64), rtol=0,
                               atol=1e-10)


@pytest.mark.slow
def test_the_mass_is_conserved_at_every_layer_of_resnet18():
    """The paper's MWP is a distribution at each layer: the mass at the output of every stage
    (read with a recording of the modified backward pass) and at the input sums to 1."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().double().eval()
    x = torch.rand(2, 3, 64, 64, dtype=F64)
    fm = nl.FlatModel(model)
    fm.ensure_traced(x)
    stages = ["conv1", "maxpool", "layer1", "layer2.0", "layer2", "layer3", "layer4", "avgpool"]
    xi = x.clone().requires_grad_(True)
    with fm.record(stages, gradients=True) as rec:
        with _Excitation():
            out = fm(xi)
        out[:, 7].sum().backward()
    for name in stages:
        torch.testing.assert_close(rec.gradients[name].flatten(1).sum(1),
                                   torch.ones(2, dtype=F64), rtol=0, atol=1e-9, msg=name)
    ours = excitation_backprop(model, x, 7)
    torch.testing.assert_close(ours, xi.grad.sum(1, keepdim=True), rtol=0, atol=1e-12)
    assert (ours >= 0).all()


@pytest.mark.slow
def test_contrastive_is_the_difference_with_the_dual_unit():
    """The dual unit's MWP, computed independently on a copy whose classifier weights are
    negated, subtracted from the target's: what contrastive=True returns."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=6).double().eval()
    dual = copy.deepcopy(model)
    with torch.no_grad():
        dual.fc.weight.neg_()
    x = torch.rand(2, 3, 32, 32, dtype=F64)
    got = excitation_backprop(model, x, [3, 5], contrastive=True)
    want = excitation_backprop(model, x, [3, 5]) - excitation_backprop(dual, x, [3, 5])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert (got < 0).any() and (got > 0).any()
    torch.testing.assert_close(got.sum((1, 2, 3)), torch.zeros(2, dtype=F64), rtol=0, atol=1e-9)


def test_batch_chunk_and_target_invariance(toy):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(5, 2, 4, 4, generator=g, dtype=F64)
    full = excitation_backprop(toy, x, [0, 1, 2, 3, 0])
    for bs in (1, 2, 5):
        torch.testing.assert_close(excitation_backprop(toy, x, [0, 1, 2, 3, 0], batch_size=bs),
                                   full, rtol=0, atol=1e-14)
    torch.testing.assert_close(excitation_backprop(toy, x[2:3], 2), full[2:3], rtol=0,
                               atol=1e-14)


def test_every_target_kind(toy):
    x = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    with torch.no_grad():
        logits = toy(x)
    top2 = logits.topk(2, dim=1).indices
    k = excitation_backprop(toy, x, nl.targets.TopK(2), batch_size=2)
    assert k.shape == (3, 2, 1, 4, 4)
    for j in range(2):
        torch.testing.assert_close(k[:, j], excitation_backprop(toy, x, top2[:, j]), rtol=0,
                                   atol=1e-14)
    torch.testing.assert_close(excitation_backprop(toy, x), excitation_backprop(toy, x,
                                                                                top2[:, 0]))
    torch.testing.assert_close(excitation_backprop(toy, x, torch.tensor([1, 1, 1])),
                               excitation_backprop(toy, x, 1))
    # a layer channel: a mass of 1 starts on each of the channel's 16 positions
    ch = excitation_backprop(toy, x, nl.targets.Channel("conv", 1, "sum"))
    assert ch.shape == (3, 1, 4, 4) and (ch >= 0).all()
    with pytest.raises(ValueError, match="out of range"):
        excitation_backprop(toy, x, 10**6)


class Failing(nn.Module):
    def __init__(self) -> None:
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


def test_model_untouched_no_grad_and_errors():
    torch.manual_seed(0)
    model = Failing().train()
    x = torch.rand(2, 3, 8, 8)
    before = model_state(model)
    with pytest.warns(nl.attribution.NetlensWarning, match="training mode"):
        out = excitation_backprop(model, x, 1)
    with torch.no_grad():
        torch.testing.assert_close(excitation_backprop(model.eval(), x, 1), out)
    model.train()
    model.armed = True
    with pytest.raises(RuntimeError, match="layer failure"), \
            pytest.warns(nl.attribution.NetlensWarning, match="training mode"):
        excitation_backprop(model, x, 1)
    model.armed = False
    assert_untouched(model, before)
    assert torch.isfinite(out).all() and out.dtype == x.dtype
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        excitation_backprop(model, x, 1)
    with pytest.raises(TypeError, match="contrastive"):
        excitation_backprop(model.eval(), x, 1, contrastive="yes")  # type: ignore[arg-type]


class Product(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc((F.relu(self.a(x)) * F.relu(self.b(x))).mean((2, 3)))


class Soft(nn.Module):
    """A softmax inside the model's forward (a function without a rule, no module of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten(), nn.Linear(128, 2))

    def forward(self, x):
        return torch.softmax(self.inner(x), 1)


def test_layers_without_a_rule_are_named():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 8, 8)
    norm = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LayerNorm(144), nn.Linear(144, 2))
    with pytest.raises(ValueError, match=r"layer '2' \(LayerNorm\)"):
        excitation_backprop(norm.eval(), x, 0)
    up = nn.Sequential(nn.ConvTranspose2d(3, 2, 2), nn.Flatten(), nn.Linear(162, 2))
    with pytest.raises(ValueError, match=r"layer '0' \(ConvTranspose2d\)"):
        excitation_backprop(up.eval(), x, 0)
    with pytest.raises(ValueError, match="element-wise product of two activations"):
        excitation_backprop(Product().eval(), x, 0)
    soft = Soft().eval()
    before = model_state(soft)
    with pytest.raises(ValueError, match="no rule for torch function 'softmax'"):
        excitation_backprop(soft, x, 0)
    assert_untouched(soft, before)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "vgg16", "googlenet", "densenet121"])
def test_torchvision_architectures(name):
    torch.manual_seed(0)
    kwargs = {"init_weights": False, "aux_logits": False} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(**kwargs).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    before = model_state(model)
    p = excitation_backprop(model, x, [3, 4])
    assert p.shape == (2, 1, 64, 64) and torch.isfinite(p).all() and (p >= 0).all()
    torch.testing.assert_close(p.sum((1, 2, 3)), torch.ones(2), rtol=0, atol=1e-4)
    c = excitation_backprop(model, x, [3, 4], contrastive=True)
    assert torch.isfinite(c).all() and c.abs().sum() > 0
    assert_untouched(model, before)


class Gated(nn.Module):
    """A squeeze-excitation gate: ``x * sigmoid(fc(mean(x)))``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.se = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = F.relu(self.conv(x))
        gate = torch.sigmoid(self.se(F.adaptive_avg_pool2d(a, 1)))
        return self.fc(F.relu(gate * a).mean((2, 3)))


def test_a_gate_is_a_weight_and_its_branch_gets_no_mass():
    torch.manual_seed(0)
    net = Gated().double().eval()
    with torch.no_grad():
        net.fc.weight.abs_()
    x = torch.rand(2, 3, 6, 6, dtype=F64)
    got = excitation_backprop(net, x, 0)
    # the mass at gate * a passes to a unchanged: a network without the gate's branch, whose
    # fc input is scaled by the gate, has the same map (the rules ignore positive scales)
    a = F.relu(net.conv(x))
    gate = torch.sigmoid(net.se(a.mean((2, 3), keepdim=True))).detach()
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).double().eval()
    plain[0].load_state_dict(net.conv.state_dict())
    maps = []
    for i in range(2):
        with torch.no_grad():
            plain[4].weight.copy_(net.fc.weight * gate[i].view(1, 4))
            plain[4].bias.copy_(net.fc.bias)
        maps.append(excitation_backprop(plain, x[i:i + 1], 0))
    torch.testing.assert_close(got, torch.cat(maps), rtol=0, atol=1e-12)
    torch.testing.assert_close(got.sum((1, 2, 3)), torch.ones(2, dtype=F64), rtol=0, atol=1e-10)
