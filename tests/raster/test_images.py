"""Tests of image files as a raster source (sarkit/raster/images.py)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning

from sarkit.errors import InputError
from sarkit.raster.grid import PixelWindow
from sarkit.raster.images import (IMAGE_UNITS, ImageSource, image_normalization, is_gray, is_image_dataset,
                                  is_image_file, source_for, value_range, write_image)
from sarkit.raster.norm import sar_normalization
from sarkit.raster.source import GeoTiffSource, SceneReader


def gray(h: int = 24, w: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def test_gray_sar_stored_as_three_equal_channels_is_one_channel(tmp_path):
    g = gray()
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "sar12.png")  # as the Texas set ships SAR
    with ImageSource(tmp_path / "sar12.png", "sar") as src:
        assert src.gray and src.band_names == ("VV",) and src.units == IMAGE_UNITS and src.top == 255
        r = src.read(src.grid.window)
        assert r.values.shape == (1, 24, 40) and r.valid.all()
        np.testing.assert_array_equal(r.values[0], g.astype(np.float32))
        assert "one channel" in src.units_note


def test_sar_with_one_different_pixel_keeps_its_channels_and_optical_is_never_collapsed(tmp_path):
    g = gray()
    rgb = np.stack([g] * 3, -1)
    rgb[3, 4, 2] ^= 1
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "b.png")
    with ImageSource(tmp_path / "a.png", "sar") as src:
        assert not src.gray and len(src.band_names) == 3
    with ImageSource(tmp_path / "b.png", "optical") as src:
        assert not src.gray and src.band_names == ("B4", "B3", "B2")


def test_mode_l_png_is_vv_and_a_polarisation_in_the_name_wins(tmp_path):
    Image.fromarray(gray()).save(tmp_path / "ROIs1158_spring_s1_90_p268.png")
    Image.fromarray(gray()).save(tmp_path / "x_VH.png")
    with ImageSource(tmp_path / "ROIs1158_spring_s1_90_p268.png", "sar") as a, \
            ImageSource(tmp_path / "x_VH.png", "sar") as b:
        assert a.band_names == ("VV",) and b.band_names == ("VH",) and not a.gray


def test_16_bit_range_and_alpha_band_dropped(tmp_path):
    data = np.random.default_rng(1).integers(0, 65536, (3, 16, 16)).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "o.tif", "w", driver="GTiff", width=16, height=16, count=3,
                           dtype="uint16") as dst:
            dst.write(data)
    with ImageSource(tmp_path / "o.tif", "optical") as src:
        assert src.top == 65535 and src.normalization.hi == (65535.0,) * 3
    rgba = np.dstack([np.stack([gray(16, 16)] * 3, -1), np.full((16, 16), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    with ImageSource(tmp_path / "rgba.png", "sar") as src:
        assert src.gray and src.band_names == ("VV",)


def test_float_image_has_no_fixed_range():
    assert value_range("uint8") == 255 and value_range("uint16") == 65535
    with pytest.raises(InputError, match="float32 values; image files must be 8-bit"):
        value_range("float32", "scene x.tif")


def test_outside_pixels_are_nodata_and_a_part_is_its_own_grid(tmp_path):
    a = np.zeros((3, 8, 16), np.uint8)
    a[:, :, 8:] = 200
    write_image(tmp_path / "ab.png", a)
    with ImageSource(tmp_path / "ab.png", "optical", part=PixelWindow(0, 8, 8, 8)) as src:
        assert (src.grid.height, src.grid.width) == (8, 8)
        r = src.read(PixelWindow(-2, 4, 4, 6))
        assert not r.valid[:2].any() and not r.valid[:, 4:].any() and r.valid[2:, :4].all()
        assert np.all(r.values[:, 2:, :4] == 200)


def test_declared_nodata_is_nodata(tmp_path):
    a = gray(8, 8)
    a[0, 0] = 7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "n.tif", "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                           nodata=7) as dst:
            dst.write(a[None])
    with ImageSource(tmp_path / "n.tif", "sar") as src:
        r = src.read(src.grid.window)
        assert not r.valid[0, 0] and math.isnan(r.values[0, 0, 0]) and r.valid.sum() == (a != 7).sum()


def test_is_gray_reads_in_blocks_and_stops_at_a_difference(tmp_path, monkeypatch):
    import sarkit.raster.images as im

    monkeypatch.setattr(im, "_GRAY_ROWS", 4)
    g = gray(16, 8)
    rgb = np.stack([g] * 3, -1)
    rgb[13, 0, 1] ^= 1
    Image.fromarray(rgb).save(tmp_path / "a.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        src = rasterio.open(tmp_path / "a.png")
    with src:
        assert not is_gray(src)
        assert is_gray(src, part=PixelWindow(0, 0, 12, 8))


def test_image_kinds_and_the_source_for_a_normalisation(tmp_path):
    write_image(tmp_path / "a.png", gray(8, 8)[None], tags={"units": "image"})
    assert is_image_file("x.PNG") and is_image_file("x.jpeg") and not is_image_file("x.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "a.png") as ds:
            assert is_image_dataset(ds)
        with rasterio.open(tmp_path / "t.tif", "w", driver="GTiff", width=8, height=8, count=1,
                           dtype="uint8") as dst:
            dst.write(gray(8, 8)[None])
        with rasterio.open(tmp_path / "t.tif") as ds:
            assert not is_image_dataset(ds)  # an untagged TIFF without CRS is not taken for an image
    norm = image_normalization("sar", ["VV"], 255)
    with source_for(tmp_path / "a.png", norm) as s:
        assert isinstance(s, ImageSource)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        ds = rasterio.open(tmp_path / "a.png")
    with ds:
        reader = SceneReader(ds, norm)
        x, valid = reader.strip(0, 8)
        np.testing.assert_allclose(x[0], gray(8, 8) / 127.5 - 1.0, atol=1e-6)
        with pytest.raises(InputError, match="is an image file .*but the checkpoint reads σ⁰ in dB"):
            SceneReader(ds, sar_normalization(("VV",)))  # a Sentinel checkpoint refuses 8-bit images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with source_for(tmp_path / "t.tif", sar_normalization(("VV",)), units="db") as s:
            assert isinstance(s, GeoTiffSource)


def test_an_image_without_band_names_takes_the_normalisations_by_position(tmp_path):
    Image.fromarray(gray(8, 8)).save(tmp_path / "patch.png")  # no polarisation in the name: VV by the rule
    with source_for(tmp_path / "patch.png", image_normalization("sar", ["VH"], 255)) as s:
        assert s.band_names == ("VH",)  # the checkpoint was trained on VH images (Texas): same channel
    with source_for(tmp_path / "patch.png", image_normalization("sar", ["VV", "VH"], 255)) as s:
        assert s.band_names == ("VV",)  # a different channel count keeps the image's own names
