"""netlens's rule-based methods vs zennit and Captum, side by side in one process.

    python benchmarks/rules.py [--device cpu|cuda] [--models resnet18 vgg16] [--size 224]
                               [--batches 1 8] [--repeat 3] [--quick]

Rows: LRP (composite epsilon_plus) against zennit 1.0.0 with the same composite and its
canonizer (a deep copy of the model: zennit hooks and canonizes the model it is given);
DeepLift against Captum 0.9.0 (on ResNets Captum refuses the ReLU module that each block calls
twice, so it gets a copy whose blocks call two ReLU modules: the same function); GradientSHAP
with 16 samples against Captum's (which evaluates all samples in one batch). Times are medians
of interleaved rounds (``attribution.timed``); "bound ratio" is netlens's time over (passes
needed x one forward + backward pass at that batch size). Writes
``benchmarks/results/rules-<device>.md``.
"""

from __future__ import annotations

import argparse
import copy
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

import netlens as nl

from attribution import one_pass, table_lines, timed  # benchmarks/attribution.py  # isort: skip

RESULTS = Path(__file__).resolve().parent / "results"


class _TwoReluBlock(nn.Module):
    """A torchvision BasicBlock whose second ReLU is its own module (Captum's DeepLift refuses
    a module called twice); the same function."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block, self.relu2 = block, nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        out = b.relu(b.bn1(b.conv1(x)))
        out = b.bn2(b.conv2(out))
        identity = b.downsample(x) if b.downsample is not None else x
        return self.relu2(out + identity)


def captum_friendly(model: nn.Module) -> nn.Module:
    """A copy of ``model`` where no ReLU module is called twice (ResNet18/34 blocks split)."""
    twin = copy.deepcopy(model)
    if isinstance(twin, torchvision.models.ResNet):
        for name in ("layer1", "layer2", "layer3", "layer4"):
            stage = getattr(twin, name)
            for i, block in enumerate(stage):
                if not isinstance(block, torchvision.models.resnet.BasicBlock):
                    raise ValueError("only BasicBlock ResNets are split here")
                stage[i] = _TwoReluBlock(block)
    return twin


def cases(model: nn.Module, x: torch.Tensor, target: torch.Tensor):
    """(method, passes, netlens fn, {peer: fn})."""
    import captum.attr as ca
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlus
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    t = target.tolist()
    canonizer = VGGCanonizer() if isinstance(model, torchvision.models.VGG) else ResNetCanonizer()
    zennit_model = copy.deepcopy(model)
    eye = torch.eye(1000, device=x.device)[target]

    def zennit_lrp() -> object:
        with Gradient(zennit_model, EpsilonPlus(canonizers=[canonizer])) as attributor:
            return attributor(x.clone().requires_grad_(True), lambda out: eye * out)[1]

    yield "lrp epsilon_plus", 1, lambda: nl.attribution.lrp(model, x, t), {
        "zennit EpsilonPlus": zennit_lrp}
    twin = captum_friendly(model)
    deeplift = ca.DeepLift(twin)
    base = torch.zeros_like(x)
    yield "deeplift", 2, lambda: nl.attribution.deeplift(model, x, t, baseline=base), {
        "captum DeepLift": lambda: deeplift.attribute(x, base, target=target)}
    gs = ca.GradientShap(model)
    bank = torch.stack([torch.zeros_like(x[0]), torch.ones_like(x[0]) * 0.5])
    g = torch.Generator(device=x.device)

    def ours_gs() -> object:
        return nl.attribution.gradient_shap(model, x, t, baselines=bank, n=16, progress=False,
                                            generator=g.manual_seed(0))

    # Captum's GradientShap has no batching option: it evaluates all n_samples x B points at once
    yield "gradient_shap (16)", 16, ours_gs, {
        "captum GradientShap": lambda: gs.attribute(x, bank, n_samples=16, target=target)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="112 px, batch 1, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.size, args.batches, args.repeat = 112, [1], 1
    device = torch.device(args.device)
    warnings.simplefilter("ignore")  # Captum's and zennit's own warnings
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)().eval().to(device)
        for batch in args.batches:
            gen = torch.Generator().manual_seed(batch)
            x = torch.rand(batch, 3, args.size, args.size, generator=gen).to(device)
            target = torch.arange(batch, device=device) * 7 % 1000
            pass_s = timed({"pass": one_pass(model, x, True)}, args.repeat, device)["pass"][0]
            for method, passes, ours, peers in cases(model, x, target):
                got = timed({"netlens": ours, **peers}, args.repeat, device)
                ours_s, ours_mb = got.pop("netlens")
                best = min(got, key=lambda k: got[k][0])
                rows.append((method, name, batch, ours_s, best, got[best][0],
                             ours_s / got[best][0], ours_mb, got[next(iter(peers))][1],
                             ours_s / (passes * pass_s)))
                print(f"  {method} {name} B={batch}: {ours_s:.3f} s vs {best} "
                      f"{got[best][0]:.3f} s", flush=True)
    lines = table_lines(f"{args.size}px", device, args.repeat, rows)
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (RESULTS / f"rules-{device.type}{suffix}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
