"""Training state (sarkit.training.state): exact resume, RNG states, checks of the state a resume reads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sarkit.errors import CheckpointError
from sarkit.training import train
from sarkit.training.state import check_identity, rng_state, set_rng_state
from tilesets import assert_same_weights, base_args, cli, nets_of, opts, snapshot


def test_resume_equals_straight_run(tiles: Path, tmp_path: Path) -> None:
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    train(opts(tiles, straight, steps=10, save_every=5))
    first = train(opts(tiles, parts, steps=10, stop_at=5))
    assert first.steps == 5
    second = train(opts(tiles, parts, steps=10, resume=True))
    assert second.start_step == 5 and second.steps == 10
    assert_same_weights(nets_of(straight), nets_of(parts))
    a = torch.load(straight / "checkpoints" / "state-latest.pt", weights_only=True)["optimizers"]["G"]["state"]
    b = torch.load(parts / "checkpoints" / "state-latest.pt", weights_only=True)["optimizers"]["G"]["state"]
    assert all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)
    steps = [json.loads(x)["step"] for x in (parts / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))



def test_resume_with_other_bands_or_corrupt_state(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli(*base_args(tiles, out)).exit_code == 0
    before = snapshot(out)
    r = cli(*base_args(tiles, out, "--resume", "--sar-bands", "VV", "--steps", "4"))
    assert r.exit_code == 2 and "channels differ" in r.output
    assert snapshot(out) == before
    state = out / "checkpoints" / "state-latest.pt"
    state.write_bytes(state.read_bytes()[:1000])
    before = snapshot(out)
    r = cli(*base_args(tiles, out, "--resume", "--steps", "4"))
    assert r.exit_code == 2 and "corrupt checkpoint" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert snapshot(out) == before




def test_rng_state_round_trips_python_numpy_and_torch() -> None:
    saved = rng_state(torch.device("cpu"))
    before = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    set_rng_state(saved, torch.device("cpu"))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == before


def test_check_identity_refuses_another_model_bands_or_tile_size(tmp_path: Path) -> None:
    now = {"model": "pix2pix", "direction": "sar2opt", "in_bands": ["VV", "VH"], "out_bands": ["B4", "B3", "B2"],
           "in_channels": 2, "out_channels": 3, "tile_size": 32, "num_classes": None}
    check_identity(dict(now), now, tmp_path)
    with pytest.raises(CheckpointError, match="cut checkpoint"):
        check_identity({**now, "model": "cut"}, now, tmp_path)
    with pytest.raises(CheckpointError, match="channels differ"):
        check_identity({**now, "in_bands": ["VV"], "in_channels": 1}, now, tmp_path)
    with pytest.raises(CheckpointError, match="tile size"):
        check_identity({**now, "tile_size": 64}, now, tmp_path)


def test_state_records_schedule_data_and_identity(tiles: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(opts(tiles, run, steps=3))
    state = torch.load(run / "checkpoints" / "state-latest.pt", weights_only=True)
    assert state["format"] == 1 and state["step"] == 3 and state["epoch"] == 1
    assert state["schedule"] == {"base_lr": 2e-4, "total": 3, "decay_start": 1}
    assert state["data"] == {"seed": 0, "steps_per_epoch": 2, "batch": 2, "world": 1, "n": 4}
    assert state["identity"]["model"] == "pix2pix" and state["identity"]["in_bands"] == ["VV", "VH"]
    assert json.loads((run / "config.json").read_text())["total_steps"] == 3
