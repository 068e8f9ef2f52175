"""Tests of the command line as a whole (sarkit/cli.py): help, version, exit codes, --config, --log-format json,
--skip-existing and locks. The commands' own behaviour is tested beside their modules."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from sarkit import __version__
from sarkit.cli import app
from sarkit.data.synth import SynthOptions, synth_scene

runner = CliRunner()
COMMANDS = ("synth", "tile", "train", "translate", "stitch", "eval", "demo", "report", "benchmark")
WRITERS = ("synth", "tile", "train", "translate", "stitch", "eval", "demo", "report", "benchmark")


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_exactly_the_working_commands_and_version():
    assert set(get_command(app).commands) == set(COMMANDS)
    res = invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"sarkit {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_ends_with_an_example(command):
    res = invoke(command, "--help")
    assert res.exit_code == 0
    doc = get_command(app).commands[command].help.strip()
    assert doc.splitlines()[-1].startswith(f"Example: sarkit {command} ")


@pytest.mark.parametrize("command", WRITERS)
def test_every_writing_command_has_overwrite_and_skip_existing(command):
    names = {p.name for p in get_command(app).commands[command].params}
    assert {"overwrite", "skip_existing", "quiet", "log_format"} <= names


def test_unknown_option_is_usage_error_exit_2():
    assert invoke("synth", "x", "--no-such-option").exit_code == 2


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return synth_scene(tmp_path_factory.mktemp("cli") / "scene", SynthOptions(size=256, seed=5)).out_dir


def test_skip_existing_leaves_a_finished_output_alone(tmp_path, scene):
    tiles = tmp_path / "tiles"
    args = ["tile", str(scene / "s1.tif"), "--optical", str(scene / "s2.tif"), "--out", str(tiles), "--size", "64"]
    assert invoke(*args, "--quiet").exit_code == 0
    manifest = (tiles / "manifest.csv").stat()
    again = invoke(*args)
    assert again.exit_code == 2 and "--overwrite" in again.output  # not silently redone
    skipped = invoke(*args, "--skip-existing")
    assert skipped.exit_code == 0 and "skipped" in skipped.output
    assert (tiles / "manifest.csv").stat().st_mtime_ns == manifest.st_mtime_ns


def test_skip_existing_still_runs_when_the_output_is_missing(tmp_path, scene):
    out = tmp_path / "synth"
    res = invoke("synth", str(out), "--size", "64", "--skip-existing", "--quiet")
    assert res.exit_code == 0 and {p.name for p in out.iterdir()} == {"s1.tif", "s2.tif", "labels.tif"}


def test_skip_existing_in_json_log(tmp_path, scene):
    stitched = tmp_path / "mosaic.tif"
    stitched.write_bytes(b"finished earlier")
    res = invoke("stitch", str(scene / "s1.tif"), "--out", str(stitched), "--skip-existing", "--log-format", "json")
    assert res.exit_code == 0
    events = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert events and events[-1]["event"] == "info" and events[-1]["skipped"] == str(stitched)
    assert stitched.read_bytes() == b"finished earlier"


def test_json_log_is_one_object_per_line(tmp_path, scene):
    res = invoke("tile", str(scene / "s1.tif"), "--out", str(tmp_path / "t"), "--size", "64", "--log-format", "json")
    assert res.exit_code == 0
    events = [json.loads(line) for line in res.output.splitlines()]  # every line parses: nothing else printed
    kinds = {e["event"] for e in events}
    assert {"start", "end", "info"} <= kinds and all("time" in e for e in events)


def test_config_file_gives_defaults_and_the_command_line_wins(tmp_path, scene):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tile]\nsize = 128\nmax-nodata = 1.0\n')
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke("--config", str(cfg), "tile", str(scene / "s1.tif"), "--out", str(a), "--quiet").exit_code == 0
    assert invoke("--config", str(cfg), "tile", str(scene / "s1.tif"), "--out", str(b), "--size", "64",
                  "--quiet").exit_code == 0
    assert json.loads((a / "tiling.json").read_text())["params"]["size"] == 128
    assert json.loads((b / "tiling.json").read_text())["params"]["size"] == 64
    assert len(list((a / "s1").glob("*.tif"))) == 4 and len(list((b / "s1").glob("*.tif"))) == 16


@pytest.mark.parametrize("text, message", [("[tile]\nsizes = 3\n", "no option 'sizes'"),
                                           ("[tyle]\nsize = 3\n", "unknown command [tyle]"),
                                           ("[tile\n", "not valid TOML")])
def test_bad_config_exit_2(tmp_path, scene, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    res = invoke("--config", str(cfg), "tile", str(scene / "s1.tif"), "--out", str(tmp_path / "t"))
    assert res.exit_code == 2 and message in res.output and not (tmp_path / "t").exists()


def test_a_locked_output_fails_at_once_with_exit_1(tmp_path, scene):
    out = tmp_path / "tiles"
    lock = tmp_path / "tiles.lock"
    lock.write_text(f"{socket.gethostname()} 1")  # pid 1 is alive: another run holds it
    res = invoke("tile", str(scene / "s1.tif"), "--out", str(out), "--size", "64")
    assert res.exit_code == 1 and "being written by another sarkit run (pid 1" in res.output
    assert not out.exists() and lock.exists()


def test_eval_takes_its_report_lock_before_working(tmp_path, scene, monkeypatch):
    import sarkit.eval.runner as runner_mod

    called = []
    monkeypatch.setattr(runner_mod, "run_eval", lambda *a, **k: called.append(1))
    (tmp_path / "rep.lock").write_text(f"{socket.gethostname()} 1")
    res = invoke("eval", "--pred", str(scene / "s2.tif"), "--target", str(scene / "s2.tif"), "--report",
                 str(tmp_path / "rep"))
    assert res.exit_code == 1 and "another sarkit run" in res.output and called == []


def test_errors_are_json_events_with_log_format_json(tmp_path):
    res = invoke("tile", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "t"), "--log-format", "json")
    assert res.exit_code == 2
    event = json.loads(res.output.strip().splitlines()[-1])
    assert event["event"] == "error" and event["exit_code"] == 2 and "missing.tif" in event["message"]


USAGE_ERRORS = {
    "tile-split": ["tile", "s1.tif", "--out", "t", "--split", "0.5,0.5"],
    "translate-tile-text": ["translate", "s1.tif", "--checkpoint", "c", "--out", "o.tif", "--tile", "big"],
    "eval-fail-under": ["eval", "--pred", "p.tif", "--target", "t.tif", "--fail-under", "psnr"],
    "train-no-data": ["train", "--model", "pix2pix", "--out", "run"],
    "stitch-unknown-option": ["stitch", "a.tif", "--out", "m.tif", "--no-such"],
    "unknown-command": ["bogus"],
}


@pytest.mark.parametrize("name", sorted(USAGE_ERRORS))
def test_usage_errors_are_one_line_and_one_json_event(name, tmp_path, monkeypatch):
    """Click's usage block (Usage:, Try:, Error:) becomes sarkit's one error line, exit 2, in both log formats."""
    from badinput import assert_refused

    monkeypatch.chdir(tmp_path)
    args = USAGE_ERRORS[name]
    # the JSON form needs the option after the command name; an unknown command has no options of its own
    if name == "unknown-command":
        res = invoke(*args)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.exit_code == 2 and lines == ["error: No such command 'bogus'. (see 'sarkit --help')"]
        return
    assert_refused(args, watch=tmp_path, code=2, says=["--help"])


def test_no_arguments_still_prints_the_help():
    res = invoke()
    assert "Usage: sarkit" in res.output and "translate" in res.output
