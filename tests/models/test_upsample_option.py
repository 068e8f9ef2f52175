"""``--model-opt upsample=resize|transpose`` for every U-Net and ResNet decoder model (sarkit/models/blocks.py
``up_layers``, the models' Options): the option changes the generator as said and its export rebuilds."""

from __future__ import annotations

import pytest
import torch

from sarkit.errors import InputError
from sarkit.models import get_model
from sarkit.models.base import ModelIO, parse_options
from sarkit.models.registry import build_network
from sarkit.raster.norm import optical_normalization, sar_normalization

#: model → (its default decoder up-sampling, the layer that decoder has; pix2pix: resize since issue 17)
MODELS = {"pix2pix": ("resize", torch.nn.Upsample), "cyclegan": ("transpose", torch.nn.ConvTranspose2d),
          "cut": ("blur", None), "qs-attn": ("blur", None)}


def _io() -> ModelIO:
    sar, opt = sar_normalization().to_dict(), optical_normalization().to_dict()
    return ModelIO(len(sar["bands"]), len(opt["bands"]), "sar2opt", 32, sar, opt)


def _build(name: str, **opts: str):
    cls = get_model(name)
    torch.manual_seed(0)
    values = {"ngf": "4", "ndf": "4", **opts}
    if name != "pix2pix":
        values["n_blocks"] = "2"
    return cls(_io(), parse_options(cls.Options, values))


def _count(net: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_upsample_resize_replaces_the_decoders_transposed_convolutions_and_the_export_rebuilds(name):
    default = _build(name)
    resized = _build(name, upsample="resize")
    (_, g, arch, kwargs), = [e for e in resized.export() if e[0] == "generator"]
    assert kwargs["upsample"] == "resize"
    assert _count(g, torch.nn.ConvTranspose2d) == 0 and _count(g, torch.nn.Upsample) > 0
    rebuilt = build_network(arch, kwargs)
    rebuilt.load_state_dict(g.state_dict())
    x = torch.rand(1, 2, 32, 32) * 2 - 1
    g.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(g(x), rebuilt(x))
    (_, g0, _, kw0), = [e for e in default.export() if e[0] == "generator"]
    default_mode, layer = MODELS[name]
    assert kw0.get("upsample", "transpose") == default_mode
    assert (_count(g0, torch.nn.Upsample) > 0) == (default_mode == "resize")
    if layer is not None:
        assert _count(g0, layer) > 0
    plain = _build(name, upsample="transpose")
    assert _count([e for e in plain.export() if e[0] == "generator"][0][1], torch.nn.ConvTranspose2d) > 0


@pytest.mark.parametrize("name", ["pix2pix", "cyclegan", "cut"])
def test_an_unknown_upsample_mode_is_refused_naming_the_choices(name):
    with pytest.raises(InputError, match="upsample must be one of .*resize"):
        _build(name, upsample="pixelshuffle")
