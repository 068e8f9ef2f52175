"""Tests of the Con-Diffusion model (sarkit/models/con_diffusion.py)."""

from __future__ import annotations

import pytest
import torch

from sarkit.errors import InputError
from sarkit.models.base import ModelIO, StepTools, parse_options
from sarkit.models.checkpoint import load_network, save_network
from sarkit.models.con_diffusion import ConDiffusion, ConDiffusionOptions
from sarkit.models.registry import get_model
from sarkit.raster.norm import optical_normalization, sar_normalization

TINY = dict(size="tiny", channels=8, heads=2, channel_mult="1,2,2", timesteps=50, val_steps=3, sample_steps=10)


def make_io(direction: str = "sar2opt", tile: int = 16) -> ModelIO:
    sar, opt = sar_normalization().to_dict(), optical_normalization().to_dict()
    if direction == "opt2sar":
        return ModelIO(3, 2, direction, tile, opt, sar)
    return ModelIO(2, 3, direction, tile, sar, opt)


def batch(seed: int = 1, tile: int = 16) -> dict[str, torch.Tensor]:
    """Paired tiles whose optical image is a fixed function of the SAR one."""
    g = torch.Generator().manual_seed(seed)
    sar = torch.rand(2, 2, tile, tile, generator=g) * 2 - 1
    opt = torch.stack([sar[:, 0], sar[:, 1], sar.mean(1)], 1).tanh()
    return {"sar": sar, "optical": opt, "valid": torch.ones(2, tile, tile, dtype=torch.bool)}


def test_registered_paired_with_the_papers_defaults():
    assert get_model("con-diffusion") is ConDiffusion and ConDiffusion.paired
    o = ConDiffusionOptions()
    assert (o.size, o.timesteps, o.ema_decay, o.sampler, o.sample_steps) == ("paper", 2000, 0.9999, "ddpm", 250)
    o2 = parse_options(ConDiffusionOptions, {"size": "small", "channel-mult": "1,2,2"})
    assert o2.mult() == (1, 2, 2)
    for bad in ({"size": "big"}, {"channel_mult": "1,x"}, {"timesteps": "1"}, {"ema_decay": "1.5"},
                {"sampler": "euler"}, {"channels": "30", "heads": "4"}):
        with pytest.raises(InputError):
            parse_options(ConDiffusionOptions, bad)


def test_the_paper_network_at_256():
    model = ConDiffusion.__new__(ConDiffusion)
    model.io, model.opts = make_io(tile=256), ConDiffusionOptions()
    kw = model.unet_kwargs()
    assert kw == {"channels_x": 3, "cond_channels": 2, "channels": 128, "res_blocks": 3,
                  "channel_mult": [1, 1, 2, 2, 4, 4], "attn_levels": [4, 5], "heads": 4, "dropout": 0.0}
    model.io = make_io(tile=100)
    with pytest.raises(InputError, match="multiple of 32"):
        model.unet_kwargs()


@pytest.mark.parametrize("direction", ["sar2opt", "opt2sar"])
def test_training_lowers_the_noise_mse_and_ema_follows(direction):
    torch.manual_seed(0)
    model = ConDiffusion(make_io(direction, tile=8), ConDiffusionOptions(**TINY))
    model.configure_optimizers(2e-3, (0.5, 0.999))
    tools = StepTools(device=torch.device("cpu"))
    b = batch(tile=8)
    first = [model.train_step(b, tools)["MSE"] for _ in range(3)]
    for _ in range(20):
        model.train_step(b, tools)
    last = [model.train_step(b, tools)["MSE"] for _ in range(3)]
    assert sum(last) < sum(first)
    assert model.ema_updates == 26
    ema, net = dict(model.nets["ema"].named_parameters()), dict(model.nets["eps"].named_parameters())
    assert all(not p.requires_grad for p in ema.values())
    assert any(not torch.equal(ema[k], net[k]) for k in ema)              # an average, not a copy
    assert model.nets["ema"].conv_in.in_channels == 5                      # x_t (out) + condition (in)


def test_ema_warmup_and_update_rule():
    torch.manual_seed(0)
    model = ConDiffusion(make_io(), ConDiffusionOptions(**TINY))
    assert model.ema_rate() == pytest.approx(0.1)                          # (1 + 0) / (10 + 0)
    model.ema_updates = 10 ** 6
    assert model.ema_rate() == pytest.approx(0.9999)
    p_ema = next(model.nets["ema"].parameters())
    p = next(model.nets["eps"].parameters())
    with torch.no_grad():
        p.add_(1.0)
    before = p_ema.clone()
    model.update_ema()
    torch.testing.assert_close(p_ema, 0.9999 * before + 0.0001 * p.detach())
    plain = ConDiffusion(make_io(), ConDiffusionOptions(**TINY, ema_warmup=False))
    assert plain.ema_rate() == pytest.approx(0.9999)


def test_predict_is_a_repeatable_sample_and_the_export_is_the_ema(tmp_path):
    torch.manual_seed(0)
    model = ConDiffusion(make_io(), ConDiffusionOptions(**TINY))
    with torch.no_grad():
        for p in model.nets["ema"].parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x = batch()["sar"]
    y1, y2 = model.predict(x), model.predict(x)
    assert y1.shape == (2, 3, 16, 16) and torch.equal(y1, y2) and y1.abs().max() <= 1
    [(kind, module, arch, kwargs)] = model.export()
    assert kind == "generator" and module is model.nets["ema"] and arch == "diffusion_unet"
    meta = model.export_meta()
    assert meta["diffusion"] == {"prediction": "eps", "schedule": "linear", "timesteps": 50, "sampler": "ddpm",
                                 "steps": 10, "eta": 0.0, "ema_decay": 0.9999}
    path = save_network(tmp_path / "g.safetensors", module, kind, arch, kwargs, meta)
    net = load_network(path, "generator", torch.device("cpu"))
    sd = model.nets["ema"].state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in net.module.state_dict().items())
    assert model.extra_state() == {"ema_updates": 0}
    model.load_extra_state({"ema_updates": 7})
    assert model.ema_updates == 7
