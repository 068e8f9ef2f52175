"""CycleGAN-SC: CycleGAN with semantic guidance (after Du et al., "Semantic-guided contrastive learning for SAR
and optical image translation").

CycleGAN in both directions (``sarkit.models.cyclegan``), plus two frozen DeepLabV3 segmenters trained with
``sarkit train --model segmenter --modality sar|optical`` and passed as the options ``sar_segmenter`` and
``optical_segmenter`` (a RUN directory or a ``segmenter.safetensors``; each must be of its modality and use
the data's bands and normalisation ranges). They are not trained and not part of the training state; their
paths are recorded in the run's config. With A the input domain, B the other, S_X the segmenter of domain X
and y_X = argmax S_X(real_X) its (fixed) segmentation of the real image:

    L_all = λ1·L_cycle + λ2·λ1·L_idt + λ3·L_GAN + λ4·L_seg + λ5·L_sc,    λ = (10, 0.5, 1, 1, 1)

(λ2 is relative to λ1 as in the CycleGAN reference code).

* L_seg = CE(S_A(rec_A), y_A) + CE(S_B(rec_B), y_B): the reconstructions keep the segmentation of the reals.
* L_sc, the semantic-guided contrastive loss (``blocks.semantic_contrastive_loss``) on 1×1 locations of the
  generator encoder layers ``NCE_LAYERS`` (those inside the encoder), projected by a 2-layer 256-d MLP head per
  layer (``PatchSampler``; one set of heads per generator, trained with the generators). For a query at a
  location of the generated image, the positives are the same location of the real input plus the input's
  locations of the same class (y resized to the layer by nearest neighbour; reflection-padded for layer 0),
  the negatives the input's locations of other classes; τ = 0.07. Per generator G_XY it is taken on
  (real_X → G_XY(real_X)) with the labels y_X and on the identity pair (real_Y → G_XY(map(real_Y))) with y_Y,
  averaged (as CUT averages NCE and identity NCE), and summed over the two generators. Features of an image
  whose channel count differs from G_XY's input go through the fixed ``channel_map`` first, as in ``cut``.
* Memory stays bounded: per layer ``num_patches`` (256) locations are drawn at random, the same for queries
  and keys and for every image of the batch, and keys are restricted to that sampled set, so each layer costs
  a (B, 256, 256) similarity matrix whatever the tile size.

The paper trains with batch 2 and Adam(2e-4) with linear decay over the second half (the trainer's schedule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sarkit.errors import CheckpointError, InputError
from sarkit.models.blocks import PatchSampler, channel_map, semantic_contrastive_loss
from sarkit.models.cyclegan import CycleGAN, CycleGANOptions
from sarkit.models.registry import register_model


@dataclass
class CycleGANSCOptions(CycleGANOptions):
    """CycleGAN-SC hyper-parameters (paper defaults) and the frozen segmenters."""

    sar_segmenter: str = ""          # RUN dir or segmenter.safetensors of a SAR segmenter (required)
    optical_segmenter: str = ""      # RUN dir or segmenter.safetensors of an optical segmenter (required)
    lambda_gan: float = 1.0          # λ3
    lambda_seg: float = 1.0          # λ4
    lambda_sc: float = 1.0           # λ5
    sc_t: float = 0.07               # temperature τ of the semantic contrastive loss
    num_patches: int = 256           # sampled locations per encoder layer


def load_frozen_segmenter(path: str, modality: str, norm: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Load an exported segmenter for ``modality``, check it fits the data's bands/ranges, freeze it."""
    from sarkit.models.checkpoint import load_network

    option = f"--{modality}-segmenter"
    if not path:
        raise InputError(f"cyclegan-sc needs {option} RUN (a run of: sarkit train --model segmenter "
                         f"--modality {modality})")
    try:
        loaded = load_network(path, kind="segmenter", device="cpu")
    except CheckpointError as exc:
        raise CheckpointError(f"{option}: {exc}") from None
    got = loaded.meta.get("modality")
    if got != modality:
        raise InputError(f"{option} {path} segments {got} images; give a segmenter trained with --modality {modality}")
    seg_norm = loaded.meta.get("norm") or {}
    if list(seg_norm.get("bands", [])) != list(norm["bands"]):
        raise InputError(f"{option} {path} was trained on bands {seg_norm.get('bands')} but the data has "
                         f"{list(norm['bands'])}; train the segmenter on the same bands")
    if ([float(v) for v in seg_norm.get("lo", [])] != [float(v) for v in norm["lo"]]
            or [float(v) for v in seg_norm.get("hi", [])] != [float(v) for v in norm["hi"]]):
        raise InputError(f"{option} {path} uses other normalisation ranges than the data; train the segmenter "
                         f"on tiles with the same ranges")
    net = loaded.module.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, {"path": str(Path(path)), "file": str(loaded.path), "sha256": loaded.sha256,
                 "classes": loaded.meta.get("classes")}


