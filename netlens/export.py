"""Write results to disk: images and overlays as PNG, raw maps as ``.npy``, and a manifest.

The demo, the README gallery and the command line write their outputs through these functions,
so every folder they fill looks the same: PNG pictures written with PIL (no matplotlib figure,
so thousands of them stay cheap), the raw tensors beside them for anyone who wants to recompute,
and one ``manifest.json`` that records the versions, the seed, every parameter and every file.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> save_image(folder / "noise.png", torch.rand(3, 8, 8)).name
    'noise.png'
    >>> manifest = write_manifest(folder, command="doctest", params={}, seed=0,
    ...                           files=[{"path": "noise.png", "kind": "image"}])
    >>> json.loads(manifest.read_text())["files"][0]["path"]
    'noise.png'
"""

from __future__ import annotations

import html
import json
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import PIL.Image
import torch
from torch import Tensor

__all__ = [
    "FILE_KINDS", "save_array", "save_image", "save_overlay", "write_html", "write_manifest",
]

FILE_KINDS = frozenset({"image", "array", "html", "table"})
"""The values a manifest record's ``"kind"`` may take."""


def save_image(path: str | os.PathLike[str], image: Tensor) -> Path:
    """Write an image tensor with values in ``[0, 1]`` as a PNG.

    Args:
        path: the file to write (its folder is created if missing); should end in ``.png``.
        image: ``(C, H, W)`` or ``(1, C, H, W)`` with ``C`` in 1, 3, floating, values in
            ``[0, 1]`` (clamped), on any device.

    Returns:
        The path written, as a :class:`~pathlib.Path`.

    Raises:
        TypeError: if ``image`` is not a floating tensor.
        ValueError: if ``image`` is not one image with 1 or 3 channels, or not finite.
    """
    arr = _image_array(image, "image")
    return _write_png(path, arr)


