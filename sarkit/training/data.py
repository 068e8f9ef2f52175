"""Training data: the tile sets a model reads, their ``ModelIO``, and the resumable, rank-sharded sample order.

Data order: epoch e visits the tiles in a permutation seeded by (seed, e), padded by wrapping to a whole number
of global batches; step s of the epoch gives rank r the slice ``[(s·W + r)·B, (s·W + r + 1)·B)``. The order is
a pure function of (seed, epoch, step), so resume only needs the step counter.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from sarkit.data.multiset import ROOT_KEY
from sarkit.errors import InputError, SarkitError
from sarkit.raster.grid import RESOLUTION_TOL, GridSpec, PixelSize, pixel_size, pixel_size_ratio
from sarkit.models.base import ModelIO, Task, TrainableModel
from sarkit.raster.norm import resolve_bands
from sarkit.training.options import Direction, Modality, TrainOptions


# ------------------------------------------------------------------------------------------ data order
@dataclass(frozen=True)
class DataOrder:
    """Resumable, rank-sharded sample order: a function of (seed, epoch, step) only."""

    n: int
    batch: int
    world: int
    rank: int
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        """⌈n / (batch · world)⌉ global batches per epoch."""
        return max(1, math.ceil(self.n / (self.batch * self.world)))

    def permutation(self, epoch: int) -> list[int]:
        """Epoch ``epoch``'s permutation of 0…n−1, wrapped to steps_per_epoch · batch · world entries."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        need = self.steps_per_epoch * self.batch * self.world
        return [perm[i % self.n] for i in range(need)]

    def batches(self, start: int, stop: int) -> Iterator[list[tuple[int, int]]]:
        """This rank's ``(epoch, index)`` lists for global steps ``start`` … ``stop − 1``."""
        spe = self.steps_per_epoch
        cache: tuple[int, list[int]] | None = None
        for step in range(start, stop):
            epoch, pos = divmod(step, spe)
            if cache is None or cache[0] != epoch:
                cache = (epoch, self.permutation(epoch))
            lo = (pos * self.world + self.rank) * self.batch
            yield [(epoch, i) for i in cache[1][lo:lo + self.batch]]


def _item_files(ds: Any, i: int) -> list[str]:
    """The files (manifest paths) item ``i`` of a ``TileDataset`` reads: its SAR and labels, its partner's optical."""
    rows = getattr(ds, "rows", None)
    if not rows:
        return []
    row, partner = rows[i % len(rows)], rows[ds.partner(i) % len(rows)] if hasattr(ds, "partner") else None
    files = [(row, "s1_path"), (partner or row, "s2_path"), (row, "labels_path")]
    # a row of one of several tile sets (sarkit.data.multiset) is named with its set's folder
    return [str(Path(r[ROOT_KEY]) / r[c]) if r.get(ROOT_KEY) else r[c] for r, c in files if r.get(c)]


def read_item(ds: Any, i: int) -> dict[str, Any]:
    """Item ``i`` of a tile data set; a tile that cannot be read is an ``InputError`` naming its files."""
    try:
        return ds[i]
    except (RasterioError, OSError) as exc:
        files = ", ".join(_item_files(ds, i)) or f"item {i}"
        root = getattr(ds, "root", "the tile folder")
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read tile {files} of {root} ({reason}); re-run sarkit tile, or remove the tile's "
                         f"row from manifest.csv") from None


class EpochIndexed(torch.utils.data.Dataset):
    """Dataset view indexed by ``(epoch, i)``: calls ``set_epoch`` (unpaired partner draw) before reading.

    The wrapped data set is a ``TileDataset`` (or anything with ``__len__``, ``__getitem__`` and ``set_epoch``).
    """

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, i = key
        if epoch != self.epoch:
            self.ds.set_epoch(epoch)
            self.epoch = epoch
        return read_item(self.ds, i)


class OrderSampler(torch.utils.data.Sampler):
    """Batch sampler over ``DataOrder.batches``."""

    def __init__(self, order: DataOrder, start: int, stop: int) -> None:
        self.order, self.start, self.stop = order, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return self.order.batches(self.start, self.stop)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def make_loader(ds: Any, order: DataOrder, start: int, stop: int, workers: int, device: torch.device) -> Any:
    """DataLoader yielding this rank's batches for steps start…stop−1 (its own RNG: the global one is untouched)."""
    return torch.utils.data.DataLoader(
        EpochIndexed(ds), batch_sampler=OrderSampler(order, start, stop), num_workers=workers,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(order.seed),
        persistent_workers=False)


