"""What the raster layer makes of a user's Sentinel-1 file: the SAR unit rule (linear power with negative pixels,
dB, neither), refusing what cannot be Sentinel-1, ±inf as nodata, the one band naming rule, and truncated files."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling

from raster.sarfiles import db_sigma0, linear_sigma0, truncated_copy, write_sar
from sarkit.errors import InputError
from sarkit.raster.align import AlignedReader, read_bands
from sarkit.raster.grid import GridSpec, PixelWindow
from sarkit.raster.norm import detect_s1_units, sar_normalization, sar_to_db, units_of, value_spread
from sarkit.raster.source import GeoTiffSource, Modality, SceneReader, sar_band_names
from sarkit.reporting import RecordingReporter

# ------------------------------------------------------------------------------------------------- the unit rule


def test_linear_power_with_negative_pixels_after_noise_removal_is_linear():
    p = linear_sigma0((2, 96, 96), seed=1, noise=0.004)
    assert (p < 0).mean() > 0.01  # thermal-noise removal left negative powers
    assert detect_s1_units(p) == "linear"


def test_db_is_db_and_nonfinite_values_are_left_out():
    db = db_sigma0((2, 96, 96), seed=2)
    assert detect_s1_units(db) == "db"
    lin = linear_sigma0((1, 64, 64), seed=3)
    lin[0, :8] = np.inf
    lin[0, 8:16] = -np.inf
    lin[0, 16:24] = np.nan
    assert detect_s1_units(lin) == "linear"
    assert value_spread(lin).count == 40 * 64
    assert units_of(value_spread(np.full(5, np.nan))) == "db"  # nothing valid: nothing to convert


@pytest.mark.parametrize("values, seen", [
    (np.random.default_rng(0).integers(0, 256, 4096).astype(np.float32), "median 12"),  # 8-bit display values
    (np.random.default_rng(0).uniform(500, 4000, 4096).astype(np.float32), "median 2"),  # S2 DN as float
    (np.random.default_rng(0).uniform(-200, -100, 4096).astype(np.float32), "median -1"),  # far below any dB
])
def test_values_fitting_neither_unit_are_refused_saying_what_was_seen(values, seen):
    with pytest.raises(InputError, match="--s1-units") as err:
        detect_s1_units(values, what="Sentinel-1 raster x.tif")
    msg = str(err.value)
    assert "x.tif" in msg and seen in msg and "\n" not in msg


def test_real_scenes_are_db_and_their_linear_power_with_noise_is_linear(realdata):
    files = sorted(realdata.glob("sen1floods11/S1Hand/*.tif")) + sorted(realdata.glob("sen12mscr_glfcr/s1/*.tif"))
    files += sorted(realdata.glob("bigearthnet/BigEarthNet-S1-v1.0/*/*_V?.tif"))
    assert files
    rng = np.random.default_rng(0)
    for f in files:
        with rasterio.open(f) as src:
            db = src.read().astype(np.float32)
        assert detect_s1_units(db) == "db", f
        noisy = 10 ** (db / 10) + rng.normal(0.0, 0.003, db.shape).astype(np.float32)
        assert detect_s1_units(noisy) == "linear", f


def test_sar_to_db_makes_inf_nodata():
    out = sar_to_db(np.array([[[np.inf, -np.inf, -12.0]]], dtype=np.float32), "db")
    assert np.isnan(out[0, 0, :2]).all() and out[0, 0, 2] == -12.0


# ---------------------------------------------------------------------------------------------- the source's units


def test_source_detects_linear_power_with_negatives_and_says_how(tmp_path):
    path = write_sar(tmp_path / "lin.tif", linear_sigma0((2, 160, 160), seed=4, noise=0.004))
    with GeoTiffSource(path, Modality.SAR, units="auto") as src:
        assert src.units == "linear"
        assert src.units_note.startswith("linear power (detected: ") and "median 0.0" in src.units_note
        r = src.read(PixelWindow(0, 0, 160, 160))
        assert -30 < float(np.nanmedian(r.values)) < -10  # dB, not "dB near 0"
    with GeoTiffSource(path, Modality.SAR, units="db") as src:
        assert src.units == "db" and src.units_note == "dB (given)"


def test_scene_reader_reports_the_units_it_reads_in(tmp_path):
    path = write_sar(tmp_path / "lin.tif", linear_sigma0((2, 64, 64), seed=5, noise=0.004))
    rep = RecordingReporter()
    with rasterio.open(path) as ds:
        reader = SceneReader(ds, sar_normalization(units="auto"))
        assert reader.units == "linear" and rep.infos == []
        reader.report_units(rep)
    assert len(rep.infos) == 1 and "lin.tif" in rep.infos[0] and "linear power (detected" in rep.infos[0]


# ------------------------------------------------------------------------------------------ not Sentinel-1 refused


def test_thirteen_band_optical_file_is_not_sar(tmp_path):
    dn = np.random.default_rng(6).integers(1, 5000, (13, 64, 64)).astype(np.uint16)
    path = write_sar(tmp_path / "s2.tif", dn, nodata=0)
    for units in ("auto", "db"):  # no unit makes 13 bands Sentinel-1
        with pytest.raises(InputError) as err:
            GeoTiffSource(path, Modality.SAR, units=units, label=f"scene {path}")
        msg = str(err.value)
        assert all(w in msg for w in (str(path), "13 bands", "uint16", "values 1", "gdal_translate -b 1 -b 2"))


def test_three_float_bands_are_not_sar(tmp_path):
    path = write_sar(tmp_path / "three.tif", db_sigma0((3, 64, 64), seed=7))
    with pytest.raises(InputError, match="3 bands, float32"):
        GeoTiffSource(path, Modality.SAR, units="auto")


def test_integer_sar_is_refused_unless_its_unit_is_given(tmp_path):
    u8 = np.random.default_rng(8).integers(0, 256, (2, 64, 64)).astype(np.uint8)
    path = write_sar(tmp_path / "s1_8bit.tif", u8, nodata=None)
    with pytest.raises(InputError) as err:
        GeoTiffSource(path, Modality.SAR, units="auto")
    msg = str(err.value)
    assert all(w in msg for w in ("s1_8bit.tif", "2 bands", "uint8", "values 0", "--s1-units"))
    with GeoTiffSource(path, Modality.SAR, units="db") as src:  # the user says what the integers are
        assert src.read(PixelWindow(0, 0, 64, 64)).values.dtype == np.float32


def test_float_values_of_neither_unit_are_refused_at_detection_unless_given(tmp_path):
    path = write_sar(tmp_path / "dn.tif", np.random.default_rng(9).uniform(500, 4000, (2, 64, 64)).astype("f4"))
    src = GeoTiffSource(path, Modality.SAR, units="auto", label=f"scene {path.name}")
    with pytest.raises(InputError, match=r"scene dn\.tif \(2 bands, float32\) does not look like Sentinel-1"):
        src.units
    src.close()
    with GeoTiffSource(path, Modality.SAR, units="linear") as given:
        assert given.units == "linear"


def test_tiles_named_by_the_caller_are_not_checked_as_scenes(tmp_path):
    path = write_sar(tmp_path / "t.tif", db_sigma0((3, 32, 32), seed=10))
    with GeoTiffSource(path, Modality.SAR, names=["VV", "VH", "X"], units="db") as src:
        assert src.band_names == ("VV", "VH", "X")


# ------------------------------------------------------------------------------------------------------ ±inf


@pytest.mark.parametrize("nodata", [float("nan"), -9999.0, None])
def test_inf_is_nodata_in_the_valid_mask_whatever_the_declared_nodata(tmp_path, nodata):
    db = db_sigma0((2, 32, 32), seed=11)
    db[0, 0, :4] = np.inf
    db[1, 1, :4] = -np.inf
    path = write_sar(tmp_path / "inf.tif", db, nodata=nodata)
    with GeoTiffSource(path, Modality.SAR, units="auto") as src:
        r = src.read(PixelWindow(0, 0, 32, 32))
    assert not r.valid[0, :4].any() and not r.valid[1, :4].any() and r.valid[2:].all()
    assert np.isfinite(r.values[:, r.valid]).all() and not np.isinf(r.values).any()


# ------------------------------------------------------------------------------------------------ band naming


@pytest.mark.parametrize("name, count, descriptions, band_tags, expected", [
    ("s1.tif", 1, None, None, ["VV"]),
    ("s1.tif", 2, None, None, ["VV", "VH"]),
    ("s1.tif", 1, ["Band 1"], None, ["VV"]),  # a generic description names nothing
    ("s1.tif", 2, ["band_1", "band_2"], None, ["VV", "VH"]),
    ("s1.tif", 1, ["Sigma0_VH_db"], None, ["VH"]),  # SNAP's descriptions
    ("s1.tif", 2, ["HH", "HV"], None, ["HH", "HV"]),
    ("s1.tif", 1, None, [{"POLARISATION": "VH"}], ["VH"]),
    ("patch_87_48_VH.tif", 1, None, None, ["VH"]),  # BigEarthNet-S1: one file per polarisation
    ("vv_vh.tif", 1, None, None, ["VV"]),  # two polarisations in the name: says nothing
    ("s1.tif", 1, ["backscatter"], None, ["backscatter"]),
])
def test_one_sar_band_naming_rule(tmp_path, name, count, descriptions, band_tags, expected):
    path = write_sar(tmp_path / name, db_sigma0((count, 16, 16)), descriptions=descriptions, band_tags=band_tags)
    with rasterio.open(path) as ds:
        assert sar_band_names(ds) == expected
    with GeoTiffSource(path, Modality.SAR, units="auto") as src:
        assert list(src.band_names) == expected


# ---------------------------------------------------------------------------------------- truncated and corrupt


def test_truncated_file_read_names_file_and_window(tmp_path):
    full = write_sar(tmp_path / "full.tif", db_sigma0((2, 256, 256), seed=12))
    cut = truncated_copy(full, tmp_path / "cut.tif", 0.5)
    with GeoTiffSource(cut, Modality.SAR, units="db", label="scene cut.tif") as src:
        src.read(PixelWindow(0, 0, 32, 256))  # the first rows are still there
        with pytest.raises(InputError) as err:
            src.read(PixelWindow(192, 0, 64, 256))
    msg = str(err.value)
    assert msg.startswith("scene cut.tif: reading rows 192–256, columns 0–256 failed")
    assert str(cut) in msg and "truncated or corrupt" in msg and "\n" not in msg


def test_truncated_file_decimated_and_warped_reads_name_the_file(tmp_path):
    cut = truncated_copy(write_sar(tmp_path / "full.tif", db_sigma0((1, 256, 256), seed=13)), tmp_path / "c.tif")
    with rasterio.open(cut) as ds:
        with pytest.raises(InputError, match=r"raster: reading the whole raster failed .*c\.tif is truncated"):
            read_bands(ds, [1], out_shape=(1, 64, 64), resampling=Resampling.nearest)
        ref = GridSpec.of(ds)
    coarse = GridSpec(ref.crs, ref.transform * ref.transform.scale(2.0), 128, 128)
    with AlignedReader(cut, coarse, Resampling.bilinear, float("nan"), what="prediction c.tif") as rd:
        assert rd.resampled
        with pytest.raises(InputError, match=r"prediction c\.tif: reading rows .*c\.tif is truncated or corrupt"):
            rd.read(PixelWindow(0, 0, 128, 128))


def test_corrupt_header_is_refused_on_open_naming_the_file(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(InputError, match=r"not a readable raster: .*bad\.tif"):
        GeoTiffSource(bad, Modality.SAR, units="auto", label="scene")
    with rasterio.open(write_sar(tmp_path / "ok.tif", db_sigma0((1, 8, 8)))) as ok:
        ref = GridSpec.of(ok)
    with pytest.raises(InputError, match=r"not a readable raster: .*bad\.tif"):
        AlignedReader(bad, ref, Resampling.nearest, float("nan"))
