"""Style transfer (CONTRIBUTING.md test H22; issue 5): Gram matrices, losses, L-BFGS and Adam
runs, the Fourier parameterization, several styles, any backbone, the model left alone, clear
errors.

Most tests use a random-init 4-conv feature net at 32 px; the oracles are written here from the
definitions (Gatys et al., 2016), with plain forward passes and no netlens code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from netlens import UnknownLayerError
from netlens.optvis import Callback, OptVis, RawParam
from netlens.style_transfer import (
    LossReporter,
    StyleTransferModule,
    StyleTransferObjective,
    default_layers,
    generate_style_transfer,
    gram_matrix,
)

from helpers import assert_untouched, model_state

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def four_conv_net(dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """Two blocks of two 3x3 convs with ReLUs, a max pool between them (CONTRIBUTING.md H22)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
    ).to(dtype).eval()


def smooth(size: int | tuple[int, int], seed: int, dtype: torch.dtype = torch.float32,
           batch: int = 1) -> torch.Tensor:
    """A smooth random image in [0, 1] (a natural-looking content)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, 6, 6, generator=g, dtype=dtype)
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


def noise(size: int | tuple[int, int], seed: int, dtype: torch.dtype = torch.float32):
    size = (size, size) if isinstance(size, int) else size
    return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(scope="module")
def net() -> nn.Sequential:
    return four_conv_net()


@pytest.fixture(scope="module")
def module(net) -> StyleTransferModule:
    return StyleTransferModule(net, smooth(32, 0), style_target=noise(40, 1))


def total(module: StyleTransferModule, image: torch.Tensor, style_weight: float = 1e6) -> float:
    with torch.no_grad():
        losses = module.losses(image)
    return float(losses["content"]) + style_weight * float(losses["style"])


# -- the Gram matrix -------------------------------------------------------------------------
def test_gram_matrix_equals_a_hand_computation_and_is_batch_safe():
    f = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2) / 10 - 1
    g = gram_matrix(f)
    assert g.shape == (2, 3, 3) and g.dtype == torch.float64
    c, h, w = 3, 2, 2
    for b in range(2):
        for i in range(3):
            for j in range(3):
                s = sum(float(f[b, i, y, x] * f[b, j, y, x]) for y in range(h) for x in range(w))
                assert abs(float(g[b, i, j]) - s / (c * h * w)) < 1e-12
    # one written-out value: channels 0 and 1 of image 0
    a, b_ = [-1.0, -0.9, -0.8, -0.7], [-0.6, -0.5, -0.4, -0.3]
    assert abs(float(g[0, 0, 1]) - sum(u * v for u, v in zip(a, b_)) / 12) < 1e-12
    each = torch.cat([gram_matrix(f[i:i + 1]) for i in range(2)])
    assert torch.equal(g, each)


def test_gram_matrix_is_symmetric_psd_and_blind_to_where_things_are():
    f = torch.randn(3, 8, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = gram_matrix(f)
    assert torch.allclose(g, g.transpose(1, 2), atol=0, rtol=0)
    assert float(torch.linalg.eigvalsh(g).min()) > -1e-12
    perm = torch.randperm(35, generator=torch.Generator().manual_seed(1))
    shuffled = f.flatten(2)[:, :, perm].reshape(3, 8, 7, 5)  # positions permuted, reshaped
    assert torch.allclose(gram_matrix(shuffled), g, atol=1e-14, rtol=0)
    # its custom backward agrees with autograd, to second order
    x = f[:1, :3, :2, :3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(gram_matrix, (x,))
    assert torch.autograd.gradgradcheck(gram_matrix, (x,))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gram_matrix(torch.ones(3, 4, 5))


# -- losses ----------------------------------------------------------------------------------
def test_losses_are_zero_at_their_targets_and_match_an_oracle():
    net = four_conv_net(torch.float64)
    content, style = smooth(32, 0, torch.float64), smooth(32, 5, torch.float64)
    x = noise(32, 2, torch.float64)
    m = StyleTransferModule(net, content, "7", style, ["1", "3", "8"], mean=MEAN, std=STD)
    assert float(m.losses(content)["content"]) == 0.0
    assert float(m.losses(style)["style"]) == 0.0
    with torch.no_grad():
        c, s = _oracle_losses(net, x, content, [style], [1.0], "7", ["1", "3", "8"])
        got = m.losses(x)
    assert abs(float(got["content"]) - float(c)) <= 1e-12 * float(c)
    assert abs(float(got["style"]) - float(s)) <= 1e-12 * float(s)


def _features(net: nn.Sequential, image: torch.Tensor) -> dict[str, torch.Tensor]:
    h = (image - torch.tensor(MEAN, dtype=image.dtype).view(3, 1, 1)) / torch.tensor(
        STD, dtype=image.dtype).view(3, 1, 1)
    out = {}
    for i, layer in enumerate(net):
        h = layer(h)
        out[str(i)] = h
    return out


def _oracle_losses(net, x, content, styles, weights, content_layer, style_layers):
    """Content and style losses of ``x`` straight from Gatys et al.'s definitions."""
    def gram(f):
        _, c, h, w = f.shape
        return torch.einsum("bchw,bdhw->bcd", f, f) / (c * h * w)

    fx, fc = _features(net, x), _features(net, content)
    content_loss = (fx[content_layer] - fc[content_layer].detach()).pow(2).mean()
    style_loss = 0.0
    for name in style_layers:
        target = sum(w * gram(_features(net, s)[name]).detach() for w, s in zip(weights, styles))
        style_loss = style_loss + (gram(fx[name]) - target).pow(2).mean()
    return content_loss, style_loss


