"""gan-prior training steps: seconds per step of each phase for the tiny and small StyleGAN2 presets.

Cases per preset (SAR VV, VH → optical B4, B3, B2, batch ``--batch``, fp32, the trainer's backend settings):

* ``prior``: a phase-1 step (D logistic, G non-saturating, style mixing) on a step where lazy R1 is not due;
* ``prior+R1``: the phase-1 step where R1 is due (every ``r1_every`` = 16 steps; its cost is spread over 16);
* ``encoder``: a phase-2 step (D logistic; E and G on L1 + 10·LPIPS + 0.3·adversarial), x_R from a frozen upstream
  translator (a pix2pix U-Net with ngf 8, saved to a temporary run; its forward is counted) and LPIPS with random
  AlexNet weights saved to temporary files (the time does not depend on the weights' values).

After ``--warmup`` steps of every case, each repeat runs one step of every case in turn, so a change in the
machine's load hits all cases alike; it prints the median and minimum seconds per step and the load average.

    python benchmarks/bench_gan_prior.py --repeats 5
    python benchmarks/bench_gan_prior.py --sizes tiny:32,small:64 --batch 2 --json bench-out/gan_prior.json
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import make_batch  # noqa: E402
from sarkit.devices import configure_backends  # noqa: E402
from sarkit.models import get_model  # noqa: E402
from sarkit.models.base import ModelIO, StepTools, TrainableModel, parse_options  # noqa: E402
from sarkit.models.blocks import unet_levels  # noqa: E402
from sarkit.models.checkpoint import save_network  # noqa: E402
from sarkit.models.registry import build_network  # noqa: E402
from sarkit.raster.norm import optical_normalization, sar_normalization  # noqa: E402

LPIPS_CHANNELS = (64, 192, 384, 256, 256)


def io_of(size: int) -> ModelIO:
    """SAR (VV, VH) → optical (B4, B3, B2) on ``size``² tiles."""
    return ModelIO(2, 3, "sar2opt", size, sar_normalization().to_dict(), optical_normalization().to_dict())


def helper_files(root: Path, io: ModelIO) -> dict[str, str]:
    """A small pix2pix U-Net upstream (x_R) and random LPIPS weights, saved under ``root``; model options."""
    from torchvision.models import alexnet

    kwargs = {"in_channels": 2, "out_channels": 3, "num_downs": unet_levels(io.tile_size), "ngf": 8,
              "norm": "batch", "dropout": True}
    up = root / f"up{io.tile_size}.safetensors"
    save_network(up, build_network("unet", kwargs), "generator", "unet", kwargs,
                 {"model": "pix2pix", "direction": "sar2opt", "in_norm": io.in_norm, "out_norm": io.out_norm,
                  "tile_size": io.tile_size})
    trunk = {f"features.{k}": v for k, v in alexnet(weights=None).features.state_dict().items()}
    torch.save(trunk, root / "alexnet.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(LPIPS_CHANNELS)},
               root / "alex.pth")
    return {"x_r_from": str(up), "lpips_weights": str(root / "alex.pth"),
            "lpips_backbone": str(root / "alexnet.pth")}


def build(preset: str, size: int, files: dict[str, str], device: torch.device) -> TrainableModel:
    """A gan-prior model of ``preset`` on ``size``² tiles with both phases, on ``device``, with optimizers."""
    cls = get_model("gan-prior")
    torch.manual_seed(0)
    model = cls(io_of(size), parse_options(cls.Options, {"size": preset, "prior_fraction": "0.5", **files}))
    model.to(device).train()
    model.configure_optimizers(2e-4, (0.5, 0.999))
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny:32,tiny:64,small:64",
                    help="PRESET:TILE pairs (comma-separated), e.g. tiny:32,small:128")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    configure_backends(device)
    pairs = [(p.split(":")[0], int(p.split(":")[1])) for p in args.sizes.split(",") if p.strip()]
    tools = StepTools(device=device)
    total = 64  # phase 1 = steps 0 … 31, phase 2 = 32 … 63; r1_every = 16
    phase_step = {"prior+R1": 16, "prior": 17, "encoder": 33}
    with tempfile.TemporaryDirectory() as tmp:
        models, batches = {}, {}
        for preset, size in pairs:
            files = helper_files(Path(tmp), io_of(size))
            models[(preset, size)] = build(preset, size, files, device)
            batches[size] = {k: v.to(device) for k, v in make_batch(args.batch, size, False).items()}
        cases = [(key, case) for key in models for case in phase_step]

        def step(key: tuple[str, int], case: str) -> float:
            model = models[key]
            model.set_progress(phase_step[case], total)
            t = time.perf_counter()
            model.train_step(batches[key[1]], tools)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - t

        load_before = os.getloadavg()
        for _ in range(args.warmup):
            for key, case in cases:
                step(key, case)
        runs: dict[tuple[tuple[str, int], str], list[float]] = {c: [] for c in cases}
        for _ in range(args.repeats):
            for key, case in cases:
                runs[(key, case)].append(step(key, case))
        load_after = os.getloadavg()

    rows = []
    for (preset, size), case in cases:
        times = runs[((preset, size), case)]
        model = models[(preset, size)]
        params = {k: sum(p.numel() for p in n.parameters()) for k, n in model.nets.items()}
        rows.append({"preset": preset, "tile": size, "case": case, "median_s": statistics.median(times),
                     "min_s": min(times), "params": params})
    print(f"gan-prior training steps, batch {args.batch}, {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'preset':<7} {'tile':>5} {'case':<9} {'median s':>9} {'min s':>8}  params (G, D, E)")
    for r in rows:
        p = r["params"]
        print(f"{r['preset']:<7} {r['tile']:>5} {r['case']:<9} {r['median_s']:>9.3f} {r['min_s']:>8.3f}  "
              f"{p['G'] / 1e6:.2f}M, {p['D'] / 1e6:.2f}M, {p['E'] / 1e6:.2f}M")
    if args.json is not None:
        record: dict[str, Any] = {"batch": args.batch, "device": args.device, "repeats": args.repeats,
                                  "threads": torch.get_num_threads(), "machine": platform.processor() or
                                  platform.machine(), "load_before": load_before, "load_after": load_after,
                                  "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
