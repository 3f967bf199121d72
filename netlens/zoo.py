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

It also ships :class:`ShapesSegNet`, a small encoder-decoder trained by
:func:`train_segmentation` to segment the same images per pixel (:data:`SEGMENTATION_CLASSES`:
background, then the four shapes), loaded by :func:`shapes_segmentation_model`. It returns
torchvision's segmentation output, ``{"out": logits}``, so dense targets such as
``netlens.targets.Segmentation`` can be checked against the masks too.

Retrain and rewrite the shipped weights with ``netlens zoo train [--out PATH]`` (the
classifier) and ``netlens zoo train-segmentation [--out PATH]`` (the segmentation
model); each prints its held-out scores.

Example:
    >>> from netlens.data import make_shapes
    >>> model = shapes_model()
    >>> batch = make_shapes(4, seed=123)
    >>> model(batch.images).shape
    torch.Size([4, 4])
    >>> shapes_segmentation_model()(batch.images)["out"].shape
    torch.Size([4, 5, 64, 64])
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from netlens._zoo_nets import (
    SEGMENTATION_CLASSES,
    SHAPES_MEAN,
    SHAPES_STD,
    BasicBlock,
    ShapesNet,
    ShapesSegNet,
)
from netlens._zoo_train import confusion_matrix, dense_targets, fit, segmentation_labels
from netlens.data import SHAPES_CLASSES, make_shapes

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "SEGMENTATION_CLASSES",
    "SHAPES_MEAN",
    "SHAPES_STD",
    "BasicBlock",
    "SegmentationScores",
    "ShapesNet",
    "ShapesSegNet",
    "evaluate",
    "evaluate_segmentation",
    "save_weights",
    "segmentation_labels",
    "shapes_model",
    "shapes_segmentation_model",
    "shapes_model_random_labels",
    "train",
    "train_random_labels",
    "random_label_set",
    "train_segmentation",
    "retrain",
]

_WEIGHTS = "shapes_net.pt"
_DEFAULT_STEPS = 800
_DEFAULT_BATCH = 64
_SEG_WEIGHTS = "shapes_segnet.pt"
_RANDOM_WEIGHTS = "shapes_net_random_labels.pt"
_RANDOM_IMAGES, _RANDOM_STEPS, _RANDOM_SEED = 512, 1000, 777
_SEG_STEPS = 1000
_SEG_BATCH = 32
# Seed of the held-out images; training draws from the stream of its own seed (0 by default).
_EVAL_SEED = 2024
_M = TypeVar("_M", bound=nn.Module)


def _weights_file(name: str = _WEIGHTS) -> Traversable:
    return resources.files("netlens").joinpath("weights").joinpath(name)


def _load(model_class: type[_M], name: str, device: torch.device | str | None) -> _M:
    """``model_class()`` with the shipped weights ``name``, in eval mode; global RNG kept."""
    with torch.random.fork_rng(devices=[]):  # the initialization it overwrites: global RNG kept
        model = model_class()
    with resources.as_file(_weights_file(name)) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


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
    return _load(ShapesNet, _WEIGHTS, device)


def shapes_model_random_labels(device: torch.device | str | None = None) -> ShapesNet:
    """The shipped :class:`ShapesNet` trained on *random labels* (:func:`train_random_labels`):
    the model of Adebayo et al.'s data randomization test
    (:func:`netlens.metrics.data_randomization`).

    It memorized 512 fixed images whose labels were drawn at random (training accuracy 1.0),
    so it has learned nothing about the shapes: about chance (0.25) on fresh images. An
    explanation that looks the same on it as on :func:`shapes_model` does not explain what the
    model learned from its labels. Loaded in eval mode; the global RNG is left as it was.

    Args:
        device: Device to put the model on; defaults to the CPU.

    Raises:
        FileNotFoundError: If the weights file is missing from the installation.
    """
    return _load(ShapesNet, _RANDOM_WEIGHTS, device)


