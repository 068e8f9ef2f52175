"""Fréchet distances between feature distributions: FID (Inception-v3 pool features) and FID-CLIP.

* Features: torchvision's ``inception_v3`` architecture (``weights=None, aux_logits=False,
  init_weights=False``) with ``fc`` replaced by the identity, so the output is the 2048-d average-pool vector.
  Images in [0, 1] are resized to 299×299 (bilinear) and normalised with the ImageNet mean/std.
  The weights come from a local file only (``--fid-weights PATH`` or ``$SARKIT_FID_WEIGHTS``, found by
  ``sarkit.weights``, kind ``INCEPTION``): a state dict for torchvision's ``inception_v3`` layout, as
  safetensors or a ``torch.save`` file read with ``weights_only=True``. Note: the reference FID network
  (TF ``pt_inception-2015-12-05``) differs slightly from torchvision's ImageNet Inception, so values are
  comparable between sarkit runs with the same weights file, not bit-identical with papers that used the TF
  graph.
* Channels: optical RGB (three bands, B4 B3 B2 when named) is used as is; SAR (VV, VH) is mapped to three
  channels as (VV, VH, (VV + VH)/2); a single band is repeated three times.
* Statistics are streamed (running Σx and Σxxᵀ in float64), so memory does not grow with the sample count.
* ``FD = ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2·(Σ1Σ2)^½)`` with ``scipy.linalg.sqrtm``; when the square root is not
  finite, ``ε·I`` (ε = 1e−6) is added to both covariances; the real part is kept.
* FID-CLIP: the same distance on ``open_clip`` image-encoder embeddings loaded offline by ``sarkit.models.clip``
  (``--clip-weights`` / ``$SARKIT_CLIP_WEIGHTS``; ``--clip-model`` an open_clip name or a model-config JSON),
  images resized to the encoder's input size and standardised with its mean/std.
"""

from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sarkit.errors import CheckpointError, InputError
from sarkit.weights import INCEPTION, read_state_dict, resolve

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_DIM = 2048
INCEPTION_SIZE = 299


def build_inception() -> nn.Module:
    """torchvision Inception-v3 (no aux head, no init) with ``fc`` = identity: 2048-d pool features."""
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    net.fc = nn.Identity()
    return net


def load_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Inception-v3 feature network with weights from ``path`` / ``$SARKIT_FID_WEIGHTS``, in eval mode."""
    p = resolve(INCEPTION, path)
    state = {k: v for k, v in read_state_dict(p).items() if not k.startswith(("AuxLogits.", "fc."))}
    net = build_inception()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{p} is not a torchvision inception_v3 state dict: "
                              f"{str(exc).splitlines()[0][:160]}") from None
    return net.to(device).eval()


def to_rgb(x01: torch.Tensor, modality: str, bands: Sequence[str]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] → 3 channels: optical B4,B3,B2 (or 3 bands as is); SAR (VV, VH, (VV+VH)/2)."""
    c = x01.shape[1]
    upper = [b.upper() for b in bands]
    if modality == "optical":
        if c == 3:
            return x01
        if all(b in upper for b in ("B4", "B3", "B2")):
            return x01[:, [upper.index("B4"), upper.index("B3"), upper.index("B2")]]
        if c == 1:
            return x01.repeat(1, 3, 1, 1)
        raise InputError(f"FID, LPIPS and SAM need RGB: the optical images have bands {', '.join(bands)} without B4, B3, B2")
    if c == 1:
        return x01.repeat(1, 3, 1, 1)
    if c == 2:
        return torch.cat([x01, x01.mean(dim=1, keepdim=True)], dim=1)
    return x01[:, :3]


def rgb_bands(modality: str, bands: Sequence[str]) -> list[str]:
    """The three channels ``to_rgb`` makes of ``bands``, named (e.g. B4, B3, B2 or VV, VH, (VV+VH)/2)."""
    b = list(bands)
    upper = [x.upper() for x in b]
    if len(b) == 1:
        return b * 3
    if modality == "optical":
        if len(b) != 3 and all(x in upper for x in ("B4", "B3", "B2")):
            return [b[upper.index(x)] for x in ("B4", "B3", "B2")]
        return b[:3]
    if len(b) == 2:
        return [b[0], b[1], f"({b[0]}+{b[1]})/2"]
    return b[:3]


class FeatureStats:
    """Streaming mean and covariance of feature vectors: running n, Σx and Σxxᵀ in float64."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self.s = np.zeros(dim, dtype=np.float64)
        self.ss = np.zeros((dim, dim), dtype=np.float64)

    def update(self, feats: np.ndarray | torch.Tensor) -> None:
        """Add a batch (N, D) of features."""
        f = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats, np.float64)
        self.n += f.shape[0]
        self.s += f.sum(axis=0)
        self.ss += f.T @ f

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """``μ = Σx/n`` and the sample covariance ``(Σxxᵀ − n·μμᵀ)/(n − 1)``."""
        if self.n < 2:
            raise InputError(f"FID needs at least 2 samples, got {self.n}")
        mu = self.s / self.n
        cov = (self.ss - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """``‖μ1−μ2‖² + tr(Σ1 + Σ2 − 2(Σ1Σ2)^½)`` (real part; ε·I added when the square root is not finite)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are expected with few samples; handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if isinstance(covmean, tuple):  # old scipy returned (sqrtm, errest) with disp=False
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        off = np.eye(sigma1.shape[0]) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covmean = linalg.sqrtm((sigma1 + off) @ (sigma2 + off))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


class InceptionExtractor:
    """Images in [0, 1] (N, 3, H, W) → 2048-d Inception pool features (resized to 299, ImageNet-normalised)."""

    def __init__(self, net: nn.Module, device: str | torch.device = "cpu") -> None:
        self.net = net
        self.device = torch.device(device)
        self.dim = INCEPTION_DIM
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, rgb01: torch.Tensor) -> torch.Tensor:
        x = rgb01.to(self.device, torch.float32).clamp(0, 1)
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std).float()


class ClipExtractor:
    """Images in [0, 1] (N, 3, H, W) → open_clip image embeddings via ``sarkit.models.clip`` (offline weights only)."""

    def __init__(self, model: str, weights: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu") -> None:
        from sarkit.models.clip import load_clip_image_encoder

        self.device = torch.device(device)
        self.encoder = load_clip_image_encoder(model, weights_path=weights, device=self.device)
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.encoder.image_size, self.encoder.image_size, device=self.device)
            self.dim = int(self.encoder.encode(probe).shape[-1])

    @torch.no_grad()
    def __call__(self, rgb01: torch.Tensor) -> torch.Tensor:
        from sarkit.models.clip import clip_preprocess

        e = self.encoder
        x = clip_preprocess(rgb01.to(self.device, torch.float32).clamp(0, 1), e.image_size, e.mean, e.std)
        return e.encode(x).float()
