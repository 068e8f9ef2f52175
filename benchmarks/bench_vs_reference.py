"""sarkit's training step against the original implementations' own code, side by side in one process, interleaved.

Each case builds the original model through its own option parser and model class (``TrainOptions().parse()``,
``create_model``, ``set_input``, ``data_dependent_initialize`` where it has one, ``optimize_parameters``) and the
same model in sarkit through ``benchmarks/bench_train.py`` (``build_model``: the trainer's model class, backend
settings and step tools), on the same fixed random batch: RGB → RGB (3 → 3 channels, what the originals read, so
that CycleGAN's identity loss and CUT's identity NCE run on both sides), 256², fp32 unless a variant says otherwise,
the same torch and thread count. The first step of every side is counted by ``FlopCounterMode`` (convolutions and
matrix products, forward and backward) and printed, so equal work is shown rather than assumed; it is also the
warm-up. Then ``--rounds`` rounds: in each round every side (the original, sarkit fp32, and each ``--variants``
entry) runs ``--steps`` steps, in an order that rotates from round to round; a round's ratio is sarkit's mean step
time over the original's in that round. Reported: the median and range of the round ratios, the medians of the
step times, the same for the process CPU time of the steps, and the 1-minute load average before and after each
case. On a loaded machine run it with ``OMP_NUM_THREADS=1`` and read the CPU ratios (two spinning threads on two
shared cores were 20× slower than one in this work's runs).

The original code is not part of sarkit. Get it and pass the work trees:

    git clone https://github.com/taesungp/contrastive-unpaired-translation cut && git -C cut checkout b3ac297
    git clone https://github.com/sapphire497/query-selected-attention qsattn && git -C qsattn checkout c2c5e40
    git clone https://github.com/junyanz/pytorch-CycleGAN-and-pix2pix junyanz && git -C junyanz checkout 2a7afba

    python benchmarks/bench_vs_reference.py --junyanz junyanz --cut cut --qsattn qsattn \\
        --cases pix2pix-b1,pix2pix-b4,cyclegan,cut,cut-noaa,qsattn --rounds 4 --steps 1 --json vs_ref.json
    python benchmarks/bench_vs_reference.py --cut cut --cases cut-noaa --variants bf16,channels_last,unfused_adam

``--variants`` (each an extra sarkit side, measured alone against the same original in the same rounds):
``bf16`` (``--amp bf16``), ``channels_last`` (model and batch), ``unfused_adam`` (per-op Adam, as torch's default
and the originals), ``compile`` (``torch.compile`` of every network, inductor; its first step, compilation
included, is reported separately as ``compile_s``). The originals need three adaptations to run on a CPU, none
of which changes the work: ``--gpu_ids -1``; QS-Attn's ``PatchSampleF.create_mlp`` calls ``.cuda()`` (made a
no-op while the model is built) and its ``data_dependent_initialize`` divides by the number of GPUs (given one
while it runs); CUT's ``cycle_gan_model.py`` reads ``opt.amp`` (apex), which its parser no longer defines (set
False); CUT-derived trees' ``define_D`` takes ``no_antialias`` before ``gpu_ids``, so junyanz's
positional call is adapted when the tree is CUT-derived (see the tree's PROVENANCE.md where there is one).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_train import build_model, make_batch  # noqa: E402
from sarkit.devices import configure_backends  # noqa: E402

#: The original implementations: repository, commit, what the comparison uses from it.
REFERENCES = {
    "junyanz": ("junyanz/pytorch-CycleGAN-and-pix2pix", "2a7afba", "pix2pix_model.py, cycle_gan_model.py, networks.py"),
    "cut": ("taesungp/contrastive-unpaired-translation", "b3ac297", "cut_model.py, networks.py, patchnce.py"),
    "qsattn": ("sapphire497/query-selected-attention", "c2c5e40", "qs_model.py, networks_global.py"),
}


@dataclass(frozen=True)
class Case:
    """One comparison: the original's tree and command line, sarkit's model and options, the batch size."""

    tree: str
    ref_argv: tuple[str, ...]
    model: str
    batch: int = 1
    model_opts: dict[str, Any] = field(default_factory=dict)
    #: options only CUT-derived trees know (passed when the tree's parser has them)
    optional_argv: tuple[str, ...] = ()


CASES = {
    "pix2pix-b1": Case("junyanz", ("--model", "pix2pix", "--dataset_mode", "unaligned"), "pix2pix", 1,
                       optional_argv=("--no_antialias", "--no_antialias_up")),
    "pix2pix-b4": Case("junyanz", ("--model", "pix2pix", "--dataset_mode", "unaligned", "--batch_size", "4"),
                       "pix2pix", 4, optional_argv=("--no_antialias", "--no_antialias_up")),
    "cyclegan": Case("junyanz", ("--model", "cycle_gan", "--no_dropout"), "cyclegan", 1,
                     optional_argv=("--no_antialias", "--no_antialias_up")),
    "cut": Case("cut", ("--model", "cut"), "cut", 1),
    "cut-noaa": Case("cut", ("--model", "cut", "--no_antialias", "--no_antialias_up"), "cut", 1,
                     {"antialias": False, "antialias_up": False}),
    "qsattn": Case("qsattn", ("--model", "qs"), "qs-attn", 1),
}

REF_PACKAGES = ("models", "options", "util", "data")


def purge_reference_modules() -> None:
    """Forget the previous tree's top-level packages (every original names them models, options, util, data)."""
    for name in list(sys.modules):
        if name.split(".")[0] in REF_PACKAGES:
            del sys.modules[name]


