"""Tests of sarkit.io: raster opening errors, atomic outputs, output locks and COG writing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sarkit.errors import InputError, OutputExistsError
from sarkit.io import (atomic_dir, atomic_file, check_output, open_raster, output_complete, output_lock, require_crs,
                       temp_sibling, write_cog)


def _raster(path, crs="EPSG:32631"):
    prof = dict(driver="GTiff", height=64, width=64, count=1, dtype="float32",
                transform=from_origin(500000, 5600000, 10, 10))
    if crs:
        prof["crs"] = crs
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(np.arange(64 * 64, dtype=np.float32).reshape(1, 64, 64))
    return path


def test_open_raster_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_raster(tmp_path / "x.tif")
    with pytest.raises(InputError, match="directory"):
        open_raster(tmp_path)
    (tmp_path / "t.tif").write_text("text")
    with pytest.raises(InputError, match="not a readable raster"):
        open_raster(tmp_path / "t.tif")
    with open_raster(_raster(tmp_path / "ok.tif")) as src:
        require_crs(src)
    with open_raster(_raster(tmp_path / "nocrs.tif", crs=None)) as src, pytest.raises(InputError, match="no CRS"):
        require_crs(src)


def test_atomic_file_leaves_nothing_on_exception(tmp_path):
    dest = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_file(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_file(dest) as tmp:
        tmp.write_text("whole")
    assert dest.read_text() == "whole" and list(tmp_path.iterdir()) == [dest]


def test_atomic_file_without_overwrite_refuses_existing(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(OutputExistsError):
        with atomic_file(dest, overwrite=False):
            pass
    assert dest.read_text() == "old"


def test_atomic_dir_failure_keeps_old_and_success_replaces(tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "old").write_text("1")
    with pytest.raises(OutputExistsError):
        with atomic_dir(dest, overwrite=False):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(dest, overwrite=True) as tmp:
            (tmp / "new").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"] and (dest / "old").exists()
    with atomic_dir(dest, overwrite=True) as tmp:
        (tmp / "new").write_text("2")
    assert [p.name for p in dest.iterdir()] == ["new"] and sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_check_output_accepts_empty_dir(tmp_path):
    (tmp_path / "e").mkdir()
    assert check_output(tmp_path / "e", overwrite=False) == tmp_path / "e"
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputExistsError):
        check_output(tmp_path / "f", overwrite=False)


def test_output_lock_blocks_second_process(tmp_path):
    dest = tmp_path / "out.tif"
    code = ("import sys; from sarkit.io import output_lock; from sarkit.errors import LockedError\n"
            "try:\n    with output_lock(sys.argv[1]): print('took it')\n"
            "except LockedError as e:\n    print('locked:', e, e.exit_code)\n")
    with output_lock(dest) as lock:
        assert lock.exists()
        other = subprocess.run([sys.executable, "-c", code, str(dest)], capture_output=True, text=True, check=True)
        assert other.stdout.startswith("locked:") and f"pid {os.getpid()}" in other.stdout
        assert other.stdout.strip().endswith(" 1")  # exit code 1: retry later, not bad input
    assert not lock.exists()
    assert "took it" in subprocess.run([sys.executable, "-c", code, str(dest)], capture_output=True, text=True,
                                       check=True).stdout


def test_output_lock_is_reentrant_in_one_process(tmp_path):
    dest = tmp_path / "out.tif"
    with output_lock(dest) as outer:
        with output_lock(dest) as inner:
            assert inner == outer and outer.exists()
        assert outer.exists()  # the inner exit does not release the outer lock
    assert not outer.exists()


def test_taking_a_lock_removes_temporaries_of_that_output_only(tmp_path):
    dest = tmp_path / "out.tif"
    stale = [temp_sibling(dest, ".tif"), temp_sibling(dest, ".old")]
    for p in stale:
        p.write_text("half-written")
    stale_dir = tmp_path / ".out.tif.abcd_123.tmp"
    stale_dir.mkdir()
    keep = [temp_sibling(tmp_path / "other.tif", ".tif"), tmp_path / ".out.tif.notes", tmp_path / "out.tif.x"]
    for p in keep:
        p.write_text("keep")
    with output_lock(dest):
        pass
    assert not any(p.exists() for p in stale) and not stale_dir.exists()
    assert all(p.exists() for p in keep)


def test_output_complete(tmp_path):
    assert not output_complete(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert not output_complete(tmp_path / "empty")
    (tmp_path / "f.tif").write_text("x")
    assert output_complete(tmp_path / "f.tif")


def test_output_lock_takes_over_a_dead_pid(tmp_path):
    dest = tmp_path / "out.tif"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    lock = tmp_path / "out.tif.lock"
    lock.write_text(f"{socket.gethostname()} {proc.pid}")
    with output_lock(dest) as held:
        assert held.read_text() == f"{socket.gethostname()} {os.getpid()}"
    assert not lock.exists()


def test_write_cog(tmp_path):
    src = _raster(tmp_path / "src.tif")
    write_cog(src, tmp_path / "cog.tif")
    with rasterio.open(tmp_path / "cog.tif") as cog, rasterio.open(src) as s:
        np.testing.assert_array_equal(cog.read(), s.read())
        assert cog.crs == s.crs and cog.transform == s.transform


def test_atomic_outputs_get_the_usual_modes_even_when_the_writer_makes_0600(tmp_path):
    """safetensors (like mkstemp) creates 0600 files; a finished output has the umask's mode like every other."""
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "g.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
        with atomic_dir(tmp_path / "d", overwrite=False) as tmp:
            (tmp / "x.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "g.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("writer", ["atomic_file", "atomic_dir", "output_lock"])
def test_a_failed_write_leaves_no_folder_it_created(tmp_path, writer):
    out = tmp_path / "a" / "b" / "out.tif"
    keep = tmp_path / "kept"
    keep.mkdir()
    (keep / "x").write_text("x")
    opener = {"atomic_file": lambda p: atomic_file(p), "atomic_dir": lambda p: atomic_dir(p, overwrite=False),
              "output_lock": lambda p: output_lock(p)}[writer]
    with pytest.raises(RuntimeError):
        with opener(out):
            assert out.parent.is_dir()  # created for the write
            raise RuntimeError("failed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    with opener(keep / "new.tif") as made:  # an existing folder is left alone
        if writer == "atomic_file":
            made.write_text("y")
    assert (keep / "x").exists()
