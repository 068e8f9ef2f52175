"""Progress and event reporting without any terminal dependency.

Library functions take a ``Reporter`` and call it; the CLI passes the rich or JSON implementation from
``sarkit.progress``. The default ``NullReporter`` does nothing, so library calls stay silent and pure.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Protocol


class Task(Protocol):
    """One unit of long work with a known (or unknown) number of steps."""

    def advance(self, n: int = 1, **fields: Any) -> None:
        """Mark ``n`` more steps done; ``fields`` are shown beside the bar (losses, rates)."""


class Reporter(Protocol):
    """Where library code sends progress, informational messages and warnings."""

    def task(self, description: str, total: int | None) -> Any:
        """A context manager yielding a ``Task``."""

    def info(self, message: str, **fields: Any) -> None:
        """An informational event."""

    def warn(self, message: str, **fields: Any) -> None:
        """A warning the user should read."""


class _NullTask:
    def advance(self, n: int = 1, **fields: Any) -> None:
        pass


class NullReporter:
    """A reporter that drops everything (the library default)."""

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[_NullTask]:
        yield _NullTask()

    def info(self, message: str, **fields: Any) -> None:
        pass

    def warn(self, message: str, **fields: Any) -> None:
        pass


class RecordingReporter(NullReporter):
    """A reporter that keeps messages and warnings in lists (used by tests and by callers that summarise)."""

    def __init__(self) -> None:
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def info(self, message: str, **fields: Any) -> None:
        self.infos.append(message)

    def warn(self, message: str, **fields: Any) -> None:
        self.warnings.append(message)


NULL_REPORTER = NullReporter()
