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
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sarkit.errors import CheckpointError, InputError
from sarkit.infer.engine import AMP_MIN_PSNR_DB, Contract, Predictor, check_tile, checkpoint_contract, guard_psnr
from sarkit.models.checkpoint import LoadedNetwork
from sarkit.models.samplers import (DEFAULT_STEPS, FirstBlockCache, NoiseSchedule, PositionalNoise, SamplerKind,
                                    SamplingPlan, sample)
from sarkit.raster.grid import PixelWindow
from sarkit.raster.norm import Normalization
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
    base_steps: int | None = None      # sr-diffusion: stage-1 sampling steps (``--steps`` is stage 2's)
    caption: str | None = None         # sr-diffusion: a caption file replacing the zero-shot caption
    clip_weights: str | None = None    # sr-diffusion: the CLIP weights file of the semantic guidance

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
        if self.base_steps is not None and (isinstance(self.base_steps, bool) or not isinstance(self.base_steps, int)
                                            or self.base_steps < 1):
            raise InputError(f"--base-steps must be a whole number ≥ 1, got {self.base_steps!r}")
        if self.caption is not None and not Path(self.caption).is_file():
            raise InputError(f"--caption {self.caption}: no such file (a text file whose first line is the caption)")

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


def is_super_resolution(net: LoadedNetwork) -> bool:
    """Whether an exported generator is a two-stage SR diffusion model (an ``sr`` record besides ``diffusion``)."""
    return is_diffusion(net) and isinstance(net.meta.get("sr"), dict)


def diffusion_predictor(net: LoadedNetwork, device: torch.device, amp: torch.dtype | None,
                        reporter: Reporter = NULL_REPORTER, tile: int | None = None,
                        sampling: SamplingOptions = SamplingOptions()) -> Predictor:
    """The predictor of a diffusion checkpoint: ``SRDiffusionPredictor`` for sr-diffusion, else
    ``DiffusionPredictor`` (which refuses the sr-only options)."""
    if is_super_resolution(net):
        return SRDiffusionPredictor(net, device, amp, reporter, tile=tile, sampling=sampling)
    extra = [o for o, v in (("--base-steps", sampling.base_steps), ("--caption", sampling.caption),
                            ("--clip-weights", sampling.clip_weights)) if v is not None]
    if extra:
        raise InputError(f"{', '.join(extra)} apply to sr-diffusion checkpoints only; {net.path.name} is a "
                         f"{net.meta.get('model', net.arch)} checkpoint: drop them")
    return DiffusionPredictor(net, device, amp, reporter, tile=tile, sampling=sampling)


def sr_contract(net: LoadedNetwork, tile: int | None = None) -> Contract:
    """The contract an sr-diffusion checkpoint records: optical in and out, its LR tile (``tile`` overrides it;
    ``InputError`` when its ×scale is not a multiple of what the U-Net needs), scale, one call (the predictor fills
    in its steps)."""
    meta = net.meta
    try:
        scale = int(meta["sr"]["scale"])
        in_norm, out_norm = Normalization.from_dict(meta["in_norm"]), Normalization.from_dict(meta["out_norm"])
        own = int(meta["tile_size"])
        hr_multiple = 2 ** (len(net.arch_kwargs["unet"]["channel_mult"]) - 1)
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{net.path} has an unreadable sr-diffusion record; re-export it with "
                              f"sarkit train") from None
    multiple = hr_multiple // math.gcd(hr_multiple, scale)
    check_tile(tile, own, multiple, net.path.name)
    return Contract(in_norm, out_norm, int(tile or own), scale=scale, tile_multiple=multiple)


def predictor_contract(net: LoadedNetwork, tile: int | None = None) -> Contract:
    """The contract of a checkpoint before its predictor is built: ``sr_contract`` or ``checkpoint_contract``."""
    return sr_contract(net, tile) if is_super_resolution(net) else checkpoint_contract(net, tile)


#: Salt of stage 2's noise keys (stage 1 uses the keys as they are): the stages never share draws.
STAGE2_SALT = 0x5EED2 << 40


