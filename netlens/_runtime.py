"""The runtime every technique shares: input checks, tracing before batch sizing, chunking under
the memory budget, target binding and scoring, batched gradients of several scores, validators.

Techniques (``attribution/``, ``metrics/``, ``optvis/``) import this module; none imports a
private module of another technique. Every attribution method follows the same steps:

1. :func:`prepare` validates the input and wraps the model in a :class:`~netlens.FlatModel`;
2. :func:`auto_batch_size` (after :meth:`FlatModel.ensure_traced`) sizes the passes;
3. :func:`bind` (or, per chunk, :func:`bind_part`) checks the target against the clean
   output and fixes the predicted class, masks and box matches;
4. each pass scores its points with :func:`scores_of` and differentiates them with
   :func:`grad`, which handles several targets per image (a K axis) with one backward call;
5. all of it inside :func:`guarded`, which leaves the caller's model exactly as it was.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from ._util import NetlensWarning, progress_bar, user_stacklevel
from .adapter import first_tensor, guarded_calls, model_lock, preserved_state
from .flat_model import FlatModel, check_input, model_dtype
from .targets import Class, Target, TargetLike, as_target, describe_output
from .targets import _class_scores as class_scores

__all__ = [
    "DEFAULT_MAX_MEMORY", "as_flat", "prepare", "guarded", "chunks", "auto_batch_size",
    "check_count", "check_generator", "check_real", "check_unit_image", "bind", "bind_part",
    "model_output", "along_path", "scores_of", "grad", "with_k", "progress_bar", "user_stacklevel",
    "NetlensWarning", "first_tensor", "TRAINING_WARNING", "warn_if_training",
]

# Default working-memory budget for multiplied passes (IG steps, SmoothGrad samples, occlusion
# windows, CAM masks), in bytes. On a CPU, throughput peaks at several images per pass and falls
# beyond (resnet18 at 224 px, 2 threads: 0.064 s per gradient at 2-8 images per pass, 0.073 at 16
# and worse above, as the activations leave the caches; SmoothGrad of 8 images, 25 samples: 20.6 s
# at 4 images per pass, 19.6 s at 8), so its budget is modest: 6 images of that size with
# backward, 12 without, about 300 MB at the peak.
DEFAULT_MAX_MEMORY = {"cpu": 384 << 20, "cuda": 4 << 30}


def as_flat(model: nn.Module) -> FlatModel:
    """``model`` as a :class:`FlatModel` (the same object if it already is one)."""
    return model if isinstance(model, FlatModel) else FlatModel(model)


def prepare(model: nn.Module, x: torch.Tensor) -> tuple[FlatModel, torch.Tensor]:
    """Validates ``x`` for ``model`` and returns ``(flat model, detached input)``.

    Raises:
        TypeError, ValueError: a non-float input, wrong rank or channel count, NaN or infinity.
        RuntimeError: when called under ``torch.inference_mode()``, where no gradient exists.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attribution needs gradients, which torch.inference_mode() disables; "
                           "call it outside the inference_mode block (torch.no_grad() is fine)")
    fm = as_flat(model)
    check_input(x, fm._channels, finite=True, dtype=model_dtype(fm.model))
    return fm, x.detach()


TRAINING_WARNING = (
    "the model is in training mode; netlens explains it in eval mode (BatchNorm statistics and "
    "dropout frozen) and leaves it in training mode; call model.eval() to silence this")


def warn_if_training(model: nn.Module) -> None:
    """The :data:`TRAINING_WARNING`, pointing at the user's line (shown once per place), if any
    module of ``model`` is in training mode."""
    if any(m.training for m in model.modules()):
        warnings.warn(TRAINING_WARNING, NetlensWarning, stacklevel=user_stacklevel())


