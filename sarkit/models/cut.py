"""CUT, contrastive unpaired translation (Park et al. 2020): one generator, PatchNCE instead of a cycle.

Domain A is the input domain of ``io.direction``, B the other. As the authors' code by default: ResNet generator
(9 blocks, instance norm) and 70×70 PatchGAN (instance norm), both anti-aliased (stride-1 convolutions followed by
a binomial blur-and-subsample, and blur-upsampling before stride-1 convolutions in the decoder; ``antialias=false``
and ``antialias_up=false`` give the plain stride-2 variant, the reference's ``--no_antialias`` and
``--no_antialias_up``), least-squares GAN loss, PatchNCE on the generator layers ``NCE_LAYERS`` = 0, 4, 8, 12, 16 of
its own layer sequence (those inside the encoder for the chosen ``n_blocks``) with a 2-layer 256-d MLP head per
layer (``PatchSampler``), τ = 0.07, 256 sampled locations per layer, identity NCE (λ_NCE = 1 for both):

    L_G = λ_GAN·LSGAN(D(G(a))) + λ_NCE·½·(NCE(a → G(a)) + NCE(b → G(b)))

NCE(x → y) compares the encoder features E(y) (queries) with E(x) (keys) at the same sampled locations.

Channel counts differ between domains (SAR 2, RGB 3), but G's encoder only accepts A's channel count. Images of
domain B (the real b fed for the identity image, the generated G(a) and G(b) whose features are queries) are
therefore passed through the fixed linear ``channel_map`` of ``sarkit.models.blocks`` first (identity when the
counts agree, otherwise each channel = mean of the source channels). This mirrors the reference, which feeds
``G(fake_B, layers, encode_only)`` directly because its domains share a channel count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sarkit.models.base import StepTools, Task, TrainableModel, read_losses, set_requires_grad
from sarkit.models.blocks import (GANLoss, PatchGAN, PatchSampler, ResnetGenerator, adam, channel_map,
                                  init_weights, patch_nce_loss)
from sarkit.models.cyclegan import domains
from sarkit.models.pix2pix import check_upsample_option
from sarkit.models.registry import register_model


@dataclass
class CUTOptions:
    """CUT hyper-parameters (paper defaults)."""

    lambda_gan: float = 1.0       # weight of the adversarial term
    lambda_nce: float = 1.0       # weight of PatchNCE (and of the identity NCE)
    nce_idt: bool = True          # also NCE between real B and G(real B)
    nce_t: float = 0.07           # PatchNCE temperature τ
    num_patches: int = 256        # sampled locations per layer
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9
    antialias: bool = True        # blur-subsample in G's encoder and in D (the reference default)
    antialias_up: bool = True     # blur-upsample + conv in G's decoder instead of transposed convolutions
    upsample: str = ""            # decoder: "" = as antialias_up says (blur | transpose), or resize | transpose | blur

    def __post_init__(self) -> None:
        check_upsample_option(self.upsample, ("", "transpose", "resize", "blur"))

    def decoder_upsample(self) -> str:
        """The decoder's up-sampling: ``upsample`` when given, else blur (antialias_up) or transpose."""
        return self.upsample or ("blur" if self.antialias_up else "transpose")


