"""``train()``: set a run up (devices, data, model, run directory, resume) and drive the step loop.

The learning rate is constant for the first half of the steps, then decays linearly to 0 (per step) as in
pix2pix/CycleGAN. ``stop_at`` ends a run early at that global step (after saving), to be continued later with
``resume``. Everything one run holds while it trains is one ``TrainingRun``.
"""

from __future__ import annotations

import contextlib
import errno
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sarkit.devices import configure_backends, make_scaler, resolve_amp, resolve_device
from sarkit.errors import InputError, WorkError
from sarkit.io import output_lock
from sarkit.models.base import ModelIO, StepTools, TrainableModel, parse_options
from sarkit.models.registry import get_model
from sarkit.reporting import NULL_REPORTER
from sarkit.training import state as st
from sarkit.training.data import DataOrder, TrainData, batches, make_loader, open_data, read_item, to_device
from sarkit.training.distributed import DistInfo, all_ok, barrier, broadcast_module, finish_distributed, \
    init_distributed
from sarkit.training.events import TrainEvents
from sarkit.training.options import TrainOptions, TrainResult, check_model_option_names
from sarkit.training.run import MetricsLog, RunPlan, build_config, check_resume_config, check_run_dir, \
    discard_unsaved_run, prepare_run_dir, writable_error
from sarkit.training.validation import run_validation

#: errno values of a folder that cannot be written: an InputError (choose another --out), not a failure while working.
_NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


@dataclass
class TrainingRun:
    """One run while it trains: options, model, data and its order, device and step tools, run dir, log, ranks."""

    opts: TrainOptions
    model: TrainableModel
    data: TrainData
    order: DataOrder
    total: int
    device: torch.device
    tools: StepTools
    channels_last: bool
    dir: Path
    dist: DistInfo
    reporter: Any = NULL_REPORTER
    log: MetricsLog | None = None
    events: TrainEvents | None = None
    val_items: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"metric", "value", "step"} of the networks in RUN/checkpoints/best/

    @property
    def spe(self) -> int:
        """Steps per epoch."""
        return self.order.steps_per_epoch

    @property
    def scaler(self) -> Any:
        """The gradient scaler (enabled for fp16 only)."""
        return self.tools.scaler

    def validates_at(self, step: int) -> bool:
        """Validation is due after ``step``: every ``val_every`` steps and at the end, when there are val tiles."""
        every = self.opts.val_every
        return self.data.val is not None and bool(every) and (step % every == 0 or step == self.total)

    def saves_at(self, step: int, stopping: bool) -> bool:
        """A checkpoint is due after ``step``: every ``save_every`` steps, at the end and at ``stop_at``."""
        every = self.opts.save_every
        return bool(every and step % every == 0) or step == self.total or stopping


def lr_factor(step: int, total: int) -> float:
    """1 for the first half of the steps, then linear decay: (total − step)/(total − ⌊total/2⌋)."""
    start = total // 2
    if step < start or total <= start:
        return 1.0
    return max(0.0, (total - step) / (total - start))


def train(opts: TrainOptions, reporter: Any = NULL_REPORTER) -> TrainResult:
    """Train ``opts.model`` on the tiles in ``opts.data`` into ``opts.out`` (see docs/train.md)."""
    d = init_distributed(opts.device)
    try:
        return _train(opts, reporter if d.main else NULL_REPORTER, d)
    finally:
        finish_distributed(d)


def _lock_run(stack: contextlib.ExitStack, run: Path) -> None:
    """Hold RUN's lock until ``stack`` closes; a RUN whose folder cannot be written is an ``InputError``."""
    try:
        stack.enter_context(output_lock(run))
    except OSError as exc:
        if exc.errno in _NOT_WRITABLE:
            raise writable_error(run, exc) from None
        raise


def _build_model(cls: type[TrainableModel], io: ModelIO, model_opts: Any, opts: TrainOptions) -> TrainableModel:
    """Instantiate the model; architecture limits (tile size, channels) become InputError."""
    try:
        return cls(io, model_opts)
    except ValueError as exc:
        raise InputError(f"--model {opts.model} cannot train on these tiles: {exc}") from None


