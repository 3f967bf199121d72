"""Occlusion by hand on linear models (CONTRIBUTING.md test A6), against Captum, and its
contracts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from netlens._util import NetlensWarning
from netlens.attribution.occlusion import default_window, occlusion
from netlens.flat_model import FlatModel

from helpers import SmallCNN, small_cnn


class Linear(nn.Module):
    """f(x)_k = sum(w_k * x): class 0 uses w, class 1 uses -w."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.stack([w, -w]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kchw->bk", x, self.w)


def linear(c: int, h: int, w: int, seed: int = 0) -> tuple[Linear, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(c, h, w, generator=g, dtype=torch.float64)
    x = torch.randn(2, c, h, w, generator=g, dtype=torch.float64)
    return Linear(weight).eval(), x


def test_one_pixel_window_is_weight_times_difference():
    model, x = linear(3, 4, 6)
    base = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).view(1, 3, 1, 1)
    out = occlusion(model, x, 0, window=1, stride=1, baseline=base)
    expected = (model.w[0] * (x - base)).sum(1, keepdim=True)
    assert out.shape == (2, 1, 4, 6) and out.dtype == torch.float64
    torch.testing.assert_close(out, expected.detach(), rtol=1e-12, atol=1e-12)
    # the other class flips the sign; a float baseline works too
    out1 = occlusion(model, x, 1, window=1, stride=1, baseline=0.25)
    torch.testing.assert_close(out1, -(model.w[0] * (x - 0.25)).sum(1, keepdim=True).detach())


def test_tiled_windows_give_window_sums():
    model, x = linear(2, 4, 6)
    out = occlusion(model, x, [0, 1], window=2, stride=2)
    u = (model.w[0] * x).sum(1, keepdim=True).detach()  # (2, 1, 4, 6)
    sums = u.reshape(2, 1, 2, 2, 3, 2).sum(dim=(3, 5))  # 2x2 blocks
    expected = sums.repeat_interleave(2, 2).repeat_interleave(2, 3)
    expected[1] = -expected[1]
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def one_row(values: list[float]) -> tuple[Linear, torch.Tensor]:
    """A 1x1xW image x with weights 1: the drop of a window is the sum of x inside it."""
    w = torch.ones(1, 1, len(values), dtype=torch.float64)
    return Linear(w).eval(), torch.tensor(values, dtype=torch.float64).view(1, 1, 1, -1)


def test_overlapping_windows_average_by_hand():
    model, x = one_row([1, 2, 3, 4])
    # windows [0,1], [1,2], [2,3] drop 3, 5, 7; pixel 1 averages 3 and 5, pixel 2 5 and 7
    out = occlusion(model, x, 0, window=(1, 2), stride=1)
    assert out.flatten().tolist() == pytest.approx([3, 4, 6, 7])
    model, x = one_row([1, 2, 3, 4, 5])
    # stride 2: windows [0,1], [2,3] and [4] (cut off at the border) drop 3, 7, 5
    out = occlusion(model, x, 0, window=(1, 2), stride=(1, 2))
    assert out.flatten().tolist() == pytest.approx([3, 3, 7, 7, 5])
    # window 3, stride 2: windows [0-2], [2-4] drop 6 and 12; pixel 2 is in both
    out = occlusion(model, x, 0, window=(1, 3), stride=(1, 2))
    assert out.flatten().tolist() == pytest.approx([6, 6, 9, 12, 12])
    # stride > window leaves gaps, which get 0: windows [0] and [3]
    out = occlusion(model, x, 0, window=1, stride=3)
    assert out.flatten().tolist() == pytest.approx([1, 0, 0, 4, 0])


