"""Super-resolution figures (issue 21): sr-diffusion against bicubic on generated optical tiles and on the real
Sentinel-2 samples of ../shared/realdata, at ×2 and ×4, LR made by area downsampling of the HR tile.

    python benchmarks/bench_sr.py --scales 2,4 --train-steps 300 --json sr.json

Per scale: a generated scene is synthesised and tiled (``--tile``² HR tiles, optical B4, B3, B2 with labels), an
sr-diffusion model (``--size`` tiny, T = ``--timesteps``, ``--target`` residual and ``--prediction`` x0 by
default) is trained for ``--train-steps`` steps (semantic guidance
only when ``--clip-weights`` names real CLIP weights: without them the caption would come from a random network),
and an optical DeepLabV3 segmenter (mobilenet_v3_large) for ``--seg-steps`` steps for SMS. Then, on the generated
validation tiles and on HR crops of the real S2 samples (SEN12MS-CR cloud-free L1C, Sen1Floods11 S2Hand L1C; B4, B3,
B2 as reflectance = DN / 10000 under the tile set's fixed ranges), for each method:

* ``bicubic``: bicubic ×s of LR;
* ``stage 1 (DDIM-1)``: the SR3 stage's one-step x̂₀ from x_T (its regression estimate, the low-distortion end);
* ``stage 1``: the SR3 stage alone (``--steps1`` DDIM steps);
* ``stages 1+2, no semantic``: stage 1 then the structure-guided stage 2 (``--steps2`` DDIM steps), τ = 0;
* ``stages 1+2, τ``: the same with first-block caching at each τ of ``--taus`` (both stages);

PSNR and SSIM (``sarkit.eval.metrics``, [0, 1] space), LPIPS (``sarkit.eval.lpips``, when its weights are found),
CLIP-IQA (``sarkit.eval.clip_iqa``, when CLIP weights are found), SMS (mean ‖softmax F(pred) − softmax F(HR)‖² of
the segmenter; SAM is not used: its weights are absent here) and seconds per output tile (wall, batch
``--batch``). Figures are printed as a Markdown table per scale and data set, and written to ``--json``.

The machine is shared: wall times are upper bounds; read them side by side within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sarkit.devices import configure_backends  # noqa: E402
from sarkit.errors import WeightsNotFoundError  # noqa: E402
from sarkit.eval.metrics import finite_mean, pixel_metrics, unit_range  # noqa: E402
from sarkit.infer.diffusion import SamplingOptions  # noqa: E402
from sarkit.infer.engine import load_predictor  # noqa: E402
from sarkit.models.sr_diffusion import area_downsample, bicubic_up  # noqa: E402
from sarkit.raster.norm import Normalization  # noqa: E402

REALDATA = Path(os.environ.get("SARKIT_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
RGB = ("B4", "B3", "B2")


def real_tiles(tile: int, per_image: int) -> tuple[np.ndarray, list[str]]:
    """HR crops (N, 3, tile, tile) of the real S2 samples as reflectance (DN / 10000), B4, B3, B2; names used."""
    files = sorted((REALDATA / "sen12mscr_glfcr" / "s2_cloudfree").glob("*.tif")) + \
        sorted((REALDATA / "sen1floods11").rglob("*S2Hand*.tif"))
    crops, used = [], []
    for f in files:
        with rasterio.open(f) as src:
            names = [d or "" for d in src.descriptions]
            idx = [names.index(b) + 1 for b in RGB] if all(b in names for b in RGB) else [4, 3, 2]  # SEN12MS order
            a = src.read(idx).astype(np.float32) / 10000.0
        h, w = a.shape[1:]
        rng = np.random.default_rng(0)
        got = 0
        for _ in range(50 * per_image):
            if got == per_image:
                break
            r, c = int(rng.integers(0, h - tile + 1)), int(rng.integers(0, w - tile + 1))
            crop = a[:, r:r + tile, c:c + tile]
            if (crop > 0).all():
                crops.append(crop)
                got += 1
        used.append(f"{f.parent.parent.name}/{f.name}" if f.parent.name != "S2Hand" else f.name)
    return (np.stack(crops) if crops else np.zeros((0, 3, tile, tile), np.float32)), used


def train_models(work: Path, args: argparse.Namespace, scale: int) -> tuple[Path, Path, Path, float]:
    """(tiles, sr run, segmenter run, training seconds) for ``scale`` (reused when already there)."""
    from sarkit.data.synth import SynthOptions, synth_scene
    from sarkit.data.tiling import TileOptions, tile_scene
    from sarkit.training import TrainOptions, train

    tiles = work / "tiles"
    if not tiles.exists():
        scene = synth_scene(work / "scene", SynthOptions(size=args.scene, seed=1), overwrite=True)
        tile_scene(scene.s1_path, scene.s2_path, scene.labels_path, tiles,
                   TileOptions(size=args.tile, stride=args.tile // 2, split=(0.85, 0.15, 0.0), max_nodata=0.3))
    run = work / f"sr-x{scale}"
    mo: dict[str, Any] = {"size": "tiny", "channels": args.channels, "heads": 2, "channel_mult": "1,2,2",
                          "timesteps": args.timesteps, "scale": scale, "steps1": args.steps1, "steps2": args.steps2,
                          "sampler1": "ddim", "sampler2": "ddim", "val_steps": 2,
                          "semantic": "on" if args.clip_weights else "off", "target": args.target,
                          "prediction": args.prediction}
    if args.clip_weights:
        mo.update(clip_weights=args.clip_weights, clip_model=args.clip_model)
    t0 = time.perf_counter()
    if not (run / "checkpoints" / "generator.safetensors").exists():
        train(TrainOptions(model="sr-diffusion", data=tiles, out=run, steps=args.train_steps, batch_size=4,
                           device="cpu", lr=args.lr, val_every=0, save_every=args.train_steps, seed=0,
                           model_options=mo))
    train_s = time.perf_counter() - t0
    seg = work / "segmenter"
    if args.seg_steps and not (seg / "checkpoints" / "segmenter.safetensors").exists():
        train(TrainOptions(model="segmenter", data=tiles, out=seg, steps=args.seg_steps, batch_size=8, device="cpu",
                           lr=1e-3, val_every=0, save_every=args.seg_steps, seed=0, modality="optical",
                           model_options={"backbone": "mobilenet_v3_large"}))
    return tiles, run, seg, train_s


def metric_tools(args: argparse.Namespace, seg: Path) -> dict[str, Any]:
    """LPIPS, CLIP-IQA and the segmenter where their weights are there (None and the reason otherwise)."""
    from sarkit.eval.clip_iqa import load_clip_iqa
    from sarkit.eval.lpips import load_lpips
    from sarkit.eval.segmetrics import load_segmenter

    tools: dict[str, Any] = {"notes": []}
    try:
        tools["lpips"] = load_lpips()[0]
    except WeightsNotFoundError as exc:
        tools["lpips"] = None
        tools["notes"].append(f"LPIPS not computed: {str(exc).splitlines()[0][:120]}")
    try:
        tools["clip_iqa"] = load_clip_iqa(args.clip_model, args.clip_weights or None)
    except WeightsNotFoundError as exc:
        tools["clip_iqa"] = None
        tools["notes"].append(f"CLIP-IQA not computed: {str(exc).splitlines()[0][:120]}")
    tools["seg"] = load_segmenter(seg) if (seg / "checkpoints" / "segmenter.safetensors").exists() else None
    if tools["seg"] is None:
        tools["notes"].append("SMS not computed: no segmenter (--seg-steps 0)")
    return tools


def score(pred: np.ndarray, hr: np.ndarray, norm: Normalization, tools: dict[str, Any]) -> dict[str, float]:
    """PSNR, SSIM, LPIPS, CLIP-IQA, SMS of model-range predictions against the HR tiles."""
    from sarkit.eval.segmetrics import sms

    p, y = torch.from_numpy(pred).float(), torch.from_numpy(hr).float()
    m = pixel_metrics(unit_range(p), unit_range(y), None)
    out = {"psnr": finite_mean(m["psnr"]), "ssim": finite_mean(m["ssim"])}
    if tools["lpips"] is not None:
        with torch.no_grad():
            out["lpips"] = float(tools["lpips"](unit_range(p), unit_range(y)).mean())
    if tools["clip_iqa"] is not None:
        with torch.no_grad():
            out["clip_iqa"] = float(tools["clip_iqa"](unit_range(p)).mean())
    if tools["seg"] is not None:
        seg = tools["seg"]
        out["sms"] = sms(seg.logits(pred, norm), seg.logits(hr, norm))
    return out


def methods(run: Path, args: argparse.Namespace) -> list[tuple[str, Callable[[np.ndarray], np.ndarray], Any]]:
    """(name, LR batch → SR batch, the predictor or None) of every compared method."""
    out: list[tuple[str, Callable[[np.ndarray], np.ndarray], Any]] = []
    base = load_predictor(run, "cpu", None, sampling=SamplingOptions(steps=args.steps2, base_steps=args.steps1))
    s = base.scale

    def bicubic(x: np.ndarray) -> np.ndarray:
        return bicubic_up(torch.from_numpy(x), s).numpy()

    def stage1_only(plan: Any) -> Callable[[np.ndarray], np.ndarray]:
        from sarkit.models.sr_diffusion import stage1_sample

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                up = bicubic_up(torch.from_numpy(x), s)
                return stage1_sample(base.module, up, plan, target=base.target).numpy()
        return run

    out.append(("bicubic", bicubic, None))
    if base.plan1 is not None and args.steps1 > 1:
        from sarkit.models.samplers import SamplingPlan

        one = SamplingPlan.make(base.schedule, "ddim", 1)
        out.append(("stage 1 (DDIM-1: the one-step x̂₀)", stage1_only(one), None))
    out.append((f"stage 1 (DDIM-{args.steps1})", stage1_only(base.plan1), None))
    sem = "semantic" if base.captioner is not None else "no semantic"
    for tau in args.taus:
        p = load_predictor(run, "cpu", None, sampling=SamplingOptions(steps=args.steps2, base_steps=args.steps1,
                                                                      cache_threshold=tau or None))
        out.append((f"stages 1+2, {sem}, τ = {tau:g}", p, p))
    return out


def run_scale(scale: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train (or reuse) the models of ``scale`` and score every method on both data sets."""
    from sarkit.data.dataset import TileDataset

    tiles, run, seg, train_s = train_models(work, args, scale)
    tools = metric_tools(args, seg)
    pred0 = load_predictor(run, "cpu", None)
    norm = pred0.in_norm
    ds = TileDataset(tiles, split="val", mode="paired", sar_bands=None, optical_bands=RGB)
    gen = np.stack([ds[i]["optical"].numpy() for i in range(min(len(ds), args.val_tiles))])
    refl, used = real_tiles(args.tile, args.real_per_image)
    real = np.stack([norm.encode(r) for r in refl]) if len(refl) else refl
    results: dict[str, Any] = {"scale": scale, "train_s": train_s, "notes": tools["notes"], "real_files": used,
                               "sets": {}}
    for name, hr in (("generated", gen), ("real S2", real)):
        if not len(hr):
            continue
        lr = area_downsample(torch.from_numpy(hr), scale).numpy()
        rows = []
        for label, fn, pred in methods(run, args):
            fn(lr[:1])  # warm-up
            if pred is not None:
                pred.skipped = pred.evaluated = 0
            t0 = time.perf_counter()
            sr = np.concatenate([fn(lr[i:i + args.batch]) for i in range(0, len(lr), args.batch)])
            sec = (time.perf_counter() - t0) / len(lr)
            row = {"method": label, **score(sr, hr, norm, tools), "s_per_tile": sec}
            if pred is not None and pred.threshold > 0:
                row["skipped"] = pred.skipped / max(pred.evaluated, 1)
            rows.append(row)
            print(f"x{scale} {name}: {row}", flush=True)
        results["sets"][name] = {"tiles": int(len(hr)), "rows": rows}
    return results


