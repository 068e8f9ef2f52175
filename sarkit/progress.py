"""The one place below the CLI that talks to the terminal: rich progress bars and JSON event logs.

``make_reporter`` returns a ``sarkit.reporting.Reporter``: rich bars on stderr for people, nothing but warnings
with ``quiet``, or one JSON object per event on stderr with ``log_format="json"`` (for cron and machines).
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

_stderr = Console(stderr=True)
_stdout = Console()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class _RichTask:
    def __init__(self, progress: Progress, task_id: int) -> None:
        self._progress = progress
        self._id = task_id

    def advance(self, n: int = 1, **fields: Any) -> None:
        info = "  ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        self._progress.update(self._id, advance=n, info=info)


class RichReporter:
    """Progress bars with ETA and live fields, for people at a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or _stderr

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[_RichTask]:
        columns = [
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        ]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total, info="")
            yield _RichTask(progress, task_id)

    def info(self, message: str, **fields: Any) -> None:
        self.console.print(escape(message), highlight=False, soft_wrap=True)  # one message, one line (logs, grep)

    def warn(self, message: str, **fields: Any) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


class QuietReporter:
    """No bars and no chatter; warnings still go to stderr."""

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Any]:
        class _T:
            def advance(self, n: int = 1, **fields: Any) -> None:
                pass

        yield _T()

    def info(self, message: str, **fields: Any) -> None:
        pass

    def warn(self, message: str, **fields: Any) -> None:
        print(f"warning: {message}", file=sys.stderr)


class _JsonTask:
    def __init__(self, reporter: "JsonReporter", description: str, total: int | None) -> None:
        self._r = reporter
        self._description = description
        self._total = total
        self._done = 0
        self._last = 0.0

    def advance(self, n: int = 1, **fields: Any) -> None:
        self._done += n
        now = time.monotonic()
        finished = self._total is not None and self._done >= self._total
        if finished or now - self._last >= self._r.interval_s:
            self._last = now
            self._r.emit("progress", task=self._description, done=self._done, total=self._total, **fields)


class JsonReporter:
    """One JSON object per line on stderr: ``{"time", "event", ...}``."""

    def __init__(self, stream: Any = None, interval_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.interval_s = interval_s

    def emit(self, event: str, **fields: Any) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **fields}
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[_JsonTask]:
        self.emit("start", task=description, total=total)
        t = _JsonTask(self, description, total)
        yield t
        self.emit("end", task=description, done=t._done)

    def info(self, message: str, **fields: Any) -> None:
        self.emit("info", message=message, **fields)

    def warn(self, message: str, **fields: Any) -> None:
        self.emit("warning", message=message, **fields)


def make_reporter(quiet: bool = False, log_format: str = "text") -> Any:
    """Pick the reporter for the CLI's ``--quiet`` and ``--log-format`` options."""
    if log_format == "json":
        return JsonReporter()
    if quiet:
        return QuietReporter()
    return RichReporter()


def print_table(title: str, columns: list[str], rows: list[list[Any]], quiet: bool = False) -> None:
    """Print a summary table to stdout (skipped with ``quiet``)."""
    if quiet:
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[_fmt(v) for v in r])
    _stdout.print(table)


def print_error(message: str, as_json: bool = False, exit_code: int | None = None) -> None:
    """One-line error on stderr: text for people, or a JSON ``error`` event (``--log-format json``)."""
    if as_json:
        JsonReporter().emit("error", message=message, exit_code=exit_code)
        return
    _stderr.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def print_warning(message: str, as_json: bool = False) -> None:
    """One-line warning on stderr: text for people, or a JSON ``warning`` event (``--log-format json``)."""
    if as_json:
        JsonReporter().emit("warning", message=message)
        return
    _stderr.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)
