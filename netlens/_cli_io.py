"""The command line's shared steps: devices, models from a spec, images from paths, targets,
and the :class:`Session` that every command opens and closes (output folder, manifest).

Every anticipated failure (a missing file, an unknown model, a state_dict where a model was
expected, an unreadable image, CUDA asked for but absent) raises :class:`CliError` with one line
that names the problem and the fix; :mod:`netlens.cli` prints it and exits with status 2.
"""

from __future__ import annotations

import difflib
import os
import shlex
import sys
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CliError", "LoadedModel", "Session", "check_paths", "load_images", "load_model",
           "pixels", "resolve_device", "say", "split_names", "stems", "targets_from"]


class CliError(Exception):
    """An anticipated failure of a command: the message is the one line the user sees."""


@dataclass
class LoadedModel:
    """A model ready to run, with what the command line needs to know about it.

    Attributes:
        model: the classifier in eval mode, on the device (a TorchScript archive comes wrapped in
            an ``nn.Module`` that hides its layers: hooks do not work on scripted modules).
        spec: the ``--model`` value it was loaded from.
        scripted: whether it is a TorchScript archive (no layer names, no hooks).
        mean, std: the input normalization it expects (``None`` for raw ``[0, 1]`` pixels).
        size: the default image side for it.
        class_names: names of its outputs when known (ImageNet, shapes), else None.
    """

    model: nn.Module
    spec: str
    scripted: bool
    mean: Any
    std: Any
    size: int
    class_names: Sequence[str] | None = None

    def names_for(self, classes: int) -> Sequence[str] | None:
        """The class names if they match a model output of ``classes`` logits."""
        if self.class_names is not None and len(self.class_names) == classes:
            return self.class_names
        if classes == 1000 and self.class_names is None:
            from .data import imagenet_classes

            return imagenet_classes()
        return None


class _Scripted(nn.Module):
    """Runs a TorchScript module while hiding it from ``named_modules()``.

    netlens finds layers with hooks and flips ReLU ``inplace`` flags while tracing, and scripted
    modules allow neither; hidden, the archive is one opaque function, which is all that gradient
    methods and occlusion need.
    """

    def __init__(self, script: torch.jit.ScriptModule) -> None:
        super().__init__()
        for p in script.parameters():  # only input gradients are ever wanted
            p.requires_grad_(False)
        object.__setattr__(self, "script", script)
        for attr in ("input_mean", "input_std"):
            if hasattr(script, attr):
                setattr(self, attr, tuple(getattr(script, attr)))
        self.train(script.training)

    def train(self, mode: bool = True) -> _Scripted:
        self.script.train(mode)
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.script(x)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:i]"``.

    Raises:
        CliError: CUDA asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CliError(f"unknown device {name!r}; use cpu, cuda or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda was asked for but CUDA is not available on this machine "
                       "(or torch was built without it); use --device cpu or --device auto")
    return device


