"""netlens style transfer: the cost of one step, and a whole run against a plain implementation.

    python benchmarks/style.py [--device cpu|cuda] [--size 256] [--steps 20] [--repeat 3]
                               [--quick]

Random-init (seeded) torchvision vgg16 ``features``; a smooth random content image of
``--size`` px and a style image of 3/4 that size; Gatys et al.'s layers (content ``conv4_2``,
style ``conv1_1 ... conv5_1``, each after its ReLU: ``features.20`` and ``features.1, 6, 11,
18, 25``), so every pass runs through ``features[:26]``.

(a) *One L-BFGS step*: the shortest time between two consecutive steps of
    ``generate_style_transfer(optimizer="lbfgs")`` runs (measured by a callback; forward, losses,
    backward and the L-BFGS update), next to the shortest time of one forward + backward pass of
    ``features[:26]`` to the image (weights frozen), the bound. Goal: ratio <= 1.1.
(b) *The whole run*, the targets' features included: ``StyleTransferModule`` (on a reused
    ``FlatModel``) + ``generate_style_transfer(optimizer="adam", num_steps=--steps)`` against a
    plain implementation of Gatys et al. written the way tutorials do (a copy of the network
    with loss layers inserted after the chosen layers, out-of-place ReLUs, weights frozen, Adam
    on the pixels, clamped to [0, 1] after each step), in the same process, alternating runs.
    Both final images are scored by the same code (``StyleTransferModule.losses``). Goal: ratio
    <= 0.9. "Bound ratio": the run's time over ``steps`` x the bound.

Times are the best of ``--repeat`` runs: on a shared machine other work only adds time.
Prints one Markdown table and writes it to ``benchmarks/results/style-<device>.md``
(``--quick``: 128 px, 8 steps, 2 repeats, ``style-<device>-quick.md``).
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import netlens as nl
from netlens.optvis import Callback
from netlens.style_transfer import StyleTransferModule, generate_style_transfer

RESULTS = Path(__file__).resolve().parent / "results"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CONTENT_LAYER, STYLE_LAYERS = 20, (1, 6, 11, 18, 25)
STYLE_WEIGHT, CONTENT_WEIGHT, LR = 1e6, 1.0, 0.02


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def smooth_image(size: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 8, 8, generator=g)
    return F.interpolate(low, size=(size, size), mode="bicubic").clamp(0, 1).to(device)


def bound_pass(trunk: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """One forward through ``trunk`` and backward to the image (weights frozen)."""
    mean = torch.tensor(MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(3, 1, 1)

    def run() -> object:
        xi = x.detach().requires_grad_(True)
        return torch.autograd.grad(trunk((xi - mean) / std).sum(), xi)
    return run


def best_time(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    """The best of ``repeat`` timed runs after one warm-up: on a shared machine other work only
    ever adds time, so the minimum is the steadiest estimate (as ``timeit`` advises)."""
    fn()
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


class StepTimer(Callback):
    """Times between consecutive steps (each one: closure + optimizer update + bookkeeping)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self._last = device, [], 0.0

    def on_begin(self, vis: object) -> None:
        sync(self.device)
        self._last = time.perf_counter()

    def on_step(self, vis: object, step: int, value: float) -> None:
        sync(self.device)
        now = time.perf_counter()
        if step > 1:  # the first step also builds the optimizer state
            self.times.append(now - self._last)
        self._last = now


