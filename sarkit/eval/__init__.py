"""Evaluation: pixel metrics (PSNR, SSIM, MAE), FID / FID-CLIP, LPIPS, segmentation metrics (PA, mIoU, SMS with
the DeepLabV3 segmenter or Segment Anything), the streaming runner over scenes, tile sets and a model on a split,
and the reports it writes."""

from sarkit.eval.metrics import mae, psnr, ssim
from sarkit.eval.options import EvalOptions, EvalResult, parse_metrics
from sarkit.eval.runner import evaluate, open_source, run_eval

__all__ = ["EvalOptions", "EvalResult", "evaluate", "mae", "open_source", "parse_metrics", "psnr", "run_eval",
           "ssim"]
