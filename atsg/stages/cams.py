"""Stage extract_cams: tiles.zarr + classifier -> cams.zarr (multi-scale, flip, both heads, float16)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..cam import multiscale_cams
from ..device import select_device
from ..store import atomic_store, base_attrs, create_tile_arrays
from .classifier import load_classifier
from .common import Tiles, batches, file_sha256, read_tiles

log = logging.getLogger(__name__)


def run_extract_cams(cfg: Mapping, tiles_path: Path, classifier_path: Path, out: Path) -> dict:
    c = cfg["cams"]
    tiles = Tiles.open(tiles_path)
    device = select_device(c, "cams")
    model, _ = load_classifier(classifier_path, tiles, device)
    h, w = tiles.size
    size = (max(1, h // c["output_stride"]), max(1, w // c["output_stride"]))
    shape = (tiles.n, tiles.n_targets, *size)
    attrs = {**base_attrs("cams", {"cams": dict(c)}), "scales": list(c["scales"]), "flip": c["flip"],
             "classifier_sha256": file_sha256(classifier_path), "classes": tiles.classes,
             "target_classes": list(tiles.attrs["target_classes"]), "tile_size": list(tiles.size)}
    g_tiles = tiles.group
    with atomic_store(out) as tmp:
        g = create_tile_arrays(tmp, "cams", {"cams": shape, "cams_aux": shape}, {},
                               {"cams": ("tile", "class", "y", "x"), "cams_aux": ("tile", "class", "y", "x")}, attrs)
        for idx in batches(np.arange(tiles.n), c["batch_size"], "extract_cams"):
            images = torch.from_numpy(read_tiles(g_tiles["images"], idx)).to(device)
            cam, cam_aux = multiscale_cams(model, images, c["scales"], c["flip"], size)
            sl = slice(int(idx[0]), int(idx[-1]) + 1)
            g["cams"][sl] = cam.cpu().numpy().astype(np.float16)
            g["cams_aux"][sl] = cam_aux.cpu().numpy().astype(np.float16)
    return {"tiles": tiles.n, "shape": list(shape), "device": str(device)}
