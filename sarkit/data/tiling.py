"""``sarkit tile``: cut co-registered Sentinel-1 / Sentinel-2 / label scenes into training tiles.

Writes ``DIR/s1``, ``DIR/s2``, ``DIR/labels`` GeoTIFF tiles, ``DIR/manifest.csv`` and ``DIR/tiling.json``
(the contract in docs: SAR float32 dB with NaN nodata, optical DN in the source dtype with nodata 0, labels
uint8 with nodata 255). Splits are assigned to blocks of ground laid over all input files of the run (one block
grid per CRS), never to single tiles or files, and tiles whose footprint overlaps a tile of another split, in any
file, are dropped, so no ground is shared between train, val and test even when input files overlap.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
import rasterio.windows
from rasterio.enums import Resampling
from rasterio.warp import transform_geom

from sarkit import __version__
from sarkit.errors import InputError, WorkError
from sarkit.raster.align import AlignedReader, read_bands
from sarkit.raster.grid import GRID_TOL_PX, Bounds, GridSpec, PixelWindow, overlap_bounds, window_grid
from sarkit.io import DEFLATE_LEVEL, GTIFF_PROFILE, atomic_dir, check_output, open_raster, require_crs
from sarkit.data.layouts import (
    LABEL_NODATA,
    LC_SCHEMES,
    SEN1FLOODS11_CLASSES,
    Scene,
    check_lc_scheme,
    describe_labels,
    find_layout,
    is_sen12ms_lc,
    map_labels,
)
from sarkit.raster.norm import (check_range, 
    DEFAULT_OPTICAL_RANGE,
    DEFAULT_SAR_RANGE,
    DN_OFFSET_TAG,
    RGB_BANDS,
    band_names,
    check_integer_reflectance,
    optical_normalization,
    resolve_bands,
    s2_dn_offset,
    sar_normalization,
)
from sarkit.raster.source import GeoTiffSource, Modality, RasterSource
from sarkit.raster.stack import grid_of_file, is_multi, open_source, scene_files, scene_stem
from sarkit.reporting import NULL_REPORTER, Reporter

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["tile_id", "split", "s1_path", "s2_path", "labels_path", "row_off", "col_off", "height",
                    "width", "left", "bottom", "right", "top", "crs", "nodata_fraction", "source_s1",
                    "source_s2", "source_labels"]
OPTICAL_NODATA = 0


@dataclass
class TileOptions:
    """Options of ``sarkit tile`` (see the CLI help for each)."""

    size: int = 256
    stride: int | None = None  # None: equal to ``size`` (adjacent tiles)
    aoi: Path | None = None
    max_nodata: float = 0.05
    split: tuple[float, float, float] = (0.7, 0.2, 0.1)
    seed: int = 0
    overwrite: bool = False
    pad_edges: bool = False
    s1_units: str = "auto"
    s1_range: tuple[float, float] = DEFAULT_SAR_RANGE
    s2_range: tuple[float, float] = DEFAULT_OPTICAL_RANGE
    s2_offset: bool = False
    cloudy: bool = False
    lc_classes: str = "dfc2020"  # SEN12MS land cover: "dfc2020" (10 simplified classes) or "igbp" (17 classes)
    block_strides: int | None = None  # split block side in strides; None = automatic (see ``block_side``)
    strict: bool = False  # several scenes: a scene that fails fails the run (default: reported and skipped)
    grid: Path | None = None  # --grid FILE: the tiles' grid (every raster read onto it); None: the S1 raster's

    def __post_init__(self) -> None:
        if self.stride is None:
            self.stride = self.size


@dataclass
class TileSummary:
    """What a tiling run wrote: tile counts, skipped tiles by reason, tiles per split."""

    out: Path
    written: int
    skipped: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    scenes: int = 1
    labels: str | None = None  # which label band was read and how its values became classes
    failed: list[tuple[str, str]] = field(default_factory=list)  # (scene, why) of scenes skipped after failing


@dataclass
class _Candidate:
    scene: int
    window: PixelWindow
    tile_id: str
    bounds: Bounds
    nodata_fraction: float = 0.0
    block: tuple[int, int, int] = (0, 0, 0)
    split: str = ""


# --------------------------------------------------------------------------------------------- options


def check_split(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative finite fractions summing to 1 (train, val, test), as floats; ``InputError`` otherwise."""
    try:
        parts = tuple(float(x) for x in fractions)
    except (TypeError, ValueError):
        parts = ()
    if len(parts) != 3 or any(not math.isfinite(p) or p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        shown = ",".join(f"{p:g}" for p in parts) if parts else repr(fractions)
        raise InputError(f"--split must be 3 non-negative numbers summing to 1 (train,val,test), got {shown!r}")
    return parts  # type: ignore[return-value]

def validate_options(opts: TileOptions) -> None:
    """Raise ``InputError`` for impossible options."""
    if opts.size <= 0:
        raise InputError(f"--size must be positive (pixels), got {opts.size}")
    if opts.stride <= 0:
        raise InputError(f"--stride must be positive (pixels), got {opts.stride}")
    if not 0.0 <= opts.max_nodata <= 1.0:
        raise InputError(f"--max-nodata must be a fraction in [0, 1], got {opts.max_nodata}")
    check_split(opts.split)
    check_range(opts.s1_range, "--s1-range")
    check_range(opts.s2_range, "--s2-range")
    sar_normalization(("VV",), opts.s1_range, opts.s1_units)  # validates units and range
    opts.lc_classes = check_lc_scheme(opts.lc_classes)


# --------------------------------------------------------------------------------------------- inputs


@dataclass
class _Prepared:
    """An opened, checked scene."""

    scene: Scene
    grid: GridSpec
    stem: str
    sar_bands: list[str]
    sar_units: str
    optical_bands: list[str] | None
    optical_dtype: str | None
    label_nodata: float | None
    classes: list[str] | None
    label_scheme: str = "raw"
    label_source: str | None = None  # which label band is read and how (``describe_labels``)


def _decimated(src: Any, bands: list[int] | None = None, side: int = 256) -> np.ndarray:
    """A small decimated read of the whole raster (for unit and dtype checks), NaN where nodata."""
    bands = bands or list(range(1, src.count + 1))
    h, w = min(side, src.height), min(side, src.width)
    a = read_bands(src, bands, out_shape=(len(bands), h, w), resampling=Resampling.nearest).astype(np.float64)
    if src.nodata is not None and not np.isnan(src.nodata):
        a[a == src.nodata] = np.nan
    return a


def _optical_names(src: Any) -> list[str]:
    """Optical band names: descriptions, 13 → Sentinel-2 order, 3 → B4,B3,B2, 4 → B2,B3,B4,B8."""
    defaults = {3: ("B4", "B3", "B2"), 4: ("B2", "B3", "B4", "B8")}
    return band_names(src, default=defaults.get(src.count))


def _label_scheme(src: Any, scene: Scene, opts: TileOptions) -> str:
    """How the label values of a scene become classes: the layout's scheme, SEN12MS land cover (4-band ``lc``
    file, as ``--lc-classes``), Sen1Floods11 (``…LabelHand``), else the ids as stored ("raw")."""
    if scene.label_scheme != "raw" or scene.labels is None:
        return scene.label_scheme
    if is_sen12ms_lc(scene.labels, src.count):
        return opts.lc_classes
    if scene.labels.stem.lower().endswith("labelhand"):
        return "sen1floods11"
    return "raw"


def _check_labels(src: Any, path: Path, scheme: str) -> None:
    """Refuse label rasters that cannot hold class ids: several bands (other than SEN12MS ``lc``), or float
    values that are not whole numbers."""
    if src.count > 1 and scheme not in LC_SCHEMES:
        raise InputError(f"label raster {path.name} has {src.count} bands; sarkit reads class ids from one band "
                         f"(extract it, e.g. gdal_translate -b 1), or give a SEN12MS lc file (4 bands, named "
                         f"…_lc_…)")
    if np.dtype(src.dtypes[0]).kind != "f":
        return
    for _, win in src.block_windows(1):
        v = src.read(1, window=win).astype(np.float64)
        v = v[np.isfinite(v)]
        frac = v[v != np.round(v)]
        if frac.size:
            raise InputError(f"label raster {path.name} holds values that are not class ids (e.g. {frac[0]:g}): "
                             f"give whole-number class ids (an integer raster)")


def _label_classes(src: Any, scene: Scene, scheme: str) -> list[str]:
    """Class names of a label raster: the layout's, the scheme's, a ``class_names`` tag, else class_0…class_max."""
    if scene.classes:
        return list(scene.classes)
    if scheme in LC_SCHEMES:
        return list(LC_SCHEMES[scheme])
    tag = src.tags().get("class_names")
    if tag:
        try:
            names = json.loads(tag)
            if isinstance(names, list) and names:
                return [str(n) for n in names]
        except json.JSONDecodeError:
            pass
    if scheme == "sen1floods11":
        return list(SEN1FLOODS11_CLASSES)
    top = -1
    for _, win in src.block_windows(1):
        ids = map_labels(src.read(1, window=win), "raw", src.nodata)
        valid = ids[ids != LABEL_NODATA]
        if valid.size:
            top = max(top, int(valid.max()))
    return [f"class_{i}" for i in range(max(top + 1, 1))]


def _prepare_stacked_sar(scene: Scene, opts: TileOptions) -> tuple[GridSpec, list[str], str]:
    """Grid, band names and units of a Sentinel-1 raster of several files, or of any read onto ``--grid``
    (``open_source``)."""
    ref = grid_of_file(opts.grid) if opts.grid is not None else None
    with open_source(scene.s1_spec, Modality.SAR, units=opts.s1_units, grid=ref,
                     ref_name=f"the --grid raster {Path(opts.grid).name}" if ref is not None else None,
                     label=f"Sentinel-1 raster {_spec_text(scene.s1_spec, names=True)}") as sar:
        grid = sar.grid
        if not grid.georeferenced:
            raise InputError(f"Sentinel-1 raster {_spec_text(scene.s1_spec, names=True)} has no CRS; assign one "
                             f"(gdal_edit.py -a_srs EPSG:XXXX)")
        if (opts.size > grid.height or opts.size > grid.width) and not opts.pad_edges:
            raise InputError(f"--size {opts.size} is larger than the scene ({grid.height}×{grid.width} pixels): "
                             f"{_spec_text(scene.s1_spec, names=True)} (use a smaller --size, or --pad-edges to "
                             f"pad the scene to --size)")
        return grid, list(sar.band_names), sar.units


def _prepare_stacked_optical(scene: Scene, grid: GridSpec) -> tuple[list[str], str]:
    """Band names and dtype of an optical raster of several files, checked like one file's."""
    what = f"optical raster {_spec_text(scene.s2_spec, names=True)}"
    with open_source(scene.s2_spec, Modality.OPTICAL, grid=grid, fill=OPTICAL_NODATA, label=what,
                     ref_name="the Sentinel-1 scene") as opt:
        names = list(opt.band_names)
        try:
            resolve_bands(names, list(RGB_BANDS), what)
        except InputError:
            raise InputError(f"{what} has no band 'B4', 'B3' or 'B2' (bands: {', '.join(names)}); give the "
                             f"Sentinel-2 band files (…_B02.tif, …_B03.tif, …_B04.tif, …)") from None
        for part in getattr(opt, "parts", [opt]):
            check_integer_reflectance(part.dtype, _decimated(part.dataset), f"{what}: {Path(part.dataset.name).name}")
        return names, opt.dtype


def _scene_stem(scene: Scene) -> str:
    """A scene's name in tile ids (``sarkit.raster.stack.scene_stem``: the S1 file's stem, or what its files'
    stems share)."""
    return scene_stem(scene.s1_spec)


def _spec_text(spec: Any, names: bool = False) -> str:
    """A raster's files as one text: the paths (resolved) joined by commas, or with ``names`` their file names."""
    files = scene_files(spec)
    return ",".join(f.name if names else str(f.resolve()) for f in files)


def _prepare(scene: Scene, opts: TileOptions) -> _Prepared:
    """Open and check the files of one scene; raise ``InputError`` with what to do on any problem."""
    if is_multi(scene.s1_spec) or opts.grid is not None:
        grid, sar_bands, units = _prepare_stacked_sar(scene, opts)
    else:
        grid, sar_bands, units = _prepare_sar_file(scene, opts)
    optical_bands = optical_dtype = None
    if scene.s2 is not None and is_multi(scene.s2_spec):
        optical_bands, optical_dtype = _prepare_stacked_optical(scene, grid)
    elif scene.s2 is not None:
        optical_bands, optical_dtype = _prepare_optical_file(scene, grid)
    return _prepare_labels(scene, opts, grid, sar_bands, units, optical_bands, optical_dtype)


def _prepare_sar_file(scene: Scene, opts: TileOptions) -> tuple[GridSpec, list[str], str]:
    """Grid, band names and units of a Sentinel-1 raster of one file."""
    with open_raster(scene.s1, "Sentinel-1 raster") as s1:
        require_crs(s1, "Sentinel-1 raster")
        grid = GridSpec.of(s1)
        if (opts.size > s1.height or opts.size > s1.width) and not opts.pad_edges:
            raise InputError(f"--size {opts.size} is larger than the scene ({s1.height}×{s1.width} pixels): "
                             f"{scene.s1} (use a smaller --size)")
        with GeoTiffSource(s1, Modality.SAR, units=opts.s1_units, label=f"Sentinel-1 raster {scene.s1}") as sar:
            sar_bands, units = list(sar.band_names), sar.units  # the raster layer's naming, checks and unit rule
    return grid, sar_bands, units


def _prepare_optical_file(scene: Scene, grid: GridSpec) -> tuple[list[str], str]:
    """Band names and dtype of an optical raster of one file, checked."""
    assert scene.s2 is not None
    with open_raster(scene.s2, "optical raster") as s2:
        require_crs(s2, "optical raster")
        optical_bands = _optical_names(s2)
        try:
            resolve_bands(optical_bands, list(RGB_BANDS), f"optical raster {scene.s2.name}")
        except InputError:
            raise InputError(f"optical raster {scene.s2.name} has no band 'B4', 'B3' or 'B2' (bands: "
                             f"{', '.join(optical_bands)}); give a Sentinel-2 stack (13 bands, or band "
                             f"descriptions B2, B3, B4, …)") from None
        optical_dtype = s2.dtypes[0]
        check_integer_reflectance(optical_dtype, _decimated(s2), f"optical raster {scene.s2.name}")
        if overlap_bounds(grid, GridSpec.of(s2)) is None:
            raise InputError(f"Sentinel-1 and optical rasters do not overlap: {scene.s1.name}, {scene.s2.name} "
                             f"(give files of the same area)")
    return optical_bands, optical_dtype


def _prepare_labels(scene: Scene, opts: TileOptions, grid: GridSpec, sar_bands: list[str], units: str,
                    optical_bands: list[str] | None, optical_dtype: str | None) -> _Prepared:
    """Check the label raster of a scene (when it has one) and put the scene together."""
    label_nodata = classes = label_desc = None
    scheme = scene.label_scheme
    if scene.labels is not None:
        with open_raster(scene.labels, "label raster") as lab:
            require_crs(lab, "label raster")
            if overlap_bounds(grid, GridSpec.of(lab)) is None:
                raise InputError(f"Sentinel-1 and label rasters do not overlap: {scene.s1.name}, "
                                 f"{scene.labels.name} (give files of the same area)")
            label_nodata = lab.nodata
            scheme = _label_scheme(lab, scene, opts)
            _check_labels(lab, scene.labels, scheme)
            classes = _label_classes(lab, scene, scheme)
            label_desc = describe_labels(scheme, lab.count)
    return _Prepared(scene, grid, scene.name or _scene_stem(scene), sar_bands, units, optical_bands, optical_dtype, label_nodata,
                     classes, scheme, label_desc)


def load_aoi(path: Path) -> tuple[Any, Any]:
    """Read a GeoJSON FeatureCollection / Feature / geometry: (shapely geometry, its CRS)."""
    from rasterio.crs import CRS
    from shapely.geometry import shape
    from shapely.ops import unary_union

    p = Path(path)
    if not p.is_file():
        raise InputError(f"AOI file not found: {p}")
    try:
        doc = json.loads(p.read_text())
        kind = doc.get("type")
        if kind == "FeatureCollection":
            geoms = [f["geometry"] for f in doc["features"] if f.get("geometry")]
        elif kind == "Feature":
            geoms = [doc["geometry"]]
        else:
            geoms = [doc]
        shapes = [shape(g) for g in geoms]
        crs_name = ((doc.get("crs") or {}).get("properties") or {}).get("name", "EPSG:4326")
        crs = CRS.from_user_input(crs_name)
    except Exception as exc:  # any parse problem is the user's file
        raise InputError(f"AOI is not valid GeoJSON: {p} ({type(exc).__name__}: {exc}); give a Polygon, "
                         f"Feature or FeatureCollection") from None
    if not shapes:
        raise InputError(f"AOI has no geometry: {p}")
    geom = unary_union([s.buffer(0) if not s.is_valid else s for s in shapes])
    if geom.is_empty:
        raise InputError(f"AOI geometry is empty: {p}")
    return geom, crs


def _aoi_in(geom: Any, crs: Any, dst_crs: Any) -> Any:
    """The AOI geometry reprojected into ``dst_crs``."""
    from shapely.geometry import mapping, shape

    if crs == dst_crs:
        return geom
    return shape(transform_geom(crs, dst_crs, mapping(geom)))


# --------------------------------------------------------------------------------------------- windows


def _padded_offsets(length: int, size: int, stride: int) -> list[int]:
    """Offsets 0, stride, … until a window reaches the end (the last one may run past it and be padded)."""
    offsets = [0]
    while offsets[-1] + size < length:
        offsets.append(offsets[-1] + stride)
    return offsets


def tile_windows(height: int, width: int, opts: TileOptions) -> list[PixelWindow]:
    """The tile windows of a scene: full windows only, or edge windows padded to ``size`` with ``pad_edges``."""
    if not opts.pad_edges:
        return [w for w in window_grid(height, width, opts.size, opts.stride, cover=False)
                if w.height == opts.size and w.width == opts.size]
    return [PixelWindow(r, c, opts.size, opts.size) for r in _padded_offsets(height, opts.size, opts.stride)
            for c in _padded_offsets(width, opts.size, opts.stride)]


def tile_id(stem: str, window: PixelWindow) -> str:
    """Deterministic tile id from the source file stem and the window offsets."""
    return f"{stem}_r{window.row_off:05d}_c{window.col_off:05d}"


def window_bounds(grid: GridSpec, window: PixelWindow) -> Bounds:
    """Bounds of a pixel window in the grid's CRS."""
    return Bounds(*rasterio.windows.bounds(window.to_rasterio(), grid.transform))


# --------------------------------------------------------------------------------------------- splits

#: Margin (degrees) added around EPSG:4326 envelopes of footprints in different CRSs, so float noise of the
#: reprojection never hides an overlap.
ENVELOPE_MARGIN_DEG = 1e-6
_EDGE_POINTS = 8  # points per footprint edge when its envelope is computed in EPSG:4326


def _crs_groups(crss: Sequence[Any]) -> list[int]:
    """Index of each CRS among the distinct CRSs of ``crss`` (by WKT, in order of first appearance; each CRS
    object is converted once, so a CRS shared by many tiles costs one look-up per tile)."""
    from rasterio.crs import CRS

    by_id: dict[int, int] = {}
    by_wkt: dict[str, int] = {}
    out = []
    for crs in crss:
        g = by_id.get(id(crs))
        if g is None:
            g = by_id[id(crs)] = by_wkt.setdefault(CRS.from_user_input(crs).to_wkt(), len(by_wkt))
        out.append(g)
    return out


def envelopes_4326(crs: Any, boxes: np.ndarray) -> np.ndarray:
    """Conservative EPSG:4326 envelopes (n, 4: west, south, east, north) of footprints ``boxes`` (n, 4) in ``crs``.

    Each edge is densified before reprojection and a margin of ``ENVELOPE_MARGIN_DEG`` is added; a footprint that
    cannot be reprojected or crosses the antimeridian gets the whole longitude range.
    """
    from rasterio.crs import CRS
    from rasterio.warp import transform

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if CRS.from_user_input(crs) == CRS.from_epsg(4326):
        env = boxes.copy()
    else:
        t = np.linspace(0.0, 1.0, _EDGE_POINTS, endpoint=False)
        l, b, r, tp = (boxes[:, i:i + 1] for i in range(4))
        xs = np.concatenate([l + (r - l) * t, r + 0 * t, r - (r - l) * t, l + 0 * t], axis=1)
        ys = np.concatenate([b + 0 * t, b + (tp - b) * t, tp + 0 * t, tp - (tp - b) * t], axis=1)
        lon, lat = transform(crs, "EPSG:4326", xs.ravel().tolist(), ys.ravel().tolist())
        lon = np.asarray(lon, dtype=np.float64).reshape(xs.shape)
        lat = np.asarray(lat, dtype=np.float64).reshape(xs.shape)
        with np.errstate(invalid="ignore"):
            env = np.stack([lon.min(1), lat.min(1), lon.max(1), lat.max(1)], axis=1)
        bad = ~np.isfinite(env).all(axis=1) | (env[:, 2] - env[:, 0] > 180.0)
        env[bad] = (-180.0, -90.0, 180.0, 90.0)
    env[:, :2] -= ENVELOPE_MARGIN_DEG
    env[:, 2:] += ENVELOPE_MARGIN_DEG
    return env


def _pairs(boxes: np.ndarray) -> np.ndarray:
    """Pairs (i < j) of axis-aligned boxes (n, 4) whose interiors intersect (boxes that only touch do not)."""
    import shapely

    if len(boxes) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    geoms = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])
    hit = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    i, j = hit
    keep = i < j
    i, j = i[keep], j[keep]
    b = boxes
    deep = ((np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0]) > 0)
            & (np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1]) > 0))
    return np.stack([i[deep], j[deep]], axis=1)


