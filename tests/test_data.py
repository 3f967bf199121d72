"""Tests for netlens.data: the synthetic shapes dataset and the ImageNet labels."""

from __future__ import annotations

import time

import pytest
import torch

from netlens.data import SHAPES_CLASSES, ShapesBatch, imagenet_classes, make_shapes


@pytest.fixture(scope="module")
def batch() -> ShapesBatch:
    return make_shapes(256, seed=11)


def test_shapes_dtypes_and_ranges(batch: ShapesBatch) -> None:
    assert batch.images.shape == (256, 3, 64, 64)
    assert batch.images.dtype == torch.float32
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    assert batch.labels.shape == (256,) and batch.labels.dtype == torch.int64
    assert batch.labels.min() >= 0 and batch.labels.max() < len(SHAPES_CLASSES)
    for m in (batch.masks, batch.distractor_masks):
        assert m.shape == (256, 1, 64, 64) and m.dtype == torch.bool


@pytest.mark.parametrize("size", [32, 48, 96])
def test_other_sizes(size: int) -> None:
    b = make_shapes(16, size=size, seed=3)
    assert b.images.shape == (16, 3, size, size)
    assert b.masks.shape == b.distractor_masks.shape == (16, 1, size, size)
    assert b.masks.flatten(1).any(1).all() and b.distractor_masks.flatten(1).any(1).all()
    assert not (b.masks & b.distractor_masks).any()


def test_masks_nonempty_inside_and_disjoint(batch: ShapesBatch) -> None:
    for m in (batch.masks, batch.distractor_masks):
        assert m.flatten(1).any(1).all()
        # Not cut by the border: no mask pixel in the outermost rows and columns.
        border = torch.ones(64, 64, dtype=torch.bool)
        border[1:-1, 1:-1] = False
        assert not (m & border).any()
    assert not (batch.masks & batch.distractor_masks).any()
    # At least a pixel of free space between them: dilating the object by one pixel still misses.
    dilated = torch.nn.functional.max_pool2d(batch.masks.float(), 3, 1, 1) > 0
    assert not (dilated & batch.distractor_masks).any()


def test_equal_ink(batch: ShapesBatch) -> None:
    obj = batch.masks.flatten(1).sum(1).float()
    dis = batch.distractor_masks.flatten(1).sum(1).float()
    ratio = dis / obj
    assert ratio.min() > 0.85 and ratio.max() < 1.15
    assert abs(ratio.mean().item() - 1.0) < 0.02
    # Object area is the same across classes, so size is no cue to the class.
    means = torch.stack([obj[batch.labels == k].mean() for k in range(len(SHAPES_CLASSES))])
    assert (means.max() / means.min()).item() < 1.2


def test_pixels_show_the_masks(batch: ShapesBatch) -> None:
    # Inside each mask the image is a flat colour plus noise: a small spread per channel.
    img, m = batch.images[0], batch.masks[0, 0]
    assert img[:, m].std(1).max() < 0.15


def test_distractor_off() -> None:
    b = make_shapes(32, seed=5, distractor=False)
    assert not b.distractor_masks.any()
    assert b.masks.flatten(1).any(1).all()


def test_labels_balanced() -> None:
    b = make_shapes(1001, seed=2)
    counts = torch.bincount(b.labels, minlength=len(SHAPES_CLASSES))
    assert counts.min() >= 1001 // len(SHAPES_CLASSES)
    assert counts.max() <= 1001 // len(SHAPES_CLASSES) + 1
    # Random order, not sorted blocks.
    assert (b.labels[1:] != b.labels[:-1]).float().mean() > 0.5


def test_deterministic_and_rng_untouched() -> None:
    state = torch.random.get_rng_state()
    a = make_shapes(64, seed=7)
    b = make_shapes(64, generator=torch.Generator().manual_seed(7))
    c = make_shapes(64, seed=8)
    make_shapes(4)  # unseeded: fresh entropy, still not the global RNG
    assert torch.equal(torch.random.get_rng_state(), state)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a.images, c.images)


def test_generator_is_consumed() -> None:
    gen = torch.Generator().manual_seed(0)
    first, second = make_shapes(8, generator=gen), make_shapes(8, generator=gen)
    assert not torch.equal(first.images, second.images)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="either"):
        make_shapes(2, seed=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="size"):
        make_shapes(2, size=8, seed=0)
    with pytest.raises(ValueError, match="n must"):
        make_shapes(-1, seed=0)
    with pytest.raises(TypeError, match="Generator"):
        make_shapes(2, generator=0)  # type: ignore[arg-type]


def test_empty_batch() -> None:
    b = make_shapes(0, seed=0)
    assert b.images.shape == (0, 3, 64, 64) and b.labels.shape == (0,)


def test_fast_enough() -> None:
    make_shapes(16, seed=0)  # warm-up
    start = time.perf_counter()
    make_shapes(2000, seed=1)
    # Measured about 0.5 s on 2 cores; the bound only catches a de-vectorized generator.
    assert time.perf_counter() - start < 5.0


def test_imagenet_classes() -> None:
    labels = imagenet_classes()
    assert len(labels) == 1000 == len(set(labels))
    assert labels[0] == "tench" and labels[1] == "goldfish" and labels[999] == "toilet tissue"
    assert all(isinstance(s, str) and s == s.strip() and s for s in labels)
    labels.append("mutated")
    assert len(imagenet_classes()) == 1000


def test_example_photo_and_its_drawn_stand_in(monkeypatch):
    import matplotlib.cbook

    from netlens.data import example_photo

    photo, source = example_photo(48)
    assert photo.shape == (1, 3, 48, 48) and "Grace Hopper" in source
    assert 0 <= float(photo.min()) and float(photo.max()) <= 1

    def missing(*args, **kwargs):
        raise FileNotFoundError("no sample data")
    monkeypatch.setattr(matplotlib.cbook, "get_sample_data", missing)
    drawn, source = example_photo(48)
    assert drawn.shape == (1, 3, 48, 48) and "drawn" in source
    assert not torch.allclose(drawn, photo)


def test_example_photos_ship_with_their_imagenet_classes() -> None:
    """nl.data.example: six public-domain or CC0 photos shipped with netlens (Grace Hopper from
    matplotlib), each with its ImageNet class (or None) and credit; Netlens 1.x's
    get_example_data."""
    from netlens.data import EXAMPLES, example, imagenet_classes

    assert len(EXAMPLES) >= 5
    means = set()
    for name, (_, target, credit) in EXAMPLES.items():
        image, t, label, cred = example(name)
        assert image.dim() == 4 and image.shape[:2] == (1, 3) and min(image.shape[2:]) >= 200
        assert 0 <= float(image.min()) < float(image.max()) <= 1 and image.dtype == torch.float32
        assert t == target and cred == credit and ("CC0" in credit or "public domain" in credit)
        assert label == (imagenet_classes()[t] if t is not None else label)
        means.add(round(float(image.mean()), 4))
        assert tuple(example(name, 64).image.shape) == (1, 3, 64, 64)
        gray = example(name, channels=1).image
        assert gray.shape == (1, 1, *image.shape[2:])
    assert len(means) == len(EXAMPLES)  # six different photos
    assert example("chelsea").label == "tabby" and example("coffee").target == 967
    camera = example("camera").image  # a grayscale photo, repeated to three channels
    assert torch.equal(camera[:, 0], camera[:, 1]) and torch.equal(camera[:, 1], camera[:, 2])
    with pytest.raises(ValueError, match="'chelsea'"):
        example("pelican")
