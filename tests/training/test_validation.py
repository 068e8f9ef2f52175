"""Validation (sarkit.training.validation) uses the metrics core of ``sarkit eval``: same numbers, same nodata rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.eval import metrics as M
from sarkit.models.checkpoint import load_network
from sarkit.training import train
from sarkit.training.validation import translator_metrics
from tilesets import make_tiles, opts


def _masked_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model-range output and target (3, 3, 24, 24), target nodata as −1 with a mask; one tile all nodata."""
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(3, 3, 24, 24, generator=g) * 2 - 1
    out = (y + 0.2 * torch.randn(3, 3, 24, 24, generator=g)).clamp(-1, 1)
    valid = torch.ones(3, 24, 24, dtype=torch.bool)
    valid[0, :6, :10] = False
    valid[1, 20:, :] = False
    valid[2] = False
    y = torch.where(valid[:, None], y, torch.full_like(y, -1.0))
    return out, y, valid


def test_translator_metrics_are_the_eval_metrics_in_unit_range_with_nodata() -> None:
    out, y, valid = _masked_batch()
    got = translator_metrics(out, y, valid)
    p, t = (out + 1) / 2, (y + 1) / 2
    for name, fn in (("psnr", M.psnr), ("ssim", M.ssim), ("mae", M.mae)):
        want = fn(p, t, valid)
        assert torch.allclose(got[name][:2], want[:2], rtol=1e-5, atol=1e-6), name
        assert torch.isnan(got[name][2]) and torch.isnan(want[2])
    # the border and nodata rule: nodata under a window removes its centre, nodata values do not matter
    y2 = torch.where(valid[:, None], y, torch.full_like(y, 0.7))
    assert torch.allclose(translator_metrics(out, y2, valid)["ssim"][:2], got["ssim"][:2])
    assert not torch.allclose(translator_metrics(out, y2, None)["ssim"][:2], got["ssim"][:2])


def test_finite_mean_skips_tiles_without_a_value() -> None:
    assert M.finite_mean(torch.tensor([1.0, float("nan"), 3.0, float("inf")])) == 2.0
    assert M.finite_mean(torch.tensor([float("nan")])) != M.finite_mean(torch.tensor([float("nan")]))


def test_logged_validation_equals_the_eval_metrics_of_the_same_tiles(tmp_path: Path) -> None:
    root = make_tiles(tmp_path / "tiles", n_train=2, n_val=4, nodata=True)
    run = tmp_path / "run"
    res = train(opts(root, run, steps=2, val_every=2))
    val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in x]
    assert len(val) == 1 and {"psnr", "ssim", "mae"} <= set(val[0]) and val[0]["step"] == 2
    assert res.validation == {k: v for k, v in val[0].items() if k not in ("kind", "step", "time")}

    # the same tiles through the exported generator and sarkit.eval.metrics, tile by tile
    from sarkit.data.dataset import TileDataset

    ds = TileDataset(root, split="val", mode="paired", sar_bands=None, optical_bands=("B4", "B3", "B2"))
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([it["sar"] for it in items])
    y = torch.stack([it["optical"] for it in items])
    valid = torch.stack([it["valid"] for it in items])
    assert 0 < int((~valid).sum()) and bool(valid.any(dim=(1, 2)).all())  # nodata in some tiles, none empty
    gen = load_network(run, "generator")
    with torch.no_grad():
        pred = gen.module(x).float()
    p, t = M.unit_range(pred), M.unit_range(y)
    for name, fn in (("psnr", M.psnr), ("ssim", M.ssim), ("mae", M.mae)):
        assert val[0][name] == pytest.approx(float(fn(p, t, valid).mean()), rel=1e-5, abs=1e-6), name

    # and what `sarkit eval` reports for that split: the mean of its per-tile values
    r = CliRunner().invoke(app, ["eval", "--checkpoint", str(run), "--data", str(root), "--split", "val",
                                 "--metrics", "psnr,ssim,mae", "--device", "cpu", "--report",
                                 str(tmp_path / "report"), "--quiet"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "report" / "report.json").read_text())["summary"]
    for name in ("psnr", "ssim", "mae"):
        assert val[0][name] == pytest.approx(summary[name]["mean"], rel=1e-5, abs=1e-6), name
