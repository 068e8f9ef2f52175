"""Segment Anything as the F of SMS (sarkit.eval.sam): config read off the shapes, loading, F, errors, the CLI."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from safetensors.torch import save_file
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.errors import CheckpointError, InputError, WeightsNotFoundError
from sarkit.eval import sam as S
from sarkit.eval.options import EvalOptions
from sarkit.eval.runner import run_eval

TINY = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0, qkv_bias=True,
            global_attn_indexes=[1], window_size=2, prompt_embed_dim=32, mask_in_chans=16, decoder_depth=1,
            decoder_mlp_dim=64, attention_downsample_rate=2, num_multimask_outputs=3, iou_head_depth=3,
            iou_head_hidden_dim=32)


@pytest.fixture(scope="module")
def sam_file(tmp_path_factory) -> Path:
    """A tiny random SAM saved as a state dict (.pth) and as safetensors."""
    pytest.importorskip("segment_anything")
    torch.manual_seed(0)
    model = S.build_sam(S.SamConfig(**TINY))
    with torch.no_grad():  # larger output weights, so the prompt logits are far from 0 and F is not uniform
        for p in model.mask_decoder.output_hypernetworks_mlps.parameters():
            p.mul_(8.0)
    d = tmp_path_factory.mktemp("samw")
    torch.save(model.state_dict(), d / "sam_tiny.pth")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "sam_tiny.safetensors"))
    return d / "sam_tiny.pth"


@pytest.fixture(scope="module")
def seg(sam_file):
    return S.load_sam_segmenter(sam_file)


def test_tiny_checkpoint_loads_with_the_inferred_config(sam_file, seg):
    assert asdict(seg.cfg) == {**TINY, "decoder_heads": S.DECODER_HEADS}
    saved = torch.load(sam_file, weights_only=True)
    loaded = seg.sam.state_dict()
    assert set(saved) == set(loaded) and all(torch.equal(saved[k], loaded[k]) for k in saved)
    other = S.load_sam_segmenter(sam_file.with_suffix(".safetensors"))
    x = torch.rand(1, 3, 32, 40)
    assert torch.allclose(seg.logits(x), other.logits(x), atol=1e-5)


@pytest.mark.parametrize("embed,depth,heads,glob", [(768, 12, 12, [2, 5, 8, 11]), (1024, 24, 16, [5, 11, 17, 23]),
                                                     (1280, 32, 16, [7, 15, 23, 31])])
def test_official_vit_b_l_h_shapes_give_their_configs(embed, depth, heads, glob):
    pytest.importorskip("segment_anything")
    cfg = S.SamConfig(img_size=1024, patch_size=16, embed_dim=embed, depth=depth, num_heads=heads, mlp_ratio=4.0,
                      qkv_bias=True, global_attn_indexes=glob, window_size=14, prompt_embed_dim=256,
                      mask_in_chans=16, decoder_depth=2, decoder_mlp_dim=2048, attention_downsample_rate=2,
                      num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256)
    with torch.device("meta"):  # shapes only, no memory
        state = S.build_sam(cfg).state_dict()
    assert asdict(S.infer_config(state)) == asdict(cfg)


def test_f_is_a_probability_map_and_sms_is_bounded(seg):
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 32, 40), torch.rand(2, 3, 32, 40)
    prob = seg.probabilities(x)
    assert prob.shape == (2, S.GRID * S.GRID + 1, 32, 40)
    assert torch.allclose(prob.sum(dim=1), torch.ones(2, 32, 40), atol=1e-5)
    assert torch.equal(seg.sms_map(x, x), torch.zeros(2, 32, 40))
    m = seg.sms_map(x, y)
    assert m.shape == (2, 32, 40) and float(m.mean()) > 1e-4 and float(m.max()) <= 2.0
    with pytest.raises(InputError, match="3-channel"):
        seg.logits(x[:, :2])


def test_grid_points_and_resize_rule():
    pts = S.grid_points(16, 32, g=2)
    assert pts.tolist() == [[8.0, 4.0], [24.0, 4.0], [8.0, 12.0], [24.0, 12.0]]
    assert S.preprocess_shape(256, 128, 1024) == (1024, 512)
    assert S.preprocess_shape(30, 45, 64) == (43, 64)


def test_missing_weights_package_and_foreign_file(monkeypatch, tmp_path, sam_file):
    monkeypatch.delenv("SARKIT_SAM_WEIGHTS", raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        S.load_sam(None)
    msg = str(err.value)
    assert "--sam-weights" in msg and "SARKIT_SAM_WEIGHTS" in msg and "\n" not in msg
    monkeypatch.setenv("SARKIT_SAM_WEIGHTS", str(sam_file))
    assert S.load_sam(None)[2] == sam_file
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 4, 4, 8)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="not a Segment Anything checkpoint"):
        S.load_sam(tmp_path / "bad.pth")
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # as if not installed
    with pytest.raises(InputError, match=r"pip install 'sarkit\[sam\]'"):
        S.load_sam(sam_file)


def _tiles(root: Path, n: int, seed: int, size: int = 32) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = (rng.random((3, size, size)) * 2500 + 1).astype("uint16")
        with rasterio.open(root / f"t{i}.tif", "w", driver="GTiff", height=size, width=size, count=3,
                           dtype="uint16", crs="EPSG:32631", transform=from_origin(0, 320, 10, 10), nodata=0) as d:
            d.write(a)
            d.descriptions = ("B4", "B3", "B2")
    return root


def test_sar_tiles_use_the_fid_rgb_mapping(tmp_path, sam_file):
    rng = np.random.default_rng(3)
    for name in ("p", "t"):
        (tmp_path / name).mkdir()
        with rasterio.open(tmp_path / name / "a.tif", "w", driver="GTiff", height=32, width=32, count=2,
                           dtype="float32", crs="EPSG:32631", transform=from_origin(0, 320, 10, 10)) as d:
            d.write(rng.uniform(-25, 0, (2, 32, 32)).astype("float32"))
    res = run_eval(EvalOptions(metrics=("sms",), sms_model="sam", sam_weights=sam_file),
                   pred=tmp_path / "p", target=tmp_path / "t")
    assert 0 < res.report["summary"]["sms"]["value"] <= 2


def test_cli_sms_with_sam_needs_no_segmenter(tmp_path, sam_file):
    p, t = _tiles(tmp_path / "p", 2, 1), _tiles(tmp_path / "t", 2, 2)
    runner = CliRunner()
    base = ["eval", "--pred", str(p), "--target", str(t)]
    r = runner.invoke(app, [*base, "--metrics", "sms", "--sms-model", "sam", "--sam-weights", str(sam_file),
                            "--report", str(tmp_path / "rep"), "-q"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "rep" / "report.json").read_text())
    s = rec["summary"]["sms"]
    assert 0 < s["value"] <= 2 and s["n"] == 2 and rec["segmentation"] is None
    assert rec["networks"]["sms"]["model"] == "sam" and rec["networks"]["sms"]["weights"] == str(sam_file)
    same = run_eval(EvalOptions(metrics=("sms",), sms_model="sam", sam_weights=sam_file), pred=t, target=t)
    assert same.report["summary"]["sms"]["value"] == 0.0
    # pa still needs the DeepLabV3 segmenter; unknown model names and missing weights are bad usage
    r = runner.invoke(app, [*base, "--metrics", "pa,sms", "--sms-model", "sam", "--sam-weights", str(sam_file)])
    assert r.exit_code == 2 and "pa, miou need a segmenter" in r.output
    r = runner.invoke(app, [*base, "--metrics", "sms", "--sms-model", "mask2former"])
    assert r.exit_code == 2 and "--sms-model" in r.output
    r = runner.invoke(app, [*base, "--metrics", "sms", "--sms-model", "sam", "--sam-weights",
                            str(tmp_path / "nope.pth")])
    assert r.exit_code == 2 and "--sam-weights" in r.output and "SARKIT_SAM_WEIGHTS" in r.output
