"""Whole-scene translation: run an exported generator over a scene tile by tile and write one COG.

The scene is read in strips of one tile row (``tile`` rows, the full width) and never held whole. Tiles of a
strip go through the generator in batches; each prediction is added, times its blend weights
(``sarkit.infer.blend``), to an accumulator that covers only the rows still open. Rows that no later tile row
reaches are final: they are normalised (weighted sum / weight sum), decoded to physical units and written to a
tiled temporary GeoTIFF next to the output, which is finally converted to a Cloud-Optimized GeoTIFF and renamed
into place. Memory is therefore bounded by a few strips whatever the scene size. The next strips are read in a
background thread while the generator runs and finished rows are written in another, both at a low priority
(``devices.BACKGROUND_NICE``) so that the generator's threads keep the CPU. With a GPU generator, predictions are
blended and encoded in a third thread, so that the main thread only feeds the GPU.

Nodata is carried, never hallucinated: an output pixel is nodata exactly where the input pixel is (SAR: any
band NaN or equal to the file's nodata; optical: any band's DN equal to the file's nodata, 0 when unset).

Scenes without a CRS are refused (``InputError`` naming ``--allow-ungeoreferenced``); with
``allow_ungeoreferenced`` the output is a GeoTIFF on the same pixel grid without a CRS.

Resolution: a checkpoint records the pixel size of its training tiles (``Contract.pixel_size``). A scene whose
pixels differ from it by more than ``RESOLUTION_TOL`` (compared in metres; degrees at the scene's latitude) is,
with ``--resolution resample`` (the default), read onto a grid of the same footprint at the training pixel size
(``raster.align`` warps it strip by strip: bilinear where it is upsampled, average where it is downsampled),
translated there, and the output resampled back onto the scene's grid (the other way round), with a warning;
``strict`` refuses it, ``ignore`` translates it as it is. Checkpoints without the record translate every scene as
it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning

from sarkit import __version__
from sarkit.infer.blend import BlendGrid, blend_grid, check_overlap, normalise
from sarkit.models.checkpoint import LoadedNetwork, load_network
from sarkit.devices import background_pool, configure_backends, resolve_device
from sarkit.errors import InputError, SarkitError
from sarkit.io import SCRATCH_PROFILE, atomic_file, check_output, open_raster, output_lock, temp_sibling, write_cog
from sarkit.raster.norm import DN_OFFSET_TAG, S2_SCALE, Normalization
from sarkit.raster.align import AlignedReader
from sarkit.raster.grid import (RESOLUTION_TOL, GridSpec, PixelSize, PixelWindow, pixel_size, pixel_size_ratio,
                                rescaled, subdivided)
from sarkit.raster.images import IMAGE_UNITS, is_image_dataset, is_image_file
from sarkit.raster.source import GeoTiffSource, RasterSource, SceneReader
from sarkit.raster.stac import is_stac_item
from sarkit.raster.stack import is_multi, open_source, scene_files, scene_stem
from sarkit.reporting import NULL_REPORTER, Reporter
from sarkit.devices import AmpMode
from sarkit.infer.engine import Contract, Predictor, check_batch_memory, load_predictor, resolve_amp_auto
from sarkit.infer.diffusion import SamplingOptions, check_sampling, predictor_contract

#: GDAL block cache while translating (bytes): bounds the memory GDAL may keep for dirty output blocks.
GDAL_CACHE_BYTES = 16 << 20
#: Rows per block of the temporary GeoTIFF; finished rows are written in whole block rows.
TEMP_BLOCK = 256
#: Strips read ahead of the one the generator is on (each costs a strip of input memory; two instead of one gained
#: nothing measurable on a 2-core CPU and raised the 8192²/2048² peak-memory ratio from 1.21 to 1.24).
READ_AHEAD = 1
#: File name endings of what translate writes: a Cloud-Optimized GeoTIFF, whatever ``--format``, or a PNG.
OUTPUT_SUFFIXES = (".tif", ".tiff", ".png")


def _parse_choice(cls: type[Enum], value: Any, option: str) -> Any:
    """A member of the str enum ``cls`` from itself or its exact name; ``InputError`` naming the choices."""
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        raise InputError(f"{option} must be one of {', '.join(m.value for m in cls)}, got {value!r}") from None


class OutputFormat(str, Enum):
    """``--format``: physical units (float32 dB, uint16 DN) or 8 bits of the model range."""

    NATIVE = "native"
    RGB8 = "rgb8"

    @classmethod
    def parse(cls, value: "str | OutputFormat") -> "OutputFormat":
        """A format from its exact name; ``InputError`` naming the choices otherwise."""
        return _parse_choice(cls, value, "--format")


class ResolutionMode(str, Enum):
    """``--resolution``: what to do with a scene whose pixel size is not the checkpoint's training pixel size:
    resample it to that size (and the output back), refuse it, or translate it as it is."""

    RESAMPLE = "resample"
    STRICT = "strict"
    IGNORE = "ignore"

    @classmethod
    def parse(cls, value: "str | ResolutionMode") -> "ResolutionMode":
        """A mode from its exact name; ``InputError`` naming the choices otherwise."""
        return _parse_choice(cls, value, "--resolution")


@dataclass(frozen=True)
class TranslateOptions:
    """Options of ``sarkit translate``, checked on construction (``InputError`` for impossible values).

    ``tile`` None = the checkpoint's tile size; ``amp`` auto = bf16 on CUDA (where supported) and on a CPU with
    native bf16 (AVX512-BF16 or AMX), else off; bf16/fp16 are checked against fp32 on the first batch
    (``AMP_MIN_PSNR_DB``) and dropped for fp32, with a warning, where they fall short;
    ``format`` native (physical units) or rgb8 (8-bit of the model range); ``prefetch`` reads the next strip
    and writes finished rows in background threads (None = where the generator leaves the CPU free: a GPU, see
    ``_io_in_threads``); ``compile`` runs the generator through ``torch.compile`` (see ``NetworkPredictor``).
    ``resolution`` resample, strict or ignore (see the module docstring).
    ``amp``, ``format`` and ``resolution`` take their enum or its name. ``sampling``: how a diffusion checkpoint
    samples (``--sampler``, ``--steps``, ``--eta``, ``--seed``, ``--cache-threshold``; None = its defaults; given
    for a one-call generator, an ``InputError``). ``tile``, ``device``, ``amp``, ``compile`` and ``sampling`` say
    how a checkpoint is loaded; a ready ``Predictor`` given to ``translate_scene`` brings its own.
    """

    tile: int | None = None
    overlap: int = 64
    batch_size: int = 8
    device: str = "auto"
    amp: AmpMode = AmpMode.AUTO
    format: OutputFormat = OutputFormat.NATIVE
    overwrite: bool = False
    allow_ungeoreferenced: bool = False
    prefetch: bool | None = None
    compile: bool = False
    resolution: ResolutionMode = ResolutionMode.RESAMPLE
    sampling: SamplingOptions | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", OutputFormat.parse(self.format))
        object.__setattr__(self, "resolution", ResolutionMode.parse(self.resolution))
        object.__setattr__(self, "amp", AmpMode.parse(self.amp, default="auto"))
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if self.tile is not None and (isinstance(self.tile, bool) or not isinstance(self.tile, int)):
            raise InputError(f"--tile must be a whole number of pixels, got {self.tile!r}")
        if self.tile is not None:
            check_overlap(self.tile, self.overlap)
        elif self.overlap < 0:
            raise InputError(f"--overlap must be ≥ 0, got {self.overlap}")


@dataclass(frozen=True)
class TranslateSummary:
    """What one translation did: tiles run, wall time, throughput."""

    scene: Path
    out: Path
    tiles: int
    seconds: float

    @property
    def tiles_per_s(self) -> float:
        """Tiles per second: tiles / seconds."""
        return self.tiles / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        """One-line summary for people."""
        return (f"translated {self.scene.name}: {self.tiles} tiles in {self.seconds:.1f} s "
                f"({self.tiles_per_s:.2f} tiles/s) → {self.out}")


@dataclass
class SceneResult:
    """Outcome of one scene of ``translate_many``: a summary, or the one-line error that stopped it."""

    scene: Path
    out: Path
    summary: TranslateSummary | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# ------------------------------------------------------------------------------------------------ validation
def _check_out(scene: Path, out: Path, overwrite: bool) -> None:
    """Existing output without overwrite → ``OutputExistsError``; output = input, a name that is not a GeoTIFF's
    (``OUTPUT_SUFFIXES``) or a folder that cannot be created or written → InputError. Creates nothing."""
    if out.resolve() == scene.resolve():
        raise InputError(f"output would replace the input scene {scene}; choose another --out")
    if out.suffix.lower() not in OUTPUT_SUFFIXES and not out.is_dir():
        raise InputError(f"--out {out}: translate writes a Cloud-Optimized GeoTIFF (--format native or rgb8) or a "
                         f"PNG; name it {out.stem}.tif or {out.stem}.png (other file formats are not written)")
    check_output(out, overwrite)
    if out.exists() and out.is_dir():
        raise InputError(f"output is a directory: {out}; give a .tif file name")
    parent = out.parent if str(out.parent) else Path(".")
    ancestor = next(p for p in (parent, *parent.parents) if p.exists() or p == Path(p.anchor or "."))
    if not ancestor.is_dir():
        raise InputError(f"cannot create output directory {parent}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK):
        raise InputError(f"cannot write to {ancestor}: permission denied")


def _make_parent(out: Path) -> None:
    """Create the output's folder (checked by ``_check_out``) once every check has passed, so that a refused run
    leaves no empty folder behind."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out.parent}: {exc.strerror}") from None


