"""This netlens against an older checkout of it, interleaved in one process: did a change cost
time?

    git worktree add /tmp/netlens-old <commit>
    python benchmarks/versions.py /tmp/netlens-old [--threads 1] [--repeat 12]

The older package is copied under another name (``netlens_old``) so both load side by side; for
each method the two versions run alternately on the same model and input, and the median
process CPU time of each is reported with their ratio (new / old). On a shared machine CPU time
on one thread is the figure that other processes disturb least; identical work still differs by
a few percent between rounds. Writes ``benchmarks/results/versions-cpu.md``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("old", help="the root of an older netlens checkout")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=12)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    shutil.copytree(Path(args.old) / "netlens", tmp / "netlens_old")
    sys.path[:0] = [str(ROOT), str(tmp)]
    import netlens_old as old

    import netlens as new

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    lenses = {"old": old.NetLens(model), "new": new.NetLens(model)}
    cases = [(b, name, {}) for b in (1, 8)
             for name in ("saliency", "guided_backprop", "gradcam", "guided_gradcam")]
    cases += [(1, "integrated_gradients", {"steps": 50, "progress": False}),
              (1, "smooth_grad", {"n": 25, "progress": False}),
              (1, "occlusion", {"progress": False})]
    rows = []
    for batch, name, options in cases:
        x = torch.rand(batch, 3, args.size, args.size)
        repeat = args.repeat if not options and batch == 1 else max(3, args.repeat // 4)
        times: dict[str, list[float]] = {"old": [], "new": []}
        for lens in lenses.values():
            getattr(lens, name)(x, 3, **options)  # warm-up
        for _ in range(repeat):
            for version, lens in lenses.items():
                start = time.process_time()
                getattr(lens, name)(x, 3, **options)
                times[version].append(time.process_time() - start)
        o, n = statistics.median(times["old"]), statistics.median(times["new"])
        rows.append(f"| {name} | {batch} | {o:.4f} | {n:.4f} | {n / o:.3f} |")
        print(rows[-1], flush=True)
    table = "\n".join([
        f"resnet18, {args.size} px, CPU, {args.threads} thread(s), torch {torch.__version__}; "
        f"median process CPU time of {args.repeat} alternating rounds (a quarter of them for "
        "multi-pass methods and batch 8)", "",
        "| method | batch | old s | new s | new / old |", "|---|---|---|---|---|", *rows])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "versions-cpu.md").write_text(
        f"# netlens against an older checkout\n\n`python benchmarks/versions.py {args.old} "
        f"--threads {args.threads} --repeat {args.repeat}`\n\n{table}\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
