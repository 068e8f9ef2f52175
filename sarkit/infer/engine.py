"""The inference engine: predictors, the one way sarkit runs a model over batches of model-range tiles.

A **predictor** is a loaded model with a declared ``Contract``: the normalisation (bands and fixed ranges) of what
it takes and of what it gives, its output scale (output pixel size = input pixel size / ``scale``), the tile it
runs on (windows smaller than the tile are mirror-padded to it and the prediction cropped back) and the number of
network calls one batch costs (``steps``). Its batch call maps model-range numpy ``(N, C_in, h, w)`` to
``(N, C_out, h·scale, w·scale)``. Whatever runs predictors (``sarkit.infer.translate``'s tiled scene runner,
``sarkit eval --checkpoint``) relies on that contract only, never on a checkpoint's metadata or its module.

* ``NetworkPredictor``: one exported generator checkpoint. Eval mode, inference mode, channels-last, optional
  autocast with a guard that checks it against fp32 once per checkpoint file, device and precision
  (``_GUARD_VERDICTS``), optional ``torch.compile``. ``load_predictor`` builds one from a run directory, a file
  or a loaded network.
* ``ChainPredictor``: predictors run one after the other, the output of one the input of the next (each link's
  output bands and ranges must be the next one's input): the in-contract of the first, the out-contract of the
  last, scales multiplied, the tile the largest any stage needs, steps added.

**Iterative predictors** (a diffusion or flow sampler) plug in as a ``Predictor`` subclass, without changing the
runners: the contract's ``steps`` says how many network calls a batch costs, and the batch call receives
``seeds``, one integer per tile. A sampler draws each tile's starting noise from its own seed
(``np.random.default_rng(seed)`` or a ``torch.Generator`` seeded with it), so that a tile's prediction depends on
the tile and its seed only, not on which batch it travels in; it then makes its ``steps`` network calls in its
``_predict`` (reusing ``NetworkPredictor._forward`` for the autocast, layout and inference mode of each call) and
returns the last state. Runners pass seeds derived from the tile's place (translate: the tile's row-major index in
the scene's window grid); deterministic predictors ignore them. A chain hands stage ``k`` of ``K`` the seeds
``seed·K + k``, so stages never share noise.

Where a runner knows them it also passes ``windows``, each tile's ``PixelWindow`` in the scene (translate does;
``eval --checkpoint`` runs tiles of a tile set and passes none), and ``progress``, called with the number of tile
network evaluations as they happen (translate's bar counts tiles × steps). A predictor that needs them overrides
``_predict_at``: ``sarkit.infer.diffusion.DiffusionPredictor`` keys its noise by scene pixel, so that overlapping
tiles draw the same noise where they overlap and the result does not depend on the tiling, batch or order. Lines
a predictor wants in the run's log after a scene (``run_notes``: first-block cache statistics) are reported by the
runner.
"""

from __future__ import annotations

import abc
import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sarkit.devices import AmpMode, cpu_supports_bf16, resolve_amp, resolve_device
from sarkit.errors import CheckpointError, InputError
from sarkit.eval.metrics import psnr_from_mse
from sarkit.models.checkpoint import LoadedNetwork, load_network
from sarkit.raster.grid import PixelSize, PixelWindow
from sarkit.raster.norm import Normalization
from sarkit.reporting import NULL_REPORTER, Reporter


#: Mixed precision is kept only when its output on the first batch is at least this close to fp32 (PSNR, dB, of
#: the model range mapped to [0, 1]); below it translate falls back to fp32 with a warning.
AMP_MIN_PSNR_DB = 40.0
#: Tiles of the first batch that the mixed-precision check also runs in fp32 (one: each costs an fp32 forward).
AMP_GUARD_TILES = 1
#: Tile size assumed for a checkpoint that does not record one.
DEFAULT_TILE = 256
#: Bytes a generator's activations take per tile pixel in inference mode, for the batch-memory estimate: measured
#: 410–520 for the pix2pix U-Net (ngf 64, fp32, CPU) at 1024² and 512² tiles; the estimate is a guard against
#: impossible tiles, not a budget.
ACTIVATION_BYTES_PER_PIXEL = 512


