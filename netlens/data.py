"""Data for netlens: ImageNet labels and the synthetic *shapes* dataset.

The shapes dataset gives every image a known answer for "where is the evidence?": each image holds
one **class object** (a circle, square, triangle or plus at a random position, size, rotation and
colour) and, by default, one **distractor** (a filled, elongated ellipse) of the same ink, that is
the same pixel count and the same colour distribution, placed so that it never overlaps the object.
The distractor does not depend on the class, so an explanation that points at it points at
something the classifier has no reason to use. Backgrounds are textured (a smooth random colour
field plus a random grating) and the whole image carries pixel noise.

Generation is vectorized over the batch: a few thousand 64x64 images per second on one CPU core.

Example:
    >>> batch = make_shapes(8, seed=0)
    >>> batch.images.shape, batch.labels.shape, batch.masks.shape
    (torch.Size([8, 3, 64, 64]), torch.Size([8]), torch.Size([8, 1, 64, 64]))
    >>> SHAPES_CLASSES[int(batch.labels[0])] in SHAPES_CLASSES
    True
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["EXAMPLES", "SHAPES_CLASSES", "Example", "ShapesBatch", "example", "example_photo",
           "imagenet_classes", "make_shapes"]

SHAPES_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "plus")
"""Class names of the shapes dataset, indexed by label."""

# Object area as a fraction of the image area; every class draws from the same range, so size is
# no cue to the class.
_AREA_RANGE = (0.035, 0.08)
# Distractor ellipse: ratio of the major to the minor semi-axis.
_ASPECT_RANGE = (2.0, 3.0)
# Half-width of a plus's arms relative to its arm length.
_PLUS_WIDTH = 0.25
# Minimal free distance (pixels) between object and distractor, and between a shape and the border.
_GAP = 2.0
_MARGIN = 1.0
# The distractor check reserves room for a pixel count up to this factor above the nominal area.
_INK_SLACK = 1.15
_MAX_TRIES = 1000


class ShapesBatch(NamedTuple):
    """A batch of the synthetic shapes dataset.

    Attributes:
        images: ``(N, 3, S, S)`` float32 images in ``[0, 1]``; no normalization is needed.
        labels: ``(N,)`` int64 class indices into :data:`SHAPES_CLASSES`.
        masks: ``(N, 1, S, S)`` bool, the pixels of the class object.
        distractor_masks: ``(N, 1, S, S)`` bool, the pixels of the distractor (all ``False`` when it
            was switched off). Disjoint from ``masks``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    distractor_masks: torch.Tensor


@functools.lru_cache(maxsize=1)
def _read_imagenet_classes() -> tuple[str, ...]:
    # One name per joinpath call: Python 3.9 and 3.10 accept no more.
    path = resources.files("netlens").joinpath("resources").joinpath("imagenet_classes.txt")
    text = path.read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def imagenet_classes() -> list[str]:
    """Return the 1000 ImageNet-1k class labels, indexed by class id.

    The labels ship with the package (``netlens/resources/imagenet_classes.txt``, the same list as
    torchvision's weights metadata), so no network access is needed.

    Returns:
        A new list of 1000 unique strings; index 0 is ``"tench"``.

    Example:
        >>> labels = imagenet_classes()
        >>> len(labels), labels[0]
        (1000, 'tench')
    """
    return list(_read_imagenet_classes())


