"""Prediction/target pairs (sarkit.eval.pairs, through the scene and tile-set sources): georeferencing, labels,
--bands, class names, the translated input scene, and the bands every metric used."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from sarkit.errors import InputError
from sarkit.eval.options import EvalOptions
from sarkit.eval.report import band_lines, render_html, to_json_value
from sarkit.eval.runner import run_eval
from sarkit.reporting import RecordingReporter


def _write(path: Path, a: np.ndarray, nodata=None, crs: str | None = "EPSG:32631", desc=None, tags=None) -> Path:
    """A GeoTIFF of ``a`` (C, H, W); without ``crs`` it has no georeferencing at all."""
    kw = {} if crs is None else {"crs": crs, "transform": from_origin(500000.0, 4000000.0, 10, 10)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", height=a.shape[1], width=a.shape[2], count=a.shape[0],
                           dtype=a.dtype, nodata=nodata, **kw) as d:
            d.write(a)
            if desc:
                d.descriptions = tuple(desc)
            if tags:
                d.update_tags(**tags)
    return path


def _dn(shape, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 2500 + 1).astype("uint16")


RGB = ("B4", "B3", "B2")


@pytest.mark.parametrize("missing", ["pred", "target", "both"])
def test_a_raster_without_crs_is_refused_unless_allowed(tmp_path, missing):
    """A prediction (or target) without a CRS is not silently compared pixel by pixel with a georeferenced one."""
    a = _dn((3, 40, 50))
    pred = _write(tmp_path / "p.tif", a, 0, crs=None if missing in ("pred", "both") else "EPSG:32631", desc=RGB)
    target = _write(tmp_path / "t.tif", a, 0, crs=None if missing in ("target", "both") else "EPSG:32631", desc=RGB)
    with pytest.raises(InputError, match="no CRS.*--allow-ungeoreferenced"):
        run_eval(EvalOptions(), pred=pred, target=target)
    rep = RecordingReporter()
    res = run_eval(EvalOptions(allow_ungeoreferenced=True), rep, pred=pred, target=target)
    assert res.report["summary"]["mae"]["value"] == 0.0
    assert any("pixel by pixel" in w for w in rep.warnings)


def test_allowed_ungeoreferenced_pairs_must_have_the_same_size(tmp_path):
    pred = _write(tmp_path / "p.tif", _dn((3, 40, 50)), 0, crs=None, desc=RGB)
    target = _write(tmp_path / "t.tif", _dn((3, 40, 60)), 0, desc=RGB)
    with pytest.raises(InputError, match=r"sizes differ \(50×40 against 60×40\)"):
        run_eval(EvalOptions(allow_ungeoreferenced=True), pred=pred, target=target)


def test_labels_without_crs_are_refused_unless_allowed(tmp_path):
    a = _dn((3, 40, 50))
    pred, target = _write(tmp_path / "p.tif", a, 0, desc=RGB), _write(tmp_path / "t.tif", a, 0, desc=RGB)
    lab = _write(tmp_path / "l.tif", np.zeros((1, 40, 50), np.uint8), 255, crs=None)
    with pytest.raises(InputError, match="labels .*l.tif has no CRS"):
        run_eval(EvalOptions(), pred=pred, target=target, labels=lab)
    rep = RecordingReporter()
    run_eval(EvalOptions(allow_ungeoreferenced=True), rep, pred=pred, target=target, labels=lab)
    assert any(w.startswith("labels compared with the target pixel by pixel") for w in rep.warnings)


@pytest.mark.parametrize("labels,seen", [
    (np.full((3, 40, 50), np.nan, np.float32), "3 bands of float32"),  # once: ValueError, float NaN to integer
    (np.ones((1, 40, 50), np.float32), "1 band of float32"),
    (np.ones((2, 40, 50), np.uint8), "2 bands of uint8"),
])
def test_labels_must_be_one_band_of_integer_ids(tmp_path, labels, seen):
    a = _dn((3, 40, 50))
    pred, target = _write(tmp_path / "p.tif", a, 0, desc=RGB), _write(tmp_path / "t.tif", a, 0, desc=RGB)
    lab = _write(tmp_path / "l.tif", labels)
    with pytest.raises(InputError, match=f"--labels .*l.tif has {seen}; labels must be one band of integer"):
        run_eval(EvalOptions(), pred=pred, target=target, labels=lab)


def test_bands_choose_what_is_compared_and_every_metric_says_its_bands(tmp_path):
    """A 13-band file without descriptions is compared on all 13 bands, and says so; --bands narrows it."""
    rng = np.random.default_rng(1)
    t = (rng.random((13, 40, 40)) * 2500 + 1).astype("uint16")
    p = t.copy()
    p[3] = np.clip(p[3].astype(int) + 500, 1, None).astype("uint16")  # B4 differs, the rest agrees
    pred, target = _write(tmp_path / "p.tif", p, 0), _write(tmp_path / "t.tif", t, 0)
    every = run_eval(EvalOptions(), pred=pred, target=target).report
    assert every["bands"]["metrics"]["psnr"]["bands"] == every["bands"]["target"]
    assert len(every["bands"]["target"]) == 13 and every["bands"]["described"] == {"pred": False, "target": False}
    lines = band_lines(to_json_value(every))
    assert lines[0].startswith("PSNR, SSIM, MAE: 13 bands, B1, B2") and "in [0, 0.3] reflectance" in lines[0]
    assert any("name no bands" in ln and "--bands" in ln for ln in lines)
    only = run_eval(EvalOptions(bands=("B3", "B2")), pred=pred, target=target).report
    assert only["bands"]["matched"] == "--bands" and only["bands"]["metrics"]["mae"]["bands"] == ["B3", "B2"]
    assert only["summary"]["mae"]["value"] == 0.0 and every["summary"]["mae"]["value"] > 0
    by_number = run_eval(EvalOptions(bands=("4",)), pred=pred, target=target).report
    assert by_number["bands"]["target"] == ["B4"] and by_number["summary"]["mae"]["value"] > 0
    with pytest.raises(InputError, match="has no band 'B99'.*--bands"):
        run_eval(EvalOptions(bands=("B99",)), pred=pred, target=target)
    html = render_html(to_json_value(only), [])
    assert '<section id="bands">' in html and "MAE: 2 bands, B3, B2 in [0, 0.3] reflectance" in html


def test_bands_matched_by_position_are_named_in_the_summary(tmp_path):
    a = _dn((3, 30, 30))
    pred = _write(tmp_path / "p.tif", a, 0, desc=("red", "green", "blue"))
    target = _write(tmp_path / "t.tif", a, 0, desc=RGB)
    rec = to_json_value(run_eval(EvalOptions(), pred=pred, target=target).report)
    assert rec["bands"]["matched"] == "position"
    assert "bands matched by position: prediction red, green, blue = target B4, B3, B2" in band_lines(rec)


def test_sar_ranges_per_band_and_rgb_channels_of_fid_are_reported(tmp_path):
    from sarkit.eval.fid import rgb_bands

    assert rgb_bands("sar", ("VV", "VH")) == ["VV", "VH", "(VV+VH)/2"]
    assert rgb_bands("optical", ("B2", "B3", "B4", "B8")) == ["B4", "B3", "B2"]
    t = (np.random.default_rng(2).random((2, 30, 30)) * -20).astype("float32")
    pred = _write(tmp_path / "p.tif", t, float("nan"), desc=("VV", "VH"))
    rec = to_json_value(run_eval(EvalOptions(s1_range=(-30.0, 5.0)), pred=pred, target=pred).report)
    assert rec["bands"]["units"] == "dB" and rec["bands"]["metrics"]["ssim"]["ranges"] == [[-30, 5], [-30, 5]]
    assert band_lines(rec)[0] == "PSNR, SSIM, MAE: 2 bands, VV, VH in [-30, 5] dB"


def _labelled_pair(tmp_path: Path, label_name: str, tags=None) -> tuple[Path, Path, Path]:
    a = _dn((3, 32, 32))
    lab = np.zeros((1, 32, 32), np.int16)
    lab[:, 16:] = 1
    lab[:, :, :2] = -1
    return (_write(tmp_path / "p.tif", a, 0, desc=RGB), _write(tmp_path / "t.tif", a, 0, desc=RGB),
            _write(tmp_path / label_name, lab, -1, tags=tags))


def test_per_class_rows_carry_the_class_names_of_the_labels(tmp_path):
    """Sen1Floods11 hand labels (no tag) are named as sarkit tile names them; a class_names tag wins."""
    pred, target, lab = _labelled_pair(tmp_path, "Spain_1_LabelHand.tif")
    rows = run_eval(EvalOptions(), pred=pred, target=target, labels=lab).report["per_class"]
    assert [(r["id"], r["class"]) for r in rows] == [(0, "not water"), (1, "water")]
    pred, target, lab = _labelled_pair(tmp_path, "l.tif", tags={"class_names": json.dumps(["dry", "wet"])})
    rows = run_eval(EvalOptions(), pred=pred, target=target, labels=lab).report["per_class"]
    assert [r["class"] for r in rows] == ["dry", "wet"]
    pred, target, lab = _labelled_pair(tmp_path, "plain.tif")
    rows = run_eval(EvalOptions(), pred=pred, target=target, labels=lab).report["per_class"]
    assert [r["class"] for r in rows] == ["0", "1"]  # nothing names them


def test_tile_set_labels_are_named_by_tiling_json(tmp_path):
    """Label tiles without a tag take the classes of the tiling.json of their tile folder."""
    for d in ("P", "T", "tiles/labels"):
        (tmp_path / d).mkdir(parents=True)
    pred, target, lab = _labelled_pair(tmp_path, "tiles/labels/a.tif")
    pred.rename(tmp_path / "P" / "a.tif")
    target.rename(tmp_path / "T" / "a.tif")
    (tmp_path / "tiles" / "tiling.json").write_text(json.dumps({"classes": ["land", "sea"]}))
    rows = run_eval(EvalOptions(), pred=tmp_path / "P", target=tmp_path / "T",
                    labels=tmp_path / "tiles" / "labels").report["per_class"]
    assert [r["class"] for r in rows] == ["land", "sea"]


def _translated(tmp_path: Path, source: str) -> tuple[Path, Path, Path]:
    """A SAR scene, an optical target and a prediction tagged as sarkit translate tags its output."""
    rng = np.random.default_rng(4)
    s1 = _write(tmp_path / "scene_s1.tif", (rng.random((2, 64, 64)) * -20).astype("float32"), float("nan"),
                desc=("VV", "VH"))
    t = _dn((3, 64, 64))
    pred = _write(tmp_path / "pred.tif", np.clip(t + 100, 1, None).astype("uint16"), 0, desc=RGB,
                  tags={"source": source, "checkpoint": "gen.safetensors", "model": "pix2pix"})
    return s1, pred, _write(tmp_path / "t.tif", t, 0, desc=RGB)


def test_scene_thumbnails_show_the_input_from_the_option_or_the_prediction_tags(tmp_path):
    s1, pred, target = _translated(tmp_path, "scene_s1.tif")
    rep = RecordingReporter()
    res = run_eval(EvalOptions(tile_size=32), rep, pred=pred, target=target)
    assert res.report["inputs"]["input"] == str(s1) and res.thumbnails
    assert all(t["input"] for t in res.thumbnails)
    assert [o["label"] for o in res.overview] == ["input", "prediction", "target"]
    other = tmp_path / "elsewhere"
    other.mkdir()
    s1.rename(other / "renamed.tif")
    res = run_eval(EvalOptions(tile_size=32), rep, pred=pred, target=target)
    assert "input" not in res.report["inputs"] and not any(t["input"] for t in res.thumbnails)
    assert any("translated from scene_s1.tif" in m and "--input" in m for m in rep.infos)
    res = run_eval(EvalOptions(tile_size=32, input_scene=other / "renamed.tif"), pred=pred, target=target)
    assert res.report["inputs"]["input"] == str(other / "renamed.tif") and all(t["input"] for t in res.thumbnails)


def test_input_scene_without_crs_is_refused_unless_allowed(tmp_path):
    s1, pred, target = _translated(tmp_path, "none.tif")
    bare = _write(tmp_path / "bare.tif", rasterio.open(s1).read(), float("nan"), crs=None, desc=("VV", "VH"))
    with pytest.raises(InputError, match="input scene .*bare.tif has no CRS"):
        run_eval(EvalOptions(input_scene=bare), pred=pred, target=target)
    res = run_eval(EvalOptions(input_scene=bare, allow_ungeoreferenced=True), pred=pred, target=target)
    assert all(t["input"] for t in res.thumbnails)
