"""CAM methods against their definitions, Captum and pytorch-grad-cam
(CONTRIBUTING.md tests A3, A4, C10-11).

Oracles split a float64 model by hand at the CAM layer, so activations and gradients come from
plain autograd, not from the library. pytorch-grad-cam min-max normalizes every map and resizes
it with cv2; we compare end to end on a layer at the input's resolution (cv2's resize is then
the identity) after normalizing our raw maps with its formula, and compare EigenCAM through its
``get_2d_projection`` (its SVD sign is arbitrary).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netlens.attribution import METHODS, cam
from netlens.attribution.gradients import guided_backprop
from netlens.flat_model import FlatModel

from helpers import EveryReluNet, SmallCNN, small_cnn, tiny_vit

# Every CAM of the registry (its "cam" family: the map CAMs and guided Grad-CAM).
CAMS = [spec for spec in METHODS.values() if spec.family == "cam"]


def images(batch: int, h: int, w: int, dtype: torch.dtype = torch.float64,
           seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=g).to(dtype)


# -- oracles: EveryReluNet split by hand after conv2 (an in-place ReLU follows it) ------------
def every_relu_tail(m: EveryReluNet, a: torch.Tensor) -> torch.Tensor:
    h = torch.relu(a)
    h = torch.relu(m.conv3(h))
    h = torch.relu(m.conv4(h) + h)
    h = torch.relu(m.conv5(h))
    return m.fc(torch.relu(h.mean(dim=(2, 3))))


def acts_and_grads(m: EveryReluNet, x: torch.Tensor, t: list[int]):
    a = m.conv2(torch.relu(m.conv1(x))).detach().requires_grad_(True)
    out = every_relu_tail(m, a)
    g, = torch.autograd.grad(out[torch.arange(len(t)), t].sum(), a)
    return a.detach(), g


def oracle(kind: str, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Each variant's definition, written out; (B, 1, h, w) before ReLU."""
    s = a.sum(dim=(2, 3), keepdim=True)
    if kind == "gradcam":
        contrib = g.mean(dim=(2, 3), keepdim=True) * a
    elif kind == "hirescam":
        contrib = g * a
    elif kind == "layercam":
        contrib = torch.relu(g) * a
    elif kind == "xgradcam":
        w = torch.where(s[..., 0, 0] != 0, (g * a).sum(dim=(2, 3)) / s[..., 0, 0], 0.0)
        contrib = w[..., None, None] * a
    elif kind == "gradcam_pp":
        den = 2 * g**2 + s * g**3
        alpha = torch.where(den != 0, g**2 / den, 0.0)
        contrib = (alpha * torch.relu(g)).sum(dim=(2, 3), keepdim=True) * a
    elif kind == "eigencam":  # top eigenvector of the channel covariance, sum(v) >= 0
        centred = a - a.mean(dim=(2, 3), keepdim=True)
        out = []
        for c in centred:
            m = c.reshape(c.shape[0], -1).T
            v = torch.linalg.eigh(m.T @ m)[1][:, -1]
            v = v if v.sum() >= 0 else -v
            out.append((m @ v).reshape(1, *c.shape[1:]))
        return torch.stack(out)
    else:
        raise ValueError(kind)
    return contrib.sum(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def resnet18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18().double().eval()


# Named on purpose: the CAMs whose definition ``oracle`` writes out (Score-CAM and guided
# Grad-CAM have their own oracles below); the registry check keeps the list complete.
ORACLES = ("gradcam", "hirescam", "layercam", "xgradcam", "gradcam_pp", "eigencam")


# the variants of cam_variants.py, checked against their definitions and the peers in
# tests/attribution/test_cam_variants.py
VARIANT_TESTS = {"gradcam_elementwise", "eigengradcam", "cam", "ablationcam", "sscam", "iscam",
                 "smoothgradcam_pp", "randomcam",
                 # and in tests/attribution/test_cam_options.py
                 "kpcacam", "shapleycam", "finercam"}


def run(spec, model, x, target=None, **options):
    """The registry's method with its cheap options and, if stochastic, a seeded generator."""
    options = {**spec.cheap, **options}
    if spec.stochastic:
        options.setdefault("generator", torch.Generator().manual_seed(0))
    return spec(model, x, target, **options)


def test_every_cam_of_the_registry_is_checked_against_its_definition():
    checked = {*ORACLES, "scorecam", "guided_gradcam", *VARIANT_TESTS}
    assert {spec.name for spec in CAMS} == checked, "a CAM without an oracle in this module"


@pytest.mark.parametrize("kind", ORACLES)
def test_variant_equals_its_definition(every_relu_net, kind):
    x, t = images(3, 10, 12), [0, 3, 4]
    a, g = acts_and_grads(every_relu_net, x, t)
    expected = oracle(kind, a, g)
    method = getattr(cam, kind)
    raw = method(every_relu_net, x, t, layer="conv2", relu=False, interpolate="none")
    torch.testing.assert_close(raw, expected, rtol=1e-10, atol=1e-12)
    relued = method(every_relu_net, x, t, layer="conv2")
    torch.testing.assert_close(relued, expected.clamp(min=0), rtol=1e-10, atol=1e-12)
    assert relued.dtype == torch.float64 and relued.shape == (3, 1, 10, 12)


def test_gradcam_oracle_with_a_forward_hook(resnet18):
    """A3: relu(sum_k mean_ij(dy/dA_k) A_k) with A captured by a plain forward hook."""
    model = resnet18
    x, t = images(2, 64, 48), [5, 9]
    box = []
    handle = model.layer3.register_forward_hook(lambda m, i, o: box.append(o))
    try:
        out = model(x)
    finally:
        handle.remove()
    g, = torch.autograd.grad(out[torch.arange(2), t].sum(), box[0])
    expected = torch.relu((g.mean(dim=(2, 3), keepdim=True) * box[0]).sum(1, keepdim=True))
    raw = cam.gradcam(model, x, t, layer="layer3", interpolate="none")
    torch.testing.assert_close(raw, expected.detach(), rtol=1e-10, atol=1e-12)
    assert raw.shape == (2, 1, 4, 3)
    # interpolate=True is bilinear upsampling (align_corners=False) of the raw map.
    up = cam.gradcam(model, x, t, layer="layer3")
    torch.testing.assert_close(up, F.interpolate(raw, size=(64, 48), mode="bilinear",
                                                 align_corners=False), rtol=1e-12, atol=1e-12)


class OnesConvNet(nn.Module):
    """conv 3x3 (1 -> 2), all weights 1, biases (40, 0); mean pool; fixed linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.copy_(torch.tensor([40.0, 0.0]))
            self.fc.weight.copy_(torch.tensor([[2.0, -3.0], [0.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_gradcam_by_hand():
    # x = 0..15 in a 4x4 grid; the four 3x3 patch sums are S = 45, 54, 81, 90, so A_0 = S + 40
    # and A_1 = S. y_0 = mean(2 A_0 - 3 A_1), so dy_0/dA_k = (2, -3) / 4 everywhere and the map
    # is 0.5 (S + 40) - 0.75 S = 20 - 0.25 S = 8.75, 6.5, -0.25, -2.5.
    model = OnesConvNet().double()
    x = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4)
    raw = cam.gradcam(model, x, 0, layer="conv", relu=False, interpolate="none")
    expected = torch.tensor([[8.75, 6.5], [-0.25, -2.5]], dtype=torch.float64)
    torch.testing.assert_close(raw[0, 0], expected, rtol=0, atol=1e-12)
    relued = cam.gradcam(model, x, 0, layer="conv", interpolate="none")
    torch.testing.assert_close(relued[0, 0], expected.clamp(min=0), rtol=0, atol=1e-12)
    # Raw, never normalized: scaling the score scales the map.
    with torch.no_grad():
        model.fc.weight.mul_(10)
    torch.testing.assert_close(cam.gradcam(model, x, 0, layer="conv", interpolate="none"),
                               10 * relued, rtol=1e-12, atol=1e-12)


def scorecam_oracle(model, x, t, a, baseline=None):
    """Score-CAM from its definition, image by image and channel by channel: the softmax of
    the scores of ``x * mask + baseline * (1 - mask)`` (``x * mask`` without a baseline)."""
    h, w = x.shape[-2:]
    expected = []
    for i in range(x.shape[0]):
        scores = []
        for c in range(a.shape[1]):
            up = F.interpolate(a[i:i + 1, c:c + 1], size=(h, w), mode="bilinear",
                               align_corners=False)
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
            masked = x[i:i + 1] * mask
            if baseline is not None:
                masked = masked + baseline[i:i + 1] * (1 - mask)
            scores.append(model(masked)[0, t[i]])
        weights = torch.softmax(torch.stack(scores), dim=0)
        expected.append((weights[:, None, None] * a[i]).sum(0, keepdim=True))
    return torch.stack(expected).detach()


def test_scorecam_equals_its_definition():
    model = small_cnn()
    x, t = images(2, 12, 10), [1, 3]
    a = model.act2(model.conv2(model.act1(model.conv1(x)))).detach()  # (2, 8, 6, 5)
    expected = scorecam_oracle(model, x, t, a)
    raw = cam.scorecam(model, x, t, layer="act2", relu=False, interpolate="none", batch_size=5)
    torch.testing.assert_close(raw, expected, rtol=1e-10, atol=1e-12)
    up = cam.scorecam(model, x, t, layer="act2", batch_size=3)
    torch.testing.assert_close(up, F.interpolate(expected.clamp(min=0), size=(12, 10),
                                                 mode="bilinear", align_corners=False))


def test_scorecam_baseline_equals_its_definition():
    model = small_cnn()
    x, t = images(2, 12, 10), [1, 3]
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    a = model.act2(model.conv2(model.act1(model.conv1(x)))).detach()
    for baseline in (blurred, 0.5):
        base = torch.as_tensor(baseline, dtype=x.dtype).expand_as(x)
        raw = cam.scorecam(model, x, t, layer="act2", relu=False, interpolate="none",
                           baseline=baseline, batch_size=5)
        torch.testing.assert_close(raw, scorecam_oracle(model, x, t, a, base), rtol=1e-10,
                                   atol=1e-12)
    # the image itself as the baseline: every mask keeps the score, the weights are uniform
    same = cam.scorecam(model, x, t, layer="act2", relu=False, interpolate="none", baseline=x)
    torch.testing.assert_close(same, a.mean(1, keepdim=True), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(cam.scorecam(model, x, t, baseline=0.0), cam.scorecam(model, x, t))
    with pytest.raises(ValueError, match="baseline of shape \\(2, 3\\) does not broadcast"):
        cam.scorecam(model, x, t, baseline=torch.zeros(2, 3))


def test_scorecam_is_independent_of_batch_size():
    model = small_cnn()
    x, t = images(3, 12, 10), [0, 1, 2]
    ref = cam.scorecam(model, x, t, batch_size=100)
    for bs in (1, 7):
        torch.testing.assert_close(cam.scorecam(model, x, t, batch_size=bs), ref, rtol=1e-12,
                                   atol=1e-14)


# -- pytorch-grad-cam ------------------------------------------------------------------------
def _normalize_like_grad_cam(c: torch.Tensor) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image (applied twice: per layer, then after aggregation)."""
    out = c[:, 0].numpy()
    for _ in range(2):
        out = out - out.min(axis=(1, 2), keepdims=True)
        out = out / (1e-7 + out.max(axis=(1, 2), keepdims=True))
    return out


# Named on purpose: each CAM that pytorch-grad-cam implements, and its class there.
@pytest.mark.parametrize("kind, cls", [
    ("gradcam", "GradCAM"), ("gradcam_pp", "GradCAMPlusPlus"), ("xgradcam", "XGradCAM"),
    ("layercam", "LayerCAM"), ("hirescam", "HiResCAM"), ("scorecam", "ScoreCAM")])
def test_matches_pytorch_grad_cam(every_relu_net, kind, cls):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    # Scaled scores make gradients large, so pytorch-grad-cam's 1e-6 in the GradCAM++
    # denominator (which we leave out) is negligible.
    model = copy.deepcopy(every_relu_net)
    with torch.no_grad():
        model.fc.weight.mul_(1e6)
    x, t = images(2, 10, 12), [1, 3]
    ours = getattr(cam, kind)(model, x, t, layer="conv5")
    method = getattr(pytorch_grad_cam, cls)(model=model, target_layers=[model.conv5])
    try:
        method.batch_size = 8
        theirs = method(input_tensor=x, targets=[ClassifierOutputTarget(i) for i in t])
    finally:
        method.activations_and_grads.release()
    np.testing.assert_allclose(_normalize_like_grad_cam(ours), theirs, rtol=0, atol=1e-4)


def test_eigencam_matches_pytorch_grad_cam_projection(every_relu_net):
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    x = images(2, 10, 12)
    fm = FlatModel(every_relu_net)
    with fm.record("conv5") as rec:
        fm(x)
    theirs = get_2d_projection(rec.activations["conv5"].numpy())
    ours = cam.eigencam(fm, x, layer="conv5", relu=False, interpolate="none")[:, 0].numpy()
    for o, th in zip(ours, theirs):  # their SVD sign is arbitrary
        sign = 1.0 if np.abs(o - th).max() < np.abs(o + th).max() else -1.0
        np.testing.assert_allclose(o, sign * th, rtol=1e-5, atol=1e-5 * np.abs(th).max())


# -- Captum ----------------------------------------------------------------------------------
def test_gradcam_matches_captum_layer_gradcam(resnet18):
    from captum.attr import LayerGradCam

    x, t = images(2, 96, 80), [3, 7]
    theirs = LayerGradCam(resnet18, resnet18.layer4).attribute(x, t, relu_attributions=True)
    ours = cam.gradcam(resnet18, x, t, layer="layer4", interpolate="none")
    assert ours.shape == theirs.shape == (2, 1, 3, 3)
    torch.testing.assert_close(ours, theirs.detach(), rtol=0, atol=1e-4)
    assert (ours - theirs).abs().max() < 1e-10


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*(require gradients|backward hooks):UserWarning")
def test_guided_gradcam_matches_captum(resnet18):
    from captum.attr import GuidedGradCam

    x, t = images(2, 48, 48), [3, 7]
    theirs = GuidedGradCam(resnet18, resnet18.layer3).attribute(x, t, interpolate_mode="bilinear")
    ours = cam.guided_gradcam(resnet18, x, t, layer="layer3")
    assert ours.shape == (2, 3, 48, 48) and ours.abs().max() > 0
    torch.testing.assert_close(ours, theirs.detach(), rtol=0, atol=1e-4)
    # and it is guided backprop times the upsampled GradCAM
    expected = guided_backprop(resnet18, x, t) * cam.gradcam(resnet18, x, t, layer="layer3")
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-14)


