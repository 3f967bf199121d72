"""The suite's shared helpers: the small models (``EveryReluNet`` and its ReLU oracles,
``SmallCNN``, ``tiny_vit``), the torchvision model-zoo registry and the model-state check.
Tests import them with ``from helpers import ...`` (``pytest.ini`` puts ``tests/`` on the
path); fixtures live in ``conftest.py``. No test imports another test module.

No test downloads weights: every torchvision model is built with random init and a fixed seed.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]  # the repository
DEMO_SEED = 7  # the seed of the reduced demo that conftest's ``demo_run`` runs once


class EveryReluNet(nn.Module):
    """A CNN with every kind of ReLU call: a module, an in-place module, one module reused twice,
    ``F.relu`` and ``torch.relu`` (CONTRIBUTING.md, test catalogue A1)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu_inplace = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.shared = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv5 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu_inplace(self.conv2(x))
        x = self.shared(self.conv3(x))
        x = self.shared(self.conv4(x) + x)
        x = F.relu(self.conv5(x))
        x = torch.relu(x.mean(dim=(2, 3)))
        return self.fc(x)


class SmallCNN(nn.Sequential):
    """The unit tests' small CNN: two 3x3 convolutions, each followed by an activation, and a
    linear head, as the named children ``conv1, act1, conv2, act2, [pool,] flatten, fc``.

    The defaults are the CAM tests' network: an in-place ReLU after ``conv1`` (hooks and rules
    must handle it) and a stride-2 ``conv2``, so CAMs at ``act2`` are upsampled, then a mean
    pool. Other tests pick what they depend on: a smooth activation (``nn.Softplus``, IG
    completeness), a padding-free first convolution (``padding=(0, 1)``: a shift of the input
    is compensated exactly in ``conv1``'s bias), a max pool (a non-linear head for occlusion),
    or no pool (``pool=None``: the head reads every one of ``positions`` positions of
    ``conv2``'s output, one input channel for the sanity checks).

    Args:
        classes: the head's outputs.
        in_channels: the input's channels.
        widths: the output channels of ``conv1`` and ``conv2``.
        act: the activation's class (called without arguments, or ``inplace=True``).
        inplace: whether ``act1`` is in place.
        padding: the padding of ``conv1`` and ``conv2``.
        stride: the stride of ``conv1`` and ``conv2``.
        pool: ``"mean"`` or ``"max"`` over all positions, or None.
        positions: how many positions of ``conv2``'s output the head reads when ``pool`` is
            None (h * w for the input size the test uses).
    """

    def __init__(self, classes: int = 4, *, in_channels: int = 3,
                 widths: tuple[int, int] = (6, 8), act: type[nn.Module] = nn.ReLU,
                 inplace: bool = True, padding: tuple[int, int] = (1, 1),
                 stride: tuple[int, int] = (1, 2), pool: str | None = "mean",
                 positions: int = 1) -> None:
        layers: dict[str, nn.Module] = {
            "conv1": nn.Conv2d(in_channels, widths[0], 3, stride=stride[0], padding=padding[0]),
            "act1": act(inplace=True) if inplace else act(),
            "conv2": nn.Conv2d(widths[0], widths[1], 3, stride=stride[1], padding=padding[1]),
            "act2": act(),
        }
        if pool is not None:
            layers["pool"] = {"mean": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}[pool](1)
            positions = 1
        layers["flatten"] = nn.Flatten()
        layers["fc"] = nn.Linear(widths[1] * positions, classes)
        super().__init__(collections.OrderedDict(layers))

class Flaky(SmallCNN):
    """Runs ``ok`` forward passes, then raises inside its forward, after conv1."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.calls, self.ok = 0, ok

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.ok:
            self.conv1(x)
            raise RuntimeError("a layer failed")
        return super().forward(x)


def linear_model(weight: torch.Tensor) -> nn.Module:
    """A bias-free linear classifier ``(B, ...) -> (B, K)`` with the rows of ``weight``
    ``(K, ...)``, float64, eval mode."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight[0].numel(), weight.shape[0], bias=False))
    with torch.no_grad():
        model[1].weight.copy_(weight.flatten(1))
    return model.double().eval()


def small_cnn(classes: int = 4, *, dtype: torch.dtype = torch.float64, seed: int = 0,
              **options: Any) -> SmallCNN:
    """A :class:`SmallCNN` (``options`` are its keyword arguments), seeded, in eval mode."""
    torch.manual_seed(seed)
    return SmallCNN(classes, **options).to(dtype).eval()


