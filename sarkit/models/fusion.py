"""fusion: stage 2 of the regression + GAN-prior restoration paper (seed 003), the two branches fused.

x̂ = Conv(Res(Conv(x_R) + Conv(x_G))): a 3×3 convolution of each branch to ``width`` channels, their sum through
``n_blocks`` = 8 residual blocks (``sarkit.models.blocks.ResnetBlock`` without normalisation), a 3×3 convolution
back to the output bands. x_R comes from a frozen ``regression`` run (``--x-r-from RUN``), x_G from a frozen
generative run (``--x-g-from RUN``): a gan-prior run, whose exported network maps x_R → G(E(x_R)) (its input is the
regression's output: same optical bands and ranges), or any sarkit translator of the fusion's input (pix2pix,
CycleGAN, CUT, con-diffusion: its input is the SAR), run on each batch through the inference engine's predictors
(``sarkit.infer.fusion.open_branch``; a diffusion run samples, with ``g_sampler`` / ``g_steps`` when given).

Loss, as the paper: L_F = L1 + λ_per·LPIPS + λ_fc·L_fc, L_fc = λ_cxR·CX(x_R, x̂) + λ_cxG·CX(x_G, x̂), λ_per = 10,
λ_fc = 1, λ_cxR = 0.01, λ_cxG = 0.05; CX the contextual loss on VGG19 conv3_2 and conv4_2 with the branch as the
target (``sarkit.models.contextual``), LPIPS v0.1 AlexNet (``sarkit.eval.lpips``), both on the RGB views in
[0, 1]; L1 and LPIPS over valid pixels. Adam (β = 0.9, 0.999) at ``--lr`` (the paper: 1e-3), divided by
``lr_drop`` = 10 after ``lr_drop_at`` = 0.2 of the steps (8,000 of the paper's 40,000); the networks of the best
validation PSNR are kept in RUN/checkpoints/best/ (``keep_best``).

The exported head records the upstream runs (absolute file paths and SHA-256) in its ``fusion`` metadata;
``sarkit.infer.fusion.FusionPredictor`` runs regression → generative branch → head and refuses upstream files whose
SHA-256 changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from sarkit.errors import InputError
from sarkit.models.base import StepTools, Task, TrainableModel
from sarkit.models.blocks import ResnetBlock, adam
from sarkit.models.clip import rgb_view
from sarkit.models.pix2pix import masked_l1, split_io
from sarkit.models.regression import REGRESSION_BETAS, FrozenHelper, load_lpips_helper, perceptual_loss
from sarkit.models.registry import register_model, register_network
from sarkit.raster.norm import Normalization


@dataclass(frozen=True)
class FusionOptions:
    """fusion hyper-parameters (the paper's loss weights and schedule) and the upstream runs."""

    x_r_from: str = ""            # the regression RUN (or its generator file)
    x_g_from: str = ""            # the generative RUN: gan-prior, pix2pix, cyclegan, cut, con-diffusion, ...
    width: int = 64               # channels of the fusion convolutions
    n_blocks: int = 8             # residual blocks
    lambda_per: float = 10.0
    lambda_fc: float = 1.0
    lambda_cx_r: float = 0.01
    lambda_cx_g: float = 0.05
    lr_drop_at: float = 0.2       # fraction of the steps after which the learning rate is divided
    lr_drop: float = 10.0
    g_sampler: str = ""           # a diffusion x_G's sampler ("" = its checkpoint's)
    g_steps: int = 0              # a diffusion x_G's sampling steps (0 = its checkpoint's)
    lpips_weights: str = ""
    lpips_backbone: str = ""
    vgg19_weights: str = ""

    def __post_init__(self) -> None:
        for name in ("width", "n_blocks"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"--model-opt {name} must be a whole number ≥ 1, got {v!r}")
        for name in ("lambda_per", "lambda_fc", "lambda_cx_r", "lambda_cx_g"):
            if not float(getattr(self, name)) >= 0:
                raise InputError(f"--model-opt {name} must be ≥ 0, got {getattr(self, name)}")
        if not 0.0 <= float(self.lr_drop_at) <= 1.0 or not float(self.lr_drop) >= 1.0:
            raise InputError(f"--model-opt lr_drop_at must be in [0, 1] and lr_drop ≥ 1, got {self.lr_drop_at} "
                             f"and {self.lr_drop}")
        if not isinstance(self.g_steps, int) or self.g_steps < 0:
            raise InputError(f"--model-opt g_steps must be a whole number ≥ 0, got {self.g_steps!r}")


# ------------------------------------------------------------------------------------------------ network
class FusionHead(nn.Module):
    """x̂ = Conv3×3(Res^n(Conv3×3(x_R) + Conv3×3(x_G))); ``forward(x_r, x_g)``."""

    def __init__(self, channels: int, width: int = 64, n_blocks: int = 8) -> None:
        super().__init__()
        self.conv_r = nn.Conv2d(channels, width, 3, padding=1)
        self.conv_g = nn.Conv2d(channels, width, 3, padding=1)
        self.res = nn.Sequential(*[ResnetBlock(width, "none") for _ in range(n_blocks)])
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x_r: torch.Tensor, x_g: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.res(self.conv_r(x_r) + self.conv_g(x_g)))