def batches(loader: Iterable[Any]) -> Iterator[Any]:
    """The batches of ``loader``; a sarkit error raised in a worker process comes out as itself with its one-line
    message (torch re-raises it with the worker's traceback in the message)."""
    try:
        yield from loader
    except SarkitError as exc:
        text = str(exc).strip()
        if "Traceback" not in text:
            raise
        last = text.splitlines()[-1]
        raise type(exc)(last.partition(": ")[2] or last) from None


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    """Tensors of a collated batch on ``device`` (4-D float images in channels-last layout when asked)."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


# ------------------------------------------------------------------------------------------ data sets
@dataclass
class TrainData:
    """The training and validation tile sets of a run, the ModelIO they imply and the tiling's normalisations."""

    train: Any
    val: Any | None
    io: ModelIO
    task: Task
    norms: dict[str, Any]

    @property
    def segmenter(self) -> bool:
        """The run trains a segmenter (class maps) rather than a translator (images)."""
        return self.task is Task.SEGMENTER


def _check_task_options(opts: TrainOptions, cls: type[TrainableModel]) -> None:
    """A segmenter needs --modality; a translator takes --direction and no --modality."""
    if cls.task is Task.SEGMENTER and opts.modality is None:
        raise InputError(f"--model {opts.model} trains on one modality: pass --modality sar or optical")
    if cls.task is not Task.SEGMENTER and opts.modality is not None:
        raise InputError(f"--modality is for segmenters; --model {opts.model} translates (use --direction)")


def _check_bands(record: dict[str, Any], root: Path, sar: Sequence[str] | None,
                 optical: Sequence[str] | None) -> None:
    """``--sar-bands`` / ``--optical-bands`` name bands the tiles have (``InputError`` naming the option)."""
    for option, available, requested in (("--sar-bands", record.get("sar_bands"), sar),
                                         ("--optical-bands", record.get("optical_bands"), optical)):
        if requested and available:
            kind = option[2:].split("-")[0]
            resolve_bands(list(available), list(requested), f"tile set {root} ({kind})", option=option)


def _check_labels(record: dict[str, Any], rows: list[dict[str, str]], root: Path, model: str) -> None:
    """A model that trains on labels gets tiles with labels (``InputError`` with the command that makes them)."""
    if not record.get("classes") or not any(r.get("labels_path") for r in rows):
        raise InputError(f"--model {model} trains on labels, but the tiles in {root} have none: tile again with "
                         f"sarkit tile ... --labels LABELS.tif")


def _tile_problem(path: Path, size: int, bands: int | None) -> str | None:
    """What is wrong with one tile file, from its header (None when it opens as a GeoTIFF of the tiling's shape)."""
    if not path.is_file():
        return "is missing"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                driver, shape, count = src.driver, (src.height, src.width), src.count
    except RasterioError as exc:
        return f"is not a readable GeoTIFF ({str(exc).splitlines()[0]})"
    if driver != "GTiff":
        return f"is a {driver} file, not a GeoTIFF"
    if shape != (size, size):
        return f"is {shape[1]}×{shape[0]} pixels, the tiling's tiles are {size}×{size}"
    if bands is not None and count != bands:
        return f"has {count} bands, the tiling records {bands}"
    return None


def check_tile_files(root: Path, rows: list[dict[str, str]], bands: dict[str, int | None], size: int) -> None:
    """Every tile file a run reads (the manifest columns in ``bands``, with their band counts) exists and opens as
    a GeoTIFF of ``size``² pixels: a header read per file, no pixels. ``InputError`` naming the first bad one."""
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        for row in rows:
            for column, count in bands.items():
                rel = row.get(column) or ""
                problem = _tile_problem(root / rel, size, count) if rel else "is not listed"
                if problem:
                    what = rel or f"{column} of tile {row.get('tile_id', '?')}"
                    raise InputError(f"tile {what} in {root}/manifest.csv {problem}; re-run sarkit tile, or remove "
                                     f"the tile's row from manifest.csv")


def _split_count(rows: list[dict[str, str]], split: str) -> int:
    """Manifest rows in ``split``."""
    return sum(1 for r in rows if r.get("split") == split)


