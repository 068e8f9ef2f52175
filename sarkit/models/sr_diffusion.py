"""sr-diffusion: two-stage diffusion super-resolution with structure and semantic guidance (after the VLM-guided
diffusion model for remote-sensing image super-resolution, seed paper 002).

Training pairs (the standard SR protocol): HR = an optical tile of the tile set (its bands and fixed ranges), LR
= its area downsampling by ``scale`` (the mean of each ``scale``×``scale`` block, ``F.avg_pool2d``); the network's
condition is the bicubic upsampling of LR back to the HR grid (SR3's). SAR tiles are not used.

* **Stage 1, guidance-free** (SR3): a conditional DDPM f_θ(x_t, t, bicubic(LR)) on the shared diffusion U-Net,
  sampled with ``steps1`` respaced steps (the paper: 500) into the base x₁; or, with ``stage1=regression``, a light
  residual CNN on bicubic(LR) trained with L1 (the paper's light variant uses SwinIR; this one is an EDSR-style
  residual network, smaller).
* **Stage 2, guided refinement** (the paper: 50 steps): a conditional DDPM on x₁ (``ControlledUNet``):
  (a) structure guidance, a ControlNet copy of the denoiser's encoder fed with x_t, x₁ and the edge map of x₁
  (Sobel magnitude of the band mean), joined to the denoiser through zero-initialised 1×1 convolutions;
  (b) semantic guidance, a caption of x₁ whose text embedding enters the denoiser through cross-attention. The
  paper captions x₁ with LLaVA-Next-8B; no such VLM runs offline here, so the caption is built by open_clip
  zero-shot classification of x₁ over a fixed land-cover vocabulary (``VOCABULARY``): the ``caption_classes``
  most probable classes, "a satellite image of farmland, a river and a town", or read from a caption file at
  inference. The context tokens are the CLIP text embeddings of the whole caption and of each of its phrases
  ("a satellite image of <phrase>"), ``1 + caption_classes`` tokens. ``semantic=off`` drops (b).
  With ``stage1=diffusion`` the stage-2 denoiser starts as a copy of stage 1's (the guidance paths at zero), so
  stage 2 starts as the unguided model.
* While training, stage 2 is conditioned on a stand-in for x₁ (sampling stage 1's T₁ steps every training step
  is out of reach): the regression output with ``stage1=regression``; with ``stage1=diffusion`` the EMA stage 1's
  one-step x̂₀ at t = T − 1 (``prediction=x0``), or the bicubic upsampling (``prediction=eps``). Both stages
  train together (sum of the two losses), with an EMA of the weights exported.
* **Targets** (``target``, ``residual_scale``, ``prediction``; stored in the checkpoint, the same at training and
  inference, ``SRTarget``): by default each diffusion stage models the residual around its base b, r = (HR − b)/0.5
  (SRDiff, Li et al. 2022; HR − bicubic has a standard deviation of 0.04–0.06 in model range on the generated
  tiles and 99.9 % of it within ±0.43, so /0.5 fills the unit range with < 0.1 % clipped), and its network predicts
  the clean r₀ (x₀-prediction) rather than ε: an untrained network (zero output layer) then returns b exactly,
  and few DDIM steps stay accurate where ε-prediction must divide its error by √ᾱ_T ≈ 0.006 at t = T − 1.
  ``target=image prediction=eps`` is the original SR3 parameterisation.
* First-block caching (``--cache-threshold`` τ) applies to both stages at inference (``sarkit.infer.diffusion``).

The exported generator is one ``SRDiffusionNet`` (both stages); translate writes its output ``scale`` times finer.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sarkit.errors import InputError
from sarkit.models.base import StepTools, Task, TrainableModel
from sarkit.models.con_diffusion import ema_lerp
from sarkit.models.diffusion_unet import (ControlledUNet, DiffusionUNet, Guidance, channel_mult, unet_shape,
                                          unet_size,
                                          zero_module)
from sarkit.models.pix2pix import masked_mse
from sarkit.models.registry import register_model, register_network
from sarkit.models.samplers import NoiseSchedule, PositionalNoise, SamplerKind, SamplingPlan, eps_from_x0, sample

#: The fixed land-cover vocabulary of the zero-shot caption (phrases as they appear in a caption).
VOCABULARY: tuple[str, ...] = ("farmland", "a forest", "grassland", "a river", "a lake", "the sea", "a town",
                               "a city", "roads", "an industrial area", "bare soil", "wetland", "clouds", "snow")
#: The caption's opening, also the prompt of every phrase ("a satellite image of a river").
CAPTION_PREFIX = "a satellite image of "
#: Hint channels the encoder copy sees besides x_t and x₁: the edge map.
HINT_CHANNELS = 1


# ------------------------------------------------------------------------------------------------ pieces
def area_downsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """LR = the mean of each ``scale``×``scale`` block of ``x`` (area downsampling)."""
    return F.avg_pool2d(x, scale) if scale > 1 else x


def bicubic_up(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling by ``scale`` (half-pixel centres), clipped to the model range [-1, 1]."""
    if scale == 1:
        return x
    return F.interpolate(x.float(), scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1.0, 1.0)


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """Edge hint (N, 1, H, W) in [-1, 1]: 2·min(1, |Sobel ∇(band mean)|/2) − 1 (replicate padding)."""
    g = x.float().mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device) / 4.0
    k = torch.stack([kx, kx.t()]).unsqueeze(1)
    d = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), k)
    mag = d.pow(2).sum(1, keepdim=True).sqrt()
    return 2.0 * (mag / 2.0).clamp(max=1.0) - 1.0


