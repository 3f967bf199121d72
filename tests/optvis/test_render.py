"""OptVis: optimization raises what it should, stops early, is seeded, leaves the model alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from netlens import FlatModel, UnknownLayerError
from netlens.data import make_shapes
from netlens.image import to_pil
from netlens.optvis import objectives as obj
from netlens.optvis.param import ImageParam, RawParam
from netlens.optvis.render import Callback, OptVis, model_normalization
from netlens.zoo import shapes_model

from helpers import assert_untouched, model_state, tiny_vit


@pytest.fixture(scope="module")
def shapes():
    return shapes_model().eval()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _channel_means(model, layer, images):
    fm = FlatModel(model)
    with torch.no_grad(), fm.record(layer) as rec:
        fm(images)
    return rec.activations[layer].mean(dim=(2, 3))


@pytest.mark.slow
def test_channel_visualization_beats_the_start_and_every_test_image(shapes):
    """Issue 4 and CONTRIBUTING.md test G19: 128 steps at 128 px, FFT, decorrelation, standard
    transforms.
    Channels silent on the start image included: the redirected ReLU reaches them."""
    data = make_shapes(20, size=128, seed=11).images
    dataset = _channel_means(shapes, "layer3", data)  # (20, C)
    start = _channel_means(shapes, "layer3", ImageParam(128, generator=_gen(1))().detach())[0]
    silent = [c for c in range(dataset.shape[1]) if start[c] == 0 and dataset[:, c].max() > 0.1]
    weak = [c for c in range(dataset.shape[1]) if 0 < start[c] < 0.1 * dataset[:, c].max()]
    assert len(silent) >= 2 and len(weak) >= 2
    for c in silent[:2] + weak[:2]:
        vis = OptVis(shapes, obj.channel("layer3", c), size=128, generator=_gen(1))
        image = vis.vis((128,), progress=False)[-1]
        reached = _channel_means(shapes, "layer3", image)[0, c]
        assert reached >= 5 * start[c] and reached > 1, (c, float(reached), float(start[c]))
        assert reached > dataset[:, c].max(), (c, float(reached), float(dataset[:, c].max()))
        assert vis.history[-1] > vis.history[0]


@pytest.mark.parametrize("c", range(4))
def test_class_logit_makes_the_class_win(shapes, c):
    image = OptVis(shapes, obj.class_logit(c), size=64, generator=_gen(c)).vis((96,),
                                                                                progress=False)[-1]
    with torch.no_grad():
        logits = shapes(image)[0]
    assert int(logits.argmax()) == c, logits


def test_the_objective_rises_on_a_random_init_torchvision_model():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    vis = OptVis(model, obj.channel("layer2", 3) - 1e-2 * obj.total_variation(), size=64,
                 generator=_gen())
    before = vis.value()
    vis.vis((16,), progress=False)
    assert vis.value() > before and len(vis.history) == 16


def test_thresholds_give_one_image_per_threshold_in_the_unit_range(shapes):
    images = OptVis(shapes, obj.channel("layer2", 1), size=(40, 56), generator=_gen()).vis(
        (2, 5, 9), progress=False)
    assert len(images) == 3
    for im in images:
        assert im.shape == (1, 3, 40, 56) and im.dtype == torch.float32
        assert 0 <= float(im.min()) and float(im.max()) <= 1 and not im.requires_grad
    assert not torch.equal(images[0], images[2])
    two = OptVis(shapes, obj.channel("layer2", 1), size=24, batch=2, generator=_gen()).vis((1,))
    assert two[0].shape == (2, 3, 24, 24)


def test_same_seed_same_image_and_the_global_rng_is_not_touched(shapes):
    def run(seed):
        return OptVis(shapes, obj.channel("layer3", 0), size=48, generator=_gen(seed)).vis(
            (6,), progress=False)[-1]

    state = torch.random.get_rng_state()
    a, b = run(3), run(3)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(4))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_the_forward_stops_at_the_deepest_layer_the_objective_reads(shapes):
    fm = FlatModel(shapes)
    fm.ensure_traced(torch.zeros(1, 3, 32, 32))  # traced here at the runs' size, not in them
    calls = []
    with_hooks = [shapes.layer3.register_forward_hook(lambda *a: calls.append("layer3")),
                  shapes.fc.register_forward_hook(lambda *a: calls.append("fc"))]
    try:
        OptVis(fm, obj.channel("layer2", 0), size=32, generator=_gen()).vis((2,), progress=False)
        assert calls == []
        OptVis(fm, obj.channel("layer2", 0) + obj.channel("layer3", 1), size=32,
               generator=_gen()).vis((2,), progress=False)
        assert "layer3" in calls and "fc" not in calls
        calls.clear()
        OptVis(fm, obj.class_logit(1), size=32, generator=_gen()).vis((2,), progress=False)
        assert "fc" in calls
    finally:
        for h in with_hooks:
            h.remove()


def test_the_model_is_untouched_also_after_an_error():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    model.train()  # the worst case: batch norm would update its running statistics
    model.layer1[0].conv1.weight.requires_grad_(False)
    before = model_state(model)
    with pytest.warns(UserWarning, match="training mode"):
        OptVis(model, obj.channel("layer2", 1), size=32, generator=_gen()).vis((2,),
                                                                                progress=False)
    assert_untouched(model, before)
    with pytest.raises(ValueError, match="channel 999 is out of range"), \
            pytest.warns(UserWarning, match="training mode"):
        OptVis(model, obj.channel("layer2", 999), size=32, generator=_gen()).vis((2,),
                                                                                  progress=False)
    assert_untouched(model, before)


def test_it_works_inside_no_grad(shapes):
    with torch.no_grad():
        vis = OptVis(shapes, obj.channel("layer3", 0), size=32, generator=_gen())
        vis.vis((3,), progress=False)
    assert len(vis.history) == 3


def test_lbfgs_recomputes_the_loss_with_the_same_transform(shapes):
    vis = OptVis(shapes, obj.channel("layer3", 0) - 0.1 * obj.l2(), size=48, generator=_gen(),
                 optimizer=lambda p: torch.optim.LBFGS(p, lr=0.5, max_iter=4))
    before = vis.value()
    vis.vis((4,), progress=False)
    assert vis.value() > before


def test_netlens_lbfgs_by_name(shapes):
    vis = OptVis(shapes, obj.channel("layer3", 0) - 0.1 * obj.l2(), size=48, generator=_gen(),
                 optimizer="lbfgs", lr=1.0)
    before = vis.value()
    vis.vis((6,), progress=False)
    assert vis.value() > before
    with pytest.raises(ValueError, match="'adam', 'lbfgs'"):
        OptVis(shapes, obj.channel("layer3", 0), size=32, optimizer="sgd").vis((1,))


def test_raw_param_and_callbacks(shapes):
    events = []

    class Recorder(Callback):
        def on_begin(self, vis):
            events.append("begin")

        def on_step(self, vis, step, value):
            events.append(step)

        def on_end(self, vis, images):
            events.append(("end", len(images)))

    start = make_shapes(1, size=48, seed=2).images
    vis = OptVis(shapes, obj.layer("layer2", squared=True), RawParam(start), transforms=(),
                 generator=_gen())
    vis.vis((2, 3), callback=Recorder(), progress=False)
    assert events == ["begin", 1, 2, 3, ("end", 2)]
    seen = []
    OptVis(shapes, obj.channel("layer2", 0), size=32, generator=_gen()).vis(
        (2,), callback=lambda vis, step, value: seen.append((step, type(value))), progress=False)
    assert seen == [(1, float), (2, float)]


def test_ctrl_c_returns_the_image_so_far(shapes):
    def stop(vis, step, value):
        if step == 3:
            raise KeyboardInterrupt

    vis = OptVis(shapes, obj.channel("layer2", 0), size=32, generator=_gen())
    with pytest.warns(UserWarning, match="interrupted at step 3"):
        images = vis.vis((2, 10), callback=stop, progress=False)
    assert len(images) == 2 and len(vis.history) == 3


def test_token_layers_of_a_vit():
    vit = tiny_vit(head_std=None, dtype=torch.float32)  # a channel objective: no head needed
    layer = "encoder.layers.encoder_layer_1.mlp"
    vis = OptVis(vit, obj.channel(layer, 5), size=32, generator=_gen())
    before = vis.value()
    vis.vis((8,), progress=False)
    assert vis.value() > before
    with pytest.raises(ValueError, match="outside layer"):
        OptVis(vit, obj.neuron(layer, 0, 4, 0), size=32, generator=_gen()).vis((1,),
                                                                               progress=False)


def test_bad_input_errors(shapes):
    with pytest.raises(UnknownLayerError, match="layer3"):
        OptVis(shapes, obj.channel("layer33", 0))
    vis = OptVis(shapes, obj.channel("layer3", 0), size=32, generator=_gen())
    for bad in [(), (4, 2), (3, 3), (0,), (2.5,)]:
        with pytest.raises(ValueError, match="thresholds"):
            vis.vis(bad, progress=False)
    with pytest.raises(TypeError, match="Objective"):
        OptVis(shapes, "layer3")


def test_model_normalization():
    assert model_normalization(shapes_model()) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    mean, std = model_normalization(torchvision.models.resnet18())
    assert tuple(mean) == (0.485, 0.456, 0.406) and tuple(std) == (0.229, 0.224, 0.225)


class _FunctionalDeadNet(torch.nn.Module):
    """One functional ReLU, dead on mid-grey images: only a redirected ReLU moves the image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 2, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.conv1.weight.fill_(0.1)
            self.conv1.bias.fill_(-2.2)  # 27 inputs * 0.1 * x - 2.2 < 0 unless x > 0.81
            self.conv2.weight.fill_(1.0)
            self.conv2.bias.zero_()

    def forward(self, x):
        return self.conv2(torch.nn.functional.relu(self.conv1(x)))


