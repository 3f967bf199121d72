"""Parameterizations of feature visualization (CONTRIBUTING.md test G20)."""

from __future__ import annotations

import math

import pytest
import torch

from netlens.optvis import ImageParam, RawParam
from netlens.optvis.param import Param

SIZES = [(32, 32), (31, 45)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_exports_unpack_like_a_pair():
    p = ImageParam(16, generator=gen())
    params, render = p
    assert isinstance(p, Param) and render is p
    assert params == list(p.parameters()) and len(params) == 1
    assert torch.equal(render(), p())
    image = torch.rand(1, 3, 8, 8, generator=gen())
    params, render = RawParam(image)
    assert len(params) == 1 and torch.equal(render(), image)


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_image_param_gives_real_images_in_range(size, fft):
    p = ImageParam(size, batch=3, fft=fft, decorrelate=True, generator=gen())
    image = p().detach()
    assert p.shape == image.shape == (3, 3, *size)
    assert image.dtype == torch.float32 and not image.is_complex()
    assert bool(torch.isfinite(image).all())
    assert float(image.min()) >= 0 and float(image.max()) <= 1
    assert not torch.equal(image[0], image[1])  # independent images
    assert float(image.std()) > 1e-4  # random, not constant


def test_int_size_dtype_and_single_channel():
    p = ImageParam(9, channels=1, decorrelate=False, dtype=torch.float64, generator=gen())
    assert p().shape == (1, 1, 9, 9) and p().dtype == torch.float64


def _radial_slope(image: torch.Tensor, lo: int, hi: int) -> float:
    """Log-log slope of the radially averaged power spectrum, over radii lo..hi (in bins of
    1 / size cycles per pixel); an oracle from the definition, independent of the library."""
    h, w = image.shape[-2:]
    power = torch.fft.fft2(image - image.mean(dim=(-2, -1), keepdim=True)).abs().square()
    power = power.mean(dim=(0, 1))
    fy, fx = torch.fft.fftfreq(h, dtype=torch.float64), torch.fft.fftfreq(w, dtype=torch.float64)
    radius = torch.round(torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) * h).long()
    r = torch.arange(lo, hi + 1)
    mean = torch.stack([power[radius == k].mean() for k in r])
    x, y = torch.log(r.double()), torch.log(mean)
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())


@pytest.mark.parametrize("decay_power", [1.0, 1.5])
def test_fft_init_has_a_power_law_spectrum(decay_power):
    p = ImageParam(64, batch=16, sigmoid=False, decorrelate=False, decay_power=decay_power,
                   generator=gen(1), dtype=torch.float64)
    image = p().detach()
    assert 0 < float(image.min()) and float(image.max()) < 1  # the clamp did not bite
    slope = _radial_slope(image, 4, 24)
    assert slope == pytest.approx(-2 * decay_power, abs=0.15)


@pytest.mark.parametrize("sigmoid", [True, False])
@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("size", SIZES + [(17, 8)])
def test_start_image_round_trips(size, fft, decorrelate, sigmoid):
    image = torch.rand(2, 3, *size, generator=gen(2))
    image[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.5])  # exact extremes come back too
    p = ImageParam(image=image, fft=fft, decorrelate=decorrelate, sigmoid=sigmoid)
    assert p.shape == image.shape
    assert float((p().detach() - image).abs().max()) < 1e-3


def test_start_image_with_batch_one_is_repeated():
    image = torch.rand(1, 3, 12, 13, generator=gen())
    p = ImageParam(image=image, batch=3)
    out = p().detach()
    assert out.shape == (3, 3, 12, 13)
    assert float((out - image).abs().max()) < 1e-3
    image64 = image.double()
    assert ImageParam(image=image64)().dtype == torch.float64