def footprint_overlaps(bounds: Sequence[Bounds], crss: Sequence[Any], tols: Sequence[float]) -> np.ndarray:
    """Pairs (i, j), i < j, of footprints that share ground.

    Same CRS: their bounds overlap by more than ``tols`` (a small distance in CRS units, so footprints that only
    touch or differ by float noise do not count). Different CRSs: their conservative EPSG:4326 envelopes
    (:func:`envelopes_4326`) overlap, so a shared pixel is never missed (neighbours may be over-counted).
    """
    n = len(bounds)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    groups = np.asarray(_crs_groups(crss))
    arr = np.asarray(bounds, dtype=np.float64).reshape(n, 4)
    tol = np.asarray(tols, dtype=np.float64).reshape(n, 1)
    found = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        shrunk = arr[idx] + np.hstack([tol[idx], tol[idx], -tol[idx], -tol[idx]]) / 2
        found.append(idx[_pairs(shrunk)])
    if groups.max() > 0:
        env = np.empty_like(arr)
        for g in np.unique(groups):
            idx = np.flatnonzero(groups == g)
            env[idx] = envelopes_4326(crss[idx[0]], arr[idx])
        p = _pairs(env)
        found.append(p[groups[p[:, 0]] != groups[p[:, 1]]])
    return np.concatenate(found).reshape(-1, 2) if found else np.zeros((0, 2), dtype=np.int64)


