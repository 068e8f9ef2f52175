"""Raster opening with clear errors, atomic outputs, output locks and Cloud-Optimized GeoTIFF writing."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import rasterio
import rasterio.shutil
from rasterio.errors import RasterioIOError

from .errors import InputError, LockedError, OutputExistsError

#: Creation options of the tiled GeoTIFFs sarkit writes (tiles and temporaries).
GTIFF_PROFILE = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}


def open_raster(path: str | os.PathLike, what: str = "raster") -> rasterio.DatasetReader:
    """Open a raster for reading, raising ``InputError`` with a one-line reason when it cannot be used."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_dir():
        raise InputError(f"{what} is a directory, expected a GeoTIFF file: {p}")
    try:
        return rasterio.open(p)
    except RasterioIOError as exc:
        raise InputError(f"{what} is not a readable raster: {p} ({str(exc).splitlines()[0]})") from None


def require_crs(src: rasterio.DatasetReader, what: str = "raster") -> None:
    """Raise ``InputError`` when a raster has no CRS or no geotransform."""
    if src.crs is None:
        raise InputError(f"{what} has no CRS: {src.name} (assign one with gdal_edit.py -a_srs EPSG:XXXX)")
    if src.transform.is_identity:
        raise InputError(f"{what} has no georeferencing (identity transform): {src.name}")


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Fail with ``OutputExistsError`` when ``path`` exists (a non-empty dir, or a file) and not ``overwrite``."""
    p = Path(path)
    if p.exists() and not overwrite:
        if p.is_dir() and not any(p.iterdir()):
            return p
        raise OutputExistsError(f"output exists: {p} (pass --overwrite to replace it)")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise InputError(f"cannot write to {parent}: permission denied")
    return p


def temp_sibling(path: Path, suffix: str = "") -> Path:
    """A unique hidden temporary path next to ``path`` (same filesystem, so rename is atomic)."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}"


@contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``path``, on failure delete it.

    The caller writes the whole file to the yielded path. ``path`` itself is never seen half-written.
    """
    dest = Path(path)
    if not overwrite:
        check_output(dest, overwrite=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest, dest.suffix)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (after the old one is removed)."""
    dest = Path(path)
    check_output(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the finished directory gets the usual permissions
    try:
        yield tmp
        if dest.exists():
            old = temp_sibling(dest, ".old")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_atomic_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<path>.lock`` while writing ``path``; a second run fails at once naming the holder.

    A lock left by a killed process (its PID no longer alive on this host) is taken over.
    """
    dest = Path(path)
    lock = dest.parent / f"{dest.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock.read_text().strip() if lock.exists() else ""
            host, _, pid = holder.partition(" ")
            if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
                lock.unlink(missing_ok=True)
                continue
            raise LockedError(f"{dest} is being written by another sarkit run (pid {pid or '?'} on {host or '?'}; "
                              f"lock file {lock})") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def write_cog(src_path: Path, dest: Path, overview_resampling: str = "average") -> None:
    """Convert a tiled GeoTIFF into a Cloud-Optimized GeoTIFF at ``dest`` (GDAL's COG driver).

    512-pixel blocks, internal overviews, DEFLATE compression with the predictor that suits the data type.
    """
    with rasterio.open(src_path) as src:
        dtype = src.dtypes[0]
    predictor = "FLOATING_POINT" if dtype.startswith("float") else "YES"
    rasterio.shutil.copy(
        src_path,
        dest,
        driver="COG",
        BLOCKSIZE=512,
        COMPRESS="DEFLATE",
        PREDICTOR=predictor,
        OVERVIEWS="AUTO",
        OVERVIEW_RESAMPLING=overview_resampling.upper(),
        NUM_THREADS="ALL_CPUS",
        BIGTIFF="IF_SAFER",
    )