@contextlib.contextmanager
def guarded(fm: FlatModel | nn.Module) -> Iterator[FlatModel | nn.Module]:
    """Runs a method in eval mode with gradients enabled, alone on its model, leaving the
    model's state and the global random state exactly as they were.

    * **Eval mode.** Every module's ``training`` flag is off inside the block and restored
      after it: a model in training mode is explained as in eval mode (BatchNorm uses its
      running statistics and does not update them, dropout is the identity), so maps are
      deterministic, the model is left in training mode, and a :class:`NetlensWarning` says so
      (once per calling line).
    * **Gradients** are enabled even inside a caller's ``torch.no_grad()``; parameters keep
      their ``requires_grad`` and ``.grad`` (methods only differentiate with respect to
      inputs).
    * **The global random state** (CPU, and the CUDA devices of the model) is the same after
      the block: stochastic methods draw from their ``generator=``.
    * **One call at a time per model.** The model's re-entrant lock
      (:func:`netlens.adapter.model_lock`) is held for the whole block, so two threads
      explaining one model take turns (hooks and rules live on the shared modules) while calls
      on different models run in parallel; nested blocks of one thread re-enter it.
    * **Nested blocks** on the same model in the same thread (a method calling another) take
      no second snapshot: the outermost block restores the model and the random state.
    * **Errors** raised inside propagate unchanged, ``KeyboardInterrupt`` included, after the
      state is restored.

    Args:
        fm: the model, or a :class:`~netlens.FlatModel` of it.

    Yields:
        ``fm``.
    """
    model = fm.model if isinstance(fm, FlatModel) else fm
    calls = guarded_calls()
    if id(model) in calls:  # a nested method call: the outermost block restores everything
        with torch.enable_grad():
            yield fm
        return
    with model_lock(model):
        warn_if_training(model)
        # (no CUDA tensor exists before CUDA is initialized: skip the walk over the model)
        devices = sorted({t.device.index or 0 for t in (*model.parameters(), *model.buffers())
                          if t.device.type == "cuda"}) if torch.cuda.is_initialized() else []
        calls[id(model)] = {}
        try:
            with torch.random.fork_rng(devices=devices), preserved_state(model, eval=True), \
                    torch.enable_grad():
                yield fm
        finally:
            del calls[id(model)]


