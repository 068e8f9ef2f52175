"""Line charts as inline SVG (no plotting library): the training curves of run reports and benchmarks.

A chart has axes with "nice" ticks (1, 2, 5 × 10^k; powers of ten on a log axis), a title, axis labels and a
legend when it holds several series. Non-finite values break a line instead of being drawn; a series of one
point is drawn as a dot.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Sequence

#: Line colours (colour-blind-safe Okabe–Ito order).
COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442", "#000000")


@dataclass(frozen=True)
class Series:
    """One line: its name (legend) and its points."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (steps of 1, 2 or 5 × 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    if ticks and ticks[0] > lo + step * 1e-9:
        ticks.insert(0, ticks[0] - step)
    if ticks[-1] < hi - step * 1e-9 or len(ticks) < 2:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi] (both > 0)."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if a == b:
        b += 1
    return [10.0 ** e for e in range(a, b + 1)]


def tick_label(v: float, step: float | None = None) -> str:
    """A tick value with the decimals its tick ``step`` needs (``15.005``, ``2000``), or in 4 significant
    digits (log axes, tiny or huge values: ``1e-05``)."""
    if step is None or step <= 0 or abs(v) >= 1e6 or (step < 1e-4 and abs(v) < 100 * step):
        return f"{v:.4g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{v:.{decimals}f}"


def wants_log(values: Sequence[float]) -> bool:
    """A log axis suits these values: all positive and spanning more than two decades."""
    vals = [v for v in values if math.isfinite(v)]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) > 100


def _segments(xs: Sequence[float], ys: Sequence[float]) -> list[list[tuple[float, float]]]:
    """Runs of consecutive finite points (a non-finite value breaks the line)."""
    out: list[list[tuple[float, float]]] = [[]]
    for x, y in zip(xs, ys):
        if math.isfinite(x) and math.isfinite(y):
            out[-1].append((float(x), float(y)))
        elif out[-1]:
            out.append([])
    return [s for s in out if s]


def line_chart(series: Sequence[Series], title: str, x_label: str = "step", y_label: str = "",
               width: int = 420, height: int = 240, log_y: bool | None = None) -> str:
    """An SVG line chart of ``series``; ``log_y`` None = a log axis when ``wants_log`` (loss curves)."""
    pts = [p for s in series for seg in _segments(s.xs, s.ys) for p in seg]
    esc = html.escape
    left, right, top, bottom = 58, 12, 26, 38
    pw, ph = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif">',
             f"<title>{esc(title)}</title>", f'<rect width="{width}" height="{height}" fill="#fff"/>',
             f'<text x="{left}" y="16" font-size="13" font-weight="bold">{esc(title)}</text>']
    if not pts:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" font-size="12" text-anchor="middle" '
                     f'fill="#777">no values</text></svg>')
        return "".join(parts)
    ys = [p[1] for p in pts]
    log = wants_log(ys) if log_y is None else (log_y and min(ys) > 0)
    xt = nice_ticks(min(p[0] for p in pts), max(p[0] for p in pts), 5)
    yt = log_ticks(min(ys), max(ys)) if log else nice_ticks(min(ys), max(ys), 4)
    fy = (lambda v: math.log10(v)) if log else (lambda v: v)
    x0, x1, y0, y1 = xt[0], xt[-1], fy(yt[0]), fy(yt[-1])

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def sy(y: float) -> float:
        return top + ph - (fy(y) - y0) / ((y1 - y0) or 1) * ph

    for v in yt:
        y = sy(v)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        parts.append(f'<text x="{left - 5}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
                     f"{tick_label(v, None if log else yt[1] - yt[0])}</text>")
    for v in xt:
        x = sx(v)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#f0f0f0"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 15}" font-size="11" text-anchor="middle">'
                     f"{tick_label(v, xt[1] - xt[0])}</text>")
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 4}" font-size="11" text-anchor="middle">'
                 f"{esc(x_label)}</text>")
    if y_label or log:
        label = f"{y_label} (log scale)" if log else y_label
        parts.append(f'<text x="12" y="{top + ph / 2}" font-size="11" text-anchor="middle" '
                     f'transform="rotate(-90 12 {top + ph / 2})">{esc(label.strip())}</text>')
    for i, s in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        for seg in _segments(s.xs, s.ys):
            if log:
                seg = [(x, y) for x, y in seg if y > 0]
            if len(seg) == 1:
                parts.append(f'<circle cx="{sx(seg[0][0]):.1f}" cy="{sy(seg[0][1]):.1f}" r="3" fill="{colour}"/>')
            elif seg:
                d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in seg)
                parts.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        if len(series) > 1:
            ly = top + 12 + 14 * i
            parts.append(f'<line x1="{left + pw - 92}" y1="{ly - 4}" x2="{left + pw - 76}" y2="{ly - 4}" '
                         f'stroke="{colour}" stroke-width="2"/>')
            parts.append(f'<text x="{left + pw - 72}" y="{ly}" font-size="11">{esc(s.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
