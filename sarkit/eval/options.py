"""Options of ``sarkit eval``: the metric names, what to evaluate (``EvalInputs``), what to compute and with which
weights and ranges (``EvalOptions``), and what comes back (``EvalResult``). Both option classes check themselves
on construction and raise ``InputError`` with the CLI's one-line messages."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

from sarkit.errors import InputError
from sarkit.raster.norm import check_range
from sarkit.eval import metrics as M

#: Every metric, in the column order of summaries and comparisons.
ALL_METRICS = ("psnr", "ssim", "mae", "fid", "fid-clip", "pa", "miou", "sms", "lpips", "pmr", "ir", "ir_ed",
               "clip_iqa")
DEFAULT_METRICS = ("psnr", "ssim", "mae")
#: The metrics of a segmenter's classes / probabilities (``pa`` brings ``miou``).
SEG_METRICS = ("pa", "miou", "sms")
#: The better direction of every metric (quality gates, best-of marks in comparisons, arrows in tables).
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "mae": False, "fid": False, "fid-clip": False, "pa": True,
                    "miou": True, "sms": False, "lpips": False, "pmr": True, "ir": True, "ir_ed": True,
                    "clip_iqa": True}
#: The model's gains over the better trivial baseline (``sarkit.eval.baselines``): positive = the model is better.
GAIN_METRICS = ("gain_psnr", "gain_ssim", "gain_mae", "gain_lpips")
HIGHER_IS_BETTER.update({g: True for g in GAIN_METRICS})
#: How tables name the metrics.
LABELS = {"psnr": "PSNR", "ssim": "SSIM", "mae": "MAE", "fid": "FID", "fid-clip": "FID-CLIP", "pa": "PA",
          "miou": "mIoU", "sms": "SMS", "lpips": "LPIPS", "pmr": "PMR", "ir": "IR", "ir_ed": "IR-ED",
          "clip_iqa": "CLIP-IQA", "gain_psnr": "gain PSNR", "gain_ssim": "gain SSIM", "gain_mae": "gain MAE",
          "gain_lpips": "gain LPIPS"}
#: Pixels read around every scene window so that SSIM sees whole 11×11 windows at the window's edge.
HALO = M.SSIM_PAD
#: report.json schema; 1.1 added tiles[].lpips and the optional top-level "networks"; 1.2 "bands" (the bands and
#: ranges of every metric) and inputs.input (the translated scene); 1.3 pmr, ir, ir_ed (with "matching") and
#: clip_iqa (with networks.clip_iqa); 1.4 "baselines" (constant colour, per-pixel linear map) and the summary's
#: gain_psnr, gain_ssim, gain_mae, gain_lpips over the better baseline.
SCHEMA = "sarkit.eval/1.4"


class SmsModel(str, Enum):
    """The network whose class probabilities F enter SMS; the value is the ``--sms-model`` string."""

    DEEPLAB = "deeplab"  # the --segmenter's softmax (sarkit.eval.segmetrics)
    SAM = "sam"  # Segment Anything's prompt partition (sarkit.eval.sam)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | SmsModel) -> SmsModel:
        """A member, or its CLI string in any case → the member (``InputError`` naming the choices otherwise)."""
        if isinstance(value, cls):
            return value
        text = value.strip().lower() if isinstance(value, str) else value
        for m in cls:
            if m.value == text:
                return m
        raise InputError(f"--sms-model must be one of {', '.join(m.value for m in cls)}, got {value!r}")


def _check_positive(value: int, option: str) -> int:
    """An integer ≥ 1."""
    try:
        n = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        n = None
    if n is None or n < 1:
        raise InputError(f"{option} must be an integer of at least 1, got {value!r}")
    return int(n)


def _path(p: Path | str | None) -> Path | None:
    return None if p is None else Path(p)


@dataclass
class EvalOptions:
    """What to compute and with which weights/ranges (checked on construction)."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    s1_range: tuple[float, float] | None = None
    s2_range: tuple[float, float] | None = None
    s2_offset: bool = False  # untagged Sentinel-2 DN carry the −1000 offset of processing baseline 04.00+
    segmenter: Path | None = None
    sms_model: SmsModel = SmsModel.DEEPLAB  # F of SMS; the CLI string ("deeplab", "sam") is accepted too
    sam_weights: Path | None = None
    lpips_weights: Path | None = None
    lpips_backbone: Path | None = None
    fid_weights: Path | None = None
    clip_weights: Path | None = None
    clip_model: str = "ViT-B-32"
    batch_size: int = 8
    device: str = "cpu"
    amp: str = "off"  # --checkpoint: autocast of the generator (off = fp32, the numbers eval always reported)
    tile_size: int = 256
    grid_tiles: int = 3
    thumb_px: int = 128
    input_scene: Path | None = None  # the translated input (--input): report thumbnails and scene overview
    overview_px: int = 512
    bands: tuple[str, ...] | None = None  # --bands: the prediction's bands to compare (names or 1-based numbers)
    allow_ungeoreferenced: bool = False  # compare rasters without a CRS pixel by pixel (same size only)
    sampling: Any = None  # --checkpoint of a diffusion model: sarkit.infer.diffusion.SamplingOptions (None = its own)

    def __post_init__(self) -> None:
        self.metrics = tuple(self.metrics)
        if not self.metrics:
            raise InputError("--metrics is empty; e.g. --metrics psnr,ssim,mae")
        for m in self.metrics:
            if m not in ALL_METRICS:
                raise InputError(f"unknown metric {m!r}; choose from {', '.join(ALL_METRICS)}")
        self.s1_range = check_range(self.s1_range, "--s1-range")
        self.s2_range = check_range(self.s2_range, "--s2-range")
        self.sms_model = SmsModel.parse(self.sms_model)
        for name in ("segmenter", "sam_weights", "lpips_weights", "lpips_backbone", "fid_weights", "clip_weights",
                     "input_scene"):
            setattr(self, name, _path(getattr(self, name)))
        if not isinstance(self.clip_model, str) or not self.clip_model.strip():
            raise InputError("--clip-model must name an open_clip model or a model-config JSON")
        self.batch_size = _check_positive(self.batch_size, "--batch-size")
        self.tile_size = _check_positive(self.tile_size, "tile_size")
        self.grid_tiles = _check_positive(self.grid_tiles, "grid_tiles")
        self.thumb_px = _check_positive(self.thumb_px, "thumb_px")
        self.overview_px = _check_positive(self.overview_px, "overview_px")
        self.bands = check_bands(self.bands)
        self.allow_ungeoreferenced = bool(self.allow_ungeoreferenced)
        self.check_segmenter()

    def check_segmenter(self) -> None:
        """``InputError`` when a requested metric needs the ``--segmenter`` and none is given."""
        if (need := self.segmenter_metrics) and self.segmenter is None:
            alt = " (or --sms-model sam for sms)" if "sms" in need else ""
            raise InputError(f"{', '.join(need)} need a segmenter: pass --segmenter RUN (a sarkit segmenter of the "
                             f"prediction's modality){alt}")

    @property
    def sam_sms(self) -> bool:
        """SMS is computed, with Segment Anything."""
        return self.sms_model is SmsModel.SAM and "sms" in self.metrics

    @property
    def segmenter_metrics(self) -> tuple[str, ...]:
        """The requested metrics that need the ``--segmenter``: pa, miou, and sms unless SAM computes it."""
        return tuple(m for m in SEG_METRICS if m in self.metrics and not (m == "sms" and self.sam_sms))


