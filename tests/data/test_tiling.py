"""Tests of sarkit.data.tiling and the ``sarkit tile`` command (small seeded rasters written with rasterio)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.windows
from rasterio.transform import from_origin
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.errors import InputError
from sarkit.raster.grid import PixelWindow
from sarkit.raster.norm import S2_BANDS
from sarkit.data.tiling import MANIFEST_COLUMNS, TileOptions, check_split, tile_layout, tile_scene

runner = CliRunner()
UTM = "EPSG:32631"
ORIGIN = (500000.0, 5600000.0)


def write_raster(path: Path, data: np.ndarray, crs: str | None = UTM, transform=None, nodata=None,
                 descriptions=None, tags=None) -> Path:
    """Write a (bands, h, w) array as a GeoTIFF."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    transform = transform if transform is not None else from_origin(*ORIGIN, 10.0, 10.0)
    prof = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                dtype=data.dtype.name, transform=transform, nodata=nodata)
    if crs is not None:
        prof["crs"] = crs
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
    return path


def make_scene(tmp: Path, h: int = 256, w: int = 256, seed: int = 0, s2: bool = True, labels: bool = True,
               s1_bands: int = 2) -> dict[str, Path]:
    """A seeded S1 (dB), S2 (uint16 DN, 13 bands) and label raster on one 10 m UTM grid."""
    rng = np.random.default_rng(seed)
    out = {"s1": write_raster(tmp / "s1.tif", rng.uniform(-25, 0, (s1_bands, h, w)).astype(np.float32),
                              nodata=float("nan"))}
    if s2:
        out["s2"] = write_raster(tmp / "s2.tif", rng.integers(1, 5000, (13, h, w)).astype(np.uint16), nodata=0,
                                 descriptions=list(S2_BANDS))
    if labels:
        out["labels"] = write_raster(tmp / "labels.tif", rng.integers(0, 3, (h, w)).astype(np.uint8), nodata=255,
                                     tags={"class_names": json.dumps(["a", "b", "c"])})
    return out


def read_manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def overlapping(a: dict[str, str], b: dict[str, str]) -> bool:
    wa = PixelWindow(int(a["row_off"]), int(a["col_off"]), int(a["height"]), int(a["width"]))
    wb = PixelWindow(int(b["row_off"]), int(b["col_off"]), int(b["height"]), int(b["width"]))
    return wa.intersect(wb) is not None


def test_tile_equals_source_window_with_window_transform(tmp_path):
    sc = make_scene(tmp_path)
    out = tmp_path / "tiles"
    summary = tile_scene(sc["s1"], sc["s2"], sc["labels"], out, TileOptions(size=128, stride=128))
    assert summary.written == 4
    row = next(r for r in read_manifest(out) if r["row_off"] == "128" and r["col_off"] == "0")
    win = PixelWindow(128, 0, 128, 128).to_rasterio()
    for key, sub in (("s1", "s1_path"), ("s2", "s2_path"), ("labels", "labels_path")):
        with rasterio.open(sc[key]) as src, rasterio.open(out / row[sub]) as tile:
            np.testing.assert_array_equal(tile.read(), src.read(window=win))
            assert tile.transform == rasterio.windows.transform(win, src.transform)
            assert tile.crs == src.crs
    with rasterio.open(out / row["s1_path"]) as t:
        assert t.descriptions == ("VV", "VH") and np.isnan(t.nodata) and t.dtypes[0] == "float32"
    with rasterio.open(out / row["s2_path"]) as t:
        assert t.descriptions == S2_BANDS and t.nodata == 0 and t.dtypes[0] == "uint16"
        assert t.tags()["dn_offset"] == "0"  # the DN are read back as DN / 10000
    with rasterio.open(out / row["labels_path"]) as t:
        assert t.nodata == 255 and json.loads(t.tags()["class_names"]) == ["a", "b", "c"]


