"""Tiny upstream and fusion runs for the fusion tests, trained through ``sarkit train`` on generated tiles (CPU,
tiny presets, random LPIPS and VGG19 weights from files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from models.lossweights import write_lpips_weights, write_vgg19_weights
from sarkit.cli import app
from training.tilesets import make_tiles

runner = CliRunner()


@dataclass
class FusionRuns:
    """The tiles, the weight files and the three runs."""

    tiles: Path
    heads: Path
    alexnet: Path
    vgg19: Path
    regression: Path
    pix2pix: Path
    fusion: Path


def train(*args: str) -> None:
    """``sarkit train ARGS --quiet`` on the CPU; fails the test with its output otherwise."""
    r = runner.invoke(app, ["train", "--device", "cpu", "--batch-size", "2", "--quiet", *args])
    assert r.exit_code == 0, r.output


def weight_args(w: "FusionRuns | tuple[Path, Path, Path]") -> list[str]:
    """--lpips-weights, --lpips-backbone and --vgg19-weights of the random weight files."""
    heads, alex, vgg = (w.heads, w.alexnet, w.vgg19) if isinstance(w, FusionRuns) else w
    return ["--lpips-weights", str(heads), "--lpips-backbone", str(alex), "--vgg19-weights", str(vgg)]


def make_fusion_runs(root: Path, fusion_steps: int = 4) -> FusionRuns:
    """Tiles (4 train, 2 val, 32²), a regression run (NAFNet tiny), a pix2pix run (ngf 8) and a fusion run on them
    (width 8, 2 blocks; validation every 2 steps so that the best checkpoint is kept)."""
    tiles = make_tiles(root / "tiles")
    heads, alex = write_lpips_weights(root / "w")
    vgg = write_vgg19_weights(root / "w")
    reg, p2p, fus = root / "reg", root / "p2p", root / "fus"
    train("--model", "regression", "--data", str(tiles), "--out", str(reg), "--steps", "3", "--val-every", "0",
          "--lr", "1e-3", "--model-opt", "preset=tiny")
    train("--model", "pix2pix", "--data", str(tiles), "--out", str(p2p), "--steps", "2", "--val-every", "0",
          "--model-opt", "ngf=8", "--model-opt", "ndf=8")
    train("--model", "fusion", "--data", str(tiles), "--out", str(fus), "--steps", str(fusion_steps),
          "--val-every", "2", "--log-every", "1", "--lr", "1e-3", "--x-r-from", str(reg), "--x-g-from", str(p2p),
          *weight_args((heads, alex, vgg)), "--model-opt", "width=8", "--model-opt", "n_blocks=2")
    return FusionRuns(tiles, heads, alex, vgg, reg, p2p, fus)
