"""The training loop and the dense targets shared by the models of :mod:`netlens.zoo`.

Private: :func:`netlens.zoo.train` and :func:`netlens.zoo.train_segmentation` are the public
entry points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from netlens.data import ShapesBatch

__all__ = ["confusion_matrix", "dense_targets", "fit", "segmentation_labels"]


def fit(
    params: Iterable[torch.nn.Parameter],
    step_loss: Callable[[int], torch.Tensor],
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    desc: str,
    progress: bool = False,
    callback: Callable[[int, float], None] | None = None,
) -> None:
    """Minimize ``step_loss(step)`` for ``steps`` steps: AdamW with a one-cycle schedule.

    The caller puts its model in training mode first; each call of ``step_loss`` draws its own
    batch, so all the randomness of the data stays with the caller's generator.

    Args:
        params: The parameters to optimize.
        step_loss: Returns the loss of step ``i`` (a scalar with a graph to ``params``).
        steps: Optimizer steps.
        lr: Peak learning rate (reached after 20% of the steps).
        weight_decay: AdamW weight decay.
        desc: Label of the progress bar.
        progress: Show a progress bar with the running loss.
        callback: Called after every step with the step index and that step's loss.
    """
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.2
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc)
    running = math.nan
    for step in range(steps):
        loss = step_loss(step)
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


def dense_targets(batch: ShapesBatch, shape: tuple[int, int], n_classes: int) -> torch.Tensor:
    """Per-cell class probabilities ``(B, n_classes + 2, h, w)``: background, classes, distractor.

    Each cell of the ``(h, w)`` feature map gets the fraction of its pixels covered by the object
    (on the object's class), by the distractor, and by neither (background).

    Args:
        batch: The images' masks and labels.
        shape: ``(h, w)`` of the feature map.
        n_classes: Number of object classes.

    Returns:
        Soft targets for ``F.cross_entropy``, on the masks' device.
    """
    obj = F.adaptive_avg_pool2d(batch.masks.float(), shape)
    dis = F.adaptive_avg_pool2d(batch.distractor_masks.float(), shape)
    b = obj.shape[0]
    target = torch.zeros(b, n_classes + 2, *shape, device=obj.device)
    target[:, :1] = 1.0 - obj - dis
    target[:, -1:] = dis
    index = (batch.labels + 1).view(b, 1, 1, 1).expand(b, 1, *shape)
    return target.scatter_(1, index, obj)


def segmentation_labels(batch: ShapesBatch) -> torch.Tensor:
    """Per-pixel classes ``(B, H, W)`` int64: ``label + 1`` on the object, 0 elsewhere.

    The distractor is background: nothing about it depends on the label.

    Args:
        batch: A batch of :func:`netlens.data.make_shapes`.

    Returns:
        Class indices into :data:`netlens.zoo.SEGMENTATION_CLASSES`, on the batch's device.
    """
    return torch.where(batch.masks[:, 0], batch.labels.view(-1, 1, 1) + 1, 0)


def confusion_matrix(prediction: torch.Tensor, truth: torch.Tensor, classes: int) -> torch.Tensor:
    """Pixel counts ``(classes, classes)`` int64: row = true class, column = predicted class.

    Args:
        prediction: Predicted class per pixel, any shape.
        truth: True class per pixel, the same shape.
        classes: Number of classes.

    Returns:
        The confusion matrix, on the CPU.
    """
    index = (truth.reshape(-1) * classes + prediction.reshape(-1)).cpu()
    return torch.bincount(index, minlength=classes * classes).view(classes, classes)
