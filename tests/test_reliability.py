"""Correctness under every call (issue 13): a model in training mode is explained in eval mode
and left as it was; the model's own exceptions reach the caller; calls on one model from several
threads are serialized (calls on different models are not) and a raced first call builds the
layer list once; a fault at any model call of any method leaves the model, its hooks and the
global random state as they were.

What the tests know about methods comes from the registry (``METHODS``, ``cheap``,
``options_for``).
"""

from __future__ import annotations

import copy
import gc
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from netlens import FlatModel, NetLens
from netlens import metrics as M
from netlens._util import NetlensWarning
from netlens.attribution import METHODS, gradcam, saliency
from netlens.optvis import objectives as obj
from netlens.optvis.render import OptVis

from helpers import assert_untouched, global_hooks, model_state

TRAINING = "the model is in training mode; netlens explains it in eval mode"
SIZE = 16


class BnDropNet(nn.Module):
    """A tiny CNN with what training mode changes: BatchNorm (running statistics) and dropout
    (the global random state), an in-place ReLU, and a ReLU module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.fc(self.drop(x.mean(dim=(2, 3))))


def bn_drop_net(seed: int = 0) -> BnDropNet:
    torch.manual_seed(seed)
    net = BnDropNet().double()
    with torch.no_grad():  # statistics that differ from a batch's, so train != eval mode
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def images(batch: int = 2, size: int = SIZE, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g, dtype=torch.float64)


def run(name: str, model: nn.Module, x: torch.Tensor, target: Any = 1) -> torch.Tensor:
    """The registry's method with its cheap options and a seeded generator."""
    spec = METHODS[name]
    options = {**spec.cheap, **spec.options_for(
        {"generator": torch.Generator().manual_seed(3), "progress": False})}
    return spec(model, x, target, **options)


# -- 1. training mode ------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_explains_a_training_model_in_eval_mode(name: str) -> None:
    model, x = bn_drop_net(), images()
    expected = run(name, model, x)
    model.train()
    before = model_state(model, rng=True)
    with pytest.warns(NetlensWarning, match=TRAINING):
        first = run(name, model, x)
    assert_untouched(model, before)  # running statistics, num_batches_tracked, RNG, mode
    assert model.training
    torch.testing.assert_close(first, expected, rtol=1e-12, atol=1e-12)
    with pytest.warns(NetlensWarning, match=TRAINING):
        lens = NetLens(model).attribute(name, x, 1, **{**METHODS[name].cheap, **METHODS[
            name].options_for({"generator": torch.Generator().manual_seed(3),
                               "progress": False})})
    torch.testing.assert_close(lens, expected, rtol=1e-12, atol=1e-12)
    assert_untouched(model, before)


def test_resnet18_in_training_mode_is_left_alone_and_deterministic() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5)
    model.fc = nn.Sequential(nn.Dropout(0.5), model.fc)
    model.train()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = model_state(model, rng=True)
    with pytest.warns(NetlensWarning, match="call model.eval\\(\\) to silence this"):
        a = saliency(model, x, 1)
        b = NetLens(model).saliency(x, 1)
    assert_untouched(model, before)  # bn1.num_batches_tracked and running_mean included
    # deterministic: dropout off (it would change the map by ~1); the two calls may still
    # differ by float32 round-off (other kernels after other tests changed thread settings)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    expected = saliency(model.eval(), x, 1)
    torch.testing.assert_close(a, expected)


def test_the_training_warning_is_shown_once_per_call_site() -> None:
    model, x = bn_drop_net(), images()
    model.train()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        for _ in range(3):
            gradcam(model, x, 1)  # several guarded blocks per call, three calls: one warning
    ours = [w for w in seen if issubclass(w.category, NetlensWarning)]
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert ours[0].filename == __file__
    assert str(ours[0].message) == (
        "the model is in training mode; netlens explains it in eval mode (BatchNorm statistics "
        "and dropout frozen) and leaves it in training mode; call model.eval() to silence this")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        saliency(model.eval(), x, 1)  # an eval-mode model: no warning


