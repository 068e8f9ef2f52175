"""Comparisons of evaluation reports (``sarkit eval --compare``) in the papers' layout.

One row per method; a SAR→OPT and an OPT→SAR column group of image metrics (PSNR↑ SSIM↑ MAE↓, and FID, LPIPS,
CLIP-IQA when the reports have them) and a downstream group (PA, mIoU, SMS, PMR, IR, IR-ED, one column per
direction). The reports of one method in the two directions are paired by the method's name: the model recorded
in the report (``inputs.model``, else the exported checkpoint's header), else the report folder's name; a report
argument ``NAME=REPORT`` names its row. Best value per column in bold, second underlined, following each metric's
direction (``sarkit.eval.options.HIGHER_IS_BETTER``). Reports that measured the trivial baselines (schema 1.4) add
one row per baseline and the gain columns (gain PSNR, …: the model over the better baseline). Written as compare.md, compare.csv and compare.tex (a
booktabs ``tabular`` for a paper).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sarkit.errors import InputError
from sarkit.eval.options import ALL_METRICS, HIGHER_IS_BETTER, LABELS
from sarkit.eval.report import from_json_value, load_schema, validate

COMPARE_NAME = "compare.md"
#: The files ``--compare --report DIR`` writes.
COMPARE_FILES = ("compare.md", "compare.csv", "compare.tex")
#: The two translation directions, in column order, and how tables name them.
DIRECTIONS = ("sar2opt", "opt2sar")
DIRECTION_LABELS = {"sar2opt": "SAR→OPT", "opt2sar": "OPT→SAR"}
_DIRECTION_TEX = {"sar2opt": r"SAR$\rightarrow$OPT", "opt2sar": r"OPT$\rightarrow$SAR"}
#: Image metrics: one column group per direction, in this order (other metrics a report has come after them).
QUALITY_METRICS = ("psnr", "ssim", "mae", "fid", "fid-clip", "lpips", "clip_iqa")
#: Downstream-task metrics (segmentation, feature matching): one group, one column per metric and direction.
DOWNSTREAM_METRICS = ("pa", "miou", "sms", "pmr", "ir", "ir_ed")
DOWNSTREAM = "downstream"
#: Marks of the best and second value per column in the terminal.
TERMINAL_MARKS = ("{}*", "{}†")


def higher_is_better(metric: str) -> bool:
    """The metric's better direction, from the one table in ``sarkit.eval.options``."""
    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    raise InputError(f"--compare: unknown metric {metric!r} in a report; compare reports written by sarkit eval")


def metric_label(metric: str) -> str:
    """How tables name a metric (``PSNR``, ``IR-ED``, …)."""
    return LABELS.get(metric) or metric


def arrow(metric: str) -> str:
    """↑ for higher-is-better metrics, ↓ otherwise."""
    return "↑" if higher_is_better(metric) else "↓"


# ----------------------------------------------------------------------------------------------- reading

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


def run_name(path: str | Path, report: dict[str, Any] | None = None) -> str:
    """Name of a report in a comparison: the report directory name (or the file's parent)."""
    p = Path(path)
    return (p.parent.name if p.is_file() else p.name) or str(p)


def split_label(arg: str | Path) -> tuple[str | None, Path]:
    """A ``--compare`` argument: ``REPORT`` or ``NAME=REPORT`` (an existing path is never split)."""
    text = str(arg)
    if Path(text).exists() or "=" not in text:
        return None, Path(text)
    name, _, rest = text.partition("=")
    if not name.strip() or not rest:
        raise InputError(f"--compare {text}: give REPORT or NAME=REPORT (e.g. pix2pix=eval-p2p)")
    return name.strip(), Path(rest)


def report_model(report: dict[str, Any]) -> str | None:
    """The model a report evaluated: ``inputs.model``, else the model in the header of its checkpoint (when the
    file is still there); None for predictions evaluated as files."""
    inputs = report.get("inputs") or {}
    if inputs.get("model"):
        return str(inputs["model"])
    ckpt = inputs.get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        return None
    from sarkit.errors import SarkitError
    from sarkit.models.checkpoint import read_export_record

    try:
        model = read_export_record(Path(ckpt)).get("meta", {}).get("model")
    except (SarkitError, OSError, ValueError, AttributeError):
        return None
    return str(model) if model else None


def report_direction(report: dict[str, Any]) -> str:
    """The translation direction of a report: ``inputs.direction``, else from the prediction's modality."""
    d = (report.get("inputs") or {}).get("direction")
    if d in DIRECTIONS:
        return str(d)
    return "opt2sar" if report["normalization"]["pred"].get("modality") == "sar" else "sar2opt"


