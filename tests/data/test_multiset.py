"""Several tile sets read as one (sarkit.data.multiset, TileDataset over several folders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sarkit.data.dataset import TileDataset
from sarkit.data.multiset import set_names
from sarkit.errors import InputError
from training.tilesets import make_tiles


def _edit_tiling(root: Path, **changes) -> None:
    """Change entries of a tile set's tiling.json (``normalization_optical_offset`` sets the DN offset)."""
    rec = json.loads((root / "tiling.json").read_text())
    if "offset" in changes:
        rec["normalization"]["optical"]["offset"] = changes.pop("offset")
    if "lo" in changes:
        rec["normalization"]["sar"]["lo"] = changes.pop("lo")
    rec.update(changes)
    (root / "tiling.json").write_text(json.dumps(rec))


def test_two_sets_keep_their_folders_splits_and_get_unique_ids(tmp_path):
    a = make_tiles(tmp_path / "a", n_train=3, n_val=1, seed=1)
    b = make_tiles(tmp_path / "b", n_train=2, n_val=2, seed=2)  # the same tile ids t000… as a
    train = TileDataset([a, b], split="train")
    assert train.ids == ["a/t000", "a/t001", "a/t002", "b/t000", "b/t001"]
    val = TileDataset([a, b], split="val")
    assert val.ids == ["a/t003", "b/t002", "b/t003"]
    alone = TileDataset(b, split="train")
    assert alone.ids == ["t000", "t001"]  # one set: ids as its manifest has them
    assert np.array_equal(train[3]["sar"].numpy(), alone[0]["sar"].numpy())  # read from b's own folder
    assert np.array_equal(train[3]["optical"].numpy(), alone[0]["optical"].numpy())
    assert not np.array_equal(train[0]["sar"].numpy(), alone[0]["sar"].numpy())


def test_set_names_use_the_path_when_folder_names_repeat(tmp_path):
    assert set_names([tmp_path / "x" / "tiles", tmp_path / "y" / "tiles"]) == ["x/tiles", "y/tiles"]
    assert set_names([tmp_path / "p", tmp_path / "q"]) == ["p", "q"]


@pytest.mark.parametrize("change, what", [({"sar_bands": ["VV"]}, "SAR bands"),
                                          ({"lo": [-30.0, -35.0]}, "SAR normalisation"),
                                          ({"params": {"size": 64, "stride": 64}}, "tile size"),
                                          ({"classes": ["a", "b"]}, "classes")])
def test_sets_that_differ_are_refused_naming_both(tmp_path, change, what):
    a = make_tiles(tmp_path / "a", n_train=2, n_val=0, seed=1)
    b = make_tiles(tmp_path / "b", n_train=2, n_val=0, seed=2)
    _edit_tiling(b, **change)
    with pytest.raises(InputError, match=rf"--data {a} and --data {b} differ in {what} ") as e:
        TileDataset([a, b])
    assert "\n" not in str(e.value)


def test_a_different_dn_offset_is_read_with_each_sets_own(tmp_path):
    a = make_tiles(tmp_path / "a", n_train=1, n_val=0, seed=1)
    b = make_tiles(tmp_path / "b", n_train=1, n_val=0, seed=1)  # the same DNs
    _edit_tiling(b, offset=-1000.0)  # processing baseline 04.00: reflectance = (DN - 1000) / 10000
    both = TileDataset([a, b])
    x_a, x_b = both[0]["optical"].numpy(), both[1]["optical"].numpy()
    assert (x_b < x_a).all()  # b's reflectance is lower by 0.1, so its model values are too
    assert np.array_equal(x_b, TileDataset(b)[0]["optical"].numpy())


def test_a_set_given_twice_is_refused(tmp_path):
    a = make_tiles(tmp_path / "a", n_train=1, n_val=0)
    with pytest.raises(InputError, match="given twice"):
        TileDataset([a, tmp_path / "." / "a"])
