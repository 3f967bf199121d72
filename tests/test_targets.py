"""nl.targets: each built-in target against a hand computation, unwrapping, binding, chunking,
several targets per image, and the errors that name the output and the fix."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from torch import nn

import netlens as nl
from netlens import targets as T
from netlens.attribution import METHODS


# -- unwrapping ---------------------------------------------------------------------------------
class _HFOutput:  # the shape of a HuggingFace ModelOutput: attributes, one of them .logits
    def __init__(self, logits: torch.Tensor) -> None:
        self.loss = None
        self.logits = logits


def test_unwrap_every_output_form():
    t = torch.arange(6.0).view(2, 3)
    assert T.unwrap(t) is t
    assert T.unwrap((t, torch.zeros(1))) is t
    assert T.unwrap(["x", t]) is t
    assert T.unwrap({"aux": torch.zeros(2, 3), "logits": t}) is t
    assert T.unwrap({"aux": torch.zeros(2, 3), "out": t}) is t
    assert T.unwrap({"only": t, "name": "x"}) is t
    assert T.unwrap(_HFOutput(t)) is t
    with pytest.raises(TypeError, match=r"'a': tensor\(2, 3\), 'b': tensor\(2, 3\).*Output\("):
        T.unwrap({"a": t, "b": t})


def test_output_picks_a_field():
    out = {"a": torch.tensor([[0.0, 5.0]]), "b": torch.tensor([[3.0, 1.0]])}
    assert T.Output("b").bind(out)(out).tolist() == [3.0]
    assert T.Output("a", 0).bind(out)(out).tolist() == [0.0]
    with pytest.raises(ValueError, match=r"no field 'c'.*'a': tensor\(1, 2\)"):
        T.Output("c").bind(out)


# -- classes --------------------------------------------------------------------------------
def test_class_scores_by_hand():
    out = torch.tensor([[1.0, 3.0, 0.0], [4.0, 2.0, 2.0]])
    assert T.Class(None).bind(out)(out).tolist() == [3.0, 4.0]
    assert T.Class(None).bind(out).classes.tolist() == [1, 0]
    assert T.Class([2, 1]).bind(out)(out).tolist() == [0.0, 2.0]
    p = torch.softmax(out, 1)
    torch.testing.assert_close(T.Class(0, "softmax").bind(out)(out), p[:, 0])
    torch.testing.assert_close(T.Class(0, "log_softmax").bind(out)(out), p[:, 0].log())


def test_old_target_forms_become_class_targets():
    out = torch.tensor([[1.0, 3.0, 0.0], [4.0, 2.0, 2.0]])
    for form, want in [(2, [2, 2]), ([0, 1], [0, 1]), (torch.tensor([1, 2]), [1, 2]),
                       (None, [1, 0]), (lambda o: o.argmin(1), [2, 1])]:
        bound = T.as_target(form, 2).bind(out)
        assert isinstance(bound, T.Class) and bound.classes.tolist() == want
    with pytest.raises(ValueError, match="target 5 is out of range: the model has 3 outputs"):
        T.as_target(5).bind(out)
    with pytest.raises(ValueError, match="got 3 targets for a batch of 2 images"):
        T.as_target([0, 1, 2], 2)
    with pytest.raises(TypeError, match="not a bool"):
        T.as_target(True)
    with pytest.raises(TypeError, match="integers"):
        T.as_target(torch.tensor([0.5, 1.0]))


def test_numpy_integers_are_ints():
    """Issue 13: ``labels[i]`` of a numpy array, numpy arrays and lists of numpy ints are class
    targets exactly as the equivalent ints, lists and tensors are."""
    out = torch.tensor([[1.0, 3.0, 0.0], [4.0, 2.0, 2.0]])
    for form, same in [(np.int64(2), 2), (np.array(2), 2), (np.array([0, 2]), [0, 2]),
                       (np.array([[1], [2]], dtype=np.int32), [1, 2]), (np.uint8(1), 1),
                       ([np.int64(2), np.int32(1)], [2, 1]), ((np.int16(1), 0), [1, 0])]:
        bound, want = T.as_target(form, 2).bind(out), T.as_target(same, 2).bind(out)
        assert isinstance(bound, T.Class) and torch.equal(bound.classes, want.classes), form
        assert torch.equal(bound(out), want(out)), form
        assert torch.equal(T.Class(form).bind(out).classes, want.classes), form
    assert T.Segmentation(np.array([1, 0])).c.tolist() == [1, 0]
    with pytest.raises(TypeError, match="integers, got dtype torch.float64"):
        T.as_target(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="got 3 targets for a batch of 2 images"):
        T.as_target(np.array([0, 1, 2]), 2)


def test_string_and_empty_targets_say_what_is_wrong():
    with pytest.raises(TypeError, match=r"target 'cat' is a string.*class index.*"
                                        r"labels.index\('cat'\).*Class.named"):
        T.as_target("cat")
    with pytest.raises(TypeError, match="target 'cat' is a string"):
        T.Class("cat")
    with pytest.raises(TypeError, match=r"\['cat', 'dog'\] are strings"):
        T.as_target(["cat", "dog"])
    for empty in ([], (), torch.tensor([]), np.array([], dtype=np.int64)):
        with pytest.raises(ValueError, match="the target list is empty.*one class index"):
            T.as_target(empty)


def test_class_named_looks_names_up():
    labels = nl.data.imagenet_classes()
    out = torch.zeros(2, 1000)
    assert T.Class.named("tabby", labels).bind(out).classes.tolist() == [281, 281]
    assert T.Class.named(["Tabby", "tiger cat"], labels).classes.tolist() == [281, 282]
    assert T.Class.named("square", nl.data.SHAPES_CLASSES, score="softmax").score_kind == \
        "softmax"
    with pytest.raises(ValueError, match=r"no class 'cat' in the 1000 labels.*'tiger cat'"):
        T.Class.named("cat", labels)


def test_class_targets_need_class_scores():
    """Issue 13: an integer class on an output that is not ``(B, classes)`` raises (it never
    indexes the flattened output); a ``(B,)`` output is one score per image, class 0."""
    dense = torch.arange(32.0).view(2, 4, 2, 2)
    for t in (T.Class(1), T.Class(None), T.Class([1, 0])):
        with pytest.raises(ValueError, match=r"shape \(2, 4, 2, 2\).*Segmentation\(c\)"):
            t(dense)
        with pytest.raises(ValueError, match=r"shape \(2, 4, 2, 2\).*Segmentation\(c\)"):
            t.bind(dense)
    tokens = torch.arange(24.0).view(2, 3, 4)  # (B, N, K): which axis holds the classes?
    for t in (T.Class(1), T.Class(None), T.TopK(2)):
        with pytest.raises(ValueError, match=r"shape \(2, 3, 4\).*Score\("):
            t.bind(tokens)
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\).*Score\("):
        T.Class(1)(tokens)
    # singleton trailing axes are no ambiguity: (B, K, 1, 1) is (B, K)
    squeezed = torch.tensor([[1.0, 3.0, 0.0], [4.0, 2.0, 2.0]])
    assert T.Class(None).bind(squeezed[..., None, None])(squeezed[..., None, None]).tolist() \
        == [3.0, 4.0]
    per_image = torch.tensor([0.5, -2.0])
    assert T.Class(None).bind(per_image)(per_image).tolist() == [0.5, -2.0]
    assert T.Class(0).bind(per_image)(per_image).tolist() == [0.5, -2.0]
    with pytest.raises(ValueError, match="target 1 is out of range: the model has 1 output"):
        T.Class(1).bind(per_image)
    assert T.Regression().bind(per_image)(per_image).tolist() == [0.5, -2.0]
    for one in (per_image, per_image[:, None]):
        with pytest.raises(ValueError, match="score='softmax' of a model with one output"):
            T.Class(None, score="softmax").bind(one)


def test_a_scalar_output_is_not_one_score_per_image():
    scalar = torch.tensor(3.0)
    for t in (T.Class(None), T.Class(0), T.Regression(), T.Score(lambda o: o), T.TopK(1)):
        with pytest.raises(ValueError, match=r"shape \(\).*one score per image"):
            t.bind(scalar)


def test_scores_that_are_not_finite_raise():
    out = torch.tensor([[1.0, float("inf")], [float("nan"), 2.0]])
    with pytest.raises(ValueError, match=r"not finite \(inf/nan\)"):
        T.Class(1).bind(out)(out)
    with pytest.raises(ValueError, match=r"not finite \(inf/nan\)"):
        T.Class(None).bind(out)
    with pytest.raises(ValueError, match=r"not finite \(inf/nan\)"):
        T.Score(lambda o: o[:, 0]).bind(out)(out)
    assert T.Class(0).bind(out[:1])(out[:1]).tolist() == [1.0]  # the explained score is finite


def test_a_float_function_is_a_score():
    out = torch.tensor([[1.0, 3.0], [4.0, 2.0]], requires_grad=True)
    bound = T.as_target(lambda o: o[:, 0] * o[:, 1]).bind(out)
    s = bound(out)
    assert s.tolist() == [3.0, 8.0] and s.requires_grad
    with pytest.raises(ValueError, match=r"one score per image, shape \(2,\)"):
        T.as_target(lambda o: o.sum()).bind(out)


def test_topk_and_multi_by_hand():
    out = torch.tensor([[1.0, 3.0, 0.0, 2.0]])
    top = T.TopK(3).bind(out)
    assert top.k == 3 and top.classes.tolist() == [[1, 3, 0]]
    assert top(out).tolist() == [[3.0, 2.0, 1.0]]
    multi = T.as_target([T.Class(2), T.Class(None), T.Regression(3)]).bind(out)
    assert isinstance(multi, T.Multi) and multi.k == 3
    assert multi(out).tolist() == [[0.0, 3.0, 2.0]]
    with pytest.raises(ValueError, match="more classes than the model's 4 outputs"):
        T.TopK(5).bind(out)


def test_take_and_cat_keep_per_image_data():
    out = torch.randn(5, 3)
    t = T.Class([0, 1, 2, 1, 0])
    parts = [t.take(slice(0, 2)).bind(out[:2]), t.take(slice(2, 5)).bind(out[2:])]
    joined = T.Target.cat(parts)
    assert joined.classes.tolist() == [0, 1, 2, 1, 0]
    assert t.take(torch.tensor([4, 2])).classes.tolist() == [0, 2]
    seg = T.Segmentation([1, 0, 1], mask=torch.ones(3, 2, 2))
    assert seg.take(torch.tensor([2])).c.tolist() == [1]


# -- dense and structured outputs --------------------------------------------------------------
def test_segmentation_by_hand():
    logits = torch.zeros(2, 3, 2, 2)
    logits[0, 1] = torch.tensor([[5.0, 0.0], [1.0, 2.0]])
    logits[1, 2] = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    out = {"out": logits, "aux": torch.zeros(2, 3, 2, 2)}
    # Default mask: the pixels whose arg-max is the class. Image 0, class 1: 5 + 1 + 2 (its
    # (0, 1) pixel is a tie at 0, whose arg-max is class 0).
    assert T.Segmentation(1).bind(out)(out).tolist() == [8.0, 0.0]
    assert T.Segmentation([1, 2]).bind(out)(out).tolist() == [8.0, 5.0]
    mask = torch.tensor([[True, False], [False, False]])
    assert T.Segmentation(1, mask=mask).bind(out)(out).tolist() == [5.0, 0.0]
    soft = torch.tensor([[[0.5, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    assert T.Segmentation(1, mask=soft).bind(out)(out).tolist() == [2.5, 0.0]


def test_segmentation_errors_name_the_output_and_the_fix():
    dense = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\(B, classes, H, W\).*shape \(1, 10\).*Class"):
        T.Segmentation(1).bind(torch.zeros(1, 10))
    with pytest.raises(ValueError, match=r"mask has shape \(1, 3, 3\).*\(1, 3, 4, 4\).*\(4, 4\)"):
        T.Segmentation(1, mask=torch.ones(3, 3)).bind(dense)
    with pytest.raises(ValueError, match="class 7 is out of range.*3 classes"):
        T.Segmentation(7).bind(dense)
    with pytest.raises(ValueError, match=r"\(B, classes\).*Segmentation"):
        T.Class(1).bind(dense)


def _detections(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict:
    return {"boxes": torch.tensor(boxes), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


def test_detection_by_hand():
    out = [_detections([[0, 0, 10, 10], [0, 0, 9, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.7],
                       [1, 2, 1]),
           _detections([[5, 5, 15, 15]], [0.6], [3])]
    # Image 0: the box overlaps predictions 0 (IoU 1.0, label 1) and 1 (IoU 0.9, label 2).
    t = T.Detection([torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 5, 15, 15]])])
    assert t.bind(out)(out).tolist() == pytest.approx([0.9, 0.6])
    by_label = T.Detection([torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 5, 15, 15]])],
                           labels=[torch.tensor([2]), torch.tensor([3])])
    assert by_label.bind(out)(out).tolist() == pytest.approx([0.8, 0.6])
    two = T.Detection([torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]),
                       torch.tensor([[5.0, 5, 15, 15]])])
    assert two.bind(out)(out).tolist() == pytest.approx([0.9 + 0.7, 0.6])
    # A perturbed image whose match is gone scores 0; the clean output must match.
    assert t(out[:1] + [_detections([[50, 50, 60, 60]], [0.5], [3])]).tolist()[1] == 0.0
    with pytest.raises(ValueError, match=r"matches no predicted box with label 1.*IoU >= 0.5"):
        T.Detection(torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15]]),
                    labels=torch.tensor([1, 1])).bind(out)
    with pytest.raises(ValueError, match=r"boxes for 3 images.*2 images"):
        T.Detection([torch.zeros(1, 4)] * 3).bind(out)
    with pytest.raises(ValueError, match=r"\(B, 4\) tensor"):
        T.Detection(torch.zeros(2, 5))


def test_detection_yolo_tensor_by_hand():
    # (B, N, 4 + K): boxes then class scores.
    out = torch.tensor([[[0.0, 0, 10, 10, 0.2, 0.7], [0, 0, 4, 4, 0.9, 0.1]]])
    assert T.Detection(torch.tensor([[0.0, 0, 10, 10]]), labels=torch.tensor([1])).bind(out)(
        out).tolist() == pytest.approx([0.7])
    cxcywh = torch.tensor([[[5.0, 5, 10, 10, 0.2, 0.7]]])
    t = T.Detection(torch.tensor([[0.0, 0, 10, 10]]), box_format="cxcywh")
    assert t.bind(cxcywh)(cxcywh).tolist() == pytest.approx([0.7])
    with pytest.raises(ValueError, match=r"detection output.*tensor of shape \(1, 10\)"):
        t.bind(torch.zeros(1, 10))


def test_similarity_and_regression_by_hand():
    emb = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    ref = torch.tensor([1.0, 0.0])
    assert T.Similarity(ref).bind(emb)(emb).tolist() == pytest.approx([0.6, 0.0])
    per_image = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert T.Similarity(per_image).bind(emb)(emb).tolist() == pytest.approx([0.8, 1.0])
    with pytest.raises(ValueError, match=r"\(B, 3\) embeddings.*shape \(2, 2\)"):
        T.Similarity(torch.ones(3)).bind(emb)
    assert T.Regression()(torch.tensor([[2.5], [1.0]])).tolist() == [2.5, 1.0]
    assert T.Regression(1)(emb).tolist() == [4.0, 2.0]
    with pytest.raises(ValueError, match=r"Regression\(index\)"):
        T.Regression().bind(emb)


# -- targets through the methods -----------------------------------------------------------------
class _Dense(nn.Module):
    """A tiny segmentation-style model with a dict output and a (B, D) embedding head."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor):
        y = self.conv2(self.relu(self.conv1(x)))
        if self.kind == "seg":
            return collections.OrderedDict(out=y)
        return y.mean(dim=(2, 3))  # (B, 4) embedding