# -- runs ------------------------------------------------------------------------------------
def test_fifty_lbfgs_steps_cut_the_total_and_the_style_loss_tenfold(module):
    start = noise(32, 3)
    ranges = []

    class Reporter(LossReporter):
        def on_step(self, vis, step, value):
            super().on_step(vis, step, value)
            pixels = vis.param.pixels.detach()
            ranges.append((float(pixels.min()), float(pixels.max())))

    reporter = Reporter()
    out = generate_style_transfer(module, start, num_steps=50, progress=False,
                                  callback=reporter)
    # the pixels are projected, never run away (torch's L-BFGS on a straight-through clamp sent
    # them to +-900), and the image returned is at least as good as the best one evaluated
    assert min(lo for lo, _ in ranges) >= 0 and max(hi for _, hi in ranges) <= 1
    assert total(module, out) <= min(reporter.history["total"]) * (1 + 1e-5)
    before, after = module.losses(start), module.losses(out)
    assert total(module, start) >= 10 * total(module, out)  # measured 309x
    assert float(before["style"]) >= 10 * float(after["style"])  # measured 4.1e3x
    assert float(after["content"]) < float(before["content"])  # measured 1.15x lower
    assert reporter.history["step"] == list(range(1, 51))
    assert set(reporter.history) == {"step", "content", "style", "total"}
    assert reporter.history["total"][0] == pytest.approx(total(module, start), rel=1e-5)
    # from the content image too, the usual start
    out = generate_style_transfer(module, num_steps=50, progress=False)
    assert total(module, module.content_image) >= 10 * total(module, out)  # measured 1.1e4x


def test_every_step_sees_a_fresh_gradient_and_costs_one_forward_pass():
    """The gradient each step uses equals an independent autograd computation at the image of
    that step (a closure that kept old gradients would sum them), for L-BFGS and Adam."""
    net = four_conv_net(torch.float64)
    content, style = smooth(24, 0, torch.float64), noise(24, 1, torch.float64)
    m = StyleTransferModule(net, content, "7", style, ["1", "3", "8"], mean=MEAN, std=STD)

    class Check(Callback):
        def __init__(self):
            self.image, self.errors = None, []

        def on_begin(self, vis):
            self.image = vis.param.pixels.detach().clone()

        def on_step(self, vis, step, value):
            counting[0] = False  # the oracle's passes do not count
            x = self.image.clamp(0, 1).requires_grad_(True)
            c, s = _oracle_losses(net, x, content, [style], [1.0], "7", ["1", "3", "8"])
            expected = torch.autograd.grad(1.0 * c + 1e3 * s, x)[0]
            got = vis.param.pixels.grad
            self.errors.append(float((got - expected).abs().max() / expected.abs().max()))
            self.image = vis.param.pixels.detach().clone()
            counting[0] = True

    calls, counting = [], [True]

    def count(*args):
        if counting[0]:
            calls.append(1)

    handle = net[0].register_forward_pre_hook(count)
    try:
        for optimizer in ("lbfgs", "adam"):
            check, calls[:] = Check(), []
            generate_style_transfer(m, noise(24, 2, torch.float64), num_steps=8, style_weight=1e3,
                                    optimizer=optimizer, progress=False, callback=check)
            # one forward pass per step; after L-BFGS, one more checks its last, untried step
            assert len(calls) == 8 + (optimizer == "lbfgs"), optimizer
            assert len(check.errors) == 8 and max(check.errors) < 1e-10, (optimizer, check.errors)
    finally:
        handle.remove()


