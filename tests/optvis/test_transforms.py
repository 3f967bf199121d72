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
from netlens.optvis.transforms import affine, random_crop, shear, thumbnail, translate

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
    "translate": translate(1.5, -1, fill=0.2), "shear": shear(0.3, -0.1),
    "affine": affine([[0.9, 0.2, 1.0], [-0.1, 1.1, 0.5]]),
    "scale_interval": random_scale(interval=(0.8, 1.25)),
    "rotate_interval": random_rotate(interval=(-20, 20)),
    "composed_fill": compose([jitter(1), translate(0.5, 0, fill=0.7), random_scale([1.1])]),
}
ALL = pytest.mark.parametrize("t", list(TRANSFORMS.values()), ids=list(TRANSFORMS))


@pytest.mark.parametrize("t", [jitter(0), random_scale([1]), random_rotate([0]), pad(0),
                               compose([]), compose([pad(5)]),
                               compose([jitter(0), random_scale([1.0]), random_rotate([0.0])]),
                               translate(0, 0), affine([[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
                               random_scale(interval=(1, 1)), thumbnail(10)],
                         ids=["jitter", "scale", "rotate", "pad", "empty", "pad_crop", "chain",
                              "translate", "affine", "interval", "thumbnail"])
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
    (lambda: random_scale(), ValueError, "either scales"),
    (lambda: random_scale([1.0], interval=(0.9, 1.1)), ValueError, "not both"),
    (lambda: random_scale(interval=(1.1, 0.9)), ValueError, "a <= b"),
    (lambda: random_scale(interval=(0.0, 1.1)), ValueError, "> 0"),
    (lambda: random_rotate(interval=(5,)), ValueError, "pair"),
    (lambda: random_rotate(interval=(0, math.nan)), ValueError, "finite"),
    (lambda: affine([[1, 0, 0], [2, 0, 0]]), ValueError, "not invertible"),
    (lambda: affine([[1, 0], [0, 1]]), ValueError, r"\[\[a, b, tx\]"),
    (lambda: affine("x"), ValueError, "2x3"),
    (lambda: shear(1.0, 1.0), ValueError, "not invertible"),
    (lambda: translate(1, math.inf), ValueError, "finite"),
    (lambda: translate(1, 0, fill=math.nan), ValueError, "fill"),
    (lambda: random_crop(), ValueError, "either size"),
    (lambda: random_crop(4, delta=1), ValueError, "not both"),
    (lambda: random_crop(0), ValueError, "int >= 1"),
    (lambda: random_crop(delta=-1), ValueError, "int >= 0"),
    (lambda: random_crop(9)(image(1, 1, 8, 12)), ValueError, "cannot crop"),
    (lambda: thumbnail((4, 0)), ValueError, "int >= 1"),
    (lambda: thumbnail(4, mode="nearest"), ValueError, "mode"),
]


@pytest.mark.parametrize("make, error, match", BAD)
def test_bad_arguments_raise_clear_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


# -- the original's transforms: deterministic maps, intervals, crops, thumbnails --------------
def test_integer_translate_is_a_shift_with_the_fill_or_the_edge():
    x = image(2, 3, 7, 9, dtype=torch.float64)
    out = translate(2, -1, fill=0.3)(x)
    expected = torch.full_like(x, 0.3)
    expected[..., :-1, 2:] = x[..., 1:, :-2]  # out[i, j] = x[i + 1, j - 2]
    assert torch.equal(out, expected)
    edge = translate(-3, 2)(x)  # no fill: the edge pixels repeat, as jitter's
    padded = F.pad(x, (0, 3, 2, 0), mode="replicate")
    assert torch.equal(edge, padded[..., :7, 3:])


def test_fractional_translate_is_bilinear_and_equals_the_affine_matrix():
    ramp = torch.arange(9, dtype=torch.float64).expand(1, 1, 5, 9)
    out = translate(0.5, 0)(ramp)
    assert torch.allclose(out[..., 1:], ramp[..., 1:] - 0.5, atol=1e-12)  # in(x - 1/2)
    assert torch.allclose(out[..., 0], ramp[..., 0], atol=1e-12)  # the edge repeats
    x = image(1, 2, 8, 10, dtype=torch.float64)
    assert torch.equal(translate(1.5, -0.25, fill=0.1)(x),
                       affine([[1, 0, 1.5], [0, 1, -0.25]], fill=0.1)(x))


@pytest.mark.parametrize("angle", [20, -35, 90])
def test_an_affine_rotation_matrix_equals_rotate(angle):
    x = image(2, 3, 11, 13, dtype=torch.float64)
    t = math.radians(angle)
    m = torch.tensor([[math.cos(t), math.sin(t), 0.0], [-math.sin(t), math.cos(t), 0.0],
                      [0.0, 0.0, 1.0]])
    assert torch.allclose(affine(m)(x), random_rotate([angle])(x), atol=1e-12)
    # a constant fill is the constant padding seen through the same map
    padded = pad(6, mode="constant", value=0.25)(x)
    assert torch.allclose(affine(m, fill=0.25)(x),
                          random_rotate([angle])(padded)[..., 6:-6, 6:-6], atol=1e-12)


def test_shear_moves_each_row_by_its_distance_from_the_centre():
    x = image(1, 2, 5, 12, dtype=torch.float64)
    out = shear(1.0, fill=0.0)(x)  # row i is i - 2 pixels below the centre: it moves i - 2
    for i in range(5):
        k = i - 2
        expected = torch.zeros_like(x[..., i, :])
        if k >= 0:
            expected[..., k:] = x[..., i, :12 - k]
        else:
            expected[..., :12 + k] = x[..., i, -k:]
        assert torch.allclose(out[..., i, :], expected, atol=1e-12), i
    assert torch.allclose(shear(y=1.0)(x.transpose(-1, -2)),
                          shear(x=1.0)(x).transpose(-1, -2), atol=1e-12)


def test_compose_keeps_a_constant_fill_step_apart():
    x = image(1, 3, 10, 10, dtype=torch.float64)
    fused = compose([random_rotate([10]), translate(2, 0, fill=0.5), random_scale([1.2])])(x)
    steps = random_scale([1.2])(translate(2, 0, fill=0.5)(random_rotate([10])(x)))
    assert torch.allclose(fused, steps, atol=1e-12)


def test_an_interval_draws_a_continuous_value_a_list_only_its_members():
    x = image(1, 3, 15, 15, dtype=torch.float64)
    for seed in range(5):
        u = float(torch.rand(1, generator=gen(seed), dtype=torch.float64))
        factor, angle = 0.8 + u * (1.25 - 0.8), -20 + u * 40
        assert torch.equal(random_scale(interval=(0.8, 1.25))(x, generator=gen(seed)),
                           random_scale([factor])(x))
        assert torch.equal(random_rotate(interval=(-20, 20))(x, generator=gen(seed)),
                           random_rotate([angle])(x))
    # a positional pair is the list of two values, never the interval between them
    ends = [random_scale([0.8])(x), random_scale([1.25])(x)]
    listed = [random_scale((0.8, 1.25))(x, generator=gen(s)) for s in range(8)]
    ranged = [random_scale(interval=(0.8, 1.25))(x, generator=gen(s)) for s in range(8)]
    assert all(any(torch.equal(o, e) for e in ends) for o in listed)
    assert not any(torch.equal(o, e) for o in ranged for e in ends)


def test_random_crop_is_a_slice_at_a_seeded_uniform_position():
    x = image(2, 3, 9, 12)
    corners = set()
    for seed in range(20):
        out = random_crop((5, 7))(x, generator=gen(seed))
        found = [(i, j) for i in range(5) for j in range(6)
                 if torch.equal(out, x[..., i:i + 5, j:j + 7])]
        assert len(found) == 1
        corners.add(found[0])
        assert torch.equal(out, random_crop((5, 7))(x, generator=gen(seed)))
    assert len(corners) > 8
    assert random_crop(delta=(2, 3))(x, generator=gen(0)).shape == (2, 3, 7, 9)
    assert random_crop(delta=4)(x, generator=gen(0)).shape == (2, 3, 5, 8)
    assert torch.equal(random_crop((9, 12))(x), x)
    assert compose([random_crop(6)], keep_size=False)(x, generator=gen(0)).shape[-2:] == (6, 6)


def test_thumbnail_keeps_the_aspect_and_never_enlarges():
    x = image(1, 3, 8, 12, dtype=torch.float64)
    small = thumbnail((4, 100))(x)  # the height binds: a factor 2, area means of 2x2 blocks
    assert torch.allclose(small, F.avg_pool2d(x, 2), atol=1e-12)
    assert thumbnail((100, 3))(x).shape[-2:] == (2, 3)
    assert thumbnail(20)(image(1, 3, 37, 50)).shape[-2:] == (15, 20)  # 37 * 0.4 = 14.8
    assert torch.equal(thumbnail((8, 12))(x), x) and torch.equal(thumbnail(50)(x), x)
    for mode in ("bilinear", "bicubic"):
        out = thumbnail(6, mode=mode)(x)
        assert out.shape[-2:] == (4, 6) and out.dtype == x.dtype
        assert float((out - F.avg_pool2d(x, 2)).abs().max()) < 0.5
