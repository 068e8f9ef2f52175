"""STAC Items given as http(s) URLs (sarkit.raster.stac, sarkit.io.RemoteFile): a static catalog of generated COGs
served by a local HTTP server on 127.0.0.1 with range requests (no network), read through the raster layer and by
`sarkit tile URL` and `sarkit translate URL`, which must give what the local item gives."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from sarkit.cli import app
from sarkit.errors import InputError
from sarkit.io import RemoteFile, as_file, open_raster
from sarkit.models.checkpoint import save_network
from sarkit.models.registry import Identity
from sarkit.raster.grid import PixelWindow
from sarkit.raster.norm import sar_normalization
from sarkit.raster.stac import stac_item
from sarkit.raster.stack import open_source, scene_files, scene_stem
from test_stac import static_catalog

@pytest.fixture
def served(tmp_path, monkeypatch):
    """(base URL, root): ``tmp_path / "www"`` served on 127.0.0.1 at a free port for the test, by a server in
    its own process (``httpserve.py``: rasterio holds the GIL while GDAL reads, so a server thread of this
    process could never answer)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    log = tmp_path / "served.log"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("httpserve.py")), str(root), str(log)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}", root
    finally:
        proc.terminate()
        proc.wait(10)


def served_paths(root: Path) -> list[str]:
    """The paths the server of ``served`` was asked for."""
    log = root.parent / "served.log"
    return log.read_text().splitlines() if log.exists() else []


def _url(base: str, root: Path, path: Path) -> str:
    """The URL of a file under the served root."""
    return f"{base}/{path.relative_to(root).as_posix()}"


