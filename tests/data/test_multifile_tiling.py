"""Tests of several files per raster and many scenes per tile set: --layout bigearthnet (generated folders that
mirror the real release, and the real sample), per-file scenes, patterns, CSV lists, failed scenes, --strict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.data.layouts import find_bigearthnet, find_layout
from sarkit.data.scenes import partner, scenes_from_csv, scenes_from_pattern
from sarkit.data.tiling import TileOptions, tile_inputs, tile_layout, tile_scene, tile_scenes
from sarkit.errors import InputError
from sarkit.models.checkpoint import save_network
from sarkit.models.registry import Identity
from sarkit.raster.norm import sar_normalization

S2_FILES = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
            "B09": 60, "B11": 20, "B12": 20}  # BigEarthNet L2A: no B10


def one_band(path: Path, data: np.ndarray, px: float, x0: float = 404400, y0: float = 5342400) -> Path:
    """A one-band EPSG:32633 GeoTIFF, no nodata and no description (as BigEarthNet ships them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1,
                       dtype=data.dtype.name, crs="EPSG:32633", transform=from_origin(x0, y0, px, px)) as dst:
        dst.write(data[None])
    return path


def bigearthnet_pair(root: Path, k: int, x0: float = 404400) -> tuple[Path, Path]:
    """One BigEarthNet-S1 / BigEarthNet-S2 patch pair, named and shaped as the releases ship them."""
    rng = np.random.default_rng(k)
    s1 = f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_{k:02d}"
    s2 = f"S2A_MSIL2A_20170613T101031_87_{k:02d}"
    d1, d2 = root / "BigEarthNet-S1-v1.0" / s1, root / "BigEarthNet-v1.0" / s2
    one_band(d1 / f"{s1}_VV.tif", rng.uniform(-20, -5, (120, 120)).astype(np.float32), 10, x0)
    one_band(d1 / f"{s1}_VH.tif", rng.uniform(-26, -12, (120, 120)).astype(np.float32), 10, x0)
    for band, px in S2_FILES.items():
        n = 1200 // px
        one_band(d2 / f"{s2}_{band}.tif", rng.integers(200, 3000, (n, n)).astype(np.uint16), px, x0)
    meta = {"labels": ["Non-irrigated arable land", f"Coniferous forest {k}"],
            "coordinates": {"ulx": x0, "uly": 5342400, "lrx": x0 + 1200, "lly": 5341200},
            "corresponding_s2_patch": s2, "acquisition_time": "2017-06-13T16:50:43"}
    (d1 / f"{s1}_labels_metadata.json").write_text(json.dumps(meta))
    return d1, d2


def test_bigearthnet_folders_pair_through_corresponding_s2_patch(tmp_path):
    d1, d2 = bigearthnet_pair(tmp_path, 48)
    bigearthnet_pair(tmp_path, 49, x0=405600)
    scenes = find_layout(tmp_path, "bigearthnet")
    assert [s.name for s in scenes] == [d1.name, d1.name.replace("_48", "_49")]
    first = scenes[0]
    assert [f.name.rsplit("_", 1)[1] for f in first.s1_files] == ["VV.tif", "VH.tif"]
    assert [f.parent for f in first.s2_files] == [d2] * 12 and len(first.s2_files) == 12
    assert first.scene_labels == ["Non-irrigated arable land", "Coniferous forest 48"]


def test_bigearthnet_tiles_hold_all_bands_on_the_10m_grid_and_labels_in_manifest(tmp_path):
    bigearthnet_pair(tmp_path / "ben", 48)
    bigearthnet_pair(tmp_path / "ben", 49, x0=405600)
    summary = tile_layout(tmp_path / "ben", "bigearthnet", tmp_path / "t", TileOptions(size=120, split=(1, 0, 0)))
    assert summary.written == 2 and summary.failed == []
    with open(tmp_path / "t" / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert json.loads(rows[0]["scene_labels"])[1] == "Coniferous forest 48"
    assert rows[0]["tile_id"].startswith("S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48_r00000")
    record = json.loads((tmp_path / "t" / "tiling.json").read_text())
    assert record["sar_bands"] == ["VV", "VH"]
    assert record["optical_bands"] == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]
    with rasterio.open(tmp_path / "t" / rows[0]["s2_path"]) as t:
        assert (t.count, t.width, t.dtypes[0]) == (12, 120, "uint16") and t.transform.a == 10
    with rasterio.open(tmp_path / "t" / rows[0]["s1_path"]) as t:
        assert (t.count, t.width, t.dtypes[0]) == (2, 120, "float32")