def open_data(opts: TrainOptions, cls: type[TrainableModel]) -> TrainData:
    """Training (paired or unpaired) and validation data sets, and the ModelIO they imply."""
    from sarkit.data.dataset import TileDataset, load_manifest, read_tiling
    from sarkit.data.multiset import check_compatible

    dirs = opts.data_dirs
    root = dirs[0]
    for d in dirs:
        if not d.is_dir():
            raise InputError(f"tile directory not found: {d} (make one with: sarkit tile)")
    records = [read_tiling(d) for d in dirs]
    check_compatible(records, dirs)
    _check_task_options(opts, cls)
    segmenter = cls.task is Task.SEGMENTER
    labels = bool(cls.needs_labels)
    optical_bands = None if segmenter and opts.modality is Modality.SAR else tuple(opts.optical_bands)
    n_train = 0
    for d, rec in zip(dirs, records):  # each set checked in its own folder, splits from its own manifest
        rows = load_manifest(d)
        if not rows:
            raise InputError(f"{d}/manifest.csv lists no tiles; re-run sarkit tile")
        n_train += _split_count(rows, "train")
        _check_bands(rec, d, opts.sar_bands, optical_bands)
        if labels:
            _check_labels(rec, rows, d, opts.model)
        used = [r for r in rows if r.get("split") in ("train", "val")]
        files: dict[str, int | None] = {"s1_path": len(rec["sar_bands"])}
        if optical_bands is not None and rec.get("optical_bands"):
            files["s2_path"] = len(rec["optical_bands"])
        if labels:
            files["labels_path"] = None
        check_tile_files(d, used, files, int(rec["params"]["size"]))
    if n_train == 0:
        where = root if len(dirs) == 1 else "any of " + ", ".join(map(str, dirs))
        raise InputError(f"{where} has no tiles in the train split; re-run sarkit tile with a train fraction > 0")
    rows = [r for d in dirs for r in load_manifest(d)]
    common = dict(sar_bands=list(opts.sar_bands) if opts.sar_bands else None, optical_bands=optical_bands,
                  labels=labels)
    mode = "paired" if cls.paired else "unpaired"
    train = TileDataset(dirs, split="train", mode=mode, augment=opts.augment, seed=opts.seed, **common)
    if len(train) == 0:
        raise InputError(f"{root}: the train split yields no usable {mode} tiles")
    val = None
    if _split_count(rows, "val") > 0:
        val = TileDataset(dirs, split="val", mode="paired", augment=False, seed=opts.seed, **common)
        if len(val) == 0:
            val = None
    sar = train.sar_norm.to_dict()
    opt = train.optical_norm.to_dict() if train.optical_norm is not None else None
    if opt is None and (not segmenter or opts.modality is Modality.OPTICAL):
        raise InputError(f"{root} has no optical tiles; --model {opts.model} needs them (tile with optical input)")
    norms = {"sar": sar, "optical": opt}
    io = dataclasses.replace(_model_io(opts, train, segmenter, labels, sar, opt), pixel_size=tile_pixel_size(train))
    return TrainData(train, val, io, cls.task, norms)


#: Tiles of the train split whose pixel size is read to record the training resolution.
PIXEL_SIZE_SAMPLES = 8


def tile_pixel_size(ds: Any) -> dict[str, Any] | None:
    """The pixel size of a tile set's tiles (``PixelSize.to_dict``), read from up to ``PIXEL_SIZE_SAMPLES`` of its
    SAR tiles spread over the set; None when one lacks georeferencing or they differ by more than
    ``RESOLUTION_TOL`` (no one resolution to record)."""
    rows = ds.rows
    picks = sorted({round(i * (len(rows) - 1) / max(1, PIXEL_SIZE_SAMPLES - 1)) for i in range(PIXEL_SIZE_SAMPLES)})
    sizes: list[PixelSize] = []
    for i in picks:
        try:
            path = ds.tile_path(rows[i], "s1_path") if hasattr(ds, "tile_path") else ds.root / rows[i]["s1_path"]
            with rasterio.open(path) as src:
                size = pixel_size(GridSpec.of(src))
        except (OSError, KeyError, rasterio.errors.RasterioError):
            return None
        if size is None:
            return None
        sizes.append(size)
    first = sizes[0]
    for s in sizes[1:]:
        ratio = pixel_size_ratio(s, first)
        if ratio is None or any(abs(r - 1.0) > RESOLUTION_TOL for r in ratio):
            return None
    return first.to_dict()


def _model_io(opts: TrainOptions, train: Any, segmenter: bool, labels: bool, sar: dict[str, Any],
              opt: dict[str, Any] | None) -> ModelIO:
    """Channels, direction (or modality), tile size, normalisations and classes the model is built for."""
    names = tuple(train.class_names) if train.class_names else None
    if segmenter:
        assert opts.modality is not None
        norm = sar if opts.modality is Modality.SAR else opt
        k = train.num_classes
        return ModelIO(len(norm["bands"]), int(k or 0), opts.modality.value, train.tile_size, norm, {}, k, names)
    src, dst = (sar, opt) if opts.direction is Direction.SAR2OPT else (opt, sar)
    return ModelIO(len(src["bands"]), len(dst["bands"]), opts.direction.value, train.tile_size, src, dst,
                   train.num_classes if labels else None, names if labels else None)