@dataclass(frozen=True)
class ReportEntry:
    """One report in a comparison: its name, the method (row) it belongs to, its direction and summary values."""

    name: str
    method: str
    direction: str
    values: dict[str, float | None]

    @classmethod
    def from_record(cls, name: str, report: dict[str, Any], label: str | None = None) -> ReportEntry:
        """An entry of a report record: method = ``label``, else the report's model, else ``name``."""
        values = {m: from_json_value(s.get("value")) for m, s in (report.get("summary") or {}).items()}
        return cls(name, label or report_model(report) or name, report_direction(report), values)


def baseline_entries(entry: ReportEntry, report: dict[str, Any]) -> list[tuple[str, ReportEntry]]:
    """(baseline label, entry) of each baseline a report measured (``baselines``; none in reports before 1.4),
    with the baseline's summary values; the method is set by ``load_entries``."""
    out = []
    for kind, b in (report.get("baselines") or {}).items():
        if "absent" in b or not b.get("summary"):
            continue
        values = {m: from_json_value(v.get("value")) for m, v in b["summary"].items()}
        out.append((str(b.get("label") or kind), ReportEntry(entry.name, entry.method, entry.direction, values)))
    return out


def load_entries(args: Sequence[str | Path]) -> list[ReportEntry]:
    """The reports named by ``--compare`` arguments (``REPORT`` or ``NAME=REPORT``), loaded and checked, then one
    row per distinct baseline the reports measured (``baseline: constant colour (pix2pix)``; reports whose
    baseline values agree share one row, named after all their methods)."""
    if len(args) < 1:
        raise InputError("--compare needs report directories or report.json files, e.g. --compare runA runB")
    out = []
    groups: dict[tuple[str, str, tuple[Any, ...]], tuple[list[str], ReportEntry]] = {}
    for arg in args:
        label, path = split_label(arg)
        rep = load_report(path)
        e = ReportEntry.from_record(run_name(path), rep, label)
        out.append(e)
        for name, b in baseline_entries(e, rep):
            key = (name, b.direction, tuple(sorted((m, round(v, 9) if v is not None else None)
                                                   for m, v in b.values.items())))
            methods, _ = groups.setdefault(key, ([], b))
            if e.method not in methods:
                methods.append(e.method)
    for (name, _, _), (methods, b) in groups.items():
        out.append(ReportEntry(b.name, f"baseline: {name} ({', '.join(methods)})", b.direction, b.values))
    return out


# ----------------------------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Column:
    """One column: a metric of one direction, in the ``group`` of that direction or the downstream group."""

    metric: str
    direction: str
    group: str  # a direction, or DOWNSTREAM

    @property
    def higher(self) -> bool:
        """Higher values are better."""
        return higher_is_better(self.metric)

    @property
    def title(self) -> str:
        """The column's title under its group: ``PSNR↑``; downstream ``PA (SAR→OPT)↑``."""
        if self.group == DOWNSTREAM:
            return f"{metric_label(self.metric)} ({DIRECTION_LABELS[self.direction]}){arrow(self.metric)}"
        return f"{metric_label(self.metric)}{arrow(self.metric)}"

    @property
    def header(self) -> str:
        """The column's title in a one-line header: ``SAR→OPT PSNR↑``, ``PA (SAR→OPT)↑``."""
        return self.title if self.group == DOWNSTREAM else f"{DIRECTION_LABELS[self.direction]} {self.title}"

    @property
    def tex(self) -> str:
        """The column's title in LaTeX."""
        arrow_tex = r"$\uparrow$" if self.higher else r"$\downarrow$"
        name = tex_escape(metric_label(self.metric))
        if self.group == DOWNSTREAM:
            return f"{name} ({_DIRECTION_TEX[self.direction]}){arrow_tex}"
        return f"{name}{arrow_tex}"


def group_label(group: str) -> str:
    """How a column group is named: ``SAR→OPT``, ``OPT→SAR``, ``Downstream``."""
    return DIRECTION_LABELS.get(group, "Downstream")


@dataclass
class Row:
    """One method: its values per column (None where no report has it) and the report of each direction."""

    method: str
    values: list[float | None]
    reports: dict[str, str] = field(default_factory=dict)


