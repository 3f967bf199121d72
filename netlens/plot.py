"""Display attributions: positive/negative saliency, heatmap overlays and figure grids.

Everything that normalizes an attribution for display lives here; attribution methods return raw
tensors. Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure``),
never through ``pyplot``, so they work headless, hold no global state and are garbage-collected
like any object. Save one with ``fig.savefig(path)``; in a notebook, a returned Figure is shown.

Image tensors are expected normalized with ``mean``/``std`` (ImageNet's by default, as
:func:`netlens.image.load` returns them); pass ``mean=None, std=None`` for raw ``[0, 1]`` pixels.
A one-channel (grayscale) image with the ImageNet defaults is shown as raw pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch import Tensor

from netlens.image import IMAGENET_MEAN, IMAGENET_STD, Stats, to_numpy

if TYPE_CHECKING:  # matplotlib is imported lazily: it costs about a second
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure, SubFigure

__all__ = [
    "Reduce",
    "explain",
    "factorization_overlay",
    "grid",
    "normalize_map",
    "overlay",
    "positive_negative_saliency",
    "show",
    "show_factorization",
    "show_maps",
]

Reduce = Literal["abs_max", "max", "sum", "mean", "l2"]
"""How :func:`normalize_map` reduces channels: ``abs_max`` is ``max_c |a_c|`` (Simonyan et al.),
``max`` is ``max_c a_c``, ``sum`` and ``mean`` are signed, ``l2`` is the channel-wise norm."""

_PANEL_INCHES = 2.5


def positive_negative_saliency(attr: Tensor) -> tuple[Tensor, Tensor]:
    """Split an attribution into its positive and negative parts, each scaled to ``[0, 1]``.

    ``pos = max(attr, 0) / max(attr)`` and ``neg = max(-attr, 0) / max(-attr)``, with the maxima
    taken per image over ``(C, H, W)``. A part that is zero everywhere stays zero.

    Args:
        attr: a floating attribution ``(B, C, H, W)``, or ``(C, H, W)`` for one image.

    Returns:
        ``(pos, neg)``, two non-negative tensors of ``attr``'s shape, dtype and device.

    Raises:
        TypeError: if ``attr`` is not a floating tensor.
        ValueError: if ``attr`` is not 3-D or 4-D.

    Example:
        >>> pos, neg = positive_negative_saliency(torch.tensor([[[[2.0, -1.0, 1.0]]]]))
        >>> pos.flatten().tolist(), neg.flatten().tolist()
        ([1.0, 0.0, 0.5], [0.0, 1.0, 0.0])
    """
    _check_float(attr, "attr")
    if attr.ndim not in (3, 4):
        raise ValueError(f"attr must be (B, C, H, W) or (C, H, W), got shape {tuple(attr.shape)}")
    dims = tuple(range(attr.ndim - 3, attr.ndim))  # per image: the last three dimensions

    def part(a: Tensor) -> Tensor:
        a = a.clamp(min=0)
        peak = a.amax(dim=dims, keepdim=True)
        return a / torch.where(peak > 0, peak, torch.ones_like(peak))

    return part(attr), part(-attr)


def normalize_map(
    attr: Tensor,
    *,
    reduce: Reduce | None = "abs_max",
    absolute: bool = False,
    clip: float | tuple[float, float] | None = 99.0,
) -> Tensor:
    """Turn an attribution into a ``[0, 1]`` map for display (never for metrics).

    Steps, per image: reduce the channels, optionally take ``abs``, clip to percentiles, then
    min-max scale to ``[0, 1]``. A constant map becomes all zeros.

    Args:
        attr: ``(B, C, H, W)``, ``(C, H, W)`` or ``(H, W)``; a 3-D tensor is one image.
        reduce: channel reduction, one of ``"abs_max"``, ``"max"``, ``"sum"``, ``"mean"``,
            ``"l2"``; ``None`` keeps the channels.
        absolute: take the absolute value after the reduction.
        clip: a percentile ``p`` in ``[0, 100]`` caps values at the p-th percentile; a pair
            ``(lo, hi)`` clips to both; ``None`` does not clip.

    Returns:
        A detached tensor ``(B, 1, H, W)`` (``(B, C, H, W)`` with ``reduce=None``) on
        ``attr``'s device, float64 for a float64 input and float32 otherwise.

    Raises:
        TypeError: if ``attr`` is not a tensor.
        ValueError: if the shape, ``reduce`` or ``clip`` is invalid.

    Example:
        >>> normalize_map(torch.tensor([[0.0, -2.0], [1.0, 4.0]]), clip=None).flatten().tolist()
        [0.0, 0.5, 0.25, 1.0]
    """
    if not isinstance(attr, Tensor):
        raise TypeError(f"attr must be a torch.Tensor, got {type(attr).__name__}")
    if attr.ndim == 2:
        attr = attr[None, None]
    elif attr.ndim == 3:
        attr = attr[None]
    if attr.ndim != 4:
        raise ValueError(
            f"attr must be (B, C, H, W), (C, H, W) or (H, W), got shape {tuple(attr.shape)}"
        )
    a = _reduced(attr, reduce)
    if absolute:
        a = a.abs()
    flat = a.flatten(1)
    if clip is not None:
        lo_p, hi_p = _percentiles(clip)
        lo = _percentile(flat, lo_p) if lo_p > 0 else flat.amin(dim=1)
        hi = _percentile(flat, hi_p) if hi_p < 100 else flat.amax(dim=1)
        flat = torch.minimum(torch.maximum(flat, lo[:, None]), hi[:, None])
    lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    span = hi - lo
    flat = (flat - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return flat.reshape(a.shape)


def overlay(
    image: Tensor,
    attr: Tensor,
    alpha: float = 0.5,
    cmap: str | Colormap = "jet",
    mean: Stats = IMAGENET_MEAN,
    std: Stats = IMAGENET_STD,
    *,
    reduce: Reduce | None = "abs_max",
    clip: float | tuple[float, float] | None = 99.0,
) -> np.ndarray:
    """Blend an attribution heatmap over its image.

    The attribution goes through :func:`normalize_map`, is upsampled bilinearly to the image size
    if smaller (a CAM, an occlusion map), coloured with ``cmap`` and blended as
    ``(1 - alpha) * image + alpha * heatmap``.

    Args:
        image: one image ``(1, C, H, W)`` or ``(C, H, W)``, ``C`` in 1, 3, normalized with
            ``mean``/``std``.
        attr: ``(H', W')``, ``(C', H', W')`` or ``(1, C', H', W')`` of any size (resized to the
            image's); its channels are reduced with ``reduce``.
        alpha: weight of the heatmap, in ``[0, 1]``.
        cmap: a matplotlib colormap or its name.
        mean: the mean ``image`` was normalized with; ``None`` if it was not shifted.
        std: the std ``image`` was normalized with; ``None`` if it was not scaled.
        reduce: channel reduction, see :func:`normalize_map`.
        clip: percentile clipping, see :func:`normalize_map`.

    Returns:
        A float32 array ``(H, W, 3)`` with values in ``[0, 1]``, ready for ``imshow``.

    Raises:
        TypeError: if ``image`` or ``attr`` is not a tensor.
        ValueError: if a shape or ``alpha`` is invalid.

    Example:
        >>> overlay(torch.rand(3, 8, 8), torch.rand(1, 2, 2), mean=None, std=None).shape
        (8, 8, 3)
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not isinstance(attr, Tensor):
        raise TypeError(f"attr must be a torch.Tensor, got {type(attr).__name__}")
    if attr.ndim == 4 and attr.shape[0] != 1:
        raise ValueError(
            f"overlay() takes one attribution (C', H', W'), got a batch {tuple(attr.shape)}; "
            f"use show() for batches"
        )
    img = to_numpy(image, *_stats_for(image, mean, std))
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    h, w = img.shape[:2]
    m = normalize_map(attr, reduce=reduce, clip=clip)
    if m.shape[0] != 1 or m.shape[1] != 1:
        raise ValueError(f"attr must reduce to one map, got shape {tuple(m.shape)}; set reduce")
    if tuple(m.shape[-2:]) != (h, w):
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    heat = _colormap(cmap)(m[0, 0].cpu().numpy())[..., :3]
    return np.clip((1.0 - alpha) * img + alpha * heat, 0.0, 1.0).astype(np.float32)


def show(
    x: Tensor,
    attr: Tensor | None = None,
    *,
    titles: Sequence[str] | str | None = None,
    cmap: str | Colormap = "jet",
    alpha: float = 0.5,
    mean: Stats = IMAGENET_MEAN,
    std: Stats = IMAGENET_STD,
    ncols: int | None = None,
    reduce: Reduce | None = "abs_max",
    clip: float | tuple[float, float] | None = 99.0,
    panel_size: float = _PANEL_INCHES,
) -> Figure:
    """Show a batch of images, each beside its attribution overlay.

    Args:
        x: images ``(B, C, H, W)`` or one image ``(C, H, W)``, normalized with ``mean``/``std``.
        attr: ``None`` to show the images only, or attributions ``(B, C', H', W')`` or
            ``(B, H', W')`` (for one ``(C, H, W)`` image also ``(C', H', W')`` or ``(H', W')``).
        titles: one title per image, e.g. ``"pred: cat / true: dog"``.
        cmap: heatmap colormap, see :func:`overlay`.
        alpha: heatmap weight, see :func:`overlay`.
        mean: the mean ``x`` was normalized with; ``None`` if it was not shifted.
        std: the std ``x`` was normalized with; ``None`` if it was not scaled.
        ncols: images per row (each takes two panels with ``attr``); default up to 4, or 3.
        reduce: channel reduction, see :func:`normalize_map`.
        clip: percentile clipping, see :func:`normalize_map`.
        panel_size: size of one panel in inches.

    Returns:
        A ``matplotlib.figure.Figure`` with B axes, or 2B with ``attr`` (image, overlay).

    Raises:
        TypeError: if ``x`` or ``attr`` is not a tensor.
        ValueError: if the shapes, titles or ``ncols`` do not fit together.

    Example:
        >>> fig = show(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 4, 4), mean=None, std=None)
        >>> len(fig.axes)
        4
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x[None]
        if attr is not None and attr.ndim in (2, 3):
            attr = attr[None]
    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    b = x.shape[0]
    if attr is not None:
        if not isinstance(attr, Tensor):
            raise TypeError(f"attr must be a torch.Tensor or None, got {type(attr).__name__}")
        if attr.ndim == 3:
            attr = attr[:, None]
        if attr.ndim != 4 or attr.shape[0] != b:
            raise ValueError(
                f"attr must be (B, C', H', W') or (B, H', W') with B={b}, got shape "
                f"{tuple(attr.shape)}"
            )
    labels = _titles(titles, b)
    per = 1 if attr is None else 2
    ncols = _ncols(ncols, b, 4 if attr is None else 3)
    fig, cells = _figure(b, ncols, per, panel_size)
    for i, cell in enumerate(cells):
        axes = cell.subplots(1, per, squeeze=False)[0]
        _imshow(axes[0], to_numpy(x[i], *_stats_for(x[i], mean, std)))
        if attr is not None:
            blended = overlay(x[i], attr[i], alpha, cmap, mean, std, reduce=reduce, clip=clip)
            _imshow(axes[1], blended)
        if labels is not None:
            if per == 1:
                axes[0].set_title(labels[i])
            else:
                cell.suptitle(labels[i])
    return fig


def show_maps(
    images: Tensor,
    maps: Mapping[str, Tensor],
    masks: Tensor | None = None,
    *,
    titles: Sequence[str] | None = None,
    blend: bool = False,
    cmap: str | Colormap = "inferno",
    alpha: float = 0.5,
    mean: Stats = IMAGENET_MEAN,
    std: Stats = IMAGENET_STD,
    reduce: Reduce | None = "abs_max",
    clip: float | tuple[float, float] | None = 99.0,
    outline: str | None = "cyan",
    panel_size: float = 1.7,
    signed: bool = False,
    scale: Literal["panel", "column", "shared"] = "panel",
    colorbar: bool = False,
) -> Figure:
    """Compare attribution maps side by side: one row per image, one column per map.

    Each row shows the image, its mask (with ``masks``), then one panel per entry of ``maps``:
    the map scaled to ``[0, 1]`` by :func:`normalize_map` (with ``reduce`` and ``clip``) and
    drawn with ``cmap``, or with ``blend=True`` the heatmap blended over the image by
    :func:`overlay`. With ``masks``, the outline of each image's mask (its 0.5 level) is drawn
    over every map panel, so one can see at a glance whether a map points at the object. The
    column titles (``"image"``, ``"ground truth"``, the keys of ``maps``) are set on the first
    row only; with ``titles``, every row is titled, its image panel with the image's title.

    Args:
        images: ``(B, C, H, W)`` or one image ``(C, H, W)``, ``C`` in 1, 3, normalized with
            ``mean``/``std``.
        maps: column title -> attributions ``(B, C', H', W')`` of any size (``(C', H', W')`` for
            one image); their channels are reduced with ``reduce``.
        masks: ground-truth masks ``(B, 1, H'', W'')`` or ``(B, H'', W'')`` (bool or in
            ``[0, 1]``), shown as a panel and outlined over the maps; ``None`` for neither.
        titles: one title per image (e.g. its class), shown on its row's image panel.
        blend: blend each map over its image (:func:`overlay`) instead of showing it alone.
        cmap: colormap of the maps, also of the blended heatmaps.
        alpha: heatmap weight with ``blend=True``, see :func:`overlay`.
        mean: the mean ``images`` were normalized with; ``None`` if they were not shifted.
        std: the std ``images`` were normalized with; ``None`` if they were not scaled.
        reduce: channel reduction, see :func:`normalize_map`; must leave one channel.
        clip: percentile clipping, see :func:`normalize_map`.
        outline: colour of the mask outlines; ``None`` draws none.
        panel_size: size of one panel in inches.
        signed: show signed maps (integrated gradients, input x gradient) with a diverging
            colormap centred at zero (``cmap`` ``"RdBu_r"`` unless given; symmetric range, the
            ``clip`` percentile of ``|map|``); the channels are summed (``reduce="sum"``) unless
            ``reduce`` is another signed one (``"mean"``, None).
        scale: ``"panel"``: each map scaled to its own range (shapes, not magnitudes, compare);
            ``"column"``: one range per map name across the images; ``"shared"``: one range
            for every map (magnitudes compare across methods and images).
        colorbar: a colorbar beside each map panel, in the map's own units (after ``reduce``):
            a map whose values are all about 1e-13 shows it.

    Returns:
        A ``matplotlib.figure.Figure`` with ``B * (1 + len(maps))`` axes (one more per row with
        ``masks``), row by row, each map panel's colorbar (``colorbar=True``) in its cell.

    Raises:
        TypeError: if ``images``, a map or ``masks`` is not a tensor.
        ValueError: if the shapes or titles do not fit together, or a map keeps several channels.

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> fig = show_maps(x, {"a": torch.rand(2, 3, 8, 8), "b": torch.rand(2, 1, 4, 4)},
        ...                 torch.rand(2, 1, 8, 8) > 0.5, mean=None, std=None)
        >>> len(fig.axes)
        8
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    single = images.ndim == 3
    if single:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(
            f"images must be (B, C, H, W) or (C, H, W), got shape {tuple(images.shape)}"
        )
    b = images.shape[0]
    batched: dict[str, Tensor] = {}
    for name, attr in maps.items():
        if not isinstance(attr, Tensor):
            raise TypeError(f"map {name!r} must be a torch.Tensor, got {type(attr).__name__}")
        attr = attr[None] if single and attr.ndim == 3 else attr
        if attr.ndim != 4 or attr.shape[0] != b:
            raise ValueError(
                f"map {name!r} must be (B, C', H', W') with B={b}, got shape {tuple(attr.shape)}"
            )
        batched[str(name)] = attr
    if masks is not None:
        if not isinstance(masks, Tensor):
            raise TypeError(f"masks must be a torch.Tensor or None, got {type(masks).__name__}")
        masks = masks[:, None] if masks.ndim == 3 else masks
        if masks.ndim != 4 or masks.shape[0] != b or masks.shape[1] != 1:
            raise ValueError(
                f"masks must be (B, 1, H, W) or (B, H, W) with B={b}, got shape "
                f"{tuple(masks.shape)}"
            )
    if scale not in ("panel", "column", "shared"):
        raise ValueError(f"scale must be 'panel', 'column' or 'shared', got {scale!r}")
    if blend and (signed or scale != "panel" or colorbar):
        raise ValueError("blend=True scales each heatmap to its own image; signed=, scale= and "
                         "colorbar= need blend=False")
    if signed:
        reduce = "sum" if reduce in ("abs_max", "l2", "max") else reduce
        cmap = "RdBu_r" if cmap == "inferno" else cmap
    labels = _titles(titles, b)
    columns = ["image", *(["ground truth"] if masks is not None else []), *batched]
    # the maps after the channel reduction, in their own units, and each one's display range
    raw: dict[tuple[int, str], np.ndarray] = {}
    ranges: dict[tuple[int, str], tuple[float, float]] = {}
    if not blend:
        for name, attr in batched.items():
            for i in range(b):
                m = _reduced(attr[i : i + 1], reduce)
                if m.shape[1] != 1:
                    raise ValueError(
                        f"map {name!r} must reduce to one channel, got {m.shape[1]}; set reduce"
                    )
                ranges[i, name] = _limits(m, signed, clip)
                raw[i, name] = m[0, 0].cpu().numpy()
        for key in list(ranges):
            group = [k for k in ranges if scale == "shared" or (scale == "column"
                                                                 and k[1] == key[1])]
            if scale != "panel":
                ranges[key] = (min(ranges[k][0] for k in group), max(ranges[k][1] for k in group))
    panels: list[np.ndarray] = []
    names: list[str] = []
    for i in range(b):
        img = to_numpy(images[i], *_stats_for(images[i], mean, std))
        panels.append(np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img)
        if masks is not None:
            mask = masks[i, 0].detach().float().clamp(0, 1).cpu().numpy()
            panels.append(np.repeat(mask[..., None], 3, axis=-1))  # white on black, any cmap
        for name, attr in batched.items():
            if blend:
                panels.append(overlay(images[i], attr[i], alpha, cmap, mean, std, reduce=reduce,
                                      clip=clip))
                continue
            lo, hi = ranges[i, name]
            span = hi - lo
            scaled = (np.clip(raw[i, name], lo, hi) - lo) / (span if span > 0 else 1.0)
            panels.append(scaled if span > 0 else np.full_like(raw[i, name], 0.5 if signed
                                                               else 0.0))
        if labels is not None:
            names += [labels[i], *columns[1:]]
        else:
            names += columns if i == 0 else [""] * len(columns)
    fig = grid(panels, names, ncols=len(columns), cmap=cmap, panel_size=panel_size)
    first_map = 1 + (masks is not None)
    panel_axes = list(fig.axes)  # one per panel, row by row (colorbars join their panel's cell)
    if colorbar:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        for k, ax in enumerate(panel_axes):
            if k % len(columns) >= first_map:
                lo, hi = ranges[k // len(columns), columns[k % len(columns)]]
                if hi <= lo:
                    lo, hi = lo - 0.5, hi + 0.5  # a constant map: a range around its value
                bar = ScalarMappable(norm=Normalize(lo, hi), cmap=_colormap(cmap))
                ax.figure.colorbar(bar, ax=ax, fraction=0.046, pad=0.02, format="%.2g")
    if masks is not None and outline is not None:
        for k, ax in enumerate(panel_axes):
            if k % len(columns) >= first_map:
                mask = masks[k // len(columns), 0].detach().float().cpu().numpy()
                if not mask.min() < 0.5 <= mask.max():
                    continue  # no outline to draw (an empty or a full mask)
                shown = ax.images[0].get_array()
                assert shown is not None  # every map panel shows an image
                h, w = shown.shape[:2]
                # the mask's pixel centres in the panel's pixel coordinates, whatever its size
                xs = (np.arange(mask.shape[1]) + 0.5) * w / mask.shape[1] - 0.5
                ys = (np.arange(mask.shape[0]) + 0.5) * h / mask.shape[0] - 0.5
                ax.contour(xs, ys, mask, levels=[0.5], colors=outline, linewidths=0.7)
    return fig


ExplainKind = Literal["gradient", "saliency", "cam"]

_EXPLAIN_TITLES: dict[str, tuple[str, str, str]] = {
    "gradient": ("image", "gradient (colour)", "gradient (gray, 99th pct)"),
    "saliency": ("image", "positive saliency", "negative saliency"),
    "cam": ("heat map", "overlay", "CAM (gray)"),
}


def explain(
    image: Tensor,
    attr: Tensor,
    kind: ExplainKind = "gradient",
    *,
    mean: Stats = IMAGENET_MEAN,
    std: Stats = IMAGENET_STD,
    cmap: str | Colormap = "hsv",
    alpha: float = 0.4,
    titles: Sequence[str] | None = None,
    panel_size: float = _PANEL_INCHES,
) -> Figure:
    """Netlens 1.x's one-call pictures of an explanation: three panels per image.

    - ``kind="gradient"`` (an input attribution: saliency, guided backprop, SmoothGrad, IG,
      guided Grad-CAM): the image; the attribution as a colour image, min-max scaled over
      ``(C, H, W)``; the grayscale map ``sum_c |a_c|`` scaled by its 99th percentile (clipped).
    - ``kind="saliency"``: the image and :func:`positive_negative_saliency`'s two parts as
      colour images.
    - ``kind="cam"`` (a CAM or an occlusion map of any size, resized bilinearly to the image):
      the heat map in ``cmap`` (the original's ``"hsv"``), the heat map blended over the image
      with weight ``alpha`` (:func:`overlay`) and the map in grayscale, min-max scaled.

    Args:
        image: ``(B, C, H, W)`` or one image ``(C, H, W)``, normalized with ``mean``/``std``.
        attr: ``(B, C', H', W')`` (or ``(C', H', W')``): ``C' = C`` input attributions for
            ``"gradient"`` and ``"saliency"``, one channel for ``"cam"``.
        kind: ``"gradient"``, ``"saliency"`` or ``"cam"``.
        mean: the mean ``image`` was normalized with; ``None`` if it was not shifted.
        std: the std ``image`` was normalized with; ``None`` if it was not scaled.
        cmap: colormap of the CAM panels.
        alpha: heat map weight of the CAM overlay.
        titles: one title per image (its first panel).
        panel_size: size of one panel in inches.

    Returns:
        A ``matplotlib.figure.Figure``, one row of three panels per image.

    Raises:
        TypeError: if ``image`` or ``attr`` is not a tensor.
        ValueError: an unknown ``kind``, or shapes that do not fit it.

    Example:
        >>> fig = explain(torch.rand(3, 8, 8), torch.randn(3, 8, 8), mean=None, std=None)
        >>> [ax.get_title() for ax in fig.axes]
        ['image', 'gradient (colour)', 'gradient (gray, 99th pct)']
    """
    if kind not in _EXPLAIN_TITLES:
        raise ValueError(f"kind must be one of {', '.join(map(repr, _EXPLAIN_TITLES))}, got "
                         f"{kind!r}")
    for value, what in ((image, "image"), (attr, "attr")):
        if not isinstance(value, Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(value).__name__}")
    images = image[None] if image.ndim == 3 else image
    attrs = attr[None] if attr.ndim == 3 else attr
    if images.ndim != 4 or attrs.ndim != 4 or attrs.shape[0] != images.shape[0]:
        raise ValueError(f"image (B, C, H, W) and attr (B, C', H', W') must have the same B; "
                         f"got {tuple(image.shape)} and {tuple(attr.shape)}")
    if kind != "cam" and attrs.shape[1:] != images.shape[1:]:
        raise ValueError(f"kind={kind!r} shows an input attribution of the image's shape "
                         f"{tuple(images.shape[1:])}, got {tuple(attrs.shape[1:])}; for a CAM "
                         "or an occlusion map use kind='cam'")
    if kind == "cam" and attrs.shape[1] != 1:
        raise ValueError(f"kind='cam' shows one-channel maps, got {attrs.shape[1]} channels")
    labels = _titles(titles, images.shape[0])
    panels: list[np.ndarray] = []
    names: list[str] = []
    for i in range(images.shape[0]):
        a = attrs[i].detach().double().cpu()
        shown = to_numpy(images[i], *_stats_for(images[i], mean, std))
        shown = np.repeat(shown, 3, axis=-1) if shown.shape[-1] == 1 else shown
        if kind == "gradient":
            colour = normalize_map(a, reduce=None, clip=None)[0]
            gray = a.abs().sum(0)
            top = _percentile(gray.flatten()[None], 99.0)[0]
            gray = (gray / top).clamp(max=1) if top > 0 else torch.zeros_like(gray)
            row = [shown, _rgb_array(colour), gray.numpy()]
        elif kind == "saliency":
            pos, neg = positive_negative_saliency(a)
            row = [shown, _rgb_array(pos), _rgb_array(neg)]
        else:
            h, w = int(images.shape[-2]), int(images.shape[-1])
            scaled = normalize_map(a, clip=None)
            if tuple(scaled.shape[-2:]) != (h, w):
                scaled = F.interpolate(scaled, size=(h, w), mode="bilinear", align_corners=False)
            gray_cam: np.ndarray = scaled[0, 0].clamp(0, 1).numpy()
            heat = np.asarray(_colormap(cmap)(gray_cam))[..., :3]
            blended = np.clip((1.0 - alpha) * shown + alpha * heat, 0.0, 1.0)
            row = [heat, blended, gray_cam]
        panels += [np.asarray(p, dtype=np.float32) for p in row]
        first = _EXPLAIN_TITLES[kind]
        names += [labels[i] if labels is not None else first[0], *first[1:]]
    return grid(panels, names, ncols=3, cmap="gray", panel_size=panel_size)


def factorization_overlay(
    image: Tensor, maps: Tensor, alpha: float = 0.6, cmap: str | Colormap = "hsv",
    mean: Stats = IMAGENET_MEAN, std: Stats = IMAGENET_STD,
) -> np.ndarray:
    """One image with its concepts painted over it (pytorch-grad-cam's
    ``show_factorization_on_image``): each concept's map scaled to [0, 1] by its maximum
    over the image; each pixel takes the colour of its strongest concept (concept ``j`` of
    ``k`` gets ``cmap(j / k)``), blended with weight ``alpha`` times that concept's scaled
    strength, so a pixel no concept claims keeps the image's colour.

    Args:
        image: ``(C, H, W)`` or ``(1, C, H, W)``, normalized with ``mean``/``std``.
        maps: ``(k, H', W')`` non-negative concept maps (one image's
            :attr:`~netlens.attribution.factorization.Factorization.maps`), resized to the image.
        alpha: the most weight of a concept's colour, in ``[0, 1]``.
        cmap: the concepts' colours.
        mean: the mean ``image`` was normalized with; ``None`` if it was not shifted.
        std: the std ``image`` was normalized with; ``None`` if it was not scaled.

    Returns:
        A float32 array ``(H, W, 3)`` in ``[0, 1]``.

    Example:
        >>> factorization_overlay(torch.rand(3, 8, 8), torch.rand(2, 4, 4), mean=None,
        ...                       std=None).shape
        (8, 8, 3)
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        raise ValueError(f"maps must be one image's concept maps (k, H', W'), got "
                         f"{getattr(maps, 'shape', type(maps).__name__)}")
    img = to_numpy(image, *_stats_for(image, mean, std))
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    h, w = img.shape[:2]
    m = maps.detach().double().cpu().clamp_min(0)
    if tuple(m.shape[-2:]) != (h, w):
        m = F.interpolate(m[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    top = m.amax(dim=(-2, -1), keepdim=True)
    m = torch.where(top > 0, m / torch.where(top > 0, top, torch.ones_like(top)),
                    torch.zeros_like(m))
    strength, which = m.max(dim=0)
    k = int(m.shape[0])
    colours = np.asarray([_colormap(cmap)(j / k)[:3] for j in range(k)])
    colour = colours[which.numpy()]
    weight = (alpha * strength.numpy())[..., None]
    return np.clip((1.0 - weight) * img + weight * colour, 0.0, 1.0).astype(np.float32)


def show_factorization(
    x: Tensor, factorization: object, *, labels: Sequence[str] | None = None, top: int = 2,
    alpha: float = 0.6, cmap: str | Colormap = "hsv", mean: Stats = IMAGENET_MEAN,
    std: Stats = IMAGENET_STD, panel_size: float = _PANEL_INCHES,
) -> Figure:
    """Deep feature factorization's concepts over each image, with each concept's classes.

    One row per image: the image and :func:`factorization_overlay`; a legend gives each
    concept's colour and, where the factorization has class scores, its ``top`` classes with
    their softmax probability (``labels[c]`` names class ``c``).

    Args:
        x: the images ``(B, C, H, W)`` that were factorized, normalized with ``mean``/``std``.
        factorization: what :func:`~netlens.attribution.factorization.deep_feature_factorization`
            returned for ``x``.
        labels: class names, indexed by class.
        top: classes named per concept.
        alpha: see :func:`factorization_overlay`.
        cmap: see :func:`factorization_overlay`.
        mean: the mean ``x`` was normalized with; ``None`` if it was not shifted.
        std: the std ``x`` was normalized with; ``None`` if it was not scaled.
        panel_size: size of one panel in inches.

    Returns:
        A ``matplotlib.figure.Figure`` with 2B axes.

    Example:
        >>> import torchvision
        >>> from netlens.attribution.factorization import deep_feature_factorization
        >>> m = torchvision.models.resnet18().eval()
        >>> x = torch.rand(1, 3, 64, 64)
        >>> len(show_factorization(x, deep_feature_factorization(m, x, k=2)).axes)
        2
    """
    from matplotlib.patches import Patch

    maps = getattr(factorization, "maps", None)
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"x must be the factorized images (B, C, H, W), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(maps, Tensor) or maps.ndim != 4 or maps.shape[0] != x.shape[0]:
        raise ValueError("factorization must be what deep_feature_factorization returned for "
                         f"these {x.shape[0]} images (its maps are (B, k, H, W))")
    k = int(maps.shape[1])
    names = [f"concept {j}" for j in range(k)]
    if getattr(factorization, "scores", None) is not None:
        for j, classes in enumerate(factorization.top_classes(top)):  # type: ignore[attr-defined]
            said = ", ".join(f"{labels[c] if labels is not None else c} {100 * p:.2g}%"
                             for c, p in classes)
            names[j] += f": {said}"
    fig, cells = _figure(int(x.shape[0]), 1, 2, panel_size)
    for i, cell in enumerate(cells):
        axes = cell.subplots(1, 2, squeeze=False)[0]
        _imshow(axes[0], to_numpy(x[i], *_stats_for(x[i], mean, std)))
        _imshow(axes[1], factorization_overlay(x[i], maps[i], alpha, cmap, mean, std))
    handles = [Patch(color=_colormap(cmap)(j / k), label=n) for j, n in enumerate(names)]
    fig.legend(handles=handles, loc="outside lower center", fontsize="small")
    return fig


def _rgb_array(t: Tensor) -> np.ndarray:
    """A ``(C, H, W)`` tensor in ``[0, 1]`` as an ``(H, W, 3)`` array (one channel repeated)."""
    arr = t.permute(1, 2, 0).numpy()
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr


def grid(
    images: Tensor | Sequence[Tensor | PIL.Image.Image | np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    *,
    mean: Stats = IMAGENET_MEAN,
    std: Stats = IMAGENET_STD,
    cmap: str | Colormap = "gray",
    panel_size: float = _PANEL_INCHES,
) -> Figure:
    """Lay out images in a grid, one panel each.

    Args:
        images: a batch ``(B, C, H, W)``, or a sequence of images, each a tensor ``(C, H, W)``,
            ``(1, C, H, W)`` or ``(H, W)`` (normalized with ``mean``/``std``), a PIL image, or a
            numpy array ``(H, W)``/``(H, W, 3|4)`` (uint8 or float in ``[0, 1]``, shown as is).
        titles: one title per image.
        ncols: panels per row; default up to 4.
        mean: the mean the tensors were normalized with; ``mean=None, std=None`` for ``[0, 1]``
            tensors such as maps from :func:`normalize_map`.
        std: the std the tensors were normalized with.
        cmap: colormap for single-channel images, over ``[0, 1]`` (``[0, 255]`` for uint8).
        panel_size: size of one panel in inches.

    Returns:
        A ``matplotlib.figure.Figure`` with one axes per image.

    Raises:
        TypeError: if an image is of an unsupported type.
        ValueError: if a shape, the titles or ``ncols`` are invalid.

    Example:
        >>> len(grid(torch.rand(3, 3, 8, 8), mean=None, std=None).axes)
        3
    """
    if isinstance(images, Tensor) and images.ndim == 3:
        images = images[None]
    if isinstance(images, Tensor) and images.ndim != 4:
        raise ValueError(
            f"a tensor of images must be (B, C, H, W), got shape {tuple(images.shape)}"
        )
    items = list(images)
    labels = _titles(titles, len(items))
    fig, cells = _figure(len(items), _ncols(ncols, len(items), 4), 1, panel_size)
    for i, (cell, img) in enumerate(zip(cells, items)):
        ax = cell.subplots()
        _imshow(ax, _display_array(img, mean, std), cmap)
        if labels is not None:
            ax.set_title(labels[i])
    return fig


# ---------------------------------------------------------------------------------------------
# helpers


def _stats_for(image: Tensor, mean: Stats, std: Stats) -> tuple[Stats, Stats]:
    """``mean, std`` for showing ``image``: the ImageNet defaults on a one-channel image (which
    cannot have been normalized with them) mean raw ``[0, 1]`` pixels."""
    channels = image.shape[-3] if image.ndim >= 3 else 1
    if channels == 1 and mean is IMAGENET_MEAN and std is IMAGENET_STD:
        return None, None
    return mean, std


def _reduced(attr: Tensor, reduce: Reduce | None) -> Tensor:
    """``attr`` (4-D) detached, float32 (float64 kept), its channels reduced."""
    a = attr.detach()
    a = a if a.dtype == torch.float64 else a.float()
    if reduce == "abs_max":
        return a.abs().amax(dim=1, keepdim=True)
    if reduce == "max":
        return a.amax(dim=1, keepdim=True)
    if reduce == "sum":
        return a.sum(dim=1, keepdim=True)
    if reduce == "mean":
        return a.mean(dim=1, keepdim=True)
    if reduce == "l2":
        return a.norm(dim=1, keepdim=True)
    if reduce is not None:
        raise ValueError(
            f"reduce must be 'abs_max', 'max', 'sum', 'mean', 'l2' or None, got {reduce!r}"
        )
    return a


def _limits(v: Tensor, signed: bool, clip: float | tuple[float, float] | None
            ) -> tuple[float, float]:
    """The display range of one map's values: ``(-m, m)`` for a signed map (``m`` the clip
    percentile of ``|v|``), else the clip percentiles of ``v`` (as :func:`normalize_map`)."""
    lo_p, hi_p = _percentiles(clip) if clip is not None else (0.0, 100.0)
    flat = v.reshape(1, -1)
    if signed:
        m = float(_percentile(flat.abs(), hi_p)[0])
        return -m, m
    return float(_percentile(flat, lo_p)[0]), float(_percentile(flat, hi_p)[0])


def _check_float(t: object, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating tensor, got dtype {t.dtype}")


def _percentiles(clip: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(clip, bool):
        raise TypeError("clip must be a percentile, a (lo, hi) pair of percentiles or None")
    lo, hi = (0.0, clip) if isinstance(clip, (int, float)) else tuple(clip)
    if not 0.0 <= lo < hi <= 100.0:
        raise ValueError(
            f"clip must be a percentile in (0, 100] or a pair 0 <= lo < hi <= 100, got {clip!r}"
        )
    return float(lo), float(hi)


def _percentile(flat: Tensor, p: float) -> Tensor:
    """Per-row percentile with linear interpolation, like ``numpy.percentile``.

    Sorting instead of ``torch.quantile``, which refuses inputs over 2**24 elements.
    """
    v = flat.sort(dim=1).values
    pos = p / 100.0 * (v.shape[1] - 1)
    i = int(pos)
    j = min(i + 1, v.shape[1] - 1)
    return torch.lerp(v[:, i], v[:, j], pos - i)


def _colormap(cmap: str | Colormap) -> Colormap:
    import matplotlib

    return matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap


def _titles(titles: Sequence[str] | str | None, n: int) -> list[str] | None:
    if titles is None:
        return None
    labels = [titles] if isinstance(titles, str) else [str(t) for t in titles]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} titles for {n} images")
    return labels


def _ncols(ncols: int | None, n: int, default: int) -> int:
    if ncols is None:
        return max(1, min(n, default))
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    return ncols


def _figure(n: int, ncols: int, per: int, panel_size: float) -> tuple[Figure, list[SubFigure]]:
    """A figure with ``n`` cells (subfigures) of ``per`` panels each, ``ncols`` cells per row."""
    from matplotlib.figure import Figure

    if n == 0:
        raise ValueError("nothing to show: got no images")
    nrows = -(-n // ncols)
    ncols = min(ncols, n)
    size = (panel_size * per * ncols, (panel_size + 0.3) * nrows)
    fig = Figure(figsize=size, layout="constrained")
    cells = fig.subfigures(nrows, ncols, squeeze=False).flatten().tolist()
    return fig, cells[:n]


def _display_array(img: object, mean: Stats, std: Stats) -> np.ndarray:
    if isinstance(img, Tensor):
        if img.ndim == 2:
            img = img[None]
        arr = to_numpy(img, *_stats_for(img, mean, std))
        return arr[..., 0] if arr.shape[-1] == 1 else arr
    if isinstance(img, PIL.Image.Image):
        return np.asarray(img if img.mode in ("L", "RGB", "RGBA") else img.convert("RGB"))
    if isinstance(img, np.ndarray):
        if img.ndim == 2 or (img.ndim == 3 and img.shape[-1] in (3, 4)):
            return img
        raise ValueError(f"numpy images must be (H, W) or (H, W, 3|4), got shape {img.shape}")
    raise TypeError(
        f"images must be torch.Tensor, PIL.Image.Image or numpy.ndarray, got {type(img).__name__}"
    )


def _imshow(ax: Axes, arr: np.ndarray, cmap: str | Colormap = "gray") -> None:
    if arr.ndim == 2:
        ax.imshow(arr, cmap=_colormap(cmap), vmin=0, vmax=255 if arr.dtype == np.uint8 else 1)
    else:
        ax.imshow(arr)
    ax.set_axis_off()
