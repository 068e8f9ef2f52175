"""What ``sarkit train`` is asked to do (``TrainOptions``, which checks itself) and what it did (``TrainResult``)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

from sarkit.devices import AmpMode
from sarkit.errors import InputError
from sarkit.raster.norm import RGB_BANDS

#: Epochs when neither ``steps`` nor ``epochs`` is given (pix2pix/CycleGAN: 100 constant + 100 decaying).
DEFAULT_EPOCHS = 200
#: Model options with a command-line option of their own (``--lambda-clip``…); the others are ``--model-opt``.
NAMED_MODEL_OPTIONS = ("lambda_clip", "clip_model", "clip_pretrained", "clip_weights", "sar_segmenter",
                       "optical_segmenter", "x_r_from", "x_g_from", "vgg19_weights", "lpips_weights", "lpips_backbone")
#: TrainOptions fields without a command-line option (library callers only).
LIBRARY_ONLY = frozenset({"beta1", "beta2", "val_tiles", "channels_last"})


class Direction(str, Enum):
    """Which modality a translator reads and which it writes."""

    SAR2OPT = "sar2opt"
    OPT2SAR = "opt2sar"


class Modality(str, Enum):
    """The one modality a segmenter reads."""

    SAR = "sar"
    OPTICAL = "optical"


def _direction(value: Direction | str) -> Direction:
    """A Direction from its name (``InputError`` naming the valid ones otherwise)."""
    try:
        return Direction(value)
    except ValueError:
        raise InputError(f"--direction must be sar2opt or opt2sar, got {value!r}") from None


def _modality(value: Modality | str | None) -> Modality | None:
    """A Modality from its name, or None."""
    if value is None:
        return None
    try:
        return Modality(value)
    except ValueError:
        raise InputError(f"--modality must be sar or optical, got {value!r}") from None


@dataclass
class TrainOptions:
    """Everything ``sarkit train`` needs; ``model_options`` are strings or values for the model's Options.

    Strings are accepted for the enum fields (``direction="opt2sar"``, ``amp="bf16"``, ``modality="sar"``);
    impossible values raise ``InputError`` on construction, with the command line's option names.
    """

    model: str
    data: Path  # the first tile set; a sequence of folders may be given (the others go to ``more_data``)
    out: Path
    direction: Direction = Direction.SAR2OPT
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    device: str = "auto"
    amp: AmpMode = AmpMode.OFF
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
    modality: Modality | None = None
    augment: bool = False
    channels_last: bool | None = None
    stop_at: int | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    more_data: tuple[Path, ...] = ()  # further tile sets (``--data`` given again), read with ``data`` as one

    def __post_init__(self) -> None:
        from sarkit.data.multiset import data_dirs

        given = [self.data] if isinstance(self.data, (str, os.PathLike)) else list(self.data or ())
        dirs = data_dirs([*given, *(self.more_data or ())])
        self.data, self.more_data, self.out = dirs[0], dirs[1:], Path(self.out)
        if self.steps is not None and self.epochs is not None:
            raise InputError("give --steps or --epochs, not both")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps must be ≥ 1, got {self.steps}")
        if self.epochs is not None and self.epochs < 1:
            raise InputError(f"--epochs must be ≥ 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be ≥ 1, got {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if self.workers < 0:
            raise InputError(f"--workers must be ≥ 0, got {self.workers}")
        for name in ("val_every", "save_every", "log_every"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must be ≥ 0")
        self.direction = _direction(self.direction)
        self.modality = _modality(self.modality)
        self.amp = AmpMode.parse(self.amp, default="off", allow_auto=False)
        self.sar_bands = tuple(self.sar_bands) if self.sar_bands else None
        self.optical_bands = tuple(self.optical_bands)

    @property
    def data_dirs(self) -> tuple[Path, ...]:
        """Every tile set of the run: ``data``, then ``more_data``."""
        return (self.data, *self.more_data)

    def total_steps(self, steps_per_epoch: int) -> int:
        """``steps``, else ``epochs`` (default DEFAULT_EPOCHS) × steps per epoch."""
        if self.steps is not None:
            return self.steps
        return (self.epochs or DEFAULT_EPOCHS) * steps_per_epoch


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


def option_name(key: str) -> str:
    """The command-line spelling of a config.json key or TrainOptions field (``batch_size`` → ``--batch-size``,
    ``model_options`` → ``--model-opt``); keys that describe the tiles rather than an option are left as they are."""
    if key == "model_options":
        return "--model-opt"
    if key in ("more_data", "data_sets", "data_count"):
        return "--data"
    if key in {f.name for f in dataclasses.fields(TrainOptions)} - LIBRARY_ONLY:
        return "--" + key.replace("_", "-")
    return key


def check_model_option_names(model: str, options_cls: type | None, values: dict[str, Any]) -> None:
    """Every model option given is one of ``--model``'s (``InputError`` with the option as it was typed and the
    model's ``--model-opt`` keys otherwise)."""
    fields = sorted(f.name for f in dataclasses.fields(options_cls)) if dataclasses.is_dataclass(options_cls) else []
    valid = ", ".join(fields) or "none"
    for key in values:
        name = key.replace("-", "_")
        if name in fields:
            continue
        if name in NAMED_MODEL_OPTIONS:
            raise InputError(f"--{name.replace('_', '-')} is not an option of --model {model} (it has the "
                             f"--model-opt keys {valid})")
        raise InputError(f"--model-opt {key}: --model {model} has no option {name!r}; its --model-opt keys: {valid}")
