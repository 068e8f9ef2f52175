"""Con-Diffusion (Bai, Pu and Xu, IEEE GRSL 2023): a conditional DDPM for SAR ↔ optical translation.

As the authors' code (guided-diffusion with the condition as extra input channels): the input-domain image c is
concatenated to x_t at every step and never noised; the ADM U-Net (``sarkit.models.diffusion_unet``) predicts the
noise ε, trained with the plain MSE ‖ε − ε_θ(x_t, t, c)‖² at a timestep drawn uniformly from the T = 2000 steps of
the linear schedule (β 5e-5 … 0.01); an exponential moving average (0.9999) of the weights is what gets exported.
Inference (``sarkit.infer.diffusion``) samples with 250 respaced DDPM steps by default, or DDIM.

Differences from the paper's setup, for sarkit's data and machines: the MSE is averaged over valid pixels (both
modalities hold data; nodata borders are not learnt), the EMA decay is warmed up as min(0.9999, (1 + n)/(10 + n))
after n updates (``ema_warmup``; the authors' code uses 0.9999 from the first step, which leaves a short run's
export at its random initialisation), the trainer's learning-rate schedule (constant, then linear decay over the
second half) applies, and validation samples with 20 deterministic DDIM steps (``val_steps``) to stay affordable.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sarkit.errors import InputError
from sarkit.models.base import StepTools, Task, TrainableModel
from sarkit.models.diffusion_unet import build_diffusion_unet, channel_mult, unet_shape, unet_size
from sarkit.models.pix2pix import masked_mse, split_io
from sarkit.models.registry import register_model
from sarkit.models.samplers import DEFAULT_STEPS, NoiseSchedule, PositionalNoise, SamplerKind, SamplingPlan, sample


@dataclass
class ConDiffusionOptions:
    """Con-Diffusion hyper-parameters (the paper's defaults; ``size`` small or tiny for CPUs)."""

    size: str = "paper"          # U-Net preset: paper (128 ch, 3 blocks, 1,1,2,2,4,4), small, tiny
    channels: int = 0            # base width (0 = the preset's)
    res_blocks: int = 0          # residual blocks per level (0 = the preset's)
    channel_mult: str = ""       # width multipliers per level, e.g. "1,1,2,2,4,4" ("" = the preset's)
    heads: int = 0               # attention heads (0 = the preset's)
    dropout: float = 0.0
    timesteps: int = 2000        # T of the linear schedule
    ema_decay: float = 0.9999
    ema_warmup: bool = True      # decay min(ema_decay, (1 + n)/(10 + n)) after n updates
    sampler: str = "ddpm"        # the exported checkpoint's default sampler (translate --sampler overrides)
    sample_steps: int = 250      # its default number of sampling steps (translate --steps overrides)
    eta: float = 0.0             # DDIM η (0 = deterministic)
    val_steps: int = 20          # deterministic DDIM steps of validation samples

    def __post_init__(self) -> None:
        preset = unet_size(self.size)
        for name in ("channels", "res_blocks", "heads", "val_steps", "sample_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise InputError(f"--model-opt {name} must be a whole number ≥ 0, got {v!r}")
        if self.timesteps < 2:
            raise InputError(f"--model-opt timesteps must be ≥ 2, got {self.timesteps}")
        if not 0.0 < self.ema_decay < 1.0:
            raise InputError(f"--model-opt ema_decay must be in (0, 1), got {self.ema_decay}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"--model-opt dropout must be in [0, 1), got {self.dropout}")
        SamplerKind.parse(self.sampler)
        self.mult()
        width = self.channels or preset.channels
        if width % (self.heads or preset.heads):
            raise InputError(f"--model-opt channels={width} is not a multiple of the {self.heads or preset.heads} "
                             f"attention heads")
        for name in ("sample_steps", "val_steps"):
            if getattr(self, name) > self.timesteps or getattr(self, name) < 1:
                raise InputError(f"--model-opt {name} must be between 1 and timesteps ({self.timesteps})")

    def mult(self) -> tuple[int, ...]:
        """The channel multipliers (the option's, else the preset's)."""
        return channel_mult(self.channel_mult, self.size)


@torch.no_grad()
def ema_lerp(ema: nn.Module, net: nn.Module, rate: float) -> None:
    """ema ← rate·ema + (1 − rate)·θ for every parameter; buffers copied."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in net.parameters()], 1.0 - rate)
    for eb, nb in zip(ema.buffers(), net.buffers()):
        eb.copy_(nb)


@register_model("con-diffusion")
class ConDiffusion(TrainableModel):
    """ε-prediction U-Net on concat(x_t, condition) and its EMA copy (exported)."""

    task = Task.TRANSLATOR
    paired = True
    needs_labels = False
    Options = ConDiffusionOptions

    def unet_kwargs(self) -> dict[str, Any]:
        """Arguments of the registered "diffusion_unet" network (attention where maps are 16 and 8 pixels)."""
        o = self.opts
        return {"channels_x": self.io.out_channels, "cond_channels": self.io.in_channels,
                **unet_shape(o.size, o.mult(), self.io.tile_size, o.channels, o.res_blocks, o.heads),
                "dropout": float(o.dropout)}

    def build(self) -> None:
        """The noise predictor, its EMA copy (no gradients) and the schedule."""
        self.schedule = NoiseSchedule.linear(int(self.opts.timesteps))
        self.nets["eps"] = build_diffusion_unet(**self.unet_kwargs())
        ema = copy.deepcopy(self.nets["eps"])
        for p in ema.parameters():
            p.requires_grad_(False)
        self.nets["ema"] = ema
        self.ema_updates = 0

    def configure_optimizers(self, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
        """AdamW (β = 0.9, 0.999, no weight decay, as guided-diffusion) on the noise predictor; ``betas`` of the
        GAN trainer are not used."""
        params = list(self.nets["eps"].parameters())
        fused = all(p.device.type in ("cpu", "cuda") for p in params)
        self.optimizers = {"eps": torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0,
                                                    fused=fused or None)}
        return self.optimizers

    def ema_rate(self) -> float:
        """The EMA decay of the next update (warmed up when ``ema_warmup``)."""
        d = float(self.opts.ema_decay)
        n = self.ema_updates
        return min(d, (1.0 + n) / (10.0 + n)) if self.opts.ema_warmup else d

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema ← r·ema + (1 − r)·θ, parameters and buffers."""
        ema_lerp(self.nets["ema"], self.nets["eps"], self.ema_rate())
        self.ema_updates += 1

    def train_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, float]:
        """t ~ U{0..T−1}, ε ~ N(0, I), x_t = q(y, t, ε); MSE(ε_θ(x_t, t, c), ε) over valid pixels; EMA update."""
        net = self.nets["eps"]
        c, y = split_io(batch, self.io.direction)
        t = torch.randint(0, self.schedule.timesteps, (y.shape[0],), device=y.device)
        noise = torch.randn_like(y, dtype=torch.float32)
        x_t = self.schedule.q_sample(y.float(), t, noise)
        with tools.autocast():
            eps = net(x_t, t, c)
        loss = masked_mse(eps, noise, batch.get("valid"))
        tools.backward(loss)
        tools.step(self.optimizers["eps"])
        self.update_ema()
        return {"MSE": float(loss.detach())}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Samples of the EMA network for conditions ``x``: ``val_steps`` deterministic DDIM steps from a fixed
        seed (position-keyed noise, seed 0), so validation is repeatable."""
        ema = self.nets["ema"]
        was = ema.training
        ema.eval()
        try:
            plan = SamplingPlan.make(self.schedule, "ddim", int(self.opts.val_steps), 0.0)
            n, _, h, w = x.shape
            noise = PositionalNoise([0] * n, [(0, 0)] * n, self.io.out_channels, h, w, x.device)
            return sample(lambda xt, t, k, steps: ema(xt, t, x), plan, noise)
        finally:
            ema.train(was)

    def export(self) -> list[tuple[str, nn.Module, str, dict[str, Any]]]:
        """The EMA noise predictor as a registered "diffusion_unet" network."""
        return [("generator", self.nets["ema"], "diffusion_unet", self.unet_kwargs())]

    def export_meta(self) -> dict[str, Any]:
        """The translator's metadata plus the diffusion record inference needs (schedule, default sampler)."""
        meta = super().export_meta()
        o = self.opts
        meta["diffusion"] = {"prediction": "eps", "schedule": "linear", "timesteps": int(o.timesteps),
                             "sampler": SamplerKind.parse(o.sampler).value,
                             "steps": int(o.sample_steps or DEFAULT_STEPS[SamplerKind.parse(o.sampler).value]),
                             "eta": float(o.eta), "ema_decay": float(o.ema_decay)}
        return meta

    def extra_state(self) -> dict[str, Any]:
        """The number of EMA updates (the warm-up continues on resume)."""
        return {"ema_updates": int(self.ema_updates)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.ema_updates = int(state.get("ema_updates", 0))
