"""Comparisons of reports (sarkit.eval.compare): the papers' layout (methods × SAR→OPT / OPT→SAR / downstream),
best and second marks by each metric's direction, compare.md / .csv / .tex, CLI --compare."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.errors import InputError
from sarkit.eval.compare import (DOWNSTREAM, ReportEntry, build_table, compare_markdown, compare_reports,
                                 compare_table, compare_terminal, higher_is_better, load_report, ranks, tex_escape)
from sarkit.eval.options import HIGHER_IS_BETTER

S2O, O2S = "sar2opt", "opt2sar"


def _record(summary: dict, model: str | None = None, direction: str | None = S2O, mode: str = "model",
            checkpoint: str | None = None) -> dict:
    pred = "optical" if direction != O2S else "sar"
    norm = {"modality": pred, "bands": ["B4"], "lo": [0.0], "hi": [0.3]}
    inputs: dict = {"mode": mode}
    if mode == "model":
        inputs.update({"direction": direction, "model": model})
        if checkpoint:
            inputs["checkpoint"] = checkpoint
    return {"schema": "sarkit.eval/1.2", "sarkit_version": "0", "created": "now", "inputs": inputs,
            "normalization": {"space": "x", "source": "default", "pred": norm, "target": norm},
            "metrics": list(summary), "pixels": {"valid": 1, "total": 1},
            "summary": {m: {"value": v} for m, v in summary.items()},
            "segmentation": None, "per_class": [], "tiles": []}


def _write(tmp: Path, name: str, rec: dict) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "report.json").write_text(json.dumps(rec))
    return d


def _tile_report(tmp: Path, name: str, psnr, ssim, mae) -> Path:
    return _write(tmp, name, _record({"psnr": psnr, "ssim": ssim, "mae": mae}, mode="tiles"))


@pytest.fixture
def five(tmp_path):
    """pix2pix and cut in both directions, cyclegan SAR→OPT only; report folders named unlike their models."""
    return [
        _write(tmp_path, "eval-a", _record({"psnr": 20.0, "ssim": 0.5, "mae": 0.08, "pa": 0.4}, "pix2pix", S2O)),
        _write(tmp_path, "eval-b", _record({"psnr": 22.0, "ssim": 0.4, "mae": 0.10}, "cyclegan", S2O)),
        _write(tmp_path, "eval-c", _record({"psnr": 12.5, "ssim": 0.05, "mae": 0.18, "pa": 0.45}, "pix2pix", O2S)),
        _write(tmp_path, "eval-d", _record({"psnr": 21.0, "ssim": 0.45, "mae": 0.05, "pa": 0.5}, "cut", S2O)),
        _write(tmp_path, "eval-e", _record({"psnr": 11.0, "ssim": 0.06, "mae": 0.20, "pa": 0.3}, "cut", O2S)),
    ]


def test_directions_of_a_model_share_a_row_in_grouped_columns(five):
    table = compare_table(five)
    assert [r.method for r in table.rows] == ["pix2pix", "cyclegan", "cut"]
    assert table.headers == ["method", "SAR→OPT PSNR↑", "SAR→OPT SSIM↑", "SAR→OPT MAE↓", "OPT→SAR PSNR↑",
                             "OPT→SAR SSIM↑", "OPT→SAR MAE↓", "PA (SAR→OPT)↑", "PA (OPT→SAR)↑"]
    assert table.groups == [(S2O, 3), (O2S, 3), (DOWNSTREAM, 2)]
    assert table.rows[0].values == [20.0, 0.5, 0.08, 12.5, 0.05, 0.18, 0.4, 0.45]
    assert table.rows[1].values == [22.0, 0.4, 0.10, None, None, None, None, None]
    assert table.rows[0].reports == {S2O: "eval-a", O2S: "eval-c"}
    assert table.value("cut", "mae", O2S) == 0.20 and table.value("cyclegan", "psnr", O2S) is None


def test_best_bold_second_underlined_following_each_metrics_direction(five):
    md = compare_markdown(five).splitlines()
    assert md[0] == ("| method | SAR→OPT PSNR↑ | SAR→OPT SSIM↑ | SAR→OPT MAE↓ | OPT→SAR PSNR↑ | OPT→SAR SSIM↑ "
                     "| OPT→SAR MAE↓ | PA (SAR→OPT)↑ | PA (OPT→SAR)↑ |")
    # PSNR: cyclegan 22 > cut 21 > pix2pix 20; MAE lower is better: cut 0.05 < pix2pix 0.08 < cyclegan 0.10
    assert md[2] == ("| pix2pix | 20.0000 | **0.5000** | <u>0.0800</u> | **12.5000** | <u>0.0500</u> | **0.1800** "
                     "| <u>0.4000</u> | **0.4500** |")
    assert md[3] == "| cyclegan | **22.0000** | 0.4000 | 0.1000 | – | – | – | – | – |"
    assert md[4] == ("| cut | <u>21.0000</u> | <u>0.4500</u> | **0.0500** | <u>11.0000</u> | **0.0600** "
                     "| <u>0.2000</u> | **0.5000** | <u>0.3000</u> |")
    assert "- pix2pix: SAR→OPT `eval-a`, OPT→SAR `eval-c`" in md
    cols, rows = compare_terminal(five)
    assert cols[1] == "SAR→OPT PSNR↑" and rows[1][:4] == ["cyclegan", "22.0000*", "0.4000", "0.1000"]
    assert rows[2][1:4] == ["21.0000†", "0.4500†", "0.0500*"]


def test_ranks_share_ties_and_skip_undefined_values():
    assert ranks([1.0, 3.0, 2.0, None], higher=True) == [0, 1, 2, 0]
    assert ranks([1.0, 3.0, 2.0, float("nan")], higher=False) == [1, 0, 2, 0]
    assert ranks([2.0, 2.0, 1.0], higher=True) == [1, 1, 2]
    assert ranks([math.inf, 30.0], higher=True) == [1, 2]
    assert ranks([None, None], higher=True) == [0, 0]


def test_lower_is_better_metrics_come_from_the_options_table():
    for m in ("sms", "mae", "fid", "lpips", "fid-clip"):
        assert higher_is_better(m) is False and HIGHER_IS_BETTER[m] is False
    for m in ("psnr", "ssim", "pa", "miou", "pmr", "ir", "ir_ed", "clip_iqa"):
        assert higher_is_better(m) is True
    e = [ReportEntry("a", "a", S2O, {"fid": 40.0, "lpips": 0.3, "sms": 0.2}),
         ReportEntry("b", "b", S2O, {"fid": 30.0, "lpips": 0.4, "sms": 0.1})]
    t = build_table(e)
    assert [c.header for c in t.columns] == ["SAR→OPT FID↓", "SAR→OPT LPIPS↓", "SMS (SAR→OPT)↓"]
    assert t.rank == [[2, 1, 2], [1, 2, 1]]
    with pytest.raises(InputError, match="unknown metric 'bogus'"):
        build_table([ReportEntry("a", "a", S2O, {"bogus": 1.0})])


def test_matching_and_clip_iqa_columns_appear_when_reports_have_them():
    """pmr/ir/ir_ed join the downstream group per direction, clip_iqa the image group; all higher-is-better."""
    e = [ReportEntry("r1", "cut", S2O, {"psnr": 18.0, "clip_iqa": 0.6, "pa": 0.37, "pmr": 0.58, "ir": 0.31,
                                          "ir_ed": 0.13}),
         ReportEntry("r2", "cut", O2S, {"psnr": 11.7, "pa": 0.43}),
         ReportEntry("r3", "cyclegan", S2O, {"psnr": 18.8, "clip_iqa": 0.5, "pa": 0.47, "pmr": 0.12, "ir": 0.02,
                                               "ir_ed": 0.002})]
    t = build_table(e)
    assert [c.header for c in t.columns] == [
        "SAR→OPT PSNR↑", "SAR→OPT CLIP-IQA↑", "OPT→SAR PSNR↑", "PA (SAR→OPT)↑", "PA (OPT→SAR)↑",
        "PMR (SAR→OPT)↑", "IR (SAR→OPT)↑", "IR-ED (SAR→OPT)↑"]
    assert t.rows[0].values == [18.0, 0.6, 11.7, 0.37, 0.43, 0.58, 0.31, 0.13]
    assert t.rank[0] == [2, 1, 1, 2, 1, 1, 1, 1] and t.rank[1] == [1, 2, 0, 1, 0, 2, 2, 2]
    tex = t.latex()
    assert r"PMR (SAR$\rightarrow$OPT)$\uparrow$" in tex and r"IR-ED (SAR$\rightarrow$OPT)$\uparrow$" in tex


def test_latex_is_a_booktabs_tabular_with_group_rules(five):
    tex = compare_table(five).latex().splitlines()
    assert tex[0].startswith("%") and "booktabs" in tex[0]
    assert tex[1] == r"\begin{tabular}{l rrr rrr rr}" and tex[2] == r"\toprule"
    assert tex[3] == (r"Method & \multicolumn{3}{c}{SAR$\rightarrow$OPT} & \multicolumn{3}{c}{OPT$\rightarrow$SAR} "
                      r"& \multicolumn{2}{c}{Downstream} \\")
    assert tex[4] == r"\cmidrule(lr){2-4}\cmidrule(lr){5-7}\cmidrule(lr){8-9}"
    assert tex[5].startswith(r" & PSNR$\uparrow$ & SSIM$\uparrow$ & MAE$\downarrow$ & PSNR$\uparrow$")
    assert tex[6] == r"\midrule"
    assert tex[7] == (r"pix2pix & 20.0000 & \textbf{0.5000} & \underline{0.0800} & \textbf{12.5000} & "
                      r"\underline{0.0500} & \textbf{0.1800} & \underline{0.4000} & \textbf{0.4500} \\")
    assert tex[8] == r"cyclegan & \textbf{22.0000} & 0.4000 & 0.1000 & -- & -- & -- & -- & -- \\"
    assert tex[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert all(tex[i].count("&") == 8 for i in (5, 7, 8, 9))
    assert tex_escape("cyclegan_sc 50%") == r"cyclegan\_sc 50\%"


def test_csv_holds_full_precision_values_and_the_reports(five):
    rows = list(csv.reader(io.StringIO(compare_table(five).csv())))
    assert rows[0][:2] == ["method", "SAR→OPT PSNR↑"] and rows[0][-2:] == ["SAR→OPT report", "OPT→SAR report"]
    assert rows[1] == ["pix2pix", "20.0", "0.5", "0.08", "12.5", "0.05", "0.18", "0.4", "0.45", "eval-a", "eval-c"]
    assert rows[2][4:7] == ["", "", ""] and rows[2][-2:] == ["eval-b", ""]


def test_rows_are_named_by_report_or_by_NAME_and_a_model_twice_per_direction_is_refused(tmp_path):
    a = _tile_report(tmp_path, "pix2pix", 20.0, 0.5, 0.08)
    b = _tile_report(tmp_path, "cyclegan", 22.0, 0.4, 0.10)
    c = _write(tmp_path, "c", _record({"psnr": 12.0}, mode="tiles", direction=O2S))  # SAR prediction: OPT→SAR
    t = compare_table([a, b / "report.json", f"pix2pix={c}"])
    assert [r.method for r in t.rows] == ["pix2pix", "cyclegan"] and t.rows[0].reports == {S2O: "pix2pix", O2S: "c"}
    assert t.value("pix2pix", "psnr", O2S) == 12.0
    d1 = _write(tmp_path, "d1", _record({"psnr": 20.0}, "pix2pix", S2O))
    d2 = _write(tmp_path, "d2", _record({"psnr": 21.0}, "pix2pix", S2O))
    with pytest.raises(InputError, match="d1 and d2 are both pix2pix SAR→OPT; name the rows with NAME=REPORT"):
        compare_table([d1, d2])
    assert [r.method for r in compare_table([d1, f"p2p-wide={d2}"]).rows] == ["pix2pix", "p2p-wide"]
    with pytest.raises(InputError, match="give REPORT or NAME=REPORT"):
        compare_table([f"={d1}"])


def test_method_falls_back_to_the_checkpoint_header(tmp_path):
    from sarkit.models.checkpoint import save_network

    gen = save_network(tmp_path / "gen.safetensors", torch.nn.Identity(), kind="generator", arch="identity",
                       arch_kwargs={}, meta={"model": "cut", "direction": S2O})
    old = _record({"psnr": 20.0}, None, S2O, checkpoint=str(gen))  # a report written before inputs.model
    del old["inputs"]["model"]
    r1 = _write(tmp_path, "old", old)
    gone = _record({"psnr": 20.0}, None, S2O, checkpoint=str(tmp_path / "deleted.safetensors"))
    del gone["inputs"]["model"]
    r2 = _write(tmp_path, "gone", gone)
    assert [r.method for r in compare_table([r1, r2]).rows] == ["cut", "gone"]


def test_compare_reports_writes_three_files_atomically(tmp_path, five):
    table = compare_reports(five, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["compare.csv", "compare.md", "compare.tex"]
    assert (tmp_path / "out" / "compare.md").read_text() == table.markdown() == compare_markdown(five)
    assert (tmp_path / "out" / "compare.tex").read_text() == table.latex()
    assert (tmp_path / "out" / "compare.csv").read_text() == table.csv()
    with pytest.raises(InputError, match="exists"):
        compare_reports(five, tmp_path / "out")
    compare_reports(five[:1], tmp_path / "out", overwrite=True)
    assert "cyclegan" not in (tmp_path / "out" / "compare.md").read_text()
    assert compare_reports(five[:1]).rows[0].values == [20.0, 0.5, 0.08, 0.4]  # no out: nothing written
    with pytest.raises(InputError, match="--compare needs report directories"):
        compare_reports([], tmp_path / "empty")
    with pytest.raises(InputError, match="report not found"):
        compare_reports([five[0], tmp_path / "missing"], tmp_path / "partial")
    assert not (tmp_path / "empty").exists() and not (tmp_path / "partial").exists()


def test_cli_compare_prints_and_writes_the_table(tmp_path, five):
    out = tmp_path / "cmp"
    r = CliRunner().invoke(app, ["eval", "--compare", *map(str, five), "--report", str(out)])
    assert r.exit_code == 0, r.output
    assert "22.0000*" in r.output and "21.0000†" in r.output and "best" in r.output
    assert (out / "compare.md").read_text() == compare_markdown(five)
    assert (out / "compare.tex").read_text().startswith("% sarkit eval --compare")
    r = CliRunner().invoke(app, ["eval", "--compare", str(five[0]), str(tmp_path / "nothing")])
    assert r.exit_code == 2


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


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed (texlive-latex-recommended)")
def test_latex_compiles_with_booktabs(tmp_path, five):
    """compare.tex as a paper includes it: \\input into a document with booktabs, compiled by pdflatex."""
    e = [ReportEntry("r", "cut_v2 & co", S2O, {"psnr": math.inf, "ssim": None, "pmr": 0.5}),
         ReportEntry("s", "Ours 100%", S2O, {"psnr": 20.0, "ssim": 0.3, "pmr": 0.6})]
    for name, table in (("five", compare_table(five)), ("odd", build_table(e))):
        (tmp_path / f"{name}.tex").write_text(table.latex())
        (tmp_path / "doc.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}"
                                          f"\\input{{{name}}}\\end{{document}}\n")
        r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:]
        assert (tmp_path / "doc.pdf").stat().st_size > 1000


def _with_baselines(rec: dict, const: dict, gain: float) -> dict:
    rec = dict(rec, schema="sarkit.eval/1.4")
    rec["baselines"] = {"constant": {"label": "constant colour", "source": "training tiles",
                                     "summary": {m: {"value": v} for m, v in const.items()}},
                        "linear": {"label": "per-pixel linear map", "source": "training tiles",
                                   "absent": "no SAR input at hand"}}
    rec["summary"] = dict(rec["summary"], gain_psnr={"value": gain, "over": "constant"})
    return rec


def test_compare_shows_the_baselines_as_rows_and_the_gains_as_columns(tmp_path):
    const = {"psnr": 15.9, "ssim": 0.25, "mae": 0.13}
    a = _write(tmp_path, "a", _with_baselines(_record({"psnr": 17.0, "ssim": 0.3, "mae": 0.1}, "pix2pix"), const,
                                              1.1))
    b = _write(tmp_path, "b", _with_baselines(_record({"psnr": 15.0, "ssim": 0.2, "mae": 0.14}, "cut"), const,
                                              -0.9))
    table = compare_table([a, b])
    methods = [r.method for r in table.rows]
    assert methods == ["pix2pix", "cut", "baseline: constant colour (pix2pix, cut)"]  # one row: same values
    assert table.value("baseline: constant colour (pix2pix, cut)", "psnr", S2O) == 15.9
    assert table.value("pix2pix", "gain_psnr", S2O) == 1.1 and table.value("cut", "gain_psnr", S2O) == -0.9
    assert "gain PSNR↑" in table.markdown()
    # different baseline values (other data) are rows of their own; absent baselines are no row
    c = _write(tmp_path, "c", _with_baselines(_record({"psnr": 16.0, "ssim": 0.2, "mae": 0.1}, "cyclegan"),
                                              dict(const, psnr=14.0), 2.0))
    methods = [r.method for r in compare_table([a, c]).rows]
    assert "baseline: constant colour (pix2pix)" in methods and "baseline: constant colour (cyclegan)" in methods
    assert not any("linear" in m for m in methods)
