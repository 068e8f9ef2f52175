"""Reports (sarkit.eval.report): files, JSON schema, well-formed HTML, compare tables, quality gates."""

from __future__ import annotations

import copy
import csv
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.errors import InputError
from sarkit.eval.compare import compare_markdown, compare_terminal
from sarkit.eval.gate import gate_failures, parse_thresholds
from sarkit.eval.report import load_schema, to_json_value, validate, write_report
from sarkit.eval.options import EvalOptions
from sarkit.eval.runner import run_eval

VOID = {"meta", "img", "br", "hr", "link", "input"}


def _write(path: Path, a: np.ndarray) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[1], width=a.shape[2], count=a.shape[0],
                       dtype=a.dtype, nodata=0, crs="EPSG:32631", transform=from_origin(0, 2000, 10, 10)) as d:
        d.write(a)
        d.descriptions = ("B4", "B3", "B2")
    return path


@pytest.fixture()
def scenes(tmp_path):
    rng = np.random.default_rng(0)
    t = (rng.random((3, 200, 160)) * 2500 + 1).astype("uint16")
    t[:, :60, :60] = t[:1, :60, :60]  # one identical region → an infinite-PSNR tile
    p = t.copy()
    p[:, 64:] = np.clip(t[:, 64:] + rng.normal(0, 400, t[:, 64:].shape), 1, None).astype("uint16")
    return _write(tmp_path / "p.tif", p), _write(tmp_path / "t.tif", t), tmp_path


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.imgs = 0
        self.svgs = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs += 1
            assert a["src"].startswith("data:image/png;base64,")
        if tag == "svg":
            self.svgs += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def test_report_files_schema_and_html(scenes):
    pp, tp, tmp = scenes
    res = run_eval(EvalOptions(tile_size=64), pred=pp, target=tp)
    out = write_report(tmp / "rep", res, overwrite=False)
    assert sorted(f.name for f in out.iterdir()) == ["report.html", "report.json", "report.md", "tiles.csv"]
    rec = json.loads((out / "report.json").read_text())
    assert rec["schema"] == "sarkit.eval/1.1" and validate(rec, load_schema()) == []
    assert "inf" in [t["psnr"] for t in rec["tiles"]]  # +inf written as the string "inf"
    rows = list(csv.DictReader((out / "tiles.csv").open()))
    assert len(rows) == len(rec["tiles"]) == 12 and {"id", "psnr", "ssim", "mae"} <= set(rows[0])
    md = (out / "report.md").read_text()
    assert "| PSNR ↑ |" in md and "normalised [0, 1]" in md
    chk = _Checker()
    chk.feed((out / "report.html").read_text())
    chk.close()
    assert chk.errors == [] and chk.stack == []
    assert {"inputs", "summary", "overview", "histograms", "tiles"} <= chk.ids
    assert chk.svgs == 3  # PSNR, SSIM, MAE histograms
    assert [o["label"] for o in res.overview] == ["prediction", "target"]  # no input scene given
    # scene overview (prediction, target) + pred, target and error per best/median/worst tile
    assert chk.imgs == len(res.overview) + 3 * len(res.thumbnails) and 3 <= len(res.thumbnails) <= 9
    with pytest.raises(Exception, match="exists"):
        write_report(tmp / "rep", res, overwrite=False)


def test_validator_rejects_broken_reports(scenes):
    pp, tp, _ = scenes
    rec = to_json_value(run_eval(EvalOptions(), pred=pp, target=tp).report)
    schema = load_schema()
    for breakage in ("schema", "value", "extra", "missing", "mode"):
        bad = copy.deepcopy(rec)
        if breakage == "schema":
            bad["schema"] = "sarkit.eval/2"
        elif breakage == "value":
            bad["summary"]["psnr"]["value"] = "high"
        elif breakage == "extra":
            bad["tiles"][0]["surprise"] = 1
        elif breakage == "missing":
            del bad["summary"]
        else:
            bad["inputs"]["mode"] = "magic"
        assert validate(bad, schema), breakage


def test_json_values_inf_nan():
    assert to_json_value({"a": math.inf, "b": float("nan"), "c": [np.float32(1.5)], "d": np.int64(3)}) == \
        {"a": "inf", "b": None, "c": [1.5], "d": 3}


