"""The baselines a translator run records (sarkit/training/baselines.py) and eval --checkpoint reads back."""

from __future__ import annotations

import numpy as np
import pytest

from sarkit.data.dataset import TileDataset
from sarkit.eval.baselines import FROM_TRAINING
from sarkit.eval.options import EvalOptions
from sarkit.eval.runner import run_eval
from sarkit.models.checkpoint import load_network
from sarkit.training import train
from sarkit.training.baselines import fit_training_baselines
from tilesets import make_tiles, opts


def test_the_exported_generator_records_the_training_tiles_baselines_and_eval_uses_them(tmp_path):
    tiles = make_tiles(tmp_path / "tiles", n_train=4, n_val=2, size=32)
    train(opts(tiles, tmp_path / "run", steps=2))
    meta = load_network(tmp_path / "run/checkpoints/generator.safetensors").meta
    rec = meta["baselines"]
    assert rec["source"] == FROM_TRAINING and rec["bands"] == ["B4", "B3", "B2"] and rec["in_bands"] == ["VV", "VH"]
    # every valid train pixel fits in the sample here: the constant is exactly the targets' mean in [0, 1]
    ds = TileDataset(tiles, split="train", mode="paired")
    y = np.concatenate([((ds[i]["optical"].numpy() + 1) / 2).reshape(3, -1) for i in range(len(ds))], 1)
    assert rec["pixels"] == y.shape[1] == 4 * 32 * 32
    assert np.allclose(rec["constant"], y.mean(1), atol=1e-6)
    # the tiles' reflectance is an affine function of the SAR dB: the recorded linear map reproduces it
    rep = run_eval(EvalOptions(), checkpoint=tmp_path / "run", data=tiles, split="val").report
    lin, const = rep["baselines"]["linear"], rep["baselines"]["constant"]
    assert lin["source"] == const["source"] == FROM_TRAINING
    assert lin["summary"]["psnr"]["value"] > 40 > const["summary"]["psnr"]["value"]
    assert rep["summary"]["gain_psnr"]["over"] == "linear"
    assert rep["summary"]["gain_psnr"]["value"] == pytest.approx(
        rep["summary"]["psnr"]["value"] - lin["summary"]["psnr"]["value"])


def test_an_older_checkpoint_without_baselines_gets_them_from_the_target(tmp_path):
    from sarkit.eval.baselines import FROM_TARGET
    from sarkit.models.checkpoint import save_network

    tiles = make_tiles(tmp_path / "tiles", n_train=2, n_val=2, size=32)
    train(opts(tiles, tmp_path / "run", steps=1))
    path = tmp_path / "run/checkpoints/generator.safetensors"
    net = load_network(path)
    meta = {k: v for k, v in net.meta.items() if k != "baselines"}
    save_network(path, net.module, net.kind, net.arch, net.arch_kwargs, meta)
    rep = run_eval(EvalOptions(), checkpoint=tmp_path / "run", data=tiles, split="val").report
    assert rep["baselines"]["constant"]["source"] == FROM_TARGET
    assert "summary" in rep["baselines"]["linear"]  # the split's tiles carry their input


def test_the_sample_is_bounded_and_seeded(tmp_path):
    tiles = make_tiles(tmp_path / "tiles", n_train=4, n_val=0, size=32)
    o = opts(tiles, tmp_path / "run")
    from sarkit.training.data import open_data
    from sarkit.models import get_model

    io = open_data(o, get_model("pix2pix")).io
    a = fit_training_baselines(o, io, max_pixels=1000, max_tiles=2)
    b = fit_training_baselines(o, io, max_pixels=1000, max_tiles=2)
    assert a == b and a["pixels"] == 1000
