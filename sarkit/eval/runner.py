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
``sms_model="sam"``), and CLIP-IQA (``clip_iqa.py``, no-reference: the prediction, the target as a reference).
Feature matching (PMR, IR, IR-ED) is OpenCV's SIFT per tile (``matching.py``). FID, LPIPS and SAM see three channels: ``fid.to_rgb`` (optical B4, B3, B2; SAR as
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
from sarkit.io import is_url
from sarkit.raster.stack import scene_files
from sarkit.reporting import NULL_REPORTER, Reporter
from sarkit.eval.segmetrics import IGNORE
from sarkit.eval.accumulate import Accumulator, FeatureStreams, LpipsStream, Segmenters
from sarkit.eval.clip_iqa import ClipIqaStream
from sarkit.eval.matching import MatchingStream
from sarkit.eval.baselines import BaselineStreams, gains
from sarkit.eval.options import HIGHER_IS_BETTER, SCHEMA, EvalInputs, EvalOptions, EvalResult
from sarkit.eval.sources import EvalMode, EvalSource, ModelSplitSource, SceneSource, TileSetSource

#: report.json ``nodata``: the nodata policy in words.
NODATA_POLICY = ("pixels where any band of the prediction or the target is nodata are excluded; SSIM counts "
                 "window centres whose whole 11x11 window is valid; LPIPS fills them with 0.5 in both images "
                 "and weights each layer's spatial mean by the valid fraction of its cells")
#: The metrics that see the three-channel view ``fid.to_rgb`` (feature matching: its channel mean).
RGB_METRICS = ("fid", "fid-clip", "lpips", "pmr", "ir", "ir_ed", "clip_iqa")
#: report.json ``normalization.space``.
METRIC_SPACE = "normalised [0, 1] = (encode(x) + 1) / 2; metrics are computed in this space"


def evaluate(source: EvalSource, opts: EvalOptions, reporter: Reporter = NULL_REPORTER) -> EvalResult:
    """Stream ``source``'s blocks through every requested metric; return the report record and thumbnails."""
    segs = Segmenters.load(opts, source, reporter)
    features = FeatureStreams.load(opts, len(source), reporter)
    lpips = LpipsStream.load(opts)
    matching = MatchingStream.load(opts.metrics)
    clip_iqa = ClipIqaStream.load(opts)
    classes = segs.classes(source.class_names)
    # labels without class names (and no segmenter): class ids 0…254 are tracked, rows only for ids present
    acc = Accumulator(opts.metrics, len(classes) if classes else (IGNORE if source.has_labels else None))
    base = BaselineStreams.load(source, opts, lpips, reporter)
    with reporter.task("Evaluating", total=len(source)) as task:
        for b in source.blocks():
            tile = acc.add(b, segs.for_block(b, source.pred_norm, source.target_norm))
            if base is not None:
                base.add(b)
            if features:
                features.add(b, source.pred_norm)
            if lpips is not None:
                lpips.add_block(tile, b, source.pred_norm)
            if matching is not None:
                matching.add_block(tile, b, source.pred_norm)
            if clip_iqa is not None:
                clip_iqa.add_block(tile, b, source.pred_norm)
            task.advance(1, **{k: v for k, v in tile.items() if k in ("psnr", "ssim") and isinstance(v, float)})
    for stream in (lpips, matching, clip_iqa):
        if stream is not None:
            stream.finish(reporter)
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
    if matching is not None:
        summary.update(matching.summary(acc.tiles))
    if clip_iqa is not None:
        summary["clip_iqa"] = clip_iqa.summary(acc.tiles)
        networks["clip_iqa"] = clip_iqa.network(acc.tiles)
    if base is not None:
        baselines = base.record(reporter)
        summary.update(gains(summary, baselines, HIGHER_IS_BETTER))
    report = _record(source, opts, acc, summary, segs, classes, networks)
    if base is not None:
        report["baselines"] = baselines
        if "linear" in baselines and "absent" in baselines["linear"]:
            reporter.info(f"linear baseline not computed: {baselines['linear']['absent']}")
    if matching is not None:
        report["matching"] = matching.record()
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
        "bands": band_usage(source, opts, segs),
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


