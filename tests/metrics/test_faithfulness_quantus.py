"""netlens.metrics.faithfulness_more against Quantus 0.6.0 (and Captum 0.9.0 for infidelity) on
the shipped shapes model, and against hand computations on a bias-free linear model.

Quantus ranks and removes the ``C x H x W`` values of the input (``per_channel=True`` here),
reads "black" as each image's minimum (0 for the shapes images) and draws its random numbers
from numpy's global state; the tests draw the same numbers in the same order and pass them in
(``subsets=``, ``fills=``). Attributions are saliency plus a tiny jitter, so that no two values
tie (numpy's argsort is not stable; ours is). Where Quantus 0.6.0 is wrong, the test shows it
and checks netlens against the hand computation instead.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import netlens as nl
from netlens.metrics import faithfulness_more as FM

H = W = 6


# -- the shapes model and Quantus -----------------------------------------------------------

@pytest.fixture(scope="module")
def quantus():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("quantus")


@pytest.fixture(scope="module")
def shapes():
    torch.manual_seed(0)
    model = nl.zoo.shapes_model().eval()
    batch = nl.data.make_shapes(3, seed=0)
    x, y = batch.images, batch.labels
    sal = nl.attribution.saliency(model, x, y)
    jitter = 1e-4 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    assert (x.flatten(1).amin(1) == 0).all()  # Quantus's "black" is 0 on these images
    return model, x, y, sal + jitter


def run_quantus(metric, model, x, y, a, **kw):
    """A Quantus metric's per-image values, its prints and warnings silenced."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(),
                     device="cpu", **kw)
    return np.asarray(out, dtype=np.float64)


def close(ours: torch.Tensor, theirs: np.ndarray, tol: float = 1e-4) -> None:
    np.testing.assert_allclose(ours.detach().double().numpy(), theirs, rtol=tol, atol=tol)


def test_faithfulness_correlation_equals_quantus(quantus, shapes):
    model, x, y, a = shapes
    runs, size, n = 12, 300, x[0].numel()
    np.random.seed(1)
    subsets = []
    for _ in range(runs):  # Quantus's draws: a subset per image, then the unused "uniform"
        subsets.append(np.stack([np.random.choice(n, size, replace=False) for _ in x]))
        np.random.uniform(size=len(x))
    np.random.seed(1)
    theirs = run_quantus(quantus.FaithfulnessCorrelation(
        nr_runs=runs, subset_size=size, perturb_baseline="black", disable_warnings=True,
        return_aggregate=False), model, x, y, a, softmax=False)
    ours = FM.faithfulness_correlation(model, x, a, y, subsets=torch.tensor(
        np.stack(subsets)).permute(1, 0, 2), per_channel=True, progress=False)
    close(ours, theirs)
    # the same number as sensitivity-n of that subset size (Ancona et al.'s definition)
    same = FM.sensitivity_n(model, x, a, y, n=size, subsets=torch.tensor(
        np.stack(subsets)).permute(1, 0, 2), per_channel=True, progress=False)
    assert torch.equal(ours, same)


def test_faithfulness_estimate_equals_quantus(quantus, shapes):
    model, x, y, a = shapes
    theirs = run_quantus(quantus.FaithfulnessEstimate(
        features_in_step=1024, perturb_baseline="black", disable_warnings=True),
        model, x, y, a, softmax=False)
    ours = FM.faithfulness_estimate(model, x, a, y, features_in_step=1024, per_channel=True,
                                    progress=False)
    close(ours, theirs)


