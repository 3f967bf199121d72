"""netlens.metrics on toy models whose answers are known by hand (CONTRIBUTING.md tests D15,
F18; issue #6).

The workhorse is a bias-free linear model ``f(x)_c = <W_c, x>``: its true attribution for class
``c`` is ``W_c * x``, so the best deletion order, the pointing-game answer and the curves can be
written out. Everything runs in float64.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import netlens as nl
from netlens import metrics as M

H = W = 6


def linear_model(weight: torch.Tensor) -> nn.Module:
    """``(B, 1, H, W) -> (B, classes)``: ``out[:, c] = sum(weight[c] * x)``."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight[0].numel(), weight.shape[0], bias=False))
    with torch.no_grad():
        model[1].weight.copy_(weight.flatten(1))
    return model.double().eval()


@pytest.fixture
def toy():
    """A linear model whose class-0 weights live on a 2x2 'object' (and are 0 elsewhere), and a
    batch of positive images: the true map of class 0 is inside the object."""
    g = torch.Generator().manual_seed(0)
    weight = torch.zeros(2, 1, H, W, dtype=torch.float64)
    masks = torch.zeros(3, 1, H, W, dtype=torch.bool)
    masks[:, :, 1:3, 2:4] = True
    weight[0, :, 1:3, 2:4] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    weight[1] = torch.rand(1, H, W, generator=g, dtype=torch.float64) * 0.1
    x = 0.5 + torch.rand(3, 1, H, W, generator=g, dtype=torch.float64)
    model = linear_model(weight)
    true = weight[0] * x
    return model, x, true, masks


def hand_deletion(a: torch.Tensor, order: torch.Tensor, steps: int) -> list[float]:
    """Logit of the linear model after removing (zero baseline) the first k/steps of ``order``."""
    n = a.numel()
    counts = [round(k * n / steps) for k in range(steps + 1)]
    return [float(a.flatten()[order[c:]].sum()) for c in counts]


# -- faithfulness ---------------------------------------------------------------------------

def test_deletion_and_insertion_by_hand():
    model = linear_model(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64))
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    true = x * model[1].weight.view(1, 1, 2, 2)
    d = M.deletion(model, x, true, 0, steps=4, score="logit", progress=False)
    assert d.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert d.scores[0].tolist() == [10.0, 6.0, 3.0, 1.0, 0.0]
    assert d.auc.item() == pytest.approx(3.75)
    i = M.insertion(model, x, true, 0, steps=4, score="logit", baseline=0.0, progress=False)
    assert i.scores[0].tolist() == [0.0, 4.0, 7.0, 9.0, 10.0]
    assert i.auc.item() == pytest.approx(6.25)
    flip = M.pixel_flipping(model, x, true, 0, steps=4, baseline=0.0, progress=False)
    assert flip.aopc.item() == pytest.approx((0 + 4 + 7 + 9 + 10) / 5)


def test_the_true_map_has_the_best_curves(toy):
    model, x, true, _ = toy
    g = torch.Generator().manual_seed(1)
    random = torch.rand(x.shape, generator=g, dtype=x.dtype)
    kw = dict(steps=9, score="logit", baseline=0.0, progress=False)
    d_true, d_rand, d_worst = (M.deletion(model, x, a, 0, **kw).auc for a in (true, random, -true))
    # removing the largest contributions first leaves the smallest remainder at every step
    assert (d_true < d_rand).all() and (d_rand < d_worst).all()
    for b in range(x.shape[0]):
        order = true[b].flatten().argsort(descending=True, stable=True)
        curve = M.deletion(model, x[b:b + 1], true[b:b + 1], 0, **kw).scores[0]
        assert torch.allclose(curve, torch.tensor(hand_deletion(true[b], order, 9),
                                                  dtype=x.dtype))
    i_true = M.insertion(model, x, true, 0, **kw).auc
    i_rand = M.insertion(model, x, random, 0, **kw).auc
    assert (i_true > i_rand).all()
    softmax = M.deletion(model, x, true, 0, steps=9, progress=False)
    assert ((softmax.scores >= 0) & (softmax.scores <= 1)).all()


