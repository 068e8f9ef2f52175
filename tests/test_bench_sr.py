"""The super-resolution benchmark at a tiny size (benchmarks/bench_sr.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("_bench_sr", ROOT / "benchmarks" / "bench_sr.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_real_s2_crops_are_reflectance_without_nodata(realdata):
    b = _bench()
    crops, used = b.real_tiles(32, 2)
    assert crops.shape[1:] == (3, 32, 32) and len(crops) == 2 * len(used) >= 2
    assert (crops > 0).all() and crops.max() < 1.5  # DN / 10000


@pytest.mark.slow
def test_every_method_gets_a_row_per_data_set(tmp_path):
    b = _bench()
    out = tmp_path / "sr.json"
    b.main(["--scales", "2", "--scene", "128", "--train-steps", "2", "--seg-steps", "0", "--val-tiles", "2",
            "--real-per-image", "1", "--steps1", "2", "--steps2", "2", "--taus", "0,0.5", "--work",
            str(tmp_path / "work"), "--json", str(out)])
    res = json.loads(out.read_text())["scales"][0]
    assert res["scale"] == 2 and any("SMS not computed" in n for n in res["notes"])
    rows = res["sets"]["generated"]["rows"]
    assert [r["method"] for r in rows] == ["bicubic", "stage 1 (DDIM-1: the one-step x̂₀)", "stage 1 (DDIM-2)",
                                           "stages 1+2, no semantic, τ = 0",
                                           "stages 1+2, no semantic, τ = 0.5"]
    assert all(np.isfinite(r["psnr"]) and r["s_per_tile"] >= 0 for r in rows)
    assert rows[0]["psnr"] > 20  # bicubic of the area downsampling of smooth generated tiles
