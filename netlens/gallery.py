"""The demo's stages drawn: the demo folder (:func:`run`, :func:`write`) and the README's
figures (:func:`readme`, :func:`render`).

``netlens gallery [-o images/readme] [--small] [--seed S]`` (also ``python -m netlens.gallery``)
runs the stages of :mod:`netlens.demo` (the same code, the same parameters, the same seed) and
draws one figure per family of techniques, the methods grouped by their
:class:`~netlens.attribution.MethodSpec`:

- ``attribution.png``: the methods whose result is an input attribution, on shapes images, with
  the object outlined;
- ``rules.png``: the rule-based methods (LRP, DeepLift, excitation backprop);
- ``cams.png`` and ``cams_gradient_free.png``: the class activation maps with and without the
  model's gradients; ``occlusion.png``: the perturbation (black-box) methods beside Grad-CAM;
- ``optvis.png``: class and channel visualizations;
- ``deep_dream.png`` and ``inversion.png``: on a shapes image and on Grace Hopper's photo;
- ``style_transfer.png``: content, style, output;
- ``metrics.png``: the metric curves (when :mod:`netlens.metrics` is installed).

Nothing here is drawn by hand: rerun the command and every picture is regenerated, bit for bit
on the same versions. ``netlens demo`` (:func:`run`) fills its folder with the same stages:
PNGs, raw maps, the metric table, an offline ``index.html`` and ``manifest.json``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .demo import Context, StageResult, compute, make_context

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FIGURES", "attribution_figure", "readme", "render", "run", "save_figure",
           "stage_figure", "style_figure", "write"]

_PANEL = 1.35  # inches per picture
_DPI = 90


def attribution_figure(result: StageResult, methods: Sequence[str] | None = None, *,
                       title: str | None = None, panel: float = _PANEL) -> Figure:
    """One row per image: the image, its mask, then each method's map blended over it with the
    object outlined (:func:`netlens.plot.show_maps`, the notebooks' grid).

    Args:
        result: the demo's attribution stage.
        methods: the methods to show (default: all of them, in ``METHODS`` order).
        title: the figure's title.
        panel: inches per picture.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    from .plot import show_maps

    inputs = result.groups["input"]
    methods = [m for m in result.groups if m != "input"] if methods is None else list(methods)
    missing = [m for m in methods if m not in result.groups]
    if missing:
        raise ValueError(f"no maps for {missing} in the attribution stage; it has "
                         f"{[m for m in result.groups if m != 'input']}")
    images = torch.cat([item.image for item in inputs])
    given = [item.mask for item in inputs if item.mask is not None]
    masks = torch.cat(given) if len(given) == len(inputs) else None
    maps = {}
    for method in methods:
        cells = result.groups[method]
        assert all(c.attr is not None for c in cells)  # the method items carry maps
        maps[_nice(method)] = torch.cat([c.attr for c in cells])  # type: ignore[misc]
    fig = show_maps(images, maps, masks, titles=[item.caption for item in inputs], blend=True,
                    mean=None, std=None, outline="white", panel_size=panel)
    if title:
        fig.suptitle(title, fontsize=10)
    for ax in fig.axes:
        ax.title.set_fontsize(7)
    return fig


def stage_figure(result: StageResult, groups: Sequence[str] | None = None, *,
                 title: str | None = None, panel: float = _PANEL) -> Figure:
    """One row per group of the stage, each picture with its caption.

    Args:
        result: a demo stage.
        groups: the rows to show (default all).
        title: the figure's title.
        panel: inches per picture.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    names = list(result.groups) if groups is None else list(groups)
    rows = [result.groups[g] for g in names]
    fig, axes = _figure(len(rows), max(len(r) for r in rows), panel, title)
    for i, items in enumerate(rows):
        for j in range(axes.shape[1]):
            if j < len(items):
                _show(axes[i, j], _rgb(items[j].image), items[j].caption, items[j].mask)
            else:
                axes[i, j].set_axis_off()
    return fig


def style_figure(result: StageResult, *, panel: float = 2.0) -> Figure:
    """The issue's table as a picture: content | style | output."""
    return stage_figure(result, ["style transfer"], panel=panel,
                        title="style transfer, random-init VGG16 (no download)")


def _methods(result: StageResult, keep: Callable[[Any], bool]) -> list[str]:
    """The stage's methods (in ``METHODS`` order) whose spec passes ``keep``."""
    from .attribution import METHODS

    return [m for m in result.groups if m in METHODS and keep(METHODS[m])]


def _cams(result: StageResult) -> Figure:
    return attribution_figure(result, _methods(result, lambda s: s.family == "cam" and
                                               s.output == "map" and s.gradients),
                              title="gradient class activation maps (layer3), true class")


def _cams_gradient_free(result: StageResult) -> Figure:
    return attribution_figure(result, _methods(result, lambda s: s.family == "cam" and
                                               s.output == "map" and not s.gradients),
                              title="gradient-free class activation maps (layer3), true class")


def _gradients(result: StageResult) -> Figure:
    return attribution_figure(result, _methods(result, lambda s: s.output == "input" and
                                               s.family != "rule"),
                              title="gradient attributions, true class")


def _rules(result: StageResult) -> Figure:
    return attribution_figure(result, _methods(result, lambda s: s.family == "rule"),
                              title="rule-based attributions (LRP epsilon-plus, DeepLift, "
                                    "excitation backprop), true class")


def _occlusion(result: StageResult) -> Figure:
    # Grad-CAM, the reference beside which the perturbation maps are shown
    methods = ["gradcam", *_methods(result, lambda s: s.family == "perturbation")]
    return attribution_figure(result, methods,
                              title="perturbation methods (black-box) beside Grad-CAM")


def _metrics(result: StageResult) -> Figure:
    from . import metrics

    return metrics.plot_curves(result.table)


FIGURES: dict[str, tuple[str, Callable[[StageResult], Figure]]] = {
    "attribution.png": ("attribution", _gradients),
    "rules.png": ("attribution", _rules),
    "cams.png": ("attribution", _cams),
    "cams_gradient_free.png": ("attribution", _cams_gradient_free),
    "occlusion.png": ("attribution", _occlusion),
    "optvis.png": ("visualization", lambda r: stage_figure(
        r, title="class visualization (top) and channel visualization (bottom)")),
    "deep_dream.png": ("dream", lambda r: stage_figure(
        r, ["dream: shapes", "dream: photo"], title="deep dream, shapes model", panel=1.6)),
    "inversion.png": ("dream", lambda r: stage_figure(
        r, ["inversion: shapes", "inversion: photo"], title="feature inversion, shapes model",
        panel=1.6)),
    "style_transfer.png": ("style", style_figure),
    "metrics.png": ("metrics", _metrics),
}
"""README picture name -> (the demo stage it draws, the figure function)."""


def render(results: dict[str, StageResult], out_dir: str | Path, *, dpi: int = _DPI,
           names: Sequence[str] | None = None) -> list[Path]:
    """Draws every figure whose stage is in ``results`` into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (stage, draw) in FIGURES.items():
        if (names is not None and name not in names) or stage not in results:
            continue
        if stage == "metrics" and not any(getattr(results[stage].table, "curves", {}).values()):
            continue
        written.append(save_figure(draw(results[stage]), out / name, dpi=dpi))
    return written


def save_figure(fig: Figure, path: str | Path, *, dpi: int = _DPI) -> Path:
    """Saves a figure as a 256-colour PNG: a third of the size of matplotlib's, same look.

    Args:
        fig: a matplotlib figure.
        path: the PNG to write (its folder must exist).
        dpi: resolution.

    Returns:
        The path written.
    """
    import io

    import PIL.Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    with PIL.Image.open(buffer) as image:
        rgb = image.convert("RGB")
    rgb.quantize(256, dither=PIL.Image.Dither.NONE).save(path, format="PNG", optimize=True)
    return Path(path)


def write(out_dir: str | Path, results: dict[str, StageResult], ctx: Context, *,
          command: str = "netlens demo", summary: bool = True) -> Path:
    """Writes the demo folder: every picture (PNG), raw array (``.npy``) and table, the summary
    picture ``shapes_demo.png``, ``index.html`` and ``manifest.json``.

    Args:
        out_dir: the folder (created if missing).
        results: the stages' results, from :func:`netlens.demo.compute`.
        ctx: the context they were computed in (seed, device, settings).
        command: the command line recorded in the manifest.
        summary: also draw ``shapes_demo.png`` (every attribution method at a glance).

    Returns:
        The path of ``manifest.json``.
    """
    from .export import save_array, save_image, save_overlay, write_html, write_manifest

    out = Path(out_dir)
    files: list[dict[str, Any]] = []
    sections = []
    for stage, res in results.items():
        rows = []
        for group, items in res.groups.items():
            row = []
            for item in items:
                rel = f"{stage}/{item.name}.png"
                if item.attr is None:
                    save_image(out / rel, item.image)
                else:
                    save_overlay(out / rel, item.image, item.attr, outline=item.mask)
                files.append({**item.params, "path": rel, "kind": "image", "stage": stage,
                              "group": group})
                row.append({"src": rel, "caption": item.caption})
            rows.append({"label": group, "items": row})
        for name, array in res.arrays.items():
            rel = f"{stage}/{name}.npy"
            save_array(out / rel, array)
            files.append({"path": rel, "kind": "array", "stage": stage, "method": name,
                          "shape": list(array.shape), "dtype": str(array.dtype)})
        section: dict[str, Any] = {"title": res.title,
                                   "text": f"{res.text} ({res.seconds:.1f} s)", "rows": rows}
        if res.table is not None:
            section["table"], curves = _write_table(out, res.table, files)
            if curves:
                rows.append({"label": "mean curves", "items": [
                    {"src": curves, "caption": "deletion and insertion curves", "width": 600}]})
        sections.append(section)
    if summary and "attribution" in results:
        # every method in one row per image: small panels keep it under 4,000 pixels wide
        save_figure(attribution_figure(results["attribution"], panel=0.8), out / "shapes_demo.png",
                    dpi=72)
        files.append({"path": "shapes_demo.png", "kind": "image", "stage": "summary"})
        sections.insert(0, {"title": "Summary", "rows": [{"items": [
            {"src": "shapes_demo.png", "caption": "every attribution method at a glance",
             "width": 1100}]}]})
    write_html(out / "index.html", title="netlens demo", sections=sections,
               intro=f"The shipped shapes model (netlens.zoo.shapes_model) on fresh images, seed "
                     f"{ctx.seed}. Every file is listed in manifest.json.")
    files.append({"path": "index.html", "kind": "html", "stage": "gallery"})
    return write_manifest(out, command=command, seed=ctx.seed, files=files, device=ctx.device,
                          params=ctx.settings,
                          extra={"seconds": {k: round(r.seconds, 2) for k, r in results.items()}})


def _write_table(out: Path, table: Any, files: list[dict[str, Any]],
                 ) -> tuple[dict[str, Any], str | None]:
    """Writes the metric table as Markdown and JSON, and its curves; returns the table for the
    HTML page and the curves' picture (None without curves)."""
    import json

    from . import metrics

    records = [dict(r) for r in table]
    (out / "metrics").mkdir(parents=True, exist_ok=True)
    (out / "metrics/metrics.md").write_text(table.to_markdown() + "\n", encoding="utf-8")
    (out / "metrics/metrics.json").write_text(json.dumps(records, indent=1, default=str) + "\n",
                                              encoding="utf-8")
    files += [{"path": "metrics/metrics.md", "kind": "table", "stage": "metrics"},
              {"path": "metrics/metrics.json", "kind": "table", "stage": "metrics"}]
    curves = None
    if any(getattr(table, "curves", {}).values()):
        curves = "metrics/curves.png"
        metrics.plot_curves(table).savefig(out / curves, dpi=72)  # lines: no quantizing
        files.append({"path": curves, "kind": "image", "stage": "metrics"})
    rows = [[r.get(c, "") for c in table.columns] for r in records]
    return {"columns": table.headers, "rows": rows}, curves



def run(out_dir: str | Path = "netlens_demo", *, small: bool = False, seed: int = 2026,
        device: str | torch.device = "cpu", progress: bool | None = True) -> Path:
    """Runs every stage of the demo and writes its folder (what ``netlens demo`` does).

    Args:
        out_dir: the output folder (created if missing).
        small: the reduced run (fewer images and steps, smaller pictures), for tests.
        seed: the seed of the images and of every random draw.
        device: where the model runs, e.g. ``"cuda"``.
        progress: a progress bar per stage (None: only for slow stages).

    Returns:
        The path of ``manifest.json``.
    """
    ctx = make_context(small=small, seed=seed, device=device, progress=progress)
    return write(out_dir, compute(ctx), ctx,
                 command=f"netlens demo -o {out_dir}" + (" --small" if small else ""))


def readme(out_dir: str | Path = "images/readme", *, small: bool = False, seed: int = 2026,
           device: str | torch.device = "cpu", progress: bool | None = True) -> list[Path]:
    """Runs the demo's stages and draws the README's figures (what ``netlens gallery`` does).

    Args:
        out_dir: the output folder (created if missing).
        small: the demo's reduced run.
        seed: the seed of the images and of every random draw (the README's: 2026).
        device: where the model runs (the README's pictures: the CPU).
        progress: a progress bar per stage.

    Returns:
        The paths of the pictures written.
    """
    ctx = make_context(small=small, seed=seed, device=device, progress=progress)
    return render(compute(ctx), out_dir)


# ---------------------------------------------------------------------------------------------
# helpers


def _figure(rows: int, cols: int, panel: float, title: str | None) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel * cols, (panel + 0.35) * rows + (0.3 if title else 0)),
                 layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, axes


def _rgb(image: Any) -> np.ndarray:
    return image[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _show(ax: Axes, picture: np.ndarray, caption: str | None, mask: Any = None) -> None:
    ax.imshow(picture, interpolation="nearest")
    if mask is not None:
        ax.contour(mask[0, 0].float().cpu().numpy(), levels=[0.5], colors="white",
                   linewidths=0.7)
    if caption:
        ax.set_title(caption, fontsize=7)
    ax.set_axis_off()


def _nice(method: str) -> str:
    return method.replace("_", " ").replace("gradcam", "grad-cam")


if __name__ == "__main__":  # python -m netlens.gallery ARGS = netlens gallery ARGS
    from .cli import main

    sys.exit(main(["gallery", *sys.argv[1:]]))
