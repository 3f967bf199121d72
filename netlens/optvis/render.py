"""``OptVis``: optimize an image parameterization to maximize an objective of a model.

The loop (Olah et al., "Feature Visualization", Distill 2017): image = param(); a random
transformation of it; the model's own input normalization; the forward pass, stopped right after
the deepest layer the objective reads; a gradient step on the parameters to *raise* the objective.
The model is frozen during the run (no parameter gradient is computed) and left exactly as it
was afterwards, also after an error or a Ctrl-C.

Example:
    >>> import torchvision
    >>> from netlens.optvis import objectives as obj
    >>> model = torchvision.models.resnet18().eval()
    >>> g = torch.Generator().manual_seed(0)
    >>> vis = OptVis(model, obj.channel("layer2", 7), size=64, generator=g)
    >>> images = vis.vis(thresholds=(4, 8), progress=False)
    >>> [tuple(im.shape) for im in images]
    [(1, 3, 64, 64), (1, 3, 64, 64)]
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Union, cast

import torch
from torch import nn

from .. import rules
from .._runtime import warn_if_training
from .._util import NetlensWarning, progress_bar, user_stacklevel
from ..adapter import (
    LayoutLike,
    _StopForward,
    as_layout,
    first_tensor,
    model_lock,
    preserved_state,
)
from ..flat_model import FlatModel, input_channels
from .objectives import Context, Objective, as_objective
from .optim import LBFGS
from .param import ImageParam
from .transforms import compose, standard_transforms

__all__ = ["OptVis", "Callback", "model_normalization", "normalize_input", "model_device",
           "check_grad_mode", "check_channels"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[..., torch.Tensor]
OptimizerSpec = Union[torch.optim.Optimizer, Callable[[list], torch.optim.Optimizer], str, None]


class Callback:
    """Hooks into a run; override what you need. A plain function ``f(vis, step, value)`` given
    as ``callback=`` is called as :meth:`on_step`."""

    def on_begin(self, vis: OptVis) -> None:
        """Before the first step."""

    def on_step(self, vis: OptVis, step: int, value: float) -> None:
        """After step ``step`` (1-based), with the objective's value at that step."""

    def on_end(self, vis: OptVis, images: list[torch.Tensor]) -> None:
        """After the last step (also after a Ctrl-C), with the images returned."""


def model_normalization(model: nn.Module) -> tuple[Sequence[float], Sequence[float]]:
    """The ``(mean, std)`` a model expects its ``[0, 1]`` input to be normalized with: the
    model's ``input_mean`` and ``input_std`` attributes if it declares them (netlens's shapes
    model does), else ImageNet's, as for every torchvision classifier."""
    inner = model.model if isinstance(model, FlatModel) else model
    return (getattr(inner, "input_mean", IMAGENET_MEAN), getattr(inner, "input_std", IMAGENET_STD))


