"""Hooks that cannot outlive the block that made them.

PyTorch's ``register_*_hook`` functions return handles that the caller must remember to remove;
a forgotten handle silently changes every later forward or backward pass. Here every hook is a
context manager: it is registered on ``__enter__`` and removed on ``__exit__``, also when the body
raised, and removing it twice is harmless.

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

from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["Hook", "ModuleHook", "TensorHook", "HookDict"]

ModuleHookKind = Literal["forward", "forward_pre", "full_backward", "full_backward_pre"]


class Hook:
    """Base class: a removable registration that is a context manager.

    Subclasses implement :meth:`_register`, returning the handle PyTorch gave them.
    """

    def __init__(self) -> None:
        self._handle: RemovableHandle | None = None

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
        fn: the hook function, with PyTorch's signature for ``kind``.
        kind: ``"forward"`` (``fn(module, args, output)``), ``"forward_pre"``
            (``fn(module, args)``), ``"full_backward"`` or ``"full_backward_pre"``.
        **options: passed to the ``register_*`` call (``prepend``, ``with_kwargs``,
            ``always_call``).
    """

    def __init__(
        self, module: nn.Module, fn: Callable[..., Any], kind: ModuleHookKind = "forward",
        **options: Any,
    ) -> None:
        super().__init__()
        registrars: dict[str, Callable[..., RemovableHandle]] = {
            "forward": module.register_forward_hook,
            "forward_pre": module.register_forward_pre_hook,
            "full_backward": module.register_full_backward_hook,
            "full_backward_pre": module.register_full_backward_pre_hook,
        }
        if kind not in registrars:
            raise ValueError(f"unknown hook kind {kind!r}; expected one of {sorted(registrars)}")
        self._registrar = registrars[kind]
        self.fn, self.kind, self.options = fn, kind, options

    def _register(self) -> RemovableHandle:
        return self._registrar(self.fn, **self.options)


class TensorHook(Hook):
    """A gradient hook on a tensor: ``fn(grad) -> grad | None``.

    Args:
        tensor: a tensor that requires grad.
        fn: called with the gradient of the tensor during backward; may return a replacement.
    """

    def __init__(self, tensor: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor | None]):
        super().__init__()
        if not tensor.requires_grad:
            raise ValueError("cannot hook the gradient of a tensor that does not require grad")
        self.tensor: torch.Tensor | None = tensor
        self.fn = fn

    def _register(self) -> RemovableHandle:
        if self.tensor is None:
            raise RuntimeError("a TensorHook can be registered only once")
        handle = self.tensor.register_hook(self.fn)
        self.tensor = None  # the handle suffices to remove it; do not keep the tensor alive
        return handle


class HookDict:
    """A named collection of hooks, all removed when the ``with`` block ends.

    Assigning a hook into an open ``HookDict`` registers it at once; replacing a name removes
    the old hook. On exit every hook is removed, in reverse order, even if the body raised.

    Example:
        >>> layer = torch.nn.ReLU()
        >>> with HookDict() as hooks:
        ...     hooks["relu"] = ModuleHook(layer, lambda m, i, o: None)
        ...     len(layer._forward_hooks)
        1
        >>> len(layer._forward_hooks)
        0
    """

    def __init__(self) -> None:
        self._hooks: dict[str, Hook] = {}
        self._open = False

    def __enter__(self) -> HookDict:
        self._open = True
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
        """Removes every hook; harmless when called twice. All removals run even if one fails."""
        errors: list[BaseException] = []
        for hook in reversed(list(self._hooks.values())):
            try:
                hook.remove()
            except Exception as e:  # pragma: no cover - handles failing to remove are PyTorch bugs
                errors.append(e)
        self._hooks.clear()
        if errors:
            raise errors[0]
