"""Avg-sensitivity and the local Lipschitz estimate: by hand on a linear model and against
Quantus 0.6.0 on the shapes model, with the same noise (injected through ``perturbations=``
here and replayed to Quantus through its ``perturb_func``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import netlens as nl
from netlens.metrics.robustness import avg_sensitivity, local_lipschitz_estimate

from helpers import linear_model, quantus_explain

quantus = pytest.importorskip("quantus")


@pytest.fixture(scope="module")
def shapes():
    torch.manual_seed(0)
    model = nl.zoo.shapes_model()
    batch = nl.data.make_shapes(2, seed=21, size=32)
    return model, batch.images, batch.labels


def replay(noise: torch.Tensor, per_image: bool):
    """A Quantus ``perturb_func`` adding ``noise[k]`` ``(n, B, C, H, W)`` at its ``k``-th call
    (on the whole batch), or, with ``per_image`` (Quantus run with batch_size=1), image
    ``c // n``'s draw ``c % n`` at call ``c``."""
    calls = [0]
    n, b = noise.shape[:2]

    def f(arr, indices, **kwargs):
        c = calls[0]
        calls[0] += 1
        d = noise[c % n, c // n][None] if per_image else noise[c]
        return (torch.as_tensor(arr) + d.reshape(arr.shape[0], -1)).numpy()
    return f


def run_quantus(metric, model, x, y, **call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), channel_first=True,
                     device="cpu", **call)
    return torch.tensor(np.asarray(out, dtype=np.float64))


def test_by_hand_on_a_linear_model():
    """input x gradient of f = <w, x> is w * x, so E(x + d) - E(x) = w * d."""
    g = torch.Generator().manual_seed(0)
    w = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64) + 0.5
    model = linear_model(w)
    x = torch.rand(2, 1, 3, 3, generator=g, dtype=torch.float64)
    d = 0.1 * torch.randn(4, *x.shape, generator=g, dtype=torch.float64)
    ratio_e = torch.stack([(w[0] * d[k]).flatten(1).norm(dim=1) for k in range(4)])
    base = (w[0] * x).flatten(1).norm(dim=1)
    avg = avg_sensitivity(model, x, 0, "input_x_gradient", perturbations=d)
    assert torch.allclose(avg, (ratio_e / base).mean(0), atol=1e-12)
    lle = local_lipschitz_estimate(model, x, 0, "input_x_gradient", perturbations=d)
    step = d.flatten(2).norm(dim=2)
    assert torch.allclose(lle, (ratio_e / step).amax(0), atol=1e-12)
    # saliency of a linear model does not move: both are 0
    assert avg_sensitivity(model, x, 0, "saliency", perturbations=d).abs().max() < 1e-12
    assert local_lipschitz_estimate(model, x, 0, perturbations=d).abs().max() < 1e-12
    # the generator's draws are documented: draw k is torch.rand / torch.randn of x's shape
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    drawn = torch.stack([torch.randn(x.shape, generator=g2, dtype=x.dtype) * 0.1 *
                         (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
                         for _ in range(3)])
    lle_g = local_lipschitz_estimate(model, x, 0, "input_x_gradient", n=3, sigma=0.1,
                                     generator=g1)
    assert torch.allclose(lle_g, local_lipschitz_estimate(model, x, 0, "input_x_gradient",
                                                          perturbations=drawn), atol=1e-12)


def test_bad_input():
    model = linear_model(torch.ones(2, 1, 2, 2, dtype=torch.float64))
    x = torch.rand(1, 1, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="n must be"):
        avg_sensitivity(model, x, 0, n=0)
    with pytest.raises(ValueError, match="sigma"):
        local_lipschitz_estimate(model, x, 0, sigma=0.0)
    with pytest.raises(ValueError, match="perturbations must be"):
        avg_sensitivity(model, x, 0, perturbations=torch.zeros(2, 1, 1, 2, 3))
    with pytest.raises(ValueError, match="unchanged"):
        local_lipschitz_estimate(model, x, 0, perturbations=torch.zeros(1, *x.shape))


@pytest.mark.parametrize("name", ["saliency", "gradcam"])
def test_avg_sensitivity_equals_quantus(shapes, name):
    model, x, y = shapes
    method = getattr(nl.attribution, name)
    g = torch.Generator().manual_seed(1)
    noise = (torch.rand(3, *x.shape, generator=g) * 2 - 1) * 0.02
    ours = avg_sensitivity(model, x, y, name, perturbations=noise)
    metric = quantus.AvgSensitivity(nr_samples=3, perturb_func=replay(noise, False),
                                    disable_warnings=True)
    a = method(model, x, y).detach().float().numpy()
    theirs = run_quantus(metric, model, x, y, a_batch=a, explain_func=quantus_explain(method),
                         batch_size=len(x))
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), (ours, theirs)
    assert (ours > 0).all()


@pytest.mark.parametrize("normalize", [False, True])
def test_local_lipschitz_equals_quantus(shapes, normalize):
    model, x, y = shapes
    method = nl.attribution.saliency
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(3, *x.shape, generator=g) * 0.05
    ours = local_lipschitz_estimate(model, x, y, "saliency", normalize=normalize,
                                    perturbations=noise)
    # Quantus scales by the largest value of the whole batch: run it image by image so that
    # its scaling is per image, as ours
    metric = quantus.LocalLipschitzEstimate(
        nr_samples=3, perturb_func=replay(noise, True), normalise=normalize,
        normalise_func=quantus.normalise_func.normalise_by_max,
        normalise_func_kwargs={"normalise_axes": (1, 2, 3)}, disable_warnings=True)
    a = method(model, x, y).detach().float()
    if normalize:
        a = a / a.flatten(1).abs().amax(1).view(-1, 1, 1, 1)
    theirs = run_quantus(metric, model, x, y, a_batch=a.numpy(),
                         explain_func=quantus_explain(method), batch_size=1)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), (ours, theirs)
    assert (ours > 0).all()
