"""Shared fixtures (the helpers they build on are in ``helpers.py``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from helpers import DEMO_SEED, EveryReluNet, assert_untouched, model_state

torch.set_num_threads(2)


@pytest.fixture
def every_relu_net() -> EveryReluNet:
    torch.manual_seed(0)
    return EveryReluNet().double().eval()


@pytest.fixture
def untouched() -> Callable[[nn.Module], Any]:
    """``with untouched(model): ...`` asserts the block leaves the model as it was."""
    @contextlib.contextmanager
    def check(model: nn.Module):
        before = model_state(model)
        yield
        assert_untouched(model, before)

    return check


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The reduced demo, run once per session (the demo and gallery tests share it): what
    :func:`netlens.gallery.run` does, keeping the stage results for the gallery's figures."""
    from netlens import demo, gallery

    out = tmp_path_factory.mktemp("demo")
    rng = torch.random.get_rng_state()
    ctx = demo.make_context(small=True, seed=DEMO_SEED, progress=False)
    results = demo.compute(ctx)
    manifest = gallery.write(out, results, ctx)
    return {"out": out, "manifest": manifest, "results": results, "ctx": ctx,
            "rng_untouched": torch.equal(rng, torch.random.get_rng_state())}
