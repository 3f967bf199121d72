from __future__ import annotations

import sys

import pytest
import torch
import torchvision
from torch import nn

import netlens as nl
from netlens import FlatModel, UnknownLayerError
from netlens.flat_model import check_input


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def test_layer_names_in_execution_order_with_reused_calls(resnet):
    fm = FlatModel(resnet)
    names = fm.layer_names
    assert names[:6] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer1.0"]
    assert names.index("layer1.0.relu") < names.index("layer1.0.conv2")
    assert names.index("layer1.0.bn2") < names.index("layer1.0.relu:1")
    assert names[-2:] == ["avgpool", "fc"] and len(names) == len(set(names))
    assert fm["layer1.0.relu:1"] is resnet.layer1[0].relu is fm["layer1.0.relu"]
    assert fm["layer4.1.conv2"] is resnet.layer4[1].conv2
    assert fm.layer_info("layer1.0.relu:1").index == 1
    assert list(fm) == names


def test_output_is_bit_identical_and_model_is_not_copied(resnet, untouched):
    x = torch.randn(2, 3, 48, 40)
    with untouched(resnet):
        fm = FlatModel(resnet)
        assert fm.model is resnet
        assert torch.equal(fm(x), resnet(x))
        with fm.record(["layer2", "layer1.0.relu:1"], gradients=True):
            assert torch.equal(fm(x), resnet(x))
        assert FlatModel(fm).model is resnet  # a FlatModel is unwrapped, not nested


def test_record_matches_a_hand_written_hook(every_relu_net, untouched):
    """Activations and gradients, for a module call, a reused module's 2nd call and F.relu."""
    fm = FlatModel(every_relu_net)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    with untouched(every_relu_net):
        with fm.record(["conv3", "shared:1", "relu()"], gradients=True) as rec:
            torch.autograd.grad(fm(x)[:, 2].sum(), x)
    # The oracle: plain PyTorch hooks. Values are cloned at the call because conv3's output is
    # overwritten by the in-place ReLU that follows it.
    values, grads, handles = {}, {}, []

    def keep(name):
        def hook(module, args, output):
            values[name] = output.detach().clone()
            output.register_hook(lambda g: grads.__setitem__(name, g))
        return hook

    calls = []
    handles.append(every_relu_net.conv3.register_forward_hook(keep("conv3")))
    handles.append(every_relu_net.shared.register_forward_hook(
        lambda m, a, o: keep(f"shared:{len(calls)}")(m, a, o) or calls.append(1)))
    handles.append(every_relu_net.conv5.register_forward_hook(
        lambda m, a, o: torch.relu(o)))  # replaces conv5's output by relu(conv5): same values
    try:
        out = every_relu_net(x)
        torch.autograd.grad(out[:, 2].sum(), x)
    finally:
        for h in handles:
            h.remove()
    for name in ("conv3", "shared:1"):
        assert torch.equal(rec.activations[name], values[name])
        assert torch.allclose(rec.gradients[name], grads[name], rtol=0, atol=1e-12)
    relu = rec.activations["relu()"]
    assert torch.equal(relu, torch.relu(every_relu_net.conv5(values["shared:1"])))
    # d out / d relu(): through mean pooling, torch.relu and fc (the last relu's mask)
    pooled = relu.mean((2, 3))
    upstream = every_relu_net.fc.weight[2] * (pooled > 0)
    expected = (upstream[:, :, None, None] / 64).expand_as(relu)
    assert torch.allclose(rec.gradients["relu()"], expected, rtol=0, atol=1e-12)


def test_recorded_activation_is_not_changed_by_later_inplace_ops(resnet):
    fm = FlatModel(resnet)
    x = torch.randn(1, 3, 32, 32)
    bn = []
    h = resnet.layer1[0].bn2.register_forward_hook(lambda m, i, o: bn.append(o.clone()))
    try:
        with fm.record("layer1.0.bn2") as rec:  # followed by `out += identity` in place
            fm(x)
    finally:
        h.remove()
    assert torch.equal(rec.activations["layer1.0.bn2"], bn[-1])


def test_until_stops_early_and_keeps_the_graph(resnet):
    fm = FlatModel(resnet)
    fm.layer_names  # the layers are found by one forward pass; do it before counting calls
    calls = []
    h = resnet.layer3.register_forward_pre_hook(lambda *a: calls.append(1))
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    try:
        out = fm(x, until="layer2.0.relu:1")
    finally:
        h.remove()
    assert calls == []  # nothing after the layer ran
    expected = {}
    h = resnet.layer2[0].relu.register_forward_hook(lambda m, i, o: expected.setdefault(
        len(expected), o.detach().clone()))
    try:
        resnet(x)
    finally:
        h.remove()
    assert torch.equal(out.detach(), expected[1])
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_until_on_a_functional_call():
    torch.manual_seed(0)
    net = torchvision.models.googlenet(aux_logits=False, init_weights=False).eval()
    fm = FlatModel(net)
    x = torch.randn(1, 3, 32, 32)
    out = fm(x, until="inception3a.branch2.1.relu()")
    assert out.shape == (1, 128, 4, 4) and (out >= 0).all()
    assert fm["inception3a.branch2.1.relu()"] is torch.nn.functional.relu


