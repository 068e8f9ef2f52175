"""PA, mIoU and SMS (sarkit.eval.segmetrics) on hand-made inputs, and the segmenter loading/preparation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sarkit.models.checkpoint import save_network
from sarkit.errors import InputError
from sarkit.eval.segmetrics import (confusion_matrix, iou_per_class, load_segmenter, mean_iou, pixel_accuracy, sms,
                                    sms_map)
from sarkit.models.registry import NETWORKS, register_network
from sarkit.raster.norm import optical_normalization, sar_normalization


class TinySeg(nn.Module):
    """1×1 conv: logits (10·x0, −10·x0, …) so class 0 wherever the first band is above mid-range."""

    def __init__(self, in_ch: int = 3, k: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, k, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[0, 0] = 10.0
            self.conv.weight[1, 0] = -10.0

    def forward(self, x):
        return self.conv(x)


if "test-seg" not in NETWORKS:
    register_network("test-seg")(lambda in_ch=3, k=2: TinySeg(in_ch, k))


def save_test_segmenter(path, modality: str = "optical", bands=("B4", "B3", "B2"), k: int = 2):
    """Export a TinySeg as a sarkit segmenter checkpoint."""
    norm = (optical_normalization(bands) if modality == "optical" else sar_normalization(bands)).to_dict()
    return save_network(path, TinySeg(len(bands), k), kind="segmenter", arch="test-seg",
                        arch_kwargs={"in_ch": len(bands), "k": k},
                        meta={"model": "segmenter", "modality": modality, "norm": norm,
                              "classes": [f"c{i}" for i in range(k)], "tile_size": 64})


def test_confusion_pa_and_miou_by_hand():
    ref = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    conf = confusion_matrix(pred, ref, 3)
    # rows = reference: class0 → pred (0, 1); class1 → (1, 1, 1); class2 → (2, 0); 255 ignored
    assert conf.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    assert pixel_accuracy(conf) == pytest.approx(5 / 7)
    iou = iou_per_class(conf)
    assert iou.tolist() == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert mean_iou(conf) == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)


def test_miou_skips_classes_absent_everywhere_and_mask_applies():
    ref = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 0])
    conf = confusion_matrix(pred, ref, 4, mask=torch.tensor([True, True, True, False]))
    assert pixel_accuracy(conf) == 1.0
    assert mean_iou(conf) == 1.0 and math.isnan(iou_per_class(conf)[3])
    assert math.isnan(pixel_accuracy(np.zeros((2, 2))))


def test_sms_by_hand():
    big = 50.0
    a = torch.tensor([[big, 0.0], [0.0, big]]).T.reshape(1, 2, 1, 2)  # pixel0 class0, pixel1 class1
    b = torch.tensor([[big, 0.0], [big, 0.0]]).T.reshape(1, 2, 1, 2)  # both class0
    m = sms_map(a, b)
    assert m[0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert m[0, 0, 1].item() == pytest.approx(2.0, abs=1e-6)  # (1−0)² + (0−1)²
    assert sms(a, b) == pytest.approx(1.0, abs=1e-6)
    assert sms(a, b, valid=torch.tensor([[[True, False]]])) == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(1, 2, 1, 1)
    assert sms(uniform, torch.tensor([big, 0.0]).view(1, 2, 1, 1)) == pytest.approx(0.5, abs=1e-6)


def test_segmenter_round_trip_and_preparation(tmp_path):
    save_test_segmenter(tmp_path / "seg.safetensors")
    seg = load_segmenter(tmp_path / "seg.safetensors")
    assert seg.modality == "optical" and seg.classes == ["c0", "c1"]
    norm = optical_normalization(("B2", "B3", "B4"))  # other band order: the segmenter reorders by name
    x = np.full((1, 3, 4, 4), -0.5, dtype=np.float32)
    x[0, 2, :2] = 0.5  # B4 above mid-range in the top half
    x[0, :, 3, 3] = np.nan
    prepared = seg.prepare(x, norm)
    assert prepared[0, 0, 0, 0] == pytest.approx(0.5) and prepared[0, 0, 3, 0] == pytest.approx(-0.5)
    assert prepared[0, :, 3, 3].tolist() == [-1.0, -1.0, -1.0]
    cls = seg.logits(x, norm).argmax(dim=1)[0]
    assert (cls[:2] == 0).all() and (cls[2:] == 1).all()


def test_segmenter_rejects_other_modality_and_missing_bands(tmp_path):
    save_test_segmenter(tmp_path / "seg.safetensors")
    seg = load_segmenter(tmp_path / "seg.safetensors")
    x = np.zeros((1, 2, 4, 4), dtype=np.float32)
    with pytest.raises(InputError, match="segmenter is for optical"):
        seg.prepare(x, sar_normalization())
    with pytest.raises(InputError, match="needs bands"):
        seg.prepare(x[:, :2], optical_normalization(("B8", "B11")))
