"""Rasters as their users see them: named bands on one grid, read in windows as physical values with a mask.

A ``RasterSource`` has band names, a grid (``GridSpec``), a stored dtype and nodata, and two reads of a window on
that grid: ``read`` gives physical values and ``read_stored`` the stored values (used where tiles keep the
source's digital numbers). Physical units are fixed for every user (``to_physical``):

* SAR: backscatter in dB. Linear power is converted with ``10·log10(p)`` (zero or negative power is nodata);
  the unit is given, or detected once per raster (``units="auto"``) on a 3×3 grid of 128-pixel windows by the
  one rule ``sarkit.raster.norm.units_of`` (median and 2nd/98th percentiles of the finite values). A user's SAR
  raster that cannot be Sentinel-1 (more than 2 bands, integers with ``units="auto"``, values that fit neither
  unit) is refused with ``InputError``; its bands are named by ``sar_band_names``, the one SAR naming rule.
* Optical: reflectance ``ρ = (DN + offset) / 10000``; the offset is the raster's ``dn_offset`` tag (what sarkit
  writes), else the caller's default.
* Nodata: the stored nodata value (for optical 0 when the raster sets none), NaN and ±inf. Values are NaN band by
  band where nodata; a pixel is valid when every band is.

Reads go through ``sarkit.raster.align.read_bands``: a truncated or corrupt file is an ``InputError`` naming the
file and the window, and files are opened with ``sarkit.io.open_raster``.

``to_model`` maps a reading into the model range [-1, 1] through the fixed ``Normalization`` (nodata filled with
−1, the bottom of the range); ``Normalization.decode`` maps back. ``SceneReader`` reads a scene's strips that way
for translation.

``GeoTiffSource`` is one GeoTIFF (or any GDAL raster), optionally read onto another grid through
``sarkit.raster.align.AlignedReader`` (direct, whole-pixel offset, or warped). A raster made of several files (one
per band or polarisation, at different resolutions) is ``sarkit.raster.stack.StackedSource``: one ``GeoTiffSource``
per file, all placed on one common grid, answering ``read`` by reading each requested band from its file and
stacking them. Its users do not change: they only ask for band names, the grid and windows.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rasterio.enums import Resampling

from sarkit.errors import InputError
from sarkit.io import open_raster
from sarkit.raster.align import AlignedReader, ReadPath
from sarkit.raster.grid import GridSpec, PixelWindow
from sarkit.raster.norm import (S1_BANDS, Normalization, ValueSpread, band_names, detect_s1_units,
                                dn_offset_from_tags, dn_to_reflectance, linear_to_db, not_sar_message,
                                value_spread)
from sarkit.reporting import Reporter

#: Model-range value given to nodata pixels before they enter a network: the bottom of the range.
MODEL_FILL = -1.0
#: Side of the windows, and the 3×3 grid of their positions, on which SAR units are detected.
UNITS_SAMPLE_PX = 128
#: Sentinel-1 polarisations, as band names.
POLARISATIONS = ("VV", "VH", "HH", "HV")
#: Band tags that may name a band's polarisation (GDAL's Sentinel-1 driver writes POLARISATION).
POLARISATION_TAGS = ("POLARISATION", "POLARIZATION")
#: Most bands a Sentinel-1 raster has (VV, VH or HH, HV).
SAR_MAX_BANDS = 2
#: Band descriptions that name nothing: GDAL's and other tools' "Band 1", "band_2", "B 3".
_GENERIC_DESCRIPTION = re.compile(r"(band|b)[\s_-]*\d+", re.IGNORECASE)


class Modality(str, Enum):
    """What a raster holds: SAR backscatter (physical unit dB) or optical digital numbers (reflectance)."""

    SAR = "sar"
    OPTICAL = "optical"


@dataclass(frozen=True)
class Reading:
    """A window in physical units: ``values`` (C, h, w) float32, NaN band by band at nodata; ``valid`` (h, w) where
    every band holds data; ``stray`` (h, w) where a value is NaN or ±inf although the raster does not declare NaN
    as its nodata (treated as nodata; evaluation reports them)."""

    values: np.ndarray
    valid: np.ndarray
    stray: np.ndarray


def _polarisation_in(text: str | None) -> str | None:
    """The one polarisation named by ``text`` as a separate word ("Sigma0_VV_db" → VV), else None."""
    words = {w.upper() for w in re.split(r"[^A-Za-z0-9]+", text or "")} & set(POLARISATIONS)
    return words.pop() if len(words) == 1 else None


def _band_hint(src: Any, i: int) -> str | None:
    """What band ``i`` (1-based) of an open raster says it is: the polarisation its description or a
    ``POLARISATION`` tag names, else its description unless generic ("Band 1"), else None."""
    desc = (src.descriptions or (None,) * src.count)[i - 1]
    desc = desc.strip() if desc else ""
    tags = {k.upper(): v for k, v in src.tags(i).items()}
    tagged = next((tags[k].strip().upper() for k in POLARISATION_TAGS if tags.get(k)), None)
    pol = _polarisation_in(desc) or (tagged if tagged in POLARISATIONS else None)
    if pol:
        return pol
    return desc if desc and not _GENERIC_DESCRIPTION.fullmatch(desc) else None


def sar_band_names(src: Any) -> list[str]:
    """SAR band names of an open raster, the one rule of every command (tile, translate, eval).

    Each band's own word first: the polarisation its description names ("VV", "Sigma0_VH_db" → VH) or its
    ``POLARISATION`` tag, else its description unless generic ("Band 1"). Bands that say nothing: one band is the
    polarisation its file name names as a word (``…_VH.tif``), else VV; two bands are VV, VH; more are named by
    ``band_names`` (such rasters are not Sentinel-1 and are refused where read as scenes).
    """
    hints = [_band_hint(src, i) for i in range(1, src.count + 1)]
    if hints and all(hints) and len(set(h.upper() for h in hints)) == len(hints):
        return [str(h) for h in hints]
    if src.count == 1:
        return [_polarisation_in(Path(str(src.name)).stem) or S1_BANDS[0]]
    if src.count == len(S1_BANDS):
        return list(S1_BANDS)
    return band_names(src)


def stored_nodata(modality: Modality, nodata: float | None) -> float:
    """The stored value that marks nodata: the raster's, else NaN for SAR and 0 for optical digital numbers."""
    if nodata is not None:
        return float(nodata)
    return math.nan if modality is Modality.SAR else 0.0


