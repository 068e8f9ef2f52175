"""``sarkit benchmark``: train every listed model with the same budget and seed, evaluate each on the test split in
both directions, and write the papers' comparison table (``sarkit.eval.compare``).

Layout of ``OUT``::

    benchmark.json                      options, and per model and direction: run, report, seconds, what was done
    runs/segmenter-sar/ segmenter-optical/   the segmenters (tiles with labels): PA/mIoU/SMS, and the models
                                        whose options take ``sar_segmenter`` / ``optical_segmenter``
    runs/<model>-<direction>/           one training run each (its report.html: curves, samples, timing)
    reports/<model>-<direction>/        ``sarkit eval --checkpoint RUN --data TILES --split test``
    comparison/compare.md .csv .tex     one row per model, SAR→OPT / OPT→SAR / downstream columns

Resuming: a finished run is not trained again, an unfinished one is resumed from its last checkpoint, one without
a checkpoint is started again; a report is kept while it was made from the run's current export (the SHA-256 in
the report equals the export's). So a killed benchmark run again trains and evaluates only what is missing.
The model list comes from the registry (``all`` = every registered translator).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from sarkit.errors import InputError
from sarkit.reporting import NULL_REPORTER, Reporter

DIRECTIONS = ("sar2opt", "opt2sar")
RECORD_NAME = "benchmark.json"
#: Model options that take a segmenter run, by the modality of that segmenter.
SEGMENTER_OPTIONS = {"sar_segmenter": "sar", "optical_segmenter": "optical"}
#: Modality of a direction's prediction (its PA/mIoU/SMS need a segmenter of that modality).
OUTPUT_MODALITY = {"sar2opt": "optical", "opt2sar": "sar"}


def translator_names() -> list[str]:
    """Every registered model that translates from tiles alone (the benchmark's ``all``; models built on other
    runs, ``standalone = False``, only when named)."""
    from sarkit.models.base import Task
    from sarkit.models.registry import get_model, model_names

    return [m for m in model_names() if get_model(m).task is Task.TRANSLATOR and get_model(m).standalone]


def model_directions(model: str) -> tuple[str, ...]:
    """The directions a model translates in: its class's ``directions`` when it declares them, else both."""
    from sarkit.models.registry import get_model

    return tuple(getattr(get_model(model), "directions", DIRECTIONS))


def parse_models(names: Sequence[str] | str | None) -> tuple[str, ...]:
    """``--models``: registered translator names (``all`` or None = every one), none twice."""
    from sarkit.models.base import Task
    from sarkit.models.registry import get_model

    if names is None or names == "all" or list(names) == ["all"]:
        return tuple(translator_names())
    if isinstance(names, str):
        names = names.split(",")
    out: list[str] = []
    for n in (s.strip() for s in names):
        if not n or n in out:
            continue
        if get_model(n).task is not Task.TRANSLATOR:  # unknown names: InputError listing the valid ones
            raise InputError(f"--models {n}: not a translator (segmenters are trained by the benchmark where "
                             f"needed); choose from {', '.join(translator_names())}")
        out.append(n)
    if not out:
        raise InputError(f"--models is empty; e.g. --models {','.join(translator_names()[:3])}")
    return tuple(out)


