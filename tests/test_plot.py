from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from netlens import plot  # noqa: E402
from netlens.image import load, to_numpy  # noqa: E402


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_positive_negative_saliency_hand_made():
    attr = torch.tensor(
        [
            [[[2.0, -1.0], [1.0, -4.0]]],
            [[[0.0, 0.0], [0.0, 0.0]]],
            [[[3.0, 1.5], [0.0, 0.0]]],
        ]
    )
    pos, neg = plot.positive_negative_saliency(attr)
    assert pos.shape == neg.shape == attr.shape
    assert torch.equal(pos[0], torch.tensor([[[1.0, 0.0], [0.5, 0.0]]]))
    assert torch.equal(neg[0], torch.tensor([[[0.0, 0.25], [0.0, 1.0]]]))
    assert torch.equal(pos[1], torch.zeros(1, 2, 2))  # all-zero map: no NaN
    assert torch.equal(neg[1], torch.zeros(1, 2, 2))
    assert torch.equal(pos[2], torch.tensor([[[1.0, 0.5], [0.0, 0.0]]]))
    assert torch.equal(neg[2], torch.zeros(1, 2, 2))  # no negative part


def test_positive_negative_saliency_single_image_and_per_image_max():
    attr = torch.randn(3, 5, 5, generator=_gen(), dtype=torch.float64)
    pos, neg = plot.positive_negative_saliency(attr)
    assert pos.dtype == torch.float64
    assert torch.allclose(pos, attr.clamp(min=0) / attr.max())
    assert torch.allclose(neg, (-attr).clamp(min=0) / (-attr).max())
    batch = torch.stack([attr, 10 * attr])
    bpos, _ = plot.positive_negative_saliency(batch)
    assert torch.allclose(bpos[0], bpos[1])  # scaled per image
    with pytest.raises(ValueError, match="shape"):
        plot.positive_negative_saliency(torch.rand(4, 4))
    with pytest.raises(TypeError, match="floating"):
        plot.positive_negative_saliency(torch.ones(1, 2, 2, dtype=torch.int64))


def test_normalize_map():
    attr = torch.tensor([[[1.0, -3.0]], [[-2.0, 1.0]]])  # (C=2, H=1, W=2)
    m = plot.normalize_map(attr, clip=None)
    assert m.shape == (1, 1, 1, 2)
    assert torch.allclose(m.flatten(), torch.tensor([0.0, 1.0]))  # abs-max: [2, 3]
    s = plot.normalize_map(attr, reduce="sum", clip=None)  # [-1, -2]
    assert torch.allclose(s.flatten(), torch.tensor([1.0, 0.0]))
    s_abs = plot.normalize_map(attr, reduce="sum", absolute=True, clip=None)  # [1, 2]
    assert torch.allclose(s_abs.flatten(), torch.tensor([0.0, 1.0]))
    assert plot.normalize_map(attr, reduce=None).shape == (1, 2, 1, 2)
    zero = plot.normalize_map(torch.zeros(2, 3, 4, 4))
    assert torch.equal(zero, torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="reduce"):
        plot.normalize_map(attr, reduce="median")
    with pytest.raises(ValueError, match="clip"):
        plot.normalize_map(attr, clip=(50, 10))


def test_normalize_map_percentile_clip_matches_numpy():
    attr = torch.rand(2, 1, 10, 10, generator=_gen(), dtype=torch.float64)
    attr[0, 0, 0, 0] = 100.0  # one outlier
    m = plot.normalize_map(attr, clip=(5, 95))
    for i in range(2):
        a = attr[i].flatten().numpy()
        lo, hi = np.percentile(a, [5, 95])
        ref = (np.clip(a, lo, hi) - lo) / (hi - lo)
        assert np.allclose(m[i].flatten().numpy(), ref)
    assert m.min() == 0 and m.max() == 1
    assert plot.normalize_map(attr, clip=None)[0].median() < 0.01  # squashed by the outlier
    assert plot.normalize_map(attr, clip=99)[0].median() > 0.2


@pytest.mark.parametrize("shape", [(16, 16), (1, 16, 16), (3, 16, 16), (1, 3, 16, 16), (1, 4, 4)])
def test_overlay_shape_and_range(shape):
    image = load(np.random.default_rng(0).random((16, 16, 3)))
    attr = torch.randn(*shape, generator=_gen())
    out = plot.overlay(image, attr)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1