def caption_of(phrases: Sequence[str]) -> str:
    """"a satellite image of A, B and C" from the phrases A, B, C."""
    p = list(phrases)
    body = p[0] if len(p) == 1 else ", ".join(p[:-1]) + " and " + p[-1]
    return CAPTION_PREFIX + body


def caption_phrases(caption: str) -> list[str]:
    """The phrases of a caption: the text after ``CAPTION_PREFIX`` (when it starts so) split at commas and " and "."""
    body = caption.strip().rstrip(".")
    if body.lower().startswith(CAPTION_PREFIX):
        body = body[len(CAPTION_PREFIX):]
    parts = [q.strip() for p in body.split(",") for q in p.split(" and ")]
    return [p for p in parts if p]


@dataclass(frozen=True)
class SRTarget:
    """What a diffusion stage models around its base b (bicubic(LR) for stage 1, x₁ for stage 2) and what its
    network predicts. ``kind`` residual: the stage diffuses r = (HR − b)/``scale`` and returns b + ``scale``·r
    (SRDiff's residual; an untrained network, whose zero-initialised output predicts r̂₀ = 0, returns b); image: it
    diffuses HR itself (SR3's). ``prediction`` x0: the network predicts the clean r₀ (or HR), turned into the ε the
    samplers take; eps: it predicts ε."""

    kind: str = "image"
    scale: float = 1.0
    prediction: str = "eps"

    def encode(self, hr: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The diffused x₀: (HR − b)/scale (residual) or HR (image)."""
        return (hr - base.to(hr.dtype)) / self.scale if self.kind == "residual" else hr

    def decode(self, x0: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """The SR image from a sampled x₀: b + scale·x₀ clipped to [-1, 1] (residual), or x₀ (image)."""
        return (base.float() + self.scale * x0.float()).clamp(-1.0, 1.0) if self.kind == "residual" else x0

    def loss_target(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network regresses: x₀ (x0) or ε (eps)."""
        return x0 if self.prediction == "x0" else noise

    def as_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, plan: SamplingPlan) -> torch.Tensor:
        """The ε of a network output at (x_t, t): itself (eps), else ``eps_from_x0`` of it (x0)."""
        if self.prediction == "eps":
            return out
        return eps_from_x0(x_t, out.float().clamp(-1.0, 1.0), plan.alphas_at(t))

    def record(self) -> dict[str, Any]:
        """The checkpoint's record (``sr`` meta)."""
        return {"target": self.kind, "residual_scale": float(self.scale), "prediction": self.prediction}

    @classmethod
    def from_record(cls, sr: dict[str, Any], prediction: str) -> "SRTarget":
        """From the ``sr`` meta (checkpoints without a target record: image, ε, as before)."""
        return cls(str(sr.get("target", "image")), float(sr.get("residual_scale", 1.0)), str(prediction))