def to_physical(stored: np.ndarray, modality: Modality, nodata: float, units: str = "db",
                dn_offset: float = 0.0) -> np.ndarray:
    """Stored values (C, h, w) → physical values (C, h, w) float32: dB (``10·log10(p)`` for linear power) or
    reflectance ``(DN + offset) / 10000``, NaN where the value is ``nodata``, NaN, ±inf or non-positive power."""
    if modality is Modality.OPTICAL:
        v = dn_to_reflectance(stored, offset=dn_offset, nodata=None if math.isnan(nodata) else nodata)
    else:
        v = np.array(stored, dtype=np.float32)  # a copy: the stored array is left alone
        if not math.isnan(nodata):
            v[stored == nodata] = np.nan
        if units == "linear":
            v = linear_to_db(v)
    inf = np.isinf(v)
    if inf.any():
        v[inf] = np.nan
    return v


def nonfinite_pixels(stored: np.ndarray) -> np.ndarray:
    """(h, w) mask of pixels where any band of the stored values (C, h, w) is NaN or ±inf."""
    if stored.dtype.kind != "f":
        return np.zeros(stored.shape[1:], dtype=bool)
    return ~np.isfinite(stored).all(axis=0)


def to_model(reading: Reading, norm: Normalization) -> tuple[np.ndarray, np.ndarray]:
    """Model-range values (C, h, w) of a reading (``norm.encode``: clip to [lo, hi], map to [-1, 1]) with nodata
    filled by ``MODEL_FILL``, and the validity mask (h, w)."""
    x = norm.encode(reading.values)
    x[np.isnan(x)] = MODEL_FILL
    return x, reading.valid


