"""``sarkit tile ROOT --layout pairs``: the image-pair datasets of the SAR–optical literature into tiles.

Conventions (``CONVENTIONS``), detected from the folder names when not given (``detect_convention``):

* ``pix2pix`` (aligned): ``train/``, ``val/``, ``test/`` folders of images holding A | B side by side (A the left
  half); A is SAR unless ``sar_is`` says B (or, with ``auto``, B is the gray half and A not).
* ``cyclegan`` (unaligned): ``trainA/ trainB/ testA/ testB/`` (and ``valA/ valB/``); an A file and a B file are a
  pair when their names match; files without a namesake are skipped (and counted).
* ``sen1-2``: ``ROIsXXXX_season/s1_N/ROIsXXXX_season_s1_N_pM.png`` with ``…/s2_N/ROIsXXXX_season_s2_N_pM.png``.
* ``folders``: a SAR folder and an optical folder (``sar_dir`` / ``opt_dir``, found among ``SAR_DIRS`` /
  ``OPT_DIRS`` when not given), optionally a label folder, directly under ROOT or under ``train/ val/ test/``;
  files pair by name (stem), else by the number in the name (``sar12.png`` ↔ ``opt12.png``).

Rules: images are read by ``sarkit.raster.images.ImageSource`` (a gray SAR image stored as three equal channels is
one channel; values as stored). Images larger than the tile size are cut into tiles; every tile of one source image
gets the same split, so neighbours never leak between splits; the dataset's own train/val/test folders are the
split when it has them. When ROOT has a ``metadata.json`` that gives each image's ground corners
(``GROUND_FILE``: records with ``fragment_filename`` and ``corners_EPSG:<code>``, as optical-sar-texas ships), the
split is spatial: whole images go to contiguous ground blocks (``ground_blocks_of``: cells of two images' extent, or
``--block-strides`` strides, with images whose footprints overlap merged into one block), and blocks to splits,
so no evaluated tile shares a pixel, nor a block, with a training tile. The normalisation is the value range of the images' data type (0–255 or 0–65535), recorded
in ``tiling.json``. Tiles are GeoTIFFs without CRS on the image's pixel grid (tags ``units=image``); the manifest's
``crs`` column says ``none (pixel grid)`` and ``tiling.json`` has ``"georeferenced": false``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sarkit import __version__
from sarkit.errors import InputError
from sarkit.io import atomic_dir, check_output
from sarkit.raster.grid import Bounds, GridSpec, PixelWindow
from sarkit.raster.images import (IMAGE_UNITS, PAIR_SUFFIXES, ImageSource, image_normalization, is_gray,
                                  open_quiet)
from sarkit.raster.source import Modality
from sarkit.reporting import NULL_REPORTER, Reporter

CONVENTIONS = ("pix2pix", "cyclegan", "sen1-2", "folders")
#: Folder names taken as the SAR / optical / label folders of the ``folders`` convention (any case).
SAR_DIRS = ("sar", "s1", "sentinel1", "sentinel-1")
OPT_DIRS = ("opt", "optical", "s2", "rgb", "eo", "sentinel2", "sentinel-2")
LABEL_DIRS = ("labels", "label", "lbl", "gt", "mask", "masks")
#: What the manifest's ``crs`` column says for tiles of images (no georeferencing: the image's pixel grid).
PIXEL_GRID = "none (pixel grid)"
_SEN12_S1 = re.compile(r"(?P<base>.+)_s1_(?P<n>\d+)_p(?P<p>\d+)", re.IGNORECASE)
_SPLIT_NAMES = ("train", "val", "test")
#: A pair dataset's ground record under ROOT: a JSON list of {"fragment_filename", "corners_EPSG:<code>"}.
GROUND_FILE = "metadata.json"


@dataclass(frozen=True)
class PairOptions:
    """How ``--layout pairs`` finds the pairs: ``convention`` (auto or one of ``CONVENTIONS``), the folders of the
    ``folders`` convention, and which side is SAR in pix2pix / CycleGAN sets (``sar_is``: auto, A or B)."""

    convention: str = "auto"
    sar_dir: str | None = None
    opt_dir: str | None = None
    label_dir: str | None = None
    sar_is: str = "auto"

    def __post_init__(self) -> None:
        conv = str(self.convention).lower()
        if conv not in ("auto",) + CONVENTIONS:
            raise InputError(f"--pairs must be auto or one of {', '.join(CONVENTIONS)}, got {self.convention!r}")
        side = str(self.sar_is).upper() if str(self.sar_is).lower() != "auto" else "auto"
        if side not in ("auto", "A", "B"):
            raise InputError(f"--sar-is must be auto, A or B, got {self.sar_is!r}")
        object.__setattr__(self, "convention", conv)
        object.__setattr__(self, "sar_is", side)
        if (self.sar_dir is None) != (self.opt_dir is None):
            raise InputError("--sar-dir and --opt-dir go together: give both folders of the pairs")


def refuse_pair_options(opts: PairOptions | None) -> None:
    """``InputError`` when options of image pairs were given to a tiling that is not ``--layout pairs``."""
    if opts is not None and opts != PairOptions():
        raise InputError("--pairs, --sar-dir, --opt-dir, --label-dir and --sar-is describe image pairs: use them "
                         "with --layout pairs")


@dataclass(frozen=True)
class ImagePair:
    """One SAR image and its optical partner (and labels): ``half`` "A"/"B" is the SAR half of a pix2pix A | B
    image (``sar`` and ``optical`` then name the same file), ``split`` the dataset's own split (or None)."""

    sar: Path
    optical: Path
    labels: Path | None = None
    split: str | None = None
    half: str | None = None