def tiny_vit(*, hidden_dim: int = 32, mlp_dim: int = 64, head_std: float | None = 0.1,
             dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    """A seeded two-layer torchvision ``VisionTransformer`` on 32 px images (8 px patches, a 4x4
    token grid after the class token), in eval mode: the token-layer case of CAMs, contracts,
    layouts and feature visualization. torchvision starts the head at zero, which makes every
    class score's gradient zero; ``head_std`` redraws it (None keeps the zero head, for tests
    that read inner layers only)."""
    import torchvision

    torch.manual_seed(seed)
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=hidden_dim,
        mlp_dim=mlp_dim)
    if head_std is not None:
        nn.init.normal_(vit.heads.head.weight, std=head_std)
    return vit.to(dtype).eval()


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One torchvision family: its smallest builder, a small input size that it accepts."""

    family: str
    builder: str
    size: int
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    slow: bool = False

    def build(self) -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        return getattr(torchvision.models, self.builder)(**self.kwargs).eval()

    def input(self, batch: int = 2, requires_grad: bool = False) -> torch.Tensor:
        g = torch.Generator().manual_seed(1)
        return torch.randn(batch, 3, self.size, self.size, generator=g).requires_grad_(
            requires_grad)


# The smallest member of every torchvision classification family (CONTRIBUTING.md, test
# catalogue).
ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("AlexNet", "alexnet", 64),
    ZooEntry("VGG", "vgg11", 32, slow=True),
    ZooEntry("ResNet", "resnet18", 32),
    ZooEntry("ResNeXt", "resnext50_32x4d", 32),
    ZooEntry("Wide ResNet", "wide_resnet50_2", 32, slow=True),
    ZooEntry("DenseNet", "densenet121", 32),
    ZooEntry("SqueezeNet", "squeezenet1_1", 64),
    ZooEntry("MobileNet v2", "mobilenet_v2", 32),
    ZooEntry("MobileNet v3", "mobilenet_v3_small", 32),
    ZooEntry("EfficientNet", "efficientnet_b0", 32),
    ZooEntry("EfficientNet v2", "efficientnet_v2_s", 32, slow=True),
    ZooEntry("ConvNeXt", "convnext_tiny", 32),
    ZooEntry("RegNet", "regnet_y_400mf", 32),
    ZooEntry("ShuffleNet", "shufflenet_v2_x0_5", 32),
    ZooEntry("MNASNet", "mnasnet0_5", 32),
    ZooEntry("GoogLeNet", "googlenet", 32, {"aux_logits": False, "init_weights": False}),
    ZooEntry("Inception v3", "inception_v3", 75, {"aux_logits": False, "init_weights": False}),
    ZooEntry("ViT", "vit_b_16", 224, slow=True),
    ZooEntry("Swin", "swin_t", 32),
    ZooEntry("Swin v2", "swin_v2_t", 32, slow=True),
    ZooEntry("MaxViT", "maxvit_t", 224, slow=True),
)


def zoo_params() -> list[Any]:
    return [pytest.param(e, id=e.builder, marks=[pytest.mark.slow] if e.slow else [])
            for e in ZOO]


_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks", "_global_forward_hooks_always_called",
                 "_global_forward_hooks_with_kwargs", "_global_buffer_registration_hooks",
                 "_global_module_registration_hooks", "_global_parameter_registration_hooks")


def global_hooks() -> dict[str, list[int]]:
    """The handles of the global module hooks (``nn.modules.module.register_module_*_hook``)."""
    module = torch.nn.modules.module
    return {name: list(getattr(module, name)) for name in _GLOBAL_HOOKS if hasattr(module, name)}


def _live_state(model: nn.Module) -> dict[str, Any]:
    """The model's tensors and flags as they are now (tensors not copied)."""
    tensors = model.state_dict(keep_vars=True)
    return {
        "state_dict": {k: v.detach() for k, v in tensors.items()},
        # buffers outside the state_dict (persistent=False); the others are in it
        "extra_buffers": {k: b.detach() for k, b in model.named_buffers(remove_duplicate=False)
                          if k not in tensors},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.detach() for p in model.parameters()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "modules": [id(m) for m in model.modules()],
        "global_hooks": global_hooks(),
    }


def model_state(model: nn.Module, *, rng: bool = False) -> dict[str, Any]:
    """Everything about a model that netlens promises not to change (tensors copied); with
    ``rng=True`` also the global random state (for blocks that draw no random numbers of
    their own)."""
    state = _live_state(model)
    for key in ("state_dict", "extra_buffers"):
        state[key] = {k: v.clone() for k, v in state[key].items()}
    state["grads"] = [None if g is None else g.clone() for g in state["grads"]]
    if rng:
        state["rng"] = torch.random.get_rng_state()
    return state


def assert_untouched(model: nn.Module, before: dict[str, Any]) -> None:
    """Fails with the first difference between the model's state and ``before`` (compared
    with the live tensors: nothing is copied a second time)."""
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks", "_forward_hooks_with_kwargs",
                     "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"):
            assert not getattr(m, attr, None), f"hook left in {name or 'model'}.{attr}"
    for name, p in model.named_parameters():
        assert not p._backward_hooks, f"tensor hook left on parameter {name}"
    after = _live_state(model)
    assert after["modules"] == before["modules"], "modules were replaced"
    for key in ("training", "requires_grad", "inplace"):
        assert after[key] == before[key], f"{key} flags changed"
    for key, what in (("state_dict", "state_dict entry"), ("extra_buffers", "buffer")):
        assert after[key].keys() == before[key].keys(), f"{what}s were added or removed"
        for k, v in before[key].items():
            assert torch.equal(after[key][k], v), f"{what} {k} changed"
    for a, b in zip(after["grads"], before["grads"]):
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), ".grad changed"
    assert after["global_hooks"] == before["global_hooks"], "global module hooks changed"
    if "rng" in before:
        assert torch.equal(torch.random.get_rng_state(), before["rng"]), \
            "the global random state was consumed"


