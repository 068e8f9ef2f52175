"""Mosaic georeferenced tiles into one Cloud-Optimized GeoTIFF, blending their overlaps without seams.

The output grid is the union of the inputs' bounds (in the first input's CRS, or ``crs``) at the first input's
resolution, aligned to the first input's pixel grid, so tiles cut from one scene land on whole pixels and are
read directly (through a whole-pixel offset). Inputs in another CRS (or off that grid) are warped onto it
(``WarpedVRT``, nearest neighbour by default). Both go through ``sarkit.raster.align.AlignedReader``, and "on the
grid" is the one rule of ``sarkit.raster.grid`` (``GRID_TOL_PX``). Each input pixel is weighted by
``sarkit.infer.blend`` ramps: a cosine ramp over the width it shares with overlapping tiles on each side, full
weight on the mosaic's outer border, and 0 on its nodata pixels; the mosaic is ``Σ w·v / Σ w``. Pixels no
valid input covers are nodata.

Memory is bounded: the output is built in strips of rows, reading only the tiles that intersect each strip.
Before any pixel is read, a size guard refuses a mosaic far larger than its inputs (inputs far apart in one CRS),
and a mosaic no valid input pixel reaches is refused rather than written.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning
from rasterio.transform import Affine
from rasterio.warp import calculate_default_transform, transform_bounds

from sarkit import __version__
from sarkit.infer.blend import axis_weights, edge_overlaps, normalise
from sarkit.errors import InputError
from sarkit.raster.align import AlignedReader
from sarkit.raster.grid import GRID_TOL_PX, Bounds, GridSpec, PixelWindow, pixel_offset
from sarkit.io import SCRATCH_PROFILE, atomic_file, check_output, open_raster, output_lock, require_crs, temp_sibling, write_cog
from sarkit.raster.norm import DN_OFFSET_TAG, dn_offset_from_tags
from sarkit.reporting import NULL_REPORTER, Reporter

#: Output rows built at once (a multiple of the temporary GeoTIFF's 256-row blocks).
STRIP_ROWS = 512
#: Size guard: without ``max_pixels`` a mosaic may hold at most this many times its inputs' pixels …
AREA_RATIO_LIMIT = 10
#: … or this many pixels (1024², so that small sets with gaps between their tiles are never refused).
MIN_PIXEL_LIMIT = 1 << 20
#: Resampling methods of warped inputs (``--resampling``).
RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")


@dataclass(frozen=True)
class StitchOptions:
    """Options of ``sarkit stitch``: target CRS (None = the first input's), overwrite, warp resampling, and the
    size guard's limit in pixels (None: ``AREA_RATIO_LIMIT`` × the inputs' pixels, at least ``MIN_PIXEL_LIMIT``).
    Impossible values raise ``InputError`` on construction, with the command line's option names."""

    crs: str | None = None
    overwrite: bool = False
    resampling: str = "nearest"
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        if self.resampling not in RESAMPLINGS:
            raise InputError(f"--resampling {self.resampling!r} is not a resampling method; use one of "
                             f"{', '.join(RESAMPLINGS)}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise InputError(f"--max-pixels must be ≥ 1, got {self.max_pixels}")


@dataclass(frozen=True)
class StitchSummary:
    """What a stitch produced."""

    out: Path
    inputs: int
    width: int
    height: int
    seconds: float

    def line(self) -> str:
        """One-line summary for people."""
        return (f"stitched {self.inputs} tiles into {self.width}×{self.height} pixels in {self.seconds:.1f} s "
                f"→ {self.out}")


@dataclass
class _Source:
    """One input placed on the output grid: its footprint window and its blend ramps along rows and columns."""

    path: Path
    footprint: PixelWindow
    aligned: bool
    nodata: float | None
    row_w: np.ndarray | None = None
    col_w: np.ndarray | None = None


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Input files: each argument a GeoTIFF, or a directory whose ``*.tif``/``*.tiff`` files are taken (sorted)."""
    paths: list[Path] = []
    for a in inputs:
        p = Path(a)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in (".tif", ".tiff") and q.is_file())
            if not found:
                raise InputError(f"directory {p} holds no .tif files")
            paths.extend(found)
        elif p.exists():
            paths.append(p)
        else:
            raise InputError(f"input not found: {p}")
    if not paths:
        raise InputError("no input tiles given: pass GeoTIFF files or folders of them, e.g. sarkit stitch tiles/ --out mosaic.tif")
    return paths


def parse_crs(text: str | None) -> CRS | None:
    """``--crs`` parsed (EPSG:XXXX, WKT, PROJ), None when not given; ``InputError`` when it is no CRS."""
    if not text:
        return None
    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise InputError(f"--crs {text!r} is not a CRS rasterio understands (e.g. EPSG:32631)") from None


def check_out(out: Path, paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse an ``out`` that is a directory, one of the inputs, or an existing file without ``overwrite``."""
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; give the mosaic's file name, e.g. {out / 'mosaic.tif'}")
    if any(p.resolve() == out.resolve() for p in paths):
        raise InputError(f"output {out} is also an input; choose another --out")
    check_output(out, overwrite)


def check_mosaic_size(mosaic: GridSpec, footprints: Sequence[PixelWindow], max_pixels: int | None) -> None:
    """Refuse (``InputError``) a mosaic with more pixels than ``max_pixels``, by default ``AREA_RATIO_LIMIT`` ×
    the inputs' pixels on the mosaic grid (at least ``MIN_PIXEL_LIMIT``): inputs far apart in one CRS."""
    total = mosaic.width * mosaic.height
    inputs = sum(w.height * w.width for w in footprints)
    limit = max_pixels if max_pixels is not None else max(AREA_RATIO_LIMIT * inputs, MIN_PIXEL_LIMIT)
    if total <= limit:
        return
    over = f"--max-pixels {limit:,}" if max_pixels is not None else f"the limit of {limit:,}"
    raise InputError(f"the mosaic would be {mosaic.width}×{mosaic.height} pixels ({total:,}), "
                     f"{total / max(inputs, 1):,.0f}× the {inputs:,} pixels of its {len(footprints)} inputs and over "
                     f"{over}: are the inputs far apart? Stitch nearby tiles separately, or pass --max-pixels "
                     f"{total} to allow it")


def _bounds_in(src: rasterio.DatasetReader, crs: CRS) -> Bounds:
    """An input's bounds in ``crs`` (densified transform of its edges when the CRS differs)."""
    if src.crs == crs:
        return Bounds(*src.bounds)
    return Bounds(*transform_bounds(src.crs, crs, *src.bounds, densify_pts=21))


def _resolution(src: rasterio.DatasetReader, crs: CRS) -> tuple[float, float]:
    """Pixel size (x, y > 0) of an input in ``crs`` (GDAL's suggested warp resolution when the CRS differs)."""
    if src.crs == crs:
        return abs(src.transform.a), abs(src.transform.e)
    t, _, _ = calculate_default_transform(src.crs, crs, src.width, src.height, *src.bounds)
    return abs(t.a), abs(t.e)


def _snap(value: float, origin: float, step: float, up: bool) -> float:
    """``origin + k·step`` nearest to ``value`` from below (or above with ``up``), tolerant to rounding."""
    k = (value - origin) / step
    k = math.ceil(k - GRID_TOL_PX) if up else math.floor(k + GRID_TOL_PX)
    return origin + k * step


def _output_grid(bounds: list[Bounds], anchor: Bounds, res: tuple[float, float]) -> tuple[Affine, int, int]:
    """Transform and size of the union of ``bounds``, on the pixel grid through ``anchor``'s top-left corner."""
    xres, yres = res
    left = _snap(min(b.left for b in bounds), anchor.left, xres, up=False)
    top = _snap(max(b.top for b in bounds), anchor.top, yres, up=True)
    right, bottom = max(b.right for b in bounds), min(b.bottom for b in bounds)
    width = max(1, math.ceil((right - left) / xres - GRID_TOL_PX))
    height = max(1, math.ceil((top - bottom) / yres - GRID_TOL_PX))
    return Affine(xres, 0.0, left, 0.0, -yres, top), width, height


def _place(src: rasterio.DatasetReader, b: Bounds, mosaic: GridSpec) -> tuple[PixelWindow, bool]:
    """Footprint window of an input on the mosaic grid, and whether it sits on whole mosaic pixels (the grid rule
    ``pixel_offset``, asked as ``AlignedReader`` asks it: where the mosaic's pixel (0, 0) lies in the input)."""
    offset = pixel_offset(mosaic, GridSpec.of(src))
    if offset is not None:
        return PixelWindow(-offset.row, -offset.col, src.height, src.width), True
    transform, width, height = mosaic.transform, mosaic.width, mosaic.height
    c0 = math.floor((b.left - transform.c) / transform.a + GRID_TOL_PX)
    c1 = math.ceil((b.right - transform.c) / transform.a - GRID_TOL_PX)
    r0 = math.floor((transform.f - b.top) / -transform.e + GRID_TOL_PX)
    r1 = math.ceil((transform.f - b.bottom) / -transform.e - GRID_TOL_PX)
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(c1, width), min(r1, height)
    return PixelWindow(r0, c0, max(r1 - r0, 0), max(c1 - c0, 0)), False


def _neighbours(windows: list[PixelWindow]) -> list[list[PixelWindow]]:
    """For each window, the other windows that intersect it, found through a bucket grid of cell size B = the
    largest window side (two windows that intersect have origins less than B apart, so adjacent cells)."""
    if not windows:
        return []
    cell = max(max(w.height, w.width) for w in windows)
    buckets: dict[tuple[int, int], list[int]] = {}
    for k, w in enumerate(windows):
        buckets.setdefault((w.row_off // cell, w.col_off // cell), []).append(k)
    out = []
    for k, w in enumerate(windows):
        br, bc = w.row_off // cell, w.col_off // cell
        near = [m for dr in (-1, 0, 1) for dc in (-1, 0, 1) for m in buckets.get((br + dr, bc + dc), ())]
        out.append([windows[m] for m in near if m != k and windows[m].intersect(w) is not None])
    return out


def _invalid(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Nodata mask (h, w) of (C, h, w) data: any band NaN or equal to ``nodata``."""
    bad = np.zeros(data.shape[1:], dtype=bool)
    if data.dtype.kind == "f":
        bad |= np.isnan(data).any(axis=0)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        bad |= (data == nodata).any(axis=0)
    return bad


def _has_data(src: rasterio.DatasetReader) -> bool:
    """Whether an input holds at least one valid pixel, read in strips of about 4 M values and stopping at the
    first strip that has one (usually the first)."""
    rows = max(1, (1 << 22) // max(1, src.width * src.count))
    for r0 in range(0, src.height, rows):
        win = PixelWindow(r0, 0, min(rows, src.height - r0), src.width)
        if not _invalid(src.read(window=win.to_rasterio()), src.nodata).all():
            return True
    return False


def check_has_data(srcs: Sequence[rasterio.DatasetReader]) -> None:
    """Refuse (``InputError``) inputs none of which holds a valid pixel: their mosaic would be all nodata."""
    if not any(_has_data(s) for s in srcs):
        raise InputError(f"every pixel of the {len(srcs)} inputs is nodata (NaN or their nodata value): the mosaic "
                         f"would hold no data, so nothing was written; check the inputs")


class _Reader:
    """Reads an input's pixels for a window of the mosaic grid (through a whole-pixel offset when on the grid, else
    warped), with ``sarkit.raster.align.AlignedReader``."""

    def __init__(self, mosaic: GridSpec, resampling: Resampling, dtype: str) -> None:
        self.mosaic, self.resampling, self.dtype = mosaic, resampling, dtype

    def vrt_nodata(self, s: _Source) -> float:
        """Fill value of warped reads outside the input: its nodata, else NaN (float) or 0 (integers)."""
        if s.nodata is not None:
            return s.nodata
        return float("nan") if np.dtype(self.dtype).kind == "f" else 0

    def read(self, s: _Source, win: PixelWindow) -> tuple[np.ndarray, np.ndarray]:
        """(data float64 (C, h, w) with 0 at nodata, validity (h, w)) of ``s`` over output window ``win``."""
        fill = self.vrt_nodata(s)
        with AlignedReader(s.path, self.mosaic, self.resampling, fill, what=f"input tile {s.path}",
                           ref_name="the mosaic") as src:
            data = src.read(win)
            nodata = fill if src.resampled else s.nodata  # pixels read as they are keep the input's own nodata
        valid = ~_invalid(data, nodata)
        out = data.astype(np.float64)
        out[:, ~valid] = 0.0
        return out, valid


def _to_dtype(y: np.ndarray, dtype: str, nodata: float) -> np.ndarray:
    """Blended float rows → output dtype (integers rounded and clipped to the dtype range); NaN → ``nodata``."""
    bad = np.isnan(y)
    if np.dtype(dtype).kind == "f":
        out = y.astype(dtype)
    else:
        info = np.iinfo(dtype)
        out = np.clip(np.rint(np.nan_to_num(y, nan=0.0)), info.min, info.max).astype(dtype)
    out[bad] = nodata
    return out


def _common_dn_offset(srcs: Sequence[Any]) -> float | None:
    """The DN offset the inputs' ``dn_offset`` tags share (None when untagged); inputs that disagree (a tag on
    some only, or different values) are an ``InputError``."""
    seen: dict[float | None, str] = {}
    for s in srcs:
        tags = s.tags()
        value = dn_offset_from_tags(tags, 0.0, f"input {s.name}") if DN_OFFSET_TAG in tags else None
        seen.setdefault(value, s.name)
    if len(seen) > 1:
        what = ", ".join(f"{'none' if v is None else f'{v:g}'} ({Path(n).name})" for v, n in seen.items())
        raise InputError(f"inputs record different Sentinel-2 DN offsets ({DN_OFFSET_TAG}: {what}); their digital "
                         f"numbers are not comparable: stitch them separately, or tag untagged inputs with their "
                         f"offset (gdal_edit.py -mo {DN_OFFSET_TAG}=-1000 FILE)")
    return next(iter(seen))


def stitch(inputs: Sequence[str | Path], out: str | Path, opts: StitchOptions = StitchOptions(),
           reporter: Reporter = NULL_REPORTER) -> StitchSummary:
    """Mosaic georeferenced tiles (files or directories of ``*.tif``) into the COG ``out``.

    ``InputError`` for missing inputs, inputs without a CRS, mixed band counts or data types, a bad ``crs``, an
    ``out`` that is a directory, a mosaic far larger than its inputs (``check_mosaic_size``), or inputs without a
    single valid pixel; ``OutputExistsError`` when ``out`` exists without ``opts.overwrite``. All but the last are
    found before any pixel is read. Nothing is left behind on failure.
    """
    t0 = time.perf_counter()
    out = Path(out)
    target_crs = parse_crs(opts.crs)
    paths = collect_inputs(inputs)
    check_out(out, paths, opts.overwrite)
    resampling = Resampling[opts.resampling]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        srcs = [open_raster(p, "input tile") for p in paths]
    try:
        first = srcs[0]
        for s in srcs:
            require_crs(s, "input tile")
            if s.count != first.count:
                raise InputError(f"mixed band counts: {s.name} has {s.count} bands, {first.name} has {first.count}; "
                                 f"stitch tiles of one kind at a time")
            if s.dtypes[0] != first.dtypes[0]:
                raise InputError(f"mixed data types: {s.name} is {s.dtypes[0]}, {first.name} is {first.dtypes[0]}; "
                                 f"stitch tiles of one kind at a time")
        dn_offset = _common_dn_offset(srcs)
        crs = target_crs or first.crs
        bounds = [_bounds_in(s, crs) for s in srcs]
        transform, width, height = _output_grid(bounds, bounds[0], _resolution(first, crs))
        mosaic = GridSpec(crs, transform, height, width)
        sources = []
        for s, b in zip(srcs, bounds):
            fp, aligned = _place(s, b, mosaic)
            sources.append(_Source(Path(s.name), fp, aligned, s.nodata))
        dtype, count, descriptions = first.dtypes[0], first.count, first.descriptions
        nodata = first.nodata if first.nodata is not None else (float("nan") if np.dtype(dtype).kind == "f" else 0)
        check_mosaic_size(mosaic, [s.footprint for s in sources], opts.max_pixels)
        check_has_data(srcs)
    finally:
        for s in srcs:
            s.close()
    sources = [s for s in sources if s.footprint.height > 0 and s.footprint.width > 0]
    for s, others in zip(sources, _neighbours([s.footprint for s in sources])):
        top, bottom, left, right = edge_overlaps(s.footprint, others)
        s.row_w = axis_weights(s.footprint.height, top, bottom)
        s.col_w = axis_weights(s.footprint.width, left, right)
    profile = {**SCRATCH_PROFILE, "dtype": dtype, "count": count, "width": width, "height": height,
               "crs": crs, "transform": transform, "nodata": nodata}
    reader = _Reader(mosaic, resampling, dtype)
    with output_lock(out), atomic_file(out, overwrite=opts.overwrite) as cog_tmp:
        tmp = temp_sibling(out, ".tif")
        try:
            with rasterio.Env(GDAL_CACHEMAX=64 << 20), rasterio.open(tmp, "w", **profile) as dst:
                if descriptions and all(descriptions):
                    dst.descriptions = descriptions
                dst.update_tags(sarkit_version=__version__, stitched_inputs=str(len(paths)))
                if dn_offset is not None:
                    dst.update_tags(**{DN_OFFSET_TAG: f"{dn_offset:g}"})
                covered = _stitch_strips(dst, sources, reader, width, height, count, dtype, nodata, reporter)
            if covered == 0:  # valid pixels that warping lost (check_has_data found some)
                raise InputError(f"no valid pixel of the {len(paths)} inputs reached the mosaic grid, so nothing was "
                                 f"written; check the inputs and --crs")
            write_cog(tmp, cog_tmp, overview_resampling="average" if np.dtype(dtype).kind == "f" else "nearest")
        finally:
            tmp.unlink(missing_ok=True)
    summary = StitchSummary(out, len(paths), width, height, time.perf_counter() - t0)
    return summary


def _stitch_strips(dst: Any, sources: list[_Source], reader: _Reader, width: int, height: int, count: int,
                   dtype: str, nodata: float, reporter: Reporter) -> int:
    """Build the mosaic strip by strip: Σ w·v and Σ w over the inputs that intersect each strip; the number of
    mosaic pixels that got data."""
    covered = 0
    starts = range(0, height, STRIP_ROWS)
    with reporter.task("Stitching", total=len(starts)) as task:
        for r0 in starts:
            strip = PixelWindow(r0, 0, min(STRIP_ROWS, height - r0), width)
            acc = np.zeros((count, strip.height, width), dtype=np.float64)
            wsum = np.zeros((strip.height, width), dtype=np.float64)
            for s in sources:
                inter = s.footprint.intersect(strip)
                if inter is None:
                    continue
                data, valid = reader.read(s, inter)
                fr, fc = inter.row_off - s.footprint.row_off, inter.col_off - s.footprint.col_off
                w = np.outer(s.row_w[fr:fr + inter.height], s.col_w[fc:fc + inter.width]) * valid
                rows = slice(inter.row_off - r0, inter.row_off - r0 + inter.height)
                cols = slice(inter.col_off, inter.col_end)
                acc[:, rows, cols] += data * w
                wsum[rows, cols] += w
            covered += int(np.count_nonzero(wsum > 0))
            y = normalise(acc, wsum, np.float64)
            dst.write(_to_dtype(y, dtype, nodata), window=strip.to_rasterio())
            task.advance(1)
    return covered
