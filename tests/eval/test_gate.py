"""Quality gates (sarkit.eval.gate): threshold parsing, failures, QualityGate as a library call, CLI exit codes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from rasters import write_rgb_dn
from sarkit.cli import app
from sarkit.errors import InputError, WorkError
from sarkit.eval.gate import QualityGate, gate_failures


def test_gate_failures():
    with pytest.raises(InputError, match="--fail-over"):
        QualityGate(under={"fid": 50.0})
    with pytest.raises(InputError, match="--fail-under"):
        QualityGate(over={"psnr": 20.0})
    summary = {"psnr": {"value": 17.0}, "ssim": {"value": 0.5}, "mae": {"value": "inf"}}
    assert gate_failures(summary, {"psnr": 18.0, "ssim": 0.3}, {}) == ["psnr 17 < 18"]
    assert gate_failures(summary, {}, {"mae": 0.1}) == ["mae inf > 0.1"]
    assert gate_failures({"psnr": {"value": math.inf}}, {"psnr": 40.0}, {}) == []


def test_gate_checks_its_directions_on_construction():
    with pytest.raises(InputError, match=r"^mae is lower-is-better: use --fail-over mae=0.1$"):
        QualityGate(under={"mae": 0.1})
    with pytest.raises(InputError, match=r"^psnr is higher-is-better: use --fail-under psnr=3$"):
        QualityGate(over={"psnr": 3.0})
    with pytest.raises(InputError, match="--fail-over expects metric=value pairs"):
        QualityGate(over={"sharpness": 1.0})
    gate = QualityGate(under={"psnr": 18.0}, over={"lpips": 0.3, "mae": 0.1})
    assert gate == QualityGate({"psnr": 18.0}, {"lpips": 0.3, "mae": 0.1})
    assert gate.metrics == ("psnr", "lpips", "mae")


def test_gate_on_a_metric_not_computed_is_bad_usage():
    gate = QualityGate(over={"fid": 50.0})
    with pytest.raises(InputError, match=r"^quality gate on fid, which is not computed: add it to --metrics$"):
        gate.require(("psnr", "ssim", "mae"))
    gate.require(("psnr", "fid"))
    with pytest.raises(InputError, match="quality gate on fid, which is not computed"):
        gate.failures({"psnr": {"value": 20.0}})


def test_enforce_raises_a_work_error_listing_every_miss():
    gate = QualityGate({"psnr": 18.0, "ssim": 0.3}, {"mae": 0.1})
    gate.enforce({"psnr": {"value": 19.0}, "ssim": {"value": 0.31}, "mae": {"value": 0.05}})  # all met
    with pytest.raises(WorkError) as info:
        gate.enforce({"psnr": {"value": 17.25}, "ssim": {"value": None}, "mae": {"value": 0.2}})
    assert str(info.value) == "quality gate failed: psnr 17.25 < 18; ssim – < 0.3; mae 0.2 > 0.1"
    assert info.value.exit_code == 1
    QualityGate().enforce({})  # no thresholds: nothing to fail




def test_cli_quality_gate_exit_codes(tmp_path):
    rng = np.random.default_rng(0)
    t = (rng.random((3, 64, 48)) * 2500 + 1).astype("uint16")
    p = np.clip(t + rng.normal(0, 400, t.shape), 1, None).astype("uint16")
    pp, tp = write_rgb_dn(tmp_path / "p.tif", p), write_rgb_dn(tmp_path / "t.tif", t)
    runner = CliRunner()
    base = ["eval", "--pred", str(pp), "--target", str(tp), "-q"]
    ok = runner.invoke(app, base + ["--fail-under", "psnr=5,ssim=0.01", "--fail-over", "mae=0.5"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, base + ["--fail-under", "psnr=99", "--report", str(tmp_path / "gate")])
    assert bad.exit_code == 1 and "quality gate failed: psnr" in bad.output and "< 99" in bad.output
    assert (tmp_path / "gate" / "report.json").exists()  # the report is still written
    over = runner.invoke(app, base + ["--fail-over", "mae=0.0001"])
    assert over.exit_code == 1
    wrong = runner.invoke(app, base + ["--fail-under", "mae=0.1"])
    assert wrong.exit_code == 2 and "use --fail-over mae=0.1" in wrong.output
    missing = runner.invoke(app, base + ["--fail-over", "fid=50", "--report", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "which is not computed" in missing.output
    assert not (tmp_path / "none").exists()


def test_gain_gates_pass_and_fail_on_the_gain_over_the_better_baseline():
    summary = {"psnr": {"value": 17.0}, "gain_psnr": {"value": 1.2, "over": "constant"},
               "gain_ssim": {"value": -0.01, "over": "constant"}}
    assert QualityGate(under={"gain_psnr": 1.0}).failures(summary) == []
    assert QualityGate(under={"gain_psnr": 1.5}).failures(summary) == ["gain_psnr 1.2 < 1.5"]
    assert QualityGate(under={"gain_ssim": 0.0}).failures(summary) == ["gain_ssim -0.01 < 0"]
    # a gain needs its metric computed; without a baseline it is undefined, a failed gate
    QualityGate(under={"gain_psnr": 1.0}).require(["psnr", "ssim"])
    with pytest.raises(InputError, match="gain_ssim, which is not computed"):
        QualityGate(under={"gain_ssim": 0.0}).require(["psnr"])
    assert "undefined" in QualityGate(under={"gain_mae": 0.0}).failures(summary)[0]
    with pytest.raises(InputError, match="higher-is-better: use --fail-under gain_mae=0"):
        QualityGate(over={"gain_mae": 0.0})  # every gain is positive when the model is better


def test_cli_gain_gate_exit_codes(tmp_path):
    rng = np.random.default_rng(0)
    t = (rng.random((3, 64, 48)) * 2500 + 1).astype("uint16")
    near = np.clip(t + rng.normal(0, 50, t.shape), 1, None).astype("uint16")     # far above a constant colour
    noise = (rng.random(t.shape) * 2500 + 1).astype("uint16")                     # below it
    runner = CliRunner()
    tp = write_rgb_dn(tmp_path / "t.tif", t)
    for name, p, code in (("near", near, 0), ("noise", noise, 1)):
        pp = write_rgb_dn(tmp_path / f"{name}.tif", p)
        r = runner.invoke(app, ["eval", "--pred", str(pp), "--target", str(tp), "--fail-under", "gain_psnr=1.0"])
        assert r.exit_code == code, r.output
        assert "baselines" in r.output and "constant colour" in r.output
    assert "quality gate failed: gain_psnr" in r.output