def split_model_options(pairs: Sequence[str], models: Sequence[str]) -> dict[str, dict[str, str]]:
    """``--model-opt``: ``KEY=VALUE`` for every model (and segmenter) that has KEY, ``MODEL:KEY=VALUE`` for
    one → per model name, its option strings (``InputError`` for a key no model has or a bad model name)."""
    from sarkit.models.registry import get_model
    from sarkit.training.options import check_model_option_names

    every = [*models, "segmenter"]
    fields = {m: {f.name for f in dataclasses.fields(get_model(m).Options)}
              if dataclasses.is_dataclass(get_model(m).Options) else set() for m in every}
    out: dict[str, dict[str, str]] = {m: {} for m in every}
    for pair in pairs:
        target, colon, rest = pair.partition(":")
        scoped = bool(colon) and "=" not in target
        text = rest if scoped else pair
        key, sep, value = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError(f"--model-opt expects KEY=VALUE or MODEL:KEY=VALUE, got {pair!r}")
        if scoped:
            name = target.strip()
            if name not in out:
                raise InputError(f"--model-opt {pair}: {name!r} is not benchmarked here ({', '.join(every)})")
            check_model_option_names(name, get_model(name).Options, {key: value})
            out[name][key] = value.strip()
            continue
        takers = [m for m in every if key in fields[m]]
        if not takers:
            raise InputError(f"--model-opt {pair}: none of {', '.join(every)} has an option {key!r}")
        for m in takers:
            out[m].setdefault(key, value.strip())
    return out