@dataclass
class EvalInputs:
    """What is evaluated: a prediction and a target (two scenes or two tile folders, optional labels), or a
    generator ``checkpoint`` run on a ``split`` of a tile folder ``data`` (checked on construction)."""

    pred: Path | None = None
    target: Path | None = None
    labels: Path | None = None
    checkpoint: Path | None = None
    data: Path | None = None
    split: str = "test"

    def __post_init__(self) -> None:
        for name in ("pred", "target", "labels", "checkpoint", "data"):
            setattr(self, name, _path(getattr(self, name)))
        if self.checkpoint is not None:
            if self.data is None:
                raise InputError("--checkpoint needs --data TILES (a directory written by sarkit tile) and --split")
            if self.pred is not None:
                raise InputError("give either --checkpoint with --data, or --pred with --target, not both")
        elif self.pred is None or self.target is None:
            raise InputError("nothing to evaluate: pass --pred and --target (files or directories), or "
                             "--checkpoint RUN --data TILES")

    @property
    def is_model(self) -> bool:
        """A generator on a split (else two rasters or two tile folders)."""
        return self.checkpoint is not None


@dataclass
class EvalResult:
    """The report record (JSON-ready) and the thumbnails for the HTML report."""

    report: dict[str, Any]
    thumbnails: list[dict[str, Any]] = field(default_factory=list)
    overview: list[dict[str, str]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        """``report["summary"]``: metric → {value, per-tile statistics}."""
        return self.report["summary"]


def check_bands(bands: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """``--bands``: band names or 1-based numbers, at least one, none twice (None = every matched band)."""
    if bands is None:
        return None
    if isinstance(bands, str):
        bands = (bands,)
    out = tuple(str(b).strip() for b in bands)
    if not out or not all(out):
        raise InputError(f"--bands needs band names or numbers such as B4,B3,B2, got {','.join(out)!r}")
    if len({b.upper() for b in out}) != len(out):
        raise InputError(f"--bands names a band twice: {','.join(out)}")
    return out


def metric_set(names: Sequence[str] | None, segmenter: bool = False) -> tuple[str, ...]:
    """The metrics to compute from their names (case ignored, duplicates dropped, ``miou`` comes with ``pa``);
    ``None`` → the defaults, plus pa, miou and sms when a ``segmenter`` is given."""
    if names is None:
        return DEFAULT_METRICS + (SEG_METRICS if segmenter else ())
    if isinstance(names, str):  # one name: comma lists are split by the command line (sarkit.cli_params)
        names = (names,)
    out: list[str] = []
    for m in (str(s).strip().lower() for s in names):
        if not m:
            continue
        if m not in ALL_METRICS:
            raise InputError(f"unknown metric {m!r}; choose from {', '.join(ALL_METRICS)}")
        if m not in out:
            out.append(m)
        if m == "pa" and "miou" not in out:
            out.append("miou")
    if not out:
        raise InputError("--metrics is empty; e.g. --metrics psnr,ssim,mae")
    return tuple(out)
