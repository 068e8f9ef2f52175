"""sarkit.weights: each kind's lookup order, the one not-found message, cache locations, safe state-dict reading."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sarkit import weights as W
from sarkit.errors import CheckpointError, WeightsNotFoundError

ROOT = Path(__file__).resolve().parents[1]
CLIP_QUERY = W.CacheQuery("ViT-B-32", "laion2b_s34b_b79k")
CLIP_HUB_REPO = "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"


def tiny_file(path: Path, value: float = 1.0) -> Path:
    """A one-tensor state dict saved with torch.save (or as safetensors, by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"w": torch.full((2, 3), value)}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def hub_snapshot(cache: Path, repo: str, filename: str) -> Path:
    """A file in the Hugging Face hub cache layout (refs/main → snapshots/COMMIT/FILENAME)."""
    (cache / repo / "refs").mkdir(parents=True, exist_ok=True)
    (cache / repo / "refs" / "main").write_text("abc123")
    return tiny_file(cache / repo / "snapshots" / "abc123" / filename)


def plant_in_cache(loc, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a file where cache location ``loc`` looks (pointing the cache's variables into ``tmp``)."""
    if isinstance(loc, W.TorchHubFile):
        monkeypatch.setenv("TORCH_HOME", str(tmp / "torch"))
        return tiny_file(tmp / "torch" / "hub" / "checkpoints" / loc.filename)
    if isinstance(loc, W.PackageFile):
        site = tmp / "site"
        (site / loc.package).mkdir(parents=True)
        (site / loc.package / "__init__.py").write_text("")
        monkeypatch.delitem(sys.modules, loc.package, raising=False)
        monkeypatch.syspath_prepend(str(site))
        return tiny_file(site / loc.package / loc.relpath)
    if isinstance(loc, W.OpenClipCache):
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp / "hf"))
        return hub_snapshot(tmp / "hf", CLIP_HUB_REPO, "open_clip_model.safetensors")
    raise AssertionError(f"no planting rule for {loc!r}")


