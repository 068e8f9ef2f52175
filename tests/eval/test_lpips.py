"""LPIPS (sarkit.eval.lpips): loading from local files, the formula by hand, nodata, errors, and the CLI."""

from __future__ import annotations

import json
import math
import shutil
import sys
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
from sarkit.eval import lpips as L
from sarkit.eval.options import EvalOptions
from sarkit.eval.runner import run_eval

CH = (64, 192, 384, 256, 256)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random AlexNet trunk + random non-negative heads, saved as .pth (torch.save) and .safetensors."""
    from torchvision.models import alexnet

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("lpipsw")
    trunk = {f"features.{k}": v for k, v in alexnet(weights=None).features.state_dict().items()}
    torch.save({**trunk, "classifier.1.weight": torch.zeros(2, 3)}, d / "alexnet.pth")  # classifier is ignored
    save_file({k: v.contiguous() for k, v in trunk.items()}, str(d / "alexnet.safetensors"))
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(CH)}
    torch.save(heads, d / "alex.pth")
    save_file(heads, str(d / "alex.safetensors"))
    return d


@pytest.fixture(scope="module")
def net(weights):
    model, _ = L.load_lpips(weights / "alex.pth", weights / "alexnet.pth")
    return model


def test_pth_and_safetensors_load_the_same_network(weights, net):
    other, files = L.load_lpips(weights / "alex.safetensors", weights / "alexnet.safetensors")
    assert files.heads.name == "alex.safetensors" and files.backbone.name == "alexnet.safetensors"
    saved = torch.load(weights / "alex.pth", weights_only=True)
    for k, h in enumerate(other.heads):
        assert torch.equal(h, saved[f"lin{k}.model.1.weight"].reshape(-1))
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 40, 48), torch.rand(2, 3, 40, 48)
    assert torch.allclose(net(x, y), other(x, y), atol=1e-6)


def test_identical_images_give_zero_and_noise_increases_it(net):
    torch.manual_seed(2)
    x = torch.rand(2, 3, 48, 48)
    assert torch.equal(net(x, x), torch.zeros(2))
    noise = torch.randn_like(x)
    d = [float(net(x, (x + a * noise).clamp(0, 1)).mean()) for a in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(b > a > 0 for a, b in zip(d, d[1:])), d


def _by_hand(weights: Path, x: torch.Tensor, y: torch.Tensor) -> float:
    """LPIPS of one pair written out directly from the tensors in the files (numpy for the distance part)."""
    import torch.nn.functional as F

    trunk = torch.load(weights / "alexnet.pth", weights_only=True)
    heads = torch.load(weights / "alex.pth", weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def relus(img):
        h = (2 * img - 1 - shift) / scale
        w = lambda i: (trunk[f"features.{i}.weight"], trunk[f"features.{i}.bias"])  # noqa: E731
        h1 = F.relu(F.conv2d(h, *w(0), stride=4, padding=2))
        h2 = F.relu(F.conv2d(F.max_pool2d(h1, 3, 2), *w(3), padding=2))
        h3 = F.relu(F.conv2d(F.max_pool2d(h2, 3, 2), *w(6), padding=1))
        h4 = F.relu(F.conv2d(h3, *w(8), padding=1))
        h5 = F.relu(F.conv2d(h4, *w(10), padding=1))
        return [t[0].double().numpy() for t in (h1, h2, h3, h4, h5)]

    total = 0.0
    for k, (a, b) in enumerate(zip(relus(x), relus(y))):
        wk = heads[f"lin{k}.model.1.weight"].reshape(-1).double().numpy()
        c, hh, ww = a.shape
        acc = 0.0
        for i in range(hh):
            for j in range(ww):
                va, vb = a[:, i, j], b[:, i, j]
                da = va / (np.sqrt((va ** 2).sum()) + 1e-10) - vb / (np.sqrt((vb ** 2).sum()) + 1e-10)
                acc += float((wk * da ** 2).sum())
        total += acc / (hh * ww)
    return total


def test_formula_matches_a_hand_computation(weights, net):
    torch.manual_seed(3)
    x, y = torch.rand(1, 3, 36, 40), torch.rand(1, 3, 36, 40)
    assert float(net(x, y)[0]) == pytest.approx(_by_hand(weights, x, y), rel=1e-4)


def test_nodata_is_ignored_and_too_small_tiles_are_nan(net):
    torch.manual_seed(4)
    x, y = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)
    full = torch.ones(1, 48, 48, dtype=torch.bool)
    assert torch.equal(net(x, y, full), net(x, y))
    valid = full.clone()
    valid[:, :, 30:] = False
    y2 = y.clone()
    y2[..., 30:] = 1.0 - y2[..., 30:]  # changes only where nodata
    assert torch.allclose(net(x, y, valid), net(x, y2, valid))
    assert math.isnan(float(net(x, y, torch.zeros_like(full))[0]))
    assert math.isnan(float(net(x[..., :20, :], y[..., :20, :])[0]))
    with pytest.raises(InputError, match="3-channel"):
        net(x[:, :2], y[:, :2])


def test_missing_weights_name_the_option_and_the_variable(monkeypatch, weights, tmp_path):
    monkeypatch.delenv("SARKIT_LPIPS_WEIGHTS", raising=False)
    monkeypatch.delenv("SARKIT_LPIPS_BACKBONE", raising=False)
    monkeypatch.setitem(sys.modules, "lpips", None)  # as if the lpips package were not installed
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch hub cache
    with pytest.raises(WeightsNotFoundError) as err:
        L.load_lpips(None, weights / "alexnet.pth")
    msg = str(err.value)
    assert "--lpips-weights" in msg and "SARKIT_LPIPS_WEIGHTS" in msg and "\n" not in msg
    with pytest.raises(WeightsNotFoundError) as err:
        L.load_lpips(weights / "alex.pth", None)
    msg = str(err.value)
    assert "--lpips-backbone" in msg and "SARKIT_LPIPS_BACKBONE" in msg and "\n" not in msg
    with pytest.raises(WeightsNotFoundError, match="not found.*--lpips-weights or SARKIT_LPIPS_WEIGHTS"):
        L.load_lpips(tmp_path / "nope.pth", weights / "alexnet.pth")
    # the environment variables are read, and the torch hub cache is the backbone's default
    monkeypatch.setenv("SARKIT_LPIPS_WEIGHTS", str(weights / "alex.pth"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    shutil.copyfile(weights / "alexnet.pth", cached)
    _, files = L.load_lpips()
    assert files.heads == weights / "alex.pth" and files.backbone == cached


def test_foreign_files_are_clear_errors(weights, tmp_path):
    torch.save({"lin0.model.1.weight": torch.zeros(1, 3, 1, 1)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="LPIPS"):
        L.load_lpips(tmp_path / "bad.pth", weights / "alexnet.pth")
    with pytest.raises(CheckpointError, match="alexnet"):
        L.load_lpips(weights / "alex.pth", tmp_path / "bad.pth")


def test_matches_the_lpips_package_with_the_same_weights(weights, net):
    lpips = pytest.importorskip("lpips")
    ref = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, model_path=str(weights / "alex.pth"),
                      verbose=False)
    trunk = torch.load(weights / "alexnet.pth", weights_only=True)
    for s, (a, b) in enumerate(L.SLICES, start=1):
        part = {k.removeprefix("features."): v for k, v in trunk.items()
                if k.startswith("features.") and a <= int(k.split(".")[1]) < b}
        getattr(ref.net, f"slice{s}").load_state_dict(part)
    torch.manual_seed(5)
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x, y, normalize=True).flatten()
    assert torch.allclose(net(x, y), expected, atol=1e-5)


def _tiles(root: Path, n: int, seed: int, noise: float = 0.0, size: int = 40) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    base = np.random.default_rng(0)
    for i in range(n):
        a = base.random((3, size, size)) * 2000 + 1 + rng.normal(0, noise, (3, size, size))
        with rasterio.open(root / f"t{i}.tif", "w", driver="GTiff", height=size, width=size, count=3,
                           dtype="uint16", crs="EPSG:32631", transform=from_origin(0, 400, 10, 10), nodata=0) as d:
            d.write(np.clip(a, 1, 60000).astype("uint16"))
            d.descriptions = ("B4", "B3", "B2")
    return root


def test_runner_aggregates_lpips_per_tile(tmp_path, weights):
    p, t = _tiles(tmp_path / "p", 3, 1, noise=300), _tiles(tmp_path / "t", 3, 2)
    opts = EvalOptions(metrics=("psnr", "lpips"), lpips_weights=weights / "alex.pth",
                       lpips_backbone=weights / "alexnet.pth", batch_size=2)
    rec = run_eval(opts, pred=p, target=t).report
    vals = [tile["lpips"] for tile in rec["tiles"]]
    s = rec["summary"]["lpips"]
    assert len(vals) == 3 and all(v > 0 for v in vals) and s["n"] == 3
    assert s["value"] == pytest.approx(np.mean(vals)) and s["mean"] == pytest.approx(np.mean(vals))
    assert rec["networks"]["lpips"]["weights"] == str(weights / "alex.pth")
    same = run_eval(opts, pred=t, target=t).report["summary"]["lpips"]
    assert same["value"] == 0.0


def test_cli_writes_lpips_gates_and_compares(tmp_path, weights):
    p, t = _tiles(tmp_path / "p", 2, 1, noise=300), _tiles(tmp_path / "t", 2, 2)
    runner = CliRunner()
    base = ["eval", "--pred", str(p), "--target", str(t), "--metrics", "psnr,lpips",
            "--lpips-weights", str(weights / "alex.pth"), "--lpips-backbone", str(weights / "alexnet.safetensors")]
    r = runner.invoke(app, [*base, "--report", str(tmp_path / "a"), "-q"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "a" / "report.json").read_text())
    assert rec["schema"] == "sarkit.eval/1.4" and rec["summary"]["lpips"]["value"] > 0
    assert all("lpips" in tile for tile in rec["tiles"])
    assert "| LPIPS ↓ |" in (tmp_path / "a" / "report.md").read_text()
    assert "lpips" in (tmp_path / "a" / "tiles.csv").read_text().splitlines()[0]
    # lower is better: --fail-over gates it, --fail-under is refused as bad usage
    r = runner.invoke(app, [*base, "--report", str(tmp_path / "b"), "--fail-over", "lpips=0", "-q"])
    assert r.exit_code == 1 and "lpips" in r.output and (tmp_path / "b" / "report.json").exists()
    r = runner.invoke(app, [*base, "--fail-under", "lpips=0.5", "-q"])
    assert r.exit_code == 2 and "--fail-over lpips=0.5" in r.output
    r = runner.invoke(app, ["eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert r.exit_code == 0 and "LPIPS" in r.output
    r = runner.invoke(app, ["eval", "--pred", str(p), "--target", str(t), "--metrics", "lpips",
                            "--lpips-weights", str(tmp_path / "missing.pth")])
    assert r.exit_code == 2 and "--lpips-weights" in r.output and "SARKIT_LPIPS_WEIGHTS" in r.output
