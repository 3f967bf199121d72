"""GradientShap: equal to Captum's given the same draws (Captum's numpy and torch draws are
replaced by ours, in the documented order), equal in expectation otherwise (tolerance from the
measured standard error), an autograd oracle at the drawn points, and the engineering contract
(chunking, determinism, no global RNG, no_grad, K targets, model untouched)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netlens as nl
from netlens.attribution.shap import gradient_shap

from helpers import assert_untouched, model_state, small_cnn

F64 = torch.float64


def _rand(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def our_draws(seed: int, n: int, batch: int, count: int, shape, stdev: float):
    """The documented draws of ``generator=torch.Generator().manual_seed(seed)``: per sample,
    the baseline index of each image, alpha, and the noise."""
    g = torch.Generator().manual_seed(seed)
    which, alpha, noise = [], [], []
    for _ in range(n):
        which.append(torch.randint(count, (batch,), generator=g))
        alpha.append(torch.rand(batch, generator=g, dtype=F64))
        noise.append(stdev * torch.randn(shape, generator=g, dtype=F64) if stdev > 0
                     else torch.zeros(shape, dtype=F64))
    return torch.stack(which), torch.stack(alpha), torch.stack(noise)  # (n, B, ...)


@pytest.mark.parametrize("stdev", [0.0, 0.05])
def test_equals_captum_given_the_same_draws(stdev, monkeypatch):
    captum = pytest.importorskip("captum.attr")
    model, x, bank = small_cnn(), _rand(3, 3, 8, 8), _rand(4, 3, 8, 8, seed=2)
    n, target = 6, [0, 1, 3]
    which, alpha, noise = our_draws(7, n, 3, 4, x.shape, stdev)
    # Captum draws for row i * n + k (image i, sample k) of its expanded batch
    monkeypatch.setattr(np.random, "choice", lambda *a, **k: which.T.reshape(-1).numpy())
    monkeypatch.setattr(np.random, "uniform", lambda *a, **k: alpha.T.reshape(-1).numpy())
    monkeypatch.setattr(torch, "normal",
                        lambda mean, std: noise.transpose(0, 1).reshape(-1, *x.shape[1:]))
    theirs = captum.GradientShap(model).attribute(x, bank, n_samples=n, stdevs=stdev,
                                                  target=target).detach()
    monkeypatch.undo()
    ours = gradient_shap(model, x, target, baselines=bank, n=n, stdev=stdev,
                         generator=torch.Generator().manual_seed(7), batch_size=4)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12 * float(theirs.abs().max()))


def test_is_the_mean_of_autograd_at_the_drawn_points(every_relu_net):
    x, bank = _rand(2, 3, 8, 8), _rand(3, 3, 8, 8, seed=2)
    which, alpha, noise = our_draws(3, 5, 2, 3, x.shape, 0.1)
    expected = torch.zeros_like(x)
    for k in range(5):
        b = bank[which[k]]
        xn = x + noise[k]
        p = (b + alpha[k].view(-1, 1, 1, 1) * (xn - b)).requires_grad_(True)
        g, = torch.autograd.grad(every_relu_net(p)[:, 2].sum(), p)
        expected += (xn - b) * g / 5
    ours = gradient_shap(every_relu_net, x, 2, baselines=bank, n=5, stdev=0.1,
                         generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)


@pytest.mark.slow
def test_converges_to_captum_in_expectation():
    """Independent draws: ours (16 runs of 250 samples) and Captum's (4000 samples) agree
    within their standard errors, measured from the spread of our runs; a wrong class does
    not."""
    captum = pytest.importorskip("captum.attr")
    model, x, bank = small_cnn(), _rand(2, 3, 8, 8), _rand(5, 3, 8, 8, seed=2)
    runs = torch.stack([gradient_shap(model, x, [0, 1], baselines=bank, n=250, stdev=0.02,
                                      generator=torch.Generator().manual_seed(s))
                        for s in range(16)])
    ours, se = runs.mean(0), runs.std(0) / 4  # the standard error of a 4000-sample mean
    np.random.seed(0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = captum.GradientShap(model).attribute(x, bank, n_samples=4000, stdevs=0.02,
                                                      target=[0, 1]).detach()
        wrong = captum.GradientShap(model).attribute(x, bank, n_samples=4000, stdevs=0.02,
                                                     target=[2, 3]).detach()
    z2 = ((ours - theirs) ** 2 / (2 * se ** 2)).mean()
    assert z2 < 2.5, float(z2)  # E ~ 1.15 (t with 15 degrees of freedom)
    assert ((ours - wrong) ** 2 / (2 * se ** 2)).mean() > 20


def test_determinism_and_the_global_rng(every_relu_net):
    x, bank = _rand(2, 3, 8, 8), _rand(3, 3, 8, 8, seed=2)
    state = torch.random.get_rng_state()
    a = gradient_shap(every_relu_net, x, [0, 1], baselines=bank, n=7, stdev=0.1,
                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), state)
    b = gradient_shap(every_relu_net, x, [0, 1], baselines=bank, n=7, stdev=0.1,
                      generator=torch.Generator().manual_seed(0), batch_size=3)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-14)  # chunking does not matter
    c = gradient_shap(every_relu_net, x, [0, 1], baselines=bank, n=7, stdev=0.1,
                      generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, c)
    with torch.no_grad():
        d = gradient_shap(every_relu_net, x, [0, 1], baselines=bank, n=7, stdev=0.1,
                          generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, d)


def test_linear_model_and_one_baseline():
    """f = w·x: every gradient is w, so with one baseline and no noise the result is exactly
    (x - b) ⊙ w whatever alpha (completeness)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3, bias=False)).to(F64).eval()
    x, b = _rand(2, 3, 4, 4), _rand(1, 3, 4, 4, seed=3)
    ours = gradient_shap(model, x, [0, 2], baselines=b, n=3,
                         generator=torch.Generator().manual_seed(0))
    w = model[1].weight.view(3, 3, 4, 4)
    torch.testing.assert_close(ours, (x - b) * w[[0, 2]], rtol=0, atol=1e-14)


