"""The bad-input table of ``sarkit eval``: every row exits 2 with one line naming what was wrong (one JSON error
event with --log-format json) and writes nothing. Truncated files and ±inf pixels are the raster layer's rows."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from typer.testing import CliRunner

from badinput import BadInput, assert_refused, snapshot
from sarkit.cli import app

RGB = ("B4", "B3", "B2")


def _tif(path: Path, a: np.ndarray, nodata=0, crs: str | None = "EPSG:32631", x0: float = 500000.0,
         desc=RGB) -> Path:
    """A small GeoTIFF of ``a`` (C, H, W) with 10 m pixels from (x0, 4000000); ``crs`` None: no georeferencing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {} if crs is None else {"crs": crs, "transform": from_origin(x0, 4000000.0, 10, 10)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", height=a.shape[1], width=a.shape[2], count=a.shape[0],
                           dtype=a.dtype, nodata=nodata, **kw) as d:
            d.write(a)
            if desc and len(desc) == a.shape[0]:
                d.descriptions = tuple(desc)
    return path


def _dn(h: int = 48, w: int = 48, bands: int = 3, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((bands, h, w)) * 2500 + 1).astype("uint16")


def _pair(tmp: Path, **pred_kw) -> tuple[Path, Path]:
    """A target scene and a prediction (``pred_kw`` for _tif) under ``tmp/in``."""
    target = _tif(tmp / "in" / "t.tif", _dn())
    pred = _tif(tmp / "in" / "p.tif", pred_kw.pop("a", _dn(seed=1)), **pred_kw)
    return pred, target


def _args(tmp: Path, pred: Path, target: Path, *extra: str) -> list[str]:
    return ["eval", "--pred", str(pred), "--target", str(target), "--report", str(tmp / "out" / "rep"), *extra]


def _scenes(tmp: Path, *extra: str, **pred_kw) -> list[str]:
    return _args(tmp, *_pair(tmp, **pred_kw), *extra)


def _missing_pred(tmp: Path) -> list[str]:
    _, target = _pair(tmp)
    return _args(tmp, tmp / "in" / "nope.tif", target)


def _missing_target(tmp: Path) -> list[str]:
    pred, _ = _pair(tmp)
    return _args(tmp, pred, tmp / "in" / "nope.tif")


def _labels(tmp: Path, a: np.ndarray, nodata=None) -> list[str]:
    return _scenes(tmp, "--labels", str(_tif(tmp / "in" / "labels.tif", a, nodata, desc=None)))


def _target_without_crs(tmp: Path) -> list[str]:
    pred = _tif(tmp / "in" / "p.tif", _dn(seed=1))
    return _args(tmp, pred, _tif(tmp / "in" / "t.tif", _dn(), crs=None))


def _file_and_folder(tmp: Path) -> list[str]:
    pred, _ = _pair(tmp)
    (tmp / "in" / "tiles").mkdir()
    return _args(tmp, pred, tmp / "in" / "tiles")


def _no_common_tiles(tmp: Path) -> list[str]:
    _tif(tmp / "in" / "P" / "a.tif", _dn())
    _tif(tmp / "in" / "T" / "b.tif", _dn())
    return _args(tmp, tmp / "in" / "P", tmp / "in" / "T")


def _existing_report(tmp: Path) -> list[str]:
    (tmp / "out" / "rep").mkdir(parents=True)
    (tmp / "out" / "rep" / "report.json").write_text("{}")
    return _scenes(tmp)


def _compare_a_raster(tmp: Path) -> list[str]:
    pred, _ = _pair(tmp)
    return ["eval", "--compare", str(pred), "--report", str(tmp / "out" / "cmp")]


def _compare_foreign_json(tmp: Path) -> list[str]:
    (tmp / "in").mkdir()
    (tmp / "in" / "report.json").write_text(json.dumps({"loss": 0.1}))
    return ["eval", "--compare", str(tmp / "in"), "--report", str(tmp / "out" / "cmp")]


def _missing_segmenter(tmp: Path) -> list[str]:
    return _scenes(tmp, "--segmenter", str(tmp / "in" / "seg.safetensors"))


def _segmenter_not_a_checkpoint(tmp: Path) -> list[str]:
    (tmp / "in").mkdir()
    (tmp / "in" / "seg.safetensors").write_bytes(b"not a checkpoint")
    return _scenes(tmp, "--segmenter", str(tmp / "in" / "seg.safetensors"))


def _missing_fid_weights(tmp: Path) -> list[str]:
    target = _tif(tmp / "in" / "t.tif", _dn(300, 300))  # 4 scene windows: enough samples for FID
    pred = _tif(tmp / "in" / "p.tif", _dn(300, 300, seed=1))
    return _args(tmp, pred, target, "--metrics", "psnr,fid", "--fid-weights", str(tmp / "in" / "inception.pt"))


