"""Running sums of the metrics over blocks, and the networks (FID/CLIP features, LPIPS, segmenters) that feed them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sarkit.errors import InputError
from sarkit.raster.norm import Normalization
from sarkit.reporting import Reporter
from sarkit.eval import metrics as M
from sarkit.eval.segmetrics import IGNORE, confusion_matrix, pixel_accuracy, sms_map
from sarkit.eval.options import HALO, SEG_METRICS, SMS_MODELS, EvalOptions
from sarkit.eval.sources import Block



# ----------------------------------------------------------------------------------------------- accumulation

class _Accumulator:
    """Running sums of every requested metric, per tile, per class and over everything."""

    def __init__(self, opts: EvalOptions, num_classes: int | None) -> None:
        self.metrics = opts.metrics
        self.k = num_classes
        self.sse = self.sae = 0.0
        self.npx = 0
        self.ssim_sum, self.ssim_n = 0.0, 0
        self.total_px = 0
        self.tiles: list[dict[str, Any]] = []
        if num_classes:
            self.cls = {n: np.zeros(num_classes, dtype=np.float64) for n in ("sse", "sae", "npx", "ssim", "ssim_n")}
        self.conf = np.zeros((num_classes or 1, num_classes or 1), dtype=np.int64)
        self.sms_sum, self.sms_n = 0.0, 0

    def add(self, b: Block, seg: dict[str, Any] | None) -> dict[str, Any]:
        """Add one block: pixel errors inside the core, SSIM centres inside the core, class sums."""
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
            if self.k and lab is not None:
                lc = lab[:, HALO:HALO + smap.shape[1], HALO:HALO + smap.shape[2]]
                self._class_add("ssim", "ssim_n", smap, lc, wv)
        if self.k and lab is not None:
            self._class_add("sse", "npx", se, lab, pix)
            self._class_add("sae", None, ae, lab, pix)
        if seg is not None:
            if "pa" in self.metrics or "miou" in self.metrics:
                conf = confusion_matrix(seg["pred_cls"], seg["ref_cls"], self.k, seg["mask"]).numpy()
                self.conf += conf
                tile["pa"] = pixel_accuracy(conf)
            if "sms" in self.metrics:
                m = seg["sms"][seg["mask"]]
                self.sms_sum += float(m.double().sum())
                self.sms_n += int(m.numel())
                tile["sms"] = float(m.double().mean()) if m.numel() else float("nan")
        self.tiles.append(tile)
        return tile

    def _class_add(self, key: str, count_key: str | None, values: torch.Tensor, lab: torch.Tensor,
                   mask: torch.Tensor) -> None:
        ok = mask & (lab >= 0) & (lab < self.k)
        cls = lab[ok].long()
        self.cls[key] += torch.bincount(cls, weights=values[ok].double(), minlength=self.k).numpy()[: self.k]
        if count_key:
            self.cls[count_key] += torch.bincount(cls, minlength=self.k).numpy()[: self.k]


def _stats(values: list[float]) -> dict[str, Any]:
    """mean, std, median, min, max over finite values (+inf counted separately, NaN ignored)."""
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


# ----------------------------------------------------------------------------------------------- evaluation

def _core_rgb(arr: np.ndarray, b: Block, norm: Normalization) -> torch.Tensor:
    """(1, 3, h, w) in [0, 1] of a block's core, nodata = 0, through the RGB mapping FID uses (``fid.to_rgb``)."""
    from sarkit.eval.fid import to_rgb

    rs, cs = b.core.slices()
    x = torch.from_numpy(np.nan_to_num((arr[:, rs, cs] + 1.0) * 0.5, nan=0.0))[None]
    return to_rgb(x, norm.modality, norm.bands).clamp(0.0, 1.0)


def _core_valid(b: Block) -> torch.Tensor:
    """(1, h, w) mask of the core pixels where every band of both images holds data."""
    rs, cs = b.core.slices()
    return torch.from_numpy(np.isfinite(b.pred[:, rs, cs]).all(axis=0)
                            & np.isfinite(b.target[:, rs, cs]).all(axis=0))[None]


def _seg_for_block(b: Block, segmenter: Any, pred_norm: Normalization, target_norm: Normalization,
                   need_sms: bool, use_labels: bool, sam: Any = None) -> dict[str, Any]:
    """Classes (segmenter) and the per-pixel SMS map (segmenter, or SAM when ``sam`` is given) of a block."""
    rs, cs = b.core.slices()
    out: dict[str, Any] = {"mask": _core_valid(b)}
    if segmenter is not None:
        p = b.pred[:, rs, cs][None]
        t = b.target[:, rs, cs][None]
        deeplab_sms = need_sms and sam is None
        lp = segmenter.logits(p, pred_norm).cpu()
        out["pred_cls"] = lp.argmax(dim=1)
        lt = segmenter.logits(t, target_norm).cpu() if (deeplab_sms or not use_labels) else None
        if use_labels:
            lab = torch.from_numpy(b.labels[rs, cs][None])
            bad = lab[(lab != IGNORE) & ((lab < 0) | (lab >= segmenter.num_classes))]
            if bad.numel():
                raise InputError(f"labels hold class id {int(bad.max())} but the segmenter has "
                                 f"{segmenter.num_classes} classes ({', '.join(segmenter.classes)})")
            out["ref_cls"] = lab
        else:
            out["ref_cls"] = lt.argmax(dim=1)
        if deeplab_sms:
            out["sms"] = sms_map(lp, lt)
    if need_sms and sam is not None:
        out["sms"] = sam.sms_map(_core_rgb(b.pred, b, pred_norm), _core_rgb(b.target, b, target_norm))
    return out