# ------------------------------------------------------------------------------------------------ output
def _check_png(out: Path, out_norm: Normalization, fmt: OutputFormat) -> None:
    """``InputError`` for a PNG output of float values (SAR dB of ``--format native`` from a Sentinel checkpoint):
    PNG holds 8- or 16-bit integers only."""
    if out.suffix.lower() == ".png" and fmt == OutputFormat.NATIVE and out_norm.units != IMAGE_UNITS \
            and out_norm.modality == "sar":
        raise InputError(f"--out {out}: the output is SAR in dB (float32), which a PNG cannot hold; name it "
                         f"{out.stem}.tif, or write 8 bits for display with --format rgb8")


def _write_final(tmp: Path, dest: Path, out: Path, **cog: Any) -> None:
    """The finished translation ``tmp`` as ``dest``: a PNG when ``out`` is named ``.png`` (tags as text chunks,
    no sidecar), else a Cloud-Optimized GeoTIFF (``write_cog``)."""
    if out.suffix.lower() != ".png":
        write_cog(tmp, dest, **cog)
        return
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        rasterio.shutil.copy(str(tmp), str(dest), driver="PNG", WRITE_METADATA_AS_TEXT="YES")


def _image_dtype(out_norm: Normalization) -> str:
    """Data type of image values under an image normalisation: uint8 for 0–255, uint16 for 0–65535."""
    return "uint8" if max(out_norm.hi) <= 255 else "uint16"