def test_monotonicity_correlation_equals_quantus(quantus, shapes):
    model, x, y, a = shapes
    step, samples = 2048, 3
    np.random.seed(2)  # Quantus draws one uniform value per image for each perturbed batch
    fills = np.random.uniform(size=(x[0].numel() // step, samples, len(x)))
    np.random.seed(2)
    theirs = run_quantus(quantus.MonotonicityCorrelation(
        nr_samples=samples, features_in_step=step, abs=False, disable_warnings=True),
        model, x, y, a, softmax=False)
    ours = FM.monotonicity_correlation(model, x, a, y, features_in_step=step,
                                       fills=torch.tensor(fills), per_channel=True,
                                       score="logit", progress=False)
    close(ours, theirs)


def test_monotonicity_quantus_never_changes_its_image(quantus, shapes):
    """Quantus 0.6.0's Monotonicity writes the baseline into the baseline image (its
    ``perturb_func`` is called on ``x_baseline``, not asked to insert ``x``'s values), so every
    prediction is the same and every map, its negation too, is "monotonic". netlens inserts
    ``x``'s values and matches the hand computation."""
    model, x, y, a = shapes
    step = 2048
    kw = dict(features_in_step=step, perturb_baseline="black", abs=False,
              disable_warnings=True)
    for m in (a, -a):
        assert run_quantus(quantus.Monotonicity(**kw), model, x, y, m).tolist() == [1.0] * 3
    for m in (a, -a):
        ours = FM.monotonicity(model, x, m, y, features_in_step=step, per_channel=True,
                               progress=False)
        hand = []
        for b in range(len(x)):
            order = m[b].flatten().argsort(stable=True)
            img = torch.zeros_like(x[b]).flatten()
            curve = []
            for k in range(0, order.numel(), step):
                img[order[k:k + step]] = x[b].flatten()[order[k:k + step]]
                with torch.no_grad():
                    curve.append(model(img.view(1, *x.shape[1:])).softmax(1)[0, y[b]].item())
            hand.append(float(all(v1 >= v0 for v0, v1 in zip(curve, curve[1:]))))
        assert ours.tolist() == hand
    assert FM.monotonicity(model, x, -a, y, features_in_step=step, per_channel=True,
                           progress=False).tolist() != [1.0] * 3


@pytest.mark.parametrize("patch", [16, 20])  # 20: the grid is padded as Quantus pads
def test_region_perturbation_and_selectivity_equal_quantus(quantus, shapes, patch):
    model, x, y, a = shapes
    theirs = run_quantus(quantus.RegionPerturbation(
        patch_size=patch, regions_evaluation=6, abs=False, disable_warnings=True),
        model, x, y, a, softmax=False)
    ours = FM.region_perturbation(model, x, a, y, patch_size=patch, regions=6, reduce="sum",
                                  score="logit", progress=False)
    close(ours.scores[:, :1] - ours.scores[:, 1:], theirs)
    theirs = run_quantus(quantus.Selectivity(patch_size=patch, abs=False, disable_warnings=True),
                         model, x, y, a)  # softmax, Quantus's default and ours
    ours = FM.selectivity(model, x, a, y, patch_size=patch, reduce="sum", progress=False)
    close(ours.scores[:, 1:], theirs)
    assert ours.fractions[-1] == 1.0 and ours.scores.shape[1] == math.ceil(64 / patch) ** 2 + 1


@pytest.mark.slow
def test_irof_equals_quantus_on_one_channel(quantus, shapes, monkeypatch):
    """Quantus 0.6.0's IROF fails on RGB images (its mask has one channel, its
    ``baseline_replacement_by_mask`` asserts the image's shape) and on numpy 2 (``np.trapz``):
    it is compared on the shapes model behind a 1 -> 3 channel copy, numpy patched."""
    model, x, y, a = shapes
    with pytest.raises(AssertionError, match="mask shape"):
        run_quantus(quantus.IROF(perturb_baseline="black", disable_warnings=True), model, x, y,
                    a.sum(1, keepdim=True))
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    copy = nn.Conv2d(1, 3, 1, bias=False)
    nn.init.ones_(copy.weight)
    gray = nn.Sequential(copy, model).eval()
    xg, ag, y = x[:2].mean(1, keepdim=True), a[:2].sum(1, keepdim=True), y[:2]
    # batch_size=1: Quantus pads a batch's curves with zeros to the longest, which adds half
    # the last point of the images with fewer superpixels to their area
    theirs = run_quantus(quantus.IROF(perturb_baseline="black", abs=False, disable_warnings=True,
                                      return_aggregate=False), gray, xg, y, ag, batch_size=1,
                         softmax=False)
    ours = FM.irof(gray, xg, ag, y, baseline="black", normalize=False, score="logit",
                   progress=False)
    close(ours, theirs, tol=1e-6)


def test_infidelity_equals_captum(shapes):
    metrics = pytest.importorskip("captum.metrics")
    model, x, y, a = shapes
    pert = 0.1 * torch.randn((4, *x.shape), generator=torch.Generator().manual_seed(3))

    def perturb(inputs):
        flat = pert.transpose(0, 1).reshape(-1, *x.shape[1:])  # Captum: image-major
        return flat, inputs - flat

    for normalize in (False, True):
        theirs = metrics.infidelity(model, perturb, x, a, target=y, n_perturb_samples=4,
                                    normalize=normalize)
        ours = FM.infidelity(model, x, a, y, perturbations=pert, normalize=normalize,
                             progress=False)
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-7)


def test_sufficiency_equals_quantus(quantus):
    model = nl.zoo.shapes_model().eval()
    batch = nl.data.make_shapes(10, seed=0)
    x, y = batch.images, batch.labels
    m = nl.attribution.saliency(model, x, y).abs().sum(1, keepdim=True)
    for threshold in (0.8, 0.9):
        theirs = run_quantus(quantus.Sufficiency(threshold=threshold, disable_warnings=True),
                             model, x, y, m)
        close(FM.sufficiency(model, x, m, threshold=threshold), theirs)


def test_sensitivity_n_of_quantus_is_a_statistic_across_images(quantus, shapes):
    """Quantus 0.6.0's SensitivityN removes the features cumulatively in the order of the map
    and, for each step, correlates across the *images* the score drop with the attribution of
    that step's chunk only: one number per step, not per image, and not Ancona et al.'s
    random subsets of n features. The test reproduces that by hand; netlens follows the
    paper (checked by hand on the toy model)."""
    model, x, y, a = shapes
    step = 1024
    theirs = run_quantus(quantus.SensitivityN(features_in_step=step, abs=False,
                                              disable_warnings=True, return_aggregate=False),
                         model, x, y, a, softmax=False)
    flat = a.flatten(1)
    order = flat.argsort(1, descending=True)
    steps = int(0.8 * 64 * 64 // step)
    with torch.no_grad():
        clean = model(x)[torch.arange(3), y]
        img = x.clone().flatten(1)
        hand = []
        for k in range(steps):
            idx = order[:, k * step:(k + 1) * step]
            img.scatter_(1, idx, 0.0)
            drop = clean - model(img.view_as(x))[torch.arange(3), y]
            sums = flat.gather(1, idx).sum(1)
            hand.append(np.corrcoef(drop.numpy(), sums.numpy())[0, 1])
    assert theirs.shape == (steps,)
    np.testing.assert_allclose(theirs, hand, atol=1e-4)


# -- the linear model, by hand --------------------------------------------------------------

def linear_model(weight: torch.Tensor) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight[0].numel(), weight.shape[0], bias=False))
    with torch.no_grad():
        model[1].weight.copy_(weight.flatten(1))
    return model.double().eval()


