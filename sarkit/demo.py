"""``sarkit demo``: the whole pipeline on generated data, as the README's first command runs it.

Stages: generate a training scene and a separate test scene (different seeds, same kind of land), tile the
training scene, train pix2pix for a bounded number of steps, translate the whole test scene to a COG, evaluate
it against the test scene's optical image and write the HTML report. ``full`` also trains CycleGAN, CUT, QS-Attn,
the two DeepLabV3 segmenters and cyclegan-sc, and con-diffusion at a small size (the tiny U-Net preset, sampled
with ``diffusion_steps`` deterministic DDIM steps), translates and evaluates each, and writes a side-by-side
comparison.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sarkit.errors import InputError
from sarkit.io import check_output, output_lock, write_atomic_text
from sarkit.reporting import NULL_REPORTER, Reporter


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs. The defaults finish in a few minutes on a 2-core CPU."""

    out: Path = Path("sarkit-demo")
    full: bool = False
    train_size: int = 1024
    tile_size: int = 128            # 128² tiles (a 7-level U-Net): a quarter of the cost of 256² per step on a CPU
    test_size: int = 768
    steps: int = 2000
    full_steps: int = 300
    diffusion_steps: int = 10       # con-diffusion's DDIM sampling steps in the full demo
    ngf: int = 32
    upsample: str = "resize"        # pix2pix decoder: resize-convolution (issue 17: no checkerboard, beats transpose)
    lambda_l1: float = 10000.0      # pix2pix λ_L1 (issue 17: +0.9 dB over the paper's 100 on real pairs at 3,000 steps)
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False


@dataclass
class DemoResult:
    """Paths of everything the demo wrote, the per-stage timings and the evaluation summaries."""

    out: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        """Wall time of all stages together."""
        return sum(self.seconds.values())


def _timed(result: DemoResult, name: str, fn: Callable[[], Any]) -> Any:
    """Run one stage and record its wall time under ``name``."""
    t0 = time.perf_counter()
    value = fn()
    result.seconds[name] = time.perf_counter() - t0
    return value


def _summary_values(report: dict[str, Any]) -> dict[str, Any]:
    """metric → aggregate value of an evaluation report."""
    return {m: v.get("value", v.get("mean")) if isinstance(v, dict) else v for m, v in report["summary"].items()}


#: Written last, atomically: its presence says the demo in that folder ran to the end.
SUMMARY_NAME = "demo.json"


def demo_finished(out: str | Path) -> bool:
    """True when ``out`` holds a demo that ran to the end (its ``demo.json`` exists)."""
    return (Path(out) / SUMMARY_NAME).is_file()


def run_demo(opts: DemoOptions, reporter: Reporter = NULL_REPORTER) -> DemoResult:
    """Run the demo pipeline into ``opts.out`` (replaced only with ``overwrite``); a second run fails at once."""
    if opts.steps < 1 or opts.full_steps < 1:
        raise InputError("--steps must be at least 1")
    if opts.diffusion_steps < 1:
        raise InputError(f"diffusion_steps must be at least 1, got {opts.diffusion_steps}")
    out = Path(opts.out)
    check_output(out, opts.overwrite)
    with output_lock(out):
        res = _run_demo(opts, reporter)
        res.outputs["summary"] = out / SUMMARY_NAME
        record = {"outputs": {k: str(v) for k, v in res.outputs.items()}, "seconds": res.seconds,
                  "metrics": res.metrics, "options": {"full": opts.full, "steps": opts.steps, "seed": opts.seed}}
        write_atomic_text(out / SUMMARY_NAME, json.dumps(record, indent=1, default=str) + "\n")
    return res


