"""Prediction/target raster pairs read on the target's grid in physical units."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rasterio.enums import Resampling

from sarkit.errors import InputError
from sarkit.io import open_raster
from sarkit.raster.align import AlignedReader, ReadPath
from sarkit.raster.grid import GridSpec, PixelWindow, window_grid
from sarkit.raster.norm import (DEFAULT_OPTICAL_RANGE, DEFAULT_SAR_RANGE, Normalization, band_names,
                                optical_normalization, s2_dn_offset, sar_normalization)
from sarkit.raster.source import GeoTiffSource, sar_band_names
from sarkit.reporting import Reporter
from sarkit.eval.segmetrics import IGNORE
from sarkit.eval.options import EvalOptions


# ----------------------------------------------------------------------------------------------- raster pairs

def _modality_of(src: Any) -> str:
    """float → SAR in dB; integer → optical digital numbers."""
    return "sar" if np.dtype(src.dtypes[0]).kind == "f" else "optical"


def _label_fill(src: Any) -> float:
    """Value label pixels without data read as: the raster's nodata, else NaN (float) or 255 (integers)."""
    if src.nodata is not None:
        return float(src.nodata)
    return float("nan") if np.dtype(src.dtypes[0]).kind == "f" else 255


def _names(src: Any) -> list[str]:
    """Band names of a prediction or target raster, by the naming rule of its modality (``_modality_of``)."""
    return sar_band_names(src) if _modality_of(src) == "sar" else band_names(src)


def _match_bands(pred: Path, pn: list[str], target: Path, tn: list[str]) -> list[int]:
    """1-based target bands matching the prediction's bands ``pn``: by name (a 3-band B4,B3,B2 prediction against a
    13-band Sentinel-2 target), else by position when the counts agree."""
    if pn != tn and set(pn) <= set(tn):
        return [tn.index(n) + 1 for n in pn]
    if len(pn) != len(tn):
        raise InputError(f"different band counts: prediction {pred} has {len(pn)} "
                         f"({', '.join(pn)}), target {target} has {len(tn)} ({', '.join(tn)})")
    return list(range(1, len(tn) + 1))


class _PairReader:
    """A prediction and a target raster (and optional labels) on the target's grid, in physical units.

    The prediction is read onto the target grid (bilinear when it must be warped) and the labels likewise
    (nearest), both through ``sarkit.raster``'s one aligned reader; ``InputError`` (everything closed) for pairs
    that cannot be compared.
    """

    def __init__(self, pred: Path, target: Path, labels: Path | None, reporter: Reporter,
                 default_offset: float = 0.0, target_units: str = "db") -> None:
        self._stack: list[Any] = []
        try:
            self._open(Path(pred), Path(target), labels, reporter, default_offset, target_units)
        except BaseException:
            self.close()
            raise

    def _open(self, pred: Path, target: Path, labels: Path | None, reporter: Reporter,
              default_offset: float, target_units: str) -> None:
        self.target = self._keep(open_raster(target, "target"))
        pred_ds = self._keep(open_raster(pred, "prediction"))
        self.pred_name, self.target_name = str(pred), str(target)
        self.modality = _modality_of(self.target)
        if pred_ds.dtypes[0] == "uint8" and self.modality == "optical":
            raise InputError(f"prediction {pred} is 8-bit (sarkit translate --format rgb8, for display): its values "
                             f"are not reflectance; evaluate the native output (--format native) instead")
        pred_names, target_names = _names(pred_ds), _names(self.target)
        self.target_idx = _match_bands(pred, pred_names, target, target_names)
        if _modality_of(pred_ds) != self.modality:
            raise InputError(f"prediction {pred} is {_modality_of(pred_ds)} ({pred_ds.dtypes[0]}) but target "
                             f"{target} is {self.modality} ({self.target.dtypes[0]}); compare like with like")
        self.bands = [target_names[i - 1] for i in self.target_idx]
        grid = GridSpec.of(self.target)
        ref_name = f"the target {self.target.name}"
        self.pred_source = self._keep(GeoTiffSource(
            pred_ds, self.modality, names=pred_names, default_dn_offset=default_offset, grid=grid,
            resampling=Resampling.bilinear, label=f"prediction {pred_ds.name}", ref_name=ref_name))
        self.target_source = self._keep(GeoTiffSource(self.target, self.modality, names=target_names,
                                                      units=target_units, default_dn_offset=default_offset,
                                                      label=f"target {self.target.name}"))
        self.pred_offset, self.target_offset = self.pred_source.dn_offset, self.target_source.dn_offset
        self._report_alignment("prediction", self.pred_source.aligned, reporter)
        self.pred = self.pred_source.aligned.dataset  # on the target grid when warped (previews)
        self.labels: AlignedReader | None = None
        self.class_names = None
        if labels is not None:
            lab = self._keep(open_raster(labels, "labels"))
            self.label_nodata = lab.nodata
            self.labels = self._keep(AlignedReader(lab, grid, Resampling.nearest, _label_fill(lab),
                                                   what=f"labels {lab.name}", ref_name=ref_name))
            self._report_alignment("labels", self.labels, reporter)
            self.class_names = _class_names(lab)
        self.height, self.width = self.target.height, self.target.width
        if self.modality == "sar" and target_units == "auto":  # a SAR scene: say the unit detected
            reporter.info(f"{self.target_source.label}: SAR units {self.target_source.units_note}",
                          units=self.target_source.units)

    @staticmethod
    def _report_alignment(what: str, reader: AlignedReader, reporter: Reporter) -> None:
        """Warn when a raster is not on the target grid (shifted by whole pixels, or reprojected)."""
        if reader.path is ReadPath.WARPED:
            reporter.warn(f"{what} grid differs from the target's; reprojecting it onto the target grid "
                          f"({'bilinear' if what == 'prediction' else 'nearest'})")
        elif reader.path is ReadPath.OFFSET:
            assert reader.offset is not None
            reporter.warn(f"{what} grid is the target's shifted by whole pixels ({reader.offset.row} rows, "
                          f"{reader.offset.col} columns); reprojecting it onto the target grid by a shifted read "
                          f"(no resampling)")

    def _keep(self, src: Any) -> Any:
        self._stack.append(src)
        return src

    def band_names(self) -> list[str]:
        return list(self.bands)

    def read(self, win: PixelWindow, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, PixelWindow, int]:
        """Physical pred/target (C, h, w) of ``win`` grown by ``pad`` px (clipped), labels, the core, and the number
        of core pixels where the prediction holds NaN/inf undeclared as nodata while the target is valid."""
        r0, c0 = max(0, win.row_off - pad), max(0, win.col_off - pad)
        r1, c1 = min(self.height, win.row_end + pad), min(self.width, win.col_end + pad)
        outer = PixelWindow(r0, c0, r1 - r0, c1 - c0)
        core = PixelWindow(win.row_off - r0, win.col_off - c0, win.height, win.width)
        t = self.target_source.read(outer, self.bands)
        p = self.pred_source.read(outer)
        bad_nan = int((p.stray & t.valid)[core.slices()].sum())
        labels = None
        if self.labels is not None:
            lab = self.labels.read(outer, [1])[0].astype(np.int64)
            bad = lab < 0
            if self.label_nodata is not None:
                bad |= lab == int(self.label_nodata)
            lab[bad] = IGNORE
            labels = lab
        return p.values, t.values, labels, core, bad_nan

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
