"""One table that compares attribution methods on every metric: :func:`compare`."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, Callable, Literal

import torch
from torch import nn

from .._runtime import auto_batch_size, guarded, prepare
from .._util import progress_bar
from ..targets import TargetLike
from . import axiomatic as axiom
from . import complexity as cx
from . import faithfulness as fa
from . import faithfulness_more as fm2
from . import localization as lo
from . import randomization as rnd
from . import robustness as ro
from ._maps import (
    Method,
    bind_single,
    call_method,
    check_attr,
    check_masks,
    method_reduce,
    method_target,
    model_for,
    resolve_method,
)

__all__ = ["MetricTable", "compare", "plot_curves", "METRICS", "DEFAULT_METHODS",
           "DEFAULT_METRICS"]

DEFAULT_METHODS = ("saliency", "input_x_gradient", "guided_backprop", "integrated_gradients",
                   "gradcam", "occlusion", "random")
DEFAULT_METRICS = ("deletion", "insertion", "pointing_game", "relevance_mass")

# metric -> (kind, higher is better). Curve metrics report the AUC (pixel flipping: the AOPC).
METRICS: dict[str, tuple[str, bool]] = {
    "deletion": ("curve", False),
    "insertion": ("curve", True),
    "pixel_flipping": ("curve", True),
    "road_morf": ("curve", False),
    "road_lerf": ("curve", True),
    "region_perturbation": ("curve", True),
    "selectivity": ("curve", False),
    "average_drop": ("model", False),
    "increase_in_confidence": ("model", True),
    "pointing_game": ("mask", True),
    "relevance_mass": ("mask", True),
    "relevance_rank": ("mask", True),
    "top_k_intersection": ("mask", True),
    "attribution_localisation": ("mask", True),
    "localisation_auc": ("mask", True),
    "max_sensitivity": ("method", False),
    "avg_sensitivity": ("method", False),
    "local_lipschitz_estimate": ("method", False),
    "continuity": ("method", False),
    "relative_input_stability": ("method", False),
    "relative_output_stability": ("method", False),
    "relative_representation_stability": ("method", False),
    "consistency": ("model", True),
    "input_invariance": ("method", True),
    "random_logit": ("method", False),
    "smooth_mprt": ("method", False),
    "efficient_mprt": ("method", True),
    "sparseness": ("map", True),
    "complexity": ("map", False),
    "effective_complexity": ("map", False),
    "completeness": ("model", False),
    "non_sensitivity": ("model", False),
    "faithfulness_correlation": ("model", True),
    "faithfulness_estimate": ("model", True),
    "monotonicity": ("model", True),
    "monotonicity_correlation": ("model", True),
    "irof": ("model", True),
    "infidelity": ("model", False),
    "sufficiency": ("model", True),
}


class MetricTable(list):
    """The result of :func:`compare`: a ``list`` of one record (dict) per method with the keys
    ``"method"``, one per metric (its mean over the images), ``"seconds"`` (attribution runtime)
    and ``"peak_mb"`` (peak memory of the attribution above its start, from the CUDA allocator's
    statistics; nan on a CPU, where no such figure exists: the process's resident memory barely
    moves when the allocator reuses freed pages, so it would depend on the methods' order. The
    column is left out of the table when no method has one).

    ``str(table)`` is a Markdown table; ``table.curves`` maps method -> curve name ->
    ``(fractions, mean scores)`` for :func:`plot_curves`; ``table.per_image`` maps method ->
    metric -> the ``(B,)`` float64 scores of the images, which
    :func:`~netlens.metrics.reliability` reads to say how far the ranking can be trusted.
    """

    def __init__(self, records: Sequence[dict[str, Any]] = (), metrics: Sequence[str] = (),
                 curves: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] | None = None,
                 per_image: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
        super().__init__(records)
        self.metrics = list(metrics)
        self.curves = dict(curves or {})
        self.per_image = dict(per_image or {})

    @property
    def columns(self) -> list[str]:
        measured = any(isinstance(r.get("peak_mb"), float) and not math.isnan(r["peak_mb"])
                       for r in self)
        return ["method", *self.metrics, "seconds", *(["peak_mb"] if measured else [])]

    @property
    def headers(self) -> list[str]:
        """The column names, metrics with an arrow: up, higher is better; down, lower."""
        return [f"{c} {'↑' if METRICS[c][1] else '↓'}" if c in METRICS else c
                for c in self.columns]

    def to_markdown(self, digits: int = 3) -> str:
        """The table in Markdown; metric headers carry an arrow: up, higher is better."""
        def cell(value: Any) -> str:
            if isinstance(value, float):
                return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
            return str(value)

        lines = ["| " + " | ".join(self.headers) + " |",
                 "|" + "|".join("---" if c == "method" else "---:" for c in self.columns) + "|"]
        lines += ["| " + " | ".join(cell(r.get(c, math.nan)) for c in self.columns) + " |"
                  for r in self]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def to_dataframe(self) -> Any:
        """A ``pandas.DataFrame`` indexed by method.

        Raises:
            ImportError: pandas is not installed (it is optional: ``pip install pandas``).
        """
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("MetricTable.to_dataframe needs pandas, which is not installed; "
                              "pip install pandas (or use str(table) / the records)") from e
        return pd.DataFrame(list(self), columns=self.columns).set_index("method")


class _PeakMemory:
    """Peak memory above the level at entry, in MiB, from the CUDA allocator's statistics on a
    GPU; nan on other devices (see :class:`MetricTable`)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mb = device, math.nan

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20


