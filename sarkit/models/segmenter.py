"""Semantic segmenter (DeepLabV3, Chen et al. 2017) of SAR or optical tiles, trained on the tiles' labels.

Used on its own (land-cover maps) and, frozen, as the semantic guide of ``cyclegan-sc``. The architecture is
torchvision's DeepLabV3 built with ``weights=None, weights_backbone=None`` (random init, nothing downloaded),
its first convolution replaced to take the modality's channel count, without the auxiliary head. Backbones:
"resnet50" (default), "resnet101", and "mobilenet_v3_large", the fast choice on CPU.

``sarkit train --model segmenter --modality sar|optical`` gives ``io.direction`` = the modality; the loss is
cross entropy over labelled pixels (255 = ignore), Adam. Validation reports pixel accuracy and mIoU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sarkit.errors import InputError
from sarkit.models.base import StepTools, Task, TrainableModel
from sarkit.models.registry import register_model, register_network

IGNORE_INDEX = 255
#: BatchNorm running-statistics momentum of every backbone. torchvision builds MobileNetV3 with 0.01: after a short
#: run its running statistics still lag the weights, and the eval-mode network (validation, export, cyclegan-sc's
#: frozen guide, eval's PA/SMS) predicted one constant class (val PA 0.01 where training PA was 0.65).
BN_MOMENTUM = 0.1
BACKBONES = ("resnet50", "resnet101", "mobilenet_v3_large")


class DeepLabV3Net(nn.Module):
    """torchvision DeepLabV3 with an ``in_channels`` stem; ``forward`` returns the logits (N, K, H, W)."""

    def __init__(self, in_channels: int, num_classes: int, backbone: str = "resnet50") -> None:
        super().__init__()
        from torchvision.models import segmentation as seg

        if backbone not in BACKBONES:
            raise InputError(f"unknown segmenter backbone {backbone!r}; use one of {', '.join(BACKBONES)}")
        builder = getattr(seg, f"deeplabv3_{backbone}")
        self.net = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        body = self.net.backbone
        if backbone.startswith("resnet"):
            old = body.conv1
            body.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                   bias=False)
            nn.init.kaiming_normal_(body.conv1.weight, mode="fan_out", nonlinearity="relu")
        else:
            old = body["0"][0]
            body["0"][0] = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                     bias=False)
            nn.init.kaiming_normal_(body["0"][0].weight, mode="fan_out")
        for m in self.modules():  # torchvision's MobileNetV3 uses 0.01, too slow for runs of a few hundred steps
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = BN_MOMENTUM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


@register_network("deeplabv3")
def build_deeplabv3(in_channels: int, num_classes: int, backbone: str = "resnet50") -> nn.Module:
    return DeepLabV3Net(in_channels, num_classes, backbone)


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K×K counts C[t, p] of labelled pixels (label ≠ 255) with true class t and predicted class p."""
    keep = (labels != IGNORE_INDEX) & (labels >= 0) & (labels < num_classes)
    idx = labels[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores_from_confusion(cm: torch.Tensor) -> dict[str, float]:
    """Pixel accuracy = trace/total; mIoU = mean over classes present (in labels or predictions) of
    TP/(TP + FP + FN). NaN when no pixel is labelled."""
    cm = cm.double()
    total = cm.sum()
    if total == 0:
        return {"pa": float("nan"), "miou": float("nan")}
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return {"pa": float(tp.sum() / total), "miou": float((tp[present] / union[present]).mean())}


def segmentation_scores(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Pixel accuracy and mIoU of argmax(logits) (N, K, H, W) against labels (N, H, W), 255 ignored."""
    return scores_from_confusion(confusion_matrix(logits.argmax(1), labels, num_classes))


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy averaged over labelled pixels (255 ignored); 0 (with gradient) when none is labelled."""
    ce = F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_INDEX, reduction="sum")
    return ce / (labels != IGNORE_INDEX).sum().clamp(min=1)


@dataclass
class SegmenterOptions:
    """Segmenter hyper-parameters."""

    backbone: str = "resnet50"    # resnet50 | resnet101 | mobilenet_v3_large (fastest on CPU)


@register_model("segmenter")
class Segmenter(TrainableModel):
    """DeepLabV3 on one modality ("sar" or "optical", given as ``io.direction``), cross entropy on the labels."""

    task = Task.SEGMENTER
    paired = True
    needs_labels = True
    Options = SegmenterOptions

    def build(self) -> None:
        """Check the IO (modality, classes) and create the network."""
        io = self.io
        if io.direction not in ("sar", "optical"):
            raise InputError(f"the segmenter trains on one modality: use --modality sar or optical "
                             f"(got {io.direction!r})")
        if not io.num_classes or io.num_classes < 2:
            raise InputError("the segmenter needs tiles with labels of at least 2 classes: tile with --labels")
        if self.opts.backbone not in BACKBONES:
            raise InputError(f"--model-opt backbone={self.opts.backbone}: not a segmenter backbone; use one of "
                             f"{', '.join(BACKBONES)}")
        self.modality = io.direction
        self.nets["seg"] = DeepLabV3Net(io.in_channels, io.num_classes, self.opts.backbone)

    def configure_optimizers(self, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
        """One Adam optimizer for the whole network."""
        self.optimizers = {"seg": torch.optim.Adam(self.nets["seg"].parameters(), lr=lr, betas=betas)}
        return self.optimizers

    def _single_sample_guard(self, n: int) -> list[nn.Module]:
        """BatchNorm after ASPP's global pooling cannot train on one sample (1 value per channel): put those
        layers in eval mode for a batch of 1 and return them to switch back."""
        if n > 1 or not self.training:
            return []
        from torchvision.models.segmentation.deeplabv3 import ASPPPooling

        mods = [m for p in self.nets["seg"].modules() if isinstance(p, ASPPPooling)
                for m in p.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in mods:
            m.eval()
        return mods

    def train_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, float]:
        """Cross-entropy step on ``batch[modality]`` against ``batch["labels"]``."""
        x, labels = batch[self.modality], batch["labels"]
        frozen = self._single_sample_guard(x.shape[0])
        with tools.autocast():
            logits = self.nets["seg"](x)
        loss = segmentation_loss(logits, labels)
        tools.backward(loss)
        tools.step(self.optimizers["seg"])
        for m in frozen:
            m.train()
        with torch.no_grad():
            cm = confusion_matrix(logits.detach().argmax(1), labels, self.io.num_classes)
        return {"CE": float(loss.detach()), "pa": scores_from_confusion(cm)["pa"]}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W)."""
        return self.nets["seg"](x)

    def validation_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image of the modality, labels)."""
        return batch[self.modality], batch["labels"]

    def validation_metrics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Pixel accuracy ("pa") and mIoU ("miou") of one batch, plus its cross entropy ("CE")."""
        x, labels = self.validation_inputs(batch)
        with torch.no_grad():
            logits = self.predict(x)
            out = segmentation_scores(logits, labels, self.io.num_classes)
            out["CE"] = float(segmentation_loss(logits, labels))
        return out

    def export(self) -> list[tuple[str, nn.Module, str, dict[str, Any]]]:
        """The network as kind "segmenter", arch "deeplabv3"."""
        kwargs = {"in_channels": self.io.in_channels, "num_classes": self.io.num_classes,
                  "backbone": self.opts.backbone}
        return [("segmenter", self.nets["seg"], "deeplabv3", kwargs)]

    def export_meta(self) -> dict[str, Any]:
        """Metadata of the exported segmenter: modality, normalisation, class names, tile size."""
        classes = list(self.io.class_names) if self.io.class_names else [str(i) for i in range(self.io.num_classes)]
        return {"model": "segmenter", "modality": self.modality, "norm": dict(self.io.in_norm),
                "classes": classes, "tile_size": self.io.tile_size}
