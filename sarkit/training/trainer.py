"""``sarkit train``: drive any registered model over a tile directory, with resumable checkpoints.

The trainer owns data order, devices, mixed precision, distributed gradient averaging (``torchrun``),
checkpoints, resume, metrics and validation; the model (``sarkit.models``) owns its networks and its step.

Run directory ``RUN/``:
    config.json               every resolved option, model options, normalisation ranges (chosen bands only)
    metrics.jsonl             {"kind": "train", "step", losses averaged since the last line, "lr"} every
                              ``log_every`` steps, {"kind": "val", "step", "psnr", "ssim"} (or a segmenter's
                              metrics) at each validation; PSNR/SSIM on images mapped to [0, 1], valid pixels
    samples/step-XXXXXX.png   validation tiles: input | output | target, one row per tile
    checkpoints/state-latest.pt   full training state (only the latest is kept: it is replaced atomically)
    checkpoints/generator.safetensors (or segmenter.safetensors)  exported networks for inference

Data order: epoch e visits the tiles in a permutation seeded by (seed, e), padded by wrapping to a whole number
of global batches; step s of the epoch gives rank r the slice ``[(s·W + r)·B, (s·W + r + 1)·B)``. The order is
a pure function of (seed, epoch, step), so resume only needs the step counter; RNG states (python, numpy,
torch, CUDA) of every rank are saved too, so dropout and image-pool draws continue exactly. The learning rate is
constant for the first half of the steps, then decays linearly to 0 (per step) as in pix2pix/CycleGAN.
``stop_at`` ends a run early at that global step (after saving), to be continued later with ``resume``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sarkit import __version__
from sarkit.models.checkpoint import load_state, read_export_record, save_network, save_state
from sarkit.models.clip import rgb_view
from sarkit.devices import configure_backends, make_scaler, resolve_amp, resolve_device
from sarkit.errors import CheckpointError, InputError, OutputExistsError, SarkitError, WorkError
from sarkit.io import output_lock, remove_stale_temps, temp_sibling, write_atomic_text
from sarkit.models.base import ModelIO, StepTools, options_dict, parse_options
from sarkit.models.registry import get_model
from sarkit.raster.norm import RGB_BANDS
from sarkit.reporting import NULL_REPORTER

#: Epochs when neither ``steps`` nor ``epochs`` is given (pix2pix/CycleGAN: 100 constant + 100 decaying).
DEFAULT_EPOCHS = 200
STATE_NAME = "state-latest.pt"
STATE_FORMAT = 1
DIRECTIONS = ("sar2opt", "opt2sar")
#: Options that may change when resuming (they do not alter what the networks learn from which data).
RESUMABLE_CHANGES = frozenset({"steps", "epochs", "val_every", "save_every", "log_every", "workers", "device",
                               "amp", "val_tiles", "data", "channels_last", "stop_at"})


@dataclass
class TrainOptions:
    """Everything ``sarkit train`` needs; ``model_options`` are strings or values for the model's Options."""

    model: str
    data: Path
    out: Path
    direction: str = "sar2opt"
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    device: str = "auto"
    amp: str = "off"
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    workers: int = 0
    val_every: int = 1000
    val_tiles: int = 16
    save_every: int = 1000
    log_every: int = 10
    sar_bands: tuple[str, ...] | None = None
    optical_bands: tuple[str, ...] = RGB_BANDS
    modality: str | None = None
    augment: bool = False
    channels_last: bool | None = None
    stop_at: int | None = None
    model_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What a training run did."""

    run: Path
    model: str
    steps: int
    start_step: int
    epochs: float
    seconds: float
    losses: dict[str, float]
    validation: dict[str, float] | None
    exported: list[Path]
    world_size: int
    trained_model: Any = field(default=None, repr=False)


def model_option_values(pairs: Sequence[str], named: dict[str, Any] | None = None) -> dict[str, Any]:
    """``["key=value", ...]`` plus the named options that were given (not None) → model option values."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--model-opt expects key=value, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    for key, value in (named or {}).items():
        if value is not None:
            out[key] = str(value) if isinstance(value, Path) else value
    return out


