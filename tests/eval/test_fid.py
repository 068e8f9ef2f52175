"""Fréchet distance, streaming feature statistics, the Inception/CLIP feature paths and missing weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from scipy.stats import ortho_group
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.errors import InputError, WeightsNotFoundError
from sarkit.eval.fid import (FeatureStats, InceptionExtractor, build_inception, frechet_distance, load_inception,
                             to_rgb)
from sarkit.eval.options import EvalOptions
from sarkit.eval.runner import run_eval
from sarkit.reporting import RecordingReporter


def test_frechet_distance_of_known_gaussians_matches_closed_form():
    """Commuting covariances Σi = Q diag(di) Qᵀ: FD = ‖μ1−μ2‖² + Σ(d1 + d2 − 2√(d1·d2))."""
    rng = np.random.default_rng(0)
    q = ortho_group.rvs(6, random_state=1)
    d1, d2 = rng.uniform(0.5, 3, 6), rng.uniform(0.1, 2, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = q @ np.diag(d1) @ q.T, q @ np.diag(d2) @ q.T
    expected = float(((mu1 - mu2) ** 2).sum() + (d1 + d2 - 2 * np.sqrt(d1 * d2)).sum())
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)
    # 1-D: (μ1−μ2)² + (σ1 − σ2)²
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == \
        pytest.approx(4.0 + 1.0)


def test_frechet_distance_singular_covariances_stay_finite():
    s = np.zeros((3, 3))
    s[0, 0] = 1.0
    assert math.isfinite(frechet_distance(np.zeros(3), s, np.ones(3), s))


def test_feature_stats_stream_equals_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 5)) * [1, 2, 3, 4, 5] + 7
    st = FeatureStats(5)
    for chunk in np.array_split(x, 7):
        st.update(torch.from_numpy(chunk))
    mu, cov = st.mean_cov()
    assert np.allclose(mu, x.mean(axis=0)) and np.allclose(cov, np.cov(x, rowvar=False))
    one = FeatureStats(5)
    one.update(x[:1])
    with pytest.raises(InputError, match="at least 2"):
        one.mean_cov()


def test_rgb_mapping_of_sar_and_optical():
    sar = torch.rand(2, 2, 8, 8)
    rgb = to_rgb(sar, "sar", ["VV", "VH"])
    assert torch.equal(rgb[:, :2], sar) and torch.allclose(rgb[:, 2], sar.mean(dim=1))
    opt = torch.rand(1, 4, 8, 8)
    picked = to_rgb(opt, "optical", ["B2", "B3", "B4", "B8"])
    assert torch.equal(picked[:, 0], opt[:, 2]) and torch.equal(picked[:, 2], opt[:, 0])
    with pytest.raises(InputError, match="RGB"):
        to_rgb(opt, "optical", ["B5", "B6", "B7", "B8"])


def test_missing_weights_error_names_option_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SARKIT_FID_WEIGHTS", raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        load_inception(None)
    assert "--fid-weights" in str(err.value) and "SARKIT_FID_WEIGHTS" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsNotFoundError, match="not found"):
        load_inception(tmp_path / "nope.pt")


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """A randomly initialised torchvision inception_v3 (with aux head and fc, as users have it) saved to disk."""
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    d = tmp_path_factory.mktemp("fidw")
    torch.save(net.state_dict(), d / "inception.pt")
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in net.state_dict().items() if not k.startswith("AuxLogits")}
    save_file(state, str(d / "inception.safetensors"))
    return d


@pytest.mark.slow
def test_inception_features_loaded_through_the_real_path(inception_weights):
    torch.manual_seed(1)
    imgs = torch.rand(2, 3, 40, 40)
    feats = []
    for name in ("inception.pt", "inception.safetensors"):
        ex = InceptionExtractor(load_inception(inception_weights / name))
        f = ex(imgs)
        assert f.shape == (2, 2048) and torch.isfinite(f).all()
        feats.append(f)
    assert torch.allclose(feats[0], feats[1], atol=1e-5)
    assert isinstance(build_inception().fc, torch.nn.Identity)
    assert not torch.allclose(feats[0], ex(imgs.flip(-1)))  # features depend on the image


def test_foreign_weights_file_is_a_clear_error(tmp_path):
    from sarkit.errors import CheckpointError

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="inception_v3"):
        load_inception(tmp_path / "bad.pt")


def _tiles(root, n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = (np.clip(rng.random((3, 32, 32)) * 2000 + 1 + shift, 1, None)).astype("uint16")
        with rasterio.open(root / f"t{i}.tif", "w", driver="GTiff", height=32, width=32, count=3, dtype="uint16",
                           crs="EPSG:32631", transform=from_origin(0, 320, 10, 10), nodata=0) as d:
            d.write(a)
            d.descriptions = ("B4", "B3", "B2")


@pytest.mark.slow
def test_fid_and_fid_clip_through_the_runner(tmp_path, inception_weights):
    import open_clip

    _tiles(tmp_path / "p", 3, 0, shift=800)
    _tiles(tmp_path / "t", 3, 1)
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                                           "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    (tmp_path / "tinyclip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "tinyclip.json")
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tinyclip").state_dict(), tmp_path / "tinyclip.pt")
    rep = RecordingReporter()
    opts = EvalOptions(metrics=("psnr", "fid", "fid-clip"), fid_weights=inception_weights / "inception.pt",
                       clip_weights=tmp_path / "tinyclip.pt", clip_model=str(tmp_path / "tinyclip.json"))
    res = run_eval(opts, rep, pred=tmp_path / "p", target=tmp_path / "t")
    s = res.report["summary"]
    assert s["fid"]["n"] == 3 and math.isfinite(s["fid"]["value"]) and s["fid"]["value"] > 0
    assert math.isfinite(s["fid-clip"]["value"]) and s["fid-clip"]["value"] > 0
    assert any("2048" in w for w in rep.warnings)


def test_fid_with_one_sample_and_missing_weights_exit_2(tmp_path, monkeypatch, inception_weights):
    monkeypatch.delenv("SARKIT_FID_WEIGHTS", raising=False)
    _tiles(tmp_path / "p", 2, 0)
    _tiles(tmp_path / "t", 2, 1)
    r = CliRunner().invoke(app, ["eval", "--pred", str(tmp_path / "p"), "--target", str(tmp_path / "t"),
                                 "--metrics", "psnr,fid", "--report", str(tmp_path / "rep")])
    assert r.exit_code == 2 and "--fid-weights" in r.output and not (tmp_path / "rep").exists()
    with pytest.raises(InputError, match="at least 2"):
        run_eval(EvalOptions(metrics=("fid",), fid_weights=inception_weights / "inception.pt"),
                 pred=tmp_path / "p" / "t0.tif", target=tmp_path / "t" / "t0.tif")
