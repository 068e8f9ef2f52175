"""Tests of whole-scene translation (sarkit/translate.py) and the ``sarkit translate`` command."""

from __future__ import annotations

import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate
from torch import nn
from typer.testing import CliRunner

from rasters import write_sar_db
from sarkit.infer import engine as en
from sarkit.infer import translate as tr
from sarkit.models.checkpoint import LoadedNetwork, file_sha256, load_network, save_network
from sarkit.cli import app
from sarkit.raster.grid import grid_offsets
from sarkit.models.registry import NETWORKS, Identity, register_network
from sarkit.raster.norm import Normalization, optical_normalization, sar_normalization
from sarkit.reporting import RecordingReporter
from sarkit.infer.translate import TranslateOptions, translate_many, translate_scene

runner = CliRunner()
CRS = "EPSG:32631"
TRANSFORM = from_origin(500000.0, 4800000.0, 10.0, 10.0)


class FixedConv(nn.Module):
    """A fixed random 3×3 convolution (zero padding, so tile edges differ from the interior) and tanh."""

    def __init__(self, in_channels: int = 2, out_channels: int = 2, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        with torch.no_grad():
            w = torch.rand(out_channels, in_channels, 3, 3, generator=g)
            self.conv.weight.copy_(w / w.sum(dim=(1, 2, 3), keepdim=True))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(1.5 * self.conv(x))


if "test-translate-conv" not in NETWORKS:
    register_network("test-translate-conv")(lambda in_channels=2, out_channels=2, seed=0:
                                            FixedConv(in_channels, out_channels, seed))


# ------------------------------------------------------------------------------------------------ fixtures
def write_sar(path: Path, height: int, width: int, data: np.ndarray | None = None, crs: str | None = CRS,
              bands: tuple[str, ...] = ("VV", "VH"), seed: int = 0) -> np.ndarray:
    """Write a float32 dB scene inside [-25, 0] (NaN nodata); returns its pixels."""
    if data is None:
        rng = np.random.default_rng(seed)
        data = rng.uniform(-24.5, -0.5, size=(len(bands), height, width)).astype(np.float32)
    write_sar_db(path, data, crs=crs, bands=bands, block=256)
    return data


def smooth_sar(height: int, width: int) -> np.ndarray:
    """A smooth 2-band dB pattern inside [-25, 0]."""
    r, c = np.mgrid[0:height, 0:width].astype(np.float32)
    vv = -12.0 + 8.0 * np.sin(r / 37.0) * np.cos(c / 23.0)
    vh = -18.0 + 5.0 * np.cos((r + c) / 41.0)
    return np.stack([vv, vh]).astype(np.float32)


def save_identity(path: Path, norm: Normalization | None = None, tile: int = 256) -> Path:
    n = (norm or sar_normalization()).to_dict()
    return save_network(path, Identity(len(n["bands"])), kind="generator", arch="identity",
                        arch_kwargs={"channels": len(n["bands"])},
                        meta={"model": "identity", "direction": "identity", "in_norm": n, "out_norm": n,
                              "tile_size": tile, "run": "test"})


def save_conv(path: Path, in_norm: Normalization, out_norm: Normalization, tile: int = 64) -> Path:
    kw = {"in_channels": in_norm.channels, "out_channels": out_norm.channels, "seed": 0}
    return save_network(path, FixedConv(**kw), kind="generator", arch="test-translate-conv", arch_kwargs=kw,
                        meta={"model": "test", "direction": "sar2opt", "in_norm": in_norm.to_dict(),
                              "out_norm": out_norm.to_dict(), "tile_size": tile, "run": "test"})


@pytest.fixture()
def identity_ckpt(tmp_path: Path) -> Path:
    return save_identity(tmp_path / "ckpt" / "identity.safetensors")


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


# ------------------------------------------------------------------------------------------------ identity
def test_identity_returns_input_on_odd_scene_with_nodata_and_valid_cog(tmp_path, identity_ckpt):
    scene = tmp_path / "scene.tif"
    data = write_sar(scene, 777, 1000)
    rr, cc = np.mgrid[0:777, 0:1000]
    wedge = (cc < 300 - rr) & (rr < 250)  # a NaN wedge in the top-left corner
    data[0][wedge] = np.nan
    data[1][(rr > 700) & (cc > 900)] = np.nan  # and nodata in one band only at the bottom right
    write_sar(scene, 777, 1000, data=data)
    out = tmp_path / "out.tif"
    summary = translate_scene(scene, identity_ckpt, out, TranslateOptions(overlap=64, device="cpu"))
    assert summary.tiles == 4 * 5 and summary.tiles_per_s > 0
    got = read(out)
    in_nodata = np.isnan(data).any(axis=0)
    assert np.array_equal(np.isnan(got).all(axis=0), in_nodata)
    assert np.array_equal(np.isnan(got).any(axis=0), in_nodata)
    diff = np.abs(got - data)[:, ~in_nodata]
    assert diff.max() < 2e-5  # float32 encode/decode only: no seams, no rims
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    with rasterio.open(scene) as s, rasterio.open(out) as o:
        assert o.crs == s.crs and o.transform == s.transform and (o.width, o.height) == (s.width, s.height)
        assert o.dtypes[0] == "float32" and np.isnan(o.nodata)
        assert o.descriptions == ("VV", "VH")
        assert o.overviews(1)  # internal overviews
        assert o.profile["blockxsize"] == 512
    assert files_in(tmp_path) == {"scene.tif", "out.tif", "ckpt"}


def test_progress_counts_every_tile(tmp_path, identity_ckpt):
    class Rec:
        def __init__(self):
            self.tasks = []

        @contextmanager
        def task(self, description, total):
            rec = {"description": description, "total": total, "done": 0}
            self.tasks.append(rec)

            class T:
                def advance(self, n=1, **fields):
                    rec["done"] += n
            yield T()

        def info(self, message, **fields):
            pass

        def warn(self, message, **fields):
            pass

    scene = tmp_path / "scene.tif"
    data = write_sar(scene, 300, 500)
    data[:, :, :200] = np.nan  # all-nodata tiles are skipped but still counted
    write_sar(scene, 300, 500, data=data)
    rep = Rec()
    s = translate_scene(scene, identity_ckpt, tmp_path / "o.tif", TranslateOptions(tile=128, overlap=32), rep)
    assert rep.tasks == [{"description": "Translating", "total": s.tiles, "done": s.tiles}]
    assert s.tiles == len(grid_offsets(300, 128, 96, True)) * len(grid_offsets(500, 128, 96, True))


def test_scene_smaller_than_one_tile(tmp_path, identity_ckpt):
    scene = tmp_path / "small.tif"
    data = write_sar(scene, 70, 100)
    out = tmp_path / "out.tif"
    r = runner.invoke(app, ["translate", str(scene), "--checkpoint", str(identity_ckpt), "--out", str(out),
                            "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    got = read(out)
    assert got.shape == (2, 70, 100)
    assert np.abs(got - data).max() < 2e-5


def test_reads_scene_strip_by_strip(tmp_path, identity_ckpt, monkeypatch):
    scene = tmp_path / "scene.tif"
    data = write_sar(scene, 700, 300)
    reads = []
    real = tr.SceneReader.physical

    def spy(self, row, height):
        reads.append((row, height))
        return real(self, row, height)

    monkeypatch.setattr(tr.SceneReader, "physical", spy)
    translate_scene(scene, identity_ckpt, tmp_path / "o.tif", TranslateOptions(tile=128, overlap=32))
    rows = grid_offsets(700, 128, 96, cover=True)
    assert reads == [(r, 128) for r in rows]  # one strip of one tile row at a time, never the whole scene
    assert np.abs(read(tmp_path / "o.tif") - data).max() < 2e-5


def test_linear_power_input_is_converted_to_db(tmp_path, identity_ckpt):
    scene = tmp_path / "linear.tif"
    db = write_sar(tmp_path / "db.tif", 90, 110)
    write_sar(scene, 90, 110, data=np.power(10.0, db / 10.0).astype(np.float32))  # units detected: linear
    translate_scene(scene, identity_ckpt, tmp_path / "o.tif", TranslateOptions(tile=64, overlap=16))
    assert np.abs(read(tmp_path / "o.tif") - db).max() < 1e-4


# ------------------------------------------------------------------------------------------------ seams
def boundary_vs_interior(img: np.ndarray, offsets: list[int], tile: int, size: int, axis: int) -> tuple[float, float]:
    """Mean |difference between neighbouring pixels| across tile edges and over the whole image along ``axis``."""
    d = np.abs(np.diff(img, axis=axis))  # d[k] = |x[k+1] − x[k]|
    edges = sorted({o for o in offsets if o > 0} | {o + tile for o in offsets if o + tile < size})
    sel = np.take(d, [e - 1 for e in edges], axis=axis)
    return float(sel.mean()), float(d.mean())


@pytest.mark.parametrize("overlap,seamless", [(16, True), (0, False)])
def test_no_seams_with_conv_net(tmp_path, overlap, seamless):
    scene = tmp_path / "scene.tif"
    write_sar(scene, 300, 340, data=smooth_sar(300, 340))
    ckpt = save_conv(tmp_path / "conv.safetensors", sar_normalization(), sar_normalization(), tile=64)
    out = tmp_path / "out.tif"
    translate_scene(scene, ckpt, out, TranslateOptions(overlap=overlap, batch_size=5))
    img = read(out).astype(np.float64)
    stride = 64 - overlap
    ratios = []
    for axis, size in ((2, 340), (1, 300)):
        offsets = grid_offsets(size, 64, stride, cover=True)
        across, inside = boundary_vs_interior(img, offsets, 64, size, axis)
        ratios.append(across / inside)
    if seamless:
        assert max(ratios) <= 1.1, ratios
    else:  # the control: without overlap the zero-padded edges show as seams, so the measure can fail
        assert max(ratios) > 1.1, ratios


# ------------------------------------------------------------------------------------------------ optical output
def test_optical_native_output(tmp_path):
    scene = tmp_path / "scene.tif"
    data = write_sar(scene, 200, 230)
    data[:, 50:60, :] = np.nan
    write_sar(scene, 200, 230, data=data)
    ckpt = save_conv(tmp_path / "conv.safetensors", sar_normalization(), optical_normalization(), tile=64)
    out = tmp_path / "opt.tif"
    r = runner.invoke(app, ["translate", str(scene), "--checkpoint", str(ckpt), "--out", str(out), "--overlap", "16",
                            "--quiet"])
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as o:
        assert o.dtypes == ("uint16",) * 3 and o.nodata == 0
        assert o.descriptions == ("B4", "B3", "B2")
        tags = o.tags()
        assert tags["checkpoint_sha256"] == file_sha256(ckpt)
        assert tags["checkpoint"] == "conv.safetensors" and tags["model"] == "test" and tags["direction"] == "sar2opt"
        assert str(tmp_path) not in " ".join(tags.values())  # no path of this machine in the output
        assert tags["sarkit_version"] and tags["dn_offset"] == "0"
        got = o.read()
    nodata = np.isnan(data).any(axis=0)
    assert np.all(got[:, nodata] == 0)
    assert np.all(got[:, ~nodata] >= 1) and got[:, ~nodata].max() <= 3000  # reflectance range [0, 0.3]
    assert cog_validate(str(out))[0]


def write_optical(path: Path, dn: np.ndarray) -> None:
    prof = dict(driver="GTiff", width=dn.shape[2], height=dn.shape[1], count=dn.shape[0], dtype="uint16", crs=CRS,
                transform=TRANSFORM, nodata=0)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(dn)
        dst.descriptions = ("B2", "B3", "B4")  # stored in another order than the checkpoint's B4, B3, B2


def test_baseline_offset_checkpoint_writes_offset_dn_and_tags_it(tmp_path):
    """A checkpoint trained on baseline-04.00 tiles (offset −1000) writes DN = ρ·10000 + 1000 and says so."""
    scene = tmp_path / "scene.tif"
    write_sar(scene, 120, 140)
    outs = {}
    for offset in (False, True):
        ckpt = save_conv(tmp_path / f"conv{offset}.safetensors", sar_normalization(),
                         optical_normalization(baseline_offset=offset), tile=64)
        outs[offset] = tmp_path / f"opt{offset}.tif"
        translate_scene(scene, ckpt, outs[offset], TranslateOptions(tile=64, overlap=16))
    with rasterio.open(outs[False]) as a, rasterio.open(outs[True]) as b:
        assert (a.tags()["dn_offset"], b.tags()["dn_offset"]) == ("0", "-1000")
        plain, shifted = a.read().astype(int), b.read().astype(int)
    unclipped = plain > 1  # ρ = 0 is written as DN 1 without the offset (0 is nodata)
    assert unclipped.mean() > 0.5
    diff = shifted[unclipped] - (plain[unclipped] + 1000)
    assert np.abs(diff).max() <= 1 and (diff == 0).mean() > 0.99  # float32 rounding of ρ·10000 (+ 1000)


def test_rgb8_output_values_and_nodata(tmp_path):
    rng = np.random.default_rng(1)
    dn = rng.integers(1, 4000, size=(3, 150, 180)).astype(np.uint16)
    dn[:, :20, :20] = 0
    scene = tmp_path / "opt.tif"
    write_optical(scene, dn)
    norm = optical_normalization()
    ckpt = save_identity(tmp_path / "id.safetensors", norm, tile=64)
    out = tmp_path / "rgb.tif"
    r = runner.invoke(app, ["translate", str(scene), "--checkpoint", str(ckpt), "--out", str(out), "--format", "rgb8",
                            "--overlap", "16", "--quiet"])
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as o:
        assert o.dtypes == ("uint8",) * 3 and o.nodata == 0
        assert o.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert "dn_offset" not in o.tags()  # display bytes, not digital numbers
        got = o.read()
    x = norm.encode(dn[[2, 1, 0]].astype(np.float32) / 10000.0)
    expect = np.clip(np.rint((x + 1) / 2 * 255), 1, 255)
    nodata = (dn == 0).any(axis=0)
    assert np.all(got[:, nodata] == 0)
    assert np.abs(got[:, ~nodata].astype(int) - expect[:, ~nodata]).max() <= 1
    assert np.all(got[:, ~nodata] >= 1)
    assert cog_validate(str(out))[0]


def test_optical_identity_native_roundtrip(tmp_path):
    rng = np.random.default_rng(2)
    dn = rng.integers(1, 2900, size=(3, 90, 120)).astype(np.uint16)
    scene = tmp_path / "opt.tif"
    write_optical(scene, dn)
    ckpt = save_identity(tmp_path / "id.safetensors", optical_normalization(), tile=64)
    translate_scene(scene, ckpt, tmp_path / "o.tif", TranslateOptions(overlap=8))
    got = read(tmp_path / "o.tif")
    assert np.abs(got.astype(int) - dn[[2, 1, 0]].astype(int)).max() <= 1


def test_optical_input_dn_offset_from_checkpoint_unless_the_scene_is_tagged(tmp_path):
    """Untagged DN are read with the checkpoint's offset (−1000 here); a scene's dn_offset tag wins."""
    dn = np.random.default_rng(3).integers(1000, 2900, size=(3, 64, 80)).astype(np.uint16)
    scene = tmp_path / "opt.tif"
    write_optical(scene, dn)
    norm = optical_normalization(baseline_offset=True)
    ckpt = save_identity(tmp_path / "id.safetensors", norm, tile=64)
    translate_scene(scene, ckpt, tmp_path / "a.tif", TranslateOptions(overlap=8))
    with rasterio.open(scene, "r+") as d:
        d.update_tags(dn_offset="0")  # these DN are plain (pre-04.00): ρ = DN / 10000
    translate_scene(scene, ckpt, tmp_path / "b.tif", TranslateOptions(overlap=8))
    expect = dn[[2, 1, 0]].astype(int)
    assert np.abs(read(tmp_path / "a.tif").astype(int) - expect).max() <= 1
    assert np.abs(read(tmp_path / "b.tif").astype(int) - (expect + 1000)).max() <= 1


# ------------------------------------------------------------------------------------------------ bad input
def cli(*args: str):
    return runner.invoke(app, ["translate", *args, "--quiet"])


def test_unreadable_dn_offset_tag_on_optical_scene_exit_2(tmp_path):
    scene = tmp_path / "opt.tif"
    write_optical(scene, np.full((3, 40, 50), 1500, np.uint16))
    with rasterio.open(scene, "r+") as d:
        d.update_tags(dn_offset="baseline4")
    ckpt = save_identity(tmp_path / "id.safetensors", optical_normalization(), tile=64)
    out = tmp_path / "out.tif"
    r = cli(str(scene), "--checkpoint", str(ckpt), "--out", str(out), "--overlap", "16")
    assert r.exit_code == 2 and "unreadable dn_offset tag 'baseline4'" in r.output
    assert files_in(tmp_path) == {"opt.tif", "id.safetensors"}


def test_all_nodata_scene_exit_2(tmp_path, identity_ckpt):
    scene = tmp_path / "empty.tif"
    write_sar(scene, 100, 120, data=np.full((2, 100, 120), np.nan, np.float32))
    out = tmp_path / "out.tif"
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(out))
    assert r.exit_code == 2, r.output
    assert "nodata" in r.output
    assert files_in(tmp_path) == {"empty.tif", "ckpt"}


def test_channel_mismatch_exit_2(tmp_path, identity_ckpt):
    scene = tmp_path / "vv.tif"
    write_sar(scene, 100, 120, bands=("VV",))
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(tmp_path / "out.tif"))
    assert r.exit_code == 2, r.output
    assert "VH" in r.output
    assert files_in(tmp_path) == {"vv.tif", "ckpt"}


@pytest.mark.parametrize("overlap", ["256", "300", "-1"])
def test_bad_overlap_exit_2(tmp_path, identity_ckpt, overlap):
    scene = tmp_path / "s.tif"
    write_sar(scene, 100, 120)
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(tmp_path / "out.tif"), "--overlap", overlap)
    assert r.exit_code == 2, r.output
    assert "overlap" in r.output
    assert files_in(tmp_path) == {"s.tif", "ckpt"}


