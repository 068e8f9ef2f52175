"""Feature-matching metrics (sarkit.eval.matching): SIFT keypoints, ratio-test matches, PMR, IR, IR-ED on generated
textures with known shifts, undefined tiles counted, and the metrics through sarkit eval's three modes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from scipy.ndimage import gaussian_filter

from sarkit.eval.matching import (ED_PX, MIN_RANSAC_MATCHES, PMR_DENOMINATOR, RATIO, MatchCounts, MatchingStream,
                                  SiftMatcher, detection_mask, to_gray8)
from sarkit.eval.options import EvalOptions, metric_set
from sarkit.eval.report import load_schema, metric_notes, render_html, render_markdown, to_json_value, validate
from sarkit.eval.runner import run_eval, run_eval_report
from sarkit.reporting import RecordingReporter


def texture(size: int = 300, seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """A blob texture in [0, 1] (blurred uniform noise, stretched once here, not by the metric)."""
    big = gaussian_filter(np.random.default_rng(seed).random((size, size)), sigma)
    return (big - big.min()) / (big.max() - big.min())


def crop(a: np.ndarray, dy: int, dx: int, n: int = 128, off: int = 20) -> np.ndarray:
    """The n×n window at (off + dy, off + dx): a copy shifted by (dy, dx) pixels against the window at (off, off)."""
    return a[off + dy: off + dy + n, off + dx: off + dx + n]


def test_identical_images_have_ir_ed_one_and_every_keypoint_matched():
    t = to_gray8(np.repeat(crop(texture(), 0, 0)[None], 3, 0))
    c = SiftMatcher()(t, t)
    assert c.keypoints == c.keypoints_target > 50
    assert c.pmr == pytest.approx(1.0, abs=0.02)
    assert c.ir_ed == pytest.approx(1.0, abs=0.01) and c.ir == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("dy,dx", [(6, 5), (0, 8), (-7, 3)])
def test_a_shifted_copy_has_ir_high_and_ir_ed_near_zero(dy, dx):
    tex = texture()
    t, p = to_gray8(crop(tex, 0, 0)[None]), to_gray8(crop(tex, dy, dx)[None])
    c = SiftMatcher()(p, t)
    assert math.hypot(dy, dx) > ED_PX
    assert c.putative > 50 and c.pmr > 0.5
    assert c.ir > 0.9  # a translation is a homography: RANSAC keeps nearly every match
    assert c.ir_ed < 0.05  # but the matched keypoints lie |shift| apart


def test_a_shift_below_the_distance_threshold_counts_as_correct():
    tex = texture()
    c = SiftMatcher()(to_gray8(crop(tex, 1, 1)[None]), to_gray8(crop(tex, 0, 0)[None]))
    assert c.ir_ed > 0.9


def test_unrelated_images_match_little_and_ransac_rejects_most():
    c = SiftMatcher()(to_gray8(crop(texture(seed=1), 0, 0)[None]), to_gray8(crop(texture(seed=2), 0, 0)[None]))
    assert c.pmr < 0.3 and (c.ir_ed or 0.0) < 0.1


def test_ratios_use_the_documented_counts():
    c = MatchCounts(keypoints=200, keypoints_target=100, putative=50, inliers=40, close=10)
    assert PMR_DENOMINATOR == "keypoints of the prediction" and RATIO == 0.75
    assert c.pmr == 50 / 200 and c.ir == 40 / 50 and c.ir_ed == 10 / 50


def test_undefined_values_by_count():
    assert MatchCounts(0, 100).pmr is None  # a blank prediction: no keypoint
    assert MatchCounts(10, 1).pmr is None  # the ratio test needs two target keypoints
    none = MatchCounts(10, 10, putative=0)
    assert none.pmr == 0.0 and none.ir is None and none.ir_ed is None
    few = MatchCounts(10, 10, putative=MIN_RANSAC_MATCHES - 1, close=2)
    assert few.ir is None and few.ir_ed == pytest.approx(2 / 3)


def test_results_are_reproducible_with_outliers():
    import cv2

    tex = texture()
    p = crop(tex, 0, 0).copy()
    p[:, 72:] = crop(tex, 10, 0)[:, 72:]  # the right part shifted: two motions, RANSAC has outliers to reject
    runs = []
    for seed in (1, 2, 3):
        cv2.setRNGSeed(seed)  # whatever state OpenCV's RNG is left in, each tile's RANSAC starts from its own seed
        runs.append(SiftMatcher()(to_gray8(p[None]), to_gray8(crop(tex, 0, 0)[None])))
    assert runs[0] == runs[1] == runs[2] and 0 < runs[0].inliers < runs[0].putative


def test_the_rendering_uses_the_fixed_range_not_a_stretch():
    dim = np.full((3, 8, 8), 0.2)
    dim[:, 0, 0] = 0.3
    g = to_gray8(dim)
    assert g[1, 1] == 51 and g[0, 0] == 77  # round(255·x): a dim image stays dim
    assert to_gray8(np.full((3, 2, 2), 1.5))[0, 0] == 255 and to_gray8(np.full((3, 2, 2), np.nan))[0, 0] == 0
    rgb = np.stack([np.full((2, 2), v) for v in (0.0, 0.25, 0.5)])
    assert to_gray8(rgb)[0, 0] == 64  # the mean of the three channels, 0.25 · 255 = 63.75


def test_no_keypoints_are_detected_next_to_nodata():
    tex = crop(texture(), 0, 0)
    valid = np.ones_like(tex, dtype=bool)
    valid[:, :40] = False
    mask = detection_mask(valid)
    assert detection_mask(np.ones_like(valid)) is None
    assert mask[:, :48].max() == 0 and mask[:, 49:].min() == 255
    g = to_gray8(np.where(valid, tex, np.nan)[None])
    kp = SiftMatcher().sift.detect(g, mask)
    assert kp and min(k.pt[0] for k in kp) > 47  # (sub-pixel refinement may move a keypoint by < 1 px)


def test_the_stream_counts_undefined_tiles_and_pools_the_counts():
    s = MatchingStream(("pmr", "ir", "ir_ed"))
    tiles = [{}, {}, {}, {}]
    for tile, c in zip(tiles, (MatchCounts(100, 100, 80, 70, 60), MatchCounts(0, 100), MatchCounts(50, 50, 0),
                               MatchCounts(20, 20, 3, 0, 3))):
        s.add(tile, c)
    assert tiles[1]["pmr"] is None and tiles[2]["pmr"] == 0.0 and tiles[3]["ir"] is None
    rec = s.record()
    assert (rec["tiles"], rec["too_few_keypoints"], rec["no_matches"], rec["too_few_matches"]) == (4, 1, 1, 1)
    summ = s.summary(tiles)
    assert summ["pmr"]["value"] == pytest.approx((80 + 0 + 3) / (100 + 50 + 20)) and summ["pmr"]["n"] == 3
    assert summ["ir"]["value"] == pytest.approx(70 / 80) and summ["ir"]["n"] == 1
    assert summ["ir_ed"]["value"] == pytest.approx((60 + 3) / (80 + 3)) and summ["ir_ed"]["n"] == 2
    rep = RecordingReporter()
    s.finish(rep)
    assert len(rep.warnings) == 3 and "1 of 4 tiles with too few SIFT keypoints" in rep.warnings[0]


# ----------------------------------------------------------------------------------------------- through sarkit eval

def _write(path: Path, a: np.ndarray, desc=("B4", "B3", "B2")) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[1], width=a.shape[2], count=a.shape[0],
                       dtype=a.dtype, nodata=0, crs="EPSG:32631", transform=from_origin(500000.0, 4000000.0, 10, 10)) as d:
        d.write(a)
        d.descriptions = tuple(desc)
    return path


def _dn(x01: np.ndarray) -> np.ndarray:
    """[0, 1] of the default optical range 0…0.3 reflectance → 3-band DN."""
    return np.repeat((x01 * 3000 + 1).astype("uint16")[None], 3, 0)


def _tile_sets(tmp: Path) -> tuple[Path, Path]:
    """Tiles: a0 identical, a1 shifted by (6, 5) px, a2 a blank prediction (no keypoints)."""
    for d in ("P", "T"):
        (tmp / d).mkdir()
    tex = texture()
    t = crop(tex, 0, 0)
    for name, p in (("a0", t), ("a1", crop(tex, 6, 5)), ("a2", np.full_like(t, 0.4))):
        _write(tmp / "T" / f"{name}.tif", _dn(t))
        _write(tmp / "P" / f"{name}.tif", _dn(p))
    return tmp / "P", tmp / "T"


def test_tile_sets_per_tile_values_summary_and_reports(tmp_path):
    pred, target = _tile_sets(tmp_path)
    rep = RecordingReporter()
    opts = EvalOptions(metrics=metric_set(("psnr", "pmr", "ir", "ir_ed")))
    res = run_eval_report(run_inputs(pred, target), opts, tmp_path / "out", reporter=rep)
    tiles = {t["id"]: t for t in res.report["tiles"]}
    assert tiles["a0"]["ir_ed"] == pytest.approx(1.0, abs=0.01)
    assert tiles["a1"]["ir"] > 0.9 and tiles["a1"]["ir_ed"] < 0.05
    assert tiles["a2"]["keypoints"] == 0 and tiles["a2"]["pmr"] is None and tiles["a2"]["ir_ed"] is None
    s = res.summary
    assert s["ir_ed"]["n"] == 2 and 0.3 < s["ir_ed"]["value"] < 0.7 and s["ir"]["value"] > 0.9
    m = res.report["matching"]
    assert m["too_few_keypoints"] == 1 and m["tiles"] == 3 and m["pmr_denominator"] == PMR_DENOMINATOR
    assert any("too few SIFT keypoints" in w for w in rep.warnings)
    rec = json.loads((tmp_path / "out" / "report.json").read_text())
    assert validate(rec, load_schema()) == [] and rec["metrics"] == ["psnr", "pmr", "ir", "ir_ed"]
    assert rec["bands"]["metrics"]["pmr"]["bands"] == ["B4", "B3", "B2"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "PMR ↑" in md and "IR-ED ↑" in md and "keypoints of the prediction" in md and "1 with too few" in md
    html = (tmp_path / "out" / "report.html").read_text()
    assert "keypoints of the prediction" in html and "IR-ED (n=2)" in html
    csv_head = (tmp_path / "out" / "tiles.csv").read_text().splitlines()[0]
    assert {"pmr", "ir", "ir_ed", "keypoints", "keypoints_target", "putative"} <= set(csv_head.split(","))


def run_inputs(pred: Path, target: Path):
    from sarkit.eval.options import EvalInputs

    return EvalInputs(pred=pred, target=target)


def test_scene_mode_windows_and_the_cli_summary(tmp_path):
    from typer.testing import CliRunner

    from sarkit.cli import app

    tex = texture(size=600, seed=3)
    t = _write(tmp_path / "t.tif", _dn(tex[:300, :300]))
    p = _write(tmp_path / "p.tif", _dn(tex[:300, :300]))
    res = run_eval(EvalOptions(metrics=("pmr", "ir_ed"), tile_size=150), pred=p, target=t)
    assert len(res.report["tiles"]) == 4 and res.summary["ir_ed"]["value"] == pytest.approx(1.0, abs=0.01)
    assert "ir" not in res.summary and "ir" not in res.report["tiles"][0]
    r = CliRunner().invoke(app, ["eval", "--pred", str(p), "--target", str(t), "--metrics", "pmr,ir,ir_ed"])
    assert r.exit_code == 0, r.output
    assert "IR-ED" in r.output and "PMR = putative matches / keypoints of the prediction" in r.output
    assert "0 with too few keypoints" in r.output


def test_model_mode_reports_the_matching_metrics(tmp_path):
    from sarkit.data.tiling import TileOptions, tile_scene
    from sarkit.models.checkpoint import save_network
    from sarkit.models.registry import Identity
    from sarkit.raster.norm import sar_normalization

    tex = texture(size=512, seed=4)
    vv = (tex * 25 - 25).astype("float32")
    s1 = _write(tmp_path / "s1.tif", np.stack([vv, vv]), desc=("VV", "VH"))
    s2 = _write(tmp_path / "s2.tif", (np.random.default_rng(0).random((13, 512, 512)) * 3000 + 1).astype("uint16"),
                desc=[f"B{i}" for i in range(13)])
    tile_scene(s1, s2, None, tmp_path / "tiles", TileOptions(split=(0.5, 0.0, 0.5)))
    norm = sar_normalization().to_dict()
    gen = save_network(tmp_path / "gen.safetensors", Identity(2), kind="generator", arch="identity",
                       arch_kwargs={"channels": 2},
                       meta={"model": "pix2pix", "direction": "identity", "in_norm": norm, "out_norm": norm,
                             "tile_size": 256, "run": "t"})
    res = run_eval(EvalOptions(metrics=("pmr", "ir", "ir_ed")), checkpoint=gen, data=tmp_path / "tiles")
    assert res.report["inputs"]["mode"] == "model" and res.report["matching"]["tiles"] == len(res.report["tiles"])
    assert res.summary["ir_ed"]["value"] == pytest.approx(1.0, abs=0.01)  # the identity generator: same image
    assert res.report["bands"]["metrics"]["ir"]["bands"] == ["VV", "VH", "(VV+VH)/2"]


def test_metric_notes_only_for_computed_metrics():
    assert metric_notes({"summary": {}}) == []
    assert render_markdown(to_json_value(_minimal_report())).count("Feature matching") == 0
    assert "matching-clip-iqa" not in render_html(to_json_value(_minimal_report()), [])


def _minimal_report() -> dict:
    return {"inputs": {"mode": "tiles"}, "normalization": {"space": "s", "source": "default",
            "pred": {"bands": ["B4"], "lo": [0], "hi": [0.3]}}, "pixels": {"valid": 1, "total": 1},
            "summary": {"psnr": {"value": 20.0}}, "per_class": [], "tiles": []}


def test_the_four_new_metrics_are_higher_is_better_with_labels_gates_and_comparisons(tmp_path):
    from sarkit.errors import InputError
    from sarkit.eval.compare import compare_table
    from sarkit.eval.gate import QualityGate
    from sarkit.eval.options import ALL_METRICS, HIGHER_IS_BETTER, LABELS

    new = ("pmr", "ir", "ir_ed", "clip_iqa")
    assert all(m in ALL_METRICS and HIGHER_IS_BETTER[m] for m in new)
    assert [LABELS[m] for m in new] == ["PMR", "IR", "IR-ED", "CLIP-IQA"]
    QualityGate(under={"pmr": 0.2, "ir": 0.5, "ir_ed": 0.1, "clip_iqa": 0.4})
    with pytest.raises(InputError, match="higher-is-better"):
        QualityGate(over={"ir_ed": 0.1})
    pred, target = _tile_sets(tmp_path)
    opts = EvalOptions(metrics=("pmr", "ir", "ir_ed"))
    run_eval_report(run_inputs(pred, target), opts, tmp_path / "good")
    (tmp_path / "P" / "a0.tif").unlink()  # without the identical tile the run matches worse
    run_eval_report(run_inputs(pred, target), opts, tmp_path / "worse")
    table = compare_table([tmp_path / "good", tmp_path / "worse"])
    assert [c.metric for c in table.columns] == ["pmr", "ir", "ir_ed"]
    assert all(c.higher and c.header.endswith("↑") for c in table.columns)
    assert [r.method for r in table.rows] == ["good", "worse"]
    ir_ed = [c.metric for c in table.columns].index("ir_ed")
    assert [ranks[ir_ed] for ranks in table.rank] == [1, 2]  # the run with the identical tile matches best


def test_real_sen12mscr_scene_against_itself_and_its_cloudy_twin(realdata):
    d = realdata / "sen12mscr_glfcr"
    f = "ROIs2017_winter_112_p797.tif"
    opts = EvalOptions(metrics=("pmr", "ir", "ir_ed"))
    same = run_eval(opts, pred=d / "s2_cloudfree" / f, target=d / "s2_cloudfree" / f)
    assert same.report["tiles"][0]["keypoints"] > 10 and same.summary["ir_ed"]["value"] == pytest.approx(1.0)
    cloudy = run_eval(opts, pred=d / "s2_cloudy" / f, target=d / "s2_cloudfree" / f)  # clouds saturate the range
    assert cloudy.report["matching"]["too_few_keypoints"] == 1 and cloudy.report["tiles"][0]["pmr"] is None
