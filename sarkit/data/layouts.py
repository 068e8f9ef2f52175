"""Find Sentinel-1 / Sentinel-2 / label triplets in the folder layouts of public datasets.

* ``sen12ms``: SEN12MS (``ROIs…/s1_N/…_s1_N_pK.tif`` with ``s2_N`` and ``lc_N`` siblings), the official
  SEN12MS-CR layout (``ROIs…_s1/s1_N``, ``ROIs…_s2/s2_N``, ``ROIs…_s2_cloudy/s2_cloudy_N``) and the flat
  SEN12MS-CR style (``s1/``, ``s2_cloudfree/``, ``s2_cloudy/`` folders holding files of the same name).
  Land cover (``lc``, 4 bands: IGBP, LCCS-LC, LCCS-LU, LCCS-SH): band 1 (IGBP, classes 1–17) is used, mapped to
  the 10 simplified classes of DFC2020 (``dfc2020``) or kept as the 17 IGBP classes (``igbp``).
* ``sen1floods11``: ``S1Hand/…_S1Hand.tif`` with ``S2Hand/…_S2Hand.tif`` and ``LabelHand/…_LabelHand.tif``;
  labels −1 (no data) → 255, 0 "not water", 1 "water".
* ``bigearthnet``: BigEarthNet-S1 patch folders (``…_VV.tif``, ``…_VH.tif``, ``…_labels_metadata.json``) with the
  BigEarthNet-S2 folder named by ``corresponding_s2_patch`` (one file per band at 10, 20 and 60 m); each raster is
  several files (``Scene.s1_files`` / ``s2_files``, read by ``sarkit.raster.stack``); the patch-level CORINE labels
  are ``Scene.scene_labels``.

Folder and file names match in any case (``s2_cloudFree/`` as dSen2-CR ships it), and symlinked folders are
followed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from sarkit.errors import InputError

LAYOUTS = ("sen12ms", "sen1floods11", "bigearthnet", "pairs")  # pairs: image-pair datasets, found by sarkit.data.pairs

#: The 17 IGBP land-cover classes (MODIS MCD12Q1 type 1), ids 1…17; band 1 of SEN12MS ``lc`` files.
IGBP_CLASSES = ["evergreen needleleaf forests", "evergreen broadleaf forests", "deciduous needleleaf forests",
                "deciduous broadleaf forests", "mixed forests", "closed shrublands", "open shrublands",
                "woody savannas", "savannas", "grasslands", "permanent wetlands", "croplands",
                "urban and built-up lands", "cropland/natural vegetation mosaics", "permanent snow and ice",
                "barren", "water bodies"]
#: The simplified 10-class IGBP scheme of SEN12MS and the IEEE GRSS Data Fusion Contest 2020; class id = index.
DFC2020_CLASSES = ["forest", "shrubland", "savanna", "grassland", "wetlands", "croplands", "urban",
                   "snow/ice", "barren", "water"]
IGBP_SIMPLE_CLASSES = DFC2020_CLASSES  # the name used before DFC2020 was named
#: IGBP class 1…17 → DFC2020 class id (0-based): forests 1–5, shrublands 6–7, savannas 8–9, grassland 10,
#: wetlands 11, croplands 12 and 14 (cropland/natural mosaic), urban 13, snow/ice 15, barren 16, water 17.
IGBP_TO_SIMPLE = {1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 1, 7: 1, 8: 2, 9: 2, 10: 3, 11: 4, 12: 5, 13: 6, 14: 5,
                  15: 7, 16: 8, 17: 9}
#: The bands of a SEN12MS ``lc`` file, in order.
LC_BANDS = ("IGBP", "LCCS-LC", "LCCS-LU", "LCCS-SH")
#: Label schemes for SEN12MS land cover: name → class names (ids 0…n−1).
LC_SCHEMES = {"dfc2020": DFC2020_CLASSES, "igbp": IGBP_CLASSES}
SEN1FLOODS11_CLASSES = ["not water", "water"]
LABEL_NODATA = 255


@dataclass(frozen=True)
class Scene:
    """One source scene: S1 file, optional optical and label files, and how to read the labels.

    ``label_scheme`` is "raw" (ids as stored; negatives, >254 and nodata → 255), "sen1floods11", or for SEN12MS
    land cover "dfc2020" (IGBP → 10 classes) or "igbp" (IGBP 1…17 → ids 0…16).
    """

    s1: Path
    s2: Path | None = None
    labels: Path | None = None
    label_scheme: str = "raw"
    classes: list[str] | None = field(default=None, compare=False)
    # several files of one raster (per polarisation, per band; ``sarkit.raster.stack``): all of them, ``s1`` /
    # ``s2`` being the first; empty for one file
    s1_files: tuple[Path, ...] = ()
    s2_files: tuple[Path, ...] = ()
    name: str | None = None  # the scene's name in tile ids (default: the S1 file's stem)
    scene_labels: list[str] | None = field(default=None, compare=False)  # patch-level labels (BigEarthNet)

    @property
    def s1_spec(self) -> Path | tuple[Path, ...]:
        """The S1 raster as ``sarkit.raster.stack.open_source`` takes it: its files, or its one file."""
        return self.s1_files or self.s1

    @property
    def s2_spec(self) -> Path | tuple[Path, ...] | None:
        """The optical raster as ``open_source`` takes it (None when absent)."""
        return self.s2_files or self.s2


def check_lc_scheme(name: str) -> str:
    """A SEN12MS land-cover scheme name ("dfc2020" or "igbp"), lower-cased; ``InputError`` otherwise."""
    low = str(name).lower()
    if low not in LC_SCHEMES:
        raise InputError(f"--lc-classes must be one of {', '.join(LC_SCHEMES)}, got {name!r}")
    return low


def describe_labels(scheme: str, band_count: int = 1) -> str:
    """A short line saying which label band is read and how its values become classes."""
    if scheme in LC_SCHEMES:
        target = "10 DFC2020 classes" if scheme == "dfc2020" else "17 IGBP classes"
        return f"SEN12MS lc band 1 of {band_count} ({LC_BANDS[0]}) → {target}"
    if scheme == "sen1floods11":
        return "band 1, Sen1Floods11 (−1 nodata, 0 not water, 1 water)"
    return f"band 1 of {band_count}, ids as stored" if band_count > 1 else "band 1, ids as stored"


def is_sen12ms_lc(path: Path, band_count: int) -> bool:
    """True for a SEN12MS land-cover file: 4 bands, named ``…_lc_…`` or in an ``lc`` / ``lc_N`` folder."""
    path = Path(path)
    named = re.search(r"(^|_)lc(_|$)", path.stem, re.IGNORECASE) is not None
    folder = re.fullmatch(r"lc(_\d+)?", path.parent.name, re.IGNORECASE) is not None
    return band_count == len(LC_BANDS) and (named or folder)


def map_labels(values: np.ndarray, scheme: str, src_nodata: float | None = None) -> np.ndarray:
    """Source label values → uint8 class ids with 255 = nodata, following ``scheme``."""
    v = np.asarray(values)
    if scheme in LC_SCHEMES:
        lut = np.full(256, LABEL_NODATA, dtype=np.uint8)
        for k, c in IGBP_TO_SIMPLE.items():
            lut[k] = c if scheme == "dfc2020" else k - 1
        idx = np.clip(np.nan_to_num(v.astype(np.float64), nan=0.0), 0, 255).astype(np.int64)
        out = lut[idx]
        out[~np.isfinite(v.astype(np.float64)) | (v < 0) | (v > 255)] = LABEL_NODATA
        return out
    bad = (v < 0) | (v > 254)
    if src_nodata is not None and not np.isnan(src_nodata):
        bad |= v == src_nodata
    if v.dtype.kind == "f":
        bad |= ~np.isfinite(v)
    out = np.where(bad, 0, v).astype(np.uint8)
    out[bad] = LABEL_NODATA
    return out


# --------------------------------------------------------------------------------------------- folders


class _Folders:
    """Case-insensitive look-ups of folder entries (symlinks followed); each folder is listed once."""

    def __init__(self) -> None:
        self._listed: dict[Path, dict[str, list[Path]]] = {}

    def _entries(self, folder: Path) -> dict[str, list[Path]]:
        """The entries of ``folder`` by lower-cased name (empty when it cannot be listed)."""
        if folder not in self._listed:
            names: dict[str, list[Path]] = {}
            try:
                for p in sorted(folder.iterdir()):
                    names.setdefault(p.name.lower(), []).append(p)
            except OSError:
                pass
            self._listed[folder] = names
        return self._listed[folder]

    def child(self, folder: Path, name: str, want_dir: bool = False) -> Path | None:
        """The entry of ``folder`` named ``name`` in any case (the exact spelling first), or None."""
        for p in sorted(self._entries(folder).get(name.lower(), []), key=lambda p: p.name != name):
            if (p.is_dir() if want_dir else p.is_file()):
                return p
        return None

    def first(self, folders: list[Path | None], name: str) -> Path | None:
        """File ``name`` (any case) in the first of ``folders`` that holds it."""
        for d in folders:
            f = self.child(d, name) if d is not None else None
            if f is not None:
                return f
        return None

    def sub(self, parent: Path, name: str) -> Path | None:
        """Sub-folder ``name`` of ``parent`` in any case, or None."""
        return self.child(parent, name, want_dir=True)


def walk_folders(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """Every folder under ``root`` with its file names, following symlinked folders (each real folder once, so a
    link loop ends), in sorted order of sub-folders."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        yield Path(dirpath), filenames


