"""What every model declares (sarkit.models.base.TrainableModel): its task, data needs, export metadata, helpers."""

from __future__ import annotations

import pytest

from sarkit.models.base import ModelIO, Task, TrainableModel
from sarkit.models.registry import MODELS, get_model, model_names
from sarkit.raster.norm import optical_normalization, sar_normalization

DECLARED = {"pix2pix": (Task.TRANSLATOR, True, False), "pix2pix-clip": (Task.TRANSLATOR, True, False),
            "cyclegan": (Task.TRANSLATOR, False, False), "cut": (Task.TRANSLATOR, False, False),
            "qs-attn": (Task.TRANSLATOR, False, False), "con-diffusion": (Task.TRANSLATOR, True, False),
            "cyclegan-sc": (Task.TRANSLATOR, False, False), "segmenter": (Task.SEGMENTER, True, True),
            "gan-prior": (Task.TRANSLATOR, True, False),
            "regression": (Task.TRANSLATOR, True, False), "fusion": (Task.TRANSLATOR, True, False),
            "sr-diffusion": (Task.SUPER_RESOLUTION, True, False)}


def test_every_registered_model_declares_task_pairing_and_labels() -> None:
    assert set(model_names()) == set(DECLARED)
    for name, (task, paired, labels) in DECLARED.items():
        cls = get_model(name)
        assert issubclass(cls, TrainableModel) and cls.name == name
        assert (cls.task, cls.paired, cls.needs_labels) == (task, paired, labels), name
    assert MODELS["segmenter"].task is Task.SEGMENTER and Task("translator") is Task.TRANSLATOR


class _Tiny(TrainableModel):
    """A model with one 1×1 convolution, to see the base class's defaults."""

    name = "tiny"

    def build(self) -> None:
        import torch

        self.nets["G"] = torch.nn.Conv2d(self.io.in_channels, self.io.out_channels, 1)


def _io(direction: str = "opt2sar") -> ModelIO:
    return ModelIO(3, 2, direction, 16, optical_normalization().to_dict(), sar_normalization().to_dict())


def test_base_defaults_export_a_translators_metadata_and_no_helpers() -> None:
    m = _Tiny(_io(), None)
    assert m.helper_records == {} and m.extra_state() == {} and m.validation_metrics({}) == {}
    meta = m.export_meta()
    assert meta == {"model": "tiny", "direction": "opt2sar", "in_norm": m.io.in_norm, "out_norm": m.io.out_norm,
                    "tile_size": 16}
    import torch

    b = {"sar": torch.zeros(1, 2, 4, 4), "optical": torch.ones(1, 3, 4, 4)}
    x, y = m.validation_inputs(b)
    assert x is b["optical"] and y is b["sar"]
    with pytest.raises(NotImplementedError):
        m.predict(x)


def test_read_losses_returns_floats_in_order_from_one_stack():
    import torch

    from sarkit.models.base import read_losses

    out = read_losses({"G": torch.tensor(1.5, requires_grad=True) * 2, "D": torch.tensor(0.25, dtype=torch.bfloat16),
                       "one": torch.ones(1)})
    assert out == {"G": 3.0, "D": 0.25, "one": 1.0} and list(out) == ["G", "D", "one"]
    assert all(type(v) is float for v in out.values())
