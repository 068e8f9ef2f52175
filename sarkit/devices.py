"""Device and mixed-precision resolution for training and inference.

``--device auto`` picks ``cuda:LOCAL_RANK`` when CUDA is available (one GPU per process under torchrun), else the
CPU. Asking for CUDA where there is none, or for a GPU index that does not exist, is an ``InputError``.
``--amp bf16|fp16|off``: bf16 autocast needs a CPU or a GPU that supports bf16; fp16 needs CUDA and uses a
gradient scaler.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum

import torch

from sarkit.errors import InputError

AMP_CHOICES = ("off", "bf16", "fp16")


class AmpMode(str, Enum):
    """``--amp``: autocast precision; ``auto`` (translate, eval) is decided per device by
    ``sarkit.infer.engine.resolve_amp_auto``, training takes the explicit modes only."""

    AUTO = "auto"
    OFF = "off"
    BF16 = "bf16"
    FP16 = "fp16"

    @classmethod
    def parse(cls, value: "str | AmpMode | None", default: "AmpMode | str" = "off",
              allow_auto: bool = True) -> "AmpMode":
        """A mode from its name (case and surrounding blanks ignored; None or empty = ``default``); ``InputError``
        naming the choices otherwise (``auto`` refused unless ``allow_auto``)."""
        if isinstance(value, AmpMode) and (allow_auto or value is not AmpMode.AUTO):
            return value
        text = (str(value.value if isinstance(value, AmpMode) else value or "") or str(cls(default).value))
        text = text.strip().lower() or str(cls(default).value)
        if text in AMP_CHOICES or (allow_auto and text == "auto"):
            return cls(text)
        raise InputError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {text!r}")


def resolve_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto`` → cuda:LOCAL_RANK if CUDA is available else cpu; ``cpu``; ``cuda``/``cuda:N`` (must exist)."""
    spec = (spec or "auto").strip().lower()
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto")
        if spec == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        index = spec.split(":", 1)[1]
        if not index.isdigit():
            raise InputError(f"--device {spec}: expected cuda:N with N a GPU index")
        if int(index) >= torch.cuda.device_count():
            raise InputError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here "
                             f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
        return torch.device("cuda", int(index))
    raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``--amp``: None (off), bfloat16 or float16 (CUDA only)."""
    amp = (amp or "off").strip().lower()
    if amp not in AMP_CHOICES:
        raise InputError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    if amp == "off":
        return None
    if amp == "fp16":
        if device.type != "cuda":
            raise InputError("--amp fp16 needs a CUDA device; use --amp bf16 or off on the CPU")
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use fp16")
    return torch.bfloat16


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it; else bf16 is emulated (slow)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # older/other builds: fall back to the kernel's CPU flags
        try:
            with open("/proc/cpuinfo") as f:
                flags = f.read()
        except OSError:
            return False
        return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def make_scaler(amp_dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
    """Gradient scaler, enabled only for fp16 (bf16 and fp32 keep the full exponent range)."""
    enabled = amp_dtype == torch.float16 and device.type == "cuda"
    return torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu", enabled=enabled)


@dataclass(frozen=True)
class BackendSettings:
    """What ``configure_backends`` decided (recorded in config.json)."""

    threads: int
    cudnn_benchmark: bool
    channels_last: bool


def configure_backends(device: torch.device, world_size: int = 1, deterministic: bool = False) -> BackendSettings:
    """Speed settings: cuDNN autotuning and TF32 on CUDA; on CPU one thread pool sized to cores per process.

    Channels-last memory layout is chosen on CUDA (tensor cores) only: on CPU the fused Adam update copies
    channels-last parameters, which measured ~10 % slower per pix2pix step than the default layout.
    Denormal floats are flushed to zero (tiny GAN activations/gradients otherwise hit slow CPU paths).
    ``deterministic`` asks torch for deterministic kernels where they exist (seeded CPU runs are reproducible).
    """
    torch.set_flush_denormal(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        threads = torch.get_num_threads()
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env = os.environ.get("OMP_NUM_THREADS")
        threads = int(env) if env and env.isdigit() else max(1, cores // max(world_size, 1))
        torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return BackendSettings(threads, bool(device.type == "cuda" and not deterministic), device.type == "cuda")


#: Nice value of sarkit's helper threads (translate's reading, blending and writing threads with a GPU generator,
#: checkpoint hashing; Linux sets it per thread), so that they yield to busy threads of normal priority (a
#: descheduled OpenMP thread stalls its siblings at the next barrier). It softens the contention but does not
#: remove it: on Linux 6.18 (EEVDF) a nice-19 thread compressing beside a 2-thread CPU generator still got half
#: a core and delayed the generator by as long, which is why translate runs no helper threads with a CPU generator.
#: Measured on a 2-core CPU, 4096² translate with helper threads: ratio 0.829 with nice 19, 0.797 without.
BACKGROUND_NICE = 19


def lower_thread_priority() -> None:
    """Raise the calling thread's nice value to ``BACKGROUND_NICE`` where the OS has per-thread priorities."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
    except (AttributeError, OSError):
        pass


def background_pool(name: str) -> ThreadPoolExecutor:
    """A one-thread pool whose thread runs at a low priority (``BACKGROUND_NICE``)."""
    return ThreadPoolExecutor(1, thread_name_prefix=name, initializer=lower_thread_priority)