def _user_saliency(model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
    """A user's explanation function that runs the model itself."""
    x = x.detach().requires_grad_(True)
    out = model(x)
    classes = torch.as_tensor(target).expand(x.shape[0])
    g, = torch.autograd.grad(out.gather(1, classes[:, None]).sum(), x)
    return g


_METRICS: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]] = {
    "deletion": lambda m, x, a: M.deletion(m, x, a, 1, steps=4, progress=False).scores,
    "insertion": lambda m, x, a: M.insertion(m, x, a, 1, steps=4, progress=False).scores,
    "pixel_flipping": lambda m, x, a: M.pixel_flipping(m, x, a, 1, steps=4,
                                                       progress=False).scores,
    "road": lambda m, x, a: M.road(m, x, a, 1, fractions=(0.5,), progress=False,
                                   generator=torch.Generator().manual_seed(0)).scores,
    "average_drop": lambda m, x, a: M.average_drop(m, x, a, 1),
    "increase_in_confidence": lambda m, x, a: M.increase_in_confidence(m, x, a, 1),
    "max_sensitivity": lambda m, x, a: M.max_sensitivity(
        m, x, 1, "saliency", n=2, generator=torch.Generator().manual_seed(0)),
    "max_sensitivity_user_fn": lambda m, x, a: M.max_sensitivity(
        m, x, 1, _user_saliency, n=2, generator=torch.Generator().manual_seed(0)),
    "model_randomization": lambda m, x, a: M.model_randomization(
        m, x, 1, methods=["saliency", _user_saliency], layers=["fc"],
        generator=torch.Generator().manual_seed(0)).spearman["_user_saliency"],
    "compare": lambda m, x, a: M.compare(
        m, x, 1, methods=["saliency", _user_saliency], metrics=["deletion", "max_sensitivity"],
        metric_options={"deletion": {"steps": 4}, "max_sensitivity": {"n": 2}},
        generator=torch.Generator().manual_seed(0), progress=False)[-1]["deletion"],
}


@pytest.mark.parametrize("metric", list(_METRICS))
def test_every_metric_runs_a_training_model_in_eval_mode(metric: str) -> None:
    model, x = bn_drop_net(), images()
    attr = saliency(model, x, 1)
    expected = _METRICS[metric](model, x, attr)
    model.train()
    before = model_state(model, rng=True)
    with pytest.warns(NetlensWarning, match=TRAINING):
        got = _METRICS[metric](model, x, attr)
    assert_untouched(model, before)
    torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(expected), rtol=1e-10,
                               atol=1e-12)


def test_optvis_renders_a_training_model_in_eval_mode_with_the_same_warning() -> None:
    model = bn_drop_net().float()

    def render() -> torch.Tensor:
        vis = OptVis(model, obj.channel("conv2", 1), size=SIZE,
                     generator=torch.Generator().manual_seed(0))
        return vis.vis((2,), progress=False)[-1]

    expected = render()
    model.train()
    before = model_state(model, rng=True)
    with pytest.warns(NetlensWarning, match=TRAINING):
        got = render()
    assert_untouched(model, before)
    torch.testing.assert_close(got, expected)


