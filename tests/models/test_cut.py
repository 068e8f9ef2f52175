"""Tests of the CUT model (sarkit/models/cut.py)."""

from __future__ import annotations

import pytest
import torch

from sarkit.models.checkpoint import load_network, save_network
from sarkit.models.base import ModelIO, parse_options
from sarkit.models.blocks import channel_map
from sarkit.models.cut import CUT, CUTOptions
from sarkit.models.registry import get_model
from models.modelsteps import assert_levers_train_as_the_per_op_step, noise_batch, reference_io, step_gflop, tools
from sarkit.raster.norm import optical_normalization, sar_normalization

TINY = dict(ngf=8, ndf=8, n_blocks=2, num_patches=64)


def make_io() -> ModelIO:
    return ModelIO(2, 3, "sar2opt", 32, sar_normalization().to_dict(), optical_normalization().to_dict())




def test_registered_unpaired_with_paper_defaults():
    assert get_model("cut") is CUT and CUT.paired is False
    o = CUTOptions()
    assert (o.lambda_gan, o.lambda_nce, o.nce_idt, o.nce_t, o.num_patches) == (1.0, 1.0, True, 0.07, 256)
    assert (o.antialias, o.antialias_up) == (True, True)        # the authors' default
    o2 = parse_options(CUTOptions, {"nce-idt": "false", "num_patches": "64"})
    assert o2.nce_idt is False and o2.num_patches == 64


def test_heads_exist_after_construction_so_state_dicts_are_complete():
    torch.manual_seed(0)
    a = CUT(make_io(), CUTOptions(**TINY))
    assert a.layers == (0, 4, 8, 12)                              # anti-aliased: blocks start at 12
    assert len(a.nets["F"].heads) == len(a.layers) == 4
    assert a.nets["F"].heads[0][0].in_features == 2            # layer 0 = padded input (SAR channels)
    b = CUT(make_io(), CUTOptions(**TINY))
    b.load_state_dict(a.state_dict())                             # strict: same keys
    opts = a.configure_optimizers(2e-4, (0.5, 0.999))
    assert set(opts) == {"G", "D", "F"}
    assert len(opts["F"].param_groups[0]["params"]) == 4 * len(a.layers)


def test_few_steps_lower_the_nce_losses():
    torch.manual_seed(0)
    model = CUT(make_io(), CUTOptions(**TINY))
    model.configure_optimizers(1e-3, (0.5, 0.999))
    batch = noise_batch()
    first = model.train_step(batch, tools())
    for _ in range(19):
        last = model.train_step(batch, tools())
    assert last["NCE"] < 0.7 * first["NCE"], (first["NCE"], last["NCE"])
    assert last["NCE_Y"] < 0.7 * first["NCE_Y"], (first["NCE_Y"], last["NCE_Y"])


def test_nce_is_low_for_an_image_against_itself_and_high_against_another():
    torch.manual_seed(0)
    model = CUT(make_io(), CUTOptions(**TINY))
    batch = noise_batch()
    with torch.no_grad():
        torch.manual_seed(3)
        same = model.nce_loss(channel_map(batch["optical"], 2), batch["optical"])   # queries = keys
        torch.manual_seed(3)
        other = model.nce_loss(batch["sar"], batch["optical"])
    assert float(same) < float(other)


def test_export_load_network_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = CUT(make_io(), CUTOptions(**TINY))
    model.configure_optimizers(1e-3, (0.5, 0.999))
    model.train_step(noise_batch(), tools())
    (kind, net, arch, kwargs), = model.export()
    save_network(tmp_path / "g.safetensors", net, kind, arch, kwargs, {"model": "cut"})
    loaded = load_network(tmp_path / "g.safetensors", kind="generator")
    x = noise_batch(5)["sar"]
    with torch.no_grad():
        y = model.predict(x)
        assert y.shape == (2, 3, 32, 32)
        assert torch.equal(y, loaded.module(x))


#: GFLOP of one training step of the authors' CUT code (taesungp/contrastive-unpaired-translation b3ac297) at
#: 256², batch 1, 3→3 channels, counted with torch's FlopCounterMode (forward and backward, convolutions and
#: matrix products): the default, and with --no_antialias --no_antialias_up.
REFERENCE_GFLOP = {True: 1423.15, False: 1234.94}


@pytest.mark.parametrize("antialias", [True, False])
def test_one_training_step_does_the_reference_work(antialias):
    """Every convolution and matrix product of G, D and F over the D update and the G/F update
    (``modelsteps.step_gflop``)."""
    gflop = step_gflop(CUT(reference_io(), CUTOptions(antialias=antialias, antialias_up=antialias)))
    assert gflop == pytest.approx(REFERENCE_GFLOP[antialias], rel=0.01)



def test_fused_adam_default_and_channels_last_train_as_the_per_op_step():
    """The default optimizers are fused; against torch's per-op Adam and against channels-last layout, three steps
    log the same losses within 1e-4 (relative). Not closer: the first step is equal to rounding, but a gradient
    within rounding of zero can then take either sign, and Adam turns either into a full ±lr step, so the runs
    drift apart by ~1e-6–1e-4 within three steps (the update itself, on equal gradients: tests/models/test_blocks.py)."""
    assert_levers_train_as_the_per_op_step(lambda: CUT(make_io(), CUTOptions(**TINY)), noise_batch())
