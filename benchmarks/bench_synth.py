"""Benchmark ``sarkit synth``: wall time and peak memory of one scene generated in a child process.

Usage: python benchmarks/bench_synth.py --size 10980 [--seed 0] [--out DIR] [--json result.json]

The synth runs as ``python -m sarkit.cli synth`` in a subprocess, so the peak resident set size reported
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``) is that of the generation alone. CPU seconds are reported
beside the wall time because shared machines make wall time noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_synth(size: int, seed: int, out: Path) -> dict:
    """Run the CLI once in a child process; return wall seconds, peak RSS (MiB) and output sizes (MiB)."""
    cmd = [sys.executable, "-m", "sarkit.cli", "synth", str(out), "--size", str(size), "--seed", str(seed),
           "--overwrite", "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"synth failed (exit {proc.returncode}): {proc.stderr.strip()}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kib = usage.ru_maxrss  # KiB on Linux
    files = {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(out.glob("*.tif"))}
    return {"command": " ".join(cmd[1:]), "size": size, "seed": seed, "wall_s": round(wall, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mib": round(peak_kib / 1024, 1), "megapixels_per_s": round(size * size / wall / 1e6, 3),
            "files_mib": files, "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "machine": platform.platform()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10980)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="scene folder (default: a temporary one, deleted)")
    ap.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    args = ap.parse_args()
    tmp = None
    out = args.out
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
        out = tmp / "scene"
    try:
        result = run_synth(args.size, args.seed, out)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"synth {args.size}×{args.size}: {result['wall_s']:.1f} s wall ({result['cpu_s']:.1f} s CPU), peak RSS {result['peak_rss_mib']:.0f} MiB, "
          f"{result['megapixels_per_s']:.2f} Mpx/s, files {result['files_mib']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
