"""The run report: RUN/report.html, written at the end of training and by ``sarkit report RUN``.

One page from what the run folder holds: the status (step reached of the run's steps), the timing (from the
wall-clock ``time`` of the metrics.jsonl lines), the loss and learning-rate curves and the validation curves
(inline SVG charts, ``sarkit.svgplot``), the last and best validation values, the sample grids over time
(``samples/``, linked, up to ``MAX_GRIDS`` spread evenly over the run, always the first and the last) and the
config (the main options, the model's options and config.json in full).
"""

from __future__ import annotations

import html
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sarkit.errors import InputError
from sarkit.svgplot import Series, line_chart

REPORT_NAME = "report.html"
#: Sample grids shown at most (spread evenly over the run, the first and last always among them).
MAX_GRIDS = 12
#: An interval between two log lines slower than this many times the median rate is a pause (a stop and
#: resume), left out of the training time.
PAUSE_FACTOR = 10.0
#: Validation metrics whose lower values are better (every other one is higher-is-better, as in sarkit eval).
LOWER_IS_BETTER = frozenset({"mae", "sms", "fid", "fid-clip", "lpips", "CE"})
#: metrics.jsonl keys that are not curves.
_NOT_CURVES = frozenset({"kind", "step", "epoch", "time", "lr"})


@dataclass
class RunRecords:
    """What a run folder holds for its report."""

    run: Path
    config: dict[str, Any]
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)
    samples: list[tuple[int, Path]] = field(default_factory=list)
    step: int = 0  # the step of the exported networks (0 when none)


def read_run(run: str | os.PathLike) -> RunRecords:
    """config.json, metrics.jsonl (unreadable lines skipped), the sample grids and the exported step of RUN."""
    run = Path(run)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"{run} is not a sarkit training run (no config.json); pass the --out folder of sarkit "
                         f"train")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{cfg_path} is not readable JSON ({exc}); is {run} a sarkit training run?") from None
    rec = RunRecords(run, config if isinstance(config, dict) else {})
    log = run / "metrics.jsonl"
    for line in log.read_text().splitlines() if log.is_file() else []:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("step"), int):
            (rec.train if r.get("kind") == "train" else rec.val if r.get("kind") == "val" else []).append(r)
    for p in sorted((run / "samples").glob("step-*.png")):
        try:
            rec.samples.append((int(p.stem.split("-", 1)[1]), p))
        except ValueError:
            continue
    rec.step = _exported_step(run)
    return rec


def _exported_step(run: Path) -> int:
    """The lowest step of RUN's exported networks (0 when there are none or they cannot be read)."""
    from sarkit.errors import SarkitError
    from sarkit.models.checkpoint import read_export_record

    steps = []
    for p in sorted((run / "checkpoints").glob("*.safetensors")):
        try:
            steps.append(int(read_export_record(p)["meta"]["step"]))
        except (SarkitError, KeyError, TypeError, ValueError):
            continue
    return min(steps) if steps else 0


# ----------------------------------------------------------------------------------------------- numbers

@dataclass(frozen=True)
class Timing:
    """Training time from the log lines' clocks: seconds trained, median seconds per step, pauses left out."""

    seconds: float | None
    seconds_per_step: float | None
    pauses: int
    first: float | None
    last: float | None


def timing(records: Sequence[dict[str, Any]]) -> Timing:
    """Timing of the train lines: Δtime/Δstep per interval, pauses (> ``PAUSE_FACTOR`` × median) left out; the
    steps before the first line are counted at the median rate."""
    pts = sorted((int(r["step"]), float(r["time"])) for r in records if isinstance(r.get("time"), (int, float)))
    if not pts:
        return Timing(None, None, 0, None, None)
    pairs = [((t1 - t0) / (s1 - s0), s1 - s0) for (s0, t0), (s1, t1) in zip(pts, pts[1:]) if s1 > s0]
    if not pairs:
        return Timing(None, None, 0, pts[0][1], pts[-1][1])
    med = statistics.median(r for r, _ in pairs)
    paused = [med > 0 and r > PAUSE_FACTOR * med for r, _ in pairs]
    spent = sum(r * ds for (r, ds), skip in zip(pairs, paused) if not skip) + med * pts[0][0]
    return Timing(spent, med, sum(paused), pts[0][1], pts[-1][1])


