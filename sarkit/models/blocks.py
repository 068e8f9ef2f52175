"""Shared building blocks, written once: U-Net and ResNet generators, PatchGAN, GAN losses, PatchNCE, image pool.

Architectures follow the papers' reference designs (pix2pix: Isola et al. 2017; CycleGAN: Zhu et al. 2017;
CUT: Park et al. 2020) so that results are comparable; the code is sarkit's own.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sarkit.models.registry import register_network


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: "batch" (affine, running stats), "instance" (no affine) or "none"."""
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm layer {kind!r}")


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights ~ N(0, gain) and norm scales ~ N(1, gain), biases 0 (pix2pix/CycleGAN)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


# --------------------------------------------------------------------------------------------- up-sampling
#: Decoder up-sampling modes: ``transpose`` (the papers' stride-2 transposed convolution), ``resize`` (bilinear ×2
#: then a 3×3 convolution, the resize-convolution of Odena et al. 2016: no checkerboard; bilinear rather than
#: nearest, which duplicates rows into pairs and leaves a period-2 gradient profile of its own),
#: ``blur`` (CUT's anti-aliased ``BlurUp`` + conv).
UPSAMPLE_MODES = ("transpose", "resize", "blur")


def check_upsample(mode: str, allowed: Sequence[str] = UPSAMPLE_MODES) -> str:
    """``mode`` when it is one of ``allowed``, else ValueError naming the choices."""
    if mode not in allowed:
        raise ValueError(f"upsample must be one of {', '.join(allowed)}, got {mode!r}")
    return mode


def up_layers(c_in: int, c_out: int, mode: str, bias: bool, transpose_kernel: int = 4) -> list[nn.Module]:
    """×2 up-sampling c_in → c_out channels: ConvTranspose(k, stride 2) | bilinear ×2 + conv3×3 | BlurUp + conv3×3.

    ``transpose_kernel`` 4 (padding 1) is the pix2pix U-Net's, 3 (padding 1, output padding 1) the ResNet's."""
    check_upsample(mode)
    if mode == "transpose":
        extra = 1 if transpose_kernel % 2 else 0
        return [nn.ConvTranspose2d(c_in, c_out, transpose_kernel, 2, 1, output_padding=extra, bias=bias)]
    first: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear") if mode == "resize" else BlurUp(c_in)
    return [first, nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias)]


