"""Raster opening with clear errors, atomic outputs, output locks and Cloud-Optimized GeoTIFF writing."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

import rasterio
import rasterio.shutil
from rasterio.errors import RasterioIOError

from sarkit.errors import InputError, LockedError, OutputExistsError

#: DEFLATE level of every compressed GeoTIFF and COG sarkit writes. GDAL's default, 6, is much slower with the
#: libdeflate that rasterio's GDAL uses and no smaller: a 4096² 3-band uint16 synthetic optical COG took 5.8 s of
#: CPU at level 6 and 1.9 s at level 4, for 54.24 and 54.17 MB (level 1: 1.2 s, 61.2 MB); see docs/benchmarks.md.
DEFLATE_LEVEL = 4
#: Creation options of the tiled GeoTIFFs sarkit writes (tiles, generated scenes).
GTIFF_PROFILE = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
                 "zlevel": DEFLATE_LEVEL}
#: Creation options of the scratch GeoTIFFs that ``write_cog`` converts (translate, stitch): tiled and
#: uncompressed. Compressing them cost more CPU than the whole COG conversion saved (DEFLATE level 1 of a 4096²
#: 3-band uint16 scene: 1.2 s, against 0.1 s uncompressed, then decompressed again by the conversion); the price is
#: scratch disk space of the output's raw size, next to the output, for the duration of the run.
SCRATCH_PROFILE = {"driver": "GTiff", "tiled": True, "blockxsize": 256, "blockysize": 256, "BIGTIFF": "IF_SAFER"}
#: Block size of the COGs sarkit writes (pixels).
COG_BLOCK = 512


#: An http(s) URL, also as ``pathlib`` writes one (it collapses "https://host" into "https:/host").
_URL = re.compile(r"^(https?):/+(?=[^/])", re.IGNORECASE)


def is_url(spec: Any) -> bool:
    """True when a file as a user gave it is an http(s) URL (a string, a ``RemoteFile``, or a ``Path`` that
    ``pathlib`` made of a URL)."""
    return isinstance(spec, (str, os.PathLike)) and _URL.match(str(spec)) is not None


class RemoteFile(PurePosixPath):
    """A file given as an http(s) URL: named (``name``, ``stem``, ``suffix``) by its URL's path part, written
    (``str``, ``os.fspath``) as the URL, which rasterio opens directly (GDAL's /vsicurl/)."""

    def __new__(cls, url: str) -> "RemoteFile":
        """The remote file of ``url`` (a ``pathlib``-collapsed "https:/host/…" is read as "https://host/…")."""
        url = _URL.sub(lambda m: m.group(1).lower() + "://", str(url), count=1)
        self = super().__new__(cls, unquote(urlsplit(url).path) or "/")
        self.url = url
        return self

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemoteFile({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteFile) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def resolve(self) -> "RemoteFile":
        """The URL itself (already absolute)."""
        return self


def as_file(spec: str | os.PathLike) -> Path | RemoteFile:
    """A file as a user gave it: a ``RemoteFile`` for an http(s) URL, else a ``Path``."""
    return RemoteFile(str(spec)) if is_url(spec) else Path(spec)


def open_raster(path: str | os.PathLike, what: str = "raster") -> rasterio.DatasetReader:
    """Open a raster for reading, raising ``InputError`` with a one-line reason when it cannot be used. An http(s)
    URL is opened by rasterio directly (no existence check here; a failed open is the ``InputError``)."""
    if is_url(path):
        url = str(as_file(path))
        try:
            return rasterio.open(url)
        except RasterioIOError as exc:
            raise InputError(f"{what} cannot be read from {url} ({str(exc).splitlines()[0][:160]}); check the URL "
                             f"and that this machine is online") from None
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


def default_mode(directory: bool = False) -> int:
    """The mode a new file (0666) or directory (0777) gets under the current umask: 0644 / 0755 under 022."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextmanager
def parents_made(path: Path) -> Iterator[None]:
    """Create the missing folders above ``path``; when the block fails, remove those of them left empty, so a
    failed run leaves no empty folder behind."""
    missing = []
    for d in Path(path).absolute().parents:
        if d.exists():
            break
        missing.append(d)  # innermost first
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for d in missing:
            try:
                d.rmdir()  # only while empty
            except OSError:
                break
        raise


@contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto ``path``, on failure delete it.

    The caller writes the whole file to the yielded path. ``path`` itself is never seen half-written.
    """
    dest = Path(path)
    if not overwrite:
        check_output(dest, overwrite=False)
    with parents_made(dest), _atomic_file_in_place(dest) as tmp:
        yield tmp


@contextmanager
def _atomic_file_in_place(dest: Path) -> Iterator[Path]:
    tmp = temp_sibling(dest, dest.suffix)
    try:
        yield tmp
        if tmp.is_file():
            tmp.chmod(default_mode())  # writers such as safetensors create 0600 files
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (after the old one is removed)."""
    dest = Path(path)
    check_output(dest, overwrite)
    with parents_made(dest), output_lock(dest):
        check_output(dest, overwrite)  # again: a run that held the lock may have finished it meanwhile
        with _atomic_dir_unlocked(dest) as tmp:
            yield tmp


@contextmanager
def _atomic_dir_unlocked(dest: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    tmp.chmod(default_mode(directory=True))  # mkdtemp makes 0700; the finished directory gets the usual permissions
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


def output_complete(path: str | os.PathLike) -> bool:
    """True when an output written atomically is in place: a file, or a non-empty directory (``--skip-existing``)."""
    p = Path(path)
    return p.is_file() or (p.is_dir() and any(p.iterdir()))


def _temp_pattern(name_regex: str) -> re.Pattern[str]:
    """Names of the temporaries ``temp_sibling`` and ``atomic_dir`` make next to outputs matching ``name_regex``."""
    return re.compile(rf"^\.{name_regex}\.[A-Za-z0-9_]{{8}}\.tmp(\..*)?$")


def remove_stale_temps(dest: str | os.PathLike, any_name: bool = False) -> list[Path]:
    """Delete temporaries left next to ``dest`` by a killed run; call only while holding ``dest``'s lock.

    ``any_name``: ``dest`` is a directory the caller owns, and every temporary inside it goes.
    """
    d = Path(dest)
    folder = d if any_name else d.parent
    if not folder.is_dir():
        return []
    pattern = _temp_pattern(".+") if any_name else _temp_pattern(re.escape(d.name))
    removed = [p for p in folder.iterdir() if pattern.match(p.name)]
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return removed


_held_locks: set[Path] = set()
_held_guard = threading.Lock()


@contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<path>.lock`` while writing ``path``; a second run fails at once naming the holder.

    A lock left by a killed process (its PID no longer alive on this host) is taken over, and the temporaries
    that process left next to ``path`` are deleted. Re-entrant within one process: an inner ``output_lock`` of a
    path this process already holds is a no-op (the CLI may lock early, the library again where it writes).
    """
    dest = Path(path)
    lock = dest.parent / f"{dest.name}.lock"
    key = lock.resolve()
    with _held_guard:
        if key in _held_locks:
            nested = True
        else:
            nested = False
            _held_locks.add(key)
    if nested:
        yield lock
        return
    try:
        with parents_made(lock):  # a failed run leaves no empty folder behind
            me = f"{socket.gethostname()} {os.getpid()}"
            for _ in range(2):
                try:
                    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    try:
                        holder = lock.read_text().strip()
                    except FileNotFoundError:
                        continue  # released in between: try again
                    host, _, pid = holder.partition(" ")
                    if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
                        lock.unlink(missing_ok=True)
                        continue
                    raise LockedError(f"{dest} is being written by another sarkit run (pid {pid or '?'} on "
                                      f"{host or '?'}; lock file {lock}): wait for it to finish") from None
                with os.fdopen(fd, "w") as f:
                    f.write(me)
                break
            else:
                raise LockedError(f"could not take the lock {lock} for {dest}; another run keeps taking it")
            remove_stale_temps(dest)
            try:
                yield lock
            finally:
                lock.unlink(missing_ok=True)
    finally:
        with _held_guard:
            _held_locks.discard(key)


def cog_overview_factors(width: int, height: int, block: int = COG_BLOCK) -> list[int]:
    """Overview decimation factors 2, 4, 8, … until the coarsest level fits in one ``block`` (as GDAL's COG
    driver chooses them): factor 2ᵏ is added while the level before it, max(w, h)/2ᵏ⁻¹, exceeds ``block``."""
    factors: list[int] = []
    f = 1
    while -(-max(width, height) // f) > block:
        f *= 2
        factors.append(f)
    return factors


def write_cog(src_path: Path, dest: Path, overview_resampling: str = "average") -> None:
    """Convert a tiled scratch GeoTIFF into a Cloud-Optimized GeoTIFF at ``dest`` (GDAL's COG driver).

    512-pixel blocks, internal overviews, DEFLATE compression (``DEFLATE_LEVEL``) with the predictor that suits the
    data type. ``src_path`` is scratch: its overviews (``cog_overview_factors``, ``overview_resampling``) are built
    inside it, which the COG driver then copies instead of computing them through a compressed temporary file of
    its own (measured on a 4096² 3-band uint16 scene: 1.3 s instead of 2.2 s for the conversion).
    """
    from rasterio.enums import Resampling

    with rasterio.open(src_path, "r+") as src:
        dtype = src.dtypes[0]
        factors = cog_overview_factors(src.width, src.height)
        if factors and not src.overviews(1):
            src.build_overviews(factors, Resampling[overview_resampling.lower()])
    predictor = "FLOATING_POINT" if dtype.startswith("float") else "YES"
    rasterio.shutil.copy(
        src_path,
        dest,
        driver="COG",
        BLOCKSIZE=COG_BLOCK,
        COMPRESS="DEFLATE",
        LEVEL=DEFLATE_LEVEL,
        PREDICTOR=predictor,
        OVERVIEWS="AUTO",  # the source's overviews, built above
        OVERVIEW_RESAMPLING=overview_resampling.upper(),
        NUM_THREADS="ALL_CPUS",
        BIGTIFF="IF_SAFER",
    )
