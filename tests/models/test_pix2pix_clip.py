"""pix2pix-clip model (sarkit.models.pix2pix_clip) with a tiny open_clip encoder loaded from a file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sarkit.models.clip import CLIP_WEIGHTS_ENV
from sarkit.errors import WeightsNotFoundError
from sarkit.models import get_model
from sarkit.models.base import StepTools, parse_options
from clipfiles import make_tiny_clip
from test_pix2pix import fixed_batch, small_io


def build(tmp: Path):
    cfg, weights, _ = make_tiny_clip(tmp)
    cls = get_model("pix2pix-clip")
    torch.manual_seed(0)
    opts = parse_options(cls.Options, {"ngf": "8", "ndf": "8", "clip_model": str(cfg), "clip_weights": str(weights)})
    model = cls(small_io(), opts)
    model.configure_optimizers(1e-3, (0.5, 0.999))  # faster than the paper lr for a short test
    return model


def test_defaults_and_clip_not_trainable_state(tmp_path: Path) -> None:
    o = get_model("pix2pix-clip").Options()
    assert (o.lambda_clip, o.clip_model, o.clip_pretrained, o.lambda_l1) == (1.0, "ViT-B-32", "laion2b_s34b_b79k",
                                                                             100.0)
    model = build(tmp_path)
    assert set(model.nets) == {"G", "D"}
    assert not any(k.startswith("_clip") or "visual" in k for k in model.state_dict())


def test_few_steps_lower_l1_and_report_clip(tmp_path: Path) -> None:
    model = build(tmp_path)
    batch = fixed_batch()
    tools = StepTools(torch.device("cpu"))
    hist = [model.train_step(batch, tools) for _ in range(20)]
    l1 = [h["G_L1"] for h in hist]
    assert sum(l1[-3:]) / 3 < 0.8 * l1[0], l1
    assert all(0.0 <= h["G_CLIP"] <= 2.0 for h in hist)


def test_clip_gradient_reaches_generator_only(tmp_path: Path) -> None:
    model = build(tmp_path)
    batch = fixed_batch()
    fake = model.nets["G"](batch["sar"])
    (_, term), = model.generator_extra_loss(fake, batch["optical"], batch).values()
    term.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.nets["G"].parameters())
    enc = model._clip.enc.encode
    assert all(p.grad is None for p in enc.parameters())


def test_missing_clip_weights_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CLIP_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cls = get_model("pix2pix-clip")
    with pytest.raises(WeightsNotFoundError, match="--clip-weights.*SARKIT_CLIP_WEIGHTS"):
        cls(small_io(), parse_options(cls.Options, {"ngf": "8", "clip_pretrained": "laion2b_s34b_b79k"}))


def test_cli_trains_with_clip_weights_file_and_fails_cleanly_without(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from sarkit.cli import app
    from training.tilesets import make_tiles

    monkeypatch.delenv(CLIP_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiles = make_tiles(tmp_path / "tiles")
    cfg, weights, _ = make_tiny_clip(tmp_path)
    args = ["train", "--model", "pix2pix-clip", "--data", str(tiles), "--steps", "2", "--device", "cpu",
            "--quiet", "--model-opt", "ngf=8", "--model-opt", "ndf=8", "--lambda-clip", "0.5"]
    missing = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad")])
    assert missing.exit_code == 2 and "--clip-weights" in missing.output and CLIP_WEIGHTS_ENV in missing.output
    assert not (tmp_path / "bad").exists()
    ok = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run"), "--clip-model", str(cfg),
                                  "--clip-weights", str(weights)])
    assert ok.exit_code == 0, ok.output
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    assert conf["model_options"]["lambda_clip"] == 0.5 and conf["helpers"]["clip"]["weights"] == str(weights)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("G_CLIP" in x for x in lines if x["kind"] == "train") and len(lines) == 2  # train at the end + val
