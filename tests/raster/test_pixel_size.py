"""Tests of the pixel-size helpers of sarkit/raster/grid.py (the training resolution translate honours)."""

from __future__ import annotations

import math

import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin

from sarkit.raster.grid import (METRES_PER_DEGREE, GridSpec, PixelSize, pixel_size, pixel_size_ratio, rescaled)


def test_projected_pixel_size_in_metres_and_feet():
    utm = pixel_size(GridSpec(CRS.from_epsg(32631), from_origin(500000, 4800000, 20, 10), 100, 50))
    assert utm == PixelSize(20.0, 10.0, "metre", 20.0, 10.0)
    feet = pixel_size(GridSpec(CRS.from_epsg(2263), from_origin(900000, 200000, 30, 30), 10, 10))
    assert feet.units == "US survey foot" and feet.x_m == pytest.approx(30 * 0.3048006, rel=1e-6)


def test_degree_pixels_compared_in_metres_at_the_grid_latitude():
    """A degree pixel is ≈ 111 km·cos(lat) wide: 10 m pixels at 60° N are twice as many degrees wide as tall."""
    dy = 10.0 / METRES_PER_DEGREE
    dx = dy / math.cos(math.radians(60.0))
    g = GridSpec(CRS.from_epsg(4326), from_origin(10.0, 60.0 + 50 * dy, dx, dy), 100, 100)  # centred on 60° N
    ps = pixel_size(g)
    assert ps.units == "degree" and ps.x_m == pytest.approx(10.0, rel=1e-3) and ps.y_m == pytest.approx(10.0)
    ratio = pixel_size_ratio(ps, PixelSize(10.0, 10.0, "metre", 10.0, 10.0))
    assert ratio == pytest.approx((1.0, 1.0), rel=1e-3)


def test_ratio_in_crs_units_only_when_the_same_and_none_otherwise():
    a, b = PixelSize(20.0, 20.0, "ft"), PixelSize(10.0, 10.0, "ft")
    assert pixel_size_ratio(a, b) == (2.0, 2.0)
    assert pixel_size_ratio(a, PixelSize(10.0, 10.0, "")) is None


def test_ungeoreferenced_grid_has_no_pixel_size():
    assert pixel_size(GridSpec(None, from_origin(0, 0, 20, 20), 10, 10)) is None
    assert pixel_size(GridSpec(CRS.from_epsg(32631), Affine.identity(), 10, 10)) is None


def test_dict_round_trip_and_description():
    ps = PixelSize(10.0, 10.0, "metre", 10.0, 10.0)
    assert PixelSize.from_dict(ps.to_dict()) == ps
    assert PixelSize.from_dict({"x": 1, "y": 2}) == PixelSize(1.0, 2.0, "", None, None)
    assert ps.describe() == "10 m" and PixelSize(20.0, 10.0, "metre", 20.0, 10.0).describe() == "20×10 m"


def test_rescaled_grid_keeps_the_footprint():
    g = GridSpec(CRS.from_epsg(32631), from_origin(500000, 4800000, 20, 20), 101, 77)
    fine = rescaled(g, 2.0, 2.0)
    assert (fine.height, fine.width) == (202, 154)
    assert fine.bounds == pytest.approx(g.bounds)
    assert pixel_size(fine).x_m == pytest.approx(10.0)