def empty_caches(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every cache location at an empty folder and hide an installed lpips package."""
    monkeypatch.setenv("TORCH_HOME", str(tmp / "empty-torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp / "empty-hf"))
    monkeypatch.setenv("HOME", str(tmp / "empty-home"))  # ~/.cache/clip
    monkeypatch.setitem(sys.modules, "lpips", None)


@pytest.mark.parametrize("name", sorted(W.KINDS))
def test_each_kind_resolves_option_then_env_then_cache(name, tmp_path, monkeypatch):
    k = W.kind(name)
    empty_caches(tmp_path, monkeypatch)
    option, env = tiny_file(tmp_path / "option.pt"), tiny_file(tmp_path / "env.safetensors")
    cached = [plant_in_cache(loc, tmp_path, monkeypatch) for loc in k.cache]
    monkeypatch.setenv(k.env, str(env))
    assert W.locate(k, option, query=CLIP_QUERY) == W.Found(option, W.Source.OPTION)
    assert W.locate(k, None, query=CLIP_QUERY) == W.Found(env, W.Source.ENV)
    monkeypatch.delenv(k.env)
    if cached:
        assert W.locate(k, None, query=CLIP_QUERY) == W.Found(cached[0], W.Source.CACHE)
        assert W.resolve(k, "", query=CLIP_QUERY) == cached[0]  # an empty option counts as not given
    else:
        with pytest.raises(WeightsNotFoundError):
            W.resolve(k, None, query=CLIP_QUERY)


@pytest.mark.parametrize("name", sorted(W.KINDS))
def test_missing_weights_is_one_line_naming_option_and_variable(name, tmp_path, monkeypatch):
    k = W.kind(name)
    empty_caches(tmp_path, monkeypatch)
    monkeypatch.delenv(k.env, raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        W.resolve(k, None, query=CLIP_QUERY)
    msg = str(err.value)
    assert msg.startswith(f"{k.what} needs local weights: pass {k.option} PATH or set {k.env}")
    assert msg.endswith("(sarkit never downloads weights)") and "\n" not in msg
    assert err.value.exit_code == 2


def test_documented_messages_are_kept(tmp_path, monkeypatch):
    empty_caches(tmp_path, monkeypatch)
    for k in W.KINDS.values():
        monkeypatch.delenv(k.env, raising=False)
    expected = {
        W.INCEPTION: "FID needs local weights: pass --fid-weights PATH or set SARKIT_FID_WEIGHTS "
                     "(sarkit never downloads weights)",
        W.SAM: "SAM (--sms-model sam) needs local weights: pass --sam-weights PATH or set SARKIT_SAM_WEIGHTS "
               "(sarkit never downloads weights)",
        W.LPIPS_HEADS: "LPIPS needs local weights: pass --lpips-weights PATH or set SARKIT_LPIPS_WEIGHTS, or install "
                       "the lpips package, whose alex.pth is used (sarkit never downloads weights)",
        W.LPIPS_BACKBONE: "LPIPS backbone (AlexNet) needs local weights: pass --lpips-backbone PATH or set "
                          "SARKIT_LPIPS_BACKBONE, or put torchvision's alexnet-owt-7be5be79.pth in "
                          f"{tmp_path / 'empty-torch' / 'hub' / 'checkpoints'} (sarkit never downloads weights)",
    }
    for k, msg in expected.items():
        with pytest.raises(WeightsNotFoundError) as err:
            W.resolve(k)
        assert str(err.value) == msg


def test_option_or_env_naming_no_file_is_an_error_even_with_a_cached_copy(tmp_path, monkeypatch):
    k = W.LPIPS_BACKBONE
    plant_in_cache(k.cache[0], tmp_path, monkeypatch)
    monkeypatch.delenv(k.env, raising=False)
    with pytest.raises(WeightsNotFoundError, match=r"weights not found: .*nope\.pth \(check --lpips-backbone or "
                                                   r"SARKIT_LPIPS_BACKBONE\)"):
        W.resolve(k, tmp_path / "nope.pth")
    monkeypatch.setenv(k.env, str(tmp_path / "typo.pth"))
    with pytest.raises(WeightsNotFoundError, match="typo.pth"):
        W.resolve(k)
    with pytest.raises(WeightsNotFoundError, match="not found"):
        W.resolve(k, tmp_path)  # a folder is not a weights file


def test_fallback_comes_after_env_and_before_the_cache(tmp_path, monkeypatch):
    cached = plant_in_cache(W.CLIP.cache[0], tmp_path, monkeypatch)
    given = tiny_file(tmp_path / "given.pt")
    env = tiny_file(tmp_path / "env.pt")
    monkeypatch.setenv(W.CLIP.env, str(env))
    assert W.locate(W.CLIP, query=CLIP_QUERY, fallback=given).source is W.Source.ENV
    monkeypatch.delenv(W.CLIP.env)
    assert W.locate(W.CLIP, query=CLIP_QUERY, fallback=given) == W.Found(given, W.Source.FALLBACK)
    # a fallback that is not a file (an open_clip tag) is skipped
    assert W.locate(W.CLIP, query=CLIP_QUERY, fallback="laion2b_s34b_b79k") == W.Found(cached, W.Source.CACHE)


def test_open_clip_cache_finds_the_hub_layout_offline(tmp_path):
    query = W.CacheQuery("ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(tmp_path))
    loc = W.OpenClipCache()
    assert loc.find(query) is None
    found = hub_snapshot(tmp_path, CLIP_HUB_REPO, "open_clip_model.safetensors")
    assert loc.find(query) == found
    assert loc.find(W.CacheQuery("ViT-B-32", "no-such-tag", cache_dir=str(tmp_path))) is None
    assert str(tmp_path) in loc.hint(query) and "ViT-B-32/laion2b_s34b_b79k" in loc.hint(query)
    assert "'no-such-tag' is unknown" in loc.hint(W.CacheQuery("ViT-B-32", "no-such-tag"))


def test_open_clip_cache_reads_hf_variables_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert W.hf_hub_cache() == tmp_path / "home" / "hub"
    found = hub_snapshot(tmp_path / "home" / "hub", CLIP_HUB_REPO, "open_clip_pytorch_model.bin")
    assert W.OpenClipCache().find(CLIP_QUERY) == found
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "other"))
    assert W.hf_hub_cache() == tmp_path / "other" and W.OpenClipCache().find(CLIP_QUERY) is None


def test_hub_entries_name_the_files_open_clip_stores():
    assert W.hub_file_names("laion/CLIP-ViT-B-32-laion2B-s34B-b79K/") == (
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
    assert W.hub_file_names("org/repo/weights.bin") == ("org/repo", ["weights.safetensors", "weights.bin"])


def test_a_new_kind_is_one_record(tmp_path, monkeypatch):
    """VGG (perceptual loss) and CLIP-IQA (a fixed open_clip model and tag) need no new code path."""
    vgg = W.WeightKind(name="vgg", what="VGG-19 (perceptual loss)", option="--vgg-weights",
                       env="SARKIT_VGG_WEIGHTS", used_by="training losses", file="a torchvision vgg19 state dict",
                       get="torchvision.models.vgg19(weights='IMAGENET1K_V1')",
                       cache=(W.TorchHubFile("vgg19-dcbb9e9d.pth"),))
    monkeypatch.delenv(vgg.env, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFoundError, match="--vgg-weights PATH or set SARKIT_VGG_WEIGHTS, or put "
                                                   "torchvision's vgg19-dcbb9e9d.pth in"):
        W.resolve(vgg)
    cached = plant_in_cache(vgg.cache[0], tmp_path, monkeypatch)
    assert W.resolve(vgg) == cached
    iqa = W.WeightKind(name="clip-iqa", what="CLIP-IQA", option="--clip-iqa-weights", env="SARKIT_CLIP_IQA_WEIGHTS",
                       used_by="eval", file="open_clip RN50", get="open_clip",
                       cache=(W.OpenClipCache("RN50", "openai"),))
    monkeypatch.delenv(iqa.env, raising=False)
    rn50 = tiny_file(tmp_path / "clip" / "RN50.pt")  # a tag with a plain URL is cached under its basename
    assert W.resolve(iqa, query=W.CacheQuery(cache_dir=str(tmp_path / "clip"))) == rn50
    assert "RN50/openai" in W.missing_error(iqa, W.CacheQuery()).args[0]
    with pytest.raises(ValueError, match="incomplete weight kind"):
        W.WeightKind(name="x", what="X", option="x-weights", env="X_WEIGHTS", used_by="", file="", get="")
    with pytest.raises(KeyError, match="known: clip"):
        W.kind("vgg")


def test_read_state_dict_pt_and_safetensors_agree(tmp_path):
    a = W.read_state_dict(tiny_file(tmp_path / "a.pt", 2.0))
    b = W.read_state_dict(tiny_file(tmp_path / "a.safetensors", 2.0))
    assert a.keys() == b.keys() == {"w"} and torch.equal(a["w"], b["w"]) and a["w"].device.type == "cpu"


def test_read_state_dict_opens_wrappers_and_module_prefix(tmp_path):
    torch.save({"state_dict": {"module.conv.weight": torch.ones(1)}, "epoch": 3}, tmp_path / "w.pth")
    assert list(W.read_state_dict(tmp_path / "w.pth")) == ["conv.weight"]


def test_corrupt_or_foreign_files_are_checkpoint_errors(tmp_path):
    (tmp_path / "junk.pth").write_bytes(os.urandom(64))
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    tiny_file(tmp_path / "ok.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "ok.safetensors").read_bytes()[:-8])
    for name in ("junk.pth", "junk.safetensors", "cut.safetensors", "absent.pt"):
        with pytest.raises(CheckpointError, match=f"cannot read weights file .*{name}") as err:
            W.read_state_dict(tmp_path / name)
        assert "\n" not in str(err.value) and err.value.exit_code == 2
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        W.read_state_dict(tmp_path / "list.pt")
    torch.save({"w": torch.ones(1), "step": 7}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="'step' is a int, not a tensor"):
        W.read_state_dict(tmp_path / "mixed.pt")


class _RunsCodeWhenUnpickled:
    """An object whose unpickling would call ``os.makedirs(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def test_read_state_dict_never_unpickles_code(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"w": torch.ones(1), "x": _RunsCodeWhenUnpickled(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read weights file"):
        W.read_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


def test_docs_table_is_the_kinds_table():
    assert W.markdown_table() in (ROOT / "docs" / "weights.md").read_text(encoding="utf-8")
