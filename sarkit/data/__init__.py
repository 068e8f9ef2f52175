"""Input data: generated scenes, dataset folder layouts, tiling into co-registered tiles, the torch tile dataset."""
