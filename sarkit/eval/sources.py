"""Evaluation sources: two scenes, two tile sets, or a generator on a split.

``EvalSource`` declares what the evaluation reads from a source; each source yields ``Block``s in model range
[-1, 1] with NaN nodata under fixed ``Normalization`` ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np
import torch

from sarkit.errors import InputError
from sarkit.raster.grid import PixelWindow
from sarkit.raster.norm import Normalization
from sarkit.reporting import NULL_REPORTER, Reporter
from sarkit.eval.baselines import fit_from_record
from sarkit.eval.options import HALO, EvalOptions
from sarkit.eval.pairs import _norm_for, _PairReader, partition


class EvalMode(str, Enum):
    """What a source compares; the value is report.json's ``inputs.mode``."""

    SCENES = "scenes"  # a prediction scene against a target scene, in windows on the target's grid
    TILES = "tiles"  # two folders of tiles matched by file stem
    MODEL = "model"  # a generator checkpoint run on a split of a tile folder

    def __str__(self) -> str:
        return self.value


@dataclass
class Block:
    """One evaluated tile: model-range arrays (C, H, W) with NaN nodata; ``core`` = counted part (block coords)."""

    id: str
    pred: np.ndarray
    target: np.ndarray
    core: PixelWindow
    labels: np.ndarray | None = None
    input: np.ndarray | None = None
    window: PixelWindow | None = None


@runtime_checkable
class EvalSource(Protocol):
    """What ``sarkit.eval.runner.evaluate`` reads from a source of blocks.

    Sources subclass it for the defaults of ``overview`` (none) and ``close`` (nothing to release).
    """

    mode: EvalMode
    #: Ranges (and DN offset) of the prediction and of the target; metrics use the prediction's bands.
    pred_norm: Normalization
    target_norm: Normalization
    #: Ranges of the generator's input (model mode: thumbnails show it), else None.
    input_norm: Normalization | None
    #: Class names of the labels when they carry them, else None.
    class_names: list[str] | None
    has_labels: bool
    #: report.json ``inputs``: mode, paths, size or tile count, DN offsets.
    inputs: dict[str, Any]
    #: Where the ranges come from: "default", "cli" or "checkpoint".
    ranges_source: str
    #: Non-finite prediction pixels where the target holds data, counted while ``blocks`` runs.
    bad_nan: int
    # Optional (read with getattr): ``band_info``, report.json ``bands`` of the source: the compared target and
    # prediction bands, how they were matched ("name", "position", "--bands", "checkpoint") and whether each file
    # names its bands (``band_record``); without it the prediction ranges' bands are reported as matched by name.

    def __len__(self) -> int:
        """Number of tiles (scene windows, tile pairs, split tiles): the progress total and FID's sample count."""
        ...

    def blocks(self) -> Iterator[Block]:
        """Every block once, in a fixed order."""
        ...

    def fetch(self, tile_id: str) -> Block:
        """The block ``tile_id`` again (read or computed anew), for the report's thumbnails."""
        ...

    def overview(self, opts: EvalOptions) -> list[dict[str, str]]:
        """Whole-scene previews for the report (``[{"label", "png"}]``); none by default."""
        return []

    def close(self) -> None:
        """Release open files; nothing by default."""
        return None


# ----------------------------------------------------------------------------------------------- sources

def band_record(reader: _PairReader, opts: EvalOptions) -> dict[str, Any]:
    """report.json ``bands`` of a pair: compared target and prediction bands, how matched, whether named."""
    how = "--bands" if opts.bands is not None else reader.match
    return {"target": list(reader.bands), "pred": list(reader.pred_bands), "matched": how,
            "described": dict(reader.described)}


def warn_pixelwise(which: list[str], reporter: Reporter, what: str = "") -> None:
    """Say that rasters without a CRS are compared pixel by pixel (``--allow-ungeoreferenced``)."""
    if which:
        reporter.warn(f"{' and '.join(which)}{what} compared with the target pixel by pixel: a CRS is missing, so "
                      f"nothing aligns them (--allow-ungeoreferenced); make sure they cover the same pixels")


