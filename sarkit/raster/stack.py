"""One raster made of several files: Sentinel-1 as one file per polarisation, Sentinel-2 as one file per band.

``StackedSource`` is a ``RasterSource`` over several files (each a ``GeoTiffSource``), all read onto one common
grid through their own ``sarkit.raster.align.AlignedReader``: a file already on that grid is read directly, a file
at another resolution (the 20 m and 60 m bands of a Sentinel-2 granule) is warped onto it with the caller's
resampling (bilinear for reflectance by default). Its bands are the files' bands in the order the files are given;
a read of some bands reads only the files holding them.

The common grid is, in this order: the ``grid`` given (a ``GridSpec``, or the name of one of the stack's bands
whose file gives the grid), else the finest file's grid (the 10 m grid of a Sentinel-2 granule; the first such
file when several share the finest pixel size).

Band names of a file of a stack: SAR by the one SAR rule (``sar_band_names``: ``…_VH.tif`` → VH); optical by its
band description when it names the band, else, for a one-band file, the Sentinel-2 band its file name names as a
word (``…_B04.tif`` → B4, ``…_B8A.tif`` → B8A), else ``band_names``. Names may also be given (``names``).

``grid_of_file`` is the grid a user names with ``--grid FILE`` (any georeferenced raster).

``scene_files`` turns what a user typed (a path, a comma list, or several of them) into the files of one scene, and
``open_source`` opens them: one GeoTIFF as ``GeoTiffSource``, several as ``StackedSource``, a STAC Item file
(``….json``) as the ``StackedSource`` of its assets (``sarkit.raster.stac``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from rasterio.enums import Resampling

from sarkit.errors import InputError
from sarkit.io import RemoteFile, as_file, is_url, open_raster
from sarkit.raster.grid import GridSpec, PixelWindow, pixel_size
from sarkit.raster.norm import band_names
from sarkit.raster.stac import is_stac_item
from sarkit.raster.source import (SAR_MAX_BANDS, GeoTiffSource, Modality, RasterSource, Reading, _band_hint,
                                  sar_band_names, stored_nodata)

#: A Sentinel-2 band named as a word of a file name: B1…B12 with or without a leading zero, and B8A.
_S2_BAND_WORD = re.compile(r"^B(0?[1-9]|1[0-2]|0?8A)$", re.IGNORECASE)


def s2_band_in_name(name: str) -> str | None:
    """The one Sentinel-2 band a file name names as a separate word ("…_87_48_B04.tif" → B4, "B8A"), else None."""
    words = {_canonical_s2(w) for w in re.split(r"[^A-Za-z0-9]+", Path(name).stem) if _S2_BAND_WORD.match(w)}
    return words.pop() if len(words) == 1 else None


def _canonical_s2(word: str) -> str:
    """A Sentinel-2 band word in sarkit's spelling: "b04" → "B4", "B08a" → "B8A"."""
    return "B" + word[1:].upper().lstrip("0")


def file_band_names(ds: Any, modality: Modality) -> list[str]:
    """Band names of one file of a stack (see the module docstring): the SAR rule, or for optical its band
    descriptions when they name the bands, else the band a one-band file's name names, else ``band_names``."""
    if modality is Modality.SAR:
        return sar_band_names(ds)
    hints = [_band_hint(ds, i) for i in range(1, ds.count + 1)]
    if ds.count == 1 and not hints[0]:
        named = s2_band_in_name(str(ds.name))
        if named:
            return [named]
    return band_names(ds)


def scene_files(spec: Any) -> tuple[Path | RemoteFile, ...]:
    """The files of one scene as a user gave them: a path or http(s) URL, a comma list ("VV.tif,VH.tif"), or a
    sequence of either. A path that exists is one file even when its name holds a comma. A URL is a
    ``sarkit.io.RemoteFile`` (named by its path part, opened by rasterio as the URL), also when ``pathlib`` has
    collapsed its "//"."""
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    out: list[Path | RemoteFile] = []
    for item in items:
        text = str(item)
        if "," in text and (is_url(text) or not Path(text).exists()):
            out += [as_file(t.strip()) for t in text.split(",") if t.strip()]
        else:
            out.append(as_file(text))
    if not out:
        raise InputError("no file given for the scene")
    return tuple(out)


def scene_stem(spec: Any) -> str:
    """A scene's name for outputs and tile ids: its file's stem, or what the stems of its files share ("x_VV",
    "x_VH" → "x"; the first stem when they share nothing)."""
    stems = [f.stem for f in scene_files(spec)]
    if len(stems) == 1:
        return stems[0]
    common = os.path.commonprefix(stems)
    if any(len(st) > len(common) and st[len(common)].isalnum() for st in stems):
        common = re.sub(r"[A-Za-z0-9]*$", "", common)  # whole words only: "x_V" of "x_VV", "x_VH" → "x_"
    return common.rstrip("_-. ") or stems[0]


