"""Segmentation-based metrics: pixel accuracy (PA), mean IoU and the semantic map similarity (SMS).

A segmenter of the prediction's modality segments the prediction; its classes are compared with a reference:
the land-cover labels when given (255 = ignore), else the segmenter's own output on the target.

* PA = Σ_k TP_k / Σ (pixels with a reference class), from a K×K confusion matrix.
* IoU_k = TP_k / (TP_k + FP_k + FN_k); mIoU = mean over classes whose union is non-empty.
* SMS (lower is better) = 1/|V| · Σ_{p∈V} ‖F(pred)_p − F(target)_p‖² with F the softmax class probabilities of
  the segmenter and V the valid pixels (the prediction and the target both hold data).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarkit.errors import InputError
from sarkit.raster.norm import Normalization

IGNORE = 255


def confusion_matrix(pred_cls: torch.Tensor, ref_cls: torch.Tensor, num_classes: int,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """K×K counts ``C[ref, pred]`` over pixels with a reference class in [0, K) (and ``mask``)."""
    keep = (ref_cls >= 0) & (ref_cls < num_classes) & (ref_cls != IGNORE)
    if mask is not None:
        keep &= mask
    idx = ref_cls[keep].long() * num_classes + pred_cls[keep].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def pixel_accuracy(conf: torch.Tensor | np.ndarray) -> float:
    """``trace(C) / ΣC`` (NaN when there is no reference pixel)."""
    c = np.asarray(conf, dtype=np.float64)
    total = c.sum()
    return float(np.trace(c) / total) if total > 0 else float("nan")


def iou_per_class(conf: torch.Tensor | np.ndarray) -> np.ndarray:
    """``TP / (TP + FP + FN)`` per class; NaN for classes absent from both reference and prediction."""
    c = np.asarray(conf, dtype=np.float64)
    tp = np.diag(c)
    union = c.sum(axis=0) + c.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(conf: torch.Tensor | np.ndarray) -> float:
    """Mean of the per-class IoU over classes with a non-empty union."""
    iou = iou_per_class(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def sms_map(pred_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``‖softmax(a) − softmax(b)‖²`` over classes: (N, K, H, W) × 2 → (N, H, W)."""
    d = pred_logits.float().softmax(dim=1) - target_logits.float().softmax(dim=1)
    return (d * d).sum(dim=1)


def sms(pred_logits: torch.Tensor, target_logits: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """SMS = mean over valid pixels of ``‖F(pred) − F(target)‖²`` (one number for the batch)."""
    m = sms_map(pred_logits, target_logits)
    if valid is None:
        return float(m.mean())
    n = int(valid.sum())
    return float((m * valid).sum() / n) if n else float("nan")


@dataclass
class Segmenter:
    """A loaded segmenter: network, input normalisation (model range [-1, 1]) and class names."""

    module: torch.nn.Module
    norm: Normalization
    classes: list[str]
    path: Path
    sha256: str
    device: torch.device

    @property
    def modality(self) -> str:
        return self.norm.modality

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def prepare(self, model_x: np.ndarray, norm: Normalization) -> np.ndarray:
        """(N, C, H, W) model-range values under ``norm`` (NaN = nodata) → the segmenter's input (nodata = −1)."""
        if norm.modality != self.norm.modality:
            raise InputError(f"the segmenter is for {self.norm.modality} images but the prediction is "
                             f"{norm.modality}: pass a --segmenter trained on {norm.modality}")
        upper = [b.upper() for b in norm.bands]
        missing = [b for b in self.norm.bands if b.upper() not in upper]
        if missing:
            raise InputError(f"the segmenter needs bands {', '.join(self.norm.bands)} but the images have "
                             f"{', '.join(norm.bands)}")
        idx = [upper.index(b.upper()) for b in self.norm.bands]
        phys = np.stack([norm.decode(model_x[i])[idx] for i in range(model_x.shape[0])])
        phys[np.isnan(np.asarray(model_x)[:, idx])] = np.nan
        out = np.stack([self.norm.encode(p) for p in phys])
        return np.nan_to_num(out, nan=-1.0).astype(np.float32)

    @torch.no_grad()
    def logits(self, model_x: np.ndarray, norm: Normalization) -> torch.Tensor:
        """Class logits (N, K, H, W) of images given in model range under ``norm``."""
        x = torch.from_numpy(self.prepare(model_x, norm)).to(self.device)
        out = self.module(x)
        if isinstance(out, dict):
            out = out["out"]
        if out.shape[1] != self.num_classes:
            raise InputError(f"the segmenter returned {out.shape[1]} classes but its checkpoint names "
                             f"{self.num_classes}")
        return out.float()


def load_segmenter(path: str | Path, device: str | torch.device = "cpu") -> Segmenter:
    """Load an exported segmenter (``kind="segmenter"``) from a RUN directory or a file; ``CheckpointError``
    naming ``--segmenter`` when it is missing or not a segmenter."""
    from sarkit.errors import CheckpointError
    from sarkit.models.checkpoint import load_network

    if not Path(path).exists():
        raise CheckpointError(f"--segmenter {path} not found: pass the run folder (or its segmenter.safetensors) "
                              f"of sarkit train --model segmenter")
    try:
        net = load_network(path, kind="segmenter", device=device)
    except CheckpointError as exc:
        raise CheckpointError(f"--segmenter {path}: {exc}") from None
    meta: dict[str, Any] = net.meta
    if "norm" not in meta or "classes" not in meta:
        raise InputError(f"{net.path} is not a sarkit segmenter export (meta lacks norm/classes)")
    return Segmenter(net.module, Normalization.from_dict(meta["norm"]), list(meta["classes"]), net.path,
                     net.sha256, torch.device(device))