# --------------------------------------------------------------------------------------------- finding pairs


def _sub(folder: Path, name: str) -> Path | None:
    """Sub-folder ``name`` of ``folder`` in any case (the exact spelling first), or None."""
    exact = folder / name
    if exact.is_dir():
        return exact
    try:
        return next((p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() == name.lower()), None)
    except OSError:
        return None


def _images(folder: Path) -> list[Path]:
    """Image files (``PAIR_SUFFIXES``, any case) directly in ``folder``, sorted."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PAIR_SUFFIXES)
    except OSError:
        return []


def _entries(root: Path) -> str:
    """The top-level entries of ``root``, for messages."""
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    except OSError:
        names = []
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"entries: {shown}" if names else "the folder is empty"


def _first_sub(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` that is a sub-folder of ``folder`` (any case)."""
    return next((d for d in (_sub(folder, n) for n in names) if d is not None), None)


def _split_roots(root: Path) -> list[tuple[str | None, Path]]:
    """(split, folder) of a dataset's own ``train/ val/ test/`` folders, else [(None, root)]."""
    found = [(s, d) for s in _SPLIT_NAMES if (d := _sub(root, s)) is not None]
    return found or [(None, root)]


def _sen12_s1_files(root: Path) -> list[Path]:
    """SEN1-2 SAR patches under ``root``: ``…_s1_N_pM.*`` files in ``s1_N`` folders."""
    out = []
    for f in sorted(root.rglob("*")):
        m = _SEN12_S1.fullmatch(f.stem)
        if m and f.suffix.lower() in PAIR_SUFFIXES and f.parent.name.lower() == f"s1_{m['n']}" and f.is_file():
            out.append(f)
    return out


def detect_convention(root: Path, opts: PairOptions) -> str:
    """The convention of the dataset under ``root``: the one given, else from its folder and file names."""
    if opts.convention != "auto":
        return opts.convention
    if opts.sar_dir is not None:
        return "folders"
    splits = _split_roots(root)
    if any(_sub(root, f"{s}{ab}") for s in _SPLIT_NAMES for ab in "AB"):
        return "cyclegan"
    if any(_first_sub(d, SAR_DIRS) and _first_sub(d, OPT_DIRS) for _, d in splits):
        return "folders"
    if splits[0][0] is not None and any(_images(d) for _, d in splits):
        return "pix2pix"
    if _sen12_s1_files(root):
        return "sen1-2"
    raise InputError(f"--layout pairs found no image-pair convention under {root} ({_entries(root)}); expected "
                     f"train/ val/ test/ of A|B images (pix2pix), trainA/ trainB/ testA/ testB/ (CycleGAN), "
                     f"ROIs…/s1_N/…_s1_N_pM.png with s2_N/ (SEN1-2), or a SAR and an optical folder (name them "
                     f"with --sar-dir and --opt-dir); or say the convention with --pairs")


def _sar_side(a: Path, b: Path, sar_is: str, half: bool = False) -> str:
    """Which of A and B is SAR: as given, else B when B is gray and A not (checked on one pair), else A."""
    if sar_is != "auto":
        return sar_is
    if half:
        with open_quiet(a, "image") as ds:
            w = ds.width // 2
            gray_a = is_gray(ds, None, PixelWindow(0, 0, ds.height, w))
            gray_b = is_gray(ds, None, PixelWindow(0, w, ds.height, w))
    else:
        with open_quiet(a, "image") as da, open_quiet(b, "image") as db:
            gray_a, gray_b = is_gray(da) or da.count == 1, is_gray(db) or db.count == 1
    return "B" if gray_b and not gray_a else "A"