def test_options_check_themselves_and_take_enum_names():
    from dataclasses import replace

    from sarkit.errors import InputError
    from sarkit.devices import AmpMode

    opts = TranslateOptions(amp=" BF16 ", format="rgb8")
    assert opts.amp is AmpMode.BF16 and opts.format is tr.OutputFormat.RGB8
    assert replace(opts, format="native").format is tr.OutputFormat.NATIVE
    assert TranslateOptions().amp is AmpMode.AUTO and TranslateOptions(amp=None).amp is AmpMode.AUTO
    cases = [({"format": "png"}, "--format must be one of native, rgb8, got 'png'"),
             ({"format": "RGB8"}, "--format must be one of native, rgb8, got 'RGB8'"),
             ({"amp": "fp8"}, "--amp must be one of off, bf16, fp16, got 'fp8'"),
             ({"batch_size": 0}, "--batch-size must be ≥ 1, got 0"),
             ({"tile": 64, "overlap": 64}, "--overlap must be ≥ 0 and smaller than --tile (64), got 64"),
             ({"overlap": -1}, "--overlap must be ≥ 0, got -1")]
    for kw, message in cases:
        with pytest.raises(InputError) as err:
            TranslateOptions(**kw)
        assert str(err.value) == message


@pytest.mark.parametrize("args,message", [(["--format", "png"], "--format must be one of native, rgb8"),
                                          (["--amp", "fp8"], "--amp must be one of off, bf16, fp16"),
                                          (["--batch-size", "0"], "--batch-size must be ≥ 1")])