def band_usage(source: EvalSource, opts: EvalOptions, segs: Segmenters) -> dict[str, Any]:
    """report.json ``bands``: the compared bands (``source.band_info`` when the source has it: target and prediction
    names, how they were matched, whether the files name their bands) and, per metric, the bands it used with their fixed ranges
    (physical units: dB or reflectance): every compared band for psnr/ssim/mae, the three RGB channels for
    fid/fid-clip/lpips/pmr/ir/ir_ed/clip_iqa/SAM's sms, the segmenter's bands (its own ranges) for pa/miou/sms."""
    from sarkit.eval.fid import rgb_bands

    norm = source.pred_norm
    rng = {b: [lo, hi] for b, lo, hi in zip(norm.bands, norm.lo, norm.hi)}

    def used(names: list[str], ranges: dict[str, list[float]]) -> dict[str, Any]:
        return {"bands": names, "ranges": [ranges.get(n) or _derived_range(n, ranges) for n in names]}

    per: dict[str, Any] = {}
    for m in opts.metrics:
        if m in ("psnr", "ssim", "mae"):
            per[m] = used(list(norm.bands), rng)
        elif m in RGB_METRICS or (m == "sms" and segs.sam is not None):
            per[m] = used(rgb_bands(norm.modality, norm.bands), rng)
        elif segs.deeplab is not None:
            sn = segs.deeplab.norm
            per[m] = used(list(sn.bands), {b: [lo, hi] for b, lo, hi in zip(sn.bands, sn.lo, sn.hi)})
    info = getattr(source, "band_info", None) or {"target": list(norm.bands), "pred": list(norm.bands),
                                                   "matched": "name"}
    units = "image values" if norm.units == "image" else "dB" if norm.modality == "sar" else "reflectance"
    return {**info, "units": units, "metrics": per}


def _derived_range(name: str, ranges: dict[str, list[float]]) -> list[float]:
    """The range of a derived channel such as (VV+VH)/2: the mean of its bands' ranges."""
    parts = [ranges[b] for b in ranges if b in name]
    return [sum(r[0] for r in parts) / len(parts), sum(r[1] for r in parts) / len(parts)] if parts else [0.0, 1.0]


# ----------------------------------------------------------------------------------------------- thumbnails

#: The metrics tiles are ranked by for the report's grid, in order of preference (the first one computed).
RANK_METRICS = ("psnr", "ssim", "mae")


def rank_metric(tiles: list[dict[str, Any]]) -> str | None:
    """The metric the report's best/median/worst grid ranks tiles by: the first of ``RANK_METRICS`` they carry."""
    return next((m for m in RANK_METRICS if any(m in t for t in tiles)), None)


def select_tiles(tiles: list[dict[str, Any]], k: int, metric: str = "psnr") -> list[tuple[str, dict[str, Any]]]:
    """The best, median and worst tiles by ``metric`` (PSNR +inf best; NaN/None left out), disjoint for any count:
    ``[(group, tile), ...]`` best first, worst last. Up to ``k`` per group: best and worst get
    ``min(k, n // 3)`` (one each for 2 ≤ n < 3), the median group the ``min(k, rest)`` tiles at the middle of the
    ranking; a single tile is the group "only"."""
    ranked = [t for t in tiles if isinstance(t.get(metric), (int, float)) and not math.isnan(t[metric])]
    higher = HIGHER_IS_BETTER.get(metric, True)
    ranked.sort(key=lambda t: -t[metric] if higher else t[metric])
    n = len(ranked)
    if n == 0 or k < 1:
        return []
    if n == 1:
        return [("only", ranked[0])]
    g = min(k, max(1, n // 3))
    m = min(k, n - 2 * g)
    mid = g + -(-(n - 2 * g - m) // 2)  # the middle m of the tiles between the best and the worst (the lower
    # of two middles: with an even count both middle tiles of the ranking are in a group of two or more)
    return ([("best", t) for t in ranked[:g]] + [("median", t) for t in ranked[mid: mid + m]]
            + [("worst", t) for t in ranked[n - g:]])


def _thumbnails(source: EvalSource, tiles: list[dict[str, Any]], opts: EvalOptions) -> list[dict[str, Any]]:
    """PNG thumbnails (input, prediction, target, |error|) of the best, median and worst tiles, re-read."""
    from sarkit.eval.report import render_thumbnail

    out = []
    metric = rank_metric(tiles)
    for group, t in select_tiles(tiles, opts.grid_tiles, metric or "psnr"):
        b = source.fetch(t["id"])
        out.append({"group": group, "id": t["id"], "rank_by": metric, "psnr": t.get("psnr"), "ssim": t.get("ssim"),
                    "mae": t.get("mae"),
                    **render_thumbnail(b, source.pred_norm, source.input_norm, opts.thumb_px)})
    return out


# ----------------------------------------------------------------------------------------------- jobs

def open_source(inputs: EvalInputs, opts: EvalOptions, reporter: Reporter = NULL_REPORTER) -> EvalSource:
    """The source of ``inputs``: a checkpoint on a split, two tile directories, or two scenes."""
    if inputs.is_model:
        return ModelSplitSource(inputs.checkpoint, inputs.data, inputs.split, opts, reporter)
    pred, target = inputs.pred, inputs.target
    for p, what in ((pred, "prediction"), (target, "target")):
        for f in scene_files(p):  # a raster of several files: a comma list; a URL is checked when opened
            if not is_url(f) and not f.exists():
                raise InputError(f"{what} not found: {f}")
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
    with output_lock(report):  # creates missing folders; a failed run leaves none behind
        result = run_eval(opts, reporter, inputs)
        write_report(report, result, overwrite)
        reporter.info(f"report written to {report}")
    return result
