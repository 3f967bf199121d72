"""Evaluation of explanations: can this map be trusted?

- Faithfulness (:mod:`~netlens.metrics.faithfulness`): :func:`deletion` and :func:`insertion`
  curves (RISE), :func:`pixel_flipping` (AOPC), :func:`road` with
  :func:`noisy_linear_imputation`, :func:`average_drop` and :func:`increase_in_confidence`.
- Localization against a known object mask (:mod:`~netlens.metrics.localization`):
  :func:`pointing_game`, :func:`relevance_mass`, :func:`relevance_rank`; :func:`boxes_to_masks`.
- More faithfulness (:mod:`~netlens.metrics.faithfulness_more`, equal to Quantus where Quantus
  is right): :func:`faithfulness_correlation`, :func:`faithfulness_estimate`,
  :func:`monotonicity`, :func:`monotonicity_correlation`, :func:`sensitivity_n`,
  :func:`region_perturbation`, :func:`selectivity`, :func:`irof`, :func:`infidelity` (Captum's),
  :func:`sufficiency`.
- Localization also: :func:`top_k_intersection`, :func:`attribution_localisation`,
  :func:`localisation_auc`, :func:`focus` (on a :func:`mosaic` of images).
- Robustness (:mod:`~netlens.metrics.robustness`): :func:`max_sensitivity`,
  :func:`avg_sensitivity`, :func:`local_lipschitz_estimate`, :func:`continuity`,
  :func:`consistency`, :func:`relative_input_stability`, :func:`relative_output_stability`,
  :func:`relative_representation_stability`; complexity: :func:`sparseness`
  (Gini), :func:`complexity` (entropy), :func:`effective_complexity`
  (:mod:`~netlens.metrics.complexity`).
- Axiomatic (:mod:`~netlens.metrics.axiomatic`): :func:`completeness`,
  :func:`non_sensitivity`, :func:`input_invariance` (with :func:`shifted_model`).
- Sanity checks (:mod:`~netlens.metrics.sanity`): :func:`model_randomization` (Adebayo et al.
  2018, cascading or independent) and :func:`plot_randomization`; in
  :mod:`~netlens.metrics.randomization`: :func:`random_logit` (Sixt et al. 2020),
  :func:`smooth_mprt` and :func:`efficient_mprt` (Hedström et al. 2023), and Adebayo's
  :func:`data_randomization` against a model trained on random labels
  (:func:`netlens.zoo.shapes_model_random_labels`).
- :func:`compare`: methods x metrics in one :class:`MetricTable`, with runtime, peak memory and
  the curves for :func:`plot_curves`; :func:`reliability` (:mod:`~netlens.metrics.agreement`):
  how far its ranking of methods can be trusted (Krippendorff's alpha of the images' rankings,
  the metrics' Kendall agreement; :func:`plot_reliability`).

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
from .agreement import Reliability, kendall_tau, krippendorff_alpha, plot_reliability, reliability
from .axiomatic import completeness, input_invariance, non_sensitivity, shifted_model
from .compare import DEFAULT_METHODS, DEFAULT_METRICS, METRICS, MetricTable, compare, plot_curves
from .complexity import complexity, effective_complexity
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
from .faithfulness_more import (
    faithfulness_correlation,
    faithfulness_estimate,
    infidelity,
    irof,
    monotonicity,
    monotonicity_correlation,
    pearson,
    region_perturbation,
    selectivity,
    sensitivity_n,
    sufficiency,
)
from .localization import (
    attribution_localisation,
    focus,
    mosaic,
    pointing_game,
    relevance_mass,
    relevance_rank,
    top_k_intersection,
)
from .localization import auc as localisation_auc
from .randomization import (
    DataRandomization,
    data_randomization,
    efficient_mprt,
    random_logit,
    smooth_mprt,
)
from .robustness import (
    avg_sensitivity,
    consistency,
    continuity,
    local_lipschitz_estimate,
    max_sensitivity,
    relative_input_stability,
    relative_output_stability,
    relative_representation_stability,
    sparseness,
)
from .sanity import Randomization, model_randomization, plot_randomization, randomizable_layers

__all__ = [
    "compare", "MetricTable", "plot_curves", "METRICS", "DEFAULT_METHODS", "DEFAULT_METRICS",
    "Curve", "auc", "deletion", "insertion", "pixel_flipping", "road", "noisy_linear_imputation",
    "average_drop", "increase_in_confidence", "confidence_scores",
    "faithfulness_correlation", "faithfulness_estimate", "monotonicity",
    "monotonicity_correlation", "sensitivity_n", "region_perturbation", "selectivity", "irof",
    "infidelity", "sufficiency", "pearson",
    "pointing_game", "relevance_mass", "relevance_rank", "boxes_to_masks",
    "top_k_intersection", "attribution_localisation", "localisation_auc", "focus", "mosaic",
    "max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate", "sparseness",
    "continuity", "consistency", "relative_input_stability", "relative_output_stability",
    "relative_representation_stability",
    "complexity", "effective_complexity",
    "completeness", "non_sensitivity", "input_invariance", "shifted_model",
    "model_randomization", "Randomization", "randomizable_layers", "plot_randomization",
    "random_logit", "smooth_mprt", "efficient_mprt", "data_randomization", "DataRandomization",
    "reliability", "Reliability", "krippendorff_alpha", "kendall_tau", "plot_reliability",
    "saliency_map", "normalized", "spearman", "ssim", "random_map", "centre_map",
    "REFERENCE_MAPS",
]
