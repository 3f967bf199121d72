"""Metric reliability: how far a ranking of explanation methods can be trusted.

A table of methods x metrics ranks the methods; whether that ranking means anything depends on
whether the images agree on it and whether the metrics do. Tomsett et al., "Sanity Checks for
Saliency Metrics" (AAAI 2020), measure it as reliability in the psychometric sense:

- :func:`krippendorff_alpha` (Krippendorff, "Content Analysis", 2004; "Computing
  Krippendorff's Alpha-Reliability", 2011): the agreement of several raters on several units,
  1 for perfect agreement, 0 for chance, below 0 for systematic disagreement; nominal, ordinal,
  interval and ratio data, missing ratings allowed.
- :func:`kendall_tau` (Kendall 1945, the tau-b that accounts for ties): the rank agreement of
  two score vectors, batched.
- :func:`reliability` reads the per-image scores of a :class:`~netlens.metrics.MetricTable`
  (what :func:`~netlens.metrics.compare` returns) into a :class:`Reliability`:

  - ``inter_rater[metric]``: Krippendorff's ordinal alpha of the methods' ranks, each image a
    rater ranking the methods (Tomsett et al.'s inter-rater reliability): do the images agree on
    which method is better?
  - ``inter_method[metric]``: the mean Spearman correlation over the pairs of methods of their
    scores across the images (Tomsett et al.'s inter-method reliability): does the metric rate
    the same images high whatever the method?
  - ``inter_metric[a][b]``: the mean over images of Kendall's tau between the method rankings of
    metrics ``a`` and ``b``, both turned so that higher is better (Tomsett et al.'s internal
    consistency): do two metrics agree on which method is better?

Example:
    >>> import netlens as nl
    >>> model, batch = nl.zoo.shapes_model(), nl.data.make_shapes(6, seed=7)
    >>> table = nl.metrics.compare(model, batch.images, batch.labels, masks=batch.masks,
    ...     methods=["gradcam", "saliency", "random"], progress=False,
    ...     metrics=["pointing_game", "relevance_mass", "sparseness"],
    ...     generator=torch.Generator().manual_seed(0))
    >>> r = nl.metrics.reliability(table)
    >>> sorted(r.inter_rater), -1.0 <= r.inter_metric["pointing_game"]["relevance_mass"] <= 1.0
    (['pointing_game', 'relevance_mass', 'sparseness'], True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from ._maps import ranks

if TYPE_CHECKING:
    from .compare import MetricTable

__all__ = ["krippendorff_alpha", "kendall_tau", "reliability", "Reliability", "plot_reliability"]

Level = Literal["nominal", "ordinal", "interval", "ratio"]


def _as_ratings(ratings: object) -> torch.Tensor:
    t = torch.as_tensor(ratings, dtype=torch.float64) if not isinstance(ratings, torch.Tensor) \
        else ratings.detach().to("cpu", torch.float64)
    if t.dim() != 2:
        raise ValueError(f"ratings must be a (raters, units) matrix, got shape {tuple(t.shape)}; "
                         f"one row per rater (an image), one column per unit (a method)")
    if bool(torch.isinf(t).any()):
        raise ValueError("ratings contain infinite values; mark a missing rating with nan")
    return t


def krippendorff_alpha(ratings: Any, level: Level = "ordinal") -> float:
    """Krippendorff's alpha of a ``(raters, units)`` matrix of ratings (nan: missing).

    ``alpha = 1 - D_o / D_e``, the observed disagreement within units over the disagreement
    expected by chance, both from the coincidence matrix of the pairable values (units with at
    least two ratings). The difference function follows ``level``: nominal (0 or 1), ordinal
    (the ranks between two values, from the values' marginal counts), interval (squared
    difference) or ratio (squared difference over the sum, squared).

    Args:
        ratings: ``(raters, units)``, a tensor, array or nested list; nan for a missing rating.
        level: the kind of data.

    Returns:
        alpha as a float: 1.0 perfect agreement, 0.0 chance; nan when fewer than two values are
        pairable or when every pairable value is the same (no variation to agree on).

    Raises:
        ValueError: not a 2-D matrix, an infinite rating, an unknown ``level``, negative
            values at the ratio level.

    Example:
        >>> krippendorff_alpha([[1, 2, 3, 3], [1, 2, 3, 3]])
        1.0
        >>> round(krippendorff_alpha([[1, 2, 3, 4], [2, 1, 4, 3]], "interval"), 4)
        0.65
    """
    if level not in ("nominal", "ordinal", "interval", "ratio"):
        raise ValueError(f"level must be 'nominal', 'ordinal', 'interval' or 'ratio', got "
                         f"{level!r}")
    t = _as_ratings(ratings)
    present = ~torch.isnan(t)
    per_unit = present.sum(0)
    t, present, per_unit = t[:, per_unit >= 2], present[:, per_unit >= 2], per_unit[per_unit >= 2]
    if t.numel() == 0:
        return math.nan
    values = torch.unique(t[present])  # sorted
    if level == "ratio" and bool((values < 0).any()):
        raise ValueError("ratio-level ratings must be >= 0; use level='interval' for data with "
                         "negative values")
    v = len(values)
    if v < 2:
        return math.nan
    # counts[u, c]: how many raters gave unit u value c
    idx = torch.searchsorted(values, t.nan_to_num(values[0].item()))
    counts = torch.zeros(t.shape[1], v, dtype=torch.float64)
    counts.scatter_add_(1, idx.T, present.T.double())
    # coincidences o[c, k] = sum_u (n_uc n_uk - [c = k] n_uc) / (m_u - 1)
    weights = 1.0 / (per_unit.double() - 1)
    o = torch.einsum("u,uc,uk->ck", weights, counts, counts) - torch.diag(weights @ counts)
    n_c = o.sum(1)
    n = n_c.sum()
    if level == "nominal":
        delta = 1.0 - torch.eye(v, dtype=torch.float64)
    elif level == "ordinal":
        cum = torch.cumsum(n_c, 0)
        c, k = torch.meshgrid(torch.arange(v), torch.arange(v), indexing="ij")
        lo, hi = torch.minimum(c, k), torch.maximum(c, k)
        between = cum[hi] - cum[lo] + n_c[lo]  # sum of n_g for g from lo to hi
        delta = (between - (n_c[c] + n_c[k]) / 2) ** 2
    elif level == "interval":
        delta = (values[:, None] - values[None, :]) ** 2
    else:
        total = values[:, None] + values[None, :]
        diff = values[:, None] - values[None, :]
        delta = torch.where(total > 0, diff / torch.where(total > 0, total, 1.0), 0.0) ** 2
    expected = (n_c[:, None] * n_c[None, :] * delta).sum()
    if expected == 0:
        return math.nan
    return float(1.0 - (n - 1) * (o * delta).sum() / expected)


def kendall_tau(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kendall's tau-b between ``a`` and ``b`` along their last axis (batched; ties counted).

    ``(concordant - discordant) / sqrt((n0 - ties_a) (n0 - ties_b))``, ``n0 = n (n - 1) / 2``
    pairs: scipy's ``kendalltau`` (variant ``"b"``). nan where either side is constant.

    Args:
        a: ``(..., n)`` scores.
        b: the same shape.

    Returns:
        ``(...)`` float64 in [-1, 1].

    Raises:
        ValueError: shapes that differ, fewer than two values.

    Example:
        >>> kendall_tau(torch.tensor([1., 2., 3.]), torch.tensor([1., 3., 2.])).item()
        0.3333333333333333
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.shape[-1] < 2:
        raise ValueError(f"kendall_tau needs at least two values along the last axis, got "
                         f"{a.shape[-1]}")
    a, b = a.double(), b.double()
    da = torch.sign(a[..., :, None] - a[..., None, :])
    db = torch.sign(b[..., :, None] - b[..., None, :])
    upper = torch.ones(a.shape[-1], a.shape[-1], dtype=torch.bool).triu(1)
    s = (da * db)[..., upper].sum(-1)
    na = (da[..., upper] != 0).sum(-1).double()
    nb = (db[..., upper] != 0).sum(-1).double()
    denom = torch.sqrt(na * nb)
    return torch.where(denom > 0, s / torch.where(denom > 0, denom, 1.0),
                       torch.full_like(s, math.nan))


def _rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rho of two score vectors (average ranks for ties); nan if either is
    constant (unlike :func:`~netlens.metrics.spearman`, which compares maps)."""
    ra, rb = ranks(a[None])[0], ranks(b[None])[0]
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = (ra.norm() * rb.norm()).item()
    return (ra @ rb).item() / den if den > 0 else math.nan


