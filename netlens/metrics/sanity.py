"""Sanity checks for saliency maps: model-parameter randomization.

Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018. An explanation that describes
the model must change when the model's learned weights are replaced by random ones. Layers are
randomized from the top (the output) down, either *cascading* (each step keeps the layers above
random too, until the whole model is random) or *independently* (one layer at a time, the others
trained). At every step the explanation of the randomized model is compared with the original
one by the Spearman rank correlation of the absolute maps and of the signed maps, and by the SSIM
of the normalized absolute maps: values near 1 mean the explanation did not notice.

Only a deep copy of the model is randomized; the caller's model is never touched. A layer is a
module with parameters of its own that the forward pass calls (its order is the forward order of
:class:`~netlens.FlatModel`); its parameters are redrawn from a normal distribution with the
root-mean-square of the trained values, from ``generator``. Buffers (BatchNorm statistics) stay.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._runtime import auto_batch_size, guarded, prepare
from .._util import progress_bar
from ..flat_model import FlatModel
from ..targets import TargetLike
from ._maps import (
    Method,
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

__all__ = ["Randomization", "randomizable_layers", "model_randomization", "plot_randomization"]

SIMILARITIES = ("spearman_abs", "spearman", "ssim")


@dataclasses.dataclass(frozen=True)
class Randomization:
    """The result of :func:`model_randomization`.

    Attributes:
        layers: the layer randomized at each step, top first.
        cascading: whether the steps accumulate (cascading) or not (independent).
        spearman_abs, spearman, ssim: method name -> ``(steps, B)`` float64 similarity of each
            image's randomized-model explanation to the original one.
    """

    layers: list[str]
    cascading: bool
    spearman_abs: dict[str, torch.Tensor]
    spearman: dict[str, torch.Tensor]
    ssim: dict[str, torch.Tensor]

    @property
    def methods(self) -> list[str]:
        return list(self.spearman)

    def mean(self, similarity: str = "spearman") -> dict[str, list[float]]:
        """method -> the similarity averaged over the images, one value per step."""
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        values: dict[str, torch.Tensor] = getattr(self, similarity)
        return {m: v.mean(1).tolist() for m, v in values.items()}


def randomizable_layers(model: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """Names of the modules with parameters of their own, in the order the forward pass first
    calls them (``x``: an input to trace with; default as :class:`~netlens.FlatModel`)."""
    fm = model if isinstance(model, FlatModel) else FlatModel(model)
    if x is not None:
        fm.ensure_traced(x)
    modules = fm.modules_by_name()
    names: list[str] = []
    for call in fm.layers:
        module = modules.get(call.module_name)
        if (call.functional or module is None or call.module_name in names
                or next(module.parameters(recurse=False), None) is None):
            continue
        names.append(call.module_name)
    return names


def _redraw(module: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            scale = p.detach().double().pow(2).mean().sqrt().to(p.dtype)
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype,
                                device=generator.device)
            p.copy_(noise.to(p.device) * scale)


def model_randomization(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, *,
    methods: Sequence[Method] = ("saliency", "gradcam", "guided_backprop"),
    cascading: bool = True, layers: Sequence[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None, generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> Randomization:
    """Adebayo's model-parameter randomization test for several methods at once.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel` (never changed).
        x: images ``(B, C, H, W)``.
        target: class per image, resolved once on the trained model and kept for every step
            (None: its predicted class).
        methods: names of :data:`~netlens.attribution.METHODS` (or ``"random"``, ``"centre"``),
            or functions ``f(model, x, target, **options)``.
        cascading: randomize layers cumulatively from the top (True) or one at a time (False).
        layers: the layers to randomize, in any order (they are taken top first); default
            :func:`randomizable_layers`.
        options: method name -> its keyword options. A method that takes a ``generator`` gets
            one seeded the same way at every step, so that its own noise does not count as a
            change.
        generator: the source of the random weights. None: a generator seeded with 0, so that
            a run gives the same numbers every time (the similarities after one draw of random
            weights can differ much from those after another); pass generators of other seeds
            to see that spread.
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        A :class:`Randomization`: per method, ``(len(layers), B)`` similarities.

    Raises:
        ValueError: an unknown method or layer, a bad input or target.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
        >>> r = model_randomization(net, torch.rand(2, 1, 4, 4), 0, methods=["saliency"])
        >>> r.layers, r.spearman["saliency"].shape
        (['3', '0'], torch.Size([2, 2]))
    """
    fm, x = prepare(model, x)
    named = [resolve_method(m) for m in methods]
    if not named:
        raise ValueError("methods is empty; name at least one attribution method")
    options = dict(options or {})
    order = randomizable_layers(fm, x)
    if layers is not None:
        unknown = [name for name in layers if name not in order]
        if unknown:
            raise ValueError(f"cannot randomize {unknown}: not a module with parameters that the "
                             f"forward pass calls; choose from {order}")
        order = [name for name in order if name in set(layers)]
    top_first = order[::-1]
    if not top_first:
        raise ValueError("the model has no parameters to randomize")
    gen = torch.Generator().manual_seed(0) if generator is None else generator
    method_seed = int(torch.randint(2**62, (1,), generator=gen, device=gen.device))

    def explain(net: nn.Module, fn: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        method_gen = torch.Generator(device=x.device).manual_seed(method_seed)
        attr = call_method(fn, net, x, targets, options.get(name, {}), method_gen,
                           progress).detach()
        check_attr(attr, x, name=f"the result of {name}")
        return saliency_map(attr, "sum"), saliency_map(attr, "abs_sum")

    with guarded(fm), torch.no_grad():
        targets = method_target(bind_single(fm, x, target, auto_batch_size(fm, x, backward=False)))
    original = {name: explain(model_for(fn, fm, model), fn, name) for name, fn in named}
    try:
        twin = copy.deepcopy(fm.model)
    except Exception as e:  # a model that cannot be copied cannot be randomized safely
        raise TypeError(f"model_randomization randomizes a copy of the model, and "
                        f"copy.deepcopy failed ({type(e).__name__}: {e})") from e
    twin_fm = FlatModel(twin, example_input=x)
    modules = dict(twin.named_modules())
    result: dict[str, dict[str, list[torch.Tensor]]] = {
        s: {name: [] for name, _ in named} for s in SIMILARITIES}
    with progress_bar(len(top_first), progress, "model randomization") as bar:
        for layer in top_first:
            module = modules[layer]
            saved = [p.detach().clone() for p in module.parameters(recurse=False)]
            _redraw(module, gen)
            for name, fn in named:
                signed, absolute = explain(model_for(fn, twin_fm, twin), fn, name)
                sig0, abs0 = original[name]
                result["spearman"][name].append(_spearman(sig0, signed))
                result["spearman_abs"][name].append(_spearman(abs0, absolute))
                result["ssim"][name].append(_ssim(normalized(abs0), normalized(absolute)))
            if not cascading:
                with torch.no_grad():
                    for p, value in zip(module.parameters(recurse=False), saved):
                        p.copy_(value)
            bar.update()
    stacked = {s: {name: torch.stack(v) for name, v in per.items()}
               for s, per in result.items()}
    return Randomization(layers=top_first, cascading=cascading, **stacked)


def plot_randomization(result: Randomization, *, panel_size: float = 3.2) -> Any:
    """One panel per similarity (Spearman of absolute and signed maps, SSIM), one line per
    method, the mean over images against the randomized layers (the trained model first, at 1).

    Returns:
        A matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    titles = {"spearman_abs": "Spearman (absolute maps)", "spearman": "Spearman (signed maps)",
              "ssim": "SSIM (absolute maps)"}
    fig = Figure(figsize=(panel_size * 3, panel_size + 0.8 + 0.06 * max(map(len, result.layers))),
                 layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    ticks = ["trained", *result.layers]
    for ax, similarity in zip(axes, SIMILARITIES):
        for method, values in result.mean(similarity).items():
            ax.plot(range(len(ticks)), [1.0, *values], marker="o", markersize=3, label=method)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.set_title(titles[similarity], fontsize=10)
        ax.set_xticks(range(len(ticks)))
        ax.set_xticklabels(ticks, rotation=90, fontsize=7)
        ax.set_ylim(-0.5, 1.05)
    axes[0].set_ylabel("similarity to the trained model's map")
    axes[-1].legend(fontsize=8)
    kind = "cascading" if result.cascading else "independent"
    fig.suptitle(f"Model-parameter randomization ({kind}, top layer first)", fontsize=11)
    return fig
