"""Pixel metrics computed batched in torch: PSNR, MAE and SSIM with nodata masks.

All images are in normalised [0, 1] space (``(encode(x) + 1) / 2``), shaped (N, C, H, W); ``valid`` is a bool
(N, H, W) mask that is True where both images hold data (a pixel is invalid when any band is nodata).

* PSNR = 10·log10(1 / MSE) with MSE the mean squared error over valid pixels and all channels (data range 1);
  MSE = 0 gives +inf (identical images), no valid pixel gives NaN.
* MAE = mean |pred − target| over valid pixels and channels.
* SSIM (Wang et al. 2004) with an 11-px Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, population covariances,
  data range 1. The local statistics are computed with a separable Gaussian in a *valid* convolution, so the
  map covers window centres at least 5 px from the image border: this is exactly scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``, which
  filters with reflect padding and then averages the map without a border of ``(win_size − 1) // 2`` pixels.
  The SSIM of an image is the mean over channels and over window centres.
  **Nodata policy**: a window centre counts only when its whole 11×11 window is valid in both images
  (windows touching nodata are excluded); nodata values are zero-filled before filtering, which cannot reach
  any counted window. With no nodata the result equals scikit-image's.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

SSIM_WIN = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Pixels lost at each image border by the SSIM map (window radius).
SSIM_PAD = (SSIM_WIN - 1) // 2


def gaussian_window(size: int = SSIM_WIN, sigma: float = SSIM_SIGMA,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian ``g(i) ∝ exp(−i²/(2σ²))`` for ``i = −r … r``, ``r = size // 2``."""
    r = size // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def _blur_valid(x: torch.Tensor, g: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian filter along the last two axes, valid part only: (…, H, W) → (…, H−2r, W−2r).

    Written as shifted multiply-adds ``Σ_i g_i·x[…, i:i+W−2r]``: on the CPU several times faster than a
    one-channel ``conv2d``, with the same result in the same precision.
    """
    k = len(g)
    w = x.shape[-1] - k + 1
    a = x[..., :w] * g[0]
    for i in range(1, k):
        a.add_(x[..., i:i + w], alpha=g[i])
    h = a.shape[-2] - k + 1
    b = a[..., :h, :] * g[0]
    for i in range(1, k):
        b.add_(a[..., i:i + h, :], alpha=g[i])
    return b


def _ssim_planes(x: torch.Tensor, y: torch.Tensor, g: Sequence[float], c1: float, c2: float) -> torch.Tensor:
    """SSIM maps of image planes (P, H, W) from four filtered planes: μx, μy, E[x² + y²], E[xy]."""
    mx, my, mss, mxy = _blur_valid(torch.stack([x, y, x * x + y * y, x * y]), g)
    a = torch.addcmul(torch.full_like(mx, c1), mx, my, value=2.0)  # 2μxμy + C1
    b = mxy.mul_(2.0).add_(c1 + c2).sub_(a)  # 2σxy + C2 = 2E[xy] − 2μxμy + C2
    msq = mx.square_().addcmul_(my, my)  # μx² + μy²
    den = mss.sub_(msq).add_(c2).mul_(msq.add_(c1))  # (σx² + σy² + C2)(μx² + μy² + C1)
    return a.mul_(b).div_(den)


def _cpu_step(x: torch.Tensor) -> int:
    """Image planes per chunk: one per thread on the CPU (cache-sized working set), all of them elsewhere."""
    return max(1, torch.get_num_threads()) if x.device.type == "cpu" else x.shape[0]


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-centre SSIM averaged over channels, (N, H−10, W−10):
    ``(2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))``, with σx² + σy² = E[x² + y²] − μx² − μy².

    On the CPU the image planes are filtered a few at a time (one per thread) so the working set stays in cache.
    """
    n, c, h, w = x.shape
    if w < SSIM_WIN or h < SSIM_WIN:
        return x.new_zeros((n, max(h - 2 * SSIM_PAD, 0), max(w - 2 * SSIM_PAD, 0)))
    g = gaussian_window(dtype=torch.float64).tolist()
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    xp, yp = x.reshape(n * c, h, w), y.reshape(n * c, h, w)
    step = _cpu_step(xp)
    maps = [_ssim_planes(xp[i:i + step], yp[i:i + step], g, c1, c2) for i in range(0, n * c, step)]
    out = maps[0] if len(maps) == 1 else torch.cat(maps)
    return out.reshape(n, c, h - 2 * SSIM_PAD, w - 2 * SSIM_PAD).mean(dim=1)


def window_valid(valid: torch.Tensor) -> torch.Tensor:
    """(N, H, W) pixel mask → (N, H−10, W−10) mask of window centres whose whole 11×11 window is valid."""
    if valid.shape[-1] < SSIM_WIN or valid.shape[-2] < SSIM_WIN:
        n = valid.shape[0]
        return torch.zeros((n, max(valid.shape[-2] - 2 * SSIM_PAD, 0), max(valid.shape[-1] - 2 * SSIM_PAD, 0)),
                           dtype=torch.bool, device=valid.device)
    if bool(valid.all()):
        return torch.ones((valid.shape[0], valid.shape[-2] - 2 * SSIM_PAD, valid.shape[-1] - 2 * SSIM_PAD),
                          dtype=torch.bool, device=valid.device)
    bad = (~valid).to(torch.float32).unsqueeze(1)
    return F.max_pool2d(bad, SSIM_WIN, stride=1).squeeze(1) == 0