@contextlib.contextmanager
def reference_tree(path: Path):
    """The original's tree first on ``sys.path``, its packages freshly imported, stdout silenced (it prints its
    options and networks)."""
    purge_reference_modules()
    sys.path.insert(0, str(path))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.path.remove(str(path))


def adapt_define_d(networks: Any) -> None:
    """In a CUT-derived tree, map junyanz's ``define_D(..., init_type, init_gain, gpu_ids)`` positional call onto
    CUT's signature (``no_antialias`` before ``gpu_ids``): the plain PatchGAN junyanz builds."""
    params = list(inspect.signature(networks.define_D).parameters)
    if "no_antialias" not in params:
        return
    original = networks.define_D

    def define_d(input_nc, ndf, netD, n_layers_D=3, norm="batch", init_type="normal", init_gain=0.02,
                 *rest, **kw):
        if rest and isinstance(rest[0], list):           # junyanz's call: rest = (gpu_ids,)
            return original(input_nc, ndf, netD, n_layers_D, norm, init_type, init_gain, True, rest[0], **kw)
        return original(input_nc, ndf, netD, n_layers_D, norm, init_type, init_gain, *rest, **kw)

    networks.define_D = define_d


def reference_data(batch: int, size: int, seed: int = 0) -> dict[str, Any]:
    """The benchmark batch as the originals' data loaders give it (A: input domain, B: output domain)."""
    b = make_batch(batch, size, False, seed, (3, 3))
    return {"A": b["sar"], "B": b["optical"], "A_paths": ["a"] * batch, "B_paths": ["b"] * batch}


