"""The demo's stages: every technique of netlens on the shipped shapes model, computed.

``netlens demo [-o DIR] [--small] [--seed S] [--device D] [--quiet]`` (also
``python -m netlens.demo``, ``python3 tasks.py demo``) runs, on fresh images of the synthetic
shapes dataset that :func:`netlens.zoo.shapes_model` never saw and on Grace Hopper's photo:

1. ``attribution/``: every method of :data:`netlens.attribution.METHODS`, as overlays with the
   ground-truth object outlined, and the raw maps (``.npy``);
2. ``visualization/``: class visualization of each shapes class, and channels of the last layers;
3. ``dream/``: deep dream and feature inversion, on a shapes image and on the photo;
4. ``style/``: style transfer at a small size (random-init VGG16 with a fixed seed, a drawn style);
5. ``metrics/``: the evaluation table of :func:`netlens.metrics.compare` (when it is installed),

then ``shapes_demo.png`` (a summary picture), ``index.html`` (a gallery that works offline) and
``manifest.json`` (versions, seed, every parameter, every file). This module computes the
stages (:func:`make_context`, :data:`STAGES`, :func:`compute`); :mod:`netlens.gallery` draws
them: :func:`netlens.gallery.run` writes the demo folder, :func:`netlens.gallery.readme` the
README's figures.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .zoo import ShapesNet

__all__ = ["Context", "Item", "StageResult", "STAGES", "compute", "make_context", "mosaic",
           "settings"]

# Methods whose raw map is compared in the metrics stage (a cheap, representative subset).
_METRIC_METHODS = ("saliency", "integrated_gradients", "guided_backprop", "gradcam", "occlusion",
                   "random")


def settings(small: bool = False) -> dict[str, Any]:
    """Every parameter of the demo: the full run, or the reduced one (``small``) for the tests."""
    return {
        "images": 2 if small else 4,
        "image_size": 64,
        "methods": {
            "smooth_grad": {"n": 4 if small else 16, "sigma": 0.15},
            "integrated_gradients": {"steps": 8 if small else 32},
            "occlusion": {"window": 16 if small else 8, "stride": 8 if small else 4},
            "sscam": {"n": 2 if small else 8},
            "iscam": {"n": 2 if small else 8},
            "rise": {"n": 64 if small else 1000},
            "lime": {"n": 32 if small else 300},
            "kernel_shap": {"n": 32 if small else 300},
            "shapley_sampling": {"n_permutations": 2 if small else 8},
            "extremal_perturbation": {"steps": 8 if small else 100},
            "guided_ig": {"steps": 8 if small else 32},
            "noise_tunnel": {"n": 4 if small else 16},
        },
        "visualization": {"size": 32 if small else 64, "steps": 8 if small else 64,
                          "layer3_channels": 2 if small else 4,
                          "layer2_channels": 1 if small else 2},
        "deep_dream": {"layer": "layer2", "octaves": 2 if small else 3,
                       "steps": 3 if small else 10},
        "inversion": {"layers": ["layer1", "layer3"], "steps": 10 if small else 96},
        "photo_size": 48 if small else 128,
        "style": {"size": 32 if small else 80, "style_size": 48 if small else 120,
                  "steps": 5 if small else 40, "style_weight": 1e5, "tv_weight": 0.1,
                  "optimizer": "lbfgs", "arch": "torchvision vgg16().features, random init"},
        "metrics": {"images": 4 if small else 16,
                    "methods": ["saliency", "gradcam", "random"] if small else
                    list(_METRIC_METHODS),
                    "options": {"integrated_gradients": {"steps": 16},
                                "occlusion": {"window": 16, "stride": 8}},
                    "steps": 8 if small else 16},
    }


@dataclass
class Item:
    """One picture of a stage: an image, or an attribution ``attr`` over its image."""

    name: str
    caption: str
    image: Tensor
    attr: Tensor | None = None
    mask: Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageResult:
    """What one stage produced: pictures in rows (``groups``), raw arrays, maybe a table."""

    name: str
    title: str
    text: str
    groups: dict[str, list[Item]] = field(default_factory=dict)
    arrays: dict[str, Tensor] = field(default_factory=dict)
    table: Any = None
    seconds: float = 0.0


@dataclass
class Context:
    """The shared inputs of the stages: the model, the images, the settings, the seed."""

    model: torch.nn.Module
    batch: Any  # netlens.data.ShapesBatch on the device
    photo: Tensor
    photo_source: str
    settings: dict[str, Any]
    seed: int
    device: torch.device
    progress: bool | None

    def generator(self, k: int, device: torch.device | None = None) -> torch.Generator:
        """A fresh generator for the ``k``-th random draw of the run."""
        return torch.Generator(device=device or "cpu").manual_seed(self.seed * 1000 + k)


def make_context(*, small: bool = False, seed: int = 2026, device: str | torch.device = "cpu",
                 progress: bool | None = True) -> Context:
    """Loads the shapes model, draws fresh shapes images and loads the photo."""
    from .data import example_photo, make_shapes
    from .flat_model import FlatModel
    from .zoo import shapes_model

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    dev = torch.device(device)
    conf = settings(small)
    model = FlatModel(shapes_model(device=dev))
    batch = make_shapes(max(conf["images"], conf["metrics"]["images"]), size=conf["image_size"],
                        seed=seed, device=dev)
    photo, source = example_photo(conf["photo_size"])
    return Context(model, batch, photo.to(dev), source, conf, seed, dev, progress)


def attribution_stage(ctx: Context) -> StageResult:
    """Every method of ``METHODS`` on the first images, the true class as target."""
    from .attribution import METHODS
    from .data import SHAPES_CLASSES

    n = ctx.settings["images"]
    x, labels, masks = ctx.batch.images[:n], ctx.batch.labels[:n], ctx.batch.masks[:n]
    with torch.no_grad():
        probs = ctx.model(x).softmax(1)
    res = StageResult("attribution", "Attribution maps",
                      "Every attribution method on fresh shapes images (target: the true class), "
                      "blended over the image; the white line outlines the object. CAMs and "
                      "occlusion are (B, 1, H, W), the gradient methods (B, 3, H, W).")
    res.groups["input"] = [
        Item(f"input_{i}", f"true {SHAPES_CLASSES[int(t)]}\npred "
             f"{SHAPES_CLASSES[int(p.argmax())]} ({float(p.max()):.2f})", x[i:i + 1],
             mask=masks[i:i + 1], params={"label": int(t), "pred": int(p.argmax())})
        for i, (t, p) in enumerate(zip(labels, probs))]
    res.arrays["masks"] = masks
    with _bar(len(METHODS), ctx, "attribution") as bar:
        for k, (name, spec) in enumerate(METHODS.items()):
            options = dict(ctx.settings["methods"].get(name, {}))
            extra: dict[str, Any] = {}
            if spec.progress:
                extra["progress"] = False
            if spec.stochastic:
                extra["generator"] = ctx.generator(k, x.device)
            start = time.perf_counter()
            maps = spec(ctx.model, x, labels, **options, **extra).detach()
            seconds = time.perf_counter() - start
            res.arrays[name] = maps
            family = spec.family
            res.groups[name] = [
                Item(f"{name}_{i}", f"{name}, image {i}\n{_describe(options)}", x[i:i + 1],
                     maps[i:i + 1],
                     mask=masks[i:i + 1], params={"method": name, "family": family, **options,
                                                  "seconds": round(seconds, 3)})
                for i in range(n)]
            bar.update()
    return res


def visualization_stage(ctx: Context) -> StageResult:
    """Class visualization of every class; channels of ``layer3`` (the classifier's strongest
    channel per class) and of ``layer2`` (the most active on the images)."""
    from .data import SHAPES_CLASSES
    from .generate import NetDreamer

    conf = ctx.settings["visualization"]
    dreamer = NetDreamer(ctx.model)
    fc = _fc_weight(ctx)
    top3 = [int(c) for c in fc.argmax(1)][:conf["layer3_channels"]]
    acts = dreamer.features(ctx.batch.images, "layer2").mean((0, 2, 3))
    top2 = [int(c) for c in acts.argsort(descending=True)[:conf["layer2_channels"]]]
    jobs: list[tuple[str, str, int, str]] = [("class", "fc", c, f"class {name}")
                                             for c, name in enumerate(SHAPES_CLASSES)]
    jobs += [("channel", "layer3", c, f"layer3 channel {c}\n({SHAPES_CLASSES[k]} witness)")
             for k, c in enumerate(top3)]
    jobs += [("channel", "layer2", c, f"layer2 channel {c}\n(most active)") for c in top2]
    res = StageResult("visualization", "Feature visualization",
                      "Images optimized from 1/f noise (Fourier parameterization, colour "
                      "decorrelation, random jitter/scale/rotation) to raise a class logit or "
                      "the mean activation of one channel.")
    opts = {"size": conf["size"], "steps": conf["steps"], "progress": False}
    with _bar(len(jobs), ctx, "visualization") as bar:
        for k, (kind, layer, c, caption) in enumerate(jobs):
            g = ctx.generator(100 + k)
            if kind == "class":
                image = dreamer.class_visualization(c, generator=g, **opts)
                with torch.no_grad():
                    p = ctx.model(image).softmax(1)[0, c]
                caption += f"\np = {float(p):.2f}"
            else:
                image = dreamer.channel_visualization(layer, c, generator=g, **opts)
            group = "classes" if kind == "class" else "channels"
            name = f"class_{SHAPES_CLASSES[c]}" if kind == "class" else f"{layer}_ch{c}"
            res.groups.setdefault(group, []).append(
                Item(name, caption, image, params={"what": kind, "layer": layer, "index": c,
                                                   "size": conf["size"], "steps": conf["steps"]}))
            bar.update()
    return res


def dream_stage(ctx: Context) -> StageResult:
    """Deep dream (a whole layer, one channel) and feature inversion, on a shapes image and on
    the photo."""
    from .data import SHAPES_CLASSES
    from .generate import NetDreamer

    dd, inv = ctx.settings["deep_dream"], ctx.settings["inversion"]
    dreamer = NetDreamer(ctx.model)
    plus = int(_fc_weight(ctx)[SHAPES_CLASSES.index("plus")].argmax())
    shapes = ctx.batch.images[:1]
    small_photo = _resize(ctx.photo, max(32, ctx.settings["photo_size"] * 3 // 4))
    res = StageResult("dream", "Deep dream and feature inversion",
                      f"Deep dream amplifies what a layer (or one channel) sees, coarse to fine "
                      f"over octaves; feature inversion starts from noise and matches a layer's "
                      f"features. Shapes model; the photo is {ctx.photo_source}.")
    res.groups = {"dream: shapes": [Item("shapes_input", "shapes image", shapes)],
                  "dream: photo": [Item("photo_input", "photo", ctx.photo)],
                  "inversion: shapes": [Item("shapes_input_inv", "shapes image", shapes)],
                  "inversion: photo": [Item("photo_input_small", "photo", small_photo)]}
    # (what, source, image, layer, channel)
    jobs = [("dream", "shapes", shapes, dd["layer"], None), ("dream", "shapes", shapes, "layer3",
                                                               plus),
            ("dream", "photo", ctx.photo, dd["layer"], None)]
    jobs += [("inversion", "shapes", shapes, layer, None) for layer in inv["layers"]]
    jobs += [("inversion", "photo", small_photo, "layer1", None)]
    with _bar(len(jobs), ctx, "dream + inversion") as bar:
        for k, (what, source, x, layer, channel) in enumerate(jobs):
            g = ctx.generator(200 + k)
            if what == "dream":
                params = {"octaves": dd["octaves"], "steps": dd["steps"]}
                image = dreamer.deep_dream(x, layer, channel, generator=g, progress=False,
                                           **params)
            else:
                params = {"steps": inv["steps"]}
                image = dreamer.inverted_image(x, layer, generator=g, progress=False, **params)
            where = layer + ("" if channel is None else f" channel {channel}")
            res.groups[f"{what}: {source}"].append(
                Item(f"{what}_{source}_{where.replace(' ', '_')}",
                     f"{'dream' if what == 'dream' else 'inverted'}, {where}", image,
                     params={"what": what, "source": source, "layer": layer,
                             "channel": channel, **params}))
            bar.update()
    return res


def style_stage(ctx: Context) -> StageResult:
    """Style transfer of the photo to a drawn mosaic, random-init VGG16 (fixed seed)."""
    from .style_transfer import StyleTransferModule, generate_style_transfer

    conf = ctx.settings["style"]
    with _bar(conf["steps"] + 1, ctx, "style transfer") as bar:
        vgg = _random_vgg16_features(ctx.seed).to(ctx.device)
        content = _resize(ctx.photo, conf["size"])
        style = mosaic(conf["style_size"], generator=ctx.generator(300)).to(ctx.device)
        module = StyleTransferModule(vgg, content, style_target=style)
        bar.update()
        out = generate_style_transfer(module, num_steps=conf["steps"],
                                      style_weight=conf["style_weight"],
                                      tv_weight=conf["tv_weight"], optimizer=conf["optimizer"],
                                      progress=False, callback=lambda *_: bar.update())
        losses = {k: float(v) for k, v in module.losses(out).items()}
    res = StageResult("style", "Style transfer",
                      "Gatys et al.: the photo's content, the drawn mosaic's Gram matrices, "
                      "L-BFGS on the pixels, on a random-init VGG16 with a fixed seed (no "
                      "download): colours and strokes transfer, not painterly forms.")
    params = {k: v for k, v in conf.items()}
    res.groups["style transfer"] = [
        Item("content", "content", content), Item("style", "style (drawn mosaic)", style),
        Item("output", f"output, {conf['steps']} L-BFGS steps", out,
             params={**params, "losses": losses})]
    return res


def metrics_stage(ctx: Context) -> StageResult | None:
    """:func:`netlens.metrics.compare` on fresh images with their masks; None where
    ``netlens.metrics`` is not installed."""
    if importlib.util.find_spec("netlens.metrics") is None:
        return None
    from . import metrics

    conf = ctx.settings["metrics"]
    n = conf["images"]
    table = metrics.compare(ctx.model, ctx.batch.images[:n], ctx.batch.labels[:n],
                            methods=tuple(conf["methods"]), masks=ctx.batch.masks[:n],
                            options=conf["options"],
                            metric_options={m: {"steps": conf["steps"]}
                                            for m in ("deletion", "insertion")},
                            progress=ctx.progress, generator=ctx.generator(400))  # its own bar
    return StageResult("metrics", "Which explanation to trust",
                       f"netlens.metrics.compare on {n} fresh shapes images with their object "
                       "masks.", table=table)


STAGES: dict[str, Callable[[Context], StageResult | None]] = {
    "attribution": attribution_stage, "visualization": visualization_stage,
    "dream": dream_stage, "style": style_stage, "metrics": metrics_stage,
}
"""The demo's stages, in order; each maps a :class:`Context` to its result."""