@dataclass
class Reliability:
    """How much a :class:`~netlens.metrics.MetricTable`'s ranking of methods can be trusted
    (see the module docstring): per metric, Krippendorff's ordinal alpha of the images' method
    rankings (``inter_rater``) and the mean Spearman correlation of the methods' per-image
    scores (``inter_method``); per pair of metrics, the mean Kendall tau of their method
    rankings (``inter_metric``, symmetric, 1.0 on the diagonal)."""

    methods: list[str]
    metrics: list[str]
    images: int
    inter_rater: dict[str, float] = field(default_factory=dict)
    inter_method: dict[str, float] = field(default_factory=dict)
    inter_metric: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_markdown(self, digits: int = 2) -> str:
        """One row per metric: its two reliabilities, then its agreement with each metric."""
        def cell(v: float) -> str:
            return "n/a" if math.isnan(v) else f"{v:.{digits}f}"

        head = ["metric", "inter-rater α", "inter-method ρ", *self.metrics]
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for m in self.metrics:
            row = [m, cell(self.inter_rater[m]), cell(self.inter_method[m]),
                   *(cell(self.inter_metric[m][o]) for o in self.metrics)]
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def reliability(table: MetricTable, metrics: Sequence[str] | None = None) -> Reliability:
    """The reliability of ``table``'s ranking of methods (module docstring).

    Args:
        table: what :func:`~netlens.metrics.compare` returned, with at least two methods and two
            images (it keeps every metric's per-image scores in ``table.per_image``).
        metrics: the metrics to read; default all of the table's.

    Returns:
        A :class:`Reliability`.

    Raises:
        ValueError: a table without per-image scores, fewer than two methods or images, an
            unknown metric.
    """
    from .compare import METRICS

    per_image = getattr(table, "per_image", None)
    if not per_image:
        raise ValueError("the table has no per-image scores: make it with nl.metrics.compare "
                         "(a MetricTable built by hand has none)")
    methods = [r["method"] for r in table]
    metrics = list(table.metrics if metrics is None else metrics)
    unknown = [m for m in metrics if m not in table.metrics]
    if unknown:
        raise ValueError(f"metrics {unknown} are not in the table; it has {table.metrics}")
    if len(methods) < 2:
        raise ValueError(f"reliability compares methods: the table needs at least two, it has "
                         f"{methods}")
    scores = {m: torch.stack([per_image[method][m].double().cpu() for method in methods], 1)
              for m in metrics}  # (images, methods)
    images = next(iter(scores.values())).shape[0] if scores else 0
    if images < 2:
        raise ValueError(f"reliability needs at least two images, the table has {images}")
    out = Reliability(methods, metrics, images)
    for m in metrics:
        s = scores[m]
        out.inter_rater[m] = krippendorff_alpha(ranks(s), "ordinal")
        pairs = [_rank_correlation(s[:, i], s[:, j])
                 for i in range(len(methods)) for j in range(i + 1, len(methods))]
        finite = [p for p in pairs if not math.isnan(p)]
        out.inter_method[m] = sum(finite) / len(finite) if finite else math.nan
    oriented = {m: scores[m] if METRICS.get(m, ("", True))[1] else -scores[m] for m in metrics}
    for a in metrics:
        out.inter_metric[a] = {}
        for b in metrics:
            tau = kendall_tau(oriented[a], oriented[b])
            tau = tau[~torch.isnan(tau)]
            out.inter_metric[a][b] = tau.mean().item() if tau.numel() else math.nan
    return out


def plot_reliability(result: Reliability, *, size: float = 0.55) -> Any:
    """A heat map of ``result.inter_metric`` (Kendall tau, -1 to 1), each row labelled with the
    metric's inter-rater alpha; returns the matplotlib figure."""
    from matplotlib.figure import Figure

    k = len(result.metrics)
    grid = torch.tensor([[result.inter_metric[a][b] for b in result.metrics]
                         for a in result.metrics])
    fig = Figure(figsize=(3.5 + size * k, 1.5 + size * k), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(grid.numpy(), cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xticks(range(k), result.metrics, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), [f"{m} (α {result.inter_rater[m]:.2f})" for m in result.metrics],
                  fontsize=8)
    for i in range(k):
        for j in range(k):
            v = grid[i, j].item()
            if not math.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(v) > 0.6 else "black")
    ax.set_title(f"agreement of the metrics' method rankings (Kendall τ), "
                 f"{len(result.methods)} methods, {result.images} images", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return fig
