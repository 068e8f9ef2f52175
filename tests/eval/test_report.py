"""Reports (sarkit.eval.report): files, JSON schema, well-formed HTML."""

from __future__ import annotations

import copy
import csv
import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rasters import write_rgb_dn
from sarkit.eval.report import load_schema, render_html, render_markdown, to_json_value, validate, write_report
from sarkit.eval.options import EvalOptions
from sarkit.eval.runner import run_eval

VOID = {"meta", "img", "br", "hr", "link", "input"}


@pytest.fixture()
def scenes(tmp_path):
    rng = np.random.default_rng(0)
    t = (rng.random((3, 200, 160)) * 2500 + 1).astype("uint16")
    t[:, :60, :60] = t[:1, :60, :60]  # one identical region → an infinite-PSNR tile
    p = t.copy()
    p[:, 64:] = np.clip(t[:, 64:] + rng.normal(0, 400, t[:, 64:].shape), 1, None).astype("uint16")
    return write_rgb_dn(tmp_path / "p.tif", p), write_rgb_dn(tmp_path / "t.tif", t), tmp_path


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
    assert sorted(f.name for f in out.iterdir()) == ["baselines.csv", "report.html", "report.json", "report.md",
                                                     "tiles.csv"]
    rec = json.loads((out / "report.json").read_text())
    assert rec["schema"] == "sarkit.eval/1.4" and validate(rec, load_schema()) == []
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


class _Grid(HTMLParser):
    """The labels of report.html's tile grid ("group: id") and its heading."""

    def __init__(self) -> None:
        super().__init__()
        self.in_tiles = self.in_h2 = False
        self.heading = ""
        self.labels: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.in_tiles = dict(attrs).get("id") == "tiles"
        self.in_h2 = tag == "h2"

    def handle_data(self, data):
        if self.in_tiles and self.in_h2:
            self.heading += data
        elif self.in_tiles and ": " in data and data.split(":")[0] in ("best", "median", "worst", "only"):
            self.labels.append(data.strip())

    def handle_endtag(self, tag):
        self.in_h2 = False if tag == "h2" else self.in_h2


def test_four_tiles_are_shown_as_one_best_two_median_one_worst(scenes):
    """The case that once showed three "best" tiles and the worst one as "median", with no "worst"."""
    pp, tp, tmp = scenes
    res = run_eval(EvalOptions(tile_size=100), pred=pp, target=tp)
    tiles = sorted(res.report["tiles"], key=lambda t: -t["psnr"])
    assert len(tiles) == 4
    grid = _Grid()
    grid.feed(render_html(to_json_value(res.report), res.thumbnails))
    assert grid.heading == "Tiles by PSNR: 1 best, 2 median, 1 worst of 4"
    assert grid.labels == [f"best: {tiles[0]['id']}", f"median: {tiles[1]['id']}", f"median: {tiles[2]['id']}",
                           f"worst: {tiles[3]['id']}"]


def test_per_class_rows_of_the_report_show_class_names(scenes):
    pp, tp, tmp = scenes
    lab = np.zeros((1, 200, 160), np.uint8)
    lab[:, 100:] = 1
    with rasterio.open(tmp / "l.tif", "w", driver="GTiff", height=200, width=160, count=1, dtype="uint8",
                       nodata=255, crs="EPSG:32631", transform=from_origin(0, 2000, 10, 10)) as d:
        d.write(lab)
        d.update_tags(class_names=json.dumps(["not water", "water"]))
    rec = to_json_value(run_eval(EvalOptions(), pred=pp, target=tp, labels=tmp / "l.tif").report)
    assert "| not water |" in render_markdown(rec) and "<td>water</td>" in render_html(rec, [])
