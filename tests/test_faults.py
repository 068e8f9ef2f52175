"""Fault tests of the commands as cron runs them: kill -9 half-way, resume, two runs on one output.

Each test drives ``python -m sarkit.cli`` in child processes, as a shell pipeline would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio

from sarkit.models.checkpoint import read_export_record, save_network
from sarkit.models.blocks import build_unet
from sarkit.raster.norm import optical_normalization, sar_normalization
from sarkit.data.synth import SynthOptions, synth_scene
from sarkit.data.tiling import TileOptions, tile_scene

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "sarkit.cli"]


def start(*args: str) -> subprocess.Popen:
    """Start one sarkit command in a child process (its own session, so kill -9 reaches it alone)."""
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    """Poll until ``predicate()`` holds; fail if the process ends first or the time runs out."""
    t_end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > t_end:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def litter(folder: Path) -> list[str]:
    """Hidden temporaries and lock files left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def scene_and_generator(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated 1024² scene and an untrained full-size pix2pix U-Net exported as a generator checkpoint."""
    root = tmp_path_factory.mktemp("faults")
    scene = synth_scene(root / "scene", SynthOptions(size=1024, seed=3))
    kw = {"in_channels": 2, "out_channels": 3, "num_downs": 8, "ngf": 32}
    ckpt = save_network(root / "generator.safetensors", build_unet(**kw).eval(), "generator", "unet", kw,
                        {"model": "pix2pix", "direction": "sar2opt", "in_norm": sar_normalization().to_dict(),
                         "out_norm": optical_normalization().to_dict(), "tile_size": 256, "run": "faults"})
    return scene.s1_path, ckpt


def translate_args(scene: Path, ckpt: Path, out: Path) -> list[str]:
    return ["translate", str(scene), "--checkpoint", str(ckpt), "--out", str(out), "--batch-size", "1",
            "--device", "cpu"]


def test_kill9_during_translate_leaves_no_output_and_rerun_succeeds(tmp_path, scene_and_generator):
    scene, ckpt = scene_and_generator
    out = tmp_path / "out.tif"
    proc = start(*translate_args(scene, ckpt, out))
    # the temporary GeoTIFF exists once rows are being written: kill the run in the middle of its work
    wait_for(lambda: any(p.name.startswith(".out.tif.") for p in tmp_path.iterdir()), proc, "the temporary output")
    kill9(proc)
    assert not out.exists()
    assert litter(tmp_path)  # the killed run could not clean up: its lock and temporaries are still there

    again = subprocess.run([*CLI, *translate_args(scene, ckpt, out), "--quiet"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert litter(tmp_path) == []  # the stale lock was taken over and the dead run's temporaries removed
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert (dst.width, dst.height, dst.crs, dst.transform) == (src.width, src.height, src.crs, src.transform)
        assert dst.descriptions == ("B4", "B3", "B2")


def test_second_translate_to_the_same_output_fails_at_once(tmp_path, scene_and_generator):
    scene, ckpt = scene_and_generator
    out = tmp_path / "same.tif"
    first = start(*translate_args(scene, ckpt, out), "--overlap", "192")  # 4× the tiles: a long first run
    try:
        wait_for(lambda: (tmp_path / "same.tif.lock").exists(), first, "the first run's lock")
        second = subprocess.run([*CLI, *translate_args(scene, ckpt, out)], capture_output=True, text=True,
                                timeout=120)
        assert first.poll() is None  # the second did not wait for the first: it gave up while the first works
        assert second.returncode == 1
        msg = second.stderr.strip().splitlines()
        assert len(msg) == 1 and "being written by another sarkit run" in msg[0] and f"pid {first.pid}" in msg[0]
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert out.exists() and litter(tmp_path) == []


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults-tiles")
    scene = synth_scene(root / "scene", SynthOptions(size=512, seed=4))
    tile_scene(scene.s1_path, scene.s2_path, None, root / "tiles",
               TileOptions(size=256, stride=128, split=(0.8, 0.2, 0.0), max_nodata=0.5))
    return root / "tiles"


def test_kill9_during_training_then_resume_continues(tmp_path, tiles):
    run = tmp_path / "run"
    args = ["train", "--model", "pix2pix", "--data", str(tiles), "--out", str(run), "--steps", "60",
            "--save-every", "4", "--val-every", "0", "--log-every", "1", "--device", "cpu",
            "--model-opt", "ngf=8", "--model-opt", "ndf=8", "--quiet"]
    proc = start(*args)
    state = run / "checkpoints" / "state-latest.pt"
    wait_for(state.exists, proc, "the first checkpoint")
    kill9(proc)
    saved_step = read_export_record(run / "checkpoints" / "generator.safetensors")["meta"]["step"]
    assert 4 <= saved_step < 60

    refused = subprocess.run([*CLI, *args], capture_output=True, text=True)  # without --resume: refused, kept
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = subprocess.run([*CLI, *args, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert read_export_record(run / "checkpoints" / "generator.safetensors")["meta"]["step"] == 60
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 60  # continued, no step logged twice
    assert litter(run) == [] and litter(run / "checkpoints") == [] and not (tmp_path / "run.lock").exists()
    loud = [a for a in args if a != "--quiet"]
    skipped = subprocess.run([*CLI, *loud, "--skip-existing"], capture_output=True, text=True)
    assert skipped.returncode == 0 and "skipped" in skipped.stderr


def test_sigterm_during_translate_cleans_up_and_exits_143(tmp_path, scene_and_generator):
    """SIGTERM (what ``timeout`` and cron send) is handled like Ctrl-C: temporaries and lock removed, exit 143."""
    scene, ckpt = scene_and_generator
    out = tmp_path / "out.tif"
    proc = start(*translate_args(scene, ckpt, out), "--quiet")
    wait_for(lambda: any(p.name.startswith(".out.tif.") for p in tmp_path.iterdir()), proc, "the temporary output")
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "terminated" in lines[0], lines
    assert not out.exists() and litter(tmp_path) == []


def test_sigterm_during_training_saves_state_like_ctrl_c(tmp_path, tiles):
    run = tmp_path / "run"
    args = ["train", "--model", "pix2pix", "--data", str(tiles), "--out", str(run), "--steps", "400",
            "--save-every", "2", "--val-every", "0", "--device", "cpu",
            "--model-opt", "ngf=8", "--model-opt", "ndf=8", "--quiet"]
    proc = start(*args)
    wait_for((run / "checkpoints" / "state-latest.pt").exists, proc, "the first checkpoint")
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "continue with --resume" in err
    assert litter(run) == [] and litter(run / "checkpoints") == [] and not (tmp_path / "run.lock").exists()
    resumed = subprocess.run([*CLI, *args, "--resume", "--steps", "6"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
