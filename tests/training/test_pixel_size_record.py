"""The training tiles' pixel size is recorded in exported generators (sarkit/training/data.py, models/base.py)."""

from __future__ import annotations

from pathlib import Path

import rasterio
from rasterio.transform import from_origin

from sarkit.models.checkpoint import read_export_record
from sarkit.models.registry import get_model
from sarkit.training import train
from sarkit.training.data import open_data, tile_pixel_size
from tilesets import make_tiles, opts

TEN_M = {"x": 10.0, "y": 10.0, "units": "metre", "x_m": 10.0, "y_m": 10.0}


def test_open_data_records_the_tiles_pixel_size_and_the_model_exports_it(tiles: Path, tmp_path: Path) -> None:
    data = open_data(opts(tiles, tmp_path / "r"), get_model("pix2pix"))
    assert data.io.pixel_size == TEN_M
    model = get_model("pix2pix")(data.io, get_model("pix2pix").Options(ngf=8, ndf=8))
    assert model.export_meta()["pixel_size"] == TEN_M


def test_tiles_of_different_resolutions_record_none(tmp_path: Path) -> None:
    root = make_tiles(tmp_path / "mixed")
    path = root / "s1" / "t001.tif"
    with rasterio.open(path, "r+") as dst:
        dst.transform = from_origin(500000, 4000000, 20, 20)
    data = open_data(opts(root, tmp_path / "r"), get_model("pix2pix"))
    assert tile_pixel_size(data.train) is None and data.io.pixel_size is None
    assert "pixel_size" not in get_model("pix2pix")(data.io, get_model("pix2pix").Options(ngf=8, ndf=8)).export_meta()


def test_trained_generator_carries_the_pixel_size(tiles: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(opts(tiles, run, steps=1))
    meta = read_export_record(run / "checkpoints" / "generator.safetensors")["meta"]
    assert meta["pixel_size"] == TEN_M