def _pixel_tol(grid: GridSpec) -> float:
    """Overlap tolerance of a grid in its CRS units: ``GRID_TOL_PX`` of its smaller pixel side."""
    return GRID_TOL_PX * min(abs(grid.transform.a), abs(grid.transform.e))


def scenes_overlap(prepared: list[_Prepared]) -> bool:
    """True when the footprints of two scenes of the run share ground (see :func:`footprint_overlaps`)."""
    return len(footprint_overlaps([p.grid.bounds for p in prepared], [p.grid.crs for p in prepared],
                                  [_pixel_tol(p.grid) for p in prepared])) > 0


def block_side(opts: TileOptions, scenes_overlap: bool = False) -> int:
    """Split block side in strides: 1 tile when no two tiles can overlap, else ≥ 2·⌈size/stride⌉ strides
    (a block at least two tiles wide); tiles of overlapping scenes can overlap even when stride ≥ size."""
    if opts.block_strides:
        return max(1, int(opts.block_strides), math.ceil(opts.size / opts.stride))
    if opts.stride >= opts.size and not scenes_overlap:
        return 1
    return 2 * math.ceil(opts.size / opts.stride)


def ground_blocks(cands: list[_Candidate], prepared: list[_Prepared], side_strides: int, stride: int) -> None:
    """Give each tile the block of a ground grid (one per CRS) that its top-left corner falls in.

    The grid of a CRS starts at the top-left corner of its scenes' union and has cells of ``side_strides·stride``
    pixels of the coarsest scene in that CRS, so tiles of different files over the same ground share a block
    (for a single scene the blocks are ``side_strides`` strides of its own pixel grid).
    """
    groups = _crs_groups([p.grid.crs for p in prepared])
    origin: dict[int, list[float]] = {}  # group → [left, top, largest pixel width, largest pixel height]
    for g, p in zip(groups, prepared):
        b, px, py = p.grid.bounds, abs(p.grid.transform.a), abs(p.grid.transform.e)
        o = origin.setdefault(g, [b.left, b.top, px, py])
        o[:] = [min(o[0], b.left), max(o[1], b.top), max(o[2], px), max(o[3], py)]
    for o in origin.values():
        o[2], o[3] = side_strides * stride * o[2], side_strides * stride * o[3]
    for c in cands:
        g = groups[c.scene]
        x0, y0, sx, sy = origin[g]
        c.block = (g, math.floor((y0 - c.bounds.top) / sy + 1e-6), math.floor((c.bounds.left - x0) / sx + 1e-6))


