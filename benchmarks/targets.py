"""Several targets per image in one call (``TopK``) vs one call per target, side by side.

    python benchmarks/targets.py [--device cpu|cuda] [--model resnet18] [--size 224]
                                 [--k 5] [--batch 1] [--repeat 5] [--threads N]

For top-``k`` saliency and Grad-CAM: netlens with ``target=nl.targets.TopK(k)`` (one forward
pass, one backward call batched over the k targets), netlens with ``k`` separate calls, and
Captum with ``k`` separate calls (Captum takes one target per image per call: Captum #612).
Rounds are interleaved (each round runs every variant once) and the median is reported, in wall
time and in process CPU time (the noise-free figure on a shared machine). Prints a Markdown
table and writes it to ``benchmarks/results/targets-<device>.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

import netlens as nl

RESULTS = Path(__file__).resolve().parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)().eval().to(device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    lens = nl.NetLens(model)
    with torch.no_grad():
        top = model(x).topk(args.k, dim=1).indices  # (B, k)
    k = args.k

    variants: dict[str, dict[str, Callable[[], object]]] = {
        "saliency": {
            "netlens TopK": lambda: lens.saliency(x, nl.targets.TopK(k)),
            "netlens k calls": lambda: [lens.saliency(x, top[:, j]) for j in range(k)],
        },
        "gradcam": {
            "netlens TopK": lambda: lens.gradcam(x, nl.targets.TopK(k)),
            "netlens k calls": lambda: [lens.gradcam(x, top[:, j]) for j in range(k)],
        },
    }
    try:
        from captum.attr import LayerAttribution, LayerGradCam, Saliency

        sal = Saliency(model)
        gc = LayerGradCam(model, model.layer4)
        variants["saliency"]["captum k calls"] = lambda: [
            sal.attribute(x, target=top[:, j], abs=False) for j in range(k)]
        variants["gradcam"]["captum k calls"] = lambda: [
            LayerAttribution.interpolate(gc.attribute(x, target=top[:, j], relu_attributions=True),
                                         x.shape[2:], "bilinear") for j in range(k)]
    except ImportError:
        pass

    # Same results: TopK's maps equal the separate calls.
    many = lens.saliency(x, nl.targets.TopK(k))
    one = lens.saliency(x, top[:, 1])
    assert torch.allclose(many[:, 1], one, atol=1e-6), "TopK differs from a separate call"

    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for fns in variants.values():
        for fn in fns.values():
            fn()  # warm-up
    for _ in range(args.repeat):
        for method, fns in variants.items():
            for name, fn in fns.items():
                times.setdefault((method, name), []).append(_time(fn, device))

    rows = []
    for method, fns in variants.items():
        base_wall = statistics.median(w for w, _ in times[(method, "netlens k calls")])
        base_cpu = statistics.median(c for _, c in times[(method, "netlens k calls")])
        for name in fns:
            wall = statistics.median(w for w, _ in times[(method, name)])
            cpu = statistics.median(c for _, c in times[(method, name)])
            rows.append(f"| {method} | {name} | {wall:.3f} | {wall / base_wall:.2f} | "
                        f"{cpu:.3f} | {cpu / base_cpu:.2f} |")
    threads = torch.get_num_threads()
    head = (f"top-{k} targets, {args.model} {args.size} px, batch {args.batch}, {device}, "
            f"{threads} thread(s), torch {torch.__version__}, {platform.processor() or 'cpu'}; "
            f"median of {args.repeat} interleaved rounds; ratio = time / netlens with {k} calls")
    table = "\n".join([
        head, "",
        "| method | variant | wall s | wall ratio | CPU s | CPU ratio |",
        "|---|---|---|---|---|---|", *rows])
    print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"targets-{device.type}.md"
    out.write_text(f"# Several targets per image\n\n`python benchmarks/targets.py "
                   f"{' '.join(argv or [])}`\n\n{table}\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