def load_model(spec: str, device: torch.device, *, weights: str | None = None,
               seed: int = 0) -> LoadedModel:
    """The model named by ``spec``: ``shapes``, ``torchvision:NAME`` or a file path.

    Args:
        spec: ``shapes`` (netlens's shipped model), ``torchvision:NAME`` (random init unless
            ``weights``), or the path of a pickled ``nn.Module`` (``torch.save(model, path)``) or
            of a TorchScript archive (``torch.jit.save``).
        device: where to put it.
        weights: torchvision weights (``DEFAULT`` or an enum name such as
            ``IMAGENET1K_V1``); only with ``torchvision:NAME``.
        seed: seed of a random initialization (the global RNG is restored afterwards).

    Raises:
        CliError: an unknown name, a missing or unreadable file, a state_dict instead of a model,
            weights that cannot be fetched.
    """
    if weights is not None and not spec.startswith("torchvision:"):
        raise CliError(f"--weights applies to torchvision:NAME models only, not to {spec!r}")
    if spec == "shapes":
        from .data import SHAPES_CLASSES
        from .zoo import SHAPES_MEAN, SHAPES_STD, shapes_model

        return LoadedModel(shapes_model(device=device), spec, False, SHAPES_MEAN, SHAPES_STD, 64,
                           SHAPES_CLASSES)
    if spec.startswith("torchvision:"):
        return _torchvision_model(spec, spec.partition(":")[2], device, weights, seed)
    path = Path(spec).expanduser()
    if not path.exists():
        if os.sep in spec or path.suffix:
            raise CliError(f"model file {spec!r} does not exist; check the path")
        raise CliError(f"unknown model {spec!r}; give shapes, torchvision:NAME (e.g. "
                       "torchvision:resnet50) or the path of a saved model")
    if path.is_dir():
        raise CliError(f"model path {spec!r} is a folder; give the .pt file saved by "
                       "torch.save(model, path) or torch.jit.save")
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch deprecates TorchScript, which still loads
                warnings.simplefilter("ignore", FutureWarning)
                script = torch.jit.load(str(path), map_location=device)
        except Exception as e:
            raise CliError(f"could not load the TorchScript archive {spec!r}: "
                           f"{_first_line(e)}") from None
        return _finish(_Scripted(script.eval()), spec, True)
    try:
        obj = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise CliError(f"could not load {spec!r} with torch.load ({type(e).__name__}: "
                       f"{_first_line(e)}); save the model with torch.save(model, path), with "
                       "its class importable here, or as TorchScript") from None
    if isinstance(obj, dict):
        kind = "a state_dict" if all(isinstance(v, torch.Tensor) for v in obj.values()) else \
            "a dict"
        raise CliError(f"{spec!r} holds {kind} ({len(obj)} entries), not a model; save the full "
                       "module with torch.save(model, path), or a TorchScript archive with "
                       "torch.jit.save(torch.jit.script(model), path)")
    if isinstance(obj, torch.jit.ScriptModule):
        return _finish(_Scripted(obj.eval()), spec, True)
    if not isinstance(obj, nn.Module):
        raise CliError(f"{spec!r} holds a {type(obj).__name__}, not a torch.nn.Module; save the "
                       "full module with torch.save(model, path)")
    return _finish(obj.to(device).eval(), spec, False)


def load_images(paths: Sequence[str], size: int, *, mean: Any, std: Any,
                device: torch.device) -> torch.Tensor:
    """The images at ``paths``, resized to ``size x size`` and normalized: ``(N, 3, S, S)``.

    Raises:
        CliError: a missing path, a folder, or a file PIL cannot read.
    """
    from . import image

    check_paths(paths, "image")
    out = []
    for p in paths:
        try:
            out.append(image.load(p, size, mean=mean, std=std, device=device))
        except (OSError, ValueError, TypeError) as e:
            raise CliError(f"cannot read image {p!r} ({_first_line(e)}); give a PNG, JPEG or "
                           "another format PIL opens") from None
    return torch.cat(out)


def check_paths(paths: Sequence[str], what: str) -> None:
    """Raises :class:`CliError` for the first path that is not an existing file."""
    for p in paths:
        if not os.path.exists(p):
            raise CliError(f"{what} {p!r} does not exist; check the path")
        if os.path.isdir(p):
            raise CliError(f"{what} {p!r} is a folder; give the image files themselves "
                           f"(e.g. {os.path.join(p, '*.jpg')})")


