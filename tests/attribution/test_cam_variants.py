"""The CAM variants of ``netlens.attribution.cam_variants`` against pytorch-grad-cam, torchcam
and hand computations (CONTRIBUTING.md tests A3, B9, C10-11).

pytorch-grad-cam min-max normalizes every map (twice) and resizes it with cv2; we run it with
its target size set to the layer's own size (the resize is then the identity) and compare our
raw ``interpolate="none"`` maps after normalizing them with its formula. torchcam min-max
normalizes each map once (with ``eps = 1e-8``). Where a peer's result is random (its own
global RNG) or differs by design, the test says so and compares with a hand computation.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netlens as nl
from netlens.attribution import cam as base
from netlens.attribution import cam_variants as cv
from netlens.flat_model import FlatModel

from helpers import Flaky, SmallCNN, assert_untouched, model_state, small_cnn, tiny_vit

# Every public variant of the module; the list is checked against its __all__ below.
VARIANTS = {
    "gradcam_elementwise": {}, "eigengradcam": {}, "randomcam": {"generator": 0},
    "class_activation_map": {}, "ablationcam": {}, "sscam": {"n": 2, "generator": 0},
    "iscam": {"n": 2},
    "smoothgradcam_pp": {"n": 2, "generator": 0},
}
STOCHASTIC = {"randomcam", "sscam", "smoothgradcam_pp"}


def options(name: str, **extra: Any) -> dict[str, Any]:
    """The variant's cheap options, with a fresh generator seeded as listed."""
    opts = dict(VARIANTS[name], **extra)
    if "generator" in opts and isinstance(opts["generator"], int):
        opts["generator"] = torch.Generator().manual_seed(opts["generator"])
    return opts


def run(name: str, model: nn.Module, x: torch.Tensor, target: Any, **extra: Any) -> torch.Tensor:
    return getattr(cv, name)(model, x, target, **options(name, **extra))


def images(batch: int, h: int, w: int, dtype: torch.dtype = torch.float64,
           seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=g).to(dtype)


def acts_and_grads(model: nn.Module, layer: str, x: torch.Tensor, t: list[int]):
    """A and dy/dA at a module by plain hooks (the oracle's own autograd)."""
    box: list[torch.Tensor] = []
    module = dict(model.named_modules())[layer]

    def keep(_m, _i, out):
        out = out.clone()  # a later in-place op must not change what we differentiate
        box.append(out)
        return out

    handle = module.register_forward_hook(keep)
    try:
        out = model(x)
    finally:
        handle.remove()
    g, = torch.autograd.grad(out[torch.arange(len(t)), t].sum(), box[0])
    return box[0].detach(), g


# -- models ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zoo(torchvision_double):
    return torchvision_double


# The layer per architecture: the last block for gradient CAMs (pytorch-grad-cam's choice),
# and few-channel layers for the perturbation CAMs (C passes per image).
LAST = {"resnet18": "layer4", "vgg16": "features.29", "densenet121": "features.denseblock4"}


# -- pytorch-grad-cam ----------------------------------------------------------------------------
def normalize_like_grad_cam(c: torch.Tensor) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image, applied twice (per layer, after aggregation)."""
    out = c[:, 0].numpy()
    for _ in range(2):
        out = out - out.min(axis=(1, 2), keepdims=True)
        out = out / (1e-7 + out.max(axis=(1, 2), keepdims=True))
    return out


def grad_cam(cls: str, model: nn.Module, layer: str, x: torch.Tensor, t: list[int],
             **kwargs: Any) -> np.ndarray:
    """pytorch-grad-cam's map at the layer's own resolution (its cv2 resize is then a copy)."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    fm = FlatModel(model)
    fm.ensure_traced(x)
    h, w = fm.layer_info(layer).shape[-2:]
    method = getattr(pytorch_grad_cam, cls)(model=model,
                                            target_layers=[dict(model.named_modules())[layer]],
                                            **kwargs)
    method.get_target_width_height = lambda _: (w, h)
    try:
        return method(input_tensor=x, targets=[ClassifierOutputTarget(i) for i in t])
    finally:
        method.activations_and_grads.release()


