"""Inline SVG line charts (sarkit.svgplot): round ticks, log axes for losses, gaps at non-finite values."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from sarkit.svgplot import Series, line_chart, log_ticks, nice_ticks, tick_label, wants_log

NS = "{http://www.w3.org/2000/svg}"


def test_nice_ticks_cover_the_range_in_round_steps():
    assert nice_ticks(0, 30, 4) == [0, 10, 20, 30]
    assert nice_ticks(0.13, 0.87, 4) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    t = nice_ticks(14.99, 15.02, 4)
    assert t[0] <= 14.99 and t[-1] >= 15.02 and [tick_label(v, t[1] - t[0]) for v in t] == \
        ["14.99", "15.00", "15.01", "15.02"]
    t = nice_ticks(0.1499, 0.15, 4)
    assert len({tick_label(v, t[1] - t[0]) for v in t}) == len(t)  # labels never repeat
    assert len(nice_ticks(5, 5)) >= 2 and nice_ticks(math.nan, 1) == []
    assert log_ticks(0.003, 2) == [0.001, 0.01, 0.1, 1.0, 10.0]
    assert wants_log([1e-3, 1.0]) and not wants_log([0.2, 0.9]) and not wants_log([0.0, 10.0])


def test_chart_is_valid_svg_with_one_line_per_finite_run_and_a_legend():
    s1 = Series("G_L1", [1, 2, 3, 4, 5], [1.0, 0.8, math.nan, 0.5, 0.4])
    s2 = Series("G_GAN", [1, 2], [0.7, 0.6])
    root = ET.fromstring(line_chart([s1, s2], "losses", log_y=False))
    assert root.find(f"{NS}title").text == "losses"
    lines = root.findall(f"{NS}polyline")
    assert len(lines) == 3  # s1 broken at the NaN, s2 whole
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "G_L1" in texts and "G_GAN" in texts and "step" in texts
    one = ET.fromstring(line_chart([Series("x", [3], [0.5])], "one point"))
    assert len(one.findall(f"{NS}circle")) == 1 and not one.findall(f"{NS}polyline")
    empty = ET.fromstring(line_chart([Series("x", [], [])], "empty"))
    assert "no values" in [t.text for t in empty.iter(f"{NS}text")]


def test_losses_over_decades_get_a_log_axis():
    root = ET.fromstring(line_chart([Series("loss", [1, 2, 3], [10.0, 0.1, 0.01])], "loss"))
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "(log scale)" in " ".join(texts) and "0.01" in texts and "10" in texts
