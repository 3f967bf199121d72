"""netlens's evaluation metrics vs Quantus 0.6.0, side by side in one process.

    python benchmarks/metrics.py [--models shapes resnet18] [--images 64] [--resnet-images 16]
                                 [--repeat 3] [--threads 2] [--only NAME ...] [--quick]
                                 [--out NAME]

Every metric that both libraries have, on the same model, the same explanations and settings that
give both the same number of model passes. The explanations are netlens saliency, computed once
and passed to both as ``a_batch`` (``(B, 3, H, W)`` for the perturbation metrics, its one-channel
map for the localization and complexity ones); the metrics that explain perturbed inputs or
randomized models run netlens saliency on both sides (netlens's ``method="saliency"``, Quantus's
``explain_func``, one FlatModel per model). Each row counts the model passes per image of each
library (forward calls seen by a pre-hook on the model during the last timed call, an
explanation counting one), so that a ratio compares the same work. Quantus gets all the images of
a row in one batch (``batch_size=B``), as netlens does; ``netlens.metrics`` functions that are
not exported yet are taken from their family's module, absent ones are listed as not run.

Models and images (shapes images, ``nl.data.make_shapes(seed=0)``, the labels as targets): the
shipped shapes model at 64 px on 64 images, and a seeded random-init torchvision resnet18 at
224 px on 16 images, 8 for the rows that explain perturbed inputs, fewer for the slowest rows
(the ``images`` column says so). Settings: 12 steps over the ``C x H x W`` values, 4 x 4
patches, 16 runs or noise draws where a metric samples, 4 robustness draws, 8 continuity
shifts; non-sensitivity at 16 px (Quantus 0.6.0 runs it only with ``features_in_step=1``: one
pass per value). Times are medians of ``--repeat`` interleaved rounds after a warm-up of each side
on the first 2 images (``attribution.timed``, ``torch.set_num_threads(2)``); peak MB is the
process RSS above its level at the call's start, against netlens's working-memory budget
(``netlens._runtime.DEFAULT_MAX_MEMORY["cpu"]``). The goal: each metric at most 0.5x Quantus's
time within that budget. About 15-20 minutes on a quiet 2-core CPU. ``--quick``: 2 images, 32
px shapes and 64 px resnet18 (non-sensitivity at 4 px), fewer draws, one round, one thread (a
smoke run, a few minutes on a shared machine). Prints one Markdown table and writes it to
``benchmarks/results/metrics-cpu[-quick].md``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import platform
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

import netlens as nl
from netlens._runtime import DEFAULT_MAX_MEMORY

from attribution import timed  # benchmarks/attribution.py  # isort: skip

RESULTS = Path(__file__).resolve().parent / "results"
Fn = Callable[[], object]

# -- model passes ---------------------------------------------------------------------------

PASSES = [0]  # images seen by the models' forward pre-hooks since the last reset


def _count(module: nn.Module, args: tuple) -> None:
    """A forward pre-hook (a plain function: a deep copy of the model, as Quantus's and netlens's
    randomization tests make, keeps counting into the same list)."""
    if args and torch.is_tensor(args[0]) and args[0].dim() > 0:
        PASSES[0] += args[0].shape[0]


def counted(fn: Fn, into: list[int]) -> Fn:
    def run() -> object:
        PASSES[0] = 0
        out = fn()
        into[:] = [PASSES[0]]
        return out
    return run


# -- data -----------------------------------------------------------------------------------

@dataclass
class Data:
    """One model's images, targets, masks and explanations, as tensors and as numpy arrays."""

    model_name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    masks: torch.Tensor
    a: torch.Tensor  # (B, 3, H, W) saliency
    m: torch.Tensor  # (B, 1, H, W) its map
    classes: int
    gray: nn.Module  # 1 -> 3 channel copy, then the model (Quantus's IROF, ROAD: 1 channel)
    np_: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.np_ = {"x": self.x.numpy(), "y": self.y.numpy(), "a": self.a.numpy(),
                    "m": self.m.numpy(), "s": self.masks.float().numpy()}

    def head(self, k: int) -> Data:
        return replace(self, x=self.x[:k], y=self.y[:k], masks=self.masks[:k], a=self.a[:k],
                       m=self.m[:k])

    def mosaics(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """2 x 2 mosaics of the images and of their maps (image i with the next three), and
        which of a mosaic's tiles show the first tile's class (Focus's quadrants)."""
        if "mosaics" not in self.np_:
            order = torch.tensor([[(i + j) % self.n for j in range(4)] for i in range(self.n)])
            quadrants = self.y[order] == self.y[order[:, 0]][:, None]
            self.np_["mosaics"] = (nl.metrics.mosaic(self.x[order]),
                                   nl.metrics.mosaic(self.m[order]), quadrants)
        return self.np_["mosaics"]

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def px(self) -> int:
        return self.x.shape[-1]


def make_data(model_name: str, model: nn.Module, gray: nn.Module, n: int, px: int,
              classes: int) -> Data:
    batch = nl.data.make_shapes(n, size=max(px, 24), seed=0)  # its smallest size: 24 px
    x, y, masks = batch.images, batch.labels, batch.masks
    if px < 24:
        x = nn.functional.interpolate(x, size=(px, px), mode="area")
        masks = nn.functional.interpolate(masks.float(), size=(px, px), mode="area") > 0.5
    a = nl.attribution.saliency(model, x, y).detach().float()
    m = nl.metrics.saliency_map(a).float()
    return Data(model_name, model, x, y, masks, a, m, classes, gray)


def gray_model(model: nn.Module) -> nn.Module:
    copy = nn.Conv2d(1, 3, 1, bias=False)
    nn.init.ones_(copy.weight)
    return nn.Sequential(copy, model).eval()


# -- settings -------------------------------------------------------------------------------

@dataclass
class Settings:
    """The per-metric settings, from the image size; ``quick`` lowers the sample counts."""

    px: int
    quick: bool

    def __post_init__(self) -> None:
        hw = self.px * self.px
        self.step = hw // 4  # features per step: 12 steps over the C x H x W values
        self.steps = 3 * hw // self.step
        self.patch = self.px // 4  # 4 x 4 patches
        self.runs = 4 if self.quick else 16  # faithfulness correlation
        self.samples = 2 if self.quick else 4  # robustness draws
        self.continuity_steps = 4 if self.quick else 8
        self.smooth_n = 2
        self.road_percent = [50] if self.quick else [10, 50]
        self.top_k = min(1000, hw // 4)
        self.subset = min(224, hw // 4)


# -- the two sides --------------------------------------------------------------------------

def quiet() -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def explainer() -> Callable[..., np.ndarray]:
    """Quantus's ``explain_func``: netlens saliency, one FlatModel per model it is handed (its
    randomization tests hand over the same randomized copy after each change)."""
    flat: dict[int, nl.FlatModel] = {}

    def explain(model: object, inputs: np.ndarray, targets: np.ndarray, **kwargs: object
                ) -> np.ndarray:
        model = model.get_model() if hasattr(model, "get_model") else model
        fm = flat.setdefault(id(model), nl.FlatModel(model))
        a = nl.attribution.saliency(fm, torch.as_tensor(inputs).float(),
                                    torch.as_tensor(targets).long())
        return a.detach().float().numpy()
    return explain


def theirs(metric: Callable[[], object], d: Data, *, a: str | np.ndarray | None = None,
           s: bool = False, explain: bool = False, model: nn.Module | None = None,
           x: np.ndarray | None = None, patch_explain: bool = False, **call: object) -> Fn:
    """A Quantus call on ``d``: ``metric()`` builds the metric (inside the timed call, as a
    user's script does); ``a`` names the explanation passed as ``a_batch`` ("a", "m" or None:
    Quantus explains x itself), ``s`` passes the masks, ``explain`` the explain function."""
    import quantus

    def run() -> object:
        kw: dict[str, object] = dict(
            model=model if model is not None else d.model,
            x_batch=x if x is not None else d.np_["x"], y_batch=d.np_["y"],
            channel_first=True, device="cpu", batch_size=d.n, **call)
        if a is not None:
            kw["a_batch"] = d.np_[a] if isinstance(a, str) else a
        if s:
            kw["s_batch"] = d.np_["s"]
        if explain or patch_explain:
            kw["explain_func"] = explainer()
        with quiet():
            if not patch_explain:
                return metric()(**kw)
            saved = quantus.explain  # SmoothMPRT smooths with quantus.explain, whatever its
            quantus.explain = kw["explain_func"]  # explain_func says
            try:
                return metric()(**kw)
            finally:
                quantus.explain = saved
    return run


def g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@dataclass
class Case:
    name: str  # the netlens.metrics function
    peer: str  # the Quantus class
    ours: Callable[[Callable, Data, Settings], Fn]
    theirs: Callable[[object, Data, Settings], Fn]
    images: dict[str, int] = field(default_factory=dict)  # per-model image counts (full mode)
    px: int | None = None  # its own image size (full mode; quick: a quarter)
    note: str = ""


def cases() -> list[Case]:
    """(netlens metric, Quantus class, netlens call, Quantus call) of each shared metric."""
    C = Case
    off = dict(disable_warnings=True)
    pc = dict(per_channel=True, progress=False)
    return [
        # -- faithfulness: a_batch (B, 3, H, W), Quantus's features are the C x H x W values
        C("faithfulness_correlation", "FaithfulnessCorrelation",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, d.y, runs=st.runs, subset_size=st.subset,
                                     generator=g(), **pc),
          lambda q, d, st: theirs(lambda: q.FaithfulnessCorrelation(
              nr_runs=st.runs, subset_size=st.subset, perturb_baseline="black",
              return_aggregate=False, **off), d, a="a", softmax=False)),
        C("faithfulness_estimate", "FaithfulnessEstimate",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, d.y, features_in_step=st.step, **pc),
          lambda q, d, st: theirs(lambda: q.FaithfulnessEstimate(
              features_in_step=st.step, perturb_baseline="black", **off), d, a="a",
              softmax=False)),
        C("monotonicity", "Monotonicity",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, d.y, features_in_step=st.step, **pc),
          lambda q, d, st: theirs(lambda: q.Monotonicity(
              features_in_step=st.step, perturb_baseline="black", abs=False, **off), d, a="a")),
        C("monotonicity_correlation", "MonotonicityCorrelation",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, d.y, samples=2, features_in_step=st.step,
                                     score="logit", generator=g(), **pc),
          lambda q, d, st: theirs(lambda: q.MonotonicityCorrelation(
              nr_samples=2, features_in_step=st.step, abs=False, **off), d, a="a",
              softmax=False)),
        C("pixel_flipping", "PixelFlipping",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, d.y, steps=st.steps, baseline=0.0,
                                     progress=False),
          lambda q, d, st: theirs(lambda: q.PixelFlipping(
              features_in_step=st.step, perturb_baseline="black", abs=False, **off), d, a="a",
              softmax=False)),
        C("region_perturbation", "RegionPerturbation",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, d.y, patch_size=st.patch, regions=16,
                                     reduce="sum", score="logit", progress=False),
          lambda q, d, st: theirs(lambda: q.RegionPerturbation(
              patch_size=st.patch, regions_evaluation=16, abs=False, **off), d, a="a",
              softmax=False)),
        C("selectivity", "Selectivity",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, d.y, patch_size=st.patch, reduce="sum",
                                     progress=False),
          lambda q, d, st: theirs(lambda: q.Selectivity(
              patch_size=st.patch, abs=False, **off), d, a="a")),
        C("sensitivity_n", "SensitivityN",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, d.y, n=st.step, runs=st.steps,
                                     generator=g(), **pc),
          lambda q, d, st: theirs(lambda: q.SensitivityN(
              features_in_step=st.step, abs=False, return_aggregate=False, **off), d, a="a",
              softmax=False),
          note="Quantus: cumulative steps, correlated across the images; netlens: random "
               "subsets of one step's size, per image (as the paper)"),
        C("irof", "IROF",
          lambda f, d, st: lambda: f(d.gray, d.x.mean(1, keepdim=True), d.a.sum(1, keepdim=True),
                                     d.y, baseline="black", normalize=False, score="logit",
                                     progress=False),
          lambda q, d, st: theirs(lambda: q.IROF(
              perturb_baseline="black", abs=False, return_aggregate=False, **off), d,
              a=d.a.sum(1, keepdim=True).numpy(), model=d.gray,
              x=d.x.mean(1, keepdim=True).numpy(), softmax=False),
          images={"resnet18": 2},
          note="one-channel images behind a 1 -> 3 copy (Quantus 0.6.0's IROF fails on RGB); "
               "SLIC superpixels on both sides"),
        C("infidelity", "Infidelity",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, d.y, samples=16, generator=g(),
                                     progress=False),
          lambda q, d, st: theirs(lambda: q.Infidelity(
              perturb_patch_sizes=[st.patch], n_perturb_samples=1, abs=False, normalise=False,
              **off), d, a="a", softmax=False),
          note="Quantus: one pass per patch (16); netlens (Captum's): 16 noise draws"),
        C("sufficiency", "Sufficiency",
          lambda f, d, st: lambda: f(d.model, d.x, d.a.abs().sum(1, keepdim=True)),
          lambda q, d, st: theirs(lambda: q.Sufficiency(threshold=0.6, **off), d,
                                  a=d.a.abs().sum(1, keepdim=True).numpy())),
        C("road", "ROAD",
          lambda f, d, st: lambda: f(d.gray, d.x.mean(1, keepdim=True), d.m, d.y,
                                     fractions=[p / 100 for p in st.road_percent], noise=0.01,
                                     generator=g(), progress=False),
          lambda q, d, st: theirs(lambda: q.ROAD(percentages=st.road_percent, noise=0.01, **off),
                                  d, a="m", model=d.gray, x=d.x.mean(1, keepdim=True).numpy()),
          images={"shapes": 16, "resnet18": 2},
          note="one-channel images behind a 1 -> 3 copy (Quantus 0.6.0's ROAD ranks C x H x W "
               "values but imputes H x W pixels: IndexError on RGB); noisy linear imputation "
               "per image and fraction"),
        # -- robustness: both explain the perturbed inputs with netlens saliency
        C("max_sensitivity", "MaxSensitivity",
          lambda f, d, st: lambda: f(d.model, d.x, d.y, "saliency", n=st.samples, radius=0.02,
                                     generator=g(), progress=False),
          lambda q, d, st: theirs(lambda: q.MaxSensitivity(
              nr_samples=st.samples, lower_bound=0.02, return_nan_when_prediction_changes=False,
              **off), d, explain=True),
          images={"resnet18": 8}),
        C("avg_sensitivity", "AvgSensitivity",
          lambda f, d, st: lambda: f(d.model, d.x, d.y, "saliency", n=st.samples, radius=0.02,
                                     generator=g(), progress=False),
          lambda q, d, st: theirs(lambda: q.AvgSensitivity(
              nr_samples=st.samples, lower_bound=0.02, return_nan_when_prediction_changes=False,
              **off), d, explain=True),
          images={"resnet18": 8}),
        C("local_lipschitz_estimate", "LocalLipschitzEstimate",
          lambda f, d, st: lambda: f(d.model, d.x, d.y, "saliency", n=st.samples, sigma=0.1,
                                     generator=g(), progress=False),
          lambda q, d, st: theirs(lambda: q.LocalLipschitzEstimate(
              nr_samples=st.samples, perturb_std=0.1, normalise=False,
              return_nan_when_prediction_changes=False, **off), d, explain=True),
          images={"resnet18": 8}),
        C("continuity", "Continuity",
          lambda f, d, st: lambda: f(d.model, d.x, d.y, "saliency", steps=st.continuity_steps,
                                     generator=g(), progress=False),
          lambda q, d, st: theirs(lambda: q.Continuity(
              nr_steps=st.continuity_steps, normalise_func_kwargs={"normalise_axes": (1, 2, 3)},
              **off), d, a="a", explain=True),
          images={"resnet18": 4}),
        C("consistency", "Consistency",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, discretize="first_n_sign", top=2,
                                     per_channel=True),
          lambda q, d, st: theirs(lambda: q.Consistency(
              discretise_func=functools.partial(q.functions.discretise_func.top_n_sign, n=2),
              abs=False, normalise=False, **off), d, a="a")),
        *[C(f"relative_{kind}_stability", f"Relative{kind.title()}Stability",
            lambda f, d, st, kind=kind: lambda: f(
                d.model, d.x, d.y, "saliency", n=st.samples, same_prediction=False,
                **({"layer": "layer3.0"} if kind == "representation" else {}), generator=g(),
                progress=False),
            lambda q, d, st, kind=kind: theirs(lambda: getattr(
                q, f"Relative{kind.title()}Stability")(
                    nr_samples=st.samples, return_nan_when_prediction_changes=False,
                    **({"layer_names": ["layer3.0"]} if kind == "representation" else {}),
                    **off), d, explain=True),
            images={"resnet18": 8}, note="at layer3.0" if kind == "representation" else "")
          for kind in ("input", "output", "representation")],
        # -- localization and complexity: the maps only, no model pass
        *[C(name, peer, lambda f, d, st, kw=kw: lambda: f(d.m, d.masks, **kw(st)),
            lambda q, d, st, peer=peer, qkw=qkw: theirs(
                lambda: getattr(q, peer)(**qkw(st), **off), d, a="m", s=True))
          for name, peer, kw, qkw in [
              ("pointing_game", "PointingGame", lambda st: {}, lambda st: {}),
              ("relevance_mass", "RelevanceMassAccuracy", lambda st: {}, lambda st: {}),
              ("relevance_rank", "RelevanceRankAccuracy", lambda st: {}, lambda st: {}),
              ("top_k_intersection", "TopKIntersection", lambda st: {"k": st.top_k},
               lambda st: {"k": st.top_k}),
              ("attribution_localisation", "AttributionLocalisation", lambda st: {},
               lambda st: {}),
              ("localisation_auc", "AUC", lambda st: {}, lambda st: {})]],
        C("focus", "Focus",
          lambda f, d, st: lambda: f(*d.mosaics()[1:]),
          lambda q, d, st: theirs(lambda: q.Focus(**off), d, a=d.mosaics()[1].numpy(),
                                  x=d.mosaics()[0].numpy(),
                                  custom_batch=[c.tolist() for c in d.mosaics()[2]]),
          note="2 x 2 mosaics of the images and of their maps"),
        *[C(name, peer, lambda f, d, st: lambda: f(d.m),
            lambda q, d, st, peer=peer: theirs(lambda: getattr(q, peer)(**off), d, a="m"))
          for name, peer in [("sparseness", "Sparseness"), ("complexity", "Complexity"),
                             ("effective_complexity", "EffectiveComplexity")]],
        # -- axiomatic
        C("completeness", "Completeness",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, d.y),
          lambda q, d, st: theirs(lambda: q.Completeness(
              normalise=False, perturb_baseline="black", **off), d, a="a")),
        C("non_sensitivity", "NonSensitivity",
          lambda f, d, st: lambda: f(d.model, d.x, d.a, d.y, progress=False),
          lambda q, d, st: theirs(lambda: q.NonSensitivity(
              eps=1e-5, perturb_baseline="black", **off), d, a="a"),
          images={"resnet18": 8}, px=16,
          note="one pass per value (Quantus runs only features_in_step=1)"),
        C("input_invariance", "InputInvariance",
          lambda f, d, st: lambda: f(d.model, d.x, d.y, "saliency", progress=False),
          lambda q, d, st: theirs(lambda: q.InputInvariance(**off), d, a="a", explain=True),
          images={"resnet18": 8},
          note="Quantus writes the shift into the first convolution's bias, which neither "
               "model has"),
        # -- randomization: netlens saliency on the randomized copies, both sides
        C("model_randomization", "MPRT",
          lambda f, d, st: lambda: f(d.model, d.x, d.y, methods=["saliency"], cascading=True,
                                     generator=g(), progress=False),
          lambda q, d, st: theirs(lambda: q.MPRT(layer_order="top_down", **off), d, a="a",
                                  explain=True),
          images={"resnet18": 2}, note="cascading, top down, every layer with parameters"),
        C("random_logit", "RandomLogit",
          lambda f, d, st: lambda: f(d.model, d.x, d.y, "saliency", attributions=d.a,
                                     generator=g(), progress=False),
          lambda q, d, st: theirs(lambda: q.RandomLogit(num_classes=d.classes, **off), d,
                                  a="a", explain=True),
          images={"resnet18": 8}),
        C("smooth_mprt", "SmoothMPRT",
          lambda f, d, st: lambda: f(d.model, d.x, d.y, "saliency", n=st.smooth_n,
                                     layerwise=True, generator=g(), progress=False),
          lambda q, d, st: theirs(lambda: q.SmoothMPRT(
              nr_samples=st.smooth_n, noise_magnitude=0.1, **off), d, patch_explain=True),
          images={"shapes": 16, "resnet18": 1},
          note="every layer, bottom up; Quantus also smooths a second trained-model row"),
        C("efficient_mprt", "EfficientMPRT",
          lambda f, d, st: lambda: f(d.model, d.x, d.y, "saliency", generator=g(),
                                     progress=False),
          lambda q, d, st: theirs(lambda: q.EfficientMPRT(**off), d, a="a", explain=True),
          images={"resnet18": 8},
          note="netlens explains the trained model itself, as Quantus does with a_batch given"),
    ]