@pytest.fixture
def toy():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 1, H, W, generator=g, dtype=torch.float64)
    x = 0.5 + torch.rand(3, 1, H, W, generator=g, dtype=torch.float64)
    model = linear_model(weight)
    true = weight[0] * x  # the exact contributions to class 0
    noisy = true + 0.5 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return model, x, true, noisy


def logit(model, img):
    with torch.no_grad():
        return model(img)[:, 0]


def test_faithfulness_correlation_and_sensitivity_n_by_hand(toy):
    model, x, true, noisy = toy
    g = torch.Generator().manual_seed(0)
    kw = dict(runs=10, baseline=0.0, reduce="sum", progress=False)
    assert torch.allclose(FM.faithfulness_correlation(model, x, true, 0, subset_size=5,
                                                      generator=g, **kw),
                          torch.ones(3, dtype=torch.float64))
    subsets = torch.rand(3, 10, H * W, generator=g).argsort(2)[..., :7]
    ours = FM.sensitivity_n(model, x, noisy, 0, n=7, subsets=subsets, **kw)
    for b in range(3):
        drops, sums = [], []
        for s in subsets[b]:
            img = x[b].clone().flatten()
            img[s] = 0.0
            drops.append(float(logit(model, x[b:b + 1]) - logit(model, img.view(1, 1, H, W))))
            sums.append(float(noisy[b].flatten()[s].sum()))
        assert ours[b].item() == pytest.approx(np.corrcoef(drops, sums)[0, 1], abs=1e-12)
    # the documented draw: per image, the 7 largest of rand(runs, N) in each row
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    drawn = torch.stack([torch.rand(10, H * W, generator=g2).topk(7).indices for _ in x])
    assert torch.equal(FM.sensitivity_n(model, x, noisy, 0, n=7, generator=g1, **kw),
                       FM.sensitivity_n(model, x, noisy, 0, n=7, subsets=drawn, **kw))


