"""Streaming evaluation (sarkit.eval.runner): scenes, tile sets and a generator on a split; bad inputs; the
evaluation job (run_eval_report: output check, lock, report files)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from skimage.metrics import structural_similarity
from torch import nn
from typer.testing import CliRunner

from sarkit.models.checkpoint import save_network
from sarkit.cli import app
from sarkit.errors import InputError
from sarkit.eval.options import EvalInputs, EvalOptions, metric_set
from sarkit.eval.pairs import partition
from sarkit.eval.runner import run_eval, run_eval_report, select_tiles
from sarkit.models.registry import NETWORKS, Identity, register_network
from sarkit.raster.norm import optical_normalization, sar_normalization
from sarkit.reporting import RecordingReporter

SK = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0)


class _Seg(nn.Module):
    def __init__(self, in_ch: int = 2, k: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, k, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0, 0], self.conv.weight[1, 0] = 10.0, -10.0

    def forward(self, x):
        return self.conv(x)


if "test-seg" not in NETWORKS:
    register_network("test-seg")(lambda in_ch=3, k=2: _Seg(in_ch, k))


def _segmenter(path: Path, modality: str, bands, k: int = 3) -> Path:
    norm = (optical_normalization(bands) if modality == "optical" else sar_normalization(bands)).to_dict()
    net = NETWORKS["test-seg"](in_ch=len(bands), k=k)
    return save_network(path, net, kind="segmenter", arch="test-seg", arch_kwargs={"in_ch": len(bands), "k": k},
                        meta={"model": "segmenter", "modality": modality, "norm": norm,
                              "classes": [f"c{i}" for i in range(k)], "tile_size": 64})


def _write(path: Path, a: np.ndarray, nodata=None, crs="EPSG:32631", origin=(500000.0, 4000000.0), desc=None):
    kw = {} if crs is None else {"crs": crs, "transform": from_origin(origin[0], origin[1], 10, 10)}
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[1], width=a.shape[2], count=a.shape[0],
                       dtype=a.dtype, nodata=nodata, **kw) as d:
        d.write(a)
        if desc:
            d.descriptions = tuple(desc)
    return path


def _optical_pair(tmp: Path, h=150, w=130, seed=0, noise=300.0):
    rng = np.random.default_rng(seed)
    t = (rng.random((3, h, w)) * 2500 + 1).astype("uint16")
    p = np.clip(t + rng.normal(0, noise, t.shape), 1, 60000).astype("uint16")
    return _write(tmp / "p.tif", p, 0, desc=("B4", "B3", "B2")), _write(tmp / "t.tif", t, 0,
                                                                        desc=("B4", "B3", "B2")), p, t


def _norm01(dn: np.ndarray) -> np.ndarray:
    return np.clip(dn / 10000.0, 0, 0.3) / 0.3


def test_partition_covers_every_pixel_once():
    wins = partition(150, 130, 64)
    cover = np.zeros((150, 130), int)
    for w in wins:
        cover[w.slices()] += 1
    assert (cover == 1).all() and len(wins) == 9


@pytest.mark.parametrize("tile", [64, 256])
def test_scene_metrics_equal_whole_image_metrics(tmp_path, tile):
    """Streaming in windows (with a halo) gives the whole-image PSNR, MAE and skimage SSIM."""
    pp, tp, p, t = _optical_pair(tmp_path)
    res = run_eval(EvalOptions(tile_size=tile), pred=pp, target=tp)
    s = res.report["summary"]
    a, b = _norm01(p.astype(np.float64)), _norm01(t.astype(np.float64))
    assert s["psnr"]["value"] == pytest.approx(10 * np.log10(1 / ((a - b) ** 2).mean()), abs=1e-4)
    assert s["mae"]["value"] == pytest.approx(np.abs(a - b).mean(), abs=1e-6)
    assert s["ssim"]["value"] == pytest.approx(structural_similarity(b, a, **SK), abs=1e-4)
    assert len(res.report["tiles"]) == len(partition(150, 130, tile))
    assert res.report["normalization"]["pred"]["bands"] == ["B4", "B3", "B2"]


def test_scene_nodata_is_excluded(tmp_path):
    pp, tp, p, t = _optical_pair(tmp_path)
    t2 = t.copy()
    t2[:, :, :40] = 0  # target nodata on the left
    _write(tp, t2, 0, desc=("B4", "B3", "B2"))
    res = run_eval(EvalOptions(tile_size=64), pred=pp, target=tp)
    a, b = _norm01(p[:, :, 40:].astype(np.float64)), _norm01(t[:, :, 40:].astype(np.float64))
    s = res.report["summary"]
    assert s["psnr"]["value"] == pytest.approx(10 * np.log10(1 / ((a - b) ** 2).mean()), abs=1e-4)
    assert s["mae"]["value"] == pytest.approx(np.abs(a - b).mean(), abs=1e-6)
    assert s["ssim"]["value"] == pytest.approx(structural_similarity(b, a, **SK), abs=1e-4)
    assert res.report["pixels"] == {"valid": 150 * 90, "total": 150 * 130}


def test_identical_scenes_report_infinite_psnr(tmp_path):
    _, tp, _, _ = _optical_pair(tmp_path)
    res = run_eval(EvalOptions(), pred=tp, target=tp)
    assert res.report["summary"]["psnr"]["value"] == math.inf
    assert res.report["summary"]["psnr"]["n_inf"] == 1
    assert res.report["summary"]["ssim"]["value"] == pytest.approx(1.0)


def test_slightly_different_transform_is_tolerated_and_shifted_grid_is_reprojected(tmp_path):
    _, tp, p, _ = _optical_pair(tmp_path)
    _write(tmp_path / "same.tif", p, 0, origin=(500000.0 + 1e-9, 4000000.0))
    rep = RecordingReporter()
    run_eval(EvalOptions(), rep, pred=tmp_path / "same.tif", target=tp)
    assert not rep.warnings
    _write(tmp_path / "shift.tif", p, 0, origin=(500010.0, 4000000.0))
    res = run_eval(EvalOptions(), rep, pred=tmp_path / "shift.tif", target=tp)
    assert any("reprojecting" in w for w in rep.warnings)
    assert res.report["pixels"]["valid"] == 150 * 129  # the first column has no prediction after the shift


@pytest.mark.parametrize("case,match", [
    ("far", "does not overlap"), ("bands", "band counts"), ("nocrs", "have no CRS"), ("allnodata", "no valid pixels"),
    ("modality", "compare like with like"),
])
def test_bad_scene_pairs(tmp_path, case, match):
    _, tp, p, t = _optical_pair(tmp_path)
    if case == "far":
        pred = _write(tmp_path / "x.tif", p, 0, origin=(900000.0, 4000000.0))
    elif case == "bands":
        pred = _write(tmp_path / "x.tif", p[:2], 0)
    elif case == "nocrs":
        _write(tmp_path / "t0.tif", t, 0, crs=None)
        tp = tmp_path / "t0.tif"
        pred = _write(tmp_path / "x.tif", p[:, :100], 0, crs=None)
    elif case == "allnodata":
        pred = _write(tmp_path / "x.tif", np.zeros_like(p), 0)
    else:
        pred = _write(tmp_path / "x.tif", p.astype("float32"), None)
    with pytest.raises(InputError, match=match):
        run_eval(EvalOptions(), pred=pred, target=tp)


def _sar_pair(tmp: Path, nodata=None):
    rng = np.random.default_rng(3)
    t = (rng.random((2, 80, 80)) * -20).astype("float32")
    p = (t + rng.normal(0, 1, t.shape)).astype("float32")
    p[:, 10:13, 10:20] = np.nan  # 30 NaN pixels
    return _write(tmp / "p.tif", p, nodata), _write(tmp / "t.tif", t, float("nan"))


def test_nan_in_prediction_where_target_valid_is_bad_input(tmp_path):
    pp, tp = _sar_pair(tmp_path, nodata=-9999.0)
    with pytest.raises(InputError, match="30 NaN"):
        run_eval(EvalOptions(), pred=pp, target=tp)


def test_nan_declared_as_nodata_is_excluded(tmp_path):
    pp, tp = _sar_pair(tmp_path, nodata=float("nan"))
    res = run_eval(EvalOptions(s1_range=(-30.0, 5.0)), pred=pp, target=tp)
    assert res.report["pixels"]["valid"] == 80 * 80 - 30
    assert res.report["normalization"]["pred"]["lo"] == [-30.0, -30.0]
    assert res.report["normalization"]["source"] == "cli"


def test_labels_give_per_class_metrics(tmp_path):
    pp, tp, p, t = _optical_pair(tmp_path)
    lab = np.zeros((1, 150, 130), np.uint8)
    lab[:, 75:] = 1
    lab[:, :, :10] = 255
    _write(tmp_path / "l.tif", lab, 255)
    res = run_eval(EvalOptions(tile_size=64), pred=pp, target=tp, labels=tmp_path / "l.tif")
    rows = {r["id"]: r for r in res.report["per_class"]}
    assert set(rows) == {0, 1} and rows[0]["pixels"] == 75 * 120 and rows[1]["pixels"] == 75 * 120
    a, b = _norm01(p.astype(np.float64)), _norm01(t.astype(np.float64))
    assert rows[1]["mae"] == pytest.approx(np.abs(a - b)[:, 75:, 10:].mean(), abs=1e-6)


def test_segmentation_metrics_with_labels_and_without(tmp_path):
    pp, tp, p, t = _optical_pair(tmp_path, h=64, w=64)
    seg = _segmenter(tmp_path / "seg.safetensors", "optical", ("B4", "B3", "B2"))
    opts = EvalOptions(metrics=metric_set(("psnr", "pa", "sms")), segmenter=seg)
    # without labels the reference is the segmenter's output on the target; identical images → PA 1, SMS 0
    same = run_eval(opts, pred=tp, target=tp)
    assert same.report["segmentation"]["reference"] == "segmenter(target)"
    assert same.report["summary"]["pa"]["value"] == 1.0 and same.report["summary"]["miou"]["value"] == 1.0
    assert same.report["summary"]["sms"]["value"] == pytest.approx(0.0, abs=1e-7)
    # labels: the segmenter says class 0 where B4 is above mid-range (reflectance 0.15), else class 1
    lab = np.ones((1, 64, 64), np.uint8)
    _write(tmp_path / "l.tif", lab, 255)
    res = run_eval(opts, pred=pp, target=tp, labels=tmp_path / "l.tif")
    expected = float((_norm01(p[0].astype(np.float64)) <= 0.5).mean())
    assert res.report["segmentation"]["reference"] == "labels"
    assert res.report["summary"]["pa"]["value"] == pytest.approx(expected, abs=1e-3)
    assert res.report["summary"]["sms"]["value"] > 0


def test_segmenter_modality_must_match_and_is_required(tmp_path):
    pp, tp, _, _ = _optical_pair(tmp_path, h=32, w=32)
    seg = _segmenter(tmp_path / "seg.safetensors", "sar", ("VV", "VH"))
    with pytest.raises(InputError, match="segmenter is for sar"):
        run_eval(EvalOptions(metrics=("pa",), segmenter=seg), pred=pp, target=tp)
    with pytest.raises(InputError, match="--segmenter"):
        run_eval(EvalOptions(metrics=("sms",)), pred=pp, target=tp)


def test_tile_sets_are_matched_by_id(tmp_path):
    for d in ("P", "T"):
        (tmp_path / d).mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        t = (rng.random((3, 32, 32)) * 2000 + 1).astype("uint16")
        _write(tmp_path / "T" / f"tile{i}.tif", t, 0)
        _write(tmp_path / "P" / f"tile{i}.tif", t if i == 0 else (t // 2 + 1).astype("uint16"), 0)
    _write(tmp_path / "T" / "extra.tif", t, 0)
    rep = RecordingReporter()
    res = run_eval(EvalOptions(), rep, pred=tmp_path / "P", target=tmp_path / "T")
    tiles = {x["id"]: x for x in res.report["tiles"]}
    assert set(tiles) == {"tile0", "tile1", "tile2"}
    assert tiles["tile0"]["psnr"] == math.inf and tiles["tile1"]["psnr"] < 30
    assert any("no partner" in w for w in rep.warnings)
    with pytest.raises(InputError, match="no tile ids in common"):
        (tmp_path / "Q").mkdir()
        _write(tmp_path / "Q" / "other.tif", t, 0)
        run_eval(EvalOptions(), pred=tmp_path / "Q", target=tmp_path / "T")


def test_best_median_worst_selection():
    tiles = [{"id": str(i), "psnr": float(i)} for i in range(10)] + [{"id": "inf", "psnr": math.inf},
                                                                     {"id": "nan", "psnr": float("nan")}]
    sel = select_tiles(tiles, 2)
    groups = {g: [t["id"] for gg, t in sel if gg == g] for g in ("best", "median", "worst")}
    assert groups["best"] == ["inf", "9"] and groups["worst"] == ["1", "0"] and groups["median"] == ["5", "4"]


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("n", range(1, 11))
def test_best_median_worst_are_disjoint_and_truthful_for_any_count(n, k):
    """With 4 tiles the grid once showed three "best" and the worst as "median", with no "worst"."""
    tiles = [{"id": f"t{i}", "psnr": 10.0 + i} for i in range(n)]  # t{n-1} is the best, t0 the worst
    sel = select_tiles(tiles[::-1] if n % 2 else tiles, k)  # the input order does not matter
    rank = {f"t{i}": n - 1 - i for i in range(n)}  # 0 = best
    groups = {g: [rank[t["id"]] for gg, t in sel if gg == g] for g in ("only", "best", "median", "worst")}
    ids = [t["id"] for _, t in sel]
    assert len(ids) == len(set(ids))  # disjoint
    if n == 1:
        assert groups == {"only": [0], "best": [], "median": [], "worst": []}
        return
    assert not groups["only"]
    assert groups["best"] == list(range(len(groups["best"])))  # the top tiles, best first
    assert groups["worst"] == list(range(n - len(groups["worst"]), n))  # the bottom tiles, the worst last
    assert 1 <= len(groups["best"]) == len(groups["worst"]) <= k
    assert len(groups["median"]) <= k and (n < 3 or groups["median"])
    if groups["median"]:
        assert max(groups["best"]) < min(groups["median"]) <= max(groups["median"]) < min(groups["worst"])
        assert (n - 1) // 2 in groups["median"] or n // 2 in groups["median"]  # a true median tile is shown
    if n >= 3 * k:
        assert [len(groups[g]) for g in ("best", "median", "worst")] == [k, k, k]


def test_tiles_are_ranked_by_ssim_or_mae_without_psnr():
    from sarkit.eval.runner import rank_metric

    tiles = [{"id": str(i), "mae": float(i)} for i in range(6)]
    assert rank_metric(tiles) == "mae"
    sel = select_tiles(tiles, 1, "mae")
    assert [(g, t["id"]) for g, t in sel] == [("best", "0"), ("median", "3"), ("worst", "5")]


@pytest.fixture()
def tile_dir(tmp_path):
    from sarkit.data.tiling import TileOptions, tile_scene

    rng = np.random.default_rng(0)
    s1 = _write(tmp_path / "s1.tif", (rng.random((2, 512, 256)) * -20).astype("float32"), float("nan"),
                desc=("VV", "VH"))
    s2 = _write(tmp_path / "s2.tif", (rng.random((13, 512, 256)) * 3000 + 1).astype("uint16"), 0)
    lab = _write(tmp_path / "lab.tif", rng.integers(0, 3, (1, 512, 256)).astype("uint8"), 255)
    tile_scene(s1, s2, lab, tmp_path / "tiles", TileOptions(split=(0.5, 0.0, 0.5)))
    return tmp_path / "tiles"


def test_model_on_split(tmp_path, tile_dir):
    from sarkit.data.dataset import load_manifest

    norm = sar_normalization().to_dict()
    gen = save_network(tmp_path / "gen.safetensors", Identity(2), kind="generator", arch="identity",
                       arch_kwargs={"channels": 2},
                       meta={"model": "pix2pix", "direction": "identity", "in_norm": norm, "out_norm": norm,
                             "tile_size": 256, "run": "t"})
    seg = _segmenter(tmp_path / "seg.safetensors", "sar", ("VV", "VH"))
    opts = EvalOptions(metrics=metric_set(("psnr", "ssim", "mae", "pa", "sms")), segmenter=seg, batch_size=2)
    res = run_eval(opts, checkpoint=gen, data=tile_dir, split="test")
    r = res.report
    n_test = len(load_manifest(tile_dir, "test"))
    assert r["inputs"]["mode"] == "model" and len(r["tiles"]) == n_test
    assert r["inputs"]["model"] == "pix2pix"  # eval --compare pairs the two directions of a model by this name
    assert r["summary"]["psnr"]["value"] == math.inf and r["summary"]["mae"]["value"] == 0.0
    assert r["segmentation"]["reference"] == "labels" and 0.0 <= r["summary"]["pa"]["value"] <= 1.0
    assert r["summary"]["sms"]["value"] == pytest.approx(0.0, abs=1e-7)
    assert all(t["input"] is not None for t in res.thumbnails)


def test_cli_bad_inputs_exit_2_and_write_nothing(tmp_path):
    pp, tp, _, _ = _optical_pair(tmp_path, h=32, w=32)
    runner = CliRunner()
    out = tmp_path / "rep"
    cases = [
        ["--pred", str(tmp_path / "missing.tif"), "--target", str(tp)],
        ["--pred", str(pp), "--target", str(tp), "--metrics", "psnr,pa"],
        ["--pred", str(pp), "--target", str(tp), "--metrics", "bogus"],
        ["--pred", str(pp), "--target", str(tmp_path)],
        ["--pred", str(pp), "--target", str(tp), "--metrics", "lpips", "--lpips-weights", str(tmp_path / "no.pth")],
        ["--pred", str(pp), "--target", str(tp), "--fail-under", "mae=0.1"],
        [],
    ]
    for args in cases:
        r = runner.invoke(app, ["eval", *args, "--report", str(out)])
        assert r.exit_code == 2, (args, r.output)
        assert not out.exists()
    r = runner.invoke(app, ["eval", "--pred", str(pp), "--target", str(tp), "--report", str(out), "-q"])
    assert r.exit_code == 0 and json.loads((out / "report.json").read_text())["schema"] == "sarkit.eval/1.4"


@pytest.mark.slow
def test_real_sen1floods11_scene_with_labels(tmp_path, realdata):
    """Sen1Floods11 S2 vs a noisy copy, with the hand labels (pixel size differs by 3e-19°: tolerated)."""
    root = realdata / "sen1floods11"
    s2 = next((root / "S2Hand").glob("*.tif"))
    labels = next((root / "LabelHand").glob("*.tif"))
    with rasterio.open(s2) as src:
        prof, dn = src.profile, src.read()
        names = src.descriptions
    rng = np.random.default_rng(0)
    noisy = np.clip(dn + rng.normal(0, 150, dn.shape), 1, 20000).astype(dn.dtype)
    noisy[dn == 0] = 0
    with rasterio.open(tmp_path / "pred.tif", "w", **prof) as dst:
        dst.write(noisy)
        dst.descriptions = names
    rep = RecordingReporter()
    res = run_eval(EvalOptions(), rep, pred=tmp_path / "pred.tif", target=s2, labels=labels)
    assert not rep.warnings  # same grid within tolerance: no reprojection
    assert res.report["normalization"]["pred"]["bands"][:2] == ["B1", "B2"]
    valid = (dn != 0).all(axis=0) & (noisy != 0).all(axis=0)
    a = np.clip(noisy / 10000.0, 0, 0.3)[:, valid] / 0.3
    b = np.clip(dn / 10000.0, 0, 0.3)[:, valid] / 0.3
    assert res.report["summary"]["mae"]["value"] == pytest.approx(np.abs(a - b).mean(), abs=1e-6)
    assert res.report["summary"]["psnr"]["value"] == pytest.approx(10 * np.log10(1 / ((a - b) ** 2).mean()), abs=1e-4)
    assert {r["id"] for r in res.report["per_class"]} <= {0, 1} and res.report["per_class"]
    assert {(r["id"], r["class"]) for r in res.report["per_class"]} <= {(0, "not water"), (1, "water")}


def test_cli_segmenter_adds_segmentation_metrics_and_checkpoint_needs_data(tmp_path):
    pp, tp, _, _ = _optical_pair(tmp_path, h=48, w=48)
    seg = _segmenter(tmp_path / "seg.safetensors", "optical", ("B4", "B3", "B2"))
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "--pred", str(pp), "--target", str(tp), "--segmenter", str(seg),
                            "--report", str(tmp_path / "rep"), "-q"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert {"psnr", "ssim", "mae", "pa", "miou", "sms"} == set(rec["summary"]) - {"gain_psnr", "gain_ssim",
                                                                                  "gain_mae"}
    assert rec["segmentation"]["reference"] == "segmenter(target)"
    r = runner.invoke(app, ["eval", "--checkpoint", str(seg)])
    assert r.exit_code == 2 and "--data" in r.output


def test_rgb8_prediction_is_refused_not_read_as_reflectance(tmp_path):
    _, tp, p, _ = _optical_pair(tmp_path)
    pred = _write(tmp_path / "rgb8.tif", (p // 40).astype("uint8"), 0, desc=("B4", "B3", "B2"))
    with pytest.raises(InputError, match="--format native"):
        run_eval(EvalOptions(), pred=pred, target=tp)


def _tagged(path: Path, offset: str) -> Path:
    with rasterio.open(path, "r+") as d:
        d.update_tags(dn_offset=offset)
    return path


def test_baseline_offset_dn_are_read_back_by_tag_or_flag(tmp_path):
    """Baseline-04.00 DN (+1000) give the metrics of the plain DN when their offset is known: from sarkit's
    ``dn_offset`` tag or from ``--s2-offset``; read as plain DN they do not (0.3 clips the shifted values)."""
    pp, tp, p, t = _optical_pair(tmp_path)
    ref = run_eval(EvalOptions(tile_size=64), pred=pp, target=tp).report["summary"]
    d = tmp_path / "b04"
    d.mkdir()
    pp4 = _write(d / "p.tif", p + 1000, 0, desc=("B4", "B3", "B2"))
    tp4 = _write(d / "t.tif", t + 1000, 0, desc=("B4", "B3", "B2"))

    def summary(pred, target, **kw):
        res = run_eval(EvalOptions(tile_size=64, **kw), pred=pred, target=target)
        return res.report["summary"], res.report["inputs"]["dn_offset"]

    def same(a, b):
        return all(a[k]["value"] == pytest.approx(b[k]["value"], abs=1e-6) for k in ("psnr", "ssim", "mae"))

    shifted, offs = summary(pp4, tp4)
    assert offs == {"pred": 0.0, "target": 0.0} and not same(shifted, ref)
    flagged, offs = summary(pp4, tp4, s2_offset=True)
    assert offs == {"pred": -1000.0, "target": -1000.0} and same(flagged, ref)
    # a translation tagged -1000 against a plain (pre-04.00) target, no flag
    mixed, offs = summary(_tagged(pp4, "-1000"), tp)
    assert offs == {"pred": -1000.0, "target": 0.0} and same(mixed, ref)
    # a tag wins over the flag: a tile tagged 0 is read as plain DN even with --s2-offset
    tagged0, offs = summary(_tagged(pp, "0"), tp4, s2_offset=True)
    assert offs == {"pred": 0.0, "target": -1000.0} and same(tagged0, ref)


def test_baseline_offset_in_tile_sets_and_cli(tmp_path):
    pp, tp, p, t = _optical_pair(tmp_path)
    ref = run_eval(EvalOptions(tile_size=64), pred=pp, target=tp).report["summary"]
    for sub, arr in (("pred", p), ("target", t)):
        (tmp_path / sub).mkdir()
        _write(tmp_path / sub / "a.tif", arr + 1000, 0, desc=("B4", "B3", "B2"))
    res = run_eval(EvalOptions(tile_size=64, s2_offset=True), pred=tmp_path / "pred", target=tmp_path / "target")
    assert res.report["summary"]["mae"]["value"] == pytest.approx(ref["mae"]["value"], abs=1e-6)
    r = CliRunner().invoke(app, ["eval", "--pred", str(tmp_path / "pred"), "--target", str(tmp_path / "target"),
                                 "--s2-offset", "--report", str(tmp_path / "rep"), "-q"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rec["inputs"]["dn_offset"] == {"pred": -1000.0, "target": -1000.0}
    assert rec["normalization"]["target"]["offset"] == -1000.0
    assert rec["summary"]["psnr"]["value"] == pytest.approx(ref["psnr"]["value"], abs=1e-4)


def test_unreadable_dn_offset_tag_is_bad_input(tmp_path):
    pp, tp, _, _ = _optical_pair(tmp_path)
    _tagged(tp, "lots")
    with pytest.raises(InputError, match="target .*unreadable dn_offset tag 'lots'"):
        run_eval(EvalOptions(), pred=pp, target=tp)


def test_run_eval_takes_inputs_or_the_file_keywords(tmp_path):
    pp, tp, _, _ = _optical_pair(tmp_path, h=32, w=32)
    by_inputs = run_eval(EvalOptions(), inputs=EvalInputs(pred=pp, target=tp)).report["summary"]
    by_keywords = run_eval(EvalOptions(), pred=pp, target=tp).report["summary"]
    assert by_inputs["psnr"]["value"] == by_keywords["psnr"]["value"]
    with pytest.raises(TypeError, match="not both"):
        run_eval(EvalOptions(), inputs=EvalInputs(pred=pp, target=tp), labels=pp)


def test_run_eval_report_writes_the_report_or_nothing(tmp_path, monkeypatch):
    import sarkit.eval.runner as runner_mod

    pp, tp, _, _ = _optical_pair(tmp_path, h=32, w=32)
    inputs, out = EvalInputs(pred=pp, target=tp), tmp_path / "rep"
    res = run_eval_report(inputs, EvalOptions(), out)
    assert sorted(p.name for p in out.iterdir()) == ["baselines.csv", "report.html", "report.json", "report.md",
                                                   "tiles.csv"]
    assert json.loads((out / "report.json").read_text())["summary"]["psnr"]["value"] == pytest.approx(
        res.summary["psnr"]["value"])
    assert not (tmp_path / "rep.lock").exists()  # released after writing
    calls = []
    monkeypatch.setattr(runner_mod, "run_eval", lambda *a, **k: calls.append(a))
    with pytest.raises(InputError, match="exists"):  # an existing report is refused before any work
        run_eval_report(inputs, EvalOptions(), out)
    assert calls == []
    monkeypatch.undo()
    run_eval_report(inputs, EvalOptions(metrics=("mae",)), out, overwrite=True)
    assert list(json.loads((out / "report.json").read_text())["summary"]) == ["mae", "gain_mae"]
    res = run_eval_report(inputs, EvalOptions(), None)  # no report directory: the result only
    assert res.report["inputs"]["mode"] == "scenes" and not (tmp_path / "None").exists()


def test_run_eval_report_holds_the_lock_while_working(tmp_path, monkeypatch):
    import sarkit.eval.runner as runner_mod

    pp, tp, _, _ = _optical_pair(tmp_path, h=32, w=32)
    seen = []

    def spy(opts, reporter, inputs):
        seen.append((tmp_path / "rep.lock").exists())
        raise InputError("stop here")

    monkeypatch.setattr(runner_mod, "run_eval", spy)
    with pytest.raises(InputError, match="stop here"):
        run_eval_report(EvalInputs(pred=pp, target=tp), EvalOptions(), tmp_path / "rep")
    assert seen == [True] and not (tmp_path / "rep").exists() and not (tmp_path / "rep.lock").exists()
