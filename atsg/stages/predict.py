"""Stage predict: tiles + segmentation model -> predictions.zarr and one GeoTIFF per source scene.

Scenes are processed one at a time: their tiles' class probabilities are
written per tile (argmax) and blended into a scene-sized buffer (a Hann window
weights overlapping tiles), whose argmax is written with the scene's CRS and
transform.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

from ..device import select_device
from ..inference import predict_probs
from ..store import IGNORE, atomic_store, base_attrs, create_tile_arrays
from .common import Tiles, batches, file_sha256, read_tiles
from .segmentation import load_segmenter

log = logging.getLogger(__name__)


def blend_window(size: int, kind: str) -> np.ndarray:
    if kind == "flat":
        return np.ones((size, size), np.float32)
    w = np.hanning(size + 2)[1:-1].astype(np.float32)  # never exactly 0, so every pixel gets a weight
    return np.outer(w, w)


def write_scene_geotiff(path: Path, labels: np.ndarray, scene: Mapping, palette) -> None:
    profile = {"driver": "GTiff", "width": labels.shape[1], "height": labels.shape[0], "count": 1,
               "dtype": "uint8", "nodata": IGNORE, "compress": "deflate", "tiled": True,
               "blockxsize": 256, "blockysize": 256}
    if scene.get("crs"):
        profile["crs"] = scene["crs"]
    if scene.get("transform"):
        profile["transform"] = Affine(*scene["transform"][:6])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(labels, 1)
            if palette:
                dst.write_colormap(1, {i: tuple(c) + (255,) for i, c in enumerate(palette)})


def run_predict(cfg: Mapping, tiles_path: Path, model_path: Path, out: Path, geotiff_dir: Path | None) -> dict:
    p = cfg["predict"]
    tiles = Tiles.open(tiles_path)
    device = select_device(p, "predict")
    model, _ = load_segmenter(model_path, tiles, device)
    n_cls = len(tiles.classes)
    shape = (tiles.n, *tiles.size)
    arrays = {"labels": shape}
    if p["scores"]:
        arrays["scores"] = shape
    attrs = {**base_attrs("predictions", {"predict": dict(p)}), "classes": tiles.classes,
             "model_sha256": file_sha256(model_path), "palette": tiles.attrs.get("palette")}
    window = blend_window(tiles.size[0], p["blend"])
    g_tiles = tiles.group
    windows = tiles.attrs["tiles"]["window"]
    written = []
    with atomic_store(out) as tmp, _maybe_atomic(geotiff_dir) as tif_dir:
        g = create_tile_arrays(tmp, "predictions", arrays, {"labels": IGNORE},
                               {k: ("tile", "y", "x") for k in arrays}, attrs)
        for scene in tiles.attrs["scenes"]:
            first, count = scene["first_tile"], scene["n_tiles"]
            acc = weight = None
            if tif_dir is not None and p["geotiff"]:
                acc = np.zeros((n_cls, scene["height"], scene["width"]), np.float32)
                weight = np.zeros((scene["height"], scene["width"]), np.float32)
            for idx in batches(np.arange(first, first + count), p["batch_size"], f"predict {scene['id']}"):
                images = torch.from_numpy(read_tiles(g_tiles["images"], idx)).to(device)
                probs = predict_probs(model, images, p["scales"], p["flip"]).cpu().numpy()
                sl = slice(int(idx[0]), int(idx[-1]) + 1)
                g["labels"][sl] = probs.argmax(1).astype(np.uint8)
                if p["scores"]:
                    g["scores"][sl] = probs.max(1).astype(np.float16)
                if acc is not None:
                    for k, i in enumerate(idx):
                        row, col, th, tw = windows[int(i)]
                        h, w = min(th, scene["height"] - row), min(tw, scene["width"] - col)
                        acc[:, row:row + h, col:col + w] += probs[k, :, :h, :w] * window[:h, :w]
                        weight[row:row + h, col:col + w] += window[:h, :w]
            if acc is not None:
                labels = acc.argmax(0).astype(np.uint8)
                labels[weight == 0] = IGNORE
                path = tif_dir / f"{scene['id']}.tif"
                write_scene_geotiff(path, labels, scene, tiles.attrs.get("palette"))
                written.append(path.name)
    return {"tiles": tiles.n, "geotiffs": len(written), "device": str(device)}


class _maybe_atomic:
    """atomic_store for the GeoTIFF folder when one is written, else a no-op yielding None."""

    def __init__(self, path: Path | None):
        self.path = path
        self.ctx = atomic_store(path) if path is not None else None

    def __enter__(self):
        if self.ctx is None:
            return None
        tmp = self.ctx.__enter__()
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc) if self.ctx is not None else False