def find_pix2pix(root: Path, opts: PairOptions) -> list[ImagePair]:
    """pix2pix aligned images (A | B side by side) in ``train/ val/ test/`` (or ROOT itself)."""
    pairs = [ImagePair(f, f, None, split) for split, d in _split_roots(root) for f in _images(d)]
    if not pairs:
        raise InputError(f"no pix2pix images under {root} ({_entries(root)}): expected train/ val/ test/ folders "
                         f"of A|B images (PNG, JPEG or TIFF)")
    side = _sar_side(pairs[0].sar, pairs[0].sar, opts.sar_is, half=True)
    return [replace(p, half=side) for p in pairs]


def find_cyclegan(root: Path, opts: PairOptions, skipped: Counter) -> list[ImagePair]:
    """CycleGAN ``{train,val,test}{A,B}`` folders; an A and a B file pair when their names (stems) match."""
    pairs: list[ImagePair] = []
    side = opts.sar_is
    for split in _SPLIT_NAMES:
        da, db = _sub(root, f"{split}A"), _sub(root, f"{split}B")
        if da is None or db is None:
            continue
        a = {f.stem: f for f in _images(da)}
        b = {f.stem: f for f in _images(db)}
        common = sorted(set(a) & set(b))
        skipped["unmatched"] += len(a) + len(b) - 2 * len(common)
        if common and side == "auto":
            side = _sar_side(a[common[0]], b[common[0]], "auto")
        for s in common:
            sar, opt = (a[s], b[s]) if side == "A" else (b[s], a[s])
            pairs.append(ImagePair(sar, opt, None, split))
    if not pairs:
        raise InputError(f"no CycleGAN pairs under {root} ({_entries(root)}): sarkit pairs a trainA file with the "
                         f"trainB file of the same name (likewise testA/testB, valA/valB); unrelated A and B "
                         f"files cannot be tiled as pairs")
    return pairs


def find_sen12(root: Path, skipped: Counter) -> list[ImagePair]:
    """SEN1-2 patches: ``ROIs…/s1_N/ROIs…_s1_N_pM.*`` with ``ROIs…/s2_N/ROIs…_s2_N_pM.*`` (``skipped`` counts
    SAR patches without a partner)."""
    s1s = _sen12_s1_files(root)
    pairs = []
    for f in s1s:
        m = _SEN12_S1.fullmatch(f.stem)
        assert m is not None
        folder = _sub(f.parent.parent, f"s2_{m['n']}")
        name = f"{m['base']}_s2_{m['n']}_p{m['p']}{f.suffix}"
        partner = next((p for p in _images(folder) if p.name.lower() == name.lower()), None) if folder else None
        if partner is not None:
            pairs.append(ImagePair(f, partner))
        else:
            skipped["unmatched"] += 1
    if not pairs:
        seen = f"{len(s1s)} s1 patch(es) but none has its s2_N partner" if s1s else _entries(root)
        raise InputError(f"no SEN1-2 pairs under {root} ({seen}): expected ROIs…/s1_N/ROIs…_s1_N_pM.png with "
                         f"ROIs…/s2_N/ROIs…_s2_N_pM.png")
    return pairs


def _number(stem: str) -> int | None:
    """The last number in a file name stem ("sar12" → 12), or None."""
    nums = re.findall(r"\d+", stem)
    return int(nums[-1]) if nums else None


def match_files(sar: list[Path], other: list[Path]) -> dict[Path, Path]:
    """SAR file → its partner among ``other``: the same stem, else the same number in the name (unique on both
    sides)."""
    by_stem = {f.stem.lower(): f for f in other}
    out = {s: by_stem[s.stem.lower()] for s in sar if s.stem.lower() in by_stem}
    left = [s for s in sar if s not in out]
    used = set(out.values())
    nums = Counter(_number(f.stem) for f in other if f not in used)
    by_num = {_number(f.stem): f for f in other if f not in used}
    sar_nums = Counter(_number(s.stem) for s in left)
    for s in left:
        n = _number(s.stem)
        if n is not None and nums[n] == 1 and sar_nums[n] == 1:
            out[s] = by_num[n]
    return out


