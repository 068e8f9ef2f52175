"""Training machinery: run folder, state and RNG, distributed helpers, data order, sample grids and the loop."""
