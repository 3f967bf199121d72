"""noise_tunnel: SmoothGrad is its special case (bit for bit), Captum's NoiseTunnel given the
same noise, every variant's definition, any registered method, targets, errors."""

from __future__ import annotations

import pytest
import torch

import netlens as nl
from netlens.attribution import integrated_gradients, smooth_grad
from netlens.attribution.noise_tunnel import noise_tunnel

from helpers import assert_untouched, model_state, small_cnn


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 3, 12, 12, generator=gen(1), dtype=torch.float64)


@pytest.mark.parametrize("variant", ["mean", "squared", "vargrad"])
@pytest.mark.parametrize("target", [None, [1, 2, 3], nl.targets.TopK(2)],
                         ids=["pred", "cls", "topk"])
@pytest.mark.parametrize("batch_size", [4, 100])
def test_saliency_tunnel_is_smooth_grad_exactly(model, x, variant, target, batch_size):
    a = smooth_grad(model, x, target, n=5, sigma=0.2, variant=variant, generator=gen(),
                    batch_size=batch_size, progress=False)
    b = noise_tunnel(model, x, target, n=5, sigma=0.2, variant=variant, generator=gen(),
                     batch_size=batch_size, progress=False)
    assert torch.equal(a, b)


def test_guided_tunnel_is_guided_smooth_grad(model, x):
    a = smooth_grad(model, x, 1, n=4, guided=True, generator=gen(), batch_size=5)
    b = noise_tunnel(model, x, 1, method="guided_backprop", n=4, generator=gen(), batch_size=5)
    assert torch.equal(a, b)


@pytest.mark.parametrize("nt_type, variant", [
    ("smoothgrad", "mean"), ("smoothgrad_sq", "squared"), ("vargrad", "vargrad")])
def test_equals_captum_noise_tunnel_given_the_same_noise(model, x, nt_type, variant):
    from captum.attr import IntegratedGradients, NoiseTunnel

    n, std = 4, 0.1
    target = torch.tensor([0, 2, 3])
    torch.manual_seed(5)
    theirs = NoiseTunnel(IntegratedGradients(model)).attribute(
        x, nt_type=nt_type, nt_samples=n, stdevs=std, target=target, n_steps=6,
        method="riemann_middle")
    torch.manual_seed(5)  # Captum's draw: float32, image-major, each image repeated n times
    drawn = torch.normal(0, torch.full((3 * n, *x.shape[1:]), std)).to(x.dtype)
    noise = drawn.view(3, n, *x.shape[1:]).transpose(0, 1)
    ours = noise_tunnel(model, x, target, method="integrated_gradients", n=n, variant=variant,
                        noise=noise, options={"steps": 6, "method": "riemann_middle"})
    # Captum's path points carry float32 round-off of the alphas: about 3e-8 of the largest value
    assert (ours - theirs).abs().max() <= 1e-6 * theirs.abs().max()


def test_mean_is_the_average_of_the_method_on_the_noisy_images(model, x):
    """The definition, for a method with options: IG of each noisy copy, averaged."""
    noise = torch.randn(3, *x.shape, generator=gen(2), dtype=x.dtype) * 0.05
    ours = noise_tunnel(model, x, [0, 1, 2], method="integrated_gradients", n=3, noise=noise,
                        options={"steps": 5}, batch_size=2)
    want = sum(integrated_gradients(model, x + noise[k], [0, 1, 2], steps=5)
               for k in range(3)) / 3
    assert torch.allclose(ours, want, rtol=1e-10, atol=1e-13)


def test_any_method_targets_and_maps(model, x):
    out = noise_tunnel(model, x, nl.targets.TopK(2), method="gradcam", n=2,
                       options={"layer": "conv2"}, generator=gen())
    assert out.shape == (3, 2, 1, 12, 12)
    occ = noise_tunnel(model, x, 1, method="occlusion", n=2,
                       options={"window": 4, "stride": 4}, generator=gen(), batch_size=3)
    assert occ.shape == (3, 1, 12, 12) and torch.isfinite(occ).all()
    # a stochastic inner method draws from the same generator: one seed fixes the result
    r1 = noise_tunnel(model, x, 1, method="rise", n=2, options={"n": 8, "cells": 2},
                      generator=gen(3))
    r2 = noise_tunnel(model, x, 1, method="rise", n=2, options={"n": 8, "cells": 2},
                      generator=gen(3))
    assert torch.equal(r1, r2)


def test_sigma_zero_is_the_method(model, x):
    out = noise_tunnel(model, x, [1, 1, 0], method="input_x_gradient", n=3, sigma=0.0,
                       generator=gen())
    assert torch.allclose(out, nl.attribution.input_x_gradient(model, x, [1, 1, 0]),
                          rtol=1e-12, atol=1e-15)


def test_model_untouched_and_no_grad(model, x):
    before = model_state(model)
    with torch.no_grad():
        out = noise_tunnel(model, x, 1, n=2, generator=gen())
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    assert_untouched(model, before)


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "n must be an int >= 1"),
    ({"sigma": -1.0}, "sigma must be a finite number >= 0"),
    ({"variant": "median"}, "variant must be"),
    ({"method": "nope"}, "registered attribution method"),
    ({"method": "noise_tunnel"}, "cannot tunnel itself"),
    ({"options": {"steps": 3}}, "saliency takes no option 'steps'"),
    ({"options": {"target": 1}}, "must not hold 'target'"),
    ({"noise": torch.zeros(2, 3, 3, 12, 12)}, r"noise must be a tensor \(n, B, C, H, W\)"),
])
def test_bad_options(model, x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        noise_tunnel(model, x, 1, **{"n": 3, **kwargs})


def test_target_out_of_range(model, x):
    with pytest.raises(ValueError, match="out of range"):
        noise_tunnel(model, x, 10**6, n=2, generator=gen())