def build_reference(case: Case, tree: Path, size: int, checkpoints: str) -> tuple[Any, Callable[[], None]]:
    """The original model built by its own option parser and ``create_model``, data-dependently initialised as its
    train.py does; returns (model, one optimisation step)."""
    with reference_tree(tree):
        import importlib
        import importlib.util

        import models  # noqa: F401  (the tree's package)
        from options.train_options import TrainOptions

        if case.model == "pix2pix" and importlib.util.find_spec("models.networks") is not None:
            adapt_define_d(importlib.import_module("models.networks"))
        known = set()
        probe = TrainOptions()
        try:
            parser = probe.initialize(argparse.ArgumentParser())
            known = set(parser._option_string_actions)
        except Exception:  # noqa: BLE001 - older parsers build differently; then pass nothing optional
            pass
        argv = [*case.ref_argv, *(a for a in case.optional_argv if a in known), "--gpu_ids", "-1",
                "--checkpoints_dir", checkpoints, "--name", f"bench_{case.model}", "--crop_size", str(size),
                "--load_size", str(size)]
        saved_argv, sys.argv = sys.argv, ["train.py", *argv]
        saved_cuda = nn.Module.cuda
        nn.Module.cuda = lambda self, device=None: self  # QS-Attn's create_mlp calls .cuda() unconditionally
        try:
            opt = TrainOptions().parse()
            if case.model == "cyclegan" and not hasattr(opt, "amp"):
                opt.amp = False  # CUT's cycle_gan_model.py reads apex's opt.amp, which its parser no longer defines
            torch.manual_seed(0)
            model = models.create_model(opt)
            data = reference_data(opt.batch_size, size)
            if hasattr(model, "data_dependent_initialize"):
                params = inspect.signature(model.data_dependent_initialize).parameters
                gpu_ids, opt.gpu_ids = opt.gpu_ids, [0]          # QS-Attn divides by len(gpu_ids)
                try:
                    if params:
                        model.data_dependent_initialize(data)
                    else:
                        model.set_input(data)
                        model.data_dependent_initialize()
                finally:
                    opt.gpu_ids = gpu_ids
            model.setup(opt)
        finally:
            sys.argv = saved_argv
            nn.Module.cuda = saved_cuda

    def step() -> None:
        model.set_input(data)
        model.optimize_parameters()

    return model, step


def build_sarkit(case: Case, size: int, variant: str) -> tuple[Any, Callable[[], None], float | None]:
    """sarkit's model for the case in ``variant`` (fp32, bf16, channels_last, unfused_adam, compile); returns
    (model, one step, compile seconds or None)."""
    device = torch.device("cpu")
    model, tools, data = build_model(case.model, case.batch, size, variant == "channels_last", device,
                                     variant == "unfused_adam", "bf16" if variant == "bf16" else "off",
                                     case.model_opts, (3, 3))
    compile_s = None
    if variant == "compile":
        for name in list(model.nets.keys()):
            model.nets[name] = torch.compile(model.nets[name])

    def step() -> None:
        model.train_step(data, tools)

    if variant == "compile":
        t = time.perf_counter()
        step()
        compile_s = time.perf_counter() - t
    return model, step, compile_s


def count_gflop(step: Callable[[], None]) -> float:
    """GFLOP of one call of ``step`` (convolutions and matrix products, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / 1e9


def timed(step: Callable[[], None], steps: int, flush_denormal: bool) -> tuple[float, float]:
    """Mean wall and process CPU seconds of ``steps`` calls of ``step``, with denormal flushing as that side runs
    it. (With one thread, ``OMP_NUM_THREADS=1``, the CPU seconds are the step's own work, which a loaded machine
    changes far less than the wall time.)"""
    torch.set_flush_denormal(flush_denormal)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps, (time.process_time() - c) / steps


def run_case(name: str, case: Case, tree: Path, size: int, rounds: int, steps: int, variants: list[str],
             sarkit_flush: bool) -> dict[str, Any]:
    """Build both sides, count one step's FLOPs on each (the warm-up), then the interleaved rounds."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as ckpt:
        t = time.perf_counter()
        _, ref_step = build_reference(case, tree, size, ckpt)
        sides: dict[str, tuple[Callable[[], None], bool]] = {"original": (ref_step, False)}
        compile_s: dict[str, float] = {}
        for v in ["fp32", *variants]:
            _, sk_step, c = build_sarkit(case, size, v)
            sides[f"sarkit-{v}"] = (sk_step, sarkit_flush)
            if c is not None:
                compile_s[v] = c
        gflop = {}
        for side, (fn, flush) in sides.items():
            torch.set_flush_denormal(flush)
            gflop[side] = count_gflop(fn)
        times: dict[str, list[float]] = {s: [] for s in sides}
        cpu: dict[str, list[float]] = {s: [] for s in sides}
        order = list(sides)
        for r in range(rounds):
            rot = order[r % len(order):] + order[: r % len(order)]
            for side in rot:
                fn, flush = sides[side]
                w, c = timed(fn, steps, flush)
                times[side].append(w)
                cpu[side].append(c)
        torch.set_flush_denormal(sarkit_flush)
    ratios = {s: [a / b for a, b in zip(times[s], times["original"])] for s in sides if s != "original"}
    cpu_ratios = {s: [a / b for a, b in zip(cpu[s], cpu["original"])] for s in sides if s != "original"}
    out = {"case": name, "batch": case.batch, "tree": str(tree), "reference": REFERENCES[case.tree][:2],
           "ref_argv": list(case.ref_argv), "sarkit_model": case.model, "model_opts": case.model_opts,
           "gflop": gflop, "times_s": times, "median_s": {s: statistics.median(v) for s, v in times.items()},
           "ratio_median": {s: statistics.median(v) for s, v in ratios.items()},
           "ratio_range": {s: (min(v), max(v)) for s, v in ratios.items()}, "ratios": ratios,
           "cpu_s": cpu, "median_cpu_s": {s: statistics.median(v) for s, v in cpu.items()},
           "cpu_ratio_median": {s: statistics.median(v) for s, v in cpu_ratios.items()},
           "cpu_ratio_range": {s: (min(v), max(v)) for s, v in cpu_ratios.items()}, "cpu_ratios": cpu_ratios,
           "compile_s": compile_s, "load_before": load_before, "load_after": os.getloadavg()[0],
           "wall_s": time.perf_counter() - t}
    return out


