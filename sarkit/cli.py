"""The ``sarkit`` command line: parses options and calls library functions; nothing else lives here.

Exit codes: 0 success, 1 failure while working, 2 bad usage or bad input.
"""

from __future__ import annotations

import functools
import os
import traceback
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
import typer.core

from sarkit import __version__
from sarkit import cli_params as P
from sarkit.errors import SarkitError, Terminated

def _wants_json(args: List[str]) -> bool:
    """Whether the command line asks for JSON events (``--log-format json`` or ``--log-format=json``)."""
    return "--log-format=json" in args or any(a == "--log-format" and b == "json" for a, b in zip(args, args[1:]))


class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors (a bad option value, a missing argument) as one ``error:`` line (one JSON event with
    ``--log-format json``) and exit 2, like every other refusal, instead of Click's usage block."""

    def main(self, args: Optional[List[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        import sys

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except typer.Abort:
            sys.exit(1)
        except typer.TyperException as exc:  # Click's usage errors (typer's vendored Click raises these)
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # `sarkit` or `sarkit CMD` alone: the help text, as asked
                sys.exit(exc.exit_code)
            from sarkit.progress import print_error

            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = " ".join(exc.format_message().split()) + hint
            print_error(message, _wants_json(argv), exit_code=exc.exit_code)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="sarkit",
    help="Sentinel-1 SAR ⇄ optical translation: synth, tile, train, translate, stitch, eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars or summaries (warnings still shown).")
LogFormatOpt = typer.Option("text", "--log-format", help="text (people) or json (one JSON event per line on stderr).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing output.")
SkipExistingOpt = typer.Option(
    False, "--skip-existing", help="Do nothing (exit 0) when the output is already complete: re-runs are no-ops.")


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn sarkit's typed errors into a one-line message and their exit code (1 for unexpected errors)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sarkit.diagnostics import command_scope, explain
        from sarkit.progress import print_error, print_warning

        as_json = kwargs.get("log_format") == "json"
        try:
            with command_scope(lambda message: print_warning(message, as_json)) as gdal:
                try:
                    return fn(*args, **kwargs)
                except SarkitError as exc:
                    print_error(str(exc), as_json, exit_code=exc.exit_code)
                    raise typer.Exit(exc.exit_code) from None
                except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
                    raise
                except Exception as exc:  # an unexpected failure while working: exit 1, traceback on request
                    if os.environ.get("SARKIT_DEBUG"):
                        traceback.print_exc()
                    print_error(f"{explain(exc, gdal)} (set SARKIT_DEBUG=1 for a traceback)", as_json, exit_code=1)
                    raise typer.Exit(1) from None
        except Terminated:
            print_error("terminated (SIGTERM): nothing half-written was kept", as_json, exit_code=Terminated.exit_code)
            raise typer.Exit(Terminated.exit_code) from None
        except KeyboardInterrupt:
            print_error("interrupted", as_json, exit_code=130)
            raise typer.Exit(130) from None

    return wrapper


def _skip(output: Path, skip_existing: bool, reporter: Any, complete: Optional[Callable[[Path], bool]] = None) -> bool:
    """With --skip-existing: True (and say so) when ``output`` is already complete, so the command does nothing."""
    if not skip_existing:
        return False
    from sarkit.io import output_complete

    if (complete or output_complete)(output):
        reporter.info(f"skipped: {output} already exists (--skip-existing)", skipped=str(output))
        return True
    return False


def _reporter(quiet: bool, log_format: str) -> Any:
    from sarkit.progress import make_reporter

    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format must be text or json")
    return make_reporter(quiet=quiet, log_format=log_format)


def config_keys(group: Any) -> dict[str, dict[str, str]]:
    """Per command, the keys a --config file may use (option names without dashes, parameter names)."""
    keys: dict[str, dict[str, str]] = {}
    for name, cmd in getattr(group, "commands", {}).items():
        keys[name] = {}
        for p in cmd.params:
            if p.name:
                keys[name][p.name] = p.name
                keys[name].update({o.lstrip("-"): p.name for o in getattr(p, "opts", []) if o.startswith("--")})
    return keys


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sarkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    config: Optional[Path] = typer.Option(
        None, "--config", envvar="SARKIT_CONFIG",
        help="TOML file with default options per command ([tile], [train], ...); the command line wins."),
) -> None:
    """Sentinel-1 SAR ⇄ optical translation toolkit."""
    if config is not None:
        from sarkit.config import load_config
        from sarkit.progress import print_error

        try:
            ctx.default_map = load_config(config, config_keys(ctx.command))
        except SarkitError as exc:
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None


# ----------------------------------------------------------------------------------------------- commands
# Each command lives in its own section below; keep sections independent.

# === synth ===


@app.command("synth")
@_handle_errors
def synth_cmd(
    out_dir: Path = typer.Argument(..., help="Folder to write s1.tif, s2.tif and labels.tif into."),
    size: int = typer.Option(2048, "--size", help="Scene width and height in pixels (at least 64)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same bytes."),
    crs: str = typer.Option("EPSG:32633", "--crs", help="Projected CRS of the scene grid (e.g. a UTM zone)."),
    pixel_size: float = typer.Option(10.0, "--pixel-size", help="Pixel size in metres."),
    overwrite: bool = OverwriteOpt,
    skip_existing: bool = SkipExistingOpt,
    quiet: bool = QuietOpt,
    log_format: str = LogFormatOpt,
) -> None:
    """Generate a deterministic Sentinel-1 (VV, VH dB) + Sentinel-2 (13-band L1C) scene with land-cover labels.

    Example: sarkit synth scene --size 1024 --seed 7
    """
    from sarkit.data.synth import SynthOptions, synth_scene

    reporter = _reporter(quiet, log_format)
    if _skip(out_dir, skip_existing, reporter):
        return
    opts = SynthOptions(size=size, seed=seed, crs=crs, pixel_size=pixel_size)
    result = synth_scene(out_dir, opts, overwrite=overwrite, reporter=reporter)
    if not quiet:
        typer.echo(f"wrote {result.out_dir}/{{s1,s2,labels}}.tif: {result.size}×{result.size} px, "
                   f"{opts.pixel_size:g} m, {result.crs}, seed {opts.seed}, {len(result.class_names)} classes "
                   f"in {result.seconds:.1f} s")

# === tile ===


@app.command("tile")
@_handle_errors
def tile(
    s1: Optional[List[str]] = typer.Argument(
        None, help="Sentinel-1 GeoTIFF(s) (dB or linear power), globs, comma lists of one scene's files "
                   "(VV.tif,VH.tif), or STAC item .json files; with --layout, the dataset root."),
    s1_files: Optional[List[str]] = typer.Option(
        None, "--s1", help="A file of the one Sentinel-1 scene (repeat, or a comma list: one file per polarisation)."),
    optical: Optional[List[str]] = typer.Option(
        None, "--optical", help="Sentinel-2 GeoTIFF (digital numbers), or its per-band files (repeat, or a comma "
                                "list); for several scenes a pattern such as '{dir}/{stem/_s1/_s2}.tif'."),
    labels: Optional[str] = typer.Option(None, "--labels", help="Label GeoTIFF (class ids); a pattern for several scenes."),
    scenes_csv: Optional[Path] = typer.Option(
        None, "--scenes", help="CSV of scenes, one per row: s1,optical,labels (instead of S1 arguments)."),
    strict: bool = typer.Option(False, "--strict", help="Several scenes: fail the run when one scene fails "
                                                         "(default: report it, skip it, exit 1)."),
    grid: Optional[Path] = typer.Option(
        None, "--grid", help="GeoTIFF whose pixel grid the tiles take (S1, optical and labels resampled onto it; "
                             "default: the S1 raster's, for several files the finest one's)."),
    out: Path = typer.Option(..., "--out", help="Output tile directory."),
    size: int = typer.Option(256, "--size", help="Tile size in pixels."),
    stride: Optional[int] = typer.Option(
        None, "--stride", help="Step between tiles in pixels (default: --size; smaller: overlapping tiles)."),
    aoi: Optional[Path] = typer.Option(None, "--aoi", help="GeoJSON polygons: keep only tiles that intersect."),
    max_nodata: float = typer.Option(0.05, "--max-nodata", help="Skip tiles with a larger nodata fraction."),
    split: Any = typer.Option("0.7,0.2,0.1", "--split", parser=P.split_fractions, metavar="TRAIN,VAL,TEST",
                              help="train,val,test fractions (spatially blocked)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split assignment."),
    overwrite: bool = OverwriteOpt,
    pad_edges: bool = typer.Option(False, "--pad-edges", help="Pad edge remainders with nodata (default: skip)."),
    s1_units: str = typer.Option("auto", "--s1-units", help="auto, db or linear (linear power → dB)."),
    s1_range: Any = typer.Option("-25,0", "--s1-range", parser=P.value_range("--s1-range"), metavar="LO,HI",
                                 help="SAR dB range mapped to [-1, 1]."),
    s2_range: Any = typer.Option("0,0.3", "--s2-range", parser=P.value_range("--s2-range"), metavar="LO,HI",
                                 help="Optical reflectance range mapped to [-1, 1]."),
    s2_offset: bool = typer.Option(False, "--s2-offset", help="Apply the −1000 DN offset of baseline 04.00+."),
    layout: Optional[str] = typer.Option(
        None, "--layout", help="sen12ms, sen1floods11 or pairs (image-pair datasets): S1 is the dataset root."),
    pairs: str = typer.Option("auto", "--pairs",
                              help="--layout pairs: auto, pix2pix, cyclegan, sen1-2 or folders (the convention)."),
    sar_dir: Optional[str] = typer.Option(None, "--sar-dir", help="--layout pairs: the SAR image folder."),
    opt_dir: Optional[str] = typer.Option(None, "--opt-dir", help="--layout pairs: the optical image folder."),
    label_dir: Optional[str] = typer.Option(None, "--label-dir", help="--layout pairs: the label image folder."),
    sar_is: str = typer.Option("auto", "--sar-is", help="--layout pairs (pix2pix, cyclegan): A, B or auto (gray)."),
    cloudy: bool = typer.Option(False, "--cloudy", help="SEN12MS-CR: take s2_cloudy instead of s2_cloudfree."),
    lc_classes: str = typer.Option(
        "dfc2020", "--lc-classes",
        help="SEN12MS land cover (lc band 1, IGBP): dfc2020 (10 simplified classes) or igbp (17 classes)."),
    skip_existing: bool = SkipExistingOpt,
    quiet: bool = QuietOpt,
    log_format: str = LogFormatOpt,
) -> None:
    """Cut co-registered S1 / S2 / label scenes into tiles with manifest.csv and tiling.json.

    Dataset folders: --layout sen12ms | sen1floods11 | bigearthnet | pairs (image pairs: SEN1-2, pix2pix,
    CycleGAN, two folders).

    Example: sarkit tile scene/s1.tif --optical scene/s2.tif --labels scene/labels.tif --out tiles
    """
    from sarkit.progress import print_table
    from sarkit.data.tiling import TileOptions

    opts = TileOptions(size=size, stride=stride, aoi=aoi, max_nodata=max_nodata, split=split,
                       seed=seed, overwrite=overwrite, pad_edges=pad_edges, s1_units=s1_units,
                       s1_range=s1_range, s2_range=s2_range,
                       s2_offset=s2_offset, cloudy=cloudy, lc_classes=lc_classes, strict=strict, grid=grid)
    from sarkit.data.pairs import PairOptions

    pair_opts = PairOptions(pairs, sar_dir, opt_dir, label_dir, sar_is)
    rep = _reporter(quiet, log_format)
    if _skip(out, skip_existing, rep):
        return
    from sarkit.data.tiling import tile_inputs

    summary = tile_inputs(list(s1 or []), list(s1_files or []), list(optical or []), labels, scenes_csv, layout,
                          out, opts, rep, pairs=pair_opts)
    rows = [["written", summary.written]] + [[f"skipped: {k}", v] for k, v in sorted(summary.skipped.items())]
    rows += [[f"split: {k}", v] for k, v in summary.splits.items()]
    if summary.labels:
        rows.append(["labels", summary.labels])
    rows += [[f"FAILED scene {n}", e] for n, e in summary.failed]
    if log_format == "json":
        rep.info("tiling done", out=str(summary.out), written=summary.written, skipped=summary.skipped,
                 splits=summary.splits, labels=summary.labels, scenes=summary.scenes,
                 failed=[{"scene": n, "error": e} for n, e in summary.failed])
    print_table(f"Tiles in {summary.out}", ["", "tiles"], rows, quiet=quiet or log_format == "json")
    if summary.failed:
        rep.warn(f"{len(summary.failed)} scene(s) failed and were skipped; {summary.scenes} tiled into {summary.out}")
        raise typer.Exit(1)

# === train ===


@app.command("train")
@_handle_errors
def train_cmd(
    model: str = typer.Option(..., "--model",
                              help="pix2pix, pix2pix-clip, cyclegan, cut, qs-attn, cyclegan-sc, con-diffusion, "
                                   "gan-prior, regression, fusion, sr-diffusion, segmenter."),
    data: List[Path] = typer.Option(..., "--data", help="Tile directory written by sarkit tile (repeat for "
                                    "several tile sets of the same bands and ranges)."),
    out: Path = typer.Option(..., "--out", help="Run directory (config.json, checkpoints/, metrics.jsonl)."),
    direction: str = typer.Option("sar2opt", "--direction", help="sar2opt or opt2sar (translators)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: 200 epochs)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (instead of --steps)."),
    batch_size: int = typer.Option(1, "--batch-size", help="Tiles per step per process (papers: 1)."),
    lr: float = typer.Option(2e-4, "--lr", help="Adam learning rate (constant, then linear decay to 0)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    amp: str = typer.Option("off", "--amp", help="Mixed precision: bf16, fp16 (CUDA) or off."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights, data order and augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    workers: int = typer.Option(0, "--workers", help="Data-loading worker processes."),
    val_every: int = typer.Option(1000, "--val-every", help="Validate every N steps (0: never)."),
    save_every: int = typer.Option(1000, "--save-every", help="Checkpoint every N steps (and at the end)."),
    log_every: int = typer.Option(10, "--log-every", help="Write averaged losses every N steps."),
    stop_at: Optional[int] = typer.Option(None, "--stop-at", help="Save and stop at this step (continue: --resume)."),
    sar_bands: Optional[Any] = typer.Option(None, "--sar-bands", parser=P.names("--sar-bands"), metavar="NAMES",
                                            help="SAR bands, e.g. VV,VH (default: all)."),
    optical_bands: Any = typer.Option("B4,B3,B2", "--optical-bands", parser=P.names("--optical-bands"),
                                      metavar="NAMES", help="Optical bands, names or 1-based."),
    modality: Optional[str] = typer.Option(None, "--modality", help="Segmenter input: sar or optical."),
    augment: bool = typer.Option(False, "--augment", help="Random flips / rot90 of training tiles."),
    lambda_clip: Optional[float] = typer.Option(None, "--lambda-clip", help="pix2pix-clip: weight of L_CLIP."),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help="pix2pix-clip: open_clip model."),
    clip_pretrained: Optional[str] = typer.Option(None, "--clip-pretrained", help="pix2pix-clip: weights tag."),
    clip_weights: Optional[Path] = typer.Option(None, "--clip-weights",
                                                help="pix2pix-clip: CLIP weights file (or $SARKIT_CLIP_WEIGHTS)."),
    sar_segmenter: Optional[Path] = typer.Option(None, "--sar-segmenter", help="cyclegan-sc: SAR segmenter RUN."),
    optical_segmenter: Optional[Path] = typer.Option(None, "--optical-segmenter",
                                                     help="cyclegan-sc: optical segmenter RUN."),
    x_r_from: Optional[Path] = typer.Option(None, "--x-r-from", help="fusion: the regression RUN (x_R)."),
    x_g_from: Optional[Path] = typer.Option(None, "--x-g-from",
                                            help="fusion: the generative RUN (x_G: gan-prior or a translator)."),
    vgg19_weights: Optional[Path] = typer.Option(None, "--vgg19-weights",
                                                 help="fusion: VGG19 weights file (or $SARKIT_VGG19_WEIGHTS)."),
    lpips_weights: Optional[Path] = typer.Option(None, "--lpips-weights",
                                                 help="regression, fusion: LPIPS heads (or $SARKIT_LPIPS_WEIGHTS)."),
    lpips_backbone: Optional[Path] = typer.Option(None, "--lpips-backbone",
                                                  help="regression, fusion: LPIPS AlexNet (or "
                                                       "$SARKIT_LPIPS_BACKBONE)."),
    scale: Optional[int] = typer.Option(None, "--scale", help="sr-diffusion: super-resolution factor, 2 or 4 "
                                        "(= --model-opt scale=…; default 4)."),
    model_opt: Optional[List[str]] = typer.Option(None, "--model-opt", help="Model option key=value (repeatable)."),
    overwrite: bool = OverwriteOpt,
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Do nothing (exit 0) when --out holds a run that reached its last step."),
    quiet: bool = QuietOpt,
    log_format: str = LogFormatOpt,
) -> None:
    """Train a model on tiles; resumable (--resume), multi-GPU under torchrun.

    Example: sarkit train --model pix2pix --data tiles --out runs/p2p --steps 20000
    """
    from sarkit.training import TrainOptions, model_option_values, run_finished, train

    reporter = _reporter(quiet, log_format)
    if _skip(out, skip_existing, reporter, run_finished):
        return
    named = {"lambda_clip": lambda_clip, "clip_model": clip_model, "clip_pretrained": clip_pretrained,
             "clip_weights": clip_weights, "sar_segmenter": sar_segmenter, "optical_segmenter": optical_segmenter,
             "x_r_from": x_r_from, "x_g_from": x_g_from, "vgg19_weights": vgg19_weights,
             "lpips_weights": lpips_weights, "lpips_backbone": lpips_backbone, "scale": scale}
    opts = TrainOptions(
        model=model, data=data, out=out, direction=direction, steps=steps, epochs=epochs, batch_size=batch_size,
        lr=lr, device=device, amp=amp, seed=seed, resume=resume, overwrite=overwrite, workers=workers,
        val_every=val_every, save_every=save_every, log_every=log_every, stop_at=stop_at,
        sar_bands=sar_bands,
        optical_bands=optical_bands, modality=modality, augment=augment,
        model_options=model_option_values(model_opt or [], named))
    train(opts, reporter)


# === translate / stitch ===


# Sampling options of diffusion checkpoints (translate and eval --checkpoint); None = the checkpoint's defaults.
SamplerOpt = typer.Option(None, "--sampler", help="Diffusion checkpoints: ddpm (respaced ancestral) or ddim "
                          "(default: the checkpoint's, ddpm for con-diffusion).")
StepsOpt = typer.Option(None, "--steps", help="Diffusion checkpoints: sampling steps (default: the checkpoint's, "
                        "250 for con-diffusion's DDPM; 50 for DDIM).")
EtaOpt = typer.Option(None, "--eta", help="Diffusion checkpoints, DDIM: η in [0, 1] (0 = deterministic, default).")
SeedOpt = typer.Option(None, "--seed", help="Diffusion checkpoints: seed of the position-keyed noise (default 0).")
BaseStepsOpt = typer.Option(None, "--base-steps", help="sr-diffusion checkpoints: stage-1 sampling steps (default: "
                            "the checkpoint's, 500; --steps sets stage 2's, default 50).")
CaptionOpt = typer.Option(None, "--caption", help="sr-diffusion checkpoints: a text file whose first line is the "
                          "caption of the scene (instead of the zero-shot caption of each tile).")
SrClipWeightsOpt = typer.Option(None, "--clip-weights", help="sr-diffusion checkpoints: the CLIP weights file of the "
                                "semantic guidance (or $SARKIT_CLIP_WEIGHTS).")
CacheThresholdOpt = typer.Option(
    None, "--cache-threshold", help="Diffusion checkpoints: first-block caching threshold τ (relative L1 change of "
    "the first block's residual; 0 = off, the default; e.g. 0.1).")


@app.command("translate")
@_handle_errors
def translate_cmd(
    scenes: List[Path] = typer.Argument(
        ..., help="Scene GeoTIFF(s) with the checkpoint's input bands (a comma list of one scene's files, or a STAC "
                  "item .json)."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Training RUN directory or generator .safetensors."),
    then: Optional[List[Path]] = typer.Option(
        None, "--then", help="Another checkpoint run on the previous one's output (repeatable), e.g. an sr-diffusion "
                             "RUN after a SAR→optical one; one scene (--out)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output COG, or PNG when named .png (one scene)."),
    out_dir: Optional[Path] = typer.Option(
        None, "--out-dir", help="Output folder for several scenes (<stem>_translated.tif each)."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Tile size in pixels (default: the checkpoint's; a "
                                       "multiple of what the network needs, e.g. 256 for the 8-level U-Net)."),
    overlap: int = typer.Option(64, "--overlap", help="Pixels shared by neighbouring tiles (blended)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Tiles per generator call."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    amp: str = typer.Option(
        "auto", "--amp", help="bf16, fp16 or off (auto: bf16 on CUDA and on CPUs with native bf16, else off; falls "
        "back to fp32 with a warning when bf16/fp16 output is < 40 dB PSNR from fp32 on the first tile)."),
    fmt: str = typer.Option(
        "native", "--format",
        help="native (dB float32 for SAR, uint16 reflectance×10000 for optical) or rgb8 (8-bit, nodata 0)."),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", help="dask.distributed scheduler address, or 'local' for a 2-worker LocalCluster."),
    allow_ungeoreferenced: bool = typer.Option(
        False, "--allow-ungeoreferenced",
        help="Translate a scene without a CRS (refused otherwise); the output keeps its pixel grid, no CRS."),
    resolution: str = typer.Option(
        "resample", "--resolution", help="A scene whose pixel size differs from the checkpoint's training pixel "
        "size by > 5 %: resample (translate it at the training size and resample the output back, with a warning), "
        "strict (refuse it) or ignore (translate it as it is)."),
    compile_: bool = typer.Option(
        False, "--compile", help="Run the generator through torch.compile: tens of seconds to start, then faster "
                                 "batches (worth it for large scenes, on a GPU above all)."),
    sampler: Optional[str] = SamplerOpt,
    sampling_steps: Optional[int] = StepsOpt,
    eta: Optional[float] = EtaOpt,
    seed: Optional[int] = SeedOpt,
    cache_threshold: Optional[float] = CacheThresholdOpt,
    base_steps: Optional[int] = BaseStepsOpt,
    caption: Optional[Path] = CaptionOpt,
    clip_weights: Optional[Path] = SrClipWeightsOpt,
    overwrite: bool = OverwriteOpt,
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Leave outputs that already exist as they are (with --out-dir: translate "
                                       "only the scenes whose output is missing)."),
    quiet: bool = QuietOpt,
    log_format: str = LogFormatOpt,
) -> None:
    """Translate whole scenes with a trained generator into Cloud-Optimized GeoTIFFs (overlapping tiles, blended).

    The output has the input's grid, CRS and nodata mask (a super-resolution checkpoint: the input's bounds with
    pixels --scale times smaller); scenes without a CRS are refused unless --allow-ungeoreferenced is given.

    A chain (--then runs/sr after runs/pix2pix) gives a super-resolved optical rendering of a Sentinel-1 scene.

    Example: sarkit translate scene/s1.tif --checkpoint runs/pix2pix --out s1_as_optical.tif
    """
    from sarkit.errors import InputError
    from sarkit.infer.diffusion import SamplingOptions
    from sarkit.infer.translate import (TranslateOptions, output_name, translate_chain, translate_many,
                                        translate_scene)

    reporter = _reporter(quiet, log_format)
    sampling = SamplingOptions(sampler=sampler, steps=sampling_steps, eta=eta, seed=seed,
                               cache_threshold=cache_threshold, base_steps=base_steps,
                               caption=str(caption) if caption else None,
                               clip_weights=str(clip_weights) if clip_weights else None)
    opts = TranslateOptions(tile=tile, overlap=overlap, batch_size=batch_size, device=device, amp=amp, format=fmt,
                            overwrite=overwrite, allow_ungeoreferenced=allow_ungeoreferenced, compile=compile_,
                            resolution=resolution, sampling=sampling)
    if out is not None and out_dir is not None:
        raise InputError("give either --out (one scene) or --out-dir (several scenes), not both")
    if out is not None:
        if len(scenes) != 1:
            raise InputError(f"--out takes one scene, got {len(scenes)}; use --out-dir for several")
        if scheduler:
            raise InputError("--scheduler spreads several scenes; use it with --out-dir")
        if _skip(out, skip_existing, reporter):
            return
        if then:
            summary = translate_chain(scenes[0], [checkpoint, *then], out, opts, reporter)
        else:
            summary = translate_scene(scenes[0], checkpoint, out, opts, reporter)
        if not quiet:
            typer.echo(summary.line())
        return
    if out_dir is None:
        raise InputError("give --out OUT.tif (one scene) or --out-dir DIR (several scenes)")
    if then:
        raise InputError("--then chains checkpoints over one scene: use --out OUT.tif")
    scenes = [s for s in scenes if not _skip(output_name(s, out_dir), skip_existing, reporter)]
    if not scenes:
        return
    results = translate_many(scenes, checkpoint, out_dir, opts, reporter, scheduler=scheduler)
    failed = [r for r in results if not r.ok]
    if not quiet:
        for r in results:
            typer.echo(r.summary.line() if r.summary else f"FAILED {r.scene}: {r.error}")
        typer.echo(f"{len(results) - len(failed)} of {len(results)} scenes translated into {out_dir}")
    if failed:
        raise typer.Exit(1)


@app.command("stitch")
@_handle_errors
def stitch_cmd(
    inputs: Optional[List[Path]] = typer.Argument(None, help="Georeferenced tiles, or folders of *.tif tiles."),
    out: Path = typer.Option(..., "--out", help="Output mosaic COG."),
    crs: Optional[str] = typer.Option(None, "--crs", help="Mosaic CRS, e.g. EPSG:32631 (default: the first tile's)."),
    resampling: str = typer.Option(
        "nearest", "--resampling", help="Resampling of tiles warped onto the mosaic grid: nearest, bilinear, cubic, "
                                        "cubic_spline, lanczos, average or mode."),
    max_pixels: Optional[int] = typer.Option(
        None, "--max-pixels", help="Allow a mosaic of up to N pixels (default: 10× the tiles' pixels, at least "
                                   "1024²); larger mosaics are refused before any work."),
    overwrite: bool = OverwriteOpt,
    skip_existing: bool = SkipExistingOpt,
    quiet: bool = QuietOpt,
    log_format: str = LogFormatOpt,
) -> None:
    """Mosaic georeferenced tiles into one COG, blending overlaps with cosine ramps (nodata gets no weight).

    Tiles in other CRSs are reprojected; mixed band counts or data types, a mosaic far larger than its tiles
    (--max-pixels) and tiles without valid pixels are refused.

    Example: sarkit stitch translated_tiles/ --out mosaic.tif
    """
    from sarkit.infer.stitch import StitchOptions, stitch

    reporter = _reporter(quiet, log_format)
    opts = StitchOptions(crs=crs, overwrite=overwrite, resampling=resampling, max_pixels=max_pixels)
    if _skip(out, skip_existing, reporter):
        return
    summary = stitch(inputs or [], out, opts, reporter)
    if not quiet:
        typer.echo(summary.line())


# === eval ===


@app.command("eval")
@_handle_errors
def eval_cmd(
    reports: Optional[List[Path]] = typer.Argument(None, help="With --compare: report directories or report.json "
                                                   "files, each optionally as NAME=REPORT (the row's name)."),
    pred: Optional[Path] = typer.Option(
        None, "--pred", help="Predicted scene (GeoTIFF, comma list of files, STAC item .json) or directory of tiles."),
    target: Optional[Path] = typer.Option(
        None, "--target", help="Target scene (GeoTIFF, comma list of one raster's files, STAC item .json) or "
                               "directory of tiles (same ids)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Land-cover labels: scene or directory (255 = ignore)."),
    input_scene: Optional[Path] = typer.Option(
        None, "--input", help="The translated input scene, shown in the report (default: the scene named by the "
        "prediction's source tag, when found next to it)."),
    bands: Optional[Any] = typer.Option(
        None, "--bands", parser=P.names("--bands"), metavar="NAMES",
        help="Prediction bands to compare, names or 1-based numbers (default: every band matched with the target)."),
    allow_ungeoreferenced: bool = typer.Option(
        False, "--allow-ungeoreferenced",
        help="Compare rasters without a CRS pixel by pixel (same size only; refused otherwise)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Training RUN (or generator file) to run on --data."),
    data: Optional[Path] = typer.Option(None, "--data", help="Tile directory written by sarkit tile (with --checkpoint)."),
    split: str = typer.Option("test", "--split", help="Split of --data to evaluate: train, val or test."),
    metrics: Optional[Any] = typer.Option(
        None, "--metrics", parser=P.names("--metrics"), metavar="NAMES", help="Comma list of psnr,ssim,mae,fid,fid-clip,pa,sms,lpips,pmr,ir,ir_ed,clip_iqa (pa brings miou). "
        "Default psnr,ssim,mae (+pa,sms with --segmenter)."),
    segmenter: Optional[Path] = typer.Option(None, "--segmenter", help="Segmenter RUN of the prediction's modality (PA, mIoU, SMS)."),
    sms_model: str = typer.Option("deeplab", "--sms-model", help="Network of SMS: deeplab (the --segmenter) or sam "
                                  "(Segment Anything, needs --sam-weights and pip install 'sarkit[sam]')."),
    sam_weights: Optional[Path] = typer.Option(None, "--sam-weights", help="Official SAM checkpoint (.pth or "
                                               ".safetensors) for --sms-model sam (or $SARKIT_SAM_WEIGHTS)."),
    lpips_weights: Optional[Path] = typer.Option(None, "--lpips-weights", help="LPIPS v0.1 alex.pth linear heads "
                                                 "(or $SARKIT_LPIPS_WEIGHTS; default: the lpips package's file)."),
    lpips_backbone: Optional[Path] = typer.Option(None, "--lpips-backbone", help="torchvision alexnet state dict "
                                                  "(or $SARKIT_LPIPS_BACKBONE; default: torch hub cache file)."),
    fid_weights: Optional[Path] = typer.Option(None, "--fid-weights", envvar="SARKIT_FID_WEIGHTS",
                                               help="torchvision inception_v3 state dict (.pt/.safetensors) for FID."),
    clip_weights: Optional[Path] = typer.Option(None, "--clip-weights", help="open_clip weights file for fid-clip "
                                                "and clip_iqa (or $SARKIT_CLIP_WEIGHTS)."),
    clip_model: str = typer.Option("ViT-B-32", "--clip-model", help="open_clip model name or model-config JSON."),
    s1_range: Optional[Any] = typer.Option(None, "--s1-range", parser=P.value_range("--s1-range"), metavar="LO,HI", help="SAR dB range 'lo,hi' for scenes (default -25,0)."),
    s2_range: Optional[Any] = typer.Option(None, "--s2-range", parser=P.value_range("--s2-range"), metavar="LO,HI", help="Optical reflectance range 'lo,hi' (default 0,0.3)."),
    s2_offset: bool = typer.Option(False, "--s2-offset", help="Sentinel-2 DN without a sarkit dn_offset tag carry the "
                                   "−1000 offset of processing baseline 04.00+ (reflectance = (DN − 1000) / 10000)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write report.json/.md, tiles.csv, report.html here "
                                          "(with --compare: compare.md, compare.csv, compare.tex)."),
    compare: bool = typer.Option(False, "--compare", help="Print the given reports as the papers' table: one row per "
                                 "method, SAR→OPT / OPT→SAR / downstream columns, best marked * and second †."),
    fail_under: Optional[Any] = typer.Option(None, "--fail-under", parser=P.thresholds("--fail-under"),
                                             metavar="METRIC=VALUE,…", help="Exit 1 if a higher-is-better metric is "
                                             "below, e.g. psnr=18,ssim=0.3, or gain_psnr=1 (dB above the better baseline)."),
    fail_over: Optional[Any] = typer.Option(None, "--fail-over", parser=P.thresholds("--fail-over"),
                                            metavar="METRIC=VALUE,…", help="Exit 1 if a lower-is-better metric is "
                                            "above, e.g. fid=50,mae=0.1."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Tiles per batch: the generator (--checkpoint) and LPIPS."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    sampler: Optional[str] = SamplerOpt,
    sampling_steps: Optional[int] = StepsOpt,
    eta: Optional[float] = EtaOpt,
    seed: Optional[int] = SeedOpt,
    cache_threshold: Optional[float] = CacheThresholdOpt,
    base_steps: Optional[int] = BaseStepsOpt,
    overwrite: bool = OverwriteOpt,
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Do nothing (exit 0) when the --report directory already exists."),
    quiet: bool = QuietOpt,
    log_format: str = LogFormatOpt,
) -> None:
    """Evaluate predictions: PSNR, SSIM, MAE, FID, PA/mIoU, SMS, LPIPS, PMR/IR/IR-ED, CLIP-IQA; write reports.

    Inputs: two scenes, two tile directories (matched by file name), or --checkpoint RUN --data TILES --split.
    Nodata of either image is excluded; rasters without a CRS are refused unless --allow-ungeoreferenced. The
    summary says which bands (and ranges) every metric used. --fail-under (↑ metrics) / --fail-over (↓ metrics)
    exit 1 when the quality gate fails (the report is still written); bad input exits 2.

    Example: sarkit eval --pred pred.tif --target s2.tif --metrics psnr,ssim,mae --report eval-out
    """
    from sarkit.devices import resolve_device
    from sarkit.errors import InputError
    from sarkit.eval.compare import compare_reports
    from sarkit.eval.gate import QualityGate
    from sarkit.eval.options import EvalInputs, EvalOptions, metric_set
    from sarkit.eval.report import (SUMMARY_COLUMNS, band_lines, baseline_columns, baseline_rows, metric_notes,
                                    summary_rows, to_json_value)
    from sarkit.eval.runner import run_eval_report
    from sarkit.infer.diffusion import SamplingOptions
    from sarkit.progress import print_table

    rep = _reporter(quiet, log_format)
    if report is not None and _skip(report, skip_existing, rep):
        return
    if compare:
        table = compare_reports(reports or [], report, overwrite)
        for group, headers, rows in table.terminal_groups():
            print_table(group, headers, rows, quiet=quiet)
        if not quiet:
            typer.echo("* best, † second per column" + (f"; written to {report}" if report is not None else ""))
        return
    if reports:
        raise InputError(f"unexpected argument {reports[0]}; use --pred/--target, --checkpoint, or --compare")
    gate = QualityGate(under=fail_under or {}, over=fail_over or {})
    names = metric_set(metrics, segmenter=segmenter is not None)
    gate.require(names)
    opts = EvalOptions(
        metrics=names,
        s1_range=s1_range, s2_range=s2_range, s2_offset=s2_offset,
        segmenter=segmenter, sms_model=sms_model, sam_weights=sam_weights,
        lpips_weights=lpips_weights, lpips_backbone=lpips_backbone,
        fid_weights=fid_weights, clip_weights=clip_weights, clip_model=clip_model,
        batch_size=batch_size, device=str(resolve_device(device)),
        input_scene=input_scene, bands=bands, allow_ungeoreferenced=allow_ungeoreferenced,
        sampling=SamplingOptions(sampler=sampler, steps=sampling_steps, eta=eta, seed=seed,
                                 cache_threshold=cache_threshold, base_steps=base_steps),
    )
    if checkpoint is None and opts.sampling.given():
        raise InputError(f"{', '.join(opts.sampling.given())} apply to eval --checkpoint of a diffusion model only")
    inputs = EvalInputs(pred=pred, target=target, labels=labels, checkpoint=checkpoint, data=data, split=split)
    result = run_eval_report(inputs, opts, report, overwrite, rep)
    record = to_json_value(result.report)
    print_table("sarkit eval (normalised [0, 1] space)", SUMMARY_COLUMNS, summary_rows(record), quiet=quiet)
    if rows := baseline_rows(record):
        print_table("baselines (same pixels and bands)", baseline_columns(record), rows, quiet=quiet)
    if not quiet:
        for line in band_lines(record) + metric_notes(record):
            typer.echo(line)
    gate.enforce(result.summary)


# === report / benchmark (training curves, the model benchmark) ===


@app.command("report")
@_handle_errors
def report_cmd(
    run: Path = typer.Argument(..., help="Training run directory (the --out of sarkit train)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the page here instead of RUN/report.html."),
    overwrite: bool = OverwriteOpt,
    skip_existing: bool = SkipExistingOpt,
    quiet: bool = QuietOpt,
    log_format: str = LogFormatOpt,
) -> None:
    """Write a training run's report.html: loss, learning-rate and validation curves, sample grids over time,
    timing and config (training writes RUN/report.html itself at its end; this refreshes it, also mid-run).

    Example: sarkit report runs/p2p
    """
    from sarkit.training.report import write_run_report

    from sarkit.training.report import REPORT_NAME

    reporter = _reporter(quiet, log_format)
    if _skip(out if out is not None else run / REPORT_NAME, skip_existing, reporter):
        return
    path = write_run_report(run, out, overwrite)
    reporter.info(f"run report → {path}", report=str(path))


@app.command("benchmark")
@_handle_errors
def benchmark_cmd(
    data: Path = typer.Option(..., "--data", help="Tile directory written by sarkit tile (train and test splits)."),
    out: Path = typer.Option(..., "--out", help="Benchmark folder (runs/, reports/, comparison/, benchmark.json)."),
    models: str = typer.Option("all", "--models", help="Comma list of registered translators, or all."),
    steps: int = typer.Option(1000, "--steps", help="Training steps of every model (the same budget)."),
    segmenter_steps: Optional[int] = typer.Option(None, "--segmenter-steps",
                                                  help="Steps of the segmenters (default: --steps)."),
    seed: int = typer.Option(0, "--seed", help="Seed of every run."),
    batch_size: int = typer.Option(1, "--batch-size", help="Tiles per step of every run."),
    lr: float = typer.Option(2e-4, "--lr", help="Adam learning rate of every run."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    metrics: Optional[Any] = typer.Option(None, "--metrics", parser=P.names("--metrics"), metavar="NAMES",
                                          help="Eval metrics (default psnr,ssim,mae; +pa,miou,sms with labels)."),
    model_opt: Optional[List[str]] = typer.Option(
        None, "--model-opt", help="KEY=VALUE for every model that has KEY, or MODEL:KEY=VALUE (repeatable)."),
    val_every: Optional[int] = typer.Option(None, "--val-every", help="Validate the runs every N steps "
                                            "(default: 4 times per run)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the benchmark in --out again from nothing."),
    skip_existing: bool = SkipExistingOpt,
    quiet: bool = QuietOpt,
    log_format: str = LogFormatOpt,
) -> None:
    """Train every listed model with the same steps and seed, evaluate each on the test split in both directions
    and write the papers' table (comparison/compare.md, .csv, .tex); a re-run resumes what is missing.

    Example: sarkit benchmark --data tiles --models pix2pix,cyclegan,cut --steps 20000 --out bench
    """
    from sarkit.benchmark import BenchmarkOptions, run_benchmark
    from sarkit.progress import print_table

    reporter = _reporter(quiet, log_format)
    if _skip(out / "comparison", skip_existing, reporter):
        return
    opts = BenchmarkOptions(data=data, out=out, models=models, steps=steps, segmenter_steps=segmenter_steps,
                            seed=seed, batch_size=batch_size, lr=lr, device=device, model_options=model_opt or (),
                            metrics=metrics, val_every=val_every, overwrite=overwrite)
    res = run_benchmark(opts, reporter)
    for group, headers, rows in res.table.terminal_groups():
        print_table(group, headers, rows, quiet=quiet or log_format == "json")


# === demo ===


@app.command("demo")
@_handle_errors
def demo_cmd(
    out: Path = typer.Option(Path("sarkit-demo"), "--out", help="Directory for everything the demo writes."),
    full: bool = typer.Option(False, "--full", help="Also train and compare cyclegan, cut, qs-attn, cyclegan-sc "
                                                    "(with its segmenters) and con-diffusion (tiny); much longer "
                                                    "on CPU."),
    steps: int = typer.Option(2000, "--steps", help="pix2pix training steps (on 128² tiles)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated scenes and of training."),
    device: str = typer.Option("auto", "--device", help="auto (a GPU when there is one), cpu, cuda or cuda:N."),
    overwrite: bool = OverwriteOpt,
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Do nothing (exit 0) when --out holds a finished demo."),
    quiet: bool = QuietOpt,
    log_format: str = LogFormatOpt,
) -> None:
    """Run the whole pipeline on generated data: synth, tile, train pix2pix, translate, eval, HTML report.

    Example: sarkit demo --out sarkit-demo --overwrite
    """
    from sarkit.demo import DemoOptions, demo_finished, run_demo
    from sarkit.progress import print_table

    reporter = _reporter(quiet, log_format)
    if _skip(out, skip_existing, reporter, demo_finished):
        return
    res = run_demo(DemoOptions(out=out, full=full, steps=steps, seed=seed, device=device, overwrite=overwrite),
                   reporter)
    names = sorted({k for m in res.metrics.values() for k in m})
    print_table("sarkit demo: evaluation on the test scene (normalised [0, 1] space)", ["model", *names],
                [[model, *[m.get(k, "") for k in names]] for model, m in res.metrics.items()], quiet=quiet)
    print_table(f"sarkit demo: outputs ({res.total_seconds:.0f} s in all)", ["output", "path"],
                [[k, str(v)] for k, v in res.outputs.items()], quiet=quiet)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="sarkit")


if __name__ == "__main__":
    main()
