"""pix2pix (Isola et al. 2017): conditional GAN with a U-Net generator and a 70×70 PatchGAN on (input, output).

Objective: G* = arg min_G max_D  L_cGAN(G, D) + λ·L_L1(G), λ = 100, vanilla (BCE) GAN loss; D's loss is halved to
slow it down relative to G, as in the reference. Batch norm, dropout 0.5 in the three innermost decoder levels,
Adam(2e-4, β = (0.5, 0.999)). One default differs from the paper: the decoder up-samples by resize-convolution
(``upsample="resize"``: bilinear ×2 then a 3×3 convolution) instead of the 4×4 stride-2 transposed convolution,
which paints a checkerboard (measured on the real Texas pairs, docs/benchmarks.md, issue 17);
``--model-opt upsample=transpose`` is the paper's. The L1 term is averaged over valid pixels only (``batch["valid"]``: both SAR and
optical have data), so nodata borders filled with −1 do not teach the generator to paint −1.

Inference (``predict`` and the exported network) runs the generator in eval mode: running batch-norm statistics
and no dropout, so that overlapping tiles of a scene get the same mapping and stitch without seams (the paper kept
train-mode noise at test time; sarkit favours deterministic whole-scene output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sarkit.errors import InputError
from sarkit.models.base import StepTools, Task, TrainableModel, set_requires_grad
from sarkit.models.blocks import GANLoss, PatchGAN, adam, init_weights, unet_levels
from sarkit.models.registry import build_network, register_model


@dataclass
class Pix2PixOptions:
    """pix2pix hyper-parameters (the paper's, except the resize-convolution decoder)."""

    lambda_l1: float = 100.0
    ngf: int = 64
    ndf: int = 64
    gan_mode: str = "vanilla"
    n_layers_d: int = 3
    upsample: str = "resize"      # decoder: resize (bilinear ×2 + conv3×3; issue 17) | transpose (the paper's)

    def __post_init__(self) -> None:
        check_upsample_option(self.upsample)


def check_upsample_option(mode: str, allowed: tuple[str, ...] = ("transpose", "resize")) -> None:
    """InputError unless ``--model-opt upsample`` is one of ``allowed``."""
    if mode not in allowed:
        raise InputError(f"--model-opt upsample must be one of {', '.join(allowed)}, got {mode!r}")


def masked_mean(err: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of a per-pixel error map (N, C, H, W) over valid pixels (all channels); plain mean when ``valid`` is None."""
    if valid is None:
        return err.mean()
    w = valid.to(err.dtype).unsqueeze(1)
    denom = w.sum() * err.shape[1]
    return (err * w).sum() / denom.clamp_min(1.0)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean |pred − target| over valid pixels (all channels); plain mean when ``valid`` is None."""
    return masked_mean((pred.float() - target.float()).abs(), valid)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean (pred − target)² over valid pixels (all channels): the loss whose minimum is the best PSNR."""
    return masked_mean((pred.float() - target.float()).square(), valid)


def split_io(batch: dict[str, torch.Tensor], direction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, target) tensors of a paired batch for ``direction`` (sar2opt: SAR → optical)."""
    if direction == "opt2sar":
        return batch["optical"], batch["sar"]
    return batch["sar"], batch["optical"]


@register_model("pix2pix")
class Pix2Pix(TrainableModel):
    """U-Net generator + conditional PatchGAN, trained on paired tiles."""

    task = Task.TRANSLATOR
    paired = True
    needs_labels = False
    Options = Pix2PixOptions

    def generator_kwargs(self) -> dict[str, Any]:
        """Arguments of the registered "unet" network (depth from the tile size: 8 levels for 256²)."""
        return {"in_channels": self.io.in_channels, "out_channels": self.io.out_channels,
                "num_downs": unet_levels(self.io.tile_size), "ngf": int(self.opts.ngf), "norm": "batch",
                "dropout": True, "upsample": str(self.opts.upsample)}

    def build(self) -> None:
        """G: U-Net; D: 70×70 PatchGAN on concat(input, output)."""
        self.nets["G"] = init_weights(build_network("unet", self.generator_kwargs()))
        self.nets["D"] = init_weights(PatchGAN(self.io.in_channels + self.io.out_channels, int(self.opts.ndf),
                                               int(self.opts.n_layers_d), "batch"))
        self.gan_loss = GANLoss(self.opts.gan_mode)

    def configure_optimizers(self, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
        """Adam for G and for D (fused update kernel; call after the model is on its device)."""
        self.optimizers = {"G": adam(self.nets["G"].parameters(), lr, betas),
                           "D": adam(self.nets["D"].parameters(), lr, betas)}
        return self.optimizers

    def generator_extra_loss(self, fake: torch.Tensor, target: torch.Tensor,
                             batch: dict[str, torch.Tensor]) -> dict[str, tuple[float, torch.Tensor]]:
        """Further generator terms as name → (weight, loss) (none for pix2pix; pix2pix-clip adds L_CLIP)."""
        return {}

    def train_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, float]:
        """D step on (x, y) real vs (x, G(x)) fake, then G step on GAN + λ·L1 (+ extra terms)."""
        G, D = self.nets["G"], self.nets["D"]
        x, y = split_io(batch, self.io.direction)
        valid = batch.get("valid")
        with tools.autocast():
            fake = G(x)
        # Discriminator: ½·[BCE(D(x, G(x)), 0) + BCE(D(x, y), 1)]; G's graph is cut by detach (a view, no copy).
        set_requires_grad(D, True)
        with tools.autocast():
            pred_fake = D(torch.cat([x, fake.detach()], 1))
            pred_real = D(torch.cat([x, y], 1))
        loss_d_fake = self.gan_loss(pred_fake, False)
        loss_d_real = self.gan_loss(pred_real, True)
        loss_d = 0.5 * (loss_d_fake + loss_d_real)
        tools.backward(loss_d)
        tools.step(self.optimizers["D"])
        # Generator: BCE(D(x, G(x)), 1) + λ·L1 through the updated, frozen D.
        set_requires_grad(D, False)
        with tools.autocast():
            pred = D(torch.cat([x, fake], 1))
        loss_gan = self.gan_loss(pred, True)
        loss_l1 = masked_l1(fake, y, valid)
        extra = self.generator_extra_loss(fake, y, batch)
        loss_g = loss_gan + float(self.opts.lambda_l1) * loss_l1
        for weight, term in extra.values():
            loss_g = loss_g + weight * term
        tools.backward(loss_g)
        tools.step(self.optimizers["G"])
        out = {"G_GAN": loss_gan.detach(), "G_L1": loss_l1.detach(), "D_real": loss_d_real.detach(),
               "D_fake": loss_d_fake.detach()}
        out.update({k: term.detach() for k, (_, term) in extra.items()})
        values = torch.stack([v.float() for v in out.values()]).tolist()  # one device sync for all losses
        return dict(zip(out.keys(), values))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """G(x) in eval mode (running batch-norm statistics, no dropout), as the exported network runs."""
        G = self.nets["G"]
        was = G.training
        G.eval()
        try:
            return G(x)
        finally:
            G.train(was)

    def export(self) -> list[tuple[str, nn.Module, str, dict[str, Any]]]:
        """The generator as a registered "unet" network."""
        return [("generator", self.nets["G"], "unet", self.generator_kwargs())]
