"""Translate with a predictor of output scale s > 1 (sarkit/infer/translate.py): the output lies on the input's
bounds with pixels s times smaller (transform scaled exactly), CRS, nodata, descriptions and tags kept, strips
joined without seams; and the ``--then`` chain of the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from rasters import write_rgb_dn, write_sar_db
from sarkit.infer.blend import blend_grid
from sarkit.infer.engine import ChainPredictor, Contract, Predictor
from sarkit.infer.translate import TranslateOptions, translate_scene
from sarkit.raster.grid import GridSpec, subdivided
from sarkit.raster.norm import Normalization, optical_normalization, sar_normalization


class Upsample(Predictor):
    """×``scale`` upsampling of the model range (nearest or bilinear; no network): a predictor of scale s."""

    def __init__(self, norm: Normalization, tile: int = 16, scale: int = 2, mode: str = "nearest") -> None:
        self.contract = Contract(norm, norm, tile, scale=scale)
        self.device = torch.device("cpu")
        self.name = f"upsample×{scale}"
        self.mode = mode

    def _predict(self, x: np.ndarray, seeds: Sequence[int] | None) -> np.ndarray:
        s = self.scale
        if self.mode == "nearest":
            return x.repeat(s, axis=2).repeat(s, axis=3)
        y = F.interpolate(torch.from_numpy(x), scale_factor=s, mode="bilinear", align_corners=False)
        return y.numpy()

    def provenance(self) -> dict[str, str]:
        return {"model": f"upsample{self.scale}", "arch": "none", "checkpoint": "none", "checkpoint_sha256": "0",
                "direction": "x"}


class Ident(Upsample):
    """The same at scale 1 (the reference run)."""

    def __init__(self, norm: Normalization, tile: int = 16) -> None:
        super().__init__(norm, tile, 1)


def optical_scene(path: Path, h: int = 40, w: int = 56, seed: int = 0) -> Path:
    """A B4,B3,B2 uint16 DN scene with a nodata (0) block."""
    a = np.random.default_rng(seed).integers(300, 3000, (3, h, w)).astype(np.uint16)
    a[:, 3:7, 10:15] = 0
    return write_rgb_dn(path, a)


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as d:
        return d.read(), {"crs": d.crs, "transform": d.transform, "bounds": d.bounds, "nodata": d.nodata,
                          "descriptions": d.descriptions, "tags": d.tags(), "shape": (d.height, d.width),
                          "res": d.res}


@pytest.mark.parametrize("scale", [2, 4])
def test_scale_output_has_the_input_bounds_finer_pixels_and_keeps_crs_nodata_bands_and_tags(tmp_path, scale):
    scene = optical_scene(tmp_path / "s.tif")
    opts = TranslateOptions(overlap=4, device="cpu", amp="off")
    norm = optical_normalization()
    translate_scene(scene, Ident(norm), tmp_path / "one.tif", opts)
    translate_scene(scene, Upsample(norm, scale=scale), tmp_path / "sr.tif", opts)
    ref, r = read(tmp_path / "one.tif")
    out, o = read(tmp_path / "sr.tif")
    with rasterio.open(scene) as s:
        src_transform, src_bounds, src_shape = s.transform, s.bounds, (s.height, s.width)
    assert o["shape"] == (src_shape[0] * scale, src_shape[1] * scale)
    assert o["transform"] == src_transform * Affine.scale(1 / scale)  # exact, not within a tolerance
    assert tuple(o["bounds"]) == tuple(src_bounds)
    assert o["res"] == (10.0 / scale, 10.0 / scale)
    assert o["crs"] == r["crs"] and o["nodata"] == r["nodata"] == 0
    assert o["descriptions"] == r["descriptions"] == ("B4", "B3", "B2")
    assert set(o["tags"]) == set(r["tags"]) | {"scale"} and o["tags"]["scale"] == str(scale)
    assert {k: v for k, v in o["tags"].items() if k not in ("scale", "model")} == \
        {k: v for k, v in r["tags"].items() if k != "model"}
    # nearest ×s of the scale-1 translation, nodata blocks included: every window and weight in its place
    np.testing.assert_array_equal(out, ref.repeat(scale, axis=1).repeat(scale, axis=2))
    assert (out[:, 3 * scale:7 * scale, 10 * scale:15 * scale] == 0).all()
    assert cog_validate(str(tmp_path / "sr.tif"))[0]


def test_scale_two_of_a_sar_scene_keeps_nan_nodata(tmp_path):
    data = np.random.default_rng(1).uniform(-24, -2, (2, 30, 20)).astype(np.float32)
    data[:, 0, 0] = np.nan
    scene = write_sar_db(tmp_path / "s.tif", data)
    translate_scene(scene, Upsample(sar_normalization(), scale=2), tmp_path / "o.tif",
                    TranslateOptions(overlap=4, device="cpu", amp="off"))
    out, o = read(tmp_path / "o.tif")
    assert out.shape == (2, 60, 40) and np.isnan(o["nodata"])
    assert np.isnan(out[:, :2, :2]).all() and not np.isnan(out[:, 2:, 2:]).any()
    np.testing.assert_allclose(out[:, 2::2, 2::2], data[:, 1:, 1:], atol=1e-4)


def test_small_strips_join_without_seams_like_one_strip(tmp_path):
    """Bilinear ×2 depends on each tile's border (edge replication): with overlapping windows, strips of 16
    pixels blend to what one window over the whole scene gives, up to the blend of border pixels."""
    scene = optical_scene(tmp_path / "s.tif", 48, 48, seed=3)
    norm = optical_normalization()
    translate_scene(scene, Upsample(norm, tile=16, mode="bilinear"), tmp_path / "strips.tif",
                    TranslateOptions(overlap=8, device="cpu", amp="off"))
    translate_scene(scene, Upsample(norm, tile=48, mode="bilinear"), tmp_path / "one.tif",
                    TranslateOptions(overlap=8, device="cpu", amp="off"))
    a, _ = read(tmp_path / "strips.tif")
    b, _ = read(tmp_path / "one.tif")
    ok = (a > 0) & (b > 0)
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64))[ok]
    # bilinear differs from one window only in the half pixel next to each tile border, inside the ramps
    assert np.median(diff) == 0 and diff.max() <= 2000
    grid = blend_grid(48, 48, 16, 8).scaled(2)
    joins = [r for r in grid.row_offsets[1:]]
    rows = np.abs(a.astype(np.int64) - b.astype(np.int64)).mean(axis=(0, 2))
    assert max(rows[j - 1:j + 1].max() for j in joins) <= 4 * rows.mean() + 50  # no step at the strip joins


def test_scaled_blend_grid_is_the_input_grid_times_the_scale():
    g = blend_grid(50, 70, 16, 4)
    s = g.scaled(2)
    assert (s.height, s.width, s.tile, s.overlap) == (100, 140, 32, 8)
    assert s.row_offsets == tuple(2 * r for r in g.row_offsets)
    assert s.col_offsets == tuple(2 * c for c in g.col_offsets)
    assert s.n_tiles == g.n_tiles
    for w in s.row_weights:
        assert len(w) == 32 and (w > 0).all() and w.max() == 1.0


def test_subdivided_grid_has_the_same_bounds_and_exact_transform():
    g = GridSpec(None, Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0), 33, 47)
    f = subdivided(g, 4)
    assert f.bounds == g.bounds and (f.height, f.width) == (132, 188)
    assert f.transform == Affine(2.5, 0.0, 500000.0, 0.0, -2.5, 4800000.0)
    assert subdivided(g, 1) is g


def test_a_chain_into_a_scale_two_stage_writes_the_finer_grid(tmp_path):
    scene = optical_scene(tmp_path / "s.tif", 32, 40)
    norm = optical_normalization()
    chain = ChainPredictor([Ident(norm, 16), Upsample(norm, tile=16, scale=2)])
    assert chain.scale == 2
    translate_scene(scene, chain, tmp_path / "c.tif", TranslateOptions(overlap=4, device="cpu", amp="off"))
    translate_scene(scene, Upsample(norm, tile=16, scale=2), tmp_path / "u.tif",
                    TranslateOptions(overlap=4, device="cpu", amp="off"))
    a, ta = read(tmp_path / "c.tif")
    b, tb = read(tmp_path / "u.tif")
    np.testing.assert_array_equal(a, b)
    assert ta["transform"] == tb["transform"] and ta["tags"]["model"] == "upsample1 + upsample2"


def test_resampled_scenes_come_back_on_the_scene_grid_made_finer(tmp_path):
    """A stage that records a 20 m training pixel size on a 10 m scene (--resolution resample): translated at
    20 m, ×2 there (10 m), and the output resampled back onto the scene's grid ×2 (5 m), nodata where the scene's."""
    from sarkit.raster.grid import PixelSize

    scene = optical_scene(tmp_path / "s.tif", 40, 48)
    norm = optical_normalization()
    up = Upsample(norm, tile=16, scale=2)
    up.contract = Contract(norm, norm, 16, scale=2, pixel_size=PixelSize(20.0, 20.0, "metre", 20.0, 20.0))
    translate_scene(scene, up, tmp_path / "o.tif", TranslateOptions(overlap=4, device="cpu", amp="off"))
    out, o = read(tmp_path / "o.tif")
    with rasterio.open(scene) as s:
        assert o["shape"] == (80, 96) and o["transform"] == s.transform * Affine.scale(0.5)
        src = s.read()
    assert (out[:, 6:14, 20:30] == 0).all()                        # the scene's nodata block, ×2
    ok = out[0] > 0
    assert ok.mean() > 0.9
    big = src.astype(np.float64).repeat(2, 1).repeat(2, 2)
    assert np.abs(out.astype(np.float64) - big)[:, ok].mean() < 600  # the same picture, through 20 m and back
