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
(VV, VH, (VV + VH)/2)). The sums and the networks live in ``accumulate.py``, the sources in ``sources.py``.

Jobs: ``run_eval`` opens the source of ``EvalInputs`` and evaluates it; ``run_eval_report`` is ``sarkit eval``'s
job (output check, lock, report files). Comparisons are ``compare.py``, quality gates ``gate.py``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from sarkit.errors import InputError, WorkError
from sarkit.reporting import NULL_REPORTER, Reporter
from sarkit.eval.segmetrics import IGNORE
from sarkit.eval.accumulate import Accumulator, FeatureStreams, LpipsStream, Segmenters
from sarkit.eval.options import SCHEMA, EvalInputs, EvalOptions, EvalResult
from sarkit.eval.sources import EvalMode, EvalSource, ModelSplitSource, SceneSource, TileSetSource

#: report.json ``nodata``: the nodata policy in words.
NODATA_POLICY = ("pixels where any band of the prediction or the target is nodata are excluded; SSIM counts "
                 "window centres whose whole 11x11 window is valid; LPIPS fills them with 0.5 in both images "
                 "and weights each layer's spatial mean by the valid fraction of its cells")
#: report.json ``normalization.space``.
METRIC_SPACE = "normalised [0, 1] = (encode(x) + 1) / 2; metrics are computed in this space"


def evaluate(source: EvalSource, opts: EvalOptions, reporter: Reporter = NULL_REPORTER) -> EvalResult:
    """Stream ``source``'s blocks through every requested metric; return the report record and thumbnails."""
    segs = Segmenters.load(opts, source, reporter)
    features = FeatureStreams.load(opts, len(source), reporter)
    lpips = LpipsStream.load(opts)
    classes = segs.classes(source.class_names)
    # labels without class names (and no segmenter): class ids 0…254 are tracked, rows only for ids present
    acc = Accumulator(opts.metrics, len(classes) if classes else (IGNORE if source.has_labels else None))
    with reporter.task("Evaluating", total=len(source)) as task:
        for b in source.blocks():
            tile = acc.add(b, segs.for_block(b, source.pred_norm, source.target_norm))
            if features:
                features.add(b, source.pred_norm)
            if lpips is not None:
                lpips.add_block(tile, b, source.pred_norm)
            task.advance(1, **{k: v for k, v in tile.items() if k in ("psnr", "ssim") and isinstance(v, float)})
    if lpips is not None:
        lpips.finish(reporter)
    _check_pixels(source, acc)
    summary = acc.summary(reporter)
    summary.update(features.summary())
    networks: dict[str, Any] = {}
    if lpips is not None:
        summary["lpips"] = lpips.summary(acc.tiles)
    if "sms" in opts.metrics:
        networks["sms"] = segs.sms_network()
    if lpips is not None:
        networks["lpips"] = lpips.network
    report = _record(source, opts, acc, summary, segs, classes, networks)
    return EvalResult(report, _thumbnails(source, acc.tiles, opts), source.overview(opts))


def _check_pixels(source: EvalSource, acc: Accumulator) -> None:
    """Refuse a pass that met non-finite predictions where the target is valid, or no valid pixel at all."""
    if source.bad_nan:
        model = source.mode is EvalMode.MODEL
        what = "the generator produced" if model else "the prediction has"
        err = WorkError if model else InputError
        raise err(f"{what} {source.bad_nan} NaN/inf pixels where the target is valid; fix the prediction or "
                  f"declare NaN as its nodata value")
    if acc.npx == 0:
        raise InputError("no valid pixels: the prediction and the target are all nodata where they overlap")


def _record(source: EvalSource, opts: EvalOptions, acc: Accumulator, summary: dict[str, Any], segs: Segmenters,
            classes: list[str] | None, networks: dict[str, Any]) -> dict[str, Any]:
    """The report.json record (schema ``SCHEMA``) of a finished pass."""
    from sarkit import __version__

    per_class = acc.per_class(classes, with_iou=segs.deeplab is not None) if source.has_labels else []
    norm = {"space": METRIC_SPACE, "source": source.ranges_source, "pred": source.pred_norm.to_dict(),
            "target": source.target_norm.to_dict()}
    rec = {
        "schema": SCHEMA,
        "sarkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": source.inputs,
        "normalization": norm,
        "metrics": list(opts.metrics),
        "nodata": NODATA_POLICY,
        "pixels": {"valid": acc.npx, "total": acc.total_px},
        "summary": summary,
        "segmentation": segs.record(),
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


def _thumbnails(source: EvalSource, tiles: list[dict[str, Any]], opts: EvalOptions) -> list[dict[str, Any]]:
    """PNG thumbnails (input, prediction, target, |error|) of the best, median and worst tiles, re-read."""
    from sarkit.eval.report import render_thumbnail

    out = []
    for group, t in select_tiles(tiles, opts.grid_tiles):
        b = source.fetch(t["id"])
        out.append({"group": group, "id": t["id"], "psnr": t.get("psnr"), "ssim": t.get("ssim"),
                    **render_thumbnail(b, source.pred_norm, source.input_norm, opts.thumb_px)})
    return out


# ----------------------------------------------------------------------------------------------- jobs

def open_source(inputs: EvalInputs, opts: EvalOptions, reporter: Reporter = NULL_REPORTER) -> EvalSource:
    """The source of ``inputs``: a checkpoint on a split, two tile directories, or two scenes."""
    if inputs.is_model:
        return ModelSplitSource(inputs.checkpoint, inputs.data, inputs.split, opts, reporter)
    pred, target = inputs.pred, inputs.target
    for p, what in ((pred, "prediction"), (target, "target")):
        if not p.exists():
            raise InputError(f"{what} not found: {p}")
    if pred.is_dir() != target.is_dir():
        raise InputError("--pred and --target must both be files (scenes) or both directories (tile sets)")
    if pred.is_dir():
        return TileSetSource(pred, target, inputs.labels, opts, reporter)
    return SceneSource(pred, target, inputs.labels, opts, reporter)


def run_eval(opts: EvalOptions, reporter: Reporter = NULL_REPORTER, inputs: EvalInputs | None = None, *,
             pred: Path | None = None, target: Path | None = None, labels: Path | None = None,
             checkpoint: Path | None = None, data: Path | None = None, split: str = "test") -> EvalResult:
    """Open the source of ``inputs`` (or of ``EvalInputs(pred, target, labels, checkpoint, data, split)`` built
    from the keywords), evaluate it, close it."""
    if inputs is None:
        inputs = EvalInputs(pred, target, labels, checkpoint, data, split)
    elif any(v is not None for v in (pred, target, labels, checkpoint, data)) or split != "test":
        raise TypeError("run_eval takes either inputs or the file keywords, not both")
    src = open_source(inputs, opts, reporter)
    try:
        return evaluate(src, opts, reporter)
    finally:
        src.close()


def run_eval_report(inputs: EvalInputs, opts: EvalOptions, report: Path | None = None, overwrite: bool = False,
                    reporter: Reporter = NULL_REPORTER) -> EvalResult:
    """``sarkit eval``'s job: check that ``report`` may be written, hold its lock while evaluating (a second run
    fails at once), and write the report files into it (all or nothing)."""
    from sarkit.io import check_output, output_lock
    from sarkit.eval.report import write_report

    if report is None:
        return run_eval(opts, reporter, inputs)
    check_output(report, overwrite)
    with output_lock(report):
        result = run_eval(opts, reporter, inputs)
        write_report(report, result, overwrite)
        reporter.info(f"report written to {report}")
    return result