def _encode_output(y: np.ndarray, invalid: np.ndarray, out_norm: Normalization, fmt: OutputFormat) -> np.ndarray:
    """Blended model-range rows (C, h, W) → output pixels: dB float32 (NaN nodata), uint16 DN (0) or rgb8 (0);
    image values (``_image_dtype``, 0 where invalid) under an image normalisation."""
    if fmt == OutputFormat.NATIVE and out_norm.units == IMAGE_UNITS:
        v = np.rint(out_norm.decode(y))
        v[:, invalid] = 0
        return v.astype(_image_dtype(out_norm))
    if fmt == OutputFormat.RGB8:
        v = np.rint((np.clip(y, -1.0, 1.0) + 1.0) * 0.5 * 255.0)
        v = np.clip(np.nan_to_num(v, nan=0.0), 1, 255).astype(np.uint8)
        v[:, invalid] = 0
        return v
    if out_norm.modality == "optical":
        return _model_to_dn(y, invalid, out_norm)
    phys = out_norm.decode(y)
    phys[:, invalid] = np.nan
    return phys.astype(np.float32)


def _model_to_dn(y: np.ndarray, invalid: np.ndarray, out_norm: Normalization) -> np.ndarray:
    """Model range → uint16 DN in one affine pass: ``DN = rint(x·a + b)`` with ``a = 10000·(hi − lo)/2`` and
    ``b = 10000·(lo + hi)/2 − offset`` (decode, then ``reflectance_to_dn``), x clipped to [-1, 1], valid DN kept in
    [1, 65535], 0 where ``invalid``."""
    lo, hi = (np.asarray(v, dtype=np.float64).reshape(-1, 1, 1) for v in (out_norm.lo, out_norm.hi))
    a = (S2_SCALE * (hi - lo) / 2.0).astype(np.float32)
    b = (S2_SCALE * (lo + hi) / 2.0 - out_norm.offset).astype(np.float32)
    v = np.clip(y, -1.0, 1.0)
    v *= a
    v += b
    np.rint(v, out=v)
    np.clip(v, 1.0, 65535.0, out=v)
    v[:, invalid] = 0.0
    return v.astype(np.uint16)


def _output_profile(grid: GridSpec, out_norm: Normalization, fmt: OutputFormat) -> dict[str, Any]:
    """Profile of a temporary tiled (uncompressed) GeoTIFF: on ``grid``, the output dtype and nodata."""
    if fmt == OutputFormat.RGB8:
        dtype, nodata = "uint8", 0
    elif out_norm.units == IMAGE_UNITS:  # image values: every value is data (inputs of images have no nodata)
        dtype, nodata = _image_dtype(out_norm), None
    elif out_norm.modality == "optical":
        dtype, nodata = "uint16", 0
    else:
        dtype, nodata = "float32", float("nan")
    prof: dict[str, Any] = {**SCRATCH_PROFILE, "blockxsize": TEMP_BLOCK, "blockysize": TEMP_BLOCK,
                            "dtype": dtype, "nodata": nodata, "count": out_norm.channels,
                            "width": grid.width, "height": grid.height, "transform": grid.transform}
    if grid.crs is not None:
        prof["crs"] = grid.crs
    if fmt == OutputFormat.RGB8 and out_norm.channels == 3:
        prof["photometric"] = "RGB"
    return prof


class _Ordered:
    """Runs calls in submission order on a one-thread pool, at most ``depth`` queued (bounded memory); inline
    when there is no pool. A failed call's error is re-raised by a later ``submit`` or by ``wait``."""

    def __init__(self, pool: ThreadPoolExecutor | None, depth: int = 2) -> None:
        self.pool = pool
        self.depth = depth
        self.futures: list[Future] = []

    def submit(self, fn: Any, *args: Any) -> None:
        if self.pool is None:
            fn(*args)
            return
        while self.futures and (self.futures[0].done() or len(self.futures) >= self.depth):
            self.futures.pop(0).result()
        self.futures.append(self.pool.submit(fn, *args))

    def wait(self) -> None:
        """Wait for every queued call, re-raising the first error."""
        while self.futures:
            self.futures.pop(0).result()

    def abort(self) -> None:
        """Wait for queued calls after a failure, ignoring their errors (the original error matters)."""
        for f in self.futures:
            f.exception()
        self.futures = []


