"""Image parameterizations for feature visualization (Lucid-style).

A parameterization is an ``nn.Module`` whose ``forward()`` takes no argument and returns an image
batch ``(B, C, H, W)`` with values in ``[0, 1]``; the model's normalization is applied later, by
the renderer. Iterating one gives ``(params, render)``, the list of tensors to optimize and a
callable returning the image, so both styles work::

    param = ImageParam(64, generator=torch.Generator().manual_seed(0))
    params, render = param          # render() is param()
    optimizer = torch.optim.Adam(params, lr=0.05)

:class:`ImageParam` optimizes a scaled Fourier spectrum of colour-decorrelated logits, which makes
gradient ascent favour natural, low-frequency images (Olah et al., "Feature Visualization",
Distill 2017; Mordvintsev et al., "Differentiable Image Parameterizations", Distill 2018).
:class:`RawParam` optimizes the pixels themselves.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .._runtime import check_count as _check_int
from .._runtime import check_generator as _check_generator
from .._runtime import check_unit_image as _check_image

__all__ = ["Param", "RawParam", "ImageParam"]

# The square root of the colour correlation of natural images (3x3, from its SVD), as published
# with Lucid; normalised below by its largest column norm so that no channel is amplified.
_COLOR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
# Divides the inverse FFT so that a random spectrum of standard deviation ``sd`` gives an image
# of a useful spread (the constant Lucid uses).
_FFT_DIVISOR = 4.0
# Pixels are clamped to [eps, 1 - eps] before the logit, so exact 0s and 1s come back within eps.
_LOGIT_EPS = 1e-4
_RANGE_TOL = 1e-4


class Param(nn.Module):
    """Base of the parameterizations: ``forward()`` returns the image ``(B, C, H, W)`` in [0, 1].

    Iterating a param yields ``(list of parameters, self)``, so ``params, render = param``.
    """

    def forward(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def shape(self) -> torch.Size:
        """The shape ``(B, C, H, W)`` of the image that ``forward()`` returns."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:
        return iter((list(self.parameters()), self))


def _clamp_st(t: Tensor) -> Tensor:
    """``t`` clamped to [0, 1] in the forward pass, with the identity's gradient (straight-through),
    so that a pixel past the range still gets the gradient that would bring it back."""
    return t.detach().clamp(0.0, 1.0) + (t - t.detach())


def _check_size(size: object) -> tuple[int, int]:
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2 or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in size)):
        raise ValueError(f"size must be an int >= 1 or a pair (height, width) of them, "
                         f"got {size!r}")
    return int(size[0]), int(size[1])


