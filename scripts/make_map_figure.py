"""Render docs/map_new_scene.png: a scene that was never in the dataset, its map by `atsg map`, and its ground
truth, side by side (the map's colours are its own colour map, the class palette).

    python scripts/make_map_figure.py NEW_SCENE_RGB.tif MAPS/NEW_SCENE_RGB.tif NEW_SCENE_label.tif \
        docs/map_new_scene.png
"""

import sys
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image


def main(image: str, map_path: str, truth: str, out: str, width: int = 400) -> None:
    with rasterio.open(image) as src:
        rgb = src.read([1, 2, 3]).transpose(1, 2, 0)
    with rasterio.open(map_path) as src:
        classes = src.read(1)
        cmap = src.colormap(1)
    lut = np.zeros((256, 3), np.uint8)
    for value, colour in cmap.items():
        lut[value] = colour[:3]
    lut[255] = (128, 128, 128)  # nodata
    with rasterio.open(truth) as src:
        labels = src.read([1, 2, 3]).transpose(1, 2, 0)
    gap = np.full((rgb.shape[0], 16, 3), 255, np.uint8)
    panel = Image.fromarray(np.concatenate([rgb, gap, lut[classes], gap, labels], axis=1))
    panel = panel.resize((3 * width + 12, width), Image.Resampling.LANCZOS)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    panel.save(out, optimize=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
