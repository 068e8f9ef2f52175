"""TensorBoard event files of a training run (``RUN/events.out.tfevents.*``), written beside metrics.jsonl.

The same records as metrics.jsonl: a train line's losses as ``train/<loss>`` and its learning rate as
``train/lr``, a validation line's metrics as ``val/<metric>``, the validation sample grid as the image
``val/samples`` and config.json as the text ``config``. ``tensorboard --logdir runs/`` shows every run in
``runs/``. A resumed run starts its writer with ``purge_step`` = the step it resumes from, so TensorBoard drops
the events an earlier process wrote after that checkpoint (as metrics.jsonl drops its lines). Rank 0 only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sarkit.reporting import NULL_REPORTER, Reporter

#: metrics.jsonl keys that are not values to plot.
NOT_SCALARS = frozenset({"kind", "step", "epoch", "time"})


def scalar_tags(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of one metrics.jsonl record: ``train/<key>`` or ``val/<key>`` → value."""
    kind = record.get("kind")
    if kind not in ("train", "val"):
        return {}
    out = {}
    for k, v in record.items():
        if k in NOT_SCALARS or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[f"{kind}/{k}"] = float(v)
    return out


class TrainEvents:
    """A TensorBoard ``SummaryWriter`` on RUN (disabled on ranks other than 0, or without the tensorboard
    package, which is then said once as a warning)."""

    def __init__(self, run: Path, enabled: bool, purge_step: int | None = None,
                 reporter: Reporter = NULL_REPORTER) -> None:
        self.writer: Any = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # a dependency of sarkit: only a broken install lacks it
            reporter.warn("the tensorboard package is not installed: no TensorBoard event files in the run "
                          "(metrics.jsonl is written as always); pip install tensorboard")
            return
        self.writer = SummaryWriter(log_dir=str(run), purge_step=purge_step or None, flush_secs=30)

    @property
    def enabled(self) -> bool:
        """Event files are being written."""
        return self.writer is not None

    def record(self, record: dict[str, Any]) -> None:
        """Write a metrics.jsonl record's values as scalars at its step."""
        if self.writer is None:
            return
        step = int(record["step"])
        for tag, value in scalar_tags(record).items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, img: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 image at ``step``."""
        if self.writer is not None and img.size:
            self.writer.add_image(tag, img, step, dataformats="HWC")

    def config(self, config: dict[str, Any], step: int) -> None:
        """config.json as a text entry (Markdown code block)."""
        if self.writer is not None:
            text = "    " + json.dumps(config, indent=2).replace("\n", "\n    ")
            self.writer.add_text("config", text, step)

    def flush(self) -> None:
        """Write what is buffered to the event file."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
