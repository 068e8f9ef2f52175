"""The trivial baselines every translation is measured against, and the model's gain over the better of them.

Both live in the evaluation's [0, 1] space (``(model + 1) / 2`` under the output's normalisation; the input's
[0, 1] space likewise under the input's), per output band ``o``:

* **constant colour**: ŷ_o = c_o, the mean of band o over the fitted target pixels;
* **per-pixel linear map**: ŷ_o = Σ_i w_oi·x_i + b_o, least squares of band o on the input bands and 1 over the
  fitted pixels, clipped to [0, 1] (the range every generator's tanh output has too).

Training fits them on a bounded, seeded sample of the training tiles' pixels where both modalities hold data
(``sample_pixels``, ``fit_baselines``) and records them in the exported generator's metadata (``baselines``:
``BaselineFit.to_dict``); ``sarkit eval`` predicts them on the same pixels and bands as the model
(``baseline_block``) and reports their metrics next to the model's and the gains (``gains``): gain = model − best
baseline for higher-is-better metrics and best baseline − model for lower-is-better ones, so positive = the model
is better.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

#: Pixels a training run samples for the baselines (at most), from at most ``FIT_TILES`` tiles.
FIT_PIXELS = 1 << 18
FIT_TILES = 256
#: The baselines, in report order, and how reports name them.
BASELINES = ("constant", "linear")
BASELINE_LABELS = {"constant": "constant colour", "linear": "per-pixel linear map"}
#: The metrics baselines are measured with (those of the requested ones), and the gains reported.
BASELINE_METRICS = ("psnr", "ssim", "mae", "lpips")
GAIN_METRICS = tuple(f"gain_{m}" for m in BASELINE_METRICS)
#: Where a fit came from: the training tiles (recorded in the checkpoint) or the evaluated target itself.
FROM_TRAINING = "training tiles (recorded in the checkpoint)"
FROM_TARGET = "the evaluated target (no checkpoint baselines known: an oracle fit on the test pixels)"


@dataclass(frozen=True)
class BaselineFit:
    """Fitted baselines: output ``bands``, ``constant`` c_o, ``linear`` rows (w_o1 … w_oC, b_o) on ``in_bands``
    (None when no input was at hand), the ``pixels`` fitted, where from (``source``) and the normalisations whose
    [0, 1] spaces the numbers live in (``out_norm``, ``in_norm`` as ``Normalization.to_dict``)."""

    bands: tuple[str, ...]
    constant: tuple[float, ...]
    linear: tuple[tuple[float, ...], ...] | None
    in_bands: tuple[str, ...] = ()
    pixels: int = 0
    source: str = FROM_TRAINING
    out_norm: dict[str, Any] | None = None
    in_norm: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (the exported generator's ``baselines`` metadata)."""
        return {"space": "[0, 1] = (model + 1) / 2", "bands": list(self.bands), "constant": list(self.constant),
                "linear": [list(r) for r in self.linear] if self.linear is not None else None,
                "in_bands": list(self.in_bands), "pixels": self.pixels, "source": self.source,
                "out_norm": self.out_norm, "in_norm": self.in_norm}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaselineFit:
        """The fit a ``to_dict`` record describes."""
        lin = d.get("linear")
        return cls(tuple(d["bands"]), tuple(float(v) for v in d["constant"]),
                   tuple(tuple(float(v) for v in r) for r in lin) if lin is not None else None,
                   tuple(d.get("in_bands") or ()), int(d.get("pixels", 0)), str(d.get("source", FROM_TRAINING)),
                   d.get("out_norm"), d.get("in_norm"))


@dataclass
class FitSums:
    """Running sums for the least-squares fits: n, Σy (C_out), and the normal equations A = Σ zzᵀ, B = Σ z yᵀ with
    z = (x_1 … x_C, 1) (None without input)."""

    n: int = 0
    sy: np.ndarray | None = None
    a: np.ndarray | None = None
    b: np.ndarray | None = None

    def add(self, y01: np.ndarray, x01: np.ndarray | None = None) -> None:
        """Add pixels: ``y01`` (N, C_out) and optionally ``x01`` (N, C_in), both in [0, 1]."""
        y = np.asarray(y01, dtype=np.float64)
        self.n += y.shape[0]
        self.sy = y.sum(0) if self.sy is None else self.sy + y.sum(0)
        if x01 is not None:
            z = np.concatenate([np.asarray(x01, dtype=np.float64), np.ones((y.shape[0], 1))], 1)
            a, b = z.T @ z, z.T @ y
            self.a = a if self.a is None else self.a + a
            self.b = b if self.b is None else self.b + b

    def fit(self, bands: Sequence[str], in_bands: Sequence[str] = (), source: str = FROM_TRAINING,
            out_norm: dict[str, Any] | None = None, in_norm: dict[str, Any] | None = None) -> BaselineFit | None:
        """c = Σy / n and W = lstsq(A, B) (rows per output band: weights then bias); None without pixels."""
        if not self.n or self.sy is None:
            return None
        const = tuple(float(v) for v in self.sy / self.n)
        lin = None
        if self.a is not None and self.b is not None:
            w = np.linalg.lstsq(self.a, self.b, rcond=None)[0]  # (C_in + 1, C_out)
            lin = tuple(tuple(float(v) for v in w[:, o]) for o in range(w.shape[1]))
        return BaselineFit(tuple(bands), const, lin, tuple(in_bands), self.n, source, out_norm, in_norm)


