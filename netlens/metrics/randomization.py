"""Randomization checks beside Adebayo's model randomization (:mod:`~netlens.metrics.sanity`),
batched over the images.

Quantus 0.6.0's numbers where its definitions are right (the differences are in each
docstring):

- :func:`random_logit` (Sixt et al., "When Explanations Lie: Why Many Modified BP Attributions
  Fail", ICML 2020): the similarity of the explanation of the target class to that of a
  randomly drawn other class. Lower is better: an explanation of the class must depend on it.
- :func:`smooth_mprt` (Hedström et al., "Sanity Checks Revisited: An Exploration to Repair the
  Model Parameter Randomisation Test", XAI in Action workshop 2023): the randomization test on
  explanations denoised by averaging over noisy copies of the input. Lower is better.
- :func:`efficient_mprt` (Hedström et al. 2023): the relative rise of the explanation's
  complexity (a histogram entropy) from the trained to the fully randomized model. Higher is
  better.
- :func:`data_randomization` (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS
  2018, section 4): the similarity of the explanations of a model trained on the true labels
  and of one trained on random labels. Lower is better.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Union

import torch
from torch import nn

from .._runtime import auto_batch_size, check_count, check_real, chunks, guarded, prepare
from .._util import progress_bar
from ..flat_model import FlatModel
from ..targets import Class, TargetLike, flat_scores
from ._maps import (
    Method,
    Reduce,
    bind_single,
    call_method,
    check_attr,
    method_target,
    model_for,
    normalized,
    resolve_method,
    saliency_map,
)
from ._maps import spearman as _spearman
from ._maps import ssim as _ssim
from .complexity import complexity as _entropy
from .sanity import SIMILARITIES, _redraw, randomizable_layers

__all__ = ["random_logit", "smooth_mprt", "efficient_mprt", "data_randomization",
           "DataRandomization"]


Order = Literal["bottom_up", "top_down", "independent"]
ORDERS = ("bottom_up", "top_down", "independent")
Similarity = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
Complexity = Union[str, Callable[[torch.Tensor], torch.Tensor]]
Randomizer = Callable[[nn.Module, torch.Generator], None]


def _per_image(m: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    scale = scale.view(-1, *([1] * (m.dim() - 1)))
    return m / torch.where(scale > 0, scale, torch.ones_like(scale))


def _ssim_joint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`~netlens.metrics.ssim` with each pair's joint value range as its data range
    (Quantus's choice), through SSIM(a, b; range r) = SSIM(a / r, b / r; range 1)."""
    both = torch.cat([a.flatten(1), b.flatten(1)], 1).double()
    span = both.amax(1) - both.amin(1)
    return _ssim(_per_image(a.double(), span), _per_image(b.double(), span))


def _similarity(similarity: Similarity) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if isinstance(similarity, str) and similarity in ("spearman", "ssim"):
        return _spearman if similarity == "spearman" else _ssim_joint
    if not callable(similarity):
        raise ValueError(f"similarity must be 'spearman', 'ssim' or a function f(a, b) -> (B,) "
                         f"of two (B, 1, H, W) maps, got {similarity!r}")
    fn = similarity
    return lambda a, b: _one_per_image(fn(a, b), a.shape[0], "similarity", "image")


def _one_per_image(value: object, batch: int, name: str, per: str) -> torch.Tensor:
    """A user function's result checked to be ``(batch,)`` values, as float64."""
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != (batch,):
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must return one value per {per}, a ({batch},) tensor, "
                         f"got {got}")
    return value.double()


