"""Where one training step's time goes, per model: torch.profiler of one step after a warm-up step.

Each model is built as ``benchmarks/bench_train.py`` builds it (the trainer's classes, backend settings and step
tools; 3 → 3 channels, 256², batch 1 unless ``--batch``, as ``bench_vs_reference.py`` compares them), one step is
counted by ``FlopCounterMode`` (also the warm-up), one more is timed bare, and a third is profiled. The profiled
step's time is split by the operators' own (self) CPU time into

* convolutions (``aten::*conv*``, forward and backward, transposed ones included),
* normalisation (batch / instance norm, forward and backward),
* padding (reflection / replication / constant padding and their backward),
* optimizer (everything inside ``Optimizer.step`` and ``Optimizer.zero_grad``, Python included),
* other operators (activations, losses, element-wise, copies, concatenation, ...),
* outside operators: the step's wall time not spent inside any operator (Python, autograd bookkeeping, the
  profiler's own overhead),

and the achieved GFLOP/s of the bare step is set against ``--peak`` (fp32 peak of the CPU; 380 GFLOP/s for the 2
AVX-512 cores these figures were taken on: 2 cores × 2 FMA units × 16 fp32 lanes × 2 FLOP × ≈ 3 GHz), both per
wall second (against the peak of the threads used) and per process CPU second (against one core's peak: on a
loaded machine the wall time includes the time other programs held the core).

    python benchmarks/profile_step.py --models pix2pix,cyclegan,cut,qs-attn --json profile.json
    python benchmarks/profile_step.py --models cut --model-opt antialias=false --model-opt antialias_up=false
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_train import build_model  # noqa: E402
from sarkit.devices import configure_backends  # noqa: E402
from sarkit.training import model_option_values  # noqa: E402

CATEGORIES = (
    ("convolution", re.compile(r"conv")),
    ("normalisation", re.compile(r"batch_norm|instance_norm|group_norm|layer_norm|_native_batch_norm_legit")),
    ("padding", re.compile(r"pad")),
)


def _descendants(event: Any) -> list[Any]:
    """Every event below ``event`` in the profiler's call tree."""
    out, stack = [], list(event.cpu_children)
    while stack:
        e = stack.pop()
        out.append(e)
        stack.extend(e.cpu_children)
    return out


def split_profile(events: list[Any], wall_us: float) -> dict[str, float]:
    """Seconds per category (see the module docstring) from the profiler's events of one step of ``wall_us``."""
    inside_opt: set[int] = set()
    optimizer = 0.0
    for e in events:
        if e.name.startswith(("Optimizer.step", "Optimizer.zero_grad")) and not any(
                a.name.startswith("Optimizer.") for a in _ancestors(e)):
            optimizer += e.cpu_time_total
            inside_opt.update(id(d) for d in _descendants(e))
    sums = {name: 0.0 for name, _ in CATEGORIES}
    sums["other operators"] = 0.0
    in_ops = 0.0
    for e in events:
        if not e.name.startswith("aten::") or id(e) in inside_opt:
            continue
        in_ops += e.self_cpu_time_total
        for name, pattern in CATEGORIES:
            if pattern.search(e.name):
                sums[name] += e.self_cpu_time_total
                break
        else:
            sums["other operators"] += e.self_cpu_time_total
    sums["optimizer"] = optimizer
    sums["outside operators"] = max(0.0, wall_us - in_ops - optimizer)
    return {k: v / 1e6 for k, v in sums.items()}


def _ancestors(event: Any) -> list[Any]:
    """The events above ``event`` in the call tree."""
    out, e = [], event.cpu_parent
    while e is not None:
        out.append(e)
        e = e.cpu_parent
    return out


def top_ops(events: list[Any], n: int = 8) -> list[tuple[str, float]]:
    """The ``n`` aten operators with the most self CPU time (seconds), summed by name."""
    acc: dict[str, float] = {}
    for e in events:
        if e.name.startswith("aten::"):
            acc[e.name] = acc.get(e.name, 0.0) + e.self_cpu_time_total / 1e6
    return sorted(acc.items(), key=lambda kv: -kv[1])[:n]


def profile_model(name: str, batch: int, size: int, amp: str, model_opts: dict[str, Any],
                  peak: float) -> dict[str, Any]:
    """FLOP count, bare step time and the profiled split of one step of ``name``."""
    model, tools, data = build_model(name, batch, size, False, torch.device("cpu"), False, amp, model_opts, (3, 3))
    with FlopCounterMode(display=False) as counter:
        model.train_step(data, tools)
    gflop = counter.get_total_flops() / 1e9
    t, c = time.perf_counter(), time.process_time()
    model.train_step(data, tools)
    bare, bare_cpu = time.perf_counter() - t, time.process_time() - c
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        model.train_step(data, tools)
        wall = time.perf_counter() - t
    events = list(prof.events())
    split = split_profile(events, wall * 1e6)
    threads = torch.get_num_threads()
    core_peak = peak / max(os.cpu_count() or 1, 1)
    return {"model": name, "batch": batch, "amp": amp, "model_opts": model_opts, "gflop": gflop, "bare_s": bare,
            "bare_cpu_s": bare_cpu, "threads": threads, "profiled_s": wall, "gflop_per_s": gflop / bare,
            "peak_fraction": gflop / bare / (core_peak * threads), "gflop_per_cpu_s": gflop / bare_cpu,
            "core_peak_fraction": gflop / bare_cpu / core_peak,
            "split_s": split, "top_ops": top_ops(events), "load": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="pix2pix,cyclegan,cut,qs-attn")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--amp", default="off")
    ap.add_argument("--model-opt", action="append", default=[], help="key=value (repeatable)")
    ap.add_argument("--peak", type=float, default=380.0, help="fp32 peak GFLOP/s of the CPU")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    configure_backends(torch.device("cpu"))
    opts = model_option_values(args.model_opt)
    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = profile_model(name, args.batch, args.size, args.amp, opts, args.peak)
        results.append(r)
        parts = "  ".join(f"{k} {v:.2f} s ({100 * v / r['profiled_s']:.0f} %)" for k, v in r["split_s"].items())
        print(f"{name} batch {args.batch} {args.amp}: {r['gflop']:.1f} GFLOP, bare {r['bare_s']:.3f} s "
              f"= {r['gflop_per_s']:.0f} GFLOP/s ({100 * r['peak_fraction']:.0f} % of the peak of "
              f"{r['threads']} thread(s)); {r['gflop_per_cpu_s']:.0f} GFLOP per CPU second "
              f"({100 * r['core_peak_fraction']:.0f} % of one core's peak); profiled "
              f"{r['profiled_s']:.3f} s: {parts}; load {r['load']:.1f}", flush=True)
        print("   top: " + ", ".join(f"{k} {v:.2f}" for k, v in r["top_ops"]), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"torch": torch.__version__, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
