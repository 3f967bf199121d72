"""netlens OptVis vs Lucent render_vis, side by side in one process.

    python benchmarks/optvis.py [--device cpu|cuda] [--batches 1 8] [--steps 64] [--channel 7]
                                [--repeat 3] [--quick]

One channel of a random-init (seeded) torchvision resnet18's ``layer3`` (the output of the
``layer3`` block; Lucent's ``"layer3:<channel>"``), a 128 px Fourier + colour-decorrelated image,
each library's standard transforms, Adam lr 0.05, ``--steps`` steps. Lucent is run twice:

* fair: ``fixed_image_size=128``, so that 128 px reach the model as in netlens (whose transforms
  crop back to the image size), and the model's weights frozen (netlens freezes them during a
  run; Lucent otherwise also computes every weight's gradient);
* default: Lucent's defaults, which upsample the transformed image to 224 px before the model
  (weights left as torchvision makes them, requiring grad).

For each batch size: median seconds of each, netlens's ratio to Lucent fair and to Lucent
default, the objective each final image reaches (the channel's mean activation, measured by the
same code for both: one plain forward of the final 128 px image with ImageNet normalization, no
transforms; mean over the batch), and netlens's "bound ratio": its time over ``steps`` × (one
forward up to ``layer3`` + backward to the image, at 128 px and that batch). Prints one Markdown
table and writes it to ``benchmarks/results/optvis-<device>.md``.

Lucent (``torch-lucent``) is not a netlens dependency: see ``benchmarks/requirements.txt``. It
puts its tensors on ``cuda:0`` whenever CUDA is available, so on a GPU machine use
``--device cuda`` (or hide the GPU with ``CUDA_VISIBLE_DEVICES=`` for a CPU run).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision

import netlens as nl
from netlens.optvis import ImageParam, OptVis
from netlens.optvis import objectives as obj

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 128
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def timed(fn: Callable[[object], torch.Tensor], repeat: int, device: torch.device,
          setup: Callable[[], object] = lambda: None) -> tuple[float, torch.Tensor]:
    """Median seconds of ``fn(setup())`` over ``repeat`` runs after one warm-up (``setup`` is not
    timed), and the images of the last run."""
    fn(setup())
    times = []
    for _ in range(repeat):
        state = setup()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        images = fn(state)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), images


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def evaluate(model: torch.nn.Module, images: torch.Tensor, channel: int) -> float:
    """The channel's mean activation at ``layer3`` for ``images`` (B, 3, H, W) in [0, 1]: one
    plain forward pass, ImageNet normalization, no transforms; mean over batch and positions."""
    seen: list[torch.Tensor] = []
    handle = model.layer3.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            model(normalize(images))
    finally:
        handle.remove()
    return float(seen[0][:, channel].mean())


def pass_time(model: torch.nn.Module, batch: int, channel: int, repeat: int,
              device: torch.device) -> float:
    """Seconds of one forward up to ``layer3`` and backward to the image (weights frozen)."""
    trunk = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                                model.layer1, model.layer2, model.layer3)
    x = torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).to(device)

    def run(_: object) -> torch.Tensor:
        xi = x.detach().requires_grad_(True)
        return torch.autograd.grad(trunk(normalize(xi))[:, channel].mean(), xi)[0]

    run(None)  # more warm-up than timed's one: cheap, and the bound divides every ratio
    return timed(run, max(repeat, 5), device)[0]


def netlens_run(fm: nl.FlatModel, channel: int, batch: int, steps: int, seed: int,
                device: torch.device) -> Callable[[object], torch.Tensor]:
    """netlens with its defaults, on a reused FlatModel (as the attribution benchmark reuses
    its NetLens); only the batch needs an explicit ImageParam."""
    def run(_: object) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        param = None if batch == 1 else ImageParam(SIZE, batch=batch, generator=g, device=device)
        vis = OptVis(fm, obj.channel("layer3", channel), param=param, size=SIZE, lr=0.05,
                     generator=g)
        return vis.vis(thresholds=(steps,), progress=False)[-1]
    return run


def lucent_run(model: torch.nn.Module, channel: int, batch: int, steps: int, seed: int,
               fair: bool) -> tuple[Callable[[object], torch.Tensor], Callable[[], object]]:
    """Lucent's render_vis, shown nothing, saving nothing; ``fair``: 128 px reach the model and
    the weights are frozen. Lucent hooks every module of the model it is given and never removes
    the hooks, so each run gets a fresh copy of the model (made untimed, in ``setup``)."""
    from lucent.optvis import param, render

    def setup() -> torch.nn.Module:
        m = copy.deepcopy(model).eval().requires_grad_(not fair)
        torch.manual_seed(seed)  # Lucent draws from the global generators
        np.random.seed(seed)
        return m

    def run(m: object) -> torch.Tensor:
        out = render.render_vis(
            m, f"layer3:{channel}", param_f=lambda: param.image(SIZE, batch=batch),
            optimizer=lambda p: torch.optim.Adam(p, lr=0.05), thresholds=(steps,),
            show_image=False, save_image=False, progress=False,
            fixed_image_size=SIZE if fair else None)
        return torch.from_numpy(out[-1]).permute(0, 3, 1, 2)
    return run, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="default: 1")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--channel", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="16 steps, one repeat (a smoke run; batch 1 unless --batches)")
    args = parser.parse_args()
    args.batches = args.batches or [1]
    if args.quick:
        args.steps, args.repeat = 16, 1
    device = torch.device(args.device)
    if device.type == "cpu" and torch.cuda.is_available():
        parser.error("Lucent puts its tensors on cuda:0 whenever CUDA is available: use "
                     "--device cuda, or CUDA_VISIBLE_DEVICES= for a CPU run")
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script in kornia 0.4
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device).requires_grad_(False)
    fm = nl.FlatModel(model)
    rows = []
    for batch in args.batches:
        bound = args.steps * pass_time(model, batch, args.channel, args.repeat, device)
        ours_s, ours_im = timed(netlens_run(fm, args.channel, batch, args.steps, args.seed,
                                            device), args.repeat, device)
        lucent = {fair: lucent_run(model, args.channel, batch, args.steps, args.seed, fair)
                  for fair in (True, False)}
        fair_s, fair_im = timed(lucent[True][0], args.repeat, device, setup=lucent[True][1])
        dflt_s, dflt_im = timed(lucent[False][0], args.repeat, device, setup=lucent[False][1])
        ours_v, fair_v, dflt_v = (evaluate(model, im.to(device), args.channel)
                                  for im in (ours_im, fair_im, dflt_im))
        rows.append((batch, ours_s, fair_s, dflt_s, ours_v, fair_v, ours_s / bound))
        print(f"  B={batch}: netlens {ours_s:.3f} s (objective {ours_v:.3f}), Lucent fair "
              f"{fair_s:.3f} s ({fair_v:.3f}), Lucent default {dflt_s:.3f} s ({dflt_v:.3f}); "
              f"bound {bound:.3f} s", flush=True)
    where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    from lucent import __version__ as lucent_version
    case = f"resnet18 layer3:{args.channel}, {SIZE}px, {args.steps} steps"
    lines = [
        f"netlens {nl.__version__}, Lucent {lucent_version}, torch {torch.__version__}, "
        f"{case}, FFT + decorrelation, standard transforms, Adam lr 0.05, {device.type} "
        f"({where}), medians of {args.repeat}. Lucent fair: fixed_image_size={SIZE} ({SIZE} px "
        "reach the model, as in netlens), weights frozen; Lucent default: upsampled to 224 px, "
        "weights requiring grad. Ratios: netlens s / Lucent s. Objective: the channel's mean "
        f"activation of the final image, one plain forward at {SIZE} px (Lucent: the fair run's "
        "image). Bound ratio: netlens s / (steps x one forward to layer3 + backward).", "",
        "| case | device | batch | netlens s | Lucent s (fair) | ratio | Lucent default s "
        "| ratio vs default | netlens objective | Lucent objective | bound ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b, s, fs, ds, v, fv, br in rows:
        lines.append(f"| {case} | {device.type} | {b} | {s:.3f} | {fs:.3f} | {s / fs:.2f} "
                     f"| {ds:.3f} | {s / ds:.2f} | {v:.3f} | {fv:.3f} | {br:.2f} |")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (RESULTS / f"optvis-{device.type}{suffix}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
