"""Training-step time per model on CPU (or another device), at the papers' architectures and tile size.

Each measurement builds the model with its default (paper) options for SAR (VV, VH) → optical (B4, B3, B2) on
256² tiles, applies the trainer's backend settings (``sarkit.devices.configure_backends``) and memory layout,
runs ``--warmup`` steps, then times ``--repeats`` calls of ``train_step`` on a fixed random batch and reports the
median and minimum seconds per step (and per image).

    python benchmarks/bench_train.py --models pix2pix --batch-sizes 1,4 --json bench.json
    python benchmarks/bench_train.py --models pix2pix,cyclegan,cut --batch-sizes 1 --layout contiguous
    python benchmarks/bench_train.py --models pix2pix --amp bf16     # as ``sarkit train --amp bf16``
    python benchmarks/bench_train.py --models cyclegan --model-opt lambda_identity=0   # as sarkit train --model-opt
    python benchmarks/bench_train.py --models pix2pix --amp bf16 --curve-steps 40   # bf16 loss curve against fp32's

``build_model`` is what ``bench_vs_reference.py`` (sarkit against the original implementations, side by side) and
``profile_step.py`` (where a step's time goes) build their sarkit side with.

The reference implementations cannot run their identity terms on SAR (2 bands) → RGB (3 bands): the original
CycleGAN asserts equal channel counts when ``lambda_identity > 0`` and CUT's ``nce_idt`` feeds real B into a
2-band generator. Their SAR→optical step times are therefore those of CycleGAN without identity (4 generator
passes instead of 6) and CUT without identity NCE; ``--model-opt lambda_identity=0`` and ``--model-opt
nce_idt=false`` measure sarkit doing the same work.

``--layout channels_last``, ``--no-flush-denormal`` and ``--unfused-adam`` measure the alternatives (``--unfused-adam
--no-flush-denormal`` is plain PyTorch, as the reference implementations run). Wall-clock times
depend on what else runs on the machine; the process CPU time per step is printed too (with one thread,
``OMP_NUM_THREADS=1``, it is a load-independent way to compare variants).
"""

from __future__ import annotations

import argparse
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

from sarkit.devices import configure_backends, make_scaler, resolve_amp  # noqa: E402
from sarkit.models import get_model, model_names  # noqa: E402
from sarkit.models.base import ModelIO, StepTools, parse_options  # noqa: E402
from sarkit.raster.norm import optical_normalization, sar_normalization  # noqa: E402
from sarkit.training import model_option_values  # noqa: E402


def make_batch(n: int, size: int, channels_last: bool, seed: int = 0,
               channels: tuple[int, int] = (2, 3)) -> dict[str, torch.Tensor]:
    """A fixed random SAR/optical batch in [-1, 1] with every pixel valid (``channels``: SAR, optical bands)."""
    g = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    sar = (torch.rand(n, channels[0], size, size, generator=g) * 2 - 1).contiguous(memory_format=fmt)
    opt = (torch.rand(n, channels[1], size, size, generator=g) * 2 - 1).contiguous(memory_format=fmt)
    return {"sar": sar, "optical": opt, "valid": torch.ones(n, size, size, dtype=torch.bool)}


def build_model(name: str, batch: int, size: int, channels_last: bool, device: torch.device,
                unfused_adam: bool = False, amp: str = "off", model_opts: dict[str, Any] | None = None,
                channels: tuple[int, int] = (2, 3), seed: int = 0) -> tuple[Any, StepTools, dict[str, torch.Tensor]]:
    """``name`` built as the trainer builds it (paper options unless ``model_opts``), its step tools and a fixed
    batch: ``channels`` = (input, output) bands (SAR VV, VH → B4, B3, B2 by default; (3, 3) for the reference
    implementations' RGB → RGB)."""
    cls = get_model(name)
    io = ModelIO(channels[0], channels[1], "sar2opt", size, sar_normalization().to_dict(),
                 optical_normalization().to_dict())
    torch.manual_seed(seed)
    known = {f for f in getattr(cls.Options, "__dataclass_fields__", {})}
    model = cls(io, parse_options(cls.Options, {k: v for k, v in (model_opts or {}).items() if k in known})).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    model.configure_optimizers(2e-4, (0.5, 0.999))
    if unfused_adam:  # the per-op Adam update of torch's default CPU path
        for opt in model.optimizers.values():
            for g in opt.param_groups:
                g["fused"] = None
                g["foreach"] = False
    amp_dtype = resolve_amp(amp, device)
    tools = StepTools(device=device, amp_dtype=amp_dtype, scaler=make_scaler(amp_dtype, device))
    data = {k: v.to(device) for k, v in make_batch(batch, size, channels_last, seed, channels).items()}
    return model, tools, data