def compute(ctx: Context, stages: Sequence[str] | None = None) -> dict[str, StageResult]:
    """Runs the stages (all by default); a stage that has nothing to run is left out."""
    results = {}
    for name in STAGES if stages is None else stages:
        start = time.perf_counter()
        result = STAGES[name](ctx)
        if result is not None:
            result.seconds = time.perf_counter() - start
            results[name] = result
    return results


def mosaic(size: int, tiles: int = 40, *, generator: torch.Generator) -> Tensor:
    """A drawn style image ``(1, 3, size, size)``: coloured tiles around random points (each pixel
    takes the colour of its nearest point) with dark grout."""
    points = torch.rand(tiles, 2, generator=generator)
    palette = torch.tensor([[0.85, 0.2, 0.15], [0.95, 0.75, 0.2], [0.15, 0.35, 0.7],
                            [0.1, 0.55, 0.45], [0.9, 0.9, 0.85]])
    shade = 0.8 + 0.2 * torch.rand(tiles, 1, generator=generator)
    colours = palette[torch.randint(len(palette), (tiles,), generator=generator)] * shade
    axis = torch.linspace(0, 1, size)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    nearest = torch.cdist(grid, points).topk(2, largest=False)
    image = colours[nearest.indices[:, 0]]
    image[nearest.values[:, 1] - nearest.values[:, 0] < 0.6 / size] = 0.12
    return image.reshape(size, size, 3).permute(2, 0, 1)[None].contiguous()


