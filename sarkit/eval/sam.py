"""Segment Anything (SAM) as the network F of the semantic map similarity: ``--sms-model sam``.

SMS = 1/|V| · Σ_{p∈V} ‖F(pred)_p − F(target)_p‖² over the valid pixels V. With SAM, F is defined as:

* prompts: a fixed G×G grid of positive point prompts (G = ``GRID`` = 8, so K = 64) at
  ``((i + ½)·W/G, (j + ½)·H/G)``, i, j = 0 … G−1, in tile pixel coordinates (x, y), one point per prompt;
* for each prompt k, ``z_k`` = SAM's single-mask logits (``multimask_output=False``, logits rather than the
  thresholded mask) brought back to the tile's H×W exactly as ``SamPredictor.predict_torch`` does
  (``Sam.postprocess_masks``);
* ``F(image)_p = softmax(z_1(p), …, z_K(p), 0)``: a probability vector over the K prompt masks plus one
  constant zero "background" logit.

The same prompts are used on the prediction and on the target, so SMS measures how differently SAM partitions
the two images; 0 ≤ SMS ≤ 2 (squared distance of two probability vectors).

Input: images in [0, 1], three channels (optical B4, B3, B2; SAR as (VV, VH, (VV + VH)/2), the mapping FID
uses), nodata set to 0, scaled to SAM's 0–255 pixel range, resized (bilinear, antialiased) so that the longer
side is the encoder's ``img_size``, then normalised and padded by ``Sam.preprocess``.

Weights: ``--sam-weights PATH`` or ``$SARKIT_SAM_WEIGHTS`` (found by ``sarkit.weights``, kind ``SAM``), an
official SAM checkpoint (``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``, ``sam_vit_h_4b8939.pth``) read
with ``torch.load(weights_only=True)``, or the same tensors as safetensors. The model is built from
``segment_anything``'s classes with the configuration read off the tensor shapes (``infer_config``), never with
its ``build_sam*`` loaders (they unpickle). The mask decoder's head count is not visible in the shapes and is
SAM's fixed 8.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sarkit.errors import CheckpointError, InputError
from sarkit.eval.segmetrics import sms_map
from sarkit.weights import SAM, read_state_dict, resolve

GRID = 8
DECODER_HEADS = 8
#: Prompts decoded together (bounds the decoder's per-prompt copies of the image embedding).
PROMPT_CHUNK = 16
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def import_sam() -> Any:
    """``segment_anything.modeling``, or a one-line ``InputError`` telling how to install it."""
    try:
        from segment_anything import modeling
    except ImportError:
        raise InputError("--sms-model sam needs the segment-anything package: pip install 'sarkit[sam]'") from None
    return modeling


@dataclass
class SamConfig:
    """The architecture of a SAM checkpoint, as read off its tensor shapes."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    qkv_bias: bool
    global_attn_indexes: list[int]
    window_size: int
    prompt_embed_dim: int
    mask_in_chans: int
    decoder_depth: int
    decoder_mlp_dim: int
    attention_downsample_rate: int
    num_multimask_outputs: int
    iou_head_depth: int
    iou_head_hidden_dim: int
    decoder_heads: int = DECODER_HEADS

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding: ``img_size / patch_size``."""
        return self.img_size // self.patch_size

    def describe(self) -> str:
        """A short name such as ``ViT embed 768, depth 12, 12 heads, 1024 px``."""
        return (f"SAM ViT embed {self.embed_dim}, depth {self.depth}, {self.num_heads} heads, "
                f"{self.img_size} px")


def _indexed(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Sorted distinct integers N of keys ``prefix.N.…``."""
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := pat.match(k))})


