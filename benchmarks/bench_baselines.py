"""Translators against the trivial baselines on the real Texas pairs (issue 17): tile, train, evaluate, print a table.

Data: ``../shared/realdata/optical-sar-texas`` (or ``--texas``; 31 Sentinel-1 VH / Sentinel-2 RGB pairs of 1024²,
8-bit). ``sarkit tile --layout pairs`` reads the fragments' corners from its ``metadata.json`` and splits whole
fragments by contiguous ground blocks (``--split 0.7,0.1,0.2``, seed 0), so the held-out test fragments share no
pixel with a training tile. Tiles of 128² and of 256² get the same fragments per split (same blocks, same seed).

Each run trains one configuration (``CONFIGS``: the baseline pix2pix at the demo's size, and one lever changed at a
time) on the train split with one CPU process of ``--threads`` threads, then ``sarkit eval --checkpoint`` runs the
exported generator on the **256² test tiles** (the same pixels for every run) and reports PSNR / SSIM / MAE (LPIPS
when its weights are found), the constant-colour and per-pixel linear baselines, and the gains over the better one.

    python benchmarks/bench_baselines.py --runs base,resize --steps 2000        # train what is missing, evaluate
    python benchmarks/bench_baselines.py --stage table                           # the table from what is there
    python benchmarks/bench_baselines.py --stage grid --runs resize_long,resize_l1_10000_long --grid docs/img/x.png
    python benchmarks/bench_baselines.py --runs cyclegan_budget,cut_budget --threads 1 --budget 25
    python benchmarks/bench_baselines.py --stage profile --runs base,resize   # the checkerboard figure

``*_budget`` runs take their steps from a timing probe (a 20-step run minus a 2-step run of the same
configuration, in the same process): an estimate only. With two one-thread processes started side by side the
probe undercounted a step by 2.5× (0.148 s probed, 0.367 s in the run, pix2pix batch 4), so read the recorded
minutes, not the budget, and start side-by-side runs only after both probes are done.

Runs are kept in ``--work`` (default ``/tmp/sarkit-bench-baselines``): a run that has its export is not trained
again, so levers can be screened one at a time on a shared machine. Training minutes and the load (``uptime``)
at the start and end of each run are recorded in ``WORK/results.json``; compare only runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
TEXAS = Path(os.environ.get("SARKIT_REALDATA", ROOT.parent / "shared" / "realdata")) / "optical-sar-texas"

#: The baseline configuration (the demo's size: ngf = ndf = 32, 128² tiles, batch 1, the paper's λ_L1 and decoder).
BASE: dict[str, Any] = {"model": "pix2pix", "tile": 128, "opts": {"ngf": "32", "ndf": "32", "lambda_l1": "100",
                                                                   "upsample": "transpose"}}
#: name → the one change from BASE (``steps_scale``: the steps relative to --steps, e.g. ¼ for 4× the pixels a step).
CONFIGS: dict[str, dict[str, Any]] = {
    "base": {},
    "resize": {"opts": {"upsample": "resize"}},
    "l1_1000": {"opts": {"lambda_l1": "1000"}},
    "l1_10000": {"opts": {"lambda_l1": "10000"}},
    "tile256": {"tile": 256, "steps_scale": 0.25},
    "ngf64": {"opts": {"ngf": "64", "ndf": "64"}},
    "resize_l1_1000": {"opts": {"upsample": "resize", "lambda_l1": "1000"}},
    "resize_l1_10000": {"opts": {"upsample": "resize", "lambda_l1": "10000"}},
    # the chosen decoder at ten times the screening budget (the 3,000 steps with --steps 300)
    "base_long": {"steps_scale": 10.0},
    "resize_long": {"opts": {"upsample": "resize"}, "steps_scale": 10.0},
    "resize_l1_10000_long": {"opts": {"upsample": "resize", "lambda_l1": "10000"}, "steps_scale": 10.0},
    # the regression model of issue 20 (U-Net, the demo's width), L1 against L2: batch 2, lr 1e-3, 3,500 steps
    "regression_l1": {"model": "regression", "opts": {"arch": "unet", "ngf": "32", "pixel_loss": "l1"},
                      "batch": 2, "lr": 1e-3, "steps_scale": 35 / 3},
    "regression_l2": {"model": "regression", "opts": {"arch": "unet", "ngf": "32", "pixel_loss": "l2"},
                      "batch": 2, "lr": 1e-3, "steps_scale": 35 / 3},
    # each translator trained for a fixed budget of this CPU (--budget minutes, 1 thread), the GANs and the U-Net
    # at the demo's width, regression_budget and con-diffusion at their presets (NAFNet "paper", "small"); the
    # steps are set from a short timing probe of the same configuration
    "pix2pix_budget": {"opts": {"upsample": "resize", "lambda_l1": "10000"}, "batch": 4, "budget": True},
    "cyclegan_budget": {"model": "cyclegan", "opts": {"ngf": "32", "ndf": "32"}, "budget": True},
    "cut_budget": {"model": "cut", "opts": {"ngf": "32", "ndf": "32"}, "budget": True},
    "qsattn_budget": {"model": "qs-attn", "opts": {"ngf": "32", "ndf": "32"}, "budget": True},
    "regression_budget": {"model": "regression", "opts": {}, "batch": 2, "lr": 1e-3, "budget": True},
    "regression_unet_budget": {"model": "regression", "opts": {"arch": "unet", "ngf": "32"}, "batch": 2,
                               "lr": 1e-3, "budget": True},
    "con_diffusion_budget": {"model": "con-diffusion", "opts": {"size": "small", "sample_steps": "20",
                                                               "sampler": "ddim"}, "batch": 4, "lr": 1e-4,
                             "budget": True},
    "cut": {"model": "cut", "opts": {"ngf": "32", "ndf": "32"}},
    "cut_resize": {"model": "cut", "opts": {"ngf": "32", "ndf": "32", "upsample": "resize"}},
}


def config(name: str) -> dict[str, Any]:
    """BASE with the run's changes applied (model options merged; CUT takes only its own options)."""
    c = CONFIGS[name]
    model = c.get("model", BASE["model"])
    opts = dict(BASE["opts"]) if model == BASE["model"] else {}
    opts.update(c.get("opts", {}))
    return {"model": model, "tile": c.get("tile", BASE["tile"]), "opts": opts,
            "steps_scale": c.get("steps_scale", 1.0), "batch": c.get("batch", 1), "lr": c.get("lr", 2e-4),
            "budget": bool(c.get("budget"))}


