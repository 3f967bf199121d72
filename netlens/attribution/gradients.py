"""Gradient attributions: saliency, input × gradient, guided backprop.

All are exact on every architecture: guided backprop changes the backward rule of *every*
ReLU-family call the adapter finds (modules, in-place, reused, functional ``F.relu``), where
other libraries only see ``nn.ReLU`` modules and silently fall back to plain gradients.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from ..adapter import first_tensor
from ..flat_model import FlatModel
from ..hooks import HookDict, TensorHook
from ._core import (
    Target,
    auto_batch_size,
    chunks,
    guarded,
    prepare,
    resolve_target,
    select,
    split_target,
)

__all__ = ["saliency", "input_x_gradient", "guided_backprop", "NetlensWarning"]


class NetlensWarning(UserWarning):
    """A real hazard in how a method applies to a model (shown once per place)."""


def _clamp_negative(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp(min=0)


@contextlib.contextmanager
def guided_relus(fm: FlatModel) -> Iterator[int]:
    """Inside the block, the backward pass through every ReLU-family call passes only positive
    gradients: ``grad_in = relu(grad_out) * 1[x > 0]`` (Springenberg et al., 2015).

    Yields the number of ReLU calls changed; warns once if the model has none.
    """
    names = fm.relu_names
    if not names:
        warnings.warn(
            f"{type(fm.model).__name__} has no ReLU-family call (ReLU or ReLU6, module or "
            "functional), so no guided rule applies: guided backprop equals the plain gradient",
            NetlensWarning, stacklevel=4)
        yield 0
        return
    with HookDict() as hooks:
        def on_relu(name: str, output: object) -> None:
            t = first_tensor(output)
            if t is not None and t.requires_grad:
                hooks.add(TensorHook(t, _clamp_negative))

        with fm.intercept(names, on_relu):
            yield len(names)


def _input_gradients(
    fm: FlatModel, x: torch.Tensor, target: Target, *, guided: bool = False,
    batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """d score / d x for every image, and the resolved targets (chunked over the batch)."""
    if batch_size is None:
        batch_size = auto_batch_size(fm, x)
    grads, targets = [], []
    target_of = split_target(target, x.shape[0])
    with guarded(fm), (guided_relus(fm) if guided else contextlib.nullcontext()):
        for part in chunks(x.shape[0], batch_size):
            xi = x[part].detach().requires_grad_(True)
            out = fm(xi)
            ti = resolve_target(target_of(part), first_tensor(out))
            grad, = torch.autograd.grad(select(out, ti).sum(), xi)
            grads.append(grad)
            targets.append(ti)
    return torch.cat(grads), torch.cat(targets)


def saliency(
    model: nn.Module, x: torch.Tensor, target: Target = None, *, abs: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The vanilla gradient of the target score with respect to the input.

    Simonyan et al., "Deep Inside Convolutional Networks", 2014.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64, on the model's device.
        target: class per image: int, sequence/tensor of B ints, None (the predicted class) or a
            callable ``output -> (B,)``.
        abs: return the absolute value of the gradient.
        batch_size: images per pass; default from the memory budget.

    Returns:
        ``(B, C, H, W)`` tensor, ``x``'s dtype and device: ``d output[i, target[i]] / d x[i]``.

    Raises:
        ValueError, TypeError: bad input or target (see :func:`~netlens.attribution.prepare`).

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> saliency(m, torch.rand(2, 3, 64, 64), target=[1, 2]).shape
        torch.Size([2, 3, 64, 64])
    """
    fm, x = prepare(model, x)
    grad, _ = _input_gradients(fm, x, target, batch_size=batch_size)
    return grad.abs() if abs else grad


def input_x_gradient(
    model: nn.Module, x: torch.Tensor, target: Target = None, *, batch_size: int | None = None,
) -> torch.Tensor:
    """Input × gradient (Shrikumar et al., 2016): ``x * d score / d x``.

    Args and returns as :func:`saliency`.
    """
    fm, x = prepare(model, x)
    grad, _ = _input_gradients(fm, x, target, batch_size=batch_size)
    return x * grad


def guided_backprop(
    model: nn.Module, x: torch.Tensor, target: Target = None, *, batch_size: int | None = None,
) -> torch.Tensor:
    """Guided backpropagation: the gradient with only positive gradients passed back through
    every ReLU-family call (Springenberg et al., "Striving for Simplicity", 2015).

    Every ReLU *call* is changed: ``nn.ReLU`` modules (in place or not), a module called several
    times, and functional ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` (GoogLeNet, Inception v3,
    DenseNet). A model with no ReLU call gets the plain gradient and one warning.

    Args and returns as :func:`saliency`.
    """
    fm, x = prepare(model, x)
    fm.ensure_traced(x)
    grad, _ = _input_gradients(fm, x, target, guided=True, batch_size=batch_size)
    return grad
