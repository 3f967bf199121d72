"""The CAM driver: a variant sees the model, input, layer, A, G and the bound target; token and
channels-last layers are written back as well as read, so ablation-style CAMs work on ViT/Swin."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import nn

import netlens as nl
from netlens.adapter import Layout
from netlens.attribution import CamContext, cam_driver
from netlens.attribution.cam import gradcam

from helpers import assert_untouched, model_state, tiny_vit


def tiny_swin() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.swin_t().double().eval()


def test_layout_from_map_inverts_to_map():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 1 + 4 * 3, 5, generator=g, dtype=torch.float64)
    lay = Layout("tokens", 1, (8, 8))
    m = lay.to_map(tokens, (32, 24))
    assert m.shape == (2, 5, 4, 3)
    assert torch.equal(lay.from_map(m, tokens), tokens)
    nhwc = torch.randn(2, 4, 3, 5, generator=g)
    assert torch.equal(Layout("nhwc").from_map(Layout("nhwc").to_map(nhwc), nhwc), nhwc)
    with pytest.raises(ValueError, match="cannot be written"):
        Layout("other").from_map(m, tokens)


@dataclasses.dataclass
class _Ablation:
    """A minimal ablation CAM written against the extension point: the weight of channel c is
    the relative drop of the score when channel c of the layer is zeroed (Desai & Ramaswamy,
    "Ablation-CAM", WACV 2020), through ``ctx.scores_with_layer``."""

    gradients: bool = False
    channels: int = 3  # the first few channels only: enough to check, cheap on Swin's 384
    seen: list = dataclasses.field(default_factory=list)

    def __call__(self, ctx: CamContext) -> torch.Tensor:
        self.seen.append(ctx)
        batch, channels = ctx.activations.shape[:2]
        base = ctx.scores(torch.arange(batch), ctx.x)
        weights = torch.zeros(batch, channels, dtype=ctx.x.dtype)
        for c in range(min(channels, self.channels)):
            maps = ctx.activations.clone()
            maps[:, c] = 0
            weights[:, c] = (base - ctx.scores_with_layer(torch.arange(batch), maps)) / base
        return weights


@pytest.mark.parametrize("build, layer", [
    (tiny_vit, "encoder.layers.encoder_layer_1.ln_1"),
    pytest.param(tiny_swin, "features.5", marks=pytest.mark.slow),  # swin_t: 28M parameters
])
def test_ablation_style_cam_on_token_and_channels_last_layers(build, layer):
    model = build()
    before = model_state(model)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fm = nl.FlatModel(model)
    fm.ensure_traced(x)
    assert fm.layout(layer).kind in ("tokens", "nhwc")
    variant = _Ablation()
    cam, target = cam_driver(model, x, [3, 5], variant, layer=layer, relu=False)
    ctx = variant.seen[0]
    assert ctx.layer == layer and ctx.gradients is None and ctx.target.classes.tolist() == [3, 5]
    # Writing the unchanged map back reproduces the clean scores exactly.
    same = ctx.scores_with_layer(torch.arange(2), ctx.activations)
    torch.testing.assert_close(same, ctx.scores(torch.arange(2), x), rtol=0, atol=1e-12)
    # Oracle: zero channel 0 of the layer by a plain forward hook, in the layer's own layout.
    with torch.no_grad():
        base = model(x).gather(1, torch.tensor([[3], [5]]))[:, 0]

        def zero(module, args, out):
            out = out.clone()
            if out.dim() == 3:
                out[:, 1:, 0] = 0  # tokens: every patch token's channel 0, not the class token
            else:
                out[..., 0] = 0  # channels last
            return out

        handle = fm[layer].register_forward_hook(zero)
        try:
            ablated = model(x).gather(1, torch.tensor([[3], [5]]))[:, 0]
        finally:
            handle.remove()
    ours = (base - ablated) / base
    weights = variant(ctx)
    torch.testing.assert_close(weights[:, 0], ours, rtol=1e-9, atol=1e-12)
    # The driver combines the variant's weights with A and upsamples (relu=False here).
    raw = (weights[:, :, None, None] * ctx.activations).sum(1, keepdim=True)
    want = torch.nn.functional.interpolate(raw, size=(32, 32), mode="bilinear",
                                           align_corners=False)
    assert cam.shape == (2, 1, 32, 32)
    torch.testing.assert_close(cam, want, rtol=1e-9, atol=1e-12)
    assert_untouched(model, before)


def test_variants_see_gradients_with_a_k_axis(every_relu_net):
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    seen = []

    def mean_grad(ctx: CamContext) -> torch.Tensor:
        seen.append(ctx)
        return ctx.gradients.mean(dim=(-2, -1))

    mean_grad.gradients = True  # type: ignore[attr-defined]
    cam, _ = cam_driver(every_relu_net, x, nl.targets.TopK(3), mean_grad, layer="conv4")
    assert seen[0].gradients.shape == (2, 3, 8, 16, 16) and cam.shape == (2, 3, 1, 16, 16)
    top = every_relu_net(x).topk(3, dim=1).indices
    for j in range(3):
        torch.testing.assert_close(cam[:, j], gradcam(every_relu_net, x, top[:, j],
                                                      layer="conv4"), rtol=0, atol=1e-12)
