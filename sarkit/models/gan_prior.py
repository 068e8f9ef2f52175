"""gan-prior: the realism branch of the restoration paper (seed 003, stage 1): a StyleGAN2 generative prior and an
inversion encoder, x_G = G(E(x_R)), trained in one run of two phases.

Phase 1 (the "pretrained generative prior", the first ``prior_fraction`` of the steps): the StyleGAN2-style G and D
of ``sarkit.models.stylegan2`` on the dataset's output-domain (optical) tiles, the logistic loss
(D: softplus(D(G(z))) + softplus(−D(x)); G: softplus(−D(G(z))), non-saturating), the R1 penalty γ/2·E‖∇_x D(x)‖²
with lazy regularisation (every ``r1_every`` steps, weighted by ``r1_every``; Adam's lr and β's scaled by
r/(r + 1) as the reference), style mixing with probability ``mixing``, optional path-length regularisation
(``pl_weight``, 0 = off: it doubles G's step on a CPU), Adam(``lr_prior`` = 0.002, β = (0, 0.99)).

Phase 2 (the inversion encoder, after BDInvert and pSp): E maps an image to G's 16×16 state (feature map and
skip image, BDInvert's f_16×16) and to the w vectors of the remaining layers (pSp's latent regression, offset by
the prior's mean w); x_R is the output of a frozen upstream translator run (``x_r_from``: a run directory or its
generator.safetensors, eval mode, no gradients) on each batch's input. Loss
L_E = L1 + λ_per·LPIPS + λ_adv·softplus(−D(x_G)), λ_per = 10, λ_adv = 0.3; E and G learn at 1e-4, D (logistic
loss + lazy R1) at 2.5e-5, Adam β = (0.9, 0.999). Noise inputs are the layers' fixed buffers in this phase and in
the export, so overlapping tiles of a scene get one deterministic mapping.

Exports: ``generator`` = the network E∘G (arch ``gan_prior_inversion``) from x_R to x_G, both in the output
domain's normalisation, with the upstream run's path and SHA-256 in its metadata; ``prior`` = G alone (arch
``stylegan2_generator``; ``sample_prior`` draws images from it). A phase-1-only run (``prior_fraction=1``, no
``x_r_from``) exports the prior only; phase 2 without ``x_r_from`` is refused.

The learning rates are these model options (the trainer's schedule, constant then linear decay over the second
half of the run, scales them); ``--lr`` is not used by this model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sarkit.errors import CheckpointError, InputError, WeightsNotFoundError
from sarkit.models.base import StepTools, Task, TrainableModel, set_requires_grad
from sarkit.models.blocks import adam
from sarkit.models.pix2pix import masked_l1, split_io
from sarkit.models.registry import register_model, register_network
from sarkit.models.stylegan2 import FEATURE_RES, DiscBlock, Discriminator, EqualConv2d, EqualLinear, Generator, \
    State16, check_resolution, feature_split, generator_kwargs, log2, preset

#: The paper's loss weights and learning rates of the encoder phase.
LAMBDA_PER, LAMBDA_ADV = 10.0, 0.3
LR_ENCODER, LR_D_ENCODER = 1e-4, 2.5e-5


@dataclass(frozen=True)
class GanPriorOptions:
    """gan-prior hyper-parameters (the paper's and StyleGAN2's defaults; ``size`` tiny or small for CPUs)."""

    size: str = "paper"            # StyleGAN2 preset (G, D and the encoder's widths): tiny, small, paper
    prior_fraction: float = 0.5    # share of the steps spent on phase 1 (the prior); 1 = a prior-only run
    x_r_from: str = ""             # upstream translator run (or its generator.safetensors) giving x_R
    lambda_l1: float = 1.0
    lambda_per: float = LAMBDA_PER
    lambda_adv: float = LAMBDA_ADV
    lr_prior: float = 0.002        # phase 1, G and D
    lr_encoder: float = LR_ENCODER  # phase 2, E and G
    lr_d_encoder: float = LR_D_ENCODER  # phase 2, D
    r1_gamma: float = 10.0
    r1_every: int = 16             # lazy R1: every r1_every D steps (1 = every step)
    pl_weight: float = 0.0         # path-length regularisation weight (StyleGAN2: 2; 0 = off)
    pl_every: int = 4
    mixing: float = 0.9            # style-mixing probability in phase 1
    lpips_weights: str = ""        # LPIPS heads file ("" = $SARKIT_LPIPS_WEIGHTS or the lpips package's)
    lpips_backbone: str = ""       # AlexNet file ("" = $SARKIT_LPIPS_BACKBONE or torchvision's cache)

    def __post_init__(self) -> None:
        preset(self.size)
        if not 0.0 < self.prior_fraction <= 1.0:
            raise InputError(f"--model-opt prior_fraction must be in (0, 1], got {self.prior_fraction}")
        if self.prior_fraction < 1.0 and not self.x_r_from:
            raise InputError("gan-prior phase 2 (the inversion encoder) needs x_R: pass --model-opt x_r_from=RUN "
                             "(a trained translator run), or --model-opt prior_fraction=1 to train the prior only")
        if self.prior_fraction == 1.0 and self.x_r_from:
            raise InputError("--model-opt prior_fraction=1 leaves no steps for the encoder that uses x_r_from; "
                             "lower prior_fraction or drop x_r_from")
        for name in ("lambda_l1", "lambda_per", "lambda_adv", "r1_gamma", "pl_weight"):
            if not getattr(self, name) >= 0:
                raise InputError(f"--model-opt {name} must be ≥ 0, got {getattr(self, name)}")
        for name in ("lr_prior", "lr_encoder", "lr_d_encoder"):
            if not getattr(self, name) > 0:
                raise InputError(f"--model-opt {name} must be > 0, got {getattr(self, name)}")
        for name in ("r1_every", "pl_every"):
            if getattr(self, name) < 1:
                raise InputError(f"--model-opt {name} must be ≥ 1, got {getattr(self, name)}")
        if not 0.0 <= self.mixing <= 1.0:
            raise InputError(f"--model-opt mixing must be in [0, 1], got {self.mixing}")


# ------------------------------------------------------------------------------------------ losses

def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator logistic loss: mean softplus(D(fake)) + mean softplus(−D(real))."""
    return F.softplus(fake_logits.float()).mean() + F.softplus(-real_logits.float()).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: mean softplus(−D(fake))."""
    return F.softplus(-fake_logits.float()).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 = mean over the batch of ‖∇_x D(x)‖² (``real`` requires grad, ``real_logits`` = D(real)); the loss adds
    γ/2 · R1."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()


def path_length(img: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖J_wᵀ y‖₂ for y ~ N(0, 1)/√(H·W): sqrt(mean over layers of Σ over w of the squared gradient)."""
    noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    return grad.square().sum(2).mean(1).sqrt()


