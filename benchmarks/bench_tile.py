"""Tiling throughput: ``sarkit.data.tiling.tile_scene`` against plain rasterio windowed reads of the same scene.

A ``sarkit.data.synth`` scene (SIZE², S1 2-band float32 dB + S2 13-band uint16 + labels) is generated once. In the same
process, round-robin over ``--repeats`` after ``--warmup`` rounds, it times:

* ``sarkit`` — ``tile_scene`` (S1 only, and S1 + S2): reads every window, converts units, checks nodata, writes
  the tile GeoTIFFs, manifest and splits;
* ``rasterio read`` — a plain ``src.read(window=...)`` of the same windows from the same files (the floor);
* ``rasterio read+write`` — the same reads plus a plain GeoTIFF write of each tile (what any tiler must do).

Throughput is scene megapixels per second (SIZE² / seconds); median and min over the repeats.

    python benchmarks/bench_tile.py --size 4096 --json bench-out/tile.json
    python benchmarks/bench_tile.py --size 1024 --repeats 2 --warmup 1      # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rasterio
import rasterio.windows

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sarkit.data.synth import SynthOptions, synth_scene  # noqa: E402
from sarkit.data.tiling import TileOptions, tile_scene, tile_windows  # noqa: E402


def windows_of(path: Path, tile: int) -> list[rasterio.windows.Window]:
    """The windows ``tile_scene`` reads for a scene (same options), as rasterio windows."""
    with rasterio.open(path) as src:
        return [w.to_rasterio() for w in tile_windows(src.height, src.width, TileOptions(size=tile))]


def plain_read(paths: list[Path], windows: list[rasterio.windows.Window], out: Path | None = None) -> int:
    """Read every window of every file with rasterio (and write each as a GeoTIFF into ``out`` if given)."""
    total = 0
    srcs = [rasterio.open(p) for p in paths]
    try:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        for i, w in enumerate(windows):
            for k, src in enumerate(srcs):
                data = src.read(window=w)
                total += data.size
                if out is not None:
                    prof = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2],
                            "count": data.shape[0], "dtype": data.dtype.name, "crs": src.crs,
                            "transform": rasterio.windows.transform(w, src.transform), "compress": "deflate",
                            "tiled": True, "blockxsize": 256, "blockysize": 256}
                    with rasterio.open(out / f"{k}_{i}.tif", "w", **prof) as dst:
                        dst.write(data)
    finally:
        for s in srcs:
            s.close()
    return total


def bench(scene_dir: Path, size: int, tile: int, repeats: int, warmup: int, work: Path) -> dict[str, Any]:
    """Round-robin timings of the tiler and the plain rasterio baselines on the scene in ``scene_dir``."""
    s1, s2 = scene_dir / "s1.tif", scene_dir / "s2.tif"
    wins = windows_of(s1, tile)
    opts = TileOptions(size=tile, overwrite=True, max_nodata=1.0)

    def tiler(optical: Path | None) -> Callable[[], Any]:
        return lambda: tile_scene(s1, optical, None, work / "tiles", opts)

    def reader(paths: list[Path], write: bool) -> Callable[[], Any]:
        def run() -> int:
            out = work / "plain" if write else None
            if out is not None and out.exists():
                shutil.rmtree(out)
            return plain_read(paths, wins, out)
        return run

    cases: dict[str, Callable[[], Any]] = {
        "sarkit tile_scene S1": tiler(None),
        "rasterio read S1": reader([s1], False),
        "rasterio read+write S1": reader([s1], True),
        "sarkit tile_scene S1+S2": tiler(s2),
        "rasterio read S1+S2": reader([s1, s2], False),
        "rasterio read+write S1+S2": reader([s1, s2], True),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(warmup + repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[name].append(dt)
    mp = size * size / 1e6
    results = []
    for name, ts in times.items():
        med, best = statistics.median(ts), min(ts)
        results.append({"case": name, "median_s": med, "min_s": best, "median_mp_per_s": mp / med,
                        "max_mp_per_s": mp / best, "times_s": ts})
    by = {r["case"]: r for r in results}
    ratios = {}
    for bands in ("S1", "S1+S2"):
        t = by[f"sarkit tile_scene {bands}"]["median_s"]
        ratios[f"{bands} sarkit/read"] = by[f"rasterio read {bands}"]["median_s"] / t
        ratios[f"{bands} sarkit/read+write"] = by[f"rasterio read+write {bands}"]["median_s"] / t
    return {"windows": len(wins), "scene_mp": mp, "results": results, "throughput_ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="scene side in pixels")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sarkit-bench-tile-", dir=args.workdir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        synth_scene(work / "scene", SynthOptions(size=args.size, seed=args.seed))
        synth_s = time.perf_counter() - t0
        out = bench(work / "scene", args.size, args.tile, args.repeats, args.warmup, work)
    for r in out["results"]:
        print(f"{r['case']:26s}: median {r['median_s']:.2f} s ({r['median_mp_per_s']:.1f} MP/s)  "
              f"min {r['min_s']:.2f} s ({r['max_mp_per_s']:.1f} MP/s)", flush=True)
    for k, v in out["throughput_ratios"].items():
        print(f"throughput ratio {k}: {v:.2f}")
    record = {"benchmark": "tile", "size": args.size, "tile": args.tile, "repeats": args.repeats,
              "warmup": args.warmup, "synth_s": synth_s, "machine": platform.machine(), "cpus": os.cpu_count(),
              "loadavg_after": os.getloadavg(), "numpy": np.__version__, "rasterio": rasterio.__version__, **out}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
