"""Images in and out: load, resize, normalize and convert to PIL or numpy.

Model inputs in netlens are batch-first float tensors ``(B, C, H, W)`` normalized with a per-channel
mean and std (ImageNet's by default). :func:`load` turns a path, a PIL image, a numpy array or a
tensor into such a ``(1, 3, H, W)`` tensor; :func:`to_pil` and :func:`to_numpy` undo the
normalization for display.

Pass ``mean=None, std=None`` to any function here to work with raw ``[0, 1]`` pixels instead.

PIL <-> numpy conversions go through a private ``pyimgy.core.ImageConverter``. pyimgy's shape and
value normalization helpers are not used (they truncate rather than round, guess the value range
from the maximum, and fail with ``assert``), and ``pyimgy.optional.torch`` is never imported: it
monkey-patches ``torch.Tensor``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Union

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageSource",
    "denormalize",
    "load",
    "normalize",
    "resize",
    "to_numpy",
    "to_pil",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

ImageSource = Union[str, "os.PathLike[str]", PIL.Image.Image, np.ndarray, Tensor]
"""What :func:`load` accepts."""

Stats = Union[float, Sequence[float], Tensor, None]
"""A per-channel mean or std: one float, C floats, a ``(C,)`` tensor, or ``None`` (identity)."""

_ACCEPTED = "a path (str or os.PathLike), a PIL.Image.Image, a numpy.ndarray or a torch.Tensor"
_UINT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
_RANGE_TOL = 1e-4  # float pixels may overshoot [0, 1] by rounding noise, not by more


def load(
    src: ImageSource,
    size: int | tuple[int, int] | None = None,
    *,
    mean: Stats = IMAGENET_MEAN,
    std: Stats = IMAGENET_STD,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    channels: int = 3,
) -> Tensor:
    """Load an image as a normalized ``(1, 3, H, W)`` model input (``(1, 1, H, W)`` with
    ``channels=1``).

    With ``channels=3`` grayscale images are repeated to 3 channels and an alpha channel is
    dropped; with ``channels=1`` colour images become their luminance (ITU-R 601:
    ``0.299 R + 0.587 G + 0.114 B``, PIL's ``"L"``), for MNIST-like models. Files are opened
    with PIL and turned upright by their EXIF orientation, as a viewer would show them.

    Args:
        src: the image. A path; a PIL image of any mode; a numpy array ``(H, W)``, ``(H, W, 1)``,
            ``(H, W, 3)`` or ``(H, W, 4)`` of dtype uint8 (0..255), uint16 (0..65535), bool, or
            float with values in ``[0, 1]``; or a tensor ``(H, W)``, ``(C, H, W)`` or
            ``(1, C, H, W)`` with ``C`` in 1, 3, 4, float in ``[0, 1]`` or uint8.
        size: ``None`` keeps the size; an int resizes the shorter side to ``size`` and then
            centre-crops to ``size x size`` (the usual ``Resize(s)`` + ``CenterCrop(s)``); an
            ``(H, W)`` pair resizes exactly to it. Resampling is bilinear with antialiasing.
        mean: per-channel mean subtracted after scaling to ``[0, 1]``; ``None`` subtracts nothing.
        std: per-channel std divided by; ``None`` divides by nothing. ``mean=None, std=None``
            gives raw ``[0, 1]`` pixels.
        device: device of the result; ``None`` means the tensor's own device for a tensor
            ``src``, else the CPU.
        dtype: floating dtype of the result.
        channels: 3 (RGB, the default) or 1 (grayscale); a model's own count is
            ``netlens.flat_model.input_channels(model)``.

    Returns:
        A new tensor ``(1, channels, H, W)`` of ``dtype`` on ``device``, not requiring grad.

    Raises:
        TypeError: if ``src`` is of an unsupported type or dtype, or ``dtype`` is not floating.
        ValueError: if ``src`` has the wrong rank or channel count, or float values outside
            ``[0, 1]``, or ``size`` is invalid.
        FileNotFoundError: if the path does not exist.

    Example:
        >>> x = load(np.zeros((32, 48, 3), dtype=np.uint8), size=16)
        >>> x.shape
        torch.Size([1, 3, 16, 16])
    """
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype such as torch.float32, got {dtype}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels must be 3 (RGB) or 1 (grayscale), got {channels!r}")
    if isinstance(src, (str, os.PathLike)):
        src = _open(src)
    if isinstance(src, PIL.Image.Image):
        src = _pil_to_array(src)
    if isinstance(src, np.ndarray):
        x = _array_to_chw(src)
    elif isinstance(src, Tensor):
        x = _tensor_to_chw(src.detach())
        device = src.device if device is None else device
    else:
        raise TypeError(f"load() accepts {_ACCEPTED}; got {type(src).__name__}")
    x = x.to(device=device)
    x = _to_unit_float(x, dtype)
    if x.shape[0] == 4:
        x = x[:3]
    if channels == 3 and x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    elif channels == 1 and x.shape[0] == 3:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
        x = (x * luma[:, None, None]).sum(0, keepdim=True)
    x = x.unsqueeze(0)
    if size is not None:
        x = resize(x, size)
    return normalize(x, mean, std).contiguous()


def resize(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Resize images the way :func:`load` does.

    Args:
        x: a floating tensor ``(B, C, H, W)`` or ``(C, H, W)``.
        size: an int resizes the shorter side to ``size`` and centre-crops to ``size x size``;
            an ``(H, W)`` pair resizes exactly. Bilinear with antialiasing.

    Returns:
        A tensor of the same rank, dtype and device; ``x`` itself if it has the size already.

    Raises:
        ValueError: if ``x`` is not 3-D or 4-D or ``size`` is not positive.

    Example:
        >>> resize(torch.rand(2, 3, 40, 60), 20).shape
        torch.Size([2, 3, 20, 20])
    """
    if x.ndim not in (3, 4):
        raise ValueError(f"resize() expects (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if isinstance(size, int) and not isinstance(size, bool):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        # torchvision's rule: the short side becomes `size`, the long side is truncated
        short, long = (h, w) if h <= w else (w, h)
        new_long = max(size, int(size * long / short))
        new_h, new_w = (size, new_long) if h <= w else (new_long, size)
        x = _interpolate(x, new_h, new_w)
        top = round((new_h - size) / 2.0)
        left = round((new_w - size) / 2.0)
        return x[..., top : top + size, left : left + size]
    if (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        return _interpolate(x, size[0], size[1])
    raise ValueError(f"size must be None, a positive int or an (H, W) pair of ints, got {size!r}")


def normalize(x: Tensor, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD) -> Tensor:
    """Return ``(x - mean) / std`` per channel, as a new tensor.

    Args:
        x: a floating tensor ``(B, C, H, W)`` or ``(C, H, W)`` on any device.
        mean: one float, C floats or a ``(C,)`` tensor; ``None`` subtracts nothing.
        std: like ``mean``; ``None`` divides by nothing.

    Returns:
        A tensor of ``x``'s shape, dtype and device; ``x`` is never modified.

    Raises:
        TypeError: if ``x`` is not a floating tensor.
        ValueError: if ``x`` is not 3-D or 4-D or the stats do not have 1 or C entries.

    Example:
        >>> normalize(torch.full((3, 1, 1), 0.5), mean=0.5, std=0.25).flatten().tolist()
        [0.0, 0.0, 0.0]
    """
    m, s = _stats(x, mean, "mean"), _stats(x, std, "std")
    if m is not None:
        x = x - m
    if s is not None:
        x = x / s
    return x.clone() if m is None and s is None else x


def denormalize(x: Tensor, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD) -> Tensor:
    """Return ``x * std + mean`` per channel, the inverse of :func:`normalize`, as a new tensor.

    Args:
        x: a floating tensor ``(B, C, H, W)`` or ``(C, H, W)`` on any device.
        mean: one float, C floats or a ``(C,)`` tensor; ``None`` adds nothing.
        std: like ``mean``; ``None`` multiplies by nothing.

    Returns:
        A tensor of ``x``'s shape, dtype and device (not clamped); ``x`` is never modified.

    Raises:
        TypeError: if ``x`` is not a floating tensor.
        ValueError: if ``x`` is not 3-D or 4-D or the stats do not have 1 or C entries.

    Example:
        >>> denormalize(torch.zeros(1, 3, 1, 1, dtype=torch.float64)).flatten().tolist()
        [0.485, 0.456, 0.406]
    """
    m, s = _stats(x, mean, "mean"), _stats(x, std, "std")
    if s is not None:
        x = x * s
    if m is not None:
        x = x + m
    return x.clone() if m is None and s is None else x


def to_numpy(
    x: Tensor,
    mean: Stats = IMAGENET_MEAN,
    std: Stats = IMAGENET_STD,
    *,
    dtype: type[np.generic] | np.dtype = np.float32,
) -> np.ndarray:
    """Turn one normalized image tensor back into an ``(H, W, C)`` array for display.

    Args:
        x: ``(1, C, H, W)`` or ``(C, H, W)`` with ``C`` in 1, 3, normalized with ``mean``/``std``;
            any device, any floating dtype, gradients are ignored.
        mean: the mean ``x`` was normalized with; ``None`` if it was not shifted.
        std: the std ``x`` was normalized with; ``None`` if it was not scaled.
        dtype: ``np.uint8`` for rounded 0..255 values, or a float dtype for ``[0, 1]``.

    Returns:
        A new array ``(H, W, C)`` of ``dtype``, clamped to the valid range.

    Raises:
        TypeError: if ``x`` is not a floating tensor or ``dtype`` is neither uint8 nor float.
        ValueError: if ``x`` is not a single image with 1 or 3 channels.

    Example:
        >>> to_numpy(load(np.full((2, 2, 3), 7, dtype=np.uint8)), dtype=np.uint8)[0, 0].tolist()
        [7, 7, 7]
    """
    if not isinstance(x, Tensor):
        raise TypeError(
            f"expected a torch.Tensor (1, C, H, W) or (C, H, W), got {type(x).__name__}"
        )
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(
            f"expected one image (1, C, H, W) or (C, H, W) with C in (1, 3), got shape "
            f"{tuple(x.shape)}; index a batch with x[i]"
        )
    out_dtype = np.dtype(dtype)
    if out_dtype != np.uint8 and out_dtype.kind != "f":
        raise TypeError(f"dtype must be np.uint8 or a float dtype, got {out_dtype}")
    x = denormalize(x.detach(), mean, std).clamp(0.0, 1.0).permute(1, 2, 0)
    if out_dtype == np.uint8:
        # round rather than truncate, so that uint8 -> load -> to_numpy is exact
        return (x.double() * 255.0).round().to(device="cpu", dtype=torch.uint8).numpy()
    return x.to(device="cpu", dtype=torch.float64).numpy().astype(out_dtype)


def to_pil(x: Tensor, mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD) -> PIL.Image.Image:
    """Turn one normalized image tensor back into a PIL image.

    Args:
        x: ``(1, C, H, W)`` or ``(C, H, W)`` with ``C`` in 1, 3, normalized with ``mean``/``std``.
        mean: the mean ``x`` was normalized with; ``None`` if it was not shifted.
        std: the std ``x`` was normalized with; ``None`` if it was not scaled.

    Returns:
        An ``"RGB"`` image (``"L"`` for one channel) of width W and height H.

    Raises:
        TypeError: if ``x`` is not a floating tensor.
        ValueError: if ``x`` is not a single image with 1 or 3 channels.

    Example:
        >>> to_pil(torch.rand(3, 8, 16), mean=None, std=None).size
        (16, 8)
    """
    arr = to_numpy(x, mean, std, dtype=np.uint8)
    return _array_to_pil(arr[..., 0] if arr.shape[-1] == 1 else arr)


# ---------------------------------------------------------------------------------------------
# helpers


def _converter():  # -> pyimgy.core.ImageConverter
    # A private converter, built per call: pyimgy's DEFAULT_CONVERTER is module state that
    # pyimgy.optional.torch rewires to swap torch.Tensor methods during every conversion.
    from pyimgy.core import ImageConverter, PILImage

    return ImageConverter(
        type_converter_map={
            (np.ndarray, PILImage): PIL.Image.fromarray,
            (PILImage, np.ndarray): np.asarray,
        },
        norm_map={},
        fallback_type_map={PILImage: np.ndarray},
    )


def _array_to_pil(arr: np.ndarray) -> PIL.Image.Image:
    return _converter().convert_image(arr, to_type=PIL.Image.Image)


def _open(path: str | os.PathLike[str]) -> PIL.Image.Image:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no image file at {path!r}")
    with PIL.Image.open(path) as im:
        im.load()
        return PIL.ImageOps.exif_transpose(im)


def _pil_to_array(im: PIL.Image.Image) -> np.ndarray:
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit PNGs open as "I;16" or "I"; PIL's convert("RGB") would clip them at 255
        arr = np.array(_converter().convert_image(im, to_type=np.ndarray), dtype=np.float64)
        return np.clip(arr / 65535.0, 0.0, 1.0)
    if im.mode == "F":
        return np.array(_converter().convert_image(im, to_type=np.ndarray), dtype=np.float32)
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # palette, CMYK, alpha modes, 1-bit, ...
    return np.array(_converter().convert_image(im, to_type=np.ndarray))


def _array_to_chw(arr: np.ndarray) -> Tensor:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        hint = (
            "; it looks channel-first, pass a torch.Tensor or use arr.transpose(1, 2, 0)"
            if (arr.ndim == 3 and arr.shape[0] in (1, 3, 4))
            else ""
        )
        raise ValueError(
            f"numpy images must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape "
            f"{arr.shape}{hint}"
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:  # scaled here: torch < 2.3 has no uint16
        arr = arr / 65535.0
    if arr.dtype not in _UINT_DTYPES and arr.dtype.kind != "f":
        raise TypeError(
            f"numpy images must be uint8 (0..255), uint16 (0..65535), bool or float in [0, 1], "
            f"got dtype {arr.dtype}"
        )
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _tensor_to_chw(x: Tensor) -> Tensor:
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    elif x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ValueError(
            f"tensor images must be (H, W), (C, H, W) or (1, C, H, W) with C in (1, 3, 4), got "
            f"shape {tuple(x.shape)}"
        )
    if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
        raise TypeError(f"tensor images must be float in [0, 1] or uint8, got dtype {x.dtype}")
    return x


def _to_unit_float(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Scale integer pixels to [0, 1]; check that float pixels already are."""
    if x.dtype == torch.uint8:
        return x.to(dtype) / 255.0
    lo, hi = (float(v) for v in torch.aminmax(x)) if x.numel() else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(
            f"float images must have values in [0, 1], got range [{lo:.4g}, {hi:.4g}]; divide "
            f"0..255 data by 255, or denormalize an already normalized tensor first"
        )
    return x.to(dtype).clamp(0.0, 1.0)


def _interpolate(x: Tensor, h: int, w: int) -> Tensor:
    if tuple(x.shape[-2:]) == (h, w):
        return x
    batched = x.ndim == 4
    y = F.interpolate(
        x if batched else x[None],
        size=(h, w),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return y if batched else y[0]


def _stats(x: Tensor, value: Stats, name: str) -> Tensor | None:
    """A ``(C, 1, 1)`` tensor of ``value`` matching ``x``, or None for ``None``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"expected a floating tensor, got dtype {x.dtype}; convert with x.float()")
    if x.ndim not in (3, 4):
        raise ValueError(f"expected (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device).reshape(-1)
    c = x.shape[-3]
    if t.numel() not in (1, c):
        raise ValueError(
            f"{name} has {t.numel()} entries but the image has {c} channels; pass 1 or {c} "
            f"values, or {name}=None"
        )
    return t.reshape(-1, 1, 1)