def shapes_segmentation_model(
    pretrained: bool = True, device: torch.device | str | None = None
) -> ShapesSegNet:
    """Return the shipped segmentation model, in eval mode.

    Loading leaves the global RNG as it was (the random initialization that the weights
    overwrite runs in a forked RNG), as :func:`shapes_model` does.

    Args:
        pretrained: Load the weights shipped in ``netlens/weights/shapes_segnet.pt`` (no network
            access). With ``False``, the model keeps its random initialization from the global RNG.
        device: Device to put the model on; defaults to the CPU.

    Returns:
        A :class:`ShapesSegNet` taking ``(B, 3, H, W)`` images in ``[0, 1]`` and returning
        ``{"out": logits}`` with logits ``(B, 5, H, W)`` for :data:`SEGMENTATION_CLASSES`.

    Raises:
        FileNotFoundError: If the weights file is missing from the installation.
    """
    if not pretrained:
        return ShapesSegNet().to(device).eval()
    return _load(ShapesSegNet, _SEG_WEIGHTS, device)


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


class SegmentationScores(NamedTuple):
    """Held-out scores of a segmentation model, from pixel counts summed over all images.

    Attributes:
        pixel_accuracy: Fraction of pixels whose predicted class is the true one.
        mean_iou: Mean over the four shapes classes of their intersection over union (the
            background's IoU, near 1, is left out).
        iou: IoU per class name of :data:`SEGMENTATION_CLASSES`, background included.
    """

    pixel_accuracy: float
    mean_iou: float
    iou: dict[str, float]


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    n: int = 1000,
    *,
    seed: int = _EVAL_SEED,
    size: int = 64,
    batch_size: int = 250,
) -> SegmentationScores:
    """Pixel accuracy and IoU of ``model`` on ``n`` fresh shapes images.

    Args:
        model: A segmentation model of ``(B, 3, size, size)`` images in ``[0, 1]`` returning
            ``(B, 5, size, size)`` logits (or ``{"out": logits}``) for
            :data:`SEGMENTATION_CLASSES`; evaluated as it is, so put it in eval mode first.
        n: Number of images (at least 1).
        seed: Seed of the test images; keep it different from the training seed.
        size: Image size.
        batch_size: Images per forward pass.

    Returns:
        The :class:`SegmentationScores` against :func:`segmentation_labels`.

    Raises:
        ValueError: If ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    classes = len(SEGMENTATION_CLASSES)
    counts = torch.zeros(classes, classes, dtype=torch.long)
    for start in range(0, n, batch_size):
        batch = make_shapes(min(batch_size, n - start), size=size, generator=gen, device=device)
        out = model(batch.images)
        out = out["out"] if isinstance(out, dict) else out
        counts += confusion_matrix(out.argmax(1), segmentation_labels(batch), classes)
    hits = counts.diag().double()
    union = counts.sum(0) + counts.sum(1) - counts.diag()
    iou = (hits / union.clamp(min=1)).tolist()
    return SegmentationScores(
        pixel_accuracy=float(hits.sum() / counts.sum()),
        mean_iou=sum(iou[1:]) / (classes - 1),
        iou=dict(zip(SEGMENTATION_CLASSES, iou)),
    )


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
    sizes = [size] if isinstance(size, int) else [int(s) for s in size]
    if not sizes:
        raise ValueError("size must be an int or a non-empty sequence of ints")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapesNet(n_classes)
        aux_head = nn.Conv2d(model.widths[3], n_classes + 2, 1)
    # channels_last is markedly faster for these convolutions on CPU.
    model = model.to(device).to(memory_format=torch.channels_last)
    aux_head = aux_head.to(device)
    gen = torch.Generator().manual_seed(seed)

    def step_loss(step: int) -> torch.Tensor:
        step_size = sizes[0]
        if len(sizes) > 1:
            step_size = sizes[int(torch.randint(len(sizes), (), generator=gen))]
        batch = make_shapes(batch_size, size=step_size, generator=gen, device=device)
        feats = model.features(batch.images.contiguous(memory_format=torch.channels_last))
        logits = model.fc(torch.flatten(model.avgpool(feats), 1))
        loss = F.cross_entropy(logits, batch.labels)
        if aux_weight:
            target = dense_targets(batch, (feats.shape[-2], feats.shape[-1]), n_classes)
            loss = loss + aux_weight * F.cross_entropy(aux_head(feats), target)
        return loss

    model.train()
    fit([*model.parameters(), *aux_head.parameters()], step_loss, steps=steps, lr=lr,
        weight_decay=weight_decay, desc="train ShapesNet", progress=progress, callback=callback)
    return model.to(memory_format=torch.contiguous_format).eval()


def train_random_labels(
    *,
    images: int = _RANDOM_IMAGES,
    steps: int = _RANDOM_STEPS,
    batch_size: int = _DEFAULT_BATCH,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    seed: int = _RANDOM_SEED,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
) -> ShapesNet:
    """Train a :class:`ShapesNet` to memorize ``images`` fixed shapes images with random labels.

    Adebayo et al., "Sanity Checks for Saliency Maps" (NeurIPS 2018), section 4: a model trained
    on permuted labels can only memorize, so an explanation method that is sensitive to what the
    model learned must explain it differently from the model trained on the true labels. The
    labels are drawn uniformly (independent of the images) from ``seed``'s generator, as are the
    images and the batches; the initialization too, in a forked RNG. No auxiliary segmentation
    loss (:func:`train`'s would teach the true classes through the masks). The defaults reach a
    training accuracy of 1.0 (0.92 after 500 steps) in about 1000 CPU-seconds.

    Args:
        images: Size of the fixed training set.
        steps: Optimizer steps.
        batch_size: Images per step, drawn with replacement from the set.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        seed: Seed of the images, their labels, the batches and the initialization.
        device: Device to train on; defaults to the CPU.
        progress: Show a progress bar with the running loss.
        callback: Called after every step with the step index and that step's loss.

    Returns:
        The trained model, in eval mode, on ``device``; :func:`random_label_set` gives the
        memorized images and labels.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    data_images, labels = _random_label_set(images, gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapesNet(len(SHAPES_CLASSES))
    model = model.to(device).to(memory_format=torch.channels_last)
    x = data_images.to(device).contiguous(memory_format=torch.channels_last)
    y = labels.to(device)

    def step_loss(step: int) -> torch.Tensor:
        idx = torch.randint(images, (batch_size,), generator=gen).to(device)
        return F.cross_entropy(model(x[idx]), y[idx])

    model.train()
    fit(model.parameters(), step_loss, steps=steps, lr=lr, weight_decay=weight_decay,
        desc="train ShapesNet on random labels", progress=progress, callback=callback)
    return model.to(memory_format=torch.contiguous_format).eval()


def _random_label_set(images: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    data = make_shapes(images, generator=gen)
    return data.images, torch.randint(len(SHAPES_CLASSES), (images,), generator=gen)


def random_label_set(images: int = _RANDOM_IMAGES, seed: int = _RANDOM_SEED,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The images ``(N, 3, 64, 64)`` and random labels ``(N,)`` that
    :func:`train_random_labels` memorizes with the same ``images`` and ``seed``."""
    return _random_label_set(images, torch.Generator().manual_seed(seed))


def train_segmentation(
    *,
    steps: int = _SEG_STEPS,
    batch_size: int = _SEG_BATCH,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    size: int = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
) -> ShapesSegNet:
    """Train a :class:`ShapesSegNet` from scratch on freshly generated shapes.

    Per-pixel cross-entropy against :func:`segmentation_labels` (the object's pixels are its class
    ``label + 1``, every other pixel, the distractor's too, is background 0). Seeded like
    :func:`train`: the initialization and the data stream come from ``seed`` and the caller's
    global RNG is left as it was. AdamW with a one-cycle learning-rate schedule.

    The defaults (1000 steps of 32 images, the shipped weights) take about 400 CPU-seconds (3 to
    5 minutes on two cores) and reach a pixel accuracy of 0.997 and a mean IoU of 0.94 over the
    shapes classes on fresh images.

    Args:
        steps: Optimizer steps.
        batch_size: Images per step.
        lr: Peak learning rate.
        weight_decay: AdamW weight decay.
        size: Image size of the training data.
        seed: Seed of the initialization and of the training data.
        device: Device to train on; defaults to the CPU.
        progress: Show a progress bar with the running loss.
        callback: Called after every step with the step index and that step's loss.

    Returns:
        The trained model, in eval mode, on ``device``.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShapesSegNet()
    model = model.to(device).to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(seed)

    def step_loss(step: int) -> torch.Tensor:
        batch = make_shapes(batch_size, size=size, generator=gen, device=device)
        out = model(batch.images.contiguous(memory_format=torch.channels_last))["out"]
        return F.cross_entropy(out, segmentation_labels(batch))

    model.train()
    fit(model.parameters(), step_loss, steps=steps, lr=lr, weight_decay=weight_decay,
        desc="train ShapesSegNet", progress=progress, callback=callback)
    return model.to(memory_format=torch.contiguous_format).eval()


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``model``'s ``state_dict`` as float32 CPU tensors, as the loaders read it.

    Args:
        model: The model to save.
        path: Destination file.
    """
    state = {
        k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    torch.save(state, path)


def retrain(kind: str = "classifier", *, out: str | os.PathLike[str] | None = None,
            steps: int | None = None, batch_size: int | None = None, seed: int | None = None,
            progress: bool = True) -> str:
    """Trains a shipped model again and writes its weights (``netlens zoo train``).

    Args:
        kind: ``"classifier"`` (:class:`ShapesNet`), ``"segmentation"``
            (:class:`ShapesSegNet`) or ``"random-labels"`` (:func:`train_random_labels`).
        out: the weights file; default the shipped one, inside the package.
        steps: default the shipped run's.
        batch_size: default the shipped run's.
        seed: the training stream's seed (default 0; random labels: 777, the shipped run's).
        progress: show a progress bar.

    Returns:
        A one-line summary: time, held-out scores and the file written.
    """
    if kind not in ("classifier", "segmentation", "random-labels"):
        raise ValueError(f"kind must be 'classifier', 'segmentation' or 'random-labels', got "
                         f"{kind!r}")
    if kind == "random-labels":
        return _retrain_random_labels(out, steps, batch_size, seed, progress)
    segmentation = kind == "segmentation"
    seed = 0 if seed is None else seed
    steps = steps if steps is not None else (_SEG_STEPS if segmentation else _DEFAULT_STEPS)
    batch_size = batch_size if batch_size is not None else (
        _SEG_BATCH if segmentation else _DEFAULT_BATCH)
    start, cpu_start = time.perf_counter(), time.process_time()
    model = (train_segmentation if segmentation else train)(
        steps=steps, batch_size=batch_size, seed=seed, progress=progress)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if segmentation:
        scores = evaluate_segmentation(model, 1000, seed=_EVAL_SEED)
        result = (f"pixel accuracy {scores.pixel_accuracy:.4f}, mean IoU of the shapes classes "
                  f"{scores.mean_iou:.4f} on 1000 fresh images")
    else:
        result = f"accuracy {evaluate(model, 2000, seed=_EVAL_SEED):.4f} on 2000 fresh images"
    if out is None:
        with resources.as_file(_weights_file(_SEG_WEIGHTS if segmentation else _WEIGHTS)) as path:
            out = str(path)
    save_weights(model, out)
    size_kb = os.path.getsize(out) / 1024
    return (f"trained in {elapsed:.1f} s ({cpu:.0f} CPU-s); {result} (seed {_EVAL_SEED}); wrote "
            f"{out} ({size_kb:.0f} KB)")


def _retrain_random_labels(out: str | os.PathLike[str] | None, steps: int | None,
                           batch_size: int | None, seed: int | None, progress: bool) -> str:
    seed = _RANDOM_SEED if seed is None else seed
    start, cpu_start = time.perf_counter(), time.process_time()
    model = train_random_labels(steps=_RANDOM_STEPS if steps is None else steps,
                                batch_size=_DEFAULT_BATCH if batch_size is None else batch_size,
                                seed=seed, progress=progress)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    images, labels = random_label_set(_RANDOM_IMAGES, seed)
    with torch.no_grad():
        memorized = (model(images).argmax(1) == labels).double().mean().item()
    result = (f"training accuracy {memorized:.4f} on its {_RANDOM_IMAGES} random labels, "
              f"accuracy {evaluate(model, 2000, seed=_EVAL_SEED):.4f} on 2000 fresh images")
    if out is None:
        with resources.as_file(_weights_file(_RANDOM_WEIGHTS)) as path:
            out = str(path)
    save_weights(model, out)
    size_kb = os.path.getsize(out) / 1024
    return (f"trained in {elapsed:.1f} s ({cpu:.0f} CPU-s); {result} (seed {_EVAL_SEED}); wrote "
            f"{out} ({size_kb:.0f} KB)")


if __name__ == "__main__":  # python -m netlens.zoo ... is netlens zoo ...
    import sys

    from .cli import main

    raise SystemExit(main(["zoo", *sys.argv[1:]]))
