"""Tests of sarkit.raster.norm: units, fixed-range normalisation, reflectance ↔ DN and band resolution."""

from __future__ import annotations

import numpy as np
import pytest

from sarkit.errors import InputError
from sarkit.raster.norm import (
    S2_BANDS,
    Normalization,
    band_names,
    check_integer_reflectance,
    db_to_linear,
    detect_s1_units,
    dn_offset_from_tags,
    dn_to_reflectance,
    linear_to_db,
    optical_normalization,
    check_range,
    reflectance_to_dn,
    resolve_bands,
    sar_normalization,
    sar_to_db,
)


def test_db_linear_round_trip_and_nonpositive_power():
    db = np.linspace(-30, 5, 50, dtype=np.float32)
    np.testing.assert_allclose(linear_to_db(db_to_linear(db)), db, atol=1e-4)
    out = linear_to_db(np.array([0.0, -1.0, 1.0, 0.1]))
    assert np.isnan(out[:2]).all() and out[2] == 0.0 and out[3] == pytest.approx(-10.0)


def test_detect_units():
    rng = np.random.default_rng(0)
    assert detect_s1_units(rng.uniform(0.001, 0.3, 1000)) == "linear"
    assert detect_s1_units(rng.uniform(-25, 0, 1000)) == "db"
    assert detect_s1_units(np.array([np.nan, np.nan])) == "db"


def test_sar_to_db_units_and_nodata():
    lin = np.array([[[0.1, 0.01], [-9999.0, 1.0]]], dtype=np.float32)
    out = sar_to_db(lin, "auto", nodata=-9999.0)
    np.testing.assert_allclose(out[0, 0], [-10.0, -20.0], atol=1e-5)
    assert np.isnan(out[0, 1, 0])
    db = np.array([[[-10.0, -3.0]]], dtype=np.float32)
    np.testing.assert_array_equal(sar_to_db(db, "db"), db)
    np.testing.assert_allclose(sar_to_db(np.array([[[0.1]]]), "linear"), [[[-10.0]]], atol=1e-5)


def test_encode_decode_round_trip_clipping_and_nan():
    n = sar_normalization(("VV", "VH"), (-25.0, 0.0))
    x = np.array([[[-25.0, -12.5, 0.0, np.nan]], [[-30.0, 5.0, -5.0, -20.0]]], dtype=np.float32)
    enc = n.encode(x)
    np.testing.assert_allclose(enc[0, 0, :3], [-1.0, 0.0, 1.0])
    assert np.isnan(enc[0, 0, 3])
    np.testing.assert_allclose(enc[1, 0, :2], [-1.0, 1.0])  # clipped
    dec = n.decode(enc)
    np.testing.assert_allclose(dec[0, 0, :3], x[0, 0, :3], atol=1e-5)
    np.testing.assert_allclose(dec[1, 0], [-25.0, 0.0, -5.0, -20.0], atol=1e-5)
    np.testing.assert_allclose(n.decode(np.array([[[2.0]], [[-3.0]]])), [[[0.0]], [[-25.0]]])


def test_normalization_dict_round_trip_and_select():
    n = optical_normalization(S2_BANDS, (0.0, 0.4), baseline_offset=True)
    m = Normalization.from_dict(n.to_dict())
    assert m == n and m.offset == -1000.0
    s = n.select(["B4", "B2"])
    assert s.bands == ("B4", "B2") and s.channels == 2 and s.hi == (0.4, 0.4)
    with pytest.raises(InputError):
        Normalization("sar", ("VV",), (0.0,), (-1.0,))
    with pytest.raises(InputError):
        sar_normalization(units="watts")


def test_reflectance_dn_round_trip():
    dn = np.array([0, 1, 1234, 10000, 65535], dtype=np.uint16)
    refl = dn_to_reflectance(dn)
    assert np.isnan(refl[0]) and refl[2] == pytest.approx(0.1234)
    back = reflectance_to_dn(refl)
    np.testing.assert_array_equal(back, dn)
    off = dn_to_reflectance(np.array([2234], np.uint16), offset=-1000)
    assert off[0] == pytest.approx(0.1234)
    np.testing.assert_array_equal(reflectance_to_dn(off, offset=-1000), [2234])
    # valid pixels never become the nodata value, and out-of-range values are clipped to the dtype
    np.testing.assert_array_equal(reflectance_to_dn(np.array([0.0, -0.5, 9.0]), dtype="uint16"), [1, 1, 65535])


def test_dn_offset_from_tags_prefers_the_tag_then_the_default():
    assert dn_offset_from_tags({"dn_offset": "-1000"}, 0.0) == -1000.0
    assert dn_offset_from_tags({"dn_offset": "0"}, -1000.0) == 0.0  # the file knows better than the flag
    assert dn_offset_from_tags({}, -1000.0) == -1000.0 and dn_offset_from_tags({"dn_offset": " "}, 0.0) == 0.0
    with pytest.raises(InputError, match="unreadable dn_offset tag 'minus'"):
        dn_offset_from_tags({"dn_offset": "minus"}, 0.0, "target t.tif")
    with pytest.raises(InputError, match="non-finite"):
        dn_offset_from_tags({"dn_offset": "nan"}, 0.0)


def test_resolve_bands_by_name_index_and_error():
    avail = list(S2_BANDS)
    assert resolve_bands(avail, ["B4", "b3", "B2"], "x") == [3, 2, 1]
    assert resolve_bands(avail, [1, "9"], "x") == [0, 8]
    with pytest.raises(InputError, match="no band"):
        resolve_bands(avail, ["B13"], "x")
    with pytest.raises(InputError, match="out of range"):
        resolve_bands(avail, [14], "x")


class _Src:
    def __init__(self, count, descriptions):
        self.count, self.descriptions = count, descriptions


def test_band_names_fallbacks():
    assert band_names(_Src(2, ("VV", "VH"))) == ["VV", "VH"]
    assert band_names(_Src(13, (None,) * 13)) == list(S2_BANDS)
    assert band_names(_Src(2, (None, None)), default=("VV", "VH")) == ["VV", "VH"]
    assert band_names(_Src(3, (None,) * 3)) == ["band1", "band2", "band3"]


def test_check_range_and_integer_reflectance_check():
    assert check_range((-25, 0), "--s1-range") == (-25.0, 0.0)
    assert check_range(None, "--s1-range") is None
    for bad in ((0.0,), ("a", "b"), (1.0, 0.0), (0.0, float("inf"))):
        with pytest.raises(InputError, match="--x must"):
            check_range(bad, "--x")
    with pytest.raises(InputError, match="float reflectance"):
        check_integer_reflectance("float32", np.array([0.1, 0.3, np.nan]), "optical")
    check_integer_reflectance("float32", np.array([120.0, 3000.0]), "optical")
    check_integer_reflectance("uint16", np.array([1, 2]), "optical")
