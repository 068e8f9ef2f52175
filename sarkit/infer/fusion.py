"""The fusion predictor: regression → generative branch → fusion head, per tile, in the one inference engine.

A ``fusion`` checkpoint (``sarkit.models.fusion``) exports the head only; its ``fusion`` metadata names the two
upstream generator files and their SHA-256. ``FusionPredictor`` opens them as the engine's own predictors
(``load_predictor``: a ``NetworkPredictor``, or a ``DiffusionPredictor`` for a con-diffusion x_G, which samples with
the scene-keyed noise of any diffusion checkpoint), refuses a file whose SHA-256 is not the recorded one, and runs,
on each batch: x_R = R(x); x_G = G(x_R) for a gan-prior run or G(x) for a translator of the input; x̂ = head(x_R,
x_G). translate and ``eval --checkpoint`` run it like any predictor (same padding, blending, batch memory bound and
COG output).

Contract: the regression's input, the head's output, scale 1, the largest tile any part needs rounded to a multiple
of every part's ``tile_multiple``, steps = R's + G's + 1, the regression's training pixel size; the activation memory
of a tile pixel is the larger of the branches' plus the head's (its width, twice, and x_R and x_G kept).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from sarkit.errors import CheckpointError
from sarkit.infer.engine import (ACTIVATION_BYTES_PER_PIXEL, Contract, Predictor, checkpoint_contract,
                                 load_predictor, same_model_range)
from sarkit.models.checkpoint import LoadedNetwork, load_network
from sarkit.raster.grid import PixelWindow
from sarkit.reporting import NULL_REPORTER, Reporter


def is_fusion(net: LoadedNetwork) -> bool:
    """Whether an exported generator is a fusion head (its metadata has a ``fusion`` record)."""
    return isinstance(net.meta.get("fusion"), dict)


def open_upstream(rec: Any, role: str, device: torch.device, amp: torch.dtype | None = None,
                  reporter: Reporter = NULL_REPORTER, sampling: Any = None) -> Predictor:
    """The recorded upstream generator file as a predictor; ``CheckpointError`` (one line) when it is gone or its
    SHA-256 is not the recorded one."""
    path = Path(rec.path)
    if not path.is_file():
        raise CheckpointError(f"the fusion's {role} run {path} is missing; restore it or retrain the fusion")
    net = load_network(path, "generator", device)
    if net.sha256 != rec.sha256:
        raise CheckpointError(f"the fusion's {role} run {path} changed (sha256 {net.sha256[:12]}…, the fusion was "
                              f"trained on {rec.sha256[:12]}…); restore that run or retrain the fusion")
    return load_predictor(net, device, amp, reporter, sampling=sampling)


@dataclass
class Branches:
    """The regression predictor and the generative one, and whether the latter takes x_R (gan-prior) or x."""

    r: Predictor
    g: Predictor
    g_on_xr: bool
    device: torch.device

    def run(self, x: np.ndarray, seeds: Sequence[int] | None = None, windows: Sequence[PixelWindow] | None = None,
            progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(x_R, x_G) of a model-range batch; the branches get the seeds ``2·seed`` and ``2·seed + 1``."""
        s_r = None if seeds is None else [2 * int(s) for s in seeds]
        s_g = None if seeds is None else [2 * int(s) + 1 for s in seeds]
        x_r = self.r(x, s_r, windows, progress)
        x_g = self.g(x_r if self.g_on_xr else x, s_g, windows, progress)
        return x_r, x_g


def sampling_options(recorded: dict[str, Any] | None, given: Any = None) -> Any:
    """The x_G sampling: the options given (translate's --sampler/--steps/…) when any, else the fusion's record."""
    from sarkit.infer.diffusion import SamplingOptions

    if given is not None and given.given():
        return given
    rec = recorded or {}
    return SamplingOptions(sampler=rec.get("sampler") or None, steps=rec.get("steps") or None)


def open_branches(x_r: Any, x_g: Any, device: torch.device, amp: torch.dtype | None = None,
                  reporter: Reporter = NULL_REPORTER, sampling: Any = None) -> Branches:
    """Both upstream runs (``UpstreamRun`` records) as predictors on ``device``, their contracts checked again;
    ``sampling`` (``SamplingOptions``) for a diffusion x_G."""
    r = open_upstream(x_r, "regression (x_R)", device, amp, reporter)
    g = open_upstream(x_g, "generative (x_G)", device, amp, reporter, sampling)
    on_xr = x_g.on == "x_r"
    want = r.out_norm if on_xr else r.in_norm
    if not same_model_range(g.in_norm, want) or not same_model_range(g.out_norm, r.out_norm):
        raise CheckpointError(f"the fusion's x_G run {x_g.path} no longer fits its x_R run {x_r.path}")
    if r.scale != 1 or g.scale != 1:
        raise CheckpointError("the fusion combines branches at the input's resolution: both must have scale 1")
    return Branches(r, g, on_xr, device)