def assign_splits(cands: list[_Candidate], fractions: Sequence[float], seed: int) -> None:
    """Give whole blocks to splits: shuffle blocks (seeded), then each to the split where it most reduces
    ``Σ |count − fraction·total|`` (splits with fraction 0 get nothing)."""
    blocks: dict[tuple[int, int, int], list[_Candidate]] = {}
    for c in cands:
        blocks.setdefault(c.block, []).append(c)
    keys = sorted(blocks)
    order = np.random.default_rng(seed).permutation(len(keys))
    targets = [f * len(cands) for f in fractions]
    counts = [0, 0, 0]
    for k in order:
        members = blocks[keys[k]]
        n = len(members)
        gain = [abs(targets[s] - counts[s]) - abs(targets[s] - counts[s] - n) if fractions[s] > 0 else -math.inf
                for s in range(3)]
        s = int(np.argmax(gain))
        counts[s] += n
        for c in members:
            c.split = SPLITS[s]


def drop_split_overlaps(cands: list[_Candidate], prepared: list[_Prepared]) -> list[_Candidate]:
    """Drop tiles whose footprint overlaps a kept tile of another split, over all scenes of the run (blocks in
    order, earlier blocks keep theirs); return the dropped tiles."""
    pairs = footprint_overlaps([c.bounds for c in cands], [prepared[c.scene].grid.crs for c in cands],
                               [_pixel_tol(prepared[c.scene].grid) for c in cands])
    near: dict[int, list[int]] = {}
    for i, j in pairs.tolist():
        near.setdefault(i, []).append(j)
        near.setdefault(j, []).append(i)
    kept: set[int] = set()
    dropped: list[_Candidate] = []
    for i in sorted(range(len(cands)), key=lambda i: (cands[i].block, cands[i].scene, cands[i].window)):
        c = cands[i]
        if any(j in kept and cands[j].split != c.split for j in near.get(i, ())):
            dropped.append(c)
        else:
            kept.add(i)
    return dropped


