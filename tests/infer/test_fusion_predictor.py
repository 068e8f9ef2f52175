"""FusionPredictor (sarkit.infer.fusion): the chain regression → generative branch → head through the engine,
its contract, the SHA-256 check of the upstream runs, and translate / eval --checkpoint end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
import torch
from rio_cogeo.cogeo import cog_validate

from models.fusionruns import make_fusion_runs, runner
from rasters import write_sar_db
from sarkit.cli import app
from sarkit.errors import CheckpointError
from sarkit.infer.engine import NetworkPredictor, load_predictor
from sarkit.infer.fusion import FusionPredictor
from sarkit.models.checkpoint import load_network, save_network

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_fusion_runs(tmp_path_factory.mktemp("fusionpred"))


def test_load_predictor_gives_the_chain_and_it_equals_the_parts_by_hand(runs) -> None:
    pred = load_predictor(runs.fusion, "cpu")
    assert isinstance(pred, FusionPredictor)
    r, g = load_predictor(runs.regression, "cpu"), load_predictor(runs.pix2pix, "cpu")
    assert isinstance(r, NetworkPredictor) and isinstance(g, NetworkPredictor)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 2, 32, 32)).astype(np.float32)
    head = load_network(runs.fusion).module
    with torch.no_grad():
        want = head(torch.from_numpy(r(x)), torch.from_numpy(g(x))).numpy()
    np.testing.assert_allclose(pred(x), want, atol=1e-5)
    c = pred.contract
    assert c.in_bands == ("VV", "VH") and c.out_bands == r.contract.out_bands and c.scale == 1
    assert c.steps == 3 and c.tile % 32 == 0 and c.tile_multiple % g.contract.tile_multiple == 0
    tags = pred.provenance()
    assert tags["model"] == "fusion" and tags["x_r_model"] == "regression" and tags["x_g_model"] == "pix2pix"


def test_windows_smaller_than_the_tile_are_padded_and_cropped(runs) -> None:
    pred = load_predictor(runs.fusion, "cpu")
    x = np.random.default_rng(1).uniform(-1, 1, (1, 2, 20, 24)).astype(np.float32)
    assert pred(x).shape == (1, 3, 20, 24)


def test_an_upstream_run_whose_file_changed_is_refused(runs, tmp_path) -> None:
    fus = tmp_path / "fus"
    shutil.copytree(runs.fusion, fus)
    reg = tmp_path / "reg.safetensors"
    shutil.copy(runs.regression / "checkpoints" / "generator.safetensors", reg)
    net = load_network(fus)
    meta = dict(net.meta)
    meta["fusion"] = {**meta["fusion"], "x_r": {**meta["fusion"]["x_r"], "path": str(reg)}}
    save_network(fus / "checkpoints" / "generator.safetensors", net.module, "generator", net.arch, net.arch_kwargs,
                 meta)
    assert isinstance(load_predictor(fus, "cpu"), FusionPredictor)  # the copy: same bytes, accepted
    other = load_network(reg)
    with torch.no_grad():
        next(other.module.parameters()).add_(0.1)
    save_network(reg, other.module, "generator", other.arch, other.arch_kwargs, other.meta)
    with pytest.raises(CheckpointError, match="changed") as exc:
        load_predictor(fus, "cpu")
    assert "\n" not in str(exc.value)
    r = runner.invoke(app, ["translate", str(write_sar_db(tmp_path / "s1.tif", np.full((2, 40, 40), -10.0,
                                                                                     np.float32))),
                            "--checkpoint", str(fus), "--out", str(tmp_path / "o.tif"), "--device", "cpu"])
    assert r.exit_code == 2 and "changed" in r.output and not (tmp_path / "o.tif").exists()


def test_translate_and_eval_run_the_chain_end_to_end(runs, tmp_path) -> None:
    data = np.random.default_rng(2).uniform(-24, -1, (2, 72, 56)).astype(np.float32)
    scene = write_sar_db(tmp_path / "s1.tif", data)
    out = tmp_path / "o.tif"
    r = runner.invoke(app, ["translate", str(scene), "--checkpoint", str(runs.fusion), "--out", str(out), "--device",
                            "cpu", "--amp", "off", "--overlap", "16", "--quiet"])
    assert r.exit_code == 0, r.output
    with rasterio.open(out) as src:
        tags, y = src.tags(), src.read()
        assert src.count == 3
    assert cog_validate(str(out))[0]
    assert tags["model"] == "fusion" and y.shape == (3, 72, 56) and np.isfinite(y).all()
    rep = tmp_path / "rep"
    r = runner.invoke(app, ["eval", "--checkpoint", str(runs.fusion), "--data", str(runs.tiles), "--split", "val",
                            "--metrics", "psnr,ssim,mae", "--device", "cpu", "--report", str(rep), "--quiet"])
    assert r.exit_code == 0, r.output
    summary = json.loads((rep / "report.json").read_text())["summary"]
    assert np.isfinite(summary["psnr"]["mean"])


def test_a_con_diffusion_x_g_samples_through_its_predictor(runs, tmp_path) -> None:
    from models.fusionruns import train
    from sarkit.infer.diffusion import DiffusionPredictor

    diff, fus = tmp_path / "diff", tmp_path / "fus"
    train("--model", "con-diffusion", "--data", str(runs.tiles), "--out", str(diff), "--steps", "2", "--val-every",
          "0", "--model-opt", "size=tiny", "--model-opt", "channels=8", "--model-opt", "heads=2", "--model-opt",
          "timesteps=40", "--model-opt", "sample_steps=3", "--model-opt", "val_steps=2")
    train("--model", "fusion", "--data", str(runs.tiles), "--out", str(fus), "--steps", "1", "--val-every", "0",
          "--x-r-from", str(runs.regression), "--x-g-from", str(diff), "--model-opt", "lambda_per=0",
          "--model-opt", "lambda_fc=0", "--model-opt", "width=8", "--model-opt", "n_blocks=1",
          "--model-opt", "g_steps=2")
    pred = load_predictor(fus, "cpu")
    assert isinstance(pred.branches.g, DiffusionPredictor) and pred.branches.g.plan.steps == 2
    assert pred.steps == 1 + 2 + 1
    x = np.random.default_rng(3).uniform(-1, 1, (2, 2, 32, 32)).astype(np.float32)
    a, b = pred(x, seeds=[5, 6]), pred(x, seeds=[5, 6])
    np.testing.assert_array_equal(a, b)  # the tile seeds key the sampler's noise
    assert not np.array_equal(a, pred(x, seeds=[7, 8]))


def test_a_gan_prior_run_as_x_g_is_applied_to_x_r(runs, tmp_path) -> None:
    """The whole seed-003 chain: regression → gan-prior (E∘G inverting x_R) → fusion, trained through the CLI; the
    predictor applies the gan-prior run to x_R (its input is the regression's output), not to the SAR."""
    from models.fusionruns import train, weight_args

    gp, fus = tmp_path / "gp", tmp_path / "fus"
    train("--model", "gan-prior", "--data", str(runs.tiles), "--out", str(gp), "--steps", "2", "--val-every", "0",
          "--x-r-from", str(runs.regression), "--model-opt", "size=tiny", "--model-opt", "prior_fraction=0.5",
          "--lpips-weights", str(runs.heads), "--lpips-backbone", str(runs.alexnet))
    train("--model", "fusion", "--data", str(runs.tiles), "--out", str(fus), "--steps", "2", "--val-every", "0",
          "--lr", "1e-3", "--x-r-from", str(runs.regression), "--x-g-from", str(gp), *weight_args(runs),
          "--model-opt", "width=8", "--model-opt", "n_blocks=2")
    pred = load_predictor(fus, "cpu")
    assert isinstance(pred, FusionPredictor)
    r, g = load_predictor(runs.regression, "cpu"), load_predictor(gp, "cpu")
    x = np.random.default_rng(3).uniform(-1, 1, (1, 2, 32, 32)).astype(np.float32)
    head = load_network(fus).module
    x_r = r(x)
    with torch.no_grad():
        want = head(torch.from_numpy(x_r), torch.from_numpy(g(x_r))).numpy()
    np.testing.assert_allclose(pred(x), want, atol=1e-5)
    assert pred.provenance()["x_g_model"] == "gan-prior"
    data = np.random.default_rng(4).uniform(-24, -1, (2, 48, 48)).astype(np.float32)
    scene, out = write_sar_db(tmp_path / "s1.tif", data), tmp_path / "o.tif"
    res = runner.invoke(app, ["translate", str(scene), "--checkpoint", str(fus), "--out", str(out), "--device", "cpu",
                              "--overlap", "8"])
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as ds:
        assert ds.count == 3 and ds.width == 48
