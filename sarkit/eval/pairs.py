"""Prediction/target raster pairs read on the target's grid in physical units."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sarkit.errors import InputError
from sarkit.raster.grid import PixelWindow, window_grid
from sarkit.io import open_raster
from sarkit.raster.norm import (DEFAULT_OPTICAL_RANGE, DEFAULT_SAR_RANGE, S1_BANDS, Normalization, band_names,
                    dn_offset_from_tags, dn_to_reflectance, optical_normalization, s2_dn_offset, sar_normalization)
from sarkit.reporting import Reporter
from sarkit.eval.segmetrics import IGNORE
from sarkit.eval.options import EvalOptions


# ----------------------------------------------------------------------------------------------- raster pairs

def _close_transform(a: Any, b: Any, tol: float = 1e-3) -> bool:
    """Affine transforms equal within ``tol`` pixels (absorbs float noise such as Sen1Floods11's 3e-19°)."""
    px = max(abs(b.a), abs(b.e), 1e-300)
    return all(abs(x - y) <= tol * px for x, y in zip(tuple(a)[:6], tuple(b)[:6]))


def _modality_of(src: Any) -> str:
    """float → SAR in dB; integer → optical digital numbers."""
    return "sar" if np.dtype(src.dtypes[0]).kind == "f" else "optical"


class _PairReader:
    """A prediction and a target raster (and optional labels) on the target's grid."""

    def __init__(self, pred: Path, target: Path, labels: Path | None, reporter: Reporter,
                 default_offset: float = 0.0) -> None:
        self._stack: list[Any] = []
        self.target = self._keep(open_raster(target, "target"))
        self.pred = self._keep(open_raster(pred, "prediction"))
        self.pred_name, self.target_name = str(pred), str(target)
        self.modality = _modality_of(self.target)
        if self.pred.dtypes[0] == "uint8" and self.modality == "optical":
            self.close()
            raise InputError(f"prediction {pred} is 8-bit (sarkit translate --format rgb8, for display): its values "
                             f"are not reflectance; evaluate the native output (--format native) instead")
        self.target_idx = self._match_bands(pred, target)
        if _modality_of(self.pred) != self.modality:
            self.close()
            raise InputError(f"prediction {pred} is {_modality_of(self.pred)} ({self.pred.dtypes[0]}) but target "
                             f"{target} is {self.modality} ({self.target.dtypes[0]}); compare like with like")
        self.pred_nodata = self._nodata(self.pred)
        self.target_nodata = self._nodata(self.target)
        self.pred_offset = self._dn_offset(self.pred, "prediction", default_offset)
        self.target_offset = self._dn_offset(self.target, "target", default_offset)
        self.pred = self._align(self.pred, "prediction", reporter, resampling="bilinear")
        self.labels = None
        if labels is not None:
            lab = self._keep(open_raster(labels, "labels"))
            self.label_nodata = lab.nodata
            self.labels = self._align(lab, "labels", reporter, resampling="nearest")
            self.class_names = _class_names(lab)
        else:
            self.class_names = None
        self.height, self.width = self.target.height, self.target.width

    def _names(self, src: Any) -> list[str]:
        return band_names(src, list(S1_BANDS[: src.count]) if _modality_of(src) == "sar" else None)

    def _match_bands(self, pred: Path, target: Path) -> list[int]:
        """1-based target bands matching the prediction's bands: by name (a 3-band B4,B3,B2 prediction against a
        13-band Sentinel-2 target), else by position when the counts agree."""
        pn, tn = self._names(self.pred), self._names(self.target)
        if pn != tn and set(pn) <= set(tn):
            return [tn.index(n) + 1 for n in pn]
        if self.pred.count != self.target.count:
            self.close()
            raise InputError(f"different band counts: prediction {pred} has {self.pred.count} "
                             f"({', '.join(pn)}), target {target} has {self.target.count} ({', '.join(tn)})")
        return list(range(1, self.target.count + 1))

    def _keep(self, src: Any) -> Any:
        self._stack.append(src)
        return src

    def _nodata(self, src: Any) -> float | None:
        if src.nodata is not None:
            return float(src.nodata)
        return 0.0 if self.modality == "optical" else None

    def _dn_offset(self, src: Any, what: str, default: float) -> float:
        """Optical DN offset: the raster's ``dn_offset`` tag (sarkit's tiles and translations), else ``default``."""
        if self.modality != "optical":
            return 0.0
        try:
            return dn_offset_from_tags(src.tags(), default, f"{what} {src.name}")
        except InputError:
            self.close()
            raise

    def _align(self, src: Any, what: str, reporter: Reporter, resampling: str) -> Any:
        """``src`` itself when on the target grid, else a warped view onto it (``InputError`` if impossible)."""
        tgt = self.target
        same_shape = (src.height, src.width) == (tgt.height, tgt.width)
        if src.crs is None or tgt.crs is None or src.transform.is_identity or tgt.transform.is_identity:
            if same_shape:
                return src
            self.close()
            raise InputError(f"{what} {src.name} ({src.width}×{src.height}) and target ({tgt.width}×{tgt.height}) "
                             f"differ in size and lack a CRS to align them")
        if src.crs == tgt.crs and same_shape and _close_transform(src.transform, tgt.transform):
            return src
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import transform_bounds

        try:
            b = transform_bounds(src.crs, tgt.crs, *src.bounds)
        except Exception as exc:  # pyproj/GDAL raise various errors for impossible transforms
            self.close()
            raise InputError(f"{what} CRS {src.crs} cannot be transformed to the target's {tgt.crs}: "
                             f"{str(exc).splitlines()[0][:120]}") from None
        tb = tgt.bounds
        if not all(map(math.isfinite, b)) or b[0] >= tb.right or b[2] <= tb.left or b[1] >= tb.top or b[3] <= tb.bottom:
            self.close()
            raise InputError(f"{what} {src.name} does not overlap the target {tgt.name}")
        reporter.warn(f"{what} grid differs from the target's; reprojecting it onto the target grid ({resampling})")
        nodata = src.nodata
        if nodata is None:
            nodata = float("nan") if np.dtype(src.dtypes[0]).kind == "f" else (0 if what != "labels" else 255)
        vrt = WarpedVRT(src, crs=tgt.crs, transform=tgt.transform, width=tgt.width, height=tgt.height,
                        resampling=getattr(Resampling, resampling), src_nodata=nodata, nodata=nodata)
        if what == "prediction":
            self.pred_nodata = float(nodata)
        return self._keep(vrt)

    def band_names(self) -> list[str]:
        names = self._names(self.target)
        return [names[i - 1] for i in self.target_idx]

    def read(self, win: PixelWindow, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, PixelWindow, int]:
        """Physical pred/target (C, h, w) of ``win`` grown by ``pad`` px (clipped), labels, the core, NaN count."""
        outer = PixelWindow(max(0, win.row_off - pad), max(0, win.col_off - pad), 0, 0)
        r1 = min(self.height, win.row_end + pad)
        c1 = min(self.width, win.col_end + pad)
        outer = PixelWindow(outer.row_off, outer.col_off, r1 - outer.row_off, c1 - outer.col_off)
        rw = outer.to_rasterio()
        t = self._physical(self.target.read(self.target_idx, window=rw), self.target_nodata, self.target_offset)
        raw = self.pred.read(window=rw)
        p = self._physical(raw, self.pred_nodata, self.pred_offset)
        t_valid = np.isfinite(t).all(axis=0)
        bad_nan = 0
        if self.modality == "sar" and not (self.pred_nodata is not None and math.isnan(self.pred_nodata)):
            core = PixelWindow(win.row_off - outer.row_off, win.col_off - outer.col_off, win.height, win.width)
            nonfinite = ~np.isfinite(np.asarray(raw, dtype=np.float32)).all(axis=0)
            bad_nan = int((nonfinite & t_valid)[core.slices()].sum())
        labels = None
        if self.labels is not None:
            lab = self.labels.read(1, window=rw).astype(np.int64)
            bad = lab < 0
            if self.label_nodata is not None:
                bad |= lab == int(self.label_nodata)
            lab[bad] = IGNORE
            labels = lab
        core = PixelWindow(win.row_off - outer.row_off, win.col_off - outer.col_off, win.height, win.width)
        return p, t, labels, core, bad_nan

    def _physical(self, a: np.ndarray, nodata: float | None, offset: float) -> np.ndarray:
        """Raw values → physical units (dB / reflectance ``(DN + offset) / 10000``) with NaN nodata."""
        if self.modality == "optical":
            return dn_to_reflectance(a, offset=offset, nodata=nodata)
        v = np.asarray(a, dtype=np.float32).copy()
        if nodata is not None and not math.isnan(nodata):
            v[a == nodata] = np.nan
        v[~np.isfinite(v)] = np.nan
        return v

    def close(self) -> None:
        for s in reversed(self._stack):
            s.close()
        self._stack.clear()


def _class_names(src: Any) -> list[str] | None:
    import json

    tag = src.tags().get("class_names")
    if not tag:
        return None
    try:
        names = json.loads(tag)
    except ValueError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def partition(height: int, width: int, size: int) -> list[PixelWindow]:
    """Non-overlapping ``size`` windows covering every pixel (edge windows smaller), row-major."""
    full = PixelWindow(0, 0, height, width)
    hp, wp = -(-height // size) * size, -(-width // size) * size
    return [w for w in (g.intersect(full) for g in window_grid(hp, wp, size, size)) if w is not None]


def _default_offset(opts: EvalOptions) -> float:
    """DN offset of optical rasters without a ``dn_offset`` tag: −1000 with ``--s2-offset``, else 0."""
    return s2_dn_offset(opts.s2_offset)


def _norm_for(modality: str, bands: Sequence[str], opts: EvalOptions) -> Normalization:
    if modality == "sar":
        return sar_normalization(bands, opts.s1_range or DEFAULT_SAR_RANGE, units="db")
    return optical_normalization(bands, opts.s2_range or DEFAULT_OPTICAL_RANGE)
