"""Option texts → values (sarkit.cli_params): syntax here, meaning in the library's options; exit 2 from the CLI."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from sarkit import cli_params as P
from sarkit.cli import app

runner = CliRunner()


def test_ranges_splits_and_names_parse_to_typed_values():
    assert P.value_range("--s1-range")("-25,0") == (-25.0, 0.0)
    assert P.split_fractions("0.7, 0.2,0.1") == (0.7, 0.2, 0.1)
    assert P.names("--metrics")("SSIM, psnr,,") == ("SSIM", "psnr")
    assert P.thresholds("--fail-under")("PSNR=18, ssim=0.3") == {"psnr": 18.0, "ssim": 0.3}
    assert P.value_range("--s1-range")((-25.0, 0.0)) == (-25.0, 0.0)  # an already-converted default passes


@pytest.mark.parametrize("parser, text, message", [
    (P.value_range("--s1-range"), "0", "--s1-range must be two numbers 'lo,hi', got '0'"),
    (P.value_range("--s1-range"), "a,b", "--s1-range must be two numbers"),
    (P.value_range("--s2-range"), "0,inf", "--s2-range must be two numbers"),
    (P.split_fractions, "0.5,0.5", "--split must be 3 non-negative numbers summing to 1"),
    (P.names("--metrics"), " , ", "--metrics is empty; e.g. --metrics psnr,ssim,mae"),
    (P.names("--optical-bands"), "", "--optical-bands is empty; e.g. --optical-bands B4,B3,B2"),
    (P.thresholds("--fail-under"), "psnr", "--fail-under expects metric=value pairs such as psnr=18, got 'psnr'"),
    (P.thresholds("--fail-over"), "=3", "--fail-over expects metric=value pairs"),
    (P.thresholds("--fail-under"), "psnr=high", "--fail-under psnr: 'high' is not a number"),
])
def test_bad_texts_are_bad_parameters_naming_the_option(parser, text, message):
    with pytest.raises(typer.BadParameter) as exc:
        parser(text)
    assert message in str(exc.value)


@pytest.mark.parametrize("args, message", [
    (["tile", "s1.tif", "--out", "t", "--split", "0.7,x,0.1"], "--split must be 3"),
    (["tile", "s1.tif", "--out", "t", "--s1-range", "-25"], "--s1-range must be two numbers"),
    (["eval", "--pred", "p.tif", "--target", "t.tif", "--fail-under", "psnr"], "metric=value"),
    (["eval", "--pred", "p.tif", "--target", "t.tif", "--metrics", ","], "--metrics is empty"),
    (["train", "--model", "pix2pix", "--data", "d", "--out", "r", "--optical-bands", ","], "--optical-bands is empty"),
])
def test_the_cli_exits_2_on_a_text_that_does_not_parse(tmp_path, args, message):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert message in r.output
