"""Path attributions other than the straight line of integrated gradients: Blur IG (the path of
decreasing Gaussian blur) and Guided IG (a path that moves the features with the smallest
gradients first).

Both sum the gradient times the path's step over the path, so both are complete: the
attributions add up to ``f(x) - f(start of the path)`` up to the quadrature's error, which
shrinks as ``steps`` grows. Targets (the predicted class too) are fixed once on the clean images.

Blur IG's points do not depend on each other, so they are evaluated as integrated gradients'
are (``n_steps × B`` points in chunks of ``batch_size``; the result does not depend on it). Guided
IG's next point depends on the gradient at the current one: its steps run one after another,
each one pass over all images (and, for K targets per image, one path per target).

Example:
    >>> import torchvision
    >>> m = torchvision.models.resnet18().eval()
    >>> blur_ig(m, torch.rand(1, 3, 32, 32), 3, steps=4).shape
    torch.Size([1, 3, 32, 32])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from .._runtime import (
    along_path,
    auto_batch_size,
    bind,
    check_count,
    check_real,
    chunks,
    grad,
    guarded,
    model_output,
    prepare,
    progress_bar,
    scores_of,
    with_k,
)
from ..targets import TargetLike
from .gradients import baseline_image

__all__ = ["blur_ig", "guided_ig", "gaussian_blur"]

Padding = Literal["constant", "reflect"]

# Blur IG's kernels reach 8 standard deviations (scipy's 4 leave out 6e-5 of the kernel's mass,
# and the path jumps by that much each time the radius grows, a floor under its completeness
# error); the path's start is still ``gaussian_blur(x, max_sigma)`` to about 1e-4 relative.
_TRUNCATE = 8.0


def _blur_matrices(size: int, sigma: float, mode: Padding, truncate: float, dtype: torch.dtype,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, dM/dsigma)``, ``(size, size)``: a 1-D Gaussian blur of std ``sigma`` as a matrix
    (scipy.ndimage's kernel: radius ``int(truncate sigma + 0.5)``, zero (``"constant"``) or
    half-sample symmetric (``"reflect"``) edges) and its exact derivative in ``sigma`` at that
    radius. ``sigma = 0`` is the identity (derivative zero)."""
    eye = torch.eye(size, dtype=dtype, device=device)
    if sigma == 0:
        return eye, torch.zeros_like(eye)
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    e = torch.exp(-0.5 * (t / sigma) ** 2)
    de = e * t * t / sigma ** 3
    kernel = e / e.sum()
    dkernel = (de * e.sum() - e * de.sum()) / e.sum() ** 2
    rows = torch.arange(size).repeat_interleave(t.numel())
    cols = torch.arange(size)[:, None] + t.long()[None, :]
    cols = cols.flatten()
    weights, dweights = kernel.repeat(size), dkernel.repeat(size)
    if mode == "reflect":
        cols = cols % (2 * size)
        cols = torch.where(cols >= size, 2 * size - 1 - cols, cols)
    else:
        inside = (cols >= 0) & (cols < size)
        rows, cols, weights, dweights = rows[inside], cols[inside], weights[inside], \
            dweights[inside]
    m = torch.zeros(size, size, dtype=torch.float64).index_put_((rows, cols), weights,
                                                                accumulate=True)
    dm = torch.zeros(size, size, dtype=torch.float64).index_put_((rows, cols), dweights,
                                                                 accumulate=True)
    return m.to(dtype=dtype, device=device), dm.to(dtype=dtype, device=device)


def _check_padding(mode: object) -> Padding:
    if mode not in ("constant", "reflect"):
        raise ValueError(f"padding must be 'constant' (zeros, PAIR's) or 'reflect', got {mode!r}")
    return mode