ARCHS = [pytest.param("resnet18", 64), pytest.param("vgg16", 32, marks=pytest.mark.slow),
         pytest.param("densenet121", 64, marks=pytest.mark.slow)]


@pytest.mark.parametrize("arch, size", ARCHS)
def test_gradcam_elementwise_matches_pytorch_grad_cam(zoo, arch, size):
    model, x, t = zoo(arch), images(2, size, size), [3, 7]
    ours = cv.gradcam_elementwise(model, x, t, layer=LAST[arch], interpolate="none")
    theirs = grad_cam("GradCAMElementWise", model, LAST[arch], x, t)
    np.testing.assert_allclose(normalize_like_grad_cam(ours), theirs, rtol=0, atol=1e-4)
    # and the definition: sum_c relu(G_c * A_c), with A and G from a plain hook
    a, g = acts_and_grads(model, LAST[arch], x, t)
    raw = cv.gradcam_elementwise(model, x, t, layer=LAST[arch], interpolate="none", relu=False)
    torch.testing.assert_close(raw, (g * a).clamp(min=0).sum(1, keepdim=True), rtol=1e-10,
                               atol=1e-12)


@pytest.mark.parametrize("arch, size", ARCHS)
def test_eigengradcam_matches_pytorch_grad_cam_up_to_its_sign(zoo, arch, size):
    model, x, t = zoo(arch), images(2, size, size), [3, 7]
    raw = cv.eigengradcam(model, x, t, layer=LAST[arch], interpolate="none", relu=False)
    theirs = grad_cam("EigenGradCAM", model, LAST[arch], x, t)
    for i in range(2):  # numpy's SVD sign is arbitrary: one of the two signs must match
        errors = [np.abs(normalize_like_grad_cam((s * raw[i:i + 1]).clamp(min=0))
                         - theirs[i]).max() for s in (1, -1)]
        assert min(errors) < 1e-4, errors
    # Our sign: the first right singular vector v of the centred (G * A) with sum(v) >= 0.
    a, g = acts_and_grads(model, LAST[arch], x, t)
    m = g * a
    centred = m - m.mean(dim=(2, 3), keepdim=True)
    for i in range(2):
        mat = centred[i].flatten(1).T  # (h*w, C)
        v = torch.linalg.eigh(mat.T @ mat)[1][:, -1]
        v = v if v.sum() >= 0 else -v
        want = (mat @ v).reshape(raw.shape[-2:])
        torch.testing.assert_close(raw[i, 0], want, rtol=1e-7, atol=1e-9 * want.abs().max())


