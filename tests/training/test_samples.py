"""Validation sample grids (sarkit.training.samples)."""

from __future__ import annotations

from pathlib import Path

import torch

from sarkit.training import train
from sarkit.training.samples import classes_rgb, write_sample_grid
from tilesets import opts


def test_sample_grid_has_input_output_target_columns(tiles: Path, tmp_path: Path) -> None:
    from PIL import Image

    run = tmp_path / "run"
    train(opts(tiles, run, steps=1, val_every=1))
    img = Image.open(run / "samples" / "step-000001.png")
    assert img.size == (3 * 32 + 2 * 2, 2 * 32 + 2)  # 3 columns, the 2 validation tiles as rows




def test_classes_rgb_colours_each_class_and_blacks_out_ignore() -> None:
    rgb = classes_rgb(torch.tensor([[[0, 1], [255, 1]]]), 2)
    assert rgb.shape == (1, 3, 2, 2)
    assert torch.equal(rgb[0, :, 1, 0], torch.zeros(3)) and torch.equal(rgb[0, :, 0, 1], rgb[0, :, 1, 1])
    assert not torch.equal(rgb[0, :, 0, 0], rgb[0, :, 0, 1])


def test_write_sample_grid_places_cells_with_white_gutters(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    black, grey = torch.zeros(3, 4, 5), torch.full((3, 4, 5), 0.5)
    write_sample_grid(tmp_path / "g.png", [[black, grey], [grey, black]])
    a = np.asarray(Image.open(tmp_path / "g.png"))
    assert a.shape == (4 * 2 + 2, 5 * 2 + 2, 3)
    assert (a[:4, :5] == 0).all() and (a[:4, 7:] == 128).all() and (a[4:6] == 255).all() and (a[:, 5:7] == 255).all()
    write_sample_grid(tmp_path / "none.png", [])
    assert not (tmp_path / "none.png").exists()
