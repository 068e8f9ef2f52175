"""Device and AMP resolution (sarkit.devices)."""

from __future__ import annotations

import sys

import pytest
import torch

from sarkit.devices import configure_backends, make_scaler, resolve_amp, resolve_device
from sarkit.errors import InputError


def test_auto_and_cpu_resolve() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_absent_is_input_error(spec: str) -> None:
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu"])
def test_bad_device_spec_is_input_error(spec: str) -> None:
    with pytest.raises(InputError):
        resolve_device(spec)


def test_amp_choices_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(InputError, match="fp16 needs a CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(InputError):
        resolve_amp("int8", cpu)


def test_scaler_only_enabled_for_fp16_on_cuda() -> None:
    assert not make_scaler(None, torch.device("cpu")).is_enabled()
    assert not make_scaler(torch.bfloat16, torch.device("cpu")).is_enabled()


def test_configure_backends_sets_threads_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        s = configure_backends(torch.device("cpu"))
        assert s.threads == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cpu_supports_bf16_is_a_bool_and_matches_cpu_flags() -> None:
    from sarkit.devices import cpu_supports_bf16

    value = cpu_supports_bf16()
    assert isinstance(value, bool)
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return
    if value:  # oneDNN only reports native bf16 where the CPU has the instructions
        assert "avx512_bf16" in flags or "amx_bf16" in flags or "avx_ne_convert" in flags


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are a Linux feature")
def test_background_pool_thread_runs_at_low_priority():
    import os
    import threading

    from sarkit.devices import BACKGROUND_NICE, background_pool

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = nice()
    pool = background_pool("test")
    try:
        assert pool.submit(nice).result() == BACKGROUND_NICE
    finally:
        pool.shutdown()
    assert nice() == before  # the caller's own priority is left alone
