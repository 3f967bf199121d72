"""Hooks that cannot outlive the block that made them.

PyTorch's ``register_*_hook`` functions return handles that the caller must remember to remove;
a forgotten handle silently changes every later forward or backward pass. Here every hook is a
context manager: it is registered on ``__enter__`` and removed on ``__exit__``, also when the body
raised, and removing it twice is harmless.

A hook made with ``store=True`` keeps the last value its function returned (or, without a
function, what the hook saw: a module's output, its inputs, the gradients) in :attr:`Hook.stored`,
detached by default; :class:`HookDict` collects them by name (:attr:`HookDict.stored`,
:meth:`HookDict.get_stored`), also after its block, and builds stored hooks for many modules
or tensors at once (:meth:`HookDict.from_modules`, :meth:`HookDict.from_tensors`,
:meth:`HookDict.add_gradient_captor_hook`), as the original Netlens's ``HookDict`` did.

Example:
    >>> import torch
    >>> seen = []
    >>> layer = torch.nn.Linear(2, 2)
    >>> with ModuleHook(layer, lambda m, i, o: seen.append(o.shape)):
    ...     _ = layer(torch.zeros(1, 2))
    >>> _ = layer(torch.zeros(1, 2))  # no hook any more
    >>> seen
    [torch.Size([1, 2])]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["Hook", "ModuleHook", "TensorHook", "HookDict"]

ModuleHookKind = Literal["forward", "forward_pre", "full_backward", "full_backward_pre"]


class Hook:
    """Base class: a removable registration that is a context manager.

    Subclasses implement :meth:`_register`, returning the handle PyTorch gave them, and wrap
    their function with :meth:`_storing`.

    Args:
        store: keep the last value the hook's function returned in :attr:`stored`.
        detach: store tensors (also inside tuples and lists) detached from the graph.
    """

    def __init__(self, *, store: bool = False, detach: bool = True) -> None:
        self._handle: RemovableHandle | None = None
        self.store, self.detach = bool(store), bool(detach)
        self._stored: Any = None

    @property
    def stored(self) -> Any:
        """The value the hook's function returned at its last call (None before the first),
        kept after the hook is removed.

        Raises:
            RuntimeError: the hook was made without ``store=True``.
        """
        if not self.store:
            raise RuntimeError(f"{self!r} does not store values; make it with store=True (or "
                               "with HookDict.from_modules / from_tensors)")
        return self._stored

    def _storing(self, fn: Callable[..., Any], seen: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` itself, or with ``store``, a wrapper that calls ``fn``, keeps
        ``seen(result, *args)`` (the result, or what the hook saw when it has no function) and
        returns ``fn``'s result."""
        if not self.store:
            return fn

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            self._stored = _detached(seen(result, *args), self.detach)
            return result

        return wrapper

    @property
    def active(self) -> bool:
        """Whether the hook is currently registered."""
        return self._handle is not None

    def _register(self) -> RemovableHandle:
        raise NotImplementedError

    def register(self) -> Hook:
        """Registers the hook; registering an active hook is an error."""
        if self._handle is not None:
            raise RuntimeError(f"{self!r} is already registered")
        self._handle = self._register()
        return self

    def remove(self) -> None:
        """Removes the hook; a second call does nothing."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.remove()

    def __enter__(self) -> Hook:
        return self.register()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()  # never swallows the body's exception


class ModuleHook(Hook):
    """A hook on an ``nn.Module``.

    Args:
        module: the module to hook.
        fn: the hook function, with PyTorch's signature for ``kind``; what it returns replaces
            the output (or inputs, or gradients) as in PyTorch. None (only with ``store``):
            no function, the hook stores what it sees.
        kind: ``"forward"`` (``fn(module, args, output)``), ``"forward_pre"``
            (``fn(module, args)``), ``"full_backward"`` (``fn(module, grad_input,
            grad_output)``) or ``"full_backward_pre"`` (``fn(module, grad_output)``).
        store: keep in :attr:`stored` the value ``fn`` returned at its last call; without
            ``fn``, what the hook saw: the output (``"forward"``), the positional inputs
            (``"forward_pre"``) or ``grad_output`` (the backward kinds).
        detach: store tensors detached (default).
        **options: passed to the ``register_*`` call (``prepend``, ``with_kwargs``,
            ``always_call``).

    Raises:
        ValueError: an unknown ``kind``, or neither ``fn`` nor ``store``.

    Example:
        >>> layer = torch.nn.Linear(2, 3)
        >>> with ModuleHook(layer, store=True) as h:
        ...     _ = layer(torch.zeros(4, 2))
        >>> h.stored.shape
        torch.Size([4, 3])
    """

    def __init__(
        self, module: nn.Module, fn: Callable[..., Any] | None = None,
        kind: ModuleHookKind = "forward", *, store: bool = False, detach: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(store=store, detach=detach)
        registrars: dict[str, Callable[..., RemovableHandle]] = {
            "forward": module.register_forward_hook,
            "forward_pre": module.register_forward_pre_hook,
            "full_backward": module.register_full_backward_hook,
            "full_backward_pre": module.register_full_backward_pre_hook,
        }
        if kind not in registrars:
            raise ValueError(f"unknown hook kind {kind!r}; expected one of {sorted(registrars)}")
        if fn is None and not store:
            raise ValueError("a ModuleHook needs a function fn, or store=True to keep what it "
                             "sees")
        self._registrar = registrars[kind]
        self.fn, self.kind, self.options = fn, kind, options

    def _register(self) -> RemovableHandle:
        fn = self.fn if self.fn is not None else _nothing
        if self.fn is not None:
            seen: Callable[..., Any] = _result
        elif self.kind == "forward":
            seen = _output
        elif self.kind == "forward_pre":
            seen = _inputs
        else:
            seen = _grad_output
        return self._registrar(self._storing(fn, seen), **self.options)


class TensorHook(Hook):
    """A gradient hook on a tensor: ``fn(grad) -> grad | None``.

    Args:
        tensor: a tensor that requires grad.
        fn: called with the gradient of the tensor during backward; may return a replacement.
            None (only with ``store``): the hook stores the gradient, unchanged.
        store: keep in :attr:`stored` the value ``fn`` returned at its last call (without
            ``fn``, the gradient).
        detach: store tensors detached (default).

    Raises:
        ValueError: the tensor does not require grad, or neither ``fn`` nor ``store``.
    """

    def __init__(self, tensor: torch.Tensor,
                 fn: Callable[[torch.Tensor], torch.Tensor | None] | None = None, *,
                 store: bool = False, detach: bool = True):
        super().__init__(store=store, detach=detach)
        if not tensor.requires_grad:
            raise ValueError("cannot hook the gradient of a tensor that does not require grad")
        if fn is None and not store:
            raise ValueError("a TensorHook needs a function fn, or store=True to keep the "
                             "gradient")
        self.tensor: torch.Tensor | None = tensor
        self.fn = fn

    def _register(self) -> RemovableHandle:
        if self.tensor is None:
            raise RuntimeError("a TensorHook can be registered only once")
        fn = self.fn if self.fn is not None else _nothing
        seen = _result if self.fn is not None else _grad
        handle = self.tensor.register_hook(self._storing(fn, seen))
        self.tensor = None  # the handle suffices to remove it; do not keep the tensor alive
        return handle


class HookDict:
    """A named collection of hooks, all removed when the ``with`` block ends.

    Assigning a hook into an open ``HookDict`` registers it at once; replacing a name removes
    the old hook. On exit every hook is removed, in reverse order, even if the body raised.
    Hooks given to the constructor are registered when the block begins.

    The values of the hooks that store them (``store=True``) are read by name with
    :attr:`stored` and :meth:`get_stored`, inside the block and after it.

    Args:
        hooks: name -> hook, registered on ``__enter__`` (default none).

    Example:
        >>> layer = torch.nn.ReLU()
        >>> with HookDict() as hooks:
        ...     hooks["relu"] = ModuleHook(layer, lambda m, i, o: None)
        ...     len(layer._forward_hooks)
        1
        >>> len(layer._forward_hooks)
        0
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
        >>> with HookDict.from_modules({"fc": net[0], "relu": net[1]}) as hooks:
        ...     _ = net(torch.ones(1, 2))
        >>> torch.equal(hooks.stored["relu"], hooks.stored["fc"].relu())
        True
    """

    def __init__(self, hooks: Mapping[str, Hook] | None = None) -> None:
        self._hooks: dict[str, Hook] = {}
        self._open = False
        if hooks is not None and not isinstance(hooks, Mapping):
            raise TypeError(f"hooks must be a mapping name -> Hook, got {type(hooks).__name__}")
        self._pending: dict[str, Hook] = dict(hooks or {})
        for name, hook in self._pending.items():
            if not isinstance(hook, Hook):
                raise TypeError(f"hooks[{name!r}] must be a Hook, got {type(hook).__name__}")
        self._kept: dict[str, Any] = {}

    @classmethod
    def from_modules(cls, modules: Mapping[str, nn.Module],
                     fn: Callable[..., Any] | None = None, kind: ModuleHookKind = "forward", *,
                     detach: bool = True, **options: Any) -> HookDict:
        """One storing :class:`ModuleHook` per module, registered when the block begins.

        Args:
            modules: name -> module.
            fn: the hook function of every module (its result is stored); None stores what
                each hook sees (the output of a ``"forward"`` hook, ...; see
                :class:`ModuleHook`).
            kind: the hook kind, as :class:`ModuleHook`'s.
            detach: store tensors detached.
            **options: passed to each ``register_*`` call.

        Returns:
            A :class:`HookDict` to use in a ``with`` block.

        Raises:
            TypeError: an entry that is not an ``nn.Module``.
        """
        for name, m in modules.items():
            if not isinstance(m, nn.Module):
                raise TypeError(f"modules[{name!r}] must be an nn.Module, got {type(m).__name__}")
        return cls({name: ModuleHook(m, fn, kind, store=True, detach=detach, **options)
                    for name, m in modules.items()})

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor],
                     fn: Callable[[torch.Tensor], Any] | None = None, *,
                     detach: bool = True) -> HookDict:
        """One storing :class:`TensorHook` per tensor (each requires grad), registered when the
        block begins; ``fn=None`` stores each tensor's gradient.

        Returns:
            A :class:`HookDict` to use in a ``with`` block.

        Raises:
            ValueError: a tensor that does not require grad.
        """
        return cls({name: TensorHook(t, fn, store=True, detach=detach)
                    for name, t in tensors.items()})

    def add_gradient_captor_hook(self, name: str, tensor: torch.Tensor) -> TensorHook:
        """Registers, under ``name``, a hook that stores the gradient of ``tensor`` (unchanged).

        Raises:
            RuntimeError: outside the ``with`` block.
            ValueError: the tensor does not require grad.
        """
        hook = TensorHook(tensor, store=True)
        self[name] = hook
        return hook

    @property
    def stored(self) -> dict[str, Any]:
        """``{name: hook.stored}`` of the hooks that store values; after the block, the values
        they held when it ended."""
        live = {n: h.stored for n, h in self._hooks.items() if h.store}
        return {**self._kept, **live}

    def get_stored(self, name: str, default: Any = None) -> Any:
        """The stored value of hook ``name``, or ``default`` if no storing hook has that name."""
        return self.stored.get(name, default)

    def __enter__(self) -> HookDict:
        self._open = True
        self._kept = {}
        pending, self._pending = self._pending, {}
        try:
            for name, hook in pending.items():
                self[name] = hook
        except BaseException:
            self._open = False
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._open = False
        self.remove()

    def __setitem__(self, name: str, hook: Hook) -> None:
        if not self._open:
            raise RuntimeError("HookDict only accepts hooks inside its `with` block")
        old = self._hooks.pop(name, None)
        if old is not None:
            old.remove()
        hook.register()
        self._hooks[name] = hook

    def add(self, hook: Hook) -> Hook:
        """Registers an anonymous hook and returns it."""
        self[f"_{len(self._hooks)}_{id(hook)}"] = hook
        return hook

    def __getitem__(self, name: str) -> Hook:
        return self._hooks[name]

    def __delitem__(self, name: str) -> None:
        self._hooks.pop(name).remove()

    def __contains__(self, name: object) -> bool:
        return name in self._hooks

    def __iter__(self) -> Iterator[str]:
        return iter(self._hooks)

    def __len__(self) -> int:
        return len(self._hooks)

    def remove(self) -> None:
        """Removes every hook; harmless when called twice. All removals run even if one fails.
        The stored values stay readable through :attr:`stored`."""
        self._kept.update({n: h._stored for n, h in self._hooks.items() if h.store})
        errors: list[BaseException] = []
        for hook in reversed(list(self._hooks.values())):
            try:
                hook.remove()
            except Exception as e:  # pragma: no cover - handles failing to remove are PyTorch bugs
                errors.append(e)
        self._hooks.clear()
        if errors:
            raise errors[0]


def _detached(value: Any, detach: bool) -> Any:
    if not detach:
        return value
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v, True) for v in value)
    return value


def _nothing(*args: Any) -> None:
    """The function of a hook that only stores what it sees."""
    return None


def _result(result: Any, *args: Any) -> Any:
    return result


def _output(result: Any, *args: Any) -> Any:
    return args[-1]  # (module, args, output) or, with_kwargs, (module, args, kwargs, output)


def _inputs(result: Any, *args: Any) -> Any:
    return args[1]  # (module, args) or, with_kwargs, (module, args, kwargs)


def _grad_output(result: Any, module: nn.Module, *grads: Any) -> Any:
    return grads[-1]  # full_backward: (grad_input, grad_output); full_backward_pre: (grad_output,)


def _grad(result: Any, grad: torch.Tensor) -> torch.Tensor:
    return grad
