"""Transformation robustness for feature visualization: small random, differentiable transforms.

Each transform is a callable ``t(x, generator=None) -> Tensor`` on a batch ``(B, C, H, W)``; it
keeps the batch, device and dtype, and draws its random choices from ``generator`` (by default a
fresh, nondeterministically seeded one; never the global RNG). One draw serves the whole batch.

Sizes: :func:`pad` grows the image by ``2 * w``; :func:`jitter`, :func:`random_scale` and
:func:`random_rotate` keep the size they are given: they move the content about the centre and
resample on the same pixel grid (bilinear), filling from the nearest edge pixel, so a preceding
:func:`pad` decides what comes into view. :func:`compose` then centre-crops back to its input's
size, so ``standard_transforms()`` (pad, jitter, scale, rotate, jitter) returns the input's
``H x W``. Consecutive jitter, scale and rotate steps, and the final crop, are fused into one
``grid_sample`` call, or into a slice when they amount to an integer shift.

Reference: Olah et al., "Feature Visualization", Distill 2017 (transformation robustness).

Example:
    >>> t = standard_transforms()
    >>> t(torch.rand(2, 3, 64, 64), generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._runtime import check_count as _check_int
from .._runtime import check_generator as _check_generator

__all__ = [
    "Transform", "Pad", "Jitter", "RandomScale", "RandomRotate", "Compose",
    "pad", "jitter", "random_scale", "random_rotate", "compose", "standard_transforms",
]

# An affine map of centred pixel coordinates (x right, y down, origin at the image centre),
# ``(a, b, tx, c, d, ty)``: the output pixel at (x, y) samples the input at
# (a x + b y + tx, c x + d y + ty).
_Affine = tuple[float, float, float, float, float, float]
_IDENTITY: _Affine = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_PAD_MODES = ("constant", "reflect", "replicate")


class Transform:
    """Base of the transforms: ``t(x, generator=None)`` maps ``(B, C, H, W)`` to a batch."""

    __slots__: tuple[str, ...] = ()
    n_random = 0  # how many uniform numbers one call draws

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__ if k != "n_random")
        return f"{type(self).__name__}({args})"


class _AffineTransform(Transform):
    """A transform that is one random affine map; :class:`Compose` fuses consecutive ones."""

    __slots__ = ()

    def matrix(self, u: Sequence[float]) -> _Affine:
        """The map for the uniform numbers ``u`` (``n_random`` of them)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_x(x)
        return _warp(x, self.matrix(_uniform(self.n_random, generator)), x.shape[-2:])


class Pad(Transform):
    """Pads ``w`` pixels on every side (see :func:`pad`)."""

    __slots__ = ("w", "mode", "value")
    mode: str
    value: float

    def __init__(self, w: int, mode: str = "reflect", value: float = 0.5) -> None:
        self.w = _check_int(w, "pad width w", 0)
        if mode not in _PAD_MODES:
            raise ValueError(f"pad mode must be one of {_PAD_MODES}, got {mode!r}")
        if not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"pad value must be a finite number, got {value!r}")
        self.mode, self.value = mode, float(value)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_x(x)
        if self.w == 0:
            return x
        if self.mode == "reflect" and self.w >= min(x.shape[-2:]):
            raise ValueError(f"reflect padding by {self.w} needs an image larger than "
                             f"{self.w} pixels, got {tuple(x.shape[-2:])}; use mode='constant'")
        if self.mode == "constant":
            return F.pad(x, (self.w,) * 4, mode="constant", value=self.value)
        return F.pad(x, (self.w,) * 4, mode=self.mode)


class Jitter(_AffineTransform):
    """Shifts the content by integers ``dx, dy`` drawn uniformly from ``[-d, d]`` (see
    :func:`jitter`)."""

    __slots__ = ("d",)
    n_random = 2

    def __init__(self, d: int) -> None:
        self.d = _check_int(d, "jitter distance d", 0)

    def matrix(self, u: Sequence[float]) -> _Affine:
        n = 2 * self.d + 1
        dx, dy = (min(int(v * n), n - 1) - self.d for v in u)
        return (1.0, 0.0, float(-dx), 0.0, 1.0, float(-dy))


class RandomScale(_AffineTransform):
    """Zooms about the centre by one factor drawn from ``scales`` (see :func:`random_scale`)."""

    __slots__ = ("scales",)
    n_random = 1

    def __init__(self, scales: Sequence[float]) -> None:
        self.scales = _check_values(scales, "scales", positive=True)

    def matrix(self, u: Sequence[float]) -> _Affine:
        s = 1.0 / _choose(self.scales, u[0])
        return (s, 0.0, 0.0, 0.0, s, 0.0)