class _RowWriter:
    """Writes finished rows to the temporary GeoTIFF in whole block rows, from a background thread."""

    def __init__(self, dst: rasterio.io.DatasetWriter, pool: ThreadPoolExecutor | None) -> None:
        self.dst = dst
        self.queue = _Ordered(pool)
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0
        self.next_row = 0

    def _write(self, row: int, data: np.ndarray) -> None:
        self.dst.write(data, window=rasterio.windows.Window(0, row, data.shape[2], data.shape[1]))

    def _submit(self, data: np.ndarray) -> None:
        row = self.next_row
        self.next_row += data.shape[1]
        self.queue.submit(self._write, row, data)

    def add(self, rows: np.ndarray) -> None:
        """Queue rows (C, h, W); write every whole block row collected so far."""
        self.pending.append(rows)
        self.pending_rows += rows.shape[1]
        if self.pending_rows >= TEMP_BLOCK:
            data = np.concatenate(self.pending, axis=1)
            n = (data.shape[1] // TEMP_BLOCK) * TEMP_BLOCK
            self._submit(np.ascontiguousarray(data[:, :n]))
            rest = data[:, n:]
            self.pending = [rest] if rest.shape[1] else []
            self.pending_rows = rest.shape[1]

    def abort(self) -> None:
        """Wait for queued writes after a failure, ignoring their errors."""
        self.queue.abort()

    def finish(self) -> None:
        """Write what is left and wait for every queued write (re-raising a write error)."""
        if self.pending_rows:
            self._submit(np.concatenate(self.pending, axis=1))
            self.pending, self.pending_rows = [], 0
        self.queue.wait()


class _StripBlender:
    """The blend accumulator over the rows still open (one tile high, the scene's width).

    Per strip ``i``: ``start(i)`` slides it down to the strip's first row, ``add`` adds predictions times their
    blend weights ``a(r)·b(c)``, ``finish(i, valid)`` normalises the rows no later strip reaches, encodes them and
    hands them to the writer. Accumulators are float32: at most four windows add up at a pixel, so float32 keeps
    ~1e-7 relative error while halving the buffers' memory and bandwidth against float64.
    """

    def __init__(self, grid: BlendGrid, out_norm: Normalization, fmt: OutputFormat, writer: _RowWriter) -> None:
        self.grid = grid
        self.out_norm = out_norm
        self.fmt = fmt
        self.writer = writer
        self.acc = np.zeros((out_norm.channels, grid.tile, grid.width), dtype=np.float32)
        self.wsum = np.zeros((grid.tile, grid.width), dtype=np.float32)
        self.col_w = [w.astype(np.float32) for w in grid.col_weights]
        self.row_w: np.ndarray | None = None
        self.base = 0  # scene row of acc[:, 0]
        self.valid_pixels = 0

    def start(self, i: int) -> None:
        """Slide the accumulator down so that it starts at strip ``i``'s first row."""
        r = self.grid.row_offsets[i]
        shift = r - self.base
        if shift:
            keep = self.grid.tile - shift
            self.acc[:, :keep] = self.acc[:, shift:]
            self.acc[:, keep:] = 0.0
            self.wsum[:keep] = self.wsum[shift:]
            self.wsum[keep:] = 0.0
            self.base = r
        self.row_w = self.grid.row_weights[i].astype(np.float32)[:, None]

    def add(self, cols: list[int], h: int, pred: np.ndarray) -> None:
        """Add predictions (N, C, T, T) of the strip's tiles in tile columns ``cols``, their first ``h`` rows."""
        g = self.grid
        for j, y in zip(cols, pred):
            c = g.col_offsets[j]
            w = min(g.tile, g.width - c)
            wts = self.row_w[:h] * self.col_w[j][:w]  # outer product a(r)·b(c), float32
            self.acc[:, :h, c:c + w] += y[:, :h, :w] * wts
            self.wsum[:h, c:c + w] += wts

    def finish(self, i: int, valid: np.ndarray) -> None:
        """Normalise, encode and write strip ``i``'s final rows (those before the next strip's first row)."""
        r = self.grid.row_offsets[i]
        end = self.grid.row_offsets[i + 1] if i + 1 < len(self.grid.row_offsets) else self.grid.height
        n = end - r
        y = normalise(self.acc[:, :n], self.wsum[:n])
        ok = valid[:n]
        self.valid_pixels += int(ok.sum())
        self.writer.add(_encode_output(y, ~ok | np.isnan(y).any(axis=0), self.out_norm, self.fmt))


# ------------------------------------------------------------------------------------------------ the loop
def _run_scene(reader: SceneReader, grid: BlendGrid, predictor: Predictor, blender: _StripBlender,
               batch_size: int, read_pool: ThreadPoolExecutor | None, blend: _Ordered, task: Any) -> None:
    """The strip loop: read the next strips (``read_pool``) while the predictor runs on strip i's tiles; blend,
    encode and write predictions in order through ``blend`` (inline, or another thread). Each tile's seed is its
    row-major index in the window grid (whatever the batch it travels in), its window its place in the scene;
    ``task`` advances by tile network evaluations (tiles × the predictor's steps)."""
    tile, width = grid.tile, grid.width
    n_rows, n_cols = len(grid.row_offsets), len(grid.col_offsets)
    s = predictor.scale
    spans = [(c, min(tile, width - c)) for c in grid.col_offsets]  # (first column, width) of each tile column

    def read(i: int) -> tuple[np.ndarray, np.ndarray]:
        r = grid.row_offsets[i]
        return reader.strip(r, min(tile, grid.height - r))

    ahead: list[Future] = []  # reads of the next READ_AHEAD strips, in order
    for i in range(n_rows):
        while read_pool is not None and len(ahead) <= READ_AHEAD and i + len(ahead) < n_rows:
            ahead.append(read_pool.submit(read, i + len(ahead)))
        x, valid = ahead.pop(0).result() if ahead else read(i)
        blend.submit(blender.start, i)
        h = x.shape[1]
        jobs = [j for j, (c, w) in enumerate(spans) if valid[:, c:c + w].any()]
        if len(jobs) < len(spans):  # all-nodata tiles: their pixels are nodata in the output whatever it predicts
            task.advance((len(spans) - len(jobs)) * predictor.steps)
        for k in range(0, len(jobs), batch_size):
            chunk = jobs[k:k + batch_size]
            batch = np.stack([x[:, :, spans[j][0]:spans[j][0] + spans[j][1]] for j in chunk])
            windows = [PixelWindow(grid.row_offsets[i], spans[j][0], h, spans[j][1]) for j in chunk]
            blend.submit(blender.add, chunk, h * s,
                         predictor(batch, [i * n_cols + j for j in chunk], windows, task.advance))
        blend.submit(blender.finish, i, finer_mask(valid, s))


def finer_mask(valid: np.ndarray, scale: int) -> np.ndarray:
    """A (h, W) mask on the grid ``scale`` times finer: each pixel's value repeated over its ``scale``×``scale``
    sub-pixels (an output pixel is nodata exactly where the input pixel it lies in is)."""
    return valid if scale == 1 else valid.repeat(scale, axis=0).repeat(scale, axis=1)


def _open_scene(scene: Path, allow_ungeoreferenced: bool) -> rasterio.DatasetReader:
    """Open the scene; refuse one without a CRS unless ``allow_ungeoreferenced`` or it is an image (a PNG or JPEG
    file, an image tile or translation: never georeferenced, ``is_image_dataset``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        src = open_raster(scene, "scene")
    if src.crs is None and not allow_ungeoreferenced and not is_image_dataset(src):
        src.close()
        raise InputError(f"scene {scene} has no CRS; assign one (gdal_edit.py -a_srs EPSG:XXXX) or pass "
                         f"--allow-ungeoreferenced to write an output on the same pixel grid without a CRS")
    if src.height == 0 or src.width == 0:
        src.close()
        raise InputError(f"scene {scene} is empty")
    return src


def _check_predictor(predictor: Predictor, opts: TranslateOptions) -> None:
    """``InputError`` for a predictor the scene runner cannot use: a ``tile`` option other than the ready
    predictor's tile, or a batch of tiles larger than the device's memory (``check_batch_memory``, before anything
    is allocated). A predictor of output scale s > 1 writes on the input's bounds with pixels s times smaller."""
    if opts.tile is not None and opts.tile != predictor.tile:
        raise InputError(f"--tile {opts.tile} differs from the predictor's tile ({predictor.tile}); load the "
                         f"predictor with that tile")
    check_batch_memory(predictor.contract, opts.batch_size, predictor.device)


# ------------------------------------------------------------------------------------------------ resolution
def resolution_ratio(grid: GridSpec, trained: PixelSize | None) -> tuple[PixelSize | None, tuple[float, float] | None]:
    """The scene grid's pixel size and its (x, y) ratios to the training pixel size ``trained`` (None when either
    is unknown or they cannot be compared)."""
    have = pixel_size(grid)
    return have, (None if have is None or trained is None else pixel_size_ratio(have, trained))


def check_resolution(grid: GridSpec, contract: Contract, mode: ResolutionMode, scene: Path) -> GridSpec | None:
    """The grid to translate the scene on: None for its own (no training pixel size recorded, ``ignore``, sizes
    within ``RESOLUTION_TOL``, or not comparable); with ``resample`` the scene's footprint at the training pixel
    size; ``InputError`` with ``strict`` when they differ."""
    trained = contract.pixel_size
    if trained is None or mode is ResolutionMode.IGNORE:
        return None
    have, ratio = resolution_ratio(grid, trained)
    if ratio is None or all(abs(r - 1.0) <= RESOLUTION_TOL for r in ratio):
        return None
    assert have is not None
    if mode is ResolutionMode.STRICT:
        raise InputError(f"scene {scene.name} has {have.describe()} pixels but the checkpoint was trained on "
                         f"{trained.describe()} pixels (--resolution strict); resample the scene to "
                         f"{trained.describe()}, or use --resolution resample to let translate do it")
    return rescaled(grid, ratio[0], ratio[1])


def _plan_resolution(grid: GridSpec, contract: Contract, opts: TranslateOptions, scene: Path,
                     reporter: Reporter) -> GridSpec | None:
    """``check_resolution``, with a warning saying what is done when the scene is resampled, or that its pixel
    size cannot be compared with the training pixel size."""
    work = check_resolution(grid, contract, opts.resolution, scene)
    trained = contract.pixel_size
    if trained is None or opts.resolution is ResolutionMode.IGNORE:
        return work
    have, ratio = resolution_ratio(grid, trained)
    if ratio is None:
        seen = f"{have.describe()} pixels" if have is not None else "no georeferencing"
        reporter.warn(f"scene {scene.name} ({seen}) cannot be compared with the checkpoint's training pixel size "
                      f"({trained.describe()}); translating it as it is")
    elif work is not None:
        assert have is not None
        reporter.warn(f"scene {scene.name} has {have.describe()} pixels, the checkpoint was trained on "
                      f"{trained.describe()}: translating it resampled to {trained.describe()} "
                      f"({work.width}×{work.height} pixels) and writing the output back on the scene's grid "
                      f"(--resolution strict refuses such scenes, ignore translates them as they are)")
    return work


def _resamplings(scene: GridSpec, work: GridSpec) -> tuple[Resampling, Resampling]:
    """(scene → work grid, output → scene grid) resampling: bilinear where a raster is upsampled, average where
    it is downsampled."""
    finer = work.width * work.height > scene.width * scene.height
    return (Resampling.bilinear, Resampling.average) if finer else (Resampling.average, Resampling.bilinear)


def _work_reader(src: rasterio.DatasetReader, norm: Normalization, work: GridSpec, resampling: Resampling,
                 scene: Path) -> GeoTiffSource:
    """The scene's input bands read onto the work grid (warped strip by strip, never held whole)."""
    return GeoTiffSource(src, norm.modality, units=norm.units, default_dn_offset=norm.offset, grid=work,
                         resampling=resampling, label=f"scene {scene.name}", unit_bands=norm.bands,
                         ref_name="the training pixel size")


def _open_multi_scene(scene: Path, norm: Normalization, work: GridSpec | None, resampling: Resampling | None,
                      opts: TranslateOptions) -> RasterSource:
    """A scene of several files (one per polarisation or band, at any resolution), with the
    checkpoint's input bands, on its finest file's grid or on ``work``; refused without a CRS unless
    ``allow_ungeoreferenced``."""
    label = f"scene {','.join(f.name for f in scene_files(scene))}"
    source = open_source(scene, norm.modality, units=norm.units, default_dn_offset=norm.offset, grid=work,
                         resampling=resampling or Resampling.bilinear, label=label, unit_bands=norm.bands,
                         ref_name="the training pixel size" if work is not None else None)
    if not source.grid.georeferenced and not opts.allow_ungeoreferenced:
        source.close()
        raise InputError(f"{label} has no CRS; assign one (gdal_edit.py -a_srs EPSG:XXXX) or pass "
                         f"--allow-ungeoreferenced to write an output on the same pixel grid without a CRS")
    return source


def _resample_back(work_tif: Path, dest: Path, src: rasterio.DatasetReader, in_norm: Normalization,
                   resampling: Resampling, reporter: Reporter, scale: int = 1) -> None:
    """Copy the translation ``work_tif`` (on the work grid, ``scale`` times finer) onto the scene's grid
    (``scale`` times finer) into the scratch GeoTIFF ``dest``, in block rows, with its descriptions, colours and
    tags; nodata wherever the scene is nodata."""
    scene_grid = src.grid if isinstance(src, RasterSource) else GridSpec.of(src)
    grid = subdivided(scene_grid, scale)
    valid_reader = SceneReader(src, in_norm)
    scene_name = src.label if isinstance(src, RasterSource) else f"scene {Path(src.name).name}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(work_tif) as work_ds:
            fill = work_ds.nodata
            prof = {**work_ds.profile, "width": grid.width, "height": grid.height, "transform": grid.transform}
            rows = range(0, grid.height, TEMP_BLOCK)
            with AlignedReader(work_ds, grid, resampling, fill, what="the translation",
                               ref_name=scene_name) as back, \
                    rasterio.open(dest, "w", **prof) as dst, \
                    reporter.task("Resampling onto the scene's grid", total=len(rows)) as task:
                dst.descriptions = work_ds.descriptions
                dst.colorinterp = work_ds.colorinterp
                dst.update_tags(**work_ds.tags())
                for r in rows:
                    win = PixelWindow(r, 0, min(TEMP_BLOCK, grid.height - r), grid.width)
                    data = back.read(win, dtype=work_ds.dtypes[0])
                    r0, r1 = r // scale, -(-(r + win.height) // scale)
                    valid = finer_mask(valid_reader.physical(r0, r1 - r0).valid, scale)
                    data[:, ~valid[r - r0 * scale:r - r0 * scale + win.height]] = fill
                    dst.write(data, window=win.to_rasterio())
                    task.advance(1)


def translate_scene(scene: str | Path, checkpoint: str | Path | LoadedNetwork | Predictor, out: str | Path,
                    opts: TranslateOptions = TranslateOptions(), reporter: Reporter = NULL_REPORTER
                    ) -> TranslateSummary:
    """Translate one scene with a predictor into a COG: a generator checkpoint (a RUN directory, a file, or a
    loaded network, loaded with ``opts``' tile, device, amp and compile) or a ready ``Predictor``.

    Raises ``OutputExistsError`` before any work when ``out`` exists without ``opts.overwrite``; ``InputError``
    for unusable input (missing bands, all nodata, no CRS without ``allow_ungeoreferenced``, a tile the network cannot run on or whose batch would not fit in memory, another pixel
    size than the checkpoint's with ``resolution`` strict). On any failure (Ctrl-C included) neither ``out`` nor
    temporary files are left behind.
    """
    t0 = time.perf_counter()
    scene, out = Path(scene), Path(out)
    _check_out(scene, out, opts.overwrite)
    ready = isinstance(checkpoint, Predictor)
    device = checkpoint.device if ready else resolve_device(opts.device)
    amp = None if ready else resolve_amp_auto(opts.amp, device)
    configure_backends(device)  # one intra-op thread per core (OMP_NUM_THREADS wins), denormals flushed
    multi = is_multi(scene)  # several files of one raster: opened once the bands are known
    src: Any = None if multi else _open_scene(scene, opts.allow_ungeoreferenced)
    source: RasterSource | None = None
    try:
        predictor = checkpoint if ready else load_predictor(checkpoint, device, amp, reporter, tile=opts.tile,
                                                            compile=opts.compile, sampling=opts.sampling)
        _check_predictor(predictor, opts)
        in_norm, out_norm = predictor.in_norm, predictor.out_norm
        _check_png(out, out_norm, opts.format)
        if multi:
            src = _open_multi_scene(scene, in_norm, None, None, opts)
        scene_grid = src.grid if multi else GridSpec.of(src)
        work = _plan_resolution(scene_grid, predictor.contract, opts, scene, reporter)
        to_work, to_scene = _resamplings(scene_grid, work) if work is not None else (None, None)
        if work is not None:
            source = (_open_multi_scene(scene, in_norm, work, to_work, opts) if multi
                      else _work_reader(src, in_norm, work, to_work, scene))
        reader = SceneReader(source if source is not None else src, in_norm)
        grid_spec = work or scene_grid
        grid = blend_grid(grid_spec.height, grid_spec.width, predictor.tile, opts.overlap)
        _make_parent(out)
        with output_lock(out), atomic_file(out, overwrite=opts.overwrite) as cog_tmp:
            tmp = temp_sibling(out, ".tif")
            back = temp_sibling(out, ".tif")
            reader.report_units(reporter)  # once the output is ours: a refused run prints only its error
            try:
                _write_translation(grid_spec, reader, grid, predictor, tmp, opts, reporter, scene)
                if work is not None:
                    _resample_back(tmp, back, src, in_norm, to_scene, reporter, predictor.scale)
                    tmp.unlink()
                with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):  # GDAL's default (5 % of RAM) grows with
                    _write_final(back if work is not None else tmp, cog_tmp, out,  # the scene: keep it bounded
                              overview_resampling="nearest"
                              if opts.format == OutputFormat.NATIVE and out_norm.modality == "optical"
                              else "average")
            finally:
                tmp.unlink(missing_ok=True)
                back.unlink(missing_ok=True)
    finally:
        if source is not None:
            source.close()
        if src is not None:
            src.close()
    summary = TranslateSummary(scene, out, grid.n_tiles, time.perf_counter() - t0)
    return summary


