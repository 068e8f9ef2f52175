"""Find Sentinel-1 / Sentinel-2 / label triplets in the folder layouts of public datasets.

* ``sen12ms``: SEN12MS (``ROIs…/s1_N/…_s1_N_pK.tif`` with ``s2_N`` and ``lc_N`` siblings), the official
  SEN12MS-CR layout (``ROIs…_s1/s1_N``, ``ROIs…_s2/s2_N``, ``ROIs…_s2_cloudy/s2_cloudy_N``) and the flat
  SEN12MS-CR style (``s1/``, ``s2_cloudfree/``, ``s2_cloudy/`` folders holding files of the same name).
  Land cover (``lc``) band 1 is the IGBP class, mapped to the simplified 10-class IGBP scheme of SEN12MS.
* ``sen1floods11``: ``S1Hand/…_S1Hand.tif`` with ``S2Hand/…_S2Hand.tif`` and ``LabelHand/…_LabelHand.tif``;
  labels −1 (no data) → 255, 0 "not water", 1 "water".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sarkit.errors import InputError

LAYOUTS = ("sen12ms", "sen1floods11")

#: Simplified IGBP classes (SEN12MS, Schmitt et al. 2019); class id = index.
IGBP_SIMPLE_CLASSES = ["forest", "shrubland", "savanna", "grassland", "wetlands", "croplands", "urban",
                       "snow/ice", "barren", "water"]
#: IGBP class 1…17 → simplified class id (0-based): forests 1–5, shrublands 6–7, savannas 8–9, grassland 10,
#: wetlands 11, croplands 12 and 14 (cropland/natural mosaic), urban 13, snow/ice 15, barren 16, water 17.
IGBP_TO_SIMPLE = {1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 1, 7: 1, 8: 2, 9: 2, 10: 3, 11: 4, 12: 5, 13: 6, 14: 5,
                  15: 7, 16: 8, 17: 9}
SEN1FLOODS11_CLASSES = ["not water", "water"]
LABEL_NODATA = 255


@dataclass(frozen=True)
class Scene:
    """One source scene: S1 file, optional optical and label files, and how to read the labels.

    ``label_scheme`` is "raw" (ids as stored; negatives, >254 and nodata → 255), "sen1floods11" or "igbp".
    """

    s1: Path
    s2: Path | None = None
    labels: Path | None = None
    label_scheme: str = "raw"
    classes: list[str] | None = field(default=None, compare=False)


def map_labels(values: np.ndarray, scheme: str, src_nodata: float | None = None) -> np.ndarray:
    """Source label values → uint8 class ids with 255 = nodata, following ``scheme``."""
    v = np.asarray(values)
    if scheme == "igbp":
        lut = np.full(256, LABEL_NODATA, dtype=np.uint8)
        for k, c in IGBP_TO_SIMPLE.items():
            lut[k] = c
        idx = np.clip(v.astype(np.int64), 0, 255)
        out = lut[idx]
        out[(v < 0) | (v > 255)] = LABEL_NODATA
        return out
    bad = (v < 0) | (v > 254)
    if src_nodata is not None and not np.isnan(src_nodata):
        bad |= v == src_nodata
    if v.dtype.kind == "f":
        bad |= ~np.isfinite(v)
    out = np.where(bad, 0, v).astype(np.uint8)
    out[bad] = LABEL_NODATA
    return out


def _first_existing(paths: list[Path]) -> Path | None:
    for p in paths:
        if p.is_file():
            return p
    return None


def _sen12ms_partner(s1: Path, kind: str) -> Path | None:
    """The file of ``kind`` ("s2", "s2_cloudy" or "lc") that belongs to SEN12MS(-CR) S1 patch ``s1``."""
    folder, parent = s1.parent, s1.parent.parent
    if folder.name == "s1":  # flat SEN12MS-CR style: s1/NAME.tif, s2_cloudfree/NAME.tif, s2_cloudy/NAME.tif
        dirs = {"s2": ["s2_cloudfree", "s2"], "s2_cloudy": ["s2_cloudy"], "lc": ["lc"]}[kind]
        return _first_existing([parent / d / s1.name for d in dirs])
    m = re.fullmatch(r"s1_(\d+)", folder.name)
    if not m:
        return None
    n = m.group(1)
    name = s1.name.replace("_s1_", f"_{kind}_")
    sub = f"{kind}_{n}"
    roi = parent.name
    candidates = [parent / sub / name]  # SEN12MS: ROIs…/s2_N next to ROIs…/s1_N
    if roi.endswith("_s1"):  # official SEN12MS-CR: ROIs…_s1/s1_N and ROIs…_s2[_cloudy]/s2[_cloudy]_N
        candidates.append(parent.parent / f"{roi[:-3]}_{kind}" / sub / name)
    return _first_existing(candidates)


def find_sen12ms(root: Path, cloudy: bool = False) -> list[Scene]:
    """SEN12MS / SEN12MS-CR triplets under ``root`` (S2 cloud-free unless ``cloudy``), paired by file name."""
    scenes: list[Scene] = []
    kind = "s2_cloudy" if cloudy else "s2"
    for s1 in sorted(root.rglob("*.tif")):
        if not (s1.parent.name == "s1" or re.fullmatch(r"s1_\d+", s1.parent.name)):
            continue
        s2 = _sen12ms_partner(s1, kind)
        if s2 is None:
            continue
        lc = _sen12ms_partner(s1, "lc")
        scenes.append(Scene(s1, s2, lc, "igbp" if lc else "raw", IGBP_SIMPLE_CLASSES if lc else None))
    if not scenes:
        what = "s2_cloudy" if cloudy else "s2_cloudfree/s2"
        raise InputError(f"no SEN12MS patches with {what} partners under {root} (expected s1/ and {what} "
                         f"folders, or ROIs…/s1_N folders)")
    return scenes


def find_sen1floods11(root: Path) -> list[Scene]:
    """Sen1Floods11 hand-labelled chips under ``root``: ``*_S1Hand.tif`` with S2Hand and LabelHand partners."""
    scenes: list[Scene] = []
    for s1 in sorted(root.rglob("*_S1Hand.tif")):
        base = s1.name[: -len("_S1Hand.tif")]
        up = s1.parent.parent
        s2 = _first_existing([up / "S2Hand" / f"{base}_S2Hand.tif", s1.parent / f"{base}_S2Hand.tif"])
        lab = _first_existing([up / "LabelHand" / f"{base}_LabelHand.tif", s1.parent / f"{base}_LabelHand.tif"])
        if s2 is None:
            continue
        scenes.append(Scene(s1, s2, lab, "sen1floods11", SEN1FLOODS11_CLASSES if lab else None))
    if not scenes:
        raise InputError(f"no Sen1Floods11 chips under {root} (expected S1Hand/*_S1Hand.tif with S2Hand/ partners)")
    return scenes


def find_layout(root: Path, layout: str, cloudy: bool = False) -> list[Scene]:
    """Scenes of dataset ``layout`` under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--layout {layout} expects the dataset root folder, got {root}")
    if layout == "sen12ms":
        return find_sen12ms(root, cloudy)
    if layout == "sen1floods11":
        return find_sen1floods11(root)
    raise InputError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
