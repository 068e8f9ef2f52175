"""Con-Diffusion figures: training-step time per U-Net preset, sampling time per 256² tile, and quality against the
first-block cache threshold τ for a small model trained on generated tiles for a fixed budget.

    python benchmarks/bench_diffusion.py --part train --presets tiny,small,paper
    python benchmarks/bench_diffusion.py --part sample --presets tiny,small --measure-steps 10
    python benchmarks/bench_diffusion.py --part cache --train-steps 400 --json cache.json

* ``train``: ``ConDiffusion.train_step`` (SAR VV, VH → optical B4, B3, B2, 256², batch 1, fp32) after ``--warmup``
  steps, median and minimum of ``--repeats``.
* ``sample``: the engine's ``DiffusionPredictor`` on one 256² tile for DDPM-250, DDIM-50 and DDIM-20. A full run is
  timed where the sampler has at most ``--measure-steps`` steps; longer ones are timed over their first
  ``--measure-steps`` steps (the same network call each step) and the per-tile time given as steps × the measured
  time per step, marked ``projected`` (``--measure-steps 0`` runs every step).
* ``cache``: synthesises a scene, tiles it (``--tile``² tiles), trains con-diffusion (``--size``, T = 2000) for
  ``--train-steps`` steps, then samples the validation tiles with DDIM-``--cache-steps`` for every τ of ``--taus``:
  PSNR and SSIM against the target (``sarkit.eval.metrics``, valid pixels), seconds per tile and the fraction of
  tile-steps the first-block cache skipped.

Wall-clock times depend on what else runs on the machine (on a shared 2-core CPU they vary by 2× between runs);
process CPU time is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sarkit.devices import configure_backends  # noqa: E402
from sarkit.infer.diffusion import DiffusionPredictor, SamplingOptions  # noqa: E402
from sarkit.infer.engine import load_predictor  # noqa: E402
from sarkit.models.base import ModelIO, StepTools  # noqa: E402
from sarkit.models.checkpoint import LoadedNetwork  # noqa: E402
from sarkit.models.con_diffusion import ConDiffusion, ConDiffusionOptions  # noqa: E402
from sarkit.raster.norm import optical_normalization, sar_normalization  # noqa: E402

SAMPLERS = (("ddpm", 250), ("ddim", 50), ("ddim", 20))


def model_io(tile: int) -> ModelIO:
    """SAR (VV, VH) → optical (B4, B3, B2) at ``tile``²."""
    return ModelIO(2, 3, "sar2opt", tile, sar_normalization().to_dict(), optical_normalization().to_dict())


def timed(fn: Any) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def bench_train(preset: str, tile: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Seconds per training step of con-diffusion with U-Net preset ``preset``."""
    torch.manual_seed(0)
    model = ConDiffusion(model_io(tile), ConDiffusionOptions(size=preset))
    model.train()
    model.configure_optimizers(1e-4, (0.9, 0.999))
    g = torch.Generator().manual_seed(0)
    batch = {"sar": torch.rand(1, 2, tile, tile, generator=g) * 2 - 1,
             "optical": torch.rand(1, 3, tile, tile, generator=g) * 2 - 1,
             "valid": torch.ones(1, tile, tile, dtype=torch.bool)}
    tools = StepTools(device=torch.device("cpu"))
    for _ in range(warmup):
        model.train_step(batch, tools)
    runs = [timed(lambda: model.train_step(batch, tools)) for _ in range(repeats)]
    params = sum(p.numel() for p in model.nets["eps"].parameters())
    return {"preset": preset, "tile": tile, "params_m": params / 1e6,
            "median_s": statistics.median(r[0] for r in runs), "min_s": min(r[0] for r in runs),
            "cpu_s": statistics.median(r[1] for r in runs)}


def predictor_of(model: ConDiffusion, sampling: SamplingOptions) -> DiffusionPredictor:
    """The engine's predictor of ``model``'s EMA network, as translate loads an exported checkpoint."""
    [(kind, module, arch, kwargs)] = model.export()
    net = LoadedNetwork(module.eval(), kind, arch, kwargs, model.export_meta(), Path("bench.safetensors"), "-")
    p = load_predictor(net, "cpu", None, sampling=sampling)
    assert isinstance(p, DiffusionPredictor)
    return p


def bench_sample(preset: str, tile: int, measure_steps: int) -> list[dict[str, Any]]:
    """Seconds per ``tile``² tile for each of ``SAMPLERS`` (a random-weight model: sampling cost does not depend
    on the weights)."""
    torch.manual_seed(0)
    model = ConDiffusion(model_io(tile), ConDiffusionOptions(size=preset))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 2, tile, tile)).astype(np.float32)
    predictor_of(model, SamplingOptions(sampler="ddim", steps=2))(x)  # warm-up
    out = []
    for kind, steps in SAMPLERS:
        run_steps = steps if not measure_steps or steps <= measure_steps else measure_steps
        p = predictor_of(model, SamplingOptions(sampler=kind, steps=run_steps))
        wall, cpu = timed(lambda: p(x))
        out.append({"preset": preset, "tile": tile, "sampler": f"{kind.upper()}-{steps}",
                    "measured_steps": run_steps, "s_per_step": wall / run_steps,
                    "s_per_tile": wall / run_steps * steps, "cpu_s_per_tile": cpu / run_steps * steps,
                    "projected": run_steps != steps})
    return out


