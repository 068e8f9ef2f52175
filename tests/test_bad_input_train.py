"""Bad-input table of ``sarkit train``: each bad input exits 2 with one line (one JSON event) before training
starts, and leaves no run directory (nor lock) behind."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from badinput import BadInput, assert_refused
from training.tilesets import base_args, damage_tile, make_tiles


def tiles(tmp: Path, labels: bool = False) -> Path:
    """A tiny seeded tile set (4 train + 2 val tiles of 32² px) in ``tmp/tiles``."""
    return make_tiles(tmp / "tiles", labels=labels)


def run(tmp: Path) -> Path:
    """The run directory (in the watched folder)."""
    return tmp / "out" / "run"


def args(tmp: Path, *extra: str, data: Path | None = None, device: str = "cpu") -> list[str]:
    """``train`` arguments of a 2-step pix2pix run on the tile set, with ``extra`` options."""
    return ["train", *base_args(data if data is not None else tiles(tmp), run(tmp), *extra, device=device)]


def _damaged(how: str, rel: str):
    def build(tmp: Path) -> list[str]:
        root = tiles(tmp)
        damage_tile(root, rel, how)
        return args(tmp, data=root)
    return build


def _without(name: str):
    def build(tmp: Path) -> list[str]:
        root = tiles(tmp)
        (root / name).unlink()
        return args(tmp, data=root)
    return build


def _segmenter(tmp: Path, *modality: str) -> list[str]:
    return ["train", "--model", "segmenter", *modality, "--data", str(tiles(tmp)), "--out", str(run(tmp)),
            "--device", "cpu", "--steps", "1"]


def _run_with_checkpoint(tmp: Path) -> list[str]:
    (run(tmp) / "checkpoints").mkdir(parents=True)
    (run(tmp) / "config.json").write_text(json.dumps({"sarkit_version": "0", "model": "pix2pix"}))
    (run(tmp) / "checkpoints" / "generator.safetensors").write_bytes(b"weights")
    return args(tmp)


def _out_a_file(tmp: Path) -> list[str]:
    run(tmp).write_text("not a run")
    return args(tmp)


def _other_files(tmp: Path) -> list[str]:
    run(tmp).mkdir()
    (run(tmp) / "notes.txt").write_text("keep")
    return args(tmp, "--overwrite")


CASES = [
    BadInput("data missing", lambda t: args(t, data=t / "nope"), says=["tile directory not found"]),
    BadInput("data without tiling.json", _without("tiling.json"), says=["no tiling.json"]),
    BadInput("data without manifest", _without("manifest.csv"), says=["no manifest.csv"]),
    BadInput("tile deleted", _damaged("deleted", "s2/t001.tif"), says=["tile s2/t001.tif", "is missing"]),
    BadInput("tile is a png", _damaged("png", "s1/t000.tif"), says=["tile s1/t000.tif", "PNG file"]),
    BadInput("tile truncated", _damaged("truncated", "s2/t005.tif"), says=["tile s2/t005.tif", "not a readable"]),
    BadInput("unknown model", lambda t: [*args(t), "--model", "nope"], says=["unknown model 'nope'", "pix2pix"]),
    BadInput("unknown model option", lambda t: args(t, "--model-opt", "bogus=1"), says=["--model-opt bogus"]),
    BadInput("bad model option value", lambda t: args(t, "--model-opt", "ngf=wide"),
             says=["--model-opt ngf expects int"]),
    BadInput("model option without =", lambda t: args(t, "--model-opt", "ngf"), says=["--model-opt expects key=value"]),
    BadInput("option of another model", lambda t: args(t, "--lambda-clip", "1"),
             says=["--lambda-clip is not an option of --model pix2pix"]),
    BadInput("steps 0", lambda t: args(t, "--steps", "0"), says=["--steps must be ≥ 1"]),
    BadInput("steps and epochs", lambda t: args(t, "--epochs", "1"), says=["--steps or --epochs, not both"]),
    BadInput("batch size 0", lambda t: args(t, "--batch-size", "0"), says=["--batch-size must be ≥ 1"]),
    BadInput("lr 0", lambda t: args(t, "--lr", "0"), says=["--lr must be > 0"]),
    BadInput("direction", lambda t: args(t, "--direction", "sideways"), says=["--direction must be"]),
    BadInput("optical band B99", lambda t: args(t, "--optical-bands", "B4,B99"),
             says=["no band 'B99'", "--optical-bands"]),
    BadInput("sar band 3", lambda t: args(t, "--sar-bands", "3"), says=["band index 3", "--sar-bands"]),
    BadInput("segmenter on unlabelled tiles", lambda t: _segmenter(t, "--modality", "sar"),
             says=["trains on labels", "sarkit tile", "--labels"]),
    BadInput("segmenter without modality", _segmenter, says=["pass --modality sar or optical"]),
    BadInput("run with a checkpoint", _run_with_checkpoint, says=["--overwrite"]),
    BadInput("out is a file", _out_a_file, says=["is a file"]),
    BadInput("overwrite other files", _other_files, says=["not a sarkit run"]),
    BadInput("nothing to resume", lambda t: args(t, "--resume"), says=["nothing to resume"]),
    BadInput("resume and overwrite", lambda t: args(t, "--resume", "--overwrite"), says=["exclude each other"]),
    BadInput("bad device", lambda t: args(t, device="tpu"), says=["--device must be"]),
    BadInput("bad amp", lambda t: args(t, "--amp", "fp8"), says=["--amp must be one of"]),
    BadInput("fp16 on the cpu", lambda t: args(t, "--amp", "fp16"), says=["--amp fp16 needs a CUDA device"]),
]
if not torch.cuda.is_available():
    CASES.append(BadInput("cuda without a gpu", lambda t: args(t, device="cuda"), says=["CUDA is not available"]))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_train_refuses(case: BadInput, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    assert_refused(case.build(tmp_path), watch=tmp_path / "out", code=case.code, says=case.says)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_train_refuses_an_out_it_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """A read-only --out folder (simulated: the tests may run as root, who writes anywhere)."""
    import os

    from sarkit.training import loop

    def denied(path):
        raise OSError(code, os.strerror(code), f"{path}.lock")

    monkeypatch.setattr(loop, "output_lock", denied)
    (tmp_path / "out").mkdir()
    assert_refused(args(tmp_path), watch=tmp_path / "out", says=["cannot write the run directory", "--out"])
