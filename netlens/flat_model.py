"""``FlatModel``: a flat, named, hooked view of any model that computes exactly what it computes.

Every layer call of the forward pass is reachable by PyTorch's dotted name (``"layer4.1.conv2"``,
``"features.28"``); the k-th call of a module that runs several times as ``"layer1.0.relu:1"``;
a functional activation with no module as ``"inception3a.branch1.relu()"`` (see
:mod:`netlens.adapter`). Activations and gradients are recorded on request, and a forward pass
can stop right after a layer.

Example:
    >>> import torch, torchvision
    >>> fm = FlatModel(torchvision.models.resnet18().eval())
    >>> fm.layer_names[:4]
    ['conv1', 'bn1', 'relu', 'maxpool']
    >>> x = torch.randn(1, 3, 64, 64, requires_grad=True)
    >>> with fm.record(["layer3", "layer1.0.relu:1"], gradients=True) as rec:
    ...     fm(x)[0, 7].backward()
    >>> rec.activations["layer3"].shape, rec.gradients["layer3"].shape
    (torch.Size([1, 256, 4, 4]), torch.Size([1, 256, 4, 4]))
    >>> fm(x, until="layer2").shape  # nothing after layer2 is computed
    torch.Size([1, 128, 8, 8])
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import torch
from torch import nn

from .adapter import (
    Call,
    CallRecord,
    CallTracer,
    Layout,
    LayoutLike,
    _StopForward,
    as_layout,
    copy_inputs,
    first_tensor,
    guarded_calls,
    model_lock,
    split_call_name,
)
from .hooks import HookDict, ModuleHook, TensorHook

__all__ = ["FlatModel", "Recording", "UnknownLayerError", "check_input", "input_channels",
           "model_dtype", "layouts"]

# Layouts the caller gave (``layout=`` of a method, or ``netlens.layouts({...})``): layer name
# -> Layout, for the calls inside the block on this thread (a context variable: other threads
# and the traced records are not changed).
_LAYOUTS: contextvars.ContextVar[dict[str, Layout]] = contextvars.ContextVar("netlens_layouts",
                                                                             default={})


@contextlib.contextmanager
def layouts(given: dict[str, LayoutLike]) -> Iterator[None]:
    """Inside the block, the named layers are viewed with the given layouts (in every method).

    For a layer netlens reads wrong or cannot view as a map (``FlatModel(model).layout(name)``
    tells you what it read). Each method that reads a layer also takes ``layout=`` for its own
    ``layer=``.

    Args:
        given: layer name -> a :class:`~netlens.adapter.Layout`, a kind's name (``"nchw"``,
            ``"nhwc"``, ``"tokens"``, ``"vector"``) or a function ``output -> [B, C, h, w]``.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18().eval()
        >>> with layouts({"layer4": lambda t: t.mean(1, keepdim=True)}):  # one channel
        ...     FlatModel(m).layout("layer4").kind
        'custom'
    """
    merged = dict(_LAYOUTS.get())
    merged.update({name: as_layout(spec) for name, spec in given.items()})
    token = _LAYOUTS.set(merged)
    try:
        yield
    finally:
        _LAYOUTS.reset(token)

# Layers found by earlier FlatModels of the same model object, so that the pure attribution
# functions, which wrap a plain module in a new FlatModel on every call, do not pay one extra
# forward pass per call. An entry is reused only when the model's modules (identity) and the
# input's shape, dtype and device are unchanged; otherwise the model is traced again (layers are
# always found in eval mode, so the mode is not part of the key). Weak keys: the cache never
# keeps a model alive, and holds no tensor. Entries are built under the model's lock and
# published whole, by one assignment (a thread never sees half an entry).
_TRACES: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()
GUESSED_SIDES = (28, 32, 64, 96, 128, 299)
"""The square sizes a model that declares no input size is tried at when it fails at 224."""

_TRACES_GUARD = threading.Lock()  # the dictionary itself, shared by every model


def _trace_key(model: nn.Module, x: torch.Tensor) -> tuple:
    modules = tuple(id(m) for m in model.modules())
    return modules, tuple(x.shape[1:]), x.dtype, x.device


def _cached_trace(model: nn.Module) -> dict[str, Any] | None:
    with _TRACES_GUARD:
        try:
            return _TRACES.get(model)
        except TypeError:  # a module that cannot be a weak key is traced every time
            return None


def _publish_trace(model: nn.Module, entry: dict[str, Any]) -> None:
    with _TRACES_GUARD, contextlib.suppress(TypeError):
        _TRACES[model] = entry


def _note(error: BaseException, note: str) -> None:
    """Adds ``note`` to an exception's notes (Python >= 3.11; older ones leave it unchanged)."""
    add_note = getattr(error, "add_note", None)
    if add_note is not None:
        add_note(note)


