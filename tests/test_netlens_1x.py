"""The call sequences of Netlens 1.4's notebooks and examples, ported to netlens and run on
seeded random-init models (the originals used pretrained weights, which CI cannot download):
each flow runs end to end with the 1.x layer keys, and each step is checked against the netlens
call it maps to (the README's "Coming from Netlens 1.4" table)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

import netlens as nl  # noqa: E402


@pytest.fixture(scope="module")
def alexnet():
    torch.manual_seed(0)
    return torchvision.models.alexnet().eval()


@pytest.fixture(scope="module")
def photo():
    """The original's preprocess_image: a 224-pixel thumbnail, ImageNet-normalized."""
    example = nl.data.example("chelsea")
    x = nl.image.load(example.image, size=(224, 336))  # the aspect kept, as Thumbnail did
    return x, example.target


@pytest.mark.slow
def test_attribution_notebook_flow(alexnet, photo):
    """Visual-Gradient_backprop / Visual-Grad_CAM: NetLens(model, x, cls) and its show_*,
    generate_* and grad_cam calls, with the 1.x keys features-conv-4 and features-relu-4."""
    x, cls = photo
    lens = nl.NetLens(alexnet)
    vanilla = lens.saliency(x, cls)                       # show_input_gradient_backprop(False)
    assert len(nl.plot.explain(x, vanilla).axes) == 3     # original | colour | gray
    guided = lens.guided_backprop(x, cls)                 # show_input_gradient_backprop(True)
    assert len(nl.plot.explain(x, guided, "saliency").axes) == 3  # + positive/negative figure
    assert not torch.equal(vanilla, guided)
    smooth = lens.smooth_grad(x, cls, n=2, guided=True,   # generate_smooth_gradient(guided)
                              generator=torch.Generator().manual_seed(0))
    ig = lens.integrated_gradients(x, cls, steps=4, guided=True)  # generate_integrated_gradient
    assert smooth.shape == ig.shape == x.shape
    channel = lens.layer_channel_gradient(x, "features-relu-4", 3, guided=True)
    assert torch.equal(channel, lens.layer_channel_gradient(x, "features.11", 3, guided=True))
    cam = lens.gradcam(x, cls, layer="features-conv-4")   # grad_cam('features-conv-4')
    assert cam.shape == (1, 1, *x.shape[2:])
    assert torch.equal(cam, lens.gradcam(x, cls, layer="features.10"))
    blocks = lens.gradcam(x, cls, layer="features-conv-4", interpolate=False, normalize=True)
    assert blocks.shape == cam.shape and blocks.min() == 0 and blocks.max() == 1  # as 1.x did
    assert len(nl.plot.explain(x, cam, "cam").axes) == 3  # heat map | overlay | gray CAM
    both = lens.guided_gradcam(x, cls, layer="features-relu-4")  # guided_grad_cam(...)
    assert both.shape == x.shape and len(nl.plot.explain(x, both).axes) == 3


@pytest.mark.slow
def test_generation_notebook_flow(alexnet):
    """Visual-Generation: NetDreamer's filter visualization, class sample, deep dream and
    inverted image, on the 1.x keys (few steps, small images)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    features = torchvision.models.vgg11().features.eval()  # the original: vgg19().features
    dreamer = nl.NetDreamer(features)
    image = dreamer.channel_visualization("conv-5", 5, size=64, steps=2, generator=g)
    assert image.shape == (1, 3, 64, 64) and 0 <= float(image.min()) <= float(image.max()) <= 1
    sample = nl.NetDreamer(alexnet).class_visualization(130, size=96, steps=2, generator=g)
    assert sample.shape == (1, 3, 96, 96)
    photo = nl.data.example("coffee", 96).image
    dream = dreamer.deep_dream(photo, "conv-7", 94, octaves=1, steps=2, generator=g)
    assert dream.shape == photo.shape
    inverted = nl.NetDreamer(alexnet).inverted_image(nl.data.example("coffee", 128).image,
                                                     "features-conv-1", steps=2, generator=g)
    assert inverted.shape == (1, 3, 128, 128)


@pytest.mark.slow
def test_optvis_notebook_flow(capsys):
    """Visual-Generation_with_OptVis: FlatModel(...).summary(), a class visualization through
    'classifier-linear-2' and a channel visualization of 'features-conv-7', printing the
    objective every few steps (the original printed every 50 runs)."""
    torch.manual_seed(0)
    network = torchvision.models.vgg11().eval()
    model = nl.FlatModel(network)
    table = model.summary()
    assert "classifier-linear-2" in table and "features-conv-7" in table
    capsys.readouterr()
    g = torch.Generator().manual_seed(0)
    otter = nl.OptVis(model, nl.objectives.channel("classifier-linear-2", 360), size=64,
                      generator=g)
    out = otter.vis((2, 4), show_step=2, progress=False)
    assert len(out) == 2 and out[-1].shape == (1, 3, 64, 64)
    assert capsys.readouterr().out.count("objective") == 2
    vis = nl.OptVis(model, nl.objectives.channel("features-conv-7", 11), size=64, generator=g)
    assert vis.vis((2,), progress=False)[0].shape == (1, 3, 64, 64)


def test_occlusion_notebook_flow(alexnet, photo):
    """occlusion.ipynb: generate_occlusion_heatmap(model, x, 243, window=(40, 40)) gave the
    occluded probability per window, the class map and the scaled heat map; the detected
    classes were printed through IMAGENET_LABELS."""
    x = nl.image.load(nl.data.example("chelsea").image, size=96)
    heat, classes = nl.attribution.occlusion(alexnet, x, 243, window=40, stride=40,
                                             score="probability", return_classes=True)
    assert heat.shape == (1, 1, 96, 96) and classes.shape == (1, 3, 3)
    assert 0 <= float(heat.min()) <= float(heat.max()) <= 1
    labels = nl.data.imagenet_classes()
    found, counts = torch.unique(classes, return_counts=True)
    assert int(counts.sum()) == 9 and all(isinstance(labels[int(c)], str) for c in found)


@pytest.mark.slow
def test_style_transfer_notebook_flow():
    """neural_style_transfer: StyleTransferModule(arch, content, ['conv-3'], style,
    ['conv-0' .. 'conv-4']) on VGG features (the original: vgg19().features with a
    Normalization layer; netlens normalizes inside), generate_style_transfer with a tuple of
    step counts (one image per threshold), compute_losses' four terms, and the objective called
    on an image."""
    torch.manual_seed(0)
    cnn = torchvision.models.vgg11().features.eval()
    content = nl.data.example("chelsea", 48).image
    style = nl.data.example("coffee", 48).image
    module = nl.StyleTransferModule(cnn, content, ["conv-3"], style,
                                    [f"conv-{i}" for i in range(5)])
    outputs = nl.generate_style_transfer(module, content.clone(), num_steps=(2, 4),
                                         style_weight=1e6, content_weight=1, tv_weight=1e-3,
                                         progress=False)
    assert len(outputs) == 2 and all(o.shape == content.shape for o in outputs)
    total, style_loss, content_loss, tv = module.compute_losses(outputs[-1], 1e6, 1, 1e-3)
    torch.testing.assert_close(total, style_loss + content_loss + tv)
    objective = nl.StyleTransferObjective(module, 1e6, 1, 1e-3)
    torch.testing.assert_close(objective(outputs[-1]), total)
