"""Optimizers for image optimization that are safe with one evaluation per step.

:class:`LBFGS` does one loss-and-gradient evaluation per step (so a step costs one forward and
backward pass, and ``OptVis`` counts steps as passes), with a trust region instead of a line
search, and an optional box (e.g. pixels in [0, 1]) kept by projection. :class:`ProjectedAdam`
is Adam followed by the same projection. ``OptVis(..., optimizer="lbfgs")`` uses the first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["LBFGS", "ProjectedAdam"]


class ProjectedAdam(torch.optim.Adam):
    """Adam, then the parameters projected into ``box``."""

    def __init__(self, params: Any, lr: float = 1e-3,
                 box: tuple[float, float] | None = None) -> None:
        super().__init__(params, lr=lr)
        self.box = box

    def step(self, closure: Any = None) -> Any:
        loss = super().step(closure)
        if self.box is not None:
            with torch.no_grad():
                for q in self.param_groups[0]["params"]:
                    q.clamp_(*self.box)
        return loss


class LBFGS(torch.optim.Optimizer):
    """L-BFGS with one loss and gradient evaluation per step (Nocedal and Wright, "Numerical
    Optimization", algorithm 7.4), safe without a line search by a trust region on the largest
    change of a parameter. It starts at ``0.05 * lr`` and doubles after each step that lowered
    the loss; a step that raised it is taken back and retried half as long (8 times at most,
    then the memory restarts). With ``box``, steps are projected into it and the pairs use the
    step actually taken (``torch.optim.LBFGS`` on a straight-through clamp sent pixels to +-900
    and the loss up 1000-fold). Scale-free: a pair enters the memory when ``s.y > 1e-10 |s||y|``
    (torch's bounds are absolute, and the losses of a random-init model tiny)."""

    first_step, growth, max_halvings = 0.05, 2.0, 8

    def __init__(self, params: Any, lr: float = 1.0, history_size: int = 50,
                 box: tuple[float, float] | None = None) -> None:
        super().__init__(params, {"lr": lr})
        self.history_size, self.box = history_size, box
        self._pairs: list[tuple[Tensor, Tensor, Tensor]] = []  # (s, y, 1 / s.y)
        self._last: tuple[Tensor, Tensor, float, Tensor] | None = None  # x, g, f, direction
        self._t, self._halvings, self._radius = 0.0, 0, self.first_step * lr

    @torch.no_grad()
    def step(self, closure: Any) -> Any:  # type: ignore[override]
        with torch.enable_grad():
            loss = closure()
        f, params = float(loss), [q for group in self.param_groups for q in group["params"]]
        x = torch.cat([q.detach().reshape(-1) for q in params])
        g = torch.cat([(q.grad if q.grad is not None else torch.zeros_like(q)).reshape(-1)
                       for q in params])
        if self.box is not None:  # pixels held at a bound by the gradient stay out of the step
            lo, hi = self.box
            g = g.masked_fill(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)), 0.0)
        last = self._last
        if last is not None and not f <= last[2]:
            self._halvings += 1
            self._t /= 2
            self._radius = self._t * float(last[3].abs().max())
            if self._halvings <= self.max_halvings:
                self._move(params, last[0] + self._t * last[3])
                return loss
            x, g, f = last[0], last[1], last[2]  # give up this direction
            self._pairs.clear()
        elif last is not None:
            s, y = x - last[0], g - last[1]
            sy = s.dot(y)
            if float(sy - 1e-10 * s.norm() * y.norm()) > 0:
                self._pairs = self._pairs[-self.history_size + 1:] + [(s, y, 1.0 / sy)]
            self._radius = max(self._radius, self.growth * float(s.abs().max()))
        d = self._direction(g)
        d_max = float(d.abs().max())
        t = self.param_groups[0]["lr"]
        if d_max * t > self._radius:
            t = self._radius / d_max
        self._last, self._t, self._halvings = (x, g, f, d), t, 0
        self._move(params, x + t * d)
        return loss

    def _direction(self, g: Tensor) -> Tensor:
        """``-H g`` by the two-loop recursion (no host sync); without pairs ``-g / max |g|``."""
        q, alphas = -g, []
        for s, y, rho in reversed(self._pairs):
            alphas.append(rho * s.dot(q))
            q.sub_(y * alphas[-1])
        if self._pairs:  # the initial inverse Hessian: s.y / y.y of the newest pair
            s, y, rho = self._pairs[-1]
            q.div_(rho * y.dot(y))
        else:  # the trust region sets the length: scale-free
            q.div_(g.abs().max().clamp_min(torch.finfo(g.dtype).tiny))
        for (s, y, rho), a in zip(self._pairs, reversed(alphas)):
            q.add_(s * (a - rho * y.dot(q)))
        return q

    def _move(self, params: list[Tensor], x: Tensor) -> None:
        i = 0
        for q in params:
            q.copy_(x[i:i + q.numel()].view_as(q))
            if self.box is not None:
                q.clamp_(*self.box)
            i += q.numel()

    def undo_untried_step(self, f: float) -> bool:
        """After the run: if the last step, never evaluated, raised the loss to ``f``, go back
        to the best point evaluated."""
        if self._last is None or f <= self._last[2]:
            return False
        with torch.no_grad():
            self._move([q for group in self.param_groups for q in group["params"]],
                       self._last[0])
        return True