def test_topk_gives_a_k_axis(every_relu_net):
    x, bank = _rand(2, 3, 8, 8), _rand(3, 3, 8, 8, seed=2)
    topk = nl.targets.TopK(3)
    out = gradient_shap(every_relu_net, x, topk, baselines=bank, n=4,
                        generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 3, 8, 8)
    classes = topk.bind(every_relu_net(x)).classes
    one = gradient_shap(every_relu_net, x, classes[:, 1], baselines=bank, n=4,
                        generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, 1], one, rtol=0, atol=1e-14)
    listed = gradient_shap(every_relu_net, x, 1, n=4, generator=torch.Generator().manual_seed(0))
    assert listed.shape == x.shape and torch.isfinite(listed).all()  # default: zeros and blur


def test_model_untouched_and_errors():
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc, self.armed = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 3), False

        def forward(self, x):
            x = F.relu(self.conv(x), inplace=True)
            if self.armed:
                raise RuntimeError("layer failure")
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    model = Exploding().train()
    x = torch.rand(2, 3, 8, 8)
    before = model_state(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradient_shap(model, x, 1, n=2)
        model.armed = True
        with pytest.raises(RuntimeError, match="layer failure"):
            gradient_shap(model, x, 1, n=2)
        model.armed = False
    assert_untouched(model, before)
    with pytest.raises(ValueError, match="n must be"):
        gradient_shap(model, x, 1, n=0)
    with pytest.raises(ValueError, match="stdev"):
        gradient_shap(model, x, 1, stdev=-1.0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        gradient_shap(model, x, 1, baselines=torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="out of range"):
        gradient_shap(model.eval(), x, 10**6, n=2)