def load_chain(checkpoints: Sequence[str | Path | LoadedNetwork], opts: TranslateOptions = TranslateOptions(),
               reporter: Reporter = NULL_REPORTER) -> Predictor:
    """Checkpoints run one after the other (``--checkpoint A --then B …``) as one ``ChainPredictor`` on
    ``opts``' device and precision: ``opts.tile`` applies to the first, the sampling options to every diffusion
    checkpoint of the chain (``InputError`` when none is one); one checkpoint gives its own predictor."""
    from sarkit.infer.diffusion import is_diffusion
    from sarkit.infer.engine import ChainPredictor

    device = resolve_device(opts.device)
    amp = resolve_amp_auto(opts.amp, device)
    nets = [c if isinstance(c, LoadedNetwork) else load_network(c, "generator", device) for c in checkpoints]
    if not nets:
        raise InputError("give at least one --checkpoint")
    if not any(is_diffusion(n) for n in nets):
        check_sampling(nets[0], opts.sampling)
    stages = [load_predictor(n, device, amp, reporter, tile=opts.tile if k == 0 else None, compile=opts.compile,
                             sampling=opts.sampling if is_diffusion(n) else None) for k, n in enumerate(nets)]
    return stages[0] if len(stages) == 1 else ChainPredictor(stages)