@register_network("fusion_head")
def build_fusion_head(channels: int, width: int = 64, n_blocks: int = 8) -> nn.Module:
    return FusionHead(int(channels), int(width), int(n_blocks))


# ------------------------------------------------------------------------------------------------ upstream runs
@dataclass(frozen=True)
class UpstreamRun:
    """One frozen upstream run as the fusion records it: its generator file (absolute), SHA-256, model name and
    what its input is ("input": the fusion's input; "x_r": the regression's output)."""

    path: str
    sha256: str
    model: str
    on: str = "input"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256, "model": self.model, "on": self.on}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UpstreamRun":
        return cls(str(d["path"]), str(d["sha256"]), str(d.get("model", "")), str(d.get("on", "input")))


def _norms(meta: dict[str, Any], path: Path) -> tuple[Normalization, Normalization]:
    """(in, out) normalisation of an upstream generator's metadata (``InputError`` when it has none)."""
    if "in_norm" not in meta or "out_norm" not in meta:
        raise InputError(f"{path} is not a translator's generator (no in_norm/out_norm); pass a sarkit translator run")
    return Normalization.from_dict(meta["in_norm"]), Normalization.from_dict(meta["out_norm"])


def _describe(n: Normalization) -> str:
    return f"{n.modality} {','.join(n.bands)}"


def upstream_runs(x_r_from: str, x_g_from: str, in_norm: Normalization, out_norm: Normalization
                  ) -> tuple[UpstreamRun, UpstreamRun]:
    """Check the two upstream runs against the fusion's data and each other, and record them.

    x_R: a regression run from the fusion's input bands and ranges to its output's. x_G: when its input
    normalisation equals the regression's output normalisation it is applied to x_R (a gan-prior run), otherwise it
    must take the fusion's input; its output must be the fusion's output. ``InputError`` (one line) otherwise."""
    from sarkit.infer.engine import same_model_range
    from sarkit.models.checkpoint import file_sha256, read_export_record, resolve_export

    p_r = resolve_export(x_r_from, "generator").resolve()
    meta_r = read_export_record(p_r).get("meta", {})
    if meta_r.get("model") != "regression":
        raise InputError(f"--x-r-from {x_r_from} is a {meta_r.get('model', 'non-sarkit')} run; it must be a "
                         f"--model regression run")
    r_in, r_out = _norms(meta_r, p_r)
    if not (same_model_range(r_in, in_norm) and same_model_range(r_out, out_norm)):
        raise InputError(f"--x-r-from {x_r_from} maps {_describe(r_in)} → {_describe(r_out)}, the tiles "
                         f"{_describe(in_norm)} → {_describe(out_norm)} (bands or ranges differ)")
    p_g = resolve_export(x_g_from, "generator").resolve()
    meta_g = read_export_record(p_g).get("meta", {})
    g_in, g_out = _norms(meta_g, p_g)
    if same_model_range(g_in, r_out):
        on = "x_r"
    elif same_model_range(g_in, in_norm):
        on = "input"
    else:
        raise InputError(f"--x-g-from {x_g_from} takes {_describe(g_in)}: neither the regression's output "
                         f"({_describe(r_out)}) nor the fusion's input ({_describe(in_norm)}) in the same ranges")
    if not same_model_range(g_out, out_norm):
        raise InputError(f"--x-g-from {x_g_from} predicts {_describe(g_out)}, the fusion predicts "
                         f"{_describe(out_norm)} (bands or ranges differ)")
    return (UpstreamRun(str(p_r), file_sha256(p_r), "regression", "input"),
            UpstreamRun(str(p_g), file_sha256(p_g), str(meta_g.get("model", "")), on))


