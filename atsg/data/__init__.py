"""Datasets: scene layouts, raster reading, label decoding, splits, tiling and the synthetic demo."""