def bench_model(name: str, batch: int, size: int, repeats: int, warmup: int, channels_last: bool,
                device: torch.device, unfused_adam: bool = False, amp: str = "off",
                model_opts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Median/min seconds of one training step of ``name`` at ``batch`` tiles of ``size``² (``model_opts``: option
    values as ``sarkit train --model-opt`` takes them; the paper defaults otherwise)."""
    model, tools, data = build_model(name, batch, size, channels_last, device, unfused_adam, amp, model_opts)

    def step() -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        model.train_step(data, tools)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t, time.process_time() - c

    for _ in range(warmup):
        step()
    runs = [step() for _ in range(repeats)]
    times, cpu = [r[0] for r in runs], [r[1] for r in runs]
    med, best = statistics.median(times), min(times)
    return {"model": name, "batch": batch, "size": size, "amp": amp, "model_opts": model_opts or {}, "median_s": med, "min_s": best,
            "median_per_image_s": med / batch, "min_per_image_s": best / batch, "repeats": repeats,
            "warmup": warmup, "times_s": times, "cpu_s": cpu, "median_cpu_s": statistics.median(cpu)}


def loss_curve(name: str, steps: int, size: int, amp: str, batch: int = 1,
               channels: tuple[int, int] = (3, 3), seed: int = 0) -> list[dict[str, float]]:
    """The logged losses of ``steps`` training steps of ``name`` from a fixed initialisation on a fixed sequence of
    random batches (one per step, seeded by the step number), with autocast ``amp``."""
    model, tools, _ = build_model(name, batch, size, False, torch.device("cpu"), False, amp, None, channels, seed)
    torch.manual_seed(seed + 1)
    return [model.train_step(make_batch(batch, size, False, 1000 + i, channels), tools) for i in range(steps)]


def curve_band(ref: list[dict[str, float]], other: list[dict[str, float]], window: int) -> dict[str, dict[str, float]]:
    """Per loss: the largest |moving mean of ``other`` − moving mean of ``ref``| over ``window`` steps, relative to
    the mean |ref| over the run, and the means of the last ``window`` steps of both."""
    out = {}
    for k in ref[0]:
        a, b = [r[k] for r in ref], [r[k] for r in other]
        scale = max(statistics.fmean(abs(x) for x in a), 1e-8)
        ma = [statistics.fmean(a[i:i + window]) for i in range(len(a) - window + 1)]
        mb = [statistics.fmean(b[i:i + window]) for i in range(len(b) - window + 1)]
        out[k] = {"max_rel_dev": max(abs(x - y) for x, y in zip(ma, mb)) / scale,
                  "last_ref": ma[-1], "last_other": mb[-1]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="pix2pix,cyclegan,cut", help="comma-separated registered model names")
    ap.add_argument("--batch-sizes", default="1,4", help="batch sizes for pix2pix-like paired models")
    ap.add_argument("--unpaired-batch-sizes", default="1", help="batch sizes for unpaired models (papers: 1)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layout", choices=("auto", "channels_last", "contiguous"), default="auto",
                    help="memory layout (auto: what the trainer picks for the device)")
    ap.add_argument("--no-flush-denormal", action="store_true", help="leave denormal floats enabled")
    ap.add_argument("--unfused-adam", action="store_true", help="torch's default per-op Adam update")
    ap.add_argument("--amp", default="off", help="autocast as the trainer's --amp: off, bf16 (or fp16 on CUDA)")
    ap.add_argument("--model-opt", action="append", default=[],
                    help="key=value model option (repeatable), applied to the models that have it")
    ap.add_argument("--curve-steps", type=int, default=0,
                    help="instead of timing: N fixed-seed steps in fp32 and with --amp (3 → 3 channels, as "
                         "bench_vs_reference.py), and how far the --amp loss curve strays from fp32's")
    ap.add_argument("--curve-window", type=int, default=10, help="moving-mean window of --curve-steps")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.curve_steps:
        configure_backends(torch.device(args.device))
        record: dict[str, Any] = {"torch": torch.__version__, "steps": args.curve_steps, "amp": args.amp,
                                  "size": args.size, "window": args.curve_window, "models": {}}
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            t = time.perf_counter()
            ref = loss_curve(name, args.curve_steps, args.size, "off")
            other = loss_curve(name, args.curve_steps, args.size, args.amp)
            band = curve_band(ref, other, args.curve_window)
            record["models"][name] = {"fp32": ref, args.amp: other, "band": band}
            print(f"{name}: {args.curve_steps} steps fp32 vs {args.amp} ({time.perf_counter() - t:.0f} s, load "
                  f"{os.getloadavg()[0]:.1f}): " + "; ".join(
                      f"{k} max dev {100 * v['max_rel_dev']:.1f} % (last {args.curve_window}: {v['last_ref']:.4g} vs "
                      f"{v['last_other']:.4g})" for k, v in band.items()), flush=True)
            if args.json:
                args.json.write_text(json.dumps(record, indent=2) + "\n")
        return 0
    model_opts = model_option_values(args.model_opt)

    device = torch.device(args.device)
    settings = configure_backends(device)
    if args.no_flush_denormal:
        torch.set_flush_denormal(False)
    layout = args.layout if args.layout != "auto" else ("channels_last" if settings.channels_last else "contiguous")
    known = set(model_names())
    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name not in known:
            print(f"skip {name}: not registered (known: {', '.join(sorted(known))})", file=sys.stderr)
            continue
        paired = getattr(get_model(name), "paired", True)
        sizes = args.batch_sizes if paired else args.unpaired_batch_sizes
        for b in [int(x) for x in sizes.split(",") if x.strip()]:
            r = bench_model(name, b, args.size, args.repeats, args.warmup, layout == "channels_last", device,
                            args.unfused_adam, args.amp, model_opts)
            results.append(r)
            extra = "".join(f" {k}={v}" for k, v in r["model_opts"].items() if k in
                            getattr(get_model(name).Options, "__dataclass_fields__", {}))
            print(f"{name:10s} batch {b} amp {args.amp}{extra}: median {r['median_s']:.3f} s/step  min {r['min_s']:.3f} s/step  "
                  f"({r['median_per_image_s']:.3f} s/image median; process CPU {r['median_cpu_s']:.3f} s/step)",
                  flush=True)
    record = {"torch": torch.__version__, "threads": settings.threads, "layout": layout,
              "flush_denormal": not args.no_flush_denormal, "fused_adam": not args.unfused_adam, "amp": args.amp,
              "device": str(device), "machine": platform.machine(),
              "cpus": os.cpu_count(), "loadavg_after": os.getloadavg(), "results": results}
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
