"""Overlapping window grids and the blend weights that join their predictions without seams.

A window's weight is separable: ``w(r, c) = a(r)·b(c)``. Along one axis it is 1 in the middle and rises as a
cosine ramp over the width it shares with the neighbouring window on each side; on the outer border of the
scene (or mosaic) there is no neighbour, so no ramp and full weight (no dark rims). Ramp values lie strictly
in (0, 1], so every covered pixel has a positive weight sum, and the blend ``Σ wᵢ·vᵢ / Σ wᵢ`` of a constant is
that constant. Where two windows share ``n`` pixels, the rising ramp of one and the falling ramp of the other
add up to exactly 1 (sin² + cos²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from sarkit.errors import InputError
from sarkit.raster.grid import PixelWindow, grid_offsets


def cosine_ramp(n: int) -> np.ndarray:
    """Rising ramp of ``n`` samples: ``r[i] = sin²(π/2 · (i + ½)/n)``, strictly inside (0, 1)."""
    if n <= 0:
        return np.ones(0, dtype=np.float64)
    i = np.arange(n, dtype=np.float64)
    return np.sin(0.5 * math.pi * (i + 0.5) / n) ** 2


def axis_weights(size: int, before: int, after: int) -> np.ndarray:
    """1-D weights of a window of ``size``: ones, times a rising ramp over the first ``before`` samples and a
    falling ramp over the last ``after`` samples (widths clipped to ``size``)."""
    w = np.ones(size, dtype=np.float64)
    before, after = min(max(before, 0), size), min(max(after, 0), size)
    if before:
        w[:before] *= cosine_ramp(before)
    if after:
        w[size - after:] *= cosine_ramp(after)[::-1]
    return w


def axis_overlaps(offsets: Sequence[int], size: int, length: int) -> list[tuple[int, int]]:
    """For windows starting at ``offsets`` along an axis of ``length``: (pixels shared with the previous window,
    pixels shared with the next one); 0 at the axis ends."""
    ends = [min(o + size, length) for o in offsets]
    out = []
    for i, o in enumerate(offsets):
        before = max(0, ends[i - 1] - o) if i > 0 else 0
        after = max(0, ends[i] - offsets[i + 1]) if i + 1 < len(offsets) else 0
        out.append((before, after))
    return out


def window_weights(height: int, width: int, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """2-D separable weights ``a(r)·b(c)`` of a ``height``×``width`` window with ramp widths on each side."""
    return np.outer(axis_weights(height, top, bottom), axis_weights(width, left, right))


def check_overlap(tile: int, overlap: int) -> None:
    """``InputError`` unless ``0 ≤ overlap < tile``."""
    if tile <= 0:
        raise InputError(f"--tile must be positive, got {tile}")
    if overlap < 0 or overlap >= tile:
        raise InputError(f"--overlap must be ≥ 0 and smaller than --tile ({tile}), got {overlap}")


@dataclass(frozen=True)
class BlendGrid:
    """The covering window grid of a scene: row/column offsets and each row's/column's 1-D blend weights.

    Window (i, j) starts at ``(row_offsets[i], col_offsets[j])``; its weight is
    ``outer(row_weights[i], col_weights[j])``. Windows are ``tile`` pixels, shorter only where the scene is
    smaller than one tile (the caller pads those to a tile and crops back).
    """

    height: int
    width: int
    tile: int
    overlap: int
    row_offsets: tuple[int, ...]
    col_offsets: tuple[int, ...]
    row_weights: tuple[np.ndarray, ...]
    col_weights: tuple[np.ndarray, ...]

    @property
    def n_tiles(self) -> int:
        return len(self.row_offsets) * len(self.col_offsets)

    def window(self, i: int, j: int) -> PixelWindow:
        """Window of tile row ``i``, tile column ``j`` (clipped to the scene)."""
        r, c = self.row_offsets[i], self.col_offsets[j]
        return PixelWindow(r, c, min(self.tile, self.height - r), min(self.tile, self.width - c))

    def weights(self, i: int, j: int) -> np.ndarray:
        """Blend weights of window (i, j): ``outer(row_weights[i], col_weights[j])``."""
        return np.outer(self.row_weights[i], self.col_weights[j])

    def scaled(self, scale: int) -> "BlendGrid":
        """The same windows on a grid ``scale`` times finer (what a predictor of output scale ``scale`` gives):
        sizes, tile, overlap and offsets times ``scale``, weights recomputed on the finer axes (ramps ``scale``
        times as wide)."""
        if scale == 1:
            return self
        s = scale
        h, w = self.height * s, self.width * s
        rows = tuple(r * s for r in self.row_offsets)
        cols = tuple(c * s for c in self.col_offsets)
        size_r, size_c = min(self.tile * s, h), min(self.tile * s, w)
        row_w = tuple(axis_weights(size_r, b, a) for b, a in axis_overlaps(rows, size_r, h))
        col_w = tuple(axis_weights(size_c, b, a) for b, a in axis_overlaps(cols, size_c, w))
        return BlendGrid(h, w, self.tile * s, self.overlap * s, rows, cols, row_w, col_w)


def _axis(length: int, tile: int, overlap: int) -> tuple[tuple[int, ...], tuple[np.ndarray, ...]]:
    """Offsets (stride = tile − overlap, last one aligned to the end) and 1-D weights along one axis."""
    offsets = grid_offsets(length, tile, tile - overlap, cover=True)
    size = min(tile, length)
    weights = tuple(axis_weights(size, b, a) for b, a in axis_overlaps(offsets, size, length))
    return tuple(offsets), weights


def blend_grid(height: int, width: int, tile: int, overlap: int) -> BlendGrid:
    """Covering grid of ``tile``-pixel windows every ``tile − overlap`` pixels with their blend weights."""
    check_overlap(tile, overlap)
    if height <= 0 or width <= 0:
        raise InputError(f"scene is empty ({height}×{width} pixels)")
    rows, row_w = _axis(height, tile, overlap)
    cols, col_w = _axis(width, tile, overlap)
    return BlendGrid(height, width, tile, overlap, rows, cols, row_w, col_w)


def edge_overlaps(window: PixelWindow, others: Sequence[PixelWindow]) -> tuple[int, int, int, int]:
    """Ramp widths (top, bottom, left, right) of ``window`` among ``others``: on each side, the widest overlap
    with a window that reaches past that side; 0 where none does (an outer border)."""
    top = bottom = left = right = 0
    for o in others:
        inter = window.intersect(o)
        if inter is None or o == window:
            continue
        if o.row_off < window.row_off:
            top = max(top, inter.height)
        if o.row_end > window.row_end:
            bottom = max(bottom, inter.height)
        if o.col_off < window.col_off:
            left = max(left, inter.width)
        if o.col_end > window.col_end:
            right = max(right, inter.width)
    return top, bottom, left, right


def normalise(acc: np.ndarray, wsum: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """Blend result ``acc / wsum`` (as ``dtype``), NaN where ``wsum`` is 0 (no window covers the pixel)."""
    out = np.full(acc.shape, np.nan, dtype=dtype)
    ok = wsum > 0
    np.divide(acc, wsum, out=out, where=np.broadcast_to(ok, acc.shape), casting="unsafe")
    return out