def describe_files(files: Sequence[Path | RemoteFile]) -> str:
    """A short name for a scene's files, for messages: "a.tif" or "a.tif + 11 more"."""
    return files[0].name + (f" + {len(files) - 1} more" if len(files) > 1 else "")


def _finest(grids: list[GridSpec]) -> int:
    """Index of the grid with the smallest pixel area (the first among equals)."""
    def area(g: GridSpec) -> float:
        ps = pixel_size(g)
        return ps.x * ps.y if ps is not None else abs(g.transform.a * g.transform.e)
    areas = [area(g) for g in grids]
    best = min(areas)
    return next(i for i, a in enumerate(areas) if a <= best * (1 + 1e-9))


class StackedSource(RasterSource):
    """Several rasters of one scene as one ``RasterSource`` on a common grid (see the module docstring).

    ``files`` are paths or http(s) URLs (``sarkit.io.as_file``); ``names`` (optional) are the band names of all files together, in order. ``grid`` is a
    ``GridSpec``, a band name (its file's grid) or None (the finest file's grid). ``resampling`` is used for files
    not on the grid. ``units``, ``dn_offset``, ``default_dn_offset``, ``unit_bands``, ``label``, ``ref_name`` as for
    ``GeoTiffSource``; ``fill`` is the stored value every file's nodata reads as (default ``stored_nodata``).
    ``InputError`` for duplicate band names, files that do not overlap the grid, a SAR stack of more than two
    bands, or files whose SAR units or DN offsets differ.
    """

    def __init__(self, files: Sequence[str | Path], modality: Modality | str, *, names: Sequence[str] | None = None,
                 units: str = "db", dn_offset: float | None = None, default_dn_offset: float = 0.0,
                 grid: GridSpec | str | None = None, resampling: Resampling = Resampling.bilinear,
                 fill: float | None = None, label: str | None = None, ref_name: str | None = None,
                 unit_bands: Sequence[str] | None = None) -> None:
        self.files = tuple(as_file(f) for f in files)
        self.modality = Modality(modality)
        self.label = label or f"raster {describe_files(self.files)}"
        self.parts: list[GeoTiffSource] = []
        try:
            per_file, grids = self._inspect()
            if names is not None:
                per_file = self._split_names(list(names), [len(n) for n in per_file])
            flat = [n for ns in per_file for n in ns]
            dupes = sorted({n for n in flat if [m.upper() for m in flat].count(n.upper()) > 1})
            if dupes:
                raise InputError(f"{self.label}: band(s) {', '.join(dupes)} named by more than one file "
                                 f"({', '.join(f.name for f in self.files)}); give each band once, or name them")
            ref, ref_label = self._reference(grid, grids, per_file)
            self.nodata = float(fill) if fill is not None else stored_nodata(self.modality, None)
            unit_set = {b.upper() for b in unit_bands} if unit_bands else None
            for f, ns in zip(self.files, per_file):
                ub = [n for n in ns if unit_set is None or n.upper() in unit_set] or None
                part = GeoTiffSource(f, self.modality, names=ns, units=units, dn_offset=dn_offset,
                                     default_dn_offset=default_dn_offset, grid=ref, resampling=resampling,
                                     fill=self.nodata, label=f"{self.label}: {f.name}",
                                     ref_name=ref_name or ref_label, unit_bands=ub)
                self.parts.append(part)
                if self.modality is Modality.SAR and names is None:
                    part.check_sar(units)
            self.grid = ref
            self.band_names = tuple(flat)
            self._where = [(pi, n) for pi, p in enumerate(self.parts) for n in p.band_names]
            self.dtype = np.result_type(*[p._stored_dtype for p in self.parts]).name
            if self.modality is Modality.SAR and len(flat) > SAR_MAX_BANDS and names is None:
                raise InputError(f"{self.label}: {len(flat)} SAR bands ({', '.join(flat)}) from "
                                 f"{len(self.files)} files; Sentinel-1 has at most {SAR_MAX_BANDS} polarisations "
                                 f"(give one file per polarisation, e.g. VV.tif,VH.tif)")
            offsets = {p.dn_offset for p in self.parts}
            if len(offsets) > 1:
                raise InputError(f"{self.label}: files carry different dn_offset tags ({sorted(offsets)}); give "
                                 f"files of one processing baseline")
            self.dn_offset = offsets.pop()
        except BaseException:
            self.close()
            raise

    def _inspect(self) -> tuple[list[list[str]], list[GridSpec]]:
        """Band names and grid of each file (opened once, closed again)."""
        names, grids = [], []
        for f in self.files:
            with open_raster(f, f"{self.label}: file") as ds:
                names.append(file_band_names(ds, self.modality))
                grids.append(GridSpec.of(ds))
        return names, grids

    def _split_names(self, names: list[str], counts: list[int]) -> list[list[str]]:
        """Given band names split over the files by their band counts; ``InputError`` when the count differs."""
        if len(names) != sum(counts):
            raise InputError(f"{self.label}: {len(names)} band name(s) given ({', '.join(names)}) for "
                             f"{sum(counts)} band(s) in {len(self.files)} file(s)")
        out, i = [], 0
        for c in counts:
            out.append(names[i:i + c])
            i += c
        return out

    def _reference(self, grid: GridSpec | str | None, grids: list[GridSpec],
                   per_file: list[list[str]]) -> tuple[GridSpec, str]:
        """The common grid and how messages name it."""
        if isinstance(grid, GridSpec):
            return grid, "the reference grid"
        if isinstance(grid, str):
            for f, g, ns in zip(self.files, grids, per_file):
                if grid.upper() in (n.upper() for n in ns):
                    return g, f"the grid of {f.name}"
            raise InputError(f"--grid {grid}: no file of {self.label} holds band {grid} (bands: "
                             f"{', '.join(n for ns in per_file for n in ns)})")
        i = _finest(grids)
        return grids[i], f"the grid of {self.files[i].name}"

    @property
    def units(self) -> str:
        """SAR units of the stored values ("db" or "linear"), the same in every file (``InputError`` otherwise)."""
        found = {p.units for p in self.parts}
        if len(found) > 1:
            notes = "; ".join(f"{p.dataset.name}: {p.units_note}" for p in self.parts)
            raise InputError(f"{self.label}: files hold different SAR units ({notes}); give files in one unit, or "
                             f"say which with --s1-units db|linear")
        return found.pop()

    @property
    def units_note(self) -> str:
        """How the SAR units were decided, for people (the first file's note)."""
        self.units  # noqa: B018 - the check that the files agree
        return self.parts[0].units_note

    @property
    def resampled(self) -> list[Path | RemoteFile]:
        """The files warped onto the common grid (another resolution or CRS)."""
        return [f for f, p in zip(self.files, self.parts) if p.aligned.resampled]

    def _groups(self, bands: Sequence[str] | None) -> list[tuple[int, list[str]]]:
        """The requested bands as runs of (file index, band names of that file), in the requested order."""
        groups: list[tuple[int, list[str]]] = []
        for i in self.band_indexes(bands):
            pi, name = self._where[i]
            if groups and groups[-1][0] == pi:
                groups[-1][1].append(name)
            else:
                groups.append((pi, [name]))
        return groups

    def read_stored(self, window: PixelWindow, bands: Sequence[str] | None = None) -> np.ndarray:
        arrays = [self.parts[pi].read_stored(window, names) for pi, names in self._groups(bands)]
        return np.concatenate([a.astype(self.dtype, copy=False) for a in arrays], axis=0)

    def read(self, window: PixelWindow, bands: Sequence[str] | None = None) -> Reading:
        readings = [self.parts[pi].read(window, names) for pi, names in self._groups(bands)]
        values = np.concatenate([r.values for r in readings], axis=0)
        valid = np.logical_and.reduce([r.valid for r in readings])
        stray = np.logical_or.reduce([r.stray for r in readings])
        return Reading(values, valid, stray)

    def close(self) -> None:
        for p in getattr(self, "parts", []):
            p.close()


