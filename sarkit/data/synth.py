"""Deterministic synthetic Sentinel-1/2 scenes with land-cover labels, generated window by window.

A scene is a landscape of crop parcels, forest, towns with street grids, lakes, meandering rivers and roads.
Every pixel is a pure function of ``(seed, pixel coordinates)``:

* smooth fields are value noise whose lattice values are hashes of ``(seed, tag, lattice cell)``;
* per-object values (parcel crop type, town block roofs) are hashes of the object's integer key;
* SAR speckle is drawn per fixed 128×128 block from a generator seeded by ``(seed, band, block row, block col)``.

So the output does not depend on how the work is chunked, and the same options give the same bytes.

Files written: ``s1.tif`` (VV, VH in dB, float32, NaN no-data in a slanted wedge along the near-range left edge,
like the edge of a GRD swath), ``s2.tif`` (13 bands uint16 L1C DN = reflectance × 10000, 0 = no data in a small
triangle at the lower-right corner, never inside valid data), ``labels.tif`` (uint8 class ids, 255 = no data,
tag ``class_names``). All share one grid: ``crs``, ``pixel_size`` and a UTM-tile-like origin.

Signatures are those of C-band VV/VH backscatter near 35° incidence (dB) and Sentinel-2 L1C top-of-atmosphere
reflectance. SAR speckle is multiplicative: linear intensity × Gamma(shape=ENL, scale=1/ENL), ENL = 4.4 as in
GRD products. Water has no texture (a homogeneous target on which the ENL can be measured).

Label classes (``CLASS_NAMES``, index = class id; nodata 255): water (rivers and lakes), forest, cropland
(wheat, maize, rapeseed and sugar-beet parcels, each with its own signature), grassland (meadows and town-less
pasture parcels), bare (ploughed parcels), urban (building blocks and gardens), road (roads and streets).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sarkit.errors import InputError
from sarkit.raster.grid import Bounds, PixelWindow
from sarkit.io import GTIFF_PROFILE, atomic_dir
from sarkit.raster.norm import S1_BANDS, S2_BANDS, linear_to_db, reflectance_to_dn
from sarkit.reporting import NULL_REPORTER, Reporter

#: Land-cover class names; the index is the class id stored in ``labels.tif``.
CLASS_NAMES: list[str] = ["water", "forest", "cropland", "grassland", "bare", "urban", "road"]
WATER, FOREST, CROPLAND, GRASSLAND, BARE, URBAN, ROAD = range(len(CLASS_NAMES))
LABEL_NODATA = 255
#: Equivalent number of looks of the simulated speckle (Sentinel-1 IW GRD high resolution).
ENL = 4.4
#: Side of the fixed blocks the speckle is drawn in (pixels).
SPECKLE_BLOCK = 128
#: Width of the column windows a strip is rendered in (pixels); only affects memory, never the output.
_COL_CHUNK = 1024
MIN_SIZE = 64

# ------------------------------------------------------------------------------------------ materials
# Surface materials: each maps to a label class and has a SAR and an optical signature.
_MATERIALS = ("water", "forest", "wheat", "maize", "rapeseed", "sugarbeet", "meadow", "ploughed",
              "urban_grey", "urban_red", "urban_green", "road")
(M_WATER, M_FOREST, M_WHEAT, M_MAIZE, M_RAPESEED, M_SUGARBEET, M_MEADOW, M_PLOUGHED,
 M_URBAN_GREY, M_URBAN_RED, M_URBAN_GREEN, M_ROAD) = range(len(_MATERIALS))
_MAT_CLASS = np.array([WATER, FOREST, CROPLAND, CROPLAND, CROPLAND, CROPLAND, GRASSLAND, BARE,
                       URBAN, URBAN, URBAN, ROAD], dtype=np.uint8)
# Mean backscatter (dB) at 34° incidence: VV, VH.
_MAT_SAR_DB = np.array([
    [-22.5, -29.0],  # water: specular, dark
    [-7.5, -13.0],   # forest: volume scattering, high VH
    [-11.0, -18.0],  # wheat
    [-9.0, -15.5],   # maize
    [-8.5, -14.5],   # rapeseed
    [-9.5, -16.0],   # sugar beet
    [-11.5, -18.5],  # meadow
    [-12.0, -20.5],  # ploughed soil
    [-1.0, -9.5],    # urban, grey roofs (double bounce)
    [0.0, -9.0],     # urban, red roofs
    [-5.0, -12.0],   # urban gardens
    [-15.0, -23.0],  # asphalt (mostly specular)
], dtype=np.float32).T  # (2, n_materials)
# Sentinel-2 L1C top-of-atmosphere reflectance, bands in S2_BANDS order.
_MAT_SPECTRA = np.array([
    # B1    B2     B3     B4     B5     B6     B7     B8     B8A    B9     B10    B11    B12
    [0.115, 0.085, 0.060, 0.035, 0.030, 0.025, 0.032, 0.028, 0.024, 0.010, 0.002, 0.012, 0.008],  # water
    [0.105, 0.060, 0.068, 0.035, 0.085, 0.200, 0.250, 0.270, 0.290, 0.090, 0.003, 0.140, 0.065],  # forest
    [0.115, 0.078, 0.088, 0.060, 0.120, 0.280, 0.340, 0.360, 0.380, 0.120, 0.004, 0.200, 0.100],  # wheat
    [0.110, 0.075, 0.092, 0.052, 0.130, 0.320, 0.400, 0.420, 0.440, 0.130, 0.004, 0.210, 0.100],  # maize
    [0.130, 0.100, 0.140, 0.130, 0.160, 0.280, 0.330, 0.350, 0.360, 0.110, 0.004, 0.220, 0.120],  # rapeseed
    [0.110, 0.074, 0.094, 0.050, 0.120, 0.330, 0.420, 0.450, 0.460, 0.140, 0.004, 0.190, 0.090],  # sugar beet
    [0.115, 0.080, 0.092, 0.072, 0.130, 0.250, 0.290, 0.310, 0.330, 0.110, 0.004, 0.230, 0.130],  # meadow
    [0.140, 0.120, 0.140, 0.170, 0.190, 0.210, 0.220, 0.240, 0.250, 0.080, 0.005, 0.310, 0.260],  # ploughed
    [0.150, 0.130, 0.130, 0.140, 0.150, 0.170, 0.180, 0.190, 0.200, 0.070, 0.005, 0.210, 0.180],  # grey roofs
    [0.140, 0.110, 0.110, 0.180, 0.200, 0.220, 0.230, 0.240, 0.250, 0.080, 0.005, 0.270, 0.220],  # red roofs
    [0.135, 0.110, 0.115, 0.110, 0.140, 0.210, 0.235, 0.250, 0.265, 0.090, 0.005, 0.220, 0.155],  # gardens
    [0.140, 0.110, 0.110, 0.110, 0.120, 0.130, 0.140, 0.150, 0.150, 0.050, 0.004, 0.170, 0.150],  # asphalt
], dtype=np.float32).T  # (13, n_materials)
# Bands whose reflectance follows vegetation vigour (red edge and NIR: B6, B7, B8, B8A).
_VIGOUR_BANDS = np.array([5, 6, 7, 8])
# Weight of the additive haze per band (strongest in the blue end).
_HAZE_WEIGHT = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
# Crop-type frequencies of agricultural parcels.
_PARCEL_MATERIALS = np.array([M_WHEAT, M_MAIZE, M_RAPESEED, M_SUGARBEET, M_MEADOW, M_PLOUGHED], dtype=np.uint8)
_PARCEL_CUMPROB = np.cumsum([0.25, 0.20, 0.10, 0.10, 0.20, 0.15])

# Hash tags separating the random fields derived from one seed.
_T_FOREST, _T_LAKE, _T_TEX, _T_CROWN, _T_HAZE, _T_ZONE, _T_PARCEL, _T_STAGGER, _T_BLOCK, _T_NOISE = range(1, 11)
_T_SPECKLE = 0x5EC1E


# ------------------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class SynthOptions:
    """What scene to generate: ``size``×``size`` pixels of ``pixel_size`` metres in ``crs`` from ``seed``.

    ``origin`` is the upper-left corner (x, y) in CRS units; None picks a plausible UTM tile corner.
    """

    size: int = 2048
    seed: int = 0
    crs: str = "EPSG:32633"
    pixel_size: float = 10.0
    origin: tuple[float, float] | None = None

    def resolved_origin(self) -> tuple[float, float]:
        """The upper-left corner: ``origin`` or a Sentinel-2-like tile corner (y 7 000 000 m in the south)."""
        if self.origin is not None:
            return float(self.origin[0]), float(self.origin[1])
        south = self.crs.upper().startswith("EPSG:327")
        return 399960.0, (7000000.0 if south else 5400000.0)


@dataclass(frozen=True)
class SynthResult:
    """Paths of the written rasters, the class names and how long it took."""

    out_dir: Path
    s1_path: Path
    s2_path: Path
    labels_path: Path
    class_names: list[str]
    size: int
    crs: str
    bounds: Bounds
    seconds: float


@dataclass
class SceneWindow:
    """One rendered window: SAR dB (2,h,w) float32 NaN-nodata, optical DN (13,h,w) uint16, labels (h,w) uint8."""

    window: PixelWindow
    sar: np.ndarray
    optical: np.ndarray
    labels: np.ndarray


def validate_options(opts: SynthOptions) -> None:
    """Raise ``InputError`` naming the option when size, pixel size, seed or CRS cannot be used."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    if int(opts.size) != opts.size or opts.size < MIN_SIZE:
        raise InputError(f"--size must be an integer of at least {MIN_SIZE} pixels, got {opts.size}")
    if not (opts.pixel_size > 0 and math.isfinite(opts.pixel_size)):
        raise InputError(f"--pixel-size must be a positive number of metres, got {opts.pixel_size}")
    if opts.seed < 0 or int(opts.seed) != opts.seed:
        raise InputError(f"--seed must be a non-negative integer, got {opts.seed}")
    try:
        crs = CRS.from_user_input(opts.crs)
    except (CRSError, ValueError, TypeError):
        raise InputError(f"--crs {opts.crs!r} is not a valid CRS: use e.g. EPSG:32633") from None
    if not crs.is_projected:
        raise InputError(f"--crs {opts.crs!r} is not a projected CRS in metres: use a UTM zone, e.g. EPSG:32633")


