"""The con-diffusion benchmark's helpers at tiny sizes (benchmarks/bench_diffusion.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("_bench_diffusion", ROOT / "benchmarks" / "bench_diffusion.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_train_and_sample_figures_at_a_tiny_size():
    b = _bench()
    r = b.bench_train("tiny", 16, repeats=1, warmup=0)
    assert r["preset"] == "tiny" and 2.0 < r["params_m"] < 2.2 and r["median_s"] > 0
    rows = b.bench_sample("tiny", 16, measure_steps=2)
    assert [x["sampler"] for x in rows] == ["DDPM-250", "DDIM-50", "DDIM-20"]
    assert all(x["projected"] and x["measured_steps"] == 2 for x in rows)
    assert rows[0]["s_per_tile"] == pytest.approx(rows[0]["s_per_step"] * 250)
