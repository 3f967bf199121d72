"""NetDreamer: deep dream, feature inversion, channel and class visualization
(CONTRIBUTING.md test G21)."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from netlens import FlatModel, UnknownLayerError
from netlens.data import make_shapes
from netlens.generate import NetDreamer
from netlens.optvis.param import ImageParam
from netlens.zoo import shapes_model

from helpers import assert_untouched, model_state


@pytest.fixture(scope="module")
def shapes():
    return shapes_model().eval()


@pytest.fixture(scope="module")
def dreamer(shapes):
    return NetDreamer(shapes)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _act(model, layer, x):
    fm = FlatModel(model)
    with torch.no_grad(), fm.record(layer) as rec:
        fm(x)
    return rec.activations[layer]


def test_deep_dream_raises_the_layer_and_keeps_the_image_format(shapes, dreamer):
    x = make_shapes(2, size=72, seed=5).images
    before = shapes_state = model_state(shapes)
    out = dreamer.deep_dream(x, "layer2", octaves=3, steps=10, generator=_gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    gain = _act(shapes, "layer2", out).norm() / _act(shapes, "layer2", x).norm()
    assert gain >= 1.5, float(gain)
    assert_untouched(shapes, before)
    del shapes_state


def test_deep_dream_steps_zero_is_the_identity_and_odd_sizes_survive_octaves(dreamer):
    x = make_shapes(1, size=64, seed=6).images[..., :61, :57].contiguous()
    assert torch.equal(dreamer.deep_dream(x, "layer2", steps=0), x)
    out = dreamer.deep_dream(x, "layer3", octaves=4, octave_scale=1.3, steps=2, generator=_gen())
    assert out.shape == (1, 3, 61, 57)


def test_deep_dream_on_a_channel_changes_the_image_where_the_channel_responds(shapes, dreamer):
    x = make_shapes(1, size=96, seed=8).images
    response = _act(shapes, "layer2", x)[0]  # (C, h, w)
    c = int(response.flatten(1).amax(1).argmax())
    out = dreamer.deep_dream(x, "layer2", c, octaves=1, steps=12, jitter_px=0, generator=_gen())
    change = (out - x).abs().sum(1)[0]
    where = F.interpolate(response[c][None, None], size=x.shape[-2:], mode="bilinear")[0, 0]
    region = where >= where.quantile(0.75)  # the quarter of the image where c responds most
    share = float(change[region].sum() / change.sum())
    assert share >= 0.5, share  # a quarter of the area gets at least half of the change
    assert _act(shapes, "layer2", out)[0, c].mean() > response[c].mean()


def test_inverted_image_matches_the_features(shapes, dreamer):
    x = make_shapes(1, size=48, seed=9).images
    target = _act(shapes, "layer2", x)
    start = ImageParam(48, generator=_gen(1))().detach()
    out = dreamer.inverted_image(x, "layer2", steps=128, generator=_gen(1))
    assert out.shape == x.shape
    d_start = (_act(shapes, "layer2", start) - target).norm()
    d_end = (_act(shapes, "layer2", out) - target).norm()
    assert d_end * 10 <= d_start, (float(d_start), float(d_end))


def test_class_and_channel_visualization(shapes, dreamer):
    image = dreamer.class_visualization(1, size=64, steps=96, generator=_gen(2), progress=False)
    assert image.shape == (1, 3, 64, 64)
    with torch.no_grad():
        assert int(shapes(image).argmax()) == 1
    start = ImageParam(64, batch=2, generator=_gen(3))().detach()
    images = dreamer.channel_visualization("layer3", 0, size=64, steps=48, batch=2,
                                           generator=_gen(3), progress=False)
    assert images.shape == (2, 3, 64, 64)
    assert (_act(shapes, "layer3", images)[:, 0].mean()
            > 3 * _act(shapes, "layer3", start)[:, 0].mean())


def test_same_seed_same_dream(dreamer):
    x = make_shapes(1, size=48, seed=10).images
    a = dreamer.deep_dream(x, "layer2", octaves=2, steps=3, generator=_gen(7))
    b = dreamer.deep_dream(x, "layer2", octaves=2, steps=3, generator=_gen(7))
    assert torch.equal(a, b)
    c = dreamer.channel_visualization("layer2", 1, size=32, steps=3, generator=_gen(7))
    d = dreamer.channel_visualization("layer2", 1, size=32, steps=3, generator=_gen(7))
    assert torch.equal(c, d)


def test_bad_input(dreamer):
    x = make_shapes(1, size=32, seed=1).images
    with pytest.raises(UnknownLayerError, match="layer2"):
        dreamer.deep_dream(x, "layer22", steps=1)
    with pytest.raises(ValueError, match="channel 500 is out of range"):
        dreamer.deep_dream(x, "layer2", 500, steps=1, octaves=1)
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
        dreamer.deep_dream(x * 3, "layer2", steps=1)
    with pytest.raises(ValueError, match="octaves"):
        dreamer.deep_dream(x, "layer2", octaves=0)
    with pytest.raises(ValueError, match="NaN"):
        dreamer.inverted_image(x * float("nan"), "layer2")


# -- issue 13: correctness under every call ----------------------------------------------------
def test_a_grayscale_image_for_a_colour_model_is_refused_with_the_fix(dreamer):
    gray = make_shapes(1, size=32, seed=1).images[:, :1]
    calls = [lambda: dreamer.deep_dream(gray, "layer2", steps=1, octaves=2, generator=_gen()),
             lambda: dreamer.inverted_image(gray, "layer2", steps=1, generator=_gen()),
             lambda: dreamer.features(gray, "layer2")]
    for call in calls:
        with pytest.raises(ValueError, match=r"1 channel.*3 channels.*expand\(-1, 3, -1, -1\)"):
            call()


def test_every_optimizing_entry_point_explains_inference_mode(dreamer):
    x = make_shapes(1, size=32, seed=1).images
    calls = [lambda: dreamer.deep_dream(x, "layer2", steps=1, octaves=1, generator=_gen()),
             lambda: dreamer.inverted_image(x, "layer2", steps=1, generator=_gen()),
             lambda: dreamer.channel_visualization("layer2", 0, size=32, steps=1,
                                                   generator=_gen()),
             lambda: dreamer.class_visualization(0, size=32, steps=1, generator=_gen())]
    for call in calls:
        with torch.inference_mode(), pytest.raises(RuntimeError, match=(
                r"needs gradients, which torch.inference_mode\(\) disables; call it outside")):
            call()


class _Interrupting(torch.nn.Module):
    """The model, with a Ctrl-C (``KeyboardInterrupt``) raised from its forward at call ``k``."""

    def __init__(self, inner: torch.nn.Module, k: int) -> None:
        super().__init__()
        self.inner, self.k, self.calls = inner, k, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.k:
            raise KeyboardInterrupt
        return self.inner(x)


@pytest.mark.parametrize("k", [2, 9])  # in the first octave's first step; in the second octave
def test_ctrl_c_in_deep_dream_stops_every_octave_and_returns_the_dream_so_far(shapes, k):
    from netlens._util import NetlensWarning

    model = _Interrupting(shapes, k).eval()
    x = make_shapes(1, size=48, seed=3).images
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = NetDreamer(model).deep_dream(x, "inner.layer2", octaves=3, steps=4, progress=False,
                                           generator=_gen())
    assert model.calls == k  # nothing ran after the interrupt
    messages = [str(w.message) for w in caught if issubclass(w.category, NetlensWarning)]
    assert len(messages) == 1 and re.match(r"interrupted at octave \d of 3", messages[0]), messages
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1


class _FixedSize(torch.nn.Module):
    """A model that takes only 32x32 inputs, as timm's ViTs assert theirs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 32 * 32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == (32, 32), f"Input height ({x.shape[-2]}) doesn't match model (32)"
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_deep_dream_on_a_fixed_size_model_names_the_octaves_fix():
    torch.manual_seed(0)
    model = _FixedSize().eval()
    before = model_state(model)
    dreamer = NetDreamer(model, mean=0.0, std=1.0)
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"octave 1 of 4 .*32x32.*only one input size.*"
                                         r"octaves=1.*AssertionError: Input height"):
        dreamer.deep_dream(image, "conv", steps=1, progress=False)
    assert_untouched(model, before)
    out = dreamer.deep_dream(image, "conv", octaves=1, steps=2, progress=False)
    assert out.shape == image.shape and not torch.equal(out, image)
    with pytest.raises(AssertionError, match="Input height"):  # the image itself: the model's
        dreamer.deep_dream(torch.rand(1, 3, 40, 40), "conv", octaves=1, steps=1, progress=False)


