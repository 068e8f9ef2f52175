"""Fixtures of the training tests: one small tile folder shared by a test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tilesets import make_tiles


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 train + 2 val tiles of 32² px, SAR (VV, VH) and 13-band S2."""
    return make_tiles(tmp_path_factory.mktemp("tiles") / "tiles")