# --------------------------------------------------------------------------------------------- U-Net
class _UnetLevel(nn.Module):
    """One U-Net level: down-conv, the inner levels, up-conv, concatenated with the skip input."""

    def __init__(self, outer: int, inner: int, in_ch: int | None, sub: nn.Module | None, outermost: bool,
                 innermost: bool, norm: str, dropout: bool, out_ch: int | None = None,
                 upsample: str = "transpose") -> None:
        super().__init__()
        self.outermost = outermost
        in_ch = outer if in_ch is None else in_ch
        use_bias = norm == "instance"
        down = nn.Conv2d(in_ch, inner, 4, 2, 1, bias=use_bias)
        if outermost:
            up = up_layers(inner * 2, out_ch or outer, upsample, True)
            layers: list[nn.Module] = [down, sub, nn.ReLU(True), *up, nn.Tanh()]
        elif innermost:
            up = up_layers(inner, outer, upsample, use_bias)
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True), *up, norm_layer(norm, outer)]
        else:
            up = up_layers(inner * 2, outer, upsample, use_bias)
            layers = [nn.LeakyReLU(0.2, True), down, norm_layer(norm, inner), sub, nn.ReLU(True), *up,
                      norm_layer(norm, outer)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net: ``num_downs`` stride-2 levels (8 for 256² tiles → 1×1 bottleneck), skips, tanh output;
    decoder up-sampling ``upsample`` = transpose (the paper's 4×4 stride-2 ConvTranspose) or resize (``up_layers``)."""

    def __init__(self, in_channels: int, out_channels: int, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", dropout: bool = True, upsample: str = "transpose") -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError("U-Net needs at least 5 levels")
        check_upsample(upsample, ("transpose", "resize"))
        u = upsample
        block = _UnetLevel(ngf * 8, ngf * 8, None, None, False, True, norm, False, upsample=u)
        for _ in range(num_downs - 5):
            block = _UnetLevel(ngf * 8, ngf * 8, None, block, False, False, norm, dropout, upsample=u)
        block = _UnetLevel(ngf * 4, ngf * 8, None, block, False, False, norm, False, upsample=u)
        block = _UnetLevel(ngf * 2, ngf * 4, None, block, False, False, norm, False, upsample=u)
        block = _UnetLevel(ngf, ngf * 2, None, block, False, False, norm, False, upsample=u)
        self.model = _UnetLevel(out_channels, ngf, in_channels, block, True, False, norm, False,
                                out_ch=out_channels, upsample=u)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def unet_levels(tile_size: int) -> int:
    """U-Net depth that brings ``tile_size`` down to a 1×1 bottleneck: log2(tile_size) (8 for 256)."""
    levels = int(tile_size).bit_length() - 1
    if 2 ** levels != tile_size or levels < 5:
        raise ValueError(f"U-Net tile size must be a power of two ≥ 32, got {tile_size}")
    return levels


@register_network("unet")
def build_unet(in_channels: int, out_channels: int, num_downs: int = 8, ngf: int = 64, norm: str = "batch",
               dropout: bool = True, upsample: str = "transpose") -> nn.Module:
    return UnetGenerator(in_channels, out_channels, num_downs, ngf, norm, dropout, upsample)


#: Layer indices of ``ResnetGenerator.model`` whose activations PatchNCE uses, as CUT's ``nce_layers``. They
#: count in each generator's own layer sequence: plain — the padded input, the first stride-2 conv, the second
#: down-sampling's norm, the 3rd and 7th residual blocks; anti-aliased (CUT's default) — the padded input, the
#: two stride-1 down convs, the 1st and 5th residual blocks.
NCE_LAYERS: tuple[int, ...] = (0, 4, 8, 12, 16)


# --------------------------------------------------------------------------------------------- anti-aliasing
def binomial_kernel(taps: int) -> torch.Tensor:
    """The separable binomial filter b·bᵀ with b = row ``taps``-1 of Pascal's triangle, normalised to sum 1."""
    b = torch.tensor([float(math.comb(taps - 1, k)) for k in range(taps)])
    k2 = torch.outer(b, b)
    return k2 / k2.sum()


@contextmanager
def _blur_precision(x: torch.Tensor) -> Iterator[torch.Tensor]:
    """``x`` in float32 with autocast off when it is a bf16/fp16 CPU tensor, else ``x`` as it is: oneDNN's
    reduced-precision depthwise (per-channel) convolutions are ≈ 3× slower than its float32 ones on the CPU
    (measured for BlurDown and BlurUp at CUT's shapes, forward + backward), and the fixed blur loses nothing in
    float32; the result is cast back to ``x``'s dtype by the caller."""
    if x.device.type != "cpu" or x.dtype not in (torch.bfloat16, torch.float16):
        yield x
        return
    with torch.autocast(device_type="cpu", enabled=False):
        yield x.float()


class BlurDown(nn.Module):
    """Anti-aliased stride-2 down-sampling (Zhang 2019, as CUT uses it): reflect-pad 1, then a per-channel
    3×3 binomial blur ([1,2,1]⊗[1,2,1]/16) evaluated at every second pixel. (C, H, W) → (C, ⌈H/2⌉, ⌈W/2⌉)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", binomial_kernel(3).expand(channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _blur_precision(x) as h:
            y = F.conv2d(F.pad(h, (1, 1, 1, 1), mode="reflect"), self.kernel.to(h.dtype), stride=2,
                         groups=h.shape[1])
        return y.to(x.dtype)


class BlurUp(nn.Module):
    """Anti-aliased ×2 up-sampling (CUT's default decoder): zero-insertion then a per-channel 4×4 binomial
    ([1,3,3,1]⊗[1,3,3,1]/64, gain 4) on the replicate-padded input, cropped to exactly (C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", (binomial_kernel(4) * 4).expand(channels, 1, 4, 4).clone(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _blur_precision(x) as h:
            y = F.conv_transpose2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), self.kernel.to(h.dtype), stride=2,
                                   padding=2, groups=h.shape[1])
        return y[:, :, 1:-1, 1:-1].to(x.dtype)  # (2H+2)² → (2H)²: the one-pixel border the padding added


# --------------------------------------------------------------------------------------------- ResNet
class ResnetBlock(nn.Module):
    """Residual block: x + [reflect-pad, conv3×3, norm, ReLU, reflect-pad, conv3×3, norm](x)."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        use_bias = norm == "instance"
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=use_bias), norm_layer(norm, channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=use_bias), norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """CycleGAN/CUT ResNet generator: 7×7 stem, 2 down-samplings, ``n_blocks`` residual blocks, 2 up-samplings,
    tanh.

    Plain (CycleGAN): stride-2 convolutions down, stride-2 transposed convolutions up. ``antialias`` (CUT's
    default): stride-1 convolutions each followed by ``BlurDown``; decoder ``upsample`` (``up_layers``): transpose
    (3×3 stride 2), resize (bilinear ×2 + conv3×3) or blur (``BlurUp`` + conv3×3, CUT's ``antialias_up``; "" = blur
    when ``antialias_up`` else transpose, as older exports were built). ``forward(x, layers=[...], encode_only=True)`` returns the
    activations after the listed indices of ``self.model`` (PatchNCE, the semantic contrastive loss).
    """

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", antialias: bool = False, antialias_up: bool = False,
                 upsample: str = "") -> None:
        super().__init__()
        upsample = check_upsample(upsample or ("blur" if antialias_up else "transpose"))
        self.upsample = upsample
        use_bias = norm == "instance"
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=use_bias),
                                   norm_layer(norm, ngf), nn.ReLU(True)]
        for i in range(2):
            c = ngf * 2 ** i
            if antialias:
                layers += [nn.Conv2d(c, 2 * c, 3, 1, 1, bias=use_bias), norm_layer(norm, 2 * c), nn.ReLU(True),
                           BlurDown(2 * c)]
            else:
                layers += [nn.Conv2d(c, 2 * c, 3, 2, 1, bias=use_bias), norm_layer(norm, 2 * c), nn.ReLU(True)]
        #: index of the first residual block in ``self.model`` (after the stem and the down-sampling layers)
        self.first_block = len(layers)
        self.n_blocks = n_blocks
        for _ in range(n_blocks):
            layers.append(ResnetBlock(ngf * 4, norm))
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            layers += up_layers(c, c // 2, upsample, use_bias, transpose_kernel=3)
            layers += [norm_layer(norm, c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def encoder_layers(self, layers: Sequence[int] = NCE_LAYERS) -> tuple[int, ...]:
        """The ``layers`` that lie in the encoder (index < first block + number of blocks)."""
        return tuple(i for i in layers if i < self.first_block + self.n_blocks)

    def block_layers(self, layers: Sequence[int] = NCE_LAYERS) -> tuple[int, ...]:
        """The ``layers`` that are outputs of residual blocks (first block ≤ index < first block + blocks)."""
        return tuple(i for i in layers if self.first_block <= i < self.first_block + self.n_blocks)

    def forward(self, x: torch.Tensor, layers: Sequence[int] | None = None,
                encode_only: bool = False) -> Any:
        if not layers:
            return self.model(x)
        feats: list[torch.Tensor] = []
        last = max(layers)
        h = x
        for i, layer in enumerate(self.model):
            h = layer(h)
            if i in layers:
                feats.append(h)
            if encode_only and i == last:
                return feats
        return h, feats


def channel_map_matrix(in_channels: int, out_channels: int) -> torch.Tensor:
    """The fixed linear map between channel counts: identity when equal, else every output channel is the mean
    of the input channels (M[o, i] = 1/C_in), e.g. RGB → the grey level in both SAR channels, VV/VH → their
    mean in R, G and B. Rows sum to 1, so the model range [-1, 1] (and nodata = -1) is preserved."""
    if in_channels == out_channels:
        return torch.eye(in_channels)
    return torch.full((out_channels, in_channels), 1.0 / in_channels)


def channel_map(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Apply ``channel_map_matrix`` to (N, C_in, H, W): y[:, o] = Σ_i M[o, i]·x[:, i] (identity if C_in = C_out).

    Used to feed an image of one domain to a network whose input has the other domain's channel count
    (CycleGAN identity terms, CUT/cyclegan-sc encoder features of generated images)."""
    c = x.shape[1]
    if c == out_channels:
        return x
    m = channel_map_matrix(c, out_channels).to(device=x.device, dtype=x.dtype)
    return torch.einsum("oc,nchw->nohw", m, x)


@register_network("resnet")
def build_resnet(in_channels: int, out_channels: int, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", antialias: bool = False, antialias_up: bool = False,
                 upsample: str = "") -> nn.Module:
    return ResnetGenerator(in_channels, out_channels, ngf, n_blocks, norm, antialias, antialias_up, upsample)


# --------------------------------------------------------------------------------------------- PatchGAN
class PatchGAN(nn.Module):
    """70×70 PatchGAN discriminator (3 layers): a map of real/fake logits, one per overlapping patch.

    ``antialias`` (CUT's default): each stride-2 4×4 convolution becomes a stride-1 one followed by ``BlurDown``.
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch",
                 antialias: bool = False) -> None:
        super().__init__()
        use_bias = norm == "instance"

        def down(c_in: int, c_out: int, bias: bool) -> list[nn.Module]:
            """A 4×4 convolution that halves the size: stride 2, or stride 1 then an anti-aliased down."""
            if antialias:
                return [nn.Conv2d(c_in, c_out, 4, 1, 1, bias=bias)]
            return [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=bias)]

        blur = (lambda c: [BlurDown(c)]) if antialias else (lambda c: [])
        layers: list[nn.Module] = [*down(in_channels, ndf, True), nn.LeakyReLU(0.2, True), *blur(ndf)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [*down(ndf * prev, ndf * mult, use_bias), norm_layer(norm, ndf * mult),
                       nn.LeakyReLU(0.2, True), *blur(ndf * mult)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=use_bias), norm_layer(norm, ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class GANLoss(nn.Module):
    """GAN objective on discriminator logits: "vanilla" (BCE with logits) or "lsgan" (MSE to 1/0)."""

    def __init__(self, mode: str = "vanilla") -> None:
        super().__init__()
        if mode not in ("vanilla", "lsgan"):
            raise ValueError(f"unknown GAN mode {mode!r}")
        self.mode = mode

    def forward(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        logits = logits.float()
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        if self.mode == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)


# --------------------------------------------------------------------------------------------- PatchNCE
class PatchSampler(nn.Module):
    """Samples feature locations and projects them with a 2-layer MLP head per layer (256-d), L2-normalised.

    The heads are created lazily at the first call (their input widths come from the features), so call it once
    on a real batch before building the optimizer.
    """

    def __init__(self, nc: int = 256) -> None:
        super().__init__()
        self.nc = nc
        self.heads = nn.ModuleList()
        self.ready = False

    def _create(self, feats: Sequence[torch.Tensor]) -> None:
        for f in feats:
            c = f.shape[1]
            head = nn.Sequential(nn.Linear(c, self.nc), nn.ReLU(), nn.Linear(self.nc, self.nc))
            init_weights(head)
            self.heads.append(head.to(f.device))
        self.ready = True

    def forward(self, feats: Sequence[torch.Tensor], num_patches: int = 256,
                patch_ids: Sequence[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Return per layer (N·P, nc) projected samples and the picks used (flat location ids, or what ``sample``
        returned); pass them back as ``patch_ids`` to sample another image at the same picks."""
        if not self.ready:
            self._create(feats)
        out, ids = [], []
        for i, f in enumerate(feats):
            x, pid = self.sample(i, f, num_patches, None if patch_ids is None else patch_ids[i])
            x = self.heads[i](x.float())
            out.append(F.normalize(x, dim=1))
            ids.append(pid)
        return out, ids

    def sample(self, layer: int, feat: torch.Tensor, num_patches: int, pick: Any = None) -> tuple[torch.Tensor, Any]:
        """(N·P, C) features of layer number ``layer`` at ``pick`` (flat location ids), or at ``num_patches`` random
        locations when ``pick`` is None, and the pick used; subclasses choose locations differently."""
        n, c, h, w = feat.shape
        flat = feat.permute(0, 2, 3, 1).reshape(n, h * w, c)
        if pick is None:
            pick = torch.randperm(h * w, device=feat.device)[: min(num_patches, h * w)]
        return flat[:, pick, :].reshape(-1, c), pick


def patch_nce_loss(q: torch.Tensor, k: torch.Tensor, batch: int, tau: float = 0.07) -> torch.Tensor:
    """PatchNCE (InfoNCE over locations): for each query, the key at the same location is the positive and the
    other sampled locations of the same image are negatives; −log softmax of the positive, mean over queries.

    ``q``, ``k``: (batch·P, d) L2-normalised, grouped by image.
    """
    k = k.detach()
    d = q.shape[1]
    qb = q.view(batch, -1, d)
    kb = k.view(batch, -1, d)
    logits = torch.bmm(qb, kb.transpose(1, 2)) / tau          # (B, P, P): diagonal = positives
    p = logits.shape[1]
    target = torch.arange(p, device=q.device).expand(batch, p)
    return F.cross_entropy(logits.reshape(batch * p, p), target.reshape(-1))


def semantic_contrastive_loss(q: torch.Tensor, k: torch.Tensor, q_labels: torch.Tensor, k_labels: torch.Tensor,
                              tau: float = 0.07) -> torch.Tensor:
    """Semantic-guided contrastive loss (Du et al.): for query i the positives are key i (same location) and
    every key j of the same class (k_labels[j] = q_labels[i]), the negatives the keys of other classes;
    ℓ_i = −log(Σ_pos e^{q_i·k_j/τ} / Σ_all e^{q_i·k_j/τ}), mean over queries.

    ``q``, ``k``: (B, P, d) or (P, d) already projected (L2-normalised) features at the same P locations of each
    image (keys are detached, as in PatchNCE); ``q_labels``, ``k_labels``: (B, P) or (P,) class ids. Only keys
    of the same image are compared. With all classes distinct it equals ``patch_nce_loss``.
    """
    if q.dim() == 2:
        q, k, q_labels, k_labels = q[None], k[None], q_labels[None], k_labels[None]
    k = k.detach()
    logits = torch.bmm(q.float(), k.float().transpose(1, 2)) / tau                 # (B, P, P)
    p = logits.shape[1]
    same = q_labels[:, :, None] == k_labels[:, None, :]
    pos = same | torch.eye(p, dtype=torch.bool, device=q.device)[None]
    pos_lse = torch.logsumexp(logits.masked_fill(~pos, float("-inf")), dim=2)
    return (torch.logsumexp(logits, dim=2) - pos_lse).mean()


# --------------------------------------------------------------------------------------------- image pool
class ImagePool:
    """History of generated images (Shrivastava et al. 2017): with probability ½ return a stored image and
    store the new one in its place, so the discriminator sees older fakes too. Size 0 disables it."""

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Images for the discriminator, drawn half from history once the pool is full."""
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif self.rng.random() > 0.5:
                j = self.rng.randrange(self.size)
                out.append(self.images[j].clone())
                self.images[j] = img.clone()
            else:
                out.append(img)
        return torch.cat(out, 0)

    def state(self) -> dict[str, Any]:
        """Pool contents and RNG state, for checkpoints (tensors and plain values only)."""
        return {"images": [i.cpu() for i in self.images], "rng": list(self.rng.getstate()[1]),
                "rng_version": self.rng.getstate()[0],
                "rng_gauss": self.rng.getstate()[2]}

    def load_state(self, state: dict[str, Any], device: torch.device) -> None:
        """Restore ``state()``."""
        self.images = [i.to(device) for i in state.get("images", [])]
        if "rng" in state:
            self.rng.setstate((state["rng_version"], tuple(int(x) for x in state["rng"]), state["rng_gauss"]))


# --------------------------------------------------------------------------------------------- optimizer
def adam(params: Any, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """Adam(lr, betas) with the fused single-kernel update on CPU/CUDA (same algorithm, one pass over the
    parameters instead of one per elementwise op; a large share of a CPU step for the 54M-parameter U-Net)."""
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype in
                                 (torch.float32, torch.float16, torch.bfloat16) for p in params)
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused or None)
