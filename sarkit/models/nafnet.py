"""NAFNet (Chen, Chu, Zhang and Sun, ECCV 2022, "Simple Baselines for Image Restoration"): a nonlinear-activation-
free U-shaped restoration network, registered as the network ``nafnet`` for exported checkpoints.

A NAF block on x (C channels) is, as the authors' ``NAFNet_arch.py``:

* ``y = x + β·Conv1×1(SCA(SG(DWConv3×3(Conv1×1(LN(x))))))``: LayerNorm2d, a 1×1 conv to 2C, a depth-wise 3×3 conv,
  SimpleGate ``SG(z) = z₁ ⊙ z₂`` (the two channel halves multiplied: C channels), simplified channel attention
  ``SCA(z) = z ⊙ Conv1×1(AvgPool(z))``, a 1×1 conv back to C;
* ``out = y + γ·Conv1×1(SG(Conv1×1(LN(y))))``: the feed-forward part (2C, gated back to C, then C);
* β and γ are per-channel scales initialised to zero (each block starts as the identity).

The network: a 3×3 intro conv to ``width`` channels, per encoder level its blocks then a 2×2 stride-2 conv doubling
the channels, the middle blocks, per decoder level a 1×1 conv to 2× channels and a pixel shuffle (×2, halving the
channels), the skip added, its blocks; a 3×3 ending conv. When input and output have the same channels the input is
added to the output (the paper's global residual); SAR → optical has not, so no global residual there. The output is
not squashed (no tanh, as the paper); decoding clips to the model range. Tile sides must be multiples of
2^(encoder levels).

Presets by name (``NAFNET_PRESETS``): ``paper`` is the paper's SIDD configuration (width 32, encoder blocks
2, 2, 4, 8, 12 middle blocks, decoder blocks 2, 2, 2, 2); ``gopro`` its deblurring one (width 64, 1, 1, 1, 28 /
1 / 1, 1, 1, 1); ``small`` and ``tiny`` are sarkit's for CPUs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from sarkit.errors import InputError
from sarkit.models.registry import register_network


@dataclass(frozen=True)
class NafnetPreset:
    """Width and block counts of a NAFNet (encoder blocks per level, middle blocks, decoder blocks per level)."""

    width: int
    enc_blocks: tuple[int, ...]
    middle_blocks: int
    dec_blocks: tuple[int, ...]


NAFNET_PRESETS: dict[str, NafnetPreset] = {
    "paper": NafnetPreset(32, (2, 2, 4, 8), 12, (2, 2, 2, 2)),
    "gopro": NafnetPreset(64, (1, 1, 1, 28), 1, (1, 1, 1, 1)),
    "small": NafnetPreset(16, (1, 1, 1, 1), 1, (1, 1, 1, 1)),
    "tiny": NafnetPreset(8, (1, 1), 1, (1, 1)),
}


def nafnet_preset(name: str) -> NafnetPreset:
    """The preset called ``name`` (``InputError`` naming the valid ones otherwise)."""
    try:
        return NAFNET_PRESETS[name]
    except KeyError:
        raise InputError(f"unknown NAFNet preset {name!r}; valid: {', '.join(NAFNET_PRESETS)}") from None


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels at every position: ``w·(x − μ_c)/√(σ²_c + ε) + b``, ε = 1e-6."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).square().mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """SimpleGate: the channel halves multiplied, ``z₁ ⊙ z₂`` (2C → C channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class SimplifiedChannelAttention(nn.Module):
    """Simplified channel attention: ``z ⊙ Conv1×1(global average pool of z)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv(self.pool(x))


class NAFBlock(nn.Module):
    """One NAF block (module docstring): gated depth-wise part and gated feed-forward part, scaled by β, γ."""

    def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw, ffn = channels * dw_expand, channels * ffn_expand
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = SimplifiedChannelAttention(dw // 2)
        self.conv3 = nn.Conv2d(dw // 2, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = nn.Conv2d(channels, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, channels, 1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv3(self.sca(self.gate(self.conv2(self.conv1(self.norm1(x))))))
        y = x + h * self.beta
        h = self.conv5(self.gate(self.conv4(self.norm2(y))))
        return y + h * self.gamma


class NAFNet(nn.Module):
    """The U-shaped NAFNet (module docstring); tile sides a multiple of 2^len(enc_blocks)."""

    def __init__(self, in_channels: int, out_channels: int, width: int, enc_blocks: Sequence[int],
                 middle_blocks: int, dec_blocks: Sequence[int]) -> None:
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f"NAFNet needs as many decoder as encoder levels, got {len(dec_blocks)} and "
                             f"{len(enc_blocks)}")
        self.residual = in_channels == out_channels
        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)
        self.ending = nn.Conv2d(width, out_channels, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        ch = width
        for n in enc_blocks:
            self.encoders.append(nn.Sequential(*[NAFBlock(ch) for _ in range(n)]))
            self.downs.append(nn.Conv2d(ch, 2 * ch, 2, 2))
            ch *= 2
        self.middle = nn.Sequential(*[NAFBlock(ch) for _ in range(middle_blocks)])
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(ch, 2 * ch, 1, bias=False), nn.PixelShuffle(2)))
            ch //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(ch) for _ in range(n)]))
        self.multiple = 2 ** len(enc_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.intro(x)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            h = enc(h)
            skips.append(h)
            h = down(h)
        h = self.middle(h)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            h = dec(up(h) + skip)
        out = self.ending(h)
        return out + x if self.residual else out


def nafnet_kwargs(in_channels: int, out_channels: int, preset: str) -> dict:
    """Arguments of the registered "nafnet" network for a named preset."""
    p = nafnet_preset(preset)
    return {"in_channels": in_channels, "out_channels": out_channels, "width": p.width,
            "enc_blocks": list(p.enc_blocks), "middle_blocks": p.middle_blocks, "dec_blocks": list(p.dec_blocks)}


@register_network("nafnet")
def build_nafnet(in_channels: int, out_channels: int, width: int = 32, enc_blocks: Sequence[int] = (2, 2, 4, 8),
                 middle_blocks: int = 12, dec_blocks: Sequence[int] = (2, 2, 2, 2)) -> nn.Module:
    return NAFNet(in_channels, out_channels, int(width), tuple(enc_blocks), int(middle_blocks), tuple(dec_blocks))


__all__ = ["LayerNorm2d", "NAFBlock", "NAFNet", "NAFNET_PRESETS", "NafnetPreset", "SimpleGate",
           "SimplifiedChannelAttention", "build_nafnet", "nafnet_kwargs", "nafnet_preset"]
