"""CAMs and feature visualization on a fixed sample of timm families (random init, small configs).

For each family the default Grad-CAM layer is the one the field uses (for a class-token
transformer the last block's first norm, ``blocks[-1].norm1``, as in pytorch-grad-cam's ViT
example: after the last attention the patch tokens no longer reach the class token), its map has
the model's patch grid, and it equals the Grad-CAM computed here by hand: a forward hook on that
module, ``torch.autograd.grad`` of the predicted class's logit, and an explicit reshape of the
output written from the family's known format (``tokens``: drop the ``extra`` leading tokens,
``[B, h, w, C]`` -> ``[B, C, h, w]``; ``nhwc``: permute; ``nchw``: as is). Token-shaped 4-D
tensors (per-head queries, keys, attention weights) are never read as images.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

timm = pytest.importorskip("timm")

import netlens as nl  # noqa: E402
from netlens import FlatModel, objectives  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Family:
    name: str  # timm model name
    kwargs: dict  # a small config of the same architecture
    size: int  # input side
    layer: str  # the expected default CAM layer (a module path)
    fmt: str  # its output format: "tokens", "nhwc" or "nchw"
    grid: tuple[int, int]  # the patch grid of that layer
    extra: int = 0  # leading non-patch tokens (class, distillation)
    # float64 where the kernels are fast; depthwise and grouped convolutions have only slow
    # float64 kernels on CPU (EfficientNet: minutes), so those families compare in float32
    dtype: torch.dtype = torch.float64
    # parameters to draw at random (N(0, 1)) that timm initializes to zero, where a zero makes
    # every token alike (LeViT's attention biases: its subsampling attention has no residual)
    randomize: str = ""

    def __str__(self) -> str:
        return self.name


VIT = dict(depth=2, img_size=96)
F32 = torch.float32
FAMILIES = [
    Family("vit_tiny_patch16_224", VIT, 96, "blocks.1.norm1", "tokens", (6, 6), 1),
    Family("deit_tiny_patch16_224", VIT, 96, "blocks.1.norm1", "tokens", (6, 6), 1),
    Family("deit_tiny_distilled_patch16_224", VIT, 96, "blocks.1.norm1", "tokens", (6, 6), 2),
    Family("eva02_tiny_patch14_224", dict(depth=2, img_size=98), 98, "blocks.1.norm1",
           "tokens", (7, 7), 1),
    Family("beit_base_patch16_224", dict(VIT, embed_dim=64, num_heads=2), 96, "blocks.1.norm1",
           "tokens", (6, 6), 1),
    Family("xcit_nano_12_p16_224", VIT, 96, "cls_attn_blocks.1.norm1", "tokens", (6, 6), 1),
    Family("cait_xxs24_224", VIT, 96, "blocks_token_only.1.norm1", "tokens", (6, 6), 1),
    Family("convit_tiny", dict(VIT, local_up_to_layer=1), 96, "blocks.1.norm1", "tokens",
           (6, 6), 1),
    Family("coat_lite_tiny", dict(img_size=128), 128, "serial_blocks4.1.norm1", "tokens",
           (4, 4), 1, dtype=F32),
    Family("levit_128s", {}, 224, "stages", "tokens", (4, 4), dtype=F32,  # 196 -> 49 -> 16
           randomize="attention_biases"),
    Family("twins_svt_small", dict(depths=(1, 1, 1, 1)), 128, "norm", "tokens", (4, 4),
           dtype=F32),
    Family("pvt_v2_b0", dict(depths=(1, 1, 1, 1)), 128, "stages", "nchw", (4, 4), dtype=F32),
    Family("swin_tiny_patch4_window7_224",
           dict(depths=(1, 1, 1, 1), embed_dim=32, num_heads=(1, 2, 2, 4), img_size=128,
                window_size=4), 128, "norm", "nhwc", (4, 4), dtype=F32),
    Family("maxvit_rmlp_pico_rw_256", dict(img_size=128), 128, "norm", "nchw", (4, 4),
           dtype=F32),
    Family("convnext_atto", {}, 128, "norm_pre", "nchw", (4, 4), dtype=F32),
    Family("efficientnet_b0", {}, 128, "bn2", "nchw", (4, 4), dtype=F32),
    Family("regnetx_002", {}, 128, "final_conv", "nchw", (4, 4), dtype=F32),
    Family("resnet18d", {}, 128, "layer4", "nchw", (4, 4)),
    Family("mobilevitv2_050", {}, 128, "final_conv", "nchw", (4, 4), dtype=F32),
    Family("poolformer_s12", {}, 128, "stages", "nchw", (4, 4), dtype=F32),
]


@pytest.fixture(scope="module")
def built():
    """family name -> (model in float64, input), built once for the module's tests."""
    cache: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {}

    def get(family: Family) -> tuple[torch.nn.Module, torch.Tensor]:
        if family.name not in cache:
            torch.manual_seed(0)
            model = timm.create_model(family.name, pretrained=False, **family.kwargs)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if family.randomize and family.randomize in name:
                        p.normal_()
            x = torch.rand(1, 3, family.size, family.size, generator=torch.Generator()
                           .manual_seed(1), dtype=family.dtype)
            cache[family.name] = (model.to(family.dtype).eval(), x)
        return cache[family.name]

    return get


