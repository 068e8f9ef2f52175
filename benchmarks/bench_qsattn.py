"""CUT and QS-Attn training steps side by side: seconds per step in fp32 and bf16, QS-Attn's overhead over CUT.

Both models are built at their default (paper) options for SAR (VV, VH) → optical (B4, B3, B2) on 256² tiles,
batch 1, with the trainer's backend settings, as ``bench_train.py`` builds them. After ``--warmup`` steps of
every case, each repeat runs one step of every case in turn (CUT fp32, QS-Attn fp32, CUT bf16, QS-Attn bf16, ...),
so that a change in the machine's load hits all cases alike. It reports the median and minimum seconds per step,
the process CPU seconds, QS-Attn's overhead over CUT at the same precision (median over median and min over min),
and the peak memory autograd holds for the backward passes (the unique storages of the saved tensors, parameters not
counted, followed with ``torch.autograd.graph.saved_tensors_hooks``; one more step per case).

    python benchmarks/bench_qsattn.py --repeats 5 --json bench-out/qsattn.json
    python benchmarks/bench_qsattn.py --modes global,local,local_global --amps off --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import make_batch  # noqa: E402
from sarkit.devices import configure_backends, make_scaler, resolve_amp  # noqa: E402
from sarkit.models import get_model  # noqa: E402
from sarkit.models.base import ModelIO, StepTools, TrainableModel, parse_options  # noqa: E402
from sarkit.raster.norm import optical_normalization, sar_normalization  # noqa: E402


def build(name: str, size: int, device: torch.device, options: dict[str, str]) -> TrainableModel:
    """Model ``name`` at its defaults (plus ``options``) for 2 → 3 channels on ``size``² tiles, with optimizers."""
    cls = get_model(name)
    io = ModelIO(2, 3, "sar2opt", size, sar_normalization().to_dict(), optical_normalization().to_dict())
    torch.manual_seed(0)
    model = cls(io, parse_options(cls.Options, options)).to(device)
    model.train()
    model.configure_optimizers(2e-4, (0.5, 0.999))
    return model


def saved_peak_mib(step: Any, model: nn.Module) -> float:
    """Peak MiB of the unique storages that autograd holds for backward while ``step()`` runs (parameters, which
    exist anyway, not counted; a saved tensor counts until its graph is freed by the backward pass)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    live: list[weakref.ref] = []
    peak = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal live, peak
        if t.untyped_storage().data_ptr() not in params:
            live.append(weakref.ref(t))
        sizes: dict[int, int] = {}
        alive = []
        for ref in live:
            x = ref()
            if x is not None:
                alive.append(ref)
                s = x.untyped_storage()
                sizes[s.data_ptr()] = s.nbytes()
        live = alive
        peak = max(peak, sum(sizes.values()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return peak / 2 ** 20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="global", help="QS-Attn qs_mode values to measure (comma-separated)")
    ap.add_argument("--amps", default="off,bf16", help="precisions: off (fp32), bf16 (or fp16 on CUDA)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-memory", action="store_true", help="skip the saved-for-backward measurement")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    settings = configure_backends(device)
    batch = {k: v.to(device) for k, v in make_batch(args.batch, args.size, False).items()}
    models = {"cut": build("cut", args.size, device, {})}
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        models[f"qs-attn {mode}"] = build("qs-attn", args.size, device, {"qs_mode": mode})
    cases = []
    for amp in [a.strip() for a in args.amps.split(",") if a.strip()]:
        dtype = resolve_amp(amp, device)
        tools = StepTools(device=device, amp_dtype=dtype, scaler=make_scaler(dtype, device))
        cases += [(name, amp, tools) for name in models]

    def step(name: str, tools: StepTools) -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        models[name].train_step(batch, tools)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t, time.process_time() - c

    load_before = os.getloadavg()
    for _ in range(args.warmup):
        for name, _amp, tools in cases:
            step(name, tools)
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {(n, a): [] for n, a, _ in cases}
    for _ in range(args.repeats):
        for name, amp, tools in cases:
            runs[(name, amp)].append(step(name, tools))
    memory = {} if args.no_memory else {(n, a): saved_peak_mib(
        lambda: models[n].train_step(batch, t), models[n]) for n, a, t in cases}

    results = []
    for (name, amp), r in runs.items():
        wall, cpu = [x[0] for x in r], [x[1] for x in r]
        results.append({"model": name, "amp": amp, "median_s": statistics.median(wall), "min_s": min(wall),
                        "median_cpu_s": statistics.median(cpu), "times_s": wall, "cpu_s": cpu,
                        "saved_for_backward_mib": memory.get((name, amp))})
    by = {(x["model"], x["amp"]): x for x in results}
    for x in results:
        base = by[("cut", x["amp"])]
        x["overhead_median_pct"] = 100 * (x["median_s"] / base["median_s"] - 1)
        x["overhead_min_pct"] = 100 * (x["min_s"] / base["min_s"] - 1)
        mem = f"; peak saved for backward {x['saved_for_backward_mib']:.0f} MiB" if x["saved_for_backward_mib"] else ""
        print(f"{x['model']:20s} {x['amp']:4s}: median {x['median_s']:.3f} s/step  min {x['min_s']:.3f} s/step  "
              f"(process CPU {x['median_cpu_s']:.3f} s); over CUT {x['overhead_median_pct']:+.1f} % median, "
              f"{x['overhead_min_pct']:+.1f} % min{mem}", flush=True)
    record = {"torch": torch.__version__, "threads": settings.threads, "device": str(device),
              "machine": platform.machine(), "cpus": os.cpu_count(), "size": args.size, "batch": args.batch,
              "repeats": args.repeats, "warmup": args.warmup, "loadavg_before": load_before,
              "loadavg_after": os.getloadavg(), "results": results}
    print(f"1-min load {load_before[0]:.1f} → {record['loadavg_after'][0]:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
