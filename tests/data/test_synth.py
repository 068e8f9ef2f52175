"""Tests of sarkit.data.synth: determinism, file format, physical plausibility and the ``sarkit synth`` command."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scipy import ndimage
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.errors import InputError, OutputExistsError
from sarkit.raster.grid import PixelWindow
from sarkit.raster.norm import S1_BANDS, S2_BANDS
from sarkit.data.synth import (
    CLASS_NAMES,
    ENL,
    SynthOptions,
    build_plan,
    render_window,
    synth_scene,
)

SIZE = 384
FILES = ("s1.tif", "s2.tif", "labels.tif")


def _digests(folder: Path) -> dict[str, str]:
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in FILES}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One generated scene (seed 1), read back into arrays."""
    out = tmp_path_factory.mktemp("synth") / "scene"
    res = synth_scene(out, SynthOptions(size=SIZE, seed=1), strip_rows=128)
    with rasterio.open(res.s1_path) as s1, rasterio.open(res.s2_path) as s2, rasterio.open(res.labels_path) as lb:
        return {"res": res, "out": out, "sar": s1.read(), "opt": s2.read(), "lab": lb.read(1)}


def _class_mask(scene: dict, name: str) -> np.ndarray:
    return (scene["lab"] == CLASS_NAMES.index(name)) & np.isfinite(scene["sar"][0])


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_and_strip_height_does_not_matter(scene: dict, tmp_path: Path) -> None:
    again = synth_scene(tmp_path / "a", SynthOptions(size=SIZE, seed=1), strip_rows=128)
    other_strips = synth_scene(tmp_path / "b", SynthOptions(size=SIZE, seed=1), strip_rows=200)
    big_strips = synth_scene(tmp_path / "c", SynthOptions(size=SIZE, seed=1), strip_rows=512)
    ref = _digests(scene["out"])
    assert _digests(again.out_dir) == ref
    assert _digests(other_strips.out_dir) == ref
    assert _digests(big_strips.out_dir) == ref


def test_different_seed_differs(scene: dict, tmp_path: Path) -> None:
    other = synth_scene(tmp_path / "s2", SynthOptions(size=SIZE, seed=2))
    a, b = _digests(scene["out"]), _digests(other.out_dir)
    assert all(a[f] != b[f] for f in FILES)


def test_render_window_equals_crop_of_larger_window() -> None:
    plan = build_plan(SynthOptions(size=256, seed=5))
    full = render_window(plan, PixelWindow(0, 0, 256, 256))
    sub = render_window(plan, PixelWindow(37, 101, 150, 99))
    rs, cs = slice(37, 187), slice(101, 200)
    assert np.array_equal(sub.labels, full.labels[rs, cs])
    assert np.array_equal(sub.optical, full.optical[:, rs, cs])
    assert np.array_equal(sub.sar.view(np.uint32), full.sar[:, rs, cs].view(np.uint32))


# ---------------------------------------------------------------------------------------------- file format
def test_files_bands_dtypes_nodata_grid_and_tags(scene: dict) -> None:
    res = scene["res"]
    assert sorted(p.name for p in scene["out"].iterdir()) == sorted(FILES)
    expected = {res.s1_path: (2, "float32", S1_BANDS), res.s2_path: (13, "uint16", S2_BANDS),
                res.labels_path: (1, "uint8", ("land_cover",))}
    grids = set()
    for path, (count, dtype, names) in expected.items():
        with rasterio.open(path) as src:
            assert (src.count, src.dtypes[0], src.descriptions) == (count, dtype, tuple(names))
            assert src.crs.to_epsg() == 32633
            assert src.profile["tiled"] and src.profile["compress"] == "deflate"
            assert (src.block_shapes[0]) == (256, 256)
            grids.add((src.transform, src.width, src.height))
            if dtype == "float32":
                assert np.isnan(src.nodata)
            else:
                assert src.nodata == {"uint16": 0, "uint8": 255}[dtype]
            if path == res.labels_path:
                assert json.loads(src.tags()["class_names"]) == CLASS_NAMES
    assert len(grids) == 1
    transform, w, h = grids.pop()
    assert (w, h) == (SIZE, SIZE)
    assert (transform.a, transform.e) == (10.0, -10.0)
    assert (transform.c, transform.f) == (399960.0, 5400000.0)
    assert res.bounds == (399960.0, 5400000.0 - SIZE * 10, 399960.0 + SIZE * 10, 5400000.0)


