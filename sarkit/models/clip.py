"""Frozen open_clip models, loaded without touching the network, and the RGB view fed to them: ``load_open_clip``
(the whole model: image and text towers, as CLIP-IQA needs) and ``load_clip_image_encoder`` (its image tower, for
pix2pix-clip and FID-CLIP).

Weights are found by ``sarkit.weights`` (kind ``CLIP``), in order: an explicit file (``--clip-weights PATH`` or
``$SARKIT_CLIP_WEIGHTS``), a file path given as the ``pretrained`` tag, or open_clip's own download cache for the
tag (the Hugging Face cache or ``~/.cache/clip``), looked up locally only. When none is there a one-line
``WeightsNotFoundError`` says how to provide them. ``model`` is an open_clip architecture name (``ViT-B-32``)
or a path to an open_clip model config JSON (``{"embed_dim", "vision_cfg", "text_cfg"}``), which is
registered under its file stem.

CLIP preprocessing is applied inside ``clip_preprocess`` on differentiable tensors: values in [0, 1] are resized
(bicubic, antialiased) to the encoder's input size and standardised with its mean/std.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from sarkit.errors import WeightsNotFoundError
from sarkit.weights import CLIP, CacheQuery, Source, locate

#: Environment variable naming a CLIP weights file for machines without network (``sarkit.weights.CLIP``).
CLIP_WEIGHTS_ENV = CLIP.env
DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"
_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipImageEncoder(NamedTuple):
    """A frozen image encoder: ``encode(images)`` on preprocessed (N, 3, S, S) → (N, D) embeddings."""

    encode: Callable[[torch.Tensor], torch.Tensor]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _model_name(model: str) -> str:
    """open_clip architecture name; a JSON config file is registered with open_clip under its stem."""
    import open_clip

    p = Path(model)
    if p.suffix == ".json":
        if not p.is_file():
            raise WeightsNotFoundError(f"CLIP model config not found: {p}; pass an open_clip model name or a JSON "
                                       f"config, and --clip-weights PATH or {CLIP_WEIGHTS_ENV}")
        open_clip.add_model_config(p)
        return p.stem
    return model


def _preprocess_stats(model: Any) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Input size and mean/std of an open_clip model's image preprocessing."""
    visual = model.visual
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", getattr(visual, "image_size", 224))
    if isinstance(size, (tuple, list)):
        size = size[0]
    mean = tuple(float(v) for v in cfg.get("mean", _OPENAI_MEAN))
    std = tuple(float(v) for v in cfg.get("std", _OPENAI_STD))
    return int(size), mean, std


class LoadedClip(NamedTuple):
    """A frozen open_clip model (image and text towers, CPU, eval mode), its registered architecture name (for
    ``open_clip.get_tokenizer``) and the weights file it was loaded from."""

    model: Any
    name: str
    path: Path


def load_open_clip(model: str = DEFAULT_CLIP_MODEL, pretrained: str = DEFAULT_CLIP_PRETRAINED,
                   weights_path: str | os.PathLike | None = None, cache_dir: str | None = None) -> LoadedClip:
    """Load a whole frozen open_clip model on the CPU from local weights only (``sarkit.weights``, kind CLIP)."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    name = _model_name(model)
    if name not in open_clip.list_models():
        raise WeightsNotFoundError(f"unknown CLIP model {model!r}; use an open_clip name such as "
                                   f"{DEFAULT_CLIP_MODEL} or a model config JSON")
    found = locate(CLIP, weights_path, query=CacheQuery(name, pretrained, cache_dir), fallback=pretrained or None)
    file = found.path
    force_pp: dict[str, Any] = {}
    quick_gelu = False
    if found.source is Source.CACHE:  # a tag's file: apply that tag's preprocessing and activation
        tag_cfg = get_pretrained_cfg(name, pretrained)
        force_pp = {k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg}
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))  # e.g. OpenAI weights were trained with QuickGELU
    try:
        clip = open_clip.create_model(name, pretrained=str(file), device="cpu", cache_dir=cache_dir,
                                      force_preprocess_cfg=force_pp or None, force_quick_gelu=quick_gelu)
    except Exception as exc:  # open_clip raises RuntimeError/KeyError/... for foreign or truncated files
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise WeightsNotFoundError(f"cannot load CLIP weights {file} for {model} ({msg}); pass a matching "
                                   f"--clip-weights PATH or {CLIP_WEIGHTS_ENV}") from None
    clip.eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    return LoadedClip(clip, name, Path(file))


def preprocess_stats(model: Any) -> tuple[int, tuple[float, float, float], tuple[float, float, float]]:
    """Input size and the RGB mean/std of an open_clip model's image preprocessing."""
    size, mean, std = _preprocess_stats(model)
    return size, mean[:3], std[:3]  # type: ignore[return-value]


def load_clip_image_encoder(model: str = DEFAULT_CLIP_MODEL, pretrained: str = DEFAULT_CLIP_PRETRAINED,
                            weights_path: str | os.PathLike | None = None, cache_dir: str | None = None,
                            device: str | torch.device = "cpu") -> ClipImageEncoder:
    """Load a frozen open_clip image tower: (encode_fn, image_size, mean, std). Offline only."""
    clip = load_open_clip(model, pretrained, weights_path, cache_dir).model
    visual = clip.visual.to(device).eval()
    size, mean, std = preprocess_stats(clip)
    return ClipImageEncoder(visual, size, mean, std)


def clip_preprocess(images01: torch.Tensor, image_size: int, mean: Sequence[float],
                    std: Sequence[float]) -> torch.Tensor:
    """CLIP's input transform on (N, 3, H, W) in [0, 1]: bicubic antialiased resize to S×S, (x − mean)/std."""
    x = images01.float()
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=False, antialias=True)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def rgb_indices(bands: Sequence[str]) -> list[int] | None:
    """Indices of B4, B3, B2 (true colour) in ``bands`` when all three are present, else None."""
    upper = [b.upper() for b in bands]
    if all(b in upper for b in ("B4", "B3", "B2")):
        return [upper.index("B4"), upper.index("B3"), upper.index("B2")]
    return None


def rgb_view(x: torch.Tensor, bands: Sequence[str]) -> torch.Tensor:
    """Three-channel view of (N, C, H, W) images for display and CLIP.

    Mapping: B4,B3,B2 when present (true colour); 3 channels as they are; 1 channel repeated to grey; 2 channels
    (dual-pol SAR VV, VH) as the false colour (c0, c1, (c0 + c1)/2); more than 3 other channels: the first 3.
    """
    idx = rgb_indices(bands)
    c = x.shape[1]
    if idx is not None and c == len(bands):
        return x[:, idx]
    if c == 3:
        return x
    if c == 1:
        return x.expand(-1, 3, -1, -1)
    if c == 2:
        return torch.cat([x, x.mean(1, keepdim=True)], 1)
    return x[:, :3]


def clip_cosine_loss(encoder: ClipImageEncoder, fake01: torch.Tensor, real01: torch.Tensor) -> torch.Tensor:
    """1 − cos(f(fake), f(real)) averaged over the batch, f the frozen encoder; no gradient through ``real``."""
    pf = clip_preprocess(fake01, encoder.image_size, encoder.mean, encoder.std)
    with torch.no_grad():
        pr = clip_preprocess(real01, encoder.image_size, encoder.mean, encoder.std)
        er = encoder.encode(pr).float()
    ef = encoder.encode(pf).float()
    return (1.0 - F.cosine_similarity(ef, er, dim=1)).mean()
