"""The benchmark scripts' helpers at tiny sizes, and run_all's summary (benchmarks/)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run_all():
    return _load("run_all")


def test_infer_bench_reports_median_min_and_bf16_quality():
    infer = _load("bench_infer")
    out = infer.bench([1, 2], ["fp32-contiguous", "bf16-channels_last"], repeats=2, warmup=1, tile=32, ngf=4)
    assert {(r["batch"], r["variant"]) for r in out["results"]} == {
        (b, v) for b in (1, 2) for v in ("fp32-contiguous", "bf16-channels_last")}
    for r in out["results"]:
        assert 0 < r["min_s_per_tile"] <= r["median_s_per_tile"]
        assert len(r["s_per_tile_samples"]) == 2
    assert set(out["bf16_psnr_db"]) == {"batch1-bf16-channels_last", "batch2-bf16-channels_last"}
    assert all(v > 30 for v in out["bf16_psnr_db"].values())


def test_infer_generator_is_the_pix2pix_unet():
    infer = _load("bench_infer")
    net = infer.make_generator(tile=32, ngf=4)
    assert not net.training
    with torch.inference_mode():
        y = net(torch.zeros(1, 2, 32, 32))
    assert tuple(y.shape) == (1, 3, 32, 32)


def test_tile_bench_plain_read_covers_the_tiler_windows(tmp_path):
    from sarkit.data.synth import SynthOptions, synth_scene

    tile = _load("bench_tile")
    synth_scene(tmp_path / "scene", SynthOptions(size=128, seed=0))
    s1 = tmp_path / "scene" / "s1.tif"
    wins = tile.windows_of(s1, 64)
    assert len(wins) == 4
    assert tile.plain_read([s1], wins) == 4 * 2 * 64 * 64
    assert tile.plain_read([s1], wins, tmp_path / "plain") == 4 * 2 * 64 * 64
    assert len(list((tmp_path / "plain").glob("*.tif"))) == 4
    out = tile.bench(tmp_path / "scene", 128, 64, repeats=1, warmup=0, work=tmp_path / "w")
    assert out["windows"] == 4 and len(out["results"]) == 6
    assert all(r["median_mp_per_s"] > 0 for r in out["results"])


def test_run_all_commands_use_json_into_out(run_all, tmp_path):
    for name in run_all.BENCHMARKS:
        for quick in (False, True):
            cmd = run_all.command(name, quick, tmp_path)
            assert cmd[-2:] == ["--json", str(tmp_path / f"{name}.json")]
            assert Path(cmd[1]).exists()
    assert "4096" in run_all.command("translate", False, tmp_path)
    assert "8192" in " ".join(run_all.command("translate", False, tmp_path))


def test_run_all_table_and_targets(run_all):
    results = {
        "train": {"command": "c", "status": "ok", "wall_s": 1, "result": {"results": [
            {"model": "pix2pix", "batch": 1, "size": 256, "median_s": 0.5, "min_s": 0.45,
             "median_per_image_s": 0.5}]}},
        "infer": {"command": "c", "status": "ok", "wall_s": 1, "result": {"tile": 256, "ngf": 64, "results": [
            {"batch": 1, "variant": "bf16-channels_last", "median_s_per_tile": 0.09, "min_s_per_tile": 0.08,
             "median_tiles_per_s": 11.1},
            {"batch": 8, "variant": "fp32-contiguous", "median_s_per_tile": 0.2, "min_s_per_tile": 0.19,
             "median_tiles_per_s": 5.0}]}},
        "translate": {"command": "c", "status": "ok", "wall_s": 1, "result": {"throughput": {
            "scene": "4096x4096x2 float32", "tiles": 441, "end_to_end_s": 10.0, "end_to_end_min_s": 9.0,
            "tiles_per_s": 44.1, "amp": "torch.bfloat16", "bare_generator_s": 8.0, "bare_generator_min_s": 7.5,
            "bare_tiles_per_s": 55.0, "ratio_bare_over_end_to_end": 0.8, "ratio_best": 0.85, "guard_s": 0.2,
            "lone_scene_end_to_end_s": 10.5, "lone_scene_ratio": 0.76}}},
        "eval": {"command": "python benchmarks/bench_eval.py", "status": "timeout", "wall_s": 1, "result": None},
    }
    text = run_all.table(results)
    assert "pix2pix batch 1" in text and "ratio bare / end-to-end" in text and "(timeout)" in text
    assert [ln for ln in text.splitlines() if "lone scene: ratio bare / end-to-end" in ln][0].split()[-1] == "0.760"
    met = {t["target"].split(" (")[0]: t["met"] for t in run_all.targets(results)}
    assert met["pix2pix step, batch 1 ≤ 0.8 × 0.72 s"] is True  # (train)
    assert met["U-Net inference < 0.1 s/tile"] is True
    assert met["translate end-to-end ≥ 0.9 × bare generator"] is False


@pytest.mark.slow
def test_run_all_quick_eval_and_infer(run_all, tmp_path):
    """A real run of two quick benchmarks through run_all (subprocesses, JSON, summary.json)."""
    rc = run_all.main(["--quick", "--only", "eval,infer", "--out", str(tmp_path)])
    assert rc == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["quick"] is True and set(summary["benchmarks"]) == {"eval", "infer"}
    assert summary["benchmarks"]["infer"]["result"]["results"]
    assert summary["benchmarks"]["eval"]["result"]["speedup"] > 0


def test_qsattn_bench_counts_what_autograd_saves_but_not_parameters():
    qs = _load("bench_qsattn")
    x = torch.randn(256, 1024, requires_grad=True)                    # 1 MiB
    assert qs.saved_peak_mib(lambda: x.exp().sum().backward(), torch.nn.Linear(1, 1)) == pytest.approx(1.0)
    net = torch.nn.Linear(1024, 256, bias=False)                      # a 1 MiB weight
    y = torch.randn(256, 1024, requires_grad=True)
    # the product saves both factors; the parameter does not count
    assert qs.saved_peak_mib(lambda: (net.weight * y).sum().backward(), net) == pytest.approx(1.0)


# ------------------------------------------------------------------ bench_vs_reference, profile_step, bench_train
FAKE_OPTIONS = '''
import argparse, sys
class TrainOptions:
    def initialize(self, parser):
        for a in ("--model", "--dataset_mode", "--gpu_ids", "--checkpoints_dir", "--name"):
            parser.add_argument(a, default="")
        for a in ("--crop_size", "--load_size", "--batch_size"):
            parser.add_argument(a, type=int, default=1)
        parser.add_argument("--no_antialias", action="store_true")
        return parser
    def parse(self):
        opt = self.initialize(argparse.ArgumentParser()).parse_args(sys.argv[1:])
        opt.gpu_ids = [int(i) for i in opt.gpu_ids.split(",") if int(i) >= 0]
        return opt
'''

FAKE_MODELS = '''
import torch
calls = []
class Model:
    """A stand-in original: one convolution trained by Adam on A → B."""
    def __init__(self, opt):
        self.opt = opt
        self.net = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.optimizer = torch.optim.Adam(self.net.parameters())
    def setup(self, opt):
        calls.append(("setup", opt.no_antialias, tuple(opt.gpu_ids)))
    def set_input(self, data):
        self.a, self.b = data["A"], data["B"]
    def optimize_parameters(self):
        self.optimizer.zero_grad()
        (self.net(self.a) - self.b).abs().mean().backward()
        self.optimizer.step()
def create_model(opt):
    calls.append(("create", opt.model, opt.batch_size))
    return Model(opt)
'''


def _fake_reference_tree(root: Path) -> Path:
    """A minimal tree with the originals' entry points (options.train_options.TrainOptions, models.create_model)."""
    (root / "options").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "options" / "__init__.py").write_text("")
    (root / "options" / "train_options.py").write_text(FAKE_OPTIONS)
    (root / "models" / "__init__.py").write_text(FAKE_MODELS)
    return root