def test_randomcam_is_its_hand_computation_with_the_same_generator(zoo):
    model, x = zoo("resnet18"), images(3, 64, 64)
    fm = FlatModel(model)
    with fm.record("layer4") as rec:
        fm(x)
    a = rec.activations["layer4"]
    g = torch.Generator().manual_seed(5)
    w = 2 * torch.rand((3, a.shape[1]), generator=g, dtype=torch.float64) - 1
    want = (w[:, :, None, None] * a).sum(1, keepdim=True).clamp(min=0)
    state = torch.random.get_rng_state()
    ours = cv.randomcam(model, x, [1, 2, 3], layer="layer4", interpolate="none",
                        generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is never used
    torch.testing.assert_close(ours, want, rtol=1e-12, atol=1e-12)
    # K targets: one (B, K, C) draw
    g = torch.Generator().manual_seed(5)
    wk = 2 * torch.rand((3, 2, a.shape[1]), generator=g, dtype=torch.float64) - 1
    k = cv.randomcam(model, x, nl.targets.TopK(2), layer="layer4", interpolate="none",
                     relu=False, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(k[:, :, 0], (wk[..., None, None] * a[:, None]).sum(2),
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="torch.Generator"):
        cv.randomcam(model, x, 1, generator=5)  # type: ignore[arg-type]


# -- CAM (Zhou et al.) against torchcam ------------------------------------------------------------
def test_cam_matches_torchcam_and_is_the_classifier_weights(zoo):
    from torchcam.methods import CAM

    model, x, t = zoo("resnet18"), images(2, 64, 64), [3, 7]
    with CAM(model, "layer4", "fc") as extractor:
        with torch.no_grad():
            model(x)
        theirs = extractor(class_idx=t)[0]
    # torchcam's CAM: no ReLU
    raw = cv.class_activation_map(model, x, t, interpolate="none", relu=False)[:, 0]
    low = raw.amin(dim=(1, 2), keepdim=True)
    ours = (raw - low) / ((raw - low).amax(dim=(1, 2), keepdim=True) + 1e-8)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    # by hand: W_c . A, and for a global-pool + linear head that is h*w times Grad-CAM
    a, _ = acts_and_grads(model, "layer4", x, t)
    want = torch.einsum("bc,bchw->bhw", model.fc.weight[t].detach(), a)
    torch.testing.assert_close(raw, want, rtol=1e-10, atol=1e-10)
    gc = base.gradcam(model, x, t, layer="layer4", interpolate="none", relu=False)[:, 0]
    torch.testing.assert_close(raw, gc * a.shape[2] * a.shape[3], rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_cam_finds_densenets_functional_relu_and_refuses_vgg(zoo):
    # DenseNet pools relu(features(x)) with a functional ReLU: the default layer is that
    # ReLU's output (torchcam, hooking modules only, would weigh the pre-ReLU features).
    model, x, t = zoo("densenet121"), images(2, 64, 64), [3, 7]
    ours = cv.class_activation_map(model, x, t, interpolate="none", relu=False)
    with torch.no_grad():
        a = torch.relu(model.features(x))
    want = torch.einsum("bc,bchw->bhw", model.classifier.weight[t], a)
    torch.testing.assert_close(ours[:, 0], want, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="global-average-pool \\+ linear head.*4096 features"):
        cv.class_activation_map(zoo("vgg16"), x, t)


def test_cam_errors_name_the_missing_head():
    x = images(2, 12, 10)
    no_pool = small_cnn(pool=None, positions=30)  # flatten + linear: not a global pool
    with pytest.raises(ValueError, match="global-average-pool"):
        cv.class_activation_map(no_pool, x, [0, 1], layer="act2")
    with pytest.raises(ValueError, match="global-average-pool"):
        cv.class_activation_map(small_cnn(pool="max"), x, [0, 1])
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="no nn.Linear is called after layer '1'"):
        cv.class_activation_map(pooled.double().eval(), x, 0, layer="1")
    # the default layer of a pooled SmallCNN is the pooled layer, and it is its fc weights
    model = small_cnn()
    raw = cv.class_activation_map(model, x, [0, 3], interpolate="none", relu=False)
    a = model.act2(model.conv2(model.act1(model.conv1(x)))).detach()
    torch.testing.assert_close(raw[:, 0], torch.einsum("bc,bchw->bhw", model.fc.weight[[0, 3]], a)
                               .detach(), rtol=1e-12, atol=1e-12)


# -- Ablation-CAM --------------------------------------------------------------------------------
# few-channel ReLU layers (pytorch-grad-cam ablates with 0 when the layer's minimum is 0)
FEW = [pytest.param("resnet18", "layer1", marks=pytest.mark.slow),
       pytest.param("vgg16", "features.1", marks=pytest.mark.slow),
       pytest.param("densenet121", "features.relu0", marks=pytest.mark.slow)]


@pytest.mark.parametrize("arch, layer", FEW)
def test_ablationcam_matches_pytorch_grad_cam(zoo, arch, layer):
    size = 64 if arch == "resnet18" else 32
    model, x, t = zoo(arch), images(1, size, size), [3]
    ours = cv.ablationcam(model, x, t, layer=layer, interpolate="none", batch_size=16)
    theirs = grad_cam("AblationCAM", model, layer, x, t, batch_size=16)
    np.testing.assert_allclose(normalize_like_grad_cam(ours), theirs, rtol=0, atol=1e-4)


def test_ablationcam_equals_its_definition_and_leaves_the_model():
    model, x, t = small_cnn(), images(2, 12, 10), [1, 3]
    a = model.act2(model.conv2(model.act1(model.conv1(x)))).detach()
    with torch.no_grad():
        head = nn.Sequential(model.pool, model.flatten, model.fc)
        y = head(a)[torch.arange(2), t]
        drops = []
        for c in range(a.shape[1]):
            ablated = a.clone()
            ablated[:, c] = 0
            drops.append((y - head(ablated)[torch.arange(2), t]) / y)
        w = torch.stack(drops, 1)
    raw = cv.ablationcam(model, x, t, layer="act2", interpolate="none", relu=False, batch_size=5)
    torch.testing.assert_close(raw, (w[..., None, None] * a).sum(1, keepdim=True), rtol=1e-10,
                               atol=1e-12)


# -- SS-CAM and IS-CAM against torchcam -----------------------------------------------------------
# Layers where torchcam's order (min-max normalize, then upsample) and ours (upsample, then
# normalize, as Score-CAM's authors and pytorch-grad-cam) give the same masks: a 2x2 map (every
# source pixel is a corner, so the upsampled extremes are the map's) or no upsampling.
MASKED = [pytest.param("resnet18", "layer3", 32, marks=pytest.mark.slow),
          pytest.param("vgg16", "features.3", 32, marks=pytest.mark.slow),
          pytest.param("densenet121", "features.denseblock4.denselayer16.conv2", 64,
                       marks=pytest.mark.slow)]


class _Draws:
    """Stands in for torchcam's noise distribution: returns the given draws in order."""

    def __init__(self, draws: list[torch.Tensor]) -> None:
        self.draws = list(draws)

    def sample(self, size: torch.Size) -> torch.Tensor:
        d = self.draws.pop(0)
        assert d.shape == size
        return d


def sscam_noise(seed: int, n: int, a: torch.Tensor, size: tuple[int, int], sigma: float
                ) -> list[torch.Tensor]:
    """SS-CAM's documented draws: seeds from the generator, one generator per mask."""
    b, c = a.shape[:2]
    seeds = torch.randint(0, 2**62, (n * b * c,), generator=torch.Generator().manual_seed(seed))
    out = []
    for s in range(n):
        noise = torch.empty(b, c, *size, dtype=a.dtype)
        for i in range(b):
            for j in range(c):
                g = torch.Generator().manual_seed(int(seeds[(s * b + i) * c + j]))
                noise[i, j] = sigma * torch.randn(size, generator=g, dtype=a.dtype)
        out.append(noise)
    return out


def normalize_like_torchcam(c: torch.Tensor) -> torch.Tensor:
    low = c.amin(dim=(-2, -1), keepdim=True)
    return (c - low) / ((c - low).amax(dim=(-2, -1), keepdim=True) + 1e-8)


@pytest.mark.parametrize("arch, layer, size", MASKED)
def test_sscam_and_iscam_match_torchcam(zoo, arch, layer, size):
    from torchcam.methods import ISCAM, SSCAM

    model, x, t = zoo(arch), images(1, size, size), [5]
    fm = FlatModel(model)
    with fm.record(layer) as rec:
        fm(x)
    a = rec.activations[layer]
    noise = sscam_noise(3, 1, a, (size, size), 0.5)
    with SSCAM(model, layer, batch_size=64, num_samples=1, std=0.5) as extractor:
        extractor._distrib = _Draws(noise)
        with torch.no_grad():
            model(x)
        theirs = extractor(class_idx=t)[0]
    ours = cv.sscam(model, x, t, layer=layer, interpolate="none", n=1, sigma=0.5,
                    generator=torch.Generator().manual_seed(3), batch_size=64)
    torch.testing.assert_close(normalize_like_torchcam(ours[:, 0]), theirs, rtol=0, atol=1e-4)
    with ISCAM(model, layer, batch_size=64, num_samples=2) as extractor:
        with torch.no_grad():
            model(x)
        theirs = extractor(class_idx=t)[0]
    ours = cv.iscam(model, x, t, layer=layer, interpolate="none", n=2, batch_size=64)
    torch.testing.assert_close(normalize_like_torchcam(ours[:, 0]), theirs, rtol=0, atol=1e-4)


def masks_of(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    up = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    low, high = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    return torch.where(high > low, (up - low) / (high - low).clamp(min=1e-300), 0.0)


def test_sscam_and_iscam_equal_their_definitions():
    model, x, t = small_cnn(), images(2, 12, 10), [1, 3]
    a = model.act2(model.conv2(model.act1(model.conv1(x)))).detach()  # (2, 8, 6, 5)
    masks = masks_of(a.flatten(0, 1)[:, None], (12, 10)).view(2, 8, 12, 10)
    noise = sscam_noise(4, 3, a, (12, 10), 0.7)
    with torch.no_grad():
        mean = sum(model((x[:, None] * (masks + d)[:, :, None]).flatten(0, 1))
                   .view(2, 8, -1)[torch.arange(2), :, t] for d in noise) / 3
    w = torch.softmax(mean, 1)
    raw = cv.sscam(model, x, t, layer="act2", interpolate="none", relu=False, n=3, sigma=0.7,
                   generator=torch.Generator().manual_seed(4), batch_size=7)
    torch.testing.assert_close(raw, (w[..., None, None] * a).sum(1, keepdim=True), rtol=1e-10,
                               atol=1e-12)
    # the draws do not depend on batch_size
    again = cv.sscam(model, x, t, layer="act2", interpolate="none", relu=False, n=3, sigma=0.7,
                     generator=torch.Generator().manual_seed(4), batch_size=100)
    torch.testing.assert_close(again, raw, rtol=1e-12, atol=1e-14)
    # IS-CAM: coefficients a_i = sum_{j<=i} j / n, scores averaged, softmax over channels
    coeff = torch.cumsum(torch.arange(1, 5, dtype=torch.float64) / 4, 0)
    with torch.no_grad():
        mean = sum(model((x[:, None] * (c * masks)[:, :, None]).flatten(0, 1))
                   .view(2, 8, -1)[torch.arange(2), :, t] for c in coeff) / 4
    w = torch.softmax(mean, 1)
    raw = cv.iscam(model, x, t, layer="act2", interpolate="none", relu=False, n=4, batch_size=9)
    torch.testing.assert_close(raw, (w[..., None, None] * a).sum(1, keepdim=True), rtol=1e-10,
                               atol=1e-12)


# -- Smooth Grad-CAM++ -----------------------------------------------------------------------------
def test_smoothgradcam_pp_equals_its_definition(every_relu_net):
    model, x, t = every_relu_net, images(2, 10, 12), [1, 3]
    n, sigma = 3, 0.2
    g = torch.Generator().manual_seed(9)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    noisy = [x + sigma * span * torch.randn(x.shape, generator=g, dtype=x.dtype)
             for _ in range(n)]
    a = model.conv2(torch.relu(model.conv1(x))).detach()
    grads = []
    for xi in noisy:
        ai = model.conv2(torch.relu(model.conv1(xi))).detach().requires_grad_(True)
        h = torch.relu(ai)
        h = torch.relu(model.conv3(h))
        h = torch.relu(model.conv4(h) + h)
        out = model.fc(torch.relu(torch.relu(model.conv5(h)).mean(dim=(2, 3))))
        grads.append(torch.autograd.grad(out[torch.arange(2), t].sum(), ai)[0])
    g1, g2, g3 = (sum(gi**p for gi in grads) / n for p in (1, 2, 3))
    den = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(den != 0, g2 / den, 0.0)
    w = (alpha * torch.relu(g1)).sum(dim=(2, 3))
    want = (w[..., None, None] * a).sum(1, keepdim=True)
    raw = cv.smoothgradcam_pp(model, x, t, layer="conv2", interpolate="none", relu=False, n=n,
                              sigma=sigma, generator=torch.Generator().manual_seed(9),
                              batch_size=4)
    torch.testing.assert_close(raw, want, rtol=1e-9, atol=1e-12)
    # sigma = 0: every copy is the image, and it is Grad-CAM++ (without its 1e-6)
    clean = cv.smoothgradcam_pp(model, x, t, layer="conv2", n=2, sigma=0.0)
    torch.testing.assert_close(clean, base.gradcam_pp(model, x, t, layer="conv2"), rtol=1e-10,
                               atol=1e-12)


# -- every variant: targets, batches, layouts, side effects ----------------------------------------
# Variants whose tests (peers, ViT tokens, K targets, side effects) are in test_cam_options.py.
ELSEWHERE = {"kpcacam", "shapleycam", "finercam", "fullgrad"}


def test_every_variant_is_listed():
    assert set(VARIANTS) | ELSEWHERE == set(cv.__all__)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_k_targets_equal_single_targets_and_batches_equal_single_images(name):
    model, x = small_cnn(), images(3, 12, 10)
    top = model(x).topk(2, dim=1).indices
    k = run(name, model, x, nl.targets.TopK(2), batch_size=4)
    assert k.shape == (3, 2, 1, 12, 10) and k.dtype == torch.float64
    if name == "randomcam":  # its weights are drawn (B, K, C): only the shapes compare
        return
    for j in range(2):
        torch.testing.assert_close(k[:, j], run(name, model, x, top[:, j]), rtol=1e-9,
                                   atol=1e-12)
    if name in STOCHASTIC:
        return
    batched = run(name, model, x, [0, 3, 1], batch_size=2)
    single = torch.cat([run(name, model, x[i:i + 1], [0, 3, 1][i]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(run(name, model, x, None), run(name, model, x, model(x).argmax(1)))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_contract(name, untouched):
    model = small_cnn(dtype=torch.float32)
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        x = images(2, 12, 10, dtype)
        with untouched(model):
            out = run(name, model, x, [0, 1])
        assert out.shape == (2, 1, 12, 10) and out.dtype == dtype
        assert torch.isfinite(out).all()
    with untouched(model):
        with pytest.raises(ValueError, match="out of range"):
            run(name, model, x, 10**6)
        with pytest.raises(ValueError, match="did you mean 'conv2'"):
            run(name, model, x, 0, layer="conv3")
        with pytest.raises(ValueError, match="NaN"):
            run(name, model, torch.full_like(x, float("nan")), 0)
    with torch.no_grad():
        torch.testing.assert_close(run(name, model, x, [0, 1]), out)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        run(name, model, x, [0, 1])


# ok = 1: the layer pass fails; ok = 3: a later pass (an ablated, masked or noisy one) fails
@pytest.mark.parametrize("name, ok", [(name, 1) for name in VARIANTS] + [
    (name, 3) for name in ("ablationcam", "sscam", "iscam", "smoothgradcam_pp")])
@pytest.mark.filterwarnings("ignore:the model is in training mode")
def test_model_untouched_when_the_forward_raises(name, ok, untouched):
    torch.manual_seed(0)
    model = Flaky(ok).double().train()
    with untouched(model), pytest.raises(RuntimeError, match="a layer failed"):
        run(name, model, images(2, 12, 10), [0, 1], batch_size=2)
    assert all(isinstance(m, nn.Module) for m in model.children())
    assert [type(m).__name__ for m in model.children()] == [
        type(m).__name__ for m in SmallCNN().children()]  # no module was swapped


@pytest.mark.parametrize("name", sorted(set(VARIANTS) - {"class_activation_map"}))
def test_vit_token_layer_without_a_reshape(name):
    vit = tiny_vit(hidden_dim=16, mlp_dim=32, head_std=0.5)
    before = model_state(vit)
    x = images(2, 32, 32)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    out = run(name, vit, x, [1, 2], layer=layer, n=1) if "n" in VARIANTS[name] else \
        run(name, vit, x, [1, 2], layer=layer)
    raw = run(name, vit, x, [1, 2], layer=layer, interpolate="none",
              **({"n": 1} if "n" in VARIANTS[name] else {}))
    assert out.shape == (2, 1, 32, 32) and raw.shape == (2, 1, 4, 4)
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    assert_untouched(vit, before)


def test_cam_on_a_vit_says_why_not():
    with pytest.raises(ValueError, match="class token"):
        cv.class_activation_map(tiny_vit(), images(1, 32, 32), 1,
                                layer="encoder.layers.encoder_layer_1.ln_1")


def test_frozen_and_flat_models_give_the_same_maps():
    model, x = small_cnn(), images(2, 12, 10)
    frozen = copy.deepcopy(model).requires_grad_(False)
    for name in ("gradcam_elementwise", "class_activation_map", "ablationcam"):
        ref = run(name, model, x, [0, 1])
        torch.testing.assert_close(run(name, frozen, x, [0, 1]), ref)
        torch.testing.assert_close(run(name, FlatModel(model), x, [0, 1]), ref)
    assert all(p.grad is None for p in model.parameters())