def _spectrum_scale(h: int, w: int, decay_power: float, dtype: torch.dtype,
                    device: torch.device) -> Tensor:
    """The ``(h, w // 2 + 1)`` per-frequency factor ``1 / max(|f|, 1 / max(h, w)) ** decay_power``
    (divided by the fixed constant), laid out like ``torch.fft.rfft2``'s output."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    freq = torch.sqrt(fx * fx + fy * fy).clamp(min=1.0 / max(h, w))
    return (freq.pow(-decay_power) / _FFT_DIVISOR).to(device=device, dtype=dtype)


def _color_matrix(dtype: torch.dtype, device: torch.device) -> Tensor:
    m = torch.tensor(_COLOR_SQRT, dtype=torch.float64)
    return (m / m.norm(dim=0).max()).to(device=device, dtype=dtype)


def _mix_channels(matrix: Tensor, t: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix, t)


class RawParam(Param):
    """The pixels themselves are the parameter.

    Args:
        image: the start image ``(B, C, H, W)`` in [0, 1]; it is copied, never aliased, and the
            copy keeps its device and dtype.
        clamp: clamp the output to [0, 1] with a straight-through gradient: the forward pass
            clamps, the backward pass is the identity, so out-of-range pixels still receive the
            gradient that brings them back. With ``False`` the pixels are returned as they are.

    Raises:
        TypeError, ValueError: ``image`` is not a float tensor of rank 4 in [0, 1] without NaN.

    Example:
        >>> x = torch.rand(1, 3, 8, 8)
        >>> p = RawParam(x)
        >>> torch.equal(p(), x), p.pixels.data_ptr() != x.data_ptr()
        (True, True)
    """

    def __init__(self, image: Tensor, *, clamp: bool = True) -> None:
        super().__init__()
        self.pixels = nn.Parameter(_check_image(image).clone())
        self.clamp = bool(clamp)

    @property
    def shape(self) -> torch.Size:
        return self.pixels.shape

    def forward(self) -> Tensor:
        """The image ``(B, C, H, W)``, in [0, 1] when ``clamp`` is on."""
        return _clamp_st(self.pixels) if self.clamp else self.pixels


class ImageParam(Param):
    """A Lucid-style image: Fourier spectrum, colour decorrelation and a sigmoid.

    The image is built, from the parameter to the pixels, as follows:

    1. ``fft=True``: the parameter is a real tensor ``(B, C, H, W // 2 + 1, 2)``, the real and
       imaginary parts of an ``rfft2`` spectrum. Each frequency is multiplied by
       ``1 / max(|f|, 1 / max(H, W)) ** decay_power / 4`` and ``irfft2(..., s=(H, W),
       norm="ortho")`` gives the logits, so a white-noise parameter gives 1/f noise, whose power
       spectrum falls as ``|f| ** (-2 * decay_power)``. With ``fft=False`` the parameter is the
       logits ``(B, C, H, W)`` themselves.
    2. ``decorrelate=True`` (3 channels only): the channels are mixed by the square root of the
       colour correlation of natural images, normalised by its largest column norm.
    3. ``sigmoid=True`` maps the logits to (0, 1); ``sigmoid=False`` adds 0.5 and clamps to
       [0, 1] with a straight-through gradient (see :class:`RawParam`).

    Started from an ``image``, the param reproduces it (within about 1e-4, exact 0s and 1s too):
    each step above is inverted, the sigmoid by a logit of the pixels clamped to [1e-4, 1 - 1e-4].
    Pixels at 0 or 1 then sit where the sigmoid is flat and move slowly under gradient ascent.

    Args:
        size: ``H = W = size`` or ``(H, W)``, any positive sizes, odd ones included; ``None``
            takes the size of ``image``.
        image: an optional start image ``(1 or B, C, H, W)`` in [0, 1].
        channels: C; default 3, or the channel count of ``image``.
        batch: B, the number of independent images; default 1, or the batch of ``image``. An
            image with batch 1 is repeated ``batch`` times.
        fft: parameterize the spectrum (True) or the pixels (False).
        decorrelate: mix the 3 colour channels as natural images do.
        sigmoid: map to [0, 1] with a sigmoid (True) or a straight-through clamp (False).
        sd: standard deviation of the random initial parameter.
        decay_power: exponent of the 1/f scaling of the spectrum.
        generator: the source of the random init (a ``torch.Generator`` on any device; the init
            is drawn on its device, so a CPU generator gives the same init on every device).
            Default: a fresh, nondeterministically seeded one; the global RNG is never used.
        device: where the parameter lives; default ``image``'s device, or the CPU.
        dtype: the parameter's float dtype; default ``image``'s, or float32.

    Raises:
        ValueError: a bad size, batch or channel count, an image whose size, batch or channels
            contradict the other arguments, an image outside [0, 1] or with NaN, ``decorrelate``
            with other than 3 channels, a negative ``sd`` or ``decay_power``.
        TypeError: an image or generator of the wrong type, a non-float dtype.

    Example:
        >>> p = ImageParam((31, 40), batch=2, generator=torch.Generator().manual_seed(0))
        >>> img = p()
        >>> img.shape, bool(img.min() >= 0) and bool(img.max() <= 1)
        (torch.Size([2, 3, 31, 40]), True)
    """

    scale: Tensor  # buffer, registered when fft
    color: Tensor  # buffer, registered when decorrelate

    def __init__(
        self,
        size: int | tuple[int, int] | None = None,
        *,
        image: Tensor | None = None,
        channels: int | None = None,
        batch: int | None = None,
        fft: bool = True,
        decorrelate: bool = True,
        sigmoid: bool = True,
        sd: float = 0.01,
        decay_power: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if image is not None:
            image = _check_image(image)
            n, c, h, w = image.shape
            if size is not None and _check_size(size) != (h, w):
                raise ValueError(f"size {size!r} contradicts the image's size {(h, w)}; pass "
                                 "size=None to take the image's")
            if channels is not None and channels != c:
                raise ValueError(f"channels={channels!r} contradicts the image's {c} channels")
            if batch is not None and n not in (1, batch):
                raise ValueError(f"batch={batch!r} contradicts the image's batch of {n}; pass "
                                 "an image with batch 1 (repeated) or with the same batch")
            channels, batch = c, batch if batch is not None else n
        elif size is None:
            raise ValueError("give the image size, e.g. ImageParam(128) or ImageParam((96, 128)),"
                             " or a start image with image=")
        else:
            h, w = _check_size(size)
        channels = _check_int(3 if channels is None else channels, "channels")
        batch = _check_int(1 if batch is None else batch, "batch")
        if decorrelate and channels != 3:
            raise ValueError(f"colour decorrelation needs 3 channels, got {channels}; pass "
                             "decorrelate=False")
        for value, name in ((sd, "sd"), (decay_power, "decay_power")):
            if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if dtype is None:
            dtype = image.dtype if image is not None else torch.float32
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a float torch.dtype, got {dtype!r}")
        device = torch.device(device) if device is not None else (
            image.device if image is not None else torch.device("cpu"))

        self.fft, self.decorrelate, self.sigmoid = bool(fft), bool(decorrelate), bool(sigmoid)
        self._shape = torch.Size((batch, channels, h, w))
        if self.fft:
            self.register_buffer("scale", _spectrum_scale(h, w, float(decay_power), dtype,
                                                          device), persistent=False)
        if self.decorrelate:
            self.register_buffer("color", _color_matrix(dtype, device), persistent=False)

        if image is None:
            g = _check_generator(generator)
            shape = (batch, channels, h, w // 2 + 1, 2) if self.fft else tuple(self._shape)
            init = torch.randn(shape, generator=g, device=g.device, dtype=dtype) * sd
        else:
            init = self._encode(image.to(device=device, dtype=torch.float64), float(decay_power))
            init = init.expand(batch, *init.shape[1:])
        init = init.to(device=device, dtype=dtype).contiguous()
        if self.fft:
            self.spectrum = nn.Parameter(init)
        else:
            self.pixels = nn.Parameter(init)

    def _encode(self, image: Tensor, decay_power: float) -> Tensor:
        """The parameter that reproduces ``image`` (computed in float64): each step inverted."""
        if self.sigmoid:
            t = torch.logit(image, eps=_LOGIT_EPS)
        else:
            t = image - 0.5
        if self.decorrelate:
            t = _mix_channels(torch.linalg.inv(_color_matrix(t.dtype, t.device)), t)
        if not self.fft:
            return t
        h, w = t.shape[-2:]
        spectrum = torch.fft.rfft2(t, norm="ortho")
        return torch.view_as_real(spectrum / _spectrum_scale(h, w, decay_power, t.dtype, t.device))

    @property
    def shape(self) -> torch.Size:
        return self._shape

    def forward(self) -> Tensor:
        """The image ``(B, C, H, W)`` in [0, 1], in the parameter's dtype and device."""
        if self.fft:
            spectrum = torch.view_as_complex(self.spectrum) * self.scale
            t = torch.fft.irfft2(spectrum, s=self._shape[-2:], norm="ortho")
        else:
            t = self.pixels
        if self.decorrelate:
            t = _mix_channels(self.color, t)
        return torch.sigmoid(t) if self.sigmoid else _clamp_st(t + 0.5)