class OptVis:
    """Feature visualization by optimization, Lucid-style, on any model.

    Args:
        model: any ``nn.Module`` or :class:`~netlens.FlatModel`. Put it in eval mode yourself
            (a warning says so otherwise); it is never changed.
        objective: what to maximize, an :class:`~netlens.optvis.objectives.Objective` (or a
            function ``Context -> scalar tensor``, which gets the full forward pass).
        param: the image parameterization; default ``ImageParam(size, fft=True,
            decorrelate=True)`` on the model's device, seeded from ``generator``.
        transforms: a callable ``t(image, generator=g)`` or a sequence of them applied in order;
            default :func:`~netlens.optvis.transforms.standard_transforms`; ``()`` for none.
        optimizer: ``"adam"`` (default) or ``"lbfgs"`` (:class:`~netlens.optvis.optim.LBFGS`:
            one pass per step, a trust region instead of a line search) with ``lr``; a
            ``torch.optim.Optimizer`` built on ``param.parameters()``; or a function
            ``params -> Optimizer``. (``torch.optim.LBFGS`` works too, but on a clamped
            :class:`RawParam` its steps can run away: prefer ``"lbfgs"``.)
        lr: the learning rate of the default optimizer.
        size: the side (or ``(H, W)``) of the default parameterization.
        mean: the model's input normalization, applied inside the loop; default
            :func:`model_normalization`. Pass ``mean=0.0, std=1.0`` for none.
        std: the standard deviation of that normalization, as ``mean``.
        generator: the source of randomness of the default param and of the transforms; default a
            fresh, nondeterministically seeded CPU generator. The global random state is never used.
        redirect_steps: if the first step gives some image no gradient at all (the objective
            reads a channel that is silent on the start image), then for this many steps a ReLU
            module whose gradient is zero for a whole image lets through the gradient that would
            raise its negative inputs (Lucid's "redirected ReLU"), which wakes the channel up;
            0 turns it off. ReLUs called as functions keep their gradient.
        batch: the number of images of the default parameterization.
        layouts: layer name -> how to view its output as a ``[B, C, h, w]`` map, for layers
            netlens reads wrong or cannot (a :class:`~netlens.Layout`, a kind's name or a
            function ``output -> [B, C, h, w]``; see :func:`netlens.layouts`).
    """

    def __init__(
        self, model: nn.Module, objective: Objective | Callable[[Context], torch.Tensor],
        param: nn.Module | None = None, transforms: Transform | Iterable[Transform] | None = None,
        optimizer: OptimizerSpec = None, *, lr: float = 0.05, size: int | tuple[int, int] = 128,
        mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
        generator: torch.Generator | None = None, redirect_steps: int = 16, batch: int = 1,
        layouts: Mapping[str, LayoutLike] | None = None,
    ) -> None:
        self.fm = model if isinstance(model, FlatModel) else FlatModel(model)
        self.objective = as_objective(objective)
        device = model_device(self.fm.model)
        if generator is None:  # on the CPU: the same start on any device, no GPU sync per step
            generator = torch.Generator()
            generator.seed()
        elif not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.generator = generator
        if param is None:
            c = input_channels(self.fm.model) or 3
            param = ImageParam(size, batch=batch, channels=c, decorrelate=c == 3,
                               generator=generator, device=device)
        if not callable(param) or not isinstance(param, nn.Module):
            raise TypeError("param must be a netlens.optvis parameterization (ImageParam, "
                            f"RawParam), got {type(param).__name__}")
        self.param = param
        self.transforms = _compose(standard_transforms() if transforms is None else transforms)
        d_mean, d_std = model_normalization(self.fm)
        self._stats = (d_mean if mean is None else mean, d_std if std is None else std)
        self._optimizer_spec, self.lr = optimizer, float(lr)
        self.history: list[float] = []
        if isinstance(redirect_steps, bool) or not isinstance(redirect_steps, int) or \
                redirect_steps < 0:
            raise ValueError(f"redirect_steps must be an int >= 0, got {redirect_steps!r}")
        self.redirect_steps = redirect_steps
        shape = getattr(param, "shape", None)
        if isinstance(shape, torch.Size) and len(shape) == 4:
            self._check_image(int(shape[1]))
        if self.objective.layers:  # the layers as they are at the size of this run's images
            with torch.no_grad():
                image = param()
            if isinstance(image, torch.Tensor) and image.dim() == 4:
                self._check_image(int(image.shape[1]))
                self.fm.ensure_traced(image.detach())
        self._layers = [self.fm.resolve_layer(n) for n in self.objective.layers]
        # the names the objective reads its layers by (a Netlens 1.x key such as
        # "features-conv-7" reads the layer it resolves to)
        self._aliases: dict[str, list[str]] = {}
        for given, name in zip(self.objective.layers, self._layers):
            if given != name:
                self._aliases.setdefault(name, []).append(given)
        self._layouts = {self.fm.resolve_layer(n): as_layout(v)
                         for n, v in (layouts or {}).items()}
        self._stop = self._stop_layer()
        #: Whether the last :meth:`vis` was ended by a Ctrl-C (``KeyboardInterrupt``).
        self.interrupted = False
        self._warn_interrupt = True  # NetDreamer.deep_dream warns once for all its octaves

    # -- public ---------------------------------------------------------------------------
    def vis(self, thresholds: Sequence[int] = (256,), callback: Callback | Callable | None = None,
            progress: bool | None = None, *, show_step: int | None = None,
            show: bool = False) -> list[torch.Tensor]:
        """Runs ``max(thresholds)`` optimization steps.

        Args:
            thresholds: increasing step counts at which to take a picture.
            callback: a :class:`Callback`, or a function ``f(vis, step, value)`` called after
                every step.
            progress: show a progress bar: None (when slow), True or False.
            show_step: print ``step N: objective V`` every ``show_step`` steps (Netlens 1.x's
                ``show_step``/``verbose``); None prints nothing.
            show: display each threshold's picture as it is taken, in a notebook (IPython's
                ``display``), as Netlens 1.x's ``show=True`` did; outside IPython a
                ``ValueError`` says to plot the returned images instead.

        A second call continues from the current image, with a fresh optimizer and history.

        Returns:
            One image batch ``(B, C, H, W)`` in ``[0, 1]`` per threshold (detached). After a
            Ctrl-C (a ``KeyboardInterrupt``, also one raised inside the model's forward),
            the pictures taken so far and the current image, with a warning; no further
            forward pass runs, and :attr:`interrupted` is True.

        Raises:
            RuntimeError: under ``torch.inference_mode()``, which disables gradients.
            ValueError: empty or non-increasing thresholds, an objective that cannot read its
                layer (channel out of range, ...), a non-finite objective (lower ``lr``), a
                ``show_step`` that is not a positive int, or ``show=True`` outside IPython.
        """
        check_grad_mode("OptVis")
        steps = _check_thresholds(thresholds)
        cb = callback if isinstance(callback, Callback) else _FunctionCallback(callback)
        if show_step is not None or show:
            cb = _Shown(cb, show_step, steps if show else [])
        images: list[torch.Tensor] = []
        self.history = []
        self.interrupted = False
        # As every netlens method: alone on the model (its lock), in eval mode, one warning.
        warn_if_training(self.fm.model)
        with model_lock(self.fm.model), preserved_state(self.fm.model, buffers=True, eval=True), \
                torch.enable_grad():
            for p in self.fm.model.parameters():
                p.requires_grad_(False)
            start = self.param().detach()
            self._check_image(int(start.shape[1]) if start.dim() == 4 else None)
            self.fm.ensure_traced(start)
            optimizer = self._optimizer()
            cb.on_begin(self)
            step = 0
            self._stalled = False  # set after step 1 if some image got no gradient at all
            keep = self.fm.intercept(self._layers, self._keep) if self._layers else _Null()
            with keep:
                # On a GPU, reading each step's value would wait for that step to finish before
                # the next is queued; without a callback the values are read at the pictures.
                pending: list[torch.Tensor] = []
                lazy = type(cb) is _FunctionCallback and cb.fn is None
                try:
                    with progress_bar(steps[-1], progress, "OptVis") as bar:
                        for step in range(1, steps[-1] + 1):
                            # Redirected ReLUs only for the first steps, and only when step 1
                            # left some image without gradient (rules.Redirected).
                            redirect = self._stalled and step <= 1 + self.redirect_steps
                            with rules.applied(self.fm, {rules.RELUS: rules.Redirected()},
                                               warn_empty=False) if redirect else _Null():
                                pending.append(self._step(optimizer))
                            if step == 1 and self.redirect_steps:
                                self._stalled = self._no_gradient()
                            if not lazy or step in steps or pending[0].device.type == "cpu":
                                self._read(pending)
                            if not lazy:
                                cb.on_step(self, step, self.history[-1])
                            if step in steps:
                                images.append(self._image())
                            bar.update(1)
                except KeyboardInterrupt:
                    self.interrupted = True
                    self._read(pending)
                    if self._warn_interrupt:
                        warnings.warn(f"interrupted at step {step}: returning the images so far "
                                      "and the current one", NetlensWarning,
                                      stacklevel=user_stacklevel())
                    images.append(self._image())
            cb.on_end(self, images)
        return images

    def value(self, image: torch.Tensor | None = None) -> float:
        """The objective at the current image, or at ``image`` (``(B, C, H, W)`` in [0, 1], the
        batch the objective expects): no transforms, one forward pass."""
        with model_lock(self.fm.model), preserved_state(self.fm.model, eval=True), \
                torch.no_grad():
            with self.fm.intercept(self._layers, self._keep) if self._layers else _Null():
                image = self.param() if image is None else image
                return float(self._evaluate(image, image))

    def _check_image(self, channels: int | None) -> None:
        """The param's images must have the model's channels, and the normalization one value
        or one per channel (a 3-value normalization would silently turn a 1-channel image into
        3 channels)."""
        if channels is None:
            return
        check_channels(channels, self.fm.model, "the parameterization's image")
        for name, stat in zip(("mean", "std"), self._stats):
            n = torch.as_tensor(stat).numel()
            if n not in (1, channels):
                raise ValueError(f"the input normalization {name}={stat!r} has {n} values but the "
                                 f"images have {channels} channel(s); pass the model's mean= and "
                                 "std= (one value, or one per channel; mean=0.0, std=1.0 for none)")

    # -- the loop ---------------------------------------------------------------------------
    def _step(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        state = self.generator.get_state()  # every closure call of one step sees one transform
        last: list[torch.Tensor] = []

        def closure() -> torch.Tensor:
            self.generator.set_state(state)
            optimizer.zero_grad(set_to_none=True)
            image = self.param()
            value = self._evaluate(image, self.transforms(image, self.generator))
            (-value).backward()
            last.append(value.detach())
            return -value.detach()

        # torch's stub types a closure as returning a float; optimizers take the loss tensor
        optimizer.step(cast("Callable[[], float]", closure))
        return last[-1]

    def _read(self, pending: list[torch.Tensor]) -> None:
        """Moves the values of the steps not read yet into :attr:`history` (one device sync)."""
        if not pending:
            return
        values = torch.stack(pending).tolist()
        pending.clear()
        for value in values:
            if not math.isfinite(value):
                raise ValueError(f"the objective became {value} at step {len(self.history) + 1}; "
                                 f"lower the learning rate (lr={self.lr}) or add a prior")
            self.history.append(value)

    def _no_gradient(self) -> bool:
        """Whether some image of the batch received no gradient in the last step."""
        flows = None
        for p in self.param.parameters():
            if p.grad is None:
                continue
            g = p.grad.reshape(p.grad.shape[0], -1).ne(0).any(1)
            flows = g if flows is None or flows.shape != g.shape else flows | g
        return flows is None or not bool(flows.all())

    def _evaluate(self, image: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self._acts: dict[str, torch.Tensor] = {}
        self._hw = (x.shape[-2], x.shape[-1])
        output = None
        if self._layers or self.objective.needs_output:
            x = normalize_input(x, *self._stats)
            try:
                output = self.fm.model(x)
            except _StopForward:
                pass
        value = self.objective(Context(image, self._acts, output))
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise TypeError(f"the objective {self.objective!r} must return a scalar tensor")
        return value.reshape(())

    def _keep(self, name: str, output: Any) -> None:
        t = first_tensor(output)
        if t is None:
            raise ValueError(f"layer {name!r} returned no tensor; choose another layer")
        if name != self._stop:
            t = t.clone()  # later in-place ops (ReLU(inplace), out += identity) would change it
        layout = self._layouts.get(name) or self.fm.layout(name)
        self._acts[name] = layout.to_map(t, self._hw)
        for given in self._aliases.get(name, ()):
            self._acts[given] = self._acts[name]
        if name == self._stop:
            raise _StopForward(name)

    def _stop_layer(self) -> str | None:
        if self.objective.needs_output or not self._layers:
            return None
        return max(self._layers, key=lambda n: self.fm.layer_info(n).end_order)

    def _image(self) -> torch.Tensor:
        with torch.no_grad():
            return self.param().detach().clone()

    def _optimizer(self) -> torch.optim.Optimizer:
        spec, params = self._optimizer_spec, [p for p in self.param.parameters()]
        if spec is None or (isinstance(spec, str) and spec == "adam"):
            return torch.optim.Adam(params, lr=self.lr)
        if isinstance(spec, str) and spec == "lbfgs":
            return LBFGS(params, lr=self.lr)
        if isinstance(spec, str):
            raise ValueError(f"optimizer must be 'adam', 'lbfgs', an Optimizer or a function "
                             f"params -> Optimizer, got {spec!r}")
        if isinstance(spec, torch.optim.Optimizer):
            return spec
        if callable(spec):
            opt = spec(params)
            if not isinstance(opt, torch.optim.Optimizer):
                raise TypeError("optimizer= must return a torch.optim.Optimizer")
            return opt
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or a function params -> "
                        f"Optimizer, got {type(spec).__name__}")


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable | None) -> None:
        if fn is not None and not callable(fn):
            raise TypeError(f"callback must be a Callback or a function, got {type(fn).__name__}")
        self.fn = fn

    def on_step(self, vis: OptVis, step: int, value: float) -> None:
        if self.fn is not None:
            self.fn(vis, step, value)