def translate_chain(scene: str | Path, checkpoints: Sequence[str | Path | LoadedNetwork], out: str | Path,
                    opts: TranslateOptions = TranslateOptions(), reporter: Reporter = NULL_REPORTER
                    ) -> TranslateSummary:
    """``translate_scene`` with the checkpoints run one after the other (``load_chain``), e.g. a SAR→optical
    generator then an sr-diffusion checkpoint: a super-resolved optical rendering of a Sentinel-1 scene. The
    output is checked before any checkpoint is loaded."""
    _check_out(Path(scene), Path(out), opts.overwrite)
    chain = load_chain(checkpoints, opts, reporter)
    return translate_scene(scene, chain, out, dataclasses.replace(opts, tile=None), reporter)


def _io_in_threads(device: torch.device) -> bool:
    """Whether strips are read and rows written in background threads by default: where the generator leaves the
    CPU free (a GPU). On a CPU the generator's threads already fill every core and a background thread's work
    delays them about second for second (the kernel does not keep even a nice-19 thread off their cores), while
    between batches the same work runs on one core and GDAL's COG copy on all. Measured on 2 cores, 4096²,
    three A/B runs of 5 interleaved rounds: end-to-end median 10.80/10.98/10.63 s with read and write threads,
    10.56/10.47/10.56 s without."""
    return device.type != "cpu"


