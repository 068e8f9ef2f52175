"""Tests of sarkit/diagnostics.py: GDAL chatter and native stderr captured, warnings routed, SIGTERM, disk full."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import warnings

import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError, NotGeoreferencedWarning
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.diagnostics import GdalMessages, command_scope, explain
from sarkit.errors import Terminated


def test_gdal_chatter_is_kept_out_of_the_terminal(capfd):
    with command_scope(lambda m: None) as gdal:
        with pytest.raises(CRSError):
            CRS.from_user_input("EPSG:999999")
    assert "ERROR 1" not in capfd.readouterr().err
    assert any("EPSG:999999" in m for m in gdal.messages)


def test_python_warnings_become_one_line_sarkit_warnings_and_not_georeferenced_is_dropped():
    said: list[str] = []
    with command_scope(said.append):
        warnings.warn("first line\nsecond line", UserWarning)
        warnings.warn("no geotransform", NotGeoreferencedWarning)
    assert said == ["UserWarning: first line"]


def test_explain_replaces_see_previous_exception_with_gdals_reason():
    gdal = GdalMessages()
    gdal.messages.append("_tiffWriteProc: File too large.")
    exc = rasterio.errors.RasterioIOError("Write failed. See previous exception for details.")
    text = explain(exc, gdal)
    assert text.startswith("RasterioIOError: Write failed: _tiffWriteProc: File too large")
    assert "file-size limit" in text and "previous exception" not in text


def test_sigterm_inside_a_command_raises_terminated():
    with pytest.raises(Terminated):
        with command_scope(lambda m: None):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes, at the latest within this loop
                pass
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the command


def test_stitch_bad_crs_prints_one_line_and_no_proj_error(tmp_path, capfd):
    import numpy as np
    from rasters import write_rgb_dn

    tile = write_rgb_dn(tmp_path / "a.tif", np.full((3, 32, 32), 1000, np.uint16))
    res = CliRunner().invoke(app, ["stitch", str(tile), "--out", str(tmp_path / "m.tif"), "--crs", "EPSG:999999"])
    native = capfd.readouterr().err
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "EPSG:999999" in lines[0]
    assert "ERROR 1" not in native and "PROJ" not in native


@pytest.mark.parametrize("command", ["tile", "eval", "stitch"])
def test_png_named_tif_gives_only_sarkits_line(command, tmp_path, capfd):
    """A PNG renamed .tif: rasterio's NotGeoreferencedWarning never reaches the terminal, only sarkit's line."""
    import numpy as np
    from PIL import Image

    from rasters import write_rgb_dn

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "x.png")
    os.replace(tmp_path / "x.png", tmp_path / "x.tif")
    good = write_rgb_dn(tmp_path / "good.tif", np.full((3, 64, 64), 1000, np.uint16))
    args = {"tile": ["tile", str(tmp_path / "x.tif"), "--out", str(tmp_path / "t")],
            "eval": ["eval", "--pred", str(tmp_path / "x.tif"), "--target", str(good)],
            "stitch": ["stitch", str(tmp_path / "x.tif"), "--out", str(tmp_path / "m.tif")]}[command]
    for fmt in ("text", "json"):
        res = CliRunner().invoke(app, [*args, "--log-format", fmt])
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1, lines
        assert "NotGeoreferencedWarning" not in capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE as a stand-in for a full disk")
def test_disk_full_is_one_line_exit_1_and_nothing_left(tmp_path):
    """A write that does not fit (EFBIG under a file-size limit, as ENOSPC on a full disk): rc 1, one line."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    proc = subprocess.run([sys.executable, "-m", "sarkit.cli", "synth", str(tmp_path / "scene"), "--size", "512",
                           "--quiet"], preexec_fn=limit, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1
    assert len(lines) == 1 and "File too large" in lines[0] and "file-size limit" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []
