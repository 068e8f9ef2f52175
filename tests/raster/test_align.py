"""Tests of sarkit.raster.align: grid comparison with tolerance, offset reads and on-the-fly reprojection."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from sarkit.raster.align import AlignedReader
from sarkit.raster.grid import GridSpec, overlap_bounds, pixel_offset, same_grid
from sarkit.errors import InputError
from sarkit.raster.grid import PixelWindow
from sarkit.raster.norm import S2_BANDS
from sarkit.data.tiling import TileOptions, tile_scene

UTM = CRS.from_epsg(32631)
WGS84 = CRS.from_epsg(4326)
PIX = 8.983152841195215e-05


def write(path, data, crs, transform, nodata=None, descriptions=None):
    data = np.asarray(data)
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return path


def test_grids_equal_tolerates_tiny_pixel_size_difference():
    a = GridSpec(WGS84, Affine(PIX, 0, -0.78, 0, -PIX, 38.12), 512, 512)
    b = GridSpec(WGS84, Affine(PIX + 1e-19, 0, -0.78, 0, -PIX - 1e-19, 38.12), 512, 512)
    assert a.transform != b.transform and same_grid(a, b)


@pytest.mark.parametrize("other", [
    Affine(PIX * (1 + 1e-6), 0, -0.78, 0, -PIX, 38.12),   # pixel size off by 1e-6 relative
    Affine(PIX, 0, -0.78 + PIX / 2, 0, -PIX, 38.12),      # half a pixel shift
    Affine(PIX, 0, -0.78, 0, -PIX, 38.12 + 1e-5 * PIX),   # origin off by 1e-5 pixel
])
def test_grids_differing_beyond_tolerance_are_not_equal(other):
    a = GridSpec(WGS84, Affine(PIX, 0, -0.78, 0, -PIX, 38.12), 512, 512)
    assert not same_grid(a, GridSpec(WGS84, other, 512, 512))


def test_grids_in_other_crs_or_size_are_not_equal():
    t = Affine(PIX, 0, -0.78, 0, -PIX, 38.12)
    assert not same_grid(GridSpec(WGS84, t, 512, 512), GridSpec(CRS.from_epsg(4258), t, 512, 512))
    assert not same_grid(GridSpec(WGS84, t, 512, 512), GridSpec(WGS84, t, 512, 511))


def test_pixel_offset_of_shifted_aligned_grid():
    ref = GridSpec(UTM, from_origin(500000, 5600000, 10, 10), 100, 100)
    big = GridSpec(UTM, from_origin(500000 - 30, 5600000 + 50, 10, 10), 200, 200)
    assert pixel_offset(ref, big) == (5, 3)


def test_tiny_pixel_difference_reads_values_identically(tmp_path):
    rng = np.random.default_rng(0)
    s1 = write(tmp_path / "s1.tif", rng.uniform(-20, -5, (2, 128, 128)).astype(np.float32), WGS84,
               Affine(PIX, 0, -0.78, 0, -PIX, 38.12), nodata=float("nan"))
    lab_t = Affine(8.983152841195184e-05, 0, -0.78, 0, -8.983152841195184e-05, 38.12)
    s2 = rng.integers(1, 4000, (13, 128, 128)).astype(np.int16)
    labels = rng.integers(-1, 2, (128, 128)).astype(np.int16)
    write(tmp_path / "s2.tif", s2, WGS84, lab_t, nodata=0, descriptions=S2_BANDS)
    write(tmp_path / "lab.tif", labels, WGS84, lab_t)
    out = tmp_path / "t"
    tile_scene(s1, tmp_path / "s2.tif", tmp_path / "lab.tif", out, TileOptions(size=64, max_nodata=1.0))
    with rasterio.open(out / "s2" / "s1_r00064_c00000.tif") as t:
        np.testing.assert_array_equal(t.read(), s2[:, 64:128, 0:64])
    with rasterio.open(out / "labels" / "s1_r00064_c00000.tif") as t:
        np.testing.assert_array_equal(t.read(1), np.where(labels < 0, 255, labels)[64:128, 0:64])


def test_offset_grid_is_read_through_a_shifted_window(tmp_path):
    rng = np.random.default_rng(1)
    s1 = write(tmp_path / "s1.tif", np.full((1, 64, 64), -10, np.float32), UTM, from_origin(500000, 5600000, 10, 10))
    big = rng.integers(1, 4000, (13, 100, 100)).astype(np.uint16)
    s2 = write(tmp_path / "s2.tif", big, UTM, from_origin(500000 - 100, 5600000 + 200, 10, 10), nodata=0)
    with rasterio.open(s1) as src:
        ref = GridSpec.of(src)
    with AlignedReader(s2, ref, Resampling.bilinear, 0) as r:
        assert not r.resampled
        np.testing.assert_array_equal(r.read(PixelWindow(8, 16, 32, 32)), big[:, 28:60, 26:58])


def _pattern(lon: np.ndarray, lat: np.ndarray, lon0: float, lat0: float, step: float) -> np.ndarray:
    """A checkerboard-like block code: distinct value per block of ``step`` degrees."""
    return (1 + np.floor((lon - lon0) / step) * 7 + np.floor((lat0 - lat) / step) * 3).astype(np.int64)


def test_reprojected_pattern_lands_on_the_right_s1_pixels(tmp_path):
    # S1: 10 m UTM 31N grid, 128×128 pixels near 3°E 50.5°N
    s1_t = from_origin(500000, 5595000, 10, 10)
    s1 = write(tmp_path / "s1.tif", np.full((2, 128, 128), -10, np.float32), UTM, s1_t)
    # S2: EPSG:4326 raster covering the S1 area with blocks of 0.004° (≈ 28–40 S1 pixels)
    to_ll = Transformer.from_crs(UTM, WGS84, always_xy=True)
    lon_min, lat_max = to_ll.transform(500000 - 200, 5595000 + 200)
    lon0, lat0, step, res = lon_min, lat_max, 0.004, 0.0001
    n = 250
    cols, rows = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    code = _pattern(lon0 + cols * res, lat0 - rows * res, lon0, lat0, step)
    s2 = np.repeat((code * 10).astype(np.uint16)[None], 13, axis=0)
    write(tmp_path / "s2.tif", s2, WGS84, from_origin(lon0, lat0, res, res), nodata=0)
    write(tmp_path / "lab.tif", code.astype(np.uint8), WGS84, from_origin(lon0, lat0, res, res), nodata=255)
    out = tmp_path / "t"
    summary = tile_scene(s1, tmp_path / "s2.tif", tmp_path / "lab.tif", out, TileOptions(size=128))
    assert summary.written == 1
    with rasterio.open(out / "s2" / "s1_r00000_c00000.tif") as t:
        got = t.read(4).astype(np.int64)
    with rasterio.open(out / "labels" / "s1_r00000_c00000.tif") as t:
        got_lab = t.read(1).astype(np.int64)
    # expected block code at every S1 pixel centre
    c, r = np.meshgrid(np.arange(128) + 0.5, np.arange(128) + 0.5)
    x, y = s1_t.c + c * 10, s1_t.f - r * 10
    lon, lat = to_ll.transform(x, y)
    expected = _pattern(lon, lat, lon0, lat0, step)
    # away from block edges (> 2 S2 pixels) bilinear equals the block value; nearest labels match everywhere there
    fx, fy = ((lon - lon0) / step) % 1, ((lat0 - lat) / step) % 1
    margin = 2 * res / step
    inner = (fx > margin) & (fx < 1 - margin) & (fy > margin) & (fy < 1 - margin)
    assert inner.mean() > 0.5 and len(np.unique(expected)) >= 9
    np.testing.assert_array_equal(got[inner], expected[inner] * 10)
    np.testing.assert_array_equal(got_lab[inner], expected[inner])


def test_reprojected_reader_fills_outside_footprint(tmp_path):
    s1 = write(tmp_path / "s1.tif", np.full((1, 64, 64), -10, np.float32), UTM, from_origin(500000, 5600000, 10, 10))
    # another UTM zone, covering only the left half of the S1 scene
    other = CRS.from_epsg(32630)
    to_other = Transformer.from_crs(UTM, other, always_xy=True)
    x0, y0 = to_other.transform(500000 - 100, 5600000 + 100)
    x1, _ = to_other.transform(500000 + 320, 5600000)
    w = int((x1 - x0) / 10)
    write(tmp_path / "s2.tif", np.full((13, 120, w), 500, np.uint16), other, from_origin(x0, y0, 10, 10), nodata=0)
    with rasterio.open(s1) as src:
        ref = GridSpec.of(src)
    with AlignedReader(tmp_path / "s2.tif", ref, Resampling.bilinear, 0) as r:
        assert r.resampled
        a = r.read(PixelWindow(0, 0, 64, 64), [1])[0]
    assert (a[:, :20] == 500).all() and (a[:, 40:] == 0).all()  # grid convergence tilts the edge


def test_no_overlap_raises_input_error(tmp_path):
    ref = GridSpec(UTM, from_origin(500000, 5600000, 10, 10), 64, 64)
    far = write(tmp_path / "far.tif", np.ones((1, 10, 10), np.uint16), WGS84, from_origin(100, 10, 0.01, 0.01))
    with rasterio.open(far) as src:
        assert overlap_bounds(ref, GridSpec.of(src)) is None
    with pytest.raises(InputError, match="does not overlap"):
        AlignedReader(far, ref, Resampling.nearest, 0)


def test_manifest_crs_is_the_s1_crs_after_reprojection(tmp_path):
    s1 = write(tmp_path / "s1.tif", np.full((1, 64, 64), -10, np.float32), UTM, from_origin(500000, 5600000, 10, 10))
    to_ll = Transformer.from_crs(UTM, WGS84, always_xy=True)
    lon0, lat0 = to_ll.transform(499000, 5601000)
    write(tmp_path / "s2.tif", np.full((13, 300, 300), 700, np.uint16), WGS84,
          from_origin(lon0, lat0, 0.0001, 0.0001), nodata=0)
    tile_scene(s1, tmp_path / "s2.tif", None, tmp_path / "t", TileOptions(size=64))
    with open(tmp_path / "t" / "manifest.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["crs"] == "EPSG:32631"
    with rasterio.open(tmp_path / "t" / row["s2_path"]) as t:
        assert t.crs == UTM and t.transform == from_origin(500000, 5600000, 10, 10) and (t.read() == 700).all()
