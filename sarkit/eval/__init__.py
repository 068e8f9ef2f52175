"""Evaluation: pixel metrics (PSNR, SSIM, MAE), FID / FID-CLIP, LPIPS, segmentation metrics (PA, mIoU, SMS with
the DeepLabV3 segmenter or Segment Anything), the streaming runner over scenes, tile sets and a model on a split,
and the reports it writes."""

from .metrics import mae, psnr, ssim
from .runner import EvalOptions, EvalResult, evaluate, open_source, parse_metrics, run_eval

__all__ = ["EvalOptions", "EvalResult", "evaluate", "mae", "open_source", "parse_metrics", "psnr", "run_eval",
           "ssim"]
