"""Shared fixtures (the helpers they build on are in ``helpers.py``)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from helpers import DEMO_SEED, EveryReluNet, assert_untouched, model_state

torch.set_num_threads(2)

# Long single-threaded subprocesses (the type check, the docs build) that a test module declares
# as ``BACKGROUND = {name: function(tmp_path_factory) -> Popen keywords}`` (``args``, ``cwd``,
# ``env``; any other key is kept for the test): started as soon as the tests are collected, so
# that they overlap the torch tests. The ``background`` fixture waits for one.
_JOBS = pytest.StashKey[dict[str, tuple[subprocess.Popen, Path, dict[str, Any]]]]()
_POPEN = ("args", "cwd", "env")


def pytest_collection_finish(session: pytest.Session) -> None:
    jobs: dict[str, tuple[subprocess.Popen, Path, dict[str, Any]]] = {}
    factory = session.config._tmp_path_factory
    for module in {item.module for item in session.items if getattr(item, "module", None)}:
        for name, make in getattr(module, "BACKGROUND", {}).items():
            if name not in jobs:
                spec = make(factory)
                log = factory.mktemp("background") / f"{name}.log"
                with open(log, "w") as f:
                    job = subprocess.Popen(**{k: spec[k] for k in _POPEN if k in spec},
                                           stdout=f, stderr=subprocess.STDOUT)
                jobs[name] = (job, log, spec)
    session.config.stash[_JOBS] = jobs


def pytest_sessionfinish(session: pytest.Session) -> None:
    for job, _, _ in session.config.stash.get(_JOBS, {}).values():
        if job.poll() is None:
            job.kill()


@pytest.fixture(scope="session")
def background(request: pytest.FixtureRequest
               ) -> Callable[[str], tuple[int, str, dict[str, Any]] | None]:
    """``background(name)``: ``(exit status, output, spec)`` of the background job ``name``
    (waiting for it), or None when it was not started (then the test runs it itself)."""
    jobs = request.config.stash.get(_JOBS, {})

    def result(name: str) -> tuple[int, str, dict[str, Any]] | None:
        if name not in jobs:
            return None
        job, log, spec = jobs[name]
        job.wait(timeout=900)
        return job.returncode, log.read_text(encoding="utf-8", errors="replace"), spec

    return result


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