# ------------------------------------------------------------------------------------------------ precision
def resolve_amp_auto(amp: "str | AmpMode | None", device: torch.device) -> torch.dtype | None:
    """``auto`` → bf16 on a CUDA device that supports it or on a CPU with native bf16 (AVX512-BF16/AMX), else off;
    other values as ``resolve_amp``.

    On a 2-core AVX512-BF16 EPYC, bf16 autocast runs the pix2pix U-Net about twice as fast as fp32 (see
    docs/benchmarks.md); on CPUs without native bf16 it is emulated and slower, hence off there."""
    mode = AmpMode.parse(amp, default="auto")
    if mode is AmpMode.AUTO:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None
    return resolve_amp(mode.value, device)


# ------------------------------------------------------------------------------------------------ contract
@dataclass(frozen=True)
class Contract:
    """What a predictor takes and gives: model-range tiles of ``in_norm``'s bands, at least ``tile`` pixels a
    side, become ``out_norm``'s bands at ``scale`` times the resolution, in ``steps`` network calls a batch.
    ``tile_multiple``: tile sides the network can run on are multiples of it (``tile`` is one). ``pixel_size``:
    the input pixel size it was trained on (None = unknown: inputs are taken as they come). ``act_bytes``: the
    working memory a tile pixel takes while it runs (None = ``ACTIVATION_BYTES_PER_PIXEL``)."""

    in_norm: Normalization
    out_norm: Normalization
    tile: int
    scale: int = 1
    steps: int = 1
    tile_multiple: int = 1
    pixel_size: PixelSize | None = None
    act_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("tile", "scale", "steps", "tile_multiple"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"predictor {name} must be a positive integer, got {v!r}")
        if self.tile % self.tile_multiple:
            raise InputError(f"predictor tile {self.tile} is not a multiple of {self.tile_multiple}")

    @property
    def in_bands(self) -> tuple[str, ...]:
        return tuple(self.in_norm.bands)

    @property
    def out_bands(self) -> tuple[str, ...]:
        return tuple(self.out_norm.bands)


def checkpoint_contract(net: LoadedNetwork, tile: int | None = None) -> Contract:
    """The contract a generator checkpoint records: its in/out normalisation (``CheckpointError`` when missing),
    its tile size (``tile`` overrides it; ``InputError`` when the network cannot run on it), its training pixel
    size (None for checkpoints that do not record one), scale 1, one call a batch."""
    meta = net.meta
    if "in_norm" not in meta or "out_norm" not in meta:
        raise CheckpointError(f"{net.path} lacks in_norm/out_norm metadata; re-export it with sarkit train")
    own = int(meta.get("tile_size", DEFAULT_TILE))
    multiple = tile_multiple(net.module)
    check_tile(tile, own, multiple, net.path.name)
    try:
        size = PixelSize.from_dict(meta["pixel_size"]) if meta.get("pixel_size") else None
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{net.path} has an unreadable pixel_size record ({meta['pixel_size']!r}); "
                              f"re-export it with sarkit train") from None
    return Contract(Normalization.from_dict(meta["in_norm"]), Normalization.from_dict(meta["out_norm"]),
                    int(tile or own), tile_multiple=multiple, pixel_size=size)


def tile_multiple(module: torch.nn.Module) -> int:
    """The number tile sides must be a multiple of for ``module``: the product of its convolutions' strides
    (2^8 = 256 for the 8-level pix2pix U-Net, 4 for the ResNet generators, 1 without strided convolutions), and
    the multiple a network declares as its ``tile_multiple`` attribute (one that downsamples by pooling: gan-prior's
    encoder), whichever is larger."""
    m = 1
    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d):
            m *= max(int(s) for s in layer.stride)
    declared = getattr(module, "tile_multiple", None)
    return math.lcm(m, declared) if isinstance(declared, int) and declared > 0 else m


def check_tile(tile: int | None, own: int, multiple: int, name: str) -> None:
    """``InputError`` naming valid sizes when ``tile`` (None = the checkpoint's ``own``) is not a positive multiple
    of ``multiple``."""
    t = own if tile is None else tile
    if isinstance(t, int) and not isinstance(t, bool) and t >= 1 and t % multiple == 0:
        return
    what = f"--tile {tile}" if tile is not None else f"the checkpoint's tile size {own}"
    valid = ", ".join(str(multiple * k) for k in range(1, 4))
    raise InputError(f"{what} does not suit generator {name}: its strided layers need a multiple of {multiple} "
                     f"({valid}, …; the checkpoint was trained on {own})")


def batch_memory_bytes(contract: Contract, batch_size: int) -> int:
    """Estimated memory of one batch of tiles: the padded input and the prediction (float32) and the network's
    activations (``contract.act_bytes``, else ``ACTIVATION_BYTES_PER_PIXEL``, a tile pixel)."""
    px = contract.tile * contract.tile
    out_px = px * contract.scale * contract.scale
    act = contract.act_bytes or ACTIVATION_BYTES_PER_PIXEL
    return batch_size * (4 * contract.in_norm.channels * px + (4 * contract.out_norm.channels + act) * out_px)


