"""Tests of the inference engine (sarkit/infer/engine.py): predictor contracts, padding, chains, seeds, and the
same predictor behind translate and ``eval --checkpoint``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from sarkit.errors import CheckpointError, InputError
from sarkit.eval import metrics as M
from sarkit.infer import engine as en
from sarkit.infer import translate as tr
from sarkit.infer.engine import ChainPredictor, Contract, NetworkPredictor, Predictor, load_predictor
from sarkit.infer.translate import TranslateOptions, translate_scene
from sarkit.models.checkpoint import LoadedNetwork, save_network
from sarkit.models.registry import NETWORKS, Identity, register_network
from sarkit.raster.norm import DEFAULT_SAR_RANGE, Normalization, optical_normalization, sar_normalization

CRS = "EPSG:32631"


class RandomConv(nn.Module):
    """A fixed random 3×3 convolution (zero padding) and tanh: a real network, not the identity."""

    def __init__(self, in_channels: int = 2, out_channels: int = 2, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(out_channels, in_channels, 3, 3, generator=g) * 0.4)
            self.conv.bias.copy_(torch.randn(out_channels, generator=g) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x))


if "test-engine-conv" not in NETWORKS:
    register_network("test-engine-conv")(lambda in_channels=2, out_channels=2, seed=0:
                                         RandomConv(in_channels, out_channels, seed))


def loaded(module: nn.Module, in_norm: Normalization, out_norm: Normalization, tile: int = 32,
           path: str = "test.safetensors") -> LoadedNetwork:
    return LoadedNetwork(module=module, kind="generator", arch="test", arch_kwargs={}, digest="0", path=Path(path),
                         meta={"in_norm": in_norm.to_dict(), "out_norm": out_norm.to_dict(), "tile_size": tile,
                               "model": "test", "direction": "x"})


def conv_predictor(in_norm: Normalization, out_norm: Normalization, tile: int = 32, seed: int = 0,
                   path: str = "test.safetensors") -> NetworkPredictor:
    net = RandomConv(in_norm.channels, out_norm.channels, seed)
    return NetworkPredictor(loaded(net, in_norm, out_norm, tile, path), torch.device("cpu"), None)


def save_conv(path: Path, in_norm: Normalization, out_norm: Normalization, tile: int = 32, seed: int = 0) -> Path:
    kw = {"in_channels": in_norm.channels, "out_channels": out_norm.channels, "seed": seed}
    return save_network(path, RandomConv(**kw), kind="generator", arch="test-engine-conv", arch_kwargs=kw,
                        meta={"model": f"conv{seed}", "direction": "x", "in_norm": in_norm.to_dict(),
                              "out_norm": out_norm.to_dict(), "tile_size": tile, "run": "test"})


def write_sar(path: Path, data: np.ndarray) -> Path:
    prof = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0], dtype="float32",
                crs=CRS, transform=from_origin(500000.0, 4800000.0, 10.0, 10.0), nodata=float("nan"))
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        dst.descriptions = ("VV", "VH")
    return path


def batch(n: int, c: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, c, h, w)).astype(np.float32)


class Upsample2(Predictor):
    """Nearest-neighbour ×2 upsampling of the model range: a predictor of scale 2 (no network)."""

    def __init__(self, norm: Normalization, tile: int = 16) -> None:
        self.contract = Contract(norm, norm, tile, scale=2)
        self.device = torch.device("cpu")
        self.name = "upsample×2"

    def _predict(self, x: np.ndarray, seeds: Sequence[int] | None) -> np.ndarray:
        return x.repeat(2, axis=2).repeat(2, axis=3)

    def provenance(self) -> dict[str, str]:
        return {"model": "upsample2"}


class SeededNoise(Predictor):
    """The identity plus noise drawn from each tile's seed: what an iterative sampler's seed use looks like."""

    def __init__(self, norm: Normalization, tile: int) -> None:
        self.contract = Contract(norm, norm, tile, steps=3)
        self.device = torch.device("cpu")
        self.name = "seeded noise"
        self.seen: list[int] = []

    def _predict(self, x: np.ndarray, seeds: Sequence[int] | None) -> np.ndarray:
        assert seeds is not None
        self.seen.extend(seeds)
        noise = np.stack([np.random.default_rng(s).normal(0, 0.05, x.shape[1:]) for s in seeds])
        return (x + noise).astype(np.float32)

    def provenance(self) -> dict[str, str]:
        return {"model": "noise", "arch": "none", "checkpoint": "none", "checkpoint_sha256": "0", "direction": "x"}


# ------------------------------------------------------------------------------------------------ contract
def test_checkpoint_contract_carries_norms_tile_and_scale_one():
    p = conv_predictor(sar_normalization(), optical_normalization(), tile=32)
    assert p.in_norm.bands == ("VV", "VH") and p.out_norm.bands == ("B4", "B3", "B2")
    assert (p.tile, p.scale, p.steps) == (32, 1, 1)
    assert p.contract.in_bands == ("VV", "VH") and p.contract.out_bands == ("B4", "B3", "B2")
    lower = load_predictor(p.net, "cpu", "off", tile=64)
    assert lower.tile == 64 and lower.amp is None


def test_missing_norms_is_one_checkpoint_error_for_translate_and_eval(tmp_path):
    net = LoadedNetwork(module=Identity(2), kind="generator", arch="identity", arch_kwargs={}, digest="0",
                        path=Path("old.safetensors"), meta={"tile_size": 32})
    with pytest.raises(CheckpointError, match="lacks in_norm/out_norm metadata"):
        load_predictor(net)
    with pytest.raises(InputError, match="scale must be a positive integer"):
        Contract(sar_normalization(), sar_normalization(), 32, scale=0)


def test_small_windows_are_mirror_padded_and_cropped_back_larger_ones_run_as_they_are():
    p = conv_predictor(sar_normalization(), sar_normalization(), tile=32)
    x = batch(2, 2, 20, 27)
    padded = np.pad(x, ((0, 0), (0, 0), (0, 12), (0, 5)), mode="symmetric")
    with torch.inference_mode():
        ref = p.module(torch.from_numpy(padded)).numpy()[:, :, :20, :27]
    got = p(x)
    assert got.shape == (2, 2, 20, 27)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    with torch.inference_mode():
        unpadded = p.module(torch.from_numpy(x)).numpy()
    assert np.abs(got - unpadded).max() > 1e-3  # zero padding at the edge would differ: the padding is real
    big = batch(1, 2, 40, 48)
    with torch.inference_mode():
        np.testing.assert_allclose(p(big), p.module(torch.from_numpy(big)).numpy(), atol=1e-6)


def test_wrong_output_shape_and_wrong_input_bands_are_checkpoint_errors():
    p = NetworkPredictor(loaded(RandomConv(2, 2), sar_normalization(), optical_normalization()),
                         torch.device("cpu"), None)
    with pytest.raises(CheckpointError, match=r"returned \(1, 2, 32, 32\).*check --tile"):
        p(batch(1, 2, 32, 32))
    with pytest.raises(CheckpointError, match="takes \\(N, 2, H, W\\) tiles of VV, VH"):
        p(batch(1, 3, 32, 32))


def test_guard_psnr_is_the_metrics_core_psnr_on_zero_one():
    a, b = batch(1, 3, 16, 16, seed=1), batch(1, 3, 16, 16, seed=2)
    ref = M.psnr((torch.from_numpy(a).double() + 1) / 2, (torch.from_numpy(b).double() + 1) / 2)
    assert en.guard_psnr(a, b) == pytest.approx(float(ref[0]), abs=1e-9)
    assert en.guard_psnr(a, a) == float("inf")
    c = a.copy()
    c[0, 0, 0, 0] = np.nan
    assert np.isnan(en.guard_psnr(c, a))  # never ≥ the bound: a NaN prediction drops autocast


# ------------------------------------------------------------------------------------------------ chains
def test_chain_of_two_networks_runs_them_in_turn_with_the_joint_contract():
    sar, opt = sar_normalization(), optical_normalization()
    a = conv_predictor(sar, sar, tile=32, seed=1, path="a.safetensors")
    b = conv_predictor(sar, opt, tile=48, seed=2, path="b.safetensors")
    chain = ChainPredictor([a, b])
    assert chain.in_norm is a.in_norm and chain.out_norm is b.out_norm
    assert (chain.tile, chain.scale, chain.steps) == (48, 1, 2)
    x = batch(3, 2, 48, 48)
    y = chain(x)
    assert y.shape == (3, 3, 48, 48) and y.std() > 0.05
    np.testing.assert_array_equal(y, b(a(x)))
    assert np.abs(y - b(x)).max() > 1e-3  # the first network changes what the second sees
    assert chain.provenance()["checkpoint"] == "a.safetensors + b.safetensors"


def test_chain_refuses_a_link_whose_output_is_not_the_next_input():
    sar, opt = sar_normalization(), optical_normalization()
    to_opt = conv_predictor(sar, opt)
    with pytest.raises(CheckpointError, match="cannot chain .* predicts B4, B3, B2 .* takes VV, VH"):
        ChainPredictor([to_opt, conv_predictor(sar, sar)])
    narrower = Normalization("sar", ("VV", "VH"), (-20.0, -20.0), (0.0, 0.0))
    with pytest.raises(CheckpointError, match="ranges"):
        ChainPredictor([conv_predictor(sar, sar), conv_predictor(narrower, sar)])


def test_chain_scales_multiply_and_pads_once_to_the_largest_tile_any_stage_needs():
    sar = sar_normalization()
    up = Upsample2(sar, tile=16)
    net = conv_predictor(sar, sar, tile=64)
    chain = ChainPredictor([up, net])
    assert (chain.scale, chain.tile) == (2, 32)  # the network's 64 output pixels are 32 input pixels
    x = batch(2, 2, 20, 20)
    padded = np.pad(x, ((0, 0), (0, 0), (0, 12), (0, 12)), mode="symmetric")
    expect = net(up(padded))[:, :, :40, :40]
    np.testing.assert_array_equal(chain(x), expect)
    assert chain(x).shape == (2, 2, 40, 40)


def test_chain_gives_each_stage_its_own_seeds():
    sar = sar_normalization()
    s1, s2 = SeededNoise(sar, 8), SeededNoise(sar, 8)
    ChainPredictor([s1, s2])(batch(2, 2, 8, 8), seeds=[5, 9])
    assert s1.seen == [10, 18] and s2.seen == [11, 19]


# ------------------------------------------------------------------------------------------------ translate
def test_translate_runs_a_ready_chain_predictor(tmp_path):
    sar = sar_normalization()
    scene = write_sar(tmp_path / "s.tif", np.random.default_rng(0).uniform(-24, -1, (2, 50, 70)).astype(np.float32))
    ident = save_network(tmp_path / "id.safetensors", Identity(2), kind="generator", arch="identity",
                         arch_kwargs={"channels": 2}, meta={"model": "identity", "direction": "identity",
                                                            "in_norm": sar.to_dict(), "out_norm": sar.to_dict(),
                                                            "tile_size": 32, "run": "t"})
    conv = save_conv(tmp_path / "conv.safetensors", sar, optical_normalization(), tile=32)
    opts = TranslateOptions(overlap=8, amp="off", device="cpu")
    chain = ChainPredictor([load_predictor(ident), load_predictor(conv)])
    translate_scene(scene, chain, tmp_path / "chain.tif", opts)
    translate_scene(scene, conv, tmp_path / "conv.tif", opts)
    with rasterio.open(tmp_path / "chain.tif") as c, rasterio.open(tmp_path / "conv.tif") as d:
        np.testing.assert_array_equal(c.read(), d.read())
        assert c.tags()["checkpoint"] == "id.safetensors + conv.safetensors" and c.tags()["model"] == "identity + conv0"
    with pytest.raises(InputError, match="differs from the predictor's tile"):
        translate_scene(scene, chain, tmp_path / "t.tif", TranslateOptions(tile=64, overlap=8))


def test_translate_writes_a_predictor_of_scale_two_on_the_finer_grid(tmp_path):
    scene = write_sar(tmp_path / "s.tif", np.full((2, 40, 40), -10.0, np.float32))
    translate_scene(scene, Upsample2(sar_normalization()), tmp_path / "o.tif", TranslateOptions(overlap=4))
    with rasterio.open(tmp_path / "o.tif") as o:  # the rest: tests/infer/test_translate_scale.py
        assert (o.height, o.width, o.res) == (80, 80, (5.0, 5.0))


def test_translate_seeds_each_tile_by_its_place_whatever_the_batch(tmp_path):
    sar = sar_normalization()
    data = np.random.default_rng(0).uniform(-24, -1, (2, 70, 90)).astype(np.float32)
    scene = write_sar(tmp_path / "s.tif", data)
    outs = []
    for bs in (1, 4):
        noisy = SeededNoise(sar, 32)
        translate_scene(scene, noisy, tmp_path / f"b{bs}.tif", TranslateOptions(overlap=8, batch_size=bs))
        assert sorted(noisy.seen) == list(range(len(noisy.seen)))  # one seed per tile: its row-major index
        with rasterio.open(tmp_path / f"b{bs}.tif") as o:
            outs.append(o.read())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0] - np.clip(data, -25, 0)).max() > 0.1  # the noise is there


# ------------------------------------------------------------------------------------------------ eval
@pytest.fixture()
def tiles(tmp_path):
    from sarkit.data.tiling import TileOptions, tile_scene

    rng = np.random.default_rng(0)
    s1 = write_sar(tmp_path / "s1.tif", rng.uniform(-24, -1, (2, 64, 96)).astype(np.float32))
    prof = dict(driver="GTiff", width=96, height=64, count=13, dtype="uint16", crs=CRS,
                transform=from_origin(500000.0, 4800000.0, 10.0, 10.0), nodata=0)
    with rasterio.open(tmp_path / "s2.tif", "w", **prof) as dst:
        dst.write(rng.integers(1, 3000, (13, 64, 96)).astype(np.uint16))
    tile_scene(s1, tmp_path / "s2.tif", None, tmp_path / "tiles", TileOptions(size=32, split=(0.0, 0.0, 1.0)))
    return tmp_path / "tiles"


def unet_checkpoint(path: Path, tiles: Path) -> Path:
    """A small pix2pix U-Net at its random initialisation, with the tiling's ranges."""
    from sarkit.data.dataset import read_tiling
    from sarkit.models import load_all

    load_all()
    rec = read_tiling(tiles)["normalization"]
    in_norm = Normalization.from_dict(rec["sar"])
    out_norm = Normalization.from_dict(rec["optical"]).select(["B4", "B3", "B2"])
    torch.manual_seed(0)
    kw = {"in_channels": 2, "out_channels": 3, "num_downs": 5, "ngf": 8}
    return save_network(path, NETWORKS["unet"](**kw), "generator", "unet", kw,
                        {"model": "pix2pix", "direction": "sar2opt", "in_norm": in_norm.to_dict(),
                         "out_norm": out_norm.to_dict(), "tile_size": 32, "run": "t"})


