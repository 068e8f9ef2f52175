"""STAC Items (sarkit.raster.stac): a static catalog of generated COGs written here (no network), read through the
raster layer, and `sarkit tile ITEM.json`, `sarkit translate ITEM.json`, `sarkit eval --target ITEM.json`."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.errors import InputError
from sarkit.models.checkpoint import save_network
from sarkit.models.registry import Identity
from sarkit.raster.grid import PixelWindow
from sarkit.raster.norm import sar_normalization
from sarkit.raster.stac import stac_item
from sarkit.raster.stack import open_source

X0, Y0 = 404400.0, 5342400.0
#: Sentinel-2 L2A assets as Earth Search names them, with their pixel sizes.
S2_ASSETS = {"blue": 10, "green": 10, "red": 10, "nir": 10, "rededge1": 20}


def cog(path: Path, data: np.ndarray, px: float) -> Path:
    """A one-band EPSG:32633 Cloud-Optimized GeoTIFF of ``data`` (h, w) with ``px`` m pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="COG", height=data.shape[0], width=data.shape[1], count=1,
                       dtype=data.dtype.name, crs="EPSG:32633", transform=from_origin(X0, Y0, px, px)) as dst:
        dst.write(data[None])
    return path


def _item(item_id: str, props: dict, assets: dict[str, Path]) -> pystac.Item:
    """A STAC Item over the 640 m square at (X0, Y0) with ``assets`` (key → COG file)."""
    geom = {"type": "Polygon", "coordinates": [[[14.0, 48.0], [14.01, 48.0], [14.01, 48.01], [14.0, 48.01],
                                                [14.0, 48.0]]]}
    item = pystac.Item(item_id, geom, [14.0, 48.0, 14.01, 48.01], datetime(2023, 6, 1, tzinfo=timezone.utc),
                       props)
    for key, path in assets.items():
        item.add_asset(key, pystac.Asset(str(path.resolve()), media_type=pystac.MediaType.COG, roles=["data"]))
    return item


