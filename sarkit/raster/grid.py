"""Pixel grids: named windows and bounds, the one rule that says whether two grids are the same, and the regular
window grid used by tiling and translation.

The grid rule (``pixel_offset``, ``same_grid``): a raster lies on a reference grid when, in the same CRS, each of
the reference's four outer pixel corners falls within ``GRID_TOL_PX`` pixels of a corner of the other grid, all
displaced by the same whole number of pixels. The test is made in the other grid's pixel coordinates
(``other⁻¹ ∘ ref``), so one tolerance covers the origin and the pixel size (a pixel-size difference counts by how
far it drifts over the reference's width and height). ``GRID_TOL_PX`` = 1e-6 pixel absorbs the float noise of real
products (Sen1Floods11 pixel sizes differ by ~3e-19°, i.e. ~1e-12 pixel over a 512-pixel chip) and is far below
anything a resampling would change. Used by co-registration when tiling, by evaluation pairs and by stitching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window

#: Two grids are the same when their pixel corners agree within this many pixels (see the module docstring).
GRID_TOL_PX = 1e-6


class Bounds(NamedTuple):
    """Geographic bounds in a CRS's units: left, bottom, right, top."""

    left: float
    bottom: float
    right: float
    top: float


@dataclass(frozen=True, order=True)
class PixelWindow:
    """A rectangle of pixels: ``row_off``/``col_off`` of its top-left corner and its ``height``/``width``."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_end(self) -> int:
        return self.row_off + self.height

    @property
    def col_end(self) -> int:
        return self.col_off + self.width

    def to_rasterio(self) -> Window:
        """The same rectangle as a rasterio ``Window``."""
        return Window(self.col_off, self.row_off, self.width, self.height)

    def slices(self) -> tuple[slice, slice]:
        """Row and column slices into an array that starts at pixel (0, 0)."""
        return slice(self.row_off, self.row_end), slice(self.col_off, self.col_end)

    def intersect(self, other: "PixelWindow") -> "PixelWindow | None":
        """The overlap of two windows, or None when they do not overlap."""
        r0, c0 = max(self.row_off, other.row_off), max(self.col_off, other.col_off)
        r1, c1 = min(self.row_end, other.row_end), min(self.col_end, other.col_end)
        if r1 <= r0 or c1 <= c0:
            return None
        return PixelWindow(r0, c0, r1 - r0, c1 - c0)


def grid_offsets(length: int, size: int, stride: int, cover: bool) -> list[int]:
    """Start offsets ``0, stride, 2·stride, …`` of windows of ``size`` along an axis of ``length``.

    With ``cover`` a last window is aligned to the end so that every pixel is covered (used by translate);
    without it, windows that would run past the end are dropped (edge remainders skipped, as tiling does).
    """
    if size <= 0 or stride <= 0:
        raise ValueError("size and stride must be positive")
    if length <= size:
        return [0]
    offsets = list(range(0, length - size + 1, stride))
    if cover and offsets[-1] + size < length:
        offsets.append(length - size)
    return offsets


def window_grid(height: int, width: int, size: int, stride: int, cover: bool = False) -> Iterator[PixelWindow]:
    """Row-major grid of ``size``×``size`` windows every ``stride`` pixels (see ``grid_offsets``)."""
    for r in grid_offsets(height, size, stride, cover):
        for c in grid_offsets(width, size, stride, cover):
            yield PixelWindow(r, c, min(size, height - r), min(size, width - c))


class PixelOffset(NamedTuple):
    """A whole-pixel displacement between two grids: rows down, columns right."""

    row: int
    col: int


@dataclass(frozen=True)
class GridSpec:
    """A raster pixel grid: CRS (None when not georeferenced), affine transform and size in pixels."""

    crs: CRS | None
    transform: Affine
    height: int
    width: int

    @classmethod
    def of(cls, src: Any) -> "GridSpec":
        """The grid of an open raster."""
        return cls(src.crs, src.transform, src.height, src.width)

    @property
    def georeferenced(self) -> bool:
        """True when the grid has a CRS and a transform other than the identity (GDAL's "no georeferencing")."""
        return self.crs is not None and not self.transform.is_identity

    @property
    def window(self) -> PixelWindow:
        """The window of every pixel of the grid."""
        return PixelWindow(0, 0, self.height, self.width)

    @property
    def bounds(self) -> Bounds:
        """Outer bounds of the grid: corners of pixel (0, 0) and (height, width)."""
        x0, y0 = self.transform * (0, 0)
        x1, y1 = self.transform * (self.width, self.height)
        return Bounds(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def pixel_offset(ref: GridSpec, other: GridSpec) -> PixelOffset | None:
    """Whole-pixel position (row, col) of ``ref``'s pixel (0, 0) in ``other``'s grid, or None when ``ref``'s pixels
    are not pixels of ``other``.

    With ``u = other⁻¹ ∘ ref`` (``ref`` pixel coordinates → ``other`` pixel coordinates) the grids share pixels
    when ``u(p) = p + (col, row)`` with whole ``row``, ``col`` within ``GRID_TOL_PX`` at the four corners of
    ``ref``.
    Grids in different CRSs never share pixels.
    """
    if ref.crs != other.crs:
        return None
    try:
        u = ~other.transform * ref.transform
    except Exception:  # a degenerate (non-invertible) transform shares nothing
        return None
    col, row = round(u.c), round(u.f)
    for x, y in ((0, 0), (ref.width, 0), (0, ref.height), (ref.width, ref.height)):
        ux, uy = u * (x, y)
        if not (abs(ux - x - col) <= GRID_TOL_PX and abs(uy - y - row) <= GRID_TOL_PX):
            return None
    return PixelOffset(int(row), int(col))


def same_grid(a: GridSpec, b: GridSpec) -> bool:
    """True when two grids have the same CRS, size and pixels within ``GRID_TOL_PX`` (no resampling needed)."""
    return (a.height, a.width) == (b.height, b.width) and pixel_offset(a, b) == (0, 0)


def overlap_bounds(ref: GridSpec, other: GridSpec) -> Bounds | None:
    """Intersection of the two footprints in ``ref``'s CRS, or None when they do not overlap.

    Raises what pyproj/GDAL raise when ``other``'s CRS cannot be transformed to ``ref``'s.
    """
    ob = other.bounds
    if other.crs != ref.crs:
        ob = Bounds(*transform_bounds(other.crs, ref.crs, *ob, densify_pts=21))
    if not all(map(math.isfinite, ob)):
        return None
    rb = ref.bounds
    left, bottom = max(rb.left, ob.left), max(rb.bottom, ob.bottom)
    right, top = min(rb.right, ob.right), min(rb.top, ob.top)
    if right <= left or top <= bottom:
        return None
    return Bounds(left, bottom, right, top)
