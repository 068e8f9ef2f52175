"""Random weight files for the perceptual losses (LPIPS AlexNet + heads, the VGG19 trunk), written by code, seeded:
the losses load them through the real loading code, as they would load the published files."""

from __future__ import annotations

from pathlib import Path

import torch

LPIPS_CHANNELS = (64, 192, 384, 256, 256)


def write_lpips_weights(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """(heads file, AlexNet file) of random LPIPS weights in ``folder``."""
    from torchvision.models import alexnet

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    trunk = {f"features.{k}": v for k, v in alexnet(weights=None).features.state_dict().items()}
    torch.save(trunk, folder / "alexnet.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(LPIPS_CHANNELS)},
               folder / "alex.pth")
    return folder / "alex.pth", folder / "alexnet.pth"


def write_vgg19_weights(folder: Path, seed: int = 0) -> Path:
    """A torchvision-layout state dict (``features.N.*``) of a random VGG19 trunk up to conv4_2 in ``folder``."""
    from sarkit.models.contextual import vgg19_trunk

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in vgg19_trunk().state_dict().items()}, path)
    return path
