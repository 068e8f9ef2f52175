"""CLIP-IQA (sarkit.eval.clip_iqa) with a tiny random open_clip model saved to a file: the formula, the documented
prompt pairs, the offline weights message, and the metric through sarkit eval."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from clipfiles import TOKENIZER_CFG, make_tiny_clip
from sarkit.errors import WeightsNotFoundError
from sarkit.eval.clip_iqa import LOGIT_SCALE, PROMPT_PAIRS, ClipIqaStream, PromptPair, load_clip_iqa, pair_probabilities
from sarkit.eval.options import EvalInputs, EvalOptions
from sarkit.eval.report import load_schema, validate
from sarkit.eval.runner import run_eval, run_eval_report
from sarkit.models.clip import CLIP_WEIGHTS_ENV, clip_preprocess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[Path, Path]:
    """(model-config JSON, weights file) of a tiny random open_clip model."""
    cfg, weights, _ = make_tiny_clip(tmp_path_factory.mktemp("clip"), "sarkit-tiny-iqa", TOKENIZER_CFG)
    return cfg, weights


def test_the_prompt_pairs_are_the_documented_ones():
    assert [(p.positive, p.negative) for p in PROMPT_PAIRS] == [
        ("Good photo.", "Bad photo."), ("Bright photo.", "Dark photo."), ("Sharp photo.", "Blurry photo."),
        ("Clean photo.", "Noisy photo."), ("Colorful photo.", "Dull photo."),
        ("High contrast photo.", "Low contrast photo.")]
    doc = (ROOT / "docs" / "eval.md").read_text()
    documented = re.findall(r"^\| \d \| `([^`]+)` \| `([^`]+)` \|", doc, flags=re.M)
    assert documented == [(p.positive, p.negative) for p in PROMPT_PAIRS]
    assert LOGIT_SCALE == 100.0


def test_pair_probabilities_are_the_softmax_of_100_cos_over_each_pair():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(3, 8, generator=g), torch.randn(4, 8, generator=g)
    cos = torch.nn.functional.cosine_similarity(img[:, None], txt[None], dim=-1)
    want = torch.stack([torch.softmax(100 * cos[:, 2 * k: 2 * k + 2], dim=1)[:, 0] for k in range(2)], dim=1)
    got = pair_probabilities(img, txt)
    assert got.shape == (3, 2) and torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(pair_probabilities(img * 7.0, txt), got, atol=1e-6)  # cosine: the norm does not count


def test_scores_in_0_1_identical_inputs_identical_and_equal_to_open_clip_by_hand(tiny_clip):
    import open_clip

    cfg, weights = tiny_clip
    iqa = load_clip_iqa(str(cfg), weights)
    x = torch.rand(3, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    s = iqa(x)
    assert s.shape == (3,) and bool(((s > 0) & (s < 1)).all())
    assert torch.equal(iqa(x), s) and torch.equal(iqa(x[1:2].repeat(2, 1, 1, 1)), s[1:2].repeat(2))
    model = open_clip.create_model("sarkit-tiny-iqa", pretrained=str(weights)).eval()
    prompts = [t for p in PROMPT_PAIRS for t in (p.positive, p.negative)]
    with torch.no_grad():
        te = model.encode_text(open_clip.get_tokenizer("sarkit-tiny-iqa")(prompts))
        ie = model.encode_image(clip_preprocess(x, iqa.image_size, iqa.mean, iqa.std))
    cos = torch.nn.functional.cosine_similarity(ie[:, None], te[None], dim=-1)
    probs = torch.softmax(LOGIT_SCALE * cos.view(3, -1, 2), dim=-1)[..., 0]
    assert torch.allclose(s, probs.mean(dim=1), atol=1e-5)
    assert iqa.weights == str(weights) and len(iqa.pairs) == 6


def test_other_prompt_pairs_change_the_text_embeddings(tiny_clip):
    cfg, weights = tiny_clip
    a = load_clip_iqa(str(cfg), weights)
    b = load_clip_iqa(str(cfg), weights, pairs=(PromptPair("Bad photo.", "Good photo."),))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(b.pair_scores(x)[:, 0], 1 - a.pair_scores(x)[:, 0], atol=1e-5)  # the pair swapped


def test_missing_weights_are_one_line_naming_the_option_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(CLIP_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/clip either
    with pytest.raises(WeightsNotFoundError) as err:
        ClipIqaStream.load(EvalOptions(metrics=("clip_iqa",)))
    msg = str(err.value)
    assert "\n" not in msg and "--clip-weights" in msg and CLIP_WEIGHTS_ENV in msg


# ----------------------------------------------------------------------------------------------- through sarkit eval

def _write(path: Path, a: np.ndarray) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[1], width=a.shape[2], count=3, dtype=a.dtype,
                       nodata=0, crs="EPSG:32631", transform=from_origin(500000.0, 4000000.0, 10, 10)) as d:
        d.write(a)
        d.descriptions = ("B4", "B3", "B2")
    return path


def test_tile_sets_score_the_prediction_with_the_target_as_a_reference(tmp_path, tiny_clip):
    cfg, weights = tiny_clip
    for d in ("P", "T"):
        (tmp_path / d).mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        t = (rng.random((3, 40, 40)) * 2500 + 1).astype("uint16")
        p = t if i == 0 else (t // 3 + 1).astype("uint16")
        if i == 2:
            p[:] = 0  # all nodata: no score
            t[:, 0, 0] = 0
        _write(tmp_path / "T" / f"x{i}.tif", t)
        _write(tmp_path / "P" / f"x{i}.tif", p)
    opts = EvalOptions(metrics=("psnr", "clip_iqa"), clip_model=str(cfg), clip_weights=weights, batch_size=2)
    res = run_eval_report(EvalInputs(pred=tmp_path / "P", target=tmp_path / "T"), opts, tmp_path / "out")
    tiles = {t["id"]: t for t in res.report["tiles"]}
    assert tiles["x0"]["clip_iqa"] == pytest.approx(tiles["x0"]["clip_iqa_target"], abs=1e-6)  # the same image
    assert 0 < tiles["x1"]["clip_iqa"] < 1 and tiles["x1"]["clip_iqa"] != tiles["x1"]["clip_iqa_target"]
    assert tiles["x2"]["clip_iqa"] is None
    s = res.summary["clip_iqa"]
    assert s["n"] == 2 and s["value"] == pytest.approx((tiles["x0"]["clip_iqa"] + tiles["x1"]["clip_iqa"]) / 2)
    net = res.report["networks"]["clip_iqa"]
    assert [(p["positive"], p["negative"]) for p in net["pairs"]] == [(p.positive, p.negative) for p in PROMPT_PAIRS]
    assert net["weights"] == str(weights) and 0 < net["target"]["value"] < 1
    rec = json.loads((tmp_path / "out" / "report.json").read_text())
    assert validate(rec, load_schema()) == []
    md = (tmp_path / "out" / "report.md").read_text()
    assert "CLIP-IQA ↑" in md and "no-reference: it scores the prediction only" in md and "Good photo. / Bad" in md
    assert "CLIP-IQA (n=2)" in (tmp_path / "out" / "report.html").read_text()


def test_scenes_and_the_cli(tmp_path, tiny_clip):
    from typer.testing import CliRunner

    from sarkit.cli import app

    cfg, weights = tiny_clip
    t = (np.random.default_rng(1).random((3, 70, 60)) * 2500 + 1).astype("uint16")
    p, tt = _write(tmp_path / "p.tif", t), _write(tmp_path / "t.tif", t)
    res = run_eval(EvalOptions(metrics=("clip_iqa",), clip_model=str(cfg), clip_weights=weights, tile_size=32),
                   pred=p, target=tt)
    assert len(res.report["tiles"]) == 6 and res.report["bands"]["metrics"]["clip_iqa"]["bands"] == ["B4", "B3", "B2"]
    assert all(0 < x["clip_iqa"] < 1 for x in res.report["tiles"])
    r = CliRunner().invoke(app, ["eval", "--pred", str(p), "--target", str(tt), "--metrics", "clip_iqa",
                                 "--clip-model", str(cfg), "--clip-weights", str(weights)])
    assert r.exit_code == 0, r.output
    assert "CLIP-IQA" in r.output and "scores the prediction only" in r.output and "(reference)" in r.output
    r = CliRunner().invoke(app, ["eval", "--pred", str(p), "--target", str(tt), "--metrics", "clip_iqa",
                                 "--clip-model", str(cfg), "--clip-weights", str(tmp_path / "nope.pt")])
    assert r.exit_code == 2 and "--clip-weights" in r.output and CLIP_WEIGHTS_ENV in r.output


def test_model_mode_scores_the_generated_tiles(tmp_path, tiny_clip):
    from sarkit.data.tiling import TileOptions, tile_scene
    from sarkit.models.checkpoint import save_network
    from sarkit.models.registry import Identity
    from sarkit.raster.norm import sar_normalization

    cfg, weights = tiny_clip
    rng = np.random.default_rng(0)
    with rasterio.open(tmp_path / "s1.tif", "w", driver="GTiff", height=256, width=512, count=2, dtype="float32",
                       crs="EPSG:32631", transform=from_origin(500000.0, 4000000.0, 10, 10)) as d:
        d.write((rng.random((2, 256, 512)) * -20).astype("float32"))
        d.descriptions = ("VV", "VH")
    s2 = tmp_path / "s2.tif"
    with rasterio.open(s2, "w", driver="GTiff", height=256, width=512, count=13, dtype="uint16", nodata=0,
                       crs="EPSG:32631", transform=from_origin(500000.0, 4000000.0, 10, 10)) as d:
        d.write((rng.random((13, 256, 512)) * 3000 + 1).astype("uint16"))
    tile_scene(tmp_path / "s1.tif", s2, None, tmp_path / "tiles", TileOptions(split=(0.5, 0.0, 0.5)))
    norm = sar_normalization().to_dict()
    gen = save_network(tmp_path / "gen.safetensors", Identity(2), kind="generator", arch="identity",
                       arch_kwargs={"channels": 2},
                       meta={"model": "pix2pix", "direction": "identity", "in_norm": norm, "out_norm": norm,
                             "tile_size": 256, "run": "t"})
    opts = EvalOptions(metrics=("clip_iqa",), clip_model=str(cfg), clip_weights=weights)
    res = run_eval(opts, checkpoint=gen, data=tmp_path / "tiles")
    r = res.report
    assert r["inputs"]["mode"] == "model" and r["tiles"]
    assert all(t["clip_iqa"] == pytest.approx(t["clip_iqa_target"], abs=1e-6) for t in r["tiles"])  # identity
    assert r["bands"]["metrics"]["clip_iqa"]["bands"] == ["VV", "VH", "(VV+VH)/2"]
