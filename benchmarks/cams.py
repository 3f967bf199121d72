"""Every netlens CAM vs pytorch-grad-cam 1.5.7 and torchcam 0.5.0, side by side in one process.

    python benchmarks/cams.py [--device cpu|cuda] [--size 224] [--batches 1 8] [--repeat 3]
                              [--only gradcam scorecam ...] [--tag NAME] [--no-warmup]
                              [--quick]

Gradient CAMs (one forward and one backward pass, or the method's own few) are timed against
the faster of the two peers where both have the method. Perturbation CAMs (Score-CAM,
Ablation-CAM, SS-CAM, IS-CAM: a pass per channel, or per channel and sample) are timed against
the peer's default batching, on the same layer and the same number of samples (SS-CAM and
IS-CAM at ``--samples``, 2 by default: the peers' defaults, 35 and 10 samples of 512 channels,
take minutes per image on a CPU; the ratio does not depend on the count). Every CAM reads
resnet18's ``layer4`` (512 channels); the "bound ratio" is netlens's time over (passes x one
pass at that batch size), a pass being a forward (perturbation CAMs) or a forward and backward.
Times are medians of interleaved rounds (``attribution.timed``). Writes
``benchmarks/results/cams-<device>.md``.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torchvision

import netlens as nl

from attribution import one_pass, table_lines, timed  # benchmarks/attribution.py  # isort: skip

RESULTS = Path(__file__).resolve().parent / "results"
Case = tuple[str, float, bool, Callable[[], object], dict[str, Callable[[], object]]]


def _pgc(name: str, model: torch.nn.Module, x: torch.Tensor, t: list[int], **kw: object
         ) -> Callable[[], object]:
    """pytorch-grad-cam's ``name`` on ``layer4``, built and released per call (as a user's
    ``with`` block does)."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def run() -> object:
        with getattr(pgc, name)(model=model, target_layers=[model.layer4], **kw) as cam:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in t])
    return run


def _tc(name: str, model: torch.nn.Module, x: torch.Tensor, t: list[int], **kw: object
        ) -> Callable[[], object]:
    """torchcam's ``name`` on ``layer4``: hooks set, one forward, the maps for the classes."""
    import torchcam.methods as tcm

    def run() -> object:
        with tcm.__dict__[name](model, "layer4", input_shape=tuple(x.shape[1:]), **kw) as ex:
            if name in ("CAM", "ScoreCAM", "SSCAM", "ISCAM"):
                with torch.no_grad():
                    out = model(x)
            else:
                out = model(x)
            return ex(class_idx=t, scores=out)
    return run


def cases(model: torch.nn.Module, lens: nl.NetLens, x: torch.Tensor, t: list[int],
          samples: int) -> Iterator[Case]:
    """(method, passes, backward, netlens fn, {peer name: peer fn})."""
    gradient = [  # (netlens, passes, pytorch-grad-cam, torchcam)
        ("gradcam", 1, "GradCAM", "GradCAM"), ("gradcam_pp", 1, "GradCAMPlusPlus", "GradCAMpp"),
        ("xgradcam", 1, "XGradCAM", "XGradCAM"), ("layercam", 1, "LayerCAM", "LayerCAM"),
        ("hirescam", 1, "HiResCAM", None), ("gradcam_elementwise", 1, "GradCAMElementWise", None),
        ("eigencam", 1, "EigenCAM", None), ("eigengradcam", 1, "EigenGradCAM", None),
        ("kpcacam", 1, "KPCA_CAM", None), ("shapleycam", 2, "ShapleyCAM", None),
        ("finercam", 1, "FinerCAM", None), ("fullgrad", 1, "FullGrad", None),
        ("randomcam", 1, "RandomCAM", None), ("cam", 1, None, "CAM"),
        ("smoothgradcam_pp", 4, None, "SmoothGradCAMpp"),
    ]
    for name, passes, pgc_name, tc_name in gradient:
        peers = {}
        if pgc_name is not None:
            peers[f"pytorch-grad-cam {pgc_name}"] = _pgc(pgc_name, model, x, t)
        if tc_name is not None:
            peers[f"torchcam {tc_name}"] = _tc(tc_name, model, x, t)
        options = {} if name == "fullgrad" else {"layer": "layer4"}
        if name == "smoothgradcam_pp":
            options.update(n=4, sigma=0.3)
        yield name, passes, True, (lambda n=name, o=options: getattr(lens, n)(x, t, **o)), peers
    channels = 512
    yield "scorecam", channels, False, lambda: lens.scorecam(x, t, layer="layer4"), {
        "pytorch-grad-cam ScoreCAM": _pgc("ScoreCAM", model, x, t),
        "torchcam ScoreCAM": _tc("ScoreCAM", model, x, t)}
    yield "ablationcam", channels, False, lambda: lens.ablationcam(
        x, t, layer="layer4"), {"pytorch-grad-cam AblationCAM": _pgc("AblationCAM", model, x, t)}
    yield f"sscam ({samples})", channels * samples, False, lambda: lens.sscam(
        x, t, layer="layer4", n=samples, sigma=2.0), {
        "torchcam SSCAM": _tc("SSCAM", model, x, t, num_samples=samples, std=2.0)}
    yield f"iscam ({samples})", channels * samples, False, lambda: lens.iscam(
        x, t, layer="layer4", n=samples), {
        "torchcam ISCAM": _tc("ISCAM", model, x, t, num_samples=samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--tag", default="", help="appended to the results file's name")
    parser.add_argument("--no-warmup", action="store_true",
                        help="no warm-up call (for the perturbation CAMs at batch 8: minutes each)")
    parser.add_argument("--quick", action="store_true", help="112 px, batch 1, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.size, args.batches, args.repeat = 112, [1], 1
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device)
    lens = nl.NetLens(model)
    rows = []
    warnings.simplefilter("ignore")
    for batch in args.batches:
        g = torch.Generator().manual_seed(batch)
        x = torch.rand(batch, 3, args.size, args.size, generator=g).to(device)
        t = [(7 * i) % 1000 for i in range(batch)]
        passes_s = timed({k: one_pass(model, x, k) for k in (True, False)}, args.repeat, device)
        for method, passes, backward, ours, peers in cases(model, lens, x, t, args.samples):
            if args.only and method.split()[0] not in args.only:
                continue
            got = timed({"netlens": ours, **peers}, args.repeat, device,
                        warmup=not args.no_warmup)
            ours_s, ours_mb = got.pop("netlens")
            best = min(got, key=lambda k: got[k][0])
            bound = passes * passes_s[backward][0]
            rows.append((method, "resnet18", batch, ours_s, best, got[best][0],
                         ours_s / got[best][0], ours_mb, got[next(iter(peers))][1],
                         ours_s / bound))
            print(f"  {method} B={batch}: {ours_s:.3f} s vs " + ", ".join(
                f"{k} {v[0]:.3f} s {v[1]:.0f} MB" for k, v in got.items())
                + f"; netlens {ours_mb:.0f} MB", flush=True)
    table = "\n".join(table_lines(f"resnet18 {args.size}px, layer4", device, args.repeat, rows))
    print(table)
    RESULTS.mkdir(exist_ok=True)
    suffix = ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    (RESULTS / f"cams-{device.type}{suffix}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