@pytest.mark.parametrize("kind", ["seg", "emb"])
def test_saliency_equals_autograd_of_the_target_score(kind):
    torch.manual_seed(0)
    model = _Dense(kind).double().eval()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    if kind == "seg":
        target = T.Segmentation([1, 2, 3])
    else:
        target = T.Similarity(torch.randn(3, 4, dtype=torch.float64))
    xg = x.clone().requires_grad_(True)
    with torch.no_grad():
        bound = target.bind(model(x))
    want, = torch.autograd.grad(bound(model(xg)).sum(), xg)
    got = nl.attribution.saliency(model, x, target, batch_size=2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_channel_target_is_the_layer_channel_gradient(every_relu_net):
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    via_target = nl.attribution.saliency(every_relu_net, x, T.Channel("conv3", 5))
    direct = nl.attribution.layer_channel_gradient(every_relu_net, x, layer="conv3", channel=5)
    assert torch.equal(via_target, direct)
    xg = x.clone().requires_grad_(True)
    fm = nl.FlatModel(every_relu_net)
    want, = torch.autograd.grad(fm(xg, until="conv3")[:, 5].mean((1, 2)).sum(), xg)
    torch.testing.assert_close(via_target, want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="channel 99 is out of range"):
        nl.attribution.saliency(every_relu_net, x, T.Channel("conv3", 99))


# stochastic methods whose random draws are made per target, so that K targets in one call
# draw differently from K calls (their K axis is tested against per-target draws in their own
# test files)
DRAWS_PER_TARGET = {"randomcam"}  # a random weight per (image, target, channel)


def test_topk_results_equal_separate_calls(every_relu_net):
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        top = every_relu_net(x).topk(3, dim=1).indices
    for name in METHODS:
        if name in DRAWS_PER_TARGET:
            continue  # its draws depend on the number of targets (checked in its own tests)
        spec = METHODS[name]

        def seeded(spec=spec) -> dict:  # a stochastic method: the same draws for each call
            return ({"generator": torch.Generator().manual_seed(5)} if spec.stochastic
                    else {})
        opts = dict(spec.cheap)
        many = spec(every_relu_net, x, T.TopK(3), **opts, **seeded())
        assert many.shape[:2] == (2, 3), name
        for j in range(3):
            one = spec(every_relu_net, x, top[:, j], **opts, **seeded())
            torch.testing.assert_close(many[:, j], one, rtol=1e-9, atol=1e-12, msg=name)


def test_smooth_grad_with_several_targets_uses_the_same_noise(every_relu_net):
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    many = nl.attribution.smooth_grad(every_relu_net, x, [T.Class(1), T.Class(4)], n=3,
                                      generator=torch.Generator().manual_seed(5))
    for j, c in enumerate((1, 4)):
        one = nl.attribution.smooth_grad(every_relu_net, x, c, n=3,
                                         generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(many[:, j], one, rtol=1e-9, atol=1e-12)


def test_integrated_gradients_delta_per_target(every_relu_net):
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    attr, delta = nl.attribution.integrated_gradients(every_relu_net, x, T.TopK(2), steps=8,
                                                      return_delta=True)
    assert attr.shape == (2, 2, 3, 16, 16) and delta.shape == (2, 2)
    for j in range(2):
        cls = T.TopK(2).bind(every_relu_net(x)).classes[:, j]
        _, one = nl.attribution.integrated_gradients(every_relu_net, x, cls, steps=8,
                                                     return_delta=True)
        torch.testing.assert_close(delta[:, j], one, rtol=1e-9, atol=1e-12)
