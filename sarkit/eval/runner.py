"""Streaming evaluation of predictions against targets: two scenes, two tile sets, or a generator on a split.

Every source yields ``Block``s in model range [-1, 1] (NaN = nodata) under fixed ``Normalization`` ranges (from
the checkpoint, the tiling, or inferred from the files and ``--s1-range``/``--s2-range``); metrics are computed
in normalised [0, 1] space ``(x + 1)/2``. A pixel counts when every band of both images holds data.

* Scenes are read in 256-px windows of a non-overlapping grid (``sarkit.raster.grid.window_grid``); each window is
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
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sarkit.errors import InputError, WorkError
from sarkit.reporting import NULL_REPORTER, Reporter
from sarkit.eval import metrics as M
from sarkit.eval.segmetrics import IGNORE, iou_per_class, mean_iou, pixel_accuracy
from sarkit.eval.accumulate import (_Accumulator, _core_rgb, _core_valid, _features, _load_segmenters, _make_extractors, _make_lpips,
                                    _seg_for_block, _stats)
from sarkit.eval.options import SCHEMA, EvalOptions, EvalResult
from sarkit.eval.sources import ModelSplitSource, SceneSource, TileSetSource


def evaluate(source: Any, opts: EvalOptions, reporter: Reporter = NULL_REPORTER) -> EvalResult:
    """Stream ``source``'s blocks through every requested metric; return the report record and thumbnails."""
    from sarkit.eval.fid import FeatureStats, frechet_distance

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
            from sarkit.eval.lpips import MIN_SIZE

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
    from sarkit import __version__

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
    from sarkit.eval.report import render_thumbnail

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
