"""Random logit, smooth MPRT and efficient MPRT (the sanity checks of CONTRIBUTING.md, test
E16): by hand on toy models and against Quantus 0.6.0 on the shapes model.

The comparisons give both libraries the same explanations (a netlens method as Quantus's explain
function), the same random weights (Quantus redraws a layer with ``reset_parameters()`` after
``torch.manual_seed(seed + 1)``, the same seed for every layer; netlens gets that redraw through
``randomize=``) and the same random draws, read off what Quantus asks its explain function: the
other classes of random logit and the noisy inputs of smooth MPRT (passed to netlens through
``other=`` and ``noise=``). Where Quantus 0.6.0 is wrong, the test shows it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import netlens as nl
from netlens.attribution import saliency
from netlens.metrics.randomization import (
    data_randomization,
    efficient_mprt,
    random_logit,
    smooth_mprt,
)
from netlens.metrics.sanity import randomizable_layers

from helpers import linear_model, small_cnn


@pytest.fixture(scope="module")
def shapes():
    model = nl.zoo.shapes_model()
    batch = nl.data.make_shapes(4, seed=31, size=32)
    return model, batch.images, batch.labels


@pytest.fixture(scope="module")
def quantus():
    return pytest.importorskip("quantus")


def grad_map(model, x, target):
    """The signed gradient summed over the channels: one channel, so that Quantus (which reads
    every channel of an explanation) and netlens (one map per image) read the same values."""
    return saliency(model, x, target).sum(1, keepdim=True)


def quantus_explain(method, asked=None):
    """A Quantus explain function running ``method``, recording ``(inputs, targets)`` of each
    call in ``asked``; one FlatModel per model (Quantus hands over the same randomized copy
    after each change)."""
    flat: dict[int, nl.FlatModel] = {}

    def f(model, inputs, targets, **kwargs):
        model = model.get_model() if hasattr(model, "get_model") else model
        if asked is not None:
            asked.append((np.array(inputs, copy=True), np.array(targets, copy=True)))
        fm = flat.setdefault(id(model), nl.FlatModel(model))
        a = method(fm, torch.as_tensor(inputs).float(), torch.as_tensor(targets).long())
        return a.detach().double().numpy()
    return f


def quantus_reinit(module: nn.Module, generator: torch.Generator) -> None:
    """Quantus's redraw of a layer (its default seed=42): ``reset_parameters()`` after
    ``torch.manual_seed(43)``, here without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(43)
        module.reset_parameters()


def run_quantus(metric, model, x, y, **call):
    """``metric(...)``, with torch's and numpy's global random state left as they were."""
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), channel_first=True,
                          device="cpu", **call)
    finally:
        np.random.set_state(state)


def ssim_2d(a, b, batched=True, **kwargs):
    """A Quantus similarity_func: the SSIM of the 2-D maps (Gaussian window, sigma 1.5, as
    netlens's), on the pair's joint range as Quantus's ``ssim``; Quantus hands it the maps
    flattened."""
    from skimage.metrics import structural_similarity

    side = math.isqrt(a.shape[1])
    out = []
    for aa, bb in zip(a, b):
        both = np.concatenate([aa, bb])
        out.append(structural_similarity(
            aa.reshape(side, side), bb.reshape(side, side), gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=float(both.max() - both.min())))
    return out


def small_net() -> nn.Module:
    """helpers.small_cnn on one-channel 6 x 6 images; its layers with parameters are conv1,
    conv2 and fc."""
    return small_cnn(3, in_channels=1, widths=(4, 4), inplace=False, stride=(1, 1), pool=None,
                     positions=36)


# -- random logit -----------------------------------------------------------------------------

