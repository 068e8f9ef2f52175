"""Streaming evaluation of predictions against targets: two scenes, two tile sets, or a generator on a split.

Every source yields ``Block``s in model range [-1, 1] (NaN = nodata) under fixed ``Normalization`` ranges (from
the checkpoint, the tiling, or inferred from the files and ``--s1-range``/``--s2-range``); metrics are computed
in normalised [0, 1] space ``(x + 1)/2``. A pixel counts when every band of both images holds data.

* Scenes are read in 256-px windows of a non-overlapping grid (``sarkit.grid.window_grid``); each window is
  read with a 5-px halo so that scene-level SSIM uses every window centre a whole-image SSIM would use.
* Tile sets are matched by file stem; each pair is read like a small scene.
* A model on a split runs the exported generator on ``TileDataset(paired)`` tiles in batches.

Memory stays bounded: per-tile numbers, running sums (pixel errors, confusion matrix, FID Σx/Σxxᵀ), at most
``batch_size`` queued tiles for LPIPS and, after the pass, at most nine re-read tiles for the report's
best/median/worst grid.

Networks beyond the pixel metrics: FID/FID-CLIP (``fid.py``), LPIPS (``lpips.py``, per tile, batched), and
the F of SMS, either the ``--segmenter``'s softmax (``segmetrics.py``) or Segment Anything (``sam.py``,
``sms_model="sam"``). FID, LPIPS and SAM see three channels: ``fid.to_rgb`` (optical B4, B3, B2; SAR as
(VV, VH, (VV + VH)/2)).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import InputError, WorkError
from ..grid import PixelWindow, window_grid
from ..io import open_raster
from ..norm import (DEFAULT_OPTICAL_RANGE, DEFAULT_SAR_RANGE, S1_BANDS, Normalization, band_names,
                    dn_offset_from_tags, dn_to_reflectance, optical_normalization, s2_dn_offset, sar_normalization)
from ..reporting import NULL_REPORTER, Reporter
from . import metrics as M
from .segmetrics import IGNORE, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy, sms_map

ALL_METRICS = ("psnr", "ssim", "mae", "fid", "fid-clip", "pa", "miou", "sms", "lpips")
DEFAULT_METRICS = ("psnr", "ssim", "mae")
SEG_METRICS = ("pa", "miou", "sms")
SMS_MODELS = ("deeplab", "sam")
HALO = M.SSIM_PAD
#: report.json schema; 1.1 added tiles[].lpips and the optional top-level "networks".
SCHEMA = "sarkit.eval/1.1"


@dataclass
class EvalOptions:
    """What to compute and with which weights/ranges."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    s1_range: tuple[float, float] | None = None
    s2_range: tuple[float, float] | None = None
    s2_offset: bool = False  # untagged Sentinel-2 DN carry the −1000 offset of processing baseline 04.00+
    segmenter: Path | None = None
    sms_model: str = "deeplab"  # "deeplab": the --segmenter's softmax; "sam": Segment Anything (sarkit.eval.sam)
    sam_weights: Path | None = None
    lpips_weights: Path | None = None
    lpips_backbone: Path | None = None
    fid_weights: Path | None = None
    clip_weights: Path | None = None
    clip_model: str = "ViT-B-32"
    batch_size: int = 8
    device: str = "cpu"
    tile_size: int = 256
    grid_tiles: int = 3
    thumb_px: int = 128
    input_scene: Path | None = None  # shown beside prediction and target in the report's scene overview
    overview_px: int = 512


@dataclass
class Block:
    """One evaluated tile: model-range arrays (C, H, W) with NaN nodata; ``core`` = counted part (block coords)."""

    id: str
    pred: np.ndarray
    target: np.ndarray
    core: PixelWindow
    labels: np.ndarray | None = None
    input: np.ndarray | None = None
    window: PixelWindow | None = None


@dataclass
class EvalResult:
    """The report record (JSON-ready) and the thumbnails for the HTML report."""

    report: dict[str, Any]
    thumbnails: list[dict[str, Any]] = field(default_factory=list)
    overview: list[dict[str, str]] = field(default_factory=list)