def test_faithfulness_estimate_by_hand(toy):
    model, x, true, noisy = toy
    kw = dict(features_in_step=4, baseline=0.0, reduce="sum", progress=False)
    assert torch.allclose(FM.faithfulness_estimate(model, x, true, 0, **kw),
                          torch.ones(3, dtype=torch.float64))
    ours = FM.faithfulness_estimate(model, x, noisy, 0, **kw)
    for b in range(3):
        order = noisy[b].flatten().argsort(descending=True, stable=True)
        drops, sums = [], []
        for k in range(0, H * W, 4):
            img = x[b].clone().flatten()
            img[order[k:k + 4]] = 0.0
            drops.append(float(logit(model, x[b:b + 1]) - logit(model, img.view(1, 1, H, W))))
            sums.append(float(noisy[b].flatten()[order[k:k + 4]].sum()))
        assert ours[b].item() == pytest.approx(np.corrcoef(drops, sums)[0, 1], abs=1e-12)


def test_monotonicity_by_hand():
    model = linear_model(torch.tensor([[[[1.0, -1.0], [2.0, 3.0]]]], dtype=torch.float64))
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    true = model[1].weight.view(1, 1, 2, 2) * x
    kw = dict(baseline=0.0, reduce="sum", score="logit", progress=False)
    # least relevant first: -1, 1, 2, 3 -> logits -1, 0, 2, 5 (rising)
    assert FM.monotonicity(model, x, true, 0, **kw).item() == 1.0
    # reversed: 3, 2, 1, -1 -> 3, 5, 6, 5 (falls at the end)
    assert FM.monotonicity(model, x, -true, 0, **kw).item() == 0.0
    # in pairs: (3, 2), (1, -1) -> 5, 5: never falls
    assert FM.monotonicity(model, x, -true, 0, features_in_step=2, **kw).item() == 1.0


