"""Comparisons of reports (sarkit.eval.compare): the table, best marks, compare.md, CLI --compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.errors import InputError
from sarkit.eval.compare import compare_markdown, compare_reports, compare_table, compare_terminal, load_report


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


def test_compare_table_holds_values_and_best_rows(tmp_path):
    a = _fake_report(tmp_path, "a", "inf", None, 0.2)
    b = _fake_report(tmp_path, "b", 30.0, None, 0.1)
    table = compare_table([a, b])
    assert table.metrics == ["psnr", "ssim", "mae"] and table.columns == ["method", "PSNR↑", "SSIM↑", "MAE↓"]
    assert table.rows == [["a", float("inf"), None, 0.2], ["b", 30.0, None, 0.1]]
    assert table.best == {"psnr": 0, "mae": 1}  # no SSIM value anywhere: no best
    assert table.marked("<{}>") == [["a", "<inf>", "–", "0.2"], ["b", "30", "–", "<0.1>"]]


def test_compare_reports_writes_compare_md_atomically(tmp_path):
    a = _fake_report(tmp_path, "a", 20.0, 0.5, 0.08)
    b = _fake_report(tmp_path, "b", 21.0, 0.4, 0.09)
    table = compare_reports([a, b], tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["compare.md"]
    assert (tmp_path / "out" / "compare.md").read_text() == table.markdown() == compare_markdown([a, b])
    with pytest.raises(InputError, match="exists"):
        compare_reports([a, b], tmp_path / "out")
    compare_reports([b], tmp_path / "out", overwrite=True)
    assert "| b |" in (tmp_path / "out" / "compare.md").read_text()
    assert compare_reports([a]).rows == [["a", 20.0, 0.5, 0.08]]  # no out: nothing written
    with pytest.raises(InputError, match="--compare needs report directories"):
        compare_reports([], tmp_path / "empty")
    with pytest.raises(InputError, match="report not found"):
        compare_reports([a, tmp_path / "missing"], tmp_path / "partial")
    assert not (tmp_path / "empty").exists() and not (tmp_path / "partial").exists()


def test_load_report_refuses_what_is_not_a_report(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="is not a sarkit eval report \\(not JSON"):
        load_report(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"schema": "other"}')
    with pytest.raises(InputError, match="is not a sarkit eval report"):
        load_report(tmp_path / "other.json")


def test_cli_compare_needs_reports_and_refuses_stray_arguments(tmp_path):
    r = CliRunner().invoke(app, ["eval", "--compare"])
    assert r.exit_code == 2 and "--compare needs report directories or report.json files" in r.output
    r = CliRunner().invoke(app, ["eval", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "unexpected argument" in r.output
