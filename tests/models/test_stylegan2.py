"""StyleGAN2-style generator and discriminator (sarkit.models.stylegan2): shapes, the modulated convolution by hand,
noise inputs, the 16×16 entry point, minibatch stddev, the mapping's w_avg, and the exported prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sarkit.errors import InputError
from sarkit.models.checkpoint import load_network, save_network
from sarkit.models.stylegan2 import PRESETS, Discriminator, Generator, ModulatedConv2d, check_resolution, \
    feature_split, generator_kwargs, minibatch_stddev, modulated_conv, modulated_weight, num_ws


def tiny_g(res: int = 32, channels: int = 3, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(res, channels, "tiny")


def set_noise_strength(g: Generator, value: float) -> None:
    """Noise strengths start at 0 as in StyleGAN2; a trained G has them non-zero."""
    with torch.no_grad():
        for conv in g.synthesis.convs:
            conv.noise_strength.fill_(value)


@pytest.mark.parametrize("res", [32, 64])
def test_generator_and_discriminator_shapes(res: int) -> None:
    g, d = tiny_g(res, 4), Discriminator(res, 4, "tiny")
    z = torch.randn(3, g.size.z_dim)
    ws = g.ws(z)
    img = g(z)
    assert ws.shape == (3, num_ws(res), g.size.w_dim) and num_ws(res) == 2 * int(np.log2(res)) - 2
    assert img.shape == (3, 4, res, res) and torch.isfinite(img).all()
    assert d(img).shape == (3, 1)
    state = g.synthesis.state16(ws, "const")
    assert state.feature.shape == (3, g.size.channels(16), 16, 16) and state.image.shape == (3, 4, 16, 16)


def test_presets_and_resolution_rule() -> None:
    assert set(PRESETS) == {"tiny", "small", "paper"}
    paper = PRESETS["paper"]
    assert (paper.z_dim, paper.w_dim, paper.mapping_layers) == (512, 512, 8)
    assert [paper.channels(r) for r in (4, 64, 128, 256)] == [512, 512, 256, 128]  # config F
    assert check_resolution(32) == 32
    for bad in (16, 48, 100):
        with pytest.raises(InputError, match="power of two"):
            check_resolution(bad)
    with pytest.raises(InputError, match="unknown StyleGAN2 size 'huge'"):
        Generator(32, 3, "huge")


def _conv_by_hand(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Zero-padded 'same' cross-correlation of one image (I, H, W) with weights (O, I, k, k), by loops."""
    o_ch, i_ch, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    h, wd = x.shape[1:]
    out = np.zeros((o_ch, h, wd))
    for o in range(o_ch):
        for r in range(h):
            for c in range(wd):
                out[o, r, c] = (xp[:, r:r + k, c:c + k] * w[o]).sum()
    return out


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_convolution_equals_a_hand_computation(demodulate: bool) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    styles = torch.rand(2, 3, generator=g, dtype=torch.float64) + 0.5
    got = modulated_conv(x, weight, styles, demodulate).numpy()
    for n in range(2):
        wn = weight.numpy() * styles[n].numpy()[None, :, None, None]          # w'_oikl = s_i · w_oikl
        if demodulate:
            wn = wn / np.sqrt((wn ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-8)  # / sqrt(Σ_ikl w'² + ε)
        np.testing.assert_allclose(got[n], _conv_by_hand(x[n].numpy(), wn), rtol=1e-10, atol=1e-10)
    if demodulate:  # every output channel's demodulated weights have unit norm
        norms = modulated_weight(weight, styles, True).square().sum(dim=(2, 3, 4))
        assert torch.allclose(norms, torch.ones_like(norms))


def test_modulated_layer_uses_its_affine_style_and_equalised_weight() -> None:
    torch.manual_seed(4)
    layer = ModulatedConv2d(3, 2, 3, w_dim=5)
    x, w = torch.randn(2, 3, 6, 6), torch.randn(2, 5)
    styles = w @ (layer.affine.weight * layer.affine.scale).T + layer.affine.bias  # A(w), bias initialised to 1
    assert torch.allclose(layer.affine.bias, torch.ones(3))
    expect = modulated_conv(x, layer.weight / np.sqrt(3 * 3 * 3), styles, True)
    assert torch.allclose(layer(x, w), expect, atol=1e-6)


def test_noise_inputs_change_the_output() -> None:
    g = tiny_g()
    z = torch.randn(2, g.size.z_dim)
    assert torch.equal(g(z, noise_mode="random"), g(z, noise_mode="none"))  # strengths start at 0
    set_noise_strength(g, 0.5)
    a, b = g(z, noise_mode="random"), g(z, noise_mode="random")
    assert not torch.allclose(a, b)
    assert torch.equal(g(z, noise_mode="const"), g(z, noise_mode="const"))
    assert not torch.allclose(g(z, noise_mode="const"), g(z, noise_mode="none"))
    ws = g.ws(z)
    noises = [torch.randn(2, 1, c.noise_const.shape[-1], c.noise_const.shape[-1]) for c in g.synthesis.convs]
    assert torch.equal(g.synthesis(ws, noises=noises), g.synthesis(ws, noises=noises))
    other = [n.clone() for n in noises]
    other[-1] = torch.randn_like(other[-1])  # only the last layer's noise differs
    assert not torch.allclose(g.synthesis(ws, noises=noises), g.synthesis(ws, noises=other))


@pytest.mark.parametrize("res", [32, 64])
def test_feature_entry_point_reproduces_the_forward(res: int) -> None:
    g = tiny_g(res)
    set_noise_strength(g, 0.3)
    z1, z2 = torch.randn(2, g.size.z_dim), torch.randn(2, g.size.z_dim)
    ws = g.ws(z1, z2, cutoff=3)  # style mixing: the layers after 16×16 use other w's than the ones before
    noises = [torch.randn(2, 1, c.noise_const.shape[-1], c.noise_const.shape[-1]) for c in g.synthesis.convs]
    with torch.no_grad():
        full = g.synthesis(ws, noises=noises)
        state = g.synthesis.state16(ws, noises=noises)
        again = g.synthesis.from_feature(state, ws[:, feature_split():], noises=noises)
        const = g.synthesis.from_feature(g.synthesis.state16(ws, "const"), ws[:, feature_split():], "const")
    assert torch.allclose(again, full, atol=1e-6)
    assert torch.allclose(const, g.synthesis(ws, "const"), atol=1e-6)
    assert feature_split() == 5 and ws[:, feature_split():].shape[1] == num_ws(res) - 5
    with pytest.raises(ValueError, match="w vectors follow"):
        g.synthesis.from_feature(state, ws[:, 4:])


def test_minibatch_stddev_by_hand() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    out = minibatch_stddev(x, group=2)
    assert out.shape == (4, 4, 2, 2) and torch.equal(out[:, :3], x)
    xs = x.numpy()
    for n in range(4):
        partner = (n + 2) % 4  # groups are samples n and n + N/G (the reference's reshape(G, -1, ...))
        pair = np.stack([xs[n], xs[partner]])
        std = np.sqrt(((pair - pair.mean(0)) ** 2).mean(0) + 1e-8).mean()
        np.testing.assert_allclose(out[n, 3].numpy(), np.full((2, 2), std), rtol=1e-12)


def test_mapping_tracks_w_avg_and_truncates_to_it() -> None:
    g = tiny_g()
    z = torch.randn(8, g.size.z_dim)
    assert torch.equal(g.mapping.w_avg, torch.zeros(g.size.w_dim))
    w = g.mapping(z, track=True)
    assert torch.allclose(g.mapping.w_avg, 0.005 * w.mean(0))  # lerp(w_avg, mean, 1 − 0.995)
    assert torch.allclose(g.mapping(z, truncation=0.0), g.mapping.w_avg.expand(8, -1))


def test_exported_prior_reloads_with_the_same_images(tmp_path: Path) -> None:
    g = tiny_g(32, 2)
    set_noise_strength(g, 0.2)
    path = save_network(tmp_path / "prior.safetensors", g, "prior", "stylegan2_generator", generator_kwargs(g), {})
    loaded = load_network(path, "prior")
    z = torch.randn(2, g.size.z_dim)
    with torch.no_grad():
        assert torch.equal(loaded.module(z, noise_mode="const"), g(z, noise_mode="const"))
    assert loaded.arch_kwargs == {"resolution": 32, "out_channels": 2, "size": "tiny"}