def _run_demo(opts: DemoOptions, reporter: Reporter) -> DemoResult:
    from sarkit.eval.report import write_report
    from sarkit.eval.options import EvalOptions
    from sarkit.eval.runner import run_eval
    from sarkit.data.synth import SynthOptions, synth_scene
    from sarkit.data.tiling import TileOptions, tile_scene
    from sarkit.training import TrainOptions, train
    from sarkit.infer.translate import TranslateOptions, translate_scene

    out = Path(opts.out)
    if out.exists() and opts.overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    res = DemoResult(out)

    train_scene, test_scene = _timed(res, "synth", lambda: (
        synth_scene(out / "train-scene", SynthOptions(size=opts.train_size, seed=opts.seed + 1), reporter=reporter),
        synth_scene(out / "test-scene", SynthOptions(size=opts.test_size, seed=opts.seed + 2), reporter=reporter)))
    res.outputs.update({"training scene": train_scene.out_dir, "test scene": test_scene.out_dir})

    tiles = out / "tiles"
    _timed(res, "tile", lambda: tile_scene(
        train_scene.s1_path, train_scene.s2_path, train_scene.labels_path, tiles,
        TileOptions(size=opts.tile_size, stride=opts.tile_size // 2, split=(0.9, 0.1, 0.0), max_nodata=0.3,
                    seed=opts.seed), reporter))
    res.outputs["tiles"] = tiles

    def train_model(model: str, run: Path, steps: int, extra: dict[str, Any], **kw: Any) -> Path:
        topts = TrainOptions(model=model, data=tiles, out=run, steps=steps, device=opts.device, seed=opts.seed,
                             val_every=steps, save_every=steps, augment=True, model_options=extra, **kw)
        _timed(res, f"train {run.name}", lambda: train(topts, reporter))
        res.outputs[f"run {run.name}"] = run
        return run

    def translate_and_eval(run: Path, name: str, segmenter: Path | None = None) -> None:
        pred = out / f"translated-{name}.tif"
        _timed(res, f"translate {name}", lambda: translate_scene(
            test_scene.s1_path, run, pred, TranslateOptions(device=opts.device, overlap=opts.tile_size // 4), reporter))
        metrics = ("psnr", "ssim", "mae") + (("pa", "sms") if segmenter else ())
        eopts = EvalOptions(metrics=metrics, segmenter=segmenter, input_scene=test_scene.s1_path)
        result = _timed(res, f"eval {name}", lambda: run_eval(eopts, reporter, pred=pred,
                                                              target=test_scene.s2_path,
                                                              labels=test_scene.labels_path))
        report_dir = out / f"report-{name}"
        write_report(report_dir, result, overwrite=True)
        res.outputs[f"translated ({name})"] = pred
        res.outputs[f"report ({name})"] = report_dir / "report.html"
        res.metrics[name] = _summary_values(result.report)

    small = {"ngf": opts.ngf, "ndf": opts.ngf, "upsample": opts.upsample, "lambda_l1": opts.lambda_l1}
    p2p = train_model("pix2pix", out / "run-pix2pix", opts.steps, small)
    if not opts.full:
        translate_and_eval(p2p, "pix2pix")
        return res

    # segmenters at batch 4 (half the steps, about the same time): BatchNorm statistics of single tiles are noisy
    seg_steps, seg_model = max(opts.full_steps // 2, 1), {"backbone": "mobilenet_v3_large"}
    seg_opt = train_model("segmenter", out / "run-seg-optical", seg_steps, seg_model, modality="optical",
                          batch_size=4)
    seg_sar = train_model("segmenter", out / "run-seg-sar", seg_steps, seg_model, modality="sar", batch_size=4)
    translate_and_eval(p2p, "pix2pix", seg_opt)
    resnet = {"ngf": opts.ngf // 2, "ndf": opts.ngf, "n_blocks": 6}
    for name in ("cyclegan", "cut", "qs-attn"):
        run = train_model(name, out / f"run-{name}", opts.full_steps, resnet)
        translate_and_eval(run, name, seg_opt)
    sc = train_model("cyclegan-sc", out / "run-cyclegan-sc", opts.full_steps,
                     {**resnet, "sar_segmenter": str(seg_sar), "optical_segmenter": str(seg_opt)})
    translate_and_eval(sc, "cyclegan-sc", seg_opt)
    diffusion = {"size": "tiny", "sampler": "ddim", "sample_steps": opts.diffusion_steps,
                 "val_steps": opts.diffusion_steps}
    cd = train_model("con-diffusion", out / "run-con-diffusion", opts.full_steps, diffusion)
    translate_and_eval(cd, "con-diffusion", seg_opt)
    from sarkit.eval.compare import compare_markdown

    reports = [out / f"report-{n}" for n in ("pix2pix", "cyclegan", "cut", "qs-attn", "cyclegan-sc",
                                             "con-diffusion")]
    write_atomic_text(out / "compare.md", compare_markdown(reports))
    res.outputs["comparison"] = out / "compare.md"
    return res
