"""The command line's shared steps: devices, models from a spec, images from paths, targets,
and the :class:`Session` that every command opens and closes (output folder, manifest).

Models: ``shapes``, ``torchvision:NAME`` (classification, segmentation and detection models),
``timm:NAME``, ``hf:NAME`` (HuggingFace image classification) or a saved file. Targets
(``--target``): class indices, ``topK``, ``seg:C``, ``box:X0,Y0,X1,Y1[:LABEL]``,
``field:NAME[:TARGET]`` and ``channel:LAYER:C`` (:func:`parse_target`, :func:`target_columns`).

Every anticipated failure (a missing file, an unknown model, a state_dict where a model was
expected, an unreadable image, CUDA asked for but absent, an output folder under a file or not
writable, an output that would replace an input or a file netlens did not write) raises
:class:`CliError` with one line that names the problem and the fix; :mod:`netlens.cli` prints it
and exits with status 2. :class:`OutputFolder` keeps the rules of the output folder
(:data:`OUTPUT_FOLDER_RULES`).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import json
import os
import re
import shlex
import sys
import time
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["CliError", "LoadedModel", "MANIFEST", "OUTPUT_FOLDER_RULES", "OutputFolder",
           "Session", "TargetColumn", "TARGET_SYNTAX", "check_paths", "default_layer",
           "load_images", "load_model", "os_error_message", "output_kind", "parse_model_args",
           "parse_target", "pixels", "predictions", "resolve_device", "say", "split_names",
           "stems", "target_columns"]

TARGET_SYNTAX = ("class indices (3; 3,7: one each for two images, both for one), topK (top5: "
                 "the K highest-scoring classes), seg:C (class C of a segmentation model, its "
                 "predicted mask), box:X0,Y0,X1,Y1[:LABEL] (a detection, input pixels), "
                 "field:NAME[:TARGET] (a field of the output, e.g. field:aux:seg:15) or "
                 "channel:LAYER:C (a channel of a layer, e.g. channel:layer3:7)")
"""The forms of ``--target``, for help texts and error messages."""


_EXAMPLES = {"torchvision": "resnet50", "timm": "resnet18", "hf": "google/vit-base-patch16-224"}


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
        class_names: names of its outputs when known (ImageNet, shapes, the weights' or the
            config's categories), else None.
        task: ``"classification"``, ``"segmentation"`` or ``"detection"`` when the loader
            knows it (torchvision, timm, HuggingFace), else None (read from the output).
    """

    model: nn.Module
    spec: str
    scripted: bool
    mean: Any
    std: Any
    size: int
    class_names: Sequence[str] | None = None
    task: str | None = None

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

    script: torch.jit.ScriptModule  # set with object.__setattr__: not a submodule

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
               seed: int = 0, options: Mapping[str, Any] | None = None) -> LoadedModel:
    """The model named by ``spec``: ``shapes``, ``torchvision:NAME``, ``timm:NAME``,
    ``hf:NAME`` or a file path.

    Args:
        spec: ``shapes`` (netlens's shipped model); ``torchvision:NAME`` (a classification,
            segmentation or detection model of ``torchvision.models``, random init unless
            ``weights``; segmentation and detection backbones are random too, nothing is
            downloaded); ``timm:NAME`` (``timm.create_model``, random init unless ``weights``);
            ``hf:NAME`` (``transformers.AutoModelForImageClassification.from_pretrained``: a
            Hub id or a folder saved by ``save_pretrained``, with its image processor's
            normalization and size); or the path of a pickled ``nn.Module``
            (``torch.save(model, path)``) or of a TorchScript archive (``torch.jit.save``).
        device: where to put it.
        weights: torchvision weights (``DEFAULT`` or an enum name such as ``IMAGENET1K_V1``),
            or for timm ``DEFAULT`` (``pretrained=True``) or the path of a weights file.
        seed: seed of a random initialization (the global RNG is restored afterwards).
        options: keyword arguments of the model's builder (``--model-arg``), e.g.
            ``{"min_size": 320}`` for a torchvision detector; torchvision, timm and hf only.

    Raises:
        CliError: an unknown name, a missing package or file, an unreadable file, a state_dict
            instead of a model, weights that cannot be fetched, options the builder refuses.
    """
    options = dict(options or {})
    kind = spec.partition(":")[0] if spec.partition(":")[0] in ("torchvision", "timm", "hf") \
        else None
    if weights is not None and kind not in ("torchvision", "timm"):
        raise CliError(f"--weights applies only to torchvision:NAME and timm:NAME models, not to "
                       f"{spec!r} (hf:NAME loads the weights of NAME itself)")
    if options and kind is None:
        raise CliError(f"--model-arg applies to torchvision:NAME, timm:NAME and hf:NAME models, "
                       f"not to {spec!r}")
    if spec == "shapes":
        from .data import SHAPES_CLASSES
        from .zoo import SHAPES_MEAN, SHAPES_STD, shapes_model

        return LoadedModel(shapes_model(device=device), spec, False, SHAPES_MEAN, SHAPES_STD, 64,
                           SHAPES_CLASSES, "classification")
    if kind is not None:
        name = spec.partition(":")[2]
        if not name:
            raise CliError(f"--model {spec!r} names no model; e.g. {kind}:{_EXAMPLES[kind]}")
        if kind == "torchvision":
            return _torchvision_model(spec, name, device, weights, seed, options)
        if kind == "timm":
            return _timm_model(spec, name, device, weights, seed, options)
        return _hf_model(spec, name, device, seed, options)
    path = Path(spec).expanduser()
    if not path.exists():
        if os.sep in spec or path.suffix:
            raise CliError(f"model file {spec!r} does not exist; check the path")
        raise CliError(f"unknown model {spec!r}; give shapes, torchvision:NAME (e.g. "
                       "torchvision:resnet50), timm:NAME, hf:NAME or the path of a saved model")
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
                device: torch.device, keep_size: bool = False, channels: int = 3
                ) -> torch.Tensor:
    """The images at ``paths``, resized to ``size x size`` (``keep_size``: as they are, one
    image) and normalized: ``(N, 3, S, S)``.

    Raises:
        CliError: a missing path, a folder, or a file PIL cannot read.
    """
    from . import image

    check_paths(paths, "image")
    out = []
    for p in paths:
        try:
            out.append(image.load(p, None if keep_size else size, mean=mean, std=std,
                                  device=device, channels=channels))
        except (OSError, ValueError, TypeError) as e:
            raise CliError(f"cannot read image {p!r} ({_first_line(e)}); give a PNG, JPEG or "
                           "another format PIL opens") from None
    return torch.cat(out)


