"""Run every sarkit benchmark, collect their JSON into OUT/summary.json and print one summary table.

The same tables are written as Markdown to OUT/summary.md (the source of docs/benchmarks.md).

Each benchmark runs as its own subprocess (``benchmarks/bench_*.py --json OUT/<name>.json``; its console output is
kept in ``OUT/<name>.log``), so one benchmark's memory, threads and allocator state never affect another's.
Every benchmark warms up first and reports the median and the minimum over its repeats.

    python benchmarks/run_all.py                      # the issue's sizes (about 20 minutes on 2 cores)
    python benchmarks/run_all.py --quick              # small sizes and repeats: a smoke test of a few minutes
    python benchmarks/run_all.py --only infer,translate --out bench-out

``train_plain`` is the pix2pix training step in plain PyTorch settings (contiguous layout, per-op Adam, denormals
kept), the configuration of the reference implementations, measured in the same run as a load control. The
reference figures of the original implementations on this machine kind are in ``REFERENCE``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Figures of the original implementations on a 2-core AVX512-BF16 EPYC without GPU (seconds).
REFERENCE = {"pix2pix_step_b1_s": 0.72, "pix2pix_per_image_b4_s": 0.42, "cyclegan_step_b1_s": 7.6,
             "cut_step_b1_s": 5.8, "unet_infer_b1_s_per_tile": 0.128}
TARGETS = {"pix2pix_step_b1_max_s": 0.8 * REFERENCE["pix2pix_step_b1_s"], "unet_infer_max_s_per_tile": 0.1,
           "translate_min_ratio": 0.9}

#: name → (script, default arguments, --quick arguments)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "train": ("bench_train.py",
              ["--models", "pix2pix,cyclegan,cut", "--batch-sizes", "1,4", "--repeats", "5", "--warmup", "2"],
              ["--models", "pix2pix", "--batch-sizes", "1", "--size", "64", "--repeats", "2", "--warmup", "1"]),
    "train_plain": ("bench_train.py",
                    ["--models", "pix2pix", "--batch-sizes", "1,4", "--repeats", "5", "--warmup", "2",
                     "--layout", "contiguous", "--unfused-adam", "--no-flush-denormal"],
                    ["--models", "pix2pix", "--batch-sizes", "1", "--size", "64", "--repeats", "2", "--warmup", "1",
                     "--layout", "contiguous", "--unfused-adam", "--no-flush-denormal"]),
    "train_bf16": ("bench_train.py",
                   ["--models", "pix2pix", "--batch-sizes", "1,4", "--repeats", "5", "--warmup", "2", "--amp", "bf16"],
                   ["--models", "pix2pix", "--batch-sizes", "1", "--size", "64", "--repeats", "2", "--warmup", "1",
                    "--amp", "bf16"]),
    "infer": ("bench_infer.py", ["--batch-sizes", "1,4,8,16", "--repeats", "5", "--warmup", "2"],
              ["--batch-sizes", "1,4", "--tile", "64", "--ngf", "16", "--repeats", "2", "--warmup", "1"]),
    "translate": ("bench_translate.py", ["--size", "4096", "--mem-sizes", "2048,8192", "--repeats", "3"],
                  ["--size", "512", "--ngf", "16", "--mem-sizes", "256,1024", "--repeats", "1"]),
    "tile": ("bench_tile.py", ["--size", "4096", "--repeats", "3", "--warmup", "1"],
             ["--size", "512", "--repeats", "1", "--warmup", "1"]),
    "eval": ("bench_eval.py", ["--tiles", "1000", "--batch", "50", "--repeat", "3", "--warmup", "1"],
             ["--tiles", "20", "--size", "64", "--batch", "10", "--repeat", "1", "--warmup", "1"]),
}
DEFAULT_SET = list(BENCHMARKS)


def command(name: str, quick: bool, out: Path, extra: list[str] | None = None) -> list[str]:
    """The subprocess command line of one benchmark."""
    script, full, small = BENCHMARKS[name]
    return [sys.executable, str(HERE / script), *(small if quick else full), *(extra or []),
            "--json", str(out / f"{name}.json")]


def run_one(name: str, quick: bool, out: Path, timeout: float | None) -> dict[str, Any]:
    """Run one benchmark, echo and log its output; return its record (with the command and wall time)."""
    cmd = command(name, quick, out)
    shown = " ".join(["python", *[str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT)) else c
                                  for c in cmd[1:]]])
    print(f"\n== {name}: {shown}", flush=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    log = out / f"{name}.log"
    status = "ok"
    with open(log, "w") as f:
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                f.write(line)
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc, status = -9, "timeout"
    wall = time.perf_counter() - t0
    if rc != 0 and status == "ok":
        status = f"exit {rc}"
    result: Any = None
    js = out / f"{name}.json"
    if status == "ok" and js.exists():
        result = json.loads(js.read_text())
    # the 1-minute load average around the run: above the benchmark's own threads, another program competed
    return {"command": shown, "status": status, "wall_s": round(wall, 1), "loadavg_1min_before": load_before[0],
            "loadavg_1min_after": os.getloadavg()[0], "result": result}


# ------------------------------------------------------------------------------------------------ summary rows
Row = tuple[str, str, str, str, str]  # benchmark, case, median, min, note


def _train_rows(name: str, rec: dict) -> list[Row]:
    rows = []
    for r in rec.get("results", []):
        ref = {("pix2pix", 1): REFERENCE["pix2pix_step_b1_s"], ("cyclegan", 1): REFERENCE["cyclegan_step_b1_s"],
               ("cut", 1): REFERENCE["cut_step_b1_s"]}.get((r["model"], r["batch"]))
        note = f"ref {ref} s" if ref else ""
        if r["model"] == "pix2pix" and r["batch"] == 4:
            note = f"{r['median_per_image_s']:.3f} s/image (ref {REFERENCE['pix2pix_per_image_b4_s']})"
        amp = f" {r['amp']}" if r.get("amp", "off") != "off" else ""
        rows.append((name, f"{r['model']} batch {r['batch']}{amp} (s/step)", f"{r['median_s']:.3f}", f"{r['min_s']:.3f}",
                     note))
    return rows


def _infer_rows(rec: dict) -> list[Row]:
    return [("infer", f"U-Net{rec['tile']} ngf{rec['ngf']} b{r['batch']} {r['variant']} (s/tile)",
             f"{r['median_s_per_tile']:.4f}", f"{r['min_s_per_tile']:.4f}", f"{r['median_tiles_per_s']:.2f} tiles/s")
            for r in rec.get("results", [])]


def _translate_rows(rec: dict) -> list[Row]:
    rows = []
    t = rec.get("throughput")
    if t:
        rows.append(("translate", f"end-to-end {t['scene']} {t['tiles']} tiles (s)", f"{t['end_to_end_s']:.2f}",
                     f"{t['end_to_end_min_s']:.2f}", f"{t['tiles_per_s']} tiles/s, amp {t['amp']}, "
                     f"per scene of a multi-scene run"))
        rows.append(("translate", "bare generator, same tiles (s)", f"{t['bare_generator_s']:.2f}",
                     f"{t['bare_generator_min_s']:.2f}", f"{t['bare_tiles_per_s']} tiles/s"))
        rows.append(("translate", "ratio bare / end-to-end", f"{t['ratio_bare_over_end_to_end']:.3f}",
                     f"{t['ratio_best']:.3f} (best)", "target ≥ 0.9"))
        if "lone_scene_ratio" in t:
            rows.append(("translate", "lone scene: end-to-end (s)", f"{t['lone_scene_end_to_end_s']:.2f}", "",
                         f"checkpoint load, hash and autocast guard ({t.get('guard_s')} s) included"))
            rows.append(("translate", "lone scene: ratio bare / end-to-end", f"{t['lone_scene_ratio']:.3f}", "", ""))
    m = rec.get("memory")
    if m:
        for k, v in m.items():
            if isinstance(v, dict):
                rows.append(("translate", f"peak RSS {k}² (MiB)", f"{v['peak_mib']}", "",
                             f"+{v['added_by_translate_mib']} MiB by translate, {v['seconds']} s"))
    return rows


def _tile_rows(rec: dict) -> list[Row]:
    rows = [("tile", f"{r['case']} {rec['size']}² (MP/s)", f"{r['median_mp_per_s']:.2f}", f"{r['max_mp_per_s']:.2f}",
             f"{r['median_s']:.2f} s") for r in rec.get("results", [])]
    rows += [("tile", f"ratio {k}", f"{v:.2f}", "", "") for k, v in rec.get("throughput_ratios", {}).items()]
    return rows


def _eval_rows(rec: dict) -> list[Row]:
    return [("eval", f"torch batched, {rec['tiles']} tiles {rec['size']}² (s)", f"{rec['torch_s']:.2f}",
             f"{rec['torch_min_s']:.2f}", f"{rec['torch_tiles_per_s']:.1f} tiles/s"),
            ("eval", "scikit-image per-tile loop (s)", f"{rec['skimage_s']:.2f}", f"{rec['skimage_min_s']:.2f}",
             f"{rec['skimage_tiles_per_s']:.1f} tiles/s"),
            ("eval", "speed-up (median)", f"{rec['speedup']:.1f}×", "", "")]


ROWS: dict[str, Callable[[dict], list[Row]]] = {
    "train": lambda r: _train_rows("train", r), "train_plain": lambda r: _train_rows("train_plain", r),
    "train_bf16": lambda r: _train_rows("train_bf16", r),
    "infer": _infer_rows, "translate": _translate_rows, "tile": _tile_rows, "eval": _eval_rows,
}


def targets(results: dict[str, dict]) -> list[dict[str, Any]]:
    """The issue's targets, met or missed, from the collected results (only those measured at full size)."""
    out = []
    for name in ("train", "train_bf16"):
        train = (results.get(name) or {}).get("result") or {}
        for r in train.get("results", []):
            if r["model"] == "pix2pix" and r["batch"] == 1 and r["size"] == 256:
                out.append({"target": f"pix2pix step, batch 1 ≤ 0.8 × 0.72 s ({name})",
                            "limit": TARGETS["pix2pix_step_b1_max_s"], "median": r["median_s"], "min": r["min_s"],
                            "met": r["median_s"] <= TARGETS["pix2pix_step_b1_max_s"]})
    infer = (results.get("infer") or {}).get("result") or {}
    if infer.get("tile") == 256 and infer.get("ngf") == 64:
        rs = infer.get("results", [])
        for label, pool in (("batch 1", [r for r in rs if r["batch"] == 1]), ("any batch", rs)):
            if pool:
                best = min(pool, key=lambda r: r["median_s_per_tile"])
                out.append({"target": f"U-Net inference < 0.1 s/tile ({label}; best: b{best['batch']} "
                                      f"{best['variant']})", "limit": TARGETS["unet_infer_max_s_per_tile"],
                            "median": best["median_s_per_tile"], "min": best["min_s_per_tile"],
                            "met": best["median_s_per_tile"] < TARGETS["unet_infer_max_s_per_tile"]})
    tr = ((results.get("translate") or {}).get("result") or {}).get("throughput")
    if tr and tr.get("scene", "").startswith("4096"):
        out.append({"target": "translate end-to-end ≥ 0.9 × bare generator", "limit": TARGETS["translate_min_ratio"],
                    "median": tr["ratio_bare_over_end_to_end"], "min": tr["ratio_best"],
                    "met": tr["ratio_bare_over_end_to_end"] >= TARGETS["translate_min_ratio"]})
    return out