class RegressionSR(nn.Module):
    """The light stage 1: bicubic(LR) + tail(blocks(head(bicubic(LR)))), blocks x + 0.1·conv(ReLU(conv(x))) (EDSR's
    residual scaling), the tail zero-initialised (it starts as bicubic)."""

    def __init__(self, channels: int, width: int = 32, blocks: int = 4) -> None:
        super().__init__()
        self.head = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                                  nn.Conv2d(width, width, 3, padding=1)) for _ in range(blocks))
        self.tail = zero_module(nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, up: torch.Tensor) -> torch.Tensor:
        h = self.head(up)
        for b in self.blocks:
            h = h + 0.1 * b(h)
        return (up + self.tail(h)).clamp(-1.0, 1.0)


class SRDiffusionNet(nn.Module):
    """Both stages of the exported generator: ``stage1`` (a ``DiffusionUNet`` on bicubic(LR), or ``RegressionSR``)
    and ``stage2`` (a ``ControlledUNet`` on x₁ with the edge hint and, when ``context_dim`` > 0, cross-attention)."""

    def __init__(self, channels: int, scale: int, stage1: str, unet: dict[str, Any], context_dim: int = 0,
                 regression: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.channels, self.scale, self.stage1_kind, self.context_dim = channels, scale, stage1, int(context_dim)
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in unet.items()}
        if stage1 == "diffusion":
            self.stage1: nn.Module = DiffusionUNet(channels, channels, **kw)
        else:
            self.stage1 = RegressionSR(channels, **(regression or {}))
        self.stage2 = ControlledUNet(channels, channels, HINT_CHANNELS, context_dim=int(context_dim), **kw)
        self.model_channels = self.stage2.model_channels
        if stage1 == "diffusion":
            self.copy_stage1_into_stage2()

    @torch.no_grad()
    def copy_stage1_into_stage2(self) -> None:
        """Stage 2's denoiser and its encoder copy start as stage 1's U-Net (cross-attention and zero convolutions
        stay at zero): stage 2 then predicts what the unguided stage 1 predicts on the same condition."""
        s2 = self.stage2
        res = s2.unet.load_state_dict(self.stage1.state_dict(), strict=False)
        assert not res.unexpected_keys and all(".cross." in k for k in res.missing_keys), res
        s2.control["input_blocks"].load_state_dict(s2.unet.input_blocks.state_dict())
        s2.control["middle"].load_state_dict(s2.unet.middle.state_dict())
        w = s2.control["conv_in"].weight
        w.zero_()
        w[:, :s2.unet.conv_in.in_channels].copy_(s2.unet.conv_in.weight)
        s2.control["conv_in"].bias.copy_(s2.unet.conv_in.bias)

    def activation_bytes_per_pixel(self) -> int:
        """The larger stage's estimate (they run one after the other)."""
        return int(self.stage2.activation_bytes_per_pixel())


@register_network("sr_diffusion")
def build_sr_diffusion(channels: int, scale: int, stage1: str, unet: dict[str, Any], context_dim: int = 0,
                       regression: dict[str, Any] | None = None) -> nn.Module:
    """The registered builder of ``SRDiffusionNet`` (exported checkpoints store these keyword arguments)."""
    return SRDiffusionNet(channels, scale, stage1, unet, context_dim, regression)


