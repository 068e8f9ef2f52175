"""The interface every trainable model implements, and the tools the trainer hands it for one step.

A model owns its networks (``self.nets``, an ``nn.ModuleDict`` of trained networks; frozen helpers such as CLIP
or segmenters live elsewhere and are never saved as trainable state), builds its optimizers, and runs one
training iteration in ``train_step``. The trainer (``sarkit.training``) owns data, devices, mixed precision,
distributed gradient averaging, checkpoints, resume, logging and validation.

A model class *declares* what it is and needs (``task``, ``paired``, ``needs_labels``) and answers for its export
metadata, validation metrics and helper records; the trainer reads those declarations and never probes classes.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, ClassVar, ContextManager

import torch
from torch import nn

from sarkit.errors import InputError


class Task(str, Enum):
    """What a model learns: to translate one modality into the other, to segment one modality into classes, or
    to super-resolve optical images (trained like a translator on optical pairs; not a SAR ↔ optical model)."""

    TRANSLATOR = "translator"
    SEGMENTER = "segmenter"
    SUPER_RESOLUTION = "super-resolution"


@dataclass(frozen=True)
class ModelIO:
    """What the data gives a model: channels, direction, tile size, normalisations and classes.

    ``direction`` is "sar2opt" or "opt2sar" for translators (``in_norm``/``out_norm`` are the input and output
    domains' normalisations as dicts), or the modality ("sar"/"optical") for a segmenter. ``pixel_size`` is the
    training tiles' pixel size (``sarkit.raster.grid.PixelSize.to_dict``), None when unknown.
    """

    in_channels: int
    out_channels: int
    direction: str
    tile_size: int
    in_norm: dict[str, Any]
    out_norm: dict[str, Any]
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    pixel_size: dict[str, Any] | None = None


@dataclass
class StepTools:
    """Per-step helpers from the trainer: autocast context, scaled backward, optimizer step.

    ``step`` averages gradients over processes when running distributed (the same all-reduce that
    DistributedDataParallel performs, done explicitly because GAN updates toggle ``requires_grad`` between the
    generator and discriminator passes, which DDP's reducer does not allow).
    """

    device: torch.device
    amp_dtype: torch.dtype | None = None
    scaler: Any = None
    world_size: int = 1

    def autocast(self) -> ContextManager:
        """Mixed-precision context for forward passes (no-op when AMP is off)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward pass through the gradient scaler when fp16 is on."""
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Average gradients across processes, then step ``optimizer`` (through the scaler) and zero it."""
        if self.world_size > 1:
            import torch.distributed as dist

            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                        p.grad.div_(self.world_size)
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler.step(optimizer)
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def read_losses(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar loss tensors as floats, read from the device in one transfer (one host sync per step, not one per
    loss)."""
    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()]).tolist()
    return dict(zip(losses.keys(), values))


def set_requires_grad(nets: nn.Module | list[nn.Module], flag: bool) -> None:
    """Switch gradient tracking of every parameter of ``nets`` on or off."""
    for net in nets if isinstance(nets, list) else [nets]:
        for p in net.parameters():
            p.requires_grad_(flag)


class TrainableModel(nn.Module):
    """Base class of every registered model.

    Subclasses declare ``task`` (translator or segmenter), ``paired`` (reads the paired split) or not (samples
    the two domains independently), ``needs_labels``, ``Options`` (a dataclass of model-specific
    hyper-parameters with the paper's defaults), and implement ``build``, ``configure_optimizers``,
    ``train_step``, ``predict`` and ``export``. ``helper_records`` (set in ``build``) names the frozen helpers the
    model loaded (CLIP, segmenters), recorded in the run's config.json.
    """

    name: ClassVar[str] = "base"
    task: ClassVar[Task] = Task.TRANSLATOR
    paired: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = False
    #: Trains from tiles alone; False for a model built on other runs given as model options (gan-prior's
    #: ``x_r_from``), which ``sarkit benchmark --models all`` leaves out (name it to benchmark it).
    standalone: ClassVar[bool] = True
    Options: ClassVar[type] = object
    #: A validation metric (higher is better, e.g. "psnr") whose best value's networks the trainer keeps in
    #: RUN/checkpoints/best/ besides the last ones; None = only the last.
    keep_best: ClassVar[str | None] = None

    def __init__(self, io: ModelIO, opts: Any) -> None:
        super().__init__()
        self.io = io
        self.opts = opts
        self.nets = nn.ModuleDict()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.helper_records: dict[str, dict[str, Any]] = {}
        self.step, self.total_steps = 0, 0
        self.build()

    # -- to implement ---------------------------------------------------------------------------------
    def build(self) -> None:
        """Create the trainable networks in ``self.nets`` (and frozen helpers as plain attributes)."""
        raise NotImplementedError

    def configure_optimizers(self, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
        """Create ``self.optimizers`` (name → optimizer) and return it."""
        raise NotImplementedError

    def train_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, float]:
        """One training iteration on ``batch`` (tensors already on the device); return the losses as floats."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Inference output for input ``x`` in model range (the exported network's forward)."""
        raise NotImplementedError

    def export(self) -> list[tuple[str, nn.Module, str, dict[str, Any]]]:
        """Networks to export for inference: ``(kind, module, arch, arch_kwargs)`` per network."""
        raise NotImplementedError

    # -- optional -------------------------------------------------------------------------------------
    def set_progress(self, step: int, total: int) -> None:
        """Told by the trainer before every ``train_step``: the number of steps done so far and the run's total
        (models whose training has phases, such as gan-prior, read ``self.step`` / ``self.total_steps``)."""
        self.step, self.total_steps = int(step), int(total)

    def extra_state(self) -> dict[str, Any]:
        """Non-parameter training state to checkpoint (image pools, ...), tensors and plain values only."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` returned."""

    def lr_factor(self, step: int, total: int) -> float | None:
        """The learning-rate multiplier at ``step`` of ``total`` when the model has its own schedule; None = the
        trainer's (constant, then linear decay over the second half)."""
        return None

    def validation_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) of a batch for validation metrics and sample grids."""
        if self.io.direction == "opt2sar":
            return batch["optical"], batch["sar"]
        return batch["sar"], batch["optical"]

    def validation_metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Model-specific validation metrics of one batch (e.g. a segmenter's pixel accuracy and mIoU); {} if none.

        A translator's PSNR/SSIM/MAE are not computed here: the trainer takes them from ``sarkit.eval.metrics``.
        """
        return {}

    def export_meta(self) -> dict[str, Any]:
        """Metadata of the exported networks (CKPT_API.md): a translator's model, direction, norms, tile size and
        the training tiles' pixel size (when known)."""
        io = self.io
        meta = {"model": self.name, "direction": io.direction, "in_norm": io.in_norm, "out_norm": io.out_norm,
                "tile_size": io.tile_size}
        if io.pixel_size is not None:
            meta["pixel_size"] = io.pixel_size
        return meta


def parse_options(cls: type, values: dict[str, Any]) -> Any:
    """Build a model's ``Options`` dataclass from strings/values, coercing types; unknown keys are an error."""
    if not dataclasses.is_dataclass(cls):
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise InputError(f"unknown model option {key!r}; valid: {', '.join(sorted(fields)) or 'none'}")
        default = fields[name].default
        kwargs[name] = _coerce(raw, default, key)
    return cls(**kwargs)


def _coerce(raw: Any, default: Any, key: str) -> Any:
    """Convert a command-line string to the type of the option's default."""
    if not isinstance(raw, str) or isinstance(default, str) or default is None:
        return raw
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise InputError(f"--model-opt {key} expects {type(default).__name__}, got {raw!r}") from None
    return raw


def options_dict(opts: Any) -> dict[str, Any]:
    """A model options dataclass as a JSON-friendly dict."""
    return dataclasses.asdict(opts) if dataclasses.is_dataclass(opts) else {}


OptionsFactory = Callable[[dict[str, Any]], Any]
__all__ = ["ModelIO", "StepTools", "Task", "TrainableModel", "read_losses", "set_requires_grad", "parse_options", "options_dict", "field"]
