"""Helpers shared by the model tests: a seeded batch, CPU step tools, and the FLOP count of one training step."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from sarkit.models.base import ModelIO, StepTools, TrainableModel
from sarkit.raster.norm import optical_normalization


def noise_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """A fixed random batch of 2 SAR and 2 optical tiles in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return {"sar": torch.rand(2, 2, 32, 32, generator=g) * 2 - 1,
            "optical": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1}


def tools() -> StepTools:
    """Step tools for fp32 on the CPU."""
    return StepTools(device=torch.device("cpu"))


def reference_io() -> ModelIO:
    """What the authors' CUT-family code reads: 3 → 3 channels at 256²."""
    return ModelIO(3, 3, "opt2sar", 256, optical_normalization().to_dict(), optical_normalization().to_dict())


def step_gflop(model: TrainableModel) -> float:
    """GFLOP (convolutions and matrix products, forward and backward) of one training step at 256², batch 1,
    counted on meta tensors: shapes only, no arithmetic. The step's last act, reading the losses for the log,
    is the one thing meta tensors cannot do, so it ends there (and must end nowhere else)."""
    from torch.utils.flop_counter import FlopCounterMode

    for net in model.nets.values():
        net.to("meta")
    model.configure_optimizers(2e-4, (0.5, 0.999))
    batch = {k: torch.empty(1, 3, 256, 256, device="meta") for k in ("sar", "optical")}
    with FlopCounterMode(display=False) as counter:
        with pytest.raises(RuntimeError, match="meta tensor"):
            model.train_step(batch, StepTools(device=torch.device("meta")))
    return counter.get_total_flops() / 1e9



def steps_and_params(model: TrainableModel, batch: dict[str, torch.Tensor], steps: int = 3, seed: int = 0,
                     unfused_adam: bool = False,
                     channels_last: bool = False) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """The logged losses of ``steps`` fp32 CPU training steps of ``model`` on ``batch`` (torch's RNG seeded first,
    so dropout and sampled locations repeat) and every trained parameter after the first step; optionally with
    torch's per-op Adam update instead of the model's own optimizer settings, or with the model and batch in
    channels-last layout. (After the first step, parameters are compared no further: a gradient within rounding of
    zero can take either sign, and Adam turns that into a full step of ±lr either way.)"""
    if channels_last:
        model.to(memory_format=torch.channels_last)
        batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}
    model.configure_optimizers(2e-4, (0.5, 0.999))
    if unfused_adam:
        for opt in model.optimizers.values():
            for g in opt.param_groups:
                g["fused"], g["foreach"] = None, False
    torch.manual_seed(seed)
    losses, first = [], {}
    for i in range(steps):
        losses.append(model.train_step(batch, tools()))
        if i == 0:
            first = {k: v.detach().clone().contiguous() for k, v in model.nets.state_dict().items()}
    return losses, first


def max_param_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest |a − b| over every entry of two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


def max_loss_difference(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    """Largest relative difference |a − b| / max(|a|, 1e-3) between two runs' logged losses, step by step."""
    return max(abs(x[k] - y[k]) / max(abs(x[k]), 1e-3) for x, y in zip(a, b, strict=True) for k in x)


def assert_levers_train_as_the_per_op_step(make_model: Callable[[], TrainableModel],
                                           batch: dict[str, torch.Tensor], steps: int = 3, tol: float = 1e-4) -> None:
    """The model's default optimizers are fused, and ``steps`` steps with torch's per-op Adam or in channels-last
    layout log the same losses as the default within ``tol`` (relative; see the callers for why not closer)."""
    model = make_model()
    assert all(o.param_groups[0]["fused"] for o in model.configure_optimizers(2e-4, (0.5, 0.999)).values())

    def run(**kw: bool) -> list[dict[str, float]]:
        torch.manual_seed(0)
        return steps_and_params(make_model(), batch, steps, **kw)[0]

    base = run()
    for kw in ({"unfused_adam": True}, {"channels_last": True}):
        assert max_loss_difference(base, run(**kw)) < tol, kw
