"""Inference: the predictor engine, whole-scene translation, blending and stitching into COGs."""
