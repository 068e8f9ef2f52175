"""Feature-matching metrics of the downstream registration task: PMR, IR and IR-ED with OpenCV's SIFT.

The prediction and the target of a tile are co-registered, so the true transform between them is the identity.
For each tile (or scene window):

* **Rendering**: each image's RGB view (``fid.to_rgb``: optical B4, B3, B2; SAR (VV, VH, (VV + VH)/2); one band
  repeated) in normalised [0, 1] under the *fixed* ranges of the evaluation (never stretched per image), the mean
  of its three channels, ``round(255·x)`` → 8-bit grey. Nodata (in either image) is 0, and keypoints are not
  detected within ``NODATA_MARGIN`` px of it (the same mask for both images).
* **Keypoints and descriptors**: ``cv2.SIFT_create()`` with OpenCV's defaults (all keypoints, 3 octave layers,
  contrast threshold 0.04, edge threshold 10, σ = 1.6); no weights.
* **Putative matches**: brute force (L2) from every prediction keypoint to its two nearest target keypoints,
  kept when ``d1 < 0.75·d2`` (Lowe's ratio test, ``RATIO``).
* **PMR** = putative matches / keypoints *of the prediction* (the query side of the matching: each prediction
  keypoint has at most one putative match, so PMR ∈ [0, 1]; papers differ, some divide by the target's or the
  smaller count; ``PMR_DENOMINATOR`` names the choice in every report).
* **IR** = RANSAC inliers / putative matches: ``cv2.findHomography(pred → target, RANSAC, 3 px)`` with OpenCV's
  RNG seeded (``cv2.setRNGSeed(RANSAC_SEED)`` before each tile), so results are reproducible; no homography
  found = 0 inliers.
* **IR-ED** = putative matches whose two keypoints lie less than 3 px apart / putative matches.

Undefined values are ``None`` and the tile is counted, never dropped silently: fewer than 1 prediction or 2
target keypoints (the ratio test needs two neighbours) → PMR, IR, IR-ED undefined ("too few keypoints"); no
putative match → IR and IR-ED undefined; 1–3 putative matches → IR undefined (a homography needs 4).
Over all tiles the counts are pooled: PMR = Σ putative / Σ keypoints, IR = Σ inliers / Σ putative, IR-ED =
Σ close / Σ putative, each over the tiles where the tile value is defined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sarkit.errors import InputError

if TYPE_CHECKING:
    from sarkit.eval.sources import Block
    from sarkit.raster.norm import Normalization
    from sarkit.reporting import Reporter

#: The metrics computed here.
MATCH_METRICS = ("pmr", "ir", "ir_ed")
#: Lowe's ratio test: a match is kept when its distance is below RATIO × the second-nearest distance.
RATIO = 0.75
#: RANSAC reprojection threshold of the homography, in pixels.
RANSAC_PX = 3.0
#: IR-ED: a putative match is correct when its keypoints lie less than this many pixels apart.
ED_PX = 3.0
#: Seed of OpenCV's RNG before each tile's RANSAC.
RANSAC_SEED = 0
#: Keypoints are not detected within this many pixels of nodata.
NODATA_MARGIN = 8
#: The ratio test needs two target keypoints; PMR needs one prediction keypoint.
MIN_TARGET_KEYPOINTS = 2
#: A homography needs four correspondences.
MIN_RANSAC_MATCHES = 4
#: What PMR divides by (written into every report).
PMR_DENOMINATOR = "keypoints of the prediction"


def _cv2() -> Any:
    """OpenCV, or an ``InputError`` saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise InputError("pmr, ir and ir_ed need OpenCV: pip install opencv-python-headless") from None
    return cv2


def opencv_version() -> str:
    """The installed OpenCV version."""
    return str(_cv2().__version__)