def fit_baselines(y01: np.ndarray, x01: np.ndarray | None, bands: Sequence[str], in_bands: Sequence[str] = (),
                  **kw: Any) -> BaselineFit:
    """Constant and linear baselines of pixels ``y01`` (N, C_out) on ``x01`` (N, C_in), both in [0, 1]."""
    s = FitSums()
    s.add(y01, x01)
    fit = s.fit(bands, in_bands, **kw)
    if fit is None:
        raise ValueError("no pixels to fit the baselines on")
    return fit


def sample_pixels(items: Sequence[dict[str, np.ndarray]], max_pixels: int = FIT_PIXELS,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x01, y01): a seeded sample of at most ``max_pixels`` pixels, spread evenly over ``items`` ({"x": (C_in, H,
    W), "y": (C_out, H, W) model range, "valid": (H, W) bool}), of those where both hold data; [0, 1] space."""
    rng = np.random.default_rng(seed)
    per = max(1, max_pixels // max(1, len(items)))
    xs, ys = [], []
    for it in items:
        x = np.asarray(it["x"], dtype=np.float32).reshape(it["x"].shape[0], -1)
        y = np.asarray(it["y"], dtype=np.float32).reshape(it["y"].shape[0], -1)
        ok = np.flatnonzero(np.asarray(it["valid"]).reshape(-1) & np.isfinite(x).all(0) & np.isfinite(y).all(0))
        if ok.size > per:
            ok = rng.choice(ok, per, replace=False)
        xs.append((x[:, ok].T + 1.0) * 0.5)
        ys.append((y[:, ok].T + 1.0) * 0.5)
    if not xs:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(xs), np.concatenate(ys)


# ----------------------------------------------------------------------------------------------- predictions

def constant_map(fit: BaselineFit, valid: np.ndarray) -> np.ndarray:
    """(C_out, H, W) in [0, 1]: c_o where ``valid``, NaN elsewhere."""
    out = np.broadcast_to(np.asarray(fit.constant, np.float32)[:, None, None],
                          (len(fit.constant),) + valid.shape).copy()
    out[:, ~valid] = np.nan
    return out


def linear_map(fit: BaselineFit, x01: np.ndarray) -> np.ndarray:
    """(C_out, H, W) in [0, 1]: clip(Σ_i w_oi·x_i + b_o, 0, 1) of the input ``x01`` (C_in, H, W); NaN stays."""
    w = np.asarray(fit.linear, np.float64)  # (C_out, C_in + 1)
    y = np.einsum("oc,chw->ohw", w[:, :-1], x01.astype(np.float64)) + w[:, -1][:, None, None]
    return np.clip(y, 0.0, 1.0).astype(np.float32)


@dataclass
class BaselineSpace:
    """How a fit's [0, 1] numbers map onto an evaluation's blocks: the block's prediction bands that the fit's
    ``bands`` are (``out_idx``), and the conversions between the fit's and the evaluation's normalisations."""

    fit: BaselineFit
    out_idx: list[int]
    eval_out: Any = None   # the evaluation's prediction Normalization (None: the fit's own)
    eval_in: Any = None    # the evaluation's input Normalization (None: the fit's own, or no input)
    notes: list[str] = field(default_factory=list)

    def to_eval(self, y01: np.ndarray) -> np.ndarray:
        """Fit-space [0, 1] (C_out, H, W) → the evaluation's model range, through physical units when the
        normalisations differ."""
        from sarkit.raster.norm import Normalization

        y = y01 * 2.0 - 1.0
        if self.eval_out is None or self.fit.out_norm is None:
            return y
        own = Normalization.from_dict(self.fit.out_norm).select(list(self.fit.bands))
        target = self.eval_out.select(list(self.fit.bands))
        if own.to_dict() == target.to_dict():
            return y
        out = target.encode(own.decode(y))
        out[~np.isfinite(y)] = np.nan
        return out

    def input01(self, x_model: np.ndarray) -> np.ndarray:
        """The evaluation's model-range input (C_in, H, W) → the fit's input [0, 1] space."""
        from sarkit.raster.norm import Normalization

        if self.eval_in is None or self.fit.in_norm is None:
            return (x_model + 1.0) * 0.5
        own = Normalization.from_dict(self.fit.in_norm)
        if own.to_dict() == self.eval_in.to_dict():
            return (x_model + 1.0) * 0.5
        x = own.encode(self.eval_in.decode(x_model))
        x[~np.isfinite(x_model)] = np.nan
        return (x + 1.0) * 0.5


def baseline_block(space: BaselineSpace, kind: str, pred: np.ndarray, inp: np.ndarray | None) -> np.ndarray | None:
    """The baseline ``kind``'s prediction in the block's model range, shaped like ``pred`` (C, H, W): the fit's
    bands at ``out_idx``, NaN where the model's prediction is NaN (the same pixels); None when it cannot be made
    (linear without input or coefficients)."""
    valid = np.isfinite(pred).all(axis=0)
    if kind == "constant":
        y01 = constant_map(space.fit, valid)
    else:
        if inp is None or space.fit.linear is None:
            return None
        y01 = linear_map(space.fit, space.input01(inp))
    y = space.to_eval(y01)
    out = np.full_like(pred, np.nan, dtype=np.float32)
    out[space.out_idx] = y
    out[:, ~valid] = np.nan
    return out


def gains(model: dict[str, Any], baselines: dict[str, dict[str, Any]], higher: dict[str, bool]) -> dict[str, Any]:
    """``gain_<m>`` = model − best baseline (↑ metrics) or best baseline − model (↓ metrics) for every metric both
    the model's ``summary`` and some baseline's summary have; each {"value", "over": the better baseline}."""
    out: dict[str, Any] = {}
    for m in BASELINE_METRICS:
        mv = (model.get(m) or {}).get("value")
        vals = {k: (b.get("summary", {}).get(m) or {}).get("value") for k, b in baselines.items()}
        vals = {k: v for k, v in vals.items() if v is not None and np.isfinite(v)}
        if mv is None or not vals or not np.isfinite(mv):
            continue
        best = max(vals, key=vals.get) if higher[m] else min(vals, key=vals.get)
        g = mv - vals[best] if higher[m] else vals[best] - mv
        out[f"gain_{m}"] = {"value": float(g), "over": best}
    return out


# ----------------------------------------------------------------------------------------------- evaluation

def fit_from_record(rec: Any) -> BaselineFit | None:
    """The fit a checkpoint's (or a translate output's) ``baselines`` record holds; None when absent/unreadable."""
    if isinstance(rec, str):
        import json

        try:
            rec = json.loads(rec)
        except ValueError:
            return None
    if not isinstance(rec, dict):
        return None
    try:
        return BaselineFit.from_dict(rec)
    except (KeyError, TypeError, ValueError):
        return None


def fit_on_target(source: Any, reporter: Any) -> BaselineFit | None:
    """Fit both baselines on the evaluated pixels themselves (a first pass over the source's targets, and inputs
    when the blocks carry them): the fallback when no checkpoint recorded a training fit."""
    sums = FitSums()
    bad_before = source.bad_nan  # the model's pass counts the prediction's bad pixels, once
    blocks = source.targets() if hasattr(source, "targets") else source.blocks()
    in_bands: tuple[str, ...] = ()
    has_input = True
    with reporter.task("Baselines (fit on the target)", total=len(source)) as task:
        for b in blocks:
            rs, cs = b.core.slices()
            t = b.target[:, rs, cs]
            ok = np.isfinite(t).all(0)
            x = None
            if b.input is not None and has_input:
                x = b.input[:, rs, cs]
                ok &= np.isfinite(x).all(0)
            else:
                has_input = False
            y01 = (t[:, ok].T + 1.0) * 0.5
            sums.add(y01, (x[:, ok].T + 1.0) * 0.5 if has_input and x is not None else None)
            if not has_input:
                sums.a = sums.b = None
            task.advance(1)
    source.bad_nan = bad_before
    if source.input_norm is not None and has_input:
        in_bands = tuple(source.input_norm.bands)
    in_norm = source.input_norm.to_dict() if source.input_norm is not None and has_input else None
    return sums.fit(source.pred_norm.bands, in_bands, FROM_TARGET, source.pred_norm.to_dict(), in_norm)


class BaselineStreams:
    """The constant and linear baselines streamed next to the model: per block, each baseline's prediction on the
    model's pixels into its own ``Accumulator`` (and LPIPS stream); ``record`` is report.json ``baselines``."""

    def __init__(self, fit: BaselineFit, space: BaselineSpace, metrics: Sequence[str], lpips: Any,
                 why_no_linear: str | None) -> None:
        from sarkit.eval.accumulate import Accumulator, LpipsStream

        self.fit, self.space = fit, space
        self.kinds = ["constant"] + (["linear"] if why_no_linear is None else [])
        self.why_no_linear = why_no_linear
        pix = tuple(m for m in metrics if m in ("psnr", "ssim", "mae"))
        self.acc = {k: Accumulator(pix, None) for k in self.kinds}
        self.lpips = {k: LpipsStream(lpips.net, lpips.batch_size, lpips.network) for k in self.kinds} \
            if lpips is not None else {}
        self.linear_blocks = 0

    @classmethod
    def load(cls, source: Any, opts: Any, lpips: Any, reporter: Any) -> BaselineStreams | None:
        """The streams for ``source``: the fit its checkpoint recorded (``source.baseline_fit``), else one on the
        target; None when the source has no image metric to compare (or no pixel to fit)."""
        if not any(m in BASELINE_METRICS for m in opts.metrics):
            return None
        fit = getattr(source, "baseline_fit", None)
        if fit is None:
            fit = fit_on_target(source, reporter)
            if fit is None:
                return None
        names = [b.upper() for b in source.pred_norm.bands]
        missing = [b for b in fit.bands if b.upper() not in names]
        if missing:
            reporter.warn(f"no baselines: the checkpoint's baselines are for bands {', '.join(fit.bands)}, the "
                          f"evaluation compares {', '.join(source.pred_norm.bands)}")
            return None
        idx = [names.index(b.upper()) for b in fit.bands]
        in_norm = source.input_norm
        why = None
        if in_norm is None:
            why = ("no SAR input at hand: pass --input SCENE (scenes), or evaluate with --checkpoint; tile folders "
                   "carry no input") if source.mode != "model" else "the source carries no input"
        elif fit.linear is None:
            why = "no input was at hand when the baselines were fitted"
        elif [b.upper() for b in in_norm.bands] != [b.upper() for b in fit.in_bands]:
            why = f"the input has bands {', '.join(in_norm.bands)}, the linear map was fitted on {', '.join(fit.in_bands)}"
        space = BaselineSpace(fit, idx, source.pred_norm, in_norm)
        return cls(fit, space, opts.metrics, lpips, why)

    def add(self, b: Any) -> None:
        """Add the baselines' predictions of block ``b`` (same pixels, bands and core as the model's)."""
        for k in self.kinds:
            y = baseline_block(self.space, k, b.pred, b.input)
            if y is None:
                if k == "linear" and self.why_no_linear is None:
                    self.why_no_linear = "a block came without its input"
                continue
            if k == "linear":
                self.linear_blocks += 1
            bb = type(b)(b.id, y, b.target, b.core, None, b.input, b.window)
            tile = self.acc[k].add(bb, None)
            if k in self.lpips:
                self.lpips[k].add_block(tile, bb, self.space.eval_out)

    def record(self, reporter: Any) -> dict[str, Any]:
        """report.json ``baselines``: per baseline its label, fit source, numbers and summary values (or why it
        is absent)."""
        out: dict[str, Any] = {}
        for k in BASELINES:
            entry: dict[str, Any] = {"label": BASELINE_LABELS[k], "source": self.fit.source,
                                     "bands": list(self.fit.bands), "pixels_fitted": self.fit.pixels}
            if k == "constant":
                entry["values"] = list(self.fit.constant)
            elif self.fit.linear is not None:
                entry["coefficients"] = [list(r) for r in self.fit.linear]
                entry["in_bands"] = list(self.fit.in_bands)
            if k not in self.kinds or (k == "linear" and self.why_no_linear is not None) or not self.acc[k].npx:
                entry["absent"] = self.why_no_linear or "no pixel"
                out[k] = entry
                continue
            quiet = _Quiet()
            summ = {m: {"value": v["value"]} for m, v in self.acc[k].summary(quiet).items()}
            if k in self.lpips:
                self.lpips[k].finish(quiet)
                summ["lpips"] = {"value": self.lpips[k].value()}
            entry["summary"] = summ
            out[k] = entry
        return out


class _Quiet:
    """A reporter that drops messages (the model's own pass already warned about the same pixels)."""

    def warn(self, *_: Any, **__: Any) -> None:
        return None

    def info(self, *_: Any, **__: Any) -> None:
        return None
