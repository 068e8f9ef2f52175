"""The bad-input table of ``sarkit translate``: every row exits with its code and one line naming the problem (one
JSON event with ``--log-format json``), and leaves nothing behind (tests/badinput.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rasters import write_sar_db
from badinput import BadInput, assert_refused
from sarkit.models.checkpoint import save_network
from sarkit.models.registry import Identity
from sarkit.raster.norm import optical_normalization, sar_normalization

TEN_M = {"x": 10.0, "y": 10.0, "units": "metre", "x_m": 10.0, "y_m": 10.0}


# ------------------------------------------------------------------------------------------------ builders
def sar_scene(path: Path, size: int = 32, pixel: float = 10.0, crs: str | None = "EPSG:32631") -> Path:
    """A seeded 2-band dB scene (VV, VH) of ``pixel``-metre pixels."""
    data = np.random.default_rng(0).uniform(-24, -1, (2, size, size)).astype(np.float32)
    return write_sar_db(path, data, pixel=pixel, crs=crs)


def identity_ckpt(path: Path, norm=None, kind: str = "generator", pixel: dict | None = None) -> Path:
    """An identity generator (or another ``kind``) over ``norm``'s bands (default VV, VH)."""
    n = (norm or sar_normalization()).to_dict()
    meta = {"model": "identity", "direction": "identity", "in_norm": n, "out_norm": n, "tile_size": 32}
    if pixel:
        meta["pixel_size"] = pixel
    return save_network(path, Identity(len(n["bands"])), kind=kind, arch="identity",
                        arch_kwargs={"channels": len(n["bands"])}, meta=meta)


def unet_ckpt(path: Path) -> Path:
    """A small 8-level U-Net generator (tiles must be multiples of 256)."""
    from sarkit.models.blocks import build_unet

    kw = {"in_channels": 2, "out_channels": 3, "num_downs": 8, "ngf": 2}
    return save_network(path, build_unet(**kw), kind="generator", arch="unet", arch_kwargs=kw,
                        meta={"model": "pix2pix", "direction": "sar2opt", "in_norm": sar_normalization().to_dict(),
                              "out_norm": optical_normalization().to_dict(), "tile_size": 256})


def base(tmp: Path, *extra: str, scene: Path | None = None, ckpt: Path | None = None,
         out: str = "out/o.tif") -> list[str]:
    """``translate SCENE --checkpoint CKPT --out OUT --device cpu`` plus ``extra``, inputs built when not given."""
    scene = scene or sar_scene(tmp / "s1.tif")
    ckpt = ckpt or identity_ckpt(tmp / "g.safetensors")
    return ["translate", str(scene), "--checkpoint", str(ckpt), "--out", str(tmp / out), "--device", "cpu",
            "--amp", "off", "--overlap", "8", *extra]


def corrupt_ckpt(tmp: Path) -> list[str]:
    bad = tmp / "g.safetensors"
    bad.write_bytes(np.random.default_rng(1).bytes(4096))
    return base(tmp, ckpt=bad)


def existing_out(tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "o.tif").write_bytes(b"old")
    return base(tmp)


def scene_dir(tmp: Path) -> list[str]:
    (tmp / "scene.tif").mkdir()
    return base(tmp, scene=tmp / "scene.tif")


def run_without_generator(tmp: Path) -> list[str]:
    (tmp / "run" / "checkpoints").mkdir(parents=True)
    return base(tmp, ckpt=tmp / "run")


CASES = [
    BadInput("missing-scene", lambda t: base(t, scene=t / "nope.tif"), says=["scene not found", "nope.tif"]),
    BadInput("scene-is-a-directory", scene_dir, says=["directory", "scene.tif"]),
    BadInput("missing-checkpoint", lambda t: base(t, ckpt=t / "nope.safetensors"),
             says=["checkpoint not found", "nope.safetensors"]),
    BadInput("corrupt-checkpoint", corrupt_ckpt, says=["not a sarkit checkpoint", "g.safetensors"]),
    BadInput("run-without-generator", run_without_generator, says=["no generator checkpoint", "sarkit training run"]),
    BadInput("segmenter-checkpoint", lambda t: base(t, ckpt=identity_ckpt(t / "seg.safetensors", kind="segmenter")),
             says=["segmenter", "generator was expected"]),
    BadInput("wrong-direction-bands",
             lambda t: base(t, ckpt=identity_ckpt(t / "o2s.safetensors", norm=optical_normalization())),
             says=["lacks band(s) B4", "scene has VV, VH"]),
    BadInput("tile-not-a-unet-size", lambda t: base(t, "--tile", "100", ckpt=unet_ckpt(t / "unet.safetensors")),
             says=["--tile 100", "multiple of 256", "256, 512, 768"]),
    BadInput("tile-too-large-for-memory", lambda t: base(t, "--tile", "100000"),
             says=["--tile 100000", "needs about", "smaller --tile"]),
    BadInput("tile-zero", lambda t: base(t, "--tile", "0"), says=["--tile must be positive", "0"]),
    BadInput("overlap-not-below-tile", lambda t: base(t, "--tile", "32", "--overlap", "32"),
             says=["--overlap", "smaller than --tile (32)"]),
    BadInput("out-png", lambda t: base(t, out="out/o.png"), says=["o.png", "name it o.tif"]),
    BadInput("existing-out-without-overwrite", existing_out, says=["output exists", "--overwrite"]),
    BadInput("batch-size-zero", lambda t: base(t, "--batch-size", "0"), says=["--batch-size must be ≥ 1", "0"]),
    BadInput("bad-device", lambda t: base(t)[:-6] + ["--device", "tpu"], says=["--device", "tpu"]),
    BadInput("bad-format", lambda t: base(t, "--format", "png"), says=["--format must be one of native, rgb8"]),
    BadInput("bad-resolution-mode", lambda t: base(t, "--resolution", "loose"),
             says=["--resolution must be one of resample, strict, ignore", "loose"]),
    BadInput("ungeoreferenced-scene", lambda t: base(t, scene=sar_scene(t / "nocrs.tif", crs=None)),
             says=["nocrs.tif has no CRS", "--allow-ungeoreferenced"]),
    BadInput("resolution-strict-mismatch",
             lambda t: base(t, "--resolution", "strict", scene=sar_scene(t / "s20.tif", pixel=20.0),
                            ckpt=identity_ckpt(t / "g10.safetensors", pixel=TEN_M)),
             says=["s20.tif has 20 m pixels", "trained on 10 m", "--resolution strict"]),
    BadInput("out-and-out-dir", lambda t: base(t, "--out-dir", str(t / "outs")), says=["--out", "--out-dir"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_translate_refuses(case: BadInput, tmp_path: Path) -> None:
    args = case.build(tmp_path)
    assert_refused(args, watch=tmp_path, code=case.code, says=case.says)


def test_the_table_has_at_least_twelve_cases() -> None:
    assert len(CASES) >= 12 and len({c.name for c in CASES}) == len(CASES)
