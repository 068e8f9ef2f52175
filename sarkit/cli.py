"""The ``sarkit`` command line: parses options and calls library functions; nothing else lives here.

Exit codes: 0 success, 1 failure while working, 2 bad usage or bad input.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from . import __version__
from .errors import SarkitError

app = typer.Typer(
    name="sarkit",
    help="Sentinel-1 SAR ⇄ optical translation: synth, tile, train, translate, stitch, eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars or summaries (warnings still shown).")
LogFormatOpt = typer.Option("text", "--log-format", help="text (people) or json (one JSON event per line on stderr).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing output.")


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn sarkit's typed errors into a one-line message and their exit code (1 for unexpected errors)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .progress import print_error

        try:
            return fn(*args, **kwargs)
        except SarkitError as exc:
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print_error("interrupted")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # an unexpected failure while working: exit 1, traceback on request
            if os.environ.get("SARKIT_DEBUG"):
                traceback.print_exc()
            print_error(f"{type(exc).__name__}: {exc} (set SARKIT_DEBUG=1 for a traceback)")
            raise typer.Exit(1) from None

    return wrapper


def _reporter(quiet: bool, log_format: str) -> Any:
    from .progress import make_reporter

    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format must be text or json")
    return make_reporter(quiet=quiet, log_format=log_format)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sarkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Sentinel-1 SAR ⇄ optical translation toolkit."""


# ----------------------------------------------------------------------------------------------- commands
# Each command lives in its own section below; keep sections independent.

# === synth ===

# === tile ===

# === train ===

# === translate / stitch ===

# === eval ===

# === demo ===


def main() -> None:
    """Console-script entry point."""
    app(prog_name="sarkit")


if __name__ == "__main__":
    main()
