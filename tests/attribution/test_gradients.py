"""Gradient attributions against autograd and hand-written oracles
(CONTRIBUTING.md tests A1, A2, A4, A5),
their axioms and invariances (B7-B9), Captum agreement, and the engineering contracts
(C10-C12): dtype, shape, errors, determinism, and a model left exactly as it was."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from netlens import UnknownLayerError
from netlens.attribution import METHODS, gradients
from netlens.attribution.gradients import (
    BLUR_SIGMA,
    NetlensWarning,
    guided_backprop,
    input_x_gradient,
    integrated_gradients,
    layer_channel_gradient,
    saliency,
    smooth_grad,
)

from helpers import EveryReluNet, GuidedRelu, small_cnn

F64 = torch.float64


# -- oracles and models ----------------------------------------------------------------------

def guided_every_relu(net: EveryReluNet, x: torch.Tensor) -> torch.Tensor:
    """A hand-written copy of ``EveryReluNet.forward`` with every ReLU call guided."""
    r = GuidedRelu.apply
    h = r(net.conv1(x))
    h = r(net.conv2(h))
    h = r(net.conv3(h))
    h = r(net.conv4(h) + h)
    h = r(net.conv5(h))
    return net.fc(r(h.mean(dim=(2, 3))))


_RELUS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu,
                    torch.Tensor.relu_})


class GuidedReluMode(TorchFunctionMode):
    """Replaces every ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` call (``nn.ReLU`` calls
    ``F.relu``) by :class:`GuidedRelu`; an in-place call returns a new tensor instead, which is
    right for models that only use the returned value."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            return GuidedRelu.apply(args[0])
        return func(*args, **(kwargs or {}))


def grad_of(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
            target: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    out = fn(x)
    return torch.autograd.grad(out[torch.arange(len(x)), target].sum(), x)[0]


# helpers.small_cnn with two 6-channel stride-1 convolutions, an activation given per test
# (Softplus: a smooth network for IG's completeness), a mean pool and 3 classes.
CNN = {"classes": 3, "widths": (6, 6), "inplace": False, "stride": (1, 1)}


def images(b: int = 4, size: int = 8, dtype: torch.dtype = F64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=g, dtype=dtype)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


T4 = torch.tensor([0, 3, 1, 4])


# -- A1 saliency = autograd ------------------------------------------------------------------

def test_saliency_equals_autograd_on_every_relu_kind(every_relu_net):
    x = images(4)
    expected = grad_of(every_relu_net, x, T4)
    got = saliency(every_relu_net, x, T4)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert torch.equal(saliency(every_relu_net, x, T4, abs=True), got.abs())
    torch.testing.assert_close(input_x_gradient(every_relu_net, x, T4), x * expected,
                               rtol=0, atol=1e-12)


# -- A2 integrated gradients -----------------------------------------------------------------

def f_gain(model: nn.Module, x: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        i = torch.arange(len(x))
        return model(x)[i, t] - model(b)[i, t]


def test_ig_completeness_on_a_smooth_network():
    model, x, t = small_cnn(act=nn.Softplus, **CNN), images(4), torch.tensor([0, 1, 2, 0])
    attr = integrated_gradients(model, x, t, steps=16)
    gap = attr.sum(dim=(1, 2, 3)) - f_gain(model, x, torch.zeros_like(x), t)
    assert gap.abs().max() <= 1e-8, gap


def test_ig_completeness_converges_on_a_relu_network():
    model, x, t = small_cnn(act=nn.ReLU, **CNN), images(4), torch.tensor([0, 1, 2, 0])
    _, d16 = integrated_gradients(model, x, t, steps=16, return_delta=True)
    _, d256 = integrated_gradients(model, x, t, steps=256, return_delta=True)
    gain = f_gain(model, x, torch.zeros_like(x), t)
    assert d256.abs().max() * 4 <= d16.abs().max(), (d16, d256)
    assert (d256.abs() <= 1e-4 + 1e-2 * gain.abs()).all(), (d256, gain)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right",
                                    "riemann_middle", "riemann_trapezoid"])
def test_ig_of_a_bias_free_linear_model_is_x_minus_b_times_w(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3, bias=False)).double()
    x, b = images(2, 4), images(2, 4, seed=7)
    w = model[1].weight[[2, 1]].detach().view(2, 3, 4, 4)
    # Captum's trapezoid weights sum to 1 - 1/steps (its convention, kept for agreement).
    scale = 1 - 1 / 8 if method == "riemann_trapezoid" else 1.0
    attr = integrated_gradients(model, x, [2, 1], steps=8, baseline=b, method=method)
    torch.testing.assert_close(attr, scale * (x - b) * w, rtol=1e-13, atol=1e-15)


def oracle_rule(method: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Captum's integration points and weights, written from its documentation."""
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (nodes + 1) / 2, weights / 2
    k = np.arange(n)
    alphas = {"riemann_left": k / n, "riemann_right": (k + 1) / n,
              "riemann_middle": (k + 0.5) / n, "riemann_trapezoid": k / (n - 1)}[method]
    weights = np.full(n, 1 / n)
    if method == "riemann_trapezoid":
        weights[[0, -1]] /= 2
    return alphas, weights


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right",
                                    "riemann_middle", "riemann_trapezoid"])
def test_ig_matches_a_riemann_oracle_with_the_same_alphas(every_relu_net, method):
    x, b = images(4), 0.3 * images(4, seed=5)
    total = torch.zeros_like(x)
    for alpha, w in zip(*oracle_rule(method, 7)):
        total += w * grad_of(every_relu_net, b + alpha * (x - b), T4)
    attr, delta = integrated_gradients(every_relu_net, x, T4, steps=7, baseline=b, method=method,
                                       return_delta=True)
    torch.testing.assert_close(attr, (x - b) * total, rtol=0, atol=1e-10)
    expected_delta = attr.sum(dim=(1, 2, 3)) - f_gain(every_relu_net, x, b, T4)
    torch.testing.assert_close(delta, expected_delta, rtol=0, atol=1e-12)


def test_ig_baselines():
    model, x, t = small_cnn(act=nn.Softplus, **CNN), images(2, 12), torch.tensor([0, 2])
    ig = integrated_gradients
    torch.testing.assert_close(ig(model, x, t, steps=4, baseline="zeros"),
                               ig(model, x, t, steps=4))
    torch.testing.assert_close(ig(model, x, t, steps=4, baseline=0.5),
                               ig(model, x, t, steps=4, baseline=torch.full_like(x, 0.5)))
    per_channel = torch.tensor([0.1, -0.2, 0.3], dtype=F64).view(3, 1, 1)
    torch.testing.assert_close(ig(model, x, t, steps=4, baseline=per_channel),
                               ig(model, x, t, steps=4, baseline=per_channel.expand_as(x)))
    # "blur": a Gaussian of std BLUR_SIGMA * max(H, W) with replicated edges; completeness holds.
    attr, delta = ig(model, x, t, steps=16, baseline="blur", return_delta=True)
    assert delta.abs().max() <= 1e-8
    radius = int(np.ceil(3 * BLUR_SIGMA * 12))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=F64) / (BLUR_SIGMA * 12)) ** 2)
    k = k / k.sum()
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    blurred = torch.einsum("bcijxy,x,y->bcij", padded.unfold(2, 2 * radius + 1, 1).unfold(
        3, 2 * radius + 1, 1), k, k)
    torch.testing.assert_close(attr, ig(model, x, t, steps=16, baseline=blurred))
    # "uniform": per-image noise in [min, max] from the generator, reproducible.
    a1 = ig(model, x, t, steps=4, baseline="uniform", generator=seeded(3))
    lo, hi = x.amin(dim=(1, 2, 3)).view(-1, 1, 1, 1), x.amax(dim=(1, 2, 3)).view(-1, 1, 1, 1)
    u = lo + (hi - lo) * torch.rand(x.shape, generator=seeded(3), dtype=F64)
    torch.testing.assert_close(a1, ig(model, x, t, steps=4, baseline=u))
    with pytest.raises(ValueError, match="broadcast"):
        ig(model, x, t, baseline=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="baseline"):
        ig(model, x, t, baseline="black")
    with pytest.raises(ValueError, match="method"):
        ig(model, x, t, method="simpson")
    with pytest.raises(ValueError, match="steps"):
        ig(model, x, t, steps=1, method="riemann_left")


# -- A4 guided backprop ----------------------------------------------------------------------

def test_guided_backprop_equals_the_oracle_on_every_relu_kind(every_relu_net):
    x = images(4)
    expected = grad_of(lambda z: guided_every_relu(every_relu_net, z), x, T4)
    got = guided_backprop(every_relu_net, x, T4)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert not torch.allclose(got, saliency(every_relu_net, x, T4), atol=1e-6)


@pytest.mark.parametrize("name,builder", [
    ("resnet18", lambda: torchvision.models.resnet18()),
    ("googlenet", lambda: torchvision.models.googlenet(aux_logits=False, init_weights=False)),
    pytest.param("densenet121", lambda: torchvision.models.densenet121(),
                 marks=pytest.mark.slow),
])
def test_guided_backprop_on_torchvision_functional_and_reused_relus(name, builder):
    torch.manual_seed(0)
    model = builder().eval()
    x, t = images(2, 32, torch.float32), torch.tensor([3, 7])
    got = guided_backprop(model, x, t)

    def guided(z: torch.Tensor) -> torch.Tensor:
        with GuidedReluMode():
            return model(z)

    expected = grad_of(guided, x, t)
    assert relative(got, expected) <= 1e-4
    assert relative(got, saliency(model, x, t)) > 1e-2  # no silent fallback to the gradient


def test_guided_backprop_without_relu_warns_and_is_the_gradient():
    model = small_cnn(act=nn.GELU, **CNN)
    x = images(2)
    with pytest.warns(NetlensWarning, match="no ReLU"):
        got = guided_backprop(model, x, 1)
    torch.testing.assert_close(got, saliency(model, x, 1), rtol=0, atol=0)


# -- A5 SmoothGrad ---------------------------------------------------------------------------

def noisy_gradients(fn: Callable, x: torch.Tensor, t: torch.Tensor, n: int, sigma: float,
                    seed: int) -> torch.Tensor:
    """(n, B, C, H, W) gradients at x + eps_k, eps_k drawn as smooth_grad documents."""
    g = seeded(seed)
    scale = sigma * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1)
    return torch.stack([grad_of(fn, x + torch.randn(x.shape, generator=g, dtype=x.dtype) * scale,
                                t) for _ in range(n)])


def test_smooth_grad_is_the_mean_gradient_at_the_same_noisy_points(every_relu_net):
    x = images(4)
    grads = noisy_gradients(every_relu_net, x, T4, 6, 0.2, seed=11)
    for variant, expected in [("mean", grads.mean(0)), ("squared", (grads ** 2).mean(0)),
                              ("vargrad", ((grads - grads.mean(0)) ** 2).mean(0))]:
        got = smooth_grad(every_relu_net, x, T4, n=6, sigma=0.2, variant=variant,
                          generator=seeded(11))
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12, msg=variant)


def test_smooth_grad_sigma_zero_is_saliency_and_guided_composes(every_relu_net):
    x = images(4)
    torch.testing.assert_close(smooth_grad(every_relu_net, x, T4, n=3, sigma=0.0),
                               saliency(every_relu_net, x, T4), rtol=1e-12, atol=1e-14)
    grads = noisy_gradients(lambda z: guided_every_relu(every_relu_net, z), x, T4, 5, 0.1, 4)
    got = smooth_grad(every_relu_net, x, T4, n=5, sigma=0.1, guided=True, generator=seeded(4))
    torch.testing.assert_close(got, grads.mean(0), rtol=1e-10, atol=1e-12)


def test_smooth_grad_resolves_targets_once_on_the_clean_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(64, 5)).double()
    x = images(4, 4)
    with torch.no_grad():
        predicted = model(x).argmax(1)
        g, scale = seeded(2), x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))
        noisy = [model(x + torch.randn(x.shape, generator=g, dtype=F64)
                       * scale.view(-1, 1, 1, 1)).argmax(1) for _ in range(4)]
    assert any((p != predicted).any() for p in noisy)  # the noisy predictions differ
    got = smooth_grad(model, x, n=4, sigma=1.0, generator=seeded(2))
    expected = smooth_grad(model, x, predicted, n=4, sigma=1.0, generator=seeded(2))
    assert torch.equal(got, expected)


# -- layer_channel_gradient ------------------------------------------------------------------

class Boom(nn.Module):
    """Raises in forward: always, or only when gradients are enabled (after tracing)."""

    def __init__(self, only_with_grad: bool = False) -> None:
        super().__init__()
        self.only_with_grad = only_with_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.only_with_grad or torch.is_grad_enabled():
            raise RuntimeError("boom")
        return x


def test_layer_channel_gradient_oracle_and_early_stop(every_relu_net, untouched):
    x = images(3)
    kept: list[torch.Tensor] = []
    handle = every_relu_net.conv3.register_forward_hook(lambda m, i, o: kept.append(o.clone()))
    xg = x.clone().requires_grad_(True)
    every_relu_net(xg)
    handle.remove()
    expected = torch.autograd.grad(kept[0][:, 5].mean(dim=(1, 2)).sum(), xg)[0]
    with untouched(every_relu_net):
        got = layer_channel_gradient(every_relu_net, x, layer="conv3", channel=5)
        summed = layer_channel_gradient(every_relu_net, x, layer="conv3", channel=5,
                                        reduce="sum")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(summed, expected * 64, rtol=1e-12, atol=1e-12)
    # Nothing after the layer runs: the layer after it raises whenever gradients are on.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), Boom(only_with_grad=True),
                          nn.Flatten()).double()
    assert layer_channel_gradient(model, x, layer="1", channel=2).abs().sum() > 0
    with pytest.raises(RuntimeError, match="boom"):
        layer_channel_gradient(model, x, layer="2", channel=2)


def test_layer_channel_gradient_errors(every_relu_net, untouched):
    x = images(2)
    with untouched(every_relu_net):
        with pytest.raises(UnknownLayerError, match="conv3"):
            layer_channel_gradient(every_relu_net, x, layer="conv33", channel=0)
        with pytest.raises(ValueError, match="8 channels"):
            layer_channel_gradient(every_relu_net, x, layer="conv3", channel=8)
        with pytest.raises(ValueError, match="reduce"):
            layer_channel_gradient(every_relu_net, x, layer="conv3", channel=0, reduce="max")


# -- B9 batch, target and chunk invariance ---------------------------------------------------

def registry_method(name: str) -> Callable[..., torch.Tensor]:
    """The registry's method with its cheap options, and a fresh seeded generator when it is
    stochastic (so two calls give the same result)."""
    spec = METHODS[name]

    def run(model: nn.Module, x: torch.Tensor, target, **options) -> torch.Tensor:
        if spec.stochastic:
            options.setdefault("generator", seeded(0))
        return spec(model, x, target, **{**spec.cheap, **options})

    return run


# Every method of the registry that this module defines, and layer_channel_gradient, which is
# not a registry method: it reads one channel of a layer and takes no target.
ALL = {name: registry_method(name) for name, spec in METHODS.items()
       if spec.fn.__module__ == gradients.__name__}
TARGETED = list(ALL)
ALL["layer_channel_gradient"] = lambda m, x, t, **kw: layer_channel_gradient(
    m, x, layer="conv4", channel=t if isinstance(t, int) else 1, **kw)
DETERMINISTIC = [k for k in ALL if k not in METHODS or not METHODS[k].stochastic]


def test_the_generated_cases_run_this_modules_functions():
    for fn in (saliency, input_x_gradient, guided_backprop, integrated_gradients, smooth_grad):
        assert fn.__name__ in TARGETED and METHODS[fn.__name__].fn is fn, fn.__name__
    assert "smooth_grad" not in DETERMINISTIC and "layer_channel_gradient" in DETERMINISTIC


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_a_batch_equals_single_calls(every_relu_net, name):
    x, t = images(5), [4, 0, 2, 2, 1]
    if name == "layer_channel_gradient":  # no target: one channel for every image
        t = [1] * 5
    batch = ALL[name](every_relu_net, x, t if name != "layer_channel_gradient" else 1)
    singles = torch.cat([ALL[name](every_relu_net, x[i:i + 1], t[i]) for i in range(5)])
    torch.testing.assert_close(batch, singles, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", TARGETED)
def test_target_none_is_the_argmax(every_relu_net, name):
    x = images(5)
    with torch.no_grad():
        argmax = every_relu_net(x).argmax(1)
    assert torch.equal(ALL[name](every_relu_net, x, None), ALL[name](every_relu_net, x, argmax))


# Named on purpose: the options of this module's two multi-pass methods that change how their
# passes are drawn and combined.
@pytest.mark.parametrize("name,options", [
    ("integrated_gradients", {"steps": 7, "method": "gausslegendre"}),
    ("integrated_gradients", {"steps": 6, "method": "riemann_trapezoid", "baseline": "uniform",
                              "generator": None}),
    ("smooth_grad", {"n": 7, "variant": "mean"}),
    ("smooth_grad", {"n": 7, "variant": "vargrad", "guided": True}),
])
def test_results_do_not_depend_on_the_chunking(every_relu_net, name, options):
    fn = integrated_gradients if name == "integrated_gradients" else smooth_grad
    x, t = images(5), [4, 0, 2, 2, 1]
    results = []
    for batch_size in (1, 3, 35, None):
        kw = dict(options)
        if "generator" in kw or name == "smooth_grad":
            kw["generator"] = seeded(9)
        results.append(fn(every_relu_net, x, t, batch_size=batch_size, **kw))
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], rtol=0, atol=1e-12)


# -- B7 input invariance (Kindermans et al., 2019) -------------------------------------------

def test_input_invariance():
    model = small_cnn(act=nn.ReLU, padding=(0, 1), **CNN)
    shift = torch.tensor([0.5, -1.0, 2.0], dtype=F64).view(1, 3, 1, 1)
    shifted = copy.deepcopy(model)
    with torch.no_grad():  # model(x) == shifted(x + shift)
        shifted.conv1.bias -= (shifted.conv1.weight * shift).sum(dim=(1, 2, 3))
    x, t = images(3), torch.tensor([0, 1, 2])
    xs = x + shift
    with torch.no_grad():
        torch.testing.assert_close(shifted(xs), model(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(saliency(shifted, xs, t), saliency(model, x, t),
                               rtol=0, atol=1e-10)
    b = 0.2 * images(3, seed=3)
    torch.testing.assert_close(
        integrated_gradients(shifted, xs, t, steps=8, baseline=b + shift),
        integrated_gradients(model, x, t, steps=8, baseline=b), rtol=0, atol=1e-10)
    assert not torch.allclose(input_x_gradient(shifted, xs, t), input_x_gradient(model, x, t))
    assert not torch.allclose(integrated_gradients(shifted, xs, t, steps=8),
                              integrated_gradients(model, x, t, steps=8))


# -- B8 implementation invariance under ReLU rescaling ---------------------------------------

def test_relu_rescaling_invariance(every_relu_net):
    scaled = copy.deepcopy(every_relu_net)
    with torch.no_grad():
        scaled.conv1.weight *= 3
        scaled.conv1.bias *= 3
        scaled.conv2.weight /= 3
    x = images(4)
    for name in TARGETED:
        torch.testing.assert_close(ALL[name](scaled, x, T4), ALL[name](every_relu_net, x, T4),
                                   rtol=1e-9, atol=1e-12, msg=name)


# -- Captum agreement ------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::UserWarning:captum")
def test_agrees_with_captum():
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()  # module ReLUs, one of them reused
    x, t = images(2, 32, torch.float32), torch.tensor([3, 7])
    assert relative(saliency(model, x, t),
                    captum.Saliency(model).attribute(x.clone().requires_grad_(True), t,
                                                     abs=False)) <= 1e-4
    base = 0.5 * images(2, 32, torch.float32, seed=4)
    for method, steps in [("gausslegendre", 5), ("riemann_trapezoid", 4)]:
        ours = integrated_gradients(model, x, t, steps=steps, baseline=base, method=method)
        theirs = captum.IntegratedGradients(model).attribute(x, base, target=t, n_steps=steps,
                                                             method=method)
        assert relative(ours, theirs) <= 1e-4, method
    gbp = captum.GuidedBackprop(model).attribute(x.clone().requires_grad_(True), t)
    assert relative(guided_backprop(model, x, t), gbp) <= 1e-4


# -- C10-C12 contracts -----------------------------------------------------------------------

def error_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         Boom(only_with_grad=True), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_dtype_shape_and_modes(every_relu_net, untouched, name, dtype):
    model = every_relu_net.to(dtype)
    x = images(2, 6, dtype)
    with untouched(model):
        out = ALL[name](model, x, 1)
        assert out.dtype == dtype and out.shape == x.shape and out.device == x.device
        assert torch.isfinite(out).all() and out.abs().sum() > 0
        with torch.no_grad():
            assert torch.equal(ALL[name](model, x, 1), out)
        model.train()
        try:
            torch.testing.assert_close(ALL[name](model, x, 1), out)  # no BatchNorm, no dropout
        finally:
            model.eval()


@pytest.mark.parametrize("name", list(ALL))
def test_model_untouched_after_errors(every_relu_net, untouched, name):
    x = images(2, 6)
    with untouched(every_relu_net):
        with pytest.raises(ValueError, match="out of range"):
            if name == "layer_channel_gradient":
                layer_channel_gradient(every_relu_net, x, layer="conv4", channel=10 ** 6)
            else:
                ALL[name](every_relu_net, x, 10 ** 6)
    model = error_net()
    with untouched(model), pytest.raises(RuntimeError, match="boom"):
        if name == "layer_channel_gradient":
            layer_channel_gradient(model, x.float(), layer="4", channel=0)
        else:
            ALL[name](model, x.float(), 0)


@pytest.mark.parametrize("name", list(ALL))
def test_input_errors_and_inference_mode(every_relu_net, name):
    x = images(2, 6)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ALL[name](every_relu_net, bad, 1)
    with pytest.raises(ValueError, match="batch"):
        ALL[name](every_relu_net, x[0], 1)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        ALL[name](every_relu_net, x, 1)


@pytest.mark.parametrize("name", list(ALL))
def test_existing_input_grad_is_untouched(every_relu_net, name):
    x = images(2, 6).requires_grad_(True)
    sentinel = torch.full_like(x, 7.0)
    x.grad = sentinel
    ALL[name](every_relu_net, x, 1)
    assert x.grad is sentinel and bool((sentinel == 7).all())


def test_smooth_grad_determinism_and_global_rng(every_relu_net):
    x = images(2, 6)
    state = torch.random.get_rng_state()
    a = smooth_grad(every_relu_net, x, 1, n=4, generator=seeded(5))
    b = smooth_grad(every_relu_net, x, 1, n=4, generator=seeded(5))
    c = smooth_grad(every_relu_net, x, 1, n=4, generator=seeded(6))
    integrated_gradients(every_relu_net, x, 1, steps=3, baseline="uniform", generator=seeded(5))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    smooth_grad(every_relu_net, x, 1, n=2)  # its own generator, still not the global one
    assert torch.equal(torch.random.get_rng_state(), state)


def test_smooth_grad_option_errors(every_relu_net):
    x = images(1, 6)
    for options, match in [({"n": 0}, "n must"), ({"sigma": -0.1}, "sigma"),
                           ({"sigma": float("nan")}, "sigma"), ({"variant": "max"}, "variant")]:
        with pytest.raises(ValueError, match=match):
            smooth_grad(every_relu_net, x, 1, **options)
    with pytest.raises(TypeError, match="Generator"):
        smooth_grad(every_relu_net, x, 1, generator=0)


def test_progress_bar_on_request(every_relu_net, capsys):
    x = images(1, 6)
    integrated_gradients(every_relu_net, x, 1, steps=4, progress=True)
    assert "Integrated gradients" in capsys.readouterr().err
    smooth_grad(every_relu_net, x, 1, n=2, progress=False)
    assert "SmoothGrad" not in capsys.readouterr().err


def test_guided_option_of_every_gradient_method_equals_the_guided_oracle(every_relu_net):
    """guided=True (Netlens 1.x's guided IG and guided feature gradient; input x gradient and
    SmoothGrad too) equals the plain method on a copy of the network whose every ReLU call is
    the guided-backprop autograd function, on every ReLU kind (module, in-place, reused,
    functional)."""
    from helpers import ReluOracle

    oracle = ReluOracle(GuidedRelu).double().eval()
    oracle.load_state_dict(every_relu_net.state_dict())
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    pairs = {
        "input_x_gradient": lambda m, **o: gradients.input_x_gradient(m, x, 2, **o),
        "integrated_gradients": lambda m, **o: gradients.integrated_gradients(
            m, x, 2, steps=6, baseline="blur", **o),
        "smooth_grad": lambda m, **o: gradients.smooth_grad(
            m, x, 2, n=3, generator=torch.Generator().manual_seed(1), **o),
        "layer_channel_gradient": lambda m, **o: gradients.layer_channel_gradient(
            m, x, layer="conv3", channel=1, **o),
    }
    for name, run in pairs.items():
        guided, reference, plain = run(every_relu_net, guided=True), run(oracle), run(
            every_relu_net)
        torch.testing.assert_close(guided, reference, rtol=0, atol=1e-12, msg=name)
        assert not torch.allclose(guided, plain), name  # the rule changes the result