class Session:
    """One command's run: what every command does first and last.

    First: check the image paths, resolve the device, load the model (refused if it is a
    TorchScript archive and ``layers``), wrap it in a :class:`~netlens.FlatModel`, create the
    output folder. Last (:meth:`finish`): write ``manifest.json`` and say what was written.

    Args:
        args: the parsed command line (``device``, ``seed``, ``quiet``, ``model``, ``weights``,
            ``size``, ``out``).
        paths: image paths to check first; default ``args.images``.
        layers: the command reads layers by name, which TorchScript archives hide.
        raw: :meth:`images` returns raw ``[0, 1]`` pixels instead of model-normalized ones.
    """

    def __init__(self, args: Any, *, paths: Sequence[str] | None = None, layers: bool = False,
                 raw: bool = False) -> None:
        from .flat_model import FlatModel

        self.args, self.raw, self.start = args, raw, time.perf_counter()
        paths = getattr(args, "images", None) if paths is None else paths
        check_paths(paths or [], "image")  # fail before loading a model
        self.device = resolve_device(args.device)
        self.loaded = load_model(args.model, self.device, weights=args.weights, seed=args.seed)
        if layers and self.loaded.scripted:
            raise CliError(f"netlens {args.command} reads the model's layers, which a TorchScript "
                           "archive hides from hooks; save the model with torch.save(model, path)")
        if self.loaded.spec.startswith("torchvision:") and args.weights is None:
            say(args, f"note: {self.loaded.spec} has random weights (seed {args.seed}); "
                "--weights DEFAULT for pretrained ones", err=True)
        self.fm = FlatModel(self.loaded.model)
        self.size = self.loaded.size if args.size is None else args.size
        if self.size < 8:
            raise CliError(f"--size must be at least 8 pixels, got {self.size}")
        self.progress = False if args.quiet else None
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def images(self, paths: Sequence[str]) -> torch.Tensor:
        """The images ``(N, 3, S, S)`` at ``--size``, normalized for the model unless ``raw``."""
        stats = (None, None) if self.raw else (self.loaded.mean, self.loaded.std)
        return load_images(paths, self.size, mean=stats[0], std=stats[1], device=self.device)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` pixels normalized as the model expects."""
        from .image import normalize

        return normalize(pixels, self.loaded.mean, self.loaded.std)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The model's ``(B, classes)`` scores of ``x`` (no gradient)."""
        from .adapter import first_tensor

        with torch.no_grad():
            out = first_tensor(self.fm(x))
        if out is None or out.dim() != 2:
            raise CliError(f"the model must return (B, classes) scores, got "
                           f"{None if out is None else tuple(out.shape)}")
        return out

    def layer(self, name: str | None) -> str:
        """A checked layer name (close matches suggested); None: the last spatial layer."""
        return self.fm.last_spatial_layer() if name is None else self.fm.resolve_layer(name)

    def class_name(self, c: int, classes: int) -> str:
        """The name of class ``c`` of a model with ``classes`` outputs, or ``str(c)``."""
        names = self.loaded.names_for(classes)
        return names[c] if names is not None else str(c)

    def class_index(self, value: str, classes: int) -> int:
        """A class given as an index or a name, checked against the ``classes`` outputs."""
        names = self.loaded.names_for(classes)
        if value.lstrip("-").isdigit():
            index = int(value)
        elif names is not None and value in names:
            index = list(names).index(value)
        else:
            close = difflib.get_close_matches(value, list(names or []), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise CliError(f"class {value!r} is neither an index nor a class name{hint}")
        if not 0 <= index < classes:
            raise CliError(f"class {index} is out of range: the model has {classes} outputs "
                           f"(0 to {classes - 1})")
        return index

    def finish(self, argv: list[str], records: list[dict], params: dict) -> None:
        """Writes ``manifest.json`` (every option, ``params``, the files) and says so."""
        from . import export

        everything = {k: v for k, v in vars(self.args).items() if k not in ("run", "debug")}
        manifest = export.write_manifest(
            self.out, command=shlex.join(["netlens", *argv]), params={**everything, **params},
            seed=self.args.seed, files=records, device=str(self.device),
            extra={"seconds": round(time.perf_counter() - self.start, 3)})
        say(self.args, f"wrote {len(records)} files and {manifest} in "
            f"{time.perf_counter() - self.start:.1f} s")


def split_names(values: Sequence[str], registry: Any, what: str = "method") -> list[str]:
    """Names from repeated and comma-separated options, checked against ``registry``, in order
    and without repeats; ``all`` is every name of the registry."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if "all" in names:
        return list(registry)
    for n in names:
        if n not in registry:
            close = difflib.get_close_matches(n, list(registry), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise CliError(f"unknown {what} {n!r}; {hint}choose from {', '.join(registry)}, all")
    return list(dict.fromkeys(names))


def targets_from(args: Any, scores: torch.Tensor, n: int) -> torch.Tensor:
    """The ``(n, K)`` int64 targets of ``--top K`` or ``--target`` (one for all images, one per
    image, or K for a single image); default the predicted class."""
    classes = scores.shape[-1]
    if getattr(args, "top", None) is not None:
        if not 1 <= args.top <= classes:
            raise CliError(f"--top must be between 1 and {classes} (the model's outputs), got "
                           f"{args.top}")
        return scores.topk(args.top, dim=-1).indices
    if args.target is None:
        return scores.argmax(-1, keepdim=True)
    raw = [t for v in args.target for t in v.split(",") if t.strip()]
    if not all(t.strip().lstrip("-").isdigit() for t in raw):
        raise CliError(f"--target takes class indices, got {' '.join(raw)}")
    t = torch.tensor([int(v) for v in raw], device=scores.device)
    bad = t[(t < 0) | (t >= classes)]
    if bad.numel():
        raise CliError(f"--target {int(bad[0])} is out of range: the model has {classes} outputs "
                       f"(0 to {classes - 1})")
    if t.numel() == 1 or n == 1:
        return t.expand(n, -1) if n > 1 else t[None]
    if t.numel() != n:
        raise CliError(f"got {t.numel()} targets for {n} images; give one for all, one per image, "
                       "or several for a single image")
    return t[:, None]


def pixels(x: torch.Tensor, loaded: LoadedModel) -> torch.Tensor:
    """A model-normalized image back in ``[0, 1]``."""
    from .image import denormalize

    return denormalize(x, loaded.mean, loaded.std).clamp(0, 1)


def stems(paths: Sequence[str]) -> list[str]:
    """File-name stems for outputs: the images' own, numbered when two would collide."""
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{i:02d}_{s}" for i, s in enumerate(stems)]


def say(args: Any, text: str, err: bool = False) -> None:
    """Prints a line of the summary (stderr for notes) unless ``--quiet``."""
    if not args.quiet:
        print(text, file=sys.stderr if err else sys.stdout)


def _torchvision_model(spec: str, name: str, device: torch.device, weights: str | None,
                       seed: int) -> LoadedModel:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else \
            "see torchvision.models.list_models()"
        raise CliError(f"torchvision has no classification model {name!r}; {hint}")
    enum = torchvision.models.get_model_weights(name)
    w = None
    if weights is not None:
        short = weights.rpartition(".")[2]  # ResNet18_Weights.IMAGENET1K_V1 or IMAGENET1K_V1
        w = enum.DEFAULT if short == "DEFAULT" else enum.__members__.get(short)
        if w is None:
            raise CliError(f"{name} has no weights {weights!r}; use DEFAULT or one of "
                           f"{', '.join(m.name for m in enum)}")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = torchvision.models.get_model(name, weights=w)
    except Exception as e:  # no network, a corrupt cache, ...
        raise CliError(f"could not get the weights {weights} of {name} ({_first_line(e)}); "
                       "without internet, put the file in torch.hub's cache or drop "
                       "--weights for random init") from None
    loaded = _finish(model.to(device).eval(), spec, False)
    if w is not None and "categories" in w.meta:
        loaded.class_names = list(w.meta["categories"])
    return loaded


def _finish(model: nn.Module, spec: str, scripted: bool) -> LoadedModel:
    from .optvis.render import model_normalization
    from .zoo import ShapesNet

    mean, std = model_normalization(model)
    shapes = isinstance(model, ShapesNet)
    names = None
    if shapes:
        from .data import SHAPES_CLASSES

        names = SHAPES_CLASSES
    return LoadedModel(model, spec, scripted, mean, std, 64 if shapes else 224, names)


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip with ``code/`` and ``constants.pkl``; torch.save's is not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