def best_of(values: Sequence[tuple[int, float]], metric: str) -> tuple[int, float] | None:
    """(step, value) of the best finite value: lowest for ``LOWER_IS_BETTER`` metrics, else highest."""
    finite = [(s, v) for s, v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return None
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(finite, key=lambda sv: sv[1])


def curve_keys(records: Sequence[dict[str, Any]]) -> list[str]:
    """The numeric keys of log lines, in first-seen order (losses, validation metrics)."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k not in _NOT_CURVES and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    return keys


def spread(items: Sequence[Any], n: int) -> list[Any]:
    """At most ``n`` items spread evenly, the first and the last always among them."""
    if len(items) <= n:
        return list(items)
    if n == 1:
        return [items[-1]]
    idx = sorted({round(i * (len(items) - 1) / (n - 1)) for i in range(n)})
    return [items[i] for i in idx]


def duration(seconds: float | None) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``12.3 s``, or ``–``."""
    if seconds is None:
        return "–"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{seconds:.1f} s"


# ----------------------------------------------------------------------------------------------- HTML

_CSS = ("body{font-family:sans-serif;margin:2em;color:#222;max-width:1400px}h1{margin-bottom:.2em}"
        "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "th{background:#eee}.charts{display:flex;flex-wrap:wrap;gap:10px}.charts svg{border:1px solid #ddd}"
        ".grids{display:flex;flex-wrap:wrap;gap:12px}.grids figure{margin:0}.grids img{width:300px;"
        "image-rendering:pixelated;border:1px solid #ccc}pre{background:#f6f6f6;padding:1em;overflow:auto}"
        ".note{color:#666}")


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    """A two-column HTML table."""
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_show(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _show(v: Any) -> str:
    """A config value as text (lists joined, floats in 4 significant digits)."""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    if v is None:
        return "–"
    return str(v)


def _config_rows(cfg: dict[str, Any]) -> list[tuple[str, Any]]:
    """The main options of config.json."""
    t = cfg.get("train") or {}
    norm = cfg.get("normalization") or {}
    rows = [("model", cfg.get("model")), ("direction", cfg.get("direction")),
            ("modality", t.get("modality")), ("data", t.get("data")),
            ("input bands", (norm.get("input") or {}).get("bands")),
            ("output bands", (norm.get("output") or {}).get("bands")),
            ("tile size", cfg.get("tile_size")), ("steps", cfg.get("total_steps")),
            ("steps per epoch", cfg.get("steps_per_epoch")), ("batch size", t.get("batch_size")),
            ("learning rate", t.get("lr")), ("seed", t.get("seed")), ("augment", t.get("augment")),
            ("device", cfg.get("device")), ("processes", cfg.get("world_size")),
            ("sarkit", cfg.get("sarkit_version"))]
    return [(k, v) for k, v in rows if v is not None]


def _charts(records: Sequence[dict[str, Any]], keys: Sequence[str], prefix: str) -> list[str]:
    """One chart per key of ``records`` over their steps."""
    out = []
    for k in keys:
        pts = [(int(r["step"]), float(r[k])) for r in records if isinstance(r.get(k), (int, float))]
        out.append(line_chart([Series(k, [p[0] for p in pts], [p[1] for p in pts])], f"{prefix}{k}"))
    return out


def render_run_report(rec: RunRecords, base: Path | None = None) -> str:
    """report.html of a run: status, timing, curves, validation table, sample grids, config; sample grids are
    linked relative to ``base`` (the report's folder; default RUN)."""
    cfg, esc = rec.config, html.escape
    base = base or rec.run
    total = cfg.get("total_steps")
    last_step = max([r["step"] for r in rec.train + rec.val] + [rec.step])
    name = rec.run.resolve().name
    status = (f"finished: step {rec.step} of {total}" if total and rec.step >= int(total)
              else f"step {last_step} of {total or '?'} logged, networks exported at step {rec.step}" if rec.step
              else f"step {last_step} of {total or '?'} logged, no exported networks yet")
    tm = timing(rec.train)
    p = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
         f"<title>sarkit run {esc(name)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
         f"<h1>sarkit training run {esc(name)}</h1>",
         f'<p>{esc(str(cfg.get("model", "?")))} · {esc(status)}</p>']
    p += ['<section id="timing">', "<h2>Timing</h2>",
          _kv_table([("training time", duration(tm.seconds) + (f" ({tm.pauses} pause{'s' if tm.pauses != 1 else ''}"
                                                                 f" between sessions left out)" if tm.pauses else "")),
                     ("seconds per step (median)", f"{tm.seconds_per_step:.4g}" if tm.seconds_per_step else None),
                     ("steps per second", f"{1 / tm.seconds_per_step:.4g}" if tm.seconds_per_step else None),
                     ("first log line", _clock(tm.first)), ("last log line", _clock(tm.last))]),
          "</section>"]
    losses = curve_keys(rec.train)
    p += ['<section id="losses">', "<h2>Losses and learning rate</h2>"]
    if rec.train:
        p.append('<div class="charts">' + "".join(_charts(rec.train, losses, "train/")
                                                  + _charts(rec.train, ["lr"], "train/")) + "</div>")
    else:
        p.append('<p class="note">no train lines in metrics.jsonl yet</p>')
    p.append("</section>")
    vkeys = curve_keys(rec.val)
    p += ['<section id="validation">', "<h2>Validation</h2>"]
    if rec.val:
        p.append('<div class="charts">' + "".join(_charts(rec.val, vkeys, "val/")) + "</div>")
        rows = []
        for k in vkeys:
            vals = [(int(r["step"]), r[k]) for r in rec.val if k in r]
            b = best_of(vals, k)
            arrow = "↓" if k in LOWER_IS_BETTER else "↑"
            rows.append(f"<tr><td>{esc(k)} {arrow}</td><td>{_num(vals[-1][1])} (step {vals[-1][0]})</td>"
                        f"<td>{'–' if b is None else f'{_num(b[1])} (step {b[0]})'}</td></tr>")
        p.append("<table><tr><th>metric</th><th>last</th><th>best</th></tr>" + "".join(rows) + "</table>")
    else:
        p.append('<p class="note">no validation yet (no val tiles, or --val-every 0)</p>')
    p.append("</section>")
    p += ['<section id="samples">', "<h2>Validation samples over time</h2>"]
    if rec.samples:
        shown = spread(rec.samples, MAX_GRIDS)
        cols = "input | predicted classes | label classes" if cfg.get("model") == "segmenter" \
            else "input | output | target"
        p.append(f'<p class="note">{cols}, one row per validation tile; {len(shown)} of {len(rec.samples)} '
                 f"grids</p>")
        p.append('<div class="grids">')
        for step, path in shown:
            src = Path(os.path.relpath(path, base)).as_posix()
            p.append(f'<figure><img alt="samples at step {step}" src="{esc(src)}">'
                     f"<figcaption>step {step}</figcaption></figure>")
        p.append("</div>")
    else:
        p.append('<p class="note">no sample grids yet</p>')
    p.append("</section>")
    p += ['<section id="config">', "<h2>Config</h2>", _kv_table(_config_rows(cfg))]
    if cfg.get("model_options"):
        p += ["<h3>Model options</h3>", _kv_table(sorted(cfg["model_options"].items()))]
    p += ["<details><summary>config.json</summary>", f"<pre>{esc(json.dumps(cfg, indent=2))}</pre>", "</details>",
          "</section>", "</body>", "</html>", ""]
    return "\n".join(p)


def _num(v: Any) -> str:
    """A metric value: 4 significant digits, ``inf`` or ``–``."""
    if not isinstance(v, (int, float)):
        return "–"
    return "inf" if math.isinf(v) else f"{v:.4g}"


def _clock(t: float | None) -> str | None:
    """A Unix time as local ``YYYY-MM-DD HH:MM:SS``."""
    if t is None:
        return None
    import datetime

    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def write_run_report(run: str | os.PathLike, out: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write the report of RUN atomically: RUN/report.html (the run's own file, always refreshed), or ``out``
    (refused when it exists, unless ``overwrite``)."""
    from sarkit.io import check_output, write_atomic_text

    rec = read_run(run)
    dest = Path(run) / REPORT_NAME if out is None else Path(out)
    if out is not None:
        if dest.is_dir():
            dest = dest / REPORT_NAME
        check_output(dest, overwrite)
    write_atomic_text(dest, render_run_report(rec, dest.parent))
    return dest