def test_random_logit_by_hand(untouched):
    """The saliency of class c of a bias-free linear model is its weight row: class 1's row is
    twice class 0's (the same map once scaled: similarity 1), class 2's ranks the pixels in
    reverse (Spearman -1)."""
    w0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    model = linear_model(torch.stack([w0, 2 * w0, w0.flip(0, 1)])[:, None])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 2, 2, generator=g, dtype=torch.float64)
    with untouched(model):
        s = random_logit(model, x, 0, "saliency", other=[1, 2], similarity="spearman")
        assert torch.allclose(s, torch.tensor([1.0, -1.0], dtype=torch.float64), atol=1e-12)
        assert torch.allclose(random_logit(model, x, 0, other=1), torch.ones(2, dtype=s.dtype))
    # the draw is documented: the generator's first draw seeds the method, the next one is
    # r = randint(K - 1, (B,)), and the other class is r shifted past the target
    seen: list[torch.Tensor] = []

    def probe(model, x, target):
        seen.append(torch.as_tensor(target).clone())
        return saliency(model, x, target)

    y = torch.arange(12) % 3
    x12 = torch.rand(12, 1, 2, 2, generator=g, dtype=torch.float64)
    drawn = random_logit(model, x12, y, probe, generator=torch.Generator().manual_seed(5))
    ref = torch.Generator().manual_seed(5)
    torch.randint(2**62, (1,), generator=ref)
    r = torch.randint(2, (12,), generator=ref)
    assert torch.equal(seen[0], y) and torch.equal(seen[1], r + (r >= y).long())
    assert (seen[1] != y).all()
    # batched over images: each image's score is its own
    one_by_one = torch.cat([random_logit(model, x12[i:i + 1], y[i:i + 1], other=seen[1][i:i + 1])
                            for i in range(12)])
    assert torch.allclose(drawn, one_by_one, atol=1e-12)
    # two classes: the other one is the class left
    seen.clear()
    random_logit(linear_model(torch.stack([w0, w0.flip(0, 1)])[:, None]), x, [0, 1], probe)
    assert seen[1].tolist() == [1, 0]


def test_random_logit_equals_quantus(shapes, quantus, untouched):
    """Quantus 0.6.0 with the other classes it drew (read off its explain calls), its
    normalisation per image (``normalise_axes``) and a 2-D SSIM: its own SSIM flattens the
    maps, and its default normalisation spans the whole batch (the next test)."""
    model, x, y = shapes
    a = grad_map(model, x, y).detach()
    q = quantus.functions
    theirs = {}
    others = []
    for name, fn in (("ssim", ssim_2d), ("spearman", q.similarity_func.correlation_spearman)):
        asked: list[tuple[np.ndarray, np.ndarray]] = []
        metric = quantus.RandomLogit(num_classes=4, similarity_func=fn,
                                     normalise_func_kwargs={"normalise_axes": (1, 2, 3)},
                                     disable_warnings=True)
        theirs[name] = torch.tensor(run_quantus(metric, model, x, y, a_batch=a.double().numpy(),
                                                explain_func=quantus_explain(grad_map, asked)))
        others.append(torch.as_tensor(asked[0][1]))
    assert torch.equal(others[0], others[1]) and (others[0] != y).all()
    with untouched(model):
        for name in theirs:
            ours = random_logit(model, x, y, grad_map, attributions=a, other=others[0],
                                similarity=name)
            gap = (ours - theirs[name]).abs().max()
            assert gap < 1e-4, (name, ours, theirs[name])  # measured: 6e-17, 1e-16