DREAM_SIDE = 512
"""The longest side ``netlens dream`` works at without ``--size`` (a larger photo is shrunk)."""


def _values(stats: Any) -> int:
    """How many per-channel values a mean or std has (0 for None, 1 for a number)."""
    if stats is None:
        return 0
    return len(stats) if isinstance(stats, (tuple, list)) else int(torch.as_tensor(stats).numel())


def dream_image(path: str, device: torch.device, channels: int = 3) -> torch.Tensor:
    """The photo at ``path`` as raw ``[0, 1]`` pixels ``(1, 3, H, W)`` at its own size, shrunk
    (aspect kept) to :data:`DREAM_SIDE` on its longer side if larger."""
    from . import image

    x = load_images([path], 0, mean=None, std=None, device=device, keep_size=True,
                    channels=channels)
    h, w = x.shape[-2:]
    if max(h, w) > DREAM_SIDE:
        scale = DREAM_SIDE / max(h, w)
        x = image.load(x, (max(8, round(h * scale)), max(8, round(w * scale))), mean=None,
                       std=None, device=device, channels=channels)
    return x


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""The image files a folder argument stands for."""


def expand_images(paths: Sequence[str]) -> list[str]:
    """The image files the command line names: a file as given, a folder's image files
    (:data:`IMAGE_SUFFIXES`, not its subfolders) in name order, a glob pattern (``"photos/*.jpg"``,
    for a shell that does not expand it) in name order.

    Raises:
        CliError: a folder without images, or a pattern that matches nothing.
    """
    import glob

    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(str(f) for f in Path(p).iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CliError(f"folder {p!r} has no image files ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif not os.path.exists(p) and glob.has_magic(p):
            found = sorted(f for f in glob.glob(p) if os.path.isfile(f))
            if not found:
                raise CliError(f"the pattern {p!r} matches no file")
            files += found
        else:
            files.append(p)
    return files


def check_paths(paths: Sequence[str], what: str) -> None:
    """Raises :class:`CliError` for the first path that is not an existing file."""
    for p in paths:
        if not os.path.exists(p):
            raise CliError(f"{what} {p!r} does not exist; check the path")
        if os.path.isdir(p):
            raise CliError(f"{what} {p!r} is a folder; give the image files themselves "
                           f"(e.g. {os.path.join(p, '*.jpg')})")


MANIFEST = "manifest.json"
"""The name of the manifest netlens writes in every output folder."""

OUTPUT_FOLDER_RULES = (
    "netlens never writes over an input, nor over a file it did not write: it replaces only "
    "the files that the folder's manifest.json (written by netlens) lists, and stops with one "
    "line naming any other file an output would replace (give -o a new or empty folder, or "
    "remove the file); until a run has finished, its manifest.json says complete: false and "
    "lists no files")
"""How netlens treats an output folder, for help texts (``-o``) and the README."""


class OutputFolder:
    """The output folder of a command, and the rules netlens keeps there.

    netlens replaces only files it wrote: those listed by the folder's ``manifest.json`` when
    netlens wrote it (``files``, ``earlier_files``, ``netlens_files``), never an input of the
    run, a link or a folder. Any other existing file that an output would replace stops the
    command with one line: up front for the names a command knows early (:meth:`claim`), else
    before that write (:meth:`path`). Before the first write the folder's manifest is replaced
    by an incomplete one (``"complete": false``, no ``files``, ``netlens_files``: what netlens
    wrote or is writing there), so an interrupted run leaves no manifest that lies; the real
    one is written last, by :meth:`Session.finish`.

    Args:
        path: the ``-o`` folder; checked at once (not a file, writable), created by
            :meth:`create`.
        inputs: the run's input files, never written over.
        command: the command line, recorded in the incomplete manifest.
        params: the run's parameters, recorded in it too.

    Raises:
        CliError: the folder lies under a file, cannot be written, or holds a ``manifest.json``
            that netlens did not write.
    """

    def __init__(self, path: str | os.PathLike[str], *, inputs: Sequence[str] = (),
                 command: str = "netlens", params: Mapping[str, Any] | None = None) -> None:
        self.root = Path(path)
        self.inputs = [Path(p) for p in inputs]
        self.command, self.params = command, dict(params or {})
        self.device = "cpu"
        _check_folder(self.root)
        self.owned = _owned(self.root)
        self.claimed: dict[str, None] = {}  # names this run will write, in order
        self.begun: list[str] = []  # names whose writing has begun
        self.marked: set[str] = set()  # names the incomplete manifest lists
        self.snapshot: dict[str, int] | None = None  # for begin(): the files before the run
        self.claim([MANIFEST])

    def create(self) -> None:
        """Creates the folder (and its parents)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(f"cannot create the output folder {self.root} "
                           f"({_strerror(e)}); give -o a folder you can write to") from None

    def claim(self, names: Sequence[str]) -> None:
        """Checks the names of outputs to come before any work, so a refusal wastes none."""
        for name in names:
            name = Path(name).as_posix()
            self._check(name)
            self.claimed[name] = None

    def path(self, name: str) -> Path:
        """The path to write the output ``name`` at, checked; recorded as netlens's first."""
        name = Path(name).as_posix()
        if name not in self.begun:
            self._check(name)
        self.claimed[name] = None
        if name not in self.marked:
            self.marked |= set(self.claimed)
            self._write_incomplete(sorted(self.marked - {MANIFEST}))
        self.begun.append(name)
        return self.root / name

    def begin(self) -> None:
        """For a writer whose file names are not known up front (the demo): refuses a folder
        holding any file netlens did not write, replaces its manifest (if any) by an incomplete
        one and notes what is there, so :meth:`written` sees what the run adds."""
        for rel in self._scan():
            if rel not in self.owned or (self.root / rel).is_symlink():
                raise CliError(f"{self.root / rel} exists and netlens did not write it (no "
                               f"manifest.json of netlens in {self.root} lists it); give -o a "
                               "new or empty folder, or remove the file")
        self.snapshot = self._scan()
        self.marked |= set(self.claimed)
        if MANIFEST in self.snapshot:
            self._write_incomplete(())

    def written(self) -> list[str]:
        """The outputs written so far (or begun: one may be partial), without repeats."""
        names = [n for n in dict.fromkeys(self.begun) if (self.root / n).is_file()]
        if self.snapshot is not None:
            names += sorted(n for n, t in self._scan().items()
                            if n != MANIFEST and self.snapshot.get(n) != t and n not in names)
        return names

    def _scan(self) -> dict[str, int]:
        """Every file under the folder (links too) and its modification time; not temporary
        manifests."""
        if not self.root.is_dir():
            return {}
        return {p.relative_to(self.root).as_posix(): p.lstat().st_mtime_ns
                for p in sorted(self.root.rglob("*"))
                if (p.is_file() or p.is_symlink()) and not p.name.startswith(f".{MANIFEST}.")}

    def earlier(self, records: Sequence[str]) -> list[str]:
        """Files of earlier netlens runs that are still there and not among ``records``."""
        return sorted(n for n in self.owned - set(records) - {MANIFEST}
                      if (self.root / n).is_file() and not (self.root / n).is_symlink())

    def abandon(self) -> None:
        """After an interruption or an error: the incomplete manifest lists exactly what was
        written (best effort: the run is failing already)."""
        if self.marked:
            try:
                names = self.written()
                if names or (self.root / MANIFEST).is_file():
                    self._write_incomplete(sorted(set(names)))
            except Exception:
                pass

    def _write_incomplete(self, names: Sequence[str]) -> None:
        from . import export

        try:
            export.write_manifest(
                self.root, command=self.command, params=self.params, seed=None, files=[],
                device=self.device, check=False,
                extra={"complete": False,
                       "note": "a netlens run began writing here and did not finish; "
                               "netlens_files are the files netlens wrote or was writing",
                       "netlens_files": sorted({*self.earlier(()), *names})})
        except OSError as e:
            raise CliError(f"cannot write {self.root / MANIFEST} ({_strerror(e)}); give -o a "
                           "folder you can write to") from None

    def _check(self, name: str) -> None:
        target = self.root / name
        for p in self.inputs:
            if _same_file(target, p):
                raise CliError(f"the output {target} would replace the input {p}; give -o "
                               "another folder")
        if target.is_symlink():
            raise CliError(f"{target} is a link, which netlens does not write through; give -o "
                           "a new or empty folder, or remove the link")
        if target.is_dir():
            raise CliError(f"{target} is a folder where netlens writes a file; give -o a new or "
                           "empty folder, or remove the folder")
        if target.exists() and name not in self.owned and name not in self.begun:
            raise CliError(f"{target} exists and netlens did not write it (no manifest.json "
                           f"of netlens in {self.root} lists it); give -o a new or empty folder, "
                           "or remove the file")