def test_content_only_from_noise_recovers_the_content_features(net):
    """One forward+backward per L-BFGS step (the catalogue's 5 steps of torch's default
    ``max_iter=20`` are up to 100 passes): >= 3x in 5 steps, >= 100x in 100."""
    m = StyleTransferModule(net, smooth(32, 0), "8", noise(32, 1), ["1", "3"])
    start = noise(32, 2)
    objective = m.objective(style_weight=0)
    assert objective.layers == ("8",)  # the style layers are not even read
    before = float(m.losses(start)["content"])
    five = generate_style_transfer(m, start, num_steps=5, style_weight=0, progress=False)
    assert before >= 3 * float(m.losses(five)["content"])  # measured 6.8x
    hundred = generate_style_transfer(m, start, num_steps=100, style_weight=0, progress=False)
    assert before >= 100 * float(m.losses(hundred)["content"])  # measured 156x


def test_fft_param_starts_at_the_content_image_and_adam_cuts_the_loss(module):
    content = module.content_image
    start = generate_style_transfer(module, num_steps=0, param="fft")
    assert float((start - content).abs().max()) < 1e-3

    class First(Callback):
        def on_begin(self, vis):
            self.image = vis.param().detach().clone()

    first, reporter = First(), LossReporter()

    class Both(Callback):
        def on_begin(self, vis):
            first.on_begin(vis)
            reporter.on_begin(vis)

        def on_step(self, vis, step, value):
            reporter.on_step(vis, step, value)

    out = generate_style_transfer(module, num_steps=100, optimizer="adam", param="fft",
                                  progress=False, callback=Both())
    assert float((first.image - content).abs().max()) < 1e-3
    assert reporter.history["content"][0] < 1e-12
    assert total(module, content) >= 10 * total(module, out)  # measured 1.5e3x
    assert out.shape == content.shape and 0 <= float(out.min()) and float(out.max()) <= 1


def test_outputs_keep_the_content_size_and_range_and_the_model_is_untouched():
    net = four_conv_net()
    net[1].inplace = True  # in-place ReLUs must survive too
    net[2].weight.requires_grad_(False)
    before = model_state(net)
    content = smooth((24, 40), 0)  # another size than the style image's
    m = StyleTransferModule(net, content, style_target=noise(36, 1))
    for optimizer, param in (("lbfgs", "raw"), ("adam", "raw"), ("adam", "fft")):
        out = generate_style_transfer(m, num_steps=3, tv_weight=1.0, optimizer=optimizer,
                                      param=param, progress=False)
        assert out.shape == (1, 3, 24, 40) and out.dtype == torch.float32
        assert 0 <= float(out.min()) and float(out.max()) <= 1 and not out.requires_grad
        assert_untouched(net, before)
    with pytest.raises(ValueError, match="content's size"):
        generate_style_transfer(m, noise(32, 2), num_steps=1, progress=False)
    with pytest.raises(ValueError, match="optimize an image of the content's size"):
        generate_style_transfer(m, param=RawParam(noise(16, 2)), num_steps=1, progress=False)
    assert_untouched(net, before)  # also after an error inside the run


def test_a_zero_weight_removes_its_term(module):
    for weights, keys in (({"style_weight": 0}, {"content", "total"}),
                          ({"content_weight": 0}, {"style", "total"}),
                          ({"tv_weight": 1.0}, {"content", "style", "tv", "total"})):
        reporter = LossReporter()
        generate_style_transfer(module, num_steps=2, progress=False, callback=reporter,
                                **weights)
        assert set(reporter.history) == keys | {"step"}, weights
    objective = StyleTransferObjective(module, 0.0, 1.0, 0.0)
    assert objective.layers == module.content_layers and objective.losses == {}


