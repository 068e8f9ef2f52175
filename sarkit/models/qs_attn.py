"""QS-Attn, query-selected attention for contrastive translation (Hu et al., CVPR 2022): CUT whose PatchNCE queries
on the deepest layers are chosen, and pooled, by the attention of the source image's own features.

Everything is CUT's (``sarkit.models.cut``: networks, losses, λs, the NCE layers 0, 4, 8, 12, 16, the identity NCE,
the channel map) except how the PatchNCE locations are sampled on the NCE layers that are outputs of residual
blocks (12 and 16 by default, the last two of the five; the authors' code hard-codes "the last two"). On those,
for each NCE term NCE(src → tgt), with F the (HW, C) features of E(src) at the layer:

- ``global`` (the default, as the authors' code): A = softmax(F·Fᵀ) over all HW positions (one HW×HW matrix per
  image and layer); its row entropy H_i = −Σ_j A_ij·log A_ij; the ``num_patches`` rows of lowest entropy are the
  queries; the feature at query i is Σ_j A_ij·F_j, for E(src) and, with the same rows, for E(tgt).
- ``local``: A_i = softmax over the 7×7 neighbourhood of position i (zero-padded at the borders, the padding taking
  part in the softmax as in the reference's zero-padded unfold); the entropy of those rows selects the queries,
  and the same weights pool each query's neighbourhood of E(src) and of E(tgt).
- ``local_global``: the queries are selected by the local rows' entropy and routed with the global rows.

The attention of an NCE term comes from its source image's features and pools the source's and the translation's
features alike: real A and G(a) for NCE, real B (channel-mapped) and G(b) for the identity NCE, as the authors'
code does. The attention is not detached (as in the reference): the loss also trains the encoder through it. The
other NCE layers keep CUT's random locations. No new learnable parameters. Attention logits and softmax are computed
in float32 even under autocast (bf16 dot products of features with norms in the hundreds would move the logits by
several units).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager, Sequence

import torch
import torch.nn.functional as F

from sarkit.errors import InputError
from sarkit.models.blocks import PatchSampler
from sarkit.models.cut import CUT, CUTOptions
from sarkit.models.registry import register_model

QS_MODES = ("global", "local", "local_global")
#: side of the neighbourhood of the local attention (the reference's unfold kernel)
LOCAL_WINDOW = 7


@dataclass
class QSAttnOptions(CUTOptions):
    """QS-Attn hyper-parameters: CUT's, plus how the attention is taken (the authors' default: global)."""

    qs_mode: str = "global"       # global | local | local_global

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.qs_mode not in QS_MODES:
            raise InputError(f"--model-opt qs_mode={self.qs_mode!r} is not a QS-Attn mode; use one of "
                             f"{', '.join(QS_MODES)}")
        if self.num_patches < 1:
            raise InputError(f"--model-opt num_patches={self.num_patches} must be at least 1")


@dataclass(frozen=True)
class QuerySelection:
    """The queries chosen on a source image's features: their flat positions ``ids`` (B, P) and their attention
    rows ``weights``: (B, P, HW) over every position (``local`` False) or (B, P, k²) over each query's k×k
    neighbourhood (``local`` True)."""

    ids: torch.Tensor
    weights: torch.Tensor
    local: bool


def _full_precision(device: torch.device) -> ContextManager:
    """A context with autocast off on ``device`` when it is on (attention logits are computed in float32)."""
    if device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


def flat_features(feat: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, HW, C), positions in row-major order."""
    return feat.flatten(2).transpose(1, 2)


def row_entropy(attn: torch.Tensor) -> torch.Tensor:
    """Entropy −Σ p·log p of every row (last axis) of ``attn``, with 0·log 0 = 0."""
    return torch.special.entr(attn).sum(-1)


def lowest_entropy(attn: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) positions of the ``k`` rows of ``attn`` (B, N, ·) with the lowest entropy, lowest first."""
    with torch.no_grad():
        ent = row_entropy(attn.float())
        return torch.topk(ent, min(k, ent.shape[1]), dim=1, largest=False, sorted=True).indices


def rows(attn: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The rows ``ids`` (B, P) of ``attn`` (B, N, M) → (B, P, M)."""
    return attn.gather(1, ids[..., None].expand(-1, -1, attn.shape[-1]))


def global_attention(flat: torch.Tensor) -> torch.Tensor:
    """softmax(F·Fᵀ) over the last axis, (B, N, C) → (B, N, N), in float32."""
    with _full_precision(flat.device):
        f = flat.float()
        return torch.bmm(f, f.transpose(1, 2)).softmax(-1)


