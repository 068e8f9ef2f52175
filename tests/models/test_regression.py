"""regression model (sarkit.models.regression): pixel loss, both architectures, LPIPS term, export."""

from __future__ import annotations

import pytest
import torch

from lossweights import write_lpips_weights
from sarkit.errors import InputError, WeightsNotFoundError
from sarkit.models import get_model
from sarkit.models.base import ModelIO, StepTools, parse_options
from sarkit.models.checkpoint import load_network
from sarkit.raster.norm import optical_normalization, sar_normalization
from sarkit.training import train
from training.tilesets import make_tiles, opts


def io(size: int = 32) -> ModelIO:
    sar, opt = sar_normalization().to_dict(), optical_normalization().to_dict()
    return ModelIO(2, 3, "sar2opt", size, sar, opt)


def batch(n: int = 2, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sar = torch.nn.functional.avg_pool2d(torch.rand(n, 2, size, size, generator=g) * 2 - 1, 3, 1, 1)
    mix = torch.tensor([[0.8, -0.3], [0.2, 0.6], [-0.5, 0.4]])
    optical = 0.5 * torch.tanh(torch.einsum("oc,nchw->nohw", mix, sar) * 3) + 0.3
    return {"sar": sar, "optical": optical, "valid": torch.ones(n, size, size, dtype=torch.bool)}


def build(**o: str):
    cls = get_model("regression")
    torch.manual_seed(0)
    model = cls(io(), parse_options(cls.Options, o))
    model.configure_optimizers(1e-3, (0.5, 0.999))
    return model


@pytest.mark.parametrize("arch", ["nafnet", "unet"])
def test_few_steps_lower_the_l1_loss(arch: str) -> None:
    model = build(arch=arch, preset="tiny", ngf="8", pixel_loss="l1")
    tools = StepTools(torch.device("cpu"))
    b = batch()
    l1 = [model.train_step(b, tools)["L1"] for _ in range(15)]
    assert sum(l1[-3:]) / 3 < 0.8 * l1[0], l1


def test_defaults_are_the_papers_nafnet_with_the_l2_pixel_loss_only() -> None:
    o = get_model("regression").Options()
    assert (o.arch, o.preset, o.pixel_loss, o.lambda_lpips) == ("nafnet", "paper", "l2", 0.0)
    with pytest.raises(InputError, match="arch"):
        parse_options(get_model("regression").Options, {"arch": "vit"})


def test_lpips_term_from_local_files_is_reported_and_trains(tmp_path) -> None:
    heads, alex = write_lpips_weights(tmp_path)
    model = build(preset="tiny", lambda_lpips="1.0", lpips_weights=str(heads), lpips_backbone=str(alex))
    assert model.helper_records["lpips"]["heads"] == str(heads)
    losses = model.train_step(batch(), StepTools(torch.device("cpu")))
    assert set(losses) == {"L1", "L2", "LPIPS"} and losses["LPIPS"] > 0
    assert not any(k.startswith("lpips") for k in model.state_dict())  # a frozen helper: not saved


def test_missing_lpips_weights_name_the_option(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SARKIT_LPIPS_WEIGHTS", raising=False)
    monkeypatch.setenv("SARKIT_LPIPS_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.raises(WeightsNotFoundError, match="SARKIT_LPIPS_WEIGHTS"):
        build(preset="tiny", lambda_lpips="1.0")


def test_trains_on_tiles_and_exports_a_loadable_nafnet(tmp_path) -> None:
    tiles = make_tiles(tmp_path / "tiles")
    res = train(opts(tiles, tmp_path / "run", model="regression", lr=1e-3,
                     model_options={"preset": "tiny"}))
    net = load_network(tmp_path / "run")
    assert net.arch == "nafnet" and net.meta["model"] == "regression"
    assert net.meta["regression"] == {"arch": "nafnet", "preset": "tiny"}
    x = torch.zeros(1, 2, 32, 32)
    assert net.module(x).shape == (1, 3, 32, 32) and res.steps == 4


def test_l2_pixel_loss_is_the_masked_mean_squared_error_and_lowers_it() -> None:
    from sarkit.models.pix2pix import masked_mse

    pred, target = torch.zeros(1, 2, 2, 2), torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]]]])
    valid = torch.tensor([[[True, False], [True, True]]])
    assert masked_mse(pred, target, valid).item() == pytest.approx((1 + 9 + 16 + 0 + 0 + 4) / 6)
    model = build(arch="unet", ngf="8", pixel_loss="l2")
    tools = StepTools(torch.device("cpu"))
    b = batch()
    l2 = [model.train_step(b, tools)["L2"] for _ in range(15)]
    assert sum(l2[-3:]) / 3 < 0.7 * l2[0], l2
    with pytest.raises(InputError, match="pixel_loss"):
        parse_options(get_model("regression").Options, {"pixel_loss": "huber"})


def test_unet_decoder_resizes_by_default_and_transposes_on_request() -> None:
    def transposed(model) -> int:
        return sum(isinstance(m, torch.nn.ConvTranspose2d) for m in model.nets["G"].modules())

    assert transposed(build(arch="unet", ngf="8")) == 0
    assert transposed(build(arch="unet", ngf="8", upsample="transpose")) == 5
    with pytest.raises(InputError, match="upsample"):
        parse_options(get_model("regression").Options, {"upsample": "blur"})
