"""Tests of CycleGAN-SC (sarkit/models/cyclegan_sc.py) and the semantic contrastive loss in blocks.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sarkit.models.checkpoint import save_network
from sarkit.errors import CheckpointError, InputError
from sarkit.models.base import ModelIO, StepTools
from sarkit.models.blocks import patch_nce_loss, semantic_contrastive_loss
from sarkit.models.cyclegan_sc import CycleGANSC, CycleGANSCOptions, labels_at
from sarkit.models.registry import get_model
from sarkit.models.segmenter import Segmenter, SegmenterOptions
from sarkit.raster.norm import optical_normalization, sar_normalization

TINY = dict(ngf=8, ndf=8, n_blocks=2, pool_size=4, num_patches=64)


def smooth_batch(size: int = 32) -> dict[str, torch.Tensor]:
    """Two fixed, smooth SAR (2-band) and optical (3-band) images in [-1, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    sar = torch.stack([torch.stack([xx, yy]), torch.stack([xx * yy, -xx])])
    opt = torch.stack([torch.stack([yy, xx, (xx > 0).float() * 2 - 1]),
                       torch.stack([-yy, xx * yy, (yy > 0).float() * 2 - 1])])
    return {"sar": sar, "optical": opt}


def tools() -> StepTools:
    return StepTools(device=torch.device("cpu"))


def train_segmenter(modality: str, x: torch.Tensor, labels: torch.Tensor, path) -> None:
    """Fit a small DeepLabV3 to (x, labels), set BatchNorm statistics to this batch, export it to ``path``."""
    norm = sar_normalization() if modality == "sar" else optical_normalization()
    io = ModelIO(norm.channels, 0, modality, x.shape[-1], norm.to_dict(), {}, 2, ("dark", "bright"))
    torch.manual_seed(0)
    seg = Segmenter(io, SegmenterOptions(backbone="mobilenet_v3_large"))
    seg.configure_optimizers(1e-3, (0.9, 0.999))
    for _ in range(8):
        seg.train_step({modality: x, "labels": labels}, tools())
    for m in seg.modules():                       # running statistics = average over x and noisy versions
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for scale in (0.0, 0.3, 1.0):
            seg.predict((x + scale * torch.randn(x.shape, generator=g)).clamp(-1, 1))
    seg.eval()
    (kind, net, arch, kwargs), = seg.export()
    save_network(path, net, kind, arch, kwargs, seg.export_meta())


@pytest.fixture(scope="module")
def segmenters(tmp_path_factory):
    """Exported SAR and optical segmenters whose labels follow a bright/dark split of the smooth batch."""
    d = tmp_path_factory.mktemp("seg")
    b = smooth_batch()
    train_segmenter("sar", b["sar"], (b["sar"][:, 0] > 0).long(), d / "sar.safetensors")
    train_segmenter("optical", b["optical"], (b["optical"][:, 2] > 0).long(), d / "optical.safetensors")
    return d / "sar.safetensors", d / "optical.safetensors"


def make_model(segmenters, **kw) -> CycleGANSC:
    sar, opt = segmenters
    io = ModelIO(2, 3, "sar2opt", 32, sar_normalization().to_dict(), optical_normalization().to_dict())
    return CycleGANSC(io, CycleGANSCOptions(**{**TINY, "sar_segmenter": str(sar), "optical_segmenter": str(opt),
                                               **kw}))


# ------------------------------------------------------------------------------- the loss itself
def test_semantic_contrastive_loss_equals_a_hand_computation():
    # one-hot features, τ = 1: s_ij = q_i·k_j = δ_ij; 4 locations, classes [0, 0, 1, 1].
    # Every query has 2 positives (itself: e¹, its class mate: e⁰) among 4 keys (e¹ + 3·e⁰):
    # ℓ = −log((e + 1) / (e + 3)) for every query.
    q = torch.eye(4)
    labels = torch.tensor([0, 0, 1, 1])
    loss = semantic_contrastive_loss(q, q.clone(), labels, labels, tau=1.0)
    assert math.isclose(float(loss), math.log((math.e + 3) / (math.e + 1)), rel_tol=1e-6)

    # random unit features, τ = 0.07, written out as sums of exponentials
    g = torch.Generator().manual_seed(0)
    qr = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    kr = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    cls = [0, 1, 0, 1]
    tau = 0.07
    total = 0.0
    for i in range(4):
        e = [math.exp(float(qr[i] @ kr[j]) / tau) for j in range(4)]
        pos = sum(e[j] for j in range(4) if j == i or cls[j] == cls[i])
        total += -math.log(pos / sum(e))
    got = semantic_contrastive_loss(qr, kr, torch.tensor(cls), torch.tensor(cls), tau)
    assert math.isclose(float(got), total / 4, rel_tol=1e-5)


def test_equals_patchnce_when_classes_are_distinct_and_differs_when_they_repeat():
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(2 * 6, 8, generator=g), dim=1)
    k = F.normalize(torch.randn(2 * 6, 8, generator=g), dim=1)
    nce = patch_nce_loss(q, k, batch=2, tau=0.07)
    distinct = torch.arange(6).expand(2, 6)
    sc = semantic_contrastive_loss(q.view(2, 6, 8), k.view(2, 6, 8), distinct, distinct, 0.07)
    assert torch.allclose(sc, nce, atol=1e-5)
    repeated = torch.tensor([0, 0, 1, 1, 2, 2]).expand(2, 6)
    sc_rep = semantic_contrastive_loss(q.view(2, 6, 8), k.view(2, 6, 8), repeated, repeated, 0.07)
    assert float(sc_rep) < float(nce) - 1e-3          # more positives: a smaller loss