class FusionPredictor(Predictor):
    """A fusion checkpoint as a predictor (module docstring)."""

    def __init__(self, net: LoadedNetwork, device: torch.device, amp: torch.dtype | None = None,
                 reporter: Reporter = NULL_REPORTER, tile: int | None = None, sampling: Any = None) -> None:
        from sarkit.models.fusion import UpstreamRun

        rec = net.meta["fusion"]
        try:
            x_r, x_g = UpstreamRun.from_dict(rec["x_r"]), UpstreamRun.from_dict(rec["x_g"])
        except (KeyError, TypeError):
            raise CheckpointError(f"{net.path} has an unreadable fusion record; re-export it with sarkit train") \
                from None
        self.branches = open_branches(x_r, x_g, device, amp, reporter,
                                      sampling_options(rec.get("sampling"), sampling))
        own = checkpoint_contract(net, None)
        if not same_model_range(own.in_norm, self.branches.r.in_norm):
            raise CheckpointError(f"{net.path} takes {', '.join(own.in_norm.bands)} but its x_R run takes "
                                  f"{', '.join(self.branches.r.in_norm.bands)}")
        parts = [self.branches.r, self.branches.g]
        multiple = math.lcm(*(p.contract.tile_multiple for p in parts))
        size = tile if tile is not None else max([own.tile, *(p.tile for p in parts)])
        size = -(-size // multiple) * multiple
        width = int(net.arch_kwargs.get("width", 64))
        head_bytes = 4 * (2 * width + 2 * own.out_norm.channels)
        acts = max(p.contract.act_bytes or ACTIVATION_BYTES_PER_PIXEL for p in parts)
        self.contract = Contract(own.in_norm, own.out_norm, size, 1, sum(p.steps for p in parts) + 1, multiple,
                                 self.branches.r.contract.pixel_size, acts + head_bytes)
        self.net = net
        self.module = net.module.to(device).eval()
        self.device = device
        self.amp = amp
        self.name = f"fusion {net.path}"

    def provenance(self) -> dict[str, str]:
        net, b = self.net, self.branches
        tags = {"model": "fusion", "arch": net.arch, "checkpoint": net.path.name, "checkpoint_sha256": net.sha256,
                "direction": str(net.meta.get("direction", ""))}
        for key, p in (("x_r", b.r), ("x_g", b.g)):
            prov = p.provenance()
            tags[f"{key}_model"] = prov.get("model", "")
            tags[f"{key}_checkpoint"] = prov.get("checkpoint", "")
            tags[f"{key}_checkpoint_sha256"] = prov.get("checkpoint_sha256", "")
        return tags

    def run_notes(self) -> list[str]:
        return [*self.branches.r.run_notes(), *self.branches.g.run_notes()]

    def _head(self, x_r: np.ndarray, x_g: np.ndarray) -> np.ndarray:
        """The fusion head on (x_R, x_G) in inference mode (autocast when ``amp``) → float32 numpy."""
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            a = torch.from_numpy(np.ascontiguousarray(x_r)).to(self.device)
            b = torch.from_numpy(np.ascontiguousarray(x_g)).to(self.device)
            return self.module(a, b).float().cpu().numpy()

    def _predict(self, x: np.ndarray, seeds: Sequence[int] | None) -> np.ndarray:
        return self._predict_at(x, seeds, None, None)

    def _predict_at(self, x: np.ndarray, seeds: Sequence[int] | None, windows: Sequence[PixelWindow] | None,
                    progress: Callable[[int], None] | None) -> np.ndarray:
        """x_R, x_G through the branches (told the windows and progress), then the head."""
        x_r, x_g = self.branches.run(x, seeds, windows, progress)
        y = self._head(x_r, x_g)
        if progress is not None:
            progress(x.shape[0])
        return y


__all__ = ["Branches", "FusionPredictor", "is_fusion", "open_branches", "open_upstream", "sampling_options"]
