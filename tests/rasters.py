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