def test_bad_input_errors(resnet):
    with pytest.raises(TypeError, match="needs a torch.nn.Module"):
        FlatModel(lambda x: x)  # type: ignore[arg-type]
    fm = FlatModel(resnet)
    with pytest.raises(UnknownLayerError, match=r"did you mean 'layer4'"):
        fm.resolve_layer("layer5")
    with pytest.raises(KeyError):  # also a KeyError, as for a dict
        fm["layer4.1.conv9"]
    with pytest.raises(ValueError, match="layer1.0.relu:1"):
        fm.record("layer1.0.relu:2").__enter__()
    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\).*unsqueeze"):
        fm(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="expects 3-channel images, got 1"):
        fm(torch.zeros(1, 1, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        check_input(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        check_input(torch.full((1, 3, 4, 4), float("nan")), finite=True)


def test_until_a_layer_the_forward_never_reaches():
    torch.manual_seed(0)
    net = torchvision.models.googlenet(aux_logits=True, init_weights=False).eval()
    fm = FlatModel(net, example_input=torch.zeros(1, 3, 32, 32))
    with pytest.raises(UnknownLayerError, match="never calls it"):
        fm(torch.zeros(1, 3, 32, 32), until="aux1")

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Identity(), nn.Identity()

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else self.b(x)

    fm = FlatModel(Branchy(), example_input=torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match="without reaching layer 'a'"):
        fm(-torch.ones(1, 3, 2, 2), until="a")


def test_default_example_input_and_helpful_failure():
    fm = FlatModel(torchvision.models.squeezenet1_1().eval())
    assert "features.0" in fm.layer_names

    class NeedsTwoInputs(nn.Module):
        def forward(self, x, y):
            return x + y

    # The model's own error, with its own type; netlens adds what it was doing and the fix as
    # a note (Python >= 3.11), it does not replace the exception.
    with pytest.raises(TypeError, match="missing 1 required positional argument") as info:
        FlatModel(NeedsTwoInputs()).layer_names
    if sys.version_info >= (3, 11):
        assert any("example_input" in note for note in info.value.__notes__)


def test_a_small_model_that_declares_no_size_is_found_at_its_own_size():
    """A 28x28 one-channel model fails at the default 224 pixels; its layers are found at the
    first size of GUESSED_SIDES it runs at, and a model that fails at every size gets its error
    at 224 with the sizes tried and the fix."""
    torch.manual_seed(0)
    mnist = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    fm = FlatModel(mnist.eval())
    assert fm.layer_names == ["0", "1", "2", "3"] and fm.traced_input_shape == (1, 1, 28, 28)
    cifar = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 10)).eval()
    fm = FlatModel(cifar)
    assert "2" in fm.layer_names and fm.traced_input_shape == (1, 3, 32, 32)
    odd = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 5 * 5, 10)).eval()
    with pytest.raises(RuntimeError, match="mat1 and mat2") as info:
        FlatModel(odd).layer_names
    if sys.version_info >= (3, 11):
        (note,) = info.value.__notes__
        assert "(1, 1, 224, 224)" in note and "28x28" in note and "example_input" in note
    assert FlatModel(odd, example_input=torch.zeros(1, 1, 7, 7)).layer_names == ["0", "1", "2"]


def _count_forwards(model: nn.Module) -> list[int]:
    calls = [0]

    def count(*_):
        calls[0] += 1
    model.register_forward_hook(count)  # this test's own throwaway model: the hook may stay
    return calls