def fill_invalid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Zero every channel of invalid pixels (so NaN nodata cannot spread through filters)."""
    if bool(valid.all()):
        return x
    return torch.where(valid.unsqueeze(1), x, torch.zeros((), dtype=x.dtype, device=x.device))


def _valid_or_all(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    if valid is None:
        return torch.ones((x.shape[0],) + tuple(x.shape[-2:]), dtype=torch.bool, device=x.device)
    return valid


def error_maps(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel squared and absolute error averaged over channels, (N, H, W) each (zero where invalid)."""
    d = fill_invalid(pred, valid) - fill_invalid(target, valid)
    return (d * d).mean(dim=1), d.abs().mean(dim=1)


def psnr_from_mse(mse: torch.Tensor | float, data_range: float = 1.0) -> torch.Tensor | float:
    """``10·log10(range² / MSE)``; MSE = 0 → +inf, NaN stays NaN."""
    if isinstance(mse, torch.Tensor):
        return 10.0 * torch.log10((data_range ** 2) / mse)
    if mse != mse:
        return float("nan")
    return math.inf if mse == 0 else 10.0 * math.log10((data_range ** 2) / mse)


def mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Masked mean squared error per sample, (N,); NaN when a sample has no valid pixel."""
    valid = _valid_or_all(pred, valid)
    se, _ = error_maps(pred, target, valid)
    return se.sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).to(se.dtype)


def psnr(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
         data_range: float = 1.0) -> torch.Tensor:
    """Masked PSNR per sample, (N,): ``10·log10(range²/MSE)`` (+inf for identical images)."""
    return psnr_from_mse(mse(pred, target, valid), data_range)


def mae(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Masked mean absolute error per sample, (N,)."""
    valid = _valid_or_all(pred, valid)
    _, ae = error_maps(pred, target, valid)
    return ae.sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).to(ae.dtype)


def ssim(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
         data_range: float = 1.0) -> torch.Tensor:
    """Masked mean SSIM per sample, (N,), over window centres whose window is fully valid (NaN if none)."""
    valid = _valid_or_all(pred, valid)
    s = ssim_map(fill_invalid(pred, valid), fill_invalid(target, valid), data_range)
    wv = window_valid(valid)
    return (s * wv).sum(dim=(1, 2)) / wv.sum(dim=(1, 2)).to(s.dtype)


def pixel_metrics(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
                  ) -> dict[str, torch.Tensor]:
    """PSNR, SSIM and MAE per sample in one pass: ``{"psnr": (N,), "ssim": (N,), "mae": (N,)}``."""
    if valid is None or bool(valid.all()):
        return _pixel_metrics_dense(pred, target)
    p, t = fill_invalid(pred, valid), fill_invalid(target, valid)
    d = p - t
    cnt = valid.sum(dim=(1, 2)).to(p.dtype)
    m = (d * d).mean(dim=1).sum(dim=(1, 2)) / cnt
    a = d.abs().mean(dim=1).sum(dim=(1, 2)) / cnt
    s = ssim_map(p, t)
    wv = window_valid(valid)
    return {"psnr": psnr_from_mse(m), "ssim": (s * wv).sum(dim=(1, 2)) / wv.sum(dim=(1, 2)).to(s.dtype), "mae": a}


def _pixel_metrics_dense(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``pixel_metrics`` without nodata: every plane's error sums and mean SSIM in one cache-friendly pass."""
    n, c, h, w = pred.shape
    xp, yp = pred.reshape(n * c, h, w), target.reshape(n * c, h, w)
    g = gaussian_window(dtype=torch.float64).tolist()
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    sq, ab, ss = [], [], []
    step = _cpu_step(xp)
    for i in range(0, n * c, step):
        x, y = xp[i:i + step], yp[i:i + step]
        d = x - y
        sq.append(d.square().mean(dim=(1, 2)))
        ab.append(d.abs_().mean(dim=(1, 2)))
        if h >= SSIM_WIN and w >= SSIM_WIN:
            ss.append(_ssim_planes(x, y, g, c1, c2).mean(dim=(1, 2)))
    mse_ = torch.cat(sq).reshape(n, c).mean(dim=1)
    ssim_ = torch.cat(ss).reshape(n, c).mean(dim=1) if ss else pred.new_full((n,), float("nan"))
    return {"psnr": psnr_from_mse(mse_), "ssim": ssim_, "mae": torch.cat(ab).reshape(n, c).mean(dim=1)}


def unit_range(x: torch.Tensor) -> torch.Tensor:
    """Model range [−1, 1] → the metrics' [0, 1]: ``(x + 1) / 2`` in float32 (no clamping, as ``sarkit eval``)."""
    return (x.float() + 1.0) * 0.5


def finite_mean(values: torch.Tensor) -> float:
    """Mean of the finite entries of a per-sample metric (NaN: no valid pixel, +inf: identical); NaN if none."""
    v = values.detach().double().cpu()
    v = v[torch.isfinite(v)]
    return float(v.mean()) if v.numel() else float("nan")
