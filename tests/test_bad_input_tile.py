"""The bad-input table of ``sarkit tile``: each bad input exits 2 with one line (one JSON error event) naming the
file or option, and writes nothing.

Every input is built in code (small seeded rasters). Cases about SAR units, not-SAR input, truncated files and
±inf belong to the raster layer's table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from badinput import BadInput, assert_refused
from sarkit.raster.norm import S2_BANDS

UTM = "EPSG:32631"
N = 128  # scene side in pixels


def _tif(path: Path, data: np.ndarray, crs: str | None = UTM, x0: float = 500000.0, y0: float = 5600000.0,
         nodata=None, descriptions=None) -> Path:
    """A (bands, h, w) array as a GeoTIFF on a 10 m grid with top-left corner (x0, y0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data[None] if data.ndim == 2 else data
    prof = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                dtype=data.dtype.name, transform=from_origin(x0, y0, 10.0, 10.0), nodata=nodata)
    if crs:
        prof["crs"] = crs
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
    return path


def _rng() -> np.random.Generator:
    return np.random.default_rng(15)


def s1(src: Path, name: str = "s1.tif") -> str:
    """A valid 2-band dB Sentinel-1 scene."""
    return str(_tif(src / name, _rng().uniform(-25, 0, (2, N, N)).astype(np.float32), nodata=float("nan")))


def s2(src: Path, name: str = "s2.tif", **kw) -> str:
    """A valid 13-band uint16 Sentinel-2 scene (band descriptions set)."""
    return str(_tif(src / name, _rng().integers(1, 5000, (13, N, N)).astype(np.uint16), nodata=0,
                    descriptions=list(S2_BANDS), **kw))


def aoi(src: Path, coords: list[list[float]]) -> str:
    """A GeoJSON polygon (EPSG:4326)."""
    p = src / "aoi.geojson"
    p.write_text(json.dumps({"type": "Polygon", "coordinates": [coords]}))
    return str(p)


def not_json(src: Path) -> str:
    """A file that is not JSON at all."""
    p = src / "area.json"
    p.write_text("POLYGON((0 0, 1 0, 1 1, 0 0))")
    return str(p)


def flat_layout(src: Path, s2_folder: str) -> str:
    """A flat SEN12MS-CR folder with one S1 patch and its optical partner in ``s2_folder``."""
    root = src / "data"
    s1(root / "s1", "p1.tif")
    s2(root / s2_folder, "p1.tif")
    return str(root)


def mixed_bands(src: Path) -> str:
    """A flat SEN12MS-CR folder whose two S1 patches have different bands (2 and 1)."""
    root = src / "data"
    s1(root / "s1", "a.tif")
    s2(root / "s2_cloudfree", "a.tif")
    _tif(root / "s1" / "b.tif", _rng().uniform(-25, 0, (1, N, N)).astype(np.float32))
    s2(root / "s2_cloudfree", "b.tif")
    return str(root)


def existing_out(src: Path) -> list[str]:
    """A valid scene, and an --out folder that already holds a file."""
    out = src.parent / "work" / "out"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    return [s1(src)]


