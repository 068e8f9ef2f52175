"""Benchmark of ``sarkit translate``: end-to-end throughput against the bare generator, and peak memory.

(a) A generated SIZE×SIZE 2-band float32 dB scene is translated end to end (read, normalise, generator, blend,
    write, COG conversion) with a U-Net generator (``unet`` from the network registry, else a small conv net);
    the same generator is then run bare over as many random tiles in the same process. Ratio = bare time /
    end-to-end time (1.0 = translate adds nothing around the generator; target ≥ 0.85).
(b) Peak resident memory (ru_maxrss) of translate on two scene sizes, each in its own subprocess, with a small
    conv generator (the generator's own memory does not depend on the scene size). Target ratio ≤ 1.25.

Prints the figures and writes them as JSON with ``--json PATH``.

    python benchmarks/bench_translate.py --size 4096 --json bench-out/translate.json
    python benchmarks/bench_translate.py --size 1024 --ngf 16 --mem-sizes 1024,4096   # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from sarkit.checkpoint import load_network, save_network
from sarkit.devices import resolve_device
from sarkit.models.registry import NETWORKS, register_network
from sarkit.norm import optical_normalization, sar_normalization
from sarkit import translate as tr
from sarkit.blend import blend_grid
from sarkit.translate import TranslateOptions, resolve_amp_auto, translate_scene

CONV = "bench-translate-conv"


class SmallConv(nn.Module):
    """Two 3×3 convolutions with a ReLU and tanh: a cheap stand-in generator."""

    def __init__(self, in_channels: int = 2, out_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, out_channels, 3, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


if CONV not in NETWORKS:
    register_network(CONV)(lambda in_channels=2, out_channels=3, width=16: SmallConv(in_channels, out_channels, width))


def write_scene(path: Path, size: int, seed: int = 0, rows_per_chunk: int = 512) -> None:
    """A SIZE×SIZE 2-band float32 dB scene (smooth pattern + seeded noise), written chunk by chunk."""
    rng = np.random.default_rng(seed)
    prof = dict(driver="GTiff", width=size, height=size, count=2, dtype="float32", crs="EPSG:32631",
                transform=from_origin(500000, 5000000, 10, 10), nodata=float("nan"), tiled=True, blockxsize=256,
                blockysize=256, compress="deflate", zlevel=1, BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **prof) as dst:
        dst.descriptions = ("VV", "VH")
        c = np.arange(size, dtype=np.float32)[None, :]
        for r0 in range(0, size, rows_per_chunk):
            h = min(rows_per_chunk, size - r0)
            r = np.arange(r0, r0 + h, dtype=np.float32)[:, None]
            vv = -12 + 6 * np.sin(r / 97.0) * np.cos(c / 61.0) + rng.normal(0, 1.5, (h, size))
            vh = -19 + 4 * np.cos((r + c) / 83.0) + rng.normal(0, 1.5, (h, size))
            dst.write(np.clip(np.stack([vv, vh]), -25, 0).astype(np.float32),
                      window=rasterio.windows.Window(0, r0, size, h))


def make_generator(path: Path, arch: str, tile: int, ngf: int) -> tuple[Path, str]:
    """Export a SAR→optical generator: the registry's U-Net when asked for and available, else the small conv."""
    meta = {"model": "bench", "direction": "sar2opt", "in_norm": sar_normalization().to_dict(),
            "out_norm": optical_normalization().to_dict(), "tile_size": tile, "run": "bench"}
    from sarkit.models import load_all

    load_all()
    if arch == "unet" and "unet" in NETWORKS:
        from sarkit.models.blocks import unet_levels

        kw = {"in_channels": 2, "out_channels": 3, "num_downs": unet_levels(tile), "ngf": ngf}
        net = NETWORKS["unet"](**kw)
        save_network(path, net, "generator", "unet", kw, meta)
        return path, f"unet(ngf={ngf})"
    kw = {"in_channels": 2, "out_channels": 3, "width": 16}
    save_network(path, SmallConv(**kw), "generator", CONV, kw, meta)
    return path, "small conv"


def bare_generator_seconds(ckpt: Path, n_tiles: int, tile: int, batch: int, device: str, amp: str) -> float:
    """Time of the generator alone over ``n_tiles`` random tiles in batches (inference mode, same device/amp)."""
    dev = resolve_device(device)
    amp_dtype = resolve_amp_auto(amp, dev)
    net = load_network(ckpt, "generator", dev).module.eval()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 2, tile, tile, generator=g) * 2 - 1).to(dev)

    def run(n: int) -> None:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype or torch.float32,
                                                     enabled=amp_dtype is not None):
            net(x[:n]).float().cpu()

    run(batch)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    done = 0
    while done < n_tiles:
        n = min(batch, n_tiles - done)
        run(n)
        done += n
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench_throughput(work: Path, args: argparse.Namespace) -> dict:
    scene = work / f"scene_{args.size}.tif"
    write_scene(scene, args.size)
    ckpt, label = make_generator(work / "gen.safetensors", args.arch, args.tile, args.ngf)
    opts = TranslateOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, device=args.device,
                            amp=args.amp, overwrite=True)
    # warm-up (kernel selection, first-call costs) on a small scene, then the measured run
    small = work / "warm.tif"
    write_scene(small, args.tile * 2)
    translate_scene(small, ckpt, work / "warm_out.tif", opts)
    n_tiles = blend_grid(args.size, args.size, args.tile, args.overlap).n_tiles
    # bare runs before and after the end-to-end run (the machine may be shared: the mean evens out load changes)
    bare_before = bare_generator_seconds(ckpt, n_tiles, args.tile, args.batch_size, args.device, args.amp)
    in_situ = [0.0]
    real_call = tr._Generator.__call__

    def timed(self, batch):  # the generator's own time inside translate
        t0 = time.perf_counter()
        out = real_call(self, batch)
        in_situ[0] += time.perf_counter() - t0
        return out

    tr._Generator.__call__ = timed
    try:
        s = translate_scene(scene, ckpt, work / "out.tif", opts)
    finally:
        tr._Generator.__call__ = real_call
    bare_after = bare_generator_seconds(ckpt, n_tiles, args.tile, args.batch_size, args.device, args.amp)
    bare = (bare_before + bare_after) / 2
    return {"scene": f"{args.size}x{args.size}x2 float32", "generator": label,
            "device": str(resolve_device(args.device)),
            "tile": args.tile, "overlap": args.overlap, "batch_size": args.batch_size, "tiles": s.tiles,
            "end_to_end_s": round(s.seconds, 3), "bare_generator_s": round(bare, 3),
            "bare_generator_runs_s": [round(bare_before, 3), round(bare_after, 3)],
            "generator_inside_translate_s": round(in_situ[0], 3),
            "overhead_s": round(s.seconds - in_situ[0], 3),
            "tiles_per_s": round(s.tiles_per_s, 3), "ratio_bare_over_end_to_end": round(bare / s.seconds, 3),
            "ratio_generator_share_of_end_to_end": round(in_situ[0] / s.seconds, 3)}