# -- 2. the caller's exception ---------------------------------------------------------------
class Raises(nn.Module):
    """Raises ``error`` from its forward (the model's own fault, on its first call)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.error = error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.error


class ModelError(Exception):
    pass


@pytest.mark.parametrize("make", [lambda: RuntimeError("CUDA out of memory (simulated)"),
                                  lambda: ModelError("the user's own error"),
                                  lambda: ValueError("a shape the model rejects"),
                                  lambda: KeyError("missing")])
@pytest.mark.parametrize("how", ["saliency", "gradcam", "NetLens", "layer_names"])
def test_the_models_own_exception_reaches_the_caller(make: Callable[[], BaseException],
                                                     how: str) -> None:
    error = make()
    model = Raises(error).eval()
    x = images(size=8).float()
    with pytest.raises(type(error)) as info:
        if how == "layer_names":
            FlatModel(model).layer_names  # noqa: B018 - the property traces the model
        elif how == "NetLens":
            NetLens(model).saliency(x, 0)
        else:
            METHODS[how](model, x, 0, layer="conv") if how == "gradcam" else saliency(model, x, 0)
    assert info.value is error and type(info.value) is type(error)
    if sys.version_info >= (3, 11):
        notes = getattr(info.value, "__notes__", [])
        assert any("netlens" in n and "find its layers" in n for n in notes), notes


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_propagate_untouched(error: type[BaseException]) -> None:
    exc = error()
    with pytest.raises(error) as info:
        saliency(Raises(exc).eval(), images(size=8).float(), 0)
    assert info.value is exc and not getattr(exc, "__notes__", None)


def test_netlens_side_errors_keep_their_clear_message() -> None:
    model = bn_drop_net()
    with pytest.raises(ValueError, match="expects 3-channel images"):
        saliency(model, images()[:, :1], 0)
    with pytest.raises(ValueError, match="out of range"):
        saliency(model, images(), 10 ** 6)


# -- 3. threads on one model -----------------------------------------------------------------
@pytest.fixture
def fast_switching():
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    yield
    sys.setswitchinterval(interval)


def _in_threads(jobs: list[Callable[[], Any]], rounds: int) -> list[list[Any]]:
    results: list[list[Any]] = [[] for _ in jobs]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(rounds):
                results[i].append(jobs[i]())
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return results


@pytest.mark.parametrize("pair", [("guided_backprop", "saliency"), ("saliency", "gradcam")])
def test_two_threads_on_one_model_give_the_single_threaded_results(fast_switching, pair) -> None:
    model, x = bn_drop_net(), images(size=SIZE)
    before = model_state(model)
    expected = [run(name, model, x) for name in pair]
    jobs = [lambda name=name: run(name, model, x) for name in pair]
    results = _in_threads(jobs, rounds=100)
    for name, want, got in zip(pair, expected, results):
        for i, r in enumerate(got):
            assert torch.equal(r, want), f"{name}, call {i}: differs from the single-threaded map"
    assert_untouched(model, before)


class Rendezvous(nn.Module):
    """On its first forward, waits until the other model's forward has started too."""

    def __init__(self, mine: threading.Event, other: threading.Event) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2, 3)
        self.mine, self.other = mine, other
        self.met: bool | None = None  # whether the other model's forward had begun meanwhile

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.met is None:
            self.mine.set()
            self.met = self.other.wait(3)
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_calls_on_different_models_run_concurrently() -> None:
    a, b = threading.Event(), threading.Event()
    models = [Rendezvous(a, b).eval(), Rendezvous(b, a).eval()]
    x = images(size=8).float()
    _in_threads([lambda m=m: saliency(m, x, 0) for m in models], rounds=1)
    assert all(m.met for m in models), "the two models' calls were serialized"


# -- 4. a raced first call -------------------------------------------------------------------
def test_a_raced_first_call_builds_the_layer_list_once(fast_switching) -> None:
    reference = bn_drop_net()
    x = images(size=SIZE)
    names = FlatModel(copy.deepcopy(reference)).layer_names
    want = {name: run(name, copy.deepcopy(reference), x) for name in ("saliency", "gradcam")}
    for _ in range(5):
        model = copy.deepcopy(reference)  # cold: never traced
        lens = NetLens(model)
        jobs = [lambda name=name, k=k: (run(name, lens.fm if k % 2 else model, x))
                for k in range(6) for name in ("saliency", "gradcam")]
        results = _in_threads(jobs, rounds=2)
        for job, got in enumerate(results):
            name = ("saliency", "gradcam")[job % 2]
            assert all(torch.equal(r, want[name]) for r in got), f"{name} differs"
        assert lens.fm.layer_names == names
        assert FlatModel(model).layer_names == names
        for name in want:
            assert torch.equal(run(name, model, x), want[name])
            assert torch.equal(run(name, NetLens(model).fm, x), want[name])


# -- 5. a fault at any model call ------------------------------------------------------------
class Faulty(nn.Module):
    """Counts its forward calls and raises ``error`` at call ``at`` (1-based)."""

    def __init__(self, inner: nn.Module, at: int | None = None,
                 error: BaseException | None = None) -> None:
        super().__init__()
        self.inner, self.at, self.error, self.calls = inner, at, error, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            assert self.error is not None
            raise self.error
        return self.inner(x)


@pytest.fixture(scope="module")
def training_net() -> nn.Module:
    return bn_drop_net().float().train()  # the worst case: modes, statistics and the RNG