# ------------------------------------------------------------------------------------------ networks

class InversionEncoder(nn.Module):
    """Image (N, C, R, R) → G's 16×16 state (feature, skip image) and the w's of the layers after it.

    fromRGB and residual blocks (the discriminator's) down to 16×16; two 3×3 heads give the feature map and the skip
    image; two more blocks to 4×4, a global mean and a fully connected layer give the w's, added to ``w_avg`` (the
    prior's mean w, copied when phase 2 starts).
    """

    def __init__(self, resolution: int, channels: int, size: str = "tiny") -> None:
        super().__init__()
        sz = preset(size)
        res = check_resolution(int(resolution))
        ch = sz.channels
        self.from_rgb = EqualConv2d(channels, ch(res), 1, activate=True)
        self.down = nn.Sequential(*[DiscBlock(ch(2 ** lv), ch(2 ** (lv - 1)))
                                    for lv in range(log2(res), log2(FEATURE_RES), -1)])
        self.feature = EqualConv2d(ch(FEATURE_RES), ch(FEATURE_RES), 3)
        self.image = EqualConv2d(ch(FEATURE_RES), channels, 3)
        self.w_down = nn.Sequential(DiscBlock(ch(16), ch(8)), DiscBlock(ch(8), ch(4)))
        self.n_ws = 2 * log2(res) - 2 - feature_split()
        self.w_dim = sz.w_dim
        self.w_head = EqualLinear(ch(4), self.n_ws * sz.w_dim)
        self.register_buffer("w_avg", torch.zeros(sz.w_dim))
        self.multiple = res // 4

    def forward(self, x: torch.Tensor) -> tuple[State16, torch.Tensor]:
        n, _, h, w = x.shape
        if h % self.multiple or w % self.multiple:
            raise InputError(f"the gan-prior encoder needs tile sides that are multiples of {self.multiple}, "
                             f"got {h}×{w}")
        f = self.down(self.from_rgb(x))
        state = State16(self.feature(f), self.image(f))
        g = self.w_down(f).mean(dim=(2, 3))
        ws = self.w_head(g).view(n, self.n_ws, self.w_dim) + self.w_avg
        return state, ws