class _Shown(Callback):
    """The user's callback, plus Netlens 1.x's progress: the objective printed every
    ``show_step`` steps, each picture at ``steps`` displayed in IPython."""

    def __init__(self, inner: Callback, show_step: int | None, steps: Sequence[int]) -> None:
        if show_step is not None and (isinstance(show_step, bool) or not isinstance(
                show_step, int) or show_step < 1):
            raise ValueError(f"show_step must be a positive int (print every N steps) or None, "
                             f"got {show_step!r}")
        self.display: Callable[[Any], Any] | None = None
        if steps:
            self.display = _ipython_display()
        self.inner, self.show_step, self.steps = inner, show_step, set(steps)

    def on_begin(self, vis: OptVis) -> None:
        self.inner.on_begin(vis)

    def on_step(self, vis: OptVis, step: int, value: float) -> None:
        self.inner.on_step(vis, step, value)
        if self.show_step is not None and step % self.show_step == 0:
            print(f"step {step}: objective {value:.4g}", flush=True)
        if self.display is not None and step in self.steps:
            from ..image import to_pil

            for image in vis._image():
                self.display(to_pil(image, None, None))

    def on_end(self, vis: OptVis, images: list[torch.Tensor]) -> None:
        self.inner.on_end(vis, images)


def _ipython_display() -> Callable[[Any], Any]:
    """IPython's ``display`` when running under IPython, else a ValueError with the fix."""
    try:
        from IPython import get_ipython
        from IPython.display import display
        running = get_ipython() is not None
    except ImportError:
        running = False
    if not running:
        raise ValueError("show=True displays the pictures in a notebook (IPython); here, plot "
                         "the returned images instead, e.g. nl.plot.grid(images[-1], "
                         "mean=None, std=None)")
    return display


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _check_thresholds(thresholds: Sequence[int]) -> list[int]:
    try:
        steps = list(thresholds)
    except TypeError:
        raise ValueError(f"thresholds must be a sequence of step counts, got {thresholds!r}") \
            from None
    if not steps:
        raise ValueError("thresholds is empty; give at least one step count, e.g. (256,)")
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in steps):
        raise ValueError(f"thresholds must be positive ints, got {thresholds!r}")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"thresholds must be strictly increasing, got {thresholds!r}")
    return [int(s) for s in steps]


