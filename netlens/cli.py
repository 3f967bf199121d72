"""The ``netlens`` command: attribution maps, deep dream, feature visualization, style transfer,
evaluation and the demo, from a shell.

``netlens attribute photo.jpg --model torchvision:resnet50 --method gradcam,saliency --top 3``
writes, per image, method and target, a heatmap overlay (PNG) and the raw map (``.npy``) to
``-o DIR``, with a ``manifest.json`` that records versions, seed, parameters and files.
``python -m netlens`` is the same command. Models are ``shapes`` (the shipped model, the
default), ``torchvision:NAME`` (random init unless ``--weights DEFAULT``) or the path of a
pickled ``nn.Module`` or a TorchScript archive. Every anticipated failure prints one line,
``netlens: error: ...``, and exits with status 2; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._cli_io import (
    CliError,
    Session,
    load_images,
    pixels,
    resolve_device,
    say,
    split_names,
    stems,
    targets_from,
)

__all__ = ["main"]

# Methods that read a layer through hooks: not possible on a TorchScript archive.
_LAYER_METHODS = ("guided_backprop", "guided_gradcam")
# attribute's method options: command-line name -> keyword of the attribution functions.
_OPTIONS = {"layer": "layer", "steps": "steps", "samples": "n", "sigma": "sigma",
            "window": "window", "stride": "stride", "batch_size": "batch_size"}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see {self.prog} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``netlens ARGS``; returns the exit status (0 ok, 2 bad input, 1 unexpected)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except _UsageError as e:
        return _fail(str(e), 2)
    except SystemExit as e:  # --help, --version
        return int(e.code or 0)

    try:
        args.run(args, argv)
        return 0
    except CliError as e:
        return _fail(str(e), 2)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:
        if args.debug:
            raise
        if isinstance(e, (ValueError, TypeError, KeyError)) and _raised_by_netlens(e):
            return _fail(_message(e), 2)  # the library's own check of bad input
        if type(e).__name__ == "OutOfMemoryError":
            return _fail("out of memory; use a smaller --size or --batch-size, or --device cpu",
                         1)
        return _fail(f"unexpected {type(e).__name__}: {_message(e)} (rerun with --debug for "
                     "the traceback)", 1)


# ---------------------------------------------------------------------------------------------
# the parser


def _parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = _Parser(prog="netlens", description="What a neural network sees and why it decides: "
                     "attribution maps, deep dream, feature visualization, style transfer, "
                     "evaluation and the demo.")
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
        p.add_argument("--model", default=default, help=f"shapes, torchvision:NAME or the path of "
                       f"a torch.save'd nn.Module or TorchScript archive (default {default})")
        p.add_argument("--weights", help="torchvision weights: DEFAULT or a name such as "
                       "IMAGENET1K_V1 (default: random init, seeded)")
        p.add_argument("--size", type=int, help="image side in pixels (default: 64 for shapes, "
                       "224 otherwise)")

    def command(name: str, run: Any, help: str, out: str, model: str | None = "shapes",
                ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("-o", "--out", default=out, help=f"output folder (default {out})")
        common_options(p, None if model is None else 0)
        if model is not None:
            model_options(p, model)
        p.set_defaults(run=run)
        return p

    p = command("demo", _demo, "run the shapes demo and write its gallery", "netlens_demo",
                None)
    p.add_argument("--small", action="store_true", help="a reduced, quick version")

    p = command("attribute", _attribute, "attribution maps of images: overlays, raw maps, "
                "manifest", "netlens_attribute")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--method", action="append", help="a method of netlens.attribution.METHODS, "
                   "repeatable or comma-separated; 'all' for every one (default gradcam)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--target", nargs="+", help="class index: one for all images, one per "
                       "image, or several for a single image (default: the predicted class)")
    group.add_argument("--top", type=int, metavar="K", help="the K highest-scoring classes")
    p.add_argument("--layer", help="layer of the CAM methods (default: last spatial layer)")
    p.add_argument("--steps", type=int, help="integrated_gradients steps")
    p.add_argument("--samples", type=int, help="smooth_grad samples")
    p.add_argument("--sigma", type=float, help="smooth_grad noise, a fraction of the range")
    p.add_argument("--window", type=int, help="occlusion window in pixels")
    p.add_argument("--stride", type=int, help="occlusion stride in pixels")
    p.add_argument("--batch-size", type=int, help="images per pass (default: from a memory "
                   "budget)")

    p = command("dream", _dream, "deep dream: amplify what a layer sees in images",
                "netlens_dream")
    p.add_argument("images", nargs="+", metavar="IMAGE")
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
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--shapes", type=int, metavar="N", help="N fresh shapes images with their "
                   "object masks (the shapes model)")
    p.add_argument("--method", action="append", help="methods, as for attribute (default: the "
                   "metrics module's)")
    p.add_argument("--metric", action="append", help="metrics of netlens.metrics.METRICS, "
                   "repeatable or comma-separated; 'all' for every one (default: deletion, "
                   "insertion, and with masks pointing_game, relevance_mass)")
    p.add_argument("--target", nargs="+", help="class per image (default: the label of a "
                   "shapes image, else the predicted class)")
    return parser


# ---------------------------------------------------------------------------------------------
# commands


def _demo(args: argparse.Namespace, argv: list[str]) -> None:
    from . import demo

    device = resolve_device(args.device)
    start = time.perf_counter()
    seed = {} if args.seed is None else {"seed": args.seed}
    manifest = demo.run(args.out, small=args.small, device=device, progress=not args.quiet,
                        **seed)
    index = manifest.parent / "index.html"
    shown = f"{index} and {manifest}" if index.is_file() else str(manifest)
    say(args, f"wrote {shown} in {time.perf_counter() - start:.1f} s")


def _attribute(args: argparse.Namespace, argv: list[str]) -> None:
    import torch

    from . import export
    from .attribution import METHODS

    methods = split_names(args.method or ["gradcam"], METHODS)
    run = Session(args)
    _check_scripted(run, methods, args.layer)
    x = run.images(args.images)
    scores = run.scores(x)
    targets = targets_from(args, scores, len(args.images))
    options = _method_options(args, methods, run)
    records: list[dict] = []
    names = stems(args.images)
    for i, stem in enumerate(names):
        image = export.save_image(run.out / f"{stem}.png", pixels(x[i], run.loaded))
        records.append({"path": image.name, "kind": "image", "stage": "input",
                        "image": args.images[i]})
    for method in methods:
        for k in range(targets.shape[1]):
            t = targets[:, k]
            attr = METHODS[method](run.fm, x, t, **options[method])
            for i, stem in enumerate(names):
                c = int(t[i])
                base = f"{stem}_{method}_{c}"
                about = {"method": method, "image": args.images[i], "target": c,
                         "class": run.class_name(c, scores.shape[-1])}
                export.save_overlay(run.out / f"{base}.png", x[i:i + 1], attr[i:i + 1],
                                    mean=run.loaded.mean, std=run.loaded.std)
                export.save_array(run.out / f"{base}.npy", attr[i:i + 1])
                records += [{"path": f"{base}.png", "kind": "image", "stage": "overlay", **about},
                            {"path": f"{base}.npy", "kind": "array", "stage": "raw",
                             "shape": list(attr[i:i + 1].shape), **about}]
    probs = torch.softmax(scores.float(), -1)
    for i, path in enumerate(args.images):
        top = probs[i].topk(min(3, probs.shape[-1]))
        guesses = ", ".join(f"{run.class_name(int(c), probs.shape[-1])} {float(p):.2f}"
                            for p, c in zip(top.values, top.indices))
        say(args, f"{path}: {guesses}; maps for target(s) "
            f"{', '.join(str(int(c)) for c in targets[i])}")
    run.finish(argv, records, {"methods": methods, "targets": targets.tolist()})


def _dream(args: argparse.Namespace, argv: list[str]) -> None:
    import torch

    from . import export
    from .generate import NetDreamer

    run = Session(args, layers=True, raw=True)
    x = run.images(args.images)
    layer = run.layer(args.layer)
    dreamer = NetDreamer(run.fm, mean=run.loaded.mean, std=run.loaded.std)
    out = dreamer.deep_dream(x, layer, args.channel, octaves=args.octaves, steps=args.steps,
                             lr=args.lr, progress=run.progress,
                             generator=torch.Generator().manual_seed(args.seed))
    records = []
    for i, stem in enumerate(stems(args.images)):
        path = export.save_image(run.out / f"{stem}_dream.png", out[i])
        records.append({"path": path.name, "kind": "image", "stage": "dream", "layer": layer,
                        "channel": args.channel, "image": args.images[i]})
    run.finish(argv, records, {"layer": layer})


def _visualize(args: argparse.Namespace, argv: list[str]) -> None:
    import torch

    from . import export
    from .generate import NetDreamer

    if not args.classes and not args.channels:
        raise CliError("give --class C and/or --channel LAYER:C (see netlens visualize --help)")
    run = Session(args, layers=bool(args.channels), raw=True)
    size = min(run.loaded.size, 128) if args.size is None else run.size
    dreamer = NetDreamer(run.fm, mean=run.loaded.mean, std=run.loaded.std)
    common = {"size": size, "steps": args.steps, "lr": args.lr, "progress": run.progress}
    records = []
    classes = run.scores(torch.zeros(1, 3, size, size, device=run.device)).shape[-1]
    for c in args.classes or []:
        index = run.class_index(c, classes)
        image = dreamer.class_visualization(
            index, generator=torch.Generator().manual_seed(args.seed), **common)
        path = export.save_image(run.out / f"class_{index}.png", image[0])
        records.append({"path": path.name, "kind": "image", "stage": "class", "target": index,
                        "class": run.class_name(index, classes)})
    for spec in args.channels or []:
        layer, _, channel = spec.rpartition(":")
        if not layer or not channel.isdigit():
            raise CliError(f"--channel {spec!r} is not LAYER:C (e.g. layer3:7)")
        layer = run.layer(layer)
        image = dreamer.channel_visualization(
            layer, int(channel), generator=torch.Generator().manual_seed(args.seed), **common)
        name = f"channel_{layer.replace(':', '-')}_{channel}.png"
        path = export.save_image(run.out / name, image[0])
        records.append({"path": path.name, "kind": "image", "stage": "channel", "layer": layer,
                        "channel": int(channel)})
    run.finish(argv, records, {"size": size})


def _style(args: argparse.Namespace, argv: list[str]) -> None:
    from torch import nn

    from . import export
    from .style_transfer import StyleTransferModule, generate_style_transfer

    run = Session(args, paths=[args.content, *args.style], layers=True, raw=True)
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
    stem = "_".join(stems([args.content] + args.style))
    path = export.save_image(run.out / f"{stem}_style.png", out[0])
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
    run = Session(args)
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
    scores = run.scores(x)
    if args.target is None and args.shapes is not None:
        targets = batch.labels.to(run.device)
    else:
        targets = targets_from(args, scores, x.shape[0])[:, 0]
    table = metrics.compare(run.fm, x, targets, methods=methods, metrics=chosen, masks=masks,
                            progress=run.progress,
                            generator=torch.Generator(device=run.device).manual_seed(args.seed))
    markdown = table.to_markdown()
    (run.out / "metrics.md").write_text(markdown + "\n", encoding="utf-8")
    (run.out / "metrics.json").write_text(json.dumps(list(table), indent=1) + "\n",
                                          encoding="utf-8")
    records = [{"path": "metrics.md", "kind": "table"}, {"path": "metrics.json", "kind": "table"}]
    if any(c for c in table.curves.values()):
        metrics.plot_curves(table).savefig(run.out / "curves.png", dpi=100)
        records.append({"path": "curves.png", "kind": "image", "stage": "curves"})
    say(args, markdown)
    run.finish(argv, records, {"methods": methods, "metrics": table.metrics,
                               "images": x.shape[0], "targets": targets.tolist()})


# ---------------------------------------------------------------------------------------------
# shared steps


def _check_scripted(run: Session, methods: Sequence[str], layer: str | None) -> None:
    from .attribution import CAM_METHODS

    if not run.loaded.scripted:
        return
    needs = [m for m in methods if m in CAM_METHODS or m in _LAYER_METHODS]
    if needs or layer:
        raise CliError(f"{', '.join(needs) or '--layer'} read(s) the model's layers, which a "
                       "TorchScript archive hides from hooks; use saliency, input_x_gradient, "
                       "smooth_grad, integrated_gradients or occlusion, or save the model with "
                       "torch.save(model, path)")


def _method_options(args: argparse.Namespace, methods: list[str], run: Session) -> dict:
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
        accepted = inspect.signature(METHODS[m]).parameters
        options[m] = {k: v for k, v in given.items() if k in accepted}
        if "progress" in accepted:
            options[m]["progress"] = run.progress
        if "generator" in accepted:
            options[m]["generator"] = torch.Generator(device=run.device).manual_seed(args.seed)
    for opt, kw in _OPTIONS.items():
        if kw in given and not any(kw in o for o in options.values()):
            takers = [m for m in METHODS if kw in inspect.signature(METHODS[m]).parameters]
            raise CliError(f"--{opt.replace('_', '-')} does not apply to {', '.join(methods)}; "
                           f"it is an option of {', '.join(takers)}")
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