def read_caption(path: str | Path) -> str:
    """The caption of a caption file: its first non-empty line (``InputError`` when there is none)."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            return line.strip()
    raise InputError(f"--caption {path} is empty; write the caption on its first line")


def load_captioner(record: dict[str, Any], bands: Sequence[str], weights: str | None, where: str) -> Any:
    """The checkpoint's zero-shot captioner: its CLIP architecture (re-registered from the recorded config when it
    came from a JSON file) with local weights (``weights``, else ``$SARKIT_CLIP_WEIGHTS`` or open_clip's cache)."""
    import json
    import tempfile

    import open_clip

    from sarkit.models.clip import load_open_clip
    from sarkit.models.sr_diffusion import Captioner

    model = record.get("clip_model") or {}
    name = str(model.get("name", ""))
    if name not in open_clip.list_models() and model.get("config"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / f"{name}.json"
            cfg.write_text(json.dumps(model["config"]))
            open_clip.add_model_config(cfg)
    clip = load_open_clip(name, str(record.get("clip_pretrained", "")), weights)
    cap = Captioner(clip, bands, tuple(record["vocabulary"]), int(record["classes"]))
    if cap.dim != int(record["dim"]):
        raise CheckpointError(f"{where}: the CLIP model found ({name}, {clip.path.name}) embeds text in {cap.dim} "
                              f"dimensions, the checkpoint was trained with {record['dim']}; give the CLIP weights "
                              f"it was trained with (--clip-weights)")
    return cap


class SRDiffusionPredictor(Predictor):
    """An sr-diffusion checkpoint as a predictor of output scale s: LR tiles (N, C, h, w) → (N, C, s·h, s·w).

    Per batch: bicubic ×s, stage 1 (both diffusion stages as the checkpoint's ``SRTarget``: residual or image,
    x₀- or ε-prediction) (its sampler and steps, ``--base-steps``; or the regression network), the
    caption of each tile's x₁ (zero-shot, or the ``--caption`` file's for every tile), stage 2 (``--sampler``,
    ``--steps``). Noise is keyed by pixel of the *output* grid (a tile's window times s), one key set per stage,
    so overlapping tiles draw the same noise there; with ``cache_threshold`` τ > 0 both stages run through
    ``FirstBlockCache``. Sampling runs in fp32."""

    def __init__(self, net: LoadedNetwork, device: torch.device, amp: torch.dtype | None,
                 reporter: Reporter = NULL_REPORTER, tile: int | None = None,
                 sampling: SamplingOptions = SamplingOptions()) -> None:
        from sarkit.models.sr_diffusion import SRTarget

        rec, sr, meta = net.meta["diffusion"], net.meta["sr"], net.meta
        try:
            schedule = NoiseSchedule.linear(int(rec["timesteps"]))
            kind2 = sampling.sampler or SamplerKind.parse(rec.get("sampler", "ddim")).value
            steps2 = sampling.steps or int(rec.get("steps", DEFAULT_STEPS[kind2]))
            scale = int(sr["scale"])
            stage1 = str(sr["stage1"])
            kind1 = SamplerKind.parse(sr.get("sampler1", "ddpm")).value
            steps1 = sampling.base_steps or int(sr.get("steps1", DEFAULT_STEPS[kind1]))
            out_norm = Normalization.from_dict(meta["out_norm"])
            target = SRTarget.from_record(sr, str(rec.get("prediction", "eps")))
            if target.kind not in ("residual", "image") or target.prediction not in ("x0", "eps") \
                    or not target.scale > 0:
                raise ValueError(target)
        except (KeyError, TypeError, ValueError, InputError):
            raise CheckpointError(f"{net.path} has an unreadable sr-diffusion record; re-export it with "
                                  f"sarkit train") from None
        self.target = target
        self.scale_ = scale
        self.plan2 = SamplingPlan.make(schedule, kind2, min(steps2, schedule.timesteps),
                                       float(sampling.eta or 0.0))
        self.plan1 = SamplingPlan.make(schedule, kind1, min(steps1, schedule.timesteps))             if stage1 == "diffusion" else None
        self.schedule = schedule
        self.seed = int(sampling.seed or 0)
        self.threshold = float(sampling.cache_threshold or 0.0)
        self.net, self.path = net, net.path
        self.name = f"sr-diffusion generator {net.path}"
        self.module = net.module.to(device).eval()
        self.device = device
        self.reporter = reporter
        if amp is not None:
            reporter.info(f"{net.path.name}: sr-diffusion samples in fp32 (mixed precision is not used)")
        c = out_norm.channels
        state = 4 * (6 * c + 2) + (4 * 4 * int(self.module.model_channels) if self.threshold > 0 else 0)
        steps = self.plan2.steps + (self.plan1.steps if self.plan1 is not None else 1)
        self.contract = dataclasses.replace(sr_contract(net, tile), steps=steps,
                                            act_bytes=int(self.module.activation_bytes_per_pixel()) + state)
        sem = sr.get("semantic")
        self.fixed_caption = read_caption(sampling.caption) if sampling.caption else None
        self.captioner = None
        if sem:
            self.captioner = load_captioner(sem, out_norm.bands, sampling.clip_weights, str(net.path))
        elif sampling.caption or sampling.clip_weights:
            raise InputError(f"{net.path.name} was trained with --model-opt semantic=off: --caption and "
                             f"--clip-weights have no effect; drop them")
        self.captions: Counter[str] = Counter()
        self.skipped = 0
        self.evaluated = 0

    def provenance(self) -> dict[str, str]:
        net, p2, p1 = self.net, self.plan2, self.plan1
        tags = {"model": str(net.meta.get("model", net.arch)), "arch": net.arch, "checkpoint": net.path.name,
                "checkpoint_sha256": net.sha256, "direction": str(net.meta.get("direction", "")),
                "sampler": p2.kind.value, "sampling_steps": str(p2.steps), "eta": f"{p2.eta:g}", "seed": str(self.seed),
                "cache_threshold": f"{self.threshold:g}", "sr_scale": str(self.scale_),
                "stage1": str(net.meta["sr"]["stage1"]),
                "stage1_sampler": p1.kind.value if p1 is not None else "regression",
                "stage1_steps": str(p1.steps if p1 is not None else 1),
                "semantic": "off" if self.captioner is None else ("file" if self.fixed_caption else "zero-shot")}
        if self.captions:
            tags["caption"] = self.captions.most_common(1)[0][0]
        if self.threshold > 0:
            tags.update(cache_skipped_steps=str(self.skipped), cache_tile_steps=str(self.evaluated))
        return tags

    def run_notes(self) -> list[str]:
        notes = []
        if self.threshold > 0 and self.evaluated:
            pct = 100.0 * self.skipped / self.evaluated
            notes.append(f"first-block cache (--cache-threshold {self.threshold:g}): skipped {self.skipped} of "
                         f"{self.evaluated} tile steps ({pct:.1f} %), both stages")
        if self.captions:
            top = ", ".join(f"“{c}” ×{k}" for c, k in self.captions.most_common(3))
            notes.append(f"captions of stage 2: {top}")
        return notes

    def _context(self, x1: torch.Tensor) -> torch.Tensor | None:
        """Context tokens of x₁'s captions (the file's caption for every tile when given); None without."""
        if self.captioner is None:
            return None
        caps = [self.fixed_caption] * x1.shape[0] if self.fixed_caption else self.captioner.captions(x1)
        self.captions.update(caps)
        return self.captioner.context(caps)

    def _predict(self, x: np.ndarray, seeds: Sequence[int] | None) -> np.ndarray:
        return self._predict_at(x, seeds, None, None)

    def _predict_at(self, x: np.ndarray, seeds: Sequence[int] | None, windows: Sequence[PixelWindow] | None,
                    progress: Callable[[int], None] | None) -> np.ndarray:
        """Both stages on the batch, noise keyed by output-grid pixel (class docstring)."""
        from sarkit.models.sr_diffusion import bicubic_up, sr_sample

        n, _, h, w = x.shape
        s = self.scale_
        hr_wins = None if windows is None else [PixelWindow(v.row_off * s, v.col_off * s, h * s, w * s)
                                                 for v in windows]
        keys, origins = noise_keys(self.seed, n, seeds, hr_wins)
        c = self.out_norm.channels
        with torch.inference_mode():
            up = bicubic_up(torch.from_numpy(np.ascontiguousarray(x)).to(self.device), s)
            noise1 = PositionalNoise(keys, origins, c, h * s, w * s, self.device)
            noise2 = PositionalNoise([k ^ STAGE2_SALT for k in keys], origins, c, h * s, w * s, self.device)
            net = self.module
            caches = [FirstBlockCache(m, self.threshold) if self.threshold > 0 else None
                      for m in (net.stage1, net.stage2)]

            def via(cache: FirstBlockCache | None) -> Callable[..., torch.Tensor]:
                if cache is None:
                    return lambda m, x_t, t, cond, k, steps: m(x_t, t, cond).float()
                return lambda m, x_t, t, cond, k, steps: cache(x_t, t, cond, k, steps).float()

            y = sr_sample(net, up, self.plan1 or self.plan2, self.plan2, self._context, noise1,
                          noise2, via(caches[0]), via(caches[1]), progress, self.target)
            if self.plan1 is None and progress is not None:
                progress(n)  # the regression stage: one call a tile
            for cache, plan in zip(caches, (self.plan1, self.plan2)):
                if plan is None:
                    continue
                if cache is not None:
                    self.skipped += cache.skipped
                    self.evaluated += cache.evaluated
                else:
                    self.evaluated += n * plan.steps
            return y.float().cpu().numpy()


__all__ = ["DiffusionPredictor", "SRDiffusionPredictor", "SamplingOptions", "check_sampling", "diffusion_predictor",
           "is_diffusion", "is_super_resolution", "noise_keys", "read_caption"]