def test_redirected_relu_wakes_a_functional_relu():
    """Issue 12: the redirected ReLU is a rule over every ReLU call, functional ones included
    (it used to hook nn.ReLU modules only, so this model stayed at zero)."""
    model = _FunctionalDeadNet().eval()
    start = RawParam(torch.full((1, 3, 12, 12), 0.5))
    stuck = OptVis(model, obj.channel("conv2", 0), param=start, transforms=[], redirect_steps=0,
                   generator=_gen())
    stuck.vis((24,), progress=False)
    assert max(stuck.history) == 0.0
    start = RawParam(torch.full((1, 3, 12, 12), 0.5))
    woken = OptVis(model, obj.channel("conv2", 0), param=start, transforms=[], generator=_gen())
    woken.vis((24,), progress=False)
    assert woken.history[-1] > 0.1


# -- issue 13: correctness under every call ----------------------------------------------------
def test_an_image_without_the_models_channels_is_refused_with_the_fix(shapes):
    gray = make_shapes(1, size=32, seed=1).images[:, :1]
    with pytest.raises(ValueError, match=r"1 channel.*3 channels.*expand\(-1, 3, -1, -1\)"):
        OptVis(shapes, obj.channel("layer2", 0), RawParam(gray), generator=_gen()).vis(
            (1,), progress=False)
    with pytest.raises(ValueError, match=r"1 channel.*3 channels"):
        OptVis(shapes, obj.channel("layer2", 0), ImageParam(32, channels=1, decorrelate=False),
               generator=_gen())
    one = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU()).eval()
    with pytest.raises(ValueError, match=r"normalization mean=.* 3 values .* 1 channel"):
        OptVis(one, obj.channel("0", 0), size=16, generator=_gen())  # ImageNet's 3-value stats
    vis = OptVis(one, obj.channel("0", 0), size=16, mean=0.5, std=0.25, generator=_gen())
    assert vis.vis((2,), progress=False)[-1].shape == (1, 1, 16, 16)  # the model's 1 channel


