"""Benchmark: batched torch PSNR + SSIM + MAE vs a per-tile scikit-image loop over the same tiles (CPU).

Usage: python benchmarks/bench_eval.py [--tiles 1000] [--size 256] [--batch 50] [--threads N] [--repeat 3]
                                      [--json out.json]
Both paths run in this process on the same generated 3-band tiles; the scikit-image loop computes
``peak_signal_noise_ratio``, ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=0)`` and a numpy MAE per tile. Each path is timed
``--repeat`` times and the fastest run is reported (robust on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch


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
    ap.add_argument("--repeat", type=int, default=1, help="time each path this many times, keep the fastest")
    ap.add_argument("--json", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    p, t = make_tiles(args.tiles, args.size)
    t_torch, t_sk = float("inf"), float("inf")
    for _ in range(max(1, args.repeat)):
        dt, m_torch = run_torch(p, t, args.batch)
        t_torch = min(t_torch, dt)
        dt, m_sk = run_skimage(p, t)
        t_sk = min(t_sk, dt)
    diff = np.abs(m_torch - m_sk).max(axis=0)
    res = {"tiles": args.tiles, "size": args.size, "bands": 3, "batch": args.batch, "repeat": args.repeat,
           "torch_threads": torch.get_num_threads(), "torch_s": t_torch, "skimage_s": t_sk,
           "speedup": t_sk / t_torch, "max_abs_diff": {"psnr": float(diff[0]), "ssim": float(diff[1]),
                                                       "mae": float(diff[2])},
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    print(f"torch batched : {t_torch:8.2f} s  ({args.tiles / t_torch:7.1f} tiles/s, {torch.get_num_threads()} threads)")
    print(f"skimage loop  : {t_sk:8.2f} s  ({args.tiles / t_sk:7.1f} tiles/s)")
    print(f"speed-up      : {t_sk / t_torch:8.1f}×   max |Δ| psnr {diff[0]:.2e} ssim {diff[1]:.2e} mae {diff[2]:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
