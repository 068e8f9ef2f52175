"""Validation (rank 0): metrics over the first validation tiles, logged to metrics.jsonl, and a sample grid.

A translator's PSNR, SSIM and MAE come from the metrics core that ``sarkit eval`` uses
(``sarkit.eval.metrics.pixel_metrics``): images mapped from model range to [0, 1], the tile's valid mask
(both modalities hold data) as the nodata mask, SSIM over window centres whose 11×11 window is valid. Each is
computed per tile; the logged value is the mean over the tiles where it is finite (a tile without valid pixels
has none, identical images have an infinite PSNR), as the ``mean`` of ``sarkit eval``'s per-tile statistics.
A segmenter's metrics are its own (``TrainableModel.validation_metrics``), averaged over tiles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import default_collate

from sarkit.eval.metrics import finite_mean, pixel_metrics, unit_range
from sarkit.training.data import to_device
from sarkit.training.samples import sample_grid, segmenter_row, translator_row, write_sample_grid

if TYPE_CHECKING:
    from sarkit.training.loop import TrainingRun

#: Tiles per forward pass during validation, and tiles shown in the sample grid.
VAL_BATCH = 4
SAMPLE_ROWS = 4
#: The pixel metrics a translator logs, in metrics.jsonl order.
PIXEL_METRICS = ("psnr", "ssim", "mae")


def translator_metrics(out: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None
                       ) -> dict[str, torch.Tensor]:
    """Per-tile PSNR, SSIM and MAE of model-range output and target: ``pixel_metrics`` on (x + 1)/2."""
    return pixel_metrics(unit_range(out), unit_range(target), valid)


def validate(r: TrainingRun, batch: int = VAL_BATCH, n_samples: int = SAMPLE_ROWS
             ) -> tuple[dict[str, float], list[list[torch.Tensor]]]:
    """Metrics over the validation tiles and sample rows (input | output | target)."""
    model = r.model
    sums: dict[str, float] = {}
    per_tile: dict[str, list[torch.Tensor]] = {k: [] for k in PIXEL_METRICS}
    count = 0
    rows: list[list[torch.Tensor]] = []
    was = model.training
    model.eval()
    try:
        for lo in range(0, len(r.val_items), batch):
            b = to_device(default_collate(r.val_items[lo:lo + batch]), r.device, r.channels_last)
            n = next(v for v in b.values() if torch.is_tensor(v)).shape[0]
            x, y = model.validation_inputs(b)
            with torch.no_grad(), r.tools.autocast():
                out = model.predict(x)
            out = out.float()
            for k, v in model.validation_metrics(b).items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            if not r.data.segmenter:
                for k, v in translator_metrics(out, y, b.get("valid")).items():
                    per_tile[k].append(v)
            count += n
            for i in range(min(n, n_samples - len(rows))):
                rows.append(_sample_row(r, x[i:i + 1], out[i:i + 1], y[i:i + 1]))
    finally:
        model.train(was)
    metrics = {k: v / max(count, 1) for k, v in sums.items()}
    if not r.data.segmenter:
        metrics.update({k: finite_mean(torch.cat(v)) for k, v in per_tile.items() if v})
    return metrics, rows


def _sample_row(r: TrainingRun, x: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """One tile's grid row, images or class maps after the model's task."""
    io = r.data.io
    in_bands = io.in_norm.get("bands", [])
    if r.data.segmenter:
        return segmenter_row(x, out, y, in_bands, int(io.num_classes or 1))
    return translator_row(x, out, y, in_bands, io.out_norm.get("bands", []))


def run_validation(r: TrainingRun, step: int) -> dict[str, float]:
    """Validate (rank 0), log the metrics (metrics.jsonl, TensorBoard) and write RUN/samples/step-XXXXXX.png
    (and the same grid as TensorBoard's ``val/samples`` image)."""
    metrics, rows = validate(r)
    r.log.write({"kind": "val", "step": step, **metrics})
    grid = sample_grid(rows)
    write_sample_grid(r.dir / "samples" / f"step-{step:06d}.png", grid)
    if r.events is not None:
        r.events.image("val/samples", grid, step)
    return metrics


__all__ = ["PIXEL_METRICS", "run_validation", "translator_metrics", "validate"]