def mem_child(scene: str, out: str, tile: int, overlap: int, batch: int) -> None:
    """Subprocess body: translate one scene with the small conv generator and print ru_maxrss (KiB) as JSON."""
    torch.set_num_threads(1)
    work = Path(out).parent
    ckpt, _ = make_generator(work / "memgen.safetensors", "conv", tile, 16)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    s = translate_scene(scene, ckpt, out, TranslateOptions(tile=tile, overlap=overlap, batch_size=batch, device="cpu",
                                                           overwrite=True))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": base, "peak_kib": peak, "tiles": s.tiles, "seconds": time.perf_counter() - t0}))


def bench_memory(work: Path, args: argparse.Namespace) -> dict:
    res = {}
    for size in args.mem_sizes:
        scene = work / f"mem_{size}.tif"
        # write the scene in its own process so that the measured process never held it
        subprocess.run([sys.executable, __file__, "--_write-scene", str(scene), "--size", str(size)], check=True)
        out = subprocess.run([sys.executable, __file__, "--_mem-child", str(scene),
                              "--_out", str(work / f"mo_{size}.tif"),
                              "--tile", str(args.tile), "--overlap", str(args.overlap),
                              "--batch-size", str(args.batch_size)],
                             check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        res[str(size)] = {"peak_mib": round(rec["peak_kib"] / 1024, 1),
                          "after_imports_mib": round(rec["before_kib"] / 1024, 1),
                          "added_by_translate_mib": round((rec["peak_kib"] - rec["before_kib"]) / 1024, 1),
                          "tiles": rec["tiles"], "seconds": round(rec["seconds"], 2)}
        scene.unlink()
    small, big = (str(s) for s in args.mem_sizes)
    res["ratio_peak"] = round(res[big]["peak_mib"] / res[small]["peak_mib"], 3)
    res["ratio_added"] = round(res[big]["added_by_translate_mib"] / max(res[small]["added_by_translate_mib"], 1.0), 3)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4096, help="scene size of the throughput benchmark")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto")
    p.add_argument("--arch", default="unet", choices=["unet", "conv"])
    p.add_argument("--ngf", type=int, default=64, help="U-Net width (64 = pix2pix)")
    p.add_argument("--mem-sizes", default="2048,8192", help="two scene sizes for the memory benchmark")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--_mem-child", dest="mem_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_out", dest="child_out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_write-scene", dest="write_scene", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write_scene:
        write_scene(Path(args.write_scene), args.size)
        return
    if args.mem_child:
        mem_child(args.mem_child, args.child_out, args.tile, args.overlap, args.batch_size)
        return
    args.mem_sizes = [int(s) for s in args.mem_sizes.split(",")]
    result: dict = {"torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="sarkit-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        if not args.skip_throughput:
            result["throughput"] = bench_throughput(work, args)
            t = result["throughput"]
            print(f"(a) {t['scene']} tile {t['tile']} overlap {t['overlap']}, {t['tiles']} tiles, {t['generator']} on "
                  f"{t['device']}: end-to-end {t['end_to_end_s']} s ({t['tiles_per_s']} tiles/s), bare generator "
                  f"{t['bare_generator_s']} s {t['bare_generator_runs_s']}, ratio {t['ratio_bare_over_end_to_end']} "
                  f"(target ≥ 0.85); generator inside translate {t['generator_inside_translate_s']} s = "
                  f"{t['ratio_generator_share_of_end_to_end']} of end-to-end, overhead {t['overhead_s']} s")
        if not args.skip_memory:
            result["memory"] = m = bench_memory(work, args)
            a, b = (str(s) for s in args.mem_sizes)
            print(f"(b) peak RSS {a}²: {m[a]['peak_mib']} MiB ({m[a]['after_imports_mib']} after imports), "
                  f"{b}²: {m[b]['peak_mib']} MiB ({m[b]['after_imports_mib']} after imports), ratio {m['ratio_peak']} "
                  f"(target ≤ 1.25); added by translate {m[a]['added_by_translate_mib']} vs "
                  f"{m[b]['added_by_translate_mib']} MiB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
