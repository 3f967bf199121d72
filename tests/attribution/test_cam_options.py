"""The options every CAM takes (several layers fused, ``aug_smooth``, ``eigen_smooth``) and the
CAMs KPCA-CAM, ShapleyCAM, Finer-CAM and FullGrad, against pytorch-grad-cam 1.5.7 and hand
computations.

pytorch-grad-cam min-max normalizes every map (per layer, then after aggregating) and resizes
it with cv2; as in ``test_cam_variants.py`` we run it with its target size set to the layer's
own size and compare our raw ``interpolate="none"`` maps after its normalization.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import netlens as nl
from netlens.attribution import cam as base
from netlens.attribution import cam_variants as cv
from netlens.flat_model import FlatModel

from helpers import Flaky, assert_untouched, model_state, small_cnn, tiny_vit

NEW = {"kpcacam": {}, "shapleycam": {}, "finercam": {}}
LAST = {"resnet18": "layer4", "vgg16": "features.29", "densenet121": "features.denseblock4"}
ARCHS = [pytest.param("resnet18", 64), pytest.param("vgg16", 32, marks=pytest.mark.slow),
         pytest.param("densenet121", 64, marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def zoo(torchvision_double):
    return torchvision_double


def images(batch: int, h: int, w: int, dtype: torch.dtype = torch.float64,
           seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=g).to(dtype)


def scale(c: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's scale_cam_image on (B, h, w) maps."""
    c = c - c.min(axis=(1, 2), keepdims=True)
    return c / (1e-7 + c.max(axis=(1, 2), keepdims=True))


def like_grad_cam(c: torch.Tensor) -> np.ndarray:
    """Our (B, 1, h, w) map as pytorch-grad-cam returns one layer's map (scaled twice)."""
    return scale(scale(c[:, 0].numpy()))


def grad_cam_method(cls: Any, model: nn.Module, layer: str, x: torch.Tensor) -> Any:
    import pytorch_grad_cam

    fm = FlatModel(model)
    fm.ensure_traced(x)
    h, w = fm.layer_info(layer).shape[-2:]
    method = (getattr(pytorch_grad_cam, cls) if isinstance(cls, str) else cls)(
        model=model, target_layers=[dict(model.named_modules())[layer]])
    inner = getattr(method, "base_cam", method)
    inner.get_target_width_height = lambda _: (w, h)
    return method


def grad_cam(cls: str, model: nn.Module, layer: str, x: torch.Tensor, t: list[int] | None,
             **kwargs: Any) -> np.ndarray:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method = grad_cam_method(cls, model, layer, x)
    try:
        targets = None if t is None else [ClassifierOutputTarget(i) for i in t]
        return method(input_tensor=x, targets=targets, **kwargs)
    finally:
        getattr(method, "base_cam", method).activations_and_grads.release()


# -- the new CAMs against pytorch-grad-cam ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("arch, size", ARCHS)
def test_kpcacam_shapleycam_finercam_match_pytorch_grad_cam(zoo, arch, size):
    model, x, t = zoo(arch), images(2, size, size), [1, 2]
    layer = LAST[arch]
    for ours, theirs in [
        (cv.kpcacam(model, x, t, layer=layer, interpolate="none"),
         grad_cam("KPCA_CAM", model, layer, x, t)),
        (cv.shapleycam(model, x, t, layer=layer, interpolate="none"),
         grad_cam("ShapleyCAM", model, layer, x, t)),
        (cv.finercam(model, x, None, layer=layer, interpolate="none"),
         grad_cam("FinerCAM", model, layer, x, None)),
    ]:
        np.testing.assert_allclose(like_grad_cam(ours), theirs, atol=1e-4)


def test_kpcacam_kernels_match_scikit_learn():
    from sklearn.decomposition import KernelPCA

    acts = torch.randn(2, 6, 3, 4, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)
    for kernel in ("sigmoid", "rbf", "poly", "linear", "cosine"):
        ours = cv._kpca_contributions(acts, kernel, None)
        for b in range(2):
            rows = acts[b].flatten(1).T.numpy()
            rows = rows - rows.mean(0)
            ref = KernelPCA(n_components=1, kernel=kernel).fit_transform(rows)
            np.testing.assert_allclose(ours[b, 0].flatten().numpy(), ref[:, 0], atol=1e-10)