def device_memory_bytes(device: torch.device) -> int | None:
    """The memory a batch may at most take on ``device``: a GPU's total memory, else the machine's physical RAM;
    None when unknown."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.get_device_properties(device).total_memory)
        except (RuntimeError, AssertionError):
            return None
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_batch_memory(contract: Contract, batch_size: int, device: torch.device) -> None:
    """``InputError`` before any allocation when one batch of tiles would need more memory than ``device`` has
    (``batch_memory_bytes``), saying the estimate and what to change."""
    need, have = batch_memory_bytes(contract, batch_size), device_memory_bytes(device)
    if have is None or need <= have:
        return
    where = "GPU" if device.type == "cuda" else "machine"
    raise InputError(f"--tile {contract.tile} with --batch-size {batch_size} needs about {_gib(need)} for one batch "
                     f"of tiles, more than this {where}'s {_gib(have)}; use a smaller --tile or --batch-size")


def _gib(n: int) -> str:
    """Bytes as GiB (or TiB) for messages."""
    return f"{n / 2 ** 40:.1f} TiB" if n >= 2 ** 40 else f"{n / 2 ** 30:.1f} GiB"


def same_model_range(a: Normalization, b: Normalization) -> bool:
    """Whether two normalisations map the same bands to [-1, 1] alike (modality, bands, lo, hi)."""
    return (a.modality, tuple(a.bands), tuple(map(float, a.lo)), tuple(map(float, a.hi))) == \
        (b.modality, tuple(b.bands), tuple(map(float, b.lo)), tuple(map(float, b.hi)))


def pad_batch(batch: np.ndarray, tile: int) -> np.ndarray:
    """Mirror-pad (symmetric reflection) the bottom and right of a (N, C, h, w) batch up to ``tile`` in each
    dimension shorter than it; the batch itself when neither is."""
    h, w = batch.shape[-2:]
    if h >= tile and w >= tile:
        return batch
    return np.pad(batch, ((0, 0), (0, 0), (0, max(tile - h, 0)), (0, max(tile - w, 0))), mode="symmetric")


# ------------------------------------------------------------------------------------------------ predictors
class Predictor(abc.ABC):
    """A model with a declared ``Contract`` and a batch call; subclasses give ``_predict`` and ``provenance``."""

    contract: Contract
    device: torch.device
    name: str

    @property
    def in_norm(self) -> Normalization:
        return self.contract.in_norm

    @property
    def out_norm(self) -> Normalization:
        return self.contract.out_norm

    @property
    def tile(self) -> int:
        return self.contract.tile

    @property
    def scale(self) -> int:
        return self.contract.scale

    @property
    def steps(self) -> int:
        return self.contract.steps

    def __call__(self, batch: np.ndarray, seeds: Sequence[int] | None = None,
                 windows: Sequence[PixelWindow] | None = None,
                 progress: Callable[[int], None] | None = None) -> np.ndarray:
        """(N, C_in, h, w) model-range float32 tiles → (N, C_out, h·scale, w·scale) float32 predictions; windows
        shorter than the tile are mirror-padded to it and their prediction cropped back. ``seeds``: one per tile
        (random draws of iterative predictors; None where a runner has none); ``windows``: each tile's place in
        the scene (None where unknown); ``progress(n)``: told of ``n`` more tile network evaluations."""
        if batch.ndim != 4 or batch.shape[1] != self.in_norm.channels:
            raise CheckpointError(f"{self.name} takes (N, {self.in_norm.channels}, H, W) tiles of "
                                  f"{', '.join(self.in_norm.bands)}, got {tuple(batch.shape)}")
        if seeds is not None and len(seeds) != batch.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for a batch of {batch.shape[0]} tiles")
        if windows is not None and len(windows) != batch.shape[0]:
            raise ValueError(f"{len(windows)} windows for a batch of {batch.shape[0]} tiles")
        n, _, h, w = batch.shape
        x = pad_batch(batch, self.tile)
        y = self._predict_at(x, seeds, windows, progress)
        s = self.scale
        expected = (n, self.out_norm.channels, x.shape[2] * s, x.shape[3] * s)
        if tuple(y.shape) != expected:
            raise CheckpointError(f"{self.name} returned {tuple(y.shape)} for input {tuple(x.shape)}; expected "
                                  f"{expected} (check --tile)")
        return y if x is batch else y[:, :, :h * s, :w * s]

    @abc.abstractmethod
    def _predict(self, x: np.ndarray, seeds: Sequence[int] | None) -> np.ndarray:
        """The prediction of a batch at least one tile a side (``__call__`` pads and checks around it)."""

    def _predict_at(self, x: np.ndarray, seeds: Sequence[int] | None, windows: Sequence[PixelWindow] | None,
                    progress: Callable[[int], None] | None) -> np.ndarray:
        """``_predict`` with the tiles' scene windows and a progress callback: by default the windows are not
        needed and progress is told of ``steps`` evaluations a tile once the batch is done."""
        y = self._predict(x, seeds)
        if progress is not None:
            progress(self.steps * x.shape[0])
        return y

    def run_notes(self) -> list[str]:
        """Lines for the run's log about what the predictor did so far (none by default)."""
        return []

    @abc.abstractmethod
    def provenance(self) -> dict[str, str]:
        """What made the predictions, for output tags: model, arch, checkpoint (the file name, not a path of this
        machine), checkpoint_sha256, direction."""


