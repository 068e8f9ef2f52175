"""The run report (sarkit.training.report, sarkit report): written at the end of training with the curves, the
sample grids, the timing and the config; refreshed by the command; readable in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.errors import InputError
from sarkit.training import train
from sarkit.training.report import MAX_GRIDS, best_of, read_run, spread, timing, write_run_report
from tilesets import opts


@pytest.fixture(scope="module")
def run(tiles: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step pix2pix run validated at steps 2 and 4."""
    out = tmp_path_factory.mktemp("report") / "p2p"
    train(opts(tiles, out, val_every=2, log_every=1))
    return out


def test_training_writes_the_report_with_curves_samples_timing_and_config(run: Path) -> None:
    page = (run / "report.html").read_text()
    assert "finished: step 4 of 4" in page
    titles = re.findall(r"<svg[^>]*><title>([^<]+)</title>", page)
    assert titles == ["train/G_GAN", "train/G_L1", "train/D_real", "train/D_fake", "train/lr", "val/psnr",
                      "val/ssim", "val/mae"]
    assert page.count("<polyline") == len(titles)  # every curve has at least two points: a line
    srcs = re.findall(r'<img alt="samples at step (\d+)" src="([^"]+)"', page)
    assert srcs == [("2", "samples/step-000002.png"), ("4", "samples/step-000004.png")]
    assert all((run / s).is_file() for _, s in srcs)
    assert "seconds per step (median)" in page and "training time" in page
    cfg = json.loads((run / "config.json").read_text())
    assert f"<td>{cfg['train']['data']}</td>" in page and "<th>ngf</th><td>8</td>" in page
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(isinstance(x["time"], float) for x in lines)  # every line carries its wall-clock time
    last_psnr = [x for x in lines if x["kind"] == "val"][-1]["psnr"]
    assert f"{last_psnr:.4g} (step 4)" in page


def test_the_command_refreshes_the_report_or_writes_it_elsewhere(run: Path, tmp_path: Path) -> None:
    (run / "report.html").unlink()
    r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    assert (run / "report.html").is_file() and "report.html" in r.output
    assert CliRunner().invoke(app, ["report", str(run)]).exit_code == 0  # the run's own file: always refreshed
    out = tmp_path / "elsewhere" / "r.html"
    out.parent.mkdir()
    assert CliRunner().invoke(app, ["report", str(run), "--out", str(out)]).exit_code == 0
    src = re.search(r'<img alt="samples at step 2" src="([^"]+)"', out.read_text()).group(1)
    assert (out.parent / src).resolve() == (run / "samples" / "step-000002.png").resolve()
    r = CliRunner().invoke(app, ["report", str(run), "--out", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert CliRunner().invoke(app, ["report", str(run), "--out", str(out), "--overwrite"]).exit_code == 0
    r = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 2 and "is not a sarkit training run (no config.json)" in r.output


def test_a_run_without_lines_yet_gets_a_report(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model": "cut", "total_steps": 10}))
    page = (write_run_report(tmp_path)).read_text()
    assert "no exported networks yet" in page and "no validation yet" in page and "no sample grids yet" in page
    with pytest.raises(InputError, match="not a sarkit training run"):
        read_run(tmp_path / "missing")


def test_timing_leaves_pauses_out_and_counts_the_first_steps():
    lines = [{"step": s, "time": t} for s, t in [(10, 100.0), (20, 110.0), (30, 120.0), (40, 5000.0), (50, 5010.0)]]
    tm = timing(lines)
    assert tm.seconds_per_step == pytest.approx(1.0) and tm.pauses == 1
    assert tm.seconds == pytest.approx(10 + 10 + 10 + 10)  # 3 intervals + the 10 steps before the first line
    assert timing([{"step": 1}]).seconds is None


def test_best_follows_the_metric_direction_and_grids_are_spread():
    vals = [(1, 0.2), (2, 0.1), (3, float("nan")), (4, 0.3)]
    assert best_of(vals, "mae") == (2, 0.1) and best_of(vals, "psnr") == (4, 0.3) and best_of([], "ssim") is None
    items = list(range(40))
    shown = spread(items, MAX_GRIDS)
    assert len(shown) == MAX_GRIDS and shown[0] == 0 and shown[-1] == 39
    assert spread([1, 2], 12) == [1, 2]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_a_real_browser(run: Path, tmp_path: Path) -> None:
    """Headless Chromium screenshots the page: the curves (their line colour) and the sample grids are drawn."""
    from PIL import Image

    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,2400", f"--screenshot={shot}", (run / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (2400, 1280)
    line = (np.abs(img - np.array([0, 114, 178])).sum(-1) < 30)  # COLOURS[0] of sarkit.svgplot
    assert line.sum() > 2000  # eight curves drawn
    grid = np.asarray(Image.open(run / "samples" / "step-000004.png").convert("RGB"))
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200 and grid.size  # pictures, not just text