def test_translate_and_eval_checkpoint_give_identical_pixels_on_the_same_tile(tmp_path, tiles):
    from sarkit.data.dataset import load_manifest
    from sarkit.eval.options import EvalOptions
    from sarkit.eval.sources import ModelSplitSource

    ckpt = unet_checkpoint(tmp_path / "unet.safetensors", tiles)
    row = load_manifest(tiles, "test")[1]
    out = tmp_path / "translated.tif"
    translate_scene(tiles / row["s1_path"], ckpt, out, TranslateOptions(overlap=8, amp="off", device="cpu"))
    with rasterio.open(out) as o:
        translated = o.read()
    source = ModelSplitSource(ckpt, tiles, "test", EvalOptions(device="cpu"))
    assert source.predictor.amp is None  # eval runs fp32 unless asked
    block = source.fetch(row["tile_id"])
    assert np.isfinite(block.pred).all() and block.pred.std() > 0.01  # a real prediction, no nodata
    assert np.abs(block.pred - block.input[[0, 1, 1]]).mean() > 0.05  # not the input passed through
    encoded = tr._encode_output(block.pred, np.zeros(block.pred.shape[1:], bool), source.pred_norm,
                                tr.OutputFormat.NATIVE)
    np.testing.assert_array_equal(encoded, translated)