def _check_folder(path: Path) -> None:
    """Refuses an output folder under a file or in a place that cannot be written, up front."""
    probe = path
    while not probe.exists() and probe != probe.parent and not probe.is_symlink():
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is" if probe == path else "lies under"
        raise CliError(f"the output folder {path} {where} {probe}, which is a file, not a "
                       "folder; give -o a folder (new, empty or one netlens wrote)")
    if probe.is_dir() and not os.access(probe, os.W_OK | os.X_OK):
        readonly = hasattr(os, "statvfs") and bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        why = "a read-only file system" if readonly else "permission denied"
        raise CliError(f"cannot write the output folder {path}: {probe} is not writable "
                       f"({why}); give -o a folder you can write to")


def _owned(folder: Path) -> set[str]:
    """The files that the folder's netlens manifest says netlens wrote, with the manifest."""
    path = folder / MANIFEST
    if not path.is_file() or path.is_symlink():
        return set()
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not (isinstance(manifest, dict) and isinstance(manifest.get("versions"), dict)
            and "netlens" in manifest["versions"]):
        return set()
    names = {MANIFEST}
    for key in ("files", "earlier_files", "netlens_files"):
        for entry in manifest.get(key) or []:
            rel = entry.get("path") if isinstance(entry, dict) else entry
            if isinstance(rel, str) and not Path(rel).is_absolute() and ".." not in Path(rel).parts:
                names.add(Path(rel).as_posix())
    return names


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _strerror(e: OSError) -> str:
    return (e.strerror or _first_line(e)).lower()


def os_error_message(e: OSError, out: str | os.PathLike[str] | None) -> str:
    """One line for an OS error of a run: the path and the problem, and for a path in the
    output folder ``out`` the fix."""
    problem = e.strerror or _first_line(e)
    if not e.filename:
        return f"{type(e).__name__}: {problem}"
    if out is not None and _inside(Path(str(e.filename)), Path(out)):
        return (f"cannot write {e.filename}: {problem}; free some space or fix the folder's "
                "permissions, or give -o another folder")
    return f"{e.filename}: {problem}"


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False


