"""Benchmark of ``sarkit translate``: end-to-end throughput against the bare generator, and peak memory.

(a) A generated SIZE×SIZE 2-band float32 dB scene is translated end to end (read, normalise, generator, blend,
    write, COG conversion) with a U-Net generator (``unet`` from the network registry, else a small conv net);
    the same generator is then run bare over as many random tiles in the same process (same device, autocast
    and channels-last layout as translate), alternating bare / end-to-end ``--repeats`` times after warm-up.
    Ratio = bare time / end-to-end time (1.0 = translate adds nothing around the generator; target ≥ 0.9);
    median and best over the repeats. The end-to-end time is that of one scene of a multi-scene run
    (``translate A.tif B.tif …``): the checkpoint is loaded once, and the autocast guard (one tile in fp32
    against autocast), which runs once per checkpoint file and device in a process, is paid by the warm-up
    (``guard_s``). Lone-scene runs (checkpoint load, hash and guard inside the call, as a one-scene
    ``sarkit translate`` from cron) alternate with them and are reported as ``lone_scene_*``.
(b) Peak resident memory of translate on two scene sizes, each in its own subprocess, with a small conv
    generator (the generator's own memory does not depend on the scene size): RSS sampled every 5 ms during the
    translation (after a warm-up translation), against the RSS just before it. Target ratio ≤ 1.25.

``--compile``: translate runs with ``compile=True``; the checkpoint is loaded once and handed to every translation
(so it is compiled once, during the warm-up, and the end-to-end time leaves out the 0.05 s load), and the bare
generator is translate's own compiled ``NetworkPredictor`` over the same random batches.

Prints the figures and writes them as JSON with ``--json PATH``.

    python benchmarks/bench_translate.py --size 4096 --json bench-out/translate.json
    python benchmarks/bench_translate.py --size 1024 --ngf 16 --mem-sizes 1024,4096   # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sarkit.models.checkpoint import load_network, save_network  # noqa: E402
from sarkit.devices import resolve_device  # noqa: E402
from sarkit.models.registry import NETWORKS, register_network  # noqa: E402
from sarkit.raster.norm import optical_normalization, sar_normalization  # noqa: E402
from sarkit.infer import engine as en  # noqa: E402
from sarkit.infer.blend import blend_grid  # noqa: E402
from sarkit.infer.engine import resolve_amp_auto  # noqa: E402
from sarkit.infer.translate import TranslateOptions, translate_scene  # noqa: E402

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


def bare_generator_seconds(ckpt: Path, n_tiles: int, tile: int, batch: int, device: str, amp: str,
                           channels_last: bool = True) -> float:
    """Time of the generator alone over ``n_tiles`` random tiles in batches: eval and inference mode, the same
    device, autocast and memory layout as translate uses, output copied to numpy (no reading, blending, writing)."""
    dev = resolve_device(device)
    amp_dtype = resolve_amp_auto(amp, dev)
    net = load_network(ckpt, "generator", dev).module.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=fmt)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 2, tile, tile, generator=g) * 2 - 1).to(dev).contiguous(memory_format=fmt)

    def run(n: int) -> None:
        with torch.inference_mode(), torch.autocast(dev.type, dtype=amp_dtype or torch.float32,
                                                     enabled=amp_dtype is not None):
            net(x[:n]).float().contiguous().cpu().numpy()

    return time_batches(run, n_tiles, batch, dev)


def compiled_bare_seconds(gen: "en.NetworkPredictor", n_tiles: int, tile: int, batch: int) -> float:
    """Time of translate's compiled generator alone over ``n_tiles`` random tiles in batches (numpy in and out,
    as translate calls it)."""
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 2, tile, tile)).astype(np.float32)
    return time_batches(lambda n: gen(x[:n]), n_tiles, batch, gen.device)


def time_batches(run: Callable[[int], object], n_tiles: int, batch: int, dev: torch.device) -> float:
    """Seconds for ``run(n)`` over ``n_tiles`` tiles in batches of ``batch`` (the last one smaller), after one
    warm-up batch; CUDA work is synchronised before and after."""
    run(batch)
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
                            amp=args.amp, overwrite=True, compile=args.compile)
    dev = resolve_device(args.device)
    ckpt_path = ckpt
    # per scene of a multi-scene run (`translate A.tif B.tif …`): the checkpoint loaded (and hashed) once, as
    # translate_many does, the autocast guard paid by the first scene (here the warm-up)
    loaded = load_network(ckpt, "generator", dev)
    loaded.sha256  # noqa: B018 - wait for the background hash: a multi-scene run has it from its first scene
    if args.compile:  # compiled once (in the warm-up), for every translation and the bare runs
        compiled_gen = en.NetworkPredictor(loaded, dev, resolve_amp_auto(args.amp, dev), tile=args.tile,
                                           compile=True)
        compiled_gen._checked = True  # no bf16 check in the bare runs
    # warm-up (kernel selection, first-call costs) on a small scene, then the measured runs
    small = work / "warm.tif"
    write_scene(small, args.tile * 2)
    guard_s = [0.0]
    real_guard = en.NetworkPredictor.guard

    def timed_guard(self, batch):
        t0 = time.perf_counter()
        out = real_guard(self, batch)
        guard_s[0] += time.perf_counter() - t0
        return out

    en.NetworkPredictor.guard = timed_guard
    try:
        for _ in range(max(1, args.warmup)):
            translate_scene(small, loaded, work / "warm_out.tif", opts)
    finally:
        en.NetworkPredictor.guard = real_guard
    n_tiles = blend_grid(args.size, args.size, args.tile, args.overlap).n_tiles
    in_situ = [0.0]
    real_call = en.NetworkPredictor.__call__

    def timed(self, batch, seeds=None):  # the generator's own time inside translate
        t0 = time.perf_counter()
        out = real_call(self, batch, seeds)
        in_situ[0] += time.perf_counter() - t0
        return out

    def bare() -> float:
        if args.compile:
            return compiled_bare_seconds(compiled_gen, n_tiles, args.tile, args.batch_size)
        return bare_generator_seconds(ckpt_path, n_tiles, args.tile, args.batch_size, args.device, args.amp)

    def end_to_end(lone: bool) -> float:
        """One translation: per scene of a multi-scene run, or a lone scene (``lone``: the checkpoint file loaded
        and hashed, and the autocast guard run, inside the call, as a one-scene `sarkit translate` does)."""
        if lone:
            en._GUARD_VERDICTS.clear()
        return translate_scene(scene, ckpt_path if lone else loaded, work / "out.tif", opts).seconds

    # bare, e2e, bare, e2e, …, bare: each end-to-end run is compared with the mean of the bare runs around it
    # (the machine may be shared: load changes hit both alike); lone-scene runs alternate with them (not compiled)
    bare()  # discarded: the first full bare pass after the warm-up translation runs 10–15 % slower than later ones
    bares, e2e, inside, lone_e2e, lone_ratios = [bare()], [], [], [], []
    for _ in range(max(1, args.repeats)):
        in_situ[0] = 0.0
        en.NetworkPredictor.__call__ = timed
        try:
            e2e.append(end_to_end(lone=False))
        finally:
            en.NetworkPredictor.__call__ = real_call
        inside.append(in_situ[0])
        bares.append(bare())
        if not args.compile:
            lone_e2e.append(end_to_end(lone=True))
            b = bare()
            lone_ratios.append((bares[-1] + b) / 2 / lone_e2e[-1])
            bares.append(b)
    step = 1 if args.compile else 2
    ratios = [(bares[step * i] + bares[step * i + 1]) / 2 / e2e[i] for i in range(len(e2e))]
    med = statistics.median
    out = {"scene": f"{args.size}x{args.size}x2 float32", "generator": label + (" compiled" if args.compile else ""),
           "device": str(dev), "amp": str(resolve_amp_auto(args.amp, dev)),
           "tile": args.tile, "overlap": args.overlap, "batch_size": args.batch_size, "tiles": n_tiles,
           "repeats": len(e2e), "warmup": max(1, args.warmup),
           "end_to_end_s": round(med(e2e), 3), "end_to_end_min_s": round(min(e2e), 3),
           "end_to_end_runs_s": [round(t, 3) for t in e2e],
           "bare_generator_s": round(med(bares), 3), "bare_generator_min_s": round(min(bares), 3),
           "bare_generator_runs_s": [round(t, 3) for t in bares],
           "generator_inside_translate_s": round(med(inside), 3),
           "overhead_s": round(med(e2e) - med(inside), 3), "guard_s": round(guard_s[0], 3),
           "tiles_per_s": round(n_tiles / med(e2e), 3), "tiles_per_s_max": round(n_tiles / min(e2e), 3),
           "bare_tiles_per_s": round(n_tiles / med(bares), 3),
           "ratio_runs": [round(r, 3) for r in ratios],
           "ratio_bare_over_end_to_end": round(med(ratios), 3), "ratio_best": round(max(ratios), 3),
           "ratio_generator_share_of_end_to_end": round(med(inside) / med(e2e), 3)}
    if lone_e2e:
        out.update({"lone_scene_end_to_end_s": round(med(lone_e2e), 3),
                    "lone_scene_end_to_end_runs_s": [round(t, 3) for t in lone_e2e],
                    "lone_scene_ratio_runs": [round(r, 3) for r in lone_ratios],
                    "lone_scene_ratio": round(med(lone_ratios), 3)})
    return out


class RssSampler:
    """Samples this process's resident set size (/proc/self/statm) every ``interval`` s in a thread: the peak
    *during* a block, which ``ru_maxrss`` cannot give once imports have set a higher high-water mark."""

    def __init__(self, interval: float = 0.005) -> None:
        import threading

        self.interval = interval
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def mem_child(scene: str, out: str, tile: int, overlap: int, batch: int) -> None:
    """Subprocess body: translate one scene with the small conv generator; print as JSON the RSS before, the peak
    RSS sampled during the translation and ru_maxrss (bytes → KiB)."""
    torch.set_num_threads(1)
    work = Path(out).parent
    ckpt, _ = make_generator(work / "memgen.safetensors", "conv", tile, 16)
    opts = TranslateOptions(tile=tile, overlap=overlap, batch_size=batch, device="cpu", overwrite=True)
    warm = work / "mem_warm.tif"
    write_scene(warm, tile * 2)
    translate_scene(warm, ckpt, work / "mem_warm_out.tif", opts)  # first-call allocations out of the way
    import gc

    gc.collect()
    base = RssSampler.now()
    t0 = time.perf_counter()
    with RssSampler() as rss:
        s = translate_scene(scene, ckpt, out, opts)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": base // 1024, "peak_kib": rss.peak // 1024, "ru_maxrss_kib": maxrss,
                      "tiles": s.tiles, "seconds": time.perf_counter() - t0}))


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
                          "ru_maxrss_mib": round(rec["ru_maxrss_kib"] / 1024, 1),
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
    p.add_argument("--compile", action="store_true", help="translate --compile (and a compiled bare generator)")
    p.add_argument("--ngf", type=int, default=64, help="U-Net width (64 = pix2pix)")
    p.add_argument("--repeats", type=int, default=3, help="end-to-end runs (each between two bare runs)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up translations of a small scene")
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
    result: dict = {"benchmark": "translate", "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="sarkit-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        if not args.skip_throughput:
            result["throughput"] = bench_throughput(work, args)
            t = result["throughput"]
            print(f"(a) {t['scene']} tile {t['tile']} overlap {t['overlap']}, {t['tiles']} tiles, {t['generator']} on "
                  f"{t['device']} amp {t['amp']}: end-to-end median {t['end_to_end_s']} s min {t['end_to_end_min_s']} s "
                  f"({t['tiles_per_s']} tiles/s), bare generator median {t['bare_generator_s']} s "
                  f"{t['bare_generator_runs_s']}, ratio median {t['ratio_bare_over_end_to_end']} best "
                  f"{t['ratio_best']} (target ≥ 0.9); generator inside translate {t['generator_inside_translate_s']} s = "
                  f"{t['ratio_generator_share_of_end_to_end']} of end-to-end, overhead {t['overhead_s']} s; autocast guard "
                  f"in the warm-up {t['guard_s']} s; lone scene: end-to-end median {t.get('lone_scene_end_to_end_s')} s, "
                  f"ratio {t.get('lone_scene_ratio')}")
        if not args.skip_memory:
            result["memory"] = m = bench_memory(work, args)
            a, b = (str(s) for s in args.mem_sizes)
            print(f"(b) peak RSS {a}²: {m[a]['peak_mib']} MiB ({m[a]['after_imports_mib']} before translate), "
                  f"{b}²: {m[b]['peak_mib']} MiB ({m[b]['after_imports_mib']} before translate), ratio {m['ratio_peak']} "
                  f"(target ≤ 1.25); added by translate {m[a]['added_by_translate_mib']} vs "
                  f"{m[b]['added_by_translate_mib']} MiB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
