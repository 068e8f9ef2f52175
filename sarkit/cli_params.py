"""Option texts → values, for the command line only: ranges ``lo,hi``, split fractions, comma lists and
``metric=value`` pairs.

These are Typer ``parser=`` callables: they check the text's syntax and hand the library typed values; what the
values mean (hi > lo, fractions summing to 1, known metric names, a gate's direction) is checked by the library's
options when they are built. A text that does not parse is a usage error (exit 2) naming the option.
"""

from __future__ import annotations

import math
from typing import Callable

import typer


def _fail(message: str) -> typer.BadParameter:
    return typer.BadParameter(message)


def numbers(option: str, count: int, hint: str) -> Callable[[str], tuple[float, ...]]:
    """Parser of ``count`` comma-separated finite numbers (``hint`` shows the expected form in the message)."""

    def parse(text: str) -> tuple[float, ...]:
        if isinstance(text, tuple):  # already parsed (click may convert a default twice)
            return text
        try:
            values = tuple(float(x) for x in str(text).split(","))
        except ValueError:
            values = ()
        if len(values) != count or not all(math.isfinite(v) for v in values):
            raise _fail(f"{option} must be {hint}, got {text!r}")
        return values

    return parse


def value_range(option: str) -> Callable[[str], tuple[float, ...]]:
    """Parser of a range ``lo,hi`` (two numbers; hi > lo is the library's check)."""
    return numbers(option, 2, "two numbers 'lo,hi'")


def split_fractions(text: str) -> tuple[float, ...]:
    """Parser of ``--split train,val,test`` (three numbers; that they sum to 1 is the library's check)."""
    return numbers("--split", 3, "3 non-negative numbers summing to 1 (train,val,test)")(text)


def names(option: str) -> Callable[[str], tuple[str, ...]]:
    """Parser of a comma list of names (``B4,B3,B2``, ``psnr,ssim``): blanks dropped, at least one name."""

    def parse(text: str) -> tuple[str, ...]:
        if isinstance(text, tuple):
            return text
        items = tuple(s.strip() for s in str(text).split(",") if s.strip())
        if not items:
            example = "psnr,ssim,mae" if option == "--metrics" else "B4,B3,B2"
            raise _fail(f"{option} is empty; e.g. {option} {example}")
        return items

    return parse


def thresholds(option: str) -> Callable[[str], dict[str, float]]:
    """Parser of ``metric=value`` pairs (``psnr=18,ssim=0.3``) → {lower-cased metric: value}."""

    def parse(text: str) -> dict[str, float]:
        if isinstance(text, dict):
            return text
        out: dict[str, float] = {}
        for item in (s.strip() for s in str(text).split(",") if s.strip()):
            name, sep, value = item.partition("=")
            name = name.strip().lower()
            if not sep or not name:
                raise _fail(f"{option} expects metric=value pairs such as psnr=18, got {item!r}")
            try:
                out[name] = float(value)
            except ValueError:
                raise _fail(f"{option} {name}: {value.strip()!r} is not a number") from None
        return out

    return parse