def test_bigearthnet_patches_padded_to_a_larger_tile(tmp_path):
    bigearthnet_pair(tmp_path / "ben", 48)
    with pytest.raises(InputError, match="--pad-edges"):
        tile_layout(tmp_path / "ben", "bigearthnet", tmp_path / "t", TileOptions(size=128))
    s = tile_layout(tmp_path / "ben", "bigearthnet", tmp_path / "t",
                    TileOptions(size=128, pad_edges=True, max_nodata=0.2, split=(1, 0, 0)))
    assert s.written == 1
    with rasterio.open(next((tmp_path / "t" / "s1").iterdir())) as t:
        data = t.read()
        assert t.width == 128 and np.isnan(data[:, 120:, :]).all() and np.isfinite(data[:, :120, :120]).all()


def test_bigearthnet_without_patches_names_what_it_expects(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="NAME_VV.tif, NAME_VH.tif"):
        find_bigearthnet(tmp_path)


def test_realdata_bigearthnet_tile_and_translate(tmp_path, realdata):
    root = realdata / "bigearthnet"
    if not root.is_dir():
        pytest.skip("BigEarthNet sample absent")
    res = CliRunner().invoke(app, ["tile", str(root), "--layout", "bigearthnet", "--size", "120",
                                   "--out", str(tmp_path / "t")])
    assert res.exit_code == 0, res.output
    with open(tmp_path / "t" / "manifest.csv") as f:
        row = next(csv.DictReader(f))
    assert "Non-irrigated arable land" in json.loads(row["scene_labels"])
    with rasterio.open(tmp_path / "t" / row["s2_path"]) as t:
        b1 = t.read(1)
        assert t.count == 12 and (b1 > 0).all()  # the 60 m band, resampled, holds data everywhere
    n = sar_normalization().to_dict()
    ckpt = save_network(tmp_path / "id.safetensors", Identity(2), kind="generator", arch="identity",
                        arch_kwargs={"channels": 2}, meta={"model": "identity", "direction": "identity",
                                                           "in_norm": n, "out_norm": n, "tile_size": 128,
                                                           "run": "test"})
    folder = next((root / "BigEarthNet-S1-v1.0").iterdir())
    scene = f"{folder / folder.name}_VV.tif,{folder / folder.name}_VH.tif"
    res = CliRunner().invoke(app, ["translate", scene, "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.tif"),
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "o.tif") as o, rasterio.open(f"{folder / folder.name}_VH.tif") as vh:
        assert (o.width, o.height, o.crs) == (120, 120, vh.crs)
        assert np.allclose(o.read(2), np.clip(vh.read(1), -25, 0), atol=1e-4)