CASES = [
    BadInput("missing s1", lambda d: [str(d / "absent.tif")], says=["absent.tif", "not found"]),
    BadInput("s1 is a folder", lambda d: [str(d)], says=["src"]),
    BadInput("missing optical", lambda d: [s1(d), "--optical", str(d / "absent_s2.tif")],
             says=["optical raster", "absent_s2.tif"]),
    BadInput("optical elsewhere", lambda d: [s1(d), "--optical", s2(d, x0=100000.0, y0=1000000.0)],
             says=["do not overlap", "s2.tif"]),
    BadInput("labels elsewhere", lambda d: [s1(d), "--labels", str(_tif(
        d / "lab.tif", np.ones((N, N), np.uint8), x0=100000.0, y0=1000000.0))], says=["do not overlap", "lab.tif"]),
    BadInput("optical without rgb bands", lambda d: [s1(d), "--optical", str(_tif(
        d / "two.tif", np.ones((2, N, N), np.uint16)))], says=["two.tif", "no band 'B4'"]),
    BadInput("optical float reflectance", lambda d: [s1(d), "--optical", str(_tif(
        d / "refl.tif", np.full((13, N, N), 0.1, np.float32)))], says=["refl.tif", "float reflectance"]),
    BadInput("labels not integers", lambda d: [s1(d), "--labels", str(_tif(
        d / "lab.tif", _rng().uniform(0, 3, (N, N)).astype(np.float32)))], says=["lab.tif", "not class ids"]),
    BadInput("labels with three bands", lambda d: [s1(d), "--labels", str(_tif(
        d / "rgb_labels.tif", np.ones((3, N, N), np.uint8)))], says=["rgb_labels.tif", "3 bands"]),
    BadInput("size zero", lambda d: [s1(d), "--size", "0"], says=["--size must be positive"]),
    BadInput("size larger than scene", lambda d: [s1(d), "--size", "256"], says=["--size 256", "larger"]),
    BadInput("stride negative", lambda d: [s1(d), "--stride", "-8"], says=["--stride must be positive"]),
    BadInput("split not summing to 1", lambda d: [s1(d), "--split", "0.5,0.4,0.4"], says=["--split", "summing"]),
    BadInput("split negative", lambda d: [s1(d), "--split", "-0.1,0.6,0.5"], says=["--split", "non-negative"]),
    BadInput("max nodata above 1", lambda d: [s1(d), "--max-nodata", "2"], says=["--max-nodata"]),
    BadInput("s1 units unknown", lambda d: [s1(d), "--s1-units", "watts"], says=["--s1-units", "watts"]),
    BadInput("s1 range reversed", lambda d: [s1(d), "--s1-range", "0,-25"], says=["--s1-range", "hi > lo"]),
    BadInput("lc classes unknown", lambda d: [s1(d), "--lc-classes", "lccs"], says=["--lc-classes", "lccs"]),
    BadInput("aoi file missing", lambda d: [s1(d), "--aoi", str(d / "absent.geojson")],
             says=["AOI file not found", "absent.geojson"]),
    BadInput("aoi not geojson", lambda d: [s1(d), "--aoi", not_json(d)], says=["not valid GeoJSON", "area.json"]),
    BadInput("aoi elsewhere", lambda d: [s1(d), "--aoi", aoi(d, [[10, 10], [11, 10], [11, 11], [10, 10]])],
             says=["does not intersect"]),
    BadInput("unknown layout", lambda d: [str(d), "--layout", "spacenet"], says=["unknown layout 'spacenet'"]),
    BadInput("layout root missing", lambda d: [str(d / "absent"), "--layout", "sen12ms"],
             says=["--layout sen12ms", "absent", "does not exist"]),
    BadInput("layout root empty", lambda d: [str(d), "--layout", "sen12ms"], says=["the folder is empty"]),
    BadInput("layout folders misnamed", lambda d: [flat_layout(d, "optical"), "--layout", "sen12ms"],
             says=["optical/", "s2_cloudfree", "none has a partner"]),
    BadInput("layout cloudy absent", lambda d: [flat_layout(d, "s2_cloudfree"), "--layout", "sen12ms", "--cloudy"],
             says=["s2_cloudy", "s2_cloudfree/"]),
    BadInput("layout sen1floods11 on sen12ms", lambda d: [flat_layout(d, "s2_cloudfree"), "--layout", "sen1floods11"],
             says=["no Sen1Floods11 chips", "s1/", "S1Hand"]),
    BadInput("layout with optical", lambda d: [flat_layout(d, "s2_cloudfree"), "--layout", "sen12ms", "--optical",
                                               s2(d)], says=["drop --optical"]),
    BadInput("layout bands differ", lambda d: [mixed_bands(d), "--layout", "sen12ms"], says=["bands differ", "b.tif"]),
    BadInput("out exists", existing_out, says=["out", "--overwrite"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tile_refuses(case: BadInput, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    work = tmp_path / "work"
    args = case.build(src)
    work.mkdir(exist_ok=True)
    size = [] if "--size" in args else ["--size", "64"]
    assert_refused(["tile", *args, *size, "--out", str(work / "out")], watch=tmp_path, code=case.code,
                   says=case.says)


def test_every_tile_nodata_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    """Refused only after the tiles were read, so progress comes first: the error is the last line."""
    from typer.testing import CliRunner

    from sarkit.cli import app

    src = tmp_path / "src"
    zeros = _tif(src / "zeros.tif", np.zeros((13, N, N), np.uint16), nodata=0, descriptions=list(S2_BANDS))
    args = ["tile", s1(src), "--optical", str(zeros), "--size", "64", "--out", str(tmp_path / "work" / "out")]
    (tmp_path / "work").mkdir()
    for mode in (["--quiet"], ["--log-format", "json"]):
        res = CliRunner().invoke(app, [*args, *mode])
        last = res.stderr.strip().splitlines()[-1]
        assert res.exit_code == 2 and "no tile passed the filters" in last and "--max-nodata" in last, res.stderr
        assert list((tmp_path / "work").iterdir()) == []
    assert res.stderr.count('"event": "error"') == 1


def test_table_has_at_least_twelve_cases() -> None:
    assert len(CASES) >= 12 and len({c.name for c in CASES}) == len(CASES)