def test_vs_reference_drives_the_original_through_its_parser_and_counts_both_sides(tmp_path, monkeypatch):
    """run_case builds the original through TrainOptions().parse() and create_model (CPU, optional flags only when
    its parser knows them), counts one step per side, and times every side in each round."""
    vs = _load("bench_vs_reference")
    tree = _fake_reference_tree(tmp_path / "tree")
    case = vs.Case("cut", ("--model", "x", "--batch_size", "2"), "pix2pix", 2,
                   optional_argv=("--no_antialias", "--not_known_here"))
    r = vs.run_case("fake", case, tree, 32, rounds=2, steps=1, variants=["unfused_adam"], sarkit_flush=True)
    import models  # the fake tree's package, imported by run_case
    assert ("create", "x", 2) in models.calls and ("setup", True, ()) in models.calls
    conv = 2 * 2 * 3 * 3 * 9 * 32 * 32  # one 3→3 3×3 convolution at 32², batch 2: forward + input-free backward
    assert r["gflop"]["original"] * 1e9 == pytest.approx(2 * conv)
    assert r["gflop"]["sarkit-fp32"] == r["gflop"]["sarkit-unfused_adam"] > r["gflop"]["original"]
    assert set(r["times_s"]) == {"original", "sarkit-fp32", "sarkit-unfused_adam"}
    assert all(len(v) == 2 and min(v) > 0 for v in r["cpu_s"].values())
    assert len(r["ratios"]["sarkit-fp32"]) == 2
    vs.purge_reference_modules()


