"""netlens attribution vs Captum and pytorch-grad-cam, side by side in one process.

    python benchmarks/attribution.py [--device cpu|cuda] [--model resnet18] [--size 224]
                                     [--batches 1 8] [--repeat 3] [--skip scorecam] [--quick]
                                     [--methods NAME ...] [--no-warmup] [--out NAME]

``--methods`` keeps the rows whose method starts with one of the names (the black-box rows:
``--methods feature_ablation lime kernel_shap shapley_sampling rise``); ``--no-warmup`` skips
the warm-up call (for calls of tens of seconds, where it changes nothing); ``--out`` names the
results file (default ``attribution-<device>``).

For each method and batch size: the median time of netlens (defaults, on a reused ``NetLens``),
of the fastest peer setting, their ratio, the peak CUDA memory (n/a on CPU), and netlens's
"bound ratio": its time over (passes needed × the time of one pass at that batch size). A bound
ratio above 1.3 is a defect to explain. Prints one Markdown table and writes it to
``benchmarks/results/attribution-<device>.md``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

import netlens as nl

RESULTS = Path(__file__).resolve().parent / "results"


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms by a thread (CPU runs;
    CUDA runs use torch's allocator statistics instead). Linux only; nan elsewhere."""

    def __init__(self) -> None:
        self.peak_mb = float("nan")

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakRSS:
        try:
            self._base = self._peak = self._rss()
        except (OSError, ValueError):
            return self
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.is_set():
                self._peak = max(self._peak, self._rss())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak_mb = (max(self._peak, self._rss()) - self._base) / 2**20