# ------------------------------------------------------------------------------------------------ semantic
class Captioner:
    """Zero-shot captions of model-range images and their context tokens, from a frozen open_clip model.

    ``captions``: per image, the ``classes`` vocabulary phrases of highest probability (softmax of 100·cosine of
    the image embedding with each "a satellite image of <phrase>" embedding), most probable first, as
    ``caption_of``. ``context``: per caption, the normalised text embeddings of the caption and of each phrase's
    prompt, (N, 1 + classes, D) (fewer phrases: the caption's embedding repeated)."""

    def __init__(self, clip: Any, bands: Sequence[str], vocabulary: Sequence[str] = VOCABULARY, classes: int = 3,
                 device: torch.device | str = "cpu") -> None:
        import open_clip

        from sarkit.models.clip import preprocess_stats

        self.model = clip.model.to(device).eval()
        self.tokenizer = open_clip.get_tokenizer(clip.name)
        self.bands = tuple(bands)
        self.vocabulary = tuple(vocabulary)
        self.classes = int(classes)
        self.device = torch.device(device)
        self.size, self.mean, self.std = preprocess_stats(self.model)
        self._cache: dict[str, torch.Tensor] = {}
        self.vocab_emb = self.embed_texts([CAPTION_PREFIX + v for v in self.vocabulary])

    def to(self, device: torch.device | str) -> "Captioner":
        """The captioner on ``device`` (the frozen model, the vocabulary and the cached embeddings moved once)."""
        dev = torch.device(device)
        if dev != self.device:
            self.model.to(dev)
            self.vocab_emb = self.vocab_emb.to(dev)
            self._cache = {k: v.to(dev) for k, v in self._cache.items()}
            self.device = dev
        return self

    @property
    def dim(self) -> int:
        return int(self.vocab_emb.shape[1])

    @property
    def tokens(self) -> int:
        return 1 + self.classes

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised CLIP text embeddings (len(texts), D), cached per text."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            e = self.model.encode_text(self.tokenizer(todo).to(self.device)).float()
            for t, v in zip(todo, F.normalize(e, dim=-1)):
                self._cache[t] = v
        return torch.stack([self._cache[t] for t in texts])

    @torch.no_grad()
    def captions(self, x: torch.Tensor) -> list[str]:
        """Zero-shot captions of (N, C, H, W) model-range images (class docstring)."""
        from sarkit.models.clip import clip_preprocess, rgb_view

        rgb01 = ((rgb_view(x.float(), self.bands) + 1.0) * 0.5).clamp(0.0, 1.0)
        img = F.normalize(self.model.encode_image(clip_preprocess(rgb01, self.size, self.mean, self.std)).float(),
                          dim=-1)
        probs = (100.0 * img @ self.vocab_emb.t()).softmax(-1)
        top = probs.topk(min(self.classes, len(self.vocabulary)), dim=-1).indices
        return [caption_of([self.vocabulary[int(i)] for i in row]) for row in top]

    def context(self, captions: Sequence[str]) -> torch.Tensor:
        """Context tokens (N, 1 + classes, D) of the captions (class docstring)."""
        rows = []
        for c in captions:
            texts = [c] + [CAPTION_PREFIX + p for p in caption_phrases(c)][:self.classes]
            texts += [c] * (self.tokens - len(texts))
            rows.append(self.embed_texts(texts))
        return torch.stack(rows)

    def record(self) -> dict[str, Any]:
        """What inference needs to caption alike: vocabulary, classes, token count and width."""
        return {"vocabulary": list(self.vocabulary), "classes": self.classes, "tokens": self.tokens,
                "dim": self.dim, "prefix": CAPTION_PREFIX}


def clip_model_record(model: str) -> dict[str, Any]:
    """How to find the CLIP architecture again at inference: its open_clip name, and its config when it came from
    a JSON file (registered under the file's stem)."""
    p = Path(model)
    if p.suffix == ".json" and p.is_file():
        return {"name": p.stem, "config": json.loads(p.read_text())}
    return {"name": model, "config": None}