def _fc_weight(ctx: Context) -> Tensor:
    """The weight ``(classes, channels)`` of the shapes model's classifier ``fc``."""
    # make_context's model is FlatModel(shapes_model()); torch types a submodule Tensor | Module
    net = cast("ShapesNet", ctx.model.model)
    return net.fc.weight


def _random_vgg16_features(seed: int) -> torch.nn.Sequential:
    """torchvision's VGG16 ``features`` up to ``conv5_1``'s ReLU, initialized as torchvision
    initializes VGG, from ``seed`` (the classifier, 120M parameters, is never built)."""
    from torchvision.models.vgg import cfgs, make_layers

    with torch.random.fork_rng(devices=[]):  # seeds the init, leaves the global RNG as it was
        torch.manual_seed(seed)
        features = make_layers(cfgs["D"])[:26]
        for m in features.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                assert m.bias is not None  # VGG's convolutions have biases
                torch.nn.init.zeros_(m.bias)
    return features.eval()


def _resize(x: Tensor, size: int) -> Tensor:
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                           antialias=True, align_corners=False).clamp(0, 1)


def _describe(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


def _bar(total: int, ctx: Context, desc: str) -> Any:
    from ._util import progress_bar

    return progress_bar(total, ctx.progress, desc)


if __name__ == "__main__":  # python -m netlens.demo ARGS = netlens demo ARGS
    from .cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