def test_shapleycam_is_gradcam_minus_half_the_hessian_term_on_a_smooth_head():
    # A head that is not piecewise linear in the layer (a square), where H A != 0: the hand
    # computation by double autograd differs from Grad-CAM and equals ShapleyCAM.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Conv2d(4, 5, 3), nn.Flatten(),
                          nn.LazyLinear(3)).double().eval()
    x = images(2, 8, 8)
    model(x)
    a = model[:1](x).detach().requires_grad_(True)
    y = model[1:](a)
    s = y[torch.arange(2), torch.tensor([0, 2])].sum()
    g, = torch.autograd.grad(s, a, create_graph=True)
    h, = torch.autograd.grad(g, a, grad_outputs=a.detach())
    w = (g - 0.5 * h).mean(dim=(2, 3))
    expected = (w[:, :, None, None] * a).sum(1, keepdim=True).clamp(min=0).detach()
    ours = cv.shapleycam(model, x, [0, 2], layer="0", interpolate="none")
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
    assert h.abs().max() > 1e-3  # the term matters here


def test_finercam_with_alpha_zero_is_gradcam_of_the_comparison_weighted_score():
    model, x = small_cnn(), images(2, 12, 10)
    out = model(x)
    # alpha = 0: the score is y_target (sum_j p_j) / (sum_j p_j + 1e-9): Grad-CAM up to a
    # factor 1 / (1 + 1e-9 / sum p) and the gradient through the softmax weights
    ours = cv.finercam(model, x, [0, 1], alpha=0.0, interpolate="none")
    ref = base.gradcam(model, x, [0, 1], interpolate="none")
    assert out.shape[1] > 3
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("arch, size", ARCHS)
def test_fullgrad_per_channel_matches_pytorch_grad_cam(zoo, arch, size):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x, t = zoo(arch), images(2, size, size), [1, 2]
    method = pytorch_grad_cam.FullGrad(model, [])
    try:
        theirs = method(input_tensor=x, targets=[ClassifierOutputTarget(i) for i in t])
    finally:
        method.activations_and_grads.release()
    ours = cv.fullgrad(model, x, t, per_channel=True)
    np.testing.assert_allclose(scale(ours[:, 0].numpy()), theirs, atol=1e-4)


def test_fullgrad_is_its_hand_computation_and_completeness_holds():
    # The paper's form by hand on a conv-BN-ReLU net with a linear head: every term by plain
    # autograd; and the full-gradient completeness f(x) = dy/dx . x + sum dy/db . b.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
        model[1].bias.uniform_(-1, 1)
    model.eval()
    x = images(2, 8, 8).requires_grad_(True)
    z1 = model[0](x)
    z2 = model[1](z1)
    y = model[2:](z2)
    s = y[torch.arange(2), torch.tensor([0, 2])]
    gx, g1, g2 = torch.autograd.grad(s.sum(), [x, z1, z2])
    bn = model[1]
    b2 = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b1 = model[0].bias

    def psi(m):
        m = m.abs()
        m = m - m.amin(dim=(1, 2, 3), keepdim=True)
        m = m / (m.amax(dim=(1, 2, 3), keepdim=True) + 1e-7)
        return nn.functional.interpolate(m, size=(8, 8), mode="bilinear").sum(1, keepdim=True)

    bias_terms = [g1 * b1[None, :, None, None], g2 * b2[None, :, None, None]]
    expected = psi(gx * x) + sum(psi(t) for t in bias_terms)
    ours = cv.fullgrad(model, x.detach(), [0, 2])
    torch.testing.assert_close(ours, expected.detach(), rtol=1e-10, atol=1e-12)
    total = (gx * x).sum((1, 2, 3)) + sum(t.sum((1, 2, 3)) for t in bias_terms) \
        + model[5].bias[[0, 2]]
    torch.testing.assert_close(total, s.detach())


# -- several layers -------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_list_of_layers_fuses_their_upsampled_maps(zoo):
    model, x, t = zoo("resnet18"), images(2, 64, 64), [1, 2]
    maps = [base.layercam(model, x, t, layer=n) for n in ("layer2", "layer3", "layer4")]
    stacked = torch.stack(maps)
    layers = ["layer2", "layer3", "layer4"]
    torch.testing.assert_close(base.layercam(model, x, t, layer=layers), stacked.mean(0))
    torch.testing.assert_close(base.layercam(model, x, t, layer=layers, fuse="max"),
                               stacked.amax(0))
    torch.testing.assert_close(base.layercam(model, x, t, layer=layers, fuse="product"),
                               stacked.prod(0))
    norm = base.layercam(model, x, t, layer=layers, normalize=True)
    each = torch.stack([base.layercam(model, x, t, layer=n, normalize=True) for n in layers])
    torch.testing.assert_close(norm, base._minmax(each.mean(0)))
    with pytest.raises(ValueError, match="cannot be fused"):
        base.layercam(model, x, t, layer=layers, interpolate="none")
    with pytest.raises(ValueError, match="fuse must be one of"):
        base.layercam(model, x, t, layer=layers, fuse="sum")


