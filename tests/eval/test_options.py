"""Options of sarkit eval (sarkit.eval.options): metric names, EvalOptions and EvalInputs check themselves, the
SMS model enum."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarkit.errors import InputError
from sarkit.eval.options import (ALL_METRICS, HIGHER_IS_BETTER, LABELS, EvalInputs, EvalOptions, SmsModel,
                                 metric_set)


def test_metric_set_defaults_order_and_miou_with_pa():
    assert metric_set(None) == ("psnr", "ssim", "mae")
    assert metric_set(None, segmenter=True) == ("psnr", "ssim", "mae", "pa", "miou", "sms")
    assert metric_set(("SSIM", " psnr", "pa", "psnr")) == ("ssim", "psnr", "pa", "miou")
    assert metric_set(["lpips", "fid-clip"]) == ("lpips", "fid-clip")
    assert metric_set("fid") == ("fid",)
    with pytest.raises(InputError, match="unknown metric 'bogus'"):
        metric_set(("psnr", "bogus"))
    with pytest.raises(InputError, match="unknown metric 'psnr,ssim'"):  # comma lists are the CLI's to split
        metric_set("psnr,ssim")
    with pytest.raises(InputError, match="--metrics is empty"):
        metric_set((" ", ""))


def test_every_metric_has_a_direction_and_a_label():
    from sarkit.eval.options import GAIN_METRICS

    assert set(HIGHER_IS_BETTER) == set(LABELS) == set(ALL_METRICS) | set(GAIN_METRICS)
    assert all(HIGHER_IS_BETTER[g] for g in GAIN_METRICS)  # gains are signed: positive = the model is better


@pytest.mark.parametrize("text, member", [("deeplab", SmsModel.DEEPLAB), (" SAM ", SmsModel.SAM),
                                          (SmsModel.SAM, SmsModel.SAM)])
def test_sms_model_parses_cli_strings(text, member):
    assert SmsModel.parse(text) is member
    assert EvalOptions(metrics=("sms",), sms_model=text, segmenter=Path("s")).sms_model is member


def test_sms_model_keeps_its_string_value():
    assert SmsModel.SAM == "sam" and str(SmsModel.DEEPLAB) == "deeplab"
    with pytest.raises(InputError, match="--sms-model must be one of deeplab, sam, got 'mask2former'"):
        EvalOptions(sms_model="mask2former")


@pytest.mark.parametrize("kwargs, message", [
    ({"metrics": ()}, "--metrics is empty"),
    ({"metrics": ("psnr", "sharpness")}, "unknown metric 'sharpness'"),
    ({"s1_range": (0.0, -25.0)}, "--s1-range must have hi > lo, got '0,-25'"),
    ({"s2_range": (0.3, 0.3)}, "--s2-range must have hi > lo"),
    ({"s2_range": (0.0, float("inf"))}, "--s2-range must have hi > lo"),
    ({"s1_range": ("a", "b")}, "--s1-range must be two numbers"),
    ({"batch_size": 0}, "--batch-size must be an integer of at least 1, got 0"),
    ({"batch_size": 2.5}, "--batch-size must be an integer"),
    ({"tile_size": -1}, "tile_size must be an integer of at least 1"),
    ({"grid_tiles": 0}, "grid_tiles must be an integer of at least 1"),
    ({"thumb_px": 0}, "thumb_px"),
    ({"overview_px": 0}, "overview_px"),
    ({"clip_model": " "}, "--clip-model must name"),
    ({"metrics": ("psnr", "pa", "miou")}, r"^pa, miou need a segmenter: pass --segmenter RUN \(a sarkit segmenter "
                                          r"of the prediction's modality\)$"),
    ({"metrics": ("sms",)}, r"sms need a segmenter: .* \(or --sms-model sam for sms\)$"),
    ({"metrics": ("pa", "sms"), "sms_model": "sam"}, r"^pa need a segmenter"),
])
def test_eval_options_refuse_bad_values(kwargs, message):
    with pytest.raises(InputError, match=message):
        EvalOptions(**kwargs)


def test_eval_options_normalise_what_they_accept():
    o = EvalOptions(metrics=["psnr", "sms"], s1_range=(-30, 5), sms_model="sam", sam_weights="sam.pth",
                    segmenter=None, batch_size=4)
    assert o.metrics == ("psnr", "sms") and o.s1_range == (-30.0, 5.0)
    assert o.sam_weights == Path("sam.pth") and o.sam_sms and o.segmenter_metrics == ()
    deeplab = EvalOptions(metrics=("pa", "miou", "sms"), segmenter="seg")
    assert deeplab.segmenter == Path("seg") and deeplab.segmenter_metrics == ("pa", "miou", "sms")
    assert not deeplab.sam_sms


@pytest.mark.parametrize("kwargs, message", [
    ({}, "nothing to evaluate: pass --pred and --target"),
    ({"pred": "p.tif"}, "nothing to evaluate"),
    ({"target": "t.tif"}, "nothing to evaluate"),
    ({"checkpoint": "run"}, "--checkpoint needs --data TILES"),
    ({"checkpoint": "run", "data": "tiles", "pred": "p.tif"}, "give either --checkpoint with --data, or --pred"),
])
def test_eval_inputs_refuse_incomplete_or_mixed_inputs(kwargs, message):
    with pytest.raises(InputError, match=message):
        EvalInputs(**kwargs)


def test_eval_inputs_name_one_job():
    files = EvalInputs(pred="p.tif", target="t.tif", labels="l.tif")
    assert files.pred == Path("p.tif") and files.labels == Path("l.tif") and not files.is_model
    model = EvalInputs(checkpoint="run", data="tiles", split="val")
    assert model.is_model and model.data == Path("tiles") and model.split == "val"
