"""The run directory: its config.json record, what may be done with an existing RUN, and whether a run finished.

``RUN/config.json`` records every resolved option; an existing RUN is resumed (``--resume``, only the options in
``RESUMABLE_CHANGES`` may differ), replaced (``--overwrite``, only if it is a sarkit run) or refused. A sarkit run
that holds no checkpoint yet (killed before its first save) is started again without either. A run that fails
before its first checkpoint leaves nothing behind (``discard_unsaved_run``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from sarkit import __version__
from sarkit.errors import CheckpointError, InputError, OutputExistsError, SarkitError
from sarkit.io import remove_stale_temps, temp_sibling, write_atomic_text
from sarkit.models.base import options_dict
from sarkit.models.checkpoint import read_export_record
from sarkit.training.data import TrainData
from sarkit.training.options import TrainOptions, option_name

STATE_NAME = "state-latest.pt"
#: Options that may change when resuming (they do not alter what the networks learn from which data).
RESUMABLE_CHANGES = frozenset({"steps", "epochs", "val_every", "save_every", "log_every", "workers", "device",
                               "amp", "val_tiles", "data", "data_sets", "channels_last", "stop_at"})
#: config.json keys that describe the machine or the length of a run, not what it learns.
_NOT_COMPARED = frozenset({"sarkit_version", "device", "world_size", "total_steps", "steps_per_epoch", "helpers"})


def state_path(run: Path) -> Path:
    """RUN/checkpoints/state-latest.pt."""
    return run / "checkpoints" / STATE_NAME


def has_checkpoint(run: Path) -> bool:
    """RUN holds a training state or an exported network (something a failed or restarted run must not lose)."""
    ckpt = run / "checkpoints"
    return state_path(run).is_file() or (ckpt.is_dir() and any(ckpt.glob("*.safetensors")))


@dataclass(frozen=True)
class RunPlan:
    """What to do with RUN: resume from ``state``, or start at step 0 (``replace``: clear RUN first); ``note``
    tells the user why an existing RUN is started again."""

    state: Path | None = None
    replace: bool = False
    note: str | None = None


def train_section(opts: TrainOptions) -> dict[str, Any]:
    """TrainOptions as JSON (enums by value, paths absolute; out/resume/overwrite/model_options left out)."""
    d = {k: v.value if isinstance(v, Enum) else v for k, v in asdict(opts).items()}
    for k in ("out", "resume", "overwrite", "model_options", "model"):
        d.pop(k)
    d["data"] = str(Path(opts.data).resolve())
    d.pop("more_data", None)
    if opts.more_data:  # several --data (a run of one set records only "data", as before)
        d["data_sets"] = [str(Path(p).resolve()) for p in opts.data_dirs]  # every --data, in order
        d["data_count"] = len(opts.data_dirs)  # not resumable: the folders may move, not change in number
    d["sar_bands"] = list(opts.sar_bands) if opts.sar_bands else None
    d["optical_bands"] = list(opts.optical_bands)
    return d


def build_config(opts: TrainOptions, model_opts: Any, data: TrainData, total: int, spe: int, world: int,
                 device: torch.device, helpers: dict[str, Any]) -> dict[str, Any]:
    """The run's config.json record."""
    io = data.io
    return {
        "sarkit_version": __version__,
        "model": opts.model,
        "model_options": options_dict(model_opts),
        "train": train_section(opts),
        "direction": io.direction,
        "tile_size": io.tile_size,
        "in_channels": io.in_channels,
        "out_channels": io.out_channels,
        "normalization": {"input": io.in_norm, "output": io.out_norm or None},
        "data_normalization": data.norms,
        "classes": list(io.class_names) if io.class_names else None,
        "total_steps": total,
        "steps_per_epoch": spe,
        "world_size": world,
        "device": str(device),
        "helpers": helpers,
    }


def config_diff(old: dict[str, Any], new: dict[str, Any], ignore: frozenset[str] = frozenset()) -> list[str]:
    """Keys whose values differ (train options by name, other top-level keys by name)."""
    diffs = []
    for k in sorted(set(old) | set(new)):
        if k in _NOT_COMPARED:
            continue
        if k == "train":
            a, b = old.get(k) or {}, new.get(k) or {}
            diffs += [f for f in sorted(set(a) | set(b)) if f not in ignore and a.get(f) != b.get(f)]
        elif old.get(k) != new.get(k):
            diffs.append(k)
    return diffs


def read_config(run: Path) -> dict[str, Any] | None:
    """RUN/config.json; None when absent, {} when unreadable."""
    p = run / "config.json"
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def run_finished(run: str | os.PathLike) -> bool:
    """True when RUN's exported networks are at the run's last step (config.json ``total_steps``)."""
    run = Path(run)
    config = read_config(run)
    exports = sorted((run / "checkpoints").glob("*.safetensors")) if config else []
    if not config or not exports:
        return False
    try:
        steps = [int(read_export_record(p)["meta"]["step"]) for p in exports]
    except (SarkitError, KeyError, TypeError, ValueError):
        return False
    return min(steps) >= int(config.get("total_steps", -1)) > 0


