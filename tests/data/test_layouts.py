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
    DFC2020_CLASSES,
    IGBP_CLASSES,
    find_layout,
    find_sen1floods11,
    find_sen12ms,
    map_labels,
)
from sarkit.data.tiling import TileOptions, tile_layout, tile_scene


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
    assert scenes[0].label_scheme == "dfc2020" and scenes[0].classes == DFC2020_CLASSES


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
    igbp = np.array([0, 1, 5, 10, 12, 13, 14, 17, 18], np.uint8)
    np.testing.assert_array_equal(map_labels(igbp, "dfc2020"), [255, 0, 0, 3, 5, 6, 5, 9, 255])
    np.testing.assert_array_equal(map_labels(igbp, "igbp"), [255, 0, 4, 9, 11, 12, 13, 16, 255])
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


# --------------------------------------------------------------------------------------------- discovery


def _flat(root: Path, s2_folder: str = "s2_cloudfree", s1_folder: str = "s1", names=("a.tif",)) -> None:
    for i, n in enumerate(names):
        write(root / s1_folder / n, s1(i, 64))
        write(root / s2_folder / n, s2(1000 + i, 64))


def test_folder_names_match_in_any_case(tmp_path):
    _flat(tmp_path, s2_folder="s2_cloudFree", s1_folder="S1", names=("A.TIF",))  # as dSen2-CR ships it
    scene, = find_sen12ms(tmp_path)
    assert scene.s1 == tmp_path / "S1" / "A.TIF" and scene.s2 == tmp_path / "s2_cloudFree" / "A.TIF"
    roi = tmp_path / "sen12ms" / "ROIs1158_Spring"
    write(roi / "S1_1" / "ROIs1158_Spring_S1_1_p30.tif", s1())
    write(roi / "s2_1" / "ROIs1158_Spring_s2_1_p30.tif", s2(1000))
    write(roi / "LC_1" / "ROIs1158_Spring_lc_1_p30.tif", np.full((4, 64, 64), 17, np.uint8))
    scene, = find_sen12ms(tmp_path / "sen12ms")
    assert scene.s2.parent.name == "s2_1" and scene.labels.parent.name == "LC_1"
    write(tmp_path / "floods" / "s1hand" / "X_1_s1hand.tif", s1(0, 64), "EPSG:4326")
    write(tmp_path / "floods" / "S2HAND" / "X_1_S2Hand.tif", s2(900, 64).astype(np.int16), "EPSG:4326")
    scene, = find_sen1floods11(tmp_path / "floods")
    assert scene.s2.parent.name == "S2HAND"


def test_symlinked_folders_are_followed(tmp_path):
    store = tmp_path / "store"
    _flat(store, names=("a.tif", "b.tif"))
    root = tmp_path / "root"
    root.mkdir()
    (root / "s1").symlink_to(store / "s1", target_is_directory=True)
    (root / "s2_cloudfree").symlink_to(store / "s2_cloudfree", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)  # a cycle is walked once
    scenes = find_sen12ms(root)
    assert sorted(s.s1.name for s in scenes) == ["a.tif", "b.tif"]
    assert all(s.s1.parent == root / "s1" and s.s2.parent == root / "s2_cloudfree" for s in scenes)
    linked = tmp_path / "linked"
    linked.symlink_to(store, target_is_directory=True)  # the root itself a link
    assert len(find_layout(linked, "sen12ms")) == 2


def test_nothing_found_says_what_was_seen_and_what_was_expected(tmp_path):
    write(tmp_path / "sar" / "a.tif", s1())
    write(tmp_path / "opt" / "a.tif", s2(1000))
    with pytest.raises(InputError) as err:
        find_layout(tmp_path, "sen12ms")
    msg = str(err.value)
    assert "\n" not in msg
    for word in ("found 2 GeoTIFFs in opt/, sar/", "expected s1/ and s2_cloudfree", "ROIs…/s1_N", "any case"):
        assert word in msg, msg
    with pytest.raises(InputError, match=r"no Sen1Floods11 chips .*found 2 GeoTIFFs in opt/, sar/.*S1Hand"):
        find_layout(tmp_path, "sen1floods11")


def test_s1_without_partners_says_where_it_looked(tmp_path):
    write(tmp_path / "s1" / "a.tif", s1())
    write(tmp_path / "s2_clear" / "a.tif", s2(1000))
    with pytest.raises(InputError) as err:
        find_sen12ms(tmp_path)
    msg = str(err.value)
    assert "1 S1 patch(es) in s1/ but none has a partner" in msg and "s2_clear/" in msg, msg
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="the folder is empty"):
        find_layout(tmp_path / "nothing", "sen12ms")


def test_layout_name_in_any_case_and_root_checks(tmp_path):
    _flat(tmp_path)
    assert len(find_layout(tmp_path, "SEN12MS")) == 1
    with pytest.raises(InputError, match="unknown layout 'spacenet': use one of sen12ms, sen1floods11"):
        find_layout(tmp_path, "spacenet")
    with pytest.raises(InputError, match="does not exist"):
        find_layout(tmp_path / "absent", "sen12ms")
    with pytest.raises(InputError, match="is a file"):
        find_layout(tmp_path / "s1" / "a.tif", "sen12ms")