def open_source(spec: Any, modality: Modality | str, **kwargs: Any) -> RasterSource:
    """The ``RasterSource`` of a scene as a user gave it (``scene_files``): one file (``GeoTiffSource``) or several
    (``StackedSource``). ``kwargs`` are those of ``StackedSource``; for one file ``grid`` must be a ``GridSpec`` or
    None."""
    files = scene_files(spec)
    if len(files) == 1 and is_stac_item(files[0]):
        from sarkit.raster.stac import open_stac

        return open_stac(files[0], modality, **kwargs)
    if len(files) > 1:
        return StackedSource(files, modality, **kwargs)
    grid = kwargs.pop("grid", None)
    if isinstance(grid, str):
        raise InputError(f"--grid {grid} names a band of a multi-file scene; {files[0].name} is one file")
    kwargs.setdefault("resampling", Resampling.bilinear)
    if kwargs.get("ref_name") is None:
        kwargs.pop("ref_name", None)
    return GeoTiffSource(files[0], modality, grid=grid, **kwargs)


def grid_of_file(path: str | Path, option: str = "--grid") -> GridSpec:
    """The pixel grid of a raster file (``option`` FILE: the grid a scene is read onto); ``InputError`` when the
    file is missing, unreadable or not georeferenced."""
    path = as_file(path)
    if not is_url(path) and not path.is_file():
        raise InputError(f"{option} {path}: file not found (give a GeoTIFF whose pixel grid the scene is read onto)")
    with open_raster(path, f"{option} raster") as ds:
        grid = GridSpec.of(ds)
    if not grid.georeferenced:
        raise InputError(f"{option} {path} has no CRS or geotransform; give a georeferenced raster as the grid")
    return grid


def is_multi(spec: Any) -> bool:
    """True when a scene is several files or a STAC Item (not one raster file): read it with ``open_source``."""
    files = scene_files(spec)
    return len(files) > 1 or is_stac_item(files[0])