def test_overlay_alpha_extremes():
    raw = torch.rand(3, 8, 8, generator=_gen())
    attr = torch.rand(1, 2, 2, generator=_gen())
    out0 = plot.overlay(raw, attr, alpha=0.0, mean=None, std=None)
    assert np.allclose(out0, raw.permute(1, 2, 0).numpy(), atol=1e-6)
    out1 = plot.overlay(raw, torch.zeros(8, 8), alpha=1.0, cmap="gray", mean=None, std=None)
    assert np.allclose(out1, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        plot.overlay(raw, attr, alpha=1.5, mean=None, std=None)
    with pytest.raises(ValueError, match="batch"):
        plot.overlay(raw, torch.rand(2, 1, 8, 8), mean=None, std=None)


@pytest.mark.parametrize("b", [1, 3])
def test_show(tmp_path, b):
    x = torch.randn(b, 3, 24, 24, generator=_gen())
    fig = plot.show(x)
    assert isinstance(fig, Figure) and len(fig.axes) == b
    attr = torch.randn(b, 1, 6, 6, generator=_gen())
    titles = [f"pred: cat / true: dog {i}" for i in range(b)]
    fig = plot.show(x, attr, titles=titles)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * b
    path = tmp_path / "show.png"
    fig.savefig(path)
    with PIL.Image.open(path) as im:
        assert im.size[0] > 0 and im.size[1] > 0


def test_show_variants():
    x = torch.randn(3, 16, 16, generator=_gen())
    assert len(plot.show(x, torch.rand(16, 16), titles="one").axes) == 2
    assert len(plot.show(x[None], torch.rand(1, 16, 16)).axes) == 2  # (B, H', W')
    assert len(plot.show(torch.randn(5, 3, 8, 8), ncols=2).axes) == 5
    with pytest.raises(ValueError, match="titles"):
        plot.show(torch.randn(2, 3, 8, 8), titles=["a"])
    with pytest.raises(ValueError, match="B=2"):
        plot.show(torch.randn(2, 3, 8, 8), torch.rand(3, 1, 8, 8))
    with pytest.raises(ValueError, match="ncols"):
        plot.show(torch.randn(2, 3, 8, 8), ncols=0)


def test_grid(tmp_path):
    items = [
        torch.randn(3, 8, 8, generator=_gen()),
        PIL.Image.new("RGB", (8, 8), "red"),
        np.zeros((8, 8), np.uint8),
        np.ones((8, 8, 3), np.float32),
    ]
    fig = plot.grid(items, titles=list("abcd"), ncols=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    fig.savefig(tmp_path / "grid.png")
    maps = plot.normalize_map(torch.randn(3, 3, 8, 8, generator=_gen()))
    assert len(plot.grid(maps, mean=None, std=None, cmap="jet").axes) == 3
    with pytest.raises(TypeError, match="images"):
        plot.grid([1, 2])
    with pytest.raises(ValueError, match="no images"):
        plot.grid([])


def _shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def test_show_maps_panels_titles_and_data():
    x = torch.rand(3, 3, 8, 8, generator=_gen())
    maps = {"a": torch.randn(3, 3, 8, 8, generator=_gen()),
            "b": torch.randn(3, 1, 4, 4, generator=_gen())}
    masks = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
    masks[:, :, 2:6, 3:7] = True
    fig = plot.show_maps(x, maps, masks, mean=None, std=None, clip=None)
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 4  # image, mask, a, b per row
    assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "ground truth", "a", "b"]
    assert all(ax.get_title() == "" for ax in fig.axes[4:])  # column titles: first row only
    for i in range(3):
        image, mask, a, b = fig.axes[4 * i: 4 * i + 4]
        assert np.allclose(_shown(image), x[i].permute(1, 2, 0).numpy())
        assert np.array_equal(_shown(mask), masks[i, 0, ..., None].float().expand(-1, -1, 3))
        ref_a = plot.normalize_map(maps["a"][i], clip=None)[0, 0].numpy()  # abs-max, [0, 1]
        assert np.allclose(_shown(a), ref_a)
        assert np.allclose(_shown(b), plot.normalize_map(maps["b"][i], clip=None)[0, 0].numpy())
        assert _shown(b).shape == (4, 4) and _shown(a).min() == 0 and _shown(a).max() == 1
        assert not image.collections and not mask.collections  # outlines on the maps only
        assert a.collections and b.collections


def test_show_maps_outline_follows_the_mask_at_the_map_resolution():
    x = torch.rand(1, 3, 16, 16, generator=_gen())
    masks = torch.zeros(1, 16, 16)
    masks[0, 4:12, 8:16] = 1.0  # the right half of the middle rows
    coarse = torch.rand(1, 1, 4, 4, generator=_gen())
    fig = plot.show_maps(x, {"coarse": coarse, "fine": torch.rand(1, 1, 16, 16)}, masks,
                         mean=None, std=None)
    for ax, scale in ((fig.axes[2], 4), (fig.axes[3], 1)):
        vertices = np.concatenate([path.vertices for path in ax.collections[0].get_paths()])
        # the 0.5 level runs between the mask's pixel centres: x from 7.5 on, y from 3.5 to 11.5
        # in mask pixels, which is the map's pixels times the scale
        xs, ys = ((vertices + 0.5) * scale - 0.5).T
        assert xs.min() == pytest.approx(7.5, abs=1e-6) and ys.min() == pytest.approx(3.5, abs=1e-6)
        assert ys.max() == pytest.approx(11.5, abs=1e-6) and xs.max() == pytest.approx(15, abs=1e-6)


def test_show_maps_blend_titles_and_single_image():
    x = torch.randn(2, 3, 8, 8, generator=_gen())  # ImageNet-normalized by default
    attr = torch.randn(2, 1, 2, 2, generator=_gen())
    fig = plot.show_maps(x, {"cam": attr}, blend=True, titles=["cat", "dog"], alpha=0.3)
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == ["cat", "cam", "dog", "cam"]
    for i in range(2):
        assert np.allclose(_shown(fig.axes[2 * i]), to_numpy(x[i]))  # ImageNet's stats undone
        assert np.allclose(_shown(fig.axes[2 * i + 1]),
                           plot.overlay(x[i], attr[i], alpha=0.3, cmap="inferno"))
    one = plot.show_maps(x[0], {"cam": attr[0]})  # (C, H, W) with (C', H', W')
    assert len(one.axes) == 2 and not one.axes[1].collections


def test_show_maps_errors():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="B=2"):
        plot.show_maps(x, {"a": torch.rand(3, 1, 8, 8)})
    with pytest.raises(ValueError, match="one channel"):
        plot.show_maps(x, {"a": torch.rand(2, 3, 8, 8)}, reduce=None)
    with pytest.raises(ValueError, match="masks"):
        plot.show_maps(x, {}, torch.rand(2, 2, 8, 8))
    with pytest.raises(ValueError, match="titles"):
        plot.show_maps(x, {}, titles=["one"])
    with pytest.raises(TypeError, match="map 'a'"):
        plot.show_maps(x, {"a": np.zeros((2, 1, 8, 8))})