class UnknownLayerError(ValueError, KeyError):
    """A layer name the model does not have (a ``ValueError`` and a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


# Netlens 1.x's generic layer names (its MODULE_NAME_MAP); other modules: a ``name`` class
# attribute, else the class name
_ORIGINAL_NAMES: dict[type, str] = {
    nn.Conv2d: "conv", nn.ReLU: "relu", nn.MaxPool2d: "pool", nn.BatchNorm2d: "bn",
    nn.AdaptiveAvgPool2d: "avgpool", nn.Dropout: "dropout", nn.Linear: "linear",
}
_ORIGINAL_KEY = re.compile(r"^(?:[\w]+-)*[\w]+-\d+$|^flatten$")


def _original_name(module: nn.Module) -> str:
    name = _ORIGINAL_NAMES.get(type(module))
    if name is None:
        own = getattr(type(module), "name", None)
        name = own if isinstance(own, str) else type(module).__name__
    return name


def original_keys(model: nn.Module) -> dict[str, str]:
    """Netlens 1.x's layer keys of ``model`` -> the module names they meant.

    The original named each layer ``<parent path with "-">-<generic name>-<n>``
    (``features-conv-4``, ``classifier-linear-2``, ``layer1-BasicBlock-0``, ``conv-0``): the
    leaves of ``named_modules()`` and ResNet's blocks (kept whole), ``n`` counting the same
    prefixed name from 0, the generic names ``conv``, ``relu``, ``pool``, ``bn``, ``avgpool``,
    ``dropout``, ``linear`` (else the class name), and ``flatten`` for the input of the first
    linear layer (here the layer that feeds it: its values, unflattened). Top-level modules of
    GoogLeNet-style models kept their own names (``inception4c``), as netlens does.
    """
    from torchvision.models import GoogLeNet
    from torchvision.models.resnet import BasicBlock, Bottleneck

    if isinstance(model, GoogLeNet):  # the original's GoogLeNet adapter: the top-level names
        return {name: name for name, _ in model.named_children() if name not in ("aux1", "aux2")}
    keys: dict[str, str] = {}
    counts: dict[str, int] = {}
    whole: list[str] = []
    for name, module in model.named_modules():
        if name == "" or any(name.startswith(w + ".") for w in whole):
            continue
        kept = isinstance(module, (BasicBlock, Bottleneck))
        if kept:
            whole.append(name)
        elif next(module.children(), None) is not None:
            continue
        parent = name.rpartition(".")[0]
        prefix = (parent.replace(".", "-") + "-" if parent else "") + _original_name(module)
        n = counts.get(prefix, 0)
        counts[prefix] = n + 1
        keys[f"{prefix}-{n}"] = name
    return keys


def input_channels(model: nn.Module) -> int | None:
    """Channels the model expects: ``in_channels`` of its first convolution, if any."""
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return int(module.in_channels)
    return None


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of all of the model's floating parameters, or None (no floating
    parameters, or several dtypes: a mixed-precision model)."""
    cache = guarded_calls().get(id(model))  # inside a method call: its dtypes do not change
    if cache is not None and "dtype" in cache:
        return cache["dtype"]
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    dtype = dtypes.pop() if len(dtypes) == 1 else None
    if cache is not None:
        cache["dtype"] = dtype
    return dtype


_DTYPE_METHODS = {torch.float32: "float", torch.float64: "double", torch.float16: "half",
                  torch.bfloat16: "bfloat16"}


def _convert(name: str, dtype: torch.dtype) -> str:
    method = _DTYPE_METHODS.get(dtype)
    return f"{name}.{method}()" if method else f"{name}.to({dtype})"