def _shape(state: dict[str, torch.Tensor], key: str, path: Path | str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{path} is not a Segment Anything checkpoint: {key} is missing")
    return tuple(state[key].shape)


def infer_config(state: dict[str, torch.Tensor], path: Path | str = "SAM weights") -> SamConfig:
    """SAM's configuration from tensor shapes: dims, depths, heads = embed/head_dim, global blocks = those whose
    ``rel_pos_h`` spans the whole embedding (length 2·(img_size/patch) − 1), window size from the others."""
    enc, dec, pe = "image_encoder", "mask_decoder", "prompt_encoder"
    embed, _, patch, _ = _shape(state, f"{enc}.patch_embed.proj.weight", path)
    grid = _shape(state, f"{enc}.pos_embed", path)[1]
    blocks = _indexed(state, f"{enc}.blocks")
    if not blocks:
        raise CheckpointError(f"{path} is not a Segment Anything checkpoint: no image encoder blocks")
    rel = [_shape(state, f"{enc}.blocks.{i}.attn.rel_pos_h", path) for i in blocks]
    head_dim = rel[0][1]
    global_idx = [i for i, r in zip(blocks, rel) if r[0] == 2 * grid - 1]
    windows = {(r[0] + 1) // 2 for i, r in zip(blocks, rel) if i not in global_idx}
    if len(windows) > 1 or embed % head_dim:
        raise CheckpointError(f"{path}: unexpected SAM encoder attention shapes (head dim {head_dim}, "
                              f"windows {sorted(windows)})")
    mlp_hidden = _shape(state, f"{enc}.blocks.{blocks[0]}.mlp.lin1.weight", path)[0]
    prompt_dim = _shape(state, f"{pe}.no_mask_embed.weight", path)[1]
    internal = _shape(state, f"{dec}.transformer.layers.0.cross_attn_token_to_image.q_proj.weight", path)[0]
    iou_layers = _indexed(state, f"{dec}.iou_prediction_head.layers")
    return SamConfig(
        img_size=grid * patch, patch_size=patch, embed_dim=embed, depth=len(blocks), num_heads=embed // head_dim,
        mlp_ratio=mlp_hidden / embed, qkv_bias=f"{enc}.blocks.{blocks[0]}.attn.qkv.bias" in state,
        global_attn_indexes=global_idx, window_size=windows.pop() if windows else 0,
        prompt_embed_dim=prompt_dim,
        mask_in_chans=_shape(state, f"{pe}.mask_downscaling.3.weight", path)[0],
        decoder_depth=len(_indexed(state, f"{dec}.transformer.layers")),
        decoder_mlp_dim=_shape(state, f"{dec}.transformer.layers.0.mlp.lin1.weight", path)[0],
        attention_downsample_rate=prompt_dim // internal,
        num_multimask_outputs=_shape(state, f"{dec}.mask_tokens.weight", path)[0] - 1,
        iou_head_depth=len(iou_layers),
        iou_head_hidden_dim=_shape(state, f"{dec}.iou_prediction_head.layers.0.weight", path)[0],
    )


def build_sam(cfg: SamConfig) -> nn.Module:
    """A ``segment_anything`` ``Sam`` with the architecture ``cfg`` (random weights, eval mode)."""
    m = import_sam()
    e = cfg.embedding_size
    encoder = m.ImageEncoderViT(
        depth=cfg.depth, embed_dim=cfg.embed_dim, img_size=cfg.img_size, mlp_ratio=cfg.mlp_ratio,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=cfg.num_heads, patch_size=cfg.patch_size,
        qkv_bias=cfg.qkv_bias, use_rel_pos=True, global_attn_indexes=tuple(cfg.global_attn_indexes),
        window_size=cfg.window_size, out_chans=cfg.prompt_embed_dim)
    prompt = m.PromptEncoder(embed_dim=cfg.prompt_embed_dim, image_embedding_size=(e, e),
                             input_image_size=(cfg.img_size, cfg.img_size), mask_in_chans=cfg.mask_in_chans)
    transformer = m.TwoWayTransformer(depth=cfg.decoder_depth, embedding_dim=cfg.prompt_embed_dim,
                                      mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_heads,
                                      attention_downsample_rate=cfg.attention_downsample_rate)
    decoder = m.MaskDecoder(num_multimask_outputs=cfg.num_multimask_outputs, transformer=transformer,
                            transformer_dim=cfg.prompt_embed_dim, iou_head_depth=cfg.iou_head_depth,
                            iou_head_hidden_dim=cfg.iou_head_hidden_dim)
    return m.Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder,
                 pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD)).eval()


def load_sam(path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
             ) -> tuple[nn.Module, SamConfig, Path]:
    """Build SAM from the shapes of a local checkpoint and load its tensors (strict) onto ``device``."""
    import_sam()
    p = resolve(SAM, path)
    state = read_state_dict(p)
    cfg = infer_config(state, p)
    sam = build_sam(cfg)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{p} does not fit the SAM architecture read from its shapes "
                              f"({cfg.describe()}): {str(exc).splitlines()[0][:160]}") from None
    return sam.to(device).eval(), cfg, p


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """``(round(h·s), round(w·s))`` with ``s = long_side / max(h, w)`` (SAM's ResizeLongestSide)."""
    s = long_side / max(h, w)
    return int(h * s + 0.5), int(w * s + 0.5)


