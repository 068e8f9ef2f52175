"""Tests of the window grid and blend weights (sarkit/blend.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sarkit.infer.blend import (axis_overlaps, axis_weights, blend_grid, check_overlap, cosine_ramp, edge_overlaps,
                          normalise, window_weights)
from sarkit.errors import InputError
from sarkit.raster.grid import PixelWindow


def blend_sums(height: int, width: int, tile: int, overlap: int, value: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """Σ w·value and Σ w over a scene for the translate grid, plus the number of windows."""
    g = blend_grid(height, width, tile, overlap)
    acc = np.zeros((1, height, width))
    wsum = np.zeros((height, width))
    for i in range(len(g.row_offsets)):
        for j in range(len(g.col_offsets)):
            win = g.window(i, j)
            w = g.weights(i, j)
            assert w.shape == (win.height, win.width)
            rs, cs = win.slices()
            acc[0, rs, cs] += w * value
            wsum[rs, cs] += w
    return acc, wsum, g.n_tiles


def test_cosine_ramp_is_strictly_inside_unit_interval_and_rising():
    r = cosine_ramp(64)
    assert r.shape == (64,)
    assert np.all(r > 0) and np.all(r < 1)
    assert np.all(np.diff(r) > 0)


def test_rising_and_falling_ramps_add_to_one():
    r = cosine_ramp(37)
    np.testing.assert_allclose(r + r[::-1], 1.0, atol=1e-15)


def test_axis_weights_full_weight_on_borders():
    w = axis_weights(256, 0, 64)
    assert np.all(w[:192] == 1.0)
    assert np.all(w[192:] < 1.0)
    w = axis_weights(256, 64, 0)
    assert np.all(w[64:] == 1.0) and w[0] < 0.01


@pytest.mark.parametrize("height,width,tile,overlap", [
    (777, 1000, 256, 64), (256, 256, 256, 64), (100, 70, 256, 64), (513, 300, 128, 127), (300, 301, 64, 0),
    (1, 1, 32, 8), (257, 511, 256, 200), (1000, 33, 64, 31)])
def test_weight_sum_positive_and_constant_blends_exactly(height, width, tile, overlap):
    value = 0.7234567
    acc, wsum, _ = blend_sums(height, width, tile, overlap, value)
    assert np.all(wsum > 0)
    out = normalise(acc, wsum)
    assert np.all(out == np.float32(value))


def test_regular_grid_weights_sum_to_one_without_normalisation():
    # 4 windows of 256 every 192 pixels exactly cover 832 pixels: the ramps add up to 1 everywhere.
    _, wsum, n = blend_sums(832, 832, 256, 64)
    assert n == 16
    np.testing.assert_allclose(wsum, 1.0, atol=1e-12)


def test_random_sizes_property():
    rng = np.random.default_rng(3)
    for _ in range(25):
        tile = int(rng.integers(8, 80))
        overlap = int(rng.integers(0, tile))
        h, w = (int(x) for x in rng.integers(1, 300, size=2))
        acc, wsum, _ = blend_sums(h, w, tile, overlap, -3.25)
        assert np.all(wsum > 0), (h, w, tile, overlap)
        assert np.all(normalise(acc, wsum) == np.float32(-3.25))


def test_axis_overlaps_with_last_window_aligned_to_end():
    # offsets 0, 192, 384, 576, 744 for 1000 pixels: the last window shares 88 pixels with the previous one.
    ov = axis_overlaps([0, 192, 384, 576, 744], 256, 1000)
    assert ov == [(0, 64), (64, 64), (64, 64), (64, 88), (88, 0)]


@pytest.mark.parametrize("tile,overlap", [(256, 256), (256, 300), (256, -1), (0, 0)])
def test_bad_overlap_is_input_error(tile, overlap):
    with pytest.raises(InputError):
        check_overlap(tile, overlap)
    with pytest.raises(InputError):
        blend_grid(500, 500, tile, overlap)


def test_edge_overlaps_interior_and_border():
    a = PixelWindow(0, 0, 100, 100)
    b = PixelWindow(0, 70, 100, 100)
    c = PixelWindow(70, 0, 100, 100)
    assert edge_overlaps(a, [b, c]) == (0, 30, 0, 30)
    assert edge_overlaps(b, [a, c]) == (0, 30, 30, 0)
    assert edge_overlaps(a, []) == (0, 0, 0, 0)
    assert edge_overlaps(a, [PixelWindow(0, 100, 100, 100)]) == (0, 0, 0, 0)  # touching, not overlapping


def test_window_weights_separable():
    w = window_weights(10, 20, 2, 3, 4, 5)
    np.testing.assert_allclose(w, np.outer(axis_weights(10, 2, 3), axis_weights(20, 4, 5)))


def test_normalise_nan_where_uncovered():
    acc = np.array([[[2.0, 0.0]]])
    wsum = np.array([[4.0, 0.0]])
    out = normalise(acc, wsum)
    assert out[0, 0, 0] == 0.5 and np.isnan(out[0, 0, 1])
