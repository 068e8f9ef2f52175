"""sarkit train --data A --data B: several tile sets as one training set (options, config.json, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sarkit.errors import CheckpointError, InputError
from sarkit.models.registry import get_model
from sarkit.training import train
from sarkit.training.data import open_data
from sarkit.training.options import TrainOptions
from tilesets import base_args, cli, make_tiles, opts


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two small tile sets with the same tile ids (t000…), different pixels."""
    root = tmp_path_factory.mktemp("sets")
    return (make_tiles(root / "north", n_train=3, n_val=1, seed=1),
            make_tiles(root / "south", n_train=2, n_val=1, seed=2))


def test_train_options_take_several_folders_and_refuse_one_twice(two_sets, tmp_path):
    a, b = two_sets
    o = TrainOptions(model="pix2pix", data=[a, b], out=tmp_path / "run")
    assert o.data == a and o.more_data == (b,) and o.data_dirs == (a, b)
    assert TrainOptions(model="pix2pix", data=a, out=tmp_path / "run").data_dirs == (a,)
    with pytest.raises(InputError, match="--data .* is given twice"):
        TrainOptions(model="pix2pix", data=[a, b, a], out=tmp_path / "run")
    with pytest.raises(InputError, match="--data: give a tile directory"):
        TrainOptions(model="pix2pix", data=[], out=tmp_path / "run")


def test_open_data_concatenates_the_sets_with_each_sets_splits(two_sets, tmp_path):
    a, b = two_sets
    data = open_data(opts(a, tmp_path / "run", data=[a, b]), get_model("pix2pix"))
    assert len(data.train) == 5 and len(data.val) == 2
    assert data.train.ids[:1] == ["north/t000"] and data.train.ids[-1] == "south/t001"
    assert len(set(data.train.ids + data.val.ids)) == 7


@pytest.mark.slow
def test_config_records_every_folder_and_resume_needs_as_many(two_sets, tmp_path):
    a, b = two_sets
    run = tmp_path / "run"
    train(opts(a, run, data=[a, b], steps=2, save_every=2))
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["data"] == str(a.resolve())
    assert config["train"]["data_sets"] == [str(a.resolve()), str(b.resolve())]
    res = train(opts(a, run, data=[a, b], steps=4, save_every=2, resume=True))
    assert (res.start_step, res.steps) == (2, 4)
    with pytest.raises(CheckpointError, match="other settings .*--data"):
        train(opts(a, run, steps=6, resume=True))


def test_cli_takes_data_twice_and_a_mismatch_is_one_line_naming_both(two_sets, tmp_path):
    a, b = two_sets
    r = cli(*base_args(a, tmp_path / "run"), "--data", str(b))
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["data_count"] == 2
    odd = make_tiles(tmp_path / "odd", n_train=2, n_val=0, size=64)
    r = cli(*base_args(a, tmp_path / "run2"), "--data", str(odd))
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"--data {a} and --data {odd} differ in tile size (32 against 64)" in lines[0]


def test_val_ids_are_prefixed_even_when_one_set_has_no_val_split(two_sets, tmp_path):
    a, _ = two_sets
    no_val = make_tiles(tmp_path / "west", n_train=2, n_val=0, seed=3)
    data = open_data(opts(a, tmp_path / "run", data=[a, no_val]), get_model("pix2pix"))
    assert data.val.ids == ["north/t003"] and data.train.ids[-1] == "west/t001"