def test_eval_checkpoint_amp_option_reaches_the_predictor(tmp_path, tiles):
    from sarkit.eval.options import EvalOptions
    from sarkit.eval.sources import ModelSplitSource

    ckpt = unet_checkpoint(tmp_path / "unet.safetensors", tiles)
    source = ModelSplitSource(ckpt, tiles, "test", EvalOptions(device="cpu", amp="bf16"))
    assert source.predictor.amp is torch.bfloat16 and source.predictor.guard_psnr is None
    source.fetch(source.ds.ids[0])
    assert source.predictor.guard_psnr is not None  # the first batch was checked against fp32


def test_eval_reencodes_the_input_when_the_tiling_ranges_differ(tmp_path, tiles):
    """A checkpoint with other SAR ranges than the tiling gets the tile encoded with its own ranges, as translate
    would feed it."""
    from sarkit.data.dataset import load_manifest
    from sarkit.eval.options import EvalOptions
    from sarkit.eval.sources import ModelSplitSource
    from sarkit.reporting import RecordingReporter

    other = Normalization("sar", ("VV", "VH"), (-30.0, -30.0), (5.0, 5.0))
    ckpt = save_network(tmp_path / "id.safetensors", Identity(2), kind="generator", arch="identity",
                        arch_kwargs={"channels": 2}, meta={"model": "identity", "direction": "identity",
                                                           "in_norm": other.to_dict(),
                                                           "out_norm": other.to_dict(), "tile_size": 32,
                                                           "run": "t"})
    rep = RecordingReporter()
    source = ModelSplitSource(ckpt, tiles, "test", EvalOptions(device="cpu"), rep)
    assert any("input is re-encoded" in w for w in rep.warnings)
    row = load_manifest(tiles, "test")[0]
    with rasterio.open(tiles / row["s1_path"]) as src:
        db = src.read().astype(np.float32)
    block = source.fetch(row["tile_id"])
    lo, hi = DEFAULT_SAR_RANGE  # the tiling's range: values outside it were clipped when the tile was encoded
    np.testing.assert_allclose(block.input, other.encode(np.clip(db, lo, hi)), atol=1e-5)
    assert np.abs(block.input - sar_normalization().encode(db)).max() > 0.05  # not the tiling's encoding


