"""NAFNet (sarkit.models.nafnet): the block's parts as the paper defines them, presets, shapes, export."""

from __future__ import annotations

import pytest
import torch

from sarkit.errors import InputError
from sarkit.infer.engine import tile_multiple
from sarkit.models.checkpoint import load_network, save_network
from sarkit.models.nafnet import (NAFBlock, NAFNET_PRESETS, LayerNorm2d, SimpleGate, SimplifiedChannelAttention,
                                  build_nafnet, nafnet_kwargs, nafnet_preset)
from sarkit.models.registry import NETWORKS


def test_simple_gate_multiplies_the_channel_halves() -> None:
    x = torch.arange(2 * 4 * 2 * 2, dtype=torch.float32).view(2, 4, 2, 2)
    assert torch.equal(SimpleGate()(x), x[:, :2] * x[:, 2:])


def test_layernorm2d_normalises_each_position_over_channels() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4) * 3 + 1
    y = LayerNorm2d(5)(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 3, 4), atol=1e-5)
    assert torch.allclose(y.var(1, unbiased=False), torch.ones(2, 3, 4), atol=1e-4)


def test_channel_attention_scales_by_a_conv_of_the_pooled_features() -> None:
    torch.manual_seed(0)
    sca = SimplifiedChannelAttention(3)
    x = torch.randn(1, 3, 4, 4)
    w = sca.conv.weight.view(3, 3) @ x.mean(dim=(2, 3)).view(3) + sca.conv.bias
    assert torch.allclose(sca(x), x * w.view(1, 3, 1, 1), atol=1e-6)


def test_block_starts_as_identity_and_learns_away_from_it() -> None:
    torch.manual_seed(0)
    blk = NAFBlock(4)
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(blk(x), x)  # β = γ = 0
    with torch.no_grad():
        blk.beta.fill_(1.0)
    assert not torch.allclose(blk(x), x)


def test_paper_preset_is_the_sidd_configuration() -> None:
    p = nafnet_preset("paper")
    assert (p.width, p.enc_blocks, p.middle_blocks, p.dec_blocks) == (32, (2, 2, 4, 8), 12, (2, 2, 2, 2))
    assert NAFNET_PRESETS["gopro"].enc_blocks == (1, 1, 1, 28)
    with pytest.raises(InputError, match="tiny"):
        nafnet_preset("huge")


def test_shapes_residual_and_tile_multiple() -> None:
    torch.manual_seed(0)
    net = build_nafnet(**nafnet_kwargs(2, 3, "tiny"))
    assert net(torch.randn(2, 2, 16, 24)).shape == (2, 3, 16, 24)
    assert tile_multiple(net) == 4
    same = build_nafnet(**nafnet_kwargs(3, 3, "tiny"))
    with torch.no_grad():  # all blocks identities and a zero ending conv: the output is the input (global residual)
        same.ending.weight.zero_()
        same.ending.bias.zero_()
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(same(x), x)


def test_registered_network_round_trips_through_an_export(tmp_path) -> None:
    assert "nafnet" in NETWORKS
    torch.manual_seed(0)
    kw = nafnet_kwargs(2, 3, "tiny")
    net = build_nafnet(**kw).eval()
    path = save_network(tmp_path / "g.safetensors", net, "generator", "nafnet", kw, {})
    loaded = load_network(path)
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), net(x), atol=1e-6)