def _release_freed_memory() -> None:
    """Gives freed heap memory back to the OS (glibc), so that RSS rises again with each call's
    own allocations instead of reusing what an earlier call left in the heap."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def timed(fns: dict[str, Callable[[], object]], repeat: int,
          device: torch.device, warmup: bool = True) -> dict[str, tuple[float, float]]:
    """Median seconds of each function over ``repeat`` rounds after one warm-up (``warmup=False``
    skips it: for calls of minutes, where it changes nothing), the functions interleaved within
    each round (so that a slow spell of a shared machine hits all of them), and each one's peak
    memory in MB above its starting level (CUDA allocator or process RSS)."""
    for fn in fns.values() if warmup else ():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks: dict[str, float] = {k: float("nan") for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            _release_freed_memory()
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            with PeakRSS() as rss:
                start = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" \
                else rss.peak_mb
            peaks[name] = peak if peaks[name] != peaks[name] else max(peaks[name], peak)
    return {k: (statistics.median(v), peaks[k]) for k, v in times.items()}


def one_pass(model: torch.nn.Module, x: torch.Tensor, backward: bool) -> Callable[[], object]:
    def run() -> object:
        if not backward:
            with torch.no_grad():
                return model(x)
        xi = x.detach().requires_grad_(True)
        return torch.autograd.grad(model(xi)[:, 0].sum(), xi)
    return run


def cases(model, lens, x, target, size, skip):
    """(method, passes, backward, netlens fn, {peer name: peer fn})."""
    import captum.attr as ca
    import pytorch_grad_cam as pgc

    layer = model.layer4
    t = target.tolist()
    windows = ((size - 32) // 16 + 1) ** 2
    yield "saliency", 1, True, lambda: lens.saliency(x, t), {
        "captum Saliency": lambda: ca.Saliency(model).attribute(x, target, abs=False)}
    yield "guided_backprop", 1, True, lambda: lens.guided_backprop(x, t), {
        "captum GuidedBackprop": lambda: ca.GuidedBackprop(model).attribute(x, target)}
    yield "gradcam", 1, True, lambda: lens.gradcam(x, t, layer="layer4"), {
        "captum LayerGradCam": lambda: ca.LayerAttribution.interpolate(
            ca.LayerGradCam(model, layer).attribute(x, target, relu_attributions=True),
            x.shape[2:], "bilinear"),
        "pytorch-grad-cam GradCAM": lambda: pgc.GradCAM(model, [layer])(
            x, [pgc.utils.model_targets.ClassifierOutputTarget(c) for c in t])}
    ig = ca.IntegratedGradients(model)
    yield "integrated_gradients (50)", 50, True, lambda: lens.integrated_gradients(x, t), {
        "captum IG default": lambda: ig.attribute(x, target=target, n_steps=50),
        "captum IG ibs=10": lambda: ig.attribute(x, target=target, n_steps=50,
                                                 internal_batch_size=10 * x.shape[0])}
    nt = ca.NoiseTunnel(ca.Saliency(model))
    yield "smooth_grad (25)", 25, True, lambda: lens.smooth_grad(x, t, n=25), {
        "captum NoiseTunnel default": lambda: nt.attribute(
            x, nt_samples=25, stdevs=0.15, target=target, abs=False),
        "captum NoiseTunnel batch 1": lambda: nt.attribute(
            x, nt_samples=25, stdevs=0.15, target=target, abs=False, nt_samples_batch_size=1)}
    occ = ca.Occlusion(model)
    shape, strides = (3, 32, 32), (3, 16, 16)
    yield "occlusion (32/16)", windows, False, lambda: lens.occlusion(x, t), {
        f"captum Occlusion ppe={p}": (lambda p=p: occ.attribute(
            x, sliding_window_shapes=shape, strides=strides, target=target,
            perturbations_per_eval=p)) for p in (1, 16)}
    yield from black_box_cases(model, lens, x, target)
    if "scorecam" not in skip:
        yield "scorecam", 512, False, lambda: lens.scorecam(x, t, layer="layer4"), {
            "pytorch-grad-cam ScoreCAM": lambda: pgc.ScoreCAM(model, [layer])(
                x, [pgc.utils.model_targets.ClassifierOutputTarget(c) for c in t])}


# The black-box rows: a grid of 8 x 8 regions (28-pixel cells at 224 px), the same number of
# model evaluations for netlens and Captum, and Captum at several ``perturbations_per_eval``
# (the fastest is reported). Passes are counted in images of the batch's size: an ablation of
# one region of every image of the batch is one pass.
CELLS = 8
SAMPLES = 128  # LIME and KernelSHAP
PERMUTATIONS = 2  # Shapley sampling: 1 + 2 * 63 passes for netlens, 1 + 2 * 64 for Captum
RISE_MASKS = 4000
PPE = (1, 16, 64)


def black_box_cases(model, lens, x, target):
    """(method, passes, backward, netlens fn, {peer name: peer fn}) of the black-box methods."""
    import captum.attr as ca

    t = target.tolist()
    mask = nl.segments.grid(x, CELLS)
    regions = CELLS * CELLS
    captum_mask = mask.expand(x.shape[0], *mask.shape[1:]).contiguous()  # one per image

    def peers(cls, **kwargs):
        method = cls(model)
        return {f"captum {cls.__name__} ppe={p}": (lambda p=p: method.attribute(
            x, target=target, feature_mask=captum_mask, baselines=0.0,
            perturbations_per_eval=p, show_progress=False, **kwargs)) for p in PPE}

    yield f"feature_ablation ({regions})", regions + 1, False, \
        lambda: lens.feature_ablation(x, t, mask=mask, progress=False), peers(ca.FeatureAblation)
    g = torch.Generator()
    yield f"lime ({SAMPLES})", SAMPLES + 1, False, \
        lambda: lens.lime(x, t, n=SAMPLES, segments=mask, progress=False,
                          generator=g.manual_seed(0)), peers(ca.Lime, n_samples=SAMPLES)
    yield f"kernel_shap ({SAMPLES})", SAMPLES + 1, False, \
        lambda: lens.kernel_shap(x, t, n=SAMPLES, segments=mask, progress=False,
                                 generator=g.manual_seed(0)), \
        peers(ca.KernelShap, n_samples=SAMPLES)
    yield f"shapley_sampling ({PERMUTATIONS} orders)", 2 + PERMUTATIONS * (regions - 1), False, \
        lambda: lens.shapley_sampling(x, t, n_permutations=PERMUTATIONS, segments=mask,
                                      progress=False, generator=g.manual_seed(0)), \
        peers(ca.ShapleyValueSampling, n_samples=PERMUTATIONS)
    yield f"rise ({RISE_MASKS})", RISE_MASKS + 1, False, \
        lambda: lens.rise(x, t, n=RISE_MASKS, progress=False, generator=g.manual_seed(0)), {}


def table_lines(what: str, device: torch.device, repeat: int, rows: list[tuple]) -> list[str]:
    """The Markdown table of a benchmark: a header line (versions, machine, how it was timed),
    then one row per (method, model, batch, netlens s, fastest peer, peer s, ratio, netlens MB,
    peer default MB, bound ratio)."""
    where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    lines = [f"netlens {nl.__version__}, torch {torch.__version__}, {what}, "
             f"{device.type} ({where}), medians of {repeat} interleaved rounds; peak MB: "
             "memory above the level at the call's start (CUDA allocator, or process RSS sampled "
             "every 2 ms on CPU); peer default MB: the peak of the peer's first (default) setting",
             "", "| method | model | batch | netlens s | fastest peer | peer s | ratio "
             "| netlens peak MB | peer default MB | bound ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m, model_name, b, s, peer, ps, ratio, mb, pmb, bound in rows:
        lines.append(f"| {m} | {model_name} | {b} | {s:.3f} | {peer} | {ps:.3f} | {ratio:.2f} "
                     f"| {mb:.0f} | {pmb:.0f} | {bound:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[])
    parser.add_argument("--quick", action="store_true", help="112 px, batch 1, one repeat")
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.size, args.batches, args.repeat = 112, [1], 1
        args.skip = list(args.skip) + ["scorecam"]
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)().eval().to(device)
    lens = nl.NetLens(model)
    rows = []
    for batch in args.batches:
        g = torch.Generator().manual_seed(batch)
        x = torch.rand(batch, 3, args.size, args.size, generator=g).to(device)
        target = torch.arange(batch, device=device) * 7 % 1000
        passes_s = timed({b: one_pass(model, x, b) for b in (True, False)}, args.repeat, device)
        pass_time = {b: passes_s[b][0] for b in (True, False)}
        for method, passes, backward, ours, peers in cases(
                model, lens, x, target, args.size, args.skip):
            if args.methods is not None and not method.startswith(tuple(args.methods)):
                continue
            peer_times = timed({"netlens": ours, **peers}, args.repeat, device,
                               warmup=not args.no_warmup)
            ours_s, ours_mb = peer_times.pop("netlens")
            bound = passes * pass_time[backward]
            best, ps, pmb = "(none)", float("nan"), float("nan")
            if peers:
                best = min(peer_times, key=lambda k: peer_times[k][0])
                ps = peer_times[best][0]
                pmb = peer_times[next(iter(peers))][1]  # the first setting: the peer's default
            rows.append((method, args.model, batch, ours_s, best, ps, ours_s / ps, ours_mb,
                         pmb, ours_s / bound))
            print(f"  {method} B={batch}: {ours_s:.3f} s vs {best} {ps:.3f} s; "
                  + ", ".join(f"{k} {v[0]:.3f} s {v[1]:.0f} MB" for k, v in peer_times.items())
                  + f"; netlens {ours_mb:.0f} MB", flush=True)
    lines = table_lines(f"{args.model} {args.size}px", device, args.repeat, rows)
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    suffix = "-quick" if args.quick else ""
    name = args.out or f"attribution-{device.type}{suffix}"
    (RESULTS / f"{name}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
