"""Targets: what an explanation explains. A target turns the model's output into scores.

A target is a callable ``output -> (B,)`` scores, one per image, differentiable with respect to
the output. Every attribution method and metric takes one as ``target=``; the familiar forms
are converted by :func:`as_target`:

- an int, a sequence or tensor of B ints, or ``None`` (the predicted class) become
  :class:`Class`, and give exactly the results they always gave; numpy integers and integer
  arrays (``labels[i]``, ``labels[:2]``) are ints and tensors of ints; a class *name* is not a
  class: look it up with :meth:`Class.named`;
- a function ``output -> (B,)`` that returns *integers* is read as class indices (the old
  form); one that returns *floats* is a score function (it sees the output of the images of the
  current pass);
- a :class:`Target` is used as it is; a list of targets, or :class:`TopK`, asks for several
  explanations per image at once (results gain a K axis: ``(B, K, C, H, W)``).

Model outputs are unwrapped the same way by every target (:func:`unwrap`): a tensor, the first
tensor of a tuple or list, a mapping's ``"logits"``, then ``"out"``, then its only tensor, an
object's ``.logits`` (HuggingFace ``ModelOutput``). :class:`Output` picks another field.

A target has three steps, which methods run for you: :meth:`Target.take` keeps the per-image
parameters of some images (for a pass over part of the batch), :meth:`Target.bind` checks the
target against the clean output and fixes what depends on it (the predicted class, the default
segmentation mask), and calling it gives the scores. A new target overrides ``score`` (and
``bind`` when it checks or fixes something; :meth:`Target.state` when it holds per-image data).

Example:
    >>> out = torch.tensor([[1.0, 3.0], [4.0, 2.0]])
    >>> Class(None).bind(out)(out)
    tensor([3., 4.])
    >>> Class(0, score="softmax").bind(out)(out).round(decimals=3)
    tensor([0.1190, 0.8810])
"""

from __future__ import annotations

import copy
import dataclasses
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union, cast

import torch
import torch.nn.functional as F

__all__ = [
    "Target", "TargetLike", "as_target", "unwrap", "Class", "Output", "Score", "Segmentation",
    "Detection", "Similarity", "Regression", "Channel", "TopK", "Multi", "box_iou",
    "flat_scores", "describe_output",
]

ClassScore = Literal["logit", "softmax", "log_softmax"]


# -- output unwrapping ---------------------------------------------------------------------
def _fields(output: Any) -> list[str]:
    if isinstance(output, Mapping):
        return [f"{k!r}: {_describe(v)}" for k, v in output.items()]
    if isinstance(output, (tuple, list)):
        return [f"[{i}]: {_describe(v)}" for i, v in enumerate(output)]
    names = [n for n in vars(output) if not n.startswith("_")] if hasattr(output, "__dict__") \
        else []
    return [f".{n}: {_describe(getattr(output, n))}" for n in names]


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def describe_output(output: Any) -> str:
    """A short description of a model output for error messages: its shape or its fields."""
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    fields = _fields(output)
    return f"{type(output).__name__} with fields {', '.join(fields) or '(none)'}"