def test_bad_option_values_exit_2_and_write_nothing(tmp_path, identity_ckpt, args, message):
    scene = tmp_path / "s.tif"
    write_sar(scene, 40, 50)
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(tmp_path / "out.tif"), *args)
    assert r.exit_code == 2 and message in r.output
    assert files_in(tmp_path) == {"s.tif", "ckpt"}


def test_existing_out_exit_2_untouched(tmp_path, identity_ckpt):
    scene = tmp_path / "s.tif"
    write_sar(scene, 100, 120)
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(out))
    assert r.exit_code == 2
    assert "--overwrite" in r.output
    assert out.read_bytes() == b"precious"
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(out), "--overwrite")
    assert r.exit_code == 0, r.output
    assert read(out).shape == (2, 100, 120)


def test_unwritable_output_dir_exit_2(tmp_path, identity_ckpt):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    scene = tmp_path / "s.tif"
    write_sar(scene, 50, 50)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(ro / "out.tif"))
        assert r.exit_code == 2, r.output
    finally:
        ro.chmod(0o700)


def test_output_dir_that_cannot_be_created_exit_2(tmp_path, identity_ckpt):
    scene = tmp_path / "s.tif"
    write_sar(scene, 50, 50)
    (tmp_path / "afile").write_text("x")
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(tmp_path / "afile" / "out.tif"))
    assert r.exit_code == 2, r.output
    assert files_in(tmp_path) == {"s.tif", "ckpt", "afile"}