def static_catalog(root: Path, baseline: str = "05.09", boa_applied: bool | None = None) -> tuple[Path, Path, dict]:
    """A self-contained static catalog (relative hrefs) with one Sentinel-1 RTC item (vv, vh: linear γ⁰, 10 m,
    64 px) and one Sentinel-2 L2A item (blue, green, red, nir at 10 m, rededge1 at 20 m; uint16 DN), plus the
    arrays written. Returns the two item files and the data."""
    rng = np.random.default_rng(3)
    vv = rng.uniform(0.01, 0.3, (64, 64)).astype(np.float32)
    vh = rng.uniform(0.002, 0.05, (64, 64)).astype(np.float32)
    s1_dir, s2_dir = root / "src" / "s1", root / "src" / "s2"
    s1_assets = {"vv": cog(s1_dir / "vv.tif", vv, 10), "vh": cog(s1_dir / "vh.tif", vh, 10)}
    dn = {k: rng.integers(1200, 4000, (640 // px, 640 // px)).astype(np.uint16) for k, px in S2_ASSETS.items()}
    s2_assets = {k: cog(s2_dir / f"{k}.tif", dn[k], px) for k, px in S2_ASSETS.items()}
    s2_assets["visual"] = cog(s2_dir / "tci.tif", np.zeros((64, 64), np.uint8), 10)  # not a band
    props = {"s2:processing_baseline": baseline}
    if boa_applied is not None:
        props["earthsearch:boa_offset_applied"] = boa_applied
    cat = pystac.Catalog("test", "generated Sentinel scenes")
    cat.add_item(_item("S1A_RTC_T33UUP", {"platform": "sentinel-1a"}, s1_assets))
    cat.add_item(_item("S2B_33UUP_20230601_L2A", props, s2_assets))
    cat.normalize_hrefs(str(root / "catalog"))
    cat.make_all_asset_hrefs_relative()
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    items = {i.id: Path(i.get_self_href()) for i in cat.get_items()}
    return items["S1A_RTC_T33UUP"], items["S2B_33UUP_20230601_L2A"], {"vv": vv, "vh": vh, **dn}


def test_items_hold_relative_hrefs_and_are_read_as_one_raster(tmp_path):
    s1, s2, data = static_catalog(tmp_path)
    hrefs = [a["href"] for a in json.loads(s1.read_text())["assets"].values()]
    assert all(h.startswith("..") for h in hrefs)  # relative to the item file: resolved against it
    scene = stac_item(s2)
    assert scene.names == ("B2", "B3", "B4", "B5", "B8") and scene.dn_offset == -1000.0
    with open_source(s1, "sar", units="auto") as src:
        assert src.band_names == ("VV", "VH") and src.units == "linear"
        r = src.read(PixelWindow(0, 0, 64, 64))
        assert np.allclose(r.values[0], 10 * np.log10(data["vv"]), atol=1e-4)  # linear γ⁰ → dB
        assert np.allclose(r.values[1], 10 * np.log10(data["vh"]), atol=1e-4)
    with open_source(s2, "optical") as src:
        assert src.grid.transform.a == 10 and src.grid.width == 64 and src.dn_offset == -1000.0
        stored = src.read_stored(PixelWindow(0, 0, 64, 64), ["B4", "B5"])
        assert np.array_equal(stored[0], data["red"])
        assert stored[1].shape == (64, 64)  # the 20 m band on the 10 m grid
        refl = src.read(PixelWindow(0, 0, 4, 4), ["B4"]).values[0]
        assert np.allclose(refl, (data["red"][:4, :4].astype(np.float64) - 1000) / 10000, atol=1e-6)


@pytest.mark.parametrize("baseline, applied, offset", [("03.01", None, 0.0), ("04.00", None, -1000.0),
                                                        ("05.10", True, 0.0)])
def test_the_dn_offset_follows_the_processing_baseline(tmp_path, baseline, applied, offset):
    _, s2, _ = static_catalog(tmp_path, baseline, applied)
    assert stac_item(s2).dn_offset == offset


def test_items_that_cannot_be_read_are_one_line_errors(tmp_path):
    s1, s2, _ = static_catalog(tmp_path)
    with pytest.raises(InputError, match=r"is a Sentinel-1 .* item, but the optical raster is read here .give the Sentinel-2"):
        open_source(s1, "optical")
    raw = json.loads(s2.read_text())
    raw["assets"] = {"visual": raw["assets"]["visual"]}
    (tmp_path / "none.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"names no Sentinel-1 polarisation .* \(assets: visual\)"):
        stac_item(tmp_path / "none.json")
    raw["assets"] = {"red": {"href": "s3://bucket/red.tif"}}
    (tmp_path / "remote.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"asset s3://bucket/red.tif is neither an http\(s\) URL nor a file"):
        stac_item(tmp_path / "remote.json")
    with pytest.raises(InputError, match="is a STAC Catalog, not an Item"):
        stac_item(tmp_path / "catalog" / "catalog.json")
    with pytest.raises(InputError, match="file not found"):
        stac_item(tmp_path / "missing.json")


def test_tile_translate_and_eval_take_items(tmp_path):
    s1, s2, data = static_catalog(tmp_path)
    run = CliRunner().invoke
    r = run(app, ["tile", str(s1), "--optical", str(s2), "--size", "32", "--split", "1,0,0",
                  "--out", str(tmp_path / "tiles")])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "tiles" / "tiling.json").read_text())
    assert rec["sar_bands"] == ["VV", "VH"] and rec["optical_bands"] == ["B2", "B3", "B4", "B5", "B8"]
    assert rec["normalization"]["optical"]["offset"] == -1000.0  # from s2:processing_baseline 05.09
    with rasterio.open(next((tmp_path / "tiles" / "s1").glob("*.tif"))) as t:
        assert np.nanmax(t.read(1)) < 0  # dB, not linear
    n = sar_normalization().to_dict()
    ckpt = save_network(tmp_path / "id.safetensors", Identity(2), kind="generator", arch="identity",
                        arch_kwargs={"channels": 2}, meta={"model": "identity", "direction": "identity",
                                                           "in_norm": n, "out_norm": n, "tile_size": 128,
                                                           "run": "test"})
    r = run(app, ["translate", str(s1), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.tif"),
                  "--device", "cpu"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "o.tif") as o:
        assert (o.width, o.height) == (64, 64)
        assert np.allclose(o.read(1), np.clip(10 * np.log10(data["vv"]), -25, 0), atol=1e-4)
    pred = tmp_path / "pred.tif"
    with rasterio.open(pred, "w", driver="GTiff", height=64, width=64, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(X0, Y0, 10, 10), nodata=0) as d:
        d.write(np.stack([data["red"], data["green"], data["blue"]]))
        d.descriptions = ("B4", "B3", "B2")
        d.update_tags(dn_offset="-1000")
    r = run(app, ["eval", "--pred", str(pred), "--target", str(s2), "--metrics", "mae", "--report",
                  str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["summary"]["mae"]["value"] == pytest.approx(0.0, abs=1e-7)
    assert rep["inputs"]["dn_offset"]["target"] == -1000.0


def test_tiling_items_of_different_baselines_or_against_s2_offset_is_refused(tmp_path):
    from sarkit.data.tiling import TileOptions, tile_scene, tile_scenes, scene_record

    s1a, s2a, _ = static_catalog(tmp_path / "a", "03.01")
    s1b, s2b, _ = static_catalog(tmp_path / "b", "04.00")
    with pytest.raises(InputError, match="different DN offsets"):
        tile_scenes([scene_record(s1a, s2a), scene_record(s1b, s2b)], tmp_path / "t", TileOptions(size=32))
    with pytest.raises(InputError, match="--s2-offset applies −1000, but STAC item .* drop --s2-offset"):
        tile_scene(s1a, s2a, None, tmp_path / "t", TileOptions(size=32, s2_offset=True))
    assert not (tmp_path / "t").exists()
    tile_scene(s1a, s2a, None, tmp_path / "t", TileOptions(size=32, split=(1, 0, 0)))
    assert json.loads((tmp_path / "t" / "tiling.json").read_text())["normalization"]["optical"]["offset"] == 0.0


def test_realdata_bigearthnet_bands_as_stac_items_read_like_the_band_files(tmp_path, realdata):
    """Items over the real BigEarthNet patch (absolute hrefs; S1 stored in dB, said by raster:bands) read the same
    pixels as the comma lists of its files."""
    s1_dir = realdata / "bigearthnet" / "BigEarthNet-S1-v1.0" / "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48"
    s2_dir = realdata / "bigearthnet" / "BigEarthNet-v1.0" / "S2A_MSIL2A_20170613T101031_87_48"
    if not s1_dir.is_dir() or not s2_dir.is_dir():
        pytest.skip("BigEarthNet sample absent")
    s1_files = {p: next(s1_dir.glob(f"*_{p.upper()}.tif")) for p in ("vv", "vh")}
    s2_files = {b: next(s2_dir.glob(f"*_{b}.tif")) for b in ("B02", "B03", "B04", "B05", "B8A")}
    item1 = _item("s1", {}, s1_files)
    for a in item1.assets.values():
        a.extra_fields["raster:bands"] = [{"unit": "dB"}]
    item1.save_object(include_self_link=False, dest_href=str(tmp_path / "s1.json"))
    _item("s2", {"s2:processing_baseline": "02.05"}, s2_files).save_object(
        include_self_link=False, dest_href=str(tmp_path / "s2.json"))
    win = PixelWindow(0, 0, 120, 120)
    with open_source(tmp_path / "s1.json", "sar") as item, \
            open_source([s1_files["vv"], s1_files["vh"]], "sar", units="db") as files:
        assert item.band_names == ("VV", "VH") and item.units == "db"
        assert np.array_equal(item.read(win).values, files.read(win).values, equal_nan=True)
    with open_source(tmp_path / "s2.json", "optical") as item, \
            open_source(list(s2_files.values()), "optical") as files:
        assert item.band_names == ("B2", "B3", "B4", "B5", "B8A") == files.band_names and item.dn_offset == 0
        assert np.array_equal(item.read_stored(win), files.read_stored(win))
