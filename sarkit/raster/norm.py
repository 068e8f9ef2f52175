"""Sentinel-1 and Sentinel-2 preprocessing: units, band selection and the fixed normalisation ranges.

Model range is [-1, 1] for every channel. The mapping from physical units is fixed and global:

* SAR (Sentinel-1): backscatter in dB (linear power converted; the unit given or detected by ``units_of``),
  clipped to ``[lo, hi]`` per band (default [-25, 0] dB for VV and VH, as SEN12MS uses), then
  ``x = 2·(dB − lo)/(hi − lo) − 1``.
* Optical (Sentinel-2): reflectance ``ρ = (DN + offset) / 10000`` (``offset`` = −1000 for products of
  processing baseline 04.00 and later when the user asks for it, else 0), clipped to ``[lo, hi]`` (default
  [0, 0.3]), then ``x = 2·(ρ − lo)/(hi − lo) − 1``.

The ranges are never computed from the data. They are written into ``tiling.json`` and into every checkpoint,
so that training, inference and evaluation use the same numbers; per-tile statistics would make seams.
Nodata stays NaN through ``encode`` and ``decode``.
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from sarkit.errors import InputError

#: Sentinel-2 L1C band order of 13-band products (SEN12MS, Sen1Floods11, SAFE stacks).
S2_BANDS: tuple[str, ...] = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
#: Sentinel-1 dual polarisation band order.
S1_BANDS: tuple[str, ...] = ("VV", "VH")
#: Default optical bands: true colour red, green, blue.
RGB_BANDS: tuple[str, ...] = ("B4", "B3", "B2")
#: DN to reflectance scale of Sentinel-2 products.
S2_SCALE = 10000.0
#: Offset added to DN before scaling for processing baseline 04.00+ (when the user asks for it).
S2_BASELINE_OFFSET = -1000.0
#: GeoTIFF tag in which sarkit records the offset of the Sentinel-2 digital numbers it writes (tiles, translate).
DN_OFFSET_TAG = "dn_offset"
DEFAULT_SAR_RANGE = (-25.0, 0.0)
DEFAULT_OPTICAL_RANGE = (0.0, 0.3)


def linear_to_db(power: np.ndarray) -> np.ndarray:
    """Backscatter power (linear σ⁰) to decibels: ``10·log10(p)``; zero or negative power becomes NaN."""
    p = np.asarray(power, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(p)
    out[~(p > 0)] = np.nan
    return out.astype(np.float32)


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """Decibels to linear power: ``10^(dB/10)``."""
    return np.power(10.0, np.asarray(db, dtype=np.float32) / 10.0).astype(np.float32)


#: Percentiles (low, high) of the SAR unit rule: robust to up to 2 % of outliers at either end.
UNIT_PERCENTILES = (2.0, 98.0)
#: Linear σ⁰: median below 1 (0 dB), low percentile at least −1 (thermal-noise removal leaves only small
#: negative powers), high percentile above 0 and at most 10 (+10 dB).
LINEAR_MEDIAN_MAX, LINEAR_LOW_MIN, LINEAR_HIGH_MAX = 1.0, -1.0, 10.0
#: dB σ⁰: median in [−40, 10] dB, low percentile at least −70 dB, high percentile at most 40 dB.
DB_MEDIAN_RANGE, DB_LOW_MIN, DB_HIGH_MAX = (-40.0, 10.0), -70.0, 40.0


@dataclass(frozen=True)
class ValueSpread:
    """Robust summary of a sample of raster values: how many are finite, their min, max, median and the low and
    high ``UNIT_PERCENTILES`` (NaN everywhere when none is finite)."""

    count: int
    min: float
    low: float
    median: float
    high: float
    max: float

    def text(self) -> str:
        """"values MIN…MAX, median M, 2nd–98th percentile LOW…HIGH" (or "no finite values")."""
        if self.count == 0:
            return "no finite values"
        lo, hi = UNIT_PERCENTILES
        return (f"values {self.min:.4g}…{self.max:.4g}, median {self.median:.4g}, "
                f"{lo:g}–{hi:g}th percentile {self.low:.4g}…{self.high:.4g}")


def value_spread(sample: np.ndarray) -> ValueSpread:
    """``ValueSpread`` of the finite values of ``sample`` (NaN and ±inf are nodata)."""
    v = np.asarray(sample, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return ValueSpread(0, *([math.nan] * 5))
    low, median, high = np.percentile(v, [UNIT_PERCENTILES[0], 50.0, UNIT_PERCENTILES[1]])
    return ValueSpread(int(v.size), float(v.min()), float(low), float(median), float(high), float(v.max()))


def units_of(spread: ValueSpread) -> str | None:
    """The SAR unit that a sample's spread fits: "linear" (power), "db", or None (neither: not σ⁰ backscatter).

    Linear power: median < 1, low percentile ≥ −1, 0 < high percentile ≤ 10. dB: median in [−40, 10], low
    percentile ≥ −70, high percentile ≤ 40. Without finite values "db" (nothing to convert). See docs/data.md.
    """
    if spread.count == 0:
        return "db"
    if (spread.median < LINEAR_MEDIAN_MAX and spread.low >= LINEAR_LOW_MIN
            and 0.0 < spread.high <= LINEAR_HIGH_MAX):
        return "linear"
    if (DB_MEDIAN_RANGE[0] <= spread.median <= DB_MEDIAN_RANGE[1] and spread.low >= DB_LOW_MIN
            and spread.high <= DB_HIGH_MAX):
        return "db"
    return None


#: How to go on when SAR values fit neither unit.
UNITS_HINT = "give a σ⁰ file, or say which unit it holds with --s1-units db|linear (sarkit tile)"


def not_sar_message(what: str, seen: str, hint: str = UNITS_HINT) -> str:
    """The one-line refusal of a raster that cannot be Sentinel-1 σ⁰: what was seen and how to go on."""
    return (f"{what} does not look like Sentinel-1 backscatter ({seen}): sarkit reads σ⁰ as float dB or linear "
            f"power in 1 or 2 bands (VV[, VH]); {hint}")


def detect_s1_units(sample: np.ndarray, what: str = "SAR raster") -> str:
    """Whether SAR values are linear power or dB, from a sample (finite values only; rule: ``units_of``).

    Returns "linear" or "db"; ``InputError`` naming ``what`` when the values fit neither.
    """
    spread = value_spread(sample)
    units = units_of(spread)
    if units is None:
        raise InputError(not_sar_message(what, spread.text()))
    return units


def dn_to_reflectance(dn: np.ndarray, offset: float = 0.0, nodata: float | None = 0) -> np.ndarray:
    """Sentinel-2 digital numbers to reflectance: ``(DN + offset) / 10000``; nodata DN becomes NaN."""
    a = np.asarray(dn)
    out = (a.astype(np.float32) + np.float32(offset)) / np.float32(S2_SCALE)
    if nodata is not None:
        out[a == nodata] = np.nan
    return out


def reflectance_to_dn(refl: np.ndarray, offset: float = 0.0, dtype: str = "uint16", nodata: int = 0) -> np.ndarray:
    """Reflectance back to digital numbers ``round(ρ·10000 − offset)``; NaN becomes ``nodata``.

    Valid pixels are kept at least 1 so they never collide with the nodata value 0.
    """
    r = np.asarray(refl, dtype=np.float32)
    dn = np.rint(r * S2_SCALE - offset)
    info = np.iinfo(dtype)
    dn = np.clip(dn, max(info.min, nodata + 1), info.max)
    dn[~np.isfinite(r)] = nodata
    return dn.astype(dtype)


def s2_dn_offset(baseline_offset: bool) -> float:
    """Sentinel-2 DN offset: ``S2_BASELINE_OFFSET`` (−1000) for processing baseline 04.00+, else 0."""
    return S2_BASELINE_OFFSET if baseline_offset else 0.0


def dn_offset_from_tags(tags: Mapping[str, str], default: float, what: str = "raster") -> float:
    """The DN offset recorded in a raster's ``dn_offset`` tag, else ``default`` (the user's choice)."""
    text = tags.get(DN_OFFSET_TAG)
    if text is None or not str(text).strip():
        return float(default)
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{what} has an unreadable {DN_OFFSET_TAG} tag {text!r}; expected a number "
                         f"such as {S2_BASELINE_OFFSET:g}") from None
    if not np.isfinite(value):
        raise InputError(f"{what} has a non-finite {DN_OFFSET_TAG} tag {text!r}")
    return value


@dataclass(frozen=True)
class Normalization:
    """Fixed per-band range of one modality and its affine map to the model range [-1, 1].

    ``modality`` is "sar" (values in dB) or "optical" (reflectance). ``offset`` is the optical DN offset
    applied when reading digital numbers (0 or −1000); ``units`` is the SAR input unit policy.
    """

    modality: str
    bands: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    offset: float = 0.0
    units: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in ("sar", "optical"):
            raise InputError(f"unknown modality {self.modality!r}: use sar or optical")
        if not (len(self.bands) == len(self.lo) == len(self.hi)) or not self.bands:
            raise InputError("normalisation needs one lo/hi pair per band")
        for b, lo, hi in zip(self.bands, self.lo, self.hi):
            if not hi > lo:
                raise InputError(f"normalisation range of {b} must have hi > lo, got [{lo}, {hi}]")

    @property
    def channels(self) -> int:
        return len(self.bands)

    def _lohi(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (-1,) + (1,) * (ndim - 1)
        lo = np.asarray(self.lo, dtype=np.float32).reshape(shape)
        hi = np.asarray(self.hi, dtype=np.float32).reshape(shape)
        return lo, hi

    def encode(self, physical: np.ndarray) -> np.ndarray:
        """Physical values (C, H, W) → model range: clip to [lo, hi], ``2·(v − lo)/(hi − lo) − 1``. NaN stays."""
        v = np.asarray(physical, dtype=np.float32)
        lo, hi = self._lohi(v.ndim)
        x = np.clip(v, lo, hi)  # a new array: the caller's is left alone; the rest works in place
        x -= lo
        x *= 2.0 / (hi - lo)
        x -= 1.0
        return x

    def decode(self, model: np.ndarray) -> np.ndarray:
        """Model range (C, H, W) → physical values: ``lo + (x + 1)/2·(hi − lo)`` after clipping x to [-1, 1]."""
        x = np.clip(np.asarray(model, dtype=np.float32), -1.0, 1.0)  # a new array; the rest works in place
        lo, hi = self._lohi(x.ndim)
        x += 1.0
        x *= 0.5 * (hi - lo)
        x += lo
        return x

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands"], d["lo"], d["hi"] = list(self.bands), list(self.lo), list(self.hi)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalization":
        return cls(
            modality=d["modality"],
            bands=tuple(d["bands"]),
            lo=tuple(float(x) for x in d["lo"]),
            hi=tuple(float(x) for x in d["hi"]),
            offset=float(d.get("offset", 0.0)),
            units=d.get("units", "auto"),
            extra=dict(d.get("extra", {})),
        )

    def select(self, bands: Sequence[str]) -> "Normalization":
        """The same normalisation restricted to (and reordered as) ``bands``."""
        idx = [self.bands.index(b) for b in bands]
        return Normalization(self.modality, tuple(bands), tuple(self.lo[i] for i in idx),
                             tuple(self.hi[i] for i in idx), self.offset, self.units, dict(self.extra))


def sar_normalization(bands: Sequence[str] = S1_BANDS, db_range: tuple[float, float] = DEFAULT_SAR_RANGE,
                      units: str = "auto") -> Normalization:
    """SAR normalisation with one dB range for every polarisation."""
    if units not in ("auto", "db", "linear"):
        raise InputError(f"--s1-units must be auto, db or linear, got {units!r}")
    lo, hi = db_range
    return Normalization("sar", tuple(bands), (lo,) * len(bands), (hi,) * len(bands), units=units)


def optical_normalization(bands: Sequence[str] = RGB_BANDS,
                          refl_range: tuple[float, float] = DEFAULT_OPTICAL_RANGE,
                          baseline_offset: bool = False) -> Normalization:
    """Optical normalisation with one reflectance range for every band."""
    lo, hi = refl_range
    return Normalization("optical", tuple(bands), (lo,) * len(bands), (hi,) * len(bands),
                         offset=s2_dn_offset(baseline_offset))


def check_range(rng: Sequence[float] | None, option: str) -> tuple[float, float] | None:
    """``None``, or ``rng`` as a finite ``(lo, hi)`` of floats with hi > lo (``InputError`` naming ``option``)."""
    if rng is None:
        return None
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError):
        raise InputError(f"{option} must be two numbers 'lo,hi', got {rng!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise InputError(f"{option} must have hi > lo, got '{lo:g},{hi:g}'")
    return lo, hi


def band_names(src: Any, default: Sequence[str] | None = None) -> list[str]:
    """Band names of an open raster: its band descriptions, else ``default`` when the count fits, else B1…Bn.

    13-band rasters without descriptions get the Sentinel-2 order; 2-band SAR gets VV, VH.
    """
    desc = [d for d in (src.descriptions or ())]
    if desc and all(desc) and len(set(desc)) == len(desc):
        return [d.strip() for d in desc]
    if default is not None and len(default) == src.count:
        return list(default)
    if src.count == len(S2_BANDS):
        return list(S2_BANDS)
    return [f"band{i}" for i in range(1, src.count + 1)]


def resolve_bands(available: Sequence[str], requested: Sequence[str | int], what: str,
                  option: str | None = None) -> list[int]:
    """0-based indices of ``requested`` bands (names such as "B4", or 1-based integers) in ``available``; the
    error names ``option``, the command-line option that chose them, when given."""
    upper = [a.upper() for a in available]
    out: list[int] = []
    for r in requested:
        if isinstance(r, int) or (isinstance(r, str) and r.isdigit()):
            i = int(r) - 1
            if not 0 <= i < len(available):
                hint = f" ({option} takes names or 1-based indices)" if option else ""
                raise InputError(f"{what} has {len(available)} bands; band index {r} is out of range{hint}")
            out.append(i)
            continue
        name = str(r).strip().upper()
        if name not in upper:
            hint = f"; choose with {option}" if option else ""
            raise InputError(f"{what} has no band {r!r} (bands: {', '.join(available)}){hint}")
        out.append(upper.index(name))
    return out


def sar_to_db(values: np.ndarray, units: str, nodata: float | None = None) -> np.ndarray:
    """SAR values to dB float32 with NaN for nodata and ±inf; ``units`` is "db", "linear" or "auto" (detected)."""
    v = np.asarray(values, dtype=np.float32).copy()
    if nodata is not None and not np.isnan(nodata):
        v[values == nodata] = np.nan
    v[np.isinf(v)] = np.nan  # ±inf is nodata, as NaN
    if units == "auto":
        units = detect_s1_units(v[..., ::7, ::7])
    return linear_to_db(v) if units == "linear" else v


def check_integer_reflectance(dtype: str, sample: np.ndarray, what: str) -> None:
    """Reject float reflectance in 0–1 where Sentinel-2 digital numbers (× 10000) are expected."""
    if np.dtype(dtype).kind == "f":
        v = sample[np.isfinite(sample)]
        if v.size and float(np.nanmax(v)) <= 2.0:
            raise InputError(f"{what} holds float reflectance in 0–1; sarkit expects Sentinel-2 digital numbers "
                             f"(reflectance × 10000): multiply by 10000 and save as uint16")
