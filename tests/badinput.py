"""Shared checks of the per-command bad-input tables: exit code, one line on stderr, nothing written or left.

A table test builds each bad input in code, then calls :func:`assert_refused` (text and JSON modes both), e.g.::

    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_tile_refuses(case, tmp_path):
        assert_refused(case.args(tmp_path), watch=tmp_path / "out", code=case.code, says=case.says)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from typer.testing import CliRunner

from sarkit.cli import app


@dataclass(frozen=True)
class BadInput:
    """One row of a bad-input table: how to build the arguments, the exit code and words the message must hold."""

    name: str
    build: Callable[[Path], list[str]]
    code: int = 2
    says: Sequence[str] = field(default_factory=tuple)


def snapshot(folder: Path) -> set[str]:
    """Every path under ``folder`` (relative), so a test can tell what a command added."""
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _run(args: list[str]) -> tuple[int, list[str]]:
    """Run the CLI in-process; its exit code and the non-empty lines it wrote to stderr."""
    res = CliRunner().invoke(app, args)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"raised {type(res.exception).__name__}: {res.exception}") from res.exception
    return res.exit_code, [ln for ln in res.stderr.splitlines() if ln.strip()]


def assert_refused(args: list[str], watch: Path, code: int = 2, says: Sequence[str] = ()) -> None:
    """The command exits ``code`` with one error line naming ``says`` (and one JSON error event), adding nothing
    under ``watch`` (the folder that holds its output), in text mode and in ``--log-format json`` mode."""
    before = snapshot(watch)
    rc, lines = _run(args)
    assert rc == code, f"exit {rc}, wanted {code}: {lines}"
    assert len(lines) == 1, f"wanted one line on stderr, got {len(lines)}: {lines}"
    assert lines[0].startswith("error: "), lines
    for word in says:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]!r}"
    assert snapshot(watch) == before, f"left behind: {sorted(snapshot(watch) - before)}"

    rc, lines = _run([*args, "--log-format", "json"])
    assert rc == code, f"json mode: exit {rc}, wanted {code}: {lines}"
    events = [json.loads(ln) for ln in lines]
    assert [e["event"] for e in events] == ["error"], events
    assert events[0]["exit_code"] == code
    assert snapshot(watch) == before, f"json mode left behind: {sorted(snapshot(watch) - before)}"