def test_show_maps_signed_maps_use_a_diverging_scale_centred_at_zero():
    x = torch.rand(1, 3, 4, 4, generator=_gen())
    signed = torch.tensor([[[[-2.0, -1.0], [0.0, 1.0]]]])
    fig = plot.show_maps(x, {"ig": signed}, mean=None, std=None, signed=True, clip=None)
    panel = fig.axes[1]
    # symmetric range (-2, 2): zero at the colormap's middle, -2 at its bottom
    assert np.allclose(_shown(panel), [[0.0, 0.25], [0.5, 0.75]])
    assert panel.images[0].get_cmap().name == "RdBu_r"
    # the channels are summed, not folded by abs-max: a two-channel map keeps its sign
    two = torch.cat([signed, signed], 1)
    assert np.allclose(_shown(plot.show_maps(x, {"ig": two}, mean=None, std=None, signed=True,
                                             clip=None).axes[1]), _shown(panel))


def test_show_maps_shared_and_column_scales_keep_magnitudes():
    x = torch.rand(2, 3, 4, 4, generator=_gen())
    big = torch.rand(2, 1, 4, 4, generator=_gen()) + 1.0  # in [1, 2]
    tiny = big * 1e-13
    maps = {"big": big, "tiny": tiny}
    per_panel = plot.show_maps(x, maps, mean=None, std=None, clip=None)
    # each panel to its own range: the 1e-13 map looks exactly like the big one
    assert np.allclose(_shown(per_panel.axes[1]), _shown(per_panel.axes[2]))
    shared = plot.show_maps(x, maps, mean=None, std=None, clip=None, scale="shared")
    lo, hi = float(torch.cat([big, tiny]).min()), float(torch.cat([big, tiny]).max())
    assert np.allclose(_shown(shared.axes[1]), (big[0, 0].numpy() - lo) / (hi - lo))
    assert _shown(shared.axes[2]).max() < 1e-6  # the tiny map is dark on the shared scale
    column = plot.show_maps(x, maps, mean=None, std=None, clip=None, scale="column")
    lo, hi = float(big.min()), float(big.max())  # one range per map name, over both images
    for row in range(2):
        assert np.allclose(_shown(column.axes[3 * row + 1]), (big[row, 0].numpy() - lo) / (hi - lo))


