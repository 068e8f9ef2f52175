"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric"),
version 0.1 with the AlexNet backbone ("lin" variant), written here so no extra package is needed.

For images x, y in [0, 1] (N, 3, H, W):

* ``s(x) = ((2x − 1) − shift) / scale`` with LPIPS's fixed constants shift = (−0.030, −0.088, −0.188),
  scale = (0.458, 0.448, 0.450);
* ``f_l`` = the output of the l-th ReLU (l = 1…5; 64, 192, 384, 256, 256 channels) of torchvision's
  ``alexnet(weights=None).features``;
* ``f̂_l = f_l / (‖f_l‖₂ over channels + 1e−10)`` (unit-normalised per position);
* ``LPIPS(x, y) = Σ_l mean_{h,w} Σ_c w_{l,c} · (f̂_l(x) − f̂_l(y))²_{c,h,w}`` with ``w_l`` the 1×1 linear heads
  (no bias) learned by the LPIPS authors.

Weights, from local files only (sarkit never downloads):

* heads: ``--lpips-weights PATH`` / ``$SARKIT_LPIPS_WEIGHTS`` in the layout of the ``lpips`` package's
  ``weights/v0.1/alex.pth`` (keys ``lin0.model.1.weight`` … ``lin4.model.1.weight``, each (1, C, 1, 1); a full
  LPIPS state dict with ``lins.K.model.1.weight`` also works); when neither is given and the ``lpips`` package
  is installed, its bundled ``alex.pth`` is used;
* backbone: ``--lpips-backbone PATH`` / ``$SARKIT_LPIPS_BACKBONE``, a torchvision ``alexnet`` state dict
  (``features.*``; ``classifier.*`` is ignored), default torchvision's cache file
  ``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`` when it exists.

Both are found by ``sarkit.weights`` (kinds ``LPIPS_HEADS``, ``LPIPS_BACKBONE``) and read with
``torch.load(weights_only=True)`` or as safetensors (by suffix).

Nodata (``valid`` mask): pixels invalid in either image are set to mid-grey (0.5) in both images before the
network, and the spatial mean of every layer is weighted by the fraction of valid pixels in each feature cell
(the mask area-resized to the layer's grid). Without nodata this is exactly the LPIPS spatial mean. Images
smaller than ``MIN_SIZE`` px on a side are too small for AlexNet's two pooling stages: their LPIPS is NaN.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sarkit.errors import CheckpointError, InputError
from sarkit.weights import LPIPS_BACKBONE, LPIPS_HEADS, read_state_dict, resolve

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 192, 384, 256, 256)
#: ``features`` index ranges ending at each of AlexNet's five ReLUs.
SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
EPS = 1e-10
#: Smallest side AlexNet's conv1 (11/4) and two 3/2 max-pools accept.
MIN_SIZE = 31
NODATA_FILL = 0.5


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet convolutional trunk (``alexnet(weights=None).features``), random weights."""
    from torchvision.models import alexnet

    return alexnet(weights=None).features


def split_features(features: nn.Sequential) -> nn.ModuleList:
    """The trunk cut after each ReLU: five stages whose outputs are relu1 … relu5."""
    return nn.ModuleList(nn.Sequential(*[features[i] for i in range(a, b)]) for a, b in SLICES)


def scale_input(x01: torch.Tensor) -> torch.Tensor:
    """``((2x − 1) − shift) / scale`` per channel (LPIPS v0.1 input scaling)."""
    shift = x01.new_tensor(SHIFT).view(1, 3, 1, 1)
    scale = x01.new_tensor(SCALE).view(1, 3, 1, 1)
    return (x01 * 2.0 - 1.0 - shift) / scale


def unit_normalize(f: torch.Tensor) -> torch.Tensor:
    """``f / (‖f‖₂ over channels + ε)`` at every position."""
    return f / (f.square().sum(dim=1, keepdim=True).sqrt() + EPS)


def weighted_spatial_mean(m: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``Σ_hw w·m / Σ_hw w`` per sample of (N, H, W) maps (the plain mean when ``weight`` is None)."""
    if weight is None:
        return m.mean(dim=(1, 2))
    return (m * weight).sum(dim=(1, 2)) / weight.sum(dim=(1, 2))