CASES = [
    BadInput("missing-pred", _missing_pred, says=["prediction not found", "nope.tif"]),
    BadInput("missing-target", _missing_target, says=["target not found", "nope.tif"]),
    BadInput("nothing-to-evaluate", lambda tmp: ["eval", "--report", str(tmp / "out" / "rep")],
             says=["nothing to evaluate", "--pred"]),
    BadInput("file-and-folder", _file_and_folder, says=["must both be files", "both directories"]),
    BadInput("no-common-tiles", _no_common_tiles, says=["no tile ids in common", "matched by file name"]),
    BadInput("no-overlap", lambda tmp: _scenes(tmp, x0=900000.0), says=["p.tif", "does not overlap"]),
    BadInput("band-counts", lambda tmp: _scenes(tmp, a=_dn(bands=2), desc=None),
             says=["different band counts", "--bands"]),
    BadInput("pred-without-crs", lambda tmp: _scenes(tmp, crs=None),
             says=["p.tif has no CRS", "--allow-ungeoreferenced"]),
    BadInput("target-without-crs", _target_without_crs, says=["target ", "t.tif has no CRS", "--allow-ungeoreferenced"]),
    BadInput("ungeoreferenced-other-size", lambda tmp: _scenes(tmp, "--allow-ungeoreferenced", crs=None,
                                                               a=_dn(40, 48)),
             says=["no CRS", "sizes differ"]),
    BadInput("labels-3-band-float", lambda tmp: _labels(tmp, np.full((3, 48, 48), np.nan, np.float32)),
             says=["--labels", "3 bands of float32", "one band of integer class ids"]),
    BadInput("labels-missing", lambda tmp: _scenes(tmp, "--labels", str(tmp / "in" / "l.tif")),
             says=["labels not found", "l.tif"]),
    BadInput("labels-without-crs", lambda tmp: _scenes(tmp, "--labels", str(_tif(
        tmp / "in" / "l.tif", np.zeros((1, 48, 48), np.uint8), 255, crs=None, desc=None))),
        says=["labels ", "l.tif has no CRS", "--allow-ungeoreferenced"]),
    BadInput("unknown-metric", lambda tmp: _scenes(tmp, "--metrics", "psnr,bogus"),
             says=["unknown metric 'bogus'", "psnr"]),
    BadInput("gate-wrong-direction", lambda tmp: _scenes(tmp, "--fail-under", "mae=0.1"),
             says=["mae", "--fail-over"]),
    BadInput("gate-on-metric-not-computed", lambda tmp: _scenes(tmp, "--metrics", "psnr", "--fail-under", "ssim=0.3"),
             says=["ssim", "--metrics"]),
    BadInput("unknown-band", lambda tmp: _scenes(tmp, "--bands", "B4,B99"), says=["no band 'B99'", "--bands"]),
    BadInput("band-twice", lambda tmp: _scenes(tmp, "--bands", "B4,b4"), says=["--bands", "twice"]),
    BadInput("sms-model", lambda tmp: _scenes(tmp, "--sms-model", "clip"), says=["--sms-model", "deeplab, sam"]),
    BadInput("segmenter-metric-without-segmenter", lambda tmp: _scenes(tmp, "--metrics", "pa"),
             says=["need a segmenter", "--segmenter"]),
    BadInput("segmenter-missing", _missing_segmenter, says=["--segmenter", "seg.safetensors", "not found"]),
    BadInput("segmenter-not-a-checkpoint", _segmenter_not_a_checkpoint, says=["--segmenter", "seg.safetensors"]),
    BadInput("fid-weights-missing", _missing_fid_weights, says=["--fid-weights", "inception.pt"]),
    BadInput("existing-report", _existing_report, says=["output exists", "--overwrite"]),
    BadInput("compare-a-raster", _compare_a_raster, says=["p.tif is not a sarkit eval report (not text)"]),
    BadInput("compare-foreign-json", _compare_foreign_json, says=["report.json", "not a sarkit eval report"]),
    BadInput("rgb8-prediction", lambda tmp: _scenes(tmp, a=(_dn(seed=1) // 40).astype("uint8")),
             says=["8-bit", "--format native"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_eval_refuses(case: BadInput, tmp_path: Path) -> None:
    args = case.build(tmp_path)
    assert_refused(args, watch=tmp_path, code=case.code, says=case.says)


def test_the_table_has_at_least_twelve_rows() -> None:
    assert len(CASES) >= 12 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("option,text,says", [
    ("--fail-under", "psnr", "metric=value"),
    ("--fail-over", "mae=lots", "'lots' is not a number"),
    ("--bands", ",", "--bands is empty"),
    ("--s2-range", "0", "--s2-range must be two numbers"),
])
def test_option_texts_that_do_not_parse_exit_2_naming_the_option(tmp_path: Path, option, text, says) -> None:
    """Syntax errors are the option parser's usage errors (exit 2, before any work, nothing written)."""
    args = _scenes(tmp_path, option, text)
    before = snapshot(tmp_path)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and option in res.stderr and says in res.stderr, res.stderr
    assert snapshot(tmp_path) == before


def test_the_table_inputs_are_accepted_once_repaired(tmp_path: Path) -> None:
    """The same builders give a working evaluation when nothing is wrong (the rows fail for their reason)."""
    res = CliRunner().invoke(app, _scenes(tmp_path, "-q"))
    assert res.exit_code == 0, res.stderr
    res = CliRunner().invoke(app, _scenes(tmp_path / "nocrs", "-q", "--allow-ungeoreferenced", crs=None))
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "nocrs" / "out" / "rep" / "report.json").is_file()