def global_rows(flat: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The rows ``ids`` (B, P) of softmax(F·Fᵀ), computed for those rows only: (B, P, N), in float32."""
    with _full_precision(flat.device):
        f = flat.float()
        q = f.gather(1, ids[..., None].expand(-1, -1, f.shape[-1]))
        return torch.bmm(q, f.transpose(1, 2)).softmax(-1)


def local_attention(feat: torch.Tensor, window: int = LOCAL_WINDOW) -> torch.Tensor:
    """softmax over the zero-padded ``window``² neighbourhood of every position of the dot products of its feature
    with its neighbours' (row-major offsets): (B, C, H, W) → (B, HW, window²), in float32."""
    r = window // 2
    h, w = feat.shape[-2:]
    with _full_precision(feat.device):
        f = feat.float()
        padded = F.pad(f, (r, r, r, r))
        dots = [(f * padded[:, :, dy:dy + h, dx:dx + w]).sum(1) for dy in range(window) for dx in range(window)]
        return torch.stack(dots, -1).flatten(1, 2).softmax(-1)


def neighbourhoods(feat: torch.Tensor, ids: torch.Tensor, window: int = LOCAL_WINDOW) -> torch.Tensor:
    """The zero-padded ``window``² neighbourhoods (row-major offsets) of the positions ``ids`` (B, P):
    (B, C, H, W) → (B, P, window², C)."""
    r = window // 2
    b, c, h, w = feat.shape
    wp = w + 2 * r
    padded = flat_features(F.pad(feat, (r, r, r, r)))                        # (B, (H+2r)·(W+2r), C)
    offsets = (torch.arange(window, device=ids.device)[:, None] * wp
               + torch.arange(window, device=ids.device)[None, :]).flatten()
    corner = (ids // w) * wp + ids % w                                      # window's top-left in the padded map
    index = corner[..., None] + offsets                                    # (B, P, window²)
    return padded[torch.arange(b, device=ids.device)[:, None, None], index]


def select_queries(feat: torch.Tensor, num_patches: int, mode: str, window: int = LOCAL_WINDOW) -> QuerySelection:
    """The ``num_patches`` lowest-entropy queries of the source features ``feat`` (B, C, H, W) and their attention
    rows, for ``mode`` global, local or local_global."""
    if mode == "global":
        attn = global_attention(flat_features(feat))
        ids = lowest_entropy(attn, num_patches)
        return QuerySelection(ids, rows(attn, ids), local=False)
    if mode == "local":
        attn = local_attention(feat, window)
        ids = lowest_entropy(attn, num_patches)
        return QuerySelection(ids, rows(attn, ids), local=True)
    if mode == "local_global":
        with torch.no_grad():
            ids = lowest_entropy(local_attention(feat, window), num_patches)
        return QuerySelection(ids, global_rows(flat_features(feat), ids), local=False)
    raise InputError(f"--model-opt qs_mode={mode!r} is not a QS-Attn mode; use one of {', '.join(QS_MODES)}")


def pool(feat: torch.Tensor, sel: QuerySelection, window: int = LOCAL_WINDOW) -> torch.Tensor:
    """Features (B, C, H, W) routed by the attention rows of ``sel``: Σ_j A_ij·F_j per query → (B·P, C)."""
    c = feat.shape[1]
    if sel.local:
        v = neighbourhoods(feat, sel.ids, window)                            # (B, P, k², C)
        out = torch.einsum("bpk,bpkc->bpc", sel.weights.to(v.dtype), v)
    else:
        flat = flat_features(feat)
        out = torch.bmm(sel.weights.to(flat.dtype), flat)
    return out.reshape(-1, c)


class QuerySelectedSampler(PatchSampler):
    """PatchNCE sampler whose layers ``attn_layers`` (positions in the feature list) take query-selected attention
    pooling (``select_queries``, ``pool``); the other layers sample random locations as ``PatchSampler``. A pick
    returned for the keys' features (``QuerySelection`` or location ids) is passed back for the queries'."""

    def __init__(self, attn_layers: Sequence[int], mode: str = "global", nc: int = 256,
                 window: int = LOCAL_WINDOW) -> None:
        super().__init__(nc)
        self.attn_layers = tuple(attn_layers)
        self.mode = mode
        self.window = window

    @classmethod
    def from_sampler(cls, base: PatchSampler, attn_layers: Sequence[int], mode: str) -> "QuerySelectedSampler":
        """A query-selected sampler that takes over the MLP heads of ``base`` (the same parameters)."""
        new = cls(attn_layers, mode, base.nc)
        new.heads, new.ready = base.heads, base.ready
        return new

    def sample(self, layer: int, feat: torch.Tensor, num_patches: int, pick: Any = None) -> tuple[torch.Tensor, Any]:
        """Attention-pooled features at the lowest-entropy queries on ``attn_layers``; random locations elsewhere."""
        if layer not in self.attn_layers:
            return super().sample(layer, feat, num_patches, pick)
        if pick is None:
            pick = select_queries(feat, num_patches, self.mode, self.window)
        return pool(feat, pick, self.window), pick


@register_model("qs-attn")
class QSAttn(CUT):
    """CUT with query-selected attention on the NCE layers at residual-block outputs."""

    Options = QSAttnOptions

    def build(self) -> None:
        """CUT's networks; the PatchNCE sampler (same heads) selects queries on the residual-block layers."""
        super().build()
        blocks = set(self.nets["G"].block_layers(self.layers))
        #: positions in ``self.layers`` of the layers that take query-selected attention
        self.attn_layers = tuple(i for i, layer in enumerate(self.layers) if layer in blocks)
        self.nets["F"] = QuerySelectedSampler.from_sampler(self.nets["F"], self.attn_layers, self.opts.qs_mode)
