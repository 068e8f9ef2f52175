"""The diffusion U-Net, written once: an ADM-style noise predictor ε_θ(x_t, t, condition) (Dhariwal & Nichol 2021,
"guided-diffusion"), shared by the conditional diffusion translator and any later diffusion model.

Design (as guided-diffusion's ``UNetModel`` with ``use_scale_shift_norm``, ``resblock_updown`` off): the condition is
concatenated to x_t on the channel axis and enters a 3×3 convolution; then per level ``res_blocks`` residual blocks
(GroupNorm, SiLU, 3×3 conv; the timestep embedding as a scale and shift after the second GroupNorm; dropout; a
zero-initialised 3×3 conv; a 1×1 skip where the width changes), self-attention after the blocks of the levels whose
feature maps are ``attention`` pixels a side (16 and 8: for 256² tiles the last two levels), a stride-2 convolution
between levels; a middle of residual block, attention, residual block; the decoder mirrors it with
``res_blocks + 1`` blocks a level, each taking the matching encoder activation (skip), and nearest-neighbour
upsampling + 3×3 conv between levels; GroupNorm, SiLU and a zero-initialised 3×3 conv give ε. The timestep goes
through a sinusoidal embedding of ``channels`` dimensions and a 2-layer MLP (4·``channels``).

The forward pass is split for first-block caching (``sarkit.models.samplers.FirstBlockCache``): ``first`` runs the
input convolution and the first residual block (h0 → h1), ``rest`` everything after it up to the last decoder block
(h1 → h_L, both ``channels`` wide at full resolution), ``head`` the output layers; ``forward`` is
``head(rest(first(...)))``, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sarkit.errors import InputError
from sarkit.models.registry import register_network


@dataclass(frozen=True)
class UNetSize:
    """A diffusion U-Net preset: base width, residual blocks per level, width multipliers per level, heads."""

    channels: int
    res_blocks: int
    channel_mult: tuple[int, ...]
    heads: int = 4


#: Presets of ``--model-opt size=``: the paper's (Bai et al. 2023: 128 channels, 3 residual blocks, (1,1,2,2,4,4)
#: at 256²), and two for CPUs: narrower and with fewer blocks, deep enough that 256² tiles reach 16-pixel maps
#: (attention at 16 and 8 for ``small``, at 16 for ``tiny``).
UNET_SIZES: dict[str, UNetSize] = {
    "paper": UNetSize(128, 3, (1, 1, 2, 2, 4, 4), 4),
    "small": UNetSize(64, 2, (1, 1, 2, 2, 4, 4), 4),
    "tiny": UNetSize(32, 1, (1, 2, 2, 2, 2), 2),
}
#: Feature-map sides (pixels) that get self-attention (guided-diffusion's ``attention_resolutions="16,8"``).
ATTENTION_SIDES = (16, 8)


def attention_levels(tile: int, levels: int, sides: Sequence[int] = ATTENTION_SIDES) -> tuple[int, ...]:
    """Levels (0 = full resolution) whose feature maps are one of ``sides`` pixels for ``tile``-pixel inputs."""
    return tuple(k for k in range(levels) if tile % (2 ** k) == 0 and tile // (2 ** k) in sides)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (fewer where ``channels`` is not a multiple of 32)."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def zero_module(m: nn.Module) -> nn.Module:
    """``m`` with every parameter set to zero (output layers start as the zero map)."""
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (N, ``dim``) of timesteps ``t`` (N,): cos then sin of t·10000^(−i/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2)) if dim % 2 else emb


class ResBlock(nn.Module):
    """Residual block with a timestep scale-and-shift: x + conv(drop(SiLU(GN(h)·(1+s)+b))), h = conv(SiLU(GN(x)))."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * c_out))
        self.out_norm = group_norm(c_out)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout),
                                        zero_module(nn.Conv2d(c_out, c_out, 3, padding=1)))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
        h = self.out_layers(self.out_norm(h) * (1 + scale) + shift)
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions of a feature map (GN, qkv 1×1, softmax(QKᵀ/√d)V, zero proj)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise InputError(f"attention width {channels} is not a multiple of {heads} heads")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (N, heads, HW, d)
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(a.transpose(-1, -2).reshape(n, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 then 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Sequential):
    """Layers that take (x, emb): residual blocks use the embedding, the others ignore it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb)
        return x


class DiffusionUNet(nn.Module):
    """ε_θ(x_t, t, cond): the ADM U-Net of the module docstring on concat(x_t, cond).

    ``channels_x`` are x_t's (and ε's) channels, ``cond_channels`` the condition's; ``attn_levels`` the levels with
    self-attention (``attention_levels`` of the training tile). Tile sides must be multiples of 2^(levels − 1)."""

    def __init__(self, channels_x: int, cond_channels: int, channels: int = 128, res_blocks: int = 3,
                 channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4), attn_levels: Sequence[int] = (4, 5),
                 heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.channels_x, self.cond_channels = channels_x, cond_channels
        emb_dim = 4 * channels
        self.model_channels = channels
        self.time_embed = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(channels_x + cond_channels, channels, 3, padding=1)
        self.input_blocks = nn.ModuleList()
        skips, ch = [channels], channels
        for level, mult in enumerate(channel_mult):
            for _ in range(res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, mult * channels, emb_dim, dropout)]
                ch = mult * channels
                if level in attn_levels:
                    layers.append(AttentionBlock(ch, heads))
                self.input_blocks.append(Stage(*layers))
                skips.append(ch)
            if level + 1 < len(channel_mult):
                self.input_blocks.append(Stage(Downsample(ch)))
                skips.append(ch)
        self.middle = Stage(ResBlock(ch, ch, emb_dim, dropout), AttentionBlock(ch, heads),
                            ResBlock(ch, ch, emb_dim, dropout))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), mult * channels, emb_dim, dropout)]
                ch = mult * channels
                if level in attn_levels:
                    layers.append(AttentionBlock(ch, heads))
                if level and i == res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(Stage(*layers))
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, channels_x, 3, padding=1)))
        self.levels = len(channel_mult)

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """Timestep embedding (N, 4·channels) of timesteps ``t`` (N,)."""
        return self.time_embed(timestep_embedding(t, self.model_channels))

    def first(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first block: (h0 = conv_in(concat(x_t, cond)), h1 = first residual block(h0), embedding)."""
        emb = self.embed(t)
        h0 = self.conv_in(torch.cat([x_t, cond.to(x_t.dtype)], dim=1))
        return h0, self.input_blocks[0](h0, emb), emb

    def rest(self, h0: torch.Tensor, h1: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Every block after the first, up to the last decoder block: h1 → h_L (same shape as h1)."""
        hs = [h0, h1]
        h = h1
        for block in self.input_blocks[1:]:
            h = block(h, emb)
            hs.append(h)
        h = self.middle(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """The output layers: GN, SiLU, conv → ε."""
        return self.out(h)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h0, h1, emb = self.first(x_t, t, cond)
        return self.head(self.rest(h0, h1, emb))

    def activation_bytes_per_pixel(self) -> int:
        """Estimated inference activation bytes per input pixel (fp32): the kept encoder skips plus six working
        tensors of each level's width (block input, norms, conv outputs, the decoder's concatenation), area-weighted
        by 4^−level (a guard for batch sizes, not a budget)."""
        total = float(self.model_channels)  # h0
        ch_level: dict[int, int] = {}
        level = 0
        for block in self.input_blocks:
            if isinstance(block[0], Downsample):
                level += 1
                continue
            res = block[0]
            c = res.out_norm.num_channels
            ch_level[level] = max(ch_level.get(level, 0), c)
            total += c / 4 ** level
        for lv, c in ch_level.items():
            total += 6 * c / 4 ** lv  # working tensors: input, GN, conv outputs, the concatenation
        return int(4 * total) + 64


def unet_size(size: str) -> UNetSize:
    """The preset named ``size`` (``InputError`` naming the presets otherwise)."""
    if size not in UNET_SIZES:
        raise InputError(f"--model-opt size={size!r} is not a preset; choose one of {', '.join(UNET_SIZES)}")
    return UNET_SIZES[size]


@register_network("diffusion_unet")
def build_diffusion_unet(channels_x: int, cond_channels: int, channels: int = 128, res_blocks: int = 3,
                         channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4), attn_levels: Sequence[int] = (4, 5),
                         heads: int = 4, dropout: float = 0.0) -> nn.Module:
    """The registered builder of ``DiffusionUNet`` (exported checkpoints store these keyword arguments)."""
    return DiffusionUNet(channels_x, cond_channels, channels, res_blocks, tuple(channel_mult), tuple(attn_levels),
                         heads, dropout)
