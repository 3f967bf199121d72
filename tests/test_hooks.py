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


# -- stored values (the original Netlens's HookDict conveniences) ------------------------------
def test_hook_dict_from_modules_stores_each_modules_output_detached_after_the_block():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    with HookDict.from_modules({"fc": net[0], "out": net[2]}) as hooks:
        assert hook_count(net[0]) == hook_count(net[2]) == 1
        y = net(x)
        assert torch.equal(hooks.get_stored("fc"), net[0](x))
    assert hook_count(net[0]) == hook_count(net[2]) == 0
    h = net[0](x)
    assert torch.equal(hooks.stored["fc"], h) and torch.equal(hooks.stored["out"], y)
    assert not hooks.stored["out"].requires_grad and y.requires_grad
    assert hooks.get_stored("absent") is None and hooks.get_stored("absent", 7) == 7
    assert set(hooks.stored) == {"fc", "out"}


def test_stored_values_of_a_function_inputs_and_backward_hooks():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    x = torch.randn(4, 3, requires_grad=True)
    with HookDict.from_modules({"l": layer}, lambda m, i, o: o * 2) as doubled:
        out = layer(x)  # the function's result replaces the output and is stored
    assert torch.equal(out, doubled.stored["l"]) and torch.equal(out, 2 * layer(x))
    with HookDict.from_modules({"l": layer}, kind="forward_pre", detach=False) as pre:
        layer(x)
    assert pre.stored["l"][0] is x  # the inputs, not detached
    with HookDict.from_modules({"l": layer}, kind="full_backward") as back:
        layer(x).pow(2).sum().backward()
    assert torch.allclose(back.stored["l"][0], 2 * layer(x).detach())  # grad_output
    with HookDict() as plain:
        plain["f"] = ModuleHook(layer, lambda *a: None)  # not storing: not in stored
        plain["s"] = ModuleHook(layer, store=True)
        layer(x)
    assert set(plain.stored) == {"s"}
    with pytest.raises(RuntimeError, match="store=True"):
        _ = ModuleHook(layer, lambda *a: None).stored
    with pytest.raises(ValueError, match="store=True"):
        ModuleHook(layer)


def test_gradient_captors_store_the_gradient_unchanged():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x
    z = y * 3
    with HookDict.from_tensors({"y": y}) as hooks:
        hooks.add_gradient_captor_hook("z", z)
        z.sum().backward()
    assert torch.equal(hooks.stored["z"], torch.ones(3))
    assert torch.equal(hooks.stored["y"], torch.full((3,), 3.0))
    assert torch.equal(x.grad, 6 * x.detach())  # the captors changed nothing
    x.grad = None
    y = x * x
    with HookDict.from_tensors({"y": y}, lambda g: g * 10) as hooks:
        y.sum().backward()
    assert torch.equal(hooks.stored["y"], torch.full((3,), 10.0))
    assert torch.equal(x.grad, 20 * x.detach())
    with pytest.raises(RuntimeError, match="inside its `with` block"):
        hooks.add_gradient_captor_hook("late", x * 2)
    with pytest.raises(ValueError, match="does not require grad"):
        HookDict.from_tensors({"c": torch.ones(2)})


def test_constructor_hooks_register_on_enter_and_bad_ones_are_refused():
    layer = nn.ReLU()
    hooks = HookDict({"r": ModuleHook(layer, store=True)})
    assert hook_count(layer) == 0
    with pytest.raises(ZeroDivisionError):
        with hooks:
            assert hook_count(layer) == 1 and "r" in hooks
            layer(torch.tensor([-1.0, 2.0]))
            1 / 0
    assert hook_count(layer) == 0
    assert torch.equal(hooks.stored["r"], torch.tensor([0.0, 2.0]))
    with pytest.raises(TypeError, match="must be a Hook"):
        HookDict({"r": layer})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="nn.Module"):
        HookDict.from_modules({"r": "relu"})  # type: ignore[dict-item]
