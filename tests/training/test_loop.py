"""The step loop and train(): a complete run directory, seeded determinism, every model kind, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sarkit.errors import InputError
from sarkit.models.checkpoint import load_network
from sarkit.training import train
from sarkit.training.loop import lr_factor
from tilesets import assert_same_weights, base_args, cli, make_tiles, nets_of, opts


def test_run_directory_is_complete(tiles: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = train(opts(tiles, run, val_every=2, log_every=2))
    assert res.steps == 4 and res.start_step == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "pix2pix" and cfg["model_options"]["ngf"] == 8 and cfg["train"]["lr"] == 2e-4
    assert cfg["normalization"]["output"]["bands"] == ["B4", "B3", "B2"]
    assert cfg["normalization"]["input"]["bands"] == ["VV", "VH"] and cfg["sarkit_version"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["kind"] == "train"]
    val_lines = [x for x in lines if x["kind"] == "val"]
    assert [x["step"] for x in train_lines] == [2, 4] and {"G_L1", "D_real", "lr"} <= set(train_lines[0])
    assert [x["step"] for x in val_lines] == [2, 4]
    assert all(0 <= x["ssim"] <= 1 and x["psnr"] > 0 for x in val_lines)
    assert (run / "samples" / "step-000002.png").is_file() and (run / "samples" / "step-000004.png").is_file()
    state = torch.load(run / "checkpoints" / "state-latest.pt", weights_only=True)
    assert state["step"] == 4 and set(state["optimizers"]) == {"G", "D"} and len(state["ranks"]) == 1
    gen = load_network(run, "generator")
    assert gen.arch == "unet" and gen.meta["direction"] == "sar2opt" and gen.meta["tile_size"] == 32
    assert gen.meta["in_norm"]["bands"] == ["VV", "VH"] and gen.meta["out_norm"]["bands"] == ["B4", "B3", "B2"]
    x = torch.rand(1, 2, 32, 32) * 2 - 1
    with torch.no_grad():  # the trained copy runs channels-last: same maths, other summation order
        assert torch.allclose(gen.module(x), res.trained_model.predict(x), atol=1e-5)



def test_seeded_runs_are_identical_and_seed_matters(tiles: Path, tmp_path: Path) -> None:
    train(opts(tiles, tmp_path / "a", seed=3))
    train(opts(tiles, tmp_path / "b", seed=3))
    train(opts(tiles, tmp_path / "c", seed=4))
    assert_same_weights(nets_of(tmp_path / "a"), nets_of(tmp_path / "b"))
    a, c = nets_of(tmp_path / "a"), nets_of(tmp_path / "c")
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name, options", [
    ("cyclegan", {"ngf": "8", "ndf": "8", "n_blocks": "1", "pool_size": "2"}),
    ("cut", {"ngf": "8", "ndf": "8", "n_blocks": "1", "num_patches": "16"}),
])
def test_unpaired_models_train_generically(tiles: Path, tmp_path: Path, name: str, options: dict) -> None:
    run = tmp_path / name
    res = train(opts(tiles, run, model=name, steps=2, val_every=2, model_options=options, direction="opt2sar"))
    assert res.steps == 2 and all(np.isfinite(v) for v in res.losses.values())
    gen = load_network(run, "generator")
    assert gen.meta["direction"] == "opt2sar" and gen.meta["in_norm"]["modality"] == "optical"
    assert any(json.loads(x).get("kind") == "val" for x in (run / "metrics.jsonl").read_text().splitlines())


def test_segmenter_trains_on_one_modality(tmp_path: Path) -> None:
    root = make_tiles(tmp_path / "lt", labels=True)
    run = tmp_path / "seg"
    with pytest.raises(InputError, match="--modality"):
        train(opts(root, run, model="segmenter", model_options={"backbone": "mobilenet_v3_large"}))
    res = train(opts(root, run, model="segmenter", modality="sar", steps=2, val_every=2,
                     model_options={"backbone": "mobilenet_v3_large"}))
    assert res.validation is not None and 0 <= res.validation["pa"] <= 1
    seg = load_network(run, "segmenter")
    assert seg.meta["modality"] == "sar" and seg.meta["classes"] == ["low", "high"]


def test_worker_processes_give_the_same_weights(tiles: Path, tmp_path: Path) -> None:
    train(opts(tiles, tmp_path / "w0", steps=3, workers=0, augment=True))
    train(opts(tiles, tmp_path / "w1", steps=3, workers=1, augment=True))
    assert_same_weights(nets_of(tmp_path / "w0"), nets_of(tmp_path / "w1"))



def test_lr_is_constant_then_decays_linearly_to_zero() -> None:
    assert [lr_factor(s, 10) for s in (0, 4)] == [1.0, 1.0]
    assert [lr_factor(s, 10) for s in (5, 6, 9, 10)] == [1.0, 0.8, 0.2, 0.0]
    assert lr_factor(0, 1) == 1.0


def test_cli_bad_inputs_exit_2_and_write_nothing(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli("--model", "nope", "--data", str(tiles), "--out", str(out))
    assert r.exit_code == 2 and "pix2pix" in r.output and "cyclegan" in r.output
    r = cli(*base_args(tiles, out, "--epochs", "1"))
    assert r.exit_code == 2 and "not both" in r.output
    r = cli(*base_args(tmp_path / "missing", out))
    assert r.exit_code == 2
    r = cli(*base_args(tiles, out, "--model-opt", "bogus=1"))
    assert r.exit_code == 2 and "bogus" in r.output
    r = cli(*base_args(tiles, out, "--resume"))
    assert r.exit_code == 2 and "nothing to resume" in r.output
    if not torch.cuda.is_available():
        r = cli(*base_args(tiles, out, device="cuda"))
        assert r.exit_code == 2 and "CUDA" in r.output
    assert not out.exists()


def test_cli_empty_train_split(tmp_path: Path) -> None:
    root = make_tiles(tmp_path / "t", n_train=0, n_val=2)
    r = cli(*base_args(root, tmp_path / "run"))
    assert r.exit_code == 2 and "train split" in r.output and not (tmp_path / "run").exists()




def test_run_object_schedules_validation_and_saves() -> None:
    from types import SimpleNamespace

    from sarkit.training.loop import TrainingRun

    r = SimpleNamespace(opts=SimpleNamespace(val_every=3, save_every=0), data=SimpleNamespace(val=object()), total=7)
    assert [s for s in range(1, 8) if TrainingRun.validates_at(r, s)] == [3, 6, 7]
    assert [s for s in range(1, 8) if TrainingRun.saves_at(r, s, stopping=s == 2)] == [2, 7]
    r.data.val = None
    assert not any(TrainingRun.validates_at(r, s) for s in range(1, 8))
