"""A StyleGAN2-style generator and discriminator (Karras et al. 2020, "Analyzing and improving the image quality of
StyleGAN"), after NVlabs/stylegan2-ada-pytorch ``training/networks.py`` and rosinality/stylegan2-pytorch ``model.py``.

Generator G(z) = synthesis(mapping(z)):

* mapping: z → pixel norm ``z / sqrt(mean(z²) + 1e-8)`` → ``mapping_layers`` fully connected layers (equalised
  learning rate with lr multiplier 0.01, leaky ReLU 0.2 × √2) → w; ``w_avg`` tracks the mean w (decay 0.995) for
  truncation and as the inversion encoder's offset;
* synthesis: a learned constant 4×4 input, then per resolution 8 … R one block of two modulated 3×3 convolutions
  (the first upsamples ×2) and a toRGB (modulated 1×1, no demodulation); the skip architecture adds every
  block's RGB to the upsampled RGB of the blocks below;
* modulated convolution: style s = A(w) (an affine layer, bias 1), w'_{oikl} = s_i · w_{oikl},
  demodulation w''_{oikl} = w'_{oikl} / sqrt(Σ_{ikl} w'²_{oikl} + 1e-8); all weights stored as N(0, 1) and
  scaled at run time by 1/√fan_in (equalised learning rate);
* noise: after every convolution, ``x + strength · n`` with n ~ N(0, 1) one channel per pixel (``noise="random"``),
  the layer's fixed seeded buffer (``"const"``: deterministic inference) or none; strengths start at 0;
* w vectors: ``num_ws = 2·log2(R) − 2`` as the reference (a toRGB shares its w with the next block's first conv).

``Synthesis.from_feature`` runs the layers after the 16×16 block from a given 16×16 state (feature map and
RGB skip image) and the w's of the remaining layers (``ws[:, split:]``): what an inversion encoder predicts.

Discriminator: fromRGB, residual blocks (two 3×3 convolutions, ×½ downsampling, a 1×1 skip, sum / √2) down to 4×4,
minibatch standard deviation (groups of up to 4, one feature), a 3×3 convolution and two fully connected layers.

Differences from the reference: up- and downsampling are bilinear / 2×2 average pooling instead of the [1, 3, 3, 1]
FIR filters of the transposed and strided convolutions (same resolution steps, a slightly blurrier filter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sarkit.errors import InputError
from sarkit.models.registry import register_network

#: Resolution of the intermediate feature map an inversion encoder predicts (the paper's f_16×16).
FEATURE_RES = 16
LRELU_GAIN = math.sqrt(2.0)
NOISE_SEED = 1234


@dataclass(frozen=True)
class StyleGANSize:
    """A preset: latent sizes, mapping depth and channels(res) = min(channel_base // res, channel_max)."""

    name: str
    z_dim: int
    w_dim: int
    mapping_layers: int
    channel_base: int
    channel_max: int

    def channels(self, res: int) -> int:
        """Feature channels of the blocks at ``res`` × ``res``."""
        return max(1, min(self.channel_base // res, self.channel_max))


#: tiny runs in tests on a CPU in seconds; small is a CPU-sized model; paper is StyleGAN2 config F.
PRESETS: dict[str, StyleGANSize] = {
    "tiny": StyleGANSize("tiny", 32, 32, 2, 512, 32),
    "small": StyleGANSize("small", 128, 128, 4, 4096, 128),
    "paper": StyleGANSize("paper", 512, 512, 8, 32768, 512),
}


def preset(name: str) -> StyleGANSize:
    """The preset called ``name`` (``InputError`` naming the valid ones otherwise)."""
    if name not in PRESETS:
        raise InputError(f"unknown StyleGAN2 size {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


def check_resolution(res: int) -> int:
    """``res`` when it is a power of two ≥ 32 (the 16×16 entry point needs at least one block after it)."""
    if res < 2 * FEATURE_RES or res & (res - 1):
        raise InputError(f"the StyleGAN2 prior needs a tile size that is a power of two ≥ {2 * FEATURE_RES}, "
                         f"got {res}")
    return res


def log2(res: int) -> int:
    """log2 of a power of two."""
    return int(round(math.log2(res)))


def num_ws(res: int) -> int:
    """Number of w vectors of a synthesis network at ``res``: 2·log2(res) − 2."""
    return 2 * log2(res) - 2


def feature_split(res: int = FEATURE_RES) -> int:
    """Index of the first w used after the ``res`` block's convolutions (its toRGB's): 2·log2(res) − 3."""
    return 2 * log2(res) - 3


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (slope 0.2) × √2 (unit-variance gain)."""
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


def pixel_norm(z: torch.Tensor) -> torch.Tensor:
    """z / sqrt(mean(z²) + 1e-8) over the feature axis."""
    return z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)


def upsample(x: torch.Tensor) -> torch.Tensor:
    """×2 bilinear upsampling."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def downsample(x: torch.Tensor) -> torch.Tensor:
    """×½ by 2×2 average pooling."""
    return F.avg_pool2d(x, 2)


class EqualLinear(nn.Module):
    """y = x · (W · lr_mul / √in)ᵀ + b · lr_mul, W ~ N(0, 1/lr_mul²) (equalised learning rate), then lrelu or not."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init) / lr_mul))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return lrelu(y) if self.activate else y


class EqualConv2d(nn.Module):
    """Convolution with weights N(0, 1) scaled by 1/√(in·k²) at run time, optional bias and lrelu."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True, activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight * self.scale, self.bias, padding=self.weight.shape[-1] // 2)
        return lrelu(y) if self.activate else y


def modulated_weight(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool) -> torch.Tensor:
    """Per-sample weights (N, O, I, k, k): w'_{noikl} = s_{ni}·w_{oikl}, divided by sqrt(Σ_{ikl} w'² + 1e-8) when
    ``demodulate``."""
    w = weight.unsqueeze(0) * styles[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    return w


def modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool) -> torch.Tensor:
    """Convolve each sample of x (N, I, H, W) with its own modulated weight, as one grouped convolution."""
    n, c, h, wd = x.shape
    w = modulated_weight(weight, styles, demodulate)
    out_ch, k = w.shape[1], w.shape[-1]
    y = F.conv2d(x.reshape(1, n * c, h, wd), w.reshape(n * out_ch, c, k, k), padding=k // 2, groups=n)
    return y.reshape(n, out_ch, h, wd)


class ModulatedConv2d(nn.Module):
    """Modulated (and optionally demodulated) k×k convolution; the style is the affine map A(w) with bias 1."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, w_dim: int, demodulate: bool = True,
                 up: bool = False) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate = demodulate
        self.up = up

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = upsample(x)
        return modulated_conv(x, self.weight * self.scale, self.affine(w), self.demodulate)


def const_noise(res: int, index: int) -> torch.Tensor:
    """The fixed (1, 1, res, res) N(0, 1) noise of layer ``index`` (seeded), for deterministic inference."""
    g = torch.Generator().manual_seed(NOISE_SEED + index)
    return torch.randn(1, 1, res, res, generator=g)


class StyledConv(nn.Module):
    """Modulated conv → + strength · noise → + bias → lrelu."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, res: int, index: int, up: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, demodulate=True, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("noise_const", const_noise(res, index))

    def noise(self, x: torch.Tensor, mode: str, noise: torch.Tensor | None) -> torch.Tensor | None:
        """The (N or 1, 1, H, W) noise of this layer for ``mode`` (random, const, none) unless one is given."""
        if noise is not None or mode == "none":
            return noise
        n, _, h, w = x.shape
        if mode == "random":
            return torch.randn(n, 1, h, w, device=x.device, dtype=x.dtype)
        if mode != "const":
            raise ValueError(f"noise mode {mode!r}: random, const or none")
        c = self.noise_const.to(x.dtype)
        reps = (-(-h // c.shape[-2]), -(-w // c.shape[-1]))
        return c.repeat(1, 1, *reps)[..., :h, :w]

    def forward(self, x: torch.Tensor, w: torch.Tensor, mode: str = "random",
                noise: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(x, w)
        n = self.noise(y, mode, noise)
        if n is not None:
            y = y + self.noise_strength * n
        return lrelu(y + self.bias.view(1, -1, 1, 1))


class ToRGB(nn.Module):
    """Modulated 1×1 convolution without demodulation, + bias; added to the skip image (already upsampled)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        y = self.conv(x, w) + self.bias.view(1, -1, 1, 1)
        return y if skip is None else y + skip


class Mapping(nn.Module):
    """z → w: pixel norm, then fully connected lrelu layers at lr multiplier 0.01; tracks w_avg."""

    def __init__(self, z_dim: int, w_dim: int, layers: int, lr_mul: float = 0.01, w_avg_beta: float = 0.995) -> None:
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.net = nn.Sequential(*[EqualLinear(a, b, lr_mul=lr_mul, activate=True) for a, b in zip(dims, dims[1:])])
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.w_avg_beta = w_avg_beta

    def forward(self, z: torch.Tensor, truncation: float = 1.0, track: bool = False) -> torch.Tensor:
        w = self.net(pixel_norm(z))
        if track:
            self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation != 1.0:
            w = self.w_avg.to(w.dtype).lerp(w, truncation)
        return w


@dataclass
class State16:
    """G's state after its 16×16 block: the feature map (N, C16, 16, 16) and the RGB skip image (N, C, 16, 16)."""

    feature: torch.Tensor
    image: torch.Tensor


class Synthesis(nn.Module):
    """w's (N, num_ws, w_dim) → image (N, C, R, R) through the constant input and the blocks 4 … R."""

    def __init__(self, res: int, out_channels: int, size: StyleGANSize) -> None:
        super().__init__()
        self.res, self.size = res, size
        c4 = size.channels(4)
        self.const = nn.Parameter(torch.randn(1, c4, 4, 4))
        self.convs = nn.ModuleList([StyledConv(c4, c4, size.w_dim, 4, 0)])
        self.torgbs = nn.ModuleList([ToRGB(c4, out_channels, size.w_dim)])
        for lv in range(3, log2(res) + 1):
            r = 2 ** lv
            cin, cout = size.channels(r // 2), size.channels(r)
            self.convs.append(StyledConv(cin, cout, size.w_dim, r, len(self.convs), up=True))
            self.convs.append(StyledConv(cout, cout, size.w_dim, r, len(self.convs)))
            self.torgbs.append(ToRGB(cout, out_channels, size.w_dim))
        self.num_ws = num_ws(res)

    def _layers(self):
        """(resolution, conv layers, toRGB, index of the block's first w) per block, 4 first."""
        yield 4, [self.convs[0]], self.torgbs[0], 0
        for b in range(1, len(self.torgbs)):
            yield 4 * 2 ** b, [self.convs[2 * b - 1], self.convs[2 * b]], self.torgbs[b], 2 * b - 1

    def _run(self, ws: torch.Tensor, first_res: int, x: torch.Tensor, img: torch.Tensor | None, noise_mode: str,
             stop_at: int | None = None, noises: list[torch.Tensor] | None = None):
        """Blocks from ``first_res`` on, starting from features x (and the skip image img at that resolution);
        stop after ``stop_at``'s convolutions to return the state there."""
        for res, convs, torgb, i in self._layers():
            if res < first_res:
                continue
            if res > first_res or first_res == 4:
                for j, conv in enumerate(convs):
                    layer = self._layer_index(res, j)
                    x = conv(x, ws[:, i + j], noise_mode, None if noises is None else noises[layer])
            if res > first_res and img is not None:
                img = upsample(img)  # the skip image of the blocks below, at this block's resolution
            if stop_at == res:
                return State16(x, img)
            img = torgb(x, ws[:, i + len(convs)], img)
        return img

    @staticmethod
    def _layer_index(res: int, j: int) -> int:
        """Position in ``self.convs`` of the j-th convolution of the ``res`` block."""
        return 0 if res == 4 else 2 * (log2(res) - 2) - 1 + j

    def forward(self, ws: torch.Tensor, noise_mode: str = "random",
                noises: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The image of w's (N, num_ws, w_dim); ``noises`` (one per conv) replace the layers' noise."""
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        return self._run(ws, 4, x, None, noise_mode, noises=noises)

    def state16(self, ws: torch.Tensor, noise_mode: str = "random",
                noises: list[torch.Tensor] | None = None) -> State16:
        """G's 16×16 state (feature after the 16×16 block's convolutions, skip image of the blocks below)."""
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        return self._run(ws, 4, x, None, noise_mode, stop_at=FEATURE_RES, noises=noises)

    def from_feature(self, state: State16, ws_rest: torch.Tensor, noise_mode: str = "const",
                     noises: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The image from a 16×16 state and the w's of the layers after it, (N, num_ws − split, w_dim)."""
        split = feature_split()
        if ws_rest.shape[1] != self.num_ws - split:
            raise ValueError(f"{self.num_ws - split} w vectors follow the 16×16 state, got {ws_rest.shape[1]}")
        pad = ws_rest.new_zeros(ws_rest.shape[0], split, ws_rest.shape[2])
        return self._run(torch.cat([pad, ws_rest], 1), FEATURE_RES, state.feature, state.image, noise_mode,
                         noises=noises)


class Generator(nn.Module):
    """G(z) = synthesis(mapping(z)) with style mixing when two z's are given."""

    def __init__(self, resolution: int, out_channels: int, size: str = "tiny") -> None:
        super().__init__()
        self.size = preset(size)
        self.resolution = check_resolution(int(resolution))
        self.out_channels = out_channels
        self.mapping = Mapping(self.size.z_dim, self.size.w_dim, self.size.mapping_layers)
        self.synthesis = Synthesis(self.resolution, out_channels, self.size)

    @property
    def num_ws(self) -> int:
        return self.synthesis.num_ws

    def ws(self, z: torch.Tensor, z2: torch.Tensor | None = None, cutoff: int | None = None,
           truncation: float = 1.0, track: bool = False) -> torch.Tensor:
        """w's (N, num_ws, w_dim) of z: one w broadcast to every layer, or z2's w from layer ``cutoff`` on."""
        w = self.mapping(z, truncation, track).unsqueeze(1).repeat(1, self.num_ws, 1)
        if z2 is not None and cutoff is not None:
            w2 = self.mapping(z2, truncation, track)
            w[:, cutoff:] = w2.unsqueeze(1)
        return w

    def forward(self, z: torch.Tensor, truncation: float = 1.0, noise_mode: str = "random") -> torch.Tensor:
        """Images of latents z (N, z_dim)."""
        return self.synthesis(self.ws(z, truncation=truncation), noise_mode)


class DiscBlock(nn.Module):
    """Residual block: (conv 3×3 → conv 3×3 → ×½) + (×½ → 1×1 conv, no bias), divided by √2."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, activate=True)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, activate=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = downsample(self.conv1(self.conv0(x)))
        return (y + self.skip(downsample(x))) / math.sqrt(2.0)


def minibatch_stddev(x: torch.Tensor, group: int = 4, features: int = 1) -> torch.Tensor:
    """x with ``features`` more channels: the standard deviation over groups of ``group`` samples (population,
    + 1e-8 under the root), averaged over channels (per feature split) and pixels, repeated over the group."""
    n, c, h, w = x.shape
    g = min(group, n)
    while n % g:
        g -= 1
    y = x.reshape(g, -1, features, c // features, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0)
    y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))            # (n/g, features)
    y = y.reshape(-1, features, 1, 1).repeat(g, 1, h, w)  # (n, features, h, w)
    return torch.cat([x, y], 1)


class Discriminator(nn.Module):
    """fromRGB → residual blocks to 4×4 → minibatch stddev → conv 3×3 → fc → fc → one logit per image."""

    def __init__(self, resolution: int, in_channels: int, size: str = "tiny") -> None:
        super().__init__()
        sz = preset(size)
        res = check_resolution(int(resolution))
        self.from_rgb = EqualConv2d(in_channels, sz.channels(res), 1, activate=True)
        self.blocks = nn.Sequential(*[DiscBlock(sz.channels(2 ** lv), sz.channels(2 ** (lv - 1)))
                                      for lv in range(log2(res), 2, -1)])
        c4 = sz.channels(4)
        self.conv = EqualConv2d(c4 + 1, c4, 3, activate=True)
        self.fc = EqualLinear(c4 * 16, c4, activate=True)
        self.out = EqualLinear(c4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.from_rgb(x))
        h = self.conv(minibatch_stddev(h))
        return self.out(self.fc(h.flatten(1)))


@register_network("stylegan2_generator")
def build_generator(resolution: int, out_channels: int, size: str = "tiny") -> nn.Module:
    """The StyleGAN2-style generator (exported as a gan-prior run's "prior")."""
    return Generator(resolution, out_channels, size)


def generator_kwargs(g: Generator) -> dict[str, Any]:
    """Arguments that rebuild ``g`` through ``build_generator``."""
    return {"resolution": g.resolution, "out_channels": g.out_channels, "size": g.size.name}


__all__ = ["FEATURE_RES", "PRESETS", "StyleGANSize", "Generator", "Discriminator", "Synthesis", "State16",
           "Mapping", "ModulatedConv2d", "StyledConv", "ToRGB", "DiscBlock", "EqualConv2d", "EqualLinear",
           "modulated_weight", "modulated_conv", "minibatch_stddev", "num_ws", "feature_split", "preset",
           "check_resolution", "generator_kwargs"]