# --------------------------------------------------------------------------------------------- writing


def _profile(window: PixelWindow, grid: GridSpec, count: int, dtype: str, nodata: float) -> dict[str, Any]:
    """GeoTIFF profile of one tile with its window transform."""
    prof: dict[str, Any] = dict(GTIFF_PROFILE)
    if window.height % 16 or window.width % 16:
        prof = {"driver": "GTiff", "compress": "deflate", "zlevel": DEFLATE_LEVEL}
    else:
        prof["blockxsize"] = min(256, window.width)
        prof["blockysize"] = min(256, window.height)
    prof.update(height=window.height, width=window.width, count=count, dtype=dtype, nodata=nodata,
                crs=grid.crs, transform=rasterio.windows.transform(window.to_rasterio(), grid.transform))
    return prof


def _write_tile(path: Path, data: np.ndarray, prof: dict[str, Any], names: list[str],
                tags: dict[str, str] | None = None) -> None:
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        for i, n in enumerate(names, start=1):
            dst.set_band_description(i, n)
        if tags:
            dst.update_tags(**tags)


def _check_consistent(prepared: list[_Prepared]) -> None:
    """All scenes of one tiling must share band names and the presence of optical and labels."""
    first = prepared[0]
    for p in prepared[1:]:
        if p.sar_bands != first.sar_bands:
            raise InputError(f"Sentinel-1 bands differ between scenes ({first.sar_bands} vs {p.sar_bands} in "
                             f"{p.scene.s1.name}): tile them into separate folders")
        if p.optical_bands != first.optical_bands:
            raise InputError(f"optical bands differ between scenes ({p.scene.s2}): tile them into separate folders")
        if (p.classes is None) != (first.classes is None):
            raise InputError(f"some scenes have labels and others not ({p.scene.s1.name}): tile them separately")


def _read_scene_tile(p: _Prepared, w: PixelWindow, s1: RasterSource, opt: RasterSource | None,
                     lab: AlignedReader | None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, float]:
    """SAR dB, optical DN and label ids of one window on the S1 grid, and the nodata fraction."""
    reading = s1.read(w)
    sar = reading.values
    invalid = ~reading.valid
    optical = labels = None
    if opt is not None:
        optical = opt.read_stored(w)
        invalid |= (optical == OPTICAL_NODATA).all(axis=0)
    if lab is not None:
        scheme = p.label_scheme
        raw_lab = lab.read(w, [1])[0]
        labels = map_labels(raw_lab, scheme, None if scheme in LC_SCHEMES else p.label_nodata)
        invalid |= labels == LABEL_NODATA
    return sar, optical, labels, float(invalid.mean())


def _label_fill(path: Path) -> float:
    """Fill value for label pixels outside the label raster (maps to 255 after ``map_labels``)."""
    with rasterio.open(path) as src:
        if src.nodata is not None:
            return src.nodata
        return -1 if np.dtype(src.dtypes[0]).kind in "if" else 255


def _candidates(prepared: list[_Prepared], opts: TileOptions, skipped: Counter) -> list[_Candidate]:
    """Every tile window of every scene that intersects the AOI, with its id and bounds."""
    from shapely.geometry import box

    aoi = load_aoi(opts.aoi) if opts.aoi else None
    cands: list[_Candidate] = []
    aoi_hits = 0
    for si, p in enumerate(prepared):
        geom = _aoi_in(aoi[0], aoi[1], p.grid.crs) if aoi is not None else None
        if geom is not None and geom.intersects(box(*p.grid.bounds)):
            aoi_hits += 1
        for w in tile_windows(p.grid.height, p.grid.width, opts):
            b = window_bounds(p.grid, w)
            if geom is not None and not geom.intersects(box(*b)):
                skipped["outside_aoi"] += 1
                continue
            cands.append(_Candidate(si, w, tile_id(p.stem, w), b))
    if aoi is not None and aoi_hits == 0:
        raise InputError(f"AOI {opts.aoi} does not intersect the scene(s): check its coordinates and CRS")
    return cands


