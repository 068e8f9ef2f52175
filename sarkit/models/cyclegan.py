"""CycleGAN (Zhu et al. 2017): unpaired translation with two generators, two discriminators and cycle consistency.

Domain A is the input domain of ``io.direction`` (SAR for "sar2opt"), B the other one. Networks as in the
reference: ResNet generators with 9 residual blocks (reflection padding, instance norm), 70×70 PatchGAN
discriminators with instance norm, least-squares GAN loss, image pools of 50 fakes, Adam(2e-4, β = (0.5, 0.999)).

Generator objective::

    L_G = L_GAN(G_AB) + L_GAN(G_BA) + λ_cyc·(|G_BA(G_AB(a)) − a|₁ + |G_AB(G_BA(b)) − b|₁)
          + λ_idt·λ_cyc·(|G_AB(map_BA(b)) − b|₁ + |G_BA(map_AB(a)) − a|₁)

The identity terms need an image of the *output* domain as generator input, but SAR has 2 channels and RGB 3.
They go through the fixed linear ``channel_map`` of ``sarkit.models.blocks``: identity when the channel counts
agree, otherwise every target channel is the mean of the source channels (RGB → grey level in VV and VH; VV/VH →
their mean in R, G and B). The identity loss therefore asks a generator to keep the brightness structure of an
image that is already in (a channel-mapped form of) its output domain, which is the reference's intent.

Only G_AB (the trained direction) is exported as the "generator"; both generators stay in ``nets`` (the
semantic variant ``cyclegan-sc`` uses both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sarkit.models.base import ModelIO, StepTools, Task, TrainableModel, read_losses, set_requires_grad
from sarkit.models.blocks import GANLoss, ImagePool, PatchGAN, ResnetGenerator, adam, channel_map, init_weights
from sarkit.models.pix2pix import check_upsample_option
from sarkit.models.registry import register_model


@dataclass
class CycleGANOptions:
    """CycleGAN hyper-parameters (paper defaults)."""

    lambda_cycle: float = 10.0      # weight of each cycle-consistency L1 term
    lambda_identity: float = 0.5    # identity weight, relative to lambda_cycle (as in the reference code)
    pool_size: int = 50             # image history per discriminator (0 = off)
    ngf: int = 64                   # generator base width
    ndf: int = 64                   # discriminator base width
    n_blocks: int = 9               # residual blocks per generator
    upsample: str = "transpose"     # decoder: transpose (the paper's) | resize (bilinear ×2 + conv3×3)

    def __post_init__(self) -> None:
        check_upsample_option(self.upsample)


def domains(io: ModelIO) -> tuple[str, str]:
    """Batch keys of domain A (the input of ``io.direction``) and domain B."""
    if io.direction == "sar2opt":
        return "sar", "optical"
    if io.direction == "opt2sar":
        return "optical", "sar"
    raise ValueError(f"unpaired translators need direction sar2opt or opt2sar, got {io.direction!r}")


@register_model("cyclegan")
class CycleGAN(TrainableModel):
    """Two ResNet generators (A→B, B→A), two PatchGANs, LSGAN + cycle + identity losses, image pools."""

    task = Task.TRANSLATOR
    paired = False
    needs_labels = False
    Options = CycleGANOptions

    # -- construction ---------------------------------------------------------------------------------
    def build(self) -> None:
        """Create G_AB, G_BA, D_A (judges domain A), D_B (judges domain B), the pools and the GAN loss."""
        o, io = self.opts, self.io
        self.key_a, self.key_b = domains(io)
        self.ch_a, self.ch_b = io.in_channels, io.out_channels
        self.nets["G_AB"] = init_weights(ResnetGenerator(self.ch_a, self.ch_b, o.ngf, o.n_blocks, "instance",
                                                           upsample=o.upsample))
        self.nets["G_BA"] = init_weights(ResnetGenerator(self.ch_b, self.ch_a, o.ngf, o.n_blocks, "instance",
                                                           upsample=o.upsample))
        self.nets["D_A"] = init_weights(PatchGAN(self.ch_a, o.ndf, 3, norm="instance"))
        self.nets["D_B"] = init_weights(PatchGAN(self.ch_b, o.ndf, 3, norm="instance"))
        self.pool_a = ImagePool(o.pool_size, seed=1)
        self.pool_b = ImagePool(o.pool_size, seed=2)
        self.gan_loss = GANLoss("lsgan")

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters updated by the generator optimizer."""
        return list(self.nets["G_AB"].parameters()) + list(self.nets["G_BA"].parameters())

    def configure_optimizers(self, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
        """Adam for both generators ("G") and both discriminators ("D") (fused update kernel; call after the model
        is on its device)."""
        d_params = list(self.nets["D_A"].parameters()) + list(self.nets["D_B"].parameters())
        self.optimizers = {"G": adam(self.generator_parameters(), lr, betas), "D": adam(d_params, lr, betas)}
        return self.optimizers

    # -- training -------------------------------------------------------------------------------------
    def split(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(real_A, real_B) of a batch."""
        return batch[self.key_a], batch[self.key_b]

    def forward_cycle(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Translations, reconstructions and (when weighted) identity images of both domains."""
        g_ab, g_ba = self.nets["G_AB"], self.nets["G_BA"]
        out = {"fake_b": g_ab(real_a), "fake_a": g_ba(real_b)}
        out["rec_a"] = g_ba(out["fake_b"])
        out["rec_b"] = g_ab(out["fake_a"])
        if self.opts.lambda_identity > 0:
            out["idt_b"] = g_ab(channel_map(real_b, self.ch_a))
            out["idt_a"] = g_ba(channel_map(real_a, self.ch_b))
        return out

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor,
                         out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted generator terms: gan = LSGAN(D_B(fake_B)) + LSGAN(D_A(fake_A)); cycle = λ_c·ΣL1(rec, real);
        idt = λ_i·λ_c·Σ L1(idt, real)."""
        o = self.opts
        losses = {
            "gan": self.gan_loss(self.nets["D_B"](out["fake_b"]), True)
            + self.gan_loss(self.nets["D_A"](out["fake_a"]), True),
            "cycle": o.lambda_cycle * (F.l1_loss(out["rec_a"].float(), real_a.float())
                                       + F.l1_loss(out["rec_b"].float(), real_b.float())),
        }
        if o.lambda_identity > 0:
            losses["idt"] = o.lambda_identity * o.lambda_cycle * (
                F.l1_loss(out["idt_b"].float(), real_b.float()) + F.l1_loss(out["idt_a"].float(), real_a.float()))
        return losses

    def discriminator_loss(self, net: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """½·(LSGAN(D(real), 1) + LSGAN(D(fake), 0))."""
        return 0.5 * (self.gan_loss(net(real), True) + self.gan_loss(net(fake.detach()), False))

    def train_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, float]:
        """Generator update (discriminators frozen), then discriminator update on pooled fakes."""
        real_a, real_b = self.split(batch)
        d_nets = [self.nets["D_A"], self.nets["D_B"]]
        set_requires_grad(d_nets, False)
        with tools.autocast():
            out = self.forward_cycle(real_a, real_b)
            terms = self.generator_losses(real_a, real_b, out)
        loss_g = sum(terms.values())
        tools.backward(loss_g)
        tools.step(self.optimizers["G"])

        set_requires_grad(d_nets, True)
        fake_a = self.pool_a.query(out["fake_a"])
        fake_b = self.pool_b.query(out["fake_b"])
        with tools.autocast():
            loss_d_a = self.discriminator_loss(self.nets["D_A"], real_a, fake_a)
            loss_d_b = self.discriminator_loss(self.nets["D_B"], real_b, fake_b)
        tools.backward(loss_d_a + loss_d_b)
        tools.step(self.optimizers["D"])
        logs = {f"G_{k}": v for k, v in terms.items()}
        logs.update(G=loss_g, D_A=loss_d_a, D_B=loss_d_b)
        return read_losses(logs)

    # -- inference / export ---------------------------------------------------------------------------
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """G_AB(x): translation in the trained direction."""
        return self.nets["G_AB"](x)

    def export(self) -> list[tuple[str, nn.Module, str, dict[str, Any]]]:
        """The A→B generator as kind "generator", arch "resnet"."""
        kwargs = {"in_channels": self.ch_a, "out_channels": self.ch_b, "ngf": self.opts.ngf,
                  "n_blocks": self.opts.n_blocks, "norm": "instance", "upsample": self.opts.upsample}
        return [("generator", self.nets["G_AB"], "resnet", kwargs)]

    def extra_state(self) -> dict[str, Any]:
        """Both image pools (images and RNG state)."""
        return {"pool_a": self.pool_a.state(), "pool_b": self.pool_b.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the image pools on the device of the generators."""
        device = next(self.nets["G_AB"].parameters()).device
        if "pool_a" in state:
            self.pool_a.load_state(state["pool_a"], device)
        if "pool_b" in state:
            self.pool_b.load_state(state["pool_b"], device)
