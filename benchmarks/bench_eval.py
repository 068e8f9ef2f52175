"""Benchmark: batched torch PSNR + SSIM + MAE vs a per-tile scikit-image loop over the same tiles (CPU).

Usage: python benchmarks/bench_eval.py [--tiles 1000] [--size 256] [--batch 50] [--threads N] [--repeat 3]
                                      [--warmup 1] [--json out.json]
Both paths run in this process on the same generated 3-band tiles; the scikit-image loop computes
``peak_signal_noise_ratio``, ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=0)`` and a numpy MAE per tile. Each path is timed
``--repeat`` times after ``--warmup`` untimed runs (the two paths alternate, so load changes hit both alike);
the median and the fastest run are reported (the speed-up is the ratio of the medians).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_tiles(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` target tiles (3, size, size) in [0, 1] and noisy predictions."""
    rng = np.random.default_rng(seed)
    t = rng.random((n, 3, size, size), dtype=np.float32)
    p = np.clip(t + rng.normal(0, 0.1, t.shape).astype(np.float32), 0, 1)
    return p, t


def run_torch(p: np.ndarray, t: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    from sarkit.eval.metrics import pixel_metrics

    out = []
    start = time.perf_counter()
    for s in range(0, len(p), batch):
        m = pixel_metrics(torch.from_numpy(p[s:s + batch]), torch.from_numpy(t[s:s + batch]))
        out.append(torch.stack([m["psnr"], m["ssim"], m["mae"]], dim=1).numpy())
    return time.perf_counter() - start, np.concatenate(out)


def run_skimage(p: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    out = np.zeros((len(p), 3))
    start = time.perf_counter()
    for i in range(len(p)):
        a, b = p[i].astype(np.float64), t[i].astype(np.float64)
        out[i] = (peak_signal_noise_ratio(b, a, data_range=1.0),
                  structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                        data_range=1.0, channel_axis=0),
                  np.abs(a - b).mean())
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--repeat", type=int, default=3, help="time each path this many times (median and min)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs on one batch first")
    ap.add_argument("--json", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    p, t = make_tiles(args.tiles, args.size)
    for _ in range(max(0, args.warmup)):
        run_torch(p[:args.batch], t[:args.batch], args.batch)
        run_skimage(p[:2], t[:2])
    times_torch, times_sk = [], []
    for _ in range(max(1, args.repeat)):
        dt, m_torch = run_torch(p, t, args.batch)
        times_torch.append(dt)
        dt, m_sk = run_skimage(p, t)
        times_sk.append(dt)
    t_torch, t_sk = statistics.median(times_torch), statistics.median(times_sk)
    diff = np.abs(m_torch - m_sk).max(axis=0)
    res = {"benchmark": "eval", "tiles": args.tiles, "size": args.size, "bands": 3, "batch": args.batch,
           "repeat": args.repeat, "warmup": args.warmup,
           "torch_threads": torch.get_num_threads(), "torch_s": t_torch, "skimage_s": t_sk,
           "torch_min_s": min(times_torch), "skimage_min_s": min(times_sk), "torch_times_s": times_torch,
           "skimage_times_s": times_sk, "torch_tiles_per_s": args.tiles / t_torch,
           "skimage_tiles_per_s": args.tiles / t_sk,
           "speedup": t_sk / t_torch, "max_abs_diff": {"psnr": float(diff[0]), "ssim": float(diff[1]),
                                                       "mae": float(diff[2])},
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    print(f"torch batched : median {t_torch:8.2f} s  min {min(times_torch):8.2f} s  ({args.tiles / t_torch:7.1f} "
          f"tiles/s, {torch.get_num_threads()} threads)")
    print(f"skimage loop  : median {t_sk:8.2f} s  min {min(times_sk):8.2f} s  ({args.tiles / t_sk:7.1f} tiles/s)")
    print(f"speed-up      : {t_sk / t_torch:8.1f}×   max |Δ| psnr {diff[0]:.2e} ssim {diff[1]:.2e} mae {diff[2]:.2e}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
