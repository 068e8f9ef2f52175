"""Comparisons of evaluation reports (``sarkit eval --compare``): one row per run, one column per metric, the
best value per column marked (``*`` in the terminal, bold in compare.md)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sarkit.errors import InputError
from sarkit.eval.options import ALL_METRICS, HIGHER_IS_BETTER, LABELS
from sarkit.eval.report import arrow, fmt, from_json_value, load_schema, validate

COMPARE_NAME = "compare.md"


def load_report(path: str | Path) -> dict[str, Any]:
    """A report.json (or the report directory holding it), checked against the schema."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise InputError(f"report not found: {p} (pass report directories or report.json files)")
    try:
        rec = json.loads(p.read_text())
    except ValueError as exc:  # UnicodeDecodeError (a binary file) is a ValueError too
        why = f"not JSON: {str(exc).splitlines()[0][:80]}" if isinstance(exc, json.JSONDecodeError) else "not text"
        raise InputError(f"{p} is not a sarkit eval report ({why}); pass report directories or report.json files "
                         f"written by sarkit eval --report") from None
    errs = validate(rec, load_schema())
    if errs:
        raise InputError(f"{p} is not a sarkit eval report ({errs[0]})")
    return rec


def run_name(path: str | Path, report: dict[str, Any]) -> str:
    """Name of a run in a comparison: the report directory name (or the file's parent)."""
    p = Path(path)
    return (p.parent.name if p.is_file() else p.name) or str(p)


@dataclass
class CompareTable:
    """Runs side by side: ``metrics`` present in any report (column order), one row ``[name, value…]`` per run
    (None where a run lacks the metric) and, per metric, the row index of the best value."""

    metrics: list[str]
    rows: list[list[Any]]
    best: dict[str, int]

    @property
    def columns(self) -> list[str]:
        """``method | PSNR↑ | …``."""
        return ["method"] + [f"{LABELS[m]}{arrow(m)}" for m in self.metrics]

    def marked(self, mark: str) -> list[list[str]]:
        """The rows as text, the best value per column formatted through ``mark`` (e.g. ``"{}*"``)."""
        out = []
        for i, row in enumerate(self.rows):
            cells = [str(row[0])]
            for j, m in enumerate(self.metrics, start=1):
                s = fmt(row[j])
                cells.append(mark.format(s) if self.best.get(m) == i else s)
            out.append(cells)
        return out

    def markdown(self) -> str:
        """compare.md: a markdown table, the best value per column in bold."""
        cols = self.columns
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.marked("**{}**")]
        return "\n".join(lines) + "\n"


def _best(values: Sequence[float | None], higher: bool) -> int | None:
    """Index of the highest (``higher``) or lowest defined value; None when none is defined."""
    vals = [(i, v) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if not vals:
        return None
    return (max if higher else min)(vals, key=lambda iv: iv[1])[0]


def compare_table(paths: Sequence[str | Path]) -> CompareTable:
    """Load the reports at ``paths`` and put their summary values side by side."""
    if len(paths) < 1:
        raise InputError("--compare needs report directories or report.json files, e.g. --compare runA runB")
    reports = [(run_name(p, r), r) for p, r in ((p, load_report(p)) for p in paths)]
    metrics = [m for m in ALL_METRICS if any(m in r["summary"] for _, r in reports)]
    rows: list[list[Any]] = []
    for name, r in reports:
        rows.append([name] + [from_json_value(r["summary"][m]["value"]) if m in r["summary"] else None
                              for m in metrics])
    best: dict[str, int] = {}
    for j, m in enumerate(metrics, start=1):
        i = _best([row[j] for row in rows], HIGHER_IS_BETTER[m])
        if i is not None:
            best[m] = i
    return CompareTable(metrics, rows, best)


def compare_terminal(paths: Sequence[str | Path]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows for the terminal, the best value per column marked with ``*``."""
    table = compare_table(paths)
    return table.columns, table.marked("{}*")


def compare_markdown(paths: Sequence[str | Path]) -> str:
    """The comparison as a markdown table, the best value per column in bold."""
    return compare_table(paths).markdown()


def compare_reports(paths: Sequence[str | Path], out: Path | None = None, overwrite: bool = False) -> CompareTable:
    """``sarkit eval --compare``'s job: the table of the reports at ``paths``, written as ``out``/compare.md
    (atomically) when ``out`` is given."""
    table = compare_table(paths)
    if out is not None:
        from sarkit.io import atomic_dir

        with atomic_dir(out, overwrite) as tmp:
            (tmp / COMPARE_NAME).write_text(table.markdown())
    return table