def test_cuda_absent_exit_2(tmp_path, identity_ckpt):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    scene = tmp_path / "s.tif"
    write_sar(scene, 50, 50)
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(tmp_path / "o.tif"), "--device", "cuda")
    assert r.exit_code == 2 and "CUDA" in r.output
    assert not (tmp_path / "o.tif").exists()


def test_out_and_out_dir_usage_errors(tmp_path, identity_ckpt):
    scene = tmp_path / "s.tif"
    write_sar(scene, 50, 50)
    assert cli(str(scene), "--checkpoint", str(identity_ckpt)).exit_code == 2
    assert cli(str(scene), str(scene), "--checkpoint", str(identity_ckpt), "--out", str(tmp_path / "o.tif")
               ).exit_code == 2


@pytest.mark.parametrize("exc,code", [(RuntimeError("boom"), 1), (KeyboardInterrupt(), 130)])
def test_failure_midway_leaves_no_output_and_no_temp(tmp_path, identity_ckpt, monkeypatch, exc, code):
    scene = tmp_path / "s.tif"
    write_sar(scene, 400, 400)
    calls = {"n": 0}

    class Failing(nn.Module):
        def forward(self, x):
            calls["n"] += 1
            if calls["n"] > 3:
                raise exc
            return x

    real = load_network

    def fake_load(path, kind="generator", device="cpu"):
        net = real(path, kind, device)
        return LoadedNetwork(Failing(), net.kind, net.arch, net.arch_kwargs, net.meta, net.path, net.sha256)

    monkeypatch.setattr(en, "load_network", fake_load)
    out = tmp_path / "out.tif"
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(out), "--tile", "64", "--overlap", "8",
            "--batch-size", "2")
    assert r.exit_code == code, r.output
    assert calls["n"] == 4
    assert files_in(tmp_path) == {"s.tif", "ckpt"}


# ------------------------------------------------------------------------------------------------ georeferencing
def test_ungeoreferenced_refused_then_allowed(tmp_path, identity_ckpt):
    scene = tmp_path / "nocrs.tif"
    data = write_sar(scene, 80, 90, crs=None)
    out = tmp_path / "out.tif"
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(out))
    assert r.exit_code == 2
    assert "--allow-ungeoreferenced" in r.output
    assert not out.exists()
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(out), "--allow-ungeoreferenced")
    assert r.exit_code == 0, r.output
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(out) as o:
            assert o.crs is None and (o.height, o.width) == (80, 90) and o.transform == TRANSFORM
            assert np.abs(o.read() - data).max() < 2e-5


# ------------------------------------------------------------------------------------------------ many scenes
def test_translate_many_sequential_names_and_per_scene_failure(tmp_path, identity_ckpt):
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    da = write_sar(a, 60, 70)
    write_sar(b, 60, 70, data=np.full((2, 60, 70), np.nan, np.float32))  # fails while working: all nodata
    out_dir = tmp_path / "out"
    r = runner.invoke(app, ["translate", str(a), str(b), "--checkpoint", str(identity_ckpt), "--out-dir",
                            str(out_dir)])
    assert r.exit_code == 1, r.output
    assert "FAILED" in r.output and "b.tif" in r.output
    assert files_in(out_dir) == {"a_translated.tif"}
    assert np.abs(read(out_dir / "a_translated.tif") - da).max() < 2e-5


def test_translate_many_bad_input_before_starting(tmp_path, identity_ckpt):
    a = tmp_path / "a.tif"
    write_sar(a, 60, 70)
    out_dir = tmp_path / "out"
    r = runner.invoke(app, ["translate", str(a), str(tmp_path / "missing.tif"), "--checkpoint", str(identity_ckpt),
                            "--out-dir", str(out_dir), "--quiet"])
    assert r.exit_code == 2
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.slow
def test_translate_many_dask_local_cluster_matches_local_run(tmp_path, identity_ckpt):
    scenes = []
    for i in range(2):
        p = tmp_path / f"s{i}.tif"
        write_sar(p, 120, 150, seed=i)
        scenes.append(p)
    opts = TranslateOptions(tile=64, overlap=16, device="cpu")
    local = translate_many(scenes, identity_ckpt, tmp_path / "local", opts)
    dask = translate_many(scenes, identity_ckpt, tmp_path / "dask", opts, scheduler="local")
    assert all(r.ok for r in local) and all(r.ok for r in dask), [r.error for r in dask]
    for r1, r2 in zip(local, dask):
        assert r2.out.name == r1.out.name
        np.testing.assert_array_equal(read(r1.out), read(r2.out))


# ------------------------------------------------------------------------------------------------ real data
def test_realdata_sen1floods11_chip(tmp_path, realdata, identity_ckpt):
    scene = realdata / "sen1floods11" / "S1Hand" / "Spain_7370579_S1Hand.tif"
    if not scene.exists():
        pytest.skip("Sen1Floods11 chip absent")
    ckpt = save_conv(tmp_path / "conv.safetensors", sar_normalization(), optical_normalization(), tile=256)
    for name, ck in (("id.tif", identity_ckpt), ("opt.tif", ckpt)):
        out = tmp_path / name
        translate_scene(scene, ck, out, TranslateOptions(overlap=64))
        with rasterio.open(scene) as s, rasterio.open(out) as o:
            assert o.crs == s.crs and o.crs.to_epsg() == 4326
            assert o.transform == s.transform and (o.width, o.height) == (512, 512)
            src = s.read()
            got = o.read()
        nodata = np.isnan(src).any(axis=0)
        if name == "id.tif":
            assert np.array_equal(np.isnan(got).any(axis=0), nodata)
            expect = np.clip(src, -25, 0)
            assert np.abs(got - expect)[:, ~nodata].max() < 2e-5
        else:
            assert np.array_equal((got == 0).all(axis=0), nodata)
        assert cog_validate(str(out))[0]


