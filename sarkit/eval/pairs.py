"""Prediction/target raster pairs read on the target's grid in physical units."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rasterio.enums import Resampling

from sarkit.errors import InputError
from sarkit.io import open_raster
from sarkit.raster.align import AlignedReader, ReadPath
from sarkit.raster.grid import GridSpec, PixelWindow, window_grid
from sarkit.raster.norm import (DEFAULT_OPTICAL_RANGE, DEFAULT_SAR_RANGE, Normalization, band_names,
                                optical_normalization, resolve_bands, s2_dn_offset, sar_normalization)
from sarkit.raster.images import is_image_dataset
from sarkit.raster.source import GeoTiffSource, RasterSource, sar_band_names
from sarkit.raster.stac import is_stac_item, stac_item
from sarkit.raster.stack import StackedSource, describe_files, is_multi, open_source, scene_files
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


def _match_bands(pred: Path, pn: list[str], target: Path, tn: list[str]) -> tuple[list[int], str]:
    """1-based target bands matching the prediction's bands ``pn`` and how they were matched: by name (a 3-band
    B4,B3,B2 prediction against a 13-band Sentinel-2 target), else by position when the counts agree."""
    if pn != tn and set(pn) <= set(tn):
        return [tn.index(n) + 1 for n in pn], "name"
    if len(pn) != len(tn):
        raise InputError(f"different band counts: prediction {pred} has {len(pn)} "
                         f"({', '.join(pn)}), target {target} has {len(tn)} ({', '.join(tn)}); choose the bands "
                         f"to compare with --bands")
    return list(range(1, len(tn) + 1)), "name" if pn == tn else "position"


def _described(src: Any) -> bool:
    """The raster names its bands (every band has a distinct description); else names are assumed."""
    desc = list(src.descriptions or ())
    return bool(desc) and all(desc) and len(set(desc)) == len(desc)


def check_georeferencing(src: Any, what: str, target: Any, allow: bool) -> bool:
    """Whether ``src`` must be compared with ``target`` pixel by pixel: ``InputError`` when either has no CRS (or
    no geotransform) unless ``allow`` (``--allow-ungeoreferenced``), and when allowed but the sizes differ."""
    geo, target_geo = GridSpec.of(src).georeferenced, GridSpec.of(target).georeferenced
    if geo and target_geo:
        return False
    if not (geo or target_geo):
        seen = f"{what} {src.name} and the target {target.name} have no CRS"
    elif not geo:
        seen = f"{what} {src.name} has {_lacks(src)} but the target {target.name} has {target.crs}"
    else:
        seen = f"the target {target.name} has {_lacks(target)} but the {what} {src.name} has {src.crs}"
    if not allow:
        raise InputError(f"{seen}: they cannot be aligned; assign a CRS (gdal_edit.py -a_srs EPSG:XXXX) or pass "
                         f"--allow-ungeoreferenced to compare them pixel by pixel (same size only)")
    if (src.height, src.width) != (target.height, target.width):
        raise InputError(f"{seen} and their sizes differ ({src.width}×{src.height} against "
                         f"{target.width}×{target.height}): pixel-by-pixel comparison needs the same size")
    return True


def _lacks(src: Any) -> str:
    """What keeps a raster from being placed: "no CRS", or "no geotransform" (a CRS with the identity)."""
    return "no CRS" if src.crs is None else f"no geotransform (CRS {src.crs}, identity transform)"


def check_labels(src: Any, path: Path) -> None:
    """``InputError`` unless a label raster is one band of integer class ids."""
    dtype = np.dtype(src.dtypes[0])
    if src.count != 1 or dtype.kind not in "iu":
        raise InputError(f"--labels {path} has {src.count} band{'s' if src.count != 1 else ''} of {dtype.name}; "
                         f"labels must be one band of integer class ids (255 or the file's nodata = ignore)")


class _PairReader:
    """A prediction and a target raster (and optional labels) on the target's grid, in physical units.

    The prediction is read onto the target grid (bilinear when it must be warped) and the labels likewise
    (nearest), both through ``sarkit.raster``'s one aligned reader; ``InputError`` (everything closed) for pairs
    that cannot be compared: rasters without a CRS unless ``opts.allow_ungeoreferenced`` (then pixel by pixel,
    same size only: ``pixelwise`` names them), labels that are not one band of integer ids, ``opts.bands`` the
    prediction lacks. ``bands`` are the compared target bands, ``match`` how they were matched.
    """

    def __init__(self, pred: Path, target: Path, labels: Path | None, reporter: Reporter,
                 opts: EvalOptions, target_units: str = "db") -> None:
        self._stack: list[Any] = []
        try:
            self._open(Path(pred), Path(target), labels, reporter, opts, target_units)
        except BaseException:
            self.close()
            raise

    def _open(self, pred: Path, target: Path, labels: Path | None, reporter: Reporter, opts: EvalOptions,
              target_units: str = "db") -> None:
        default_offset = _default_offset(opts)
        allow = opts.allow_ungeoreferenced
        stack = self._open_target(target, target_units, default_offset)
        pred_multi = is_multi(pred)  # several files (or a STAC Item): read through the raster layer
        pred_ds = (self._open_stack(pred, "prediction", "db", default_offset) if pred_multi
                   else self._keep(_open_quiet(pred, "prediction")))
        self.pred_name, self.target_name = str(pred), str(target)
        self.image_norm: Normalization | None = None
        if is_image_dataset(self.target) or is_image_dataset(pred_ds):
            self._open_images(pred, target, pred_ds, opts)
            self._open_labels(labels, reporter, opts)
            return
        self.modality = _modality_of(self.target)
        if pred_ds.dtypes[0] == "uint8" and self.modality == "optical":
            raise InputError(f"prediction {pred} is 8-bit (sarkit translate --format rgb8, for display): its values "
                             f"are not reflectance; evaluate the native output (--format native) instead")
        if _modality_of(pred_ds) != self.modality:
            raise InputError(f"prediction {pred} is {_modality_of(pred_ds)} ({pred_ds.dtypes[0]}) but target "
                             f"{target} is {self.modality} ({self.target.dtypes[0]}); compare like with like")
        self.pixelwise = ["prediction"] if check_georeferencing(pred_ds, "prediction", self.target, allow) else []
        pred_names = list(pred_ds.stack.band_names) if pred_multi else _names(pred_ds)
        target_names = list(stack.band_names) if stack is not None else _names(self.target)
        self._select_bands(pred, pred_names, target, target_names, opts)
        self.described = {"pred": pred_ds.described if pred_multi else _described(pred_ds),
                          "target": self.target.described if stack is not None else _described(self.target)}
        self.bands = [target_names[i - 1] for i in self.target_idx]
        self.grid = grid = GridSpec.of(self.target)
        self.ref_name = ref_name = f"the target {self.target.name}"
        read_as = dict(names=pred_names, default_dn_offset=default_offset, grid=grid, resampling=Resampling.bilinear,
                       label=f"prediction {pred_ds.name}", ref_name=ref_name)
        self.pred_source: RasterSource = self._keep(
            open_source(pred, self.modality, **read_as) if pred_multi
            else GeoTiffSource(pred_ds, self.modality, **read_as))
        self.target_source: RasterSource = stack if stack is not None else self._keep(GeoTiffSource(
            self.target, self.modality, names=target_names, units=target_units, default_dn_offset=default_offset,
            label=f"target {self.target.name}"))
        self.pred_offset, self.target_offset = self.pred_source.dn_offset, self.target_source.dn_offset
        for part in getattr(self.pred_source, "parts", [self.pred_source]):  # each file of a multi-file prediction
            self._report_alignment("prediction", part.aligned, reporter)
        # on the target grid when warped (previews)
        self.pred = (StackView(self.pred_source, str(pred), pred_ds.dtypes[0]) if pred_multi
                     else self.pred_source.aligned.dataset)
        self.pred_idx = [pred_names.index(n) + 1 for n in self.pred_bands]
        self.pred_tags = pred_ds.tags()
        self._open_labels(labels, reporter, opts)
        self.height, self.width = self.target.height, self.target.width
        if self.modality == "sar" and target_units == "auto":  # a SAR scene: say the unit detected
            reporter.info(f"{self.target_source.label}: SAR units {self.target_source.units_note}",
                          units=self.target_source.units)

    def _select_bands(self, pred: Path, pred_names: list[str], target: Path, target_names: list[str],
                      opts: EvalOptions) -> None:
        """The compared bands: the prediction's matched to the target's (``target_idx``, 1-based; ``match`` says
        how), narrowed to ``--bands`` when given (``pred_bands``)."""
        self.target_idx, self.match = _match_bands(pred, pred_names, target, target_names)
        self.pred_bands = list(pred_names)
        if opts.bands is not None:
            sel = resolve_bands(pred_names, opts.bands, f"prediction {pred.name}", option="--bands")
            self.pred_bands = [pred_names[i] for i in sel]
            self.target_idx = [self.target_idx[i] for i in sel]

    def _open_images(self, pred: Path, target: Path, pred_ds: Any, opts: EvalOptions) -> None:
        """Image files (PNG, JPEG, image tiles and translations): read by ``ImageSource`` as image values, compared
        pixel by pixel (same size), in the fixed range of their data type (``image_norm``)."""
        from sarkit.raster.images import ImageSource, image_normalization, is_gray

        for path, ds in ((pred, pred_ds), (target, self.target)):
            if GridSpec.of(ds).georeferenced:
                raise InputError(f"{path} is georeferenced but the other file is an image without a CRS: compare "
                                 f"an image with an image (the same pixels), or a scene with a scene")
        if (pred_ds.height, pred_ds.width) != (self.target.height, self.target.width):
            raise InputError(f"prediction {pred} is {pred_ds.width}×{pred_ds.height} but target {target} is "
                             f"{self.target.width}×{self.target.height}: images are compared pixel by pixel and "
                             f"must have the same size")
        self.modality = "sar" if self.target.count == 1 or is_gray(self.target) else "optical"
        t = self._keep(ImageSource(self.target, self.modality, label=f"target {target.name}"))
        p = self._keep(ImageSource(pred_ds, self.modality, label=f"prediction {pred.name}"))
        if p.top != t.top:
            raise InputError(f"prediction {pred} holds values 0–{p.top:.0f} but target {target} 0–{t.top:.0f}: "
                             f"compare images of the same bit depth")
        pred_names, target_names = list(p.band_names), list(t.band_names)
        self._select_bands(pred, pred_names, target, target_names, opts)
        self.described = {"pred": _described(pred_ds), "target": _described(self.target)}
        self.bands = [target_names[i - 1] for i in self.target_idx]
        self.grid = GridSpec.of(self.target)
        self.ref_name = f"the target {self.target.name}"
        self.pred_source, self.target_source = p, t
        self.pred_offset = self.target_offset = 0.0
        self.pred = pred_ds
        self.pred_idx = [p._bands[pred_names.index(n)] for n in self.pred_bands]
        self.target_idx = [t._bands[i - 1] for i in self.target_idx]
        self.pred_tags = {k.lower() if k == "Source" else k: v for k, v in pred_ds.tags().items()}
        self.pixelwise = []
        self.image_norm = image_normalization(self.modality, self.bands, t.top)
        self.height, self.width = self.target.height, self.target.width

    def _open_labels(self, labels: Path | None, reporter: Reporter, opts: EvalOptions) -> None:
        """The label raster on the target grid (nearest), or none."""
        self.labels: AlignedReader | None = None
        self.class_names = None
        allow = opts.allow_ungeoreferenced or self.image_norm is not None
        grid, ref_name = self.grid, self.ref_name
        if labels is not None:
            lab = self._keep(_open_quiet(labels, "labels"))
            check_labels(lab, Path(labels))
            if check_georeferencing(lab, "labels", self.target, allow) and self.image_norm is None:
                self.pixelwise.append("labels")
            self.label_nodata = lab.nodata
            self.labels = self._keep(AlignedReader(lab, grid, Resampling.nearest, _label_fill(lab),
                                                   what=f"labels {lab.name}", ref_name=ref_name))
            self._report_alignment("labels", self.labels, reporter)
            self.class_names = label_class_names(lab, Path(labels))
        self.input_source: Any = None

    def _open_target(self, target: Path, units: str, default_offset: float) -> StackedSource | None:
        """Open the target as ``self.target``: one raster file (an open dataset; None returned), or a raster of
        several files (``VV.tif,VH.tif``, per-band files) or a STAC Item's assets (``sarkit.raster.stack.open_source``:
        a ``StackedSource`` returned, and ``self.target`` a ``StackView`` of it)."""
        if not is_multi(target):
            self.target = self._keep(_open_quiet(target, "target"))
            return None
        self.target = self._open_stack(target, "target", units, default_offset)
        return self.target.stack

    def _open_stack(self, spec: Path, what: str, units: str, default_offset: float) -> "StackView":
        """A raster of several files or a STAC Item on its own grid (``open_source``), as a ``StackView``; its
        modality is the Item's, else the first file's (float: SAR; integers: optical)."""
        files = scene_files(spec)
        if is_stac_item(files[0]):
            modality = stac_item(files[0]).modality.value
        else:
            with _open_quiet(files[0], what) as first:
                modality = _modality_of(first)
        stack = self._keep(open_source(spec, modality, units=units, default_dn_offset=default_offset,
                                       label=f"{what} {describe_files(files)}"))
        return StackView(stack, str(spec), stack.dtype)

    def open_input(self, path: Path, opts: EvalOptions) -> tuple[Normalization, bool]:
        """Read the translated input scene ``path`` onto the target grid from now on (thumbnails); its fixed
        ranges, and whether it is compared pixel by pixel (no CRS, ``--allow-ungeoreferenced``)."""
        src = self._keep(_open_quiet(path, "input scene"))
        if is_image_dataset(src):  # an image translated into the prediction: image values, pixel by pixel
            from sarkit.raster.images import ImageSource

            modality = "optical" if self.modality == "sar" else "sar"
            check_georeferencing(src, "input scene", self.target, True)
            self.input_source = self._keep(ImageSource(src, modality, label=f"input scene {src.name}"))
            return self.input_source.normalization, False
        pixelwise = check_georeferencing(src, "input scene", self.target, opts.allow_ungeoreferenced)
        modality, names = _modality_of(src), _names(src)
        self.input_source = self._keep(GeoTiffSource(
            src, modality, names=names, units="auto" if modality == "sar" else "db",
            default_dn_offset=_default_offset(opts), grid=self.grid, resampling=Resampling.bilinear,
            label=f"input scene {src.name}", ref_name=self.ref_name))
        return replace(_norm_for(modality, names, opts), offset=self.input_source.dn_offset), pixelwise

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
        p = self.pred_source.read(outer, self.pred_bands)
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

    def read_input(self, win: PixelWindow, pad: int) -> np.ndarray | None:
        """Physical values of the input scene over ``win`` grown by ``pad`` px as ``read`` grows it (None when
        no input is open)."""
        if self.input_source is None:
            return None
        r0, c0 = max(0, win.row_off - pad), max(0, win.col_off - pad)
        r1, c1 = min(self.height, win.row_end + pad), min(self.width, win.col_end + pad)
        return self.input_source.read(PixelWindow(r0, c0, r1 - r0, c1 - c0)).values

    def close(self) -> None:
        for s in reversed(self._stack):
            s.close()
        self._stack.clear()


class StackView:
    """What eval reads from a dataset, for a target or prediction of several files (``StackedSource``): its name, grid
    (``crs``, ``transform``, ``height``, ``width``), first file's dtype, and decimated reads for previews (each band
    from its file as read onto the stack's grid)."""

    def __init__(self, stack: StackedSource, name: str, dtype: str) -> None:
        self.stack, self.name = stack, name
        self.crs, self.transform = stack.grid.crs, stack.grid.transform
        self.height, self.width = stack.grid.height, stack.grid.width
        self.dtypes = (dtype,) * len(stack.band_names)
        self.count = len(stack.band_names)
        self.nodata = stack.nodata

    @property
    def described(self) -> bool:
        """Every file names its bands (descriptions, or a band word in a one-band file's name)."""
        return all(_described(p.dataset) or p.dataset.count == 1 for p in self.stack.parts)

    def tags(self) -> dict[str, str]:
        """The first file's tags."""
        return dict(self.stack.parts[0].dataset.tags())

    def read(self, indexes: Sequence[int], out_shape: tuple[int, int, int], resampling: Resampling) -> np.ndarray:
        """1-based bands ``indexes`` at ``out_shape`` (C, h, w), each file's nodata as the stack's."""
        out = []
        for i in indexes:
            pi, name = self.stack._where[i - 1]
            part = self.stack.parts[pi]
            ds = part.aligned.dataset
            a = ds.read([part.band_names.index(name) + 1], out_shape=(1, *out_shape[1:]),
                        resampling=resampling).astype(np.float64)
            if ds.nodata is not None and not np.isnan(ds.nodata) and ds.nodata != self.nodata:
                a[a == ds.nodata] = self.nodata
            out.append(a)
        return np.concatenate(out, axis=0)