def input_from_tags(tags: dict[str, str], pred: Path) -> tuple[str | None, Path | None]:
    """The scene a ``sarkit translate`` output was made from (its ``source`` tag, written with the checkpoint
    tags) and that file when it exists, as given or next to the prediction; (None, None) for other files."""
    name = tags.get("source")
    if not name or "checkpoint" not in tags:
        return None, None
    for cand in (Path(name), pred.parent / name, pred.parent / Path(name).name):
        if cand.is_file():
            return name, cand
    return name, None


class SceneSource(EvalSource):
    """Two scenes (and optional labels) streamed in ``tile_size`` windows on the target grid; the translated input
    scene (``opts.input_scene``, else the prediction's provenance tags) is shown in the report when known."""

    mode = EvalMode.SCENES

    def __init__(self, pred: Path, target: Path, labels: Path | None, opts: EvalOptions,
                 reporter: Reporter = NULL_REPORTER) -> None:
        self.reader = _PairReader(Path(pred), Path(target), Path(labels) if labels else None, reporter, opts,
                                  target_units="auto")  # a user's scene: unit detected
        try:
            self._setup(Path(pred), Path(target), labels, opts, reporter)
        except BaseException:
            self.reader.close()
            raise

    def _setup(self, pred: Path, target: Path, labels: Path | None, opts: EvalOptions, reporter: Reporter) -> None:
        names = self.reader.band_names()
        self.norm = self.reader.image_norm or _norm_for(self.reader.modality, names, opts)
        self.pred_norm = replace(self.norm, offset=self.reader.pred_offset)
        self.target_norm = replace(self.norm, offset=self.reader.target_offset)
        self.class_names = self.reader.class_names
        self.has_labels = labels is not None
        self.windows = partition(self.reader.height, self.reader.width, opts.tile_size)
        self.bad_nan = 0
        self.band_info = band_record(self.reader, opts)
        self.inputs = {"mode": self.mode, "pred": str(pred), "target": str(target),
                       "labels": str(labels) if labels else None,
                       "size": [self.reader.height, self.reader.width]}
        if self.reader.modality == "optical" and self.reader.image_norm is None:
            self.inputs["dn_offset"] = {"pred": self.reader.pred_offset, "target": self.reader.target_offset}
        self.ranges_source = "cli" if (opts.s1_range or opts.s2_range) else "default"
        if self.reader.image_norm is not None:  # image files: the fixed range of their data type
            self.ranges_source = "image"
            reporter.info(f"image files compared pixel by pixel in their value range 0–{self.norm.hi[0]:.0f}")
        self.input_norm: Normalization | None = None
        self.input_path = self._find_input(pred, opts, reporter)
        if self.input_path is not None:
            self.input_norm, pixelwise = self.reader.open_input(self.input_path, opts)
            if pixelwise:
                self.reader.pixelwise.append("input scene")
        warn_pixelwise(self.reader.pixelwise, reporter)
        self.baseline_fit = fit_from_record(self.reader.pred_tags.get("baselines"))  # written by translate

    def _find_input(self, pred: Path, opts: EvalOptions, reporter: Reporter) -> Path | None:
        """The input scene: ``--input``, else the scene the prediction's tags name (when it is found)."""
        if opts.input_scene is not None:
            self.inputs["input"] = str(opts.input_scene)
            return opts.input_scene
        name, found = input_from_tags(self.reader.pred_tags, pred)
        if found is not None:
            self.inputs["input"] = str(found)
            reporter.info(f"input scene {found}: from the prediction's source tag")
        elif name is not None:
            reporter.info(f"the prediction was translated from {name}, which is not next to it; pass --input "
                          f"SCENE to show it in the report")
        return found

    def __len__(self) -> int:
        return len(self.windows)

    def _block(self, win: PixelWindow, tile_id: str, with_input: bool = False) -> Block:
        p, t, lab, core, bad = self.reader.read(win, HALO)
        self.bad_nan += bad
        x = self.reader.read_input(win, HALO) if with_input and self.input_norm is not None else None
        inp = self.input_norm.encode(x) if x is not None and self.input_norm is not None else None
        return Block(tile_id, self.norm.encode(p), self.norm.encode(t), core, lab, inp, win)

    def blocks(self) -> Iterator[Block]:
        for w in self.windows:  # the input comes along when known: the linear baseline maps it
            yield self._block(w, f"r{w.row_off}_c{w.col_off}", with_input=self.input_norm is not None)

    def fetch(self, tile_id: str) -> Block:
        m = re.fullmatch(r"r(\d+)_c(\d+)", tile_id)
        win = next(w for w in self.windows if m and (w.row_off, w.col_off) == (int(m[1]), int(m[2])))
        return self._block(win, tile_id, with_input=True)

    def overview(self, opts: EvalOptions) -> list[dict[str, str]]:
        """Whole-scene previews (input if known, prediction, target), longer side ``opts.overview_px``."""
        from sarkit.eval.report import scene_preview

        items = []
        if self.input_path is not None and self.input_norm is not None:
            src = self.reader.input_source.dataset
            items.append({"label": "input", **scene_preview(src, list(range(1, src.count + 1)), self.input_norm,
                                                            self.input_norm.modality, opts.overview_px)})
        for label, src, idx, norm in (("prediction", self.reader.pred, self.reader.pred_idx, self.pred_norm),
                                      ("target", self.reader.target, self.reader.target_idx, self.target_norm)):
            items.append({"label": label, **scene_preview(src, idx, norm, self.reader.modality, opts.overview_px)})
        return items

    def close(self) -> None:
        self.reader.close()


