"""Tests of sarkit.raster.grid: window offsets, covering grids and pixel window helpers."""

from __future__ import annotations

import numpy as np
import pytest

from sarkit.raster.grid import Bounds, PixelWindow, grid_offsets, window_grid


def test_grid_offsets_skip_or_cover_the_remainder():
    assert grid_offsets(600, 256, 256, cover=False) == [0, 256]
    assert grid_offsets(600, 256, 256, cover=True) == [0, 256, 344]
    assert grid_offsets(512, 256, 128, cover=False) == [0, 128, 256]
    assert grid_offsets(512, 256, 256, cover=True) == [0, 256]
    assert grid_offsets(100, 256, 256, cover=True) == [0]


def test_grid_offsets_reject_non_positive():
    with pytest.raises(ValueError):
        grid_offsets(100, 0, 10, cover=False)
    with pytest.raises(ValueError):
        grid_offsets(100, 10, 0, cover=False)


def test_window_grid_cover_touches_every_pixel():
    seen = np.zeros((300, 500), dtype=int)
    wins = list(window_grid(300, 500, 128, 100, cover=True))
    for w in wins:
        assert w.height == 128 and w.width == 128
        seen[w.slices()] += 1
    assert (seen > 0).all()
    assert wins == sorted(wins)  # row-major


def test_window_grid_without_cover_stays_inside():
    wins = list(window_grid(300, 500, 128, 128))
    assert len(wins) == 2 * 3
    assert all(w.row_end <= 300 and w.col_end <= 500 for w in wins)


def test_pixel_window_helpers():
    w = PixelWindow(10, 20, 30, 40)
    assert (w.row_end, w.col_end) == (40, 60)
    rw = w.to_rasterio()
    assert (rw.row_off, rw.col_off, rw.height, rw.width) == (10, 20, 30, 40)
    assert w.slices() == (slice(10, 40), slice(20, 60))
    assert w.intersect(PixelWindow(30, 50, 100, 100)) == PixelWindow(30, 50, 10, 10)
    assert w.intersect(PixelWindow(40, 0, 5, 5)) is None
    assert Bounds(0, 1, 2, 3).top == 3
