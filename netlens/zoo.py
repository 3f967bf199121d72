"""The embedded default model: a small ResNet trained on the synthetic shapes dataset.

No pretrained weights can be downloaded on every machine, and a demo on random weights explains
nothing, so netlens ships :class:`ShapesNet`, trained by :func:`train` on
:func:`netlens.data.make_shapes`, as a file of a few hundred KB. Its explanations can be checked
against a known answer: the mask of the class object in each image.

The network is built like torchvision's ResNet on purpose, so that it exercises what real models
do: in-place ReLUs, a ReLU module called twice per residual block, in-place residual additions and
batch norm. Its input is an RGB image in ``[0, 1]`` with no normalization (:data:`SHAPES_MEAN`,
:data:`SHAPES_STD`). It is trained at 64x64 and classifies well from about 48 to 80 pixels
(accuracy about 0.85 at 48 and 80, 1.0 at 64, chance from about 128); any size from 32 pixels up
runs, and the last residual stage keeps a spatial map of ``size / 4`` (16x16 at 64x64) for CAMs.

Retrain and rewrite the shipped weights with ``python -m netlens.zoo train [--out PATH]``.

Example:
    >>> from netlens.data import make_shapes
    >>> model = shapes_model()
    >>> batch = make_shapes(4, seed=123)
    >>> model(batch.images).shape
    torch.Size([4, 4])
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from netlens.data import SHAPES_CLASSES, ShapesBatch, make_shapes

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "SHAPES_MEAN",
    "SHAPES_STD",
    "BasicBlock",
    "ShapesNet",
    "evaluate",
    "save_weights",
    "shapes_model",
    "train",
]

SHAPES_MEAN: tuple[float, float, float] = (0.0, 0.0, 0.0)
"""Per-channel mean to subtract before :class:`ShapesNet`: none, it takes raw ``[0, 1]`` images."""
SHAPES_STD: tuple[float, float, float] = (1.0, 1.0, 1.0)
"""Per-channel std to divide by before :class:`ShapesNet`: none, it takes raw ``[0, 1]`` images."""

_WEIGHTS = "shapes_net.pt"
_DEFAULT_STEPS = 800
_DEFAULT_BATCH = 64
# Seed of the held-out images; training draws from the stream of its own seed (0 by default).
_EVAL_SEED = 2024


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


class ShapesNet(nn.Module):
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


def _weights_file() -> Traversable:
    return resources.files("netlens").joinpath("weights").joinpath(_WEIGHTS)


def shapes_model(pretrained: bool = True, device: torch.device | str | None = None) -> ShapesNet:
    """Return the embedded default model, in eval mode.

    Args:
        pretrained: Load the weights shipped in ``netlens/weights/shapes_net.pt`` (no network
            access). With ``False``, the model keeps its random initialization from the global RNG,
            like any ``nn.Module``.
        device: Device to put the model on; defaults to the CPU.

    Returns:
        A :class:`ShapesNet` taking ``(B, 3, H, W)`` images in ``[0, 1]`` and returning
        ``(B, 4)`` logits for :data:`netlens.data.SHAPES_CLASSES`.

    Raises:
        FileNotFoundError: If the weights file is missing from the installation.
    """
    if not pretrained:
        return ShapesNet().to(device).eval()
    with torch.random.fork_rng(devices=[]):  # the initialization it overwrites: global RNG kept
        model = ShapesNet()
    with resources.as_file(_weights_file()) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    n: int = 2000,
    *,
    seed: int = _EVAL_SEED,
    size: int = 64,
    batch_size: int = 500,
) -> float:
    """Accuracy of ``model`` on ``n`` fresh shapes images.

    Args:
        model: A classifier of ``(B, 3, size, size)`` images in ``[0, 1]``; evaluated as it is, so
            put it in eval mode first.
        n: Number of images.
        seed: Seed of the test images; keep it different from the training seed.
        size: Image size.
        batch_size: Images per forward pass.

    Returns:
        The fraction of correctly classified images.
    """
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, n, batch_size):
        batch = make_shapes(min(batch_size, n - start), size=size, generator=gen, device=device)
        correct += int((model(batch.images).argmax(1) == batch.labels).sum())
    return correct / max(n, 1)


def _dense_targets(batch: ShapesBatch, shape: torch.Size, n_classes: int) -> torch.Tensor:
    """Per-cell class probabilities ``(B, n_classes + 2, h, w)``: background, classes, distractor.

    Each cell of the ``(h, w)`` feature map gets the fraction of its pixels covered by the object
    (on the object's class), by the distractor, and by neither (background).
    """
    obj = F.adaptive_avg_pool2d(batch.masks.float(), shape)
    dis = F.adaptive_avg_pool2d(batch.distractor_masks.float(), shape)
    b = obj.shape[0]
    target = torch.zeros(b, n_classes + 2, *shape, device=obj.device)
    target[:, :1] = 1.0 - obj - dis
    target[:, -1:] = dis
    index = (batch.labels + 1).view(b, 1, 1, 1).expand(b, 1, *shape)
    return target.scatter_(1, index, obj)


def train(
    *,
    steps: int = _DEFAULT_STEPS,
    batch_size: int = _DEFAULT_BATCH,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    aux_weight: float = 1.0,
    size: int | Sequence[int] = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
) -> ShapesNet:
    """Train a :class:`ShapesNet` from scratch on freshly generated shapes.

    Every step draws a new batch from :func:`netlens.data.make_shapes` with a generator seeded by
    ``seed``; the initialization is seeded by ``seed`` too, inside ``torch.random.fork_rng`` so the
    caller's global RNG is left as it was. AdamW with a one-cycle learning-rate schedule.

    Besides the classification loss, a training-only 1x1 convolution on the last spatial map
    (``layer3``) is trained to segment each feature cell into background, the object's class or
    distractor, weighted by ``aux_weight``. This dense supervision from the masks ties the model's
    evidence to the object (Grad-CAM at ``layer3`` points into the object mask on about 96% of
    fresh images, never at the distractor), which is what makes the shipped model a test-bed with
    a known answer. The head is discarded: the returned model is a plain classifier.
    ``aux_weight=0`` trains on labels alone.

    The defaults (800 steps of 64 images, the shipped weights) take about 330 CPU-seconds, so about
    3 minutes on two idle cores, and reach 99.9% accuracy on fresh images.

    Args:
        steps: Optimizer steps.
        batch_size: Images per step.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        aux_weight: Weight of the auxiliary segmentation loss.
        size: Image size of the training data, or sizes to draw from at random for each step.
        seed: Seed of the initialization and of the training data.
        device: Device to train on; defaults to the CPU.
        progress: Show a progress bar with the running loss.
        callback: Called after every step with the step index and that step's total loss.

    Returns:
        The trained model, in eval mode, on ``device``.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    n_classes = len(SHAPES_CLASSES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapesNet(n_classes)
        aux_head = nn.Conv2d(model.widths[3], n_classes + 2, 1)
    # channels_last is markedly faster for these convolutions on CPU.
    model = model.to(device, memory_format=torch.channels_last)
    aux_head = aux_head.to(device)
    gen = torch.Generator().manual_seed(seed)
    params = [*model.parameters(), *aux_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.2
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc="train ShapesNet")
    model.train()
    running = math.nan
    sizes = [size] if isinstance(size, int) else [int(s) for s in size]
    if not sizes:
        raise ValueError("size must be an int or a non-empty sequence of ints")
    for step in range(steps):
        step_size = sizes[0]
        if len(sizes) > 1:
            step_size = sizes[int(torch.randint(len(sizes), (), generator=gen))]
        batch = make_shapes(batch_size, size=step_size, generator=gen, device=device)
        feats = model.features(batch.images.contiguous(memory_format=torch.channels_last))
        logits = model.fc(torch.flatten(model.avgpool(feats), 1))
        loss = F.cross_entropy(logits, batch.labels)
        if aux_weight:
            target = _dense_targets(batch, feats.shape[-2:], n_classes)
            loss = loss + aux_weight * F.cross_entropy(aux_head(feats), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        value = loss.item()
        running = value if math.isnan(running) else 0.95 * running + 0.05 * value
        if callback is not None:
            callback(step, value)
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{running:.4f}")
    if bar is not None:
        bar.close()
    return model.to(memory_format=torch.contiguous_format).eval()


def save_weights(model: ShapesNet, path: str | os.PathLike[str]) -> None:
    """Write ``model``'s ``state_dict`` as float32 CPU tensors, as :func:`shapes_model` loads it.

    Args:
        model: The model to save.
        path: Destination file.
    """
    state = {
        k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    torch.save(state, path)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netlens.zoo", description="netlens model zoo")
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train ShapesNet and write its weights")
    p_train.add_argument("--out", default=None, help="weights file (default: the shipped one)")
    p_train.add_argument("--steps", type=int, default=_DEFAULT_STEPS)
    p_train.add_argument("--batch-size", type=int, default=_DEFAULT_BATCH)
    p_train.add_argument("--seed", type=int, default=0)
    p_train.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model = train(
        steps=args.steps, batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress
    )
    elapsed = time.perf_counter() - start
    accuracy = evaluate(model, 2000, seed=_EVAL_SEED)
    out = args.out
    if out is None:
        with resources.as_file(_weights_file()) as path:
            out = str(path)
    save_weights(model, out)
    size_kb = os.path.getsize(out) / 1024
    print(
        f"trained in {elapsed:.1f} s; accuracy {accuracy:.4f} on 2000 fresh images (seed "
        f"{_EVAL_SEED}); wrote {out} ({size_kb:.0f} KB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
