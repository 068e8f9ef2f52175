"""The trainer (sarkit.training.trainer) and ``sarkit train``: run directory, resume, determinism, errors, torchrun."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from typer.testing import CliRunner

from sarkit.models.checkpoint import load_network
from sarkit.cli import app
from sarkit.errors import InputError
from sarkit.raster.norm import S2_BANDS, optical_normalization, sar_normalization
from sarkit.training.trainer import DataOrder, TrainOptions, psnr_ssim, train

SMALL = {"ngf": "8", "ndf": "8"}
MANIFEST_COLUMNS = ["tile_id", "split", "s1_path", "s2_path", "labels_path", "row_off", "col_off", "height",
                    "width", "left", "bottom", "right", "top", "crs", "nodata_fraction", "source_s1", "source_s2",
                    "source_labels"]


def make_tiles(root: Path, n_train: int = 4, n_val: int = 2, size: int = 32, seed: int = 0,
               labels: bool = False) -> Path:
    """A tile directory following the tile layout contract: S1 dB float32, S2 uint16 DN (13 bands), manifest,
    optionally uint8 labels (2 classes from the VV backscatter, 255 = ignore)."""
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


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiles(tmp_path_factory.mktemp("tiles") / "tiles")


def opts(tiles: Path, out: Path, **kw) -> TrainOptions:
    base = dict(model="pix2pix", data=tiles, out=out, steps=4, batch_size=2, device="cpu", val_every=0,
                save_every=0, log_every=1, model_options=dict(SMALL))
    base.update(kw)
    return TrainOptions(**base)


def nets_of(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "state-latest.pt", weights_only=True)["nets"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, bad[:5]


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_run_directory_is_complete(tiles: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = train(opts(tiles, run, val_every=2, log_every=2))
    assert res.steps == 4 and res.start_step == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "pix2pix" and cfg["model_options"]["ngf"] == 8 and cfg["train"]["lr"] == 2e-4
    assert cfg["normalization"]["output"]["bands"] == ["B4", "B3", "B2"]
    assert cfg["normalization"]["input"]["bands"] == ["VV", "VH"] and cfg["sarkit_version"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if x["kind"] == "train"]
    val_lines = [x for x in lines if x["kind"] == "val"]
    assert [x["step"] for x in train_lines] == [2, 4] and {"G_L1", "D_real", "lr"} <= set(train_lines[0])
    assert [x["step"] for x in val_lines] == [2, 4]
    assert all(0 <= x["ssim"] <= 1 and x["psnr"] > 0 for x in val_lines)
    assert (run / "samples" / "step-000002.png").is_file() and (run / "samples" / "step-000004.png").is_file()
    state = torch.load(run / "checkpoints" / "state-latest.pt", weights_only=True)
    assert state["step"] == 4 and set(state["optimizers"]) == {"G", "D"} and len(state["ranks"]) == 1
    gen = load_network(run, "generator")
    assert gen.arch == "unet" and gen.meta["direction"] == "sar2opt" and gen.meta["tile_size"] == 32
    assert gen.meta["in_norm"]["bands"] == ["VV", "VH"] and gen.meta["out_norm"]["bands"] == ["B4", "B3", "B2"]
    x = torch.rand(1, 2, 32, 32) * 2 - 1
    with torch.no_grad():  # the trained copy runs channels-last: same maths, other summation order
        assert torch.allclose(gen.module(x), res.trained_model.predict(x), atol=1e-5)


def test_sample_grid_has_input_output_target_columns(tiles: Path, tmp_path: Path) -> None:
    from PIL import Image

    run = tmp_path / "run"
    train(opts(tiles, run, steps=1, val_every=1))
    img = Image.open(run / "samples" / "step-000001.png")
    assert img.size == (3 * 32 + 2 * 2, 2 * 32 + 2)  # 3 columns, the 2 validation tiles as rows


def test_resume_equals_straight_run(tiles: Path, tmp_path: Path) -> None:
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    train(opts(tiles, straight, steps=10, save_every=5))
    first = train(opts(tiles, parts, steps=10, stop_at=5))
    assert first.steps == 5
    second = train(opts(tiles, parts, steps=10, resume=True))
    assert second.start_step == 5 and second.steps == 10
    assert_same_weights(nets_of(straight), nets_of(parts))
    a = torch.load(straight / "checkpoints" / "state-latest.pt", weights_only=True)["optimizers"]["G"]["state"]
    b = torch.load(parts / "checkpoints" / "state-latest.pt", weights_only=True)["optimizers"]["G"]["state"]
    assert all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)
    steps = [json.loads(x)["step"] for x in (parts / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))


def test_seeded_runs_are_identical_and_seed_matters(tiles: Path, tmp_path: Path) -> None:
    train(opts(tiles, tmp_path / "a", seed=3))
    train(opts(tiles, tmp_path / "b", seed=3))
    train(opts(tiles, tmp_path / "c", seed=4))
    assert_same_weights(nets_of(tmp_path / "a"), nets_of(tmp_path / "b"))
    a, c = nets_of(tmp_path / "a"), nets_of(tmp_path / "c")
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name, options", [
    ("cyclegan", {"ngf": "8", "ndf": "8", "n_blocks": "1", "pool_size": "2"}),
    ("cut", {"ngf": "8", "ndf": "8", "n_blocks": "1", "num_patches": "16"}),
])
def test_unpaired_models_train_generically(tiles: Path, tmp_path: Path, name: str, options: dict) -> None:
    run = tmp_path / name
    res = train(opts(tiles, run, model=name, steps=2, val_every=2, model_options=options, direction="opt2sar"))
    assert res.steps == 2 and all(np.isfinite(v) for v in res.losses.values())
    gen = load_network(run, "generator")
    assert gen.meta["direction"] == "opt2sar" and gen.meta["in_norm"]["modality"] == "optical"
    assert any(json.loads(x).get("kind") == "val" for x in (run / "metrics.jsonl").read_text().splitlines())


def test_segmenter_trains_on_one_modality(tmp_path: Path) -> None:
    root = make_tiles(tmp_path / "lt", labels=True)
    run = tmp_path / "seg"
    with pytest.raises(InputError, match="--modality"):
        train(opts(root, run, model="segmenter", model_options={"backbone": "mobilenet_v3_large"}))
    res = train(opts(root, run, model="segmenter", modality="sar", steps=2, val_every=2,
                     model_options={"backbone": "mobilenet_v3_large"}))
    assert res.validation is not None and 0 <= res.validation["pa"] <= 1
    seg = load_network(run, "segmenter")
    assert seg.meta["modality"] == "sar" and seg.meta["classes"] == ["low", "high"]


def test_worker_processes_give_the_same_weights(tiles: Path, tmp_path: Path) -> None:
    train(opts(tiles, tmp_path / "w0", steps=3, workers=0, augment=True))
    train(opts(tiles, tmp_path / "w1", steps=3, workers=1, augment=True))
    assert_same_weights(nets_of(tmp_path / "w0"), nets_of(tmp_path / "w1"))


def test_data_order_shards_and_covers_each_epoch() -> None:
    orders = [DataOrder(n=5, batch=2, world=2, rank=r, seed=1) for r in range(2)]
    assert orders[0].steps_per_epoch == 2
    epoch0 = [i for o in orders for b in o.batches(0, 2) for (_, i) in b]
    assert len(epoch0) == 8 and set(epoch0) == set(range(5))
    assert list(orders[0].batches(1, 3)) == list(orders[0].batches(0, 3))[1:]
    assert [e for b in orders[0].batches(2, 3) for (e, _) in b] == [1, 1]


def test_psnr_ssim_identical_and_masked() -> None:
    a = torch.rand(2, 3, 16, 16)
    p, s = psnr_ssim(a, a, None)
    assert all(v > 90 for v in p) and all(abs(v - 1) < 1e-4 for v in s)
    b = a.clone()
    b[..., :8] = 1 - b[..., :8]
    valid = torch.zeros(2, 16, 16, dtype=torch.bool)
    valid[..., 8:] = True
    p2, _ = psnr_ssim(b, a, valid)
    p3, _ = psnr_ssim(b, a, None)
    assert all(v > 90 for v in p2) and all(v < 30 for v in p3)


# ------------------------------------------------------------------------------------------ CLI
runner = CliRunner()


def cli(*args: str) -> object:
    return runner.invoke(app, ["train", *args])


def base_args(tiles: Path, out: Path, *extra: str, device: str = "cpu") -> list[str]:
    return ["--model", "pix2pix", "--data", str(tiles), "--out", str(out), "--steps", "2", "--batch-size", "2",
            "--device", device, "--val-every", "0", "--quiet", "--model-opt", "ngf=8", "--model-opt", "ndf=8",
            *extra]


def test_cli_trains_and_refuses_to_rerun(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli(*base_args(tiles, out))
    assert r.exit_code == 0, r.output
    before = snapshot(out)
    same = cli(*base_args(tiles, out))
    assert same.exit_code == 2 and "--resume" in same.output and "--overwrite" in same.output
    other = cli(*base_args(tiles, out, "--lr", "1e-4"))
    assert other.exit_code == 2 and "different config" in other.output
    assert snapshot(out) == before
    again = cli(*base_args(tiles, out, "--overwrite"))
    assert again.exit_code == 0, again.output
    other_dir = tmp_path / "not-a-run"
    other_dir.mkdir()
    (other_dir / "keep.txt").write_text("precious")
    refused = cli(*base_args(tiles, other_dir, "--overwrite"))
    assert refused.exit_code == 2 and (other_dir / "keep.txt").read_text() == "precious"


def test_cli_bad_inputs_exit_2_and_write_nothing(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli("--model", "nope", "--data", str(tiles), "--out", str(out))
    assert r.exit_code == 2 and "pix2pix" in r.output and "cyclegan" in r.output
    r = cli(*base_args(tiles, out, "--epochs", "1"))
    assert r.exit_code == 2 and "not both" in r.output
    r = cli(*base_args(tmp_path / "missing", out))
    assert r.exit_code == 2
    r = cli(*base_args(tiles, out, "--model-opt", "bogus=1"))
    assert r.exit_code == 2 and "bogus" in r.output
    r = cli(*base_args(tiles, out, "--resume"))
    assert r.exit_code == 2 and "nothing to resume" in r.output
    if not torch.cuda.is_available():
        r = cli(*base_args(tiles, out, device="cuda"))
        assert r.exit_code == 2 and "CUDA" in r.output
    assert not out.exists()


def test_cli_empty_train_split(tmp_path: Path) -> None:
    root = make_tiles(tmp_path / "t", n_train=0, n_val=2)
    r = cli(*base_args(root, tmp_path / "run"))
    assert r.exit_code == 2 and "train split" in r.output and not (tmp_path / "run").exists()


def test_resume_with_other_bands_or_corrupt_state(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli(*base_args(tiles, out)).exit_code == 0
    before = snapshot(out)
    r = cli(*base_args(tiles, out, "--resume", "--sar-bands", "VV", "--steps", "4"))
    assert r.exit_code == 2 and "channels differ" in r.output
    assert snapshot(out) == before
    state = out / "checkpoints" / "state-latest.pt"
    state.write_bytes(state.read_bytes()[:1000])
    before = snapshot(out)
    r = cli(*base_args(tiles, out, "--resume", "--steps", "4"))
    assert r.exit_code == 2 and "corrupt checkpoint" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert snapshot(out) == before


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from pathlib import Path
        from sarkit.training.trainer import TrainOptions, train
        res = train(TrainOptions(model="pix2pix", data=Path({str(tiles)!r}), out=Path({str(out)!r}), steps=3,
                                 batch_size=1, device="cpu", val_every=2, save_every=0, log_every=1,
                                 model_options={SMALL!r}))
        torch.save(res.trained_model.nets.state_dict(), Path({str(tmp_path)!r}) / f"rank{{os.environ['RANK']}}.pt")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", str(script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert_same_weights(w0, w1)
    assert_same_weights(w0, nets_of(out))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["steps_per_epoch"] == 2
    assert (out / "checkpoints" / "generator.safetensors").is_file() and (out / "metrics.jsonl").is_file()
    assert len(torch.load(out / "checkpoints" / "state-latest.pt", weights_only=True)["ranks"]) == 2
