"""regression: the structure branch of the regression + GAN-prior restoration paper (seed 003): a translator trained
with a pixel loss only, L = L1 + λ_LPIPS·LPIPS (λ_LPIPS = 0 by default: L1 alone).

Architectures (``arch``): ``nafnet`` (Chen et al. 2022, ``sarkit.models.nafnet``; the paper's choice, presets by
``preset``) or ``unet`` (the pix2pix U-Net of ``sarkit.models.blocks``, batch norm, no dropout: a regression output
is deterministic). The L1 term is averaged over valid pixels (``batch["valid"]``); LPIPS (v0.1 AlexNet, loaded
offline by ``sarkit.eval.lpips``) compares the RGB views in [0, 1] with the target's pixels put where the data is
invalid, so that nodata costs nothing. Adam with β = (0.9, 0.999) at ``--lr`` (the trainer's GAN betas are not
used). The output x_R is what ``fusion`` combines with a generative branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sarkit.errors import InputError
from sarkit.models.base import StepTools, Task, TrainableModel
from sarkit.models.blocks import adam, init_weights, unet_levels
from sarkit.models.nafnet import nafnet_kwargs, nafnet_preset
from sarkit.models.pix2pix import check_upsample_option, masked_l1, masked_mse, split_io
from sarkit.models.registry import build_network, register_model

#: Adam betas of the pixel-loss models (regression, fusion).
REGRESSION_BETAS = (0.9, 0.999)


@dataclass(frozen=True)
class RegressionOptions:
    """regression hyper-parameters: the network and the optional LPIPS term."""

    arch: str = "nafnet"          # nafnet | unet
    preset: str = "paper"         # NAFNet preset: paper, gopro, small, tiny
    ngf: int = 64                 # U-Net base width
    upsample: str = "resize"      # U-Net decoder: resize (bilinear ×2 + conv3×3, issue 17) | transpose
    pixel_loss: str = "l2"        # l2 (mean squared error: what PSNR measures; issue 17) | l1 (the paper's)
    lambda_lpips: float = 0.0     # weight of LPIPS (0 = the pixel loss only)
    lpips_weights: str = ""       # LPIPS heads file (else $SARKIT_LPIPS_WEIGHTS / the lpips package)
    lpips_backbone: str = ""      # AlexNet file (else $SARKIT_LPIPS_BACKBONE / the torch hub cache)

    def __post_init__(self) -> None:
        if self.arch not in ("nafnet", "unet"):
            raise InputError(f"--model-opt arch must be nafnet or unet, got {self.arch!r}")
        nafnet_preset(self.preset)
        check_upsample_option(self.upsample)
        if self.pixel_loss not in ("l1", "l2"):
            raise InputError(f"--model-opt pixel_loss must be l1 or l2, got {self.pixel_loss!r}")
        if not isinstance(self.ngf, int) or isinstance(self.ngf, bool) or self.ngf < 1:
            raise InputError(f"--model-opt ngf must be a whole number ≥ 1, got {self.ngf!r}")
        if not float(self.lambda_lpips) >= 0.0:
            raise InputError(f"--model-opt lambda_lpips must be ≥ 0, got {self.lambda_lpips}")


class FrozenHelper:
    """A frozen network kept outside ``nn.Module`` registration (not trained, saved nor exported), moved to the
    batch's device when first used there."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.device: torch.device | None = None

    def on(self, device: torch.device) -> nn.Module:
        """The module on ``device``."""
        if self.device != device:
            self.module.to(device)
            self.device = device
        return self.module


def load_lpips_helper(weights: str, backbone: str) -> tuple[FrozenHelper, dict[str, Any]]:
    """The frozen LPIPS network (``sarkit.eval.lpips.load_lpips``: WeightsNotFoundError naming --lpips-weights /
    $SARKIT_LPIPS_WEIGHTS or --lpips-backbone / $SARKIT_LPIPS_BACKBONE when absent) and its record."""
    from sarkit.eval.lpips import load_lpips

    net, files = load_lpips(weights or None, backbone or None)
    return FrozenHelper(net), {"heads": str(files.heads), "backbone": str(files.backbone)}