def test_realdata_sen12mscr_patches(tmp_path, realdata, identity_ckpt):
    folder = realdata / "sen12mscr_glfcr" / "s1"
    scenes = sorted(folder.glob("*.tif")) if folder.is_dir() else []
    if not scenes:
        pytest.skip("SEN12MS-CR patches absent")
    results = translate_many(scenes, identity_ckpt, tmp_path / "out", TranslateOptions(overlap=64))
    for r in results:
        assert r.ok, r.error
        with rasterio.open(r.scene) as s, rasterio.open(r.out) as o:
            assert o.crs == s.crs and o.crs.to_epsg() in (32650, 32631)
            assert o.transform == s.transform and (o.width, o.height) == (256, 256)
            assert o.descriptions == ("VV", "VH")  # names from the checkpoint; the input has none
            assert np.abs(o.read() - np.clip(s.read(), -25, 0)).max() < 2e-5


# ------------------------------------------------------------------------------------------------ mixed precision
class Bf16Unstable(nn.Module):
    """A generator whose bf16 autocast output diverges from fp32: a 1×1 conv with weights ≈ 256 minus, in fp32,
    256 × the input sum. In fp32 the difference is the small 0.1·w part; bf16 (8-bit mantissa) rounds the conv
    output (|·| ≈ 500) to steps of 2–4, so the difference is noise."""

    def __init__(self, in_channels: int = 2, out_channels: int = 2) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(256.0 + 0.1 * torch.rand(out_channels, in_channels, 1, 1, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = self.conv(x).float()
        return torch.tanh(big - 256.0 * x.float().sum(dim=1, keepdim=True))


if "test-translate-bf16-unstable" not in NETWORKS:
    register_network("test-translate-bf16-unstable")(lambda in_channels=2, out_channels=2:
                                                     Bf16Unstable(in_channels, out_channels))


def _loaded(module: nn.Module, out_channels: int = 2) -> LoadedNetwork:
    n = sar_normalization().to_dict()
    out = n if out_channels == 2 else optical_normalization().to_dict()
    return LoadedNetwork(module=module, kind="generator", arch="test", arch_kwargs={}, digest="0",
                         path=Path("test.safetensors"),
                         meta={"in_norm": n, "out_norm": out, "tile_size": 32, "model": "test"})


def _guarded(module: nn.Module) -> tuple[en.NetworkPredictor, RecordingReporter, np.ndarray]:
    rep = RecordingReporter()
    gen = en.NetworkPredictor(_loaded(module), torch.device("cpu"), torch.bfloat16, rep)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 2, 32, 32)).astype(np.float32)
    return gen, rep, x


def test_amp_guard_keeps_bf16_when_close_to_fp32():
    gen, rep, x = _guarded(FixedConv())
    first = gen(x)
    assert gen.amp is torch.bfloat16 and gen.guard_psnr >= en.AMP_MIN_PSNR_DB
    assert rep.warnings == []
    with torch.inference_mode():
        ref = FixedConv()(torch.from_numpy(x)).numpy()
    assert en.guard_psnr(first, ref) >= en.AMP_MIN_PSNR_DB
    gen(x)  # later batches are not checked again
    assert gen.amp is torch.bfloat16


def test_amp_guard_falls_back_to_fp32_when_bf16_diverges():
    gen, rep, x = _guarded(Bf16Unstable())
    first = gen(x)
    assert gen.amp is None and gen.guard_psnr < en.AMP_MIN_PSNR_DB
    assert len(rep.warnings) == 1 and "fp32" in rep.warnings[0] and "dB" in rep.warnings[0]
    with torch.inference_mode():
        ref = Bf16Unstable()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(first, ref, atol=1e-6)  # the first batch's prediction is the fp32 one
    np.testing.assert_allclose(gen(x), ref, atol=1e-6)


def _unstable_scene(tmp_path: Path) -> tuple[Path, Path]:
    """A small smooth SAR scene and a checkpoint of the bf16-unstable generator."""
    scene = tmp_path / "scene.tif"
    write_sar(scene, 70, 90, data=smooth_sar(70, 90))
    kw = {"in_channels": 2, "out_channels": 2}
    n = sar_normalization().to_dict()
    ckpt = save_network(tmp_path / "unstable.safetensors", Bf16Unstable(**kw), kind="generator",
                        arch="test-translate-bf16-unstable", arch_kwargs=kw,
                        meta={"model": "t", "direction": "sar2sar", "in_norm": n, "out_norm": n, "tile_size": 32,
                              "run": "t"})
    return scene, ckpt


def test_translate_with_bf16_falls_back_end_to_end(tmp_path):
    from sarkit.reporting import RecordingReporter

    scene, ckpt = _unstable_scene(tmp_path)
    rep = RecordingReporter()
    translate_scene(scene, ckpt, tmp_path / "bf16.tif", TranslateOptions(overlap=8, amp="bf16", device="cpu"), rep)
    translate_scene(scene, ckpt, tmp_path / "fp32.tif", TranslateOptions(overlap=8, amp="off", device="cpu"))
    assert any("fp32" in w for w in rep.warnings)
    np.testing.assert_array_equal(read(tmp_path / "bf16.tif"), read(tmp_path / "fp32.tif"))


def _count_fp32_forwards(monkeypatch) -> list[int]:
    calls = [0]
    real = en.NetworkPredictor._forward

    def counting(self, batch, amp, eager=False):
        calls[0] += amp is None
        return real(self, batch, amp, eager)

    monkeypatch.setattr(en.NetworkPredictor, "_forward", counting)
    return calls


def test_guard_verdict_is_kept_per_checkpoint_file_and_device(tmp_path, monkeypatch):
    """The fp32 check runs on the first scene of a checkpoint only; a rewritten checkpoint is checked again."""
    monkeypatch.setattr(en, "_GUARD_VERDICTS", {})
    fp32 = _count_fp32_forwards(monkeypatch)
    scene = tmp_path / "scene.tif"
    write_sar(scene, 70, 90, data=smooth_sar(70, 90))
    ckpt = save_conv(tmp_path / "conv.safetensors", sar_normalization(), sar_normalization(), tile=32)
    opts = TranslateOptions(overlap=8, amp="bf16", device="cpu", overwrite=True)
    translate_scene(scene, ckpt, tmp_path / "a.tif", opts)
    assert fp32[0] == 1 and len(en._GUARD_VERDICTS) == 1
    psnr = next(iter(en._GUARD_VERDICTS.values()))
    assert psnr >= en.AMP_MIN_PSNR_DB
    translate_scene(scene, ckpt, tmp_path / "b.tif", opts)
    assert fp32[0] == 1  # the same file on the same device: not checked again
    np.testing.assert_array_equal(read(tmp_path / "a.tif"), read(tmp_path / "b.tif"))
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, ckpt.stat().st_mtime_ns + 10**9))  # the file changed
    translate_scene(scene, ckpt, tmp_path / "a.tif", opts)
    assert fp32[0] == 2 and len(en._GUARD_VERDICTS) == 2
    # another device, precision, bound or compilation is another check; a file that is not there is never kept
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    keys = {en._guard_key(ckpt, cpu, bf16, 40.0, False), en._guard_key(ckpt, torch.device("cuda"), bf16, 40.0, False),
            en._guard_key(ckpt, cpu, torch.float16, 40.0, False), en._guard_key(ckpt, cpu, bf16, 30.0, False),
            en._guard_key(ckpt, cpu, bf16, 40.0, True)}
    assert len(keys) == 5
    assert en._guard_key(tmp_path / "gone.safetensors", cpu, bf16, 40.0, False) is None


