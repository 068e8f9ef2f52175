"""gan-prior (sarkit.models.gan_prior): options and refusals, the losses and R1 by hand, both phases on tiny tiles,
the exports (E∘G and the prior) loaded back, and sampling the prior."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sarkit.errors import CheckpointError, InputError
from sarkit.models import get_model
from sarkit.models.base import ModelIO, StepTools, parse_options
from sarkit.models.checkpoint import file_sha256, load_network
from sarkit.models.gan_prior import GanPriorOptions, d_logistic, g_nonsaturating, r1_penalty, sample_prior
from sarkit.training import TrainOptions
from sarkit.training.loop import _set_lr, train
from training.tilesets import make_tiles

LPIPS_CHANNELS = (64, 192, 384, 256, 256)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ganprior")


@pytest.fixture(scope="module")
def tiles(work: Path) -> Path:
    return make_tiles(work / "tiles")


@pytest.fixture(scope="module")
def lpips_files(work: Path) -> dict[str, str]:
    """A random AlexNet trunk and random LPIPS heads saved as files (no download)."""
    from torchvision.models import alexnet

    torch.manual_seed(0)
    trunk = {f"features.{k}": v for k, v in alexnet(weights=None).features.state_dict().items()}
    torch.save(trunk, work / "alexnet.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(LPIPS_CHANNELS)},
               work / "alex.pth")
    return {"lpips_weights": str(work / "alex.pth"), "lpips_backbone": str(work / "alexnet.pth")}


def run_opts(tiles: Path, out: Path, model: str = "gan-prior", steps: int = 4, **model_options: str) -> TrainOptions:
    return TrainOptions(model=model, data=tiles, out=out, steps=steps, batch_size=2, device="cpu", val_every=0,
                        save_every=0, log_every=1, model_options=model_options)


@pytest.fixture(scope="module")
def upstream(tiles: Path, work: Path) -> Path:
    """A 1-step pix2pix run: any SAR → optical generator stands for the regression run that gives x_R."""
    train(run_opts(tiles, work / "pix2pix", "pix2pix", 1, ngf="8", ndf="8"))
    return work / "pix2pix"


@pytest.fixture(scope="module")
def two_phase_run(tiles: Path, work: Path, upstream: Path, lpips_files: dict[str, str]):
    """4 steps of gan-prior: 2 of the prior, 2 of the encoder on x_R from the pix2pix run; validation at the end."""
    opts = run_opts(tiles, work / "gp", size="tiny", x_r_from=str(upstream), prior_fraction="0.5", **lpips_files)
    from dataclasses import replace

    return train(replace(opts, val_every=4))


def tiny_model(io: ModelIO | None = None, **opts: str):
    cls = get_model("gan-prior")
    torch.manual_seed(0)
    return cls(io, parse_options(cls.Options, {"size": "tiny", "prior_fraction": "1", **opts}))


def optical_io(tiles: Path) -> ModelIO:
    from sarkit.training.data import open_data

    return open_data(run_opts(tiles, tiles.parent / "unused"), get_model("gan-prior")).io


# ------------------------------------------------------------------------------------------ options

def test_phase_two_without_x_r_from_is_refused() -> None:
    with pytest.raises(InputError, match="phase 2 .* needs x_R: pass --model-opt x_r_from=RUN"):
        GanPriorOptions()
    with pytest.raises(InputError, match="leaves no steps for the encoder"):
        GanPriorOptions(prior_fraction=1.0, x_r_from="RUN")
    for bad in ({"prior_fraction": 0.0}, {"size": "huge"}, {"lr_encoder": 0.0}, {"r1_every": 0},
                {"mixing": 1.5}, {"lambda_per": -1.0}):
        with pytest.raises(InputError):
            GanPriorOptions(**{"prior_fraction": 1.0, **bad})
    o = GanPriorOptions(prior_fraction=0.5, x_r_from="RUN")
    assert (o.lambda_per, o.lambda_adv, o.lr_encoder, o.lr_d_encoder) == (10.0, 0.3, 1e-4, 2.5e-5)


def test_cli_refuses_phase_two_without_x_r_from_in_one_line(tiles: Path, tmp_path: Path) -> None:
    from training.tilesets import cli

    res = cli("--model", "gan-prior", "--data", str(tiles), "--out", str(tmp_path / "run"), "--steps", "2",
              "--device", "cpu", "--quiet", "--model-opt", "size=tiny")
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "x_r_from" in lines[0] and lines[0].startswith("error:"), res.output
    assert not (tmp_path / "run").exists()


def test_an_upstream_run_of_the_other_direction_is_refused(tiles: Path, work: Path) -> None:
    from dataclasses import replace

    train(replace(run_opts(tiles, work / "opt2sar", "pix2pix", 1, ngf="8", ndf="8"), direction="opt2sar"))
    with pytest.raises(CheckpointError, match="x_r_from .* has in_norm bands"):
        train(run_opts(tiles, work / "gp-bad", size="tiny", x_r_from=str(work / "opt2sar"), lambda_per="0"))


def test_missing_lpips_weights_name_the_model_options(tiles: Path, upstream: Path, tmp_path: Path) -> None:
    from sarkit.errors import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match="--model-opt lpips_weights=PATH .* lambda_per=0"):
        tiny_model(optical_io(tiles), prior_fraction="0.5", x_r_from=str(upstream),
                   lpips_weights=str(tmp_path / "missing.pth"))


def test_path_length_equals_a_hand_computation() -> None:
    from sarkit.models.gan_prior import path_length

    g = torch.Generator().manual_seed(8)
    m = torch.randn(4, 2 * 3 * 3, generator=g)
    ws = torch.randn(2, 3, 4, generator=g).requires_grad_(True)
    img = (ws.sum(1) @ m).view(2, 2, 3, 3)  # linear in every layer's w: J_w = m for each of the 3 layers
    torch.manual_seed(9)
    got = path_length(img, ws)
    torch.manual_seed(9)
    y = torch.randn_like(img) / 3.0  # N(0, 1)/√(H·W), H = W = 3
    jty = y.flatten(1) @ m.T  # (N, w_dim), the same for every layer
    assert torch.allclose(got, jty.square().sum(1).sqrt(), rtol=1e-5)


def test_path_length_regularisation_runs_in_the_prior_phase_when_on(tiles: Path) -> None:
    from torch.utils.data import default_collate

    from sarkit.training.data import open_data, read_item

    data = open_data(run_opts(tiles, tiles.parent / "unused"), get_model("gan-prior"))
    batch = default_collate([read_item(data.train, i) for i in range(2)])
    model = tiny_model(data.io, pl_weight="2", pl_every="2")
    model.configure_optimizers(2e-4, (0.5, 0.999))
    tools = StepTools(torch.device("cpu"))
    seen = []
    for step in range(3):
        model.set_progress(step, 4)
        seen.append("G_PL" in model.train_step(batch, tools))
    assert seen == [True, False, True] and float(model.pl_mean) > 0
    assert model.optimizers["G"].param_groups[0]["lr"] == pytest.approx(0.002 * 2 / 3)  # lazy: lr · r/(r + 1)


def test_tile_sizes_the_prior_cannot_use_are_refused() -> None:
    from sarkit.raster.norm import optical_normalization, sar_normalization

    io = ModelIO(2, 3, "sar2opt", 16, sar_normalization().to_dict(), optical_normalization().to_dict())
    with pytest.raises(InputError, match="power of two ≥ 32"):
        tiny_model(io)


# ------------------------------------------------------------------------------------------ losses

def test_logistic_losses_by_hand() -> None:
    real, fake = torch.tensor([[0.5], [-1.0]]), torch.tensor([[2.0], [0.0]])
    sp = lambda v: torch.log1p(torch.exp(torch.tensor(v)))  # noqa: E731  softplus
    want_d = (sp(2.0) + sp(0.0)) / 2 + (sp(-0.5) + sp(1.0)) / 2
    assert torch.allclose(d_logistic(real, fake), want_d)
    assert torch.allclose(g_nonsaturating(fake), (sp(-2.0) + sp(0.0)) / 2)


def test_r1_penalty_equals_a_hand_computation_on_a_tiny_d() -> None:
    g = torch.Generator().manual_seed(7)
    a = torch.randn(1, 2, 3, 3, generator=g)
    x = torch.randn(4, 2, 3, 3, generator=g).requires_grad_(True)

    def tiny_d(v: torch.Tensor) -> torch.Tensor:
        """D(x) = Σ a·x² + Σ x (per sample): ∇_x D = 2·a·x + 1."""
        return (a * v.square()).flatten(1).sum(1, keepdim=True) + v.flatten(1).sum(1, keepdim=True)

    r1 = r1_penalty(tiny_d(x), x)
    hand = ((2 * a * x.detach() + 1) ** 2).flatten(1).sum(1).mean()
    assert torch.allclose(r1, hand, rtol=1e-6)
    r1.backward()  # create_graph: the penalty itself has gradients (it trains D)
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_optimizers_run_at_the_models_own_rates_through_the_trainer(tiles: Path, upstream: Path,
                                                                     lpips_files: dict[str, str]) -> None:
    model = tiny_model(optical_io(tiles), prior_fraction="0.5", x_r_from=str(upstream), **lpips_files)
    model.configure_optimizers(2e-4, (0.5, 0.999))
    _set_lr(model, 2e-4 * 0.5)  # what the trainer does in the decay half: lr × factor × the group's lr_scale
    lrs = {k: o.param_groups[0]["lr"] for k, o in model.optimizers.items()}
    c = 16 / 17  # lazy R1 every 16 steps
    assert lrs["E"] == pytest.approx(0.5e-4) and lrs["G_inv"] == pytest.approx(0.5e-4)
    assert lrs["D_inv"] == pytest.approx(0.5 * 2.5e-5 * c) and lrs["D"] == pytest.approx(0.5 * 0.002 * c)
    assert lrs["G"] == pytest.approx(0.5 * 0.002)  # no path-length regularisation: not lazy
    assert model.optimizers["D"].param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** c))


# ------------------------------------------------------------------------------------------ training

def test_phases_split_the_run_at_prior_fraction(tiles: Path, upstream: Path, lpips_files: dict[str, str]) -> None:
    model = tiny_model(optical_io(tiles), prior_fraction="0.25", x_r_from=str(upstream), **lpips_files)
    phases = []
    for step in range(8):
        model.set_progress(step, 8)
        phases.append(model.phase())
    assert phases == [1, 1, 2, 2, 2, 2, 2, 2] and model.prior_steps() == 2


def test_both_phases_train_in_one_run(two_phase_run, work: Path) -> None:
    rows = [json.loads(ln) for ln in (work / "gp" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["phase"] for r in train_rows] == [1.0, 1.0, 2.0, 2.0]  # the trainer told the model its step
    assert {"D", "D_R1", "G"} <= set(train_rows[0]) and "E_L1" not in train_rows[0]
    assert {"D", "E_L1", "E_LPIPS", "G"} <= set(train_rows[-1])
    assert all(torch.isfinite(torch.tensor(v)) for r in train_rows for k, v in r.items() if k not in ("kind",))
    val = [r for r in rows if r["kind"] == "val"]
    assert len(val) == 1 and {"psnr", "ssim", "mae"} <= set(val[0])
    config = json.loads((work / "gp" / "config.json").read_text())
    assert config["helpers"]["x_r"]["sha256"] == file_sha256(work / "pix2pix" / "checkpoints" /
                                                             "generator.safetensors")


def test_a_run_stopped_in_phase_one_resumes_into_phase_two(tiles: Path, work: Path, upstream: Path) -> None:
    from dataclasses import replace

    from training.tilesets import nets_of

    opts = run_opts(tiles, work / "gp-resume", size="tiny", x_r_from=str(upstream), lambda_per="0")
    train(replace(opts, stop_at=2))
    saved = torch.load(work / "gp-resume" / "checkpoints" / "state-latest.pt", weights_only=True)
    assert set(saved["optimizers"]) == {"G", "D", "E", "G_inv", "D_inv"}
    r1 = saved["ranks"][0]["extra"]["last_r1"]
    assert r1 > 0  # R1 ran at step 0
    before = nets_of(work / "gp-resume")
    result = train(replace(opts, resume=True))
    assert (result.start_step, result.steps) == (2, 4) and result.losses["D_R1"] == pytest.approx(r1)
    rows = [json.loads(ln) for ln in (work / "gp-resume" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows if r["kind"] == "train"] == [1.0, 1.0, 2.0, 2.0]
    after = nets_of(work / "gp-resume")
    assert not torch.equal(before["E.w_head.weight"], after["E.w_head.weight"])  # the encoder trained after resume
    assert torch.equal(after["E.w_avg"], after["G.mapping.w_avg"])  # phase 2 started from the prior's mean w


def test_encoder_phase_lowers_the_l1_when_x_r_carries_the_target(tiles: Path, upstream: Path,
                                                                  lpips_files: dict[str, str]) -> None:
    """The 1-step pix2pix gives an x_R without information about the target; a blurred target stands in for a
    trained regression's output here, so that what is measured is the encoder phase's learning."""
    from torch.utils.data import default_collate

    from sarkit.training.data import open_data, read_item

    data = open_data(run_opts(tiles, tiles.parent / "unused"), get_model("gan-prior"))
    batch = default_collate([read_item(data.train, i) for i in range(2)])
    model = tiny_model(data.io, prior_fraction="0.5", x_r_from=str(upstream), lr_encoder="3e-3", **lpips_files)
    model.configure_optimizers(2e-4, (0.5, 0.999))
    blurred = F.avg_pool2d(batch["optical"], 3, 1, 1)
    model.x_r = lambda x: blurred
    tools = StepTools(torch.device("cpu"))
    l1 = []
    for step in range(1, 13):
        model.set_progress(step, 2)  # phase 2 from the first call
        out = model.train_step(batch, tools)
        assert out["phase"] == 2.0
        l1.append(out["E_L1"])
    assert sum(l1[-3:]) / 3 < 0.8 * l1[0], l1


def test_exported_inversion_maps_x_r_to_x_g_and_records_the_upstream(two_phase_run, work: Path,
                                                                      upstream: Path) -> None:
    model = two_phase_run.trained_model
    gen = load_network(work / "gp", "generator")
    up_file = upstream / "checkpoints" / "generator.safetensors"
    assert gen.arch == "gan_prior_inversion" and gen.meta["model"] == "gan-prior"
    assert gen.meta["in_norm"] == gen.meta["out_norm"] == model.io.out_norm  # x_R and x_G: the optical range
    assert gen.meta["x_r_from"]["sha256"] == file_sha256(up_file)
    assert Path(gen.meta["x_r_from"]["path"]) == up_file.resolve()
    c = model.io.out_channels
    x_r = torch.rand(3, c, 32, 32) * 2 - 1
    with torch.no_grad():
        x_g = gen.module(x_r)
    assert x_g.shape == (3, c, 32, 32) and torch.isfinite(x_g).all()
    assert torch.allclose(x_g, model.predict(x_r), atol=1e-5)
    assert torch.equal(x_g, gen.module(x_r).detach())  # fixed noise: deterministic
    prior = load_network(work / "gp", "prior")
    assert prior.arch == "stylegan2_generator" and prior.meta["x_r_from"]["sha256"] == file_sha256(up_file)


def test_prior_only_run_exports_the_prior_and_samples_from_it(tiles: Path, work: Path) -> None:
    result = train(run_opts(tiles, work / "prior-only", steps=2, size="tiny", prior_fraction="1"))
    names = sorted(p.name for p in result.exported)
    assert names == ["prior.safetensors"]
    c = result.trained_model.io.out_channels
    a = sample_prior(work / "prior-only", 3, seed=1)
    assert a.shape == (3, c, 32, 32) and torch.isfinite(a).all()
    assert torch.equal(a, sample_prior(work / "prior-only" / "checkpoints" / "prior.safetensors", 3, seed=1))
    assert not torch.allclose(a, sample_prior(work / "prior-only", 3, seed=2))
    mean = sample_prior(work / "prior-only", 2, seed=1, truncation=0.0)
    assert torch.allclose(mean[0], mean[1], atol=1e-5)  # truncation 0: every z gives the mean w's image
    with pytest.raises(InputError, match="≥ 1"):
        sample_prior(work / "prior-only", 0)


def test_lpips_distance_has_gradients_and_matches_the_metric(lpips_files: dict[str, str]) -> None:
    from sarkit.eval.lpips import load_lpips, lpips_distance

    net, _ = load_lpips(lpips_files["lpips_weights"], lpips_files["lpips_backbone"])
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 3, 40, 40, generator=g).requires_grad_(True), torch.rand(2, 3, 40, 40, generator=g)
    loss = lpips_distance(net, x, y).mean()
    assert torch.allclose(loss.detach(), net(x.detach(), y).mean(), atol=1e-6)
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert F.l1_loss(x.grad, torch.zeros_like(x.grad)) > 0


def test_the_export_chains_after_its_upstream_in_the_inference_engine(two_phase_run, work: Path,
                                                                       upstream: Path) -> None:
    import numpy as np

    from sarkit.infer.engine import ChainPredictor, load_predictor

    first, second = load_predictor(upstream), load_predictor(work / "gp")
    chain = ChainPredictor([first, second])  # refuses stages whose ranges do not meet: x_R's range is E∘G's input
    sar = np.random.default_rng(0).uniform(-1, 1, (2, first.in_norm.channels, 32, 32)).astype(np.float32)
    x_g = chain(sar)
    assert x_g.shape == (2, second.out_norm.channels, 32, 32) and np.isfinite(x_g).all()
    assert np.allclose(x_g, second(first(sar)), atol=1e-5)
    assert second.contract.tile_multiple == 8  # the encoder's poolings: 32 / 4, declared to the engine
    with pytest.raises(InputError, match="multiple of 8"):
        load_predictor(work / "gp", tile=36)
    assert load_predictor(work / "gp", tile=40)(np.zeros((1, second.in_norm.channels, 40, 40), np.float32)).shape \
        == (1, second.out_norm.channels, 40, 40)


def test_translate_runs_the_export_on_an_optical_x_r_raster(two_phase_run, work: Path, tmp_path: Path) -> None:
    import numpy as np
    import rasterio
    from typer.testing import CliRunner

    from rasters import write_rgb_dn
    from sarkit.cli import app

    dn = np.random.default_rng(3).integers(300, 3000, (3, 72, 80)).astype(np.uint16)
    scene = write_rgb_dn(tmp_path / "x_r.tif", dn)
    out = tmp_path / "x_g.tif"
    res = CliRunner().invoke(app, ["translate", str(scene), "--checkpoint", str(work / "gp"), "--out", str(out),
                                   "--overlap", "8", "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    with rasterio.open(out) as src:
        x_g = src.read()
        assert (src.count, src.height, src.width) == (3, 72, 80)
    assert np.isfinite(x_g).all()