def test_negatives_come_only_from_the_same_image():
    g = torch.Generator().manual_seed(2)
    q = F.normalize(torch.randn(2, 5, 4, generator=g), dim=2)
    k = F.normalize(torch.randn(2, 5, 4, generator=g), dim=2)
    lab = torch.tensor([[0, 1, 1, 2, 0], [1, 1, 1, 0, 2]])
    both = semantic_contrastive_loss(q, k, lab, lab, 0.1)
    each = [semantic_contrastive_loss(q[i], k[i], lab[i], lab[i], 0.1) for i in range(2)]
    assert torch.allclose(both, (each[0] + each[1]) / 2, atol=1e-6)


def test_labels_follow_the_padded_input_layer_and_downsampled_layers():
    lab = torch.arange(16).reshape(1, 4, 4)
    padded = labels_at(lab, (10, 10))
    assert torch.equal(padded[0, 3:7, 3:7], lab[0])
    assert padded[0, 0, 3] == lab[0, 3, 0]                    # reflection: row −3 mirrors row 3
    assert torch.equal(labels_at(lab, (2, 2))[0], lab[0, ::2, ::2])


# ------------------------------------------------------------------------------- the model
def test_registered_with_paper_weights():
    cls = get_model("cyclegan-sc")
    assert cls is CycleGANSC and cls.paired is False
    o = CycleGANSCOptions()
    assert (o.lambda_cycle, o.lambda_identity, o.lambda_gan, o.lambda_seg, o.lambda_sc, o.sc_t) == (
        10.0, 0.5, 1.0, 1.0, 1.0, 0.07)


@pytest.mark.slow
def test_few_steps_lower_the_cycle_loss_with_semantic_terms_active(segmenters):
    torch.manual_seed(0)
    model = make_model(segmenters)
    with torch.no_grad():
        b = smooth_batch()
        y = model.segmenters["sar"](b["sar"]).argmax(1)
    assert 0 < int(y.sum()) < y.numel()                       # the frozen segmenter sees two classes
    model.configure_optimizers(1e-3, (0.5, 0.999))
    first = model.train_step(smooth_batch(), tools())
    for _ in range(30):  # 30, not 20: by step 20 rounding-level changes (fused Adam, threads) move G_cycle 0.68–0.83×
        last = model.train_step(smooth_batch(), tools())
    assert first["G_sc"] > 0 and first["G_seg"] > 0 and math.isfinite(last["G_sc"])
    assert last["G_sc"] < first["G_sc"]
    assert last["G_cycle"] < 0.8 * first["G_cycle"], (first["G_cycle"], last["G_cycle"])


def test_segmenters_are_frozen_and_not_part_of_the_state(segmenters):
    model = make_model(segmenters)
    keys = model.state_dict().keys()
    assert not any(k.startswith("segmenters") for k in keys) and any(k.startswith("nets.F_AB.heads") for k in keys)
    make_model(segmenters).load_state_dict(model.state_dict())        # strict: heads exist at build time
    model.train()
    assert all(not net.training for net in model.segmenters.values())
    assert all(not p.requires_grad for net in model.segmenters.values() for p in net.parameters())
    model.double()                                                    # .to(...) moves/casts them too
    assert next(model.segmenters["optical"].parameters()).dtype == torch.float64
    assert model.helper_records["sar_segmenter"]["sha256"]


def test_missing_wrong_or_mismatched_segmenters_are_one_line_errors(segmenters, tmp_path):
    sar, opt = segmenters
    with pytest.raises(InputError, match="--sar-segmenter"):
        make_model((None, opt), sar_segmenter="")
    with pytest.raises(InputError, match="--sar-segmenter .* segments optical images"):
        make_model((opt, opt))
    with pytest.raises(CheckpointError, match="--optical-segmenter"):
        make_model((sar, tmp_path / "nope.safetensors"))
    io = ModelIO(1, 3, "sar2opt", 32, sar_normalization(("VV",)).to_dict(), optical_normalization().to_dict())
    with pytest.raises(InputError, match="--sar-segmenter .*bands") as exc:
        CycleGANSC(io, CycleGANSCOptions(**TINY, sar_segmenter=str(sar), optical_segmenter=str(opt)))
    assert "\n" not in str(exc.value)


def test_opt2sar_direction_uses_each_segmenter_on_its_own_modality(segmenters):
    sar, opt = segmenters
    io = ModelIO(3, 2, "opt2sar", 32, optical_normalization().to_dict(), sar_normalization().to_dict())
    torch.manual_seed(0)
    model = CycleGANSC(io, CycleGANSCOptions(**TINY, sar_segmenter=str(sar), optical_segmenter=str(opt)))
    assert (model.key_a, model.key_b) == ("optical", "sar")
    model.configure_optimizers(2e-4, (0.5, 0.999))
    out = model.train_step(smooth_batch(), tools())
    assert all(math.isfinite(v) for v in out.values()) and out["G_sc"] > 0
    with torch.no_grad():
        assert model.predict(smooth_batch()["optical"]).shape == (2, 2, 32, 32)
