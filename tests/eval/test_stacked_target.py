"""eval --target of several files (per-polarisation SAR, per-band optical at mixed resolutions) read through the
raster layer's StackedSource: the same numbers as the one-file target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sarkit.errors import InputError
from sarkit.eval.options import EvalOptions
from sarkit.eval.report import render_html
from sarkit.eval.runner import run_eval


def _write(path: Path, a: np.ndarray, px: float = 10, desc=None, nodata=None) -> Path:
    """A GeoTIFF of ``a`` (C, H, W) in EPSG:32631 with ``px`` m pixels from one corner."""
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[1], width=a.shape[2], count=a.shape[0],
                       dtype=a.dtype, crs="EPSG:32631", transform=from_origin(500000.0, 4000000.0, px, px),
                       nodata=nodata) as d:
        d.write(a)
        if desc:
            d.descriptions = tuple(desc)
    return path


def _db(shape, seed) -> np.ndarray:
    return (np.random.default_rng(seed).normal(-12, 3, shape)).astype("float32")


def test_sar_target_of_one_file_per_polarisation_gives_the_numbers_of_the_stacked_file(tmp_path):
    t = _db((2, 48, 40), 0)
    p = t + _db((2, 48, 40), 1) * 0.1
    pred = _write(tmp_path / "pred.tif", p, desc=("VV", "VH"))
    one = _write(tmp_path / "target.tif", t, desc=("VV", "VH"))
    vv = _write(tmp_path / "x_VV.tif", t[:1])
    vh = _write(tmp_path / "x_VH.tif", t[1:])
    opts = EvalOptions(metrics=("psnr", "mae"))
    ref = run_eval(opts, pred=pred, target=one).report
    res = run_eval(opts, pred=pred, target=Path(f"{vh},{vv}")).report  # order of the files does not matter
    assert res["bands"]["target"] == ["VV", "VH"] and res["bands"]["matched"] == "name"
    for m in ("psnr", "mae"):
        assert res["summary"][m]["value"] == pytest.approx(ref["summary"][m]["value"], rel=1e-6)
    assert res["summary"]["mae"]["value"] > 0


def test_optical_target_of_per_band_files_at_mixed_resolutions(tmp_path):
    rng = np.random.default_rng(2)
    b4 = (rng.random((1, 40, 40)) * 2000 + 500).astype("uint16")
    b3 = (rng.random((1, 40, 40)) * 2000 + 500).astype("uint16")
    b5 = np.full((1, 20, 20), 1500, "uint16")  # 20 m: read onto the 10 m grid
    files = [_write(tmp_path / "T_B04.tif", b4), _write(tmp_path / "T_B03.tif", b3),
             _write(tmp_path / "T_B05.tif", b5, px=20)]
    pred = _write(tmp_path / "pred.tif", np.concatenate([b4, b3, np.full((1, 40, 40), 1500, "uint16")]),
                  desc=("B4", "B3", "B5"))
    res = run_eval(EvalOptions(metrics=("psnr", "mae")), pred=pred, target=Path(",".join(map(str, files))))
    rep = res.report
    assert rep["inputs"]["size"] == [40, 40]
    assert rep["bands"]["target"] == ["B4", "B3", "B5"]
    assert rep["summary"]["mae"]["value"] == pytest.approx(0.0, abs=1e-7)  # bilinear of a constant is the constant
    previews = {o["label"]: o["png"] for o in res.overview}  # the target's preview reads each band from its file
    assert previews["target"] == previews["prediction"]
    assert "target" in render_html(res.report, res.thumbnails, res.overview)


def test_a_missing_file_of_a_target_list_is_a_one_line_error(tmp_path):
    vv = _write(tmp_path / "x_VV.tif", _db((1, 16, 16), 3))
    pred = _write(tmp_path / "pred.tif", _db((2, 16, 16), 4), desc=("VV", "VH"))
    with pytest.raises(InputError, match=r"target not found: .*x_VH.tif"):
        run_eval(EvalOptions(), pred=pred, target=Path(f"{vv},{tmp_path / 'x_VH.tif'}"))


def test_a_prediction_of_several_files_is_read_onto_the_target_grid(tmp_path):
    t = _db((2, 32, 32), 5)
    target = _write(tmp_path / "target.tif", t, desc=("VV", "VH"))
    coarse = t.reshape(2, 16, 2, 16, 2).mean(axis=(2, 4))  # the prediction at 20 m
    vv = _write(tmp_path / "p_VV.tif", coarse[:1], px=20)
    vh = _write(tmp_path / "p_VH.tif", coarse[1:], px=20)
    pred_one = _write(tmp_path / "pred.tif", coarse, px=20, desc=("VV", "VH"))
    opts = EvalOptions(metrics=("psnr", "mae"))
    ref = run_eval(opts, pred=pred_one, target=target)
    res = run_eval(opts, pred=Path(f"{vv},{vh}"), target=target)
    assert res.report["bands"]["pred"] == ["VV", "VH"]
    for m in ("psnr", "mae"):
        assert res.report["summary"][m]["value"] == pytest.approx(ref.report["summary"][m]["value"], rel=1e-6)
    previews = {o["label"]: o["png"] for o in res.overview}
    assert previews["prediction"] == {o["label"]: o["png"] for o in ref.overview}["prediction"]
