"""The raster layer's rules as the commands show them: tile, translate and eval refuse what cannot be Sentinel-1 and
truncated files (exit 2, one line, nothing left); linear power with negative pixels is read as linear; ±inf is
nodata in tiles and translations; an undescribed 1-band file is VV for tile and translate alike."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from badinput import BadInput, assert_refused
from raster.sarfiles import db_sigma0, linear_sigma0, truncated_copy, vv_checkpoint, write_sar
from sarkit.cli import app

SIZE = 128


def _s1(folder: Path, name: str, data: np.ndarray, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_sar(folder / name, data, **kw)


def optical_as_s1(d: Path) -> Path:
    return _s1(d, "s2.tif", np.random.default_rng(0).integers(1, 5000, (13, SIZE, SIZE)).astype(np.uint16), nodata=0)


def uint8_s1(d: Path) -> Path:
    return _s1(d, "s1_8bit.tif", np.random.default_rng(1).integers(0, 256, (1, SIZE, SIZE)).astype(np.uint8),
               nodata=None)


def float_dn_s1(d: Path) -> Path:
    return _s1(d, "dn.tif", np.random.default_rng(2).uniform(500, 4000, (1, SIZE, SIZE)).astype(np.float32))


def three_bands(d: Path) -> Path:
    return _s1(d, "three.tif", db_sigma0((3, SIZE, SIZE), seed=3))


def truncated(d: Path) -> Path:
    return truncated_copy(_s1(d, "full.tif", db_sigma0((1, 256, 256), seed=4)), d / "cut.tif", 0.5)


def corrupt(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "bad.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    return d / "bad.tif"


SCENES = [
    ("optical_as_s1", optical_as_s1, ["s2.tif", "13 bands", "uint16", "values 1", "gdal_translate"]),
    ("uint8_s1", uint8_s1, ["s1_8bit.tif", "1 band", "uint8", "values 0", "--s1-units"]),
    ("float_dn_s1", float_dn_s1, ["dn.tif", "float32", "does not look like sentinel-1", "median", "--s1-units"]),
    ("three_bands", three_bands, ["three.tif", "3 bands", "float32"]),
    ("truncated", truncated, ["cut.tif", "reading rows", "truncated or corrupt"]),
    ("corrupt_header", corrupt, ["bad.tif", "not a readable raster"]),
]

TILE_CASES = [BadInput(f"tile-{n}", lambda t, make=make: ["tile", str(make(t / "in")), "--out", str(t / "out" / "tiles"),
                                                          "--size", "64"], says=says)
              for n, make, says in SCENES]


def _translate_args(t: Path, scene: Path) -> list[str]:
    return ["translate", str(scene), "--checkpoint", str(vv_checkpoint(t / "vv.safetensors")), "--out",
            str(t / "out" / "o.tif"), "--device", "cpu", "--overlap", "16"]


TRANSLATE_CASES = [BadInput(f"translate-{n}", lambda t, make=make: _translate_args(t, make(t / "in")), says=says)
                   for n, make, says in SCENES]


@pytest.mark.parametrize("case", TILE_CASES + TRANSLATE_CASES, ids=[c.name for c in TILE_CASES + TRANSLATE_CASES])
def test_not_sentinel1_and_broken_files_are_refused(case, tmp_path):
    args = case.build(tmp_path)
    (tmp_path / "out").mkdir(exist_ok=True)
    assert_refused(args, watch=tmp_path / "out", code=case.code, says=case.says)


def test_eval_refuses_a_truncated_target_naming_it(tmp_path):
    cut = truncated(tmp_path / "in")
    pred = _s1(tmp_path / "in", "pred.tif", db_sigma0((1, 256, 256), seed=5))
    (tmp_path / "out").mkdir()
    assert_refused(["eval", "--pred", str(pred), "--target", str(cut), "--report", str(tmp_path / "out" / "rep")],
                   watch=tmp_path / "out", says=["cut.tif", "truncated or corrupt"])


# --------------------------------------------------------------------------------------------- what is accepted


def _run(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.stderr


def _tiles(out: Path) -> np.ndarray:
    """Every SAR tile under ``out`` stacked (N, C, h, w)."""
    arrays = []
    for f in sorted((out / "s1").glob("*.tif")):
        with rasterio.open(f) as src:
            arrays.append(src.read())
    return np.stack(arrays)


def test_tile_reads_linear_power_with_negative_pixels_as_linear(tmp_path):
    lin = linear_sigma0((2, SIZE, SIZE), seed=6, noise=0.004)
    assert (lin < 0).any()
    rc, err = _run(["tile", _s1(tmp_path, "lin.tif", lin), "--out", tmp_path / "t", "--size", "64",
                    "--max-nodata", "1"])
    assert rc == 0, err
    assert json.loads((tmp_path / "t" / "tiling.json").read_text())["sources"]["s1_units_detected"] == ["linear"]
    assert -25.0 < float(np.nanmedian(_tiles(tmp_path / "t"))) < -10.0  # dB, not "dB" near 0


def test_tile_s1_units_says_what_integers_hold(tmp_path):
    rc, err = _run(["tile", uint8_s1(tmp_path / "in"), "--out", tmp_path / "t", "--size", "64", "--s1-units", "db"])
    assert rc == 0, err
    assert json.loads((tmp_path / "t" / "tiling.json").read_text())["sources"]["s1_units_detected"] == ["db"]


@pytest.mark.parametrize("descriptions", [None, ["Band 1"]], ids=["undescribed", "generic-description"])
def test_single_band_file_is_vv_for_tile_and_translate(tmp_path, descriptions):
    scene = _s1(tmp_path, "one.tif", db_sigma0((1, SIZE, SIZE), seed=7), descriptions=descriptions)
    rc, err = _run(["tile", scene, "--out", tmp_path / "t", "--size", "64"])
    assert rc == 0, err
    assert json.loads((tmp_path / "t" / "tiling.json").read_text())["sar_bands"] == ["VV"]
    rc, err = _run(_translate_args(tmp_path, scene))
    assert rc == 0, err
    assert (tmp_path / "out" / "o.tif").is_file()


def test_inf_pixels_are_nodata_in_tiles_and_translations(tmp_path):
    db = db_sigma0((1, SIZE, SIZE), seed=8)
    db[0, :16, :16] = np.inf
    db[0, 16:32, :16] = -np.inf
    scene = _s1(tmp_path, "inf.tif", db, nodata=-9999.0)
    rc, err = _run(["tile", scene, "--out", tmp_path / "t", "--size", "64", "--max-nodata", "1"])
    assert rc == 0, err
    with rasterio.open(tmp_path / "t" / "s1" / sorted(p.name for p in (tmp_path / "t" / "s1").iterdir())[0]) as src:
        first = src.read(1)  # the top-left tile
    assert not np.isinf(_tiles(tmp_path / "t")).any()
    assert np.isnan(first[:32, :16]).all() and np.isfinite(first[32:, :]).all()
    rc, err = _run(_translate_args(tmp_path, scene))
    assert rc == 0, err
    with rasterio.open(tmp_path / "out" / "o.tif") as out:
        mask = out.dataset_mask()
    assert (mask[:32, :16] == 0).all() and (mask[32:, :] == 255).all()


def test_translate_says_which_units_it_read(tmp_path):
    scene = _s1(tmp_path, "lin.tif", linear_sigma0((1, SIZE, SIZE), seed=9, noise=0.004))
    rc, err = _run([*_translate_args(tmp_path, scene), "--log-format", "json"])
    assert rc == 0, err
    events = [json.loads(ln) for ln in err.splitlines() if ln.strip()]
    units = [e for e in events if e.get("event") == "info" and "units" in e]
    assert len(units) == 1 and units[0]["units"] == "linear"
    assert "lin.tif" in units[0]["message"] and "linear power (detected" in units[0]["message"]


def test_eval_detects_a_linear_target_scene_and_says_so(tmp_path):
    from sarkit.eval.options import EvalOptions
    from sarkit.eval.runner import run_eval
    from sarkit.reporting import RecordingReporter

    db = db_sigma0((1, SIZE, SIZE), seed=10)
    pred = _s1(tmp_path, "pred.tif", db)
    target = _s1(tmp_path, "target_lin.tif", (10 ** (db / 10)).astype(np.float32))
    rep = RecordingReporter()
    res = run_eval(EvalOptions(), rep, pred=pred, target=target)
    assert res.summary["mae"]["value"] < 1e-5  # the same backscatter, compared in dB
    said = [m for m in rep.infos if "units" in m]
    assert len(said) == 1 and "target_lin.tif" in said[0] and "linear power (detected" in said[0]