def test_several_style_images_mix_by_weight(net):
    content, a, b = smooth(32, 0), noise(40, 1), smooth(28, 2)
    only_a = StyleTransferModule(net, content, style_target=a)
    only_b = StyleTransferModule(net, content, style_target=b)
    mixed = StyleTransferModule(net, content, style_target=[a, b], style_weights=[3, 1])
    assert mixed.style_weights == (0.75, 0.25)
    for name in mixed.style_layers:
        expected = 0.75 * only_a.style_targets[name] + 0.25 * only_b.style_targets[name]
        assert torch.allclose(mixed.style_targets[name], expected, atol=1e-12, rtol=1e-6)
    zero_b = StyleTransferModule(net, content, style_target=[a, b], style_weights=[2, 0])
    for name in mixed.style_layers:
        assert torch.equal(zero_b.style_targets[name], only_a.style_targets[name])
    batch = StyleTransferModule(net, content, style_target=torch.cat([a[..., :28, :28], b]))
    assert batch.style_weights == (0.5, 0.5)
    out = generate_style_transfer(mixed, num_steps=20, progress=False)
    assert total(mixed, content) >= 10 * total(mixed, out)  # measured 591x


def test_a_batch_of_content_images():
    net = four_conv_net()
    content = smooth(32, 0, batch=2)
    m = StyleTransferModule(net, content, style_target=noise(32, 1))
    out = generate_style_transfer(m, num_steps=20, progress=False)
    assert out.shape == (2, 3, 32, 32)
    assert total(m, content) >= 10 * total(m, out)  # measured 465x
    with pytest.raises(ValueError, match="batch"):
        generate_style_transfer(m, noise(32, 2), num_steps=1, progress=False)
    one = StyleTransferModule(net, content[:1], style_target=noise(32, 1))
    two_starts = torch.cat([noise(32, 2), noise(32, 3)])  # one content, two pictures
    assert generate_style_transfer(one, two_starts, num_steps=1, progress=False).shape[0] == 2


def test_default_layers_of_torchvision_vgg_and_a_tiny_vgg16_run():
    vgg16 = make_layers(cfgs["D"]).eval()  # exactly torchvision.models.vgg16().features
    vgg19 = make_layers(cfgs["E"]).eval()
    assert default_layers(vgg16) == (("20",), ("1", "6", "11", "18", "25"))
    assert default_layers(vgg19) == (("22",), ("1", "6", "11", "20", "29"))
    with pytest.raises(ValueError, match="no Conv2d"):
        default_layers(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2)))
    m = StyleTransferModule(vgg16, smooth(32, 0), style_target=noise(32, 1))
    assert m.content_layers == ("20",) and m.style_layers == ("1", "6", "11", "18", "25")
    before = model_state(vgg16)
    out = generate_style_transfer(m, num_steps=20, progress=False)
    assert total(m, m.content_image) >= 10 * total(m, out)  # measured 284x
    assert_untouched(vgg16, before)


def test_any_backbone_by_its_layer_names():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18().eval()
    before = model_state(resnet)
    m = StyleTransferModule(resnet, smooth(32, 0), "layer2", noise(48, 1),
                            ["relu", "layer1", "layer2"])
    out = generate_style_transfer(m, num_steps=10, progress=False)
    assert out.shape == (1, 3, 32, 32)
    assert total(m, m.content_image) >= 10 * total(m, out)  # measured 42x
    assert_untouched(resnet, before)


