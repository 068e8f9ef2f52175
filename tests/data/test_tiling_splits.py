"""Tests of split assignment across the files of one tiling run: no ground is shared between train, val and test.

SEN12MS / SEN12MS-CR patches overlap their neighbours by 50 % (256-pixel patches every 128 pixels), so blocks must
be laid on the ground over all files, not per file. The patches here are windows of one seeded mosaic, so
overlapping tiles hold identical pixels as in the real datasets.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import rasterio
import rasterio.windows
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject, transform, transform_bounds
from shapely.geometry import Polygon

from sarkit.data.tiling import TileOptions, footprint_overlaps, tile_layout
from sarkit.raster.grid import Bounds

UTM31 = "EPSG:32631"
UTM32 = "EPSG:32632"
X0, Y0 = 700000.0, 5000000.0  # near the east edge of zone 31 (≈ 5.6° E, 45° N)


def _write(path: Path, data: np.ndarray, crs: str, tf) -> None:
    """A (bands, h, w) array as a GeoTIFF."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nodata = float("nan") if data.dtype.kind == "f" else 0
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype.name, crs=crs, transform=tf, nodata=nodata) as dst:
        dst.write(data)


def _mosaic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded SAR (2 bands, dB) and optical (13 bands, DN) mosaic of n×n pixels."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-25, 0, (2, n, n)).astype(np.float32),
            rng.integers(1, 5000, (13, n, n)).astype(np.uint16))


def write_patches(root: Path, grid: int, patch: int = 256, step: int = 128, row_only: bool = False) -> list[str]:
    """SEN12MS-CR-style patches (flat ``s1/`` + ``s2_cloudfree/``) cut every ``step`` pixels from one mosaic."""
    sar, opt = _mosaic(patch + step * (grid - 1))
    names = []
    rows = [0] if row_only else range(grid)
    for i, j in itertools.product(rows, range(grid)):
        r, c = i * step, j * step
        name = f"ROIs0000_test_1_p{i * grid + j}.tif"
        tf = from_origin(X0 + c * 10.0, Y0 - r * 10.0, 10.0, 10.0)
        _write(root / "s1" / name, sar[:, r:r + patch, c:c + patch], UTM31, tf)
        _write(root / "s2_cloudfree" / name, opt[:, r:r + patch, c:c + patch], UTM31, tf)
        names.append(name)
    return names


def manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def footprint(row: dict[str, str], to: str = UTM31, n: int = 16) -> Polygon:
    """The tile's footprint as a polygon in ``to`` (edges densified when reprojected)."""
    l, b, r, t = (float(row[k]) for k in ("left", "bottom", "right", "top"))
    s = np.linspace(0, 1, n, endpoint=False)
    xs = np.concatenate([l + (r - l) * s, np.full(n, r), r - (r - l) * s, np.full(n, l)])
    ys = np.concatenate([np.full(n, b), b + (t - b) * s, np.full(n, t), t - (t - b) * s])
    if row["crs"] != to:
        xs, ys = transform(row["crs"], to, xs.tolist(), ys.tolist())
    return Polygon(zip(xs, ys))


def shared_ground(rows: list[dict[str, str]]) -> list[tuple[str, str, float]]:
    """Pairs of tiles of different splits whose footprints share ground (area over 1e-3 m², in the first
    tile's CRS)."""
    polys = [footprint(r, to=rows[0]["crs"]) for r in rows]
    bad = []
    for (a, pa), (b, pb) in itertools.combinations(zip(rows, polys), 2):
        if a["split"] != b["split"]:
            area = pa.intersection(pb).area
            if area > 1e-3:
                bad.append((a["tile_id"], b["tile_id"], area))
    return bad


def test_three_overlapping_patches_never_share_a_pixel_between_splits(tmp_path):
    write_patches(tmp_path / "data", 3, row_only=True)
    out = tmp_path / "t"
    summary = tile_layout(tmp_path / "data", "sen12ms", out, TileOptions(split=(0.4, 0.3, 0.3)))
    rows = manifest(out)
    assert summary.scenes == 3
    assert shared_ground(rows) == []
    # a val tile pixel-identical to part of a train tile is what the bug gave: check the pixels too
    by_split: dict[str, list[np.ndarray]] = {}
    for r in rows:
        with rasterio.open(out / r["s1_path"]) as t:
            by_split.setdefault(r["split"], []).append(t.read(1)[:, 128:])
    for (sa, ta), (sb, tb) in itertools.combinations(by_split.items(), 2):
        assert not any(np.array_equal(x, y) for x in ta for y in tb), (sa, sb)
    # all three lie in one ground block (two tiles wide), so none is dropped
    assert summary.written == 3 and summary.skipped.get("split_overlap", 0) == 0


