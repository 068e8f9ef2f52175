"""Streaming sums of every metric over the blocks of a source, and the networks that feed them.

* ``Accumulator``: pixel errors (PSNR, MAE), SSIM window centres, per-class sums, the confusion matrix (PA,
  mIoU) and SMS, per tile and over everything; ``summary`` and ``per_class`` turn the sums into report values.
* ``FeatureStreams``: Inception / CLIP features of every block into running means and covariances (FID).
* ``LpipsStream``: per-tile LPIPS in batches of equal-size tiles.
* ``Segmenters``: the DeepLabV3 segmenter and/or Segment Anything, and a block's classes and SMS map.
* In their own modules, on the same block helpers (``core_rgb``, ``core_valid``, ``tile_stats``):
  ``matching.MatchingStream`` (per-tile SIFT counts, PMR, IR, IR-ED) and ``clip_iqa.ClipIqaStream`` (per-tile
  CLIP-IQA in batches).

All values are in normalised [0, 1] = (model + 1) / 2. A pixel counts when it lies in the block's core and every
band of both images is finite there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from sarkit.errors import InputError
from sarkit.raster.norm import Normalization
from sarkit.reporting import Reporter
from sarkit.eval import metrics as M
from sarkit.eval.segmetrics import IGNORE, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy, sms_map
from sarkit.eval.options import HALO, EvalOptions, SmsModel
from sarkit.eval.sources import Block, EvalSource

if TYPE_CHECKING:
    from sarkit.eval.sam import SamSegmenter
    from sarkit.eval.segmetrics import Segmenter


# ----------------------------------------------------------------------------------------------- block helpers

def core_rgb(arr: np.ndarray, b: Block, norm: Normalization) -> torch.Tensor:
    """(1, 3, h, w) in [0, 1] of a block's core, nodata = 0, through the RGB mapping FID uses (``fid.to_rgb``)."""
    from sarkit.eval.fid import to_rgb

    rs, cs = b.core.slices()
    x = torch.from_numpy(np.nan_to_num((arr[:, rs, cs] + 1.0) * 0.5, nan=0.0))[None]
    return to_rgb(x, norm.modality, norm.bands).clamp(0.0, 1.0)


def core_valid(b: Block) -> torch.Tensor:
    """(1, h, w) mask of the core pixels where every band of both images holds data."""
    rs, cs = b.core.slices()
    return torch.from_numpy(np.isfinite(b.pred[:, rs, cs]).all(axis=0)
                            & np.isfinite(b.target[:, rs, cs]).all(axis=0))[None]


