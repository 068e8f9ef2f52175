"""Image files without georeferencing (PNG, JPEG, TIFF) as a ``RasterSource``: the image-pair datasets of the
SAR–optical literature (SEN1-2, QXS-SAROPT, SAR2Opt, WHU-OPT-SAR, pix2pix / CycleGAN releases).

Such images hold display values, not σ⁰ or reflectance, so their physical values are the stored values
themselves ("image" units) and their fixed range is the range of their data type: 0–255 for 8-bit, 0–65535 for
16-bit images (``value_range``). That range is the normalisation (``image_normalization``), recorded by
``sarkit tile --layout pairs`` in ``tiling.json`` and carried into checkpoints like the Sentinel ranges; it is never
computed from an image's values.

Rules, the same for every command (tile, train's tiles, translate, eval):

* A gray image stored as three (or four, with alpha) equal channels is one channel (``is_gray``); an alpha band is
  not a channel of the image.
* Band names: SAR as ``sarkit.raster.source.sar_band_names`` names a 1-band raster (the polarisation a word of the
  file name names, else VV); optical 3 bands B4, B3, B2 (true colour), 4 bands B2, B3, B4, B8, 1 band ``gray``,
  as ``sarkit tile`` names undescribed optical files; band descriptions win when every band has one.
* No nodata unless the file declares a nodata value; pixels outside the image are nodata.
* The pixel grid is kept as it is (no CRS): images are compared and cut pixel for pixel.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning

from sarkit.errors import InputError
from sarkit.io import open_raster
from sarkit.raster.align import read_bands
from sarkit.raster.grid import GridSpec, PixelWindow
from sarkit.raster.norm import Normalization
from sarkit.raster.source import Modality, RasterSource, Reading

#: Unit policy of image values (stored values are the physical values; range from the data type).
IMAGE_UNITS = "image"
#: File name endings of image files (read as images whatever their content).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: GDAL drivers of image files.
IMAGE_DRIVERS = ("PNG", "JPEG")
#: Every file name ending an image-pair dataset may use.
PAIR_SUFFIXES = IMAGE_SUFFIXES + (".tif", ".tiff")
#: Band names of undescribed optical images by band count (as ``sarkit tile`` names undescribed optical files).
OPTICAL_IMAGE_BANDS = {1: ("gray",), 3: ("B4", "B3", "B2"), 4: ("B2", "B3", "B4", "B8")}
#: Rows read at a time when checking whether channels are equal.
_GRAY_ROWS = 1024


def is_image_file(path: str | Path) -> bool:
    """True for a PNG or JPEG file name (``IMAGE_SUFFIXES``, any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_image_dataset(src: Any) -> bool:
    """True for an open PNG / JPEG raster, or a raster without georeferencing that sarkit wrote as image values
    (tag ``units=image``: image tiles, translations of images)."""
    if getattr(src, "driver", None) in IMAGE_DRIVERS:
        return True
    return not GridSpec.of(src).georeferenced and src.tags().get("units") == IMAGE_UNITS


def value_range(dtype: str, what: str = "image") -> float:
    """The top of an image's fixed value range from its data type: 255 (8-bit), 65535 (16-bit); ``InputError``
    for other types (images of float values have no fixed range)."""
    kind = np.dtype(dtype)
    if kind == np.uint8:
        return 255.0
    if kind == np.uint16:
        return 65535.0
    raise InputError(f"{what} holds {kind.name} values; image files must be 8-bit (0–255) or 16-bit (0–65535) "
                     f"integers, whose range is the fixed normalisation (convert it, e.g. gdal_translate -ot Byte)")


def _data_bands(src: Any) -> list[int]:
    """1-based bands of an open image that hold data: every band but an alpha band."""
    interp = list(src.colorinterp or ())
    bands = [i for i in range(1, src.count + 1) if i > len(interp) or interp[i - 1] != ColorInterp.alpha]
    return bands or [1]


def is_gray(src: Any, bands: Sequence[int] | None = None, part: PixelWindow | None = None) -> bool:
    """True when an open image has several data bands holding equal values everywhere (in ``part``, default the
    whole image): a gray image stored as RGB. Read in blocks of rows, stopping at the first difference."""
    bands = list(bands or _data_bands(src))
    part = part or PixelWindow(0, 0, src.height, src.width)
    if len(bands) < 2:
        return False
    for r in range(part.row_off, part.row_end, _GRAY_ROWS):
        win = PixelWindow(r, part.col_off, min(_GRAY_ROWS, part.row_end - r), part.width)
        a = read_bands(src, bands, win)
        if not (a == a[:1]).all():
            return False
    return True


def image_band_names(src: Any, modality: Modality | str, count: int) -> list[str]:
    """Band names of ``count`` data bands of an open image (see the module docstring)."""
    from sarkit.raster.source import _polarisation_in

    desc = list(src.descriptions or ())[:count]
    if len(desc) == count and all(desc) and len(set(desc)) == count:
        return [d.strip() for d in desc]
    if Modality(modality) is Modality.SAR:
        if count == 1:
            return [_polarisation_in(Path(str(src.name)).stem) or "VV"]
        if count == 2:
            return ["VV", "VH"]
        return [f"band{i}" for i in range(1, count + 1)]
    return list(OPTICAL_IMAGE_BANDS.get(count, [f"band{i}" for i in range(1, count + 1)]))


def image_normalization(modality: Modality | str, bands: Sequence[str], top: float) -> Normalization:
    """The fixed normalisation of image values: every band in ``[0, top]`` (``value_range``), units "image"."""
    n = len(bands)
    return Normalization(Modality(modality).value, tuple(bands), (0.0,) * n, (float(top),) * n,
                         units=IMAGE_UNITS, extra={"value_range": [0, int(top)]})


def open_quiet(path: str | Path, what: str) -> Any:
    """``open_raster`` without rasterio's NotGeoreferencedWarning (images have no georeferencing by nature)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return open_raster(path, what)


class ImageSource(RasterSource):
    """An image file as a ``RasterSource`` of image values (see the module docstring).

    ``src`` is a path (opened here, closed by ``close``) or an open dataset (left open). ``part`` is the window of
    the image that is the source (one half of a pix2pix A | B image; default all of it). ``gray`` None checks
    whether the data bands of a SAR image are equal (``is_gray``) and then reads band 1 only (optical images keep
    their channels unless ``gray`` is True); ``names`` overrides the band names.
    ``label`` names the image in messages. ``units`` is always "image" and ``top`` the top of the value range.
    """

    def __init__(self, src: Any, modality: Modality | str, *, names: Sequence[str] | None = None,
                 gray: bool | None = None, label: str | None = None, part: PixelWindow | None = None) -> None:
        self._owned = not hasattr(src, "read")
        ds = open_quiet(src, label or "image") if self._owned else src
        self.dataset = ds
        self.modality = Modality(modality)
        self.label = label or f"image {Path(str(ds.name)).name}"
        try:
            bands = _data_bands(ds)
            self.part = part or PixelWindow(0, 0, ds.height, ds.width)
            if gray is None:  # the rule is SAR's: an optical image keeps its channels (a gray one is rare)
                gray = self.modality is Modality.SAR and is_gray(ds, bands, self.part)
            self.gray = bool(gray)
            self._bands = bands[:1] if self.gray else bands
            self.dtype = ds.dtypes[0]
            self.top = value_range(self.dtype, self.label)
            desc = list(ds.descriptions or ())[:len(self._bands)]
            self.described = len(desc) == len(self._bands) and all(desc) and len(set(desc)) == len(desc)
            self.band_names = tuple(names) if names is not None else tuple(
                image_band_names(ds, self.modality, len(self._bands)))
            if len(self.band_names) != len(self._bands):
                raise InputError(f"{self.label} has {len(self._bands)} channel(s) but {len(self.band_names)} band "
                                 f"name(s) were expected ({', '.join(self.band_names)})")
            self.nodata = float(ds.nodata) if ds.nodata is not None else math.nan
            self.dn_offset = 0.0
            whole = GridSpec.of(ds)
            self.grid = GridSpec(None, whole.transform, self.part.height, self.part.width) if part else whole
        except BaseException:
            if self._owned:
                ds.close()
            raise

    @property
    def units(self) -> str:
        """Always "image": the stored values are the physical values."""
        return IMAGE_UNITS

    @property
    def units_note(self) -> str:
        """How the values are read, for people: "image values 0–255 (8-bit, gray stored as 3 channels)"."""
        bits = "8-bit" if self.top == 255 else "16-bit"
        gray = ", gray stored as several equal channels: one channel" if self.gray else ""
        return f"image values 0–{self.top:.0f} ({bits}{gray})"

    @property
    def normalization(self) -> Normalization:
        """This image's fixed normalisation (``image_normalization``)."""
        return image_normalization(self.modality, self.band_names, self.top)

    def read_stored(self, window: PixelWindow, bands: Sequence[str] | None = None) -> np.ndarray:
        idx = [self._bands[i] for i in self.band_indexes(bands)]
        out = np.full((len(idx), window.height, window.width), np.nan, dtype=np.float32)
        inner = window.intersect(self.grid.window)
        if inner is None:
            return out
        at = PixelWindow(inner.row_off + self.part.row_off, inner.col_off + self.part.col_off, inner.height,
                         inner.width)
        data = read_bands(self.dataset, idx, at, self.label, str(self.dataset.name)).astype(np.float32)
        if not math.isnan(self.nodata):
            data[data == self.nodata] = np.nan
        r0, c0 = inner.row_off - window.row_off, inner.col_off - window.col_off
        out[:, r0:r0 + inner.height, c0:c0 + inner.width] = data
        return out

    def read(self, window: PixelWindow, bands: Sequence[str] | None = None) -> Reading:
        values = self.read_stored(window, bands)
        values[np.isinf(values)] = np.nan
        valid = ~np.isnan(values).any(axis=0)
        return Reading(values, valid, np.zeros(valid.shape, dtype=bool))

    def close(self) -> None:
        if self._owned:
            self.dataset.close()


def source_for(src: Any, norm: Normalization, **kwargs: Any) -> RasterSource:
    """The raster layer's reader for ``src`` under ``norm``: an ``ImageSource`` for image normalisations (units
    "image"; ``gray`` as there; an image without band descriptions and with as many channels as ``norm`` takes its
    band names by position), else a ``GeoTiffSource`` (``kwargs`` passed on to it; ``InputError`` for an image
    file, which holds no Sentinel units)."""
    from sarkit.raster.source import GeoTiffSource

    gray = kwargs.pop("gray", None)
    if norm.units == IMAGE_UNITS:
        image = ImageSource(src, norm.modality, names=kwargs.get("names"), label=kwargs.get("label"), gray=gray)
        if kwargs.get("names") is None and not image.described and len(image.band_names) == norm.channels:
            image.band_names = tuple(norm.bands)  # an image names no bands: the normalisation's, by position
        return image
    if is_image_dataset(src) if hasattr(src, "read") else is_image_file(src):
        what = kwargs.get("label") or f"image {Path(str(getattr(src, 'name', src))).name}"
        unit = "σ⁰ in dB" if norm.modality == "sar" else "Sentinel-2 reflectance"
        raise InputError(f"{what} is an image file (display values, no CRS) but the checkpoint reads {unit}: "
                         f"translate images with a checkpoint trained on image tiles (sarkit tile ROOT --layout "
                         f"pairs), or give the Sentinel GeoTIFF")
    return GeoTiffSource(src, norm.modality, **kwargs)


def write_image(path: Path, data: np.ndarray, names: Sequence[str] | None = None, driver: str = "PNG",
                tags: dict[str, str] | None = None) -> None:
    """Write (C, H, W) integer values as an image file of ``driver`` (PNG: 1 band gray or 3 bands RGB), without
    georeferencing and without a sidecar; ``tags`` become PNG text chunks."""
    prof = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2], "count": data.shape[0],
            "dtype": data.dtype.name}
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        mem = rasterio.MemoryFile()
        with mem, mem.open(**prof) as tmp:
            tmp.write(data)
            if names:
                tmp.descriptions = tuple(names)
            if tags:
                tmp.update_tags(**tags)
            rasterio.shutil.copy(tmp, str(path), driver=driver,
                                 **({"WRITE_METADATA_AS_TEXT": "YES"} if driver == "PNG" else {}))
