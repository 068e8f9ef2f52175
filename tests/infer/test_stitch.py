"""Tests of tile mosaicking (sarkit/stitch.py) and the ``sarkit stitch`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rio_cogeo.cogeo import cog_validate
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.raster.grid import PixelWindow, window_grid
from sarkit.infer.stitch import StitchOptions, stitch

runner = CliRunner()
CRS = "EPSG:32631"
TRANSFORM = from_origin(500000.0, 4800000.0, 10.0, 10.0)


def scene_array(height: int, width: int, dtype: str = "float32", bands: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.uniform(-25, 0, size=(bands, height, width)).astype(np.float32)
    return rng.integers(1, 5000, size=(bands, height, width)).astype(dtype)


def write_scene(path: Path, data: np.ndarray, crs: str = CRS, transform=TRANSFORM, nodata=None) -> None:
    if nodata is None:
        nodata = float("nan") if data.dtype.kind == "f" else 0
    prof = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype=data.dtype.name,
                crs=crs, transform=transform, nodata=nodata)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        dst.descriptions = tuple(f"b{i + 1}" for i in range(data.shape[0]))


def cut_tiles(scene: Path, folder: Path, size: int, stride: int) -> list[Path]:
    """Cut ``size`` tiles every ``stride`` pixels (the last ones aligned to the end) with rasterio windows."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(scene) as src:
        for k, win in enumerate(window_grid(src.height, src.width, size, stride, cover=True)):
            w = win.to_rasterio()
            prof = {**src.profile, "width": win.width, "height": win.height,
                    "transform": src.window_transform(w)}
            p = folder / f"t{k:03d}.tif"
            with rasterio.open(p, "w", **prof) as dst:
                dst.write(src.read(window=w))
                dst.descriptions = src.descriptions
            paths.append(p)
    return paths


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.mark.parametrize("dtype", ["float32", "uint16"])
@pytest.mark.parametrize("stride", [70, 100])  # with overlap (30 px) and without
def test_stitch_tiles_cut_from_scene_gives_scene_back_exactly(tmp_path, stride, dtype):
    data = scene_array(260, 333, dtype)
    scene = tmp_path / "scene.tif"
    write_scene(scene, data)
    tiles = cut_tiles(scene, tmp_path / "tiles", 100, stride)
    out = tmp_path / "mosaic.tif"
    r = runner.invoke(app, ["stitch", str(tmp_path / "tiles"), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert len(tiles) > 4
    got = read(out)
    assert got.dtype == data.dtype
    np.testing.assert_array_equal(got, data)
    with rasterio.open(scene) as s, rasterio.open(out) as o:
        assert o.crs == s.crs and o.transform == s.transform and (o.width, o.height) == (s.width, s.height)
        assert o.descriptions == s.descriptions
    assert cog_validate(str(out))[0]
    assert {p.name for p in tmp_path.iterdir()} == {"scene.tif", "tiles", "mosaic.tif"}


def test_overlap_blends_differing_tiles_smoothly_and_nodata_gets_no_weight(tmp_path):
    a = np.full((1, 100, 100), 1.0, np.float32)
    b = np.full((1, 100, 100), 3.0, np.float32)
    b[0, :, :10] = np.nan  # nodata inside the overlap: only tile a counts there
    pa, pb = tmp_path / "a.tif", tmp_path / "b.tif"
    write_scene(pa, a)
    write_scene(pb, b, transform=TRANSFORM * rasterio.Affine.translation(60, 0))  # b starts 60 px right of a
    out = tmp_path / "m.tif"
    s = stitch([pa, pb], out)
    assert (s.width, s.height) == (160, 100)
    m = read(out)[0]
    assert np.all(m[:, :70] == 1.0)  # a alone, and a where b is nodata
    assert np.all(m[:, 100:] == 3.0)  # b alone: full weight on the mosaic border
    ramp = m[0, 70:100]
    assert np.all(np.diff(ramp) > 0) and ramp[0] > 1.0 and ramp[-1] < 3.0  # a smooth cross-fade


def test_uncovered_pixels_are_nodata(tmp_path):
    a = np.full((1, 50, 50), 2.0, np.float32)
    pa, pb = tmp_path / "a.tif", tmp_path / "b.tif"
    write_scene(pa, a)
    write_scene(pb, a, transform=TRANSFORM * rasterio.Affine.translation(80, 80))
    stitch([pa, pb], tmp_path / "m.tif")
    m = read(tmp_path / "m.tif")[0]
    assert m.shape == (130, 130)
    assert np.isnan(m[0, 100]) and np.isnan(m[100, 0]) and m[10, 10] == 2.0 and m[120, 120] == 2.0


def test_mixed_band_counts_exit_2(tmp_path):
    write_scene(tmp_path / "a.tif", scene_array(50, 50, bands=2))
    write_scene(tmp_path / "b.tif", scene_array(50, 50, bands=1))
    out = tmp_path / "m.tif"
    r = runner.invoke(app, ["stitch", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "band" in r.output
    assert not out.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"a.tif", "b.tif"}


def test_mixed_dtypes_exit_2(tmp_path):
    write_scene(tmp_path / "a.tif", scene_array(50, 50, "float32", bands=1))
    write_scene(tmp_path / "b.tif", scene_array(50, 50, "uint16", bands=1))
    r = runner.invoke(app, ["stitch", str(tmp_path), "--out", str(tmp_path / "m.tif")])
    assert r.exit_code == 2 and "data types" in r.output


def test_dn_offset_tag_is_carried_and_disagreement_is_refused(tmp_path):
    a, b = scene_array(50, 50, "uint16", bands=3), scene_array(50, 50, "uint16", bands=3, seed=1)
    pa, pb = tmp_path / "a.tif", tmp_path / "b.tif"
    write_scene(pa, a)
    write_scene(pb, b, transform=TRANSFORM * rasterio.Affine.translation(40, 0))
    for p, tag in ((pa, "-1000"), (pb, "-1000.0")):  # the same number however it is written
        with rasterio.open(p, "r+") as d:
            d.update_tags(dn_offset=tag)
    stitch([pa, pb], tmp_path / "m.tif")
    with rasterio.open(tmp_path / "m.tif") as m:
        assert m.tags()["dn_offset"] == "-1000"  # the mosaic is read back like its tiles
    with rasterio.open(pb, "r+") as d:
        d.update_tags(dn_offset="0")
    r = runner.invoke(app, ["stitch", str(pa), str(pb), "--out", str(tmp_path / "m2.tif")])
    assert r.exit_code == 2 and "different Sentinel-2 DN offsets" in r.output and "-1000 (a.tif)" in r.output
    assert not (tmp_path / "m2.tif").exists()
    pc = tmp_path / "c.tif"
    write_scene(pc, b)  # no tag at all: not known to match
    r = runner.invoke(app, ["stitch", str(pa), str(pc), "--out", str(tmp_path / "m3.tif")])
    assert r.exit_code == 2 and "none (c.tif)" in r.output


def test_existing_output_and_missing_input_exit_2(tmp_path):
    write_scene(tmp_path / "a.tif", scene_array(20, 20))
    out = tmp_path / "m.tif"
    out.write_bytes(b"keep")
    r = runner.invoke(app, ["stitch", str(tmp_path / "a.tif"), "--out", str(out)])
    assert r.exit_code == 2 and out.read_bytes() == b"keep"
    r = runner.invoke(app, ["stitch", str(tmp_path / "nope.tif"), "--out", str(tmp_path / "n.tif")])
    assert r.exit_code == 2 and not (tmp_path / "n.tif").exists()


def smooth(height: int, width: int) -> np.ndarray:
    r, c = np.mgrid[0:height, 0:width].astype(np.float32)
    return (100.0 + 40.0 * np.sin(r / 25.0) + 30.0 * np.cos(c / 17.0))[None].astype(np.float32)


def test_reprojected_input_lands_right(tmp_path):
    data = smooth(200, 200)
    scene = tmp_path / "scene.tif"
    write_scene(scene, data)
    left = tmp_path / "left.tif"
    write_scene(left, data[:, :, :100])
    # the right half, warped into EPSG:4326
    right_utm = tmp_path / "right_utm.tif"
    write_scene(right_utm, data[:, :, 100:], transform=TRANSFORM * rasterio.Affine.translation(100, 0))
    right = tmp_path / "right_4326.tif"
    with rasterio.open(right_utm) as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        prof = {**src.profile, "crs": "EPSG:4326", "transform": t, "width": w, "height": h}
        with rasterio.open(right, "w", **prof) as dst:
            reproject(rasterio.band(src, 1), rasterio.band(dst, 1), resampling=Resampling.bilinear)
    out = tmp_path / "m.tif"
    r = runner.invoke(app, ["stitch", str(left), str(right), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as o:
        assert o.crs.to_epsg() == 32631
        assert o.res == (10.0, 10.0)
        m = o.read(1)
        # the mosaic's pixel (row, col) covering scene pixel (i, j)
        col0 = round((TRANSFORM.c - o.transform.c) / 10.0)
        row0 = round((o.transform.f - TRANSFORM.f) / 10.0)
    assert abs(col0) <= 1 and abs(row0) <= 1
    sub = m[row0 + 10:row0 + 190, col0 + 110:col0 + 190]
    truth = data[0, 10:190, 110:190]
    err = np.nanmean(np.abs(sub - truth))
    shifted = np.nanmean(np.abs(m[row0 + 13:row0 + 193, col0 + 110:col0 + 190] - truth))
    assert err < 2.0, err  # values land where they belong (warp twice, nearest/bilinear resampling)
    assert shifted > 2 * err  # three pixels off would be clearly worse, so the check can fail
    np.testing.assert_array_equal(m[row0 + 5:row0 + 195, col0:col0 + 80], data[0, 5:195, :80])


def test_target_crs_option(tmp_path):
    data = smooth(60, 60)
    write_scene(tmp_path / "a.tif", data)
    out = tmp_path / "m.tif"
    s = stitch([tmp_path / "a.tif"], out, StitchOptions(crs="EPSG:3857"))
    with rasterio.open(out) as o:
        assert o.crs.to_epsg() == 3857 and s.width >= 60
    r = runner.invoke(app, ["stitch", str(tmp_path / "a.tif"), "--out", str(tmp_path / "x.tif"), "--crs", "nonsense"])
    assert r.exit_code == 2


def test_strips_read_only_intersecting_tiles(tmp_path, monkeypatch):
    from sarkit.infer import stitch as st

    data = scene_array(1200, 64, bands=1)
    write_scene(tmp_path / "s.tif", data)
    tiles = cut_tiles(tmp_path / "s.tif", tmp_path / "t", 100, 100)
    reads: list[tuple[str, PixelWindow]] = []
    real = st._Reader.read

    def spy(self, s, win):
        reads.append((s.path.name, win))
        return real(self, s, win)

    monkeypatch.setattr(st._Reader, "read", spy)
    stitch([tmp_path / "t"], tmp_path / "m.tif")
    # 12 tiles of 100 rows, 3 strips of 512 rows: a tile is read once per strip it touches (the tiles across
    # rows 512 and 1024 twice, each time only its part in that strip)
    assert len(tiles) == 12
    assert len(reads) == 12 + 2
    assert all(w.row_off // 512 == (w.row_end - 1) // 512 for _, w in reads)
    np.testing.assert_array_equal(read(tmp_path / "m.tif"), data)


def test_neighbour_buckets_match_brute_force():
    from sarkit.infer.stitch import _neighbours

    rng = np.random.default_rng(5)
    wins = [PixelWindow(int(r), int(c), int(h), int(w)) for r, c, h, w in
            zip(rng.integers(0, 500, 60), rng.integers(0, 500, 60), rng.integers(1, 90, 60), rng.integers(1, 90, 60))]
    got = _neighbours(wins)
    for k, w in enumerate(wins):
        brute = [o for m, o in enumerate(wins) if m != k and o.intersect(w) is not None]
        assert sorted(got[k]) == sorted(brute)


def test_float_noise_in_a_tile_grid_is_the_same_grid_and_half_a_pixel_is_not(tmp_path, monkeypatch):
    """Tiles are placed by the one grid rule: a pixel size off by float noise is read directly, exactly; a tile
    half a pixel off the first one's grid is warped."""
    from rasterio.transform import Affine

    from sarkit.infer import stitch as st

    a, b = scene_array(40, 60, seed=1), scene_array(40, 60, seed=2)
    write_scene(tmp_path / "a.tif", a)
    noisy = Affine(10.0 * (1 + 1e-15), 0.0, 500000.0 + 600.0, 0.0, -10.0 * (1 + 1e-15), 4800000.0)
    write_scene(tmp_path / "b.tif", b, transform=noisy)  # right of a, pixel size off by 1e-15 relative
    warped: list[str] = []
    real = st._Reader.read

    def spy(self, s, win):
        if not s.aligned:
            warped.append(s.path.name)
        return real(self, s, win)

    monkeypatch.setattr(st._Reader, "read", spy)
    stitch([tmp_path / "a.tif", tmp_path / "b.tif"], tmp_path / "m.tif")
    assert warped == []
    np.testing.assert_array_equal(read(tmp_path / "m.tif"), np.concatenate([a, b], axis=2))
    write_scene(tmp_path / "c.tif", b, transform=from_origin(500000.0 + 605.0, 4800000.0, 10.0, 10.0))
    stitch([tmp_path / "a.tif", tmp_path / "c.tif"], tmp_path / "n.tif")
    assert set(warped) == {"c.tif"}


def _far_apart(tmp_path: Path, km: float) -> list[Path]:
    """Two 128×64 float tiles (rows × columns) ``km`` kilometres apart (east–west) in one UTM zone."""
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    write_scene(a, scene_array(128, 64, bands=1))
    write_scene(b, scene_array(128, 64, bands=1, seed=1),
                transform=TRANSFORM * rasterio.Affine.translation(km * 100, 0))
    return [a, b]


def test_size_guard_refuses_far_apart_inputs_before_any_read(tmp_path, monkeypatch):
    from sarkit.infer import stitch as st

    paths = _far_apart(tmp_path, 1400)
    monkeypatch.setattr(st._Reader, "read", lambda *a: pytest.fail("read pixels before the size guard"))
    out = tmp_path / "m.tif"
    r = runner.invoke(app, ["stitch", *map(str, paths), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "the mosaic would be 140064×128 pixels (17,928,192)" in r.output
    assert "1,094× the 16,384 pixels of its 2 inputs" in r.output and "over the limit of 1,048,576" in r.output
    assert "--max-pixels 17928192" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_max_pixels_sets_the_limit_either_way(tmp_path):
    from sarkit.errors import InputError

    paths = _far_apart(tmp_path, 1400)
    out = tmp_path / "m.tif"
    s = stitch(paths, out, StitchOptions(max_pixels=140064 * 128))
    assert (s.width, s.height) == (140064, 128)
    with rasterio.open(out) as m:
        assert m.read(1, window=((0, 128), (0, 64))).tolist() == read(paths[0])[0].tolist()
    (tmp_path / "near").mkdir()
    small = _far_apart(tmp_path / "near", 1)
    with pytest.raises(InputError, match="over --max-pixels 1,000"):  # 164×128 pixels, 1.3× the inputs
        stitch(small, tmp_path / "n.tif", StitchOptions(max_pixels=1000))
    assert not (tmp_path / "n.tif").exists()


def test_size_guard_leaves_small_sets_and_sparse_scene_tiles_alone(tmp_path):
    paths = _far_apart(tmp_path, 20)  # 2064×128 pixels, 16× the inputs but below the 1024² floor
    s = stitch(paths, tmp_path / "m.tif")
    assert (s.width, s.height) == (2064, 128)


def test_max_pixels_and_resampling_are_checked(tmp_path):
    from sarkit.errors import InputError

    with pytest.raises(InputError, match="--max-pixels must be ≥ 1, got 0"):
        StitchOptions(max_pixels=0)
    with pytest.raises(InputError, match="--resampling 'gauss' is not a resampling method; use one of nearest"):
        StitchOptions(resampling="gauss")


def test_all_nodata_inputs_are_refused_and_nothing_is_written(tmp_path):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    write_scene(a, np.full((2, 40, 40), np.nan, np.float32))
    write_scene(b, np.full((2, 40, 40), 7, np.uint16)[:, :, :].astype(np.float32),
                transform=TRANSFORM * rasterio.Affine.translation(300, 0), nodata=7.0)
    out = tmp_path / "m.tif"
    r = runner.invoke(app, ["stitch", str(a), str(b), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "every pixel of the 2 inputs is nodata" in r.output and "nothing was written" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_out_an_existing_directory_is_refused_before_any_work(tmp_path, monkeypatch):
    import sarkit.infer.stitch as st

    write_scene(tmp_path / "a.tif", scene_array(20, 20))
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(st, "open_raster", lambda *a: pytest.fail("opened an input before checking --out"))
    for extra in ([], ["--overwrite"]):
        r = runner.invoke(app, ["stitch", str(tmp_path / "a.tif"), "--out", str(tmp_path / "out"), *extra])
        assert r.exit_code == 2 and "is a directory" in r.output and "mosaic.tif" in r.output, r.output
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_crs_is_refused_before_inputs_are_opened(tmp_path, monkeypatch):
    import sarkit.infer.stitch as st

    write_scene(tmp_path / "a.tif", scene_array(20, 20))
    monkeypatch.setattr(st, "open_raster", lambda *a: pytest.fail("opened an input before checking --crs"))
    r = runner.invoke(app, ["stitch", str(tmp_path / "a.tif"), "--out", str(tmp_path / "m.tif"), "--crs",
                            "EPSG:999999"])
    assert r.exit_code == 2 and "--crs 'EPSG:999999' is not a CRS" in r.output
