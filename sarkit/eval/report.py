"""Evaluation reports: report.json (schema ``sarkit.eval/1.1``), report.md, tiles.csv, report.html; compare;
gates.

JSON conventions: every metric value is a number, except that +inf (PSNR of identical images) is written as the
string ``"inf"`` and an undefined value (NaN: no valid pixel/window) as ``null``. ``report_schema.json`` next to
this module is the JSON Schema of the file (checked by ``validate``, a small validator of the schema keywords
used there).

Quality gates: ``--fail-under psnr=18,ssim=0.3`` for higher-is-better metrics (psnr, ssim, pa, miou) and
``--fail-over fid=50,mae=0.1`` for lower-is-better ones (mae, fid, fid-clip, sms, lpips). A metric that falls
short is a working failure: the report is still written, then the CLI exits with 1.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sarkit.errors import InputError

SCHEMA_PATH = Path(__file__).with_name("report_schema.json")
#: Column order of summaries and comparisons, with the better direction.
METRIC_ORDER = ("psnr", "ssim", "mae", "fid", "fid-clip", "pa", "miou", "sms", "lpips")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "mae": False, "fid": False, "fid-clip": False, "pa": True,
                    "miou": True, "sms": False, "lpips": False}
LABELS = {"psnr": "PSNR", "ssim": "SSIM", "mae": "MAE", "fid": "FID", "fid-clip": "FID-CLIP", "pa": "PA",
          "miou": "mIoU", "sms": "SMS", "lpips": "LPIPS"}


def arrow(metric: str) -> str:
    """↑ for higher-is-better metrics, ↓ otherwise."""
    return "↑" if HIGHER_IS_BETTER.get(metric, True) else "↓"


# ----------------------------------------------------------------------------------------------- JSON

def to_json_value(v: Any) -> Any:
    """Recursively make a record JSON-safe: +inf → "inf", −inf → "-inf", NaN → None, numpy → Python."""
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


def render_thumbnail(block: Any, pred_norm: Any, input_norm: Any, max_px: int) -> dict[str, str | None]:
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


def scene_preview(src: Any, idx: Sequence[int], norm: Any, modality: str, max_px: int) -> dict[str, str]:
    """A whole scene read at reduced resolution (overviews when present) → base64 PNG in the fixed ranges."""
    from sarkit.raster.norm import dn_to_reflectance, sar_to_db

    scale = max(src.height, src.width) / max_px
    h, w = max(1, round(src.height / max(scale, 1))), max(1, round(src.width / max(scale, 1)))
    from rasterio.enums import Resampling

    data = src.read(list(idx), out_shape=(len(idx), h, w), resampling=Resampling.average)
    nodata = src.nodata
    if modality == "sar":
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
    for m in METRIC_ORDER:
        s = report["summary"].get(m)
        if s is None:
            continue
        rows.append([f"{LABELS[m]} {arrow(m)}", fmt(s.get("value")), fmt(s.get("mean")), fmt(s.get("std")),
                     fmt(s.get("median")), fmt(s.get("min")), fmt(s.get("max"))])
    return rows


SUMMARY_COLUMNS = ["metric", "value", "tile mean", "tile std", "tile median", "tile min", "tile max"]


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
        files = ", ".join(f"{k} `{v}`" for k, v in net.items() if k != "model")
        out += [f"- {LABELS.get(name, name)} network: {net['model']}" + (f"; {files}" if files else "")]
    if report.get("networks"):
        out.append("")
    out += ["## Summary", "", _md_table(SUMMARY_COLUMNS, summary_rows(report)), ""]
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
    for m in ("psnr", "ssim", "mae", "pa", "sms", "lpips"):
        if m in report["summary"] and m in tile_columns(report):
            vals = [from_json_value(t.get(m)) for t in report["tiles"]]
            parts.append(f'<div class="hist">{_svg_histogram([v for v in vals if v is not None], LABELS[m])}</div>')
    parts.append("</section>")
    parts += ['<section id="tiles">', "<h2>Best, median and worst tiles by PSNR</h2>", '<div class="grid">',
              "<b>tile</b><b>input</b><b>prediction</b><b>target</b><b>|error|</b>"]
    for t in thumbnails:
        label = f"{t['group']}: {t['id']}<br>PSNR {fmt(t.get('psnr'))} SSIM {fmt(t.get('ssim'))}"
        parts.append(f"<div>{html.escape(label).replace('&lt;br&gt;', '<br>')}</div>")
        for key in ("input", "pred", "target", "error"):
            data = t.get(key)
            parts.append(f'<img alt="{key} {html.escape(t["id"])}" src="data:image/png;base64,{data}">' if data
                         else "<div>–</div>")
    parts += ["</div>", "</section>", "</body>", "</html>", ""]
    return "\n".join(parts)


def write_report(out_dir: str | Path, result: Any, overwrite: bool) -> Path:
    """Write report.json, report.md, tiles.csv and report.html into ``out_dir`` atomically (all or nothing)."""
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
        (tmp / "report.html").write_text(render_html(report, result.thumbnails, getattr(result, "overview", ())))
    return dest


# ----------------------------------------------------------------------------------------------- compare

def load_report(path: str | Path) -> dict[str, Any]:
    """A report.json (or the report directory holding it), checked against the schema."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise InputError(f"report not found: {p} (pass report directories or report.json files)")
    try:
        rec = json.loads(p.read_text())
    except ValueError as exc:
        raise InputError(f"{p} is not valid JSON: {exc}") from None
    errs = validate(rec, load_schema())
    if errs:
        raise InputError(f"{p} is not a sarkit eval report ({errs[0]})")
    return rec


