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


# ------------------------------------------------------------------------------------------------ pixel size
#: Metres per degree of latitude (and of longitude at the equator) on a sphere of the Earth's mean radius
#: (6371.0088 km): degree pixels are compared with metre pixels through it, ``x · cos(latitude)`` along x.
METRES_PER_DEGREE = 6_371_008.8 * math.pi / 180.0
#: Two pixel sizes are the same resolution when they differ by at most this fraction on each axis.
RESOLUTION_TOL = 0.05


@dataclass(frozen=True)
class PixelSize:
    """A grid's pixel size: ``x`` and ``y`` in its CRS's units (``units``: "metre", "degree", "US survey foot",
    … or "" when unknown) and, where they are known, in metres (``x_m``, ``y_m``; degrees at the grid's centre
    latitude)."""

    x: float
    y: float
    units: str = ""
    x_m: float | None = None
    y_m: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (the record in exported checkpoints)."""
        return {"x": self.x, "y": self.y, "units": self.units, "x_m": self.x_m, "y_m": self.y_m}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PixelSize":
        """The inverse of ``to_dict`` (missing metre sizes → None)."""
        return cls(float(d["x"]), float(d["y"]), str(d.get("units") or ""), _opt_float(d.get("x_m")),
                   _opt_float(d.get("y_m")))

    def describe(self) -> str:
        """People's words: "10 m", "20×10 m", or the CRS units when metres are unknown."""
        x, y, unit = (self.x_m, self.y_m, "m") if self.x_m is not None and self.y_m is not None else (
            self.x, self.y, self.units or "CRS units")
        return f"{x:.3g} {unit}" if math.isclose(x, y, rel_tol=1e-3) else f"{x:.3g}×{y:.3g} {unit}"


def _opt_float(v: Any) -> float | None:
    """``float(v)``, None for None."""
    return None if v is None else float(v)


def pixel_size(grid: GridSpec) -> PixelSize | None:
    """The pixel size of a georeferenced grid (lengths of the transform's pixel sides), in metres where its CRS
    says how; None without georeferencing."""
    if not grid.georeferenced:
        return None
    t = grid.transform
    x, y = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    crs = grid.crs
    if crs.is_geographic:
        _, lat = t * (grid.width / 2.0, grid.height / 2.0)
        return PixelSize(x, y, "degree", x * METRES_PER_DEGREE * math.cos(math.radians(lat)),
                         y * METRES_PER_DEGREE)
    try:
        name, factor = crs.linear_units_factor
    except Exception:  # CRSs without linear units (engineering, unknown)
        return PixelSize(x, y, "")
    return PixelSize(x, y, str(name), x * factor, y * factor)


def pixel_size_ratio(a: PixelSize, b: PixelSize) -> tuple[float, float] | None:
    """(x, y) ratios of ``a``'s pixel size to ``b``'s: in metres when both know them, else in their CRS units
    when these are the same; None when the two cannot be compared."""
    if None not in (a.x_m, a.y_m, b.x_m, b.y_m):
        return a.x_m / b.x_m, a.y_m / b.y_m  # type: ignore[operator]
    if a.units and a.units == b.units:
        return a.x / b.x, a.y / b.y
    return None


def rescaled(grid: GridSpec, fx: float, fy: float) -> GridSpec:
    """The grid of the same footprint with ``fx`` times as many columns and ``fy`` times as many rows (rounded,
    at least one); its pixels are adjusted slightly so that its outer corners are the grid's."""
    width, height = max(1, round(grid.width * fx)), max(1, round(grid.height * fy))
    t = grid.transform * Affine.scale(grid.width / width, grid.height / height)
    return GridSpec(grid.crs, t, height, width)


def subdivided(grid: GridSpec, scale: int) -> GridSpec:
    """The grid of the same bounds with each pixel split into ``scale``×``scale``: ``scale`` times as many rows and
    columns, transform ∘ scale(1/``scale``) (exact for powers of two), same CRS."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if scale == 1:
        return grid
    return GridSpec(grid.crs, grid.transform * Affine.scale(1.0 / scale), grid.height * scale, grid.width * scale)