def _tif_stems(d: Path, what: str) -> dict[str, Path]:
    if not d.is_dir():
        raise InputError(f"{what} directory not found: {d}")
    return {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in (".tif", ".tiff")}


class TileSetSource(EvalSource):
    """Two directories of tiles matched by file stem (tile id); optional labels directory likewise."""

    mode = EvalMode.TILES

    def __init__(self, pred: Path, target: Path, labels: Path | None, opts: EvalOptions,
                 reporter: Reporter = NULL_REPORTER) -> None:
        ps, ts = _tif_stems(Path(pred), "prediction"), _tif_stems(Path(target), "target")
        ls = _tif_stems(Path(labels), "labels") if labels else {}
        ids = sorted(set(ps) & set(ts))
        if not ids:
            raise InputError(f"no tile ids in common between {pred} ({len(ps)} tiles) and {target} "
                             f"({len(ts)} tiles); tiles are matched by file name")
        if len(ids) < max(len(ps), len(ts)):
            reporter.warn(f"{len(ps) - len(ids)} prediction and {len(ts) - len(ids)} target tiles have no partner "
                          f"and are skipped")
        if labels and (missing := [i for i in ids if i not in ls]):
            raise InputError(f"{len(missing)} tiles have no labels in {labels} (e.g. {missing[0]})")
        self.pairs = {i: (ps[i], ts[i], ls.get(i)) for i in ids}
        self.opts, self.reporter = opts, reporter
        if opts.input_scene is not None:
            reporter.warn("--input is ignored with tile folders: it shows the input scene of a scene evaluation")
        first = _PairReader(*self.pairs[ids[0]], reporter, opts)
        self.modality, self.names = first.modality, first.band_names()
        self.class_names = first.class_names
        self.has_labels = bool(labels)
        self.band_info = band_record(first, opts)
        self.baseline_fit = fit_from_record(first.pred_tags.get("baselines"))  # written by translate
        first.close()
        warn_pixelwise(first.pixelwise, reporter, f" tiles (first: {ids[0]})")
        self.norm = first.image_norm or _norm_for(self.modality, self.names, opts)  # image tiles: their range
        self.pred_norm = replace(self.norm, offset=first.pred_offset)  # each tile pair reads its own tags
        self.target_norm = replace(self.norm, offset=first.target_offset)
        self.input_norm = None
        self.ids = ids
        self.bad_nan = 0
        self.inputs = {"mode": self.mode, "pred": str(pred), "target": str(target),
                       "labels": str(labels) if labels else None, "tiles": len(ids)}
        if self.modality == "optical" and first.image_norm is None:
            self.inputs["dn_offset"] = {"pred": first.pred_offset, "target": first.target_offset}
        self.ranges_source = "cli" if (opts.s1_range or opts.s2_range) else "default"
        if first.image_norm is not None:
            self.ranges_source = "image"

    def __len__(self) -> int:
        return len(self.ids)

    def _pair_blocks(self, tile_id: str) -> Iterator[Block]:
        reader = _PairReader(*self.pairs[tile_id], self.reporter, self.opts)
        try:
            if reader.modality != self.modality or reader.band_names() != self.names:
                raise InputError(f"tile {tile_id} has bands {reader.band_names()} ({reader.modality}); the first "
                                 f"tile has {self.names} ({self.modality})")
            wins = partition(reader.height, reader.width, self.opts.tile_size)
            for w in wins:
                p, t, lab, core, bad = reader.read(w, HALO)
                self.bad_nan += bad
                bid = tile_id if len(wins) == 1 else f"{tile_id}/r{w.row_off}_c{w.col_off}"
                yield Block(bid, self.norm.encode(p), self.norm.encode(t), core, lab, None, w)
        finally:
            reader.close()

    def blocks(self) -> Iterator[Block]:
        for i in self.ids:
            yield from self._pair_blocks(i)

    def fetch(self, tile_id: str) -> Block:
        return next(b for b in self._pair_blocks(tile_id.split("/")[0]) if b.id == tile_id)

    def close(self) -> None:
        pass


