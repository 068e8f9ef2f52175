"""Evaluation: pixel metrics (PSNR, SSIM, MAE), FID / FID-CLIP, LPIPS, segmentation metrics (PA, mIoU, SMS with
the DeepLabV3 segmenter or Segment Anything), feature matching (PMR, IR, IR-ED), CLIP-IQA, the streaming runner over scenes, tile sets and a model on a split,
the reports it writes, comparisons of reports and quality gates."""

from sarkit.eval.metrics import mae, psnr, ssim
from sarkit.eval.options import EvalInputs, EvalOptions, EvalResult, SmsModel, metric_set
from sarkit.eval.runner import evaluate, open_source, run_eval, run_eval_report
from sarkit.eval.sources import EvalMode, EvalSource

__all__ = ["EvalInputs", "EvalMode", "EvalOptions", "EvalResult", "EvalSource", "SmsModel", "evaluate", "mae",
           "open_source", "metric_set", "psnr", "run_eval", "run_eval_report", "ssim"]
