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


@pytest.mark.parametrize("how, rel, says", [
    ("deleted", "s2/t001.tif", "is missing"),
    ("png", "s2/t002.tif", "is a PNG file, not a GeoTIFF"),
    ("truncated", "s1/t004.tif", "is not a readable GeoTIFF"),  # a val tile: validation reads it too
])
def test_damaged_tiles_are_named_before_the_run_dir_exists(tmp_path: Path, how: str, rel: str, says: str) -> None:
    from tilesets import base_args, cli, damage_tile

    root = make_tiles(tmp_path / "tiles")
    damage_tile(root, rel, how)
    r = cli(*base_args(root, tmp_path / "run"))
    assert r.exit_code == 2, r.output
    assert f"tile {rel} in {root}/manifest.csv {says}" in r.output and "re-run sarkit tile" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles"]


def test_tile_check_reads_headers_of_the_files_the_run_uses(tmp_path: Path) -> None:
    from sarkit.training.data import check_tile_files
    from sarkit.data.dataset import load_manifest

    root = make_tiles(tmp_path / "tiles", n_train=2, n_val=0, size=32)
    rows = load_manifest(root)
    check_tile_files(root, rows, {"s1_path": 2, "s2_path": 13}, 32)
    with pytest.raises(InputError, match=r"tile s1/t000.tif in .* is 32×32 pixels, the tiling's tiles are 64×64"):
        check_tile_files(root, rows, {"s1_path": 2}, 64)
    with pytest.raises(InputError, match=r"tile s2/t000.tif in .* has 13 bands, the tiling records 3"):
        check_tile_files(root, rows, {"s2_path": 3}, 32)
    with pytest.raises(InputError, match=r"tile labels_path of tile t000 in .* is not listed"):
        check_tile_files(root, rows, {"labels_path": None}, 32)
    (root / "s2" / "t001.tif").unlink()
    check_tile_files(root, rows, {"s1_path": 2}, 32)  # a SAR-only run does not read the optical tiles


@pytest.mark.parametrize("workers", [0, 1])
def test_a_tile_failing_while_training_is_named_and_nothing_is_left(tmp_path: Path, workers: int) -> None:
    from tilesets import base_args, cli, damage_tile

    root = make_tiles(tmp_path / "tiles", n_train=4, n_val=0)
    damage_tile(root, "s2/t002.tif", "truncated-data")  # opens (the header check passes); reading pixels fails
    r = cli(*base_args(root, tmp_path / "run", "--steps", "4", "--workers", str(workers)))
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: ") and "tiles/s2/t002.tif" in lines[-1], lines[-1]  # names the file
    assert "truncated or corrupt" in lines[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiles"]


def test_band_and_label_errors_name_the_command_line_options(tmp_path: Path) -> None:
    root = make_tiles(tmp_path / "tiles", n_train=2, n_val=0)
    with pytest.raises(InputError, match=r"tile set .*tiles \(optical\) has no band 'B99' \(bands: B1, .*\); "
                                         r"choose with --optical-bands$"):
        open_data(opts(root, tmp_path / "run", optical_bands=("B4", "B99")), get_model("pix2pix"))
    with pytest.raises(InputError, match=r"tile set .*tiles \(sar\) has 2 bands; band index 3 is out of range "
                                         r"\(--sar-bands takes names or 1-based indices\)"):
        open_data(opts(root, tmp_path / "run", sar_bands=("3",)), get_model("pix2pix"))
    with pytest.raises(InputError) as e:
        open_data(opts(root, tmp_path / "run", model="segmenter", modality="sar"), get_model("segmenter"))
    assert "--model segmenter trains on labels, but the tiles in" in str(e.value)
    assert "sarkit tile ... --labels LABELS.tif" in str(e.value) and "labels=" not in str(e.value)
