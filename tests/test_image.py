from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from netlens import image as nli


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)


def _raw(x: torch.Tensor) -> torch.Tensor:
    return nli.denormalize(x)


def test_load_path(tmp_path, rgb):
    path = tmp_path / "img.png"
    PIL.Image.fromarray(rgb).save(path)
    for src in (path, str(path)):
        x = nli.load(src)
        assert x.shape == (1, 3, 37, 53) and x.dtype == torch.float32
        assert np.array_equal(nli.to_numpy(x, dtype=np.uint8), rgb)


def test_load_missing_file(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        nli.load(missing)


def test_load_pil_modes(rgb):
    im = PIL.Image.fromarray(rgb)
    assert np.array_equal(nli.to_numpy(nli.load(im), dtype=np.uint8), rgb)
    gray = nli.load(im.convert("L"))
    assert gray.shape == (1, 3, 37, 53)
    raw = _raw(gray)
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-6)
    assert torch.allclose(raw[:, 0], raw[:, 2], atol=1e-6)
    assert nli.load(im.convert("RGBA")).shape == (1, 3, 37, 53)
    assert nli.load(im.convert("P")).shape == (1, 3, 37, 53)


def test_load_16bit():
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    ref = torch.from_numpy(arr / 65535.0).float()
    for src in (arr, PIL.Image.fromarray(arr)):
        x = nli.load(src, mean=None, std=None)
        assert torch.allclose(x[0, 0], ref, atol=1e-6)


def test_load_numpy_uint8_roundtrip_exact(rgb):
    x = nli.load(rgb)
    assert x.shape == (1, 3, 37, 53)
    assert np.array_equal(nli.to_numpy(x, dtype=np.uint8), rgb)
    assert np.array_equal(np.asarray(nli.to_pil(x)), rgb)
    x64 = nli.load(rgb, dtype=torch.float64)
    assert x64.dtype == torch.float64
    assert np.array_equal(nli.to_numpy(x64, dtype=np.uint8), rgb)


def test_load_numpy_float_gray_rgba(rgb):
    f = rgb.astype(np.float32) / 255
    assert torch.allclose(nli.load(f), nli.load(rgb), atol=1e-6)
    gray = nli.load(rgb[..., 0])
    assert gray.shape == (1, 3, 37, 53)
    assert torch.equal(gray, nli.load(rgb[..., :1]))
    rgba = np.dstack([rgb, np.zeros_like(rgb[..., :1])])
    assert torch.equal(nli.load(rgba), nli.load(rgb))


def test_load_tensor(rgb):
    t = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    t.requires_grad_(True)
    for src in (t, t[None]):
        x = nli.load(src, mean=None, std=None)
        assert x.shape == (1, 3, 37, 53) and not x.requires_grad
        assert torch.allclose(x[0], t.detach())
    assert torch.equal(nli.load(t[0]), nli.load(t[:1]))  # (H, W) and (1, H, W)
    u8 = torch.from_numpy(rgb).permute(2, 0, 1)
    assert torch.allclose(nli.load(u8), nli.load(rgb))
    assert torch.all(t.detach() >= 0)  # the input itself is untouched


def test_load_does_not_alias_input():
    t = torch.rand(3, 4, 4)
    x = nli.load(t, mean=None, std=None)
    x.add_(1)
    assert torch.all(t <= 1)


def test_load_device_dtype():
    x = nli.load(np.zeros((4, 4), np.uint8), device="cpu", dtype=torch.float64)
    assert x.device.type == "cpu" and x.dtype == torch.float64
    with pytest.raises(TypeError, match="floating"):
        nli.load(np.zeros((4, 4), np.uint8), dtype=torch.int64)


def test_load_unnormalized():
    x = nli.load(np.full((2, 2), 255, np.uint8), mean=None, std=None)
    assert torch.equal(x, torch.ones(1, 3, 2, 2))
    y = nli.load(np.full((2, 2), 255, np.uint8), mean=(0, 0, 0), std=(1, 1, 1))
    assert torch.equal(x, y)


@pytest.mark.parametrize(
    ("hw", "size", "out"),
    [
        ((37, 53), 20, (20, 20)),
        ((53, 37), 20, (20, 20)),
        ((37, 53), 64, (64, 64)),
        ((37, 53), (10, 30), (10, 30)),
        ((37, 53), None, (37, 53)),
    ],
)
def test_load_size(hw, size, out):
    x = nli.load(np.zeros((*hw, 3), np.uint8), size)
    assert x.shape == (1, 3, *out)


def test_size_int_is_resize_then_center_crop():
    # a 20x40 image, white in the middle and black at the sides
    arr = np.zeros((20, 40), np.uint8)
    arr[:, 8:32] = 255
    x = nli.load(arr, 10, mean=None, std=None)  # -> resized to 10x20, columns 5..15 kept
    assert x.shape == (1, 3, 10, 10)
    assert torch.allclose(x, torch.ones_like(x))


