"""Training data (sarkit.training.data): the sample order, the epoch-indexed view, opening the tiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarkit.errors import InputError
from sarkit.models.base import Task
from sarkit.models.registry import get_model
from sarkit.training.data import DataOrder, EpochIndexed, open_data
from tilesets import make_tiles, opts


def test_data_order_shards_and_covers_each_epoch() -> None:
    orders = [DataOrder(n=5, batch=2, world=2, rank=r, seed=1) for r in range(2)]
    assert orders[0].steps_per_epoch == 2
    epoch0 = [i for o in orders for b in o.batches(0, 2) for (_, i) in b]
    assert len(epoch0) == 8 and set(epoch0) == set(range(5))
    assert list(orders[0].batches(1, 3)) == list(orders[0].batches(0, 3))[1:]
    assert [e for b in orders[0].batches(2, 3) for (e, _) in b] == [1, 1]




def test_epoch_indexed_sets_the_epoch_before_reading() -> None:
    class Items:
        def __init__(self) -> None:
            self.epochs: list[int] = []

        def __len__(self) -> int:
            return 3

        def set_epoch(self, e: int) -> None:
            self.epochs.append(e)

        def __getitem__(self, i: int) -> dict:
            return {"i": i, "epoch": self.epochs[-1]}

    ds = Items()
    view = EpochIndexed(ds)
    assert len(view) == 3
    assert [view[k]["epoch"] for k in [(0, 1), (0, 2), (1, 0), (1, 2)]] == [0, 0, 1, 1]
    assert ds.epochs == [0, 1]


def test_open_data_follows_the_models_declarations(tiles: Path, tmp_path: Path) -> None:
    p2p = open_data(opts(tiles, tmp_path / "r", direction="opt2sar"), get_model("pix2pix"))
    assert p2p.task is Task.TRANSLATOR and not p2p.segmenter and p2p.train.mode == "paired"
    assert (p2p.io.in_channels, p2p.io.out_channels, p2p.io.direction) == (3, 2, "opt2sar")
    assert p2p.io.in_norm["modality"] == "optical" and p2p.val is not None and len(p2p.val) == 2
    cyc = open_data(opts(tiles, tmp_path / "r"), get_model("cyclegan"))
    assert cyc.train.mode == "unpaired" and cyc.val.mode == "paired"
    with pytest.raises(InputError, match="--modality is for segmenters"):
        open_data(opts(tiles, tmp_path / "r", modality="sar"), get_model("pix2pix"))


def test_open_data_for_a_segmenter_reads_one_modality_and_labels(tmp_path: Path) -> None:
    root = make_tiles(tmp_path / "lt", labels=True)
    seg = get_model("segmenter")
    with pytest.raises(InputError, match="--modality sar or optical"):
        open_data(opts(root, tmp_path / "r", model="segmenter"), seg)
    data = open_data(opts(root, tmp_path / "r", model="segmenter", modality="sar"), seg)
    assert data.segmenter and data.io.direction == "sar" and data.io.num_classes == 2
    assert data.io.class_names == ("low", "high") and data.train.optical_index is None
    assert "labels" in data.train[0]
