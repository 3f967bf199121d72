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

Deterministic maps: :func:`translate`, :func:`shear` and :func:`affine` (any invertible 2x2
matrix and shift) move the content the same way every call, same size; they fill what comes
into view from the edge pixels, or with a constant ``fill``. :func:`random_scale` and
:func:`random_rotate` draw from a list of values or, with ``interval=(a, b)``, uniformly from
a continuous interval. :func:`random_crop` crops to a smaller size at a random position and
:func:`thumbnail` shrinks to fit a box, keeping the aspect ratio (both change the size, so use
them outside :func:`compose`'s crop back, or with ``keep_size=False``).

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
    "Transform", "Pad", "Jitter", "RandomScale", "RandomRotate", "Compose", "Affine",
    "RandomCrop", "Thumbnail",
    "pad", "jitter", "random_scale", "random_rotate", "compose", "standard_transforms",
    "affine", "translate", "shear", "random_crop", "thumbnail",
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
    """A transform that is one random affine map; :class:`Compose` fuses consecutive ones
    (those that fill from the edge, ``fill`` None)."""

    __slots__ = ()
    fill: float | None = None

    def matrix(self, u: Sequence[float]) -> _Affine:
        """The map for the uniform numbers ``u`` (``n_random`` of them)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_x(x)
        return _warp(x, self.matrix(_uniform(self.n_random, generator)), x.shape[-2:],
                     self.fill)


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
    """Zooms about the centre by one factor drawn from ``scales``, or uniformly from
    ``interval`` (see :func:`random_scale`)."""

    __slots__ = ("scales", "interval")
    n_random = 1

    def __init__(self, scales: Sequence[float] | None = None, *,
                 interval: tuple[float, float] | None = None) -> None:
        self.scales, self.interval = _values_or_interval(scales, interval, "scales", True)

    def matrix(self, u: Sequence[float]) -> _Affine:
        s = 1.0 / _draw(self.scales, self.interval, u[0])
        return (s, 0.0, 0.0, 0.0, s, 0.0)


class RandomRotate(_AffineTransform):
    """Rotates about the centre by one angle in degrees drawn from ``angles``, or uniformly
    from ``interval``, counter-clockwise as displayed (see :func:`random_rotate`)."""

    __slots__ = ("angles", "interval")
    n_random = 1

    def __init__(self, angles: Sequence[float] | None = None, *,
                 interval: tuple[float, float] | None = None) -> None:
        self.angles, self.interval = _values_or_interval(angles, interval, "angles", False)

    def matrix(self, u: Sequence[float]) -> _Affine:
        angle = _draw(self.angles, self.interval, u[0])
        if angle == 0:
            return _IDENTITY
        rad = math.radians(angle)
        c, s = math.cos(rad), math.sin(rad)
        # the inverse of the counter-clockwise rotation, in y-down coordinates
        return (c, -s, 0.0, s, c, 0.0)


class Affine(_AffineTransform):
    """A fixed affine map of the content (see :func:`affine`, :func:`translate`,
    :func:`shear`)."""

    __slots__ = ("forward", "fill", "_inverse")

    def __init__(self, matrix: object, fill: float | None = None) -> None:
        m = _check_matrix(matrix)
        a, b, tx, c, d, ty = m
        det = a * d - b * c
        if not math.isfinite(det) or abs(det) < 1e-12:
            raise ValueError(f"the affine matrix {[[a, b, tx], [c, d, ty]]} is not invertible "
                             "(its 2x2 part has determinant 0); it would squash the image")
        self.forward = m
        self.fill = _check_fill(fill)
        ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det  # the sampling map: the inverse
        self._inverse: _Affine = (ia, ib, -(ia * tx + ib * ty), ic, id_, -(ic * tx + id_ * ty))

    def matrix(self, u: Sequence[float]) -> _Affine:
        return self._inverse

    def __repr__(self) -> str:
        a, b, tx, c, d, ty = self.forward
        return f"Affine([[{a:g}, {b:g}, {tx:g}], [{c:g}, {d:g}, {ty:g}]], fill={self.fill!r})"


class RandomCrop(Transform):
    """Crops to a smaller size at a uniformly random position (see :func:`random_crop`)."""

    __slots__ = ("size", "delta")
    n_random = 2

    def __init__(self, size: int | tuple[int, int] | None = None,
                 delta: int | tuple[int, int] | None = None) -> None:
        if (size is None) == (delta is None):
            raise ValueError("give random_crop either size= (the crop's (h, w)) or delta= (how "
                             "much smaller than the image), not both or neither")
        self.size = None if size is None else _pair(size, "crop size", 1)
        self.delta = None if delta is None else _pair(delta, "crop delta", 0)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_x(x)
        big_h, big_w = x.shape[-2:]
        if self.size is not None:
            h, w = self.size
        else:
            assert self.delta is not None
            h, w = big_h - self.delta[0], big_w - self.delta[1]
        if not (1 <= h <= big_h and 1 <= w <= big_w):
            raise ValueError(f"cannot crop {(h, w)} out of an image of {(big_h, big_w)}; pad it "
                             "first or crop less")
        u = _uniform(2, generator)
        top = min(int(u[0] * (big_h - h + 1)), big_h - h)
        left = min(int(u[1] * (big_w - w + 1)), big_w - w)
        return x[..., top:top + h, left:left + w]


class Thumbnail(Transform):
    """Shrinks to fit inside a box, keeping the aspect ratio (see :func:`thumbnail`)."""

    __slots__ = ("size", "mode")
    _MODES = ("area", "bilinear", "bicubic")

    def __init__(self, size: int | tuple[int, int], mode: str = "area") -> None:
        self.size = _pair(size, "thumbnail size", 1)
        if mode not in self._MODES:
            raise ValueError(f"thumbnail mode must be one of {self._MODES}, got {mode!r}")
        self.mode = mode

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """The ``(h, w)`` an ``h x w`` image shrinks to."""
        r = min(self.size[0] / h, self.size[1] / w, 1.0)
        if r == 1.0:
            return h, w
        return min(h, max(1, round(h * r))), min(w, max(1, round(w * r)))

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_x(x)
        h, w = self.output_size(int(x.shape[-2]), int(x.shape[-1]))
        if (h, w) == tuple(x.shape[-2:]):
            return x
        if self.mode == "area":
            return F.interpolate(x, size=(h, w), mode="area")
        return F.interpolate(x, size=(h, w), mode=self.mode, align_corners=False, antialias=True)


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
            if isinstance(t, _AffineTransform) and t.fill is None:
                pending = _then(pending, t.matrix(u[k:k + t.n_random]))
                k += t.n_random
                continue
            if pending != _IDENTITY:
                x, pending = _warp(x, pending, x.shape[-2:]), _IDENTITY
            if isinstance(t, _AffineTransform):  # a constant fill: its own resampling
                x = _warp(x, t.matrix(u[k:k + t.n_random]), x.shape[-2:], t.fill)
                k += t.n_random
                continue
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


def random_scale(scales: Sequence[float] | None = None, *,
                 interval: tuple[float, float] | None = None) -> RandomScale:
    """Zooms about the centre by one factor drawn uniformly from the list ``scales``, or from
    the continuous ``interval=(a, b)``; same size.

    A factor above 1 magnifies the content (bilinear resampling); 1 is the exact identity.
    ``random_scale((0.9, 1.1))`` draws 0.9 or 1.1; ``random_scale(interval=(0.9, 1.1))`` any
    factor between them (the interval is keyword-only, so the two cannot be confused).

    Args:
        scales: the factors to choose from, each a finite number > 0.
        interval: ``(a, b)`` with ``0 < a <= b``: the factor is ``a + u (b - a)``, ``u``
            uniform in [0, 1).

    Raises:
        ValueError: both or neither of ``scales`` and ``interval``, an empty sequence, a factor
            that is not a finite number > 0, an interval that is not ``(a, b)`` with a <= b.
        TypeError: ``scales`` is not a sequence.

    Example:
        >>> t = random_scale(interval=(0.9, 1.1))
        >>> t(torch.rand(1, 3, 8, 8), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([1, 3, 8, 8])
    """
    return RandomScale(scales, interval=interval)


def random_rotate(angles: Sequence[float] | None = None, *,
                  interval: tuple[float, float] | None = None) -> RandomRotate:
    """Rotates about the centre, counter-clockwise as displayed, by one angle in degrees drawn
    uniformly from the list ``angles``, or from the continuous ``interval=(a, b)``; same size,
    bilinear. 0 is the exact identity.

    Args:
        angles: the angles to choose from, in degrees.
        interval: ``(a, b)`` with ``a <= b``, in degrees: the angle is ``a + u (b - a)``.

    Raises:
        ValueError: both or neither of ``angles`` and ``interval``, an empty sequence, an
            angle that is not a finite number, an interval that is not ``(a, b)`` with a <= b.
        TypeError: ``angles`` is not a sequence.
    """
    return RandomRotate(angles, interval=interval)


def affine(matrix: object, *, fill: float | None = None) -> Affine:
    """Moves the content by a fixed affine map; same size, bilinear.

    The map is in pixel coordinates centred on the image (x to the right, y down, in pixels):
    the content at ``(x, y)`` moves to ``(a x + b y + tx, c x + d y + ty)``. So
    ``[[1, 0, 2], [0, 1, -1]]`` moves it 2 pixels right and 1 up, and ``[[cos t, sin t, 0],
    [-sin t, cos t, 0]]`` rotates it by ``t`` counter-clockwise as displayed, as
    :func:`random_rotate` does. (``torch.nn.functional.affine_grid``'s ``theta`` is the inverse
    map, in [-1, 1] units.)

    Args:
        matrix: ``[[a, b, tx], [c, d, ty]]``, or 3x3 with the last row ``[0, 0, 1]``; a nested
            sequence or a tensor. Its 2x2 part must be invertible.
        fill: the value of the pixels that come into view; None (default) repeats the nearest
            edge pixel, as the other transforms do.

    Raises:
        ValueError: a matrix that is not 2x3 / 3x3 of finite numbers, or not invertible; a
            non-finite ``fill``.

    Example:
        >>> x = torch.arange(6.0).reshape(1, 1, 2, 3)
        >>> affine([[1, 0, 1], [0, 1, 0]], fill=-1.0)(x)
        tensor([[[[-1.,  0.,  1.],
                  [-1.,  3.,  4.]]]])
    """
    return Affine(matrix, fill)


def translate(dx: float, dy: float, *, fill: float | None = None) -> Affine:
    """Moves the content ``dx`` pixels right and ``dy`` pixels down; same size.

    An integer shift is exact (a slice); a fractional one is bilinear.

    Args:
        dx: the shift to the right, in pixels (negative: to the left).
        dy: the shift down, in pixels (negative: up).
        fill: the value of the pixels that come into view; None repeats the edge pixel.

    Raises:
        ValueError: a shift or ``fill`` that is not a finite number.
    """
    return Affine([[1.0, 0.0, dx], [0.0, 1.0, dy]], fill)


def shear(x: float = 0.0, y: float = 0.0, *, fill: float | None = None) -> Affine:
    """Shears the content about the centre: the point ``(px, py)`` moves to
    ``(px + x py, py + y px)`` (centred pixel coordinates, y down); same size, bilinear.

    Args:
        x: the horizontal shear: a row ``k`` pixels below the centre moves ``x k`` pixels right.
        y: the vertical shear: a column ``k`` pixels right of the centre moves ``y k`` down.
        fill: the value of the pixels that come into view; None repeats the edge pixel.

    Raises:
        ValueError: non-finite factors, ``x y == 1`` (not invertible), a non-finite ``fill``.
    """
    return Affine([[1.0, x, 0.0], [y, 1.0, 0.0]], fill)


def random_crop(size: int | tuple[int, int] | None = None, *,
                delta: int | tuple[int, int] | None = None) -> RandomCrop:
    """Crops to ``size`` (or to the image's size minus ``delta``) at a position drawn uniformly
    from all the positions that fit; exact (a slice).

    Args:
        size: the crop's ``(h, w)``, or one int for a square.
        delta: how much smaller than the image, ``(dh, dw)`` or one int (the original's
            ``RandomCropTensor(delta=...)``).

    Raises:
        ValueError: both or neither of ``size`` and ``delta``; sizes that are not ints >= 1
            (``delta`` >= 0); when called, a crop larger than the image.
    """
    return RandomCrop(size, delta)


def thumbnail(size: int | tuple[int, int], *, mode: str = "area") -> Thumbnail:
    """Shrinks the image to fit inside a ``size = (h, w)`` box, keeping its aspect ratio;
    never enlarges it (as PIL's ``Image.thumbnail``, whose box is ``(w, h)``).

    The scale is ``r = min(h / H, w / W, 1)`` and the result ``round(H r) x round(W r)``.

    Args:
        size: the box ``(h, w)``, or one int for a square box.
        mode: ``"area"`` (the mean of the covered pixels, exact block means for integer
            factors), ``"bilinear"`` or ``"bicubic"`` (antialiased).

    Raises:
        ValueError: a box that is not ints >= 1, an unknown mode.

    Example:
        >>> thumbnail(32)(torch.rand(1, 3, 48, 64)).shape
        torch.Size([1, 3, 24, 32])
    """
    return Thumbnail(size, mode)


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


def _draw(values: tuple[float, ...] | None, interval: tuple[float, float] | None,
          u: float) -> float:
    if interval is not None:
        a, b = interval
        return a + u * (b - a)
    assert values is not None
    return _choose(values, u)


def _values_or_interval(values: object, interval: object, name: str, positive: bool
                        ) -> tuple[tuple[float, ...] | None, tuple[float, float] | None]:
    if (values is None) == (interval is None):
        raise ValueError(f"give either {name} (a list to choose from) or interval=(a, b) (a "
                         "continuous range), not both or neither")
    if values is not None:
        return _check_values(values, name, positive), None
    if isinstance(interval, (str, bytes)) or not isinstance(interval, (Sequence, Tensor)) or \
            len(interval) != 2:
        raise ValueError(f"interval must be a pair (a, b), got {interval!r}")
    a, b = _check_values(interval, "interval", positive)
    if a > b:
        raise ValueError(f"interval must be (a, b) with a <= b, got {interval!r}")
    return None, (a, b)


def _check_fill(fill: object) -> float | None:
    if fill is None:
        return None
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real) or \
            not math.isfinite(fill):
        raise ValueError(f"fill must be None (the edge pixels) or a finite number, got {fill!r}")
    return float(fill)


def _check_matrix(matrix: object) -> _Affine:
    rows = matrix.tolist() if isinstance(matrix, Tensor) else matrix
    try:
        m = [[float(v) for v in row] for row in rows]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(f"the affine matrix must be 2x3 (or 3x3) numbers, got {matrix!r}") \
            from None
    if len(m) == 3 and m[2] == [0.0, 0.0, 1.0]:
        m = m[:2]
    if len(m) != 2 or any(len(r) != 3 for r in m) or \
            not all(math.isfinite(v) for r in m for v in r):
        raise ValueError(f"the affine matrix must be [[a, b, tx], [c, d, ty]] (or 3x3 with the "
                         f"last row [0, 0, 1]) of finite numbers, got {matrix!r}")
    return (m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2])


def _pair(v: object, name: str, low: int) -> tuple[int, int]:
    items = [v, v] if isinstance(v, numbers.Integral) else v
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or len(items) != 2 or \
            any(isinstance(i, bool) or not isinstance(i, numbers.Integral) or i < low
                for i in items):
        raise ValueError(f"{name} must be an int >= {low} or a pair (h, w) of them, got {v!r}")
    return int(items[0]), int(items[1])


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


def _warp(x: Tensor, m: _Affine, size: Sequence[int], fill: float | None = None) -> Tensor:
    """Resamples ``x`` by ``m`` onto a ``size`` grid with the same centre (edge pixels fill, or
    the constant ``fill``)."""
    h_in, w_in = x.shape[-2:]
    h, w = int(size[0]), int(size[1])
    a, b, tx, c, d, ty = m
    top, left = ty + (h_in - h) / 2, tx + (w_in - w) / 2
    if (a, b, c, d) == (1.0, 0.0, 0.0, 1.0) and top.is_integer() and left.is_integer():
        top, left = int(top), int(left)  # an integer shift: a slice, exact
        if (top, left, h, w) == (0, 0, h_in, w_in):
            return x
        pads = (max(0, -left), max(0, left + w - w_in), max(0, -top), max(0, top + h - h_in))
        if any(pads):
            x = F.pad(x, pads, mode="replicate") if fill is None else \
                F.pad(x, pads, mode="constant", value=fill)
            top, left = top + pads[2], left + pads[0]
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
    if fill is not None:  # zeros outside of x - fill: the constant fill, blended bilinearly
        return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False) + fill
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