def tile_stats(values: Sequence[float | None]) -> dict[str, Any]:
    """n, n_inf, mean, std, median, min, max over per-tile values: +inf counted in n and n_inf only, NaN and
    None left out."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    n_inf = int(np.isposinf(a).sum())
    f = a[np.isfinite(a)]
    out: dict[str, Any] = {"n": int(a[~np.isnan(a)].size), "n_inf": n_inf}
    if f.size:
        out.update(mean=float(f.mean()), std=float(f.std()), median=float(np.median(f)), min=float(f.min()),
                   max=float(f.max()))
    else:
        out.update(mean=None, std=None, median=None, min=None, max=None)
    return out


@dataclass
class BlockSegmentation:
    """A block core's segmentation: ``mask`` (1, h, w) of counted pixels, the prediction's classes and the
    reference classes (labels, or the segmenter on the target) (1, h, w), and the SMS map (1, h, w)."""

    mask: torch.Tensor
    pred_cls: torch.Tensor | None = None
    ref_cls: torch.Tensor | None = None
    sms: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------- accumulation

class Accumulator:
    """Running sums of the requested ``metrics`` over blocks: per tile (``tiles``, the report's rows), per class
    (labels with ``num_classes`` ids) and over everything.

    Over everything: ``sse``/``sae`` Σ of the band-mean squared/absolute error over ``npx`` valid pixels (PSNR =
    10·log10(npx / sse), MAE = sae / npx) of ``total_px`` core pixels, ``ssim_sum`` over ``ssim_n`` valid window
    centres, ``conf`` the K×K confusion matrix (PA, mIoU), ``sms_sum`` over ``sms_n`` pixels.
    """

    def __init__(self, metrics: Sequence[str], num_classes: int | None) -> None:
        self.metrics = tuple(metrics)
        self.num_classes = num_classes
        self.sse = self.sae = 0.0
        self.npx = 0
        self.ssim_sum, self.ssim_n = 0.0, 0
        self.total_px = 0
        self.tiles: list[dict[str, Any]] = []
        if num_classes:
            self.cls = {n: np.zeros(num_classes, dtype=np.float64) for n in ("sse", "sae", "npx", "ssim", "ssim_n")}
        self.conf = np.zeros((num_classes or 1, num_classes or 1), dtype=np.int64)
        self.sms_sum, self.sms_n = 0.0, 0

    def add(self, b: Block, seg: BlockSegmentation | None) -> dict[str, Any]:
        """Add one block (pixel errors and SSIM centres inside the core, class sums, segmentation); return its
        tile record."""
        p = torch.from_numpy((b.pred + 1.0) * 0.5).unsqueeze(0)
        t = torch.from_numpy((b.target + 1.0) * 0.5).unsqueeze(0)
        valid = (torch.isfinite(p).all(dim=1) & torch.isfinite(t).all(dim=1))
        core = torch.zeros_like(valid)
        rs, cs = b.core.slices()
        core[:, rs, cs] = True
        pix = valid & core
        se, ae = M.error_maps(p, t, valid)
        n = int(pix.sum())
        tile: dict[str, Any] = {"id": b.id, "valid_fraction": n / max(1, b.core.height * b.core.width)}
        if b.window is not None:
            tile.update(row_off=b.window.row_off, col_off=b.window.col_off, height=b.window.height,
                        width=b.window.width)
        self.total_px += b.core.height * b.core.width
        sse, sae = float(se[pix].double().sum()), float(ae[pix].double().sum())
        self.sse += sse
        self.sae += sae
        self.npx += n
        if "psnr" in self.metrics:
            tile["psnr"] = M.psnr_from_mse(sse / n) if n else float("nan")
        if "mae" in self.metrics:
            tile["mae"] = sae / n if n else float("nan")
        lab = torch.from_numpy(b.labels).unsqueeze(0) if b.labels is not None else None
        if "ssim" in self.metrics:
            smap = M.ssim_map(M.fill_invalid(p, valid), M.fill_invalid(t, valid))
            centres = core[:, HALO:HALO + smap.shape[1], HALO:HALO + smap.shape[2]]  # SSIM centres in the core
            wv = M.window_valid(valid) & centres
            cnt = int(wv.sum())
            s = float(smap[wv].double().sum())
            self.ssim_sum += s
            self.ssim_n += cnt
            tile["ssim"] = s / cnt if cnt else float("nan")
            if self.num_classes and lab is not None:
                lc = lab[:, HALO:HALO + smap.shape[1], HALO:HALO + smap.shape[2]]
                self._class_add("ssim", "ssim_n", smap, lc, wv)
        if self.num_classes and lab is not None:
            self._class_add("sse", "npx", se, lab, pix)
            self._class_add("sae", None, ae, lab, pix)
        if seg is not None:
            if "pa" in self.metrics or "miou" in self.metrics:
                conf = confusion_matrix(seg.pred_cls, seg.ref_cls, self.num_classes, seg.mask).numpy()
                self.conf += conf
                tile["pa"] = pixel_accuracy(conf)
            if "sms" in self.metrics:
                m = seg.sms[seg.mask]
                self.sms_sum += float(m.double().sum())
                self.sms_n += int(m.numel())
                tile["sms"] = float(m.double().mean()) if m.numel() else float("nan")
        self.tiles.append(tile)
        return tile

    def _class_add(self, key: str, count_key: str | None, values: torch.Tensor, lab: torch.Tensor,
                   mask: torch.Tensor) -> None:
        """Σ ``values`` per label class over ``mask`` into ``cls[key]`` (and the pixel count into
        ``cls[count_key]``); ids outside [0, K) are left out."""
        k = self.num_classes
        ok = mask & (lab >= 0) & (lab < k)
        cls = lab[ok].long()
        self.cls[key] += torch.bincount(cls, weights=values[ok].double(), minlength=k).numpy()[:k]
        if count_key:
            self.cls[count_key] += torch.bincount(cls, minlength=k).numpy()[:k]

    def summary(self, reporter: Reporter) -> dict[str, Any]:
        """Pixel and segmentation metrics over everything (``value``) with their per-tile statistics."""
        out: dict[str, Any] = {}
        per_tile = {m: [t.get(m) for t in self.tiles] for m in ("psnr", "ssim", "mae", "pa", "sms")}
        if "psnr" in self.metrics:
            out["psnr"] = {"value": M.psnr_from_mse(self.sse / self.npx), **tile_stats(per_tile["psnr"])}
        if "ssim" in self.metrics:
            val = self.ssim_sum / self.ssim_n if self.ssim_n else float("nan")
            if not self.ssim_n:
                reporter.warn("SSIM undefined: no 11×11 window is fully valid (tiles too small or too much nodata)")
            out["ssim"] = {"value": val, **tile_stats(per_tile["ssim"])}
        if "mae" in self.metrics:
            out["mae"] = {"value": self.sae / self.npx, **tile_stats(per_tile["mae"])}
        if "pa" in self.metrics:
            out["pa"] = {"value": pixel_accuracy(self.conf), **tile_stats(per_tile["pa"])}
        if "miou" in self.metrics:
            out["miou"] = {"value": mean_iou(self.conf)}
        if "sms" in self.metrics:
            out["sms"] = {"value": self.sms_sum / self.sms_n if self.sms_n else float("nan"),
                          **tile_stats(per_tile["sms"])}
        return out

    def per_class(self, classes: Sequence[str] | None, with_iou: bool) -> list[dict[str, Any]]:
        """One row per label class with pixels: pixels, PSNR, MAE, SSIM (and IoU of the segmenter's classes when
        ``with_iou``); a class without pixels appears only with a finite IoU."""
        rows: list[dict[str, Any]] = []
        if not self.num_classes:
            return rows
        c = self.cls
        iou = iou_per_class(self.conf) if with_iou and self.conf.sum() else None
        for k in range(self.num_classes):
            if c["npx"][k] == 0 and (iou is None or not np.isfinite(iou[k])):
                continue
            row: dict[str, Any] = {"class": classes[k] if classes and k < len(classes) else str(k), "id": k,
                                   "pixels": int(c["npx"][k])}
            if c["npx"][k]:
                if "psnr" in self.metrics:
                    row["psnr"] = M.psnr_from_mse(c["sse"][k] / c["npx"][k])
                if "mae" in self.metrics:
                    row["mae"] = c["sae"][k] / c["npx"][k]
            if "ssim" in self.metrics and c["ssim_n"][k]:
                row["ssim"] = c["ssim"][k] / c["ssim_n"][k]
            if iou is not None:
                row["iou"] = float(iou[k])
            rows.append(row)
        return rows


# ----------------------------------------------------------------------------------------------- FID features

class FeatureStreams:
    """Running mean and covariance (``fid.FeatureStats``) of each network's features of every block's prediction
    and target: FID = Fréchet distance of the two Gaussians."""

    def __init__(self, extractors: dict[str, Any]) -> None:
        from sarkit.eval.fid import FeatureStats

        self.extractors = extractors
        self.stats = {name: {"pred": FeatureStats(ex.dim), "target": FeatureStats(ex.dim)}
                      for name, ex in extractors.items()}

    @classmethod
    def load(cls, opts: EvalOptions, n_samples: int, reporter: Reporter) -> FeatureStreams:
        """The feature networks of the requested ``fid`` (Inception-v3) and ``fid-clip`` (open_clip); none when
        neither is requested."""
        wanted = [m for m in ("fid", "fid-clip") if m in opts.metrics]
        if not wanted:
            return cls({})
        from sarkit.eval.fid import INCEPTION_DIM, ClipExtractor, InceptionExtractor, load_inception

        if n_samples < 2:
            raise InputError(f"FID needs at least 2 tiles, the evaluation has {n_samples}; use more or larger "
                             f"images")
        ex: dict[str, Any] = {}
        if "fid" in wanted:
            ex["fid"] = InceptionExtractor(load_inception(opts.fid_weights, opts.device), opts.device)
            if n_samples < INCEPTION_DIM:
                reporter.warn(f"FID from {n_samples} samples (< {INCEPTION_DIM} feature dimensions): the "
                              f"covariance is rank-deficient and FID is biased; compare only runs with the same "
                              f"sample count")
        if "fid-clip" in wanted:
            ex["fid-clip"] = ClipExtractor(opts.clip_model, opts.clip_weights, opts.device)
        return cls(ex)

    def __bool__(self) -> bool:
        return bool(self.extractors)

    def add(self, b: Block, norm: Normalization) -> None:
        """Features of the block core's prediction and target (RGB through ``fid.to_rgb`` under ``norm``)."""
        for which, arr in (("pred", b.pred), ("target", b.target)):
            rgb = core_rgb(arr, b, norm)
            for name, ex in self.extractors.items():
                self.stats[name][which].update(ex(rgb))

    def summary(self) -> dict[str, Any]:
        """{name: {"value": Fréchet distance, "n": samples}} per feature network."""
        from sarkit.eval.fid import frechet_distance

        out: dict[str, Any] = {}
        for name, st in self.stats.items():
            mu1, s1 = st["pred"].mean_cov()
            mu2, s2 = st["target"].mean_cov()
            out[name] = {"value": frechet_distance(mu1, s1, mu2, s2), "n": st["pred"].n}
        return out


# ----------------------------------------------------------------------------------------------- LPIPS

class LpipsStream:
    """Per-tile LPIPS in batches of same-size tiles; each value is written into its tile record on flush and
    summed weighted by the tile's valid pixels (the summary ``value``)."""

    def __init__(self, net: Any, batch_size: int, network: dict[str, Any] | None = None) -> None:
        self.net, self.batch_size = net, max(1, batch_size)
        self.network = network or {}  # report.json networks.lpips: model, heads and backbone files
        self.items: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.wsum, self.wn, self.undefined = 0.0, 0, 0

    @classmethod
    def load(cls, opts: EvalOptions) -> LpipsStream | None:
        """The stream with the local LPIPS weights when ``lpips`` is requested, else None."""
        if "lpips" not in opts.metrics:
            return None
        from sarkit.eval.lpips import load_lpips

        net, files = load_lpips(opts.lpips_weights, opts.lpips_backbone, opts.device)
        info = {"model": "lpips v0.1 alex (lin)", "weights": str(files.heads), "backbone": str(files.backbone)}
        return cls(net, opts.batch_size, info)

    def add(self, tile: dict[str, Any], pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        """Queue one tile (1, 3, h, w) pair; flush when the batch is full or the tile size changes."""
        if self.items and self.items[0][1].shape != pred.shape:
            self.flush()
        self.items.append((tile, pred, target, valid))
        if len(self.items) >= self.batch_size:
            self.flush()

    def add_block(self, tile: dict[str, Any], b: Block, norm: Normalization) -> None:
        """Queue a block's core: prediction and target as RGB under ``norm``, and its valid mask."""
        self.add(tile, core_rgb(b.pred, b, norm), core_rgb(b.target, b, norm), core_valid(b))

    def flush(self) -> None:
        """Run the queued tiles through LPIPS in one batch."""
        if not self.items:
            return
        tiles, p, t, v = zip(*self.items)
        valid = torch.cat(v)
        d = self.net(torch.cat(p), torch.cat(t), valid)
        for tile, val, n in zip(tiles, d.tolist(), valid.flatten(1).sum(dim=1).tolist()):
            tile["lpips"] = val
            if math.isfinite(val):
                self.wsum += val * n
                self.wn += int(n)
            else:
                self.undefined += 1
        self.items.clear()

    def finish(self, reporter: Reporter) -> None:
        """Flush the last batch; warn about the tiles LPIPS is undefined for."""
        self.flush()
        if self.undefined:
            from sarkit.eval.lpips import MIN_SIZE

            reporter.warn(f"LPIPS undefined for {self.undefined} tiles (smaller than {MIN_SIZE} px on a side, or "
                          f"without valid pixels)")

    def value(self) -> float:
        """Σ LPIPS_tile · valid_tile / Σ valid_tile (NaN when no tile has a value)."""
        return self.wsum / self.wn if self.wn else float("nan")

    def summary(self, tiles: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The weighted ``value`` with the per-tile statistics of ``tiles``."""
        return {"value": self.value(), **tile_stats([t.get("lpips") for t in tiles])}


# ----------------------------------------------------------------------------------------------- segmenters

@dataclass
class Segmenters:
    """The networks of the segmentation metrics: ``deeplab``, the ``--segmenter`` (pa, miou, and sms unless
    SAM), and ``sam``, Segment Anything (sms with ``--sms-model sam``). PA/mIoU compare the segmenter's classes on
    the prediction with the labels (``use_labels``) or with its classes on the target."""

    deeplab: Segmenter | None = None
    sam: SamSegmenter | None = None
    need_sms: bool = False
    use_labels: bool = False

    @classmethod
    def load(cls, opts: EvalOptions, source: EvalSource, reporter: Reporter) -> Segmenters:
        """Load the networks the requested metrics need (warning about SAM options that have no effect)."""
        sam_sms = opts.sam_sms
        if opts.sms_model is SmsModel.SAM and not sam_sms:
            reporter.warn("--sms-model sam has no effect: sms is not in --metrics")
        elif opts.sam_weights is not None and not sam_sms:
            reporter.warn("--sam-weights is ignored: SMS uses the --segmenter unless --sms-model sam")
        opts.check_segmenter()
        segmenter = None
        if opts.segmenter_metrics:
            from sarkit.eval.segmetrics import load_segmenter

            segmenter = load_segmenter(opts.segmenter, opts.device)
            modality = source.pred_norm.modality
            if segmenter.modality != modality:
                raise InputError(f"--segmenter is for {segmenter.modality} images but the prediction is "
                                 f"{modality}; pass a {modality} segmenter")
        sam = None
        if sam_sms:
            from sarkit.eval.sam import load_sam_segmenter

            sam = load_sam_segmenter(opts.sam_weights, opts.device)
        return cls(segmenter, sam, "sms" in opts.metrics, segmenter is not None and source.has_labels)

    def classes(self, label_classes: list[str] | None) -> list[str] | None:
        """Class names of the per-class rows: the segmenter's when there is one, else the labels'."""
        return self.deeplab.classes if self.deeplab is not None else label_classes

    def for_block(self, b: Block, pred_norm: Normalization, target_norm: Normalization) -> BlockSegmentation | None:
        """Classes (segmenter) and the per-pixel SMS map (segmenter, or SAM) of a block's core; None without
        networks."""
        if self.deeplab is None and self.sam is None:
            return None
        rs, cs = b.core.slices()
        out = BlockSegmentation(core_valid(b))
        seg = self.deeplab
        if seg is not None:
            p = b.pred[:, rs, cs][None]
            t = b.target[:, rs, cs][None]
            deeplab_sms = self.need_sms and self.sam is None
            lp = seg.logits(p, pred_norm).cpu()
            out.pred_cls = lp.argmax(dim=1)
            lt = seg.logits(t, target_norm).cpu() if (deeplab_sms or not self.use_labels) else None
            if self.use_labels:
                lab = torch.from_numpy(b.labels[rs, cs][None])
                bad = lab[(lab != IGNORE) & ((lab < 0) | (lab >= seg.num_classes))]
                if bad.numel():
                    raise InputError(f"labels hold class id {int(bad.max())} but the segmenter has "
                                     f"{seg.num_classes} classes ({', '.join(seg.classes)})")
                out.ref_cls = lab
            else:
                out.ref_cls = lt.argmax(dim=1)
            if deeplab_sms:
                out.sms = sms_map(lp, lt)
        if self.need_sms and self.sam is not None:
            out.sms = self.sam.sms_map(core_rgb(b.pred, b, pred_norm), core_rgb(b.target, b, target_norm))
        return out

    def record(self) -> dict[str, Any] | None:
        """report.json ``segmentation``: the segmenter's file, SHA-256, classes and the PA/mIoU reference."""
        if self.deeplab is None:
            return None
        s = self.deeplab
        return {"segmenter": str(s.path), "sha256": s.sha256, "classes": s.classes,
                "reference": "labels" if self.use_labels else "segmenter(target)"}

    def sms_network(self) -> dict[str, Any]:
        """report.json ``networks.sms``: SAM's description, or the DeepLab segmenter's file."""
        if self.sam is not None:
            return self.sam.describe()
        assert self.deeplab is not None, "sms without SAM needs the segmenter (EvalOptions.check_segmenter)"
        return {"model": "deeplab", "weights": str(self.deeplab.path)}