@dataclass
class BenchmarkOptions:
    """What to benchmark and with which budget (checked on construction)."""

    data: Path
    out: Path
    models: tuple[str, ...] | Sequence[str] | str | None = None
    steps: int = 1000
    segmenter_steps: int | None = None  # default: steps
    seed: int = 0
    batch_size: int = 1
    lr: float = 2e-4
    device: str = "auto"
    model_options: Sequence[str] = ()  # KEY=VALUE or MODEL:KEY=VALUE
    metrics: tuple[str, ...] | None = None  # default: psnr,ssim,mae (+pa,miou,sms with labels, + matching ones)
    eval_batch_size: int = 8
    val_every: int | None = None  # validation of the training runs (None: 4 times per run; 0: never)
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        self.models = parse_models(self.models)
        for name in ("steps", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"--{name.replace('_', '-')} must be an integer of at least 1, got {v!r}")
        if self.segmenter_steps is None:
            self.segmenter_steps = self.steps
        if self.val_every is None:
            self.val_every = max(self.steps // 4, 1)
        if self.segmenter_steps < 1:
            raise InputError(f"--segmenter-steps must be at least 1, got {self.segmenter_steps}")
        self.model_options = tuple(self.model_options)
        self.per_model = split_model_options(self.model_options, self.models)


@dataclass
class Entry:
    """One training run of the benchmark and, for translators, its evaluation."""

    model: str
    direction: str | None  # None for segmenters
    run: Path
    report: Path | None = None
    trained: str = ""  # "trained", "resumed", "kept" (already finished)
    evaluated: str = ""  # "evaluated", "kept"
    seconds_train: float = 0.0
    seconds_eval: float = 0.0

    @property
    def name(self) -> str:
        """``pix2pix-sar2opt``, ``segmenter-sar``."""
        return self.run.name


@dataclass
class BenchmarkResult:
    """What the benchmark did and the comparison it wrote."""

    out: Path
    entries: list[Entry] = field(default_factory=list)
    table: Any = None  # sarkit.eval.compare.CompareTable
    skipped: dict[str, str] = field(default_factory=dict)  # model-direction → why it has no report


def _default_metrics(labels: bool) -> tuple[str, ...]:
    """psnr, ssim, mae; pa, miou, sms with labels; the feature-matching metrics when sarkit has them."""
    from sarkit.eval.options import ALL_METRICS

    out = ["psnr", "ssim", "mae"] + (["pa", "miou", "sms"] if labels else [])
    out += [m for m in ("pmr", "ir", "ir_ed") if m in ALL_METRICS]
    return tuple(out)


def _check_data(opts: BenchmarkOptions) -> dict[str, Any]:
    """The tiling record; the tiles must have a train and a test split (``InputError`` otherwise)."""
    from sarkit.data.dataset import load_manifest, read_tiling

    if not opts.data.is_dir():
        raise InputError(f"tile directory not found: {opts.data} (make one with: sarkit tile)")
    tiling = read_tiling(opts.data)
    for split in ("train", "test"):
        if not load_manifest(opts.data, split):
            raise InputError(f"--data {opts.data} has no {split} tiles; the benchmark trains on train and evaluates "
                             f"on test: tile again with a split that has both (sarkit tile --split)")
    return tiling


def _check_out(opts: BenchmarkOptions) -> None:
    """OUT is new, empty, an earlier benchmark (resumed) or replaced with ``overwrite``; anything else is refused."""
    out = opts.out
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the benchmark")
    if not out.is_dir() or not any(out.iterdir()):
        return
    ours = (out / RECORD_NAME).is_file() or (out / "runs").is_dir()
    if opts.overwrite and ours:
        from sarkit.training.run import clear_run

        clear_run(out)
        return
    if not ours:
        from sarkit.errors import OutputExistsError

        raise OutputExistsError(f"--out {out} holds other files, not a sarkit benchmark; choose another --out")


def _train_one(opts: BenchmarkOptions, model: str, run: Path, steps: int, reporter: Reporter,
               direction: str | None = None, modality: str | None = None,
               extra: dict[str, str] | None = None) -> Entry:
    """Train (or resume, or keep) one run with the benchmark's budget and seed."""
    from sarkit.training import TrainOptions, run_finished, train
    from sarkit.training.run import state_path

    from sarkit.training.run import read_config

    entry = Entry(model, direction, run)
    if run_finished(run) and (read_config(run) or {}).get("total_steps") == steps:
        entry.trained = "kept"
        return entry
    resume = state_path(run).is_file()
    kw: dict[str, Any] = {"direction": direction} if direction else {"modality": modality}
    t = TrainOptions(model=model, data=opts.data, out=run, steps=steps, batch_size=opts.batch_size, lr=opts.lr,
                     device=opts.device, seed=opts.seed, resume=resume, val_every=opts.val_every,
                     save_every=max(steps // 4, 1), log_every=max(steps // 50, 1),
                     model_options={**opts.per_model.get(model, {}), **(extra or {})}, **kw)
    reporter.info(f"benchmark: {'resuming' if resume else 'training'} {run.name} ({steps} steps)")
    t0 = time.monotonic()
    train(t, reporter)
    entry.seconds_train = time.monotonic() - t0
    entry.trained = "resumed" if resume else "trained"
    return entry


def _report_is_current(report: Path, run: Path) -> bool:
    """The report exists and was made from RUN's current export (same SHA-256)."""
    from sarkit.models.checkpoint import file_sha256

    rec_path = report / "report.json"
    gen = run / "checkpoints" / "generator.safetensors"
    if not rec_path.is_file() or not gen.is_file():
        return False
    try:
        rec = json.loads(rec_path.read_text())
    except ValueError:
        return False
    return (rec.get("inputs") or {}).get("checkpoint_sha256") == file_sha256(gen)


def _evaluate(opts: BenchmarkOptions, entry: Entry, metrics: Sequence[str], segmenters: dict[str, Path],
              reporter: Reporter) -> None:
    """``sarkit eval --checkpoint RUN --data TILES --split test`` into OUT/reports/NAME, unless current."""
    from sarkit.devices import resolve_device
    from sarkit.eval.options import EvalInputs, EvalOptions
    from sarkit.eval.runner import run_eval_report

    report = opts.out / "reports" / entry.name
    entry.report = report
    if _report_is_current(report, entry.run):
        entry.evaluated = "kept"
        return
    seg = segmenters.get(OUTPUT_MODALITY[entry.direction or "sar2opt"])
    names = tuple(m for m in metrics if seg is not None or m not in ("pa", "miou", "sms"))
    eopts = EvalOptions(metrics=names, segmenter=seg, batch_size=opts.eval_batch_size,
                        device=str(resolve_device(opts.device)))
    reporter.info(f"benchmark: evaluating {entry.name} on the test split")
    t0 = time.monotonic()
    run_eval_report(EvalInputs(checkpoint=entry.run, data=opts.data, split="test"), eopts, report, overwrite=True,
                    reporter=reporter)
    entry.seconds_eval = time.monotonic() - t0
    entry.evaluated = "evaluated"


def _segmenter_extra(model: str, segmenters: dict[str, Path], opts: BenchmarkOptions) -> dict[str, str]:
    """The segmenter runs for a model whose options take them (unless given with --model-opt)."""
    from sarkit.models.registry import get_model

    cls = get_model(model).Options
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    out = {}
    for key, modality in SEGMENTER_OPTIONS.items():
        if key in names and key not in opts.per_model.get(model, {}):
            if modality not in segmenters:
                raise InputError(f"--models {model} needs a {modality} segmenter, and the benchmark trains one only "
                                 f"on tiles with labels: tile with --labels, or pass --model-opt "
                                 f"{model}:{key}=RUN")
            out[key] = str(segmenters[modality])
    return out


def _write_record(opts: BenchmarkOptions, res: BenchmarkResult, metrics: Sequence[str]) -> None:
    """OUT/benchmark.json (atomically): the options and what was done for every run."""
    from sarkit import __version__
    from sarkit.io import write_atomic_text

    rec = {"sarkit_version": __version__, "data": str(opts.data.resolve()), "models": list(opts.models),
           "steps": opts.steps, "segmenter_steps": opts.segmenter_steps, "seed": opts.seed,
           "batch_size": opts.batch_size, "lr": opts.lr, "model_options": list(opts.model_options),
           "metrics": list(metrics), "skipped": res.skipped,
           "runs": [{"name": e.name, "model": e.model, "direction": e.direction, "run": str(e.run),
                     "report": str(e.report) if e.report else None, "trained": e.trained,
                     "evaluated": e.evaluated or None, "seconds_train": round(e.seconds_train, 3),
                     "seconds_eval": round(e.seconds_eval, 3)} for e in res.entries],
           "comparison": str(opts.out / "comparison") if res.table is not None else None}
    write_atomic_text(opts.out / RECORD_NAME, json.dumps(rec, indent=2) + "\n")


def run_benchmark(opts: BenchmarkOptions, reporter: Reporter = NULL_REPORTER) -> BenchmarkResult:
    """Train, evaluate and compare every model of ``opts`` (see the module docstring)."""
    from sarkit.eval.compare import compare_reports
    from sarkit.io import output_lock

    tiling = _check_data(opts)
    labels = bool(tiling.get("classes"))
    metrics = tuple(opts.metrics) if opts.metrics else _default_metrics(labels)
    runs = opts.out / "runs"
    seg_runs = {m: runs / f"segmenter-{m}" for m in ("sar", "optical")} if labels else {}
    extras = {model: _segmenter_extra(model, seg_runs, opts) for model in opts.models}  # refused before any work
    with output_lock(opts.out):
        _check_out(opts)
        runs.mkdir(parents=True, exist_ok=True)
        res = BenchmarkResult(opts.out)
        segmenters: dict[str, Path] = {}
        for modality, run in seg_runs.items():
            e = _train_one(opts, "segmenter", run, int(opts.segmenter_steps), reporter, modality=modality)
            res.entries.append(e)
            segmenters[modality] = e.run
            _write_record(opts, res, metrics)
        for model in opts.models:
            for direction in DIRECTIONS:
                if direction not in model_directions(model):
                    res.skipped[f"{model}-{direction}"] = "the model does not translate in this direction"
                    continue
                e = _train_one(opts, model, runs / f"{model}-{direction}", opts.steps, reporter,
                               direction=direction, extra=extras[model])
                res.entries.append(e)
                _write_record(opts, res, metrics)
                _evaluate(opts, e, metrics, segmenters, reporter)
                _write_record(opts, res, metrics)
        reports = [f"{e.model}={e.report}" for e in res.entries if e.report is not None]
        res.table = compare_reports(reports, opts.out / "comparison", overwrite=True)
        _write_record(opts, res, metrics)
    reporter.info(f"benchmark of {len(opts.models)} models → {opts.out / 'comparison'}")
    return res