def table(res: dict[str, Any], args: argparse.Namespace) -> str:
    """Markdown tables of one scale."""
    lines = []
    for name, st in res["sets"].items():
        cols = [c for c in ("psnr", "ssim", "lpips", "clip_iqa", "sms") if c in st["rows"][0]]
        lines.append(f"\n×{res['scale']}, {name} ({st['tiles']} HR tiles of {args.tile}²):\n")
        lines.append("| method | " + " | ".join(c.upper().replace("_", "-") for c in cols)
                     + " | s / output tile | tile-steps skipped |")
        lines.append("|---|" + "---|" * (len(cols) + 2))
        for r in st["rows"]:
            vals = " | ".join(f"{r[c]:.4f}" if c in ("ssim", "sms", "lpips", "clip_iqa") else f"{r[c]:.2f}"
                              for c in cols)
            sk = f"{100 * r['skipped']:.0f} %" if "skipped" in r else "—"
            lines.append(f"| {r['method']} | {vals} | {r['s_per_tile']:.3f} | {sk} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="2,4")
    ap.add_argument("--work", default=None, help="Folder of tiles and runs (reused when present).")
    ap.add_argument("--scene", type=int, default=384)
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--timesteps", type=int, default=1000)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--seg-steps", type=int, default=150)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--target", default="residual", help="sr-diffusion target: residual or image.")
    ap.add_argument("--prediction", default="x0", help="sr-diffusion prediction: x0 or eps.")
    ap.add_argument("--steps1", type=int, default=10)
    ap.add_argument("--steps2", type=int, default=5)
    ap.add_argument("--taus", default="0,0.3,0.5")
    ap.add_argument("--val-tiles", type=int, default=8)
    ap.add_argument("--real-per-image", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--clip-model", default="ViT-B-32")
    ap.add_argument("--clip-weights", default="")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    args.taus = [float(t) for t in args.taus.split(",")]
    configure_backends(torch.device("cpu"))
    work = Path(args.work or tempfile.mkdtemp(prefix="sarkit-bench-sr-"))
    print(f"work {work}; load {os.getloadavg()}", flush=True)
    out = {"args": {k: v for k, v in vars(args).items()}, "scales": []}
    for s in (int(v) for v in args.scales.split(",")):
        res = run_scale(s, args, work)
        out["scales"].append(res)
        print(table(res, args), flush=True)
        for n in res["notes"]:
            print(f"note: {n}", flush=True)
        print(f"training: {res['train_s']:.0f} s; real files: {', '.join(res['real_files'])}; "
              f"load {os.getloadavg()}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