def _is_run(config: dict[str, Any] | None) -> bool:
    """A config.json written by sarkit train (not some other tool's)."""
    return isinstance(config, dict) and "sarkit_version" in config and "model" in config


def check_run_dir(opts: TrainOptions, config: dict[str, Any]) -> RunPlan:
    """Decide what to do with RUN (read only; the caller holds its lock, so no live run is writing it)."""
    run = Path(opts.out)
    if run.exists() and not run.is_dir():
        raise InputError(f"--out {run} is a file; give a directory for the run")
    old = read_config(run) if run.is_dir() else None
    state = state_path(run)
    unsaved = _is_run(old) and not has_checkpoint(run)
    restart = RunPlan(replace=True, note=f"{run} holds no checkpoint yet (the run stopped before its first save): "
                                         f"starting it again from step 0")
    if opts.resume:
        if opts.overwrite:
            raise InputError("--resume and --overwrite exclude each other: resume a run or start it again")
        if state.exists():
            return RunPlan(state=state)
        if unsaved:
            return restart
        raise CheckpointError(f"nothing to resume: {state} does not exist (start without --resume)")
    if opts.overwrite and run.is_dir() and any(run.iterdir()) and old is None \
            and not (run / "checkpoints").is_dir():
        raise InputError(f"{run} is not a sarkit run (no config.json); --overwrite only replaces runs, choose "
                         f"another --out")
    if run.is_dir() and any(run.iterdir()) and not opts.overwrite:
        if unsaved:
            return restart
        if old is not None and old and not config_diff(old, config):
            raise OutputExistsError(f"{run} already holds this run; pass --resume to continue it or --overwrite "
                                    f"to start again")
        what = "a run with a different config" if old else "other files"
        raise OutputExistsError(f"{run} holds {what}; choose another --out or pass --overwrite to replace it")
    return RunPlan(replace=opts.overwrite)


def check_resume_config(run: Path, config: dict[str, Any]) -> None:
    """On resume, only the options in RESUMABLE_CHANGES may differ from the run's config.json."""
    old = read_config(run)
    if old:
        diff = config_diff(old, config, RESUMABLE_CHANGES)
        if diff:
            raise CheckpointError(f"{run} was trained with other settings ({', '.join(map(option_name, diff))}); "
                                  f"resume with the same options or start a new run")


def clear_run(run: Path) -> None:
    """Remove an existing run directory (after every check passed): renamed aside first, then deleted."""
    if run.exists():
        aside = temp_sibling(run, ".old")
        os.replace(run, aside)
        shutil.rmtree(aside, ignore_errors=True)


def discard_unsaved_run(run: Path, created: bool) -> None:
    """After a failure: a RUN without a checkpoint is removed (``created``: this run made it) or emptied."""
    if not run.is_dir() or has_checkpoint(run):
        return
    if created:
        shutil.rmtree(run, ignore_errors=True)
        return
    for p in run.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def writable_error(run: Path, exc: OSError) -> InputError:
    """The ``InputError`` for a RUN that cannot be created or written (permission denied, read-only disk)."""
    where = exc.filename or run
    return InputError(f"cannot write the run directory {run}: {where}: {exc.strerror or exc} (choose another --out "
                      f"in a folder you can write)")


def prepare_run_dir(run: Path, config: dict[str, Any], replace: bool) -> None:
    """Clear RUN when ``replace``, drop what a killed run left half-written, create its folders, write config.json."""
    if replace:
        clear_run(run)
    for folder in (run, run / "checkpoints", run / "samples"):
        remove_stale_temps(folder, any_name=True)
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "samples").mkdir(exist_ok=True)
    write_atomic_text(run / "config.json", json.dumps(config, indent=2) + "\n")


class MetricsLog:
    """Appends JSON lines to RUN/metrics.jsonl (rank 0 only), each stamped with its wall-clock ``time`` (Unix
    seconds), and hands every record to ``events`` (the run's TensorBoard writer) when given."""

    def __init__(self, path: Path, enabled: bool, events: Any = None) -> None:
        self.path = path
        self.enabled = enabled
        self.events = events

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (written after the checkpoint a resume starts from)."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    keep.append(line)
            except (json.JSONDecodeError, ValueError, TypeError, AttributeError):
                continue
        write_atomic_text(self.path, "".join(k + "\n" for k in keep))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as a JSON line (with ``time`` unless it has one) and pass it to ``events``."""
        if not self.enabled:
            return
        if "time" not in record:
            record = {**record, "time": round(time.time(), 3)}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.events is not None:
            self.events.record(record)