def _open_partners(p: _Prepared, opts: TileOptions,
                   reporter: Reporter) -> tuple[RasterSource | None, AlignedReader | None]:
    """Readers of the optical (DN, nodata 0) and label rasters on the scene's S1 grid (None where absent)."""
    opt = lab = None
    if p.scene.s2 is not None:
        opt = open_source(p.scene.s2_spec, Modality.OPTICAL, names=p.optical_bands, grid=p.grid,
                          resampling=Resampling.bilinear, fill=OPTICAL_NODATA,
                          dn_offset=s2_dn_offset(opts.s2_offset),
                          label=f"optical raster {_spec_text(p.scene.s2_spec, names=True)}",
                          ref_name="the Sentinel-1 scene")
        warped = [Path(getattr(opt, "dataset").name)] if isinstance(opt, GeoTiffSource) and opt.aligned.resampled \
            else list(getattr(opt, "resampled", []))
        if warped:
            shown = warped[0].name + (f" and {len(warped) - 1} more file(s)" if len(warped) > 1 else "")
            reporter.info(f"reprojecting {shown} onto the Sentinel-1 grid (bilinear)")
    if p.scene.labels is not None:
        lab = AlignedReader(p.scene.labels, p.grid, Resampling.nearest, _label_fill(p.scene.labels),
                            what=f"label raster {p.scene.labels.name}")
        if lab.resampled:
            reporter.info(f"reprojecting {p.scene.labels.name} onto the Sentinel-1 grid (nearest)")
    return opt, lab


def _write_scene(p: _Prepared, mine: list[_Candidate], tmp: Path, opts: TileOptions, reporter: Reporter,
                 task: Any, skipped: Counter) -> list[_Candidate]:
    """Read, check and write the tiles ``mine`` of one scene into ``tmp``; return those written."""
    written: list[_Candidate] = []
    optical_dn_offset = s2_dn_offset(opts.s2_offset)  # recorded in every optical tile
    with open_source(p.scene.s1_spec, Modality.SAR, names=p.sar_bands, units=p.sar_units, grid=p.grid,
                     label=f"Sentinel-1 raster {_spec_text(p.scene.s1_spec, names=True)}") as s1:
        opt, lab = _open_partners(p, opts, reporter)
        try:
            for c in mine:
                sar, optical, labels, c.nodata_fraction = _read_scene_tile(p, c.window, s1, opt, lab)
                task.advance(1)
                if c.nodata_fraction > opts.max_nodata:
                    skipped["nodata"] += 1
                    continue
                name = f"{c.tile_id}.tif"
                _write_tile(tmp / "s1" / name, sar, _profile(c.window, p.grid, sar.shape[0], "float32",
                                                             float("nan")), p.sar_bands)
                if optical is not None:
                    _write_tile(tmp / "s2" / name, optical, _profile(c.window, p.grid, optical.shape[0],
                                                                     optical.dtype.name, OPTICAL_NODATA),
                                p.optical_bands or [], {DN_OFFSET_TAG: f"{optical_dn_offset:g}"})
                if labels is not None:
                    _write_tile(tmp / "labels" / name, labels[None],
                                _profile(c.window, p.grid, 1, "uint8", LABEL_NODATA), ["labels"],
                                {"class_names": json.dumps(p.classes), "label_source": p.label_source or ""})
                written.append(c)
        finally:
            for r in (opt, lab):
                if r is not None:
                    r.close()
    return written


def _finish_splits(kept: list[_Candidate], prepared: list[_Prepared], side: int, tmp: Path, opts: TileOptions,
                   skipped: Counter) -> list[_Candidate]:
    """Assign splits by ground block over all scenes, delete tiles whose footprint would overlap a tile of
    another split; return the kept tiles in order."""
    ground_blocks(kept, prepared, side, int(opts.stride or opts.size))
    assign_splits(kept, opts.split, opts.seed)
    dropped = drop_split_overlaps(kept, prepared)
    gone = {c.tile_id for c in dropped}
    for c in dropped:
        skipped["split_overlap"] += 1
        for sub in ("s1", "s2", "labels"):
            (tmp / sub / f"{c.tile_id}.tif").unlink(missing_ok=True)
    return sorted((c for c in kept if c.tile_id not in gone), key=lambda c: (c.scene, c.window))


def _tile_scenes(scenes: list[Scene], out: Path, opts: TileOptions, reporter: Reporter,
                 params: dict[str, Any]) -> TileSummary:
    """Tile every scene into ``out`` (the shared engine of ``tile_scene`` and ``tile_layout``)."""
    validate_options(opts)
    opts = _stac_offset(scenes, opts, reporter)
    out = Path(out)
    check_output(out, opts.overwrite)
    failed: list[tuple[str, str]] = []
    prepared = _prepare_all(scenes, opts, reporter, failed)
    failed_first = len(failed)  # scenes that did not open; the others may still fail while read
    if params.get("layout"):
        reporter.info(f"{len(scenes)} {params['layout']} scene(s) found under {params.get('root')}")
    skipped: Counter[str] = Counter()
    cands = _candidates(prepared, opts, skipped)
    has_opt = prepared[0].optical_bands is not None
    has_lab = prepared[0].classes is not None
    kept: list[_Candidate] = []
    with atomic_dir(out, opts.overwrite) as tmp:
        for sub in ("s1",) + (("s2",) if has_opt else ()) + (("labels",) if has_lab else ()):
            (tmp / sub).mkdir()
        with reporter.task("Tiling", total=len(cands)) as task:
            for si, p in enumerate(prepared):
                mine = [c for c in cands if c.scene == si]
                if mine:
                    kept += _write_scene_or_skip(p, mine, tmp, opts, reporter, task, skipped, failed,
                                                 len(scenes))
        if not kept:
            raise InputError(f"no tile passed the filters ({dict(skipped)}): lower --size, raise --max-nodata "
                             f"or check the AOI")
        side = block_side(opts, scenes_overlap(prepared))
        kept = _finish_splits(kept, prepared, side, tmp, opts, skipped)
        _write_manifest(tmp / "manifest.csv", kept, prepared, has_opt, has_lab)
        split_counts = {s: sum(c.split == s for c in kept) for s in SPLITS}
        record = _tiling_record(prepared, opts, {**params, "block_strides": side}, len(kept), dict(skipped),
                                split_counts)
        if failed:
            record["failed_scenes"] = [{"scene": n, "error": e} for n, e in failed]
        (tmp / "tiling.json").write_text(json.dumps(record, indent=2) + "\n")
    return TileSummary(out, len(kept), dict(skipped), split_counts, len(prepared) - (len(failed) - failed_first),
                       prepared[0].label_source, failed)


