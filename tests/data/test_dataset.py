"""Tests of sarkit.data.dataset (TileDataset, read_tiling, load_manifest) on tiles written by sarkit.data.tiling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from sarkit.data.dataset import TileDataset, load_manifest, read_tiling
from sarkit.errors import InputError
from sarkit.raster.norm import S2_BANDS
from sarkit.data.tiling import TileOptions, tile_scene

N = 128   # scene side
T = 32    # tile side


def write(path: Path, data: np.ndarray, nodata=None, descriptions=None, tags=None) -> Path:
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype.name, crs="EPSG:32631", transform=from_origin(500000, 5600000, 10, 10),
                       nodata=nodata) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
    return path


def pattern() -> np.ndarray:
    """An asymmetric ramp p in [0.01, 0.99]: rows and columns weigh differently, so any rot/flip shows."""
    r, c = np.mgrid[0:N, 0:N]
    return 0.01 + 0.6 * r / N + 0.38 * c / N


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    """Tiles where SAR (dB) and optical (DN) carry the same pattern p: both encode to 2p − 1."""
    d = tmp_path_factory.mktemp("ds")
    p = pattern()
    sar = np.stack([-25 + 25 * p, -25 + 25 * p]).astype(np.float32)
    sar[:, 5:8, 5:8] = np.nan  # a few nodata pixels in tile (0, 0)
    dn = np.repeat(np.rint(3000 * p).astype(np.uint16)[None], 13, axis=0)
    labels = (p > 0.5).astype(np.uint8)  # labels carry the pattern too
    labels[:4, :4] = 255
    write(d / "s1.tif", sar, nodata=float("nan"), descriptions=["VV", "VH"])
    write(d / "s2.tif", dn, nodata=0, descriptions=list(S2_BANDS))
    write(d / "lab.tif", labels, nodata=255, tags={"class_names": json.dumps(["low", "high"])})
    out = d / "tiles"
    tile_scene(d / "s1.tif", d / "s2.tif", d / "lab.tif", out, TileOptions(size=T, split=(0.5, 0.5, 0.0)))
    return out


def test_read_tiling_and_manifest(tiles, tmp_path):
    rec = read_tiling(tiles)
    assert rec["sar_bands"] == ["VV", "VH"] and rec["params"]["size"] == T
    rows = load_manifest(tiles)
    assert len(rows) == 16
    train = load_manifest(tiles, "train")
    assert train and all(r["split"] == "train" for r in train) and len(train) < 16
    with pytest.raises(InputError):
        read_tiling(tmp_path)
    with pytest.raises(InputError):
        load_manifest(tmp_path)
    with pytest.raises(InputError):
        load_manifest(tiles, "holdout")
    (tmp_path / "tiling.json").write_text("{not json")
    with pytest.raises(InputError):
        read_tiling(tmp_path)


def test_item_shapes_ranges_and_norms(tiles):
    ds = TileDataset(tiles, split=None, labels=True)
    assert len(ds) == 16 and ds.tile_size == T and ds.ids[0] == "s1_r00000_c00000"
    assert ds.class_names == ["low", "high"] and ds.num_classes == 2
    assert ds.sar_norm.bands == ("VV", "VH") and ds.optical_norm.bands == ("B4", "B3", "B2")
    item = ds[0]
    assert item["sar"].shape == (2, T, T) and item["optical"].shape == (3, T, T)
    assert item["sar"].dtype == torch.float32 and item["optical"].dtype == torch.float32
    assert item["valid"].shape == (T, T) and item["valid"].dtype == torch.bool
    assert item["labels"].dtype == torch.int64 and item["id"] == "s1_r00000_c00000"
    for k in ("sar", "optical"):
        assert item[k].min() >= -1 and item[k].max() <= 1
    p = pattern()[:T, :T]
    expected = torch.from_numpy((2 * p - 1).astype(np.float32))
    valid = item["valid"]
    torch.testing.assert_close(item["sar"][0][valid], expected[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(item["optical"][0], expected, atol=1e-3, rtol=0)


def test_nodata_is_minus_one_and_invalid(tiles):
    item = TileDataset(tiles, split=None)[0]
    assert not item["valid"][5:8, 5:8].any() and item["valid"].sum() == T * T - 9
    assert (item["sar"][:, 5:8, 5:8] == -1.0).all()
    assert not item["sar_valid"][5:8, 5:8].any() and item["optical_valid"].all()


def test_labels_keep_ignore_index(tiles):
    item = TileDataset(tiles, split=None, labels=True)[0]
    lab = item["labels"]
    assert (lab[:4, :4] == 255).all() and (lab[4:, :] == 0).all()
    ds = TileDataset(tiles, split=None, labels=True)
    assert set().union(*(torch.unique(ds[i]["labels"]).tolist() for i in range(len(ds)))) == {0, 1, 255}


def test_augmentation_keeps_pairs_aligned(tiles):
    plain = TileDataset(tiles, split=None, labels=True)
    aug = TileDataset(tiles, split=None, labels=True, augment=True, seed=3)
    changed = 0
    for epoch in range(3):
        aug.set_epoch(epoch)
        for i in range(len(aug)):
            a, b = aug[i], plain[i]
            v = a["valid"]
            torch.testing.assert_close(a["sar"][0][v], a["optical"][0][v], atol=1e-3, rtol=0)
            # labels follow the same transform: label 1 exactly where the (augmented) SAR pattern p > 0.5
            p = (a["sar"][0] + 1) / 2
            sure = v & ((p - 0.5).abs() > 0.01) & (a["labels"] != 255)
            assert torch.equal(a["labels"][sure], (p[sure] > 0.5).long())
            changed += int(not torch.equal(a["sar"], b["sar"]))
            assert torch.equal(a["valid"], a["sar_valid"] & a["optical_valid"])
    assert changed > 20


def test_augmentation_is_deterministic(tiles):
    a = TileDataset(tiles, split=None, augment=True, seed=1)
    b = TileDataset(tiles, split=None, augment=True, seed=1)
    assert all(torch.equal(a[i]["sar"], b[i]["sar"]) for i in range(4))


def test_unpaired_sampling_is_deterministic_per_seed_and_epoch(tiles):
    def partners(seed: int, epoch: int) -> list[str]:
        ds = TileDataset(tiles, split=None, mode="unpaired", seed=seed)
        ds.set_epoch(epoch)
        return [ds[i]["optical_id"] for i in range(len(ds))]

    first = partners(0, 0)
    assert first == partners(0, 0)
    assert first != partners(0, 1)
    assert first != partners(1, 0)
    ds = TileDataset(tiles, split=None, mode="unpaired")
    item = ds[2]
    assert item["sar_id"] == ds.ids[2] == item["id"] and item["optical_id"] in ds.ids
    assert len(set(first)) > 1


def test_band_selection_by_name_and_index(tiles):
    ds = TileDataset(tiles, split=None, sar_bands=["VH"], optical_bands=[8, "B2"])
    item = ds[0]
    assert item["sar"].shape[0] == 1 and item["optical"].shape[0] == 2
    assert ds.sar_norm.bands == ("VH",) and ds.optical_norm.bands == ("B8", "B2")
    with pytest.raises(InputError):
        TileDataset(tiles, split=None, optical_bands=["B99"])
    with pytest.raises(InputError):
        TileDataset(tiles, split="test")  # empty split
    with pytest.raises(InputError):
        TileDataset(tiles, split=None, mode="sideways")


def test_labels_requested_without_labels_raise(tmp_path):
    s1 = write(tmp_path / "s1.tif", np.full((1, 64, 64), -5, np.float32), nodata=float("nan"))
    tile_scene(s1, None, None, tmp_path / "t", TileOptions(size=32, split=(1.0, 0.0, 0.0)))
    ds = TileDataset(tmp_path / "t", split="train")
    assert "optical" not in ds[0] and ds.optical_norm is None and ds[0]["valid"].all()
    with pytest.raises(InputError):
        TileDataset(tmp_path / "t", labels=True)


def test_dataloader_with_workers_batches(tiles):
    dl = torch.utils.data.DataLoader(TileDataset(tiles, split=None, augment=True), batch_size=4, num_workers=0)
    batch = next(iter(dl))
    assert batch["sar"].shape == (4, 2, T, T) and batch["optical"].shape == (4, 3, T, T)
    assert len(batch["id"]) == 4
