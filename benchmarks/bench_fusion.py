"""Regression, generative branch and their fusion (issue 20) on generated tiles, with a fixed small budget: the
restoration paper's Table 1 shape (PSNR, SSIM, LPIPS, FID per branch and for the fusion) and the training step time
of each stage.

Generates a scene (``sarkit.data.synth``), tiles it, trains ``regression`` (NAFNet ``--preset``), the generative
branch (``pix2pix`` with ``--ngf``: the stand-in for the gan-prior branch, see docs/models.md) and ``fusion`` on the
two (RUN/checkpoints/best: its best validation PSNR), then evaluates each on the validation split with ``sarkit
eval``'s library (``sarkit.eval.runner.run_eval`` on ``--checkpoint``). LPIPS and FID need their offline weights
(``$SARKIT_LPIPS_WEIGHTS`` / ``$SARKIT_LPIPS_BACKBONE``, ``$SARKIT_FID_WEIGHTS`` or the caches): when absent they are
reported as missing. The fusion's LPIPS and contextual (VGG19, ``$SARKIT_VGG19_WEIGHTS``) loss terms are used when
their weights are found, else the fusion trains on L1 alone and the output says so.

Step times are the mean wall-clock seconds between logged steps (``log_every`` 1) of each run, after the first;
the machine's load average is printed with them.

    python benchmarks/bench_fusion.py --json fusion.json
    python benchmarks/bench_fusion.py --steps 400,400,200 --scene 512 --work /tmp/fusion-bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sarkit.errors import WeightsNotFoundError  # noqa: E402
from sarkit.weights import INCEPTION, LPIPS_BACKBONE, LPIPS_HEADS, VGG19, resolve  # noqa: E402


def available(*kinds: Any) -> bool:
    """Whether every weight kind resolves to a local file."""
    try:
        for k in kinds:
            resolve(k)
    except WeightsNotFoundError:
        return False
    return True


def make_tiles(work: Path, scene: int, tile: int) -> Path:
    """A generated scene tiled into ``tile``² tiles (80 % train, 20 % val), reused when already there."""
    from sarkit.data.synth import SynthOptions, synth_scene
    from sarkit.data.tiling import TileOptions, tile_scene

    tiles = work / "tiles"
    if not tiles.exists():
        s = synth_scene(work / "scene", SynthOptions(size=scene, seed=1), overwrite=True)
        tile_scene(s.s1_path, s.s2_path, s.labels_path, tiles,
                   TileOptions(size=tile, stride=tile, split=(0.8, 0.2, 0.0), max_nodata=0.3))
    return tiles


def train_run(tiles: Path, out: Path, model: str, steps: int, lr: float, options: dict[str, Any],
              val_every: int = 0) -> dict[str, Any]:
    """Train one run (batch 4, CPU) unless it is there; its step time from metrics.jsonl."""
    from sarkit.training import TrainOptions, train

    if not (out / "checkpoints" / "generator.safetensors").exists():
        train(TrainOptions(model=model, data=tiles, out=out, steps=steps, batch_size=4, device="cpu", lr=lr,
                           val_every=val_every, save_every=steps, log_every=1, seed=0, model_options=options))
    times = [json.loads(x)["time"] for x in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "train"]
    step_s = (times[-1] - times[1]) / max(len(times) - 2, 1) if len(times) > 2 else float("nan")
    return {"model": model, "steps": steps, "s_per_step": step_s}


def evaluate(checkpoint: Path, tiles: Path, metrics: tuple[str, ...]) -> dict[str, float]:
    """Mean of each metric over the validation tiles (``sarkit eval --checkpoint``'s numbers)."""
    from sarkit.eval.options import EvalOptions
    from sarkit.eval.runner import run_eval

    res = run_eval(EvalOptions(metrics=metrics, device="cpu", tile_size=256), checkpoint=checkpoint, data=tiles,
                   split="val")
    out = {}
    for m in metrics:
        rec = res.summary.get(m, {})
        out[m] = float(rec.get("mean", rec.get("value", float("nan")))) if isinstance(rec, dict) else float(rec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=int, default=256, help="generated scene side (px)")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--steps", default="60,60,30", help="training steps of regression, pix2pix, fusion")
    ap.add_argument("--preset", default="tiny", help="regression NAFNet preset")
    ap.add_argument("--ngf", type=int, default=16, help="pix2pix U-Net width")
    ap.add_argument("--width", type=int, default=16, help="fusion width")
    ap.add_argument("--work", default=None, help="folder for the scene, tiles and runs (reused)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    s_reg, s_gen, s_fus = (int(v) for v in args.steps.split(","))
    work = Path(args.work or tempfile.mkdtemp(prefix="sarkit-bench-fusion-"))
    load0 = os.getloadavg()
    perceptual = available(LPIPS_HEADS, LPIPS_BACKBONE) and available(VGG19)
    metrics = ("psnr", "ssim") + (("lpips",) if available(LPIPS_HEADS, LPIPS_BACKBONE) else ()) \
        + (("fid",) if available(INCEPTION) else ())
    t0 = time.perf_counter()
    tiles = make_tiles(work, args.scene, args.tile)
    reg, gen, fus = work / "regression", work / "pix2pix", work / "fusion"
    stages = [train_run(tiles, reg, "regression", s_reg, 1e-3, {"preset": args.preset}),
              train_run(tiles, gen, "pix2pix", s_gen, 2e-4, {"ngf": args.ngf, "ndf": args.ngf})]
    fopts: dict[str, Any] = {"x_r_from": str(reg), "x_g_from": str(gen), "width": args.width}
    if not perceptual:
        fopts.update(lambda_per=0.0, lambda_fc=0.0)
    stages.append(train_run(tiles, fus, "fusion", s_fus, 1e-3, fopts, val_every=max(s_fus // 5, 1)))
    rows = [{"branch": "regression (x_R)", **evaluate(reg, tiles, metrics)},
            {"branch": "generative (x_G, pix2pix)", **evaluate(gen, tiles, metrics)},
            {"branch": "fusion (best val PSNR)", **evaluate(fus / "checkpoints" / "best", tiles, metrics)}]
    out = {"machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "load_1min_start": load0[0],
                       "load_1min_end": os.getloadavg()[0], "torch": torch.__version__,
                       "python": platform.python_version()},
           "setup": {"scene": args.scene, "tile": args.tile, "preset": args.preset, "ngf": args.ngf,
                     "width": args.width, "fusion_loss": "L1 + LPIPS + CX" if perceptual else "L1 only (no weights)",
                     "missing_metrics": [m for m in ("lpips", "fid") if m not in metrics]},
           "stages": stages, "rows": rows, "total_s": time.perf_counter() - t0, "work": str(work)}
    print(f"fusion bench: {args.scene}² scene, {args.tile}² tiles; fusion loss {out['setup']['fusion_loss']}; "
          f"load {load0[0]:.2f} → {out['machine']['load_1min_end']:.2f}")
    print("| branch | " + " | ".join(m.upper() for m in metrics) + " |")
    for r in rows:
        print(f"| {r['branch']} | " + " | ".join(f"{r[m]:.4g}" for m in metrics) + " |")
    for m in out["setup"]["missing_metrics"]:
        print(f"{m.upper()}: not measured, its offline weights are not on this machine")
    for s in stages:
        print(f"train {s['model']:10s} {s['steps']:5d} steps  {s['s_per_step']:.3f} s/step")
    print(f"total {out['total_s']:.0f} s; runs in {work}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
