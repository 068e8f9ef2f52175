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

Two optional kinds of guidance (the VLM-guided diffusion SR paper's stage 2; off by default, so con-diffusion's
network and checkpoints are unchanged):

* **semantic** (``context_dim`` > 0): after every self-attention block a cross-attention block attends from the
  feature map to a sequence of text-embedding tokens (N, L, ``context_dim``) (Stable Diffusion's SpatialTransformer
  reduced to its cross-attention: GN, q 1×1, k/v linear maps of the tokens, softmax(QKᵀ/√d)V, zero-initialised
  1×1 projection, residual); without a context it is skipped.
* **structure** (``ControlledUNet``, ControlNet, Zhang et al. 2023): a trainable copy of the U-Net's encoder (input
  convolution, encoder blocks, middle) fed with x_t, the condition and a hint (an edge map), whose input convolution
  starts as the U-Net's on the shared channels and zero on the hint's; its activations are added to the U-Net's
  skip connections and middle output through zero-initialised 1×1 convolutions. Both start as the zero map, so a
  new ``ControlledUNet`` predicts exactly what its U-Net predicts unguided.

The forward pass is split for first-block caching (``sarkit.models.samplers.FirstBlockCache``): ``first`` runs the
input convolution and the first residual block (h0 → h1), ``rest`` everything after it up to the last decoder block
(h1 → h_L, both ``channels`` wide at full resolution), ``head`` the output layers; ``forward`` is
``head(rest(first(...)))``, bit for bit.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

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
    """Multi-head self-attention over all positions of a feature map (GN, qkv 1×1, softmax(QKᵀ/√d)V, zero proj),
    followed, when ``context_dim`` > 0, by cross-attention to context tokens (``cross``; skipped without a
    context). The cross-attention is a submodule so that the U-Net's other parameter names do not change."""

    def __init__(self, channels: int, heads: int, context_dim: int = 0) -> None:
        super().__init__()
        if channels % heads:
            raise InputError(f"attention width {channels} is not a multiple of {heads} heads")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))
        self.cross = CrossAttentionBlock(channels, heads, context_dim) if context_dim else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (N, heads, HW, d)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(-1, -2).reshape(n, c, h, w))
        return x if self.cross is None else self.cross(x, emb, context)


