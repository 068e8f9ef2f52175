"""The trivial baselines (sarkit.eval.baselines): exact fits, the bounded seeded pixel sample, the gains' sign, and
the baselines in every eval mode's report (scenes with and without the input, tile folders) and its files."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rasters import write_rgb_dn
from sarkit.eval.baselines import (FROM_TARGET, BaselineFit, fit_baselines, fit_from_record, gains, linear_map,
                                   sample_pixels)
from sarkit.eval.options import HIGHER_IS_BETTER, EvalInputs, EvalOptions
from sarkit.eval.report import load_schema, to_json_value, validate
from sarkit.eval.runner import run_eval, run_eval_report


def test_fit_gives_the_band_means_and_recovers_an_exact_linear_map():
    rng = np.random.default_rng(0)
    x = rng.random((500, 2))
    w = np.array([[0.5, -0.2], [0.1, 0.3], [-0.4, 0.25]])
    b = np.array([0.2, 0.1, 0.6])
    y = x @ w.T + b
    fit = fit_baselines(y, x, ("B4", "B3", "B2"), ("VV", "VH"))
    assert np.allclose(fit.constant, y.mean(0), atol=1e-12)
    assert np.allclose(np.asarray(fit.linear), np.concatenate([w, b[:, None]], 1), atol=1e-9)
    assert fit.pixels == 500
    # the record round-trips (as the checkpoint header and the translate tag carry it)
    again = fit_from_record(json.dumps(fit.to_dict()))
    assert again == fit
    assert fit_from_record("not json") is None and fit_from_record(None) is None
    # the map on an image: y = W·x + b per pixel, clipped to [0, 1]
    img = x[:6].T.reshape(2, 2, 3)
    assert np.allclose(linear_map(fit, img), np.clip(y[:6].T.reshape(3, 2, 3), 0, 1), atol=1e-6)


def test_the_pixel_sample_is_bounded_seeded_and_only_where_both_hold_data():
    rng = np.random.default_rng(1)
    items = []
    for k in range(4):
        x = rng.uniform(-1, 1, (2, 16, 16)).astype(np.float32)
        y = rng.uniform(-1, 1, (3, 16, 16)).astype(np.float32)
        valid = np.ones((16, 16), bool)
        valid[:8] = False
        x[:, :8] = 5.0  # never sampled: outside the valid pixels
        y[0, 8, 0] = np.nan  # a NaN band makes its pixel invalid too
        items.append({"x": x, "y": y, "valid": valid})
    x01, y01 = sample_pixels(items, max_pixels=200, seed=3)
    assert len(x01) == len(y01) == 4 * 50  # 200 pixels spread over 4 tiles
    assert (x01 <= 1).all() and np.isfinite(y01).all()
    again = sample_pixels(items, max_pixels=200, seed=3)
    assert np.array_equal(again[0], x01)
    everything = sample_pixels(items, max_pixels=10_000, seed=0)[1]
    assert len(everything) == 4 * (16 * 8 - 1)  # all valid pixels when the bound allows


def test_gains_are_signed_so_that_positive_means_the_model_is_better():
    model = {"psnr": {"value": 20.0}, "ssim": {"value": 0.30}, "mae": {"value": 0.10}}
    base = {"constant": {"summary": {"psnr": {"value": 18.0}, "ssim": {"value": 0.35}, "mae": {"value": 0.12}}},
            "linear": {"summary": {"psnr": {"value": 19.0}, "ssim": {"value": 0.20}, "mae": {"value": 0.15}}}}
    g = gains(model, base, HIGHER_IS_BETTER)
    assert g["gain_psnr"] == {"value": pytest.approx(1.0), "over": "linear"}      # 20 − max(18, 19)
    assert g["gain_ssim"] == {"value": pytest.approx(-0.05), "over": "constant"}  # the model is worse: negative
    assert g["gain_mae"] == {"value": pytest.approx(0.02), "over": "constant"}    # min(0.12, 0.15) − 0.10
    assert "gain_lpips" not in g
    assert all(HIGHER_IS_BETTER[k] for k in g)


# ----------------------------------------------------------------------------------------------- eval modes

def _scenes(tmp: Path, noise: float = 0.01):
    """Target reflectance an exact linear function of the SAR dB (inside both default ranges), a prediction =
    target + noise, and the SAR input on the same grid: (pred, target, sar, target [0, 1] array)."""
    rng = np.random.default_rng(0)
    h, w = 64, 48
    db = rng.uniform(-24, -1, (2, h, w)).astype(np.float32)
    x01 = (db + 25.0) / 25.0
    refl = np.stack([0.03 + 0.2 * x01[0], 0.05 + 0.1 * x01[0] + 0.1 * x01[1], 0.25 - 0.2 * x01[1]])
    t_dn = np.round(refl * 10000).astype(np.uint16)
    p_dn = np.clip(np.round((refl + rng.normal(0, noise, refl.shape)) * 10000), 1, 2999).astype(np.uint16)
    tp, pp = write_rgb_dn(tmp / "t.tif", t_dn), write_rgb_dn(tmp / "p.tif", p_dn)
    with rasterio.open(tmp / "s1.tif", "w", driver="GTiff", height=h, width=w, count=2, dtype="float32",
                       crs="EPSG:32631", transform=from_origin(0, 2000, 10, 10), nodata=float("nan")) as d:
        d.write(db)
        d.descriptions = ("VV", "VH")
    return pp, tp, tmp / "s1.tif", t_dn.astype(np.float64) / 10000 / 0.3


def test_scene_eval_without_a_checkpoint_fits_both_baselines_on_the_target_and_says_so(tmp_path):
    pp, tp, s1, t01 = _scenes(tmp_path)
    res = run_eval_report(EvalInputs(pred=pp, target=tp), EvalOptions(input_scene=s1), tmp_path / "rep")
    rep = res.report
    const, lin = rep["baselines"]["constant"], rep["baselines"]["linear"]
    assert const["source"] == lin["source"] == FROM_TARGET
    # constant colour c_o = mean of band o; its MSE is the mean of the band variances
    assert np.allclose(const["values"], t01.reshape(3, -1).mean(1), atol=1e-6)
    want = 10 * math.log10(1.0 / t01.reshape(3, -1).var(1).mean())
    assert const["summary"]["psnr"]["value"] == pytest.approx(want, abs=1e-3)
    # the target is linear in the input: the fitted map reproduces it up to the 16-bit rounding
    assert lin["summary"]["psnr"]["value"] > 60 and lin["in_bands"] == ["VV", "VH"]
    g = rep["summary"]["gain_psnr"]
    assert g["over"] == "linear" and g["value"] == pytest.approx(
        rep["summary"]["psnr"]["value"] - lin["summary"]["psnr"]["value"])
    assert validate(to_json_value(rep), load_schema()) == []
    md = (tmp_path / "rep/report.md").read_text()
    assert "## Baselines" in md and "| constant colour |" in md and "| per-pixel linear map |" in md
    assert '<section id="baselines">' in (tmp_path / "rep/report.html").read_text()
    rows = list(csv.reader(io.StringIO((tmp_path / "rep/baselines.csv").read_text())))
    assert [r[0] for r in rows] == ["system", "model", "constant colour", "per-pixel linear map",
                                    "gain over the better baseline"]


def test_scene_eval_without_the_input_reports_the_linear_baseline_as_absent(tmp_path):
    pp, tp, _, t01 = _scenes(tmp_path)
    rep = run_eval(EvalOptions(), pred=pp, target=tp).report
    assert "summary" in rep["baselines"]["constant"]
    assert "--input" in rep["baselines"]["linear"]["absent"]
    assert rep["summary"]["gain_psnr"]["over"] == "constant"
    # the prediction is the target plus 1 % noise: far better than a constant colour
    assert rep["summary"]["gain_psnr"]["value"] > 10 and rep["summary"]["gain_mae"]["value"] > 0


def test_tile_folders_get_the_baselines_on_the_same_pixels(tmp_path):
    pp, tp, _, _ = _scenes(tmp_path)
    for d in ("pred", "target"):
        (tmp_path / d).mkdir()
    with rasterio.open(pp) as a, rasterio.open(tp) as b:
        pa, ta = a.read(), b.read()
    pa[:, :4, :] = 0  # nodata rows in the prediction: left out for the model and the baselines alike
    write_rgb_dn(tmp_path / "pred/a.tif", pa)
    write_rgb_dn(tmp_path / "target/a.tif", ta)
    rep = run_eval(EvalOptions(), pred=tmp_path / "pred", target=tmp_path / "target").report
    const = rep["baselines"]["constant"]
    assert const["source"] == FROM_TARGET and "tile folders carry no input" in rep["baselines"]["linear"]["absent"]
    assert rep["pixels"]["valid"] == 60 * 48


def test_a_recorded_fit_for_other_bands_is_not_applied(tmp_path):
    from sarkit.eval.baselines import BaselineStreams
    from sarkit.reporting import RecordingReporter

    class Src:  # the parts of an EvalSource the streams read
        pred_norm = __import__("sarkit.raster.norm", fromlist=["x"]).optical_normalization(("B8",))
        input_norm = None
        mode = "scenes"
        baseline_fit = BaselineFit(("B4",), (0.5,), None)

    rec = RecordingReporter()
    assert BaselineStreams.load(Src(), EvalOptions(), None, rec) is None
    assert any("baselines are for bands B4" in m for m in rec.warnings)
