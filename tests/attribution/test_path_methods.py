"""Blur IG and Guided IG: completeness with an error that shrinks with the steps, the exact
answer on a linear model, oracles written from the papers' definitions (Blur IG with scipy's
Gaussian filter, Guided IG's Algorithm 1 in numpy as PAIR states it), Guided IG with
``max_dist=0`` is left-Riemann integrated gradients, targets, batching, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import netlens as nl
from netlens.attribution import integrated_gradients
from netlens.attribution.path_methods import blur_ig, gaussian_blur, guided_ig

from helpers import assert_untouched, model_state, small_cnn


@pytest.fixture(scope="module")
def model():
    return small_cnn(act=nn.Softplus, inplace=False)  # smooth: quadrature errors are smooth


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, 10, 12, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64)


def gap(model, x, base, classes):
    with torch.no_grad():
        rows = torch.arange(x.shape[0])
        return model(x)[rows, classes] - model(base)[rows, classes]


def linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 10 * 12, 4)).double().eval()


@pytest.mark.parametrize("padding", ["constant", "reflect"])
@pytest.mark.parametrize("sigma", [0.6, 2.5, 30.0])
def test_gaussian_blur_is_scipys_and_its_derivative_exact(x, padding, sigma):
    from scipy import ndimage

    ours = gaussian_blur(x, sigma, padding=padding)
    theirs = ndimage.gaussian_filter(x.numpy(), (0, 0, sigma, sigma), mode=padding)
    assert np.abs(ours.numpy() - theirs).max() < 1e-14
    h = 1e-5
    fd = (gaussian_blur(x, sigma + h, padding=padding) -
          gaussian_blur(x, sigma - h, padding=padding)) / (2 * h)
    assert (gaussian_blur(x, sigma, padding=padding, derivative=True) - fd).abs().max() < 1e-8
    assert torch.equal(gaussian_blur(x, 0.0), x)


@pytest.mark.slow
def test_blur_ig_completeness_shrinks_with_steps(model, x):
    base = gaussian_blur(x, 4.0, truncate=8)
    want = gap(model, x, base, torch.tensor([1, 2]))
    errors = [(blur_ig(model, x, [1, 2], steps=s, max_sigma=4.0).sum((1, 2, 3)) - want)
              .abs().max() for s in (8, 32, 128)]
    scale = want.abs().max()
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5 * scale
    assert errors[1] < errors[0] / 4


def test_blur_ig_equals_its_definition_with_scipy(model, x):
    """The oracle: midpoints of the sigma path, scipy's blur, a central finite difference for
    d x_s / d s, autograd gradients of each point."""
    from scipy import ndimage

    steps, max_sigma, classes = 6, 3.0, [3, 0]
    delta = max_sigma / steps
    want = np.zeros(x.shape)
    for k in range(steps):
        s = (k + 0.5) * delta

        def blur(v, s=s):
            return ndimage.gaussian_filter(x.numpy(), (0, 0, v, v), mode="reflect", truncate=8)

        point = torch.from_numpy(blur(s)).requires_grad_(True)
        score = model(point)[torch.arange(2), classes].sum()
        g, = torch.autograd.grad(score, point)
        dxds = (blur(s + 1e-5) - blur(s - 1e-5)) / 2e-5
        want -= delta * dxds * g.numpy()
    ours = blur_ig(model, x, classes, steps=steps, max_sigma=max_sigma, padding="reflect")
    assert np.abs(ours.numpy() - want).max() < 1e-7 * np.abs(want).max()


def test_blur_ig_on_a_linear_model_tends_to_w_times_the_blur_difference(x):
    lin = linear()
    w = lin[1].weight[2].detach().view(3, 10, 12)
    want = w * (x - gaussian_blur(x, 2.0, truncate=8))
    errors = [(blur_ig(lin, x, 2, steps=s, max_sigma=2.0) - want).abs().max() / want.abs().max()
              for s in (16, 64)]
    assert errors[1] < errors[0] / 16 and errors[1] < 5e-5  # measured: 5.9e-4, 9.2e-6


def test_guided_ig_on_a_linear_model_is_exact(x):
    """A constant gradient w: every path from b to x gives (x - b) * w exactly."""
    lin = linear(1)
    base = torch.full_like(x, 0.3)
    for max_dist in (0.0, 0.02, 1.0):
        ours = guided_ig(lin, x, [1, 3], steps=7, baseline=0.3, max_dist=max_dist)
        w = lin[1].weight[[1, 3]].detach().view(2, 3, 10, 12)
        assert torch.allclose(ours, (x - base) * w, rtol=1e-10, atol=1e-13)


def test_guided_ig_without_deviation_is_left_riemann_ig(model, x):
    ours = guided_ig(model, x, [1, 2], steps=10, max_dist=0.0)
    ig = integrated_gradients(model, x, [1, 2], steps=10, method="riemann_left")
    assert torch.allclose(ours, ig, rtol=1e-9, atol=1e-12 * ig.abs().max())


def _pair_guided_ig(x, base, grad_func, steps, fraction, max_dist):
    """Kapishnikov et al. 2021, Algorithm 1, as PAIR's numpy reference states it (an oracle)."""
    x, base = x.astype(np.float64), base.astype(np.float64)
    cur, attr = base.copy(), np.zeros_like(x)
    diff = x - base
    l1_total = np.abs(diff).sum()
    for step in range(steps):
        g_actual = grad_func(cur)
        g = g_actual.copy()
        alpha = (step + 1.0) / steps
        a_min, a_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
        x_min, x_max = base + diff * a_min, base + diff * a_max
        l1_target = l1_total * (1 - (step + 1) / steps)
        gamma = np.inf
        while gamma > 1.0:
            old = cur.copy()
            with np.errstate(divide="ignore", invalid="ignore"):
                a = np.where(diff != 0, (cur - base) / diff, np.nan)
            a[np.isnan(a)] = a_max
            cur[a < a_min] = x_min[a < a_min]
            l1_current = np.abs(cur - x).sum()
            if math.isclose(l1_target, l1_current, rel_tol=1e-9, abs_tol=1e-9):
                attr += (cur - old) * g_actual
                break
            g[cur == x_max] = np.inf
            threshold = np.quantile(np.abs(g), fraction, method="lower")
            s = (np.abs(g) <= threshold) & (g != np.inf)
            l1_s = (np.abs(cur - x_max) * s).sum()
            gamma = (l1_current - l1_target) / l1_s if l1_s > 0 else np.inf
            if gamma > 1.0:
                cur[s] = x_max[s]
            else:
                cur[s] = (cur + (x_max - cur) * gamma)[s]
            attr += (cur - old) * g_actual
    return attr