class ModelSplitSource(EvalSource):
    """An exported generator run on a split of a tile directory, against the split's target tiles.

    The generator runs as translate runs it (``sarkit.infer.engine.load_predictor``: the same padding,
    channels-last layout and mixed-precision guard; fp32 unless ``opts.amp``). Where the tiling's ranges differ
    from the checkpoint's, the input and the target are re-encoded with the checkpoint's (with a warning), so the
    generator sees what translate would feed it."""

    mode = EvalMode.MODEL

    def __init__(self, checkpoint: Path, data: Path, split: str, opts: EvalOptions,
                 reporter: Reporter = NULL_REPORTER) -> None:
        from sarkit.data.dataset import TileDataset, read_tiling
        from sarkit.infer.engine import load_predictor, same_model_range

        self.device = torch.device(opts.device)
        if opts.s1_range or opts.s2_range:
            reporter.warn("--s1-range/--s2-range are ignored with --checkpoint: the checkpoint's ranges are used")
        if opts.s2_offset:
            reporter.warn("--s2-offset is ignored with --checkpoint: the tiling records the offset of its tiles")
        if opts.input_scene is not None:
            reporter.warn("--input is ignored with --checkpoint: the report shows each tile's input")
        self.predictor = load_predictor(checkpoint, self.device, opts.amp, reporter, sampling=opts.sampling)
        self.reporter = reporter
        net = self.predictor.net
        self.input_norm = self.predictor.in_norm
        self.pred_norm = self.predictor.out_norm
        self.in_key, self.out_key = self.input_norm.modality, self.pred_norm.modality
        bands = {self.in_key: list(self.input_norm.bands), self.out_key: list(self.pred_norm.bands)}
        tiling = read_tiling(data)
        kwargs: dict[str, Any] = {"sar_bands": bands.get("sar")}
        if "optical" in bands:
            kwargs["optical_bands"] = tuple(bands["optical"])
        self.ds = TileDataset(data, split=split, mode="paired", labels=bool(tiling.get("classes")), **kwargs)
        if len(self.ds) == 0:
            raise InputError(f"split {split!r} of {data} has no tiles")
        norm_of = {"sar": self.ds.sar_norm, "optical": self.ds.optical_norm}
        if norm_of[self.in_key] is None or norm_of[self.out_key] is None:
            raise InputError(f"{data} has no optical tiles; the checkpoint needs {', '.join(bands['optical'])}")
        self.ds_in_norm, self.ds_norm = norm_of[self.in_key], norm_of[self.out_key]
        self.reencode_input = not same_model_range(self.ds_in_norm, self.input_norm)
        if self.reencode_input:
            reporter.warn("the tiling's input ranges differ from the checkpoint's in_norm; the input is "
                          "re-encoded with the checkpoint's ranges")
        self.reencode = not same_model_range(self.ds_norm, self.pred_norm)
        if self.reencode:
            reporter.warn("the tiling's target ranges differ from the checkpoint's out_norm; the target is "
                          "re-encoded with the checkpoint's ranges")
        self.target_norm = self.pred_norm
        self.class_names = self.ds.class_names
        self.has_labels = bool(tiling.get("classes"))
        self.opts = opts
        self.bad_nan = 0
        self.band_info = {"target": list(self.pred_norm.bands), "pred": list(self.pred_norm.bands),
                          "matched": "checkpoint", "described": {"pred": True, "target": True}}
        self.ranges_source = "checkpoint"
        self.baseline_fit = fit_from_record(net.meta.get("baselines"))  # recorded at training (None: older runs)
        self.inputs = {"mode": self.mode, "checkpoint": str(net.path), "checkpoint_sha256": net.sha256,
                       "data": str(data), "split": split, "tiles": len(self.ds),
                       "direction": net.meta.get("direction"), "model": net.meta.get("model")}

    def __len__(self) -> int:
        return len(self.ds)

    def _input(self, item: dict[str, Any]) -> np.ndarray:
        """An item's model-range input in the checkpoint's ranges, nodata −1 (as translate fills it)."""
        x = item[self.in_key].numpy()
        if not self.reencode_input:
            return x
        x = self.input_norm.encode(self.ds_in_norm.decode(x))
        x[:, ~item[f"{self.in_key}_valid"].numpy()] = -1.0
        return x

    def _run(self, idx: list[int]) -> list[Block]:
        items = [self.ds[i] for i in idx]
        inputs = np.stack([self._input(it) for it in items])
        s = self.predictor.scale
        if s > 1:  # a super-resolution checkpoint: its input is the tile's area downsampling (the SR protocol)
            n, c, h, w = inputs.shape
            if h % s or w % s:
                raise InputError(f"tiles of {h}×{w} pixels cannot be area-downsampled by the checkpoint's scale {s}")
            lr = inputs.reshape(n, c, h // s, s, w // s, s).mean(axis=(3, 5))
            y = self.predictor(np.ascontiguousarray(lr, dtype=np.float32))
            inputs = lr.repeat(s, axis=2).repeat(s, axis=3)  # shown on the tile's grid in the report
        else:
            y = self.predictor(inputs)
        out = []
        for it, xi, yi in zip(items, inputs, y):
            valid = it["valid"].numpy()
            tgt = it[self.out_key].numpy().astype(np.float32)
            if self.reencode:
                tgt = self.pred_norm.encode(self.ds_norm.decode(tgt))
            bad = int((~np.isfinite(yi).all(axis=0) & valid).sum())
            self.bad_nan += bad
            yi = yi.copy()
            yi[:, ~valid] = np.nan
            tgt[:, ~valid] = np.nan
            inp = xi.copy()
            inp[:, ~valid] = np.nan
            h, w = valid.shape
            lab = it["labels"].numpy() if "labels" in it else None
            out.append(Block(it["id"], yi, tgt, PixelWindow(0, 0, h, w), lab, inp, None))
        return out

    def blocks(self) -> Iterator[Block]:
        bs = max(1, self.opts.batch_size)
        for s in range(0, len(self.ds), bs):
            yield from self._run(list(range(s, min(s + bs, len(self.ds)))))

    def targets(self) -> Iterator[Block]:
        """Every tile's target and input without running the generator (``pred`` is the target): the pixels a
        baseline is fitted on when the checkpoint recorded none."""
        for i in range(len(self.ds)):
            it = self.ds[i]
            valid = it["valid"].numpy()
            x = self._input(it).astype(np.float32)
            tgt = it[self.out_key].numpy().astype(np.float32)
            if self.reencode:
                tgt = self.pred_norm.encode(self.ds_norm.decode(tgt))
            x[:, ~valid] = np.nan
            tgt[:, ~valid] = np.nan
            h, w = valid.shape
            yield Block(it["id"], tgt, tgt, PixelWindow(0, 0, h, w), None, x, None)

    def fetch(self, tile_id: str) -> Block:
        return self._run([self.ds.ids.index(tile_id)])[0]

    def close(self) -> None:
        for note in self.predictor.run_notes():  # an iterative predictor's statistics (first-block cache)
            self.reporter.info(note)