def to_gray8(rgb01: np.ndarray | torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) in [0, 1] (fixed ranges; NaN = nodata) → (H, W) uint8: the channel mean, clipped
    to [0, 1], ``round(255·x)``; nodata 0. No per-image stretch."""
    a = rgb01.detach().cpu().numpy() if isinstance(rgb01, torch.Tensor) else np.asarray(rgb01)
    if a.ndim == 4:
        a = a[0]
    g = np.nan_to_num(a.astype(np.float64).mean(axis=0), nan=0.0)
    return (np.clip(g, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def detection_mask(valid: np.ndarray | torch.Tensor, margin: int = NODATA_MARGIN) -> np.ndarray | None:
    """The (H, W) uint8 mask (255 = keypoints allowed) of the pixels at least ``margin`` px from nodata (the image
    border does not count as nodata); None when every pixel is valid."""
    v = valid.detach().cpu().numpy() if isinstance(valid, torch.Tensor) else np.asarray(valid)
    v = v.reshape(v.shape[-2:]).astype(bool)
    if v.all():
        return None
    cv2 = _cv2()
    m = v.astype(np.uint8) * 255
    if margin > 0:
        kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
        m = cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=255)
    return m


@dataclass
class MatchCounts:
    """A tile's counts: keypoints of the prediction and the target, putative matches (ratio test), RANSAC
    inliers, and putative matches closer than ``ED_PX``."""

    keypoints: int = 0
    keypoints_target: int = 0
    putative: int = 0
    inliers: int = 0
    close: int = 0

    @property
    def enough_keypoints(self) -> bool:
        """At least one prediction keypoint and two target keypoints (the ratio test's two neighbours)."""
        return self.keypoints >= 1 and self.keypoints_target >= MIN_TARGET_KEYPOINTS

    @property
    def ransac(self) -> bool:
        """Enough putative matches for a homography."""
        return self.enough_keypoints and self.putative >= MIN_RANSAC_MATCHES

    @property
    def pmr(self) -> float | None:
        """putative / keypoints of the prediction (None with too few keypoints)."""
        return self.putative / self.keypoints if self.enough_keypoints else None

    @property
    def ir(self) -> float | None:
        """RANSAC inliers / putative (None below ``MIN_RANSAC_MATCHES`` putative matches)."""
        return self.inliers / self.putative if self.ransac else None

    @property
    def ir_ed(self) -> float | None:
        """putative matches closer than ``ED_PX`` / putative (None without putative matches)."""
        return self.close / self.putative if self.enough_keypoints and self.putative else None


class SiftMatcher:
    """SIFT keypoints of both images, ratio-test matching, RANSAC homography and the distance test."""

    def __init__(self) -> None:
        cv2 = _cv2()
        self.cv2 = cv2
        self.sift = cv2.SIFT_create()
        self.matcher = cv2.BFMatcher(cv2.NORM_L2)

    def __call__(self, pred8: np.ndarray, target8: np.ndarray, mask: np.ndarray | None = None) -> MatchCounts:
        """The counts of a co-registered pair of 8-bit grey images (keypoints only where ``mask`` is non-zero)."""
        cv2 = self.cv2
        kp_p, d_p = self.sift.detectAndCompute(pred8, mask)
        kp_t, d_t = self.sift.detectAndCompute(target8, mask)
        out = MatchCounts(len(kp_p), len(kp_t))
        if not out.enough_keypoints:
            return out
        good = [m[0] for m in self.matcher.knnMatch(d_p, d_t, k=2)
                if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
        out.putative = len(good)
        if not good:
            return out
        src = np.float32([kp_p[m.queryIdx].pt for m in good])
        dst = np.float32([kp_t[m.trainIdx].pt for m in good])
        out.close = int((np.linalg.norm(src - dst, axis=1) < ED_PX).sum())
        if out.putative >= MIN_RANSAC_MATCHES:
            cv2.setRNGSeed(RANSAC_SEED)
            h, inl = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PX)
            out.inliers = int(inl.sum()) if h is not None and inl is not None else 0
        return out


class MatchingStream:
    """Per-tile PMR, IR and IR-ED of every block (written into its tile record with the keypoint and match
    counts) and the pooled counts over all tiles."""

    def __init__(self, metrics: tuple[str, ...]) -> None:
        self.metrics = tuple(m for m in MATCH_METRICS if m in metrics)
        self.matcher = SiftMatcher()
        self.total = MatchCounts()
        self.pooled = {m: [0, 0] for m in MATCH_METRICS}  # metric → [numerator, denominator] over defined tiles
        self.tiles = 0
        self.too_few_keypoints = 0
        self.no_matches = 0
        self.too_few_matches = 0

    @classmethod
    def load(cls, metrics: tuple[str, ...]) -> MatchingStream | None:
        """The stream when pmr, ir or ir_ed is requested, else None."""
        return cls(metrics) if any(m in metrics for m in MATCH_METRICS) else None

    def add_block(self, tile: dict[str, Any], b: Block, norm: Normalization) -> MatchCounts:
        """Match a block core's prediction against its target (grey renderings under ``norm``) and record the
        counts and ratios in ``tile``."""
        from sarkit.eval.accumulate import core_rgb, core_valid

        valid = core_valid(b)
        pred8 = to_gray8(core_rgb(b.pred, b, norm))
        target8 = to_gray8(core_rgb(b.target, b, norm))
        c = self.matcher(pred8, target8, detection_mask(valid))
        self.add(tile, c)
        return c

    def add(self, tile: dict[str, Any], c: MatchCounts) -> None:
        """Record one tile's counts: its values in ``tile``, the pooled sums and the undefined-tile counters."""
        self.tiles += 1
        for k in ("keypoints", "keypoints_target", "putative", "inliers", "close"):
            setattr(self.total, k, getattr(self.total, k) + getattr(c, k))
        tile.update(keypoints=c.keypoints, keypoints_target=c.keypoints_target, putative=c.putative)
        values = {"pmr": c.pmr, "ir": c.ir, "ir_ed": c.ir_ed}
        for m in self.metrics:
            tile[m] = values[m]
        if not c.enough_keypoints:
            self.too_few_keypoints += 1
            return
        for m, num, den in (("pmr", c.putative, c.keypoints), ("ir", c.inliers, c.putative),
                            ("ir_ed", c.close, c.putative)):
            if values[m] is not None:
                self.pooled[m][0] += num
                self.pooled[m][1] += den
        if c.putative == 0:
            self.no_matches += 1
        elif c.putative < MIN_RANSAC_MATCHES:
            self.too_few_matches += 1

    def value(self, metric: str) -> float:
        """The pooled ratio of ``metric`` over the tiles where it is defined (NaN when none is)."""
        num, den = self.pooled[metric]
        return num / den if den else float("nan")

    def summary(self, tiles: list[dict[str, Any]]) -> dict[str, Any]:
        """{metric: {"value": pooled ratio, per-tile statistics}} for the requested metrics."""
        from sarkit.eval.accumulate import tile_stats

        return {m: {"value": self.value(m), **tile_stats([t.get(m) for t in tiles])} for m in self.metrics}

    def finish(self, reporter: Reporter) -> None:
        """Warn about the tiles whose values are undefined (they are counted in the report, not dropped)."""
        if self.too_few_keypoints:
            reporter.warn(f"PMR, IR, IR-ED undefined for {self.too_few_keypoints} of {self.tiles} tiles with too "
                          f"few SIFT keypoints (< 1 in the prediction or < {MIN_TARGET_KEYPOINTS} in the target)")
        if self.no_matches and any(m in self.metrics for m in ("ir", "ir_ed")):
            reporter.warn(f"IR, IR-ED undefined for {self.no_matches} of {self.tiles} tiles without putative "
                          f"matches (their PMR is 0)")
        if self.too_few_matches and "ir" in self.metrics:
            reporter.warn(f"IR undefined for {self.too_few_matches} of {self.tiles} tiles with fewer than "
                          f"{MIN_RANSAC_MATCHES} putative matches (no homography)")

    def record(self) -> dict[str, Any]:
        """report.json ``matching``: the method, its parameters, the PMR denominator, the pooled counts and the
        number of tiles whose values are undefined."""
        t = self.total
        return {
            "method": f"SIFT (OpenCV {opencv_version()}), brute-force L2, ratio test",
            "rendering": "8-bit grey: mean of the RGB view in the fixed ranges; nodata 0",
            "pmr_denominator": PMR_DENOMINATOR,
            "ratio": RATIO, "ransac_px": RANSAC_PX, "ed_px": ED_PX, "ransac_seed": RANSAC_SEED,
            "nodata_margin_px": NODATA_MARGIN,
            "tiles": self.tiles, "too_few_keypoints": self.too_few_keypoints, "no_matches": self.no_matches,
            "too_few_matches": self.too_few_matches,
            "keypoints": t.keypoints, "keypoints_target": t.keypoints_target, "putative": t.putative,
            "inliers": t.inliers, "close": t.close,
        }
