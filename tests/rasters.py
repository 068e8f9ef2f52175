"""Small GeoTIFFs for tests, written from arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin


def write_rgb_dn(path: Path, a: np.ndarray) -> Path:
    """A (3, H, W) array as a B4,B3,B2 GeoTIFF (nodata 0, EPSG:32631, 10 m pixels)."""
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[1], width=a.shape[2], count=a.shape[0],
                       dtype=a.dtype, nodata=0, crs="EPSG:32631", transform=from_origin(0, 2000, 10, 10)) as d:
        d.write(a)
        d.descriptions = ("B4", "B3", "B2")
    return path


def write_sar_db(path: Path, data: np.ndarray, pixel: float = 10.0, crs: str | None = "EPSG:32631",
                 bands: tuple[str, ...] = ("VV", "VH"), block: int | None = None) -> Path:
    """A (C, H, W) float32 dB array as a SAR GeoTIFF (NaN nodata, ``pixel``-metre pixels from 500000, 4800000;
    no CRS with ``crs=None``; tiled in ``block``² blocks when given), bands described as ``bands``."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    prof = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype="float32",
                nodata=float("nan"), transform=from_origin(500000.0, 4800000.0, pixel, pixel))
    if crs:
        prof["crs"] = crs
    if block:
        prof.update(tiled=True, blockxsize=block, blockysize=block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **prof) as dst:
            dst.write(data.astype(np.float32))
            dst.descriptions = bands
    return path
