"""The networks of :mod:`netlens.zoo` and their constants; import them from there.

:class:`ShapesNet` classifies shapes images, :class:`ShapesSegNet` segments them; both are built
from torchvision-style parts (:class:`BasicBlock`, in-place ReLUs, batch norm) so that they
exercise what real models do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from netlens.data import SHAPES_CLASSES

__all__ = [
    "SEGMENTATION_CLASSES", "SHAPES_MEAN", "SHAPES_STD", "BasicBlock", "ShapesNet", "ShapesSegNet",
]

SHAPES_MEAN: tuple[float, float, float] = (0.0, 0.0, 0.0)
"""Per-channel mean to subtract before :class:`ShapesNet`: none, it takes raw ``[0, 1]`` images."""
SHAPES_STD: tuple[float, float, float] = (1.0, 1.0, 1.0)
"""Per-channel std to divide by before :class:`ShapesNet`: none, it takes raw ``[0, 1]`` images."""

SEGMENTATION_CLASSES: tuple[str, ...] = ("background", *SHAPES_CLASSES)
"""Output channels of :class:`ShapesSegNet`: 0 is the background (the distractor included),
``k + 1`` is ``SHAPES_CLASSES[k]``; :func:`~netlens.zoo.segmentation_labels` gives the true
class per pixel."""


class BasicBlock(nn.Module):
    """A ResNet basic block, as in torchvision: its one ``relu`` module is called twice.

    ``relu(bn1(conv1(x)))``, then ``bn2(conv2(.))`` plus the (possibly downsampled) input, added in
    place, then the same ``relu`` again.

    Args:
        in_channels: Channels of the input.
        out_channels: Channels of the output.
        stride: Stride of the first convolution (and of the shortcut when downsampling).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` ``(B, C_in, H, W)``; returns ``(B, C_out, H/s, W/s)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class _ShapesBackbone(nn.Module):
    """The shapes models' shared backbone: ``conv1``, ``bn1``, ``relu``, ``layer1`` to
    ``layer3`` (the names their weight files use) and ``widths``, the four widths as ints."""

    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    relu: nn.ReLU
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"widths must have 4 entries, got {len(widths)}")
        w0, w1, w2, w3 = (int(w) for w in widths)
        self.widths = (w0, w1, w2, w3)
        self.conv1 = nn.Conv2d(3, w0, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w0)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(w0, w1, 2))
        self.layer2 = nn.Sequential(BasicBlock(w1, w2, 1))
        self.layer3 = nn.Sequential(BasicBlock(w2, w3, 1))


class ShapesNet(_ShapesBackbone):
    """A small ResNet for the shapes dataset.

    ``conv1`` (stride 2) - ``bn1`` - ``relu``, then ``layer1`` (stride 2), ``layer2`` (stride 1) and
    ``layer3`` (stride 1) of one :class:`BasicBlock` each, global average pooling ``avgpool`` and a
    linear classifier ``fc``. The output of ``layer3`` (``layer3.0.relu``'s second call) is the
    last spatial map, at a quarter of the input resolution.

    Args:
        num_classes: Number of output logits.
        widths: Channels of the stem and of ``layer1``, ``layer2`` and ``layer3``.

    Example:
        >>> ShapesNet()(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 4])
    """

    #: The input normalization the model expects (none: raw ``[0, 1]`` images); netlens's
    #: image-optimization tools read these attributes.
    input_mean: tuple[float, float, float] = SHAPES_MEAN
    input_std: tuple[float, float, float] = SHAPES_STD

    def __init__(
        self,
        num_classes: int = len(SHAPES_CLASSES),
        widths: Sequence[int] = (24, 32, 48, 64),
    ) -> None:
        super().__init__(widths)
        w3 = self.widths[3]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last spatial map (``layer3``'s output) ``(B, widths[3], H/4, W/4)``.

        Args:
            x: Images ``(B, 3, H, W)`` in ``[0, 1]``.
        """
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify images ``x`` ``(B, 3, H, W)`` in ``[0, 1]``; returns ``(B, classes)`` logits."""
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


class ShapesSegNet(_ShapesBackbone):
    """A small encoder-decoder that segments shapes images: :data:`SEGMENTATION_CLASSES` per pixel.

    The encoder is :class:`ShapesNet`'s: ``conv1`` (stride 2) - ``bn1`` - ``relu``, then
    ``layer1`` (stride 2), ``layer2`` and ``layer3`` of one :class:`BasicBlock` each, at a quarter
    of the input resolution. The decoder reduces ``layer3`` to ``decoder_width`` channels
    (``reduce``: 1x1 convolution, batch norm, in-place ReLU), upsamples it bilinearly to the
    stem's half resolution, concatenates the stem's output (a skip connection) and fuses both in
    ``decoder`` (3x3 convolution, batch norm, in-place ReLU); the 1x1 convolution ``classifier``
    gives the logits, upsampled bilinearly to the input size. ``decoder`` is the last feature map
    and ``classifier`` the last spatial layer (the default CAM layer, whose Grad-CAM for a
    segmentation target is ``decoder``'s up to the classifier's bias). Raw ``[0, 1]`` input, no
    normalization; the spatial size need not be a multiple of 4.

    Args:
        widths: Channels of the stem and of ``layer1``, ``layer2`` and ``layer3``.
        decoder_width: Channels of ``reduce`` and ``decoder``.

    Example:
        >>> ShapesSegNet()(torch.rand(2, 3, 64, 64))["out"].shape
        torch.Size([2, 5, 64, 64])
    """

    input_mean: tuple[float, float, float] = SHAPES_MEAN
    input_std: tuple[float, float, float] = SHAPES_STD

    def __init__(self, widths: Sequence[int] = (24, 32, 48, 64), decoder_width: int = 32) -> None:
        super().__init__(widths)
        w0, w3, d = self.widths[0], self.widths[3], int(decoder_width)
        self.reduce = nn.Sequential(
            nn.Conv2d(w3, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True)
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(d + w0, d, 3, 1, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True)
        )
        self.classifier = nn.Conv2d(d, len(SEGMENTATION_CLASSES), 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Segment images ``x`` ``(B, 3, H, W)`` in ``[0, 1]``.

        Returns:
            ``{"out": logits}``, logits ``(B, len(SEGMENTATION_CLASSES), H, W)``.
        """
        stem = self.relu(self.bn1(self.conv1(x)))
        deep = self.reduce(self.layer3(self.layer2(self.layer1(stem))))
        deep = F.interpolate(deep, size=stem.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.decoder(torch.cat([deep, stem], 1)))
        out = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": out}