class GuidedRelu(torch.autograd.Function):
    """ReLU whose backward passes relu(grad) * 1[input > 0] (Springenberg et al., 2015)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


class DeconvRelu(torch.autograd.Function):
    """ReLU whose backward passes relu(grad), whatever the input (Zeiler & Fergus, 2014)."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0)


class ReluOracle(EveryReluNet):
    """EveryReluNet with every ReLU call replaced by ``relu`` (a custom autograd function)."""

    def __init__(self, relu) -> None:
        super().__init__()
        self.r = relu.apply

    def forward(self, x):
        r = self.r
        x = r(self.conv1(x))
        x = r(self.conv2(x))
        x = r(self.conv3(x))
        x = r(self.conv4(x) + x)
        x = r(self.conv5(x))
        x = r(x.mean(dim=(2, 3)))
        return self.fc(x)


def input_grad(model: nn.Module, x: torch.Tensor, c: int = 2) -> torch.Tensor:
    """d model(x)[:, c].sum() / dx, by plain autograd."""
    xg = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(model(xg)[:, c].sum(), xg)
    return g


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``netlens ARGV`` in this process: ``(exit status, stdout, stderr)``."""
    from netlens.cli import main

    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(err: str) -> str:
    """The single ``netlens: error: ...`` line of ``err``, asserting there is nothing else."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netlens: error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- example notebooks ------------------------------------------------------------------------
def execute_notebook(path: str | Path, workdir: str | Path, *, cell_timeout_s: int = 300
                     ) -> tuple[Any, str | None]:
    """Runs the notebook at ``path`` top to bottom in a fresh IPython kernel on *this*
    interpreter (``sys.executable -m ipykernel_launcher``, whatever kernelspecs the machine has),
    working in ``workdir`` with ``MPLBACKEND=Agg`` and the repository root on ``PYTHONPATH``.

    Returns ``(notebook with its outputs, None)``, or ``(notebook, failure)`` where ``failure``
    is the failing cell's source and traceback.
    """
    import re

    import nbclient
    import nbformat
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient.exceptions import CellExecutionError

    class ThisPythonKernels(KernelSpecManager):
        """Every kernel name resolves to an IPython kernel on ``sys.executable``."""

        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            return KernelSpec(
                argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                name=kernel_name, display_name=f"Python ({sys.executable})", language="python")

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path_var = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    # IPYTHONDIR: the kernel's IPython profile lives in the work folder, not in $HOME
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=path_var,
               IPYTHONDIR=str(workdir / ".ipython"))
    nb = nbformat.read(path, as_version=4)
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=ThisPythonKernels(),
                            connection_file=str(workdir / "kernel.json"))
    client = nbclient.NotebookClient(nb, km=km, timeout=cell_timeout_s, kernel_name="python3",
                                     allow_errors=False,
                                     resources={"metadata": {"path": str(workdir)}})
    try:
        # cleanup_kc: shut the kernel down afterwards, which nbclient does not do for a kernel
        # manager it did not create; a kernel left running slows down the next notebooks
        client.execute(cwd=str(workdir), env=env, cleanup_kc=True)
    except CellExecutionError as error:  # its message holds the cell's source and traceback
        return nb, re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # IPython colours its tracebacks
    return nb, None


def notebook_pictures(nb: Any) -> int:
    """How many PNG pictures the executed notebook ``nb`` displayed."""
    return sum("image/png" in out.get("data", {}) for cell in nb.cells
               if cell.cell_type == "code" for out in cell.get("outputs", []))


def run_notebooks(out: str, *paths: str) -> int:
    """Runs each notebook in turn (``execute_notebook``), writing ``out/<stem>.json`` with its
    failure (or null), the pictures it displayed and its seconds; what the suite's background
    job ``notebooks`` runs (``tests/project/test_notebooks.py``)."""
    import json
    import time

    for path in map(Path, paths):
        start = time.perf_counter()
        try:
            nb, failure = execute_notebook(path, Path(out) / path.stem)
            pictures = notebook_pictures(nb)
        except Exception as error:  # the kernel did not start, a cell timed out, ...
            failure, pictures = f"{type(error).__name__}: {error}", 0
        result = {"failure": failure, "pictures": pictures,
                  "seconds": round(time.perf_counter() - start, 1)}
        (Path(out) / f"{path.stem}.json").write_text(json.dumps(result), encoding="utf-8")
    return 0


def quantus_explain(method: Callable[..., torch.Tensor]) -> Callable[..., Any]:
    """A Quantus ``explain_func`` running the netlens ``method`` (float32 numpy out)."""
    def f(model: Any, inputs: Any, targets: Any, **kwargs: Any) -> Any:
        model = model.get_model() if hasattr(model, "get_model") else model
        a = method(model, torch.as_tensor(inputs), torch.as_tensor(targets).long())
        return a.detach().float().numpy()
    return f