def _uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile``d model wraps (it computes the same function and its
    modules can be hooked; the compiled wrapper's graph cannot), with a warning; else ``model``.
    """
    import sys

    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # absent: nothing was compiled
    wrapper = getattr(eval_frame, "OptimizedModule", None)
    if wrapper is None or not isinstance(model, wrapper):
        return model
    import warnings

    from ._util import NetlensWarning, user_stacklevel

    warnings.warn("the model is compiled with torch.compile; netlens explains the module it "
                  "wraps (model._orig_mod, the same function and weights), run uncompiled, "
                  "because hooks and backward rules need the eager modules; pass model._orig_mod "
                  "to silence this", NetlensWarning, stacklevel=user_stacklevel())
    return _uncompiled(model._orig_mod)


def check_input(x: Any, channels: int | None = None, *, finite: bool = False,
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """Validates an image batch at the library boundary.

    Args:
        x: the input; must be a floating tensor of shape (B, C, H, W).
        channels: the expected C, or None to accept any.
        finite: also reject NaN and infinite values (costs one reduction).
        dtype: the model's parameter dtype (:func:`model_dtype`), or None to accept any; not
            checked under ``torch.autocast``, which casts per operation.

    Returns:
        ``x`` unchanged.

    Raises:
        TypeError: ``x`` is not a floating-point tensor, or not of the model's dtype.
        ValueError: wrong rank, channel count, empty batch or non-finite values.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected the input as a torch.Tensor of shape (B, C, H, W), got "
                        f"{type(x).__name__}; load images with netlens.image.load")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point input, got dtype {x.dtype}; "
                        "convert it with x.float() (and scale uint8 images to [0, 1])")
    if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"the input is {x.dtype} but the model's parameters are {dtype}; "
                        f"convert the input with {_convert('x', dtype)} (or the model with "
                        f"{_convert('model', x.dtype)})")
    if x.dim() != 4:
        hint = " (add the batch dimension with x.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"expected an image batch of shape (B, C, H, W), got shape "
                         f"{tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError("the input batch is empty (B = 0)")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"the model expects {channels}-channel images, got {x.shape[1]} channels "
                         f"(shape {tuple(x.shape)}); e.g. x.expand(-1, {channels}, -1, -1) "
                         "repeats a grayscale channel")
    # One sum is cheaper than an elementwise test; only a non-finite sum (NaN or inf inside, or
    # an overflow of huge finite values) needs the exact test.
    if finite and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError("the input contains NaN or infinite values")
    return x


class Recording:
    """Activations and gradients recorded by :meth:`FlatModel.record`.

    Attributes:
        activations: layer name -> detached copy of the layer's output (the first tensor of a
            tuple output) from the latest forward pass.
        gradients: layer name -> gradient of the backward pass w.r.t. that output (only when
            ``gradients=True`` and the output required grad).
    """

    def __init__(self, fm: FlatModel, names: list[str], gradients: bool, detach: bool) -> None:
        self.names, self._fm, self._want_grad, self._detach = names, fm, gradients, detach
        self.activations: dict[str, torch.Tensor] = {}
        self.gradients: dict[str, torch.Tensor] = {}
        self._hooks: HookDict | None = None
        self._exit: Callable[[], None] | None = None
        self._lock: threading.RLock | None = None

    def _store(self, name: str, output: Any) -> None:
        t = first_tensor(output)
        if t is None:
            return
        # A copy, because later in-place ops (ResNet's `out += identity`, in-place ReLUs) would
        # otherwise change what we recorded.
        self.activations[name] = t.detach().clone() if self._detach else t.clone()
        if self._want_grad and t.requires_grad and self._hooks is not None:
            self._hooks[f"grad:{name}"] = TensorHook(t, self._grad_setter(name))

    def _grad_setter(self, name: str) -> Callable[[torch.Tensor], None]:
        def store(grad: torch.Tensor) -> None:
            self.gradients[name] = grad
        return store

    def __enter__(self) -> Recording:
        # The hooks live on the shared modules: the model's lock keeps other threads' netlens
        # calls out of them until the block ends.
        self._lock = model_lock(self._fm.model)
        self._lock.acquire()
        self._hooks = HookDict().__enter__()
        try:
            self._exit = self._fm._install(self.names, self._store, self._hooks)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self._exit is not None:
                self._exit()
        finally:
            self._exit = None
            try:
                if self._hooks is not None:
                    self._hooks.__exit__(*exc_info)
            finally:
                self._hooks = None
                lock, self._lock = self._lock, None
                if lock is not None:
                    lock.release()


