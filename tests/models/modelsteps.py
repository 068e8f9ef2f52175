"""Helpers shared by the model tests: a seeded batch, CPU step tools, and the FLOP count of one training step."""

from __future__ import annotations

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
        with pytest.raises(RuntimeError, match="meta tensors"):
            model.train_step(batch, StepTools(device=torch.device("meta")))
    return counter.get_total_flops() / 1e9
