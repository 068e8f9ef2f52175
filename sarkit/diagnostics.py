"""What a command prints besides its own messages: GDAL's chatter, Python warnings and termination signals.

A command runs inside :func:`command_scope`, which

- routes GDAL/PROJ messages (``ERROR 1: PROJ: …``, ``_tiffWriteProc: File too large.``) into a list instead of
  the terminal, so the one line sarkit prints is the only one (the last message explains a later
  ``RasterioIOError``: see :func:`explain`);
- turns Python warnings into sarkit warnings through ``warn`` (one line, or one JSON event), and drops rasterio's
  ``NotGeoreferencedWarning``, because sarkit checks georeferencing itself and says so in its own words;
- makes SIGTERM (what ``timeout``, cron and batch schedulers send) behave like Ctrl-C: the same clean-up runs,
  and the command exits 143.

Nothing here imports a terminal library: the CLI passes ``warn``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from sarkit.errors import Terminated

#: Loggers GDAL's messages arrive on (rasterio forwards every CPLError to them while an Env is active).
GDAL_LOGGERS = ("rasterio",)
#: Words of the operating system's reasons for a write that did not fit (ENOSPC, EFBIG).
DISK_FULL = ("No space left on device", "File too large")
#: How many of GDAL's last messages are kept to explain a failure.
KEEP_MESSAGES = 8


class GdalMessages(logging.Handler):
    """A logging handler keeping the last GDAL messages (text only) instead of printing them."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []
        self.native: Any = None  # the scratch file native code's stderr goes to, while captured

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the GDAL message text of ``record`` (rasterio wraps it as ``GDAL signalled an error: … msg='…'``)."""
        text = record.getMessage()
        if "msg=" in text:
            text = text.split("msg=", 1)[1].strip().strip("'\"")
        elif record.levelno < logging.WARNING:
            return  # rasterio's own informational logging, not a GDAL message
        if text:
            self.messages.append(text)
        del self.messages[:-KEEP_MESSAGES]

    def native_lines(self) -> list[str]:
        """The non-empty lines native code wrote to stderr so far in this command."""
        if self.native is None:
            return []
        self.native.flush()
        pos = self.native.tell()
        self.native.seek(0)
        text = self.native.read().decode("utf-8", "replace")
        self.native.seek(pos)
        return [ln.strip() for ln in text.splitlines() if ln.strip()]

    @property
    def last(self) -> str | None:
        """The most recent message: native stderr (libtiff, PROJ) first, else what GDAL logged."""
        native = self.native_lines()
        if native:
            return native[-1]
        return self.messages[-1] if self.messages else None


def explain(exc: BaseException, gdal: GdalMessages) -> str:
    """A one-line description of an unexpected failure, with GDAL's own reason where rasterio only says
    "See previous exception"."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if "previous exception" in text and gdal.last:
        text = text.split(" See previous exception", 1)[0].rstrip(".") + f": {gdal.last.rstrip('.')}"
    if any(sign in text for sign in DISK_FULL):
        text += " (the disk is full or a file-size limit was reached)"
    return f"{type(exc).__name__}: {text}"


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM handler: raise ``Terminated`` (a ``KeyboardInterrupt``) in the main thread."""
    raise Terminated(f"terminated by signal {signum}")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises ``Terminated`` (only possible in the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _gdal_captured() -> Iterator[GdalMessages]:
    """Inside a rasterio Env, GDAL messages go to a ``GdalMessages`` list instead of stderr."""
    import rasterio

    handler = GdalMessages()
    loggers = [logging.getLogger(name) for name in GDAL_LOGGERS]
    saved = [(lg, lg.propagate, lg.level) for lg in loggers]
    debug = bool(os.environ.get("SARKIT_DEBUG"))
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = debug  # with SARKIT_DEBUG the messages still reach the terminal
        lg.setLevel(logging.DEBUG if debug else logging.INFO)
    try:
        with rasterio.Env():
            yield handler
    finally:
        for lg, propagate, level in saved:
            lg.removeHandler(handler)
            lg.propagate = propagate
            lg.setLevel(level)


@contextmanager
def _native_stderr_captured(gdal: GdalMessages) -> Iterator[None]:
    """Native code's own stderr lines (libtiff's ``_tiffWriteProc: File too large.``, PROJ) go to a scratch file
    and then into ``gdal``'s messages; Python's ``sys.stderr`` keeps writing to the terminal."""
    import sys
    import tempfile

    try:
        sys.stderr.flush()
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        python_on_fd2 = False  # a test runner's captured stream: only the file descriptor needs moving
    saved_fd = os.dup(2)
    saved_stream = sys.stderr
    with tempfile.TemporaryFile(mode="w+b") as scratch:
        os.dup2(scratch.fileno(), 2)
        gdal.native = scratch
        if python_on_fd2:
            sys.stderr = open(os.dup(saved_fd), "w", buffering=1, encoding=saved_stream.encoding,
                              errors=saved_stream.errors)
        try:
            yield
        finally:
            if python_on_fd2:
                sys.stderr.flush()
                sys.stderr.close()
                sys.stderr = saved_stream
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            native = gdal.native_lines()
            gdal.native = None
            if native and os.environ.get("SARKIT_DEBUG"):
                saved_stream.write("\n".join(native) + "\n")
            gdal.messages = (gdal.messages + native)[-KEEP_MESSAGES:]


@contextmanager
def _warnings_routed(warn: Callable[[str], None]) -> Iterator[None]:
    """Python warnings become one-line sarkit warnings; rasterio's NotGeoreferencedWarning is dropped."""
    from rasterio.errors import NotGeoreferencedWarning

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        warn(f"{category.__name__}: {str(message).splitlines()[0] if str(message) else ''}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        saved = warnings.showwarning
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = saved


@contextmanager
def command_scope(warn: Callable[[str], None]) -> Iterator[GdalMessages]:
    """Run one command: GDAL chatter captured, warnings routed to ``warn``, SIGTERM as an interrupt."""
    with _sigterm_as_interrupt(), _warnings_routed(warn), _gdal_captured() as gdal, _native_stderr_captured(gdal):
        yield gdal
