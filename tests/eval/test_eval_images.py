"""Tests of ``sarkit eval`` on image files (PNG predictions and targets of image-pair datasets)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from sarkit.errors import InputError
from sarkit.eval.options import EvalOptions
from sarkit.eval.runner import run_eval


def rgb(seed: int, h: int = 48, w: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_pair_is_compared_pixel_by_pixel_in_0_255(tmp_path):
    t = rgb(0)
    p = t.copy()
    p[:, :, 0] = np.clip(p[:, :, 0].astype(int) + 51, 0, 255).astype(np.uint8)
    Image.fromarray(t).save(tmp_path / "t.png")
    Image.fromarray(p).save(tmp_path / "p.png")
    res = run_eval(EvalOptions(metrics=("psnr", "mae")), pred=tmp_path / "p.png", target=tmp_path / "t.png")
    mae = np.abs(p.astype(float) - t.astype(float)).mean() / 255.0  # the fixed range 0–255, no per-image stretch
    assert res.report["summary"]["mae"]["value"] == pytest.approx(mae, abs=1e-6)
    norm = res.report["normalization"]
    assert norm["source"] == "image" and norm["target"]["hi"] == [255.0] * 3 and norm["target"]["units"] == "image"
    assert res.report["pixels"] == {"valid": 48 * 40, "total": 48 * 40}  # black is data in images
    same = run_eval(EvalOptions(metrics=("psnr",)), pred=tmp_path / "t.png", target=tmp_path / "t.png")
    assert same.report["summary"]["psnr"]["value"] == math.inf


def test_gray_sar_stored_as_rgb_against_mode_l_is_one_band(tmp_path):
    g = rgb(1)[:, :, 0]
    Image.fromarray(g).save(tmp_path / "t.png")
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "p.png")
    res = run_eval(EvalOptions(metrics=("mae",)), pred=tmp_path / "p.png", target=tmp_path / "t.png")
    assert res.report["summary"]["mae"]["value"] == 0.0 and res.report["bands"]["target"] == ["VV"]


@pytest.mark.parametrize("case, message", [
    ("size", "must have the same size"),
    ("depth", "compare images of the same bit depth"),
    ("geo", "is georeferenced but the other file is an image"),
])
def test_image_pairs_that_cannot_be_compared(tmp_path, case, message):
    Image.fromarray(rgb(0)).save(tmp_path / "t.png")
    pred = tmp_path / "p.png"
    if case == "size":
        Image.fromarray(rgb(0, 40, 40)).save(pred)
    elif case == "depth":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(pred, "w", driver="PNG", width=40, height=48, count=3, dtype="uint16") as dst:
                dst.write(np.zeros((3, 48, 40), np.uint16))
    else:
        pred = tmp_path / "p.tif"
        with rasterio.open(pred, "w", driver="GTiff", width=40, height=48, count=3, dtype="uint16",
                           crs="EPSG:32631", transform=from_origin(0, 0, 10, 10)) as dst:
            dst.write(np.ones((3, 48, 40), np.uint16))
    with pytest.raises(InputError, match=message):
        run_eval(EvalOptions(metrics=("mae",)), pred=pred, target=tmp_path / "t.png")


def test_image_tile_folders_are_compared_in_the_tiling_range(tmp_path):
    from sarkit.data.pairs import tile_pairs
    from sarkit.data.tiling import TileOptions

    for d in ("sar", "opt"):
        (tmp_path / "ds" / d).mkdir(parents=True)
    for n in range(2):
        Image.fromarray(rgb(n, 32, 32)[:, :, 0]).save(tmp_path / "ds/sar" / f"{n}.png")
        Image.fromarray(rgb(n + 5, 32, 32)).save(tmp_path / "ds/opt" / f"{n}.png")
    tile_pairs(tmp_path / "ds", tmp_path / "t", TileOptions(size=32))
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in sorted((tmp_path / "t/s2").iterdir()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(f) as src:
                prof, data, tags = src.profile, src.read(), src.tags()
            with rasterio.open(pred / f.name, "w", **prof) as dst:
                dst.write(np.clip(data.astype(int) - 10, 0, 255).astype(np.uint8))
                dst.update_tags(**tags)
    res = run_eval(EvalOptions(metrics=("mae",)), pred=pred, target=tmp_path / "t/s2")
    t = np.stack([rgb(n + 5, 32, 32) for n in range(2)]).astype(int)
    assert res.report["summary"]["mae"]["value"] == pytest.approx(np.minimum(t, 10).mean() / 255, abs=1e-6)
    assert res.report["normalization"]["source"] == "image"
