"""The ``netlens`` command: attribution maps, deep dream, feature visualization, style transfer,
evaluation, the demo and the README's figures, from a shell.

``netlens attribute photo.jpg --model torchvision:resnet50 --method gradcam,saliency --top 3``
writes, per image, method and target, a heatmap overlay (PNG) and the raw map (``.npy``) to
``-o DIR``, with a ``manifest.json`` that records versions, seed, parameters and files.
``python -m netlens`` is the same command; ``python -m netlens.demo`` and
``python -m netlens.gallery`` are ``netlens demo`` and ``netlens gallery``. Models are
``shapes`` (the shipped model, the default), ``torchvision:NAME`` (classification, segmentation
and detection models; random init unless ``--weights DEFAULT``), ``timm:NAME``, ``hf:NAME``
(HuggingFace image classifiers) or the path of a pickled ``nn.Module`` or a TorchScript
archive. Targets (``--target``) are class indices, ``topK``, ``seg:C``,
``box:X0,Y0,X1,Y1[:LABEL]``, ``field:NAME[:TARGET]`` or ``channel:LAYER:C``. Every anticipated
failure prints one line, ``netlens: error: ...``, and exits with status 2; ``--debug`` shows
tracebacks. This module holds the only argument parser of netlens's commands (but
``netlens.zoo``'s own ``_main``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from ._cli_io import (
    MANIFEST,
    OUTPUT_FOLDER_RULES,
    TARGET_SYNTAX,
    CliError,
    OutputFolder,
    Session,
    TargetColumn,
    default_layer,
    dream_image,
    expand_images,
    load_images,
    load_model,
    os_error_message,
    parse_model_args,
    pixels,
    predictions,
    resolve_device,
    say,
    split_names,
    stems,
    target_columns,
)

__all__ = ["main"]

IMAGES_HELP = ("image files, folders (their image files, in name order) or quoted patterns such "
               "as 'photos/*.jpg'")

# attribute's method options: command-line name -> keyword of the attribution functions.
_OPTIONS = {"layer": "layer", "steps": "steps", "samples": "n", "sigma": "sigma",
            "window": "window", "stride": "stride", "batch_size": "batch_size"}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see {self.prog} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``netlens ARGS``; returns the exit status (0 ok, 2 bad input, 1 unexpected, 130
    interrupted)."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # while parsing, before a command began
        return _fail("interrupted; no files written", 130)


def _main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except _UsageError as e:
        return _fail(str(e), 2)
    except SystemExit as e:  # --help, --version
        return int(e.code or 0)

    try:
        if getattr(args, "images", None):  # folders and patterns stand for their images
            args.images = expand_images(args.images)
        args.run(args, argv)
        return 0
    except KeyboardInterrupt:
        return _fail(_interrupted(args), 130)
    except Exception as e:
        folder = getattr(args, "output_folder", None)
        if folder is not None:  # the unfinished manifest lists exactly what was written
            folder.abandon()
        if isinstance(e, CliError):
            return _fail(str(e), 2)
        if args.debug:
            raise
        if isinstance(e, OSError) and e.filename:  # a path the user can fix: full, read-only
            return _fail(os_error_message(e, getattr(args, "out", None)), 2)
        if isinstance(e, (ValueError, TypeError, KeyError)) and _raised_by_netlens(e):
            return _fail(_message(e), 2)  # the library's own check of bad input
        if type(e).__name__ == "OutOfMemoryError":
            return _fail("out of memory; use a smaller --size or --batch-size, or --device cpu",
                         1)
        return _fail(f"unexpected {type(e).__name__}: {_message(e)} (rerun with --debug for "
                     "the traceback)", 1)


def _interrupted(args: argparse.Namespace) -> str:
    """The line for Ctrl-C: what was written, and that no manifest of the run was."""
    folder = getattr(args, "output_folder", None)
    if folder is None:
        return "interrupted; no files written"
    folder.abandon()
    written = folder.written()
    if not written:
        return "interrupted; no files written"
    shown = ", ".join(written[:4]) + (f" and {len(written) - 4} more" if len(written) > 4 else "")
    return (f"interrupted; the files written so far are {shown} in {folder.root}; no manifest "
            f"written ({folder.root / MANIFEST} says complete: false)")


# ---------------------------------------------------------------------------------------------
# the parser


def _parser() -> argparse.ArgumentParser:
    from ._version import __version__
    from .attribution import METHODS

    def takers(option: str) -> str:
        """The methods that take ``option``, from the registry's specs."""
        return ", ".join(m for m, spec in METHODS.items() if option in spec.parameters)

    methods = "\n".join(f"  {name:<22} {spec.summary}" for name, spec in METHODS.items())
    parser = _Parser(prog="netlens", description="What a neural network sees and why it decides: "
                     "attribution maps, deep dream, feature visualization, style transfer, "
                     "evaluation and the demo.", epilog=f"attribution methods (netlens attribute "
                     f"--method NAME):\n{methods}",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"netlens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common_options(p: argparse.ArgumentParser, seed: int | None) -> None:
        p.add_argument("--device", default="auto",
                       help="cpu, cuda or auto (default: cuda when available)")
        own = "the demo's own" if seed is None else seed
        p.add_argument("--seed", type=int, default=seed,
                       help=f"seed of every random draw (default {own})")
        p.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
        p.add_argument("--debug", action="store_true", help="tracebacks for unexpected errors")

    def model_options(p: argparse.ArgumentParser, default: str = "shapes") -> None:
        p.add_argument("--model", default=default, help=f"shapes; torchvision:NAME "
                       f"(classification, segmentation or detection, e.g. "
                       f"torchvision:fcn_resnet50, torchvision:fasterrcnn_resnet50_fpn); "
                       f"timm:NAME (pip install timm); hf:NAME, a HuggingFace image classifier: "
                       f"a Hub id or a save_pretrained folder (pip install transformers); or the "
                       f"path of a torch.save'd nn.Module or TorchScript archive (default "
                       f"{default})")
        p.add_argument("--weights", help="torchvision weights: DEFAULT or a name such as "
                       "IMAGENET1K_V1; timm: DEFAULT or a weights file (default: random init, "
                       "seeded; hf:NAME brings its own)")
        p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="a keyword "
                       "argument of the torchvision, timm or hf model builder, repeatable, the "
                       "value a Python literal, e.g. --model-arg min_size=320 --model-arg "
                       "box_score_thresh=0.0 for a torchvision detector")
        p.add_argument("--size", type=int, help="image side in pixels (default: 64 for shapes, "
                       "the model's for timm and hf, 224 otherwise)")

    def command(name: str, run: Any, help: str, out: str, model: str | None = "shapes",
                ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("-o", "--out", default=out, help=f"output folder (default {out}); "
                       f"{OUTPUT_FOLDER_RULES}")
        common_options(p, None if model is None else 0)
        if model is not None:
            model_options(p, model)
        p.set_defaults(run=run)
        return p

    p = command("demo", _demo, "run the shapes demo and write its gallery", "netlens_demo",
                None)
    p.add_argument("--small", action="store_true", help="a reduced, quick version")

    p = sub.add_parser("gallery", help="draw the README's figures from the demo's stages",
                       description="draw the README's figures (images/readme) from the demo's "
                       "stages: the same code, parameters and seed")
    p.add_argument("-o", "--out", default="images/readme", help="output folder (default "
                   "images/readme)")
    p.add_argument("--small", action="store_true", help="the demo's reduced run")
    p.add_argument("--seed", type=int, default=2026, help="seed of every random draw (default "
                   "2026, the README's)")
    p.add_argument("--device", default="cpu", help="cpu (default: the README's pictures are "
                   "drawn on a CPU), cuda or auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    p.add_argument("--debug", action="store_true", help="tracebacks for unexpected errors")
    p.set_defaults(run=_gallery)

    p = sub.add_parser("zoo", help="train the shipped shapes models again",
                       description="train a shipped model again and write its weights (default: "
                       "the file inside the package)")
    p.add_argument("kind", choices=["train", "train-segmentation", "train-random-labels"],
                   help="train: the classifier ShapesNet; train-segmentation: ShapesSegNet; "
                   "train-random-labels: ShapesNet memorizing random labels (the data "
                   "randomization test's model)")
    p.add_argument("--out", default=None, help="weights file (default: the shipped one)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the "
                   "shipped run's)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step")
    p.add_argument("--seed", type=int, default=None, help="seed of the training stream "
                   "(default 0; train-random-labels: 777)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="tracebacks for unexpected errors")
    p.set_defaults(run=_zoo)

    p = sub.add_parser("layers", help="list a model's layers: names, types, output shapes and "
                       "how netlens views each output (its layout)",
                       description="list a model's layers: names (as layer= and --layer take "
                       "them), types, output shapes for one image and layouts (nchw, nhwc, "
                       "tokens+EXTRA, vector, other: not a map), the default CAM layer marked")
    p.add_argument("spec", nargs="?", metavar="MODEL", help="the model, as --model takes it")
    common_options(p, 0)
    model_options(p)
    p.add_argument("--grep", metavar="TEXT", help="only the layers whose name contains TEXT")
    p.set_defaults(run=_layers)

    p = command("attribute", _attribute, "attribution maps of images: overlays, raw maps, "
                "manifest", "netlens_attribute")
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument("--method", action="append", help=f"a method ({', '.join(METHODS)}), "
                   "repeatable or comma-separated; 'all' for every one (default gradcam)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--target", nargs="+", metavar="TARGET", help=f"what to explain: "
                       f"{TARGET_SYNTAX}. One target is for every image, as many as images one "
                       f"per image, several for a single image: one map each, files "
                       f"IMAGE_METHOD_TAG (TAG the class, seg15, box0, ...). Default: the "
                       f"predicted class; for a segmentation model the class covering most "
                       f"pixels; for a detector its highest-scoring box")
    group.add_argument("--top", type=int, metavar="K", help="the K highest-scoring classes "
                       "(= --target topK)")
    p.add_argument("--layer", help=f"layer of {takers('layer')} (default: the last spatial "
                   "layer; for a detector its backbone's last map)")
    p.add_argument("--steps", type=int, help=f"steps of {takers('steps')}")
    p.add_argument("--samples", type=int, help=f"noisy samples of {takers('n')}")
    p.add_argument("--sigma", type=float, help=f"noise of {takers('sigma')}, a fraction of the "
                   "range")
    p.add_argument("--window", type=int, help=f"window of {takers('window')} in pixels")
    p.add_argument("--stride", type=int, help=f"stride of {takers('stride')} in pixels")
    p.add_argument("--batch-size", type=int, help="images per pass (default: from a memory "
                   "budget)")

    p = command("dream", _dream, "deep dream: amplify what a layer sees in images, at each "
                "image's own size (at most 512 px on its longer side; --size S: S x S)",
                "netlens_dream")
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument("--layer", help="layer to amplify (default: the last spatial layer)")
    p.add_argument("--channel", type=int, help="one channel of the layer (default: all)")
    p.add_argument("--octaves", type=int, default=4, help="scales (default 4)")
    p.add_argument("--steps", type=int, default=10, help="steps per octave (default 10)")
    p.add_argument("--lr", type=float, default=0.01, help="step size (default 0.01)")

    p = command("visualize", _visualize, "feature visualization of classes or channels",
                "netlens_visualize")
    p.add_argument("--class", dest="classes", nargs="+", metavar="C",
                       help="class indices (or names of the model's classes)")
    p.add_argument("--channel", dest="channels", nargs="+", metavar="LAYER:C",
                       help="channels, e.g. layer3:7")
    p.add_argument("--steps", type=int, default=256, help="optimization steps (default 256)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")

    p = command("style", _style, "style transfer (Gatys et al.) of CONTENT in the style of STYLE",
                "netlens_style", "torchvision:vgg16")
    p.add_argument("content", metavar="CONTENT")
    p.add_argument("style", nargs="+", metavar="STYLE")
    p.add_argument("--steps", type=int, default=100, help="optimization steps (default 100)")
    p.add_argument("--style-weight", type=float, default=1e6, help="default 1e6")
    p.add_argument("--content-weight", type=float, default=1.0, help="default 1")
    p.add_argument("--tv-weight", type=float, default=0.0, help="default 0")
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")

    p = command("eval", _eval, "compare attribution methods with the metrics of "
                "netlens.metrics", "netlens_eval")
    p.add_argument("images", nargs="*", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument("--shapes", type=int, metavar="N", help="N fresh shapes images with their "
                   "object masks (the shapes model)")
    p.add_argument("--method", action="append", help="methods, as for attribute (default: the "
                   "metrics module's)")
    p.add_argument("--metric", action="append", help="metrics of netlens.metrics.METRICS, "
                   "repeatable or comma-separated; 'all' for every one (default: deletion, "
                   "insertion, and with masks pointing_game, relevance_mass)")
    p.add_argument("--target", nargs="+", metavar="TARGET", help=f"one target for all images "
                   f"or one per image, as for attribute: {TARGET_SYNTAX} (default: the label "
                   f"of a shapes image, else as for attribute)")
    return parser


# ---------------------------------------------------------------------------------------------
# commands


def _demo(args: argparse.Namespace, argv: list[str]) -> None:
    import shlex

    from . import gallery

    folder = OutputFolder(args.out, command=shlex.join(["netlens", *argv]))
    args.output_folder = folder
    device = resolve_device(args.device)
    folder.device = str(device)
    folder.begin()
    start = time.perf_counter()
    seed = {} if args.seed is None else {"seed": args.seed}
    manifest = gallery.run(args.out, small=args.small, device=device, progress=not args.quiet,
                           **seed)
    index = manifest.parent / "index.html"
    shown = f"{index} and {manifest}" if index.is_file() else str(manifest)
    say(args, f"wrote {shown} in {time.perf_counter() - start:.1f} s")


def _gallery(args: argparse.Namespace, argv: list[str]) -> None:
    from . import gallery

    device = resolve_device(args.device)
    start = time.perf_counter()
    paths = gallery.readme(args.out, small=args.small, seed=args.seed, device=device,
                           progress=not args.quiet)
    for path in paths:
        say(args, f"{path}  {path.stat().st_size / 1024:.0f} KB")
    say(args, f"{len(paths)} pictures in {time.perf_counter() - start:.1f} s")


def _zoo(args: argparse.Namespace, argv: list[str]) -> None:
    from . import zoo

    kind = {"train": "classifier", "train-segmentation": "segmentation",
            "train-random-labels": "random-labels"}[args.kind]
    seed = args.seed if args.seed is not None else (None if kind == "random-labels" else 0)
    print(zoo.retrain(kind, out=args.out, steps=args.steps, batch_size=args.batch_size,
                      seed=seed, progress=not args.quiet))


def _normalization(run: Session) -> dict[str, Any]:
    """The model's input normalization for OptVis and NetDreamer: None (raw pixels) is
    ``mean=0.0, std=1.0`` there, where None would mean "guess from the model"."""
    mean, std = run.loaded.mean, run.loaded.std
    return {"mean": 0.0 if mean is None else mean, "std": 1.0 if std is None else std}


def _layers(args: argparse.Namespace, argv: list[str]) -> None:
    import torch

    from .attribution.cam import _default_layer
    from .flat_model import FlatModel, input_channels, model_dtype

    spec = args.spec or args.model
    device = resolve_device(args.device)
    loaded = load_model(spec, device, weights=args.weights, seed=args.seed,
                        options=parse_model_args(args.model_arg))
    if loaded.scripted:
        raise CliError("a TorchScript archive hides its layers from hooks; save the model with "
                       "torch.save(model, path) to list them")
    size = loaded.size if args.size is None else args.size
    x = torch.zeros(1, input_channels(loaded.model) or 3, size, size, device=device,
                    dtype=model_dtype(loaded.model) or torch.float32)
    fm = FlatModel(loaded.model)
    with torch.no_grad():
        output = fm(x)  # finds the layers at this size on its way
    try:  # a detector's CAM layer is its backbone's (as attribute takes it), else the methods'
        default = default_layer(fm, x, output) or _default_layer(fm)
    except ValueError:  # no spatial layer
        default = None
    rows = [("layer", "type", "output shape", "layout")]
    for c in fm.layers:
        if args.grep and args.grep not in c.name:
            continue
        layout = c.layout.kind + (f"+{c.layout.extra}" if c.layout.extra else "")
        shape = "x".join(map(str, c.shape)) if c.shape is not None else "-"
        rows.append((c.name + ("  <- default CAM layer" if c.name == default else ""),
                     c.type_name, shape, layout))
    widths = [max(len(r[k]) for r in rows) for k in range(3)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r[:3], widths)) + "  " + r[3])
    print(f"{len(rows) - 1} of {len(fm.layers)} layer calls of {spec} at {size}x{size}; default "
          f"CAM layer: {default or 'none (no spatial layer)'}")


def _attribute(args: argparse.Namespace, argv: list[str]) -> None:
    from . import export
    from .attribution import METHODS

    methods = split_names(args.method or ["gradcam"], METHODS)
    names = stems(args.images)
    run = Session(args, outputs=[f"{stem}.png" for stem in names], argv=argv)
    _check_scripted(run, methods, args.layer)
    x = run.images(args.images)
    output = run.output(x)
    columns = _targets(run, args, output, len(args.images))
    options = _method_options(args, methods, run, x, output)
    run.claim([f"{stem}_{method}_{column.tags[i]}.{ext}" for method in methods
               for column in columns for i, stem in enumerate(names) for ext in ("png", "npy")]
              + ["index.html"])
    records: list[dict] = []
    for i, stem in enumerate(names):
        image = export.save_image(run.path(f"{stem}.png"), pixels(x[i], run.loaded))
        records.append({"path": image.name, "kind": "image", "stage": "input",
                        "image": args.images[i]})
    for method in methods:
        for column in columns:
            attr = METHODS[method](run.fm, x, column.target, **options[method])
            for i, stem in enumerate(names):
                base = f"{stem}_{method}_{column.tags[i]}"
                about = {"method": method, "image": args.images[i], "target": column.specs[i],
                         "class": column.classes[i]}
                export.save_overlay(run.path(f"{base}.png"), x[i:i + 1], attr[i:i + 1],
                                    mean=run.loaded.mean, std=run.loaded.std)
                export.save_array(run.path(f"{base}.npy"), attr[i:i + 1])
                records += [{"path": f"{base}.png", "kind": "image", "stage": "overlay", **about},
                            {"path": f"{base}.npy", "kind": "array", "stage": "raw",
                             "shape": list(attr[i:i + 1].shape), **about}]
    sections = []
    for i, path in enumerate(args.images):
        predicted = predictions(output, i, run.class_name, run.loaded.class_names)
        say(args, f"{path}: {predicted}; "
            f"maps for target(s) {', '.join(str(c.specs[i]) for c in columns)}")
        rows = []
        for column in columns:
            name = column.classes[i]
            label = f"target {column.specs[i]}" + (f" ({name})" if name not in (None, "") and
                                                   str(name) != str(column.specs[i]) else "")
            rows.append({"label": label, "items": [
                {"src": f"{names[i]}.png", "caption": "input"},
                *({"src": f"{names[i]}_{method}_{column.tags[i]}.png", "caption": method}
                  for method in methods)]})
        sections.append({"title": path, "text": f"prediction: {predicted}", "rows": rows})
    export.write_html(run.path("index.html"), title="netlens attribute", sections=sections,
                      intro=f"{run.loaded.spec}: {', '.join(methods)}. Overlays scaled per map; "
                            "the raw maps are the .npy files, all listed in manifest.json.")
    records.append({"path": "index.html", "kind": "html", "stage": "summary"})
    layers = sorted({o["layer"] for o in options.values() if "layer" in o})
    run.finish(argv, records, {"methods": methods, **({"layers": layers} if layers else {}),
                               "targets": [[c.specs[i] for c in columns]
                                           for i in range(len(args.images))]})


def _dream(args: argparse.Namespace, argv: list[str]) -> None:
    import torch

    from . import export
    from .flat_model import input_channels
    from .generate import NetDreamer

    names = stems(args.images)
    run = Session(args, layers=True, raw=True, outputs=[f"{s}_dream.png" for s in names],
                  argv=argv)
    layer = run.layer(args.layer)
    dreamer = NetDreamer(run.fm, **_normalization(run))
    records = []
    for i, stem in enumerate(names):
        # the photo's own size (at most DREAM_SIDE on its longer side), unless --size
        x = run.images([args.images[i]]) if args.size is not None else \
            dream_image(args.images[i], run.device,
                        1 if input_channels(run.fm.model) == 1 else 3)
        out = dreamer.deep_dream(x, layer, args.channel, octaves=args.octaves,
                                 steps=args.steps, lr=args.lr, progress=run.progress,
                                 generator=torch.Generator().manual_seed(args.seed))
        path = export.save_image(run.path(f"{stem}_dream.png"), out[0])
        records.append({"path": path.name, "kind": "image", "stage": "dream", "layer": layer,
                        "channel": args.channel, "image": args.images[i]})
    run.finish(argv, records, {"layer": layer})


def _visualize(args: argparse.Namespace, argv: list[str]) -> None:
    import torch

    from . import export
    from .flat_model import input_channels
    from .generate import NetDreamer

    if not args.classes and not args.channels:
        raise CliError("give --class C and/or --channel LAYER:C (see netlens visualize --help)")
    run = Session(args, layers=bool(args.channels), raw=True, argv=argv)
    size = min(run.loaded.size, 128) if args.size is None else run.size
    dreamer = NetDreamer(run.fm, **_normalization(run))
    common = {"size": size, "steps": args.steps, "lr": args.lr, "progress": run.progress}
    channels_in = input_channels(run.fm.model) or 3
    classes = run.scores(torch.zeros(1, channels_in, size, size, device=run.device)).shape[-1]
    indices = [run.class_index(c, classes) for c in args.classes or []]

    def class_file(index: int) -> str:  # class_0_circle.png: the name where the model has one
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", run.class_name(index, classes)).strip("_")
        return f"class_{index}.png" if name in ("", str(index)) else f"class_{index}_{name}.png"

    channels = []
    for spec in args.channels or []:  # every name checked before the first optimization
        layer, _, channel = spec.rpartition(":")
        if not layer or not channel.isdigit():
            raise CliError(f"--channel {spec!r} is not LAYER:C (e.g. layer3:7)")
        layer = run.layer(layer)
        channels.append((layer, int(channel), f"channel_{layer.replace(':', '-')}_{channel}.png"))
    run.claim([class_file(index) for index in indices] + [name for *_, name in channels])
    records = []
    for index in indices:
        image = dreamer.class_visualization(
            index, generator=torch.Generator().manual_seed(args.seed), **common)
        path = export.save_image(run.path(class_file(index)), image[0])
        records.append({"path": path.name, "kind": "image", "stage": "class", "target": index,
                        "class": run.class_name(index, classes)})
    for layer, channel, name in channels:
        image = dreamer.channel_visualization(
            layer, channel, generator=torch.Generator().manual_seed(args.seed), **common)
        path = export.save_image(run.path(name), image[0])
        records.append({"path": path.name, "kind": "image", "stage": "channel", "layer": layer,
                        "channel": channel})
    run.finish(argv, records, {"size": size})


def _style(args: argparse.Namespace, argv: list[str]) -> None:
    from torch import nn

    from . import export
    from .style_transfer import StyleTransferModule, generate_style_transfer

    stem = "_".join(stems([args.content] + args.style))
    run = Session(args, paths=[args.content, *args.style], layers=True, raw=True,
                  outputs=[f"{stem}_style.png"], argv=argv)
    features = getattr(run.loaded.model, "features", None)
    arch = features if isinstance(features, nn.Module) else run.loaded.model  # VGG: features
    content = run.images([args.content])
    styles = load_images(args.style, run.size, mean=None, std=None, device=run.device)
    module = StyleTransferModule(arch, content, style_target=list(styles.split(1)),
                                 mean=run.loaded.mean, std=run.loaded.std)
    out = generate_style_transfer(module, num_steps=args.steps, style_weight=args.style_weight,
                                  content_weight=args.content_weight, tv_weight=args.tv_weight,
                                  optimizer=args.optimizer, progress=run.progress)
    losses = {k: float(v) for k, v in module.losses(out).items()}
    path = export.save_image(run.path(f"{stem}_style.png"), out[0])
    say(args, f"content loss {losses['content']:.4g}, style loss {losses['style']:.4g}")
    run.finish(argv, [{"path": path.name, "kind": "image", "stage": "style",
                       "content_layers": module.content_layers,
                       "style_layers": module.style_layers, **losses}], {})


def _eval(args: argparse.Namespace, argv: list[str]) -> None:
    import json

    import torch

    try:
        from . import metrics
    except ImportError:
        raise CliError("this installation has no netlens.metrics; update netlens") from None
    from .attribution import METHODS

    if bool(args.images) == (args.shapes is not None):
        raise CliError("give either IMAGE files or --shapes N")
    known = {**METHODS, "random": None, "centre": None}
    methods = split_names(args.method or list(metrics.DEFAULT_METHODS), known)
    chosen = None if args.metric is None else split_names(args.metric, metrics.METRICS, "metric")
    run = Session(args, outputs=["metrics.md", "metrics.json", "curves.png", "reliability.md"],
                  argv=argv)
    _check_scripted(run, methods, None)
    masks = None
    if args.shapes is not None:
        if args.shapes < 1:
            raise CliError(f"--shapes must be at least 1, got {args.shapes}")
        from .data import make_shapes

        batch = make_shapes(args.shapes, seed=args.seed, size=max(24, run.size))
        x = run.normalize(batch.images.to(run.device))
        masks = batch.masks.to(run.device)
    else:
        x = run.images(args.images)
    if args.target is None and args.shapes is not None:
        targets = batch.labels.to(run.device)
        shown: Any = targets.tolist()
    else:
        columns = _targets(run, args, run.output(x), x.shape[0])
        if len(columns) != 1:
            raise CliError(f"netlens eval scores one target per image, got {len(columns)} per "
                           "image; give one target for all images or one per image")
        targets, shown = columns[0].target, columns[0].specs
    table = metrics.compare(run.fm, x, targets, methods=methods, metrics=chosen, masks=masks,
                            progress=run.progress,
                            generator=torch.Generator(device=run.device).manual_seed(args.seed))
    markdown = table.to_markdown()
    run.path("metrics.md").write_text(markdown + "\n", encoding="utf-8")
    run.path("metrics.json").write_text(json.dumps(list(table), indent=1) + "\n",
                                        encoding="utf-8")
    records = [{"path": "metrics.md", "kind": "table"}, {"path": "metrics.json", "kind": "table"}]
    if any(c for c in table.curves.values()):
        metrics.plot_curves(table).savefig(run.path("curves.png"), dpi=100)
        records.append({"path": "curves.png", "kind": "image", "stage": "curves"})
    say(args, markdown)
    if len(table) >= 2 and x.shape[0] >= 2:  # how far the ranking of the methods holds
        agreement = metrics.reliability(table).to_markdown()
        run.path("reliability.md").write_text(agreement + "\n", encoding="utf-8")
        records.append({"path": "reliability.md", "kind": "table"})
        say(args, "\nreliability (Krippendorff's alpha of the images' rankings; Kendall's tau "
                  "between the metrics):\n" + agreement)
    run.finish(argv, records, {"methods": methods, "metrics": table.metrics,
                               "images": x.shape[0], "targets": shown})


# ---------------------------------------------------------------------------------------------
# shared steps


def _check_scripted(run: Session, methods: Sequence[str], layer: str | None) -> None:
    from .attribution import METHODS

    if not run.loaded.scripted:
        return
    needs = [m for m in methods if METHODS[m].layer or METHODS[m].rules]
    if needs or layer:
        usable = [m for m, spec in METHODS.items() if not (spec.layer or spec.rules)]
        raise CliError(f"{', '.join(needs) or '--layer'} read(s) the model's layers, which a "
                       f"TorchScript archive hides from hooks; use {', '.join(usable[:-1])} or "
                       f"{usable[-1]}, or save the model with torch.save(model, path)")


def _targets(run: Session, args: argparse.Namespace, output: Any, n: int) -> list[TargetColumn]:
    """The ``--target``/``--top`` targets of the images, checked against the model's output."""

    def resolve_layer(name: str) -> str:
        if run.loaded.scripted:
            raise CliError(f"--target channel:{name}:C reads a layer, which a TorchScript "
                           "archive hides from hooks; save the model with "
                           "torch.save(model, path)")
        return run.layer(name)

    return target_columns(args.target, getattr(args, "top", None), output, n,
                          class_name=run.class_name, names=run.loaded.class_names,
                          resolve_layer=resolve_layer)


def _method_options(args: argparse.Namespace, methods: list[str], run: Session, x: Any,
                    output: Any) -> dict:
    import torch

    from .attribution import METHODS

    given = {kw: getattr(args, opt) for opt, kw in _OPTIONS.items()
             if getattr(args, opt) is not None}
    if run.loaded.scripted and "batch_size" not in given:
        given["batch_size"] = 8  # no layers to estimate memory from
    if args.layer is not None:
        given["layer"] = run.fm.resolve_layer(args.layer)  # fail before any work
    options: dict[str, dict] = {}
    for m in methods:
        spec = METHODS[m]
        options[m] = spec.options_for(given)
        if spec.progress:
            options[m]["progress"] = run.progress
        if "generator" in spec.parameters:
            options[m]["generator"] = torch.Generator(device=run.device).manual_seed(args.seed)
    for opt, kw in _OPTIONS.items():
        if kw in given and not any(kw in o for o in options.values()):
            takers = [m for m, spec in METHODS.items() if kw in spec.parameters]
            raise CliError(f"--{opt.replace('_', '-')} does not apply to {', '.join(methods)}; "
                           f"it is an option of {', '.join(takers)}")
    if args.layer is None and any(METHODS[m].layer for m in methods):
        layer = default_layer(run.fm, x, output)  # a detector's: its backbone's, not ROI pooling
        for m in methods:
            if layer is not None and METHODS[m].layer:
                options[m]["layer"] = layer
    return options


def _message(e: BaseException) -> str:
    text = e.args[0] if isinstance(e, KeyError) and type(e).__str__ is KeyError.__str__ and \
        e.args else str(e)
    return " ".join(str(text).split()) or type(e).__name__


def _raised_by_netlens(e: BaseException) -> bool:
    """Whether the innermost frame of the traceback is in netlens's library code."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    name = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return name.startswith("netlens.") and name not in (__name__, "netlens._cli_io")


def _fail(message: str, status: int) -> int:
    print(f"netlens: error: {message}", file=sys.stderr)
    return status
