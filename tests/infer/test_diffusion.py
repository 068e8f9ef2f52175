"""Tests of the iterative diffusion predictor (sarkit/infer/diffusion.py) through the engine and translate:
scene-keyed noise, independence of tiling and batch size, sampling options, first-block cache records."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from sarkit.errors import InputError
from sarkit.infer.diffusion import DiffusionPredictor, SamplingOptions, noise_keys
from sarkit.infer.engine import ChainPredictor, NetworkPredictor, load_predictor
from sarkit.infer.translate import TranslateOptions, translate_scene
from sarkit.models.checkpoint import save_network
from sarkit.models.diffusion_unet import DiffusionUNet
from sarkit.raster.grid import PixelWindow
from sarkit.raster.norm import sar_normalization
from sarkit.reporting import RecordingReporter

KW = {"channels_x": 2, "cond_channels": 2, "channels": 8, "res_blocks": 1, "channel_mult": [1, 2, 2],
      "attn_levels": [2], "heads": 2}


def tiny_checkpoint(path: Path, steps: int = 4, sampler: str = "ddpm") -> Path:
    """A random 3-level diffusion U-Net exported as a SAR → SAR con-diffusion generator (tile 32, T = 50)."""
    torch.manual_seed(0)
    net = DiffusionUNet(2, 2, 8, 1, (1, 2, 2), (2,), 2)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.15)
    norm = sar_normalization().to_dict()
    meta = {"model": "con-diffusion", "direction": "sar2opt", "in_norm": norm, "out_norm": norm, "tile_size": 32,
            "diffusion": {"prediction": "eps", "schedule": "linear", "timesteps": 50, "sampler": sampler,
                          "steps": steps, "eta": 0.0}}
    return save_network(path, net, "generator", "diffusion_unet", KW, meta)


def write_scene(path: Path, size: int = 80) -> Path:
    """A smooth 2-band dB scene (VV, VH) on a UTM grid."""
    r, c = np.mgrid[0:size, 0:size].astype(np.float32)
    data = np.stack([-12 + 8 * np.sin(r / 9) * np.cos(c / 7), -18 + 5 * np.cos(r / 5 + c / 11)])
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=2, dtype="float32",
                       crs="EPSG:32631", transform=from_origin(500000, 4800000, 10, 10), nodata=float("nan")) as dst:
        dst.write(data.astype(np.float32))
        dst.descriptions = ("VV", "VH")
    return path


class CountingReporter(RecordingReporter):
    """Records the totals and advances of tasks."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[dict[str, Any]] = []

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Any]:
        rec = {"description": description, "total": total, "done": 0}
        self.tasks.append(rec)

        class T:
            def advance(self, n: int = 1, **fields: Any) -> None:
                rec["done"] += n

        yield T()


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_a_diffusion_checkpoint_loads_as_an_iterative_predictor(tmp_path):
    ck = tiny_checkpoint(tmp_path / "g.safetensors", steps=7)
    p = load_predictor(ck, "cpu", None)
    assert isinstance(p, DiffusionPredictor)
    assert (p.steps, p.tile, p.contract.tile_multiple, p.plan.kind.value) == (7, 32, 4, "ddpm")
    assert p.contract.act_bytes and p.contract.act_bytes > 4 * 8
    q = load_predictor(ck, "cpu", None, sampling=SamplingOptions(sampler="ddim", steps=5, eta=0.5, seed=3))
    assert (q.steps, q.plan.kind.value, q.plan.eta, q.seed) == (5, "ddim", 0.5, 3)
    assert load_predictor(ck, "cpu", None, sampling=SamplingOptions(sampler="ddim")).steps == 50
    with pytest.raises(InputError, match="--steps"):
        load_predictor(ck, "cpu", None, sampling=SamplingOptions(steps=51))


def test_sampling_options_check_themselves_and_refuse_one_call_generators(tmp_path):
    for bad in (dict(steps=0), dict(eta=1.5), dict(seed=-1), dict(cache_threshold=-0.1), dict(sampler="euler")):
        with pytest.raises(InputError):
            SamplingOptions(**bad)
    assert SamplingOptions(steps=3, cache_threshold=0.1).given() == ["--steps", "--cache-threshold"]
    norm = sar_normalization().to_dict()
    ck = save_network(tmp_path / "id.safetensors", torch.nn.Identity(), "generator", "identity", {"channels": 2},
                      {"model": "x", "in_norm": norm, "out_norm": norm, "tile_size": 32})
    assert isinstance(load_predictor(ck, "cpu", None, sampling=SamplingOptions()), NetworkPredictor)
    with pytest.raises(InputError, match="--steps, --seed apply to diffusion checkpoints only"):
        load_predictor(ck, "cpu", None, sampling=SamplingOptions(steps=4, seed=1))


def test_noise_is_keyed_by_scene_pixel_with_windows_and_by_tile_seed_without():
    keys, origins = noise_keys(5, 2, [0, 9], [PixelWindow(0, 24, 32, 32), PixelWindow(48, 0, 32, 32)])
    assert keys == [5 << 32] * 2 and origins == [(0, 24), (48, 0)]
    keys, origins = noise_keys(5, 2, [0, 9], None)
    assert len(set(keys)) == 2 and origins == [(0, 0)] * 2


