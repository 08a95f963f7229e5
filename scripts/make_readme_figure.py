"""Render docs/demo_scene.png (a demo scene beside its labels) from the scenes the workflow wrote.

python scripts/make_readme_figure.py results/demo/scenes docs/demo_scene.png
"""

import sys
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image


def main(scenes: str, out: str, scene: str = "000", width: int = 512) -> None:
    with rasterio.open(Path(scenes) / f"scene_{scene}_RGB.tif") as src:
        image = src.read().transpose(1, 2, 0)
    with rasterio.open(Path(scenes) / f"scene_{scene}_label.tif") as src:
        labels = src.read().transpose(1, 2, 0)
    gap = np.full((image.shape[0], 16, 3), 255, np.uint8)
    panel = Image.fromarray(np.concatenate([image, gap, labels], axis=1))
    panel = panel.resize((2 * width + 8, width), Image.Resampling.LANCZOS)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    panel.save(out, optimize=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