class CrossAttentionBlock(nn.Module):
    """Multi-head cross-attention from a feature map to context tokens: x + proj(softmax(Q Kᵀ/√d) V) with Q from
    GN(x) (1×1 conv), K and V linear maps of the tokens (N, L, D); zero-initialised ``proj``; x itself without a
    context."""

    def __init__(self, channels: int, heads: int, context_dim: int) -> None:
        super().__init__()
        if channels % heads:
            raise InputError(f"attention width {channels} is not a multiple of {heads} heads")
        self.heads = heads
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            return x
        n, c, h, w = x.shape
        d = c // self.heads
        q = self.q(self.norm(x)).reshape(n, self.heads, d, h * w).transpose(-1, -2)       # (N, heads, HW, d)
        kv = self.kv(context.to(x.dtype)).reshape(n, -1, 2, self.heads, d)              # (N, L, 2, heads, d)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)                 # (N, heads, L, d)
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
    """Layers that take (x, emb): residual blocks use the embedding, cross-attention the context, the others
    ignore both."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor,  # type: ignore[override]
                context: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb, context) if isinstance(layer, AttentionBlock) else layer(x, emb)
        return x


class DiffusionUNet(nn.Module):
    """ε_θ(x_t, t, cond): the ADM U-Net of the module docstring on concat(x_t, cond).

    ``channels_x`` are x_t's (and ε's) channels, ``cond_channels`` the condition's; ``attn_levels`` the levels with
    self-attention (``attention_levels`` of the training tile); ``context_dim`` > 0 adds cross-attention to
    context tokens of that width after each self-attention. Tile sides must be multiples of 2^(levels − 1)."""

    def __init__(self, channels_x: int, cond_channels: int, channels: int = 128, res_blocks: int = 3,
                 channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4), attn_levels: Sequence[int] = (4, 5),
                 heads: int = 4, dropout: float = 0.0, context_dim: int = 0) -> None:
        super().__init__()
        self.channels_x, self.cond_channels = channels_x, cond_channels
        self.context_dim = int(context_dim)

        def attend(ch: int) -> list[nn.Module]:
            """Self-attention, with cross-attention when there is a context."""
            return [AttentionBlock(ch, heads, context_dim)]

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
                    layers.extend(attend(ch))
                self.input_blocks.append(Stage(*layers))
                skips.append(ch)
            if level + 1 < len(channel_mult):
                self.input_blocks.append(Stage(Downsample(ch)))
                skips.append(ch)
        self.middle = Stage(ResBlock(ch, ch, emb_dim, dropout), *attend(ch), ResBlock(ch, ch, emb_dim, dropout))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), mult * channels, emb_dim, dropout)]
                ch = mult * channels
                if level in attn_levels:
                    layers.extend(attend(ch))
                if level and i == res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(Stage(*layers))
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, channels_x, 3, padding=1)))
        self.levels = len(channel_mult)

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """Timestep embedding (N, 4·channels) of timesteps ``t`` (N,)."""
        return self.time_embed(timestep_embedding(t, self.model_channels))

    def first(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, context: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first block: (h0 = conv_in(concat(x_t, cond)), h1 = first residual block(h0), embedding)."""
        emb = self.embed(t)
        h0 = self.conv_in(torch.cat([x_t, cond.to(x_t.dtype)], dim=1))
        return h0, self.input_blocks[0](h0, emb, context), emb

    def encode(self, h1: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None
               ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The encoder blocks after the first and the middle: (their outputs, the middle's output)."""
        hs, h = [], h1
        for block in self.input_blocks[1:]:
            h = block(h, emb, context)
            hs.append(h)
        return hs, self.middle(h, emb, context)

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], emb: torch.Tensor,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder blocks from the middle's output ``h``, each taking the last of ``skips`` (consumed)."""
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        return h

    def rest(self, h0: torch.Tensor, h1: torch.Tensor, emb: torch.Tensor,
             context: torch.Tensor | None = None) -> torch.Tensor:
        """Every block after the first, up to the last decoder block: h1 → h_L (same shape as h1)."""
        hs, h = self.encode(h1, emb, context)
        return self.decode(h, [h0, h1, *hs], emb, context)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """The output layers: GN, SiLU, conv → ε."""
        return self.out(h)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        h0, h1, emb = self.first(x_t, t, cond, context)
        return self.head(self.rest(h0, h1, emb, context))

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


class Guidance(NamedTuple):
    """What a ``ControlledUNet`` is conditioned on: the condition concatenated to x_t (N, C_c, H, W), the hint the
    encoder copy sees besides it (N, C_h, H, W), and the context tokens of cross-attention (N, L, D) or None."""

    cond: torch.Tensor
    hint: torch.Tensor
    context: torch.Tensor | None = None


@dataclass
class Carry:
    """What ``ControlledUNet.first`` hands to ``rest``: the timestep embedding, the context, the U-Net's own first
    block output and the encoder copy's; ``select`` takes a batch subset (first-block caching)."""

    emb: torch.Tensor
    context: torch.Tensor | None
    h1: torch.Tensor
    c1: torch.Tensor

    def select(self, idx: torch.Tensor) -> "Carry":
        """The carry of the tiles ``idx``."""
        return Carry(self.emb[idx], None if self.context is None else self.context[idx], self.h1[idx], self.c1[idx])


class ControlledUNet(nn.Module):
    """ε_θ(x_t, t, Guidance): a ``DiffusionUNet`` plus a ControlNet copy of its encoder (module docstring).

    ``control`` holds the copy: its input convolution over concat(x_t, cond, hint), the encoder blocks and the
    middle, initialised from the U-Net's (hint channels zero); ``zero_convs`` one zero-initialised 1×1 convolution
    per skip connection (h0, h1, each later encoder block) and one for the middle."""

    def __init__(self, channels_x: int, cond_channels: int, hint_channels: int, channels: int = 128,
                 res_blocks: int = 3, channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4),
                 attn_levels: Sequence[int] = (4, 5), heads: int = 4, dropout: float = 0.0,
                 context_dim: int = 0) -> None:
        super().__init__()
        self.unet = DiffusionUNet(channels_x, cond_channels, channels, res_blocks, channel_mult, attn_levels, heads,
                                  dropout, context_dim)
        self.model_channels = channels
        self.hint_channels = hint_channels
        base_in = self.unet.conv_in
        conv_in = nn.Conv2d(base_in.in_channels + hint_channels, channels, 3, padding=1)
        with torch.no_grad():
            conv_in.weight.zero_()
            conv_in.weight[:, :base_in.in_channels].copy_(base_in.weight)
            conv_in.bias.copy_(base_in.bias)
        self.control = nn.ModuleDict({"conv_in": conv_in, "input_blocks": copy.deepcopy(self.unet.input_blocks),
                                      "middle": copy.deepcopy(self.unet.middle)})
        widths = [channels] + [_width(b) for b in self.unet.input_blocks]
        self.zero_convs = nn.ModuleList(zero_module(nn.Conv2d(c, c, 1)) for c in widths)
        self.zero_middle = zero_module(nn.Conv2d(widths[-1], widths[-1], 1))

    def first(self, x_t: torch.Tensor, t: torch.Tensor, g: Guidance) -> tuple[torch.Tensor, torch.Tensor, Carry]:
        """The first blocks of the U-Net and of its copy; h0 and h1 are the guided skips (the U-Net's plus the
        copy's through the zero convolutions), the U-Net's own h1 travels in the carry."""
        u, ctrl = self.unet, self.control
        emb = u.embed(t)
        cond = g.cond.to(x_t.dtype)
        h0 = u.conv_in(torch.cat([x_t, cond], dim=1))
        h1 = u.input_blocks[0](h0, emb, g.context)
        c0 = ctrl["conv_in"](torch.cat([x_t, cond, g.hint.to(x_t.dtype)], dim=1))
        c1 = ctrl["input_blocks"][0](c0, emb, g.context)
        return h0 + self.zero_convs[0](c0), h1 + self.zero_convs[1](c1), Carry(emb, g.context, h1, c1)

    def rest(self, h0: torch.Tensor, h1: torch.Tensor, carry: Carry) -> torch.Tensor:
        """The U-Net's encoder from its own h1, the copy's from its h1, skips and middle joined, the decoder."""
        emb, ctx = carry.emb, carry.context
        hs, h = self.unet.encode(carry.h1, emb, ctx)
        c = carry.c1
        for k, block in enumerate(self.control["input_blocks"][1:]):
            c = block(c, emb, ctx)
            hs[k] = hs[k] + self.zero_convs[k + 2](c)
        h = h + self.zero_middle(self.control["middle"](c, emb, ctx))
        return self.unet.decode(h, [h0, h1, *hs], emb, ctx)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.unet.head(h)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, g: Guidance) -> torch.Tensor:
        h0, h1, carry = self.first(x_t, t, g)
        return self.head(self.rest(h0, h1, carry))

    def activation_bytes_per_pixel(self) -> int:
        """The U-Net's estimate plus the copy's kept activations (its encoder widths, area-weighted)."""
        return 2 * self.unet.activation_bytes_per_pixel()


