"""The model benchmark (sarkit.benchmark, sarkit benchmark): the same budget for every model, both directions,
segmenters first where needed, the papers' table, and a re-run that trains only what is missing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sarkit.benchmark import BenchmarkOptions, parse_models, run_benchmark, split_model_options, translator_names
from sarkit.cli import app
from sarkit.errors import InputError, OutputExistsError
from sarkit.models.base import Task
from sarkit.models.registry import get_model, model_names
from training.tilesets import make_tiles

TINY = ["ngf=8", "ndf=8", "n_blocks=1", "num_patches=16", "segmenter:backbone=mobilenet_v3_large"]


def tiles_with_test(root: Path, labels: bool = True) -> Path:
    """4 train, 2 val and 2 test tiles of 32² px (with labels)."""
    make_tiles(root, n_train=4, n_val=4, labels=labels)
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows[6:]:
        r["split"] = "test"
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_models_come_from_the_registry():
    names = translator_names()
    assert names == [m for m in model_names() if get_model(m).task is Task.TRANSLATOR and get_model(m).standalone]
    assert "segmenter" not in names and "gan-prior" not in names  # built on another run: only when named
    assert parse_models("gan-prior") == ("gan-prior",)
    assert {"pix2pix", "cyclegan", "cut"} <= set(names)
    assert parse_models("all") == tuple(names) == parse_models(None)
    assert parse_models("cut, pix2pix,cut") == ("cut", "pix2pix")
    with pytest.raises(InputError, match="unknown model 'nope'; valid models"):
        parse_models("pix2pix,nope")
    with pytest.raises(InputError, match="--models segmenter: not a translator"):
        parse_models("segmenter")


def test_model_options_go_to_every_model_that_has_them_or_to_one():
    per = split_model_options(["ngf=8", "n_blocks=1", "cut:num_patches=16", "segmenter:backbone=resnet50"],
                              ("pix2pix", "cut"))
    assert per["pix2pix"] == {"ngf": "8"} and per["cut"] == {"ngf": "8", "n_blocks": "1", "num_patches": "16"}
    assert per["segmenter"] == {"backbone": "resnet50"}
    with pytest.raises(InputError, match="none of pix2pix, segmenter has an option 'bogus'"):
        split_model_options(["bogus=1"], ("pix2pix",))
    with pytest.raises(InputError, match="has no option 'n_blocks'"):
        split_model_options(["pix2pix:n_blocks=1"], ("pix2pix",))
    with pytest.raises(InputError, match="'cut' is not benchmarked here"):
        split_model_options(["cut:ngf=8"], ("pix2pix",))


def test_bad_data_or_out_is_refused_before_training(tmp_path: Path) -> None:
    no_test = make_tiles(tmp_path / "t", n_train=2, n_val=1)
    with pytest.raises(InputError, match="has no test tiles"):
        run_benchmark(BenchmarkOptions(data=no_test, out=tmp_path / "b", models="pix2pix", steps=1))
    tiles = tiles_with_test(tmp_path / "tt", labels=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="not a sarkit benchmark"):
        run_benchmark(BenchmarkOptions(data=tiles, out=tmp_path / "other", models="pix2pix", steps=1))
    with pytest.raises(InputError, match="needs a sar segmenter.*tile with --labels"):
        run_benchmark(BenchmarkOptions(data=tiles, out=tmp_path / "sc", models="cyclegan-sc", steps=1,
                                       device="cpu"))
    with pytest.raises(InputError, match="--steps must be an integer of at least 1"):
        BenchmarkOptions(data=tiles, out=tmp_path / "b", models="pix2pix", steps=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "t", "tt"]  # nothing made
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_benchmark_end_to_end_then_resumes_only_what_is_missing(tmp_path: Path) -> None:
    tiles = tiles_with_test(tmp_path / "tiles")
    out = tmp_path / "bench"
    base = dict(data=tiles, out=out, steps=2, segmenter_steps=2, device="cpu", batch_size=2, model_options=TINY)
    res = run_benchmark(BenchmarkOptions(models="pix2pix,cyclegan-sc", **base))
    done = {e.name: (e.trained, e.evaluated) for e in res.entries}
    assert done == {"segmenter-sar": ("trained", ""), "segmenter-optical": ("trained", ""),
                    "pix2pix-sar2opt": ("trained", "evaluated"), "pix2pix-opt2sar": ("trained", "evaluated"),
                    "cyclegan-sc-sar2opt": ("trained", "evaluated"), "cyclegan-sc-opt2sar": ("trained", "evaluated")}
    sc = json.loads((out / "runs" / "cyclegan-sc-sar2opt" / "config.json").read_text())
    assert sc["model_options"]["sar_segmenter"] == str(out / "runs" / "segmenter-sar")  # trained first, then used
    cfgs = [json.loads((out / "runs" / n / "config.json").read_text()) for n in done if "segmenter" not in n]
    assert {(c["total_steps"], c["train"]["seed"], c["train"]["batch_size"]) for c in cfgs} == {(2, 0, 2)}
    for n in done:  # one report per run: the run report; per translator run also the eval report
        assert (out / "runs" / n / "report.html").is_file()
        assert ("segmenter" in n) != (out / "reports" / n / "report.html").is_file()
    table = res.table
    methods = [r.method for r in table.rows]  # the models, then the baselines of the same pixels (issue 17)
    assert methods[:2] == ["pix2pix", "cyclegan-sc"]
    assert methods[2:] and all(m.startswith("baseline: ") for m in methods[2:]), methods
    assert {c.header for c in table.columns} >= {"SAR→OPT PSNR↑", "OPT→SAR MAE↓", "PA (SAR→OPT)↑", "PA (OPT→SAR)↑"}
    matching = {"pmr", "ir", "ir_ed"}  # SIFT finds too few keypoints on tiny generated tiles: counted, may be None
    assert matching <= {c.metric for c in table.columns}
    assert all(v is not None for r in table.rows[:2] for c, v in zip(table.columns, r.values)
               if c.metric not in matching)
    psnr = [i for i, c in enumerate(table.columns) if c.metric == "psnr"]
    assert psnr and all(r.values[i] is not None for r in table.rows[2:] for i in psnr)  # baselines: pixel metrics
    md = (out / "comparison" / "compare.md").read_text()
    assert md == table.markdown() and (out / "comparison" / "compare.tex").read_text().startswith("% sarkit")
    rec = json.loads((out / "benchmark.json").read_text())
    assert [r["name"] for r in rec["runs"]] == list(done) and rec["steps"] == 2

    # a model added and a longer budget: the new model is trained, the old one resumed, the segmenters kept
    longer = {**base, "steps": 3}
    res = run_benchmark(BenchmarkOptions(models="pix2pix,cut", **longer))
    done = {e.name: (e.trained, e.evaluated) for e in res.entries}
    assert done == {"segmenter-sar": ("kept", ""), "segmenter-optical": ("kept", ""),
                    "pix2pix-sar2opt": ("resumed", "evaluated"), "pix2pix-opt2sar": ("resumed", "evaluated"),
                    "cut-sar2opt": ("trained", "evaluated"), "cut-opt2sar": ("trained", "evaluated")}
    assert json.loads((out / "runs" / "pix2pix-sar2opt" / "config.json").read_text())["total_steps"] == 3
    assert [r.method for r in res.table.rows][:2] == ["pix2pix", "cut"]
    # nothing missing: nothing trained or evaluated again, the same table
    again = run_benchmark(BenchmarkOptions(models="pix2pix,cut", **longer))
    assert {(e.trained, e.evaluated) for e in again.entries} == {("kept", ""), ("kept", "kept")}
    assert again.table.markdown() == res.table.markdown()


def test_cli_benchmark_needs_its_options_and_refuses_bad_ones(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["benchmark", "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "--data" in r.output
    r = CliRunner().invoke(app, ["benchmark", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "b"),
                                 "--models", "pix2pix", "--steps", "1"])
    assert r.exit_code == 2 and "tile directory not found" in r.output and not (tmp_path / "b").exists()
