"""Evaluation reports: report.json (schema ``sarkit.eval/1.4``), report.md, tiles.csv, report.html, baselines.csv.

JSON conventions: every metric value is a number, except that +inf (PSNR of identical images) is written as the
string ``"inf"`` and an undefined value (NaN: no valid pixel/window) as ``null``. ``report_schema.json`` next to
this module is the JSON Schema of the file (checked by ``validate``, a small validator of the schema keywords
used there). Comparisons of reports are ``compare.py``, quality gates ``gate.py``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path
from enum import Enum
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from sarkit.eval.options import ALL_METRICS, GAIN_METRICS, HIGHER_IS_BETTER, LABELS, EvalResult

if TYPE_CHECKING:
    from sarkit.eval.sources import Block
    from sarkit.raster.norm import Normalization

SCHEMA_PATH = Path(__file__).with_name("report_schema.json")


def arrow(metric: str) -> str:
    """↑ for higher-is-better metrics, ↓ otherwise."""
    return "↑" if HIGHER_IS_BETTER.get(metric, True) else "↓"


# ----------------------------------------------------------------------------------------------- JSON

def to_json_value(v: Any) -> Any:
    """Recursively make a record JSON-safe: +inf → "inf", −inf → "-inf", NaN → None, numpy → Python,
    enum → its value."""
    if isinstance(v, Enum):
        return to_json_value(v.value)
    if isinstance(v, dict):
        return {str(k): to_json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_json_value(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def from_json_value(v: Any) -> float | None:
    """A metric value read back from JSON: "inf" → +inf, None stays None."""
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    return None if v is None else float(v)


def load_schema() -> dict[str, Any]:
    """The JSON Schema of report.json."""
    return json.loads(SCHEMA_PATH.read_text())


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_ok(v: Any, t: str) -> bool:
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, _TYPES[t])


def validate(instance: Any, schema: dict[str, Any], path: str = "$", root: dict[str, Any] | None = None) -> list[str]:
    """Errors of ``instance`` against ``schema`` (keywords: type, enum, const, required, properties,
    additionalProperties, items, minimum, $ref to #/definitions, anyOf). Empty list = valid."""
    root = root or schema
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        return validate(instance, root["definitions"][name], path, root)
    errs: list[str] = []
    if "anyOf" in schema:
        if all(validate(instance, s, path, root) for s in schema["anyOf"]):
            errs.append(f"{path}: matches none of anyOf")
        return errs
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_type_ok(instance, x) for x in types):
            return [f"{path}: expected {t}, got {type(instance).__name__}"]
    if "enum" in schema and instance not in schema["enum"]:
        errs.append(f"{path}: {instance!r} not in {schema['enum']}")
    if "const" in schema and instance != schema["const"]:
        errs.append(f"{path}: expected {schema['const']!r}")
    if "minimum" in schema and _type_ok(instance, "number") and instance < schema["minimum"]:
        errs.append(f"{path}: {instance} < {schema['minimum']}")
    if isinstance(instance, dict):
        for k in schema.get("required", []):
            if k not in instance:
                errs.append(f"{path}: missing {k!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in instance.items():
            if k in props:
                errs += validate(v, props[k], f"{path}.{k}", root)
            elif extra is False:
                errs.append(f"{path}: unexpected property {k!r}")
            elif isinstance(extra, dict):
                errs += validate(v, extra, f"{path}.{k}", root)
    if isinstance(instance, list) and "items" in schema:
        for i, v in enumerate(instance):
            errs += validate(v, schema["items"], f"{path}[{i}]", root)
    return errs


# ----------------------------------------------------------------------------------------------- images

def _to_uint8_rgb(x01: np.ndarray, bands: Sequence[str]) -> np.ndarray:
    """(C, H, W) in [0, 1] (NaN nodata) → (H, W, 3) uint8 via ``sarkit.models.clip.rgb_view``; nodata dark grey."""
    import torch

    from sarkit.models.clip import rgb_view

    t = torch.from_numpy(np.ascontiguousarray(x01, dtype=np.float32))[None]
    rgb = rgb_view(t, list(bands))[0].numpy()
    bad = ~np.isfinite(rgb).all(axis=0)
    img = (np.clip(np.nan_to_num(rgb, nan=0.0), 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    img[bad] = (40, 40, 40)
    return img


def _error_rgb(err: np.ndarray, vmax: float = 0.5) -> np.ndarray:
    """|pred − target| (H, W) → a black-red-yellow-white ramp, 0 … ``vmax``; NaN dark grey."""
    e = np.clip(np.nan_to_num(err / vmax, nan=0.0), 0, 1)
    r = np.clip(3 * e, 0, 1)
    g = np.clip(3 * e - 1, 0, 1)
    b = np.clip(3 * e - 2, 0, 1)
    img = (np.stack([r, g, b], axis=-1) * 255 + 0.5).astype(np.uint8)
    img[~np.isfinite(err)] = (40, 40, 40)
    return img


def png_base64(img: np.ndarray, max_px: int) -> str:
    """(H, W, 3) uint8 → base64 PNG, downscaled so the longer side is at most ``max_px``."""
    from PIL import Image

    im = Image.fromarray(img)
    if max(im.size) > max_px:
        s = max_px / max(im.size)
        im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_thumbnail(block: Block, pred_norm: Normalization, input_norm: Normalization | None,
                     max_px: int) -> dict[str, str | None]:
    """Small base64 PNGs of a block's core: input (if known), prediction, target, |error| map."""
    rs, cs = block.core.slices()
    p = (block.pred[:, rs, cs] + 1) / 2
    t = (block.target[:, rs, cs] + 1) / 2
    err = np.abs(p - t).mean(axis=0)
    out: dict[str, str | None] = {
        "pred": png_base64(_to_uint8_rgb(p, pred_norm.bands), max_px),
        "target": png_base64(_to_uint8_rgb(t, pred_norm.bands), max_px),
        "error": png_base64(_error_rgb(err), max_px),
        "input": None,
    }
    if block.input is not None and input_norm is not None:
        out["input"] = png_base64(_to_uint8_rgb((block.input[:, rs, cs] + 1) / 2, input_norm.bands), max_px)
    return out


def scene_preview(src: Any, idx: Sequence[int], norm: Normalization, modality: str,
                  max_px: int) -> dict[str, str]:
    """A whole scene read at reduced resolution (overviews when present) → base64 PNG in the fixed ranges."""
    from sarkit.raster.norm import dn_to_reflectance, sar_to_db

    scale = max(src.height, src.width) / max_px
    h, w = max(1, round(src.height / max(scale, 1))), max(1, round(src.width / max(scale, 1)))
    from rasterio.enums import Resampling

    data = src.read(list(idx), out_shape=(len(idx), h, w), resampling=Resampling.average)
    nodata = src.nodata
    if norm.units == "image":  # image values are their own physical values
        phys = data.astype("float32")
    elif modality == "sar":
        phys = sar_to_db(data, "db", nodata)
    else:
        phys = dn_to_reflectance(data, norm.offset, nodata if nodata is not None else 0)
    x01 = (norm.encode(phys) + 1) / 2
    return {"png": png_base64(_to_uint8_rgb(x01, norm.bands), max_px)}


# ----------------------------------------------------------------------------------------------- formatting

def fmt(v: Any, digits: int = 4) -> str:
    """A metric value for tables: 4 significant digits, ``inf``, or ``–`` for missing."""
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}g}"
    return str(v)


def summary_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[metric, value, mean, std, median, min, max]`` of a report's summary (JSON values)."""
    rows = []
    for m in ALL_METRICS + GAIN_METRICS:
        s = report["summary"].get(m)
        if s is None:
            continue
        rows.append([f"{LABELS[m]} {arrow(m)}", fmt(s.get("value")), fmt(s.get("mean")), fmt(s.get("std")),
                     fmt(s.get("median")), fmt(s.get("min")), fmt(s.get("max"))])
    return rows


SUMMARY_COLUMNS = ["metric", "value", "tile mean", "tile std", "tile median", "tile min", "tile max"]


def baseline_columns(report: dict[str, Any]) -> list[str]:
    """``system``, the metrics the baselines have (PSNR↑ SSIM↑ MAE↓ LPIPS↓ of the summary), ``fitted on``."""
    ms = [m for m in ("psnr", "ssim", "mae", "lpips") if m in report["summary"]]
    return ["system"] + [f"{LABELS[m]} {arrow(m)}" for m in ms] + ["fitted on"]


def baseline_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Rows of the model, each baseline (or why it is absent) and the model's gain over the better baseline per
    metric (positive = the model is better); none when the report has no baselines."""
    base = report.get("baselines")
    if not base:
        return []
    ms = [m for m in ("psnr", "ssim", "mae", "lpips") if m in report["summary"]]
    summ = report["summary"]
    rows: list[list[Any]] = [["model"] + [fmt(summ[m].get("value")) for m in ms] + [""]]
    for entry in base.values():
        if "absent" in entry:
            rows.append([entry["label"]] + ["–"] * len(ms) + [f"not computed: {entry['absent']}"])
            continue
        vals = entry.get("summary", {})
        rows.append([entry["label"]] + [fmt((vals.get(m) or {}).get("value")) for m in ms] + [entry["source"]])
    gains = [summ.get(f"gain_{m}") for m in ms]
    over = ", ".join(f"{LABELS[m]}: {g['over']}" for m, g in zip(ms, gains) if g and g.get("over"))
    rows.append(["gain over the better baseline"] + [fmt(g.get("value")) if g else "–" for g in gains]
                + [f"better baseline per metric: {over}" if over else ""])
    return rows


def render_baselines_csv(report: dict[str, Any]) -> str:
    """baselines.csv: the rows of ``baseline_rows`` (model, baselines, gains) under ``baseline_columns``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(baseline_columns(report))
    w.writerows(baseline_rows(report))
    return buf.getvalue()


def _band_ranges(bands: Sequence[str], ranges: Sequence[Sequence[float]], units: str) -> str:
    """"B4, B3, B2 in [0, 0.3] reflectance", or each band with its range when they differ."""
    if all(list(r) == list(ranges[0]) for r in ranges):
        return f"{', '.join(bands)} in [{ranges[0][0]:g}, {ranges[0][1]:g}] {units}"
    return ", ".join(f"{b} [{r[0]:g}, {r[1]:g}]" for b, r in zip(bands, ranges)) + f" {units}"


def band_lines(report: dict[str, Any]) -> list[str]:
    """Which bands, in which fixed ranges, every metric used, and how the bands were found: lines for the terminal
    summary, report.md and report.html (none for reports without a ``bands`` record)."""
    b = report.get("bands")
    if not b:
        return []
    groups: dict[tuple[Any, ...], list[str]] = {}
    for m, u in b["metrics"].items():
        key = (tuple(u["bands"]), tuple(tuple(r) for r in u["ranges"]))
        groups.setdefault(key, []).append(LABELS.get(m, m))
    units = b.get("units", "")
    lines = [f"{', '.join(ms)}: {len(bands)} band{'s' if len(bands) != 1 else ''}, "
             f"{_band_ranges(bands, ranges, units)}" for (bands, ranges), ms in groups.items()]
    if b["matched"] == "position" and b["pred"] != b["target"]:
        lines.append(f"bands matched by position: prediction {', '.join(b['pred'])} = target {', '.join(b['target'])}")
    elif b["matched"] == "--bands":
        lines.append(f"bands chosen with --bands: prediction {', '.join(b['pred'])}")
    unnamed = [w for w in ("pred", "target") if not b.get("described", {}).get(w, True)]
    if unnamed:
        who = " and ".join("prediction" if w == "pred" else "target" for w in unnamed)
        lines.append(f"the {who} file{'s' if len(unnamed) > 1 else ''} name{'' if len(unnamed) > 1 else 's'} no "
                     f"bands: names assumed from the band count; choose the bands to compare with --bands")
    return lines


def metric_notes(report: dict[str, Any]) -> list[str]:
    """Lines for the terminal summary, report.md and report.html on feature matching (the method, what PMR divides
    by, the tiles whose values are undefined) and CLIP-IQA (no-reference: the prediction only; the target's score
    as a reference); none when neither is computed."""
    lines: list[str] = []
    mt = report.get("matching")
    if mt:
        lines.append(f"PMR, IR, IR-ED: {mt['method']}, on 8-bit renderings in the fixed ranges; PMR = putative "
                     f"matches / {mt['pmr_denominator']}; IR = RANSAC inliers (homography, {mt['ransac_px']:g} px) / "
                     f"putative; IR-ED = putative matches closer than {mt['ed_px']:g} px / putative")
        lines.append(f"matching over {mt['tiles']} tiles: {mt['too_few_keypoints']} with too few keypoints (PMR, IR, "
                     f"IR-ED undefined), {mt.get('no_matches', 0)} without putative matches (IR, IR-ED undefined), "
                     f"{mt.get('too_few_matches', 0)} with 1-3 (IR undefined)")
    clip = (report.get("networks") or {}).get("clip_iqa")
    if clip:
        target = (clip.get("target") or {}).get("value")
        lines.append(f"CLIP-IQA is no-reference: it scores the prediction only ({clip['model']}, "
                     f"{len(clip.get('pairs', []))} prompt pairs); the target scores {fmt(from_json_value(target))} "
                     f"(reference)")
    return lines


def clip_iqa_pair_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[prompt pair, prediction, target]`` of CLIP-IQA's per-pair mean probabilities (none without it)."""
    clip = (report.get("networks") or {}).get("clip_iqa") or {}
    return [[f"{p['positive']} / {p['negative']}", from_json_value(p.get("pred")), from_json_value(p.get("target"))]
            for p in clip.get("pairs", [])]


CLIP_IQA_PAIR_COLUMNS = ["prompt pair", "prediction", "target"]


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def per_class_columns(report: dict[str, Any]) -> list[str]:
    keys = [k for k in ("pixels", "psnr", "ssim", "mae", "iou") if any(k in r for r in report["per_class"])]
    return ["class"] + keys


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: inputs, normalisation, summary table, per-class table."""
    inp = report["inputs"]
    norm = report["normalization"]
    out = [f"# sarkit evaluation ({inp.get('mode')})", ""]
    out += [f"- {k}: `{v}`" for k, v in inp.items() if v is not None]
    out += [f"- ranges ({norm['source']}): " + ", ".join(
        f"{b} [{lo}, {hi}]" for b, lo, hi in zip(norm["pred"]["bands"], norm["pred"]["lo"], norm["pred"]["hi"])),
        f"- metric space: {norm['space']}",
        f"- valid pixels: {report['pixels']['valid']} of {report['pixels']['total']}", ""]
    if report.get("segmentation"):
        seg = report["segmentation"]
        out += [f"- segmenter: `{seg['segmenter']}`; PA/mIoU reference: {seg['reference']}", ""]
    for name, net in (report.get("networks") or {}).items():
        files = ", ".join(f"{k} `{v}`" for k, v in net.items() if k != "model" and isinstance(v, str))
        out += [f"- {LABELS.get(name, name)} network: {net['model']}" + (f"; {files}" if files else "")]
    if report.get("networks"):
        out.append("")
    out += ["## Summary", "", _md_table(SUMMARY_COLUMNS, summary_rows(report)), ""]
    if rows := baseline_rows(report):
        out += ["## Baselines", "", "The trivial baselines on the same pixels and bands (sarkit.eval.baselines); "
                "gain = model minus the better baseline, positive = the model is better.", "",
                _md_table(baseline_columns(report), rows), ""]
    if lines := band_lines(report):
        out += ["## Bands", ""] + [f"- {ln}" for ln in lines] + [""]
    if notes := metric_notes(report):
        out += ["## Feature matching and CLIP-IQA", ""] + [f"- {ln}" for ln in notes] + [""]
    if pairs := clip_iqa_pair_rows(report):
        out += ["CLIP-IQA per prompt pair (mean probability of the first prompt):", "",
                _md_table(CLIP_IQA_PAIR_COLUMNS, pairs), ""]
    if report["per_class"]:
        cols = per_class_columns(report)
        out += ["## Per class", "", _md_table(cols, [[r.get(c) for c in cols] for r in report["per_class"]]), ""]
    out += [f"{len(report['tiles'])} tiles: see tiles.csv.", ""]
    return "\n".join(out)


def tile_columns(report: dict[str, Any]) -> list[str]:
    cols: list[str] = []
    for t in report["tiles"]:
        for k in t:
            if k not in cols:
                cols.append(k)
    return cols


def render_csv(report: dict[str, Any]) -> str:
    """tiles.csv: one row per tile (id, valid_fraction, metrics, window)."""
    buf = io.StringIO()
    cols = tile_columns(report)
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for t in report["tiles"]:
        w.writerow(["" if t.get(c) is None else t.get(c) for c in cols])
    return buf.getvalue()


def _svg_histogram(values: Sequence[float], title: str, bins: int = 20) -> str:
    """An inline SVG histogram of finite values."""
    v = np.asarray([x for x in values if isinstance(x, (int, float)) and math.isfinite(x)], dtype=np.float64)
    w, h, pad = 320, 140, 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
             f"<title>{html.escape(title)}</title>"]
    if v.size:
        counts, edges = np.histogram(v, bins=bins)
        top = max(int(counts.max()), 1)
        bw = (w - 2 * pad) / bins
        for i, c in enumerate(counts):
            bh = (h - 2 * pad) * c / top
            parts.append(f'<rect x="{pad + i * bw:.1f}" y="{h - pad - bh:.1f}" width="{bw - 1:.1f}" '
                         f'height="{bh:.1f}" fill="#4a7ab5"></rect>')
        parts.append(f'<text x="{pad}" y="{h - 6}" font-size="10">{edges[0]:.4g}</text>')
        parts.append(f'<text x="{w - pad}" y="{h - 6}" font-size="10" text-anchor="end">{edges[-1]:.4g}</text>')
    parts.append(f'<text x="{pad}" y="14" font-size="12">{html.escape(title)} (n={v.size})</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS = (".overview{display:flex;gap:1em;flex-wrap:wrap}.overview img{max-width:31vw;image-rendering:pixelated}"
        "body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
        ".grid{display:grid;grid-template-columns:repeat(5,auto);gap:6px;align-items:center}"
        ".grid img{image-rendering:pixelated;width:128px}.hist{display:inline-block;margin:4px}")


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def tile_grid_title(report: dict[str, Any], thumbnails: Sequence[dict[str, Any]]) -> str:
    """The heading of the thumbnail grid: which groups it shows, of how many ranked tiles, by which metric."""
    if not thumbnails:
        return "Tiles: none ranked (no per-tile PSNR, SSIM or MAE)"
    metric = LABELS.get(str(thumbnails[0].get("rank_by") or "psnr"), "PSNR")
    if thumbnails[0]["group"] == "only":
        return "The only tile"
    counts = {g: sum(1 for t in thumbnails if t["group"] == g) for g in ("only", "best", "median", "worst")}
    shown = ", ".join(f"{n} {g}" for g, n in counts.items() if n)
    return f"Tiles by {metric}: {shown} of {len(report['tiles'])}"


def render_html(report: dict[str, Any], thumbnails: Sequence[dict[str, Any]],
                overview: Sequence[dict[str, str]] = ()) -> str:
    """A self-contained report.html: inputs, tables, metric histograms (SVG), best/median/worst tiles (PNG)."""
    inp = report["inputs"]
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             "<title>sarkit evaluation</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             f"<h1>sarkit evaluation ({html.escape(str(inp.get('mode')))})</h1>", '<section id="inputs">',
             "<h2>Inputs</h2>", "<ul>"]
    parts += [f"<li>{html.escape(str(k))}: <code>{html.escape(str(v))}</code></li>" for k, v in inp.items()
              if v is not None]
    parts += [f"<li>metric space: {html.escape(report['normalization']['space'])}</li>", "</ul>", "</section>",
              '<section id="summary">', "<h2>Summary</h2>", _html_table(SUMMARY_COLUMNS, summary_rows(report)),
              "</section>"]
    if rows := baseline_rows(report):
        parts += ['<section id="baselines">', "<h2>Baselines</h2>",
                  "<p>The trivial baselines on the same pixels and bands; gain = model minus the better baseline, "
                  "positive = the model is better.</p>", _html_table(baseline_columns(report), rows), "</section>"]
    if lines := band_lines(report):
        parts += ['<section id="bands">', "<h2>Bands</h2>", "<ul>"]
        parts += [f"<li>{html.escape(ln)}</li>" for ln in lines] + ["</ul>", "</section>"]
    if notes := metric_notes(report):
        parts += ['<section id="matching-clip-iqa">', "<h2>Feature matching and CLIP-IQA</h2>", "<ul>"]
        parts += [f"<li>{html.escape(ln)}</li>" for ln in notes] + ["</ul>"]
        if pairs := clip_iqa_pair_rows(report):
            parts.append(_html_table(CLIP_IQA_PAIR_COLUMNS, pairs))
        parts.append("</section>")
    if overview:
        parts += ['<section id="overview">', "<h2>Scene overview</h2>", '<div class="overview">']
        parts += [f'<figure><img alt="{html.escape(o["label"])}" src="data:image/png;base64,{o["png"]}">'
                  f"<figcaption>{html.escape(o['label'])}</figcaption></figure>" for o in overview]
        parts += ["</div>", "</section>"]
    if report["per_class"]:
        cols = per_class_columns(report)
        parts += ['<section id="per-class">', "<h2>Per class</h2>",
                  _html_table(cols, [[r.get(c) for c in cols] for r in report["per_class"]]), "</section>"]
    parts += ['<section id="histograms">', "<h2>Per-tile distributions</h2>"]
    for m in ("psnr", "ssim", "mae", "pa", "sms", "lpips", "pmr", "ir", "ir_ed", "clip_iqa"):
        if m in report["summary"] and m in tile_columns(report):
            vals = [from_json_value(t.get(m)) for t in report["tiles"]]
            parts.append(f'<div class="hist">{_svg_histogram([v for v in vals if v is not None], LABELS[m])}</div>')
    parts.append("</section>")
    parts += ['<section id="tiles">', f"<h2>{html.escape(tile_grid_title(report, thumbnails))}</h2>",
              '<div class="grid">', "<b>tile</b><b>input</b><b>prediction</b><b>target</b><b>|error|</b>"]
    for t in thumbnails:
        values = " ".join(f"{LABELS[m]} {fmt(t.get(m))}" for m in ("psnr", "ssim", "mae") if t.get(m) is not None)
        label = f"{t['group']}: {t['id']}<br>{values}"
        parts.append(f"<div>{html.escape(label).replace('&lt;br&gt;', '<br>')}</div>")
        for key in ("input", "pred", "target", "error"):
            data = t.get(key)
            parts.append(f'<img alt="{key} {html.escape(t["id"])}" src="data:image/png;base64,{data}">' if data
                         else "<div>–</div>")
    parts += ["</div>", "</section>", "</body>", "</html>", ""]
    return "\n".join(parts)


def write_report(out_dir: str | Path, result: EvalResult, overwrite: bool) -> Path:
    """Write report.json, report.md, tiles.csv, report.html (and baselines.csv when the report has baselines) into
    ``out_dir`` atomically (all or nothing)."""
    from sarkit.io import atomic_dir

    report = to_json_value(result.report)
    errs = validate(report, load_schema())
    if errs:
        raise ValueError(f"report does not match its schema: {errs[0]}")
    dest = Path(out_dir)
    with atomic_dir(dest, overwrite) as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (tmp / "report.md").write_text(render_markdown(report))
        (tmp / "tiles.csv").write_text(render_csv(report))
        if report.get("baselines"):
            (tmp / "baselines.csv").write_text(render_baselines_csv(report))
        (tmp / "report.html").write_text(render_html(report, result.thumbnails, result.overview))
    return dest