class Session:
    """One command's run: what every command does first and last.

    First: check the image paths and the output folder (:class:`OutputFolder`: the names of
    ``outputs`` too), resolve the device, load the model (refused if it is a TorchScript archive
    and ``layers``), wrap it in a :class:`~netlens.FlatModel`, create the output folder. Every
    file is written at a path from :meth:`path`. Last (:meth:`finish`): write ``manifest.json``
    and say what was written. The folder is also ``args.output_folder``, for
    :func:`netlens.cli.main`'s report of an interrupted or failed run.

    Args:
        args: the parsed command line (``device``, ``seed``, ``quiet``, ``model``, ``weights``,
            ``size``, ``out``).
        paths: image paths to check first; default ``args.images``.
        layers: the command reads layers by name, which TorchScript archives hide.
        raw: :meth:`images` returns raw ``[0, 1]`` pixels instead of model-normalized ones.
        outputs: names of outputs known before the model is loaded, checked first.
        argv: the command line, for the manifest of an unfinished run.
    """

    def __init__(self, args: Any, *, paths: Sequence[str] | None = None, layers: bool = False,
                 raw: bool = False, outputs: Sequence[str] = (),
                 argv: Sequence[str] | None = None) -> None:
        from .flat_model import FlatModel

        self.args, self.raw, self.start = args, raw, time.perf_counter()
        paths = getattr(args, "images", None) if paths is None else paths
        check_paths(paths or [], "image")  # fail before loading a model
        inputs = [*(paths or []), *(v for v in (args.model, args.weights)
                                    if v is not None and os.path.isfile(v))]
        command = shlex.join(["netlens", *(argv if argv is not None else [args.command])])
        self.folder = OutputFolder(args.out, inputs=inputs, command=command,
                                   params=self._params({}))
        args.output_folder = self.folder  # from here on, main can report what was written
        self.folder.claim(outputs)
        self.device = resolve_device(args.device)
        self.folder.device = str(self.device)
        self.loaded = load_model(args.model, self.device, weights=args.weights, seed=args.seed,
                                 options=parse_model_args(getattr(args, "model_arg", None)))
        from .flat_model import input_channels

        if input_channels(self.loaded.model) == 1 and \
                any(_values(v) == 3 for v in (self.loaded.mean, self.loaded.std)):
            # ImageNet's colour statistics (the default for a saved model) are not a grayscale
            # model's: it gets raw [0, 1] pixels
            self.loaded = dataclasses.replace(self.loaded, mean=None, std=None)
        if layers and self.loaded.scripted:
            raise CliError(f"netlens {args.command} reads the model's layers, which a TorchScript "
                           "archive hides from hooks; save the model with torch.save(model, path)")
        if self.loaded.spec.startswith(("torchvision:", "timm:")) and args.weights is None:
            say(args, f"note: {self.loaded.spec} has random weights (seed {args.seed}); "
                "--weights DEFAULT for pretrained ones", err=True)
        self.fm = FlatModel(self.loaded.model)
        self.size = self.loaded.size if args.size is None else args.size
        if self.size < 8:
            raise CliError(f"--size must be at least 8 pixels, got {self.size}")
        self.progress = False if args.quiet else None
        self.out = Path(args.out)
        self.folder.create()

    def claim(self, names: Sequence[str]) -> None:
        """Checks the names of outputs to come (:meth:`OutputFolder.claim`): before the work."""
        self.folder.claim(names)

    def path(self, name: str) -> Path:
        """Where to write the output ``name``, checked (:meth:`OutputFolder.path`)."""
        return self.folder.path(name)

    def images(self, paths: Sequence[str]) -> torch.Tensor:
        """The images ``(N, 3, S, S)`` at ``--size``, normalized for the model unless ``raw``."""
        from .flat_model import input_channels

        stats = (None, None) if self.raw else (self.loaded.mean, self.loaded.std)
        channels = 1 if input_channels(self.fm.model) == 1 else 3  # grayscale for MNIST-likes
        return load_images(paths, self.size, mean=stats[0], std=stats[1], device=self.device,
                           channels=channels)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` pixels normalized as the model expects."""
        from .image import normalize

        return normalize(pixels, self.loaded.mean, self.loaded.std)

    def output(self, x: torch.Tensor) -> Any:
        """The model's raw output for ``x`` (no gradient): a tensor, a dict, a list of dicts."""
        with torch.no_grad():
            return self.fm(x)

    def scores(self, x: torch.Tensor, output: Any = None) -> torch.Tensor:
        """The model's ``(B, classes)`` scores of ``x`` (no gradient): its output, or the
        output's first tensor, ``"logits"``, ``"out"`` or ``.logits``
        (:func:`netlens.targets.unwrap`)."""
        from .targets import unwrap

        output = self.output(x) if output is None else output
        try:
            out = unwrap(output)
        except TypeError:
            out = None
        if out is None or out.dim() != 2:
            from .targets import describe_output

            raise CliError(f"the model must return (B, classes) scores, got "
                           f"{describe_output(output)}")
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

        paths = [Path(r["path"]).as_posix() for r in records]
        try:
            manifest = export.write_manifest(
                self.out, command=shlex.join(["netlens", *argv]), params=self._params(params),
                seed=self.args.seed, files=records, device=str(self.device),
                extra={"seconds": round(time.perf_counter() - self.start, 3), "complete": True,
                       "earlier_files": self.folder.earlier(paths)})
        except OSError as e:
            if e.errno is None:  # a listed file is missing: a command's mistake, not the user's
                raise
            raise CliError(f"cannot write {self.out / MANIFEST} ({_strerror(e)}); give -o a "
                           "folder you can write to") from None
        say(self.args, f"wrote {len(records)} files and {manifest} in "
            f"{time.perf_counter() - self.start:.1f} s")

    def _params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Every option of the command line, then ``params``."""
        skip = ("run", "debug", "output_folder")
        return {**{k: v for k, v in vars(self.args).items() if k not in skip}, **params}


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


def _class_targets(raw: list[int] | None, top: int | None, scores: torch.Tensor, n: int,
                   what: str = "--top") -> torch.Tensor:
    """The ``(n, K)`` int64 classes of ``--top K`` or of class indices ``raw`` (one for all
    images, one per image, or K for a single image); default the predicted class."""
    classes = scores.shape[-1]
    if top is not None:
        if not 1 <= top <= classes:
            raise CliError(f"{what} must be between 1 and {classes} (the model's outputs), got "
                           f"{top}")
        return scores.topk(top, dim=-1).indices
    if raw is None:
        return scores.argmax(-1, keepdim=True)
    t = torch.tensor(raw, device=scores.device)
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


# -- targets beyond classes ----------------------------------------------------------------------
@dataclass
class TargetColumn:
    """One target for every image: what one call of an attribution method explains.

    Attributes:
        target: the method's ``target=``: a ``(B,)`` int64 tensor of class indices, or a
            :mod:`netlens.targets` target.
        tags: per image, the tag of its file names (``3``, ``seg15``, ``box0``, ...).
        specs: per image, the target as the manifest records it: the class index, or the
            ``--target`` text (``seg:15``).
        classes: per image, the name of the class explained, when there is one.
    """

    target: Any
    tags: list[str]
    specs: list[Any]
    classes: list[str | None] = field(default_factory=list)


_CLASSES = re.compile(r"^[\s\d,-]*$")
_NUMBER = r"\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)\s*"
_BOX = re.compile(rf"^({_NUMBER}),({_NUMBER}),({_NUMBER}),({_NUMBER})(?::(.+))?$")


def _target_error(text: str, why: str) -> CliError:
    return CliError(f"--target {text!r} {why}; give {TARGET_SYNTAX}")


def parse_target(text: str, *, names: Sequence[str] | None = None,
                 resolve_layer: Any = None) -> list[int] | Any:
    """One ``--target`` value: a list of class indices, or a :mod:`netlens.targets` target.

    The forms (:data:`TARGET_SYNTAX`) are told apart by their start, so no value has two
    readings: digits and commas are class indices (``3``, ``3,7``); ``topK`` is
    :class:`~netlens.targets.TopK`; ``seg:C`` :class:`~netlens.targets.Segmentation` (the
    predicted mask of class C); ``box:X0,Y0,X1,Y1[:LABEL]`` :class:`~netlens.targets.Detection`
    (input pixels; LABEL an index or, with known class names, a name; without it any label);
    ``field:NAME[:TARGET]`` :class:`~netlens.targets.Output` (NAME up to the next colon, a key
    or attribute, digits a tuple index; TARGET any form but topK, default the predicted class);
    ``channel:LAYER:C`` :class:`~netlens.targets.Channel` (C after the last colon, so LAYER may
    hold colons: ``channel:layer1.0.relu:1:5``).

    Args:
        text: the value.
        names: the model's class names, for box labels given by name.
        resolve_layer: a function that checks a layer name and returns it (close matches
            suggested); default: the name as given.

    Raises:
        CliError: a value of no known form, naming the forms.
    """
    from . import targets as T

    value = text.strip()
    head, sep, rest = value.partition(":")
    if not sep:
        match = re.fullmatch(r"top(\d+)", value)
        if match:
            if int(match[1]) < 1:
                raise _target_error(text, "asks for no class")
            return T.TopK(int(match[1]))
        if _CLASSES.match(value):
            raw = [t for t in value.split(",") if t.strip()]
            if all(t.strip().lstrip("-").isdigit() for t in raw):
                return [int(t) for t in raw]
        raise _target_error(text, "is not a target")
    if head == "seg":
        if not rest.strip().isdigit():
            raise _target_error(text, "needs a class index after seg: (seg:15)")
        return T.Segmentation(int(rest))
    if head == "box":
        match = _BOX.match(rest)
        if not match:
            raise _target_error(text, "needs four numbers X0,Y0,X1,Y1 after box:, then "
                                      "optionally :LABEL (box:10,20,90,120:3)")
        x0, y0, x1, y1 = (float(v) for v in match.groups()[:4])
        if not (x0 < x1 and y0 < y1):
            raise _target_error(text, "is not a box: X0 < X1 and Y0 < Y1 are needed (corners "
                                      "left, top, right, bottom in input pixels)")
        labels = None
        if match[5] is not None:
            labels = [torch.tensor([_label(match[5].strip(), names, text)])]
        return T.Detection([torch.tensor([[x0, y0, x1, y1]])], labels=labels)
    if head == "field":
        name, _, inner = rest.partition(":")
        if not name:
            raise _target_error(text, "needs a field name after field: (field:aux)")
        key: str | int = int(name) if name.isdigit() else name
        if not inner:
            return T.Output(key)
        sub = parse_target(inner, names=names, resolve_layer=resolve_layer)
        if isinstance(sub, list):
            if len(sub) != 1:
                raise _target_error(text, "takes one class after field:NAME: (field:aux:3)")
            sub = sub[0]
        if isinstance(sub, T.TopK) or isinstance(sub, T.Channel):
            raise _target_error(text, f"cannot explain {inner!r} inside a field (topK and "
                                      "channel targets read the whole model)")
        return T.Output(key, sub)
    if head == "channel":
        layer, _, channel = rest.rpartition(":")
        if not layer or not channel.strip().isdigit():
            raise _target_error(text, "needs LAYER:C after channel: (channel:layer3:7)")
        layer = resolve_layer(layer) if resolve_layer is not None else layer
        return T.Channel(layer, int(channel))
    raise _target_error(text, f"has an unknown kind {head!r}")


def _label(value: str, names: Sequence[str] | None, text: str) -> int:
    if value.isdigit():
        return int(value)
    if names is not None and value in names:
        return list(names).index(value)
    close = difflib.get_close_matches(value, list(names or []), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise _target_error(text, f"has the label {value!r}, which is neither an index nor a class "
                              f"name of the model{hint}")


def output_kind(output: Any) -> str:
    """``"detection"`` (a list of dicts with ``boxes``), ``"segmentation"`` (scores
    ``(B, classes, H, W)``), ``"classification"`` (``(B, classes)``) or ``"other"``."""
    from .targets import unwrap

    if isinstance(output, (list, tuple)) and output and all(
            isinstance(o, Mapping) and "boxes" in o for o in output):
        return "detection"
    try:
        out = unwrap(output)
    except TypeError:
        return "other"
    return {4: "segmentation", 2: "classification"}.get(out.dim(), "other")


def target_columns(values: Sequence[str] | None, top: int | None, output: Any, n: int, *,
                   class_name: Any, names: Sequence[str] | None = None,
                   resolve_layer: Any = None) -> list[TargetColumn]:
    """The targets of ``--target``/``--top`` for ``n`` images, as columns (one method call
    each).

    Every value (:func:`parse_target`) is one target, and class indices ``3,7`` are two. One
    target is for every image; as many targets as images are one per image; a single image
    takes several. ``--top K`` and ``topK`` are the K highest-scoring classes of each image.
    Without a target: the predicted class (classifiers), the class covering most pixels
    (segmentation), the highest-scoring box (detection).

    Args:
        values: the ``--target`` values, or None.
        top: ``--top K``, or None.
        output: the model's output for the images (the targets are checked against it).
        n: the number of images.
        class_name: ``class_name(c, classes)`` -> the name of class ``c`` of ``classes``.
        names: the model's class names when known (box labels by name).
        resolve_layer: checks the layer of ``channel:`` targets (see :func:`parse_target`).

    Raises:
        CliError: an unknown form, a target that does not fit the output, a count that is
            neither 1, n, nor several for one image.
    """
    from .targets import unwrap

    kind = output_kind(output)
    parsed: list[Any] = []
    for v in values or []:
        item = parse_target(v, names=names, resolve_layer=resolve_layer)
        parsed.extend(item if isinstance(item, list) else [item])
    tops = [t for t in parsed if _is_topk(t)]
    if tops and len(parsed) > 1:
        raise CliError("--target topK stands alone (the K highest-scoring classes of every "
                       "image); give it without other targets")
    if values is not None and not parsed:
        raise CliError(f"--target is empty; give {TARGET_SYNTAX}")
    if top is not None or tops or all(isinstance(t, int) for t in parsed):
        if kind in ("segmentation", "detection") and (parsed or top is not None or tops):
            raise CliError(_class_on(kind, output))
        if kind == "segmentation":
            return [_default_segmentation(unwrap(output), class_name, names)]
        if kind == "detection":
            return [_default_detection(output, class_name, names)]
        scores = _scores_of(output)
        if tops:
            top, what = tops[0].k, f"the K of --target top{tops[0].k}"
        else:
            what = "--top"
        t = _class_targets(parsed if values is not None and not tops else None, top, scores, n,
                           what)
        classes = scores.shape[-1]
        return [TargetColumn(t[:, k], [str(int(c)) for c in t[:, k]],
                             [int(c) for c in t[:, k]],
                             [class_name(int(c), classes) for c in t[:, k]])
                for k in range(t.shape[1])]
    texts = [t for v in values or [] for t in ([v] if ":" in v else
                                                [c for c in v.split(",") if c.strip()])]
    for token, text in zip(parsed, texts):
        _check_fits(token, output, text.strip())
    if len(parsed) == 1 or n == 1:
        per_image = [([t] * n, [x] * n) for t, x in zip(parsed, texts)]
    elif len(parsed) == n:
        per_image = [(parsed, texts)]
    else:
        raise CliError(f"got {len(parsed)} targets for {n} images; give one for all, one per "
                       "image, or several for a single image")
    columns = []
    for k, (tokens, token_texts) in enumerate(per_image):
        target = _combine(tokens, output)
        described = [_describe(tok, i, output, k, class_name, names) for i, tok in
                     enumerate(tokens)]
        columns.append(TargetColumn(target, [d[0] for d in described],
                                    [tok if isinstance(tok, int) else t.strip()
                                     for tok, t in zip(tokens, token_texts)],
                                    [d[1] for d in described]))
    return columns


def _is_topk(t: Any) -> bool:
    from .targets import TopK

    return isinstance(t, TopK)


def _scores_of(output: Any) -> torch.Tensor:
    from .targets import describe_output, unwrap

    try:
        out = unwrap(output)
    except TypeError:
        out = None
    if out is None or out.dim() != 2:
        raise CliError(f"class targets need (B, classes) scores, but the model returns "
                       f"{describe_output(output)}; give --target field:NAME:C for a field of "
                       "the output, or another form")
    return out


def _class_on(kind: str, output: Any) -> str:
    from .targets import describe_output

    fix = ("seg:C (class C over its predicted mask)" if kind == "segmentation" else
           "box:X0,Y0,X1,Y1[:LABEL] (a box in input pixels)")
    return (f"class targets (--target C, --top K, topK) explain a (B, classes) output, but this "
            f"{kind} model returns {describe_output(output)}; give --target {fix}, or no "
            "--target for the default")


_FIXES = {"classification": "a class index (3) or topK", "segmentation": "seg:C",
          "detection": "box:X0,Y0,X1,Y1[:LABEL]",
          "other": "field:NAME[:TARGET] (a field of the output) or channel:LAYER:C"}


def _check_fits(token: Any, output: Any, text: str) -> None:
    """Raises :class:`CliError` when a target cannot read the model's output, naming the
    forms that can."""
    from . import targets as T

    kind = output_kind(output)
    if isinstance(token, (int, T.Class)):
        if kind in ("segmentation", "detection"):
            raise CliError(_class_on(kind, output))
        wants = "classification"
    elif isinstance(token, T.Segmentation):
        wants = "segmentation"
    elif isinstance(token, T.Detection):
        wants = "detection"
        if kind == "other":
            return  # YOLO-style (B, N, 4 + classes) tensors are detections too
    elif isinstance(token, T.Output):
        try:
            picked = token.pick(output)
        except ValueError:
            raise CliError(f"--target {text}: the model's output has no field "
                           f"{token.field!r}; it is {T.describe_output(output)}") from None
        _check_fits(token.target, picked, text)
        return
    else:
        return
    if kind != wants:
        raise CliError(f"--target {text} explains a {wants} output, but the model returns "
                       f"{T.describe_output(output)}; give --target {_FIXES[kind]}")


def _combine(tokens: list[Any], output: Any) -> Any:
    """One batch target from one target per image (the same object: that target)."""
    from . import targets as T

    first = tokens[0]
    if all(t is first for t in tokens):
        if isinstance(first, int):
            return torch.full((len(tokens),), first, dtype=torch.long)
        return first
    kinds = {type(t) for t in tokens}
    if len(kinds) != 1:
        raise CliError("one target per image must be of one kind for every image (all class "
                       "indices, all seg:, all box:, ...); run the images separately otherwise")
    if isinstance(first, int):
        return torch.tensor(tokens, dtype=torch.long)
    if isinstance(first, T.Segmentation):
        return T.Segmentation(torch.cat([t.c for t in tokens]))
    if isinstance(first, T.Detection):
        labelled = [t.labels is not None for t in tokens]
        if any(labelled) and not all(labelled):
            raise CliError("one box per image: give a :LABEL to every box or to none")
        return T.Detection([t.boxes[0] for t in tokens],
                           labels=[t.labels[0] for t in tokens] if all(labelled) else None)
    if isinstance(first, T.Output):
        if len({t.field for t in tokens}) != 1:
            raise CliError("one field: target per image must read the same field in every "
                           "image")
        return T.Output(first.field, _combine([t.target for t in tokens], first.pick(output)))
    if isinstance(first, T.Class):  # the class of a field: given, or predicted, per image
        if all(t.classes is None for t in tokens):
            return T.Class(None)
        if any(t.classes is None for t in tokens):
            raise CliError("one field: target per image: give a class to every image's field "
                           "target or to none")
        return T.Class(torch.cat([t.classes for t in tokens]))
    if all((t.layer, t.channel) == (first.layer, first.channel) for t in tokens):
        return first
    raise CliError("channel: targets differ per image; give one channel for every image or "
                   "run the images separately")


def _describe(token: Any, i: int, output: Any, k: int, class_name: Any,
              names: Sequence[str] | None) -> tuple[str, str | None]:
    """The file tag of image ``i``'s target and the class it explains (or None)."""
    from . import targets as T

    if isinstance(token, int):
        return str(token), class_name(token, _classes(output))
    if isinstance(token, T.Class):
        classes = token.bind(output).classes
        assert classes is not None  # a bound Class has its classes
        c = int(classes[i] if classes.numel() > 1 else classes[0])
        return str(c), class_name(c, _classes(output))
    if isinstance(token, T.Segmentation):
        c = int(token.c[i] if token.c.numel() > 1 else token.c[0])
        return f"seg{c}", class_name(c, _classes(output))
    if isinstance(token, T.Detection):
        label = token.labels[0] if token.labels is not None else None
        name = None if label is None else class_name(int(label[0]), len(names or []))
        return f"box{k}", name
    if isinstance(token, T.Output):
        tag, name = _describe(token.target, i, token.pick(output), k, class_name, names)
        return f"{token.field}-{tag}", name
    if isinstance(token, T.Channel):
        return f"channel-{token.layer.replace(':', '-')}-{token.channel}", None
    return f"target{k}", None


def _classes(output: Any) -> int:
    """The number of classes of a classification or segmentation output (0 if neither)."""
    from .targets import unwrap

    try:
        out = unwrap(output)
    except TypeError:
        return 0
    return int(out.shape[1]) if out.dim() in (2, 4) else 0


def _default_segmentation(out: torch.Tensor, class_name: Any, names: Sequence[str] | None,
                          ) -> TargetColumn:
    """Per image, the class that covers most pixels (a class named ``__background__`` only
    when nothing else is predicted)."""
    from .targets import Segmentation

    counts = torch.nn.functional.one_hot(out.argmax(1).flatten(1), out.shape[1]).sum(1)
    if names is not None and len(names) == out.shape[1]:
        background = [j for j, name in enumerate(names) if name.strip("_") == "background"]
        others = counts.clone()
        others[:, background] = 0
        counts = torch.where(others.sum(1, keepdim=True) > 0, others, counts)
    c = counts.argmax(1)
    classes = [int(v) for v in c]
    return TargetColumn(Segmentation(c), [f"seg{v}" for v in classes],
                        [f"seg:{v}" for v in classes],
                        [class_name(v, out.shape[1]) for v in classes])


def _default_detection(output: Any, class_name: Any, names: Sequence[str] | None,
                       ) -> TargetColumn:
    """Per image, the highest-scoring predicted box with its label."""
    from .targets import Detection

    boxes, labels, specs = [], [], []
    for i, o in enumerate(output):
        if o["boxes"].shape[0] == 0:
            raise CliError(f"the detector predicts no box in image {i} above its score "
                           "threshold, so there is nothing to explain by default; give --target "
                           "box:X0,Y0,X1,Y1, or lower the threshold, e.g. --model-arg "
                           "box_score_thresh=0.0 for torchvision detectors")
        best = int(_ranked(o)[0])
        boxes.append(o["boxes"][best:best + 1].detach())
        labels.append(o["labels"][best:best + 1].detach())
        specs.append("box:" + ",".join(f"{float(v):.1f}" for v in boxes[-1][0]) +
                     f":{int(labels[-1][0])}")
    return TargetColumn(Detection(boxes, labels=labels), ["box0"] * len(boxes), specs,
                        [class_name(int(v[0]), len(names or [])) for v in labels])


def _ranked(detections: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The boxes of one image's detections by decreasing score (ties: in the model's order)."""
    return torch.sort(detections["scores"].detach(), descending=True, stable=True).indices


def predictions(output: Any, i: int, class_name: Any, names: Sequence[str] | None = None,
                top: int = 3) -> str:
    """What the model predicts for image ``i``, in a few words: the ``top`` classes with their
    probability, the classes covering most pixels, or the highest-scoring boxes."""
    from .targets import describe_output, unwrap

    kind = output_kind(output)
    if kind == "detection":
        o = output[i]
        order = _ranked(o)[:top]
        shown = [f"{class_name(int(o['labels'][j]), len(names or []))} "
                 f"{float(o['scores'][j]):.2f} at "
                 f"[{', '.join(f'{float(v):.0f}' for v in o['boxes'][j])}]" for j in order]
        count = o["boxes"].shape[0]
        return f"{count} box{'es' if count != 1 else ''}" + (f" ({', '.join(shown)})"
                                                              if shown else "")
    if kind == "segmentation":
        out = unwrap(output)
        share = torch.nn.functional.one_hot(out[i].argmax(0).flatten(), out.shape[1]).float() \
            .mean(0)
        best = share.topk(min(top, share.numel()))
        return "pixels " + ", ".join(f"{class_name(int(c), out.shape[1])} {float(p):.2f}"
                                     for p, c in zip(best.values, best.indices) if p > 0)
    if kind == "classification":
        probs = torch.softmax(unwrap(output).float(), -1)
        best = probs[i].topk(min(top, probs.shape[-1]))
        return ", ".join(f"{class_name(int(c), probs.shape[-1])} {float(p):.2f}"
                         for p, c in zip(best.values, best.indices))
    return f"the model returns {describe_output(output)}"


def default_layer(fm: Any, x: torch.Tensor, output: Any) -> str | None:
    """The CAM layer of a detector: the last spatial layer of its backbone with one map per
    image (a detector's last spatial layer is its ROI pooling, one map per proposal); None for
    other models (the methods' own default)."""
    if output_kind(output) != "detection":
        return None
    fm.ensure_traced(x)
    batch = fm.traced_input_shape[0]
    maps = [c for c in fm.layers if c.layout.kind == "nchw" and c.shape is not None
            and not c.functional and c.shape[0] == batch and c.shape[2] * c.shape[3] > 1]
    if not maps:
        return None
    backbone = [c for c in maps if c.module_name.startswith("backbone.")]
    return max(backbone or maps, key=lambda c: c.end_order).name


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


_TORCHVISION_TASKS = ("classification", "segmentation", "detection")


def _torchvision_model(spec: str, name: str, device: torch.device, weights: str | None,
                       seed: int, options: dict[str, Any]) -> LoadedModel:
    import torchvision

    models = torchvision.models
    modules = {"classification": models, "segmentation": models.segmentation,
               "detection": models.detection}
    tasks = {n: task for task in reversed(_TORCHVISION_TASKS)
             for n in models.list_models(module=modules[task])}
    if name not in tasks:
        close = difflib.get_close_matches(name, list(tasks), n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else \
            "see torchvision.models.list_models()"
        raise CliError(f"torchvision has no classification, segmentation or detection model "
                       f"{name!r}; {hint}")
    task = tasks[name]
    enum = models.get_model_weights(name)
    w = None
    if weights is not None:
        short = weights.rpartition(".")[2]  # ResNet18_Weights.IMAGENET1K_V1 or IMAGENET1K_V1
        w = enum.DEFAULT if short == "DEFAULT" else enum.__members__.get(short)
        if w is None:
            raise CliError(f"{name} has no weights {weights!r}; use DEFAULT or one of "
                           f"{', '.join(m.name for m in enum)}")
    builder = models.get_model_builder(name)
    if "weights_backbone" in inspect.signature(builder).parameters:
        options.setdefault("weights_backbone", None)  # random init downloads nothing
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder(weights=w, **options)
    except TypeError as e:
        raise CliError(f"torchvision's {name} refused the --model-arg options "
                       f"{_options_text(options)} ({_first_line(e)}); see the documentation of "
                       f"torchvision.models.{builder.__name__}") from None
    except Exception as e:  # no network, a corrupt cache, ...
        if w is None:
            raise CliError(f"could not build torchvision's {name} ({type(e).__name__}: "
                           f"{_first_line(e)}); check the --model-arg options") from None
        raise CliError(f"could not get the weights {weights} of {name} ({_first_line(e)}); "
                       "without internet, put the file in torch.hub's cache or drop "
                       "--weights for random init") from None
    loaded = _finish(model.to(device).eval(), spec, False)
    loaded.task = task
    if task == "detection":  # torchvision detectors normalize [0, 1] pixels themselves
        loaded.mean = loaded.std = None
    if w is not None and "categories" in w.meta:
        loaded.class_names = list(w.meta["categories"])
    return loaded


def _timm_model(spec: str, name: str, device: torch.device, weights: str | None, seed: int,
                options: dict[str, Any]) -> LoadedModel:
    try:
        import timm
        import timm.data
    except ImportError:
        raise CliError(f"--model {spec} needs the timm package; pip install timm") from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models()"
        raise CliError(f"timm has no model {name!r}; {hint}")
    pretrained = weights is not None
    if weights is not None and weights != "DEFAULT":
        if not os.path.isfile(weights):
            raise CliError(f"timm models take --weights DEFAULT (the pretrained weights of the "
                           f"name's tag, e.g. timm:resnet18.a1_in1k) or the path of a weights "
                           f"file, not {weights!r}")
        options.setdefault("pretrained_cfg_overlay", {"file": str(weights)})
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(name, pretrained=pretrained, **options)
    except TypeError as e:
        raise CliError(f"timm's {name} refused the --model-arg options {_options_text(options)} "
                       f"({_first_line(e)})") from None
    except Exception as e:
        if not pretrained:
            raise CliError(f"could not build timm's {name} ({type(e).__name__}: "
                           f"{_first_line(e)}); check the --model-arg options") from None
        raise CliError(f"could not get the pretrained weights of timm's {name} "
                       f"({_first_line(e)}); without internet, give --weights PATH of a weights "
                       "file, or drop --weights for random init") from None
    config = timm.data.resolve_data_config({}, model=model)
    size = options.get("img_size", config["input_size"][-1])
    size = int(size if isinstance(size, int) else size[-1])
    names = None
    try:
        subset = timm.data.infer_imagenet_subset(model)
        if subset and subset != "imagenet-1k":  # 1k: netlens's own ImageNet names
            info = timm.data.ImageNetInfo(subset)
            names = [info.index_to_description(i).split(",")[0]
                     for i in range(info.num_classes())]
    except Exception:  # class names are a nicety; timm versions differ
        names = None
    return LoadedModel(model.to(device).eval(), spec, False, tuple(config["mean"]),
                       tuple(config["std"]), size, names, "classification")


def _hf_model(spec: str, name: str, device: torch.device, seed: int, options: dict[str, Any],
              ) -> LoadedModel:
    try:
        import transformers
    except ImportError:
        raise CliError(f"--model {spec} needs the transformers package; pip install "
                       "transformers") from None
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # netlens has its own; warnings only for errors
    hf_logging.set_verbosity_error()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = transformers.AutoModelForImageClassification.from_pretrained(name, **options)
    except Exception as e:  # an unknown id, no internet, not an image classifier, ...
        raise CliError(f"could not load the HuggingFace image classifier {name!r} "
                       f"({type(e).__name__}: {_first_line(e)}); give a Hub id (cached here "
                       "when offline) or a folder saved by save_pretrained") from None
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(name)
    except Exception:
        processor = None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    loaded = _finish(model.to(device).eval(), spec, False)
    loaded.task = "classification"
    if processor is not None and hasattr(processor, "image_mean"):
        normalize = getattr(processor, "do_normalize", True)
        loaded.mean = tuple(processor.image_mean) if normalize else None
        loaded.std = tuple(processor.image_std) if normalize else None
    size = _hf_size(getattr(processor, "size", None)) or getattr(model.config, "image_size", None)
    if isinstance(size, (tuple, list)):
        size = size[-1]
    if isinstance(size, int):
        loaded.size = size
    labels = getattr(model.config, "id2label", None) or {}
    names = [str(labels.get(i, labels.get(str(i), i))) for i in range(len(labels))]
    if names and names != [f"LABEL_{i}" for i in range(len(names))]:  # not the placeholders
        loaded.class_names = names
    return loaded


def _hf_size(size: Any) -> int | None:
    """The image side of a HuggingFace image processor's ``size``."""
    for key in ("height", "shortest_edge"):
        value = size.get(key) if isinstance(size, Mapping) else getattr(size, key, None)
        if isinstance(value, int):
            return value
    return None


def _options_text(options: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in options.items()) or "(none)"


def parse_model_args(values: Sequence[str] | None) -> dict[str, Any]:
    """``--model-arg KEY=VALUE`` options as keyword arguments: each value a Python literal
    (``320``, ``0.0``, ``True``, ``(1, 2)``, ``None``) or else a string.

    Raises:
        CliError: an option that is not ``KEY=VALUE`` with a Python identifier as KEY.
    """
    options: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise CliError(f"--model-arg {item!r} is not KEY=VALUE (e.g. --model-arg "
                           "box_score_thresh=0.0)")
        try:
            options[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key] = value.strip()
    return options


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