# ------------------------------------------------------------------------------------------ tile, memory, pixel size
def test_tile_multiple_is_the_product_of_conv_strides():
    from sarkit.models.blocks import build_resnet, build_unet

    assert en.tile_multiple(build_unet(2, 3, num_downs=8, ngf=4)) == 256
    assert en.tile_multiple(build_unet(2, 3, num_downs=6, ngf=4)) == 64
    assert en.tile_multiple(build_resnet(2, 3, ngf=4, n_blocks=1)) == 4
    assert en.tile_multiple(Identity(2)) == 1 and en.tile_multiple(RandomConv()) == 1


@pytest.mark.parametrize("tile,ok", [(None, True), (128, True), (256, True), (100, False), (96, False)])
def test_checkpoint_contract_checks_the_tile_against_the_network(tile, ok):
    from sarkit.models.blocks import build_unet

    sar = sar_normalization()
    net = loaded(build_unet(2, 2, num_downs=6, ngf=4), sar, sar, tile=64)
    if ok:
        c = en.checkpoint_contract(net, tile)
        assert c.tile == (tile or 64) and c.tile_multiple == 64
    else:
        with pytest.raises(InputError, match=rf"--tile {tile} does not suit generator test.safetensors: .*"
                                             r"multiple of 64 \(64, 128, 192"):
            en.checkpoint_contract(net, tile)