def _resolve_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None and seed is not None:
        raise ValueError("pass either generator= or seed=, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    gen = torch.Generator()
    if seed is None:
        gen.seed()  # fresh entropy; the global RNG is left alone
    else:
        gen.manual_seed(int(seed))
    return gen


def _object_masks(
    labels: torch.Tensor,
    area: torch.Tensor,
    angle: torch.Tensor,
    cx: torch.Tensor,
    cy: torch.Tensor,
    centres: torch.Tensor,
) -> torch.Tensor:
    """Rasterize each image's class object at pixel ``centres`` (S,); returns ``(N, S, S)`` bool."""
    n, size = labels.shape[0], centres.shape[0]
    masks = torch.zeros(n, size, size, dtype=torch.bool, device=labels.device)
    for k in range(len(SHAPES_CLASSES)):
        idx = (labels == k).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        a = area[idx].view(-1, 1, 1)
        cos = angle[idx].cos().view(-1, 1, 1)
        sin = angle[idx].sin().view(-1, 1, 1)
        dx = centres - cx[idx].view(-1, 1, 1)  # (M, 1, S), varies along x (columns)
        dy = centres.view(-1, 1) - cy[idx].view(-1, 1, 1)  # (M, S, 1)
        # Coordinates in the object's rotated frame; row + column vectors, one full-size add each.
        u = cos * dx + sin * dy
        v = cos * dy - sin * dx
        name = SHAPES_CLASSES[k]
        if name == "circle":
            m = u * u + v * v <= a / math.pi
        elif name == "square":
            m = torch.maximum(u.abs(), v.abs()) <= a.sqrt() / 2
        elif name == "triangle":
            # Equilateral: inside all three half-planes at the inradius (half the circumradius).
            inradius = (a / (3 * math.sqrt(3))).sqrt()
            normals = (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
            proj = torch.stack([u * math.cos(t) + v * math.sin(t) for t in normals])
            m = proj.amax(0) <= inradius
        else:  # plus: two crossing bars of length 2L and width 2wL; area = (8w - 4w^2) L^2
            arm = (a / (8 * _PLUS_WIDTH - 4 * _PLUS_WIDTH**2)).sqrt()
            half = _PLUS_WIDTH * arm
            au, av = u.abs(), v.abs()
            m = ((au <= half) & (av <= arm)) | ((av <= half) & (au <= arm))
        masks[idx] = m
    return masks


def _circumradius(labels: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
    """Radius of a disk around the object's centre that contains the whole object."""
    factor = torch.tensor(
        [
            1 / math.sqrt(math.pi),  # circle
            1 / math.sqrt(2),  # square: half diagonal
            math.sqrt(4 / (3 * math.sqrt(3))),  # triangle
            math.sqrt(1 + _PLUS_WIDTH**2) / math.sqrt(8 * _PLUS_WIDTH - 4 * _PLUS_WIDTH**2),
        ],
        device=area.device,
    )
    return factor[labels] * area.sqrt()


def _place(
    r_obj: torch.Tensor,
    semi_a: torch.Tensor,
    semi_b: torch.Tensor,
    size: int,
    distractor: bool,
    gen: torch.Generator,
) -> tuple[torch.Tensor, ...]:
    """Sample object and distractor centres (and the distractor angle) by batched rejection.

    The object lies inside a disk of radius ``r_obj``; the distractor is an ellipse with semi-axes
    ``semi_a >= semi_b``. Both must stay ``_MARGIN`` inside the image, and they must be separated by
    at least ``_GAP``: the disk and the ellipse are separated by the line normal to the line between
    their centres when the distance exceeds ``r_obj`` plus the ellipse's support in that direction.
    """
    n, dev = r_obj.shape[0], r_obj.device
    cx = torch.empty(n, device=dev)
    cy = torch.empty(n, device=dev)
    dcx = torch.zeros(n, device=dev)
    dcy = torch.zeros(n, device=dev)
    dang = torch.zeros(n, device=dev)
    todo = torch.arange(n, device=dev)
    for _ in range(_MAX_TRIES):
        m = todo.numel()
        if m == 0:
            break
        rand = torch.rand(5, m, generator=gen, device=dev)
        r = r_obj[todo] + _MARGIN
        ox = r + rand[0] * (size - 2 * r)
        oy = r + rand[1] * (size - 2 * r)
        if not distractor:
            cx[todo], cy[todo] = ox, oy
            break
        a, b = semi_a[todo], semi_b[todo]
        t = rand[2] * math.pi
        # Half extents of the rotated ellipse along x and y.
        ex = (a * a * t.cos() ** 2 + b * b * t.sin() ** 2).sqrt() + _MARGIN
        ey = (a * a * t.sin() ** 2 + b * b * t.cos() ** 2).sqrt() + _MARGIN
        px = ex + rand[3] * (size - 2 * ex)
        py = ey + rand[4] * (size - 2 * ey)
        dx, dy = ox - px, oy - py
        dist = (dx * dx + dy * dy).sqrt().clamp_min(1e-6)
        cos_rel = (dx * t.cos() + dy * t.sin()) / dist
        support = (a * a * cos_rel**2 + b * b * (1 - cos_rel**2)).sqrt()
        ok = (dist - r - support >= _GAP - _MARGIN) & (size - 2 * ex > 0) & (size - 2 * ey > 0)
        done = todo[ok]
        cx[done], cy[done] = ox[ok], oy[ok]
        dcx[done], dcy[done], dang[done] = px[ok], py[ok], t[ok]
        todo = todo[~ok]
    if todo.numel() > 0 and distractor:
        raise RuntimeError("could not place object and distractor; is size too small?")
    return cx, cy, dcx, dcy, dang


def _contrast_colours(bg: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Colours (N, 3) at least 0.2 away from ``bg`` (N, 3) in every channel, on its far side."""
    n, dev = bg.shape[0], bg.device
    level = 0.6 + 0.35 * torch.rand(n, 3, generator=gen, device=dev)
    # bg is dark (all channels in [0.05, 0.4]) or light ([0.6, 0.95]); take the other side.
    return torch.where(bg < 0.5, level, 1.0 - level)


def _background(bg: torch.Tensor, centres: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Textured backgrounds ``(N, 3, S, S)`` around the colours ``bg`` (N, 3).

    A smooth random colour field (a 4x4 grid of offsets, bilinearly upsampled) plus a grating of
    random frequency, orientation, phase and amplitude. Both are low-rank in (y, x), so one batched
    matmul builds the whole image: bilinear upsampling is ``W^T G W`` and
    ``sin(a x + b y + p) = sin(a x + p) cos(b y) + cos(a x + p) sin(b y)``.
    """
    n, size, dev = bg.shape[0], centres.shape[0], bg.device
    # Interpolation weights equal to F.interpolate(..., mode="bilinear", align_corners=False).
    w = F.interpolate(
        torch.eye(4, device=dev).unsqueeze(1), size=size, mode="linear", align_corners=False
    ).squeeze(1)  # (4, S)
    grid = bg.view(n, 3, 1, 1) + 0.06 * torch.randn(n, 3, 4, 4, generator=gen, device=dev)
    g = torch.rand(4, n, 1, generator=gen, device=dev)
    freq = (2.0 + 6.0 * g[0]) * 2 * math.pi / size
    theta = g[1] * math.pi
    amp = 0.08 * g[2]
    fx = freq * theta.cos() * centres + 2 * math.pi * g[3]  # (N, S)
    fy = freq * theta.sin() * centres
    rows = amp.unsqueeze(-1) * torch.stack([fy.cos(), fy.sin()], -1)  # (N, S, 2)
    left = torch.cat(
        [
            w.t() @ grid,  # (N, 3, S, 4)
            rows.unsqueeze(1).expand(n, 3, size, 2),
        ],
        dim=-1,
    )
    right = torch.cat(
        [
            w.expand(n, 3, 4, size),
            torch.stack([fx.sin(), fx.cos()], 1).unsqueeze(1).expand(n, 3, 2, size),
        ],
        dim=-2,
    )
    return left @ right


def make_shapes(
    n: int,
    *,
    size: int = 64,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
    distractor: bool = True,
) -> ShapesBatch:
    """Generate a batch of the synthetic shapes dataset.

    Each image holds one class object (see :data:`SHAPES_CLASSES`) with a random area of 3.5-8% of
    the image, a random rotation, position and colour, on a textured, noisy background of random
    colour (the background is dark and the shapes light in every channel, or the reverse, so each
    channel has a contrast of at least 0.2 before texture and noise). With ``distractor=True`` it
    also holds a filled ellipse (aspect ratio 2-3) with the same pixel count as the object and a
    colour from the same distribution, at a random place at least 2 pixels away from the object.
    Nothing about the distractor depends on the label. Labels are balanced: each class appears
    ``n // 4`` or ``n // 4 + 1`` times, in random order.

    All randomness comes from ``generator`` (or a new generator seeded with ``seed``), so the same
    seed gives a bitwise-identical batch, and the global torch RNG is never touched. Random numbers
    are drawn and the images built on the generator's device, then moved to ``device``.

    Args:
        n: Number of images.
        size: Side length ``S`` of the square images in pixels (at least 24).
        generator: Source of randomness; consumed, so successive calls give fresh batches.
        seed: Seed for a new generator, as an alternative to ``generator``. With neither, a freshly
            seeded (non-reproducible) generator is used.
        device: Device of the returned tensors; defaults to the generator's device.
        distractor: Whether to draw the distractor object.

    Returns:
        A :class:`ShapesBatch` with ``images`` ``(N, 3, S, S)`` float32 in ``[0, 1]``, ``labels``
        ``(N,)`` int64, ``masks`` and ``distractor_masks`` ``(N, 1, S, S)`` bool.

    Raises:
        ValueError: If ``n < 0``, ``size < 24``, or both ``generator`` and ``seed`` are given.
        TypeError: If ``generator`` is not a ``torch.Generator``.

    Example:
        >>> a = make_shapes(4, seed=1)
        >>> b = make_shapes(4, seed=1)
        >>> torch.equal(a.images, b.images) and not (a.masks & a.distractor_masks).any()
        True
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 24:
        raise ValueError(f"size must be >= 24 pixels, got {size}")
    gen = _resolve_generator(generator, seed)
    dev = gen.device
    out_device = torch.device(device) if device is not None else dev

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=gen, device=dev)

    n_classes = len(SHAPES_CLASSES)
    labels = torch.randperm(n, generator=gen, device=dev) % n_classes
    area = uniform(*_AREA_RANGE, n) * size * size
    angle = uniform(0.0, 2 * math.pi, n)
    aspect = uniform(*_ASPECT_RANGE, n)
    # Background colour: dark or light in all channels, so objects can contrast with it.
    bg = uniform(0.05, 0.4, n, 3)
    bg = torch.where(torch.rand(n, 1, generator=gen, device=dev) < 0.5, bg, 1.0 - bg)
    obj_colour = _contrast_colours(bg, gen)
    dis_colour = _contrast_colours(bg, gen)

    # Distractor semi-axes for the largest pixel count we allow (_INK_SLACK x the nominal area).
    semi_b_max = (area * _INK_SLACK / (math.pi * aspect)).sqrt()
    cx, cy, dcx, dcy, dang = _place(
        _circumradius(labels, area), aspect * semi_b_max, semi_b_max, size, distractor, gen
    )

    centres = torch.arange(size, device=dev, dtype=torch.float32) + 0.5
    masks = _object_masks(labels, area, angle, cx, cy, centres)

    if distractor:
        # Equal ink: the ellipse's area is the object's actual pixel count.
        ink = masks.sum((1, 2)).float().clamp(max=area * _INK_SLACK)
        semi_b = (ink / (math.pi * aspect)).sqrt().view(-1, 1, 1)
        semi_a = aspect.view(-1, 1, 1) * semi_b
        dx = centres - dcx.view(-1, 1, 1)  # (N, 1, S)
        dy = centres.view(-1, 1) - dcy.view(-1, 1, 1)  # (N, S, 1)
        cos, sin = dang.cos().view(-1, 1, 1), dang.sin().view(-1, 1, 1)
        # Quadratic form of the rotated ellipse, q(dx, dy) <= 1, split into row and column terms.
        ia, ib = 1 / (semi_a * semi_a), 1 / (semi_b * semi_b)
        qxx = ia * cos * cos + ib * sin * sin
        qyy = ia * sin * sin + ib * cos * cos
        qxy = 2 * (ia - ib) * cos * sin
        dis_masks = torch.addcmul(qxx * dx * dx + qyy * dy * dy, dy, qxy * dx) <= 1.0
    else:
        dis_masks = torch.zeros_like(masks)

    images = _background(bg, centres, gen)
    images = torch.where(masks.unsqueeze(1), obj_colour.view(n, 3, 1, 1), images)
    images = torch.where(dis_masks.unsqueeze(1), dis_colour.view(n, 3, 1, 1), images)
    # Pixel noise, shared by the three channels (half the cost of colour noise, same purpose).
    noise_std = 0.02 + 0.06 * torch.rand(n, 1, 1, 1, generator=gen, device=dev)
    noise = torch.randn(n, 1, size, size, generator=gen, device=dev).mul_(noise_std)
    images = images.add_(noise).clamp_(0.0, 1.0)

    return ShapesBatch(
        images=images.to(out_device),
        labels=labels.to(out_device),
        masks=masks.unsqueeze(1).to(out_device),
        distractor_masks=dis_masks.unsqueeze(1).to(out_device),
    )


class Example(NamedTuple):
    """One example photo (:func:`example`).

    Attributes:
        image: ``(1, C, H, W)`` in ``[0, 1]`` (not normalized).
        target: its ImageNet-1k class index, or None when no class fits (the astronaut).
        label: the class's name (``imagenet_classes()[target]``) or a description.
        credit: who made it and its licence.
    """

    image: torch.Tensor
    target: int | None
    label: str
    credit: str


EXAMPLES: dict[str, tuple[str, int | None, str]] = {
    "grace_hopper": ("matplotlib", 652, "U.S. Navy photograph, public domain "
                     "(matplotlib's sample data)"),
    "chelsea": ("chelsea.jpg", 281, "Stefan van der Walt, CC0 (scikit-image's data)"),
    "coffee": ("coffee.jpg", 967, "Rachel Michetti, CC0 (scikit-image's data)"),
    "rocket": ("rocket.jpg", 657, "SpaceX, public domain (scikit-image's data)"),
    "camera": ("camera.jpg", 759, "Lav Varshney, CC0 (scikit-image's data; grayscale)"),
    "astronaut": ("astronaut.jpg", None, "NASA, public domain (scikit-image's data)"),
}
"""The example photos: name -> (file in ``netlens/resources/examples``, ImageNet class index or
None, credit and licence). Netlens 1.x's pelican, guitar, panda and pineapple are gone with
their unknown licences; these are public domain or CC0, shipped with netlens (at most 320 px)."""


def example(name: str, size: int | tuple[int, int] | None = None, *,
            channels: int = 3) -> Example:
    """An example photo with its ImageNet class, for the pretrained-model paths of the
    notebooks (Netlens 1.x's ``get_example_data``).

    Args:
        name: one of :data:`EXAMPLES`: ``"grace_hopper"`` (652 military uniform), ``"chelsea"``
            (281 tabby), ``"coffee"`` (967 espresso), ``"rocket"`` (657 missile),
            ``"camera"`` (759 reflex camera; a grayscale photo), ``"astronaut"`` (no class).
        size: as :func:`netlens.image.load` takes it; None keeps the photo's size (at most
            320 px on the longer side; Grace Hopper 512 x 600).
        channels: 3 (a grayscale photo repeated) or 1 (luminance).

    Returns:
        An :class:`Example`: ``image`` ``(1, channels, H, W)`` in ``[0, 1]``, ``target``,
        ``label`` and ``credit``.

    Raises:
        ValueError: an unknown name (the message lists the names).

    Example:
        >>> image, target, label, _ = example("chelsea", 224)
        >>> tuple(image.shape), target, label
        ((1, 3, 224, 224), 281, 'tabby')
    """
    from .image import load

    if name not in EXAMPLES:
        raise ValueError(f"no example photo {name!r}; the examples are "
                         f"{', '.join(map(repr, EXAMPLES))}")
    file, target, credit = EXAMPLES[name]
    label = imagenet_classes()[target] if target is not None else "Eileen Collins (no class)"
    if file == "matplotlib":
        image, _ = example_photo(size)
        if channels == 1:
            image = load(image, channels=1, mean=None, std=None)
        return Example(image, target, label, credit)
    with resources.as_file(resources.files("netlens") / "resources" / "examples" / file) as p:
        image = load(p, size=size, mean=None, std=None, channels=channels)
    return Example(image, target, label, credit)


def example_photo(size: int | tuple[int, int] | None = None) -> tuple[torch.Tensor, str]:
    """The example photo: Grace Hopper, from matplotlib's sample data (public domain; ImageNet
    class 652, "military uniform"), or a drawn image where a matplotlib package leaves the
    sample data out.

    Args:
        size: as :func:`netlens.image.load` takes it; None keeps the photo's size.

    Returns:
        The image ``(1, 3, H, W)`` in ``[0, 1]`` (not normalized) and a description of it.
    """
    import matplotlib.cbook

    from .image import load

    try:
        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        return load(path, size=size, mean=None, std=None), "Grace Hopper (public domain)"
    except (FileNotFoundError, OSError):
        axis = torch.linspace(0, 1, 256)
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        rings = 0.5 + 0.5 * torch.cos(30 * torch.hypot(xx - 0.5, yy - 0.4))
        drawn = torch.stack([rings, 0.5 + 0.5 * torch.sin(8 * xx), yy])[None]
        return (load(drawn, size=size, mean=None, std=None),
                "a drawn image (matplotlib's grace_hopper.jpg is missing)")