def save_overlay(
    path: str | os.PathLike[str],
    image: Tensor,
    attr: Tensor,
    *,
    mean: Any = None,
    std: Any = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    outline: Tensor | None = None,
    outline_color: tuple[int, int, int] = (255, 255, 255),
) -> Path:
    """Write a raw attribution as a heatmap blended over its image, as a PNG.

    The map is normalized for display only, as :func:`netlens.plot.overlay` does (channels
    reduced by ``max |a_c|``, clipped at the 99th percentile, scaled to ``[0, 1]``, upsampled to
    the image's size); nothing else is changed.

    Args:
        path: the file to write (its folder is created if missing).
        image: ``(C, H, W)`` or ``(1, C, H, W)``, normalized with ``mean``/``std``.
        attr: the raw attribution ``(C', H', W')`` or ``(1, C', H', W')``, any size.
        mean: the mean ``image`` was normalized with; ``None`` for raw ``[0, 1]`` pixels.
        std: the std ``image`` was normalized with; ``None`` for raw ``[0, 1]`` pixels.
        cmap: a matplotlib colormap name.
        alpha: weight of the heatmap, in ``[0, 1]``.
        outline: an optional mask ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)`` (bool or float)
            whose boundary is drawn in ``outline_color``, e.g. the ground-truth object.
        outline_color: RGB colour of the outline, 0..255.

    Returns:
        The path written.

    Raises:
        TypeError: if ``image``, ``attr`` or ``outline`` is not a tensor.
        ValueError: if a shape or ``alpha`` is invalid.
    """
    from .plot import overlay

    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if not isinstance(attr, Tensor):
        raise TypeError(f"attr must be a torch.Tensor, got {type(attr).__name__}")
    img = image.detach()
    img = img[0] if img.ndim == 4 and img.shape[0] == 1 else img
    a = attr.detach()
    a = a[0] if a.ndim == 4 and a.shape[0] == 1 else a
    if a.ndim != 3 and a.ndim != 2:
        raise ValueError(f"attr must be one map (C', H', W') or (1, C', H', W'), got shape "
                         f"{tuple(attr.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError("attr contains NaN or infinite values; nothing sensible to display")
    blended = overlay(img.float().cpu(), a.float().cpu(), alpha, cmap, mean, std)
    arr = (blended * 255.0).round().astype(np.uint8)
    if outline is not None:
        arr = _draw_outline(arr, outline, outline_color)
    return _write_png(path, arr)


def save_array(path: str | os.PathLike[str], tensor: Tensor | np.ndarray) -> Path:
    """Write a raw tensor as a ``.npy`` file (detached, on the CPU, its own dtype).

    Args:
        path: the file to write (its folder is created if missing); should end in ``.npy``.
        tensor: any tensor or numpy array.

    Returns:
        The path written.

    Raises:
        TypeError: if ``tensor`` is neither a tensor nor an array.
    """
    if isinstance(tensor, Tensor):
        arr = tensor.detach().cpu().numpy()
    elif isinstance(tensor, np.ndarray):
        arr = tensor
    else:
        raise TypeError(f"tensor must be a torch.Tensor or numpy.ndarray, got "
                        f"{type(tensor).__name__}")
    out = _prepare(path)
    np.save(out, arr, allow_pickle=False)
    return out


def write_manifest(
    out_dir: str | os.PathLike[str],
    *,
    command: str | Sequence[str],
    params: Mapping[str, Any],
    seed: int | None,
    files: Sequence[Mapping[str, Any]],
    device: str | torch.device | None = None,
    extra: Mapping[str, Any] | None = None,
    check: bool = True,
) -> Path:
    """Write ``out_dir/manifest.json``: what was run, with which versions, and what came out.

    The file is written to a temporary file in ``out_dir`` and renamed over ``manifest.json``,
    so the folder holds the previous manifest or the new one, never a half-written one.

    Args:
        out_dir: the output folder; every record's path is relative to it.
        command: the command line that produced the folder (a string or its argv list).
        params: every parameter of the run (values that JSON cannot hold are written as
            ``str(value)``).
        seed: the seed of the run, or None.
        files: one record per output: ``{"path": relative path, "kind": "image" | "array" |
            "html" | "table", "stage": ..., "method": ..., any parameters}``.
        device: the device the run used; default ``params["device"]``, else ``"cpu"``.
        extra: more top-level entries, e.g. timings.
        check: raise if a listed file does not exist.

    Returns:
        The path of ``manifest.json``.

    Raises:
        ValueError: a record without ``path`` or with an unknown ``kind``, an absolute path or
            one that leaves ``out_dir``.
        FileNotFoundError: with ``check=True``, a listed file that is missing.
    """
    import torchvision

    from ._version import __version__

    out = Path(out_dir)
    records = []
    for i, record in enumerate(files):
        if "path" not in record or record.get("kind") not in FILE_KINDS:
            raise ValueError(f"files[{i}] must have a 'path' and a 'kind' in "
                             f"{sorted(FILE_KINDS)}, got {dict(record)!r}")
        rel = Path(record["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"files[{i}]['path'] must be relative to out_dir and inside it, got "
                             f"{str(rel)!r}")
        if check and not (out / rel).is_file():
            raise FileNotFoundError(f"files[{i}]: {out / rel} does not exist; write it before "
                                    "the manifest, or pass check=False")
        records.append({**record, "path": rel.as_posix()})
    if device is None:
        device = params.get("device", "cpu")
    manifest = {
        "command": command if isinstance(command, str) else " ".join(map(str, command)),
        "versions": {"netlens": __version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "platform": platform.platform(),
        "device": str(device),
        "seed": seed,
        "params": dict(params),
        **(dict(extra) if extra else {}),
        "files": records,
    }
    path = _prepare(out / "manifest.json")
    _replace_atomically(path, json.dumps(manifest, indent=1, default=_jsonable,
                                         ensure_ascii=False) + "\n")
    return path


def write_html(
    path: str | os.PathLike[str],
    *,
    title: str,
    sections: Sequence[Mapping[str, Any]],
    intro: str = "",
    display_size: int = 128,
) -> Path:
    """Write a static, self-contained gallery page: no template engine, no network.

    Images are referenced by paths relative to the page, so the folder can be moved, zipped or
    opened from disk. A small inline script counts, on ``load``, the images that loaded
    (``complete`` with a ``naturalWidth``) and writes ``data-loaded="k/n"`` on ``<body>``, which
    a headless browser can read back.

    Args:
        path: the HTML file to write.
        title: the page title.
        sections: each ``{"title": str, "text": str (optional), "rows": [{"label": str,
            "items": [{"src": relative path, "caption": str, "width": optional CSS px}]}]
            (optional), "table":
            {"columns": [str], "rows": [[value]]} (optional)}``.
        intro: a paragraph under the title.
        display_size: the width in CSS pixels images are shown at (small pictures are scaled
            up without smoothing).

    Returns:
        The path written.

    Raises:
        ValueError: an image ``src`` that is absolute or a URL.
    """
    esc = html.escape
    parts = [f"<h1>{esc(title)}</h1>"]
    if intro:
        parts.append(f"<p>{esc(intro)}</p>")
    for section in sections:
        parts.append(f"<section><h2>{esc(section['title'])}</h2>")
        if section.get("text"):
            parts.append(f"<p>{esc(section['text'])}</p>")
        for row in section.get("rows", ()):
            parts.append('<div class="row">')
            if row.get("label"):
                parts.append(f'<div class="label">{esc(row["label"])}</div>')
            for item in row["items"]:
                src = str(item["src"])
                if "://" in src or src.startswith(("/", "\\")) or Path(src).is_absolute():
                    raise ValueError(f"image src must be relative to the page, got {src!r}")
                caption = esc(item.get("caption", "")).replace("\n", "<br>")
                alt = esc(str(item.get("caption", src)).replace("\n", " "))
                width = int(item.get("width", display_size))
                wide = ' style="max-width: none"' if width > display_size else ""
                parts.append(f'<figure{wide}><img src="{esc(quote(src))}" alt="{alt}" '
                             f'width="{width}"><figcaption>{caption}</figcaption></figure>')
            parts.append("</div>")
        table = section.get("table")
        if table:
            head = "".join(f"<th>{esc(str(c))}</th>" for c in table["columns"])
            body = "".join("<tr>" + "".join(f"<td>{esc(_cell(v))}</td>" for v in r) + "</tr>"
                           for r in table["rows"])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        parts.append("</section>")
    page = _PAGE.format(title=esc(title), body="\n".join(parts))
    out = _prepare(path)
    out.write_text(page, encoding="utf-8")
    return out


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
h2 {{ border-bottom: 1px solid #ccc; margin-top: 1.6em; }}
.row {{ display: flex; flex-wrap: wrap; align-items: flex-start; gap: 8px; margin: 6px 0; }}
.label {{ width: 10em; font-weight: bold; padding-top: 2em; }}
figure {{ margin: 0; text-align: center; font-size: 11px; max-width: 160px; }}
img {{ image-rendering: pixelated; height: auto; max-width: 100%; border: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
</style>
</head>
<body data-loaded="pending">
{body}
<p id="status"></p>
<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (im) {{ return im.complete && im.naturalWidth > 0; }});
  var status = loaded.length + "/" + images.length;
  document.body.setAttribute("data-loaded", status);
  document.getElementById("status").textContent = status + " images loaded";
}});
</script>
</body>
</html>
"""


# ---------------------------------------------------------------------------------------------
# helpers


def _prepare(path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _replace_atomically(path: Path, text: str) -> None:
    """Writes ``text`` to a temporary file beside ``path`` and renames it over ``path``, so that
    a reader (or a run interrupted mid-write) sees the old file or the new one, never half."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plain open() would have made it, not mkstemp's 600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_png(path: str | os.PathLike[str], arr: np.ndarray) -> Path:
    out = _prepare(path)
    PIL.Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(out, format="PNG",
                                                                            optimize=True)
    return out


def _image_array(image: object, name: str) -> np.ndarray:
    """One image tensor ``([1,] C, H, W)`` in [0, 1] -> a uint8 ``(H, W, C)`` array."""
    if not isinstance(image, Tensor) or not image.is_floating_point():
        raise TypeError(f"{name} must be a floating torch.Tensor (C, H, W) in [0, 1], got "
                        f"{type(image).__name__ if not isinstance(image, Tensor) else image.dtype}")
    x = image.detach()
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"{name} must be one image (C, H, W) or (1, C, H, W) with C in 1, 3, "
                         f"got shape {tuple(image.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    arr = (x.float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0)
    return arr.cpu().numpy()


def _draw_outline(arr: np.ndarray, mask: object, color: tuple[int, int, int]) -> np.ndarray:
    """Paint the boundary pixels of ``mask`` (inside pixels with an outside 4-neighbour)."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"outline must be a torch.Tensor mask, got {type(mask).__name__}")
    m = mask.detach().cpu()
    while m.ndim > 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or tuple(m.shape) != arr.shape[:2]:
        raise ValueError(f"outline must be a mask (H, W) of the image's size {arr.shape[:2]}, got "
                         f"shape {tuple(mask.shape)}")
    inside = (m > 0.5).numpy() if m.is_floating_point() else m.bool().numpy()
    padded = np.pad(inside, 1, mode="edge")
    all_in = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    edge = inside & ~all_in
    out = arr.copy()
    out[edge] = np.asarray(color, dtype=np.uint8)
    return out


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.3f}"
    return str(value)


def _jsonable(value: object) -> Any:
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if isinstance(value, Tensor) and value.numel() <= 16:
        return value.tolist()
    return str(value)

