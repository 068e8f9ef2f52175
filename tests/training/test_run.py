"""The run directory (sarkit.training.run): config.json, refusing or replacing a run, run_finished, metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sarkit.errors import CheckpointError, OutputExistsError
from sarkit.training import run_finished, train
from sarkit.training.run import MetricsLog, RunPlan, check_run_dir, config_diff, read_config
from tilesets import base_args, cli, opts, snapshot


def test_cli_trains_and_refuses_to_rerun(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli(*base_args(tiles, out))
    assert r.exit_code == 0, r.output
    before = snapshot(out)
    same = cli(*base_args(tiles, out))
    assert same.exit_code == 2 and "--resume" in same.output and "--overwrite" in same.output
    other = cli(*base_args(tiles, out, "--lr", "1e-4"))
    assert other.exit_code == 2 and "different config" in other.output
    assert snapshot(out) == before
    again = cli(*base_args(tiles, out, "--overwrite"))
    assert again.exit_code == 0, again.output
    other_dir = tmp_path / "not-a-run"
    other_dir.mkdir()
    (other_dir / "keep.txt").write_text("precious")
    refused = cli(*base_args(tiles, other_dir, "--overwrite"))
    assert refused.exit_code == 2 and (other_dir / "keep.txt").read_text() == "precious"




def test_run_finished_only_at_the_last_step(tiles: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert not run_finished(run)
    train(opts(tiles, run, steps=4, stop_at=2))
    assert (run / "checkpoints" / "generator.safetensors").is_file() and not run_finished(run)
    train(opts(tiles, run, steps=4, resume=True))
    assert run_finished(run) and read_config(run)["total_steps"] == 4


def test_config_diff_names_train_options_and_top_level_keys() -> None:
    old = {"model": "pix2pix", "device": "cpu", "train": {"lr": 1e-4, "steps": 4, "seed": 0}}
    new = {"model": "pix2pix", "device": "cuda:0", "train": {"lr": 2e-4, "steps": 8, "seed": 0}}
    assert config_diff(old, new) == ["lr", "steps"]
    assert config_diff(old, new, frozenset({"steps"})) == ["lr"]
    assert config_diff(old, {**new, "model": "cut"}, frozenset({"steps", "lr"})) == ["model"]


def test_check_run_dir_refuses_a_file_and_resume_with_overwrite(tmp_path: Path, tiles: Path) -> None:
    from sarkit.errors import InputError

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        check_run_dir(opts(tiles, f), {})
    with pytest.raises(InputError, match="exclude each other"):
        check_run_dir(opts(tiles, tmp_path / "r", resume=True, overwrite=True), {})
    with pytest.raises(CheckpointError, match="nothing to resume"):
        check_run_dir(opts(tiles, tmp_path / "r", resume=True), {})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("a")
    with pytest.raises(OutputExistsError, match="other files"):
        check_run_dir(opts(tiles, tmp_path / "other"), {})
    assert check_run_dir(opts(tiles, tmp_path / "new"), {}) == RunPlan()


def test_metrics_log_truncates_after_the_resume_step(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    for s in (1, 2, 3):
        log.write({"kind": "train", "step": s})
    with open(log.path, "a") as f:
        f.write("{half a line\n")
    log.truncate_after(2)
    assert [json.loads(x)["step"] for x in log.path.read_text().splitlines()] == [1, 2]
    off = MetricsLog(tmp_path / "off.jsonl", enabled=False)
    off.write({"step": 1})
    assert not off.path.exists()
