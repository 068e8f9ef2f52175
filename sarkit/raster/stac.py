"""STAC Items as rasters: the assets an Item names, read as one ``StackedSource``.

A STAC Item (a JSON file or an http(s) URL, read with pystac; asset hrefs relative to the item are resolved
against it) is one scene of one modality:

Asset hrefs are local files (absolute, ``file://``, or relative to a local item: a static catalog as STAC tools
download it) or http(s) URLs (absolute, or relative to an item given as a URL), which rasterio reads directly
(GDAL's /vsicurl/, range requests: COGs are read in blocks). Other schemes (``s3://``…) are refused with what to do.

* Sentinel-1 RTC: the assets ``vv``, ``vh`` (``hh``, ``hv``), any case. RTC products hold linear γ⁰, which the
  raster layer turns into dB (``units="linear"``); an asset whose ``raster:bands`` unit says dB is read as dB.
* Sentinel-2 L2A: band assets by Sentinel-2 name (``B04``, ``b04``, ``B8A``) or by common name (``red``,
  ``green``, ``blue``, ``nir``, ``rededge1``…, ``swir22``; Earth Search's names), read onto the finest (10 m)
  band's grid, bilinear. Other assets (``visual``, ``SCL``, ``AOT``, thumbnails, JP2 copies) are not bands. The DN
  offset comes from the item's properties: ``s2:processing_baseline`` ≥ 04.00 → −1000 (ESA's BOA_ADD_OFFSET),
  unless ``earthsearch:boa_offset_applied`` says the offset is already in the values (then 0).

``stac_item`` reads an Item into a ``StacScene`` (modality, asset files, band names, SAR units, DN offset);
``open_stac`` opens it as a ``StackedSource``. ``sarkit.raster.stack.open_source`` does both for a path ending
in ``.json``, so every command that reads rasters through the raster layer accepts an Item.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sarkit.errors import InputError
from sarkit.io import RemoteFile, as_file, is_url
from sarkit.raster.source import POLARISATIONS, Modality

#: Sentinel-2 common names (STAC eo extension, Earth Search asset keys) → sarkit's band names.
S2_COMMON_NAMES = {"coastal": "B1", "blue": "B2", "green": "B3", "red": "B4", "rededge1": "B5", "rededge2": "B6",
                   "rededge3": "B7", "nir": "B8", "nir08": "B8A", "nir09": "B9", "cirrus": "B10", "swir16": "B11",
                   "swir22": "B12"}
#: Sentinel-2 bands in their order (the order an Item's band assets are stacked in).
S2_ORDER = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
#: The DN offset of Sentinel-2 L2A/L1C products of processing baseline 04.00 and later.
BASELINE_OFFSET = -1000.0
_S2_KEY = re.compile(r"^b(0?[1-9]|1[0-2]|0?8a)$", re.IGNORECASE)


@dataclass(frozen=True)
class StacScene:
    """What an Item says about its raster: ``modality``, the asset ``files`` (hrefs, resolved), their band
    ``names`` (one band per asset), the SAR ``units`` ("linear" or "db") and the optical ``dn_offset``."""

    item: Path | RemoteFile
    item_id: str
    modality: Modality
    files: tuple[str, ...]
    names: tuple[str, ...]
    units: str = "db"
    dn_offset: float = 0.0


def is_stac_item(spec: Any) -> bool:
    """True when a scene as a user gave it is one STAC Item file or URL (a path ending in ``.json``)."""
    if not isinstance(spec, (str, os.PathLike)) or "," in str(spec):
        return False
    return (as_file(spec).suffix if is_url(spec) else str(spec)).lower().endswith(".json")


def _load(path: Path | RemoteFile) -> Any:
    """The pystac Item of a file or URL; ``InputError`` for a missing file or JSON that is not a STAC Item."""
    import pystac

    text = str(path)
    if not is_url(path) and not Path(text).is_file():
        raise InputError(f"STAC item {path}: file not found (give an Item JSON file, or its http(s) URL)")
    try:
        obj = pystac.read_file(text)
    except Exception as exc:  # pystac raises several kinds (JSON, STAC type, IO)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"STAC item {path} cannot be read ({reason[:160]}); give a STAC Item JSON file") from None
    if not isinstance(obj, pystac.Item):
        raise InputError(f"{path} is a STAC {type(obj).__name__}, not an Item; give one Item (a scene) file")
    return obj


def _href(asset: Any, item: Path | RemoteFile) -> str:
    """An asset's file: its href resolved against the item (file or URL) when relative; an http(s) URL stays a
    URL. ``InputError`` for another scheme (``s3://``…), which rasterio is not given here."""
    from urllib.parse import urljoin

    href = asset.href
    if is_url(href):
        return href
    if "://" in href and not href.startswith("file://"):
        raise InputError(f"STAC item {item}: asset {href} is neither an http(s) URL nor a file; give an item whose "
                         f"asset hrefs are http(s) URLs, or download it with its assets and give the local item")
    if is_url(item):
        if href.startswith("file://") or Path(href).is_absolute():
            raise InputError(f"STAC item {item}: asset {href} is a local file of another machine; give an item "
                             f"whose asset hrefs are http(s) URLs or relative to it")
        return urljoin(str(item), href)
    href = href[len("file://"):] if href.startswith("file://") else href
    if Path(href).is_absolute():
        return href
    return str((Path(item).resolve().parent / href).resolve())


def _s2_band(key: str, asset: Any) -> str | None:
    """The Sentinel-2 band an asset holds (by key, or by its eo:bands common name), None for other assets."""
    k = key.strip()
    if _S2_KEY.match(k):
        return "B" + k[1:].upper().lstrip("0")
    if k.lower() in S2_COMMON_NAMES:
        return S2_COMMON_NAMES[k.lower()]
    return None


def _baseline_offset(props: dict[str, Any], item: Path) -> float:
    """The DN offset an Item's properties imply (see the module docstring)."""
    if props.get("earthsearch:boa_offset_applied") is True:
        return 0.0
    baseline = props.get("s2:processing_baseline")
    if baseline is None:
        return 0.0
    try:
        return BASELINE_OFFSET if float(str(baseline)) >= 4.0 else 0.0
    except ValueError:
        raise InputError(f"STAC item {item}: s2:processing_baseline {baseline!r} is not a number such as "
                         f"04.00") from None


def _sar_units(asset: Any) -> str:
    """"db" when the asset's raster:bands say dB, else "linear" (RTC γ⁰ is linear power)."""
    bands = asset.extra_fields.get("raster:bands") or []
    unit = str(bands[0].get("unit", "")).lower() if bands and isinstance(bands[0], dict) else ""
    return "db" if unit in ("db", "decibel", "decibels") else "linear"


def stac_item(path: str | Path) -> StacScene:
    """The ``StacScene`` of an Item file or URL: Sentinel-1 polarisation assets, else Sentinel-2 band assets;
    ``InputError`` when it names neither."""
    path = as_file(path)
    item = _load(path)
    assets = item.assets
    sar = sorted(((k, a) for k, a in assets.items() if k.upper() in POLARISATIONS),
                 key=lambda ka: POLARISATIONS.index(ka[0].upper()))
    if sar:
        units = {_sar_units(a) for _, a in sar}
        if len(units) > 1:
            raise InputError(f"STAC item {path}: its polarisation assets say different units; give one unit")
        return StacScene(path, item.id, Modality.SAR, tuple(_href(a, path) for _, a in sar),
                         tuple(k.upper() for k, _ in sar), units=units.pop())
    bands = {}
    for k, a in assets.items():
        band = _s2_band(k, a)
        if band is not None and band not in bands:
            bands[band] = a
    if not bands:
        raise InputError(f"STAC item {path} names no Sentinel-1 polarisation (vv, vh) or Sentinel-2 band (B04/red, "
                         f"…) asset (assets: {', '.join(assets) or 'none'})")
    names = [b for b in S2_ORDER if b in bands]
    return StacScene(path, item.id, Modality.OPTICAL, tuple(_href(bands[b], path) for b in names),
                     tuple(names), dn_offset=_baseline_offset(item.properties, path))


def open_stac(spec: str | Path, modality: Modality | str, **kwargs: Any) -> Any:
    """A ``StackedSource`` over an Item's assets (``stac_item``), with the Item's band names, SAR units and DN
    offset; ``kwargs`` as for ``StackedSource`` (``names`` must match the Item's when given). ``InputError`` when
    the Item is of the other modality."""
    from sarkit.raster.stack import StackedSource

    scene = stac_item(spec)
    want = Modality(modality)
    if scene.modality is not want:
        kinds = {Modality.SAR: "Sentinel-1 (vv, vh assets)", Modality.OPTICAL: "Sentinel-2 (band assets)"}
        raise InputError(f"STAC item {spec} is a {kinds[scene.modality]} item, but the {want.value} raster is "
                         f"read here (give the {kinds[want]} item)")
    given = kwargs.pop("names", None)
    if given is not None and [n.upper() for n in given] != [n.upper() for n in scene.names]:
        raise InputError(f"STAC item {spec}: bands {', '.join(scene.names)}, not {', '.join(given)}")
    kwargs.pop("units", None)
    kwargs.pop("dn_offset", None)
    kwargs.setdefault("label", f"STAC item {as_file(spec).name}")
    return StackedSource(scene.files, want, names=list(scene.names), units=scene.units,
                         dn_offset=scene.dn_offset if want is Modality.OPTICAL else None, **kwargs)