def _features(b: Block, norm: Normalization, extractors: dict[str, Any], stats: dict[str, Any]) -> None:
    for which, arr in (("pred", b.pred), ("target", b.target)):
        rgb = _core_rgb(arr, b, norm)
        for name, ex in extractors.items():
            stats[name][which].update(ex(rgb))


def _make_extractors(opts: EvalOptions, n_samples: int, reporter: Reporter) -> dict[str, Any]:
    from sarkit.eval.fid import INCEPTION_DIM, ClipExtractor, InceptionExtractor, load_inception

    ex: dict[str, Any] = {}
    wanted = [m for m in ("fid", "fid-clip") if m in opts.metrics]
    if not wanted:
        return ex
    if n_samples < 2:
        raise InputError(f"FID needs at least 2 tiles, the evaluation has {n_samples}; use more or larger images")
    if "fid" in wanted:
        ex["fid"] = InceptionExtractor(load_inception(opts.fid_weights, opts.device), opts.device)
        if n_samples < INCEPTION_DIM:
            reporter.warn(f"FID from {n_samples} samples (< {INCEPTION_DIM} feature dimensions): the covariance "
                          f"is rank-deficient and FID is biased; compare only runs with the same sample count")
    if "fid-clip" in wanted:
        ex["fid-clip"] = ClipExtractor(opts.clip_model, opts.clip_weights, opts.device)
    return ex


class _LpipsStream:
    """Per-tile LPIPS in batches of same-size tiles; each value is written into its tile record on flush and
    summed weighted by the tile's valid pixels (the summary ``value``)."""

    def __init__(self, net: Any, batch_size: int) -> None:
        self.net, self.batch_size = net, max(1, batch_size)
        self.items: list[tuple[dict[str, Any], torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.wsum, self.wn, self.undefined = 0.0, 0, 0

    def add(self, tile: dict[str, Any], pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
        """Queue one tile (1, 3, h, w) pair; flush when the batch is full or the tile size changes."""
        if self.items and self.items[0][1].shape != pred.shape:
            self.flush()
        self.items.append((tile, pred, target, valid))
        if len(self.items) >= self.batch_size:
            self.flush()

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

    def value(self) -> float:
        """Σ LPIPS_tile · valid_tile / Σ valid_tile (NaN when no tile has a value)."""
        return self.wsum / self.wn if self.wn else float("nan")


def _make_lpips(opts: EvalOptions) -> tuple[_LpipsStream | None, dict[str, Any] | None]:
    if "lpips" not in opts.metrics:
        return None, None
    from sarkit.eval.lpips import load_lpips

    net, files = load_lpips(opts.lpips_weights, opts.lpips_backbone, opts.device)
    info = {"model": "lpips v0.1 alex (lin)", "weights": str(files.heads), "backbone": str(files.backbone)}
    return _LpipsStream(net, opts.batch_size), info


def _load_segmenters(opts: EvalOptions, source: Any, reporter: Reporter) -> tuple[Any, Any]:
    """The DeepLabV3 segmenter (for pa/miou, and sms unless SAM) and SAM (for sms with ``--sms-model sam``)."""
    if opts.sms_model not in SMS_MODELS:
        raise InputError(f"--sms-model must be one of {', '.join(SMS_MODELS)}, got {opts.sms_model!r}")
    sam_sms = opts.sms_model == "sam" and "sms" in opts.metrics
    if opts.sms_model == "sam" and not sam_sms:
        reporter.warn("--sms-model sam has no effect: sms is not in --metrics")
    elif opts.sam_weights is not None and not sam_sms:
        reporter.warn("--sam-weights is ignored: SMS uses the --segmenter unless --sms-model sam")
    seg_wanted = [m for m in SEG_METRICS if m in opts.metrics and not (m == "sms" and sam_sms)]
    segmenter = None
    if seg_wanted:
        if opts.segmenter is None:
            alt = " (or --sms-model sam for sms)" if "sms" in seg_wanted else ""
            raise InputError(f"{', '.join(seg_wanted)} need a segmenter: pass --segmenter RUN (a sarkit segmenter "
                             f"of the prediction's modality){alt}")
        from sarkit.eval.segmetrics import load_segmenter

        segmenter = load_segmenter(opts.segmenter, opts.device)
        if segmenter.modality != source.pred_norm.modality:
            raise InputError(f"--segmenter is for {segmenter.modality} images but the prediction is "
                             f"{source.pred_norm.modality}; pass a {source.pred_norm.modality} segmenter")
    sam = None
    if sam_sms:
        from sarkit.eval.sam import load_sam_segmenter

        sam = load_sam_segmenter(opts.sam_weights, opts.device)
    return segmenter, sam