def _blend_in_thread(device: torch.device) -> bool:
    """Whether predictions are blended in a background thread: where the generator leaves the CPU free (a GPU).
    On a CPU that thread competes with the generator's: measured on 2 cores, 4096², the generator's time inside
    translate was 1.04 × its bare time with blending inline and 1.11 × with blending in a background thread."""
    return device.type != "cpu"


def _write_translation(spec: GridSpec, reader: SceneReader, grid: BlendGrid, predictor: Predictor,
                       tmp: Path, opts: TranslateOptions, reporter: Reporter, scene: Path) -> None:
    """Run the strip loop into the temporary tiled GeoTIFF ``tmp`` on the grid ``spec`` (the scene's, or the work
    grid at the training pixel size) with descriptions and provenance tags. ``grid`` holds the input windows; a
    predictor of scale s > 1 writes on ``subdivided(spec, s)`` (same bounds, pixels s times smaller) and its
    predictions are blended on ``grid.scaled(s)``."""
    in_norm, out_norm = predictor.in_norm, predictor.out_norm
    scale = predictor.scale
    profile = _output_profile(subdivided(spec, scale), out_norm, opts.format)
    io_threads = _io_in_threads(predictor.device) if opts.prefetch is None else opts.prefetch
    blend_thread = io_threads and _blend_in_thread(predictor.device)
    pools = [background_pool("sarkit-read") if io_threads else None,
             background_pool("sarkit-write") if io_threads else None,
             background_pool("sarkit-blend") if blend_thread else None]
    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", **profile) as dst:
                dst.descriptions = tuple(out_norm.bands)
                if opts.format == OutputFormat.RGB8 and out_norm.channels == 3:
                    dst.colorinterp = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
                writer = _RowWriter(dst, pools[1])
                blender = _StripBlender(grid.scaled(scale), out_norm, opts.format, writer)
                blend = _Ordered(pools[2])
                try:
                    with reporter.task("Translating", total=grid.n_tiles * predictor.steps) as task:
                        _run_scene(reader, grid, predictor, blender, opts.batch_size, pools[0], blend, task)
                        blend.wait()
                except BaseException:
                    blend.abort()
                    writer.abort()
                    raise
                writer.finish()
                for note in predictor.run_notes():
                    reporter.info(f"{scene.name}: {note}")
                dst.update_tags(**predictor.provenance(),  # last: the checkpoint hash is computed meanwhile
                                sarkit_version=__version__,
                                source=scene.name, format=opts.format.value, tile=str(grid.tile),
                                overlap=str(grid.overlap), out_modality=out_norm.modality,
                                in_bands=",".join(in_norm.bands))
                if scale != 1:  # the output grid is finer than the input's
                    dst.update_tags(scale=str(scale))
                if (base := getattr(getattr(predictor, "net", None), "meta", {}).get("baselines")) is not None:
                    dst.update_tags(baselines=json.dumps(base))  # the training fit, for sarkit eval's baselines
                if predictor.contract.pixel_size is not None:  # the resolution the generator ran at
                    dst.update_tags(translated_pixel_size=(pixel_size(spec) or predictor.contract.pixel_size)
                                    .describe())
                if out_norm.units == IMAGE_UNITS and opts.format == OutputFormat.NATIVE:  # image values, no CRS
                    dst.update_tags(units=IMAGE_UNITS, value_range=f"0,{max(out_norm.hi):.0f}")
                elif out_norm.modality == "optical" and opts.format == OutputFormat.NATIVE:  # how to read the DN
                    dst.update_tags(**{DN_OFFSET_TAG: f"{out_norm.offset:g}"})
    finally:
        for p in pools:
            if p is not None:
                p.shutdown(wait=True, cancel_futures=True)
    if blender.valid_pixels == 0:
        raise InputError(f"scene {scene} holds only nodata pixels; nothing to translate")


