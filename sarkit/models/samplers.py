"""Diffusion samplers, written once: the noise schedule, respaced DDPM and DDIM steps, position-keyed noise and
first-block caching. Shared by every diffusion model (training draws x_t with ``NoiseSchedule.q_sample``; inference
runs ``sample``).

* **Schedule** (Ho et al. 2020 with guided-diffusion's scaling): linear β from 1e-4·1000/T to 0.02·1000/T over T
  steps (T = 2000: 5e-5 … 0.01), ᾱ_t = Π(1 − β).
* **Respacing**: ``steps`` timesteps evenly spread over [0, T − 1] (rounded); the respaced process has
  β'_i = 1 − ᾱ_{t_i}/ᾱ_{t_{i−1}} (ᾱ before the first = 1), as guided-diffusion's ``space_timesteps``, and the
  network is called with the original timestep t_i.
* **DDPM step** (ε-prediction, fixed "large" variance β'_i as guided-diffusion with ``learn_sigma`` off): x̂_0 from
  ε clipped to [-1, 1], posterior mean of q(x_{i−1} | x_i, x̂_0), plus √β'_i·z (no noise at the last step).
* **DDIM step** (Song et al. 2021): x̂_0 clipped, ε re-derived from it, σ_i = η·√((1−ᾱ_prev)/(1−ᾱ_i))·√(1−ᾱ_i/ᾱ_prev);
  x_{i−1} = √ᾱ_prev·x̂_0 + √(1−ᾱ_prev−σ_i²)·ε + σ_i·z. η = 0 is deterministic given x_T.
* **Position-keyed noise** (``PositionalNoise``): every normal draw is a hash of (seed, row, column, channel, draw
  index) — a counter-based generator, so two tiles that share scene pixels draw the same noise there whatever their
  batch, order or tiling.
* **First-block caching** (``FirstBlockCache``, the dynamic inference of the VLM-guided diffusion SR paper, as
  ParaAttention's and diffusers' first-block cache): each step runs the U-Net's first block; where the relative L1
  change of its residual (h1 − h0) against the last fully computed step is ≤ τ, the remaining blocks are skipped and
  their cached residual (h_L − h1) reused; otherwise they run and refresh the cache. The first and last steps always
  run in full; decisions are per tile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from sarkit.errors import InputError

#: Default number of sampling steps per sampler (the paper samples with 250 respaced DDPM steps).
DEFAULT_STEPS = {"ddpm": 250, "ddim": 50}
_M32 = 0xFFFFFFFF


# ------------------------------------------------------------------------------------------------ schedule
@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete forward process: β_t for t = 0 … T − 1 (float64) and ᾱ_t."""

    betas: np.ndarray

    @classmethod
    def linear(cls, timesteps: int) -> "NoiseSchedule":
        """guided-diffusion's linear schedule: β from 1e-4·s to 0.02·s, s = 1000/T."""
        if timesteps < 2:
            raise InputError(f"--model-opt timesteps must be ≥ 2, got {timesteps}")
        s = 1000.0 / timesteps
        return cls(np.linspace(s * 1e-4, s * 0.02, timesteps, dtype=np.float64))

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε for a batch of timesteps ``t`` (N,)."""
        ac = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64, device=x0.device)[t]
        a = ac.sqrt().to(x0.dtype).view(-1, 1, 1, 1)
        b = (1.0 - ac).sqrt().to(x0.dtype).view(-1, 1, 1, 1)
        return a * x0 + b * noise


class SamplerKind(str, Enum):
    """``--sampler``: respaced ancestral DDPM or DDIM."""

    DDPM = "ddpm"
    DDIM = "ddim"

    @classmethod
    def parse(cls, value: "str | SamplerKind") -> "SamplerKind":
        """A sampler from its name; ``InputError`` naming the choices otherwise."""
        try:
            return value if isinstance(value, cls) else cls(str(value).lower())
        except ValueError:
            raise InputError(f"--sampler must be ddpm or ddim, got {value!r}") from None


def spaced_timesteps(timesteps: int, steps: int) -> tuple[int, ...]:
    """``steps`` timesteps of [0, ``timesteps`` − 1], evenly spread and rounded, increasing, both ends included."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= timesteps:
        raise InputError(f"--steps must be between 1 and the model's {timesteps} diffusion steps, got {steps!r}")
    if steps == 1:
        return (timesteps - 1,)
    return tuple(int(round(v)) for v in np.linspace(0, timesteps - 1, steps))