def test_guard_fallback_is_kept_and_warned_on_every_scene(tmp_path, monkeypatch):
    from sarkit.reporting import RecordingReporter

    monkeypatch.setattr(en, "_GUARD_VERDICTS", {})
    fp32 = _count_fp32_forwards(monkeypatch)
    scene, ckpt = _unstable_scene(tmp_path)
    first, second = RecordingReporter(), RecordingReporter()
    opts = TranslateOptions(overlap=8, amp="bf16", device="cpu")
    translate_scene(scene, ckpt, tmp_path / "a.tif", opts, first)
    calls_after_first = fp32[0]
    translate_scene(scene, ckpt, tmp_path / "b.tif", opts, second)
    assert len(second.warnings) == 1 and "earlier scene" in second.warnings[0] and "fp32" in second.warnings[0]
    assert fp32[0] > calls_after_first  # the second scene runs in fp32 throughout, without a bf16 attempt
    np.testing.assert_array_equal(read(tmp_path / "a.tif"), read(tmp_path / "b.tif"))


def test_pix2pix_unet_bf16_is_within_40db_of_fp32():
    """A real (small) pix2pix U-Net at PyTorch's default initialisation: bf16 autocast output ≥ 40 dB PSNR."""
    from sarkit.models.blocks import build_unet

    torch.manual_seed(0)
    net = build_unet(2, 3, num_downs=6, ngf=16).eval()  # 64² tiles, the full pix2pix structure at width 16
    gen = en.NetworkPredictor(_loaded(net, out_channels=3), torch.device("cpu"), torch.bfloat16, tile=64)
    x = np.random.default_rng(1).uniform(-1, 1, (4, 2, 64, 64)).astype(np.float32)
    low = gen._forward(x, torch.bfloat16)
    ref = gen._forward(x, None)
    assert np.abs(ref).std() > 0.05  # a non-trivial output, so the PSNR is not high merely because it is ~0
    assert en.guard_psnr(low, ref) >= en.AMP_MIN_PSNR_DB