class RasterSource(ABC):
    """A raster: named bands on one grid, read in windows of that grid (see the module docstring)."""

    label: str
    modality: Modality
    band_names: tuple[str, ...]
    grid: GridSpec
    dtype: str
    nodata: float  # the stored value nodata reads as (``stored_nodata``, or the caller's fill)
    dn_offset: float

    def band_indexes(self, bands: Sequence[str] | None) -> list[int]:
        """0-based positions of ``bands`` (names, case-insensitive; None = all) in the raster."""
        if bands is None:
            return list(range(len(self.band_names)))
        upper = [n.upper() for n in self.band_names]
        missing = [b for b in bands if b.upper() not in upper]
        if missing:
            raise InputError(f"{self.label} lacks band(s) {', '.join(missing)} (has {', '.join(self.band_names)})")
        return [upper.index(b.upper()) for b in bands]

    @abstractmethod
    def read_stored(self, window: PixelWindow, bands: Sequence[str] | None = None) -> np.ndarray:
        """Stored values (C, h, w) of ``bands`` (None = all) over ``window``; nodata and outside → ``nodata``."""

    @abstractmethod
    def read(self, window: PixelWindow, bands: Sequence[str] | None = None) -> Reading:
        """Physical values of ``bands`` (None = all) over ``window``, with the validity mask."""

    def close(self) -> None:
        """Release the files behind the source."""

    def __enter__(self) -> "RasterSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class GeoTiffSource(RasterSource):
    """One GeoTIFF (any GDAL raster) as a ``RasterSource``, on its own grid or read onto ``grid``.

    ``src`` is a path (opened here with ``sarkit.io.open_raster``, closed by ``close``) or an open dataset (left
    open). ``names`` overrides the band names (default: ``sar_band_names`` for SAR, ``sarkit.raster.norm.band_names``
    for optical). ``units`` is the SAR unit: "db", "linear", or "auto" (detected once, on ``unit_bands`` or all
    bands, at first use, by ``sarkit.raster.norm.units_of``; values that fit neither unit are refused). A SAR raster
    named by the SAR rule (``names`` None: a user's Sentinel-1 file) is refused (``InputError``, ``check_sar``) when
    it has more than 2 bands, or integer values while ``units`` is "auto".
    ``dn_offset`` None takes the raster's ``dn_offset`` tag, else ``default_dn_offset``. With ``grid`` the raster
    is read onto it (``AlignedReader``, with ``resampling`` when it must be warped). ``fill`` is the stored value
    that nodata and pixels outside the raster read as (default ``stored_nodata``); the raster's own nodata value is
    replaced by it. ``label`` names the raster in messages ("scene x.tif"), ``ref_name`` the raster of ``grid``.
    """

    def __init__(self, src: Any, modality: Modality | str, *, names: Sequence[str] | None = None,
                 units: str = "db", dn_offset: float | None = None, default_dn_offset: float = 0.0,
                 grid: GridSpec | None = None, resampling: Resampling = Resampling.nearest,
                 fill: float | None = None, label: str | None = None, ref_name: str = "the reference",
                 unit_bands: Sequence[str] | None = None) -> None:
        self._owned = not hasattr(src, "read")
        ds = open_raster(src, label or "raster") if self._owned else src
        self.modality = Modality(modality)
        self.label = label or f"raster {Path(ds.name).name}"
        self.dataset = ds
        self._spread: ValueSpread | None = None
        try:
            self.band_names = tuple(names) if names is not None else tuple(
                sar_band_names(ds) if self.modality is Modality.SAR else band_names(ds))
            self.dtype = ds.dtypes[0]
            declared = stored_nodata(self.modality, ds.nodata)
            self.nodata = declared if fill is None else float(fill)
            self._declared = ds.nodata
            self._stored_dtype = np.float32 if self.modality is Modality.SAR else self.dtype
            self.dn_offset = 0.0
            if self.modality is Modality.OPTICAL:
                self.dn_offset = (float(dn_offset) if dn_offset is not None
                                  else dn_offset_from_tags(ds.tags(), default_dn_offset, self.label))
            if units not in ("db", "linear", "auto"):
                raise InputError(f"SAR units must be auto, db or linear, got {units!r}")
            # optical values are digital numbers: no unit to detect
            self._units = units if units != "auto" else ("db" if self.modality is Modality.OPTICAL else None)
            self._detected = self._units is None
            self._unit_bands = unit_bands
            self.aligned = AlignedReader(ds, grid or GridSpec.of(ds), resampling, self.nodata,
                                         src_nodata=declared, what=self.label, ref_name=ref_name)
            self.grid = self.aligned.ref
            if self.modality is Modality.SAR and names is None:
                self.check_sar(units)
        except BaseException:
            if getattr(self, "aligned", None) is not None:
                self.aligned.close()
            if self._owned:
                ds.close()
            raise

    @property
    def path(self) -> ReadPath:
        """How the raster is read onto its grid (direct, whole-pixel offset or warped)."""
        return self.aligned.path

    @property
    def units(self) -> str:
        """SAR units of the stored values, "db" or "linear" (detected once when given as "auto")."""
        if self._units is None:
            self._units = self._detect_units()
        return self._units

    @property
    def units_note(self) -> str:
        """How the SAR units were decided, for people: "linear power (detected: values …)" or "dB (given)"."""
        name = {"db": "dB", "linear": "linear power"}[self.units]
        if not self._detected:
            return f"{name} (given)"
        spread = self._spread.text() if self._spread is not None else "no sample"
        return f"{name} (detected: {spread})"

    def sample(self, bands: Sequence[str] | None = None) -> np.ndarray:
        """Values (C, 9, h, w) of ``bands`` (None = all) on a 3×3 grid of ``UNITS_SAMPLE_PX`` windows spread over
        the raster, as stored but float32 with nodata, NaN and ±inf as NaN: a few blocks read, whatever the
        raster's size."""
        g = self.grid
        h, w = min(g.height, UNITS_SAMPLE_PX), min(g.width, UNITS_SAMPLE_PX)
        parts = []
        for fr in (0.0, 0.5, 1.0):
            for fc in (0.0, 0.5, 1.0):
                win = PixelWindow(int(fr * (g.height - h)), int(fc * (g.width - w)), h, w)
                stored = self.read_stored(win, bands).astype(np.float32)
                parts.append(to_physical(stored, Modality.SAR, self.nodata, "db"))
        return np.stack(parts, axis=1)

    def seen(self) -> str:
        """What the raster holds, for messages: "2 bands, float32" (its band count and stored dtype)."""
        n = self.dataset.count
        return f"{n} band{'s' if n != 1 else ''}, {self.dtype}"

    def check_sar(self, units: str) -> None:
        """``InputError`` (what was seen, how to go on) for a raster that cannot be Sentinel-1 σ⁰: more than
        ``SAR_MAX_BANDS`` bands, or integer values unless ``units`` says what they are ("db" or "linear")."""
        n, kind = self.dataset.count, np.dtype(self.dtype).kind
        if n <= SAR_MAX_BANDS and (kind == "f" or units != "auto"):
            return
        seen = f"{self.seen()}, {value_spread(self.sample()).text()}"
        if n > SAR_MAX_BANDS:
            raise InputError(not_sar_message(self.label, seen, "is it an optical file? give the Sentinel-1 "
                                             "raster, or keep its polarisation bands (gdal_translate -b 1 -b 2 "
                                             "IN OUT)"))
        raise InputError(not_sar_message(self.label, seen, "integers are display images or digital numbers, "
                                         "not σ⁰; give the float32 file, or say which unit the integers hold with "
                                         "--s1-units db|linear (sarkit tile)"))

    def _detect_units(self) -> str:
        """SAR units detected on ``sample`` of the unit bands (``sarkit.raster.norm.units_of``); the sample's spread
        is kept for ``units_note``."""
        sample = self.sample(self._unit_bands)
        self._spread = value_spread(sample)
        return detect_s1_units(sample, what=f"{self.label} ({self.seen()})")

    def read_stored(self, window: PixelWindow, bands: Sequence[str] | None = None) -> np.ndarray:
        idx = [i + 1 for i in self.band_indexes(bands)]
        return self.aligned.read(window, idx, dtype=self._stored_dtype)

    def read(self, window: PixelWindow, bands: Sequence[str] | None = None) -> Reading:
        stored = self.read_stored(window, bands)
        values = to_physical(stored, self.modality, self.nodata, self.units, self.dn_offset)
        valid = ~np.isnan(values).any(axis=0)
        return Reading(values, valid, self._stray(window, stored))

    def _stray(self, window: PixelWindow, stored: np.ndarray) -> np.ndarray:
        """Pixels whose stored value is NaN or ±inf although NaN is not the raster's declared nodata (for a warped
        raster NaN marks what the warp could not fill, so counts as declared); pixels outside the raster never."""
        stray = np.zeros(stored.shape[1:], dtype=bool)
        declared_nan = self._declared is not None and math.isnan(self._declared)
        if declared_nan or (self.path is ReadPath.WARPED and self._declared is None) or stored.dtype.kind != "f":
            return stray
        inside = self.aligned.covered(window)
        if inside is not None:
            rs, cs = inside.slices()
            stray[rs, cs] = nonfinite_pixels(stored[:, rs, cs])
        return stray

    def close(self) -> None:
        self.aligned.close()
        if self._owned:
            self.dataset.close()


