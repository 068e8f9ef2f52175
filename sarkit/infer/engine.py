"""The inference engine: a loaded generator checkpoint run over batches of model-range tiles.

Eval mode, inference mode, channels-last, optional autocast with a guard that checks it against fp32 once per
checkpoint file, device and precision, optional ``torch.compile``; tiles smaller than the network's tile size
are mirror-padded."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarkit.models.checkpoint import LoadedNetwork
from sarkit.devices import cpu_supports_bf16, resolve_amp
from sarkit.errors import CheckpointError
from sarkit.raster.norm import Normalization
from sarkit.reporting import NULL_REPORTER, Reporter


#: Mixed precision is kept only when its output on the first batch is at least this close to fp32 (PSNR, dB, of
#: the model range mapped to [0, 1]); below it translate falls back to fp32 with a warning.
AMP_MIN_PSNR_DB = 40.0
#: Tiles of the first batch that the mixed-precision check also runs in fp32 (one: each costs an fp32 forward).
AMP_GUARD_TILES = 1


def resolve_amp_auto(amp: str, device: torch.device) -> torch.dtype | None:
    """``auto`` → bf16 on a CUDA device that supports it or on a CPU with native bf16 (AVX512-BF16/AMX), else off;
    other values as ``resolve_amp``.

    On a 2-core AVX512-BF16 EPYC, bf16 autocast runs the pix2pix U-Net about twice as fast as fp32 (see
    docs/benchmarks.md); on CPUs without native bf16 it is emulated and slower, hence off there."""
    if (amp or "auto").lower() == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None
    return resolve_amp(amp, device)


def psnr_01(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) between two model-range ([-1, 1]) arrays mapped to [0, 1]; inf when equal, NaN-safe."""
    d = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) / 2.0
    mse = float(np.mean(np.square(np.nan_to_num(d, nan=1.0))))
    return float("inf") if mse == 0 else -10.0 * float(np.log10(mse))


def _generator_norms(net: LoadedNetwork) -> tuple[Normalization, Normalization]:
    """Input and output normalisations recorded in a generator checkpoint."""
    meta = net.meta
    if "in_norm" not in meta or "out_norm" not in meta:
        raise CheckpointError(f"{net.path} lacks in_norm/out_norm metadata; re-export it with sarkit train")
    return Normalization.from_dict(meta["in_norm"]), Normalization.from_dict(meta["out_norm"])



def _pad_tile(x: np.ndarray, tile: int) -> np.ndarray:
    """Pad a (C, h, w) window to (C, tile, tile) by mirror reflection (scenes smaller than one tile)."""
    c, h, w = x.shape
    if h == tile and w == tile:
        return x
    return np.pad(x, ((0, 0), (0, tile - h), (0, tile - w)), mode="symmetric")


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


class _Generator:
    """Runs batches through the network: eval mode, inference mode, optional autocast; returns float32 numpy.

    The network runs in channels-last memory layout (oneDNN's fast path on CPU, tensor cores on CUDA; measured
    1.2–1.7× faster than contiguous for the pix2pix U-Net on CPU). With autocast, the first ``AMP_GUARD_TILES`` tiles
    of the first batch are also run in fp32 and autocast is kept only when its output is at least ``min_psnr`` dB
    close (``guard``); otherwise the generator falls back to fp32 and warns through ``reporter``. The verdict is
    kept for the process (``_GUARD_VERDICTS``): the next scene with the same checkpoint file is not checked again.

    ``compile``: batches of two tiles or more go through ``torch.compile(module)`` with a dynamic batch dimension
    (one compilation per scene, tens of seconds; measured on the CPU for the pix2pix U-Net, bf16,
    batch 8: 0.0225 instead of 0.024 s per tile after 19 s of compilation). Single tiles and the fp32 check run
    eagerly. When compilation fails (no C++ compiler for inductor on a CPU, say) it warns and runs eagerly.
    """

    def __init__(self, net: LoadedNetwork, device: torch.device, amp: torch.dtype | None, out_channels: int,
                 reporter: Reporter = NULL_REPORTER, min_psnr: float = AMP_MIN_PSNR_DB,
                 channels_last: bool = True, compile: bool = False) -> None:
        self.module = net.module.to(device).eval()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.module.to(memory_format=torch.channels_last)
        self.device = device
        self.amp = amp
        self.out_channels = out_channels
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
        ctx = (torch.autocast(self.device.type, dtype=amp) if amp is not None else contextlib.nullcontext())
        with torch.inference_mode(), ctx:
            xb = torch.from_numpy(batch).to(self.device, non_blocking=True)
            if xb.ndim == 4:
                xb = xb.contiguous(memory_format=self.memory_format)
            yb = self._run(xb, eager)
        if not isinstance(yb, torch.Tensor) or tuple(yb.shape) != (batch.shape[0], self.out_channels,
                                                                     batch.shape[2], batch.shape[3]):
            shape = tuple(yb.shape) if isinstance(yb, torch.Tensor) else type(yb).__name__
            raise CheckpointError(f"generator {self.path} returned {shape} for input {tuple(batch.shape)}; expected "
                                  f"{self.out_channels} channels of the same size (check --tile)")
        return yb.float().contiguous().cpu().numpy()

    def guard(self, batch: np.ndarray) -> np.ndarray:
        """Run ``batch`` with autocast and its first ``AMP_GUARD_TILES`` tiles in fp32 too (eval mode: tiles are
        independent); keep autocast only if their PSNR ≥ ``min_psnr``. Returns the prediction of the precision
        kept."""
        self._checked = True
        low = self._forward(batch, self.amp)
        k = min(AMP_GUARD_TILES, batch.shape[0])
        ref = self._forward(np.ascontiguousarray(batch[:k]), None, eager=True)
        psnr = psnr_01(low[:k], ref)
        if self._guard_key is not None:
            _GUARD_VERDICTS[self._guard_key] = psnr
        if not self._keep_amp_if_close(psnr, "on the first batch"):
            return ref if k == batch.shape[0] else self._forward(batch, None)
        return low

    def _keep_amp_if_close(self, psnr: float, where: str) -> bool:
        """Record the guard's PSNR; below ``min_psnr`` drop autocast for fp32 with a warning. True if kept."""
        self.guard_psnr = psnr
        if psnr >= self.min_psnr:
            return True
        name = str(self.amp).replace("torch.", "")
        self.reporter.warn(f"{name} autocast output is {psnr:.1f} dB PSNR from fp32 {where} (< {self.min_psnr:g} "
                           f"dB): running this generator in fp32 (--amp off skips the check)")
        self.amp = None
        return False

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, C_in, T, T) model-range tiles → (N, C_out, T, T) model-range predictions."""
        if not self._checked:
            return self.guard(batch)
        return self._forward(batch, self.amp)