def compare(
    model: nn.Module, images: torch.Tensor, targets: TargetLike = None, *,
    methods: Sequence[Method] | None = None, metrics: Sequence[str] | None = None,
    masks: torch.Tensor | None = None, options: dict[str, dict[str, Any]] | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None, batch_size: int | None = None,
    progress: bool | None = None, generator: torch.Generator | None = None,
) -> MetricTable:
    """Every method on every metric: one table, with runtime, peak memory and the curves.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel` (never changed).
        images: ``(B, C, H, W)``.
        targets: class per image, resolved once on ``images`` (None: the predicted class).
        methods: names of :data:`~netlens.attribution.METHODS`, the reference maps ``"random"``
            and ``"centre"``, or functions ``f(model, x, target, **options)``; default
            :data:`DEFAULT_METHODS`.
        metrics: names of :data:`METRICS`; default :data:`DEFAULT_METRICS` (without the
            localization metrics when ``masks`` is None).
        masks: ground-truth object masks ``(B, 1, H, W)``, needed by the localization metrics.
        options: method name -> keyword options of the method.
        metric_options: metric name -> keyword options of its function (e.g.
            ``{"deletion": {"steps": 8}}``; ``road_morf`` / ``road_lerf`` take :func:`road`'s).
        batch_size: perturbed images per forward pass of the curve metrics (default from the
            memory budget); the attribution methods chunk by their own budget unless
            ``options`` says otherwise.
        progress: show progress bars: None when the work takes over 2 s, True, False.
        generator: the source of every random choice (random map, SmoothGrad noise, ROAD noise,
            max-sensitivity noise).

    Returns:
        A :class:`MetricTable`, one record per method, in the order given.

    Raises:
        ValueError: an unknown method or metric, a localization metric without ``masks``, masks
            of the wrong shape, an attribution whose shape does not match the images.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> t = compare(lin, torch.rand(2, 1, 4, 4), 0, methods=["saliency"],
        ...             metrics=["deletion"], progress=False)
        >>> t[0]["method"], sorted(t[0])
        ('saliency', ['deletion', 'method', 'peak_mb', 'seconds'])
    """
    named = [resolve_method(m) for m in (DEFAULT_METHODS if methods is None else methods)]
    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if masks is not None or METRICS[m][0] != "mask"]
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    if masks is None and any(METRICS[m][0] == "mask" for m in metrics):
        raise ValueError("the localization metrics (pointing_game, relevance_mass, "
                         "relevance_rank) need the objects' masks: pass masks=")
    options, metric_options = dict(options or {}), dict(metric_options or {})
    fm, x = prepare(model, images)
    with guarded(fm), torch.no_grad():
        t = method_target(bind_single(fm, x, targets, auto_batch_size(fm, x, backward=False)))
    if masks is not None:
        masks = check_masks(masks, x[:, :1])
    gen = generator
    if gen is None:
        gen = torch.Generator()
        gen.seed()
    quiet = False if progress is False else None
    records: list[dict[str, Any]] = []
    curves: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    per_image: dict[str, dict[str, torch.Tensor]] = {}
    with progress_bar(len(named) * (1 + len(metrics)), progress, "compare") as bar:
        for name, fn in named:
            opts = options.get(name, {})
            _sync(x.device)
            with _PeakMemory(x.device) as memory:
                start = time.perf_counter()
                attr = call_method(fn, model_for(fn, fm, model), x, t, opts, gen, quiet).detach()
                _sync(x.device)
                seconds = time.perf_counter() - start
            check_attr(attr, x, name=f"the result of {name}")
            bar.update()
            record: dict[str, Any] = {"method": name}
            curves[name], per_image[name] = {}, {}
            reduce = method_reduce(name)
            for metric in metrics:
                mo = dict(metric_options.get(metric, {}))
                value, curve = _metric(metric, fm, model_for(fn, fm, model), x, attr, t, masks,
                                       reduce, fn, opts, mo, batch_size, quiet, gen)
                per_image[name][metric] = value.detach().double().cpu().reshape(-1)
                record[metric] = float(per_image[name][metric].mean())
                if curve is not None:
                    curves[name][metric] = (curve.fractions.cpu(), curve.mean.detach().cpu())
                bar.update()
            record["seconds"], record["peak_mb"] = seconds, memory.peak_mb
            records.append(record)
    return MetricTable(records, metrics, curves, per_image)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _metric(metric: str, fm: nn.Module, net: nn.Module, x: torch.Tensor, attr: torch.Tensor,
            t: Any, masks: torch.Tensor | None, reduce: str,
            fn: Callable[..., torch.Tensor], opts: dict[str, Any], mo: dict[str, Any],
            batch_size: int | None, progress: bool | None, gen: torch.Generator,
            ) -> tuple[torch.Tensor, fa.Curve | None]:
    kind = METRICS[metric][0]
    if kind in ("mask", "map"):
        mo.setdefault("reduce", reduce)
    if kind == "mask":
        name = "auc" if metric == "localisation_auc" else metric
        return getattr(lo, name)(attr, masks, **mo), None
    if kind == "map":
        module = ro if metric == "sparseness" else cx
        return getattr(module, metric)(attr, **mo), None
    if kind == "method":  # re-explains (perturbed inputs, another class, randomized copies)
        mo.setdefault("progress", progress)
        mo.setdefault("generator", gen)
        if metric in rnd.__all__:
            if metric != "smooth_mprt":  # smooth MPRT keeps Quantus's abs=True ("abs_sum")
                mo.setdefault("reduce", reduce)
            if metric == "efficient_mprt":  # saves one explanation (random_logit explains
                mo.setdefault("attributions", attr)  # both classes with one seed itself)
            return getattr(rnd, metric)(net, x, t, fn, options=opts, **mo), None
        module = axiom if metric == "input_invariance" else ro
        return getattr(module, metric)(net, x, t, fn, options=opts, **mo), None
    mo.setdefault("batch_size", batch_size)
    if metric == "consistency":  # compares the batch's explanations; no re-explanation
        mo.setdefault("reduce", reduce)
        return ro.consistency(fm, x, attr, t, **mo), None
    if metric == "completeness":  # the size of the gap sum(attr) - (f(x) - f(baseline))
        return axiom.completeness(fm, x, attr, t, **mo).abs(), None
    if metric == "non_sensitivity":
        mo.setdefault("progress", progress)
        return axiom.non_sensitivity(fm, x, attr, t, **mo), None
    if metric in fm2.__all__:  # the metrics at Quantus's breadth
        if metric != "infidelity":
            mo.setdefault("reduce", reduce)
        if metric != "sufficiency":
            mo.setdefault("progress", progress)
            mo.setdefault("generator", gen)
        out = getattr(fm2, metric)(fm, x, attr, t, **mo)
        if isinstance(out, fa.Curve):
            return (out.aopc if metric == "region_perturbation" else out.auc), out
        return out, None
    mo.setdefault("reduce", reduce)
    if kind == "model":
        return getattr(fa, metric)(fm, x, attr, t, **mo), None
    mo.setdefault("progress", progress)
    mo.setdefault("generator", gen)
    if metric.startswith("road_"):
        order: Literal["morf", "lerf"] = "morf" if metric == "road_morf" else "lerf"
        curve = fa.road(fm, x, attr, t, order=order, **mo)
    else:
        curve = getattr(fa, metric)(fm, x, attr, t, **mo)
    return (curve.aopc if metric == "pixel_flipping" else curve.auc), curve


