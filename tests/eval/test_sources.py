"""The source protocol (sarkit.eval.sources.EvalSource): the three sources satisfy it, evaluate takes any object
that does, and the mode strings of report.json."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import pytest

from sarkit.data.synth import SynthOptions, synth_scene
from sarkit.data.tiling import TileOptions, tile_scene
from sarkit.eval.options import EvalOptions
from sarkit.eval.report import to_json_value
from sarkit.eval.runner import evaluate
from sarkit.eval.sources import Block, EvalMode, EvalSource, ModelSplitSource, SceneSource, TileSetSource
from sarkit.models.checkpoint import save_network
from sarkit.models.registry import Identity
from sarkit.raster.grid import PixelWindow
from sarkit.raster.norm import Normalization, optical_normalization, sar_normalization

#: Every member the protocol declares: its annotated attributes and its methods.
MEMBERS = sorted(set(typing.get_type_hints(EvalSource, include_extras=False))
                 | {"__len__", "blocks", "fetch", "overview", "close"})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    scene = synth_scene(root / "scene", SynthOptions(size=128, seed=3))
    tile_scene(scene.s1_path, scene.s2_path, scene.labels_path, root / "tiles",
               TileOptions(size=32, split=(0.5, 0.0, 0.5)))
    norm = sar_normalization().to_dict()
    gen = save_network(root / "gen.safetensors", Identity(2), kind="generator", arch="identity",
                       arch_kwargs={"channels": 2},
                       meta={"model": "pix2pix", "direction": "identity", "in_norm": norm, "out_norm": norm,
                             "tile_size": 32, "run": "t"})
    return {"s2": scene.s2_path, "labels": scene.labels_path, "tiles": root / "tiles", "gen": gen}


def _open(kind: str, data: dict[str, Path]) -> EvalSource:
    opts = EvalOptions(tile_size=48, batch_size=2)
    if kind == "scenes":
        return SceneSource(data["s2"], data["s2"], data["labels"], opts)
    if kind == "tiles":
        tiles = data["tiles"]
        return TileSetSource(tiles / "s2", tiles / "s2", tiles / "labels", opts)
    return ModelSplitSource(data["gen"], data["tiles"], "test", opts)


def test_protocol_declares_what_evaluate_reads():
    assert MEMBERS == ["__len__", "bad_nan", "blocks", "class_names", "close", "fetch", "has_labels",
                       "input_norm", "inputs", "mode", "overview", "pred_norm", "ranges_source", "target_norm"]


@pytest.mark.parametrize("kind", ["scenes", "tiles", "model"])
def test_each_source_satisfies_the_protocol(kind, data):
    src = _open(kind, data)
    try:
        assert isinstance(src, EvalSource)
        assert all(hasattr(src, m) for m in MEMBERS)
        assert src.mode is EvalMode(kind) and src.inputs["mode"] == kind
        assert isinstance(src.pred_norm, Normalization) and isinstance(src.target_norm, Normalization)
        assert src.input_norm is None if kind != "model" else isinstance(src.input_norm, Normalization)
        assert src.ranges_source == ("checkpoint" if kind == "model" else "default")
        assert src.has_labels is True and src.bad_nan == 0
        blocks = list(src.blocks())
        assert len(blocks) == len(src) > 1 and all(isinstance(b, Block) for b in blocks)
        assert len({b.id for b in blocks}) == len(blocks)
        again = src.fetch(blocks[1].id)
        assert again.id == blocks[1].id and np.array_equal(again.pred, blocks[1].pred, equal_nan=True)
        assert np.array_equal(again.target, blocks[1].target, equal_nan=True)
        overview = src.overview(EvalOptions(overview_px=32))
        assert [o["label"] for o in overview] == (["prediction", "target"] if kind == "scenes" else [])
    finally:
        src.close()


def test_an_object_missing_a_member_is_not_a_source():
    class NoFetch:
        mode = EvalMode.TILES
        pred_norm = target_norm = optical_normalization(("B4", "B3", "B2"))
        input_norm = class_names = None
        has_labels = False
        inputs: dict = {}
        ranges_source = "default"
        bad_nan = 0

        def __len__(self) -> int:
            return 0

        def blocks(self):
            return iter(())

        def overview(self, opts):
            return []

        def close(self) -> None:
            pass

    assert not isinstance(NoFetch(), EvalSource)


class _MemorySource:
    """Two 16×16 blocks held in memory; satisfies EvalSource structurally (it does not subclass it)."""

    mode = EvalMode.TILES
    input_norm = None
    class_names = None
    has_labels = False
    ranges_source = "default"

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.pred_norm = self.target_norm = optical_normalization(("B4", "B3", "B2"))
        self.inputs = {"mode": self.mode, "pred": "memory", "target": "memory", "labels": None, "tiles": 2}
        self.bad_nan = 0
        t = rng.uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
        self.data = {f"t{i}": (np.clip(t[i] + 0.1 * i, -1, 1), t[i]) for i in range(2)}

    def __len__(self) -> int:
        return len(self.data)

    def blocks(self):
        for i in self.data:
            yield self.fetch(i)

    def fetch(self, tile_id: str) -> Block:
        p, t = self.data[tile_id]
        return Block(tile_id, p, t, PixelWindow(0, 0, 16, 16))

    def overview(self, opts):
        return []

    def close(self) -> None:
        pass


def test_evaluate_takes_any_object_that_satisfies_the_protocol():
    src = _MemorySource()
    assert isinstance(src, EvalSource)
    res = evaluate(src, EvalOptions(metrics=("psnr", "mae")))
    p = np.stack([src.data[i][0] for i in src.data])
    t = np.stack([src.data[i][1] for i in src.data])
    mse = (((p + 1) / 2 - (t + 1) / 2) ** 2).mean()
    assert res.report["summary"]["psnr"]["value"] == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)
    assert res.report["summary"]["mae"]["value"] == pytest.approx(np.abs(p - t).mean() / 2, rel=1e-5)
    assert [t["id"] for t in res.report["tiles"]] == ["t0", "t1"]
    assert res.report["summary"]["psnr"]["n_inf"] == 1  # tile t0 is identical


def test_modes_are_written_as_their_json_strings():
    assert [m.value for m in EvalMode] == ["scenes", "tiles", "model"]
    assert json.dumps(to_json_value({"mode": EvalMode.MODEL})) == '{"mode": "model"}'
    assert str(EvalMode.SCENES) == "scenes" and f"{EvalMode.TILES}" == "tiles"