def _stac_offset(scenes: list[Scene], opts: TileOptions, reporter: Reporter) -> TileOptions:
    """With optical STAC Items: the DN offset their processing baseline implies, as ``--s2-offset`` would set it
    (tiles keep digital numbers; tiling.json records the offset). ``InputError`` when the Items disagree with each
    other or with ``--s2-offset``."""
    from sarkit.raster.stac import is_stac_item, stac_item

    offsets: dict[str, float] = {}
    for s in scenes:
        if s.s2 is not None and not s.s2_files and is_stac_item(s.s2):
            try:
                offsets[str(s.s2)] = stac_item(s.s2).dn_offset
            except InputError:
                continue  # the scene's own error, when it is prepared
    if not offsets:
        return opts
    if len(set(offsets.values())) > 1:
        shown = ", ".join(f"{n}: {v:g}" for n, v in offsets.items())
        raise InputError(f"the optical STAC items are of processing baselines with different DN offsets ({shown}); "
                         f"tile them into separate tile sets")
    name, offset = next(iter(offsets.items()))
    if (offset != 0) == opts.s2_offset:
        return opts
    if opts.s2_offset:
        raise InputError(f"--s2-offset applies −1000, but STAC item {name} says its values carry no offset "
                         f"(s2:processing_baseline before 04.00, or the offset already applied); drop --s2-offset")
    reporter.info(f"STAC item {name}: processing baseline 04.00 or later, DN offset {offset:g} recorded (as "
                  f"--s2-offset)")
    return replace(opts, s2_offset=True)


def _scene_text(scene: Scene) -> str:
    """How messages name a scene: its name, else its S1 file(s)."""
    return scene.name or _spec_text(scene.s1_spec, names=True)


def _unique_stems(prepared: list[_Prepared], scenes: list[Scene]) -> None:
    """Prefix the stems that several scenes of the run share with their S1 folder's name, decided on every scene
    given (not only those that opened), so a tile's id does not depend on which other scenes failed."""
    stems = Counter(s.name or _scene_stem(s) for s in scenes)
    for p in prepared:
        if stems[p.stem] > 1:
            p.stem = f"{p.scene.s1.parent.name}_{p.stem}"


def _prepare_all(scenes: list[Scene], opts: TileOptions, reporter: Reporter,
                 failed: list[tuple[str, str]]) -> list[_Prepared]:
    """Open and check every scene. One scene: its error is the run's. Several: a scene that fails to open or is
    refused is reported, recorded in ``failed`` and left out, unless ``opts.strict``; ``InputError`` when none is
    left, or when the scenes that opened differ in bands or labels (``_check_consistent``)."""
    many = len(scenes) > 1 and not opts.strict
    prepared: list[_Prepared] = []
    for scene in scenes:
        try:
            prepared.append(_prepare(scene, opts))
        except (InputError, WorkError, OSError) as exc:
            if not many:
                raise
            failed.append((_scene_text(scene), str(exc)))
            reporter.warn(f"scene {_scene_text(scene)} skipped: {exc}")
    if not prepared:
        raise InputError(f"none of the {len(scenes)} scenes could be tiled (first: {failed[0][0]}: {failed[0][1]})")
    _check_consistent(prepared)  # scenes that open but differ in bands or labels: which is meant is the user's call
    _unique_stems(prepared, scenes)
    return prepared


def _write_scene_or_skip(p: _Prepared, mine: list[_Candidate], tmp: Path, opts: TileOptions, reporter: Reporter,
                         task: Any, skipped: Counter, failed: list[tuple[str, str]],
                         n_scenes: int) -> list[_Candidate]:
    """``_write_scene``; with several scenes (not ``opts.strict``) a scene whose reading fails is reported, its tiles
    deleted, and the run goes on without it."""
    try:
        return _write_scene(p, mine, tmp, opts, reporter, task, skipped)
    except (InputError, WorkError, OSError) as exc:
        if n_scenes < 2 or opts.strict:
            raise
        for c in mine:
            for sub in ("s1", "s2", "labels"):
                (tmp / sub / f"{c.tile_id}.tif").unlink(missing_ok=True)
        failed.append((_scene_text(p.scene), str(exc)))
        reporter.warn(f"scene {_scene_text(p.scene)} skipped: {exc}")
        return []


def _write_manifest(path: Path, kept: list[_Candidate], prepared: list[_Prepared], has_opt: bool,
                    has_lab: bool) -> None:
    scene_labels = any(p.scene.scene_labels is not None for p in prepared)
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS + (["scene_labels"] if scene_labels else []))
        wr.writeheader()
        for c in kept:
            p = prepared[c.scene]
            extra = {"scene_labels": json.dumps(p.scene.scene_labels or [])} if scene_labels else {}
            wr.writerow({**extra,
                "tile_id": c.tile_id, "split": c.split,
                "s1_path": f"s1/{c.tile_id}.tif",
                "s2_path": f"s2/{c.tile_id}.tif" if has_opt else "",
                "labels_path": f"labels/{c.tile_id}.tif" if has_lab else "",
                "row_off": c.window.row_off, "col_off": c.window.col_off,
                "height": c.window.height, "width": c.window.width,
                "left": repr(c.bounds.left), "bottom": repr(c.bounds.bottom),
                "right": repr(c.bounds.right), "top": repr(c.bounds.top),
                "crs": p.grid.crs.to_string(), "nodata_fraction": f"{c.nodata_fraction:.6f}",
                "source_s1": _spec_text(p.scene.s1_spec),
                "source_s2": _spec_text(p.scene.s2_spec) if p.scene.s2 else "",
                "source_labels": str(p.scene.labels.resolve()) if p.scene.labels else "",
            })


def _tiling_record(prepared: list[_Prepared], opts: TileOptions, params: dict[str, Any], written: int,
                   skipped: dict[str, int], splits: dict[str, int]) -> dict[str, Any]:
    """The ``tiling.json`` record (contract in docs)."""
    first = prepared[0]
    sar = sar_normalization(first.sar_bands, tuple(opts.s1_range), opts.s1_units)
    optical = (optical_normalization(first.optical_bands, tuple(opts.s2_range), opts.s2_offset)
               if first.optical_bands else None)
    p = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    p["split"] = list(opts.split)
    p["s1_range"], p["s2_range"] = list(opts.s1_range), list(opts.s2_range)
    p.update(params)
    return {
        "sarkit_version": __version__,
        "params": p,
        "normalization": {"sar": sar.to_dict(), "optical": optical.to_dict() if optical else None},
        "sar_bands": list(first.sar_bands),
        "optical_bands": list(first.optical_bands) if first.optical_bands else None,
        "classes": list(first.classes) if first.classes else None,
        "labels": ({"band": 1, "scheme": first.label_scheme, "source": first.label_source}
                   if first.classes else None),
        "sources": {
            "s1": [_spec_text(x.scene.s1_spec) for x in prepared],
            "s2": [_spec_text(x.scene.s2_spec) if x.scene.s2 else None for x in prepared],
            "labels": [str(x.scene.labels.resolve()) if x.scene.labels else None for x in prepared],
            "s1_units_detected": [x.sar_units for x in prepared],
            "optical_dtype": first.optical_dtype,
        },
        "counts": {"written": written, "skipped": skipped, **splits},
    }


