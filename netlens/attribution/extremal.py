"""Extremal perturbations: the smooth mask of a given area that keeps (or removes) the most of
the target score when the rest of the image is blurred.

Fong, Patrick & Vedaldi, "Understanding Deep Networks via Extremal Perturbations and Smooth
Masks", ICCV 2019 (TorchRay's ``extremal_perturbation`` is the reference). A mask is made from
a low-resolution parameter ``p`` (one value per ``stride × stride`` cell, in [0, 1]) by a smooth
max-convolution: pixel ``u`` takes the soft maximum (softmax pooling, coldness 20) of
``k(|u - c_n| / sigma) p_n`` over the nearby cell centres ``c_n``, with the flat-topped kernel
``k(z) = exp(-2 max(z - 1/2, 0)²)``. The perturbed image interpolates, pixel by pixel, between
a pyramid of blurs of the image (mask 0: blurred by ``max_blur``, mask 1: the image). The area
constraint compares the sorted mask with the vector of ``(1 - a) HW`` zeros then ``a HW`` ones,
weighted by 300 growing geometrically to 16 times that over the iterations. ``p`` starts at 1
and climbs ``reward - area penalty`` by SGD with momentum (TorchRay's learning rate 0.01 at
its 800 steps, scaled by ``800 / steps`` for fewer; momentum and dampening 0.9), the image
flipped left-right on even iterations (jitter).

Every (image, target, area) is its own optimisation, run side by side, ``batch_size`` perturbed
images per pass; the passes of an iteration only add gradients, so the result does not depend
on the chunking beyond float round-off.

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> extremal_perturbation(m, torch.rand(1, 3, 32, 32), 3, steps=2).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Literal, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._runtime import (
    auto_batch_size,
    bind,
    check_count,
    check_real,
    chunks,
    guarded,
    model_output,
    prepare,
    progress_bar,
    scores_of,
)
from ..targets import TargetLike
from .path_methods import gaussian_blur

__all__ = ["extremal_perturbation"]

Areas = Union[float, Sequence[float]]
ExtremalVariant = Literal["preserve", "delete", "dual"]

_LEARNING_RATE, _MOMENTUM, _TORCHRAY_STEPS = 0.01, 0.9, 800
_AREA_WEIGHT, _AREA_GROWTH = 300.0, 1.0035 ** 800  # TorchRay: x1.0035 for each of 800 steps
_COLDNESS = 20.0


def _areas(areas: object) -> tuple[list[float], bool]:
    """The areas as a list, and whether a single number was given."""
    single = isinstance(areas, numbers.Real) and not isinstance(areas, bool)
    values = [areas] if single else areas
    if not isinstance(values, (Sequence, torch.Tensor)) or isinstance(values, str) \
            or len(values) == 0:
        raise ValueError(f"areas must be a number in (0, 1) or a sequence of them, got {areas!r}")
    out = []
    for a in values:
        a = float(a) if isinstance(a, (numbers.Real, torch.Tensor)) else a
        if not isinstance(a, float) or not 0.0 < a < 1.0:
            raise ValueError(f"every area must be a fraction of the image in (0, 1), got "
                             f"{a!r}; e.g. areas=(0.05, 0.1, 0.2)")
        out.append(a)
    return out, single


class _Masks:
    """TorchRay's smooth masks: ``(R, 1, h, w)`` parameters -> ``(R, 1, H, W)`` masks."""

    def __init__(self, height: int, width: int, stride: int, sigma: float,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.shape = (height, width)
        self.stride = stride
        self.cells = (math.ceil(height / stride), math.ceil(width / stride))
        self.radius = 1 + math.ceil(sigma / stride)  # cells that reach a pixel
        side = 2 * self.radius + 1
        off = torch.arange(side, dtype=torch.float64) - self.radius
        y = torch.arange(height, dtype=torch.float64)
        x = torch.arange(width, dtype=torch.float64)
        centre = (stride - 1) / 2
        # centre of the cell at offset (dy, dx) from pixel (y, x)'s own cell
        cy = (torch.div(y, stride, rounding_mode="floor")[None] + off[:, None]) * stride + centre
        cx = (torch.div(x, stride, rounding_mode="floor")[None] + off[:, None]) * stride + centre
        dist = torch.sqrt((y[None, :] - cy)[:, None, :, None] ** 2
                          + (x[None, :] - cx)[None, :, None, :] ** 2)  # (side, side, H, W)
        weight = torch.exp(-2 * ((dist / sigma - 0.5).clamp(min=0)) ** 2)
        self.weight = weight.reshape(1, side * side, height, width).to(dtype=dtype,
                                                                       device=device)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        r, s = self.radius, self.stride
        near = F.unfold(p, 2 * r + 1, padding=r)  # (R, side², h * w): each cell's neighbours
        near = near.view(p.shape[0], -1, *self.cells)
        near = near.repeat_interleave(s, 2).repeat_interleave(s, 3)
        v = self.weight * near[:, :, :self.shape[0], :self.shape[1]]
        return (v * torch.softmax(_COLDNESS * v, dim=1)).sum(1, keepdim=True).clamp(0, 1)


def _perturb(pyramid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each pixel of ``pyramid`` ``(R, L, C, H, W)`` (level 0 the most blurred, ``L - 1`` the
    image) interpolated at level ``mask (L - 1)`` (``mask`` ``(R, 1, H, W)`` in [0, 1])."""
    levels = pyramid.shape[1]
    w = mask * (levels - 1)
    k = w.detach().floor().clamp(max=levels - 1)
    frac = w - k  # the gradient flows through the fraction, as TorchRay's
    k = k.long()[:, None].expand(-1, 1, pyramid.shape[2], -1, -1)
    y0 = pyramid.gather(1, k)[:, 0]
    y1 = pyramid.gather(1, (k + 1).clamp(max=levels - 1))[:, 0]
    return (1 - frac) * y0 + frac * y1


def extremal_perturbation(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, areas: Areas = 0.1,
    steps: int = 800, variant: ExtremalVariant = "preserve", stride: int | None = None,
    sigma: float | None = None, max_blur: float | None = None, levels: int = 8,
    jitter: bool = True, learning_rate: float | None = None, batch_size: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Extremal perturbation masks: for each area ``a``, the smooth mask covering a fraction
    ``a`` of the image that keeps the most of the target score when the rest is blurred.

    Fong, Patrick & Vedaldi, "Understanding Deep Networks via Extremal Perturbations and
    Smooth Masks", ICCV 2019; the optimisation, mask generator and blur pyramid follow
    TorchRay's reference (see the module docstring), except that the pyramid's blurs mirror the
    image at its edges (:func:`~netlens.attribution.path_methods.gaussian_blur` with
    ``"reflect"``) where TorchRay pads with zeros, which darkens blurred borders.

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: anything :func:`netlens.targets.as_target` accepts (None: the predicted class
            of ``x``, fixed once).
        areas: the masks' areas as fractions of the image, each in (0, 1): one number (one
            mask per image) or a sequence (one mask per area, the paper's ``(0.05, 0.1, 0.2)``
            for example).
        steps: optimisation iterations (TorchRay's 800); each is one forward and backward pass
            per (image, target, area), two for ``"dual"``.
        variant: ``"preserve"`` (the mask keeps the score: the reward is the score of the image
            blurred outside the mask), ``"delete"`` (the mask removes it: minus the score of
            the image blurred inside) or ``"dual"`` (their sum).
        stride: the mask parameter's cell size in pixels; default TorchRay's 7 at 224 px,
            scaled with the image's smaller side (at least 1).
        sigma: the smoothing's scale in pixels; default ``3 * stride`` (TorchRay's 21).
        max_blur: the std of the strongest blur, in pixels; default TorchRay's 20 at 224 px,
            scaled with the smaller side.
        levels: blur levels of the pyramid (TorchRay's 8, at least 2).
        jitter: flip the perturbed image left-right on even iterations.
        learning_rate: the step size of the mask parameters' SGD; default ``0.01 * 800 /
            steps``: TorchRay's 0.01 at its 800 steps, and the same path length ``steps *
            learning_rate`` with fewer steps, as the area weight's growth is compressed into
            ``steps`` too (on 32 shapes images at 100 steps: relevance mass 0.25 with 0.08,
            0.15 with 0.01, pointing game 0.31 with both; a random map 0.06 and 0.09).
        batch_size: perturbed images per pass; default from the memory budget.
        progress: show a progress bar: None (when slow), True or False.

    Returns:
        ``(B, A, H, W)`` masks in [0, 1], ``A`` the number of areas (``(B, 1, H, W)`` for one
        area); ``(B, K, A, H, W)`` for K targets per image. ``x``'s dtype and device.

    Raises:
        ValueError: an area outside (0, 1), ``steps < 1``, a bad ``variant``, ``stride``,
            ``sigma``, ``max_blur``, ``levels`` or ``learning_rate``, a bad input or target.
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(48, 2)).eval()
        >>> extremal_perturbation(lin, torch.rand(2, 3, 4, 4), 1, areas=(0.25, 0.5),
        ...                       steps=3).shape
        torch.Size([2, 2, 4, 4])
    """
    fm, x = prepare(model, x)
    area_list, _ = _areas(areas)
    steps = check_count(steps, "steps")
    if variant not in ("preserve", "delete", "dual"):
        raise ValueError(f"variant must be 'preserve', 'delete' or 'dual', got {variant!r}")
    batch, _, height, width = x.shape
    scale = min(height, width) / 224
    stride = max(1, round(7 * scale)) if stride is None else check_count(stride, "stride")
    sigma = 3.0 * stride if sigma is None else check_real(sigma, "sigma", minimum=0)
    max_blur = max(1.0, 20 * scale) if max_blur is None else check_real(
        max_blur, "max_blur", minimum=0)
    if sigma <= 0 or max_blur <= 0:
        raise ValueError(f"sigma and max_blur must be > 0 pixels, got {sigma!r}, {max_blur!r}")
    levels = check_count(levels, "levels", 2)
    lr = _LEARNING_RATE * _TORCHRAY_STEPS / steps if learning_rate is None else check_real(
        learning_rate, "learning_rate", minimum=0)
    if lr <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    fm.ensure_traced(x)
    bs = auto_batch_size(fm, x) if batch_size is None else check_count(batch_size, "batch_size")
    masks = _Masks(height, width, stride, sigma, x.dtype, x.device)
    pyramid = torch.stack([gaussian_blur(x, (1 - i / (levels - 1)) * max_blur, padding="reflect")
                           for i in range(levels)], 1)  # (B, L, C, H, W)
    n_area = len(area_list)
    pixels = height * width
    reference = x.new_ones(n_area, pixels)
    for i, a in enumerate(area_list):
        reference[i, :int(pixels * (1 - a))] = 0
    passes = {"preserve": ((1.0, False),), "delete": ((-1.0, True),),
              "dual": ((1.0, False), (-1.0, True))}[variant]
    growth = _AREA_GROWTH ** (1 / steps)

    with guarded(fm):
        t = bind(fm, x, target, bs)
        k = 1 if t.k is None else t.k
        runs = batch * k * n_area  # run r: image r // (K A), target (r // A) % K, area r % A
        index = torch.arange(runs, device=x.device)
        image, which, area = index // (k * n_area), (index // n_area) % k, index % n_area
        p = x.new_ones(runs, 1, *masks.cells)
        buf: torch.Tensor | None = None
        weight = _AREA_WEIGHT
        per_pass = max(1, bs // len(passes))
        with progress_bar(steps * runs, progress, "extremal perturbation") as bar:
            for it in range(steps):
                g = torch.zeros_like(p)
                for part in chunks(runs, per_pass):
                    q = p[part].detach().requires_grad_(True)
                    m = masks(q)
                    ti = t.take(image[part])
                    energy = torch.zeros((), dtype=x.dtype, device=x.device)
                    for sign, inverted in passes:
                        images = _perturb(pyramid[image[part]], 1 - m if inverted else m)
                        if jitter and it % 2 == 0:
                            images = images.flip(3)
                        s = scores_of(ti, model_output(fm, images, ti))
                        if t.k is not None:
                            s = s.gather(1, which[part, None].to(s.device))[:, 0]
                        energy = energy + sign * s.sum()
                    ranked = m.flatten(1).sort(1).values
                    penalty = ((ranked - reference[area[part]]) ** 2).mean(1).sum()
                    g[part], = torch.autograd.grad(energy - weight * penalty, q)
                    bar.update(part.stop - part.start)
                # SGD with momentum and dampening 0.9 (PyTorch's rule), climbing the energy
                buf = g if buf is None else _MOMENTUM * buf + (1 - _MOMENTUM) * g
                p = (p + lr * buf).clamp(0, 1)
                weight *= growth
        with torch.no_grad():
            out = masks(p)
    return out.view(batch, *(() if t.k is None else (k,)), n_area, height, width)