def plot_curves(table: MetricTable, curves: Sequence[str] | None = None, *,
                panel_size: float = 3.4) -> Any:
    """The mean perturbation curves of :func:`compare`: one panel per curve metric, one line
    per method, the metric's value in the legend.

    Returns:
        A matplotlib ``Figure``.

    Raises:
        ValueError: the table has no curves (compare it with a curve metric: deletion,
            insertion, pixel_flipping, road_morf, road_lerf, region_perturbation or
            selectivity).
    """
    from matplotlib.figure import Figure

    names = [m for m in table.metrics if METRICS[m][0] == "curve"] if curves is None else list(
        curves)
    names = [n for n in names if any(n in c for c in table.curves.values())]
    if not names:
        curve_metrics = ", ".join(m for m, (kind, _) in METRICS.items() if kind == "curve")
        raise ValueError(f"the table has no curves; compare with a curve metric "
                         f"({curve_metrics})")
    fig = Figure(figsize=(panel_size * len(names), panel_size), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, metric in zip(axes, names):
        for record in table:
            curve = table.curves.get(record["method"], {}).get(metric)
            if curve is None:
                continue
            label = f"{record['method']} ({record.get(metric, math.nan):.3f})"
            ax.plot(curve[0].numpy(), curve[1].numpy(), label=label)
        ax.set_title(f"{metric} ({'higher' if METRICS[metric][1] else 'lower'} is better)",
                     fontsize=10)
        ax.set_xlabel("fraction of pixels changed")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("target score")
    return fig