def ranks(values: Sequence[float | None], higher: bool) -> list[int]:
    """Per value 1 (best), 2 (second) or 0; ties share a rank, undefined values (None, NaN) get 0."""
    defined = sorted({v for v in values if v is not None and not math.isnan(v)}, reverse=higher)
    top = {v: i + 1 for i, v in enumerate(defined[:2])}
    return [top.get(v, 0) if v is not None and not math.isnan(v) else 0 for v in values]


def cell(v: float | None, digits: int = 4) -> str:
    """A value in a table: fixed ``digits`` decimals, ``inf``, or ``–`` when missing."""
    if v is None or math.isnan(v):
        return "–"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"


def tex_escape(text: str) -> str:
    """Text with LaTeX's special characters escaped."""
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "→": r"$\rightarrow$"}
    return "".join(repl.get(c, c) for c in text)


@dataclass
class CompareTable:
    """Methods side by side in the papers' layout: ``columns`` (grouped), one ``Row`` per method and the rank
    (1 best, 2 second, 0 other) of every value in its column."""

    columns: list[Column]
    rows: list[Row]

    @property
    def rank(self) -> list[list[int]]:
        """Per row, per column: 1 best, 2 second, 0 otherwise."""
        per_col = [ranks([r.values[j] for r in self.rows], c.higher) for j, c in enumerate(self.columns)]
        return [[per_col[j][i] for j in range(len(self.columns))] for i in range(len(self.rows))]

    @property
    def groups(self) -> list[tuple[str, int]]:
        """The column groups in order, with their number of columns."""
        out: list[tuple[str, int]] = []
        for c in self.columns:
            if out and out[-1][0] == c.group:
                out[-1] = (c.group, out[-1][1] + 1)
            else:
                out.append((c.group, 1))
        return out

    @property
    def headers(self) -> list[str]:
        """``method`` and the one-line header of every column."""
        return ["method"] + [c.header for c in self.columns]

    def value(self, method: str, metric: str, direction: str) -> float | None:
        """The value of ``method`` for ``metric`` in ``direction`` (None when not in the table)."""
        for row in self.rows:
            if row.method == method:
                for c, v in zip(self.columns, row.values):
                    if c.metric == metric and c.direction == direction:
                        return v
        return None

    def marked(self, marks: tuple[str, str] = TERMINAL_MARKS, escape: Any = str) -> list[list[str]]:
        """The rows as text: the method through ``escape``, best and second values through ``marks``."""
        out = []
        for row, rk in zip(self.rows, self.rank):
            cells = [escape(row.method)]
            for v, r in zip(row.values, rk):
                s = cell(v)
                cells.append(marks[r - 1].format(s) if r else s)
            out.append(cells)
        return out

    def terminal_groups(self, marks: tuple[str, str] = TERMINAL_MARKS) -> list[tuple[str, list[str], list[list[str]]]]:
        """One narrow table per column group for the terminal: (title, headers, rows), best and second marked."""
        rows = self.marked(marks)
        out, start = [], 0
        for g, n in self.groups:
            cols = self.columns[start:start + n]
            headers = ["method"] + [c.title.replace(" (", "\n(") for c in cols]
            out.append((group_label(g), headers, [[r[0]] + r[1 + start:1 + start + n] for r in rows]))
            start += n
        return out

    def markdown(self) -> str:
        """compare.md: the table (best in bold, second underlined), a legend and each row's reports."""
        cols = self.headers
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join([":---"] + ["---:"] * (len(cols) - 1)) + "|"]
        rows = self.marked(("**{}**", "<u>{}</u>"), escape=lambda s: s.replace("|", "\\|"))
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += ["", "Best per column in **bold**, second <u>underlined</u>; ↑ higher is better, ↓ lower is better.",
                  "", "Reports:"]
        for row in self.rows:
            srcs = ", ".join(f"{DIRECTION_LABELS[d]} `{n}`" for d, n in row.reports.items())
            lines.append(f"- {row.method}: {srcs}")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """compare.csv: full-precision values (empty when missing, ``inf``), then each direction's report."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.headers + [f"{DIRECTION_LABELS[d]} report" for d in DIRECTIONS])
        for row in self.rows:
            vals = ["" if v is None or math.isnan(v) else ("inf" if v == math.inf else repr(float(v)))
                    for v in row.values]
            w.writerow([row.method] + vals + [row.reports.get(d, "") for d in DIRECTIONS])
        return buf.getvalue()

    def latex(self) -> str:
        """compare.tex: a booktabs ``tabular`` (group headers over ``\\cmidrule``s), best ``\\textbf``, second
        ``\\underline``."""
        groups = self.groups
        spec = "l" + "".join(" " + "r" * n for _, n in groups)
        out = [r"% sarkit eval --compare: best per column in bold, second underlined; needs \usepackage{booktabs}",
               rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
        head, rules, start = ["Method"], [], 2
        for g, n in groups:
            label = _DIRECTION_TEX.get(g, "Downstream")
            head.append(rf"\multicolumn{{{n}}}{{c}}{{{label}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
            start += n
        out += [" & ".join(head) + r" \\", "".join(rules)]
        out.append(" & ".join([""] + [c.tex for c in self.columns]) + r" \\")
        out.append(r"\midrule")
        rows = self.marked((r"\textbf{{{}}}", r"\underline{{{}}}"), escape=tex_escape)
        for r in rows:
            out.append(" & ".join(c.replace("–", "--").replace("inf", r"$\infty$") if i else c
                                  for i, c in enumerate(r)) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(out) + "\n"


def _metric_order(present: set[str], preferred: Sequence[str]) -> list[str]:
    """``preferred`` metrics that are ``present``, then any other present ones in ``ALL_METRICS`` order."""
    rest = sorted(present - set(preferred) - set(DOWNSTREAM_METRICS),
                  key=lambda m: (ALL_METRICS.index(m) if m in ALL_METRICS else len(ALL_METRICS), m))
    return [m for m in preferred if m in present] + rest


def build_table(entries: Sequence[ReportEntry]) -> CompareTable:
    """The table of ``entries``: rows by method (first appearance), the columns the reports have."""
    if not entries:
        raise InputError("--compare needs report directories or report.json files, e.g. --compare runA runB")
    seen: dict[tuple[str, str], str] = {}
    for e in entries:
        key = (e.method, e.direction)
        if key in seen:
            raise InputError(f"--compare: {seen[key]} and {e.name} are both {e.method} {DIRECTION_LABELS[e.direction]}; "
                             f"name the rows with NAME=REPORT (e.g. {e.method}-2={e.name})")
        seen[key] = e.name
        for m in e.values:
            higher_is_better(m)  # a metric without a known direction is refused here
    present = {d: {m for e in entries if e.direction == d for m, v in e.values.items()} for d in DIRECTIONS}
    columns = [Column(m, d, d) for d in DIRECTIONS for m in _metric_order(present[d], QUALITY_METRICS)]
    columns += [Column(m, d, DOWNSTREAM) for m in DOWNSTREAM_METRICS for d in DIRECTIONS if m in present[d]]
    rows: dict[str, Row] = {}
    for e in entries:
        row = rows.setdefault(e.method, Row(e.method, [None] * len(columns)))
        row.reports[e.direction] = e.name
        for j, c in enumerate(columns):
            if c.direction == e.direction and c.metric in e.values:
                row.values[j] = e.values[c.metric]
    for row in rows.values():
        row.reports = {d: row.reports[d] for d in DIRECTIONS if d in row.reports}
    return CompareTable(columns, list(rows.values()))


def compare_table(paths: Sequence[str | Path]) -> CompareTable:
    """Load the reports at ``paths`` (``REPORT`` or ``NAME=REPORT``) and put them side by side."""
    return build_table(load_entries(paths))


def compare_terminal(paths: Sequence[str | Path]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows for the terminal, the best value per column marked with ``*``, the second with ``†``."""
    table = compare_table(paths)
    return table.headers, table.marked()


def compare_markdown(paths: Sequence[str | Path]) -> str:
    """The comparison as compare.md (best in bold, second underlined)."""
    return compare_table(paths).markdown()


def write_comparison(table: CompareTable, out: Path, overwrite: bool = False) -> Path:
    """compare.md, compare.csv and compare.tex of ``table`` into ``out``, atomically (all three or none)."""
    from sarkit.io import atomic_dir

    with atomic_dir(out, overwrite) as tmp:
        (tmp / "compare.md").write_text(table.markdown())
        (tmp / "compare.csv").write_text(table.csv())
        (tmp / "compare.tex").write_text(table.latex())
    return out


def compare_reports(paths: Sequence[str | Path], out: Path | None = None, overwrite: bool = False) -> CompareTable:
    """``sarkit eval --compare``'s job: the table of the reports at ``paths``, written into ``out`` (compare.md,
    compare.csv, compare.tex) when it is given."""
    table = compare_table(paths)
    if out is not None:
        write_comparison(table, Path(out), overwrite)
    return table