def _folder(base: Path, given: str | None, names: Sequence[str]) -> Path | None:
    """The folder ``given`` (relative to ``base`` or absolute), else the first of ``names`` under ``base``."""
    if given is None:
        return _first_sub(base, names)
    p = Path(given)
    return p if p.is_absolute() and p.is_dir() else _sub(base, given)


def find_folders(root: Path, opts: PairOptions, skipped: Counter) -> list[ImagePair]:
    """A SAR and an optical folder (optionally labels) under ROOT or under each of its ``train/ val/ test/``."""
    pairs: list[ImagePair] = []
    bases = [(s, d) for s, d in _split_roots(root) if _folder(d, opts.sar_dir, SAR_DIRS) is not None]
    if not bases:
        bases = [(None, root)]
    for split, base in bases:
        sd, od = _folder(base, opts.sar_dir, SAR_DIRS), _folder(base, opts.opt_dir, OPT_DIRS)
        if sd is None or od is None:
            which = "--sar-dir" if sd is None else "--opt-dir"
            given = opts.sar_dir if sd is None else opts.opt_dir
            names = SAR_DIRS if sd is None else OPT_DIRS
            raise InputError(f"no {'SAR' if sd is None else 'optical'} folder under {base} "
                             f"({given if given else 'none of ' + ', '.join(names)}; {_entries(base)}): name it "
                             f"with {which}")
        ld = _folder(base, opts.label_dir, LABEL_DIRS)
        if opts.label_dir is not None and ld is None:
            raise InputError(f"--label-dir {opts.label_dir}: no such folder under {base} ({_entries(base)})")
        sar = _images(sd)
        opt = match_files(sar, _images(od))
        lab = match_files(sar, _images(ld)) if ld is not None else {}
        skipped["unmatched"] += len(sar) - len(opt)
        for s in sar:
            if s in opt:
                if ld is not None and s not in lab:
                    raise InputError(f"SAR image {s} has no label image in {ld} (by name or number); give every "
                                     f"pair its labels, or leave out --label-dir")
                pairs.append(ImagePair(s, opt[s], lab.get(s), split))
    if not pairs:
        raise InputError(f"no SAR/optical pairs under {root}: no file of the SAR folder has a partner of the same "
                         f"name or number in the optical folder ({_entries(root)})")
    return pairs


def find_pairs(root: Path, opts: PairOptions, skipped: Counter | None = None) -> tuple[str, list[ImagePair]]:
    """The convention of ``root`` and its pairs (``skipped`` counts files without a partner)."""
    root = Path(root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is a file"
        raise InputError(f"--layout pairs expects the dataset root folder, got {root} (it {what})")
    skipped = skipped if skipped is not None else Counter()
    conv = detect_convention(root, opts)
    if conv == "pix2pix":
        return conv, find_pix2pix(root, opts)
    if conv == "cyclegan":
        return conv, find_cyclegan(root, opts, skipped)
    if conv == "sen1-2":
        return conv, find_sen12(root, skipped)
    return conv, find_folders(root, opts, skipped)


# --------------------------------------------------------------------------------------------- reading pairs


class _OpenPair:
    """The SAR, optical and label images of one pair as ``ImageSource``s on one pixel grid."""

    def __init__(self, pair: ImagePair, root: Path) -> None:
        self.pair = pair
        self.sources: list[ImageSource] = []
        try:
            self._open(pair, root)
        except BaseException:
            self.close()
            raise

    def _keep(self, s: ImageSource) -> ImageSource:
        self.sources.append(s)
        return s

    def _open(self, pair: ImagePair, root: Path) -> None:
        rel = _rel(pair.sar, root)
        if pair.half is not None:
            ds = open_quiet(pair.sar, "pix2pix image")
            self._ds = ds
            if ds.width % 2:
                raise InputError(f"pix2pix image {rel} is {ds.width} pixels wide (odd): an A|B image holds two "
                                 f"halves of equal width")
            w = ds.width // 2
            halves = {"A": PixelWindow(0, 0, ds.height, w), "B": PixelWindow(0, w, ds.height, w)}
            other = "B" if pair.half == "A" else "A"
            self.sar = self._keep(ImageSource(ds, Modality.SAR, part=halves[pair.half],
                                              label=f"SAR half {pair.half} of {rel}"))
            self.opt = self._keep(ImageSource(ds, Modality.OPTICAL, part=halves[other],
                                              label=f"optical half {other} of {rel}"))
        else:
            self.sar = self._keep(ImageSource(pair.sar, Modality.SAR, label=f"SAR image {rel}"))
            self.opt = self._keep(ImageSource(pair.optical, Modality.OPTICAL,
                                              label=f"optical image {_rel(pair.optical, root)}"))
        self.lab = None
        if pair.labels is not None:
            self.lab = self._keep(ImageSource(pair.labels, Modality.OPTICAL, gray=True,
                                              label=f"label image {_rel(pair.labels, root)}"))
        g = self.sar.grid
        for s in (self.opt, self.lab):
            if s is not None and (s.grid.height, s.grid.width) != (g.height, g.width):
                raise InputError(f"{self.sar.label} is {g.width}×{g.height} but {s.label} is "
                                 f"{s.grid.width}×{s.grid.height}: the images of a pair must have the same size")
        if len(self.sar.band_names) > 2:
            raise InputError(f"{self.sar.label} has {len(self.sar.band_names)} different channels: a SAR image is "
                             f"gray (one channel, or three equal ones) or two polarisations; is A/B swapped? "
                             f"(--sar-is)")

    @property
    def grid(self) -> GridSpec:
        return self.sar.grid

    def __enter__(self) -> "_OpenPair":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for s in self.sources:
            s.close()
        if getattr(self, "_ds", None) is not None:
            self._ds.close()


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when under it, for messages and the manifest."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------- tiling


@dataclass
class _PairTile:
    pair: int
    window: PixelWindow
    tile_id: str
    split: str = ""
    nodata_fraction: float = 0.0


def _stems(pairs: list[ImagePair], root: Path) -> list[str]:
    """Tile-id stems: the SAR file's stem, prefixed with its folders below ROOT where stems repeat."""
    stems = [p.sar.stem for p in pairs]
    counts = Counter(stems)
    out = []
    for p, s in zip(pairs, stems):
        if counts[s] > 1:
            s = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(Path(_rel(p.sar, root)).with_suffix("")))
        out.append(s)
    return out


