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


def _killed_run(run: Path) -> None:
    """What a run killed (SIGKILL) before its first checkpoint leaves: config.json, empty folders, a few metrics
    lines, a half-written temporary and the lock of its dead process."""
    import socket
    import subprocess

    from sarkit.training.run import prepare_run_dir

    prepare_run_dir(run, {"sarkit_version": "test", "model": "pix2pix", "train": {"lr": 0.1}}, replace=False)
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "G_GAN": 9.0}\n')
    (run / "checkpoints" / ".state-latest.pt.0badc0de.tmp.pt").write_bytes(b"half")
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run.parent / f"{run.name}.lock").write_text(f"{socket.gethostname()} {dead.pid}")


@pytest.mark.parametrize("flag", [[], ["--resume"]])
def test_rerun_after_a_kill_before_the_first_checkpoint_starts_again(tiles: Path, tmp_path: Path,
                                                                      flag: list[str]) -> None:
    run = tmp_path / "run"
    _killed_run(run)
    r = cli(*base_args(tiles, run, *flag, "--log-format", "json"))
    assert r.exit_code == 0, r.output
    events = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    assert any("holds no checkpoint yet" in e.get("message", "") for e in events), events
    assert (run / "checkpoints" / "state-latest.pt").is_file() and not (tmp_path / "run.lock").exists()
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [2]  # old gone
    assert read_config(run)["train"]["lr"] == 2e-4 and list((run / "checkpoints").glob(".*")) == []


def test_a_run_with_a_checkpoint_or_a_live_lock_is_not_restarted(tiles: Path, tmp_path: Path) -> None:
    import os
    import socket

    run = tmp_path / "run"
    _killed_run(run)
    (run / "checkpoints" / "generator.safetensors").write_bytes(b"an export is a checkpoint")
    r = cli(*base_args(tiles, run))
    assert r.exit_code == 2 and "different config" in r.output
    (run / "checkpoints" / "generator.safetensors").unlink()
    (tmp_path / "run.lock").write_text(f"{socket.gethostname()} {os.getpid()}")  # a live holder
    r = cli(*base_args(tiles, run))
    assert r.exit_code == 1 and "being written by another sarkit run" in r.output
    assert (run / "metrics.jsonl").read_text().startswith('{"kind": "train", "step": 1, "G_GAN": 9.0}')


def test_a_failure_before_the_first_checkpoint_leaves_an_existing_folder_empty(tiles: Path, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from sarkit.errors import WorkError
    from sarkit.training import loop

    def fail(r, start):
        raise WorkError("a loss became NaN/inf at step 1")

    monkeypatch.setattr(loop, "_loop", fail)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new"):
        r = cli(*base_args(tiles, out))
        assert r.exit_code == 1 and "NaN" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize("code", ["EACCES", "EROFS"])
def test_out_that_cannot_be_written_exits_2(tiles: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            code: str) -> None:
    import errno
    import os

    from sarkit.training import loop

    def no_lock(path):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(path) + ".lock")

    monkeypatch.setattr(loop, "output_lock", no_lock)
    r = cli(*base_args(tiles, tmp_path / "ro" / "run"))
    assert r.exit_code == 2, r.output
    assert r.output.startswith(f"error: cannot write the run directory {tmp_path / 'ro' / 'run'}: ")
    assert "choose another --out" in r.output and len(r.output.splitlines()) == 1


def test_out_in_a_read_only_folder_exits_2(tiles: Path, tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = cli(*base_args(tiles, ro / "run"))
        assert r.exit_code == 2 and "cannot write the run directory" in r.output and "Permission denied" in r.output
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)