def load() -> str:
    """The 1/5/15-minute load averages (``os.getloadavg``)."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def tiles(work: Path, size: int) -> Path:
    """The Texas tile set of ``size``² tiles in WORK (made once)."""
    from sarkit.data.pairs import tile_pairs
    from sarkit.data.tiling import TileOptions

    out = work / f"tiles{size}"
    if not (out / "tiling.json").is_file():
        tile_pairs(TEXAS, out, TileOptions(size=size, split=(0.7, 0.1, 0.2), seed=0))
    return out


def results_path(work: Path) -> Path:
    return work / "results.json"


def read_results(work: Path) -> dict[str, Any]:
    p = results_path(work)
    return json.loads(p.read_text()) if p.is_file() else {}


def write_results(work: Path, res: dict[str, Any]) -> None:
    tmp = results_path(work).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(results_path(work))


def _options(c: dict[str, Any], data: Path, out: Path, steps: int) -> Any:
    """TrainOptions of configuration ``c`` for ``steps`` steps (CPU, seed 0, no validation or snapshots)."""
    from sarkit.training import TrainOptions

    return TrainOptions(model=c["model"], data=data, out=out, steps=steps, batch_size=c["batch"], lr=c["lr"],
                        device="cpu", seed=0, overwrite=True, val_every=0, save_every=0, log_every=50,
                        model_options=c["opts"])


def budget_steps(work: Path, name: str, c: dict[str, Any], minutes: float, probe: int = 20) -> tuple[int, float]:
    """(steps that fit in ``minutes``, seconds a step) from the wall time of a ``probe``-step run of ``c``
    minus that of a 2-step run (setup and export cancel out)."""
    import shutil

    from sarkit.training import train

    data = tiles(work, c["tile"])
    times = []
    for n in (2, probe):
        out = work / f"probe-{name}"
        t0 = time.perf_counter()
        train(_options(c, data, out, n))
        times.append(time.perf_counter() - t0)
        shutil.rmtree(out, ignore_errors=True)
    per_step = max(1e-3, (times[1] - times[0]) / (probe - 2))
    return max(1, int(minutes * 60 / per_step)), per_step


def train_run(work: Path, name: str, steps: int, threads: int, budget: float = 25.0) -> dict[str, Any]:
    """Train run ``name`` (unless its export exists); returns its record (config, steps, minutes, load)."""
    import torch

    from sarkit.training import train

    c = config(name)
    run = work / "runs" / name
    rec = read_results(work).get(name, {})
    if (run / "checkpoints" / "generator.safetensors").is_file() and rec.get("train"):
        return rec
    torch.set_num_threads(threads)
    n = max(1, round(steps * c["steps_scale"]))
    per_step = None
    if c["budget"]:
        n, per_step = budget_steps(work, name, c, budget)
        print(f"{name}: {per_step:.3f} s a step → {n} steps in {budget} min", flush=True)
    data = tiles(work, c["tile"])
    before = load()
    t0 = time.perf_counter()
    train(_options(c, data, run, n))
    minutes = (time.perf_counter() - t0) / 60
    params = sum(p.numel() for p in _generator(run).parameters())
    rec = {"config": c, "train": {"steps": n, "tile": c["tile"], "batch": c["batch"], "minutes": round(minutes, 2),
                                  "threads": threads, "load_before": before, "load_after": load(),
                                  "generator_params": params,
                                  **({"budget_min": budget, "probe_s_per_step": round(per_step, 4)}
                                     if per_step else {})}}
    res = read_results(work)
    res[name] = {**res.get(name, {}), **rec}
    write_results(work, res)
    return res[name]


def _generator(run: Path) -> Any:
    from sarkit.models.checkpoint import load_network

    return load_network(run / "checkpoints" / "generator.safetensors").module


def eval_run(work: Path, name: str, threads: int) -> dict[str, Any]:
    """Evaluate run ``name`` on the 256² test tiles; store and return the summary (model, baselines, gains)."""
    import torch

    from sarkit.errors import WeightsNotFoundError
    from sarkit.eval.options import EvalInputs, EvalOptions
    from sarkit.eval.report import write_report
    from sarkit.eval.runner import run_eval

    torch.set_num_threads(threads)
    inputs = EvalInputs(checkpoint=work / "runs" / name, data=tiles(work, 256), split="test")
    try:
        result = run_eval(EvalOptions(metrics=("psnr", "ssim", "mae", "lpips")), inputs=inputs)
    except WeightsNotFoundError:
        result = run_eval(EvalOptions(), inputs=inputs)
    write_report(work / "reports" / name, result, overwrite=True)
    rep = result.report
    res = read_results(work)
    res.setdefault(name, {})["eval"] = {"summary": {k: v.get("value") for k, v in rep["summary"].items()},
                                        "baselines": rep.get("baselines"),
                                        "tiles": rep["inputs"].get("tiles")}
    write_results(work, res)
    return res[name]


def _f(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table(work: Path, names: list[str]) -> str:
    """A Markdown table of the runs: model and lever, metrics, baselines' best, gains, steps, minutes, load."""
    res = read_results(work)
    rows = ["| run | model | change from base | PSNR | SSIM | MAE | LPIPS | gain PSNR | gain SSIM | gain MAE | "
            "row-grad. ratio | steps × tile | gen. params | train min | load (1/5/15) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base_rows: list[str] = []
    for name in names:
        r = res.get(name)
        if not r or "eval" not in r:
            continue
        s, t = r["eval"]["summary"], r.get("train", {})
        g = {k: v for k, v in s.items() if k.startswith("gain_")}
        change = json.dumps(CONFIGS[name]["opts"] if set(CONFIGS[name]) == {"opts"} else CONFIGS[name],
                            ensure_ascii=False) if CONFIGS[name] else "—"
        rows.append(f"| {name} | {r['config']['model']} | {change.replace('|', '/')} | "
                    f"{_f(s.get('psnr'), 2)} | {_f(s.get('ssim'))} | {_f(s.get('mae'))} | {_f(s.get('lpips'))} | "
                    f"{_f(g.get('gain_psnr'), 2)} | {_f(g.get('gain_ssim'))} | {_f(g.get('gain_mae'))} | "
                    f"{_f(r.get('row_gradient_ratio'))} | "
                    f"{t.get('steps')} × {t.get('tile')}² | {t.get('generator_params', 0) / 1e6:.1f} M | "
                    f"{t.get('minutes')} | {t.get('load_before')} → {t.get('load_after')} |")
        if not base_rows and r["eval"].get("baselines"):
            for b, vals in r["eval"]["baselines"].items():
                v = {m: (x or {}).get("value") for m, x in (vals.get("summary") or {}).items()}
                base_rows.append(f"| baseline: {b} | – | {vals.get('absent') or vals.get('source', '')} | {_f(v.get('psnr'), 2)} | "
                                 f"{_f(v.get('ssim'))} | {_f(v.get('mae'))} | {_f(v.get('lpips'))} | | | | | | | | |")
    return "\n".join(rows[:2] + base_rows + rows[2:])


def row_gradient_ratio(work: Path, name: str, count: int = 16) -> float:
    """The checkerboard figure of the issue: on ``count`` 256² test tiles, the mean |y[r+1] − y[r]| (over bands and
    columns) at even rows r divided by that at odd rows, as max/min (1 = no period-2 pattern)."""
    import numpy as np

    from sarkit.data.dataset import TileDataset
    from sarkit.infer.engine import load_predictor

    ds = TileDataset(tiles(work, 256), split="test", mode="paired")
    pred = load_predictor(work / "runs" / name, "cpu")
    picks = np.linspace(0, len(ds) - 1, count).round().astype(int)
    x = np.stack([ds[int(i)]["sar"].numpy() for i in picks])
    y = pred(x)
    g = np.abs(np.diff(y, axis=2)).mean(axis=(0, 1, 3))[8:-8]  # row-gradient profile, away from the borders
    even, odd = float(g[0::2].mean()), float(g[1::2].mean())
    ratio = max(even, odd) / min(even, odd)
    res = read_results(work)
    res.setdefault(name, {})["row_gradient_ratio"] = ratio
    write_results(work, res)
    return ratio


def grid(work: Path, names: list[str], out: Path, count: int = 4, px: int = 128) -> Path:
    """A PNG of ``count`` held-out 256² test tiles: SAR | each run's output | Sentinel-2 target per row (``px`` a
    cell), with the runs' names above their columns."""
    import numpy as np
    from PIL import Image, ImageDraw

    from sarkit.data.dataset import TileDataset
    from sarkit.infer.engine import load_predictor

    ds = TileDataset(tiles(work, 256), split="test", mode="paired")
    preds = [load_predictor(work / "runs" / n, "cpu") for n in names]
    picks = np.linspace(0, len(ds) - 1, count).round().astype(int)

    def rgb(a: np.ndarray) -> np.ndarray:
        a = np.repeat(a, 3, 0) if a.shape[0] == 1 else a[:3]
        im = Image.fromarray(((np.clip(a, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(1, 2, 0))
        return np.asarray(im.resize((px, px), Image.BILINEAR))

    rows = []
    for i in picks:
        it = ds[int(i)]
        x = it["sar"].numpy()
        outs = [rgb(p(x[None])[0]) for p in preds]
        rows.append(np.concatenate([rgb(x), *outs, rgb(it["optical"].numpy())], 1))
    body = np.concatenate(rows, 0)
    head = Image.new("RGB", (body.shape[1], 16), "white")
    draw = ImageDraw.Draw(head)
    for k, label in enumerate(["SAR (VH)", *names, "Sentinel-2"]):
        draw.text((k * px + 3, 2), label[: px // 6], fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    # a 256-colour palette keeps the picture small (< 300 KB for the docs)
    Image.fromarray(np.concatenate([np.asarray(head), body], 0)).quantize(
        colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/sarkit-bench-baselines"))
    ap.add_argument("--runs", default="base,resize,l1_1000,l1_10000,tile256,ngf64")
    ap.add_argument("--steps", type=int, default=300, help="training steps of a 128² screening run (256² runs: a "
                    "quarter, *_long runs: ten times)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=float, default=25.0, help="training minutes of a *_budget run (its steps "
                    "come from a short timing probe)")
    ap.add_argument("--stage", choices=("all", "train", "eval", "table", "grid", "profile"), default="all")
    ap.add_argument("--grid", type=Path, default=ROOT / "docs" / "img" / "texas-pix2pix.png")
    a = ap.parse_args(argv)
    if not TEXAS.is_dir():
        print(f"the Texas pairs are not at {TEXAS} (set SARKIT_REALDATA)", file=sys.stderr)
        return 2
    names = [n for n in a.runs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"unknown run(s) {unknown}; known: {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    a.work.mkdir(parents=True, exist_ok=True)
    if a.stage == "grid":
        print(grid(a.work, names, a.grid))
        return 0
    for n in names:
        if a.stage in ("all", "train"):
            train_run(a.work, n, a.steps, a.threads, a.budget)
            print(f"trained {n}: {read_results(a.work)[n]['train']}", flush=True)
        if a.stage in ("all", "eval"):
            eval_run(a.work, n, a.threads)
            print(f"evaluated {n}", flush=True)
        if a.stage == "profile":
            print(f"{n}: row-gradient ratio {row_gradient_ratio(a.work, n):.3f}", flush=True)
    print(table(a.work, names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
