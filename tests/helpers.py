"""The suite's shared helpers: the small models, the torchvision model-zoo registry and the
model-state check. Tests import them with ``from helpers import ...`` (``pytest.ini`` puts
``tests/`` on the path); fixtures live in ``conftest.py``. No test imports another test module.

No test downloads weights: every torchvision model is built with random init and a fixed seed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

DEMO_SEED = 7  # the seed of the reduced demo that conftest's ``demo_run`` runs once


class EveryReluNet(nn.Module):
    """A CNN with every kind of ReLU call: a module, an in-place module, one module reused twice,
    ``F.relu`` and ``torch.relu`` (CONTRIBUTING.md, test catalogue A1)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu_inplace = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.shared = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv5 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu_inplace(self.conv2(x))
        x = self.shared(self.conv3(x))
        x = self.shared(self.conv4(x) + x)
        x = F.relu(self.conv5(x))
        x = torch.relu(x.mean(dim=(2, 3)))
        return self.fc(x)


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One torchvision family: its smallest builder, a small input size that it accepts."""

    family: str
    builder: str
    size: int
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    slow: bool = False

    def build(self) -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        return getattr(torchvision.models, self.builder)(**self.kwargs).eval()

    def input(self, batch: int = 2, requires_grad: bool = False) -> torch.Tensor:
        g = torch.Generator().manual_seed(1)
        return torch.randn(batch, 3, self.size, self.size, generator=g).requires_grad_(
            requires_grad)


# The smallest member of every torchvision classification family (CONTRIBUTING.md, test
# catalogue).
ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("AlexNet", "alexnet", 64),
    ZooEntry("VGG", "vgg11", 32, slow=True),
    ZooEntry("ResNet", "resnet18", 32),
    ZooEntry("ResNeXt", "resnext50_32x4d", 32),
    ZooEntry("Wide ResNet", "wide_resnet50_2", 32, slow=True),
    ZooEntry("DenseNet", "densenet121", 32),
    ZooEntry("SqueezeNet", "squeezenet1_1", 64),
    ZooEntry("MobileNet v2", "mobilenet_v2", 32),
    ZooEntry("MobileNet v3", "mobilenet_v3_small", 32),
    ZooEntry("EfficientNet", "efficientnet_b0", 32),
    ZooEntry("EfficientNet v2", "efficientnet_v2_s", 32, slow=True),
    ZooEntry("ConvNeXt", "convnext_tiny", 32),
    ZooEntry("RegNet", "regnet_y_400mf", 32),
    ZooEntry("ShuffleNet", "shufflenet_v2_x0_5", 32),
    ZooEntry("MNASNet", "mnasnet0_5", 32),
    ZooEntry("GoogLeNet", "googlenet", 32, {"aux_logits": False, "init_weights": False}),
    ZooEntry("Inception v3", "inception_v3", 75, {"aux_logits": False, "init_weights": False}),
    ZooEntry("ViT", "vit_b_16", 224, slow=True),
    ZooEntry("Swin", "swin_t", 32),
    ZooEntry("Swin v2", "swin_v2_t", 32, slow=True),
    ZooEntry("MaxViT", "maxvit_t", 224, slow=True),
)


def zoo_params() -> list[Any]:
    return [pytest.param(e, id=e.builder, marks=[pytest.mark.slow] if e.slow else [])
            for e in ZOO]


def model_state(model: nn.Module) -> dict[str, Any]:
    """Everything about a model that netlens promises not to change."""
    return {
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "modules": [id(m) for m in model.modules()],
    }


def assert_untouched(model: nn.Module, before: dict[str, Any]) -> None:
    """Fails with the first difference between the model's state and ``before``."""
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks"):
            assert not getattr(m, attr), f"hook left in {name or 'model'}.{attr}"
    after = model_state(model)
    assert after["modules"] == before["modules"], "modules were replaced"
    for key in ("training", "requires_grad", "inplace"):
        assert after[key] == before[key], f"{key} flags changed"
    for k, v in before["state_dict"].items():
        assert torch.equal(after["state_dict"][k], v), f"state_dict entry {k} changed"
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), ".grad changed"


class GuidedRelu(torch.autograd.Function):
    """ReLU whose backward passes relu(grad) * 1[input > 0] (Springenberg et al., 2015)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


class DeconvRelu(torch.autograd.Function):
    """ReLU whose backward passes relu(grad), whatever the input (Zeiler & Fergus, 2014)."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)


class ReluOracle(EveryReluNet):
    """EveryReluNet with every ReLU call replaced by ``relu`` (a custom autograd function)."""

    def __init__(self, relu) -> None:
        super().__init__()
        self.r = relu.apply

    def forward(self, x):
        r = self.r
        x = r(self.conv1(x))
        x = r(self.conv2(x))
        x = r(self.conv3(x))
        x = r(self.conv4(x) + x)
        x = r(self.conv5(x))
        x = r(x.mean(dim=(2, 3)))
        return self.fc(x)


def input_grad(model: nn.Module, x: torch.Tensor, c: int = 2) -> torch.Tensor:
    """d model(x)[:, c].sum() / dx, by plain autograd."""
    xg = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(model(xg)[:, c].sum(), xg)
    return g
