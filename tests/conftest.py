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

# Long subprocesses (the type check, the docs build, the example notebooks) that a test module
# declares as ``BACKGROUND = {name: function(tmp_path_factory, items) -> Popen keywords or None}``
# (``args``, ``cwd``, ``env``; any other key is kept for the test; ``items`` are the module's
# selected tests, None: nothing to start): started as soon as the tests are collected, so that
# they overlap the torch tests, which seldom keep both cores busy. The ``background`` fixture
# waits for one; the tests that use it run last, when their jobs are done or nearly.
_JOBS = pytest.StashKey[dict[str, tuple[subprocess.Popen, Path, dict[str, Any]]]]()
_POPEN = ("args", "cwd", "env")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    waiting = [item for item in items if "background" in getattr(item, "fixturenames", ())]
    if waiting:  # stable: the others keep their order, the waiting ones theirs, at the end
        rest = [item for item in items if "background" not in getattr(item, "fixturenames", ())]
        items[:] = rest + waiting


def pytest_collection_finish(session: pytest.Session) -> None:
    jobs: dict[str, tuple[subprocess.Popen, Path, dict[str, Any]]] = {}
    factory = session.config._tmp_path_factory
    modules: dict[Any, list[pytest.Item]] = {}
    for item in session.items:
        if getattr(item, "module", None) is not None:
            modules.setdefault(item.module, []).append(item)
    for module, items in modules.items():
        if not any("background" in getattr(item, "fixturenames", ()) for item in items):
            continue  # none of the tests that would wait for its jobs is selected
        for name, make in getattr(module, "BACKGROUND", {}).items():
            if name in jobs:
                continue
            spec = make(factory, items)
            if spec is None:
                continue
            log = factory.mktemp("background") / f"{name}.log"
            with open(log, "w") as f:
                job = subprocess.Popen(**{k: spec[k] for k in _POPEN if k in spec},
                                       stdout=f, stderr=subprocess.STDOUT)
            jobs[name] = (job, log, spec)
    session.config.stash[_JOBS] = jobs


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Two cores: while a background job runs, the tests use one thread, so that no OpenMP team
    # waits on a thread the job has taken (two threads then run some tests ten times slower).
    jobs = item.config.stash.get(_JOBS, {})
    busy = any(job.poll() is None for job, _, _ in jobs.values())
    threads = 1 if busy else 2
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


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


@pytest.fixture(scope="session")
def torchvision_double() -> Callable[[str], nn.Module]:
    """``get(name)``: torchvision's ``name`` (random init after ``torch.manual_seed(0)``, float64,
    eval mode), built once for the whole run (a VGG-16 takes 5 s to build) and shared: a test
    that uses it must not change it."""
    built: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in built:
            import torchvision

            torch.manual_seed(0)
            built[name] = getattr(torchvision.models, name)().double().eval()
        return built[name]

    return get


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