def bench_cache(args: argparse.Namespace) -> dict[str, Any]:
    """Train a small model on generated tiles, then PSNR/SSIM/time/skipped fraction per τ."""
    from sarkit.data.dataset import TileDataset
    from sarkit.data.synth import SynthOptions, synth_scene
    from sarkit.data.tiling import TileOptions, tile_scene
    from sarkit.eval.metrics import finite_mean, pixel_metrics, unit_range
    from sarkit.training import TrainOptions, train

    work = Path(args.work or tempfile.mkdtemp(prefix="sarkit-bench-diffusion-"))
    tiles = work / "tiles"
    if not tiles.exists():
        scene = synth_scene(work / "scene", SynthOptions(size=args.scene, seed=1), overwrite=True)
        tile_scene(scene.s1_path, scene.s2_path, scene.labels_path, tiles,
                   TileOptions(size=args.tile, stride=args.tile // 2, split=(0.85, 0.15, 0.0), max_nodata=0.3))
    run = work / "run"
    t0 = time.perf_counter()
    if not (run / "checkpoints" / "generator.safetensors").exists():
        train(TrainOptions(model="con-diffusion", data=tiles, out=run, steps=args.train_steps, batch_size=4,
                           device="cpu", lr=args.lr, val_every=0, save_every=args.train_steps, seed=0,
                           model_options={"size": args.size}))
    train_s = time.perf_counter() - t0
    ds = TileDataset(tiles, split="val", mode="paired", sar_bands=None, optical_bands=("B4", "B3", "B2"))
    items = [ds[i] for i in range(min(len(ds), args.val_tiles))]
    x = np.stack([it["sar"].numpy() for it in items])
    y = torch.stack([it["optical"] for it in items])
    valid = torch.stack([it["valid"] for it in items])
    load_predictor(run, "cpu", None, sampling=SamplingOptions(sampler="ddim", steps=2))(x[:args.batch])  # warm-up
    rows = []
    for tau in args.taus:
        p = load_predictor(run, "cpu", None, sampling=SamplingOptions(sampler="ddim", steps=args.cache_steps,
                                                                      cache_threshold=tau))
        preds = []
        wall, cpu = timed(lambda: preds.append(np.concatenate([p(x[i:i + args.batch])
                                                               for i in range(0, len(x), args.batch)])))
        m = pixel_metrics(unit_range(torch.from_numpy(preds[0])), unit_range(y), valid)
        rows.append({"tau": tau, "psnr": finite_mean(m["psnr"]), "ssim": finite_mean(m["ssim"]),
                     "s_per_tile": wall / len(x), "cpu_s_per_tile": cpu / len(x),
                     "skipped_fraction": p.skipped / max(p.evaluated, 1)})
    return {"work": str(work), "size": args.size, "tile": args.tile, "train_steps": args.train_steps,
            "train_s": train_s, "val_tiles": len(x), "sampler": f"DDIM-{args.cache_steps}", "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("train", "sample", "cache", "all"), default="all")
    ap.add_argument("--presets", default="tiny,small,paper", help="U-Net presets for train/sample")
    ap.add_argument("--tile", type=int, default=None, help="tile side (train/sample 256, cache 64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--measure-steps", type=int, default=10)
    ap.add_argument("--size", default="tiny", help="cache part: the preset trained")
    ap.add_argument("--scene", type=int, default=768)
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--val-tiles", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cache-steps", type=int, default=50)
    ap.add_argument("--taus", type=lambda s: [float(v) for v in s.split(",")], default=[0, 0.05, 0.1, 0.2, 0.3])
    ap.add_argument("--work", default=None, help="cache part: folder for the scene, tiles and run (reused)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    configure_backends(torch.device("cpu"))
    presets = args.presets.split(",")
    out: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                                       "load_1min_at_start": os.getloadavg()[0],
                                       "torch": torch.__version__, "python": platform.python_version(),
                                       "processor": platform.processor() or platform.machine()}}
    if args.part in ("train", "all"):
        out["train"] = []
        for pr in presets:
            r = bench_train(pr, args.tile or 256, args.repeats if pr != "paper" else 1,
                            args.warmup if pr != "paper" else 0)
            out["train"].append(r)
            print(f"train  {pr:6s} {r['params_m']:7.1f} M params  {r['median_s']:8.2f} s/step (min "
                  f"{r['min_s']:.2f}, cpu {r['cpu_s']:.2f})", flush=True)
    if args.part in ("sample", "all"):
        out["sample"] = []
        for pr in [p for p in presets if p != "paper"]:
            for r in bench_sample(pr, args.tile or 256, args.measure_steps):
                out["sample"].append(r)
                note = f" (projected from {r['measured_steps']} steps)" if r["projected"] else ""
                print(f"sample {pr:6s} {r['sampler']:9s} {r['s_per_tile']:8.1f} s/tile, {r['s_per_step']:.3f} "
                      f"s/step{note}", flush=True)
    if args.part in ("cache", "all"):
        args.tile = args.tile or 64
        res = bench_cache(args)
        out["cache"] = res
        print(f"cache  {res['size']} model, {res['train_steps']} steps on {res['tile']}² tiles "
              f"({res['train_s']:.0f} s), {res['val_tiles']} val tiles, {res['sampler']}")
        for r in res["rows"]:
            print(f"  tau {r['tau']:<5g} PSNR {r['psnr']:6.2f} dB  SSIM {r['ssim']:.4f}  {r['s_per_tile']:7.2f} "
                  f"s/tile  skipped {100 * r['skipped_fraction']:5.1f} %", flush=True)
    out["machine"]["load_1min_at_end"] = os.getloadavg()[0]
    print(f"1-minute load: {out['machine']['load_1min_at_start']:.2f} at the start, "
          f"{out['machine']['load_1min_at_end']:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
