"""GradientShap: expected gradients over a distribution of baselines.

Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017; Erion et
al., "Improving performance of deep learning models with axiomatic attribution priors and
expected gradients", Nature Machine Intelligence 2021. As Captum's ``GradientShap``: each sample
draws a baseline ``b`` from the distribution, optional Gaussian noise ``ε`` added to the image
and ``α ~ U(0, 1)``, and contributes ``(x + ε - b) ⊙ ∇f(b + α (x + ε - b))``; the result is
the mean over ``n`` samples, whose expectation sums to ``f(x) - E[f(b)]`` where the noise is
zero.
"""

from __future__ import annotations

import torch
from torch import nn

from .._runtime import (
    along_path,
    auto_batch_size,
    bind,
    check_count,
    check_generator,
    check_real,
    guarded,
    prepare,
    with_k,
)
from ..targets import TargetLike
from .deeplift import baseline_bank

__all__ = ["gradient_shap"]


def gradient_shap(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, baselines: object = None,
    n: int = 50, stdev: float = 0.0, batch_size: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """GradientShap (expected gradients): ``E[(x + ε - b) ⊙ ∇f(b + α (x + ε - b))]`` over
    baselines ``b`` drawn from ``baselines``, ``α ~ U(0, 1)`` and noise ``ε ~ N(0, stdev²)``.

    Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017, as
    Captum's ``GradientShap`` (which multiplies by the noisy input's difference too).

    The draws come from ``generator`` in this order: first the ``"uniform"`` entries of a
    baseline list (as :func:`~netlens.attribution.baseline_image` draws them), then for each
    sample ``k = 0 .. n-1``: ``torch.randint(N, (B,))`` (the baseline of each image),
    ``torch.rand(B)`` (``α``) and, if ``stdev > 0``, ``torch.randn(x.shape) * stdev``, each
    with ``generator=generator`` and ``x``'s device (``α`` and the noise in ``x``'s dtype).
    Results do not depend on ``batch_size``; targets are fixed once, on the clean images.

    Args:
        model: any classifier ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: what to explain (:mod:`netlens.targets`); None: the predicted class of ``x``.
        baselines: a tensor ``(N, C, H, W)``: the distribution, shared by every image
            (Captum's form); a list of per-image baselines as
            :func:`~netlens.attribution.integrated_gradients` takes one (``"zeros"``,
            ``"blur"``, ``"uniform"``, a number, a tensor); or None: ``["zeros", "blur"]``.
        n: samples per image.
        stdev: standard deviation of the Gaussian noise added to the image (in the input's
            units, as Captum's ``stdevs``); 0 adds none.
        batch_size: points per pass; default: as many images as fit the memory budget.
        progress: show a progress bar: None (when slow), True or False.
        generator: the source of every draw; default a fresh, nondeterministically seeded one.
            The global random state is never used.

    Returns:
        ``(B, C, H, W)`` (``(B, K, C, H, W)`` for K targets per image), ``x``'s dtype and device.

    Raises:
        ValueError, TypeError: bad input, target, baselines or option.
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> g = torch.Generator().manual_seed(0)
        >>> gradient_shap(m, torch.rand(2, 3, 32, 32), [1, 2], baselines=torch.rand(5, 3, 32, 32),
        ...               n=4, generator=g).shape
        torch.Size([2, 3, 32, 32])
    """
    fm, x = prepare(model, x)
    n = check_count(n, "n")
    stdev = check_real(stdev, "stdev", minimum=0, what=" (the noise's standard deviation)")
    generator = check_generator(generator, x)
    bank = baseline_bank(baselines, x, generator)
    fm.ensure_traced(x)
    batch_size = auto_batch_size(fm, x) if batch_size is None else batch_size
    count, batch = bank.shape[0], x.shape[0]
    rows_all = torch.arange(batch, device=x.device)
    # sample k's (noisy image, baseline, alpha), drawn in order of k, kept until consumed
    drawn: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    last = [-1]

    def draws(k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        while last[0] < k:  # k never decreases: samples are drawn in order
            which = torch.randint(count, (batch,), generator=generator, device=x.device)
            alpha = torch.rand(batch, generator=generator, dtype=x.dtype, device=x.device)
            noisy = x
            if stdev > 0:
                noisy = x + stdev * torch.randn(x.shape, generator=generator, dtype=x.dtype,
                                                device=x.device)
            last[0] += 1
            drawn[last[0]] = (noisy, bank[which, rows_all], alpha.view(-1, 1, 1, 1))
        return drawn[k]

    def point(k: int, rows: slice) -> torch.Tensor:
        noisy, base, alpha = draws(k)
        a = alpha[rows]
        return a * noisy[rows] + (1 - a) * base[rows]  # Captum's form of b + α (x - b)

    with guarded(fm):
        t = bind(fm, x, target, batch_size)  # once, on the clean images
        total = x.new_zeros(x.shape if t.k is None else (batch, t.k, *x.shape[1:]))

        def add(k: int, rows: slice, g: torch.Tensor) -> None:
            noisy, base, _ = drawn[k]
            total[rows] += with_k(noisy[rows] - base[rows], t.k) * g
            if rows.stop == batch:
                del drawn[k]

        along_path(fm, x, t, n, point, add, batch_size=batch_size, progress=progress,
                    desc="GradientShap")
    return total / n
