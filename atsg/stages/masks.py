"""Stage generate_masks: tiles.zarr -> masks.zarr (objects uint16, boundaries uint8)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from ..device import select_device
from ..masks.generate import build_generator
from ..store import atomic_store, base_attrs, create_tile_arrays
from .common import Tiles, batches, file_sha256


def run_generate_masks(cfg: Mapping, tiles_path: Path, out: Path) -> dict:
    m = cfg["masks"]
    tiles = Tiles.open(tiles_path)
    device = select_device(m, "masks") if m["generator"] == "sam" else torch.device("cpu")
    generator = build_generator(m, device)
    params = ({k: m[k] for k in ("sam_model_type", "points_per_side", "pred_iou_thresh", "stability_score_thresh",
                                 "box_nms_thresh", "crop_n_layers", "crop_nms_thresh")}
              if m["generator"] == "sam" else dict(m[m["generator"]]))
    attrs = {**base_attrs("masks", {"masks": dict(m)}), "generator": m["generator"], "parameters": params,
             "min_area": m["min_area"], "max_objects": m["max_objects"],
             "checkpoint_sha256": file_sha256(m["sam_checkpoint"]) if m["generator"] == "sam" else None}
    shape = (tiles.n, *tiles.size)
    images = tiles.group["images"]
    counts = []
    with atomic_store(out) as tmp:
        g = create_tile_arrays(tmp, "masks", {"objects": shape, "boundaries": shape}, {},
                               {"objects": ("tile", "y", "x"), "boundaries": ("tile", "y", "x")}, attrs)
        for (i,) in batches(np.arange(tiles.n), 1, f"generate_masks ({m['generator']})"):
            objects, boundaries = generator(images[int(i)], m["min_area"], m["max_objects"])
            g["objects"][int(i)] = objects
            g["boundaries"][int(i)] = boundaries
            counts.append(int(objects.max()))
    return {"tiles": tiles.n, "generator": m["generator"], "mean_objects": float(np.mean(counts)) if counts else 0.0}
