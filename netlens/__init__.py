"""netlens: what a neural network sees and why it decides.

:class:`NetLens` gives every attribution method of :mod:`netlens.attribution` for one model,
for any target of :mod:`netlens.targets` (classes, segmentation masks, detection boxes,
embeddings, a layer's channel, several per image); :mod:`netlens.rules` holds the backward rules;
:class:`OptVis` (:mod:`netlens.optvis`), :class:`NetDreamer` and style transfer
(:mod:`netlens.style_transfer`) generate images from it. All
stand on :class:`FlatModel` (a flat, named, hooked view of any model), the hook context managers
of :mod:`netlens.hooks` and the architecture adapter :mod:`netlens.adapter`. The submodules
``image``, ``plot``, ``data`` and ``zoo`` are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import adapter, attribution, hooks, metrics, optvis, rules, targets
from ._version import __version__
from .adapter import Layout, preserved_state, relu_calls
from .flat_model import FlatModel, UnknownLayerError, layouts
from .generate import NetDreamer
from .hooks import Hook, HookDict, ModuleHook, TensorHook
from .interpret import NetLens
from .optvis import OptVis, objectives
from .style_transfer import StyleTransferModule, StyleTransferObjective, generate_style_transfer

__all__ = [
    "__version__", "NetLens", "OptVis", "NetDreamer", "objectives", "optvis", "FlatModel",
    "StyleTransferModule", "StyleTransferObjective", "generate_style_transfer",
    "UnknownLayerError", "Hook", "HookDict", "ModuleHook",
    "TensorHook", "preserved_state", "relu_calls", "adapter", "attribution", "hooks", "image",
    "plot", "data", "zoo", "metrics", "targets", "rules", "Layout", "layouts", "tiling", "segments",
]

_LAZY = ("image", "plot", "data", "zoo", "tiling", "segments")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'netlens' has no attribute {name!r}")
