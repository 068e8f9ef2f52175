"""Tests of sarkit.raster.stack: one raster from several files (per polarisation, per band at mixed resolutions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sarkit.errors import InputError
from sarkit.raster.grid import PixelWindow
from sarkit.raster.source import GeoTiffSource
from sarkit.raster.stack import StackedSource, open_source, s2_band_in_name, scene_files, scene_stem


def band_file(path: Path, data: np.ndarray, px: float, dtype: str = "uint16", nodata=None) -> Path:
    """A one-band EPSG:32633 GeoTIFF of ``data`` (h, w) with ``px`` m pixels, from the same corner."""
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1, dtype=dtype,
                       crs="EPSG:32633", transform=from_origin(404400, 5342400, px, px), nodata=nodata) as dst:
        dst.write(data.astype(dtype)[None])
    return path


def test_band_names_come_from_file_names_bigearthnet_style():
    assert s2_band_in_name("S2A_MSIL2A_20170613T101031_87_48_B04.tif") == "B4"
    assert s2_band_in_name("S2A_MSIL2A_20170613T101031_87_48_B8A.tif") == "B8A"
    assert s2_band_in_name("x_B12.tif") == "B12" and s2_band_in_name("x_b01.tif") == "B1"
    assert s2_band_in_name("x_B13.tif") is None and s2_band_in_name("B02_B03.tif") is None


def test_mixed_resolutions_are_read_onto_the_finest_grid_bilinear(tmp_path):
    b4 = band_file(tmp_path / "p_B04.tif", np.full((12, 12), 1000), 10)
    ramp = np.tile(np.array([1000, 2000, 3000], np.float64), (3, 1))  # 40 m columns of 1000, 2000, 3000
    b5 = band_file(tmp_path / "p_B05.tif", np.repeat(np.repeat(ramp, 1, 0), 1, 1)[:3, :3], 40)
    b1 = band_file(tmp_path / "p_B01.tif", np.full((2, 2), 500), 60)
    with StackedSource([b1, b4, b5], "optical") as src:
        assert src.band_names == ("B1", "B4", "B5")
        assert (src.grid.width, src.grid.height) == (12, 12) and src.grid.transform.a == 10
        assert src.resampled == [b1, b5]
        stored = src.read_stored(PixelWindow(0, 0, 12, 12), ["B4", "B1", "B5"])
        assert stored.dtype == np.uint16 and stored.shape == (3, 12, 12)
        assert (stored[0] == 1000).all() and (stored[1] == 500).all()
        row = stored[2, 6].astype(float)
        assert row[0] == 1000 and row[-1] == 3000  # edges of the 40 m pixels keep their values
        assert np.all(np.diff(row) >= 0) and 1000 < row[5] < 3000  # bilinear in between, not nearest steps
        assert len(set(row.tolist())) > 3
        reading = src.read(PixelWindow(0, 0, 4, 4), ["B4"])
        assert np.allclose(reading.values, 0.1) and reading.valid.all()


def test_grid_named_by_a_band_and_names_given(tmp_path):
    b4 = band_file(tmp_path / "a.tif", np.full((12, 12), 1000), 10)
    b5 = band_file(tmp_path / "b.tif", np.full((6, 6), 2000), 20)
    with StackedSource([b4, b5], "optical", names=["B4", "B5"], grid="B5") as src:
        assert src.grid.width == 6 and src.grid.transform.a == 20 and src.resampled == [b4]
    with pytest.raises(InputError, match="3 band name.s. given .* for 2 band"):
        StackedSource([b4, b5], "optical", names=["B4", "B5", "B6"])
    with pytest.raises(InputError, match="--grid B9"):
        StackedSource([b4, b5], "optical", names=["B4", "B5"], grid="B9")
    with pytest.raises(InputError, match="more than one file"):
        StackedSource([b4, b5], "optical", names=["B4", "b4"])


def test_sar_one_file_per_polarisation(tmp_path):
    rng = np.random.default_rng(0)
    vv = band_file(tmp_path / "scene_VV.tif", rng.uniform(-20, -5, (16, 16)), 10, "float32")
    vh = band_file(tmp_path / "scene_VH.tif", rng.uniform(-25, -10, (16, 16)), 10, "float32")
    src = open_source(f"{vv},{vh}", "sar", units="auto")
    assert isinstance(src, StackedSource) and src.band_names == ("VV", "VH") and src.units == "db"
    r = src.read(PixelWindow(0, 0, 16, 16), ["VH"])
    with rasterio.open(vh) as d:
        assert np.allclose(r.values[0], d.read(1))
    src.close()
    assert scene_stem(f"{vv},{vh}") == "scene"
    third = band_file(tmp_path / "scene_HH.tif", rng.uniform(-20, -5, (16, 16)), 10, "float32")
    with pytest.raises(InputError, match="at most 2 polarisations"):
        StackedSource([vv, vh, third], "sar")


def test_sar_files_in_different_units_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    vv = band_file(tmp_path / "s_VV.tif", rng.uniform(-20, -5, (16, 16)), 10, "float32")
    vh = band_file(tmp_path / "s_VH.tif", rng.uniform(0.005, 0.1, (16, 16)), 10, "float32")  # linear power
    with StackedSource([vv, vh], "sar", units="auto") as src:
        with pytest.raises(InputError, match="different SAR units"):
            src.units


def test_scene_files_and_one_file_stays_a_geotiff_source(tmp_path):
    one = band_file(tmp_path / "x,y.tif", np.full((4, 4), 7), 10)  # a comma in an existing name: one file
    assert scene_files(str(one)) == (one,)
    assert scene_files("a.tif, b.tif") == (Path("a.tif"), Path("b.tif"))
    assert scene_files(["a.tif,b.tif", "c.tif"]) == (Path("a.tif"), Path("b.tif"), Path("c.tif"))
    with open_source(one, "optical", names=["B4"]) as src:
        assert isinstance(src, GeoTiffSource)
