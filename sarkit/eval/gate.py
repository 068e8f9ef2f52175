"""Quality gates: ``--fail-under psnr=18,ssim=0.3`` for higher-is-better metrics (psnr, ssim, pa, miou, and the
gains over the better baseline: ``--fail-under gain_psnr=1.0`` = at least 1 dB above it) and ``--fail-over
fid=50,mae=0.1`` for lower-is-better ones (mae, fid, fid-clip, sms, lpips).

A gate on a metric that is not computed is bad usage (``InputError``, exit 2); a metric that misses its
threshold, or is undefined, is a working failure (``WorkError``, exit 1) raised after the report is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from sarkit.errors import InputError, WorkError
from sarkit.eval.options import HIGHER_IS_BETTER


def _option(higher: bool) -> str:
    return "--fail-under" if higher else "--fail-over"


def _check_direction(name: str, value: str, higher: bool) -> None:
    """``InputError`` unless ``name`` is a metric whose better direction fits the option (↑ under, ↓ over)."""
    if name not in HIGHER_IS_BETTER:
        raise InputError(f"{_option(higher)} expects metric=value pairs such as psnr=18, got {f'{name}={value}'!r}")
    if HIGHER_IS_BETTER[name] != higher:
        raise InputError(f"{name} is {'lower' if higher else 'higher'}-is-better: use {_option(not higher)} "
                         f"{name}={value}")


def _value(entry: dict[str, Any]) -> float | None:
    """A summary value as a float, read back from JSON ("inf" → +inf) when needed."""
    from sarkit.eval.report import from_json_value

    v = entry.get("value")
    return v if isinstance(v, float) else from_json_value(v)


def gate_failures(summary: dict[str, Any], under: dict[str, float], over: dict[str, float]) -> list[str]:
    """Messages for every metric below its --fail-under or above its --fail-over threshold, or undefined
    (``InputError`` for a gated metric that is not in ``summary``)."""
    from sarkit.eval.report import fmt

    fails = []
    for limits, higher in ((under, True), (over, False)):
        for m, thr in limits.items():
            if m not in summary:
                if m.startswith("gain_"):  # the metric was computed, but no baseline could be
                    fails.append(f"{m} undefined (no baseline was computed; see the report)")
                    continue
                raise InputError(f"quality gate on {m}, which is not computed: add it to --metrics")
            v = _value(summary[m])
            if v is None or math.isnan(v) or (v < thr if higher else v > thr):
                fails.append(f"{m} {fmt(v)} {'<' if higher else '>'} {thr:g}")
    return fails


@dataclass
class QualityGate:
    """Thresholds a run must meet: ``under`` (fail when a ↑ metric is below) and ``over`` (fail when a ↓ metric
    is above); checked on construction."""

    under: dict[str, float] = field(default_factory=dict)
    over: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for limits, higher in ((self.under, True), (self.over, False)):
            for name, thr in limits.items():
                _check_direction(name, f"{thr:g}", higher)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The gated metrics."""
        return (*self.under, *self.over)

    def require(self, computed: Sequence[str]) -> None:
        """``InputError`` when a gated metric is not among the ``computed`` ones (before any work); a gain
        (``gain_psnr``) needs its metric (psnr)."""
        if missing := [m for m in self.metrics if m.removeprefix("gain_") not in computed]:
            raise InputError(f"quality gate on {missing[0]}, which is not computed: add it to --metrics")

    def failures(self, summary: dict[str, Any]) -> list[str]:
        """``gate_failures`` of a report summary: one message per missed threshold."""
        return gate_failures(summary, self.under, self.over)

    def enforce(self, summary: dict[str, Any]) -> None:
        """``WorkError("quality gate failed: …")`` listing every missed threshold; nothing when all are met."""
        if fails := self.failures(summary):
            raise WorkError("quality gate failed: " + "; ".join(fails))
