"""Torch dataset over a tile directory written by ``sarkit tile`` (contract in docs).

Items hold SAR and optical tensors in the model range [-1, 1] (fixed ranges from ``tiling.json``; nodata
filled with −1), a validity mask, optional labels (255 = ignore) and the tile id. Paired mode reads SAR and
optical of the same tile; unpaired mode pairs SAR tile ``i`` with an optical tile drawn independently for
(seed, epoch, i). Augmentation applies the same random flips / rot90 to every array of an item.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
import torch
from torch.utils.data import Dataset

from sarkit.errors import InputError
from sarkit.data.multiset import check_compatible, combined_rows, data_dirs, row_root
from sarkit.data.tiling import SPLITS
from sarkit.raster.norm import Normalization, resolve_bands
from sarkit.raster.images import source_for
from sarkit.raster.source import Modality, Reading, to_model

LABEL_IGNORE = 255


def read_tiling(root: str | Path) -> dict[str, Any]:
    """The ``tiling.json`` record of a tile directory (``InputError`` when missing or invalid)."""
    path = Path(root) / "tiling.json"
    if not path.is_file():
        raise InputError(f"not a sarkit tile directory (no tiling.json): {root} (create one with sarkit tile)")
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"tiling.json is not valid JSON: {path} ({exc.msg}); re-run sarkit tile") from None
    for key in ("params", "normalization", "sar_bands"):
        if not isinstance(rec, dict) or key not in rec:
            raise InputError(f"tiling.json lacks {key!r}: {path} (re-run sarkit tile)")
    return rec


def load_manifest(root: str | Path, split: str | None = None) -> list[dict[str, str]]:
    """Rows of ``manifest.csv`` (all, or those of ``split``: train, val or test)."""
    if split is not None and split not in SPLITS:
        raise InputError(f"unknown split {split!r}: use train, val or test")
    path = Path(root) / "manifest.csv"
    if not path.is_file():
        raise InputError(f"no manifest.csv in {root} (create the tiles with sarkit tile)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if split is None or r["split"] == split]


def _augment_ops(rng: np.random.Generator) -> tuple[int, bool, bool]:
    """A random rot90 count and horizontal / vertical flips."""
    return int(rng.integers(4)), bool(rng.integers(2)), bool(rng.integers(2))


def _apply_ops(a: np.ndarray, ops: tuple[int, bool, bool]) -> np.ndarray:
    """Apply rot90 ``k`` times then flips on the last two axes of ``a``."""
    k, fh, fv = ops
    a = np.rot90(a, k, axes=(-2, -1))
    if fh:
        a = a[..., :, ::-1]
    if fv:
        a = a[..., ::-1, :]
    return np.ascontiguousarray(a)


class TileDataset(Dataset):
    """SAR / optical (/ label) tiles of one split of a tile directory, as model-range tensors. ``root`` may be
    several tile directories (``sarkit.data.multiset``): their tiles in order, each read from its own folder with
    its own DN offset, ids prefixed by the set's name; ``root`` is then the first."""

    def __init__(self, root: str | Path | Sequence[str | Path], split: str | None = "train", mode: str = "paired",
                 sar_bands: Sequence[str | int] | None = None,
                 optical_bands: Sequence[str | int] | None = ("B4", "B3", "B2"),
                 labels: bool = False, augment: bool = False, seed: int = 0) -> None:
        if mode not in ("paired", "unpaired"):
            raise InputError(f"dataset mode must be paired or unpaired, got {mode!r}")
        self.roots = data_dirs(root)
        self.root = root = self.roots[0]
        records = [read_tiling(r) for r in self.roots]
        check_compatible(records, self.roots)
        self.record = records[0]
        self.rows = combined_rows(self.roots, [load_manifest(r, split) for r in self.roots])
        if not self.rows:
            where = root if len(self.roots) == 1 else ", ".join(map(str, self.roots))
            raise InputError(f"no tiles in split {split!r} of {where} (change --split when tiling, or pick another)")
        self._offsets = {str(r): float((rec["normalization"].get("optical") or {}).get("offset", 0.0))
                         for r, rec in zip(self.roots, records)}
        self.mode, self.augment, self.seed, self.epoch = mode, augment, int(seed), 0
        self.split = split
        norms = self.record["normalization"]
        all_sar = self.all_sar = list(self.record["sar_bands"])
        sel = all_sar if sar_bands is None else list(sar_bands)
        self.sar_index = resolve_bands(all_sar, sel, "SAR tiles")
        self.sar_norm = Normalization.from_dict(norms["sar"]).select([all_sar[i] for i in self.sar_index])
        all_opt = self.all_optical = self.record.get("optical_bands")
        self.optical_index: list[int] | None = None
        self.optical_norm: Normalization | None = None
        if optical_bands is not None and all_opt:
            self.optical_index = resolve_bands(all_opt, list(optical_bands), "optical tiles")
            self.optical_norm = Normalization.from_dict(norms["optical"]).select(
                [all_opt[i] for i in self.optical_index])
        self.labels = labels
        self.class_names: list[str] | None = self.record.get("classes")
        self.num_classes: int | None = len(self.class_names) if self.class_names else None
        if labels and (not self.class_names or not self.rows[0].get("labels_path")):
            raise InputError(f"tiles in {root} have no labels (tile with --labels, or use labels=False)")
        self.tile_size = int(self.record["params"]["size"])
        self.ids = [r["tile_id"] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose unpaired partners and augmentations are drawn."""
        self.epoch = int(epoch)

    def _rng(self, i: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, i, stream])

    def partner(self, i: int) -> int:
        """Index of the optical tile paired with item ``i`` (itself in paired mode; drawn in unpaired)."""
        if self.mode == "paired":
            return i % len(self.rows)
        return int(self._rng(i, 0).integers(len(self.rows)))

    def tile_path(self, row: dict[str, str], column: str) -> Path:
        """The file a manifest row's ``column`` (s1_path, s2_path, labels_path) names, in the row's own set."""
        return row_root(row, self.root) / row[column]

    def _read(self, path: Path, modality: Modality, names: list[str], norm: Normalization,
              dn_offset: float | None = None) -> Reading:
        """A whole tile in physical units (SAR dB; optical reflectance with its set's DN offset; image values for
        tiles of image pairs, whose normalisation says units "image")."""
        with source_for(path, norm, names=names, units="db",
                        dn_offset=norm.offset if dn_offset is None else dn_offset, gray=False,
                        label=f"tile {path.name}") as src:
            return src.read(src.grid.window, norm.bands)

    def _read_sar(self, row: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """Model-range SAR (C, H, W) with −1 at nodata, and its validity mask."""
        reading = self._read(self.tile_path(row, "s1_path"), Modality.SAR, self.all_sar, self.sar_norm)
        return to_model(reading, self.sar_norm)

    def _read_optical(self, row: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """Model-range optical (C, H, W) with −1 at nodata, and its validity mask."""
        assert self.optical_norm is not None and self.all_optical is not None
        reading = self._read(self.tile_path(row, "s2_path"), Modality.OPTICAL, self.all_optical, self.optical_norm,
                             self._offsets.get(str(row_root(row, self.root))))
        return to_model(reading, self.optical_norm)

    def _read_labels(self, row: dict[str, str]) -> np.ndarray:
        with rasterio.open(self.tile_path(row, "labels_path")) as src:
            return src.read(1).astype(np.int64)

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self.rows)
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        row = self.rows[i]
        sar, sar_valid = self._read_sar(row)
        arrays: dict[str, np.ndarray] = {"sar": sar}
        item: dict[str, Any] = {"id": row["tile_id"]}
        opt_valid = np.ones_like(sar_valid)
        if self.optical_index is not None:
            j = self.partner(i)
            optical, opt_valid = self._read_optical(self.rows[j])
            arrays["optical"] = optical
            if self.mode == "unpaired":
                item["sar_id"], item["optical_id"] = row["tile_id"], self.rows[j]["tile_id"]
        arrays["sar_valid"], arrays["optical_valid"] = sar_valid, opt_valid
        if self.labels:
            arrays["labels"] = self._read_labels(row)
        if self.augment:
            ops = _augment_ops(self._rng(i, 1))
            arrays = {k: _apply_ops(v, ops) for k, v in arrays.items()}
        for key in ("sar", "optical"):
            if key in arrays:
                item[key] = torch.from_numpy(arrays[key].astype(np.float32, copy=False))
        item["sar_valid"] = torch.from_numpy(arrays["sar_valid"])
        item["optical_valid"] = torch.from_numpy(arrays["optical_valid"])
        item["valid"] = item["sar_valid"] & item["optical_valid"]
        if self.labels:
            item["labels"] = torch.from_numpy(arrays["labels"])
        return item
