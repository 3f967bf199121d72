"""Robustness and complexity of an explanation.

- :func:`max_sensitivity` (Yeh et al., "On the (In)fidelity and Sensitivity of Explanations",
  NeurIPS 2019): the largest relative change of the explanation under small uniform input noise.
  Lower is better.
- :func:`avg_sensitivity` (Yeh et al. 2019): the same relative change, averaged over the draws.
- :func:`local_lipschitz_estimate` (Alvarez-Melis & Jaakkola, "On the Robustness of
  Interpretability Methods", 2018): the largest ``||E(x') - E(x)|| / ||x' - x||`` over Gaussian
  neighbours ``x'``. Lower is better.
- :func:`sparseness` (Chalasani et al., "Concise Explanations of Neural Networks using
  Adversarial Training", ICML 2020): the Gini index of the absolute map. Higher is sparser.
- :func:`continuity` (Montavon et al. 2018, as Quantus 0.6): the largest
  ``||E(x) - E(x_s)||_1 / ||x - x_s||_2`` over translations ``x_s`` of the image. Lower is
  better.
- :func:`consistency` (Dasgupta et al., ICML 2022): how often images whose discretized
  explanations are equal share the prediction. Higher is better.
- :func:`relative_input_stability`, :func:`relative_output_stability`,
  :func:`relative_representation_stability` (Agarwal et al., "Rethinking Stability for
  Attribution-based Explanations", 2022): the largest relative change of the explanation over
  the relative change of the input, the change of the logits, or the relative change of a
  layer's output, over noisy copies that keep the prediction. Lower is better.

The last five explain all the perturbed copies of a chunk (every image, every draw) in one call
of the method, in chunks of ``batch_size`` perturbed images (default from the memory budget).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Union

import torch
from torch import nn

from .._runtime import auto_batch_size, check_count, check_real, chunks, guarded, prepare
from .._util import progress_bar
from ..targets import Class, TargetLike, flat_scores
from ._maps import (
    Method,
    Reduce,
    bind_single,
    call_method,
    check_attr,
    method_target,
    model_for,
    resolve_method,
    saliency_map,
)

__all__ = ["max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate", "sparseness",
           "continuity", "consistency", "relative_input_stability", "relative_output_stability",
           "relative_representation_stability"]


def max_sensitivity(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency", *,
    n: int = 8, radius: float = 0.02, options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None, progress: bool | None = None,
) -> torch.Tensor:
    """``max_k ||E(x + d_k) - E(x)|| / ||E(x)||`` per image, over ``n`` noise draws ``d_k``.

    Each ``d_k`` is uniform in ``[-r, r]`` per pixel, ``r = radius`` times the image's value
    range. The target is resolved once on ``x`` and kept for the noisy copies, so only the
    explanation can move. The explanation is recomputed ``n`` times, each on the whole batch.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: class per image; None: the predicted class.
        method: a name of :data:`~netlens.attribution.METHODS` (or ``"random"``, ``"centre"``),
            or a function ``f(model, x, target, **options)``.
        n: noise draws.
        radius: the noise's half-width as a fraction of each image's value range.
        options: keyword options of the method.
        generator: the noise's source (a fresh seed when None); also given to the method.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64; 0.0 for an explainer that ignores its input.

    Raises:
        ValueError: ``n < 1``, a negative radius, an unknown method, a bad input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> max_sensitivity(lin, torch.rand(2, 1, 2, 2), 0, "saliency", n=2).tolist()
        [0.0, 0.0]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1 (noise draws), got {n!r}")
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    _, fn = resolve_method(method)
    fm, x = prepare(model, x)
    with guarded(fm), torch.no_grad():
        targets = method_target(bind_single(fm, x, target, auto_batch_size(fm, x, backward=False)))
    gen = generator
    if gen is None:
        gen = torch.Generator(device=x.device)
        gen.seed()
    opts = dict(options or {})
    net = model_for(fn, fm, model)
    base = call_method(fn, net, x, targets, opts, generator, progress).detach()
    check_attr(base, x, name="the explanation")
    norm = base.flatten(1).double().norm(dim=1)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    worst = torch.zeros_like(norm)
    with progress_bar(n, progress, "max-sensitivity") as bar:
        for _ in range(n):
            u = torch.rand(x.shape, generator=gen, dtype=x.dtype, device=gen.device).to(x.device)
            noisy = x + (2 * u - 1) * radius * span
            moved = call_method(fn, net, noisy, targets, opts, generator, progress).detach()
            change = (moved - base).flatten(1).double().norm(dim=1)
            worst = torch.maximum(worst, change / torch.where(norm > 0, norm,
                                                              torch.ones_like(norm)))
            bar.update()
    return worst