# -- running --------------------------------------------------------------------------------

def resolve(name: str) -> Callable | None:
    """The netlens metric ``name``: exported by netlens.metrics, else in its family's module."""
    fn = getattr(nl.metrics, name, None)
    if fn is None:
        for module in ("robustness", "sanity", "faithfulness_more", "axiomatic"):
            fn = getattr(getattr(nl.metrics, module, None), name, None)
            if fn is not None:
                break
    return fn


def safe(fn: Fn, errors: list[str]) -> Fn:
    def run() -> object:
        if errors:
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - a failing side becomes a row note
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}")
            if not isinstance(e, (TypeError, ValueError, AssertionError, AttributeError)):
                traceback.print_exc()
            return None
    return run


@dataclass
class Row:
    metric: str
    peer: str
    model: str
    images: int
    px: int
    passes: tuple[float, float]
    ours: tuple[float, float]  # seconds, peak MB
    theirs: tuple[float, float]
    ours_error: str = ""
    theirs_error: str = ""
    note: str = ""


def run_case(case: Case, fn: Callable, quantus: object, d: Data, st: Settings,
             repeat: int) -> Row:
    errors: dict[str, list[str]] = {"netlens": [], "quantus": []}
    passes: dict[str, list[int]] = {"netlens": [0], "quantus": [0]}
    builders = {"netlens": lambda dd: case.ours(fn, dd, st),
                "quantus": lambda dd: case.theirs(quantus, dd, st)}
    warm = d.head(min(2, d.n))
    for side, build in builders.items():  # the warm-up, on the first 2 images
        safe(build(warm), errors[side])()
    fns = {side: counted(safe(build(d), errors[side]), passes[side])
           for side, build in builders.items() if not errors[side]}
    got = timed(fns, repeat, torch.device("cpu"), warmup=False) if fns else {}
    nan = (float("nan"), float("nan"))
    res = {side: nan if errors[side] else got[side] for side in builders}
    return Row(case.name, case.peer, d.model_name, d.n, d.px,
               tuple(passes[s][0] / d.n for s in builders), res["netlens"], res["quantus"],
               "; ".join(errors["netlens"]), "; ".join(errors["quantus"]), case.note)


