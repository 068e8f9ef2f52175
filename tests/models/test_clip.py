"""open_clip image-encoder loading without network (sarkit.models.clip), with a tiny CLIP built in the test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clipfiles import make_tiny_clip
from sarkit.models.clip import CLIP_WEIGHTS_ENV, clip_cosine_loss, clip_preprocess, load_clip_image_encoder, rgb_view
from sarkit.errors import WeightsNotFoundError


def test_load_tiny_clip_from_file_matches_the_saved_model(tmp_path: Path) -> None:
    cfg, weights, model = make_tiny_clip(tmp_path)
    enc = load_clip_image_encoder(str(cfg), "", weights_path=weights)
    assert enc.image_size == 32 and len(enc.mean) == 3 and len(enc.std) == 3
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc.encode(x), model.visual(x), atol=1e-6)
    assert all(not p.requires_grad for p in enc.encode.parameters())


def test_env_variable_names_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, weights, _ = make_tiny_clip(tmp_path)
    monkeypatch.setenv(CLIP_WEIGHTS_ENV, str(weights))
    enc = load_clip_image_encoder(str(cfg), "no-such-tag")
    assert enc.image_size == 32


def test_missing_weights_one_line_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CLIP_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as err:
        load_clip_image_encoder("ViT-B-32", "laion2b_s34b_b79k", None, cache_dir=str(tmp_path / "empty"))
    msg = str(err.value)
    assert "\n" not in msg and "--clip-weights" in msg and CLIP_WEIGHTS_ENV in msg


def test_missing_weights_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="not found"):
        load_clip_image_encoder("ViT-B-32", "laion2b_s34b_b79k", weights_path=tmp_path / "nope.pt")


def test_preprocess_resizes_and_standardises() -> None:
    x = torch.full((1, 3, 64, 64), 0.5)
    y = clip_preprocess(x, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert y.shape == (1, 3, 32, 32) and torch.allclose(y, torch.zeros_like(y), atol=1e-5)


def test_rgb_view_channel_mapping() -> None:
    x = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    assert rgb_view(x[:, :3], ["B2", "B3", "B4"])[0, :, 0, 0].tolist() == [2.0, 1.0, 0.0]  # B4,B3,B2 order
    assert rgb_view(x[:, :1], ["VV"]).shape[1] == 3
    assert rgb_view(x[:, :2], ["VV", "VH"])[0, :, 0, 0].tolist() == [0.0, 1.0, 0.5]
    assert rgb_view(x, ["a", "b", "c", "d"])[0, :, 0, 0].tolist() == [0.0, 1.0, 2.0]


def test_clip_loss_zero_for_identical_and_grad_reaches_input(tmp_path: Path) -> None:
    cfg, weights, _ = make_tiny_clip(tmp_path)
    enc = load_clip_image_encoder(str(cfg), "", weights_path=weights)
    real = torch.rand(2, 3, 48, 48)
    assert float(clip_cosine_loss(enc, real, real)) < 1e-5
    fake = torch.rand(2, 3, 48, 48, requires_grad=True)
    loss = clip_cosine_loss(enc, fake, real)
    loss.backward()
    assert float(loss.detach()) > 0 and fake.grad is not None and fake.grad.abs().sum() > 0


def test_pretrained_given_as_a_file_is_used_after_option_and_env(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, weights, model = make_tiny_clip(tmp_path)
    monkeypatch.delenv(CLIP_WEIGHTS_ENV, raising=False)
    enc = load_clip_image_encoder(str(cfg), str(weights))
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(enc.encode(x), model.visual(x), atol=1e-6)
    monkeypatch.setenv(CLIP_WEIGHTS_ENV, str(tmp_path / "typo.pt"))  # the variable wins, and names no file
    with pytest.raises(WeightsNotFoundError, match=r"CLIP weights not found: .*typo\.pt \(check --clip-weights"):
        load_clip_image_encoder(str(cfg), str(weights))


def test_missing_weights_message_names_the_tag_and_the_cache_looked_in(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CLIP_WEIGHTS_ENV, raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        load_clip_image_encoder("ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(tmp_path / "empty"))
    assert "ViT-B-32/laion2b_s34b_b79k" in str(err.value) and str(tmp_path / "empty") in str(err.value)
    with pytest.raises(WeightsNotFoundError, match="'no-such-tag' is unknown"):
        load_clip_image_encoder("ViT-B-32", "no-such-tag", cache_dir=str(tmp_path / "empty"))