class RandomRotate(_AffineTransform):
    """Rotates about the centre by one angle in degrees drawn from ``angles``, counter-clockwise
    as displayed (see :func:`random_rotate`)."""

    __slots__ = ("angles",)
    n_random = 1

    def __init__(self, angles: Sequence[float]) -> None:
        self.angles = _check_values(angles, "angles", positive=False)

    def matrix(self, u: Sequence[float]) -> _Affine:
        angle = _choose(self.angles, u[0])
        if angle == 0:
            return _IDENTITY
        rad = math.radians(angle)
        c, s = math.cos(rad), math.sin(rad)
        # the inverse of the counter-clockwise rotation, in y-down coordinates
        return (c, -s, 0.0, s, c, 0.0)


class Compose(Transform):
    """Applies ``transforms`` in order, then centre-crops to the input's size (see
    :func:`compose`)."""

    __slots__ = ("transforms", "keep_size", "n_random")

    def __init__(self, transforms: Sequence[Callable[..., Tensor]], keep_size: bool = True) -> None:
        if isinstance(transforms, (Tensor, str)) or not isinstance(transforms, Sequence):
            raise TypeError(f"transforms must be a sequence of callables, got "
                            f"{type(transforms).__name__}")
        for t in transforms:
            if not callable(t):
                raise TypeError(f"every transform must be callable, got {type(t).__name__}")
        self.transforms = tuple(transforms)
        self.keep_size = bool(keep_size)
        self.n_random = sum(t.n_random for t in self.transforms if isinstance(t, _AffineTransform))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_x(x)
        size = x.shape[-2:]
        generator = _check_generator(generator)  # one source for every step
        u = _uniform(self.n_random, generator)
        pending, k = _IDENTITY, 0
        for t in self.transforms:
            if isinstance(t, _AffineTransform):
                pending = _then(pending, t.matrix(u[k:k + t.n_random]))
                k += t.n_random
                continue
            if pending != _IDENTITY:
                x, pending = _warp(x, pending, x.shape[-2:]), _IDENTITY
            x = t(x, generator=generator) if isinstance(t, Transform) else t(x)
        if not self.keep_size:
            return _warp(x, pending, x.shape[-2:])
        if x.shape[-2] < size[0] or x.shape[-1] < size[1]:
            raise ValueError(f"a transform shrank the image from {tuple(size)} to "
                             f"{tuple(x.shape[-2:])}, so it cannot be cropped back; pad it "
                             "first or pass keep_size=False")
        return _warp(x, pending, size)


def pad(w: int, mode: str = "reflect", value: float = 0.5) -> Pad:
    """Pads ``w`` pixels on every side: the image grows to ``(H + 2w, W + 2w)``.

    Args:
        w: the width, an int >= 0; 0 is the identity.
        mode: ``"reflect"`` (mirror, edge pixel not repeated; needs ``w < min(H, W)``),
            ``"constant"`` (filled with ``value``) or ``"replicate"`` (the edge pixel repeated).
        value: the fill of ``"constant"`` mode, in pixel units (0.5 is mid-grey).

    Raises:
        ValueError: a negative or non-int width, an unknown mode, a non-finite value.
    """
    return Pad(w, mode, value)


def jitter(d: int) -> Jitter:
    """Shifts the content by integers ``dx, dy`` drawn uniformly from ``[-d, d]``; same size.

    The shift is exact (a slice, no interpolation) when the transform is used alone or with
    other integer shifts; vacated pixels repeat the nearest edge pixel.

    Raises:
        ValueError: ``d`` is not an int >= 0.
    """
    return Jitter(d)


def random_scale(scales: Sequence[float]) -> RandomScale:
    """Zooms about the centre by one factor drawn uniformly from ``scales``; same size.

    A factor above 1 magnifies the content (bilinear resampling); 1 is the exact identity.

    Raises:
        ValueError: an empty sequence or a factor that is not a finite number > 0.
        TypeError: ``scales`` is not a sequence.
    """
    return RandomScale(scales)


def random_rotate(angles: Sequence[float]) -> RandomRotate:
    """Rotates about the centre, counter-clockwise as displayed, by one angle in degrees drawn
    uniformly from ``angles``; same size, bilinear. 0 is the exact identity.

    Raises:
        ValueError: an empty sequence or an angle that is not a finite number.
        TypeError: ``angles`` is not a sequence.
    """
    return RandomRotate(angles)