def test_bad_input_gives_clear_errors(net, module):
    content, style = smooth(32, 0), noise(32, 1)
    with pytest.raises(UnknownLayerError, match="did you mean '8'"):
        StyleTransferModule(net, content, "88", style, ["1"])
    with pytest.raises(UnknownLayerError):
        StyleTransferModule(net, content, "8", style, ["relu"])
    with pytest.raises(ValueError, match="channel counts"):
        StyleTransferModule(net, content, style_target=style[:, :1])
    with pytest.raises(ValueError, match="positive sum"):
        StyleTransferModule(net, content, style_target=[style, style], style_weights=[0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        StyleTransferModule(net, content, style_target=[style, style], style_weights=[2, -1])
    with pytest.raises(ValueError, match="one weight per style image"):
        StyleTransferModule(net, content, style_target=[style, style], style_weights=[1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        StyleTransferModule(net, (content - 0.5) / 0.2, style_target=style)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        StyleTransferModule(net, content, style_target=style * 3)
    with pytest.raises(TypeError, match="float tensor"):
        StyleTransferModule(net, (content * 255).byte(), style_target=style)
    with pytest.raises(ValueError, match="style_target"):
        StyleTransferModule(net, content)
    with pytest.raises(ValueError, match="all 0"):
        module.objective(0, 0, 0)
    with pytest.raises(ValueError, match="style_weight"):
        module.objective(style_weight=-1)
    with pytest.raises(ValueError, match="optimizer"):
        generate_style_transfer(module, optimizer="sgd", progress=False)
    with pytest.raises(ValueError, match="param"):
        generate_style_transfer(module, param="pixels", progress=False)
    with pytest.raises(ValueError, match="num_steps"):
        generate_style_transfer(module, num_steps=-1, progress=False)
    with pytest.raises(TypeError, match="StyleTransferModule"):
        generate_style_transfer(net, content)


# -- issue 13: correctness under every call ----------------------------------------------------
def test_grayscale_images_for_a_colour_model_and_inference_mode_are_explained(net, module):
    gray, gray_style = smooth(32, 0)[:, :1], noise(32, 1)[:, :1]
    with pytest.raises(ValueError, match=r"1 channel.*3 channels.*expand\(-1, 3, -1, -1\)"):
        StyleTransferModule(net, gray, style_target=gray_style)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=(
            r"needs gradients, which torch.inference_mode\(\) disables; call it outside")):
        generate_style_transfer(module, num_steps=1, progress=False)


# -- the original's conveniences: compute_losses, objective(image), thresholds, show ----------
def test_compute_losses_returns_the_four_weighted_terms_of_an_oracle():
    net = four_conv_net(torch.float64)
    content, style = smooth(24, 0, torch.float64), smooth(24, 5, torch.float64)
    m = StyleTransferModule(net, content, "7", style, ["1", "3", "8"], mean=MEAN, std=STD)
    x = noise(24, 2, torch.float64).requires_grad_(True)
    total_, style_, content_, tv_ = m.compute_losses(x, 1e3, 2.0, 0.5)
    c, s = _oracle_losses(net, x, content, [style], [1.0], "7", ["1", "3", "8"])
    tv = ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean() + ((x[..., 1:, :] - x[..., :-1, :]) ** 2
                                                            ).mean()
    for got, expected in ((style_, 1e3 * s), (content_, 2.0 * c), (tv_, 0.5 * tv),
                          (total_, 1e3 * s + 2.0 * c + 0.5 * tv)):
        assert got.shape == () and abs(float((got - expected).detach())) <= 1e-12 * float(
            expected.detach())
    # differentiable w.r.t. the image, as the oracle
    (g,) = torch.autograd.grad(total_, x)
    (expected_g,) = torch.autograd.grad(1e3 * s + 2.0 * c + 0.5 * tv, x)
    assert torch.allclose(g, expected_g, atol=1e-12 * float(expected_g.abs().max()), rtol=0)
    # a zero weight skips its term: a zero tensor, and its layers are not read
    with torch.no_grad():
        t, s0, c0, v0 = m.compute_losses(x, 0.0, 1.0, 0.0)
    assert float(s0) == float(v0) == 0.0 and float(t) == float(c0) == float(c.detach())
    with pytest.raises(ValueError, match="all 0"):
        m.compute_losses(x, 0, 0, 0)
    with pytest.raises(ValueError, match="content's size"):
        m.compute_losses(noise(16, 2, torch.float64))


def test_the_tv_term_by_hand():
    net = four_conv_net(torch.float64)
    m = StyleTransferModule(net, smooth(4, 0, torch.float64), "1", smooth(4, 1, torch.float64),
                            "1")
    x = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    x[..., 1, 2] = 0.5  # one bright pixel: 2 horizontal and 2 vertical differences of 0.5
    _, _, _, tv = m.compute_losses(x, 0.0, 0.0, 1.0)
    # 3 channels x 4 rows x 3 differences per axis: mean = 3 * 2 * 0.25 / 36, twice
    assert abs(float(tv) - 2 * (3 * 2 * 0.25 / 36)) < 1e-15


def test_the_objective_called_on_an_image_gives_the_total_loss_optvis_lowers():
    net = four_conv_net(torch.float64)
    content, style = smooth(24, 0, torch.float64), smooth(24, 5, torch.float64)
    m = StyleTransferModule(net, content, "7", style, ["1", "3", "8"], mean=MEAN, std=STD)
    x = noise(24, 2, torch.float64)
    objective = StyleTransferObjective(m, 1e3, 2.0, 0.5)
    loss = objective(x)
    assert loss.shape == () and float(loss) == float(m.compute_losses(x, 1e3, 2.0, 0.5)[0])
    assert objective.losses["total"] == float(loss)
    assert set(objective.losses) == {"content", "style", "tv", "total"}
    assert objective(x, model=net) == loss and objective(x, model=m.fm) == loss
    vis = OptVis(m.fm, objective, RawParam(x), transforms=(), mean=MEAN, std=STD)
    assert abs(vis.value(x) + float(loss)) <= 1e-12 * float(loss)  # OptVis maximizes -loss
    assert abs(float(objective.evaluate(net, x)) + float(loss)) <= 1e-12 * float(loss)
    with pytest.raises(ValueError, match="without model="):
        objective(x, model=four_conv_net(torch.float64))
    with pytest.raises(ValueError, match="normalization"):
        objective(x, mean=0.0)
    with pytest.raises(ValueError, match="content's size"):
        objective(noise(16, 2, torch.float64))


def test_a_tuple_of_thresholds_returns_one_image_per_threshold(module):
    start = noise(32, 3)
    two, five = generate_style_transfer(module, start, num_steps=(2, 5), optimizer="adam",
                                        progress=False)
    assert torch.equal(two, generate_style_transfer(module, start, num_steps=2,
                                                    optimizer="adam", progress=False))
    assert torch.equal(five, generate_style_transfer(module, start, num_steps=5,
                                                     optimizer="adam", progress=False))
    assert not torch.equal(two, five)
    images = generate_style_transfer(module, start, num_steps=[3, 6], progress=False)
    assert isinstance(images, list) and len(images) == 2
    assert torch.equal(images[-1], generate_style_transfer(module, start, num_steps=6,
                                                           progress=False))
    for bad, match in (((5, 2), "increasing"), ((0, 3), "ints > 0"), ((), "ints > 0"),
                       ("300", "sequence of step counts"), (2.5, "sequence of step counts")):
        with pytest.raises(ValueError, match=match):
            generate_style_transfer(module, num_steps=bad, progress=False)


def test_show_shows_the_pictures_at_the_thresholds_and_every_show_step(module, monkeypatch):
    import netlens.style_transfer as st

    shown = []
    out = generate_style_transfer(module, num_steps=(2, 4), progress=False, callback=LossReporter(),
                                  show=lambda im, step, losses: shown.append((step, im, losses)),
                                  show_step=3)
    assert [s for s, _, _ in shown] == [2, 3, 4]
    assert torch.equal(shown[0][1], out[0]) and torch.equal(shown[2][1], out[1])
    assert set(shown[0][2]) == {"content", "style", "total"}
    with pytest.raises(ValueError, match="IPython"):
        generate_style_transfer(module, num_steps=1, show=True, progress=False)
    with pytest.raises(ValueError, match="show_step"):
        generate_style_transfer(module, num_steps=1, show_step=2, progress=False)
    with pytest.raises(ValueError, match="show_step must be an int >= 1"):
        generate_style_transfer(module, num_steps=1, show=print, show_step=0, progress=False)
    # in a notebook: a matplotlib figure per picture, titled with the step and the losses
    import IPython.display
    from matplotlib.figure import Figure

    figures = []
    monkeypatch.setattr(st, "_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", figures.append)
    generate_style_transfer(module, num_steps=(1, 2), show=True, progress=False)
    assert len(figures) == 2 and all(isinstance(f, Figure) for f in figures)
    assert figures[1]._suptitle.get_text().startswith("step 2: content ")
    assert len(figures[1].axes) == 1
