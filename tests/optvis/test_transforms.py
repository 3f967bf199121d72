"""Transformation robustness for feature visualization (CONTRIBUTING.md test G20)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from netlens.optvis import (
    Transform,
    compose,
    jitter,
    pad,
    random_rotate,
    random_scale,
    standard_transforms,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def image(*shape: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> torch.Tensor:
    return torch.rand(*shape, generator=gen(7), dtype=dtype).to(device)


TRANSFORMS: dict[str, Transform] = {
    "pad_reflect": pad(2), "pad_constant": pad(2, mode="constant", value=0.3),
    "pad_replicate": pad(2, mode="replicate"), "jitter": jitter(2),
    "scale": random_scale([0.8, 1.3]), "rotate": random_rotate([-30, 25]),
    "standard": standard_transforms(),
    "composed": compose([jitter(1), random_rotate([15]), random_scale([1.1])]),
}
ALL = pytest.mark.parametrize("t", list(TRANSFORMS.values()), ids=list(TRANSFORMS))


@pytest.mark.parametrize("t", [jitter(0), random_scale([1]), random_rotate([0]), pad(0),
                               compose([]), compose([pad(5)]),
                               compose([jitter(0), random_scale([1.0]), random_rotate([0.0])])],
                         ids=["jitter", "scale", "rotate", "pad", "empty", "pad_crop", "chain"])
def test_identities_are_exact(t):
    x = image(2, 3, 9, 10)
    assert torch.equal(t(x, generator=gen()), x)


@ALL
def test_differentiable(t):
    x = image(1, 1, 4, 5, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: t(v, generator=gen(3)), (x,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@ALL
def test_keeps_batch_dtype_device_and_size(t, dtype, device):
    x = image(3, 2, 17, 20, dtype=dtype, device=device)
    out = t(x, generator=gen(1))
    grow = 2 * t.w if hasattr(t, "w") else 0
    assert out.shape == (3, 2, 17 + grow, 20 + grow)
    assert out.dtype == dtype and out.device == x.device
    # one draw serves the batch: image i of the output is the transform of image i alone
    single = t(x[1:2], generator=gen(1))
    assert torch.allclose(out[1:2], single, atol=1e-6)


@pytest.mark.parametrize("size", [(64, 64), (37, 50)])
def test_standard_set_keeps_the_size_and_the_range(size):
    x = image(2, 3, *size)
    for seed in range(4):
        out = standard_transforms()(x, generator=gen(seed))
        assert out.shape == x.shape
        assert float(out.min()) >= 0 and float(out.max()) <= 1  # bilinear mixes and grey fill


def test_seeded_through_the_generator_only():
    x = image(1, 3, 24, 24)
    t = standard_transforms()
    state = torch.random.get_rng_state()
    a, b = t(x, generator=gen(11)), t(x, generator=gen(11))
    others = [t(x, generator=gen(s)) for s in range(12, 15)]
    t(x)  # no generator: a fresh one, never the global RNG
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b)
    assert all(not torch.equal(a, o) for o in others)


def test_jitter_shifts_by_an_integer_within_bounds():
    x = image(1, 2, 15, 16)
    padded = F.pad(x, (3, 3, 3, 3), mode="replicate")  # the documented edge fill
    shifts = set()
    for seed in range(12):
        out = jitter(3)(x, generator=gen(seed))
        found = [(dx, dy) for dx in range(-3, 4) for dy in range(-3, 4)
                 if torch.equal(out, padded[..., 3 - dy:3 - dy + 15, 3 - dx:3 - dx + 16])]
        assert len(found) == 1  # content moved by exactly (dx, dy): out[i, j] = x[i - dy, j - dx]
        shifts.add(found[0])
    assert len(shifts) > 3


@pytest.mark.parametrize("size", [8, 9])
@pytest.mark.parametrize("angle, k", [(90, 1), (-90, -1), (180, 2)])
def test_rotation_matches_rot90(size, angle, k):
    x = image(2, 3, size, size, dtype=torch.float64)
    out = random_rotate([angle])(x)
    assert torch.allclose(out, torch.rot90(x, k, dims=(-2, -1)), atol=1e-9)


def test_scale_zooms_about_the_centre():
    w = 21
    ramp = torch.arange(w, dtype=torch.float64).expand(1, 1, 11, w)
    out = random_scale([2.0])(ramp)
    centre = (w - 1) / 2
    expected = (ramp - centre) / 2 + centre  # out(x) = in(x / 2) about the centre
    assert torch.allclose(out, expected, atol=1e-9)


def test_fused_pad_rotate_crop_equals_the_steps_one_by_one():
    x = image(1, 3, 20, 23, dtype=torch.float64)
    fused = compose([pad(6, mode="constant"), random_rotate([20])])(x)
    steps = random_rotate([20])(pad(6, mode="constant")(x))[..., 6:-6, 6:-6]
    assert fused.shape == x.shape
    assert torch.allclose(fused, steps, atol=1e-9)


def test_compose_takes_plain_callables_and_keep_size():
    x = image(1, 3, 10, 10)
    assert torch.equal(compose([lambda v: v * 2])(x), x * 2)
    assert compose([pad(3)], keep_size=False)(x).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="keep_size=False"):
        compose([lambda v: v[..., 1:, 1:]])(x)


BAD = [
    (lambda: pad(-1), ValueError, "int >= 0"),
    (lambda: pad(1.5), ValueError, "int >= 0"),
    (lambda: pad(2, mode="circular"), ValueError, "mode"),
    (lambda: pad(2, mode="constant", value=math.nan), ValueError, "finite"),
    (lambda: pad(8)(image(1, 1, 5, 9)), ValueError, "mode='constant'"),
    (lambda: jitter(-1), ValueError, "jitter"),
    (lambda: random_scale([]), ValueError, "empty"),
    (lambda: random_scale([1.0, 0.0]), ValueError, "> 0"),
    (lambda: random_scale(1.1), TypeError, "sequence"),
    (lambda: random_rotate([]), ValueError, "empty"),
    (lambda: random_rotate([math.inf]), ValueError, "finite"),
    (lambda: random_rotate("90"), TypeError, "sequence"),
    (lambda: compose([1]), TypeError, "callable"),
    (lambda: compose(jitter(1)), TypeError, "sequence"),
    (lambda: jitter(1)(image(3, 8, 8)), ValueError, "B, C, H, W"),
    (lambda: jitter(1)(image(1, 3, 8, 8).long()), ValueError, "float"),
    (lambda: jitter(1)([1.0]), TypeError, "tensor"),
    (lambda: standard_transforms()(image(1, 3, 8, 8), generator=1), TypeError, "generator"),
]


@pytest.mark.parametrize("make, error, match", BAD)
def test_bad_arguments_raise_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()
