"""Read a raster onto a reference grid, one window at a time: the one way sarkit co-registers rasters.

``AlignedReader`` chooses one of three paths with the grid rule of ``sarkit.raster.grid`` (``GRID_TOL_PX``):

* ``DIRECT``: the raster's grid is the reference grid; windows are read as they are.
* ``OFFSET``: the raster's grid is the reference grid shifted by whole pixels (another extent of the same pixel
  grid); windows are read through the shifted window, pixels outside the raster are ``fill``.
* ``WARPED``: anything else; the raster is reprojected on the fly through ``rasterio.vrt.WarpedVRT`` with the
  caller's resampling (bilinear for reflectance, nearest for labels and for stitched tiles by default), so no
  raster is ever held in memory whole.

Rasters without georeferencing (no CRS, or GDAL's identity transform) cannot be aligned: they are read pixel for
pixel when their size is the reference's, else refused. Used by tiling (optical and labels on the Sentinel-1 grid),
by evaluation (prediction and labels on the target grid) and by stitching (inputs on the mosaic grid).
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError, WarpOperationError
from rasterio.vrt import WarpedVRT

from sarkit.errors import InputError
from sarkit.io import open_raster
from sarkit.raster.grid import GridSpec, PixelOffset, PixelWindow, overlap_bounds, pixel_offset, same_grid


class ReadPath(str, Enum):
    """How a raster is read onto a reference grid."""

    DIRECT = "direct"
    OFFSET = "offset"
    WARPED = "warped"


def read_bands(src: Any, bands: Any = None, window: PixelWindow | None = None, what: str = "raster",
               path: str | None = None, **kwargs: Any) -> np.ndarray:
    """``src.read(bands, window=window, **kwargs)`` (``window`` None: the whole raster); a read that fails (a
    truncated or corrupt file) raises ``InputError`` naming ``what``, the window and the file (``path``, default
    ``src.name``). Every read of the raster layer goes through it."""
    try:
        return src.read(bands, window=window.to_rasterio() if window is not None else None, **kwargs)
    except (RasterioIOError, WarpOperationError) as exc:
        lines = str(exc.__cause__ or exc).splitlines()
        reason = lines[0][:200] if lines else type(exc).__name__
        where = (f"rows {window.row_off}–{window.row_end}, columns {window.col_off}–{window.col_end}"
                 if window is not None else "the whole raster")
        raise InputError(f"{what}: reading {where} failed ({reason}): {path or src.name} is truncated or corrupt "
                         f"(download or export it again)") from None


def read_padded(src: Any, window: PixelWindow, bands: list[int], fill: float, dtype: Any, what: str = "raster",
                path: str | None = None) -> np.ndarray:
    """Read ``window`` of ``src`` (any part outside the raster is ``fill``) as a (bands, h, w) array of ``dtype``;
    ``what`` and ``path`` name the raster when the read fails (``read_bands``)."""
    inner = window.intersect(PixelWindow(0, 0, src.height, src.width))
    if inner == window:  # the common case (whole strips of a scene): one read, no copy into a padded array
        data = read_bands(src, bands, window, what, path)
        return data if data.dtype == np.dtype(dtype) else data.astype(dtype)
    out = np.full((len(bands), window.height, window.width), fill, dtype=dtype)
    if inner is None:
        return out
    data = read_bands(src, bands, inner, what, path)
    r0, c0 = inner.row_off - window.row_off, inner.col_off - window.col_off
    out[:, r0:r0 + inner.height, c0:c0 + inner.width] = data
    return out


def _read_path(ref: GridSpec, grid: GridSpec) -> tuple[ReadPath, PixelOffset | None]:
    """The path by which a raster on ``grid`` is read onto ``ref`` and, unless warped, its whole-pixel offset."""
    if not (ref.georeferenced and grid.georeferenced):
        return ReadPath.DIRECT, PixelOffset(0, 0)  # the caller checked the sizes agree
    if same_grid(ref, grid):
        return ReadPath.DIRECT, PixelOffset(0, 0)
    offset = pixel_offset(ref, grid)
    return (ReadPath.OFFSET, offset) if offset is not None else (ReadPath.WARPED, None)


class AlignedReader:
    """Reads windows of a raster on the reference grid ``ref``; the raster is resampled only when its grid differs.

    ``src`` is a path (opened and closed here) or an open dataset (left open). ``src_nodata`` is the value that
    marks nodata in the source (None: the raster's own, else ``fill``); nodata pixels and pixels outside the
    source read as ``fill``. ``what`` names the raster ("optical raster s2.tif"; default "raster PATH") and
    ``ref_name`` the reference in error messages.
    ``InputError`` when the raster does not overlap the reference, its CRS cannot be transformed to the
    reference's, or it lacks georeferencing and differs in size.
    """

    def __init__(self, src: Any, ref: GridSpec, resampling: Resampling, fill: float,
                 src_nodata: float | None = None, what: str | None = None,
                 ref_name: str = "the Sentinel-1 scene") -> None:
        self._owned = not hasattr(src, "read")
        self.src = open_raster(src, what or "raster") if self._owned else src
        self.ref = ref
        self.what = what or f"raster {self.src.name}"
        self.fill = fill
        self.grid = GridSpec.of(self.src)
        try:
            self.path, self.offset = self._check(ref_name)
        except BaseException:
            self.close()
            raise
        self.src_nodata = src_nodata if src_nodata is not None else (
            self.src.nodata if self.src.nodata is not None else fill)
        self.vrt: WarpedVRT | None = None
        if self.path is ReadPath.WARPED:
            self.vrt = WarpedVRT(self.src, crs=ref.crs, transform=ref.transform, width=ref.width,
                                 height=ref.height, resampling=resampling, src_nodata=self.src_nodata, nodata=fill)

    def _check(self, ref_name: str) -> tuple[ReadPath, PixelOffset | None]:
        """The read path, after checking the raster can be placed on the reference at all."""
        ref, grid = self.ref, self.grid
        if not (ref.georeferenced and grid.georeferenced):
            if (grid.height, grid.width) != (ref.height, ref.width):
                raise InputError(f"{self.what} ({grid.width}×{grid.height}) and {ref_name} "
                                 f"({ref.width}×{ref.height}) differ in size and lack a CRS to align them")
            return _read_path(ref, grid)
        path, offset = _read_path(ref, grid)
        if path is ReadPath.WARPED:
            try:
                overlap = overlap_bounds(ref, grid)
            except Exception as exc:  # pyproj/GDAL raise various errors for impossible transforms
                raise InputError(f"{self.what} CRS {grid.crs} cannot be transformed to the CRS of {ref_name} "
                                 f"({ref.crs}): {str(exc).splitlines()[0][:120]}") from None
        else:
            assert offset is not None
            overlap = PixelWindow(offset.row, offset.col, ref.height, ref.width).intersect(grid.window)
        if overlap is None:
            raise InputError(f"{self.what} does not overlap {ref_name} (give files of the same area)")
        return path, offset

    @property
    def resampled(self) -> bool:
        """True when the source is warped (not read pixel for pixel)."""
        return self.path is ReadPath.WARPED

    @property
    def dataset(self) -> Any:
        """The source as a dataset: the warped view on the reference grid when warped, else the raster itself."""
        return self.vrt if self.vrt is not None else self.src

    @property
    def count(self) -> int:
        return self.src.count

    @property
    def dtype(self) -> str:
        return self.src.dtypes[0]

    def covered(self, window: PixelWindow) -> PixelWindow | None:
        """The part of ``window`` (in the window's own coordinates) read from the source, not filled: all of it when
        warped (the warp marks what it cannot fill as nodata), None when nothing."""
        if self.offset is None:
            return PixelWindow(0, 0, window.height, window.width)
        shifted = PixelWindow(window.row_off + self.offset.row, window.col_off + self.offset.col,
                              window.height, window.width)
        inner = shifted.intersect(self.grid.window)
        if inner is None:
            return None
        return PixelWindow(inner.row_off - shifted.row_off, inner.col_off - shifted.col_off, inner.height,
                           inner.width)

    def read(self, window: PixelWindow, bands: list[int] | None = None, dtype: Any = None) -> np.ndarray:
        """(bands, h, w) of the source on the reference grid for ``window`` (in ``dtype``, else the source's); nodata
        and pixels outside the source → ``fill``."""
        bands = bands or list(range(1, self.src.count + 1))
        dtype = dtype or self.src.dtypes[0]
        if self.vrt is not None:
            return read_padded(self.vrt, window, bands, self.fill, dtype, self.what, self.src.name)
        assert self.offset is not None
        shifted = PixelWindow(window.row_off + self.offset.row, window.col_off + self.offset.col,
                              window.height, window.width)
        data = read_padded(self.src, shifted, bands, self.fill, dtype, self.what, self.src.name)
        if self.src_nodata != self.fill and not np.isnan(self.src_nodata):
            data[data == self.src_nodata] = self.fill
        return data

    def close(self) -> None:
        if getattr(self, "vrt", None) is not None:
            self.vrt.close()
        if self._owned:
            self.src.close()

    def __enter__(self) -> "AlignedReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