def labels_at(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Class map (N, H, W) at a feature size: reflection-padded when the layer is the padded input (H + 6),
    else resized by nearest neighbour."""
    h, w = labels.shape[-2:]
    x = labels[:, None].float()
    if size[0] > h:
        ph, pw = (size[0] - h) // 2, (size[1] - w) // 2
        x = F.pad(x, (pw, size[1] - w - pw, ph, size[0] - h - ph), mode="reflect")
    elif tuple(size) != (h, w):
        x = F.interpolate(x, size=size, mode="nearest")
    return x[:, 0].long()


@register_model("cyclegan-sc")
class CycleGANSC(CycleGAN):
    """CycleGAN + frozen-segmenter consistency (L_seg) + semantic-guided contrastive loss (L_sc)."""

    Options = CycleGANSCOptions

    def build(self) -> None:
        """CycleGAN networks, contrastive heads per generator (dummy pass), and the frozen segmenters."""
        super().build()
        o = self.opts
        self.layers = self.nets["G_AB"].encoder_layers()
        self.nets["F_AB"] = PatchSampler(256)
        self.nets["F_BA"] = PatchSampler(256)
        with torch.no_grad():
            for g, f, ch in (("G_AB", "F_AB", self.ch_a), ("G_BA", "F_BA", self.ch_b)):
                feats = self.nets[g](torch.zeros(1, ch, 32, 32), self.layers, encode_only=True)
                self.nets[f](feats, 1)
        norms = {self.key_a: self.io.in_norm, self.key_b: self.io.out_norm}
        # A plain dict, so the frozen networks are neither in state_dict() nor switched by train()/eval().
        self.segmenters: dict[str, nn.Module] = {}
        self.helper_records = {}
        for modality, path in (("sar", o.sar_segmenter), ("optical", o.optical_segmenter)):
            net, rec = load_frozen_segmenter(path, modality, norms[modality])
            self.segmenters[modality] = net
            self.helper_records[f"{modality}_segmenter"] = rec

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001
        """Move/cast the frozen segmenters along with the model (``.to(device)``, channels_last, ...)."""
        super()._apply(fn, *args, **kwargs)
        for net in getattr(self, "segmenters", {}).values():
            net._apply(fn)
        return self

    def generator_parameters(self) -> list[nn.Parameter]:
        """Both generators and both sets of contrastive heads."""
        return super().generator_parameters() + list(self.nets["F_AB"].parameters()) + list(
            self.nets["F_BA"].parameters())

    def forward_cycle(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """CycleGAN images; the identity images are made even when λ_idt = 0, since L_sc uses them."""
        out = super().forward_cycle(real_a, real_b)
        if "idt_b" not in out and self.opts.lambda_sc > 0:
            out["idt_b"] = self.nets["G_AB"](channel_map(real_b, self.ch_a))
            out["idt_a"] = self.nets["G_BA"](channel_map(real_a, self.ch_b))
        return out

    def sc_term(self, g: str, f: str, src: torch.Tensor, tgt: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Semantic contrastive loss of generator ``g`` between ``src`` (keys, in g's input channels) and the
        generated ``tgt`` (queries, channel-mapped), with ``labels`` the class map of ``src``; mean over layers."""
        gen, heads = self.nets[g], self.nets[f]
        feat_k = gen(src, self.layers, encode_only=True)
        feat_q = gen(channel_map(tgt, src.shape[1]), self.layers, encode_only=True)
        k_pool, ids = heads(feat_k, self.opts.num_patches)
        q_pool, _ = heads(feat_q, self.opts.num_patches, ids)
        n = src.shape[0]
        total = src.new_zeros((), dtype=torch.float32)
        for q, k, pid, fk in zip(q_pool, k_pool, ids, feat_k):
            lab = labels_at(labels, tuple(fk.shape[-2:])).flatten(1)[:, pid]
            total = total + semantic_contrastive_loss(q.view(n, -1, q.shape[1]), k.view(n, -1, k.shape[1]),
                                                      lab, lab, self.opts.sc_t)
        return total / len(self.layers)

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor,
                         out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CycleGAN terms (GAN weighted by λ3) + λ4·L_seg + λ5·L_sc."""
        o = self.opts
        losses = super().generator_losses(real_a, real_b, out)
        losses["gan"] = o.lambda_gan * losses["gan"]
        seg_a, seg_b = self.segmenters[self.key_a], self.segmenters[self.key_b]
        with torch.no_grad():
            y_a = seg_a(real_a).argmax(1)
            y_b = seg_b(real_b).argmax(1)
        if o.lambda_seg > 0:
            losses["seg"] = o.lambda_seg * (F.cross_entropy(seg_a(out["rec_a"]).float(), y_a)
                                            + F.cross_entropy(seg_b(out["rec_b"]).float(), y_b))
        if o.lambda_sc > 0:
            sc_ab = 0.5 * (self.sc_term("G_AB", "F_AB", real_a, out["fake_b"], y_a)
                           + self.sc_term("G_AB", "F_AB", channel_map(real_b, self.ch_a), out["idt_b"], y_b))
            sc_ba = 0.5 * (self.sc_term("G_BA", "F_BA", real_b, out["fake_a"], y_b)
                           + self.sc_term("G_BA", "F_BA", channel_map(real_a, self.ch_b), out["idt_a"], y_a))
            losses["sc"] = o.lambda_sc * (sc_ab + sc_ba)
        return losses
