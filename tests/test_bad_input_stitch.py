"""Bad-input table of ``sarkit stitch``: each bad input exits 2 with one line (one JSON event), writing nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from badinput import BadInput, assert_refused

CRS = "EPSG:32631"


def tile(folder: Path, name: str, data: np.ndarray | None = None, col: int = 0, crs: str | None = CRS,
         nodata: float | None = None, tags: dict[str, str] | None = None) -> Path:
    """A small float (or ``data``'s dtype) GeoTIFF tile ``col`` pixels east of the origin, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = np.random.default_rng(col).uniform(-25, 0, (2, 32, 32)).astype(np.float32)
    if nodata is None:
        nodata = float("nan") if data.dtype.kind == "f" else 0
    path = folder / name
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=from_origin(500000 + 10 * col, 4800000, 10, 10),
                       nodata=nodata) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return path


def ins(tmp: Path) -> Path:
    """The inputs' folder."""
    return tmp / "in"


def out(tmp: Path) -> str:
    """The mosaic path (in the watched folder)."""
    return str(tmp / "out" / "m.tif")


def two_tiles(tmp: Path, **second: object) -> list[str]:
    """Two neighbouring tiles; ``second`` changes the second one."""
    a = tile(ins(tmp), "a.tif")
    b = tile(ins(tmp), "b.tif", **{"col": 24, **second})  # type: ignore[arg-type]
    return [str(a), str(b)]


def _empty_folder(tmp: Path) -> list[str]:
    ins(tmp).mkdir()
    return ["stitch", str(ins(tmp)), "--out", out(tmp)]


def _out_is_dir(tmp: Path) -> list[str]:
    (tmp / "out" / "m.tif").mkdir()
    return ["stitch", *two_tiles(tmp), "--out", out(tmp)]


def _out_exists(tmp: Path) -> list[str]:
    (tmp / "out" / "m.tif").write_bytes(b"keep")
    return ["stitch", *two_tiles(tmp), "--out", out(tmp)]


def _far_apart(tmp: Path) -> list[str]:
    a = tile(ins(tmp), "a.tif", np.ones((1, 128, 64), np.float32))
    b = tile(ins(tmp), "b.tif", np.ones((1, 128, 64), np.float32), col=140000)  # 1,400 km east
    return ["stitch", str(a), str(b), "--out", out(tmp)]


def _all_nodata(tmp: Path) -> list[str]:
    nan = np.full((2, 32, 32), np.nan, np.float32)
    a = tile(ins(tmp), "a.tif", nan)
    b = tile(ins(tmp), "b.tif", nan, col=24)
    return ["stitch", str(a), str(b), "--out", out(tmp)]


def _all_nodata_value(tmp: Path) -> list[str]:
    zeros = np.zeros((3, 32, 32), np.uint16)
    a = tile(ins(tmp), "a.tif", zeros)
    return ["stitch", str(a), "--out", out(tmp)]


def _no_crs(tmp: Path) -> list[str]:
    return ["stitch", *two_tiles(tmp, crs=None), "--out", out(tmp)]


def _dn_offsets_differ(tmp: Path) -> list[str]:
    dn = np.full((3, 32, 32), 1200, np.uint16)
    a = tile(ins(tmp), "a.tif", dn, tags={"dn_offset": "-1000"})
    b = tile(ins(tmp), "b.tif", dn, col=24)
    return ["stitch", str(a), str(b), "--out", out(tmp)]


def _out_is_input(tmp: Path) -> list[str]:
    a, b = two_tiles(tmp)
    return ["stitch", a, b, "--out", b]


CASES = [
    BadInput("no inputs", lambda t: ["stitch", "--out", out(t)], says=["no input tiles"]),
    BadInput("empty folder", _empty_folder, says=["holds no .tif files"]),
    BadInput("missing file", lambda t: ["stitch", str(t / "in" / "nope.tif"), "--out", out(t)],
             says=["input not found", "nope.tif"]),
    BadInput("bad crs", lambda t: ["stitch", *two_tiles(t), "--out", out(t), "--crs", "not-a-crs"],
             says=["--crs 'not-a-crs'"]),
    BadInput("unknown epsg", lambda t: ["stitch", *two_tiles(t), "--out", out(t), "--crs", "EPSG:999999"],
             says=["--crs 'EPSG:999999'"]),
    BadInput("bad resampling", lambda t: ["stitch", *two_tiles(t), "--out", out(t), "--resampling", "gauss"],
             says=["--resampling 'gauss'", "bilinear"]),
    BadInput("max pixels 0", lambda t: ["stitch", *two_tiles(t), "--out", out(t), "--max-pixels", "0"],
             says=["--max-pixels must be ≥ 1"]),
    BadInput("out a directory", _out_is_dir, says=["is a directory", "m.tif"]),
    BadInput("out exists", _out_exists, says=["output exists", "--overwrite"]),
    BadInput("out is an input", _out_is_input, says=["also an input"]),
    BadInput("far apart", _far_apart, says=["140064×128 pixels", "16,384 pixels of its 2 inputs", "--max-pixels"]),
    BadInput("over max pixels", lambda t: ["stitch", *two_tiles(t), "--out", out(t), "--max-pixels", "100"],
             says=["56×32 pixels", "over --max-pixels 100"]),
    BadInput("all nan", _all_nodata, says=["every pixel of the 2 inputs is nodata", "nothing was written"]),
    BadInput("all nodata value", _all_nodata_value, says=["every pixel of the 1 inputs is nodata"]),
    BadInput("band counts differ", lambda t: ["stitch", *two_tiles(t, data=np.ones((1, 32, 32), np.float32)),
                                              "--out", out(t)], says=["mixed band counts"]),
    BadInput("dtypes differ", lambda t: ["stitch", *two_tiles(t, data=np.ones((2, 32, 32), np.uint16)),
                                         "--out", out(t)], says=["mixed data types", "uint16"]),
    BadInput("no crs", _no_crs, says=["no CRS", "b.tif"]),
    BadInput("dn offsets differ", _dn_offsets_differ, says=["different Sentinel-2 DN offsets"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_stitch_refuses(case: BadInput, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    args = case.build(tmp_path)
    assert_refused(args, watch=tmp_path / "out", code=case.code, says=case.says)
    if ins(tmp_path).exists():  # the inputs are left as they were (no .lock, no temporaries next to them)
        assert {p.suffix for p in ins(tmp_path).iterdir()} <= {".tif"}