# -- token and channels-last layers ----------------------------------------------------------
def test_vit_gradcam():
    vit = tiny_vit(hidden_dim=16, mlp_dim=32, head_std=0.5, dtype=torch.float32)
    x = images(2, 32, 32, torch.float32)
    for layer in (None, "encoder.layers.encoder_layer_0"):
        c = cam.gradcam(vit, x, [1, 2], layer=layer)
        assert c.shape == (2, 1, 32, 32) and c.dtype == torch.float32
        assert torch.isfinite(c).all() and c.abs().sum() > 0, layer
    raw = cam.gradcam(vit, x, [1, 2], layer="encoder.layers.encoder_layer_0", interpolate="none")
    assert raw.shape == (2, 1, 4, 4)  # the 4x4 patch grid, class token dropped
    # Why the default is not FlatModel.last_spatial_layer() ("encoder"): after the last
    # attention only the class token reaches the head, so the patch tokens get no gradient.
    assert FlatModel(vit).last_spatial_layer() == "encoder"
    assert cam.gradcam(vit, x, [1, 2], layer="encoder", relu=False).abs().max() == 0


@pytest.mark.slow
def test_swin_gradcam():
    import torchvision

    torch.manual_seed(0)
    swin = torchvision.models.swin_t().eval()
    x = images(1, 64, 64, torch.float32)
    for layer in (None, "features.5"):  # features.5 is channels-last [B, H, W, C]
        c = cam.gradcam(swin, x, 3, layer=layer)
        assert c.shape == (1, 1, 64, 64)
        assert torch.isfinite(c).all() and c.abs().sum() > 0, layer
    assert cam.gradcam(swin, x, 3, layer="features.5", interpolate="none").shape == (1, 1, 4, 4)