def _histogram_entropy(maps: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """The entropy of each map's histogram of values in ``bins`` equal bins between its
    minimum and maximum, as ``scipy.stats.entropy(numpy.histogram(m, bins)[0])`` (numpy's
    edges and rounding, in float64; a constant map fills one bin and scores 0), ``(B,)``."""
    v = maps.detach().flatten(1).double()
    lo, hi = v.amin(1, keepdim=True), v.amax(1, keepdim=True)
    flat = hi == lo
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    width, top = hi - lo, hi.expand_as(v)

    def edge(i: torch.Tensor) -> torch.Tensor:  # numpy.linspace's edges: lo + i * step, hi
        return torch.where(i == bins, top, lo + i.double() * (width / bins))

    i = ((v - lo) / width * bins).long().clamp_max(bins - 1)
    i = i - (v < edge(i)).long()
    i = i + ((v >= edge(i + 1)) & (i != bins - 1)).long()
    counts = torch.zeros(v.shape[0], bins, dtype=v.dtype, device=v.device)
    p = counts.scatter_add_(1, i, torch.ones_like(v)) / v.shape[1]
    return -torch.special.xlogy(p, p).sum(1)


def _complexity(complexity: Complexity, bins: int) -> Callable[[torch.Tensor], torch.Tensor]:
    if complexity == "histogram":
        return lambda m: _histogram_entropy(m, bins)
    if complexity == "entropy":
        return _entropy
    if isinstance(complexity, str) or not callable(complexity):
        raise ValueError(f"complexity must be 'histogram', 'entropy' or a function f(maps) -> "
                         f"(B,) of (B, 1, H, W) maps, got {complexity!r}")
    fn = complexity
    return lambda m: _one_per_image(fn(m), m.shape[0], "complexity", "map")


@dataclasses.dataclass
class _Explainer:
    """The method on the trained model or on a randomized copy, with a generator seeded the
    same way at every call, so that its own noise does not count as a change."""

    fn: Callable[..., torch.Tensor]
    name: str
    model: nn.Module
    fm: FlatModel
    options: dict[str, Any]
    seed: int
    progress: bool | None

    def __call__(self, x: torch.Tensor, targets: Any,
                 twin: tuple[FlatModel, nn.Module] | None = None) -> torch.Tensor:
        fm, model = (self.fm, self.model) if twin is None else twin
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        a = call_method(self.fn, model_for(self.fn, fm, model), x, targets, self.options, gen,
                        self.progress).detach()
        check_attr(a, x, name=f"the result of {self.name}")
        return a


def _setup(model: nn.Module, x: torch.Tensor, target: TargetLike, method: Method,
           options: dict[str, Any] | None, generator: torch.Generator | None,
           progress: bool | None) -> tuple[FlatModel, torch.Tensor, Any, torch.Generator,
                                           _Explainer]:
    """``(flat model, input, bound target, generator, explainer)``; the generator's first draw
    is the method's seed."""
    name, fn = resolve_method(method)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    fm, x = prepare(model, x)
    with guarded(fm), torch.no_grad():
        bound = bind_single(fm, x, target, auto_batch_size(fm, x, backward=False))
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    seed = int(torch.randint(2**62, (1,), generator=gen, device=gen.device))
    return fm, x, bound, gen, _Explainer(fn, name, model, fm, dict(options or {}), seed, progress)


def _chosen_layers(fm: FlatModel, x: torch.Tensor, layers: Sequence[str] | None) -> list[str]:
    """The layers to randomize in forward order (:func:`randomizable_layers`)."""
    order = randomizable_layers(fm, x)
    if layers is not None:
        wanted = [layers] if isinstance(layers, str) else list(layers)
        unknown = [name for name in wanted if name not in order]
        if unknown:
            raise ValueError(f"cannot randomize {unknown}: not a module with parameters that the "
                             f"forward pass calls; choose from {order}")
        order = [name for name in order if name in set(wanted)]
    if not order:
        raise ValueError("the model has no parameters to randomize (layers is empty?)")
    return order


def _randomized(fm: FlatModel, x: torch.Tensor, layers: list[str], order: str, layerwise: bool,
                randomize: Randomizer | None, generator: torch.Generator, who: str,
                ) -> Iterator[tuple[FlatModel, nn.Module]]:
    """A copy of the model after each step: one layer more (``"bottom_up"``: in forward order;
    ``"top_down"``: reversed), one layer alone (``"independent"``), or, without ``layerwise``,
    every layer at once (in forward order)."""
    try:
        twin = copy.deepcopy(fm.model)
    except Exception as e:  # a model that cannot be copied cannot be randomized safely
        raise TypeError(f"{who} randomizes a copy of the model, and copy.deepcopy failed "
                        f"({type(e).__name__}: {e})") from e
    twin_fm = FlatModel(twin, example_input=x)
    modules = dict(twin.named_modules())
    draw = _redraw if randomize is None else randomize
    steps = [[name] for name in (layers[::-1] if order == "top_down" else layers)] \
        if layerwise else [layers]
    for step in steps:
        saved = {name: {k: v.detach().clone() for k, v in modules[name].state_dict().items()}
                 for name in step} if order == "independent" else {}
        with torch.no_grad():
            for name in step:
                draw(modules[name], generator)
        yield twin_fm, twin
        for name, state in saved.items():
            modules[name].load_state_dict(state)


def _other_classes(other: Any, classes: torch.Tensor, k: int) -> torch.Tensor:
    try:
        t = torch.as_tensor(other)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"other must be a class index or one per image, got "
                        f"{type(other).__name__}") from e
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"other must be class indices (ints), got {t.dtype}")
    t = t.long().to(classes.device)
    if t.dim() == 0:
        t = t.expand(len(classes))
    if tuple(t.shape) != (len(classes),):
        raise ValueError(f"other must be one class for every image or one per image "
                         f"({len(classes)}), got shape {tuple(t.shape)}")
    bad = t[(t < 0) | (t >= k)]
    if bad.numel():
        raise ValueError(f"other class {int(bad[0])} is out of range: the model has {k} outputs "
                         f"(valid classes are 0 to {k - 1})")
    same = (t == classes).nonzero()
    if same.numel():
        i = int(same[0, 0])
        raise ValueError(f"other must differ from the target class, but image {i} has target "
                         f"and other {int(classes[i])}; pass another class for it, or "
                         "other=None to draw one")
    return t