def chunks(total: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` items covering ``range(total)``: as few as
    that allows, of sizes that differ by at most one (25 items by 8: 7, 6, 6, 6, not 8, 8, 8, 1,
    whose last pass would run one image at the cost of several)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    passes = -(-total // batch_size)
    base, extra = divmod(total, max(passes, 1))
    start = 0
    for i in range(passes):
        stop = start + base + (i < extra)
        yield slice(start, stop)
        start = stop


def auto_batch_size(
    fm: FlatModel, x: torch.Tensor, *, backward: bool = True, max_memory: int | None = None,
) -> int:
    """How many images of ``x``'s size fit in one pass within the memory budget.

    One image's cost is estimated from the traced forward pass: the outputs of every leaf
    module (what autograd keeps for backward), scaled from the traced input size to ``x``'s.
    The model is traced here if it was not yet (tracing always precedes batch sizing).

    Args:
        fm: the model.
        x: a batch of the images that will be passed.
        backward: whether the pass is followed by a backward pass (doubles the estimate).
        max_memory: the budget in bytes; default :data:`DEFAULT_MAX_MEMORY` for the device.
    """
    if max_memory is None:
        max_memory = DEFAULT_MAX_MEMORY["cuda" if x.device.type == "cuda" else "cpu"]
    fm.ensure_traced(x)
    elements = fm.leaf_elements()
    traced = fm.traced_input_shape
    scale = 1.0
    if traced is not None and len(traced) == 4:
        scale = (x.shape[2] * x.shape[3]) / max(1, traced[2] * traced[3])
    per_image = max(1.0, elements * scale * x.element_size() * (2 if backward else 1))
    return max(1, int(max_memory // per_image))


# -- validators ------------------------------------------------------------------------------
def check_count(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_real(value: object, name: str, *, minimum: float | None = None,
               what: str = "") -> float:
    """``value`` as a finite float (``>= minimum``), else a ``ValueError`` naming ``name``."""
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value)) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"{name} must be a finite number{bound}{what}, got {value!r}")
    return float(value)


def check_generator(generator: object, like: torch.Tensor | torch.device | None = None,
                    ) -> torch.Generator:
    """The caller's generator (on ``like``'s device type), or a fresh one seeded
    nondeterministically; the global random state is never used."""
    device = like.device if isinstance(like, torch.Tensor) else like
    if generator is None:
        generator = torch.Generator(device=device if device is not None else "cpu")
        generator.seed()
        return generator
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if device is not None and generator.device.type != torch.device(device).type:
        raise ValueError(f"the generator is on {generator.device} but the input is on "
                         f"{device}; create it with torch.Generator(device=x.device)")
    return generator


def check_unit_image(image: object, *, batch: bool = True) -> torch.Tensor:
    """A float image batch ``(B, C, H, W)`` with values in ``[0, 1]`` (the pixels that OptVis,
    deep dream and style transfer start from), detached and clamped to the range.

    Args:
        image: the image; with ``batch=False`` a single ``(C, H, W)`` image is accepted too.
        batch: require the batch dimension.

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: the wrong rank, an empty tensor, NaN or infinity, values outside [0, 1].
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor (B, C, H, W) in [0, 1], "
                        f"got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"image must be a float tensor in [0, 1], got dtype {image.dtype}; "
                        "convert uint8 pixels with image.float() / 255")
    if image.dim() == 3 and not batch:
        image = image.unsqueeze(0)
    if image.dim() != 4:
        raise ValueError(f"image must have 4 dimensions (B, C, H, W), got shape "
                         f"{tuple(image.shape)}; add a batch dimension with image[None]")
    if image.numel() == 0:
        raise ValueError(f"image is empty: shape {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError("image holds NaN or infinite values")
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(f"expected pixel values in [0, 1], got [{lo:.4g}, {hi:.4g}]; pass raw "
                         "pixels, not a model-normalized image (nl.image.load(..., mean=None, "
                         "std=None) or nl.image.denormalize(x))")
    return image.detach().clamp(0.0, 1.0)


# -- black-box passes ------------------------------------------------------------------------
#: Fewest images of a pass that run channels-last: resnet18 at 224 px under ``no_grad`` on 2 CPU
#: threads, channels-last over contiguous time per pass, 1 image 1.53, 2 1.20, 3 0.95, 4 0.91,
#: 8 0.86, 13 0.77 (the reorder of a lone image costs more than the faster convolutions save).
CHANNELS_LAST_MIN_BATCH = 3


def pass_layout(fm: FlatModel, x: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory layout the model's forward pass is fastest in, for the no-grad
    passes of the black-box methods and the CAM driver's pass up to its layer: channels-last
    when the first leaf the model calls is a ``Conv2d`` and the pass holds at least
    :data:`CHANNELS_LAST_MIN_BATCH` images (oneDNN and cuDNN then convolve without
    reordering; resnet18 at 224 px on 2 CPU threads, 8 images: 0.198 -> 0.171 s a pass,
    scores equal to 1e-6), else ``x``. The model's weights are not touched; ``x`` is copied,
    the caller's tensor is not changed. The model is traced at ``x``'s size if it was not
    yet."""
    if (x.dim() != 4 or x.shape[0] < CHANNELS_LAST_MIN_BATCH
            or x.is_contiguous(memory_format=torch.channels_last)):
        return x
    fm.ensure_traced(x)
    cache = guarded_calls().get(id(fm.model), {})
    conv_first = cache.get("conv_first")
    if conv_first is None:
        modules = fm.modules_by_name()
        leaves = (c for c in fm.layers  # in the order the calls start
                  if c.functional or c.module_name in modules
                  and next(modules[c.module_name].children(), None) is None)
        first = next(leaves, None)
        conv_first = cache["conv_first"] = bool(
            first is not None and not first.functional and first.type_name == "Conv2d")
    return x.contiguous(memory_format=torch.channels_last) if conv_first else x


# -- targets ---------------------------------------------------------------------------------
def model_output(fm: FlatModel, x: torch.Tensor, target: Target) -> Any:
    """What ``target`` reads for the images ``x``: the model's output, or for a target with a
    ``layer`` (``Channel``) that layer's output as a ``(B, C, h, w)`` map (the forward pass
    stops after it)."""
    if target.layer is None:
        return fm(x)
    name = fm.resolve_layer(target.layer)
    out = first_tensor(fm(x, until=name))
    if out is None:
        raise TypeError(f"layer {name!r} returned no tensor")
    return fm.layout(name).to_map(out, (int(x.shape[2]), int(x.shape[3])))


def scores_of(target: Target, output: Any) -> torch.Tensor:
    """``target(output)``, checked: ``(B,)`` scores, ``(B, K)`` for several targets."""
    s = target(output)
    if not isinstance(s, torch.Tensor):
        raise TypeError(f"the target returned {type(s).__name__}, not a tensor of scores")
    want = 1 if target.k is None else 2
    if s.dim() != want:
        raise ValueError(f"the target must give {'(B,)' if want == 1 else '(B, K)'} scores, got "
                         f"shape {tuple(s.shape)} from {describe_output(output)}")
    return s


def bind_part(target: Target, part: slice | torch.Tensor, output: Any) -> Target:
    """The target of the images ``part`` of the batch, bound to their clean ``output``."""
    return target.take(part).bind(output)


def bind(fm: FlatModel, x: torch.Tensor, target: TargetLike, batch_size: int) -> Target:
    """``target`` as a :class:`~netlens.targets.Target`, bound to the clean output of ``x``
    (a forward pass without gradients, in chunks); the predicted class, default masks and box
    matches are fixed once, from the clean images."""
    t = as_target(target, x.shape[0])
    parts = []
    with torch.no_grad():
        if isinstance(t, Class) and t.classes is not None and t.layer is None:
            # Explicit classes depend on no output: one image's output checks their range (and
            # its shape, with the checks and messages of Class.bind: not a segmentation map).
            out = class_scores(fm(x[:1]), "Class")
            return t.bind(out.expand(x.shape[0], *out.shape[1:]))
        for part in chunks(x.shape[0], batch_size):
            parts.append(bind_part(t, part, model_output(fm, x[part], t)))
    return type(parts[0]).cat(parts)


def grad(scores: torch.Tensor, inputs: torch.Tensor, *, k: int | None,
         allow_unused: bool = False) -> torch.Tensor:
    """The gradient of each image's score(s) with respect to ``inputs``.

    Args:
        scores: ``(n,)``, or ``(n, K)`` for K targets per image.
        inputs: ``(n, ...)``, in the graph of ``scores``.
        k: None for ``(n,)`` scores, else K.
        allow_unused: a zero gradient where ``scores`` does not depend on ``inputs``.

    Returns:
        ``(n, ...)``, or ``(n, K, ...)``: one backward call, batched over the K targets
        (``is_grads_batched``), falling back to K backward passes where an operation has no
        batching rule.
    """
    if not scores.requires_grad:
        if allow_unused:
            shape = inputs.shape if k is None else (inputs.shape[0], k, *inputs.shape[1:])
            return inputs.new_zeros(shape)
        raise ValueError("the target's score does not depend on the input (no gradient flows "
                         "from it); check the target and the model")
    if k is None:
        g, = torch.autograd.grad(scores.sum(), inputs, allow_unused=allow_unused)
        return torch.zeros_like(inputs) if g is None else g
    total = scores.sum(0)  # (K,): image i's scores depend on image i only
    eye = torch.eye(k, dtype=total.dtype, device=total.device)
    try:
        # The graph is kept so that the fallback below can still run if vmap fails midway.
        g, = torch.autograd.grad(total, inputs, eye, retain_graph=True, is_grads_batched=True,
                                 allow_unused=allow_unused)
        if g is None:
            return inputs.new_zeros((inputs.shape[0], k, *inputs.shape[1:]))
        return g.transpose(0, 1)
    except RuntimeError:  # an op without a batching rule: K plain backward passes
        pass
    grads = []
    for j in range(k):
        g, = torch.autograd.grad(total[j], inputs, retain_graph=j < k - 1,
                                 allow_unused=allow_unused)
        grads.append(torch.zeros_like(inputs) if g is None else g)
    return torch.stack(grads, 1)


def with_k(t: torch.Tensor, k: int | None) -> torch.Tensor:
    """``t`` ``(B, ...)`` with a K axis ``(B, 1, ...)`` to broadcast against ``(B, K, ...)``
    when there are several targets; unchanged otherwise."""
    return t if k is None else t.unsqueeze(1)


def along_path(
    fm: FlatModel, x: torch.Tensor, target: Target, count: int,
    point: Callable[[int, slice], torch.Tensor],
    add: Callable[[int, slice, torch.Tensor], None], *, batch_size: int,
    progress: bool | None, desc: str,
) -> None:
    """Gradients at ``count × B`` points, ``batch_size`` points per pass.

    Point ``(k, b)`` is ``point(k, rows)[b - rows.start]``; points are visited in sample-major
    order (k, then b), and ``add(k, rows, grads)`` receives each sample's gradients in that
    order, whatever the chunking. ``target`` is bound to the clean images.
    """
    batch = x.shape[0]
    with progress_bar(count * batch, progress, desc) as bar:
        for part in chunks(count * batch, batch_size):
            groups = [(k, slice(max(part.start - k * batch, 0), min(part.stop - k * batch, batch)))
                      for k in range(part.start // batch, (part.stop - 1) // batch + 1)]
            points = torch.cat([point(k, rows) for k, rows in groups]).detach()
            points.requires_grad_(True)
            images = torch.cat([torch.arange(rows.start, rows.stop) for _, rows in groups])
            out = model_output(fm, points, target)
            grads = grad(scores_of(target.take(images), out), points, k=target.k,
                         allow_unused=True)
            start = 0
            for k, rows in groups:
                stop = start + rows.stop - rows.start
                add(k, rows, grads[start:stop])
                start = stop
            bar.update(part.stop - part.start)