@pytest.mark.parametrize("fft", [True, False])
def test_seeding(fft):
    state = torch.random.get_rng_state()
    a = ImageParam((12, 15), batch=2, fft=fft, generator=gen(5))()
    b = ImageParam((12, 15), batch=2, fft=fft, generator=gen(5))()
    c = ImageParam((12, 15), batch=2, fft=fft, generator=gen(6))()
    ImageParam(8)  # no generator: a fresh one, still not the global
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("fft", [True, False])
def test_gradients_reach_the_parameters(fft):
    p = ImageParam((10, 11), fft=fft, generator=gen())
    weights = torch.randn(p.shape, generator=gen(1))
    (p() * weights).sum().backward()
    (grad,) = [q.grad for q in p.parameters()]
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0
    params, render = p
    before = render().detach().clone()
    with torch.no_grad():  # one plain gradient-ascent step (torch.optim is slow to import)
        for q in params:
            q.add_(q.grad, alpha=1e-3 / float(q.grad.abs().max()))
    after = render().detach()
    assert float(((after - before) * weights).sum()) > 0  # one ascent step moves uphill


def test_raw_param_copies_and_clamps_straight_through():
    image = torch.rand(2, 3, 5, 6, generator=gen())
    p = RawParam(image)
    assert torch.equal(p(), image) and p.shape == image.shape
    assert p.pixels.data_ptr() != image.data_ptr()
    with torch.no_grad():
        p.pixels.add_(10.0)
    assert torch.equal(image, torch.rand(2, 3, 5, 6, generator=gen()))  # caller's untouched
    out = p()
    assert float(out.detach().max()) == 1.0 and float(out.detach().min()) >= 0  # clamped
    out.sum().backward()
    assert torch.equal(p.pixels.grad, torch.ones_like(image))  # straight-through gradient
    unclamped = RawParam(image, clamp=False)
    with torch.no_grad():
        unclamped.pixels.sub_(5.0)
    assert float(unclamped().detach().max()) < 0


BAD = [
    (lambda: ImageParam(0), ValueError, "size"),
    (lambda: ImageParam((4, 5, 6)), ValueError, "size"),
    (lambda: ImageParam(True), ValueError, "size"),
    (lambda: ImageParam(), ValueError, "give the image size"),
    (lambda: ImageParam(image=torch.rand(3, 8, 8)), ValueError, "4 dimensions"),
    (lambda: ImageParam(image=torch.rand(1, 3, 8, 8) * 2), ValueError, r"\[0, 1\]"),
    (lambda: ImageParam(image=torch.full((1, 3, 4, 4), math.nan)), ValueError, "NaN"),
    (lambda: ImageParam(image=torch.zeros(1, 3, 4, 4, dtype=torch.uint8)), TypeError, "float"),
    (lambda: ImageParam(image=[[0.5]]), TypeError, "torch.Tensor"),
    (lambda: ImageParam(8, image=torch.rand(1, 3, 9, 9)), ValueError, "contradicts"),
    (lambda: ImageParam(image=torch.rand(2, 3, 8, 8), batch=3), ValueError, "batch"),
    (lambda: ImageParam(image=torch.rand(1, 3, 8, 8), channels=1), ValueError, "channels"),
    (lambda: ImageParam(8, channels=1), ValueError, "decorrelate=False"),
    (lambda: ImageParam(8, channels=0, decorrelate=False), ValueError, "channels"),
    (lambda: ImageParam(8, batch=0), ValueError, "batch"),
    (lambda: ImageParam(8, sd=-1.0), ValueError, "sd"),
    (lambda: ImageParam(8, decay_power=math.inf), ValueError, "decay_power"),
    (lambda: ImageParam(8, generator=0), TypeError, "generator"),
    (lambda: ImageParam(8, dtype=torch.int64), TypeError, "dtype"),
    (lambda: RawParam(torch.rand(8, 8)), ValueError, "4 dimensions"),
    (lambda: RawParam(torch.rand(1, 3, 4, 4) - 1), ValueError, "denormalize"),
]


@pytest.mark.parametrize("make, error, match", BAD)
def test_bad_arguments_raise_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_with_a_cpu_generator():
    cpu = ImageParam(16, generator=gen(3))()
    cuda = ImageParam(16, generator=gen(3), device="cuda")()
    assert cuda.device.type == "cuda"
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-5)
    image = torch.rand(1, 3, 15, 16, generator=gen(), device="cpu").cuda()
    assert float((ImageParam(image=image)().detach() - image).abs().max()) < 1e-3