def run_name(path: str | Path, report: dict[str, Any]) -> str:
    """Name of a run in a comparison: the report directory name (or the file's parent)."""
    p = Path(path)
    return (p.parent.name if p.is_file() else p.name) or str(p)


def compare_table(paths: Sequence[str | Path]) -> tuple[list[str], list[list[Any]], dict[str, int]]:
    """Columns ``method | PSNR↑ | …``, one row of values per run, and the row index of the best per metric."""
    if len(paths) < 1:
        raise InputError("--compare needs at least one report")
    reports = [(run_name(p, r), r) for p, r in ((p, load_report(p)) for p in paths)]
    metrics = [m for m in METRIC_ORDER if any(m in r["summary"] for _, r in reports)]
    rows: list[list[Any]] = []
    for name, r in reports:
        rows.append([name] + [from_json_value(r["summary"][m]["value"]) if m in r["summary"] else None
                              for m in metrics])
    best: dict[str, int] = {}
    for j, m in enumerate(metrics, start=1):
        vals = [(i, row[j]) for i, row in enumerate(rows) if row[j] is not None and not math.isnan(row[j])]
        if vals:
            pick = max if HIGHER_IS_BETTER[m] else min
            best[m] = pick(vals, key=lambda iv: iv[1])[0]
    cols = ["method"] + [f"{LABELS[m]}{arrow(m)}" for m in metrics]
    return cols, rows, {m: best[m] for m in best}


def _marked(cols: list[str], rows: list[list[Any]], best: dict[str, int], mark: str) -> list[list[str]]:
    metrics = [m for m in METRIC_ORDER if f"{LABELS[m]}{arrow(m)}" in cols]
    out = []
    for i, row in enumerate(rows):
        cells = [str(row[0])]
        for j, m in enumerate(metrics, start=1):
            s = fmt(row[j])
            cells.append(mark.format(s) if best.get(m) == i else s)
        out.append(cells)
    return out


def compare_terminal(paths: Sequence[str | Path]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows for the terminal, the best value per column marked with ``*``."""
    cols, rows, best = compare_table(paths)
    return cols, _marked(cols, rows, best, "{}*")


def compare_markdown(paths: Sequence[str | Path]) -> str:
    """The comparison as a markdown table, the best value per column in bold."""
    cols, rows, best = compare_table(paths)
    marked = _marked(cols, rows, best, "**{}**")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in marked]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- gates

def parse_thresholds(text: str | None, higher: bool) -> dict[str, float]:
    """``"psnr=18,ssim=0.3"`` → {metric: threshold}; --fail-under only for ↑ metrics, --fail-over for ↓."""
    if not text:
        return {}
    opt = "--fail-under" if higher else "--fail-over"
    out: dict[str, float] = {}
    for item in (s.strip() for s in text.split(",") if s.strip()):
        name, sep, val = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in HIGHER_IS_BETTER:
            raise InputError(f"{opt} expects metric=value pairs such as psnr=18, got {item!r}")
        if HIGHER_IS_BETTER[name] != higher:
            other = "--fail-over" if higher else "--fail-under"
            raise InputError(f"{name} is {'lower' if higher else 'higher'}-is-better: use {other} {name}={val}")
        try:
            out[name] = float(val)
        except ValueError:
            raise InputError(f"{opt} {name}: {val!r} is not a number") from None
    return out


def gate_failures(summary: dict[str, Any], under: dict[str, float], over: dict[str, float]) -> list[str]:
    """Messages for every metric below its --fail-under or above its --fail-over threshold (or not computed)."""
    fails = []
    for limits, higher in ((under, True), (over, False)):
        for m, thr in limits.items():
            if m not in summary:
                raise InputError(f"quality gate on {m}, which is not computed: add it to --metrics")
            v = summary[m].get("value")
            v = from_json_value(v) if not isinstance(v, float) else v
            if v is None or math.isnan(v) or (v < thr if higher else v > thr):
                fails.append(f"{m} {fmt(v)} {'<' if higher else '>'} {thr:g}")
    return fails