def test_the_server_honours_byte_ranges(served):
    import urllib.request

    base, root = served
    (root / "f.bin").write_bytes(bytes(range(100)))
    req = urllib.request.Request(f"{base}/f.bin", headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.read() == bytes(range(10, 20))


def test_urls_are_remote_files_named_by_their_path_part():
    f = as_file("https://host:8/a/b/S1_VV.tif?sig=1")
    assert isinstance(f, RemoteFile) and f.name == "S1_VV.tif" and f.stem == "S1_VV"
    assert str(f) == "https://host:8/a/b/S1_VV.tif?sig=1"
    assert str(as_file(Path("https://host/a/x.json"))) == "https://host/a/x.json"  # pathlib's "https:/host"
    assert scene_files("https://h/x_VV.tif,https://h/x_VH.tif") == (RemoteFile("https://h/x_VV.tif"),
                                                                  RemoteFile("https://h/x_VH.tif"))
    assert scene_stem("https://h/x_VV.tif,https://h/x_VH.tif") == "x"
    assert isinstance(as_file("local/x.tif"), Path) and not isinstance(as_file("local/x.tif"), RemoteFile)


def test_an_item_url_reads_like_the_local_item(served):
    base, root = served
    s1, s2, data = static_catalog(root)
    for local in (s1, s2):
        url = _url(base, root, local)
        scene, ref = stac_item(url), stac_item(local)
        assert scene.names == ref.names and scene.dn_offset == ref.dn_offset and scene.units == ref.units
        assert all(f.startswith(base + "/") for f in scene.files)  # relative hrefs resolved against the URL
        modality = ref.modality
        with open_source(url, modality) as a, open_source(local, modality) as b:
            assert a.band_names == b.band_names and a.grid == b.grid
            w = PixelWindow(0, 0, 64, 64)
            assert np.array_equal(a.read_stored(w), b.read_stored(w))
    assert any(p.endswith(".tif") for p in served_paths(root))  # the COGs came over HTTP


def test_absolute_asset_urls_are_read(served):
    base, root = served
    s1, _, _ = static_catalog(root)
    raw = json.loads(s1.read_text())
    for a in raw["assets"].values():
        a["href"] = _url(base, root, (s1.parent / a["href"]).resolve())
    item = tmp = root / "abs.json"
    tmp.write_text(json.dumps(raw))
    with open_source(item, "sar") as a, open_source(s1, "sar") as b:  # a local item naming URLs
        w = PixelWindow(0, 0, 64, 64)
        assert np.array_equal(a.read_stored(w), b.read_stored(w))


def test_urls_that_cannot_be_read_are_one_line_input_errors(served):
    base, root = served
    with pytest.raises(InputError, match=rf"cannot be read from {re.escape(base)}/missing.tif .*check the URL"):
        open_raster(f"{base}/missing.tif", "scene")
    with pytest.raises(InputError, match=r"STAC item http://127.0.0.1:\d+/missing.json cannot be read"):
        stac_item(f"{base}/missing.json")
    r = CliRunner().invoke(app, ["tile", f"{base}/missing.json", "--out", str(root.parent / "t")])
    assert r.exit_code == 2 and "missing.json" in r.output
    assert not (root.parent / "t").exists()


def test_tile_and_translate_take_item_urls_like_item_files(served, tmp_path):
    base, root = served
    s1, s2, _ = static_catalog(root)
    run = CliRunner().invoke
    outs = {}
    for kind, (a, b) in {"file": (str(s1), str(s2)), "url": (_url(base, root, s1), _url(base, root, s2))}.items():
        r = run(app, ["tile", a, "--optical", b, "--size", "32", "--split", "1,0,0", "--out",
                      str(tmp_path / f"tiles_{kind}")])
        assert r.exit_code == 0, r.output
        outs[kind] = tmp_path / f"tiles_{kind}"
    manifests = [(outs[k] / "manifest.csv").read_text().splitlines() for k in ("file", "url")]
    assert manifests[0][0] == manifests[1][0] and len(manifests[0]) == len(manifests[1]) == 5
    ids = [[row.split(",")[0] for row in m[1:]] for m in manifests]
    assert ids[0] == ids[1]  # tile ids from the item's asset stems, the same either way
    tf, tu = (json.loads((outs[k] / "tiling.json").read_text()) for k in ("file", "url"))
    for key in ("sar_bands", "optical_bands", "normalization"):
        assert tf[key] == tu[key]
    for sub in ("s1", "s2"):
        files = sorted(p.name for p in (outs["file"] / sub).glob("*.tif"))
        assert files and files == sorted(p.name for p in (outs["url"] / sub).glob("*.tif"))
        for name in files:
            with rasterio.open(outs["file"] / sub / name) as x, rasterio.open(outs["url"] / sub / name) as y:
                assert np.array_equal(x.read(), y.read(), equal_nan=True) and x.transform == y.transform
    n = sar_normalization().to_dict()
    ckpt = save_network(tmp_path / "id.safetensors", Identity(2), kind="generator", arch="identity",
                        arch_kwargs={"channels": 2}, meta={"model": "identity", "direction": "identity",
                                                           "in_norm": n, "out_norm": n, "tile_size": 128,
                                                           "run": "test"})
    for kind, item in {"file": str(s1), "url": _url(base, root, s1)}.items():
        r = run(app, ["translate", item, "--checkpoint", str(ckpt), "--out", str(tmp_path / f"{kind}.tif"),
                      "--device", "cpu"])
        assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "file.tif") as x, rasterio.open(tmp_path / "url.tif") as y:
        assert (x.width, x.height) == (64, 64) and x.transform == y.transform and x.crs == y.crs
        assert np.array_equal(x.read(), y.read(), equal_nan=True)
    r = run(app, ["translate", _url(base, root, s1), "--checkpoint", str(ckpt), "--out-dir",
                  str(tmp_path / "many"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert [p.name for p in (tmp_path / "many").glob("*.tif")] == [f"{s1.stem}_translated.tif"]


def test_eval_target_and_plain_geotiff_urls(served, tmp_path):
    from rasterio.transform import from_origin

    from test_stac import X0, Y0

    base, root = served
    s1, s2, data = static_catalog(root)
    pred = tmp_path / "pred.tif"
    with rasterio.open(pred, "w", driver="GTiff", height=64, width=64, count=3, dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(X0, Y0, 10, 10), nodata=0) as d:
        d.write(np.stack([data["red"], data["green"], data["blue"]]) + 7)
        d.descriptions = ("B4", "B3", "B2")
        d.update_tags(dn_offset="-1000")
    run = CliRunner().invoke
    reports = {}
    for kind, target in {"file": str(s2), "url": _url(base, root, s2)}.items():
        r = run(app, ["eval", "--pred", str(pred), "--target", target, "--metrics", "mae", "--report",
                      str(tmp_path / f"rep_{kind}")])
        assert r.exit_code == 0, r.output
        reports[kind] = json.loads((tmp_path / f"rep_{kind}" / "report.json").read_text())
    assert reports["url"]["summary"]["mae"]["value"] == pytest.approx(reports["file"]["summary"]["mae"]["value"])
    assert reports["url"]["summary"]["mae"]["value"] > 0
    vv, vh = root / "src" / "s1" / "vv.tif", root / "src" / "s1" / "vh.tif"
    for kind, spec in {"file": f"{vv},{vh}", "url": f"{_url(base, root, vv)},{_url(base, root, vh)}"}.items():
        r = run(app, ["tile", "--s1", spec, "--s1-units", "linear", "--size", "32", "--split", "1,0,0", "--out",
                      str(tmp_path / f"t_{kind}")])
        assert r.exit_code == 0, r.output
    names = [sorted(p.name for p in (tmp_path / f"t_{k}" / "s1").glob("*.tif")) for k in ("file", "url")]
    assert names[0] and names[0] == names[1]