def test_two_dimensional_overlap_by_hand():
    w = torch.ones(1, 3, 3, dtype=torch.float64)
    model = Linear(w).eval()
    x = torch.arange(1.0, 10.0, dtype=torch.float64).view(1, 1, 3, 3)
    # 2x2 windows, stride 1: drops 12 (top left), 16, 24, 28; the centre is in all four.
    out = occlusion(model, x, 0, window=2, stride=1)[0, 0]
    expected = torch.tensor([[12, 14, 16], [18, 20, 22], [24, 26, 28]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("kwargs, arg", [
    ({"window": 0}, "window"), ({"window": (2, -1)}, "window"), ({"window": (2, 2, 2)}, "window"),
    ({"window": 2.5}, "window"), ({"window": (5, 2)}, "window"), ({"window": (2, 7)}, "window"),
    ({"stride": 0}, "stride"), ({"stride": (1, -2)}, "stride"), ({"stride": "2"}, "stride"),
    ({"baseline": torch.zeros(3, 1, 1)}, "baseline")])
def test_bad_arguments_name_the_argument(kwargs, arg, untouched):
    model, x = linear(2, 4, 6)
    with untouched(model), pytest.raises(ValueError, match=arg):
        occlusion(model, x, 0, **{"window": 2, "stride": 1, **kwargs})


# -- Captum ----------------------------------------------------------------------------------
# The small CNN of the Captum and contract checks: a max-pooled head (a non-linear score of the
# occluded images), a stride-2, padding-free second convolution.
CNN = {"inplace": False, "padding": (1, 0), "pool": "max"}


def images(batch: int, h: int, w: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, h, w, generator=g).to(dtype)


def captum_occlusion(model, x, t, window, stride, baseline):
    from captum.attr import Occlusion

    c = x.shape[1]
    attr = Occlusion(model).attribute(x, sliding_window_shapes=(c, *window),
                                      strides=(c, *stride), baselines=baseline, target=t,
                                      perturbations_per_eval=16)
    assert torch.equal(attr[:, :1].expand_as(attr), attr)  # the same for every channel
    return attr[:, :1].to(x.dtype)


@pytest.mark.parametrize("window, stride", [((3, 3), (2, 2)), ((4, 5), (3, 2)), ((13, 2), (4, 1))])
def test_matches_captum_on_a_small_cnn(window, stride):
    model = small_cnn(**CNN)
    x, t = images(2, 13, 11), [1, 3]
    theirs = captum_occlusion(model, x, t, window, stride, 0.3)
    ours = occlusion(model, x, t, window=window, stride=stride, baseline=0.3, batch_size=9)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
    assert (ours - theirs).abs().max() < 1e-6  # Captum returns float32


@pytest.mark.slow
def test_matches_captum_on_resnet18():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().double().eval()
    x, t = images(2, 32, 40), [3, 7]
    base = x.mean(dim=(2, 3), keepdim=True)  # a tensor baseline
    theirs = captum_occlusion(model, x, t, (16, 16), (8, 12), base)
    ours = occlusion(model, x, t, window=16, stride=(8, 12), baseline=base)
    assert ours.shape == (2, 1, 32, 40)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


# -- contracts -------------------------------------------------------------------------------
def test_batch_size_invariance_and_batch_equals_single_calls():
    model = small_cnn(**CNN)
    x, t = images(5, 13, 11), [0, 3, 1, 2, 3]
    ref = occlusion(model, x, t, window=5, stride=4, batch_size=1000)
    for bs in (1, 7):
        torch.testing.assert_close(occlusion(model, x, t, window=5, stride=4, batch_size=bs),
                                   ref, rtol=1e-12, atol=1e-14)
    single = torch.cat([occlusion(model, x[i:i + 1], t[i], window=5, stride=4)
                        for i in range(5)])
    torch.testing.assert_close(ref, single, rtol=1e-12, atol=1e-14)
    argmax = model(x).argmax(1)
    torch.testing.assert_close(occlusion(model, x, window=5, stride=4),
                               occlusion(model, x, argmax, window=5, stride=4))


def test_contracts(untouched):
    model = small_cnn(dtype=torch.float32, **CNN)
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        x = images(2, 13, 11, dtype)
        with untouched(model):
            out = occlusion(model, x, [0, 1], window=4, stride=2)
        assert out.shape == (2, 1, 13, 11) and out.dtype == dtype
        assert torch.isfinite(out).all() and out.abs().sum() > 0
    with untouched(model), pytest.raises(ValueError, match="out of range"):
        occlusion(model, x, 10**6, window=4, stride=2)
    with torch.no_grad():
        torch.testing.assert_close(occlusion(model, x, [0, 1], window=4, stride=2), out)
    torch.testing.assert_close(occlusion(FlatModel(model), x, [0, 1], window=4, stride=2), out)
    # train mode works too (the CNN has no dropout or batch norm, so the map is the same)
    model.train()
    with untouched(model):
        torch.testing.assert_close(occlusion(model, x, [0, 1], window=4, stride=2), out)


class Flaky(SmallCNN):
    """Runs twice (layer discovery and the unoccluded pass), then raises inside its forward."""

    def __init__(self) -> None:
        super().__init__(**CNN)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 2:
            self.conv1(x)
            raise RuntimeError("a layer failed")
        return super().forward(x)


def test_model_untouched_when_the_forward_raises(untouched):
    torch.manual_seed(0)
    model = Flaky().double().eval()
    with untouched(model), pytest.raises(RuntimeError, match="a layer failed"):
        occlusion(model, images(2, 13, 11), [0, 1], window=4, stride=2)


def test_default_window_scales_with_the_image():
    assert default_window(224, 224) == (32, 16)
    assert default_window(64, 64) == (9, 4)
    assert default_window(32, 32) == default_window(28, 28) == (4, 2)
    assert default_window(150, 128) == (18, 9)  # the shorter side
    assert default_window(8, 8) == (2, 1) and default_window(1, 5) == (1, 1)
    assert default_window(64, 64, (8, 16)) == ((8, 16), 4)  # a given window: half its short side


@pytest.mark.parametrize("size", [28, 32, 64])
def test_default_map_of_a_small_image_has_detail(size):
    model = small_cnn()
    x = torch.rand(2, 3, size, size, dtype=torch.float64,
                   generator=torch.Generator().manual_seed(size))
    attr = occlusion(model, x, 1)
    window, stride = default_window(size, size)
    torch.testing.assert_close(attr, occlusion(model, x, 1, window=window, stride=stride))
    # not one value per image (the old 32-pixel default covered a 32 px image whole)
    assert (attr.flatten(1).std(1) > 0).all()


def test_a_window_covering_the_whole_image_warns():
    model = small_cnn()
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    with pytest.warns(NetlensWarning, match=r"covers the whole 16x16 image.*smaller window"):
        attr = occlusion(model, x, 0, window=16)
    assert attr.unique().numel() == 1


def _hand_occlusion(model, x, window, value=0.0):
    """Netlens 1.x's occlusion as a loop: each non-overlapping window set to ``value``; the
    softmax probabilities (B, C) and the predicted class of every occluded copy, window grid
    (rows, cols) with the window's top-left corner at (i * window, j * window)."""
    _, _, h, w = x.shape
    rows, cols = -(-h // window), -(-w // window)
    probs = torch.empty(x.shape[0], rows, cols, model(x).shape[1],
                        dtype=x.dtype)
    with torch.no_grad():
        for i in range(rows):
            for j in range(cols):
                occluded = x.clone()
                occluded[..., i * window:(i + 1) * window, j * window:(j + 1) * window] = value
                probs[:, i, j] = model(occluded).softmax(-1)
    return probs


def test_probability_map_and_class_map_equal_the_original_loop():
    """score="probability" and return_classes=True are Netlens 1.x's occlusion heat map (the
    target's probability under occlusion, each window filled with its value) and class map
    (the argmax class per window), here on a 3-class CNN with windows that tile a 12x10 image
    (the last column of windows cut off at the border)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 12 * 10, 3)).double().eval()
    x = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    probs = _hand_occlusion(model, x, 4)
    target = [2, 0]
    heat, classes = occlusion(model, x, target, window=4, stride=4, score="probability",
                              return_classes=True, batch_size=5)
    assert heat.shape == (2, 1, 12, 10) and classes.shape == (2, 3, 3)
    assert classes.dtype == torch.int64 and torch.equal(classes, probs.argmax(-1))
    for b, t in enumerate(target):
        window_values = probs[b, :, :, t]  # (3, 3): each window's probability of the target
        filled = window_values.repeat_interleave(4, 0).repeat_interleave(4, 1)[:12, :10]
        torch.testing.assert_close(heat[b, 0], filled, rtol=0, atol=1e-12)
    # the probabilities do vary across windows, so the comparison can fail
    assert float(probs[..., 2].std()) > 1e-4
    # the class map alone leaves the drop map as it was
    drop, again = occlusion(model, x, target, window=4, stride=4, return_classes=True)
    assert torch.equal(again, classes)
    assert torch.equal(drop, occlusion(model, x, target, window=4, stride=4))


def test_probability_and_class_map_errors_name_the_fix():
    model, x = linear(1, 4, 4)
    with pytest.raises(ValueError, match="score must be 'drop' or 'probability'"):
        occlusion(model, x, 0, window=2, score="prob")
    seg = nn.Conv2d(1, 2, 1).double()
    from netlens.targets import Segmentation

    with pytest.raises(ValueError, match="score='drop'"):
        occlusion(seg, x, Segmentation(1), window=2, score="probability")
    with pytest.raises(ValueError, match=r"needs \(B, classes\) logits"):
        occlusion(seg, x, Segmentation(1), window=2, return_classes=True)
