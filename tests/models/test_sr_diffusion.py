"""Tests of sr-diffusion (sarkit/models/sr_diffusion.py) and its predictor (sarkit/infer/diffusion.py): the LR
protocol, stage 2 at init equal to the unguided model, τ = 0 caching bit-identical, a tiny CPU run, translate at
×2 (exact transform, no seam), the ``--then`` chain, eval of a ×2 output against an HR target, and the residual
x₀-prediction target (oracle sampling recovers HR, an untrained model returns bicubic, overfitting beats it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from typer.testing import CliRunner

from clipfiles import TOKENIZER_CFG, make_tiny_clip
from rasters import write_rgb_dn, write_sar_db
from sarkit.cli import app
from sarkit.errors import InputError
from sarkit.infer.diffusion import SamplingOptions, SRDiffusionPredictor
from sarkit.infer.engine import load_predictor
from sarkit.infer.translate import TranslateOptions, translate_scene
from sarkit.models.base import parse_options
from sarkit.models.checkpoint import load_network, save_network
from sarkit.models.diffusion_unet import ControlledUNet, Guidance
from sarkit.models.registry import NETWORKS, get_model, register_network
from sarkit.models.samplers import FirstBlockCache, NoiseSchedule, SamplingPlan
from sarkit.models.sr_diffusion import (SRDiffusion, SRDiffusionNet, SRDiffusionOptions, area_downsample,
                                        bicubic_up, caption_of, caption_phrases, edge_map, sr_sample)
from sarkit.raster.norm import sar_normalization
from sarkit.training import TrainOptions, train
from training.tilesets import make_tiles

runner = CliRunner()
if "test-sr-conv" not in NETWORKS:
    register_network("test-sr-conv")(lambda: torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1),
                                                                  torch.nn.Tanh()))
UNET = {"channels": 8, "res_blocks": 1, "channel_mult": [1, 2, 2], "attn_levels": [2], "heads": 2}
TINY = {"size": "tiny", "channels": "8", "heads": "2", "channel_mult": "1,2,2", "timesteps": "40", "steps1": "4",
        "steps2": "3", "val_steps": "2", "scale": "2"}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[Path, Path]:
    cfg, weights, _ = make_tiny_clip(tmp_path_factory.mktemp("clip"), "sarkit-tiny-sr-clip", TOKENIZER_CFG)
    return cfg, weights


def perturb(m: torch.nn.Module, seed: int = 0, skip: tuple[str, ...] = ()) -> None:
    """Add noise to every parameter whose name contains none of ``skip`` (zero layers become non-zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not any(s in name for s in skip):
                p.add_(torch.randn(p.shape, generator=g) * 0.2)


# ------------------------------------------------------------------------------------------------ pieces
def test_registered_with_the_papers_step_counts_and_checked_options():
    assert get_model("sr-diffusion") is SRDiffusion
    o = SRDiffusionOptions()
    assert (o.scale, o.stage1, o.semantic, o.steps1, o.steps2, o.sampler1, o.sampler2) == \
        (4, "diffusion", "on", 500, 50, "ddpm", "ddim")
    assert parse_options(SRDiffusionOptions, {"scale": "2", "stage1": "regression"}).scale == 2
    for bad in ({"scale": "3"}, {"stage1": "gan"}, {"semantic": "maybe"}, {"steps2": "0"},
                {"steps1": "3000"}, {"sampler1": "euler"}, {"size": "huge"}):
        with pytest.raises(InputError):
            parse_options(SRDiffusionOptions, bad)


def test_lr_is_the_area_mean_and_bicubic_returns_to_the_hr_grid():
    hr = torch.arange(16.0).reshape(1, 1, 4, 4) / 16
    lr = area_downsample(hr, 2)
    assert torch.allclose(lr, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]) / 16)
    up = bicubic_up(torch.full((1, 3, 5, 7), 0.3), 4)
    assert up.shape == (1, 3, 20, 28) and torch.allclose(up, torch.full_like(up, 0.3), atol=1e-6)
    e = edge_map(torch.cat([torch.full((1, 3, 8, 4), -1.0), torch.full((1, 3, 8, 4), 1.0)], 3))
    assert e.shape == (1, 1, 8, 8) and e.min() == -1.0 and e[0, 0, :, 3:5].min() > 0  # the step is an edge