def test_a_chain_tile_suits_every_stage():
    from sarkit.models.blocks import build_resnet

    sar = sar_normalization()
    res = NetworkPredictor(loaded(build_resnet(2, 2, ngf=4, n_blocks=1), sar, sar, tile=36), torch.device("cpu"),
                           None)
    chain = ChainPredictor([conv_predictor(sar, sar, tile=30), res])
    assert chain.contract.tile_multiple == 4 and chain.tile == 36
    chain = ChainPredictor([conv_predictor(sar, sar, tile=38), res])
    assert chain.tile == 40  # the largest stage tile, rounded up to a multiple of 4
    assert chain(np.zeros((1, 2, 40, 40), np.float32)).shape == (1, 2, 40, 40)


def test_batch_memory_estimate_and_refusal(monkeypatch):
    sar = sar_normalization()
    c = Contract(sar, optical_normalization(), tile=256)
    px = 256 * 256
    assert en.batch_memory_bytes(c, 2) == 2 * px * (4 * 2 + 4 * 3 + en.ACTIVATION_BYTES_PER_PIXEL)
    cpu = torch.device("cpu")
    en.check_batch_memory(c, 8, cpu)  # 256² × 8: well within any machine
    monkeypatch.setattr(en, "device_memory_bytes", lambda device: 2 ** 30)
    with pytest.raises(InputError, match=r"--tile 256 with --batch-size 64 needs about 2\.\d GiB for one batch of "
                                         r"tiles, more than this machine's 1\.0 GiB"):
        en.check_batch_memory(c, 64, cpu)


def test_contract_carries_the_recorded_pixel_size_and_none_for_old_checkpoints():
    sar = sar_normalization()
    old = loaded(RandomConv(), sar, sar)
    assert en.checkpoint_contract(old).pixel_size is None
    new = loaded(RandomConv(), sar, sar)
    new.meta["pixel_size"] = {"x": 10, "y": 10, "units": "metre", "x_m": 10, "y_m": 10}
    assert en.checkpoint_contract(new).pixel_size.x_m == 10.0
    new.meta["pixel_size"] = {"y": 10}
    with pytest.raises(CheckpointError, match="unreadable pixel_size"):
        en.checkpoint_contract(new)
    sar_chain = ChainPredictor([NetworkPredictor(loaded(RandomConv(), sar, sar), torch.device("cpu"), None),
                                conv_predictor(sar, sar)])
    assert sar_chain.contract.pixel_size is None


def test_provenance_names_the_checkpoint_file_not_its_path(tmp_path):
    sar = sar_normalization()
    p = conv_predictor(sar, sar, path=str(tmp_path / "deep" / "generator.safetensors"))
    assert p.provenance()["checkpoint"] == "generator.safetensors"
