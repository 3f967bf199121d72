"""Deep feature factorization: a layer's activations split into a few concepts.

Collins, Achanta and Süsstrunk, "Deep Feature Factorization for Concept Discovery", ECCV 2018,
as pytorch-grad-cam's ``DeepFeatureFactorization`` computes it: the activations ``A`` of a layer
over the whole batch, ``(C, B * h * w)`` with each channel shifted by its minimum (so that it
is non-negative), are factorized by non-negative matrix factorization into ``k`` concepts
``W`` (``(C, k)``, one channel vector each) and their maps ``H`` (``(k, B * h * w)``). The
concepts are shared by the batch; each image gets ``k`` maps. A concept, shifted back, is a
feature vector the classifier head can score: its class scores say what it is.

The factorization runs in torch on the activations' device (hierarchical alternating least
squares, no scikit-learn round trip) and is deterministic for a given ``generator``.

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> f = deep_feature_factorization(m, torch.rand(2, 3, 64, 64), k=3)
    >>> f.maps.shape, f.concepts.shape, f.scores.shape
    (torch.Size([2, 3, 64, 64]), torch.Size([3, 512]), torch.Size([3, 1000]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, Union

import torch
import torch.nn.functional as F

from .._runtime import (
    auto_batch_size,
    check_count,
    check_generator,
    first_tensor,
    guarded,
    prepare,
)
from ..adapter import LayoutLike
from ..flat_model import FlatModel
from ..targets import Score
from .cam import Interpolate, _interpolation, _layer_maps, _resize, _spatial_layer
from .cam_variants import _cam_layer, _linear_head

__all__ = ["deep_feature_factorization", "Factorization", "nmf"]

Head = Union[Literal["auto"], Callable[[torch.Tensor], torch.Tensor], None]
"""How concepts are scored: ``"auto"`` (the model's last ``nn.Linear``, found after the layer),
a function ``(k, C) -> (k, classes)``, or None (no scores)."""


@dataclasses.dataclass(frozen=True)
class Factorization:
    """What :func:`deep_feature_factorization` returns.

    Attributes:
        maps: ``(B, k, H, W)``: how strongly each concept is present at each position of each
            image, on the input grid (or the layer's with ``interpolate="none"``); raw values
            of ``H``, non-negative.
        concepts: ``(k, C)``: each concept's channel vector, in the layer's units (the
            per-channel shift added back).
        scores: ``(k, classes)``: the head's raw output for each concept (softmax it for
            probabilities), or None without a head.
        layer: the factorized layer.
        error: the relative reconstruction error ``||A' - W H||_F / ||A'||_F`` of the shifted
            activations ``A'``.
    """

    maps: torch.Tensor
    concepts: torch.Tensor
    scores: torch.Tensor | None
    layer: str
    error: float

    def top_classes(self, n: int = 2) -> list[list[tuple[int, float]]]:
        """Per concept, its ``n`` most likely classes as ``(class, probability)`` pairs."""
        if self.scores is None:
            raise ValueError("this factorization has no class scores (it was computed with "
                             "head=None); pass head='auto' or a function to score concepts")
        p = self.scores.float().softmax(dim=-1)
        values, index = p.topk(min(n, p.shape[-1]), dim=-1)
        return [[(int(i), float(v)) for i, v in zip(ri, rv)] for ri, rv in zip(index, values)]


def nmf(v: torch.Tensor, k: int, *, iterations: int = 200, tol: float = 1e-4,
        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative matrix factorization ``v ~ w @ h`` minimizing the Frobenius error.

    Hierarchical alternating least squares (Cichocki & Phan 2009): each column of ``w`` and row
    of ``h`` in turn solved in closed form, clamped at zero. Starts from a random non-negative
    pair scaled to ``v``'s mean (as scikit-learn's ``init="random"``), drawn from
    ``generator``; stops when the relative error improves by less than ``tol``.

    Args:
        v: a non-negative matrix ``(m, n)``.
        k: the rank, ``1 <= k <= min(m, n)``.
        iterations: the most sweeps.
        tol: the relative improvement of the error below which it stops.
        generator: the random start (None: a fixed seed, 0).

    Returns:
        ``(w, h)``, ``(m, k)`` and ``(k, n)``, non-negative, ``v``'s dtype and device.

    Raises:
        ValueError: a negative or non-finite ``v``, a rank out of range.
    """
    if v.dim() != 2:
        raise ValueError(f"nmf factorizes a matrix, got shape {tuple(v.shape)}")
    m, n = v.shape
    check_count(k, "k")
    if k > min(m, n):
        raise ValueError(f"k={k} concepts need at least k rows and columns, but the matrix is "
                         f"{m} x {n}; choose k <= {min(m, n)}")
    if not torch.isfinite(v).all() or (v < 0).any():
        raise ValueError("nmf needs a finite, non-negative matrix")
    work = v.double() if v.dtype != torch.float64 else v
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    scale = (work.mean() / k).clamp_min(0).sqrt()
    w = (torch.rand(m, k, generator=g, dtype=torch.float64) * scale).to(work.device)
    h = (torch.rand(k, n, generator=g, dtype=torch.float64) * scale).to(work.device)
    norm = float(work.norm()) or 1.0
    eps = 1e-12
    previous = float("inf")
    for _ in range(iterations):
        # h: rows in turn, against the fixed w
        wtv, wtw = w.T @ work, w.T @ w
        for j in range(k):
            h[j] = (h[j] + (wtv[j] - wtw[j] @ h) / wtw[j, j].clamp_min(eps)).clamp_min(0)
        # w: columns in turn, against the fixed h
        vht, hht = work @ h.T, h @ h.T
        for j in range(k):
            w[:, j] = (w[:, j] + (vht[:, j] - w @ hht[:, j]) / hht[j, j].clamp_min(eps)
                       ).clamp_min(0)
        error = float((work - w @ h).norm()) / norm
        if previous - error < tol * max(previous, eps) and previous != float("inf"):
            break
        previous = error
    return w.to(v.dtype), h.to(v.dtype)


def deep_feature_factorization(
    model: torch.nn.Module, x: torch.Tensor, layer: str | None = None, k: int = 4, *,
    head: Head = "auto", interpolate: Interpolate = True, iterations: int = 200,
    generator: torch.Generator | None = None, batch_size: int | None = None,
    layout: LayoutLike | None = None,
) -> Factorization:
    """The layer's activations over the batch, factorized into ``k`` concepts with their maps.

    Args:
        model: any model, or its :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``; the concepts are shared by the batch.
        layer: a layer with a map-shaped output (token layers of a ViT are viewed on their
            patch grid); None takes the layer that feeds a global-pool + linear head (ResNet's
            ``layer4``), else the CAM default.
        k: the number of concepts.
        head: how each concept is given class scores: ``"auto"`` applies the model's last
            ``nn.Linear`` after the layer (a global-pool + linear head, as pytorch-grad-cam's
            ``computation_on_concepts=model.fc``); a function of ``(k, C)``; None for none.
        interpolate: maps upsampled to the input bilinearly (True), nearest (False), or left
            on the layer's grid (``"none"``).
        iterations: the most sweeps of the factorization.
        generator: the factorization's random start (None: seed 0, reproducible).
        batch_size: images per forward pass; default from the memory budget.
        layout: how to view ``layer``'s output as a map.

    Returns:
        A :class:`Factorization`.

    Raises:
        ValueError: ``k`` out of range, a layer without a map-shaped output, ``head="auto"``
            on a model without a linear layer after ``layer`` taking its channels (pass a
            function, or None).

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> f = deep_feature_factorization(m, torch.rand(1, 3, 64, 64), k=2)
        >>> f.top_classes(1)[0][0][0] in range(1000)
        True
    """
    fm, x = prepare(model, x)
    check_count(k, "k")
    check_count(iterations, "iterations")
    check_generator(generator)
    mode = _interpolation(interpolate)
    if head is not None and head != "auto" and not callable(head):
        raise ValueError(f"head must be 'auto', a function (k, C) -> (k, classes) or None, "
                         f"got {head!r}")
    with guarded(fm):
        fm.ensure_traced(x)
        with fm.given_layouts(layer, layout):
            return _factorize(fm, x, layer, k, head=head, mode=mode, iterations=iterations,
                              generator=generator, batch_size=batch_size)


def _factorize(fm: FlatModel, x: torch.Tensor, layer: str | None, k: int, *, head: Head,
               mode: str, iterations: int, generator: torch.Generator | None,
               batch_size: int | None) -> Factorization:
    if layer is None:
        try:
            name = _spatial_layer(fm, _cam_layer(fm))
        except ValueError:
            name = _spatial_layer(fm, None)
    else:
        name = _spatial_layer(fm, layer)
    size = batch_size or auto_batch_size(fm, x, backward=False)
    # only the layer is read: a target that accepts any output (a segmentation map too)
    acts, _, _ = _layer_maps(fm, x, Score(_no_score), name, gradients=False, batch_size=size)
    b, c, h, w = acts.shape
    if k > min(c, b * h * w):
        raise ValueError(f"k={k} concepts exceed what layer {name!r} can hold ({c} channels "
                         f"x {b * h * w} positions); choose k <= {min(c, b * h * w)}")
    flat = torch.nan_to_num(acts.double()).permute(1, 0, 2, 3).reshape(c, -1)
    offset = flat.min(dim=1).values
    shifted = flat - offset[:, None]
    wc, hc = nmf(shifted, k, iterations=iterations, generator=generator)
    error = float((shifted - wc @ hc).norm() / shifted.norm().clamp_min(1e-30))
    concepts = (wc + offset[:, None]).T.contiguous()  # (k, C)
    maps = hc.reshape(k, b, h, w).transpose(0, 1)
    if mode != "none":
        maps = _resize(maps.unsqueeze(2), (int(x.shape[2]), int(x.shape[3])), mode
                       ).squeeze(2)
    scores = None
    if head == "auto":
        try:
            linear = _linear_head(fm, name).module
        except ValueError:
            raise ValueError(
                f"head='auto' scores concepts with the model's last nn.Linear, but no nn.Linear "
                f"is called after layer {name!r}; pass head= a function (k, C) -> (k, classes), "
                "or head=None") from None
        if linear.in_features != c:
            raise ValueError(
                f"head='auto' scores concepts with the last linear layer after {name!r}, "
                f"but it takes {linear.in_features} features and the layer has {c} "
                "channels (e.g. VGG's flatten + MLP classifier); pass head= a function "
                "(k, C) -> (k, classes), choose the layer that feeds the global pool, or "
                "head=None")
        with torch.no_grad():
            scores = F.linear(concepts.to(linear.weight.dtype), linear.weight,
                              linear.bias).float()
    elif head is not None:
        with torch.no_grad():
            scores = head(concepts.to(x.dtype))
    return Factorization(maps.to(x.dtype), concepts.to(x.dtype), scores, name, error)


def _no_score(output: object) -> torch.Tensor:
    """A zero score per image: the forward pass of a factorization explains nothing."""
    t = first_tensor(output)
    if t is None or t.dim() == 0:
        raise ValueError("deep_feature_factorization needs a model whose output holds a "
                         "tensor with the batch first")
    return t.new_zeros(t.shape[0])