def print_case(r: dict[str, Any]) -> None:
    """One line per side: GFLOP, median s/step, ratio median (range), GFLOP/s."""
    print(f"{r['case']} (batch {r['batch']}; 1-min load {r['load_before']:.1f} → {r['load_after']:.1f}; "
          f"{r['wall_s']:.0f} s)", flush=True)
    for side, med in r["median_s"].items():
        g = r["gflop"][side]
        extra = ""
        extra = f"  CPU {r['median_cpu_s'][side]:7.3f} s"
        if side in r["ratio_median"]:
            lo, hi = r["ratio_range"][side]
            clo, chi = r["cpu_ratio_range"][side]
            extra += (f"  ratio {r['ratio_median'][side]:.3f} ({lo:.3f}–{hi:.3f}); CPU ratio "
                      f"{r['cpu_ratio_median'][side]:.3f} ({clo:.3f}–{chi:.3f})")
        if side.removeprefix("sarkit-") in r["compile_s"]:
            extra += f"  first step incl. compilation {r['compile_s'][side.removeprefix('sarkit-')]:.1f} s"
        print(f"  {side:22s} {g:8.1f} GFLOP  {med:7.3f} s/step  {g / med:6.1f} GFLOP/s{extra}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--junyanz", type=Path, default=None, help="work tree of junyanz/pytorch-CycleGAN-and-pix2pix")
    ap.add_argument("--cut", type=Path, default=None, help="work tree of taesungp/contrastive-unpaired-translation")
    ap.add_argument("--qsattn", type=Path, default=None, help="work tree of sapphire497/query-selected-attention")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    ap.add_argument("--variants", default="bf16", help="extra sarkit sides: bf16, channels_last, unfused_adam, "
                                                       "compile (comma-separated; '' for none)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1, help="timed steps per side and round")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    settings = configure_backends(torch.device("cpu"))
    trees = {"junyanz": args.junyanz, "cut": args.cut, "qsattn": args.qsattn}
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    results = []
    print(f"torch {torch.__version__}, {settings.threads} threads, {platform.machine()}, 1-min load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        case = CASES[name]
        tree = trees[case.tree]
        if tree is None:
            print(f"skip {name}: pass --{case.tree} (the work tree of {REFERENCES[case.tree][0]} at "
                  f"{REFERENCES[case.tree][1]})", file=sys.stderr)
            continue
        r = run_case(name, case, tree.resolve(), args.size, args.rounds, args.steps, variants,
                     sarkit_flush=True)
        print_case(r)
        results.append(r)
        if args.json:
            args.json.write_text(json.dumps({"torch": torch.__version__, "threads": settings.threads,
                                             "references": REFERENCES, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