def table(results: dict[str, dict]) -> str:
    """One plain-text table of every benchmark's figures."""
    rows: list[Row] = [("benchmark", "case", "median", "min", "note")]
    for name, rec in results.items():
        if rec.get("result") is None:
            rows.append((name, f"({rec['status']})", "", "", rec["command"]))
            continue
        rows += ROWS[name](rec["result"])
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(summary: dict[str, Any]) -> str:
    """The figures as Markdown: one table per benchmark with its command, then the targets."""
    lines = [f"Measured {summary['date']} ({'quick' if summary['quick'] else 'full'} run); machine: "
             + ", ".join(f"{k} {v}" for k, v in summary["machine"].items()), ""]
    for name, rec in summary["benchmarks"].items():
        lines += [f"### {name}", "", f"`{rec['command']}` — {rec['status']}, {rec['wall_s']} s, 1-min load "
                  f"{rec.get('loadavg_1min_before', float('nan')):.1f} → {rec.get('loadavg_1min_after', float('nan')):.1f}",
                  ""]
        if rec.get("result") is None:
            continue
        lines += ["| case | median | min | note |", "|---|---|---|---|"]
        lines += [f"| {r[1]} | {r[2]} | {r[3]} | {r[4]} |" for r in ROWS[name](rec["result"])]
        lines.append("")
    if summary["targets"]:
        lines += ["### targets", "", "| target | limit | median | min | met |", "|---|---|---|---|---|"]
        lines += [f"| {t['target']} | {t['limit']:.4g} | {t['median']:.4g} | {t['min']:.4g} | "
                  f"{'met' if t['met'] else 'missed'} |" for t in summary["targets"]]
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    try:
        import torch

        from sarkit.devices import cpu_supports_bf16

        info.update(torch=torch.__version__, cuda=torch.cuda.is_available(), torch_threads=torch.get_num_threads(),
                    cpu_bf16=cpu_supports_bf16())
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder (default bench-out/)")
    ap.add_argument("--quick", action="store_true", help="small sizes and repeats (smoke test, a few minutes)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    ap.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per benchmark before it is killed")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    names = [n.strip() for n in (args.only.split(",") if args.only else DEFAULT_SET) if n.strip()]
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    unknown = [n for n in names + sorted(skip) if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    names = [n for n in names if n not in skip]
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    start = _dt.datetime.now().isoformat(timespec="seconds")
    results = {n: run_one(n, args.quick, args.out, args.timeout) for n in names}
    summary = {"date": start, "quick": args.quick, "machine": info, "reference": REFERENCE,
               "targets": targets(results), "benchmarks": results}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    print("\n" + table(results))
    for t in summary["targets"]:
        print(f"target {t['target']}: median {t['median']:.4g} (min {t['min']:.4g}) vs {t['limit']:.4g} → "
              f"{'met' if t['met'] else 'MISSED'}")
    print(f"\nwrote {args.out / 'summary.json'}")
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