@pytest.mark.slow
def test_a_glob_is_every_matching_map_layer(zoo):
    model, x, t = zoo("resnet18"), images(1, 64, 64), [3]
    names = [n for n in FlatModel(model).layer_names if n.startswith("layer4.1.")]
    assert len(names) >= 5
    torch.testing.assert_close(base.gradcam(model, x, t, layer="layer4.1.*"),
                               base.gradcam(model, x, t, layer=names))
    with pytest.raises(ValueError, match="matches no layer"):
        base.gradcam(model, x, t, layer="head.*")


# -- aug_smooth and eigen_smooth -----------------------------------------------------------------
@pytest.mark.slow
def test_aug_smooth_is_the_mean_of_the_augmented_maps_mapped_back(zoo):
    model, x, t = zoo("resnet18"), images(2, 64, 64), [1, 2]
    maps = []
    for flip, factor in base.AUGMENTATIONS:
        xa = (x * factor).flip(-1) if flip else x * factor
        m = base.gradcam_pp(model, xa, t)
        maps.append(m.flip(-1) if flip else m)
    assert len(maps) == 6
    torch.testing.assert_close(base.gradcam_pp(model, x, t, aug_smooth=True),
                               torch.stack(maps).mean(0))
    # the predicted class is fixed on the clean image, not re-predicted per augmentation
    top = model(x).argmax(1)
    torch.testing.assert_close(base.gradcam_pp(model, x, None, aug_smooth=True),
                               base.gradcam_pp(model, x, top, aug_smooth=True))