def test_curves_do_not_depend_on_the_chunking(toy):
    model, x, true, _ = toy
    a = M.deletion(model, x, true, 0, steps=5, batch_size=1, progress=False)
    b = M.deletion(model, x, true, 0, steps=5, progress=False)
    assert torch.allclose(a.scores, b.scores, rtol=0, atol=1e-12)
    r1 = M.road(model, x, true, 0, batch_size=7, generator=torch.Generator().manual_seed(3),
                progress=False)
    r2 = M.road(model, x, true, 0, generator=torch.Generator().manual_seed(3), progress=False)
    assert torch.allclose(r1.scores, r2.scores, atol=1e-10)
    assert r1.fractions[0] == 0 and r1.scores.shape == (3, 10)
    with torch.no_grad():
        assert torch.allclose(r1.scores[:, 0], model(x).softmax(1)[:, 0])


def _imputation_oracle(x: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Dense solve of ROAD's equations: each removed pixel = the 2:1 weighted mean of its
    in-image neighbours (direct : diagonal)."""
    h, w = x.shape
    idx = [(i, j) for i in range(h) for j in range(w) if removed[i, j]]
    pos = {p: k for k, p in enumerate(idx)}
    a = torch.zeros(len(idx), len(idx), dtype=torch.float64)
    rhs = torch.zeros(len(idx), dtype=torch.float64)
    for (i, j), k in pos.items():
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ni, nj = i + di, j + dj
                if (di, dj) == (0, 0) or not (0 <= ni < h and 0 <= nj < w):
                    continue
                weight = 1.0 if di and dj else 2.0
                a[k, k] += weight
                if removed[ni, nj]:
                    a[k, pos[(ni, nj)]] -= weight
                else:
                    rhs[k] += weight * x[ni, nj]
    out = x.clone()
    values = torch.linalg.solve(a, rhs)
    for (i, j), k in pos.items():
        out[i, j] = values[k]
    return out


def test_noisy_linear_imputation_solves_the_road_equations():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 7, 9, generator=g, dtype=torch.float64)
    removed = torch.rand(2, 1, 7, 9, generator=g) < 0.4
    out = M.noisy_linear_imputation(x, removed, noise=0.0, tol=1e-12)
    for b in range(2):
        for c in range(2):
            assert torch.allclose(out[b, c], _imputation_oracle(x[b, c], removed[b, 0]),
                                  atol=1e-8)
    assert torch.equal(out[~removed.expand_as(x)], x[~removed.expand_as(x)])
    # a linear ramp is reproduced exactly at interior holes
    ramp = (0.3 * torch.arange(7.0)[:, None] + 0.1 * torch.arange(9.0)).double()[None, None]
    hole = torch.zeros(1, 1, 7, 9, dtype=torch.bool)
    hole[0, 0, 2:5, 3:7] = True
    assert torch.allclose(M.noisy_linear_imputation(ramp, hole, noise=0.0, tol=1e-12), ramp)
    noisy = M.noisy_linear_imputation(ramp, hole, noise=0.1,
                                      generator=torch.Generator().manual_seed(0))
    assert 0.05 < (noisy - ramp)[hole].std() < 0.2
    everything = torch.ones(1, 1, 7, 9, dtype=torch.bool)
    filled = M.noisy_linear_imputation(x[:1, :1], everything, noise=0.0)
    assert torch.allclose(filled, x[:1, :1].mean().expand_as(filled), atol=1e-6)


def test_average_drop_and_increase_in_confidence_by_hand(toy):
    model, x, true, _ = toy
    m = true.clamp(min=0)
    m = m / m.flatten(1).amax(1).view(-1, 1, 1, 1)
    with torch.no_grad():
        y, o = model(x).softmax(1)[:, 0], model(x * m).softmax(1)[:, 0]
    drop = M.average_drop(model, x, true, 0)
    assert torch.allclose(drop, (y - o).clamp(min=0) / y)
    assert torch.equal(M.increase_in_confidence(model, x, true, 0), (o > y).double())
    ones = torch.ones_like(x)
    assert M.average_drop(model, x, ones, 0).abs().max() < 1e-12
    assert M.increase_in_confidence(model, x, ones, 0).sum() == 0


# -- localization ---------------------------------------------------------------------------

def test_localization_of_the_true_map_and_its_complement(toy):
    model, x, true, masks = toy
    for metric in (M.pointing_game, M.relevance_mass, M.relevance_rank):
        assert metric(true, masks).tolist() == [1.0] * 3, metric.__name__
        outside = (~masks).double() * (1 + 1e-3 * x)  # tiny noise outside, zero inside
        assert metric(outside, masks).tolist() == [0.0] * 3, metric.__name__
    noise = torch.rand(512, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    blobs = torch.zeros(512, 1, 8, 8, dtype=torch.bool)
    blobs[:, :, 2:4, 2:6] = True  # area 8 / 64
    assert M.relevance_mass(noise, blobs).mean() == pytest.approx(0.125, abs=0.01)
    assert M.relevance_rank(noise, blobs).mean() == pytest.approx(0.125, abs=0.02)
    assert M.pointing_game(noise, blobs).mean() == pytest.approx(0.125, abs=0.04)


def test_pointing_game_ties_first_or_share():
    """``ties="first"``: the first maximum in row-major order decides (Quantus, TorchRay);
    ``"share"``: the share of tied maxima in the object, which is the hit rate of a random
    tie-break (measured here by breaking the ties with noise far below the tie); on a map with
    one maximum both rules agree."""
    flat = torch.zeros(512, 1, 8, 8)
    flat[:, :, 1:5, 1:5] = 1.0  # a 16-pixel plateau
    obj = torch.zeros(512, 1, 8, 8, dtype=torch.bool)
    obj[:, :, 3:6, 3:6] = True  # covers 4 of the plateau's pixels, not its top-left one
    assert M.pointing_game(flat, obj).tolist() == [0.0] * 512
    assert M.pointing_game(flat, obj, ties="share").tolist() == [4 / 16] * 512
    jitter = flat + 1e-3 * torch.rand(flat.shape, generator=torch.Generator().manual_seed(0))
    assert M.pointing_game(jitter, obj).mean().item() == pytest.approx(0.25, abs=0.06)
    assert torch.equal(M.pointing_game(jitter, obj, ties="share"), M.pointing_game(jitter, obj))
    assert M.pointing_game(flat, obj, ties="share", tolerance=1).tolist() == [9 / 16] * 512
    with pytest.raises(ValueError, match="ties must be 'first'"):
        M.pointing_game(flat, obj, ties="random")


def test_localization_values_by_hand():
    m = torch.tensor([[[[4.0, -1.0, 0.0], [1.0, 3.0, 2.0]]]])
    mask = torch.tensor([[[[False, True, False], [False, True, True]]]])
    assert M.pointing_game(m, mask).item() == 0.0
    assert M.pointing_game(m, mask, tolerance=1).item() == 1.0  # (0, 0) touches (0, 1)
    assert M.relevance_mass(m, mask).item() == pytest.approx(5 / 10)
    assert M.relevance_rank(m, mask).item() == pytest.approx(2 / 3)  # top 3: 4, 3, 2
    assert M.relevance_mass(-m.abs(), mask).item() == 0.0
    two_channels = torch.stack([m[:, 0], -m[:, 0]], 1)  # "auto": |attr| summed: 2|m|
    assert M.relevance_mass(two_channels, mask).item() == pytest.approx(12 / 22)
    assert M.relevance_mass(two_channels, mask, reduce="sum").item() == 0.0
    box = M.boxes_to_masks(torch.tensor([[1, 0, 3, 2]]), (2, 3))
    assert torch.equal(box, torch.tensor([[[[False, True, True], [False, True, True]]]]))


# -- robustness, complexity, similarity -----------------------------------------------------

def test_sparseness_by_hand():
    maps = torch.tensor([[0.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0],
                         [1.0, 2.0, 3.0, 4.0]]).view(4, 1, 2, 2)
    gini = M.sparseness(maps)
    assert gini.tolist() == pytest.approx([0.75, 0.0, 0.0, 0.25])
    assert M.sparseness(-maps).tolist() == pytest.approx(gini.tolist())


def test_max_sensitivity(toy):
    model, x, _, _ = toy
    g = torch.Generator().manual_seed(0)
    assert M.max_sensitivity(model, x, 0, "saliency", n=3, generator=g).abs().max() < 1e-12
    assert M.max_sensitivity(model, x, 0, "centre", n=3, generator=g).abs().max() == 0
    torch.manual_seed(0)
    tanh = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Flatten(),
                         nn.Linear(4 * (H - 2) * (W - 2), 2)).double()
    small = M.max_sensitivity(tanh, x, 0, "saliency", n=4, radius=0.01, generator=g)
    large = M.max_sensitivity(tanh, x, 0, "saliency", n=4, radius=0.2, generator=g)
    assert (small > 0).all() and (large > small).all()


def test_spearman_and_ssim_on_known_pairs():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(64, 1, 16, 16, generator=g, dtype=torch.float64)
    b = torch.rand(64, 1, 16, 16, generator=g, dtype=torch.float64)
    assert torch.allclose(M.spearman(a, a), torch.ones(64, dtype=torch.float64))
    assert torch.allclose(M.spearman(a, 3 * a + 1), torch.ones(64, dtype=torch.float64))
    assert torch.allclose(M.spearman(a, -a), -torch.ones(64, dtype=torch.float64))
    assert M.spearman(a, b).abs().mean() < 0.08
    assert torch.allclose(M.ssim(a, a), torch.ones(64, dtype=torch.float64))
    assert M.ssim(a, b).mean().abs() < 0.1
    # ties get their average rank: a map of zeros with one bump matches another only there
    ties = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    x1, x2 = ties.clone(), ties.clone()
    x1[0, 0, 0, 0], x2[0, 0, 3, 3] = 1.0, 1.0
    assert M.spearman(x1, x2).item() == pytest.approx(-1 / 15)
    assert M.spearman(ties, ties).item() == 1.0 and M.spearman(ties, x1).item() == 0.0


# -- compare --------------------------------------------------------------------------------

def test_compare_table(toy, untouched):
    model, x, true, masks = toy
    before = x.clone()

    def true_map(model, x, target):
        return model[1].weight[0].view(1, 1, H, W) * x

    with untouched(model):
        table = M.compare(model, x, 0, methods=[true_map, "random", "centre"],
                          metrics=["deletion", "insertion", "pointing_game", "relevance_mass",
                                   "relevance_rank", "sparseness", "average_drop"],
                          masks=masks, metric_options={"deletion": {"steps": 6}},
                          generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(x, before)
    assert [r["method"] for r in table] == ["true_map", "random", "centre"]
    best, random, centre = table
    assert best["pointing_game"] == best["relevance_mass"] == best["relevance_rank"] == 1.0
    assert best["deletion"] < random["deletion"] and best["insertion"] > random["insertion"]
    assert best["sparseness"] > random["sparseness"]
    assert all(r["seconds"] >= 0 for r in table)
    # no memory figure on a CPU (resident memory hardly moves when freed pages are reused):
    # nan in the records, no column in the table
    assert all(math.isnan(r["peak_mb"]) for r in table) and "peak_mb" not in table.columns
    assert "peak_mb" not in str(table)
    assert len(table.curves["true_map"]["deletion"][0]) == 7
    text = str(table)
    assert text == table.to_markdown() and len(text.splitlines()) == 2 + 3
    assert text.splitlines()[0].startswith("| method | deletion ↓ | insertion ↑ |")
    fig = M.plot_curves(table)
    assert isinstance(fig, Figure) and len(fig.axes) == 2


NEWER = ["continuity", "consistency", "relative_input_stability", "relative_output_stability",
         "relative_representation_stability", "random_logit", "smooth_mprt", "efficient_mprt"]


def test_compare_offers_the_robustness_and_randomization_metrics(untouched):
    """Each of them reached through compare() gives the per-image values of its own function
    called with the same options and draws, on the shapes model."""
    model, batch = nl.zoo.shapes_model(), nl.data.make_shapes(3, seed=5, size=32)
    x, y = batch.images, batch.labels

    def small(metric: str) -> dict:
        opts = {"continuity": {"steps": 4}, "relative_input_stability": {"n": 2},
                "relative_output_stability": {"n": 2},
                "relative_representation_stability": {"n": 2},
                "smooth_mprt": {"n": 2, "layers": ["fc", "layer3.0.conv2"]},
                "efficient_mprt": {"layers": ["fc"]}}.get(metric, {})
        if metric != "consistency":
            opts["generator"] = torch.Generator().manual_seed(3)
        return opts

    with untouched(model):
        table = M.compare(model, x, y, methods=["saliency"], metrics=NEWER, progress=False,
                          metric_options={m: small(m) for m in NEWER})
    assert set(NEWER) <= set(M.METRICS) and table.metrics == NEWER
    got = table.per_image["saliency"]
    for metric in NEWER:
        if metric == "consistency":
            alone = M.consistency(model, x, nl.attribution.saliency(model, x, y), y)
        else:
            alone = getattr(M, metric)(model, x, y, "saliency", progress=False, **small(metric))
        assert got[metric].shape == (3,), metric
        torch.testing.assert_close(got[metric], alone.double().reshape(-1), equal_nan=True,
                                   msg=metric)


def test_compare_without_masks_and_dataframe(toy, monkeypatch):
    model, x, _, masks = toy
    table = M.compare(model, x, 0, methods=["saliency"], progress=False)
    assert table.metrics == ["deletion", "insertion"]
    with pytest.raises(ValueError, match="masks="):
        M.compare(model, x, 0, methods=["saliency"], metrics=["pointing_game"])
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        table.to_dataframe()


def test_compare_to_dataframe(toy):
    pd = pytest.importorskip("pandas")
    model, x, _, _ = toy
    table = M.compare(model, x, 0, methods=["saliency", "random"], metrics=["sparseness"],
                      progress=False)
    frame = table.to_dataframe()
    assert isinstance(frame, pd.DataFrame) and list(frame.index) == ["saliency", "random"]


# -- bad input ------------------------------------------------------------------------------

def test_bad_input_raises_clear_errors(toy):
    model, x, true, masks = toy
    with pytest.raises(ValueError, match="masks of shape"):
        M.pointing_game(true, masks[:, :, :4])
    with pytest.raises(ValueError, match="masks of shape"):
        M.compare(model, x, 0, methods=["random"], metrics=["relevance_mass"],
                  masks=masks[:2])
    with pytest.raises(ValueError, match="empty"):
        M.relevance_mass(true, torch.zeros_like(masks))
    with pytest.raises(ValueError, match="steps"):
        M.deletion(model, x, true, 0, steps=0)
    with pytest.raises(ValueError, match="at least 2 points"):
        M.auc(torch.tensor([0.0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="does not match the input"):
        M.deletion(model, x, true[..., :4], 0)
    with pytest.raises(ValueError, match="does not match the input"):
        M.insertion(model, x, true[:2], 0)
    with pytest.raises(ValueError, match="does not match the input"):
        M.compare(model, x, 0, methods=[lambda m, x, t: x[..., :3]], metrics=["sparseness"])
    with pytest.raises(ValueError, match="unknown metrics"):
        M.compare(model, x, 0, methods=["saliency"], metrics=["accuracy"])
    with pytest.raises(ValueError, match="unknown attribution method"):
        M.compare(model, x, 0, methods=["gradcam++"])
    with pytest.raises(ValueError, match="fractions"):
        M.road(model, x, true, 0, fractions=(0.5, 0.2))
    with pytest.raises(ValueError, match="NaN"):
        M.sparseness(torch.full_like(true, float("nan")))
    with pytest.raises(ValueError, match="score"):
        M.deletion(model, x, true, 0, score="probability")


def test_metrics_is_exported():
    assert "metrics" in nl.__all__ and nl.metrics is M