# --------------------------------------------------------------------------------------------- land cover


def _lc(value_igbp: np.ndarray) -> np.ndarray:
    """A SEN12MS lc stack: IGBP in band 1, other schemes in bands 2-4 (values that must not be used)."""
    return np.stack([value_igbp, value_igbp * 0 + 11, value_igbp * 0 + 20, value_igbp * 0 + 40]).astype(np.uint8)


def _sen12ms_with_lc(root: Path) -> None:
    igbp = np.tile(np.repeat(np.arange(1, 18, dtype=np.uint8), 4)[:64], (64, 1))
    roi = root / "ROIs1158_spring"
    write(roi / "s1_1" / "ROIs1158_spring_s1_1_p30.tif", s1())
    write(roi / "s2_1" / "ROIs1158_spring_s2_1_p30.tif", s2(1000))
    write(roi / "lc_1" / "ROIs1158_spring_lc_1_p30.tif", _lc(igbp))


def test_lc_tiles_carry_dfc2020_names_and_say_which_band(tmp_path):
    _sen12ms_with_lc(tmp_path / "d")
    out = tmp_path / "t"
    summary = tile_layout(tmp_path / "d", "sen12ms", out, TileOptions(size=64))
    rec = json.loads((out / "tiling.json").read_text())
    assert rec["classes"] == DFC2020_CLASSES
    assert rec["labels"]["band"] == 1 and rec["labels"]["scheme"] == "dfc2020"
    assert rec["labels"]["source"] == "SEN12MS lc band 1 of 4 (IGBP) → 10 DFC2020 classes"
    assert summary.labels == rec["labels"]["source"]
    tile, = (out / "labels").glob("*.tif")
    with rasterio.open(tile) as t:
        assert json.loads(t.tags()["class_names"]) == DFC2020_CLASSES and "IGBP" in t.tags()["label_source"]
        got = t.read(1)
    assert got[0, 0] == 0 and got[0, 63] == 8  # column 0 is IGBP 1 → forest, column 63 IGBP 16 → barren
    assert set(np.unique(got)) == {0, 1, 2, 3, 4, 5, 6, 7, 8}


def test_lc_kept_as_17_igbp_classes_on_request(tmp_path):
    _sen12ms_with_lc(tmp_path / "d")
    out = tmp_path / "t"
    tile_layout(tmp_path / "d", "sen12ms", out, TileOptions(size=64, lc_classes="igbp"))
    rec = json.loads((out / "tiling.json").read_text())
    assert rec["classes"] == IGBP_CLASSES and len(IGBP_CLASSES) == 17 and rec["labels"]["scheme"] == "igbp"
    tile, = (out / "labels").glob("*.tif")
    with rasterio.open(tile) as t:
        assert set(np.unique(t.read(1))) == set(range(16))  # IGBP 1…16 in the 64 columns → ids 0…15
    with pytest.raises(InputError, match="--lc-classes must be one of dfc2020, igbp, got 'lccs'"):
        tile_layout(tmp_path / "d", "sen12ms", tmp_path / "t2", TileOptions(size=64, lc_classes="lccs"))


def test_lc_file_given_as_labels_is_read_as_land_cover(tmp_path):
    _sen12ms_with_lc(tmp_path / "d")
    roi = tmp_path / "d" / "ROIs1158_spring"
    out = tmp_path / "t"
    summary = tile_scene(roi / "s1_1" / "ROIs1158_spring_s1_1_p30.tif", roi / "s2_1" / "ROIs1158_spring_s2_1_p30.tif",
                         roi / "lc_1" / "ROIs1158_spring_lc_1_p30.tif", out, TileOptions(size=64))
    rec = json.loads((out / "tiling.json").read_text())
    assert rec["classes"] == DFC2020_CLASSES and "IGBP" in summary.labels


def test_cli_says_which_label_band_and_scheme(tmp_path):
    from typer.testing import CliRunner

    from sarkit.cli import app

    _sen12ms_with_lc(tmp_path / "d")
    res = CliRunner().invoke(app, ["tile", str(tmp_path / "d"), "--layout", "sen12ms", "--size", "64",
                                   "--lc-classes", "igbp", "--out", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert "│ labels │ SEN12MS lc band 1 of 4 (IGBP) → 17 IGBP classes │" in text, res.stdout
    rec = json.loads((tmp_path / "t" / "tiling.json").read_text())
    assert rec["params"]["lc_classes"] == "igbp" and rec["classes"][16] == "water bodies"


def test_real_sen12mscr_as_dsen2cr_ships_it_through_symlinks(realdata, tmp_path):
    src = realdata / "sen12mscr_glfcr"
    root = tmp_path / "SEN12MS-CR"
    root.mkdir()
    (root / "S1").symlink_to(src / "s1", target_is_directory=True)
    (root / "s2_cloudFree").symlink_to(src / "s2_cloudfree", target_is_directory=True)
    summary = tile_layout(root, "sen12ms", tmp_path / "t", TileOptions())
    assert summary.written == 2 and summary.scenes == 2
    rec = json.loads((tmp_path / "t" / "tiling.json").read_text())
    assert all("s2_cloudfree" in p for p in rec["sources"]["s2"])  # resolved through the links
