"""Targets on real model families (CONTRIBUTING.md tests A1 and C10-C11 there; issue 12).

For each target kind, ``saliency`` equals ``torch.autograd.grad`` of the bound target's score,
computed here by hand, on torchvision ``fcn_resnet50`` and ``deeplabv3_mobilenet_v3_large``
(dict outputs with an auxiliary head), ``fasterrcnn_mobilenet_v3_large_fpn`` (a list of dicts;
boxes taken from its own predictions), a HuggingFace ``ViTForImageClassification`` built from a
config (an ``ImageClassifierOutput``) and a ResNet-18 embedding model; every method of
``METHODS`` runs with every target on them, batched and in chunks, leaving the model exactly as
it was, also after an exception; bad targets fail through the methods with an error that names
the output's shape or fields and the fix; CAM default layers are layers the target depends on.

Random init (seeded), eval mode, small inputs: no weights are downloaded. The exactness checks
run in float64; the method matrix, whose results are only checked for shape, finiteness and a
model left as it was, runs in float32 (about twice as fast). Each family has one single target
(run in chunks of one image), the list of its other targets (a K axis, each column checked
against autograd) and, on three families, a Channel target.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import netlens as nl
from netlens import targets as T
from netlens._util import NetlensWarning
from netlens.attribution import METHODS

from helpers import assert_untouched, model_state


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread for these small passes: on a shared, loaded CPU, two OpenMP threads
    make them 10 to 1000 times slower (each op waits for both threads to get a core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the model families ------------------------------------------------------------------------
def _fcn() -> nn.Module:
    return torchvision.models.segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=3, aux_loss=True)


def _deeplab() -> nn.Module:
    return torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3, aux_loss=True)


def _faster_rcnn() -> nn.Module:
    # A random-init detector scores every class about equally (~1/5 here), so box_score_thresh=0
    # keeps its boxes; few proposals keep the box head (two 1024-wide layers per RoI) cheap.
    return torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=5, min_size=64, max_size=64,
        box_score_thresh=0.0, box_detections_per_img=10, rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=10)


def _hf_vit(attn_implementation: str | None = None) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    return ViTForImageClassification(ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
        intermediate_size=64, num_labels=5, **extra))


def _embedding() -> nn.Module:
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()  # (B, 512) embeddings
    return model


@dataclasses.dataclass(frozen=True)
class Family:
    """A model family: its builder, its input size, and where a forward pass ends (the module
    whose failure the exception tests inject)."""

    build: Callable[[], nn.Module]
    size: int
    last: str


FAMILIES = {
    "fcn": Family(_fcn, 16, "classifier"),
    "deeplab": Family(_deeplab, 32, "classifier"),
    "faster_rcnn": Family(_faster_rcnn, 64, "roi_heads"),
    "hf_vit": Family(_hf_vit, 32, "classifier"),
    "embedding": Family(_embedding, 16, "layer4"),
}
F32 = torch.float32
Built = tuple[nn.Module, torch.Tensor, Any]


@pytest.fixture(scope="module")
def family() -> Callable[..., Built]:
    """``family(name, dtype=float64)``: ``(model, x, clean output)`` of a family, eval mode,
    seeded, two images; built once for this module. Every test that uses it leaves the model as
    it was (``untouched`` or ``assert_untouched``)."""
    built: dict[tuple[str, torch.dtype], Built] = {}

    def get(name: str, dtype: torch.dtype = torch.float64) -> Built:
        if (name, dtype) not in built:
            torch.manual_seed(0)
            model = FAMILIES[name].build().to(dtype).eval()
            size = FAMILIES[name].size
            g = torch.Generator().manual_seed(1)
            x = torch.rand(2, 3, size, size, generator=g, dtype=torch.float64).to(dtype)
            with torch.no_grad():
                out = model(x)
            built[name, dtype] = (model, x, out)
        return built[name, dtype]

    return get


# -- per-image parameters, from the clean output -----------------------------------------------
def seg_classes(out: dict, key: str = "out") -> torch.Tensor:
    """A class per image whose default (arg-max) mask is not empty, different classes per image
    where the images have several."""
    pred = out[key].argmax(1)
    chosen = []
    for i in range(pred.shape[0]):
        present = pred[i].unique()
        chosen.append(int(present[i % len(present)]))
    return torch.tensor(chosen)


def seg_masks(out: dict) -> torch.Tensor:
    """A different explicit mask per image: the left half of image 0, the top-left quadrant of
    image 1 (bool, at the output's size)."""
    h, w = out["out"].shape[2:]
    mask = torch.zeros(2, h, w, dtype=torch.bool)
    mask[0, :, : w // 2] = True
    mask[1, : h // 2, : w // 2] = True
    return mask


def boxes_of(out: list, picks: list[list[int]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The predicted boxes ``picks[i]`` of image i and their labels."""
    return ([out[i]["boxes"][p] for i, p in enumerate(picks)],
            [out[i]["labels"][p] for i, p in enumerate(picks)])


def detection(out: list) -> T.Target:
    boxes, labels = boxes_of(out, [[0], [1, 2]])  # one box in image 0, two in image 1
    return T.Detection(boxes, labels)


def detection_any_label(out: list) -> T.Target:
    boxes, _ = boxes_of(out, [[1, 3], [0]])
    return T.Detection(boxes, iou=0.5)


def detection_multi(out: list) -> list[T.Target]:
    first, first_labels = boxes_of(out, [[0], [0]])
    second, _ = boxes_of(out, [[2], [1]])
    return [T.Detection(first, first_labels), T.Detection(second)]


REGRESSION_INDEX = 1 * 16 * 16 + 5 * 16 + 7  # fcn: class 1's logit at pixel (5, 7)


@dataclasses.dataclass(frozen=True)
class Case:
    """One target on one family. ``make(clean output)`` builds the target; ``layer`` is the CAM
    layer of the method matrix (None: the default), ``channel`` the layer a Channel target
    reads (and its channel)."""

    family: str
    kind: str
    make: Callable[[Any], Any]
    layer: str | None = None
    channel: tuple[str, int] | None = None

    @property
    def id(self) -> str:
        return f"{self.family}-{self.kind}"


def _channel(fam: str, layer: str, c: int, cam_layer: str | None = None) -> Case:
    return Case(fam, "channel", lambda out: T.Channel(layer, c), cam_layer, (layer, c))


CASES = [
    # Per family: one single target (run in chunks of one image), a list of the family's other
    # targets (a K axis: each column is checked against autograd), a Channel target.
    # Segmentation: default (arg-max) masks; explicit per-image masks, the aux head, a pixel's
    # logit, the "out" field explicitly; a channel of the backbone.
    Case("fcn", "segmentation", lambda out: T.Segmentation(seg_classes(out))),
    Case("fcn", "multi", lambda out: [
        T.Segmentation(torch.tensor([2, 1]), mask=seg_masks(out)),
        T.Output("aux", T.Segmentation(seg_classes(out, "aux"))),
        T.Regression(REGRESSION_INDEX),
        T.Output("out", T.Segmentation(seg_classes(out)))]),
    _channel("fcn", "backbone.layer1", 5, cam_layer="backbone.conv1"),
    Case("deeplab", "segmentation", lambda out: T.Segmentation(seg_classes(out))),
    Case("deeplab", "multi", lambda out: [
        T.Segmentation([1, 0], mask=seg_masks(out)[0]),  # one (H, W) mask for both images
        T.Output("aux", T.Segmentation(seg_classes(out, "aux")))]),
    # Detection: boxes of the detector's own clean predictions, per image (n_i = 1 and 2), with
    # and without labels. CAMs read a backbone layer (the default layer is the proposal
    # network's, which no box score depends on: see test_detector_cam_layers).
    Case("faster_rcnn", "detection", detection, layer="backbone.body.1"),
    Case("faster_rcnn", "multi", detection_multi, layer="backbone.body.1"),
    # Classification on an ImageClassifierOutput: classes per image, the predicted class's
    # probability, the logits field explicitly, the top 2 classes, one logit as a regression,
    # a channel of a token layer, functions of the output (a score; class indices), several.
    Case("hf_vit", "class", lambda out: T.Class([1, 3])),
    Case("hf_vit", "predicted_softmax", lambda out: T.Class(None, score="softmax")),
    Case("hf_vit", "logits_field", lambda out: T.Output("logits", T.Class([4, 0], "log_softmax"))),
    Case("hf_vit", "topk", lambda out: T.TopK(2)),
    Case("hf_vit", "regression", lambda out: T.Regression(2)),
    _channel("hf_vit", "vit.layers.1.mlp.fc1", 7),
    Case("hf_vit", "score_function", lambda out: lambda o: o.logits[:, 0] - o.logits[:, 1]),
    Case("hf_vit", "class_function", lambda out: lambda o: o.logits.argmin(1)),
    Case("hf_vit", "multi", lambda out: [T.Class(1), T.Output("logits", T.Regression(0))]),
    # Embeddings: similarity to the other image's embedding; to one reference for both images
    # and to another, one coordinate; a channel. Score-CAM's masked passes are one per channel:
    # layer1 has 64 (layer2, the default at 16 px, 128).
    Case("embedding", "similarity", lambda out: T.Similarity(out.flip(0)), layer="layer1"),
    Case("embedding", "multi", lambda out: [T.Similarity(out.mean(0)), T.Similarity(out[1]),
                                            T.Regression(10)], layer="layer1"),
    _channel("embedding", "layer3", 3, cam_layer="layer1"),
]
CASE = {c.id: c for c in CASES}
SLOW_FAMILIES = {"fcn", "faster_rcnn"}


def _marks(case: Case) -> list:
    return [pytest.mark.slow] if case.family in SLOW_FAMILIES else []


def target_of(family: Callable[..., Built], case: Case,
              dtype: torch.dtype = torch.float64) -> Any:
    _, _, out = family(case.family, dtype)
    return case.make(out)


def k_of(target: Any) -> int | None:
    return T.as_target(target).k


# -- hand computations ---------------------------------------------------------------------------
def layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of module ``layer`` in a plain forward pass (a hook removed at once)."""
    box = []
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda m, i, o: box.append(o))
    try:
        model(x)
    finally:
        handle.remove()
    return box[0]


def hand_scores(case: Case, model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
    """The target's scores of ``x``, bound to the clean output here (not by netlens), or for a
    Channel target the channel's mean over its positions, by hand from the layer's output."""
    if case.channel is not None:
        layer, c = case.channel
        a = layer_output(model, layer, x)
        if a.dim() == 3:  # ViT tokens (B, 1 + h*w, D): the patch tokens, without the class token
            return a[:, 1:, c].mean(1)
        return a[:, c].mean((1, 2))
    t = T.as_target(target)
    with torch.no_grad():
        bound = t.bind(model(x))
    return bound(model(x))


def hand_gradient(case: Case, model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
    """``torch.autograd.grad`` of each image's score(s): (B, C, H, W), or (B, K, C, H, W)."""
    xg = x.clone().requires_grad_(True)
    scores = hand_scores(case, model, xg, target)
    if scores.dim() == 1:
        g, = torch.autograd.grad(scores.sum(), xg)
        return g
    grads = [torch.autograd.grad(scores[:, j].sum(), xg, retain_graph=True)[0]
             for j in range(scores.shape[1])]
    return torch.stack(grads, 1)


# -- 1. saliency is autograd of the target's score -----------------------------------------------
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=_marks(c)) for c in CASES])
def test_saliency_equals_autograd_of_the_target_score(case, untouched, family):
    model, x, _ = family(case.family)
    target = target_of(family, case)
    want = hand_gradient(case, model, x, target)
    assert want.abs().sum() > 0, "the hand-computed score does not depend on the input"
    k = k_of(target)
    with untouched(model):  # one image per pass for single targets (the chunks take their
        # per-image parameters), both images in one pass for several (one batched backward)
        got = nl.attribution.saliency(model, x, target, batch_size=1 if k is None else None)
    assert got.shape == ((2, 3, *x.shape[2:]) if k is None else (2, k, 3, *x.shape[2:]))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12 * want.abs().max().item())


def test_per_image_parameters_are_per_image(family):
    """A per-image target on image 1 alone is the target of image 1 in the batch: the chunks
    take each image's classes, masks, boxes and references."""
    for case in (CASE["fcn-multi"], CASE["faster_rcnn-detection"],
                 CASE["embedding-similarity"]):  # masks and classes, boxes, references
        model, x, _ = family(case.family)
        target = T.as_target(target_of(family, case))
        both = nl.attribution.saliency(model, x, target)
        alone = nl.attribution.saliency(model, x[1:], target.take(slice(1, 2)))
        torch.testing.assert_close(both[1:], alone, rtol=1e-9, atol=1e-14, msg=case.id)
        assert (both[0] - both[1]).abs().max() > 1e-3 * both.abs().max(), case.id


# -- 2. every method with every target, batched, model untouched ---------------------------------
def options(method: str, case: Case, x: torch.Tensor, **extra: Any) -> dict[str, Any]:
    """The method's cheap options, a generator where it takes one, the case's CAM layer, and
    windows of half the image (4 windows) where it takes windows (occlusion)."""
    spec = METHODS[method]
    opts = dict(spec.cheap)
    if "generator" in spec.parameters:
        opts["generator"] = torch.Generator().manual_seed(0)
    if spec.layer and case.layer is not None:
        opts["layer"] = case.layer
    opts.update(spec.options_for({"window": x.shape[2] // 2, "stride": x.shape[2] // 2}))
    opts.update(spec.options_for(extra))  # (XRAI passes batch_size to its inner method)
    return opts


def run(method: str, model: nn.Module, x: torch.Tensor, target: Any, opts: dict) -> torch.Tensor:
    """The method; a model without ReLU calls (the ViT: GELU) must warn for the guided ones."""
    if METHODS[method].rules and not nl.FlatModel(model).relu_names:
        # (DeepLift's rules cover more than ReLUs: it names the layers it has no rule for)
        with pytest.warns(NetlensWarning, match="no ReLU-family call|has no rule for"):
            return METHODS[method](model, x, target, **opts)
    return METHODS[method](model, x, target, **opts)


# Named on purpose: one method per loop over chunks: input gradients, noisy or path points, a
# CAM layer's maps with and without gradients, Score-CAM's masked images, occluded images.
CHUNKED = {"saliency", "smooth_grad", "gradcam", "eigencam", "scorecam", "occlusion"}
MATRIX = [pytest.param(m, c, id=f"{m}-{c.id}", marks=_marks(c)) for c in CASES for m in METHODS]


def test_the_named_methods_are_registry_methods():
    """The hand-picked representatives above still name methods (a renamed method would
    silently drop out of them)."""
    assert CHUNKED | set(MIDWAY_METHODS) | set(BAD_METHODS) <= set(METHODS)
    assert {METHODS[m].family for m in CHUNKED} == {"gradient", "cam", "perturbation"}


def test_the_cases_cover_every_target_kind(family):
    def kinds(target: Any) -> set[str]:
        t = T.as_target(target)
        if isinstance(t, T.Multi):
            return set().union(*(kinds(p) for p in t.targets))
        if isinstance(t, T.Output):
            return {f"Output({t.field!r}, {type(t.target).__name__})"}
        return {type(t).__name__}

    everything = set().union(*(kinds(target_of(family, c)) for c in CASES))
    assert everything == {
        "Class", "Score", "Segmentation", "Detection", "Similarity", "Regression", "Channel",
        "TopK", "Output('aux', Segmentation)", "Output('out', Segmentation)",
        "Output('logits', Class)", "Output('logits', Regression)"}
    assert {c.family for c in CASES} == set(FAMILIES)


@pytest.mark.parametrize("method, case", MATRIX)
def test_every_method_runs_with_every_target(method, case, untouched, family):
    model, x, _ = family(case.family, F32)
    target = target_of(family, case, F32)
    k = k_of(target)
    # Single targets one image per pass (the chunks take per-image parameters) in one method of
    # each chunk loop, several targets with both images in one pass.
    chunked = k is None and method in CHUNKED
    opts = options(method, case, x, **({"batch_size": 1} if chunked else {}))
    if METHODS[method].restricted:
        # a method for classifiers (CAM, Finer-CAM) or for convolutional layers only
        # (excitation backprop) refuses the others, saying what it needs and what to use
        with untouched(model), warnings.catch_warnings():
            warnings.simplefilter("ignore", NetlensWarning)
            try:
                out = METHODS[method](model, x, target, **opts)
            except ValueError as e:
                assert re.search(r"use gradcam|explain a model made of those|has no rule",
                                 str(e)), str(e)
                return
    else:
        with untouched(model):
            out = run(method, model, x, target, opts)
    channels = 3 if METHODS[method].output == "input" else 1
    lead = (2,) if k is None else (2, k)
    assert out.shape == (*lead, channels, *x.shape[2:]) and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    if METHODS[method].family == "gradient" and not METHODS[method].rules:
        assert out.abs().flatten(len(lead)).sum(-1).min() > 0, "an attribution is all zero"


# -- 3. the model is untouched after an exception midway -----------------------------------------
class Failure(RuntimeError):
    """The injected failure."""


# Every method on the cheap families; on the others, named on purpose, one method of each way of
# running passes: input gradients under backward rules, noisy points after a clean binding
# pass, a CAM layer's interception, masked passes, occluded passes.
MIDWAY_METHODS = ("guided_backprop", "smooth_grad", "gradcam", "scorecam", "occlusion")
MIDWAY = [pytest.param(n, m, id=f"{n}-{m}", marks=[pytest.mark.slow] if n in SLOW_FAMILIES
                       else [])
          for n in FAMILIES for m in METHODS
          if (n in ("hf_vit", "embedding") or m in MIDWAY_METHODS)
          and not (n == "hf_vit" and not METHODS[m].attention)]  # refused before any pass


@pytest.mark.parametrize("name, method", MIDWAY)
def test_model_untouched_after_a_failure_midway(name, method, family):
    """The model's last module raises in the second forward pass (one image per pass): inside
    the method, with its hooks, rules and interceptions in place."""
    model, x, out = family(name, F32)
    case = next(c for c in CASES if c.family == name)
    target = case.make(out)
    nl.FlatModel(model).ensure_traced(x)  # the trace (cached) is not one of the counted passes
    before = model_state(model)
    calls = []

    def fail(module, args, output):
        calls.append(1)
        if len(calls) == 2:
            raise Failure("injected failure in the second pass")

    handle = dict(model.named_modules())[FAMILIES[name].last].register_forward_hook(fail)
    try:
        with pytest.raises(Failure), warnings.catch_warnings():
            warnings.simplefilter("ignore", NetlensWarning)
            METHODS[method](model, x, target, **options(method, case, x, batch_size=1))
    finally:
        handle.remove()
    assert len(calls) == 2
    assert_untouched(model, before)


@pytest.mark.parametrize("method", list(METHODS))
def test_model_untouched_after_an_invalid_option(method, family):
    model, x, out = family("hf_vit", F32)
    before = model_state(model)
    # a method refused on this model (attention, a class comparison) says that instead
    bad = "batch_size must be (a positive int|an int >= 1)"
    expected = f"{bad}|has no rule|use gradcam" if METHODS[method].restricted else bad
    if "batch_size" in METHODS[method].parameters:  # (XRAI passes its options on instead)
        with pytest.raises(ValueError, match=expected), warnings.catch_warnings():
            warnings.simplefilter("ignore", NetlensWarning)
            METHODS[method](model, x, T.Class([1, 2]), batch_size=0)
    if METHODS[method].layer:
        unknown = "no layer named 'vit.layer.1'.*did you mean"
        with pytest.raises(ValueError, match=f"{unknown}|use gradcam" if METHODS[method].restricted
                           else unknown):
            METHODS[method](model, x, 1, layer="vit.layer.1")
    assert_untouched(model, before)


# -- 4. bad targets: the output's shape or fields, and the fix -----------------------------------
BAD = [
    ("fcn", lambda out: T.Class(1), ValueError,
     r"Class needs an output of shape \(B, classes\).*OrderedDict with fields 'out': "
     r"tensor\(\d, 3, 16, 16\), 'aux'.*Segmentation\(c\)"),
    ("fcn", lambda out: T.TopK(2), ValueError,
     r"TopK needs an output of shape \(B, classes\).*'out': tensor\(2, 3, 16, 16\)"),
    ("fcn", lambda out: T.Output("logits"), ValueError,
     r"no field 'logits': it is OrderedDict with fields 'out': tensor\(2, 3, 16, 16\)"),
    ("fcn", lambda out: T.Segmentation(1, mask=torch.ones(8, 8)), ValueError,
     r"mask has shape \(1, 8, 8\) but the output is \(2, 3, 16, 16\).*\(16, 16\).*resize"),
    ("deeplab", lambda out: T.Segmentation(7), ValueError,
     r"segmentation class 7 is out of range: the output \(2, 3, 32, 32\) has 3 classes"),
    ("deeplab", lambda out: T.Detection(torch.tensor([[0.0, 0, 8, 8]] * 2)), ValueError,
     r"Detection needs a torchvision detection output.*OrderedDict with fields 'out'"),
    ("hf_vit", lambda out: T.Segmentation(1), ValueError,
     r"Segmentation needs an output of shape \(B, classes, H, W\).*ImageClassifierOutput with "
     r"fields 'logits': tensor\(2, 5\).*Class\(c\)"),
    ("hf_vit", lambda out: T.Class(7), ValueError, "target 7 is out of range: the model has 5"),
    ("hf_vit", lambda out: T.Regression(), ValueError,
     r"one output per image.*ImageClassifierOutput.*Regression\(index\)"),
    ("hf_vit", lambda out: T.Channel("vit.layers.1.mlp.fc1", 99), ValueError,
     "channel 99 is out of range: layer 'vit.layers.1.mlp.fc1' has 64 channels"),
    ("embedding", lambda out: T.Segmentation(0), ValueError,
     r"\(B, classes, H, W\).*a tensor of shape \(2, 512\).*Class\(c\)"),
    ("embedding", lambda out: T.Similarity(torch.ones(100)), ValueError,
     r"\(B, 100\) embeddings.*a tensor of shape \(2, 512\).*reference of its size"),
    ("faster_rcnn", lambda out: T.Class(1), TypeError,
     r"list with fields \[0\]: dict.* with keys \['boxes', 'labels', 'scores'\]"
     r".*Detection\(boxes, labels\)"),
    ("faster_rcnn", lambda out: T.Detection([out[0]["boxes"][:1]] * 3), ValueError,
     "got 3 boxes entries for a batch of 2 images; pass one for all, or one per image"),
    ("faster_rcnn", lambda out: T.Detection(boxes_of(out, [[0], [0]])[0],
                                            labels=[torch.tensor([1]), torch.tensor([1, 2])]),
     ValueError, r"labels do not fit the boxes: 2 images of boxes \[1, 1\].*\[1, 2\]"),
    ("faster_rcnn", lambda out: T.Detection(torch.tensor([[0.0, 0, 1, 1]] * 2)), ValueError,
     r"box \[0.0, 0.0, 1.0, 1.0\] of image 0 matches no predicted box.*box_score_thresh"),
]
# Named on purpose: targets are bound in the pass (saliency, CAMs, occlusion: per chunk) or
# before the passes (integrated gradients, SmoothGrad: explicit classes from one image's
# output); the heavier families go through one method of each.
BAD_METHODS = ["saliency", "integrated_gradients", "gradcam", "occlusion"]


@pytest.mark.parametrize("name, make, error, message, method", [
    pytest.param(*b, m, id=f"{b[0]}-{i}-{m}",
                 marks=[pytest.mark.slow] if b[0] in SLOW_FAMILIES else [])
    for i, b in enumerate(BAD) for m in BAD_METHODS
    if b[0] in ("hf_vit", "embedding") or m in ("saliency", "integrated_gradients")])
def test_bad_targets_name_the_output_and_the_fix(name, make, error, message, method, untouched,
                                                 family):
    model, x, out = family(name, F32)
    opts = options(method, Case(name, "bad", make), x)
    with untouched(model), pytest.raises(error, match=message):
        METHODS[method](model, x, make(out), **opts)


# -- 5. CAM layers on these families ------------------------------------------------------------
@pytest.mark.parametrize("name", ["fcn", "deeplab"])
def test_segmentation_cams_default_to_the_main_head(name, untouched, family):
    """torchvision segmentation models run ``aux_classifier`` after ``classifier``; the main
    output does not depend on it, so it is not the default CAM layer (its CAM was blank)."""
    model, x, out = family(name)
    fm = nl.FlatModel(model)
    fm.ensure_traced(x)
    assert fm.last_spatial_layer() == "classifier"
    target = T.Segmentation(seg_classes(out))
    with untouched(model):
        default = nl.attribution.gradcam(model, x, target)
        explicit = nl.attribution.gradcam(model, x, target, layer="classifier")
        assert torch.equal(default, explicit) and (default.flatten(1).sum(1) > 0).all()
        aux = T.Output("aux", T.Segmentation(seg_classes(out, "aux")))
        with pytest.raises(ValueError, match="does not depend on layer 'classifier'.*layer="):
            nl.attribution.gradcam(model, x, aux)
        cam = nl.attribution.gradcam(model, x, aux, layer="aux_classifier")
        assert (cam.flatten(1).sum(1) > 0).all()


@pytest.mark.slow
def test_detector_cam_layers(untouched, family):
    """The RoI features ``(rois, 256, 7, 7)`` are not per-image maps: never the default, and an
    error naming the fix when asked for; the default (a proposal-network layer) is one no box
    score depends on, which gradient CAMs say instead of returning a blank map."""
    model, x, out = family("faster_rcnn")
    fm = nl.FlatModel(model)
    fm.ensure_traced(x)
    default = fm.last_spatial_layer()
    assert fm.layer_info(default).shape[0] == 2 and default.startswith("rpn.")
    target = detection(out)
    with untouched(model):
        with pytest.raises(ValueError, match=r"does not depend on layer 'rpn\..*layer="):
            nl.attribution.gradcam(model, x, target)
        with pytest.raises(ValueError, match=r"returned \d+ maps .* for 2 image\(s\): its first "
                                             r"axis is not the batch.*layer="):
            nl.attribution.gradcam(model, x, target, layer="roi_heads.box_roi_pool")
        cam = nl.attribution.gradcam(model, x, target, layer="backbone.fpn.layer_blocks.0")
        assert cam.shape == (2, 1, 64, 64) and torch.isfinite(cam).all()
        eigen = nl.attribution.eigencam(model, x, target)  # gradient-free: any per-image map
        assert eigen.shape == (2, 1, 64, 64)


def test_vit_cam_layer_and_attention_implementations(untouched, family):
    """The default CAM layer of the HF ViT is the token layer before its last attention (patch
    tokens still reach the class token there); SDPA and eager attention give the same
    saliency and Grad-CAM (hooks and layouts work with both)."""
    model, x, _ = family("hf_vit")
    assert model.config._attn_implementation == "sdpa"
    # Without an example input, the layers are found with the config's image size (32), not 224.
    assert "vit.layers.1.mlp.fc1" in nl.FlatModel(model).layer_names
    fm = nl.FlatModel(model)
    fm.ensure_traced(x)
    from netlens.attribution.cam import _default_layer

    layer = _default_layer(fm)
    assert layer == "vit.layers.1.layernorm_before"
    assert fm.layout(layer).kind == "tokens" and fm.layout(layer).extra == 1
    torch.manual_seed(0)
    eager = _hf_vit("eager").double().eval()  # the same weights, eager attention
    assert eager.config._attn_implementation == "eager"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 eager.state_dict().values()))
    results = []
    for m in (model, eager):
        with untouched(m):
            results.append((nl.attribution.saliency(m, x, [1, 3]),
                            nl.attribution.gradcam(m, x, [1, 3])))
    (sal, cam), (eager_sal, eager_cam) = results
    assert (cam.flatten(1).sum(1) > 0).all()
    # HF's eager attention takes its softmax in float32: agreement to float32 precision.
    torch.testing.assert_close(eager_sal, sal, rtol=1e-5, atol=1e-6 * sal.abs().max().item())
    torch.testing.assert_close(eager_cam, cam, rtol=1e-5, atol=1e-6 * cam.abs().max().item())


def test_channel_target_before_the_cam_layer_names_the_fix(untouched, family):
    """At 16 px, ResNet-18's layer3 and layer4 are 1 x 1: the default CAM layer is layer2,
    which a Channel target of layer1 never reaches (its forward pass stops after layer1)."""
    model, x, _ = family("embedding", F32)
    with untouched(model), pytest.raises(ValueError, match="did not reach layer 'layer2'.*"
                                                          "reads layer 'layer1'.*earlier"):
        nl.attribution.gradcam(model, x, T.Channel("layer1", 3))


@pytest.mark.slow
def test_detector_resizing_its_input(untouched, family):
    """A 48 x 40 image, which the detector's transform resizes to 64 px inside: its boxes are
    in input pixels, and saliency is still autograd of the box scores, at the input's size."""
    model, _, _ = family("faster_rcnn")
    x = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(2),
                   dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
    boxes = torch.cat([o["boxes"] for o in out])
    assert boxes[:, 2].max() <= 40 and boxes[:, 3].max() <= 48
    target = detection(out)
    case = Case("faster_rcnn", "resized", detection)
    want = hand_gradient(case, model, x, target)
    with untouched(model):
        got = nl.attribution.saliency(model, x, target, batch_size=1)
        cam = nl.attribution.gradcam(model, x, target, layer="backbone.body.1")
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12 * want.abs().max().item())
    assert cam.shape == (2, 1, 48, 40) and torch.isfinite(cam).all()