def _fake_report(tmp: Path, name: str, psnr, ssim, mae) -> Path:
    rec = {"schema": "sarkit.eval/1", "sarkit_version": "0", "created": "now", "inputs": {"mode": "tiles"},
           "normalization": {"space": "x", "source": "default",
                             "pred": {"modality": "optical", "bands": ["B4"], "lo": [0.0], "hi": [0.3]},
                             "target": {"modality": "optical", "bands": ["B4"], "lo": [0.0], "hi": [0.3]}},
           "metrics": ["psnr", "ssim", "mae"], "pixels": {"valid": 1, "total": 1},
           "summary": {"psnr": {"value": psnr}, "ssim": {"value": ssim}, "mae": {"value": mae}},
           "segmentation": None, "per_class": [], "tiles": []}
    d = tmp / name
    d.mkdir()
    (d / "report.json").write_text(json.dumps(rec))
    return d


def test_compare_marks_the_best_per_column(tmp_path):
    a = _fake_report(tmp_path, "pix2pix", 20.0, 0.5, 0.08)
    b = _fake_report(tmp_path, "cyclegan", 22.0, 0.4, 0.10)
    c = _fake_report(tmp_path, "cut", None, 0.45, 0.05)
    md = compare_markdown([a, b, c / "report.json"])
    lines = md.splitlines()
    assert lines[0] == "| method | PSNR↑ | SSIM↑ | MAE↓ |"
    assert lines[2] == "| pix2pix | 20 | **0.5** | 0.08 |"
    assert lines[3] == "| cyclegan | **22** | 0.4 | 0.1 |"
    assert lines[4] == "| cut | – | 0.45 | **0.05** |"
    cols, rows = compare_terminal([a, b])
    assert rows == [["pix2pix", "20", "0.5*", "0.08*"], ["cyclegan", "22*", "0.4", "0.1"]]
    r = CliRunner().invoke(app, ["eval", "--compare", str(a), str(b), "--report", str(tmp_path / "cmp")])
    assert r.exit_code == 0 and "22*" in r.output
    assert (tmp_path / "cmp" / "compare.md").read_text() == compare_markdown([a, b])
    r = CliRunner().invoke(app, ["eval", "--compare", str(a), str(tmp_path / "nothing")])
    assert r.exit_code == 2


def test_thresholds_parse_and_gate():
    assert parse_thresholds("psnr=18, ssim=0.3", True) == {"psnr": 18.0, "ssim": 0.3}
    assert parse_thresholds("fid=50", False) == {"fid": 50.0}
    with pytest.raises(InputError, match="--fail-over"):
        parse_thresholds("fid=50", True)
    with pytest.raises(InputError, match="--fail-under"):
        parse_thresholds("psnr=20", False)
    with pytest.raises(InputError, match="metric=value"):
        parse_thresholds("psnr", True)
    summary = {"psnr": {"value": 17.0}, "ssim": {"value": 0.5}, "mae": {"value": "inf"}}
    assert gate_failures(summary, {"psnr": 18.0, "ssim": 0.3}, {}) == ["psnr 17 < 18"]
    assert gate_failures(summary, {}, {"mae": 0.1}) == ["mae inf > 0.1"]
    assert gate_failures({"psnr": {"value": math.inf}}, {"psnr": 40.0}, {}) == []


def test_cli_quality_gate_exit_codes(scenes):
    pp, tp, tmp = scenes
    runner = CliRunner()
    base = ["eval", "--pred", str(pp), "--target", str(tp), "-q"]
    ok = runner.invoke(app, base + ["--fail-under", "psnr=5,ssim=0.01", "--fail-over", "mae=0.5"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, base + ["--fail-under", "psnr=99", "--report", str(tmp / "gate")])
    assert bad.exit_code == 1 and "quality gate failed" in bad.output
    assert (tmp / "gate" / "report.json").exists()  # the report is still written
    over = runner.invoke(app, base + ["--fail-over", "mae=0.0001"])
    assert over.exit_code == 1
    wrong = runner.invoke(app, base + ["--fail-under", "mae=0.1"])
    assert wrong.exit_code == 2