# ------------------------------------------------------------------------------------------------ many scenes
def output_name(scene: Path, out_dir: Path) -> Path:
    """Output path of a scene in ``translate_many``: ``out_dir/<stem>_translated.tif`` (``.png`` for an image
    file: a PNG in gives a PNG out)."""
    return out_dir / f"{scene_stem(scene)}_translated{'.png' if is_image_file(scene) else '.tif'}"


def _translate_task(scene: str, checkpoint: str, out: str, opts: TranslateOptions) -> TranslateSummary:
    """One scene on a dask worker: the worker loads the checkpoint itself."""
    return translate_scene(scene, checkpoint, out, opts, NULL_REPORTER)


def _check_many(scenes: Sequence[Path], out_dir: Path, opts: TranslateOptions) -> list[Path]:
    """Validate every scene and output before starting (``InputError`` → exit 2); returns the outputs."""
    if not scenes:
        raise InputError("no scenes given")
    outs = [output_name(s, out_dir) for s in scenes]
    dupes = sorted({o.name for o in outs if outs.count(o) > 1})
    if dupes:
        raise InputError(f"several scenes would write the same output ({', '.join(dupes)}); rename them")
    for s, o in zip(scenes, outs):
        for f in scene_files(s):
            if not is_stac_item(f):  # an Item's assets are opened with the scene (sarkit.raster.stac)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    open_raster(f, "scene").close()
        _check_out(s, o, opts.overwrite)
    return outs


def _check_contract(scenes: Sequence[Path], net: LoadedNetwork, opts: TranslateOptions,
                    device: torch.device) -> None:
    """Before starting several scenes: the tile suits the network, a batch fits in memory, and with
    ``resolution`` strict every scene has the training pixel size (``InputError`` otherwise)."""
    check_sampling(net, opts.sampling)
    contract = predictor_contract(net, opts.tile)
    check_batch_memory(contract, opts.batch_size, device)
    if opts.resolution is ResolutionMode.STRICT:
        for s in scenes:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                if is_multi(s):
                    with _open_multi_scene(s, contract.in_norm, None, None, opts) as multi:
                        check_resolution(multi.grid, contract, opts.resolution, s)
                    continue
                with open_raster(s, "scene") as src:
                    check_resolution(GridSpec.of(src), contract, opts.resolution, s)


def translate_many(scenes: Sequence[str | Path], checkpoint: str | Path, out_dir: str | Path,
                   opts: TranslateOptions = TranslateOptions(), reporter: Reporter = NULL_REPORTER,
                   scheduler: str | None = None) -> list[SceneResult]:
    """Translate several scenes into ``out_dir/<stem>_translated.tif``.

    ``scheduler`` None runs them one after the other in this process (one checkpoint load); "local" starts a
    dask LocalCluster of 2 single-threaded worker processes; any other value is a dask.distributed scheduler
    address. Every scene and output is checked before starting (``InputError``); a scene that fails while
    working is reported in its ``SceneResult.error`` and the others go on.
    """
    paths = [Path(s) for s in scenes]
    out_dir = Path(out_dir)
    outs = _check_many(paths, out_dir, opts)
    device = resolve_device(opts.device)
    net = load_network(checkpoint, "generator", torch.device("cpu") if scheduler else device)
    _check_contract(paths, net, opts, device)  # a bad checkpoint, tile or strict resolution fails before starting
    if scheduler:
        return _translate_dask(paths, Path(checkpoint), outs, opts, reporter, scheduler)
    results: list[SceneResult] = []
    for s, o in zip(paths, outs):
        try:
            results.append(SceneResult(s, o, summary=translate_scene(s, net, o, opts, reporter)))
        except (SarkitError, OSError, RuntimeError) as exc:
            reporter.warn(f"{s.name} failed: {exc}")
            results.append(SceneResult(s, o, error=str(exc)))
    return results


@contextlib.contextmanager
def _dask_client(scheduler: str) -> Iterator[Any]:
    """A distributed Client: a fresh LocalCluster for "local", else connected to the given address."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--scheduler needs the 'distributed' package (pip install distributed)") from None
    if scheduler == "local":
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot reach dask scheduler {scheduler}: {exc}") from None
    with client:
        yield client


def _translate_dask(paths: list[Path], checkpoint: Path, outs: list[Path], opts: TranslateOptions,
                    reporter: Reporter, scheduler: str) -> list[SceneResult]:
    """One dask task per scene; results gathered in input order, failures kept per scene."""
    from distributed import as_completed

    results = {p: SceneResult(p, o) for p, o in zip(paths, outs)}
    with _dask_client(scheduler) as client:
        futures = {client.submit(_translate_task, str(p), str(checkpoint.resolve()), str(o.resolve()), opts,
                                 key=f"sarkit-translate-{i}-{p.name}", pure=False): p
                   for i, (p, o) in enumerate(zip(paths, outs))}
        with reporter.task("Scenes", total=len(paths)) as task:
            for fut in as_completed(futures):
                p = futures[fut]
                try:
                    results[p].summary = fut.result()
                except Exception as exc:  # a worker's failure stays that scene's failure
                    results[p].error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SarkitError) else str(exc)
                    reporter.warn(f"{p.name} failed: {results[p].error}")
                task.advance(1)
    return [results[p] for p in paths]
