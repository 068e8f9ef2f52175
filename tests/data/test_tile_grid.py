"""sarkit tile --grid FILE: the tiles take the named raster's pixel grid (S1 and optical resampled onto it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.data.tiling import TileOptions, tile_scene
from test_multifile_tiling import one_band


def _scene(tmp_path: Path) -> tuple[Path, Path, list[Path], Path]:
    """Per-polarisation S1 (10 m, 120 px), per-band S2 (B02–B04 at 10 m, B05 at 20 m), and a 20 m grid raster."""
    rng = np.random.default_rng(5)
    vv = one_band(tmp_path / "x_VV.tif", rng.uniform(-20, -5, (120, 120)).astype(np.float32), 10)
    vh = one_band(tmp_path / "x_VH.tif", rng.uniform(-26, -12, (120, 120)).astype(np.float32), 10)
    s2 = [one_band(tmp_path / f"y_{b}.tif", rng.integers(200, 3000, (120, 120)).astype(np.uint16), 10)
          for b in ("B02", "B03", "B04")]
    s2.append(one_band(tmp_path / "y_B05.tif", rng.integers(200, 3000, (60, 60)).astype(np.uint16), 20))
    grid = one_band(tmp_path / "grid20.tif", np.zeros((60, 60), np.uint8), 20)
    return vv, vh, s2, grid


def test_tiles_take_the_grid_of_the_grid_file(tmp_path):
    vv, vh, s2, grid = _scene(tmp_path)
    out = tmp_path / "tiles"
    tile_scene(f"{vv},{vh}", ",".join(map(str, s2)), None, out, TileOptions(size=30, split=(1, 0, 0), grid=grid))
    tiles = sorted((out / "s1").glob("*.tif"))
    assert len(tiles) == 4  # 60×60 px of 20 m
    for t in tiles:
        with rasterio.open(t) as ds:
            assert ds.transform.a == 20 and (ds.width, ds.height) == (30, 30)
        with rasterio.open(out / "s2" / t.name) as ds:
            assert ds.transform.a == 20 and ds.count == 4
    with rasterio.open(vv) as src, rasterio.open(out / "s1" / tiles[0].name) as tile:
        vv20 = src.read(1, out_shape=(60, 60), resampling=rasterio.enums.Resampling.average)
        assert np.abs(tile.read(1) - vv20[:30, :30]).mean() < 1.0  # bilinear onto the 20 m grid, not the 10 m one
    assert json.loads((out / "tiling.json").read_text())["params"]["grid"] == str(grid)


def test_one_s1_file_is_read_onto_the_grid_too_and_a_missing_grid_is_one_line(tmp_path):
    vv, vh, s2, grid = _scene(tmp_path)
    out = tmp_path / "tiles"
    tile_scene(str(vv), None, None, out, TileOptions(size=30, split=(1, 0, 0), grid=grid))
    with rasterio.open(next((out / "s1").glob("*.tif"))) as ds:
        assert ds.transform.a == 20
    r = CliRunner().invoke(app, ["tile", "--s1", str(vv), "--out", str(tmp_path / "t2"), "--size", "30",
                                 "--grid", str(tmp_path / "nope.tif")])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--grid" in lines[0] and "nope.tif" in lines[0] and "not found" in lines[0]
