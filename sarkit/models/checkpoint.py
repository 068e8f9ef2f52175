"""Checkpoints: exported networks (safetensors + JSON metadata) and full training states (torch, weights only).

Two formats, both safe to load from strangers:

* **Exported network** (``RUN/checkpoints/generator.safetensors``, ``segmenter.safetensors``): the tensors of
  one ``nn.Module`` plus, in the safetensors header, a JSON record ``{"kind", "arch", "arch_kwargs", "meta"}``.
  ``arch`` names a builder in ``sarkit.models.registry.NETWORKS``; ``meta`` holds what inference needs:
  the model name, direction, and the input/output ``Normalization`` dicts (``in_norm``, ``out_norm``) for a
  generator, or ``norm`` and ``classes`` for a segmenter, plus the sarkit version.
* **Training state** (``RUN/checkpoints/state-STEP.pt``): a dict of tensors and plain Python values saved with
  ``torch.save`` and read back with ``torch.load(..., weights_only=True)``.

Both are written atomically (temp file, then rename).
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from sarkit import __version__
from sarkit.errors import CheckpointError, InputError
from sarkit.io import atomic_file

EXPORT_KEY = "sarkit"


@dataclass
class LoadedNetwork:
    """A network rebuilt from an exported checkpoint, in eval mode, with its metadata."""

    module: nn.Module
    kind: str
    arch: str
    arch_kwargs: dict[str, Any]
    meta: dict[str, Any]
    path: Path
    digest: str | Future[str]  # the file's SHA-256, or its computation running in the background

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the checkpoint file (waits for the background hash when it is still running)."""
        if isinstance(self.digest, Future):
            self.digest = self.digest.result()
        return self.digest


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (recorded in outputs to say which checkpoint made them)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_in_background(path: Path) -> Future[str]:
    """``file_sha256(path)`` computed in a low-priority thread (0.1 s for a 200 MB U-Net, off the caller's way)."""
    from sarkit.devices import background_pool

    pool = background_pool("sarkit-hash")
    try:
        return pool.submit(file_sha256, path)
    finally:
        pool.shutdown(wait=False)


def save_network(path: str | Path, net: nn.Module, kind: str, arch: str, arch_kwargs: dict[str, Any],
                 meta: dict[str, Any]) -> Path:
    """Export ``net``'s weights and the record needed to rebuild it, atomically, as safetensors."""
    record = {"kind": kind, "arch": arch, "arch_kwargs": arch_kwargs,
              "meta": {**meta, "sarkit_version": __version__}}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    dest = Path(path)
    with atomic_file(dest) as tmp:
        save_file(tensors, str(tmp), metadata={EXPORT_KEY: json.dumps(record)})
    return dest


def resolve_export(path: str | Path, kind: str) -> Path:
    """The exported ``kind`` network file of ``path``: a RUN directory, a folder holding it (RUN/checkpoints/best)
    or the file itself."""
    p = Path(path)
    if p.is_dir():
        cand = p / "checkpoints" / f"{kind}.safetensors"
        if not cand.exists() and (p / f"{kind}.safetensors").is_file():
            return p / f"{kind}.safetensors"
        if not cand.exists():
            raise CheckpointError(f"{p} has no {kind} checkpoint (expected {cand}); is it a sarkit training run?")
        return cand
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    return p


def read_export_record(path: Path) -> dict[str, Any]:
    """The JSON record stored in an exported checkpoint's header, without loading the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"not a sarkit checkpoint (unreadable safetensors): {path} ({exc})") from None
    if EXPORT_KEY not in md:
        raise CheckpointError(f"not a sarkit checkpoint (no '{EXPORT_KEY}' metadata): {path}")
    return json.loads(md[EXPORT_KEY])


def _build_loaded(arch: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """The network of ``arch`` holding ``state`` (strict): built on the meta device, so its random initialisation
    (a third of a second for the pix2pix U-Net) is skipped, then given the checkpoint's tensors; built normally
    when some parameter or buffer is not in the state dict.

    The tensors are copied first: safetensors hands out views at the header's byte offsets, not 64-byte aligned,
    and oneDNN then takes other code paths (last-bit differences from the same weights in a trained network).
    """
    from sarkit.models.registry import build_network

    with torch.device("meta"):
        net = build_network(arch, kwargs)
    net.load_state_dict({k: v.clone() for k, v in state.items()}, assign=True)
    if any(t.is_meta for t in (*net.parameters(), *net.buffers())):
        net = build_network(arch, kwargs)
        net.load_state_dict(state)
    return net


def load_network(path: str | Path, kind: str = "generator", device: str | torch.device = "cpu") -> LoadedNetwork:
    """Rebuild an exported network (from a RUN directory or a file), load its weights, put it in eval mode. The
    file's SHA-256 is computed in the background meanwhile (``LoadedNetwork.sha256`` waits for it)."""
    p = resolve_export(path, kind)
    record = read_export_record(p)
    digest = _hash_in_background(p)
    if record.get("kind") != kind:
        raise CheckpointError(f"{p} holds a {record.get('kind')} network, a {kind} was expected")
    try:
        state = load_file(str(p), device="cpu")
        net = _build_loaded(record["arch"], record["arch_kwargs"], state)
    except (SafetensorError, RuntimeError) as exc:
        raise CheckpointError(f"corrupt or mismatched checkpoint {p}: {str(exc).splitlines()[0]}") from None
    net.to(device).eval()
    return LoadedNetwork(net, kind, record["arch"], record["arch_kwargs"], record["meta"], p, digest)


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Save a training state dict atomically with ``torch.save``."""
    dest = Path(path)
    with atomic_file(dest) as tmp:
        torch.save(state, tmp)
    return dest


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training state with ``weights_only=True`` (never unpickles code); ``CheckpointError`` if corrupt."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"corrupt checkpoint {p}: {str(exc).splitlines()[0][:200]}") from None


def require_file(path: str | Path, what: str) -> Path:
    """``InputError`` when ``path`` does not exist."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    return p