# ------------------------------------------------------------------------------------------ hashing and noise
_U = np.uint64


def _splitmix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective avalanche mix of 64-bit integers."""
    z = z + _U(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U(27))) * _U(0x94D049BB133111EB)
    return z ^ (z >> _U(31))


def _hash(*keys: np.ndarray | int) -> np.ndarray:
    """Hash of integer keys (broadcast): ``h ← mix(h ⊕ k)`` over the keys, as uint64."""
    with np.errstate(over="ignore"):
        h = np.zeros((), dtype=np.uint64)
        for k in keys:
            h = _splitmix(h ^ np.asarray(k, dtype=np.int64).astype(np.uint64))
    return h


def _uniform(h: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float64 from the top 53 bits of a hash."""
    return (h >> _U(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _rehash(h: np.ndarray, k: int) -> np.ndarray:
    """A second independent hash derived from ``h``: ``mix(h ⊕ k)``."""
    with np.errstate(over="ignore"):
        return _splitmix(h ^ _U(k))


def _value_noise(key: tuple[int, ...], ys: np.ndarray, xs: np.ndarray, wavelength: float) -> np.ndarray:
    """Value noise in [-1, 1] on the grid ys×xs (metres): smoothstep interpolation of hashed lattice values.

    Lattice spacing is ``wavelength``; lattice value at cell (i, j) = 2·U(hash(key, i, j)) − 1.
    """
    gy, gx = ys / wavelength, xs / wavelength
    iy, ix = np.floor(gy).astype(np.int64), np.floor(gx).astype(np.int64)
    fy, fx = gy - iy, gx - ix
    sy, sx = fy * fy * (3.0 - 2.0 * fy), fx * fx * (3.0 - 2.0 * fx)
    iy0, ix0 = int(iy.min()), int(ix.min())
    ly = np.arange(iy0, int(iy.max()) + 2)
    lx = np.arange(ix0, int(ix.max()) + 2)
    lattice = (2.0 * _uniform(_hash(*key, ly[:, None], lx[None, :])) - 1.0).astype(np.float32)
    cx = ix - ix0
    rows = lattice[:, cx] + (lattice[:, cx + 1] - lattice[:, cx]) * sx.astype(np.float32)[None, :]
    ry = iy - iy0
    top, bottom = rows[ry], rows[ry + 1]
    return top + (bottom - top) * sy.astype(np.float32)[:, None]


def _fbm(key: tuple[int, ...], ys: np.ndarray, xs: np.ndarray, wavelength: float, octaves: int) -> np.ndarray:
    """Fractal noise: Σ 2^-k · noise(wavelength / 2^k), normalised to [-1, 1]."""
    total = np.zeros((ys.size, xs.size), dtype=np.float32)
    norm = 0.0
    for k in range(octaves):
        amp = 0.5 ** k
        total += np.float32(amp) * _value_noise(key + (k,), ys, xs, wavelength / 2 ** k)
        norm += amp
    return total / np.float32(norm)


# ------------------------------------------------------------------------------------------ scene plan
@dataclass(frozen=True)
class _Town:
    cx: float
    cy: float
    radius: float
    angle: float
    spacing: float
    phases: tuple[float, float]


@dataclass(frozen=True)
class _River:
    px: float
    py: float
    angle: float
    half_width: float
    meanders: tuple[tuple[float, float, float], ...]  # (amplitude m, wavelength m, phase)

    @property
    def reach(self) -> float:
        """Largest distance from the straight axis at which river pixels can occur (m)."""
        amp = sum(a for a, _, _ in self.meanders)
        slope = sum(2 * math.pi * a / w for a, w, _ in self.meanders)
        return amp + self.half_width * math.sqrt(1.0 + slope * slope) + 1.0


@dataclass(frozen=True)
class _Road:
    ax: float
    ay: float
    bx: float
    by: float
    half_width: float


@dataclass(frozen=True)
class ScenePlan:
    """The seeded large-scale layout of a scene (towns, rivers, roads, thresholds); small and cheap to build."""

    opts: SynthOptions
    extent: float
    macro_wavelength: float
    forest_threshold: float
    lake_threshold: float
    zone_size: float
    zone_offset: tuple[float, float]
    field_angle: float
    towns: tuple[_Town, ...]
    rivers: tuple[_River, ...]
    roads: tuple[_Road, ...]
    wedge: tuple[float, float] = field(default=(0.0, 0.0))


def _coarse_quantile(key: tuple[int, ...], size: int, ps: float, wavelength: float, q: float) -> float:
    """Quantile ``q`` of an fBm field sampled on a regular coarse grid of the scene (≤ 256×256 points)."""
    step = max(1, size // 256)
    coords = (np.arange(0, size, step) + 0.5) * ps
    return float(np.quantile(_fbm(key, coords, coords, wavelength, 4), q))


def build_plan(opts: SynthOptions) -> ScenePlan:
    """Draw the scene layout from ``opts.seed``: towns, rivers, roads, forest/lake thresholds, field zones."""
    validate_options(opts)
    size, ps, seed = int(opts.size), float(opts.pixel_size), int(opts.seed)
    extent = size * ps
    rng = np.random.default_rng([seed, 0xA11])
    macro = float(np.clip(extent / 3.0, 600.0, 6000.0))
    forest_thr = _coarse_quantile((seed, _T_FOREST), size, ps, macro, 0.70)
    lake_thr = _coarse_quantile((seed, _T_LAKE), size, ps, macro, 0.975)

    n_towns = max(1, int(round(extent * extent / 300e6)))
    base_r = float(np.clip(extent * 0.1, 150.0, 1200.0))
    towns = []
    for i in range(n_towns):
        lo, hi = (0.25, 0.75) if i == 0 else (0.0, 1.0)
        towns.append(_Town(
            cx=float(rng.uniform(lo, hi) * extent), cy=float(rng.uniform(lo, hi) * extent),
            radius=base_r * float(rng.uniform(1.0, 1.3) if i == 0 else rng.uniform(0.4, 1.3)),
            angle=float(rng.uniform(0, math.pi / 2)), spacing=float(rng.uniform(70.0, 120.0)),
            phases=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi)))))

    rivers = []
    for i in range(1 + int(extent // 50000)):
        rivers.append(_River(
            px=float(rng.uniform(0.3, 0.7) * extent), py=float(rng.uniform(0.3, 0.7) * extent),
            angle=float(rng.uniform(0, math.pi)),
            half_width=max(float(rng.uniform(30.0, 60.0)), 1.5 * ps),
            meanders=tuple((float(a), float(w), float(rng.uniform(0, 2 * math.pi)))
                           for a, w in ((700.0, 6000.0), (220.0, 1800.0), (60.0, 700.0)))))

    road_hw = max(8.0, 0.5 * ps)
    roads = []
    centres = np.array([[t.cx, t.cy] for t in towns])
    linked: set[tuple[int, int]] = set()
    for i in range(len(towns)):  # each town to its two nearest neighbours closer than 25 km
        d = np.hypot(*(centres - centres[i]).T)
        for j in np.argsort(d)[1:3]:
            pair = (min(i, int(j)), max(i, int(j)))
            if d[j] < 25000.0 and pair not in linked:
                linked.add(pair)
                roads.append(_Road(*centres[pair[0]], *centres[pair[1]], half_width=road_hw))
    for _ in range(2):  # through roads crossing the whole scene via a town
        t = towns[int(rng.integers(len(towns)))]
        a = float(rng.uniform(0, math.pi))
        dx, dy = math.cos(a) * 2 * extent, math.sin(a) * 2 * extent
        roads.append(_Road(t.cx - dx, t.cy - dy, t.cx + dx, t.cy + dy, half_width=road_hw * 1.3))

    zone = 2500.0
    return ScenePlan(
        opts=opts, extent=extent, macro_wavelength=macro, forest_threshold=forest_thr, lake_threshold=lake_thr,
        zone_size=zone, zone_offset=(float(rng.uniform(0, zone)), float(rng.uniform(0, zone))),
        field_angle=float(rng.uniform(0, math.pi / 2)), towns=tuple(towns), rivers=tuple(rivers),
        roads=tuple(roads), wedge=(0.01 * size, 0.07 * size))


# ------------------------------------------------------------------------------------------ rendering
@dataclass
class _Layers:
    """Per-pixel state of a window while it is composed: material and modifiers."""

    mat: np.ndarray       # uint8 material id
    sar_vv: np.ndarray    # float32 dB offset added to VV
    sar_vh: np.ndarray    # float32 dB offset added to VH
    bright: np.ndarray    # float32 multiplier of all optical bands
    vigour: np.ndarray    # float32 multiplier of red-edge/NIR bands


def _pixel_coords(window: PixelWindow, ps: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (metres from the scene's upper-left corner, y down): rows, cols."""
    ys = (np.arange(window.row_off, window.row_end, dtype=np.float64) + 0.5) * ps
    xs = (np.arange(window.col_off, window.col_end, dtype=np.float64) + 0.5) * ps
    return ys, xs


def _fields(plan: ScenePlan, ys: np.ndarray, xs: np.ndarray) -> _Layers:
    """Agricultural parcels: zones of rotated staggered parcel grids, one hashed crop type per parcel."""
    seed, z = plan.opts.seed, plan.zone_size
    zy = np.floor((ys + plan.zone_offset[1]) / z).astype(np.int64)
    zx = np.floor((xs + plan.zone_offset[0]) / z).astype(np.int64)
    ty = np.arange(zy.min(), zy.max() + 1)
    tx = np.arange(zx.min(), zx.max() + 1)
    zh = _hash(seed, _T_ZONE, ty[:, None], tx[None, :])
    angle = plan.field_angle + (_uniform(zh) - 0.5) * math.radians(40.0)
    width = 80.0 + 180.0 * _uniform(_rehash(zh, 1))
    length = 180.0 + 350.0 * _uniform(_rehash(zh, 2))
    ry, rx = (zy - ty[0])[:, None], (zx - tx[0])[None, :]
    cy = (zy + 0.5) * z - plan.zone_offset[1]
    cx = (zx + 0.5) * z - plan.zone_offset[0]
    dy, dx = (ys - cy)[:, None], (xs - cx)[None, :]
    cos_a, sin_a = np.cos(angle)[ry, rx], np.sin(angle)[ry, rx]
    u = dx * cos_a + dy * sin_a
    v = dy * cos_a - dx * sin_a
    i = np.floor(u / width[ry, rx]).astype(np.int64)
    zyy, zxx = zy[:, None], zx[None, :]
    stagger = _uniform(_hash(seed, _T_STAGGER, zyy, zxx, i))
    j = np.floor(v / length[ry, rx] + stagger).astype(np.int64)
    ph = _hash(seed, _T_PARCEL, zyy, zxx, i, j)
    mat = _PARCEL_MATERIALS[np.searchsorted(_PARCEL_CUMPROB, _uniform(ph), side="right").clip(0, 5)]
    sar = ((_uniform(_rehash(ph, 1)) - 0.5) * 3.0).astype(np.float32)  # ±1.5 dB per parcel
    bright = (0.85 + 0.3 * _uniform(_rehash(ph, 2))).astype(np.float32)
    vigour = (0.85 + 0.3 * _uniform(_rehash(ph, 3))).astype(np.float32)
    return _Layers(mat=mat, sar_vv=sar, sar_vh=sar * np.float32(1.2), bright=bright, vigour=vigour)


def _box_slices(window_ys: np.ndarray, window_xs: np.ndarray, x0: float, y0: float, x1: float,
                y1: float) -> tuple[slice, slice] | None:
    """Row and column slices of the window pixels whose centres lie in [x0, x1]×[y0, y1], or None."""
    r0, r1 = np.searchsorted(window_ys, y0, side="left"), np.searchsorted(window_ys, y1, side="right")
    c0, c1 = np.searchsorted(window_xs, x0, side="left"), np.searchsorted(window_xs, x1, side="right")
    if r1 <= r0 or c1 <= c0:
        return None
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))


def _paint_towns(plan: ScenePlan, ys: np.ndarray, xs: np.ndarray, lay: _Layers) -> None:
    """Towns: lobed discs with a rotated street grid; each block hashed to grey roofs, red roofs or gardens."""
    seed = plan.opts.seed
    street = max(12.0, plan.opts.pixel_size)
    for t_id, t in enumerate(plan.towns):
        reach = t.radius * 1.4
        box = _box_slices(ys, xs, t.cx - reach, t.cy - reach, t.cx + reach, t.cy + reach)
        if box is None:
            continue
        sy, sx = box
        dy, dx = (ys[sy] - t.cy)[:, None], (xs[sx] - t.cx)[None, :]
        phi = np.arctan2(dy, dx)
        r_edge = t.radius * (1.0 + 0.22 * np.sin(3 * phi + t.phases[0]) + 0.12 * np.sin(5 * phi + t.phases[1]))
        inside = np.hypot(dx, dy) < r_edge
        if not inside.any():
            continue
        ca, sa = math.cos(t.angle), math.sin(t.angle)
        u, v = dx * ca + dy * sa, dy * ca - dx * sa
        bu, bv = np.floor(u / t.spacing), np.floor(v / t.spacing)
        on_street = ((u - bu * t.spacing) < street) | ((v - bv * t.spacing) < street)
        bh = _hash(seed, _T_BLOCK, t_id, bu.astype(np.int64), bv.astype(np.int64))
        kind = _uniform(bh)
        mat = np.where(kind < 0.5, M_URBAN_GREY, np.where(kind < 0.82, M_URBAN_RED, M_URBAN_GREEN)).astype(np.uint8)
        mat = np.where(on_street, np.uint8(M_ROAD), mat)
        off = (-3.0 + 8.0 * _uniform(_rehash(bh, 1))).astype(np.float32)  # orientation-dependent double bounce
        off = np.where(on_street, np.float32(0.0), off)
        bright = (0.9 + 0.2 * _uniform(_rehash(bh, 2))).astype(np.float32)
        for arr, val in ((lay.mat, mat), (lay.sar_vv, off), (lay.sar_vh, off * np.float32(0.6)),
                         (lay.bright, bright), (lay.vigour, np.float32(1.0))):
            region = arr[sy, sx]
            region[inside] = np.broadcast_to(val, inside.shape)[inside]


def _paint_rivers(plan: ScenePlan, ys: np.ndarray, xs: np.ndarray, lay: _Layers) -> None:
    """Rivers: meandering bands |v − Σ a·sin(2πu/λ + φ)| / √(1 + g'²) < half width around a straight axis."""
    for rv in plan.rivers:
        ca, sa = math.cos(rv.angle), math.sin(rv.angle)
        vy, vx = (ys - rv.py) * ca, -(xs - rv.px) * sa
        corners = [vy[0] + vx[0], vy[0] + vx[-1], vy[-1] + vx[0], vy[-1] + vx[-1]]
        if min(corners) > rv.reach or max(corners) < -rv.reach:
            continue
        v = vy[:, None] + vx[None, :]
        u = ((ys - rv.py) * sa)[:, None] + ((xs - rv.px) * ca)[None, :]
        g = np.zeros_like(u)
        slope = np.zeros_like(u)
        for a, wl, ph in rv.meanders:
            k = 2 * math.pi / wl
            g += a * np.sin(k * u + ph)
            slope += a * k * np.cos(k * u + ph)
        water = np.abs(v - g) < rv.half_width * np.sqrt(1.0 + slope * slope)
        _paint(lay, water, M_WATER)


def _paint(lay: _Layers, mask: np.ndarray, material: int) -> None:
    """Set ``material`` where ``mask`` and clear the per-object modifiers (offset 0 dB, multipliers 1)."""
    lay.mat[mask] = material
    lay.sar_vv[mask] = 0.0
    lay.sar_vh[mask] = 0.0
    lay.bright[mask] = 1.0
    lay.vigour[mask] = 1.0


def _paint_roads(plan: ScenePlan, ys: np.ndarray, xs: np.ndarray, lay: _Layers) -> None:
    """Roads: pixels within the half width of a straight segment (distance to the clamped projection)."""
    for rd in plan.roads:
        hw = rd.half_width
        box = _box_slices(ys, xs, min(rd.ax, rd.bx) - hw, min(rd.ay, rd.by) - hw,
                          max(rd.ax, rd.bx) + hw, max(rd.ay, rd.by) + hw)
        if box is None:
            continue
        sy, sx = box
        ex, ey = rd.bx - rd.ax, rd.by - rd.ay
        px, py = (xs[sx] - rd.ax)[None, :], (ys[sy] - rd.ay)[:, None]
        # cheap reject: perpendicular distance to the infinite line first
        norm = math.hypot(ex, ey)
        perp = np.abs(px * ey - py * ex) / norm
        near = perp < hw
        if not near.any():
            continue
        t = np.clip((px * ex + py * ey) / (norm * norm), 0.0, 1.0)
        on = near & (np.hypot(px - t * ex, py - t * ey) < hw)
        _paint(_Layers(lay.mat[sy, sx], lay.sar_vv[sy, sx], lay.sar_vh[sy, sx], lay.bright[sy, sx],
                       lay.vigour[sy, sx]), on, M_ROAD)


def _speckle(seed: int, band: int, window: PixelWindow) -> np.ndarray:
    """Gamma(ENL, 1/ENL) speckle for a window, drawn per fixed block from a (seed, band, block) generator."""
    b = SPECKLE_BLOCK
    br0, br1 = window.row_off // b, (window.row_end - 1) // b
    bc0, bc1 = window.col_off // b, (window.col_end - 1) // b
    out = np.empty(((br1 - br0 + 1) * b, (bc1 - bc0 + 1) * b), dtype=np.float32)
    for br in range(br0, br1 + 1):
        for bc in range(bc0, bc1 + 1):
            rng = np.random.default_rng([seed, _T_SPECKLE, band, br, bc])
            out[(br - br0) * b:(br - br0 + 1) * b, (bc - bc0) * b:(bc - bc0 + 1) * b] = \
                rng.standard_gamma(ENL, size=(b, b), dtype=np.float32)
    r, c = window.row_off - br0 * b, window.col_off - bc0 * b
    return out[r:r + window.height, c:c + window.width] * np.float32(1.0 / ENL)


def _layers(plan: ScenePlan, ys: np.ndarray, xs: np.ndarray) -> _Layers:
    """Compose the materials of a window: fields, forest, towns, lakes, rivers, roads (later wins)."""
    seed = plan.opts.seed
    lay = _fields(plan, ys, xs)
    _paint(lay, _fbm((seed, _T_FOREST), ys, xs, plan.macro_wavelength, 4) > plan.forest_threshold, M_FOREST)
    _paint_towns(plan, ys, xs, lay)
    _paint(lay, _fbm((seed, _T_LAKE), ys, xs, plan.macro_wavelength, 4) > plan.lake_threshold, M_WATER)
    _paint_rivers(plan, ys, xs, lay)
    _paint_roads(plan, ys, xs, lay)
    return lay


def _render_sar(plan: ScenePlan, window: PixelWindow, ys: np.ndarray, xs: np.ndarray, lay: _Layers,
                texture: np.ndarray) -> np.ndarray:
    """σ⁰ in dB: material mean + offsets + texture + incidence trend, × gamma speckle in linear units."""
    seed, size = plan.opts.seed, plan.opts.size
    water = lay.mat == M_WATER
    forest = lay.mat == M_FOREST
    crown = _fbm((seed, _T_CROWN), ys, xs, 80.0, 2)
    tex_db = np.where(water, np.float32(0.0), texture + np.where(forest, crown, np.float32(0.0)))
    # incidence angle 31° at the near-range (left) edge, +14° over a 250 km swath; σ⁰ falls with incidence
    theta = 31.0 + 14.0 * xs / 250000.0
    slope = np.where(water, np.float32(0.25), np.float32(0.10))
    trend = (-(theta - 34.0)).astype(np.float32)[None, :] * slope
    sar = np.empty((2, window.height, window.width), dtype=np.float32)
    for band, offset in enumerate((lay.sar_vv, lay.sar_vh)):
        db = _MAT_SAR_DB[band][lay.mat] + offset + tex_db + trend
        linear = np.power(np.float32(10.0), db / np.float32(10.0)) * _speckle(seed, band, window)
        sar[band] = linear_to_db(linear)
    # swath-edge wedge: no data left of a slanted line along the near-range edge
    w_top, w_bot = plan.wedge
    rows = (np.arange(window.row_off, window.row_end) + 0.5) / size
    edge = w_top + (w_bot - w_top) * rows
    cols = np.arange(window.col_off, window.col_end) + 0.5
    sar[:, cols[None, :] < edge[:, None]] = np.nan
    return sar


def _render_optical(plan: ScenePlan, window: PixelWindow, ys: np.ndarray, xs: np.ndarray, lay: _Layers,
                    texture: np.ndarray) -> np.ndarray:
    """L1C DN: (spectrum[material] · brightness · vigour · (1 + texture) + haze + sensor noise) · 10000."""
    seed, size = plan.opts.seed, plan.opts.size
    water = lay.mat == M_WATER
    forest = lay.mat == M_FOREST
    crown = _fbm((seed, _T_CROWN), ys, xs, 40.0, 2)
    tex = np.where(water, np.float32(0.02), np.float32(0.06)) * texture + np.where(forest, crown * np.float32(0.1),
                                                                                   np.float32(0.0))
    scale = lay.bright * (np.float32(1.0) + tex)
    haze = np.float32(0.008) * (np.float32(1.0) + _fbm((seed, _T_HAZE), ys, xs, plan.macro_wavelength * 3, 2))
    rows = np.arange(window.row_off, window.row_end, dtype=np.int64)[:, None]
    cols = np.arange(window.col_off, window.col_end, dtype=np.int64)[None, :]
    noise = ((_uniform(_hash(seed, _T_NOISE, rows, cols)) - 0.5) * 0.004).astype(np.float32)
    out = np.empty((len(S2_BANDS), window.height, window.width), dtype=np.uint16)
    for b in range(len(S2_BANDS)):
        refl = _MAT_SPECTRA[b][lay.mat] * scale
        if b in _VIGOUR_BANDS:
            refl *= lay.vigour
        refl += haze * _HAZE_WEIGHT[b] + noise
        out[b] = reflectance_to_dn(np.maximum(refl, np.float32(0.0)))
    # granule edge: a small no-data triangle in the lower-right corner (as at the edge of an orbit)
    corner = (size - rows - 0.5) + (size - cols - 0.5) < 0.12 * size
    out[:, corner] = 0
    return out


def render_window(plan: ScenePlan, window: PixelWindow) -> SceneWindow:
    """Render one window of the scene; the result depends only on the plan and the window's pixels."""
    if window.row_off < 0 or window.col_off < 0 or window.row_end > plan.opts.size or \
            window.col_end > plan.opts.size or window.height <= 0 or window.width <= 0:
        raise InputError(f"window {window} is outside the {plan.opts.size}×{plan.opts.size} scene")
    ys, xs = _pixel_coords(window, plan.opts.pixel_size)
    lay = _layers(plan, ys, xs)
    texture = _fbm((plan.opts.seed, _T_TEX), ys, xs, 400.0, 3)
    sar = _render_sar(plan, window, ys, xs, lay, texture)
    optical = _render_optical(plan, window, ys, xs, lay, texture)
    return SceneWindow(window=window, sar=sar, optical=optical, labels=_MAT_CLASS[lay.mat])


# ------------------------------------------------------------------------------------------ writing
def _profiles(opts: SynthOptions) -> dict[str, dict]:
    """Rasterio creation profiles of s1.tif, s2.tif and labels.tif on the scene grid."""
    from affine import Affine

    ox, oy = opts.resolved_origin()
    ps = float(opts.pixel_size)
    common = dict(GTIFF_PROFILE, width=opts.size, height=opts.size, crs=opts.crs,
                  transform=Affine(ps, 0.0, ox, 0.0, -ps, oy), BIGTIFF="IF_SAFER")
    return {
        "s1": dict(common, count=len(S1_BANDS), dtype="float32", nodata=float("nan"), predictor=3),
        "s2": dict(common, count=len(S2_BANDS), dtype="uint16", nodata=0, predictor=2),
        "labels": dict(common, count=1, dtype="uint8", nodata=LABEL_NODATA),
    }


class _BlockRowWriter:
    """Collects rendered full-width strips and writes them one GeoTIFF block row at a time.

    Every file then receives the same sequence of writes whatever the strip height, so its bytes do not
    depend on how the rendering was chunked.
    """

    def __init__(self, dsts: dict, size: int, block_rows: int) -> None:
        self.dsts, self.size, self.block_rows = dsts, size, block_rows
        self.pending: list[SceneWindow] = []
        self.row = 0

    def add(self, strip: SceneWindow) -> None:
        """Queue a strip and write every complete block row."""
        self.pending.append(strip)
        self._flush(final=False)

    def close(self) -> None:
        """Write the rows left."""
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        rows = sum(p.window.height for p in self.pending)
        while rows >= self.block_rows or (final and rows > 0):
            sar = np.concatenate([p.sar for p in self.pending], axis=1)
            opt = np.concatenate([p.optical for p in self.pending], axis=1)
            lab = np.concatenate([p.labels for p in self.pending], axis=0)
            n = min(self.block_rows, rows)
            for c0 in range(0, self.size, _COL_CHUNK):
                c1 = min(self.size, c0 + _COL_CHUNK)
                rw = PixelWindow(self.row, c0, n, c1 - c0).to_rasterio()
                self.dsts["s1"].write(sar[:, :n, c0:c1], window=rw)
                self.dsts["s2"].write(opt[:, :n, c0:c1], window=rw)
                self.dsts["labels"].write(lab[:n, c0:c1], 1, window=rw)
            rest = PixelWindow(self.row + n, 0, rows - n, self.size)
            self.pending = [SceneWindow(rest, sar[:, n:], opt[:, n:], lab[n:])] if rows > n else []
            self.row += n
            rows -= n


def _render_strip(plan: ScenePlan, row_off: int, height: int) -> SceneWindow:
    """Render a full-width strip in column windows of ``_COL_CHUNK`` pixels (bounded memory)."""
    size = plan.opts.size
    win = PixelWindow(row_off, 0, height, size)
    sar = np.empty((len(S1_BANDS), height, size), dtype=np.float32)
    opt = np.empty((len(S2_BANDS), height, size), dtype=np.uint16)
    lab = np.empty((height, size), dtype=np.uint8)
    for c0 in range(0, size, _COL_CHUNK):
        part = render_window(plan, PixelWindow(row_off, c0, height, min(_COL_CHUNK, size - c0)))
        cs = slice(c0, c0 + part.window.width)
        sar[:, :, cs], opt[:, :, cs], lab[:, cs] = part.sar, part.optical, part.labels
    return SceneWindow(win, sar, opt, lab)


def synth_scene(out_dir: str | Path, opts: SynthOptions, overwrite: bool = False,
                reporter: Reporter = NULL_REPORTER, strip_rows: int = 256) -> SynthResult:
    """Write ``s1.tif``, ``s2.tif`` and ``labels.tif`` of a generated scene into ``out_dir`` (atomically).

    The scene is rendered in strips of ``strip_rows`` rows (memory only; the bytes do not depend on it).
    """
    import rasterio

    if strip_rows < 1:
        raise InputError(f"strip_rows must be positive, got {strip_rows}")
    start = time.perf_counter()
    plan = build_plan(opts)
    out = Path(out_dir)
    profiles = _profiles(opts)
    meta = json.dumps(dict(asdict(opts), origin=list(opts.resolved_origin()), enl=ENL), sort_keys=True)
    names = {"s1": "s1.tif", "s2": "s2.tif", "labels": "labels.tif"}
    strips = list(range(0, opts.size, strip_rows))
    with atomic_dir(out, overwrite) as tmp, rasterio.Env(GDAL_CACHEMAX=256):
        dsts = {k: rasterio.open(tmp / names[k], "w", **profiles[k]) for k in names}
        try:
            writer = _BlockRowWriter(dsts, opts.size, int(GTIFF_PROFILE["blockysize"]))
            with reporter.task("Synthesising scene", total=len(strips)) as task:
                for r0 in strips:
                    writer.add(_render_strip(plan, r0, min(strip_rows, opts.size - r0)))
                    task.advance(1)
                writer.close()
            for i, b in enumerate(S1_BANDS, 1):
                dsts["s1"].set_band_description(i, b)
            for i, b in enumerate(S2_BANDS, 1):
                dsts["s2"].set_band_description(i, b)
            dsts["labels"].set_band_description(1, "land_cover")
            dsts["s1"].update_tags(sarkit_synth=meta, units="dB", speckle_enl=str(ENL))
            dsts["s2"].update_tags(sarkit_synth=meta, units="reflectance*10000 (L1C, offset 0)")
            dsts["labels"].update_tags(sarkit_synth=meta, class_names=json.dumps(CLASS_NAMES))
        finally:
            for d in dsts.values():
                d.close()
    ox, oy = opts.resolved_origin()
    ext = opts.size * opts.pixel_size
    return SynthResult(out_dir=out, s1_path=out / names["s1"], s2_path=out / names["s2"],
                       labels_path=out / names["labels"], class_names=list(CLASS_NAMES), size=opts.size,
                       crs=opts.crs, bounds=Bounds(ox, oy - ext, ox + ext, oy),
                       seconds=time.perf_counter() - start)


def class_fractions(labels: np.ndarray, names: Sequence[str] = CLASS_NAMES) -> dict[str, float]:
    """Fraction of valid pixels per class: count(class) / count(label ≠ 255)."""
    valid = labels[labels != LABEL_NODATA]
    counts = np.bincount(valid.ravel(), minlength=len(names))
    total = max(1, int(valid.size))
    return {n: float(counts[i]) / total for i, n in enumerate(names)}