# ------------------------------------------------------------------------------------------ distributed
@dataclass(frozen=True)
class DistInfo:
    """Process rank, world size and local rank (1 process: 0, 1, 0)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_spec: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    use_cuda = device_spec != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, True)


def _barrier(d: DistInfo) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _gather(d: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list of one element without distribution)."""
    if d.world <= 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def _broadcast_module(d: DistInfo, module: torch.nn.Module, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (and buffers) to every rank."""
    if d.world <= 1:
        return
    import torch.distributed as dist

    tensors = list(module.buffers()) if buffers_only else list(module.parameters()) + list(module.buffers())
    for t in tensors:
        dist.broadcast(t.data, src=0)


def _all_ok(d: DistInfo, ok: bool) -> bool:
    """True when ``ok`` holds on every rank (used so that an error on one rank stops all of them)."""
    if d.world <= 1:
        return ok
    import torch.distributed as dist

    t = torch.tensor([0 if ok else 1], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item()) == 0


# ------------------------------------------------------------------------------------------ data order
@dataclass(frozen=True)
class DataOrder:
    """Resumable, rank-sharded sample order: a function of (seed, epoch, step) only."""

    n: int
    batch: int
    world: int
    rank: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        """⌈n / (batch · world)⌉ global batches per epoch."""
        return max(1, math.ceil(self.n / (self.batch * self.world)))

    def permutation(self, epoch: int) -> list[int]:
        """Epoch ``epoch``'s permutation of 0…n−1, wrapped to steps_per_epoch · batch · world entries."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        need = self.steps_per_epoch * self.batch * self.world
        return [perm[i % self.n] for i in range(need)]

    def batches(self, start: int, stop: int) -> Iterator[list[tuple[int, int]]]:
        """This rank's ``(epoch, index)`` lists for global steps ``start`` … ``stop − 1``."""
        spe = self.steps_per_epoch
        cache: tuple[int, list[int]] | None = None
        for step in range(start, stop):
            epoch, pos = divmod(step, spe)
            if cache is None or cache[0] != epoch:
                cache = (epoch, self.permutation(epoch))
            lo = (pos * self.world + self.rank) * self.batch
            yield [(epoch, i) for i in cache[1][lo:lo + self.batch]]


class _EpochIndexed(torch.utils.data.Dataset):
    """Dataset view indexed by ``(epoch, i)``: calls ``set_epoch`` (unpaired partner draw) before reading."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, i = key
        if epoch != self.epoch and hasattr(self.ds, "set_epoch"):
            self.ds.set_epoch(epoch)
            self.epoch = epoch
        return self.ds[i]


class _Batches(torch.utils.data.Sampler):
    """Batch sampler over ``DataOrder.batches``."""

    def __init__(self, order: DataOrder, start: int, stop: int) -> None:
        self.order, self.start, self.stop = order, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return self.order.batches(self.start, self.stop)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _loader(ds: Any, order: DataOrder, start: int, stop: int, workers: int, device: torch.device) -> Any:
    """DataLoader yielding this rank's batches for steps start…stop−1 (its own RNG: the global one is untouched)."""
    return torch.utils.data.DataLoader(
        _EpochIndexed(ds), batch_sampler=_Batches(order, start, stop), num_workers=workers,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(order.seed),
        persistent_workers=False)


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    """Tensors of a collated batch on ``device`` (4-D float images in channels-last layout when asked)."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


# ------------------------------------------------------------------------------------------ data sets
@dataclass
class _Data:
    train: Any
    val: Any | None
    io: ModelIO
    segmenter: bool
    norms: dict[str, Any]


def _is_segmenter(cls: type) -> bool:
    return getattr(cls, "name", "") == "segmenter" or getattr(cls, "modality_model", False)


def _open_data(opts: TrainOptions, cls: type) -> _Data:
    """Training (paired or unpaired) and validation data sets, and the ModelIO they imply."""
    from sarkit.data.dataset import TileDataset, load_manifest, read_tiling

    root = Path(opts.data)
    if not root.is_dir():
        raise InputError(f"tile directory not found: {root} (make one with: sarkit tile)")
    read_tiling(root)
    segmenter = _is_segmenter(cls)
    labels = bool(getattr(cls, "needs_labels", False))
    if segmenter and opts.modality not in ("sar", "optical"):
        raise InputError(f"--model {opts.model} trains on one modality: pass --modality sar or optical")
    if not segmenter and opts.modality is not None:
        raise InputError(f"--modality is for segmenters; --model {opts.model} translates (use --direction)")
    if not segmenter and opts.direction not in DIRECTIONS:
        raise InputError(f"--direction must be sar2opt or opt2sar, got {opts.direction!r}")
    rows = load_manifest(root)
    if not rows:
        raise InputError(f"{root}/manifest.csv lists no tiles; re-run sarkit tile")
    n_train = sum(1 for r in rows if r.get("split") == "train")
    if n_train == 0:
        raise InputError(f"{root} has no tiles in the train split; re-run sarkit tile with a train fraction > 0")
    optical_bands = None if segmenter and opts.modality == "sar" else tuple(opts.optical_bands)
    common = dict(sar_bands=list(opts.sar_bands) if opts.sar_bands else None, optical_bands=optical_bands,
                  labels=labels)
    mode = "paired" if getattr(cls, "paired", True) else "unpaired"
    train = TileDataset(root, split="train", mode=mode, augment=opts.augment, seed=opts.seed, **common)
    if len(train) == 0:
        raise InputError(f"{root}: the train split yields no usable {mode} tiles")
    val = None
    if sum(1 for r in rows if r.get("split") == "val") > 0:
        val = TileDataset(root, split="val", mode="paired", augment=False, seed=opts.seed, **common)
        if len(val) == 0:
            val = None
    sar = train.sar_norm.to_dict()
    opt = train.optical_norm.to_dict() if train.optical_norm is not None else None
    if opt is None and (not segmenter or opts.modality == "optical"):
        raise InputError(f"{root} has no optical tiles; --model {opts.model} needs them (tile with optical input)")
    norms = {"sar": sar, "optical": opt}
    if segmenter:
        norm = sar if opts.modality == "sar" else opt
        k = train.num_classes
        io = ModelIO(len(norm["bands"]), int(k or 0), opts.modality, train.tile_size, norm, {}, k,
                     tuple(train.class_names) if train.class_names else None)
    else:
        src, dst = (sar, opt) if opts.direction == "sar2opt" else (opt, sar)
        io = ModelIO(len(src["bands"]), len(dst["bands"]), opts.direction, train.tile_size, src, dst,
                     train.num_classes if labels else None,
                     tuple(train.class_names) if labels and train.class_names else None)
    return _Data(train, val, io, segmenter, norms)


# ------------------------------------------------------------------------------------------ config / run dir
def _train_section(opts: TrainOptions) -> dict[str, Any]:
    """TrainOptions as JSON (paths absolute; out/resume/overwrite/model_options left out)."""
    d = asdict(opts)
    for k in ("out", "resume", "overwrite", "model_options", "model"):
        d.pop(k)
    d["data"] = str(Path(opts.data).resolve())
    d["sar_bands"] = list(opts.sar_bands) if opts.sar_bands else None
    d["optical_bands"] = list(opts.optical_bands)
    return d


def build_config(opts: TrainOptions, model_opts: Any, data: _Data, total: int, spe: int, world: int,
                 device: torch.device, helpers: dict[str, Any]) -> dict[str, Any]:
    """The run's config.json record."""
    io = data.io
    return {
        "sarkit_version": __version__,
        "model": opts.model,
        "model_options": options_dict(model_opts),
        "train": _train_section(opts),
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


def _config_diff(old: dict[str, Any], new: dict[str, Any], ignore: frozenset[str] = frozenset()) -> list[str]:
    """Keys whose values differ (train options by name, other top-level keys by name)."""
    skip = {"sarkit_version", "device", "world_size", "total_steps", "steps_per_epoch", "helpers"}
    diffs = []
    for k in sorted(set(old) | set(new)):
        if k in skip:
            continue
        if k == "train":
            a, b = old.get(k) or {}, new.get(k) or {}
            diffs += [f for f in sorted(set(a) | set(b)) if f not in ignore and a.get(f) != b.get(f)]
        elif old.get(k) != new.get(k):
            diffs.append(k)
    return diffs


def _read_config(run: Path) -> dict[str, Any] | None:
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
    config = _read_config(run)
    exports = sorted((run / "checkpoints").glob("*.safetensors")) if config else []
    if not config or not exports:
        return False
    try:
        steps = [int(read_export_record(p)["meta"]["step"]) for p in exports]
    except (SarkitError, KeyError, TypeError, ValueError):
        return False
    return min(steps) >= int(config.get("total_steps", -1)) > 0


def _check_run_dir(opts: TrainOptions, config: dict[str, Any]) -> Path | None:
    """Decide what to do with RUN (read only): the state to resume, None to start fresh, or an error."""
    run = Path(opts.out)
    if run.exists() and not run.is_dir():
        raise InputError(f"--out {run} is a file; give a directory for the run")
    old = _read_config(run) if run.is_dir() else None
    state = run / "checkpoints" / STATE_NAME
    if opts.resume:
        if opts.overwrite:
            raise InputError("--resume and --overwrite exclude each other: resume a run or start it again")
        if not state.exists():
            raise CheckpointError(f"nothing to resume: {state} does not exist (start without --resume)")
        return state
    if opts.overwrite and run.is_dir() and any(run.iterdir()) and old is None \
            and not (run / "checkpoints").is_dir():
        raise InputError(f"{run} is not a sarkit run (no config.json); --overwrite only replaces runs, choose "
                         f"another --out")
    if run.is_dir() and any(run.iterdir()) and not opts.overwrite:
        if old is not None and old and not _config_diff(old, config):
            raise OutputExistsError(f"{run} already holds this run; pass --resume to continue it or --overwrite "
                                    f"to start again")
        what = "a run with a different config" if old else "other files"
        raise OutputExistsError(f"{run} holds {what}; choose another --out or pass --overwrite to replace it")
    return None


def _check_resume_config(run: Path, config: dict[str, Any]) -> None:
    """On resume, only the options in RESUMABLE_CHANGES may differ from the run's config.json."""
    old = _read_config(run)
    if old:
        diff = _config_diff(old, config, RESUMABLE_CHANGES)
        if diff:
            raise CheckpointError(f"{run} was trained with other settings ({', '.join(diff)}); resume with the "
                                  f"same options or start a new run")


def _clear_run(run: Path) -> None:
    """Remove an existing run directory (after every check passed): renamed aside first, then deleted."""
    if run.exists():
        aside = temp_sibling(run, ".old")
        os.replace(run, aside)
        shutil.rmtree(aside, ignore_errors=True)


# ------------------------------------------------------------------------------------------ state
def _rng_state(device: torch.device) -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain values (weights_only-loadable)."""
    py = random.getstate()
    npst = np.random.get_state()
    out = {"python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
           "numpy": {"state": torch.from_numpy(npst[1].astype(np.int64)), "pos": int(npst[2]),
                     "has_gauss": int(npst[3]), "gauss": float(npst[4])},
           "torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_state(st: dict[str, Any], device: torch.device) -> None:
    """Restore ``_rng_state``."""
    py = st["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"]), py["gauss"]))
    n = st["numpy"]
    np.random.set_state(("MT19937", n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(st["torch"].cpu())
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"].cpu(), device)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _identity(data: _Data, opts: TrainOptions) -> dict[str, Any]:
    """What a checkpoint must share with the data to be resumed: model, direction, bands, sizes, classes."""
    io = data.io
    return {"model": opts.model, "direction": io.direction, "in_bands": list(io.in_norm.get("bands", [])),
            "out_bands": list(io.out_norm.get("bands", [])) if io.out_norm else [],
            "in_channels": io.in_channels, "out_channels": io.out_channels, "tile_size": io.tile_size,
            "num_classes": io.num_classes}


def _check_identity(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    if saved.get("model") != now["model"]:
        raise CheckpointError(f"{path} is a {saved.get('model')} checkpoint, not {now['model']}; use the same --model")
    keys = ("in_bands", "out_bands", "in_channels", "out_channels", "direction", "num_classes")
    if any(saved.get(k) != now[k] for k in keys):
        raise CheckpointError(
            f"data channels differ from the checkpoint {path} (checkpoint {saved.get('direction')}: "
            f"{','.join(saved.get('in_bands', []))}→{','.join(saved.get('out_bands', []))}, data "
            f"{now['direction']}: {','.join(now['in_bands'])}→{','.join(now['out_bands'])}); resume with the same "
            f"bands or start a new run")
    if saved.get("tile_size") != now["tile_size"]:
        raise CheckpointError(f"tile size {now['tile_size']} differs from the checkpoint's {saved.get('tile_size')}"
                              f" ({path}); resume on tiles of the same size")


def _lr_factor(step: int, total: int) -> float:
    """1 for the first half of the steps, then linear decay: (total − step)/(total − ⌊total/2⌋)."""
    start = total // 2
    if step < start or total <= start:
        return 1.0
    return max(0.0, (total - step) / (total - start))


# ------------------------------------------------------------------------------------------ validation
def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def psnr_ssim(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> tuple[list[float], list[float]]:
    """Per-image PSNR (dB) and SSIM of (N, C, H, W) images in [0, 1] over valid pixels.

    PSNR = 10·log10(1/MSE); SSIM: Gaussian 11×11 window (σ = 1.5), C1 = 0.01², C2 = 0.03², map averaged over
    channels and valid pixels (reflect padding at the borders).
    """
    p, t = pred.float().clamp(0, 1), target.float().clamp(0, 1)
    n, c = p.shape[:2]
    w = torch.ones(p.shape[0], 1, *p.shape[2:], device=p.device) if valid is None else valid.float()[:, None]
    npx = w.sum((1, 2, 3)).clamp_min(1.0)
    mse = (((p - t) ** 2) * w).sum((1, 2, 3)) / (npx * c)
    psnr = 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))
    k = _gaussian_window().to(p.device)[None, None].repeat(c, 1, 1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (5, 5, 5, 5), mode="reflect"), k, groups=c)

    mu_p, mu_t = blur(p), blur(t)
    var_p = blur(p * p) - mu_p ** 2
    var_t = blur(t * t) - mu_t ** 2
    cov = blur(p * t) - mu_p * mu_t
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    smap = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))
    ssim = (smap.mean(1, keepdim=True) * w).sum((1, 2, 3)) / npx
    return psnr.tolist(), ssim.tolist()


def _palette(k: int) -> torch.Tensor:
    """k distinct RGB colours in [0, 1] (golden-ratio hues)."""
    import colorsys

    cols = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.95) for i in range(max(k, 1))]
    return torch.tensor(cols, dtype=torch.float32)


def _to_rgb(x: torch.Tensor, bands: Sequence[str]) -> torch.Tensor:
    """(N, C, H, W) model range → (N, 3, H, W) in [0, 1] for display."""
    return rgb_view(((x.float() + 1.0) * 0.5).clamp(0, 1), list(bands))


def _classes_rgb(labels: torch.Tensor, k: int) -> torch.Tensor:
    """(N, H, W) class ids → colours (255 = ignore → black)."""
    pal = torch.cat([_palette(k), torch.zeros(1, 3)], 0)
    idx = labels.long().clone().cpu()
    idx[(idx < 0) | (idx >= k)] = k
    return pal[idx].permute(0, 3, 1, 2)


def write_sample_grid(path: Path, rows: list[list[torch.Tensor]]) -> None:
    """PNG grid: one row per tile, columns as given (each (3, H, W) in [0, 1]), 2-pixel white gutters."""
    from PIL import Image

    from sarkit.io import atomic_file

    if not rows:
        return
    h, w = rows[0][0].shape[1:]
    gut = 2
    ncol = max(len(r) for r in rows)
    canvas = torch.ones(3, len(rows) * (h + gut) - gut, ncol * (w + gut) - gut)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            canvas[:, i * (h + gut):i * (h + gut) + h, j * (w + gut):j * (w + gut) + w] = img.float().cpu()
    arr = (canvas.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_file(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def _validate(model: Any, items: list[dict[str, Any]], data: _Data, device: torch.device, tools: StepTools,
              channels_last: bool, batch: int = 4, n_samples: int = 4) -> tuple[dict[str, float], list[list]]:
    """Metrics over the validation tiles and sample rows (input | output | target)."""
    from torch.utils.data import default_collate

    io = data.io
    sums: dict[str, float] = {}
    count = 0
    rows: list[list[torch.Tensor]] = []
    was = model.training
    model.eval()
    try:
        for lo in range(0, len(items), batch):
            b = _to_device(default_collate(items[lo:lo + batch]), device, channels_last)
            n = next(v for v in b.values() if torch.is_tensor(v)).shape[0]
            x, y = model.validation_inputs(b)
            with torch.no_grad(), tools.autocast():
                out = model.predict(x)
            out = out.float()
            for k, v in (model.validation_metrics(b) if hasattr(model, "validation_metrics") else {}).items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            if not data.segmenter:
                ps, ss = psnr_ssim((out + 1) * 0.5, (y.float() + 1) * 0.5, b.get("valid"))
                sums["psnr"] = sums.get("psnr", 0.0) + sum(ps)
                sums["ssim"] = sums.get("ssim", 0.0) + sum(ss)
            count += n
            for i in range(min(n, n_samples - len(rows))):
                xin = _to_rgb(x[i:i + 1], io.in_norm.get("bands", []))[0]
                if data.segmenter:
                    k = int(io.num_classes or 1)
                    rows.append([xin, _classes_rgb(out[i:i + 1].argmax(1), k)[0], _classes_rgb(y[i:i + 1], k)[0]])
                else:
                    bands = io.out_norm.get("bands", [])
                    rows.append([xin, _to_rgb(out[i:i + 1], bands)[0], _to_rgb(y[i:i + 1], bands)[0]])
    finally:
        model.train(was)
    return {k: v / max(count, 1) for k, v in sums.items()}, rows


# ------------------------------------------------------------------------------------------ metrics log
class _MetricsLog:
    """Appends JSON lines to RUN/metrics.jsonl (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

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
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------------------------------ the trainer
def _check_options(opts: TrainOptions) -> None:
    """Reject impossible option values before touching anything."""
    if opts.steps is not None and opts.epochs is not None:
        raise InputError("give --steps or --epochs, not both")
    if opts.steps is not None and opts.steps < 1:
        raise InputError(f"--steps must be ≥ 1, got {opts.steps}")
    if opts.epochs is not None and opts.epochs < 1:
        raise InputError(f"--epochs must be ≥ 1, got {opts.epochs}")
    if opts.batch_size < 1:
        raise InputError(f"--batch-size must be ≥ 1, got {opts.batch_size}")
    if not opts.lr > 0:
        raise InputError(f"--lr must be > 0, got {opts.lr}")
    if opts.workers < 0:
        raise InputError(f"--workers must be ≥ 0, got {opts.workers}")
    for name in ("val_every", "save_every", "log_every"):
        if getattr(opts, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} must be ≥ 0")


def _build_model(cls: type, io: ModelIO, model_opts: Any, opts: TrainOptions) -> Any:
    """Instantiate the model; architecture limits (tile size, channels) become InputError."""
    try:
        return cls(io, model_opts)
    except ValueError as exc:
        raise InputError(f"--model {opts.model} cannot train on these tiles: {exc}") from None


def _save(run: Path, model: Any, step: int, spe: int, total: int, opts: TrainOptions, data: _Data,
          scaler: Any, device: torch.device, d: DistInfo) -> list[Path]:
    """Write the full training state and the exported networks (rank 0; every rank contributes its RNG)."""
    per_rank = _gather(d, {"rng": _rng_state(device), "extra": model.extra_state()})
    if not d.main:
        return []
    ck = run / "checkpoints"
    state = {
        "format": STATE_FORMAT, "sarkit_version": __version__, "step": step, "epoch": step // spe,
        "identity": _identity(data, opts),
        "nets": model.nets.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in model.optimizers.items()},
        "scaler": scaler.state_dict(),
        "schedule": {"base_lr": opts.lr, "total": total, "decay_start": total // 2},
        "data": {"seed": opts.seed, "steps_per_epoch": spe, "batch": opts.batch_size, "world": d.world,
                 "n": len(data.train)},
        "ranks": per_rank,
    }
    save_state(ck / STATE_NAME, state)
    return _export(run, model, data, step)


def _export(run: Path, model: Any, data: _Data, step: int) -> list[Path]:
    """Exported networks per CKPT_API.md (generator / segmenter safetensors with their metadata)."""
    io = data.io
    paths = []
    for kind, module, arch, kwargs in model.export():
        if hasattr(model, "export_meta"):
            meta = dict(model.export_meta())
        else:
            meta = {"model": model.name, "direction": io.direction, "in_norm": io.in_norm,
                    "out_norm": io.out_norm, "tile_size": io.tile_size}
        meta.update({"run": run.name, "step": step})
        paths.append(save_network(run / "checkpoints" / f"{kind}.safetensors", module, kind, arch, kwargs, meta))
    return paths


def _restore(state: dict[str, Any], model: Any, scaler: Any, device: torch.device, d: DistInfo,
             path: Path) -> int:
    """Load a training state into the model, optimizers, scaler and RNGs; return its step."""
    try:
        model.nets.load_state_dict(state["nets"])
        for k, o in model.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        ranks = state.get("ranks") or []
        mine = ranks[d.rank] if d.rank < len(ranks) else None
        if mine is not None:
            model.load_extra_state(mine.get("extra", {}))
            _set_rng_state(mine["rng"], device)
        else:
            _seed_all(int(state["data"]["seed"]) + 7919 * d.rank + int(state["step"]))
        return int(state["step"])
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f"cannot resume from {path}: {str(exc).splitlines()[0][:200]}") from None


def train(opts: TrainOptions, reporter: Any = NULL_REPORTER) -> TrainResult:
    """Train ``opts.model`` on the tiles in ``opts.data`` into ``opts.out`` (see the module docstring)."""
    _check_options(opts)
    d = init_distributed(opts.device)
    try:
        # rank 0 locks RUN before looking at it, so a second run on it fails at once whatever RUN holds
        with output_lock(opts.out) if d.main else contextlib.nullcontext():
            return _train(opts, reporter if d.main else NULL_REPORTER, d)
    finally:
        if d.owned:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(opts: TrainOptions, reporter: Any, d: DistInfo) -> TrainResult:
    t0 = time.monotonic()
    device = resolve_device(opts.device, d.local_rank)
    amp_dtype = resolve_amp(opts.amp, device)
    backend = configure_backends(device, d.world, deterministic=device.type == "cpu")
    channels_last = backend.channels_last if opts.channels_last is None else bool(opts.channels_last)
    cls = get_model(opts.model)
    named = dict(opts.model_options)
    model_opts = parse_options(cls.Options, named)
    data = _open_data(opts, cls)
    order = DataOrder(len(data.train), opts.batch_size, d.world, d.rank, opts.seed)
    spe = order.steps_per_epoch
    total = opts.steps if opts.steps is not None else (opts.epochs or DEFAULT_EPOCHS) * spe

    _seed_all(opts.seed)  # same initial weights on every rank
    model = _build_model(cls, data.io, model_opts, opts)
    config = build_config(opts, model_opts, data, total, spe, d.world, device,
                          getattr(model, "helper_records", {}))
    run = Path(opts.out)
    state_path = _check_run_dir(opts, config)
    state = None
    if state_path is not None:
        state = load_state(state_path)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or "identity" not in state:
            raise CheckpointError(f"{state_path} is not a sarkit training state; start a new run")
        _check_identity(state["identity"], _identity(data, opts), state_path)
        _check_resume_config(run, config)

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    model.configure_optimizers(opts.lr, (opts.beta1, opts.beta2))
    scaler = make_scaler(amp_dtype, device)
    tools = StepTools(device=device, amp_dtype=amp_dtype, scaler=scaler, world_size=d.world)
    _broadcast_module(d, model.nets)
    _seed_all(opts.seed + 7919 * d.rank)
    start = 0
    if state is not None:
        start = _restore(state, model, scaler, device, d, state_path)
        del state
    if start >= total:
        raise InputError(f"{run} already reached step {start} of {total}; raise --steps/--epochs to train longer")

    val_items: list[dict[str, Any]] = []
    if data.val is not None and d.main and opts.val_every > 0:
        val_items = [data.val[i] for i in range(min(len(data.val), max(opts.val_tiles, 1)))]

    with contextlib.ExitStack() as stack:
        failure: BaseException | None = None
        if d.main:
            try:
                stack.enter_context(output_lock(run))
                if opts.overwrite and not opts.resume:
                    _clear_run(run)
                for folder in (run, run / "checkpoints", run / "samples"):  # what a killed run left half-written
                    remove_stale_temps(folder, any_name=True)
                (run / "checkpoints").mkdir(parents=True, exist_ok=True)
                (run / "samples").mkdir(exist_ok=True)
                write_atomic_text(run / "config.json", json.dumps(config, indent=2) + "\n")
            except Exception as exc:  # re-raised below once every rank knows
                failure = exc
        if not _all_ok(d, failure is None):
            if failure is not None:
                raise failure
            raise WorkError("rank 0 could not prepare the run directory; see its error")
        log = _MetricsLog(run / "metrics.jsonl", d.main)
        log.truncate_after(start)
        if start:
            reporter.info(f"resuming {opts.model} at step {start} of {total}")
        result = _loop(opts, model, data, order, start, total, spe, device, tools, scaler, channels_last, run,
                       log, val_items, reporter, d)
    result.seconds = time.monotonic() - t0
    return result


def _loop(opts: TrainOptions, model: Any, data: _Data, order: DataOrder, start: int, total: int, spe: int,
          device: torch.device, tools: StepTools, scaler: Any, channels_last: bool, run: Path, log: _MetricsLog,
          val_items: list[dict[str, Any]], reporter: Any, d: DistInfo) -> TrainResult:
    """The step loop: LR schedule, train_step, logging, validation, checkpoints."""
    sums: dict[str, float] = {}
    nsum = 0
    last: dict[str, float] = {}
    val: dict[str, float] | None = None
    exported: list[Path] = []
    step = start
    saved_at = start
    in_step = False
    loader = _loader(data.train, order, start, total, opts.workers, device)
    with reporter.task(f"Training {opts.model}", total=total) as task:
        if start:
            task.advance(start)
        try:
            for raw in loader:
                in_step = True
                factor = _lr_factor(step, total)
                for opt in model.optimizers.values():
                    for g in opt.param_groups:
                        g["lr"] = opts.lr * factor
                losses = model.train_step(_to_device(raw, device, channels_last), tools)
                if scaler.is_enabled():
                    scaler.update()
                _broadcast_module(d, model.nets, buffers_only=True)
                step += 1
                in_step = False
                if not _all_ok(d, all(math.isfinite(float(v)) for v in losses.values())):
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
                if data.val is not None and opts.val_every and (step % opts.val_every == 0 or step == total):
                    if val_items:
                        val = _validation(model, val_items, data, device, tools, channels_last, run, step, log)
                    _barrier(d)
                stopping = opts.stop_at is not None and step >= opts.stop_at
                if (opts.save_every and step % opts.save_every == 0) or step == total or stopping:
                    exported = _save(run, model, step, spe, total, opts, data, scaler, device, d) or exported
                    saved_at = step
                    _barrier(d)
                task.advance(1, **{k: round(v, 4) for k, v in list(last.items())[:4]})
                if stopping:
                    break
        except KeyboardInterrupt:
            if d.world == 1 and step > saved_at and not in_step:
                _save(run, model, step, spe, total, opts, data, scaler, device, d)
                saved_at = step
            reporter.warn(f"interrupted: the last state saved is at step {saved_at}; continue with --resume")
            raise
    if d.main:
        summary = f"trained {opts.model} to step {step} → {run}"
        if val:
            summary += " (" + ", ".join(f"{k}={v:.4g}" for k, v in val.items()) + ")"
        reporter.info(summary)
    return TrainResult(run, opts.model, step, start, step / spe, 0.0, last, val, exported, d.world, model)


def _validation(model: Any, items: list[dict[str, Any]], data: _Data, device: torch.device, tools: StepTools,
                channels_last: bool, run: Path, step: int, log: _MetricsLog) -> dict[str, float]:
    """Validate (rank 0), log the metrics and write the sample grid."""
    metrics, rows = _validate(model, items, data, device, tools, channels_last)
    log.write({"kind": "val", "step": step, **metrics})
    write_sample_grid(run / "samples" / f"step-{step:06d}.png", rows)
    return metrics