@dataclass(frozen=True)
class SamplingPlan:
    """A respaced sampler: the original timesteps it visits (increasing), their ᾱ, the kind and DDIM's η."""

    kind: SamplerKind
    timesteps: tuple[int, ...]
    alphas_cumprod: np.ndarray
    eta: float = 0.0

    @classmethod
    def make(cls, schedule: NoiseSchedule, kind: "str | SamplerKind", steps: int | None = None,
             eta: float = 0.0) -> "SamplingPlan":
        """The plan of ``kind`` over ``steps`` respaced steps (None = ``DEFAULT_STEPS``) of ``schedule``."""
        kind = SamplerKind.parse(kind)
        if not 0.0 <= float(eta) <= 1.0:
            raise InputError(f"--eta must be between 0 and 1, got {eta}")
        ts = spaced_timesteps(schedule.timesteps, DEFAULT_STEPS[kind.value] if steps is None else steps)
        return cls(kind, ts, schedule.alphas_cumprod[list(ts)], float(eta))

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def coefficients(self, i: int) -> tuple[float, float]:
        """(ᾱ_i, ᾱ_{i−1}) of respaced step ``i`` (ᾱ before the first = 1)."""
        return float(self.alphas_cumprod[i]), float(self.alphas_cumprod[i - 1]) if i > 0 else 1.0

    def step(self, x: torch.Tensor, eps: torch.Tensor, i: int, z: torch.Tensor | None) -> torch.Tensor:
        """x_{i−1} from x_i and the predicted ε (``z``: the step's standard normal draw; unused where no noise)."""
        a_t, a_prev = self.coefficients(i)
        eps = eps.float()
        x0 = ((x - (1.0 - a_t) ** 0.5 * eps) / a_t ** 0.5).clamp(-1.0, 1.0)
        if self.kind is SamplerKind.DDPM:
            beta = 1.0 - a_t / a_prev
            mean = (beta * a_prev ** 0.5 / (1.0 - a_t)) * x0 + ((1.0 - a_prev) * (1.0 - beta) ** 0.5 / (1.0 - a_t)) * x
            return mean + beta ** 0.5 * z if i > 0 and z is not None else mean
        eps = (x - a_t ** 0.5 * x0) / (1.0 - a_t) ** 0.5
        sigma = self.eta * ((1.0 - a_prev) / (1.0 - a_t)) ** 0.5 * (1.0 - a_t / a_prev) ** 0.5 if i > 0 else 0.0
        out = a_prev ** 0.5 * x0 + max(1.0 - a_prev - sigma ** 2, 0.0) ** 0.5 * eps
        return out + sigma * z if sigma > 0 and z is not None else out

    def alphas_at(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ (float32, shaped (N, 1, 1, 1)) of the plan's original timesteps ``t`` (N,)."""
        ts = torch.as_tensor(self.timesteps, dtype=torch.int64, device=t.device)
        idx = torch.searchsorted(ts, t.to(torch.int64))
        ac = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64, device=t.device)[idx]
        return ac.float().view(-1, 1, 1, 1)

    def needs_noise(self, i: int) -> bool:
        """Whether step ``i`` adds noise (DDPM, or DDIM with η > 0, except the last step)."""
        return i > 0 and (self.kind is SamplerKind.DDPM or self.eta > 0)


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """ε = (x_t − √ᾱ·x̂_0)/√(1 − ᾱ): the noise an x_0-prediction implies (what ``SamplingPlan.step`` takes)."""
    return (x_t.float() - alpha_bar.sqrt() * x0.float()) / (1.0 - alpha_bar).sqrt()


# ------------------------------------------------------------------------------------------------ noise
def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (bijective on [0, 2³²)) of int64 tensors holding 32-bit values; products stay < 2⁶³."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def _mix_int(v: int) -> int:
    """``_mix`` of one Python integer (any size: its 32-bit halves folded)."""
    t = torch.tensor([(v & _M32) ^ int(_mix(torch.tensor([(v >> 32) & _M32]))[0])], dtype=torch.int64)
    return int(_mix(t)[0])


