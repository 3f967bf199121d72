"""Axiomatic properties of an explanation: does it obey what an attribution should?

- :func:`completeness` (Sundararajan et al., "Axiomatic Attribution for Deep Networks", ICML
  2017): the attributions sum to ``f(x) - f(baseline)``; returned as the residual. 0 is exact.
- :func:`non_sensitivity` (Nguyen & Martinez, "On Quantitative Aspects of Model
  Interpretability", 2020): the features whose removal leaves the score unchanged should get
  zero attribution, and only those: the count of features that break this. Lower is better.
- :func:`input_invariance` (Kindermans et al., "The (Un)reliability of Saliency Methods", 2017):
  a constant shift of the input, absorbed by the first layer's bias so that the model's function
  is unchanged, should not change the explanation. 1.0 where it does not.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

import torch
from torch import nn

from .._runtime import auto_batch_size, chunks, guarded, model_output, prepare
from .._util import progress_bar
from ..attribution import baseline_image
from ..flat_model import FlatModel
from ..targets import TargetLike
from ._maps import (
    Method,
    bind_single,
    call_method,
    check_attr,
    method_target,
    model_for,
    resolve_method,
    target_score,
)

__all__ = ["completeness", "non_sensitivity", "input_invariance", "shifted_model"]


def completeness(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    baseline: float | str | torch.Tensor = 0.0, batch_size: int | None = None,
) -> torch.Tensor:
    """``sum(attr) - (f_t(x) - f_t(baseline))`` per image, ``f_t`` the target's logit.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        attr: the attributions ``(B, C, H, W)`` or ``(B, 1, H, W)``, summed as they are
            (signed, over all channels and pixels).
        target: class per image; None: the predicted class.
        baseline: the reference input: a number, ``"zeros"``, ``"blur"``, or a tensor that
            broadcasts to ``x`` (as integrated gradients' ``baseline``).
        batch_size: images per forward pass (default from the memory budget).

    Returns:
        ``(B,)`` float64 residuals; 0 for an attribution that is complete (integrated
        gradients with enough steps, DeepLIFT's rescale rule, input x gradient of a bias-free
        linear model).

    Raises:
        ValueError: a bad input, attribution, baseline or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False)).double()
        >>> x = torch.rand(2, 1, 2, 2, dtype=torch.float64)
        >>> exact = lin[1].weight[0].view(1, 1, 2, 2) * x
        >>> completeness(lin, x, exact, 0).abs().max().item() < 1e-12
        True
    """
    fm, x = prepare(model, x)
    check_attr(attr, x)
    ref = baseline_image(baseline, x).expand_as(x)
    if batch_size is None:
        batch_size = auto_batch_size(fm, x, backward=False)
    with guarded(fm), torch.no_grad():
        t = bind_single(fm, x, target, batch_size)
        delta = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
        for part in chunks(x.shape[0], batch_size):
            tp = t.take(part)
            on = target_score(tp, model_output(fm, x[part], tp), "logit")
            off = target_score(tp, model_output(fm, ref[part], tp), "logit")
            delta[part] = (on - off).double()
    return attr.detach().to(x.device).flatten(1).double().sum(1) - delta


def non_sensitivity(
    model: nn.Module, x: torch.Tensor, attr: torch.Tensor, target: TargetLike = None, *,
    eps: float = 1e-5, features_in_step: int = 1, baseline: float | torch.Tensor = 0.0,
    score: Literal["softmax", "logit"] = "softmax", batch_size: int | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """The count of features where "the score ignores it" and "its attribution is zero"
    disagree.

    A feature is an element of ``attr``: one value per channel and pixel for ``(B, C, H, W)``,
    one per pixel (all channels removed at once) for ``(B, 1, H, W)``. The features are taken
    in groups of ``features_in_step`` consecutive ones of the flattened attribution; each group
    is replaced by ``baseline`` in turn (one image per group), and the score is *insensitive*
    to every feature of the group when it moves by less than ``eps``. A feature's attribution
    is *zero* when ``|a| / max |a| < eps`` (the map scaled per image).

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel`.
        x: images ``(B, C, H, W)``.
        attr: the attributions ``(B, C, H, W)`` or ``(B, 1, H, W)``.
        target: class per image; None: the predicted class.
        eps: the threshold of both tests.
        features_in_step: features removed together.
        baseline: the value of a removed feature: a number or a tensor that broadcasts to ``x``.
        score: ``"softmax"`` (the class probability) or ``"logit"`` (the target's own score).
        batch_size: perturbed images per forward pass (default from the memory budget).
        progress: show a progress bar: None when it takes over 2 s, True always, False never.

    Returns:
        ``(B,)`` float64 counts in ``[0, number of features]``.

    Raises:
        ValueError: ``eps < 0``, ``features_in_step < 1``, a bad score, input, attribution or
            target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False)).double()
        >>> with torch.no_grad():
        ...     _ = lin[1].weight.copy_(torch.tensor([[1.0, 0, 0, 2], [0, 1, 1, 0]]))
        >>> x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
        >>> right = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]], dtype=torch.float64)
        >>> non_sensitivity(lin, x, right, 0, score="logit").tolist()
        [0.0]
    """
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    if isinstance(features_in_step, bool) or not isinstance(features_in_step, int) \
            or features_in_step < 1:
        raise ValueError(f"features_in_step must be an int >= 1, got {features_in_step!r}")
    if score not in ("softmax", "logit"):
        raise ValueError(f"score must be 'softmax' or 'logit', got {score!r}")
    fm, x = prepare(model, x)
    check_attr(attr, x)
    ref = baseline_image(baseline, x).expand_as(x)
    a = attr.detach().to(x.device).double().abs().flatten(1)
    top = a.amax(1, keepdim=True)
    zero = a / torch.where(top > 0, top, torch.ones_like(top)) < eps
    b, n = a.shape
    groups = math.ceil(n / features_in_step)
    channels = attr.shape[1]
    if batch_size is None:
        batch_size = auto_batch_size(fm, x, backward=False)
    with guarded(fm), torch.no_grad():
        t = bind_single(fm, x, target, batch_size, score)
        clean = torch.empty(b, dtype=torch.float64, device=x.device)
        for part in chunks(b, batch_size):
            tp = t.take(part)
            clean[part] = target_score(tp, model_output(fm, x[part], tp), score).double()
        moved = torch.empty(groups * b, dtype=torch.float64, device=x.device)
        feature = torch.arange(n, device=x.device)
        with progress_bar(groups * b, progress, "non-sensitivity") as bar:
            for part in chunks(groups * b, batch_size):
                index = torch.arange(part.start, part.stop, device=x.device)
                j, i = index // b, index % b
                off = (feature[None] // features_in_step == j[:, None])
                off = off.view(-1, channels, *x.shape[2:])
                images = torch.where(off, ref[i], x[i])
                ti = t.take(i)
                moved[part] = target_score(ti, model_output(fm, images, ti), score).double()
                bar.update(part.stop - part.start)
    insensitive = (moved.view(groups, b).T - clean[:, None]).abs() < eps  # (B, groups)
    per_feature = insensitive[:, feature // features_in_step]
    return (per_feature ^ zero).sum(1).double()


class _ShiftAbsorbed(nn.Module):
    """A copy of the first layer whose output no longer sees a constant input shift:
    ``layer(z) - W * shift`` (``W * shift``: the layer without bias applied to the constant
    image ``shift``, a bias that may vary over positions where the layer pads)."""

    def __init__(self, layer: nn.Module, shift: float) -> None:
        super().__init__()
        self.layer, self.shift = layer, shift

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        const = torch.full_like(z, self.shift)
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return layer(z) - nn.functional.linear(const, layer.weight)
        assert isinstance(layer, nn.modules.conv._ConvNd)
        return layer(z) - layer._conv_forward(const, layer.weight, None)


def shifted_model(model: nn.Module, shift: float) -> nn.Module:
    """A copy of ``model`` whose first layer (the first ``Conv`` / ``Linear`` in module order)
    absorbs the input shift ``shift``: ``shifted_model(model, m)(x + m) == model(x)``. The
    caller's model is not changed.

    Raises:
        ValueError: the model has no ``Conv`` or ``Linear`` layer.
    """
    twin = copy.deepcopy(model.model if isinstance(model, FlatModel) else model)
    for name, module in twin.named_modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            wrapped = _ShiftAbsorbed(module, float(shift))
            if name == "":
                return wrapped
            parent_name, _, child = name.rpartition(".")
            parent = twin.get_submodule(parent_name) if parent_name else twin
            setattr(parent, child, wrapped)
            return twin
    raise ValueError("input_invariance needs a first Conv or Linear layer to absorb the shift; "
                     "the model has none")


def input_invariance(
    model: nn.Module, x: torch.Tensor, target: TargetLike = None, method: Method = "saliency", *,
    shift: float = -1.0, atol: float = 1e-4, rtol: float = 1e-5,
    options: dict[str, Any] | None = None, generator: torch.Generator | None = None,
    progress: bool | None = None,
) -> torch.Tensor:
    """1.0 per image whose explanation is unchanged when the input is shifted by ``shift`` and
    the model is a copy that absorbs the shift in its first layer (so it computes the same
    function of the unshifted input), else 0.0.

    Compared element-wise as ``|E(x) - E'(x + shift)| <= atol + rtol |E'(x + shift)|``.
    Gradients pass (the function is unchanged); input x gradient does not.

    Args:
        model: any classifier ``nn.Module`` or :class:`~netlens.FlatModel` (never changed: the
            shifted model is a copy, :func:`shifted_model`).
        x: images ``(B, C, H, W)``.
        target: class per image; None: the predicted class.
        method: a name of :data:`~netlens.attribution.METHODS`, or a function
            ``f(model, x, target, **options)``.
        shift: the constant added to every input value.
        atol: absolute tolerance of the comparison.
        rtol: relative tolerance of the comparison.
        options: keyword options of the method.
        generator: given to the method.
        progress: given to the method (False silences it).

    Returns:
        ``(B,)`` float64 of 0.0 and 1.0.

    Raises:
        ValueError: no first Conv / Linear layer, or one that does not read the input (the
            copy's output differs from the model's), an unknown method, a bad input or target.

    Example:
        >>> lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> input_invariance(lin, torch.rand(2, 1, 2, 2), 0, "saliency").tolist()
        [1.0, 1.0]
    """
    _, fn = resolve_method(method)
    fm, x = prepare(model, x)
    with guarded(fm), torch.no_grad():
        targets = method_target(bind_single(fm, x, target, auto_batch_size(fm, x, backward=False)))
        twin = shifted_model(fm, shift).eval()
        same, moved = fm(x), twin(x + shift)
    if isinstance(same, torch.Tensor) and not torch.allclose(
            moved, same, rtol=1e-3, atol=1e-4 * float(same.abs().max()) + 1e-6):
        raise ValueError("the shifted copy does not compute the model's function: the first "
                         "Conv / Linear layer in module order is not the one reading the input")
    opts = dict(options or {})
    net = model_for(fn, fm, model)
    a = call_method(fn, net, x, targets, opts, generator, progress).detach()
    check_attr(a, x, name="the explanation")
    b = call_method(fn, twin, x + shift, targets, opts, generator, progress).detach()
    close = (a - b).abs() <= atol + rtol * b.abs()
    return close.flatten(1).all(1).double()
