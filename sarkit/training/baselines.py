"""The trivial baselines of a translator's training data, recorded in its exported generator (``baselines``).

Fitted once per run, at its first export, on a seeded sample (``sarkit.eval.baselines.FIT_PIXELS`` pixels of at
most ``FIT_TILES`` train tiles, read paired and without augmentation) of the pixels where both modalities hold
data, in the [0, 1] space ``sarkit eval`` measures in: the constant colour (per-band mean of the targets) and the
per-pixel linear map (least squares of each target band on the input bands and 1). ``sarkit eval`` reads them
back and reports both next to the model, and the model's gain over the better one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sarkit.eval.baselines import FIT_PIXELS, FIT_TILES, FROM_TRAINING, fit_baselines, sample_pixels
from sarkit.models.base import Task


def fit_training_baselines(opts: Any, io: Any, max_pixels: int = FIT_PIXELS, max_tiles: int = FIT_TILES,
                           seed: int | None = None) -> dict[str, Any] | None:
    """The ``baselines`` record of a translator run (``TrainOptions`` ``opts``, ``ModelIO`` ``io``): both
    baselines fitted on the train split's tiles; None when the split yields no valid pixel."""
    from sarkit.data.dataset import TileDataset

    ds = TileDataset(opts.data_dirs, split="train", mode="paired", augment=False, seed=opts.seed,
                     sar_bands=list(opts.sar_bands) if opts.sar_bands else None,
                     optical_bands=tuple(opts.optical_bands), labels=False)
    if len(ds) == 0:
        return None
    rng = np.random.default_rng(opts.seed if seed is None else seed)
    picks = sorted(rng.permutation(len(ds))[:max_tiles].tolist())
    x_key, y_key = ("optical", "sar") if str(io.direction) == "opt2sar" else ("sar", "optical")
    items = []
    for i in picks:
        it = ds[i]
        items.append({"x": it[x_key].numpy(), "y": it[y_key].numpy(), "valid": it["valid"].numpy()})
    x01, y01 = sample_pixels(items, max_pixels, opts.seed)
    if not len(y01):
        return None
    fit = fit_baselines(y01, x01, io.out_norm["bands"], io.in_norm["bands"], source=FROM_TRAINING,
                        out_norm=io.out_norm, in_norm=io.in_norm)
    return fit.to_dict()


def run_baselines(r: Any) -> dict[str, Any] | None:
    """The ``baselines`` record of training run ``r`` (a ``TrainingRun``), fitted at the first call and kept on
    the run; None for segmenters."""
    if r.model.task is not Task.TRANSLATOR:
        return None
    cache = vars(r)
    if "_baselines" not in cache:
        cache["_baselines"] = fit_training_baselines(r.opts, r.model.io)
    return cache["_baselines"]
