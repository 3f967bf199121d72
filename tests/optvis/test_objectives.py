"""Objectives: values from their definitions, the algebra, per-image objectives, errors."""

from __future__ import annotations

import pytest
import torch

from netlens.optvis import OptVis, RawParam
from netlens.optvis import objectives as obj
from netlens.optvis.objectives import Context

from helpers import assert_untouched, model_state, small_cnn


@pytest.fixture
def ctx():
    g = torch.Generator().manual_seed(0)
    acts = {"a": torch.randn(3, 5, 4, 6, generator=g, dtype=torch.float64),
            "v": torch.randn(3, 7, 1, 1, generator=g, dtype=torch.float64)}
    image = torch.rand(3, 3, 8, 9, generator=g, dtype=torch.float64)
    output = torch.randn(3, 10, generator=g, dtype=torch.float64)
    return Context(image, acts, output)


def test_activation_objectives_follow_their_definitions(ctx):
    a = ctx["a"]
    assert torch.equal(obj.channel("a", 2)(ctx), a[:, 2].mean())
    assert torch.equal(obj.channel("a", 2, batch=1)(ctx), a[1, 2].mean())
    assert torch.equal(obj.neuron("a", 4)(ctx), a[:, 4, 2, 3].mean())  # centre of 4x6
    assert torch.equal(obj.neuron("a", 4, 0, 5, batch=2)(ctx), a[2, 4, 0, 5])
    assert torch.equal(obj.layer("a")(ctx), a.mean())
    assert torch.equal(obj.layer("a", squared=True)(ctx), (a ** 2).mean())
    assert torch.equal(obj.class_logit(7)(ctx), ctx.output[:, 7].mean())
    v = torch.arange(5, dtype=torch.float64)
    expected = (a * v.view(1, 5, 1, 1)).sum(1).mean()
    assert torch.allclose(obj.direction("a", v)(ctx), expected, atol=1e-12)


def test_diversity_is_minus_the_mean_cosine_similarity_of_covariance_matrices(ctx):
    a = ctx["a"].flatten(2)
    a = a - a.mean(dim=2, keepdim=True)
    grams = [(f @ f.T).flatten() / f.shape[1] for f in a]
    eps = 1e-4 * torch.stack([g.dot(g) for g in grams]).mean()
    sims = [(grams[i].dot(grams[j]) + eps) / (grams[i].norm() * grams[j].norm() + eps)
            for i in range(3) for j in range(3) if i != j]
    assert torch.allclose(obj.diversity("a")(ctx), -torch.stack(sims).mean(), atol=1e-12)
    one = Context(ctx.image[:1], {"a": ctx["a"][:1]})
    assert float(obj.diversity("a")(one)) == 0.0
    # a blank image is not "more diverse": its similarity to the others is 1, not 0
    blank = ctx["a"].clone()
    blank[2] = 0
    with_blank = obj.diversity("a")(Context(ctx.image, {"a": blank}))
    pair = obj.diversity("a")(Context(ctx.image[:2], {"a": ctx["a"][:2]}))
    assert with_blank < pair


def test_priors_follow_their_definitions(ctx):
    im = ctx.image
    dx = im[..., :-1, 1:] - im[..., :-1, :-1]
    dy = im[..., 1:, :-1] - im[..., :-1, :-1]
    assert torch.allclose(obj.total_variation(2.0)(ctx), (dx ** 2 + dy ** 2 + 1e-8).mean())
    assert torch.allclose(obj.l1()(ctx), (im - 0.5).abs().mean())
    assert torch.allclose(obj.l2(0.25)(ctx), ((im - 0.25) ** 2).mean().sqrt())
    assert torch.allclose(obj.alpha_norm(6)(ctx), ((im - 0.5) ** 6).mean())
    target = ctx["a"] + 1
    assert torch.allclose(obj.match("a", target)(ctx), -(ctx["a"] - target).pow(2).sum()
                          / target.pow(2).sum())
    assert float(obj.match("a", ctx["a"])(ctx)) == 0.0


def test_the_algebra(ctx):
    a, b = obj.channel("a", 1), obj.neuron("v", 3)
    va, vb = a(ctx), b(ctx)
    assert torch.equal((a + b)(ctx), va + vb)
    assert torch.equal((a - b)(ctx), va - vb)
    assert torch.equal((-a)(ctx), -va)
    assert torch.allclose((2 * a - b / 4)(ctx), 2 * va - vb / 4)
    assert torch.allclose((a * 3)(ctx), 3 * va)
    assert torch.allclose((1 - a)(ctx), 1 - va)
    assert torch.equal(sum([a, b])(ctx), va + vb)  # sum() starts from 0
    combo = a - 1e-3 * obj.total_variation() + obj.class_logit(2)
    assert set(combo.layers) == {"a"} and combo.needs_output and not a.needs_output
    assert (a + b).layers == ("a", "v")
    assert repr(a - 2 * b) == "channel('a', 1) - 2 * neuron('v', 3)"


