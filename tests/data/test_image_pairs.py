"""Tests of ``sarkit tile --layout pairs`` (sarkit/data/pairs.py) on generated datasets that mirror the real
conventions: folder names, file names, dtypes and channel counts as each dataset ships them."""

from __future__ import annotations

import csv
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.data.dataset import TileDataset
from sarkit.data.pairs import PIXEL_GRID, PairOptions, detect_convention, find_pairs, match_files, tile_pairs
from sarkit.data.tiling import TileOptions, tile_layout
from sarkit.errors import InputError


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def gray(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth-ish uint8 SAR-like image (a gradient plus speckle)."""
    r, c = np.mgrid[0:h, 0:w]
    return np.clip((r + c) % 200 + rng(seed).integers(0, 50, (h, w)), 0, 255).astype(np.uint8)


def color(h: int, w: int, seed: int) -> np.ndarray:
    """A (h, w, 3) uint8 RGB image with different channels."""
    return rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def sen12(root: Path, patches=(33, 268, 1008), roi: str = "ROIs1158_spring", scene: int = 90,
          size: int = 256) -> dict[int, np.ndarray]:
    """SEN1-2 as it ships: ROIs…/s1_N/ROIs…_s1_N_pM.png (mode L) with s2_N/…_s2_N_pM.png (RGB)."""
    out = {}
    for p in patches:
        for kind in ("s1", "s2"):
            d = root / roi / f"{kind}_{scene}"
            d.mkdir(parents=True, exist_ok=True)
            a = gray(size, size, p) if kind == "s1" else color(size, size, p)
            Image.fromarray(a).save(d / f"{roi}_{kind}_{scene}_p{p}.png")
            if kind == "s1":
                out[p] = a
    return out


def read_tif(path: Path) -> tuple[np.ndarray, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            return src.read(), {"crs": src.crs, "transform": src.transform, "dtype": src.dtypes[0],
                                "tags": src.tags(), "nodata": src.nodata, "desc": src.descriptions}


def manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_sen12_tiles_keep_values_pixel_grid_and_split_per_image(tmp_path):
    src = sen12(tmp_path / "SEN1-2", patches=(33, 268, 1008, 1010, 1012, 1014))
    (tmp_path / "SEN1-2/ROIs1158_spring/s1_90/ROIs1158_spring_s1_90_p5.png").write_bytes(b"")  # no s2 partner
    s = tile_pairs(tmp_path / "SEN1-2", tmp_path / "t", TileOptions(size=128, split=(0.5, 0.5, 0.0)))
    assert s.written == 6 * 4 and s.skipped.get("unmatched") == 1
    rows = manifest(tmp_path / "t")
    per_image: dict[str, set[str]] = {}
    for r in rows:
        per_image.setdefault(r["source_s1"], set()).add(r["split"])
        assert r["crs"] == PIXEL_GRID
    assert all(len(v) == 1 for v in per_image.values()), per_image  # neighbours never in two splits
    assert Counter(next(iter(v)) for v in per_image.values()) == {"train": 3, "val": 3}
    row = next(r for r in rows if "p268" in r["tile_id"] and r["row_off"] == "128" and r["col_off"] == "0")
    sar, meta = read_tif(tmp_path / "t" / row["s1_path"])
    assert sar.shape == (1, 128, 128) and meta["dtype"] == "uint8" and meta["crs"] is None
    np.testing.assert_array_equal(sar[0], src[268][128:, :128])
    assert (meta["transform"].c, meta["transform"].f) == (0, 128)  # the tile's place on the image's pixel grid
    assert meta["tags"]["units"] == "image" and meta["nodata"] is None and meta["desc"] == ("VV",)
    opt, ometa = read_tif(tmp_path / "t" / row["s2_path"])
    assert opt.shape == (3, 128, 128) and ometa["desc"] == ("B4", "B3", "B2")
    rec = json.loads((tmp_path / "t/tiling.json").read_text())
    assert rec["georeferenced"] is False and rec["pairs"]["convention"] == "sen1-2"
    assert rec["pairs"]["split_by"] == "image"
    for key, bands in (("sar", ["VV"]), ("optical", ["B4", "B3", "B2"])):
        n = rec["normalization"][key]
        assert n["bands"] == bands and n["lo"] == [0.0] * len(bands) and n["hi"] == [255.0] * len(bands)
        assert n["units"] == "image"


def test_tiles_of_image_pairs_read_in_their_fixed_range(tmp_path):
    src = sen12(tmp_path / "d", patches=(1, 2))
    tile_pairs(tmp_path / "d", tmp_path / "t", TileOptions(size=256, split=(1.0, 0.0, 0.0)))
    ds = TileDataset(tmp_path / "t", "train")
    item = ds[[r["tile_id"] for r in ds.rows].index("ROIs1158_spring_s1_90_p1_r00000_c00000")]
    np.testing.assert_allclose(item["sar"][0].numpy(), src[1] / 127.5 - 1.0, atol=1e-6)
    assert item["optical"].shape == (3, 256, 256) and bool(item["valid"].all())  # black pixels are data


def test_pix2pix_aligned_honours_the_dataset_splits_and_finds_the_gray_half(tmp_path):
    root = tmp_path / "sar2opt"
    halves = {}
    for split, names in (("train", ["1", "2", "3"]), ("val", ["4"]), ("test", ["1"])):
        (root / split).mkdir(parents=True)
        for i, n in enumerate(names):
            a = gray(64, 64, hash((split, n)) % 1000)
            ab = np.concatenate([np.stack([a] * 3, -1), color(64, 64, i)], axis=1)  # A | B, 64×128
            Image.fromarray(ab).save(root / split / f"{n}.jpg", quality=95)  # pix2pix sets ship JPEG
            halves[(split, n)] = a
    assert detect_convention(root, PairOptions()) == "pix2pix"
    s = tile_pairs(root, tmp_path / "t", TileOptions(size=64))
    assert s.splits == {"train": 3, "val": 1, "test": 1}
    rows = manifest(tmp_path / "t")
    assert len({r["tile_id"] for r in rows}) == 5  # train/1.jpg and test/1.jpg get distinct ids
    r = next(r for r in rows if r["split"] == "val")
    sar, meta = read_tif(tmp_path / "t" / r["s1_path"])
    assert sar.shape == (1, 64, 64) and r["source_s1"].endswith("#A") and r["source_s2"].endswith("#B")
    assert np.abs(sar[0].astype(int) - halves[("val", "4")]).mean() < 3  # JPEG: the A half, nearly exact
    assert json.loads((tmp_path / "t/tiling.json").read_text())["pairs"]["split_by"] == "dataset"
    with pytest.raises(InputError, match=r"3 different channels.*--sar-is"):
        tile_pairs(root, tmp_path / "t2", TileOptions(size=64), PairOptions(sar_is="B"))


def test_cyclegan_pairs_by_name_and_takes_the_gray_side_as_sar(tmp_path):
    root = tmp_path / "sen12_cyclegan"
    for split, names in (("train", ["a", "b", "c"]), ("test", ["d"])):
        for side in "AB":
            (root / f"{split}{side}").mkdir(parents=True)
        for i, n in enumerate(names):
            Image.fromarray(color(32, 32, i)).save(root / f"{split}A" / f"{n}.png")  # A optical here
            Image.fromarray(gray(32, 32, i)).save(root / f"{split}B" / f"{n}.png")  # B SAR (mode L)
    Image.fromarray(gray(32, 32, 9)).save(root / "trainB" / "lonely.png")
    assert detect_convention(root, PairOptions()) == "cyclegan"
    conv, pairs = find_pairs(root, PairOptions(), skipped := Counter())
    assert conv == "cyclegan" and skipped["unmatched"] == 1 and len(pairs) == 4
    assert all(p.sar.parent.name.endswith("B") for p in pairs)
    from sarkit.reporting import RecordingReporter

    rec = RecordingReporter()
    s = tile_pairs(root, tmp_path / "t", TileOptions(size=32), reporter=rec)
    assert s.splits == {"train": 3, "val": 0, "test": 1}
    assert json.loads((tmp_path / "t/tiling.json").read_text())["pairs"]["sar_is"] == "B"
    assert any("SAR is side B" in m for m in rec.infos), rec.infos
    _, pairs = find_pairs(root, PairOptions(sar_is="A"))
    assert all(p.sar.parent.name.endswith("A") for p in pairs)


def test_two_folders_by_number_with_labels_rgb_stored_sar_and_16_bit(tmp_path):
    root = tmp_path / "texas"
    for d in ("sar", "opt", "lbl"):
        (root / d).mkdir(parents=True)
    for n in (12, 7):
        Image.fromarray(np.stack([gray(64, 64, n)] * 3, -1)).save(root / "sar" / f"sar{n}.png")  # 3 equal channels
        Image.fromarray(color(64, 64, n)).save(root / "opt" / f"opt{n}.png")
        lab = (np.arange(64 * 64).reshape(64, 64) % 4).astype(np.uint8)
        Image.fromarray(lab).save(root / "lbl" / f"lbl{n}.png")
    opts = PairOptions(sar_dir="sar", opt_dir="opt", label_dir="lbl")
    s = tile_pairs(root, tmp_path / "t", TileOptions(size=32, split=(0.5, 0.5, 0.0)), opts)
    assert s.written == 8
    rec = json.loads((tmp_path / "t/tiling.json").read_text())
    assert rec["sar_bands"] == ["VV"] and rec["classes"] == ["class_0", "class_1", "class_2", "class_3"]
    rows = manifest(tmp_path / "t")
    assert {r["source_s2"].rsplit("/", 1)[1] for r in rows if "sar12" in r["source_s1"]} == {"opt12.png"}
    lab, meta = read_tif(tmp_path / "t" / rows[0]["labels_path"])
    assert lab.shape == (1, 32, 32) and json.loads(meta["tags"]["class_names"])[3] == "class_3"
    # 16-bit TIFFs without CRS (WHU-OPT-SAR style), found by the folder names alone
    r16 = tmp_path / "whu"
    for d in ("SAR", "optical"):
        (r16 / d).mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for d, count in (("SAR", 1), ("optical", 3)):
            with rasterio.open(r16 / d / "NH49E001013.tif", "w", driver="GTiff", width=32, height=32,
                               count=count, dtype="uint16") as dst:
                dst.write(rng(count).integers(0, 65536, (count, 32, 32)).astype(np.uint16))
    assert detect_convention(r16, PairOptions()) == "folders"
    tile_pairs(r16, tmp_path / "t16", TileOptions(size=32))
    rec = json.loads((tmp_path / "t16/tiling.json").read_text())
    assert rec["normalization"]["sar"]["hi"] == [65535.0] and rec["normalization"]["optical"]["hi"] == [65535.0] * 3


def test_match_files_by_name_then_by_unique_number():
    sar = [Path("sar12.png"), Path("sar7.png"), Path("x.png"), Path("a1.png"), Path("b1.png")]
    opt = [Path("opt12.png"), Path("opt7.png"), Path("x.png"), Path("c1.png")]
    got = {k.name: v.name for k, v in match_files(sar, opt).items()}
    assert got == {"sar12.png": "opt12.png", "sar7.png": "opt7.png", "x.png": "x.png"}  # 1 is ambiguous


@pytest.mark.parametrize("case, message", [
    ("empty", r"found no image-pair convention under .*/d .the folder is empty.*--sar-dir.*--pairs"),
    ("sizes", r"SAR image sar/1.png is 32×32 but optical image opt/1.png is 32×48: .* must have the same size"),
    ("depths", r"SAR image sar/2.png has 1 channel.s. of 0–65535 but SAR image sar/1.png has 1 of 0–255: .*agree"),
    ("small", r"no image of .*/d holds a whole --size 64 tile: use a smaller --size"),
])
def test_refusals_name_the_files_and_what_to_do(tmp_path, case, message):
    root = tmp_path / "d"
    root.mkdir()
    if case != "empty":
        for d in ("sar", "opt"):
            (root / d).mkdir()
        Image.fromarray(gray(32, 32, 0)).save(root / "sar" / "1.png")
        Image.fromarray(color(32 if case != "sizes" else 48, 32, 0)).save(root / "opt" / "1.png")
        if case == "depths":
            Image.fromarray(gray(32, 32, 0).astype(np.uint16) * 200).save(root / "sar" / "2.png")
            Image.fromarray(color(32, 32, 1)).save(root / "opt" / "2.png")
    with pytest.raises(InputError, match=message):
        tile_pairs(root, tmp_path / "t", TileOptions(size=64 if case == "small" else 32))
    assert not (tmp_path / "t").exists()


def test_pair_options_are_checked_and_belong_to_layout_pairs(tmp_path):
    with pytest.raises(InputError, match="--sar-dir and --opt-dir go together"):
        PairOptions(sar_dir="sar")
    with pytest.raises(InputError, match="--pairs must be auto or one of"):
        PairOptions(convention="sen12")
    with pytest.raises(InputError, match="use them with --layout pairs"):
        tile_layout(tmp_path, "sen12ms", tmp_path / "t", TileOptions(), pairs=PairOptions(sar_is="B"))
    sen12(tmp_path / "d", patches=(1,), size=32)
    with pytest.raises(InputError, match="--pad-edges is not available with --layout pairs"):
        tile_pairs(tmp_path / "d", tmp_path / "t", TileOptions(size=32, pad_edges=True))


def test_cli_tile_layout_pairs_with_folders(tmp_path):
    root = tmp_path / "ds"
    for d in ("radar", "optic"):
        (root / d).mkdir(parents=True)
    for n in range(3):
        Image.fromarray(gray(32, 32, n)).save(root / "radar" / f"s{n}.png")
        Image.fromarray(color(32, 32, n)).save(root / "optic" / f"o{n}.png")
    r = CliRunner().invoke(app, ["tile", str(root), "--layout", "pairs", "--sar-dir", "radar", "--opt-dir", "optic",
                                 "--size", "32", "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert len(manifest(tmp_path / "t")) == 3
    r = CliRunner().invoke(app, ["tile", str(root), "--layout", "pairs", "--out", str(tmp_path / "t2")])
    assert r.exit_code == 2 and "--sar-dir" in r.output
    r = CliRunner().invoke(app, ["tile", str(root / "radar/s0.png"), "--sar-dir", "radar", "--opt-dir", "optic",
                                 "--out", str(tmp_path / "t3")])  # pair options without --layout pairs
    assert r.exit_code == 2 and "use them with --layout pairs" in r.output and not (tmp_path / "t3").exists()


def test_real_sen12_and_texas_samples_are_found(realdata):
    conv, pairs = find_pairs(realdata / "sen1-2", PairOptions())
    assert conv == "sen1-2" and len(pairs) == 15
    assert all(p.sar.stem.replace("_s1_", "_s2_") == p.optical.stem for p in pairs)
    texas = realdata / "optical-sar-texas"
    if texas.is_dir():
        from sarkit.raster.images import ImageSource

        conv, pairs = find_pairs(texas, PairOptions())
        assert conv == "folders" and len(pairs) == 31 and all(p.sar.name == p.optical.name for p in pairs)
        with ImageSource(pairs[0].sar, "sar") as src:  # VH stored as 8-bit RGB with one channel repeated
            assert src.gray and len(src.band_names) == 1


def ground_set(root: Path, cells: list[tuple[int, int]], size: int = 64, px: float = 10.0) -> None:
    """A ``folders`` pair set whose metadata.json (optical-sar-texas style) puts image i's top-left corner at ground
    cell ``cells[i]`` = (row, col) of a grid of ``size·px`` metres (EPSG:3395)."""
    for d in ("sar", "opt"):
        (root / d).mkdir(parents=True)
    records = []
    for i, (r, c) in enumerate(cells):
        Image.fromarray(np.stack([gray(size, size, i)] * 3, -1)).save(root / "sar" / f"{i}.png")
        Image.fromarray(color(size, size, i)).save(root / "opt" / f"{i}.png")
        x0, y0, e = -1.1e7 + c * size * px, 3.46e6 - r * size * px, size * px
        records.append({"fragment_filename": f"{i}.png",
                        "corners_EPSG:3395": [[x0, y0], [x0 + e, y0], [x0 + e, y0 - e], [x0, y0 - e]]})
    (root / "metadata.json").write_text(json.dumps(records))


def test_pairs_with_ground_corners_split_by_contiguous_ground_blocks(tmp_path):
    from sarkit.data.pairs import GroundFootprints, ground_blocks_of, read_ground_footprints

    cells = [(r, c) for r in range(4) for c in range(4)]          # a 4×4 mosaic of 64² images
    ground_set(tmp_path / "g", cells)
    s = tile_pairs(tmp_path / "g", tmp_path / "t", TileOptions(size=32, split=(0.5, 0.25, 0.25), seed=3))
    assert s.written == 64
    rec = json.loads((tmp_path / "t/tiling.json").read_text())
    assert rec["pairs"]["split_by"] == "ground" and rec["pairs"]["ground"]["crs"] == "EPSG:3395"
    assert rec["pairs"]["ground"]["block_side"] == pytest.approx(2 * 640.0)  # two images' extent
    split_of = {}
    for r in manifest(tmp_path / "t"):
        split_of.setdefault(Path(r["source_s1"]).stem, set()).add(r["split"])
    assert all(len(v) == 1 for v in split_of.values())
    # each 2×2 group of images (one ground block) lies in one split: no split touches another inside a block
    for br in (0, 2):
        for bc in (0, 2):
            group = {next(iter(split_of[str(4 * (br + dr) + bc + dc)])) for dr in (0, 1) for dc in (0, 1)}
            assert len(group) == 1
    assert {next(iter(v)) for v in split_of.values()} == {"train", "val", "test"}
    # footprints that overlap share a block even across cells; touching ones do not
    fp = read_ground_footprints(tmp_path / "g", find_pairs(tmp_path / "g", PairOptions())[1])
    assert isinstance(fp, GroundFootprints) and len(fp.bounds) == 16
    shifted = GroundFootprints("EPSG:3395", (fp.bounds[0], fp.bounds[0]._replace(left=fp.bounds[0].left + 630,
                                                                                right=fp.bounds[0].right + 630)))
    assert ground_blocks_of(shifted, 640.0) == [0, 0]
    touching = GroundFootprints("EPSG:3395", (fp.bounds[0], fp.bounds[1]))
    assert ground_blocks_of(touching, 640.0) == [0, 1]


def test_pairs_without_ground_corners_split_per_image(tmp_path):
    ground_set(tmp_path / "g", [(0, 0), (0, 1), (1, 0), (1, 1)])
    (tmp_path / "g/metadata.json").write_text(json.dumps({"not": "a list"}))
    tile_pairs(tmp_path / "g", tmp_path / "t", TileOptions(size=32, split=(0.5, 0.5, 0.0)))
    assert json.loads((tmp_path / "t/tiling.json").read_text())["pairs"]["split_by"] == "image"


@pytest.mark.slow
def test_real_texas_1024_images_are_cut_with_splits_by_ground_block(realdata, tmp_path):
    texas = realdata / "optical-sar-texas"
    if not texas.is_dir():
        pytest.skip("optical-sar-texas sample absent")
    s = tile_pairs(texas, tmp_path / "t", TileOptions(size=256))
    assert s.written == 496 and s.skipped == {}  # 31 images of 1024² → 16 tiles each
    splits: dict[str, set[str]] = {}
    for r in manifest(tmp_path / "t"):
        splits.setdefault(r["source_s1"], set()).add(r["split"])
    assert len(splits) == 31 and all(len(v) == 1 for v in splits.values())
    assert {next(iter(v)) for v in splits.values()} == {"train", "val", "test"}
    ground = json.loads((tmp_path / "t/tiling.json").read_text())["pairs"]["ground"]
    assert ground["crs"] == "EPSG:3395" and len(set(ground["blocks"])) > 3
    # no evaluated image shares ground with a training image: the fragments' footprints of different splits
    # are disjoint (they may touch at an edge), and each ground block lies in one split
    split_of = {Path(k).name: next(iter(v)) for k, v in splits.items()}
    names = sorted(split_of, key=lambda n: [Path(p).name for p in json.loads(
        (tmp_path / "t/tiling.json").read_text())["sources"]["s1"]].index(n))
    by_block: dict[int, set[str]] = {}
    for n, b in zip(names, ground["blocks"]):
        by_block.setdefault(b, set()).add(split_of[n])
    assert all(len(v) == 1 for v in by_block.values())
    for i, a in enumerate(ground["bounds"]):
        for j, b in enumerate(ground["bounds"]):
            if split_of[names[i]] != split_of[names[j]]:
                assert min(a[2], b[2]) <= max(a[0], b[0]) + 1e-6 or min(a[3], b[3]) <= max(a[1], b[1]) + 1e-6
    sar, meta = read_tif(next((tmp_path / "t/s1").iterdir()))
    assert sar.shape == (1, 256, 256) and meta["dtype"] == "uint8"  # VH stored as 3 equal channels: one