def test_vs_reference_adapts_junyanz_define_d_calls_to_cut_signature():
    """In a CUT-derived tree junyanz's positional gpu_ids lands after a plain (no_antialias=True) PatchGAN."""
    vs = _load("bench_vs_reference")
    seen = {}

    class Networks:
        @staticmethod
        def define_D(input_nc, ndf, netD, n_layers_D=3, norm="batch", init_type="normal", init_gain=0.02,
                     no_antialias=False, gpu_ids=(), opt=None):
            seen.update(no_antialias=no_antialias, gpu_ids=gpu_ids)

    vs.adapt_define_d(Networks)
    Networks.define_D(6, 64, "basic", 3, "batch", "normal", 0.02, [])
    assert seen == {"no_antialias": True, "gpu_ids": []}


def test_profile_split_puts_convolution_padding_norm_and_optimizer_in_their_places():
    prof_step = _load("profile_step")
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(3, 8, 3), torch.nn.InstanceNorm2d(8),
                              torch.nn.ReLU())
    opt = torch.optim.Adam(net.parameters())
    x = torch.randn(1, 3, 32, 32)
    import time

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        net(x).square().mean().backward()
        opt.step()
        wall = time.perf_counter() - t
    split = prof_step.split_profile(list(prof.events()), wall * 1e6)
    assert set(split) == {"convolution", "normalisation", "padding", "other operators", "optimizer",
                          "outside operators"}
    assert all(split[k] > 0 for k in ("convolution", "normalisation", "padding", "optimizer"))
    assert split["convolution"] + split["optimizer"] < wall


def test_curve_band_is_zero_for_equal_runs_and_the_relative_moving_mean_gap_otherwise():
    tr = _load("bench_train")
    ref = [{"L": 1.0 + 0.1 * (i % 2)} for i in range(10)]
    assert tr.curve_band(ref, ref, 2)["L"]["max_rel_dev"] == 0.0
    other = [{"L": r["L"] + 0.05} for r in ref]
    band = tr.curve_band(ref, other, 2)["L"]
    assert band["max_rel_dev"] == pytest.approx(0.05 / 1.05)
    assert band["last_other"] - band["last_ref"] == pytest.approx(0.05)
