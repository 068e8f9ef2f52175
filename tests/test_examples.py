"""The files in examples/ run as written: pipeline.sh end to end (twice: the re-run is a no-op), the crontab's jobs
against a sandbox standing in for /data, /models, /etc and /var/log, and config.toml against the real commands."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from typer.main import get_command

from sarkit.models.checkpoint import save_network
from sarkit.cli import app, config_keys
from sarkit.config import load_config
from sarkit.models.blocks import build_unet
from sarkit.raster.norm import optical_normalization, sar_normalization
from sarkit.data.synth import SynthOptions, synth_scene

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def sarkit_executable() -> str:
    """The ``sarkit`` console script of the environment running the tests."""
    found = shutil.which("sarkit", path=str(Path(sys.executable).parent)) or shutil.which("sarkit")
    if not found:
        pytest.skip("the sarkit console script is not installed (pip install -e .)")
    return found


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_pipeline_runs_end_to_end_and_rerun_is_a_no_op(tmp_path):
    env = {**os.environ, "SARKIT": sarkit_executable()}
    work = tmp_path / "work"
    first = subprocess.run(["bash", str(EXAMPLES / "pipeline.sh"), str(work), "3"], capture_output=True,
                           text=True, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # --quiet: nothing on stderr when all goes well (cron mails any output)
    assert "pipeline finished" in first.stdout
    report = json.loads((work / "report" / "report.json").read_text())
    assert {"psnr", "ssim", "mae"} <= set(report["summary"])
    with rasterio.open(work / "translated.tif") as out, rasterio.open(work / "test-scene" / "s1.tif") as src:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)

    before = mtimes(work)
    second = subprocess.run(["bash", str(EXAMPLES / "pipeline.sh"), str(work), "3"], capture_output=True,
                            text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert mtimes(work) == before  # every step skipped: nothing rewritten


def crontab_jobs(text: str) -> tuple[dict[str, str], list[str]]:
    """Environment assignments and job commands of a crontab (five time fields, then the command)."""
    env, jobs = {}, []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 5)
        if "=" in fields[0] and len(fields) == 1:
            key, value = line.split("=", 1)
            env[key] = value
            continue
        assert len(fields) == 6, f"not a crontab job line: {line}"
        jobs.append(fields[5].replace("\\%", "%"))  # cron turns \% into %
    return env, jobs


@pytest.mark.slow
def test_crontab_jobs_run_against_a_sandbox(tmp_path):
    env, jobs = crontab_jobs((EXAMPLES / "crontab").read_text())
    assert set(env) == {"SHELL", "PATH", "SARKIT_CONFIG"} and len(jobs) == 2
    bin_dir = str(Path(sarkit_executable()).parent)
    box = tmp_path / "box"
    roots = {"/opt/sarkit/.venv/bin": bin_dir, "/data": str(box / "data"), "/models": str(box / "models"),
             "/var/log": str(box / "log"), "/etc/sarkit": str(box / "etc")}

    def sandboxed(text: str) -> str:
        for real, fake in roots.items():
            text = text.replace(real, fake)
        return text

    for d in ("data/incoming", "data/out", "data/reference", "data/reports", "log/sarkit", "etc"):
        (box / d).mkdir(parents=True)
    shutil.copy(EXAMPLES / "config.toml", box / "etc" / "config.toml")
    scene = synth_scene(tmp_path / "scene", SynthOptions(size=320, seed=9))
    shutil.copy(scene.s1_path, box / "data" / "incoming" / "weekly_s1.tif")
    shutil.copy(scene.s2_path, box / "data" / "reference" / "weekly_s2.tif")
    kw = {"in_channels": 2, "out_channels": 3, "num_downs": 8, "ngf": 8}
    save_network(box / "models" / "pix2pix" / "checkpoints" / "generator.safetensors", build_unet(**kw).eval(),
                 "generator", "unet", kw, {"model": "pix2pix", "direction": "sar2opt",
                                            "in_norm": sar_normalization().to_dict(),
                                            "out_norm": optical_normalization().to_dict(), "tile_size": 256})
    job_env = {**os.environ, **{k: sandboxed(v) for k, v in env.items()}}

    nightly = subprocess.run(["bash", "-c", sandboxed(jobs[0])], capture_output=True, text=True, env=job_env)
    assert nightly.returncode == 0 and nightly.stdout == "" and nightly.stderr == ""  # cron mails nothing
    out = box / "data" / "out" / "weekly_rgb.tif"
    with rasterio.open(out) as dst:
        assert dst.count == 3 and dst.shape == (320, 320)
    log = [json.loads(line) for line in (box / "log" / "sarkit" / "translate.jsonl").read_text().splitlines()]
    assert log and {"start", "end"} <= {e["event"] for e in log}
    written = out.stat().st_mtime_ns
    rerun = subprocess.run(["bash", "-c", sandboxed(jobs[0])], capture_output=True, text=True, env=job_env)
    assert rerun.returncode == 0 and out.stat().st_mtime_ns == written  # --skip-existing: left as it was

    weekly = subprocess.run(["bash", "-c", sandboxed(jobs[1])], capture_output=True, text=True, env=job_env)
    # an untrained generator cannot pass the quality gate: exit 1, one line saying why, the report still written
    assert weekly.returncode == 1 and "quality gate failed" in weekly.stderr
    reports = list((box / "data" / "reports").iterdir())
    assert len(reports) == 1 and (reports[0] / "report.json").exists()


def test_example_config_names_real_commands_and_options(tmp_path):
    config = load_config(EXAMPLES / "config.toml", config_keys(get_command(app)))
    assert set(config) == {"tile", "train", "translate", "eval"} and config["tile"]["size"] == 256
    assert config["translate"]["fmt"] == "native" and config["tile"]["max_nodata"] == 0.05


def test_pipeline_script_uses_only_real_options():
    commands = {name: {o for p in cmd.params for o in getattr(p, "opts", [])}
                for name, cmd in get_command(app).commands.items()}
    text = (EXAMPLES / "pipeline.sh").read_text().replace("\\\n", " ")
    calls = [shlex.split(line.split('"$sarkit"', 1)[1]) for line in text.splitlines() if '"$sarkit"' in line]
    assert [c[0] for c in calls] == ["synth", "synth", "tile", "train", "translate", "eval"]
    for call in calls:
        unknown = [a for a in call[1:] if a.startswith("--") and a not in commands[call[0]]]
        assert unknown == [], f"{call[0]}: {unknown}"
