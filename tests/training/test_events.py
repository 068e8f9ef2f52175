"""TensorBoard event files of a run (sarkit.training.events): what metrics.jsonl holds, the sample grids, the
config, and a resume that drops what a killed process logged after its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sarkit.training import train
from sarkit.training.events import TrainEvents, scalar_tags
from tilesets import opts

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _lines(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_scalar_tags_of_a_metrics_line():
    assert scalar_tags({"kind": "train", "step": 3, "epoch": 1.5, "time": 9.0, "lr": 1e-4, "G_L1": 0.5}) == \
        {"train/lr": 1e-4, "train/G_L1": 0.5}
    assert scalar_tags({"kind": "val", "step": 3, "psnr": 20.0, "note": "x", "flag": True}) == {"val/psnr": 20.0}
    assert scalar_tags({"kind": "other", "step": 1, "a": 1.0}) == {}


def test_a_run_writes_losses_lr_validation_samples_and_config(tiles: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(opts(tiles, run, val_every=2, log_every=2))
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    acc = _events(run)
    tags = acc.Tags()
    assert {"train/G_L1", "train/G_GAN", "train/D_real", "train/D_fake", "train/lr", "val/psnr", "val/ssim",
            "val/mae"} <= set(tags["scalars"])
    for line in _lines(run, "train"):
        for k in ("G_L1", "lr"):
            ev = {e.step: e.value for e in acc.Scalars(f"train/{k}")}
            assert ev[line["step"]] == pytest.approx(line[k], rel=1e-6)
    val = _lines(run, "val")
    assert [e.step for e in acc.Scalars("val/psnr")] == [r["step"] for r in val] == [2, 4]
    assert [e.value for e in acc.Scalars("val/ssim")] == pytest.approx([r["ssim"] for r in val], rel=1e-6)
    images = acc.Images("val/samples")
    assert [i.step for i in images] == [2, 4]
    from PIL import Image

    png = np.asarray(Image.open(run / "samples" / "step-000004.png"))
    assert (images[-1].height, images[-1].width) == png.shape[:2]  # the same grid as samples/step-000004.png
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()  # add_text's storage
    assert json.loads(text.replace("\n    ", "\n"))["model"] == "pix2pix"


def test_resume_replaces_what_a_killed_process_logged_after_the_checkpoint(tiles: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(opts(tiles, run, steps=6, stop_at=3, log_every=1))
    # a killed process had logged step 4 after the checkpoint at 3: an event file of its own
    ghost = TrainEvents(run, enabled=True)
    ghost.record({"kind": "train", "step": 4, "G_L1": 123.0})
    ghost.close()
    train(opts(tiles, run, steps=6, log_every=1, resume=True))
    g_l1 = _events(run).Scalars("train/G_L1")
    assert [e.step for e in g_l1] == [1, 2, 3, 4, 5, 6]
    assert all(e.value < 100 for e in g_l1)
    assert [e.value for e in g_l1] == pytest.approx([r["G_L1"] for r in _lines(run, "train")], rel=1e-6)


def test_disabled_writer_writes_nothing(tmp_path: Path) -> None:
    ev = TrainEvents(tmp_path, enabled=False)
    ev.record({"kind": "train", "step": 1, "a": 1.0})
    ev.image("x", np.zeros((2, 2, 3), np.uint8), 1)
    ev.config({"a": 1}, 0)
    ev.close()
    assert not ev.enabled and list(tmp_path.iterdir()) == []