def _train(opts: TrainOptions, reporter: Any, d: DistInfo) -> TrainResult:
    """Set the run up, check RUN and the state to resume, prepare RUN (rank 0) and run the loop."""
    t0 = time.monotonic()
    device = resolve_device(opts.device, d.local_rank)
    amp_dtype = resolve_amp(opts.amp.value, device)
    backend = configure_backends(device, d.world, deterministic=device.type == "cpu")
    channels_last = backend.channels_last if opts.channels_last is None else bool(opts.channels_last)
    cls = get_model(opts.model)
    check_model_option_names(opts.model, cls.Options, opts.model_options)
    model_opts = parse_options(cls.Options, dict(opts.model_options))
    data = open_data(opts, cls)
    order = DataOrder(len(data.train), opts.batch_size, d.world, d.rank, opts.seed)
    total = opts.total_steps(order.steps_per_epoch)

    st.seed_all(opts.seed)  # same initial weights on every rank
    model = _build_model(cls, data.io, model_opts, opts)
    config = build_config(opts, model_opts, data, total, order.steps_per_epoch, d.world, device,
                          model.helper_records)
    run_dir = Path(opts.out)
    with contextlib.ExitStack() as stack:
        if d.main:  # rank 0 locks RUN before looking at it, so a second run on it fails at once whatever RUN holds
            _lock_run(stack, run_dir)
        plan = check_run_dir(opts, config)
        state = None
        if plan.state is not None:
            state = st.load_resume_state(plan.state, data, opts.model)
            check_resume_config(run_dir, config)

        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        model.train()
        model.configure_optimizers(opts.lr, (opts.beta1, opts.beta2))
        tools = StepTools(device=device, amp_dtype=amp_dtype, scaler=make_scaler(amp_dtype, device),
                          world_size=d.world)
        r = TrainingRun(opts, model, data, order, total, device, tools, channels_last, run_dir, d, reporter)
        broadcast_module(d, model.nets)
        st.seed_all(st.rank_seed(opts.seed, d.rank))
        start = 0
        if state is not None:
            start = st.restore(state, r, plan.state)
            del state
        if start >= total:
            raise InputError(f"{run_dir} already reached step {start} of {total}; raise --steps/--epochs to train "
                             f"longer")
        if data.val is not None and d.main and opts.val_every > 0:
            r.val_items = [read_item(data.val, i) for i in range(min(len(data.val), max(opts.val_tiles, 1)))]
        created = not run_dir.exists()
        try:
            _prepare(r, config, plan, start)
            result = _loop(r, start)
        except BaseException:
            _close_events(r)
            if d.main:  # a run that failed before its first checkpoint leaves nothing behind
                discard_unsaved_run(run_dir, created)
            raise
        _close_events(r)
        result.seconds = time.monotonic() - t0
        if d.main:
            _write_report(r)
    return result


def _close_events(r: TrainingRun) -> None:
    """Flush and close the run's TensorBoard event file."""
    if r.events is not None:
        r.events.close()


def _write_report(r: TrainingRun) -> None:
    """RUN/report.html at the end of training; a failure is a warning (the run itself is saved)."""
    from sarkit.training.report import write_run_report

    try:
        write_run_report(r.dir)
    except Exception as exc:  # the checkpoints are written: never lose a finished run over its report
        r.reporter.warn(f"could not write {r.dir / 'report.html'} ({type(exc).__name__}: {exc}); make it with: "
                        f"sarkit report {r.dir}")


