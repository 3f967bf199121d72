"""Evaluation of explanations: can this map be trusted?

- Faithfulness (:mod:`~netlens.metrics.faithfulness`): :func:`deletion` and :func:`insertion`
  curves (RISE), :func:`pixel_flipping` (AOPC), :func:`road` with
  :func:`noisy_linear_imputation`, :func:`average_drop` and :func:`increase_in_confidence`.
- Localization against a known object mask (:mod:`~netlens.metrics.localization`):
  :func:`pointing_game`, :func:`relevance_mass`, :func:`relevance_rank`; :func:`boxes_to_masks`.
- Robustness and complexity (:mod:`~netlens.metrics.robustness`): :func:`max_sensitivity`,
  :func:`sparseness` (Gini).
- Sanity checks (:mod:`~netlens.metrics.sanity`): :func:`model_randomization` (Adebayo et al.
  2018, cascading or independent) and :func:`plot_randomization`.
- :func:`compare`: methods x metrics in one :class:`MetricTable`, with runtime, peak memory and
  the curves for :func:`plot_curves`.

Every metric takes plain tensors, works on any device, chunks its perturbed passes under a
memory budget and leaves the caller's model and inputs as they were. Attributions are read as one
map per image through :func:`saliency_map`. :func:`random_map` and :func:`centre_map` are the
reference maps an explanation must beat.

Example:
    >>> import netlens as nl
    >>> model, batch = nl.zoo.shapes_model(), nl.data.make_shapes(8, seed=7)
    >>> table = nl.metrics.compare(model, batch.images, batch.labels, masks=batch.masks,
    ...                            methods=["gradcam", "random"], progress=False)
    >>> [r["method"] for r in table]
    ['gradcam', 'random']
"""

from __future__ import annotations

from ._maps import (
    REFERENCE_MAPS,
    boxes_to_masks,
    centre_map,
    normalized,
    random_map,
    saliency_map,
    spearman,
    ssim,
)
from .compare import DEFAULT_METHODS, DEFAULT_METRICS, METRICS, MetricTable, compare, plot_curves
from .faithfulness import (
    Curve,
    auc,
    average_drop,
    confidence_scores,
    deletion,
    increase_in_confidence,
    insertion,
    noisy_linear_imputation,
    pixel_flipping,
    road,
)
from .localization import pointing_game, relevance_mass, relevance_rank
from .robustness import max_sensitivity, sparseness
from .sanity import Randomization, model_randomization, plot_randomization, randomizable_layers

__all__ = [
    "compare", "MetricTable", "plot_curves", "METRICS", "DEFAULT_METHODS", "DEFAULT_METRICS",
    "Curve", "auc", "deletion", "insertion", "pixel_flipping", "road", "noisy_linear_imputation",
    "average_drop", "increase_in_confidence", "confidence_scores",
    "pointing_game", "relevance_mass", "relevance_rank", "boxes_to_masks",
    "max_sensitivity", "sparseness",
    "model_randomization", "Randomization", "randomizable_layers", "plot_randomization",
    "saliency_map", "normalized", "spearman", "ssim", "random_map", "centre_map",
    "REFERENCE_MAPS",
]