def grid_points(h: int, w: int, g: int = GRID) -> torch.Tensor:
    """(g², 2) prompt points ``((i + ½)·w/g, (j + ½)·h/g)`` as (x, y), row-major."""
    ys = (torch.arange(g, dtype=torch.float32) + 0.5) * (h / g)
    xs = (torch.arange(g, dtype=torch.float32) + 0.5) * (w / g)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


class SamSegmenter:
    """F(image) = softmax over SAM's K = G² point-prompt mask logits and one zero background logit."""

    def __init__(self, sam: nn.Module, cfg: SamConfig, path: Path, device: str | torch.device = "cpu",
                 grid: int = GRID) -> None:
        self.sam, self.cfg, self.path = sam, cfg, path
        self.device = torch.device(device)
        self.grid = grid

    @property
    def num_prompts(self) -> int:
        return self.grid * self.grid

    def describe(self) -> dict[str, Any]:
        """What the report records about the network."""
        return {"model": "sam", "weights": str(self.path), "architecture": self.cfg.describe(),
                "prompts": f"{self.grid}x{self.grid} point grid, single-mask logits + zero background"}

    def _encode(self, rgb01: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image embeddings (N, C, e, e) of [0, 1] images and their resized (unpadded) size."""
        h, w = rgb01.shape[-2:]
        size = preprocess_shape(h, w, self.cfg.img_size)
        x = rgb01.to(self.device, torch.float32).clamp(0, 1) * 255.0
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.sam.image_encoder(self.sam.preprocess(x)), size

    def _prompts(self, h: int, w: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse and dense prompt embeddings of the grid points scaled to the resized image."""
        pts = grid_points(h, w, self.grid)
        pts = pts * torch.tensor([size[1] / w, size[0] / h])
        coords = pts.to(self.device).unsqueeze(1)  # (K, 1, 2): one point per prompt
        labels = torch.ones(coords.shape[:2], device=self.device)
        return self.sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)

    @torch.no_grad()
    def logits(self, rgb01: torch.Tensor) -> torch.Tensor:
        """(N, K, H, W) single-mask logits of the K grid prompts, at the images' own size."""
        if rgb01.shape[1] != 3:
            raise InputError(f"SAM needs 3-channel (RGB) images, got {rgb01.shape[1]} channels")
        n, _, h, w = rgb01.shape
        emb, size = self._encode(rgb01)
        sparse, dense = self._prompts(h, w, size)
        pe = self.sam.prompt_encoder.get_dense_pe()
        out = []
        for i in range(n):
            maps = []
            for s in range(0, sparse.shape[0], PROMPT_CHUNK):
                low = self.sam.mask_decoder(image_embeddings=emb[i:i + 1], image_pe=pe,
                                            sparse_prompt_embeddings=sparse[s:s + PROMPT_CHUNK],
                                            dense_prompt_embeddings=dense[s:s + PROMPT_CHUNK],
                                            multimask_output=False)[0]
                maps.append(self.sam.postprocess_masks(low, size, (h, w))[:, 0])
            out.append(torch.cat(maps))
        return torch.stack(out).float()

    def probabilities(self, rgb01: torch.Tensor) -> torch.Tensor:
        """F: (N, K + 1, H, W) softmax over the K prompt logits and a zero background logit."""
        return with_background(self.logits(rgb01)).softmax(dim=1)

    def sms_map(self, pred01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
        """Per-pixel ``‖F(pred) − F(target)‖²``, (N, H, W); both images encoded in one batch."""
        n = pred01.shape[0]
        z = with_background(self.logits(torch.cat([pred01, target01])))
        return sms_map(z[:n], z[n:]).cpu()


def with_background(z: torch.Tensor) -> torch.Tensor:
    """Append one constant zero logit map: (N, K, H, W) → (N, K + 1, H, W)."""
    return torch.cat([z, z.new_zeros((z.shape[0], 1) + tuple(z.shape[2:]))], dim=1)


def load_sam_segmenter(path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                       grid: int = GRID) -> SamSegmenter:
    """``SamSegmenter`` around the checkpoint at ``path`` / ``$SARKIT_SAM_WEIGHTS``."""
    sam, cfg, p = load_sam(path, device)
    return SamSegmenter(sam, cfg, p, device, grid)