class Inversion(nn.Module):
    """x_R → x_G = G(E(x_R)): the encoder's 16×16 state and w's through the generator's remaining layers (fixed
    noise)."""

    def __init__(self, encoder: InversionEncoder, generator: Generator) -> None:
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.tile_multiple = encoder.multiple  # the engine's tile rule (its poolings: R/4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state, ws = self.encoder(x)
        return self.generator.synthesis.from_feature(state, ws, noise_mode="const")


@register_network("gan_prior_inversion")
def build_inversion(resolution: int, channels: int, size: str = "tiny") -> nn.Module:
    """E∘G of a gan-prior run (its exported generator)."""
    return Inversion(InversionEncoder(resolution, channels, size), Generator(resolution, channels, size))


class _Frozen:
    """A frozen network kept outside ``nn.Module`` registration (never trained, never saved, always in eval
    mode), moved to the batch's device when first used there."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.device: torch.device | None = None

    def on(self, device: torch.device) -> nn.Module:
        if self.device != device:
            self.net.to(device)
            self.device = device
        return self.net


def load_upstream(path: str, io_in: dict[str, Any], io_out: dict[str, Any]):
    """The upstream translator run giving x_R (``load_network(path, "generator")``), checked to map this run's
    input normalisation to its output normalisation; ``CheckpointError`` otherwise."""
    from sarkit.infer.engine import same_model_range
    from sarkit.models.checkpoint import load_network
    from sarkit.raster.norm import Normalization

    net = load_network(path, "generator")
    meta = net.meta
    if "diffusion" in meta:
        raise CheckpointError(f"x_r_from {path} is a diffusion model; gan-prior needs a one-pass translator "
                              f"(regression, pix2pix, CycleGAN, CUT) as the source of x_R")
    for key, want in (("in_norm", io_in), ("out_norm", io_out)):
        if key not in meta or not same_model_range(Normalization.from_dict(meta[key]), Normalization.from_dict(want)):
            got = Normalization.from_dict(meta[key]).bands if key in meta else "none"
            raise CheckpointError(f"x_r_from {path} has {key} bands {got}, not this run's "
                                  f"{Normalization.from_dict(want).bands} with the same ranges; train the "
                                  f"upstream run on these tiles")
    return net


def rgb01(x: torch.Tensor, bands: list[str]) -> torch.Tensor:
    """Model-range images → their RGB view in [0, 1] (LPIPS input): rgb((x + 1)/2)."""
    from sarkit.models.clip import rgb_view

    return rgb_view((x.float() + 1.0) * 0.5, bands)


# ------------------------------------------------------------------------------------------ the model

@register_model("gan-prior")
class GanPrior(TrainableModel):
    """StyleGAN2 prior (phase 1) and its inversion encoder on a frozen upstream translator's output (phase 2)."""

    task = Task.TRANSLATOR
    paired = True
    needs_labels = False
    standalone = False  # built on the x_r_from run
    Options = GanPriorOptions

    def net_kwargs(self) -> dict[str, Any]:
        """Arguments of the registered "gan_prior_inversion" network."""
        return {"resolution": self.io.tile_size, "channels": self.io.out_channels, "size": self.opts.size}

    def build(self) -> None:
        """G, D and E; the frozen upstream translator (x_R) and LPIPS when phase 2 is planned."""
        o = self.opts
        res = check_resolution(self.io.tile_size)
        self.nets["G"] = Generator(res, self.io.out_channels, o.size)
        self.nets["D"] = Discriminator(res, self.io.out_channels, o.size)
        self.nets["E"] = InversionEncoder(res, self.io.out_channels, o.size)
        self._upstream: _Frozen | None = None
        self._lpips: _Frozen | None = None
        self.upstream_record: dict[str, Any] | None = None
        self.last_r1 = 0.0
        self.register_buffer("pl_mean", torch.zeros(()), persistent=False)
        if not o.x_r_from:
            return
        up = load_upstream(o.x_r_from, self.io.in_norm, self.io.out_norm)
        self._upstream = _Frozen(up.module)
        self.upstream_record = {"path": str(up.path.resolve()), "sha256": up.sha256,
                                "model": up.meta.get("model"), "step": up.meta.get("step")}
        self.helper_records["x_r"] = dict(self.upstream_record)
        if o.lambda_per > 0:
            from sarkit.eval.lpips import load_lpips

            try:
                net, files = load_lpips(o.lpips_weights or None, o.lpips_backbone or None)
            except WeightsNotFoundError as exc:
                raise WeightsNotFoundError(f"gan-prior's LPIPS term: {exc}; for sarkit train that is --model-opt "
                                           f"lpips_weights=PATH / lpips_backbone=PATH (or lambda_per=0 to drop "
                                           f"the term)") from None
            self._lpips = _Frozen(net)
            self.helper_records["lpips"] = {"heads": str(files.heads), "backbone": str(files.backbone)}

    # -- phases ---------------------------------------------------------------------------------------
    def prior_steps(self) -> int:
        """Steps of phase 1: round(prior_fraction · total), at least 1, all of them for a prior-only run."""
        total = self.total_steps
        if self.opts.prior_fraction >= 1.0:
            return total
        return min(max(round(self.opts.prior_fraction * total), 1), max(total - 1, 1))

    def phase(self) -> int:
        """1 while the prior trains (and before the trainer said the total), then 2."""
        return 2 if self.total_steps and self.step >= self.prior_steps() else 1

    # -- optimizers -----------------------------------------------------------------------------------
    def configure_optimizers(self, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
        """Adam per network and phase at the model's own rates (``lr_scale`` = own / trainer lr; the trainer's
        ``lr`` and ``betas`` are not used). Lazily regularised networks get lr·c and β^c, c = r/(r + 1)."""
        o = self.opts
        c_d = o.r1_every / (o.r1_every + 1)
        c_g = o.pl_every / (o.pl_every + 1) if o.pl_weight > 0 else 1.0

        def make(params: Any, own: float, b: tuple[float, float]) -> torch.optim.Optimizer:
            opt = adam(params, own, b)
            for g in opt.param_groups:
                g["lr_scale"] = own / lr
            return opt

        self.optimizers = {
            "G": make(self.nets["G"].parameters(), o.lr_prior * c_g, (0.0, 0.99 ** c_g)),
            "D": make(self.nets["D"].parameters(), o.lr_prior * c_d, (0.0, 0.99 ** c_d)),
        }
        if self._upstream is not None:
            self.optimizers.update({
                "E": make(self.nets["E"].parameters(), o.lr_encoder, (0.9, 0.999)),
                "G_inv": make(self.nets["G"].synthesis.parameters(), o.lr_encoder, (0.9, 0.999)),
                "D_inv": make(self.nets["D"].parameters(), o.lr_d_encoder * c_d, (0.9, 0.999 ** c_d)),
            })
        return self.optimizers

    # -- training -------------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, float]:
        """One step of the current phase."""
        out = self._prior_step(batch, tools) if self.phase() == 1 else self._encoder_step(batch, tools)
        values = torch.stack([v.detach().float() if torch.is_tensor(v) else torch.tensor(float(v))
                              for v in out.values()]).tolist()
        return dict(zip(out.keys(), values))

    def _d_step(self, real: torch.Tensor, fake: torch.Tensor, tools: StepTools, opt: str) -> dict[str, Any]:
        """D on real vs fake (logistic), + γ/2 · R1 · r1_every on real tiles every r1_every steps (lazy)."""
        D, o = self.nets["D"], self.opts
        set_requires_grad(D, True)
        lazy = o.r1_gamma > 0 and self.step % o.r1_every == 0
        real = real.detach().requires_grad_(lazy)
        with tools.autocast():
            real_logits = D(real)
            fake_logits = D(fake.detach())
        loss = d_logistic(real_logits, fake_logits)
        total = loss
        if lazy:
            r1 = r1_penalty(real_logits, real)
            total = total + 0.5 * o.r1_gamma * o.r1_every * r1
            self.last_r1 = r1.detach()
        tools.backward(total)
        tools.step(self.optimizers[opt])
        set_requires_grad(D, False)
        return {"D": loss.detach(), "D_R1": self.last_r1}

    def _latents(self, n: int, device: torch.device) -> torch.Tensor:
        """w's of n random z (style mixing from a random layer with probability ``mixing``), w_avg tracked."""
        G = self.nets["G"]
        z = torch.randn(n, G.size.z_dim, device=device)
        if self.opts.mixing > 0 and float(torch.rand(())) < self.opts.mixing:
            cutoff = int(torch.randint(1, G.num_ws, ()))
            return G.ws(z, torch.randn_like(z), cutoff, track=True)
        return G.ws(z, track=True)

    def _prior_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, Any]:
        """Phase 1: D step (logistic + lazy R1), then G step (non-saturating + lazy path length when on)."""
        G, D, o = self.nets["G"], self.nets["D"], self.opts
        real = split_io(batch, self.io.direction)[1]
        n = real.shape[0]
        with torch.no_grad(), tools.autocast():
            fake = G.synthesis(self._latents(n, real.device))
        out: dict[str, Any] = {"phase": 1.0, **self._d_step(real, fake, tools, "D")}
        ws = self._latents(n, real.device)
        pl_due = o.pl_weight > 0 and self.step % o.pl_every == 0
        with tools.autocast():
            fake = G.synthesis(ws)
            logits = D(fake)
        loss_g = g_nonsaturating(logits)
        total = loss_g
        if pl_due:
            lengths = path_length(fake.float(), ws)
            self.pl_mean.copy_(self.pl_mean.lerp(lengths.detach().mean(), 0.01))
            pl = (lengths - self.pl_mean).square().mean()
            total = total + o.pl_weight * o.pl_every * pl
            out["G_PL"] = pl.detach()
        tools.backward(total)
        tools.step(self.optimizers["G"])
        out["G"] = loss_g.detach()
        return out

    def x_r(self, x: torch.Tensor) -> torch.Tensor:
        """x_R: the frozen upstream translator on the batch's input (eval mode, no gradients)."""
        assert self._upstream is not None
        with torch.no_grad():
            return self._upstream.on(x.device)(x.float()).to(x.dtype)

    def inversion(self) -> Inversion:
        """E∘G over the trained networks (shared, not copied)."""
        return Inversion(self.nets["E"], self.nets["G"])

    def _encoder_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, Any]:
        """Phase 2: D step on y vs x_G, then E and G on L1 + λ_per·LPIPS + λ_adv·softplus(−D(x_G))."""
        if self._upstream is None:  # options refuse this; a guard for direct callers
            raise InputError("gan-prior phase 2 needs --model-opt x_r_from")
        o, D = self.opts, self.nets["D"]
        if self.step == self.prior_steps():
            self.nets["E"].w_avg.copy_(self.nets["G"].mapping.w_avg)
        x, y = split_io(batch, self.io.direction)
        valid = batch.get("valid")
        xr = self.x_r(x)
        inv = self.inversion()
        with torch.no_grad(), tools.autocast():
            fake = inv(xr)
        out: dict[str, Any] = {"phase": 2.0, **self._d_step(y, fake, tools, "D_inv")}
        with tools.autocast():
            fake = inv(xr)
            logits = D(fake)
        l1 = masked_l1(fake, y, valid)
        adv = g_nonsaturating(logits)
        total = o.lambda_l1 * l1 + o.lambda_adv * adv
        out.update({"E_L1": l1.detach(), "G": adv.detach()})
        if self._lpips is not None:
            from sarkit.eval.lpips import lpips_distance

            bands = list(self.io.out_norm.get("bands", []))
            per = lpips_distance(self._lpips.on(fake.device), rgb01(fake, bands), rgb01(y, bands)).mean()
            total = total + o.lambda_per * per
            out["E_LPIPS"] = per.detach()
        tools.backward(total)
        tools.step(self.optimizers["E"])
        tools.step(self.optimizers["G_inv"])
        return out

    # -- inference, validation, export ----------------------------------------------------------------
    def validation_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_R, target): x_G = E∘G(x_R) is compared with the target; a prior-only run inverts the target
        itself (its encoder is untrained: the figures mean nothing there)."""
        x, y = split_io(batch, self.io.direction)
        return (self.x_r(x) if self._upstream is not None else y), y

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x_G = E∘G(x) for x_R = x in the output domain's model range, in eval mode (fixed noise)."""
        inv = self.inversion()
        was = inv.training
        inv.eval()
        try:
            return inv(x)
        finally:
            inv.train(was)

    def export(self) -> list[tuple[str, nn.Module, str, dict[str, Any]]]:
        """E∘G as "generator" (when the run has an encoder phase) and G alone as "prior"."""
        nets = [("prior", self.nets["G"], "stylegan2_generator", generator_kwargs(self.nets["G"]))]
        if self._upstream is not None:
            nets.insert(0, ("generator", self.inversion(), "gan_prior_inversion", self.net_kwargs()))
        return nets

    def export_meta(self) -> dict[str, Any]:
        """The translator record with the output domain's norm on both sides (E∘G maps x_R to x_G), the
        upstream run (path, sha256) and the prior's sizes."""
        meta = super().export_meta()
        meta["in_norm"] = self.io.out_norm
        G = self.nets["G"]
        meta["gan_prior"] = {"size": self.opts.size, "z_dim": G.size.z_dim, "w_dim": G.size.w_dim,
                             "num_ws": G.num_ws, "prior_steps": self.prior_steps(), "phase": self.phase()}
        if self.upstream_record is not None:
            meta["x_r_from"] = dict(self.upstream_record)
        return meta

    def extra_state(self) -> dict[str, Any]:
        """The path-length running mean and the last R1 value (logged until the next lazy R1 step)."""
        return {"pl_mean": self.pl_mean.detach().cpu(), "last_r1": float(self.last_r1)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the path-length running mean and the last R1 value."""
        if "pl_mean" in state:
            self.pl_mean.copy_(state["pl_mean"])
        self.last_r1 = float(state.get("last_r1", 0.0))


@torch.no_grad()
def sample_prior(checkpoint: str | Path, n: int, seed: int = 0, truncation: float = 1.0,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """n images (N, C, R, R) in model range from the ``prior`` export of a gan-prior run (a RUN directory or its
    prior.safetensors): z ~ N(0, I) from ``seed``, w = w_avg + truncation·(w − w_avg), the layers' fixed noise."""
    from sarkit.models.checkpoint import load_network

    if n < 1:
        raise InputError(f"the number of samples must be ≥ 1, got {n}")
    net = load_network(checkpoint, "prior", device)
    G = net.module
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, G.size.z_dim, generator=g).to(device)
    return G(z, truncation=truncation, noise_mode="const").cpu()


__all__ = ["GanPrior", "GanPriorOptions", "Inversion", "InversionEncoder", "d_logistic", "g_nonsaturating",
           "r1_penalty", "path_length", "sample_prior", "load_upstream"]