def test_a_tile_depends_on_its_window_not_its_batch(tmp_path):
    """The same window predicted alone or in a batch with others (in another order) gives the same values; the
    same input at another window gives other values (the noise moved)."""
    p = load_predictor(tiny_checkpoint(tmp_path / "g.safetensors"), "cpu", None)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 2, 32, 32)).astype(np.float32)
    wins = [PixelWindow(0, 0, 32, 32), PixelWindow(0, 24, 32, 32), PixelWindow(24, 0, 32, 32)]
    together = p(x, [0, 1, 2], wins)
    alone = p(x[2:3], [7], wins[2:3])
    reversed_ = p(x[::-1].copy(), [2, 1, 0], wins[::-1])
    np.testing.assert_allclose(alone[0], together[2], atol=1e-5)
    np.testing.assert_allclose(reversed_[::-1], together, atol=1e-5)
    moved = p(x[2:3], [7], [PixelWindow(8, 8, 32, 32)])
    assert np.abs(moved[0] - together[2]).mean() > 1e-3


@pytest.mark.slow
def test_scene_interior_does_not_depend_on_overlap_or_batch_size(tmp_path):
    """An 80² scene in 32² tiles: overlap 8 gives offsets 0, 24, 48 (9 tiles), overlap 16 gives 0, 16, 32, 48 (16
    tiles). The corner tiles are the same windows in both, with other row-major indices (the bottom-right one is
    tile 8 in one and 15 in the other); the 16² corners only they cover must be identical although the batch
    size differs too (8 against 3)."""
    ck = tiny_checkpoint(tmp_path / "g.safetensors")
    scene = write_scene(tmp_path / "s1.tif")
    a = translate_scene(scene, ck, tmp_path / "a.tif", TranslateOptions(overlap=8, batch_size=8, device="cpu",
                                                                         amp="off"))
    b = translate_scene(scene, ck, tmp_path / "b.tif", TranslateOptions(overlap=16, batch_size=3, device="cpu",
                                                                         amp="off"))
    assert (a.tiles, b.tiles) == (9, 16)
    ya, yb = read(tmp_path / "a.tif"), read(tmp_path / "b.tif")
    assert np.isfinite(ya).all() and ya.std() > 0.1
    for rows in (slice(0, 16), slice(64, 80)):
        for cols in (slice(0, 16), slice(64, 80)):
            np.testing.assert_allclose(ya[:, rows, cols], yb[:, rows, cols], atol=1e-3)
    assert np.abs(ya - yb).max() > 1e-3          # elsewhere other tiles take part: not a constant output
    c = translate_scene(scene, ck, tmp_path / "c.tif", TranslateOptions(overlap=8, batch_size=8, device="cpu",
                                                                         amp="off",
                                                                         sampling=SamplingOptions(seed=1)))
    assert c.tiles == 9 and np.abs(read(tmp_path / "c.tif") - ya).mean() > 1e-2   # another seed, other noise


def test_progress_counts_network_evaluations_and_tags_record_the_sampler_and_cache(tmp_path):
    ck = tiny_checkpoint(tmp_path / "g.safetensors", steps=6)
    scene = write_scene(tmp_path / "s1.tif", size=56)
    rep = CountingReporter()
    opts = TranslateOptions(overlap=8, batch_size=4, device="cpu", amp="off",
                            sampling=SamplingOptions(sampler="ddim", steps=6, cache_threshold=0.5))
    s = translate_scene(scene, ck, tmp_path / "o.tif", opts, rep)
    [task] = [t for t in rep.tasks if t["description"] == "Translating"]
    assert s.tiles == 4 and task["total"] == task["done"] == 4 * 6
    with rasterio.open(tmp_path / "o.tif") as src:
        tags = src.tags()
    assert (tags["model"], tags["sampler"], tags["sampling_steps"], tags["cache_threshold"]) == \
        ("con-diffusion", "ddim", "6", "0.5")
    skipped, total = int(tags["cache_skipped_steps"]), int(tags["cache_tile_steps"])
    assert total == 24 and 1 <= skipped <= 4 * (6 - 2)              # first and last steps always run
    assert any(f"skipped {skipped} of 24 tile steps" in m for m in rep.infos)


def test_cache_threshold_zero_is_the_uncached_output(tmp_path):
    ck = tiny_checkpoint(tmp_path / "g.safetensors", steps=5)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 2, 32, 32)).astype(np.float32)
    wins = [PixelWindow(0, 0, 32, 32), PixelWindow(0, 32, 32, 32)]
    plain = load_predictor(ck, "cpu", None)(x, None, wins)
    zero = load_predictor(ck, "cpu", None, sampling=SamplingOptions(cache_threshold=0.0))
    assert np.array_equal(zero(x, None, wins), plain) and zero.run_notes() == []
    assert "cache_skipped_steps" not in zero.provenance()


def test_a_chain_passes_windows_and_progress_to_its_stages(tmp_path):
    ck = tiny_checkpoint(tmp_path / "g.safetensors", steps=3)
    p1, p2 = load_predictor(ck, "cpu", None), load_predictor(ck, "cpu", None)
    chain = ChainPredictor([p1, p2])
    x = np.random.default_rng(2).uniform(-1, 1, (1, 2, 32, 32)).astype(np.float32)
    done: list[int] = []
    win = [PixelWindow(8, 16, 32, 32)]
    y = chain(x, [4], win, done.append)
    assert chain.steps == 6 and sum(done) == 6
    np.testing.assert_allclose(y, p2(p1(x, [8], win), [9], win), atol=1e-5)