def random_logit(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency",
    *, attributions: torch.Tensor | None = None, other: Any = None,
    similarity: Similarity = "ssim", reduce: Reduce = "auto",
    options: dict[str, Any] | None = None, generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Random logit (Sixt et al. 2020): the similarity of each image's explanation of its
    target class to its explanation of another class, drawn at random. Lower is better.

    Both maps are scaled to a largest absolute value of 1, each on its own (Quantus's default
    ``normalise_by_max`` scales by the largest value of the whole batch, so that one image's
    score depends on the others). SSIM is computed on the 2-D maps, with the joint value range
    of the pair as the data range; Quantus 0.6.0 flattens the maps first, which makes its SSIM
    a 1-D statistic over runs of 7 pixels in row order, different for transposed maps.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel` (never changed).
        x: images ``(B, C, H, W)``.
        target: the class per image (an int, B ints, None: the predicted class).
        method: a name of :data:`~netlens.attribution.METHODS` (or ``"random"``, ``"centre"``),
            or a function ``f(model, x, target, **options)``.
        attributions: ``(B, C, H, W)`` or ``(B, 1, H, W)``: the method's explanation of the
            target, when already computed (None: computed here, with the same seed as the
            other class's, so that a stochastic method's own noise does not count as a
            difference between the classes).
        other: the other class, one for every image or one per image, each different from the
            target; None: drawn uniformly from the other classes of the model's output,
            ``r = torch.randint(K - 1, (B,), generator=generator)``, then ``r + (r >= target)``.
        similarity: ``"ssim"``, ``"spearman"`` or a function ``f(a, b) -> (B,)`` of two scaled
            ``(B, 1, H, W)`` float64 maps.
        reduce: how an attribution becomes one map (:func:`~netlens.metrics.saliency_map`).
        options: keyword options of the method.
        generator: its first draw seeds the method's own noise (the same for both
            explanations), the next one draws the other classes; None: a generator seeded
            with 0.
        progress: passed on to the method (False silences it).

    Returns:
        ``(B,)`` float64 similarities.

    Raises:
        ValueError: a target that is not a class, a model with one output, ``other`` out of
            range or equal to the target, an unknown similarity, a bad input or method.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False)).eval()
        >>> lin[1].weight.data = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
        >>> s = random_logit(lin, torch.rand(1, 1, 2, 2), 0, similarity="spearman")
        >>> round(s.item(), 6)  # the map of class 1 ranks the pixels in reverse
        -1.0
    """
    sim = _similarity(similarity)
    fm, x, bound, gen, explain = _setup(model, x, target, method, options, generator, progress)
    if not isinstance(bound, Class) or bound.classes is None:
        raise ValueError(f"random_logit explains another class of each image, so the target "
                         f"must be a class (an int, B ints or None for the predicted class), "
                         f"got {type(bound).__name__}")
    classes = bound.classes
    with guarded(fm), torch.no_grad():
        k = flat_scores(fm(x[:1])).shape[1]
    if k < 2:
        raise ValueError("random_logit needs a model with at least 2 classes (it explains a "
                         f"class other than the target), but the model has {k} output")
    if other is None:
        r = torch.randint(k - 1, (len(classes),), generator=gen, device=gen.device)
        others = r.to(classes.device) + (r.to(classes.device) >= classes).long()
    else:
        others = _other_classes(other, classes, k)
    if attributions is None:
        a0 = explain(x, classes)
    else:
        a0 = check_attr(attributions, x, name="attributions")
    a1 = explain(x, others)
    m0, m1 = (saliency_map(a.detach(), reduce).double() for a in (a0, a1))
    top0, top1 = (m.flatten(1).abs().amax(1) for m in (m0, m1))
    return sim(_per_image(m0, top0), _per_image(m1, top1))


def _repeat(targets: Any, k: int, batch: int) -> Any:
    """The targets of ``k`` stacked copies of the batch."""
    if k == 1:
        return targets
    if isinstance(targets, torch.Tensor):
        return targets.expand(batch).repeat(k)
    return targets.take(torch.arange(batch).repeat(k))


def smooth_mprt(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency",
    *, n: int = 50, sigma: float = 0.1, noise: Callable[[int], torch.Tensor] | None = None,
    order: Order = "bottom_up", layers: Sequence[str] | None = None, layerwise: bool = False,
    randomize: Randomizer | None = None, similarity: Similarity = "spearman",
    reduce: Reduce = "abs_sum", options: dict[str, Any] | None = None,
    batch_size: int | None = None, generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """Smooth model-parameter randomization (Hedström et al. 2023): the similarity of the
    trained model's denoised explanation to the randomized model's. Lower is better.

    A denoised explanation is the mean of the method's explanations of ``n - 1`` noisy copies
    ``x + d_k`` and of ``x`` itself, read as a map (``reduce``; Quantus's ``abs=True`` is
    ``"abs_sum"``) and scaled by its root mean square (Quantus's default normalisation, per
    image here: Quantus scales the whole batch at once, which changes SSIM, not Spearman).
    Layers are randomized on a copy of the model; the target is bound once on the trained
    model. Quantus 0.6.0 smooths with its own ``quantus.explain`` and ignores ``explain_func``,
    and draws the noise from numpy's global generator, unseeded.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel` (never changed).
        x: images ``(B, C, H, W)``.
        target: class per image, resolved once on the trained model (None: its predicted class).
        method: a name of :data:`~netlens.attribution.METHODS` (or ``"random"``, ``"centre"``),
            or a function ``f(model, x, target, **options)``.
        n: explanations averaged per model (Quantus's ``nr_samples``): ``n - 1`` noisy copies
            and the image.
        sigma: the noise's std as a fraction of each image's value range
            (``noise_magnitude``).
        noise: ``noise(step) -> (n - 1, B, C, H, W)`` additive noise of the step (0: the
            trained model; ``i``: after the ``i``-th randomization), instead of the draw
            ``torch.randn((n - 1, *x.shape), generator=generator) * sigma * range``.
        order: ``"bottom_up"`` (Quantus's default: cascading from the input, in forward
            order), ``"top_down"`` (cascading from the output) or ``"independent"`` (one layer
            at a time; needs ``layerwise``).
        layers: the layers to randomize (default :func:`randomizable_layers`).
        layerwise: one score per step, ``(len(layers), B)``; False: only the model with every
            layer random is explained, ``(B,)`` (Quantus's last correlation).
        randomize: ``randomize(module, generator)`` redraws a module's parameters in place (on
            the copy, under ``torch.no_grad()``); default: normal with the root mean square of
            the trained values, as :func:`model_randomization`.
        similarity: ``"spearman"`` (Quantus's default), ``"ssim"`` or ``f(a, b) -> (B,)`` of
            two ``(B, 1, H, W)`` float64 maps.
        reduce: how an attribution becomes one map (:func:`~netlens.metrics.saliency_map`).
        options: keyword options of the method.
        batch_size: images per method call: noisy copies of the batch are explained
            ``batch_size // B`` at a time (default from the memory budget).
        generator: the source of the method's seed, then of the trained model's noise, then
            of each step's random weights and noise; None: a generator seeded with 0.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64, or ``(len(layers), B)`` with ``layerwise`` (rows in the order of the
        steps).

    Raises:
        ValueError: ``n < 1``, a negative ``sigma``, an unknown order or similarity,
            ``order="independent"`` without ``layerwise``, noise of the wrong shape, an
            unknown layer or method, a bad input or target.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
        >>> net = net.eval()
        >>> smooth_mprt(net, torch.rand(2, 1, 4, 4), 0, n=3, layerwise=True).shape
        torch.Size([2, 2])
    """
    n = check_count(n, "n")
    sigma = check_real(sigma, "sigma", minimum=0.0,
                       what=" (the noise's std as a fraction of the image's value range)")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order == "independent" and not layerwise:
        raise ValueError("order='independent' randomizes one layer at a time, so no model has "
                         "every layer random; pass layerwise=True (one score per layer) or "
                         "order='bottom_up'")
    if noise is not None and not callable(noise):
        raise TypeError("noise must be a function noise(step) -> (n - 1, B, C, H, W) additive "
                        f"noise, or None, got {type(noise).__name__}")
    if randomize is not None and not callable(randomize):
        raise TypeError(f"randomize must be a function randomize(module, generator), got "
                        f"{type(randomize).__name__}")
    sim = _similarity(similarity)
    fm, x, bound, gen, explain = _setup(model, x, target, method, options, generator, progress)
    targets = method_target(bound)
    chosen = _chosen_layers(fm, x, layers)
    budget = auto_batch_size(fm, x) if batch_size is None else check_count(batch_size,
                                                                             "batch_size")
    per = max(1, budget // len(x))
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    shape = (n - 1, *x.shape)

    def smoothed(step: int, twin: tuple[FlatModel, nn.Module] | None) -> torch.Tensor:
        if noise is None:
            d = torch.randn(shape, generator=gen, dtype=x.dtype, device=gen.device)
            d = d.to(x.device) * (sigma * span)
        else:
            d = noise(step)
            if not isinstance(d, torch.Tensor) or tuple(d.shape) != shape:
                got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
                raise ValueError(f"noise({step}) must return (n - 1, B, C, H, W) = {shape} "
                                 f"additive noise, got {got}")
            if not bool(torch.isfinite(d).all()):
                raise ValueError(f"noise({step}) contains NaN or infinite values")
            d = d.to(device=x.device, dtype=x.dtype)
        total: torch.Tensor | None = None
        for part in chunks(n, per):
            ks = range(part.start, part.stop)
            inputs = torch.cat([x + d[k] if k < n - 1 else x for k in ks])
            a = explain(inputs, _repeat(targets, len(ks), len(x)), twin).double()
            for j in range(len(ks)):
                term = a[j * len(x):(j + 1) * len(x)] / n
                total = term if total is None else total + term
        assert total is not None
        m = saliency_map(total, reduce)
        return _per_image(m, m.flatten(1).pow(2).mean(1).sqrt())

    reference = smoothed(0, None)
    rows = []
    with progress_bar(len(chosen) if layerwise else 1, progress, "smooth MPRT") as bar:
        for step, twin in enumerate(_randomized(fm, x, chosen, order, layerwise, randomize, gen,
                                                "smooth_mprt"), start=1):
            rows.append(sim(reference, smoothed(step, twin)))
            bar.update()
    scores = torch.stack(rows)
    return scores if layerwise else scores[0]


def efficient_mprt(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency",
    *, attributions: torch.Tensor | None = None, complexity: Complexity = "histogram",
    bins: int = 100, layers: Sequence[str] | None = None, randomize: Randomizer | None = None,
    reduce: Reduce = "auto", options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None, progress: bool | None = None,
) -> torch.Tensor:
    """Efficient model-parameter randomization (Hedström et al. 2023): the relative rise
    ``(H(e_random) - H(e)) / H(e)`` of each explanation's complexity when every layer of the
    model is random. Higher is better: an explanation of a random model should look like noise.

    ``H`` is, as in Quantus (``complexity_func=discrete_entropy``, ``n_bins=100``), the entropy
    of the histogram of the map's values in ``bins`` equal bins, or
    the entropy of the normalized absolute map (``"entropy"``:
    :func:`~netlens.metrics.complexity`; Quantus 0.6.0 cannot use its own ``entropy`` here: it
    passes ``x=None`` for the random model's explanations, and ``entropy`` reads ``x.shape``).
    Layers are randomized on a copy of the model, in forward order; the target is bound once
    on the trained model.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel` (never changed).
        x: images ``(B, C, H, W)``.
        target: class per image, resolved once on the trained model (None: its predicted class).
        method: a name of :data:`~netlens.attribution.METHODS` (or ``"random"``, ``"centre"``),
            or a function ``f(model, x, target, **options)``.
        attributions: the trained model's explanations ``(B, C, H, W)`` or ``(B, 1, H, W)``,
            when already computed (None: computed here).
        complexity: ``"histogram"``, ``"entropy"`` or a function ``f(maps) -> (B,)`` of
            ``(B, 1, H, W)`` float64 maps.
        bins: the histogram's bins.
        layers: the layers to randomize (default :func:`randomizable_layers`: all).
        randomize: ``randomize(module, generator)`` redraws a module's parameters in place (on
            the copy, under ``torch.no_grad()``); default: normal with the root mean square of
            the trained values, as :func:`model_randomization`.
        reduce: how an attribution becomes one map (:func:`~netlens.metrics.saliency_map`).
        options: keyword options of the method.
        generator: the source of the method's seed and of the random weights; None: a
            generator seeded with 0.
        progress: passed on to the method (False silences it).

    Returns:
        ``(B,)`` float64; ``inf`` (or ``nan``) where the trained model's map has complexity 0.

    Raises:
        ValueError: ``bins < 1``, an unknown complexity, an unknown layer or method, a bad
            input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False)).eval()
        >>> lin[1].weight.data = torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
        >>> def spread(module, generator):  # a "random" layer with four distinct weights
        ...     module.weight.copy_(torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]]))
        >>> rise = efficient_mprt(lin, torch.rand(1, 1, 2, 2), 0, randomize=spread)
        >>> round(rise.item(), 4)  # (log 4 - H(3/4, 1/4)) / H(3/4, 1/4)
        1.4652
    """
    bins = check_count(bins, "bins")
    measure = _complexity(complexity, bins)
    if randomize is not None and not callable(randomize):
        raise TypeError(f"randomize must be a function randomize(module, generator), got "
                        f"{type(randomize).__name__}")
    fm, x, bound, gen, explain = _setup(model, x, target, method, options, generator, progress)
    targets = method_target(bound)
    chosen = _chosen_layers(fm, x, layers)
    if attributions is None:
        a0 = explain(x, targets)
    else:
        a0 = check_attr(attributions, x, name="attributions").detach()
    twin = next(_randomized(fm, x, chosen, "bottom_up", False, randomize, gen, "efficient_mprt"))
    a1 = explain(x, targets, twin)
    h0, h1 = (measure(saliency_map(a, reduce).double()) for a in (a0, a1))
    return (h1 - h0) / h0


@dataclasses.dataclass(frozen=True)
class DataRandomization:
    """The result of :func:`data_randomization`.

    Attributes:
        spearman_abs, spearman, ssim: method name -> ``(B,)`` float64 similarity of each image's
            explanation by the model trained on random labels to its explanation by the model
            trained on the true ones.
    """

    spearman_abs: dict[str, torch.Tensor]
    spearman: dict[str, torch.Tensor]
    ssim: dict[str, torch.Tensor]

    @property
    def methods(self) -> list[str]:
        return list(self.spearman)

    def mean(self, similarity: str = "spearman_abs") -> dict[str, float]:
        """method -> the similarity averaged over the images."""
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        values: dict[str, torch.Tensor] = getattr(self, similarity)
        return {m: v.mean().item() for m, v in values.items()}


def _output_shape(out: Any) -> Any:
    """The shapes of a model output: a tensor's, or those in a dict, list or tuple of them."""
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, dict):
        return {k: _output_shape(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [_output_shape(v) for v in out]
    return type(out).__name__


def data_randomization(
    model: nn.Module, random_model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    methods: Sequence[Method] = ("saliency", "gradcam", "guided_backprop"),
    options: dict[str, dict[str, Any]] | None = None, generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> DataRandomization:
    """Adebayo et al.'s data randomization test: the same method's explanations by a model
    trained on the true labels and by one of the same architecture trained on random labels.

    Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, section 4. The model
    trained on random labels can only have memorized its training images, so an explanation
    method that describes what a model learned must explain it differently; a similarity near
    1 says the method shows the input (edges, the object's outline) rather than the model.
    :func:`netlens.zoo.shapes_model_random_labels` is the shapes model's random-label twin.

    Args:
        model: the model trained on the true labels (never changed).
        random_model: the model trained on random labels (never changed), taking the same input.
        x: images ``(B, C, H, W)``.
        target: class per image, resolved once on ``model`` and explained on both (None:
            ``model``'s predicted class).
        methods: names of :data:`~netlens.attribution.METHODS` (or ``"random"``, ``"centre"``),
            or functions ``f(model, x, target, **options)``.
        options: method name -> its keyword options. A method that takes a ``generator`` gets
            one seeded the same way for both models, so that its own noise does not count.
        generator: the source of that seed (None: seed 0, the same numbers every run).
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        A :class:`DataRandomization`: per method, ``(B,)`` similarities.

    Raises:
        ValueError: an unknown method, no methods, a bad input or target, models whose outputs
            do not have the same shape.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> a = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> b = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> r = data_randomization(a, b, torch.rand(3, 1, 4, 4), 0, methods=["saliency"])
        >>> r.spearman["saliency"].shape
        torch.Size([3])
    """
    fm, x = prepare(model, x)
    rfm, _ = prepare(random_model, x)
    if rfm.model is fm.model:
        raise ValueError("model and random_model are the same model; pass the model trained "
                         "on random labels as random_model (netlens.zoo."
                         "shapes_model_random_labels() for the shapes model)")
    named = [resolve_method(m) for m in methods]
    if not named:
        raise ValueError("methods is empty; name at least one attribution method")
    options = dict(options or {})
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    method_seed = int(torch.randint(2**62, (1,), generator=gen, device=gen.device))
    with guarded(fm), guarded(rfm), torch.no_grad():
        targets = method_target(bind_single(fm, x, target, auto_batch_size(fm, x, backward=False)))
        shapes = [_output_shape(fm(x[:1])), _output_shape(rfm(x[:1]))]
    if shapes[0] != shapes[1]:
        raise ValueError(f"the two models' outputs differ in shape ({shapes[0]} and "
                         f"{shapes[1]}); the random-label model must be the same architecture")

    def explain(net: nn.Module, fn: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        method_gen = torch.Generator(device=x.device).manual_seed(method_seed)
        attr = call_method(fn, net, x, targets, options.get(name, {}), method_gen,
                           progress).detach()
        check_attr(attr, x, name=f"the result of {name}")
        return saliency_map(attr, "sum"), saliency_map(attr, "abs_sum")

    result: dict[str, dict[str, torch.Tensor]] = {s: {} for s in SIMILARITIES}
    with progress_bar(len(named), progress, "data randomization") as bar:
        for name, fn in named:
            sig0, abs0 = explain(model_for(fn, fm, model), fn, name)
            signed, absolute = explain(model_for(fn, rfm, random_model), fn, name)
            result["spearman"][name] = _spearman(sig0, signed)
            result["spearman_abs"][name] = _spearman(abs0, absolute)
            result["ssim"][name] = _ssim(normalized(abs0), normalized(absolute))
            bar.update()
    return DataRandomization(**result)
