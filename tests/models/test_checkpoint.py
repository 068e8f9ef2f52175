"""Exported networks and training states: round trips, the meta-device rebuild, and refusals."""

from __future__ import annotations

import hashlib
import pickle

import pytest
import torch
from torch import nn

from sarkit.models.checkpoint import load_network, load_state, save_network, save_state
from sarkit.errors import CheckpointError
from sarkit.models.registry import NETWORKS, build_network, register_network

CASES = [
    ("unet", {"in_channels": 2, "out_channels": 3, "num_downs": 5, "ngf": 4}, 32),
    ("resnet", {"in_channels": 3, "out_channels": 2, "ngf": 4, "n_blocks": 2}, 32),
    ("deeplabv3", {"in_channels": 2, "num_classes": 4, "backbone": "mobilenet_v3_large"}, 64),
]


def _trained_copy(arch: str, kwargs: dict, seed: int) -> nn.Module:
    """A network of ``arch`` whose every parameter and buffer differs from a fresh build (as after training)."""
    torch.manual_seed(seed)
    net = build_network(arch, kwargs)
    with torch.no_grad():
        for t in (*net.parameters(), *net.buffers()):
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.1)
    return net.eval()


@pytest.mark.parametrize("arch,kwargs,size", CASES, ids=[c[0] for c in CASES])
def test_export_round_trip_restores_every_tensor_and_the_outputs(tmp_path, arch, kwargs, size):
    net = _trained_copy(arch, kwargs, 0)
    path = save_network(tmp_path / "g.safetensors", net, "generator", arch, kwargs, {"note": "x"})
    loaded = load_network(path, "generator")
    assert loaded.arch == arch and loaded.arch_kwargs == kwargs and loaded.meta["note"] == "x"
    assert not loaded.module.training
    want, got = net.state_dict(), loaded.module.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert not got[k].is_meta, k
        assert torch.equal(want[k], got[k]), k
    x = torch.rand(1, kwargs["in_channels"], size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(net(x), loaded.module(x))


class _WithScratch(nn.Module):
    """A conv plus a non-persistent buffer (not in the state dict, so a meta build would leave it empty)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.register_buffer("scale", torch.full((1,), 3.0), persistent=False)

    def forward(self, x):
        return self.conv(x) * self.scale


@pytest.fixture
def scratch_arch():
    register_network("test-scratch")(lambda: _WithScratch())
    yield "test-scratch"
    NETWORKS.pop("test-scratch")


def test_network_with_non_persistent_buffer_is_built_normally(tmp_path, scratch_arch):
    net = _WithScratch()
    path = save_network(tmp_path / "s.safetensors", net, "generator", scratch_arch, {}, {})
    loaded = load_network(path).module
    assert loaded.scale.item() == 3.0 and not loaded.scale.is_meta
    assert torch.equal(loaded.conv.weight, net.conv.weight)


def test_mismatched_weights_are_a_checkpoint_error(tmp_path):
    arch, kwargs, _ = CASES[0]
    path = save_network(tmp_path / "g.safetensors", build_network(arch, kwargs), "generator", arch,
                        {**kwargs, "ngf": 8}, {})  # the record says ngf=8, the tensors are ngf=4
    with pytest.raises(CheckpointError, match="mismatched"):
        load_network(path)


def test_wrong_kind_and_foreign_files_are_refused(tmp_path):
    arch, kwargs, _ = CASES[0]
    path = save_network(tmp_path / "g.safetensors", build_network(arch, kwargs), "generator", arch, kwargs, {})
    with pytest.raises(CheckpointError, match="segmenter was expected"):
        load_network(path, "segmenter")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a sarkit checkpoint"):
        load_network(junk)
    with pytest.raises(CheckpointError, match="no generator checkpoint"):
        load_network(tmp_path)


class _Payload:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_training_state_round_trip_and_refusal_of_pickled_objects(tmp_path):
    state = {"step": 7, "g": {"w": torch.arange(4.0)}, "name": "pix2pix"}
    loaded = load_state(save_state(tmp_path / "state-7.pt", state))
    assert loaded["step"] == 7 and loaded["name"] == "pix2pix" and torch.equal(loaded["g"]["w"], torch.arange(4.0))
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Payload()}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_state(evil)


def test_sha256_is_the_files_digest(tmp_path):
    arch, kwargs, _ = CASES[0]
    path = save_network(tmp_path / "g.safetensors", build_network(arch, kwargs), "generator", arch, kwargs, {})
    loaded = load_network(path)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.sha256 == loaded.digest  # resolved once, then a plain string