def sparseness(attr: torch.Tensor, *, reduce: Reduce = "auto") -> torch.Tensor:
    """The Gini index of each absolute map: 0 for a uniform map, near 1 when all the relevance
    sits on one pixel (Chalasani et al. 2020; the definition of Hurley & Rickard 2009).

    Returns:
        ``(B,)`` float64 in ``[0, 1)``; an all-zero map scores 0.

    Raises:
        ValueError: ``attr`` not ``(B, C, H, W)``.

    Example:
        >>> sparseness(torch.tensor([[[[0.0, 0.0, 0.0, 1.0]]]])).tolist()
        [0.75]
    """
    check_attr(attr)
    a = saliency_map(attr, reduce).flatten(1).double().abs().sort(dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=a.dtype, device=a.device)
    total = a.sum(1)
    gini = ((2 * i - n - 1) * a).sum(1) / (n * torch.where(total > 0, total,
                                                            torch.ones_like(total)))
    return torch.where(total > 0, gini, torch.zeros_like(gini))


def _check_draws(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1 (noise draws), got {n!r}")
    return n


def _scale_max(e: torch.Tensor) -> torch.Tensor:
    top = e.flatten(1).abs().amax(1).view(-1, *([1] * (e.dim() - 1)))
    return e / torch.where(top > 0, top, torch.ones_like(top))


def _re_explain(
    model: nn.Module, x: torch.Tensor, target: TargetLike, method: Method, n: int,
    draw: str, scale: float, perturbations: torch.Tensor | None,
    options: dict[str, Any] | None, generator: torch.Generator | None, progress: bool | None,
    desc: str, normalize: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yields ``(x, E(x), x_k, E(x_k))`` per draw ``k`` (float64 explanations), ``x_k = x + d_k``.

    ``d_k`` is ``perturbations[k]`` when given, else drawn from ``generator`` in the order
    ``k = 0 .. n-1``, one tensor of ``x``'s shape per draw: ``"uniform"`` in
    ``[-scale, scale]`` times each image's value range, ``"normal"`` with std ``scale`` times
    it. The target is bound once on ``x``."""
    _, fn = resolve_method(method)
    fm, x = prepare(model, x)
    if perturbations is not None:
        if not isinstance(perturbations, torch.Tensor) or perturbations.shape[1:] != x.shape:
            got = (tuple(perturbations.shape) if isinstance(perturbations, torch.Tensor)
                   else type(perturbations).__name__)
            raise ValueError(f"perturbations must be a tensor (n, *x.shape) = (n, "
                             f"{', '.join(map(str, x.shape))}) of additive noise, got {got}")
        if not bool(torch.isfinite(perturbations).all()):
            raise ValueError("perturbations contain NaN or infinite values")
        n = perturbations.shape[0]
    with guarded(fm), torch.no_grad():
        targets = method_target(bind_single(fm, x, target, auto_batch_size(fm, x, backward=False)))
    gen = generator
    if gen is None and perturbations is None:
        gen = torch.Generator(device=x.device)
        gen.seed()
    opts = dict(options or {})
    net = model_for(fn, fm, model)
    base = call_method(fn, net, x, targets, opts, generator, progress).detach()
    check_attr(base, x, name="the explanation")
    base = base.double()
    if normalize:
        base = _scale_max(base)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    with progress_bar(n, progress, desc) as bar:
        for k in range(n):
            if perturbations is not None:
                d = perturbations[k].to(device=x.device, dtype=x.dtype)
            else:
                assert gen is not None
                if draw == "uniform":
                    u = torch.rand(x.shape, generator=gen, dtype=x.dtype, device=gen.device)
                    d = (2 * u.to(x.device) - 1) * scale * span
                else:
                    g = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=gen.device)
                    d = g.to(x.device) * scale * span
            noisy = x + d
            moved = call_method(fn, net, noisy, targets, opts, generator, progress).detach()
            moved = moved.double()
            if normalize:
                moved = _scale_max(moved)
            yield x, base, noisy, moved
            bar.update()


def avg_sensitivity(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency", *,
    n: int = 8, radius: float = 0.02, perturbations: torch.Tensor | None = None,
    options: dict[str, Any] | None = None, generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """``mean_k ||E(x + d_k) - E(x)|| / ||E(x)||`` per image, over ``n`` noise draws ``d_k``.

    :func:`max_sensitivity`'s average: the same uniform noise in ``[-r, r]`` per pixel,
    ``r = radius`` times the image's value range, the target resolved once on ``x``.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: class per image; None: the predicted class.
        method: a name of :data:`~netlens.attribution.METHODS` (or ``"random"``, ``"centre"``),
            or a function ``f(model, x, target, **options)``.
        n: noise draws.
        radius: the noise's half-width as a fraction of each image's value range.
        perturbations: ``(n, B, C, H, W)`` additive noise to use instead of drawing it (then
            ``n`` and ``radius`` are ignored), e.g. to reproduce another library's draws.
        options: keyword options of the method.
        generator: the noise's source (a fresh seed when None): draw ``k`` is one
            ``torch.rand(x.shape)`` for ``k = 0 .. n-1``; also given to the method.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64; 0.0 for an explainer that ignores its input.

    Raises:
        ValueError: ``n < 1``, a negative radius, perturbations of the wrong shape, an unknown
            method, a bad input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> avg_sensitivity(lin, torch.rand(2, 1, 2, 2), 0, "saliency", n=2).tolist()
        [0.0, 0.0]
    """
    n = _check_draws(n)
    if not radius >= 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    total: torch.Tensor | None = None
    count = 0
    for _, base, _, moved in _re_explain(model, x, target, method, n, "uniform", radius,
                                         perturbations, options, generator, progress,
                                         "avg-sensitivity"):
        norm = base.flatten(1).norm(dim=1)
        change = (moved - base).flatten(1).norm(dim=1)
        ratio = change / torch.where(norm > 0, norm, torch.ones_like(norm))
        total = ratio if total is None else total + ratio
        count += 1
    assert total is not None
    return total / count


def local_lipschitz_estimate(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency", *,
    n: int = 8, sigma: float = 0.1, normalize: bool = False,
    perturbations: torch.Tensor | None = None, options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None, progress: bool | None = None,
) -> torch.Tensor:
    """``max_k ||E(x + d_k) - E(x)|| / ||d_k||`` per image, over ``n`` Gaussian draws ``d_k``.

    Alvarez-Melis & Jaakkola's local Lipschitz estimate of the explanation, as a function of the
    input, sampled around ``x`` (both norms Euclidean, over all pixels and channels).

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: class per image; None: the predicted class.
        method: a name of :data:`~netlens.attribution.METHODS`, or a function
            ``f(model, x, target, **options)``.
        n: noise draws.
        sigma: the noise's standard deviation as a fraction of each image's value range.
        normalize: divide each explanation by its largest absolute value first (Quantus's
            default), so that the estimate does not grow with the explanation's scale.
        perturbations: ``(n, B, C, H, W)`` additive noise to use instead of drawing it (then
            ``n`` and ``sigma`` are ignored).
        options: keyword options of the method.
        generator: the noise's source (a fresh seed when None): draw ``k`` is one
            ``torch.randn(x.shape)`` for ``k = 0 .. n-1``; also given to the method.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64; 0.0 for an explainer that ignores its input.

    Raises:
        ValueError: ``n < 1``, ``sigma <= 0``, perturbations of the wrong shape or with a zero
            draw, an unknown method, a bad input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> local_lipschitz_estimate(lin, torch.rand(2, 1, 2, 2), 0, "saliency", n=2).tolist()
        [0.0, 0.0]
    """
    n = _check_draws(n)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    worst: torch.Tensor | None = None
    for xs, base, noisy, moved in _re_explain(model, x, target, method, n, "normal", sigma,
                                              perturbations, options, generator, progress,
                                              "local Lipschitz", normalize):
        step = (noisy - xs).flatten(1).double().norm(dim=1)
        if not bool((step > 0).all()):
            raise ValueError("a perturbation leaves an image unchanged (||d_k|| = 0); the "
                             "Lipschitz ratio is undefined: use noise that moves every image")
        ratio = (moved - base).flatten(1).norm(dim=1) / step
        worst = ratio if worst is None else torch.maximum(worst, ratio)
    assert worst is not None
    return worst


# -- continuity, consistency, relative stability: one chunked pass over perturbed copies -------

def _nonzero(t: torch.Tensor, eps: float) -> torch.Tensor:
    """``t`` with its exact zeros replaced by ``eps`` (the paper's guard of a relative change)."""
    return t + (t == 0).to(t.dtype) * eps


def _kept_max(values: torch.Tensor) -> torch.Tensor:
    """``(B, points)`` -> ``(B,)``: the largest value that is not nan; nan when all are."""
    kept = ~torch.isnan(values)
    top = torch.where(kept, values, torch.full_like(values, -math.inf)).amax(1)
    return torch.where(kept.any(1), top, torch.full_like(top, math.nan))


class _Perturbed:
    """One call of a metric that re-explains perturbed copies of the images: the validated
    model, input and target, the method, and the chunked passes.

    Perturbed image ``b`` of point ``k`` is item ``k * B + b``; each chunk of ``batch_size``
    consecutive items is explained in one call of the method (and, where the metric reads the
    output or a layer, scored in one forward pass), so the result does not depend on the
    chunking (for a deterministic method)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, target: TargetLike, method: Method,
                 options: dict[str, Any] | None, generator: torch.Generator | None,
                 progress: bool | None, batch_size: int | None, layer: str | None = None,
                 represent: bool = False) -> None:
        _, self.fn = resolve_method(method)
        self.fm, self.x = prepare(model, x)
        self.net = model_for(self.fn, self.fm, model)
        self.options = dict(options or {})
        self.generator, self.progress = generator, progress
        if batch_size is not None:
            batch_size = check_count(batch_size, "batch_size")
        with guarded(self.fm), torch.no_grad():
            self.targets = bind_single(self.fm, self.x, target,
                                       auto_batch_size(self.fm, self.x, backward=False))
        self.batch_size = auto_batch_size(self.fm, self.x) if batch_size is None else batch_size
        self.layer: str | None = None
        if represent:
            self.layer = (self.fm.last_spatial_layer() if layer is None
                          else self.fm.resolve_layer(layer))

    def _evaluate(self, xs: torch.Tensor, b: torch.Tensor, forward: bool,
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Float64 explanations of the images ``xs`` (of the batch's images ``b``), and with
        ``forward`` their flat outputs ``(m, K)`` and the layer's flat output ``(m, D)``."""
        e = call_method(self.fn, self.net, xs, method_target(self.targets.take(b)),
                        self.options, self.generator, self.progress).detach()
        check_attr(e, xs, name="the explanation")
        if not forward:
            return e.double(), None, None
        with torch.no_grad():
            if self.layer is None:
                return e.double(), flat_scores(self.fm(xs)).double(), None
            with self.fm.record(self.layer) as rec:
                out = flat_scores(self.fm(xs)).double()
            rep = rec.activations.get(self.layer)
        if rep is None or rep.shape[0] != xs.shape[0]:
            got = "no tensor" if rep is None else f"shape {tuple(rep.shape)}"
            raise ValueError(f"layer {self.layer!r} gave {got} for {xs.shape[0]} images; a "
                             "representation must have the batch first: choose another layer")
        return e.double(), out, rep.flatten(1).double()

    def clean(self, forward: bool,
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """:meth:`_evaluate` of the unchanged images, in chunks."""
        parts = []
        with guarded(self.fm):
            for part in chunks(self.x.shape[0], self.batch_size):
                b = torch.arange(part.start, part.stop, device=self.x.device)
                parts.append(self._evaluate(self.x[part], b, forward))
        e, out, rep = zip(*parts)
        return (torch.cat(e), None if out[0] is None else torch.cat(out),
                None if rep[0] is None else torch.cat(rep))

    def run(self, points: int,
            image_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            score: Callable[..., torch.Tensor], forward: bool, desc: str) -> torch.Tensor:
        """``(B, points)``: ``score(b, k, xs, e, out, rep)`` of the perturbed images
        ``xs = image_at(b, k)`` (tensors of image and point indices of one chunk)."""
        batch = self.x.shape[0]
        values = torch.empty(points * batch, dtype=torch.float64, device=self.x.device)
        with guarded(self.fm), progress_bar(points * batch, self.progress, desc) as bar:
            for part in chunks(points * batch, self.batch_size):
                index = torch.arange(part.start, part.stop, device=self.x.device)
                k, b = index // batch, index % batch
                xs = image_at(b, k)
                e, out, rep = self._evaluate(xs, b, forward)
                values[part] = score(b, k, xs, e, out, rep)
                bar.update(part.stop - part.start)
        return values.view(points, batch).T


def _check_perturbations(perturbations: object, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(perturbations, torch.Tensor) or perturbations.shape[1:] != x.shape \
            or perturbations.shape[0] < 1:
        got = (tuple(perturbations.shape) if isinstance(perturbations, torch.Tensor)
               else type(perturbations).__name__)
        raise ValueError(f"perturbations must be a tensor (n, *x.shape) = (n, "
                         f"{', '.join(map(str, x.shape))}) of additive noise with n >= 1, got "
                         f"{got}")
    if not bool(torch.isfinite(perturbations).all()):
        raise ValueError("perturbations contain NaN or infinite values")
    return perturbations


class _Noise:
    """``image_at(b, k) = x[b] + d_k[b]``: draw ``d_k`` is ``perturbations[k]``, or one
    ``torch.rand(x.shape, generator=generator)`` mapped to ``[-r, r]`` times each image's value
    range, drawn in the order ``k = 0 .. n-1`` as the chunks need them (a chunk keeps at most
    the draws it spans)."""

    def __init__(self, x: torch.Tensor, n: int, radius: float,
                 perturbations: torch.Tensor | None, generator: torch.Generator | None) -> None:
        self.x = x
        self.given = None if perturbations is None else _check_perturbations(perturbations, x)
        self.n = n if self.given is None else self.given.shape[0]
        self.gen = generator
        if self.given is None and self.gen is None:
            self.gen = torch.Generator(device=x.device)
            self.gen.seed()
        self.scale = radius * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
        self.draws: dict[int, torch.Tensor] = {}
        self.drawn = 0  # draws 0 .. drawn-1 have been made

    def _draw(self, k: int) -> torch.Tensor:
        while self.drawn <= k:
            assert self.gen is not None
            u = torch.rand(self.x.shape, generator=self.gen, dtype=self.x.dtype,
                           device=self.gen.device).to(self.x.device)
            self.draws[self.drawn] = (2 * u - 1) * self.scale
            self.drawn += 1
        return self.draws[k]

    def __call__(self, b: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.given is not None:
            p = self.given
            return self.x[b] + p[k.to(p.device), b.to(p.device)].to(self.x)
        first = int(k.min())
        for old in [j for j in self.draws if j < first]:
            del self.draws[old]
        return self.x[b] + torch.cat([self._draw(j)[b[k == j]] for j in k.unique().tolist()])


def _relative_stability(
    kind: str, model: nn.Module, x: torch.Tensor, target: TargetLike, method: Method, n: int,
    radius: float, perturbations: torch.Tensor | None, eps: float, same_prediction: bool,
    options: dict[str, Any] | None, generator: torch.Generator | None, batch_size: int | None,
    progress: bool | None, layer: str | None = None,
) -> torch.Tensor:
    """``max_k ||(E(x) - E(x_k)) / E(x)|| / max(denominator, eps)`` per image (Agarwal et al.
    2022), the denominator of ``kind``: ``"input"``, ``"output"`` or ``"representation"``."""
    n = _check_draws(n)
    check_real(radius, "radius", minimum=0.0)
    if not (check_real(eps, "eps", what=" (the guard against division by zero)") > 0):
        raise ValueError(f"eps must be > 0 (the guard against division by zero), got {eps!r}")
    s = _Perturbed(model, x, target, method, options, generator, progress, batch_size, layer,
                   represent=kind == "representation")
    x = s.x
    noise = _Noise(x, n, radius, perturbations, generator)
    forward = same_prediction or kind != "input"
    e0, out0, rep0 = s.clean(forward)
    e0_safe = _nonzero(e0, eps)
    x0 = x.double()
    x0_safe = _nonzero(x0, eps)
    rep0_safe = None if rep0 is None else _nonzero(rep0, eps)

    def score(b: torch.Tensor, k: torch.Tensor, xs: torch.Tensor, e: torch.Tensor,
              out: torch.Tensor | None, rep: torch.Tensor | None) -> torch.Tensor:
        num = ((e0[b] - e) / e0_safe[b]).flatten(1).norm(dim=1)
        if kind == "input":
            den = ((x0[b] - xs.double()) / x0_safe[b]).flatten(1).norm(dim=1)
        elif kind == "output":
            assert out is not None and out0 is not None
            den = (out0[b] - out).norm(dim=1)
        else:
            assert rep is not None and rep0 is not None and rep0_safe is not None
            den = ((rep0[b] - rep) / rep0_safe[b]).norm(dim=1)
        value = num / den.clamp(min=eps)
        if same_prediction:
            assert out is not None and out0 is not None
            value = torch.where(out.argmax(1) == out0[b].argmax(1), value,
                                torch.full_like(value, math.nan))
        return value

    names = {"input": "RIS", "output": "ROS", "representation": "RRS"}
    return _kept_max(s.run(noise.n, noise, score, forward, names[kind]))


def relative_input_stability(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency", *,
    n: int = 8, radius: float = 0.02, perturbations: torch.Tensor | None = None,
    eps: float = 1e-6, same_prediction: bool = True, options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None, batch_size: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Relative input stability (Agarwal et al., "Rethinking Stability for Attribution-based
    Explanations", 2022): ``max_k ||(E(x) - E(x_k)) / E(x)|| / max(||(x - x_k) / x||, eps)`` per
    image, over perturbed copies ``x_k = x + d_k`` that keep the predicted class. Lower is better.

    The divisions are elementwise, an exact zero of ``E(x)`` or ``x`` counting as ``eps``, the
    norms Euclidean over every value (Quantus's ``RelativeInputStability``). The explanation is
    used as the method returns it; the target is bound once on ``x``. All the ``n * B``
    perturbed images are explained in chunks of ``batch_size``, one call of the method each.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: class per image; None: the predicted class.
        method: a name of :data:`~netlens.attribution.METHODS`, or a function
            ``f(model, x, target, **options)``.
        n: noise draws.
        radius: the uniform noise's half-width as a fraction of each image's value range.
        perturbations: ``(n, B, C, H, W)`` additive noise to use instead of drawing it (then
            ``n`` and ``radius`` are ignored), e.g. to reproduce another library's draws.
        eps: what an exact zero of ``E(x)`` or ``x`` counts as, and the least denominator.
        same_prediction: leave out the draws that change the predicted class (the paper's
            constraint ``argmax f(x_k) = argmax f(x)``); an image all of whose draws change it
            scores nan. False: every draw counts.
        options: keyword options of the method.
        generator: the noise's source (a fresh seed when None): draw ``k`` is one
            ``torch.rand(x.shape)`` for ``k = 0 .. n-1``; also given to the method (a stochastic
            method's draws then interleave with the noise's, chunk by chunk).
        batch_size: perturbed images per explanation call; default from the memory budget.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64; 0.0 for an explainer that ignores its input.

    Raises:
        ValueError: ``n < 1``, a negative radius, ``eps <= 0``, perturbations of the wrong
            shape, a bad ``batch_size``, an unknown method, a bad input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 1)).eval()  # saliency: constant
        >>> relative_input_stability(lin, torch.rand(2, 1, 2, 2), 0, n=2).tolist()
        [0.0, 0.0]
    """
    return _relative_stability("input", model, x, target, method, n, radius, perturbations,
                               eps, same_prediction, options, generator, batch_size, progress)


def relative_output_stability(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency", *,
    n: int = 8, radius: float = 0.02, perturbations: torch.Tensor | None = None,
    eps: float = 1e-6, same_prediction: bool = True, options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None, batch_size: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Relative output stability (Agarwal et al. 2022):
    ``max_k ||(E(x) - E(x_k)) / E(x)|| / max(||f(x) - f(x_k)||, eps)`` per image, ``f`` the
    model's whole output (the logits), over perturbed copies that keep the predicted class.
    Lower is better.

    As :func:`relative_input_stability` (Quantus's ``RelativeOutputStability``), with the
    change of the output, not of the input, below the line.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: class per image; None: the predicted class.
        method: a name of :data:`~netlens.attribution.METHODS`, or a function
            ``f(model, x, target, **options)``.
        n: noise draws.
        radius: the uniform noise's half-width as a fraction of each image's value range.
        perturbations: ``(n, B, C, H, W)`` additive noise to use instead of drawing it.
        eps: what an exact zero of ``E(x)`` counts as, and the least denominator.
        same_prediction: leave out the draws that change the predicted class (nan when all do).
        options: keyword options of the method.
        generator: the noise's source, as :func:`relative_input_stability`.
        batch_size: perturbed images per explanation call and forward pass.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64.

    Raises:
        ValueError: as :func:`relative_input_stability`.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 1)).eval()  # saliency: constant
        >>> relative_output_stability(lin, torch.rand(2, 1, 2, 2), 0, n=2).tolist()
        [0.0, 0.0]
    """
    return _relative_stability("output", model, x, target, method, n, radius, perturbations,
                               eps, same_prediction, options, generator, batch_size, progress)


def relative_representation_stability(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency", *,
    layer: str | None = None, n: int = 8, radius: float = 0.02,
    perturbations: torch.Tensor | None = None, eps: float = 1e-6, same_prediction: bool = True,
    options: dict[str, Any] | None = None, generator: torch.Generator | None = None,
    batch_size: int | None = None, progress: bool | None = None,
) -> torch.Tensor:
    """Relative representation stability (Agarwal et al. 2022):
    ``max_k ||(E(x) - E(x_k)) / E(x)|| / max(||(L(x) - L(x_k)) / L(x)||, eps)`` per image,
    ``L`` the output of ``layer`` (all of its values), over perturbed copies that keep the
    predicted class. Lower is better.

    As :func:`relative_input_stability` (Quantus's ``RelativeRepresentationStability`` with one
    layer), with the relative change of the layer's output below the line. The layer is read
    with :meth:`FlatModel.record <netlens.FlatModel.record>` in the forward pass that also
    checks the prediction.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: class per image; None: the predicted class.
        method: a name of :data:`~netlens.attribution.METHODS`, or a function
            ``f(model, x, target, **options)``.
        layer: a layer name of :attr:`FlatModel.layer_names <netlens.FlatModel.layer_names>`
            (a module path such as ``"layer3.0"``, ``"layer1.0.relu:1"`` for a reused module's
            second call); None: the last spatial layer (the default layer of the CAMs; the paper
            leaves the representation open, Quantus's default is every layer at once).
        n: noise draws.
        radius: the uniform noise's half-width as a fraction of each image's value range.
        perturbations: ``(n, B, C, H, W)`` additive noise to use instead of drawing it.
        eps: what an exact zero of ``E(x)`` or ``L(x)`` counts as, and the least denominator.
        same_prediction: leave out the draws that change the predicted class (nan when all do).
        options: keyword options of the method.
        generator: the noise's source, as :func:`relative_input_stability`.
        batch_size: perturbed images per explanation call and forward pass.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64.

    Raises:
        ValueError: an unknown layer (with the closest names), a layer whose output does not
            have the batch first, and the errors of :func:`relative_input_stability`.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 1)).eval()  # saliency: constant
        >>> x = torch.rand(2, 1, 2, 2)
        >>> relative_representation_stability(lin, x, 0, layer="0", n=2).tolist()
        [0.0, 0.0]
    """
    return _relative_stability("representation", model, x, target, method, n, radius,
                               perturbations, eps, same_prediction, options, generator,
                               batch_size, progress, layer)


def _translate(x: torch.Tensor, shift: torch.Tensor, fill: torch.Tensor, axis: int,
               ) -> torch.Tensor:
    """Each image ``x[i]`` moved by ``shift[i]`` pixels along ``axis`` (3: right for a positive
    shift, 2: down), the uncovered pixels set to ``fill[i]``."""
    size = x.shape[axis]
    src = torch.arange(size, device=x.device)[None] - shift[:, None].to(x.device)  # (m, size)
    valid = (src >= 0) & (src < size)
    view = [x.shape[0], 1, 1, 1]
    view[axis] = size
    index = src.clamp(0, size - 1).view(view).expand_as(x)
    moved = x.gather(axis, index)
    return torch.where(valid.view(view), moved, fill.view(-1, 1, 1, 1).to(moved))


def continuity(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency", *,
    steps: int = 28, shifts: Sequence[int] | None = None, direction: Literal["x", "y"] = "x",
    baseline: float | Literal["black", "white"] = "black", absolute: bool = True,
    normalize: bool = True, same_prediction: bool = False,
    options: dict[str, Any] | None = None, generator: torch.Generator | None = None,
    batch_size: int | None = None, progress: bool | None = None,
) -> torch.Tensor:
    """Continuity (Montavon et al., "Methods for interpreting and understanding deep neural
    networks", Digital Signal Processing 2018), as Quantus 0.6's ``Continuity``: the strongest
    variation ``max_s ||E(x) - E(x_s)||_1 / ||x - x_s||_2`` per image over translations ``x_s``
    of the image by ``s`` pixels. Lower is better.

    The shifts are Quantus's: ``-W + k * ((2W + 1) // steps)`` for ``k = 1 .. steps``, ``W``
    the width (the height for ``direction="y"``), the zero shift left out (it leaves the image
    as it is); the uncovered pixels take ``baseline``. Explanations are read through
    ``normalize`` (each divided by its largest absolute value) and ``absolute`` (the absolute
    value of every value), Quantus's defaults, and compared over every channel. The target is
    bound once on ``x``; all ``steps * B`` translated images are explained in chunks of
    ``batch_size``, one call of the method each.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        target: class per image; None: the predicted class.
        method: a name of :data:`~netlens.attribution.METHODS`, or a function
            ``f(model, x, target, **options)``.
        steps: the number of translations (at most ``2W + 1``).
        shifts: the translations in pixels instead (positive: right / down; nonzero).
        direction: ``"x"`` (horizontal, Quantus's) or ``"y"``.
        baseline: the uncovered pixels: ``"black"`` / ``"white"`` (each image's minimum /
            maximum over all its values, Quantus's meaning) or a number.
        absolute: compare absolute explanations.
        normalize: divide each explanation by its largest absolute value first (per image;
            Quantus's default divides by the largest of the whole batch, pass it
            ``normalise_func_kwargs={"normalise_axes": (1, 2, 3)}`` to compare).
        same_prediction: leave out the translations that change the predicted class (nan when
            all do); False (Quantus's default): every translation counts.
        options: keyword options of the method.
        generator: given to the method (the translations are not random).
        batch_size: translated images per explanation call; default from the memory budget.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64: the largest ratio over the shifts (Quantus's per-image score); inf
        where a shift leaves a (constant) image unchanged but moves its explanation.

    Raises:
        ValueError: ``steps`` not in ``[1, 2W + 1]``, empty or zero shifts, an unknown
            direction or baseline, a bad ``batch_size``, an unknown method, a bad input or
            target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()  # saliency: constant
        >>> continuity(lin, torch.rand(2, 1, 4, 4), 0, steps=4).tolist()
        [0.0, 0.0]
    """
    if direction not in ("x", "y"):
        raise ValueError(f"direction must be 'x' (horizontal) or 'y' (vertical), got "
                         f"{direction!r}")
    if isinstance(baseline, str) and baseline not in ("black", "white"):
        raise ValueError(f"baseline must be 'black', 'white' or a number, got {baseline!r}")
    axis = 3 if direction == "x" else 2
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"continuity translates images: x must be (B, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    size = int(x.shape[axis])
    if shifts is None:
        steps = check_count(steps, "steps")
        if steps > 2 * size + 1:
            raise ValueError(f"steps must be at most 2 * {size} + 1 = {2 * size + 1} (one pixel "
                             f"apart), got {steps}; or pass shifts=")
        dx = (2 * size + 1) // steps
        shift_list = [v for v in (-size + dx * k for k in range(1, steps + 1)) if v != 0]
    else:
        shift_list = list(shifts)
        if not shift_list or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                                 or v == 0 for v in shift_list):
            raise ValueError(f"shifts must be nonzero pixel counts (a zero shift leaves the "
                             f"image unchanged), at least one, got {list(shifts)}")
    s = _Perturbed(model, x, target, method, options, generator, progress, batch_size)
    x = s.x
    if isinstance(baseline, str):
        flat = x.flatten(1)
        fill = flat.amin(1) if baseline == "black" else flat.amax(1)
    else:
        fill = torch.full((x.shape[0],), check_real(baseline, "baseline"), dtype=x.dtype,
                          device=x.device)
    shift_t = torch.tensor([int(v) for v in shift_list], device=x.device)

    def view(e: torch.Tensor) -> torch.Tensor:
        e = _scale_max(e) if normalize else e
        return e.abs() if absolute else e

    e0, out0, _ = s.clean(same_prediction)
    e0 = view(e0)

    def image_at(b: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return _translate(x[b], shift_t[k], fill[b], axis)

    def score(b: torch.Tensor, k: torch.Tensor, xs: torch.Tensor, e: torch.Tensor,
              out: torch.Tensor | None, rep: torch.Tensor | None) -> torch.Tensor:
        num = (view(e) - e0[b]).flatten(1).abs().sum(1)
        den = (xs - x[b]).flatten(1).double().norm(dim=1)
        still = torch.where(num > 0, torch.full_like(num, math.inf), torch.zeros_like(num))
        value = torch.where(den > 0, num / den.clamp(min=1e-300), still)
        if same_prediction:
            assert out is not None and out0 is not None
            value = torch.where(out.argmax(1) == out0[b].argmax(1), value,
                                torch.full_like(value, math.nan))
        return value

    return _kept_max(s.run(len(shift_list), image_at, score, same_prediction, "continuity"))


Discretize = Union[Literal["top_n_sign", "first_n_sign", "sign"],
                   Callable[[torch.Tensor], torch.Tensor]]


def _discretized(a: torch.Tensor, discretize: Discretize, top: int) -> torch.Tensor:
    """``(B, M)`` keys of the flat maps ``a`` ``(B, N)``: equal rows, equal explanations."""
    if callable(discretize):
        keys = discretize(a)
        if not isinstance(keys, torch.Tensor) or keys.dim() < 1 or keys.shape[0] != a.shape[0]:
            got = (tuple(keys.shape) if isinstance(keys, torch.Tensor)
                   else type(keys).__name__)
            raise ValueError(f"discretize must return a tensor with one row per image "
                             f"({a.shape[0]}, ...), got {got}")
        return keys.reshape(a.shape[0], -1).to(a.device)
    if discretize == "sign":
        return a.sign()
    if top > a.shape[1]:
        raise ValueError(f"top={top} is more than the {a.shape[1]} features of a map; pass "
                         f"top <= {a.shape[1]}")
    if discretize == "first_n_sign":
        return a[:, :top].sign()
    if discretize == "top_n_sign":
        order = a.abs().argsort(dim=1, descending=True, stable=True)[:, :top]
        order = order.sort(dim=1).values
        return torch.cat([order.to(a.dtype), a.gather(1, order).sign()], dim=1)
    raise ValueError(f"discretize must be 'top_n_sign', 'first_n_sign', 'sign' or a function "
                     f"(B, N) maps -> (B, M) keys, got {discretize!r}")


def consistency(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    discretize: Discretize = "top_n_sign", top: int = 5, reduce: Reduce = "auto",
    per_channel: bool = False, batch_size: int | None = None, max_memory: int | None = None,
) -> torch.Tensor:
    """Consistency (Dasgupta et al., "Framework for Evaluating Faithfulness of Local
    Explanations", ICML 2022): for each image, the fraction of the *other* images of the batch
    with the same discretized explanation that also get the same label. Higher is better. The
    batch is all of ``x`` (Quantus compares within each of its ``batch_size`` chunks).

    Discretizations (``discretize``) of each map, flattened:

    - ``"top_n_sign"``: which ``top`` features have the largest absolute values (ties: the
      first), with their signs;
    - ``"first_n_sign"``: the signs of the first ``top`` values in the flattened order (what
      Quantus 0.6's ``top_n_sign`` computes, whatever their size);
    - ``"sign"``: the sign of every value;
    - a function ``(B, N)`` float64 maps -> ``(B, ...)`` keys: equal rows, equal explanations.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``, ``B >= 2``.
        attr: their explanations ``(B, C, H, W)`` or ``(B, 1, H, W)``.
        target: the labels compared: None, the predicted classes (the paper's and Quantus's);
            else a class target, its classes.
        discretize: see above.
        top: the number of features of ``"top_n_sign"`` and ``"first_n_sign"``.
        reduce: how each map is read (:func:`~netlens.metrics.saliency_map`); the default reads
            ``|attr|`` summed over channels when ``C > 1``.
        per_channel: read the attribution as it is instead (every channel, signed), as Quantus
            flattens it.
        batch_size: images per forward pass of the predictions; default from ``max_memory``.
        max_memory: the memory budget in bytes (default: the device's).

    Returns:
        ``(B,)`` float64 fractions; 0.0 for an image no other image shares its explanation with.

    Raises:
        ValueError: fewer than 2 images, a target that is not a class, an unknown
            discretization, ``top`` below 1 or above the features of a map, an attribution
            whose shape does not match ``x``.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> x = torch.rand(3, 1, 2, 2)
        >>> attr = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2).repeat(3, 1, 1, 1)
        >>> consistency(lin, x, attr, torch.tensor([0, 0, 1]), top=2).tolist()
        [0.5, 0.5, 0.0]
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 2:
        raise ValueError("consistency compares the explanations of a batch: pass at least 2 "
                         "images")
    top = check_count(top, "top")
    fm, x = prepare(model, x)
    check_attr(attr, x)
    if per_channel:
        a = attr.detach().to(x.device).flatten(1).double()
    else:
        a = saliency_map(attr, reduce).to(x.device).flatten(1).double()
    if batch_size is None:
        batch_size = auto_batch_size(fm, x, backward=False, max_memory=max_memory)
    batch_size = check_count(batch_size, "batch_size")
    with guarded(fm), torch.no_grad():
        t = bind_single(fm, x, target, batch_size)
    if not isinstance(t, Class) or t.classes is None:
        raise ValueError(f"consistency compares class labels; got a {type(t).__name__} target: "
                         "pass None (the predictions) or classes")
    labels = t.classes.to(x.device).expand(x.shape[0])
    keys = _discretized(a, discretize, top)
    groups = torch.unique(keys, dim=0, return_inverse=True)[1]
    others = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    alike = (groups[None] == groups[:, None]) & others
    agree = (alike & (labels[None] == labels[:, None])).sum(1).double()
    count = alike.sum(1)
    return torch.where(count > 0, agree / count.clamp(min=1), torch.zeros_like(agree))