def _side_of(conv: str, pair: ImagePair) -> str | None:
    """Which side (A or B) is SAR in a pix2pix or CycleGAN set; None for the other conventions."""
    if conv == "pix2pix":
        return pair.half
    return pair.sar.parent.name[-1].upper() if conv == "cyclegan" else None


def _check_same(first: _OpenPair, o: _OpenPair) -> None:
    """Every pair of a tile set has the same bands and value ranges as the first."""
    for what, a, b in (("SAR", first.sar, o.sar), ("optical", first.opt, o.opt)):
        if len(a.band_names) != len(b.band_names) or a.top != b.top:
            raise InputError(f"{b.label} has {len(b.band_names)} channel(s) of 0–{b.top:.0f} but {a.label} has "
                             f"{len(a.band_names)} of 0–{a.top:.0f}: the {what} images of one tile set must agree "
                             f"(tile them into separate folders)")


@dataclass(frozen=True)
class GroundFootprints:
    """Where the images of a pair dataset lie: ``crs`` (e.g. "EPSG:3395") and each pair's ``Bounds`` in it."""

    crs: str
    bounds: tuple[Bounds, ...]


def read_ground_footprints(root: Path, pairs: list[ImagePair]) -> GroundFootprints | None:
    """Each pair's ground bounds from ROOT/``GROUND_FILE`` (the envelope of its four corners), matched by the SAR
    file's name; None when the file is absent, not such a list, or misses a pair."""
    path = Path(root) / GROUND_FILE
    if not path.is_file():
        return None
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(records, list):
        return None
    by_name: dict[str, tuple[str, Bounds]] = {}
    for r in records:
        keys = [k for k in r if str(k).startswith("corners_EPSG:")] if isinstance(r, dict) else []
        if not keys or "fragment_filename" not in r:
            continue
        xy = np.asarray(r[keys[0]], dtype=float)
        if xy.shape != (4, 2):
            continue
        crs = keys[0][len("corners_"):]
        by_name[str(r["fragment_filename"])] = (crs, Bounds(xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(),
                                                            xy[:, 1].max()))
    found = [by_name.get(p.sar.name) for p in pairs]
    if not found or any(f is None for f in found) or len({f[0] for f in found}) != 1:  # type: ignore[index]
        return None
    return GroundFootprints(found[0][0], tuple(f[1] for f in found))  # type: ignore[index]


def _overlap(a: Bounds, b: Bounds) -> bool:
    """Do two footprints share area (touching edges do not)?"""
    return min(a.right, b.right) > max(a.left, b.left) and min(a.top, b.top) > max(a.bottom, b.bottom)


