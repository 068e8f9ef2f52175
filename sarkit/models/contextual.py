"""The contextual loss CX (Mechrez, Talmi and Zelnik-Manor, ECCV 2018) on VGG19 features, as the authors' code
(``CX/CSFlow.py``) computes it.

For output features x_i and target features y_j (C-vectors at the positions i of the output and j of the target):

* centre both on the target's mean over the batch and positions, μ = mean_{n,j} y_j;  x ← x − μ, y ← y − μ;
* cosine distance d_ij = 1 − ⟨x_i/‖x_i‖, y_j/‖y_j‖⟩;
* relative distance d̃_ij = d_ij / (min_k d_ik + ε), ε = 1e-5;
* affinity w_ij = exp((1 − d̃_ij)/h), bandwidth h = 0.5; normalised per output position: CX_ij = w_ij / Σ_k w_ik;
* CX(x, y) = mean_j max_i CX_ij (for each target feature, its best-matching output feature), and the loss is
  −log CX, averaged over the batch.

When a layer has more than ``MAX_POSITIONS`` = 65 × 65 positions, the same 65 × 65 positions, drawn at random, are
taken from both (the authors' random pooling), so that the CX matrices stay at most 4225² a sample.

Features: VGG19 ``conv3_2`` and ``conv4_2`` after their ReLU (``features[13]`` and ``features[22]`` of torchvision's
``vgg19``), on RGB images in [0, 1] standardised with the ImageNet mean and std; the loss is the sum over the two
layers. Weights from a local file only (``sarkit.weights.VGG19``: ``--vgg19-weights`` / ``$SARKIT_VGG19_WEIGHTS`` /
the torch hub cache).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from sarkit.errors import CheckpointError
from sarkit.weights import VGG19, read_state_dict, resolve

EPS = 1e-5
BANDWIDTH = 0.5
MAX_SIDE = 65
MAX_POSITIONS = MAX_SIDE * MAX_SIDE
#: ``vgg19().features`` indices of the ReLUs after conv3_2 and conv4_2.
VGG19_LAYERS: dict[str, int] = {"conv3_2": 13, "conv4_2": 22}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, P, Q) distances 1 − cos between the (N, C, P) output and (N, C, Q) target features, both centred on the
    target's mean over the batch and positions first."""
    mu = y.mean(dim=(0, 2), keepdim=True)
    xn = nn.functional.normalize(x - mu, dim=1)
    yn = nn.functional.normalize(y - mu, dim=1)
    return 1.0 - torch.bmm(xn.transpose(1, 2), yn)


def contextual_similarity(d: torch.Tensor, h: float = BANDWIDTH, eps: float = EPS) -> torch.Tensor:
    """CX_ij of distances d (N, P, Q): d̃ = d / (min_j d + ε), w = exp((1 − d̃)/h), w normalised over j."""
    rel = d / (d.min(dim=2, keepdim=True).values + eps)
    return torch.softmax((1.0 - rel) / h, dim=2)  # = w_ij / Σ_k w_ik, computed stably


def sample_positions(x: torch.Tensor, y: torch.Tensor, max_positions: int = MAX_POSITIONS,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) features → (N, C, P): all positions, or the same ``max_positions`` random ones of both when the
    maps have more."""
    xf, yf = x.flatten(2), y.flatten(2)
    if xf.shape[2] <= max_positions and yf.shape[2] <= max_positions:
        return xf, yf
    if xf.shape[2] != yf.shape[2]:
        raise ValueError(f"random position sampling needs maps of one size, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    idx = torch.randperm(xf.shape[2], generator=generator)[:max_positions].to(x.device)
    return xf[:, :, idx], yf[:, :, idx]


def contextual_loss(x: torch.Tensor, y: torch.Tensor, h: float = BANDWIDTH, eps: float = EPS,
                    max_positions: int = MAX_POSITIONS, generator: torch.Generator | None = None) -> torch.Tensor:
    """−log(mean_j max_i CX_ij) of output features ``x`` and target features ``y`` (N, C, H, W), batch mean."""
    xf, yf = sample_positions(x.float(), y.float(), max_positions, generator)
    cx = contextual_similarity(cosine_distance(xf, yf), h, eps)
    return -torch.log(cx.max(dim=1).values.mean(dim=1)).mean()


def vgg19_trunk() -> nn.Sequential:
    """torchvision's VGG19 ``features`` up to the ReLU after conv4_2, random weights."""
    from torchvision.models import vgg19

    return vgg19(weights=None).features[:VGG19_LAYERS["conv4_2"] + 1]


def read_vgg19(path: os.PathLike | str) -> nn.Sequential:
    """The trunk with the ``features.*`` tensors of a torchvision vgg19 state dict (those it has, strictly)."""
    state = read_state_dict(path)
    trunk = vgg19_trunk()
    wanted = {k for k in trunk.state_dict()}
    feats = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    feats = {k: v for k, v in feats.items() if k in wanted}
    try:
        trunk.load_state_dict(feats, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} is not a torchvision vgg19 state dict: "
                              f"{str(exc).splitlines()[0][:160]}") from None
    return trunk


class VGGContextual(nn.Module):
    """CX on VGG19 conv3_2 and conv4_2: ``forward(out01, target01)`` → the summed loss of RGB images in [0, 1]."""

    def __init__(self, trunk: nn.Sequential, max_positions: int = MAX_POSITIONS) -> None:
        super().__init__()
        self.trunk = trunk
        self.max_positions = max_positions
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def features(self, x01: torch.Tensor) -> list[torch.Tensor]:
        """conv3_2 and conv4_2 (after ReLU) of the standardised images."""
        h = (x01.float() - self.mean) / self.std
        out, marks = [], set(VGG19_LAYERS.values())
        for i, layer in enumerate(self.trunk):
            h = layer(h)
            if i in marks:
                out.append(h)
        return out

    def forward(self, out01: torch.Tensor, target01: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        n = out01.shape[0]
        total = out01.new_zeros((), dtype=torch.float32)
        for f in self.features(torch.cat([out01, target01])):
            total = total + contextual_loss(f[:n], f[n:], max_positions=self.max_positions, generator=generator)
        return total


def load_vgg_contextual(weights: os.PathLike | str | None = None) -> tuple[VGGContextual, str]:
    """The CX module with VGG19 weights found by ``sarkit.weights`` (``WeightsNotFoundError`` naming
    --vgg19-weights / $SARKIT_VGG19_WEIGHTS when absent), in eval mode, and the file it read."""
    path = resolve(VGG19, weights or None)
    return VGGContextual(read_vgg19(path)).eval(), str(path)


__all__ = ["BANDWIDTH", "EPS", "MAX_POSITIONS", "VGG19_LAYERS", "VGGContextual", "contextual_loss",
           "contextual_similarity", "cosine_distance", "load_vgg_contextual", "read_vgg19", "sample_positions"]