def test_one_objective_per_image(ctx):
    per_image = sum(obj.channel("a", c, batch=c) for c in range(3))
    a = ctx["a"]
    assert torch.allclose(per_image(ctx), a[0, 0].mean() + a[1, 1].mean() + a[2, 2].mean())
    grad_image = torch.zeros_like(a, requires_grad=True)
    value = per_image(Context(ctx.image, {"a": grad_image}))
    (g,) = torch.autograd.grad(value, grad_image)
    nz = (g != 0).nonzero()[:, :2].unique(dim=0).tolist()
    assert nz == [[0, 0], [1, 1], [2, 2]]


@pytest.mark.parametrize("make, match", [
    (lambda: obj.channel("a", 5), "channel 5 is out of range"),
    (lambda: obj.neuron("a", 0, 4, 0), r"outside layer 'a'"),
    (lambda: obj.channel("a", 0, batch=3), "out of range for a batch of 3"),
    (lambda: obj.class_logit(10), "class 10 is out of range"),
    (lambda: obj.direction("a", torch.ones(4)), "has 5 channels"),
    (lambda: obj.match("a", torch.ones(1, 5, 4, 6)), "target features have shape"),
])
def test_errors_at_evaluation_name_the_problem(ctx, make, match):
    with pytest.raises(ValueError, match=match):
        make()(ctx)


def test_errors_at_construction():
    with pytest.raises(ValueError, match="channel index"):
        obj.channel("a", -1)
    with pytest.raises(ValueError, match="beta"):
        obj.total_variation(0)
    with pytest.raises(TypeError, match="multiplied by a number"):
        obj.channel("a", 0) * obj.channel("a", 1)
    with pytest.raises(TypeError, match="non-zero number"):
        obj.channel("a", 0) / 0
    with pytest.raises(TypeError, match="cannot combine"):
        obj.channel("a", 0) + "x"
    with pytest.raises(TypeError, match="1-D tensor"):
        obj.direction("a", torch.ones(2, 2))


# -- objectives called on images (issue: the original's objective(x) gave its value) -----------
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _normalized(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN, dtype=x.dtype).view(3, 1, 1)) / torch.tensor(
        STD, dtype=x.dtype).view(3, 1, 1)


def test_called_on_images_equals_a_hook_oracle_and_what_optvis_optimizes():
    model = small_cnn()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64).requires_grad_(True)
    seen = {}
    handle = model.conv2.register_forward_hook(lambda m, i, o: seen.update(a=o))
    try:
        logits = model(_normalized(x))
    finally:
        handle.remove()
    oracle = seen["a"][:, 3].mean() + 0.5 * logits[:, 1].mean()
    objective = obj.channel("conv2", 3) + 0.5 * obj.class_logit(1)
    before = model_state(model)
    value = objective(x, model=model, mean=MEAN, std=STD)
    assert value.shape == () and abs(float((value - oracle).detach())) < 1e-12
    # differentiable w.r.t. the image (and only the image), as the oracle
    (g,) = torch.autograd.grad(value, x)
    (expected,) = torch.autograd.grad(oracle, x)
    assert torch.allclose(g, expected, atol=1e-12, rtol=0)
    assert_untouched(model, before)
    assert torch.equal(objective.evaluate(model, x, mean=MEAN, std=STD), value)
    # OptVis's value at that image and its first step (no transforms) see the same number
    vis = OptVis(model, objective, RawParam(x.detach()), transforms=(), mean=MEAN, std=STD)
    assert abs(vis.value(x.detach()) - value.item()) < 1e-12
    vis.vis((1,), progress=False)
    assert abs(vis.history[0] - value.item()) < 1e-12
    assert_untouched(model, before)


def test_called_on_images_in_train_mode_evaluates_in_eval_mode_and_restores():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.ReLU()).double()
    model[1].running_mean.uniform_(-1, 1)
    model.train()
    before = model_state(model)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    value = obj.layer("2", squared=True)(x, model=model, mean=0.0, std=1.0)
    model.eval()
    with torch.no_grad():
        expected = (model(x) ** 2).mean()
    model.train()
    assert abs(float(value - expected)) < 1e-12
    assert_untouched(model, before)  # training flags, running statistics, requires_grad


def test_priors_need_no_model_but_layer_objectives_say_how_to_evaluate_them(ctx):
    im = ctx.image
    for prior in (obj.total_variation(), obj.l1(), obj.l2(0.3), obj.alpha_norm(4)):
        assert torch.equal(prior(im), prior(ctx).reshape(()))
    with pytest.raises(TypeError, match=r"reads layer\(s\) \['a'\].*obj\(image, model=model\)"):
        obj.channel("a", 2)(im)
    with pytest.raises(TypeError, match=r"reads the model's output.*obj.evaluate\(model, image\)"):
        (obj.class_logit(1) - obj.l1())(im)
    with pytest.raises(TypeError, match="apply to images only"):
        obj.channel("a", 2)(ctx, model=torch.nn.ReLU())
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*x\[None\]"):
        obj.l1()(im[0])
    with pytest.raises(TypeError, match="float images"):
        obj.l1()(im.long())
    with pytest.raises(TypeError, match="nn.Module"):
        obj.channel("a", 2)(im, model="resnet")  # type: ignore[arg-type]