def test_amp_auto_on_cpu_follows_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(en, "cpu_supports_bf16", lambda: True)
    assert en.resolve_amp_auto("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(en, "cpu_supports_bf16", lambda: False)
    assert en.resolve_amp_auto("auto", cpu) is None
    assert en.resolve_amp_auto("off", cpu) is None
    assert en.resolve_amp_auto("bf16", cpu) is torch.bfloat16


# ------------------------------------------------------------------------------------------------ threads
@pytest.mark.parametrize("blend_thread", [False, True], ids=["read-write-threads", "blend-thread"])
def test_threaded_modes_write_the_same_pixels_as_the_serial_run(tmp_path, monkeypatch, blend_thread):
    scene = tmp_path / "scene.tif"
    write_sar(scene, 300, 340, data=smooth_sar(300, 340))
    ckpt = save_conv(tmp_path / "conv.safetensors", sar_normalization(), sar_normalization(), tile=64)
    serial = tmp_path / "serial.tif"
    translate_scene(scene, ckpt, serial, TranslateOptions(overlap=16, batch_size=3, prefetch=False))
    monkeypatch.setattr(tr, "_blend_in_thread", lambda device: blend_thread)
    out = tmp_path / "out.tif"
    translate_scene(scene, ckpt, out, TranslateOptions(overlap=16, batch_size=3, prefetch=True))
    np.testing.assert_array_equal(read(out), read(serial))


def test_io_threads_by_default_only_where_the_generator_leaves_the_cpu_free(tmp_path, monkeypatch):
    scene = tmp_path / "scene.tif"
    write_sar(scene, 100, 120)
    ckpt = save_conv(tmp_path / "conv.safetensors", sar_normalization(), sar_normalization(), tile=64)
    made: list[str] = []
    real_pool = tr.background_pool
    monkeypatch.setattr(tr, "background_pool", lambda name: made.append(name) or real_pool(name))
    translate_scene(scene, ckpt, tmp_path / "cpu.tif", TranslateOptions(overlap=16, device="cpu"))
    assert made == []  # the CPU generator's threads fill the cores: one thread does the I/O between batches
    assert not tr._io_in_threads(torch.device("cpu")) and tr._io_in_threads(torch.device("cuda"))
    monkeypatch.setattr(tr, "_io_in_threads", lambda device: True)  # what a CUDA device answers
    translate_scene(scene, ckpt, tmp_path / "gpu.tif", TranslateOptions(overlap=16, device="cpu"))
    assert made == ["sarkit-read", "sarkit-write"]
    made.clear()
    translate_scene(scene, ckpt, tmp_path / "off.tif", TranslateOptions(overlap=16, prefetch=False))
    assert made == []


def test_error_in_blend_thread_leaves_nothing(tmp_path, monkeypatch):
    scene = tmp_path / "scene.tif"
    write_sar(scene, 300, 340)
    ckpt = save_conv(tmp_path / "conv.safetensors", sar_normalization(), sar_normalization(), tile=64)
    monkeypatch.setattr(tr, "_blend_in_thread", lambda device: True)
    monkeypatch.setattr(tr, "_io_in_threads", lambda device: True)  # as on a GPU
    calls = {"n": 0}
    real_add = tr._StripBlender.add

    def failing_add(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk on fire")
        return real_add(self, *args)

    monkeypatch.setattr(tr._StripBlender, "add", failing_add)
    with pytest.raises(OSError, match="disk on fire"):
        translate_scene(scene, ckpt, tmp_path / "out.tif", TranslateOptions(overlap=16, batch_size=3))
    assert files_in(tmp_path) == {"scene.tif", "conv.safetensors"}


# ------------------------------------------------------------------------------------------------ torch.compile
@pytest.mark.slow
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                    reason="torch.compile's CPU backend (inductor) needs a C++ compiler")
def test_compiled_generator_matches_eager(tmp_path):
    scene = tmp_path / "scene.tif"
    write_sar(scene, 150, 170, data=smooth_sar(150, 170))
    ckpt = save_conv(tmp_path / "conv.safetensors", sar_normalization(), sar_normalization(), tile=64)
    translate_scene(scene, ckpt, tmp_path / "eager.tif", TranslateOptions(overlap=16, batch_size=3, amp="off"))
    compiled_calls = {"n": 0}
    real_run = en.NetworkPredictor._run

    def counting_run(self, xb, eager):
        if self.compiled is not None and not eager and xb.shape[0] >= 2:
            compiled_calls["n"] += 1
        return real_run(self, xb, eager)

    from sarkit.reporting import RecordingReporter

    rep = RecordingReporter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(en.NetworkPredictor, "_run", counting_run)
        translate_scene(scene, ckpt, tmp_path / "compiled.tif",
                        TranslateOptions(overlap=16, batch_size=3, amp="off", compile=True), rep)
    assert rep.warnings == []  # no fallback to eager
    assert compiled_calls["n"] > 0  # batches of 3 and of 2 (one compilation, dynamic batch)
    np.testing.assert_allclose(read(tmp_path / "compiled.tif"), read(tmp_path / "eager.tif"), atol=1e-4)


def test_failed_compilation_warns_and_runs_eagerly(tmp_path, monkeypatch):
    from sarkit.reporting import RecordingReporter

    def broken_compile(module, **kwargs):
        def run(x):
            raise RuntimeError("no C++ compiler found\nlong traceback")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    scene = tmp_path / "scene.tif"
    write_sar(scene, 150, 170, data=smooth_sar(150, 170))
    ckpt = save_conv(tmp_path / "conv.safetensors", sar_normalization(), sar_normalization(), tile=64)
    rep = RecordingReporter()
    translate_scene(scene, ckpt, tmp_path / "c.tif", TranslateOptions(overlap=16, batch_size=3, compile=True), rep)
    translate_scene(scene, ckpt, tmp_path / "e.tif", TranslateOptions(overlap=16, batch_size=3))
    assert len(rep.warnings) == 1 and "torch.compile failed (RuntimeError: no C++ compiler found)" in rep.warnings[0]
    np.testing.assert_array_equal(read(tmp_path / "c.tif"), read(tmp_path / "e.tif"))


# ------------------------------------------------------------------------------------------------ resolution
TEN_M = {"x": 10.0, "y": 10.0, "units": "metre", "x_m": 10.0, "y_m": 10.0}


def save_conv_at(path: Path, pixel: dict | None, tile: int = 64) -> Path:
    """A SAR→SAR fixed-conv generator whose metadata records the training pixel size ``pixel`` (None: none)."""
    sar = sar_normalization()
    kw = {"in_channels": 2, "out_channels": 2, "seed": 0}
    meta = {"model": "test", "direction": "opt2sar", "in_norm": sar.to_dict(), "out_norm": sar.to_dict(),
            "tile_size": tile, "run": "test"}
    if pixel is not None:
        meta["pixel_size"] = pixel
    return save_network(path, FixedConv(**kw), kind="generator", arch="test-translate-conv", arch_kwargs=kw,
                        meta=meta)


def write_sar_at(path: Path, data: np.ndarray, pixel: float) -> Path:
    """A 2-band dB scene of ``pixel``-metre pixels (EPSG:32631, NaN nodata)."""
    return write_sar_db(path, data, pixel=pixel)


def textured_sar(height: int, width: int) -> np.ndarray:
    """A dB pattern with detail at a few pixels (so that a 3×3 conv at 10 m differs from one at 20 m)."""
    r, c = np.mgrid[0:height, 0:width].astype(np.float32)
    vv = -12.0 + 7.0 * np.sin(r / 3.1) * np.cos(c / 2.3)
    vh = -18.0 + 5.0 * np.cos((r + 2 * c) / 4.1)
    return np.stack([vv, vh]).astype(np.float32)


def warped(src_path: Path, dest: Path, pixel: float, resampling) -> Path:
    """``src_path`` resampled (WarpedVRT, like the translate reader) onto the same footprint at ``pixel`` m."""
    from rasterio.vrt import WarpedVRT

    with rasterio.open(src_path) as src:
        f = src.res[0] / pixel
        w, h = round(src.width * f), round(src.height * f)
        t = src.transform * src.transform.scale(src.width / w, src.height / h)
        with WarpedVRT(src, crs=src.crs, transform=t, width=w, height=h, resampling=resampling,
                       src_nodata=src.nodata, nodata=src.nodata) as vrt:
            data = vrt.read()
            prof = dict(driver="GTiff", width=w, height=h, count=src.count, dtype=src.dtypes[0], crs=src.crs,
                        transform=t, nodata=src.nodata)
            with rasterio.open(dest, "w", **prof) as dst:
                dst.write(data)
                dst.descriptions = src.descriptions
    return dest


def test_20m_scene_with_10m_checkpoint_is_translated_at_10m_onto_its_own_grid(tmp_path):
    """The 20 m scene is upsampled to 10 m, translated there and the output averaged back onto the 20 m grid: the
    same as translating the scene upsampled to 10 m by hand and averaging that back, and unlike translating the
    20 m pixels as they are (--resolution ignore)."""
    from rasterio.enums import Resampling

    scene = write_sar_at(tmp_path / "s20.tif", textured_sar(96, 120), 20.0)
    ckpt = save_conv_at(tmp_path / "g.safetensors", TEN_M)
    opts = TranslateOptions(overlap=16, amp="off", device="cpu")
    rec = RecordingReporter()
    out = translate_scene(scene, ckpt, tmp_path / "out.tif", opts, rec).out
    warns = rec.warnings
    assert len(warns) == 1 and "20 m" in warns[0] and "10 m" in warns[0] and "resampled" in warns[0]
    with rasterio.open(scene) as s, rasterio.open(out) as o:
        assert (o.crs, o.transform, o.shape) == (s.crs, s.transform, s.shape)
        got = o.read()
        assert o.tags()["translated_pixel_size"] == "10 m"
    by_hand = translate_scene(warped(scene, tmp_path / "s10.tif", 10.0, Resampling.bilinear), ckpt,
                              tmp_path / "ref10.tif", opts).out
    ref = read(warped(by_hand, tmp_path / "ref20.tif", 20.0, Resampling.average))
    as_is = read(translate_scene(scene, ckpt, tmp_path / "asis.tif",
                                 TranslateOptions(overlap=16, amp="off", device="cpu", resolution="ignore")).out)
    assert np.isfinite(got).all()
    err, err_as_is = np.abs(got - ref).mean(), np.abs(as_is - ref).mean()
    assert err < 0.01 < err_as_is / 10, (err, err_as_is)  # mean dB: measured 0 and 0.16


def test_strict_refuses_another_resolution_exit_2_and_writes_nothing(tmp_path):
    scene = write_sar_at(tmp_path / "s20.tif", textured_sar(64, 64), 20.0)
    ckpt = save_conv_at(tmp_path / "g.safetensors", TEN_M)
    r = cli(str(scene), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.tif"), "--device", "cpu",
            "--resolution", "strict")
    assert r.exit_code == 2, r.output
    assert "20 m" in r.stderr and "10 m" in r.stderr and "--resolution" in r.stderr
    assert files_in(tmp_path) == {"s20.tif", "g.safetensors"}


@pytest.mark.parametrize("pixel,record", [(20.0, None), (10.4, TEN_M)], ids=["old-checkpoint", "within-5-percent"])
def test_no_resampling_for_old_checkpoints_or_close_resolutions(tmp_path, pixel, record):
    """A checkpoint without the record, or a scene within 5 % of the training pixel size: translated as it is,
    silently (the same pixels as --resolution ignore)."""
    scene = write_sar_at(tmp_path / "s.tif", textured_sar(64, 80), pixel)
    ckpt = save_conv_at(tmp_path / "g.safetensors", record)
    rec = RecordingReporter()
    opts = TranslateOptions(overlap=16, amp="off", device="cpu")
    got = read(translate_scene(scene, ckpt, tmp_path / "a.tif", opts, rec).out)
    assert not rec.warnings
    ref = read(translate_scene(scene, ckpt, tmp_path / "b.tif",
                               TranslateOptions(overlap=16, amp="off", device="cpu", resolution="ignore")).out)
    np.testing.assert_array_equal(got, ref)


def test_resampled_output_keeps_the_scenes_nodata(tmp_path):
    """Nodata stays exactly where the scene's is after the round trip through the 10 m grid."""
    data = textured_sar(64, 64)
    data[:, 10:30, 5:25] = np.nan
    scene = write_sar_at(tmp_path / "s20.tif", data, 20.0)
    out = translate_scene(scene, save_conv_at(tmp_path / "g.safetensors", TEN_M), tmp_path / "o.tif",
                          TranslateOptions(overlap=16, amp="off", device="cpu")).out
    got = read(out)
    np.testing.assert_array_equal(np.isnan(got).any(axis=0), np.isnan(data).any(axis=0))


def test_ungeoreferenced_scene_cannot_be_compared_and_is_translated_as_it_is_with_a_warning(tmp_path):
    scene = tmp_path / "nocrs.tif"
    write_sar(scene, 64, 64, crs=None)
    rec = RecordingReporter()
    translate_scene(scene, save_conv_at(tmp_path / "g.safetensors", TEN_M), tmp_path / "o.tif",
                    TranslateOptions(overlap=16, amp="off", device="cpu", allow_ungeoreferenced=True), rec)
    warns = rec.warnings
    assert len(warns) == 1 and "cannot be compared" in warns[0]


def test_translate_many_strict_refuses_before_starting(tmp_path):
    ok = write_sar_at(tmp_path / "a.tif", textured_sar(64, 64), 10.0)
    bad = write_sar_at(tmp_path / "b.tif", textured_sar(64, 64), 20.0)
    with pytest.raises(tr.InputError, match="b.tif has 20 m pixels"):
        translate_many([ok, bad], save_conv_at(tmp_path / "g.safetensors", TEN_M), tmp_path / "out",
                       TranslateOptions(amp="off", device="cpu", resolution="strict"))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------------------------------ tile and out
@pytest.mark.parametrize("name", ["o.png", "o.jpg", "o"])
def test_out_that_is_not_a_geotiff_name_is_refused_before_work(tmp_path, identity_ckpt, name):
    scene = tmp_path / "s.tif"
    write_sar(scene, 32, 32)
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(tmp_path / name))
    assert r.exit_code == 2 and ".tif" in r.stderr and name in r.stderr, r.output
    assert files_in(tmp_path) == {"s.tif", "ckpt"}


