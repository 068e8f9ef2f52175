"""Typed errors raised by the library; the CLI maps them to messages and exit codes.

Exit codes (documented in docs/pipelines.md and kept stable):
    0  success
    1  failure while working (WorkError, unexpected exceptions)
    2  bad usage or bad input (InputError and subclasses)
"""

from __future__ import annotations


class SarkitError(Exception):
    """Base class of every error sarkit raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(SarkitError):
    """Bad usage or bad input: a missing file, an impossible option, data that cannot be used."""

    exit_code = 2


class OutputExistsError(InputError):
    """An output already exists and ``--overwrite`` was not given."""


class WorkError(SarkitError):
    """A failure while working (I/O error half-way, numerical failure, ...)."""

    exit_code = 1


class LockedError(WorkError):
    """Another sarkit run currently writes the same output (exit 1: nothing is wrong with the input; retry later)."""


class WeightsNotFoundError(InputError):
    """Pretrained weights (CLIP, Inception, ...) are not available locally."""


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt or does not fit the data."""



class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``timeout``, cron, a scheduler): cleaned up like Ctrl-C; the CLI exits 143."""

    exit_code = 143
