"""pix2pix model (sarkit.models.pix2pix): learning signal, export, directions, masked L1."""

from __future__ import annotations

from pathlib import Path

import torch

from sarkit.models.checkpoint import load_network, save_network
from sarkit.models import get_model
from sarkit.models.base import ModelIO, StepTools, parse_options
from sarkit.models.pix2pix import masked_l1
from sarkit.raster.norm import optical_normalization, sar_normalization


def small_io(direction: str = "sar2opt", size: int = 32) -> ModelIO:
    sar, opt = sar_normalization().to_dict(), optical_normalization().to_dict()
    src, dst = (sar, opt) if direction == "sar2opt" else (opt, sar)
    return ModelIO(len(src["bands"]), len(dst["bands"]), direction, size, src, dst)


def fixed_batch(n: int = 2, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """SAR-like input and an optical target that is a smooth function of it."""
    g = torch.Generator().manual_seed(seed)
    sar = torch.nn.functional.avg_pool2d(torch.rand(n, 2, size, size, generator=g) * 2 - 1, 3, 1, 1)
    mix = torch.tensor([[0.8, -0.3], [0.2, 0.6], [-0.5, 0.4]])
    optical = 0.5 * torch.tanh(torch.einsum("oc,nchw->nohw", mix, sar) * 3) + 0.3
    return {"sar": sar, "optical": optical, "valid": torch.ones(n, size, size, dtype=torch.bool)}


def build(name: str = "pix2pix", direction: str = "sar2opt", **opts: str):
    cls = get_model(name)
    torch.manual_seed(0)
    model = cls(small_io(direction), parse_options(cls.Options, {"ngf": "8", "ndf": "8", **opts}))
    model.configure_optimizers(1e-3, (0.5, 0.999))  # faster than the paper lr for a short test
    return model


def test_registered_with_paper_defaults() -> None:
    cls = get_model("pix2pix")
    o = cls.Options()
    assert cls.paired and not cls.needs_labels
    assert (o.lambda_l1, o.ngf, o.ndf, o.gan_mode) == (100.0, 64, 64, "vanilla")


def test_few_steps_lower_the_l1_term() -> None:
    model = build()
    batch = fixed_batch()
    tools = StepTools(torch.device("cpu"))
    l1 = [model.train_step(batch, tools)["G_L1"] for _ in range(20)]
    assert sum(l1[-3:]) / 3 < 0.8 * l1[0], l1


def test_losses_reported_and_finite() -> None:
    model = build()
    losses = model.train_step(fixed_batch(), StepTools(torch.device("cpu")))
    assert set(losses) == {"G_GAN", "G_L1", "D_real", "D_fake"}
    assert all(isinstance(v, float) and v == v for v in losses.values())


def test_generator_is_unet_of_tile_depth() -> None:
    model = build()
    (kind, net, arch, kwargs), = model.export()
    assert (kind, arch, kwargs["num_downs"], kwargs["ngf"]) == ("generator", "unet", 5, 8)
    assert net(torch.zeros(1, 2, 32, 32)).shape == (1, 3, 32, 32)


def test_exported_generator_reloads_and_matches_predict(tmp_path: Path) -> None:
    model = build()
    batch = fixed_batch()
    tools = StepTools(torch.device("cpu"))
    for _ in range(2):
        model.train_step(batch, tools)
    (kind, net, arch, kwargs), = model.export()
    path = save_network(tmp_path / "generator.safetensors", net, kind, arch, kwargs, {"model": "pix2pix"})
    loaded = load_network(path, "generator")
    x = batch["sar"]
    with torch.no_grad():
        assert torch.equal(loaded.module(x), model.predict(x))
    assert torch.equal(model.predict(x), model.predict(x))  # eval mode: no dropout noise


def test_opt2sar_takes_optical_input() -> None:
    model = build(direction="opt2sar")
    assert model.nets["G"](torch.zeros(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    losses = model.train_step(fixed_batch(), StepTools(torch.device("cpu")))
    assert losses["G_L1"] > 0


def test_masked_l1_ignores_invalid_pixels() -> None:
    pred, target = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
    target[..., :2] = 5.0
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    valid[..., :2] = False
    assert float(masked_l1(pred, target, valid)) == 0.0
    assert float(masked_l1(pred, target, None)) == 2.5