# ------------------------------------------------------------------------------------------------ options
@dataclass(frozen=True)
class SRDiffusionOptions:
    """sr-diffusion hyper-parameters (the paper's step counts; CPU-sized U-Net presets)."""

    scale: int = 4                # ×2 or ×4 (also ``sarkit train --scale``)
    stage1: str = "diffusion"     # diffusion (SR3) | regression (the light variant)
    semantic: str = "on"          # on | off: the caption's cross-attention in stage 2
    size: str = "small"           # U-Net preset of both stages: paper, small, tiny
    channels: int = 0             # base width (0 = the preset's)
    res_blocks: int = 0           # residual blocks per level (0 = the preset's)
    channel_mult: str = ""        # width multipliers per level ("" = the preset's)
    heads: int = 0                # attention heads (0 = the preset's)
    timesteps: int = 2000         # T of the linear schedule (both stages)
    target: str = "residual"      # residual (SRDiff's r = (HR − base)/residual_scale) | image (SR3's HR)
    residual_scale: float = 0.5   # the fixed residual scale (model range; module docstring)
    prediction: str = "x0"        # x0 | eps: what the diffusion networks predict
    steps1: int = 500             # stage-1 sampling steps (the paper's T₁)
    sampler1: str = "ddpm"        # stage-1 sampler
    steps2: int = 50              # stage-2 sampling steps (the paper's T₂)
    sampler2: str = "ddim"        # stage-2 sampler
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    reg_width: int = 32           # regression stage 1: width and residual blocks
    reg_blocks: int = 4
    caption_classes: int = 3      # vocabulary phrases in a caption
    clip_model: str = "ViT-B-32"  # open_clip architecture (or a model config JSON)
    clip_pretrained: str = "laion2b_s34b_b79k"
    clip_weights: str = ""        # CLIP weights file ("" = $SARKIT_CLIP_WEIGHTS or the open_clip cache)
    val_steps: int = 10           # deterministic DDIM steps a stage for validation samples

    def __post_init__(self) -> None:
        if self.scale not in (2, 4):
            raise InputError(f"--scale must be 2 or 4, got {self.scale!r}")
        if self.stage1 not in ("diffusion", "regression"):
            raise InputError(f"--model-opt stage1 must be diffusion or regression, got {self.stage1!r}")
        if self.target not in ("residual", "image"):
            raise InputError(f"--model-opt target must be residual or image, got {self.target!r}")
        if self.prediction not in ("x0", "eps"):
            raise InputError(f"--model-opt prediction must be x0 or eps, got {self.prediction!r}")
        if isinstance(self.residual_scale, bool) or not isinstance(self.residual_scale, (int, float)) \
                or not 0.0 < float(self.residual_scale) <= 2.0:
            raise InputError(f"--model-opt residual_scale must be a number in (0, 2], got {self.residual_scale!r}")
        if self.semantic not in ("on", "off"):
            raise InputError(f"--model-opt semantic must be on or off, got {self.semantic!r}")
        unet_size(self.size)
        for name in ("channels", "res_blocks", "heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"--model-opt {name} must be a whole number ≥ 0, got {v!r}")
        for name in ("reg_width", "reg_blocks", "caption_classes", "val_steps", "steps1", "steps2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"--model-opt {name} must be a whole number ≥ 1, got {v!r}")
        if self.timesteps < 2:
            raise InputError(f"--model-opt timesteps must be ≥ 2, got {self.timesteps}")
        for name in ("steps1", "steps2", "val_steps"):
            if getattr(self, name) > self.timesteps:
                raise InputError(f"--model-opt {name} must be at most timesteps ({self.timesteps})")
        if not 0.0 < self.ema_decay < 1.0:
            raise InputError(f"--model-opt ema_decay must be in (0, 1), got {self.ema_decay}")
        SamplerKind.parse(self.sampler1)
        SamplerKind.parse(self.sampler2)
        self.mult()

    def sr_target(self) -> SRTarget:
        """The stages' ``SRTarget``."""
        return SRTarget(self.target, float(self.residual_scale) if self.target == "residual" else 1.0,
                        self.prediction)

    def mult(self) -> tuple[int, ...]:
        """The channel multipliers (the option's, else the preset's)."""
        return channel_mult(self.channel_mult, self.size)


# ------------------------------------------------------------------------------------------------ the model
def optical_side(io: Any) -> dict[str, Any]:
    """The optical normalisation of a translator's data (whichever side of the direction it is)."""
    for norm in (io.out_norm, io.in_norm):
        if norm and norm.get("modality") == "optical":
            return norm
    raise InputError("sr-diffusion trains on optical tiles; the tile set has none")


@register_model("sr-diffusion")
class SRDiffusion(TrainableModel):
    """Both stages trained together on (area-downsampled, HR) optical pairs; the EMA of both exported."""

    task = Task.SUPER_RESOLUTION
    paired = True
    needs_labels = False
    Options = SRDiffusionOptions

    def net_kwargs(self) -> dict[str, Any]:
        """Arguments of the registered "sr_diffusion" network for this data (HR tile = the training tile)."""
        o, tile = self.opts, self.io.tile_size
        if tile % o.scale:
            raise InputError(f"tile size {tile} must be a multiple of --scale {o.scale}")
        unet = unet_shape(o.size, o.mult(), tile, o.channels, o.res_blocks, o.heads)
        return {"channels": len(self.norm["bands"]), "scale": int(o.scale), "stage1": o.stage1, "unet": unet,
                "context_dim": self.captioner.dim if self.captioner is not None else 0,
                "regression": {"width": int(o.reg_width), "blocks": int(o.reg_blocks)}}

    def build(self) -> None:
        """Both stages (trained and EMA copies), the schedule and, with semantic guidance, the frozen CLIP."""
        self.norm = optical_side(self.io)
        o = self.opts
        self.captioner: Captioner | None = None
        if o.semantic == "on":
            import os

            from sarkit.models.clip import CLIP_WEIGHTS_ENV, load_open_clip

            clip = load_open_clip(o.clip_model, o.clip_pretrained, o.clip_weights or None)
            self.captioner = Captioner(clip, self.norm["bands"], VOCABULARY, int(o.caption_classes))
            self.helper_records = {"clip": {"model": o.clip_model, "pretrained": o.clip_pretrained,
                                            "weights": o.clip_weights or os.environ.get(CLIP_WEIGHTS_ENV) or None,
                                            "file": str(clip.path)}}
        self.schedule = NoiseSchedule.linear(int(o.timesteps))
        self.nets["sr"] = build_sr_diffusion(**self.net_kwargs())
        ema = copy.deepcopy(self.nets["sr"])
        for p in ema.parameters():
            p.requires_grad_(False)
        self.nets["ema"] = ema
        self.ema_updates = 0

    def configure_optimizers(self, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
        """AdamW (β = 0.9, 0.999, no weight decay, as SR3 / guided-diffusion) on both stages."""
        params = list(self.nets["sr"].parameters())
        self.optimizers = {"sr": torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)}
        return self.optimizers

    def ema_rate(self) -> float:
        """The EMA decay of the next update (warmed up as con-diffusion's when ``ema_warmup``)."""
        d, n = float(self.opts.ema_decay), self.ema_updates
        return min(d, (1.0 + n) / (10.0 + n)) if self.opts.ema_warmup else d

    def hr(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The HR tiles of a batch: its optical tiles."""
        return batch["optical"].float()

    def pair(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(bicubic(area-downsampled HR), HR, the valid mask where the whole LR block is valid)."""
        s = int(self.opts.scale)
        hr = self.hr(batch)
        up = bicubic_up(area_downsample(hr, s), s)
        valid = batch.get("valid")
        if valid is not None and s > 1:
            block = -F.max_pool2d(-valid.float().unsqueeze(1), s)  # a LR pixel is valid when its block is
            valid = block.repeat_interleave(s, 2).repeat_interleave(s, 3).squeeze(1) > 0.5
        return up, hr, valid

    def context(self, x1: torch.Tensor) -> torch.Tensor | None:
        """Stage 2's context tokens from the zero-shot captions of ``x1`` (None with ``semantic=off``)."""
        if self.captioner is None:
            return None
        cap = self.captioner.to(x1.device)
        return cap.context(cap.captions(x1))

    @torch.no_grad()
    def stage1_standin(self, up: torch.Tensor) -> torch.Tensor:
        """Stage 2's stand-in for x₁ with x₀-prediction: the EMA stage 1's one-step x̂₀ from pure noise at
        t = T − 1, decoded around ``up`` (what few-step sampling of stage 1 lands near; ``up`` itself at init)."""
        t = torch.full((up.shape[0],), self.schedule.timesteps - 1, dtype=torch.int64, device=up.device)
        x0 = self.nets["ema"].stage1(torch.randn_like(up), t, up).float().clamp(-1.0, 1.0)
        return self.opts.sr_target().decode(x0, up).to(up.dtype)

    def train_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, float]:
        """Stage 1: MSE(y, f_θ(x_t, t, bicubic(LR))) with x_t the diffused ``SRTarget.encode(HR, bicubic(LR))`` and
        y its x₀ or ε (``prediction``) (or L1(x₁, HR) for regression); stage 2: the same around x₁' with f_θ(x_t',
        t', Guidance(x₁', edges(x₁'), caption tokens of x₁')), x₁' the stand-in (module docstring); their sum."""
        net = self.nets["sr"]
        up, hr, valid = self.pair(batch)
        n = hr.shape[0]
        tg = self.opts.sr_target()
        losses: dict[str, torch.Tensor] = {}
        with tools.autocast():
            if self.opts.stage1 == "diffusion":
                t = torch.randint(0, self.schedule.timesteps, (n,), device=hr.device)
                noise = torch.randn_like(hr)
                x0 = tg.encode(hr, up)
                losses["MSE1"] = masked_mse(net.stage1(self.schedule.q_sample(x0, t, noise), t, up),
                                            tg.loss_target(x0, noise), valid)
                x1 = self.stage1_standin(up) if tg.prediction == "x0" else up
            else:
                x1 = net.stage1(up)
                err = (x1.float() - hr).abs()
                w = valid.float().unsqueeze(1) if valid is not None else torch.ones_like(err[:, :1])
                losses["L1_1"] = (err * w).sum() / (w.sum() * err.shape[1]).clamp_min(1.0)
                x1 = x1.detach()
            t2 = torch.randint(0, self.schedule.timesteps, (n,), device=hr.device)
            noise2 = torch.randn_like(hr)
            g = Guidance(x1, edge_map(x1), self.context(x1))
            x0_2 = tg.encode(hr, x1)
            losses["MSE2"] = masked_mse(net.stage2(self.schedule.q_sample(x0_2, t2, noise2), t2, g),
                                        tg.loss_target(x0_2, noise2), valid)
        total = sum(losses.values())
        tools.backward(total)
        tools.step(self.optimizers["sr"])
        ema_lerp(self.nets["ema"], net, self.ema_rate())
        self.ema_updates += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def validation_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(bicubic(area-downsampled HR), HR): the input shown on the HR grid, what ``predict`` takes."""
        up, hr, _ = self.pair(batch)
        return up, hr

    @torch.no_grad()
    def predict(self, up: torch.Tensor) -> torch.Tensor:
        """SR of the bicubic upsampling ``up`` with the EMA networks: ``val_steps`` deterministic DDIM steps a
        diffusion stage, noise keyed by pixel from seed 0 (repeatable validation)."""
        ema = self.nets["ema"]
        was = ema.training
        ema.eval()
        try:
            plan = SamplingPlan.make(self.schedule, "ddim", int(self.opts.val_steps))
            return sr_sample(ema, up.float(), plan, plan, self.context, target=self.opts.sr_target())
        finally:
            ema.train(was)

    def export(self) -> list[tuple[str, nn.Module, str, dict[str, Any]]]:
        """Both EMA stages as one registered "sr_diffusion" network."""
        return [("generator", self.nets["ema"], "sr_diffusion", self.net_kwargs())]

    def export_meta(self) -> dict[str, Any]:
        """In and out: the optical normalisation; the LR tile; the diffusion record (stage 2's sampler) and the
        SR record (scale, stage 1, its sampler, the caption rule and the CLIP model it needs)."""
        o = self.opts
        meta = {"model": self.name, "direction": "optical-sr", "in_norm": self.norm, "out_norm": self.norm,
                "tile_size": self.io.tile_size // int(o.scale)}
        if self.io.pixel_size is not None:
            meta["hr_pixel_size"] = self.io.pixel_size  # informative: SR runs on any input pixel size
        meta["diffusion"] = {"prediction": o.prediction, "schedule": "linear", "timesteps": int(o.timesteps),
                             "sampler": SamplerKind.parse(o.sampler2).value, "steps": int(o.steps2), "eta": 0.0,
                             "ema_decay": float(o.ema_decay)}
        sem = None
        if self.captioner is not None:
            sem = {**self.captioner.record(), "clip_model": clip_model_record(o.clip_model),
                   "clip_pretrained": o.clip_pretrained}
        meta["sr"] = {"scale": int(o.scale), "stage1": o.stage1, "sampler1": SamplerKind.parse(o.sampler1).value,
                      "steps1": int(o.steps1), "lr_protocol": "area", "semantic": sem, **o.sr_target().record()}
        return meta

    def extra_state(self) -> dict[str, Any]:
        return {"ema_updates": int(self.ema_updates)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.ema_updates = int(state.get("ema_updates", 0))


# ------------------------------------------------------------------------------------------------ sampling
def stage1_sample(net: SRDiffusionNet, up: torch.Tensor, plan: SamplingPlan, noise: Any = None, call: Any = None,
                  progress: Any = None, target: SRTarget = SRTarget()) -> torch.Tensor:
    """The base x₁ of stage 1 on ``up`` = bicubic(LR): ``plan``'s steps of the diffusion (``target`` around
    ``up``), or the regression network. ``noise``: the draws (default position-keyed from seed 0 at (0, 0));
    ``call``: wraps the network call (first-block caching), ``call(net, x_t, t, cond, k, n)``."""
    if not isinstance(net.stage1, DiffusionUNet):
        return net.stage1(up).float()
    n, c, h, w = up.shape
    if noise is None:
        noise = PositionalNoise([0] * n, [(0, 0)] * n, c, h, w, up.device)
    call = call or (lambda m, x_t, t, cond, k, steps: m(x_t, t, cond))
    x0 = sample(lambda x_t, t, k, steps: target.as_eps(call(net.stage1, x_t, t, up, k, steps), x_t, t, plan),
                plan, noise, progress)
    return target.decode(x0, up)


def sr_sample(net: SRDiffusionNet, up: torch.Tensor, plan1: SamplingPlan, plan2: SamplingPlan, context_fn: Any,
              noise1: Any = None, noise2: Any = None, eps1: Any = None, eps2: Any = None,
              progress: Any = None, target: SRTarget = SRTarget()) -> torch.Tensor:
    """x₁ = ``stage1_sample`` on ``up`` (``plan1``), then stage 2 on x₁ with its edge hint and ``context_fn(x₁)``
    (``plan2``'s steps, ``target`` around x₁). ``noise1``/``noise2``: the stages' draws (default: position-keyed
    from seed 0 and 1 at (0, 0)); ``eps1``/``eps2``: wrap a stage's network call (first-block caching):
    ``eps(net, x_t, t, cond, k, n)``; ``target``: the checkpoint's ``SRTarget`` (default: image, ε)."""
    n, c, h, w = up.shape
    if noise2 is None:
        noise2 = PositionalNoise([1] * n, [(0, 0)] * n, c, h, w, up.device)
    call2 = eps2 or (lambda m, x_t, t, cond, k, steps: m(x_t, t, cond))
    x1 = stage1_sample(net, up, plan1, noise1, eps1, progress, target)
    g = Guidance(x1, edge_map(x1), context_fn(x1))
    x0 = sample(lambda x_t, t, k, steps: target.as_eps(call2(net.stage2, x_t, t, g, k, steps), x_t, t, plan2),
                plan2, noise2, progress)
    return target.decode(x0, x1)


__all__ = ["Captioner", "RegressionSR", "SRDiffusion", "SRDiffusionNet", "SRDiffusionOptions", "SRTarget",
           "VOCABULARY", "area_downsample", "bicubic_up", "caption_of", "caption_phrases", "edge_map",
           "sr_sample", "stage1_sample"]
