"""The contextual loss (sarkit.models.contextual): the formula by hand, its point (permutations cost little),
the bounded sampling, and VGG19 weights from a local file only."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lossweights import write_vgg19_weights
from sarkit.errors import WeightsNotFoundError
from sarkit.models import contextual as CX


def hand_cx(x: np.ndarray, y: np.ndarray, h: float = 0.5, eps: float = 1e-5, mu: np.ndarray | None = None
            ) -> float:
    """−log CX of one sample's (C, P) output and (C, Q) target features, written out loop by loop; centred on
    ``mu`` (default: the target's mean)."""
    mu = y.mean(axis=1) if mu is None else mu
    xs = [(x[:, i] - mu) / np.linalg.norm(x[:, i] - mu) for i in range(x.shape[1])]
    ys = [(y[:, j] - mu) / np.linalg.norm(y[:, j] - mu) for j in range(y.shape[1])]
    d = np.array([[1.0 - float(np.dot(a, b)) for b in ys] for a in xs])
    cx = np.zeros_like(d)
    for i in range(d.shape[0]):
        rel = d[i] / (d[i].min() + eps)
        w = np.exp((1.0 - rel) / h)
        cx[i] = w / w.sum()
    best = [max(cx[i, j] for i in range(d.shape[0])) for j in range(d.shape[1])]
    return -math.log(sum(best) / len(best))


def test_equals_a_hand_computation_on_small_hand_made_features() -> None:
    x = np.array([[1.0, 0.0, 2.0], [0.5, 1.0, -1.0]])            # C = 2, three output positions
    y = np.array([[0.0, 1.5, 1.0, -0.5], [1.0, 0.2, -0.3, 0.8]])  # four target positions
    got = CX.contextual_loss(torch.tensor(x).view(1, 2, 1, 3), torch.tensor(y).view(1, 2, 2, 2))
    assert got.item() == pytest.approx(hand_cx(x, y), rel=1e-6)


def test_batch_loss_is_the_mean_of_per_sample_losses_centred_on_the_batch_target_mean() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 3, 2, 2)), rng.normal(size=(2, 3, 2, 2))
    mu = y.mean(axis=(0, 2, 3))  # the target mean of the whole batch
    want = np.mean([hand_cx(x[n].reshape(3, -1), y[n].reshape(3, -1), mu=mu) for n in range(2)])
    got = CX.contextual_loss(torch.tensor(x), torch.tensor(y))
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_lower_for_a_permuted_copy_than_for_unrelated_features() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(1, 8, 4, 4, generator=g)
    perm = torch.randperm(16, generator=g)
    permuted = y.flatten(2)[:, :, perm].view(1, 8, 4, 4)
    unrelated = torch.randn(1, 8, 4, 4, generator=g)
    same, other = CX.contextual_loss(permuted, y).item(), CX.contextual_loss(unrelated, y).item()
    assert same < 1e-3 < other
    assert (permuted - y).abs().mean() > 0.5  # while a pixel loss sees a large difference


def test_at_most_65_by_65_positions_and_the_same_ones_in_both() -> None:
    x = torch.arange(70 * 70, dtype=torch.float32).view(1, 1, 70, 70)
    xs, ys = CX.sample_positions(x, x + 1, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (1, 1, 65 * 65) and torch.equal(ys, xs + 1)
    small, _ = CX.sample_positions(x[:, :, :10, :10], x[:, :, :10, :10])
    assert small.shape == (1, 1, 100)


def test_vgg19_features_from_a_local_file_and_a_gradient(tmp_path) -> None:
    path = write_vgg19_weights(tmp_path)
    loss, used = CX.load_vgg_contextual(path)
    assert used == str(path)
    f3, f4 = loss.features(torch.rand(1, 3, 32, 32))
    assert f3.shape == (1, 256, 8, 8) and f4.shape == (1, 512, 4, 4)
    out = torch.rand(2, 3, 32, 32, requires_grad=True)
    value = loss(out, torch.rand(2, 3, 32, 32))
    value.backward()
    assert value.item() > 0 and out.grad is not None and out.grad.abs().sum() > 0


def test_missing_vgg19_weights_name_the_option_and_variable(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SARKIT_VGG19_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as exc:
        CX.load_vgg_contextual()
    msg = str(exc.value)
    assert "--vgg19-weights" in msg and "SARKIT_VGG19_WEIGHTS" in msg and "\n" not in msg