# ------------------------------------------------------------------------------------------------ many scenes
def scene(folder: Path, name: str, x0: float, seed: int, optical: bool = True) -> Path:
    """A 64×64 two-band dB scene ``name_s1.tif`` with an RGB partner ``name_s2.tif`` (unless not ``optical``)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    s1 = folder / f"{name}_s1.tif"
    with rasterio.open(s1, "w", driver="GTiff", height=64, width=64, count=2, dtype="float32", crs="EPSG:32633",
                       transform=from_origin(x0, 5342400, 10, 10)) as dst:
        dst.write(rng.uniform(-20, -5, (2, 64, 64)).astype(np.float32))
    if optical:
        with rasterio.open(folder / f"{name}_s2.tif", "w", driver="GTiff", height=64, width=64, count=3,
                           dtype="uint16", crs="EPSG:32633", transform=from_origin(x0, 5342400, 10, 10)) as dst:
            dst.write(rng.integers(100, 3000, (3, 64, 64)).astype(np.uint16))
            dst.descriptions = ("B4", "B3", "B2")
    return s1


def test_partner_patterns():
    assert partner("{dir}/{stem/_s1/_s2}.tif", Path("a/x_s1.tif")) == Path("a/x_s2.tif")
    assert partner("{dir}/../s2/{name}", Path("a/s1/p.tif")) == Path("a/s1/../s2/p.tif")
    with pytest.raises(InputError, match="unknown field"):
        partner("{folder}/x.tif", Path("a/x_s1.tif"))


def test_many_scenes_one_tile_set_failed_scene_skipped_and_ids_stable(tmp_path):
    for i, name in enumerate(("a", "b", "c")):
        scene(tmp_path / "in", name, 404400 + 640 * i, i, optical=name != "b")  # b lacks its optical partner
    opts = TileOptions(size=32, split=(0.5, 0.25, 0.25))
    summary = tile_inputs([str(tmp_path / "in" / "*_s1.tif")], [], ["{dir}/{stem/_s1/_s2}.tif"], None, None, None,
                          tmp_path / "t", opts)
    assert [n for n, _ in summary.failed] == ["b_s1.tif"] and "b_s2.tif" in summary.failed[0][1]
    assert summary.scenes == 2 and summary.written == 8
    record = json.loads((tmp_path / "t" / "tiling.json").read_text())
    assert record["failed_scenes"][0]["scene"] == "b_s1.tif"
    with open(tmp_path / "t" / "manifest.csv") as f:
        ids = [r["tile_id"] for r in csv.DictReader(f)]
    assert len(set(ids)) == 8 and {i.split("_s1")[0] for i in ids} == {"a", "c"}
    alone = tile_scene(tmp_path / "in" / "c_s1.tif", tmp_path / "in" / "c_s2.tif", None, tmp_path / "c",
                       TileOptions(size=32, split=(0.5, 0.25, 0.25)))
    with open(tmp_path / "c" / "manifest.csv") as f:
        assert {r["tile_id"] for r in csv.DictReader(f)} == {i for i in ids if i.startswith("c_")}
    assert alone.written == 4
    with pytest.raises(InputError, match="b_s2.tif"):
        tile_inputs([str(tmp_path / "in" / "*_s1.tif")], [], ["{dir}/{stem/_s1/_s2}.tif"], None, None, None,
                    tmp_path / "t2", TileOptions(size=32, strict=True))
    assert not (tmp_path / "t2").exists()


def test_overlapping_scenes_never_share_ground_between_splits(tmp_path):
    paths = [scene(tmp_path / "in", n, 404400 + 160 * i, i) for i, n in enumerate(("a", "b", "c", "d"))]
    scenes = scenes_from_pattern(paths, "{dir}/{stem/_s1/_s2}.tif", None)
    summary = tile_scenes(scenes, tmp_path / "t", TileOptions(size=16, split=(0.6, 0.2, 0.2), seed=3))
    assert summary.failed == [] and summary.scenes == 4
    with open(tmp_path / "t" / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    boxes = [(float(r["left"]), float(r["bottom"]), float(r["right"]), float(r["top"]), r["split"]) for r in rows]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            share = min(a[2], b[2]) - max(a[0], b[0]) > 1e-6 and min(a[3], b[3]) - max(a[1], b[1]) > 1e-6
            assert not (share and a[4] != b[4])


def test_scenes_csv_and_cli_exit_code_for_a_failed_scene(tmp_path):
    scene(tmp_path / "in", "a", 404400, 0)
    scene(tmp_path / "in", "b", 405400, 1)
    (tmp_path / "in" / "list.csv").write_text("s1,optical,labels\na_s1.tif,a_s2.tif,\nb_s1.tif,missing.tif,\n")
    listed = scenes_from_csv(tmp_path / "in" / "list.csv")
    assert listed[0].s1 == tmp_path / "in" / "a_s1.tif" and listed[1].s2 == tmp_path / "in" / "missing.tif"
    res = CliRunner().invoke(app, ["tile", "--scenes", str(tmp_path / "in" / "list.csv"), "--size", "32",
                                   "--out", str(tmp_path / "t")])
    assert res.exit_code == 1, res.output
    assert "FAILED scene b_s1.tif" in res.output and (tmp_path / "t" / "manifest.csv").is_file()
    res = CliRunner().invoke(app, ["tile", "--scenes", str(tmp_path / "in" / "list.csv"), "--size", "32",
                                   "--out", str(tmp_path / "t2"), "--strict"])
    assert res.exit_code == 2 and "missing.tif" in res.output and not (tmp_path / "t2").exists()


def test_cli_s1_given_per_polarisation_file(tmp_path):
    rng = np.random.default_rng(0)
    vv = one_band(tmp_path / "x_VV.tif", rng.uniform(-20, -5, (64, 64)).astype(np.float32), 10)
    vh = one_band(tmp_path / "x_VH.tif", rng.uniform(-25, -10, (64, 64)).astype(np.float32), 10)
    for args, out in ((["--s1", str(vv), "--s1", str(vh)], "t1"), ([f"{vv},{vh}"], "t2")):
        res = CliRunner().invoke(app, ["tile", *args, "--size", "32", "--out", str(tmp_path / out)])
        assert res.exit_code == 0, res.output
        record = json.loads((tmp_path / out / "tiling.json").read_text())
        assert record["sar_bands"] == ["VV", "VH"] and record["counts"]["written"] == 4
        with open(tmp_path / out / "manifest.csv") as f:
            assert next(csv.DictReader(f))["tile_id"] == "x_r00000_c00000"
