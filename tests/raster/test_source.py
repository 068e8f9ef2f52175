"""Tests of the raster layer: the grid rule, the aligned reader's three paths, the physical reader, model range."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from sarkit.errors import InputError
from sarkit.raster.align import AlignedReader, ReadPath
from sarkit.raster.grid import GRID_TOL_PX, GridSpec, PixelWindow, pixel_offset, same_grid
from sarkit.raster.norm import optical_normalization, sar_normalization
from sarkit.raster.source import GeoTiffSource, Modality, Reading, SceneReader, to_model

UTM = CRS.from_epsg(32631)
ORIGIN = (500000.0, 5600000.0)


def write(path, data, crs=UTM, transform=None, nodata=None, descriptions=None, tags=None):
    data = np.asarray(data)
    data = data[None] if data.ndim == 2 else data
    kw = {"crs": crs, "transform": transform or from_origin(*ORIGIN, 10, 10)} if crs is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2],
                           count=data.shape[0], dtype=data.dtype.name, nodata=nodata, **kw) as dst:
            dst.write(data)
            for i, d in enumerate(descriptions or [], start=1):
                dst.set_band_description(i, d)
            if tags:
                dst.update_tags(**tags)
    return path


# ------------------------------------------------------------------------------------------------ the grid rule

def grid(dx=0.0, dy=0.0, pix=10.0, crs=UTM, h=512, w=512):
    """A 10 m grid whose origin is moved by (dx, dy) pixels."""
    return GridSpec(crs, Affine(pix, 0, ORIGIN[0] + dx * 10.0, 0, -pix, ORIGIN[1] - dy * 10.0), h, w)


def test_grids_within_the_pixel_tolerance_are_the_same():
    assert same_grid(grid(), grid(dx=GRID_TOL_PX / 2, dy=-GRID_TOL_PX / 2))
    # a pixel-size difference counts by its drift over the grid: 512 px × 1e-10 relative = 5e-8 px
    assert same_grid(grid(), grid(pix=10.0 * (1 + 1e-10)))


def test_grids_beyond_the_pixel_tolerance_differ():
    assert not same_grid(grid(), grid(dx=3 * GRID_TOL_PX))
    assert pixel_offset(grid(), grid(dy=0.5)) is None
    assert not same_grid(grid(), grid(pix=10.0 * (1 + 1e-8)))  # drifts 5e-6 px over 512 pixels


def test_grid_shifted_by_whole_pixels_gives_the_offset():
    ref, big = grid(h=100, w=100), grid(dx=-3, dy=-5, h=200, w=200)
    assert pixel_offset(ref, big) == (5, 3) and pixel_offset(big, ref) == (-5, -3)
    assert not same_grid(ref, big)
    assert pixel_offset(ref, grid(dx=-3 + GRID_TOL_PX / 2, dy=-5, h=200, w=200)) == (5, 3)


def test_grids_in_different_crs_never_share_pixels():
    assert pixel_offset(grid(), grid(crs=CRS.from_epsg(32632))) is None
    assert not same_grid(grid(), grid(crs=CRS.from_epsg(32632)))


# ------------------------------------------------------------------------------------------------ aligned reads

def test_aligned_reader_reads_directly_on_the_same_grid(tmp_path):
    data = np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64) + 1
    path = write(tmp_path / "a.tif", data, nodata=0)
    with AlignedReader(path, grid(h=64, w=64), Resampling.bilinear, 0) as r:
        assert r.path is ReadPath.DIRECT
        np.testing.assert_array_equal(r.read(PixelWindow(10, 20, 30, 40)), data[:, 10:40, 20:60])
        padded = r.read(PixelWindow(50, 50, 20, 20))  # runs past the raster: the rest is fill
        np.testing.assert_array_equal(padded[:, :14, :14], data[:, 50:, 50:])
        assert (padded[:, 14:, :] == 0).all() and (padded[:, :, 14:] == 0).all()


def test_aligned_reader_reads_a_shifted_grid_through_an_offset_window(tmp_path):
    data = np.arange(100 * 100, dtype=np.uint16).reshape(1, 100, 100) + 1
    data[0, 30, 30] = 9  # the source's nodata
    path = write(tmp_path / "big.tif", data, transform=from_origin(ORIGIN[0] - 70, ORIGIN[1] + 20, 10, 10), nodata=9)
    with AlignedReader(path, grid(h=64, w=64), Resampling.bilinear, 0) as r:
        assert r.path is ReadPath.OFFSET and r.offset == (2, 7)
        got = r.read(PixelWindow(0, 0, 64, 64))
    expected = data[:, 2:66, 7:71].copy()
    expected[expected == 9] = 0  # nodata becomes the fill
    np.testing.assert_array_equal(got, expected)


def test_aligned_reader_warps_a_coarser_grid_with_the_callers_resampling(tmp_path):
    coarse = np.arange(16 * 16, dtype=np.uint16).reshape(1, 16, 16) + 1
    path = write(tmp_path / "c.tif", coarse, transform=from_origin(*ORIGIN, 20, 20), nodata=0)
    with AlignedReader(path, grid(h=32, w=32), Resampling.nearest, 0) as r:
        assert r.path is ReadPath.WARPED and r.resampled
        got = r.read(PixelWindow(0, 0, 32, 32))
    np.testing.assert_array_equal(got[0], np.repeat(np.repeat(coarse[0], 2, axis=0), 2, axis=1))


def test_ungeoreferenced_rasters_are_read_pixel_for_pixel_or_refused(tmp_path):
    data = np.ones((1, 20, 30), np.uint16)
    path = write(tmp_path / "n.tif", data, crs=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with AlignedReader(path, grid(h=20, w=30), Resampling.nearest, 0) as r:
            assert r.path is ReadPath.DIRECT
            np.testing.assert_array_equal(r.read(PixelWindow(0, 0, 20, 30)), data)
        with pytest.raises(InputError, match="lack a CRS"):
            AlignedReader(path, grid(h=20, w=31), Resampling.nearest, 0)


# ------------------------------------------------------------------------------------------------ physical values

def test_sar_in_db_and_linear_power_read_as_db(tmp_path):
    rng = np.random.default_rng(0)
    db = rng.uniform(-24, -1, (2, 40, 50)).astype(np.float32)
    write(tmp_path / "db.tif", db, nodata=float("nan"), descriptions=("VV", "VH"))
    write(tmp_path / "lin.tif", np.power(10.0, db / 10.0).astype(np.float32), nodata=float("nan"))
    with GeoTiffSource(tmp_path / "db.tif", Modality.SAR, units="auto") as s:
        assert s.units == "db" and s.band_names == ("VV", "VH")
        r = s.read(s.grid.window, ["VH"])
        np.testing.assert_array_equal(r.values, db[1:])
    with GeoTiffSource(tmp_path / "lin.tif", Modality.SAR, units="auto") as s:
        assert s.units == "linear" and s.band_names == ("VV", "VH")  # two bands without descriptions
        np.testing.assert_allclose(s.read(s.grid.window).values, db, atol=1e-4)
        assert s.read(s.grid.window).valid.all()


def test_sar_nodata_nan_and_inf_are_masked(tmp_path):
    v = np.full((2, 8, 8), -10.0, np.float32)
    v[0, 1, 1] = -9999.0
    v[1, 2, 2] = np.inf
    v[0, 3, 3] = -np.inf
    v[1, 4, 4] = np.nan
    write(tmp_path / "s.tif", v, nodata=-9999.0)
    with GeoTiffSource(tmp_path / "s.tif", Modality.SAR) as s:
        r = s.read(PixelWindow(0, 0, 8, 8))
    bad = [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert sorted(zip(*np.nonzero(~r.valid))) == bad
    assert np.isnan(r.values[0, 1, 1]) and r.values[1, 1, 1] == -10.0  # NaN band by band, the other band kept
    # values that are not numbers although the raster's nodata is -9999 are stray; the declared one is not
    assert sorted(zip(*np.nonzero(r.stray))) == [(2, 2), (3, 3), (4, 4)]


def test_linear_power_zero_is_nodata(tmp_path):
    p = np.full((1, 4, 4), 0.01, np.float32)
    p[0, 0, 0] = 0.0
    write(tmp_path / "p.tif", p)
    with GeoTiffSource(tmp_path / "p.tif", Modality.SAR, units="linear") as s:
        r = s.read(s.grid.window)
    assert not r.valid[0, 0] and r.valid.sum() == 15 and r.values[0, 1, 1] == pytest.approx(-20.0)


def test_optical_dn_with_offset_from_tag_or_default_and_nodata(tmp_path):
    dn = np.full((3, 6, 6), 2000, np.uint16)
    dn[:, 0, 0] = 0
    dn[1, 5, 5] = 0
    write(tmp_path / "plain.tif", dn, nodata=None, descriptions=("B4", "B3", "B2"))
    write(tmp_path / "tagged.tif", dn, nodata=0, descriptions=("B4", "B3", "B2"), tags={"dn_offset": "-1000"})
    with GeoTiffSource(tmp_path / "plain.tif", Modality.OPTICAL, default_dn_offset=0.0) as s:
        r = s.read(s.grid.window, ["b2", "B4"])  # names are case-insensitive, in the order asked
        assert s.nodata == 0.0 and s.dn_offset == 0.0
        assert r.values[0, 2, 2] == pytest.approx(0.2) and not r.valid[0, 0] and r.valid[5, 5]
    with GeoTiffSource(tmp_path / "tagged.tif", Modality.OPTICAL, default_dn_offset=0.0) as s:
        r = s.read(s.grid.window)
        assert s.dn_offset == -1000.0 and r.values[0, 2, 2] == pytest.approx(0.1)
        assert not r.valid[5, 5] and np.isnan(r.values[1, 5, 5]) and r.values[0, 5, 5] == pytest.approx(0.1)
    with GeoTiffSource(tmp_path / "tagged.tif", Modality.OPTICAL, dn_offset=0.0) as s:
        assert s.read(s.grid.window).values[0, 2, 2] == pytest.approx(0.2)  # the caller's offset wins
        with pytest.raises(InputError, match="lacks band"):
            s.read(s.grid.window, ["B8"])


def test_outside_the_raster_is_nodata_but_not_stray(tmp_path):
    v = np.full((1, 10, 10), -5.0, np.float32)
    write(tmp_path / "s.tif", v, transform=from_origin(ORIGIN[0] + 50, ORIGIN[1], 10, 10))  # no nodata set
    with GeoTiffSource(tmp_path / "s.tif", Modality.SAR, grid=grid(h=10, w=10)) as s:
        assert s.path is ReadPath.OFFSET
        r = s.read(PixelWindow(0, 0, 10, 10))
    assert (~r.valid[:, :5]).all() and r.valid[:, 5:].all() and not r.stray.any()


# ------------------------------------------------------------------------------------------------ model range

def test_model_range_round_trip_and_fill():
    norm = optical_normalization(("B4", "B3"), (0.0, 0.3))

    values = np.array([[[0.0, 0.15, 0.3, np.nan]], [[0.06, 0.12, 0.24, 0.1]]], np.float32)
    valid = ~np.isnan(values).any(axis=0)
    x, ok = to_model(Reading(values, valid, np.zeros_like(valid)), norm)
    np.testing.assert_allclose(x[0, 0, :3], [-1.0, 0.0, 1.0], atol=1e-6)
    assert x[0, 0, 3] == -1.0 and x[1, 0, 3] == pytest.approx(2 * 0.1 / 0.3 - 1, abs=1e-6)
    np.testing.assert_array_equal(ok, [[True, True, True, False]])
    back = norm.decode(x)
    np.testing.assert_allclose(back[:, :, :3], values[:, :, :3], atol=1e-6)


def test_scene_reader_strips_in_model_range_and_missing_bands(tmp_path):
    db = np.full((2, 20, 30), -12.5, np.float32)
    db[1, 3, 4] = np.nan
    write(tmp_path / "s.tif", db, nodata=float("nan"), descriptions=("VV", "VH"))
    with rasterio.open(tmp_path / "s.tif") as src:
        reader = SceneReader(src, sar_normalization(("VH",), (-25.0, 0.0), units="auto"))
        x, valid = reader.strip(2, 5)
        assert reader.units == "db" and x.shape == (1, 5, 30)
        assert x[0, 1, 4] == -1.0 and not valid[1, 4] and valid.sum() == 5 * 30 - 1
        assert x[0, 0, 0] == pytest.approx(0.0)
        with pytest.raises(InputError, match="lacks band.*the checkpoint needs"):
            SceneReader(src, optical_normalization(("B4",)))
