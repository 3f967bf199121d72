"""Extremal perturbations: the masks meet their areas, the preserved mask keeps more of the
score than random masks of its area (on a model whose evidence sits in a known region), the
mask generator's defining formula, layout for areas and K targets, batching, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import netlens as nl
from netlens.attribution.extremal import _Masks, extremal_perturbation
from netlens.attribution.path_methods import gaussian_blur

from helpers import assert_untouched, model_state, small_cnn

S = 32


class Texture(nn.Module):
    """Class 0: ten times the Laplacian energy of channel 0 inside ``region`` (any blur there
    lowers it); class 1: the same outside. The region is symmetric left-right, so the
    jitter's flips do not move it."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
        self.register_buffer("region", region)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e, r = self.conv(x)[:, 0] ** 2, self.region
        return 10 * torch.stack([(e * r).sum((1, 2)) / r.sum(),
                                 (e * (1 - r)).sum((1, 2)) / (1 - r).sum()], 1)


@pytest.fixture(scope="module")
def texture():
    region = torch.zeros(S, S, dtype=torch.float64)
    region[S // 8:S // 8 + S // 4, 3 * S // 8:5 * S // 8] = 1  # 1/16 of the image
    model = Texture(region).double().eval()
    x = torch.rand(1, 3, S, S, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return model, x, region


@pytest.mark.slow
def test_areas_met_and_the_mask_beats_random_masks(texture):
    model, x, region = texture
    areas = (0.05, 0.1, 0.2)
    masks = extremal_perturbation(model, x, 0, areas=areas, steps=400)
    assert masks.shape == (1, 3, S, S) and masks.min() >= 0 and masks.max() <= 1
    for i, a in enumerate(areas):
        assert abs(float(masks[0, i].mean()) - a) < 0.02  # measured: 0.014, 0.010, 0.011
    # the region holds the evidence: the smallest mask lies mostly inside it
    assert float((masks[0, 0] * region).sum() / masks[0, 0].sum()) > 0.5
    blurred = gaussian_blur(x, 20 * S / 224, padding="reflect")  # the pyramid's level 0
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i, a in enumerate(areas):
            count = int(a * S * S)

            def keep(index):
                m = torch.zeros(1, S * S, dtype=x.dtype).scatter_(1, index, 1.0)
                m = m.view(1, 1, S, S)
                return float(model(m * x + (1 - m) * blurred)[0, 0])

            ours = keep(masks[0, i].flatten()[None].topk(count).indices)
            chance = [keep(torch.rand(1, S * S, generator=g).topk(count).indices)
                      for _ in range(10)]
            assert ours > max(chance), (a, ours, chance)


def test_mask_generator_is_the_smooth_max_convolution():
    """Each pixel: the softmax-pooled (coldness 20) max over nearby cells n of
    k(|u - c_n| / sigma) p_n, k(z) = exp(-2 max(z - 1/2, 0)^2), c_n the cells' centres."""
    stride, sigma, h, w = 3, 4.0, 7, 8
    gen = _Masks(h, w, stride, sigma, torch.float64, torch.device("cpu"))
    p = torch.rand(1, 1, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = gen(p)[0, 0]
    r = 1 + math.ceil(sigma / stride)
    for y in range(h):
        for x in range(w):
            values = []
            for i in range(y // stride - r, y // stride + r + 1):
                for j in range(x // stride - r, x // stride + r + 1):
                    inside = 0 <= i < 3 and 0 <= j < 3
                    c = ((i + 0.5) * stride - 0.5, (j + 0.5) * stride - 0.5)
                    z = math.hypot(y - c[0], x - c[1]) / sigma
                    values.append(math.exp(-2 * max(z - 0.5, 0) ** 2)
                                  * (float(p[0, 0, i, j]) if inside else 0.0))
            v = torch.tensor(values, dtype=torch.float64)
            want = float((v * torch.softmax(20 * v, 0)).sum().clamp(0, 1))
            assert abs(float(out[y, x]) - want) < 1e-12


def test_layout_targets_and_batching():
    model = small_cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3),
                   dtype=torch.float64)
    one = extremal_perturbation(model, x, [1, 2], steps=6)
    assert one.shape == (2, 1, 16, 16) and one.dtype == x.dtype
    both = extremal_perturbation(model, x, [1, 2], areas=(0.1, 0.3), steps=6, batch_size=3)
    assert both.shape == (2, 2, 16, 16)
    assert torch.allclose(both[:, :1], one, rtol=1e-10, atol=1e-12)  # runs are independent
    alone = extremal_perturbation(model, x[1:], [2], steps=6)
    assert torch.allclose(alone, one[1:], rtol=1e-10, atol=1e-12)
    top = extremal_perturbation(model, x, nl.targets.TopK(2), areas=(0.1, 0.3), steps=6)
    assert top.shape == (2, 2, 2, 16, 16)
    classes = model(x).topk(2).indices
    second = extremal_perturbation(model, x, classes[:, 1], areas=(0.1, 0.3), steps=6)
    assert torch.allclose(top[:, 1], second, rtol=1e-10, atol=1e-12)
    for variant in ("delete", "dual"):
        out = extremal_perturbation(model, x, 1, steps=3, variant=variant)
        assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()


def test_model_untouched_and_no_grad():
    model = small_cnn().train()
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    before = model_state(model)
    with torch.no_grad(), pytest.warns(nl.attribution.NetlensWarning, match="training mode"):
        out = extremal_perturbation(model, x, 1, steps=3)
    assert torch.isfinite(out).all()
    assert_untouched(model, before)


@pytest.mark.parametrize("kwargs, match", [
    ({"areas": 0.0}, r"in \(0, 1\)"),
    ({"areas": (0.1, 1.0)}, r"in \(0, 1\)"),
    ({"areas": ()}, "a number in"),
    ({"steps": 0}, "steps must be an int >= 1"),
    ({"variant": "keep"}, "variant must be"),
    ({"stride": 0}, "stride must be an int >= 1"),
    ({"sigma": 0.0}, "must be > 0"),
    ({"levels": 1}, "levels must be an int >= 2"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        extremal_perturbation(small_cnn(), torch.rand(1, 3, 8, 8, dtype=torch.float64), 1,
                              **kwargs)


def test_target_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        extremal_perturbation(small_cnn(), torch.rand(1, 3, 8, 8, dtype=torch.float64), 10**6,
                              steps=2)