@pytest.mark.slow
def test_aug_smooth_matches_pytorch_grad_cam(zoo):
    model, x, t = zoo("resnet18"), images(2, 64, 64), [1, 2]
    theirs = grad_cam("GradCAM", model, "layer3", x, t, aug_smooth=True)
    ours = base.gradcam(model, x, t, layer="layer3", interpolate="none", normalize=True,
                        aug_smooth=True)
    np.testing.assert_allclose(ours[:, 0].numpy(), scale(theirs), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("arch, size", ARCHS)
def test_eigen_smooth_matches_pytorch_grad_cam_up_to_its_sign(zoo, arch, size):
    model, x, t = zoo(arch), images(2, size, size), [1, 2]
    layer = LAST[arch] if arch != "resnet18" else "layer3"
    for cls, fn in (("GradCAM", base.gradcam), ("LayerCAM", base.layercam)):
        theirs = grad_cam(cls, model, layer, x, t, eigen_smooth=True)
        raw = fn(model, x, t, layer=layer, interpolate="none", relu=False, eigen_smooth=True)
        for b in range(2):  # LAPACK's sign is arbitrary, per image
            errors = [np.abs(like_grad_cam(sign * raw[b:b + 1].clamp(min=0) if sign > 0 else
                                           (-raw[b:b + 1]).clamp(min=0))[0] - theirs[b]).max()
                      for sign in (1, -1)]
            assert min(errors) < 1e-4, (cls, b, errors)


def test_eigen_smooth_is_the_projection_of_the_contributions(zoo):
    model, x, t = zoo("resnet18"), images(2, 64, 64), [1, 2]
    fm = FlatModel(model)
    ours = base.hirescam(fm, x, t, layer="layer3", interpolate="none", relu=False,
                         eigen_smooth=True)
    a, g, _ = base._layer_maps(fm, x, t, "layer3", gradients=True, batch_size=2)
    m = g * a
    for b in range(2):
        rows = m[b].flatten(1).T
        rows = rows - rows.mean(0)
        v = torch.linalg.svd(rows, full_matrices=False).Vh[0]
        v = v if v.sum() >= 0 else -v
        torch.testing.assert_close(ours[b, 0].flatten(), rows @ v, rtol=1e-8, atol=1e-10)


# -- every variant and option: ViT tokens, targets, side effects ----------------------------------
ALL = sorted(set(cv.__all__) - {"class_activation_map", "fullgrad"}) + [
    "gradcam", "hirescam", "gradcam_pp", "xgradcam", "layercam", "eigencam", "scorecam"]
CHEAP = {"randomcam": {"generator": 0}, "sscam": {"n": 1, "generator": 0}, "iscam": {"n": 1},
         "smoothgradcam_pp": {"n": 1, "generator": 0}}
OPTIONS = [{"aug_smooth": True}, {"eigen_smooth": True}, {"fuse": "max"}]


def call(name: str, model: nn.Module, x: torch.Tensor, target: Any, **extra: Any) -> torch.Tensor:
    fn = getattr(cv, name, None) or getattr(base, name)
    opts = dict(CHEAP.get(name, {}), **extra)
    if isinstance(opts.get("generator"), int):
        opts["generator"] = torch.Generator().manual_seed(opts["generator"])
    return fn(model, x, target, **opts)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_every_cam_and_option_on_vit_tokens(name):
    vit = tiny_vit(hidden_dim=16, mlp_dim=32, head_std=0.5)
    before = model_state(vit)
    x = images(2, 32, 32)
    layers = ["encoder.layers.encoder_layer_0.ln_1", "encoder.layers.encoder_layer_1.ln_1"]
    for opts in OPTIONS:
        layer = layers if "fuse" in opts else layers[1]
        out = call(name, vit, x, [1, 2], layer=layer, **opts)
        assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()
        assert out.abs().sum() > 0 or name == "randomcam"
    assert_untouched(vit, before)
    assert cv.fullgrad(vit, x, [1, 2]).shape == (2, 1, 32, 32)
    assert_untouched(vit, before)


@pytest.mark.parametrize("name", sorted(NEW) + ["fullgrad"])
def test_new_cams_on_vit_tokens_and_k_targets(name):
    vit = tiny_vit(hidden_dim=16, mlp_dim=32, head_std=0.5)
    before = model_state(vit)
    x = images(2, 32, 32)
    layer = {} if name == "fullgrad" else {"layer": "encoder.layers.encoder_layer_1.ln_1"}
    out = call(name, vit, x, [1, 2], **layer)
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all() and out.abs().sum() > 0
    k = call(name, vit, x, nl.targets.TopK(2), **layer)
    top = vit(x).topk(2, dim=1).indices
    assert k.shape == (2, 2, 1, 32, 32)
    for j in range(2):
        torch.testing.assert_close(k[:, j], call(name, vit, x, top[:, j], **layer),
                                   rtol=1e-9, atol=1e-12)
    assert_untouched(vit, before)


@pytest.mark.parametrize("name", sorted(NEW) + ["fullgrad", "gradcam"])
@pytest.mark.parametrize("opts", [{}, {"aug_smooth": True}, {"eigen_smooth": True}])
def test_batches_equal_single_images_and_k_targets(name, opts):
    if name == "fullgrad" and opts:
        pytest.skip("fullgrad reads no layer and takes no CAM option")
    model, x = small_cnn(), images(3, 12, 10)
    batched = call(name, model, x, [0, 3, 1], batch_size=2, **opts)
    single = torch.cat([call(name, model, x[i:i + 1], [0, 3, 1][i], **opts) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-9, atol=1e-12)
    k = call(name, model, x, nl.targets.TopK(2), **opts)
    top = model(x).topk(2, dim=1).indices
    for j in range(2):
        torch.testing.assert_close(k[:, j], call(name, model, x, top[:, j], **opts),
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(NEW) + ["fullgrad"])
def test_contract_of_the_new_cams(name, untouched):
    model = small_cnn()
    x = images(2, 12, 10)
    with untouched(model):
        out = call(name, model, x, [0, 1])
        with pytest.raises(ValueError, match="out of range"):
            call(name, model, x, 10**6)
        with pytest.raises(ValueError, match="NaN"):
            call(name, model, torch.full_like(x, float("nan")), 0)
    with torch.no_grad():
        torch.testing.assert_close(call(name, model, x, [0, 1]), out)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        call(name, model, x, [0, 1])


# ok = 1: the first pass fails; ok = 3: a later pass (an augmented copy, a second layer, Finer-
# CAM's augmented copies after its comparison classes were fixed on the clean images) fails
@pytest.mark.parametrize("name, opts, ok", [(n, {}, 1) for n in sorted(NEW) + ["fullgrad"]] + [
    ("finercam", {"aug_smooth": True}, 3), ("gradcam", {"aug_smooth": True}, 3),
    ("gradcam", {"layer": ["conv1", "conv2"]}, 2)])
@pytest.mark.filterwarnings("ignore:the model is in training mode")
def test_model_untouched_when_the_forward_raises(name, opts, ok, untouched):
    torch.manual_seed(0)
    model = Flaky(ok).double().train()
    with untouched(model), pytest.raises(RuntimeError, match="a layer failed"):
        call(name, model, images(2, 12, 10), [0, 1], batch_size=2, **opts)


def test_shapleycam_hvp_by_difference_equals_double_backward():
    """Shapley-CAM's Hessian-vector product on a model whose layers torch cannot differentiate
    twice (MobileNet v3's Hardsigmoid) is the central difference of the gradient along A; on a
    tanh net, where double backward exists, the two agree to 1e-8 relative."""
    from netlens.attribution import cam as C
    from netlens.targets import as_target

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1),
                          nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(5, 3)).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    fm = FlatModel(model)
    fm.ensure_traced(x)
    target = as_target([0, 2], 2).bind(model(x))
    _, exact = C._hvp_pass(fm, "2", x, target)
    with fm.record(["2"]) as rec:
        model(x)
    by_difference = C._hvp_by_difference(fm, "2", x, target, 0, rec.activations["2"])
    assert exact.abs().max() > 1e-4
    torch.testing.assert_close(by_difference, exact, rtol=0, atol=1e-8 * exact.abs().max())