def compose(transforms: Sequence[Callable[..., Tensor]], *, keep_size: bool = True) -> Compose:
    """Chains transforms, one generator feeding them all.

    Args:
        transforms: netlens transforms, called as ``t(x, generator=...)``, or any other
            callable, called as ``t(x)``.
        keep_size: centre-crop the result to the input's ``H x W`` (fused with the last affine
            steps into one resampling).

    Raises:
        TypeError: ``transforms`` is not a sequence of callables.
        ValueError (when called): with ``keep_size``, a result smaller than the input.
    """
    return Compose(transforms, keep_size=keep_size)


def standard_transforms() -> Compose:
    """Lucid's standard set: constant pad 12 (grey 0.5), jitter 8, scale by one of
    ``1 + (i - 5) / 50`` for i in 0..10, rotate by one of -10..10 degrees, jitter 4; the result
    is centre-cropped to the input's size."""
    return Compose([
        Pad(12, mode="constant", value=0.5),
        Jitter(8),
        RandomScale([1 + (i - 5) / 50 for i in range(11)]),
        RandomRotate(list(range(-10, 11))),
        Jitter(4),
    ])


def _check_x(x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"transforms take a float tensor (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"transforms take a float tensor (B, C, H, W), got shape "
                         f"{tuple(x.shape)} of dtype {x.dtype}")


def _check_values(values: object, name: str, positive: bool) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, Tensor)):
        raise TypeError(f"{name} must be a sequence of numbers, e.g. [0.9, 1.0, 1.1], "
                        f"got {type(values).__name__}")
    out = tuple(float(v) for v in values)
    if not out:
        raise ValueError(f"{name} must not be empty; pass e.g. [1.0] for no change")
    for v in out:
        if not math.isfinite(v) or (positive and v <= 0):
            raise ValueError(f"{name} must be finite{' and > 0' if positive else ''}, got {v}")
    return out


def _choose(values: tuple[float, ...], u: float) -> float:
    return values[min(int(u * len(values)), len(values) - 1)]


def _uniform(n: int, generator: torch.Generator | None) -> list[float]:
    """``n`` uniform numbers in [0, 1) from ``generator`` (a fresh one when None)."""
    if n == 0:
        return []
    generator = _check_generator(generator)
    return torch.rand(n, generator=generator, device=generator.device,
                      dtype=torch.float64).tolist()


def _then(first: _Affine, second: _Affine) -> _Affine:
    """The map of ``first`` followed by ``second``: their inverse maps compose as first∘second."""
    a, b, tx, c, d, ty = first
    e, f, sx, g, h, sy = second
    return (a * e + b * g, a * f + b * h, a * sx + b * sy + tx,
            c * e + d * g, c * f + d * h, c * sx + d * sy + ty)


def _warp(x: Tensor, m: _Affine, size: Sequence[int]) -> Tensor:
    """Resamples ``x`` by ``m`` onto a ``size`` grid with the same centre (edge pixels fill)."""
    h_in, w_in = x.shape[-2:]
    h, w = int(size[0]), int(size[1])
    a, b, tx, c, d, ty = m
    top, left = ty + (h_in - h) / 2, tx + (w_in - w) / 2
    if (a, b, c, d) == (1.0, 0.0, 0.0, 1.0) and top.is_integer() and left.is_integer():
        top, left = int(top), int(left)  # an integer shift: a slice, exact
        if (top, left, h, w) == (0, 0, h_in, w_in):
            return x
        fill = (max(0, -left), max(0, left + w - w_in), max(0, -top), max(0, top + h - h_in))
        if any(fill):
            x = F.pad(x, fill, mode="replicate")
            top, left = top + fill[2], left + fill[0]
        return x[..., top:top + h, left:left + w]
    # the sampling grid in grid_sample's [-1, 1] units (align_corners=False: the pixel centres of
    # an n-pixel side sit at (2 i + 1) / n - 1), as a sum of 1-D ramps: cheaper than affine_grid
    sx, sy = 2 / w_in, 2 / h_in

    def ramp(n: int, slope: float, offset: float) -> Tensor:
        half = (n - 1) / 2 * slope
        return torch.linspace(offset - half, offset + half, n, dtype=x.dtype, device=x.device)

    grid = torch.stack((ramp(w, a * sx, 0.0) + ramp(h, b * sx, tx * sx)[:, None],
                        ramp(w, c * sy, 0.0) + ramp(h, d * sy, ty * sy)[:, None]), dim=-1)
    grid = grid.expand(x.shape[0], h, w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