def test_layers_found_once_per_model_and_input_shape():
    """The pure functions wrap a plain module in a new FlatModel on every call; the layers
    found by the first are reused (no extra forward pass) while the model's modules and the
    input's shape stay the same, and found again when one changes. Layers are always found in
    eval mode, so switching the model to training mode reuses them."""
    import gc
    import weakref

    from netlens.attribution import saliency

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).eval()
    forwards = _count_forwards(model)
    x = torch.rand(2, 3, 16, 16)
    first = saliency(model, x, 1)
    traced = forwards[0]
    assert traced >= 2  # one pass to find the layers, one (or more) for the gradient
    assert torch.equal(saliency(model, x, 1), first)
    assert forwards[0] - traced == traced - 1  # the second call skipped the tracing pass
    assert FlatModel(model).layer_names  # a new FlatModel resolves names from the same trace
    model.train()
    before = forwards[0]
    FlatModel(model).ensure_traced(x)
    assert forwards[0] == before, "a training model's layers are its eval-mode layers"
    model.eval()
    for change in ("input size", "module"):
        y = torch.rand(2, 3, 20, 16) if change == "input size" else x
        if change == "module":
            model[4] = nn.Linear(4, 5)
        before = forwards[0]
        fm = FlatModel(model)
        fm.ensure_traced(y)
        assert forwards[0] == before + 1, f"a changed {change} must be traced again"
    ref = weakref.ref(model)
    del model, fm
    gc.collect()
    assert ref() is None, "the cache of layers must not keep a model alive"


def test_torchscript_is_refused_with_the_fix():
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU()))
    with pytest.raises(TypeError, match="TorchScript.*torch.save"):
        FlatModel(scripted)


ALEXNET_1X_KEYS = """features-conv-0 features-relu-0 features-pool-0 features-conv-1 features-relu-1
features-pool-1 features-conv-2 features-relu-2 features-conv-3 features-relu-3 features-conv-4
features-relu-4 features-pool-2 avgpool-0 flatten classifier-dropout-0 classifier-linear-0
classifier-relu-0 classifier-dropout-1 classifier-linear-1 classifier-relu-1
classifier-linear-2""".split()  # the original's AlexNet keys, in its order (asserted by its tests)


def test_netlens_1x_keys_name_the_layers_the_original_meant(capsys):
    def build(name, **kwargs):  # on the meta device: names and shapes without initialization
        with torch.device("meta"):
            return getattr(torchvision.models, name)(**kwargs).eval()

    alexnet = FlatModel(build("alexnet"))
    keys = alexnet.original_keys
    assert sorted(keys) == sorted(ALEXNET_1X_KEYS)
    assert keys["features-conv-4"] == "features.10" and keys["features-relu-4"] == "features.11"
    assert keys["classifier-linear-2"] == "classifier.6" and keys["flatten"] == "avgpool"
    # every key names a module of the type the key says (and flatten the layer feeding the
    # first linear layer)
    kinds = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d, "linear": nn.Linear,
             "dropout": nn.Dropout, "avgpool": nn.AdaptiveAvgPool2d, "bn": nn.BatchNorm2d}
    for model in (build("vgg11_bn"), build("resnet50")):
        fm = FlatModel(model)
        for key, name in fm.original_keys.items():
            kind = key.rsplit("-", 2)[-2] if key != "flatten" else None
            if kind in kinds:
                assert isinstance(fm[name], kinds[kind]), (key, name)
    resnet = FlatModel(build("resnet18"))
    assert resnet.resolve_layer("layer1-BasicBlock-1") == "layer1.1"
    assert resnet.resolve_layer("conv-0") == "conv1" and resnet.resolve_layer("linear-0") == "fc"
    vgg = FlatModel(build("vgg16_bn"))
    assert vgg.resolve_layer("features-bn-0") == "features.1"
    assert vgg.resolve_layer("features-pool-4") == "features.43"
    googlenet = FlatModel(build("googlenet", aux_logits=False, init_weights=False))
    assert googlenet.resolve_layer("inception4c") == "inception4c"
    assert googlenet.resolve_layer("flatten") == "avgpool"
    # an unknown key gets suggestions in the key scheme the user typed, with their names
    with pytest.raises(UnknownLayerError, match=r"'features-conv-4' \('features.10'\)"):
        alexnet.resolve_layer("features-conv-9")
    table = alexnet.summary()
    assert capsys.readouterr().out.strip() == table
    row = next(line.split() for line in table.splitlines() if " features.10 " in f" {line} ")
    assert row == ["11", "features.10", "features-conv-4", "Conv2d", "1x256x13x13"]


def test_a_netlens_1x_key_works_wherever_a_layer_name_is_taken():
    torch.manual_seed(0)
    model = torchvision.models.alexnet().eval()
    x = torch.rand(1, 3, 96, 96)
    assert torch.equal(nl.attribution.gradcam(model, x, 3, layer="features-relu-4"),
                       nl.attribution.gradcam(model, x, 3, layer="features.11"))
    assert torch.equal(
        nl.attribution.layer_channel_gradient(model, x, layer="features-conv-4", channel=7),
        nl.attribution.layer_channel_gradient(model, x, layer="features.10", channel=7))
    fm = FlatModel(model)
    with fm.record(["features-conv-2"]) as seen:
        fm(x)
    (recorded,) = seen.activations.values()
    assert recorded.shape == (1, 384, 5, 5)  # features.6, the third convolution