def tif_files(root: Path) -> list[Path]:
    """Every ``.tif`` / ``.tiff`` file under ``root`` in any case, following symlinked folders (each real folder
    once), sorted."""
    out = [d / f for d, names in walk_folders(root) for f in names if f.lower().endswith((".tif", ".tiff"))]
    return sorted(p for p in out if p.is_file())


def _found(root: Path, files: list[Path]) -> str:
    """What a layout search saw under ``root``: the folders holding GeoTIFFs, else the top-level entries."""
    if files:
        dirs = sorted({str(f.parent.relative_to(root)) or "." for f in files})
        what = "GeoTIFFs in " + _listing([d + "/" if d != "." else "./" for d in dirs])
        return f"found {len(files)} {what}"
    try:
        top = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    except OSError:
        top = []
    return f"found no GeoTIFF; entries: {_listing(top)}" if top else "the folder is empty"


def _listing(names: list[str], most: int = 6) -> str:
    """Names joined by commas, the first ``most`` and a count of the rest."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


# --------------------------------------------------------------------------------------------- SEN12MS


def _is_sen12ms_s1(path: Path) -> bool:
    """True for a file in a SEN12MS(-CR) S1 folder: ``s1/`` or ``s1_N/`` (any case)."""
    return re.fullmatch(r"s1(_\d+)?", path.parent.name, re.IGNORECASE) is not None


def _sen12ms_partner(s1: Path, kind: str, folders: _Folders) -> Path | None:
    """The file of ``kind`` ("s2", "s2_cloudy" or "lc") that belongs to SEN12MS(-CR) S1 patch ``s1``."""
    folder, parent = s1.parent, s1.parent.parent
    if folder.name.lower() == "s1":  # flat SEN12MS-CR style: s1/NAME.tif, s2_cloudfree/NAME.tif, s2_cloudy/NAME.tif
        dirs = {"s2": ["s2_cloudfree", "s2"], "s2_cloudy": ["s2_cloudy"], "lc": ["lc"]}[kind]
        return folders.first([folders.sub(parent, d) for d in dirs], s1.name)
    m = re.fullmatch(r"s1_(\d+)", folder.name, re.IGNORECASE)
    if not m:
        return None
    name = re.sub(r"_s1_", f"_{kind}_", s1.name, flags=re.IGNORECASE)
    sub = f"{kind}_{m.group(1)}"
    places = [folders.sub(parent, sub)]  # SEN12MS: ROIs…/s2_N next to ROIs…/s1_N
    roi = parent.name
    if roi.lower().endswith("_s1"):  # official SEN12MS-CR: ROIs…_s1/s1_N and ROIs…_s2[_cloudy]/s2[_cloudy]_N
        other = folders.sub(parent.parent, f"{roi[:-3]}_{kind}")
        places.append(folders.sub(other, sub) if other is not None else None)
    return folders.first(places, name)


def find_sen12ms(root: Path, cloudy: bool = False, lc_classes: str = "dfc2020") -> list[Scene]:
    """SEN12MS / SEN12MS-CR triplets under ``root`` (S2 cloud-free unless ``cloudy``), paired by file name; land
    cover as ``lc_classes`` ("dfc2020" or "igbp")."""
    lc_classes = check_lc_scheme(lc_classes)
    folders = _Folders()
    scenes: list[Scene] = []
    kind = "s2_cloudy" if cloudy else "s2"
    files = tif_files(root)
    s1s = [f for f in files if _is_sen12ms_s1(f)]
    for s1 in s1s:
        s2 = _sen12ms_partner(s1, kind, folders)
        if s2 is None:
            continue
        lc = _sen12ms_partner(s1, "lc", folders)
        scenes.append(Scene(s1, s2, lc, lc_classes if lc else "raw", list(LC_SCHEMES[lc_classes]) if lc else None))
    if not scenes:
        what = "s2_cloudy" if cloudy else "s2_cloudfree (or s2)"
        expected = (f"expected s1/ and {what} folders holding files of the same name, or ROIs…/s1_N folders with "
                    f"{'s2_cloudy_N' if cloudy else 's2_N'} siblings (names in any case)")
        if s1s:
            s1_dirs = sorted({str(f.parent.relative_to(root)) + "/" for f in s1s})
            raise InputError(f"no SEN12MS patches with {what} partners under {root}: {len(s1s)} S1 patch(es) in "
                             f"{_listing(s1_dirs)} but none has a partner; {_found(root, files)}; {expected}")
        raise InputError(f"no SEN12MS patches under {root}: {_found(root, files)}; {expected}")
    return scenes


# --------------------------------------------------------------------------------------------- Sen1Floods11


def find_sen1floods11(root: Path) -> list[Scene]:
    """Sen1Floods11 hand-labelled chips under ``root``: ``*_S1Hand.tif`` with S2Hand and LabelHand partners."""
    folders = _Folders()
    scenes: list[Scene] = []
    files = tif_files(root)
    s1s = [f for f in files if re.search(r"_S1Hand\.tiff?$", f.name, re.IGNORECASE)]
    for s1 in s1s:
        base = s1.name[: s1.name.lower().rindex("_s1hand")]
        ext = s1.suffix
        up = s1.parent.parent
        s2 = folders.first([folders.sub(up, "S2Hand"), s1.parent], f"{base}_S2Hand{ext}")
        lab = folders.first([folders.sub(up, "LabelHand"), s1.parent], f"{base}_LabelHand{ext}")
        if s2 is None:
            continue
        scenes.append(Scene(s1, s2, lab, "sen1floods11", SEN1FLOODS11_CLASSES if lab else None))
    if not scenes:
        expected = ("expected S1Hand/*_S1Hand.tif with S2Hand/*_S2Hand.tif partners and optional "
                    "LabelHand/*_LabelHand.tif (names in any case)")
        if s1s:
            raise InputError(f"no Sen1Floods11 chips under {root}: {len(s1s)} *_S1Hand file(s) but none has an "
                             f"S2Hand partner; {_found(root, files)}; {expected}")
        raise InputError(f"no Sen1Floods11 chips under {root}: {_found(root, files)}; {expected}")
    return scenes


# --------------------------------------------------------------------------------------------- BigEarthNet

#: The Sentinel-2 band files of a BigEarthNet(-S2) patch folder, in Sentinel-2 order (L2A has no B10).
BIGEARTHNET_S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
#: The Sentinel-1 polarisation files of a BigEarthNet-S1 patch folder, in order.
BIGEARTHNET_S1_BANDS = ("VV", "VH")
#: Side of a BigEarthNet patch in pixels (10 m bands).
BIGEARTHNET_PATCH_PX = 120


def _bigearthnet_meta(folder: Path, folders: _Folders) -> dict | None:
    """The ``…_labels_metadata.json`` of a BigEarthNet patch folder (None when absent); ``InputError`` when it is not
    JSON."""
    meta = folders.child(folder, f"{folder.name}_labels_metadata.json")
    if meta is None:
        return None
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"BigEarthNet metadata {meta} is not readable JSON ({exc}); download the patch again") \
            from None
    return doc if isinstance(doc, dict) else None


def _bigearthnet_files(folder: Path, bands: tuple[str, ...], folders: _Folders) -> tuple[Path, ...] | None:
    """The band files ``<folder name>_<band>.tif`` of a patch folder, in ``bands`` order; None when one is missing."""
    files = [folders.child(folder, f"{folder.name}_{b}.tif") for b in bands]
    return None if any(f is None for f in files) else tuple(files)  # type: ignore[misc]


def _bigearthnet_dirs(root: Path) -> list[Path]:
    """Every folder under ``root`` (symlinks followed, each real folder once), sorted."""
    return sorted(d for d, _ in walk_folders(root))


def find_bigearthnet(root: Path) -> list[Scene]:
    """BigEarthNet-MM patch pairs under ``root``: BigEarthNet-S1 folders (``…_VV.tif``, ``…_VH.tif``,
    ``…_labels_metadata.json``) with the BigEarthNet-S2 folder their ``corresponding_s2_patch`` names (per-band
    ``…_B01.tif`` … ``…_B12.tif``, ``…_B8A.tif``), found anywhere under ``root``; the patch's CORINE labels go into
    ``Scene.scene_labels``. An S1 folder without an S2 partner is still a scene (SAR only) when no S1 folder has
    one."""
    folders = _Folders()
    dirs = _bigearthnet_dirs(root)
    by_name: dict[str, Path] = {}
    for d in dirs:
        by_name.setdefault(d.name.lower(), d)
    pairs: list[Scene] = []
    alone: list[Scene] = []
    for d in dirs:
        s1 = _bigearthnet_files(d, BIGEARTHNET_S1_BANDS, folders)
        if s1 is None:
            continue
        meta = _bigearthnet_meta(d, folders) or {}
        labels = meta.get("labels") if isinstance(meta.get("labels"), list) else None
        s2_name = str(meta.get("corresponding_s2_patch") or "")
        s2_dir = by_name.get(s2_name.lower()) if s2_name else None
        s2 = _bigearthnet_files(s2_dir, BIGEARTHNET_S2_BANDS, folders) if s2_dir is not None else None
        scene = Scene(s1[0], s2[0] if s2 else None, None, s1_files=s1, s2_files=s2 or (), name=d.name,
                      scene_labels=[str(x) for x in labels] if labels is not None else None)
        (pairs if s2 else alone).append(scene)
    if pairs:
        return pairs
    if alone:
        return alone
    expected = ("expected BigEarthNet-S1 patch folders NAME/ holding NAME_VV.tif, NAME_VH.tif and "
                "NAME_labels_metadata.json, whose corresponding_s2_patch names a BigEarthNet-S2 folder with "
                "NAME_B01.tif … NAME_B12.tif and NAME_B8A.tif")
    raise InputError(f"no BigEarthNet patches under {root}: {_found(root, tif_files(root))}; {expected}")


def find_layout(root: Path, layout: str, cloudy: bool = False, lc_classes: str = "dfc2020") -> list[Scene]:
    """Scenes of dataset ``layout`` under ``root``."""
    root = Path(root)
    name = str(layout).lower()
    if name not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is a file"
        raise InputError(f"--layout {name} expects the dataset root folder, got {root} (it {what})")
    if name == "pairs":
        raise InputError("--layout pairs holds image pairs, not Sentinel scenes: find them with "
                         "sarkit.data.pairs.find_pairs (sarkit tile ROOT --layout pairs)")
    if name == "sen12ms":
        return find_sen12ms(root, cloudy, lc_classes)
    if name == "bigearthnet":
        return find_bigearthnet(root)
    return find_sen1floods11(root)
