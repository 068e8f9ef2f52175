"""Tests of the shared diffusion U-Net (sarkit/models/diffusion_unet.py)."""

from __future__ import annotations

import pytest
import torch

from sarkit.errors import InputError
from sarkit.infer.engine import tile_multiple
from sarkit.models.diffusion_unet import (UNET_SIZES, AttentionBlock, DiffusionUNet, attention_levels,
                                          build_diffusion_unet, timestep_embedding, unet_size)
from sarkit.models.registry import build_network


def test_paper_preset_and_attention_at_16_and_8_pixels():
    p = unet_size("paper")
    assert (p.channels, p.res_blocks, p.channel_mult) == (128, 3, (1, 1, 2, 2, 4, 4))
    assert attention_levels(256, 6) == (4, 5)        # 16² and 8² feature maps of a 256² tile
    assert attention_levels(64, 4) == (2, 3)
    assert attention_levels(256, 4) == ()
    assert set(UNET_SIZES) == {"paper", "small", "tiny"}
    with pytest.raises(InputError, match="size='huge'"):
        unet_size("huge")


def test_structure_follows_the_adm_layout():
    net = DiffusionUNet(3, 2, channels=8, res_blocks=2, channel_mult=(1, 2, 2), attn_levels=(2,), heads=2)
    assert net.conv_in.in_channels == 5                        # x_t and the condition, concatenated
    assert len(net.input_blocks) == 3 * 2 + 2                  # 2 res blocks a level, 2 down-samplings
    assert len(net.output_blocks) == 3 * 3                     # res_blocks + 1 a level
    attn_in = [i for i, b in enumerate(net.input_blocks) if any(isinstance(m, AttentionBlock) for m in b)]
    assert attn_in == [6, 7]                                   # the blocks of level 2 only
    assert tile_multiple(net) == 4                             # two stride-2 convolutions
    x, c, t = torch.randn(2, 3, 16, 16), torch.randn(2, 2, 16, 16), torch.tensor([0, 999])
    assert torch.count_nonzero(net(x, t, c)) == 0               # zero-initialised output layer


def test_split_forward_equals_forward_bit_for_bit():
    torch.manual_seed(0)
    net = build_network("diffusion_unet", {"channels_x": 2, "cond_channels": 3, "channels": 8, "res_blocks": 1,
                                           "channel_mult": [1, 2], "attn_levels": [1], "heads": 2}).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x, c, t = torch.randn(2, 2, 8, 8), torch.randn(2, 3, 8, 8), torch.tensor([3, 40])
    with torch.inference_mode():
        h0, h1, emb = net.first(x, t, c)
        assert h1.shape == net.rest(h0, h1, emb).shape        # h_L has the first block's shape
        assert torch.equal(net.head(net.rest(h0, h1, emb)), net(x, t, c))
    assert isinstance(build_diffusion_unet(2, 3, 8, 1, [1, 2], [1], 2), DiffusionUNet)


def test_timestep_embedding_is_sinusoidal():
    e = timestep_embedding(torch.tensor([0.0, 5.0]), 8)
    assert e.shape == (2, 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert e[1, 0].item() == pytest.approx(float(torch.cos(torch.tensor(5.0))))