class FlatModel(nn.Module):
    """A flat, ordered, named view over every layer call of ``model``.

    ``FlatModel(model)(x)`` is ``model(x)``, bit for bit: the user's model is held, never copied
    or changed, and hooks exist only inside :meth:`record` blocks and ``until=`` passes.

    Args:
        model: any ``nn.Module`` (a ``FlatModel`` is unwrapped; a ``torch.compile``d model is
            its ``_orig_mod``, the same function, with a warning).
        example_input: an input used once to discover the layers. If omitted, the first real
            forward pass is used, or, when names are needed before that, a zero image with the
            channels of the first convolution and the model's ``image_size`` (or its
            ``config.image_size``: HuggingFace models; timm's configured input size; 224 by
            default, and when the model fails at 224, each size of :data:`GUESSED_SIDES`:
            a bare 28x28 MNIST model needs no ``example_input``).

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
    """

    model: nn.Module

    def __init__(self, model: nn.Module, example_input: torch.Tensor | None = None) -> None:
        if isinstance(model, FlatModel):
            model = model.model
        model = _uncompiled(model)
        if isinstance(model, torch.jit.ScriptModule):
            raise TypeError("FlatModel cannot look inside a TorchScript module (it has no module "
                            "hooks and its layers are compiled); load the eager model instead, "
                            "e.g. one saved with torch.save(model)")
        if not isinstance(model, nn.Module):
            raise TypeError(f"FlatModel needs a torch.nn.Module, got {type(model).__name__}; "
                            "pass the model object itself (e.g. torchvision.models.resnet18())")
        super().__init__()
        self.model = model
        self._example = example_input
        self._calls: dict[str, CallRecord] | None = None
        self._channels = input_channels(model)
        # the shape of the input the layers were found with
        self.traced_input_shape: tuple[int, ...] | None = None
        self._leaf_elements: int | None = None

    # -- discovery -------------------------------------------------------------------------
    def _default_input(self, side: int | None = None) -> torch.Tensor:
        """The input layers are found with: ``example_input``, or zeros at the model's own
        size, or at ``side`` pixels (default 224) when the model does not say its size."""
        if self._example is not None:
            return self._example
        size = self._declared_size() or (side or 224, side or 224)
        ref: torch.Tensor | None = next(self.model.parameters(), None)
        if ref is None:
            ref = next(self.model.buffers(), torch.zeros(()))
        batch = 2 if self.model.training else 1  # BatchNorm in training mode needs B > 1
        return torch.zeros(batch, self._channels or 3, *size, device=ref.device,
                           dtype=ref.dtype if ref.is_floating_point() else torch.float32)

    def _declared_size(self) -> tuple[int, int] | None:
        """The input size the model declares (``image_size``, a HuggingFace config, a timm
        configuration or ``patch_embed.img_size``), or None."""
        size: Any = getattr(self.model, "image_size", None)
        if size is None:  # a HuggingFace vision model: its config's image_size
            size = getattr(getattr(self.model, "config", None), "image_size", None)
        if size is None:  # a timm model: the input size of its configuration, (C, H, W)
            cfg = getattr(self.model, "pretrained_cfg", None)
            shape = cfg.get("input_size") if isinstance(cfg, dict) else None
            if isinstance(shape, (tuple, list)) and len(shape) == 3:
                size = tuple(int(v) for v in shape[1:])
            img_size = getattr(getattr(self.model, "patch_embed", None), "img_size", None)
            if isinstance(img_size, (tuple, list)) and len(img_size) == 2:  # built with img_size=
                size = tuple(int(v) for v in img_size)
        if isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        if isinstance(size, (tuple, list)) and len(size) == 2:
            return int(size[0]), int(size[1])
        return None

    def _trace(self, x: torch.Tensor | None = None) -> dict[str, CallRecord]:
        calls = self._calls
        if calls is not None:
            return calls
        # Built once: under the model's lock a racing first call waits, then finds the layers.
        with model_lock(self.model):
            if self._calls is None:
                from .adapter import trace

                example = x if x is not None else self._default_input()
                # a model that does not say its input size and fails at 224 pixels is tried at
                # the usual small sizes (MNIST 28, CIFAR 32, ...) before its error is raised
                guessed = x is None and self._example is None and self._declared_size() is None
                sides = GUESSED_SIDES if guessed else ()
                try:
                    found = trace(self.model, example)
                except Exception as e:
                    found = None
                    for side in sides:
                        try:
                            found = trace(self.model, self._default_input(side))
                        except Exception:
                            continue
                        example = self._default_input(side)
                        break
                    if found is None:
                        # The model's own error, with its own type (a RuntimeError of a layer,
                        # a KeyboardInterrupt is no Exception and passes untouched): netlens
                        # only says what it was doing.
                        tried = (f" (and at {', '.join(f'{s}x{s}' for s in sides)} pixels)"
                                 if sides else "")
                        _note(e, f"netlens: raised while running the model once on an input of "
                                 f"shape {tuple(example.shape)}{tried} to find its layers; if "
                                 "the model needs another input, pass one as "
                                 "FlatModel(model, example_input=x)")
                        raise
                assert found is not None  # traced at the first input or at a guessed size
                self.traced_input_shape = tuple(example.shape)
                self._calls = {c.name: c for c in found}  # published whole, last
            return self._calls

    @property
    def layers(self) -> list[CallRecord]:
        """Every layer call, in the order in which calls start (see :class:`CallRecord`)."""
        return list(self._trace().values())

    @property
    def layer_names(self) -> list[str]:
        """Names of every layer call, in execution order (the order in which calls start)."""
        return list(self._trace())

    def layer_info(self, name: str) -> CallRecord:
        """The :class:`~netlens.adapter.CallRecord` of a layer: shape, layout, activation kind."""
        return self._trace()[self.resolve_layer(name)]

    def layout(self, name: str) -> Layout:
        """How to view the layer's output as a ``[B, C, h, w]`` map: the one read off the forward
        pass, or the one given by ``layout=`` / :func:`layouts` for the call being run."""
        name = self.resolve_layer(name)
        given = _LAYOUTS.get()
        if name in given:
            return given[name]
        return self.layer_info(name).layout

    def given_layouts(self, layer: str | None, layout: LayoutLike | None
                      ) -> contextlib.AbstractContextManager[None]:
        """The block in which ``layer`` (resolved; None: nothing) has the ``layout`` a method
        was given (None: as read off the forward pass)."""
        if layout is None:
            return contextlib.nullcontext()
        if layer is None:
            raise ValueError("layout= describes the layer given by layer=; pass layer= too (the "
                             "default layer's layout is read off the forward pass)")
        return layouts({self.resolve_layer(layer): layout})

    def resolve_layer(self, name: str) -> str:
        """Checks that ``name`` is a layer call of the forward pass and returns it.

        Raises:
            UnknownLayerError: with the closest names, if the model has no such layer, or an
                explanation if the module exists but the forward pass never calls it.
        """
        if not isinstance(name, str):
            raise TypeError(f"a layer name must be a str, got {type(name).__name__}")
        calls = self._trace()
        if name in calls:
            return name
        base, k = split_call_name(name)
        modules = self.modules_by_name()
        if base in modules and base != "":
            count = sum(1 for c in calls.values() if c.module_name == base and not c.functional)
            if count == 0:
                raise UnknownLayerError(
                    f"the model has a module {base!r} ({type(modules[base]).__name__}) but its "
                    "forward pass never calls it (for example an auxiliary head that runs only in "
                    "training mode); choose one of the names in .layer_names")
            last = f" to '{base}:{count - 1}'" if count > 1 else ""
            raise UnknownLayerError(
                f"module {base!r} is called {count} time(s) per forward pass, so {name!r} does not "
                f"exist; use {base!r}{last}")
        if _ORIGINAL_KEY.match(name):  # a Netlens 1.x key: features-conv-4, flatten
            keys = self.original_keys
            if name in keys:
                return keys[name]
            close = difflib.get_close_matches(name, list(keys), n=5, cutoff=0.5)
            if close:
                meant = ", ".join(f"{k!r} ({keys[k]!r})" for k in close)
                raise UnknownLayerError(f"the model has no layer with the Netlens 1.x key "
                                        f"{name!r}; did you mean {meant}? (.summary() lists "
                                        "every layer with its key)")
        close = difflib.get_close_matches(name, list(calls), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else (
            "; see .layer_names for the full list")
        raise UnknownLayerError(f"the model has no layer named {name!r}{hint}")

    @property
    def original_keys(self) -> dict[str, str]:
        """Netlens 1.x's layer keys (``"features-conv-4"``, ``"flatten"``) -> the layer names
        they meant (``"features.10"``); every method that takes a layer name takes these too
        (see :func:`original_keys`)."""
        calls = self._trace()
        called = {c.module_name for c in calls.values() if not c.functional}
        keys = {k: v for k, v in original_keys(self.model).items() if v in called}
        order = list(calls)
        modules = self.modules_by_name()
        linear = next((i for i, c in enumerate(calls.values()) if not c.functional
                       and isinstance(modules.get(c.module_name), nn.Linear)), None)
        if linear is not None:  # flatten: the layer that feeds the first linear layer
            feeding = [n for n in order[:linear] if n in modules and not isinstance(
                modules[n], (nn.Dropout, nn.Flatten)) and next(modules[n].children(), None) is None]
            if feeding:
                keys["flatten"] = feeding[-1]
        return keys

    def summary(self, file: Any = None) -> str:
        """Prints (to ``file``, default standard output) and returns a table of the layers: name,
        Netlens 1.x key, type and output shape (at the input the layers were found with)."""
        import sys

        calls = self._trace()
        key_of = {v: k for k, v in self.original_keys.items() if k != "flatten"}
        rows = [("#", "name", "1.x key", "type", "output shape")]
        for i, (name, c) in enumerate(calls.items()):
            kind = f"{c.type_name}()" if c.functional else c.type_name
            shape = "x".join(map(str, c.shape)) if c.shape else "-"
            rows.append((str(i), name, key_of.get(name, ""), kind, shape))
        widths = [max(len(r[j]) for r in rows) for j in range(5)]
        text = "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
                          for r in rows)
        print(text, file=file or sys.stdout)
        return text

    def modules_by_name(self) -> dict[str, nn.Module]:
        """``dict(model.named_modules())``, built once per method call (the module tree does not
        change inside one; a ResNet's walk costs half a millisecond) and afresh outside one.
        Read it, never change it."""
        cache = guarded_calls().get(id(self.model))
        if cache is None:
            return dict(self.model.named_modules())
        modules = cache.get("modules")
        if modules is None:
            modules = cache["modules"] = dict(self.model.named_modules())
        return modules

    def __getitem__(self, name: str) -> nn.Module | Callable[..., Any]:
        """The module of a layer (any named module works), or the torch function of a
        functional call such as ``"relu()"``."""
        modules = self.modules_by_name()
        base, _ = split_call_name(name)
        if base in modules and base != "":
            if base == name or name in self._trace():
                return modules[base]
        record = self.layer_info(name)
        if record.functional:
            import torch.nn.functional as F

            return F.relu6 if record.activation == "relu6" else F.relu
        return modules[record.module_name]

    # -- hooks -----------------------------------------------------------------------------
    def _install(
        self, names: Iterable[str], callback: Callable[..., Any], hooks: HookDict,
        inputs: Literal[False, "live", "copy"] = False,
    ) -> Callable[[], None]:
        """Calls ``callback(name, output)`` (with ``inputs``: ``callback(call)``, a
        :class:`~netlens.adapter.Call`) for each named call in every forward pass while the
        hooks live; returns a function that tears down anything that is not a hook."""
        wanted = [self.resolve_layer(n) for n in names]
        records = [self._trace()[n] for n in wanted]
        modules = self.modules_by_name()
        if any(r.functional for r in records):  # functional calls need the full tracer
            by_name = {r.name: r for r in records}

            def on_call(record: CallRecord, output: Any, *args: Any) -> Any:
                if record.name not in by_name:
                    return None
                if not inputs:
                    return callback(record.name, output)
                module = modules.get(record.module_name) if not record.functional else None
                return callback(Call(record.name, by_name[record.name], module, args[0],
                                     output))

            tracer = CallTracer(self.model, on_call, layouts=False, inputs=inputs).__enter__()
            return lambda: tracer.__exit__(None, None, None)

        by_module: dict[str, dict[int, CallRecord]] = {}
        for r in records:
            by_module.setdefault(r.module_name, {})[r.index] = r
        counters: dict[str, int] = {}

        def reset(*_: Any) -> None:
            counters.clear()

        hooks.add(ModuleHook(self.model, reset, "forward_pre", prepend=True))
        for module_name, indices in by_module.items():
            module = modules[module_name]
            if inputs == "copy":
                stash: list[tuple] = []
                hooks.add(ModuleHook(module, self._stasher(module_name, indices, counters,
                                                           stash), "forward_pre"))
            else:
                stash = []
            hooks.add(ModuleHook(module, self._counter(
                module_name, indices, counters, callback, inputs, stash)))
        return lambda: None

    @staticmethod
    def _stasher(module_name: str, indices: dict[int, CallRecord], counters: dict[str, int],
                 stash: list[tuple]) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple) -> None:
            if counters.get(module_name, 0) in indices:
                stash.append(copy_inputs(args))
        return hook

    @staticmethod
    def _counter(module_name: str, indices: dict[int, CallRecord], counters: dict[str, int],
                 callback: Callable[..., Any], inputs: Literal[False, "live", "copy"] = False,
                 stash: list[tuple] | None = None) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            k = counters.get(module_name, 0)
            counters[module_name] = k + 1
            if k not in indices:
                return None
            record = indices[k]
            if not inputs:
                return callback(record.name, output)
            if inputs == "copy" and stash:
                args = stash.pop()
            return callback(Call(record.name, record, module, tuple(args), output))
        return hook

    def record(
        self, names: str | Iterable[str], gradients: bool = False, *, detach: bool = True,
    ) -> Recording:
        """A context manager that records the named layers' outputs (and gradients).

        Args:
            names: one layer name or several (see :attr:`layer_names`).
            gradients: also record the gradient of each output during backward passes.
            detach: store detached copies (default); False keeps them in the autograd graph.

        Returns:
            A :class:`Recording`, filled by each forward (and backward) pass in the block.

        Raises:
            UnknownLayerError: for a name that is not a layer call of the model.
        """
        names = [names] if isinstance(names, str) else list(names)
        return Recording(self, names, gradients, detach)

    @contextlib.contextmanager
    def intercept(
        self, names: str | Iterable[str], fn: Callable[..., Any], *,
        inputs: Literal[False, "live", "copy"] = False,
    ) -> Iterator[None]:
        """Calls ``fn(name, output)`` on each named layer call of every forward pass in the block.

        ``fn`` may return a replacement output (as a forward hook would) or None. This is the
        one interception of module and functional calls alike; :mod:`netlens.rules` applies
        backward rules through it.

        Args:
            names: the layer calls (see :attr:`layer_names`).
            fn: ``fn(name, output)``; with ``inputs``, ``fn(call)`` with a
                :class:`~netlens.adapter.Call` (name, record, module, inputs, output).
            inputs: False; ``"live"``: the call's positional inputs as the call left them;
                ``"copy"``: copies taken before the call (an in-place call overwrites its
                input).

        Raises:
            UnknownLayerError: for a name that is not a layer call of the model.
        """
        names = [names] if isinstance(names, str) else list(names)
        with model_lock(self.model), HookDict() as hooks:  # hooks on shared modules: one thread
            teardown = self._install(names, fn, hooks, inputs)
            try:
                yield
            finally:
                teardown()

    def last_spatial_layer(self) -> str:
        """The last layer to complete whose output is a map with more than one position
        (``"layer4"`` for a ResNet, the last encoder block's output for a ViT): the default layer
        of CAM methods.

        Only per-image maps count: a layer whose first axis is not the batch (the RoI features
        of a torchvision detector) is skipped, and so are auxiliary heads (modules named
        ``aux*``, such as the ``aux_classifier`` that torchvision segmentation models run after
        their main ``classifier``) unless the model has no other spatial layer.

        Raises:
            ValueError: if the model has no spatial layer.
        """
        resamplers = ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d")  # they only resize the map
        layers = self.layers  # traces the model, which sets traced_input_shape
        batch = self.traced_input_shape[0] if self.traced_input_shape else None
        spatial = [c for c in layers if c.layout.is_spatial and c.shape is not None
                   and not c.functional and _positions(c) > 1 and c.type_name not in resamplers
                   and (batch is None or c.shape[0] == batch)]
        if not spatial:
            raise ValueError("the model has no layer with a spatial output (a map of more than "
                             "one position); pass layer= explicitly")
        main = [c for c in spatial if not _auxiliary(c.module_name)] or spatial
        return max(main, key=lambda c: c.end_order).name

    def ensure_traced(self, x: torch.Tensor) -> None:
        """Finds the layers with ``x`` (a few images of it) if they are not known yet, or were
        found at another input size (or from ``example_input`` of another size): the shapes,
        and what depends on them (the default CAM layer, the token grids), follow the input
        size of the method that calls this first (every method does). A forward pass alone
        (``fm(x)``) never traces again."""
        if self._calls is None and self._example is not None:
            self._trace()  # the example finds them (then compared below)
        if self._calls is not None and self._traced_at(x):
            return
        with model_lock(self.model):
            if self._calls is not None and self._traced_at(x):  # a racing call found them
                return
            self._calls = self._leaf_elements = None  # found at another size: again at this one
            key = _trace_key(self.model, x)
            cached = _cached_trace(self.model)
            if cached is not None and cached["key"] == key:
                self.traced_input_shape = cached["shape"]
                self._leaf_elements = cached["leaf_elements"]
                self._calls = dict(cached["calls"])  # published last
                return
            calls = self._trace(x[:2])
            _publish_trace(self.model, {"key": key, "calls": dict(calls),
                                        "shape": self.traced_input_shape, "leaf_elements": None})

    def _traced_at(self, x: torch.Tensor) -> bool:
        traced = self.traced_input_shape
        return traced is None or tuple(traced[1:]) == tuple(x.shape[1:])

    def leaf_elements(self) -> int:
        """Elements per image of all leaf modules' outputs at the traced input size: what
        autograd keeps for a backward pass, the basis of the chunk-size estimates."""
        if self._leaf_elements is None:
            modules = self.modules_by_name()
            elements = 0
            for c in self.layers:
                module = modules.get(c.module_name)
                if c.shape is None or c.functional or module is None:
                    continue
                if next(module.children(), None) is None:  # leaves only: containers repeat them
                    elements += int(torch.Size(c.shape[1:]).numel())
            self._leaf_elements = elements
            cached = _cached_trace(self.model)
            if cached is not None and cached["shape"] == self.traced_input_shape \
                    and cached["calls"].keys() == self._trace().keys():
                cached["leaf_elements"] = elements
        return self._leaf_elements

    @property
    def relu_names(self) -> list[str]:
        """Names of every ReLU-family call (ReLU, ReLU6; module or functional), in order."""
        return [c.name for c in self.layers if c.activation is not None]

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args: Any, until: str | None = None, **kwargs: Any) -> Any:
        """Runs the model; with ``until=name`` stops right after that layer and returns its
        output (still in the autograd graph). Nothing after the layer is computed."""
        if isinstance(x, torch.Tensor) and (self._channels is not None or x.dim() == 4):
            # an image model: fail early, with the fix
            check_input(x, self._channels, dtype=model_dtype(self.model))
        if isinstance(x, torch.Tensor):
            if self._calls is None and self._example is None:
                self.ensure_traced(x)  # once, on two images: not a second pass over the batch
        if until is None:
            return self.model(x, *args, **kwargs)
        box: list[Any] = []

        def stop(name: str, output: Any) -> Any:
            box.append(output)
            raise _StopForward(name)

        with model_lock(self.model), HookDict() as hooks:
            teardown = self._install([until], stop, hooks)
            try:
                self.model(x, *args, **kwargs)
            except _StopForward:
                return box[0]
            finally:
                teardown()
        raise ValueError(f"the forward pass ended without reaching layer {until!r} (it is not "
                         "called for this input or mode)")

    def extra_repr(self) -> str:
        n = len(self._calls) if self._calls is not None else "?"
        return f"layers={n}"

    def __iter__(self) -> Iterator[str]:
        return iter(self.layer_names)


def _auxiliary(module_name: str) -> bool:
    """Whether a module belongs to an auxiliary head (``aux_classifier``, ``aux1``,
    ``AuxLogits``): its output is a training aid that the main output does not depend on."""
    return any(part.lower().startswith("aux") for part in module_name.split("."))


def _positions(record: CallRecord) -> int:
    """Number of spatial positions of a layer's output (tokens: excluding the extra ones)."""
    shape, layout = record.shape or (), record.layout
    if layout.kind == "nchw":
        return int(shape[2] * shape[3])
    if layout.kind == "nhwc":
        return int(shape[1] * shape[2])
    if layout.kind == "tokens":
        return int(shape[1] - layout.extra)
    return 1
