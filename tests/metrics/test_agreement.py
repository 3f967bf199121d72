"""Metric reliability (Tomsett et al. 2020): Krippendorff's alpha against the ``krippendorff``
package and Krippendorff's own worked example, Kendall's tau-b against scipy, and the
reliability of a table whose answer is known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import netlens as nl
from netlens.metrics import MetricTable, kendall_tau, krippendorff_alpha, reliability

krippendorff = pytest.importorskip("krippendorff")

LEVELS = ("nominal", "ordinal", "interval", "ratio")


@pytest.mark.parametrize("level", LEVELS)
def test_alpha_equals_the_krippendorff_package_with_missing_ratings(level):
    rng = np.random.default_rng(0)
    for trial in range(20):
        raters, units = rng.integers(2, 7), rng.integers(3, 15)
        data = rng.integers(0, 6, size=(raters, units)).astype(float)
        data[rng.random(data.shape) < 0.25] = np.nan
        if (np.sum(~np.isnan(data), 0) >= 2).sum() < 2 or len(np.unique(data[~np.isnan(data)])) < 2:
            continue
        want = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
        assert krippendorff_alpha(data, level) == pytest.approx(want, abs=1e-12), (trial, data)


def test_alpha_on_krippendorffs_worked_example():
    """Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12
    units, missing values; the paper gives nominal 0.743, ordinal 0.815, interval 0.849 and
    ratio 0.797."""
    n = math.nan
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
            [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]
    for level, paper in zip(LEVELS, (0.743, 0.815, 0.849, 0.797)):
        assert round(krippendorff_alpha(data, level), 3) == paper, level


def test_alpha_limits_and_errors():
    same = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    assert krippendorff_alpha(same) == 1.0
    assert krippendorff_alpha([[1.0, 2.0], [2.0, 1.0]], "interval") < 0  # systematic disagreement
    assert math.isnan(krippendorff_alpha([[1.0, 1.0], [1.0, 1.0]]))  # no variation at all
    assert math.isnan(krippendorff_alpha([[1.0, math.nan], [math.nan, 2.0]]))  # nothing pairable
    with pytest.raises(ValueError, match="level must be"):
        krippendorff_alpha(same, "cardinal")
    with pytest.raises(ValueError, match=r"\(raters, units\) matrix"):
        krippendorff_alpha([1.0, 2.0])
    with pytest.raises(ValueError, match="infinite"):
        krippendorff_alpha([[1.0, math.inf], [1.0, 2.0]])
    with pytest.raises(ValueError, match="level='interval'"):
        krippendorff_alpha([[-1.0, 2.0], [1.0, 2.0]], "ratio")


def test_kendall_tau_b_equals_scipy_with_ties_batched():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (50, 9), generator=g).double()  # many ties
    b = torch.randint(0, 4, (50, 9), generator=g).double()
    got = kendall_tau(a, b)
    for i in range(50):
        want = stats.kendalltau(a[i].numpy(), b[i].numpy(), variant="b").statistic
        assert got[i].item() == pytest.approx(want, abs=1e-12) or (
            math.isnan(want) and math.isnan(got[i].item()))
    assert kendall_tau(a[0], a[0]).item() == pytest.approx(1.0)
    assert kendall_tau(a[0], -a[0]).item() == pytest.approx(-1.0)
    assert math.isnan(kendall_tau(torch.ones(4), torch.arange(4.0)).item())
    with pytest.raises(ValueError, match="same shape"):
        kendall_tau(a, b[:, :3])


def _table(scores: dict[str, dict[str, torch.Tensor]], metrics: list[str]) -> MetricTable:
    records = [{"method": m, **{k: float(v.mean()) for k, v in s.items()}}
               for m, s in scores.items()]
    return MetricTable(records, metrics, per_image=scores)


def test_reliability_of_a_table_known_by_construction():
    """Three methods on 10 images: every image rates A > B > C on relevance mass (higher is
    better) and on deletion (lower is better), by different margins: the images agree
    (alpha 1), the two metrics agree once oriented (tau 1); sparseness ranks them at random per
    image, so its alpha is near 0 and its agreement with the others too."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(10, generator=g)
    mass = {"A": base + 0.6, "B": base + 0.3, "C": base}
    deletion = {"A": 1 - base - 0.6, "B": 1 - base - 0.3, "C": 1 - base}
    noise = torch.rand(3, 200, generator=g)
    scores = {m: {"relevance_mass": mass[m], "deletion": deletion[m]} for m in "ABC"}
    t = _table(scores, ["relevance_mass", "deletion"])
    r = reliability(t)
    assert r.inter_rater == {"relevance_mass": 1.0, "deletion": 1.0}
    assert r.inter_metric["relevance_mass"]["deletion"] == pytest.approx(1.0)
    assert r.inter_method["relevance_mass"] == pytest.approx(1.0)  # same order of images
    assert r.inter_method["deletion"] == pytest.approx(1.0)
    many = {m: {"relevance_mass": torch.rand(200, generator=g) + 0.3 * (2 - i),
                "sparseness": noise[i]} for i, m in enumerate("ABC")}
    r = reliability(_table(many, ["relevance_mass", "sparseness"]))
    assert abs(r.inter_rater["sparseness"]) < 0.1
    assert 0.2 < r.inter_rater["relevance_mass"] < 0.9
    assert abs(r.inter_metric["relevance_mass"]["sparseness"]) < 0.1
    assert abs(r.inter_method["sparseness"]) < 0.2
    md = r.to_markdown()
    assert md.splitlines()[0].startswith("| metric | inter-rater α | inter-method ρ |")
    assert len(md.splitlines()) == 4


def test_reliability_of_compare_on_the_shapes_model():
    """compare() keeps each metric's per-image scores, whose means are the table's; Grad-CAM
    beats the random map on nearly every image, so the images agree on the ranking."""
    model, batch = nl.zoo.shapes_model(), nl.data.make_shapes(12, seed=31)
    table = nl.metrics.compare(model, batch.images, batch.labels, masks=batch.masks,
                               methods=["gradcam", "random"], progress=False,
                               metrics=["relevance_mass", "pointing_game", "sparseness"],
                               generator=torch.Generator().manual_seed(0))
    for record in table:
        for metric in table.metrics:
            values = table.per_image[record["method"]][metric]
            assert values.shape == (12,) and values.dtype == torch.float64
            assert record[metric] == pytest.approx(values.mean().item())
    r = reliability(table)
    assert r.inter_rater["relevance_mass"] > 0.8
    assert r.inter_metric["relevance_mass"]["pointing_game"] > 0.5
    assert r.images == 12 and r.methods == ["gradcam", "random"]
    fig = nl.metrics.plot_reliability(r)
    assert len(fig.axes) == 2  # the heat map and its colour bar


def test_reliability_errors():
    one = {"A": {"deletion": torch.rand(4)}}
    with pytest.raises(ValueError, match="at least two"):
        reliability(_table(one, ["deletion"]))
    two = {"A": {"deletion": torch.rand(1)}, "B": {"deletion": torch.rand(1)}}
    with pytest.raises(ValueError, match="at least two images"):
        reliability(_table(two, ["deletion"]))
    with pytest.raises(ValueError, match="not in the table"):
        reliability(_table(two, ["deletion"]), ["insertion"])
    with pytest.raises(ValueError, match="no per-image scores"):
        reliability(MetricTable([{"method": "A"}, {"method": "B"}], ["deletion"]))
