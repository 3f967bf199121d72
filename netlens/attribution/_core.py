"""What every attribution method shares: the protocol, input and target checks, chunking.

Every method is a pure function ``f(model, x, target, *, <options>) -> Tensor`` that accepts an
``nn.Module`` or a :class:`~netlens.FlatModel`; the helpers here keep that contract identical
across methods: targets are resolved once by :func:`resolve_target`, inputs validated by
:func:`prepare`, multiplied passes split by :func:`chunks`, and the caller's model left as it was
by :func:`guarded`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, Union

import torch
from torch import nn

from .._util import progress_bar, user_stacklevel
from ..adapter import first_tensor, preserved_state
from ..flat_model import FlatModel, check_input

__all__ = [
    "AttributionMethod", "Target", "as_flat", "prepare", "resolve_target", "split_target", "select",
    "guarded",
    "chunks", "auto_batch_size", "progress_bar", "user_stacklevel", "DEFAULT_MAX_MEMORY",
]

Target = Union[int, Sequence[int], torch.Tensor, None, Callable[[torch.Tensor], torch.Tensor]]

# Default working-memory budget for multiplied passes (IG steps, SmoothGrad samples, occlusion
# windows, CAM masks), in bytes. On a CPU, throughput peaks at several images per pass and falls
# beyond (resnet18 at 224 px, 2 threads: 0.064 s per gradient at 2-8 images per pass, 0.073 at 16
# and worse above, as the activations leave the caches; SmoothGrad of 8 images, 25 samples: 20.6 s
# at 4 images per pass, 19.6 s at 8), so its budget is modest: 6 images of that size with
# backward, 12 without, about 300 MB at the peak.
DEFAULT_MAX_MEMORY = {"cpu": 384 << 20, "cuda": 4 << 30}


class AttributionMethod(Protocol):
    """The signature every attribution method follows."""

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target = None,
                 **options: Any) -> torch.Tensor: ...


def as_flat(model: nn.Module) -> FlatModel:
    """``model`` as a :class:`FlatModel` (the same object if it already is one)."""
    return model if isinstance(model, FlatModel) else FlatModel(model)


def prepare(model: nn.Module, x: torch.Tensor) -> tuple[FlatModel, torch.Tensor]:
    """Validates ``x`` for ``model`` and returns ``(flat model, detached input)``.

    Raises:
        TypeError, ValueError: a non-float input, wrong rank or channel count, NaN or infinity.
        RuntimeError: when called under ``torch.inference_mode()``, where no gradient exists.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attribution needs gradients, which torch.inference_mode() disables; "
                           "call it outside the inference_mode block (torch.no_grad() is fine)")
    fm = as_flat(model)
    check_input(x, fm._channels, finite=True)
    return fm, x.detach()


def resolve_target(target: Target, output: torch.Tensor) -> torch.Tensor:
    """Turns any accepted target into a ``(B,)`` int64 tensor of class indices.

    Args:
        target: an int (the same class for every image), a sequence or tensor of B ints, None
            (the predicted class, the argmax of ``output``) or a callable ``output -> (B,)``.
        output: the model's ``(B, classes)`` output.

    Raises:
        ValueError: a class index out of range, or a number of targets that is not B.
        TypeError: a target of another type.
    """
    batch, classes = output.shape[0], output.shape[-1]
    if target is None:
        return output.detach().argmax(-1).reshape(batch)
    if callable(target) and not isinstance(target, torch.Tensor):
        t = torch.as_tensor(target(output.detach()))
    elif isinstance(target, bool):
        raise TypeError("target must be an int, a sequence of ints, a tensor or None, not a bool")
    elif isinstance(target, int):
        t = torch.full((batch,), target, dtype=torch.long)
    elif isinstance(target, (torch.Tensor, Sequence)):
        t = torch.as_tensor(target)
    else:
        raise TypeError(f"target must be an int, a sequence of ints, a tensor, a callable or None, "
                        f"got {type(target).__name__}")
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"targets must be integers, got dtype {t.dtype}")
    t = t.reshape(-1).to(torch.long)
    if t.numel() == 1 and batch > 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} targets for a batch of {batch} images; pass one int "
                         "for all, or one per image")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= classes):
        bad = int(t.max()) if int(t.max()) >= classes else int(t.min())
        raise ValueError(f"target {bad} is out of range: the model has {classes} outputs "
                         f"(valid targets are 0 to {classes - 1})")
    return t.to(output.device)


