"""Generator inference throughput: the pix2pix U-Net (2 → 3 channels, 256² tiles) over batch sizes and variants.

The generator is the registered ``unet`` network at the pix2pix default architecture (ngf 64, 8 levels for 256²,
batch norm, dropout), in eval mode under ``torch.inference_mode``, with ``sarkit.devices.configure_backends``
thread settings. For each batch size and each variant (fp32 / bf16 autocast × contiguous / channels_last) it runs
``--warmup`` batches, then times ``--repeats`` batches and reports the median and minimum seconds per tile and
tiles per second. The variants are interleaved repeat by repeat (round-robin), so that load changes on a shared
machine hit them alike. The PSNR of bf16 against fp32 output (in [0, 1]) is reported beside.

    python benchmarks/bench_infer.py --batch-sizes 1,4,8,16 --json bench-out/infer.json
    python benchmarks/bench_infer.py --batch-sizes 1,4 --repeats 3 --variants fp32-contiguous,bf16-channels_last
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sarkit.devices import configure_backends, cpu_supports_bf16  # noqa: E402
from sarkit.models.blocks import build_unet, unet_levels  # noqa: E402

VARIANTS = ("fp32-contiguous", "fp32-channels_last", "bf16-contiguous", "bf16-channels_last")


def make_generator(tile: int = 256, ngf: int = 64, seed: int = 0) -> torch.nn.Module:
    """The pix2pix U-Net generator (2 → 3 channels) in eval mode.

    PyTorch's default initialisation is kept rather than pix2pix's N(0, 0.02): its outputs span the tanh range
    like a trained generator's (std ≈ 0.3 against ≈ 0.01), so the bf16-vs-fp32 PSNR is not inflated by
    near-zero outputs. The speed does not depend on the weights (denormals are flushed)."""
    torch.manual_seed(seed)
    return build_unet(2, 3, num_downs=unet_levels(tile), ngf=ngf).eval()


def psnr01(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two [-1, 1] tensors mapped to [0, 1]."""
    mse = (((a.float() - b.float()) / 2) ** 2).mean().item()
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()


def run_variant(net: torch.nn.Module, x: torch.Tensor, variant: str) -> torch.Tensor:
    """One forward pass of ``x`` in the given variant; returns float32 output."""
    dtype, layout = variant.split("-")
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        return net(x.contiguous(memory_format=fmt)).float()


def bench(batch_sizes: list[int], variants: list[str], repeats: int, warmup: int, tile: int = 256,
          ngf: int = 64, min_tiles: int = 0) -> dict[str, Any]:
    """Median/min s/tile and tiles/s per (batch size, variant); variants interleaved per repeat.

    ``min_tiles``: at small batch sizes, one timed sample runs as many batches as needed to cover this many tiles
    (a steadier figure for batch 1)."""
    nets = {layout: make_generator(tile, ngf) for layout in ("contiguous", "channels_last")}
    nets["channels_last"].to(memory_format=torch.channels_last)
    results = []
    quality: dict[str, float] = {}
    g = torch.Generator().manual_seed(1)
    for b in batch_sizes:
        x = torch.rand(b, 2, tile, tile, generator=g) * 2 - 1
        calls = max(1, -(-min_tiles // b)) if min_tiles else 1
        ref = run_variant(nets["contiguous"], x, "fp32-contiguous")
        for v in variants:
            for _ in range(warmup):
                out = run_variant(nets[v.split("-")[1]], x, v)
            if v.startswith("bf16"):
                quality[f"batch{b}-{v}"] = round(psnr01(out if warmup else run_variant(nets[v.split("-")[1]], x, v),
                                                        ref), 2)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(repeats):
            for v in variants:
                net = nets[v.split("-")[1]]
                t0 = time.perf_counter()
                for _ in range(calls):
                    run_variant(net, x, v)
                times[v].append((time.perf_counter() - t0) / (calls * b))
        for v in variants:
            med, best = statistics.median(times[v]), min(times[v])
            results.append({"batch": b, "variant": v, "median_s_per_tile": med, "min_s_per_tile": best,
                            "median_tiles_per_s": 1 / med, "max_tiles_per_s": 1 / best,
                            "tiles_per_sample": calls * b, "s_per_tile_samples": times[v]})
    return {"results": results, "bf16_psnr_db": quality}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", default="1,4,8,16")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--ngf", type=int, default=64, help="U-Net width (64 = pix2pix)")
    ap.add_argument("--min-tiles", type=int, default=4, help="tiles per timed sample at least (batch 1: 4 calls)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {bad}; choose from {VARIANTS}")
    settings = configure_backends(torch.device("cpu"))
    if not cpu_supports_bf16():
        print("note: this CPU has no native bf16 (avx512_bf16/amx); bf16 variants are emulated", file=sys.stderr)
    out = bench([int(b) for b in args.batch_sizes.split(",") if b.strip()], variants, args.repeats, args.warmup,
                args.tile, args.ngf, args.min_tiles)
    for r in out["results"]:
        print(f"unet{args.tile} ngf{args.ngf} batch {r['batch']:2d} {r['variant']:18s}: median "
              f"{r['median_s_per_tile']:.4f} s/tile ({r['median_tiles_per_s']:.2f} tiles/s)  min "
              f"{r['min_s_per_tile']:.4f} s/tile", flush=True)
    for k, v in out["bf16_psnr_db"].items():
        print(f"bf16 vs fp32 PSNR {k}: {v:.2f} dB")
    record = {"benchmark": "infer", "tile": args.tile, "ngf": args.ngf, "repeats": args.repeats,
              "warmup": args.warmup, "threads": settings.threads, "torch": torch.__version__,
              "cpu_bf16": cpu_supports_bf16(), "machine": platform.machine(), "cpus": os.cpu_count(),
              "loadavg_after": os.getloadavg(), **out}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
