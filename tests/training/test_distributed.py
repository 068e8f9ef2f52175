"""Distributed helpers (sarkit.training.distributed): one process is a no-op, two torchrun processes agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sarkit.training.distributed import DistInfo, all_ok, gather, init_distributed
from tilesets import SMALL, assert_same_weights, nets_of


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from pathlib import Path
        from sarkit.training import TrainOptions, train
        res = train(TrainOptions(model="pix2pix", data=Path({str(tiles)!r}), out=Path({str(out)!r}), steps=3,
                                 batch_size=1, device="cpu", val_every=2, save_every=0, log_every=1,
                                 model_options={SMALL!r}))
        torch.save(res.trained_model.nets.state_dict(), Path({str(tmp_path)!r}) / f"rank{{os.environ['RANK']}}.pt")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", str(script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert_same_weights(w0, w1)
    assert_same_weights(w0, nets_of(out))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["steps_per_epoch"] == 2
    assert (out / "checkpoints" / "generator.safetensors").is_file() and (out / "metrics.jsonl").is_file()
    assert len(torch.load(out / "checkpoints" / "state-latest.pt", weights_only=True)["ranks"]) == 2


def test_one_process_needs_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = init_distributed("cpu")
    assert d == DistInfo() and d.main and d.world == 1 and not d.owned
    assert gather(d, {"a": 1}) == [{"a": 1}]
    assert all_ok(d, True) and not all_ok(d, False)
    assert not DistInfo(rank=1, world=2).main
