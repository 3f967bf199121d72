"""Noise tunnel: any attribution method averaged over noisy copies of the input (SmoothGrad,
SmoothGrad² and VarGrad of every registered method).

``noise_tunnel(model, x, target, method="saliency", ...)`` is a method itself (the call form,
not a wrapper returning a function): it has the registry's signature, so it is registered,
listed, contract-tested and called by ``NetLens`` like any method, with the inner method and
its options as values (``method=``, ``options=``). A wrapper ``noise_tunnel(method)`` would
return a new function per call that the registry, the command line and the docs cannot list.

The noisy copies are evaluated as :func:`~netlens.attribution.smooth_grad` evaluates its points:
``n × B`` points in sample-major order (point ``(k, b)`` is sample ``k`` of image ``b``) split
into chunks of ``batch_size`` points, each chunk one call of the inner method on the stacked
noisy images with the targets bound on the clean images. Noise is drawn per sample in increasing
order, exactly as ``smooth_grad`` draws it, so ``noise_tunnel(method="saliency")`` *is*
``smooth_grad`` (bit for bit with the same generator and ``batch_size``).

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> g = torch.Generator().manual_seed(0)
    >>> noise_tunnel(m, torch.rand(1, 3, 32, 32), 3, method="input_x_gradient", n=2,
    ...              generator=g).shape
    torch.Size([1, 3, 32, 32])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import nn

from .._runtime import (
    auto_batch_size,
    bind,
    check_count,
    check_generator,
    check_real,
    chunks,
    guarded,
    prepare,
    progress_bar,
)
from ..targets import TargetLike

__all__ = ["noise_tunnel"]

TunnelVariant = Literal["mean", "squared", "vargrad"]


def _inner(method: str | Callable[..., torch.Tensor]) -> tuple[str, Callable[..., torch.Tensor]]:
    """The registered method named ``method`` (or the callable itself) and its name."""
    if callable(method):
        return getattr(method, "__name__", type(method).__name__), method
    from . import METHODS  # the registry lists this module: import it when called

    if method == "noise_tunnel":
        raise ValueError("noise_tunnel cannot tunnel itself: pass the inner method's name")
    if not isinstance(method, str) or method not in METHODS:
        names = ", ".join(sorted(n for n in METHODS if n != "noise_tunnel"))
        raise ValueError(f"method must be a registered attribution method or a function "
                         f"f(model, x, target, **options); got {method!r}; registered: {names}")
    return method, METHODS[method].fn


def noise_tunnel(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    method: str | Callable[..., torch.Tensor] = "saliency", n: int = 50, sigma: float = 0.15,
    variant: TunnelVariant = "mean", options: Mapping[str, Any] | None = None,
    noise: torch.Tensor | None = None, batch_size: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """An attribution method averaged over noisy copies of the input (Captum's ``NoiseTunnel``).

    Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017 (``"mean"``); SmoothGrad²
    (``"squared"``, Hooker et al., "A Benchmark for Interpretability Methods in Deep Neural
    Networks", NeurIPS 2019); VarGrad (``"vargrad"``, Adebayo et al., "Local Explanation Methods
    for Deep Neural Networks Lack Sensitivity to Parameter Values", ICLR workshop 2018).

    The noise of sample ``k`` (``k = 0 .. n-1``, in that order) is one draw
    ``torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)`` scaled per
    image by ``sigma * (x[b].max() - x[b].min())``, as in
    :func:`~netlens.attribution.smooth_grad`. The target is bound once, on the clean images
    (the predicted class of the clean image, not of each noisy copy).

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: anything :func:`netlens.targets.as_target` accepts (None: the predicted class
            of the clean image).
        method: the inner method: a name of :data:`netlens.attribution.METHODS` (not
            ``"noise_tunnel"``) or a function ``f(model, x, target, **options) -> Tensor``.
        n: noisy samples per image (>= 1).
        sigma: the noise's standard deviation as a fraction of each image's value range.
        variant: ``"mean"`` (the mean attribution), ``"squared"`` (the mean squared
            attribution) or ``"vargrad"`` (the population variance of the attributions).
        options: keyword options of the inner method (e.g. ``{"steps": 16}`` for integrated
            gradients, ``{"layer": "layer4"}`` for a CAM). A ``generator`` is passed to a
            stochastic inner method unless given here, so one seed fixes the whole result.
        noise: explicit noise ``(n, B, C, H, W)`` to add instead of drawing it (``sigma`` and
            ``generator`` then do not shape the noise), e.g. another library's draws.
        batch_size: noisy images per call of the inner method (passed on as its
            ``batch_size`` when it takes one); default: as many images as fit the memory budget
            with a backward pass.
        progress: show a progress bar: None (when slow), True or False.
        generator: the source of the noise; default a fresh, nondeterministically seeded one.

    Returns:
        What the inner method returns for ``x``, with its shape, dtype and device: ``(B, C, H,
        W)`` for input attributions, ``(B, 1, H, W)`` for maps, a K axis after the batch for K
        targets per image.

    Raises:
        ValueError: ``n < 1``, a negative ``sigma``, an unknown ``variant`` or method, noise of
            the wrong shape, options the method rejects, a bad input or target.
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> g = torch.Generator().manual_seed(0)
        >>> noise_tunnel(lin, torch.rand(2, 1, 4, 4), 1, n=3, generator=g).shape
        torch.Size([2, 1, 4, 4])
    """
    fm, x = prepare(model, x)
    name, fn = _inner(method)
    n = check_count(n, "n")
    sigma = check_real(sigma, "sigma", minimum=0, what=" (a fraction of the image's value range)")
    if variant not in ("mean", "squared", "vargrad"):
        raise ValueError(f"variant must be 'mean', 'squared' or 'vargrad', got {variant!r}")
    opts = dict(options or {})
    taken = inspect.signature(fn).parameters
    for reserved in ("model", "x", "target"):
        if reserved in opts:
            raise ValueError(f"options must not hold {reserved!r}: noise_tunnel passes it")
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in taken.values())
    unknown = [k for k in opts if k not in taken and not accepts_any]
    if unknown:
        raise ValueError(f"{name} takes no option {', '.join(map(repr, unknown))}; its options: "
                         f"{', '.join(k for k in taken if k not in ('model', 'x', 'target'))}")
    generator = check_generator(generator, x)
    if "generator" in taken and "generator" not in opts:
        opts["generator"] = generator
    if "progress" in taken:
        opts.setdefault("progress", False)  # one bar: this one
    if noise is not None:
        if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != (n, *x.shape):
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise must be a tensor (n, B, C, H, W) = {(n, *x.shape)}, got "
                             f"{got}")
        noise = noise.detach().to(dtype=x.dtype, device=x.device)
        if not bool(torch.isfinite(noise).all()):
            raise ValueError("noise holds NaN or infinite values")
    fm.ensure_traced(x)
    bs = auto_batch_size(fm, x) if batch_size is None else check_count(batch_size, "batch_size")
    batch = x.shape[0]
    span = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1)
    scale = sigma * span
    drawn: list = [-1, None]  # (k, noise of sample k): one sample's noise in memory, not n

    def sample(k: int) -> torch.Tensor:
        if noise is not None:
            return noise[k]
        while drawn[0] < k:  # k never decreases, so samples are drawn in order
            drawn[1] = torch.randn(x.shape, generator=generator, dtype=x.dtype,
                                   device=x.device) * scale
            drawn[0] += 1
        return drawn[1]

    total: torch.Tensor | None = None
    spread: torch.Tensor | None = None
    with guarded(fm), progress_bar(n * batch, progress, f"noise tunnel ({name})") as bar:
        t = bind(fm, x, target, bs)  # once, on the clean images
        for part in chunks(n * batch, bs):
            groups = [(k, slice(max(part.start - k * batch, 0), min(part.stop - k * batch, batch)))
                      for k in range(part.start // batch, (part.stop - 1) // batch + 1)]
            points = torch.cat([x[rows] + sample(k)[rows] for k, rows in groups])
            images = torch.cat([torch.arange(rows.start, rows.stop) for _, rows in groups])
            if "batch_size" in taken and "batch_size" not in opts:
                out = fn(fm, points, t.take(images), batch_size=points.shape[0], **opts)
            else:
                out = fn(fm, points, t.take(images), **opts)
            if total is None:
                total = out.new_zeros((batch, *out.shape[1:]))
                spread = torch.zeros_like(total)
            assert spread is not None
            start = 0
            for k, rows in groups:  # per sample, in increasing k: independent of the chunks
                stop = start + rows.stop - rows.start
                a = out[start:stop]
                if variant == "mean":
                    total[rows] += a
                elif variant == "squared":
                    total[rows] += a * a
                else:  # Welford's update: the variance without cancellation
                    delta = a - total[rows]
                    total[rows] += delta / (k + 1)
                    spread[rows] += delta * (a - total[rows])
                start = stop
            bar.update(part.stop - part.start)
    assert total is not None and spread is not None
    return spread / n if variant == "vargrad" else total / n