# -- the plain implementation (Gatys et al., written as tutorials structure it) ------------------
class _Normalization(nn.Module):
    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.mean = torch.tensor(MEAN, device=device).view(-1, 1, 1)
        self.std = torch.tensor(STD, device=device).view(-1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _gram(f: torch.Tensor) -> torch.Tensor:
    b, c, h, w = f.shape
    flat = f.view(b * c, h * w)
    return flat @ flat.t() / (b * c * h * w)


class _ContentTerm(nn.Module):
    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target, self.loss = target.detach(), torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(x, self.target)
        return x


class _StyleTerm(nn.Module):
    def __init__(self, target_features: torch.Tensor) -> None:
        super().__init__()
        self.target, self.loss = _gram(target_features).detach(), torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(_gram(x), self.target)
        return x


def plain_style_transfer(features: nn.Sequential, content: torch.Tensor, style: torch.Tensor,
                         steps: int) -> torch.Tensor:
    """Gatys et al. with Adam on the pixels: a frozen copy of the layers up to the last loss,
    with a loss layer after each chosen layer; the copy is built inside the timed run."""
    layers = copy.deepcopy(features[:max(STYLE_LAYERS + (CONTENT_LAYER,)) + 1])
    layers.requires_grad_(False)
    layers = [nn.ReLU(inplace=False) if isinstance(m, nn.ReLU) else m for m in layers]
    normalization = _Normalization(content.device)

    def targets(image: torch.Tensor, wanted: tuple[int, ...]) -> dict[int, torch.Tensor]:
        out, h = {}, normalization(image)
        with torch.no_grad():
            for i, layer in enumerate(layers):
                h = layer(h)
                if i in wanted:
                    out[i] = h
        return out

    content_targets = targets(content, (CONTENT_LAYER,))
    style_targets = targets(style, STYLE_LAYERS)
    net = nn.Sequential(normalization)
    content_terms, style_terms = [], []
    for i, layer in enumerate(layers):
        net.append(layer)
        if i == CONTENT_LAYER:
            content_terms.append(_ContentTerm(content_targets[i]))
            net.append(content_terms[-1])
        if i in STYLE_LAYERS:
            style_terms.append(_StyleTerm(style_targets[i]))
            net.append(style_terms[-1])
    image = content.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=LR)
    for _ in range(steps):
        optimizer.zero_grad()
        net(image)
        loss = CONTENT_WEIGHT * sum(t.loss for t in content_terms) + \
            STYLE_WEIGHT * sum(t.loss for t in style_terms)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0, 1)
    return image.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="128 px, 8 steps, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.size, args.steps, args.repeat = 128, 8, 2
    device = torch.device(args.device)
    torch.manual_seed(0)
    features = torchvision.models.vgg16().features.eval().to(device)
    fm = nl.FlatModel(features)  # reused by every run, as the other benchmarks reuse theirs
    content = smooth_image(args.size, 1, device)
    style = smooth_image(args.size * 3 // 4, 2, device)
    layers = {"content_layers": str(CONTENT_LAYER), "style_layers": [str(i) for i in STYLE_LAYERS],
              "mean": MEAN, "std": STD}
    module = StyleTransferModule(fm, content, style_target=style, **layers)
    trunk = copy.deepcopy(features[:max(STYLE_LAYERS) + 1]).requires_grad_(False)
    bound_repeat = max(args.repeat, 3)
    bound = best_time(bound_pass(trunk, content), bound_repeat, device)

    # (a) one L-BFGS step, from the step-to-step times of runs
    timer = StepTimer(device)
    generate_style_transfer(module, num_steps=2, progress=False)  # warm-up
    for _ in range(args.repeat):
        generate_style_transfer(module, num_steps=max(args.steps, 6), progress=False,
                                callback=timer)
        bound = min(bound, best_time(bound_pass(trunk, content), 1, device))
    step = min(timer.times)
    print(f"  one L-BFGS step {step:.3f} s, one forward+backward {bound:.3f} s", flush=True)

    # (b) whole runs, targets included, alternating
    def ours() -> torch.Tensor:
        m = StyleTransferModule(fm, content, style_target=style, **layers)
        return generate_style_transfer(m, num_steps=args.steps, optimizer="adam", lr=LR,
                                       style_weight=STYLE_WEIGHT, content_weight=CONTENT_WEIGHT,
                                       progress=False)

    def plain() -> torch.Tensor:
        return plain_style_transfer(features, content, style, args.steps)

    ours(), plain()  # warm-up
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    images = {}
    for _ in range(args.repeat):
        for name, fn in (("ours", ours), ("plain", plain)):
            sync(device)
            start = time.perf_counter()
            images[name] = fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    ours_s, plain_s = min(times["ours"]), min(times["plain"])
    scores = {}
    for k, im in images.items():
        with torch.no_grad():
            losses = module.losses(im)
        scores[k] = CONTENT_WEIGHT * float(losses["content"]) + \
            STYLE_WEIGHT * float(losses["style"])
    print(f"  {args.steps} Adam steps: netlens {ours_s:.3f} s (loss {scores['ours']:.4g}), plain "
          f"{plain_s:.3f} s (loss {scores['plain']:.4g})", flush=True)

    where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    case = f"vgg16 features[:26], {args.size}px"
    lines = [
        f"netlens {nl.__version__}, torch {torch.__version__}, random-init vgg16, content "
        f"{args.size}px, style {args.size * 3 // 4}px, content features.20, style features.1, "
        f"6, 11, 18, 25, {device.type} ({where}), best of {args.repeat} (a shared machine only "
        "adds time). Bound: one forward of features[:26] + backward to the image, weights "
        "frozen. (a) one L-BFGS step of generate_style_transfer, from the times between "
        f"consecutive steps. (b) whole runs, Adam lr {LR}, {args.steps} steps, the targets' "
        "features included: netlens (StyleTransferModule on a reused FlatModel + "
        "generate_style_transfer) vs a plain tutorial-style implementation (loss layers in a "
        "copy of the network), alternating in one process; loss: "
        f"{CONTENT_WEIGHT:g} x content + {STYLE_WEIGHT:g} x style of the final image, measured "
        "by the same code for both.", "",
        "| case | device | measure | netlens s | reference s | ratio | goal | netlens loss "
        "| reference loss | bound ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {case} | {device.type} | (a) one L-BFGS step vs one forward+backward | {step:.3f} "
        f"| {bound:.3f} | {step / bound:.2f} | <= 1.1 | | | {step / bound:.2f} |",
        f"| {case} | {device.type} | (b) {args.steps} Adam steps vs plain implementation "
        f"| {ours_s:.3f} | {plain_s:.3f} | {ours_s / plain_s:.2f} | <= 0.9 | {scores['ours']:.4g} "
        f"| {scores['plain']:.4g} | {ours_s / (args.steps * bound):.2f} (plain "
        f"{plain_s / (args.steps * bound):.2f}) |",
    ]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (RESULTS / f"style-{device.type}{suffix}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