def test_grid_of_overlapping_patches_keeps_splits_apart_and_every_tile(tmp_path):
    write_patches(tmp_path / "data", 5)
    out = tmp_path / "t"
    summary = tile_layout(tmp_path / "data", "sen12ms", out, TileOptions(size=128, split=(0.5, 0.3, 0.2), seed=3))
    rows = manifest(out)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert shared_ground(rows) == []
    # tiles lie on a 128 m grid and blocks are 256 px of ground: no tile crosses a block border, none dropped
    assert summary.written == 25 * 4 and summary.skipped.get("split_overlap", 0) == 0


def test_overlapping_tiles_in_different_crs_never_share_ground(tmp_path):
    sar, opt = _mosaic(256, seed=1)
    a_tf = from_origin(X0, Y0, 10.0, 10.0)
    data = tmp_path / "data"
    _write(data / "s1" / "a.tif", sar, UTM31, a_tf)
    _write(data / "s2_cloudfree" / "a.tif", opt, UTM31, a_tf)
    # scene b: the east half of a and as much beyond, resampled onto a 10 m grid of the next UTM zone
    left, bottom, right, top = transform_bounds(UTM31, UTM32, X0 + 1280.0, Y0 - 2560.0, X0 + 3840.0, Y0)
    b_tf = from_origin(left, top, 10.0, 10.0)
    b_sar = np.full((2, 256, 256), np.nan, np.float32)
    b_opt = np.zeros((13, 256, 256), np.uint16)
    reproject(sar, b_sar, src_transform=a_tf, src_crs=UTM31, dst_transform=b_tf, dst_crs=UTM32,
              resampling=Resampling.nearest, src_nodata=np.nan, dst_nodata=np.nan)
    reproject(opt, b_opt, src_transform=a_tf, src_crs=UTM31, dst_transform=b_tf, dst_crs=UTM32,
              resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    _write(data / "s1" / "b.tif", b_sar, UTM32, b_tf)
    _write(data / "s2_cloudfree" / "b.tif", b_opt, UTM32, b_tf)
    out = tmp_path / "t"
    tile_layout(data, "sen12ms", out, TileOptions(size=32, split=(0.5, 0.3, 0.2), max_nodata=0.0))
    rows = manifest(out)
    crss = {r["crs"] for r in rows}
    assert crss == {UTM31, UTM32}
    assert len({r["split"] for r in rows}) >= 2
    assert shared_ground(rows) == []


def test_footprint_overlaps_ignores_touching_and_float_noise_but_not_a_pixel():
    tol = 1e-5
    boxes = [Bounds(0, 0, 100, 100), Bounds(100, 0, 200, 100), Bounds(99.999999999, 0, 200, 100),
             Bounds(190, 90, 290, 190)]
    pairs = footprint_overlaps(boxes, [UTM31] * 4, [tol] * 4)
    assert sorted(map(tuple, pairs.tolist())) == [(1, 2), (1, 3), (2, 3)]  # not (0, 1) nor (0, 2)
    # the same ground in two CRSs overlaps; ground a kilometre away does not
    near = transform_bounds(UTM31, UTM32, X0, Y0 - 100, X0 + 100, Y0)
    far = transform_bounds(UTM31, UTM32, X0 + 1000, Y0 - 100, X0 + 1100, Y0)
    pairs = footprint_overlaps([Bounds(X0, Y0 - 100, X0 + 100, Y0), Bounds(*near), Bounds(*far)],
                               [UTM31, UTM32, UTM32], [tol] * 3)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1)]


def test_real_sen12mscr_patches_far_apart_are_both_kept(realdata, tmp_path):
    root = realdata / "sen12mscr_glfcr"
    out = tmp_path / "t"
    summary = tile_layout(root, "sen12ms", out, TileOptions(split=(0.5, 0.5, 0.0)))
    rows = manifest(out)
    assert {r["crs"] for r in rows} == {"EPSG:32650", "EPSG:32631"}
    assert summary.written == 2 and summary.skipped.get("split_overlap", 0) == 0
    assert sorted(r["split"] for r in rows) == ["train", "val"]


def test_real_sen12mscr_overlapping_crops_never_share_ground(realdata, tmp_path):
    src = sorted((realdata / "sen12mscr_glfcr" / "s1").glob("*.tif"))[0]
    partner = realdata / "sen12mscr_glfcr" / "s2_cloudfree" / src.name
    data = tmp_path / "data"
    for k, (r, c) in enumerate(itertools.product((0, 64, 128), (0, 64, 128))):
        win = rasterio.windows.Window(c, r, 128, 128)
        for path, sub in ((src, "s1"), (partner, "s2_cloudfree")):
            with rasterio.open(path) as s:
                _write(data / sub / f"crop{k}.tif", s.read(window=win), s.crs.to_string(),
                       s.window_transform(win))
    out = tmp_path / "t"
    tile_layout(data, "sen12ms", out, TileOptions(size=64, split=(0.4, 0.3, 0.3), max_nodata=1.0))
    rows = manifest(out)
    assert len({r["split"] for r in rows}) >= 2
    assert shared_ground(rows) == []

