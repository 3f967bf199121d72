"""Deep feature factorization (issue 18): the factorization against an exact low-rank matrix and
scikit-learn's NMF, the pipeline against pytorch-grad-cam's ``DeepFeatureFactorization`` given
the same factorization, ground truth on the shapes model, token layers, errors, the plot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

import netlens as nl
from netlens.attribution.factorization import Factorization, deep_feature_factorization, nmf
from netlens.data import make_shapes
from netlens.zoo import shapes_model

from helpers import assert_untouched, model_state, tiny_vit


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def test_nmf_recovers_an_exact_low_rank_matrix():
    g = torch.Generator().manual_seed(3)
    w, h = torch.rand(40, 4, generator=g), torch.rand(4, 60, generator=g)
    v = w @ h
    wf, hf = nmf(v, 4, iterations=3000, tol=1e-12)
    assert (wf >= 0).all() and (hf >= 0).all()
    assert float((v - wf @ hf).norm() / v.norm()) < 1e-4


def test_nmf_is_as_good_as_scikit_learns_on_real_activations(resnet):
    decomposition = pytest.importorskip("sklearn.decomposition")
    x = torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    box = []
    handle = resnet.layer4.register_forward_hook(lambda m, i, o: box.append(o.detach()))
    with torch.no_grad():
        resnet(x)
    handle.remove()
    a = box[0].permute(1, 0, 2, 3).reshape(512, -1)
    v = a - a.min(dim=1).values[:, None]
    for k in (3, 6):
        ref = decomposition.NMF(n_components=k, init="random", random_state=0, max_iter=400)
        w = ref.fit_transform(v.numpy())
        theirs = np.linalg.norm(v.numpy() - w @ ref.components_) / np.linalg.norm(v.numpy())
        wf, hf = nmf(v, k, iterations=400)
        ours = float((v - wf @ hf).norm() / v.norm())
        assert ours <= theirs * 1.01, (k, ours, theirs)


def test_equals_pytorch_grad_cams_dff_given_the_same_factorization(resnet, monkeypatch):
    """Their NMF (scikit-learn's) is replaced by ours: the concepts, the raw and scaled maps
    and the concepts' class scores must then be theirs."""
    module = pytest.importorskip(
        "pytorch_grad_cam.feature_factorization.deep_feature_factorization")

    class OurNMF:
        def __init__(self, n_components, **_):
            self.k = n_components

        def fit_transform(self, v):
            w, h = nmf(torch.from_numpy(np.ascontiguousarray(v)).double(), self.k)
            self.components_ = h.numpy()
            return w.numpy()

    monkeypatch.setattr(module, "NMF", OurNMF)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours = deep_feature_factorization(resnet, x, "layer4", 4, interpolate="none")
    concepts, scaled, scores = module.DeepFeatureFactorization(
        resnet, resnet.layer4, computation_on_concepts=resnet.fc)(x, 4)
    torch.testing.assert_close(ours.concepts, torch.from_numpy(concepts.T).float(),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.scores, torch.from_numpy(scores), rtol=1e-4, atol=1e-4)
    box = []
    handle = resnet.layer4.register_forward_hook(lambda m, i, o: box.append(o.detach()))
    with torch.no_grad():
        resnet(x)
    handle.remove()
    _, raw = module.dff(box[0].numpy(), 4)
    torch.testing.assert_close(ours.maps, torch.from_numpy(raw).float(), rtol=1e-4, atol=1e-5)
    lo = ours.maps.amin(dim=(-2, -1), keepdim=True)
    m = ours.maps - lo
    m = m / (1e-7 + m.amax(dim=(-2, -1), keepdim=True))
    resized = F.interpolate(m, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resized, torch.from_numpy(np.stack(scaled)), rtol=1e-4,
                               atol=1e-4)


def test_concepts_find_the_objects_of_their_class_on_the_shapes_model():
    """Four concepts over 200 shapes images: each concept's top class is one the model knows,
    and on the images of that class the concept's mass inside the object is at least three
    times the object's area (measured: 0.29, 0.24, 0.35, 0.26 against an area of 0.057),
    while the concepts name at least three of the four classes (measured: 2, 0, 3, 0)."""
    model, batch = shapes_model(), make_shapes(200, seed=123_457)
    f = deep_feature_factorization(model, batch.images, k=4)
    mask = batch.masks.float()
    area = float(mask.mean())
    mass = (f.maps * mask).sum((2, 3)) / f.maps.sum((2, 3)).clamp_min(1e-12)
    tops = [classes[0][0] for classes in f.top_classes(1)]
    assert len(set(tops)) >= 3, tops
    for j, c in enumerate(tops):
        on_class = float(mass[batch.labels == c, j].mean())
        assert on_class > 3 * area, (j, c, on_class, area)


def test_concepts_and_maps_reconstruct_each_images_activations(resnet):
    """The batch's activations, recorded separately, are rebuilt image by image from the shared
    concepts and that image's maps with the reported error: the maps belong to their image."""
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    f = deep_feature_factorization(resnet, x, "layer3", k=3, head=None, interpolate="none")
    assert f.concepts.shape == (3, 256) and f.maps.shape == (3, 3, 4, 4)
    assert (f.maps >= 0).all()
    box = []
    handle = resnet.layer3.register_forward_hook(lambda m, i, o: box.append(o.detach()))
    with torch.no_grad():
        resnet(x)
    handle.remove()
    a = box[0]
    offset = a.amin(dim=(0, 2, 3))
    shifted = a - offset[None, :, None, None]
    rebuilt = torch.einsum("bkhw,kc->bchw", f.maps, f.concepts - offset)
    error = float((shifted - rebuilt).norm() / shifted.norm())
    assert error == pytest.approx(f.error, rel=1e-4) and error < 0.9
    per_image = [(shifted[i] - rebuilt[i]).norm() / shifted[i].norm() for i in range(3)]
    swapped = (shifted[0] - rebuilt[1]).norm() / shifted[0].norm()
    assert swapped > per_image[0]


def test_a_vit_token_layer_is_factorized_on_its_patch_grid():
    fm = nl.FlatModel(tiny_vit())
    layer = [n for n in fm.layer_names if n.endswith("encoder_layer_1")][0]
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    f = deep_feature_factorization(fm, x, layer, k=3, head=None)
    assert f.maps.shape == (2, 3, 32, 32) and f.scores is None
    g = deep_feature_factorization(fm, x, layer, k=3, head=None, interpolate="none")
    assert g.maps.shape == (2, 3, 4, 4)  # the 4 x 4 patch grid, class token left out


def test_a_head_function_scores_the_concepts(resnet):
    f = deep_feature_factorization(resnet, torch.rand(1, 3, 64, 64), k=2,
                                   head=lambda c: c[:, :5] * 2)
    torch.testing.assert_close(f.scores, f.concepts[:, :5] * 2)


def test_bad_input_gets_a_clear_error_and_the_model_is_untouched(resnet):
    before = model_state(resnet)
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="k must be"):
        deep_feature_factorization(resnet, x, k=0)
    with pytest.raises(ValueError, match="choose k <= 4"):
        deep_feature_factorization(resnet, x, "layer4", k=5)  # 1 image x 2 x 2 positions
    with pytest.raises(ValueError, match="head must be"):
        deep_feature_factorization(resnet, x, k=2, head="fc")
    vgg = torchvision.models.vgg11().eval()
    with pytest.raises(ValueError, match="head=None"):
        deep_feature_factorization(vgg, x, "features.18", k=2)
    assert deep_feature_factorization(vgg, x, "features.18", k=2, head=None).scores is None
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    with pytest.raises(ValueError, match="no nn.Linear is called after"):
        deep_feature_factorization(conv, x, k=2)
    with pytest.raises(ValueError, match="non-negative"):
        nmf(-torch.ones(3, 3), 1)
    assert_untouched(resnet, before)


def test_the_plot_paints_each_pixel_with_its_strongest_concept():
    image = torch.zeros(3, 4, 4)
    maps = torch.zeros(2, 4, 4)
    maps[0, :, :2] = 1.0  # concept 0 owns the left half, concept 1 the right
    maps[1, :, 2:] = 0.5
    out = nl.plot.factorization_overlay(image, maps, alpha=1.0, cmap="hsv", mean=None, std=None)
    import matplotlib
    hsv = matplotlib.colormaps["hsv"]
    np.testing.assert_allclose(out[0, 0], hsv(0.0)[:3], atol=1e-6)
    np.testing.assert_allclose(out[0, 3], hsv(0.5)[:3], atol=1e-6)  # scaled by its own max
    resnet = torchvision.models.resnet18().eval()
    x = torch.rand(2, 3, 64, 64)
    f = deep_feature_factorization(resnet, x, k=3)
    assert isinstance(f, Factorization)
    fig = nl.plot.show_factorization(x, f, mean=None, std=None)
    assert len(fig.axes) == 4
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(legend) == 3 and all(t.startswith(f"concept {j}: ") for j, t in enumerate(legend))
