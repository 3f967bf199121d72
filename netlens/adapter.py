"""Make an arbitrary ``nn.Module`` analysable without changing what it computes.

Three things break interpretability code on real architectures, and this module answers them:

* **Which calls are ReLUs.** A ReLU can be an ``nn.ReLU`` module (in place or not), one module
  called several times (torchvision ResNet blocks call their single ``relu`` twice), or a
  functional ``F.relu`` / ``torch.relu`` / ``Tensor.relu`` with no module at all (every ReLU of
  GoogLeNet and Inception v3, DenseNet's last one); ReLU6 is ``nn.ReLU6`` or ``F.relu6``.
  :class:`CallTracer` sees every one of them as a *call*: it keeps a stack of the modules being
  run (forward hooks on every submodule) and watches torch functions with a
  ``TorchFunctionMode``, so a functional ReLU is attributed to the module whose forward made it.
* **How to view a layer as a map.** Token layers of a ViT (``[B, extra + h*w, D]``) and the
  channels-last layers of torchvision Swin / ConvNeXt blocks (``[B, H, W, C]``) are described by a
  :class:`Layout` that converts them to ``[B, C, h, w]``. The layout is read off the forward pass
  itself (the patch grid of the last spatial map, and the ``permute`` calls that switch to and from
  channels-last), never guessed from a square root.
* **Leaving the model as it was.** :func:`preserved_state` restores ``training``,
  ``requires_grad``, ``inplace`` flags, parameter ``.grad`` and, on request, buffers, also when
  the body raised; with ``eval=True`` the model runs in eval mode inside the block.
  :func:`model_lock` is the one re-entrant lock per model that serializes everything netlens
  does with a model's modules (hooks, rules, mode), so that threads sharing a model do not mix.

Names of calls: a module call is named by its dotted name, its k-th call in one forward pass
(k >= 1) as ``"name:k"``; a functional activation call made inside module ``m`` is named
``"m.relu()"`` (``"relu()"`` at the top level), with the same ``":k"`` rule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .hooks import HookDict, ModuleHook

__all__ = [
    "ActivationKind", "Call", "CallRecord", "CallTracer", "Layout", "preserved_state", "trace",
    "relu_calls", "split_call_name", "first_tensor", "copy_inputs", "model_lock", "as_layout",
    "LayoutLike",
]

ActivationKind = Literal["relu", "relu6"]
LayoutKind = Literal["nchw", "nhwc", "tokens", "vector", "custom", "other"]
_KINDS: tuple[str, ...] = get_args(LayoutKind)

# Modules whose forward is a single activation call: that call belongs to the module itself.
_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
# Torch functions that are ReLU-family calls: name, and whether they always work in place.
_RELU_FUNCTIONS: dict[Any, tuple[Literal[ActivationKind, "hardtanh"], bool]] = {
    F.relu: ("relu", False), F.relu_: ("relu", True), torch.relu: ("relu", False),
    torch.relu_: ("relu", True), torch.Tensor.relu: ("relu", False),
    torch.Tensor.relu_: ("relu", True), F.relu6: ("relu6", False), F.hardtanh: ("hardtanh", False),
    F.hardtanh_: ("hardtanh", True),
}
_PERMUTES = {torch.permute, torch.Tensor.permute}
_TO_CHANNELS_LAST, _TO_CHANNELS_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a layer produced: the output itself, or the first tensor of a tuple/list."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


def copy_inputs(args: tuple) -> tuple:
    """``args`` with every tensor replaced by a copy (what an in-place call will overwrite)."""
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def split_call_name(name: str) -> tuple[str, int]:
    """``"layer1.0.relu:1"`` -> ``("layer1.0.relu", 1)``; a name without ``:k`` has k = 0."""
    base, sep, k = name.rpartition(":")
    if sep and k.isdigit():
        return base, int(k)
    return name, 0


def _activation_of(func: Any, args: tuple, kwargs: dict) -> tuple[ActivationKind, bool] | None:
    """Whether a torch function call is a ReLU-family call, and whether it is in place."""
    entry = _RELU_FUNCTIONS.get(func)
    if entry is None:
        return None
    kind, inplace = entry
    if kind == "hardtanh":  # ReLU6 modules call F.hardtanh(x, 0, 6)
        params = dict(zip(("min_val", "max_val", "inplace"), args[1:]))
        params.update(kwargs)
        if float(params.get("min_val", -1.0)) != 0.0:
            return None
        if float(params.get("max_val", 1.0)) != 6.0:
            return None
        kind = "relu6"
    if not inplace and func in (F.relu, F.relu6, F.hardtanh):
        position = 3 if func is F.hardtanh else 1
        inplace = bool(kwargs.get("inplace", args[position] if len(args) > position else False))
    return kind, inplace


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a layer's output is laid out, and how to view it as a ``[B, C, h, w]`` map.

    netlens reads each layer's layout off the forward pass; where it reads one wrong, or
    cannot read it, pass your own as ``layout=`` to any method that reads a layer (a
    :class:`Layout`, a kind's name, or a function, see :func:`as_layout`).

    Attributes:
        kind: ``"nchw"`` (a feature map), ``"nhwc"`` (channels last, torchvision Swin and
            ConvNeXt blocks), ``"tokens"`` (``[B, extra + h*w, D]``, ViT), ``"vector"``
            (``[B, D]``), ``"custom"`` (your ``reshape`` function) or ``"other"`` (not
            viewable as a map, e.g. MaxViT windows, per-head attention tensors).
        extra: number of leading non-patch tokens (class, distillation tokens) for ``"tokens"``.
        stride: input pixels per token along (H, W) for ``"tokens"``, to find the grid for any
            input size; ``(1, 1)``: a square grid (the square root of the token count).
        reshape: for ``"custom"``: ``output -> [B, C, h, w]`` (pytorch-grad-cam's
            ``reshape_transform``).

    Example:
        >>> t = torch.rand(2, 1 + 14 * 14, 192)  # a ViT block's output: class token + 14x14
        >>> Layout("tokens", extra=1).to_map(t).shape
        torch.Size([2, 192, 14, 14])
    """

    kind: LayoutKind
    extra: int = 0
    stride: tuple[int, int] = (1, 1)
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = dataclasses.field(
        default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown layout kind {self.kind!r}; one of "
                             f"{', '.join(map(repr, _KINDS))}")
        if (self.kind == "custom") != (self.reshape is not None):
            raise ValueError("a 'custom' layout needs reshape= (a function output -> "
                             "[B, C, h, w]), and only a custom one takes it")
        if self.extra < 0:
            raise ValueError(f"extra must be >= 0 (leading non-patch tokens), got {self.extra}")

    @property
    def is_spatial(self) -> bool:
        return self.kind in ("nchw", "nhwc", "tokens", "custom")

    def to_map(self, t: torch.Tensor, input_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """Views ``t`` as ``[B, C, h, w]`` (a view or a permuted view; no copy where possible).

        Args:
            t: the layer output.
            input_hw: the (H, W) of the model input, needed to find the token grid of a
                non-square input.

        Raises:
            ValueError: if the layer cannot be seen as a map.
        """
        if self.kind in ("nchw", "nhwc") and t.dim() != 4:
            raise ValueError(f"an {self.kind!r} layout needs a 4-D output, got shape "
                             f"{tuple(t.shape)}; for [B, N, D] tokens pass Layout('tokens', "
                             "extra=...) or a reshape function")
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.permute(0, 3, 1, 2)
        if self.kind == "vector":
            return t.reshape(t.shape[0], -1, 1, 1)
        if self.kind == "tokens":
            if t.dim() != 3:
                raise ValueError(f"a 'tokens' layout needs a [B, N, D] output, got shape "
                                 f"{tuple(t.shape)}")
            n = t.shape[1] - self.extra
            h, w = self._grid(n, input_hw)
            return t[:, self.extra:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
        if self.kind == "custom":
            assert self.reshape is not None
            out = self.reshape(t)
            if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != t.shape[0]:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"the layout's reshape function must return [B, C, h, w] with "
                                 f"the output's batch {t.shape[0]}; for shape {tuple(t.shape)} "
                                 f"it returned {got}")
            return out
        raise ValueError(
            f"a layer with output shape {tuple(t.shape)} (layout {self.kind!r}) cannot be viewed "
            "as a [B, C, h, w] map; choose a layer with a spatial output")

    def from_map(self, fmap: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_map`: a ``[B, C, h, w]`` map written back in this layout.

        Args:
            fmap: the map, ``[B, C, h, w]`` (the batch may differ from ``like``'s).
            like: an output of the layer, whose non-patch tokens (the class token) are kept.

        Returns:
            A tensor of the layer's output layout: ``to_map(from_map(m, like)) == m``.

        Raises:
            ValueError: for a layout that cannot be viewed as a map.
        """
        if self.kind == "nchw":
            return fmap
        if self.kind == "nhwc":
            return fmap.permute(0, 2, 3, 1)
        if self.kind == "vector":
            return fmap.reshape(fmap.shape[0], -1)
        if self.kind == "tokens":
            patches = fmap.flatten(2).transpose(1, 2)  # [B, h*w, C]
            if self.extra == 0:
                return patches
            extra = like[:, :self.extra]
            if extra.shape[0] != fmap.shape[0]:
                extra = extra[:1].expand(fmap.shape[0], -1, -1)
            return torch.cat([extra.to(patches.dtype), patches], dim=1)
        if self.kind == "custom":
            raise ValueError("a layout given as a reshape function cannot write a map back into "
                             "the layer (this method replaces the layer's output); pass a "
                             "Layout instead, e.g. layout=netlens.Layout('tokens', extra=1)")
        raise ValueError(f"a layer of layout {self.kind!r} cannot be written from a map; "
                         "choose a layer with a spatial output")

    def _grid(self, n: int, input_hw: tuple[int, int] | None) -> tuple[int, int]:
        if input_hw is not None:
            h, w = input_hw[0] // self.stride[0], input_hw[1] // self.stride[1]
            if h * w == n:
                return h, w
        side = round(n ** 0.5)
        if side * side == n:
            return side, side
        raise ValueError(f"cannot find the token grid of {n} patch tokens for input {input_hw} "
                         "(not a square, and no stride given); pass layout=Layout('tokens', "
                         "extra=..., stride=(sh, sw)) or a reshape function")


LayoutLike = Layout | str | Callable[[torch.Tensor], torch.Tensor]


def as_layout(spec: LayoutLike) -> Layout:
    """A :class:`Layout` from what a user passes as ``layout=``.

    Args:
        spec: a :class:`Layout`; a kind's name (``"nchw"``, ``"nhwc"``, ``"vector"``,
            ``"tokens"``: no extra tokens, a square grid); or a function ``output -> [B, C, h,
            w]`` (e.g. ``lambda t: t[:, 1:].reshape(-1, 14, 14, t.shape[-1]).permute(0, 3, 1,
            2)``), which only reading methods accept.

    Raises:
        ValueError: for anything else, naming the forms accepted.
    """
    if isinstance(spec, Layout):
        return spec
    if isinstance(spec, str):
        if spec not in ("nchw", "nhwc", "tokens", "vector"):
            raise ValueError(f"unknown layout {spec!r}; pass 'nchw', 'nhwc', 'tokens', "
                             "'vector', a netlens.Layout (e.g. Layout('tokens', extra=1)) or a "
                             "function output -> [B, C, h, w]")
        return Layout(spec)  # type: ignore[arg-type]
    if callable(spec):
        return Layout("custom", reshape=spec)
    raise ValueError(f"layout= takes a netlens.Layout, a kind's name or a function output -> "
                     f"[B, C, h, w], not {type(spec).__name__}")


@dataclasses.dataclass
class CallRecord:
    """One layer call seen during a forward pass.

    Attributes:
        name: the call's name (``"layer1.0.relu:1"``, ``"inception3a.branch1.relu()"``).
        module_name: the module that was called, or for a functional call the module whose
            forward made it (``""`` is the model itself).
        index: which call of that module or function this is in the pass (0 for the first).
        functional: True for a call of a torch function with no module of its own.
        activation: ``"relu"`` or ``"relu6"`` for ReLU-family calls, else None.
        inplace: whether the activation call worked in place.
        type_name: the module's class name, or the function's name.
        order: position in the order in which calls started.
        end_order: position in the order in which calls completed (a container completes after
            its children: the last spatial layer to complete in a ResNet is ``"layer4"``).
        shape: shape of the output tensor (the first one of a tuple), or None.
        layout: how to view the output as a map.
    """

    name: str
    module_name: str
    index: int
    functional: bool
    activation: ActivationKind | None
    inplace: bool
    type_name: str
    order: int
    end_order: int = -1
    shape: tuple[int, ...] | None = None
    layout: Layout = Layout("other")


@dataclasses.dataclass
class Call:
    """One layer call as an interception sees it (:meth:`FlatModel.intercept` with ``inputs``).

    Attributes:
        name: the call's name.
        record: its :class:`CallRecord` from the traced forward pass.
        module: the module called, or None for a functional call.
        inputs: the call's positional inputs.
        output: what the call returned.
    """

    name: str
    record: CallRecord
    module: nn.Module | None
    inputs: tuple
    output: Any


class _StopForward(Exception):
    """Raised from a hook to end a forward pass early; caught by whoever asked for it."""


class CallTracer(TorchFunctionMode):
    """Sees every module call and every functional activation call of one model's forward.

    Use it as a context manager around forward passes of ``model``. For each call that
    completes, ``on_call(record, output)`` is called; it may return a replacement output (for a
    module call, as a forward hook would; for a functional call, the function's result) or None.

    Args:
        model: the model whose forward passes are traced (its own hooks are added inside the
            ``with`` block and removed at its end).
        on_call: the callback, or None to only collect :attr:`calls`.
        layouts: whether to work out each output's :class:`Layout` (costs a little time).
        inputs: False, or ``"live"`` / ``"copy"``: ``on_call(record, output, inputs)`` also
            receives the call's positional inputs, as the call left them (``"live"``) or as
            copies taken before the call ran (``"copy"``: an in-place call overwrites its
            input).
    """

    def __init__(
        self, model: nn.Module,
        on_call: Callable[..., Any] | None = None, *, layouts: bool = True,
        inputs: Literal[False, "live", "copy"] = False,
    ) -> None:
        super().__init__()
        self.model, self.on_call, self.layouts = model, on_call, layouts
        self.inputs = inputs
        self._copies: dict[int, tuple] = {}
        self.calls: list[CallRecord] = []
        self._hooks = HookDict()
        self._names: dict[int, str] = {}
        for n, m in model.named_modules(remove_duplicate=False):
            self._names.setdefault(id(m), n)  # a module registered twice keeps its first name
        self._reset()

    def _reset(self) -> None:
        self._stack: list[tuple[nn.Module, CallRecord | None]] = []
        self._counts: dict[str, int] = {}
        self._order = 0
        self._channels_last = False
        self._windowed = 0
        # grids (h, w) of the maps seen in this pass (latest last), and the ones token layers may
        # have (those, and their halvings: LeViT and PVT stages subsample the token grid)
        self._grids: list[tuple[int, int]] = []
        self._token_grids: list[tuple[int, int]] = []
        self._token_counts: set[int] = set()  # token counts of the token layers seen
        self._input_hw: tuple[int, int] | None = None
        self._batch: int | None = None
        self.calls = []

    def __enter__(self) -> CallTracer:
        self._hooks.__enter__()
        try:
            for module in {id(m): m for m in self.model.modules()}.values():
                self._hooks.add(ModuleHook(module, self._pre, "forward_pre", with_kwargs=True))
                self._hooks.add(ModuleHook(module, self._post, "forward", always_call=True))
            super().__enter__()
        except BaseException:
            self._hooks.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            super().__exit__(*exc_info)
        finally:
            self._hooks.__exit__(*exc_info)
            self._stack = []

    # -- bookkeeping -------------------------------------------------------------------------
    def _next_name(self, base: str) -> tuple[str, int]:
        k = self._counts.get(base, 0)
        self._counts[base] = k + 1
        return (base if k == 0 else f"{base}:{k}"), k

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if module is self.model:
            self._reset()
            x = first_tensor(args) if args else first_tensor(list(kwargs.values()))
            if x is not None and x.dim() == 4:
                self._input_hw = (int(x.shape[2]), int(x.shape[3]))
            if x is not None and x.dim() >= 1:
                self._batch = int(x.shape[0])
            self._stack.append((module, None))
            return
        name = self._names.get(id(module))
        if name is None or not self._stack:
            self._stack.append((module, None))  # a module outside the model's tree
            return
        call_name, k = self._next_name(name)
        record = CallRecord(call_name, name, k, False, None, False, type(module).__name__,
                            self._order)
        self._order += 1
        if self.inputs == "copy":
            self._copies[id(record)] = copy_inputs(args)
        self._stack.append((module, record))

    def _post(self, module: nn.Module, args: tuple, output: Any) -> Any:
        while self._stack and self._stack[-1][0] is not module:
            self._stack.pop()  # modules that raised without running their hooks
        if not self._stack:
            return None
        _, record = self._stack.pop()
        if record is None or output is None:
            return None
        type_name = record.type_name
        if type_name == "WindowPartition":  # MaxViT: [B, windows, tokens, C] until departition
            self._windowed += 1
        elif type_name == "WindowDepartition":
            self._windowed = max(0, self._windowed - 1)
        if self.inputs == "copy":
            args = self._copies.pop(id(record), args)
        return self._complete(record, output, args)

    def _complete(self, record: CallRecord, output: Any, args: tuple = ()) -> Any:
        record.end_order = len(self.calls)
        t = first_tensor(output)
        if t is not None:
            record.shape = tuple(t.shape)
            if self.layouts:
                record.layout = self._layout_of(t)
        self.calls.append(record)
        if self.on_call is not None:
            if self.inputs:
                return self.on_call(record, output, args)
            return self.on_call(record, output)
        return None

    def _layout_of(self, t: torch.Tensor) -> Layout:
        """The layout of one output, from what the pass has shown so far.

        A 4-D output is a map (``nchw``, or ``nhwc`` after a permute to channels last) unless it
        is shaped by tokens: one of its two spatial axes is the token count of a token layer
        seen before (per-head queries, keys and values ``[B, heads, N, d]``, attention weights
        ``[B, heads, N, N]``), or its axes are far from the input's proportions (MobileViT's
        ``[B, C, pixels per patch, patches]``). A 3-D output ``[B, N, D]`` of the input's batch
        is a token layer when ``N`` is the size of a grid seen in the pass (a map's, or a map's
        halved) plus at most 8 leading extra tokens (class and distillation tokens).
        """
        batch_ok = self._batch is None or (t.dim() > 0 and int(t.shape[0]) == self._batch)
        if t.dim() == 4 and not self._windowed:
            axes = (1, 2) if self._channels_last else (2, 3)
            hw = (int(t.shape[axes[0]]), int(t.shape[axes[1]]))
            if not self._map_like(hw):
                return Layout("other")
            if batch_ok:  # RoI features [K, C, 7, 7] are maps, but not of the image's grid
                self._add_grid(hw)
            return Layout("nhwc" if self._channels_last else "nchw")
        if t.dim() == 3 and batch_ok and not self._windowed:
            n = int(t.shape[1])
            for h, w in reversed(self._token_grids):
                extra = n - h * w
                if 0 <= extra <= 8 and h * w > 1:
                    self._token_counts.add(n)
                    stride = (1, 1)
                    if self._input_hw is not None:
                        stride = (max(1, self._input_hw[0] // h), max(1, self._input_hw[1] // w))
                    return Layout("tokens", extra, stride)
        if t.dim() == 2:
            return Layout("vector")
        return Layout("other")

    def _map_like(self, hw: tuple[int, int]) -> bool:
        h, w = hw
        if h in self._token_counts or w in self._token_counts:
            return False
        if self._input_hw is not None and min(h, w) > 2:
            sh, sw = self._input_hw[0] / h, self._input_hw[1] / w
            if max(sh, sw) > 4 * min(sh, sw):
                return False
        return True

    def _add_grid(self, hw: tuple[int, int]) -> None:
        if self._grids and self._grids[-1] == hw:
            return
        self._grids.append(hw)
        halved, h, w = [], *hw
        for _ in range(3):
            h, w = (h + 1) // 2, (w + 1) // 2
            halved.append((h, w))
        # latest last; a grid seen as a map comes after (is preferred to) a halving
        self._token_grids = [g for g in self._token_grids if g != hw and g not in halved]
        self._token_grids += [g for g in reversed(halved) if g not in self._grids] + [hw]

    # -- functional calls --------------------------------------------------------------------
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        if not self._stack:
            return func(*args, **kwargs)
        if func in _PERMUTES:
            dims: Any = kwargs["dims"] if "dims" in kwargs else args[1:]
            if len(dims) == 1 and isinstance(dims[0], (tuple, list, torch.Size)):
                dims = dims[0]
            dims = tuple(int(d) for d in dims)
            if args and isinstance(args[0], torch.Tensor) and args[0].dim() != 4:
                pass
            elif dims == _TO_CHANNELS_LAST:
                self._channels_last = True
            elif dims == _TO_CHANNELS_FIRST:
                self._channels_last = False
            return func(*args, **kwargs)
        activation = _activation_of(func, args, kwargs)
        if activation is None:
            return func(*args, **kwargs)
        module, parent = self._stack[-1]
        if isinstance(module, _ACTIVATION_MODULES) and parent is not None:
            parent.activation, parent.inplace = activation  # the module's own call
            return func(*args, **kwargs)
        owner = parent.module_name if parent is not None else ""
        fname = "relu6" if activation[0] == "relu6" else "relu"
        call_name, k = self._next_name(f"{owner}.{fname}()" if owner else f"{fname}()")
        record = CallRecord(call_name, owner, k, True, activation[0], activation[1],
                            getattr(func, "__name__", str(func)), self._order)
        self._order += 1
        inputs = copy_inputs(args) if self.inputs == "copy" else args
        output = func(*args, **kwargs)
        replaced = self._complete(record, output, inputs)
        return output if replaced is None else replaced


def trace(model: nn.Module, x: torch.Tensor) -> list[CallRecord]:
    """Runs one forward pass without gradients and returns every call, in start order.

    The pass runs in eval mode (the layers of a model in training mode are its eval-mode
    layers: an auxiliary head that runs only in training is not among them) and the model's
    state (``training``, buffers such as BatchNorm statistics, flags) is restored afterwards;
    the global random state is left as it was.
    """
    devices = [x.device] if x.device.type == "cuda" else []
    # Under the model's lock: the tracer's hooks live on the shared modules, where another
    # thread's forward pass would run through them. Eval mode: the layers netlens explains are
    # those of eval mode (a batch of one passes BatchNorm, dropout draws nothing).
    with model_lock(model), torch.random.fork_rng(devices=devices), \
            preserved_state(model, buffers=True, eval=True), torch.no_grad(), \
            CallTracer(model) as tracer:
        model(x)  # forked RNG: a model drawing random numbers must not advance the caller's
    return sorted(tracer.calls, key=lambda c: c.order)


def relu_calls(model: nn.Module, x: torch.Tensor) -> list[CallRecord]:
    """Every ReLU-family call (ReLU and ReLU6, module or functional) one forward pass makes.

    Example:
        >>> import torchvision
        >>> len(relu_calls(torchvision.models.resnet18(), torch.zeros(1, 3, 64, 64)))
        17
    """
    return [c for c in trace(model, x) if c.activation is not None]


# One re-entrant lock per model (weak keys: a lock never keeps a model alive), created under a
# global lock so that two threads asking at once get the same one.
_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()
_SHARED_LOCK = threading.RLock()  # for the rare module that cannot be a weak key


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock of ``model`` (the same object for every call on the same module).

    netlens holds it while its hooks, rules or eval mode are on the model's modules (a method
    call, the tracing pass), so that two threads explaining one model take turns; calls on
    different models do not wait for each other. The model itself is not changed.
    """
    with _LOCKS_GUARD:
        try:
            lock = _LOCKS.get(model)
            if lock is None:
                lock = _LOCKS[model] = threading.RLock()
        except TypeError:  # unhashable (a custom __eq__ without __hash__) or not weak-referable
            lock = _SHARED_LOCK
        return lock


# The models a netlens method is running on in this thread (id -> the call's cache), set by the
# outermost ``guarded`` block of each: a nested method call on the same model (a CAM calling the
# CAM driver calling a layer pass) neither snapshots the model again nor walks its parameters for
# their dtype, which costs milliseconds per call on a ResNet.
_GUARDED = threading.local()


def guarded_calls() -> dict[int, dict[str, Any]]:
    """``{id(model): cache}`` of the models that a netlens method is running on in this thread
    (inside the outermost :func:`netlens._runtime.guarded` block of each)."""
    calls = getattr(_GUARDED, "calls", None)
    if calls is None:
        calls = _GUARDED.calls = {}
    return calls


@contextlib.contextmanager
def preserved_state(model: nn.Module, *, buffers: bool = False,
                    eval: bool = False) -> Iterator[nn.Module]:
    """Restores the model's mutable state when the block ends, also after an exception.

    Restored: every module's ``training`` flag and ``inplace`` attribute, every parameter's
    ``requires_grad`` and ``.grad``, and with ``buffers=True`` the values of all buffers (e.g.
    BatchNorm running statistics that a forward pass in training mode would update).

    Args:
        model: the model.
        buffers: also restore the values of all buffers.
        eval: run the block in eval mode: every module's ``training`` flag is off inside it
            (BatchNorm uses and keeps its running statistics, dropout is the identity) and
            back as it was after it.
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    # vars(): a plain attribute lives in the instance dict; getattr would raise and catch an
    # AttributeError inside nn.Module.__getattr__ for every module without one (slow).
    inplace = [(m, vars(m)["inplace"]) for m in modules
               if isinstance(vars(m).get("inplace"), bool)]
    params = list(model.parameters())
    flags = [(p.requires_grad, p.grad) for p in params]
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()] if buffers else []
    try:
        if eval:
            for m, was_training in zip(modules, training):
                if was_training:
                    m.training = False  # the flag itself: a module's train() may be overridden
        yield model
    finally:
        # Only what changed is written back: a method call restores a large model in microseconds.
        for m, was_training in zip(modules, training):
            if m.training != was_training:
                m.training = was_training
        for m, flag in inplace:
            if m.inplace != flag:
                m.inplace = flag
        for p, (requires_grad, grad) in zip(params, flags):
            if p.requires_grad != requires_grad:
                p.requires_grad_(requires_grad)
            if p.grad is not grad:
                p.grad = grad
        with torch.no_grad():
            for b, value in saved_buffers:
                b.copy_(value)