# --------------------------------------------------------------------------------------------- public API


def scene_record(s1: Any, optical: Any = None, labels: Any = None) -> Scene:
    """A ``Scene`` from what a user gave: each raster a path, a comma list or a sequence of files."""
    s1_files = scene_files(s1)
    s2_files = scene_files(optical) if optical else ()
    return Scene(s1_files[0], s2_files[0] if s2_files else None, Path(labels) if labels else None,
                 s1_files=s1_files if len(s1_files) > 1 else (), s2_files=s2_files if len(s2_files) > 1 else ())


def tile_scene(s1: Any, optical: Any, labels: Path | None, out: Path, opts: TileOptions,
               reporter: Reporter = NULL_REPORTER) -> TileSummary:
    """Tile one Sentinel-1 scene (with optional optical and label rasters, co-registered onto it) into ``out``.
    ``s1`` and ``optical`` are a file, or several files of one raster (a sequence or a comma list:
    ``sarkit.raster.stack.scene_files``)."""
    scene = scene_record(s1, optical, labels)
    return _tile_scenes([scene], Path(out), opts, reporter, {"layout": None})


def tile_scenes(scenes: Sequence[Scene], out: Path, opts: TileOptions,
                reporter: Reporter = NULL_REPORTER) -> TileSummary:
    """Tile several scenes (``Scene`` records: from ``sarkit.data.scenes``, a CSV, or built by a program) into one
    tile set: ids unique and stable, splits blocked on ground over all scenes; a scene that fails is reported in
    ``TileSummary.failed`` and left out, unless ``opts.strict``."""
    if not scenes:
        raise InputError("no scenes to tile")
    return _tile_scenes(list(scenes), Path(out), opts, reporter, {"layout": None, "scenes": len(scenes)})


def tile_layout(root: Path, layout: str, out: Path, opts: TileOptions,
                reporter: Reporter = NULL_REPORTER, pairs: Any = None) -> TileSummary:
    """Tile every triplet of a dataset folder layout ("sen12ms" or "sen1floods11") into ``out``; "pairs" tiles an
    image-pair dataset (``sarkit.data.pairs.tile_pairs``, found as ``pairs``, a ``PairOptions``, says)."""
    from sarkit.data.pairs import PairOptions, refuse_pair_options, tile_pairs

    if str(layout).lower() == "pairs":
        return tile_pairs(Path(root), Path(out), opts, pairs or PairOptions(), reporter)
    refuse_pair_options(pairs)
    validate_options(opts)
    check_output(Path(out), opts.overwrite)
    scenes = find_layout(Path(root), layout, opts.cloudy, opts.lc_classes)
    params = {"layout": str(layout).lower(), "root": str(Path(root).resolve())}
    return _tile_scenes(scenes, Path(out), opts, reporter, params)


def tile_inputs(s1: Sequence[Any], s1_files: Sequence[str], optical: Sequence[str], labels: str | None,
                scenes_csv: Path | None, layout: str | None, out: Path, opts: TileOptions,
                reporter: Reporter = NULL_REPORTER, pairs: Any = None) -> TileSummary:
    """What ``sarkit tile`` was given, tiled: a dataset root with ``layout``, a scenes CSV, one scene (``s1`` a file,
    or comma list, or ``s1_files`` its files; ``optical`` a file or its per-band files), or several S1
    scenes (paths or globs) with partner patterns (``sarkit.data.scenes``). ``pairs``: the image-pair options
    (``sarkit.data.pairs.PairOptions``) of ``layout`` "pairs", refused with any other input."""
    from sarkit.data.pairs import refuse_pair_options
    from sarkit.data.scenes import expand_scenes, is_pattern, scenes_from_csv, scenes_from_pattern

    s1, optical = list(s1), list(optical)
    if layout is None:
        refuse_pair_options(pairs)
    else:
        if optical or labels or s1_files or scenes_csv:
            raise InputError("--layout reads optical and labels from the dataset folders: drop --optical/--labels")
        if len(s1) != 1:
            raise InputError(f"--layout takes one dataset root folder, got {len(s1)} arguments")
        return tile_layout(Path(s1[0]), layout, out, opts, reporter, pairs=pairs)
    if scenes_csv is not None:
        if s1 or s1_files or optical or labels:
            raise InputError("--scenes lists every scene's files: drop the S1 arguments and --s1/--optical/--labels")
        return tile_scenes(scenes_from_csv(scenes_csv), out, opts, reporter)
    if s1_files:
        if s1:
            raise InputError("give the Sentinel-1 scene as arguments or with --s1, not both")
        s1 = [",".join(str(f) for f in s1_files)]
    if not s1:
        raise InputError("give a Sentinel-1 scene (S1.tif, VV.tif,VH.tif or --s1 FILE), --scenes CSV, or a dataset "
                         "root with --layout")
    items = expand_scenes(s1)
    patterned = any(is_pattern(o) for o in optical) or is_pattern(labels)
    if len(items) == 1 and not patterned:
        return tile_scene(items[0], optical or None, Path(labels) if labels else None, out, opts, reporter)
    if len(optical) > 1:
        raise InputError(f"several scenes take one --optical pattern (e.g. '{{dir}}/{{stem/_s1/_s2}}.tif'), got "
                         f"{len(optical)} --optical values; or list the scenes with --scenes CSV")
    opt = optical[0] if optical else None
    for option, value in (("--optical", opt), ("--labels", labels)):
        if value and not is_pattern(value):
            raise InputError(f"{option} {value}: with several scenes give a pattern naming each scene's partner "
                             f"(e.g. '{{dir}}/{{stem/_s1/_s2}}.tif'), or list the scenes with --scenes CSV")
    return tile_scenes(scenes_from_pattern(items, opt, labels), out, opts, reporter)
