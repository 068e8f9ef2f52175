"""Tiny random open_clip models written to files, for tests of the offline CLIP loading code (no download)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

_VISION = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8}
#: Text tower with a 64-token vocabulary: enough for image-encoder tests, not for open_clip's tokenizer.
TINY_CFG: dict[str, Any] = {"embed_dim": 16, "vision_cfg": _VISION,
                            "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
#: Text tower with the tokenizer's vocabulary (49,408), for tests that encode prompts or captions.
TOKENIZER_CFG: dict[str, Any] = {"embed_dim": 16, "vision_cfg": _VISION,
                                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2,
                                              "layers": 1}}


def make_tiny_clip(tmp: Path, name: str = "sarkit-tiny-clip", cfg: dict[str, Any] = TINY_CFG
                   ) -> tuple[Path, Path, torch.nn.Module]:
    """A tiny open_clip model: its config (JSON, registered with open_clip as ``name``), its seeded random weights
    saved to a file, and the model in eval mode."""
    import open_clip

    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    model = open_clip.create_model(name)
    weights = tmp / f"{name}.pt"
    torch.save(model.state_dict(), weights)
    return path, weights, model.eval()