def test_show_maps_colorbars_are_in_the_maps_units():
    x = torch.rand(1, 3, 4, 4, generator=_gen())
    tiny = torch.rand(1, 1, 4, 4, generator=_gen()) * 1e-13
    fig = plot.show_maps(x, {"tiny": tiny, "flat": torch.zeros(1, 1, 4, 4)}, mean=None,
                         std=None, clip=None, colorbar=True)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 2
    low, high = bars[0].get_ylim()
    assert low == pytest.approx(float(tiny.min()), rel=1e-6)
    assert high == pytest.approx(float(tiny.max()), rel=1e-6) and high < 1e-12
    fig.canvas.draw()  # a constant map gets a range around its value: it draws


def test_show_maps_new_options_errors():
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="scale must be"):
        plot.show_maps(x, {"a": torch.rand(1, 1, 4, 4)}, mean=None, std=None, scale="global")
    with pytest.raises(ValueError, match="blend=True.*need blend=False"):
        plot.show_maps(x, {"a": torch.rand(1, 1, 4, 4)}, mean=None, std=None, blend=True,
                       signed=True)


def test_a_grayscale_image_with_the_default_stats_is_shown_as_raw_pixels():
    x = torch.rand(2, 1, 8, 8, generator=_gen())
    fig = plot.show(x, torch.rand(2, 1, 8, 8))  # ImageNet's 3-value stats by default
    assert np.allclose(_shown(fig.axes[0]), x[0, 0].numpy())
    maps = plot.show_maps(x, {"a": torch.rand(2, 1, 8, 8)})
    assert np.allclose(_shown(maps.axes[0])[..., 0], x[0, 0].numpy())
    with pytest.raises(ValueError, match="mean has 3 entries"):  # given explicitly: refused
        plot.show(x, mean=(0.1, 0.2, 0.3), std=None)


def test_explain_draws_the_original_panels_by_hand():
    """nl.plot.explain: Netlens 1.x's three panels per image, each equal to its definition."""
    g = _gen()
    x = torch.rand(2, 3, 8, 8, generator=g)
    attr = torch.randn(2, 3, 8, 8, generator=g)
    fig = plot.explain(x, attr, mean=None, std=None, titles=["a", "b"])
    assert len(fig.axes) == 6 and [ax.get_title() for ax in fig.axes[:3]] == [
        "a", "gradient (colour)", "gradient (gray, 99th pct)"]
    for i in range(2):
        image, colour, gray = fig.axes[3 * i: 3 * i + 3]
        assert np.allclose(_shown(image), x[i].permute(1, 2, 0).numpy())
        a = attr[i].double()
        expected = ((a - a.min()) / (a.max() - a.min())).permute(1, 2, 0).numpy()
        assert np.allclose(_shown(colour), expected, atol=1e-6)
        total = a.abs().sum(0)
        top = np.percentile(total.numpy(), 99)  # linear interpolation, as numpy's default
        assert np.allclose(_shown(gray), np.clip(total.numpy() / top, 0, 1), atol=1e-6)
    fig = plot.explain(x[0], attr[0], "saliency", mean=None, std=None)
    pos, neg = plot.positive_negative_saliency(attr[0].double())
    assert np.allclose(_shown(fig.axes[1]), pos.permute(1, 2, 0).numpy(), atol=1e-6)
    assert np.allclose(_shown(fig.axes[2]), neg.permute(1, 2, 0).numpy(), atol=1e-6)
    cam = torch.rand(1, 1, 2, 2, generator=g)
    fig = plot.explain(x[:1], cam, "cam", mean=None, std=None)
    up = F.interpolate((cam - cam.min()) / (cam.max() - cam.min()), size=(8, 8),
                       mode="bilinear", align_corners=False)[0, 0].clamp(0, 1).numpy()
    assert np.allclose(_shown(fig.axes[2]), up, atol=1e-6)
    heat = matplotlib.colormaps["hsv"](up)[..., :3]
    assert np.allclose(_shown(fig.axes[0]), heat, atol=1e-6)
    assert np.allclose(_shown(fig.axes[1]), 0.6 * x[0].permute(1, 2, 0).numpy() + 0.4 * heat,
                       atol=1e-6)
    with pytest.raises(ValueError, match="kind must be one of"):
        plot.explain(x, attr, "heat")
    with pytest.raises(ValueError, match="use kind='cam'"):
        plot.explain(x, cam.expand(2, -1, -1, -1), "gradient")
