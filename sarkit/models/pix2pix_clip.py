"""pix2pix-clip: pix2pix plus a CLIP perceptual term L_CLIP = 1 − cos(f(G(x)), f(y)).

f is a frozen open_clip image encoder (default ViT-B-32 / laion2b_s34b_b79k from open_clip's local cache, or a
file from ``--clip-weights`` / ``$SARKIT_CLIP_WEIGHTS``). Images go from [-1, 1] to [0, 1], to their RGB view
(``sarkit.models.clip.rgb_view``: B4,B3,B2 when present; 1 band → grey; VV,VH → (VV, VH, mean); else the first three),
then through CLIP's own resize and mean/std. Gradients reach G only (the encoder's weights are frozen and the
target's embedding is computed without gradient). Total generator loss: GAN + λ_L1·L1 + λ_CLIP·L_CLIP, with
λ_CLIP = 1.0 by default (comparable in size to the GAN term; L_CLIP lies in [0, 2]).

The encoder is a frozen helper: it is not part of ``self.nets``, not saved in training states nor exported; its
identity (model, tag or weights path) is in the run's config.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
import torch

from sarkit.models.clip import CLIP_WEIGHTS_ENV, DEFAULT_CLIP_MODEL, DEFAULT_CLIP_PRETRAINED, ClipImageEncoder, clip_cosine_loss, \
    load_clip_image_encoder, rgb_view
from sarkit.models.pix2pix import Pix2Pix, check_upsample_option
from sarkit.models.registry import register_model


@dataclass
class Pix2PixClipOptions:
    """pix2pix hyper-parameters plus the CLIP term's weight and encoder."""

    lambda_l1: float = 100.0
    ngf: int = 64
    ndf: int = 64
    gan_mode: str = "vanilla"
    n_layers_d: int = 3
    lambda_clip: float = 1.0
    clip_model: str = DEFAULT_CLIP_MODEL
    clip_pretrained: str = DEFAULT_CLIP_PRETRAINED
    clip_weights: str = ""
    upsample: str = "resize"      # decoder: resize (bilinear ×2 + conv3×3; issue 17) | transpose (the paper's)

    def __post_init__(self) -> None:
        check_upsample_option(self.upsample)


class _Frozen:
    """Holds the frozen encoder outside ``nn.Module`` registration and moves it to the batch's device lazily."""

    def __init__(self, enc: ClipImageEncoder) -> None:
        self.enc = enc
        self.device: torch.device | None = None

    def on(self, device: torch.device) -> ClipImageEncoder:
        if self.device != device:
            self.enc.encode.to(device)  # type: ignore[attr-defined]
            self.device = device
        return self.enc


@register_model("pix2pix-clip")
class Pix2PixClip(Pix2Pix):
    """pix2pix with a frozen-CLIP embedding loss between the output and the target."""

    Options = Pix2PixClipOptions

    def build(self) -> None:
        """pix2pix networks, then the frozen CLIP image encoder (WeightsNotFoundError when unavailable)."""
        super().build()
        enc = load_clip_image_encoder(self.opts.clip_model, self.opts.clip_pretrained,
                                      self.opts.clip_weights or None)
        self._clip = _Frozen(enc)
        self.helper_records = {"clip": {"model": self.opts.clip_model, "pretrained": self.opts.clip_pretrained,
                                        "weights": self.opts.clip_weights or os.environ.get(CLIP_WEIGHTS_ENV) or None,
                                        "image_size": enc.image_size}}

    def generator_extra_loss(self, fake: torch.Tensor, target: torch.Tensor,
                             batch: dict[str, torch.Tensor]) -> dict[str, tuple[float, torch.Tensor]]:
        """λ_CLIP · (1 − cos(f(rgb(G(x))), f(rgb(y)))) on images mapped to [0, 1]."""
        bands = self.io.out_norm.get("bands", [])
        enc = self._clip.on(fake.device)
        fake01 = rgb_view((fake.float() + 1.0) * 0.5, bands)
        real01 = rgb_view((target.float() + 1.0) * 0.5, bands)
        return {"G_CLIP": (float(self.opts.lambda_clip), clip_cosine_loss(enc, fake01, real01))}
