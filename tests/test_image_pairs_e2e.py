"""From a SEN1-2 download to a table: tile --layout pairs, train pix2pix, translate one PNG, eval (real sample)."""

from __future__ import annotations

import json
import warnings

import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from typer.testing import CliRunner

from sarkit.cli import app


@pytest.mark.slow
def test_sen12_sample_tile_train_translate_eval(realdata, tmp_path):
    root = realdata / "sen1-2"
    runner = CliRunner()

    def ok(*args: str) -> None:
        r = runner.invoke(app, list(args))
        assert r.exit_code == 0, r.output

    ok("tile", str(root), "--layout", "pairs", "--out", str(tmp_path / "tiles"), "--quiet")
    rec = json.loads((tmp_path / "tiles/tiling.json").read_text())
    assert rec["counts"]["written"] == 15 and rec["normalization"]["sar"]["hi"] == [255.0]
    ok("train", "--model", "pix2pix", "--data", str(tmp_path / "tiles"), "--out", str(tmp_path / "run"),
       "--steps", "2", "--batch-size", "2", "--model-opt", "ngf=8", "--device", "cpu", "--quiet")
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert config["normalization"]["input"]["units"] == "image"  # the fixed range travels with the model
    sar = root / "ROIs1158_spring/s1_90/ROIs1158_spring_s1_90_p268.png"
    ok("translate", str(sar), "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "p268.png"),
       "--device", "cpu", "--quiet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "p268.png") as src:
            assert src.driver == "PNG" and src.count == 3 and src.dtypes[0] == "uint8" and src.shape == (256, 256)
    target = root / "ROIs1158_spring/s2_90/ROIs1158_spring_s2_90_p268.png"
    ok("eval", "--pred", str(tmp_path / "p268.png"), "--target", str(target), "--metrics", "psnr,ssim,mae",
       "--input", str(sar), "--report", str(tmp_path / "report"), "--quiet")
    report = json.loads((tmp_path / "report/report.json").read_text())
    assert report["normalization"]["source"] == "image"
    assert 0 < report["summary"]["psnr"]["value"] < 60 and 0 <= report["summary"]["mae"]["value"] <= 1
    assert "PSNR" in (tmp_path / "report/report.md").read_text()