def hand_gradcam(model: torch.nn.Module, x: torch.Tensor, family: Family) -> torch.Tensor:
    """Grad-CAM at ``family.layer`` from a forward hook, autograd and an explicit reshape."""
    module = model.get_submodule(family.layer)
    box = []
    handle = module.register_forward_hook(lambda m, i, o: box.append(o))
    try:
        out = model(x)
    finally:
        handle.remove()
    a = box[-1]  # a module called once per pass
    score = out[0, out[0].argmax()]
    g, = torch.autograd.grad(score, a)
    h, w = family.grid

    def as_map(t: torch.Tensor) -> torch.Tensor:
        if family.fmt == "tokens":
            assert t.shape[1] == family.extra + h * w, t.shape
            return t[:, family.extra:].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)
        if family.fmt == "nhwc":
            return t.permute(0, 3, 1, 2)
        return t

    a, g = as_map(a), as_map(g)
    weights = g.mean(dim=(2, 3), keepdim=True)
    return (weights * a).sum(1, keepdim=True).clamp(min=0).detach()


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_default_cam_layer_grid_and_values(built, family):
    model, x = built(family)
    fm = FlatModel(model)
    fm.ensure_traced(x)
    cam = nl.NetLens(model).gradcam(x, None, interpolate="none")
    assert tuple(cam.shape) == (1, 1, *family.grid), f"{family}: map {tuple(cam.shape)}"
    layer = nl.attribution.cam._default_layer(fm)
    assert fm.layer_info(layer).module_name == family.layer
    want = hand_gradcam(model, x, family)
    exact = family.dtype == torch.float64
    torch.testing.assert_close(cam, want, rtol=1e-6 if exact else 1e-3,
                               atol=(1e-12 if exact else 1e-5) * float(want.abs().max()))
    # not striped: the map varies along both axes
    assert cam[0, 0].std(0).max() > 0 and cam[0, 0].std(1).max() > 0, f"{family}: flat map"


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.fmt == "tokens"], ids=str)
def test_token_shaped_4d_tensors_are_never_maps(built, family):
    model, x = built(family)
    fm = FlatModel(model)
    fm.ensure_traced(x)
    tokens = [c for c in fm.layers if c.layout.kind == "tokens"]
    assert family.extra + family.grid[0] * family.grid[1] in {c.shape[1] for c in tokens}
    for c in fm.layers:
        if c.shape is not None and len(c.shape) == 4 and c.layout.is_spatial:
            # the token counts seen before it (a map before them may share a side with them)
            counts = {t.shape[1] for t in tokens if t.order < c.order}
            axes = c.shape[1:3] if c.layout.kind == "nhwc" else c.shape[2:]
            assert not set(axes) & counts, f"{c.name}: {c.shape} read as {c.layout.kind}"


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.fmt == "tokens"][::2], ids=str)
def test_optvis_channel_objective_on_a_token_layer(built, family):
    """The channel of a token layer is found on its grid, and ascent raises it (no random
    transforms: on random-init weights their noise can outweigh 8 steps of a tiny signal)."""
    model, _ = built(family)
    model = model.float()  # OptVis works in float32
    try:
        vis = nl.OptVis(model, objectives.channel(family.layer, 3), transforms=[],
                        size=family.size, generator=torch.Generator().manual_seed(0))
        start = vis.value()
        vis.vis((8,), progress=False)
        assert vis.value() > start, f"{family}: channel 3 of {family.layer}: no progress"
    finally:
        model.to(family.dtype)


def test_torchvision_vit_defaults_to_the_last_blocks_first_norm():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=5).eval()
    x = torch.rand(1, 3, 64, 64)
    with pytest.warns(nl._util.NetlensWarning, match="zero everywhere"):  # its head starts at 0
        blank = nl.attribution.gradcam(model, x, 0)
    assert not blank.any()
    torch.nn.init.normal_(model.heads.head.weight, std=0.1)
    fm = FlatModel(model)
    fm.ensure_traced(x)
    assert nl.attribution.cam._default_layer(fm) == "encoder.layers.encoder_layer_1.ln_1"
    assert nl.attribution.gradcam(model, x, 0, interpolate="none").shape == (1, 1, 4, 4)


def test_deep_dream_on_a_fixed_size_vit_points_to_octaves_1(built):
    family = FAMILIES[0]
    model, x = built(family)
    model = model.float()
    try:
        dreamer = nl.NetDreamer(model)
        image = torch.rand(1, 3, family.size, family.size)
        with pytest.raises(ValueError, match="only one input size.*octaves=1"):
            dreamer.deep_dream(image, "blocks.1", steps=1, progress=False)
        out = dreamer.deep_dream(image, "blocks.1", octaves=1, steps=2, progress=False)
        assert out.shape == image.shape
    finally:
        model.to(family.dtype)