# -- contracts -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", CAMS, ids=lambda spec: spec.name)
def test_contracts(method, untouched):
    model = small_cnn(dtype=torch.float32)
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        x = images(2, 12, 10, dtype)
        with untouched(model):
            out = run(method, model, x, [0, 1])
        channels = 3 if method.output == "input" else 1  # guided Grad-CAM
        assert out.shape == (2, channels, 12, 10) and out.dtype == dtype
        assert torch.isfinite(out).all() and out.abs().sum() > 0
    with untouched(model):
        with pytest.raises(ValueError, match="out of range"):
            run(method, model, x, 10**6)
        with pytest.raises(ValueError, match="did you mean 'conv2'"):
            run(method, model, x, 0, layer="conv3")
        with pytest.raises(ValueError, match="'fc' has no spatial output"):
            run(method, model, x, 0, layer="fc")
    with torch.no_grad():
        torch.testing.assert_close(run(method, model, x, [0, 1]), out)


class Flaky(SmallCNN):
    """Runs once (the layer discovery), then raises inside its forward, after conv1."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            self.conv1(x)
            raise RuntimeError("a layer failed")
        return super().forward(x)


@pytest.mark.parametrize("method", CAMS, ids=lambda spec: spec.name)
def test_model_untouched_when_the_forward_raises(method, untouched):
    torch.manual_seed(0)
    model = Flaky().double().eval()
    with untouched(model), pytest.raises(RuntimeError, match="a layer failed"):
        run(method, model, images(2, 12, 10), [0, 1])


@pytest.mark.parametrize("method", CAMS, ids=lambda spec: spec.name)
def test_batch_equals_single_calls(method):
    model = small_cnn()
    x, t = images(5, 12, 10), [0, 3, 1, 2, 3]
    if method.stochastic:  # a draw per image: tested per variant in test_cam_variants.py
        pytest.skip(f"{method.name} draws its randomness for the whole batch")
    batched = run(method, model, x, t, batch_size=2)
    single = torch.cat([run(method, model, x[i:i + 1], t[i]) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=1e-10, atol=1e-12)
    # None is the argmax
    argmax = model(x).argmax(1)
    torch.testing.assert_close(run(method, model, x), run(method, model, x, argmax))


def test_frozen_model_and_flat_model_input():
    model = small_cnn()
    ref = cam.gradcam(model, images(2, 12, 10), [0, 1])
    frozen = copy.deepcopy(model).requires_grad_(False)
    torch.testing.assert_close(cam.gradcam(frozen, images(2, 12, 10), [0, 1]), ref)
    torch.testing.assert_close(cam.gradcam(FlatModel(model), images(2, 12, 10), [0, 1]), ref)
    assert all(p.grad is None for p in model.parameters())


def test_default_layer_is_last_spatial_layer():
    model = small_cnn()
    x = images(1, 12, 10)
    assert FlatModel(model).last_spatial_layer() == "act2"
    torch.testing.assert_close(cam.gradcam(model, x, 0), cam.gradcam(model, x, 0, layer="act2"))


def test_interpolate_false_is_nearest_and_normalize_scales_to_unit_range(resnet18):
    """Netlens 1.x's grad_cam(interpolate=False): the layer's map upsampled to the input with
    nearest neighbours (each cell a block of pixels); "none" keeps the layer's resolution;
    normalize=True scales each map to [0, 1] as the original returned it."""
    x = images(2, 64, 48)
    small = cam.gradcam(resnet18, x, [5, 9], layer="layer3", interpolate="none")
    assert small.shape == (2, 1, 4, 3)
    blocks = cam.gradcam(resnet18, x, [5, 9], layer="layer3", interpolate=False)
    torch.testing.assert_close(blocks, small.repeat_interleave(16, 2).repeat_interleave(16, 3))
    smooth = cam.gradcam(resnet18, x, [5, 9], layer="layer3")
    assert smooth.shape == blocks.shape and not torch.allclose(smooth, blocks)
    unit = cam.gradcam(resnet18, x, [5, 9], layer="layer3", interpolate=False, normalize=True)
    lo = blocks.amin(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(unit, (blocks - lo) / (blocks.amax(dim=(2, 3), keepdim=True) - lo))
    assert unit.amin() == 0 and unit.amax() == 1
    with pytest.raises(ValueError, match="interpolate must be True"):
        cam.gradcam(resnet18, x, [5, 9], interpolate="bicubic")
