"""Validation sample grids (RUN/samples/step-XXXXXX.png): input | output | target, one row per tile.

Images are shown in [0, 1] through the RGB view of their bands; a segmenter's class maps are coloured with a
fixed palette (class 255, ignore, is black).
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from sarkit.models.clip import rgb_view

#: White gutter between grid cells, in pixels.
GUTTER = 2


def palette(k: int) -> torch.Tensor:
    """k distinct RGB colours in [0, 1] (golden-ratio hues)."""
    cols = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.95) for i in range(max(k, 1))]
    return torch.tensor(cols, dtype=torch.float32)


def to_rgb(x: torch.Tensor, bands: Sequence[str]) -> torch.Tensor:
    """(N, C, H, W) model range → (N, 3, H, W) in [0, 1] for display: rgb((x + 1)/2 clamped)."""
    return rgb_view(((x.float() + 1.0) * 0.5).clamp(0, 1), list(bands))


def classes_rgb(labels: torch.Tensor, k: int) -> torch.Tensor:
    """(N, H, W) class ids → colours (ids outside 0…k−1, such as 255 = ignore, → black)."""
    pal = torch.cat([palette(k), torch.zeros(1, 3)], 0)
    idx = labels.long().clone().cpu()
    idx[(idx < 0) | (idx >= k)] = k
    return pal[idx].permute(0, 3, 1, 2)


def translator_row(x: torch.Tensor, out: torch.Tensor, y: torch.Tensor, in_bands: Sequence[str],
                   out_bands: Sequence[str]) -> list[torch.Tensor]:
    """Input | output | target of one tile ((1, C, H, W) each) as (3, H, W) images."""
    return [to_rgb(x, in_bands)[0], to_rgb(out, out_bands)[0], to_rgb(y, out_bands)[0]]


def segmenter_row(x: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, in_bands: Sequence[str],
                  k: int) -> list[torch.Tensor]:
    """Input | predicted classes | label classes of one tile as (3, H, W) images."""
    return [to_rgb(x, in_bands)[0], classes_rgb(logits.argmax(1), k)[0], classes_rgb(labels, k)[0]]


def sample_grid(rows: list[list[torch.Tensor]]) -> np.ndarray:
    """(H, W, 3) uint8 grid: one row per tile, columns as given (each (3, H, W) in [0, 1]), 2-pixel white
    gutters; an empty (0, 0, 3) array without rows."""
    if not rows:
        return np.zeros((0, 0, 3), np.uint8)
    h, w = rows[0][0].shape[1:]
    gut = GUTTER
    ncol = max(len(r) for r in rows)
    canvas = torch.ones(3, len(rows) * (h + gut) - gut, ncol * (w + gut) - gut)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            canvas[:, i * (h + gut):i * (h + gut) + h, j * (w + gut):j * (w + gut) + w] = img.float().cpu()
    return (canvas.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


def write_sample_grid(path: Path, rows: list[list[torch.Tensor]] | np.ndarray) -> None:
    """The PNG of ``sample_grid(rows)`` (or of a grid already made), written atomically; nothing without rows."""
    from PIL import Image

    from sarkit.io import atomic_file

    arr = rows if isinstance(rows, np.ndarray) else sample_grid(rows)
    if not arr.size:
        return
    with atomic_file(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