def rgb01(x: torch.Tensor, bands: Sequence[str]) -> torch.Tensor:
    """The RGB view of model-range images in [0, 1]."""
    return rgb_view((x.float() + 1.0) * 0.5, list(bands)).clamp(0, 1)


# ------------------------------------------------------------------------------------------------ model
@register_model("fusion")
class Fusion(TrainableModel):
    """The fusion head trained on frozen regression and generative branches."""

    task = Task.TRANSLATOR
    paired = True
    needs_labels = False
    Options = FusionOptions
    keep_best = "psnr"
    standalone = False  # built on the x_r_from and x_g_from runs

    def head_kwargs(self) -> dict[str, Any]:
        """Arguments of the registered "fusion_head" network."""
        return {"channels": self.io.out_channels, "width": int(self.opts.width), "n_blocks": int(self.opts.n_blocks)}

    def build(self) -> None:
        """The head; the upstream records (checked); the frozen LPIPS and VGG19 when their weights are > 0."""
        from sarkit.models.contextual import load_vgg_contextual

        o = self.opts
        for name in ("x_r_from", "x_g_from"):
            if not str(getattr(o, name)):
                raise InputError(f"--model fusion needs --{name.replace('_', '-')} RUN (the "
                                 f"{'regression' if name == 'x_r_from' else 'generative'} branch's run)")
        self.nets["F"] = build_fusion_head(**self.head_kwargs())
        self.in_norm = Normalization.from_dict(self.io.in_norm)
        self.out_norm = Normalization.from_dict(self.io.out_norm)
        self.x_r, self.x_g = upstream_runs(o.x_r_from, o.x_g_from, self.in_norm, self.out_norm)
        self.helper_records = {"x_r": self.x_r.to_dict(), "x_g": self.x_g.to_dict()}
        self.lpips: FrozenHelper | None = None
        self.cx: FrozenHelper | None = None
        if float(o.lambda_per) > 0:
            self.lpips, rec = load_lpips_helper(o.lpips_weights, o.lpips_backbone)
            self.helper_records["lpips"] = rec
        if float(o.lambda_fc) > 0 and (float(o.lambda_cx_r) > 0 or float(o.lambda_cx_g) > 0):
            cx, path = load_vgg_contextual(o.vgg19_weights or None)
            self.cx = FrozenHelper(cx)
            self.helper_records["vgg19"] = {"weights": path}
        self._branches: Any = None
        self.g_draws = 0

    def sampling(self) -> dict[str, Any]:
        """The diffusion x_G's sampling record (empty values: its checkpoint's)."""
        return {"sampler": self.opts.g_sampler or None, "steps": int(self.opts.g_steps) or None}

    def branches(self, device: torch.device) -> Any:
        """The two upstream predictors on ``device`` (``sarkit.infer.fusion.Branches``), opened on first use."""
        from sarkit.infer.fusion import open_branches, sampling_options

        if self._branches is None or self._branches.device != device:
            self._branches = open_branches(self.x_r, self.x_g, device, sampling=sampling_options(self.sampling()))
        return self._branches

    def upstream(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_R, x_G) of a model-range batch, without gradients; a diffusion x_G draws fresh seeds each call."""
        n = x.shape[0]
        seeds = list(range(self.g_draws, self.g_draws + n))
        self.g_draws += n
        x_r, x_g = self.branches(x.device).run(x.detach().float().cpu().numpy(), seeds)
        return (torch.from_numpy(x_r).to(x.device, x.dtype), torch.from_numpy(x_g).to(x.device, x.dtype))

    def configure_optimizers(self, lr: float, betas: tuple[float, float]) -> dict[str, torch.optim.Optimizer]:
        """Adam(lr, β = 0.9, 0.999) on the head."""
        self.optimizers = {"F": adam(self.nets["F"].parameters(), lr, REGRESSION_BETAS)}
        return self.optimizers

    def lr_factor(self, step: int, total: int) -> float | None:
        """1, then 1/lr_drop from ``lr_drop_at``·total on (the paper: ÷10 at 8,000 of 40,000 iterations)."""
        return 1.0 if step < round(float(self.opts.lr_drop_at) * total) else 1.0 / float(self.opts.lr_drop)

    def fusion_losses(self, out: torch.Tensor, y: torch.Tensor, x_r: torch.Tensor, x_g: torch.Tensor,
                      valid: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_F and its terms (L1, LPIPS, CX_R, CX_G) of a fused batch."""
        o, bands = self.opts, list(self.io.out_norm.get("bands", []))
        l1 = masked_l1(out, y, valid)
        total, terms = l1, {"L1": l1}
        if self.lpips is not None:
            terms["LPIPS"] = perceptual_loss(self.lpips, out, y, bands, valid)
            total = total + float(o.lambda_per) * terms["LPIPS"]
        if self.cx is not None:
            cx = self.cx.on(out.device)
            out01 = rgb01(out, bands)
            terms["CX_R"] = cx(out01, rgb01(x_r, bands))
            terms["CX_G"] = cx(out01, rgb01(x_g, bands))
            total = total + float(o.lambda_fc) * (float(o.lambda_cx_r) * terms["CX_R"]
                                                  + float(o.lambda_cx_g) * terms["CX_G"])
        return total, terms

    def train_step(self, batch: dict[str, torch.Tensor], tools: StepTools) -> dict[str, float]:
        """x_R, x_G from the frozen runs; one Adam step of the head on L_F."""
        x, y = split_io(batch, self.io.direction)
        x_r, x_g = self.upstream(x)
        with tools.autocast():
            out = self.nets["F"](x_r, x_g)
        loss, terms = self.fusion_losses(out.float(), y, x_r, x_g, batch.get("valid"))
        tools.backward(loss)
        tools.step(self.optimizers["F"])
        values = torch.stack([v.detach().float() for v in terms.values()]).tolist()
        return dict(zip(terms.keys(), values))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The whole chain: x_R and x_G from the upstream runs, then the head (eval mode)."""
        x_r, x_g = self.upstream(x)
        head = self.nets["F"]
        was = head.training
        head.eval()
        try:
            return head(x_r, x_g)
        finally:
            head.train(was)

    def extra_state(self) -> dict[str, Any]:
        return {"g_draws": self.g_draws}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.g_draws = int(state.get("g_draws", 0))

    def export(self) -> list[tuple[str, nn.Module, str, dict[str, Any]]]:
        """The head as a registered "fusion_head" network (the upstream runs are recorded in its metadata)."""
        return [("generator", self.nets["F"], "fusion_head", self.head_kwargs())]

    def export_meta(self) -> dict[str, Any]:
        """The translator's metadata plus the ``fusion`` record: the upstream runs and the x_G sampling."""
        return {**super().export_meta(),
                "fusion": {"x_r": self.x_r.to_dict(), "x_g": self.x_g.to_dict(), "sampling": self.sampling()}}


__all__ = ["Fusion", "FusionHead", "FusionOptions", "UpstreamRun", "build_fusion_head", "rgb01", "upstream_runs"]
