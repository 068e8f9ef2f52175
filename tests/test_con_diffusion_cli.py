"""``sarkit train --model con-diffusion``, ``sarkit translate`` and ``sarkit eval --checkpoint`` with it, on
generated tiles on the CPU with the tiny preset (narrowed further to 8 channels to stay quick)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from sarkit.cli import app
from training.tilesets import make_tiles

runner = CliRunner()
TINY = ["--model-opt", "size=tiny", "--model-opt", "channels=8", "--model-opt", "heads=2",
        "--model-opt", "timesteps=40", "--model-opt", "val_steps=2", "--model-opt", "sample_steps=3"]


def sar_scene(path: Path, size: int = 48) -> Path:
    """A 2-band dB scene on a UTM grid."""
    data = np.random.default_rng(0).uniform(-24, -1, (2, size, size)).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=2, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10), nodata=float("nan")) as dst:
        dst.write(data)
        dst.descriptions = ("VV", "VH")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-step con-diffusion run on 32² generated tiles (tiles, run directory)."""
    root = tmp_path_factory.mktemp("cd")
    tiles = make_tiles(root / "tiles", n_train=2, n_val=2, size=32)
    out = root / "run"
    r = runner.invoke(app, ["train", "--model", "con-diffusion", "--data", str(tiles), "--out", str(out), "--steps",
                            "3", "--batch-size", "2", "--device", "cpu", "--val-every", "0", "--quiet", *TINY])
    assert r.exit_code == 0, r.output
    return tiles, out


@pytest.mark.slow
def test_train_translate_and_eval_a_con_diffusion_checkpoint(run, tmp_path):
    tiles, out = run
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "con-diffusion" and config["model_options"]["size"] == "tiny"
    assert (out / "checkpoints" / "generator.safetensors").is_file()
    scene = sar_scene(tmp_path / "s1.tif")
    r = runner.invoke(app, ["translate", str(scene), "--checkpoint", str(out), "--out", str(tmp_path / "o.tif"),
                            "--device", "cpu", "--amp", "off", "--overlap", "16", "--sampler", "ddim", "--steps", "2",
                            "--seed", "4", "--cache-threshold", "0.1"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "o.tif") as src:
        tags, y = src.tags(), src.read()
    assert (tags["model"], tags["sampler"], tags["sampling_steps"], tags["seed"]) == ("con-diffusion", "ddim", "2", "4")
    assert int(tags["cache_tile_steps"]) == 4 * 2 and y.shape == (3, 48, 48) and (y > 0).all()
    r = runner.invoke(app, ["eval", "--checkpoint", str(out), "--data", str(tiles), "--split", "val", "--metrics",
                            "psnr,ssim,mae", "--device", "cpu", "--steps", "2", "--report", str(tmp_path / "rep"),
                            "--quiet"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "rep" / "report.json").read_text())["summary"]
    assert np.isfinite(summary["psnr"]["mean"])


def test_sampling_options_are_refused_where_no_diffusion_model_runs(tmp_path):
    tiles = make_tiles(tmp_path / "tiles", n_train=1, n_val=1, size=32)
    out = tmp_path / "no-run"
    r = runner.invoke(app, ["eval", "--pred", str(tiles / "s2"), "--target", str(tiles / "s2"), "--steps", "3",
                            "--report", str(tmp_path / "rep")])
    assert r.exit_code == 2 and "--steps apply to eval --checkpoint" in r.output
    r = runner.invoke(app, ["translate", str(sar_scene(tmp_path / "s1.tif")), "--checkpoint", str(out), "--out",
                            str(tmp_path / "o.tif"), "--device", "cpu", "--steps", "0"])
    assert r.exit_code == 2 and "--steps must be a whole number ≥ 1" in r.output
    assert not (tmp_path / "o.tif").exists()