def test_caption_rule_and_its_phrases():
    c = caption_of(["farmland", "a river", "a town"])
    assert c == "a satellite image of farmland, a river and a town"
    assert caption_phrases(c) == ["farmland", "a river", "a town"]
    assert caption_phrases("Fields and a lake.") == ["Fields", "a lake"]


def test_stage2_at_init_equals_the_unguided_stage1_and_guidance_changes_it_once_trained():
    torch.manual_seed(0)
    net = SRDiffusionNet(3, 2, "diffusion", UNET, context_dim=16)
    perturb(net.stage1)  # a "trained" unguided model (its zero output layer too)
    net.copy_stage1_into_stage2()
    x_t, c = torch.randn(2, 3, 16, 16), torch.rand(2, 3, 16, 16) * 2 - 1
    t, ctx = torch.tensor([3, 30]), torch.randn(2, 4, 16)
    g = Guidance(c, edge_map(c), ctx)
    with torch.no_grad():
        unguided = net.stage1(x_t, t, c)
        assert unguided.abs().max() > 0
        assert torch.equal(net.stage2(x_t, t, g), unguided)                    # bit for bit
        assert torch.equal(net.stage2.unet(x_t, t, c), unguided)
        perturb(net.stage2, 1, skip=("unet.",))                               # zero convs, cross-attention
        perturb(net.stage2.unet, 2, skip=("conv_in", "input_blocks.0", "out.", "time_embed", "res", "attn"))
        assert not torch.equal(net.stage2(x_t, t, g), unguided)


def test_a_new_controlled_unet_is_its_unet_for_the_regression_variant():
    torch.manual_seed(1)
    m = ControlledUNet(3, 3, 1, context_dim=16, **UNET)
    perturb(m.unet, skip=(".cross.",))  # a trained denoiser; its cross-attention and the copy's joins still new
    x_t, c = torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(m(x_t, torch.tensor([5]), Guidance(c, edge_map(c), torch.randn(1, 4, 16))),
                           m.unet(x_t, torch.tensor([5]), c))


def test_caching_with_tau_zero_is_bit_identical_to_no_cache_in_both_stages():
    torch.manual_seed(0)
    net = SRDiffusionNet(3, 2, "diffusion", UNET, context_dim=16).eval()
    perturb(net)
    up = torch.rand(2, 3, 16, 16) * 2 - 1
    sched = NoiseSchedule.linear(40)
    plan = SamplingPlan.make(sched, "ddim", 6)
    ctx = lambda x1: torch.randn(x1.shape[0], 4, 16, generator=torch.Generator().manual_seed(5))  # noqa: E731
    outs, skipped = [], []
    for tau in (None, 0.0, 0.5):
        caches = [FirstBlockCache(m, tau) if tau is not None else None for m in (net.stage1, net.stage2)]
        wrap = [(lambda m, x, t, c, k, n, ch=ch: ch(x, t, c, k, n)) if ch is not None else None for ch in caches]
        with torch.inference_mode():
            outs.append(sr_sample(net, up, plan, plan, ctx, eps1=wrap[0], eps2=wrap[1]))
        skipped.append(sum(ch.skipped for ch in caches if ch is not None))
    assert torch.equal(outs[0], outs[1]) and skipped[1] == 0
    assert skipped[2] > 0 and not torch.equal(outs[0], outs[2])  # τ = 0.5 does skip here: the test can fail


# ------------------------------------------------------------------------------------------------ a tiny run
def train_run(tmp: Path, tiny_clip, **extra: str) -> Path:
    cfg, weights = tiny_clip
    tiles = make_tiles(tmp / "tiles", n_train=3, n_val=1, size=32)
    mo = {**TINY, "clip_model": str(cfg), "clip_pretrained": "", "clip_weights": str(weights), **extra}
    out = tmp / "run"
    train(TrainOptions(model="sr-diffusion", data=tiles, out=out, steps=4, batch_size=2, device="cpu",
                       val_every=4, save_every=0, log_every=1, lr=1e-3, model_options=mo))
    return out


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory, tiny_clip) -> Path:
    return train_run(tmp_path_factory.mktemp("sr"), tiny_clip)