@pytest.mark.filterwarnings("ignore::netlens._util.NetlensWarning")
@pytest.mark.parametrize("name", list(METHODS))
def test_a_fault_at_any_model_call_leaves_everything_as_it_was(training_net, name) -> None:
    x = images(2, SIZE).float()
    clean = Faulty(training_net)  # a fresh wrapper each time: a cold layer cache
    run(name, clean, x)
    n = clean.calls
    assert n >= 2
    for at in sorted({1, (n + 1) // 2, n}):
        for error in (RuntimeError(f"fault at call {at}"), KeyboardInterrupt()):
            model = Faulty(training_net, at, error)
            before = model_state(model, rng=True)
            with pytest.raises(type(error)) as info:
                run(name, model, x)
            assert info.value is error, f"call {at}: {info.value!r} replaced the fault"
            assert model.calls == at, f"call {at}: the model ran on after the fault"
            assert_untouched(model, before)
            if isinstance(error, KeyboardInterrupt):
                assert not getattr(error, "__notes__", None)


def test_a_call_sees_the_model_as_it_is_now_not_as_an_earlier_call_saw_it() -> None:
    """The module dict and dtype that a method call caches (once per call, not per nested
    call) are the model's at that call: a head replaced or a dtype changed between calls is
    seen by the next one, and nothing is cached outside a call."""
    from netlens.adapter import guarded_calls

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(6, 4)).eval()
    x = images(2, SIZE).float()
    lens = NetLens(model)
    first = lens.cam(x, [1, 2], layer="1")
    assert guarded_calls() == {}  # nothing left behind after the call
    torch.manual_seed(5)
    model[4] = nn.Linear(6, 4).eval()  # a new head: the CAM weights are its rows
    again = lens.cam(x, [1, 2], layer="1")
    acts = model[1](model[0](x)).detach()
    expected = torch.relu(torch.einsum("bchw,bc->bhw", acts, model[4].weight.detach()[[1, 2]]))
    assert not torch.allclose(first, again, atol=1e-3)
    assert torch.allclose(again[:, 0], expected, atol=1e-6)
    model.double()  # a new dtype: the float input is now refused with the fix
    with pytest.raises(TypeError, match=r"x\.double\(\)"):
        lens.cam(x, [1, 2], layer="1")
    assert lens.cam(x.double(), [1, 2], layer="1").dtype == torch.float64


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_soak_1000_calls_leave_no_hooks_and_flat_memory() -> None:
    model, x = bn_drop_net().float(), images(2, SIZE).float()
    lens = NetLens(model)
    hooks = global_hooks()
    want = {"saliency": lens.saliency(x, 1), "gradcam": lens.gradcam(x, 1)}
    resident: dict[int, int] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: intra-op threads only contend for busy cores
    try:
        for i in range(1, 1001):
            name = ("saliency", "gradcam")[i % 2]
            out = getattr(lens, name)(x, 1)
            if i % 100 == 0:
                assert torch.equal(out, want[name])
                assert all(not m._forward_hooks and not m._forward_pre_hooks
                           and not m._backward_hooks and not m._backward_pre_hooks
                           for m in model.modules()), f"a hook left after call {i}"
                assert global_hooks() == hooks
                gc.collect()
                resident[i] = _resident_bytes()
    finally:
        torch.set_num_threads(threads)
    grown = resident[1000] - resident[100]
    assert grown < 16 << 20, f"resident memory grew by {grown / 2**20:.1f} MiB over 900 calls"


@pytest.mark.parametrize("change", [
    "weight", "weight_through_data", "running_mean", "non_persistent_buffer", "train_mode",
    "requires_grad", "inplace", "grad", "forward_hook", "tensor_hook", "replaced_module",
    "new_buffer"])
def test_the_untouched_check_sees_every_kind_of_change(change):
    """``assert_untouched`` (every "model untouched" test uses it) compares the live model with
    its snapshot: each change netlens promises not to make fails it, one at a time."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()).eval()
    model[1].register_buffer("scratch", torch.zeros(2), persistent=False)
    model[0].weight.grad = torch.ones_like(model[0].weight)
    before = model_state(model)
    assert_untouched(model, before)  # nothing changed yet
    with torch.no_grad():
        {"weight": lambda: model[0].weight.add_(1e-6),
         "weight_through_data": lambda: model[0].weight.data.mul_(2),  # no version bump
         "running_mean": lambda: model[1].running_mean.fill_(1),
         "non_persistent_buffer": lambda: model[1].scratch.fill_(1),
         "train_mode": lambda: model[1].train(),
         "requires_grad": lambda: model[0].bias.requires_grad_(False),
         "inplace": lambda: setattr(model[2], "inplace", True),
         "grad": lambda: model[0].weight.grad.mul_(3),
         "forward_hook": lambda: model[2].register_forward_hook(lambda *a: None),
         "tensor_hook": lambda: model[0].weight.register_hook(lambda g: g),
         "replaced_module": lambda: model.__setitem__(2, nn.ReLU()),
         "new_buffer": lambda: model[2].register_buffer("extra", torch.zeros(1)),
         }[change]()
    with pytest.raises(AssertionError):
        assert_untouched(model, before)