def _prepare(r: TrainingRun, config: dict[str, Any], plan: RunPlan, start: int) -> None:
    """Prepare RUN (rank 0: clear it when the plan says so, write config.json) and open its metrics log."""
    failure: BaseException | None = None
    if r.dist.main:
        try:
            prepare_run_dir(r.dir, config, replace=plan.replace)
        except OSError as exc:  # re-raised below once every rank knows
            failure = writable_error(r.dir, exc) if exc.errno in _NOT_WRITABLE else exc
        except Exception as exc:
            failure = exc
    if not all_ok(r.dist, failure is None):
        if failure is not None:
            raise failure
        raise WorkError("rank 0 could not prepare the run directory; see its error")
    if plan.note:
        r.reporter.info(plan.note)
    r.events = TrainEvents(r.dir, r.dist.main, purge_step=start + 1 if start else None, reporter=r.reporter)
    r.events.config(config, start)
    r.log = MetricsLog(r.dir / "metrics.jsonl", r.dist.main, r.events)
    r.log.truncate_after(start)
    if start:
        r.reporter.info(f"resuming {r.opts.model} at step {start} of {r.total}")


def _set_lr(model: TrainableModel, lr: float) -> None:
    """Set the learning rate of every optimizer's parameter groups: ``lr`` × the group's ``lr_scale`` (1 unless the
    model set one, e.g. a discriminator that learns slower than its generator)."""
    for opt in model.optimizers.values():
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)


def _loop(r: TrainingRun, start: int) -> TrainResult:
    """The step loop: LR schedule, train_step, logging, validation, checkpoints."""
    opts, model, d, log, total, spe = r.opts, r.model, r.dist, r.log, r.total, r.spe
    assert log is not None
    scaler = r.scaler
    sums: dict[str, float] = {}
    nsum = 0
    last: dict[str, float] = {}
    val: dict[str, float] | None = None
    exported: list[Path] = []
    step = start
    saved_at = start
    in_step = False
    loader = make_loader(r.data.train, r.order, start, total, opts.workers, r.device)
    with r.reporter.task(f"Training {opts.model}", total=total) as task:
        if start:
            task.advance(start)
        try:
            for raw in batches(loader):
                in_step = True
                own = model.lr_factor(step, total)
                factor = lr_factor(step, total) if own is None else own
                _set_lr(model, opts.lr * factor)
                model.set_progress(step, total)
                losses = model.train_step(to_device(raw, r.device, r.channels_last), r.tools)
                if scaler.is_enabled():
                    scaler.update()
                broadcast_module(d, model.nets, buffers_only=True)
                step += 1
                in_step = False
                if not all_ok(d, all(math.isfinite(float(v)) for v in losses.values())):
                    raise WorkError(f"a loss became NaN/inf at step {step}; lower --lr or use --amp off, then "
                                    f"continue from the last checkpoint with --resume")
                last = {k: float(v) for k, v in losses.items()}
                for k, v in last.items():
                    sums[k] = sums.get(k, 0.0) + v
                nsum += 1
                if opts.log_every and (step % opts.log_every == 0 or step == total):
                    log.write({"kind": "train", "step": step, "epoch": step / spe, "lr": opts.lr * factor,
                               **{k: v / nsum for k, v in sums.items()}})
                    sums, nsum = {}, 0
                if r.validates_at(step):
                    if r.val_items:
                        val = run_validation(r, step)
                        st.keep_if_best(r, step, val)
                    barrier(d)
                stopping = opts.stop_at is not None and step >= opts.stop_at
                if r.saves_at(step, stopping):
                    exported = st.save(r, step) or exported
                    saved_at = step
                    if r.events is not None:
                        r.events.flush()
                    barrier(d)
                task.advance(1, **{k: round(v, 4) for k, v in list(last.items())[:4]})
                if stopping:
                    break
        except KeyboardInterrupt:
            if d.world == 1 and step > saved_at and not in_step:
                st.save(r, step)
                saved_at = step
            r.reporter.warn(f"interrupted: the last state saved is at step {saved_at}; continue with --resume")
            raise
    if d.main:
        summary = f"trained {opts.model} to step {step} → {r.dir}"
        if val:
            summary += " (" + ", ".join(f"{k}={v:.4g}" for k, v in val.items()) + ")"
        r.reporter.info(summary)
    return TrainResult(r.dir, opts.model, step, start, step / spe, 0.0, last, val, exported, d.world, model)
