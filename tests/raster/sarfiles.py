"""Small generated Sentinel-1-like rasters for the raster-layer tests: σ⁰ in linear power or dB, files that are
not SAR, truncated copies, and a VV-only generator checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.transform import from_origin

CRS = "EPSG:32631"


def write_sar(path: Path, data: np.ndarray, nodata: float | None = float("nan"),
              descriptions: Sequence[str] | None = None, band_tags: Sequence[dict] | None = None,
              tiled: bool = False) -> Path:
    """A (C, H, W) array as a georeferenced GeoTIFF (EPSG:32631, 10 m) in the array's dtype."""
    data = np.asarray(data)
    data = data[None] if data.ndim == 2 else data
    extra = {"tiled": True, "blockxsize": 64, "blockysize": 64} if tiled else {}
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype.name, nodata=nodata, crs=CRS,
                       transform=from_origin(500000.0, 4800000.0, 10.0, 10.0), **extra) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or (), start=1):
            dst.set_band_description(i, d)
        for i, tags in enumerate(band_tags or (), start=1):
            dst.update_tags(i, **tags)
    return path


def linear_sigma0(shape: tuple[int, ...], seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """Linear σ⁰ float32: a field of mean backscatter 0.005…0.2 (−23…−7 dB) with 4-look speckle, plus
    ``noise`` (σ of a zero-mean Gaussian: what thermal-noise removal leaves, some pixels negative)."""
    rng = np.random.default_rng(seed)
    mean = 10 ** rng.uniform(-2.3, -0.7, shape)
    p = mean * rng.gamma(4.0, 0.25, shape)
    if noise:
        p = p + rng.normal(0.0, noise, shape)
    return p.astype(np.float32)


def db_sigma0(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """σ⁰ in dB float32 (``linear_sigma0`` without noise, through 10·log10)."""
    return (10.0 * np.log10(linear_sigma0(shape, seed))).astype(np.float32)


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of the bytes of ``src`` written to ``dst`` (a download cut short)."""
    raw = src.read_bytes()
    dst.write_bytes(raw[:int(len(raw) * keep)])
    return dst


def vv_checkpoint(path: Path, tile: int = 64) -> Path:
    """A small untrained VV-only SAR → RGB U-Net generator checkpoint (tile ``tile``)."""
    from sarkit.models.blocks import build_unet
    from sarkit.models.checkpoint import save_network
    from sarkit.raster.norm import optical_normalization, sar_normalization

    kw = {"in_channels": 1, "out_channels": 3, "num_downs": 5, "ngf": 4}
    return save_network(path, build_unet(**kw).eval(), "generator", "unet", kw,
                        {"model": "pix2pix", "direction": "sar2opt", "in_norm": sar_normalization(("VV",)).to_dict(),
                         "out_norm": optical_normalization().to_dict(), "tile_size": tile, "run": "vv"})