def split_target(target: Target, batch: int) -> Callable[[slice], Target]:
    """Checks a target's length against the batch and returns ``part -> target of that part``,
    so that a chunked method resolves each chunk's targets with :func:`resolve_target`.

    Raises:
        ValueError: a sequence of targets whose length is neither 1 nor ``batch``.
    """
    if target is None or isinstance(target, (int, bool)) or (
            callable(target) and not isinstance(target, torch.Tensor)):
        return lambda part: target
    if not isinstance(target, (torch.Tensor, Sequence)):
        raise TypeError(f"target must be an int, a sequence of ints, a tensor, a callable or None, "
                        f"got {type(target).__name__}")
    t = torch.as_tensor(target).reshape(-1)
    if t.numel() == 1:
        return lambda part: t
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} targets for a batch of {batch} images; pass one int "
                         "for all, or one per image")
    return lambda part: t[part]


def select(output: Any, target: torch.Tensor) -> torch.Tensor:
    """The ``(B,)`` scores ``output[i, target[i]]`` (the first tensor of a tuple output)."""
    out = first_tensor(output)
    if out is None:
        raise TypeError(f"the model returned {type(output).__name__}, not a tensor of scores")
    if out.dim() != 2:
        out = out.reshape(out.shape[0], -1)
    return out.gather(1, target.view(-1, 1)).squeeze(1)


@contextlib.contextmanager
def guarded(fm: FlatModel) -> Iterator[FlatModel]:
    """Runs a method with gradients enabled, leaving the model's state exactly as it was.

    Gradients are enabled even inside a caller's ``torch.no_grad()``; parameters keep their
    ``requires_grad`` and ``.grad`` (methods only differentiate with respect to inputs).
    """
    with preserved_state(fm.model), torch.enable_grad():
        yield fm


def chunks(total: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` items covering ``range(total)``: as few as
    that allows, of sizes that differ by at most one (25 items by 8: 7, 6, 6, 6, not 8, 8, 8, 1,
    whose last pass would run one image at the cost of several)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    passes = -(-total // batch_size)
    base, extra = divmod(total, max(passes, 1))
    start = 0
    for i in range(passes):
        stop = start + base + (i < extra)
        yield slice(start, stop)
        start = stop


def auto_batch_size(
    fm: FlatModel, x: torch.Tensor, *, backward: bool = True, max_memory: int | None = None,
) -> int:
    """How many images of ``x``'s size fit in one pass within the memory budget.

    One image's cost is estimated from the traced forward pass: the outputs of every leaf
    module (what autograd keeps for backward), scaled from the traced input size to ``x``'s.

    Args:
        fm: the model.
        x: a batch of the images that will be passed.
        backward: whether the pass is followed by a backward pass (doubles the estimate).
        max_memory: the budget in bytes; default :data:`DEFAULT_MAX_MEMORY` for the device.
    """
    if max_memory is None:
        max_memory = DEFAULT_MAX_MEMORY["cuda" if x.device.type == "cuda" else "cpu"]
    fm.ensure_traced(x)
    elements = fm.leaf_elements()
    traced = fm.traced_input_shape
    scale = 1.0
    if traced is not None and len(traced) == 4:
        scale = (x.shape[2] * x.shape[3]) / max(1, traced[2] * traced[3])
    per_image = max(1.0, elements * scale * x.element_size() * (2 if backward else 1))
    return max(1, int(max_memory // per_image))