def test_monotonicity_correlation_by_hand(toy):
    model, x, _, noisy = toy
    fills = torch.rand(9, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = FM.monotonicity_correlation(model, x, noisy, 0, features_in_step=4, fills=fills,
                                       reduce="sum", score="logit", progress=False)
    from scipy.stats import spearmanr

    for b in range(3):
        y = float(logit(model, x[b:b + 1]))
        order = noisy[b].flatten().argsort(stable=True)
        sums, variances = [], []
        for j, k in enumerate(range(0, H * W, 4)):
            idx = order[k:k + 4]
            changes = []
            for s in range(3):
                img = x[b].clone().flatten()
                img[idx] = fills[j, s, b]
                changes.append((float(logit(model, img.view(1, 1, H, W))) - y) ** 2)
            variances.append(np.mean(changes) / y ** 2)
            sums.append(float(noisy[b].flatten()[idx].sum()))
        assert ours[b].item() == pytest.approx(spearmanr(sums, variances)[0], abs=1e-12)


def test_region_perturbation_by_hand(toy):
    model, x, true, noisy = toy
    # patch 4 on 6 pixels: the grid is padded by 1 before and after, so rows/cols 0-2 and 3-5
    curve = FM.region_perturbation(model, x, noisy, 0, patch_size=4, baseline=0.0,
                                   reduce="sum", score="logit", progress=False)
    assert curve.scores.shape == (3, 5) and curve.fractions.tolist() == [0, .25, .5, .75, 1]
    for b in range(3):
        blocks = [(r, c) for r in (slice(0, 3), slice(3, 6)) for c in (slice(0, 3), slice(3, 6))]
        sums = torch.tensor([float(noisy[b, 0][r, c].sum()) for r, c in blocks])
        img = x[b].clone()
        expected = [float(logit(model, img[None]))]
        for i in sums.argsort(descending=True, stable=True).tolist():
            img[0][blocks[i]] = 0.0
            expected.append(float(logit(model, img[None])))
        assert torch.allclose(curve.scores[b], torch.tensor(expected, dtype=torch.float64))
    # the true map: each removal drops the score by that patch's contribution, largest first
    best = FM.selectivity(model, x, true, 0, patch_size=3, baseline=0.0, reduce="sum",
                          score="logit", progress=False)
    assert (best.scores.diff(dim=1).diff(dim=1) >= -1e-12).all()  # convex: largest drops first
    lerf = FM.region_perturbation(model, x, true, 0, patch_size=3, order="lerf", baseline=0.0,
                                  reduce="sum", score="logit", progress=False)
    assert (best.aopc > lerf.aopc).all()
    g = torch.Generator().manual_seed(0)
    rand = FM.region_perturbation(model, x, true, 0, patch_size=3, order="random",
                                  generator=g, baseline=0.0, reduce="sum", progress=False)
    assert rand.scores.shape == (3, 5)


def test_irof_by_hand(toy):
    model, x, _, noisy = toy
    segments = nl.segments.grid(x, cells=3)  # 9 squares of 2 x 2, shared by the images
    raw = FM.irof(model, x, noisy, 0, segments=segments, baseline=0.0, normalize=False,
                  reduce="sum", score="logit", progress=False)
    norm = FM.irof(model, x, noisy, 0, segments=segments, baseline=0.0, reduce="sum",
                   score="logit", progress=False)
    for b in range(3):
        means = torch.tensor([float(noisy[b, 0][segments[0, 0] == s].mean()) for s in range(9)])
        img, y = x[b].clone(), float(logit(model, x[b:b + 1]))
        p = []
        for s in means.argsort(descending=True, stable=True).tolist():
            img[segments[0] == s] = 0.0
            p.append(float(logit(model, img[None])) / y)
        assert raw[b].item() == pytest.approx(9 - np.trapezoid(p), abs=1e-12)  # Quantus's
        assert norm[b].item() == pytest.approx(1 - np.trapezoid([1.0, *p], dx=1 / 9), abs=1e-12)


def test_infidelity_by_hand(toy):
    model, x, true, noisy = toy
    gradient = model[1].weight[0].detach().view(1, 1, H, W).expand_as(x)
    g = torch.Generator().manual_seed(0)
    assert FM.infidelity(model, x, gradient, 0, generator=g, progress=False).abs().max() < 1e-20
    pert = torch.randn(5, *x.shape, generator=g, dtype=torch.float64)
    ours = FM.infidelity(model, x, noisy, 0, perturbations=pert, progress=False)
    hand = [np.mean([(float((noisy[b] * pert[k, b]).sum()) - float(
        logit(model, x[b:b + 1]) - logit(model, x[b:b + 1] - pert[k, b:b + 1]))) ** 2
        for k in range(5)]) for b in range(3)]
    assert torch.allclose(ours, torch.tensor(hand, dtype=torch.float64))
    # normalize: the attribution x 2 has the same normalized infidelity
    assert torch.allclose(FM.infidelity(model, x, 2 * noisy, 0, perturbations=pert,
                                        normalize=True),
                          FM.infidelity(model, x, noisy, 0, perturbations=pert, normalize=True))


def test_sufficiency_by_hand():
    weight = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    weight[0, 0, 0, 0], weight[1, 0, 1, 1] = 1.0, 1.0
    model = linear_model(weight)
    x = torch.zeros(4, 1, 2, 2, dtype=torch.float64)
    x[:3, 0, 0, 0], x[3, 0, 1, 1] = 1.0, 1.0  # predictions 0, 0, 0, 1
    a = torch.zeros(4, 1, 2, 2, dtype=torch.float64)
    a[:2, 0, 0, 1] = 1.0  # images 0 and 1 explained alike, 2 and 3 alike
    a[2:, 0, 1, 0] = 1.0
    assert FM.sufficiency(model, x, a).tolist() == [1.0, 1.0, 0.0, 0.0]
    assert FM.sufficiency(model, x, a, threshold=1.0).tolist() == [2 / 3, 2 / 3, 2 / 3, 0.0]
    assert FM.sufficiency(model, x, a, 0).tolist() == [1.0, 1.0, 1.0, 1.0]  # the labels given


# -- chunking, the model untouched, errors --------------------------------------------------

def test_results_do_not_depend_on_the_chunking(toy, untouched):
    model, x, _, noisy = toy
    with untouched(model):
        for fn, kw in [(FM.faithfulness_correlation, dict(subset_size=6, runs=5)),
                       (FM.faithfulness_estimate, dict(features_in_step=4)),
                       (FM.monotonicity_correlation, dict(features_in_step=6, samples=3)),
                       (FM.region_perturbation, dict(patch_size=2)),
                       (FM.infidelity, dict(samples=4))]:
            one = fn(model, x, noisy, 0, batch_size=1, generator=torch.Generator().manual_seed(0),
                     progress=False, **kw)
            all_ = fn(model, x, noisy, 0, batch_size=64,
                      generator=torch.Generator().manual_seed(0), progress=False, **kw)
            one, all_ = (getattr(v, "scores", v) for v in (one, all_))
            assert torch.allclose(one, all_, atol=1e-12), fn.__name__


def test_bad_input_raises_clear_errors(toy):
    model, x, _, noisy = toy
    with pytest.raises(ValueError, match="exceeds"):
        FM.faithfulness_correlation(model, x, noisy, 0, subset_size=H * W + 1)
    with pytest.raises(ValueError, match="subsets must"):
        FM.faithfulness_correlation(model, x, noisy, 0, subsets=torch.zeros(2, 4, 3).long())
    with pytest.raises(ValueError, match="features_in_step"):
        FM.faithfulness_estimate(model, x, noisy, 0, features_in_step=0)
    with pytest.raises(ValueError, match="fills must"):
        FM.monotonicity_correlation(model, x, noisy, 0, fills=torch.rand(2, 2, 2))
    with pytest.raises(ValueError, match="order"):
        FM.region_perturbation(model, x, noisy, 0, order="best")
    with pytest.raises(ValueError, match="perturbations must"):
        FM.infidelity(model, x, noisy, 0, perturbations=torch.rand(3, *x.shape[1:]))
    with pytest.raises(ValueError, match="segments must"):
        FM.irof(model, x, noisy, 0, segments=torch.zeros(3, 1, 2, 2).long())
    with pytest.raises(ValueError, match="at least 2"):
        FM.sufficiency(model, x[:1], noisy[:1])
    with pytest.raises(ValueError, match="does not match the input"):
        FM.faithfulness_estimate(model, x, noisy[..., :3], 0)


ALL = [(FM.faithfulness_correlation, dict(subset_size=4, runs=3)),
       (FM.sensitivity_n, dict(n=4, runs=3)),
       (FM.faithfulness_estimate, dict(features_in_step=9)),
       (FM.monotonicity, dict(features_in_step=9)),
       (FM.monotonicity_correlation, dict(features_in_step=9, samples=2)),
       (FM.region_perturbation, dict(patch_size=3)),
       (FM.selectivity, dict(patch_size=3)),
       (FM.irof, dict(segments=nl.segments.grid(torch.zeros(1, 1, H, W), cells=2))),
       (FM.infidelity, dict(samples=2))]


@pytest.mark.parametrize("fn, kw", ALL, ids=[f.__name__ for f, _ in ALL])
def test_metric_contract(toy, untouched, fn, kw):
    model, x, _, noisy = toy
    g = torch.Generator().manual_seed(0)
    model.train()
    with untouched(model), pytest.warns(UserWarning, match="training mode"):
        value = fn(model, x, noisy, 0, generator=g, progress=False, **kw)
    model.eval()
    value = getattr(value, "scores", value)
    assert value.shape[0] == 3 and bool(torch.isfinite(value).all())
    with torch.no_grad():
        again = fn(model, x, noisy, 0, generator=torch.Generator().manual_seed(0),
                   progress=False, **kw)
    assert torch.equal(getattr(again, "scores", again), value)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        fn(model, x, noisy, 0, progress=False, **kw)
    with pytest.raises(ValueError, match="NaN"):
        fn(model, torch.full_like(x, math.nan), noisy, 0, progress=False, **kw)
    with pytest.raises(ValueError, match="out of range"):
        fn(model, x, noisy, 10**6, progress=False, **kw)
    with pytest.raises(ValueError, match="one target per image"):
        fn(model, x, noisy, nl.targets.TopK(2), progress=False, **kw)