@register_model("cut")
class CUT(TrainableModel):
    """Generator G (A→B), discriminator D (domain B) and PatchNCE heads F."""

    task = Task.TRANSLATOR
    paired = False
    needs_labels = False
    Options = CUTOptions

    def build(self) -> None:
        """Create G, D and F; a dummy encoder pass creates F's heads so state dicts are complete."""
        o, io = self.opts, self.io
        self.key_a, self.key_b = domains(io)
        self.ch_a, self.ch_b = io.in_channels, io.out_channels
        self.nets["G"] = init_weights(ResnetGenerator(self.ch_a, self.ch_b, o.ngf, o.n_blocks, "instance",
                                                      o.antialias, upsample=o.decoder_upsample()))
        self.nets["D"] = init_weights(PatchGAN(self.ch_b, o.ndf, 3, norm="instance", antialias=o.antialias))
        self.layers = self.nets["G"].encoder_layers()
        self.nets["F"] = PatchSampler(256)
        with torch.no_grad():
            feats = self.nets["G"](torch.zeros(1, self.ch_a, 32, 32), self.layers, encode_only=True)
            self.nets["F"](feats, 1)
        self.gan_loss = GANLoss("lsgan")

    def configure_optimizers(self, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
        """Adam for G, D and the MLP heads F (as in the reference; fused update kernel, call after the model is on
        its device)."""
        self.optimizers = {name: adam(self.nets[name].parameters(), lr, betas) for name in ("G", "D", "F")}
        return self.optimizers

    def nce_loss(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """PatchNCE(src → tgt) averaged over layers: queries from E(map(tgt)), keys from E(src) (src in A's
        channels), at the same sampled locations."""
        g, f = self.nets["G"], self.nets["F"]
        feat_q = g(channel_map(tgt, self.ch_a), self.layers, encode_only=True)
        feat_k = g(src, self.layers, encode_only=True)
        k_pool, ids = f(feat_k, self.opts.num_patches)
        q_pool, _ = f(feat_q, self.opts.num_patches, ids)
        n = src.shape[0]
        total = sum(patch_nce_loss(q, k, n, self.opts.nce_t) for q, k in zip(q_pool, k_pool))
        return total / len(self.layers)

    def train_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, float]:
        """Discriminator update, then generator + heads update (the reference order)."""
        o = self.opts
        real_a, real_b = batch[self.key_a], batch[self.key_b]
        n = real_a.shape[0]
        g, d = self.nets["G"], self.nets["D"]
        with tools.autocast():
            if o.nce_idt and o.lambda_nce > 0:
                fake = g(torch.cat([real_a, channel_map(real_b, self.ch_a)], 0))
                fake_b, idt_b = fake[:n], fake[n:]
            else:
                fake_b, idt_b = g(real_a), None

        set_requires_grad(d, True)
        with tools.autocast():
            loss_d = 0.5 * (self.gan_loss(d(fake_b.detach()), False) + self.gan_loss(d(real_b), True))
        tools.backward(loss_d)
        tools.step(self.optimizers["D"])

        set_requires_grad(d, False)
        with tools.autocast():
            loss_gan = o.lambda_gan * self.gan_loss(d(fake_b), True) if o.lambda_gan > 0 else fake_b.new_zeros(())
            nce = self.nce_loss(real_a, fake_b) if o.lambda_nce > 0 else fake_b.new_zeros(())
            nce_y = self.nce_loss(channel_map(real_b, self.ch_a), idt_b) if idt_b is not None else None
            nce_all = 0.5 * (nce + nce_y) if nce_y is not None else nce
            loss_g = loss_gan + o.lambda_nce * nce_all
        tools.backward(loss_g)
        tools.step(self.optimizers["G"])
        tools.step(self.optimizers["F"])
        set_requires_grad(d, True)
        logs = {"G": loss_g, "G_gan": loss_gan, "NCE": nce, "D": loss_d}
        if nce_y is not None:
            logs["NCE_Y"] = nce_y
        return read_losses(logs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """G(x)."""
        return self.nets["G"](x)

    def export(self) -> list[tuple[str, nn.Module, str, dict[str, Any]]]:
        """The generator as kind "generator", arch "resnet"."""
        kwargs = {"in_channels": self.ch_a, "out_channels": self.ch_b, "ngf": self.opts.ngf,
                  "n_blocks": self.opts.n_blocks, "norm": "instance", "antialias": self.opts.antialias,
                  "antialias_up": self.opts.antialias_up, "upsample": self.opts.decoder_upsample()}
        return [("generator", self.nets["G"], "resnet", kwargs)]