def _passes(p: tuple[float, float], row: Row) -> str:
    def fmt(v: float) -> str:
        return f"{v:.0f}" if abs(v - round(v)) < 0.05 else f"{v:.1f}"
    if row.ours_error or row.theirs_error:
        return fmt(p[1] if row.ours_error else p[0])
    return fmt(p[0]) if fmt(p[0]) == fmt(p[1]) else f"{fmt(p[0])} / {fmt(p[1])}"


def _cell(v: float, spec: str) -> str:
    return "-" if v != v else format(v, spec)


def table(rows: list[Row], skipped: list[str], repeat: int, quick: bool, wall: float) -> str:
    import quantus

    budget = DEFAULT_MAX_MEMORY["cpu"] / 2**20
    where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    lines = [
        f"netlens {nl.__version__}, Quantus {quantus.__version__}, torch {torch.__version__}, "
        f"cpu ({where}){', quick mode' if quick else ''}; medians of {repeat} interleaved "
        f"round(s) after a warm-up of each side on 2 images; passes: model forward calls per "
        f"image (an explanation counts one), netlens / Quantus where they differ; peak MB: "
        f"process RSS above the call's start, sampled every 2 ms; netlens's budget "
        f"{budget:.0f} MB; whole run {wall / 60:.1f} min", "",
        "| metric | Quantus | model | images | px | passes / image | netlens s | Quantus s "
        "| ratio | <= 0.5x | netlens MB | Quantus MB | in budget | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        (s, mb), (qs, qmb) = r.ours, r.theirs
        ratio = s / qs if not (r.ours_error or r.theirs_error) and qs > 0 else float("nan")
        verdict = "n/a" if ratio != ratio else ("yes" if ratio <= 0.5 else "no")
        note = "; ".join(v for v in (f"netlens fails: {r.ours_error}" if r.ours_error else "",
                                     f"Quantus fails: {r.theirs_error}" if r.theirs_error
                                     else "", r.note) if v)
        in_budget = "-" if mb != mb else ("yes" if mb <= budget else "no")
        lines.append(f"| {r.metric} | {r.peer} | {r.model} | {r.images} | {r.px} "
                     f"| {_passes(r.passes, r)} | {_cell(s, '.3f')} | {_cell(qs, '.3f')} "
                     f"| {_cell(ratio, '.2f')} | {verdict} | {_cell(mb, '.0f')} "
                     f"| {_cell(qmb, '.0f')} "
                     f"| {in_budget} | {note} |")
    ratios = [r.ours[0] / r.theirs[0] for r in rows
              if not (r.ours_error or r.theirs_error) and r.theirs[0] > 0]
    if ratios:
        held = sum(v <= 0.5 for v in ratios)
        lines += ["", f"{held} of {len(ratios)} timed pairs at most 0.5x Quantus; median ratio "
                      f"{statistics.median(ratios):.2f}, geometric mean "
                      f"{float(np.exp(np.mean(np.log(ratios)))):.2f}."]
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["shapes", "resnet18"],
                        choices=["shapes", "resnet18"])
    parser.add_argument("--images", type=int, default=64, help="images of the shapes model")
    parser.add_argument("--resnet-images", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads: 2 (1 with --quick, a smoke run on a shared machine)")
    parser.add_argument("--only", nargs="*", default=None, help="netlens metric names")
    parser.add_argument("--quick", action="store_true",
                        help="2 images, 32 px shapes / 64 px resnet18, minimal settings, 1 round")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.images = args.resnet_images = 2
        args.repeat = 1
    torch.set_num_threads(args.threads or (1 if args.quick else 2))
    start = time.perf_counter()
    with quiet():
        import quantus
    if not hasattr(np, "trapz"):  # Quantus 0.6.0's IROF and AUCs call np.trapz (numpy < 2)
        np.trapz = np.trapezoid
    np.random.seed(0)
    torch.manual_seed(0)
    models = {"shapes": (nl.zoo.shapes_model().eval(), 32 if args.quick else 64, args.images, 4),
              "resnet18": (torchvision.models.resnet18().eval(), 64 if args.quick else 224,
                           args.resnet_images, 1000)}
    rows: list[Row] = []
    all_cases = [c for c in cases() if args.only is None or c.name in args.only]
    skipped = [f"{c.name} (not in netlens.metrics yet)" for c in all_cases
               if resolve(c.name) is None]
    datasets: dict[tuple[str, int], Data] = {}
    for model_name in args.models:
        model, px, images, classes = models[model_name]
        model.register_forward_pre_hook(_count)
        gray = gray_model(model)
        for c in all_cases:
            fn = resolve(c.name)
            if fn is None:
                continue
            n = images if args.quick else min(images, c.images.get(model_name, images))
            size = px if c.px is None else (c.px // 4 if args.quick else c.px)
            if (model_name, size) not in datasets:  # the capped rows: its first n images
                datasets[(model_name, size)] = make_data(model_name, model, gray, images, size,
                                                         classes)
            d = datasets[(model_name, size)].head(n)
            t0 = time.perf_counter()
            np.random.seed(0)
            row = run_case(c, fn, quantus, d, Settings(size, args.quick), args.repeat)
            rows.append(row)
            print(f"  {c.name} {model_name} ({n} x {size} px): netlens {row.ours[0]:.3f} s "
                  f"{row.ours[1]:.0f} MB, Quantus {row.theirs[0]:.3f} s {row.theirs[1]:.0f} MB, "
                  f"passes {row.passes[0]:.1f} / {row.passes[1]:.1f} "
                  f"{row.ours_error or ''}{row.theirs_error or ''} "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    text = table(rows, skipped, args.repeat, args.quick, time.perf_counter() - start)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = args.out or f"metrics-cpu{'-quick' if args.quick else ''}"
    (RESULTS / f"{name}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