def test_quantus_random_logit_flattens_the_maps_and_mixes_the_batch(shapes, quantus):
    """Quantus's ``ssim`` is scikit-image's SSIM of the flattened maps: a 1-D statistic over
    runs of 7 pixels in row order, which changes when both maps are transposed (no image
    similarity may: the rows and the columns of a map play the same part), while the 2-D SSIM
    does not. Quantus's default ``normalise_by_max`` divides by the largest value of the whole
    batch, so an image's score changes with the other images; netlens's does not."""
    from skimage.metrics import structural_similarity

    model, x, y = shapes
    x, y = x[:2], y[:2]
    a, b = (grad_map(model, x, t).detach().double() for t in (y, (y + 1) % 4))
    flat = np.array(quantus.functions.similarity_func.ssim(
        a.flatten(1).numpy(), b.flatten(1).numpy(), batched=True))
    first = torch.cat([a[0].flatten(), b[0].flatten()])
    one_d = structural_similarity(a[0].flatten().numpy(), b[0].flatten().numpy(),
                                  data_range=float(first.max() - first.min()))
    assert flat[0] == pytest.approx(one_d, abs=1e-12)
    flat_t = np.array(quantus.functions.similarity_func.ssim(
        a.mT.flatten(1).numpy(), b.mT.flatten(1).numpy(), batched=True))
    assert (np.abs(flat - flat_t) > 1e-3).all()  # measured: 0.004 and 0.009
    assert torch.allclose(nl.metrics.ssim(a, b), nl.metrics.ssim(a.mT, b.mT), atol=1e-12)
    # the batch: image 0 alone and in the batch, with the same other class
    scores, asked = [], []
    for part in (slice(None), slice(0, 1)):
        metric = quantus.RandomLogit(num_classes=4, similarity_func=ssim_2d, disable_warnings=True)
        record: list[tuple[np.ndarray, np.ndarray]] = []
        scores.append(run_quantus(metric, model, x[part], y[part],
                                  a_batch=grad_map(model, x[part], y[part]).detach().numpy(),
                                  explain_func=quantus_explain(grad_map, record)))
        asked.append(record[0][1])
    assert asked[0][0] == asked[1][0]
    assert abs(scores[0][0] - scores[1][0]) > 1e-3  # measured: 0.086 in the batch, 0.120 alone
    ours = [random_logit(model, x[part], y[part], grad_map, other=torch.as_tensor(asked[0][part]))
            for part in (slice(None), slice(0, 1))]
    assert ours[0][0] == pytest.approx(float(ours[1][0]), abs=1e-6)
    assert ours[1][0] == pytest.approx(scores[1][0], abs=1e-4)  # one image: the same scaling


def test_random_logit_bad_options(untouched):
    model = linear_model(torch.rand(3, 1, 2, 2, dtype=torch.float64))
    x = torch.rand(2, 1, 2, 2, dtype=torch.float64)
    with untouched(model):
        with pytest.raises(ValueError, match="differ from the target.*other=None"):
            random_logit(model, x, [0, 1], other=[1, 1])
        with pytest.raises(ValueError, match="out of range.*0 to 2"):
            random_logit(model, x, 0, other=3)
        with pytest.raises(ValueError, match="one class for every image or one per image"):
            random_logit(model, x, 0, other=[1, 2, 1])
        with pytest.raises(TypeError, match="ints"):
            random_logit(model, x, 0, other=1.0)
        with pytest.raises(ValueError, match="similarity must be 'spearman', 'ssim'"):
            random_logit(model, x, 0, similarity="pearson")
        with pytest.raises(ValueError, match="one value per image"):
            random_logit(model, x, 0, other=1, similarity=lambda a, b: a.mean())
        with pytest.raises(ValueError, match="must be a class"):
            random_logit(model, x, nl.targets.Score(lambda out: out.sum(1)))
        with pytest.raises(ValueError, match="attributions must have shape"):
            random_logit(model, x, 0, attributions=torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="at least 2 classes"):
        random_logit(linear_model(torch.rand(1, 1, 2, 2, dtype=torch.float64)), x, 0)


# -- smooth MPRT ------------------------------------------------------------------------------