@pytest.mark.parametrize("max_dist, fraction", [(0.02, 0.25), (1.0, 0.1), (0.1, 0.5)])
def test_guided_ig_equals_the_papers_algorithm(model, x, max_dist, fraction):
    classes, steps = [2, 1], 12
    ours = guided_ig(model, x, classes, steps=steps, fraction=fraction, max_dist=max_dist)
    for b in range(2):
        def grad_func(point, b=b):
            p = torch.from_numpy(point)[None].requires_grad_(True)
            g, = torch.autograd.grad(model(p)[0, classes[b]], p)
            return g[0].numpy()

        want = _pair_guided_ig(x[b].numpy(), np.zeros(x.shape[1:]), grad_func, steps,
                               fraction, max_dist)
        assert np.abs(ours[b].numpy() - want).max() < 1e-10 * np.abs(want).max()


@pytest.mark.slow
def test_guided_ig_completeness_shrinks_with_steps(model, x):
    want = gap(model, x, torch.zeros_like(x), torch.tensor([0, 3]))
    errors = [(guided_ig(model, x, [0, 3], steps=s).sum((1, 2, 3)) - want).abs().max()
              for s in (8, 32, 128)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-2 * want.abs().max()


@pytest.mark.parametrize("method", [blur_ig, guided_ig])
def test_topk_paths_and_batching(model, x, method):
    opts = {"steps": 6} if method is guided_ig else {"steps": 6, "max_sigma": 3.0}
    top = method(model, x, nl.targets.TopK(2), **opts)
    classes = model(x).topk(2).indices
    assert top.shape == (2, 2, 3, 10, 12)
    for j in range(2):
        one = method(model, x, classes[:, j], **opts)
        assert torch.allclose(top[:, j], one, rtol=1e-10, atol=1e-14)
    split = method(model, x, [1, 2], batch_size=1, **opts)
    assert torch.allclose(split, method(model, x, [1, 2], **opts), rtol=1e-10, atol=1e-15)
    alone = method(model, x[1:], [2], **opts)
    assert torch.allclose(alone, split[1:], rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("method", [blur_ig, guided_ig])
def test_model_untouched_no_grad_and_errors(model, x, method):
    before = model_state(model)
    with torch.no_grad():
        out = method(model, x, 1, steps=3)
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    assert_untouched(model, before)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        method(model, x, 1, steps=0)
    with pytest.raises(ValueError, match="out of range"):
        method(model, x, 10**6, steps=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"fraction": 0.0}, r"fraction must be in \(0, 1\]"),
    ({"max_dist": 1.5}, r"max_dist must be in \[0, 1\]"),
    ({"baseline": "uniform"}, "fixed baseline"),
])
def test_guided_ig_bad_options(model, x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        guided_ig(model, x, 1, steps=2, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"max_sigma": 0.0}, "max_sigma must be > 0"),
    ({"padding": "wrap"}, "padding must be 'constant'"),
])
def test_blur_ig_bad_options(model, x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        blur_ig(model, x, 1, steps=2, **kwargs)
