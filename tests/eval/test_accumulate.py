"""Running sums (sarkit.eval.accumulate): the Accumulator against direct numpy, per-tile statistics, per-class
rows, LPIPS batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sarkit.eval.accumulate import (Accumulator, BlockSegmentation, LpipsStream, Segmenters, core_valid,
                                    tile_stats)
from sarkit.eval.options import HALO
from sarkit.eval.sources import Block
from sarkit.raster.grid import PixelWindow
from sarkit.reporting import RecordingReporter


def _block(seed: int, h: int = 24, w: int = 20, nan_cols: int = 0, labels: bool = False) -> Block:
    """A block with a HALO-px border around a core of (h, w); NaN in the first ``nan_cols`` columns of the
    prediction's core."""
    rng = np.random.default_rng(seed)
    shape = (3, h + 2 * HALO, w + 2 * HALO)
    t = rng.uniform(-1, 1, shape).astype(np.float32)
    p = np.clip(t + rng.normal(0, 0.2, shape), -1, 1).astype(np.float32)
    p[:, HALO:HALO + h, HALO:HALO + nan_cols] = np.nan
    lab = None
    if labels:
        lab = np.zeros(shape[1:], np.uint8)
        lab[shape[1] // 2:] = 1
    return Block(f"b{seed}", p, t, PixelWindow(HALO, HALO, h, w), lab, None, PixelWindow(0, 0, h, w))


def _core01(b: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rs, cs = b.core.slices()
    p, t = (b.pred[:, rs, cs] + 1) / 2, (b.target[:, rs, cs] + 1) / 2
    valid = np.isfinite(p).all(axis=0) & np.isfinite(t).all(axis=0)
    return p.astype(np.float64), t.astype(np.float64), valid


def test_accumulator_sums_are_the_pooled_pixel_errors():
    blocks = [_block(0, nan_cols=3), _block(1), _block(2, h=12, w=30)]
    acc = Accumulator(("psnr", "mae", "ssim"), None)
    for b in blocks:
        acc.add(b, None)
    se, ae, n = 0.0, 0.0, 0
    for b in blocks:
        p, t, v = _core01(b)
        se += ((p - t) ** 2).mean(axis=0)[v].sum()
        ae += np.abs(p - t).mean(axis=0)[v].sum()
        n += int(v.sum())
    assert acc.npx == n == 24 * 17 + 24 * 20 + 12 * 30
    assert acc.total_px == 24 * 20 + 24 * 20 + 12 * 30
    assert acc.sse == pytest.approx(se, rel=1e-5) and acc.sae == pytest.approx(ae, rel=1e-5)
    s = acc.summary(RecordingReporter())
    assert s["psnr"]["value"] == pytest.approx(10 * math.log10(n / se), rel=1e-5)
    assert s["mae"]["value"] == pytest.approx(ae / n, rel=1e-5)
    assert list(s) == ["psnr", "ssim", "mae"] and s["ssim"]["n"] == 3
    tile = acc.tiles[0]
    assert tile["id"] == "b0" and tile["valid_fraction"] == pytest.approx(17 / 20)
    assert (tile["row_off"], tile["col_off"], tile["height"], tile["width"]) == (0, 0, 24, 20)


def test_tile_stats_count_inf_and_skip_nan_and_none():
    st = tile_stats([1.0, 3.0, math.inf, float("nan"), None])
    assert st == {"n": 3, "n_inf": 1, "mean": 2.0, "std": 1.0, "median": 2.0, "min": 1.0, "max": 3.0}
    assert tile_stats([None, float("nan")]) == {"n": 0, "n_inf": 0, "mean": None, "std": None, "median": None,
                                                "min": None, "max": None}


def test_per_class_rows_are_the_errors_of_each_label():
    b = _block(4, labels=True)
    acc = Accumulator(("psnr", "mae"), 3)
    acc.add(b, None)
    rows = acc.per_class(["low", "high", "unused"], with_iou=False)
    assert [r["class"] for r in rows] == ["low", "high"]  # class 2 has no pixels
    p, t, v = _core01(b)
    rs, _ = b.core.slices()
    lab = b.labels[rs, HALO:-HALO]
    for row in rows:
        m = v & (lab == row["id"])
        assert row["pixels"] == int(m.sum())
        assert row["mae"] == pytest.approx(np.abs(p - t).mean(axis=0)[m].mean(), rel=1e-5)
    assert Accumulator(("psnr",), None).per_class(None, with_iou=False) == []


def test_segmentation_sums_give_pa_and_sms():
    b = _block(5, h=8, w=8)
    acc = Accumulator(("pa", "miou", "sms"), 2)
    ref = torch.zeros((1, 8, 8), dtype=torch.long)
    pred = ref.clone()
    pred[:, :2] = 1  # 16 of 64 pixels wrong
    seg = BlockSegmentation(core_valid(b), pred, ref, torch.full((1, 8, 8), 0.25))
    tile = acc.add(b, seg)
    assert tile["pa"] == pytest.approx(48 / 64) and tile["sms"] == pytest.approx(0.25)
    s = acc.summary(RecordingReporter())
    assert s["pa"]["value"] == pytest.approx(0.75) and s["sms"]["value"] == pytest.approx(0.25)
    assert 0.0 < s["miou"]["value"] < 1.0


def test_without_segmentation_networks_blocks_get_no_segmentation():
    b = _block(6)
    assert Segmenters().for_block(b, None, None) is None


class _MeanAbs:
    """A stand-in for the LPIPS network: mean |pred − target| over valid pixels, recording batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, p: torch.Tensor, t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        self.batches.append(p.shape[0])
        d = (p - t).abs().mean(dim=1) * valid
        return d.flatten(1).sum(dim=1) / valid.flatten(1).sum(dim=1)


def test_lpips_stream_batches_equal_sizes_and_weights_by_valid_pixels():
    net = _MeanAbs()
    stream = LpipsStream(net, batch_size=2)
    tiles = [{"id": str(i)} for i in range(4)]
    sizes = [(4, 4), (4, 4), (4, 4), (2, 8)]
    for tile, (h, w), val in zip(tiles, sizes, (0.1, 0.2, 0.3, 0.4)):
        valid = torch.ones((1, h, w), dtype=torch.bool)
        stream.add(tile, torch.full((1, 3, h, w), val), torch.zeros((1, 3, h, w)), valid)
    stream.finish(RecordingReporter())
    assert net.batches == [2, 1, 1]  # full batch, then a size change flushes the third tile alone
    assert [t["lpips"] for t in tiles] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert stream.value() == pytest.approx((0.1 + 0.2 + 0.3 + 0.4) * 16 / 64)
    assert stream.summary(tiles)["n"] == 4 and stream.summary(tiles)["mean"] == pytest.approx(0.25)


def test_lpips_stream_warns_about_undefined_tiles():
    stream = LpipsStream(lambda p, t, v: torch.full((p.shape[0],), float("nan")), batch_size=4)
    tile: dict = {"id": "x"}
    stream.add(tile, torch.zeros((1, 3, 4, 4)), torch.zeros((1, 3, 4, 4)), torch.ones((1, 4, 4), dtype=torch.bool))
    rep = RecordingReporter()
    stream.finish(rep)
    assert stream.undefined == 1 and math.isnan(stream.value())
    assert any("LPIPS undefined for 1 tiles" in w for w in rep.warnings)