class SceneReader:
    """Reads strips (rows of the full width) of a scene's model input bands: physical units, then the model range
    of ``norm`` with the nodata mask. ``src`` is an open dataset (left open) or a ``RasterSource``. The SAR units
    (given by ``norm.units`` or detected) are told by ``report_units`` when the work starts."""

    def __init__(self, src: Any, norm: Normalization) -> None:
        self.norm = norm
        if isinstance(src, RasterSource):
            self.source = src
        else:
            from sarkit.raster.images import source_for  # image files under an image normalisation

            self.source = source_for(src, norm, units=norm.units, default_dn_offset=norm.offset,
                                     label=f"scene {Path(src.name).name}", unit_bands=norm.bands)
        upper = [n.upper() for n in self.source.band_names]
        missing = [b for b in norm.bands if b.upper() not in upper]
        if missing:
            raise InputError(f"{self.source.label} lacks band(s) {', '.join(missing)} the checkpoint needs "
                             f"(needs {', '.join(norm.bands)}; scene has {', '.join(self.source.band_names)})")
        self.units = self.source.units if norm.modality == "sar" else ""
        self.dn_offset = self.source.dn_offset  # the scene's own dn_offset tag wins over the checkpoint's

    def report_units(self, reporter: Reporter) -> None:
        """One info event saying the SAR units read (and how they were known); nothing for optical input."""
        if self.units:
            note = getattr(self.source, "units_note", self.units)
            reporter.info(f"{self.source.label}: SAR units {note}", units=self.units)

    def physical(self, row: int, height: int) -> Reading:
        """Rows ``[row, row+height)`` of the input bands in physical units (dB or reflectance), NaN = nodata."""
        return self.source.read(PixelWindow(row, 0, height, self.source.grid.width), self.norm.bands)

    def strip(self, row: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Model-range strip (C, h, W) with nodata filled by −1, and its validity mask (h, W)."""
        return to_model(self.physical(row, height), self.norm)