def test_smooth_mprt_by_hand(untouched):
    """Input x gradient of a bias-free linear model is x * w: the denoised map is
    |(x + sum_k d_k / n) * w| (the n-th explanation is of x itself) over its root mean square,
    with the trained row w and then with the row w' that ``randomize=`` writes."""
    g = torch.Generator().manual_seed(0)
    w, w_random = (torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64) - 0.5
                   for _ in range(2))
    model = linear_model(w)
    x = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64)
    n = 4
    d = {s: 0.1 * torch.randn(n - 1, *x.shape, generator=g, dtype=torch.float64) for s in (0, 1)}

    def write(module, generator):
        module.weight.copy_(w_random.flatten(1))

    def oracle(row, noise):
        m = ((x + noise.sum(0) / n) * row[0]).abs()
        return m / m.flatten(1).pow(2).mean(1).sqrt().view(-1, 1, 1, 1)

    maps = []

    def keep(a, b):
        maps.append((a, b))
        return nl.metrics.spearman(a, b)

    with untouched(model):
        s = smooth_mprt(model, x, 0, "input_x_gradient", n=n, noise=d.__getitem__,
                        randomize=write, similarity=keep)
    assert torch.allclose(maps[0][0], oracle(w, d[0]), atol=1e-12)
    assert torch.allclose(maps[0][1], oracle(w_random, d[1]), atol=1e-12)
    expected = [scipy.stats.spearmanr(oracle(w, d[0])[i].flatten(),
                                      oracle(w_random, d[1])[i].flatten())[0] for i in range(2)]
    assert torch.allclose(s, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    # the default draw is documented: after the method's seed, randn((n - 1, B, C, H, W))
    # times sigma and each image's value range, the trained model's first
    ref = torch.Generator().manual_seed(7)
    torch.randint(2**62, (1,), generator=ref)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    drawn = {s: torch.randn(n - 1, *x.shape, generator=ref, dtype=x.dtype) * (0.2 * span)
             for s in (0, 1)}
    seeded = smooth_mprt(model, x, 0, "input_x_gradient", n=n, sigma=0.2, randomize=write,
                         generator=torch.Generator().manual_seed(7))
    assert torch.allclose(seeded, smooth_mprt(model, x, 0, "input_x_gradient", n=n,
                                              noise=drawn.__getitem__, randomize=write),
                          atol=1e-12)
    # no noise and nothing random: the same map, similarity 1
    same = smooth_mprt(model, x, 0, "input_x_gradient", n=3, sigma=0.0,
                       randomize=lambda module, generator: None)
    assert torch.allclose(same, torch.ones(2, dtype=torch.float64), atol=1e-12)


def test_smooth_mprt_orders_steps_and_chunks(untouched):
    net = small_net()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    trained = {k: v.detach().clone() for k, v in net.named_parameters()}
    seen: list[set[str]] = []

    def probe(model, x, target):
        """Saliency, and which layers of the model it was given differ from the trained one."""
        seen.append({k.rsplit(".", 1)[0] for k, p in model.named_parameters()
                     if not torch.equal(p, trained[k])})
        return saliency(model, x, target)

    every = {"conv1", "conv2", "fc"}
    expected = {"bottom_up": [{"conv1"}, {"conv1", "conv2"}, every],
                "top_down": [{"fc"}, {"conv2", "fc"}, every],
                "independent": [{"conv1"}, {"conv2"}, {"fc"}]}
    for order, steps in expected.items():
        seen.clear()
        with untouched(net):
            s = smooth_mprt(net, x, 1, probe, n=1, order=order, layerwise=True, progress=False)
        assert seen == [set(), *steps], order  # n=1: one explanation per model, no noise
        assert s.shape == (3, 2)
    seen.clear()
    assert smooth_mprt(net, x, 1, probe, n=1).shape == (2,)
    assert seen == [set(), every]
    seen.clear()
    smooth_mprt(net, x, 1, probe, n=1, layers=["fc", "conv1"], layerwise=True)
    assert seen == [set(), {"conv1"}, {"conv1", "fc"}]
    # the noisy copies are explained together: the result does not depend on how many at once
    g = [torch.Generator().manual_seed(3) for _ in range(2)]
    apart = smooth_mprt(net, x, 1, n=5, batch_size=2, generator=g[0], layerwise=True)
    together = smooth_mprt(net, x, 1, n=5, generator=g[1], layerwise=True)
    assert torch.allclose(apart, together, atol=1e-10)


@pytest.mark.slow
def test_smooth_mprt_equals_quantus(shapes, quantus, monkeypatch, untouched):
    """Quantus's noise is read off the inputs it explains: its passes are the reference, its
    "original" row (the trained model again, with new noise: netlens has no such row), then
    one per layer. Its layers are in definition order, netlens's in forward order (the shapes
    model calls each block's downsample first), so the steps are compared where both have
    randomized the same layers.

    Quantus 0.6.0 smooths with ``quantus.explain`` whatever the explain function (here it
    raises, and is never called), and its average over the layers counts the "original" row
    (it skips a key "orig" that this metric does not write)."""
    model, x, y = shapes
    x, y = x[:2], y[:2]
    n = 2
    asked: list[tuple[np.ndarray, np.ndarray]] = []
    monkeypatch.setattr(quantus, "explain", quantus_explain(grad_map, asked))

    def ignored(*args, **kwargs):
        raise AssertionError("Quantus called its explain_func")

    metric = quantus.SmoothMPRT(nr_samples=n, noise_magnitude=0.1, disable_warnings=True)
    theirs = run_quantus(metric, model, x, y, explain_func=ignored, batch_size=len(x))
    passes = [asked[i:i + n] for i in range(0, len(asked), n)]
    names = randomizable_layers(model, x)
    quantus_names = [k for k in theirs if k != "original"]
    assert sorted(names) == sorted(quantus_names) and len(passes) == 2 + len(names)
    assert all(np.array_equal(p[-1][0], x.numpy()) for p in passes)  # the last: x itself
    noise = [torch.from_numpy(np.stack([inputs.astype(np.float32) - x.numpy()
                                        for inputs, _ in p[:-1]])) for p in passes]
    with untouched(model):
        ours = smooth_mprt(model, x, y, grad_map, n=n, noise=lambda s: noise[s + (s > 0)],
                           layerwise=True, randomize=quantus_reinit, progress=False)
        last = smooth_mprt(model, x, y, grad_map, n=n, randomize=quantus_reinit,
                           noise=lambda s: noise[-1 if s else 0])
    compared = []
    for i, name in enumerate(quantus_names):
        if set(names[:i + 1]) == set(quantus_names[:i + 1]):
            gap = (ours[i] - torch.tensor(theirs[name], dtype=ours.dtype)).abs().max()
            assert gap < 1e-4, (name, ours[i], theirs[name])  # measured: 6e-17
            compared.append(name)
    assert len(compared) == 6 and compared[-1] == "fc"
    assert torch.allclose(last, torch.tensor(theirs["fc"], dtype=last.dtype), atol=1e-4)
    rows = np.array([theirs[k] for k in theirs])
    average = metric.recompute_average_correlation_per_sample()
    assert np.allclose(average, rows.mean(0)) and not np.allclose(average, rows[1:].mean(0))


def test_smooth_mprt_bad_options(untouched):
    net = small_net()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    with untouched(net):
        with pytest.raises(ValueError, match="n must be an int >= 1"):
            smooth_mprt(net, x, 0, n=0)
        with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
            smooth_mprt(net, x, 0, sigma=-0.1)
        with pytest.raises(ValueError, match="order must be one of"):
            smooth_mprt(net, x, 0, order="sideways")
        with pytest.raises(ValueError, match="independent.*layerwise=True"):
            smooth_mprt(net, x, 0, order="independent")
        with pytest.raises(ValueError, match=r"noise\(0\) must return .*\(1, 2, 1, 6, 6\)"):
            smooth_mprt(net, x, 0, n=2, noise=lambda step: torch.zeros(2, 1, 6, 6))
        with pytest.raises(ValueError, match="similarity must be"):
            smooth_mprt(net, x, 0, similarity="kendall")
        with pytest.raises(ValueError, match="cannot randomize.*choose from"):
            smooth_mprt(net, x, 0, layers=["act1"])
        with pytest.raises(TypeError, match="randomize must be a function"):
            smooth_mprt(net, x, 0, randomize="normal")

        def broken(module, generator):
            module.weight.mul_(0)
            raise RuntimeError("half-way")

        with pytest.raises(RuntimeError, match="half-way"):  # the copy broke, not the model
            smooth_mprt(net, x, 0, n=1, randomize=broken)


# -- efficient MPRT ---------------------------------------------------------------------------

def test_efficient_mprt_by_hand(untouched):
    """The saliency of a bias-free linear model is its weight row: [0, 0, 0, 1] fills two of
    the 100 bins (3/4 and 1/4 of the pixels), the "random" row [0, 1, 2, 3] four bins equally:
    a rise of (log 4 - H) / H."""
    model = linear_model(torch.tensor([[0.0, 0, 0, 1], [1, 1, 1, 1]]).view(2, 1, 2, 2))
    x = torch.rand(1, 1, 2, 2, dtype=torch.float64)

    def spread(module, generator):
        module.weight.copy_(torch.tensor([[0.0, 1, 2, 3], [1, 1, 1, 1]]))

    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    with untouched(model):
        rise = efficient_mprt(model, x, 0, randomize=spread)
    assert rise.item() == pytest.approx((math.log(4) - h) / h, abs=1e-12)
    given = efficient_mprt(model, x, 0, randomize=spread, attributions=saliency(model, x, 0))
    assert torch.equal(rise, given)
    # complexity="entropy": p = |m| / sum |m|; [1, 1, 2, 0] -> (1/4, 1/4, 1/2), then uniform
    model = linear_model(torch.tensor([[1.0, 1, 2, 0], [1, 1, 1, 1]]).view(2, 1, 2, 2))
    h = -(0.5 * math.log(0.25) + 0.5 * math.log(0.5))
    rise = efficient_mprt(model, x, 0, complexity="entropy",
                          randomize=lambda module, generator: module.weight.fill_(1.0))
    assert rise.item() == pytest.approx((math.log(4) - h) / h, abs=1e-12)
    # the histogram is numpy's (its edges and rounding), the entropy scipy's: values on the
    # bin edges, ties, negative values, a constant map (entropy 0: a fall of -1)
    g = torch.Generator().manual_seed(0)
    edges = torch.cat([torch.arange(99, dtype=torch.float64) / 100, torch.ones(1)])
    trained = torch.stack([edges, (torch.randn(100, generator=g) * 10).round() / 10,
                           2 * edges - 1]).double().view(3, 1, 10, 10)
    rand = torch.stack([torch.full((100,), 0.5), torch.randn(100, generator=g),
                        torch.randn(100, generator=g).clamp(min=0)]).double().view(3, 1, 10, 10)

    def fixed(model, x, target):
        return rand  # the method on the randomized model

    def entropy(m):
        return scipy.stats.entropy(np.histogram(m.flatten().numpy(), bins=100)[0])

    big = linear_model(torch.ones(2, 1, 10, 10, dtype=torch.float64))
    rise = efficient_mprt(big, torch.rand(3, 1, 10, 10, dtype=torch.float64), 0, fixed,
                          attributions=trained, randomize=lambda module, generator: None)
    expected = [(entropy(b) - entropy(a)) / entropy(a) for a, b in zip(trained, rand)]
    assert rise.tolist() == pytest.approx(expected, abs=1e-12)
    assert rise[0] == -1.0


def test_efficient_mprt_equals_quantus(shapes, quantus, untouched):
    """Quantus 0.6.0's defaults (bottom-up to the fully random model, discrete entropy in 100
    bins), and Bhatt's entropy, which Quantus cannot run itself: for the random model's
    explanations it passes ``x=None``, and its ``entropy`` reads ``x.shape`` (here it is given
    the map's own shape)."""
    model, x, y = shapes
    a = grad_map(model, x, y).detach()
    call = {"a_batch": a.double().numpy(), "explain_func": quantus_explain(grad_map)}
    theirs = torch.tensor(run_quantus(quantus.EfficientMPRT(disable_warnings=True),
                                      model, x, y, **call))
    entropy = quantus.functions.complexity_func.entropy

    def entropy_of_map(a, x, **kwargs):
        return entropy(a=a, x=a)

    theirs_entropy = torch.tensor(run_quantus(
        quantus.EfficientMPRT(abs=True, complexity_func=entropy_of_map, disable_warnings=True),
        model, x, y, **call))
    with untouched(model):
        ours = efficient_mprt(model, x, y, grad_map, randomize=quantus_reinit)
        ours_entropy = efficient_mprt(model, x, y, grad_map, randomize=quantus_reinit,
                                      complexity="entropy")
    assert (ours - theirs).abs().max() < 1e-4, (ours, theirs)  # measured: 1e-16
    assert (ours_entropy - theirs_entropy).abs().max() < 1e-4, (ours_entropy, theirs_entropy)
    with pytest.raises(AttributeError, match="shape"):
        run_quantus(quantus.EfficientMPRT(abs=True, complexity_func=entropy,
                                          disable_warnings=True), model, x, y, **call)


def test_efficient_mprt_bad_options(untouched):
    net = small_net()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    with untouched(net):
        with pytest.raises(ValueError, match="bins must be an int >= 1"):
            efficient_mprt(net, x, 0, bins=0)
        with pytest.raises(ValueError, match="complexity must be 'histogram', 'entropy'"):
            efficient_mprt(net, x, 0, complexity="gini")
        with pytest.raises(ValueError, match="one value per map"):
            efficient_mprt(net, x, 0, complexity=lambda m: m.sum())
        with pytest.raises(ValueError, match="cannot randomize"):
            efficient_mprt(net, x, 0, layers=["nope"])
        with pytest.raises(ValueError, match="attributions"):
            efficient_mprt(net, x, 0, attributions=torch.zeros(2, 1, 5, 5, dtype=x.dtype))
        with pytest.raises(TypeError, match="generator must be a torch.Generator"):
            efficient_mprt(net, x, 0, generator=0)


# -- data randomization ---------------------------------------------------------------------

def test_data_randomization_by_hand(untouched):
    """Saliency of a linear model is its weight row: a twin with the same weights explains
    alike (1.0 everywhere), one with the weights negated gives the same absolute maps
    (Spearman 1) and reversed signed ones (-1)."""
    w = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, same, negated = linear_model(w), linear_model(w), linear_model(-w)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    with untouched(a), untouched(negated):
        alike = data_randomization(a, same, x, 0, methods=[grad_map, "saliency"])
        flipped = data_randomization(a, negated, x, 0, methods=[grad_map])
    assert alike.methods == ["grad_map", "saliency"]
    for similarity in ("spearman_abs", "spearman", "ssim"):
        for method in alike.methods:
            assert getattr(alike, similarity)[method].tolist() == pytest.approx([1.0] * 3)
    assert flipped.spearman_abs["grad_map"].tolist() == pytest.approx([1.0] * 3)
    assert flipped.spearman["grad_map"].tolist() == pytest.approx([-1.0] * 3)
    assert flipped.mean("spearman") == {"grad_map": pytest.approx(-1.0)}


def test_data_randomization_bad_input(untouched):
    w = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, x = linear_model(w), torch.rand(2, 1, 4, 4, dtype=torch.float64)
    with untouched(a):
        with pytest.raises(ValueError, match="the same model"):
            data_randomization(a, a, x, 0)
        with pytest.raises(ValueError, match="differ in shape"):
            data_randomization(a, linear_model(torch.randn(3, 1, 4, 4, dtype=torch.float64)),
                               x, 0, methods=["saliency"])
        with pytest.raises(ValueError, match="methods is empty"):
            data_randomization(a, linear_model(w), x, 0, methods=[])
        with pytest.raises(ValueError, match="similarity must be"):
            data_randomization(a, linear_model(w), x, 0, methods=["saliency"]).mean("pearson")


@pytest.mark.slow
def test_data_randomization_on_the_shipped_random_label_model(untouched):
    """The shipped twin memorized its 512 random labels and knows nothing of the shapes; Grad-CAM
    explains it differently from the trained model, the input-gradient methods much less so
    (Adebayo et al.'s finding). Measured on these 16 images (Spearman of |maps|): Grad-CAM
    0.13, integrated gradients 0.55, guided backprop 0.61, saliency 0.65; the random map,
    which ignores the model, 1.0."""
    model, twin = nl.zoo.shapes_model(), nl.zoo.shapes_model_random_labels()
    images, labels = nl.zoo.random_label_set()
    with torch.no_grad():
        assert (twin(images).argmax(1) == labels).float().mean().item() > 0.99
    assert nl.zoo.evaluate(twin, 500) < 0.4 and nl.zoo.evaluate(model, 500) > 0.95
    batch = nl.data.make_shapes(16, seed=4242)
    with untouched(model), untouched(twin):
        result = data_randomization(
            model, twin, batch.images, batch.labels,
            methods=["saliency", "guided_backprop", "integrated_gradients", "gradcam", "random"],
            options={"integrated_gradients": {"steps": 16}}, progress=False)
    got = result.mean("spearman_abs")
    print(got)
    assert got["gradcam"] < 0.25 and got["random"] == pytest.approx(1.0)
    for method in ("saliency", "guided_backprop", "integrated_gradients"):
        assert 0.45 < got[method] < 0.75 and got[method] > got["gradcam"] + 0.3, method
