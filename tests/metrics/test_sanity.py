"""Sanity checks (Adebayo et al. 2018): model-parameter randomization (CONTRIBUTING.md test
E16; first asked for in issue #6)."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from netlens import metrics as M
from netlens.attribution import saliency
from netlens.data import make_shapes
from netlens.zoo import shapes_model

from helpers import small_cnn


def small_net() -> nn.Module:
    """helpers.small_cnn on one-channel 6 x 6 images: two 4-channel convolutions and a linear
    head over all 36 positions; its layers with parameters are conv1, conv2 and fc."""
    return small_cnn(3, in_channels=1, widths=(4, 4), inplace=False, stride=(1, 1), pool=None,
                     positions=36)


def test_layers_are_randomized_top_down_on_a_copy(untouched):
    net = small_net()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    trained = [p.detach().clone() for p in net.parameters()]
    seen: list[list[str]] = []

    def probe(model, x, target):
        """Saliency, and which layers of the model it was given differ from the trained one."""
        changed = [name for name, m in model.named_children()
                   if any(not torch.equal(p, q) for p, q in zip(
                       m.parameters(), (trained[i] for i, (n, _) in enumerate(
                           net.named_parameters()) if n.startswith(name + "."))))]
        seen.append(changed)
        return saliency(model, x, target)

    assert M.randomizable_layers(net, x) == ["conv1", "conv2", "fc"]
    for cascading, expected in ((True, [["fc"], ["conv2", "fc"], ["conv1", "conv2", "fc"]]),
                                (False, [["fc"], ["conv2"], ["conv1"]])):
        seen.clear()
        with untouched(net):
            r = M.model_randomization(net, x, 1, methods=[probe, "saliency"],
                                      cascading=cascading, progress=False,
                                      generator=torch.Generator().manual_seed(0))
        assert seen == [[], *expected]  # the trained model first, then each step
        assert r.layers == ["fc", "conv2", "conv1"] and r.cascading is cascading
        assert r.spearman["probe"].shape == (3, 2)
        assert torch.equal(r.spearman["probe"], r.spearman["saliency"])
    assert torch.equal(x, before)
    only_top = M.model_randomization(net, x, 1, methods=["saliency"], layers=["fc"],
                                     generator=torch.Generator().manual_seed(0))
    assert only_top.layers == ["fc"]


def test_randomization_is_seeded_and_measures_the_change():
    net = small_net()
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    runs = [M.model_randomization(net, x, 0, methods=["saliency", "centre"],
                                  generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert torch.equal(runs[0].spearman["saliency"], runs[1].spearman["saliency"])
    assert not torch.equal(runs[0].spearman["saliency"], runs[2].spearman["saliency"])
    default = [M.model_randomization(net, x, 0, methods=["saliency"]) for _ in range(2)]
    assert torch.equal(default[0].spearman["saliency"], default[1].spearman["saliency"])
    seeded_0 = M.model_randomization(net, x, 0, methods=["saliency"],
                                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(default[0].spearman["saliency"], seeded_0.spearman["saliency"])
    r = runs[0]
    # a map that ignores the model never changes: every similarity is 1
    for values in (r.spearman["centre"], r.spearman_abs["centre"], r.ssim["centre"]):
        assert torch.allclose(values, torch.ones_like(values))
    # the gradient of a fully random network has nothing to do with the trained one
    assert r.spearman["saliency"][-1].abs().mean() < 0.5
    assert r.mean("ssim")["centre"] == pytest.approx([1.0] * 3)
    fig = M.plot_randomization(r)
    assert isinstance(fig, Figure) and len(fig.axes) == 3


def test_bad_arguments():
    net = small_net()
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="cannot randomize"):
        M.model_randomization(net, x, 0, layers=["act1"])  # a ReLU has no parameters
    with pytest.raises(ValueError, match="unknown attribution method"):
        M.model_randomization(net, x, 0, methods=["vanilla"])
    with pytest.raises(ValueError, match="methods is empty"):
        M.model_randomization(net, x, 0, methods=[])


@pytest.mark.slow
def test_shapes_model_reproduces_adebayo(untouched):
    """Gradients and Grad-CAM forget the trained model once its top half is random; guided
    backprop stays markedly more similar.

    Measured here (signed Spearman, mean over these 12 images, lower half of the cascade):
    saliency at most -0.00, Grad-CAM at most 0.27 (mean 0.08); guided backprop 0.73 at the
    half-way step. Over 48 images (21 layers, top first), over the lower half of
    the cascade saliency -0.01 and Grad-CAM 0.08 on average, at most 0.00 and 0.28 at any step
    (Grad-CAM rises briefly when ``layer2.0.downsample.0`` is redrawn; 0.22-0.35 on subsets of
    16 images); guided backprop 0.73 at the half-way step, 0.05 only when ``conv1`` goes too.
    """
    model = shapes_model()
    batch = make_shapes(12, seed=99_001)
    with untouched(model):
        r = M.model_randomization(model, batch.images, batch.labels,
                                  # named on purpose: the methods of Adebayo's finding
                                  methods=["saliency", "gradcam", "guided_backprop"],
                                  generator=torch.Generator().manual_seed(0), progress=False)
    half = len(r.layers) // 2  # from step `half` on, more than half of the layers are random
    mean = {m: torch.tensor(v) for m, v in r.mean("spearman").items()}
    print({m: [round(float(a), 2) for a in v] for m, v in mean.items()})
    for method in ("saliency", "gradcam"):
        assert (mean[method][half:] < 0.3).all(), method  # required: below 0.3 at each step
        assert mean[method][half:].mean() < 0.15, method
        assert mean[method][-1].abs() < 0.15, method
    gbp = mean["guided_backprop"][half]
    assert gbp > 0.5
    assert gbp > mean["saliency"][half] + 0.3 and gbp > mean["gradcam"][half] + 0.3
    ssim = {m: v[half] for m, v in r.mean("ssim").items()}
    assert ssim["guided_backprop"] > max(ssim["saliency"], ssim["gradcam"])
