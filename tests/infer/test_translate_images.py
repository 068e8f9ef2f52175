"""Tests of translating image files (PNG / JPEG / image tiles) with checkpoints trained on image pairs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from sarkit.errors import InputError
from sarkit.infer.translate import TranslateOptions, output_name, translate_many, translate_scene
from sarkit.models.checkpoint import save_network
from sarkit.models.registry import Identity
from sarkit.raster.images import image_normalization
from sarkit.raster.norm import sar_normalization

OPTS = TranslateOptions(device="cpu", amp="off", overlap=8)


def save_identity(path: Path, norm) -> Path:
    n = norm.to_dict()
    return save_network(path, Identity(norm.channels), kind="generator", arch="identity",
                        arch_kwargs={"channels": norm.channels},
                        meta={"model": "identity", "direction": "identity", "in_norm": n, "out_norm": n,
                              "tile_size": 32, "run": "test"})


def opened(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


@pytest.fixture()
def sar_png(tmp_path: Path) -> tuple[Path, np.ndarray]:
    a = np.random.default_rng(0).integers(0, 256, (40, 56), dtype=np.uint8)
    Image.fromarray(np.stack([a] * 3, -1)).save(tmp_path / "sar3.png")  # gray stored as RGB
    return tmp_path / "sar3.png", a


def test_png_in_gives_png_out_with_the_image_values(tmp_path, sar_png):
    scene, a = sar_png
    ckpt = save_identity(tmp_path / "g.safetensors", image_normalization("sar", ["VV"], 255))
    s = translate_scene(scene, ckpt, tmp_path / "out.png", OPTS)  # no CRS, no --allow-ungeoreferenced needed
    with opened(s.out) as dst:
        assert dst.driver == "PNG" and dst.count == 1 and dst.dtypes[0] == "uint8"
        np.testing.assert_array_equal(dst.read(1), a)  # identity through [0, 255] ↔ [-1, 1] and back
        assert dst.tags()["units"] == "image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.safetensors", "out.png", "sar3.png"]  # no sidecar


def test_geotiff_out_has_no_crs_and_says_image_values(tmp_path, sar_png):
    scene, a = sar_png
    ckpt = save_identity(tmp_path / "g.safetensors", image_normalization("sar", ["VV"], 255))
    translate_scene(scene, ckpt, tmp_path / "out.tif", OPTS)
    with opened(tmp_path / "out.tif") as dst:
        assert dst.driver == "GTiff" and dst.crs is None and dst.nodata is None
        np.testing.assert_array_equal(dst.read(1), a)
        assert dst.tags()["units"] == "image" and dst.tags()["value_range"] == "0,255"
    # the GeoTIFF translation is an image again: it translates without --allow-ungeoreferenced
    translate_scene(tmp_path / "out.tif", ckpt, tmp_path / "again.png", OPTS)


def test_16_bit_optical_roundtrip(tmp_path):
    a = np.random.default_rng(1).integers(0, 65536, (3, 32, 32)).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp_path / "o.tif", "w", driver="GTiff", width=32, height=32, count=3,
                           dtype="uint16") as dst:
            dst.write(a)
            dst.update_tags(units="image")
    ckpt = save_identity(tmp_path / "g.safetensors", image_normalization("optical", ["B4", "B3", "B2"], 65535))
    translate_scene(tmp_path / "o.tif", ckpt, tmp_path / "out.png", OPTS)
    with opened(tmp_path / "out.png") as dst:
        assert dst.dtypes[0] == "uint16" and dst.count == 3
        assert np.abs(dst.read().astype(int) - a).max() <= 1  # float32 model range: within one step of 65535


def test_sentinel_checkpoint_refuses_an_8_bit_image_and_a_png_cannot_hold_db(tmp_path, sar_png):
    scene, _ = sar_png
    ckpt = save_identity(tmp_path / "s.safetensors", sar_normalization(("VV",)))
    with pytest.raises(InputError, match="is an image file .*but the checkpoint reads σ⁰ in dB"):
        translate_scene(scene, ckpt, tmp_path / "o.tif", OPTS)
    db = tmp_path / "db.tif"
    with rasterio.open(db, "w", driver="GTiff", width=32, height=32, count=1, dtype="float32", crs="EPSG:32631",
                       transform=from_origin(500000, 4800000, 10, 10)) as dst:
        dst.write(np.full((1, 32, 32), -12.0, np.float32))
    with pytest.raises(InputError, match="SAR in dB .float32., which a PNG cannot hold; name it o.tif"):
        translate_scene(db, ckpt, tmp_path / "o.png", OPTS)
    assert not (tmp_path / "o.png").exists()
    translate_scene(db, ckpt, tmp_path / "o.png", TranslateOptions(device="cpu", amp="off", overlap=8,
                                                                  format="rgb8"))  # 8 bits for display: a PNG


def test_many_images_keep_their_kind(tmp_path, sar_png):
    scene, a = sar_png
    assert output_name(scene, tmp_path / "o") == tmp_path / "o" / "sar3_translated.png"
    assert output_name(Path("x.tif"), tmp_path / "o").suffix == ".tif"
    ckpt = save_identity(tmp_path / "g.safetensors", image_normalization("sar", ["VV"], 255))
    res = translate_many([scene], ckpt, tmp_path / "o", OPTS)
    assert res[0].ok and (tmp_path / "o" / "sar3_translated.png").is_file()