def layer_distance(fx: torch.Tensor, fy: torch.Tensor, head: torch.Tensor,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """``mean_hw Σ_c w_c (f̂x − f̂y)²`` per sample, (N,)."""
    d = (unit_normalize(fx) - unit_normalize(fy)).square()
    return weighted_spatial_mean((d * head.view(1, -1, 1, 1)).sum(dim=1), weight)


class LPIPS(nn.Module):
    """LPIPS v0.1 (AlexNet, linear heads): ``forward(x, y, valid)`` → (N,) distances for images in [0, 1]."""

    def __init__(self, features: nn.Sequential, heads: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.stages = split_features(features)
        for i, h in enumerate(heads):
            self.register_buffer(f"head{i}", h.detach().reshape(-1).float().clone())

    @property
    def heads(self) -> list[torch.Tensor]:
        return [getattr(self, f"head{i}") for i in range(len(SLICES))]

    def features(self, x01: torch.Tensor) -> list[torch.Tensor]:
        """relu1 … relu5 of the scaled input."""
        out, h = [], scale_input(x01)
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    @torch.no_grad()
    def forward(self, x01: torch.Tensor, y01: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``Σ_l layer_distance`` per sample; nodata filled with 0.5 in both and down-weighted (see module)."""
        n, c, h, w = x01.shape
        if c != 3 or y01.shape != x01.shape:
            raise InputError(f"LPIPS compares two 3-channel (RGB) images of one shape, got {tuple(x01.shape)} "
                             f"and {tuple(y01.shape)}")
        if h < MIN_SIZE or w < MIN_SIZE:
            return x01.new_full((n,), float("nan"))
        dev = self.head0.device
        x, y = x01.to(dev, torch.float32), y01.to(dev, torch.float32)
        mask = None
        if valid is not None and not bool(valid.all()):
            mask = valid.to(dev).unsqueeze(1)
            fill = torch.full((), NODATA_FILL, device=dev)
            x, y = torch.where(mask, x, fill), torch.where(mask, y, fill)
            mask = mask.float()
        total = x.new_zeros(n)
        for f, head in zip(self.features(torch.cat([x, y])), self.heads):
            wgt = None if mask is None else F.interpolate(mask, size=f.shape[-2:], mode="area").squeeze(1)
            total = total + layer_distance(f[:n], f[n:], head, wgt)
        if mask is not None:
            total[valid.to(dev).flatten(1).sum(dim=1) == 0] = float("nan")
        return total.cpu()


# ----------------------------------------------------------------------------------------------- loading

def read_heads(path: Path) -> list[torch.Tensor]:
    """The five (1, C, 1, 1) heads of an LPIPS weights file (``linK.model.1.weight`` or ``lins.K.…``)."""
    state = read_state_dict(path)
    heads = []
    for k, c in enumerate(CHANNELS):
        w = state.get(f"lin{k}.model.1.weight", state.get(f"lins.{k}.model.1.weight"))
        if w is None or w.numel() != c:
            raise CheckpointError(f"{path} is not an LPIPS AlexNet weights file (alex.pth layout): "
                                  f"lin{k}.model.1.weight with {c} values is missing")
        heads.append(w.float())
    return heads


def read_backbone(path: Path) -> nn.Sequential:
    """AlexNet ``features`` with the ``features.*`` tensors of a torchvision alexnet state dict (strict)."""
    state = read_state_dict(path)
    feats = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    net = alexnet_features()
    try:
        net.load_state_dict(feats, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} is not a torchvision alexnet state dict: "
                              f"{str(exc).splitlines()[0][:160]}") from None
    return net


@dataclass
class LpipsFiles:
    """Where the two weight files of LPIPS were found."""

    heads: Path
    backbone: Path


def load_lpips(weights: str | os.PathLike | None = None, backbone: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> tuple[LPIPS, LpipsFiles]:
    """LPIPS (AlexNet v0.1) from local files (see the module docstring), in eval mode on ``device``."""
    files = LpipsFiles(resolve(LPIPS_HEADS, weights), resolve(LPIPS_BACKBONE, backbone))
    net = LPIPS(read_backbone(files.backbone), read_heads(files.heads))
    return net.to(device).eval(), files



def lpips_distance(net: LPIPS, x01: torch.Tensor, y01: torch.Tensor) -> torch.Tensor:
    """Differentiable LPIPS for training losses: ``Σ_l layer_distance`` of (N, 3, H, W) images in [0, 1], (N,);
    no nodata handling (callers give images whose nodata pixels agree) and gradients through both images."""
    n = x01.shape[0]
    total = x01.new_zeros(n, dtype=torch.float32)
    for f, head in zip(net.features(torch.cat([x01, y01]).float()), net.heads):
        total = total + layer_distance(f[:n], f[n:], head)
    return total
