"""TrainOptions (sarkit.training.options) checks itself; the CLI keeps its strings and one-line messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarkit.errors import InputError
from sarkit.training import AmpMode, Direction, Modality, TrainOptions, model_option_values
from sarkit.training.options import DEFAULT_EPOCHS
from sarkit.training.run import train_section
from tilesets import base_args, cli, make_tiles


def make(**kw) -> TrainOptions:
    return TrainOptions(model="pix2pix", data=Path("tiles"), out=Path("run"), **kw)


@pytest.mark.parametrize("kw, message", [
    ({"steps": 2, "epochs": 1}, "give --steps or --epochs, not both"),
    ({"steps": 0}, "--steps must be ≥ 1, got 0"),
    ({"epochs": 0}, "--epochs must be ≥ 1, got 0"),
    ({"batch_size": 0}, "--batch-size must be ≥ 1, got 0"),
    ({"lr": 0.0}, "--lr must be > 0, got 0.0"),
    ({"lr": float("nan")}, "--lr must be > 0, got nan"),
    ({"workers": -1}, "--workers must be ≥ 0, got -1"),
    ({"val_every": -1}, "--val-every must be ≥ 0"),
    ({"save_every": -1}, "--save-every must be ≥ 0"),
    ({"log_every": -2}, "--log-every must be ≥ 0"),
    ({"direction": "sar2sar"}, "--direction must be sar2opt or opt2sar, got 'sar2sar'"),
    ({"amp": "fp8"}, "--amp must be one of off, bf16, fp16, got 'fp8'"),
    ({"modality": "radar"}, "--modality must be sar or optical, got 'radar'"),
])
def test_impossible_values_are_refused_on_construction(kw: dict, message: str) -> None:
    with pytest.raises(InputError) as exc:
        make(**kw)
    assert str(exc.value) == message


def test_strings_become_enums_and_paths() -> None:
    o = TrainOptions(model="cut", data="tiles", out="run", direction="opt2sar", amp=" BF16 ", modality=None,
                     sar_bands=["VV"], optical_bands=["B4"])
    assert o.direction is Direction.OPT2SAR and o.amp is AmpMode.BF16 and o.modality is None
    assert o.data == Path("tiles") and o.out == Path("run") and o.sar_bands == ("VV",) and o.optical_bands == ("B4",)
    assert make(modality="optical").modality is Modality.OPTICAL and make(amp=None).amp is AmpMode.OFF
    assert make().direction == "sar2opt" and make().amp is AmpMode.OFF


def test_total_steps_from_steps_or_epochs() -> None:
    assert make(steps=7).total_steps(3) == 7
    assert make(epochs=2).total_steps(3) == 6
    assert make().total_steps(3) == DEFAULT_EPOCHS * 3


def test_config_records_the_enums_as_their_strings(tmp_path: Path) -> None:
    import json

    sec = train_section(TrainOptions(model="pix2pix", data=tmp_path, out=tmp_path / "r", direction="opt2sar",
                                     amp="bf16", modality=None))
    assert sec["direction"] == "opt2sar" and sec["amp"] == "bf16" and sec["modality"] is None
    assert type(sec["direction"]) is str and sec["data"] == str(tmp_path.resolve())
    assert "out" not in sec and "model_options" not in sec and sec["optical_bands"] == ["B4", "B3", "B2"]
    json.dumps(sec)


def test_model_option_values_parse_pairs_and_named_options() -> None:
    assert model_option_values(["ngf=8", " n-blocks = 2 "], {"clip_weights": Path("w.st"), "x": None}) == \
        {"ngf": "8", "n_blocks": "2", "clip_weights": "w.st"}
    with pytest.raises(InputError, match="key=value"):
        model_option_values(["ngf"])


def test_cli_keeps_its_strings_and_messages(tiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli(*base_args(tiles, out, "--direction", "sideways"))
    assert r.exit_code == 2 and "--direction must be sar2opt or opt2sar" in r.output
    r = cli(*base_args(tiles, out, "--amp", "fp8"))
    assert r.exit_code == 2 and "--amp must be one of off, bf16, fp16" in r.output
    r = cli(*base_args(tiles, out, "--batch-size", "0"))
    assert r.exit_code == 2 and "--batch-size must be ≥ 1" in r.output
    assert not out.exists()


def test_model_option_errors_name_the_command_line_options(tiles: Path, tmp_path: Path) -> None:
    from sarkit.models.pix2pix import Pix2PixOptions
    from sarkit.training.options import check_model_option_names

    with pytest.raises(InputError, match=r"^--lambda-clip is not an option of --model pix2pix \(it has the "
                                         r"--model-opt keys gan_mode, lambda_l1, .*\)$"):
        check_model_option_names("pix2pix", Pix2PixOptions, {"lambda_clip": 1.0})
    with pytest.raises(InputError, match=r"^--model-opt bogus: --model pix2pix has no option 'bogus'; its "
                                         r"--model-opt keys: gan_mode, "):
        check_model_option_names("pix2pix", Pix2PixOptions, {"bogus": "1"})
    check_model_option_names("pix2pix", Pix2PixOptions, {"ngf": "8", "lambda-l1": "10"})
    out = tmp_path / "run"
    r = cli(*base_args(tiles, out, "--lambda-clip", "2"))
    assert r.exit_code == 2 and r.output.startswith("error: --lambda-clip is not an option of --model pix2pix")
    r = cli(*base_args(tiles, out, "--model-opt", "ngf=wide"))
    assert r.exit_code == 2 and "error: --model-opt ngf expects int, got 'wide'" in r.output
    labelled = make_tiles(tmp_path / "labelled", n_train=2, n_val=0, labels=True)
    r = cli("--model", "segmenter", "--modality", "sar", "--data", str(labelled), "--out", str(out), "--device",
            "cpu", "--model-opt", "backbone=vgg")
    assert r.exit_code == 2 and "error: --model-opt backbone=vgg: not a segmenter backbone; use one of" in r.output
    assert not out.exists()


def test_resume_with_other_settings_names_their_options() -> None:
    from sarkit.training.options import option_name

    assert [option_name(k) for k in ("batch_size", "optical_bands", "model_options", "model", "tile_size",
                                     "val_tiles")] == ["--batch-size", "--optical-bands", "--model-opt", "--model",
                                                       "tile_size", "val_tiles"]
