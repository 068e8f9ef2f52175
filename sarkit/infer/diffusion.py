"""The iterative predictor: a diffusion checkpoint sampled tile by tile with scene-consistent noise.

``DiffusionPredictor`` fills the engine's ``Contract`` (``steps`` = the sampler's network calls a batch) and runs a
``sarkit.models.samplers`` plan in its batch call: x_T and every later draw come from ``PositionalNoise`` keyed by
(seed, scene row, scene column, channel, draw), with the tile's scene window given by the runner. Two tiles that
overlap therefore draw identical noise where they overlap, and a tile's prediction depends only on its window, its
input pixels and the seed: not on the tiling's other tiles, the batch it travels in or the order of tiles. (The
U-Net still sees each tile's own context, so two overlapping tiles' predictions agree closely but not exactly in
their overlap; the cosine blend joins them.) Without windows (``eval --checkpoint`` on a tile set) each tile is its
own scene: noise keyed by the tile's seed and its own pixel coordinates.

With ``cache_threshold`` τ > 0 the U-Net runs through ``FirstBlockCache``; the skipped tile-steps are counted
(``skipped``, ``evaluated``), written to the output's tags (``provenance``) and said in the run's log
(``run_notes``). Mixed precision is checked once, on the first network call of the first batch: ε of the first tile
under autocast against fp32 (``AMP_MIN_PSNR_DB`` in the engine's PSNR on the model range), falling back to fp32
with a warning below it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from sarkit.errors import CheckpointError, InputError
from sarkit.infer.engine import AMP_MIN_PSNR_DB, Predictor, checkpoint_contract, guard_psnr
from sarkit.models.checkpoint import LoadedNetwork
from sarkit.models.samplers import (DEFAULT_STEPS, FirstBlockCache, NoiseSchedule, PositionalNoise, SamplerKind,
                                    SamplingPlan, sample)
from sarkit.raster.grid import PixelWindow
from sarkit.reporting import NULL_REPORTER, Reporter

_M32 = 0xFFFFFFFF


@dataclass(frozen=True)
class SamplingOptions:
    """How a diffusion checkpoint samples (translate / eval ``--sampler``, ``--steps``, ``--eta``, ``--seed``,
    ``--cache-threshold``); None = the checkpoint's default (its sampler and steps, η 0, seed 0, no cache)."""

    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    seed: int | None = None
    cache_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.sampler is not None:
            object.__setattr__(self, "sampler", SamplerKind.parse(self.sampler).value)
        if self.steps is not None and (isinstance(self.steps, bool) or not isinstance(self.steps, int)
                                       or self.steps < 1):
            raise InputError(f"--steps must be a whole number ≥ 1, got {self.steps!r}")
        if self.eta is not None and not 0.0 <= float(self.eta) <= 1.0:
            raise InputError(f"--eta must be between 0 and 1, got {self.eta}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or self.seed < 0):
            raise InputError(f"--seed must be a whole number ≥ 0, got {self.seed!r}")
        if self.cache_threshold is not None and not float(self.cache_threshold) >= 0.0:
            raise InputError(f"--cache-threshold must be ≥ 0 (0 = off), got {self.cache_threshold}")

    def given(self) -> list[str]:
        """The options set (as their command-line names)."""
        return [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


def is_diffusion(net: LoadedNetwork) -> bool:
    """Whether an exported generator is a diffusion noise predictor (its metadata has a ``diffusion`` record)."""
    return isinstance(net.meta.get("diffusion"), dict)


def check_sampling(net: LoadedNetwork, sampling: SamplingOptions | None) -> None:
    """``InputError`` when sampling options are given for a generator that is not a diffusion model."""
    if sampling is not None and sampling.given() and not is_diffusion(net):
        raise InputError(f"{', '.join(sampling.given())} apply to diffusion checkpoints only; {net.path.name} is a "
                         f"{net.meta.get('model', net.arch)} generator that runs in one call: drop them")


def noise_keys(seed: int, n: int, seeds: Sequence[int] | None, windows: Sequence[PixelWindow] | None
               ) -> tuple[list[int], list[tuple[int, int]]]:
    """Per tile: the noise key and the origin of its pixel coordinates. With windows: one key for the scene
    (``seed``) and the windows' corners; without: a key of (``seed``, the tile's seed) and (0, 0)."""
    if windows is not None:
        return [seed << 32] * n, [(w.row_off, w.col_off) for w in windows]
    tile_seeds = list(seeds) if seeds is not None else [0] * n
    return [(seed << 32) | ((int(s) + 1) & _M32) for s in tile_seeds], [(0, 0)] * n


class DiffusionPredictor(Predictor):
    """A diffusion checkpoint as an iterative predictor (module docstring)."""

    def __init__(self, net: LoadedNetwork, device: torch.device, amp: torch.dtype | None,
                 reporter: Reporter = NULL_REPORTER, tile: int | None = None,
                 sampling: SamplingOptions = SamplingOptions()) -> None:
        rec = net.meta["diffusion"]
        try:
            schedule = NoiseSchedule.linear(int(rec["timesteps"]))
            own_kind = SamplerKind.parse(rec.get("sampler", "ddpm")).value
            own_steps = int(rec.get("steps", DEFAULT_STEPS[own_kind]))
            own_eta = float(rec.get("eta", 0.0))
        except (KeyError, TypeError, ValueError, InputError):
            raise CheckpointError(f"{net.path} has an unreadable diffusion record ({rec!r}); re-export it with "
                                  f"sarkit train") from None
        if rec.get("prediction", "eps") != "eps" or rec.get("schedule", "linear") != "linear":
            raise CheckpointError(f"{net.path}: sarkit samples ε-prediction models of a linear schedule, this one "
                                  f"records {rec.get('prediction')}/{rec.get('schedule')}")
        kind = sampling.sampler or own_kind
        steps = sampling.steps or (own_steps if kind == own_kind else DEFAULT_STEPS[kind])
        self.plan = SamplingPlan.make(schedule, kind, min(steps, schedule.timesteps) if sampling.steps is None
                                      else steps, own_eta if sampling.eta is None else float(sampling.eta))
        self.seed = int(sampling.seed or 0)
        self.threshold = float(sampling.cache_threshold or 0.0)
        self.net = net
        self.path = net.path
        self.name = f"diffusion generator {net.path}"
        self.module = net.module.to(device).eval()
        self.device = device
        self.amp = amp
        self.reporter = reporter
        self.guard_psnr: float | None = None
        self._checked = amp is None
        base = checkpoint_contract(net, tile)
        c_x, c_in = base.out_norm.channels, base.in_norm.channels
        state = 4 * (4 * c_x + c_in)  # x_t, ε, x̂_0 and a noise draw; the condition
        if self.threshold > 0:
            state += 4 * 2 * int(getattr(self.module, "model_channels", 0))  # cached r1 and h_L − h1
        per_px = getattr(self.module, "activation_bytes_per_pixel", lambda: 0)()
        self.contract = dataclasses.replace(base, steps=self.plan.steps, act_bytes=int(per_px) + state or None)
        self.skipped = 0
        self.evaluated = 0

    def provenance(self) -> dict[str, str]:
        net, p = self.net, self.plan
        tags = {"model": str(net.meta.get("model", net.arch)), "arch": net.arch, "checkpoint": net.path.name,
                "checkpoint_sha256": net.sha256, "direction": str(net.meta.get("direction", "")),
                "sampler": p.kind.value, "sampling_steps": str(p.steps), "eta": f"{p.eta:g}", "seed": str(self.seed),
                "cache_threshold": f"{self.threshold:g}"}
        if self.threshold > 0:
            tags.update(cache_skipped_steps=str(self.skipped), cache_tile_steps=str(self.evaluated))
        return tags

    def run_notes(self) -> list[str]:
        if self.threshold <= 0 or not self.evaluated:
            return []
        pct = 100.0 * self.skipped / self.evaluated
        return [f"first-block cache (--cache-threshold {self.threshold:g}): skipped {self.skipped} of "
                f"{self.evaluated} tile steps ({pct:.1f} %)"]

    def _eps_call(self, amp: torch.dtype | None) -> Callable[..., torch.Tensor]:
        """The plain network call ε_θ(x_t, t, cond) under ``amp`` (None = fp32), returned as float32."""
        def call(x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            ctx = torch.autocast(self.device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
            with ctx:
                return self.module(x_t, t, cond).float()
        return call

    def _guard(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> None:
        """Compare the first tile's ε under autocast with fp32 once; drop autocast below ``AMP_MIN_PSNR_DB``."""
        self._checked = True
        low = self._eps_call(self.amp)(x_t[:1], t[:1], cond[:1]).cpu().numpy()
        ref = self._eps_call(None)(x_t[:1], t[:1], cond[:1]).cpu().numpy()
        self.guard_psnr = guard_psnr(low, ref)
        if not self.guard_psnr >= AMP_MIN_PSNR_DB:
            name = str(self.amp).replace("torch.", "")
            self.reporter.warn(f"{name} autocast noise prediction is {self.guard_psnr:.1f} dB PSNR from fp32 on the "
                               f"first tile (< {AMP_MIN_PSNR_DB:g} dB): sampling this generator in fp32 (--amp off "
                               f"skips the check)")
            self.amp = None

    def _eps_fn(self, cache: FirstBlockCache | None) -> Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]:
        """The sampler's ε callback: the guard on the first call, then the cache or the plain network."""
        def eps(x_t: torch.Tensor, t: torch.Tensor, k: int, n: int, cond: torch.Tensor) -> torch.Tensor:
            if not self._checked:
                self._guard(x_t, t, cond)
            if cache is None:
                return self._eps_call(self.amp)(x_t, t, cond)
            ctx = (torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None
                   else contextlib.nullcontext())
            with ctx:
                return cache(x_t, t, cond, k, n).float()
        return eps  # type: ignore[return-value]

    def _predict(self, x: np.ndarray, seeds: Sequence[int] | None) -> np.ndarray:
        return self._predict_at(x, seeds, None, None)

    def _predict_at(self, x: np.ndarray, seeds: Sequence[int] | None, windows: Sequence[PixelWindow] | None,
                    progress: Callable[[int], None] | None) -> np.ndarray:
        """Sample the batch: position-keyed noise, the plan's steps, the cache when τ > 0."""
        n, _, h, w = x.shape
        keys, origins = noise_keys(self.seed, n, seeds, windows)
        with torch.inference_mode():
            cond = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            noise = PositionalNoise(keys, origins, self.out_norm.channels, h, w, self.device)
            cache = FirstBlockCache(self.module, self.threshold) if self.threshold > 0 else None
            eps = self._eps_fn(cache)
            y = sample(lambda x_t, t, k, steps: eps(x_t, t, k, steps, cond), self.plan, noise, progress)
            if cache is not None:
                self.skipped += cache.skipped
                self.evaluated += cache.evaluated
            else:
                self.evaluated += n * self.plan.steps
            return y.float().cpu().numpy()


__all__ = ["DiffusionPredictor", "SamplingOptions", "check_sampling", "is_diffusion", "noise_keys"]