def rgb_scene(path: Path, h: int = 24, w: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, (3, h // 4, w // 4)).repeat(4, 1).repeat(4, 2)
    a = (300 + 2500 * base).astype(np.uint16)
    a[:, :2, :3] = 0
    return write_rgb_dn(path, a)


@pytest.mark.slow
def test_a_tiny_run_trains_on_cpu_and_exports_both_stages(sr_run, tiny_clip):
    rows = [json.loads(line) for line in (sr_run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("kind") == "train"]
    assert train_rows and all(np.isfinite(r["MSE1"]) and np.isfinite(r["MSE2"]) for r in train_rows)
    assert any(r.get("kind") == "val" and np.isfinite(r["psnr"]) for r in rows)
    net = load_network(sr_run)
    assert net.arch == "sr_diffusion" and net.meta["sr"]["scale"] == 2 and net.meta["tile_size"] == 16
    assert net.meta["sr"]["semantic"]["tokens"] == 4 and net.meta["sr"]["lr_protocol"] == "area"
    assert net.module.stage2.unet.context_dim == 16
    cfg = json.loads((sr_run / "config.json").read_text())
    assert cfg["model"] == "sr-diffusion"


@pytest.mark.slow
def test_the_regression_variant_without_semantic_guidance_trains_and_predicts(tmp_path, tiny_clip):
    run = train_run(tmp_path, tiny_clip, stage1="regression", semantic="off")
    p = load_predictor(run, "cpu", None, sampling=SamplingOptions(steps=2))
    assert isinstance(p, SRDiffusionPredictor) and p.captioner is None and p.steps == 3
    y = p(np.zeros((1, 3, 16, 16), np.float32))
    assert y.shape == (1, 3, 32, 32) and np.isfinite(y).all()
    with pytest.raises(InputError, match="semantic=off"):
        load_predictor(run, "cpu", None, sampling=SamplingOptions(clip_weights="x.pt"))


@pytest.mark.slow
def test_translate_writes_a_georeferenced_x2_cog_with_the_input_bounds(tmp_path, sr_run, tiny_clip, monkeypatch):
    monkeypatch.setenv("SARKIT_CLIP_WEIGHTS", str(tiny_clip[1]))
    scene = rgb_scene(tmp_path / "s2.tif")
    sampling = SamplingOptions(steps=2, base_steps=2, cache_threshold=0.3)
    out = tmp_path / "sr.tif"
    translate_scene(scene, sr_run, out, TranslateOptions(overlap=4, device="cpu", amp="off", sampling=sampling))
    with rasterio.open(scene) as s, rasterio.open(out) as o:
        assert (o.height, o.width) == (2 * s.height, 2 * s.width)
        assert o.transform == s.transform * Affine.scale(0.5) and o.bounds == s.bounds and o.crs == s.crs
        assert o.res == (5.0, 5.0) and o.nodata == 0 and o.descriptions == ("B4", "B3", "B2")
        tags = o.tags()
        assert tags["scale"] == "2" and tags["sr_scale"] == "2" and tags["semantic"] == "zero-shot"
        assert tags["caption"].startswith("a satellite image of ") and tags["stage1_steps"] == "2"
        a = o.read()
        assert (a[:, :4, :6] == 0).all() and (a[:, 4:, 6:] > 0).all()


@pytest.mark.slow
def test_small_strips_join_without_seams_like_one_strip(tmp_path, sr_run, tiny_clip, monkeypatch):
    """Noise keyed by HR pixel: tiles of 16 LR pixels (overlap 8) agree with one 48-pixel window up to the small
    context differences of a U-Net, and the differences do not pile up at the strip joins."""
    monkeypatch.setenv("SARKIT_CLIP_WEIGHTS", str(tiny_clip[1]))
    scene = rgb_scene(tmp_path / "s2.tif", 48, 48, seed=2)
    sampling = SamplingOptions(steps=2, base_steps=2, caption=str(write_caption(tmp_path)))
    translate_scene(scene, sr_run, tmp_path / "strips.tif",
                    TranslateOptions(overlap=8, device="cpu", amp="off", sampling=sampling))
    translate_scene(scene, sr_run, tmp_path / "one.tif",
                    TranslateOptions(tile=48, overlap=8, device="cpu", amp="off", sampling=sampling))
    with rasterio.open(tmp_path / "strips.tif") as a, rasterio.open(tmp_path / "one.tif") as b:
        d = np.abs(a.read().astype(np.float64) - b.read().astype(np.float64)).mean(axis=(0, 2))[8:]
    rows_near_joins = [2 * j - 8 + k for j in (8, 16, 24, 32) for k in (-1, 0)]  # HR rows 16, 32, … (after [8:])
    assert d.mean() < 600                                               # DN: the same image, not another
    assert d[rows_near_joins].mean() <= 2.0 * d.mean() + 20


def write_caption(tmp: Path) -> Path:
    p = tmp / "caption.txt"
    p.write_text("\na satellite image of farmland and a river\n")
    return p


@pytest.mark.slow
def test_the_then_chain_runs_end_to_end(tmp_path, sr_run, tiny_clip):
    net = load_network(sr_run)
    opt = net.meta["in_norm"]
    conv = save_network(tmp_path / "sar2opt.safetensors", NETWORKS["test-sr-conv"](), "generator",
                        "test-sr-conv", {}, {"model": "conv", "direction": "sar2opt",
                                             "in_norm": sar_normalization().to_dict(), "out_norm": opt,
                                             "tile_size": 16})
    s1 = write_sar_db(tmp_path / "s1.tif", np.random.default_rng(0).uniform(-20, -5, (2, 20, 28)))
    out = tmp_path / "sr.tif"
    res = runner.invoke(app, ["translate", str(s1), "--checkpoint", str(conv), "--then", str(sr_run), "--out",
                              str(out), "--overlap", "4", "--steps", "2", "--base-steps", "2", "--clip-weights",
                              str(tiny_clip[1]), "--device", "cpu", "--amp", "off", "--quiet"])
    assert res.exit_code == 0, res.output
    with rasterio.open(s1) as s, rasterio.open(out) as o:
        assert (o.height, o.width) == (40, 56) and o.transform == s.transform * Affine.scale(0.5)
        assert o.tags()["model"] == "conv + sr-diffusion" and o.count == 3
    res = runner.invoke(app, ["translate", str(s1), "--checkpoint", str(conv), "--then", str(conv), "--out",
                              str(tmp_path / "x.tif"), "--overlap", "4", "--quiet"])
    assert res.exit_code == 2 and "cannot chain" in res.output


@pytest.mark.slow
def test_eval_compares_a_x2_output_with_an_hr_target(tmp_path, sr_run, tiny_clip, monkeypatch):
    monkeypatch.setenv("SARKIT_CLIP_WEIGHTS", str(tiny_clip[1]))
    hr = rgb_scene(tmp_path / "hr.tif", 48, 64, seed=4)
    with rasterio.open(hr) as h:  # its area downsampling on the same bounds, 20 m pixels
        a = h.read().astype(np.float64)
        lr = a.reshape(3, 24, 2, 32, 2).mean(axis=(2, 4)).round().astype(np.uint16)
        prof = {**h.profile, "height": 24, "width": 32, "transform": h.transform * Affine.scale(2)}
    with rasterio.open(tmp_path / "lr.tif", "w", **prof) as d:
        d.write(lr)
        d.descriptions = ("B4", "B3", "B2")
    translate_scene(tmp_path / "lr.tif", sr_run, tmp_path / "sr.tif",
                    TranslateOptions(overlap=4, device="cpu", amp="off",
                                     sampling=SamplingOptions(steps=2, base_steps=2)))
    res = runner.invoke(app, ["eval", "--pred", str(tmp_path / "sr.tif"), "--target", str(hr), "--metrics",
                              "psnr,ssim"])
    assert res.exit_code == 0, res.output
    assert "psnr" in res.output.lower()


@pytest.mark.slow
def test_eval_checkpoint_feeds_the_area_downsampled_tiles_and_scores_on_the_hr_tiles(tmp_path, sr_run, tiny_clip,
                                                                                    monkeypatch):
    monkeypatch.setenv("SARKIT_CLIP_WEIGHTS", str(tiny_clip[1]))
    tiles = sr_run.parent / "tiles"
    report = tmp_path / "report"
    res = runner.invoke(app, ["eval", "--checkpoint", str(sr_run), "--data", str(tiles), "--split", "val",
                              "--metrics", "psnr,ssim", "--steps", "2", "--base-steps", "2", "--report",
                              str(report), "--quiet"])
    assert res.exit_code == 0, res.output
    summary = json.loads((report / "report.json").read_text())["summary"]
    assert np.isfinite(summary["psnr"]["value"]) and np.isfinite(summary["ssim"]["value"])


@pytest.mark.slow
def test_several_scenes_with_out_dir_are_written_at_x2(tmp_path, sr_run, tiny_clip, monkeypatch):
    monkeypatch.setenv("SARKIT_CLIP_WEIGHTS", str(tiny_clip[1]))
    a, b = rgb_scene(tmp_path / "a.tif", 16, 24), rgb_scene(tmp_path / "b.tif", 24, 16, seed=1)
    res = runner.invoke(app, ["translate", str(a), str(b), "--checkpoint", str(sr_run), "--out-dir",
                              str(tmp_path / "out"), "--overlap", "4", "--steps", "2", "--base-steps", "2",
                              "--device", "cpu", "--amp", "off", "--quiet"])
    assert res.exit_code == 0, res.output
    with rasterio.open(tmp_path / "out" / "a_translated.tif") as o:
        assert (o.height, o.width) == (32, 48)
    res = runner.invoke(app, ["translate", str(a), "--checkpoint", str(sr_run), "--then", str(sr_run), "--out-dir",
                              str(tmp_path / "o2"), "--quiet"])
    assert res.exit_code == 2 and "--then" in res.output


def test_train_scale_option_reaches_the_model_and_is_checked(tmp_path):
    tiles = make_tiles(tmp_path / "tiles", n_train=1, n_val=1, size=16)
    res = runner.invoke(app, ["train", "--model", "sr-diffusion", "--scale", "3", "--data", str(tiles), "--out",
                              str(tmp_path / "run"), "--steps", "1", "--device", "cpu", "--quiet",
                              "--model-opt", "semantic=off"])
    assert res.exit_code == 2 and "--scale must be 2 or 4" in res.output


# ------------------------------------------------------------------------------------------------ targets
def sr_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in model range [-1, 1] (peak-to-peak 2)."""
    return float(10 * torch.log10(4.0 / ((a - b) ** 2).mean()))


def blocky_hr(seed: int = 0, n: int = 2, side: int = 16, span: float = 1.6, fine: float = 0.15) -> torch.Tensor:
    """Seeded HR tiles in [-1, 1]: 4×4 blocks of random level in ±``span``/2 plus fine noise of deviation ``fine``
    (detail bicubic cannot restore)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, side // 4, side // 4, generator=g) * span - span / 2
    return (base.repeat_interleave(4, 2).repeat_interleave(4, 3)
            + fine * torch.randn(n, 3, side, side, generator=g)).clamp(-1, 1)


@pytest.mark.parametrize("kind,prediction,sampler", [("residual", "x0", "ddim"), ("residual", "eps", "ddim"),
                                                     ("image", "eps", "ddim"), ("image", "x0", "ddpm"),
                                                     ("residual", "x0", "ddpm")])
def test_sampling_with_oracle_predictions_recovers_the_hr_tile(kind, prediction, sampler):
    """Both stages given the exact x₀ (or the exact ε of x_t) return HR: the schedule, ᾱ indexing, the x₀ ↔ ε
    conversion and the residual encoding agree between training (``q_sample``, ``encode``) and sampling."""
    from sarkit.models.sr_diffusion import SRTarget, stage1_sample

    net = SRDiffusionNet(3, 2, "diffusion", UNET).eval()
    hr = blocky_hr(span=1.0, fine=0.1)  # |HR − bicubic| ≤ 0.43: the residual /0.5 is not clipped
    up = bicubic_up(area_downsample(hr, 2), 2)
    assert (hr - up).abs().max() < 0.5
    tg = SRTarget(kind, 0.5 if kind == "residual" else 1.0, prediction)
    plan = SamplingPlan.make(NoiseSchedule.linear(100), sampler, 8)

    def oracle(base: torch.Tensor):
        x0 = tg.encode(hr, base)
        if prediction == "x0":
            return lambda m, x_t, t, cond, k, n: x0
        return lambda m, x_t, t, cond, k, n: (x_t - plan.alphas_at(t).sqrt() * x0) / (1 - plan.alphas_at(t)).sqrt()

    with torch.inference_mode():
        x1 = stage1_sample(net, up, plan, call=oracle(up), target=tg)
        assert torch.allclose(x1, hr, atol=2e-4)
        y = sr_sample(net, up, plan, plan, lambda x: None, eps1=oracle(up), eps2=oracle(hr), target=tg)
    assert torch.allclose(y, hr, atol=2e-4)
    assert sr_psnr(up, hr) < 25  # bicubic is far from HR here: the test can fail


def test_an_untrained_residual_model_returns_bicubic_and_the_sr3_parameterisation_does_not():
    """With the default residual x₀-prediction, zero-initialised output layers predict r̂₀ = 0: both stages return
    their base, so the SR is bicubic(LR) exactly; SR3's image ε-prediction returns noise."""
    torch.manual_seed(0)
    net = SRDiffusionNet(3, 2, "diffusion", UNET).eval()
    up = bicubic_up(area_downsample(blocky_hr(), 2), 2)
    plan = SamplingPlan.make(NoiseSchedule.linear(100), "ddim", 5)
    with torch.inference_mode():
        y = sr_sample(net, up, plan, plan, lambda x: None, target=SRDiffusionOptions().sr_target())
        old = sr_sample(net, up, plan, plan, lambda x: None)
    assert torch.allclose(y, up, atol=1e-6)
    assert sr_psnr(old, up) < 15


def test_target_options_are_checked_and_recorded(sr_run, tiny_clip, monkeypatch):
    from sarkit.models.sr_diffusion import SRTarget

    o = SRDiffusionOptions()
    assert (o.target, o.prediction, o.residual_scale) == ("residual", "x0", 0.5)
    assert SRDiffusionOptions(target="image").sr_target() == SRTarget("image", 1.0, "x0")
    for bad in ({"target": "noise"}, {"prediction": "v"}, {"residual_scale": "0"}, {"residual_scale": "3"}):
        with pytest.raises(InputError):
            parse_options(SRDiffusionOptions, bad)
    net = load_network(sr_run)
    assert net.meta["sr"]["target"] == "residual" and net.meta["sr"]["residual_scale"] == 0.5
    assert net.meta["diffusion"]["prediction"] == "x0"
    monkeypatch.setenv("SARKIT_CLIP_WEIGHTS", str(tiny_clip[1]))
    assert load_predictor(sr_run, "cpu", None).target == SRTarget("residual", 0.5, "x0")
    old = dict(net.meta["sr"])
    for k in ("target", "residual_scale"):
        old.pop(k)
    assert SRTarget.from_record(old, "eps") == SRTarget()  # checkpoints from before: SR3's image ε-prediction


@pytest.mark.slow
def test_a_model_that_overfits_two_tiles_beats_bicubic_on_them():
    """150 training steps (``train_step``, EMA, ``predict``: DDIM-5) on two 16² tiles at ×2: the samples come
    closer to the tiles than bicubic does (SR3's image ε-prediction gets 7.5 dB here against bicubic's 20.1 dB)."""
    from modelsteps import tools

    from sarkit.models.base import ModelIO
    from sarkit.raster.norm import optical_normalization

    torch.manual_seed(0)
    hr = blocky_hr()
    io = ModelIO(2, 3, "sar2opt", 16, sar_normalization().to_dict(), optical_normalization().to_dict())
    o = SRDiffusionOptions(scale=2, semantic="off", size="tiny", channels=8, heads=2, channel_mult="1,2",
                           timesteps=200, steps1=5, steps2=5, val_steps=5, ema_decay=0.5)
    m = SRDiffusion(io, o)
    m.configure_optimizers(2e-3, (0.9, 0.999))
    for _ in range(150):
        m.train_step({"optical": hr}, tools())
    up = bicubic_up(area_downsample(hr, 2), 2)
    y = m.predict(up)
    assert sr_psnr(y, hr) > sr_psnr(up, hr) + 0.5
    assert abs(float(y.mean() - hr.mean())) < 0.02  # no drift in brightness
