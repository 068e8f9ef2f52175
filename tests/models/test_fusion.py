"""fusion model (sarkit.models.fusion): the head's formula, the upstream rule and records, the loss terms, the
paper's step schedule and the best-PSNR checkpoint, trained through ``sarkit train`` on tiny runs."""

from __future__ import annotations

import json

import pytest
import torch

from models.fusionruns import make_fusion_runs, runner
from sarkit.cli import app
from sarkit.errors import InputError
from sarkit.models import get_model
from sarkit.models.base import parse_options
from sarkit.models.checkpoint import file_sha256, load_network, resolve_export, save_network
from sarkit.models.fusion import FusionHead, upstream_runs
from sarkit.raster.norm import Normalization, optical_normalization


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_fusion_runs(tmp_path_factory.mktemp("fusion"))


def test_head_is_conv_of_residual_blocks_of_the_summed_branch_convs() -> None:
    torch.manual_seed(0)
    head = FusionHead(3, width=4, n_blocks=8).eval()
    assert len(head.res) == 8
    x_r, x_g = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    want = head.conv_out(head.res(head.conv_r(x_r) + head.conv_g(x_g)))
    assert torch.allclose(head(x_r, x_g), want)


def test_paper_defaults() -> None:
    cls = get_model("fusion")
    o = cls.Options()
    assert (o.n_blocks, o.lambda_per, o.lambda_fc, o.lambda_cx_r, o.lambda_cx_g) == (8, 10.0, 1.0, 0.01, 0.05)
    assert (o.lr_drop_at, o.lr_drop) == (0.2, 10.0) and cls.keep_best == "psnr"


@pytest.mark.slow
def test_lr_is_divided_by_ten_after_a_fifth_of_the_steps(runs) -> None:
    cls = get_model("fusion")
    model = cls.__new__(cls)  # lr_factor reads the options only
    model.opts = parse_options(cls.Options, {"x_r_from": "r", "x_g_from": "g"})
    assert [model.lr_factor(s, 40000) for s in (0, 7999, 8000, 39999)] == [1.0, 1.0, 0.1, 0.1]
    lines = [json.loads(x) for x in (runs.fusion / "metrics.jsonl").read_text().splitlines()]
    lrs = [x["lr"] for x in lines if x["kind"] == "train"]
    assert lrs[0] == pytest.approx(1e-3) and lrs[1:] == pytest.approx([1e-4] * 3)  # round(0.2·4) = 1


@pytest.mark.slow
def test_run_logs_every_loss_term_and_keeps_the_best_psnr_export(runs) -> None:
    lines = [json.loads(x) for x in (runs.fusion / "metrics.jsonl").read_text().splitlines()]
    train_line = next(x for x in lines if x["kind"] == "train")
    assert {"L1", "LPIPS", "CX_R", "CX_G"} <= set(train_line)
    vals = [x for x in lines if x["kind"] == "val"]
    best = load_network(runs.fusion / "checkpoints" / "best")
    top = max(vals, key=lambda v: v["psnr"])
    assert best.meta["best"] == {"metric": "psnr", "value": pytest.approx(top["psnr"]), "step": top["step"]}
    state = torch.load(runs.fusion / "checkpoints" / "state-latest.pt", weights_only=True)
    assert state["best"]["step"] == top["step"]


@pytest.mark.slow
def test_export_and_config_record_the_upstream_runs(runs) -> None:
    net = load_network(runs.fusion)
    rec = net.meta["fusion"]
    reg_file = resolve_export(runs.regression, "generator").resolve()
    p2p_file = resolve_export(runs.pix2pix, "generator").resolve()
    assert rec["x_r"] == {"path": str(reg_file), "sha256": file_sha256(reg_file), "model": "regression", "on": "input"}
    assert rec["x_g"] == {"path": str(p2p_file), "sha256": file_sha256(p2p_file), "model": "pix2pix", "on": "input"}
    config = json.loads((runs.fusion / "config.json").read_text())
    assert config["helpers"]["x_r"] == rec["x_r"] and config["helpers"]["x_g"] == rec["x_g"]
    assert net.arch == "fusion_head"


@pytest.mark.slow
def test_a_gan_prior_branch_takes_x_r_and_mismatched_runs_are_refused(runs, tmp_path) -> None:
    reg = load_network(runs.regression)
    opt = Normalization.from_dict(reg.meta["out_norm"])
    sar = Normalization.from_dict(reg.meta["in_norm"])
    prior = save_network(tmp_path / "prior.safetensors", torch.nn.Identity(), "generator", "identity",
                         {"channels": opt.channels}, {"model": "gan-prior", "in_norm": opt.to_dict(),
                                                      "out_norm": opt.to_dict(), "tile_size": 32})
    _, g = upstream_runs(str(runs.regression), str(prior), sar, opt)
    assert g.on == "x_r" and g.model == "gan-prior"
    _, g = upstream_runs(str(runs.regression), str(runs.pix2pix), sar, opt)
    assert g.on == "input"
    with pytest.raises(InputError, match="must be a --model regression run"):
        upstream_runs(str(runs.pix2pix), str(runs.pix2pix), sar, opt)
    other = optical_normalization(("B8",))
    with pytest.raises(InputError, match="tiles"):
        upstream_runs(str(runs.regression), str(runs.pix2pix), sar, other)


@pytest.mark.slow
def test_train_refuses_fusion_without_runs_and_the_options_on_other_models(runs, tmp_path) -> None:
    r = runner.invoke(app, ["train", "--model", "fusion", "--data", str(runs.tiles), "--out", str(tmp_path / "f"),
                            "--steps", "1", "--device", "cpu", "--quiet", "--x-r-from", str(runs.regression)])
    assert r.exit_code == 2 and "--x-g-from" in r.output
    r = runner.invoke(app, ["train", "--model", "pix2pix", "--data", str(runs.tiles), "--out", str(tmp_path / "p"),
                            "--steps", "1", "--device", "cpu", "--quiet", "--x-r-from", str(runs.regression)])
    assert r.exit_code == 2 and "--x-r-from is not an option of --model pix2pix" in r.output


@pytest.mark.slow
def test_missing_vgg19_weights_is_a_one_line_error_naming_the_option(runs, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SARKIT_VGG19_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    r = runner.invoke(app, ["train", "--model", "fusion", "--data", str(runs.tiles), "--out", str(tmp_path / "f"),
                            "--steps", "1", "--device", "cpu", "--quiet", "--x-r-from", str(runs.regression),
                            "--x-g-from", str(runs.pix2pix), "--lpips-weights", str(runs.heads),
                            "--lpips-backbone", str(runs.alexnet)])
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "--vgg19-weights" in line and "SARKIT_VGG19_WEIGHTS" in line and len(line.splitlines()) == 1
    assert not (tmp_path / "f").exists()