def test_a_small_one_channel_model_is_traced_at_the_runs_size():
    torch.manual_seed(0)
    mnist = torch.nn.Sequential(  # 28x28 only: the linear layer fixes the size
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 26 * 26, 10)).eval()
    dreamer = NetDreamer(mnist, mean=0.5, std=0.25)
    image = dreamer.channel_visualization("1", 2, size=28, steps=4, progress=False,
                                          generator=torch.Generator().manual_seed(0))
    assert image.shape == (1, 1, 28, 28)
    assert dreamer.features(image, "1").shape == (1, 4, 26, 26)


def test_layout_is_given_to_the_methods_that_read_a_layer(shapes):
    dreamer = NetDreamer(shapes)
    x = make_shapes(1, size=64, seed=3).images
    one = dreamer.features(x, "layer3", layout=lambda t: t[:, :1])
    assert one.shape[1] == 1
    torch.testing.assert_close(one, dreamer.features(x, "layer3")[:, :1])
    g = torch.Generator()
    a = dreamer.channel_visualization("layer3", 0, size=32, steps=3, progress=False,
                                      generator=g.manual_seed(0))
    b = dreamer.channel_visualization("layer3", 0, size=32, steps=3, progress=False,
                                      generator=g.manual_seed(0), layout="nchw")
    torch.testing.assert_close(a, b)  # the read layout, given by name: the same run
    negated = dreamer.channel_visualization("layer3", 0, size=32, steps=3, progress=False,
                                            generator=g.manual_seed(0), layout=lambda t: -t)
    assert (negated - a).abs().max() > 1e-3  # a layout that changes the view changes the run


def test_class_visualization_of_a_one_channel_model():
    torch.manual_seed(0)
    mnist = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 26 * 26, 10)).eval()
    dreamer = NetDreamer(mnist, mean=0.5, std=0.25)
    runs = {steps: dreamer.class_visualization(3, size=28, steps=steps, progress=False,
                                               generator=torch.Generator().manual_seed(0))
            for steps in (1, 32)}
    assert runs[32].shape == (1, 1, 28, 28)  # the model's one channel
    with torch.no_grad():
        logits = {k: float(mnist((v - 0.5) / 0.25)[0, 3]) for k, v in runs.items()}
    assert logits[32] > logits[1] + 0.1, logits  # measured: -0.01 -> 0.24
