"""Training state: RNG states, the full resumable state (RUN/checkpoints/state-latest.pt) and the exported networks.

RNG states (python, numpy, torch, CUDA) of every rank are saved with the step, so dropout and image-pool draws
continue exactly on resume; the state also records the data's identity (model, direction, bands, sizes,
classes), which a resume must match.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sarkit import __version__
from sarkit.errors import CheckpointError
from sarkit.models.checkpoint import load_state, save_network, save_state
from sarkit.training.data import TrainData
from sarkit.training.distributed import DistInfo, gather
from sarkit.training.run import state_path

if TYPE_CHECKING:
    from sarkit.training.loop import TrainingRun

STATE_FORMAT = 1
#: Seed offset between ranks (each rank draws its own dropout/augmentation numbers).
RANK_SEED_STRIDE = 7919


# ------------------------------------------------------------------------------------------ RNG
def rng_state(device: torch.device) -> dict[str, Any]:
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


def set_rng_state(st: dict[str, Any], device: torch.device) -> None:
    """Restore what ``rng_state`` returned."""
    py = st["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"]), py["gauss"]))
    n = st["numpy"]
    np.random.set_state(("MT19937", n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(st["torch"].cpu())
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"].cpu(), device)


def seed_all(seed: int) -> None:
    """Seed python, numpy (seed mod 2³²) and torch."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank ``rank`` at ``step``: seed + 7919·rank + step."""
    return seed + RANK_SEED_STRIDE * rank + step


# ------------------------------------------------------------------------------------------ identity
def identity(data: TrainData, model: str) -> dict[str, Any]:
    """What a checkpoint must share with the data to be resumed: model, direction, bands, sizes, classes."""
    io = data.io
    return {"model": model, "direction": io.direction, "in_bands": list(io.in_norm.get("bands", [])),
            "out_bands": list(io.out_norm.get("bands", [])) if io.out_norm else [],
            "in_channels": io.in_channels, "out_channels": io.out_channels, "tile_size": io.tile_size,
            "num_classes": io.num_classes}


def check_identity(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """``CheckpointError`` when the saved identity differs from the data's (other model, bands or tile size)."""
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


def load_resume_state(path: Path, data: TrainData, model: str) -> dict[str, Any]:
    """The training state at ``path``, checked to be one and to match the data."""
    state = load_state(path)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or "identity" not in state:
        raise CheckpointError(f"{path} is not a sarkit training state; start a new run")
    check_identity(state["identity"], identity(data, model), path)
    return state


# ------------------------------------------------------------------------------------------ save / restore
def save(r: TrainingRun, step: int) -> list[Path]:
    """Write the exported networks, then the full training state (rank 0; every rank contributes its RNG).

    Exports first: whenever state-latest.pt exists, exported networks of at least its step exist too.
    """
    per_rank = gather(r.dist, {"rng": rng_state(r.device), "extra": r.model.extra_state()})
    if not r.dist.main:
        return []
    opts, spe = r.opts, r.spe
    state = {
        "format": STATE_FORMAT, "sarkit_version": __version__, "step": step, "epoch": step // spe,
        "identity": identity(r.data, opts.model),
        "nets": r.model.nets.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in r.model.optimizers.items()},
        "scaler": r.scaler.state_dict(),
        "schedule": {"base_lr": opts.lr, "total": r.total, "decay_start": r.total // 2},
        "data": {"seed": opts.seed, "steps_per_epoch": spe, "batch": opts.batch_size, "world": r.dist.world,
                 "n": len(r.data.train)},
        "ranks": per_rank,
        "best": r.best,
    }
    exported = export(r, step)
    save_state(state_path(r.dir), state)
    return exported


def export(r: TrainingRun, step: int, folder: Path | None = None, extra: dict[str, Any] | None = None
           ) -> list[Path]:
    """Exported networks per CKPT_API.md (generator / segmenter safetensors with the model's metadata) in
    ``folder`` (default RUN/checkpoints), ``extra`` added to their metadata; a translator's generator also records
    the constant-colour and linear-map baselines of the training tiles."""
    from sarkit.training.baselines import run_baselines

    paths = []
    folder = r.dir / "checkpoints" if folder is None else folder
    baselines = run_baselines(r)  # translators: constant colour and linear map of the training tiles
    for kind, module, arch, kwargs in r.model.export():
        meta = dict(r.model.export_meta())
        meta.update({"run": r.dir.name, "step": step, **(extra or {})})
        if baselines is not None and kind == "generator":
            meta["baselines"] = baselines
        paths.append(save_network(folder / f"{kind}.safetensors", module, kind, arch, kwargs, meta))
    return paths


def best_dir(run: Path) -> Path:
    """RUN/checkpoints/best: the networks of the best validation so far (``TrainableModel.keep_best``)."""
    return run / "checkpoints" / "best"


def keep_if_best(r: TrainingRun, step: int, metrics: dict[str, float]) -> bool:
    """Export the networks to RUN/checkpoints/best/ when the model keeps its best ``keep_best`` metric (higher is
    better) and this validation beats the best so far; True when it did. A non-finite value never counts."""
    name = r.model.keep_best
    value = metrics.get(name) if name else None
    if value is None or not np.isfinite(value):
        return False
    if r.best is not None and r.best.get("metric") == name and not value > float(r.best["value"]):
        return False
    r.best = {"metric": name, "value": float(value), "step": int(step)}
    export(r, step, best_dir(r.dir), {"best": dict(r.best)})
    return True


def restore(state: dict[str, Any], r: TrainingRun, path: Path) -> int:
    """Load a training state into the model, optimizers, scaler and RNGs; return its step."""
    d: DistInfo = r.dist
    try:
        r.model.nets.load_state_dict(state["nets"])
        for k, o in r.model.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        if state.get("scaler"):
            r.scaler.load_state_dict(state["scaler"])
        r.best = state.get("best")
        ranks = state.get("ranks") or []
        mine = ranks[d.rank] if d.rank < len(ranks) else None
        if mine is not None:
            r.model.load_extra_state(mine.get("extra", {}))
            set_rng_state(mine["rng"], r.device)
        else:
            seed_all(rank_seed(int(state["data"]["seed"]), d.rank, int(state["step"])))
        return int(state["step"])
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f"cannot resume from {path}: {str(exc).splitlines()[0][:200]}") from None
