"""``sarkit train``: drive any registered model over a tile directory, with resumable checkpoints.

The trainer owns data order, devices, mixed precision, distributed gradient averaging (``torchrun``),
checkpoints, resume, metrics and validation; the model (``sarkit.models``) owns its networks and its step.
One module per job:

    options.py      TrainOptions (checks itself), TrainResult, the Direction / Modality / AmpMode enums
    distributed.py  DistInfo and the collectives (barrier, gather, broadcast, all_ok)
    data.py         the tile sets and their ModelIO, DataOrder and its loader
    run.py          the run directory: config.json, resume/overwrite checks, run_finished, metrics.jsonl
    state.py        RNG states, the full training state (save, restore) and the exported networks
    samples.py      validation sample grids
    validation.py   validation metrics (the ``sarkit eval`` metrics core) and samples
    events.py       TensorBoard event files (the metrics.jsonl values, sample grids, config)
    report.py       RUN/report.html: curves, sample grids over time, timing, config (``sarkit report``)
    loop.py         train(): set-up, the run object (TrainingRun) and the step loop

Run directory ``RUN/`` (docs/train.md):
    config.json               every resolved option, model options, normalisation ranges (chosen bands only)
    metrics.jsonl             {"kind": "train", "step", losses averaged since the last line, "lr"} every
                              ``log_every`` steps, {"kind": "val", "step", "psnr", "ssim", "mae"} (or a
                              segmenter's metrics) at each validation
    samples/step-XXXXXX.png   validation tiles: input | output | target, one row per tile
    events.out.tfevents.*     TensorBoard event files (``tensorboard --logdir runs/``)
    report.html               the run report (written at the end of training)
    checkpoints/state-latest.pt   full training state (only the latest is kept: it is replaced atomically)
    checkpoints/generator.safetensors (or segmenter.safetensors)  exported networks for inference
"""

from sarkit.training.loop import train
from sarkit.training.options import AmpMode, Direction, Modality, TrainOptions, TrainResult, model_option_values
from sarkit.training.run import run_finished

__all__ = ["AmpMode", "Direction", "Modality", "TrainOptions", "TrainResult", "model_option_values", "run_finished",
           "train"]