def parse_metrics(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"psnr,ssim,fid"`` → validated names (``miou`` comes with ``pa``)."""
    if text is None:
        return DEFAULT_METRICS
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for m in (s.strip().lower() for s in items):
        if not m:
            continue
        if m not in ALL_METRICS:
            raise InputError(f"unknown metric {m!r}; choose from {', '.join(ALL_METRICS)}")
        if m not in out:
            out.append(m)
        if m == "pa" and "miou" not in out:
            out.append("miou")
    if not out:
        raise InputError("--metrics is empty; e.g. --metrics psnr,ssim,mae")
    return tuple(out)


# ----------------------------------------------------------------------------------------------- raster pairs

def _close_transform(a: Any, b: Any, tol: float = 1e-3) -> bool:
    """Affine transforms equal within ``tol`` pixels (absorbs float noise such as Sen1Floods11's 3e-19°)."""
    px = max(abs(b.a), abs(b.e), 1e-300)
    return all(abs(x - y) <= tol * px for x, y in zip(tuple(a)[:6], tuple(b)[:6]))


def _modality_of(src: Any) -> str:
    """float → SAR in dB; integer → optical digital numbers."""
    return "sar" if np.dtype(src.dtypes[0]).kind == "f" else "optical"


class _PairReader:
    """A prediction and a target raster (and optional labels) on the target's grid."""

    def __init__(self, pred: Path, target: Path, labels: Path | None, reporter: Reporter,
                 default_offset: float = 0.0) -> None:
        self._stack: list[Any] = []
        self.target = self._keep(open_raster(target, "target"))
        self.pred = self._keep(open_raster(pred, "prediction"))
        self.pred_name, self.target_name = str(pred), str(target)
        self.modality = _modality_of(self.target)
        if self.pred.dtypes[0] == "uint8" and self.modality == "optical":
            self.close()
            raise InputError(f"prediction {pred} is 8-bit (sarkit translate --format rgb8, for display): its values "
                             f"are not reflectance; evaluate the native output (--format native) instead")
        self.target_idx = self._match_bands(pred, target)
        if _modality_of(self.pred) != self.modality:
            self.close()
            raise InputError(f"prediction {pred} is {_modality_of(self.pred)} ({self.pred.dtypes[0]}) but target "
                             f"{target} is {self.modality} ({self.target.dtypes[0]}); compare like with like")
        self.pred_nodata = self._nodata(self.pred)
        self.target_nodata = self._nodata(self.target)
        self.pred_offset = self._dn_offset(self.pred, "prediction", default_offset)
        self.target_offset = self._dn_offset(self.target, "target", default_offset)
        self.pred = self._align(self.pred, "prediction", reporter, resampling="bilinear")
        self.labels = None
        if labels is not None:
            lab = self._keep(open_raster(labels, "labels"))
            self.label_nodata = lab.nodata
            self.labels = self._align(lab, "labels", reporter, resampling="nearest")
            self.class_names = _class_names(lab)
        else:
            self.class_names = None
        self.height, self.width = self.target.height, self.target.width

    def _names(self, src: Any) -> list[str]:
        return band_names(src, list(S1_BANDS[: src.count]) if _modality_of(src) == "sar" else None)

    def _match_bands(self, pred: Path, target: Path) -> list[int]:
        """1-based target bands matching the prediction's bands: by name (a 3-band B4,B3,B2 prediction against a
        13-band Sentinel-2 target), else by position when the counts agree."""
        pn, tn = self._names(self.pred), self._names(self.target)
        if pn != tn and set(pn) <= set(tn):
            return [tn.index(n) + 1 for n in pn]
        if self.pred.count != self.target.count:
            self.close()
            raise InputError(f"different band counts: prediction {pred} has {self.pred.count} "
                             f"({', '.join(pn)}), target {target} has {self.target.count} ({', '.join(tn)})")
        return list(range(1, self.target.count + 1))

    def _keep(self, src: Any) -> Any:
        self._stack.append(src)
        return src

    def _nodata(self, src: Any) -> float | None:
        if src.nodata is not None:
            return float(src.nodata)
        return 0.0 if self.modality == "optical" else None

    def _dn_offset(self, src: Any, what: str, default: float) -> float:
        """Optical DN offset: the raster's ``dn_offset`` tag (sarkit's tiles and translations), else ``default``."""
        if self.modality != "optical":
            return 0.0
        try:
            return dn_offset_from_tags(src.tags(), default, f"{what} {src.name}")
        except InputError:
            self.close()
            raise

    def _align(self, src: Any, what: str, reporter: Reporter, resampling: str) -> Any:
        """``src`` itself when on the target grid, else a warped view onto it (``InputError`` if impossible)."""
        tgt = self.target
        same_shape = (src.height, src.width) == (tgt.height, tgt.width)
        if src.crs is None or tgt.crs is None or src.transform.is_identity or tgt.transform.is_identity:
            if same_shape:
                return src
            self.close()
            raise InputError(f"{what} {src.name} ({src.width}×{src.height}) and target ({tgt.width}×{tgt.height}) "
                             f"differ in size and lack a CRS to align them")
        if src.crs == tgt.crs and same_shape and _close_transform(src.transform, tgt.transform):
            return src
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import transform_bounds

        try:
            b = transform_bounds(src.crs, tgt.crs, *src.bounds)
        except Exception as exc:  # pyproj/GDAL raise various errors for impossible transforms
            self.close()
            raise InputError(f"{what} CRS {src.crs} cannot be transformed to the target's {tgt.crs}: "
                             f"{str(exc).splitlines()[0][:120]}") from None
        tb = tgt.bounds
        if not all(map(math.isfinite, b)) or b[0] >= tb.right or b[2] <= tb.left or b[1] >= tb.top or b[3] <= tb.bottom:
            self.close()
            raise InputError(f"{what} {src.name} does not overlap the target {tgt.name}")
        reporter.warn(f"{what} grid differs from the target's; reprojecting it onto the target grid ({resampling})")
        nodata = src.nodata
        if nodata is None:
            nodata = float("nan") if np.dtype(src.dtypes[0]).kind == "f" else (0 if what != "labels" else 255)
        vrt = WarpedVRT(src, crs=tgt.crs, transform=tgt.transform, width=tgt.width, height=tgt.height,
                        resampling=getattr(Resampling, resampling), src_nodata=nodata, nodata=nodata)
        if what == "prediction":
            self.pred_nodata = float(nodata)
        return self._keep(vrt)

    def band_names(self) -> list[str]:
        names = self._names(self.target)
        return [names[i - 1] for i in self.target_idx]

    def read(self, win: PixelWindow, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, PixelWindow, int]:
        """Physical pred/target (C, h, w) of ``win`` grown by ``pad`` px (clipped), labels, the core, NaN count."""
        outer = PixelWindow(max(0, win.row_off - pad), max(0, win.col_off - pad), 0, 0)
        r1 = min(self.height, win.row_end + pad)
        c1 = min(self.width, win.col_end + pad)
        outer = PixelWindow(outer.row_off, outer.col_off, r1 - outer.row_off, c1 - outer.col_off)
        rw = outer.to_rasterio()
        t = self._physical(self.target.read(self.target_idx, window=rw), self.target_nodata, self.target_offset)
        raw = self.pred.read(window=rw)
        p = self._physical(raw, self.pred_nodata, self.pred_offset)
        t_valid = np.isfinite(t).all(axis=0)
        bad_nan = 0
        if self.modality == "sar" and not (self.pred_nodata is not None and math.isnan(self.pred_nodata)):
            core = PixelWindow(win.row_off - outer.row_off, win.col_off - outer.col_off, win.height, win.width)
            nonfinite = ~np.isfinite(np.asarray(raw, dtype=np.float32)).all(axis=0)
            bad_nan = int((nonfinite & t_valid)[core.slices()].sum())
        labels = None
        if self.labels is not None:
            lab = self.labels.read(1, window=rw).astype(np.int64)
            bad = lab < 0
            if self.label_nodata is not None:
                bad |= lab == int(self.label_nodata)
            lab[bad] = IGNORE
            labels = lab
        core = PixelWindow(win.row_off - outer.row_off, win.col_off - outer.col_off, win.height, win.width)
        return p, t, labels, core, bad_nan

    def _physical(self, a: np.ndarray, nodata: float | None, offset: float) -> np.ndarray:
        """Raw values → physical units (dB / reflectance ``(DN + offset) / 10000``) with NaN nodata."""
        if self.modality == "optical":
            return dn_to_reflectance(a, offset=offset, nodata=nodata)
        v = np.asarray(a, dtype=np.float32).copy()
        if nodata is not None and not math.isnan(nodata):
            v[a == nodata] = np.nan
        v[~np.isfinite(v)] = np.nan
        return v

    def close(self) -> None:
        for s in reversed(self._stack):
            s.close()
        self._stack.clear()


def _class_names(src: Any) -> list[str] | None:
    import json

    tag = src.tags().get("class_names")
    if not tag:
        return None
    try:
        names = json.loads(tag)
    except ValueError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def partition(height: int, width: int, size: int) -> list[PixelWindow]:
    """Non-overlapping ``size`` windows covering every pixel (edge windows smaller), row-major."""
    full = PixelWindow(0, 0, height, width)
    hp, wp = -(-height // size) * size, -(-width // size) * size
    return [w for w in (g.intersect(full) for g in window_grid(hp, wp, size, size)) if w is not None]


def _default_offset(opts: EvalOptions) -> float:
    """DN offset of optical rasters without a ``dn_offset`` tag: −1000 with ``--s2-offset``, else 0."""
    return s2_dn_offset(opts.s2_offset)


def _norm_for(modality: str, bands: Sequence[str], opts: EvalOptions) -> Normalization:
    if modality == "sar":
        return sar_normalization(bands, opts.s1_range or DEFAULT_SAR_RANGE, units="db")
    return optical_normalization(bands, opts.s2_range or DEFAULT_OPTICAL_RANGE)


# ----------------------------------------------------------------------------------------------- sources

class SceneSource:
    """Two scenes (and optional labels) streamed in ``tile_size`` windows on the target grid."""

    mode = "scenes"

    def __init__(self, pred: Path, target: Path, labels: Path | None, opts: EvalOptions,
                 reporter: Reporter = NULL_REPORTER) -> None:
        self.reader = _PairReader(Path(pred), Path(target), Path(labels) if labels else None, reporter,
                                  _default_offset(opts))
        names = self.reader.band_names()
        self.norm = _norm_for(self.reader.modality, names, opts)
        self.pred_norm = replace(self.norm, offset=self.reader.pred_offset)
        self.target_norm = replace(self.norm, offset=self.reader.target_offset)
        self.input_norm: Normalization | None = None
        self.class_names = self.reader.class_names
        self.has_labels = labels is not None
        self.windows = partition(self.reader.height, self.reader.width, opts.tile_size)
        self.bad_nan = 0
        self.inputs = {"mode": self.mode, "pred": str(pred), "target": str(target),
                       "labels": str(labels) if labels else None,
                       "size": [self.reader.height, self.reader.width]}
        if self.reader.modality == "optical":
            self.inputs["dn_offset"] = {"pred": self.reader.pred_offset, "target": self.reader.target_offset}
        self.ranges_source = "cli" if (opts.s1_range or opts.s2_range) else "default"

    def __len__(self) -> int:
        return len(self.windows)

    def _block(self, win: PixelWindow, tile_id: str) -> Block:
        p, t, lab, core, bad = self.reader.read(win, HALO)
        self.bad_nan += bad
        return Block(tile_id, self.norm.encode(p), self.norm.encode(t), core, lab, None, win)

    def blocks(self) -> Iterator[Block]:
        for w in self.windows:
            yield self._block(w, f"r{w.row_off}_c{w.col_off}")

    def fetch(self, tile_id: str) -> Block:
        m = re.fullmatch(r"r(\d+)_c(\d+)", tile_id)
        win = next(w for w in self.windows if m and (w.row_off, w.col_off) == (int(m[1]), int(m[2])))
        return self._block(win, tile_id)

    def overview(self, opts: EvalOptions) -> list[dict[str, str]]:
        """Whole-scene previews (input if given, prediction, target), longer side ``opts.overview_px``."""
        from .report import scene_preview

        items = []
        if opts.input_scene is not None:
            with open_raster(opts.input_scene, "input scene") as src:
                names = band_names(src, S1_BANDS if src.count <= 2 else None)
                modality = _modality_of(src)
                items.append({"label": "input", **scene_preview(src, list(range(1, src.count + 1)),
                                                                _norm_for(modality, names, opts), modality,
                                                                opts.overview_px)})
        pred_idx = list(range(1, self.reader.pred.count + 1))
        for label, src, idx, norm in (("prediction", self.reader.pred, pred_idx, self.pred_norm),
                                      ("target", self.reader.target, self.reader.target_idx, self.target_norm)):
            items.append({"label": label, **scene_preview(src, idx, norm, self.reader.modality, opts.overview_px)})
        return items

    def close(self) -> None:
        self.reader.close()


def _tif_stems(d: Path, what: str) -> dict[str, Path]:
    if not d.is_dir():
        raise InputError(f"{what} directory not found: {d}")
    return {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in (".tif", ".tiff")}


class TileSetSource:
    """Two directories of tiles matched by file stem (tile id); optional labels directory likewise."""

    mode = "tiles"

    def __init__(self, pred: Path, target: Path, labels: Path | None, opts: EvalOptions,
                 reporter: Reporter = NULL_REPORTER) -> None:
        ps, ts = _tif_stems(Path(pred), "prediction"), _tif_stems(Path(target), "target")
        ls = _tif_stems(Path(labels), "labels") if labels else {}
        ids = sorted(set(ps) & set(ts))
        if not ids:
            raise InputError(f"no tile ids in common between {pred} ({len(ps)} tiles) and {target} "
                             f"({len(ts)} tiles); tiles are matched by file name")
        if len(ids) < max(len(ps), len(ts)):
            reporter.warn(f"{len(ps) - len(ids)} prediction and {len(ts) - len(ids)} target tiles have no partner "
                          f"and are skipped")
        if labels and (missing := [i for i in ids if i not in ls]):
            raise InputError(f"{len(missing)} tiles have no labels in {labels} (e.g. {missing[0]})")
        self.pairs = {i: (ps[i], ts[i], ls.get(i)) for i in ids}
        self.opts, self.reporter = opts, reporter
        first = _PairReader(*self.pairs[ids[0]], reporter, _default_offset(opts))
        self.modality, self.names = first.modality, first.band_names()
        self.class_names = first.class_names
        self.has_labels = bool(labels)
        first.close()
        self.norm = _norm_for(self.modality, self.names, opts)
        self.pred_norm = replace(self.norm, offset=first.pred_offset)  # each tile pair reads its own tags
        self.target_norm = replace(self.norm, offset=first.target_offset)
        self.input_norm = None
        self.ids = ids
        self.bad_nan = 0
        self.inputs = {"mode": self.mode, "pred": str(pred), "target": str(target),
                       "labels": str(labels) if labels else None, "tiles": len(ids)}
        if self.modality == "optical":
            self.inputs["dn_offset"] = {"pred": first.pred_offset, "target": first.target_offset}
        self.ranges_source = "cli" if (opts.s1_range or opts.s2_range) else "default"

    def __len__(self) -> int:
        return len(self.ids)

    def _pair_blocks(self, tile_id: str) -> Iterator[Block]:
        reader = _PairReader(*self.pairs[tile_id], self.reporter, _default_offset(self.opts))
        try:
            if reader.modality != self.modality or reader.band_names() != self.names:
                raise InputError(f"tile {tile_id} has bands {reader.band_names()} ({reader.modality}); the first "
                                 f"tile has {self.names} ({self.modality})")
            wins = partition(reader.height, reader.width, self.opts.tile_size)
            for w in wins:
                p, t, lab, core, bad = reader.read(w, HALO)
                self.bad_nan += bad
                bid = tile_id if len(wins) == 1 else f"{tile_id}/r{w.row_off}_c{w.col_off}"
                yield Block(bid, self.norm.encode(p), self.norm.encode(t), core, lab, None, w)
        finally:
            reader.close()

    def blocks(self) -> Iterator[Block]:
        for i in self.ids:
            yield from self._pair_blocks(i)

    def fetch(self, tile_id: str) -> Block:
        return next(b for b in self._pair_blocks(tile_id.split("/")[0]) if b.id == tile_id)

    def close(self) -> None:
        pass


class ModelSplitSource:
    """An exported generator run on a split of a tile directory, against the split's target tiles."""

    mode = "model"

    def __init__(self, checkpoint: Path, data: Path, split: str, opts: EvalOptions,
                 reporter: Reporter = NULL_REPORTER) -> None:
        from ..checkpoint import load_network
        from ..dataset import TileDataset, read_tiling

        self.device = torch.device(opts.device)
        if opts.s1_range or opts.s2_range:
            reporter.warn("--s1-range/--s2-range are ignored with --checkpoint: the checkpoint's ranges are used")
        if opts.s2_offset:
            reporter.warn("--s2-offset is ignored with --checkpoint: the tiling records the offset of its tiles")
        self.net = load_network(checkpoint, kind="generator", device=self.device)
        meta = self.net.meta
        if "in_norm" not in meta or "out_norm" not in meta:
            raise InputError(f"{self.net.path} lacks in_norm/out_norm metadata; re-export it with sarkit train")
        self.input_norm = Normalization.from_dict(meta["in_norm"])
        self.pred_norm = Normalization.from_dict(meta["out_norm"])
        self.in_key, self.out_key = self.input_norm.modality, self.pred_norm.modality
        bands = {self.in_key: list(self.input_norm.bands), self.out_key: list(self.pred_norm.bands)}
        tiling = read_tiling(data)
        kwargs: dict[str, Any] = {"sar_bands": bands.get("sar")}
        if "optical" in bands:
            kwargs["optical_bands"] = tuple(bands["optical"])
        self.ds = TileDataset(data, split=split, mode="paired", labels=bool(tiling.get("classes")), **kwargs)
        if len(self.ds) == 0:
            raise InputError(f"split {split!r} of {data} has no tiles")
        self.ds_norm = self.ds.sar_norm if self.out_key == "sar" else self.ds.optical_norm
        self.reencode = (tuple(self.ds_norm.lo), tuple(self.ds_norm.hi)) != (self.pred_norm.lo, self.pred_norm.hi)
        if self.reencode:
            reporter.warn("the tiling's target ranges differ from the checkpoint's out_norm; the target is "
                          "re-encoded with the checkpoint's ranges")
        self.target_norm = self.pred_norm
        self.class_names = self.ds.class_names
        self.has_labels = bool(tiling.get("classes"))
        self.opts = opts
        self.bad_nan = 0
        self.ranges_source = "checkpoint"
        self.inputs = {"mode": self.mode, "checkpoint": str(self.net.path), "checkpoint_sha256": self.net.sha256,
                       "data": str(data), "split": split, "tiles": len(self.ds),
                       "direction": meta.get("direction")}

    def __len__(self) -> int:
        return len(self.ds)

    def _run(self, idx: list[int]) -> list[Block]:
        items = [self.ds[i] for i in idx]
        x = torch.stack([it[self.in_key] for it in items]).to(self.device)
        with torch.no_grad():
            y = self.net.module(x).float().cpu().numpy()
        out = []
        for it, yi in zip(items, y):
            valid = it["valid"].numpy()
            tgt = it[self.out_key].numpy().astype(np.float32)
            if self.reencode:
                tgt = self.pred_norm.encode(self.ds_norm.decode(tgt))
            bad = int((~np.isfinite(yi).all(axis=0) & valid).sum())
            self.bad_nan += bad
            yi = yi.copy()
            yi[:, ~valid] = np.nan
            tgt[:, ~valid] = np.nan
            inp = it[self.in_key].numpy().copy()
            inp[:, ~valid] = np.nan
            h, w = valid.shape
            lab = it["labels"].numpy() if "labels" in it else None
            out.append(Block(it["id"], yi, tgt, PixelWindow(0, 0, h, w), lab, inp, None))
        return out

    def blocks(self) -> Iterator[Block]:
        bs = max(1, self.opts.batch_size)
        for s in range(0, len(self.ds), bs):
            yield from self._run(list(range(s, min(s + bs, len(self.ds)))))

    def fetch(self, tile_id: str) -> Block:
        return self._run([self.ds.ids.index(tile_id)])[0]

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------- accumulation

class _Accumulator:
    """Running sums of every requested metric, per tile, per class and over everything."""

    def __init__(self, opts: EvalOptions, num_classes: int | None) -> None:
        self.metrics = opts.metrics
        self.k = num_classes
        self.sse = self.sae = 0.0
        self.npx = 0
        self.ssim_sum, self.ssim_n = 0.0, 0
        self.total_px = 0
        self.tiles: list[dict[str, Any]] = []
        if num_classes:
            self.cls = {n: np.zeros(num_classes, dtype=np.float64) for n in ("sse", "sae", "npx", "ssim", "ssim_n")}
        self.conf = np.zeros((num_classes or 1, num_classes or 1), dtype=np.int64)
        self.sms_sum, self.sms_n = 0.0, 0

    def add(self, b: Block, seg: dict[str, Any] | None) -> dict[str, Any]:
        """Add one block: pixel errors inside the core, SSIM centres inside the core, class sums."""
        p = torch.from_numpy((b.pred + 1.0) * 0.5).unsqueeze(0)
        t = torch.from_numpy((b.target + 1.0) * 0.5).unsqueeze(0)
        valid = (torch.isfinite(p).all(dim=1) & torch.isfinite(t).all(dim=1))
        core = torch.zeros_like(valid)
        rs, cs = b.core.slices()
        core[:, rs, cs] = True
        pix = valid & core
        se, ae = M.error_maps(p, t, valid)
        n = int(pix.sum())
        tile: dict[str, Any] = {"id": b.id, "valid_fraction": n / max(1, b.core.height * b.core.width)}
        if b.window is not None:
            tile.update(row_off=b.window.row_off, col_off=b.window.col_off, height=b.window.height,
                        width=b.window.width)
        self.total_px += b.core.height * b.core.width
        sse, sae = float(se[pix].double().sum()), float(ae[pix].double().sum())
        self.sse += sse
        self.sae += sae
        self.npx += n
        if "psnr" in self.metrics:
            tile["psnr"] = M.psnr_from_mse(sse / n) if n else float("nan")
        if "mae" in self.metrics:
            tile["mae"] = sae / n if n else float("nan")
        lab = torch.from_numpy(b.labels).unsqueeze(0) if b.labels is not None else None
        if "ssim" in self.metrics:
            smap = M.ssim_map(M.fill_invalid(p, valid), M.fill_invalid(t, valid))
            centres = core[:, HALO:HALO + smap.shape[1], HALO:HALO + smap.shape[2]]  # SSIM centres in the core
            wv = M.window_valid(valid) & centres
            cnt = int(wv.sum())
            s = float(smap[wv].double().sum())
            self.ssim_sum += s
            self.ssim_n += cnt
            tile["ssim"] = s / cnt if cnt else float("nan")
            if self.k and lab is not None:
                lc = lab[:, HALO:HALO + smap.shape[1], HALO:HALO + smap.shape[2]]
                self._class_add("ssim", "ssim_n", smap, lc, wv)
        if self.k and lab is not None:
            self._class_add("sse", "npx", se, lab, pix)
            self._class_add("sae", None, ae, lab, pix)
        if seg is not None:
            if "pa" in self.metrics or "miou" in self.metrics:
                conf = confusion_matrix(seg["pred_cls"], seg["ref_cls"], self.k, seg["mask"]).numpy()
                self.conf += conf
                tile["pa"] = pixel_accuracy(conf)
            if "sms" in self.metrics:
                m = seg["sms"][seg["mask"]]
                self.sms_sum += float(m.double().sum())
                self.sms_n += int(m.numel())
                tile["sms"] = float(m.double().mean()) if m.numel() else float("nan")
        self.tiles.append(tile)
        return tile

    def _class_add(self, key: str, count_key: str | None, values: torch.Tensor, lab: torch.Tensor,
                   mask: torch.Tensor) -> None:
        ok = mask & (lab >= 0) & (lab < self.k)
        cls = lab[ok].long()
        self.cls[key] += torch.bincount(cls, weights=values[ok].double(), minlength=self.k).numpy()[: self.k]
        if count_key:
            self.cls[count_key] += torch.bincount(cls, minlength=self.k).numpy()[: self.k]


def _stats(values: list[float]) -> dict[str, Any]:
    """mean, std, median, min, max over finite values (+inf counted separately, NaN ignored)."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n_inf = int(np.isposinf(a).sum())
    f = a[np.isfinite(a)]
    out: dict[str, Any] = {"n": int(a[~np.isnan(a)].size), "n_inf": n_inf}
    if f.size:
        out.update(mean=float(f.mean()), std=float(f.std()), median=float(np.median(f)), min=float(f.min()),
                   max=float(f.max()))
    else:
        out.update(mean=None, std=None, median=None, min=None, max=None)
    return out


# ----------------------------------------------------------------------------------------------- evaluation

def _core_rgb(arr: np.ndarray, b: Block, norm: Normalization) -> torch.Tensor:
    """(1, 3, h, w) in [0, 1] of a block's core, nodata = 0, through the RGB mapping FID uses (``fid.to_rgb``)."""
    from .fid import to_rgb

    rs, cs = b.core.slices()
    x = torch.from_numpy(np.nan_to_num((arr[:, rs, cs] + 1.0) * 0.5, nan=0.0))[None]
    return to_rgb(x, norm.modality, norm.bands).clamp(0.0, 1.0)


def _core_valid(b: Block) -> torch.Tensor:
    """(1, h, w) mask of the core pixels where every band of both images holds data."""
    rs, cs = b.core.slices()
    return torch.from_numpy(np.isfinite(b.pred[:, rs, cs]).all(axis=0)
                            & np.isfinite(b.target[:, rs, cs]).all(axis=0))[None]


def _seg_for_block(b: Block, segmenter: Any, pred_norm: Normalization, target_norm: Normalization,
                   need_sms: bool, use_labels: bool, sam: Any = None) -> dict[str, Any]:
    """Classes (segmenter) and the per-pixel SMS map (segmenter, or SAM when ``sam`` is given) of a block."""
    rs, cs = b.core.slices()
    out: dict[str, Any] = {"mask": _core_valid(b)}
    if segmenter is not None:
        p = b.pred[:, rs, cs][None]
        t = b.target[:, rs, cs][None]
        deeplab_sms = need_sms and sam is None
        lp = segmenter.logits(p, pred_norm).cpu()
        out["pred_cls"] = lp.argmax(dim=1)
        lt = segmenter.logits(t, target_norm).cpu() if (deeplab_sms or not use_labels) else None
        if use_labels:
            lab = torch.from_numpy(b.labels[rs, cs][None])
            bad = lab[(lab != IGNORE) & ((lab < 0) | (lab >= segmenter.num_classes))]
            if bad.numel():
                raise InputError(f"labels hold class id {int(bad.max())} but the segmenter has "
                                 f"{segmenter.num_classes} classes ({', '.join(segmenter.classes)})")
            out["ref_cls"] = lab
        else:
            out["ref_cls"] = lt.argmax(dim=1)
        if deeplab_sms:
            out["sms"] = sms_map(lp, lt)
    if need_sms and sam is not None:
        out["sms"] = sam.sms_map(_core_rgb(b.pred, b, pred_norm), _core_rgb(b.target, b, target_norm))
    return out


def _features(b: Block, norm: Normalization, extractors: dict[str, Any], stats: dict[str, Any]) -> None:
    for which, arr in (("pred", b.pred), ("target", b.target)):
        rgb = _core_rgb(arr, b, norm)
        for name, ex in extractors.items():
            stats[name][which].update(ex(rgb))


def _make_extractors(opts: EvalOptions, n_samples: int, reporter: Reporter) -> dict[str, Any]:
    from .fid import INCEPTION_DIM, ClipExtractor, InceptionExtractor, load_inception

    ex: dict[str, Any] = {}
    wanted = [m for m in ("fid", "fid-clip") if m in opts.metrics]
    if not wanted:
        return ex
    if n_samples < 2:
        raise InputError(f"FID needs at least 2 tiles, the evaluation has {n_samples}; use more or larger images")
    if "fid" in wanted:
        ex["fid"] = InceptionExtractor(load_inception(opts.fid_weights, opts.device), opts.device)
        if n_samples < INCEPTION_DIM:
            reporter.warn(f"FID from {n_samples} samples (< {INCEPTION_DIM} feature dimensions): the covariance "
                          f"is rank-deficient and FID is biased; compare only runs with the same sample count")
    if "fid-clip" in wanted:
        ex["fid-clip"] = ClipExtractor(opts.clip_model, opts.clip_weights, opts.device)
    return ex


class _LpipsStream:
    """Per-tile LPIPS in batches of same-size tiles; each value is written into its tile record on flush and
    summed weighted by the tile's valid pixels (the summary ``value``)."""

    def __init__(self, net: Any, batch_size: int) -> None:
        self.net, self.batch_size = net, max(1, batch_size)
        self.items: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.wsum, self.wn, self.undefined = 0.0, 0, 0

    def add(self, tile: dict[str, Any], pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        """Queue one tile (1, 3, h, w) pair; flush when the batch is full or the tile size changes."""
        if self.items and self.items[0][1].shape != pred.shape:
            self.flush()
        self.items.append((tile, pred, target, valid))
        if len(self.items) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Run the queued tiles through LPIPS in one batch."""
        if not self.items:
            return
        tiles, p, t, v = zip(*self.items)
        valid = torch.cat(v)
        d = self.net(torch.cat(p), torch.cat(t), valid)
        for tile, val, n in zip(tiles, d.tolist(), valid.flatten(1).sum(dim=1).tolist()):
            tile["lpips"] = val
            if math.isfinite(val):
                self.wsum += val * n
                self.wn += int(n)
            else:
                self.undefined += 1
        self.items.clear()

    def value(self) -> float:
        """Σ LPIPS_tile · valid_tile / Σ valid_tile (NaN when no tile has a value)."""
        return self.wsum / self.wn if self.wn else float("nan")


def _make_lpips(opts: EvalOptions) -> tuple[_LpipsStream | None, dict[str, Any] | None]:
    if "lpips" not in opts.metrics:
        return None, None
    from .lpips import load_lpips

    net, files = load_lpips(opts.lpips_weights, opts.lpips_backbone, opts.device)
    info = {"model": "lpips v0.1 alex (lin)", "weights": str(files.heads), "backbone": str(files.backbone)}
    return _LpipsStream(net, opts.batch_size), info


def _load_segmenters(opts: EvalOptions, source: Any, reporter: Reporter) -> tuple[Any, Any]:
    """The DeepLabV3 segmenter (for pa/miou, and sms unless SAM) and SAM (for sms with ``--sms-model sam``)."""
    if opts.sms_model not in SMS_MODELS:
        raise InputError(f"--sms-model must be one of {', '.join(SMS_MODELS)}, got {opts.sms_model!r}")
    sam_sms = opts.sms_model == "sam" and "sms" in opts.metrics
    if opts.sms_model == "sam" and not sam_sms:
        reporter.warn("--sms-model sam has no effect: sms is not in --metrics")
    elif opts.sam_weights is not None and not sam_sms:
        reporter.warn("--sam-weights is ignored: SMS uses the --segmenter unless --sms-model sam")
    seg_wanted = [m for m in SEG_METRICS if m in opts.metrics and not (m == "sms" and sam_sms)]
    segmenter = None
    if seg_wanted:
        if opts.segmenter is None:
            alt = " (or --sms-model sam for sms)" if "sms" in seg_wanted else ""
            raise InputError(f"{', '.join(seg_wanted)} need a segmenter: pass --segmenter RUN (a sarkit segmenter "
                             f"of the prediction's modality){alt}")
        from .segmetrics import load_segmenter

        segmenter = load_segmenter(opts.segmenter, opts.device)
        if segmenter.modality != source.pred_norm.modality:
            raise InputError(f"--segmenter is for {segmenter.modality} images but the prediction is "
                             f"{source.pred_norm.modality}; pass a {source.pred_norm.modality} segmenter")
    sam = None
    if sam_sms:
        from .sam import load_sam_segmenter

        sam = load_sam_segmenter(opts.sam_weights, opts.device)
    return segmenter, sam


def evaluate(source: Any, opts: EvalOptions, reporter: Reporter = NULL_REPORTER) -> EvalResult:
    """Stream ``source``'s blocks through every requested metric; return the report record and thumbnails."""
    from .fid import FeatureStats, frechet_distance

    segmenter, sam = _load_segmenters(opts, source, reporter)
    extractors = _make_extractors(opts, len(source), reporter)
    lpips_stream, lpips_info = _make_lpips(opts)
    feats = {name: {"pred": FeatureStats(ex.dim), "target": FeatureStats(ex.dim)} for name, ex in extractors.items()}
    classes = segmenter.classes if segmenter else source.class_names
    has_labels = source.has_labels
    use_labels = bool(segmenter) and has_labels
    # labels without class names (and no segmenter): class ids 0…254 are tracked, rows only for ids present
    acc = _Accumulator(opts, len(classes) if classes else (IGNORE if has_labels else None))
    with reporter.task("Evaluating", total=len(source)) as task:
        for b in source.blocks():
            seg = _seg_for_block(b, segmenter, source.pred_norm, source.target_norm, "sms" in opts.metrics,
                                 use_labels, sam) if (segmenter or sam) else None
            tile = acc.add(b, seg)
            if extractors:
                _features(b, source.pred_norm, extractors, feats)
            if lpips_stream is not None:
                lpips_stream.add(tile, _core_rgb(b.pred, b, source.pred_norm),
                                 _core_rgb(b.target, b, source.pred_norm), _core_valid(b))
            task.advance(1, **{k: v for k, v in tile.items() if k in ("psnr", "ssim") and isinstance(v, float)})
    if lpips_stream is not None:
        lpips_stream.flush()
        if lpips_stream.undefined:
            from .lpips import MIN_SIZE

            reporter.warn(f"LPIPS undefined for {lpips_stream.undefined} tiles (smaller than {MIN_SIZE} px on a "
                          f"side, or without valid pixels)")
    if source.bad_nan:
        what = "the generator produced" if source.mode == "model" else "the prediction has"
        err = WorkError if source.mode == "model" else InputError
        raise err(f"{what} {source.bad_nan} NaN/inf pixels where the target is valid; fix the prediction or "
                  f"declare NaN as its nodata value")
    if acc.npx == 0:
        raise InputError("no valid pixels: the prediction and the target are all nodata where they overlap")
    summary = _summary(acc, opts, feats, frechet_distance, reporter)
    if lpips_stream is not None:
        summary["lpips"] = {"value": lpips_stream.value(), **_stats([t.get("lpips") for t in acc.tiles])}
    networks: dict[str, Any] = {}
    if "sms" in opts.metrics:
        networks["sms"] = sam.describe() if sam is not None else {"model": "deeplab",
                                                                  "weights": str(segmenter.path)}
    if lpips_info is not None:
        networks["lpips"] = lpips_info
    report = _record(source, opts, acc, summary, segmenter, classes, use_labels, networks)
    thumbs = _thumbnails(source, acc.tiles, opts)
    overview = source.overview(opts) if hasattr(source, "overview") else []
    return EvalResult(report, thumbs, overview)


def _summary(acc: _Accumulator, opts: EvalOptions, feats: dict[str, Any], fd: Callable[..., float],
             reporter: Reporter) -> dict[str, Any]:
    out: dict[str, Any] = {}
    per_tile = {m: [t.get(m) for t in acc.tiles] for m in ("psnr", "ssim", "mae", "pa", "sms")}
    if "psnr" in opts.metrics:
        out["psnr"] = {"value": M.psnr_from_mse(acc.sse / acc.npx), **_stats(per_tile["psnr"])}
    if "ssim" in opts.metrics:
        val = acc.ssim_sum / acc.ssim_n if acc.ssim_n else float("nan")
        if not acc.ssim_n:
            reporter.warn("SSIM undefined: no 11×11 window is fully valid (tiles too small or too much nodata)")
        out["ssim"] = {"value": val, **_stats(per_tile["ssim"])}
    if "mae" in opts.metrics:
        out["mae"] = {"value": acc.sae / acc.npx, **_stats(per_tile["mae"])}
    if "pa" in opts.metrics:
        out["pa"] = {"value": pixel_accuracy(acc.conf), **_stats(per_tile["pa"])}
    if "miou" in opts.metrics:
        out["miou"] = {"value": mean_iou(acc.conf)}
    if "sms" in opts.metrics:
        out["sms"] = {"value": acc.sms_sum / acc.sms_n if acc.sms_n else float("nan"), **_stats(per_tile["sms"])}
    for name, st in feats.items():
        mu1, s1 = st["pred"].mean_cov()
        mu2, s2 = st["target"].mean_cov()
        out[name] = {"value": fd(mu1, s1, mu2, s2), "n": st["pred"].n}
    return out


def _record(source: Any, opts: EvalOptions, acc: _Accumulator, summary: dict[str, Any], segmenter: Any,
            classes: list[str] | None, use_labels: bool, networks: dict[str, Any] | None = None) -> dict[str, Any]:
    from .. import __version__

    per_class: list[dict[str, Any]] = []
    if acc.k and source.has_labels:
        c = acc.cls
        iou = iou_per_class(acc.conf) if segmenter and acc.conf.sum() else None
        for k in range(acc.k):
            if c["npx"][k] == 0 and (iou is None or not np.isfinite(iou[k])):
                continue
            row: dict[str, Any] = {"class": classes[k] if classes and k < len(classes) else str(k), "id": k,
                                   "pixels": int(c["npx"][k])}
            if c["npx"][k]:
                if "psnr" in opts.metrics:
                    row["psnr"] = M.psnr_from_mse(c["sse"][k] / c["npx"][k])
                if "mae" in opts.metrics:
                    row["mae"] = c["sae"][k] / c["npx"][k]
            if "ssim" in opts.metrics and c["ssim_n"][k]:
                row["ssim"] = c["ssim"][k] / c["ssim_n"][k]
            if iou is not None:
                row["iou"] = float(iou[k])
            per_class.append(row)
    norm = {"space": "normalised [0, 1] = (encode(x) + 1) / 2; metrics are computed in this space",
            "source": source.ranges_source, "pred": source.pred_norm.to_dict(),
            "target": source.target_norm.to_dict()}
    seg = None
    if segmenter is not None:
        seg = {"segmenter": str(segmenter.path), "sha256": segmenter.sha256, "classes": segmenter.classes,
               "reference": "labels" if use_labels else "segmenter(target)"}
    rec = {
        "schema": SCHEMA,
        "sarkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": source.inputs,
        "normalization": norm,
        "metrics": list(opts.metrics),
        "nodata": "pixels where any band of the prediction or the target is nodata are excluded; SSIM counts "
                  "window centres whose whole 11x11 window is valid; LPIPS fills them with 0.5 in both images "
                  "and weights each layer's spatial mean by the valid fraction of its cells",
        "pixels": {"valid": acc.npx, "total": acc.total_px},
        "summary": summary,
        "segmentation": seg,
        "per_class": per_class,
        "tiles": acc.tiles,
    }
    if networks:
        rec["networks"] = networks
    return rec


# ----------------------------------------------------------------------------------------------- thumbnails

def select_tiles(tiles: list[dict[str, Any]], k: int) -> list[tuple[str, dict[str, Any]]]:
    """Best, median and worst ``k`` tiles by PSNR (+inf first; NaN skipped): ``[(group, tile), ...]``."""
    ranked = [t for t in tiles if isinstance(t.get("psnr"), float) and not math.isnan(t["psnr"])]
    ranked.sort(key=lambda t: -t["psnr"])
    if not ranked:
        return []
    mid = max(0, len(ranked) // 2 - (k - 1) // 2)  # the median tile, centred for odd k
    groups = [("best", ranked[:k]), ("median", ranked[mid: mid + k]), ("worst", ranked[-k:][::-1])]
    seen: set[str] = set()
    out = []
    for g, ts in groups:
        for t in ts:
            if t["id"] not in seen:
                seen.add(t["id"])
                out.append((g, t))
    return out


def _thumbnails(source: Any, tiles: list[dict[str, Any]], opts: EvalOptions) -> list[dict[str, Any]]:
    from .report import render_thumbnail

    out = []
    for group, t in select_tiles(tiles, opts.grid_tiles):
        b = source.fetch(t["id"])
        out.append({"group": group, "id": t["id"], "psnr": t.get("psnr"), "ssim": t.get("ssim"),
                    **render_thumbnail(b, source.pred_norm, source.input_norm, opts.thumb_px)})
    return out


def open_source(opts: EvalOptions, pred: Path | None = None, target: Path | None = None,
                labels: Path | None = None, checkpoint: Path | None = None, data: Path | None = None,
                split: str = "test", reporter: Reporter = NULL_REPORTER) -> Any:
    """Pick the source from the arguments: scenes, tile directories, or a checkpoint on a split."""
    if checkpoint is not None:
        if data is None:
            raise InputError("--checkpoint needs --data TILES (a directory written by sarkit tile) and --split")
        if pred is not None:
            raise InputError("give either --checkpoint with --data, or --pred with --target, not both")
        return ModelSplitSource(Path(checkpoint), Path(data), split, opts, reporter)
    if pred is None or target is None:
        raise InputError("nothing to evaluate: pass --pred and --target (files or directories), or "
                         "--checkpoint RUN --data TILES")
    pred, target = Path(pred), Path(target)
    for p, what in ((pred, "prediction"), (target, "target")):
        if not p.exists():
            raise InputError(f"{what} not found: {p}")
    if pred.is_dir() != target.is_dir():
        raise InputError("--pred and --target must both be files (scenes) or both directories (tile sets)")
    if pred.is_dir():
        return TileSetSource(pred, target, labels, opts, reporter)
    return SceneSource(pred, target, labels, opts, reporter)


def run_eval(opts: EvalOptions, reporter: Reporter = NULL_REPORTER, **where: Any) -> EvalResult:
    """Open the source named by ``where`` (see ``open_source``), evaluate it, close it."""
    src = open_source(opts, reporter=reporter, **where)
    try:
        return evaluate(src, opts, reporter)
    finally:
        src.close()