def _compose(transforms: Transform | Iterable[Transform]) -> Callable[..., torch.Tensor]:
    if not callable(transforms):
        transforms = compose(list(transforms))  # applied in order, cropped back to the size
    return lambda x, g: transforms(x, generator=g)


def check_grad_mode(what: str) -> None:
    """Raises a ``RuntimeError`` naming ``what`` under ``torch.inference_mode()``, where the
    gradients that every optimization needs do not exist (``torch.no_grad()`` is fine)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"{what} needs gradients, which torch.inference_mode() disables; call "
                           "it outside the inference_mode block (torch.no_grad() is fine)")


def check_channels(channels: int, model: nn.Module, what: str = "the image") -> None:
    """Raises a ``ValueError`` with the fix if an image of ``channels`` channels does not fit
    ``model`` (the ``in_channels`` of its first convolution; any count if it has none)."""
    expected = input_channels(model.model if isinstance(model, FlatModel) else model)
    if expected is None or channels == expected:
        return
    if channels == 1:
        fix = (f"repeat the grayscale channel with x.expand(-1, {expected}, -1, -1) (netlens."
               "image.load gives 3-channel images)")
    elif expected == 1:
        fix = "convert it to one channel, e.g. x.mean(1, keepdim=True)"
    else:
        fix = f"give it {expected} channels"
    raise ValueError(f"{what} has {channels} channel(s) but the model expects {expected} "
                     f"channels; {fix}")


def normalize_input(x: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """``(x - mean) / std`` per channel: the model's input normalization of a [0, 1] image."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    return (x - m) / s


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