def label_class_names(src: Any, path: Path) -> list[str] | None:
    """Class names of a label raster, by the rule ``sarkit tile`` uses: its ``class_names`` tag (a JSON list; tile
    and synth write it), else the ``classes`` of the ``tiling.json`` of the tile folder holding it, else
    Sen1Floods11's for a ``*LabelHand`` file; None when nothing names them."""
    from sarkit.data.layouts import SEN1FLOODS11_CLASSES

    names = _name_list(_json(src.tags().get("class_names")))
    if names:
        return names
    for tiling in (path.parent / "tiling.json", path.parent.parent / "tiling.json"):
        record = _json(tiling.read_text()) if tiling.is_file() else None
        if isinstance(record, dict) and (names := _name_list(record.get("classes"))):
            return names
    if path.stem.endswith("LabelHand"):
        return list(SEN1FLOODS11_CLASSES)
    return None


def _json(text: str | None) -> Any:
    """Parsed JSON text; None for no text or text that is not JSON."""
    import json

    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _name_list(value: Any) -> list[str] | None:
    """A non-empty list of names as strings; None for anything else."""
    return [str(n) for n in value] if isinstance(value, list) and value else None


def _open_quiet(path: Path, what: str) -> Any:
    """``open_raster`` without rasterio's NotGeoreferencedWarning: eval checks georeferencing itself."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return open_raster(path, what)


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
