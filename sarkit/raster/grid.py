"""Named pixel windows and geographic bounds, and the regular window grid used by tiling and translation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

from rasterio.windows import Window


class Bounds(NamedTuple):
    """Geographic bounds in a CRS's units: left, bottom, right, top."""

    left: float
    bottom: float
    right: float
    top: float


@dataclass(frozen=True, order=True)
class PixelWindow:
    """A rectangle of pixels: ``row_off``/``col_off`` of its top-left corner and its ``height``/``width``."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_end(self) -> int:
        return self.row_off + self.height

    @property
    def col_end(self) -> int:
        return self.col_off + self.width

    def to_rasterio(self) -> Window:
        """The same rectangle as a rasterio ``Window``."""
        return Window(self.col_off, self.row_off, self.width, self.height)

    def slices(self) -> tuple[slice, slice]:
        """Row and column slices into an array that starts at pixel (0, 0)."""
        return slice(self.row_off, self.row_end), slice(self.col_off, self.col_end)

    def intersect(self, other: "PixelWindow") -> "PixelWindow | None":
        """The overlap of two windows, or None when they do not overlap."""
        r0, c0 = max(self.row_off, other.row_off), max(self.col_off, other.col_off)
        r1, c1 = min(self.row_end, other.row_end), min(self.col_end, other.col_end)
        if r1 <= r0 or c1 <= c0:
            return None
        return PixelWindow(r0, c0, r1 - r0, c1 - c0)


def grid_offsets(length: int, size: int, stride: int, cover: bool) -> list[int]:
    """Start offsets ``0, stride, 2·stride, …`` of windows of ``size`` along an axis of ``length``.

    With ``cover`` a last window is aligned to the end so that every pixel is covered (used by translate);
    without it, windows that would run past the end are dropped (edge remainders skipped, as tiling does).
    """
    if size <= 0 or stride <= 0:
        raise ValueError("size and stride must be positive")
    if length <= size:
        return [0]
    offsets = list(range(0, length - size + 1, stride))
    if cover and offsets[-1] + size < length:
        offsets.append(length - size)
    return offsets


def window_grid(height: int, width: int, size: int, stride: int, cover: bool = False) -> Iterator[PixelWindow]:
    """Row-major grid of ``size``×``size`` windows every ``stride`` pixels (see ``grid_offsets``)."""
    for r in grid_offsets(height, size, stride, cover):
        for c in grid_offsets(width, size, stride, cover):
            yield PixelWindow(r, c, min(size, height - r), min(size, width - c))
