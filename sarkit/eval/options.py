"""Options of ``sarkit eval``: what to compute, with which weights and ranges; the metric names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


from sarkit.errors import InputError
from sarkit.eval import metrics as M


ALL_METRICS = ("psnr", "ssim", "mae", "fid", "fid-clip", "pa", "miou", "sms", "lpips")
DEFAULT_METRICS = ("psnr", "ssim", "mae")
SEG_METRICS = ("pa", "miou", "sms")
SMS_MODELS = ("deeplab", "sam")
HALO = M.SSIM_PAD
#: report.json schema; 1.1 added tiles[].lpips and the optional top-level "networks".
SCHEMA = "sarkit.eval/1.1"


@dataclass
class EvalOptions:
    """What to compute and with which weights/ranges."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    s1_range: tuple[float, float] | None = None
    s2_range: tuple[float, float] | None = None
    s2_offset: bool = False  # untagged Sentinel-2 DN carry the −1000 offset of processing baseline 04.00+
    segmenter: Path | None = None
    sms_model: str = "deeplab"  # "deeplab": the --segmenter's softmax; "sam": Segment Anything (sarkit.eval.sam)
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
    input_scene: Path | None = None  # shown beside prediction and target in the report's scene overview
    overview_px: int = 512



@dataclass
class EvalResult:
    """The report record (JSON-ready) and the thumbnails for the HTML report."""

    report: dict[str, Any]
    thumbnails: list[dict[str, Any]] = field(default_factory=list)
    overview: list[dict[str, str]] = field(default_factory=list)


def parse_metrics(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"psnr,ssim,fid"`` → validated names (``miou`` comes with ``pa``)."""
    if text is None:
        return DEFAULT_METRICS
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for m in (s.strip().lower() for s in items):
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