def gaussian_blur(x: torch.Tensor, sigma: float, *, padding: Padding = "constant",
                  truncate: float = 4.0, derivative: bool = False) -> torch.Tensor:
    """``x`` blurred by a Gaussian of standard deviation ``sigma`` pixels along H and W (each
    channel on its own), or with ``derivative=True`` the exact derivative of that blur in
    ``sigma``.

    The kernel is ``scipy.ndimage.gaussian_filter``'s (radius ``int(truncate sigma + 0.5)``);
    the edges are zeros (``"constant"``, PAIR's Blur IG) or mirrored (``"reflect"``, scipy's
    default), so ``gaussian_blur(x, s)`` equals ``gaussian_filter(x, (0, 0, s, s),
    mode=padding)``. Any ``sigma`` works, also wider than the image.

    Args:
        x: images ``(B, C, H, W)``.
        sigma: the standard deviation in pixels (>= 0; 0 returns ``x``).
        padding: ``"constant"`` or ``"reflect"``.
        truncate: the kernel's radius in standard deviations (scipy's 4).
        derivative: return ``d blur(x, sigma) / d sigma`` instead.

    Returns:
        A tensor of ``x``'s shape, dtype and device.

    Raises:
        ValueError: a negative or non-finite ``sigma``, an unknown ``padding``.

    Example:
        >>> gaussian_blur(torch.ones(1, 1, 1, 3), 1.0, padding="reflect")
        tensor([[[[1., 1., 1.]]]])
    """
    sigma = check_real(sigma, "sigma", minimum=0)
    mode = _check_padding(padding)
    truncate = check_real(truncate, "truncate", minimum=0)
    mh, dh = _blur_matrices(x.shape[2], sigma, mode, truncate, x.dtype, x.device)
    mw, dw = _blur_matrices(x.shape[3], sigma, mode, truncate, x.dtype, x.device)
    if not derivative:
        return torch.einsum("hk,bckl,wl->bchw", mh, x, mw)
    return (torch.einsum("hk,bckl,wl->bchw", dh, x, mw)
            + torch.einsum("hk,bckl,wl->bchw", mh, x, dw))


