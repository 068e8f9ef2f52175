"""The raster layer: pixel windows and grids, grid equality and alignment, physical units and the model range."""