def test_size_matches_torchvision():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    t = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    ref = tvf.center_crop(tvf.resize(t, 24, antialias=True), 24)
    assert torch.allclose(nli.resize(t, 24), ref, atol=1e-6)


@pytest.mark.parametrize("size", [0, -3, (3,), (2, 0), 2.5, "big"])
def test_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        nli.load(np.zeros((8, 8), np.uint8), size)


def test_normalize_roundtrip_and_no_inplace():
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    before = x.clone()
    y = nli.normalize(x)
    assert torch.equal(x, before)
    m = torch.tensor(nli.IMAGENET_MEAN, dtype=torch.float64).view(3, 1, 1)
    s = torch.tensor(nli.IMAGENET_STD, dtype=torch.float64).view(3, 1, 1)
    assert torch.allclose(y, (x - m) / s)
    assert torch.allclose(nli.denormalize(y), x)
    assert torch.allclose(nli.denormalize(nli.normalize(x[0])), x[0])
    z = nli.normalize(x, None, None)
    assert torch.equal(z, x) and z is not x and z.data_ptr() != x.data_ptr()


def test_normalize_errors():
    with pytest.raises(ValueError, match="channels"):
        nli.normalize(torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        nli.normalize(torch.rand(4, 4))
    with pytest.raises(TypeError, match="floating"):
        nli.normalize(torch.zeros(3, 4, 4, dtype=torch.uint8))
    assert nli.normalize(torch.rand(1, 4, 4), mean=0.5, std=0.5).shape == (1, 4, 4)


def test_to_numpy_float_and_pil():
    x = torch.rand(1, 3, 6, 7)
    arr = nli.to_numpy(x, mean=None, std=None)
    assert arr.shape == (6, 7, 3) and arr.dtype == np.float32
    assert np.allclose(arr, x[0].permute(1, 2, 0).numpy())
    im = nli.to_pil(x, mean=None, std=None)
    assert im.size == (7, 6) and im.mode == "RGB"
    assert nli.to_pil(torch.rand(1, 6, 7), mean=None, std=None).mode == "L"
    clamped = nli.to_numpy(torch.full((3, 2, 2), 5.0), mean=None, std=None)
    assert clamped.max() == 1.0


def test_to_numpy_errors():
    with pytest.raises(ValueError, match="one image"):
        nli.to_numpy(torch.rand(2, 3, 4, 4))
    with pytest.raises(TypeError, match="Tensor"):
        nli.to_numpy(np.zeros((3, 4, 4)))
    with pytest.raises(TypeError, match="dtype"):
        nli.to_numpy(torch.rand(3, 4, 4), dtype=np.int32)


@pytest.mark.parametrize("bad", [1, None, [[0.0]], b"x"])
def test_load_bad_type(bad):
    with pytest.raises(TypeError, match="PIL.Image.Image"):
        nli.load(bad)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((3, 16, 16), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((1, 4, 4, 3), np.uint8),
        np.zeros(4, np.uint8),
        torch.rand(2, 3, 4, 4),
        torch.rand(5, 4, 4),
        torch.rand(4),
    ],
)
def test_load_bad_shape(bad):
    with pytest.raises(ValueError, match=r"\(H, W"):
        nli.load(bad)


def test_load_bad_values_and_dtypes():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nli.load(np.full((4, 4), 200.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nli.load(torch.randn(3, 4, 4) - 5)
    with pytest.raises(TypeError, match="dtype"):
        nli.load(np.zeros((4, 4), np.int64))
    with pytest.raises(TypeError, match="dtype"):
        nli.load(torch.zeros(3, 4, 4, dtype=torch.int32))


def test_load_one_channel_is_the_luminance_of_pil(tmp_path, rgb):
    path = tmp_path / "colour.png"
    PIL.Image.fromarray(rgb).save(path)
    gray = nli.load(path, channels=1, mean=None, std=None)
    assert gray.shape == (1, 1, *rgb.shape[:2])
    # PIL's own "L" conversion (integer-rounded ITU-R 601 luma): within one grey level
    want = np.asarray(PIL.Image.open(path).convert("L"), dtype=np.float64) / 255
    assert np.abs(gray[0, 0].numpy() - want).max() <= 1 / 255 + 1e-6
    one = nli.load(np.asarray(PIL.Image.open(path).convert("L")), channels=1, mean=0.5, std=0.5)
    assert one.shape == gray.shape  # a grayscale source stays one channel, normalized
    with pytest.raises(ValueError, match="channels must be 3 \\(RGB\\) or 1"):
        nli.load(path, channels=2)
