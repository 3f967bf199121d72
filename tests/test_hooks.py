from __future__ import annotations

import pytest
import torch
from torch import nn

from netlens.hooks import HookDict, ModuleHook, TensorHook


def hook_count(m: nn.Module) -> int:
    return sum(len(getattr(m, a)) for a in ("_forward_hooks", "_forward_pre_hooks",
                                            "_backward_hooks", "_backward_pre_hooks"))


@pytest.mark.parametrize("kind", ["forward", "forward_pre", "full_backward", "full_backward_pre"])
def test_module_hook_fires_inside_and_is_removed_after(kind):
    layer = nn.Linear(3, 2)
    calls = []
    with ModuleHook(layer, lambda *a: calls.append(kind), kind) as h:
        assert h.active and hook_count(layer) == 1
        layer(torch.ones(1, 3, requires_grad=True)).sum().backward()
    assert calls == [kind] and not h.active and hook_count(layer) == 0
    layer(torch.ones(1, 3, requires_grad=True)).sum().backward()
    assert calls == [kind]


def test_module_hook_removed_when_body_raises_and_remove_twice_is_harmless():
    layer = nn.ReLU()
    hook = ModuleHook(layer, lambda *a: None)
    with pytest.raises(ZeroDivisionError):
        with hook:
            assert hook_count(layer) == 1
            1 / 0
    assert hook_count(layer) == 0
    hook.remove()
    hook.remove()


def test_module_hook_errors():
    with pytest.raises(ValueError, match="unknown hook kind"):
        ModuleHook(nn.ReLU(), print, "backward_sideways")  # type: ignore[arg-type]
    hook = ModuleHook(nn.ReLU(), lambda *a: None)
    with hook:
        with pytest.raises(RuntimeError, match="already registered"):
            hook.register()


def test_tensor_hook_modifies_gradient_and_is_removed():
    x = torch.ones(3, requires_grad=True)
    y = x * 2
    with TensorHook(y, lambda g: g * 10):
        pass
    y.sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 2.0))  # removed before backward: no effect
    x.grad = None
    y = x * 2
    with TensorHook(y, lambda g: g * 10):
        y.sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 20.0))
    with pytest.raises(ValueError, match="does not require grad"):
        TensorHook(torch.ones(2), lambda g: g)


def test_hook_dict_removes_everything_on_error_and_replaces_names():
    a, b = nn.ReLU(), nn.ReLU()
    with pytest.raises(KeyError):
        with HookDict() as hooks:
            hooks["a"] = ModuleHook(a, lambda *x: None)
            hooks["b"] = ModuleHook(b, lambda *x: None, "forward_pre")
            hooks.add(ModuleHook(b, lambda *x: None))
            assert len(hooks) == 3 and "a" in hooks and hook_count(b) == 2
            hooks["a"] = ModuleHook(a, lambda *x: None, "forward_pre")  # replaces the old one
            assert hook_count(a) == 1
            del hooks["b"]
            assert hook_count(b) == 1
            raise KeyError("boom")
    assert hook_count(a) == hook_count(b) == 0
    hooks.remove()  # twice is harmless
    with pytest.raises(RuntimeError, match="inside its `with` block"):
        hooks["late"] = ModuleHook(a, lambda *x: None)
    assert hook_count(a) == 0
