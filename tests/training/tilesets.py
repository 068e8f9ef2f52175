"""Small tile folders for training tests, written by code (seeded), following the tile layout contract."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from sarkit.raster.norm import S2_BANDS, optical_normalization, sar_normalization
from sarkit.training import TrainOptions

SMALL = {"ngf": "8", "ndf": "8"}
MANIFEST_COLUMNS = ["tile_id", "split", "s1_path", "s2_path", "labels_path", "row_off", "col_off", "height",
                    "width", "left", "bottom", "right", "top", "crs", "nodata_fraction", "source_s1", "source_s2",
                    "source_labels"]


def make_tiles(root: Path, n_train: int = 4, n_val: int = 2, size: int = 32, seed: int = 0,
               labels: bool = False, nodata: bool = False) -> Path:
    """A tile directory following the tile layout contract: S1 dB float32, S2 uint16 DN (13 bands), manifest,
    optionally uint8 labels (2 classes from the VV backscatter, 255 = ignore) and, with ``nodata``, a NaN
    SAR corner (7×13 px) in every odd tile and an S2 nodata (0) row strip in every tile divisible by 3."""
    rng = np.random.default_rng(seed)
    (root / "s1").mkdir(parents=True)
    (root / "s2").mkdir()
    if labels:
        (root / "labels").mkdir()
    rows = []
    for k in range(n_train + n_val):
        tid = f"t{k:03d}"
        split = "train" if k < n_train else "val"
        transform = from_origin(500000 + k * size * 10, 4000000, 10, 10)
        base = rng.uniform(0, 1, (2, size // 4, size // 4)).repeat(4, 1).repeat(4, 2)
        db = (-22 + 18 * base).astype(np.float32)
        refl = np.clip(0.02 + 0.25 * base[[0, 1, 0]].mean(0, keepdims=True) + 0.02 * np.arange(13)[:, None, None]
                       / 13, 0, 1)
        dn = (refl * 10000).astype(np.uint16).clip(1)
        if nodata and k % 2:
            db[:, :7, :13] = np.nan
        if nodata and k % 3 == 0:
            dn[:, size - 4:, :] = 0
        common = dict(driver="GTiff", height=size, width=size, crs="EPSG:32633", transform=transform)
        with rasterio.open(root / "s1" / f"{tid}.tif", "w", count=2, dtype="float32", nodata=float("nan"),
                           **common) as dst:
            dst.write(db)
            dst.descriptions = ("VV", "VH")
        with rasterio.open(root / "s2" / f"{tid}.tif", "w", count=13, dtype="uint16", nodata=0, **common) as dst:
            dst.write(dn)
            dst.descriptions = S2_BANDS
        if labels:
            lab = (base[0] > 0.5).astype(np.uint8)
            lab[:2, :2] = 255
            with rasterio.open(root / "labels" / f"{tid}.tif", "w", count=1, dtype="uint8", nodata=255,
                               **common) as dst:
                dst.write(lab[None])
                dst.update_tags(class_names=json.dumps(["low", "high"]))
        left, top = transform.c, transform.f
        rows.append({"tile_id": tid, "split": split, "s1_path": f"s1/{tid}.tif", "s2_path": f"s2/{tid}.tif",
                     "labels_path": f"labels/{tid}.tif" if labels else "", "row_off": 0, "col_off": k * size,
                     "height": size, "width": size,
                     "left": left, "bottom": top - size * 10, "right": left + size * 10, "top": top,
                     "crs": "EPSG:32633", "nodata_fraction": 0.0, "source_s1": "s1.tif", "source_s2": "s2.tif",
                     "source_labels": ""})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    record = {"sarkit_version": "test", "params": {"size": size, "stride": size},
              "normalization": {"sar": sar_normalization().to_dict(),
                                "optical": optical_normalization(S2_BANDS).to_dict()},
              "sar_bands": ["VV", "VH"], "optical_bands": list(S2_BANDS),
              "classes": ["low", "high"] if labels else None, "sources": {},
              "counts": {"train": n_train, "val": n_val}}
    (root / "tiling.json").write_text(json.dumps(record))
    return root




def opts(tiles: Path, out: Path, **kw) -> TrainOptions:
    """TrainOptions of a tiny 4-step pix2pix run on ``tiles`` (CPU, no validation or periodic saves)."""
    base = dict(model="pix2pix", data=tiles, out=out, steps=4, batch_size=2, device="cpu", val_every=0,
                save_every=0, log_every=1, model_options=dict(SMALL))
    base.update(kw)
    return TrainOptions(**base)


def nets_of(run: Path) -> dict[str, torch.Tensor]:
    """The network weights of RUN's training state."""
    return torch.load(run / "checkpoints" / "state-latest.pt", weights_only=True)["nets"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Both state dicts hold bit-identical tensors under the same keys."""
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, bad[:5]


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of RUN by relative path → its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def cli(*args: str) -> Any:
    """``sarkit train ARGS`` through typer's test runner."""
    from typer.testing import CliRunner

    from sarkit.cli import app

    return CliRunner().invoke(app, ["train", *args])


def base_args(tiles: Path, out: Path, *extra: str, device: str = "cpu") -> list[str]:
    """Arguments of a 2-step, batch-2 pix2pix run with a small network, quiet, no validation."""
    return ["--model", "pix2pix", "--data", str(tiles), "--out", str(out), "--steps", "2", "--batch-size", "2",
            "--device", device, "--val-every", "0", "--quiet", "--model-opt", "ngf=8", "--model-opt", "ndf=8",
            *extra]


def damage_tile(root: Path, rel: str, how: str) -> Path:
    """Damage tile ``rel`` (a manifest path) of a tile folder: "deleted"; "png" (a small RGB PNG under the .tif
    name); "truncated" (cut to half: GDAL writes the header last, so it is lost); "truncated-data" (rewritten
    as a COG, header first, then cut: it opens, and reading its pixels fails)."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    path = root / rel
    if how == "deleted":
        path.unlink()
    elif how == "png":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path.with_suffix(".png"), "w", driver="PNG", height=32, width=32, count=3,
                               dtype="uint8") as dst:
                dst.write(np.full((3, 32, 32), 128, np.uint8))
        path.with_suffix(".png").replace(path)
        for aux in path.parent.glob(f"{path.stem}.png*"):
            aux.unlink()
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif how == "truncated-data":
        with rasterio.open(path) as src:
            prof, data = src.profile, src.read()
            names = src.descriptions
        prof.update(driver="COG", blocksize=16, compress="NONE", overviews="NONE")
        for key in ("blockxsize", "blockysize", "tiled", "interleave"):
            prof.pop(key, None)
        with rasterio.open(path, "w", **prof) as dst:
            dst.write(data)
            dst.descriptions = names
        raw = path.read_bytes()
        path.write_bytes(raw[:int(len(raw) * 0.6)])
    else:
        raise ValueError(how)
    return path
