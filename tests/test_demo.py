"""Tests of ``sarkit demo`` (sarkit/demo.py) at a tiny size: every stage runs and every output it names exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import rasterio
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.demo import DemoOptions, demo_finished, run_demo

runner = CliRunner()
TINY = dict(train_size=512, test_size=320, steps=2, full_steps=1, ngf=8, diffusion_steps=2)


def overview_labels(html: str) -> list[str]:
    section = html.split('<section id="overview">', 1)[1].split("</section>", 1)[0]
    return re.findall(r'<img alt="([^"]+)"', section)


@pytest.mark.slow
def test_demo_writes_every_output_and_a_report_with_the_scene(tmp_path):
    out = tmp_path / "demo"
    res = run_demo(DemoOptions(out=out, **TINY))
    assert demo_finished(out)
    assert all(Path(p).exists() for p in res.outputs.values())
    assert set(res.metrics) == {"pix2pix"} and {"psnr", "ssim", "mae"} <= set(res.metrics["pix2pix"])
    with rasterio.open(res.outputs["translated (pix2pix)"]) as pred, \
            rasterio.open(out / "test-scene" / "s1.tif") as s1:
        assert (pred.crs, pred.transform, pred.shape) == (s1.crs, s1.transform, s1.shape)
    html = (out / "report-pix2pix" / "report.html").read_text()
    assert overview_labels(html) == ["input", "prediction", "target"]  # the translated scene beside the target
    record = json.loads((out / "demo.json").read_text())
    assert set(record["outputs"]) == set(res.outputs)
    assert set(record["seconds"]) == {"synth", "tile", "train run-pix2pix", "translate pix2pix", "eval pix2pix"}
    # the improved defaults of issue 17: resize-convolution decoder; the report has the baselines and the gains
    config = json.loads((out / "run-pix2pix" / "config.json").read_text())
    assert config["model_options"]["upsample"] == "resize" and config["model_options"]["lambda_l1"] == 10000.0
    assert "gain_psnr" in res.metrics["pix2pix"] and "Baselines" in html


@pytest.mark.slow
def test_demo_full_trains_and_compares_every_model(tmp_path):
    out = tmp_path / "full"
    res = run_demo(DemoOptions(out=out, full=True, **TINY))
    assert set(res.metrics) == {"pix2pix", "cyclegan", "cut", "qs-attn", "cyclegan-sc", "con-diffusion"}
    assert all({"pa", "sms"} <= set(m) for m in res.metrics.values())  # segmenter-based metrics for every model
    table = (out / "compare.md").read_text()
    assert all(name in table for name in res.metrics)


def test_demo_cli_refuses_an_existing_folder_and_skips_a_finished_one(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "other").write_text("x")
    res = runner.invoke(app, ["demo", "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output
    (out / "demo.json").write_text("{}")
    res = runner.invoke(app, ["demo", "--out", str(out), "--skip-existing"])
    assert res.exit_code == 0 and "skipped" in res.output
    assert runner.invoke(app, ["demo", "--out", str(tmp_path / "d2"), "--steps", "0"]).exit_code == 2