def test_manifest_and_tiling_json_follow_contract(tmp_path):
    sc = make_scene(tmp_path)
    out = tmp_path / "tiles"
    tile_scene(sc["s1"], sc["s2"], sc["labels"], out,
               TileOptions(size=128, stride=128, s1_range=(-30.0, 5.0), s2_range=(0.0, 0.4), s2_offset=True))
    with open(out / "manifest.csv", newline="") as f:
        assert next(csv.reader(f)) == MANIFEST_COLUMNS
    rec = json.loads((out / "tiling.json").read_text())
    assert set(rec) >= {"sarkit_version", "params", "normalization", "sar_bands", "optical_bands", "classes",
                        "sources", "counts"}
    assert rec["normalization"]["sar"]["lo"] == [-30.0, -30.0] and rec["normalization"]["sar"]["hi"] == [5.0, 5.0]
    opt = rec["normalization"]["optical"]
    assert opt["bands"] == list(S2_BANDS) and opt["hi"] == [0.4] * 13 and opt["offset"] == -1000.0
    assert rec["sar_bands"] == ["VV", "VH"] and rec["optical_bands"] == list(S2_BANDS)
    assert rec["classes"] == ["a", "b", "c"] and rec["counts"]["written"] == 4
    for row in read_manifest(out):  # every optical tile says how its DN are read back
        with rasterio.open(out / row["s2_path"]) as t:
            assert t.tags()["dn_offset"] == "-1000"


def test_linear_s1_is_converted_to_db(tmp_path):
    rng = np.random.default_rng(1)
    lin = rng.uniform(0.001, 0.5, (2, 128, 128)).astype(np.float32)
    s1 = write_raster(tmp_path / "lin.tif", lin)
    out = tmp_path / "t"
    tile_scene(s1, None, None, out, TileOptions(size=128, stride=128))
    with rasterio.open(next((out / "s1").glob("*.tif"))) as t:
        np.testing.assert_allclose(t.read(), 10 * np.log10(lin), rtol=1e-5, atol=1e-5)
    rec = json.loads((out / "tiling.json").read_text())
    assert rec["sources"]["s1_units_detected"] == ["linear"]


def test_single_band_s1_is_named_vv(tmp_path):
    sc = make_scene(tmp_path, s2=False, labels=False, s1_bands=1)
    out = tmp_path / "t"
    tile_scene(sc["s1"], None, None, out, TileOptions(size=128, stride=128))
    rec = json.loads((out / "tiling.json").read_text())
    assert rec["sar_bands"] == ["VV"] and rec["optical_bands"] is None
    assert not (out / "s2").exists() and read_manifest(out)[0]["s2_path"] == ""


def test_nan_in_s1_counts_as_nodata(tmp_path):
    data = np.full((2, 256, 256), -10.0, dtype=np.float32)
    data[:, 10:40, 10:40] = np.nan  # 900 px = 5.5 % of the first 128 tile
    s1 = write_raster(tmp_path / "s1.tif", data)
    summary = tile_scene(s1, None, None, tmp_path / "t", TileOptions(size=128, stride=128))
    assert summary.written == 3 and summary.skipped == {"nodata": 1}
    ids = [r["tile_id"] for r in read_manifest(tmp_path / "t")]
    assert "s1_r00000_c00000" not in ids


def test_edges_skipped_by_default_and_padded_on_request(tmp_path):
    s1 = write_raster(tmp_path / "s1.tif", np.full((2, 200, 300), -5.0, dtype=np.float32))
    assert tile_scene(s1, None, None, tmp_path / "a", TileOptions(size=128, stride=128)).written == 2
    summary = tile_scene(s1, None, None, tmp_path / "b", TileOptions(size=128, stride=128, pad_edges=True,
                                                                      max_nodata=1.0))
    assert summary.written == 6
    with rasterio.open(tmp_path / "b" / "s1" / "s1_r00128_c00256.tif") as t:
        a = t.read(1)
        assert a.shape == (128, 128)
        assert np.all(a[:72, :44] == -5.0) and np.isnan(a[72:, :]).all() and np.isnan(a[:, 44:]).all()


