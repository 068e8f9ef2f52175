"""sarkit: Sentinel-1 SAR to optical translation, from tiles to whole-scene COGs and reports."""

__version__ = "0.1.0"
