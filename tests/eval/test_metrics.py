"""PSNR, SSIM and MAE (sarkit.eval.metrics) against scikit-image, with nodata masks, on generated and real images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sarkit.eval import metrics as M
from sarkit.raster.norm import dn_to_reflectance, optical_normalization

SK = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0)


def _pair(seed: int, shape: tuple[int, ...], noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.random(shape).astype(np.float32)
    b = np.clip(a + noise * rng.standard_normal(shape), 0, 1).astype(np.float32)
    return a, b


def _sk(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (peak_signal_noise_ratio(b64, a64, data_range=1.0), structural_similarity(a64, b64, **SK),
            float(np.abs(a64 - b64).mean()))


@pytest.mark.parametrize("shape", [(3, 64, 64), (2, 40, 57), (1, 11, 11), (13, 32, 48)])
def test_metrics_match_skimage_on_generated_images(shape):
    a, b = _pair(1, (4,) + shape)
    got = M.pixel_metrics(torch.from_numpy(a), torch.from_numpy(b))
    for i in range(4):
        p, s, m = _sk(a[i], b[i])
        assert got["psnr"][i].item() == pytest.approx(p, abs=1e-4)
        assert got["ssim"][i].item() == pytest.approx(s, abs=1e-4)
        assert got["mae"][i].item() == pytest.approx(m, abs=1e-6)
    # the single-metric functions agree with the fused one
    assert torch.allclose(M.ssim(torch.from_numpy(a), torch.from_numpy(b)), got["ssim"])
    assert torch.allclose(M.psnr(torch.from_numpy(a), torch.from_numpy(b)), got["psnr"])


def test_ssim_of_structured_images_matches_skimage():
    y, x = np.mgrid[0:96, 0:80] / 20.0
    a = np.stack([(np.sin(x) * np.cos(y) + 1) / 2, (x % 1), (y % 1)]).astype(np.float32)
    b = np.clip(a ** 1.3 + 0.02, 0, 1).astype(np.float32)
    got = M.ssim(torch.from_numpy(a)[None], torch.from_numpy(b)[None]).item()
    assert got == pytest.approx(structural_similarity(a.astype(np.float64), b.astype(np.float64), **SK), abs=1e-4)


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    a, _ = _pair(2, (2, 3, 32, 32))
    t = torch.from_numpy(a)
    out = M.pixel_metrics(t, t.clone())
    assert torch.isinf(out["psnr"]).all() and (out["psnr"] > 0).all()
    assert torch.allclose(out["ssim"], torch.ones(2), atol=1e-6)
    assert (out["mae"] == 0).all()
    assert M.psnr_from_mse(0.0) == math.inf


def test_nodata_region_is_excluded_like_a_valid_crop():
    """Masking the left 20 columns gives the PSNR/MAE/SSIM of the crop that excludes them."""
    a, b = _pair(3, (3, 48, 64))
    a[:, :, :20] = np.nan  # nodata values must not leak
    b[:, 5:9, :20] = 7.0
    valid = torch.zeros(1, 48, 64, dtype=torch.bool)
    valid[:, :, 20:] = True
    got = M.pixel_metrics(torch.from_numpy(a)[None], torch.from_numpy(b)[None], valid)
    p, s, m = _sk(a[:, :, 20:], b[:, :, 20:])
    assert got["psnr"].item() == pytest.approx(p, abs=1e-4)
    assert got["mae"].item() == pytest.approx(m, abs=1e-6)
    assert got["ssim"].item() == pytest.approx(s, abs=1e-4)


def test_scattered_nodata_excludes_windows_touching_it():
    a, b = _pair(4, (1, 40, 40))
    valid = torch.ones(1, 40, 40, dtype=torch.bool)
    valid[0, 20, 20] = False
    wv = M.window_valid(valid)
    assert wv.shape == (1, 30, 30)
    # centres within 5 px of (20, 20) → map indices 10..20 are excluded: an 11×11 hole
    assert int((~wv).sum()) == 121 and not bool(wv[0, 15, 15]) and bool(wv[0, 9, 9])
    full = M.ssim(torch.from_numpy(a)[None], torch.from_numpy(b)[None], valid)
    assert math.isfinite(full.item())


def test_no_valid_pixel_gives_nan_not_a_crash():
    a, b = _pair(5, (1, 2, 16, 16))
    valid = torch.zeros(1, 16, 16, dtype=torch.bool)
    out = M.pixel_metrics(torch.from_numpy(a), torch.from_numpy(b), valid)
    assert all(math.isnan(v.item()) for v in out.values())


def _rgb_reflectance(path) -> np.ndarray:
    norm = optical_normalization(("B4", "B3", "B2"))
    with rasterio.open(path) as src:
        dn = src.read([4, 3, 2])
    return (norm.encode(dn_to_reflectance(dn, nodata=0)) + 1) / 2


def test_real_sen1floods11_rgb_vs_noisy_copy(realdata):
    t = _rgb_reflectance(next((realdata / "sen1floods11" / "S2Hand").glob("*.tif")))
    assert np.isfinite(t).all()
    rng = np.random.default_rng(0)
    p = np.clip(t + rng.normal(0, 0.05, t.shape), 0, 1).astype(np.float32)
    got = M.pixel_metrics(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
    ps, ss, ms = _sk(t, p)
    assert got["psnr"].item() == pytest.approx(ps, abs=1e-4)
    assert got["ssim"].item() == pytest.approx(ss, abs=1e-4)
    assert got["mae"].item() == pytest.approx(ms, abs=1e-5)
    assert 20 < got["psnr"].item() < 35 and 0.1 < got["ssim"].item() < 0.99


def test_real_sen12mscr_cloudy_vs_cloudfree(realdata):
    root = realdata / "sen12mscr_glfcr"
    for f in sorted((root / "s2_cloudfree").glob("*.tif")):
        t = _rgb_reflectance(f)
        p = _rgb_reflectance(root / "s2_cloudy" / f.name)
        got = M.pixel_metrics(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
        ps, ss, ms = _sk(t, p)
        assert got["psnr"].item() == pytest.approx(ps, abs=1e-4)
        assert got["ssim"].item() == pytest.approx(ss, abs=1e-4)
        assert got["mae"].item() == pytest.approx(ms, abs=1e-5)