def test_ids_are_idempotent(tmp_path):
    sc = make_scene(tmp_path)
    out = tmp_path / "t"
    opts = TileOptions(size=64, stride=64)
    tile_scene(sc["s1"], sc["s2"], None, out, opts)
    first = [(r["tile_id"], r["split"]) for r in read_manifest(out)]
    opts.overwrite = True
    tile_scene(sc["s1"], sc["s2"], None, out, opts)
    assert [(r["tile_id"], r["split"]) for r in read_manifest(out)] == first
    assert sorted(p.stem for p in (out / "s1").glob("*.tif")) == sorted(i for i, _ in first)


def _splits(tmp: Path, seed: int, name: str) -> dict[str, str]:
    s1 = tmp / "s1.tif"
    if not s1.exists():
        write_raster(s1, np.full((1, 320, 320), -8.0, dtype=np.float32))
    tile_scene(s1, None, None, tmp / name, TileOptions(size=32, stride=32, seed=seed))
    return {r["tile_id"]: r["split"] for r in read_manifest(tmp / name)}


def test_splits_are_deterministic_per_seed_and_hit_fractions(tmp_path):
    a, b, c = _splits(tmp_path, 0, "a"), _splits(tmp_path, 0, "b"), _splits(tmp_path, 1, "c")
    assert a == b
    assert a != c
    counts = {s: list(a.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 70, "val": 20, "test": 10}


def test_overlapping_tiles_never_cross_splits(tmp_path):
    s1 = write_raster(tmp_path / "s1.tif", np.full((1, 384, 384), -8.0, dtype=np.float32))
    summary = tile_scene(s1, None, None, tmp_path / "t", TileOptions(size=32, stride=16, split=(0.5, 0.3, 0.2)))
    rows = read_manifest(tmp_path / "t")
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert summary.written == len(rows) and summary.written + summary.skipped.get("split_overlap", 0) == 23 * 23
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["split"] != b["split"]:
                assert not overlapping(a, b), (a["tile_id"], b["tile_id"])


def _aoi_file(path: Path, coords, crs: str | None = None) -> Path:
    doc = {"type": "FeatureCollection",
           "features": [{"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                                          "coordinates": [coords]}}]}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(doc))
    return path


def test_aoi_keeps_only_intersecting_tiles(tmp_path):
    from pyproj import Transformer

    sc = make_scene(tmp_path, labels=False)
    x0, y0 = ORIGIN
    # a small square inside tile (row 0, col 1) of 64-pixel tiles, given in lon/lat (EPSG:4326 default)
    square = [(x0 + 700, y0 - 100), (x0 + 900, y0 - 100), (x0 + 900, y0 - 300), (x0 + 700, y0 - 300)]
    tr = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    lonlat = [list(tr.transform(x, y)) for x, y in square]
    aoi = _aoi_file(tmp_path / "aoi.geojson", lonlat + [lonlat[0]])
    summary = tile_scene(sc["s1"], sc["s2"], None, tmp_path / "t", TileOptions(size=64, stride=64, aoi=aoi))
    assert [r["tile_id"] for r in read_manifest(tmp_path / "t")] == ["s1_r00000_c00064"]
    assert summary.skipped["outside_aoi"] == 15
    # the same square in the scene's own CRS through a "crs" member
    aoi2 = _aoi_file(tmp_path / "aoi2.geojson", [list(p) for p in square] + [list(square[0])], crs=UTM)
    tile_scene(sc["s1"], sc["s2"], None, tmp_path / "t2", TileOptions(size=64, stride=64, aoi=aoi2))
    assert [r["tile_id"] for r in read_manifest(tmp_path / "t2")] == ["s1_r00000_c00064"]


def test_check_split():
    assert check_split((0.7, 0.2, 0.1)) == (0.7, 0.2, 0.1)
    assert check_split([1, 0, 0]) == (1.0, 0.0, 0.0)
    for bad in ((0.5, 0.5), (0.7, 0.2, 0.2), ("a", "b", "c"), (-0.1, 0.6, 0.5), (), (float("nan"), 0.5, 0.5)):
        with pytest.raises(InputError, match="--split must be 3 non-negative numbers summing to 1"):
            check_split(bad)


# --------------------------------------------------------------------------------------------- CLI


def _bad_cases(tmp: Path) -> dict[str, list[str]]:
    """Bad inputs not in the table of tests/test_bad_input_tile.py (unreadable or ungeoreferenced files, a --split
    that does not parse): they exit 2 but may print more than one line."""
    sc = make_scene(tmp, h=128, w=128)
    s1 = str(sc["s1"])
    (tmp / "notraster.tif").write_text("hello")
    nocrs = write_raster(tmp / "nocrs.tif", np.zeros((2, 128, 128), np.float32), crs=None)
    return {  # name: (arguments, a fragment the error must contain)
        "not a raster": ([str(tmp / "notraster.tif")], "not a readable raster"),
        "no crs": ([str(nocrs)], "no CRS"),
        "optical no crs": ([s1, "--optical", str(nocrs)], "no CRS"),
        "bad split": ([s1, "--split", "0.5,0.4"], "--split must be 3"),
    }


def test_bad_inputs_exit_2_and_write_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cases = _bad_cases(src)
    for name, (args, fragment) in cases.items():
        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        size = [] if "--size" in args else ["--size", "64"]
        res = runner.invoke(app, ["tile", *args, *size, "--out", str(work / "out"), "--quiet"])
        assert res.exit_code == 2, (name, res.output)
        assert fragment in " ".join(res.output.split()), (name, res.output)
        assert list(work.iterdir()) == [], name


def test_nonempty_output_without_overwrite_is_untouched(tmp_path):
    sc = make_scene(tmp_path, h=128, w=128)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = runner.invoke(app, ["tile", str(sc["s1"]), "--size", "64", "--out", str(out), "--quiet"])
    assert res.exit_code == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif", "out", "s1.tif", "s2.tif"]
    res = runner.invoke(app, ["tile", str(sc["s1"]), "--size", "64", "--out", str(out), "--overwrite", "--quiet"])
    assert res.exit_code == 0, res.output
    assert not (out / "keep.txt").exists() and len(list((out / "s1").glob("*.tif"))) == 4


def test_cli_prints_summary(tmp_path):
    sc = make_scene(tmp_path, h=128, w=128)
    res = runner.invoke(app, ["tile", str(sc["s1"]), "--optical", str(sc["s2"]), "--labels", str(sc["labels"]),
                              "--size", "64", "--out", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    assert "written" in res.output and "4" in res.output
    assert len(list((tmp_path / "t" / "labels").glob("*.tif"))) == 4


# --------------------------------------------------------------------------------------------- real data


def test_sen1floods11_layout_gives_four_labelled_tiles(realdata, tmp_path):
    out = tmp_path / "t"
    summary = tile_layout(realdata / "sen1floods11", "sen1floods11", out, TileOptions())
    assert summary.written == 4
    rows = read_manifest(out)
    assert all(r["labels_path"] and r["s2_path"] for r in rows)
    rec = json.loads((out / "tiling.json").read_text())
    assert rec["classes"] == ["not water", "water"] and rec["sar_bands"] == ["VV", "VH"]
    with rasterio.open(out / rows[0]["s2_path"]) as t:
        assert t.dtypes[0] == "int16" and t.count == 13
    with rasterio.open(out / rows[0]["labels_path"]) as t:
        assert set(np.unique(t.read(1))) <= {0, 1, 255}


def test_sen1floods11_direct_uses_grid_tolerance(realdata, tmp_path):
    d = realdata / "sen1floods11"
    out = tmp_path / "t"
    res = runner.invoke(app, ["tile", str(d / "S1Hand/Spain_7370579_S1Hand.tif"),
                              "--optical", str(d / "S2Hand/Spain_7370579_S2Hand.tif"),
                              "--labels", str(d / "LabelHand/Spain_7370579_LabelHand.tif"),
                              "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    rows = read_manifest(out)
    assert len(rows) == 4
    row = next(r for r in rows if r["row_off"] == "256" and r["col_off"] == "256")
    with rasterio.open(d / "LabelHand/Spain_7370579_LabelHand.tif") as src:
        raw = src.read(1, window=PixelWindow(256, 256, 256, 256).to_rasterio())
    with rasterio.open(out / row["labels_path"]) as t:
        lab = t.read(1)
    np.testing.assert_array_equal(lab, np.where(raw < 0, 255, raw).astype(np.uint8))  # no resampling at all


def test_sen12mscr_layout_pairs_cloudfree_unless_cloudy(realdata, tmp_path):
    root = realdata / "sen12mscr_glfcr"
    out = tmp_path / "t"
    summary = tile_layout(root, "sen12ms", out, TileOptions())
    assert summary.written == 2
    rows = read_manifest(out)
    assert all(r["s2_path"] and "s2_cloudfree" in r["source_s2"] for r in rows)
    name = Path(rows[0]["source_s1"]).name
    with rasterio.open(out / rows[0]["s2_path"]) as t, rasterio.open(root / "s2_cloudfree" / name) as src:
        np.testing.assert_array_equal(t.read(), src.read())
    cloudy = tmp_path / "c"
    tile_layout(root, "sen12ms", cloudy, TileOptions(cloudy=True, max_nodata=1.0))
    rows = read_manifest(cloudy)
    assert len(rows) == 2 and all("s2_cloudy" in r["source_s2"] for r in rows)
    with rasterio.open(cloudy / rows[0]["s2_path"]) as t:
        with rasterio.open(root / "s2_cloudy" / Path(rows[0]["source_s1"]).name) as src:
            np.testing.assert_array_equal(t.read(), src.read())


def test_assign_splits_keeps_blocks_whole_and_scenes_apart():
    from sarkit.raster.grid import Bounds
    from sarkit.data.tiling import _Candidate, assign_splits

    cands = [_Candidate(scene, PixelWindow(r * 32, c * 32, 32, 32), f"{scene}_{r}_{c}", Bounds(0, 0, 1, 1),
                        block=(scene, r // 2, c // 2))
             for scene in (0, 1) for r in range(10) for c in range(10)]
    assign_splits(cands, (0.6, 0.2, 0.2), seed=4)
    by_block: dict = {}
    for c in cands:
        by_block.setdefault(c.block, set()).add(c.split)
    assert len(by_block) == 50 and all(len(v) == 1 for v in by_block.values())
    counts = {s: sum(c.split == s for c in cands) for s in ("train", "val", "test")}
    assert counts == {"train": 120, "val": 40, "test": 40}


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import sarkit.data.tiling as tiling

    sc = make_scene(tmp_path, h=128, w=128)
    calls = {"n": 0}
    real = tiling._write_tile

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(tiling, "_write_tile", failing)
    work = tmp_path / "work"
    work.mkdir()
    res = runner.invoke(app, ["tile", str(sc["s1"]), "--optical", str(sc["s2"]), "--size", "64",
                              "--out", str(work / "out"), "--quiet"])
    assert res.exit_code == 1 and "disk full" in res.output
    assert list(work.iterdir()) == []


def test_s1_units_option_overrides_detection(tmp_path):
    lin = np.full((1, 64, 64), 0.1, dtype=np.float32)
    s1 = write_raster(tmp_path / "s1.tif", lin)
    tile_scene(s1, None, None, tmp_path / "db", TileOptions(size=64, s1_units="db"))
    tile_scene(s1, None, None, tmp_path / "lin", TileOptions(size=64, s1_units="linear"))
    with rasterio.open(tmp_path / "db" / "s1" / "s1_r00000_c00000.tif") as t:
        assert np.allclose(t.read(), 0.1)
    with rasterio.open(tmp_path / "lin" / "s1" / "s1_r00000_c00000.tif") as t:
        assert np.allclose(t.read(), -10.0, atol=1e-5)
