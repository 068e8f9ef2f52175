"""Tests of sarkit.data.layouts: SEN12MS / SEN12MS-CR / Sen1Floods11 folder pairing and label schemes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sarkit.errors import InputError
from sarkit.data.layouts import (
    IGBP_SIMPLE_CLASSES,
    find_layout,
    find_sen1floods11,
    find_sen12ms,
    map_labels,
)
from sarkit.data.tiling import TileOptions, tile_layout


def write(path: Path, data: np.ndarray, crs: str = "EPSG:32631") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype.name, crs=crs, transform=from_origin(500000, 5600000, 10, 10)) as dst:
        dst.write(data)
    return path


def s1(seed: int = 0, n: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-25, 0, (2, n, n)).astype(np.float32)


def s2(value: int, n: int = 64) -> np.ndarray:
    return np.full((13, n, n), value, np.uint16)


def test_sen12ms_pairs_s1_with_s2_and_lc_siblings(tmp_path):
    roi = tmp_path / "ROIs1158_spring"
    for p in (30, 31):
        write(roi / "s1_1" / f"ROIs1158_spring_s1_1_p{p}.tif", s1(p))
        write(roi / "s2_1" / f"ROIs1158_spring_s2_1_p{p}.tif", s2(1000 + p))
        write(roi / "lc_1" / f"ROIs1158_spring_lc_1_p{p}.tif", np.full((4, 64, 64), 17, np.uint8))
    write(roi / "s1_1" / "ROIs1158_spring_s1_1_p99.tif", s1(9))  # no S2 partner: not taken
    scenes = find_sen12ms(tmp_path)
    assert [s.s1.name for s in scenes] == ["ROIs1158_spring_s1_1_p30.tif", "ROIs1158_spring_s1_1_p31.tif"]
    assert scenes[0].s2 == roi / "s2_1" / "ROIs1158_spring_s2_1_p30.tif"
    assert scenes[0].labels == roi / "lc_1" / "ROIs1158_spring_lc_1_p30.tif"
    assert scenes[0].label_scheme == "igbp" and scenes[0].classes == IGBP_SIMPLE_CLASSES


def test_official_sen12mscr_layout_and_cloudy_choice(tmp_path):
    name = "ROIs1158_spring_{}_1_p30.tif"
    write(tmp_path / "ROIs1158_spring_s1" / "s1_1" / name.format("s1"), s1())
    write(tmp_path / "ROIs1158_spring_s2" / "s2_1" / name.format("s2"), s2(1000))
    write(tmp_path / "ROIs1158_spring_s2_cloudy" / "s2_cloudy_1" / name.format("s2_cloudy"), s2(6000))
    clear, = find_sen12ms(tmp_path)
    cloudy, = find_sen12ms(tmp_path, cloudy=True)
    assert clear.s2.parent.name == "s2_1" and cloudy.s2.parent.name == "s2_cloudy_1" and clear.labels is None


def test_flat_sen12mscr_layout_tiles_cloudfree_by_default(tmp_path):
    for i, n in enumerate(("a.tif", "b.tif")):
        write(tmp_path / "s1" / n, s1(i, 256))
        write(tmp_path / "s2_cloudfree" / n, s2(1000 + i, 256))
        write(tmp_path / "s2_cloudy" / n, s2(7000 + i, 256))
    out = tmp_path / "t"
    summary = tile_layout(tmp_path, "sen12ms", out, TileOptions())
    assert summary.written == 2 and summary.scenes == 2
    for n, v in (("a", 1000), ("b", 1001)):
        with rasterio.open(out / "s2" / f"{n}_r00000_c00000.tif") as t:
            assert (t.read() == v).all()
    out2 = tmp_path / "t2"
    tile_layout(tmp_path, "sen12ms", out2, TileOptions(cloudy=True))
    with rasterio.open(out2 / "s2" / "a_r00000_c00000.tif") as t:
        assert (t.read() == 7000).all()


def test_sen1floods11_chips_are_cut_into_four_tiles(tmp_path):
    lab = np.zeros((512, 512), np.int16)
    lab[:256, :] = 1
    lab[300:310, 300:310] = -1
    write(tmp_path / "S1Hand" / "X_1_S1Hand.tif", s1(0, 512), "EPSG:4326")
    write(tmp_path / "S2Hand" / "X_1_S2Hand.tif", s2(900, 512).astype(np.int16), "EPSG:4326")
    write(tmp_path / "LabelHand" / "X_1_LabelHand.tif", lab, "EPSG:4326")
    scenes = find_sen1floods11(tmp_path)
    assert len(scenes) == 1 and scenes[0].label_scheme == "sen1floods11"
    out = tmp_path / "t"
    assert tile_layout(tmp_path, "sen1floods11", out, TileOptions()).written == 4
    assert json.loads((out / "tiling.json").read_text())["classes"] == ["not water", "water"]
    with rasterio.open(out / "labels" / "X_1_S1Hand_r00256_c00256.tif") as t:
        a = t.read(1)
    assert (a[44:54, 44:54] == 255).all() and (a[a != 255] == 0).all()
    with open(out / "manifest.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_map_labels_schemes():
    np.testing.assert_array_equal(map_labels(np.array([-1, 0, 1], np.int16), "sen1floods11"), [255, 0, 1])
    np.testing.assert_array_equal(map_labels(np.array([0, 1, 5, 10, 12, 13, 14, 17], np.uint8), "igbp"),
                                  [255, 0, 0, 3, 5, 6, 5, 9])
    np.testing.assert_array_equal(map_labels(np.array([3, 7, 300], np.int32), "raw", src_nodata=7), [3, 255, 255])


def test_missing_layout_or_partners_raise_input_error(tmp_path):
    with pytest.raises(InputError):
        find_layout(tmp_path, "sen12ms")
    with pytest.raises(InputError):
        find_layout(tmp_path / "absent", "sen1floods11")
    with pytest.raises(InputError):
        find_layout(tmp_path, "spacenet")
    write(tmp_path / "s1" / "a.tif", s1())
    with pytest.raises(InputError, match="s2_cloudy"):
        find_sen12ms(tmp_path, cloudy=True)