def test_sar_nodata_is_a_slanted_wedge_along_the_left_edge(scene: dict) -> None:
    nan = np.isnan(scene["sar"])
    assert np.array_equal(nan[0], nan[1])
    width_per_row = nan[0].sum(axis=1)
    assert width_per_row[0] >= 1 and width_per_row[-1] > width_per_row[0] + 10
    assert np.all(np.diff(width_per_row) >= 0)
    assert not nan[0][:, SIZE // 2:].any()
    for r in (0, SIZE // 2, SIZE - 1):  # contiguous from column 0
        assert nan[0][r, :width_per_row[r]].all()


def test_optical_zero_only_as_whole_nodata_pixels(scene: dict) -> None:
    zero = scene["opt"] == 0
    any_zero, all_zero = zero.any(axis=0), zero.all(axis=0)
    assert np.array_equal(any_zero, all_zero)  # no 0 inside valid data
    assert 0 < all_zero.mean() < 0.02
    assert all_zero[-1, -1] and not all_zero[0, 0]


def test_labels_cover_every_class_and_have_no_nodata(scene: dict) -> None:
    counts = np.bincount(scene["lab"].ravel(), minlength=256)
    assert counts[len(CLASS_NAMES):].sum() == 0
    assert np.all(counts[:len(CLASS_NAMES)] > 0), dict(zip(CLASS_NAMES, counts))


# ---------------------------------------------------------------------------------------------- plausibility
def test_water_is_dark_in_vv(scene: dict) -> None:
    vv = scene["sar"][0][_class_mask(scene, "water")]
    assert -25.0 < vv.mean() < -18.0


def test_urban_brighter_than_cropland_in_vv(scene: dict) -> None:
    vv = scene["sar"][0]
    urban, crop = vv[_class_mask(scene, "urban")].mean(), vv[_class_mask(scene, "cropland")].mean()
    assert urban > -5.0 and urban > crop + 5.0


def test_forest_vh_above_cropland_and_bare(scene: dict) -> None:
    vh = scene["sar"][1]
    forest = vh[_class_mask(scene, "forest")].mean()
    assert -15.0 < forest < -11.0
    assert forest > vh[_class_mask(scene, "cropland")].mean() + 1.0
    assert forest > vh[_class_mask(scene, "bare")].mean() + 3.0


def test_speckle_enl_on_water_is_near_4_4(scene: dict) -> None:
    """Water is generated without texture, so the ratio mean²/variance in linear units measures the speckle.

    The mask is eroded by 2 pixels so no pixel next to another class is used.
    """
    water = ndimage.binary_erosion(_class_mask(scene, "water"), iterations=2)
    assert water.sum() > 2000
    for band in range(2):
        lin = 10.0 ** (scene["sar"][band][water].astype(np.float64) / 10.0)
        enl = lin.mean() ** 2 / lin.var()
        assert 3.5 < enl < 5.5, (band, enl)
    assert ENL == 4.4


def test_optical_water_nir_below_forest_nir(scene: dict) -> None:
    b8 = scene["opt"][S2_BANDS.index("B8")].astype(np.float64)
    valid = scene["opt"][0] > 0
    water = b8[(scene["lab"] == 0) & valid].mean()
    forest = b8[(scene["lab"] == 1) & valid].mean()
    assert water < 0.06 * 10000 and forest > 0.2 * 10000


def test_true_colour_in_display_range(scene: dict) -> None:
    rgb = scene["opt"][[3, 2, 1]].astype(np.float64) / 10000
    valid = rgb[0] > 0
    assert np.percentile(rgb[:, valid], 99) < 0.3
    assert rgb[:, valid].mean() > 0.04


# ---------------------------------------------------------------------------------------------- library errors
@pytest.mark.parametrize("kwargs, option", [
    ({"size": 32}, "--size"), ({"pixel_size": 0.0}, "--pixel-size"), ({"crs": "nonsense"}, "--crs"),
    ({"crs": "EPSG:4326"}, "--crs"), ({"seed": -1}, "--seed"),
])
def test_bad_options_raise_input_error_naming_the_option(tmp_path: Path, kwargs: dict, option: str) -> None:
    with pytest.raises(InputError, match=option):
        synth_scene(tmp_path / "x", SynthOptions(**kwargs))
    assert not (tmp_path / "x").exists()


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        synth_scene(out, SynthOptions(size=64))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    synth_scene(out, SynthOptions(size=64), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_synth_writes_scene_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "scene"
    r = CliRunner().invoke(app, ["synth", str(out), "--size", "96", "--seed", "3", "--pixel-size", "20"])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "96×96" in r.output
    with rasterio.open(out / "s2.tif") as src:
        assert src.transform.a == 20.0 and src.width == 96


@pytest.mark.parametrize("args, option", [(["--size", "10"], "--size"), (["--crs", "EPSG:bogus"], "--crs"),
                                          (["--pixel-size", "-5"], "--pixel-size")])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path: Path, args: list[str], option: str) -> None:
    out = tmp_path / "scene"
    r = CliRunner().invoke(app, ["synth", str(out), *args])
    assert r.exit_code == 2, r.output
    assert option in r.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_existing_output_exits_2_unchanged_then_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "scene"
    runner = CliRunner()
    assert runner.invoke(app, ["synth", str(out), "--size", "64", "--quiet"]).exit_code == 0
    before = _digests(out)
    r = runner.invoke(app, ["synth", str(out), "--size", "64", "--seed", "9"])
    assert r.exit_code == 2
    assert _digests(out) == before
    r = runner.invoke(app, ["synth", str(out), "--size", "64", "--seed", "9", "--overwrite", "--quiet"])
    assert r.exit_code == 0 and r.output == ""
    assert _digests(out) != before
