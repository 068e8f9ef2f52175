"""Co-registration: read optical and label rasters on the Sentinel-1 pixel grid, one window at a time.

Rasters whose grid equals the reference grid (within a tolerance: real products differ by ~3e-19° in pixel
size) are read directly; rasters on a grid shifted by a whole number of pixels are read through an offset
window; anything else is warped on the fly through ``rasterio.vrt.WarpedVRT`` (bilinear for reflectance,
nearest for labels), so that no scene is ever held in memory whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from sarkit.errors import InputError
from sarkit.raster.grid import Bounds, PixelWindow

#: Relative tolerance on pixel size, and tolerance on the origin in pixels, under which two grids are equal.
PIXEL_SIZE_RTOL = 1e-9
ORIGIN_TOL_PX = 1e-6


@dataclass(frozen=True)
class GridSpec:
    """A raster pixel grid: CRS, affine transform and size in pixels."""

    crs: CRS
    transform: Affine
    height: int
    width: int

    @classmethod
    def of(cls, src: Any) -> "GridSpec":
        """The grid of an open raster."""
        return cls(src.crs, src.transform, src.height, src.width)

    @property
    def bounds(self) -> Bounds:
        """Outer bounds of the grid: corners of pixel (0, 0) and (height, width)."""
        x0, y0 = self.transform @ (0, 0)
        x1, y1 = self.transform @ (self.width, self.height)
        return Bounds(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _is_north_up(t: Affine) -> bool:
    return t.b == 0 and t.d == 0


def pixel_offset(ref: GridSpec, other: GridSpec) -> tuple[int, int] | None:
    """Whole-pixel (row, col) offset of ``ref``'s origin inside ``other``'s grid, or None when not aligned.

    Aligned means: same CRS, north-up, pixel sizes equal within ``PIXEL_SIZE_RTOL`` (relative) and the origin
    difference a whole number of pixels within ``ORIGIN_TOL_PX``.
    """
    if ref.crs != other.crs or not (_is_north_up(ref.transform) and _is_north_up(other.transform)):
        return None
    ra, re_ = ref.transform.a, ref.transform.e
    oa, oe = other.transform.a, other.transform.e
    if abs(ra - oa) > PIXEL_SIZE_RTOL * abs(ra) or abs(re_ - oe) > PIXEL_SIZE_RTOL * abs(re_):
        return None
    col = (ref.transform.c - other.transform.c) / oa
    row = (ref.transform.f - other.transform.f) / oe
    rc, cc = round(row), round(col)
    # the origin tolerance is checked at the far corner too, so that a tiny pixel-size drift cannot add up
    far_col = (ref.transform.c + ra * ref.width - other.transform.c) / oa - ref.width
    far_row = (ref.transform.f + re_ * ref.height - other.transform.f) / oe - ref.height
    if max(abs(row - rc), abs(col - cc), abs(far_row - rc), abs(far_col - cc)) > ORIGIN_TOL_PX:
        return None
    return int(rc), int(cc)


def grids_equal(a: GridSpec, b: GridSpec) -> bool:
    """True when two grids have the same CRS, size and pixels within tolerance (no resampling needed)."""
    return (a.height, a.width) == (b.height, b.width) and pixel_offset(a, b) == (0, 0)


def overlap_bounds(ref: GridSpec, other: GridSpec) -> Bounds | None:
    """Intersection of the two footprints in ``ref``'s CRS, or None when they do not overlap."""
    ob = other.bounds
    if other.crs != ref.crs:
        ob = Bounds(*transform_bounds(other.crs, ref.crs, *ob, densify_pts=21))
    rb = ref.bounds
    left, bottom = max(rb.left, ob.left), max(rb.bottom, ob.bottom)
    right, top = min(rb.right, ob.right), min(rb.top, ob.top)
    if right <= left or top <= bottom:
        return None
    return Bounds(left, bottom, right, top)


def read_padded(src: Any, window: PixelWindow, bands: list[int], fill: float, dtype: Any) -> np.ndarray:
    """Read ``window`` of ``src`` (any part outside the raster is ``fill``) as a (bands, h, w) array."""
    out = np.full((len(bands), window.height, window.width), fill, dtype=dtype)
    inner = window.intersect(PixelWindow(0, 0, src.height, src.width))
    if inner is None:
        return out
    data = src.read(bands, window=inner.to_rasterio())
    r0, c0 = inner.row_off - window.row_off, inner.col_off - window.col_off
    out[:, r0:r0 + inner.height, c0:c0 + inner.width] = data
    return out


class AlignedReader:
    """Reads windows of a raster on the reference (Sentinel-1) grid; the raster is resampled only if needed.

    ``src_nodata`` is the value that marks nodata in the source (None: the raster's own, else ``fill``);
    pixels outside the source footprint read as ``fill``.
    """

    def __init__(self, path: Any, ref: GridSpec, resampling: Resampling, fill: float,
                 src_nodata: float | None = None, what: str = "raster") -> None:
        self.src = rasterio.open(path)
        self.ref = ref
        self.what = what
        self.fill = fill
        grid = GridSpec.of(self.src)
        if overlap_bounds(ref, grid) is None:
            self.src.close()
            raise InputError(f"{what} does not overlap the Sentinel-1 scene: {path} (give files of the same area)")
        self.src_nodata = src_nodata if src_nodata is not None else (
            self.src.nodata if self.src.nodata is not None else fill)
        self.offset = pixel_offset(ref, grid)
        self.vrt: WarpedVRT | None = None
        if self.offset is None:
            self.vrt = WarpedVRT(self.src, crs=ref.crs, transform=ref.transform, width=ref.width,
                                 height=ref.height, resampling=resampling, src_nodata=self.src_nodata, nodata=fill)

    @property
    def resampled(self) -> bool:
        """True when the source is warped (not read pixel for pixel)."""
        return self.vrt is not None

    @property
    def count(self) -> int:
        return self.src.count

    @property
    def dtype(self) -> str:
        return self.src.dtypes[0]

    def read(self, window: PixelWindow, bands: list[int] | None = None) -> np.ndarray:
        """(bands, h, w) of the source on the reference grid for ``window``; nodata and outside → ``fill``."""
        bands = bands or list(range(1, self.src.count + 1))
        if self.vrt is not None:
            return read_padded(self.vrt, window, bands, self.fill, self.src.dtypes[0])
        dr, dc = self.offset  # type: ignore[misc]
        shifted = PixelWindow(window.row_off + dr, window.col_off + dc, window.height, window.width)
        data = read_padded(self.src, shifted, bands, self.fill, self.src.dtypes[0])
        if self.src_nodata is not None and self.src_nodata != self.fill and not np.isnan(self.src_nodata):
            data[data == self.src_nodata] = self.fill
        return data

    def close(self) -> None:
        if self.vrt is not None:
            self.vrt.close()
        self.src.close()

    def __enter__(self) -> "AlignedReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