def _width(stage: nn.Module) -> int:
    """Output channels of an encoder stage (a residual block's, or a down-sampling's)."""
    first = stage[0]
    return first.out_norm.num_channels if isinstance(first, ResBlock) else first.conv.out_channels


def unet_size(size: str) -> UNetSize:
    """The preset named ``size`` (``InputError`` naming the presets otherwise)."""
    if size not in UNET_SIZES:
        raise InputError(f"--model-opt size={size!r} is not a preset; choose one of {', '.join(UNET_SIZES)}")
    return UNET_SIZES[size]


@register_network("diffusion_unet")
def build_diffusion_unet(channels_x: int, cond_channels: int, channels: int = 128, res_blocks: int = 3,
                         channel_mult: Sequence[int] = (1, 1, 2, 2, 4, 4), attn_levels: Sequence[int] = (4, 5),
                         heads: int = 4, dropout: float = 0.0, context_dim: int = 0) -> nn.Module:
    """The registered builder of ``DiffusionUNet`` (exported checkpoints store these keyword arguments)."""
    return DiffusionUNet(channels_x, cond_channels, channels, res_blocks, tuple(channel_mult), tuple(attn_levels),
                         heads, dropout, context_dim)


def unet_shape(size: str, mult: Sequence[int], tile: int, channels: int = 0, res_blocks: int = 0,
               heads: int = 0) -> dict[str, Any]:
    """The shape arguments of a diffusion U-Net (channels, res_blocks, channel_mult, attn_levels, heads): preset
    ``size`` unless overridden (0 = the preset's), attention where maps are 16 and 8 pixels; ``InputError`` for a
    tile that is not a multiple of 2^(levels − 1)."""
    preset, levels = unet_size(size), len(mult)
    if tile % 2 ** (levels - 1):
        raise InputError(f"tile size {tile} is not a multiple of {2 ** (levels - 1)}, which the {levels}-level "
                         f"diffusion U-Net needs; use --model-opt size=tiny or other tiles")
    return {"channels": channels or preset.channels, "res_blocks": res_blocks or preset.res_blocks,
            "channel_mult": list(mult), "attn_levels": list(attention_levels(tile, levels)),
            "heads": heads or preset.heads}


def channel_mult(value: str, size: str) -> tuple[int, ...]:
    """The U-Net's channel multipliers from ``--model-opt channel_mult`` ("1,2,2,4"), else preset ``size``'s."""
    if not value:
        return unet_size(size).channel_mult
    try:
        m = tuple(int(v) for v in str(value).split(","))
    except ValueError:
        raise InputError(f"--model-opt channel_mult must be comma-separated whole numbers such as 1,2,2,4, "
                         f"got {value!r}") from None
    if not m or min(m) < 1:
        raise InputError(f"--model-opt channel_mult needs positive multipliers, got {value!r}")
    return m