def unwrap(output: Any) -> torch.Tensor:
    """The tensor of scores in a model's output.

    A tensor is returned as it is; a tuple or list gives its first tensor; a mapping its
    ``"logits"``, else ``"out"`` (torchvision segmentation), else its only tensor; any other
    object its ``.logits`` (HuggingFace ``ModelOutput``).

    Raises:
        TypeError: no such tensor; the message lists the fields found and how to pick one.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in ("logits", "out"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
        tensors = [v for v in output.values() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return tensors[0]
    elif isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    elif isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    if isinstance(output, (tuple, list)) and output and all(
            isinstance(o, Mapping) and "boxes" in o for o in output):
        raise TypeError(
            f"the model returned {describe_output(output)} with keys {sorted(output[0])} (a "
            "detection model's output), which has no class scores to explain; explain its "
            "boxes with target=nl.targets.Detection(boxes, labels)")
    raise TypeError(
        f"the model returned {describe_output(output)}, and netlens cannot tell which of them "
        "are the scores to explain; pick one with target=nl.targets.Output('<field>', target) "
        "or pass a function output -> (B,) scores as the target")


def flat_scores(output: Any) -> torch.Tensor:
    """The unwrapped output flattened per image: ``(B, N)``."""
    out = unwrap(output)
    if out.dim() == 0:
        raise _scalar_error(output)
    return out if out.dim() == 2 else out.reshape(out.shape[0], -1)


def _scalar_error(output: Any) -> ValueError:
    return ValueError(
        f"the model returned {describe_output(output)}: one number for the whole batch, not one "
        "score per image; netlens explains each image's score, so return (B,) scores or "
        "(B, classes) logits (do not reduce over the batch, e.g. no .sum() or .mean() of the "
        "whole output)")


def _is_array(value: Any) -> bool:
    """A numpy array (or numpy scalar array), without importing numpy."""
    return type(value).__module__ == "numpy" and hasattr(value, "__array__") \
        and hasattr(value, "dtype")


def _names_error(value: Any) -> TypeError:
    names = [value] if isinstance(value, str) else list(value)
    one = next(v for v in names if isinstance(v, str))
    what = f"target {one!r} is a string" if isinstance(value, str) else \
        f"targets {names!r} are strings"
    return TypeError(
        f"{what}: netlens explains class indices and has no class names for an arbitrary "
        f"model, so give the class index, e.g. labels.index({one!r}) with the model's list of "
        f"class names, or nl.targets.Class.named({one!r}, labels) (labels: "
        "nl.data.imagenet_classes() for ImageNet models, nl.data.SHAPES_CLASSES for "
        "nl.zoo.shapes_model())")


def _ints(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, str) or (isinstance(value, Sequence)
                                  and any(isinstance(v, str) for v in value)):
        raise _names_error(value)
    t = torch.as_tensor(value)
    if t.numel() == 0:
        name = "the target list" if what == "targets" else what
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}): give one class index for "
                         "all images, one per image, or None (the predicted class)")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{what} must be integers, got dtype {t.dtype}")
    return t.reshape(-1).to(torch.long)


def _check_finite(scores: torch.Tensor, output: Any) -> torch.Tensor:
    """``scores`` unless some are inf or NaN: then a ``ValueError`` naming the output."""
    if (scores.is_floating_point() or scores.is_complex()) and scores.numel() \
            and not bool(torch.isfinite(scores).all()):
        bad = scores.detach().reshape(-1)[~torch.isfinite(scores.detach().reshape(-1))]
        raise ValueError(
            f"the model's output for these inputs is not finite (inf/nan): "
            f"{bad.numel()} of the {scores.numel()} scores to explain are "
            f"{sorted({str(float(v)) for v in bad[:8].real})} ({describe_output(output)}), and "
            "an explanation computed from them would be meaningless; check the input's scale "
            "(images in [0, 1], normalized as the model expects) and that the model does not "
            "overflow (a float16 model: explain model.float() with x.float())")
    return scores


def _batch_error(n: int, batch: int, what: str = "targets") -> ValueError:
    one = "one int" if what == "targets" else "one"
    return ValueError(f"got {n} {what} for a batch of {batch} images; pass {one} for all, or one "
                      "per image")


# -- the protocol ----------------------------------------------------------------------------
class Target:
    """Base class of targets: ``target(output) -> (B,)`` scores (``(B, K)`` for several).

    Subclasses override :meth:`score`; those with per-image data list it in :meth:`state` (a
    dict of tensors or lists with the batch first, or of length 1 for all images) and are
    rebuilt by :meth:`replace`; those that check the output or fix values from it override
    :meth:`bind`.

    Attributes:
        k: None for one score per image, else the number K of scores per image.
        layer: the name of a layer whose output the target reads instead of the model's output
            (:class:`Channel`), or None.
    """

    k: int | None = None
    layer: str | None = None

    def score(self, output: Any) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, output: Any) -> torch.Tensor:
        """The scores of ``output``; raises ``ValueError`` when some are inf or NaN."""
        s = self.score(output)
        return _check_finite(s, output) if isinstance(s, torch.Tensor) else s

    def bind(self, output: Any) -> Target:
        """This target checked against the (clean) ``output``, with everything that depends on
        the output fixed; raises ``ValueError``/``TypeError`` naming the output and the fix."""
        return self

    def state(self) -> dict[str, Any]:
        """Per-image data: name -> tensor or list with the batch first (length 1: every image)."""
        return {}

    def replace(self, **state: Any) -> Target:
        return dataclasses.replace(self, **state)  # type: ignore[type-var]

    def check_batch(self, batch: int) -> Target:
        """Raises ``ValueError`` unless the per-image data fits a batch of ``batch`` images."""
        for name, value in self.state().items():
            if value is not None and len(value) not in (1, batch):
                what = "targets" if name == "classes" else f"{name} entries"
                raise _batch_error(len(value), batch, what)
        return self

    def take(self, index: slice | torch.Tensor) -> Target:
        """The target of the images ``index`` of the batch (a slice or a tensor of indices)."""
        state = self.state()
        if not state:
            return self
        new = {}
        for name, value in state.items():
            if value is None or len(value) == 1:
                new[name] = value
            elif isinstance(value, torch.Tensor):
                new[name] = value[index.to(value.device) if isinstance(index, torch.Tensor)
                                  else index]
            else:
                positions = range(len(value))[index] if isinstance(index, slice) \
                    else index.tolist()
                new[name] = [value[i] for i in positions]
        return self.replace(**new)

    @staticmethod
    def cat(parts: Sequence[Target]) -> Target:
        """One target from the targets of consecutive parts of a batch (inverse of take)."""
        first = parts[0]
        state = first.state()
        if len(parts) == 1 or not state:
            return first
        new: dict[str, Any] = {}
        for name, value in state.items():
            values = [p.state()[name] for p in parts]
            if all(v is None for v in values):
                new[name] = None
            elif isinstance(value, torch.Tensor):
                new[name] = torch.cat(values)
            else:
                new[name] = [item for v in values for item in v]
        return first.replace(**new)


TargetLike = Union[int, Sequence[int], torch.Tensor, None, Callable[[Any], torch.Tensor], Target,
                   Sequence[Target]]


def as_target(target: TargetLike, batch: int | None = None) -> Target:
    """Any accepted target form as a :class:`Target` (see the module docstring).

    Args:
        target: the target.
        batch: the number of images; when given, per-image data must have 1 or ``batch``
            entries.

    Raises:
        TypeError: a target of another type (a bool, a float tensor of classes, ...).
        ValueError: per-image data of the wrong length.
    """
    if isinstance(target, Target):
        t = target
    elif target is None or (isinstance(target, numbers.Integral) and not isinstance(target, bool)):
        t = Class(target)
    elif isinstance(target, bool):
        raise TypeError("target must be an int, a sequence of ints, a tensor, a target or None, "
                        "not a bool")
    elif isinstance(target, torch.Tensor):
        t = Class(target)
    elif _is_array(target):  # a numpy array of classes; TargetLike does not name numpy types
        t = Class(cast(Any, target))
    elif isinstance(target, str):
        raise _names_error(target)
    elif isinstance(target, Sequence):
        targets = [item for item in target if isinstance(item, Target)]
        if targets and len(targets) == len(target):
            t = Multi(targets)
        else:
            # a sequence that is not all targets: Class checks that its items are ints
            t = Class(cast("Sequence[int]", target))
    elif callable(target):
        t = Score(target)
    else:
        raise TypeError(f"target must be an int, a sequence of ints, a tensor, None, a "
                        f"netlens.targets target or a function output -> (B,) scores, got "
                        f"{type(target).__name__}")
    return t if batch is None else t.check_batch(batch)


# -- classification ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Class(Target):
    """The score of class ``c`` in a ``(B, K)`` output.

    A ``(B,)`` output is one score per image, read as ``(B, 1)``: class 0 (and ``None``)
    explains that score. Other outputs have no one class axis and are refused with the fix
    (``(B, K, H, W)``: :class:`Segmentation`; else :class:`Score`), except ``(B, K, 1, ...)``.

    Args:
        c: an int (every image), a sequence, tensor or numpy array of B ints (one per image),
            or None: the class with the highest score in the clean output (the predicted
            class). Class names: :meth:`named`.
        score: ``"logit"`` (the raw output), ``"softmax"`` (the class probability) or
            ``"log_softmax"``.

    Attributes:
        classes: after :meth:`bind`, the ``(B,)`` int64 class indices (also for ``None``); the
            metrics that score by probability read them.

    Example:
        >>> out = torch.tensor([[0.0, 2.0, 1.0]])
        >>> Class(2, score="log_softmax").bind(out)(out)
        tensor([-1.4076])
    """

    c: Any = None
    score_kind: ClassScore = "logit"
    classes: torch.Tensor | None = None

    def __init__(self, c: int | Sequence[int] | torch.Tensor | None = None,
                 score: ClassScore = "logit", *, classes: torch.Tensor | None = None) -> None:
        if score not in ("logit", "softmax", "log_softmax"):
            raise ValueError(f"score must be 'logit', 'softmax' or 'log_softmax', got {score!r}")
        if classes is None and c is not None:
            if isinstance(c, bool):
                raise TypeError("a class must be an int, not a bool")
            if isinstance(c, str):
                raise _names_error(c)
            if not isinstance(c, (numbers.Integral, torch.Tensor, Sequence)) and \
                    not _is_array(c):
                raise TypeError(f"target must be an int, a sequence of ints, a tensor, a "
                                f"callable or None, got {type(c).__name__}")
            classes = _ints(c, "targets")
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "score_kind", score)
        object.__setattr__(self, "classes", classes)

    @classmethod
    def named(cls, names: str | Sequence[str], labels: Sequence[str],
              score: ClassScore = "logit") -> Class:
        """The class(es) called ``names`` in the model's list of class names ``labels``.

        Args:
            names: a class name (every image) or one per image; case is ignored.
            labels: the model's class names by index, e.g. :func:`netlens.data.imagenet_classes`
                (ImageNet models) or :data:`netlens.data.SHAPES_CLASSES` (the shapes model).
            score: as for :class:`Class`.

        Raises:
            ValueError: a name that is not in ``labels`` (the message lists close names).

        Example:
            >>> Class.named("square", ["circle", "square"]).classes
            tensor([1])
        """
        index: dict[str, int] = {}
        for i, label in enumerate(labels):
            index.setdefault(str(label).lower(), i)
        found = []
        for name in [names] if isinstance(names, str) else list(names):
            if str(name).lower() not in index:
                import difflib

                close = difflib.get_close_matches(str(name), [str(v) for v in labels], n=5,
                                                  cutoff=0.5)
                close += [str(v) for v in labels if str(name).lower() in str(v).lower()
                          and str(v) not in close][:5]
                hint = f"; close names: {close}" if close else ""
                raise ValueError(f"no class {name!r} in the {len(labels)} labels{hint}")
            found.append(index[str(name).lower()])
        return cls(found, score)

    def replace(self, **state: Any) -> Class:
        return Class(self.c, self.score_kind, classes=state.get("classes", self.classes))

    def state(self) -> dict[str, Any]:
        return {"classes": self.classes}

    def bind(self, output: Any) -> Class:
        out = _class_scores(output, "Class")
        batch, n = out.shape
        if n == 1 and self.score_kind != "logit":
            raise ValueError(f"score={self.score_kind!r} of a model with one output per image "
                             f"({describe_output(output)}) is the same for every input (a "
                             "softmax over one class is 1), so there is nothing to explain; use "
                             "score='logit'")
        if self.classes is None:
            classes = out.detach().argmax(-1)
        else:
            classes = self.classes
            if classes.numel() == 1 and batch > 1:
                classes = classes.expand(batch)
            if classes.numel() != batch:
                raise _batch_error(classes.numel(), batch)
            if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= n):
                bad = int(classes.max()) if int(classes.max()) >= n else int(classes.min())
                what = "1 output (one score per image: target 0 or None)" if n == 1 \
                    else f"{n} outputs (valid targets are 0 to {n - 1})"
                raise ValueError(f"target {bad} is out of range: the model has {what}")
        classes = classes.to(out.device)
        _check_finite(out.detach().gather(1, classes.view(-1, 1)), output)
        return Class(self.c, self.score_kind, classes=classes)

    def score(self, output: Any) -> torch.Tensor:
        out = _class_scores(output, "Class")
        if self.classes is None:
            raise RuntimeError("Class(None) must be bound to an output first (target.bind)")
        if self.score_kind == "softmax":
            out = out.softmax(-1)
        elif self.score_kind == "log_softmax":
            out = out.log_softmax(-1)
        classes = self.classes.to(out.device)
        if classes.numel() == 1 and out.shape[0] > 1:
            classes = classes.expand(out.shape[0])
        return out.gather(1, classes.view(-1, 1)).squeeze(1)


def _class_scores(output: Any, who: str) -> torch.Tensor:
    """The ``(B, classes)`` scores of ``output``: a ``(B,)`` output as ``(B, 1)``, trailing axes
    of size 1 dropped; any other shape raises (an index into a flattened map would pick a class
    at a pixel, not a class)."""
    out = unwrap(output)
    if out.dim() == 0:
        raise _scalar_error(output)
    if out.dim() == 1:
        return out[:, None]
    if out.dim() > 2:
        if all(size == 1 for size in out.shape[2:]):
            return out.reshape(out.shape[0], -1)
        fix = ("for a segmentation output (B, classes, H, W) use nl.targets.Segmentation(c); "
               "otherwise " if out.dim() == 4 else "")
        example = {3: "out[:, 0, c]", 4: "out[:, c].mean((1, 2))"}.get(out.dim(),
                                                                    "out.flatten(1)[:, i]")
        raise ValueError(
            f"{who} needs an output of shape (B, classes), but the model returned "
            f"{describe_output(output)}, which has no single class axis (an integer class would "
            f"index the flattened output); {fix}pick the scores to explain with "
            f"target=nl.targets.Score(fn), fn(output) -> (B,) scores (e.g. lambda out: "
            f"{example})")
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class TopK(Target):
    """The ``k`` highest-scoring classes of each image's clean output, as ``k`` targets.

    Results gain a K axis (``(B, k, C, H, W)``), in decreasing order of the class score, and
    are computed from one forward pass (one backward pass per class, batched where the method
    allows). After :meth:`bind`, ``classes`` is ``(B, k)``.

    Example:
        >>> out = torch.tensor([[0.0, 2.0, 1.0]])
        >>> TopK(2).bind(out).classes
        tensor([[1, 2]])
    """

    n: int = 5
    score_kind: ClassScore = "logit"
    classes: torch.Tensor | None = None

    def __init__(self, k: int = 5, score: ClassScore = "logit", *,
                 classes: torch.Tensor | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        object.__setattr__(self, "n", int(k))
        object.__setattr__(self, "score_kind", score)
        object.__setattr__(self, "classes", classes)
        Class(0, score)  # validates ``score``

    @property
    def k(self) -> int:  # type: ignore[override]
        return self.n

    def replace(self, **state: Any) -> TopK:
        return TopK(self.n, self.score_kind, classes=state.get("classes", self.classes))

    def state(self) -> dict[str, Any]:
        return {"classes": self.classes}

    def bind(self, output: Any) -> TopK:
        if self.classes is not None:
            return self
        out = _class_scores(output, "TopK")
        if self.n > out.shape[1]:
            raise ValueError(f"TopK({self.n}) asks for more classes than the model's "
                             f"{out.shape[1]} outputs")
        top = out.detach().topk(self.n, dim=1)
        _check_finite(top.values, output)
        return self.replace(classes=top.indices)

    def score(self, output: Any) -> torch.Tensor:
        if self.classes is None:
            raise RuntimeError("TopK must be bound to an output first (target.bind)")
        out = _class_scores(output, "TopK")
        if self.score_kind == "softmax":
            out = out.softmax(-1)
        elif self.score_kind == "log_softmax":
            out = out.log_softmax(-1)
        return out.gather(1, self.classes.to(out.device))

    @property
    def targets(self) -> list[Class]:
        """The ``k`` targets as :class:`Class` targets (after :meth:`bind`)."""
        if self.classes is None:
            raise RuntimeError("TopK must be bound to an output first (target.bind)")
        return [Class(None, self.score_kind, classes=self.classes[:, j]) for j in range(self.n)]


@dataclasses.dataclass(frozen=True, eq=False)
class Multi(Target):
    """Several targets per image: ``scores`` is ``(B, K)``, results gain a K axis.

    A list of targets passed as ``target=`` becomes a ``Multi``.
    """

    targets: list[Target] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("Multi needs at least one target")
        parts = [as_target(t) for t in self.targets]
        if any(p.k is not None for p in parts):
            raise ValueError("the targets of a Multi must each give one score per image")
        layers = {p.layer for p in parts}
        if len(layers) > 1:
            raise ValueError("the targets of a Multi must all read the same output (layer)")
        object.__setattr__(self, "targets", parts)

    @property
    def k(self) -> int:  # type: ignore[override]
        return len(self.targets)

    @property
    def layer(self) -> str | None:  # type: ignore[override]
        return self.targets[0].layer

    def state(self) -> dict[str, Any]:
        return {}

    def check_batch(self, batch: int) -> Multi:
        for t in self.targets:
            t.check_batch(batch)
        return self

    def take(self, index: slice | torch.Tensor) -> Multi:
        return Multi([t.take(index) for t in self.targets])

    @staticmethod
    def cat(parts: Sequence[Target]) -> Target:
        multis = cast("Sequence[Multi]", parts)  # cat is called on the parts' own class
        return Multi([Target.cat([p.targets[j] for p in multis])
                      for j in range(len(multis[0].targets))])

    def bind(self, output: Any) -> Multi:
        return Multi([t.bind(output) for t in self.targets])

    def score(self, output: Any) -> torch.Tensor:
        return torch.stack([t(output) for t in self.targets], dim=1)


# -- wrappers ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class Output(Target):
    """Explains another part of the output: ``output[field]`` (a key, an attribute or a tuple
    index), scored by ``target`` (default: the predicted class of that part).

    Example:
        >>> out = {"aux": torch.tensor([[0.0, 1.0]]), "main": torch.tensor([[5.0, 2.0]])}
        >>> Output("main").bind(out)(out)
        tensor([5.])
    """

    field: str | int = 0
    target: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", as_target(self.target))

    @property
    def k(self) -> int | None:  # type: ignore[override]
        return self.target.k

    def pick(self, output: Any) -> Any:
        f = self.field
        if isinstance(output, Mapping) and f in output:
            return output[f]
        if isinstance(f, int) and isinstance(output, (tuple, list)) and -len(output) <= f < \
                len(output):
            return output[f]
        if isinstance(f, str) and hasattr(output, f):
            return getattr(output, f)
        raise ValueError(f"the model's output has no field {f!r}: it is "
                         f"{describe_output(output)}")

    def state(self) -> dict[str, Any]:
        return {}

    def check_batch(self, batch: int) -> Output:
        self.target.check_batch(batch)
        return self

    def take(self, index: slice | torch.Tensor) -> Output:
        return Output(self.field, self.target.take(index))

    @staticmethod
    def cat(parts: Sequence[Target]) -> Target:
        outputs = cast("Sequence[Output]", parts)  # cat is called on the parts' own class
        return Output(outputs[0].field, Target.cat([p.target for p in outputs]))

    def bind(self, output: Any) -> Output:
        return Output(self.field, self.target.bind(self.pick(output)))

    def score(self, output: Any) -> torch.Tensor:
        return self.target(self.pick(output))


@dataclasses.dataclass(frozen=True, eq=False)
class Score(Target):
    """A function ``output -> (B,)`` as a target.

    If it returns integers on the clean output, they are class indices (:class:`Class`, the
    original netlens form); otherwise it is a differentiable score function, called on the raw
    output of the images of each pass.
    """

    fn: Callable[[Any], torch.Tensor] = lambda out: out  # noqa: E731

    def bind(self, output: Any) -> Target:
        if isinstance(output, torch.Tensor) and output.dim() == 0:
            raise _scalar_error(output)
        value = self.fn(_detached(output))
        value = torch.as_tensor(value)
        batch = _batch_of(output)
        if not value.is_floating_point() and not value.is_complex():
            return Class(value).bind(output)
        if value.dim() != 1 or (batch is not None and value.shape[0] != batch):
            raise ValueError(f"a target function must return one score per image, shape "
                             f"({batch},), got shape {tuple(value.shape)}")
        return self

    def score(self, output: Any) -> torch.Tensor:
        return self.fn(output)


def _detached(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, tuple) and not hasattr(output, "_fields"):
        return tuple(_detached(o) for o in output)
    if isinstance(output, list):
        return [_detached(o) for o in output]
    if isinstance(output, dict):
        items = {k: _detached(v) for k, v in output.items()}
        if type(output) is dict:
            return items
        # Keep the type (an OrderedDict, a HuggingFace ModelOutput read as ``out.logits``).
        detached = copy.copy(output)
        for k, v in items.items():
            detached[k] = v
        return detached
    return output


def _batch_of(output: Any) -> int | None:
    if isinstance(output, list) and output and isinstance(output[0], Mapping):
        return len(output)  # torchvision detection: one dict per image
    try:
        out = unwrap(output)
    except TypeError:
        return None
    return int(out.shape[0]) if out.dim() else None


# -- dense and structured outputs --------------------------------------------------------------
def _class_tensor(c: Any, what: str) -> torch.Tensor:
    if isinstance(c, bool):
        raise TypeError(f"{what} must be an int or one int per image, not a bool")
    return _ints(c, what)


@dataclasses.dataclass(frozen=True, eq=False)
class Segmentation(Target):
    """The sum of class ``c``'s logits over a mask, for ``(B, K, H, W)`` outputs.

    Works on torchvision segmentation models (``{"out": ...}``) and any dense classifier.

    Args:
        c: the class: an int or one int per image.
        mask: ``(B, H, W)`` or ``(H, W)`` (every image), bool or float weights, at the output's
            size. Default: the pixels whose arg-max in the clean output is ``c``
            (pytorch-grad-cam's ``SemanticSegmentationTarget`` with the predicted mask).

    Example:
        >>> out = torch.tensor([[[[2.0, 0.0]], [[1.0, 3.0]]]])  # (1, 2, 1, 2)
        >>> Segmentation(1).bind(out)(out)
        tensor([3.])
    """

    c: Any = 0
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "c", _class_tensor(self.c, "the segmentation class"))
        if self.mask is not None:
            m = torch.as_tensor(self.mask)
            if m.dim() == 2:
                m = m[None]
            if m.dim() != 3:
                raise ValueError(f"mask must have shape (B, H, W) or (H, W), got "
                                 f"{tuple(torch.as_tensor(self.mask).shape)}")
            object.__setattr__(self, "mask", m)

    def state(self) -> dict[str, Any]:
        return {"c": self.c, "mask": self.mask}

    def replace(self, **state: Any) -> Segmentation:
        new = Segmentation.__new__(Segmentation)
        object.__setattr__(new, "c", state.get("c", self.c))
        object.__setattr__(new, "mask", state.get("mask", self.mask))
        return new

    def _dense(self, output: Any) -> torch.Tensor:
        out = unwrap(output)
        if out.dim() != 4:
            hint = "; for a (B, classes) output use nl.targets.Class(c)" if out.dim() == 2 else ""
            raise ValueError(f"Segmentation needs an output of shape (B, classes, H, W), but the "
                             f"model returned {describe_output(output)}{hint}")
        return out

    def bind(self, output: Any) -> Segmentation:
        out = self._dense(output)
        batch, classes, h, w = out.shape
        c = self.c.to(out.device)
        if c.numel() not in (1, batch):
            raise _batch_error(c.numel(), batch, "segmentation classes")
        if int(c.min()) < 0 or int(c.max()) >= classes:
            raise ValueError(f"segmentation class {int(c.max())} is out of range: the output "
                             f"{tuple(out.shape)} has {classes} classes")
        c = c.expand(batch) if c.numel() == 1 else c
        if self.mask is None:
            mask = out.detach().argmax(1) == c.view(-1, 1, 1)
        else:
            mask = self.mask.to(out.device)
            if mask.shape[1:] != (h, w) or mask.shape[0] not in (1, batch):
                raise ValueError(f"the mask has shape {tuple(self.mask.shape)} but the output "
                                 f"is {tuple(out.shape)}: give a mask of shape ({batch}, {h}, "
                                 f"{w}) or ({h}, {w}) (resize it to the output's size)")
            mask = mask.expand(batch, h, w)
        return self.replace(c=c, mask=mask)

    def score(self, output: Any) -> torch.Tensor:
        if self.mask is None:
            raise RuntimeError("Segmentation(mask=None) must be bound to an output first")
        out = self._dense(output)
        batch = out.shape[0]
        c = self.c.to(out.device)
        c = c.expand(batch) if c.numel() == 1 else c
        logits = out.gather(1, c.view(-1, 1, 1, 1).expand(-1, 1, *out.shape[2:]))[:, 0]
        mask = self.mask.to(out.device)
        mask = mask.expand(batch, *mask.shape[1:]) if mask.shape[0] == 1 else mask
        return (logits * mask.to(logits.dtype)).flatten(1).sum(1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``(N, 4)`` and ``(M, 4)`` boxes ``(x0, y0, x1, y1)``: ``(N, M)``."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    a, b = a.to(dtype), b.to(device=a.device, dtype=dtype)
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)


@dataclasses.dataclass(frozen=True, eq=False)
class Detection(Target):
    """Detection scores: per given box, the score of the predicted box of the same label that
    overlaps it most (IoU at least ``iou``), summed over an image's boxes.

    Works on torchvision detection models (a list of dicts with ``boxes``, ``scores``,
    ``labels``; eval mode) and on YOLO-style ``(B, N, 4 + K)`` tensors (``box_format`` box
    coordinates, then K class scores). A given box whose match disappears in a perturbed image
    scores 0 there.

    Args:
        boxes: the boxes to explain, ``(x0, y0, x1, y1)`` in input pixels: a ``(B, 4)`` tensor
            (one box per image), or a list of B tensors ``(n_i, 4)``.
        labels: the label of each box (``(B,)`` or a list of B ``(n_i,)``), or None: any label
            (the best-overlapping predicted box).
        iou: the least IoU of a match.
        box_format: ``"xyxy"`` or ``"cxcywh"``, for YOLO-style tensors.

    Raises:
        ValueError: at :meth:`bind`, when a box matches no predicted box in the clean output.
    """

    boxes: Any = None
    labels: Any = None
    iou: float = 0.5
    box_format: Literal["xyxy", "cxcywh"] = "xyxy"

    def __post_init__(self) -> None:
        boxes, labels = self.boxes, self.labels
        if isinstance(boxes, torch.Tensor):
            if boxes.dim() != 2 or boxes.shape[1] != 4:
                raise ValueError(f"boxes must be a (B, 4) tensor or a list of B (n, 4) tensors, "
                                 f"got shape {tuple(boxes.shape)}")
            boxes = [b[None] for b in boxes.detach().float()]
        elif isinstance(boxes, Sequence):
            boxes = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
        else:
            raise TypeError(f"boxes must be a (B, 4) tensor or a list of B (n, 4) tensors, got "
                            f"{type(boxes).__name__}")
        if labels is not None:
            if isinstance(labels, torch.Tensor) and labels.dim() <= 1:
                labels = [torch.as_tensor(v).reshape(1).long() for v in labels.reshape(-1)]
            else:
                labels = [torch.as_tensor(v).reshape(-1).long() for v in labels]
            if len(labels) != len(boxes) or any(len(a) != len(b) for a, b in zip(labels, boxes)):
                raise ValueError(f"labels do not fit the boxes: {len(boxes)} images of boxes "
                                 f"{[len(b) for b in boxes]}, {len(labels)} of labels "
                                 f"{[len(v) for v in labels]}")
        if not (isinstance(self.iou, numbers.Real) and 0.0 <= self.iou <= 1.0):
            raise ValueError(f"iou must be a number in [0, 1], got {self.iou!r}")
        if self.box_format not in ("xyxy", "cxcywh"):
            raise ValueError(f"box_format must be 'xyxy' or 'cxcywh', got {self.box_format!r}")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", labels)

    def state(self) -> dict[str, Any]:
        return {"boxes": self.boxes, "labels": self.labels}

    def replace(self, **state: Any) -> Detection:
        new = Detection.__new__(Detection)
        for f in ("iou", "box_format"):
            object.__setattr__(new, f, getattr(self, f))
        object.__setattr__(new, "boxes", state.get("boxes", self.boxes))
        object.__setattr__(new, "labels", state.get("labels", self.labels))
        return new

    def _predictions(self, output: Any,
                     ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Per image ``(boxes (N, 4), scores (N, K) or (N, 1), labels (N,) or None)``."""
        if isinstance(output, (list, tuple)) and output and all(
                isinstance(o, Mapping) for o in output):
            preds = []
            for o in output:
                if not all(k in o for k in ("boxes", "scores", "labels")):
                    raise ValueError(f"Detection needs dicts with 'boxes', 'scores' and 'labels' "
                                     f"(torchvision detection models in eval mode); got keys "
                                     f"{sorted(o)}")
                preds.append((o["boxes"], o["scores"][:, None], o["labels"]))
            return preds
        out = output if isinstance(output, torch.Tensor) else None
        if out is None or out.dim() != 3 or out.shape[2] < 5:
            raise ValueError(f"Detection needs a torchvision detection output (a list of dicts "
                             f"with boxes, scores and labels) or a (B, N, 4 + classes) tensor; "
                             f"the model returned {describe_output(output)} (a detection model "
                             "in training mode returns losses: call model.eval())")
        boxes = out[..., :4]
        if self.box_format == "cxcywh":
            cxy, wh = boxes[..., :2], boxes[..., 2:]
            boxes = torch.cat([cxy - wh / 2, cxy + wh / 2], -1)
        return [(boxes[i], out[i, :, 4:], None) for i in range(out.shape[0])]

    def _image_score(self, pred: tuple, given: torch.Tensor, labels: torch.Tensor | None,
                     ) -> tuple[torch.Tensor, list[bool]]:
        boxes, scores, plabels = pred
        total = scores.sum() * 0  # keeps the graph (and dtype) even without a match
        found = []
        if boxes.shape[0] == 0:
            return total, [False] * len(given)
        ious = box_iou(boxes.detach(), given.to(boxes.device)).T
        for j in range(len(given)):
            if plabels is None:  # YOLO style: the class's score of each predicted box
                cls = int(labels[j]) if labels is not None else None
                per_box = scores[:, cls] if cls is not None else scores.amax(1)
                ok = ious[j] >= self.iou
            else:
                per_box = scores[:, 0]
                ok = ious[j] >= self.iou
                if labels is not None:
                    ok = ok & (plabels == labels[j].to(plabels.device))
            if not bool(ok.any()):
                found.append(False)
                continue
            best = torch.where(ok, ious[j], torch.full_like(ious[j], -1.0)).argmax()
            total = total + per_box[best]
            found.append(True)
        return total, found

    def _check_images(self, preds: list) -> None:
        if len(self.boxes) not in (1, len(preds)):
            raise ValueError(f"got boxes for {len(self.boxes)} images but the model returned "
                             f"{len(preds)} images' detections; give one (n, 4) box tensor per "
                             "image (or one for all)")

    def bind(self, output: Any) -> Detection:
        preds = self._predictions(output)
        self._check_images(preds)
        for i, pred in enumerate(preds):
            given, labels = self._for(i)
            _, found = self._image_score(pred, given, labels)
            if not all(found):
                j = found.index(False)
                what = f" with label {int(labels[j])}" if labels is not None else ""
                raise ValueError(
                    f"box {given[j].tolist()} of image {i} matches no predicted box{what} with "
                    f"IoU >= {self.iou} (the model predicted {pred[0].shape[0]} boxes); lower "
                    "iou=, check the label and the box coordinates (x0, y0, x1, y1 in input "
                    "pixels), or lower the model's score threshold (torchvision: "
                    "box_score_thresh)")
        return self

    def _for(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        k = 0 if len(self.boxes) == 1 else i
        return self.boxes[k], (self.labels[k] if self.labels is not None else None)

    def score(self, output: Any) -> torch.Tensor:
        preds = self._predictions(output)
        self._check_images(preds)
        return torch.stack([self._image_score(p, *self._for(i))[0] for i, p in enumerate(preds)])


@dataclasses.dataclass(frozen=True, eq=False)
class Similarity(Target):
    """Cosine similarity of an embedding output ``(B, D)`` to a reference embedding.

    Args:
        reference: ``(D,)`` (every image) or ``(B, D)`` (one per image).

    Example:
        >>> out = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> Similarity(torch.tensor([1.0, 0.0])).bind(out)(out).round(decimals=4)
        tensor([1.0000, 0.7071])
    """

    reference: torch.Tensor | None = None

    def __post_init__(self) -> None:
        ref = self.reference
        if not isinstance(ref, torch.Tensor) or not ref.is_floating_point():
            raise TypeError("reference must be a float tensor (D,) or (B, D), got "
                            f"{getattr(ref, 'dtype', type(ref).__name__)}")
        ref = ref.detach()
        if ref.dim() == 1:
            ref = ref[None]
        if ref.dim() != 2:
            raise ValueError(f"reference must have shape (D,) or (B, D), got {tuple(ref.shape)}")
        object.__setattr__(self, "reference", ref)

    def state(self) -> dict[str, Any]:
        return {"reference": self.reference}

    def replace(self, **state: Any) -> Similarity:
        return Similarity(state.get("reference", self.reference))

    @property
    def _reference(self) -> torch.Tensor:
        assert self.reference is not None  # __post_init__ made it a (B, D) tensor
        return self.reference

    def _embedding(self, output: Any) -> torch.Tensor:
        out = unwrap(output)
        if out.dim() != 2 or out.shape[1] != self._reference.shape[1]:
            raise ValueError(f"Similarity compares (B, {self._reference.shape[1]}) embeddings, "
                             f"but the model returned {describe_output(output)}; flatten or "
                             "pool the output (e.g. a wrapper model), or give a reference of its "
                             "size")
        return out

    def bind(self, output: Any) -> Similarity:
        out = self._embedding(output)
        if self._reference.shape[0] not in (1, out.shape[0]):
            raise _batch_error(self._reference.shape[0], out.shape[0], "reference embeddings")
        return self

    def score(self, output: Any) -> torch.Tensor:
        out = self._embedding(output)
        ref = self._reference.to(out)
        return F.cosine_similarity(out, ref.expand_as(out), dim=1)


@dataclasses.dataclass(frozen=True, eq=False)
class Regression(Target):
    """A regression output: ``output[:, index]``, or the output itself when it is ``(B,)`` or
    ``(B, 1)`` and ``index`` is None.

    Example:
        >>> Regression(1)(torch.tensor([[0.5, 2.0]]))
        tensor([2.])
    """

    index: int | None = None

    def score(self, output: Any) -> torch.Tensor:
        flat = flat_scores(output)
        if self.index is None:
            if flat.shape[1] != 1:
                raise ValueError(f"Regression() needs one output per image, but the model "
                                 f"returned {describe_output(output)}; choose one with "
                                 "Regression(index)")
            return flat[:, 0]
        if not -flat.shape[1] <= self.index < flat.shape[1]:
            raise ValueError(f"Regression index {self.index} is out of range for an output of "
                             f"{flat.shape[1]} values per image ({describe_output(output)})")
        return flat[:, self.index]

    def bind(self, output: Any) -> Regression:
        self.score(_detached(output))
        return self


@dataclasses.dataclass(frozen=True, eq=False)
class Channel(Target):
    """The mean (or sum) activation of one channel of a named layer.

    The layer's output is viewed as a ``(B, C, h, w)`` map (token and channels-last layers
    included) and the forward pass stops right after it, so any gradient method explains a
    neuron: ``saliency(model, x, Channel("layer3", 7))`` is the original netlens feature
    gradient.

    Args:
        layer: a layer name of ``FlatModel(model).layer_names``.
        channel: the channel index.
        reduce: ``"mean"`` or ``"sum"`` over the channel's positions.
    """

    layer: str = ""
    channel: int = 0
    reduce: Literal["mean", "sum"] = "mean"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise TypeError(f"layer must be a layer name (str), got {self.layer!r}")
        if isinstance(self.channel, bool) or not isinstance(self.channel, numbers.Integral) \
                or self.channel < 0:
            raise ValueError(f"channel must be an int >= 0, got {self.channel!r}")
        if self.reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {self.reduce!r}")

    def _check(self, fmap: torch.Tensor) -> None:
        if fmap.dim() != 4:
            raise ValueError(f"Channel reads a (B, C, h, w) map of layer {self.layer!r}, got "
                             f"shape {tuple(fmap.shape)}")
        if self.channel >= fmap.shape[1]:
            raise ValueError(f"channel {self.channel} is out of range: layer {self.layer!r} has "
                             f"{fmap.shape[1]} channels (valid channels are 0 to "
                             f"{fmap.shape[1] - 1})")

    def bind(self, output: Any) -> Channel:
        self._check(output)
        return self

    def score(self, output: Any) -> torch.Tensor:
        """``output`` is the layer's output viewed as a ``(B, C, h, w)`` map."""
        self._check(output)
        values = output[:, int(self.channel)].reshape(output.shape[0], -1)
        return values.mean(1) if self.reduce == "mean" else values.sum(1)