def blur_ig(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, steps: int = 100,
    max_sigma: float = 50.0, padding: Padding = "constant", batch_size: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Blur integrated gradients: the gradient integrated along the path from the image blurred
    by a Gaussian of std ``max_sigma`` to the image itself.

    Xu, Venugopalan & Sundararajan, "Attribution in Scale and Space", CVPR 2020 (PAIR's
    ``saliency.core.BlurIG``). With ``x_s`` the image blurred at std ``s``,

    ``attr = - sum_k  Δs · (d x_s / d s)(s_k) ⊙ ∇f(x_{s_k})``,  ``Δs = max_sigma / steps``,

    at the midpoints ``s_k = (k + 1/2) Δs`` (PAIR sums at the left points ``k Δs`` with a
    finite-difference ``d x_s / d s``; here the derivative is exact and the midpoint rule's error
    falls as ``1 / steps²``). So ``attr.sum() ≈ f(x) - f(x_{max_sigma})``, where ``x_s`` is
    ``gaussian_blur(x, s, padding=padding, truncate=8)`` (:func:`gaussian_blur`).

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: anything :func:`netlens.targets.as_target` accepts (None: the predicted class
            of ``x``, fixed once).
        steps: points on the path (PAIR's 100).
        max_sigma: the blur at the start of the path, in pixels (PAIR's 50, for 224 px images).
        padding: the blur's edges, ``"constant"`` (zeros, PAIR's) or ``"reflect"``; see
            :func:`gaussian_blur`.
        batch_size: points per pass; default: as many images as fit the memory budget. The
            result does not depend on it.
        progress: show a progress bar: None (when slow), True or False.

    Returns:
        ``(B, C, H, W)`` (``(B, K, C, H, W)`` for K targets), ``x``'s dtype and device.

    Raises:
        ValueError, TypeError: ``steps < 1``, ``max_sigma <= 0``, an unknown ``padding``, a bad
            input or target.
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> blur_ig(lin, torch.rand(2, 1, 4, 4), 1, steps=8, max_sigma=2.0).shape
        torch.Size([2, 1, 4, 4])
    """
    fm, x = prepare(model, x)
    steps = check_count(steps, "steps")
    max_sigma = check_real(max_sigma, "max_sigma", minimum=0)
    if max_sigma == 0:
        raise ValueError("max_sigma must be > 0 (the blur of the path's start, in pixels)")
    mode = _check_padding(padding)
    fm.ensure_traced(x)
    batch_size = auto_batch_size(fm, x) if batch_size is None else check_count(
        batch_size, "batch_size")
    delta = max_sigma / steps
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def at(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The blurred images of step ``k`` and their derivative in sigma (made once: kept
        from the pass's points until its gradients are added)."""
        if k not in cache:
            s = (k + 0.5) * delta
            cache[k] = (gaussian_blur(x, s, padding=mode, truncate=_TRUNCATE),
                        gaussian_blur(x, s, padding=mode, truncate=_TRUNCATE, derivative=True))
        return cache[k]

    def point(k: int, rows: slice) -> torch.Tensor:
        return at(k)[0][rows]

    with guarded(fm):
        t = bind(fm, x, target, batch_size)
        total = x.new_zeros(x.shape if t.k is None else (x.shape[0], t.k, *x.shape[1:]))

        def add(k: int, rows: slice, g: torch.Tensor) -> None:
            total[rows] -= delta * with_k(at(k)[1][rows], t.k) * g
            if rows.stop == x.shape[0]:
                del cache[k]  # the last images of step k: it is never needed again

        along_path(fm, x, t, steps, point, add, batch_size=batch_size, progress=progress,
                    desc="Blur IG")
    return total


def _guided_step(x: torch.Tensor, cur: torch.Tensor, base: torch.Tensor, g: torch.Tensor,
                 step: int, steps: int, fraction: float, max_dist: float) -> torch.Tensor:
    """One step of Guided IG for one path (flat float64 tensors): the new point, moved from
    ``cur`` towards ``x`` by a ``1/steps`` share of the L1 distance, the features with the
    smallest ``|g|`` first, each kept within ``max_dist`` (in alpha) of the straight line
    (Kapishnikov et al. 2021, Algorithm 1; PAIR's ``guided_ig_impl``)."""
    diff = x - base
    l1_total = diff.abs().sum()
    alpha = (step + 1.0) / steps
    a_min, a_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
    x_min, x_max = base + diff * a_min, base + diff * a_max
    l1_target = l1_total * (1 - (step + 1) / steps)
    moving = diff != 0
    g = g.clone()
    while True:
        x_alpha = torch.where(moving, (cur - base) / torch.where(moving, diff, 1.0),
                              torch.full_like(cur, a_max))
        behind = x_alpha < a_min
        cur = torch.where(behind, x_min, cur)  # features that fell behind catch up
        l1_current = (cur - x).abs().sum()
        if math.isclose(float(l1_target), float(l1_current), rel_tol=1e-9, abs_tol=1e-9):
            return cur
        g[cur == x_max] = math.inf  # features at the bound of this step stay
        threshold = torch.kthvalue(g.abs(), max(1, int(math.floor(fraction * (g.numel() - 1)))
                                                + 1)).values
        selected = (g.abs() <= threshold) & (g != math.inf)
        if not bool(selected.any()):  # every feature is at its bound: nothing left to move
            return cur
        l1_s = ((cur - x_max).abs() * selected).sum()
        gamma = (l1_current - l1_target) / l1_s if l1_s > 0 else math.inf
        if gamma > 1.0:
            cur = torch.where(selected, x_max, cur)
        else:
            return torch.where(selected, cur + (x_max - cur) * gamma, cur)


def guided_ig(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *, steps: int = 200,
    baseline: object = None, fraction: float = 0.25, max_dist: float = 0.02,
    batch_size: int | None = None, progress: bool | None = None,
) -> torch.Tensor:
    """Guided integrated gradients: the gradient summed along an adaptive path from the
    baseline to the image that, at each step, moves the features whose gradient is smallest.

    Kapishnikov et al., "Guided Integrated Gradients: an Adaptive Path Method for Removing
    Noise", CVPR 2021 (PAIR's ``saliency.core.GuidedIG``). Step ``k`` of ``steps`` cuts the L1
    distance to ``x`` to ``(1 - (k+1)/steps)`` of the total: the ``fraction`` of features with
    the smallest ``|∇f|`` at the current point move first (all the way to the step's bound,
    then the next smallest), and no feature strays further than ``max_dist`` (in alpha) from
    the straight line. ``attr = sum (x_new - x_old) ⊙ ∇f(x_old)``, so ``attr.sum() ≈ f(x) -
    f(baseline)`` (a left Riemann sum; ``max_dist=0`` is integrated gradients on the straight
    line with left points). Each image and each of its K targets has its own path; the
    selection and updates are in float64, as PAIR's.

    Args:
        model: any ``nn.Module`` or a :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, float32 or float64.
        target: anything :func:`netlens.targets.as_target` accepts (None: the predicted class
            of ``x``, fixed once).
        steps: the path's steps, one gradient each (PAIR's 200).
        baseline: the path's start, as :func:`~netlens.attribution.integrated_gradients`'
            (None: zeros; a number, a tensor, ``"blur"``).
        fraction: the share of the features selected at each iteration, in (0, 1].
        max_dist: how far (in alpha, in [0, 1]) a feature may stray from the straight line.
        batch_size: paths per pass; default: as many images as fit the memory budget.
        progress: show a progress bar: None (when slow), True or False.

    Returns:
        ``(B, C, H, W)`` (``(B, K, C, H, W)`` for K targets), ``x``'s dtype and device.

    Raises:
        ValueError, TypeError: ``steps < 1``, ``fraction`` outside (0, 1], ``max_dist`` outside
            [0, 1], a random baseline, a bad input or target.
        RuntimeError: under ``torch.inference_mode()``.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> guided_ig(lin, torch.rand(2, 1, 4, 4), 1, steps=8).shape
        torch.Size([2, 1, 4, 4])
    """
    fm, x = prepare(model, x)
    steps = check_count(steps, "steps")
    fraction = check_real(fraction, "fraction", what=" in (0, 1]")
    max_dist = check_real(max_dist, "max_dist", what=" in [0, 1]")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1] (the share of features moved at a time), "
                         f"got {fraction!r}")
    if not 0 <= max_dist <= 1:
        raise ValueError(f"max_dist must be in [0, 1] (the largest distance from the straight "
                         f"line, in alpha), got {max_dist!r}")
    if isinstance(baseline, str) and baseline == "uniform":
        raise ValueError("guided_ig takes a fixed baseline (None, 'zeros', 'blur', a number or "
                         "a tensor); for random baselines average it over several")
    base = baseline_image(baseline, x)
    fm.ensure_traced(x)
    batch_size = auto_batch_size(fm, x) if batch_size is None else check_count(
        batch_size, "batch_size")
    with guarded(fm):
        t = bind(fm, x, target, batch_size)
        k = 1 if t.k is None else t.k
        paths = x.shape[0] * k
        image = torch.arange(x.shape[0]).repeat_interleave(k)  # path p: image p // K
        which = torch.arange(k).repeat(x.shape[0])  # and target p % K
        end = x[image].to(torch.float64).flatten(1)
        start = base[image].to(torch.float64).flatten(1)
        cur = start.clone()
        attr = torch.zeros_like(cur)
        with progress_bar(steps * paths, progress, "Guided IG") as bar:
            for step in range(steps):
                for part in chunks(paths, batch_size):
                    points = cur[part].to(x.dtype).view(-1, *x.shape[1:]).requires_grad_(True)
                    tp = t.take(image[part])
                    s = scores_of(tp, model_output(fm, points, tp))
                    if t.k is not None:  # path p follows its own target only
                        s = s.gather(1, which[part, None].to(s.device))[:, 0]
                    g = grad(s, points, k=None, allow_unused=True).to(torch.float64).flatten(1)
                    for i, p in enumerate(range(part.start, part.stop)):
                        if bool((end[p] == start[p]).all()):
                            continue  # the image is its baseline: attribution zero
                        new = _guided_step(end[p], cur[p], start[p], g[i], step, steps,
                                           fraction, max_dist)
                        attr[p] += (new - cur[p]) * g[i]
                        cur[p] = new
                    bar.update(part.stop - part.start)
    out = attr.to(x.dtype).view(x.shape[0], *(() if t.k is None else (k,)), *x.shape[1:])
    return out