#: Autocast guard results of this process, {``_guard_key``: PSNR dB}: a generator file is checked once per
#: device and precision, not once per scene (``translate A.tif B.tif …``, or a library loop over scenes).
_GUARD_VERDICTS: dict[tuple[Any, ...], float] = {}


def _guard_key(path: Path, device: torch.device, amp: torch.dtype, min_psnr: float,
               compiled: bool) -> tuple[Any, ...] | None:
    """What one guard check holds for: the checkpoint file (path, inode, size, modification time), the device,
    the precision, the bound and compilation; None where the file cannot be identified (no caching)."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, str(device), str(amp), min_psnr,
            compiled)


def guard_psnr(low: np.ndarray, ref: np.ndarray) -> float:
    """PSNR (dB) of model-range predictions ``low`` against ``ref``, both mapped to [0, 1] as eval reports it:
    ``psnr_from_mse`` of the mean squared difference over every value; a NaN anywhere gives NaN (never kept)."""
    d = (np.asarray(low, dtype=np.float64) - np.asarray(ref, dtype=np.float64)) * 0.5
    return float(psnr_from_mse(float(np.mean(np.square(d)))))


class NetworkPredictor(Predictor):
    """One generator checkpoint as a predictor: eval mode, inference mode, optional autocast; float32 numpy out.

    The network runs in channels-last memory layout (oneDNN's fast path on CPU, tensor cores on CUDA; measured
    1.2–1.7× faster than contiguous for the pix2pix U-Net on CPU). With autocast, the first ``AMP_GUARD_TILES`` tiles
    of the first batch are also run in fp32 and autocast is kept only when its output is at least ``min_psnr`` dB
    close (``guard``); otherwise the predictor falls back to fp32 and warns through ``reporter``. The verdict is
    kept for the process (``_GUARD_VERDICTS``): the next scene with the same checkpoint file is not checked again.

    ``tile``: the tile it runs on (None = the checkpoint's). ``compile``: batches of two tiles or more go through
    ``torch.compile(module)`` with a dynamic batch dimension (one compilation per scene, tens of seconds; measured
    on the CPU for the pix2pix U-Net, bf16, batch 8: 0.0225 instead of 0.024 s per tile after 19 s of
    compilation). Single tiles and the fp32 check run eagerly. When compilation fails (no C++ compiler for
    inductor on a CPU, say) it warns and runs eagerly. Deterministic: ``seeds`` are ignored.
    """

    def __init__(self, net: LoadedNetwork, device: torch.device, amp: torch.dtype | None,
                 reporter: Reporter = NULL_REPORTER, tile: int | None = None, min_psnr: float = AMP_MIN_PSNR_DB,
                 channels_last: bool = True, compile: bool = False) -> None:
        self.contract = checkpoint_contract(net, tile)
        self.net = net
        self.name = f"generator {net.path}"
        self.module = net.module.to(device).eval()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.module.to(memory_format=torch.channels_last)
        self.device = device
        self.amp = amp
        self.path = net.path
        self.reporter = reporter
        self.min_psnr = min_psnr
        self.guard_psnr: float | None = None  # measured on the first batch when autocast is on
        self._checked = amp is None
        self.compiled: Any = torch.compile(self.module) if compile else None
        self._guard_key = None if amp is None else _guard_key(net.path, device, amp, min_psnr, compile)
        if self._guard_key is not None and self._guard_key in _GUARD_VERDICTS:
            self._checked = True
            self._keep_amp_if_close(_GUARD_VERDICTS[self._guard_key], "checked on an earlier scene")

    def provenance(self) -> dict[str, str]:
        net = self.net
        return {"model": str(net.meta.get("model", net.arch)), "arch": net.arch, "checkpoint": net.path.name,
                "checkpoint_sha256": net.sha256, "direction": str(net.meta.get("direction", ""))}

    def _run(self, xb: torch.Tensor, eager: bool) -> Any:
        """The network on ``xb``: compiled (batch dimension dynamic) unless ``eager``, a single tile, or
        compilation failed before."""
        if self.compiled is None or eager or xb.shape[0] < 2:
            return self.module(xb)
        torch._dynamo.mark_dynamic(xb, 0)
        try:
            return self.compiled(xb)
        except Exception as exc:  # compilation errors come from several torch modules
            self.compiled = None
            self.reporter.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
                               "running the generator eagerly")
            return self.module(xb)

    def _forward(self, batch: np.ndarray, amp: torch.dtype | None, eager: bool = False) -> np.ndarray:
        """One network call on a (N, C, H, W) batch in precision ``amp`` (None = fp32) → float32 numpy."""
        ctx = (torch.autocast(self.device.type, dtype=amp) if amp is not None else contextlib.nullcontext())
        with torch.inference_mode(), ctx:
            xb = torch.from_numpy(batch).to(self.device, non_blocking=True)
            if xb.ndim == 4:
                xb = xb.contiguous(memory_format=self.memory_format)
            yb = self._run(xb, eager)
        if not isinstance(yb, torch.Tensor):
            raise CheckpointError(f"{self.name} returned {type(yb).__name__} for input {tuple(batch.shape)}; "
                                  "expected a tensor")
        return yb.float().contiguous().cpu().numpy()

    def guard(self, batch: np.ndarray) -> np.ndarray:
        """Run ``batch`` with autocast and its first ``AMP_GUARD_TILES`` tiles in fp32 too (eval mode: tiles are
        independent); keep autocast only if their PSNR ≥ ``min_psnr``. Returns the prediction of the precision
        kept."""
        self._checked = True
        low = self._forward(batch, self.amp)
        k = min(AMP_GUARD_TILES, batch.shape[0])
        ref = self._forward(np.ascontiguousarray(batch[:k]), None, eager=True)
        if low.shape[1:] != ref.shape[1:]:
            return low  # not a prediction of the contract's shape: ``__call__`` says so
        psnr = guard_psnr(low[:k], ref)
        if self._guard_key is not None:
            _GUARD_VERDICTS[self._guard_key] = psnr
        if not self._keep_amp_if_close(psnr, "on the first batch"):
            return ref if k == batch.shape[0] else self._forward(batch, None)
        return low

    def _keep_amp_if_close(self, psnr: float, where: str) -> bool:
        """Record the guard's PSNR; below ``min_psnr`` (or NaN) drop autocast for fp32 with a warning. True if
        kept."""
        self.guard_psnr = psnr
        if psnr >= self.min_psnr:
            return True
        name = str(self.amp).replace("torch.", "")
        self.reporter.warn(f"{name} autocast output is {psnr:.1f} dB PSNR from fp32 {where} (< {self.min_psnr:g} "
                           f"dB): running this generator in fp32 (--amp off skips the check)")
        self.amp = None
        return False

    def _predict(self, x: np.ndarray, seeds: Sequence[int] | None) -> np.ndarray:
        if not self._checked:
            return self.guard(x)
        return self._forward(x, self.amp)


class ChainPredictor(Predictor):
    """Predictors run one after the other: stage k's prediction is stage k+1's input.

    Contract: the first stage's input, the last stage's output, scales multiplied, steps added, and the tile the
    largest any stage needs, in input pixels (``ceil(tile_k / scale of the stages before k)``), rounded up to a
    multiple of every stage's ``tile_multiple``, so that windows are mirror-padded once, at the chain's input; the
    training pixel size of the first stage. Each link's output bands and ranges must be the next stage's input
    (``CheckpointError`` otherwise). ``device``: the first stage's that is not the CPU, else the CPU.
    """

    def __init__(self, stages: Sequence[Predictor]) -> None:
        if not stages:
            raise InputError("a predictor chain needs at least one predictor")
        for a, b in zip(stages, stages[1:]):
            if not same_model_range(a.out_norm, b.in_norm):
                raise CheckpointError(
                    f"cannot chain {a.name} into {b.name}: it predicts {', '.join(a.out_norm.bands)} "
                    f"({a.out_norm.modality}, ranges {_ranges(a.out_norm)}) but the next takes "
                    f"{', '.join(b.in_norm.bands)} ({b.in_norm.modality}, ranges {_ranges(b.in_norm)})")
        self.stages = list(stages)
        scale, tile = 1, 1
        for st in self.stages:
            tile = max(tile, math.ceil(st.tile / scale))
            scale *= st.scale
        multiple = math.lcm(*(st.contract.tile_multiple for st in self.stages))
        tile = -(-tile // multiple) * multiple
        self.contract = Contract(self.stages[0].in_norm, self.stages[-1].out_norm, tile, scale,
                                 sum(st.steps for st in self.stages), multiple, self.stages[0].contract.pixel_size)
        self.device = next((st.device for st in self.stages if st.device.type != "cpu"), torch.device("cpu"))
        self.name = " → ".join(st.name for st in self.stages)

    def _predict(self, x: np.ndarray, seeds: Sequence[int] | None) -> np.ndarray:
        return self._predict_at(x, seeds, None, None)

    def _predict_at(self, x: np.ndarray, seeds: Sequence[int] | None, windows: Sequence[PixelWindow] | None,
                    progress: Callable[[int], None] | None) -> np.ndarray:
        """Stage after stage; stage k gets the seeds ``seed·K + k`` and the windows scaled to its input."""
        k_all = len(self.stages)
        scale = 1
        for k, st in enumerate(self.stages):
            wins = None if windows is None else [PixelWindow(w.row_off * scale, w.col_off * scale,
                                                             x.shape[2], x.shape[3]) for w in windows]
            x = st(x, None if seeds is None else [int(s) * k_all + k for s in seeds], wins, progress)
            scale *= st.scale
        return x

    def run_notes(self) -> list[str]:
        return [line for st in self.stages for line in st.run_notes()]

    def provenance(self) -> dict[str, str]:
        parts = [st.provenance() for st in self.stages]
        return {key: " + ".join(p.get(key, "") for p in parts) for key in parts[0]}


def _ranges(norm: Normalization) -> str:
    return ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in zip(norm.lo, norm.hi))


def load_predictor(checkpoint: str | Path | LoadedNetwork, device: str | torch.device = "cpu",
                   amp: "str | AmpMode | torch.dtype | None" = AmpMode.OFF, reporter: Reporter = NULL_REPORTER,
                   tile: int | None = None, compile: bool = False, sampling: Any = None) -> Predictor:
    """A generator checkpoint (a run directory, a ``.safetensors`` file or a loaded network) as a predictor on
    ``device``: ``amp`` a mode (resolved on the device, ``auto`` included) or an autocast dtype (None = fp32);
    ``tile`` None = the checkpoint's tile size. A diffusion checkpoint (a ``diffusion`` record in its metadata)
    becomes a ``DiffusionPredictor`` sampling with ``sampling`` (``sarkit.infer.diffusion.SamplingOptions``; None
    = the checkpoint's defaults); ``sampling`` options given for a one-call generator are an ``InputError``. A
    fusion checkpoint (a ``fusion`` record) becomes a ``sarkit.infer.fusion.FusionPredictor`` (its upstream runs,
    then its head; ``sampling`` for a diffusion x_G)."""
    from sarkit.infer.diffusion import SamplingOptions, check_sampling, diffusion_predictor, is_diffusion
    from sarkit.infer.fusion import FusionPredictor, is_fusion

    dev = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = amp if amp is None or isinstance(amp, torch.dtype) else resolve_amp_auto(amp, dev)
    net = checkpoint if isinstance(checkpoint, LoadedNetwork) else load_network(checkpoint, "generator", dev)
    if is_fusion(net):  # regression → generative branch → fusion head (sarkit.infer.fusion)
        if compile:
            reporter.warn("--compile is not used for fusion checkpoints: their three networks run eagerly")
        return FusionPredictor(net, dev, dtype, reporter, tile=tile, sampling=sampling)
    if is_diffusion(net):
        if compile:
            reporter.warn("--compile is not used for diffusion checkpoints: sampling runs the network eagerly")
        return diffusion_predictor(net, dev, dtype, reporter, tile=tile, sampling=sampling or SamplingOptions())
    check_sampling(net, sampling)
    return NetworkPredictor(net, dev, dtype, reporter, tile=tile, compile=compile)