def test_tif_and_tiff_in_any_case_are_accepted(tmp_path, identity_ckpt):
    scene = tmp_path / "s.tif"
    write_sar(scene, 32, 32)
    for name in ("o.TIF", "o.tiff"):
        assert translate_scene(scene, identity_ckpt, tmp_path / name,
                               TranslateOptions(device="cpu", amp="off", overlap=8)).out.exists()


def test_tile_the_unet_cannot_run_on_is_refused_naming_valid_sizes(tmp_path):
    """--tile 100 on an 8-level U-Net: exit 2 naming multiples of 256, instead of a RuntimeError from inside torch."""
    from sarkit.models.blocks import build_unet

    kw = {"in_channels": 2, "out_channels": 3, "num_downs": 8, "ngf": 4}
    ckpt = save_network(tmp_path / "unet.safetensors", build_unet(**kw), kind="generator", arch="unet",
                        arch_kwargs=kw, meta={"model": "pix2pix", "direction": "sar2opt",
                                              "in_norm": sar_normalization().to_dict(),
                                              "out_norm": optical_normalization().to_dict(), "tile_size": 256})
    scene = tmp_path / "s.tif"
    write_sar(scene, 64, 64)
    r = cli(str(scene), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.tif"), "--tile", "100",
            "--overlap", "8", "--device", "cpu")
    assert r.exit_code == 2, r.output
    assert "--tile 100" in r.stderr and "256, 512, 768" in r.stderr
    assert files_in(tmp_path) == {"s.tif", "unet.safetensors"}


def test_huge_tile_is_refused_before_allocating(tmp_path, identity_ckpt, monkeypatch):
    scene = tmp_path / "s.tif"
    write_sar(scene, 32, 32)
    monkeypatch.setattr(en, "pad_batch", lambda *a: pytest.fail("padded a batch"))
    r = cli(str(scene), "--checkpoint", str(identity_ckpt), "--out", str(tmp_path / "o.tif"),
            "--tile", "100000", "--device", "cpu")
    assert r.exit_code == 2, r.output
    assert "--tile 100000" in r.stderr and "TiB" in r.stderr and "smaller --tile" in r.stderr
    assert files_in(tmp_path) == {"s.tif", "ckpt"}


def test_output_folder_is_created_only_when_writing(tmp_path, identity_ckpt):
    """A missing output folder is created for a run that writes, and never for a refused one."""
    scene = tmp_path / "s.tif"
    write_sar(scene, 32, 32)
    r = cli(str(scene), "--checkpoint", str(tmp_path / "nope.safetensors"), "--out",
            str(tmp_path / "a" / "b" / "o.tif"))  # refused after the output checks
    assert r.exit_code == 2 and not (tmp_path / "a").exists()
    out = translate_scene(scene, identity_ckpt, tmp_path / "a" / "b" / "o.tif",
                          TranslateOptions(device="cpu", amp="off", overlap=8)).out
    assert out.exists()


def test_resampled_translation_in_threads_writes_the_same_pixels(tmp_path):
    """The warped reader also works from the background read thread (as on a GPU)."""
    scene = write_sar_at(tmp_path / "s20.tif", textured_sar(80, 72), 20.0)
    ckpt = save_conv_at(tmp_path / "g.safetensors", TEN_M)
    a, b = (read(translate_scene(scene, ckpt, tmp_path / f"{p}.tif",
                                 TranslateOptions(overlap=16, amp="off", device="cpu", prefetch=p)).out)
            for p in (False, True))
    np.testing.assert_array_equal(a, b)