class PositionalNoise:
    """Standard normal draws keyed by (seed, row, column, channel, draw index): ``noise(k)`` is (N, C, H, W).

    ``origins``: each tile's top-left scene pixel (row, column); ``seeds``: one key per tile (the same for every tile
    of a scene, so that shared pixels draw the same values). Two 32-bit hashes per value, Box–Muller in float64."""

    def __init__(self, seeds: Sequence[int], origins: Sequence[tuple[int, int]], channels: int, height: int,
                 width: int, device: torch.device) -> None:
        rows = torch.tensor([r for r, _ in origins], dtype=torch.int64, device=device)[:, None] + \
            torch.arange(height, dtype=torch.int64, device=device)[None]
        cols = torch.tensor([c for _, c in origins], dtype=torch.int64, device=device)[:, None] + \
            torch.arange(width, dtype=torch.int64, device=device)[None]
        keys = torch.tensor([_mix_int(int(s)) for s in seeds], dtype=torch.int64, device=device)
        k = _mix(keys[:, None] ^ (rows & _M32))                          # (N, H)
        self.pixel_keys = _mix(k[:, :, None] ^ (cols[:, None, :] & _M32))  # (N, H, W)
        self.channels = channels

    def __call__(self, index: int) -> torch.Tensor:
        """The draw number ``index`` (N, C, H, W), float32."""
        dev = self.pixel_keys.device
        ch = torch.arange(self.channels, dtype=torch.int64, device=dev)
        salt = _mix((ch + (int(index) & 0xFFFFFF) * 64 + 0x9E3779B) & _M32)
        k = _mix(self.pixel_keys[:, None] ^ salt[None, :, None, None])
        u1 = (_mix(k ^ 0x1B873593).double() + 0.5) / 2.0 ** 32
        u2 = (_mix(k ^ 0x5BD1E995).double() + 0.5) / 2.0 ** 32
        return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)).float()


# ------------------------------------------------------------------------------------------------ caching
class SplitNet(Protocol):
    """A noise predictor split for first-block caching (``sarkit.models.diffusion_unet.DiffusionUNet``, or
    ``ControlledUNet`` whose condition is a ``Guidance`` and whose carry between the parts (the embedding here) has
    a ``select(idx)`` for a subset of the batch)."""

    def first(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> tuple[torch.Tensor, torch.Tensor, Any]: ...

    def rest(self, h0: torch.Tensor, h1: torch.Tensor, emb: Any) -> torch.Tensor: ...

    def head(self, h: torch.Tensor) -> torch.Tensor: ...


@dataclass
class FirstBlockCache:
    """First-block caching of a ``SplitNet`` over one sampling run of a batch (module docstring).

    ``relative_l1`` per tile: mean |r1 − r1_cached| / mean |r1_cached| with r1 = h1 − h0, the cache being the last
    full step's; a tile skips when it is ≤ ``threshold`` (> 0), and reuses its cached h_L − h1. ``skipped`` and
    ``evaluated`` count tile-steps."""

    net: SplitNet
    threshold: float
    skipped: int = 0
    evaluated: int = 0
    r1: torch.Tensor | None = field(default=None, repr=False)
    residual: torch.Tensor | None = field(default=None, repr=False)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any, k: int, n: int) -> torch.Tensor:
        """ε at sampling step ``k`` of ``n`` (0 = first)."""
        h0, h1, emb = self.net.first(x_t, t, cond)
        r1 = h1 - h0
        batch = x_t.shape[0]
        self.evaluated += batch
        if self.threshold <= 0 or k == 0 or k == n - 1 or self.r1 is None:
            h = self.net.rest(h0, h1, emb)
            self.r1, self.residual = r1, h - h1
            return self.net.head(h)
        diff = (r1.float() - self.r1.float()).abs().flatten(1).mean(1)
        rel = diff / self.r1.float().abs().flatten(1).mean(1).clamp_min(1e-12)
        skip = rel <= self.threshold
        n_skip = int(skip.sum())
        self.skipped += n_skip
        if n_skip == batch:
            return self.net.head(h1 + self.residual)
        run = (~skip).nonzero().flatten()
        h_run = self.net.rest(h0[run], h1[run], emb[run] if isinstance(emb, torch.Tensor) else emb.select(run))
        r1_new, res_new = self.r1.clone(), self.residual.clone()
        r1_new[run], res_new[run] = r1[run], h_run - h1[run]
        self.r1, self.residual = r1_new, res_new
        return self.net.head(h1 + res_new)


# ------------------------------------------------------------------------------------------------ the loop
EpsFn = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def sample(eps_fn: EpsFn, plan: SamplingPlan, noise: Callable[[int], torch.Tensor],
           progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Run ``plan`` from x_T = ``noise(plan.steps)``: ``eps_fn(x_t, t, k, n)`` per step (t the original timesteps
    (N,), k the step number from 0, n the step count), step ``i``'s draw ``noise(i)``; ``progress(N)`` after each
    network call on the batch (``progress(N)``: tile evaluations). Returns x_0 (float32, clipped to [-1, 1])."""
    x = noise(plan.steps)
    n = plan.steps
    for k, i in enumerate(reversed(range(n))):
        t = torch.full((x.shape[0],), plan.timesteps[i], dtype=torch.int64, device=x.device)
        eps = eps_fn(x, t, k, n)
        x = plan.step(x, eps, i, noise(i) if plan.needs_noise(i) else None)
        if progress is not None:
            progress(x.shape[0])
    return x.clamp(-1.0, 1.0)