def ground_blocks_of(fp: GroundFootprints, side_m: float) -> list[int]:
    """Block id of each image: the cell (side ``side_m``, from the top-left of the union) holding its top-left
    corner; images whose footprints overlap are merged into one block (union-find), so they share a split."""
    left = min(b.left for b in fp.bounds)
    top = max(b.top for b in fp.bounds)
    cells = [(math.floor((top - b.top) / side_m + 1e-9), math.floor((b.left - left) / side_m + 1e-9))
             for b in fp.bounds]
    parent = list(range(len(cells)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[int, int], int] = {}
    for i, c in enumerate(cells):
        parent[find(i)] = find(first.setdefault(c, i))
    for i in range(len(cells)):
        for j in range(i + 1, len(cells)):
            if _overlap(fp.bounds[i], fp.bounds[j]):
                parent[find(j)] = find(i)
    roots = sorted({find(i) for i in range(len(cells))})
    return [roots.index(find(i)) for i in range(len(cells))]


def _ground_side(fp: GroundFootprints, grids: list[GridSpec], opts: Any) -> float:
    """Block side in ground units: ``--block-strides`` strides of the coarsest image pixel, else two images."""
    px = max((b.right - b.left) / g.width for b, g in zip(fp.bounds, grids))
    if getattr(opts, "block_strides", None):
        return float(opts.block_strides) * opts.stride * px
    return 2.0 * max(b.right - b.left for b in fp.bounds)


def _assign_splits(tiles: list[_PairTile], pairs: list[ImagePair], fractions: Sequence[float], seed: int,
                   blocks: list[int] | None = None) -> str:
    """The dataset's own splits when every pair has one; else whole ground blocks of images (``blocks``: one id
    per pair) or whole source images to splits (seeded, balanced by tile count, as
    ``sarkit.data.tiling.assign_splits`` gives blocks); returns how ("dataset", "ground" or "image")."""
    from sarkit.data.tiling import _Candidate, assign_splits

    if all(p.split is not None for p in pairs):
        for t in tiles:
            t.split = str(pairs[t.pair].split)
        return "dataset"
    block = blocks if blocks is not None else list(range(len(pairs)))
    cands = [_Candidate(t.pair, t.window, t.tile_id, Bounds(0, 0, 0, 0), block=(0, block[t.pair], 0))
             for t in tiles]
    assign_splits(cands, fractions, seed)
    for t, c in zip(tiles, cands):
        t.split = c.split
    return "image" if blocks is None else "ground"


def _tile_profile(window: PixelWindow, count: int, dtype: str) -> dict[str, Any]:
    """GeoTIFF profile of an image tile: no CRS, the window's place on the image's pixel grid, no nodata."""
    from rasterio.transform import Affine

    prof: dict[str, Any] = {"driver": "GTiff", "compress": "deflate", "height": window.height,
                            "width": window.width, "count": count, "dtype": dtype,
                            "transform": Affine.translation(window.col_off, window.row_off)}
    if window.height % 16 == 0 and window.width % 16 == 0:
        prof.update(tiled=True, blockxsize=min(256, window.width), blockysize=min(256, window.height))
    return prof


def _write(path: Path, data: np.ndarray, names: Sequence[str], dtype: str, window: PixelWindow,
           tags: dict[str, str]) -> None:
    """Write one image tile (values as stored) with band names and tags."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # no CRS, and the first tile's transform is the
        dst = rasterio.open(path, "w", **_tile_profile(window, data.shape[0], dtype))  # identity: both on purpose
    with dst:
        dst.write(data.astype(dtype))
        dst.descriptions = tuple(names)
        dst.update_tags(**tags)


def tile_pairs(root: Path, out: Path, opts: Any, pair_opts: PairOptions = PairOptions(),
               reporter: Reporter = NULL_REPORTER) -> Any:
    """Tile the image pairs of a dataset folder into ``out`` (see the module docstring); returns a ``TileSummary``.

    ``opts`` is a ``sarkit.data.tiling.TileOptions`` (size, stride, max-nodata, split, seed, overwrite); options of
    Sentinel data (AOI, units, ranges, padded edges) are refused.
    """
    from sarkit.data.tiling import TileSummary, tile_id, tile_windows, validate_options

    validate_options(opts)
    if opts.pad_edges or opts.aoi is not None:
        raise InputError(f"{'--pad-edges' if opts.pad_edges else '--aoi'} is not available with --layout pairs "
                         f"(images without georeferencing are cut into whole tiles)")
    out, root = Path(out), Path(root)
    check_output(out, opts.overwrite)
    skipped: Counter[str] = Counter()
    conv, pairs = find_pairs(root, pair_opts, skipped)
    side = _side_of(conv, pairs[0])
    reporter.info(f"{len(pairs)} {conv} image pair(s) found under {root}"
                  + (f"; SAR is side {side} (--sar-is to change)" if side else ""))
    stems = _stems(pairs, root)
    tiles: list[_PairTile] = []
    grids: list[GridSpec] = []
    first = _OpenPair(pairs[0], root)
    try:
        sar_bands, opt_bands = list(first.sar.band_names), list(first.opt.band_names)
        sar_top, opt_top, opt_dtype = first.sar.top, first.opt.top, first.opt.dtype
        has_lab = pairs[0].labels is not None
        for i, p in enumerate(pairs):
            with _OpenPair(p, root) as op:
                _check_same(first, op)
                grids.append(op.grid)
                wins = tile_windows(op.grid.height, op.grid.width, opts)
                if not wins:
                    skipped["too_small"] += 1
                tiles += [_PairTile(i, w, tile_id(stems[i], w)) for w in wins]
    finally:
        first.close()
    if not tiles:
        raise InputError(f"no image of {root} holds a whole --size {opts.size} tile: use a smaller --size")
    skipped = Counter({k: v for k, v in skipped.items() if v})
    ground = read_ground_footprints(root, pairs)
    blocks = ground_blocks_of(ground, _ground_side(ground, grids, opts)) if ground is not None else None
    if ground is not None:
        reporter.info(f"{GROUND_FILE} places the images on the ground ({ground.crs}): split by "
                      f"{len(set(blocks or []))} contiguous ground blocks")
    how = _assign_splits(tiles, pairs, opts.split, opts.seed, blocks)
    sar_norm = image_normalization(Modality.SAR, sar_bands, sar_top)
    opt_norm = image_normalization(Modality.OPTICAL, opt_bands, opt_top)
    kept: list[_PairTile] = []
    classes: set[int] = set()
    with atomic_dir(out, opts.overwrite) as tmp:
        for sub in ("s1", "s2") + (("labels",) if has_lab else ()):
            (tmp / sub).mkdir()
        with reporter.task("Tiling", total=len(tiles)) as task:
            for i, p in enumerate(pairs):
                mine = [t for t in tiles if t.pair == i]
                if mine:
                    with _OpenPair(p, root) as op:
                        kept += _write_pair(op, mine, tmp, opts, sar_bands, opt_bands, classes, skipped, task)
        if not kept:
            raise InputError(f"no tile passed the filters ({dict(skipped)}): raise --max-nodata")
        class_names = [f"class_{c}" for c in range(max(classes) + 1)] if has_lab and classes else (
            ["class_0"] if has_lab else None)
        if has_lab:
            _tag_classes(tmp, kept, class_names)
        _write_manifest(tmp / "manifest.csv", kept, pairs, root, has_lab)
        splits = {s: sum(t.split == s for t in kept) for s in _SPLIT_NAMES}
        record = _record(opts, pair_opts, conv, how, root, pairs, sar_norm, opt_norm, class_names, len(kept),
                         dict(skipped), splits, opt_dtype)
        if ground is not None:
            record["pairs"]["ground"] = {"file": GROUND_FILE, "crs": ground.crs,
                                         "block_side": _ground_side(ground, grids, opts),
                                         "bounds": [list(b) for b in ground.bounds], "blocks": blocks}
        (tmp / "tiling.json").write_text(json.dumps(record, indent=2) + "\n")
    return TileSummary(out, len(kept), dict(skipped), splits, len(pairs),
                       "label images, ids as stored" if has_lab else None)


def _write_pair(op: _OpenPair, mine: list[_PairTile], tmp: Path, opts: Any, sar_bands: list[str],
                opt_bands: list[str], classes: set[int], skipped: Counter, task: Any) -> list[_PairTile]:
    """Read and write the tiles ``mine`` of one open pair; return those written."""
    from sarkit.data.layouts import LABEL_NODATA, map_labels

    written = []
    tags = {"units": IMAGE_UNITS, "grid": "pixel"}
    for t in mine:
        sar, opt = op.sar.read(t.window), op.opt.read(t.window)
        invalid = ~(sar.valid & opt.valid)
        labels = None
        if op.lab is not None:
            raw = op.lab.read_stored(t.window)[0]
            labels = map_labels(np.nan_to_num(raw, nan=-1), "raw")
            invalid |= labels == LABEL_NODATA
        t.nodata_fraction = float(invalid.mean())
        task.advance(1)
        if t.nodata_fraction > opts.max_nodata:
            skipped["nodata"] += 1
            continue
        name = f"{t.tile_id}.tif"
        _write(tmp / "s1" / name, np.nan_to_num(sar.values), sar_bands, op.sar.dtype, t.window,
               {**tags, "value_range": f"0,{op.sar.top:.0f}"})
        _write(tmp / "s2" / name, np.nan_to_num(opt.values), opt_bands, op.opt.dtype, t.window,
               {**tags, "value_range": f"0,{op.opt.top:.0f}"})
        if labels is not None:
            classes.update(int(c) for c in np.unique(labels) if c != LABEL_NODATA)
            _write(tmp / "labels" / name, labels[None], ["labels"], "uint8", t.window, tags)
        written.append(t)
    return written


def _tag_classes(tmp: Path, kept: list[_PairTile], names: list[str]) -> None:
    """Record the class names in every label tile (tag ``class_names``), once all classes are known."""
    import rasterio

    for t in kept:
        with rasterio.open(tmp / "labels" / f"{t.tile_id}.tif", "r+") as dst:
            dst.update_tags(class_names=json.dumps(names), label_source="label images, ids as stored")


def _write_manifest(path: Path, kept: list[_PairTile], pairs: list[ImagePair], root: Path, has_lab: bool) -> None:
    """``manifest.csv`` with the columns of ``sarkit.data.tiling.MANIFEST_COLUMNS``; bounds are pixel coordinates
    of the source image and ``crs`` says ``PIXEL_GRID``."""
    from sarkit.data.tiling import MANIFEST_COLUMNS

    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        wr.writeheader()
        for t in kept:
            p, w = pairs[t.pair], t.window
            wr.writerow({
                "tile_id": t.tile_id, "split": t.split, "s1_path": f"s1/{t.tile_id}.tif",
                "s2_path": f"s2/{t.tile_id}.tif", "labels_path": f"labels/{t.tile_id}.tif" if has_lab else "",
                "row_off": w.row_off, "col_off": w.col_off, "height": w.height, "width": w.width,
                "left": w.col_off, "bottom": w.row_end, "right": w.col_end, "top": w.row_off,
                "crs": PIXEL_GRID, "nodata_fraction": f"{t.nodata_fraction:.6f}",
                "source_s1": str(p.sar.resolve()) + (f"#{p.half}" if p.half else ""),
                "source_s2": str(p.optical.resolve()) + (f"#{'B' if p.half == 'A' else 'A'}" if p.half else ""),
                "source_labels": str(p.labels.resolve()) if p.labels else "",
            })


def _record(opts: Any, pair_opts: PairOptions, conv: str, how: str, root: Path, pairs: list[ImagePair],
            sar_norm: Any, opt_norm: Any, classes: list[str] | None, written: int, skipped: dict[str, int],
            splits: dict[str, int], opt_dtype: str) -> dict[str, Any]:
    """The ``tiling.json`` record of an image-pair tile set (the contract of ``sarkit tile``, plus ``pairs``)."""
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    params.update(split=list(opts.split), s1_range=[0.0, sar_norm.hi[0]], s2_range=[0.0, opt_norm.hi[0]],
                  s1_units=IMAGE_UNITS, layout="pairs", root=str(root.resolve()))
    return {
        "sarkit_version": __version__,
        "params": params,
        "normalization": {"sar": sar_norm.to_dict(), "optical": opt_norm.to_dict()},
        "sar_bands": list(sar_norm.bands),
        "optical_bands": list(opt_norm.bands),
        "classes": classes,
        "labels": {"band": 1, "scheme": "raw", "source": "label images, ids as stored"} if classes else None,
        "georeferenced": False,
        "grid": "pixel grid of each source image, no CRS (manifest crs: none (pixel grid))",
        "pairs": {"convention": conv, "split_by": how, "sar_is": _side_of(conv, pairs[0]),
                  **{k: v for k, v in asdict(pair_opts).items()
                     if k not in ("convention", "sar_is") and v is not None}},
        "sources": {
            "s1": [str(p.sar.resolve()) for p in pairs],
            "s2": [str(p.optical.resolve()) for p in pairs],
            "labels": [str(p.labels.resolve()) if p.labels else None for p in pairs],
            "s1_units_detected": [IMAGE_UNITS] * len(pairs),
            "optical_dtype": opt_dtype,
        },
        "counts": {"written": written, "skipped": skipped, **splits},
    }