def perceptual_loss(lpips: FrozenHelper, out: torch.Tensor, target: torch.Tensor, bands: list[str],
                    valid: torch.Tensor | None) -> torch.Tensor:
    """Mean LPIPS of the RGB views of model-range ``out`` and ``target`` mapped to [0, 1]; invalid pixels of
    ``out`` replaced by the target's (no cost there), gradients through both."""
    from sarkit.eval.lpips import lpips_distance
    from sarkit.models.clip import rgb_view

    if valid is not None:
        out = torch.where(valid.unsqueeze(1), out, target)
    net = lpips.on(out.device)
    x01 = rgb_view((out.float() + 1.0) * 0.5, bands).clamp(0, 1)
    y01 = rgb_view((target.float() + 1.0) * 0.5, bands).clamp(0, 1)
    return lpips_distance(net, x01, y01).mean()


def eval_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` in eval mode (running statistics), its training mode restored afterwards."""
    was = net.training
    net.eval()
    try:
        return net(x)
    finally:
        net.train(was)


@register_model("regression")
class Regression(TrainableModel):
    """A pixel-loss translator (NAFNet or U-Net), trained on paired tiles."""

    task = Task.TRANSLATOR
    paired = True
    needs_labels = False
    Options = RegressionOptions

    def generator_spec(self) -> tuple[str, dict[str, Any]]:
        """(registered architecture, its arguments) of the network."""
        io, o = self.io, self.opts
        if o.arch == "nafnet":
            kw = nafnet_kwargs(io.in_channels, io.out_channels, o.preset)
            multiple = 2 ** len(kw["enc_blocks"])
            if io.tile_size % multiple:
                raise ValueError(f"NAFNet preset {o.preset} needs tiles a multiple of {multiple} px, got "
                                 f"{io.tile_size}")
            return "nafnet", kw
        return "unet", {"in_channels": io.in_channels, "out_channels": io.out_channels,
                        "num_downs": unet_levels(io.tile_size), "ngf": int(o.ngf), "norm": "batch",
                        "dropout": False, "upsample": str(o.upsample)}

    def build(self) -> None:
        """G: the network of ``arch``; the frozen LPIPS when λ_LPIPS > 0."""
        arch, kw = self.generator_spec()
        net = build_network(arch, kw)
        self.nets["G"] = init_weights(net) if arch == "unet" else net
        self.lpips: FrozenHelper | None = None
        if float(self.opts.lambda_lpips) > 0:
            self.lpips, rec = load_lpips_helper(self.opts.lpips_weights, self.opts.lpips_backbone)
            self.helper_records = {"lpips": rec}
        elif self.opts.lpips_weights or self.opts.lpips_backbone:
            raise InputError("--model-opt lpips_weights/lpips_backbone are used with lambda_lpips > 0 only")

    def configure_optimizers(self, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
        """Adam(lr, β = 0.9, 0.999) on G."""
        self.optimizers = {"G": adam(self.nets["G"].parameters(), lr, REGRESSION_BETAS)}
        return self.optimizers

    def train_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, float]:
        """One step on the pixel loss, L1 or L2 (+ λ_LPIPS·LPIPS); L1 is logged either way."""
        x, y = split_io(batch, self.io.direction)
        valid = batch.get("valid")
        with tools.autocast():
            out = self.nets["G"](x)
        l1 = masked_l1(out, y, valid)
        losses = {"L1": l1.detach()}
        loss = l1
        if self.opts.pixel_loss == "l2":
            loss = masked_mse(out, y, valid)
            losses["L2"] = loss.detach()
        if self.lpips is not None:
            lp = perceptual_loss(self.lpips, out, y, list(self.io.out_norm.get("bands", [])), valid)
            loss = loss + float(self.opts.lambda_lpips) * lp
            losses["LPIPS"] = lp.detach()
        tools.backward(loss)
        tools.step(self.optimizers["G"])
        values = torch.stack([v.float() for v in losses.values()]).tolist()
        return dict(zip(losses.keys(), values))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """G(x) in eval mode, as the exported network runs."""
        return eval_forward(self.nets["G"], x)

    def export(self) -> list[tuple[str, nn.Module, str, dict[str, Any]]]:
        """The network as its registered architecture."""
        arch, kw = self.generator_spec()
        return [("generator", self.nets["G"], arch, kw)]

    def export_meta(self) -> dict[str, Any]:
        """The translator's metadata plus the architecture choice."""
        return {**super().export_meta(), "regression": {"arch": self.opts.arch, "preset": self.opts.preset}}


__all__ = ["FrozenHelper", "REGRESSION_BETAS", "Regression", "RegressionOptions", "eval_forward",
           "load_lpips_helper", "perceptual_loss"]