def test_inference_mode_is_explained(shapes):
    vis = OptVis(shapes, obj.channel("layer2", 0), size=32, generator=_gen())
    with torch.inference_mode(), pytest.raises(RuntimeError, match=(
            r"OptVis needs gradients, which torch.inference_mode\(\) disables; call it outside")):
        vis.vis((1,), progress=False)


def test_show_step_prints_the_objective_and_show_displays_each_picture(shapes, capsys):
    """Netlens 1.x's progress in a notebook: show_step=N prints the objective every N steps
    (the values the callback sees), show=True displays each threshold's picture with IPython
    (here a stand-in display) and is refused with the fix outside IPython."""
    from netlens.optvis import render

    values = []
    vis = OptVis(shapes, obj.channel("layer2", 0), size=32, generator=_gen())
    images = vis.vis((2, 4), callback=lambda v, step, value: values.append(value),
                     progress=False, show_step=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"step {k}: objective {values[k - 1]:.4g}" for k in (2, 4)]
    assert len(images) == 2
    with pytest.raises(ValueError, match="plot the returned images"):
        vis.vis((2,), progress=False, show=True)
    with pytest.raises(ValueError, match="show_step must be a positive int"):
        vis.vis((2,), progress=False, show_step=0)
    shown = []
    cb = render._Shown(Callback(), None, [])
    cb.display, cb.steps = shown.append, {1, 3}
    pictures = vis.vis((1, 3), callback=cb, progress=False)
    assert len(shown) == 2 and all(p.size == (32, 32) for p in shown)
    assert np.array_equal(np.asarray(shown[-1]),
                          np.asarray(to_pil(pictures[-1][0], None, None)))
